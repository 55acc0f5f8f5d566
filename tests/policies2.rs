//! Desk policies, part 2 (issue #8, docs/policies.md): escalation and
//! de-escalation, watchers (also in the quiet `team.distribute: assignee`
//! mode), `#cc`, similar tickets, canned answers, macros, `#merge` and
//! `ticket merge`, and the per-category report — all through LMTP and the
//! real daemon.

mod common;

use common::sink::{Received, Sink};
use common::*;
use std::path::Path;

/// alice and bob work the first line; carol and dave are the second line
/// (group l2, told through l2-list@). billing distributes, so an
/// escalation is given to a member of l2; tech does not, so it waits in l2.
fn desk_yaml(port: u16, data: &Path, sink: u16, distribute: &str) -> String {
    format!(
        r##"listen:
  lmtp: ["127.0.0.1:{port}"]
data_dir: {data}
support:
  address: support@example.com
team:
  domains: [example.com]
  distribute: {distribute}
  agents:
    - email: alice@example.com
      name: Alice
    - email: bob@example.com
    - email: carol@example.com
    - email: dave@example.com
  leads: [lead@example.com]
outbound:
  relay: smtp://127.0.0.1:{sink}
  retry_min: 200ms
commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
customers:
  - {{id: ACME, domains: [acme.test]}}
groups:
  - {{name: l2, members: [carol@example.com, dave@example.com], notify: [l2-list@example.com]}}
categories:
  - id: billing
    agents: [alice@example.com, bob@example.com]
    second_line: l2
    distribution: {{mode: round_robin}}
  - id: tech
    second_line: l2
macros:
  close-billing: ["#answer password-reset", "#category billing", "#done"]
  half-bad: ["#category billing", "#deescalate"]
"##,
        data = data.display(),
    )
}

fn start_with(distribute: &str) -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let port = sink.port();
    let dist = distribute.to_string();
    let d = Daemon::start_custom(move |lmtp, data| desk_yaml(lmtp, data, port, &dist));
    (sink, d)
}

fn start() -> (Sink, Daemon) {
    start_with("everyone")
}

/// Every recipient of mail of kind `k` about `token` so far.
fn rcpts(sink: &Sink, token: &str, k: &str) -> Vec<String> {
    let mut v: Vec<String> = sent_for(sink, token)
        .into_iter()
        .filter(|(kk, _)| kk == k)
        .flat_map(|(_, r)| r)
        .collect();
    v.sort();
    v
}

fn customer(d: &Daemon, id: &str, from: &str, subject: &str, headers: &str, body: &str) {
    let r = d.deliver(
        from,
        &["support@example.com"],
        &mail(id, from, subject, headers, body),
    );
    assert!(
        r.len() == 1 && r[0].starts_with("250"),
        "{r:?}\n{}",
        d.log()
    );
}

/// The n-th refusal's body (waiting for it).
fn refusal(sink: &Sink, n: usize) -> String {
    eventually(20, &format!("refusal #{n}"), || {
        of_kind(sink, "refusal").len() > n
    });
    of_kind(sink, "refusal").remove(n).body_text()
}

