//! The sender task: drains the durable outbox through a [`Transport`].
//!
//! The design, in the manner of maddy's queue:
//! - Rows are written by the committed decision; this task only reads them
//!   and records each attempt's result back through [`Store::commit`]. Ingest
//!   never waits on it: the only thing shared is the committer, and a
//!   deliver job is never queued behind a send.
//! - At least once: a row stays `pending` (and in the due queue) until the
//!   result of a send is committed. A crash or a store error between the
//!   server's `250` and that commit sends the mail again after restart.
//! - Failures are temporary unless the server said 5xx. A temporary failure
//!   is retried after `retry_min · 2^(attempt-1)`, capped at `retry_max`,
//!   ±10% jitter so entries that failed together do not retry in lockstep.
//!   Once `give_up_after` has passed since the row was created, a temporary
//!   failure becomes permanent (the last retry is moved to that deadline).
//! - A permanent failure marks the row `failed` and is recorded on the
//!   ticket (`delivery_failures`), in the same transaction.
//! - Up to [`CONCURRENCY`] rows are sent at once, never the same row twice
//!   at the same time (this task owns the only in-flight set).
//! - It sleeps until the earliest due row, the deliver path's `wake`, or
//!   shutdown. A store error is logged and backed off for a second, and a
//!   row that cannot be handled is held back: the loop never spins.

use super::transport::{SendError, Transport};
use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::store::{self, DeliveryFailure, OutboxEntry, OutboxState, Store, Timestamp, Tx, View};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the sender needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// First retry delay; doubles per attempt.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// After this long since the row was created a temporary failure is
    /// permanent.
    pub give_up_after: Duration,
    /// For `ticket=SUP-12` in the log lines.
    pub token_prefix: String,
}

/// Floor for a configured `retry_min`: 0s would retry a failing relay as
/// fast as it answers.
const MIN_CONFIGURED_RETRY: Duration = Duration::from_secs(1);

impl Settings {
    pub fn from_config(c: &Config) -> Settings {
        let retry_min = c.outbound.retry_min.std().max(MIN_CONFIGURED_RETRY);
        Settings {
            retry_min,
            retry_max: c.outbound.retry_max.std().max(retry_min),
            give_up_after: c.outbound.give_up_after.std(),
            token_prefix: c.support.token_prefix.clone(),
        }
    }
}

/// Rows sent at the same time.
pub const CONCURRENCY: usize = 4;
/// Pause after a store error.
const STORE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest sleep: due times are wall-clock, sleeps are monotonic, so a
/// clock step is noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// Shortest pause between two scans that started nothing: the guard that
/// keeps an unforeseen "due but not sendable" row from turning into a spin.
const MIN_IDLE_PAUSE: Duration = Duration::from_millis(10);
/// Absolute floor for a computed retry delay.
const MIN_RETRY_DELAY: Duration = Duration::from_millis(10);
/// A whole attempt (DNS, every MX, DATA) may take this long. lettre's
/// timeout is per read/write, so a server trickling bytes could otherwise
/// hold a slot forever.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(15 * 60);
/// At shutdown, sends in progress get this long to finish and be recorded;
/// the rest are abandoned and sent again after the restart.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What one attempt came to, decided before the commit so the commit
/// closure (which sled may re-run) only writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Sent {
        reply: String,
    },
    Retry {
        reply: String,
        next_at: Timestamp,
        /// From now to `next_at`, for `next_in=` in the log.
        delay: Duration,
    },
    Failed {
        reply: String,
    },
}

