//! `postdesk outbox list|show|retry|drop`: the operator's hands on the
//! outbound queue. The state changes are decided here (pure functions of
//! the stored entry) and written by `Store::outbox_change` in one durable
//! transaction, whoever asks: the daemon over the control socket or the
//! CLI on the store directly.

use crate::config::Config;
use crate::ingest::decide::token;
use crate::store::{Dropped, OutboxEntry, OutboxState, Store, Timestamp};
use serde::Serialize;

/// Entries `outbox list` prints unless told otherwise.
pub const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct EntryJson {
    pub id: u64,
    pub state: OutboxState,
    pub kind: String,
    pub ticket: Option<String>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message_id: String,
    pub attempts: u32,
    /// Pending entries only.
    pub next_attempt_at: Option<Timestamp>,
    pub last_reply: Option<String>,
    pub created_at: Timestamp,
    pub age_seconds: i64,
    pub sent_at: Option<Timestamp>,
    pub retried_at: Option<Timestamp>,
    pub dropped: Option<Dropped>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShowJson {
    #[serde(flatten)]
    pub entry: EntryJson,
    /// The mail's header block (up to the blank line), lossy UTF-8.
    pub head: String,
    /// The whole mail's size in bytes, as it goes on the wire.
    pub size: Option<u64>,
    /// Whether the body is a slice of a stored raw message (a team copy)
    /// rather than part of `head`.
    pub body_from_spool: bool,
}

pub fn entry_json(e: &OutboxEntry, cfg: &Config, now: Timestamp) -> EntryJson {
    EntryJson {
        id: e.id,
        state: e.state,
        kind: e.kind.clone(),
        ticket: e.ticket.map(|n| token(cfg, n)),
        mail_from: e.mail_from.clone(),
        rcpt_to: e.rcpt_to.clone(),
        message_id: e.message_id.clone(),
        attempts: e.attempts,
        next_attempt_at: (e.state == OutboxState::Pending).then_some(e.next_attempt_at),
        last_reply: e.last_reply.clone(),
        created_at: e.created_at,
        age_seconds: now.duration_since(e.created_at).as_secs().max(0),
        sent_at: e.sent_at,
        retried_at: e.retried_at,
        dropped: e.dropped.clone(),
    }
}

/// `--state`: `pending`, `failed`, `sent`, `dropped`, `all`; none given:
/// pending and failed (what is waiting or stuck).
pub fn list(
    store: &Store,
    cfg: &Config,
    state: Option<&str>,
    limit: usize,
) -> Result<Vec<EntryJson>, String> {
    let err = |e: crate::store::Error| e.to_string();
    let states: Vec<OutboxState> = match state.map(str::trim) {
        None => vec![OutboxState::Pending, OutboxState::Failed],
        Some("all") => OutboxState::ALL.to_vec(),
        Some(s) => vec![OutboxState::parse(s).ok_or_else(|| {
            format!("unknown outbox state {s:?} (pending, failed, sent, dropped, all)")
        })?],
    };
    let mut out = Vec::new();
    if states.contains(&OutboxState::Pending) {
        out.extend(store.outbox_pending(limit).map_err(err)?);
    }
    let rest: Vec<OutboxState> = states
        .into_iter()
        .filter(|s| *s != OutboxState::Pending)
        .collect();
    if !rest.is_empty() && out.len() < limit {
        // Not pending: one walk of the outbox records for all asked states.
        let room = limit - out.len();
        out.extend(store.outbox_in_states(&rest, room).map_err(err)?);
    }
    out.truncate(limit);
    let now = Timestamp::now();
    Ok(out.iter().map(|e| entry_json(e, cfg, now)).collect())
}

pub fn show(store: &Store, cfg: &Config, id: u64) -> Result<ShowJson, String> {
    let e = store
        .outbox(id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| no_entry(id))?;
    let header = match e.head.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &e.head[..end],
        None => &e.head[..],
    };
    // A body in the spool may be gone or unreadable: show the rest anyway.
    let size = store
        .outbox_bytes(&e)
        .ok()
        .map(|b| u64::try_from(b.len()).unwrap_or(u64::MAX));
    Ok(ShowJson {
        entry: entry_json(&e, cfg, Timestamp::now()),
        head: String::from_utf8_lossy(header).into_owned(),
        size,
        body_from_spool: e.body.is_some(),
    })
}

fn no_entry(id: u64) -> String {
    format!("no outbox entry {id} (postdesk outbox list --state all shows them)")
}

/// A failed entry, or a pending one waiting on its backoff, becomes due
/// now. The give-up window starts again from now.
pub fn retried(cur: &OutboxEntry, now: Timestamp) -> Result<OutboxEntry, String> {
    match cur.state {
        OutboxState::Sent => Err(format!(
            "outbox entry {} was already sent{}: nothing to retry",
            cur.id,
            cur.sent_at.map(|t| format!(" at {t}")).unwrap_or_default()
        )),
        OutboxState::Dropped => Err(format!(
            "outbox entry {} was dropped{}: it is not sent again",
            cur.id,
            cur.dropped
                .as_ref()
                .map(|d| format!(" by {} ({})", d.by, d.reason))
                .unwrap_or_default()
        )),
        OutboxState::Pending | OutboxState::Failed => {
            let mut new = cur.clone();
            new.state = OutboxState::Pending;
            new.next_attempt_at = now;
            new.retried_at = Some(now);
            Ok(new)
        }
    }
}

