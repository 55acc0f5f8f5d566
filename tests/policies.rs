//! Desk policies end to end (issue #8, docs/policies.md): every routing
//! condition and action through LMTP and the real daemon, first match
//! wins, `continue`, disabled rules, `drop`, the default owner,
//! distribution with its cap and the leads' notice, away agents, the
//! `#category` / `#priority` / `#tag` / `#away` / `#back` commands,
//! `ticket set`, `rules test`, `explain`, reload on SIGHUP, and a broken
//! rule's error.

mod common;

use common::sink::Sink;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn day(offset: i64) -> String {
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    today
        .checked_add(jiff::Span::new().days(offset))
        .map(|d| d.to_string())
        .unwrap_or_default()
}

const ROUTING: &str = r#"routing:
  - name: switched off
    if: {subject: "(?i)disabled-marker"}
    then: {drop: true}
    enabled: false
  - name: urgent
    if: {plus_tag: urgent}
    then: {priority: high, tags: [urgent]}
    continue: true
  - name: vip header
    if: {header: {name: X-Vip, matches: "^yes$"}}
    then: {watchers: [carol@example.com]}
    continue: true
  - name: newsletters
    if: {subject: "(?i)newsletter"}
    then: {drop: true}
  - name: acme invoices
    if: {sender_domain: "*.acme.test", subject: "(?i)invoice"}
    then: {category: billing, assignee: distribute}
  - name: boss
    if: {sender: "boss@*"}
    then: {assignee: bob@example.com, priority: high}
  - name: gold
    if: {customer_category: gold}
    then: {tags: [gold]}
    continue: true
  - name: kalev
    if: {customer: KALEV}
    then: {assignee: l2}
  - name: refunds
    if: {body: "(?i)refund"}
    then: {category: billing, status: waiting, assignee: alice@example.com}
  - name: files
    if: {has_attachments: true}
    then: {tags: [files]}
  - name: in hours
    if: {business_hours: true, subject: "(?i)hours-marker"}
    then: {tags: [in-hours]}
  - name: after hours
    if: {business_hours: false, subject: "(?i)hours-marker"}
    then: {tags: [after-hours]}
  - name: thanks
    if: {subject: "^thanks$"}
    then: {status: done}
  - name: hardware
    if: {plus_tag: hw}
    then: {category: hardware}
  - name: tech
    if: {plus_tag: tech}
    then: {category: tech}
  - name: night
    if: {plus_tag: night}
    then: {category: night}
"#;

/// alice, bob, and carol (on vacation from yesterday to tomorrow); the
/// desk's day is UTC and every hour is a business hour.
fn desk_yaml(port: u16, data: &Path, sink: u16, routing: &str) -> String {
    format!(
        r#"listen:
  lmtp: ["127.0.0.1:{port}"]
data_dir: {data}
support:
  address: support@example.com
team:
  domains: [example.com]
  agents:
    - email: alice@example.com
      name: Alice
    - email: bob@example.com
    - email: carol@example.com
      vacation:
        - {{from: {yesterday}, until: {tomorrow}}}
  leads: [lead@example.com]
outbound:
  relay: smtp://127.0.0.1:{sink}
  retry_min: 200ms
commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
policy:
  business_hours: {{timezone: UTC, hours: "00:00-24:00", days: [mon, tue, wed, thu, fri, sat, sun]}}
customers:
  - {{id: ACME, domains: [acme.test], category: gold, manager: alice@example.com}}
  - {{id: KALEV, domains: [kalev.test]}}
groups:
  - {{name: l2, members: [carol@example.com], notify: [l2-list@example.com]}}
categories:
  - id: billing
    name: Billing
    agents: [alice@example.com, bob@example.com]
    distribution: {{mode: round_robin, max_open: 1}}
  - id: hardware
    default_owner: bob@example.com
  - id: tech
    agents: [alice@example.com, bob@example.com, carol@example.com]
    distribution: {{mode: round_robin}}
  - id: night
    agents: [bob@example.com]
    distribution: {{}}
{routing}"#,
        data = data.display(),
        yesterday = day(-1),
        tomorrow = day(1),
    )
}

