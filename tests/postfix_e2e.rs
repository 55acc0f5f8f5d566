//! End to end behind a real Postfix: mail submitted over SMTP, routed by
//! `transport_maps` to postdesk over LMTP (TCP and Unix socket), postdesk's
//! own mail sent back through Postfix's second smtpd into the customers'
//! and agents' Maildirs. What is checked is what an operator would look at:
//! the Maildirs, `postdesk ticket … --json`, `postqueue`, and both logs.
//!
//! Needs Postfix and python3 (scripts/test.sh installs them) and root (a
//! private Postfix instance is started per test under /tmp).
//!
//! Not here yet: signed action links (`support+take-N-SIG@…`) through
//! Postfix come with the workflow issue; the plus-address routing they need
//! (`recipient_delimiter = +`) is already in this instance.

mod common;
#[path = "common/postfix.rs"]
mod postfix;

use common::mail;
use postfix::{poll, Desk, Lmtp, Mail, Postfix};

const SUPPORT: &str = "support@example.com";
const MARI: &str = "mari@cust.test";

/// Postfix in front of postdesk on TCP.
fn start_tcp() -> (Postfix, Desk) {
    let mut pf = Postfix::new();
    let desk = Desk::start_tcp(pf.relay_port);
    pf.start(&desk.lmtp);
    (pf, desk)
}

fn kind(k: &'static str) -> impl Fn(&Mail) -> bool {
    move |m| m.kind().as_deref() == Some(k)
}

/// Mari writes to support; returns the queue id Postfix gave her mail.
fn mari_writes(pf: &Postfix, id: &str, subject: &str) -> String {
    let m = mail(
        id,
        "Mari Maasikas <mari@cust.test>",
        subject,
        "",
        "Hello,\r\nthe printer on floor 2 prints nothing.\r\n",
    );
    pf.submit(MARI, &[SUPPORT], &m)
}

/// Postfix's `status=sent` lines for the support address of one queue id.
fn sent_to_support(pf: &Postfix, queue_id: &str) -> Vec<String> {
    pf.log_of(queue_id)
        .into_iter()
        .filter(|l| l.contains("to=<support@example.com>") && l.contains("status=sent"))
        .collect()
}

