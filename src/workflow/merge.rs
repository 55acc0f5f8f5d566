//! `#merge SUP-N` and `postdesk ticket merge`: two tickets that are one
//! conversation become one. PURE: reads through a [`View`] (the records to
//! move are point lookups by ticket and position) and returns what must be
//! written; `deliver::write_merge` writes it in the caller's transaction.
//!
//! The older ticket (earlier start; the lower number on a tie) survives:
//! the other's messages, thread keys, participants, watchers and tags move
//! to it, and the other is closed with `merged_into` pointing at the
//! survivor. Keys nobody can list (ids a message only referenced, Outlook
//! conversation keys) are not rewritten: threading follows the pointer
//! instead (`ingest::thread`), so later mail to either lands in the
//! survivor.

use crate::store::{MessageRecord, Result, ScheduledRef, Status, Ticket, Timestamp, View};

/// What a merge writes besides the survivor itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MergePlan {
    pub survivor: u64,
    /// The merged-away ticket as it must be written (closed, pointing at
    /// the survivor, no messages of its own any more).
    pub merged: Ticket,
    /// (position under the merged ticket, position under the survivor,
    /// the record rewritten for the survivor). The spool reference is kept:
    /// the raw bytes do not move.
    pub moves: Vec<(u32, u32, MessageRecord)>,
    /// Records to drop from the merged ticket without a copy (the survivor
    /// already holds the same message).
    pub drops: Vec<u32>,
    /// Thread keys that must point at the survivor now.
    pub keys: Vec<String>,
    /// The merged ticket's reminders and wake-ups, removed.
    pub cancel: Vec<ScheduledRef>,
}

/// Hops followed through `merged_into` before giving up (a merge never
/// makes a cycle; the bound only guards a damaged store).
const MAX_HOPS: usize = 8;

/// The ticket `n` is now: itself, or the survivor it was merged into.
pub fn resolve(view: &dyn View, n: u64) -> Result<Option<Ticket>> {
    let mut t = view.ticket(n)?;
    for _ in 0..MAX_HOPS {
        match t.as_ref().and_then(|x| x.merged_into) {
            Some(m) => match view.ticket(m)? {
                Some(next) => t = Some(next),
                None => break,
            },
            None => break,
        }
    }
    Ok(t)
}

/// The number `n` resolves to (see [`resolve`]).
pub fn follow(view: &dyn View, n: u64) -> Result<u64> {
    Ok(resolve(view, n)?.map(|t| t.number).unwrap_or(n))
}