fn start() -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let port = sink.port();
    let d = Daemon::start_custom(|lmtp, data| desk_yaml(lmtp, data, port, ROUTING));
    (sink, d)
}

/// A mail from outside to `rcpt`, with extra header lines.
fn write(d: &Daemon, rcpt: &str, id: &str, from: &str, subject: &str, headers: &str, body: &str) {
    let r = d.deliver(from, &[rcpt], &mail(id, from, subject, headers, body));
    assert!(
        r.len() == 1 && r[0].starts_with("250"),
        "{r:?}\n{}",
        d.log()
    );
}

fn customer(d: &Daemon, id: &str, from: &str, subject: &str, body: &str) {
    write(d, "support@example.com", id, from, subject, "", body);
}

#[test]
fn sender_and_subject_conditions_and_the_agent_assignee_take_process() {
    let (sink, d) = start();
    // `sender`: boss@* → bob, priority high, with the full take process.
    customer(&d, "b1@bigco.test", "boss@bigco.test", "Call me", "Now.");
    let t = d.show("SUP-1");
    assert_eq!(
        (
            field(&t, "status"),
            field(&t, "assignee"),
            field(&t, "priority"),
            t["notified"].as_bool()
        ),
        (
            Some("active"),
            Some("bob@example.com"),
            Some("high"),
            Some(true)
        ),
        "{t}"
    );
    assert_eq!(t["reminders"].as_array().map(Vec::len), Some(1), "{t}");
    wait_sent(&sink, "SUP-1", "ack", "boss@bigco.test");
    wait_sent(&sink, "SUP-1", "notice", "bob@example.com");
    wait_sent(&sink, "SUP-1", "status", "boss@bigco.test");
    let notice = of_kind(&sink, "notice").remove(0);
    assert!(
        notice
            .body_text()
            .contains("assigned by routing (routing[5] \"boss\")"),
        "{}",
        notice.body_text()
    );

    // `sender_domain` + `subject` (both must hold): an invoice from a
    // subdomain of acme.test is billing, distributed: alice is first.
    customer(
        &d,
        "i1@acme.test",
        "mari@billing.acme.test",
        "Invoice 114 is wrong",
        "Please check.",
    );
    let t = d.show("SUP-2");
    assert_eq!(
        (field(&t, "category"), field(&t, "assignee")),
        (Some("billing"), Some("alice@example.com")),
        "{t}"
    );
    wait_sent(&sink, "SUP-2", "notice", "alice@example.com");
    // The subject alone is not enough: no invoice, no billing (the gold
    // rule and ACME's manager apply instead).
    customer(&d, "i2@acme.test", "mari@acme.test", "Hello", "Hi.");
    let t = d.show("SUP-3");
    assert_eq!(field(&t, "category"), None, "{t}");
}