#[test]
fn escalation_goes_to_the_second_line_and_deescalation_returns_it() {
    let (sink, d) = start();
    customer(
        &d,
        "e1@gmail.com",
        "mari@gmail.com",
        "Invoice",
        "",
        "Wrong sum.",
    );
    staff(
        &d,
        "alice@example.com",
        "a1@example.com",
        "Re: Invoice [SUP-1]",
        "#take\n#category billing",
    );
    wait_sent(&sink, "SUP-1", "notice", "alice@example.com");
    // billing's second line is l2 and billing distributes: carol gets it
    // (the full take process), l2's notify list is told, alice watches.
    staff(
        &d,
        "alice@example.com",
        "a2@example.com",
        "Re: Invoice [SUP-1]",
        "#escalate",
    );
    let t = d.show("SUP-1");
    assert_eq!(
        (
            field(&t, "assignee"),
            field(&t, "group"),
            field(&t, "status")
        ),
        (Some("carol@example.com"), Some("l2"), Some("active")),
        "{t}"
    );
    assert_eq!(field(&t["escalated"], "group"), Some("l2"), "{t}");
    assert_eq!(
        field(&t["escalated"], "first_line"),
        Some("alice@example.com")
    );
    assert_eq!(strs(&t["watchers"]), vec!["alice@example.com"]);
    wait_sent(&sink, "SUP-1", "escalated", "l2-list@example.com");
    wait_sent(&sink, "SUP-1", "notice", "carol@example.com");
    let esc = of_kind(&sink, "escalated").remove(0);
    let body = esc.body_text();
    assert!(
        body.contains(
            "SUP-1 was escalated to l2 by alice@example.com and given to carol@example.com"
        ),
        "{body}"
    );
    assert!(
        body.contains("First line: alice@example.com (still watching)"),
        "{body}"
    );
    // Shown by the CLI in words too.
    let shown = d.cli_ok(&["ticket", "show", "SUP-1"]);
    assert!(
        shown.contains("escalated     to l2 (first line: alice@example.com)"),
        "{shown}"
    );

    // carol sends it back: alice has it again with a notice, and stops
    // being a watcher of her own ticket.
    staff(
        &d,
        "carol@example.com",
        "c1@example.com",
        "Re: Invoice [SUP-1]",
        "#deescalate",
    );
    let t = d.show("SUP-1");
    assert_eq!(field(&t, "assignee"), Some("alice@example.com"), "{t}");
    assert!(t["escalated"].is_null(), "{t}");
    assert!(t["group"].is_null(), "{t}");
    assert!(strs(&t["watchers"]).is_empty(), "{t}");
    eventually(20, "alice's second notice", || {
        rcpts(&sink, "SUP-1", "notice")
            .iter()
            .filter(|r| *r == "alice@example.com")
            .count()
            == 2
    });
    // Not escalated any more: a second #deescalate is refused.
    staff(
        &d,
        "alice@example.com",
        "a3@example.com",
        "Re: Invoice [SUP-1]",
        "#deescalate",
    );
    let body = refusal(&sink, 0);
    assert!(body.contains("the ticket is not escalated"), "{body}");
}

#[test]
fn escalation_without_distribution_waits_in_the_group_and_unknown_groups_are_refused() {
    let (sink, d) = start();
    customer(&d, "t1@gmail.com", "mari@gmail.com", "VPN", "", "Down.");
    staff(
        &d,
        "bob@example.com",
        "b1@example.com",
        "Re: VPN [SUP-1]",
        "#take\n#category tech",
    );
    staff(
        &d,
        "bob@example.com",
        "b2@example.com",
        "Re: VPN [SUP-1]",
        "#escalate nope",
    );
    let body = refusal(&sink, 0);
    assert!(body.contains("\"nope\" is not a group (l2)"), "{body}");
    assert_eq!(field(&d.show("SUP-1"), "assignee"), Some("bob@example.com"));
    staff(
        &d,
        "bob@example.com",
        "b3@example.com",
        "Re: VPN [SUP-1]",
        "#escalate",
    );
    let t = d.show("SUP-1");
    assert_eq!(
        (
            field(&t, "status"),
            field(&t, "assignee"),
            field(&t, "group")
        ),
        (Some("unassigned"), None, Some("l2")),
        "{t}"
    );
    wait_sent(&sink, "SUP-1", "escalated", "l2-list@example.com");
    let body = of_kind(&sink, "escalated").remove(0).body_text();
    assert!(
        body.contains("nobody in the group has taken it yet"),
        "{body}"
    );
    // The customer's next mail goes to the group's list and to bob, who
    // watches.
    customer(
        &d,
        "t2@gmail.com",
        "mari@gmail.com",
        "Re: VPN [SUP-1]",
        "In-Reply-To: <t1@gmail.com>\r\n",
        "Still down.",
    );
    eventually(20, "copies of t2", || {
        rcpts(&sink, "SUP-1", "copy").contains(&"l2-list@example.com".to_string())
    });
    let copies = rcpts(&sink, "SUP-1", "copy");
    assert!(
        copies.contains(&"bob@example.com".to_string()),
        "{copies:?}"
    );
    // Back to bob.
    staff(
        &d,
        "dave@example.com",
        "d1@example.com",
        "Re: VPN [SUP-1]",
        "#deescalate",
    );
    let t = d.show("SUP-1");
    assert_eq!(
        (field(&t, "assignee"), field(&t, "status")),
        (Some("bob@example.com"), Some("active")),
        "{t}"
    );
}

