//! PURE: the customer's mail of resolve → confirm → close: the status
//! notices (waiting, done, closed), the thanks for a rating, and the
//! refusal of a link that could not act. All in the ticket's language and
//! in the customer's thread (their newest mail), token in the subject.

use super::desk::{mail, render_or, view};
use super::{generated_id, Templates};
use crate::config::Config;
use crate::ingest::decide::{token, Intent, LinkSigner};
use crate::store::{OutboxEntry, Ticket, Timestamp};
use crate::workflow::close::StatusNotice;
use crate::workflow::links::customer_mailto;
use std::collections::BTreeMap;

/// The Message-ID of the thanks for the rating of resolution `resolution`:
/// fixed by ticket and resolution, so a reply to it (In-Reply-To) is known
/// for a comment on that rating without a lookup.
pub fn rated_message_id(cfg: &Config, n: u64, resolution: u32) -> String {
    generated_id(cfg, n, "rated", &format!("rating:{resolution}"))
}

/// Renders one of this module's intents; `None` for any other.
pub fn render_intent(
    i: &Intent,
    t: &Ticket,
    cause: &str,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> Option<OutboxEntry> {
    Some(match i {
        Intent::Status {
            to,
            notice,
            resolution,
        } => status(to, *notice, resolution, t, cause, cfg, tpl, signer, now),
        Intent::Rated { to } => rated(to, t, cfg, tpl, now),
        Intent::LinkRefused {
            to,
            why,
            in_reply_to,
            subject,
        } => link_refused(to, why, in_reply_to, subject, t, cfg, tpl, now),
        _ => return None,
    })
}

/// The customer's thread: the ticket's first mail and their newest.
fn thread(t: &Ticket) -> Vec<String> {
    let mut ids: Vec<String> = t.message_ids.iter().take(1).cloned().collect();
    if let Some(last) = &t.last_customer_message {
        if !ids.contains(last) {
            ids.push(last.clone());
        }
    }
    ids
}

fn re_subject(t: &Ticket, cfg: &Config) -> String {
    let tok = token(cfg, t.number);
    if t.subject.is_empty() {
        format!("Re: [{tok}]")
    } else {
        format!("Re: {} [{tok}]", t.subject)
    }
}

/// The customer's one-click links for the ticket's current resolution.
fn links(
    t: &Ticket,
    cfg: &Config,
    signer: Option<&dyn LinkSigner>,
    confirm_close: bool,
) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let Some(s) = signer else { return out };
    let tok = token(cfg, t.number);
    let r = t.resolutions;
    let mut actions = vec![
        ("rate_good", "rate-good", "Rating: good"),
        ("rate_neutral", "rate-neutral", "Rating: neutral"),
        ("rate_bad", "rate-bad", "Rating: bad"),
    ];
    if confirm_close {
        actions.push(("confirm", "confirm", "Confirmed: solved"));
        actions.push(("reopen", "reopen", "Not solved: reopen"));
    }
    for (key, action, words) in actions {
        let sig = s.sign_resolution(action, t.number, r);
        out.insert(
            key,
            customer_mailto(cfg, &sig, action, t.number, r, &format!("{words} [{tok}]")),
        );
    }
    out
}

/// A status notice: `waiting` asks for the customer's answer, `done`
/// carries the resolution and the links, `closed` says how to go on.
#[allow(clippy::too_many_arguments)]
pub fn status(
    to: &str,
    notice: StatusNotice,
    resolution: &str,
    t: &Ticket,
    cause: &str,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &t.language;
    let v = view(t, cfg, lang, None, &[], now);
    let links = match notice {
        StatusNotice::Done => links(t, cfg, signer, cfg.policy.confirm_close),
        _ => BTreeMap::new(),
    };
    let name = format!("status_{}.txt", notice.as_str());
    let kind = format!("status-{}", notice.as_str());
    let body = render_or(
        tpl,
        lang,
        &name,
        minijinja::context! {
            t => v,
            name => t.contact_name,
            support_name => cfg.support.name,
            resolution => resolution,
            links => links,
            confirm_close => cfg.policy.confirm_close,
            autoclose_after => cfg.policy.autoclose_after.to_string(),
        },
        &format!("{}: {}\n", token(cfg, t.number), notice.as_str()),
    );
    // A resolution and a close happen once per resolution number: the id
    // follows it, so the same event rendered twice is one mail.
    let cause = match notice {
        StatusNotice::Waiting => cause.to_string(),
        StatusNotice::Done | StatusNotice::Closed => format!("r{}", t.resolutions),
    };
    mail(
        &kind,
        t,
        cfg,
        to,
        re_subject(t, cfg),
        body,
        &cause,
        &thread(t),
        "auto-replied",
        now,
    )
}

/// Thanks for a rating; a reply to it becomes the rating's comment.
pub fn rated(to: &str, t: &Ticket, cfg: &Config, tpl: &Templates, now: Timestamp) -> OutboxEntry {
    let lang = &t.language;
    let v = view(t, cfg, lang, None, &[], now);
    let (value, resolution) = t
        .rating
        .as_ref()
        .map(|r| (r.value.as_str(), r.resolution))
        .unwrap_or(("", t.resolutions));
    let body = render_or(
        tpl,
        lang,
        "rated.txt",
        minijinja::context! { t => v, name => t.contact_name, support_name => cfg.support.name, value => value },
        &format!("Thank you for your rating of {}.\n", token(cfg, t.number)),
    );
    let out = mail(
        "rated",
        t,
        cfg,
        to,
        re_subject(t, cfg),
        body,
        &format!("rating:{resolution}"),
        &thread(t),
        "auto-replied",
        now,
    );
    // `mail` derives the same id; kept explicit so the two cannot drift.
    debug_assert_eq!(out.message_id, rated_message_id(cfg, t.number, resolution));
    out
}