/// A pending or failed entry leaves the queue for good, kept as `dropped`
/// with who and why.
pub fn dropped(
    cur: &OutboxEntry,
    by: &str,
    reason: &str,
    now: Timestamp,
) -> Result<OutboxEntry, String> {
    match cur.state {
        OutboxState::Sent => Err(format!(
            "outbox entry {} was already sent: there is nothing to drop",
            cur.id
        )),
        OutboxState::Dropped => Err(format!("outbox entry {} is already dropped", cur.id)),
        OutboxState::Pending | OutboxState::Failed => {
            let mut new = cur.clone();
            new.state = OutboxState::Dropped;
            new.dropped = Some(Dropped {
                at: now,
                by: by.to_string(),
                reason: reason.to_string(),
            });
            Ok(new)
        }
    }
}

pub fn retry(store: &Store, cfg: &Config, id: u64, by: &str) -> Result<EntryJson, String> {
    let now = Timestamp::now();
    let e = store
        .outbox_change(id, move |cur| retried(cur, now))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| no_entry(id))??;
    tracing::info!(
        id,
        ticket = %e.ticket.map(|n| token(cfg, n)).unwrap_or_else(|| "-".into()),
        by = %by,
        "outbox retry"
    );
    Ok(entry_json(&e, cfg, now))
}

pub fn drop_entry(
    store: &Store,
    cfg: &Config,
    id: u64,
    reason: &str,
    by: &str,
) -> Result<EntryJson, String> {
    let reason = reason.trim().to_string();
    if reason.is_empty() {
        return Err("outbox drop needs --reason TEXT: say why, it is logged and kept".into());
    }
    let now = Timestamp::now();
    let (r2, by2) = (reason.clone(), by.to_string());
    let e = store
        .outbox_change(id, move |cur| dropped(cur, &by2, &r2, now))
        .map_err(|e| e.to_string())?
        .ok_or_else(|| no_entry(id))??;
    tracing::info!(
        id,
        ticket = %e.ticket.map(|n| token(cfg, n)).unwrap_or_else(|| "-".into()),
        by = %by,
        reason = reason.as_str(),
        "outbox drop"
    );
    Ok(entry_json(&e, cfg, now))
}

/// The Unix user name of `uid`, else `uid=N`.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getpwuid_r writes only into `pwd` and `buf` (whose length we
    // pass); `result` points at `pwd` or is null.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated by getpwuid_r.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        if let Ok(n) = name.to_str() {
            return n.to_string();
        }
    }
    format!("uid={uid}")
}

/// Who runs this process: the CLI working on the store directly.
pub fn current_user() -> String {
    // SAFETY: getuid cannot fail.
    user_name(unsafe { libc::getuid() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: OutboxState) -> OutboxEntry {
        let now = Timestamp::UNIX_EPOCH;
        OutboxEntry {
            id: 7,
            ticket: Some(3),
            kind: "ack".into(),
            mail_from: "support@example.com".into(),
            rcpt_to: vec!["mari@cust.test".into()],
            message_id: "SUP-3.ack.x@example.com".into(),
            head: b"Subject: x\r\n\r\n".to_vec(),
            body: None,
            created_at: now,
            next_attempt_at: now,
            attempts: 2,
            last_reply: Some("550 no".into()),
            state,
            sent_at: None,
            dropped: None,
            retried_at: None,
        }
    }

    #[test]
    fn retry_makes_failed_and_waiting_entries_due_and_refuses_the_rest() {
        let now = Timestamp::from_second(1_000).unwrap_or(Timestamp::UNIX_EPOCH);
        for s in [OutboxState::Failed, OutboxState::Pending] {
            let e = retried(&entry(s), now).unwrap();
            assert_eq!(e.state, OutboxState::Pending);
            assert_eq!(e.next_attempt_at, now);
            assert_eq!(e.retried_at, Some(now));
            assert_eq!(e.attempts, 2, "history kept");
        }
        assert!(retried(&entry(OutboxState::Sent), now)
            .unwrap_err()
            .contains("already sent"));
        assert!(retried(&entry(OutboxState::Dropped), now)
            .unwrap_err()
            .contains("dropped"));
    }

    #[test]
    fn drop_keeps_who_and_why_and_refuses_sent_and_dropped() {
        let now = Timestamp::UNIX_EPOCH;
        let e = dropped(&entry(OutboxState::Failed), "root", "bad address", now).unwrap();
        assert_eq!(e.state, OutboxState::Dropped);
        let d = e.dropped.unwrap();
        assert_eq!((d.by.as_str(), d.reason.as_str()), ("root", "bad address"));
        assert!(dropped(&entry(OutboxState::Sent), "r", "x", now).is_err());
        assert!(dropped(&entry(OutboxState::Dropped), "r", "x", now).is_err());
    }
}
