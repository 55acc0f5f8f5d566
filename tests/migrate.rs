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

/// The test desk on the store `store` names (a `store:` block of its own,
/// so a harness that picks the backend for a run leaves it alone).
fn desk_yaml(port: u16, data: &Path, sink_port: u16, store: &Store) -> String {
    let block = match store {
        Store::Sled => "store:\n  backend: sled\n".to_string(),
        Store::Pg(url) => format!("store:\n  backend: postgres\n  postgres:\n    url: {url}\n"),
    };
    // Written out rather than `common::config_yaml`, which may add a
    // store block of its own.
    format!(
        "listen:\n  lmtp: [\"127.0.0.1:{port}\"]\ndata_dir: {}\n{block}support:\n  address: support@example.com\nteam:\n  domains: [example.com]\n  agents:\n    - email: alice@example.com\n      name: Alice\n    - email: bob@example.com\n  leads: [lead@example.com]\noutbound:\n  relay: smtp://127.0.0.1:{sink_port}\n  retry_min: 200ms\n{EXTRA}",
        data.display()
    )
}

enum Store {
    Sled,
    Pg(String),
}

fn start(sink: &Sink) -> Daemon {
    let port = sink.port();
    Daemon::start_custom(|p, data| desk_yaml(p, data, port, &Store::Sled))
}

