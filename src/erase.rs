//! Right to erasure (`postdesk forget ADDRESS`) and right of access
//! (`postdesk export --person ADDRESS`), issue #10 item 6;
//! docs/operations.md "Erasure (forget)" and "Right of access".
//!
//! `forget` works in three passes, each safe to run again if the one before
//! it was interrupted:
//! 1. the spool, walked file by file: the person's own messages are zeroed,
//!    and every other record that names them (address, its
//!    quoted-printable form, their display name) is masked in place with
//!    bytes of the same length, so every `SpoolRef` stays valid but for
//!    its `check`; each file is synced;
//! 2. the store, one transaction per ticket (read again by key inside it):
//!    their own message records deleted, the address replaced by a stable
//!    pseudonym in ticket, message and outbox records, checks updated,
//!    their index entries dropped, pending mail to them dropped;
//! 3. the store rewrite ([`crate::store::rewrite`]): sled's stale copies of
//!    the old values are only gone once the store is copied afresh.
//!
//! The log names the pseudonym, never the address: a log line would
//! otherwise keep what was just erased.

use crate::config::Config;
use crate::control::outbox::{entry_json, EntryJson};
use crate::ingest::decide::token;
use crate::store::spool;
use crate::store::{
    Dropped, MessageRecord, OutboxEntry, OutboxState, Store, StoredIds, Ticket, Timestamp,
};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a mail address (local@domain, no spaces)")]
    BadAddress(String),
    #[error("{0} is the desk's own address: forget erases a person, and every stored mail names this one")]
    DeskAddress(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("the desk's secret {path}: {source}")]
    Secret {
        path: String,
        source: std::io::Error,
    },
}

/// The address as stored (lower-case), checked.
pub fn normalise(address: &str) -> Result<String, Error> {
    let a = address.trim().to_ascii_lowercase();
    let ok = a.len() >= 3
        && !a.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
        && a.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if ok {
        Ok(a)
    } else {
        Err(Error::BadAddress(address.to_string()))
    }
}

/// `forgotten-<8 hex>@invalid`: the same address always gives the same
/// pseudonym (tickets of one person still belong together, and a second
/// `forget` finds nothing new), keyed with the desk's secret so it cannot
/// be reversed by hashing a list of addresses.
pub fn pseudonym(data_dir: &Path, address: &str) -> Result<String, Error> {
    let path = data_dir.join(crate::workflow::links::SECRET_FILE);
    crate::workflow::links::load_or_create_secret(data_dir).map_err(|source| Error::Secret {
        path: path.display().to_string(),
        source,
    })?;
    let key = std::fs::read(&path).map_err(|source| Error::Secret {
        path: path.display().to_string(),
        source,
    })?;
    Ok(pseudonym_with(&key, address))
}

pub fn pseudonym_with(key: &[u8], address: &str) -> String {
    type H = Hmac<Sha256>;
    let mut mac = match H::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => return "forgotten@invalid".into(),
    };
    mac.update(b"postdesk forget\0");
    mac.update(address.trim().to_ascii_lowercase().as_bytes());
    let d = mac.finalize().into_bytes();
    format!(
        "forgotten-{:02x}{:02x}{:02x}{:02x}@invalid",
        d[0], d[1], d[2], d[3]
    )
}

/// Positions of `needle` in `hay`, ASCII case-insensitive, not overlapping.
pub fn find_ci(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if needle.is_empty() || hay.len() < needle.len() {
        return out;
    }
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if hay[i..i + needle.len()].eq_ignore_ascii_case(needle) {
            out.push(i);
            i += needle.len();
        } else {
            i += 1;
        }
    }
    out
}

pub fn contains_ci(hay: &str, needle: &str) -> bool {
    !find_ci(hay.as_bytes(), needle.as_bytes()).is_empty()
}

