//! Resolve → confirm → close, status notices and ratings (issue #9), end
//! to end: the real daemon, mail through LMTP, the recording SMTP sink. The
//! customer's links are taken from the mail the sink recorded and "clicked"
//! by sending a mail to the address inside them, as a mail client would.

mod common;

use common::sink::{Received, Sink};
use common::*;
use serde_json::Value;

const CUSTOMER: &str = "mari@cust.test";
const TRUST: &str = "commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
";

fn start(extra: &str) -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), &format!("{TRUST}{extra}"));
    (sink, d)
}

/// A new ticket from the customer; its token.
fn new_ticket(d: &Daemon, id: &str) -> String {
    d.deliver_ok(
        CUSTOMER,
        &mail(
            id,
            &format!("Mari <{CUSTOMER}>"),
            "Printer broken",
            "",
            "The printer is broken.",
        ),
    );
    d.ticket_of(id).expect("a ticket for the customer's mail")
}

/// Alice answers the customer (Reply-All to support) with commands on top.
fn alice_answers(d: &Daemon, tok: &str, id: &str, body: &str) {
    let m = format!(
        "{AUTH_OK}From: Alice <alice@example.com>\r\nTo: {CUSTOMER}\r\nCc: support@example.com\r\nSubject: Re: Printer broken [{tok}]\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 11:00:00 +0200\r\n\r\n{body}\r\n"
    );
    let r = d.deliver("alice@example.com", &["support@example.com"], m.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}");
}

/// Mail the sink got of kind `k` to `to`, waiting for at least `n`.
fn wait_mail(sink: &Sink, k: &str, to: &str, n: usize) -> Vec<Received> {
    let got = || -> Vec<Received> {
        of_kind(sink, k)
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r == to))
            .collect()
    };
    eventually(20, &format!("{n} {k} mail to {to}"), || got().len() >= n);
    got()
}

/// The action address inside the `mailto:` link of `action` in `m`.
fn link(m: &Received, action: &str) -> String {
    let body = m.body_text();
    let needle = format!("support+{action}-");
    let start = body
        .find(&needle)
        .unwrap_or_else(|| panic!("no {action} link in:\n{body}"));
    let rest = &body[start..];
    let end = rest.find('?').unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The customer "clicks" a link: a mail to its address; the LMTP reply.
fn click(d: &Daemon, from: &str, addr: &str, id: &str) {
    let m = format!(
        "From: {from}\r\nTo: {addr}\r\nSubject: click\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 12:00:00 +0200\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\r\n"
    );
    let r = d.deliver(from, &[addr], m.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}");
}

/// The customer replies to a mail the desk sent them.
fn reply_to(d: &Daemon, to_what: &Received, id: &str, body: &str) {
    let parent = angle(&to_what.header("Message-ID").expect("Message-ID"));
    let subject = to_what.header("Subject").unwrap_or_default();
    d.deliver_ok(
        CUSTOMER,
        &mail(
            id,
            &format!("Mari <{CUSTOMER}>"),
            &format!("Re: {subject}"),
            &format!("In-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n"),
            body,
        ),
    );
}

/// Every outbox row the desk made, as (kind, ticket, recipients).
fn outbox(d: &Daemon) -> Vec<(String, String, Vec<String>)> {
    let out = d.cli_ok(&["outbox", "list", "--state", "all", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                field(e, "kind").unwrap_or_default().to_string(),
                field(e, "ticket").unwrap_or_default().to_string(),
                strs(&e["rcpt_to"]),
            )
        })
        .collect()
}

fn status_of(d: &Daemon, tok: &str) -> String {
    field(&d.show(tok), "status")
        .unwrap_or_default()
        .to_string()
}

/// The refusal the sender got in reply to their mail `id`.
fn refusal_for(sink: &Sink, to: &str, id: &str) -> Received {
    eventually(20, &format!("refusal of <{id}> to {to}"), || {
        of_kind(sink, "refusal").iter().any(|m| {
            m.rcpt_to.iter().any(|r| r == to)
                && m.header("In-Reply-To").map(|v| angle(&v)).as_deref() == Some(id)
        })
    });
    of_kind(sink, "refusal")
        .into_iter()
        .find(|m| m.header("In-Reply-To").map(|v| angle(&v)).as_deref() == Some(id))
        .expect("the refusal")
}