/// Joins `a` and `b`. `Ok(Err(why))` is a refusal: nothing changes.
pub fn merge(
    a: Ticket,
    b: Ticket,
    view: &dyn View,
    token_prefix: &str,
    now: Timestamp,
) -> Result<std::result::Result<(Ticket, MergePlan), String>> {
    let tok = |n: u64| format!("{token_prefix}-{n}");
    if a.number == b.number {
        return Ok(Err(format!(
            "{} cannot be merged with itself",
            tok(a.number)
        )));
    }
    for t in [&a, &b] {
        if let Some(m) = t.merged_into {
            return Ok(Err(format!(
                "{} was already merged into {}",
                tok(t.number),
                tok(m)
            )));
        }
        if t.status == Status::Deleted {
            return Ok(Err(format!(
                "{} is deleted (spam); #reopen it first",
                tok(t.number)
            )));
        }
    }
    let (mut s, mut m) = if (a.started_at, a.number) <= (b.started_at, b.number) {
        (a, b)
    } else {
        (b, a)
    };
    let mut plan = MergePlan {
        survivor: s.number,
        merged: m.clone(),
        moves: Vec::new(),
        drops: Vec::new(),
        keys: Vec::new(),
        cancel: std::mem::take(&mut m.scheduled),
    };
    for (i, id) in m.message_ids.iter().enumerate() {
        let old = u32::try_from(i).unwrap_or(u32::MAX);
        plan.keys.push(id.clone());
        if s.message_ids.contains(id) {
            plan.drops.push(old);
            continue;
        }
        s.message_ids.push(id.clone());
        let new = u32::try_from(s.message_ids.len() - 1).unwrap_or(u32::MAX);
        let Some(mut rec) = view.message(m.number, old)? else {
            continue;
        };
        rec.ticket = Some(s.number);
        plan.moves.push((old, new, rec));
    }
    for p in &m.participants {
        if !s.participants.contains(p) {
            s.participants.push(p.clone());
        }
    }
    // Whoever worked the merged ticket keeps hearing of the conversation.
    let mut watchers = m.watchers.clone();
    watchers.extend(m.assignee.clone());
    for w in watchers {
        let w = w.to_ascii_lowercase();
        if !s.watchers.contains(&w) && s.assignee.as_deref() != Some(w.as_str()) {
            s.watchers.push(w);
        }
    }
    for t in &m.tags {
        if !s.tags.contains(t) {
            s.tags.push(t.clone());
        }
    }
    for r in &m.related {
        if *r != s.number && !s.related.contains(r) {
            s.related.push(*r);
        }
    }
    s.related.retain(|r| *r != m.number);
    s.replies = s.replies.saturating_add(m.replies);
    if m.last_message_at > s.last_message_at {
        s.last_message_at = m.last_message_at;
        s.last_direction = m.last_direction;
        s.last_excerpt = m.last_excerpt.clone();
        if m.last_customer_message.is_some() {
            s.last_customer_message = m.last_customer_message.clone();
        }
    }
    if s.customer.is_none() {
        s.customer = m.customer.clone();
    }
    if s.category.is_none() {
        s.category = m.category.clone();
    }
    // An answer on either half reached the customer of the conversation.
    if let Some(at) = m.sla.first_response_at {
        if s.sla.first_response_at.is_none_or(|s_at| at < s_at) {
            s.sla.first_response_at = Some(at);
        }
    }
    // The conversation is still being worked when the newer half is: the
    // survivor takes its state rather than hiding it in a done ticket or
    // leaving it with nobody.
    let take_over = m.status.is_open()
        && (!s.status.is_open() || (s.assignee.is_none() && m.assignee.is_some()));
    if take_over {
        s.status = m.status;
        s.assignee = m.assignee.clone();
        s.group = m.group.clone();
        s.escalated = m.escalated.clone();
        s.ended_at = None;
        s.watchers
            .retain(|w| s.assignee.as_deref() != Some(w.as_str()));
    }
    m.status = Status::Closed;
    m.ended_at = Some(m.ended_at.unwrap_or(now));
    m.merged_into = Some(s.number);
    m.message_ids.clear();
    m.followed_by = None;
    plan.merged = m;
    Ok(Ok((s, plan)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::mem::MemStore;
    use crate::store::{count_similar, MessageKind, SimilarBy, SpoolRef, Writes};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn ticket(n: u64, start: i64, contact: &str, ids: &[&str]) -> Ticket {
        let cfg = Config::default();
        let mut t = crate::render::desk::view_less_ticket(&cfg, at(start));
        t.number = n;
        t.status = Status::Unassigned;
        t.contact = contact.into();
        t.participants = vec![contact.into()];
        t.message_ids = ids.iter().map(|s| s.to_string()).collect();
        t
    }

    fn record(id: &str, n: u64) -> MessageRecord {
        MessageRecord {
            message_id: id.into(),
            internal_id: id.into(),
            ticket: Some(n),
            kind: MessageKind::Customer,
            from: "mari@cust.test".into(),
            to: vec![],
            cc: vec![],
            subject: "s".into(),
            date: None,
            received_at: at(0),
            excerpt: String::new(),
            rule: "new".into(),
            content_hash: id.into(),
            queue_id: None,
            raw: SpoolRef {
                file: 1,
                offset: 7,
                len: 9,
                check: 3,
            },
            problems: vec![],
            raw_erased: None,
        }
    }

    fn store() -> MemStore {
        let s = MemStore::new();
        let older = ticket(1, 0, "mari@cust.test", &["a@x"]);
        let mut newer = ticket(2, 10, "jaan@cust.test", &["b@x", "c@x"]);
        newer.assignee = Some("bob@example.com".into());
        newer.status = Status::Active;
        for (t, ids) in [(&older, vec!["a@x"]), (&newer, vec!["b@x", "c@x"])] {
            s.put_ticket(t).unwrap();
            for (i, id) in ids.iter().enumerate() {
                s.put_message(t.number, i as u32, &record(id, t.number))
                    .unwrap();
                s.index_thread_key(id, t.number).unwrap();
            }
        }
        s
    }

    #[test]
    fn the_older_survives_whichever_is_named_and_messages_keep_their_bytes() {
        let s = store();
        let (a, b) = (s.ticket(2).unwrap().unwrap(), s.ticket(1).unwrap().unwrap());
        let (survivor, plan) = merge(a, b, &s, "SUP", at(20)).unwrap().unwrap();
        assert_eq!((survivor.number, plan.merged.number), (1, 2));
        crate::deliver::write_merge(&s, &plan).unwrap();
        s.put_ticket(&survivor).unwrap();
        let d = s.data.borrow();
        assert_eq!(
            d.messages.keys().copied().collect::<Vec<_>>(),
            vec![(1, 0), (1, 1), (1, 2)]
        );
        let moved = &d.messages[&(1, 2)];
        assert_eq!((moved.ticket, moved.raw.offset), (Some(1), 7));
        assert_eq!(d.keys.get("c@x"), Some(&1));
        let merged = &d.tickets[&2];
        assert_eq!(
            (merged.status, merged.merged_into),
            (Status::Closed, Some(1))
        );
        // The newer half was bob's and open: the survivor is worked by bob.
        let s1 = &d.tickets[&1];
        assert_eq!(s1.assignee.as_deref(), Some("bob@example.com"));
        assert!(s1.participants.contains(&"jaan@cust.test".to_string()));
        // bob's load moved with it: one ticket, not two.
        assert_eq!(d.loads["bob@example.com"].active, 1);
    }

    #[test]
    fn pointers_are_followed_and_refusals_change_nothing() {
        let s = store();
        let (a, b) = (s.ticket(1).unwrap().unwrap(), s.ticket(2).unwrap().unwrap());
        let (survivor, plan) = merge(a, b, &s, "SUP", at(20)).unwrap().unwrap();
        crate::deliver::write_merge(&s, &plan).unwrap();
        s.put_ticket(&survivor).unwrap();
        assert_eq!(follow(&s, 2).unwrap(), 1);
        assert_eq!(follow(&s, 1).unwrap(), 1);
        assert_eq!(follow(&s, 99).unwrap(), 99);
        let merged = s.ticket(2).unwrap().unwrap();
        let again = merge(s.ticket(1).unwrap().unwrap(), merged, &s, "SUP", at(30))
            .unwrap()
            .unwrap_err();
        assert_eq!(again, "SUP-2 was already merged into SUP-1");
        let one = s.ticket(1).unwrap().unwrap();
        let e = merge(one.clone(), one, &s, "SUP", at(30))
            .unwrap()
            .unwrap_err();
        assert_eq!(e, "SUP-1 cannot be merged with itself");
    }

    #[test]
    fn the_similar_index_follows_every_ticket_write() {
        let s = store();
        let mut t = s.ticket(2).unwrap().unwrap();
        t.customer = Some("ACME".into());
        s.put_ticket(&t).unwrap();
        let mut u = ticket(3, 20, "mari@cust.test", &[]);
        u.customer = Some("acme".into());
        s.put_ticket(&u).unwrap();
        assert_eq!(
            s.similar_index(SimilarBy::Customer, "Acme").unwrap(),
            vec![2, 3]
        );
        assert_eq!(
            s.similar_index(SimilarBy::Contact, "mari@cust.test")
                .unwrap(),
            vec![1, 3]
        );
        let want = count_similar(s.data.borrow().tickets.values());
        assert_eq!(s.data.borrow().similar, want);
        // Newest first, itself left out.
        let shown: Vec<u64> = crate::ingest::decide::similar_tickets(&s, &u)
            .unwrap()
            .iter()
            .map(|t| t.number)
            .collect();
        assert_eq!(shown, vec![2, 1]);
    }
}