/// `s` with every case variant of `needle` replaced by `with`.
pub fn replace_ci(s: &str, needle: &str, with: &str) -> String {
    let at = find_ci(s.as_bytes(), needle.as_bytes());
    if at.is_empty() {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut last = 0;
    for i in at {
        // `needle` is ASCII-matched, so both ends fall on char boundaries
        // whenever the needle itself is valid UTF-8 starting and ending on
        // whole characters; the `get` keeps a bad cut from panicking.
        match (s.get(last..i), s.get(i..i + needle.len())) {
            (Some(before), Some(_)) => {
                out.push_str(before);
                out.push_str(with);
                last = i + needle.len();
            }
            _ => continue,
        }
    }
    out.push_str(s.get(last..).unwrap_or(""));
    out
}

/// What is masked in raw bytes: the address, its quoted-printable and
/// URL-encoded forms, and the person's display names.
fn raw_needles(address: &str, names: &BTreeSet<String>) -> Vec<Vec<u8>> {
    let mut v = vec![
        address.as_bytes().to_vec(),
        address.replace('@', "=40").into_bytes(),
        address.replace('@', "%40").into_bytes(),
    ];
    for n in names {
        if n.chars().filter(|c| c.is_alphanumeric()).count() >= 3 {
            v.push(n.as_bytes().to_vec());
        }
    }
    v
}

/// Masks every case variant of each needle in place, keeping the length
/// and the shape (letters and digits become `x`, punctuation stays, so a
/// header still parses as an address). How many were masked.
pub fn mask(bytes: &mut [u8], needles: &[Vec<u8>]) -> usize {
    let mut n = 0;
    for needle in needles {
        for i in find_ci(bytes, needle) {
            for b in &mut bytes[i..i + needle.len()] {
                if b.is_ascii_alphanumeric() || *b >= 0x80 {
                    *b = b'x';
                }
            }
            n += 1;
        }
    }
    n
}

/// Replaces a person in text fields of the store.
#[derive(Debug, Clone)]
pub struct Scrub {
    pub address: String,
    pub pseudonym: String,
    pub names: BTreeSet<String>,
}

impl Scrub {
    pub fn text(&self, s: &str) -> String {
        let mut out = replace_ci(s, &self.address, &self.pseudonym);
        for n in &self.names {
            if n.trim().chars().count() >= 3 {
                out = replace_ci(&out, n, "(forgotten)");
            }
        }
        out
    }

    /// A Message-ID: the address replaced, and a local part that comes
    /// with the domain (`1234.mari.tamm@cust.test`) too.
    pub fn id(&self, s: &str) -> String {
        let out = replace_ci(s, &self.address, &self.pseudonym);
        match self.address.split_once('@') {
            Some((local, domain)) if local.len() >= 4 && contains_ci(&out, domain) => {
                let tag = self
                    .pseudonym
                    .split_once('@')
                    .map(|(l, _)| l)
                    .unwrap_or("forgotten");
                replace_ci(&out, local, tag)
            }
            _ => out,
        }
    }

    pub fn id_reveals(&self, s: &str) -> bool {
        self.id(s) != s
    }

    fn list(&self, v: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(v.len());
        for x in v {
            let y = self.text(x);
            if !out.contains(&y) {
                out.push(y);
            }
        }
        out
    }

    pub fn mentions(&self, s: &str) -> bool {
        self.text(s) != s
    }

    /// The ticket with the person replaced. Where they are the contact,
    /// their own words (description, last excerpt) and name go too.
    pub fn ticket(&self, t: &Ticket) -> Ticket {
        let mut t = t.clone();
        if t.contact.trim().eq_ignore_ascii_case(&self.address) {
            t.contact_name = None;
            t.description = String::new();
            t.last_excerpt = String::new();
        }
        t.contact = self.text(&t.contact);
        t.contact_name = t.contact_name.as_deref().map(|n| self.text(n));
        t.subject = self.text(&t.subject);
        t.description = self.text(&t.description);
        t.last_excerpt = self.text(&t.last_excerpt);
        t.participants = self.list(&t.participants);
        t.watchers = self.list(&t.watchers);
        t.message_ids = t.message_ids.iter().map(|i| self.id(i)).collect();
        t.last_customer_message = t.last_customer_message.as_deref().map(|i| self.id(i));
        for f in &mut t.delivery_failures {
            f.recipients = self.list(&f.recipients);
            f.reply = self.text(&f.reply);
        }
        if let Some(r) = &mut t.rating {
            r.comment = r.comment.as_deref().map(|c| self.text(c));
        }
        t
    }

    pub fn message(&self, m: &MessageRecord) -> MessageRecord {
        let mut m = m.clone();
        m.message_id = self.id(&m.message_id);
        m.internal_id = self.id(&m.internal_id);
        m.from = self.text(&m.from);
        m.to = self.list(&m.to);
        m.cc = self.list(&m.cc);
        m.subject = self.text(&m.subject);
        m.excerpt = self.text(&m.excerpt);
        m
    }

    pub fn outbox(&self, e: &OutboxEntry) -> OutboxEntry {
        let mut e = e.clone();
        e.mail_from = self.text(&e.mail_from);
        e.rcpt_to = self.list(&e.rcpt_to);
        e.message_id = self.id(&e.message_id);
        e.last_reply = e.last_reply.as_deref().map(|r| self.text(r));
        // The head is text we generated; masking keeps it a valid mail.
        let mut head = e.head.clone();
        mask(&mut head, &raw_needles(&self.address, &self.names));
        e.head = head;
        e
    }

    fn stored_ids(&self, s: StoredIds) -> StoredIds {
        StoredIds {
            variants: s
                .variants
                .into_iter()
                .map(|(h, id)| (h, self.id(&id)))
                .collect(),
        }
    }

    fn is_self(&self, a: &str) -> bool {
        a.trim().eq_ignore_ascii_case(&self.address)
    }
}

/// What `forget` did (the control socket's answer and the log line).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Forgotten {
    pub pseudonym: String,
    pub tickets: usize,
    /// Their own messages: records deleted, raw bytes zeroed.
    pub messages_erased: usize,
    /// Other messages that named them: records rewritten.
    pub messages_redacted: usize,
    /// Spool records overwritten in place (zeroed or masked).
    pub raw_overwritten: usize,
    pub outbox: usize,
    /// Pending mail to them, dropped.
    pub outbox_dropped: usize,
    pub thread_keys: usize,
    /// `pending`: the store is rewritten at its next open (the daemon's
    /// next start); `done`: already rewritten.
    pub rewrite: String,
    pub by: String,
}

