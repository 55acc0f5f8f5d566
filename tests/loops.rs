//! Mail loops (SPEC §3.3, §4): whatever comes back, postdesk must not answer
//! it into an endless exchange.
//!
//! - our own acknowledgement and team copy delivered back byte for byte;
//! - an auto-responder that answers every mail it gets, marked
//!   `Auto-Submitted: auto-replied` (RFC 3834);
//! - an auto-responder that marks nothing and writes each answer as a new
//!   mail: only the ack rate limit stands between it and a loop;
//! - two postdesk desks whose acknowledgements reach each other.
//!
//! The responders and the forwarder run for a bounded time; each test
//! counts every message exchanged and asserts a small bound.

mod common;

use common::lmtp::bare;
use common::sink::{Received, Sink};
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const SUPPORT: &str = "support@example.com";

/// Lines of the log that are `delivered` lines for this Message-ID.
fn delivered_lines(d: &Daemon, message_id: &str) -> Vec<String> {
    d.log()
        .lines()
        .filter(|l| l.contains(" delivered ") && l.contains(&format!("message_id=<{message_id}>")))
        .map(str::to_string)
        .collect()
}

/// Waits until the sink has had no new message for `quiet`, at most `max`;
/// returns how many it holds.
fn settle(sink: &Sink, quiet: Duration, max: Duration) -> usize {
    let until = Instant::now() + max;
    let mut n = sink.messages().len();
    let mut since = Instant::now();
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let now = sink.messages().len();
        if now != n {
            n = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    n
}

#[test]
fn our_own_mail_coming_back_is_kept_apart_and_not_answered() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    d.deliver_ok(
        "mari@cust.test",
        &mail(
            "home@cust.test",
            "mari@cust.test",
            "Printer",
            "",
            "It jams.",
        ),
    );
    let sent = sink.wait_for(2, Duration::from_secs(15));
    let before = d.show("SUP-1");
    for m in &sent {
        let id = bare(&m.header("Message-ID").unwrap());
        // The exact bytes the relay got, delivered back as they came.
        let r = d.deliver(&m.mail_from, &[SUPPORT], &m.data);
        assert!(r[0].starts_with("250"), "{} back: {r:?}", kind(m));
        assert!(r[0].contains("kept apart"), "{} back: {r:?}", kind(m));
        let lines = delivered_lines(&d, &id);
        assert_eq!(lines.len(), 1, "logged once: {lines:?}");
        assert!(lines[0].contains("action=loop"), "{}", lines[0]);
    }
    // Nothing answered, nothing changed.
    assert_eq!(
        settle(&sink, Duration::from_secs(2), Duration::from_secs(5)),
        2
    );
    assert_eq!(d.tickets().len(), 1);
    let after = d.show("SUP-1");
    assert_eq!(after["message_ids"], before["message_ids"]);
    assert_eq!(after["status"], before["status"]);
    assert_eq!(after["replies"], before["replies"]);
}

/// Delivers `data` from `from` to the desk on `port`; the reply.
fn deliver_to(port: u16, from: &str, rcpt: &str, data: &[u8]) -> String {
    let mut c = Lmtp::connect(port);
    let r = c.send(from, &[rcpt], data);
    c.quit();
    r.into_iter().next().unwrap_or_default()
}

