//! PURE: generated mail. Templates are loaded once (built-in `en`/`et`, or a
//! `templates_dir` that overrides them file by file); after that, rendering
//! is a function of the decision, the parsed mail, config and `now`, so it
//! can run inside the store transaction and in `explain`.
//!
//! A team copy is our header block in front of the customer's body bytes,
//! reused unchanged from the spool (attachments and all), with the
//! customer's MIME headers carried over.

use crate::config::Config;
pub mod charts;
pub mod close;
pub mod desk;
pub mod html;
pub mod sla;

use crate::ingest::decide::{token, Decision, Intent, LinkSigner};
use crate::ingest::thread::tokens;
use crate::ingest::Parsed;
use crate::store::{OutboxEntry, OutboxState, Ticket, Timestamp};
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::Header;
use mail_builder::MessageBuilder;
use sha2::{Digest, Sha256};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("template {name}: {why}")]
    Template { name: String, why: String },
    #[error("templates: cannot read {path}: {why}")]
    Read { path: String, why: String },
}

/// Every template we render, and the built-in text of each.
const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "en",
        "ack.txt",
        include_str!("../../config/templates/en/ack.txt"),
    ),
    (
        "et",
        "ack.txt",
        include_str!("../../config/templates/et/ack.txt"),
    ),
    (
        "en",
        "notice.txt",
        include_str!("../../config/templates/en/notice.txt"),
    ),
    (
        "et",
        "notice.txt",
        include_str!("../../config/templates/et/notice.txt"),
    ),
    (
        "en",
        "taken.txt",
        include_str!("../../config/templates/en/taken.txt"),
    ),
    (
        "et",
        "taken.txt",
        include_str!("../../config/templates/et/taken.txt"),
    ),
    (
        "en",
        "refusal.txt",
        include_str!("../../config/templates/en/refusal.txt"),
    ),
    (
        "et",
        "refusal.txt",
        include_str!("../../config/templates/et/refusal.txt"),
    ),
    (
        "en",
        "reminder.txt",
        include_str!("../../config/templates/en/reminder.txt"),
    ),
    (
        "et",
        "reminder.txt",
        include_str!("../../config/templates/et/reminder.txt"),
    ),
    (
        "en",
        "report.txt",
        include_str!("../../config/templates/en/report.txt"),
    ),
    (
        "et",
        "report.txt",
        include_str!("../../config/templates/et/report.txt"),
    ),
    (
        "en",
        "digest.txt",
        include_str!("../../config/templates/en/digest.txt"),
    ),
    (
        "et",
        "digest.txt",
        include_str!("../../config/templates/et/digest.txt"),
    ),
    (
        "en",
        "_desk.html",
        include_str!("../../config/templates/en/_desk.html"),
    ),
    (
        "et",
        "_desk.html",
        include_str!("../../config/templates/et/_desk.html"),
    ),
    (
        "en",
        "report.html",
        include_str!("../../config/templates/en/report.html"),
    ),
    (
        "et",
        "report.html",
        include_str!("../../config/templates/et/report.html"),
    ),
    (
        "en",
        "digest.html",
        include_str!("../../config/templates/en/digest.html"),
    ),
    (
        "et",
        "digest.html",
        include_str!("../../config/templates/et/digest.html"),
    ),
    (
        "en",
        "capacity.txt",
        include_str!("../../config/templates/en/capacity.txt"),
    ),
    (
        "et",
        "capacity.txt",
        include_str!("../../config/templates/et/capacity.txt"),
    ),
    (
        "en",
        "watch.txt",
        include_str!("../../config/templates/en/watch.txt"),
    ),
    (
        "et",
        "watch.txt",
        include_str!("../../config/templates/et/watch.txt"),
    ),
    (
        "en",
        "escalated.txt",
        include_str!("../../config/templates/en/escalated.txt"),
    ),
    (
        "et",
        "escalated.txt",
        include_str!("../../config/templates/et/escalated.txt"),
    ),
    (
        "en",
        "sla_warn.txt",
        include_str!("../../config/templates/en/sla_warn.txt"),
    ),
    (
        "et",
        "sla_warn.txt",
        include_str!("../../config/templates/et/sla_warn.txt"),
    ),
    (
        "en",
        "sla_breach.txt",
        include_str!("../../config/templates/en/sla_breach.txt"),
    ),
    (
        "et",
        "sla_breach.txt",
        include_str!("../../config/templates/et/sla_breach.txt"),
    ),
    (
        "en",
        "status_waiting.txt",
        include_str!("../../config/templates/en/status_waiting.txt"),
    ),
    (
        "et",
        "status_waiting.txt",
        include_str!("../../config/templates/et/status_waiting.txt"),
    ),
    (
        "en",
        "status_done.txt",
        include_str!("../../config/templates/en/status_done.txt"),
    ),
    (
        "et",
        "status_done.txt",
        include_str!("../../config/templates/et/status_done.txt"),
    ),
    (
        "en",
        "status_closed.txt",
        include_str!("../../config/templates/en/status_closed.txt"),
    ),
    (
        "et",
        "status_closed.txt",
        include_str!("../../config/templates/et/status_closed.txt"),
    ),
    (
        "en",
        "rated.txt",
        include_str!("../../config/templates/en/rated.txt"),
    ),
    (
        "et",
        "rated.txt",
        include_str!("../../config/templates/et/rated.txt"),
    ),
    (
        "en",
        "link_refused.txt",
        include_str!("../../config/templates/en/link_refused.txt"),
    ),
    (
        "et",
        "link_refused.txt",
        include_str!("../../config/templates/et/link_refused.txt"),
    ),
];

