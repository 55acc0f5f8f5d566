//! The sled backend and its group committer.
//!
//! One committer thread owns every write. Sessions hand it jobs; it takes
//! what is queued as one batch, appends each job's raw message to the spool,
//! runs each job in its own sled transaction, then makes the whole batch
//! durable — sled `flush()`, our own `fdatasync` of sled's `db` file (its
//! flush is only `sync_file_range`), and `fdatasync` of the spool — and only
//! then answers each job. sled runs transactions one at a time anyway, so a
//! single committer costs nothing and turns N fsyncs into one.

use super::keys;
use super::spool::{self, Spool};
use super::{
    decode, encode, Error, Job, JobKind, MessageRecord, OutboxEntry, OutboxState, Result,
    ScheduledRef, SpoolRef, StoredIds, Ticket, Timestamp, View, Writes,
};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::any::Any;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

type AnyBox = Box<dyn Any + Send>;
type JobFn = Box<dyn Fn(&SledTx, Option<SpoolRef>) -> Result<AnyBox> + Send>;

struct CommitJob {
    raw: Option<Arc<Vec<u8>>>,
    f: JobFn,
    reply: oneshot::Sender<Result<AnyBox>>,
}

type QuietFn = Box<dyn FnOnce(&Quiet) -> AnyBox + Send>;

/// What the committer is handed: a write job, or a closure that runs on the
/// committer thread between batches, with nothing committing meanwhile.
enum Work {
    Commit(CommitJob),
    Quiet(QuietFn, oneshot::Sender<AnyBox>),
}

/// The store as a [`SledStore::quiet`] closure sees it: every job answered
/// before it is committed and synced, and none runs until it returns. So a
/// walk over the trees and the spool file lengths taken here form one
/// consistent point (backups), and its running at all shows the ingest
/// path is not wedged (the systemd watchdog probe).
pub struct Quiet<'a> {
    pub db: &'a sled::Db,
    pub spool_dir: &'a Path,
    pub data_dir: &'a Path,
    /// Bumped by [`Quiet::progress`]; `None` outside a committer.
    pub(crate) progress: Option<&'a Inner>,
}