impl Outcome {
    /// The `result` label of `postdesk_outbox_attempts_total`.
    fn name(&self) -> &'static str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// How a send task ended, for the loop's bookkeeping.
enum TaskEnd {
    Done,
    /// Reading the row or recording the result failed: back off.
    StoreError,
}

/// Runs until `shutdown` fires. Spawn it once per store; the deliver path
/// calls `wake.notify_one()` (or `notify_waiters()`) after each commit that
/// added outbox rows, so new mail goes out at once instead of at the next
/// due time.
pub async fn run(
    store: Store,
    transport: Arc<dyn Transport>,
    settings: Settings,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let settings = Arc::new(settings);
    let mut tasks: JoinSet<TaskEnd> = JoinSet::new();
    // JoinSet task id → outbox id, to free the slot even when a task panics.
    let mut running: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut in_flight: HashSet<u64> = HashSet::new();
    // Rows not to touch until the given instant (store trouble, a panic,
    // a queue key without a pending row).
    let mut held: HashMap<u64, Instant> = HashMap::new();
    let mut backoff_until: Option<Instant> = None;

    loop {
        if shutdown.is_set() {
            break;
        }
        // Registered before the store is read, so a commit that lands
        // during the scan still wakes us (notify_waiters keeps no permit).
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let now = Instant::now();
        held.retain(|_, until| *until > now);
        let mut wake_at = now + MAX_SLEEP.min(store.idle_poll());
        let mut started = 0;
        match backoff_until {
            Some(b) if b > now => wake_at = b,
            _ => {
                backoff_until = None;
                let mut sched = Scheduler {
                    store: &store,
                    transport: &transport,
                    settings: &settings,
                    tasks: &mut tasks,
                    running: &mut running,
                    in_flight: &mut in_flight,
                    held: &mut held,
                };
                match sched.start_due() {
                    Ok(n) => started = n,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox: cannot read the queue; retrying in 1s");
                        backoff_until = Some(now + STORE_BACKOFF);
                    }
                }
                // With every slot busy, a finishing task is what wakes us.
                if backoff_until.is_none() && sched.tasks.len() < CONCURRENCY {
                    match sched.next_due(now) {
                        Ok(Some(t)) => wake_at = wake_at.min(t),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "outbox: cannot read the queue; retrying in 1s");
                            backoff_until = Some(now + STORE_BACKOFF);
                        }
                    }
                }
                if let Some(b) = backoff_until {
                    wake_at = b;
                }
            }
        }
        if let Some(first_release) = held.values().min() {
            wake_at = wake_at.min(*first_release);
        }
        if started == 0 {
            wake_at = wake_at.max(now + MIN_IDLE_PAUSE);
        }

        tokio::select! {
            biased;
            _ = shutdown.wait() => break,
            Some(joined) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let (task_id, end) = match joined {
                    Ok((task_id, end)) => (task_id, Some(end)),
                    Err(e) => (e.id(), None),
                };
                let Some(id) = running.remove(&task_id) else { continue };
                in_flight.remove(&id);
                match end {
                    Some(TaskEnd::Done) => {}
                    Some(TaskEnd::StoreError) => {
                        held.insert(id, Instant::now() + STORE_BACKOFF);
                        backoff_until = Some(Instant::now() + STORE_BACKOFF);
                    }
                    None => {
                        tracing::error!(outbox_id = id, "outbox: the send task failed; holding the entry back");
                        held.insert(id, Instant::now() + settings.retry_max);
                    }
                }
            }
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(wake_at) => {}
        }
    }

    if !tasks.is_empty() {
        let n = tasks.len();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_progress = n,
                "outbox: sends still in progress at shutdown were abandoned; they are sent again after restart"
            );
            tasks.abort_all();
        }
    }
}

/// The loop's state, borrowed for one scan.
struct Scheduler<'a> {
    store: &'a Store,
    transport: &'a Arc<dyn Transport>,
    settings: &'a Arc<Settings>,
    tasks: &'a mut JoinSet<TaskEnd>,
    running: &'a mut HashMap<tokio::task::Id, u64>,
    in_flight: &'a mut HashSet<u64>,
    held: &'a mut HashMap<u64, Instant>,
}