/// The canned answers shipped as examples (`#answer NAME`).
const BUILTIN_ANSWERS: &[(&str, &str, &str)] = &[
    (
        "en",
        "password-reset",
        include_str!("../../config/answers/en/password-reset.txt"),
    ),
    (
        "et",
        "password-reset",
        include_str!("../../config/answers/et/password-reset.txt"),
    ),
    (
        "en",
        "need-more-info",
        include_str!("../../config/answers/en/need-more-info.txt"),
    ),
    (
        "et",
        "need-more-info",
        include_str!("../../config/answers/et/need-more-info.txt"),
    ),
];

#[derive(Clone)]
pub struct Templates {
    env: minijinja::Environment<'static>,
    languages: Vec<String>,
    /// Names of the canned answers, sorted: what `#answer` accepts.
    answers: Vec<String>,
}

impl Templates {
    pub fn builtin() -> Templates {
        let mut env = minijinja::Environment::new();
        let mut languages = Vec::new();
        for (lang, name, text) in BUILTIN {
            // Built-in templates are tested; a failure here is a build bug
            // and would show in every test, so it is skipped, not fatal.
            let _ = env.add_template_owned(key(lang, name), text.to_string());
            if !languages.iter().any(|l| l == lang) {
                languages.push(lang.to_string());
            }
        }
        let mut answers = Vec::new();
        for (lang, name, text) in BUILTIN_ANSWERS {
            let _ = env.add_template_owned(answer_key(lang, name), text.to_string());
            if !answers.iter().any(|a| a == name) {
                answers.push(name.to_string());
            }
        }
        answers.sort();
        Templates {
            env,
            languages,
            answers,
        }
    }

    /// The templates and answers a config asks for: `templates_dir` and
    /// `answers_dir` laid over the built-in sets.
    pub fn for_config(cfg: &Config) -> Result<Templates, Error> {
        let mut t = Templates::load(cfg.templates_dir.as_deref())?;
        if let Some(dir) = cfg.answers_dir.as_deref() {
            t.load_answers(dir)?;
        }
        Ok(t)
    }

    /// Every `<dir>/<lang>/<name>.txt` becomes answer `name` in `lang`
    /// (a new answer, or one replacing a built-in example).
    pub fn load_answers(&mut self, dir: &Path) -> Result<(), Error> {
        let read_dir = |d: &Path| {
            std::fs::read_dir(d).map_err(|e| Error::Read {
                path: d.display().to_string(),
                why: e.to_string(),
            })
        };
        for lang_dir in read_dir(dir)?.flatten() {
            if !lang_dir.path().is_dir() {
                continue;
            }
            let lang = lang_dir.file_name().to_string_lossy().into_owned();
            for f in read_dir(&lang_dir.path())?.flatten() {
                let path = f.path();
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".txt"))
                    .map(str::to_ascii_lowercase)
                else {
                    continue;
                };
                if !crate::workflow::command::is_tag(&name) {
                    continue;
                }
                let text = std::fs::read_to_string(&path).map_err(|e| Error::Read {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
                self.env
                    .add_template_owned(answer_key(&lang, &name), text)
                    .map_err(|e| Error::Template {
                        name: path.display().to_string(),
                        why: e.to_string(),
                    })?;
                if !self.answers.contains(&name) {
                    self.answers.push(name);
                }
            }
        }
        self.answers.sort();
        Ok(())
    }

