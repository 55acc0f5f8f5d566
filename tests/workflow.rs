//! The zero-UI workflow end to end (SPEC §5): every row worked by mail
//! through LMTP, the real daemon, and a recording SMTP sink.

mod common;

use common::sink::{Received, Sink};
use common::*;
use std::time::Duration;

const SUPPORT: &str = "support@example.com";
const CUSTOMER: &str = "mari@cust.test";
const EXTRA: &str = "commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
policy:
  reminder_after: 3s
  reopen_within: 5s
";

fn start() -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), EXTRA);
    (sink, d)
}

fn wait_kind(sink: &Sink, k: &str, n: usize, what: &str) -> Vec<Received> {
    eventually(20, what, || of_kind(sink, k).len() >= n);
    of_kind(sink, k)
}

/// The action address inside a mailto: link of `action` for ticket `n`.
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

fn customer_mail(d: &Daemon, id: &str, subject: &str) {
    d.deliver_ok(
        CUSTOMER,
        &mail(
            id,
            &format!("Mari <{CUSTOMER}>"),
            subject,
            "",
            "The printer is broken.",
        ),
    );
}

/// A staff mail to `rcpt`, optionally authenticated by the MTA.
fn staff(
    d: &Daemon,
    from: &str,
    rcpt: &str,
    id: &str,
    subject: &str,
    auth: bool,
    body: &str,
) -> Vec<String> {
    let extra = if auth { AUTH_OK } else { "" };
    let m = format!(
        "{extra}From: {from}\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 11:00:00 +0200\r\n\r\n{body}\r\n"
    );
    d.deliver(from, &[rcpt], m.as_bytes())
}

fn report(d: &Daemon, sink: &Sink, from: &str, all: bool, nth: usize) -> Received {
    let rcpt = if all {
        "support+report-all@example.com"
    } else {
        "support+report@example.com"
    };
    let r = staff(
        d,
        from,
        rcpt,
        &format!("rep{nth}@example.com"),
        "report please",
        false,
        "",
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    let reps = wait_kind(sink, "report", nth, "a report");
    reps[nth - 1].clone()
}

#[test]
fn reply_all_assigns_with_no_notifications() {
    let (sink, d) = start();
    customer_mail(&d, "ra1@cust.test", "Printer");
    sink.wait_for(2, Duration::from_secs(10));
    let m = format!(
        "From: alice@example.com\r\nTo: {CUSTOMER}\r\nCc: {SUPPORT}\r\nSubject: Re: Printer [SUP-1]\r\nIn-Reply-To: <ra1@cust.test>\r\nMessage-ID: <ra2@example.com>\r\n\r\nWe are on it.\r\n"
    );
    d.deliver_ok("alice@example.com", m.as_bytes());
    let t = d.show("SUP-1");
    assert_eq!(
        (t["status"].as_str(), t["assignee"].as_str()),
        (Some("active"), Some("alice@example.com"))
    );
    let copies = wait_kind(&sink, "copy", 2, "bob's copy of alice's answer");
    assert_eq!(copies[1].rcpt_to, vec!["bob@example.com"]);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        of_kind(&sink, "notice").is_empty() && of_kind(&sink, "status").is_empty(),
        "no notices on Reply-All"
    );
    assert_eq!(t["notified"], false);
}

