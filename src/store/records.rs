//! Every record a store holds, in one backend-neutral shape: what `postdesk
//! migrate` streams from one backend into another. Raw messages are not
//! records: they are copied by the migration itself (read with
//! `Store::read_raw`, written with a `commit` that carries them), and the
//! `SpoolRef`s inside message records and outbox entries are rewritten to
//! the destination's before the records are put.

use super::{Away, DistState, Job, MessageRecord, OutboxEntry, StoredIds, Ticket, Timestamp};

// Streamed one at a time or in small batches: the size of the largest
// variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Ticket(Ticket),
    Message {
        ticket: u64,
        seq: u32,
        rec: MessageRecord,
    },
    Apart {
        id: u64,
        rec: MessageRecord,
    },
    /// A thread key: the ticket it leads to (`None`: only stored ids) and
    /// the stored variants of a delivered Message-ID.
    ThreadKey {
        message_id: String,
        ticket: Option<u64>,
        stored: Option<StoredIds>,
    },
    Conversation {
        key: String,
        ticket: u64,
    },
    Acks {
        address: String,
        times: Vec<Timestamp>,
    },
    Learned {
        address: String,
        customer: String,
    },
    /// Kept with its id: tickets and logs name outbox ids.
    Outbox(OutboxEntry),
    /// Kept with its id and due time: tickets hold `ScheduledRef`s to them.
    Job(Job),
    Away {
        agent: String,
        away: Away,
    },
    Dist {
        category: String,
        state: DistState,
    },
    /// The next numbers to hand out; a destination raises its own to at
    /// least these.
    Counters(Counters),
    /// The action-link signing secret (links in customers' inboxes must
    /// stay valid after a migration).
    Secret(Vec<u8>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub next_ticket: u64,
    pub next_outbox: u64,
    pub next_job: u64,
    pub next_apart: u64,
}

impl Record {
    /// The kind's name, for counts and progress.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Ticket(_) => "tickets",
            Record::Message { .. } => "messages",
            Record::Apart { .. } => "apart",
            Record::ThreadKey { .. } => "thread_keys",
            Record::Conversation { .. } => "conversations",
            Record::Acks { .. } => "acks",
            Record::Learned { .. } => "learned",
            Record::Outbox(_) => "outbox",
            Record::Job(_) => "jobs",
            Record::Away { .. } => "away",
            Record::Dist { .. } => "dist",
            Record::Counters(_) => "counters",
            Record::Secret(_) => "secret",
        }
    }
}