/// Why a customer's link did nothing, in reply to the mail it made.
#[allow(clippy::too_many_arguments)]
pub fn link_refused(
    to: &str,
    why: &[String],
    in_reply_to: &str,
    subject: &str,
    t: &Ticket,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &t.language;
    let body = render_or(
        tpl,
        lang,
        "link_refused.txt",
        minijinja::context! { why => why, token => token(cfg, t.number), support_name => cfg.support.name },
        &format!("Nothing was changed: {}\n", why.join("; ")),
    );
    mail(
        "refusal",
        t,
        cfg,
        to,
        format!("Not done: {subject}"),
        body,
        &format!("link:{in_reply_to}"),
        &[in_reply_to.to_string()],
        "auto-replied",
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Rating, RatingValue};

    struct Fixed;
    impl LinkSigner for Fixed {
        fn sign(&self, action: &str, ticket: u64) -> String {
            format!("sig{}x{ticket}", action.len())
        }
        fn verify(&self, _: &str, _: u64, _: &str) -> bool {
            false
        }
    }

    fn setup(extra: &str) -> (Config, Ticket, Timestamp) {
        let cfg = Config::parse(
            &format!("support: {{address: support@example.com, name: Desk}}\n{extra}"),
            "t.yaml",
        )
        .unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut t = super::super::desk::view_less_ticket(&cfg, now);
        t.number = 7;
        t.subject = "Printer".into();
        t.contact = "mari@cust.test".into();
        t.resolutions = 2;
        t.message_ids = vec!["first@cust.test".into()];
        t.last_customer_message = Some("last@cust.test".into());
        (cfg, t, now)
    }

    fn text(e: &OutboxEntry) -> String {
        let m = mail_parser::MessageParser::default()
            .parse(&e.head)
            .unwrap();
        m.body_text(0).unwrap().into_owned()
    }

    #[test]
    fn done_notice_in_both_languages_with_the_links_of_its_resolution() {
        let (cfg, mut t, now) = setup("policy: {confirm_close: true, autoclose_after: 3d}\n");
        let tpl = Templates::builtin();
        for (lang, words) in [("en", "has been resolved"), ("et", "on lahendatud")] {
            t.language = lang.into();
            let e = status(
                "mari@cust.test",
                StatusNotice::Done,
                "Driver updated.",
                &t,
                "cause",
                &cfg,
                &tpl,
                Some(&Fixed),
                now,
            );
            let body = text(&e);
            assert!(
                body.contains(words) && body.contains("Driver updated."),
                "{body}"
            );
            for a in ["confirm", "reopen", "rate-good", "rate-neutral", "rate-bad"] {
                assert!(body.contains(&format!("support+{a}-7-2-")), "{a}: {body}");
            }
            assert!(body.contains("3d"), "{body}");
            assert_eq!(e.kind, "status-done");
            let head = String::from_utf8_lossy(&e.head);
            assert!(head.contains("In-Reply-To: <last@cust.test>"), "{head}");
            assert!(head.contains("[SUP-7]"), "{head}");
        }
        // Without a signer (explain), no links and no broken lines.
        t.language = "en".into();
        let e = status(
            "m@x",
            StatusNotice::Done,
            "",
            &t,
            "c",
            &cfg,
            &tpl,
            None,
            now,
        );
        assert!(!text(&e).contains("mailto:"), "{}", text(&e));
    }

    #[test]
    fn waiting_closed_rated_and_refusal_render() {
        let (cfg, mut t, now) = setup("");
        let tpl = Templates::builtin();
        let w = status(
            "m@x",
            StatusNotice::Waiting,
            "",
            &t,
            "c",
            &cfg,
            &tpl,
            Some(&Fixed),
            now,
        );
        assert!(text(&w).contains("waiting for your answer"));
        assert!(!text(&w).contains("mailto:"));
        let c = status(
            "m@x",
            StatusNotice::Closed,
            "",
            &t,
            "c",
            &cfg,
            &tpl,
            None,
            now,
        );
        assert!(text(&c).contains("is now closed"));
        t.rating = Some(Rating {
            value: RatingValue::Neutral,
            at: now,
            comment: None,
            resolution: 2,
        });
        let r = rated("m@x", &t, &cfg, &tpl, now);
        assert!(text(&r).contains("neutral"), "{}", text(&r));
        assert_eq!(r.message_id, rated_message_id(&cfg, 7, 2));
        assert_ne!(r.message_id, rated_message_id(&cfg, 7, 1));
        let f = link_refused(
            "m@x",
            &["the ticket is already closed".into()],
            "click@x",
            "click",
            &t,
            &cfg,
            &tpl,
            now,
        );
        assert!(text(&f).contains("already closed"));
        assert!(String::from_utf8_lossy(&f.head).contains("In-Reply-To: <click@x>"));
    }
}