/// Points the stopped daemon's config at another store and data dir.
fn repoint(d: &Daemon, sink: &Sink, data: &Path, store: &Store) {
    std::fs::write(&d.config, desk_yaml(d.port, data, sink.port(), store)).unwrap();
}

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
/// whose take links (tickets 4 and 5) are kept for after the migration.
fn fill(d: &Daemon, sink: &Sink) -> (String, String) {
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
    (link(&report, "take", 4), link(&report, "take", 5))
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

/// Runs a migration that must succeed; its per-kind rows (source,
/// copied, destination) checked for the desk `fill` made.
fn migrated(from: &str, to: &str) -> String {
    let o = migrate(from, to);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
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
    let same = |kind: &str| {
        let r = row(kind);
        assert!(
            r.len() == 3 && r[0] == r[1] && r[1] == r[2],
            "{kind}: {out}"
        );
        r[0]
    };
    assert!(same("tickets") >= 6, "{out}");
    assert!(same("messages") >= 8, "{out}");
    // The auto-reply and the report request.
    assert!(same("apart") >= 2, "{out}");
    assert!(same("outbox") > 8, "{out}");
    assert_eq!(same("secret"), 1, "{out}");
    out
}

/// The desk on the migrated store goes on: a reply to `old_id` threads
/// into `old`, a new mail is numbered after `last`, and an action link
/// signed before the migration acts.
fn goes_on(d: &Daemon, tag: &str, old_id: &str, old: &str, last: u64, take: &str, n: u64) {
    d.deliver_ok(
        "c2@cust.test",
        &mail(
            &format!("again-{tag}@cust.test"),
            "c2@cust.test",
            "Re: case 2",
            &format!("In-Reply-To: <{old_id}>\r\nReferences: <{old_id}>\r\n"),
            "Any news?",
        ),
    );
    assert_eq!(
        d.ticket_of(&format!("again-{tag}@cust.test")).as_deref(),
        Some(old)
    );
    d.deliver_ok(
        "new@cust.test",
        &mail(
            &format!("new-{tag}@cust.test"),
            "new@cust.test",
            &format!("fresh {tag}"),
            "",
            "New problem.",
        ),
    );
    let new = d.ticket_of(&format!("new-{tag}@cust.test")).unwrap();
    assert_eq!(number(&new), last + 1);
    let r = d.deliver(
        "alice@example.com",
        &[take],
        format!(
            "From: alice@example.com\r\nTo: {take}\r\nSubject: take\r\nMessage-ID: <take-{tag}@example.com>\r\n\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    let t = d.show(&format!("SUP-{n}"));
    assert_eq!(t["assignee"].as_str(), Some("alice@example.com"), "{t}");
}

fn last_number(snap: &(Vec<Value>, Vec<Value>)) -> u64 {
    snap.0
        .iter()
        .map(|t| number(t["token"].as_str().unwrap()))
        .max()
        .unwrap()
}

#[test]
fn sled_to_sled_keeps_every_ticket_and_the_desk_goes_on() {
    let sink = Sink::start_blocking();
    let mut d = start(&sink);
    let (_, take5) = fill(&d, &sink);
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
    migrated(&sled(&a), &sled(&d.data_dir()));

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
    goes_on(
        &d,
        "b",
        "m2@cust.test",
        &old,
        last_number(&before),
        &take5,
        5,
    );
}

/// `POSTDESK_TEST_PG` (`postgres://USER@HOST:PORT/`): a database of our
/// own on that server.
fn pg_database() -> Option<String> {
    let base = std::env::var("POSTDESK_TEST_PG")
        .ok()
        .filter(|u| !u.trim().is_empty())?;
    let base = base.trim_end_matches('/');
    let name = format!("pdmigrate_{}_{:x}", std::process::id(), rand_tag());
    psql(base, &format!("CREATE DATABASE {name}"));
    Some(format!("{base}/{name}"))
}

/// Runs one statement on the server's maintenance database.
fn psql(base: &str, sql: &str) {
    let bin = std::env::var("POSTDESK_TEST_PG_BIN")
        .map(|b| Path::new(&b).join("psql"))
        .unwrap_or_else(|_| "psql".into());
    let o = Command::new(bin)
        .arg(format!("{base}/postgres"))
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(o.status.success(), "{sql}: {}", text(&o));
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[test]
fn sled_to_postgres_and_back_keeps_the_desk() {
    let Some(url) = pg_database() else {
        eprintln!("SKIPPED: POSTDESK_TEST_PG is not set (no PostgreSQL to migrate to)");
        return;
    };
    let pg = format!("postgres:{url}");
    let sink = Sink::start_blocking();
    let mut d = start(&sink);
    let (take4, take5) = fill(&d, &sink);
    let before = snapshot(&d);
    let old = d.ticket_of("m2@cust.test").unwrap();
    d.stop();

    // sled → PostgreSQL: the CLI on the database shows the same desk.
    let a = d.dir.path().join("data-sled");
    std::fs::rename(d.data_dir(), &a).unwrap();
    migrated(&sled(&a), &pg);
    repoint(&d, &sink, &d.data_dir(), &Store::Pg(url.clone()));
    let on_pg = snapshot(&d);
    assert_eq!(on_pg.0, before.0);
    assert_eq!(on_pg.1, before.1);
    let o = migrate(&sled(&a), &pg);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("not empty"), "{}", text(&o));

    // The desk on PostgreSQL goes on; while a node runs on the database,
    // it is not migrated away.
    d.restart();
    let o = migrate(&pg, &sled(&d.dir.path().join("elsewhere")));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("stop postdesk first"), "{}", text(&o));
    goes_on(
        &d,
        "pg",
        "m2@cust.test",
        &old,
        last_number(&before),
        &take5,
        5,
    );
    let mid = snapshot(&d);
    d.stop();

    // PostgreSQL → sled, with what was delivered there.
    let back = d.dir.path().join("data-back");
    migrated(&pg, &sled(&back));
    repoint(&d, &sink, &back, &Store::Sled);
    let on_sled = snapshot(&d);
    assert_eq!(on_sled.0, mid.0);
    assert_eq!(on_sled.1, mid.1);
    d.restart();
    goes_on(
        &d,
        "back",
        "again-pg@cust.test",
        &old,
        last_number(&mid),
        &take4,
        4,
    );
    // Nothing runs on the database any more: leave the server as found.
    if let Some((base, name)) = url.rsplit_once('/') {
        psql(base, &format!("DROP DATABASE {name}"));
    }
}
