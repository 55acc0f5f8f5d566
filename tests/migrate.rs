//! `postdesk migrate` end to end: a desk filled by real mail through the
//! daemon, stopped, its store migrated, and the migrated store answering
//! the CLI the same and going on working under a daemon (threading into
//! old tickets, numbering after them, honouring action links signed
//! before the move).

mod common;

use common::sink::{Received, Sink};
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const EXTRA: &str = "commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
";

fn migrate(from: &str, to: &str) -> Output {
    Command::new(BIN)
        .args(["migrate", "--from", from, "--to", to, "--quiet"])
        .env_remove("POSTDESK_CONFIG")
        .output()
        .expect("run postdesk migrate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sled(p: &Path) -> String {
    format!("sled:{}", p.display())
}

/// The action address of a mailto: link in a mail the desk sent.
fn link(m: &Received, action: &str, n: u64) -> String {
    let body = m.body_text();
    let needle = format!("support+{action}-{n}-");
    let start = body
        .find(&needle)
        .unwrap_or_else(|| panic!("no {action} link for {n} in:\n{body}"));
    let rest = &body[start..];
    let end = rest.find('?').unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Mail from customers (two threads of two messages), an auto-reply kept
/// apart, the acknowledgements and team copies it causes, and a report
/// whose take link is kept for after the migration.
fn fill(d: &Daemon, sink: &Sink) -> String {
    for i in 0..8 {
        let from = format!("c{i}@cust.test");
        let extra = if i % 4 == 3 {
            format!("In-Reply-To: <m{}@cust.test>\r\n", i - 1)
        } else {
            String::new()
        };
        d.deliver_ok(
            &from,
            &mail(
                &format!("m{i}@cust.test"),
                &from,
                &format!("case {i}"),
                &extra,
                &format!("Message {i}, with its own words."),
            ),
        );
    }
    d.deliver_ok(
        "away@cust.test",
        &mail(
            "ooo@cust.test",
            "away@cust.test",
            "Out of office",
            "Auto-Submitted: auto-replied\r\n",
            "I am away.",
        ),
    );
    let r = d.deliver(
        "alice@example.com",
        &["support+report@example.com"],
        b"From: alice@example.com\r\nTo: support+report@example.com\r\nSubject: report\r\nMessage-ID: <rep1@example.com>\r\n\r\n\r\n",
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    eventually(20, "the report", || !of_kind(sink, "report").is_empty());
    let report = of_kind(sink, "report").remove(0);
    link(&report, "take", 5)
}

/// What the CLI shows of every ticket, read from the store itself.
fn snapshot(d: &Daemon) -> (Vec<Value>, Vec<Value>) {
    let list = d.tickets();
    let shows = list
        .iter()
        .map(|t| d.show(t["token"].as_str().unwrap_or_default()))
        .collect();
    (list, shows)
}

fn number(token: &str) -> u64 {
    token.trim_start_matches("SUP-").parse().unwrap()
}

#[test]
fn sled_to_sled_keeps_every_ticket_and_the_desk_goes_on() {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), EXTRA);
    let take = fill(&d, &sink);
    let before = snapshot(&d);
    assert_eq!(before.0.len(), 6, "{:?}", before.0);
    let old = d.ticket_of("m2@cust.test").unwrap();
    assert_eq!(d.ticket_of("m3@cust.test").as_deref(), Some(old.as_str()));

    // Running, the daemon holds the store: refused, nothing copied.
    let elsewhere = d.dir.path().join("elsewhere");
    let o = migrate(&sled(&d.data_dir()), &sled(&elsewhere));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("stop postdesk first"), "{}", text(&o));

    d.stop();
    let a = d.dir.path().join("data-before");
    std::fs::rename(d.data_dir(), &a).unwrap();
    let o = migrate(&sled(&a), &sled(&d.data_dir()));
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("every count and checksum matches"), "{out}");
    let row = |kind: &str| -> Vec<u64> {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} row in:\n{out}"))
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect()
    };
    assert_eq!(row("tickets"), vec![6, 6, 6]);
    assert_eq!(row("messages"), vec![8, 8, 8]);
    // The auto-reply and the report request.
    assert_eq!(row("apart"), vec![2, 2, 2]);
    let outbox = row("outbox");
    assert!(
        outbox[0] > 8 && outbox.iter().all(|n| *n == outbox[0]),
        "{out}"
    );

    // The CLI reads the same desk from the new store.
    let after = snapshot(&d);
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, before.1);

    // Not into a store that holds something.
    let o = migrate(&sled(&a), &sled(&d.data_dir()));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not empty") && text(&o).contains("6 tickets"),
        "{}",
        text(&o)
    );

    d.restart();
    // A reply to an old message threads into its ticket.
    d.deliver_ok(
        "c2@cust.test",
        &mail(
            "m2-again@cust.test",
            "c2@cust.test",
            "Re: case 2",
            "In-Reply-To: <m2@cust.test>\r\nReferences: <m2@cust.test>\r\n",
            "Any news?",
        ),
    );
    assert_eq!(
        d.ticket_of("m2-again@cust.test").as_deref(),
        Some(old.as_str())
    );
    // A new mail gets the next number.
    let last = before
        .0
        .iter()
        .map(|t| number(t["token"].as_str().unwrap()))
        .max();
    d.deliver_ok(
        "new@cust.test",
        &mail(
            "new@cust.test",
            "new@cust.test",
            "fresh",
            "",
            "New problem.",
        ),
    );
    let new = d.ticket_of("new@cust.test").unwrap();
    assert_eq!(Some(number(&new)), last.map(|n| n + 1));
    // A take link signed before the move still acts.
    let r = d.deliver(
        "alice@example.com",
        &[&take],
        format!(
            "From: alice@example.com\r\nTo: {take}\r\nSubject: take\r\nMessage-ID: <tk@example.com>\r\n\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    let t = d.show("SUP-5");
    assert_eq!(t["assignee"].as_str(), Some("alice@example.com"), "{t}");
}