#[test]
fn watchers_get_copies_and_status_notices_in_the_quiet_assignee_mode() {
    let (sink, d) = start_with("assignee");
    customer(
        &d,
        "w1@gmail.com",
        "mari@gmail.com",
        "Printer",
        "",
        "Jammed.",
    );
    staff(
        &d,
        "alice@example.com",
        "a1@example.com",
        "Re: Printer [SUP-1]",
        "#take\n#cc carol",
    );
    staff(
        &d,
        "bob@example.com",
        "b1@example.com",
        "Re: Printer [SUP-1]",
        "#watch",
    );
    let t = d.show("SUP-1");
    assert_eq!(
        strs(&t["watchers"]),
        vec!["carol@example.com", "bob@example.com"]
    );
    // The customer writes again: assignee + watchers only, never dave.
    customer(
        &d,
        "w2@gmail.com",
        "mari@gmail.com",
        "Re: Printer [SUP-1]",
        "In-Reply-To: <w1@gmail.com>\r\n",
        "Still jammed.",
    );
    let of_w2 = |m: &Received| {
        m.header("References")
            .is_some_and(|r| r.contains("w2@gmail.com"))
    };
    eventually(20, "the copy of w2", || {
        of_kind(&sink, "copy").iter().any(of_w2)
    });
    let copy = of_kind(&sink, "copy")
        .into_iter()
        .find(|m| of_w2(m))
        .map(|m| {
            let mut r = m.rcpt_to.clone();
            r.sort();
            r
        });
    assert_eq!(
        copy,
        Some(vec![
            "alice@example.com".to_string(),
            "bob@example.com".to_string(),
            "carol@example.com".to_string()
        ])
    );
    // Done by alice: the watchers hear it, alice does not.
    staff(
        &d,
        "alice@example.com",
        "a2@example.com",
        "Re: Printer [SUP-1]",
        "#done",
    );
    eventually(20, "the watchers' done notice", || {
        of_kind(&sink, "watch")
            .iter()
            .any(|m| m.body_text().contains(": done (by alice@example.com)"))
    });
    // The first one told carol that alice took it (#take, then #cc).
    let first = of_kind(&sink, "watch").remove(0);
    assert!(
        first
            .body_text()
            .contains("You watch SUP-1: taken by alice@example.com"),
        "{}",
        first.body_text()
    );
    let w = of_kind(&sink, "watch")
        .into_iter()
        .find(|m| m.body_text().contains(": done (by"))
        .expect("the done notice");
    let mut to = w.rcpt_to.clone();
    to.sort();
    assert_eq!(to, vec!["bob@example.com", "carol@example.com"]);
    assert!(
        w.header("Subject")
            .unwrap_or_default()
            .contains("[SUP-1] done"),
        "{:?}",
        w.header("Subject")
    );
    // bob stops watching; the customer reopens it: carol hears, bob not.
    staff(
        &d,
        "bob@example.com",
        "b2@example.com",
        "Re: Printer [SUP-1]",
        "#unwatch",
    );
    assert_eq!(
        strs(&d.show("SUP-1")["watchers"]),
        vec!["carol@example.com"]
    );
    customer(
        &d,
        "w3@gmail.com",
        "mari@gmail.com",
        "Re: Printer [SUP-1]",
        "In-Reply-To: <w1@gmail.com>\r\n",
        "It jammed again.",
    );
    eventually(20, "the reopened notice to the watchers", || {
        of_kind(&sink, "watch")
            .iter()
            .any(|m| m.body_text().contains("reopened"))
    });
    let w = of_kind(&sink, "watch")
        .into_iter()
        .find(|m| m.body_text().contains("reopened"))
        .map(|m| m.rcpt_to);
    assert_eq!(w, Some(vec!["carol@example.com".to_string()]));
    // #cc of someone off the roster is refused.
    staff(
        &d,
        "alice@example.com",
        "a3@example.com",
        "Re: Printer [SUP-1]",
        "#cc zed",
    );
    let body = refusal(&sink, 0);
    assert!(body.contains("zed is not an agent on the roster"), "{body}");
}