#[test]
fn customer_conditions_group_assignee_and_default_owner() {
    let (sink, d) = start();
    // `customer_category: gold` (continue) then the default owner: the
    // customer's manager.
    customer(&d, "g1@acme.test", "mari@acme.test", "Printer", "Broken.");
    let t = d.show("SUP-1");
    assert_eq!(strs(&t["tags"]), vec!["gold"], "{t}");
    assert_eq!(field(&t, "assignee"), Some("alice@example.com"), "{t}");
    wait_sent(&sink, "SUP-1", "notice", "alice@example.com");
    // `customer: KALEV` → group l2: unassigned within it, the team copy
    // goes to the group's notify list only.
    customer(
        &d,
        "k1@kalev.test",
        "jaan@kalev.test",
        "Login",
        "Cannot log in.",
    );
    let t = d.show("SUP-2");
    assert_eq!(
        (
            field(&t, "status"),
            field(&t, "assignee"),
            field(&t, "group")
        ),
        (Some("unassigned"), None, Some("l2")),
        "{t}"
    );
    wait_sent(&sink, "SUP-2", "copy", "l2-list@example.com");
    let copies: Vec<Vec<String>> = sent_for(&sink, "SUP-2")
        .into_iter()
        .filter(|(k, _)| k == "copy")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(copies, vec![vec!["l2-list@example.com".to_string()]]);
    // A category's default owner (no customer manager): hardware → bob.
    write(
        &d,
        "support+hw@example.com",
        "h1@gmail.com",
        "someone@gmail.com",
        "Disk",
        "",
        "Dead disk.",
    );
    let t = d.show("SUP-3");
    assert_eq!(
        (field(&t, "category"), field(&t, "assignee")),
        (Some("hardware"), Some("bob@example.com")),
        "{t}"
    );
    wait_sent(&sink, "SUP-3", "notice", "bob@example.com");
}

#[test]
fn plus_tag_header_body_attachments_and_business_hours_conditions() {
    let (_sink, d) = start();
    // `plus_tag` (continue) and `header` (continue): priority, tag, watcher.
    write(
        &d,
        "support+urgent@example.com",
        "u1@gmail.com",
        "someone@gmail.com",
        "Down",
        "X-Vip: yes\r\n",
        "All down.",
    );
    let t = d.show("SUP-1");
    assert_eq!(field(&t, "priority"), Some("high"), "{t}");
    assert_eq!(strs(&t["tags"]), vec!["urgent"]);
    assert_eq!(strs(&t["watchers"]), vec!["carol@example.com"]);
    // A header that is present but does not match: no watcher.
    write(
        &d,
        "support@example.com",
        "u2@gmail.com",
        "someone@gmail.com",
        "Down",
        "X-Vip: no\r\n",
        "All down.",
    );
    let t = d.show("SUP-2");
    assert!(strs(&t["watchers"]).is_empty(), "{t}");
    assert_eq!(field(&t, "priority"), Some("normal"), "default priority");
    // `body` (the own text): refund → billing, waiting, alice.
    customer(
        &d,
        "r1@gmail.com",
        "someone@gmail.com",
        "Money",
        "I want a REFUND please.",
    );
    let t = d.show("SUP-3");
    assert_eq!(
        (
            field(&t, "category"),
            field(&t, "status"),
            field(&t, "assignee")
        ),
        (Some("billing"), Some("waiting"), Some("alice@example.com")),
        "{t}"
    );
    // A refund only in the quoted history is not the own text.
    customer(
        &d,
        "r2@gmail.com",
        "someone@gmail.com",
        "Money",
        "Thanks.\r\n\r\nOn Mon, Bob wrote:\r\n> refund",
    );
    assert_eq!(field(&d.show("SUP-4"), "category"), None);
    // `has_attachments`.
    let m = "From: someone@gmail.com\r\nTo: support@example.com\r\nSubject: Scan\r\nMessage-ID: <a1@gmail.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n--b1\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n";
    d.deliver_ok("someone@gmail.com", m.as_bytes());
    assert_eq!(strs(&d.show("SUP-5")["tags"]), vec!["files"]);
    // `business_hours`: every hour is one here, so `true` matches and the
    // `false` rule is never reached (and would not match).
    customer(
        &d,
        "bh1@gmail.com",
        "someone@gmail.com",
        "hours-marker",
        "x",
    );
    assert_eq!(strs(&d.show("SUP-6")["tags"]), vec!["in-hours"]);
}