#[test]
fn customer_mail_becomes_a_ticket_with_ack_and_team_copies_in_maildirs() {
    let (pf, desk) = start_tcp();
    let qid = mari_writes(&pf, "first@cust.test", "Printer does not print");

    // Postfix handed it to postdesk, which named the ticket in its 250.
    let line = poll(15, "Postfix's status=sent for the support address", || {
        sent_to_support(&pf, &qid).into_iter().next()
    });
    assert!(
        line.contains(&format!("relay=127.0.0.1[127.0.0.1]:{}", port(&desk)))
            && line.contains("250 2.0.0 <support@example.com> OK, stored as SUP-1"),
        "{line}"
    );
    // postdesk's delivered line carries Postfix's queue id: one mail can be
    // followed from Postfix's log into postdesk's.
    let delivered = desk.log_lines(&["delivered", &format!("queue_id={qid}")]);
    assert_eq!(delivered.len(), 1, "{}", desk.log());
    assert!(
        delivered[0].contains("ticket=SUP-1") && delivered[0].contains("action=new"),
        "{}",
        delivered[0]
    );

    let t = desk.show("SUP-1");
    assert_eq!(t["status"], "unassigned");
    assert_eq!(t["contact"], MARI);
    assert_eq!(t["subject"], "Printer does not print");
    assert_eq!(t["message_ids"], serde_json::json!(["first@cust.test"]));

    let ack = pf.wait_mail(MARI, "the ack", kind("ack"));
    assert!(
        ack.subject().contains("[SUP-1]") && ack.subject().starts_with("Re: "),
        "{}",
        ack.subject()
    );
    assert_eq!(
        ack.header("In-Reply-To").as_deref(),
        Some("<first@cust.test>")
    );
    assert_eq!(
        ack.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert!(ack.text().contains("SUP-1"), "{}", ack.text());

    for agent in ["alice@example.com", "bob@example.com"] {
        let copy = pf.wait_mail(agent, "the team copy", kind("copy"));
        assert!(copy.subject().contains("[SUP-1]"), "{}", copy.subject());
        let from = copy.header("From").unwrap_or_default();
        assert!(
            from.contains("via Support") && from.contains("<support@example.com>"),
            "{from}"
        );
        let reply_to = copy.header("Reply-To").unwrap_or_default();
        assert!(
            reply_to.contains(MARI) && reply_to.contains(SUPPORT),
            "{reply_to}"
        );
        assert!(copy.text().contains("prints nothing"), "{}", copy.text());
    }
    // Nothing for the customer but the ack; no copy to her.
    assert_eq!(pf.mails(MARI).len(), 1);
}

#[test]
fn agent_reply_all_assigns_and_reaches_customer_and_her_answer_threads() {
    let (pf, desk) = start_tcp();
    mari_writes(&pf, "start@cust.test", "VPN is down");
    let copy = pf.wait_mail("alice@example.com", "the team copy", kind("copy"));
    let ack = pf.wait_mail(MARI, "the ack", kind("ack"));

    // Alice answers from her mail client: Reply-All to the team copy.
    pf.reply(
        &copy.path,
        "Alice <alice@example.com>",
        &[SUPPORT],
        "alice-1@example.com",
        "Hi Mari, restart the VPN client, please.",
    );
    let got = pf.wait_mail(MARI, "alice's reply", |m| {
        m.message_id() == "alice-1@example.com"
    });
    assert!(got.subject().contains("[SUP-1]"), "{}", got.subject());
    assert!(
        got.header("From")
            .unwrap_or_default()
            .contains("alice@example.com"),
        "the customer gets alice's own mail"
    );
    poll(15, "SUP-1 to become alice's and active", || {
        let t = desk.show("SUP-1");
        (t["status"] == "active").then_some(t)
    });
    let t = desk.show("SUP-1");
    assert_eq!(t["assignee"], "alice@example.com", "{t}");
    assert_eq!(
        desk.ticket_of("alice-1@example.com").as_deref(),
        Some("SUP-1")
    );
    // Bob sees the answer; alice does not get her own mail back.
    let bobs = pf.wait_mail("bob@example.com", "the copy of alice's answer", |m| {
        m.kind().as_deref() == Some("copy") && m.text().contains("restart the VPN")
    });
    assert!(bobs.subject().contains("[SUP-1]"), "{}", bobs.subject());
    assert!(
        !pf.mails("alice@example.com")
            .iter()
            .any(|m| m.text().contains("restart the VPN")),
        "no copy of her own answer to alice"
    );

    // Mari answers the ack from her mail client.
    pf.reply(
        &ack.path,
        "Mari Maasikas <mari@cust.test>",
        &[],
        "mari-2@cust.test",
        "Restarted, it works again. Thanks!",
    );
    poll(15, "mari's answer to be threaded", || {
        desk.ticket_of("mari-2@cust.test")
    });
    assert_eq!(desk.ticket_of("mari-2@cust.test").as_deref(), Some("SUP-1"));
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(
        tickets[0]["message_ids"],
        serde_json::json!(["start@cust.test", "alice-1@example.com", "mari-2@cust.test"])
    );
    assert_eq!(tickets[0]["replies"], 2);
    // Her answer reaches the team; no second ack for a reply.
    pf.wait_mail("alice@example.com", "the copy of mari's answer", |m| {
        m.kind().as_deref() == Some("copy") && m.text().contains("works again")
    });
    let acks = pf
        .mails(MARI)
        .into_iter()
        .filter(|m| m.kind().as_deref() == Some("ack"))
        .count();
    assert_eq!(acks, 1);
}

#[test]
fn lmtp_over_a_unix_socket_delivers_the_same() {
    let mut pf = Postfix::new();
    let desk = Desk::start_unix(pf.relay_port, &pf.socket_path());
    pf.start(&desk.lmtp);

    // What `ls -l` shows: group postfix, rw for owner and group only.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(pf.socket_path()).expect("the socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let group = std::process::Command::new("getent")
        .args(["group", "postfix"])
        .output()
        .unwrap();
    let gid: u32 = String::from_utf8_lossy(&group.stdout)
        .split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("group postfix");
    assert_eq!(meta.gid(), gid, "socket group is postfix");

    let qid = mari_writes(&pf, "unix@cust.test", "Over the socket");
    let line = poll(15, "Postfix's status=sent over the socket", || {
        sent_to_support(&pf, &qid).into_iter().next()
    });
    assert!(
        line.contains(&pf.socket_path().display().to_string()) && line.contains("SUP-1"),
        "{line}"
    );
    let ack = pf.wait_mail(MARI, "the ack", kind("ack"));
    assert!(ack.subject().contains("[SUP-1]"), "{}", ack.subject());
    pf.wait_mail("bob@example.com", "the team copy", kind("copy"));
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(
        tickets[0]["message_ids"],
        serde_json::json!(["unix@cust.test"])
    );
}

#[test]
fn postdesk_down_postfix_defers_and_a_flush_delivers_each_mail_once() {
    let (pf, mut desk) = start_tcp();
    let first = mari_writes(&pf, "before@cust.test", "Before the outage");
    poll(15, "the first mail delivered", || {
        sent_to_support(&pf, &first).into_iter().next()
    });

    desk.stop();
    let ids = ["down-1@cust.test", "down-2@cust.test", "down-3@cust.test"];
    let qids: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| mari_writes(&pf, id, &format!("During the outage {i}")))
        .collect();
    for q in &qids {
        let line = poll(15, format!("{q} deferred"), || {
            pf.log_of(q)
                .into_iter()
                .find(|l| l.contains("status=deferred"))
        });
        assert!(
            line.contains("to=<support@example.com>") && line.contains("Connection refused"),
            "{line}"
        );
        // Still in Postfix's queue, with the reason.
        let entry = poll(15, format!("{q} in the deferred queue"), || {
            pf.queued(q).filter(|e| e["queue_name"] == "deferred")
        });
        let reason = entry["recipients"][0]["delay_reason"]
            .as_str()
            .unwrap_or_default();
        assert!(reason.contains("Connection refused"), "{entry}");
    }

    desk.spawn();
    pf.flush();
    poll(15, "Postfix's queue to empty", || {
        pf.queue().is_empty().then_some(())
    });
    for q in &qids {
        assert_eq!(sent_to_support(&pf, q).len(), 1, "{q}: {:?}", pf.log_of(q));
    }
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 4, "{tickets:?}");
    let mut all: Vec<&str> = tickets
        .iter()
        .flat_map(|t| t["message_ids"].as_array().unwrap())
        .filter_map(|v| v.as_str())
        .collect();
    all.sort();
    assert_eq!(
        all,
        vec![
            "before@cust.test",
            "down-1@cust.test",
            "down-2@cust.test",
            "down-3@cust.test"
        ]
    );
    assert_eq!(desk.log_lines(&["delivered", "action=new"]).len(), 4);
    poll(15, "four acks in mari's Maildir", || {
        (pf.mails(MARI).len() == 4).then_some(())
    });
    assert!(pf.mails(MARI).iter().all(|m| kind("ack")(m)));
}

