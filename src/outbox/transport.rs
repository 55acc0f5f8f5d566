//! Transports: relay (SMTP via lettre), direct (MX lookup), file:DIR.

use crate::lmtp::BoxFuture;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// 4xx, network trouble, timeouts: retried with backoff.
    #[error("temporary: {0}")]
    Transient(String),
    /// 5xx from the relay: recorded on the ticket, not retried.
    #[error("permanent: {0}")]
    Permanent(String),
}

pub trait Transport: Send + Sync + 'static {
    /// Sends one message; `Ok` carries the server's final reply text
    /// (e.g. "250 2.0.0 Ok: queued as 4XbQ2") for the `sent` log line.
    fn send_raw<'a>(
        &'a self,
        mail_from: &'a str,
        rcpt_to: &'a [String],
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, SendError>>;
}