#[test]
fn first_match_wins_and_continue_goes_on() {
    let (_sink, d) = start();
    // Matches urgent (continue), vip (continue), acme invoices (stop), and
    // would match gold and refunds, which are not reached.
    write(
        &d,
        "support+urgent@example.com",
        "fm1@acme.test",
        "mari@sub.acme.test",
        "Invoice wrong",
        "X-Vip: yes\r\n",
        "I want a refund.",
    );
    let t = d.show("SUP-1");
    assert_eq!(field(&t, "priority"), Some("high"), "{t}");
    assert_eq!(strs(&t["tags"]), vec!["urgent"], "no gold: not reached");
    assert_eq!(strs(&t["watchers"]), vec!["carol@example.com"]);
    assert_eq!(
        (
            field(&t, "category"),
            field(&t, "status"),
            field(&t, "assignee")
        ),
        (Some("billing"), Some("active"), Some("alice@example.com")),
        "the refunds rule (waiting, alice by name) did not run: {t}"
    );
}

#[test]
fn a_disabled_rule_is_skipped_and_drop_stores_and_sends_nothing() {
    let (sink, d) = start();
    customer(
        &d,
        "dis1@gmail.com",
        "someone@gmail.com",
        "disabled-marker",
        "x",
    );
    let t = d.show("SUP-1");
    assert_eq!(field(&t, "status"), Some("unassigned"), "{t}");
    wait_sent(&sink, "SUP-1", "ack", "someone@gmail.com");

    customer(
        &d,
        "news1@list.test",
        "news@list.test",
        "Our Newsletter",
        "Buy!",
    );
    let t = d.show("SUP-2");
    assert_eq!(field(&t, "status"), Some("deleted"), "{t}");
    assert_eq!(strs(&t["message_ids"]), vec!["news1@list.test"]);
    let shown = d.cli_ok(&["ticket", "show", "SUP-2"]);
    assert!(shown.contains("deleted"), "{shown}");
    // Nothing at all for SUP-2, while SUP-3 after it gets its ack.
    customer(&d, "after1@gmail.com", "other@gmail.com", "Hello", "x");
    wait_sent(&sink, "SUP-3", "ack", "other@gmail.com");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        sent_for(&sink, "SUP-2").is_empty(),
        "{:?}",
        sent_for(&sink, "SUP-2")
    );
    assert!(
        d.log().contains("action=drop status=new->deleted"),
        "{}",
        d.log()
    );
}

#[test]
fn status_action_files_a_ticket_as_done() {
    let (sink, d) = start();
    customer(&d, "th1@gmail.com", "someone@gmail.com", "thanks", "x");
    let t = d.show("SUP-1");
    assert_eq!(
        (field(&t, "status"), field(&t, "assignee")),
        (Some("done"), None),
        "{t}"
    );
    assert!(t["ended_at"].is_string(), "{t}");
    wait_sent(&sink, "SUP-1", "ack", "someone@gmail.com");
}

