//! The operator's view (issue #10) through the real binary: `outbox
//! list|show|retry|drop` against a relay that refuses and is then fixed,
//! and `status --json` against a scripted history, with the daemon running
//! and stopped.

mod common;

use common::sink::{Mode, Sink};
use common::*;
use serde_json::Value;
use std::time::Duration;

/// As in tests/faults.rs: an attempt at a silent relay ends in about 2 s.
const FAST_TIMEOUT: &str = "  timeout: 1s\n";

fn customer_mail(n: usize) -> (String, Vec<u8>) {
    let from = format!("cust{n}@cust.test");
    let m = mail(
        &format!("op{n}@cust.test"),
        &from,
        &format!("Printer {n} is broken"),
        "",
        "Please help.",
    );
    (from, m)
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn outbox_list(d: &Daemon, state: &str) -> Vec<Value> {
    json(&d.cli_ok(&["outbox", "list", "--state", state, "--json"]))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The CLI's failure: exit status non-zero and its stderr.
fn refused(d: &Daemon, args: &[&str]) -> String {
    let out = d.cli(args);
    assert!(
        !out.status.success(),
        "postdesk {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn me() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn id_of(e: &Value) -> String {
    e["id"].as_u64().expect("entry id").to_string()
}

/// ISSUE #10 "Must show": an outbox entry failing against a relay that
/// answers 5xx, listed, retried after the relay is fixed, delivered; the
/// other one dropped with its log line; every refusal says why.
#[test]
fn failed_entry_is_listed_retried_after_the_relay_is_fixed_and_delivered() {
    let sink = Sink::start_blocking();
    sink.set_mode(Mode::PermFail);
    let d = Daemon::start(sink.port(), FAST_TIMEOUT);
    let (from, m) = customer_mail(1);
    d.deliver_ok(&from, &m);
    eventually(15, "the ack and the copy failed", || {
        outbox_list(&d, "failed").len() == 2
    });
    let failed = outbox_list(&d, "failed");
    for e in &failed {
        assert_eq!(e["state"], "failed", "{e}");
        assert_eq!(e["ticket"], "SUP-1", "{e}");
        assert_eq!(e["attempts"], 1, "{e}");
        assert!(e["next_attempt_at"].is_null(), "{e}");
        let reply = e["last_reply"].as_str().unwrap_or_default();
        assert!(reply.contains("550"), "{e}");
    }
    let ack = failed.iter().find(|e| e["kind"] == "ack").expect("ack");
    let copy = failed.iter().find(|e| e["kind"] == "copy").expect("copy");
    assert_eq!(ack["rcpt_to"], serde_json::json!([from]));
    // The default list is what is pending or stuck: these two.
    assert_eq!(
        json(&d.cli_ok(&["outbox", "list", "--json"]))
            .as_array()
            .map(|a| a.len()),
        Some(2)
    );
    let text = d.cli_ok(&["outbox", "list"]);
    assert!(
        text.contains("failed") && text.contains("SUP-1") && text.contains("550"),
        "{text}"
    );

    // show: envelope, kind, ticket, attempts, reply, times, the head.
    let ack_id = id_of(ack);
    let show = json(&d.cli_ok(&["outbox", "show", &ack_id, "--json"]));
    assert_eq!(show["kind"], "ack");
    assert_eq!(
        show["mail_from"].as_str().map(|s| !s.is_empty()),
        Some(true)
    );
    assert!(show["created_at"].is_string(), "{show}");
    let head = show["head"].as_str().unwrap_or_default();
    assert!(
        head.contains("Subject:")
            && head.contains("SUP-1")
            && head.contains("X-Postdesk-Kind: ack")
            && !head.contains("opened ticket"),
        "the header block only: {head}"
    );
    assert!(
        show["size"]
            .as_u64()
            .is_some_and(|n| n as usize > head.len()),
        "{show}"
    );
    let text = d.cli_ok(&["outbox", "show", &ack_id]);
    assert!(
        text.contains("last reply") && text.contains("550") && text.contains("header:"),
        "{text}"
    );

    // The relay is fixed; a permanent failure stays final until told.
    sink.set_mode(Mode::Accept);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        sink.messages().is_empty(),
        "a failed entry is not retried by itself"
    );
    let out = d.cli_ok(&["outbox", "retry", &ack_id]);
    assert!(out.contains("due now"), "{out}");
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("X-Postdesk-Kind").as_deref(), Some("ack"));
    assert_eq!(got[0].rcpt_to, vec![from.clone()]);
    eventually(10, "the retried ack is recorded as sent", || {
        json(&d.cli_ok(&["outbox", "show", &ack_id, "--json"]))["state"] == "sent"
    });
    let sent = json(&d.cli_ok(&["outbox", "show", &ack_id, "--json"]));
    assert_eq!(sent["attempts"], 2, "{sent}");
    assert!(
        sent["retried_at"].is_string() && sent["sent_at"].is_string(),
        "{sent}"
    );
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("outbox retry") && l.contains(&format!("id={ack_id}"))),
        "{}",
        d.log()
    );

    // Refusals.
    let e = refused(&d, &["outbox", "retry", &ack_id]);
    assert!(e.contains("already sent"), "{e}");
    let e = refused(&d, &["outbox", "drop", &ack_id, "--reason", "x"]);
    assert!(e.contains("already sent"), "{e}");
    let e = refused(&d, &["outbox", "show", "9999"]);
    assert!(e.contains("no outbox entry 9999"), "{e}");
    let e = refused(&d, &["outbox", "retry", "9999"]);
    assert!(e.contains("no outbox entry 9999"), "{e}");
    let copy_id = id_of(copy);
    let e = refused(&d, &["outbox", "drop", &copy_id]);
    assert!(e.contains("--reason"), "{e}");
    let e = refused(&d, &["outbox", "drop", &copy_id, "--reason", "  "]);
    assert!(e.contains("--reason"), "{e}");
    let e = refused(&d, &["outbox", "list", "--state", "stuck"]);
    assert!(e.contains("unknown outbox state"), "{e}");

    // Drop the copy: gone from the failed list, kept as dropped, logged
    // with the socket peer's user.
    let out = d.cli_ok(&[
        "outbox",
        "drop",
        &copy_id,
        "--reason",
        "team saw it in the list archive",
    ]);
    assert!(out.contains("dropped by"), "{out}");
    assert!(outbox_list(&d, "failed").is_empty());
    let dropped = outbox_list(&d, "dropped");
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        dropped[0]["dropped"]["reason"],
        "team saw it in the list archive"
    );
    let user = me();
    assert_eq!(dropped[0]["dropped"]["by"], user.as_str());
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("outbox drop"))
        .unwrap_or_else(|| panic!("no drop line:\n{log}"));
    assert!(
        line.contains(&format!("id={copy_id}"))
            && line.contains("ticket=SUP-1")
            && line.contains(&format!("by={user}"))
            && line.contains("reason=\"team saw it in the list archive\""),
        "{line}"
    );
    let e = refused(&d, &["outbox", "drop", &copy_id, "--reason", "again"]);
    assert!(e.contains("already dropped"), "{e}");
    let e = refused(&d, &["outbox", "retry", &copy_id]);
    assert!(e.contains("dropped"), "{e}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.messages().len(), 1, "the dropped copy was never sent");

    let st = json(&d.cli_ok(&["status", "--json"]));
    assert_eq!(st["outbox"]["pending"], 0, "{st}");
    assert_eq!(st["outbox"]["failed"], 0, "{st}");
    assert_eq!(st["outbox"]["sent"], 1, "{st}");
    assert_eq!(st["outbox"]["dropped"], 1, "{st}");
    assert!(st["outbox"]["oldest_pending"].is_null(), "{st}");
}

