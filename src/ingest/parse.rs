//! Raw bytes → owned [`Parsed`] facts. Never fails, never panics.
//!
//! One pass of mail-parser over the raw message (borrowed, zero-copy), then
//! one walk over its top-level headers and one over its MIME parts, copying
//! out only the facts `classify`, `thread` and `decide` read. Whatever could
//! not be read cleanly is noted in [`Parsed::problems`]; a customer's mail is
//! never refused for its form (SPEC §3.2).
//!
//! Things we do by hand, and why:
//! - `content_hash` hashes the raw bytes minus trace fields, with line ends
//!   normalised to LF, so the same mail delivered over LMTP (CRLF) and
//!   imported from an mbox (LF), or relayed by two paths, hashes alike.
//! - Bare-CR line ends (old Mac mailers) are turned into LF in a copy before
//!   parsing: mail-parser only splits lines on LF and would otherwise read
//!   the whole message as one header. Offsets stay the same (one byte for one).
//! - Message-IDs of returned originals are also read from plain-text copies of
//!   headers, since qmail, Exim and many in-house bouncers paste the original
//!   into the body instead of attaching it.

use std::borrow::Cow;
use std::sync::LazyLock;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use mail_parser::decoders::html::html_to_text;
use mail_parser::{Header, HeaderName, HeaderValue, Message, MessageParser, MessagePart, PartType};
use sha2::{Digest, Sha256};

use super::{Addr, Parsed};

/// Cap on `Parsed::text`: enough for any human-written reply, small enough
/// that a 20 MB log dump pasted into a mail does not travel through the
/// pipeline (the raw message is kept whole anyway).
const TEXT_CAP: usize = 64 * 1024;

/// How much of one text part we scan for pasted `Message-ID:` lines.
const ID_SCAN_CAP: usize = 256 * 1024;

/// Built once: a `MessageParser` with a non-empty header map parses every
/// header not in the map with `def_hdr_parse_fnc` (raw), so every header we
/// want structured must be listed here.
static PARSER: LazyLock<MessageParser> = LazyLock::new(|| {
    MessageParser::new()
        // Needed for the MIME tree: Content-Type, -Disposition, -Transfer-Encoding …
        .with_mime_headers()
        .with_address_headers()
        .header_id(HeaderName::MessageId)
        .header_id(HeaderName::InReplyTo)
        .header_id(HeaderName::References)
        .header_date(HeaderName::Date)
        .header_text(HeaderName::Subject)
        // Outlook encodes non-ASCII topics as RFC 2047 words.
        .header_text(HeaderName::Other("Thread-Topic".into()))
    // Everything else (Received, List-*, X-*) stays raw: cheap, and we
    // only need a token or two out of each.
});

/// Thread-Index is base64 with `=` padding in practice, but some gateways
/// drop or mangle it; accept either.
const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Reads the facts of a raw message. Never fails and never panics: whatever
/// could not be read is noted in `problems`, and a message id is derived
/// from the content when the message has none.
pub fn parse(raw: &[u8]) -> Parsed {
    // mail-parser promises not to panic, and is fuzzed; but it is third-party
    // code on hostile input, and a panic here would make the MTA retry the
    // same mail forever. Fall back to what we can read without it.
    match std::panic::catch_unwind(|| parse_checked(raw)) {
        Ok(p) => p,
        Err(_) => parse_fallback(raw),
    }
}

fn parse_checked(raw: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    if raw.contains(&0) {
        problem(&mut p, "NUL bytes");
    }
    let fixed = if first_line_ends_in_lone_cr(raw) {
        problem(&mut p, "CR-only line ends");
        Some(lone_cr_to_lf(raw))
    } else {
        None
    };
    let buf: &[u8] = fixed.as_deref().unwrap_or(raw);
    p.headers = crate::policy::header_pairs(buf);

    match PARSER.parse(buf) {
        Some(msg)
            if msg
                .parts
                .first()
                .is_some_and(|r| !only_bogus_headers(&r.headers)) =>
        {
            read_message(&mut p, &msg, buf)
        }
        _ => {
            // No header could be read at all: treat the bytes as a body.
            problem(&mut p, "no headers");
            p.content_type = "text/plain".into();
            p.body_offset = 0;
            p.text = capped(&String::from_utf8_lossy(buf));
            p.content_hash = content_hash(buf, &[]);
        }
    }
    finish(&mut p);
    p
}

