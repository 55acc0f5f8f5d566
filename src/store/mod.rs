//! The store boundary. Everything persistent goes through here.
//!
//! Two faces:
//! - [`View`]: the point lookups the pure core (`ingest::decide`) needs. A
//!   backend implements it inside its transaction (sled: `Tx`), so a decision
//!   always sees the state it is committed against. Point lookups only, no
//!   scans: that is what a sled transaction offers, and what a SQL backend
//!   can serve by key with row locks.
//! - [`Store`]: commit a job atomically (one delivered message = one
//!   transaction holding the raw message reference, the ticket change, the
//!   indexes and the outbox rows) and return only after it is on stable
//!   storage; plus the read side for the CLI and the outbox sender.
//!
//! Must not: decide anything. Decisions come from `ingest`/`workflow`.

mod backend;
pub mod dump;
pub mod keys;
pub mod mem;
pub mod model;
pub mod pg;
pub mod policy_keys;
pub mod records;
pub mod rewrite;
mod sled_store;
pub mod spool;

pub use backend::{Store, Tx};
pub use model::*;
pub use sled_store::{CommitStats, Quiet, SledStore, SledTx, FAULT_FILE, STALL_FILE};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store: {0}")]
    Sled(String),
    #[error("store: I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store: corrupt record at {key}: {why}")]
    Corrupt { key: String, why: String },
    /// A concurrent writer changed what we read; the transaction re-runs.
    #[error("store: transaction conflict")]
    Conflict,
    #[error("store: the committer has stopped")]
    Closed,
    #[error("store: data directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("store: postgres: {0}")]
    Pg(String),
    #[error("{0}")]
    Other(String),
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Sled(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Point lookups the decision core needs; implemented by every backend inside
/// its transaction, and by in-memory fakes in tests.
pub trait View {
    fn ticket(&self, number: u64) -> Result<Option<Ticket>>;
    /// A thread key (a Message-ID of a ticket's message, or an id one of them
    /// referenced) → the ticket holding it.
    fn ticket_by_key(&self, message_id: &str) -> Result<Option<u64>>;
    /// An Outlook conversation key (hex of the first 22 Thread-Index bytes).
    fn ticket_by_conversation(&self, key: &str) -> Result<Option<u64>>;
    /// The stored variants of a Message-ID (for duplicate detection).
    fn stored_ids(&self, message_id: &str) -> Result<Option<StoredIds>>;
    /// Customer learned for an address (the last ticket's, or `#customer`).
    fn learned_customer(&self, address: &str) -> Result<Option<String>>;
    /// Times of acknowledgements sent to an address, newest last (bounded).
    fn ack_times(&self, address: &str) -> Result<Vec<Timestamp>>;
    /// The number the next new ticket gets (does not reserve it).
    fn next_ticket_number(&self) -> Result<u64>;
    /// Tickets the agent holds per open status (zero when never counted).
    fn agent_load(&self, agent: &str) -> Result<AgentLoad>;
    /// The agent's `#away`, if any (it may have run out: see `Away::covers`).
    fn agent_away(&self, agent: &str) -> Result<Option<Away>>;
    /// Distribution state of a category (`""`: the desk-wide pool).
    fn dist_state(&self, category: &str) -> Result<DistState>;
    /// Tickets of a contact address or a customer id, oldest first, at
    /// most [`SIMILAR_KEEP`] (see [`track_load`], which keeps them).
    fn similar_index(&self, by: SimilarBy, key: &str) -> Result<Vec<u64>>;
    /// A stored message record (`#merge` moves them).
    fn message(&self, ticket: u64, seq: u32) -> Result<Option<MessageRecord>>;
}

/// A store with nothing in it: `explain` before any data exists.
pub struct EmptyView;

impl View for EmptyView {
    fn ticket(&self, _: u64) -> Result<Option<Ticket>> {
        Ok(None)
    }
    fn ticket_by_key(&self, _: &str) -> Result<Option<u64>> {
        Ok(None)
    }
    fn ticket_by_conversation(&self, _: &str) -> Result<Option<u64>> {
        Ok(None)
    }
    fn stored_ids(&self, _: &str) -> Result<Option<StoredIds>> {
        Ok(None)
    }
    fn learned_customer(&self, _: &str) -> Result<Option<String>> {
        Ok(None)
    }
    fn ack_times(&self, _: &str) -> Result<Vec<Timestamp>> {
        Ok(Vec::new())
    }
    fn next_ticket_number(&self) -> Result<u64> {
        Ok(1)
    }
    fn agent_load(&self, _: &str) -> Result<AgentLoad> {
        Ok(AgentLoad::default())
    }
    fn agent_away(&self, _: &str) -> Result<Option<Away>> {
        Ok(None)
    }
    fn dist_state(&self, _: &str) -> Result<DistState> {
        Ok(DistState::default())
    }
    fn similar_index(&self, _: SimilarBy, _: &str) -> Result<Vec<u64>> {
        Ok(Vec::new())
    }
    fn message(&self, _: u64, _: u32) -> Result<Option<MessageRecord>> {
        Ok(None)
    }
}

/// The writes a delivery makes, inside the same transaction as its reads.
/// Implemented by every backend's transaction and by [`mem::MemStore`].
pub trait Writes: View {
    /// Takes the next ticket number (the one `next_ticket_number` showed).
    fn take_ticket_number(&self) -> Result<u64>;
    fn put_ticket(&self, t: &Ticket) -> Result<()>;
    fn put_message(&self, ticket: u64, seq: u32, m: &MessageRecord) -> Result<()>;
    fn put_apart(&self, m: &MessageRecord) -> Result<u64>;
    fn index_thread_key(&self, message_id: &str, ticket: u64) -> Result<()>;
    fn index_conversation(&self, key: &str, ticket: u64) -> Result<()>;
    fn put_stored_ids(&self, message_id: &str, ids: &StoredIds) -> Result<()>;
    fn put_ack_times(&self, address: &str, times: &[Timestamp]) -> Result<()>;
    fn learn_customer(&self, address: &str, customer: &str) -> Result<()>;
    /// Adds an outbox entry, assigning its id, and queues it.
    fn add_outbox(&self, e: OutboxEntry) -> Result<u64>;
    /// Schedules a job, assigning its id.
    fn add_job(&self, due: Timestamp, kind: JobKind, now: Timestamp) -> Result<ScheduledRef>;
    /// Removes a job; `Ok(None)` when it is already gone (fired or removed).
    fn take_job(&self, r: ScheduledRef) -> Result<Option<Job>>;
    /// Raw write of an agent's load counter. Only [`track_load`] (which
    /// every backend's `put_ticket` runs) and the rebuild call it.
    fn put_agent_load(&self, agent: &str, load: &AgentLoad) -> Result<()>;
    /// `None` removes the record (`#back`).
    fn put_agent_away(&self, agent: &str, away: Option<&Away>) -> Result<()>;
    fn put_dist_state(&self, category: &str, state: &DistState) -> Result<()>;
    /// Raw write of a similar-ticket index entry; only [`track_load`] and
    /// the rebuild call it. An empty list removes the entry.
    fn put_similar_index(&self, by: SimilarBy, key: &str, tickets: &[u64]) -> Result<()>;
    /// Removes a message record (`#merge`, after writing it under the
    /// surviving ticket).
    fn delete_message(&self, ticket: u64, seq: u32) -> Result<()>;
    /// How many tickets are in `status` (for `postdesk status`). Only
    /// [`track_load`] and the one-time rebuild change it.
    fn ticket_count(&self, status: Status) -> Result<u64>;
    fn put_ticket_count(&self, status: Status, n: u64) -> Result<()>;
}

/// Keeps the per-agent load counters, the per-status ticket counts and the
/// similar-ticket indexes true for a ticket about to be written: every backend's `put_ticket` calls
/// this first, inside the same transaction, so no writer (delivery,
/// commands, CLI, scheduler, import) can change an assignee, a status, a
/// contact or a customer without them following. Costs one point read of
/// the ticket as it was.
pub fn track_load<W: Writes + ?Sized>(w: &W, new: &Ticket) -> Result<()> {
    let old = w.ticket(new.number)?;
    track_similar(w, old.as_ref(), new)?;
    let status_before = old.as_ref().map(|t| t.status);
    if status_before != Some(new.status) {
        if let Some(s) = status_before {
            let n = w.ticket_count(s)?;
            w.put_ticket_count(s, n.saturating_sub(1))?;
        }
        let n = w.ticket_count(new.status)?;
        w.put_ticket_count(new.status, n.saturating_add(1))?;
    }
    let held = |t: &Ticket| -> Option<(String, Status)> {
        match &t.assignee {
            Some(a) if AgentLoad::counts(t.status) && !a.trim().is_empty() => {
                Some((a.trim().to_ascii_lowercase(), t.status))
            }
            _ => None,
        }
    };
    let before = old.as_ref().and_then(held);
    let after = held(new);
    if before == after {
        return Ok(());
    }
    if let Some((agent, status)) = before {
        let mut l = w.agent_load(&agent)?;
        l.add(status, -1);
        w.put_agent_load(&agent, &l)?;
    }
    if let Some((agent, status)) = after {
        let mut l = w.agent_load(&agent)?;
        l.add(status, 1);
        w.put_agent_load(&agent, &l)?;
    }
    Ok(())
}

/// The loads a full scan of `tickets` gives: what the counters must equal.
/// Used to build them for a store that predates them, and by tests.
pub fn count_loads<'a>(
    tickets: impl IntoIterator<Item = &'a Ticket>,
) -> std::collections::BTreeMap<String, AgentLoad> {
    let mut out: std::collections::BTreeMap<String, AgentLoad> = Default::default();
    for t in tickets {
        add_load(&mut out, t);
    }
    out
}

