//! PURE: the HTML part of the report and the digest (`report.html`,
//! `digest.html`): a ticket table and two charts drawn as table cells with
//! inline styles and `bgcolor`/`width`/`height` attributes, because mail
//! clients drop scripts, external images, `<style>` blocks (some), flex and
//! grid. The text part stays first: it is the mail; the HTML is a view.

use super::charts::{self, Flow, BAR_PX};
use super::desk::TicketView;
use super::Templates;
use mail_builder::headers::content_type::ContentType;
use mail_builder::mime::{BodyPart, MimePart};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// At most this many tickets go into the HTML table; a desk with more open
/// tickets than that gets the oldest ones and a line saying how many more
/// (the text part still lists what it always listed). A row is about
/// 1.4 KB of inline-styled HTML; Gmail clips a mail past 102 KB, so a
/// longer table would mostly be hidden there anyway.
pub const MAX_ROWS: usize = 100;

/// What both HTML templates see.
#[derive(Serialize)]
struct Page<'a> {
    title: &'a str,
    /// Local time of the desk, e.g. `2026-11-23 08:00 (Europe/Tallinn)`.
    at: String,
    category: Option<&'a str>,
    open: usize,
    unassigned: usize,
    created_today: u32,
    resolved_today: u32,
    tickets: &'a [TicketView],
    more: usize,
    days: Vec<charts::DayBar>,
    load: Vec<charts::AgentLoad>,
    bar_px: u32,
}

/// The figures of one HTML page; `rows` are the table's tickets (already
/// in order), `open` the open tickets the page is about.
pub struct Input<'a> {
    pub title: &'a str,
    pub category: Option<&'a str>,
    pub open: &'a [&'a crate::store::Ticket],
    pub rows: Vec<TicketView>,
    pub roster: &'a [String],
    pub flow: &'a Flow,
    pub now: crate::store::Timestamp,
}

/// Renders `name` (`report.html` or `digest.html`); `None`, logged, when
/// the template fails, so the mail still goes out as text alone.
pub fn render(tpl: &Templates, lang: &str, name: &str, input: Input<'_>) -> Option<String> {
    let Input {
        title,
        category,
        open,
        mut rows,
        roster,
        flow,
        now,
    } = input;
    let more = rows.len().saturating_sub(MAX_ROWS);
    rows.truncate(MAX_ROWS);
    let zoned = now.to_zoned(flow.zone().clone());
    let zone = flow.zone().iana_name().unwrap_or("UTC");
    let (created_today, resolved_today) = flow.today();
    let page = Page {
        title,
        at: format!("{} ({zone})", zoned.strftime("%Y-%m-%d %H:%M")),
        category,
        open: open.len(),
        unassigned: open
            .iter()
            .filter(|t| t.status == crate::store::Status::Unassigned)
            .count(),
        created_today,
        resolved_today,
        tickets: &rows,
        more,
        days: flow.days(),
        load: charts::load(roster, open.iter().copied()),
        bar_px: BAR_PX,
    };
    match tpl.render(lang, name, minijinja::Value::from_serialize(&page)) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, template = name, "HTML template failed; sending the text part alone");
            None
        }
    }
}

