//! The core issue end to end: the real `postdesk serve`, real LMTP clients
//! (Python's smtplib and ours), a real SMTP sink recording what it sends.

mod common;

use common::sink::Sink;
use common::*;
use std::time::Duration;

const SUPPORT: &str = "support@example.com";

fn start() -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    (sink, d)
}

fn with_kind(sink: &Sink, kind: &str) -> Vec<common::sink::Received> {
    sink.messages()
        .into_iter()
        .filter(|m| m.header("X-Postdesk-Kind").as_deref() == Some(kind))
        .collect()
}

#[test]
fn new_mail_becomes_ticket_with_ack_and_team_copies_via_smtplib() {
    let (sink, d) = start();
    let msg = mail(
        "first@cust.test",
        "Mari Maasikas <mari@cust.test>",
        "Printer does not print",
        "",
        "Hello,\r\nthe printer on floor 2 prints nothing.\r\n",
    );
    let replies = python_lmtp(d.port, "mari@cust.test", &[SUPPORT], &msg);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    assert!(
        replies[0].contains("SUP-1"),
        "reply names the ticket: {replies:?}"
    );

    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1);
    let t = &tickets[0];
    assert_eq!(t["token"], "SUP-1");
    assert_eq!(t["status"], "unassigned");
    assert_eq!(t["contact"], "mari@cust.test");
    assert_eq!(t["subject"], "Printer does not print");
    assert_eq!(t["message_ids"][0], "first@cust.test");

    let got = sink.wait_for(2, Duration::from_secs(15));
    let ack = got
        .iter()
        .find(|m| m.header("X-Postdesk-Kind").as_deref() == Some("ack"))
        .expect("an ack");
    assert_eq!(ack.rcpt_to, vec!["mari@cust.test"]);
    assert_eq!(ack.mail_from, SUPPORT);
    let subject = ack.header("Subject").unwrap_or_default();
    assert!(
        subject.contains("[SUP-1]") && subject.starts_with("Re: "),
        "{subject}"
    );
    assert_eq!(
        ack.header("Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    assert_eq!(
        ack.header("In-Reply-To").as_deref(),
        Some("<first@cust.test>")
    );
    assert_eq!(ack.header("X-Postdesk-Ticket").as_deref(), Some("SUP-1"));
    assert!(ack.header("X-Postdesk-Loop").is_some());
    let ack_id = ack.header("Message-ID").unwrap_or_default();
    assert!(
        ack_id.contains("SUP-1") && ack_id.ends_with("@example.com>"),
        "{ack_id}"
    );

    let copy = got
        .iter()
        .find(|m| m.header("X-Postdesk-Kind").as_deref() == Some("copy"))
        .expect("a team copy");
    let mut rcpts = copy.rcpt_to.clone();
    rcpts.sort();
    assert_eq!(rcpts, vec!["alice@example.com", "bob@example.com"]);
    assert!(copy
        .header("Subject")
        .unwrap_or_default()
        .contains("[SUP-1]"));
    let from = copy.header("From").unwrap_or_default();
    assert!(
        from.contains("via Support") && from.contains("<support@example.com>"),
        "{from}"
    );
    assert!(
        !from.contains("mari@cust.test"),
        "DMARC: customer not in From: {from}"
    );
    let reply_to = copy.header("Reply-To").unwrap_or_default();
    assert!(
        reply_to.contains("mari@cust.test") && reply_to.contains(SUPPORT),
        "{reply_to}"
    );
    assert!(
        copy.body_text().contains("prints nothing"),
        "the customer's text travels"
    );
    assert!(d.log().contains("delivered"), "delivered log line");
    eventually(10, "the sent kind=ack log line", || {
        d.log().contains("sent kind=ack")
    });
}

