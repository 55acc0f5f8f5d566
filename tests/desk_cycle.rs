//! One ticket's whole service-level life by real mail (issue #9): the SLA
//! clock stops at the agent's first Reply-All, the done notice carries the
//! rating links, the customer rates and reopens by replying, and `stats`
//! (JSON and CSV) reports exactly the figures `ticket show` measured.

mod common;

use common::sink::Sink;
use common::*;
use serde_json::Value;
use std::time::Duration;

const CUSTOMER: &str = "mari@cust.test";
const EXTRA: &str = "commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
status_notices: {done: true}
sla:
  warn_before: 1m
  policies:
    - {id: std, first_response: 1h, resolution: 2h}
";

fn alice_answers(d: &Daemon, id: &str, body: &str) {
    let m = format!(
        "{AUTH_OK}From: Alice <alice@example.com>\r\nTo: {CUSTOMER}\r\nCc: support@example.com\r\nSubject: Re: Printer broken [SUP-1]\r\nIn-Reply-To: <c1@cust.test>\r\nMessage-ID: <{id}>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0200\r\n\r\n{body}\r\n"
    );
    let r = d.deliver("alice@example.com", &["support@example.com"], m.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}");
}

fn secs_between(a: &Value, b: &Value) -> i64 {
    let t = |v: &Value| -> jiff::Timestamp {
        v.as_str()
            .unwrap_or_else(|| panic!("not a time: {v}"))
            .parse()
            .expect("a timestamp")
    };
    t(b).duration_since(t(a)).as_secs()
}

#[test]
fn a_ticket_answered_resolved_rated_and_reopened_shows_in_stats_as_measured() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), EXTRA);
    d.deliver_ok(
        CUSTOMER,
        &mail(
            "c1@cust.test",
            &format!("Mari <{CUSTOMER}>"),
            "Printer broken",
            "",
            "The printer is broken.",
        ),
    );
    std::thread::sleep(Duration::from_millis(1100));
    alice_answers(&d, "a1@example.com", "We are on it.");
    std::thread::sleep(Duration::from_millis(1100));
    alice_answers(&d, "a2@example.com", "#done\r\n\r\nNew toner is in.");

    let t = d.show("SUP-1");
    assert_eq!(t["status"], "done", "{t:#}");
    assert_eq!(t["sla"]["policy"], "std");
    assert_eq!(t["work_started_at"], t["sla"]["first_response_at"]);
    let first = secs_between(&t["started_at"], &t["sla"]["first_response_at"]);
    let resolution = secs_between(&t["started_at"], &t["ended_at"]);
    assert!((1..=10).contains(&first), "first response after {first}s");
    assert!(
        resolution > first,
        "{resolution}s to done, {first}s to answer"
    );
    assert!(t["sla"]["breaches"]
        .as_array()
        .is_some_and(|b| b.is_empty()));

    // The done notice reaches the customer with one-click rating links.
    eventually(20, "the done notice", || {
        !of_kind(&sink, "status-done").is_empty()
    });
    let notice = of_kind(&sink, "status-done").remove(0);
    assert_eq!(notice.rcpt_to, vec![CUSTOMER.to_string()]);
    let body = notice.body_text();
    assert!(body.contains("New toner is in."), "{body}");
    let start = body.find("support+rate-good-").expect("a rate-good link");
    let rest = &body[start..];
    let good = &rest[..rest.find('?').unwrap_or(rest.len())];
    let click = format!(
        "From: {CUSTOMER}\r\nTo: {good}\r\nSubject: rate\r\nMessage-ID: <r1@cust.test>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0200\r\n\r\n\r\n"
    );
    let r = d.deliver(CUSTOMER, &[good], click.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}");
    assert_eq!(d.show("SUP-1")["rating"]["value"], "good");

    // She writes again: the ticket is back, once.
    d.deliver_ok(
        CUSTOMER,
        &mail(
            "c2@cust.test",
            CUSTOMER,
            "Re: Printer broken [SUP-1]",
            "In-Reply-To: <a2@example.com>\r\n",
            "It jams again.",
        ),
    );
    let t = d.show("SUP-1");
    assert_eq!(
        (t["status"].as_str(), t["reopen_count"].as_u64()),
        (Some("active"), Some(1))
    );

    let v: Value = serde_json::from_str(&d.cli_ok(&["stats", "--by", "agent", "--json"]))
        .expect("stats --json");
    let rows = v["rows"].as_array().expect("rows");
    let alice = rows
        .iter()
        .find(|r| r["agent"] == "alice@example.com")
        .unwrap_or_else(|| panic!("no row for alice in {v:#}"));
    let f = &t["figures"];
    assert_eq!(f["first_response_seconds"], first, "{f:#}");
    assert_eq!(alice["tickets"], 1, "{alice:#}");
    assert_eq!(alice["reopens"], 1);
    assert_eq!(alice["first_response_median_seconds"], first);
    assert_eq!(alice["first_response_sla_pct"], 100.0);
    assert_eq!(alice["rating_good"], 1);
    assert_eq!(alice["rating_good_pct"], 100.0);
    // Reopened, so not resolved now: no resolution figure is claimed.
    assert_eq!(alice["resolved"], 0);

    // The CSV says the same in its own columns.
    let csv = d.cli_ok(&["stats", "--by", "agent", "--csv"]);
    let lines: Vec<Vec<&str>> = csv
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(|l| l.split(',').collect())
        .collect();
    let col = |name: &str| {
        lines[0]
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {csv}"))
    };
    let row = lines
        .iter()
        .find(|l| l[0] == "alice@example.com")
        .unwrap_or_else(|| panic!("no alice line in {csv}"));
    assert_eq!(row[col("first_response_median_seconds")], first.to_string());
    assert_eq!(row[col("reopens")], "1");
    assert_eq!(row[col("rating_good")], "1");
}
