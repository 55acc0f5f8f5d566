//! Threading (SPEC §3.4): which ticket a message belongs to, by which rule,
//! and why. Every rule is evaluated so that a second ticket the keys point at
//! is recorded as related; the highest rule wins. Tickets are never merged
//! here.

use super::classify::{Classification, MailKind};
use super::Parsed;
use crate::config::Config;
use crate::store::{Result, View};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    Token,
    InReplyTo,
    References,
    /// An existing ticket already held this message's own id (its reply
    /// arrived first).
    ReverseReference,
    ThreadIndex,
    /// The original's Message-ID inside a bounce or auto-reply.
    Returned,
    /// No rule matched.
    New,
}

impl Rule {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rule::Token => "token",
            Rule::InReplyTo => "in-reply-to",
            Rule::References => "references",
            Rule::ReverseReference => "reverse-reference",
            Rule::ThreadIndex => "thread-index",
            Rule::Returned => "returned-original",
            Rule::New => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadMatch {
    pub ticket: Option<u64>,
    pub rule: Rule,
    pub why: String,
    /// Other tickets the message's keys pointed at.
    pub related: Vec<u64>,
    /// Tokens in the subject that were not counted, with the reason (for
    /// `explain` and the log: a stranger quoting someone's token).
    pub ignored_tokens: Vec<String>,
}

/// Ticket numbers of every `[PREFIX-N]` in the subject, in order.
/// Case-insensitive; spaces inside the brackets tolerated.
pub fn tokens(subject: &str, prefix: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let lower = subject.to_ascii_lowercase();
    let prefix = prefix.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut i = 0;
    while let Some(off) = lower[i..].find('[') {
        let start = i + off + 1;
        i = start;
        let rest = &lower[start..];
        let Some(end) = rest.find(']') else { break };
        let inner = rest[..end].trim();
        if let Some(num) = inner
            .strip_prefix(&prefix)
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('-'))
            .map(str::trim)
        {
            if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(n) = num.parse::<u64>() {
                    out.push(n);
                }
            }
        }
        // `i` stays inside the string: `start` indexes just past a '['.
        debug_assert!(i <= bytes.len());
    }
    out
}