type Loc = (u32, u64);

/// Erases `address` from the store and the spool (passes 1 and 2) and
/// leaves the store-rewrite mark (pass 3 happens at the next open).
pub fn forget(store: &Store, cfg: &Config, address: &str, by: &str) -> Result<Forgotten, Error> {
    let address = normalise(address)?;
    if cfg.support_tag(&address).is_some() {
        return Err(Error::DeskAddress(address));
    }
    // Every node must give one person the same pseudonym: on PostgreSQL
    // the key is the shared secret in the database.
    let pseudo = match store {
        Store::Pg(p) => pseudonym_with(&p.load_or_create_secret()?, &address),
        Store::Sled(_) => pseudonym(&cfg.data_dir, &address)?,
    };
    let data_dir = store.data_dir().to_path_buf();

    // ---- what names them (scans, outside any transaction) ----
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut ticket_nums: BTreeSet<u64> = BTreeSet::new();
    let probe = Scrub {
        address: address.clone(),
        pseudonym: pseudo.clone(),
        names: BTreeSet::new(),
    };
    store.for_each_ticket(|t| {
        let json = serde_json::to_string(&t).unwrap_or_default();
        if contains_ci(&json, &address) || t.message_ids.iter().any(|i| probe.id_reveals(i)) {
            ticket_nums.insert(t.number);
            if probe.is_self(&t.contact) {
                if let Some(n) = t.contact_name.as_deref().map(str::trim) {
                    if !n.is_empty() {
                        names.insert(n.to_string());
                    }
                }
            }
        }
    })?;
    let mut own: BTreeSet<Loc> = BTreeSet::new();
    let mut own_refs: Vec<crate::store::SpoolRef> = Vec::new();
    let mut messages: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    // Where each stored record's bytes are, and the check it holds.
    let mut by_loc: HashMap<Loc, Vec<(u64, u32, u64)>> = HashMap::new();
    // Records are picked by the address alone; names are only replaced in
    // what the address already picked (a first name alone would hit
    // other people's mail).
    store.for_each_message(|t, seq, m| {
        let loc = (m.raw.file, m.raw.offset);
        by_loc.entry(loc).or_default().push((t, seq, m.raw.check));
        if probe.is_self(&m.from) {
            own.insert(loc);
            own_refs.push(m.raw);
        }
        if probe.is_self(&m.from) || probe.message(&m) != m {
            messages.entry(t).or_default().push(seq);
        }
        Ok(())
    })?;
    let apart = store.apart_entries()?;
    let mut apart_checks: HashMap<Loc, u64> = HashMap::new();
    for (_, m) in &apart {
        apart_checks.insert((m.raw.file, m.raw.offset), m.raw.check);
        if probe.is_self(&m.from) {
            own.insert((m.raw.file, m.raw.offset));
            own_refs.push(m.raw);
        }
    }
    // The display names they wrote under, from their own mail.
    for r in &own_refs {
        let Ok(raw) = store.raw_read_unchecked(r) else {
            continue;
        };
        let p = crate::ingest::parse::parse(&raw);
        if let Some(a) = p.from.as_ref().filter(|a| probe.is_self(&a.email)) {
            if let Some(n) = a.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
                names.insert(n.to_string());
            }
        }
    }
    let scrub = Scrub {
        address: address.clone(),
        pseudonym: pseudo.clone(),
        names,
    };

    // ---- pass 1: the spool, in place ----
    let addr_needles = raw_needles(&address, &BTreeSet::new());
    let needles = raw_needles(&address, &scrub.names);
    let mut checks: HashMap<Loc, u64> = HashMap::new();
    store.raw_walk(|at, bytes| {
        let loc = (at.file, at.offset);
        let new = if own.contains(&loc) {
            let zeros = vec![0u8; bytes.len()];
            (zeros != bytes).then_some(zeros)
        } else {
            let mut b = bytes.to_vec();
            let named = addr_needles.iter().any(|n| !find_ci(bytes, n).is_empty());
            (named && mask(&mut b, &needles) > 0).then_some(b)
        };
        let check = match &new {
            Some(b) => store.raw_overwrite(at, b)?,
            None => spool::check_of(bytes),
        };
        // Changed now, or by an earlier run that stopped before the
        // store: a record whose check no longer fits gets the new one.
        let stale = by_loc
            .get(&loc)
            .is_some_and(|v| v.iter().any(|(_, _, c)| *c != check))
            || apart_checks.get(&loc).is_some_and(|c| *c != check);
        if new.is_some() || stale {
            checks.insert(loc, check);
        }
        Ok(())
    })?;
    let raw_overwritten = checks.len();
    for (loc, check) in &checks {
        for (t, seq, c) in by_loc.get(loc).map(Vec::as_slice).unwrap_or(&[]) {
            if c != check {
                let v = messages.entry(*t).or_default();
                if !v.contains(seq) {
                    v.push(*seq);
                }
            }
        }
    }
    for t in messages.keys() {
        ticket_nums.insert(*t);
    }

    // ---- pass 2: the records, one transaction per ticket ----
    let mut out = Forgotten {
        pseudonym: pseudo.clone(),
        by: by.to_string(),
        raw_overwritten,
        ..Default::default()
    };
    let checks = std::sync::Arc::new(checks);
    for n in ticket_nums.iter().copied() {
        let seqs = messages.get(&n).cloned().unwrap_or_default();
        let (s2, c2) = (scrub.clone(), checks.clone());
        let (erased, redacted) = store.commit_blocking(None, move |tx, _| {
            use crate::store::{View, Writes};
            let (mut erased, mut redacted) = (0usize, 0usize);
            for seq in &seqs {
                let Some(m) = tx.message(n, *seq)? else {
                    continue;
                };
                if s2.is_self(&m.from) {
                    tx.delete_message(n, *seq)?;
                    erased += 1;
                    continue;
                }
                let mut new = s2.message(&m);
                if let Some(c) = c2.get(&(m.raw.file, m.raw.offset)) {
                    new.raw.check = *c;
                }
                if new != m {
                    tx.put_message(n, *seq, &new)?;
                    redacted += 1;
                }
            }
            if let Some(t) = tx.ticket(n)? {
                let new = s2.ticket(&t);
                if new != t {
                    tx.put_ticket(&new)?;
                }
            }
            Ok((erased, redacted))
        })?;
        out.tickets += 1;
        out.messages_erased += erased;
        out.messages_redacted += redacted;
    }

    // Messages kept apart, outbox entries, index entries: one transaction.
    let apart_nums: Vec<u64> = apart
        .iter()
        .filter(|(_, m)| probe.message(m) != *m || checks.contains_key(&(m.raw.file, m.raw.offset)))
        .map(|(n, _)| *n)
        .collect();
    let outbox_ids: Vec<u64> = store
        .outbox_where(|e| {
            probe.outbox(e) != *e
                || e.body
                    .as_ref()
                    .is_some_and(|(r, _)| checks.contains_key(&(r.file, r.offset)))
        })?
        .iter()
        .map(|e| e.id)
        .collect();
    // A pending mail whose body is one of their own messages (a team copy
    // of it) would now carry zeros: it goes with them.
    let own_bodies: BTreeSet<u64> = store
        .outbox_where(|e| {
            e.state == OutboxState::Pending
                && e.body
                    .as_ref()
                    .is_some_and(|(r, _)| own.contains(&(r.file, r.offset)))
        })?
        .iter()
        .map(|e| e.id)
        .collect();
    let keys = store.thread_keys_where(|id| scrub.id_reveals(id))?;
    out.thread_keys = keys.len();
    out.outbox = outbox_ids.len();
    let (s2, c2, who) = (scrub.clone(), checks.clone(), by.to_string());
    let now = Timestamp::now();
    out.outbox_dropped = store.commit_blocking(None, move |tx, _| {
        let mut dropped = 0usize;
        for n in &apart_nums {
            let Some(m) = tx.apart_at(*n)? else { continue };
            let mut new = s2.message(&m);
            if let Some(c) = c2.get(&(m.raw.file, m.raw.offset)) {
                new.raw.check = *c;
            }
            tx.put_apart_at(*n, &new)?;
        }
        for id in &outbox_ids {
            let Some(e) = tx.outbox(*id)? else { continue };
            let mut new = s2.outbox(&e);
            if let Some((r, _)) = new.body.as_mut() {
                if let Some(c) = c2.get(&(r.file, r.offset)) {
                    r.check = *c;
                }
            }
            let to_them = e.rcpt_to.iter().any(|a| s2.is_self(a));
            if to_them {
                // Mail to them is about them, all of it: only the record
                // that it was sent (when, which ticket) stays.
                new.head = Vec::new();
                new.body = None;
            }
            if e.state == OutboxState::Pending && (to_them || own_bodies.contains(id)) {
                new.state = OutboxState::Dropped;
                new.dropped = Some(Dropped {
                    at: now,
                    by: who.clone(),
                    reason: "forget: the recipient's data was erased".into(),
                });
                dropped += 1;
            }
            tx.update_outbox(&e, &new)?;
        }
        for k in &keys {
            let new = s2.id(k);
            tx.move_thread_key(k, Some(&new), |s| s2.stored_ids(s))?;
        }
        tx.forget_address_keys(&s2.address)?;
        Ok(dropped)
    })?;

    // ---- pass 3 is owed ----
    if let Store::Sled(_) = store {
        crate::store::rewrite::mark_pending(&data_dir)?;
        out.rewrite = "pending".into();
    } else {
        // PostgreSQL keeps old row versions until VACUUM reuses their
        // space: the operator's part (docs/scaling.md#erasure).
        out.rewrite = "vacuum".into();
    }
    tracing::info!(
        address = %out.pseudonym,
        tickets = out.tickets,
        messages = out.messages_erased,
        redacted = out.messages_redacted,
        raw = out.raw_overwritten,
        outbox = out.outbox,
        by = %out.by,
        "forgot"
    );
    Ok(out)
}

