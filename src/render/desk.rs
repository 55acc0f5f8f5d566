//! PURE: the desk's own mail: the assignee's notice, "taken into work" to
//! the customer, refusals, reminders, reports and the digest. Every ticket
//! is shown to templates through one [`TicketView`], with signed one-click
//! `mailto:` links when a signer is at hand.

use super::charts::Flow;
use super::{common_headers, entry, generated_id, Templates};
use crate::config::Config;
use crate::ingest::decide::{token, LinkSigner};
use crate::store::{Direction, OutboxEntry, Status, Ticket, Timestamp};
use crate::workflow::ops::Notice;
use mail_builder::headers::address::Address;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::MessageBuilder;
use serde::Serialize;
use std::collections::BTreeMap;

/// Display names of statuses per language (SPEC §2: the Estonian desk's
/// TEGELEMATA / AKTIIVNE / VALMIS); the API and JSON keep the SPEC names.
pub fn status_name(lang: &str, s: Status) -> &'static str {
    match (lang, s) {
        ("et", Status::Unassigned) => "TEGELEMATA",
        ("et", Status::Active) => "AKTIIVNE",
        ("et", Status::Waiting) => "OOTEL",
        ("et", Status::Snoozed) => "EDASI LÜKATUD",
        ("et", Status::Done) => "VALMIS",
        ("et", Status::Closed) => "SULETUD",
        ("et", Status::Deleted) => "KUSTUTATUD",
        (_, Status::Unassigned) => "UNASSIGNED",
        (_, Status::Active) => "ACTIVE",
        (_, Status::Waiting) => "WAITING",
        (_, Status::Snoozed) => "SNOOZED",
        (_, Status::Done) => "DONE",
        (_, Status::Closed) => "CLOSED",
        (_, Status::Deleted) => "DELETED",
    }
}