#[test]
fn each_status_notice_goes_when_on_in_the_customers_thread() {
    let (sink, d) = start("status_notices: {waiting: true, done: true, closed: true}\n");
    let tok = new_ticket(&d, "q1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s1@example.com",
        &format!("[{tok}]"),
        "#take",
    );
    staff(
        &d,
        "alice@example.com",
        "s2@example.com",
        &format!("[{tok}]"),
        "#waiting",
    );
    let waiting = wait_mail(&sink, "status-waiting", CUSTOMER, 1);
    let w = &waiting[0];
    assert!(w
        .header("Subject")
        .unwrap_or_default()
        .contains(&format!("[{tok}]")));
    // In the customer's thread: in reply to their mail.
    assert_eq!(
        w.header("In-Reply-To").map(|v| angle(&v)).as_deref(),
        Some("q1@cust.test")
    );
    assert!(
        w.body_text().contains("waiting for your answer"),
        "{}",
        w.body_text()
    );

    // The customer answers; Alice resolves it in her answer to them.
    reply_to(&d, w, "q2@cust.test", "Here is the model number: X-100.");
    assert_eq!(status_of(&d, &tok), "active");
    alice_answers(
        &d,
        &tok,
        "s3@example.com",
        "#done\n\nThe driver for the X-100 is updated; restart the printer once.",
    );
    let done = wait_mail(&sink, "status-done", CUSTOMER, 1);
    let m = &done[0];
    let body = m.body_text();
    assert!(
        body.contains("The driver for the X-100 is updated; restart the printer once."),
        "the resolution is quoted: {body}"
    );
    assert!(!body.contains("#done"), "{body}");
    // The newest customer mail is the one answered.
    assert_eq!(
        m.header("In-Reply-To").map(|v| angle(&v)).as_deref(),
        Some("q2@cust.test")
    );
    for a in ["rate-good", "rate-neutral", "rate-bad"] {
        link(m, a);
    }
    // Without confirm_close there is nothing to confirm.
    assert!(!body.contains("support+confirm-"), "{body}");
    // A done ticket without confirm_close never closes, so no closed notice.
    assert!(!outbox(&d).iter().any(|(k, _, _)| k == "status-closed"));
}

#[test]
fn status_notices_off_send_nothing() {
    let (_sink, d) = start("");
    let tok = new_ticket(&d, "q1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s1@example.com",
        &format!("[{tok}]"),
        "#take",
    );
    staff(
        &d,
        "alice@example.com",
        "s2@example.com",
        &format!("[{tok}]"),
        "#waiting",
    );
    d.cli_ok(&["ticket", "done", &tok]);
    assert_eq!(status_of(&d, &tok), "done");
    // Outbox rows are written in the same transaction as the change, so
    // the list is complete once the status shows.
    let kinds: Vec<String> = outbox(&d).into_iter().map(|(k, _, _)| k).collect();
    assert!(kinds.iter().any(|k| k == "ack"), "{kinds:?}");
    assert!(
        kinds.iter().any(|k| k == "status"),
        "taken is on by default: {kinds:?}"
    );
    assert!(
        !kinds.iter().any(|k| k.starts_with("status-")),
        "no status notice when off: {kinds:?}"
    );

    // With confirm_close the done notice goes anyway (it carries the only
    // way to confirm); the closed notice still follows its switch.
    let (sink, d) = start("policy: {confirm_close: true, autoclose_after: 1h}\n");
    let tok = new_ticket(&d, "q1@cust.test");
    d.cli_ok(&["ticket", "done", &tok]);
    let m = wait_mail(&sink, "status-done", CUSTOMER, 1)[0].clone();
    click(&d, CUSTOMER, &link(&m, "confirm"), "c1@cust.test");
    assert_eq!(status_of(&d, &tok), "closed");
    let kinds: Vec<String> = outbox(&d).into_iter().map(|(k, _, _)| k).collect();
    assert!(
        !kinds.iter().any(|k| k == "status-closed"),
        "closed is off: {kinds:?}"
    );
    // An unassigned ticket resolved from the CLI: the done notice has no
    // agent text to quote, and still its links.
    assert!(
        m.body_text().contains("has been resolved"),
        "{}",
        m.body_text()
    );
}