#[test]
fn distribution_cap_notifies_the_leads_once_and_resumes_when_an_agent_closes() {
    let (sink, d) = start();
    let invoice = |n: u32| {
        customer(
            &d,
            &format!("inv{n}@acme.test"),
            &format!("c{n}@acme.test"),
            &format!("Invoice {n}"),
            "Wrong total.",
        )
    };
    invoice(1);
    invoice(2);
    let who = |tok: &str| field(&d.show(tok), "assignee").map(String::from);
    assert_eq!(who("SUP-1").as_deref(), Some("alice@example.com"));
    assert_eq!(who("SUP-2").as_deref(), Some("bob@example.com"));
    // Both at max_open 1: SUP-3 waits, and the leads hear of it once.
    invoice(3);
    invoice(4);
    assert_eq!(who("SUP-3"), None);
    assert_eq!(who("SUP-4"), None);
    assert_eq!(field(&d.show("SUP-3"), "status"), Some("unassigned"));
    wait_sent(&sink, "SUP-3", "capacity", "lead@example.com");
    let cap = of_kind(&sink, "capacity").remove(0);
    let body = cap.body_text();
    assert!(
        body.contains("alice@example.com: full (1 of 1)")
            && body.contains("bob@example.com: full (1 of 1)"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        of_kind(&sink, "capacity").len(),
        1,
        "one notice, not one per ticket"
    );

    // alice closes SUP-1 by mail: the oldest waiting ticket is hers, in
    // the same transaction, with the full take process.
    staff(
        &d,
        "alice@example.com",
        "dn1@example.com",
        "[SUP-1]",
        "#done",
    );
    assert_eq!(field(&d.show("SUP-1"), "status"), Some("done"));
    assert_eq!(who("SUP-3").as_deref(), Some("alice@example.com"));
    assert_eq!(who("SUP-4"), None);
    wait_sent(&sink, "SUP-3", "notice", "alice@example.com");
    wait_sent(&sink, "SUP-3", "status", "c3@acme.test");
    // bob's ticket released from the CLI: SUP-4 goes to bob.
    let out = d.cli_ok(&["ticket", "release", "SUP-2"]);
    assert!(
        out.contains("distributed: SUP-4 to bob@example.com"),
        "{out}"
    );
    assert_eq!(who("SUP-4").as_deref(), Some("bob@example.com"));
    wait_sent(&sink, "SUP-4", "notice", "bob@example.com");
    // Full again: a new shortage, a new notice.
    invoice(5);
    assert_eq!(who("SUP-5"), None);
    eventually(20, "the second capacity notice", || {
        of_kind(&sink, "capacity").len() == 2
    });
}

#[test]
fn away_agents_are_skipped_and_return_with_back() {
    let (sink, d) = start();
    // bob away by mail (no ticket needed); carol is on vacation in config.
    staff(
        &d,
        "bob@example.com",
        "aw1@example.com",
        "away",
        &format!("#away until {}", day(3)),
    );
    assert!(d.log().contains("action=command"), "{}", d.log());
    let tech = |n: u32| {
        write(
            &d,
            "support+tech@example.com",
            &format!("t{n}@gmail.com"),
            "someone@gmail.com",
            &format!("Tech {n}"),
            "",
            "x",
        )
    };
    tech(1);
    tech(2);
    let who = |tok: &str| field(&d.show(tok), "assignee").map(String::from);
    assert_eq!(who("SUP-1").as_deref(), Some("alice@example.com"));
    assert_eq!(who("SUP-2").as_deref(), Some("alice@example.com"));
    staff(&d, "bob@example.com", "bk1@example.com", "back", "#back");
    tech(3);
    tech(4);
    assert_eq!(who("SUP-3").as_deref(), Some("bob@example.com"));
    assert_eq!(who("SUP-4").as_deref(), Some("alice@example.com"));

    // night is bob's alone: away, its ticket waits (no leads notice: it
    // is not a cap); #back hands it to him at once.
    staff(&d, "bob@example.com", "aw2@example.com", "away", "#away");
    write(
        &d,
        "support+night@example.com",
        "n1@gmail.com",
        "someone@gmail.com",
        "Night",
        "",
        "x",
    );
    assert_eq!(who("SUP-5"), None);
    staff(&d, "bob@example.com", "bk2@example.com", "back", "#back");
    assert_eq!(who("SUP-5").as_deref(), Some("bob@example.com"));
    wait_sent(&sink, "SUP-5", "notice", "bob@example.com");
    assert!(of_kind(&sink, "capacity").is_empty());
    // An away date in the past is refused with the reason.
    staff(
        &d,
        "bob@example.com",
        "aw3@example.com",
        "away",
        "#away until 2020-01-01",
    );
    eventually(20, "the refusal", || !of_kind(&sink, "refusal").is_empty());
    let body = of_kind(&sink, "refusal").remove(0).body_text();
    assert!(
        body.contains("#away until 2020-01-01: that day has passed"),
        "{body}"
    );
}

#[test]
fn category_priority_and_tag_by_mail_and_unknown_ids_refused() {
    let (sink, d) = start();
    write(
        &d,
        "support+urgent@example.com",
        "c1@gmail.com",
        "someone@gmail.com",
        "Help",
        "",
        "x",
    );
    assert_eq!(strs(&d.show("SUP-1")["tags"]), vec!["urgent"]);
    staff(
        &d,
        "alice@example.com",
        "cmd1@example.com",
        "Re: Help [SUP-1]",
        "#category Tech\n#priority low\n#tag vip second -urgent",
    );
    let t = d.show("SUP-1");
    assert_eq!(
        (field(&t, "category"), field(&t, "priority")),
        (Some("tech"), Some("low")),
        "{t}"
    );
    assert_eq!(strs(&t["tags"]), vec!["vip", "second"]);
    // Unknown ids: nothing changes, and alice is told why.
    staff(
        &d,
        "alice@example.com",
        "cmd2@example.com",
        "Re: Help [SUP-1]",
        "#priority high\n#category nope",
    );
    eventually(20, "the refusal", || !of_kind(&sink, "refusal").is_empty());
    let r = of_kind(&sink, "refusal").remove(0);
    assert_eq!(r.rcpt_to, vec!["alice@example.com"]);
    let body = r.body_text();
    assert!(
        body.contains(
            "#category: \"nope\" is not a category (categories: billing, hardware, tech, night); nothing was done"
        ),
        "{body}"
    );
    assert_eq!(
        field(&d.show("SUP-1"), "priority"),
        Some("low"),
        "all or nothing"
    );
    staff(
        &d,
        "alice@example.com",
        "cmd3@example.com",
        "Re: Help [SUP-1]",
        "#priority urgent",
    );
    eventually(20, "the second refusal", || {
        of_kind(&sink, "refusal").len() == 2
    });
    let body = of_kind(&sink, "refusal").remove(1).body_text();
    assert!(
        body.contains("\"urgent\" is not a priority (priorities: low, normal, high)"),
        "{body}"
    );
}

#[test]
fn ticket_set_from_the_cli() {
    let (_sink, d) = start();
    customer(&d, "s1@gmail.com", "someone@gmail.com", "Help", "x");
    let out = d.cli_ok(&[
        "ticket",
        "set",
        "SUP-1",
        "--category",
        "billing",
        "--priority",
        "high",
        "--tag",
        "a",
        "--tag",
        "b",
    ]);
    assert_eq!(
        out.trim(),
        "SUP-1 set: category billing, priority high, tags [a, b]"
    );
    d.cli_ok(&["ticket", "set", "SUP-1", "--untag", "a"]);
    let t = d.show("SUP-1");
    assert_eq!(strs(&t["tags"]), vec!["b"]);
    let shown = d.cli_ok(&["ticket", "show", "SUP-1"]);
    assert!(
        shown.contains("category      billing") && shown.contains("priority      high"),
        "{shown}"
    );
    let bad = d.cli(&["ticket", "set", "SUP-1", "--category", "nope"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("\"nope\" is not a category"), "{err}");
    let bad = d.cli(&["ticket", "set", "SUP-1", "--tag", "two words"]);
    assert!(!bad.status.success());
    assert_eq!(field(&d.show("SUP-1"), "category"), Some("billing"));
}

/// The fenced block after `<!-- example:NAME -->` in docs/policies.md.
fn doc_block(doc: &str, name: &str) -> String {
    let marker = format!("<!-- example:{name} -->");
    let at = doc.find(&marker).unwrap_or_else(|| panic!("no {marker}"));
    let rest = &doc[at + marker.len()..];
    let open = rest.find("```").unwrap_or(0);
    let body_start = open + rest[open..].find('\n').unwrap_or(0) + 1;
    let close = rest[body_start..].find("\n```").unwrap_or(0);
    rest[body_start..body_start + close + 1].to_string()
}

#[test]
fn rules_test_prints_the_trace_shown_in_docs_policies_md() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policies.md"))
        .expect("docs/policies.md");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("postdesk.yaml");
    std::fs::write(&cfg, doc_block(&doc, "config")).expect("config");
    let run = |args: &[&str]| {
        let mut c = Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .args(["rules", "test"])
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        if let Some(mut i) = c.stdin.take() {
            use std::io::Write;
            let _ = i.write_all(doc_block(&doc, "mail").replace('\n', "\r\n").as_bytes());
        }
        c.wait_with_output().expect("rules test")
    };
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        doc_block(&doc, "trace")
    );
    // --at moves the arrival out of business hours: the last rule matches
    // but is not reached; --to drops the plus-tag.
    let out = run(&[
        "--at",
        "2026-03-10T20:00:00Z",
        "--to",
        "support@example.com",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("plus_tag urgent: the mail came to the bare support address"),
        "{text}"
    );
    assert!(
        text.contains("would match\n  yes: business_hours false: arrived outside business hours (Tue 22:00 Europe/Tallinn)"),
        "{text}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "rules test touches no store"
    );
}

#[test]
fn explain_shows_the_rules_trace_and_the_owner() {
    let (_sink, d) = start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("m.eml");
    std::fs::write(
        &f,
        mail("ex1@acme.test", "mari@acme.test", "Invoice 9", "", "Wrong."),
    )
    .expect("mail");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&d.config)
        .arg("explain")
        .stdin(std::fs::File::open(&f).expect("open"))
        .output()
        .expect("explain");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("routing: 16 rules, first match wins"),
        "{text}"
    );
    assert!(
        text.contains("routing[4] \"acme invoices\": matched"),
        "{text}"
    );
    assert!(
        text.contains(
            "owner:          auto-distribution (billing, round robin): alice@example.com"
        ),
        "{text}"
    );
    assert!(d.tickets().is_empty(), "explain wrote nothing");
}