/// Hex of the conversation part (first 22 bytes) of an Outlook Thread-Index.
pub fn conversation_key(thread_index: &[u8]) -> Option<String> {
    if thread_index.len() < 22 {
        return None;
    }
    Some(
        thread_index[..22]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// Forward prefixes in the languages our desks meet; Outlook keeps the
/// conversation when forwarding, so Thread-Index must not join a forward.
const FORWARD_PREFIXES: &[&str] = &[
    "fwd",
    "fw",
    "wg",
    "tr",
    "vs",
    "vb",
    "pd",
    "rv",
    "enc",
    "i",
    "doorst",
    "ed",
    "přeposlat",
];

const REPLY_PREFIXES: &[&str] = &[
    "re", "aw", "sv", "r", "res", "ref", "odp", "vs", "vl", "atb", "antw", "réf", "回复", "答复",
    "回覆",
];

fn split_prefix(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let colon = s.find([':', '：'])?;
    let word = s[..colon].trim();
    // "Re[2]" / "RE(3)" counters
    let word = word.split(['[', '(']).next().unwrap_or(word).trim();
    if word.is_empty() || word.chars().count() > 10 || word.contains(' ') {
        return None;
    }
    let rest = &s[colon + s[colon..].chars().next().map(|c| c.len_utf8()).unwrap_or(1)..];
    Some((word, rest))
}

pub fn is_forward(subject: &str) -> bool {
    let mut s = strip_tags(subject);
    while let Some((word, rest)) = split_prefix(s) {
        let w = word.to_lowercase();
        if FORWARD_PREFIXES.contains(&w.as_str()) {
            return true;
        }
        if !REPLY_PREFIXES.contains(&w.as_str()) {
            return false;
        }
        s = strip_tags(rest);
    }
    false
}

/// `SUP-12`, `sup - 12`: any prefix, a dash, digits. List tags such as
/// `[USRP-users]` or `[EXTERNAL]` are not.
fn looks_like_token(inner: &str) -> bool {
    match inner.split_once('-') {
        Some((p, n)) => {
            let (p, n) = (p.trim(), n.trim());
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Drops leading `[EXTERNAL]`-style tags (not ticket tokens) and spaces.
fn strip_tags(mut s: &str) -> &str {
    loop {
        let t = s.trim_start();
        if let Some(rest) = t.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                if !looks_like_token(&rest[..end]) {
                    s = &rest[end + 1..];
                    continue;
                }
            }
        }
        return t;
    }
}

/// The subject without reply/forward prefixes, list tags and ticket tokens:
/// what a ticket's `subject` field shows.
pub fn clean_subject(subject: &str, prefix: &str) -> String {
    let mut s = subject.trim();
    loop {
        let t = strip_tags(s);
        match split_prefix(t) {
            Some((word, rest))
                if REPLY_PREFIXES.contains(&word.to_lowercase().as_str())
                    || FORWARD_PREFIXES.contains(&word.to_lowercase().as_str()) =>
            {
                s = rest;
            }
            _ => {
                s = t;
                break;
            }
        }
    }
    let mut out = remove_tokens(s, prefix);
    out = out.split_whitespace().collect::<Vec<_>>().join(" ");
    out
}

fn remove_tokens(s: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('[') {
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let inner = &rest[open..open + close + 1];
        if tokens(inner, prefix).is_empty() {
            out.push_str(&rest[..open + close + 1]);
        } else {
            out.push_str(&rest[..open]);
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Public mail providers, never matched by domain (SPEC §3.6).
pub const PUBLIC_PROVIDERS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "ymail.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.ru",
    "yandex.ru",
    "yandex.com",
    "proton.me",
    "protonmail.com",
    "zoho.com",
    "mail.com",
    "mail.ee",
    "hot.ee",
    "neti.ee",
    "online.ee",
    "suomi24.fi",
    "luukku.com",
    "seznam.cz",
    "email.cz",
    "centrum.cz",
    "post.cz",
    "wp.pl",
    "o2.pl",
    "onet.pl",
    "interia.pl",
    "tlen.pl",
    "op.pl",
    "gazeta.pl",
    "qq.com",
    "163.com",
    "126.com",
    "t-online.de",
    "freenet.de",
    "libero.it",
    "orange.fr",
    "free.fr",
    "laposte.net",
    "yahoo.co.uk",
    "hotmail.co.uk",
    "outlook.de",
    "hotmail.de",
    "fastmail.com",
    "tutanota.com",
    "inbox.lv",
    "inbox.lt",
];

pub fn is_public_provider(domain: &str, cfg: &Config) -> bool {
    let d = domain.to_ascii_lowercase();
    PUBLIC_PROVIDERS.contains(&d.as_str())
        || cfg
            .policy
            .extra_public_domains
            .iter()
            .any(|x| x.eq_ignore_ascii_case(&d))
}

/// May this sender use ticket `t`'s token? Staff, a participant, the same
/// customer, or the contact's own (non-public) domain.
fn may_use_token(
    ticket: &crate::store::Ticket,
    class: &Classification,
    sender_customer: Option<&str>,
    cfg: &Config,
) -> Option<&'static str> {
    let sender = class.sender.as_str();
    if class.staff {
        return Some("sender is staff");
    }
    if sender.is_empty() {
        return None;
    }
    if ticket.participants.iter().any(|p| p == sender) {
        return Some("sender is a participant");
    }
    if let (Some(a), Some(b)) = (sender_customer, ticket.customer.as_deref()) {
        if a == b {
            return Some("sender belongs to the ticket's customer");
        }
    }
    let cd = crate::config::domain_of(&ticket.contact);
    let sd = crate::config::domain_of(sender);
    if !cd.is_empty() && cd.eq_ignore_ascii_case(sd) && !is_public_provider(cd, cfg) {
        return Some("sender is at the contact's domain");
    }
    None
}

/// Applies the SPEC's threading rules in order. `sender_customer` is the
/// customer the sender was identified as (for the token participant check).
pub fn thread(
    p: &Parsed,
    class: &Classification,
    sender_customer: Option<&str>,
    cfg: &Config,
    view: &dyn View,
) -> Result<ThreadMatch> {
    let prefix = &cfg.support.token_prefix;
    // (ticket, rule, why) in rule order; first wins, the rest are related.
    let mut found: Vec<(u64, Rule, String)> = Vec::new();
    let mut ignored_tokens = Vec::new();

    // 1. Token in the subject, counted only from someone entitled to it.
    for n in tokens(&p.subject, prefix) {
        // A merged ticket's token means its survivor.
        match crate::workflow::merge::resolve(view, n)? {
            Some(t) => match may_use_token(&t, class, sender_customer, cfg) {
                Some(reason) => {
                    let via = if t.number == n {
                        String::new()
                    } else {
                        format!(" (merged into {prefix}-{})", t.number)
                    };
                    found.push((
                        t.number,
                        Rule::Token,
                        format!("[{prefix}-{n}] in subject{via}, {reason}"),
                    ));
                    break;
                }
                None => ignored_tokens.push(format!(
                    "{prefix}-{n}: {} is not a participant of it",
                    if class.sender.is_empty() {
                        "<no sender>"
                    } else {
                        &class.sender
                    }
                )),
            },
            None => ignored_tokens.push(format!("{prefix}-{n}: no such ticket")),
        }
    }

    // 2. In-Reply-To, then References newest first, among thread keys.
    let follow = crate::workflow::merge::follow;
    for id in &p.in_reply_to {
        if let Some(n) = view
            .ticket_by_key(id)?
            .map(|n| follow(view, n))
            .transpose()?
        {
            found.push((
                n,
                Rule::InReplyTo,
                format!("In-Reply-To <{id}> is a message of the ticket"),
            ));
            break;
        }
    }
    for id in p.references.iter().rev() {
        if let Some(n) = view
            .ticket_by_key(id)?
            .map(|n| follow(view, n))
            .transpose()?
        {
            found.push((
                n,
                Rule::References,
                format!("References <{id}> is a message of the ticket"),
            ));
            break;
        }
    }
    if let Some(n) = view
        .ticket_by_key(&p.message_id)?
        .map(|n| follow(view, n))
        .transpose()?
    {
        found.push((
            n,
            Rule::ReverseReference,
            format!(
                "a message of the ticket already referenced <{}>",
                p.message_id
            ),
        ));
    }

    // 3. Outlook conversation, never for a forward.
    if let Some(key) = p.thread_index.as_deref().and_then(conversation_key) {
        if is_forward(&p.subject) {
            // Outlook keeps the conversation on a forward: a new matter.
        } else if let Some(n) = view
            .ticket_by_conversation(&key)?
            .map(|n| follow(view, n))
            .transpose()?
        {
            found.push((
                n,
                Rule::ThreadIndex,
                format!("Thread-Index conversation {}… is the ticket's", &key[..12]),
            ));
        }
    }

    // 4. The original inside a bounce or auto-reply.
    if matches!(class.kind, MailKind::Bounce | MailKind::AutoReply) {
        for id in &p.returned_message_ids {
            if let Some(n) = view
                .ticket_by_key(id)?
                .map(|n| follow(view, n))
                .transpose()?
            {
                found.push((
                    n,
                    Rule::Returned,
                    format!("the returned original <{id}> is a message of the ticket"),
                ));
                break;
            }
        }
    }

    let mut related = Vec::new();
    let first = found.first().cloned();
    for (n, _, _) in &found {
        if Some(*n) != first.as_ref().map(|f| f.0) && !related.contains(n) {
            related.push(*n);
        }
    }
    Ok(match first {
        Some((n, rule, why)) => ThreadMatch {
            ticket: Some(n),
            rule,
            why,
            related,
            ignored_tokens,
        },
        None => ThreadMatch {
            ticket: None,
            rule: Rule::New,
            why: "no token, reference or conversation matched".into(),
            related,
            ignored_tokens,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens() {
        assert_eq!(tokens("Re: Printer [SUP-12]", "SUP"), vec![12]);
        assert_eq!(tokens("re: [ sup - 7 ] and [SUP-8]", "SUP"), vec![7, 8]);
        assert_eq!(
            tokens("[SUPX-1] [SUP-] [SUP-1a] [SUP 3]", "SUP"),
            Vec::<u64>::new()
        );
        assert_eq!(tokens("[", "SUP"), Vec::<u64>::new());
        assert_eq!(tokens("ä[SUP-5]ö", "SUP"), vec![5]);
    }

    #[test]
    fn forwards() {
        assert!(is_forward("Fwd: hello"));
        assert!(is_forward("RE: FW: hello"));
        assert!(is_forward("WG: Rechnung"));
        assert!(is_forward("[EXTERNAL] TR: facture"));
        assert!(!is_forward("Re: hello"));
        assert!(!is_forward("Invoice: March"));
        assert!(!is_forward("hello"));
    }

    #[test]
    fn cleans_subjects() {
        assert_eq!(
            clean_subject("Re: AW: Printer broken [SUP-12]", "SUP"),
            "Printer broken"
        );
        assert_eq!(clean_subject("[EXTERNAL] RE: Re[2]: x", "SUP"), "x");
        assert_eq!(clean_subject("Invoice: March", "SUP"), "Invoice: March");
        assert_eq!(clean_subject("回复: 你好", "SUP"), "你好");
        assert_eq!(
            clean_subject("Re: [USRP-users] Re: E320 clock", "SUP"),
            "E320 clock"
        );
        assert_eq!(clean_subject("", "SUP"), "");
    }

    #[test]
    fn conversation_keys() {
        assert_eq!(conversation_key(&[1u8; 21]), None);
        let k = conversation_key(&[0xabu8; 27]).unwrap();
        assert_eq!(k.len(), 44);
        assert_eq!(conversation_key(&[0xabu8; 22]).unwrap(), k);
    }
}