// ------------------------------------------------ export --person --

#[derive(Debug, Serialize)]
pub struct PersonExport {
    pub address: String,
    pub exported_at: Timestamp,
    pub by: String,
    /// Tickets where they are the contact, a participant or a watcher:
    /// the whole ticket record as stored, with its token.
    pub tickets: Vec<PersonTicket>,
    /// Their messages kept apart from tickets (auto-replies, bounces).
    pub messages_apart: Vec<PersonMessage>,
    /// Mail the desk wrote to them, as it went (or goes) on the wire.
    pub outbox: Vec<PersonOutbox>,
    pub learned_customer: Option<String>,
    pub ack_times: Vec<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct PersonTicket {
    pub token: String,
    /// `contact`, `participant` or `watcher`.
    pub role: &'static str,
    pub record: Ticket,
    /// The ticket's messages from, to or copied to them.
    pub messages: Vec<PersonMessage>,
}

#[derive(Debug, Serialize)]
pub struct PersonMessage {
    pub record: MessageRecord,
    pub raw: RawJson,
}

#[derive(Debug, Serialize)]
pub struct PersonOutbox {
    #[serde(flatten)]
    pub entry: EntryJson,
    pub raw: RawJson,
}

/// Raw bytes as text when they are UTF-8, else base64; or why there are none.
#[derive(Debug, Serialize, Default)]
pub struct RawJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn raw_json(r: Result<Vec<u8>, crate::store::Error>, erased: Option<Timestamp>) -> RawJson {
    if erased.is_some() {
        return RawJson {
            erased_at: erased,
            ..Default::default()
        };
    }
    match r {
        Ok(b) => match String::from_utf8(b) {
            Ok(s) => RawJson {
                text: Some(s),
                ..Default::default()
            },
            Err(e) => {
                use base64::Engine;
                RawJson {
                    base64: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                    ..Default::default()
                }
            }
        },
        Err(e) => RawJson {
            error: Some(e.to_string()),
            ..Default::default()
        },
    }
}

/// Everything stored about `address` (read only; logged with who asked).
pub fn export_person(
    store: &Store,
    cfg: &Config,
    address: &str,
    by: &str,
) -> Result<PersonExport, Error> {
    let address = normalise(address)?;
    let is = |a: &str| a.trim().eq_ignore_ascii_case(&address);
    let names_them =
        |m: &MessageRecord| is(&m.from) || m.to.iter().any(|a| is(a)) || m.cc.iter().any(|a| is(a));
    let found = store.tickets_where(|t| {
        is(&t.contact) || t.participants.iter().any(|a| is(a)) || t.watchers.iter().any(|a| is(a))
    })?;
    let mut tickets = Vec::with_capacity(found.len());
    for t in found {
        let role = if is(&t.contact) {
            "contact"
        } else if t.participants.iter().any(|a| is(a)) {
            "participant"
        } else {
            "watcher"
        };
        let messages = store
            .messages(t.number)?
            .into_iter()
            .filter(|m| names_them(m))
            .map(|m| PersonMessage {
                raw: raw_json(store.read_raw(&m.raw), m.raw_erased),
                record: m,
            })
            .collect();
        tickets.push(PersonTicket {
            token: token(cfg, t.number),
            role,
            record: t,
            messages,
        });
    }
    let messages_apart = store
        .apart()?
        .into_iter()
        .filter(|m| names_them(m))
        .map(|m| PersonMessage {
            raw: raw_json(store.read_raw(&m.raw), m.raw_erased),
            record: m,
        })
        .collect();
    let now = Timestamp::now();
    let outbox = store
        .outbox_where(|e| e.rcpt_to.iter().any(|a| is(a)))?
        .into_iter()
        .map(|e| PersonOutbox {
            raw: raw_json(store.outbox_bytes(&e), None),
            entry: entry_json(&e, cfg, now),
        })
        .collect();
    let a2 = address.clone();
    let (learned_customer, ack_times) =
        store.with_read_view(move |v| Ok((v.learned_customer(&a2)?, v.ack_times(&a2)?)))?;
    let out = PersonExport {
        address,
        exported_at: now,
        by: by.to_string(),
        tickets,
        messages_apart,
        outbox,
        learned_customer,
        ack_times,
    };
    // The address is in the log here on purpose: who looked at whose data
    // is what a data-protection officer asks, and until a `forget` the
    // address is in the store anyway.
    tracing::info!(
        address = %out.address,
        tickets = out.tickets.len(),
        outbox = out.outbox.len(),
        by = %out.by,
        "exported person"
    );
    Ok(out)
}

/// `forget` with no daemon: the erasure, then the store rewrite at once.
pub fn forget_offline(cfg: &Config, address: &str, by: &str) -> Result<Forgotten, Error> {
    let store = Store::open_backend(&cfg.store, &cfg.data_dir)?;
    let r = forget(&store, cfg, address, by);
    store.close();
    drop(store);
    let mut out = r?;
    if crate::store::rewrite::compact_if_pending(&cfg.data_dir)?.is_some() {
        out.rewrite = "done".into();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub() -> Scrub {
        Scrub {
            address: "mari.tamm@cust.test".into(),
            pseudonym: pseudonym_with(b"k", "mari.tamm@cust.test"),
            names: ["Mari Tamm".to_string()].into_iter().collect(),
        }
    }

    #[test]
    fn pseudonyms_are_stable_keyed_and_case_blind() {
        let a = pseudonym_with(b"key", "Mari.Tamm@Cust.Test");
        assert_eq!(a, pseudonym_with(b"key", " mari.tamm@cust.test"));
        assert_ne!(a, pseudonym_with(b"other key", "mari.tamm@cust.test"));
        assert!(a.starts_with("forgotten-") && a.ends_with("@invalid") && a.len() == 26);
    }

    #[test]
    fn masking_keeps_length_and_shape_and_finds_case_variants() {
        let s = scrub();
        let mut b =
            b"To: Mari Tamm <MARI.TAMM@cust.test>\r\n\r\n> mari.tamm=40cust.test wrote".to_vec();
        let len = b.len();
        let n = mask(&mut b, &raw_needles(&s.address, &s.names));
        assert_eq!(n, 3);
        assert_eq!(b.len(), len);
        let text = String::from_utf8(b).unwrap();
        assert_eq!(
            text,
            "To: xxxx xxxx <xxxx.xxxx@xxxx.xxxx>\r\n\r\n> xxxx.xxxx=xxxxxx.xxxx wrote"
        );
    }

    #[test]
    fn records_lose_the_address_and_keep_the_rest() {
        let s = scrub();
        assert_eq!(
            s.text("Re: question from Mari.Tamm@cust.test"),
            format!("Re: question from {}", s.pseudonym)
        );
        assert_eq!(
            s.list(&[
                "mari.tamm@cust.test".into(),
                "MARI.TAMM@CUST.TEST".into(),
                "x@y".into()
            ]),
            vec![s.pseudonym.clone(), "x@y".into()]
        );
        let id = s.id("1234.mari.tamm@cust.test");
        assert!(!id.contains("mari.tamm"), "{id}");
        assert_eq!(s.id("CAF123@mail.example"), "CAF123@mail.example");
        assert!(!s.mentions("nothing here"));
    }

    fn ticket(n: u64, contact: &str) -> Ticket {
        serde_json::from_value(serde_json::json!({
            "number": n, "status": "active", "assignee": null,
            "started_at": "2026-11-23T09:00:00Z", "ended_at": null,
            "subject": "Printer", "description": "it jams", "contact": contact,
            "contact_name": "Mari Tamm", "customer": null, "notified": false,
            "reopened": false, "replies": 1, "last_direction": "out",
            "last_message_at": "2026-11-23T09:00:00Z", "follow_up_of": null,
            "followed_by": null, "related": [], "message_ids": ["m1@cust.test"],
            "participants": [contact, "alice@example.com"],
            "delivery_failures": [], "language": "en"
        }))
        .unwrap()
    }

    fn record(from: &str, to: &str, raw: crate::store::SpoolRef) -> MessageRecord {
        serde_json::from_value(serde_json::json!({
            "message_id": format!("{from}-id"), "internal_id": format!("{from}-id"),
            "ticket": 1, "kind": "customer", "from": from, "to": [to], "cc": [],
            "subject": "Printer", "date": null, "received_at": "2026-11-23T09:00:00Z",
            "excerpt": "x", "rule": "new", "content_hash": from, "queue_id": null,
            "raw": raw, "problems": []
        }))
        .unwrap()
    }

    /// A `forget` stopped after the spool pass (bytes overwritten, records
    /// not yet) is finished by running it again: the checks are set from
    /// the bytes as they are, so every remaining record reads back.
    #[test]
    fn an_interrupted_forget_run_again_leaves_every_record_readable() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: d.path().to_path_buf(),
            ..Default::default()
        };
        let store = Store::open(d.path()).unwrap();
        let own = b"From: Mari Tamm <mari.tamm@cust.test>\r\n\r\nit jams\r\n".to_vec();
        let reply = b"From: alice@example.com\r\nTo: mari.tamm@cust.test\r\n\r\nfixed\r\n".to_vec();
        store
            .commit_blocking(Some(std::sync::Arc::new(own.clone())), |tx, r| {
                tx.put_ticket(&ticket(1, "mari.tamm@cust.test"))?;
                tx.put_message(
                    1,
                    1,
                    &record("mari.tamm@cust.test", "support@example.com", r.unwrap()),
                )
            })
            .unwrap();
        store
            .commit_blocking(Some(std::sync::Arc::new(reply.clone())), |tx, r| {
                tx.put_message(
                    1,
                    2,
                    &record("alice@example.com", "mari.tamm@cust.test", r.unwrap()),
                )
            })
            .unwrap();
        // The spool pass of a first run, and nothing after it.
        let spool_dir = d.path().join("spool");
        let needles = raw_needles("mari.tamm@cust.test", &BTreeSet::new());
        spool::walk(&spool_dir, |at, bytes| {
            let mut b = bytes.to_vec();
            if bytes == own.as_slice() {
                b = vec![0; b.len()];
            } else {
                mask(&mut b, &needles);
            }
            spool::overwrite(&spool_dir, at, &b).map(|_| ())
        })
        .unwrap();
        let before = store.message_entries(1).unwrap();
        assert!(
            store.read_raw(&before[1].1.raw).is_err(),
            "the stale check shows"
        );

        let out = forget(&store, &cfg, "mari.tamm@cust.test", "tester").unwrap();
        assert_eq!((out.messages_erased, out.messages_redacted), (1, 1));
        let after = store.message_entries(1).unwrap();
        assert_eq!(after.len(), 1);
        let raw = store.read_raw(&after[0].1.raw).unwrap();
        assert_eq!(raw.len(), reply.len());
        assert!(String::from_utf8_lossy(&raw).contains("To: xxxx.xxxx@xxxx.xxxx"));
        assert_eq!(after[0].1.to, vec![out.pseudonym.clone()]);
        let t = store.ticket(1).unwrap().unwrap();
        assert_eq!(t.contact, out.pseudonym);
        assert_eq!((t.contact_name, t.description.as_str()), (None, ""));
        store.close();
    }

    #[test]
    fn bad_addresses_are_refused() {
        for a in ["", "mari", "a b@c", "@x", "x@", "<a@b>", "a@b@c"] {
            assert!(normalise(a).is_err(), "{a}");
        }
        assert_eq!(normalise(" Mari@Cust.Test ").unwrap(), "mari@cust.test");
    }
}