#[test]
fn confirm_closes_then_mail_makes_a_follow_up_and_reopen_reactivates() {
    let (sink, d) = start(
        "policy: {confirm_close: true, autoclose_after: 1h}\nstatus_notices: {closed: true}\n",
    );
    let tok = new_ticket(&d, "q1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s1@example.com",
        &format!("[{tok}]"),
        "#take",
    );
    // Done from the CLI: the done notice goes though `done: false`.
    d.cli_ok(&["ticket", "done", &tok]);
    let done = wait_mail(&sink, "status-done", CUSTOMER, 1);
    let m = &done[0];
    let body = m.body_text();
    assert!(body.contains("closes by itself in 1h"), "{body}");
    let confirm = link(m, "confirm");
    assert!(confirm.starts_with("support+confirm-1-1-"), "{confirm}");
    link(m, "reopen");

    click(&d, CUSTOMER, &confirm, "c1@cust.test");
    let t = d.show(&tok);
    assert_eq!(field(&t, "status"), Some("closed"));
    assert!(t["closed_at"].is_string(), "{t}");
    // The click is kept on the ticket.
    assert!(strs(&t["message_ids"]).contains(&"c1@cust.test".to_string()));
    let closed = wait_mail(&sink, "status-closed", CUSTOMER, 1);
    assert!(closed[0].body_text().contains("is now closed"));

    // The same link again: refused with the reason, nothing changes.
    click(&d, CUSTOMER, &confirm, "c2@cust.test");
    let r = refusal_for(&sink, CUSTOMER, "c2@cust.test");
    assert!(
        r.body_text().contains("already closed"),
        "{}",
        r.body_text()
    );
    assert_eq!(d.show(&tok)["closed_at"], t["closed_at"]);
    // Reopen by link on a closed ticket: refused, write a new mail.
    click(&d, CUSTOMER, &link(m, "reopen"), "c3@cust.test");
    let r = refusal_for(&sink, CUSTOMER, "c3@cust.test");
    assert!(
        r.body_text().contains("write a new mail"),
        "{}",
        r.body_text()
    );
    assert_eq!(status_of(&d, &tok), "closed");

    // A reply after close starts a new ticket that refers to the old one.
    reply_to(&d, &closed[0], "q2@cust.test", "It broke again.");
    let new = d.ticket_of("q2@cust.test").expect("a ticket for the reply");
    assert_ne!(new, tok);
    let n = d.show(&new);
    assert_eq!(field(&n, "follow_up_of"), Some(tok.as_str()));
    let old = d.show(&tok);
    assert_eq!(field(&old, "status"), Some("closed"));
    assert_eq!(field(&old, "followed_by"), Some(new.as_str()));

    // Only an agent reopens a closed ticket.
    staff(
        &d,
        "alice@example.com",
        "s2@example.com",
        &format!("[{tok}]"),
        "#reopen",
    );
    let t = d.show(&tok);
    assert_eq!(field(&t, "status"), Some("active"));
    assert!(t["closed_at"].is_null(), "{t}");
    assert_eq!(t["reopen_count"], 1);
}

#[test]
fn reopen_by_link_and_by_reply_and_old_links_are_refused() {
    let (sink, d) = start("policy: {confirm_close: true, autoclose_after: 1h}\n");
    let tok = new_ticket(&d, "q1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s1@example.com",
        &format!("[{tok}]"),
        "#take",
    );
    d.cli_ok(&["ticket", "done", &tok]);
    let first = wait_mail(&sink, "status-done", CUSTOMER, 1)[0].clone();

    // Reopen by link: back to Alice, who hears of it.
    click(&d, CUSTOMER, &link(&first, "reopen"), "c1@cust.test");
    let t = d.show(&tok);
    assert_eq!(
        (field(&t, "status"), field(&t, "assignee")),
        (Some("active"), Some("alice@example.com"))
    );
    eventually(20, "reopened notice to alice", || {
        of_kind(&sink, "notice").iter().any(|m| {
            m.rcpt_to.iter().any(|r| r == "alice@example.com")
                && m.header("Subject").unwrap_or_default().contains("REOPENED")
        })
    });

    // Resolved again: resolution 2, new links; the first mail's go stale.
    d.cli_ok(&["ticket", "done", &tok]);
    let second = wait_mail(&sink, "status-done", CUSTOMER, 2)
        .into_iter()
        .find(|m| m.body_text().contains("support+confirm-1-2-"))
        .expect("the second resolution's mail");
    for (i, action) in ["confirm", "rate-good"].iter().enumerate() {
        let id = format!("old{i}@cust.test");
        click(&d, CUSTOMER, &link(&first, action), &id);
        let r = refusal_for(&sink, CUSTOMER, &id);
        assert!(
            r.body_text().contains("earlier resolution"),
            "{action}: {}",
            r.body_text()
        );
    }
    let t = d.show(&tok);
    assert_eq!(field(&t, "status"), Some("done"));
    assert!(t["rating"].is_null(), "{t}");

    // Reopen by replying to the resolution mail.
    reply_to(&d, &second, "q2@cust.test", "Still broken, sorry.");
    let t = d.show(&tok);
    assert_eq!(field(&t, "status"), Some("active"));
    assert_eq!(t["reopen_count"], 2);
    assert_eq!(d.ticket_of("q2@cust.test").as_deref(), Some(tok.as_str()));
}

#[test]
fn a_resolved_ticket_closes_by_itself() {
    let (sink, d) = start(
        "policy: {confirm_close: true, autoclose_after: 2s}\nstatus_notices: {closed: true}\n",
    );
    let tok = new_ticket(&d, "q1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s1@example.com",
        &format!("[{tok}]"),
        "#take",
    );
    // By mail: a delivery that schedules a job wakes the scheduler.
    staff(
        &d,
        "alice@example.com",
        "s2@example.com",
        &format!("[{tok}]"),
        "#done",
    );
    wait_mail(&sink, "status-done", CUSTOMER, 1);
    eventually(20, "the ticket closes by itself", || {
        status_of(&d, &tok) == "closed"
    });
    let t = d.show(&tok);
    assert!(t["closed_at"].is_string(), "{t}");
    wait_mail(&sink, "status-closed", CUSTOMER, 1);
    assert!(d.log().contains("autoclose"), "the job shows in the log");
}

