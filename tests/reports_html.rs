//! The report and the digest as a mail client gets them: `multipart/alternative`
//! with the text first and an HTML view second (a ticket table, created vs
//! resolved per day, open load per agent), from the real daemon through the
//! recording SMTP sink, parsed with mail-parser.

mod common;

use common::sink::{Received, Sink};
use common::*;
use mail_parser::{MessageParser, MimeHeaders, PartType};

const CUSTOMER: &str = "mari@cust.test";
const HOSTILE: &str = "<script>alert(\"x\")</script> Fax & more";
const EXTRA: &str = "commands:
  trust: [signed_address, authentication_results]
  authserv_id: mx.example.com
";

fn customer_mail(d: &Daemon, id: &str, subject: &str) {
    d.deliver_ok(
        CUSTOMER,
        &mail(id, &format!("Mari <{CUSTOMER}>"), subject, "", "Help."),
    );
}

/// Six tickets: alice has one active and one waiting, bob one snoozed and
/// one done, one is unassigned (with a hostile subject), one is spam.
fn desk(d: &Daemon) {
    for (i, s) in ["Printer", "Scanner", HOSTILE, "VPN", "Toner", "Cheap pills"]
        .iter()
        .enumerate()
    {
        customer_mail(d, &format!("h{i}@cust.test"), s);
    }
    d.cli_ok(&["ticket", "take", "SUP-1", "--as", "alice"]);
    d.cli_ok(&["ticket", "take", "SUP-2", "--as", "alice"]);
    staff(
        d,
        "alice@example.com",
        "w2@example.com",
        "Re: Scanner [SUP-2]",
        "#waiting",
    );
    d.cli_ok(&["ticket", "take", "SUP-4", "--as", "bob"]);
    d.cli_ok(&["ticket", "snooze", "SUP-4", "2d"]);
    d.cli_ok(&["ticket", "take", "SUP-5", "--as", "bob"]);
    d.cli_ok(&["ticket", "done", "SUP-5"]);
    d.cli_ok(&["ticket", "spam", "SUP-6"]);
    assert_eq!(d.show("SUP-2")["status"], "waiting");
    assert_eq!(d.show("SUP-4")["status"], "snoozed");
}

struct Parts {
    text: String,
    html: String,
}

/// The mail's two parts, after checking the structure a client relies on:
/// a `multipart/alternative` root, text/plain first, text/html second.
fn parts(m: &Received) -> Parts {
    let msg = MessageParser::default().parse(&m.data).expect("parses");
    let root = msg.root_part().content_type().expect("a Content-Type");
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    let PartType::Multipart(children) = &msg.root_part().body else {
        panic!("the root is not multipart");
    };
    let types: Vec<String> = children
        .iter()
        .map(|i| {
            let ct = msg.parts[*i as usize].content_type().expect("part type");
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(types, ["text/plain", "text/html"]);
    let text = msg.body_text(0).expect("text").into_owned();
    let html = msg.body_html(0).expect("html").into_owned();
    // What a text-only client shows is the text part, not HTML turned to text.
    assert_eq!(text, m.body_text());
    Parts { text, html }
}

/// The slice of `html` from `marker` to the next chart or table row.
fn row<'a>(html: &'a str, marker: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in:\n{html}"));
    let rest = &html[start + marker.len()..];
    let end = [
        "data-day=",
        "data-agent=",
        "data-ticket=",
        "</table>\n</td></tr>",
    ]
    .iter()
    .filter_map(|m| rest.find(m))
    .min()
    .unwrap_or(rest.len());
    &rest[..end]
}

/// The number in `name="N"` inside `s`.
fn attr(s: &str, name: &str) -> u32 {
    let k = format!("{name}=\"");
    let i = s.find(&k).unwrap_or_else(|| panic!("no {name} in {s}"));
    s[i + k.len()..]
        .split('"')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number in {s}"))
}

/// Every `width="N"` of a bar of `height` inside `s`.
fn bar_widths(s: &str, height: u32) -> Vec<u32> {
    s.match_indices("width=\"")
        .filter_map(|(i, _)| {
            let rest = &s[i + 7..];
            let (w, after) = rest.split_once('"')?;
            after
                .starts_with(&format!(" height=\"{height}\""))
                .then(|| w.parse().ok())
                .flatten()
        })
        .collect()
}

/// The checks both mails share: every open ticket in the table (and no
/// other), today's created/resolved bars, per-agent load, escaping.
fn check_html(d: &Daemon, html: &str, expect_tokens: &[String]) {
    for tok in expect_tokens {
        assert!(
            html.contains(&format!("data-ticket=\"{tok}\"")),
            "{tok} missing:\n{html}"
        );
    }
    let rows = html.matches("data-ticket=").count();
    assert_eq!(rows, expect_tokens.len(), "{html}");

    // Today's bars: what the store says was created and resolved today.
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let all = d.tickets();
    let created = all
        .iter()
        .filter(|t| {
            t["status"] != "deleted" && field(t, "started_at").unwrap_or("").starts_with(&today)
        })
        .count() as u32;
    let resolved = all
        .iter()
        .filter(|t| t["status"] == "done" || t["status"] == "closed")
        .count() as u32;
    assert_eq!((created, resolved), (5, 1), "the scripted desk");
    let r = row(html, &format!("data-day=\"{today}\""));
    assert_eq!(attr(r, "data-created"), created, "{r}");
    assert_eq!(attr(r, "data-resolved"), resolved, "{r}");
    // Both bars on one scale: widths in the ratio of the counts.
    let w = bar_widths(r, 8);
    assert_eq!(w.len(), 2, "{r}");
    assert!(w[0] > w[1] && w[1] > 0, "{w:?}");
    assert_eq!(w[0] * resolved, w[1] * created, "{w:?}");
    // Earlier days had nothing: no bars, zeros.
    assert_eq!(html.matches("data-day=").count(), 14);
    assert_eq!(html.matches("data-created=\"0\"").count(), 13);
    assert_eq!(bar_widths(html, 8).len(), 2, "only today's two bars");

    // Open load per agent: active/waiting/snoozed as the store has them.
    let load = |who: &str, st: &str| {
        all.iter()
            .filter(|t| field(t, "assignee") == Some(who) && t["status"] == st)
            .count()
    };
    let mut totals = Vec::new();
    for who in ["alice@example.com", "bob@example.com"] {
        let want = format!(
            "{}/{}/{}",
            load(who, "active"),
            load(who, "waiting"),
            load(who, "snoozed")
        );
        let r = row(html, &format!("data-agent=\"{who}\""));
        assert!(
            r.contains(&format!("data-load=\"{want}\"")),
            "{who} {want}: {r}"
        );
        let total = load(who, "active") + load(who, "waiting") + load(who, "snoozed");
        totals.push((total as u32, bar_widths(r, 14).iter().sum::<u32>()));
    }
    assert_eq!(totals[0].0, 2);
    assert_eq!(totals[1].0, 1);
    // Stacked bars proportional to each agent's total.
    assert_eq!(
        totals[0].1 * totals[1].0,
        totals[1].1 * totals[0].0,
        "{totals:?}"
    );

    // The customer's subject is text, never markup.
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2f;script&gt; Fax &amp; more"),
        "{html}"
    );
    // Nothing a mail client would refuse or fetch.
    for bad in [
        "<style",
        "<img",
        "display:flex",
        "display:grid",
        "http://",
        "https://",
    ] {
        assert!(!html.contains(bad), "{bad} in the HTML");
    }
}