/// Text without a single header line that mail-parser still read as one
/// ("some words" up to the end, no colon): a field name never holds spaces.
fn only_bogus_headers(headers: &[Header<'_>]) -> bool {
    !headers.is_empty()
        && headers.iter().all(|h| match &h.name {
            HeaderName::Other(n) => n.is_empty() || n.contains(char::is_whitespace),
            _ => false,
        })
}

/// What we can say about a message without mail-parser: hash, derived id,
/// body offset. Only reached if the parser panicked.
fn parse_fallback(raw: &[u8]) -> Parsed {
    let mut p = Parsed {
        content_type: "text/plain".into(),
        body_offset: find_body_offset(raw),
        content_hash: content_hash(raw, &[]),
        headers: crate::policy::header_pairs(raw),
        ..Parsed::default()
    };
    problem(&mut p, "parser failure");
    finish(&mut p);
    p
}

/// Steps shared by every path: the derived Message-ID and the notes about
/// what is missing.
fn finish(p: &mut Parsed) {
    if p.message_id.is_empty() {
        // SPEC §3.8: a message with no Message-ID gets one derived from its
        // content, so a redelivery of the same bytes gets the same id.
        let n = p.content_hash.len().min(32);
        p.message_id = format!("derived.{}@postdesk.invalid", &p.content_hash[..n]);
        p.message_id_derived = true;
        problem(p, "no Message-ID");
    }
}

fn problem(p: &mut Parsed, what: &str) {
    if !p.problems.iter().any(|x| x == what) {
        p.problems.push(what.to_string());
    }
}

fn read_message(p: &mut Parsed, msg: &Message<'_>, buf: &[u8]) {
    let root = &msg.parts[0];
    if root.headers.is_empty() {
        problem(p, "no headers");
    }
    let body_offset = (root.offset_body as usize).min(buf.len());
    p.body_offset = body_offset;

    let header_bytes = &buf[..body_offset];
    if !header_bytes.is_ascii() && std::str::from_utf8(header_bytes).is_err() {
        // RFC 6532 allows UTF-8 in headers; anything else is a guess.
        problem(p, "8-bit header bytes not UTF-8");
    }

    let trace = read_headers(p, &root.headers, buf);
    p.content_hash = content_hash(buf, &trace);

    if p.from.is_none() {
        problem(p, "no From");
    }
    if p.date.is_none() && !p.problems.iter().any(|x| x == "unreadable Date") {
        problem(p, "no Date");
    }
    if p.content_type.is_empty() {
        // RFC 2045 §5.2: no Content-Type means text/plain.
        p.content_type = "text/plain".into();
    }

    read_parts(p, msg);
    p.text = body_text(msg);
    p.has_attachments = !msg.attachments.is_empty();
    p.bounce_text = has_bounce_text(&p.subject, &p.text);
    if let Some(tag) = subject_ooo_marker(&p.subject) {
        p.ooo_markers.push(tag);
    }
}

/// One walk over the top-level headers. Returns the byte ranges of trace
/// fields, which the content hash leaves out.
fn read_headers(p: &mut Parsed, headers: &[Header<'_>], buf: &[u8]) -> Vec<(usize, usize)> {
    let mut trace = Vec::new();
    let mut seen_id = false;
    let mut seen_subject = false;
    let mut seen_date = false;
    let mut seen_received = false;
    let mut seen_content_type = false;

    for h in headers {
        let span = (h.offset_field as usize, h.offset_end as usize);
        match &h.name {
            HeaderName::MessageId if !seen_id => {
                seen_id = true;
                if let Some(id) = ids(&h.value).into_iter().next() {
                    p.message_id = id;
                }
            }
            HeaderName::InReplyTo => p.in_reply_to.extend(ids(&h.value)),
            HeaderName::References => p.references.extend(ids(&h.value)),
            HeaderName::Subject if !seen_subject => {
                seen_subject = true;
                if let Some(s) = h.value.as_text() {
                    p.subject = one_line(s);
                }
            }
            HeaderName::From if p.from.is_none() => p.from = first_addr(&h.value),
            HeaderName::Sender if p.sender.is_none() => p.sender = first_addr(&h.value),
            HeaderName::ReplyTo => push_addrs(&h.value, &mut p.reply_to),
            HeaderName::To => push_addrs(&h.value, &mut p.to),
            HeaderName::Cc => push_addrs(&h.value, &mut p.cc),
            HeaderName::Date if !seen_date => {
                seen_date = true;
                p.date = match &h.value {
                    HeaderValue::DateTime(d) => rfc3339(d),
                    _ => None,
                };
                if p.date.is_none() {
                    problem(p, "unreadable Date");
                }
            }
            HeaderName::Received => {
                // Our own MTA writes the top one: its queue id is what ops grep
                // the Postfix log for.
                if !seen_received {
                    seen_received = true;
                    p.queue_id = raw_text(&h.value).and_then(|r| received_id(&r));
                }
                trace.push(span);
            }
            HeaderName::ReturnPath | HeaderName::DeliveredTo => trace.push(span),
            HeaderName::AutoSubmitted if p.auto_submitted.is_none() => {
                p.auto_submitted = lower_value(&h.value);
            }
            HeaderName::ListId if p.list_id.is_none() => {
                p.list_id = raw_text(&h.value).and_then(|v| list_id(&v));
            }
            HeaderName::ListUnsubscribe => p.list_unsubscribe = true,
            HeaderName::ContentType => {
                push_content_header(p, h, buf);
                if !seen_content_type {
                    seen_content_type = true;
                    if let Some(ct) = h.value.as_content_type() {
                        p.content_type = match ct.subtype() {
                            Some(sub) => format!("{}/{}", ct.ctype(), sub),
                            None => ct.ctype().to_string(),
                        }
                        .to_ascii_lowercase();
                        if p.content_type == "multipart/report" {
                            p.report_type = ct
                                .attribute("report-type")
                                .map(|v| v.trim().to_ascii_lowercase())
                                .filter(|v| !v.is_empty());
                        }
                    }
                }
            }
            HeaderName::MimeVersion | HeaderName::ContentTransferEncoding => {
                push_content_header(p, h, buf)
            }
            HeaderName::Other(name) => read_other(p, name, h, span, &mut trace),
            _ => {}
        }
    }
    trace
}

fn read_other(
    p: &mut Parsed,
    name: &str,
    h: &Header<'_>,
    span: (usize, usize),
    trace: &mut Vec<(usize, usize)>,
) {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    // Added by each receiving server, so the same mail relayed two ways
    // would otherwise hash differently.
    if is("X-Original-To") || is("Authentication-Results") || is("Received-SPF") {
        trace.push(span);
    } else if span.0 == 0 && name.starts_with("From ") {
        // An mbox postmark ("From MAILER-DAEMON  Mon Sep 20 …") that
        // mail-parser read as a header: delivery metadata, not content.
        trace.push(span);
    } else if is("Thread-Index") {
        if p.thread_index.is_none() {
            if let Some(v) = raw_text(&h.value) {
                let compact: Vec<u8> = v.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                match B64.decode(&compact) {
                    Ok(bytes) if !bytes.is_empty() => p.thread_index = Some(bytes),
                    _ => problem(p, "undecodable Thread-Index"),
                }
            }
        }
    } else if is("Thread-Topic") {
        if p.thread_topic.is_none() {
            p.thread_topic = h.value.as_text().map(one_line).filter(|t| !t.is_empty());
        }
    } else if is("Precedence") {
        if p.precedence.is_none() {
            p.precedence = lower_value(&h.value);
        }
    } else if is("X-Autoreply") || is("X-Autorespond") {
        p.x_autoreply = true;
    } else if is("X-Auto-Response-Suppress") {
        if p.x_auto_response_suppress.is_none() {
            p.x_auto_response_suppress = lower_value(&h.value);
        }
    } else if is("X-Postdesk-Loop") {
        if p.x_postdesk_loop.is_none() {
            p.x_postdesk_loop = raw_text(&h.value).filter(|v| !v.is_empty());
        }
    } else if is("X-Postdesk-Kind") {
        if p.x_postdesk_kind.is_none() {
            p.x_postdesk_kind = lower_value(&h.value);
        }
    } else if is("X-Apple-Action") {
        // iCloud's vacation responder: `X-Apple-Action: VACATION`.
        if lower_value(&h.value).is_some_and(|v| v.contains("vacation")) {
            push_marker(p, "x-apple-action: vacation");
        }
    }
}

fn push_marker(p: &mut Parsed, tag: &str) {
    if !p.ooo_markers.iter().any(|m| m == tag) {
        p.ooo_markers.push(tag.to_string());
    }
}

fn push_content_header(p: &mut Parsed, h: &Header<'_>, buf: &[u8]) {
    let field = h.offset_field as usize;
    let start = h.offset_start as usize;
    let end = (h.offset_end as usize).min(buf.len());
    if field >= start || start > end {
        return;
    }
    // Name as written (before the colon), value unfolded as found.
    let name = String::from_utf8_lossy(&buf[field..start - 1])
        .trim()
        .to_string();
    let value = unfold(&String::from_utf8_lossy(&buf[start..end]));
    p.content_headers.push((name, value));
}

/// Walks every MIME part once: returned originals' ids, challenge-response
/// notices, and what was broken.
fn read_parts(p: &mut Parsed, msg: &Message<'_>) {
    let own = p.message_id.clone();
    for (i, part) in msg.parts.iter().enumerate() {
        // A Message-ID among a body part's own headers: an MTA pasted the
        // original's header block where the part headers go (no blank line
        // between boundary and copy).
        if i > 0 {
            if let Some(id) = part
                .headers
                .iter()
                .find(|h| h.name == HeaderName::MessageId)
                .and_then(|h| ids(&h.value).into_iter().next())
            {
                push_returned(p, id, &own);
            }
        }
        let ct = part_type(part);
        let is_multipart_ct = ct.as_deref().is_some_and(|c| c.starts_with("multipart/"));
        match &part.body {
            PartType::Message(nested) => {
                if let Some(id) = nested
                    .parts
                    .first()
                    .and_then(|r| r.headers.iter().find(|h| h.name == HeaderName::MessageId))
                    .and_then(|h| ids(&h.value).into_iter().next())
                {
                    push_returned(p, id, &own);
                }
            }
            PartType::Text(text) => {
                if is_multipart_ct {
                    // mail-parser turns a multipart whose boundary never
                    // appears into one text part.
                    problem(p, "broken MIME boundary");
                }
                scan_message_ids(text, &own, &mut p.returned_message_ids);
                check_decoding(p, part, text);
            }
            PartType::Html(text) => check_decoding(p, part, text),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                let textual = ct
                    .as_deref()
                    .is_some_and(|c| c.starts_with("message/") || c == "text/rfc822-headers");
                if textual {
                    // message/delivery-status, disposition-notification (its
                    // Original-Message-ID), or an rfc822 part that did not parse.
                    let text = String::from_utf8_lossy(bytes);
                    scan_message_ids(&text, &own, &mut p.returned_message_ids);
                    if ct.as_deref() == Some("message/delivery-status")
                        && contains_ci(&text, "x-boxbe-notice")
                    {
                        push_marker(p, "challenge-response: boxbe");
                    }
                }
            }
            PartType::Multipart(_) => {}
        }
        if part.is_encoding_problem {
            problem(p, "broken MIME part");
        }
    }
    // Boxbe's notices come from its own domain even when the DSN part is
    // missing or mangled.
    let boxbe = |a: &Option<Addr>| a.as_ref().is_some_and(|a| a.email.ends_with("@boxbe.com"));
    if boxbe(&p.from) || boxbe(&p.sender) {
        push_marker(p, "challenge-response: boxbe");
    }
}

fn push_returned(p: &mut Parsed, id: String, own: &str) {
    if id != own && !p.returned_message_ids.contains(&id) {
        p.returned_message_ids.push(id);
    }
}

fn part_type(part: &MessagePart<'_>) -> Option<String> {
    let ct = part
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)?
        .value
        .as_content_type()?;
    Some(match ct.subtype() {
        Some(sub) => format!("{}/{}", ct.ctype(), sub).to_ascii_lowercase(),
        None => ct.ctype().to_ascii_lowercase(),
    })
}

