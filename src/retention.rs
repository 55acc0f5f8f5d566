//! `policy.retention` (issue #10 item 6; docs/operations.md "Retention").
//!
//! A daily sweep, as a durable scheduler job: tickets closed (or `done`,
//! without `policy.confirm_close`) longer than `after` lose the raw bytes
//! of their messages — zeroed in place in the spool, the same way `forget`
//! erases, so every `SpoolRef` stays valid — and the mail the desk sent
//! about them (outbox heads and bodies). The message records stay, marked
//! `raw_erased`; with `metadata: anonymise` the ticket and message records
//! lose the contact, names, addresses, subject and excerpts, and keep
//! times and counts. Only expired tickets are touched, and a ticket done
//! once is skipped afterwards.
//!
//! The sweep scans every ticket, which no transaction may do, so it runs
//! before the job's own transaction (which takes the job and schedules the
//! next one); it is idempotent, so a crash between the two repeats it.

use crate::config::{Config, RetainMetadata};
use crate::schedule::Fired;
use crate::store::spool::{self, Located};
use crate::store::{
    Job, JobKind, MessageRecord, OutboxState, Status, Store, Ticket, Timestamp, Writes,
};
use serde::Serialize;
use std::collections::HashMap;

/// How often the sweep runs.
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The job's own transaction: takes effect after [`sweep`] ran; schedules
/// the next sweep a day later.
pub fn run_job(
    tx: &dyn Writes,
    _job: &Job,
    cfg: &Config,
    now: Timestamp,
) -> crate::store::Result<Fired> {
    if cfg.policy.retention.is_none() {
        return Ok(Fired::Skipped("policy.retention is not set"));
    }
    let next = now
        .checked_add(jiff::SignedDuration::from_secs(EVERY.as_secs() as i64))
        .unwrap_or(now);
    tx.add_job(next, JobKind::Retention, now)?;
    Ok(Fired::Sent(0))
}

/// One `Retention` job pending while `policy.retention` is set (the first
/// a minute after start, so a start is not slowed by a sweep).
pub async fn ensure_job(store: &Store, cfg: &Config) -> Result<(), String> {
    if cfg.policy.retention.is_none() {
        return Ok(());
    }
    let pending = store
        .jobs()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|j| j.kind == JobKind::Retention);
    if pending {
        return Ok(());
    }
    let now = Timestamp::now();
    let due = now
        .checked_add(jiff::SignedDuration::from_secs(60))
        .unwrap_or(now);
    store
        .commit(None, move |tx, _| tx.add_job(due, JobKind::Retention, now))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(due = %due, "retention sweep scheduled");
    Ok(())
}

/// When a ticket's data starts to age: closed, or done where `done` is
/// the end (no `confirm_close`).
pub fn ended(t: &Ticket, cfg: &Config) -> Option<Timestamp> {
    match t.status {
        Status::Closed => t.closed_at.or(t.ended_at),
        Status::Done if !cfg.policy.confirm_close => t.ended_at,
        _ => None,
    }
}

