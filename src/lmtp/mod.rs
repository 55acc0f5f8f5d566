//! The LMTP server (RFC 2033): listeners, sessions and every reply we send.
//!
//! Owns the wire: bytes in, replies out, limits enforced, one reply per
//! accepted recipient after DATA. Must not: parse mail or touch the store;
//! a complete transaction is handed to a [`Handler`] once, whatever the
//! number of recipients, and its one outcome answers every recipient.

pub mod listener;
pub mod reply;
pub mod session;

use crate::ingest::Envelope;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A delivered transaction's outcome, applied to every accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Committed durably. `id` names it in the reply and the log (e.g.
    /// `SUP-12` or an internal id), so ops can grep for it.
    Stored { id: String },
    /// An internal fault: answered `451 4.3.0` so the MTA retries.
    TempFail { reason: String },
}

/// What the session hands a complete transaction to.
pub trait Handler: Send + Sync + 'static {
    /// Is `rcpt` an address we deliver for? `Err(why)` is answered
    /// `550 5.1.1` with `why` in the text.
    fn check_rcpt(&self, rcpt: &str) -> Result<(), String>;
    /// Called once per transaction after the final dot.
    fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> BoxFuture<'_, Outcome>;
}