impl Scheduler<'_> {
    /// Starts due rows in free slots; returns how many it started.
    fn start_due(&mut self) -> store::Result<usize> {
        let free = CONCURRENCY.saturating_sub(self.tasks.len());
        if free == 0 {
            return Ok(0);
        }
        // Skipped ids still sit in the queue: read past them. No more than
        // the free slots beyond those: on PostgreSQL a claim leases what it
        // returns, so a batch of 64 to start one kept rows from the other
        // nodes, and a node killed under load held about five times as many
        // unsent rows (tests/scaleout.rs) until its lease ran out.
        let limit = free + self.in_flight.len() + self.held.len();
        let due = self.store.outbox_claim(Timestamp::now(), limit)?;
        let mut started = 0;
        for id in due {
            if self.tasks.len() >= CONCURRENCY {
                break;
            }
            if self.in_flight.contains(&id) || self.held.contains_key(&id) {
                continue;
            }
            self.in_flight.insert(id);
            let h = self.tasks.spawn(attempt(
                self.store.clone(),
                self.transport.clone(),
                self.settings.clone(),
                id,
            ));
            self.running.insert(h.id(), id);
            started += 1;
        }
        Ok(started)
    }

    /// When the next row not in flight or held becomes due.
    fn next_due(&mut self, now: Instant) -> store::Result<Option<Instant>> {
        let skip = self.in_flight.len() + self.held.len();
        let limit = skip + 8;
        let ids = self.store.outbox_due(Timestamp::MAX, limit)?;
        let n = ids.len();
        for id in ids {
            if self.in_flight.contains(&id) || self.held.contains_key(&id) {
                continue;
            }
            match self.store.outbox(id) {
                Ok(Some(e)) if e.state == OutboxState::Pending => {
                    return Ok(Some(instant_for(e.next_attempt_at, now)));
                }
                Ok(_) => {
                    tracing::warn!(
                        outbox_id = id,
                        "outbox: queued id has no pending entry; skipping it"
                    );
                    self.held.insert(id, now + self.settings.retry_max);
                }
                Err(e) => {
                    tracing::warn!(outbox_id = id, error = %e, "outbox: cannot read entry; skipping it");
                    self.held.insert(id, now + self.settings.retry_max);
                }
            }
        }
        // Every id read was skipped and there may be more: look again soon.
        Ok((n == limit).then(|| now + MIN_IDLE_PAUSE))
    }
}

/// The monotonic instant for a wall-clock due time, capped at [`MAX_SLEEP`].
fn instant_for(due: Timestamp, now: Instant) -> Instant {
    let ahead = Duration::try_from(due.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO);
    now + ahead.min(MAX_SLEEP)
}

/// One attempt at one row, then its result recorded.
async fn attempt(
    store: Store,
    transport: Arc<dyn Transport>,
    settings: Arc<Settings>,
    id: u64,
) -> TaskEnd {
    let entry = match store.outbox(id) {
        Ok(Some(e)) if e.state == OutboxState::Pending => e,
        // Settled or removed since it was queued: nothing to do.
        Ok(_) => return TaskEnd::Done,
        Err(e) => {
            tracing::warn!(outbox_id = id, error = %e, "outbox: cannot read entry");
            return TaskEnd::StoreError;
        }
    };
    let result = match store.outbox_bytes(&entry) {
        Ok(bytes) => {
            let send = transport.send_raw(&entry.mail_from, &entry.rcpt_to, &bytes);
            match tokio::time::timeout(ATTEMPT_LIMIT, send).await {
                Ok(r) => r,
                Err(_) => Err(SendError::Transient(format!(
                    "attempt did not finish within {}",
                    human(ATTEMPT_LIMIT)
                ))),
            }
        }
        // The spool is ours: a read failure may be a passing I/O error, so it
        // is retried like any temporary failure and gives up in the end.
        Err(e) => Err(SendError::Transient(format!(
            "local: cannot read the message to send: {e}"
        ))),
    };
    let now = Timestamp::now();
    let outcome = decide(&entry, result, now, &settings, jitter());
    let to_record = outcome.clone();
    let recorded = store
        .commit(None, move |tx, _| record(tx, id, &to_record, now))
        .await;
    match recorded {
        Ok(Some(row)) => {
            log_outcome(&row, &outcome, &settings.token_prefix);
            crate::metrics::outbox_attempt(&row.kind, outcome.name());
            TaskEnd::Done
        }
        Ok(None) => TaskEnd::Done,
        Err(e) => {
            let what = match outcome {
                Outcome::Sent { .. } => "it was sent and will be sent again",
                _ => "the attempt is repeated",
            };
            tracing::warn!(outbox_id = id, error = %e, "outbox: cannot record the result; {what}");
            TaskEnd::StoreError
        }
    }
}