impl Quiet<'_> {
    /// A long closure (a backup's dump) says it is still moving: the wedge
    /// watchdog's clock restarts and the systemd keep-alives go on, so a
    /// big store's backup is not taken for a wedged committer.
    pub fn progress(&self) {
        if let Some(inner) = self.progress {
            inner.busy_since_ms.store(now_ms(), Ordering::SeqCst);
            inner.quiet_progress.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Figures from the last batches, for logs, status and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitStats {
    pub batches: u64,
    pub jobs: u64,
    pub max_batch: usize,
}

pub(crate) struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    data_dir: PathBuf,
    spool_dir: PathBuf,
    jobs: Mutex<Option<mpsc::UnboundedSender<Work>>>,
    stats: Mutex<CommitStats>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Below this many free bytes on the data dir's filesystem a batch is
    /// refused before anything is written (0: no check). sled keeps its
    /// first write error for the life of the process, so the disk must
    /// never fill under it.
    min_free: AtomicU64,
    /// Outbox ids up to here are on stable storage; the sender sends only
    /// those, so no mail goes out for a batch that could still be lost.
    durable_outbox: AtomicU64,
    /// When the batch now being committed started (ms since the epoch; 0
    /// when idle), for the wedge watchdog.
    busy_since_ms: AtomicU64,
    /// `limits.commit_timeout` in ms (0: no watchdog).
    commit_timeout_ms: AtomicU64,
    /// How often quiet closures reported progress (`Quiet::progress`).
    quiet_progress: AtomicU64,
}

/// Cheap to clone: every clone talks to the same committer.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

const MAX_BATCH: usize = 256;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SledStore {
    /// Opens (or creates) the store under `data_dir` and starts its
    /// committer. Fails with [`Error::Locked`] when another process has it.
    pub fn open(data_dir: &Path) -> Result<SledStore> {
        // sled creates its files (conf, db, blobs, and a snap.* at every
        // flush) with the process umask: the CLI working on the store with
        // no daemon running must not leave them readable by others
        // (SPEC §8), whatever the shell's umask. `serve` sets the same.
        // SAFETY: umask only changes this process's file-creation mask.
        unsafe {
            libc::umask(0o077);
        }
        create_private_dir(data_dir)?;
        let db_dir = data_dir.join("store");
        let spool_dir = data_dir.join("spool");
        create_private_dir(&spool_dir)?;
        // An erasure left stale copies in sled's segments: rewrite first.
        super::rewrite::compact_if_pending(data_dir)?;
        let db = sled::Config::new()
            .path(&db_dir)
            // Measured: 64 MiB holds RSS near 46 MiB at no cost in speed.
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref ioe) if ioe.kind() == std::io::ErrorKind::WouldBlock => {
                    Error::Locked(data_dir.to_path_buf())
                }
                other if other.to_string().contains("lock") => {
                    Error::Locked(data_dir.to_path_buf())
                }
                other => Error::from(other),
            })?;
        let tree = db.open_tree("postdesk")?;
        let spool = Spool::open(&spool_dir)?;
        let db_file = File::open(db_dir.join("db")).map_err(io(&db_dir))?;
        if migrate_layout(&tree)? {
            db.flush()?;
            db_file.sync_data().map_err(io(&db_dir))?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            db,
            tree,
            data_dir: data_dir.to_path_buf(),
            spool_dir,
            jobs: Mutex::new(Some(tx)),
            stats: Mutex::new(CommitStats::default()),
            worker: Mutex::new(None),
            min_free: AtomicU64::new(0),
            durable_outbox: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(0),
            commit_timeout_ms: AtomicU64::new(0),
            quiet_progress: AtomicU64::new(0),
        });
        // Whatever recovery found is on disk.
        inner
            .durable_outbox
            .store(last_outbox_id(&inner.tree), Ordering::SeqCst);
        let worker = inner.clone();
        let handle = std::thread::Builder::new()
            .name("committer".into())
            .spawn(move || committer(worker, rx, spool, db_file))
            .map_err(io(data_dir))?;
        if let Ok(mut w) = inner.worker.lock() {
            *w = Some(handle);
        }
        let watched = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("store-watchdog".into())
            .spawn(move || watchdog(watched))
            .map_err(io(data_dir))?;
        Ok(SledStore { inner })
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    /// Exit 75 when one batch has been committing for longer than `limit`
    /// (`limits.commit_timeout`; zero turns the watchdog off).
    pub fn set_commit_timeout(&self, limit: std::time::Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.inner.commit_timeout_ms.store(ms, Ordering::SeqCst);
    }

    /// Refuse batches (451) while fewer than `bytes` are free on the data
    /// dir's filesystem (`limits.min_free_space`).
    pub fn set_min_free_space(&self, bytes: u64) {
        self.inner.min_free.store(bytes, Ordering::SeqCst);
    }

    /// Runs `f` in one transaction (re-run on conflict, so it must be pure
    /// apart from its writes through `SledTx`) after appending `raw` to the
    /// spool, and returns once the batch holding it is on stable storage.
    pub async fn commit<T, F>(&self, raw: Option<Arc<Vec<u8>>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&SledTx, Option<SpoolRef>) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = CommitJob {
            raw,
            f: Box::new(move |tx, r| f(tx, r).map(|v| Box::new(v) as AnyBox)),
            reply,
        };
        {
            let guard = self.inner.jobs.lock().map_err(|_| Error::Closed)?;
            let sender = guard.as_ref().ok_or(Error::Closed)?;
            sender.send(Work::Commit(job)).map_err(|_| Error::Closed)?;
        }
        let out = rx.await.map_err(|_| Error::Closed)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| Error::Other("committer returned the wrong type".into()))
    }

    /// Blocking form of [`SledStore::commit`] for code outside the runtime
    /// (the CLI working on the store directly, `import`).
    pub fn commit_blocking<T, F>(&self, raw: Option<Arc<Vec<u8>>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&SledTx, Option<SpoolRef>) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = CommitJob {
            raw,
            f: Box::new(move |tx, r| f(tx, r).map(|v| Box::new(v) as AnyBox)),
            reply,
        };
        {
            let guard = self.inner.jobs.lock().map_err(|_| Error::Closed)?;
            let sender = guard.as_ref().ok_or(Error::Closed)?;
            sender.send(Work::Commit(job)).map_err(|_| Error::Closed)?;
        }
        let out = rx.blocking_recv().map_err(|_| Error::Closed)??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| Error::Other("committer returned the wrong type".into()))
    }

    /// Runs `f` on the committer thread between batches: everything
    /// answered before it is committed and synced, nothing commits while it
    /// runs (so keep it short: deliveries wait, and the wedge watchdog
    /// counts it as a batch). Blocking: call it off the async workers.
    pub fn quiet_blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Quiet) -> T + Send + 'static,
    {
        self.send_quiet(f)?
            .blocking_recv()
            .map_err(|_| Error::Closed)
            .and_then(downcast)
    }

    /// Async form of [`SledStore::quiet_blocking`].
    pub async fn quiet<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Quiet) -> T + Send + 'static,
    {
        self.send_quiet(f)?
            .await
            .map_err(|_| Error::Closed)
            .and_then(downcast)
    }

    /// Grows while a quiet closure reports progress (the watchdog's proof
    /// that a committer busy with a backup is not wedged).
    pub fn quiet_progress(&self) -> u64 {
        self.inner.quiet_progress.load(Ordering::SeqCst)
    }

    fn send_quiet<T, F>(&self, f: F) -> Result<oneshot::Receiver<AnyBox>>
    where
        T: Send + 'static,
        F: FnOnce(&Quiet) -> T + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let f: QuietFn = Box::new(move |q| Box::new(f(q)) as AnyBox);
        let guard = self.inner.jobs.lock().map_err(|_| Error::Closed)?;
        let sender = guard.as_ref().ok_or(Error::Closed)?;
        sender
            .send(Work::Quiet(f, reply))
            .map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    /// Stops taking jobs and waits until the committer has committed and
    /// synced every job already queued.
    pub fn close(&self) {
        if let Ok(mut g) = self.inner.jobs.lock() {
            g.take();
        }
        let handle = self.inner.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        let _ = self.inner.db.flush();
    }

    pub fn stats(&self) -> CommitStats {
        self.inner.stats.lock().map(|s| *s).unwrap_or_default()
    }

    // ---- read side (outside transactions; may see a batch not yet synced,
    // which is fine for display and for the sender, which only sends what a
    // committed job wrote) ----

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.inner.tree.get(key)? {
            Some(v) => decode(&v).map(Some).map_err(|why| Error::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                why,
            }),
            None => Ok(None),
        }
    }

    /// Every record under `prefix`, decoded, in key order.
    fn scan<T: serde::de::DeserializeOwned>(&self, prefix: impl AsRef<[u8]>) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push(decode(&v).map_err(|why| Error::Corrupt {
                key: format!("{k:?}"),
                why,
            })?);
        }
        Ok(out)
    }

    pub fn ticket(&self, n: u64) -> Result<Option<Ticket>> {
        self.get(&keys::ticket(n))
    }

    pub fn tickets(&self) -> Result<Vec<Ticket>> {
        self.scan(keys::TICKET)
    }

    /// Calls `f` with every ticket, decoded one at a time, in number order:
    /// for counts over the whole store that must not hold it all in memory.
    pub fn for_each_ticket(&self, mut f: impl FnMut(Ticket)) -> Result<()> {
        for kv in self.inner.tree.scan_prefix(keys::TICKET) {
            let (k, v) = kv?;
            let t: Ticket = decode(&v).map_err(|why| Error::Corrupt {
                key: format!("{k:?}"),
                why,
            })?;
            f(t);
        }
        Ok(())
    }

    /// Outbox entries `keep` accepts, decoded one at a time (`ticket show`
    /// wants one ticket's generated mail, not the whole outbox in memory).
    pub fn outbox_where(&self, keep: impl Fn(&OutboxEntry) -> bool) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(keys::OUTBOX) {
            let (k, v) = kv?;
            let e: OutboxEntry = decode(&v).map_err(|why| Error::Corrupt {
                key: format!("{k:?}"),
                why,
            })?;
            if keep(&e) {
                out.push(e);
            }
        }
        Ok(out)
    }

    pub fn messages(&self, ticket: u64) -> Result<Vec<MessageRecord>> {
        self.scan(keys::messages_of(ticket))
    }

    /// Messages kept apart (auto-replies and bounces that matched no ticket).
    pub fn apart(&self) -> Result<Vec<MessageRecord>> {
        self.scan(keys::APART)
    }

    pub fn outbox(&self, id: u64) -> Result<Option<OutboxEntry>> {
        self.get(&keys::outbox(id))
    }

    pub fn outbox_all(&self) -> Result<Vec<OutboxEntry>> {
        self.scan(keys::OUTBOX)
    }

    /// Ids of outbox entries due at or before `now`, oldest due first.
    pub fn outbox_due(&self, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        let upper = keys::queue_upper(now.as_millisecond());
        let mut ids = Vec::new();
        let durable = self.inner.durable_outbox.load(Ordering::SeqCst);
        for kv in self.inner.tree.range(keys::QUEUE.to_vec()..=upper) {
            let (k, _) = kv?;
            if let Some(id) = keys::queue_id(&k).filter(|id| *id <= durable) {
                ids.push(id);
            }
            if ids.len() >= limit {
                break;
            }
        }
        Ok(ids)
    }

    /// Jobs due at or before `now`, earliest first.
    pub fn jobs_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        let upper = keys::job_upper(now.as_millisecond());
        let mut out = Vec::new();
        for kv in self.inner.tree.range(keys::SCHEDULE.to_vec()..=upper) {
            let (k, v) = kv?;
            out.push(decode(&v).map_err(|why| Error::Corrupt {
                key: format!("{k:?}"),
                why,
            })?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The earliest due time of any job.
    pub fn jobs_next_due(&self) -> Result<Option<Timestamp>> {
        Ok(self.jobs_due(Timestamp::MAX, 1)?.first().map(|j| j.due))
    }

    /// Every pending job, earliest first (status and tests).
    pub fn jobs(&self) -> Result<Vec<Job>> {
        self.scan(keys::SCHEDULE)
    }

    /// The earliest due time in the outbox queue, if any.
    pub fn outbox_next_due(&self) -> Result<Option<Timestamp>> {
        match self.inner.tree.scan_prefix(keys::QUEUE).next() {
            Some(kv) => {
                let (k, _) = kv?;
                let due = k
                    .get(keys::QUEUE.len()..keys::QUEUE.len() + 8)
                    .and_then(keys::be_u64)
                    .map(|u| (u ^ (1 << 63)) as i64);
                Ok(due.and_then(|ms| Timestamp::from_millisecond(ms).ok()))
            }
            None => Ok(None),
        }
    }

    pub fn read_raw(&self, r: &SpoolRef) -> Result<Vec<u8>> {
        spool::read(&self.inner.spool_dir, r)
    }

    pub fn size_on_disk(&self) -> u64 {
        let spool: u64 = std::fs::read_dir(&self.inner.spool_dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        self.inner.db.size_on_disk().unwrap_or(0) + spool
    }

    /// Runs `f` against a consistent read view outside the committer, for
    /// `explain` (nothing is written: every write method is refused).
    pub fn with_read_view<T>(&self, f: impl Fn(&dyn View) -> Result<T>) -> Result<T> {
        let r = self.inner.tree.transaction(|t| {
            let tx = SledTx { t, read_only: true };
            f(&tx).map_err(ConflictableTransactionError::Abort)
        });
        flatten(r)
    }
}

fn downcast<T: 'static>(b: AnyBox) -> Result<T> {
    b.downcast::<T>()
        .map(|b| *b)
        .map_err(|_| Error::Other("committer returned the wrong type".into()))
}

fn flatten<T>(r: std::result::Result<T, TransactionError<Error>>) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        // The raw mail and the signing secret live here: service user only.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

fn committer(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<Work>,
    mut spool: Spool,
    db_file: File,
) {
    let mut batch: Vec<CommitJob> = Vec::with_capacity(MAX_BATCH);
    // A quiet closure met while filling a batch waits for that batch to be
    // committed, synced and answered, and runs before the next one.
    let mut quiet: Option<(QuietFn, oneshot::Sender<AnyBox>)> = None;
    loop {
        if let Some((f, reply)) = quiet.take() {
            run_quiet(&inner, f, reply);
        }
        match rx.blocking_recv() {
            None => break,
            Some(Work::Quiet(f, reply)) => {
                run_quiet(&inner, f, reply);
                continue;
            }
            Some(Work::Commit(first)) => batch.push(first),
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Work::Commit(j)) => batch.push(j),
                Ok(Work::Quiet(f, reply)) => {
                    quiet = Some((f, reply));
                    break;
                }
                Err(_) => break,
            }
        }
        let mut results: Vec<(oneshot::Sender<Result<AnyBox>>, Result<AnyBox>)> =
            Vec::with_capacity(batch.len());
        let min_free = inner.min_free.load(Ordering::SeqCst);
        if let Some(why) = low_on_space(&inner.data_dir, min_free) {
            tracing::warn!("{why}");
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(Error::Other(why.clone())));
            }
            continue;
        }
        if injected_fault(&inner.data_dir) {
            for job in batch.drain(..) {
                let _ = job.reply.send(Err(Error::Other(format!(
                    "injected fault: {FAULT_FILE} exists (debug build)"
                ))));
            }
            continue;
        }
        inner.busy_since_ms.store(now_ms(), Ordering::SeqCst);
        let started = std::time::Instant::now();
        stall_while_asked(&inner.data_dir);
        let mut wrote = false;
        for job in batch.drain(..) {
            let raw_ref = match job.raw.as_deref() {
                Some(raw) => match spool.append(raw) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        results.push((job.reply, Err(e)));
                        continue;
                    }
                },
                None => None,
            };
            let r = inner.tree.transaction(|t| {
                let tx = SledTx {
                    t,
                    read_only: false,
                };
                (job.f)(&tx, raw_ref).map_err(|e| match e {
                    Error::Conflict => ConflictableTransactionError::Conflict,
                    e => ConflictableTransactionError::Abort(e),
                })
            });
            let r = flatten(r);
            wrote |= r.is_ok();
            results.push((job.reply, r));
        }
        let durable = if wrote {
            make_durable(&inner, &mut spool, &db_file)
        } else {
            Ok(())
        };
        // A storage error inside sled, or a failed sync, leaves the running
        // store holding writes that may not be on disk, and sled keeps the
        // error: refuse this batch, then stop, so the service manager
        // restarts from what is durable and the MTA's retries land there.
        let fatal = match &durable {
            Err(e) => Some(e.to_string()),
            Ok(()) => results.iter().find_map(|(_, r)| match r {
                Err(Error::Sled(e)) => Some(e.clone()),
                _ => None,
            }),
        };
        if durable.is_ok() {
            let last = last_outbox_id(&inner.tree);
            let before = inner.durable_outbox.swap(last, Ordering::SeqCst);
            crate::metrics::outbox_queued(last.saturating_sub(before));
        }
        inner.busy_since_ms.store(0, Ordering::SeqCst);
        let n = results.len();
        crate::metrics::commit_batch(n, started.elapsed());
        if let Ok(mut s) = inner.stats.lock() {
            s.batches += 1;
            s.jobs += n as u64;
            s.max_batch = s.max_batch.max(n);
        }
        for (reply, r) in results {
            let r = match (&durable, r) {
                (Ok(()), r) => r,
                // Nothing of this batch may be acknowledged: the MTA retries,
                // and a redelivery of what did land is a recognised duplicate.
                (Err(e), _) => Err(Error::Other(format!(
                    "making the batch durable failed: {e}"
                ))),
            };
            let _ = reply.send(r);
        }
        if let Some(why) = fatal {
            tracing::error!(
                error = %why,
                data_dir = %inner.data_dir.display(),
                "store write failed; exiting so a restart resumes from what is on disk"
            );
            // The sessions hold their 451s: give them a moment on the wire
            // before the process goes (the MTA would defer on a dropped
            // connection too, but a clear 451 says why).
            std::thread::sleep(std::time::Duration::from_millis(500));
            std::process::exit(75);
        }
    }
}