#[test]
fn take_link_notifies_tells_customer_once_and_reminds() {
    let (sink, d) = start();
    customer_mail(&d, "tk1@cust.test", "Printer");
    let rep = report(&d, &sink, "alice@example.com", false, 1);
    let take = link(&rep, "take", 1);
    let r = staff(
        &d,
        "alice@example.com",
        &take,
        "tk2@example.com",
        "take SUP-1",
        false,
        "",
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    let t = d.show("SUP-1");
    assert_eq!(
        (
            t["status"].as_str(),
            t["assignee"].as_str(),
            t["notified"].as_bool()
        ),
        (Some("active"), Some("alice@example.com"), Some(true))
    );
    assert_eq!(t["reminders"].as_array().map(|a| a.len()), Some(1));
    let notice = &wait_kind(&sink, "notice", 1, "alice's notice")[0];
    assert_eq!(notice.rcpt_to, vec!["alice@example.com"]);
    assert!(
        notice.body_text().contains("support+done-1-"),
        "done link in the notice"
    );
    let status = &wait_kind(&sink, "status", 1, "the customer told")[0];
    assert_eq!(status.rcpt_to, vec![CUSTOMER]);
    assert!(status
        .header("Subject")
        .unwrap_or_default()
        .contains("[SUP-1]"));
    // Redirect to bob: bob's notice, the customer is not told again.
    d.cli_ok(&["ticket", "assign", "SUP-1", "bob"]);
    let notices = wait_kind(&sink, "notice", 2, "bob's notice");
    assert_eq!(notices[1].rcpt_to, vec!["bob@example.com"]);
    // The reminder comes reminder_after (3s) after the ticket started, to bob.
    let rem = &wait_kind(&sink, "reminder", 1, "the reminder")[0];
    assert_eq!(rem.rcpt_to, vec!["bob@example.com"]);
    assert_eq!(
        of_kind(&sink, "status").len(),
        1,
        "the customer was told once"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(of_kind(&sink, "reminder").len(), 1, "a reminder fires once");
}

#[test]
fn reminder_fires_after_a_restart() {
    let (sink, mut d) = start();
    customer_mail(&d, "rs1@cust.test", "Printer");
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    d.stop();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        of_kind(&sink, "reminder").is_empty(),
        "nothing fires while down"
    );
    d.restart();
    let rem = &wait_kind(&sink, "reminder", 1, "the caught-up reminder")[0];
    assert_eq!(rem.rcpt_to, vec!["alice@example.com"]);
    // The sender logs after the relay's reply, so the line can trail the
    // sink's copy by a moment on a busy machine.
    eventually(10, "the reminder's log line", || {
        d.log().contains("kind=reminder")
    });
}

#[test]
fn done_link_closes_and_removes_the_reminder() {
    let (sink, d) = start();
    customer_mail(&d, "dn1@cust.test", "Printer");
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    let notice = &wait_kind(&sink, "notice", 1, "notice")[0];
    let done = link(notice, "done", 1);
    let r = staff(
        &d,
        "alice@example.com",
        &done,
        "dn2@example.com",
        "done",
        false,
        "",
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    let t = d.show("SUP-1");
    assert_eq!(t["status"], "done");
    assert!(t["ended_at"].is_string());
    assert_eq!(t["reminders"].as_array().map(|a| a.len()), Some(0));
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        of_kind(&sink, "reminder").is_empty(),
        "the reminder is gone"
    );
}

#[test]
fn forged_and_unauthenticated_commands_are_refused() {
    let (sink, d) = start();
    customer_mail(&d, "fg1@cust.test", "Printer");
    let rep = report(&d, &sink, "alice@example.com", false, 1);
    let take = link(&rep, "take", 1);
    // Tampered signature.
    let bad = take.replacen("take-1-", "take-1-x", 1);
    staff(
        &d,
        "alice@example.com",
        &bad,
        "fg2@example.com",
        "take",
        false,
        "",
    );
    // Replayed: ticket 1's signature on ticket 2.
    customer_mail(&d, "fg3@cust.test", "Another");
    let replay = take.replacen("take-1-", "take-2-", 1);
    staff(
        &d,
        "alice@example.com",
        &replay,
        "fg4@example.com",
        "take",
        false,
        "",
    );
    // #done with no authentication, and with a forged Authentication-Results.
    staff(
        &d,
        "alice@example.com",
        SUPPORT,
        "fg5@example.com",
        "Re: Printer [SUP-1]",
        false,
        "#done\r\n",
    );
    let forged = "Authentication-Results: evil.test; dkim=pass header.d=example.com\r\n";
    let m = format!("{forged}From: alice@example.com\r\nTo: {SUPPORT}\r\nSubject: Re: Printer [SUP-1]\r\nMessage-ID: <fg6@example.com>\r\n\r\n#done\r\n");
    d.deliver_ok("alice@example.com", m.as_bytes());
    // A stranger using a valid link gets nothing back.
    staff(
        &d,
        "eve@evil.test",
        &take,
        "fg7@evil.test",
        "take",
        false,
        "",
    );
    let refusals = wait_kind(&sink, "refusal", 4, "four refusals to alice");
    assert!(refusals
        .iter()
        .all(|m| m.rcpt_to == vec!["alice@example.com"]));
    let text: String = refusals.iter().map(|m| m.body_text()).collect();
    assert!(text.contains("signature is not valid"), "{text}");
    assert!(text.contains("not authenticated"), "{text}");
    std::thread::sleep(Duration::from_millis(700));
    assert!(sink
        .messages()
        .iter()
        .all(|m| !m.rcpt_to.contains(&"eve@evil.test".to_string())));
    for tok in ["SUP-1", "SUP-2"] {
        let t = d.show(tok);
        assert_eq!(t["status"], "unassigned", "{tok} unchanged");
    }
    // The mails were kept on the ticket.
    let kinds: Vec<String> = d.show("SUP-1")["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "command").count() >= 3,
        "{kinds:?}"
    );
    // And an authenticated #done works.
    staff(
        &d,
        "alice@example.com",
        SUPPORT,
        "fg8@example.com",
        "Re: Printer [SUP-1]",
        true,
        "#done\r\n",
    );
    assert_eq!(d.show("SUP-1")["status"], "done");
}

#[test]
fn customer_after_done_reopens_then_after_the_window_follows_up() {
    let (sink, d) = start();
    customer_mail(&d, "ro1@cust.test", "Printer");
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    staff(
        &d,
        "alice@example.com",
        SUPPORT,
        "ro2@example.com",
        "Re: Printer [SUP-1]",
        true,
        "#done\r\n",
    );
    assert_eq!(d.show("SUP-1")["status"], "done");
    let m = mail(
        "ro3@cust.test",
        CUSTOMER,
        "Re: Printer",
        "In-Reply-To: <ro1@cust.test>\r\n",
        "Still broken!",
    );
    d.deliver_ok(CUSTOMER, &m);
    let t = d.show("SUP-1");
    assert_eq!(
        (t["status"].as_str(), t["reopened"].as_bool()),
        (Some("active"), Some(true))
    );
    let notices = wait_kind(&sink, "notice", 2, "the reopened notice");
    assert!(notices[1]
        .header("Subject")
        .unwrap_or_default()
        .contains("REOPENED"));
    let rep = report(&d, &sink, "alice@example.com", false, 1);
    assert!(rep.body_text().contains("REOPENED"), "{}", rep.body_text());
    // Done again; a reply after reopen_within (5s) opens a follow-up.
    staff(
        &d,
        "alice@example.com",
        SUPPORT,
        "ro4@example.com",
        "Re: Printer [SUP-1]",
        true,
        "#done\r\n",
    );
    std::thread::sleep(Duration::from_secs(6));
    let m = mail(
        "ro5@cust.test",
        CUSTOMER,
        "Re: Printer",
        "In-Reply-To: <ro3@cust.test>\r\n",
        "Again?",
    );
    d.deliver_ok(CUSTOMER, &m);
    let f = d.show("SUP-2");
    assert_eq!(f["follow_up_of"], "SUP-1");
    assert_eq!(d.show("SUP-1")["status"], "done");
}

#[test]
fn snooze_wakes_and_waiting_turns_active_on_an_answer() {
    let (_sink, d) = start();
    customer_mail(&d, "sz1@cust.test", "Printer");
    staff(
        &d,
        "alice@example.com",
        SUPPORT,
        "sz2@example.com",
        "Re: Printer [SUP-1]",
        true,
        "#take\r\n#snooze 2s\r\n",
    );
    assert_eq!(d.show("SUP-1")["status"], "snoozed");
    eventually(10, "the snoozed ticket wakes", || {
        d.show("SUP-1")["status"] == "active"
    });
    staff(
        &d,
        "alice@example.com",
        SUPPORT,
        "sz3@example.com",
        "Re: Printer [SUP-1]",
        true,
        "#waiting\r\n",
    );
    assert_eq!(d.show("SUP-1")["status"], "waiting");
    let m = mail(
        "sz4@cust.test",
        CUSTOMER,
        "Re: Printer",
        "In-Reply-To: <sz1@cust.test>\r\n",
        "Here you are",
    );
    d.deliver_ok(CUSTOMER, &m);
    assert_eq!(d.show("SUP-1")["status"], "active");
}

#[test]
fn spam_hides_the_ticket_and_sends_nothing() {
    let (sink, d) = start();
    customer_mail(&d, "sp1@cust.test", "Cheap pills");
    let before = sink.wait_for(2, Duration::from_secs(10)).len();
    let rep = report(&d, &sink, "alice@example.com", false, 1);
    let spam = link(&rep, "spam", 1);
    staff(
        &d,
        "alice@example.com",
        &spam,
        "sp2@example.com",
        "spam",
        false,
        "",
    );
    assert_eq!(d.show("SUP-1")["status"], "deleted");
    let rep = report(&d, &sink, "alice@example.com", false, 2);
    assert!(!rep.body_text().contains("SUP-1"), "{}", rep.body_text());
    // More mail from the spammer: kept, nothing sent.
    let m = mail(
        "sp3@cust.test",
        CUSTOMER,
        "Re: Cheap pills",
        "In-Reply-To: <sp1@cust.test>\r\n",
        "buy",
    );
    d.deliver_ok(CUSTOMER, &m);
    std::thread::sleep(Duration::from_millis(700));
    let to_customer = sink
        .messages()
        .iter()
        .filter(|m| m.rcpt_to.contains(&CUSTOMER.to_string()))
        .count();
    assert_eq!(to_customer, 1, "only the first ack ever went to the sender");
    assert_eq!(sink.messages().len(), before + 2, "only the two reports");
}

#[test]
fn attach_joins_a_stray_mail_and_its_replies_follow() {
    let (_sink, d) = start();
    customer_mail(&d, "at1@cust.test", "Printer");
    // A customer wrote to alice directly; alice forwards it with #attach.
    let fwd = format!(
        "{AUTH_OK}From: alice@example.com\r\nTo: {SUPPORT}\r\nSubject: Fwd: toner\r\nMessage-ID: <at2@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n#attach SUP-1\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: {CUSTOMER}\r\nTo: alice@example.com\r\nSubject: toner\r\nMessage-ID: <stray@cust.test>\r\n\r\nAlso the toner is empty.\r\n--b--\r\n"
    );
    d.deliver_ok("alice@example.com", fwd.as_bytes());
    assert_eq!(d.ticket_of("at2@example.com").as_deref(), Some("SUP-1"));
    let reply = mail(
        "at3@cust.test",
        CUSTOMER,
        "Re: toner",
        "In-Reply-To: <stray@cust.test>\r\n",
        "and paper",
    );
    d.deliver_ok(CUSTOMER, &reply);
    assert_eq!(d.ticket_of("at3@cust.test").as_deref(), Some("SUP-1"));
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn reports_list_own_and_everyones_tickets() {
    let (sink, d) = start();
    customer_mail(&d, "rp1@cust.test", "Printer");
    customer_mail(&d, "rp2@cust.test", "Scanner");
    customer_mail(&d, "rp3@cust.test", "Fax");
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    d.cli_ok(&["ticket", "take", "SUP-2", "--as", "bob"]);
    let mine = report(&d, &sink, "alice@example.com", false, 1);
    let body = mine.body_text();
    assert_eq!(mine.rcpt_to, vec!["alice@example.com"]);
    assert!(body.contains("SUP-1") && body.contains("Printer"), "{body}");
    assert!(
        !body.contains("SUP-2"),
        "bob's ticket is not in alice's report: {body}"
    );
    assert!(
        body.contains("SUP-3") && body.contains("support+take-3-"),
        "unassigned with take link: {body}"
    );
    assert!(
        body.contains("support+done-1-") && body.contains("↙"),
        "{body}"
    );
    let all = report(&d, &sink, "alice@example.com", true, 2);
    let body = all.body_text();
    assert!(
        body.contains("SUP-1") && body.contains("SUP-2") && body.contains("bob@example.com"),
        "{body}"
    );
    // A stranger asking for a report gets nothing.
    staff(
        &d,
        "eve@evil.test",
        "support+report@example.com",
        "rp9@evil.test",
        "report",
        false,
        "",
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(of_kind(&sink, "report").len(), 2);
}

#[test]
fn digest_goes_to_the_leads() {
    let sink = Sink::start_blocking();
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(3))
        .unwrap()
        .strftime("%H:%M:%S")
        .to_string();
    let d = Daemon::start(sink.port(), &format!("{EXTRA}  digest_at: \"{at} UTC\"\n"));
    customer_mail(&d, "dg1@cust.test", "Printer");
    customer_mail(&d, "dg2@cust.test", "Scanner");
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    let dg = &wait_kind(&sink, "digest", 1, "the digest")[0];
    assert_eq!(dg.rcpt_to, vec!["lead@example.com"]);
    let body = dg.body_text();
    assert!(
        body.contains("Unassigned: 1") && body.contains("SUP-2"),
        "{body}"
    );
    assert!(body.contains("alice@example.com: 1"), "{body}");
}

#[test]
fn stats_count_a_scripted_history() {
    let (_sink, d) = start();
    for i in 1..=4 {
        customer_mail(&d, &format!("st{i}@cust.test"), &format!("Q{i}"));
    }
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    d.cli_ok(&["ticket", "take", "SUP-2", "--as", "alice"]);
    d.cli_ok(&["ticket", "take", "SUP-3", "--as", "bob"]);
    d.cli_ok(&["ticket", "done", "SUP-1"]);
    d.cli_ok(&["ticket", "done", "SUP-3"]);
    d.cli_ok(&["ticket", "customer", "SUP-2", "ACME"]);
    let v: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["stats", "--by", "agent", "--since", "30d", "--json"]))
            .unwrap();
    let row = |who: &str| {
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["agent"] == who)
            .cloned()
            .unwrap()
    };
    let a = row("alice@example.com");
    assert_eq!(
        (
            a["started"].as_u64(),
            a["done"].as_u64(),
            a["open"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let b = row("bob@example.com");
    assert_eq!(
        (
            b["started"].as_u64(),
            b["done"].as_u64(),
            b["open"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    let u = row("(unassigned)");
    assert_eq!(u["open"].as_u64(), Some(1));
    let v: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&["stats", "--by", "customer", "--json"])).unwrap();
    assert!(
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["customer"] == "ACME" && r["open"] == 1),
        "{v}"
    );
}