#[test]
fn postdesk_451_is_deferred_never_bounced_then_delivered_once() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the fault file works in debug builds only");
        return;
    }
    let (pf, desk) = start_tcp();
    let fault = desk.data_dir().join(postdesk::store::FAULT_FILE);
    std::fs::write(&fault, b"").unwrap();

    let qid = mari_writes(&pf, "fault@cust.test", "Store is sick");
    let line = poll(15, "Postfix's status=deferred", || {
        pf.log_of(&qid)
            .into_iter()
            .find(|l| l.contains("status=deferred"))
    });
    assert!(
        line.contains("to=<support@example.com>")
            && line.contains("dsn=4.3.0")
            && line.contains("said: 451 4.3.0 <support@example.com>")
            && line.contains("(in reply to end of DATA command)"),
        "{line}"
    );
    let entry = poll(15, "the mail in the deferred queue", || {
        pf.queued(&qid).filter(|e| e["queue_name"] == "deferred")
    });
    assert!(
        entry["recipients"][0]["delay_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("451 4.3.0"),
        "{entry}"
    );
    // postdesk says why in its own log.
    assert!(
        !desk
            .log_lines(&["WARN", "delivery failed, answering 451"])
            .is_empty(),
        "{}",
        desk.log()
    );
    assert!(desk.tickets().is_empty());

    std::fs::remove_file(&fault).unwrap();
    pf.flush();
    poll(15, "the mail delivered", || {
        sent_to_support(&pf, &qid).into_iter().next()
    });
    let ack = pf.wait_mail(MARI, "the ack", kind("ack"));
    poll(15, "Postfix's queue to empty", || {
        pf.queue().is_empty().then_some(())
    });

    assert_eq!(sent_to_support(&pf, &qid).len(), 1);
    let tickets = desk.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(
        tickets[0]["message_ids"],
        serde_json::json!(["fault@cust.test"])
    );
    assert_eq!(
        desk.log_lines(&["delivered", &format!("queue_id={qid}")])
            .len(),
        1
    );
    // Never bounced: no status=bounced, no non-delivery notice, and mari's
    // Maildir holds the ack only.
    let log = pf.log();
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!log.contains("sender non-delivery notification"), "{log}");
    let mails = pf.mails(MARI);
    assert_eq!(mails.len(), 1, "only the ack");
    assert_eq!(mails[0].message_id(), ack.message_id());
}