/// Notes a charset we could not decode. mail-parser falls back to lossy
/// UTF-8 for charsets it does not know (and, without its `full_encoding`
/// feature, for Shift_JIS, EUC, GB18030, Big5), which leaves U+FFFD behind;
/// an ISO-2022 text it could not decode keeps its ESC sequences instead.
fn check_decoding(p: &mut Parsed, part: &MessagePart<'_>, text: &str) {
    let replaced = text.contains('\u{FFFD}');
    if !replaced && !text.contains('\u{1b}') {
        return;
    }
    let charset = part
        .headers
        .iter()
        .find(|h| h.name == HeaderName::ContentType)
        .and_then(|h| h.value.as_content_type())
        .and_then(|ct| ct.attribute("charset"))
        .map(|c| c.trim().to_ascii_lowercase());
    match charset.as_deref() {
        Some(cs) if cs.starts_with("iso-2022") => problem(p, "undecodable charset"),
        _ if !replaced => {} // ESC in UTF-8 text: pasted terminal colours, fine.
        None | Some("utf-8") | Some("utf8") | Some("us-ascii") => {
            problem(p, "invalid UTF-8 in text")
        }
        Some(_) => problem(p, "undecodable charset"),
    }
}

/// The first text body, HTML turned to text when that is all there is.
fn body_text(msg: &Message<'_>) -> String {
    let Some(part) = msg
        .text_body
        .first()
        .and_then(|&i| msg.parts.get(i as usize))
    else {
        return String::new();
    };
    match &part.body {
        PartType::Text(t) => capped(&lf_only(t)),
        PartType::Html(h) => capped(&lf_only(&html_to_text(h))),
        _ => String::new(),
    }
}

/// Text for humans and for the quote stripper: CRLF and lone CR become LF.
fn lf_only(s: &str) -> Cow<'_, str> {
    if !s.contains('\r') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n"))
}

fn capped(s: &str) -> String {
    if s.len() <= TEXT_CAP {
        return s.to_string();
    }
    let mut end = TEXT_CAP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Finds `Message-ID: <…>` (and MDN's `Original-Message-ID:`) lines in a
/// plain-text copy of headers. A folded value on the next line is followed.
fn scan_message_ids(text: &str, own: &str, out: &mut Vec<String>) {
    let text = &text[..floor_boundary(text, ID_SCAN_CAP)];
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let l = line.trim_start();
        if !l.starts_with(['m', 'M', 'o', 'O']) {
            continue;
        }
        let rest = strip_prefix_ci(l, "message-id:")
            .or_else(|| strip_prefix_ci(l, "original-message-id:"))
            .or_else(|| strip_prefix_ci(l, "message-id :"));
        let Some(rest) = rest else { continue };
        let mut value = rest.trim().to_string();
        if !value.contains('>') {
            if let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) {
                    value.push_str(next.trim());
                }
            }
        }
        let id = match (value.find('<'), value.find('>')) {
            (Some(a), Some(b)) if a < b => value[a + 1..b].trim().to_string(),
            _ => value.split_whitespace().next().unwrap_or("").to_string(),
        };
        if id.is_empty() || id.contains(char::is_whitespace) || id == own {
            continue;
        }
        if !out.contains(&id) {
            out.push(id);
        }
    }
}

/// Subject prefixes and first body lines that MTAs put on non-RFC 3464
/// bounces (Postfix, Exim, Sendmail, qmail, Exchange, Gmail, Yahoo, Domino,
/// GroupWise, Courier …). Matched only at the very start of the subject and
/// of the first lines of the body, so a customer forwarding a bounce ("Fwd:
/// Undelivered Mail …", or text of their own first) is not taken for one.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undelivered mail returned to sender",
    "undeliverable",
    "mail delivery failed",
    "mail delivery failure",
    "delivery status notification",
    "delivery failure",
    "delivery notification: delivery has failed",
    "returned mail:",
    "failure notice",
    "message status - undeliverable",
    "mail system error - returned mail",
    "notice: mail delivery status",
    "delayed mail (still being retried)",
    "warning: could not send message for past",
    "postmaster notify:",
    "non remis",
    "unzustellbar",
    "onbestelbaar",
    "non recapitabile",
    "ваше сообщение не доставлено",
];

const BOUNCE_BODY_STARTS: &[&str] = &[
    "this is the mail system at host",
    "this message was created automatically by mail delivery software",
    "hi. this is the qmail-send program",
    "the original message was received at",
    "delivery has failed to these recipients or groups",
    "your message did not reach some or all of the intended recipients",
    "delivery to the following recipient failed permanently",
    "delivery to the following recipients failed",
    "** address not found **",
    "** message not delivered **",
    "sorry, we were unable to deliver your message",
    "i'm afraid i wasn't able to deliver your message",
    "an error occurred while trying to deliver the mail to the following recipients",
    "your message could not be delivered",
    "message delivery has failed",
    "the following message to",
];

/// How many non-blank body lines count as "the start".
const BOUNCE_BODY_LINES: usize = 2;

