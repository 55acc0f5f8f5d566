//! SLA clocks end to end (issue #9): the real daemon, targets in seconds,
//! and the recording sink counting the warning and breach mails.

mod common;

use common::sink::{Received, Sink};
use common::*;
use jiff::Timestamp;
use std::time::Duration;

const CUSTOMER: &str = "mari@cust.test";
/// Around the clock (no calendar): warn 2s ahead; the first response is
/// due 4s and the resolution 8s after the ticket started; high priority
/// gets a stricter first response.
const EXTRA: &str = "commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
sla:
  warn_before: 2s
  policies:
    - {id: urgent, if: {priority: high}, first_response: 3s, resolution: 8s}
    - {id: fast, first_response: 4s, resolution: 8s}
";

fn start() -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), EXTRA);
    (sink, d)
}

fn customer_mail(d: &Daemon, id: &str) {
    d.deliver_ok(
        CUSTOMER,
        &mail(
            id,
            &format!("Mari <{CUSTOMER}>"),
            "Printer",
            "",
            "The printer is broken.",
        ),
    );
}

/// SLA mails about one target (`first response` / `resolution`).
fn sla_mails(sink: &Sink, kind: &str, target: &str) -> Vec<Received> {
    of_kind(sink, kind)
        .into_iter()
        .filter(|m| {
            m.header("Subject")
                .unwrap_or_default()
                .contains(&format!("({target})"))
        })
        .collect()
}