#[test]
fn replies_join_by_each_threading_rule() {
    let (sink, d) = start();
    d.deliver_ok(
        "anna@cust.test",
        &mail(
            "root@cust.test",
            "anna@cust.test",
            "VPN down",
            "Thread-Index: AQHXyzCsAAAAAAAAAAAAAAAAAAAAAA==\r\n",
            "vpn",
        ),
    );
    // In-Reply-To.
    d.deliver_ok(
        "anna@cust.test",
        &mail(
            "irt@cust.test",
            "anna@cust.test",
            "Re: VPN down",
            "In-Reply-To: <root@cust.test>\r\n",
            "more",
        ),
    );
    // References only.
    d.deliver_ok(
        "anna@cust.test",
        &mail(
            "refs@cust.test",
            "anna@cust.test",
            "Re: VPN",
            "References: <x@elsewhere> <irt@cust.test>\r\n",
            "more",
        ),
    );
    // Thread-Index only: same 22-byte conversation, 5 bytes more.
    d.deliver_ok(
        "anna@cust.test",
        &mail(
            "ti@cust.test",
            "anna@cust.test",
            "RE: VPN down",
            "Thread-Index: AQHXyzCsAAAAAAAAAAAAAAAAAAAAAAECAwQF\r\n",
            "outlook reply",
        ),
    );
    // Token only, from a participant.
    d.deliver_ok(
        "anna@cust.test",
        &mail(
            "tok@cust.test",
            "anna@cust.test",
            "VPN again [SUP-1]",
            "",
            "token",
        ),
    );
    for id in [
        "root@cust.test",
        "irt@cust.test",
        "refs@cust.test",
        "ti@cust.test",
        "tok@cust.test",
    ] {
        assert_eq!(
            d.ticket_of(id).as_deref(),
            Some("SUP-1"),
            "{id}\n{}",
            d.log()
        );
    }
    let show = d.show("SUP-1");
    let rules: Vec<&str> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["rule"].as_str())
        .collect();
    assert_eq!(
        rules,
        vec!["none", "in-reply-to", "references", "thread-index", "token"]
    );
    assert_eq!(show["replies"], 4);
    // One ack only: replies are not acknowledged.
    sink.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(with_kind(&sink, "ack").len(), 1);
    for line in [
        "rule=in-reply-to",
        "rule=references",
        "rule=thread-index",
        "rule=token",
    ] {
        assert!(d.log().contains(line), "log names {line}");
    }
}

#[test]
fn strangers_token_opens_a_new_ticket_and_learns_nothing() {
    let (sink, d) = start();
    d.deliver_ok(
        "anna@cust.test",
        &mail(
            "s1@cust.test",
            "anna@cust.test",
            "Secret contract",
            "",
            "private",
        ),
    );
    d.deliver_ok(
        "eve@evil.test",
        &mail(
            "s2@evil.test",
            "eve@evil.test",
            "Re: Secret contract [SUP-1]",
            "",
            "tell me",
        ),
    );
    assert_eq!(d.ticket_of("s2@evil.test").as_deref(), Some("SUP-2"));
    let to_eve: Vec<_> = sink
        .wait_for(4, Duration::from_secs(10))
        .into_iter()
        .filter(|m| m.rcpt_to.iter().any(|r| r == "eve@evil.test"))
        .collect();
    assert_eq!(to_eve.len(), 1, "only eve's own ack");
    let text = String::from_utf8_lossy(&to_eve[0].data).to_string();
    assert!(
        text.contains("SUP-2") && !text.contains("private"),
        "{text}"
    );
    assert!(d.log().contains("token ignored"), "{}", d.log());
}

#[test]
fn auto_replies_and_bounces_open_no_ticket_and_get_no_ack() {
    let (sink, d) = start();
    let vacation =
        std::fs::read(fixture("mail/autoreplies/sisimai-rfc3834-01.eml")).expect("fixture");
    d.deliver_ok("someone@cust.test", &vacation);
    let bounce =
        std::fs::read(fixture("mail/bounces/bounceparser-postfix-orig.eml")).expect("fixture");
    let r = d.deliver("", &[SUPPORT], &bounce);
    assert!(r[0].starts_with("250"), "{r:?}");
    assert!(d.tickets().is_empty(), "{:?}", d.tickets());
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        sink.messages().is_empty(),
        "nothing sent: {:?}",
        sink.messages().len()
    );
    assert!(d.log().contains("action=apart"));
}