/// A pending entry waiting on its backoff: `retry` sends it now rather
/// than at its next attempt; `drop` takes another out of the queue, with
/// the daemon running and with it stopped (the CLI's own user then).
#[test]
fn pending_entries_retry_now_and_drop_out_of_the_queue() {
    let sink = Sink::start_blocking();
    sink.set_mode(Mode::TempFail);
    // The first retry would come 60 s later.
    let sink_port = sink.port();
    let d = Daemon::start_custom(|port, data| {
        config_yaml(port, data, sink_port, FAST_TIMEOUT).replace(
            "  retry_min: 200ms\n",
            "  retry_min: 60s\n  retry_max: 1h\n",
        )
    });
    let (from, m) = customer_mail(2);
    d.deliver_ok(&from, &m);
    eventually(15, "both entries tried once", || {
        let p = outbox_list(&d, "pending");
        p.len() == 2 && p.iter().all(|e| e["attempts"] == 1)
    });
    let pending = outbox_list(&d, "pending");
    for e in &pending {
        assert!(e["next_attempt_at"].is_string(), "{e}");
        assert!(
            e["last_reply"].as_str().unwrap_or_default().contains("451"),
            "{e}"
        );
    }
    let st = json(&d.cli_ok(&["status", "--json"]));
    assert_eq!(st["outbox"]["pending"], 2, "{st}");
    assert!(
        st["outbox"]["oldest_pending"]["age_seconds"].is_i64(),
        "{st}"
    );
    let ack_id = id_of(pending.iter().find(|e| e["kind"] == "ack").expect("ack"));
    let copy_id = id_of(pending.iter().find(|e| e["kind"] == "copy").expect("copy"));

    sink.set_mode(Mode::Accept);
    d.cli_ok(&["outbox", "retry", &ack_id]);
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0].header("X-Postdesk-Kind").as_deref(), Some("ack"));
    eventually(10, "only the copy is pending", || {
        let p = outbox_list(&d, "pending");
        p.len() == 1 && id_of(&p[0]) == copy_id
    });

    // Stopped: the CLI works on the store and names its own user.
    let mut d = d;
    d.stop();
    let out = d.cli(&[
        "outbox",
        "drop",
        &copy_id,
        "--reason",
        "customer unreachable",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let user = me();
    assert!(
        err.contains("outbox drop")
            && err.contains(&format!("id={copy_id}"))
            && err.contains(&format!("by={user}"))
            && err.contains("reason=\"customer unreachable\""),
        "{err}"
    );
    assert!(outbox_list(&d, "pending").is_empty());
    let st = json(&d.cli_ok(&["status", "--json"]));
    assert_eq!(st["running"], false, "{st}");
    assert_eq!(st["outbox"]["pending"], 0, "{st}");
    assert_eq!(st["outbox"]["dropped"], 1, "{st}");
    assert_eq!(st["outbox"]["sent"], 1, "{st}");
    // After a restart the dropped entry stays out of the queue.
    d.restart();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sink.messages().len(), 1);
}