/// `multipart/alternative`: the text first (clients that show one part
/// show the text), then the HTML. The boundary is derived from both
/// contents, so a re-run writes the same bytes and no content can contain
/// it by chance.
pub fn alternative(text: String, html: String) -> MimePart<'static> {
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0]);
    h.update(html.as_bytes());
    let d = h.finalize();
    let boundary: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    MimePart::new(
        ContentType::new("multipart/alternative").attribute("boundary", format!("=_pd_{boundary}")),
        vec![
            MimePart::new("text/plain", BodyPart::Text(text.into())),
            MimePart::new("text/html", BodyPart::Text(html.into())),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::render::desk;
    use crate::store::{Status, Timestamp};
    use mail_parser::{MessageParser, MimeHeaders};

    fn cfg() -> Config {
        Config::parse(
            "support: {address: support@example.com}\nteam:\n  agents: [{email: alice@example.com}, {email: bob@example.com}]\n  leads: [lead@example.com]\n",
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn both_mails_are_text_then_html_in_every_language_with_subjects_escaped() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let mut cfg = cfg();
        let mut a = desk::view_less_ticket(&cfg, now);
        a.number = 1;
        a.status = Status::Unassigned;
        a.subject = "<script>alert(1)</script> & co".into();
        let mut b = a.clone();
        b.number = 2;
        b.status = Status::Waiting;
        b.assignee = Some("alice@example.com".into());
        b.subject = "Printer".into();
        let tickets = [a, b];
        for lang in ["en", "et"] {
            cfg.support.language = lang.into();
            let tpl = Templates::builtin();
            let flow = Flow::of(now, jiff::tz::TimeZone::UTC, None, &tickets);
            let mails = [
                desk::digest("lead@example.com", &tickets, &cfg, &tpl, &flow, now),
                desk::report(
                    "alice@example.com",
                    false,
                    None,
                    "r@x",
                    "",
                    &tickets,
                    &cfg,
                    &tpl,
                    None,
                    &flow,
                    now,
                ),
            ];
            // Each page is `_desk.html` with its own footer filled in.
            let footers: [&str; 2] = match lang {
                "et" => ["(policy.digest_at oma)", "Tekstiosas on samad"],
                _ => ["(that of policy.digest_at)", "The text part has the same"],
            };
            for (m, footer) in mails.into_iter().zip(footers) {
                let parsed = MessageParser::default().parse(&m.head).unwrap();
                let ct = parsed.root_part().content_type().unwrap();
                assert_eq!(
                    (ct.ctype(), ct.subtype()),
                    ("multipart", Some("alternative")),
                    "{lang}"
                );
                assert_eq!(parsed.text_body_count(), 1);
                assert_eq!(parsed.html_body_count(), 1);
                let text = parsed.body_text(0).unwrap();
                let html = parsed.body_html(0).unwrap();
                assert!(text.contains("<script>alert(1)</script>"), "{text}");
                assert!(!html.contains("<script>"), "{lang}: {html}");
                assert!(
                    html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; co"),
                    "{lang}: {html}"
                );
                assert!(html.contains("SUP-1") && html.contains("SUP-2"), "{html}");
                assert!(html.contains(footer), "{lang}: no {footer:?} in {html}");
                assert!(html.trim_end().ends_with("</html>"), "{lang}: {html}");
                assert_eq!(
                    parsed.message_id(),
                    Some(m.message_id.as_str()),
                    "our Message-ID stays"
                );
            }
        }
    }

    #[test]
    fn a_templates_dir_overrides_the_html_and_a_broken_one_leaves_the_text() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let cfg = cfg();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("en")).unwrap();
        std::fs::write(
            dir.path().join("en/digest.html"),
            "<p>{{ open }} open, {{ title }}</p>",
        )
        .unwrap();
        let tpl = Templates::load(Some(dir.path())).unwrap();
        let mut t = desk::view_less_ticket(&cfg, now);
        t.number = 1;
        t.status = Status::Unassigned;
        let flow = Flow::new(now, jiff::tz::TimeZone::UTC, None);
        let m = desk::digest("lead@example.com", &[t.clone()], &cfg, &tpl, &flow, now);
        let parsed = MessageParser::default().parse(&m.head).unwrap();
        assert_eq!(
            parsed.body_html(0).unwrap(),
            "<p>1 open, Support digest 2026-11-23</p>"
        );
        // A template that fails at render time: the mail goes out as text.
        std::fs::write(dir.path().join("en/digest.html"), "{{ open.nope.deeper }}").unwrap();
        let tpl = Templates::load(Some(dir.path())).unwrap();
        let m = desk::digest("lead@example.com", &[t], &cfg, &tpl, &flow, now);
        let parsed = MessageParser::default().parse(&m.head).unwrap();
        assert!(parsed.body_text(0).unwrap().contains("Unassigned: 1"));
        let ct = parsed.root_part().content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("text", Some("plain")));
    }

    #[test]
    fn the_boundary_is_the_same_for_the_same_mail() {
        let a = alternative("t".into(), "<p>h</p>".into());
        let b = alternative("t".into(), "<p>h</p>".into());
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.write_part(&mut x).unwrap();
        b.write_part(&mut y).unwrap();
        assert_eq!(x, y);
    }
}
