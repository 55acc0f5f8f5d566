//! Every key encoding of the sled backend, in one place. One tree holds all
//! records under short prefixes; numbers are big-endian so a prefix scan
//! yields them in order (tickets by number, the outbox queue by due time).

pub const NEXT_TICKET: &[u8] = b"meta/next_ticket";
pub const NEXT_OUTBOX: &[u8] = b"meta/next_outbox";
pub const NEXT_APART: &[u8] = b"meta/next_apart";
pub const NEXT_JOB: &[u8] = b"meta/next_job";
/// Version of the key layout; absent means 1.
pub const LAYOUT: &[u8] = b"meta/layout";
/// 2: a message's stored ids live in its `k/` value, not under `i/`.
pub const LAYOUT_CURRENT: u64 = 2;

pub const TICKET: &[u8] = b"t/";
pub const MESSAGE: &[u8] = b"m/";
pub const APART: &[u8] = b"a/";
pub const THREAD_KEY: &[u8] = b"k/";
pub const CONVERSATION: &[u8] = b"c/";
/// Layout 1 only: stored ids had a key of their own. A lookup by
/// Message-ID then touched two random leaves of the tree, which at a
/// million tickets cost a page-in each (docs/performance.md).
pub const STORED_ID_V1: &[u8] = b"i/";
pub const OUTBOX: &[u8] = b"o/";
pub const QUEUE: &[u8] = b"q/";
pub const ACKS: &[u8] = b"r/";
pub const LEARNED: &[u8] = b"u/";
pub const SCHEDULE: &[u8] = b"s/";
/// Counters for `status`: `n/t/` + ticket status and `n/o/` + outbox state
/// → how many (u64). Kept in the same transaction as every write they
/// count, so reading them never walks the tickets or the outbox.
pub const COUNT: &[u8] = b"n/";
const TICKET_COUNT: &[u8] = b"n/t/";
const OUTBOX_COUNT: &[u8] = b"n/o/";
/// Present once the counters were built from the records (a store written
/// before them gets them at its next start).
pub const COUNTS_BUILT: &[u8] = b"meta/counts_v1";

fn cat(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
    k.extend_from_slice(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

pub fn ticket(n: u64) -> Vec<u8> {
    cat(TICKET, &[&n.to_be_bytes()])
}
pub fn message(ticket: u64, seq: u32) -> Vec<u8> {
    cat(MESSAGE, &[&ticket.to_be_bytes(), &seq.to_be_bytes()])
}
pub fn messages_of(ticket: u64) -> Vec<u8> {
    cat(MESSAGE, &[&ticket.to_be_bytes()])
}
pub fn apart(seq: u64) -> Vec<u8> {
    cat(APART, &[&seq.to_be_bytes()])
}
pub fn thread_key(message_id: &str) -> Vec<u8> {
    cat(THREAD_KEY, &[message_id.as_bytes()])
}
pub fn conversation(key: &str) -> Vec<u8> {
    cat(CONVERSATION, &[key.as_bytes()])
}
/// A `k/` value: the ticket (0 for none, e.g. a message kept apart), then
/// the encoded stored ids when the message itself was stored.
pub fn thread_value(ticket: u64, stored: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + stored.len());
    v.extend_from_slice(&ticket.to_be_bytes());
    v.extend_from_slice(stored);
    v
}

/// (ticket, stored ids bytes) of a `k/` value; ticket 0 means none.
pub fn split_thread_value(v: &[u8]) -> (Option<u64>, &[u8]) {
    let ticket = v.get(..8).and_then(be_u64).filter(|n| *n != 0);
    (ticket, v.get(8..).unwrap_or(&[]))
}
pub fn outbox(id: u64) -> Vec<u8> {
    cat(OUTBOX, &[&id.to_be_bytes()])
}
/// Due-ordered queue entry: millisecond due time, then id.
pub fn queue(due_ms: i64, id: u64) -> Vec<u8> {
    // Shift so negative times still sort before positive ones.
    let due = (due_ms as u64) ^ (1 << 63);
    cat(QUEUE, &[&due.to_be_bytes(), &id.to_be_bytes()])
}
pub fn queue_upper(due_ms: i64) -> Vec<u8> {
    let due = (due_ms as u64) ^ (1 << 63);
    cat(QUEUE, &[&due.to_be_bytes(), &u64::MAX.to_be_bytes()])
}
pub fn queue_id(key: &[u8]) -> Option<u64> {
    let tail = key.get(QUEUE.len() + 8..QUEUE.len() + 16)?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}
/// Scheduler job, due-ordered like the outbox queue.
pub fn job(due_ms: i64, id: u64) -> Vec<u8> {
    let due = (due_ms as u64) ^ (1 << 63);
    cat(SCHEDULE, &[&due.to_be_bytes(), &id.to_be_bytes()])
}
pub fn job_upper(due_ms: i64) -> Vec<u8> {
    let due = (due_ms as u64) ^ (1 << 63);
    cat(SCHEDULE, &[&due.to_be_bytes(), &u64::MAX.to_be_bytes()])
}
pub fn ticket_count(status: &str) -> Vec<u8> {
    cat(TICKET_COUNT, &[status.as_bytes()])
}
pub fn outbox_count(state: &str) -> Vec<u8> {
    cat(OUTBOX_COUNT, &[state.as_bytes()])
}
pub fn acks(address: &str) -> Vec<u8> {
    cat(ACKS, &[address.as_bytes()])
}
pub fn learned(address: &str) -> Vec<u8> {
    cat(LEARNED, &[address.as_bytes()])
}
pub fn be_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_values_carry_ticket_and_stored_ids() {
        assert_eq!(
            split_thread_value(&thread_value(7, b"")),
            (Some(7), &b""[..])
        );
        assert_eq!(
            split_thread_value(&thread_value(0, b"xy")),
            (None, &b"xy"[..])
        );
        assert_eq!(
            split_thread_value(&thread_value(9, b"xy")),
            (Some(9), &b"xy"[..])
        );
        // A layout-1 value is the bare ticket number.
        assert_eq!(split_thread_value(&3u64.to_be_bytes()), (Some(3), &b""[..]));
        assert_eq!(split_thread_value(b"bad"), (None, &b""[..]));
    }
    #[test]
    fn queue_sorts_by_due_then_id() {
        let mut ks = [queue(5, 2), queue(-3, 9), queue(5, 1), queue(1_000_000, 0)];
        ks.sort();
        let ids: Vec<_> = ks.iter().map(|k| queue_id(k).unwrap()).collect();
        assert_eq!(ids, vec![9, 1, 2, 0]);
        assert!(queue(5, 7) < queue_upper(5) && queue_upper(5) < queue(6, 0));
    }
}