/// One ticket's share of [`count_loads`], for a count streamed over the
/// store rather than collected from all its tickets at once.
pub fn add_load(out: &mut std::collections::BTreeMap<String, AgentLoad>, t: &Ticket) {
    if let Some(a) = t.assignee.as_deref().filter(|a| !a.trim().is_empty()) {
        if AgentLoad::counts(t.status) {
            out.entry(a.trim().to_ascii_lowercase())
                .or_default()
                .add(t.status, 1);
        }
    }
}

/// The index keys a ticket is listed under: its contact address and its
/// customer id (lower-cased, empty ones left out).
pub fn similar_keys(t: &Ticket) -> Vec<(SimilarBy, String)> {
    let mut out = Vec::new();
    let contact = t.contact.trim().to_ascii_lowercase();
    if !contact.is_empty() {
        out.push((SimilarBy::Contact, contact));
    }
    if let Some(c) = t.customer.as_deref().map(|c| c.trim().to_ascii_lowercase()) {
        if !c.is_empty() {
            out.push((SimilarBy::Customer, c));
        }
    }
    out
}

/// Lists a ticket under its contact and customer when it is new or one of
/// them changed. An entry it left keeps the number: readers check the
/// ticket's current contact and customer, so a stale number costs one read
/// and is dropped when the entry is next written past its bound.
fn track_similar<W: Writes + ?Sized>(w: &W, old: Option<&Ticket>, new: &Ticket) -> Result<()> {
    let before = old.map(similar_keys).unwrap_or_default();
    for (by, key) in similar_keys(new) {
        if before.iter().any(|(b, k)| *b == by && *k == key) {
            continue;
        }
        let mut list = w.similar_index(by, &key)?;
        if list.contains(&new.number) {
            continue;
        }
        list.push(new.number);
        if list.len() > SIMILAR_KEEP {
            let extra = list.len() - SIMILAR_KEEP;
            list.drain(..extra);
        }
        w.put_similar_index(by, &key, &list)?;
    }
    Ok(())
}