fn run_quiet(inner: &Inner, f: QuietFn, reply: oneshot::Sender<AnyBox>) {
    inner.busy_since_ms.store(now_ms(), Ordering::SeqCst);
    let q = Quiet {
        db: &inner.db,
        spool_dir: &inner.spool_dir,
        data_dir: &inner.data_dir,
        progress: Some(inner),
    };
    let out = f(&q);
    inner.busy_since_ms.store(0, Ordering::SeqCst);
    let _ = reply.send(out);
}

/// Brings a store written by an older postdesk to the current key layout.
/// Each step is one atomic sled batch that is safe to repeat, so a crash
/// part-way leaves a store the next start finishes. True when it wrote.
fn migrate_layout(tree: &sled::Tree) -> Result<bool> {
    let layout = tree
        .get(keys::LAYOUT)?
        .and_then(|v| keys::be_u64(&v))
        .unwrap_or(1);
    if layout >= keys::LAYOUT_CURRENT {
        return Ok(false);
    }
    let mut moved = 0u64;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in tree.scan_prefix(keys::STORED_ID_V1).take(10_000) {
            let (k, v) = kv?;
            let Some(id) = k.get(keys::STORED_ID_V1.len()..) else {
                continue;
            };
            let tk = [keys::THREAD_KEY, id].concat();
            let ticket = tree
                .get(&tk)?
                .and_then(|t| keys::split_thread_value(&t).0)
                .unwrap_or(0);
            batch.insert(tk, keys::thread_value(ticket, &v));
            batch.remove(k);
            n += 1;
        }
        if n == 0 {
            break;
        }
        tree.apply_batch(batch)?;
        moved += n;
    }
    tree.insert(keys::LAYOUT, keys::LAYOUT_CURRENT.to_be_bytes().to_vec())?;
    if moved > 0 {
        tracing::info!(
            moved,
            "store layout 1 → 2: stored ids folded into thread keys"
        );
    }
    Ok(true)
}