#[test]
fn rules_reload_on_sighup() {
    let sink = Sink::start_blocking();
    let port = sink.port();
    let first = "routing:\n  - if: {subject: \"(?i)alpha\"}\n    then: {tags: [first]}\n";
    let d = Daemon::start_custom(|lmtp, data| desk_yaml(lmtp, data, port, first));
    customer(&d, "hup1@gmail.com", "someone@gmail.com", "Alpha", "x");
    assert_eq!(strs(&d.show("SUP-1")["tags"]), vec!["first"]);
    let yaml = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(&d.config, yaml.replace("[first]", "[second]")).expect("rewrite");
    d.hup();
    eventually(20, "the reload", || {
        d.log().contains("routing rules reloaded")
    });
    customer(&d, "hup2@gmail.com", "someone@gmail.com", "Alpha", "x");
    assert_eq!(strs(&d.show("SUP-2")["tags"]), vec!["second"]);
    // A broken rule is refused and the running rules stay.
    let good = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(&d.config, good.replace("(?i)alpha", "(alpha")).expect("rewrite");
    d.hup();
    eventually(20, "the refused reload", || {
        d.log().contains("reload failed")
    });
    assert!(
        d.log()
            .contains("routing[0].if.subject: regex parse error: unclosed group"),
        "{}",
        d.log()
    );
    customer(&d, "hup3@gmail.com", "someone@gmail.com", "Alpha", "x");
    // The CLI reads the file too: put the good one back to ask.
    std::fs::write(&d.config, good).expect("restore");
    assert_eq!(strs(&d.show("SUP-3")["tags"]), vec!["second"]);
}

#[test]
fn a_broken_rule_is_named_with_index_key_and_line_by_check_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("postdesk.yaml");
    std::fs::write(
        &cfg,
        "support:\n  address: support@example.com\nteam:\n  agents:\n    - email: alice@example.com\nrouting:\n  - if: {plus_tag: urgent}\n    then: {priority: high}\n  - if:\n      subject: \"(unclosed\"\n    then: {priority: low}\n",
    )
    .expect("config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:10: routing[1].if.subject: regex parse error: unclosed group",
            cfg.display()
        )),
        "{err}"
    );
}