#[test]
fn bounce_of_our_ack_is_attached_to_its_ticket() {
    let (sink, d) = start();
    d.deliver_ok(
        "gone@cust.test",
        &mail("b1@cust.test", "gone@cust.test", "Hello", "", "hi"),
    );
    let ack = sink
        .wait_for(2, Duration::from_secs(10))
        .into_iter()
        .find(|m| m.header("X-Postdesk-Kind").as_deref() == Some("ack"))
        .expect("ack");
    let ack_id = ack.header("Message-ID").unwrap();
    let dsn = format!(
        "From: MAILER-DAEMON@mx.cust.test (Mail Delivery System)\r\nTo: {SUPPORT}\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.cust.test>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n<gone@cust.test>: user unknown\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.cust.test\r\n\r\nFinal-Recipient: rfc822; gone@cust.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: Support <{SUPPORT}>\r\nTo: gone@cust.test\r\nSubject: Re: Hello [SUP-1]\r\nMessage-ID: {ack_id}\r\n\r\n--B--\r\n"
    );
    let r = d.deliver("", &[SUPPORT], dsn.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}");
    let show = d.show("SUP-1");
    let kinds: Vec<&str> = show["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"bounce"), "{kinds:?}");
    assert_eq!(show["status"], "unassigned", "a bounce changes no state");
    assert_eq!(show["replies"], 0);
    assert_eq!(d.tickets().len(), 1);
}

#[test]
fn duplicate_delivery_changes_nothing() {
    let (sink, d) = start();
    let m = mail("dup@cust.test", "dup@cust.test", "Twice", "", "same bytes");
    d.deliver_ok("dup@cust.test", &m);
    sink.wait_for(2, Duration::from_secs(10));
    let before = d.show("SUP-1");
    d.deliver_ok("dup@cust.test", &m);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(d.tickets().len(), 1);
    assert_eq!(d.show("SUP-1")["message_ids"], before["message_ids"]);
    assert_eq!(sink.messages().len(), 2, "no second ack or copy");
    assert!(d.log().contains("action=duplicate"));
}

#[test]
fn malformed_mail_is_still_stored_and_ticketed() {
    let (_sink, d) = start();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "broken MIME",
            b"From: a@cust.test\r\nSubject: broken\r\nMessage-ID: <m1@cust.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"nope\"\r\n\r\n--other\r\nContent-Type: text/plain\r\n\r\nbody without its boundary\r\n".to_vec(),
        ),
        (
            "8-bit garbage",
            b"From: b@cust.test\r\nSubject: \xff\xfe\xc3 garbage \x80\r\nMessage-ID: <m2@cust.test>\r\n\r\n\xff\xfe\xfd\xfc bytes \xc3\x28\r\n".to_vec(),
        ),
        (
            "NUL bytes",
            b"From: c@cust.test\r\nSubject: nul\x00here\r\nMessage-ID: <m3@cust.test>\r\n\r\nbody\x00with\x00nuls\r\n".to_vec(),
        ),
        (
            "bare LF",
            b"From: d@cust.test\nSubject: bare lf\nMessage-ID: <m4@cust.test>\n\nline one\nline two\n".to_vec(),
        ),
        (
            "no Message-ID",
            b"From: e@cust.test\r\nSubject: no id\r\n\r\nwho am i\r\n".to_vec(),
        ),
    ];
    for (what, m) in &cases {
        let mut c = d.lmtp();
        let r = c.send("x@cust.test", &[SUPPORT], m);
        c.quit();
        assert!(r[0].starts_with("250"), "{what}: {r:?}\n{}", d.log());
    }
    let tickets = d.tickets();
    assert_eq!(tickets.len(), cases.len(), "{tickets:?}");
    let derived = tickets
        .iter()
        .find(|t| t["contact"] == "e@cust.test")
        .expect("no-id ticket");
    let id = derived["message_ids"][0].as_str().unwrap();
    assert!(id.starts_with("derived."), "{id}");
}

#[test]
fn two_recipients_get_two_replies_and_one_ticket() {
    let (_sink, d) = start();
    let m = mail("two@cust.test", "two@cust.test", "Two rcpts", "", "x");
    let r = d.deliver(
        "two@cust.test",
        &[SUPPORT, "support+billing@example.com"],
        &m,
    );
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r.iter().all(|x| x.starts_with("250")), "{r:?}");
    let m2 = mail(
        "two-py@cust.test",
        "two@cust.test",
        "Two rcpts again",
        "",
        "y",
    );
    let r = python_lmtp(d.port, "two@cust.test", &[SUPPORT, SUPPORT], &m2);
    assert_eq!(
        r.len(),
        2,
        "a recipient given twice is answered twice: {r:?}"
    );
    assert!(r.iter().all(|x| x.starts_with("250")), "{r:?}");
    assert_eq!(d.tickets().len(), 2, "ingested once per transaction");
    let r = d.deliver("two@cust.test", &["nobody@example.com"], &m);
    assert!(r[0].starts_with("550 5.1.1"), "{r:?}");
}

