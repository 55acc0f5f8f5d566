//! The JSON shapes of SPEC §7 (`ticket list --json`, `ticket show --json`)
//! and of `explain`, built from the store. Field names are the contract.

use crate::config::Config;
use crate::deliver;
use crate::ingest::decide::token;
use crate::ingest::Envelope;
use crate::render::Templates;
use crate::store::{
    Direction, MessageKind, MessageRecord, OutboxEntry, Status, Store, Ticket, Timestamp,
};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct TicketJson {
    pub token: String,
    pub number: u64,
    pub status: Status,
    pub subject: String,
    pub description: String,
    pub contact: String,
    pub customer: Option<String>,
    pub assignee: Option<String>,
    pub reopened: bool,
    pub notified: bool,
    pub replies: u32,
    pub last_direction: Direction,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub follow_up_of: Option<String>,
    /// The follow-up a later mail on this done or closed ticket started.
    pub followed_by: Option<String>,
    pub related: Vec<String>,
    pub message_ids: Vec<String>,
    pub delivery_failures: Vec<crate::store::DeliveryFailure>,
    /// Pending reminder and wake-up times.
    pub reminders: Vec<Timestamp>,
    /// Desk policies (SPEC §9 names).
    pub category: Option<String>,
    pub priority: String,
    pub tags: Vec<String>,
    pub watchers: Vec<String>,
    pub group: Option<String>,
    /// While with a second line: the group, and who had it before.
    pub escalated: Option<EscalatedJson>,
    /// The token of the ticket this one was merged into.
    pub merged_into: Option<String>,
    /// Service levels (SPEC §9 `sla`).
    pub sla: SlaJson,
    pub work_started_at: Option<Timestamp>,
    pub reopen_count: u32,
    /// Times resolved (`done`).
    pub resolutions: u32,
    pub closed_at: Option<Timestamp>,
    pub rating: Option<RatingJson>,
}