pub fn expired(t: &Ticket, cfg: &Config, now: Timestamp) -> bool {
    let Some(r) = &cfg.policy.retention else {
        return false;
    };
    let Some(end) = ended(t, cfg) else {
        return false;
    };
    end.checked_add(r.after.signed())
        .map(|limit| limit <= now)
        .unwrap_or(false)
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Swept {
    pub tickets: usize,
    pub messages: usize,
    pub outbox: usize,
    pub anonymised: usize,
}

/// Anonymised text fields: what replaces a subject.
pub const ANON_SUBJECT: &str = "(anonymised)";

fn anon_address(key: &[u8], a: &str) -> String {
    if a.ends_with("@invalid") || a.trim().is_empty() {
        a.to_string()
    } else {
        crate::erase::pseudonym_with(key, a).replace("forgotten-", "anon-")
    }
}

fn anon_list(key: &[u8], v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in v {
        let p = anon_address(key, a);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The ticket with who and what removed; times, counts, status, category,
/// priority, tags, assignee and SLA state kept (`stats` still counts it).
pub fn anonymise_ticket(key: &[u8], t: &Ticket) -> Ticket {
    let mut t = t.clone();
    t.contact = anon_address(key, &t.contact);
    t.contact_name = None;
    t.customer = t.customer.clone();
    t.subject = ANON_SUBJECT.into();
    t.description = String::new();
    t.last_excerpt = String::new();
    t.participants = anon_list(key, &t.participants);
    for f in &mut t.delivery_failures {
        f.recipients = anon_list(key, &f.recipients);
        f.reply = String::new();
    }
    if let Some(r) = &mut t.rating {
        r.comment = None;
    }
    t
}

pub fn anonymise_message(key: &[u8], m: &MessageRecord) -> MessageRecord {
    let mut m = m.clone();
    m.from = anon_address(key, &m.from);
    m.to = anon_list(key, &m.to);
    m.cc = anon_list(key, &m.cc);
    m.subject = String::new();
    m.excerpt = String::new();
    m
}

fn is_anonymised(t: &Ticket) -> bool {
    t.subject == ANON_SUBJECT && (t.contact.ends_with("@invalid") || t.contact.is_empty())
}

/// Erases what `policy.retention` says has expired at `now`. Blocking
/// (spool writes and `commit_blocking`): call from a blocking thread.
pub fn sweep(store: &Store, cfg: &Config, now: Timestamp) -> Result<Swept, crate::erase::Error> {
    let Some(r) = cfg.policy.retention.clone() else {
        return Ok(Swept::default());
    };
    let anonymise = r.metadata == RetainMetadata::Anonymise;
    let key = if anonymise {
        let path = cfg.data_dir.join(crate::workflow::links::SECRET_FILE);
        crate::erase::pseudonym(&cfg.data_dir, "x@x")?;
        std::fs::read(&path).map_err(|source| crate::erase::Error::Secret {
            path: path.display().to_string(),
            source,
        })?
    } else {
        Vec::new()
    };
    let expired_tickets = store.tickets_where(|t| expired(t, cfg, now))?;
    let mut out = Swept::default();
    if expired_tickets.is_empty() {
        return Ok(out);
    }
    let numbers: std::collections::HashSet<u64> =
        expired_tickets.iter().map(|t| t.number).collect();
    let mut outbox_of: HashMap<u64, Vec<u64>> = HashMap::new();
    // Raw messages a pending mail still sends from (a copy's body): kept
    // until it has gone, erased by a later sweep.
    let mut in_flight: std::collections::HashSet<(u32, u64)> = Default::default();
    for e in store.outbox_where(|e| {
        e.ticket.is_some_and(|n| numbers.contains(&n)) && (!e.head.is_empty() || e.body.is_some())
    })? {
        if e.state == OutboxState::Pending {
            if let Some((r, _)) = &e.body {
                in_flight.insert((r.file, r.offset));
            }
            continue;
        }
        if let Some(n) = e.ticket {
            outbox_of.entry(n).or_default().push(e.id);
        }
    }
    for t in expired_tickets {
        let entries = store.message_entries(t.number)?;
        let todo: Vec<(u32, MessageRecord)> = entries
            .into_iter()
            .filter(|(_, m)| m.raw_erased.is_none() || (anonymise && !m.subject.is_empty()))
            .filter(|(_, m)| !in_flight.contains(&(m.raw.file, m.raw.offset)))
            .collect();
        let outbox = outbox_of.remove(&t.number).unwrap_or_default();
        let anon_todo = anonymise && !is_anonymised(&t);
        if todo.is_empty() && outbox.is_empty() && !anon_todo {
            continue;
        }
        // Zero the bytes first: the records are then rewritten with the
        // new checks; a crash between leaves records a re-run fixes.
        let mut checks: HashMap<(u32, u64), u64> = HashMap::new();
        for (_, m) in &todo {
            if m.raw_erased.is_some() {
                continue;
            }
            let at = Located {
                file: m.raw.file,
                offset: m.raw.offset,
                len: m.raw.len,
            };
            let zeros = vec![0u8; usize::try_from(m.raw.len).unwrap_or(0)];
            let c = if store.raw_read_unchecked(&m.raw)? == zeros {
                spool::check_of(&zeros)
            } else {
                store.raw_overwrite(at, &zeros)?
            };
            checks.insert((m.raw.file, m.raw.offset), c);
        }
        let n = t.number;
        let seqs: Vec<u32> = todo.iter().map(|(s, _)| *s).collect();
        let key2 = key.clone();
        let (msgs, sent) = store.commit_blocking(None, move |tx, _| {
            use crate::store::View;
            let mut msgs = 0usize;
            for seq in &seqs {
                let Some(m) = tx.message(n, *seq)? else {
                    continue;
                };
                let mut new = m.clone();
                if let Some(c) = checks.get(&(m.raw.file, m.raw.offset)) {
                    new.raw.check = *c;
                    new.raw_erased = Some(now);
                }
                if anonymise {
                    new = anonymise_message(&key2, &new);
                }
                if new != m {
                    tx.put_message(n, *seq, &new)?;
                    msgs += 1;
                }
            }
            let mut sent = 0usize;
            for id in &outbox {
                let Some(e) = tx.outbox(*id)? else { continue };
                if e.state == OutboxState::Pending {
                    continue;
                }
                let mut new = e.clone();
                // The mail as sent is a raw message too: gone with the rest.
                new.head = Vec::new();
                new.body = None;
                if anonymise {
                    new.rcpt_to = anon_list(&key2, &new.rcpt_to);
                    new.last_reply = None;
                }
                tx.update_outbox(&e, &new)?;
                sent += 1;
            }
            if anonymise {
                if let Some(t) = tx.ticket(n)? {
                    let new = anonymise_ticket(&key2, &t);
                    if new != t {
                        tx.put_ticket(&new)?;
                    }
                }
            }
            Ok((msgs, sent))
        })?;
        out.tickets += 1;
        out.messages += msgs;
        out.outbox += sent;
        if anon_todo {
            out.anonymised += 1;
        }
    }
    if out.anonymised > 0 {
        // Old versions of the anonymised records stay in sled's segments
        // until the store is rewritten (at its next open).
        crate::store::rewrite::mark_pending(store.data_dir())?;
    }
    tracing::info!(
        tickets = out.tickets,
        messages = out.messages,
        outbox = out.outbox,
        anonymised = out.anonymised,
        metadata = if anonymise { "anonymise" } else { "keep" },
        after = %r.after,
        "retention swept"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_closed_or_final_done_tickets_past_the_limit_expire() {
        let mut cfg = Config::default();
        cfg.policy.retention = Some(crate::config::Retention {
            after: "1h".parse().unwrap(),
            metadata: RetainMetadata::Keep,
        });
        let now: Timestamp = "2026-11-23T12:00:00Z".parse().unwrap();
        let early: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let late: Timestamp = "2026-11-23T11:30:00Z".parse().unwrap();
        let t = |status, ended: Option<Timestamp>, closed: Option<Timestamp>| {
            let mut t: Ticket = serde_json::from_value(serde_json::json!({
                "number": 1, "status": "active", "assignee": null,
                "started_at": "2026-11-23T09:00:00Z", "ended_at": null,
                "subject": "s", "description": "d", "contact": "c@x.test",
                "contact_name": null, "customer": null, "notified": false,
                "reopened": false, "replies": 0, "last_direction": "in",
                "last_message_at": "2026-11-23T09:00:00Z", "follow_up_of": null,
                "followed_by": null, "related": [], "message_ids": [],
                "participants": [], "delivery_failures": [], "language": "en"
            }))
            .unwrap();
            t.status = status;
            t.ended_at = ended;
            t.closed_at = closed;
            t
        };
        assert!(expired(&t(Status::Done, Some(early), None), &cfg, now));
        assert!(!expired(&t(Status::Done, Some(late), None), &cfg, now));
        assert!(expired(
            &t(Status::Closed, Some(late), Some(early)),
            &cfg,
            now
        ));
        assert!(!expired(&t(Status::Active, Some(early), None), &cfg, now));
        cfg.policy.confirm_close = true;
        // With confirm_close, done waits for the customer: not the end.
        assert!(!expired(&t(Status::Done, Some(early), None), &cfg, now));
        cfg.policy.retention = None;
        assert!(!expired(
            &t(Status::Closed, Some(early), Some(early)),
            &cfg,
            now
        ));
    }

    #[test]
    fn anonymising_keeps_times_and_counts() {
        let key = b"k";
        let m: MessageRecord = serde_json::from_value(serde_json::json!({
            "message_id": "a@b", "internal_id": "a@b", "ticket": 1, "kind": "customer",
            "from": "mari@cust.test", "to": ["support@example.com"], "cc": [],
            "subject": "my secret", "date": null, "received_at": "2026-11-23T09:00:00Z",
            "excerpt": "text", "rule": "new", "content_hash": "h", "queue_id": null,
            "raw": {"file": 1, "offset": 12, "len": 5, "check": 1}, "problems": []
        }))
        .unwrap();
        let a = anonymise_message(key, &m);
        assert!(a.from.starts_with("anon-") && a.from.ends_with("@invalid"));
        assert_eq!(a.subject, "");
        assert_eq!(a.received_at, m.received_at);
        assert_eq!(anonymise_message(key, &a).from, a.from);
    }
}
