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

pub mod keys;
pub mod mem;
pub mod model;
mod sled_store;
pub mod spool;

pub use model::*;
pub use sled_store::{Store, Tx, FAULT_FILE, STALL_FILE};

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
}