/// SPEC §9: policy id, the due times, the first response, breached.
#[derive(Debug, Clone, Serialize)]
pub struct SlaJson {
    pub policy: Option<String>,
    pub first_response_due: Option<Timestamp>,
    pub resolution_due: Option<Timestamp>,
    pub first_response_at: Option<Timestamp>,
    pub breached: bool,
    /// Which deadlines were missed (`first_response`, `resolution`).
    pub breaches: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RatingJson {
    pub value: String,
    pub comment: Option<String>,
    pub at: Timestamp,
    /// Which resolution (`resolutions` at the time) was rated.
    pub resolution: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct EscalatedJson {
    pub group: String,
    pub first_line: Option<String>,
    pub first_group: Option<String>,
    pub at: Timestamp,
}

/// One of the contact's or customer's other tickets (`ticket show`).
#[derive(Debug, Clone, Serialize)]
pub struct SimilarJson {
    pub token: String,
    pub status: Status,
    pub subject: String,
    pub assignee: Option<String>,
    pub started_at: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageJson {
    pub message_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub date: Option<String>,
    pub kind: MessageKind,
    pub excerpt: String,
    pub rule: Option<String>,
    pub received_at: Option<Timestamp>,
    /// Set when `policy.retention` erased the raw bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_erased: Option<Timestamp>,
}

impl From<MessageRecord> for MessageJson {
    fn from(m: MessageRecord) -> Self {
        MessageJson {
            message_id: m.internal_id,
            from: m.from,
            to: m.to,
            cc: m.cc,
            date: m.date,
            kind: m.kind,
            excerpt: m.excerpt,
            rule: Some(m.rule),
            received_at: Some(m.received_at),
            raw_erased: m.raw_erased,
        }
    }
}

/// Generated mail shows as a message of kind `generated`.
impl From<OutboxEntry> for MessageJson {
    fn from(e: OutboxEntry) -> Self {
        MessageJson {
            message_id: e.message_id,
            from: e.mail_from,
            to: e.rcpt_to,
            cc: Vec::new(),
            date: Some(e.created_at.to_string()),
            kind: MessageKind::Generated,
            excerpt: format!("{} ({:?})", e.kind, e.state).to_lowercase(),
            rule: None,
            received_at: Some(e.created_at),
            raw_erased: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ShowJson {
    #[serde(flatten)]
    pub ticket: TicketJson,
    pub messages: Vec<MessageJson>,
    /// The contact's and customer's other open and recent tickets, newest
    /// first (from the similar-ticket index).
    pub similar: Vec<SimilarJson>,
    /// Response metrics as `stats` counts them (docs/operations.md).
    pub figures: crate::stats::Figures,
}

pub fn ticket_json(t: &Ticket, cfg: &Config) -> TicketJson {
    TicketJson {
        token: token(cfg, t.number),
        number: t.number,
        status: t.status,
        subject: t.subject.clone(),
        description: t.description.clone(),
        contact: t.contact.clone(),
        customer: t.customer.clone(),
        assignee: t.assignee.clone(),
        reopened: t.reopened,
        notified: t.notified,
        replies: t.replies,
        last_direction: t.last_direction,
        started_at: t.started_at,
        ended_at: t.ended_at,
        follow_up_of: t.follow_up_of.map(|n| token(cfg, n)),
        followed_by: t.followed_by.map(|n| token(cfg, n)),
        related: t.related.iter().map(|n| token(cfg, *n)).collect(),
        message_ids: t.message_ids.clone(),
        delivery_failures: t.delivery_failures.clone(),
        reminders: t.scheduled.iter().map(|r| r.due).collect(),
        category: t.category.clone(),
        priority: t.priority.clone(),
        tags: t.tags.clone(),
        watchers: t.watchers.clone(),
        group: t.group.clone(),
        escalated: t.escalated.as_ref().map(|e| EscalatedJson {
            group: e.group.clone(),
            first_line: e.first_line.clone(),
            first_group: e.first_group.clone(),
            at: e.at,
        }),
        merged_into: t.merged_into.map(|n| token(cfg, n)),
        sla: SlaJson {
            policy: t.sla.policy.clone(),
            first_response_due: t.sla.first_response_due,
            resolution_due: t.sla.resolution_due,
            first_response_at: t.sla.first_response_at,
            breached: t.sla.breached,
            breaches: t
                .sla
                .breaches
                .iter()
                .map(|(k, _)| k.as_str().to_string())
                .collect(),
        },
        work_started_at: t.work_started_at,
        reopen_count: t.reopen_count,
        resolutions: t.resolutions,
        closed_at: t.closed_at,
        rating: t.rating.as_ref().map(|r| RatingJson {
            value: r.value.as_str().to_string(),
            comment: r.comment.clone(),
            at: r.at,
            resolution: r.resolution,
        }),
    }
}

pub fn ticket_list(
    store: &Store,
    cfg: &Config,
    status: Option<&str>,
    assignee: Option<&str>,
) -> Result<Vec<TicketJson>, String> {
    let want = match status {
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            format!("unknown status {s:?} (unassigned, active, waiting, snoozed, done, closed, deleted)")
        })?),
        None => None,
    };
    // Filtered while streaming: `ticket list --status active` on a large
    // store holds the active tickets, not all of them.
    let tickets = store
        .tickets_where(|t| {
            want.is_none_or(|w| t.status == w)
                && assignee.is_none_or(|a| {
                    t.assignee.as_deref().is_some_and(|x| {
                        x.eq_ignore_ascii_case(a) || x.split('@').next() == Some(a)
                    })
                })
        })
        .map_err(|e| e.to_string())?;
    Ok(tickets.iter().map(|t| ticket_json(t, cfg)).collect())
}

/// `SUP-12`, `[SUP-12]`, `sup-12` or `12` → 12.
pub fn parse_token(s: &str, cfg: &Config) -> Option<u64> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let num = match s.split_once('-') {
        Some((p, n)) if p.eq_ignore_ascii_case(&cfg.support.token_prefix) => n,
        Some(_) => return None,
        None => s,
    };
    num.trim().parse().ok()
}

pub fn ticket_show(store: &Store, cfg: &Config, tok: &str) -> Result<ShowJson, String> {
    let n = parse_token(tok, cfg).ok_or_else(|| {
        format!(
            "{tok:?} is not a ticket token (e.g. {}-12)",
            cfg.support.token_prefix
        )
    })?;
    let t = store
        .ticket(n)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no ticket {}", token(cfg, n)))?;
    let mut messages: Vec<MessageJson> = store
        .messages(n)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(MessageJson::from)
        .collect();
    // Generated mail of the ticket, from the outbox.
    for e in store
        .outbox_where(|e| e.ticket == Some(n))
        .map_err(|e| e.to_string())?
    {
        messages.push(MessageJson::from(e));
    }
    messages.sort_by_key(|m| m.received_at);
    let similar = store
        .with_read_view(|v| crate::ingest::decide::similar_tickets(v, &t))
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|o| SimilarJson {
            token: token(cfg, o.number),
            status: o.status,
            subject: o.subject,
            assignee: o.assignee,
            started_at: o.started_at,
        })
        .collect();
    Ok(ShowJson {
        ticket: ticket_json(&t, cfg),
        messages,
        similar,
        figures: crate::stats::figures(&t, &cfg.sla, &cfg.loaded_calendars),
    })
}

/// `explain`'s report: what would happen to this mail, nothing written.
pub fn explain(
    store: Option<&Store>,
    raw: &[u8],
    env: &Envelope,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> Result<serde_json::Value, String> {
    let (p, d, mails) =
        deliver::explain(store, raw, env, cfg, tpl, now).map_err(|e| e.to_string())?;
    let outbound: Vec<_> = mails
        .iter()
        .map(|m| {
            serde_json::json!({
                "kind": m.kind,
                "to": m.rcpt_to,
                "message_id": m.message_id,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "message_id": p.message_id,
        "message_id_derived": p.message_id_derived,
        "from": d.classification.sender,
        "subject": p.subject,
        "problems": p.problems,
        "classification": d.classification,
        "customer": d.customer,
        "rule": d.thread.rule.as_str(),
        "why": d.thread.why,
        "related": d.thread.related.iter().map(|n| token(cfg, *n)).collect::<Vec<_>>(),
        "ignored_tokens": d.thread.ignored_tokens,
        "action": d.action.as_str(),
        "ticket": d.ticket.as_ref().map(|t| token(cfg, t.number)).or_else(|| d.thread.ticket.map(|n| token(cfg, n))),
        "status_before": d.status_before,
        "status_after": d.ticket.as_ref().map(|t| t.status),
        "kind": d.kind,
        "outbound": outbound,
        "no_ack_reason": d.no_ack_reason,
        "warnings": d.warnings,
        "routing": d.routing,
        "routing_trace": d.routing.as_ref().map(crate::policy::render_trace),
        "owner": d.owner,
        "category": d.ticket.as_ref().and_then(|t| t.category.clone()),
        "priority": d.ticket.as_ref().map(|t| t.priority.clone()),
        "tags": d.ticket.as_ref().map(|t| t.tags.clone()).unwrap_or_default(),
        "assignee": d.ticket.as_ref().and_then(|t| t.assignee.clone()),
        "sla": d.ticket.as_ref().map(|t| serde_json::json!({
            "policy": t.sla.policy,
            "first_response_due": t.sla.first_response_due,
            "resolution_due": t.sla.resolution_due,
            "first_response_at": t.sla.first_response_at,
            "breaches": t.sla.breaches.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        })),
    }))
}

/// `stats`: streams every ticket through the pure aggregator
/// (`crate::stats`), so a large store is never held in memory. No store
/// (nothing ever delivered): the same report with no rows.
pub fn stats(
    store: Option<&Store>,
    cfg: &Config,
    by: &str,
    since: Option<&str>,
    now: Timestamp,
) -> Result<serde_json::Value, String> {
    let group = crate::stats::GroupBy::parse(by)
        .ok_or_else(|| format!("--by {by:?}: agent, customer or category"))?;
    let window = match since {
        Some(s) => s
            .parse::<crate::config::Duration>()
            .map_err(|e| format!("--since: {e}"))?,
        None => crate::config::Duration::from_secs(30 * 86400),
    };
    let from = now
        .checked_sub(window.signed())
        .map_err(|e| format!("--since: {e}"))?;
    let mut agg = crate::stats::Aggregator::new(group, from, &cfg.sla, &cfg.loaded_calendars);
    if let Some(store) = store {
        store
            .for_each_ticket(|t| agg.add(&t))
            .map_err(|e| e.to_string())?;
    }
    agg.finish(&window.to_string())
        .to_json()
        .map_err(|e| e.to_string())
}