/// ±10%.
fn jitter() -> f64 {
    use rand::Rng;
    rand::thread_rng().gen_range(0.9..=1.1)
}

/// The delay before retry number `attempt` (1 = after the first failure),
/// before jitter: `retry_min · 2^(attempt-1)`, at most `retry_max`.
fn backoff(attempt: u32, s: &Settings) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    s.retry_min.saturating_mul(factor).min(s.retry_max)
}

fn decide(
    entry: &OutboxEntry,
    result: Result<String, SendError>,
    now: Timestamp,
    s: &Settings,
    jitter: f64,
) -> Outcome {
    let reply = match result {
        Ok(reply) => return Outcome::Sent { reply },
        Err(SendError::Permanent(reply)) => return Outcome::Failed { reply },
        Err(SendError::Transient(reply)) => reply,
    };
    let window_start = entry
        .retried_at
        .unwrap_or(entry.created_at)
        .max(entry.created_at);
    let deadline = window_start
        .checked_add(s.give_up_after)
        .unwrap_or(Timestamp::MAX);
    if now >= deadline {
        return Outcome::Failed {
            reply: format!("gave up after {}: {reply}", human(s.give_up_after)),
        };
    }
    let attempt = entry.attempts.saturating_add(1);
    let base = backoff(attempt, s);
    let delay = Duration::try_from_secs_f64(base.as_secs_f64() * jitter)
        .unwrap_or(base)
        .max(MIN_RETRY_DELAY);
    // The last retry happens at the deadline rather than after it, so
    // give_up_after is kept to within one attempt.
    let next_at = now
        .checked_add(delay)
        .unwrap_or(Timestamp::MAX)
        .min(deadline);
    let delay = Duration::try_from(next_at.duration_since(now)).unwrap_or(Duration::ZERO);
    Outcome::Retry {
        reply,
        next_at,
        delay,
    }
}

/// Writes the outcome to the row (and the ticket for a permanent failure).
/// `None` when the row is gone or no longer pending: someone else settled
/// it, and their word stands.
fn record(
    tx: &Tx,
    id: u64,
    outcome: &Outcome,
    now: Timestamp,
) -> store::Result<Option<OutboxEntry>> {
    let Some(cur) = tx.outbox(id)? else {
        return Ok(None);
    };
    if cur.state != OutboxState::Pending {
        return Ok(None);
    }
    let mut new = cur.clone();
    new.attempts = cur.attempts.saturating_add(1);
    match outcome {
        Outcome::Sent { reply } => {
            new.state = OutboxState::Sent;
            new.sent_at = Some(now);
            new.last_reply = Some(reply.clone());
        }
        Outcome::Retry { reply, next_at, .. } => {
            new.next_attempt_at = *next_at;
            new.last_reply = Some(reply.clone());
        }
        Outcome::Failed { reply } => {
            new.state = OutboxState::Failed;
            new.last_reply = Some(reply.clone());
            if let Some(n) = cur.ticket {
                if let Some(mut t) = tx.ticket(n)? {
                    t.delivery_failures.push(DeliveryFailure {
                        outbox_id: id,
                        kind: cur.kind.clone(),
                        recipients: cur.rcpt_to.clone(),
                        reply: reply.clone(),
                        at: now,
                    });
                    tx.put_ticket(&t)?;
                }
            }
        }
    }
    tx.update_outbox(&cur, &new)?;
    Ok(Some(new))
}