/// The highest outbox id allocated so far.
fn last_outbox_id(tree: &sled::Tree) -> u64 {
    tree.get(keys::NEXT_OUTBOX)
        .ok()
        .flatten()
        .and_then(|v| keys::be_u64(&v))
        .map(|n| n.saturating_sub(1))
        .unwrap_or(0)
}

/// `Some(why)` when the data dir's filesystem has less than `min_free`
/// bytes available.
fn low_on_space(data_dir: &Path, min_free: u64) -> Option<String> {
    if min_free == 0 {
        return None;
    }
    let path = std::ffi::CString::new(data_dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes only into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    (free < min_free).then(|| {
        format!(
            "no space left on device for {}: {free} bytes free, below limits.min_free_space ({min_free})",
            data_dir.display()
        )
    })
}

/// Debug builds only: while `data_dir/FAULT_FILE` exists, every commit
/// fails as a store fault would (tests of the 451 path: as root, a read-only
/// directory does not stop writes). Release builds never look.
pub const FAULT_FILE: &str = "fail-commits.debug";

fn injected_fault(data_dir: &Path) -> bool {
    cfg!(debug_assertions) && data_dir.join(FAULT_FILE).exists()
}

/// Debug builds only: while `data_dir/STALL_FILE` exists, the committer
/// hangs inside its batch, as it would in a sled deadlock (tests of the
/// wedge watchdog). Release builds never look.
pub const STALL_FILE: &str = "stall-commits.debug";

fn stall_while_asked(data_dir: &Path) {
    while cfg!(debug_assertions) && data_dir.join(STALL_FILE).exists() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// sled 0.34 can deadlock its log writer under heavy write load (upstream
/// spacejam/sled#1412: the segment accountant waits, holding its lock, on
/// a file truncation queued behind I/O threads that wait for that lock).
/// Nothing inside the process can free it, and the sessions would hold
/// their clients until the MTA times out. A batch is seconds at worst, so
/// one that is still running after `limits.commit_timeout` is wedged: exit
/// 75 for a restart. Nothing acknowledged is lost (every 250 follows a
/// sync), and the MTA retries what was in flight.
fn watchdog(inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let since = inner.busy_since_ms.load(Ordering::SeqCst);
        let limit = inner.commit_timeout_ms.load(Ordering::SeqCst);
        if since == 0 || limit == 0 {
            continue;
        }
        let busy = now_ms().saturating_sub(since);
        if busy > limit {
            tracing::error!(
                busy_ms = busy,
                limit_ms = limit,
                data_dir = %inner.data_dir.display(),
                "store wedged: a commit has not finished; exiting so a restart resumes from what is on disk"
            );
            std::process::exit(75);
        }
    }
}

fn make_durable(inner: &Inner, spool: &mut Spool, db_file: &File) -> Result<()> {
    spool.sync()?;
    inner.db.flush()?;
    db_file
        .sync_data()
        .map_err(io(&inner.data_dir.join("store/db")))?;
    Ok(())
}

/// A transaction in progress: the [`View`] the decision reads, plus writes.
#[derive(Clone, Copy)]
pub struct SledTx<'a> {
    t: &'a TransactionalTree,
    read_only: bool,
}

fn tx_err(e: sled::transaction::UnabortableTransactionError) -> Error {
    match e {
        sled::transaction::UnabortableTransactionError::Conflict => Error::Conflict,
        sled::transaction::UnabortableTransactionError::Storage(e) => e.into(),
    }
}