/// Runs `on_new` for every message the sink gets, for at most `max`, or
/// until nothing new has come for `quiet`; `on_new` returns how many mails
/// it delivered. Returns (messages seen, mails delivered).
fn respond(
    sink: &Sink,
    quiet: Duration,
    max: Duration,
    cap: usize,
    mut on_new: impl FnMut(&Received) -> usize,
) -> (usize, usize) {
    let until = Instant::now() + max;
    let mut seen = 0;
    let mut delivered = 0;
    let mut last_new = Instant::now();
    while Instant::now() < until && delivered < cap {
        let got = sink.messages();
        if got.len() > seen {
            for m in &got[seen..] {
                delivered += on_new(m);
            }
            seen = got.len();
            last_new = Instant::now();
        } else if last_new.elapsed() >= quiet {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (seen, delivered)
}

/// Every mail postdesk sends gets an RFC 3834 answer from each recipient.
#[test]
fn auto_responder_answering_everything_gets_no_answer() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    d.deliver_ok(
        "away@cust.test",
        &mail("start@cust.test", "away@cust.test", "Question", "", "Hi"),
    );
    let mut n = 0;
    let (seen, answers) = respond(
        &sink,
        Duration::from_secs(3),
        Duration::from_secs(12),
        30,
        |m| {
            let id = m.header("Message-ID").unwrap_or_default();
            let subject = m.header("Subject").unwrap_or_default();
            for rcpt in &m.rcpt_to {
                n += 1;
                let answer = mail(
                    &format!("auto{n}@responder.test"),
                    rcpt,
                    &format!("Automatic reply: {subject}"),
                    &format!(
                        "Auto-Submitted: auto-replied\r\nIn-Reply-To: {id}\r\nReferences: {id}\r\n"
                    ),
                    "I am away until Monday.",
                );
                let r = deliver_to(d.port, rcpt, SUPPORT, &answer);
                assert!(r.starts_with("250"), "{r}");
            }
            m.rcpt_to.len()
        },
    );
    // The ack (to the customer) and the team copy (to alice and bob): three
    // answers, and not one mail in response to them.
    assert_eq!(seen, 2, "postdesk answered an auto-reply");
    assert_eq!(answers, 3);
    assert_eq!(d.tickets().len(), 1, "auto-replies open no ticket");
    let show = d.show("SUP-1");
    let kinds: Vec<&str> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "auto_reply").count(),
        3,
        "kept on the ticket: {kinds:?}"
    );
    assert_eq!(
        show["status"], "unassigned",
        "an auto-reply changes no state"
    );
    for i in 1..=3 {
        let lines = delivered_lines(&d, &format!("auto{i}@responder.test"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("action=attach"), "{}", lines[0]);
    }
}

/// A broken responder: no Auto-Submitted, no In-Reply-To, a new subject
/// every time, so each answer looks like a new customer's mail. Only the
/// ack rate limit (`policy.ack_rate_limit`, 5 an hour per sender) stops
/// the exchange, and it must.
#[test]
fn unmarked_responder_is_stopped_by_the_ack_rate_limit() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    const BOT: &str = "bot@cust.test";
    d.deliver_ok(BOT, &mail("bot0@cust.test", BOT, "Hello", "", "Hi"));
    let mut n = 0;
    let (_, answers) = respond(
        &sink,
        Duration::from_secs(3),
        Duration::from_secs(15),
        40,
        |m| {
            if !m.rcpt_to.iter().any(|r| r == BOT) {
                return 0;
            }
            n += 1;
            let answer = mail(
                &format!("bot{n}@cust.test"),
                BOT,
                &format!("Your ticket number {n}"),
                "",
                "Thank you for your mail, we will answer soon.",
            );
            let r = deliver_to(d.port, BOT, SUPPORT, &answer);
            assert!(r.starts_with("250"), "{r}");
            1
        },
    );
    let acks: Vec<Received> = sink
        .messages()
        .into_iter()
        .filter(|m| kind(m) == "ack")
        .collect();
    assert_eq!(acks.len(), 5, "acks to the bot: the rate limit");
    assert_eq!(answers, 5, "the bot answered each ack once");
    // Its sixth mail is still kept as a ticket; it just gets no answer.
    assert_eq!(d.tickets().len(), 6);
    assert_eq!(
        delivered_lines(&d, "bot5@cust.test").len(),
        1,
        "the last mail is logged like any other"
    );
}

