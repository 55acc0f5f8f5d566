//! The pure ingest core: raw bytes → facts → classification → thread match →
//! decision. Nothing in here does I/O, reads the clock or draws random
//! numbers: every input is an argument, so `serve`, `explain` and `import`
//! share it and tests can drive it exhaustively.

pub mod classify;
pub mod customer;
pub mod decide;
mod decide_close;
mod decide_cmd;
pub mod parse;
pub mod quote;
#[cfg(test)]
mod quote_corpus;
pub mod route;
pub mod thread;
#[cfg(test)]
mod thread_props;

use serde::{Deserialize, Serialize};

/// A mail address as we compare it: lower-cased, no angle brackets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Addr {
    pub email: String,
    pub name: Option<String>,
}

impl Addr {
    pub fn new(email: &str) -> Addr {
        Addr {
            email: email.trim().to_ascii_lowercase(),
            name: None,
        }
    }
}

/// The LMTP envelope as the MTA gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Envelope {
    /// Reverse path; empty for the null sender `<>`.
    pub mail_from: String,
    /// Accepted recipients, in order, as given (case kept).
    pub rcpt_to: Vec<String>,
}

/// Owned facts read from a raw message. Produced by [`parse::parse`], which
/// never fails: whatever could not be read is noted in `problems`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Parsed {
    /// Without angle brackets. Derived from the content when absent.
    pub message_id: String,
    pub message_id_derived: bool,
    /// Ids from In-Reply-To, in header order, without brackets.
    pub in_reply_to: Vec<String>,
    /// Ids from References, in header order (oldest first), without brackets.
    pub references: Vec<String>,
    /// Decoded Outlook Thread-Index bytes.
    pub thread_index: Option<Vec<u8>>,
    pub thread_topic: Option<String>,
    /// Decoded subject, encoded words joined; "" when absent.
    pub subject: String,
    pub from: Option<Addr>,
    pub sender: Option<Addr>,
    pub reply_to: Vec<Addr>,
    pub to: Vec<Addr>,
    pub cc: Vec<Addr>,
    /// RFC 3339 text of the Date header, when it parsed.
    pub date: Option<String>,
    /// The sender's own text: text/plain preferred, else HTML turned to text.
    pub text: String,
    /// Header facts that classification reads (lower-cased values, trimmed).
    pub auto_submitted: Option<String>,
    pub precedence: Option<String>,
    pub list_id: Option<String>,
    pub list_unsubscribe: bool,
    pub x_autoreply: bool,
    pub x_auto_response_suppress: Option<String>,
    /// Our own loop header, as found.
    pub x_postdesk_loop: Option<String>,
    pub x_postdesk_kind: Option<String>,
    /// Other out-of-office markers seen (Exchange X-MS-Exchange-…, Gmail's
    /// X-Autoreply, Apple's X-Apple-Action…); one short tag each.
    pub ooo_markers: Vec<String>,
    /// Top-level `Content-Type` type/subtype, lower-cased.
    pub content_type: String,
    /// `report-type` parameter of a multipart/report.
    pub report_type: Option<String>,
    /// Message-IDs of the original message found inside a bounce or
    /// auto-reply: message/rfc822 or text/rfc822-headers parts, or a
    /// plain-text copy of headers in the body.
    pub returned_message_ids: Vec<String>,
    /// Bounce-like text found in the body ("Undelivered Mail Returned to
    /// Sender", "Delivery Status Notification", …).
    pub bounce_text: bool,
    pub has_attachments: bool,
    /// Postfix queue id from the top Received header (`… with ESMTP id X`).
    pub queue_id: Option<String>,
    /// SHA-256 (hex) of the message without trace headers (Received,
    /// Return-Path, Delivered-To, X-Original-To): the same mail reaching us
    /// twice by different paths hashes the same.
    pub content_hash: String,
    /// Byte offset where the body starts in the raw message (after the
    /// blank line), so a copy can reuse the body unchanged.
    pub body_offset: usize,
    /// Raw header lines (unfolded text as found) of MIME-Version,
    /// Content-Type and Content-Transfer-Encoding: a copy carries them.
    pub content_headers: Vec<(String, String)>,
    /// Every top-level header field (name, unfolded value as sent, not
    /// decoded), in order: what the routing rules' `header` condition reads.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// What could not be read cleanly; empty for a well-formed message.
    pub problems: Vec<String>,
}