#[test]
fn similar_tickets_are_listed_in_the_notice_and_ticket_show() {
    let (sink, d) = start();
    customer(
        &d,
        "s1@acme.test",
        "mari@acme.test",
        "Printer",
        "",
        "Jammed.",
    );
    customer(
        &d,
        "s2@acme.test",
        "mari@acme.test",
        "Invoice",
        "",
        "Wrong.",
    );
    customer(&d, "s3@gmail.com", "other@gmail.com", "Unrelated", "", "x");
    // Same customer (ACME), another contact.
    customer(&d, "s4@acme.test", "jaan@acme.test", "VPN", "", "Down.");
    staff(
        &d,
        "bob@example.com",
        "b1@example.com",
        "Re: VPN [SUP-4]",
        "#take",
    );
    wait_sent(&sink, "SUP-4", "notice", "bob@example.com");
    let body = of_kind(&sink, "notice")
        .into_iter()
        .find(|m| m.header("X-Postdesk-Ticket").as_deref() == Some("SUP-4"))
        .map(|m| m.body_text())
        .unwrap_or_default();
    assert!(
        body.contains("The contact's and customer's other tickets:"),
        "{body}"
    );
    let a = body.find("SUP-2  UNASSIGNED  Invoice (unassigned, ");
    let b = body.find("SUP-1  UNASSIGNED  Printer (unassigned, ");
    assert!(a.is_some() && b.is_some() && a < b, "newest first: {body}");
    assert!(!body.contains("SUP-3"), "{body}");
    let t = d.show("SUP-4");
    let similar: Vec<&str> = t["similar"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["token"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(similar, vec!["SUP-2", "SUP-1"], "{t}");
    // The contact's own: SUP-1 lists SUP-2 (contact and customer), and
    // SUP-4 (customer).
    let t = d.show("SUP-1");
    let similar: Vec<&str> = t["similar"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["token"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(similar, vec!["SUP-4", "SUP-2"], "{t}");
    let shown = d.cli_ok(&["ticket", "show", "SUP-1"]);
    assert!(
        shown.contains("other tickets of the contact and customer:")
            && shown.contains("SUP-4     active     VPN (bob@example.com)"),
        "{shown}"
    );
}

#[test]
fn a_canned_answer_goes_to_the_customer_in_the_thread_and_unknown_ones_are_refused() {
    let (sink, d) = start();
    customer(
        &d,
        "q1@gmail.com",
        "mari@gmail.com",
        "Password",
        "",
        "Forgot it.",
    );
    customer(
        &d,
        "q2@gmail.com",
        "mari@gmail.com",
        "Re: Password [SUP-1]",
        "In-Reply-To: <q1@gmail.com>\r\n",
        "Still locked out.",
    );
    staff(
        &d,
        "alice@example.com",
        "a1@example.com",
        "Re: Password [SUP-1]",
        "#answer nope",
    );
    let body = refusal(&sink, 0);
    assert!(
        body.contains("\"nope\" is not a canned answer (need-more-info, password-reset)"),
        "{body}"
    );
    staff(
        &d,
        "alice@example.com",
        "a2@example.com",
        "Re: Password [SUP-1]",
        "#answer password-reset",
    );
    wait_sent(&sink, "SUP-1", "answer", "mari@gmail.com");
    let a = of_kind(&sink, "answer").remove(0);
    assert_eq!(a.rcpt_to, vec!["mari@gmail.com"]);
    assert_eq!(
        a.header("In-Reply-To").map(|v| angle(&v)),
        Some("q2@gmail.com".into())
    );
    let refs = a.header("References").unwrap_or_default();
    assert!(
        refs.contains("q1@gmail.com") && refs.contains("q2@gmail.com"),
        "{refs}"
    );
    assert_eq!(a.header("Subject").as_deref(), Some("Re: Password [SUP-1]"));
    assert!(
        a.header("From")
            .unwrap_or_default()
            .contains("support@example.com"),
        "{:?}",
        a.header("From")
    );
    assert_eq!(a.header("Auto-Submitted"), None, "a person's answer");
    let body = a.body_text();
    assert!(
        body.contains("Forgot password") && body.contains("Alice"),
        "{body}"
    );
    // It counts as alice's reply: the ticket is hers.
    let t = d.show("SUP-1");
    assert_eq!(
        (
            field(&t, "assignee"),
            field(&t, "status"),
            t["replies"].as_u64()
        ),
        (Some("alice@example.com"), Some("active"), Some(2)),
        "{t}"
    );
    assert_eq!(field(&t, "last_direction"), Some("out"), "{t}");
}

#[test]
fn a_macro_runs_all_its_commands_or_none() {
    let (sink, d) = start();
    customer(&d, "m1@gmail.com", "mari@gmail.com", "Login", "", "Locked.");
    // A macro with a part that is refused changes nothing.
    staff(
        &d,
        "alice@example.com",
        "a1@example.com",
        "Re: Login [SUP-1]",
        "#macro half-bad",
    );
    let body = refusal(&sink, 0);
    assert!(
        body.contains("#deescalate: the ticket is not escalated; nothing was done"),
        "{body}"
    );
    assert!(d.show("SUP-1")["category"].is_null());
    staff(
        &d,
        "alice@example.com",
        "a2@example.com",
        "Re: Login [SUP-1]",
        "#macro nope",
    );
    let body = refusal(&sink, 1);
    assert!(
        body.contains("\"nope\" is not a macro (close-billing, half-bad)"),
        "{body}"
    );
    staff(
        &d,
        "alice@example.com",
        "a3@example.com",
        "Re: Login [SUP-1]",
        "#macro close-billing",
    );
    let t = d.show("SUP-1");
    assert_eq!(
        (
            field(&t, "category"),
            field(&t, "status"),
            field(&t, "assignee")
        ),
        (Some("billing"), Some("done"), Some("alice@example.com")),
        "{t}"
    );
    wait_sent(&sink, "SUP-1", "answer", "mari@gmail.com");
}

#[test]
fn merge_by_mail_keeps_the_older_ticket_and_later_mail_to_either_lands_there() {
    let (sink, d) = start();
    customer(
        &d,
        "g1@gmail.com",
        "mari@gmail.com",
        "Printer",
        "",
        "Jammed.",
    );
    customer(
        &d,
        "g2@gmail.com",
        "mari@gmail.com",
        "Printer again",
        "",
        "Still.",
    );
    staff(
        &d,
        "bob@example.com",
        "b1@example.com",
        "Re: Printer again [SUP-2]",
        "#take",
    );
    staff(
        &d,
        "alice@example.com",
        "a1@example.com",
        "Re: Printer again [SUP-2]",
        "#merge SUP-1",
    );
    let s = d.show("SUP-1");
    let m = d.show("SUP-2");
    assert_eq!(field(&m, "merged_into"), Some("SUP-1"), "{m}");
    assert_eq!(field(&m, "status"), Some("closed"), "{m}");
    let ids = strs(&s["message_ids"]);
    for id in ["g1@gmail.com", "g2@gmail.com", "a1@example.com"] {
        assert!(ids.contains(&id.to_string()), "{id} in {ids:?}");
    }
    // The moved message is one of SUP-1's messages now.
    let msgs: Vec<String> = s["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["message_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert!(msgs.contains(&"g2@gmail.com".to_string()), "{msgs:?}");
    // The survivor was done-less and unassigned; the newer half was bob's
    // and open: the conversation keeps being worked by bob.
    assert_eq!(field(&s, "assignee"), Some("bob@example.com"), "{s}");
    let raw = d.cli_ok(&["ticket", "show", "SUP-1"]);
    assert!(raw.contains("g2@gmail.com"), "{raw}");

    // Later mail: either token, either thread.
    let cases = [
        ("l1@gmail.com", "Re: Printer again [SUP-2]", ""),
        ("l2@gmail.com", "Re: Printer [SUP-1]", ""),
        (
            "l3@gmail.com",
            "Re: Printer again",
            "In-Reply-To: <g2@gmail.com>\r\n",
        ),
        (
            "l4@gmail.com",
            "Re: Printer",
            "In-Reply-To: <g1@gmail.com>\r\n",
        ),
    ];
    for (id, subject, headers) in cases {
        customer(&d, id, "mari@gmail.com", subject, headers, "More.");
        assert_eq!(d.ticket_of(id).as_deref(), Some("SUP-1"), "{id}");
    }
    assert_eq!(d.tickets().len(), 2, "no new ticket");
    // A second merge of the merged ticket is refused.
    staff(
        &d,
        "alice@example.com",
        "a2@example.com",
        "Re: Printer [SUP-1]",
        "#merge SUP-1",
    );
    let body = refusal(&sink, 0);
    assert!(body.contains("cannot be merged with itself"), "{body}");
}

#[test]
fn ticket_merge_from_the_cli() {
    let (_sink, d) = start();
    customer(&d, "h1@gmail.com", "mari@gmail.com", "One", "", "x");
    customer(&d, "h2@gmail.com", "mari@gmail.com", "Two", "", "y");
    let out = d.cli_ok(&["ticket", "merge", "SUP-2", "SUP-1"]);
    assert_eq!(
        out.trim(),
        "SUP-2 merged into SUP-1 (1 messages moved; SUP-1 is now unassigned)"
    );
    let m = d.show("SUP-2");
    assert_eq!(field(&m, "merged_into"), Some("SUP-1"));
    customer(
        &d,
        "h3@gmail.com",
        "mari@gmail.com",
        "Re: Two [SUP-2]",
        "",
        "z",
    );
    assert_eq!(d.ticket_of("h3@gmail.com").as_deref(), Some("SUP-1"));
    customer(
        &d,
        "h4@gmail.com",
        "mari@gmail.com",
        "Re: Two",
        "In-Reply-To: <h2@gmail.com>\r\n",
        "w",
    );
    assert_eq!(d.ticket_of("h4@gmail.com").as_deref(), Some("SUP-1"));
    let bad = d.cli(&["ticket", "merge", "SUP-2", "SUP-1"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("cannot be merged with itself"), "{err}");
}

#[test]
fn a_report_for_one_category_lists_only_its_tickets_with_category_and_priority() {
    let (sink, d) = start();
    customer(&d, "r1@gmail.com", "mari@gmail.com", "Invoice", "", "x");
    customer(&d, "r2@gmail.com", "jaan@gmail.com", "VPN", "", "y");
    staff(
        &d,
        "alice@example.com",
        "a1@example.com",
        "Re: Invoice [SUP-1]",
        "#category billing\n#priority high",
    );
    staff(
        &d,
        "alice@example.com",
        "a2@example.com",
        "Re: VPN [SUP-2]",
        "#category tech",
    );
    let m = "From: alice@example.com\r\nTo: support+report-billing@example.com\r\nSubject: billing?\r\nMessage-ID: <rep1@example.com>\r\n\r\nplease\r\n";
    let r = d.deliver(
        "alice@example.com",
        &["support+report-billing@example.com"],
        m.as_bytes(),
    );
    assert!(r[0].starts_with("250"), "{r:?}");
    eventually(20, "the report", || !of_kind(&sink, "report").is_empty());
    let rep = of_kind(&sink, "report").remove(0);
    assert_eq!(rep.rcpt_to, vec!["alice@example.com"]);
    let body = rep.body_text();
    assert!(body.contains("Category billing only."), "{body}");
    assert!(body.contains("SUP-1  Invoice  [billing, high]"), "{body}");
    assert!(!body.contains("SUP-2"), "{body}");
    assert!(
        rep.header("Subject")
            .unwrap_or_default()
            .starts_with("Report: category billing"),
        "{:?}",
        rep.header("Subject")
    );
    // An unknown category is refused, not answered with an empty report.
    let m = "From: alice@example.com\r\nTo: support+report-nope@example.com\r\nSubject: x\r\nMessage-ID: <rep2@example.com>\r\n\r\nplease\r\n";
    d.deliver(
        "alice@example.com",
        &["support+report-nope@example.com"],
        m.as_bytes(),
    );
    let body = refusal(&sink, 0);
    assert!(body.contains("\"nope\" is not a category"), "{body}");
}