#[test]
fn state_survives_a_restart_and_numbering_continues() {
    let (_sink, mut d) = start();
    d.deliver_ok(
        "p@cust.test",
        &mail("p1@cust.test", "p@cust.test", "Persist", "", "x"),
    );
    d.restart();
    let t = d.tickets();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0]["message_ids"][0], "p1@cust.test");
    d.deliver_ok(
        "p@cust.test",
        &mail(
            "p2@cust.test",
            "p@cust.test",
            "Re: Persist",
            "In-Reply-To: <p1@cust.test>\r\n",
            "y",
        ),
    );
    d.deliver_ok(
        "q@cust.test",
        &mail("q1@cust.test", "q@cust.test", "New one", "", "z"),
    );
    assert_eq!(d.ticket_of("p2@cust.test").as_deref(), Some("SUP-1"));
    assert_eq!(d.ticket_of("q1@cust.test").as_deref(), Some("SUP-2"));
}

#[test]
fn cli_works_while_the_daemon_runs_and_after() {
    let (_sink, mut d) = start();
    d.deliver_ok(
        "c@cust.test",
        &mail("c1@cust.test", "c@cust.test", "CLI", "", "x"),
    );
    let list = d.cli_ok(&["ticket", "list"]);
    assert!(
        list.contains("SUP-1") && list.contains("unassigned"),
        "{list}"
    );
    let show = d.cli_ok(&["ticket", "show", "SUP-1"]);
    assert!(show.contains("c@cust.test"), "{show}");
    // explain against the live store: a reply would join SUP-1.
    let reply = mail(
        "c2@cust.test",
        "c@cust.test",
        "Re: CLI",
        "In-Reply-To: <c1@cust.test>\r\n",
        "y",
    );
    let mut child = std::process::Command::new(BIN)
        .args(["--config", d.config.to_str().unwrap(), "explain", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&reply).unwrap();
    let out = child.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("explain json");
    assert_eq!(v["rule"], "in-reply-to");
    assert_eq!(v["ticket"], "SUP-1");
    assert_eq!(v["action"], "append");
    assert_eq!(d.tickets()[0]["replies"], 0, "explain wrote nothing");
    // With the daemon stopped, the CLI opens the store itself.
    d.stop();
    let list = d.cli_ok(&["ticket", "list", "--json"]);
    assert!(list.contains("SUP-1"), "{list}");
}

#[test]
fn check_config_names_the_bad_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(
        &p,
        "support:\n  address: support@example.com\npolicy:\n  reopen_witin: 14d\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:4:"), "{err}");
    assert!(err.contains("reopen_witin"), "{err}");
    std::fs::write(
        &p,
        "support:\n  address: support@example.com\npolicy:\n  reopen_within: 2x\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.yaml:4:") && err.contains("not a duration"),
        "{err}"
    );
    // A good file: its own free port, data and outbound folders, so the
    // checks check-config makes (listener free, folders writable) hold.
    let good = format!(
        "listen:\n  lmtp: [\"127.0.0.1:{}\"]\ndata_dir: {}\nsupport:\n  address: support@example.com\noutbound:\n  relay: file:{}\n",
        free_port(),
        dir.path().join("data").display(),
        dir.path().join("sent").display()
    );
    std::fs::write(&p, with_store(good, &dir.path().join("data"))).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--config", p.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn store_fault_answers_451_and_delivery_resumes_without_restart() {
    let (_sink, d) = start();
    let marker = d.data_dir().join(postdesk::store::FAULT_FILE);
    std::fs::write(&marker, b"").unwrap();
    let m = mail("fault@cust.test", "f@cust.test", "During a fault", "", "x");
    let r = d.deliver("f@cust.test", &[SUPPORT, SUPPORT], &m);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r.iter().all(|x| x.starts_with("451 4.3.0")), "{r:?}");
    assert!(d.tickets().is_empty(), "nothing half-written");
    assert!(d.log().contains("delivery failed"), "{}", d.log());
    std::fs::remove_file(&marker).unwrap();
    d.deliver_ok("f@cust.test", &m);
    assert_eq!(d.ticket_of("fault@cust.test").as_deref(), Some("SUP-1"));
}

#[test]
fn json_logs_carry_the_delivered_fields() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "log:\n  format: json\n");
    d.deliver_ok(
        "j@cust.test",
        &mail("json1@cust.test", "j@cust.test", "JSON", "", "x"),
    );
    eventually(10, "the sent line", || d.log().contains("\"sent\""));
    let log = d.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let delivered = lines
        .iter()
        .find(|v| v["message"] == "delivered")
        .unwrap_or_else(|| panic!("no delivered line in {log}"));
    assert_eq!(delivered["ticket"], "SUP-1");
    assert_eq!(delivered["action"], "new");
    assert_eq!(delivered["rule"], "none");
    assert_eq!(delivered["message_id"], "<json1@cust.test>");
}
