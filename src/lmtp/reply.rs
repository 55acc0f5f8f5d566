//! Every reply the LMTP server sends, and nothing else.
//!
//! One place for codes, enhanced codes (RFC 3463) and texts, so that
//! `docs/lmtp.md` can list them all (a test below keeps it true) and so a
//! code cannot drift between two call sites. Each reply is a complete line,
//! CRLF included. Text the peer or the handler supplied (addresses, reasons,
//! ids) goes through [`clean`], because a CR or LF smuggled into a reply
//! would let the peer's input forge further reply lines.
//!
//! Policy (SPEC §6, STYLE §7): our own faults are `451 4.3.0`, never 5xx;
//! `552 5.3.4` is for a message over one of the size limits.

use std::fmt::Write as _;

/// Longest piece of foreign text we echo, in bytes (UTF-8: a character can
/// take four). Two echoes plus our own text keep a reply line under the 512
/// octets RFC 5321 allows (§4.5.3.1.5).
const MAX_ECHO: usize = 200;

/// Makes peer- or handler-supplied text safe and short enough for a reply
/// line: control characters (CR, LF, NUL …) become `?`, and the text is cut
/// at [`MAX_ECHO`] bytes on a character boundary.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ECHO));
    for c in text.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_ECHO {
            break;
        }
        out.push(c);
    }
    out
}

// --- Connection -----------------------------------------------------------

pub fn greeting(host: &str) -> String {
    format!("220 {} LMTP postdesk ready\r\n", clean(host))
}

/// The LHLO answer: the host line, then one capability per line. BDAT
/// (CHUNKING) is deliberately absent: DATA is enough behind Postfix and one
/// body path is easier to keep within limits.
pub fn lhlo(host: &str, max_message_size: u64) -> String {
    let mut r = String::with_capacity(128);
    let _ = write!(r, "250-{}\r\n", clean(host));
    for cap in ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"] {
        let _ = write!(r, "250-{cap}\r\n");
    }
    let _ = write!(r, "250 SIZE {max_message_size}\r\n");
    r
}

pub const OK: &str = "250 2.0.0 OK\r\n";
pub const BYE: &str = "221 2.0.0 Bye\r\n";
pub const VRFY: &str =
    "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n";

pub fn idle_timeout(host: &str) -> String {
    format!("421 4.4.2 {} Idle timeout, closing\r\n", clean(host))
}

pub fn session_too_long(host: &str) -> String {
    format!(
        "421 4.4.2 {} Session too long, closing; try again\r\n",
        clean(host)
    )
}

pub fn shutting_down(host: &str) -> String {
    format!(
        "421 4.3.0 {} Shutting down, try again later\r\n",
        clean(host)
    )
}

/// Sent by the listener, before any greeting, when every session slot is taken.
pub const TOO_MANY_SESSIONS: &str = "421 4.3.2 Too many sessions, try again later\r\n";

// --- Command errors -------------------------------------------------------

pub const HELO_NOT_LMTP: &str = "500 5.5.1 This is an LMTP server: say LHLO, not HELO or EHLO\r\n";

/// An unknown or garbled command; `reason` is smtp-proto's own wording
/// where it has one (e.g. "Syntax error: RCPT TO:<forward-path> [parameters]").
pub fn syntax_error(reason: &str) -> String {
    format!("500 5.5.2 {}\r\n", clean(reason))
}

/// A command line over the parser's bound; the rest of the line is discarded.
pub const LINE_TOO_LONG: &str = "500 5.5.2 Line too long\r\n";

pub const NEED_LHLO: &str = "503 5.5.1 Say LHLO first\r\n";
pub const NESTED_MAIL: &str = "503 5.5.1 Sender already given; RSET first\r\n";
pub const NEED_MAIL: &str = "503 5.5.1 Need MAIL before RCPT\r\n";
pub const DATA_NEED_MAIL: &str = "503 5.5.1 Need MAIL and RCPT before DATA\r\n";
pub const DATA_NEED_RCPT: &str = "503 5.5.1 No valid recipients; need RCPT before DATA\r\n";

pub const BDAT_NOT_OFFERED: &str = "502 5.5.1 BDAT is not offered; use DATA\r\n";
/// Commands smtp-proto knows but an LMTP delivery agent has no use for
/// (EXPN, HELP, ETRN, ATRN, BURL, AUTH, STARTTLS).
pub const NOT_IMPLEMENTED: &str = "502 5.5.1 Command not implemented\r\n";

/// `BODY=BINARYMIME` is only legal with BDAT, which we do not offer.
pub const BINARYMIME_REFUSED: &str =
    "555 5.5.4 BODY=BINARYMIME needs BDAT, which is not offered\r\n";

// --- Transaction ----------------------------------------------------------

pub const MAIL_OK: &str = "250 2.1.0 OK\r\n";
pub const RCPT_OK: &str = "250 2.1.5 OK\r\n";

pub fn rcpt_refused(rcpt: &str, why: &str) -> String {
    format!("550 5.1.1 <{}>: {}\r\n", clean(rcpt), clean(why))
}

pub const TOO_MANY_RECIPIENTS: &str = "452 4.5.3 Too many recipients\r\n";

pub const START_DATA: &str = "354 Start mail input; end with <CRLF>.<CRLF>\r\n";