/// A second desk: its own support address and team domain.
fn desk_yaml(port: u16, data: &Path, sink_port: u16, domain: &str) -> String {
    format!(
        r#"listen:
  lmtp: ["127.0.0.1:{port}"]
data_dir: {data}
support:
  address: support@{domain}
team:
  domains: [{domain}]
  agents:
    - email: alice@{domain}
    - email: bob@{domain}
outbound:
  relay: smtp://127.0.0.1:{sink_port}
  retry_min: 200ms
"#,
        data = data.display()
    )
}

fn desk(domain: &str) -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    d.stop();
    std::fs::write(
        &d.config,
        with_store(
            desk_yaml(d.port, &d.data_dir(), sink.port(), domain),
            &d.data_dir(),
        ),
    )
    .unwrap();
    let before = d.log().matches("postdesk ready").count();
    d.restart();
    eventually(30, "desk ready", || {
        d.log().matches("postdesk ready").count() > before
    });
    (sink, d)
}

/// Two desks that know each other's support address as a customer: each
/// acknowledges the other, and a forwarder hands whatever one desk's relay
/// gets to the other desk over LMTP. The exchange must die out by itself.
#[test]
fn two_desks_acknowledging_each_other_stop_by_themselves() {
    let (sink_a, a) = desk("a.test");
    let (sink_b, b) = desk("b.test");
    // Each desk first hears from the other's address (an agent of one
    // desk writing from the shared address to the other).
    let r = deliver_to(
        a.port,
        "support@b.test",
        "support@a.test",
        &mail(
            "b-to-a@b.test",
            "support@b.test",
            "Parts order",
            "",
            "From desk B",
        ),
    );
    assert!(r.starts_with("250"), "{r}");
    let r = deliver_to(
        b.port,
        "support@a.test",
        "support@b.test",
        &mail(
            "a-to-b@a.test",
            "support@a.test",
            "Invoice",
            "",
            "From desk A",
        ),
    );
    assert!(r.starts_with("250"), "{r}");

    // The forwarder: A's outbound to B and B's outbound to A, everything,
    // for at most 15 s or 40 messages.
    let mut forwarded = 0usize;
    let sinks = [
        (&sink_a, b.port, "support@b.test"),
        (&sink_b, a.port, "support@a.test"),
    ];
    let mut done = [0usize; 2];
    let started = Instant::now();
    let mut last_new = Instant::now();
    while started.elapsed() < Duration::from_secs(15) && forwarded < 40 {
        let mut any = false;
        for (i, (sink, port, rcpt)) in sinks.iter().enumerate() {
            let got = sink.messages();
            for m in &got[done[i]..] {
                let r = deliver_to(*port, &m.mail_from, rcpt, &m.data);
                assert!(r.starts_with("250"), "{r}");
                forwarded += 1;
                any = true;
            }
            done[i] = got.len();
        }
        if any {
            last_new = Instant::now();
        } else if last_new.elapsed() > Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let total = forwarded;
    // Each desk: one ack to the other desk and one team copy; the other
    // desk keeps both apart and sends nothing. 4 in all.
    assert_eq!(total, 4, "messages exchanged between the desks");
    assert!(
        last_new.elapsed() > Duration::from_secs(3),
        "the exchange had not stopped after {:?}",
        started.elapsed()
    );
    for (d, other) in [(&a, "b.test"), (&b, "a.test")] {
        let log = d.log();
        let kept: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" delivered ") && l.contains(&format!("from=support@{other}")))
            .collect();
        // The first mail, then the other desk's ack and its team copy,
        // each logged once. Both are automatic mail: kept (apart, or on
        // the local ticket whose participant the other desk is, by the
        // shared token prefix), never answered.
        assert_eq!(kept.len(), 3, "{log}");
        assert!(kept[0].contains("action=new"), "{}", kept[0]);
        for l in &kept[1..] {
            assert!(
                l.contains("action=apart") || l.contains("action=attach"),
                "{l}"
            );
        }
        assert_eq!(d.tickets().len(), 1, "only the first mail made a ticket");
    }
}