    /// The canned answers `#answer` knows, sorted.
    pub fn answers(&self) -> &[String] {
        &self.answers
    }

    /// Renders answer `name` in `lang`, falling back to English.
    pub fn render_answer(
        &self,
        lang: &str,
        name: &str,
        ctx: minijinja::Value,
    ) -> Result<String, Error> {
        let tpl = match self.env.get_template(&answer_key(lang, name)) {
            Ok(t) => t,
            Err(_) => self
                .env
                .get_template(&answer_key("en", name))
                .map_err(|e| Error::Template {
                    name: format!("answer {name}"),
                    why: e.to_string(),
                })?,
        };
        tpl.render(ctx).map_err(|e| Error::Template {
            name: format!("answer {lang}/{name}"),
            why: e.to_string(),
        })
    }

    /// The built-in set with every `<dir>/<lang>/<name>` file that exists
    /// laid over it; a template that does not compile is an error.
    pub fn load(dir: Option<&Path>) -> Result<Templates, Error> {
        let mut t = Templates::builtin();
        let Some(dir) = dir else { return Ok(t) };
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Read {
            path: dir.display().to_string(),
            why: e.to_string(),
        })?;
        for lang_dir in entries.flatten() {
            if !lang_dir.path().is_dir() {
                continue;
            }
            let lang = lang_dir.file_name().to_string_lossy().into_owned();
            for (_, name, _) in BUILTIN.iter().filter(|(l, _, _)| *l == "en") {
                let path = lang_dir.path().join(name);
                if !path.exists() {
                    continue;
                }
                let text = std::fs::read_to_string(&path).map_err(|e| Error::Read {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
                t.env
                    .add_template_owned(key(&lang, name), text)
                    .map_err(|e| Error::Template {
                        name: path.display().to_string(),
                        why: e.to_string(),
                    })?;
                if !t.languages.contains(&lang) {
                    t.languages.push(lang.clone());
                }
            }
        }
        Ok(t)
    }

    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Renders `name` in `lang`, falling back to English when the language
    /// has no such template.
    pub fn render(&self, lang: &str, name: &str, ctx: minijinja::Value) -> Result<String, Error> {
        let k = key(lang, name);
        let tpl = match self.env.get_template(&k) {
            Ok(t) => t,
            Err(_) => self
                .env
                .get_template(&key("en", name))
                .map_err(|e| Error::Template {
                    name: name.into(),
                    why: e.to_string(),
                })?,
        };
        tpl.render(ctx).map_err(|e| Error::Template {
            name: k,
            why: e.to_string(),
        })
    }
}

fn key(lang: &str, name: &str) -> String {
    format!("{lang}/{name}")
}

fn answer_key(lang: &str, name: &str) -> String {
    format!("answers/{lang}/{name}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Our Message-ID for a generated mail: under the support domain, embedding
/// the token, derived from what caused it (so a re-run renders the same id).
pub fn generated_id(cfg: &Config, ticket: u64, kind: &str, cause: &str) -> String {
    let h = Sha256::digest(format!("{kind}\0{cause}").as_bytes());
    format!(
        "{}.{kind}.{}@{}",
        token(cfg, ticket),
        &hex(&h)[..16],
        cfg.support_domain()
    )
}

/// Outlook's Thread-Index for an answer: the parent's plus five bytes, or a
/// fresh 22-byte header (FILETIME + 16 bytes) when the parent had none.
pub fn child_thread_index(parent: Option<&[u8]>, seed: &str, now: Timestamp) -> Vec<u8> {
    let h = Sha256::digest(seed.as_bytes());
    match parent {
        Some(p) if p.len() >= 22 => {
            let mut v = p.to_vec();
            v.extend_from_slice(&h[..5]);
            v
        }
        _ => {
            // FILETIME: 100 ns ticks since 1601-01-01; Outlook keeps the top
            // six bytes.
            let ticks = (now.as_second() + 11_644_473_600) as u64 * 10_000_000;
            let mut v = ticks.to_be_bytes()[..6].to_vec();
            v.extend_from_slice(&h[..16]);
            v
        }
    }
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub(crate) fn put(out: &mut Vec<u8>, name: &str, value: impl Header) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // Writing into a Vec cannot fail.
    let _ = value.write_header(&mut *out, name.len() + 2);
}

fn date_of(p: &Parsed, now: Timestamp) -> Date {
    let t = p
        .date
        .as_deref()
        .and_then(|d| d.parse::<Timestamp>().ok())
        .unwrap_or(now);
    Date::new(t.as_second())
}

fn subject_with_token(subject: &str, cfg: &Config, n: u64) -> String {
    if tokens(subject, &cfg.support.token_prefix).contains(&n) {
        subject.to_string()
    } else if subject.trim().is_empty() {
        format!("[{}]", token(cfg, n))
    } else {
        format!("{} [{}]", subject.trim(), token(cfg, n))
    }
}

/// Renders every intent of a decision into outbox entries (ids unset),
/// without action links.
pub fn render_all(
    d: &Decision,
    p: &Parsed,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> Vec<OutboxEntry> {
    render_all_with(d, p, cfg, tpl, now, None)
}

/// [`render_all`] with a signer for the one-click action links.
pub fn render_all_with(
    d: &Decision,
    p: &Parsed,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
    signer: Option<&dyn LinkSigner>,
) -> Vec<OutboxEntry> {
    let placeholder;
    let t = match d.ticket.as_ref() {
        Some(t) => t,
        None => {
            // A refusal with no ticket to hang it on still goes out.
            placeholder = desk::view_less_ticket(cfg, now);
            &placeholder
        }
    };
    let by = d
        .notice_by
        .as_deref()
        .unwrap_or(d.classification.sender.as_str());
    d.intents
        .iter()
        .filter(|i| {
            d.ticket.is_some() || matches!(i, Intent::Refusal { .. } | Intent::LinkRefused { .. })
        })
        .map(|i| match i {
            Intent::Ack { to } => ack(to, t, d, p, cfg, tpl, now),
            Intent::Copy { to } => copy(to, t, d, p, cfg, now),
            Intent::Notice { to, notice } => desk::notice(
                to,
                *notice,
                by,
                t,
                &d.similar,
                &format!("{}:{to}", d.internal_id),
                cfg,
                tpl,
                signer,
                now,
            ),
            Intent::Taken { to } => desk::taken(to, t, &d.internal_id, cfg, tpl, now),
            Intent::Refusal { to, why } => {
                desk::refusal(to, why, &p.subject, &p.message_id, t, cfg, tpl, now)
            }
            Intent::Capacity {
                to,
                category,
                agents,
                waiting,
            } => desk::capacity(to, category, agents, *waiting, t, cfg, tpl, now),
            // Who made the change, not what the desk's own notice names.
            Intent::Watchers { to, what } => desk::watchers(
                to,
                what,
                &d.classification.sender,
                t,
                &format!("{}:watch", d.internal_id),
                cfg,
                tpl,
                now,
            ),
            Intent::Escalated { to, group } => desk::escalated(
                to,
                group,
                &d.classification.sender,
                t,
                &d.similar,
                &d.internal_id,
                cfg,
                tpl,
                signer,
                now,
            ),
            Intent::Answer { to, name } => desk::answer(
                to,
                name,
                &d.classification.sender,
                t,
                &d.internal_id,
                cfg,
                tpl,
                now,
            ),
            Intent::Status {
                to,
                notice,
                resolution,
            } => close::status(
                to,
                *notice,
                resolution,
                t,
                &d.internal_id,
                cfg,
                tpl,
                signer,
                now,
            ),
            Intent::Rated { to } => close::rated(to, t, cfg, tpl, now),
            Intent::LinkRefused {
                to,
                why,
                in_reply_to,
                subject,
            } => close::link_refused(to, why, in_reply_to, subject, t, cfg, tpl, now),
        })
        .collect()
}

/// An outbox row for this ticket with everything but the mail itself.
pub(crate) fn entry(kind: &str, t: &Ticket, cfg: &Config, now: Timestamp) -> OutboxEntry {
    OutboxEntry {
        id: 0,
        ticket: Some(t.number),
        kind: kind.to_string(),
        mail_from: cfg.support_address(),
        rcpt_to: Vec::new(),
        message_id: String::new(),
        head: Vec::new(),
        body: None,
        created_at: now,
        next_attempt_at: now,
        attempts: 0,
        last_reply: None,
        state: OutboxState::Pending,
        sent_at: None,
        dropped: None,
        retried_at: None,
    }
}

/// A body slice of the triggering message's raw bytes, from `offset`; the
/// spool reference is filled in by `deliver::apply`, which knows it.
fn raw_body_from(offset: usize) -> Option<(crate::store::SpoolRef, u64)> {
    Some((
        crate::store::SpoolRef {
            file: 0,
            offset: 0,
            len: 0,
            check: 0,
        },
        offset as u64,
    ))
}

pub(crate) fn common_headers(out: &mut Vec<u8>, kind: &str, t: &Ticket, cfg: &Config) {
    put(out, "X-Postdesk-Kind", Raw::new(kind.to_string()));
    put(out, "X-Postdesk-Ticket", Raw::new(token(cfg, t.number)));
    put(out, "X-Postdesk-Loop", Raw::new(cfg.support_address()));
}

#[allow(clippy::too_many_arguments)]
fn ack(
    to: &str,
    t: &Ticket,
    d: &Decision,
    p: &Parsed,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> OutboxEntry {
    let tok = token(cfg, t.number);
    let id = generated_id(cfg, t.number, "ack", &d.internal_id);
    let ctx = minijinja::context! {
        token => tok,
        subject => t.subject,
        name => t.contact_name,
        support_name => cfg.support.name,
        support_address => cfg.support_address(),
    };
    let body = tpl.render(&t.language, "ack.txt", ctx).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ack template failed; sending the plain fallback");
        format!("Your message was received as ticket {tok}.\n")
    });
    let subject = if t.subject.is_empty() {
        format!("Re: [{tok}]")
    } else {
        format!("Re: {} [{tok}]", t.subject)
    };
    let mut refs: Vec<String> = p.references.clone();
    refs.push(p.message_id.clone());
    let mut head = Vec::new();
    common_headers(&mut head, "ack", t, cfg);
    put(&mut head, "Auto-Submitted", Raw::new("auto-replied"));
    let ti = child_thread_index(p.thread_index.as_deref(), &id, now);
    put(&mut head, "Thread-Index", Raw::new(b64(&ti)));
    put(
        &mut head,
        "Thread-Topic",
        Text::new(p.thread_topic.clone().unwrap_or_else(|| t.subject.clone())),
    );
    let msg = MessageBuilder::new()
        .from(Address::new_address(
            Some(cfg.support.name.clone()),
            cfg.support_address(),
        ))
        .to(Address::new_address(t.contact_name.clone(), to.to_string()))
        .subject(subject)
        .message_id(MessageId::new(id.clone()))
        .in_reply_to(MessageId::new(p.message_id.clone()))
        .references(MessageId::new_list(refs.iter().map(String::as_str)))
        .date(Date::new(now.as_second()))
        .text_body(body)
        .write_to_vec()
        .unwrap_or_default();
    head.extend_from_slice(&msg);
    OutboxEntry {
        rcpt_to: vec![to.to_string()],
        message_id: id,
        head,
        ..entry("ack", t, cfg, now)
    }
}

fn copy(
    to: &[String],
    t: &Ticket,
    d: &Decision,
    p: &Parsed,
    cfg: &Config,
    now: Timestamp,
) -> OutboxEntry {
    let id = generated_id(cfg, t.number, "copy", &d.internal_id);
    let sender = &d.classification.sender;
    let shown = p
        .from
        .as_ref()
        .and_then(|a| a.name.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| sender.clone());
    let mut head = Vec::new();
    common_headers(&mut head, "copy", t, cfg);
    // Keeps the agents' out-of-office answers away from the list.
    put(&mut head, "Auto-Submitted", Raw::new("auto-generated"));
    put(
        &mut head,
        "X-Postdesk-Original-From",
        Raw::new(sender.clone()),
    );
    // DMARC: the customer's address never goes in From.
    put(
        &mut head,
        "From",
        Address::new_address(
            Some(format!("{shown} via {}", cfg.support.name)),
            cfg.support_address(),
        ),
    );
    put(
        &mut head,
        "To",
        Address::new_address(Some(cfg.support.name.clone()), cfg.support_address()),
    );
    let mut reply_to = Vec::new();
    if !sender.is_empty() && cfg.support_tag(sender).is_none() {
        reply_to.push(Address::new_address(
            p.from.as_ref().and_then(|a| a.name.clone()),
            sender.clone(),
        ));
    }
    reply_to.push(Address::new_address(
        Some(cfg.support.name.clone()),
        cfg.support_address(),
    ));
    put(&mut head, "Reply-To", Address::new_list(reply_to));
    put(
        &mut head,
        "Subject",
        Text::new(subject_with_token(&p.subject, cfg, t.number)),
    );
    put(&mut head, "Date", date_of(p, now));
    put(&mut head, "Message-ID", MessageId::new(id.clone()));
    let mut refs: Vec<String> = p.references.clone();
    refs.push(p.message_id.clone());
    put(
        &mut head,
        "References",
        MessageId::new_list(refs.iter().map(String::as_str)),
    );
    if let Some(first) = p.in_reply_to.first() {
        put(&mut head, "In-Reply-To", MessageId::new(first.clone()));
    }
    // The customer's own Thread-Index: an Outlook agent's reply to the copy
    // stays in the conversation postdesk knows.
    if let Some(ti) = &p.thread_index {
        put(&mut head, "Thread-Index", Raw::new(b64(ti)));
    }
    if let Some(topic) = &p.thread_topic {
        put(&mut head, "Thread-Topic", Text::new(topic.clone()));
    }
    for (name, value) in &p.content_headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    OutboxEntry {
        rcpt_to: to.to_vec(),
        message_id: id,
        head,
        body: raw_body_from(p.body_offset),
        ..entry("copy", t, cfg, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_render_in_both_languages() {
        let t = Templates::builtin();
        for lang in ["en", "et"] {
            let s = t
                .render(
                    lang,
                    "ack.txt",
                    minijinja::context! { token => "SUP-3", subject => "Printer", name => "Mari", support_name => "Support" },
                )
                .unwrap();
            assert!(
                s.contains("SUP-3") && s.contains("Printer") && s.contains("Mari"),
                "{s}"
            );
        }
        // An unknown language falls back to English.
        let s = t
            .render("fi", "ack.txt", minijinja::context! { token => "SUP-3" })
            .unwrap();
        assert!(s.contains("we have received your message"), "{s}");
    }

    #[test]
    fn the_digest_and_a_category_report_show_category_priority_and_escalation() {
        let cfg = Config::parse(
            "support: {address: support@example.com}\nteam:\n  agents: [{email: alice@example.com}]\n  leads: [lead@example.com]\ngroups: [{name: l2, members: [alice@example.com]}]\ncategories: [{id: billing}, {id: tech}]\n",
            "t.yaml",
        )
        .unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut a = desk::view_less_ticket(&cfg, now);
        a.number = 1;
        a.status = crate::store::Status::Unassigned;
        a.subject = "Invoice".into();
        a.category = Some("billing".into());
        a.priority = "high".into();
        a.escalated = Some(crate::store::Escalation {
            group: "l2".into(),
            first_line: None,
            first_group: None,
            at: now,
        });
        let mut b = a.clone();
        b.number = 2;
        b.subject = "VPN".into();
        b.category = Some("tech".into());
        b.escalated = None;
        let tpl = Templates::builtin();
        let flow = charts::Flow::new(now, jiff::tz::TimeZone::UTC, None);
        let dg = desk::digest(
            "lead@example.com",
            &[a.clone(), b.clone()],
            &cfg,
            &tpl,
            &flow,
            now,
        );
        let text = String::from_utf8_lossy(&dg.head).into_owned();
        assert!(text.contains("SUP-1  Invoice  [billing, high]"), "{text}");
        assert!(text.contains("Escalated: 1"), "{text}");
        assert!(text.contains("(to l2, nobody yet)"), "{text}");
        let rep = desk::report(
            "alice@example.com",
            true,
            Some("billing"),
            "r@x",
            "",
            &[a, b],
            &cfg,
            &tpl,
            None,
            &flow,
            now,
        );
        let text = String::from_utf8_lossy(&rep.head).into_owned();
        assert!(text.contains("Category billing only."), "{text}");
        assert!(text.contains("ESCALATED to l2"), "{text}");
        assert!(!text.contains("VPN"), "{text}");
    }

    #[test]
    fn thread_index_child_appends_five_bytes() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let parent = vec![7u8; 27];
        let c = child_thread_index(Some(&parent), "x", now);
        assert_eq!(c.len(), 32);
        assert_eq!(&c[..27], &parent[..]);
        assert_eq!(child_thread_index(None, "x", now).len(), 22);
    }

    #[test]
    fn generated_ids_embed_token_and_domain() {
        let cfg = Config::default();
        let id = generated_id(&cfg, 12, "ack", "abc@x");
        assert!(id.starts_with("SUP-12.ack."), "{id}");
        assert!(id.ends_with("@localhost"), "{id}");
        assert_eq!(id, generated_id(&cfg, 12, "ack", "abc@x"));
        assert_ne!(id, generated_id(&cfg, 12, "ack", "abd@x"));
    }
}