fn has_bounce_text(subject: &str, text: &str) -> bool {
    let s = subject.trim();
    if BOUNCE_SUBJECTS.iter().any(|b| starts_with_ci(s, b)) {
        return true;
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(BOUNCE_BODY_LINES)
        .any(|l| BOUNCE_BODY_STARTS.iter().any(|b| starts_with_ci(l, b)))
}

/// Out-of-office subject prefixes written by Exchange/Outlook (English and
/// the localisations our users meet) and by WP.pl's responder, as
/// `Prefix: original subject` or `[Prefix] original subject`. Only the exact
/// prefix form counts: "Out of office question" from a customer does not.
const OOO_SUBJECT_PREFIXES: &[&str] = &[
    "automatic reply",
    "out of office autoreply",
    "out of office",
    "automatische antwort",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "automatisch antwoord",
    "autosvar",
    "automaattinen vastaus",
    "automatická odpověď",
    "automatyczna odpowiedź",
    "automaatvastus",
    "автоматический ответ",
];

fn subject_ooo_marker(subject: &str) -> Option<String> {
    let s = subject.trim_start();
    let (s, bracketed) = match s.strip_prefix('[') {
        Some(rest) => (rest.trim_start(), true),
        None => (s, false),
    };
    for prefix in OOO_SUBJECT_PREFIXES {
        let Some(rest) = strip_prefix_ci(s, prefix) else {
            continue;
        };
        let rest = rest.trim_start();
        let closed = if bracketed {
            rest.starts_with(']')
        } else {
            rest.starts_with(':')
        };
        if closed {
            return Some(format!("subject: {prefix}"));
        }
    }
    None
}

// --- small helpers -------------------------------------------------------

/// Message ids from an id-parsed header, without brackets or whitespace.
fn ids(v: &HeaderValue<'_>) -> Vec<String> {
    let clean = |s: &str| {
        let s = s
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim();
        (!s.is_empty() && !s.contains(char::is_whitespace)).then(|| s.to_string())
    };
    match v {
        HeaderValue::Text(t) => clean(t).into_iter().collect(),
        HeaderValue::TextList(list) => list.iter().filter_map(|t| clean(t)).collect(),
        _ => Vec::new(),
    }
}

/// Our `Addr`s from one parsed address. A value like `a@x b@y` (two
/// addresses without a comma, seen from broken mailers) yields each.
fn to_addrs<'a>(a: &'a mail_parser::Addr<'_>) -> impl Iterator<Item = Addr> + 'a {
    let email = a.address().unwrap_or("").trim();
    let name = a
        .name()
        .map(|n| one_line(n.trim().trim_matches('"')))
        .filter(|n| !n.is_empty());
    let many = email.contains(char::is_whitespace);
    email
        .split_whitespace()
        .filter(move |e| !many || e.contains('@'))
        .map(move |e| Addr {
            name: name.clone(),
            ..Addr::new(e)
        })
}

fn first_addr(v: &HeaderValue<'_>) -> Option<Addr> {
    v.as_address()?.iter().flat_map(to_addrs).next()
}

fn push_addrs(v: &HeaderValue<'_>, out: &mut Vec<Addr>) {
    if let Some(list) = v.as_address() {
        out.extend(list.iter().flat_map(to_addrs));
    }
}

/// A raw header value as text, unfolded and trimmed.
fn raw_text(v: &HeaderValue<'_>) -> Option<String> {
    match v {
        HeaderValue::Text(t) => Some(unfold(t)),
        HeaderValue::TextList(list) => Some(unfold(&list.join(" "))),
        _ => None,
    }
}

fn lower_value(v: &HeaderValue<'_>) -> Option<String> {
    raw_text(v)
        .map(|s| s.to_lowercase())
        .filter(|s| !s.is_empty())
}

/// RFC 5322 §2.2.3 unfolding: drop the line breaks, keep the whitespace.
fn unfold(s: &str) -> String {
    if !s.contains(['\r', '\n']) {
        return s.trim().to_string();
    }
    s.chars()
        .filter(|&c| c != '\r' && c != '\n')
        .collect::<String>()
        .trim()
        .to_string()
}

/// Decoded header text on one line (a stray CR/LF would break log lines).
fn one_line(s: &str) -> String {
    let s = s.trim();
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ")
    } else {
        s.to_string()
    }
}

/// `List-Id: "Name" <list.example.com>` → `list.example.com`.
fn list_id(v: &str) -> Option<String> {
    let id = match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v,
    };
    let id = id.trim().to_ascii_lowercase();
    (!id.is_empty()).then_some(id)
}

/// The queue id in a Received header: the token after ` id `, as Postfix
/// writes `by host (Postfix) with ESMTP id 4XbQ2…;` or `with LMTP id …`.
fn received_id(v: &str) -> Option<String> {
    let mut words = v.split_whitespace();
    while let Some(w) = words.next() {
        if w.eq_ignore_ascii_case("id") {
            let id = words
                .next()?
                .trim_end_matches([';', ',', ')'])
                .trim_start_matches('<')
                .trim_end_matches('>');
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic()) {
                return Some(id.to_string());
            }
            return None;
        }
    }
    None
}

fn rfc3339(d: &mail_parser::DateTime) -> Option<String> {
    let civil = jiff::civil::DateTime::new(
        i16::try_from(d.year).ok()?,
        i8::try_from(d.month).ok()?,
        i8::try_from(d.day).ok()?,
        i8::try_from(d.hour).ok()?,
        i8::try_from(d.minute).ok()?,
        i8::try_from(d.second).ok()?,
        0,
    )
    .ok()?;
    let secs = i32::from(d.tz_hour) * 3600 + i32::from(d.tz_minute) * 60;
    let secs = if d.tz_before_gmt { -secs } else { secs };
    let offset = jiff::tz::Offset::from_seconds(secs).ok()?;
    let ts = offset.to_timestamp(civil).ok()?;
    Some(ts.to_string())
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    strip_prefix_ci(s, prefix).is_some()
}

/// Case-insensitive `strip_prefix` (Unicode-aware for the non-ASCII
/// prefixes: compares char by char in lower case).
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix.is_ascii() {
        let head = s.get(..prefix.len())?;
        return head
            .eq_ignore_ascii_case(prefix)
            .then(|| &s[prefix.len()..]);
    }
    let mut rest = s.char_indices();
    for pc in prefix.chars() {
        let (_, c) = rest.next()?;
        if !c.to_lowercase().eq(pc.to_lowercase()) {
            return None;
        }
    }
    let at = rest.next().map_or(s.len(), |(i, _)| i);
    Some(&s[at..])
}

/// ASCII case-insensitive substring test (needle must be lower-case ASCII).
fn contains_ci(hay: &str, needle: &str) -> bool {
    let n = needle.as_bytes();
    hay.as_bytes()
        .windows(n.len())
        .any(|w| w.eq_ignore_ascii_case(n))
}

fn floor_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

// --- raw-byte helpers ----------------------------------------------------

/// Is the message written with CR-only line ends? Judged by its first line.
fn first_line_ends_in_lone_cr(raw: &[u8]) -> bool {
    match raw.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) => raw[i] == b'\r' && raw.get(i + 1) != Some(&b'\n'),
        None => false,
    }
}

fn lone_cr_to_lf(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    for i in 0..out.len() {
        if out[i] == b'\r' && out.get(i + 1) != Some(&b'\n') {
            out[i] = b'\n';
        }
    }
    out
}

/// Byte offset after the first blank line (LF or CRLF), or the length when
/// there is none. Used only when mail-parser could not run.
fn find_body_offset(raw: &[u8]) -> usize {
    let mut i = 0;
    let mut at_line_start = true;
    while i < raw.len() {
        if at_line_start {
            if raw[i] == b'\n' {
                return i + 1;
            }
            if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                return i + 2;
            }
        }
        at_line_start = raw[i] == b'\n';
        i += 1;
    }
    raw.len()
}