impl SledTx<'_> {
    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        match self.t.get(key).map_err(tx_err)? {
            Some(v) => decode(&v).map(Some).map_err(|why| Error::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                why,
            }),
            None => Ok(None),
        }
    }

    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        if self.read_only {
            return Err(Error::Other("write in a read-only view".into()));
        }
        self.t.insert(key, value).map_err(tx_err)?;
        Ok(())
    }

    fn del(&self, key: Vec<u8>) -> Result<()> {
        if self.read_only {
            return Err(Error::Other("write in a read-only view".into()));
        }
        self.t.remove(key).map_err(tx_err)?;
        Ok(())
    }

    fn counter(&self, key: &[u8], first: u64) -> Result<u64> {
        let cur = match self.t.get(key).map_err(tx_err)? {
            Some(v) => keys::be_u64(&v).ok_or_else(|| Error::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                why: "counter is not 8 bytes".into(),
            })?,
            None => first,
        };
        Ok(cur)
    }

    /// Takes the next ticket number.
    pub fn take_ticket_number(&self) -> Result<u64> {
        let n = self.counter(keys::NEXT_TICKET, 1)?;
        self.put(keys::NEXT_TICKET.to_vec(), (n + 1).to_be_bytes().to_vec())?;
        Ok(n)
    }

    pub fn put_ticket(&self, t: &Ticket) -> Result<()> {
        super::track_load(self, t)?;
        self.put(keys::ticket(t.number), encode(t))
    }

    pub fn put_message(&self, ticket: u64, seq: u32, m: &MessageRecord) -> Result<()> {
        self.put(keys::message(ticket, seq), encode(m))
    }

    pub fn put_apart(&self, m: &MessageRecord) -> Result<u64> {
        let n = self.counter(keys::NEXT_APART, 1)?;
        self.put(keys::NEXT_APART.to_vec(), (n + 1).to_be_bytes().to_vec())?;
        self.put(keys::apart(n), encode(m))?;
        Ok(n)
    }

    pub fn index_thread_key(&self, message_id: &str, ticket: u64) -> Result<()> {
        let key = keys::thread_key(message_id);
        let old = self.t.get(&key).map_err(tx_err)?;
        let stored = old
            .as_deref()
            .map(|v| keys::split_thread_value(v).1)
            .unwrap_or(&[]);
        self.put(key, keys::thread_value(ticket, stored))
    }

    pub fn index_conversation(&self, key: &str, ticket: u64) -> Result<()> {
        self.put(keys::conversation(key), ticket.to_be_bytes().to_vec())
    }

    /// Beside the thread key of the same Message-ID: one leaf holds what
    /// duplicate detection and the reverse-reference rule both look up.
    pub fn put_stored_ids(&self, message_id: &str, ids: &StoredIds) -> Result<()> {
        let key = keys::thread_key(message_id);
        let old = self.t.get(&key).map_err(tx_err)?;
        let ticket = old
            .as_deref()
            .and_then(|v| keys::split_thread_value(v).0)
            .unwrap_or(0);
        self.put(key, keys::thread_value(ticket, &encode(ids)))
    }

    pub fn put_ack_times(&self, address: &str, times: &[Timestamp]) -> Result<()> {
        self.put(keys::acks(address), encode(&times))
    }

    pub fn learn_customer(&self, address: &str, customer: &str) -> Result<()> {
        self.put(keys::learned(address), encode(&customer))
    }

    /// Adds an outbox entry (its `id` is assigned here) and queues it.
    pub fn add_outbox(&self, mut e: OutboxEntry) -> Result<u64> {
        let id = self.counter(keys::NEXT_OUTBOX, 1)?;
        self.put(keys::NEXT_OUTBOX.to_vec(), (id + 1).to_be_bytes().to_vec())?;
        e.id = id;
        self.put(keys::outbox(id), encode(&e))?;
        self.bump(&keys::outbox_count(e.state.as_str()), 1)?;
        if e.state == OutboxState::Pending {
            self.put(
                keys::queue(e.next_attempt_at.as_millisecond(), id),
                Vec::new(),
            )?;
        }
        Ok(id)
    }

    pub fn outbox(&self, id: u64) -> Result<Option<OutboxEntry>> {
        self.get(&keys::outbox(id))
    }

    /// Rewrites an entry, moving its queue key from `old_due` to its new state.
    pub fn update_outbox(&self, old: &OutboxEntry, new: &OutboxEntry) -> Result<()> {
        if old.state == OutboxState::Pending {
            self.del(keys::queue(old.next_attempt_at.as_millisecond(), old.id))?;
        }
        if new.state == OutboxState::Pending {
            self.put(
                keys::queue(new.next_attempt_at.as_millisecond(), new.id),
                Vec::new(),
            )?;
        }
        if old.state != new.state {
            self.bump(&keys::outbox_count(old.state.as_str()), -1)?;
            self.bump(&keys::outbox_count(new.state.as_str()), 1)?;
        }
        self.put(keys::outbox(new.id), encode(new))
    }

    /// Adds `delta` to a `n/` counter, never below zero.
    fn bump(&self, key: &[u8], delta: i64) -> Result<()> {
        let cur = self.counter(key, 0)?;
        let n = if delta < 0 {
            cur.saturating_sub(delta.unsigned_abs())
        } else {
            cur.saturating_add(delta.unsigned_abs())
        };
        self.put(key.to_vec(), n.to_be_bytes().to_vec())
    }
}

impl View for SledTx<'_> {
    fn ticket(&self, number: u64) -> Result<Option<Ticket>> {
        self.get(&keys::ticket(number))
    }
    fn ticket_by_key(&self, message_id: &str) -> Result<Option<u64>> {
        Ok(self
            .t
            .get(keys::thread_key(message_id))
            .map_err(tx_err)?
            .and_then(|v| keys::split_thread_value(&v).0))
    }
    fn ticket_by_conversation(&self, key: &str) -> Result<Option<u64>> {
        Ok(self
            .t
            .get(keys::conversation(key))
            .map_err(tx_err)?
            .and_then(|v| keys::be_u64(&v)))
    }
    fn stored_ids(&self, message_id: &str) -> Result<Option<StoredIds>> {
        let key = keys::thread_key(message_id);
        let Some(v) = self.t.get(&key).map_err(tx_err)? else {
            return Ok(None);
        };
        let stored = keys::split_thread_value(&v).1;
        if stored.is_empty() {
            return Ok(None);
        }
        decode(stored).map(Some).map_err(|why| Error::Corrupt {
            key: String::from_utf8_lossy(&key).into_owned(),
            why,
        })
    }
    fn learned_customer(&self, address: &str) -> Result<Option<String>> {
        self.get(&keys::learned(address))
    }
    fn ack_times(&self, address: &str) -> Result<Vec<Timestamp>> {
        Ok(self.get(&keys::acks(address))?.unwrap_or_default())
    }
    fn next_ticket_number(&self) -> Result<u64> {
        self.counter(keys::NEXT_TICKET, 1)
    }
    fn agent_load(&self, agent: &str) -> Result<super::AgentLoad> {
        Ok(self
            .get(&super::policy_keys::load(agent))?
            .unwrap_or_default())
    }
    fn agent_away(&self, agent: &str) -> Result<Option<super::Away>> {
        self.get(&super::policy_keys::away(agent))
    }
    fn dist_state(&self, category: &str) -> Result<super::DistState> {
        Ok(self
            .get(&super::policy_keys::dist(category))?
            .unwrap_or_default())
    }
    fn similar_index(&self, by: super::SimilarBy, key: &str) -> Result<Vec<u64>> {
        Ok(self
            .get(&super::policy_keys::similar(by, key))?
            .unwrap_or_default())
    }
    fn message(&self, ticket: u64, seq: u32) -> Result<Option<MessageRecord>> {
        self.get(&keys::message(ticket, seq))
    }
}