#[test]
fn a_reopened_ticket_is_not_closed_by_the_old_job() {
    let (sink, d) = start("policy: {confirm_close: true, autoclose_after: 2s}\n");
    let tok = new_ticket(&d, "q1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s1@example.com",
        &format!("[{tok}]"),
        "#take",
    );
    staff(
        &d,
        "alice@example.com",
        "s2@example.com",
        &format!("[{tok}]"),
        "#done",
    );
    let m = wait_mail(&sink, "status-done", CUSTOMER, 1)[0].clone();
    click(&d, CUSTOMER, &link(&m, "reopen"), "c1@cust.test");
    assert_eq!(status_of(&d, &tok), "active");
    eventually(20, "the autoclose job skips", || {
        d.log()
            .contains("skipped: no longer done with that resolution")
    });
    assert_eq!(status_of(&d, &tok), "active");
}

#[test]
fn ratings_one_click_each_with_a_comment_and_refusals() {
    let (sink, d) = start("status_notices: {done: true}\n");
    let tok = new_ticket(&d, "q1@cust.test");
    staff(
        &d,
        "alice@example.com",
        "s1@example.com",
        &format!("[{tok}]"),
        "#take",
    );
    d.cli_ok(&["ticket", "done", &tok]);
    let done1 = wait_mail(&sink, "status-done", CUSTOMER, 1)[0].clone();

    // A tampered link: refused with the reason, nothing recorded, the
    // mail kept on the ticket.
    let good = link(&done1, "rate-good");
    let (head, sig) = good.rsplit_once('-').expect("a signature");
    let first = sig.as_bytes()[0];
    let swapped = if first == b'a' { 'b' } else { 'a' };
    let tampered = format!("{head}-{swapped}{}", &sig[1..]);
    click(&d, CUSTOMER, &tampered, "t1@cust.test");
    let r = refusal_for(&sink, CUSTOMER, "t1@cust.test");
    assert!(r.body_text().contains("not valid"), "{}", r.body_text());
    let t = d.show(&tok);
    assert!(t["rating"].is_null(), "{t}");
    assert!(strs(&t["message_ids"]).contains(&"t1@cust.test".to_string()));

    // Bad, then a second click on the same resolution is refused.
    click(&d, CUSTOMER, &link(&done1, "rate-bad"), "r1@cust.test");
    let t = d.show(&tok);
    assert_eq!(t["rating"]["value"], "bad", "{t}");
    assert_eq!(t["rating"]["resolution"], 1);
    let thanks = wait_mail(&sink, "rated", CUSTOMER, 1)[0].clone();
    assert!(
        thanks.body_text().contains("reply to this mail"),
        "{}",
        thanks.body_text()
    );
    click(&d, CUSTOMER, &good, "r2@cust.test");
    let r = refusal_for(&sink, CUSTOMER, "r2@cust.test");
    assert!(r.body_text().contains("already rated"), "{}", r.body_text());
    assert_eq!(d.show(&tok)["rating"]["value"], "bad");

    // A reply to the thanks is the rating's comment, not a reopen.
    reply_to(&d, &thanks, "k1@cust.test", "It took three days.");
    let t = d.show(&tok);
    assert_eq!(t["rating"]["comment"], "It took three days.", "{t}");
    assert_eq!(field(&t, "status"), Some("done"));
    assert_eq!(t["reopen_count"], 0);
    let text = d.cli_ok(&["ticket", "show", &tok]);
    assert!(text.contains("rating") && text.contains("bad"), "{text}");
    assert!(text.contains("It took three days."), "{text}");

    // Each resolution gets its own rating: neutral, then good.
    for (n, value) in [(2, "neutral"), (3, "good")] {
        d.cli_ok(&["ticket", "reopen", &tok]);
        d.cli_ok(&["ticket", "done", &tok]);
        let m = wait_mail(&sink, "status-done", CUSTOMER, n)
            .into_iter()
            .find(|m| {
                m.body_text()
                    .contains(&format!("support+rate-{value}-1-{n}-"))
            })
            .expect("this resolution's mail");
        click(
            &d,
            CUSTOMER,
            &link(&m, &format!("rate-{value}")),
            &format!("v{n}@cust.test"),
        );
        let t = d.show(&tok);
        assert_eq!(t["rating"]["value"], value, "{t}");
        assert_eq!(t["rating"]["resolution"], n);
        assert!(t["rating"]["comment"].is_null(), "{t}");
    }
}