/// SHA-256 (hex) of `buf` without the `skip` ranges (sorted, disjoint), line
/// ends normalised to LF.
fn content_hash(buf: &[u8], skip: &[(usize, usize)]) -> String {
    let mut h = Sha256::new();
    let mut at = 0;
    for &(a, b) in skip {
        let (a, b) = (a.min(buf.len()), b.min(buf.len()));
        if a < at || b < a {
            continue;
        }
        update_normalized(&mut h, &buf[at..a]);
        at = b;
    }
    update_normalized(&mut h, &buf[at..]);
    hex(&h.finalize())
}

fn update_normalized(h: &mut Sha256, s: &[u8]) {
    // LF mail: hash as is (`contains` on bytes is a fast memchr).
    if !s.contains(&b'\r') {
        h.update(s);
        return;
    }
    // CRLF mail: copy the runs between CRs into a buffer and hash that in
    // big blocks; an `update` per line costs as much as the hashing itself.
    let mut out = BlockWriter {
        h,
        buf: [0u8; 8192],
        n: 0,
    };
    let mut rest = s;
    while let Some(i) = rest.iter().position(|&b| b == b'\r') {
        out.write(&rest[..i]);
        out.write(b"\n");
        let skip = if rest.get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[i + skip..];
    }
    out.write(rest);
    out.flush();
}

struct BlockWriter<'a> {
    h: &'a mut Sha256,
    buf: [u8; 8192],
    n: usize,
}