/// The SPEC §7 lines. Fields are structured (for `log.format: json`); the
/// `%` sigil prints kind, ticket and to bare, and the replies go in as
/// strings, which the text format quotes: `sent kind=ack ticket=SUP-12
/// to=a@example.com relay_reply="250 2.0.0 Ok"`.
fn log_outcome(row: &OutboxEntry, outcome: &Outcome, prefix: &str) {
    let ticket = match row.ticket {
        Some(n) => format!("{prefix}-{n}"),
        None => "-".to_string(),
    };
    let to = row.rcpt_to.join(",");
    match outcome {
        Outcome::Sent { reply } => tracing::info!(
            kind = %row.kind,
            ticket = %ticket,
            to = %to,
            relay_reply = reply.as_str(),
            "sent"
        ),
        Outcome::Retry { reply, delay, .. } => {
            // Whole seconds, rounded up, as the SPEC writes them.
            let next_in = format!("{}s", delay.as_millis().div_ceil(1000));
            tracing::warn!(
                kind = %row.kind,
                ticket = %ticket,
                to = %to,
                attempt = row.attempts,
                next_in = %next_in,
                reply = reply.as_str(),
                "retry"
            )
        }
        Outcome::Failed { reply } => tracing::warn!(
            kind = %row.kind,
            ticket = %ticket,
            to = %to,
            reply = reply.as_str(),
            "failed"
        ),
    }
}