/// MAIL announced a `SIZE=` over the limit: refused before any byte is sent.
pub fn declared_size_too_big(declared: u64, max: u64) -> String {
    format!(
        "552 5.3.4 Declared size {declared} exceeds the maximum message size of {max} bytes\r\n"
    )
}

pub fn message_too_big(max: u64) -> String {
    format!("552 5.3.4 Message exceeds the maximum size of {max} bytes\r\n")
}

pub fn header_too_big(max: usize) -> String {
    format!("552 5.3.4 Header block exceeds the maximum of {max} bytes\r\n")
}

pub fn line_too_long_in_message(max: usize) -> String {
    format!("552 5.3.4 Message has a line over the maximum length of {max} bytes\r\n")
}

/// Per recipient, only after the handler reported the message durable.
pub fn stored(rcpt: &str, id: &str) -> String {
    format!(
        "250 2.0.0 <{}> OK, stored as {}\r\n",
        clean(rcpt),
        clean(id)
    )
}

/// Per recipient when the handler failed: the MTA keeps the mail and retries.
pub fn temp_fail(rcpt: &str) -> String {
    format!(
        "451 4.3.0 <{}> Temporary failure, try again later\r\n",
        clean(rcpt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply, rendered with the example values `docs/lmtp.md` uses.
    fn all_replies() -> Vec<String> {
        let host = "mx.example.com";
        let rcpt = "support@example.com";
        let max = 52_428_800u64;
        vec![
            greeting(host),
            lhlo(host, max),
            OK.into(),
            BYE.into(),
            VRFY.into(),
            idle_timeout(host),
            session_too_long(host),
            shutting_down(host),
            TOO_MANY_SESSIONS.into(),
            HELO_NOT_LMTP.into(),
            syntax_error("Unknown command"),
            LINE_TOO_LONG.into(),
            NEED_LHLO.into(),
            NESTED_MAIL.into(),
            NEED_MAIL.into(),
            DATA_NEED_MAIL.into(),
            DATA_NEED_RCPT.into(),
            BDAT_NOT_OFFERED.into(),
            NOT_IMPLEMENTED.into(),
            BINARYMIME_REFUSED.into(),
            MAIL_OK.into(),
            RCPT_OK.into(),
            rcpt_refused("nobody@example.com", "not a support address"),
            TOO_MANY_RECIPIENTS.into(),
            START_DATA.into(),
            declared_size_too_big(60_000_000, max),
            message_too_big(max),
            header_too_big(1_048_576),
            line_too_long_in_message(1_048_576),
            stored(rcpt, "SUP-12"),
            temp_fail(rcpt),
        ]
    }

    #[test]
    fn every_reply_is_crlf_terminated_with_a_code() {
        for r in all_replies() {
            assert!(r.ends_with("\r\n"), "{r:?}");
            for line in r.split_terminator("\r\n") {
                let code = &line[..3];
                assert!(code.bytes().all(|b| b.is_ascii_digit()), "{r:?}");
                assert!(!line.contains('\n') && !line.contains('\r'), "{r:?}");
            }
        }
    }

    #[test]
    fn every_reply_is_documented() {
        let doc = include_str!("../../docs/lmtp.md");
        for r in all_replies() {
            for line in r.split_terminator("\r\n") {
                assert!(
                    doc.contains(line),
                    "docs/lmtp.md does not show the reply line `{line}`"
                );
            }
        }
    }

    /// Catches a reply added above but forgotten in `all_replies`: every
    /// string literal here that starts with a reply code must have its fixed
    /// text (the parts between `{…}` placeholders) in the doc.
    #[test]
    fn every_reply_literal_in_this_file_is_documented() {
        let src = include_str!("reply.rs");
        let code: String = src[..src.find("#[cfg(test)]").unwrap()]
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let doc = include_str!("../../docs/lmtp.md");
        let mut seen = 0;
        for literal in code.split('"').skip(1).step_by(2) {
            let b = literal.as_bytes();
            if b.len() < 5 || !b[..3].iter().all(u8::is_ascii_digit) || b[3] != b' ' {
                continue;
            }
            seen += 1;
            let text = literal.trim_end_matches("\\r\\n");
            for fixed in text.split(['{', '}']).step_by(2) {
                let fixed = fixed.trim();
                assert!(
                    fixed.is_empty() || doc.contains(fixed),
                    "docs/lmtp.md lacks `{fixed}` (from the reply \"{literal}\")"
                );
            }
        }
        assert!(
            seen >= 25,
            "found only {seen} reply literals: parser broken?"
        );
    }

    #[test]
    fn foreign_text_cannot_add_reply_lines() {
        let r = rcpt_refused("a@b\r\n250 2.1.5 OK", "why\nnot");
        assert_eq!(r, "550 5.1.1 <a@b??250 2.1.5 OK>: why?not\r\n");
        let long = "x".repeat(5000);
        assert!(stored(&long, "id").len() < 512);
        // Cut by bytes, not characters, and never inside a character.
        let wide = "😀".repeat(300);
        assert_eq!(clean(&wide).len(), 200);
        assert!(rcpt_refused(&wide, &wide).len() <= 512);
        assert!(stored(&wide, &wide).len() <= 512);
        assert!(syntax_error(&wide).len() <= 512);
        assert_eq!(clean("ab€"), "ab€");
    }
}
