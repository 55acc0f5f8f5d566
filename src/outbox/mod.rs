//! Outbound mail: the sender task that drains the durable outbox, and the
//! transports it sends through.
//!
//! Owns: retries with backoff, transient vs permanent, the `sent …` log line,
//! recording a permanent failure on the ticket. Must not: decide what to
//! send (the outbox rows were written by the committed decision) or block
//! ingest (it runs as its own task and only reads/updates outbox rows).

pub mod sender;
pub mod transport;

pub use transport::{SendError, Transport};