/// `status --json` against a scripted history: five tickets put into four
/// statuses, every outbox entry sent, one delivery refused by the debug
/// fault switch; then the same counts with the daemon stopped.
#[test]
fn status_reports_counts_outbox_jobs_and_activity_running_and_stopped() {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    for n in 1..=5 {
        let (from, m) = customer_mail(n);
        d.deliver_ok(&from, &m);
    }
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    d.cli_ok(&["ticket", "done", "SUP-2"]);
    d.cli_ok(&["ticket", "spam", "SUP-3"]);
    // 5 acks, 5 copies, the take notice and the "taken" mail.
    sink.wait_for(12, Duration::from_secs(20));
    eventually(10, "nothing pending", || {
        json(&d.cli_ok(&["status", "--json"]))["outbox"]["pending"] == 0
    });

    // A delivery the store refuses: the last error.
    let fault = d.data_dir().join("fail-commits.debug");
    std::fs::write(&fault, b"").expect("fault switch");
    let (from, m) = customer_mail(6);
    let r = d.deliver(&from, &["support@example.com"], &m);
    assert!(r[0].starts_with("451"), "{r:?}");
    std::fs::remove_file(&fault).expect("fault switch off");

    let st = json(&d.cli_ok(&["status", "--json"]));
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        st["uptime_seconds"].as_i64().is_some_and(|u| u >= 0),
        "{st}"
    );
    assert!(st["pid"].as_u64().is_some(), "{st}");
    assert_eq!(
        st["listeners"]["lmtp"],
        serde_json::json!([format!("127.0.0.1:{}", d.port)])
    );
    assert_eq!(st["store"]["backend"], common::backend());
    assert!(
        st["store"]["size_bytes"].as_u64().is_some_and(|b| b > 0),
        "{st}"
    );
    let tickets = &st["tickets"];
    for (status, n) in [
        ("unassigned", 2),
        ("active", 1),
        ("waiting", 0),
        ("snoozed", 0),
        ("done", 1),
        ("closed", 0),
        ("deleted", 1),
        ("total", 5),
    ] {
        assert_eq!(tickets[status], n, "{status}: {st}");
    }
    assert_eq!(st["outbox"]["pending"], 0, "{st}");
    assert_eq!(st["outbox"]["failed"], 0, "{st}");
    assert_eq!(st["outbox"]["sent"], 12, "{st}");
    // The take scheduled SUP-1's reminder.
    assert_eq!(st["next_job"]["kind"], "reminder", "{st}");
    assert_eq!(st["next_job"]["ticket"], "SUP-1", "{st}");
    assert!(st["next_job"]["due"].is_string(), "{st}");
    let last = &st["last_delivery"];
    assert_eq!(last["stored_as"], "SUP-5", "{st}");
    assert_eq!(last["message_id"], "op5@cust.test", "{st}");
    let err = &st["last_error"];
    assert_eq!(err["message_id"], "op6@cust.test", "{st}");
    assert!(
        err["error"]
            .as_str()
            .unwrap_or_default()
            .contains("injected fault"),
        "{st}"
    );
    let text = d.cli_ok(&["status"]);
    for want in [
        "running",
        common::backend(),
        "unassigned 2",
        "reminder SUP-1",
        "injected fault",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }

    d.stop();
    let st = json(&d.cli_ok(&["status", "--json"]));
    assert_eq!(st["running"], false, "{st}");
    assert!(
        st["uptime_seconds"].is_null() && st["last_delivery"].is_null(),
        "{st}"
    );
    for (status, n) in [
        ("unassigned", 2),
        ("active", 1),
        ("done", 1),
        ("deleted", 1),
        ("total", 5),
    ] {
        assert_eq!(st["tickets"][status], n, "{status}: {st}");
    }
    assert_eq!(st["outbox"]["sent"], 12, "{st}");
    assert_eq!(st["next_job"]["ticket"], "SUP-1", "{st}");
    let text = d.cli_ok(&["status"]);
    assert!(text.contains("not running"), "{text}");
}
