//! Who sent it and what it is (SPEC §3.3). Pure: a decision value, no action.

use super::{Envelope, Parsed};
use crate::config::Config;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    Ordinary,
    AutoReply,
    Bounce,
    /// Our own generated mail coming back (our `X-Postdesk-Loop`).
    Loop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// Sender (From, else envelope sender) is on the roster or in a team domain.
    pub staff: bool,
    /// The address we treat as the sender (lower-case), "" when none.
    pub sender: String,
    pub kind: MailKind,
    /// Bulk or list mail: ticketed, never acknowledged (RFC 3834 §2).
    pub bulk: bool,
    /// Do not answer automatically (X-Auto-Response-Suppress, null sender,
    /// bulk, auto-reply, bounce, loop, our own address …).
    pub suppress_ack: bool,
    /// Short human reasons, e.g. "Auto-Submitted: auto-replied".
    pub reasons: Vec<String>,
}

pub fn classify(p: &Parsed, env: &Envelope, cfg: &Config) -> Classification {
    let _ = (p, env, cfg);
    Classification {
        staff: false,
        sender: String::new(),
        kind: MailKind::Ordinary,
        bulk: false,
        suppress_ack: false,
        reasons: Vec::new(),
    }
}