/// `5d`, `90s`: the way the configuration writes durations.
fn human(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    crate::config::Duration::from_millis(ms).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Ticket;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Fails transiently `fail_first` times, then answers `then`.
    struct Fake {
        fail_first: usize,
        then: Result<String, SendError>,
        delay: Duration,
        calls: Mutex<Vec<(std::time::Instant, Vec<String>)>>,
        active: Mutex<HashSet<String>>,
        max_active: AtomicUsize,
        overlap_same: AtomicUsize,
    }

    impl Fake {
        fn new(fail_first: usize, then: Result<String, SendError>) -> Arc<Fake> {
            Arc::new(Fake {
                fail_first,
                then,
                delay: Duration::ZERO,
                calls: Mutex::new(Vec::new()),
                active: Mutex::new(HashSet::new()),
                max_active: AtomicUsize::new(0),
                overlap_same: AtomicUsize::new(0),
            })
        }
        fn slow(delay: Duration) -> Arc<Fake> {
            let mut f = Arc::into_inner(Fake::new(0, Ok("250 ok".into()))).unwrap();
            f.delay = delay;
            Arc::new(f)
        }
        fn calls(&self) -> usize {
            self.calls.lock().unwrap().len()
        }
        fn times(&self) -> Vec<std::time::Instant> {
            self.calls.lock().unwrap().iter().map(|c| c.0).collect()
        }
    }

    impl Transport for Fake {
        fn send_raw<'a>(
            &'a self,
            _mail_from: &'a str,
            rcpt_to: &'a [String],
            _bytes: &'a [u8],
        ) -> crate::lmtp::BoxFuture<'a, Result<String, SendError>> {
            Box::pin(async move {
                let key = rcpt_to.join(",");
                let n = {
                    let mut c = self.calls.lock().unwrap();
                    c.push((std::time::Instant::now(), rcpt_to.to_vec()));
                    c.len()
                };
                {
                    let mut a = self.active.lock().unwrap();
                    if !a.insert(key.clone()) {
                        self.overlap_same.fetch_add(1, Ordering::SeqCst);
                    }
                    self.max_active.fetch_max(a.len(), Ordering::SeqCst);
                }
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                self.active.lock().unwrap().remove(&key);
                if n <= self.fail_first {
                    Err(SendError::Transient("451 4.3.0 try later".into()))
                } else {
                    self.then.clone()
                }
            })
        }
    }

    fn settings(retry_min_ms: u64, retry_max_ms: u64, give_up_ms: u64) -> Settings {
        Settings {
            retry_min: Duration::from_millis(retry_min_ms),
            retry_max: Duration::from_millis(retry_max_ms),
            give_up_after: Duration::from_millis(give_up_ms),
            token_prefix: "SUP".into(),
        }
    }

    fn entry(ticket: Option<u64>, to: &str) -> OutboxEntry {
        let now = Timestamp::now();
        OutboxEntry {
            id: 0,
            ticket,
            kind: "ack".into(),
            mail_from: "support@example.com".into(),
            rcpt_to: vec![to.into()],
            message_id: "ack.1@example.com".into(),
            head: b"Subject: hi\r\n\r\nhello\r\n".to_vec(),
            body: None,
            created_at: now,
            next_attempt_at: now,
            attempts: 0,
            last_reply: None,
            state: OutboxState::Pending,
            sent_at: None,
            dropped: None,
            retried_at: None,
        }
    }

    fn ticket(number: u64) -> Ticket {
        let now = Timestamp::now();
        Ticket {
            subject: "Printer on fire".into(),
            description: "It burns".into(),
            contact: "customer@example.net".into(),
            contact_name: Some("Customer".into()),
            notified: true,
            message_ids: vec!["m1@example.net".into()],
            participants: vec!["customer@example.net".into()],
            ..Ticket::new(number, now, "en")
        }
    }

    struct Running {
        store: Store,
        wake: Arc<Notify>,
        trigger: crate::shutdown::Trigger,
        handle: tokio::task::JoinHandle<()>,
        _dir: tempfile::TempDir,
    }

    impl Running {
        async fn add(&self, e: OutboxEntry) -> u64 {
            let id = self
                .store
                .commit(None, move |tx, _| tx.add_outbox(e.clone()))
                .await
                .unwrap();
            self.wake.notify_one();
            id
        }
        async fn wait_state(&self, id: u64, state: OutboxState, within: Duration) -> OutboxEntry {
            let until = std::time::Instant::now() + within;
            loop {
                let e = self.store.outbox(id).unwrap().unwrap();
                if e.state == state {
                    return e;
                }
                assert!(
                    std::time::Instant::now() < until,
                    "entry {id} not {state:?} within {within:?}: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        async fn stop(self) {
            self.trigger.fire();
            tokio::time::timeout(Duration::from_secs(2), self.handle)
                .await
                .expect("run returns promptly after shutdown")
                .unwrap();
        }
    }

    async fn start(transport: Arc<dyn Transport>, s: Settings, tickets: Vec<Ticket>) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for t in tickets {
            store
                .commit(None, move |tx, _| tx.put_ticket(&t))
                .await
                .unwrap();
        }
        let wake = Arc::new(Notify::new());
        let (trigger, shutdown) = crate::shutdown::channel();
        let handle = tokio::spawn(run(store.clone(), transport, s, wake.clone(), shutdown));
        Running {
            store,
            wake,
            trigger,
            handle,
            _dir: dir,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_failures_then_success_is_sent_once_with_backoff() {
        let fake = Fake::new(2, Ok("250 2.0.0 Ok: queued as X1".into()));
        let r = start(fake.clone(), settings(50, 1000, 60_000), vec![]).await;
        let id = r.add(entry(None, "a@example.com")).await;
        let e = r
            .wait_state(id, OutboxState::Sent, Duration::from_secs(5))
            .await;
        assert_eq!(e.attempts, 3, "two failures and the success are counted");
        assert_eq!(e.last_reply.as_deref(), Some("250 2.0.0 Ok: queued as X1"));
        assert!(e.sent_at.is_some());
        let t = fake.times();
        assert_eq!(t.len(), 3);
        // retry_min 50 ms, then 100 ms, each -10% at most (and the queue
        // keys have millisecond resolution).
        assert!(
            t[1] - t[0] >= Duration::from_millis(44),
            "{:?}",
            t[1] - t[0]
        );
        assert!(
            t[2] - t[1] >= Duration::from_millis(89),
            "{:?}",
            t[2] - t[1]
        );
        // Nothing more is sent once it went out.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(fake.calls(), 3);
        assert_eq!(r.store.outbox_next_due().unwrap(), None, "off the queue");
        r.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_relay_is_retried_at_the_backoff_rate_not_in_a_loop() {
        let fake = Fake::new(usize::MAX, Ok(String::new()));
        let r = start(fake.clone(), settings(50, 100, 60_000), vec![]).await;
        let id = r.add(entry(None, "a@example.com")).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let n = fake.calls();
        // 0, 50, 150, 250 … ms: about 7 (fewer when commits are slow on a
        // busy machine); a busy loop would make hundreds.
        assert!((2..=10).contains(&n), "{n} attempts in 700 ms");
        let e = r.store.outbox(id).unwrap().unwrap();
        assert_eq!(e.state, OutboxState::Pending);
        assert!(e.attempts as usize >= n - 1, "attempts recorded: {e:?}");
        assert_eq!(e.last_reply.as_deref(), Some("451 4.3.0 try later"));
        r.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permanent_failure_marks_failed_and_is_recorded_on_the_ticket() {
        let fake = Fake::new(
            0,
            Err(SendError::Permanent("550 5.1.1 no such user".into())),
        );
        let r = start(fake.clone(), settings(50, 1000, 60_000), vec![ticket(7)]).await;
        let id = r.add(entry(Some(7), "gone@example.com")).await;
        let e = r
            .wait_state(id, OutboxState::Failed, Duration::from_secs(5))
            .await;
        assert_eq!(e.attempts, 1);
        assert_eq!(e.last_reply.as_deref(), Some("550 5.1.1 no such user"));
        let t = r.store.ticket(7).unwrap().unwrap();
        assert_eq!(t.delivery_failures.len(), 1);
        let f = &t.delivery_failures[0];
        assert_eq!(f.outbox_id, id);
        assert_eq!(f.kind, "ack");
        assert_eq!(f.recipients, vec!["gone@example.com".to_string()]);
        assert_eq!(f.reply, "550 5.1.1 no such user");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fake.calls(), 1, "a permanent failure is not retried");
        r.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn give_up_after_turns_a_transient_failure_permanent() {
        let fake = Fake::new(usize::MAX, Ok(String::new()));
        let r = start(fake.clone(), settings(50, 100, 250), vec![ticket(3)]).await;
        let id = r.add(entry(Some(3), "slow@example.com")).await;
        let e = r
            .wait_state(id, OutboxState::Failed, Duration::from_secs(3))
            .await;
        let reply = e.last_reply.unwrap();
        assert!(
            reply.starts_with("gave up after 250ms: 451 4.3.0"),
            "{reply}"
        );
        // Attempts at ~0, 50, 150 and the last one at the 250 ms deadline
        // (fewer when commits are slow).
        assert!((2..=6).contains(&fake.calls()), "{} attempts", fake.calls());
        let t = r.store.ticket(3).unwrap().unwrap();
        assert_eq!(t.delivery_failures.len(), 1);
        assert!(t.delivery_failures[0].reply.starts_with("gave up after"));
        r.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_sends_a_new_entry_at_once() {
        let fake = Fake::new(0, Ok("250 ok".into()));
        let r = start(fake.clone(), settings(50, 1000, 60_000), vec![]).await;
        // Let the task go to sleep on an empty queue (up to a minute).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let id = r.add(entry(None, "a@example.com")).await;
        // Far sooner than the 60 s the idle task would otherwise sleep.
        r.wait_state(id, OutboxState::Sent, Duration::from_secs(3))
            .await;
        r.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_in_parallel_but_never_one_entry_twice_at_once() {
        let fake = Fake::slow(Duration::from_millis(150));
        let r = start(fake.clone(), settings(50, 1000, 60_000), vec![]).await;
        // One commit, so the first scan finds all seven due.
        let ids = r
            .store
            .commit(None, |tx, _| {
                (0..7)
                    .map(|i| tx.add_outbox(entry(None, &format!("u{i}@example.com"))))
                    .collect::<store::Result<Vec<u64>>>()
            })
            .await
            .unwrap();
        r.wake.notify_one();
        for id in &ids {
            r.wait_state(*id, OutboxState::Sent, Duration::from_secs(5))
                .await;
        }
        assert_eq!(fake.calls(), 7, "each entry once");
        let max = fake.max_active.load(Ordering::SeqCst);
        assert_eq!(max, CONCURRENCY, "max concurrent sends");
        assert_eq!(fake.overlap_same.load(Ordering::SeqCst), 0);
        r.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreadable_body_is_a_transient_failure() {
        let fake = Fake::new(0, Ok("250 ok".into()));
        let r = start(fake.clone(), settings(50, 100, 60_000), vec![]).await;
        let mut e = entry(None, "a@example.com");
        // A spool reference to a file that does not exist.
        e.body = Some((
            store::SpoolRef {
                file: 999,
                offset: 0,
                len: 10,
                check: 0,
            },
            0,
        ));
        let id = r.add(e).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = r.store.outbox(id).unwrap().unwrap();
        assert_eq!(e.state, OutboxState::Pending);
        assert!(e.attempts >= 1);
        assert!(e.last_reply.unwrap().starts_with("local: cannot read"));
        assert_eq!(fake.calls(), 0);
        r.stop().await;
    }

    #[tokio::test]
    async fn shutdown_before_start_returns_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (trigger, shutdown) = crate::shutdown::channel();
        trigger.fire();
        let fake = Fake::new(0, Ok("250".into()));
        tokio::time::timeout(
            Duration::from_secs(1),
            run(
                store,
                fake,
                settings(50, 100, 1000),
                Arc::new(Notify::new()),
                shutdown,
            ),
        )
        .await
        .unwrap();
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = settings(30_000, 3_600_000, 5 * 86_400_000);
        let secs: Vec<u64> = (1..=10).map(|a| backoff(a, &s).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
        assert_eq!(backoff(u32::MAX, &s).as_secs(), 3600, "no overflow");
    }

    #[test]
    fn decide_applies_jitter_deadline_and_give_up() {
        let s = settings(30_000, 3_600_000, 86_400_000);
        let now = Timestamp::now();
        let mut e = entry(None, "a@example.com");
        e.created_at = now;
        let r = decide(&e, Err(SendError::Transient("451".into())), now, &s, 1.1);
        match r {
            Outcome::Retry { delay, next_at, .. } => {
                assert_eq!(delay, Duration::from_secs(33));
                assert_eq!(next_at, now.checked_add(Duration::from_secs(33)).unwrap());
            }
            other => panic!("{other:?}"),
        }
        // Close to the deadline: the retry lands on it, not after it.
        e.created_at = now.checked_sub(Duration::from_secs(86_400 - 10)).unwrap();
        e.attempts = 3;
        match decide(&e, Err(SendError::Transient("451".into())), now, &s, 1.0) {
            Outcome::Retry { delay, .. } => assert_eq!(delay, Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
        // At the deadline: permanent.
        e.created_at = now.checked_sub(Duration::from_secs(86_400)).unwrap();
        assert_eq!(
            decide(
                &e,
                Err(SendError::Transient("451 busy".into())),
                now,
                &s,
                1.0
            ),
            Outcome::Failed {
                reply: "gave up after 1d: 451 busy".into()
            }
        );
        assert!(matches!(
            decide(&e, Ok("250".into()), now, &s, 1.0),
            Outcome::Sent { .. }
        ));
    }

    #[test]
    fn settings_from_config_floor_retry_min() {
        let mut c = Config::default();
        c.outbound.retry_min = crate::config::Duration::from_secs(0);
        c.outbound.retry_max = crate::config::Duration::from_secs(0);
        let s = Settings::from_config(&c);
        assert_eq!(s.retry_min, Duration::from_secs(1));
        assert_eq!(s.retry_max, Duration::from_secs(1));
        assert_eq!(s.token_prefix, "SUP");
        assert_eq!(s.give_up_after, Duration::from_secs(5 * 86_400));
    }

    /// The text format prints the SPEC's line.
    #[test]
    fn sent_line_reads_like_the_spec() {
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .finish();
        let mut row = entry(Some(12), "a@example.com");
        row.rcpt_to.push("b@example.com".into());
        row.attempts = 2;
        tracing::subscriber::with_default(sub, || {
            log_outcome(
                &row,
                &Outcome::Sent {
                    reply: "250 2.0.0 Ok: queued as 4XbQ2".into(),
                },
                "SUP",
            );
            log_outcome(
                &row,
                &Outcome::Retry {
                    reply: "451 4.3.0 busy".into(),
                    next_at: Timestamp::now(),
                    delay: Duration::from_millis(29_500),
                },
                "SUP",
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(
                "INFO sent kind=ack ticket=SUP-12 to=a@example.com,b@example.com relay_reply=\"250 2.0.0 Ok: queued as 4XbQ2\""
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "WARN retry kind=ack ticket=SUP-12 to=a@example.com,b@example.com attempt=2 next_in=30s reply=\"451 4.3.0 busy\""
            ),
            "{text}"
        );
    }
}