fn port(desk: &Desk) -> u16 {
    match desk.lmtp {
        Lmtp::Inet(p) => p,
        Lmtp::Unix(_) => panic!("not on TCP"),
    }
}

#[test]
fn signed_action_link_sent_through_postfix_takes_the_ticket() {
    let (pf, desk) = start_tcp();
    mari_writes(&pf, "link1@cust.test", "Printer");
    pf.wait_mail(MARI, "the ack", kind("ack"));
    // Alice asks for her report through Postfix (support+report@: the
    // plus-form is routed to postdesk and keeps its tag in RCPT TO).
    let ask = b"From: alice@example.com\r\nTo: support+report@example.com\r\nSubject: report\r\nMessage-ID: <link2@example.com>\r\n\r\nplease\r\n";
    pf.submit("alice@example.com", &["support+report@example.com"], ask);
    let report = pf.wait_mail("alice@example.com", "the report", kind("report"));
    let text = report.text();
    let start = text
        .find("support+take-1-")
        .unwrap_or_else(|| panic!("no take link in the report:\n{text}"));
    let rest = &text[start..];
    let addr = &rest[..rest.find('?').unwrap_or(rest.len())];
    // One click: a mail to the signed address, through Postfix.
    let click = format!(
        "From: alice@example.com\r\nTo: {addr}\r\nSubject: take SUP-1\r\nMessage-ID: <link3@example.com>\r\n\r\n\r\n"
    );
    pf.submit("alice@example.com", &[addr], click.as_bytes());
    poll(15, "SUP-1 taken by alice", || {
        (desk.show("SUP-1")["assignee"] == "alice@example.com").then_some(())
    });
    assert_eq!(desk.show("SUP-1")["status"], "active");
    pf.wait_mail("alice@example.com", "alice's notice", kind("notice"));
    pf.wait_mail(MARI, "Mari told it was taken", kind("status"));
}