impl Writes for SledTx<'_> {
    fn take_ticket_number(&self) -> Result<u64> {
        SledTx::take_ticket_number(self)
    }
    fn put_ticket(&self, t: &Ticket) -> Result<()> {
        SledTx::put_ticket(self, t)
    }
    fn put_message(&self, ticket: u64, seq: u32, m: &MessageRecord) -> Result<()> {
        SledTx::put_message(self, ticket, seq, m)
    }
    fn put_apart(&self, m: &MessageRecord) -> Result<u64> {
        SledTx::put_apart(self, m)
    }
    fn index_thread_key(&self, message_id: &str, ticket: u64) -> Result<()> {
        SledTx::index_thread_key(self, message_id, ticket)
    }
    fn index_conversation(&self, key: &str, ticket: u64) -> Result<()> {
        SledTx::index_conversation(self, key, ticket)
    }
    fn put_stored_ids(&self, message_id: &str, ids: &StoredIds) -> Result<()> {
        SledTx::put_stored_ids(self, message_id, ids)
    }
    fn put_ack_times(&self, address: &str, times: &[Timestamp]) -> Result<()> {
        SledTx::put_ack_times(self, address, times)
    }
    fn learn_customer(&self, address: &str, customer: &str) -> Result<()> {
        SledTx::learn_customer(self, address, customer)
    }
    fn add_outbox(&self, e: OutboxEntry) -> Result<u64> {
        SledTx::add_outbox(self, e)
    }
    fn add_job(&self, due: Timestamp, kind: JobKind, now: Timestamp) -> Result<ScheduledRef> {
        let id = self.counter(keys::NEXT_JOB, 1)?;
        self.put(keys::NEXT_JOB.to_vec(), (id + 1).to_be_bytes().to_vec())?;
        let job = Job {
            id,
            due,
            kind,
            created_at: now,
        };
        self.put(keys::job(due.as_millisecond(), id), encode(&job))?;
        Ok(ScheduledRef { id, due })
    }
    fn take_job(&self, r: ScheduledRef) -> Result<Option<Job>> {
        let key = keys::job(r.due.as_millisecond(), r.id);
        let job: Option<Job> = self.get(&key)?;
        if job.is_some() {
            self.del(key)?;
        }
        Ok(job)
    }
    fn put_agent_load(&self, agent: &str, load: &super::AgentLoad) -> Result<()> {
        // A zero counter is the same as none: keep the tree free of them.
        if load.is_zero() {
            self.del(super::policy_keys::load(agent))
        } else {
            self.put(super::policy_keys::load(agent), encode(load))
        }
    }
    fn put_agent_away(&self, agent: &str, away: Option<&super::Away>) -> Result<()> {
        match away {
            Some(a) => self.put(super::policy_keys::away(agent), encode(a)),
            None => self.del(super::policy_keys::away(agent)),
        }
    }
    fn put_dist_state(&self, category: &str, state: &super::DistState) -> Result<()> {
        if *state == super::DistState::default() {
            self.del(super::policy_keys::dist(category))
        } else {
            self.put(super::policy_keys::dist(category), encode(state))
        }
    }
    fn put_similar_index(&self, by: super::SimilarBy, key: &str, tickets: &[u64]) -> Result<()> {
        if tickets.is_empty() {
            self.del(super::policy_keys::similar(by, key))
        } else {
            self.put(super::policy_keys::similar(by, key), encode(&tickets))
        }
    }
    fn delete_message(&self, ticket: u64, seq: u32) -> Result<()> {
        self.del(keys::message(ticket, seq))
    }
    fn ticket_count(&self, status: super::Status) -> Result<u64> {
        self.counter(&keys::ticket_count(status.as_str()), 0)
    }
    fn put_ticket_count(&self, status: super::Status, n: u64) -> Result<()> {
        self.put(
            keys::ticket_count(status.as_str()),
            n.to_be_bytes().to_vec(),
        )
    }
}

/// Desk-policy reads outside transactions (issue #8): the load counters as
/// stored, for the rebuild at start and for tests that compare them with a
/// full scan.
impl SledStore {
    /// Every stored load counter, by agent.
    pub fn agent_loads(&self) -> Result<std::collections::BTreeMap<String, super::AgentLoad>> {
        let mut out = std::collections::BTreeMap::new();
        for kv in self.inner.tree.scan_prefix(super::policy_keys::LOAD) {
            let (k, v) = kv?;
            let agent = String::from_utf8_lossy(&k[super::policy_keys::LOAD.len()..]).into_owned();
            let load: super::AgentLoad = decode(&v).map_err(|why| Error::Corrupt {
                key: String::from_utf8_lossy(&k).into_owned(),
                why,
            })?;
            out.insert(agent, load);
        }
        Ok(out)
    }

    /// Whether the load counters were built for this store yet.
    pub fn loads_built(&self) -> Result<bool> {
        Ok(self
            .inner
            .tree
            .contains_key(super::policy_keys::LOADS_BUILT)?)
    }
}

impl SledTx<'_> {
    /// Marks the load counters as built (see `super::policy_keys::LOADS_BUILT`).
    pub fn mark_loads_built(&self) -> Result<()> {
        self.put(super::policy_keys::LOADS_BUILT.to_vec(), vec![1])
    }

    /// Marks the similar-ticket index as built.
    pub fn mark_similar_built(&self) -> Result<()> {
        self.put(super::policy_keys::SIMILAR_BUILT.to_vec(), vec![1])
    }
}

/// The similar-ticket index outside transactions, for its rebuild.
impl SledStore {
    /// Whether the similar-ticket index was built for this store yet.
    pub fn similar_built(&self) -> Result<bool> {
        Ok(self
            .inner
            .tree
            .contains_key(super::policy_keys::SIMILAR_BUILT)?)
    }
}