/// The similar-ticket index a full scan of `tickets` gives: what a store
/// written before the index existed is given at start.
pub fn count_similar<'a>(
    tickets: impl IntoIterator<Item = &'a Ticket>,
) -> std::collections::BTreeMap<(SimilarBy, String), Vec<u64>> {
    let mut out: std::collections::BTreeMap<(SimilarBy, String), Vec<u64>> = Default::default();
    for t in tickets {
        add_similar(&mut out, t);
    }
    for v in out.values_mut() {
        v.sort_unstable();
        keep_newest(v, SIMILAR_KEEP);
    }
    out
}

/// One ticket's share of [`count_similar`]. Tickets arrive in number order
/// from a scan, so each list is trimmed as it grows and a streamed count
/// never holds more than twice what it keeps.
pub fn add_similar(
    out: &mut std::collections::BTreeMap<(SimilarBy, String), Vec<u64>>,
    t: &Ticket,
) {
    for k in similar_keys(t) {
        let v = out.entry(k).or_default();
        v.push(t.number);
        if v.len() > 2 * SIMILAR_KEEP {
            v.sort_unstable();
            keep_newest(v, SIMILAR_KEEP);
        }
    }
}

fn keep_newest(v: &mut Vec<u64>, n: usize) {
    if v.len() > n {
        let extra = v.len() - n;
        v.drain(..extra);
    }
}