impl BlockWriter<'_> {
    fn write(&mut self, mut s: &[u8]) {
        while !s.is_empty() {
            let take = s.len().min(self.buf.len() - self.n);
            self.buf[self.n..self.n + take].copy_from_slice(&s[..take]);
            self.n += take;
            s = &s[take..];
            if self.n == self.buf.len() {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        self.h.update(&self.buf[..self.n]);
        self.n = 0;
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Fixture access shared by the ingest tests (parse, classify, quote).
#[cfg(test)]
pub(crate) mod fixtures {
    use std::path::{Path, PathBuf};

    pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/mail");

    /// The `.eml` files directly in `fixtures/mail/<folder>`, sorted. Panics
    /// when there are none, so a test can never pass vacuously.
    pub fn emls(folder: &str) -> Vec<PathBuf> {
        let dir = Path::new(ROOT).join(folder);
        let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixture folder {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect();
        out.sort();
        assert!(!out.is_empty(), "no fixtures in {}", dir.display());
        out
    }

    /// Every `.eml` under `fixtures/mail/**`.
    pub fn all_emls() -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).expect("read fixture dir") {
                let p = e.expect("dir entry").path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "eml") {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(Path::new(ROOT), &mut out);
        out.sort();
        out
    }

    pub fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn read_in(folder: &str, name: &str) -> Vec<u8> {
        read(&Path::new(ROOT).join(folder).join(name))
    }

    /// A folder's index.json (copied from the corpus with the files).
    pub fn index(folder: &str) -> serde_json::Map<String, serde_json::Value> {
        let raw = read(&Path::new(ROOT).join(folder).join("index.json"));
        match serde_json::from_slice(&raw).expect("index.json parses") {
            serde_json::Value::Object(m) => m,
            _ => panic!("index.json of {folder} is not an object"),
        }
    }

    pub fn name(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The Return-Path of a stored message, as the envelope sender it
    /// records (`<>` → ""), or None when the message has none.
    pub fn return_path(raw: &[u8]) -> Option<String> {
        let text = String::from_utf8_lossy(raw);
        for line in text.lines() {
            if line.trim().is_empty() {
                break;
            }
            if let Some(v) = line
                .get(..12)
                .filter(|h| h.eq_ignore_ascii_case("return-path:"))
                .map(|_| &line[12..])
            {
                let v = v
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .trim();
                return Some(v.to_string());
            }
        }
        None
    }

    /// LF line ends (CRLF → LF; lone CRs kept).
    pub fn to_lf(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
                i += 1;
                continue;
            }
            out.push(raw[i]);
            i += 1;
        }
        out
    }

    /// CRLF line ends (every LF preceded by CR).
    pub fn to_crlf(raw: &[u8]) -> Vec<u8> {
        let lf = to_lf(raw);
        let mut out = Vec::with_capacity(lf.len() + lf.len() / 16);
        for &b in &lf {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{all_emls, emls, index, name, read, read_in, to_crlf, to_lf};
    use super::*;

    fn has_lone_cr(raw: &[u8]) -> bool {
        raw.iter()
            .enumerate()
            .any(|(i, &b)| b == b'\r' && raw.get(i + 1) != Some(&b'\n'))
    }

    fn assert_sane(p: &Parsed, raw: &[u8], what: &str) {
        assert!(!p.message_id.is_empty(), "{what}: empty message_id");
        assert_eq!(p.content_hash.len(), 64, "{what}: content_hash");
        assert!(
            p.content_hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{what}"
        );
        assert!(p.body_offset <= raw.len(), "{what}: body_offset past end");
        assert!(!p.content_type.is_empty(), "{what}: content_type");
        assert!(p.text.len() <= TEXT_CAP, "{what}: text not capped");
        if p.message_id_derived {
            assert!(p.message_id.starts_with("derived."), "{what}");
        }
    }

    #[test]
    fn every_fixture_parses_in_lf_and_crlf() {
        let files = all_emls();
        // Our six folders hold 295 messages; others may add more.
        assert!(files.len() >= 295, "only {} fixtures found", files.len());
        for f in &files {
            let raw = read(f);
            let what = f.display().to_string();
            let p = parse(&raw);
            assert_sane(&p, &raw, &what);
            let lf = to_lf(&raw);
            let crlf = to_crlf(&raw);
            let p_lf = parse(&lf);
            let p_crlf = parse(&crlf);
            assert_sane(&p_lf, &lf, &format!("{what} (LF)"));
            assert_sane(&p_crlf, &crlf, &format!("{what} (CRLF)"));
            if !has_lone_cr(&raw) {
                // Line ends do not change what the message is.
                assert_eq!(p.content_hash, p_lf.content_hash, "{what}: LF hash");
                assert_eq!(p.content_hash, p_crlf.content_hash, "{what}: CRLF hash");
                assert_eq!(p.message_id, p_lf.message_id, "{what}: LF id");
                assert_eq!(p.message_id, p_crlf.message_id, "{what}: CRLF id");
                assert_eq!(p.subject, p_crlf.subject, "{what}: CRLF subject");
                assert_eq!(p.from, p_crlf.from, "{what}: CRLF from");
            }
        }
    }

    #[test]
    fn mangled_fixtures_never_panic() {
        for f in all_emls().iter().step_by(3) {
            let raw = read(f);
            // Truncated anywhere: mid-header, mid-boundary, mid-base64.
            for cut in [
                1,
                7,
                raw.len() / 5,
                raw.len() / 3,
                raw.len() / 2,
                raw.len() - 1,
            ] {
                let p = parse(&raw[..cut.min(raw.len())]);
                assert!(!p.message_id.is_empty(), "{} cut at {cut}", f.display());
            }
            // NULs and 8-bit bytes sprinkled through it.
            let mut bad = raw.clone();
            for i in (0..bad.len()).step_by(97) {
                bad[i] = if i % 2 == 0 { 0 } else { 0xff };
            }
            let p = parse(&bad);
            assert!(!p.message_id.is_empty(), "{} mangled", f.display());
        }
    }

    #[test]
    fn empty_input() {
        let p = parse(b"");
        assert!(p.message_id_derived);
        assert!(
            p.message_id.starts_with("derived.") && p.message_id.ends_with("@postdesk.invalid")
        );
        assert_eq!(p.body_offset, 0);
        assert_eq!(p.text, "");
        assert!(
            p.problems.iter().any(|x| x == "no headers"),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn no_headers_at_all() {
        let raw = b"just some words with no colon";
        let p = parse(raw);
        assert_eq!(p.text, "just some words with no colon");
        assert_eq!(p.body_offset, 0);
        assert!(p.message_id_derived);
    }

    #[test]
    fn nul_bytes_are_noted_not_fatal() {
        let raw = b"From: a@example.com\nSubject: nul\0here\nMessage-ID: <n@x>\n\nbo\0dy\n";
        let p = parse(raw);
        assert_eq!(p.message_id, "n@x");
        assert!(
            p.problems.iter().any(|x| x == "NUL bytes"),
            "{:?}",
            p.problems
        );
    }

    #[test]
    fn cr_only_line_ends_are_read() {
        let raw = b"From: A <A@Example.COM>\rSubject: cr only\rMessage-ID: <cr@x>\r\rline one\rline two\r";
        let p = parse(raw);
        assert_eq!(p.subject, "cr only");
        assert_eq!(p.message_id, "cr@x");
        assert_eq!(
            p.from.as_ref().map(|a| a.email.as_str()),
            Some("a@example.com")
        );
        assert_eq!(&raw[p.body_offset..], b"line one\rline two\r");
        assert_eq!(p.text, "line one\nline two\n");
        assert!(p.problems.iter().any(|x| x == "CR-only line ends"));
        // The fixtures written with CR only read like their CRLF twins.
        let cr = parse(&read_in("malformed", "sisimai-cr-only-lhost-amavis-01.eml"));
        let crlf = parse(&read_in("malformed", "sisimai-crlf-lhost-amavis-01.eml"));
        assert_eq!(cr.message_id, crlf.message_id);
        assert_eq!(cr.subject, crlf.subject);
        assert_eq!(cr.returned_message_ids, crlf.returned_message_ids);
        assert_eq!(cr.content_hash, crlf.content_hash);
    }

    #[test]
    fn eight_bit_garbage_in_headers() {
        let raw = b"From: \xe9\xe8 <x@example.com>\nSubject: caf\xe9 \xff\xfe\nMessage-ID: <g@x>\n\nbody\n";
        let p = parse(raw);
        assert_eq!(p.message_id, "g@x");
        assert_eq!(
            p.from.as_ref().map(|a| a.email.as_str()),
            Some("x@example.com")
        );
        assert!(p.subject.starts_with("caf"));
        assert!(p
            .problems
            .iter()
            .any(|x| x == "8-bit header bytes not UTF-8"));
    }

    const FULL: &str = "Received: from mx.example.com (mx.example.com [192.0.2.1])\r
\tby desk.example.com (Postfix) with LMTP id 4XbQ2k5Zz9z1;\r
\tMon, 2 Jun 2025 10:00:01 +0300 (EEST)\r
Received: from out.customer.test by mx.example.com (Postfix) with ESMTPS id 4XbQ1AAAA;\r
\tMon, 2 Jun 2025 10:00:00 +0300\r
Return-Path: <Bob@Customer.TEST>\r
From: =?UTF-8?Q?B=C3=B6b?= Customer <Bob@Customer.TEST>\r
Sender: Relay <relay@customer.test>\r
Reply-To: bob.private@customer.test\r
To: Support <SUPPORT@example.com>, alice@example.com\r
Cc: \"Carol\" <carol@customer.test>\r
Subject: =?UTF-8?B?VMOkaHRpcw==?= =?UTF-8?B?IGFzaWE=?= [SUP-12]\r
Date: Mon, 2 Jun 2025 09:59:58 +0300\r
Message-ID: <abc.123@customer.test>\r
In-Reply-To: <ack.SUP-12@example.com>\r
References: <first@customer.test>\r
 <ack.SUP-12@example.com>\r
Thread-Index: AdoBHLGUtaY+wvYtQv2Hq3qNQk\r
 YWnA==\r
Thread-Topic: =?UTF-8?Q?T=C3=A4htis_asia?=\r
Auto-Submitted: No\r
Precedence: Bulk\r
List-Id: Customers <customers.lists.test>\r
List-Unsubscribe: <mailto:leave@lists.test>\r
X-Autoreply: yes\r
X-Auto-Response-Suppress: DR, OOF\r
X-Postdesk-Loop: support@example.com\r
X-Postdesk-Kind: ACK\r
MIME-Version: 1.0\r
Content-Type: text/plain;\r
 charset=utf-8\r
Content-Transfer-Encoding: quoted-printable\r
\r
Tere! T=C3=A4htis asia.\r
";

    #[test]
    fn every_field_of_a_full_message() {
        let raw = FULL.as_bytes();
        let p = parse(raw);
        assert_eq!(p.message_id, "abc.123@customer.test");
        assert!(!p.message_id_derived);
        assert_eq!(p.in_reply_to, ["ack.SUP-12@example.com"]);
        assert_eq!(
            p.references,
            ["first@customer.test", "ack.SUP-12@example.com"]
        );
        let ti = p.thread_index.as_deref().expect("thread index");
        assert_eq!(ti.len(), 22);
        assert_eq!(p.thread_topic.as_deref(), Some("Tähtis asia"));
        // Adjacent encoded words join without the space between them.
        assert_eq!(p.subject, "Tähtis asia [SUP-12]");
        let from = p.from.as_ref().expect("from");
        assert_eq!(from.email, "bob@customer.test");
        assert_eq!(from.name.as_deref(), Some("Böb Customer"));
        assert_eq!(
            p.sender.as_ref().map(|a| a.email.as_str()),
            Some("relay@customer.test")
        );
        assert_eq!(p.reply_to.len(), 1);
        let to: Vec<&str> = p.to.iter().map(|a| a.email.as_str()).collect();
        assert_eq!(to, ["support@example.com", "alice@example.com"]);
        assert_eq!(p.cc[0].name.as_deref(), Some("Carol"));
        assert_eq!(p.date.as_deref(), Some("2025-06-02T06:59:58Z"));
        assert_eq!(p.text, "Tere! Tähtis asia.\n");
        assert_eq!(p.auto_submitted.as_deref(), Some("no"));
        assert_eq!(p.precedence.as_deref(), Some("bulk"));
        assert_eq!(p.list_id.as_deref(), Some("customers.lists.test"));
        assert!(p.list_unsubscribe);
        assert!(p.x_autoreply);
        assert_eq!(p.x_auto_response_suppress.as_deref(), Some("dr, oof"));
        assert_eq!(p.x_postdesk_loop.as_deref(), Some("support@example.com"));
        assert_eq!(p.x_postdesk_kind.as_deref(), Some("ack"));
        assert_eq!(p.content_type, "text/plain");
        assert_eq!(p.report_type, None);
        assert!(p.returned_message_ids.is_empty());
        assert!(!p.bounce_text);
        assert!(!p.has_attachments);
        // The top Received is our own MTA's: its id, not the relay's.
        assert_eq!(p.queue_id.as_deref(), Some("4XbQ2k5Zz9z1"));
        assert_eq!(&raw[p.body_offset..], b"Tere! T=C3=A4htis asia.\r\n");
        assert_eq!(
            p.content_headers,
            [
                ("MIME-Version".to_string(), "1.0".to_string()),
                (
                    "Content-Type".to_string(),
                    "text/plain; charset=utf-8".to_string()
                ),
                (
                    "Content-Transfer-Encoding".to_string(),
                    "quoted-printable".to_string()
                ),
            ]
        );
        assert!(p.problems.is_empty(), "{:?}", p.problems);
    }

    #[test]
    fn content_hash_ignores_trace_fields_only() {
        let base = "From: a@example.com\nSubject: same\nMessage-ID: <h@x>\n\nbody\n";
        let traced = format!(
            "Return-Path: <a@example.com>\nDelivered-To: support@example.com\n\
             X-Original-To: support@example.com\nReceived: from a by b (Postfix) with\n\
             \tESMTP id 1234; Mon, 2 Jun 2025 10:00:00 +0300\n{base}"
        );
        // Trace fields are left out wherever they stand.
        let relayed = "Received: from c by d; Mon, 2 Jun 2025 10:00:00 +0300\n\
             From: a@example.com\nReceived: from x by y; Tue, 3 Jun 2025 10:00:00 +0300\n\
             Subject: same\nMessage-ID: <h@x>\n\nbody\n";
        let h = parse(base.as_bytes()).content_hash;
        assert_eq!(h, parse(traced.as_bytes()).content_hash);
        assert_eq!(h, parse(relayed.as_bytes()).content_hash);
        assert_eq!(h, parse(&to_crlf(base.as_bytes())).content_hash);
        // An mbox postmark is delivery metadata too.
        let mbox = format!("From a@example.com  Mon Jun  2 10:00:00 2025\n{base}");
        assert_eq!(h, parse(mbox.as_bytes()).content_hash);
        // Anything else counts.
        let other = base.replace("same", "different");
        assert_ne!(h, parse(other.as_bytes()).content_hash);
        let body = base.replace("body", "bodY");
        assert_ne!(h, parse(body.as_bytes()).content_hash);
        // And it is a real SHA-256 of the normalised bytes.
        let direct = hex(&Sha256::digest(base.as_bytes()));
        assert_eq!(h, direct);
    }

    #[test]
    fn derived_message_id_is_stable() {
        let raw = b"From: a@example.com\nSubject: no id\n\nbody\n";
        let p = parse(raw);
        assert!(p.message_id_derived);
        assert_eq!(
            p.message_id,
            format!("derived.{}@postdesk.invalid", &p.content_hash[..32])
        );
        assert_eq!(parse(raw).message_id, p.message_id);
        assert!(p.problems.iter().any(|x| x == "no Message-ID"));
        let with_trace = [
            b"Received: from x by y; Mon, 2 Jun 2025 10:00:00 +0300\n".as_slice(),
            raw,
        ]
        .concat();
        assert_eq!(parse(&with_trace).message_id, p.message_id);
    }

    #[test]
    fn body_offset_in_every_line_end_style() {
        let lf = b"Subject: x\n\nbody";
        assert_eq!(&lf[parse(lf).body_offset..], b"body");
        let crlf = b"Subject: x\r\n\r\nbody";
        assert_eq!(&crlf[parse(crlf).body_offset..], b"body");
        let no_body = b"Subject: x\r\nFrom: a@b.c\r\n";
        assert_eq!(parse(no_body).body_offset, no_body.len());
        let empty_body = b"Subject: x\n\n";
        assert_eq!(parse(empty_body).body_offset, empty_body.len());
        assert_eq!(find_body_offset(crlf), 14);
        assert_eq!(find_body_offset(lf), 12);
        assert_eq!(find_body_offset(no_body), no_body.len());
    }

    #[test]
    fn html_only_mail_is_turned_to_text() {
        let raw = b"From: a@example.com\nMessage-ID: <h@x>\nContent-Type: text/html; charset=utf-8\n\n<html><body><p>Hello <b>there</b></p><p>Second</p></body></html>\n";
        let p = parse(raw);
        assert!(p.text.contains("Hello there"), "{:?}", p.text);
        assert!(!p.text.contains('<'), "{:?}", p.text);
        let real = parse(&read_in("i18n", "rt-text-html-with-umlaut.eml"));
        assert_eq!(real.content_type, "text/html");
        assert!(
            !real.text.is_empty() && !real.text.contains("<"),
            "{:?}",
            real.text
        );
    }

    #[test]
    fn text_is_capped_on_a_char_boundary() {
        let body = "ä".repeat(TEXT_CAP);
        let raw = format!("From: a@example.com\nContent-Type: text/plain; charset=utf-8\n\n{body}");
        let p = parse(raw.as_bytes());
        assert!(p.text.len() <= TEXT_CAP && p.text.len() > TEXT_CAP - 4);
        assert!(p.text.chars().all(|c| c == 'ä'));
    }

    #[test]
    fn outlook_thread_index_and_topic() {
        let idx = index("outlook");
        let files = emls("outlook");
        assert_eq!(files.len(), 25);
        for f in files {
            let n = name(&f);
            let meta = &idx[&n];
            let p = parse(&read(&f));
            let want_ti = meta["thread_index"].as_bool().expect("thread_index flag");
            let want_tt = meta["thread_topic"].as_bool().expect("thread_topic flag");
            assert_eq!(p.thread_index.is_some(), want_ti, "{n}");
            assert_eq!(p.thread_topic.is_some(), want_tt, "{n}");
            if let Some(ti) = &p.thread_index {
                // 22-byte header, then 5 bytes per reply.
                assert!(
                    ti.len() >= 22 && (ti.len() - 22) % 5 == 0,
                    "{n}: {}",
                    ti.len()
                );
            }
        }
    }

    #[test]
    fn bounces_carry_the_original_message_id() {
        let idx = index("bounces");
        let files = emls("bounces");
        assert_eq!(files.len(), 88);
        let mut found = 0;
        let mut missing = Vec::new();
        for f in files {
            let n = name(&f);
            let p = parse(&read(&f));
            assert!(
                !p.returned_message_ids.contains(&p.message_id),
                "{n}: own id"
            );
            let included = idx[&n]["original_message_id_included"].as_bool() == Some(true);
            if included {
                if p.returned_message_ids.is_empty() {
                    missing.push(n);
                } else {
                    found += 1;
                }
            }
        }
        assert!(missing.is_empty(), "no returned id read from {missing:?}");
        assert_eq!(found, 73);
    }

    #[test]
    fn returned_ids_from_each_kind_of_copy() {
        // message/rfc822 part.
        let p = parse(&read_in("bounces", "sisimai-lhost-postfix-60.eml"));
        assert_eq!(
            p.returned_message_ids,
            ["20190429233445.2871D228E7A9@mail.example.co.jp"]
        );
        // Plain-text copy in the body (Exim).
        let p = parse(&read_in(
            "autoreplies/not-autoreply",
            "bounceparser-non-autoreply.eml",
        ));
        assert_eq!(
            p.returned_message_ids,
            ["200607250935.k6P9Zdos034419@bacchus.thegestalt.org"]
        );
        // MDN: Original-Message-ID in message/disposition-notification.
        let p = parse(&read_in(
            "autoreplies",
            "flanker-disposition-notification.eml",
        ));
        assert_eq!(p.returned_message_ids, ["199509192301.23456@example.org"]);
        // text/rfc822-headers.
        let raw = b"From: MAILER-DAEMON@example.com\nMessage-ID: <dsn@x>\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\nContent-Type: text/plain\n\nfailed\n--b\nContent-Type: message/delivery-status\n\nAction: failed\n--b\nContent-Type: text/rfc822-headers\n\nFrom: us@example.com\nMessage-ID:\n <orig@example.com>\n--b--\n";
        let p = parse(raw);
        assert_eq!(p.report_type.as_deref(), Some("delivery-status"));
        assert_eq!(p.returned_message_ids, ["orig@example.com"]);
        assert!(p.has_attachments);
    }

    #[test]
    fn bounce_texts_are_recognised() {
        let mut without = Vec::new();
        for f in emls("bounces") {
            if !parse(&read(&f)).bounce_text {
                without.push(name(&f));
            }
        }
        // ARF complaints and a few DSNs whose subject is the MTA's own
        // wording (they are recognised by other rules).
        assert_eq!(
            without,
            [
                "flanker-complaint-aol.eml",
                "flanker-complaint-yahoo.eml",
                "flanker-delayed-broken.eml",
                "sisimai-arf-01.eml",
                "sisimai-arf-17.eml",
                "sisimai-lhost-exchange2003-03.eml",
                "sisimai-rfc3464-08.eml",
            ]
        );
        // A forward of a bounce is not a bounce.
        let fwd = b"From: c@customer.test\nSubject: Fwd: Undelivered Mail Returned to Sender\n\nWhy did this bounce?\n\n-------- Forwarded Message --------\nThis is the mail system at host mx.example.com.\n";
        assert!(!parse(fwd).bounce_text);
    }

    #[test]
    fn broken_and_undecodable_parts_are_noted() {
        let p = parse(&read_in("malformed", "flanker-false-multipart.eml"));
        assert!(
            p.problems.iter().any(|x| x == "broken MIME boundary"),
            "{:?}",
            p.problems
        );
        // mail-parser's full_encoding decodes Shift_JIS: Japanese text, no
        // "undecodable charset" note.
        let p = parse(&read_in("i18n", "mail-japanese_shift_jis.eml"));
        assert!(
            !p.problems.iter().any(|x| x == "undecodable charset"),
            "{:?}",
            p.problems
        );
        assert!(
            p.text
                .chars()
                .any(|c| ('\u{3040}'..='\u{30ff}').contains(&c)
                    || ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "{}",
            p.text
        );
        let p = parse(&read_in("malformed", "flanker-missing-final-boundary.eml"));
        assert_eq!(p.text.trim(), "Some body");
    }

    #[test]
    fn i18n_headers_are_decoded() {
        let p = parse(&read_in("autoreplies", "bounceparser-polish-autoreply.eml"));
        assert!(
            p.subject.starts_with("[Automatyczna odpowiedź"),
            "{}",
            p.subject
        );
        assert_eq!(p.ooo_markers, ["subject: automatyczna odpowiedź"]);
        let p = parse(&read_in("i18n", "mail-utf8_headers.eml"));
        assert_eq!(p.subject, "Säying Hello");
        assert_eq!(
            p.from.as_ref().map(|a| a.email.as_str()),
            Some("jdöe@mächine.example")
        );
        let p = parse(&read_in("i18n", "rt-8859-15-series-msg1.eml"));
        assert_eq!(p.subject, "test äöüßÄÖÜß€");
    }

    #[test]
    fn out_of_office_markers() {
        let p = parse(&read_in("autoreplies", "sisimai-rfc3834-02.eml"));
        assert_eq!(p.ooo_markers, ["subject: automatic reply"]);
        let p = parse(&read_in("autoreplies", "sisimai-rfc3834-03.eml"));
        assert_eq!(p.ooo_markers, ["x-apple-action: vacation"]);
        let p = parse(&read_in("autoreplies", "bounceparser-boxbe-cr.eml"));
        assert_eq!(p.ooo_markers, ["challenge-response: boxbe"]);
        for (subject, want) in [
            (
                "Automatic reply: Invoice 12",
                Some("subject: automatic reply"),
            ),
            ("Out of Office: Invoice 12", Some("subject: out of office")),
            (
                "Automaattinen vastaus: Lasku",
                Some("subject: automaattinen vastaus"),
            ),
            (
                "Automatická odpověď: Faktura",
                Some("subject: automatická odpověď"),
            ),
            ("Automaatvastus: Arve", Some("subject: automaatvastus")),
            (
                "Réponse automatique : Facture",
                Some("subject: réponse automatique"),
            ),
            ("Autosvar: Faktura", Some("subject: autosvar")),
            ("Out of office question about billing", None),
            ("Re: Automatic reply: Invoice", None),
            ("Automatic replies stopped working", None),
        ] {
            assert_eq!(subject_ooo_marker(subject).as_deref(), want, "{subject}");
        }
    }

    #[test]
    fn fallback_without_the_parser() {
        // What `parse` returns should mail-parser ever panic.
        let raw = b"Subject: x\r\nFrom: a@example.com\r\n\r\nbody\r\n";
        let p = parse_fallback(raw);
        assert!(p.message_id_derived);
        assert_eq!(p.content_hash, parse(raw).content_hash);
        assert_eq!(&raw[p.body_offset..], b"body\r\n");
        assert!(p.problems.iter().any(|x| x == "parser failure"));
    }

    #[test]
    fn received_id_token() {
        assert_eq!(
            received_id("from a (a [1.2.3.4]) by mx.example.com (Postfix) with ESMTP id 4XbQ2k5Zz9z1; Mon, 2 Jun 2025").as_deref(),
            Some("4XbQ2k5Zz9z1")
        );
        assert_eq!(
            received_id("by mx (Postfix, from userid 505) id 70E0916581C3; Mon").as_deref(),
            Some("70E0916581C3")
        );
        assert_eq!(received_id("from a by b; Mon, 2 Jun 2025"), None);
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        let p = parse(b"Date: Tue, 1 Jul 2003 10:52:37 +0200\n\nx");
        assert_eq!(p.date.as_deref(), Some("2003-07-01T08:52:37Z"));
        let p = parse(b"Date: 31 Feb 2003 10:52:37 +0200\n\nx");
        assert_eq!(p.date, None);
        assert!(p.problems.iter().any(|x| x == "unreadable Date"));
        let p = parse(b"Date: yesterday\n\nx");
        assert_eq!(p.date, None);
    }

    #[test]
    fn two_addresses_without_a_comma() {
        let p = parse(&read_in("malformed", "mail-raw_email_multiple_from.eml"));
        assert_eq!(
            p.from.as_ref().map(|a| a.email.as_str()),
            Some("tim@powerupdev.com")
        );
    }

    #[test]
    fn clean_fixtures_report_no_problems() {
        for (folder, file) in [
            ("replies", "talon-gmail.eml"),
            ("outlook", "usrp-users-Microsoft-Outlook-16-0-85.eml"),
            ("bounces", "sisimai-lhost-postfix-60.eml"),
            ("i18n", "linux-can-body-koi8-r.eml"),
        ] {
            let p = parse(&read_in(folder, file));
            assert!(p.problems.is_empty(), "{file}: {:?}", p.problems);
        }
    }
}