/// The operator's view (issue #10): `postdesk status` and `postdesk outbox
/// …`. Each read maps to a query a SQL backend answers from its rows
/// (`count(*) … group by state`, `… order by due limit n`); here the counts
/// come from the `n/` counters and the pending list from the `q/` queue.
impl SledStore {
    /// Tickets per status, from the counters ([`super::track_load`] keeps
    /// them); statuses with none are left out.
    pub fn ticket_counts(&self) -> Result<std::collections::BTreeMap<super::Status, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for s in super::Status::ALL {
            let n = self.count(&keys::ticket_count(s.as_str()))?;
            if n > 0 {
                out.insert(s, n);
            }
        }
        Ok(out)
    }

    /// Outbox entries per state, from the counters kept by `add_outbox`
    /// and `update_outbox`.
    pub fn outbox_counts(&self) -> Result<std::collections::BTreeMap<OutboxState, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for s in OutboxState::ALL {
            out.insert(s, self.count(&keys::outbox_count(s.as_str()))?);
        }
        Ok(out)
    }

    fn count(&self, key: &[u8]) -> Result<u64> {
        match self.inner.tree.get(key)? {
            Some(v) => keys::be_u64(&v).ok_or_else(|| Error::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                why: "counter is not 8 bytes".into(),
            }),
            None => Ok(0),
        }
    }

    /// Pending entries in due order, at most `limit`: read along the `q/`
    /// queue, one point read each, never a walk of every entry.
    pub fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(keys::QUEUE) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv?;
            if let Some(e) = keys::queue_id(&k).map(|id| self.outbox(id)).transpose()? {
                out.extend(e);
            }
        }
        Ok(out)
    }

    /// The pending entry created first. Ids grow with creation, so it is
    /// the smallest id in the queue: a walk of the queue's keys (the
    /// pending entries only, values not read), then one point read.
    pub fn outbox_oldest_pending(&self) -> Result<Option<OutboxEntry>> {
        let mut oldest: Option<u64> = None;
        for k in self.inner.tree.scan_prefix(keys::QUEUE).keys() {
            if let Some(id) = keys::queue_id(&k?) {
                oldest = Some(oldest.map_or(id, |o| o.min(id)));
            }
        }
        match oldest {
            Some(id) => self.outbox(id),
            None => Ok(None),
        }
    }

    /// Entries in any of `states`, oldest first, at most `limit` (for
    /// pending ones [`SledStore::outbox_pending`] reads the queue instead). The
    /// sled layout has no index by state, so this walks every `o/` record:
    /// fine for an operator's command, not for a hot path.
    pub fn outbox_in_states(
        &self,
        states: &[OutboxState],
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(keys::OUTBOX) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let e: OutboxEntry = decode(&v).map_err(|why| Error::Corrupt {
                key: format!("{k:?}"),
                why,
            })?;
            if states.contains(&e.state) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Whether the `n/` counters were built for this store yet.
    pub fn counts_built(&self) -> Result<bool> {
        Ok(self.inner.tree.contains_key(keys::COUNTS_BUILT)?)
    }

    /// Builds the `n/` counters from the tickets and the outbox when this
    /// store has none yet (written before them). Streamed, one record at a
    /// time; call before anything else writes, like the load counters.
    pub fn ensure_counts(&self) -> Result<bool> {
        if self.counts_built()? {
            return Ok(false);
        }
        let mut tickets: std::collections::BTreeMap<super::Status, u64> = Default::default();
        self.for_each_ticket(|t| *tickets.entry(t.status).or_default() += 1)?;
        let mut outbox: std::collections::BTreeMap<OutboxState, u64> = Default::default();
        for kv in self.inner.tree.scan_prefix(keys::OUTBOX) {
            let (k, v) = kv?;
            let e: OutboxEntry = decode(&v).map_err(|why| Error::Corrupt {
                key: format!("{k:?}"),
                why,
            })?;
            *outbox.entry(e.state).or_default() += 1;
        }
        self.commit_blocking(None, move |tx, _| {
            for s in super::Status::ALL {
                let n = tickets.get(&s).copied().unwrap_or(0);
                tx.put(keys::ticket_count(s.as_str()), n.to_be_bytes().to_vec())?;
            }
            for s in OutboxState::ALL {
                let n = outbox.get(&s).copied().unwrap_or(0);
                tx.put(keys::outbox_count(s.as_str()), n.to_be_bytes().to_vec())?;
            }
            tx.put(keys::COUNTS_BUILT.to_vec(), vec![1])
        })?;
        Ok(true)
    }
}

// ---- erasure (`forget`, `policy.retention`: src/erase.rs, src/retention.rs):
// the scans run outside transactions, the writes inside, by key ----

impl SledStore {
    /// Every message record of every ticket as (ticket, seq, record), one
    /// at a time in key order.
    pub fn for_each_message(
        &self,
        mut f: impl FnMut(u64, u32, MessageRecord) -> Result<()>,
    ) -> Result<()> {
        for kv in self.inner.tree.scan_prefix(keys::MESSAGE) {
            let (k, v) = kv?;
            let tail = k.get(keys::MESSAGE.len()..).unwrap_or(&[]);
            let (Some(t), Some(seq)) = (
                tail.get(..8).and_then(keys::be_u64),
                tail.get(8..12)
                    .and_then(|b| b.try_into().ok())
                    .map(u32::from_be_bytes),
            ) else {
                continue;
            };
            let m = decode(&v).map_err(|why| Error::Corrupt {
                key: format!("{k:?}"),
                why,
            })?;
            f(t, seq, m)?;
        }
        Ok(())
    }

    /// One ticket's messages with their sequence numbers.
    pub fn message_entries(&self, ticket: u64) -> Result<Vec<(u32, MessageRecord)>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(keys::messages_of(ticket)) {
            let (k, v) = kv?;
            let seq = k
                .get(k.len().saturating_sub(4)..)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .unwrap_or(0);
            out.push((
                seq,
                decode(&v).map_err(|why| Error::Corrupt {
                    key: format!("{k:?}"),
                    why,
                })?,
            ));
        }
        Ok(out)
    }

    /// Messages kept apart, with their numbers.
    pub fn apart_entries(&self) -> Result<Vec<(u64, MessageRecord)>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(keys::APART) {
            let (k, v) = kv?;
            let n = k
                .get(keys::APART.len()..)
                .and_then(keys::be_u64)
                .unwrap_or(0);
            out.push((
                n,
                decode(&v).map_err(|why| Error::Corrupt {
                    key: format!("{k:?}"),
                    why,
                })?,
            ));
        }
        Ok(out)
    }

    /// Thread keys (Message-IDs) `keep` accepts, as stored (lossy UTF-8).
    pub fn thread_keys_where(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for kv in self.inner.tree.scan_prefix(keys::THREAD_KEY) {
            let (k, _) = kv?;
            let id = String::from_utf8_lossy(k.get(keys::THREAD_KEY.len()..).unwrap_or(&[]));
            if keep(&id) {
                out.push(id.into_owned());
            }
        }
        Ok(out)
    }
}