fn open_tokens(d: &Daemon) -> Vec<String> {
    d.tickets()
        .iter()
        .filter(|t| {
            ["unassigned", "active", "waiting", "snoozed"]
                .contains(&t["status"].as_str().unwrap_or(""))
        })
        .map(|t| field(t, "token").unwrap_or("").to_string())
        .collect()
}

fn ask_report(d: &Daemon, sink: &Sink, rcpt: &str, nth: usize) -> Received {
    let m = format!(
        "From: alice@example.com\r\nTo: {rcpt}\r\nSubject: report\r\nMessage-ID: <rq{nth}@example.com>\r\nDate: Sun, 22 Nov 2026 11:00:00 +0200\r\n\r\n\r\n"
    );
    let r = d.deliver("alice@example.com", &[rcpt], m.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}");
    eventually(20, "the report", || of_kind(sink, "report").len() >= nth);
    of_kind(sink, "report")[nth - 1].clone()
}

#[test]
fn a_report_asked_by_mail_is_text_then_html_with_table_and_charts() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), EXTRA);
    desk(&d);
    let open = open_tokens(&d);
    assert_eq!(open, ["SUP-1", "SUP-2", "SUP-3", "SUP-4"]);

    let all = ask_report(&d, &sink, "support+report-all@example.com", 1);
    assert_eq!(all.rcpt_to, ["alice@example.com"]);
    let p = parts(&all);
    // The text part is the text report, unchanged.
    assert!(p.text.contains("alice@example.com: 1 active"), "{}", p.text);
    assert!(p.text.contains("bob@example.com: 0 active"), "{}", p.text);
    assert!(p.text.contains("Unassigned: 1"), "{}", p.text);
    assert!(p.text.contains(HOSTILE), "{}", p.text);
    assert!(p.text.contains("support+take-3-"), "{}", p.text);
    assert!(!p.html.is_empty());
    check_html(&d, &p.html, &open);
    // The HTML rows carry the same one-click links as the text.
    let r3 = row(&p.html, "data-ticket=\"SUP-3\"");
    assert!(r3.contains("href=\"mailto:support+take-3-"), "{r3}");

    // Alice's own report: her tickets and the unassigned, not bob's.
    let mine = ask_report(&d, &sink, "support+report@example.com", 2);
    let p = parts(&mine);
    check_html(
        &d,
        &p.html,
        &[
            "SUP-1".to_string(),
            "SUP-2".to_string(),
            "SUP-3".to_string(),
        ],
    );
}

#[test]
fn the_digest_is_text_then_html_with_table_and_charts() {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), EXTRA);
    desk(&d);
    // The digest comes at policy.digest_at: two seconds from the restart.
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(2))
        .unwrap()
        .strftime("%H:%M:%S")
        .to_string();
    let yaml = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        format!("{yaml}policy:\n  digest_at: \"{at} UTC\"\n"),
    )
    .unwrap();
    d.restart();
    eventually(20, "the digest", || !of_kind(&sink, "digest").is_empty());
    let dg = of_kind(&sink, "digest")[0].clone();
    assert_eq!(dg.rcpt_to, ["lead@example.com"]);
    let p = parts(&dg);
    assert!(p.text.contains("Unassigned: 1"), "{}", p.text);
    assert!(p.text.contains("alice@example.com: 1"), "{}", p.text);
    assert!(p.text.contains(HOSTILE), "{}", p.text);
    check_html(&d, &p.html, &open_tokens(&d));
}