fn ts(v: &serde_json::Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// `postdesk explain` (text) of `raw` against the running desk.
fn explain(d: &Daemon, raw: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .args(["--config", d.config.to_str().unwrap(), "explain"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(raw).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn explain_shows_the_policy_and_due_times_a_mail_would_get() {
    let (_sink, d) = start();
    let raw = mail("e1@cust.test", CUSTOMER, "Printer", "", "Broken.");
    let text = explain(&d, &raw);
    assert!(
        text.contains("sla:            fast: first response due ")
            && text.contains(", resolution due "),
        "{text}"
    );
    assert!(d.tickets().is_empty(), "explain wrote nothing");
}

#[test]
fn unassigned_ticket_warns_the_team_then_breaches_to_team_and_lead_once_each() {
    let (sink, d) = start();
    customer_mail(&d, "w1@cust.test");
    let t = d.show("SUP-1");
    assert_eq!(t["sla"]["policy"], "fast");
    let started = ts(&t["started_at"]);
    assert_eq!(
        ts(&t["sla"]["first_response_due"]).duration_since(started),
        jiff::SignedDuration::from_secs(4)
    );
    eventually(20, "both breaches", || {
        of_kind(&sink, "sla_breach").len() >= 2
    });
    // Wait past every deadline and count: nothing comes twice.
    std::thread::sleep(Duration::from_secs(2));
    let team = vec!["alice@example.com".to_string(), "bob@example.com".into()];
    let mut with_lead = team.clone();
    with_lead.push("lead@example.com".into());
    for target in ["first response", "resolution"] {
        let warn = sla_mails(&sink, "sla_warn", target);
        assert_eq!(warn.len(), 1, "one {target} warning");
        assert_eq!(sorted(warn[0].rcpt_to.clone()), team);
        let body = warn[0].body_text();
        assert!(body.contains("SUP-1") && body.contains(target), "{body}");
        assert!(body.contains("support+take-1-"), "a take link: {body}");
        let breach = sla_mails(&sink, "sla_breach", target);
        assert_eq!(breach.len(), 1, "one {target} breach");
        assert_eq!(sorted(breach[0].rcpt_to.clone()), with_lead);
        assert!(breach[0].body_text().contains("overdue"));
    }
    let t = d.show("SUP-1");
    assert_eq!(t["sla"]["breached"], true);
    assert_eq!(
        sorted(strs(&t["sla"]["breaches"])),
        vec!["first_response", "resolution"]
    );
    let text = d.cli_ok(&["ticket", "show", "SUP-1"]);
    assert!(
        text.contains("sla           fast: first response due")
            && text.contains("BREACHED: first_response, resolution"),
        "{text}"
    );
}

#[test]
fn an_agent_reply_all_is_the_first_response_and_a_note_is_not() {
    let (sink, d) = start();
    customer_mail(&d, "fr1@cust.test");
    // A note (the customer not in To/Cc) does not answer the customer.
    staff(
        &d,
        "alice@example.com",
        "fr2@example.com",
        "Re: Printer [SUP-1]",
        "Looking into it, internally.",
    );
    assert!(d.show("SUP-1")["sla"]["first_response_at"].is_null());
    let m = format!(
        "From: alice@example.com\r\nTo: {CUSTOMER}\r\nCc: support@example.com\r\nSubject: Re: Printer [SUP-1]\r\nIn-Reply-To: <fr1@cust.test>\r\nMessage-ID: <fr3@example.com>\r\n\r\nWe are on it.\r\n"
    );
    d.deliver_ok("alice@example.com", m.as_bytes());
    let t = d.show("SUP-1");
    assert!(t["sla"]["first_response_at"].is_string(), "{}", t["sla"]);
    assert!(t["sla"]["first_response_due"].is_null());
    assert_eq!(t["assignee"], "alice@example.com");
    // The resolution clock still runs: its warning goes to alice alone.
    eventually(20, "the resolution breach", || {
        !sla_mails(&sink, "sla_breach", "resolution").is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        sla_mails(&sink, "sla_warn", "resolution")[0].rcpt_to,
        vec!["alice@example.com"]
    );
    assert!(sla_mails(&sink, "sla_warn", "first response").is_empty());
    assert!(sla_mails(&sink, "sla_breach", "first response").is_empty());
    assert_eq!(
        strs(&d.show("SUP-1")["sla"]["breaches"]),
        vec!["resolution"]
    );
}

#[test]
fn waiting_pauses_the_clock_and_an_answer_resumes_it_later() {
    let (sink, d) = start();
    customer_mail(&d, "p1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "p2@example.com",
        "Re: Printer [SUP-1]",
        "#take\r\n#waiting\r\n",
    );
    let t = d.show("SUP-1");
    assert_eq!(t["status"], "waiting");
    assert!(t["sla"]["first_response_due"].is_null());
    assert!(t["sla"]["resolution_due"].is_null());
    // Well past both deadlines: nothing is due while paused.
    std::thread::sleep(Duration::from_secs(9));
    assert!(of_kind(&sink, "sla_warn").is_empty());
    assert!(of_kind(&sink, "sla_breach").is_empty());
    d.deliver_ok(
        CUSTOMER,
        &mail(
            "p3@cust.test",
            CUSTOMER,
            "Re: Printer",
            "In-Reply-To: <p1@cust.test>\r\n",
            "Here is the model number.",
        ),
    );
    let t = d.show("SUP-1");
    assert_eq!(t["status"], "active");
    // The due time moved by the whole pause (at least the 9s slept).
    let started = ts(&t["started_at"]);
    let due = ts(&t["sla"]["first_response_due"]);
    assert!(
        due.duration_since(started) >= jiff::SignedDuration::from_secs(4 + 9),
        "first response due {due}, started {started}"
    );
    eventually(20, "the first-response breach after the pause", || {
        !sla_mails(&sink, "sla_breach", "first response").is_empty()
    });
    assert!(Timestamp::now() >= due);
}

#[test]
fn snooze_pauses_until_the_ticket_wakes() {
    let (_sink, d) = start();
    customer_mail(&d, "s1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s2@example.com",
        "Re: Printer [SUP-1]",
        "#take\r\n#snooze 5s\r\n",
    );
    assert_eq!(d.show("SUP-1")["status"], "snoozed");
    assert!(d.show("SUP-1")["sla"]["first_response_due"].is_null());
    eventually(20, "the snoozed ticket wakes", || {
        d.show("SUP-1")["status"] == "active"
    });
    let t = d.show("SUP-1");
    let started = ts(&t["started_at"]);
    let due = ts(&t["sla"]["first_response_due"]);
    assert!(
        due.duration_since(started)
            >= jiff::SignedDuration::from_secs(4 + 5) - jiff::SignedDuration::from_secs(1),
        "first response due {due}, started {started}"
    );
}

#[test]
fn priority_high_recomputes_with_the_stricter_policy() {
    let (sink, d) = start();
    customer_mail(&d, "h1@cust.test");
    let before = d.show("SUP-1");
    assert_eq!(before["sla"]["policy"], "fast");
    staff(
        &d,
        "alice@example.com",
        "h2@example.com",
        "Re: Printer [SUP-1]",
        "#priority high\r\n",
    );
    let t = d.show("SUP-1");
    assert_eq!(t["sla"]["policy"], "urgent");
    let started = ts(&t["started_at"]);
    assert_eq!(
        ts(&t["sla"]["first_response_due"]).duration_since(started),
        jiff::SignedDuration::from_secs(3)
    );
    eventually(20, "the first-response breach", || {
        !sla_mails(&sink, "sla_breach", "first response").is_empty()
    });
    // Past the old deadline (4s) too: one breach, for the new one.
    std::thread::sleep(Duration::from_secs(3));
    let b = sla_mails(&sink, "sla_breach", "first response");
    assert_eq!(b.len(), 1);
    let due_local = ts(&t["sla"]["first_response_due"])
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert!(
        b[0].body_text().contains(&due_local),
        "{}",
        b[0].body_text()
    );
}

#[test]
fn a_breach_missed_while_down_is_sent_late_and_once() {
    let (sink, mut d) = start();
    customer_mail(&d, "r1@cust.test");
    d.stop();
    // Past the first-response warning (2s) and deadline (4s).
    std::thread::sleep(Duration::from_secs(5));
    assert!(of_kind(&sink, "sla_breach").is_empty());
    d.restart();
    eventually(20, "the late first-response breach", || {
        !sla_mails(&sink, "sla_breach", "first response").is_empty()
    });
    eventually(20, "the resolution breach", || {
        !sla_mails(&sink, "sla_breach", "resolution").is_empty()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sla_mails(&sink, "sla_breach", "first response").len(), 1);
    // Its warning came due while down, after which the deadline had
    // passed: the breach says it all.
    assert!(sla_mails(&sink, "sla_warn", "first response").is_empty());
    assert_eq!(sla_mails(&sink, "sla_breach", "resolution").len(), 1);
}

#[test]
fn a_canned_answer_is_a_first_response_and_a_refused_one_is_not() {
    let (sink, d) = start();
    customer_mail(&d, "a1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "a2@example.com",
        "Re: Printer [SUP-1]",
        "#answer nope",
    );
    assert!(d.show("SUP-1")["sla"]["first_response_at"].is_null());
    staff(
        &d,
        "alice@example.com",
        "a3@example.com",
        "Re: Printer [SUP-1]",
        "#answer need-more-info",
    );
    wait_sent(&sink, "SUP-1", "answer", CUSTOMER);
    let t = d.show("SUP-1");
    assert!(t["sla"]["first_response_at"].is_string(), "{}", t["sla"]);
    assert!(t["sla"]["first_response_due"].is_null());
}

#[test]
fn import_records_the_clocks_from_history_and_schedules_nothing() {
    let (sink, mut d) = start();
    d.stop();
    let mbox = d.dir.path().join("history.mbox");
    std::fs::write(
        &mbox,
        format!(
            "From {CUSTOMER} Mon Jan  5 10:00:00 2026\n\
From: Mari <{CUSTOMER}>\nTo: support@example.com\nSubject: Old printer\n\
Message-ID: <old1@cust.test>\nDate: Mon, 05 Jan 2026 10:00:00 +0000\n\nIt broke.\n\n\
From alice@example.com Mon Jan  5 10:30:00 2026\n\
From: alice@example.com\nTo: {CUSTOMER}\nCc: support@example.com\nSubject: Re: Old printer\n\
Message-ID: <old2@example.com>\nIn-Reply-To: <old1@cust.test>\n\
Date: Mon, 05 Jan 2026 10:30:00 +0000\n\nWe are on it.\n\n"
        ),
    )
    .unwrap();
    d.cli_ok(&["import", "mbox", mbox.to_str().unwrap()]);
    let t = d.show("SUP-1");
    assert_eq!(t["sla"]["policy"], "fast");
    assert_eq!(
        ts(&t["sla"]["first_response_at"]).to_string(),
        "2026-01-05T10:30:00Z"
    );
    assert_eq!(
        ts(&t["sla"]["resolution_due"]).to_string(),
        "2026-01-05T10:00:08Z"
    );
    // History: its deadlines passed long ago, and nobody is told.
    d.restart();
    std::thread::sleep(Duration::from_secs(3));
    assert!(of_kind(&sink, "sla_warn").is_empty());
    assert!(of_kind(&sink, "sla_breach").is_empty());
    assert_eq!(d.show("SUP-1")["sla"]["breached"], false);
}

#[test]
fn cli_changes_recompute_and_a_merge_keeps_the_first_response_and_ends_the_merged_clock() {
    let (sink, d) = start();
    customer_mail(&d, "c1@cust.test");
    d.deliver_ok(
        "juhan@cust.test",
        &mail("c2@cust.test", "juhan@cust.test", "Scanner", "", "Also."),
    );
    d.cli_ok(&["ticket", "set", "SUP-1", "--priority", "high"]);
    let t = d.show("SUP-1");
    assert_eq!(t["sla"]["policy"], "urgent");
    assert_eq!(
        ts(&t["sla"]["first_response_due"]).duration_since(ts(&t["started_at"])),
        jiff::SignedDuration::from_secs(3)
    );
    // Alice answered the other half: the conversation has its first response.
    let m = "From: alice@example.com\r\nTo: juhan@cust.test\r\nCc: support@example.com\r\nSubject: Re: Scanner [SUP-2]\r\nIn-Reply-To: <c2@cust.test>\r\nMessage-ID: <c3@example.com>\r\n\r\nOn it.\r\n";
    d.deliver_ok("alice@example.com", m.as_bytes());
    let answered = d.show("SUP-2")["sla"]["first_response_at"].clone();
    assert!(answered.is_string());
    d.cli_ok(&["ticket", "merge", "SUP-1", "SUP-2"]);
    let t = d.show("SUP-1");
    assert_eq!(t["sla"]["first_response_at"], answered);
    assert!(t["sla"]["first_response_due"].is_null());
    let gone = d.show("SUP-2");
    assert_eq!(gone["status"], "closed");
    assert!(gone["sla"]["first_response_due"].is_null());
    assert!(gone["sla"]["resolution_due"].is_null());
    eventually(20, "the survivor's resolution breach", || {
        !sla_mails(&sink, "sla_breach", "resolution").is_empty()
    });
    std::thread::sleep(Duration::from_secs(1));
    // Only the survivor is warned of or breached.
    let about: Vec<String> = of_kind(&sink, "sla_breach")
        .iter()
        .chain(of_kind(&sink, "sla_warn").iter())
        .filter_map(|m| m.header("X-Postdesk-Ticket"))
        .collect();
    assert!(about.iter().all(|t| t == "SUP-1"), "{about:?}");
    assert!(sla_mails(&sink, "sla_breach", "first response").is_empty());
    assert_eq!(d.show("SUP-2")["sla"]["breached"], false);
}

/// A reload that changes the targets moves the open tickets' due times and
/// jobs at once: the stricter target breaches without any new mail.
#[test]
fn a_reload_with_new_targets_recomputes_open_tickets() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(
        sink.port(),
        &EXTRA.replace("first_response: 4s", "first_response: 1h"),
    );
    customer_mail(&d, "hup1@cust.test");
    let t = d.show("SUP-1");
    let started = ts(&t["started_at"]);
    let due = ts(&t["sla"]["first_response_due"]);
    assert!(
        due.duration_since(started) >= jiff::SignedDuration::from_secs(3600),
        "{due}"
    );
    let yaml = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(
        &d.config,
        yaml.replace("first_response: 1h", "first_response: 4s"),
    )
    .expect("rewrite");
    d.hup();
    eventually(20, "the recompute after the reload", || {
        d.log().contains("SLA clocks of open tickets recomputed")
    });
    let due = ts(&d.show("SUP-1")["sla"]["first_response_due"]);
    assert_eq!(
        due.duration_since(started),
        jiff::SignedDuration::from_secs(4)
    );
    eventually(20, "the breach of the new first-response target", || {
        sla_mails(&sink, "sla_breach", "first response").len() == 1
    });
    // Recorded once, against the new deadline.
    let sla = d.show("SUP-1")["sla"].clone();
    assert_eq!(strs(&sla["breaches"]), vec!["first_response"], "{sla}");
    assert_eq!(sla_mails(&sink, "sla_breach", "first response").len(), 1);
}