impl SledTx<'_> {
    /// Rewrites a message kept apart in place (erasure).
    pub fn put_apart_at(&self, n: u64, m: &MessageRecord) -> Result<()> {
        self.put(keys::apart(n), encode(m))
    }

    pub fn apart_at(&self, n: u64) -> Result<Option<MessageRecord>> {
        self.get(&keys::apart(n))
    }

    /// Moves a thread key to another id, with its ticket and stored ids
    /// (`stored` rewrites the stored ids; `new_id` `None` removes the key).
    pub fn move_thread_key(
        &self,
        old_id: &str,
        new_id: Option<&str>,
        stored: impl Fn(StoredIds) -> StoredIds,
    ) -> Result<()> {
        let key = keys::thread_key(old_id);
        let Some(v) = self.t.get(&key).map_err(tx_err)? else {
            return Ok(());
        };
        self.del(key)?;
        let Some(new_id) = new_id else {
            return Ok(());
        };
        let (ticket, ids) = keys::split_thread_value(&v);
        let ids = if ids.is_empty() {
            Vec::new()
        } else {
            match decode::<StoredIds>(ids) {
                Ok(s) => encode(&stored(s)),
                Err(_) => ids.to_vec(),
            }
        };
        self.put(
            keys::thread_key(new_id),
            keys::thread_value(ticket.unwrap_or(0), &ids),
        )
    }

    /// Removes what is keyed by an address: ack times, learned customer,
    /// similar-ticket entry (exact key and lower-cased).
    pub fn forget_address_keys(&self, address: &str) -> Result<()> {
        let lower = address.trim().to_ascii_lowercase();
        for a in [address, lower.as_str()] {
            self.del(keys::acks(a))?;
            self.del(keys::learned(a))?;
        }
        self.del(super::policy_keys::similar(
            super::SimilarBy::Contact,
            &lower,
        ))
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn ids(hash: &str) -> StoredIds {
        StoredIds {
            variants: vec![(hash.into(), format!("{hash}@internal"))],
        }
    }

    #[test]
    fn a_layout_1_store_is_migrated_on_open_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        {
            // What postdesk 0.1.0 wrote: stored ids under i/, bare ticket
            // numbers under k/, no layout mark.
            let db = sled::open(dir.path().join("store")).unwrap();
            let t = db.open_tree("postdesk").unwrap();
            for n in 0..25_000u64 {
                let id = format!("m{n}@example.net");
                t.insert(
                    [keys::STORED_ID_V1, id.as_bytes()].concat(),
                    encode(&ids(&n.to_string())),
                )
                .unwrap();
                t.insert(keys::thread_key(&id), (n % 7 + 1).to_be_bytes().to_vec())
                    .unwrap();
            }
            t.insert(
                keys::thread_key("only-a-reference@x"),
                4u64.to_be_bytes().to_vec(),
            )
            .unwrap();
            // Kept apart in 0.1.0: stored ids and no thread key.
            t.insert([keys::STORED_ID_V1, b"apart@x"].concat(), encode(&ids("a")))
                .unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        let tree = &store.inner.tree;
        assert_eq!(
            tree.scan_prefix(keys::STORED_ID_V1).count(),
            0,
            "i/ left over"
        );
        assert_eq!(
            tree.get(keys::LAYOUT).unwrap().as_deref(),
            Some(&keys::LAYOUT_CURRENT.to_be_bytes()[..])
        );
        store
            .with_read_view(|v| {
                for n in [0u64, 9_999, 24_999] {
                    let id = format!("m{n}@example.net");
                    assert_eq!(v.stored_ids(&id)?, Some(ids(&n.to_string())), "{id}");
                    assert_eq!(v.ticket_by_key(&id)?, Some(n % 7 + 1), "{id}");
                }
                assert_eq!(v.ticket_by_key("only-a-reference@x")?, Some(4));
                assert_eq!(v.stored_ids("only-a-reference@x")?, None);
                assert_eq!(v.stored_ids("apart@x")?, Some(ids("a")));
                assert_eq!(v.ticket_by_key("apart@x")?, None);
                assert_eq!(v.stored_ids("never@x")?, None);
                Ok(())
            })
            .unwrap();
        // Written in either order, both halves of a k/ value survive.
        store
            .commit_blocking(None, |tx, _| {
                tx.put_stored_ids("new@x", &ids("n"))?;
                tx.index_thread_key("new@x", 12)?;
                tx.index_thread_key("other@x", 13)?;
                tx.put_stored_ids("other@x", &ids("o"))
            })
            .unwrap();
        store
            .with_read_view(|v| {
                assert_eq!(v.stored_ids("new@x")?, Some(ids("n")));
                assert_eq!(v.ticket_by_key("new@x")?, Some(12));
                assert_eq!(v.stored_ids("other@x")?, Some(ids("o")));
                assert_eq!(v.ticket_by_key("other@x")?, Some(13));
                Ok(())
            })
            .unwrap();
        // Done once: the next start finds nothing to do.
        assert!(!migrate_layout(&store.inner.tree).unwrap());
    }
}

#[cfg(test)]
mod count_tests {
    use super::*;
    use crate::store::Status;
    use std::collections::BTreeMap;

    fn scanned(store: &SledStore) -> (BTreeMap<Status, u64>, BTreeMap<OutboxState, u64>) {
        let mut t = BTreeMap::new();
        store
            .for_each_ticket(|x| *t.entry(x.status).or_insert(0) += 1)
            .unwrap();
        let mut o: BTreeMap<OutboxState, u64> = OutboxState::ALL.iter().map(|s| (*s, 0)).collect();
        for e in store.outbox_all().unwrap() {
            *o.entry(e.state).or_insert(0) += 1;
        }
        (t, o)
    }

    #[test]
    fn counters_follow_every_write_and_an_older_store_gets_them_built() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.ensure_counts().unwrap(), "a new store is marked");
        let cfg = crate::config::Config::default();
        let now = Timestamp::UNIX_EPOCH;
        let plan = [
            (Status::Unassigned, OutboxState::Pending),
            (Status::Active, OutboxState::Failed),
            (Status::Done, OutboxState::Sent),
            (Status::Deleted, OutboxState::Pending),
            (Status::Done, OutboxState::Pending),
        ];
        for (status, state) in plan {
            let t0 = crate::render::desk::view_less_ticket(&cfg, now);
            let e0 = crate::render::entry("ack", &t0, &cfg, now);
            store
                .commit_blocking(None, move |tx, _| {
                    let mut t = t0.clone();
                    t.number = tx.take_ticket_number()?;
                    t.status = Status::Unassigned;
                    tx.put_ticket(&t)?;
                    t.status = status;
                    tx.put_ticket(&t)?;
                    let id = tx.add_outbox(e0.clone())?;
                    let cur = tx.outbox(id)?.ok_or(Error::Closed)?;
                    let mut new = cur.clone();
                    new.state = state;
                    tx.update_outbox(&cur, &new)
                })
                .unwrap();
        }
        // One pending entry dropped through the operator's path.
        let pending = store.outbox_pending(10).unwrap();
        assert_eq!(pending.len(), 3);
        let id = pending[0].id;
        crate::store::Store::Sled(store.clone())
            .outbox_change(id, move |cur| {
                crate::control::outbox::dropped(cur, "root", "test", now)
            })
            .unwrap()
            .unwrap()
            .unwrap();
        let (tickets, outbox) = scanned(&store);
        assert_eq!(tickets[&Status::Done], 2);
        assert_eq!(outbox[&OutboxState::Dropped], 1);
        assert_eq!(store.ticket_counts().unwrap(), tickets);
        assert_eq!(store.outbox_counts().unwrap(), outbox);
        assert_eq!(store.outbox_pending(10).unwrap().len(), 2);
        assert_eq!(
            store.outbox_oldest_pending().unwrap().map(|e| e.id),
            store.outbox_pending(10).unwrap().iter().map(|e| e.id).min()
        );
        assert_eq!(
            store
                .outbox_in_states(&[OutboxState::Failed], 10)
                .unwrap()
                .len(),
            1
        );

        // A store written before the counters: none of them, no mark.
        let keys: Vec<_> = store
            .inner
            .tree
            .scan_prefix(keys::COUNT)
            .keys()
            .map(|k| k.unwrap())
            .collect();
        for k in keys {
            store.inner.tree.remove(k).unwrap();
        }
        store.inner.tree.remove(keys::COUNTS_BUILT).unwrap();
        assert!(store.ticket_counts().unwrap().is_empty());
        assert!(store.ensure_counts().unwrap());
        assert_eq!(store.ticket_counts().unwrap(), tickets);
        assert_eq!(store.outbox_counts().unwrap(), outbox);
        assert!(!store.ensure_counts().unwrap(), "built once");
        store.close();
    }
}

#[path = "sled_records.rs"]
mod records_impl;