/// "3d 4h", "2h 5m", "40s": how long ago, for people.
pub fn age(from: Timestamp, now: Timestamp) -> String {
    let s = now.duration_since(from).as_secs().max(0);
    let (d, h, m) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

/// `mailto:` link to a signed action address.
pub fn action_link(cfg: &Config, signer: &dyn LinkSigner, action: &str, n: u64) -> String {
    let support = cfg.support_address();
    let (local, domain) = support.split_once('@').unwrap_or((support.as_str(), ""));
    let sig = signer.sign(action, n);
    format!(
        "mailto:{local}+{action}-{n}-{sig}@{domain}?subject={action}%20{}",
        token(cfg, n)
    )
}

#[derive(Debug, Clone, Serialize)]
pub struct TicketView {
    pub number: u64,
    pub token: String,
    pub subject: String,
    pub contact: String,
    pub customer: Option<String>,
    pub assignee: Option<String>,
    pub status: Status,
    pub status_name: String,
    pub started: String,
    pub age: String,
    pub replies: u32,
    pub preview: String,
    pub reopened: bool,
    pub direction_arrow: &'static str,
    pub links: BTreeMap<&'static str, String>,
    pub category: Option<String>,
    pub priority: String,
    /// The second-line group while escalated.
    pub escalated: Option<String>,
    pub watchers: Vec<String>,
}

pub fn view(
    t: &Ticket,
    cfg: &Config,
    lang: &str,
    signer: Option<&dyn LinkSigner>,
    actions: &[&'static str],
    now: Timestamp,
) -> TicketView {
    let mut links = BTreeMap::new();
    if let Some(s) = signer {
        for a in actions {
            links.insert(*a, action_link(cfg, s, a, t.number));
        }
    }
    let preview: String = t.last_excerpt.chars().take(160).collect();
    TicketView {
        number: t.number,
        token: token(cfg, t.number),
        subject: t.subject.clone(),
        contact: t.contact.clone(),
        customer: t.customer.clone(),
        assignee: t.assignee.clone(),
        status: t.status,
        status_name: status_name(lang, t.status).to_string(),
        started: t.started_at.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        age: age(t.started_at, now),
        replies: t.replies,
        preview: if preview.is_empty() {
            t.description.chars().take(160).collect()
        } else {
            preview
        },
        reopened: t.reopened,
        direction_arrow: match t.last_direction {
            Direction::In => "↙",
            Direction::Out => "↗",
        },
        links,
        category: t.category.clone(),
        priority: t.priority.clone(),
        escalated: t.escalated.as_ref().map(|e| e.group.clone()),
        watchers: t.watchers.clone(),
    }
}

/// A plain-text mail from the support address.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mail(
    kind: &str,
    t: &Ticket,
    cfg: &Config,
    to: &str,
    subject: String,
    body: String,
    cause: &str,
    reply_to_ids: &[String],
    auto: &str,
    now: Timestamp,
) -> OutboxEntry {
    mail_to(
        kind,
        t,
        cfg,
        &[to.to_string()],
        subject,
        body,
        cause,
        reply_to_ids,
        auto,
        now,
    )
}

/// [`mail`] to several recipients at once, all in To.
#[allow(clippy::too_many_arguments)]
pub(super) fn mail_to(
    kind: &str,
    t: &Ticket,
    cfg: &Config,
    to: &[String],
    subject: String,
    body: String,
    cause: &str,
    reply_to_ids: &[String],
    auto: &str,
    now: Timestamp,
) -> OutboxEntry {
    mail_parts(
        kind,
        t,
        cfg,
        to,
        subject,
        (body, None),
        cause,
        reply_to_ids,
        auto,
        now,
    )
}

/// [`mail_to`] with an optional HTML alternative beside the text body.
#[allow(clippy::too_many_arguments)]
fn mail_parts(
    kind: &str,
    t: &Ticket,
    cfg: &Config,
    to: &[String],
    subject: String,
    (body, html): (String, Option<String>),
    cause: &str,
    reply_to_ids: &[String],
    auto: &str,
    now: Timestamp,
) -> OutboxEntry {
    let id = generated_id(cfg, t.number, kind, cause);
    let mut head = Vec::new();
    common_headers(&mut head, kind, t, cfg);
    // A person's answer (`#answer`) is no automatic mail.
    if !auto.is_empty() {
        super::put(&mut head, "Auto-Submitted", Raw::new(auto.to_string()));
    }
    let mut b = MessageBuilder::new()
        .from(Address::new_address(
            Some(cfg.support.name.clone()),
            cfg.support_address(),
        ))
        .to(match to {
            [one] => Address::new_address(None::<String>, one.clone()),
            many => Address::new_list(
                many.iter()
                    .map(|a| Address::new_address(None::<String>, a.clone()))
                    .collect(),
            ),
        })
        .subject(subject)
        .message_id(MessageId::new(id.clone()))
        .date(Date::new(now.as_second()));
    b = match html {
        Some(html) => b.body(super::html::alternative(body, html)),
        None => b.text_body(body),
    };
    if let Some(last) = reply_to_ids.last() {
        b = b
            .in_reply_to(MessageId::new(last.clone()))
            .references(MessageId::new_list(reply_to_ids.iter().map(String::as_str)));
    }
    head.extend_from_slice(&b.write_to_vec().unwrap_or_default());
    OutboxEntry {
        rcpt_to: to.to_vec(),
        message_id: id,
        head,
        ..entry(kind, t, cfg, now)
    }
}

pub(crate) fn render_or(
    tpl: &Templates,
    lang: &str,
    name: &str,
    ctx: minijinja::Value,
    fallback: &str,
) -> String {
    tpl.render(lang, name, ctx).unwrap_or_else(|e| {
        tracing::warn!(error = %e, template = name, "template failed; sending the plain fallback");
        fallback.to_string()
    })
}

/// The assignee's notice (taken/assigned, or reopened by the customer).
#[allow(clippy::too_many_arguments)]
pub fn notice(
    to: &str,
    notice: Notice,
    by: &str,
    t: &Ticket,
    similar: &[String],
    cause: &str,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let v = view(t, cfg, lang, signer, &["done", "release", "snooze"], now);
    let what = match notice {
        Notice::Assigned => "assigned to you",
        Notice::Reopened => "REOPENED",
    };
    let subject = format!("[{}] {what}: {}", v.token, t.subject);
    let body = render_or(
        tpl,
        lang,
        "notice.txt",
        minijinja::context! { t => v, notice => notice, by => by, to => to, similar => similar, support_address => cfg.support_address() },
        &format!("{} {what}\n", token(cfg, t.number)),
    );
    mail(
        "notice",
        t,
        cfg,
        to,
        subject,
        body,
        cause,
        &t.message_ids.iter().take(1).cloned().collect::<Vec<_>>(),
        "auto-generated",
        now,
    )
}

/// Tells the customer, once, that their question was taken into work.
pub fn taken(
    to: &str,
    t: &Ticket,
    cause: &str,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &t.language;
    let v = view(t, cfg, lang, None, &[], now);
    let subject = format!("Re: {} [{}]", t.subject, v.token);
    let body = render_or(
        tpl,
        lang,
        "taken.txt",
        minijinja::context! { t => v, name => t.contact_name, support_name => cfg.support.name },
        &format!("{} was taken into work.\n", token(cfg, t.number)),
    );
    mail(
        "status",
        t,
        cfg,
        to,
        subject,
        body,
        cause,
        &t.message_ids.iter().take(1).cloned().collect::<Vec<_>>(),
        "auto-replied",
        now,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn refusal(
    to: &str,
    why: &[String],
    subject: &str,
    in_reply_to: &str,
    t: &Ticket,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let body = render_or(
        tpl,
        lang,
        "refusal.txt",
        minijinja::context! { why => why, subject => subject, trust => cfg.commands.trust.join(", ") },
        &format!("Not carried out: {}\n", why.join("; ")),
    );
    mail(
        "refusal",
        t,
        cfg,
        to,
        format!("Not done: {subject}"),
        body,
        in_reply_to,
        &[in_reply_to.to_string()],
        "auto-replied",
        now,
    )
}

/// Tells the team leads that every agent permitted for a category is away
/// or full, so its tickets wait. One mail to all leads.
#[allow(clippy::too_many_arguments)]
pub fn capacity(
    to: &[String],
    category: &str,
    passed_over: &[String],
    waiting: usize,
    t: &Ticket,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let v = view(t, cfg, lang, None, &[], now);
    let body = render_or(
        tpl,
        lang,
        "capacity.txt",
        minijinja::context! { t => v, category => category, passed_over => passed_over, waiting => waiting },
        &format!("Every agent for {category} is full; {waiting} tickets wait.\n"),
    );
    mail_to(
        "capacity",
        t,
        cfg,
        to,
        format!(
            "[{}] {category}: every agent is full, tickets wait",
            v.token
        ),
        body,
        &format!("capacity:{}", t.number),
        &[],
        "auto-generated",
        now,
    )
}

/// Tells a ticket's watchers what changed.
#[allow(clippy::too_many_arguments)]
pub fn watchers(
    to: &[String],
    what: &str,
    by: &str,
    t: &Ticket,
    cause: &str,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let v = view(t, cfg, lang, None, &[], now);
    let body = render_or(
        tpl,
        lang,
        "watch.txt",
        minijinja::context! { t => v, what => what, by => by, support_address => cfg.support_address() },
        &format!("{}: {what}\n", token(cfg, t.number)),
    );
    mail_to(
        "watch",
        t,
        cfg,
        to,
        format!("[{}] {what}: {}", v.token, t.subject),
        body,
        cause,
        &t.message_ids.iter().take(1).cloned().collect::<Vec<_>>(),
        "auto-generated",
        now,
    )
}

/// Tells a second-line group's notify list that a ticket was escalated
/// to it, with the contact's and customer's other tickets.
#[allow(clippy::too_many_arguments)]
pub fn escalated(
    to: &[String],
    group: &str,
    by: &str,
    t: &Ticket,
    similar: &[String],
    cause: &str,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let v = view(t, cfg, lang, signer, &["take"], now);
    let first_line = t.escalated.as_ref().and_then(|e| e.first_line.clone());
    let body = render_or(
        tpl,
        lang,
        "escalated.txt",
        minijinja::context! { t => v, group => group, by => by, first_line => first_line, similar => similar, support_address => cfg.support_address() },
        &format!("{} was escalated to {group}\n", token(cfg, t.number)),
    );
    mail_to(
        "escalated",
        t,
        cfg,
        to,
        format!("[{}] escalated to {group}: {}", v.token, t.subject),
        body,
        &format!("{cause}:escalated:{group}"),
        &t.message_ids.iter().take(1).cloned().collect::<Vec<_>>(),
        "auto-generated",
        now,
    )
}

/// A canned answer (`#answer NAME`) to the customer, from the support
/// address, in the thread of their newest mail, with the token in the
/// subject, in the ticket's language.
#[allow(clippy::too_many_arguments)]
pub fn answer(
    to: &str,
    name: &str,
    agent: &str,
    t: &Ticket,
    cause: &str,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &t.language;
    let v = view(t, cfg, lang, None, &[], now);
    let agent_name = cfg
        .agent(agent)
        .and_then(|a| a.name.clone())
        .unwrap_or_else(|| agent.to_string());
    let body = tpl
        .render_answer(
            lang,
            name,
            minijinja::context! { t => v, token => v.token, name => t.contact_name, agent => agent, agent_name => agent_name, support_name => cfg.support.name, subject => t.subject },
        )
        .unwrap_or_else(|e| {
            // Checked when the command was obeyed; only a template that
            // fails at render time gets here.
            tracing::warn!(error = %e, answer = name, "answer failed to render");
            format!("Re: {}\n", t.subject)
        });
    let mut thread: Vec<String> = t.message_ids.iter().take(1).cloned().collect();
    if let Some(last) = &t.last_customer_message {
        if !thread.contains(last) {
            thread.push(last.clone());
        }
    }
    let subject = if t.subject.is_empty() {
        format!("Re: [{}]", v.token)
    } else {
        format!("Re: {} [{}]", t.subject, v.token)
    };
    mail(
        "answer",
        t,
        cfg,
        to,
        subject,
        body,
        &format!("{cause}:answer:{name}"),
        &thread,
        "",
        now,
    )
}

pub fn reminder(
    to: &str,
    t: &Ticket,
    job_id: u64,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let v = view(t, cfg, lang, signer, &["done", "release", "snooze"], now);
    let subject = format!("[{}] Reminder: {}", v.token, t.subject);
    let body = render_or(
        tpl,
        lang,
        "reminder.txt",
        minijinja::context! { t => v },
        &format!("Reminder: {}\n", token(cfg, t.number)),
    );
    mail(
        "reminder",
        t,
        cfg,
        to,
        subject,
        body,
        &format!("job-{job_id}"),
        &t.message_ids.iter().take(1).cloned().collect::<Vec<_>>(),
        "auto-generated",
        now,
    )
}

/// A pseudo-ticket for desk-wide mail (reports, digest, a refusal with no
/// ticket), so they carry the same headers without belonging to a ticket.
pub fn view_less_ticket(cfg: &Config, now: Timestamp) -> Ticket {
    Ticket {
        status: Status::Active,
        ..Ticket::new(0, now, &cfg.support.language)
    }
}

#[derive(Serialize)]
struct AgentBlock {
    name: String,
    tickets: Vec<TicketView>,
}

/// The report an agent asked for: their active tickets (or every agent's),
/// then the unassigned ones with take/spam links. Deleted tickets never show.
#[allow(clippy::too_many_arguments)]
pub fn report(
    to: &str,
    all: bool,
    category: Option<&str>,
    in_reply_to: &str,
    asked_subject: &str,
    tickets: &[Ticket],
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    flow: &Flow,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let filtered: Vec<Ticket>;
    let tickets = match category {
        Some(c) => {
            filtered = tickets
                .iter()
                .filter(|t| {
                    t.category
                        .as_deref()
                        .is_some_and(|x| x.eq_ignore_ascii_case(c))
                })
                .cloned()
                .collect();
            &filtered[..]
        }
        None => tickets,
    };
    let agents: Vec<String> = if all {
        cfg.team
            .agents
            .iter()
            .map(|a| a.email.to_ascii_lowercase())
            .collect()
    } else {
        vec![to.to_ascii_lowercase()]
    };
    let blocks: Vec<AgentBlock> = agents
        .iter()
        .map(|a| AgentBlock {
            name: a.clone(),
            tickets: tickets
                .iter()
                .filter(|t| t.status == Status::Active && t.assignee.as_deref() == Some(a.as_str()))
                .map(|t| view(t, cfg, lang, signer, &["done", "release"], now))
                .collect(),
        })
        .collect();
    let unassigned: Vec<TicketView> = tickets
        .iter()
        .filter(|t| t.status == Status::Unassigned)
        .map(|t| view(t, cfg, lang, signer, &["take", "spam"], now))
        .collect();
    let body = render_or(
        tpl,
        lang,
        "report.txt",
        minijinja::context! { agents => blocks, unassigned => unassigned, category => category },
        "The report could not be rendered; see the postdesk log.\n",
    );
    let subject = match category {
        Some(c) => format!("Report: category {c}"),
        None if all => "Report: every agent".to_string(),
        None => "Report: your tickets".to_string(),
    };
    let d = view_less_ticket(cfg, now);
    let subject = if asked_subject.trim().is_empty() {
        subject.to_string()
    } else {
        format!("{subject} (Re: {})", asked_subject.trim())
    };
    // The HTML table: the open tickets the report is about (the asker's
    // own, or everyone's), whatever their open status, and the unassigned.
    let me = to.to_ascii_lowercase();
    let open: Vec<&Ticket> = tickets.iter().filter(|t| t.status.is_open()).collect();
    let rows = open
        .iter()
        .filter(|t| {
            all || t.status == Status::Unassigned || t.assignee.as_deref() == Some(me.as_str())
        })
        .map(|t| view(t, cfg, lang, signer, row_actions(t.status), now))
        .collect();
    let html = super::html::render(
        tpl,
        lang,
        "report.html",
        super::html::Input {
            title: &subject,
            category,
            open: &open,
            rows,
            roster: &roster(cfg),
            flow,
            now,
        },
    );
    mail_parts(
        "report",
        &d,
        cfg,
        &[to.to_string()],
        subject,
        (body, html),
        in_reply_to,
        &[in_reply_to.to_string()],
        "auto-replied",
        now,
    )
}

/// The one-click links a ticket's row offers in the HTML table.
fn row_actions(s: Status) -> &'static [&'static str] {
    match s {
        Status::Unassigned => &["take", "spam"],
        Status::Active => &["done", "release"],
        _ => &[],
    }
}

fn roster(cfg: &Config) -> Vec<String> {
    cfg.team
        .agents
        .iter()
        .map(|a| a.email.to_ascii_lowercase())
        .collect()
}

#[derive(Serialize)]
struct Count {
    agent: String,
    count: usize,
}

#[derive(Serialize)]
struct CustomerCount {
    customer: String,
    count: usize,
}

/// The daily digest for the team leads.
pub fn digest(
    to: &str,
    tickets: &[Ticket],
    cfg: &Config,
    tpl: &Templates,
    flow: &Flow,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let v = |t: &Ticket| view(t, cfg, lang, None, &[], now);
    let open: Vec<&Ticket> = tickets.iter().filter(|t| t.status.is_open()).collect();
    let unassigned: Vec<TicketView> = open
        .iter()
        .filter(|t| t.status == Status::Unassigned)
        .map(|t| v(t))
        .collect();
    let reopened: Vec<TicketView> = open.iter().filter(|t| t.reopened).map(|t| v(t)).collect();
    let escalated: Vec<TicketView> = open
        .iter()
        .filter(|t| t.escalated.is_some())
        .map(|t| v(t))
        .collect();
    let overdue: Vec<TicketView> = open
        .iter()
        .filter(|t| {
            t.status == Status::Active
                && t.started_at
                    .checked_add(cfg.policy.reminder_after.signed())
                    .is_ok_and(|due| due <= now)
        })
        .map(|t| v(t))
        .collect();
    let workload: Vec<Count> = cfg
        .team
        .agents
        .iter()
        .map(|a| Count {
            agent: a.email.clone(),
            count: open
                .iter()
                .filter(|t| {
                    t.status == Status::Active
                        && t.assignee.as_deref() == Some(a.email.to_ascii_lowercase().as_str())
                })
                .count(),
        })
        .collect();
    let mut per_customer: BTreeMap<String, usize> = BTreeMap::new();
    for t in &open {
        *per_customer
            .entry(t.customer.clone().unwrap_or_else(|| "(none)".into()))
            .or_default() += 1;
    }
    let customers: Vec<CustomerCount> = per_customer
        .into_iter()
        .map(|(customer, count)| CustomerCount { customer, count })
        .collect();
    let date = now.strftime("%Y-%m-%d").to_string();
    let body = render_or(
        tpl,
        lang,
        "digest.txt",
        minijinja::context! { date => date, unassigned => unassigned, reopened => reopened, escalated => escalated, overdue => overdue, workload => workload, customers => customers },
        "The digest could not be rendered; see the postdesk log.\n",
    );
    let d = view_less_ticket(cfg, now);
    let subject = format!("Support digest {date}");
    let html = super::html::render(
        tpl,
        lang,
        "digest.html",
        super::html::Input {
            title: &subject,
            category: None,
            rows: open.iter().map(|t| v(t)).collect(),
            open: &open,
            roster: &roster(cfg),
            flow,
            now,
        },
    );
    mail_parts(
        "digest",
        &d,
        cfg,
        &[to.to_string()],
        subject,
        (body, html),
        &format!("digest-{date}-{to}"),
        &[],
        "auto-generated",
        now,
    )
}
