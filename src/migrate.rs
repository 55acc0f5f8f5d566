//! `postdesk migrate`: every record of one store into another, empty one
//! (sled → PostgreSQL and back, or sled → sled), then a check that the
//! destination holds what the source held.
//!
//! The records come from the source's `for_each_record` on a thread of
//! their own, through a bounded channel, so the source is read while the
//! destination writes and neither ever holds the whole store. Each batch
//! first has its raw messages copied (several commits in flight at once:
//! the destination's committer folds them into one durable write), then
//! its `SpoolRef`s rewritten to the destination's and the batch put in
//! one transaction. A crash part-way leaves a destination that is not
//! empty: the next run refuses it, and the operator starts again from an
//! empty one (the source's records are never written).
//!
//! The check streams both stores again: counts per kind, and the SHA-256
//! of every message's raw bytes read back from the destination against
//! the bytes read from the source.

use crate::config::{PostgresConfig, StoreBackend, StoreConfig};
use crate::store::records::{Counters, Record};
use crate::store::{self, MessageRecord, SpoolRef, Store};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One side of a migration, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A sled data directory (the `data_dir` of a sled desk).
    Sled(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl std::str::FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Endpoint, Error> {
        if let Some(dir) = s.strip_prefix("sled:") {
            if dir.is_empty() {
                return Err(Error::Endpoint(s.into()));
            }
            return Ok(Endpoint::Sled(PathBuf::from(dir)));
        }
        if let Some(url) = s.strip_prefix("postgres:") {
            // `postgres:postgres://…` as documented, and the bare URL too.
            let url = if url.starts_with("//") {
                s.to_string()
            } else {
                url.to_string()
            };
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                return Ok(Endpoint::Postgres(url));
            }
        }
        if s.starts_with("postgresql://") {
            return Ok(Endpoint::Postgres(s.into()));
        }
        Err(Error::Endpoint(s.into()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Sled(d) => write!(f, "sled:{}", d.display()),
            // The password stays out of messages and logs.
            Endpoint::Postgres(u) => write!(f, "postgres:{}", redact(u)),
        }
    }
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(p) => p,
        None => return url.into(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.into(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?}: give sled:DIR or postgres:URL (postgres://user@host/db)")]
    Endpoint(String),
    #[error("{0} is in use by a running postdesk: stop postdesk first (systemctl stop postdesk)")]
    InUse(String),
    #[error("{0} holds no postdesk store (no {1})")]
    NoStore(String, String),
    #[error("source and destination are the same store ({0})")]
    Same(String),
    #[error("the destination {0} is not empty: it holds {1}; migrate into an empty store")]
    NotEmpty(String, String),
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: store::Error,
    },
}

fn ctx(what: impl Into<String>) -> impl FnOnce(store::Error) -> Error {
    let what = what.into();
    move |source| Error::Store { what, source }
}

/// Opens one side. The source must exist; a sled destination is created,
/// a PostgreSQL one gets its schema. `pool` bounds the connections to a
/// database (one per raw message in flight, and the record stream).
pub fn open(e: &Endpoint, source: bool, pool: u32) -> Result<Store, Error> {
    match e {
        Endpoint::Sled(dir) => {
            if source && !dir.join("store").is_dir() {
                return Err(Error::NoStore(
                    e.to_string(),
                    dir.join("store").display().to_string(),
                ));
            }
            Store::open(dir).map_err(|err| match err {
                store::Error::Locked(_) => Error::InUse(e.to_string()),
                err => Error::Store {
                    what: format!("opening {e}"),
                    source: err,
                },
            })
        }
        Endpoint::Postgres(url) => {
            let cfg = StoreConfig {
                backend: StoreBackend::Postgres,
                postgres: PostgresConfig {
                    url: url.clone(),
                    pool_size: pool,
                },
            };
            // The backend keeps only its debug fault-injection files in a
            // data dir; a migration has none of its own.
            let store = Store::open_backend(&cfg, &std::env::temp_dir())
                .map_err(ctx(format!("opening {e}")))?;
            // No lock says a node is running on a database: its heartbeat
            // row does (a node killed without a stop counts until its
            // lease runs out).
            if let Store::Pg(p) = &store {
                let others: Vec<String> = p
                    .live_nodes()
                    .map_err(ctx(format!("reading the nodes of {e}")))?
                    .into_iter()
                    .filter(|n| n != p.node())
                    .collect();
                if !others.is_empty() {
                    store.close();
                    return Err(Error::InUse(format!("{e} (nodes {})", others.join(", "))));
                }
            }
            Ok(store)
        }
    }
}

/// Refuses a migration of a store into itself (sled would let one
/// process open a directory twice).
pub fn check_distinct(from: &Endpoint, to: &Endpoint) -> Result<(), Error> {
    let same = match (from, to) {
        (Endpoint::Sled(a), Endpoint::Sled(b)) => {
            let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            canon(a) == canon(b)
        }
        (Endpoint::Postgres(a), Endpoint::Postgres(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::Same(from.to_string()));
    }
    Ok(())
}

/// Where the migration tells how far it is (a progress bar, or lines).
pub trait Progress {
    /// A phase begins: `total` records to go (0: unknown).
    fn phase(&mut self, name: &str, total: u64);
    /// `n` more records of the phase are done.
    fn advance(&mut self, n: u64);
    fn finish(&mut self);
}

/// No progress at all (tests, library callers).
pub struct Silent;

impl Progress for Silent {
    fn phase(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Records per destination transaction.
    pub batch: usize,
    /// Raw-message commits in flight at once.
    pub parallel: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            batch: 500,
            parallel: 32,
        }
    }
}

/// What a migration did and what its check found.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Records per kind, counted over the source before the copy.
    pub source: BTreeMap<&'static str, u64>,
    /// Records per kind that went through the copy.
    pub copied: BTreeMap<&'static str, u64>,
    /// Records per kind, counted over the destination after it.
    pub destination: BTreeMap<&'static str, u64>,
    /// Raw messages written to the destination, and their bytes.
    pub raw_copied: u64,
    pub raw_bytes: u64,
    /// Raw messages (and outbox bodies) whose checksum was compared.
    pub checked: u64,
    pub copy_time: Duration,
    pub check_time: Duration,
    /// What does not match, in the order found.
    pub mismatches: Vec<String>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Messages (filed and apart) copied per second.
    pub fn messages_per_second(&self) -> f64 {
        let n = self.copied.get("messages").copied().unwrap_or(0)
            + self.copied.get("apart").copied().unwrap_or(0);
        n as f64 / self.copy_time.as_secs_f64().max(1e-9)
    }

    /// The counts as a table, one kind per line.
    pub fn table(&self) -> String {
        let mut kinds: Vec<&str> = self
            .source
            .keys()
            .chain(self.destination.keys())
            .copied()
            .collect();
        kinds.sort_by_key(|k| kind_order(k));
        kinds.dedup();
        let mut out = format!(
            "{:<14} {:>10} {:>10} {:>12}\n",
            "kind", "source", "copied", "destination"
        );
        for k in kinds {
            let n = |m: &BTreeMap<&str, u64>| m.get(k).copied().unwrap_or(0);
            let mark =
                if n(&self.source) == n(&self.destination) && n(&self.source) == n(&self.copied) {
                    ""
                } else {
                    "  ≠"
                };
            out.push_str(&format!(
                "{k:<14} {:>10} {:>10} {:>12}{mark}\n",
                n(&self.source),
                n(&self.copied),
                n(&self.destination)
            ));
        }
        out
    }
}

/// The order kinds are streamed in, for the table.
fn kind_order(k: &str) -> usize {
    const ORDER: [&str; 13] = [
        "counters",
        "secret",
        "tickets",
        "messages",
        "apart",
        "thread_keys",
        "conversations",
        "acks",
        "learned",
        "outbox",
        "jobs",
        "away",
        "dist",
    ];
    ORDER.iter().position(|o| *o == k).unwrap_or(ORDER.len())
}

/// A `SpoolRef` as a map key (it is only `Eq`).
type RawKey = (u32, u64, u64, u64);

fn raw_key(r: &SpoolRef) -> RawKey {
    (r.file, r.offset, r.len, r.check)
}

/// Where a message's raw bytes sit in the record stream, for the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum RawOf {
    Message(u64, u32),
    Apart(u64),
    Outbox(u64),
}

impl std::fmt::Display for RawOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawOf::Message(t, s) => write!(f, "message {s} of ticket {t}"),
            RawOf::Apart(n) => write!(f, "message {n} kept apart"),
            RawOf::Outbox(n) => write!(f, "the body of outbox entry {n}"),
        }
    }
}

type Sha = [u8; 32];

fn sha(b: &[u8]) -> Sha {
    Sha256::digest(b).into()
}

/// Counts the records of a store by kind, reading no raw message.
pub fn count(s: &Store) -> Result<BTreeMap<&'static str, u64>, store::Error> {
    let mut out = BTreeMap::new();
    s.for_each_record(&mut |r| {
        *out.entry(r.kind()).or_default() += 1;
        Ok(())
    })?;
    Ok(out)
}

/// Refuses a destination that holds anything but its starting counters,
/// naming what it holds. A link secret equal to the source's is no
/// conflict (a daemon started once on an empty store makes one).
fn ensure_empty(to: &Store, to_name: &str, source_secret: Option<&[u8]>) -> Result<(), Error> {
    let mut held: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut other_secret = false;
    to.for_each_record(&mut |r| {
        match &r {
            Record::Counters(_) => {}
            Record::Secret(s) => other_secret = source_secret != Some(s.as_slice()),
            _ => *held.entry(r.kind()).or_default() += 1,
        }
        Ok(())
    })
    .map_err(ctx(format!("reading {to_name}")))?;
    let mut held: Vec<(&str, u64)> = held.into_iter().collect();
    held.sort_by_key(|(k, _)| kind_order(k));
    let mut what: Vec<String> = held.iter().map(|(k, n)| format!("{n} {k}")).collect();
    if other_secret {
        what.push("a different link secret".into());
    }
    if what.is_empty() {
        Ok(())
    } else {
        Err(Error::NotEmpty(to_name.into(), what.join(", ")))
    }
}

/// Moves every record of `from` into `to` (which must be empty), then
/// checks the result. `Ok` with mismatches when the check found any.
pub fn migrate(
    from: &Store,
    from_name: &str,
    to: &Store,
    to_name: &str,
    opts: &Options,
    progress: &mut dyn Progress,
) -> Result<Summary, Error> {
    let (mut sum, expected) = copy_all(from, from_name, to, to_name, opts, progress)?;
    check(to, to_name, expected, &mut sum, progress)?;
    Ok(sum)
}

/// What the check expects of the destination, learnt while copying.
struct Expected {
    raw: HashMap<RawOf, Sha>,
    counters: Counters,
    total: u64,
    /// Raw messages read back at once.
    parallel: usize,
}

/// The count of the source, the emptiness check and the copy.
fn copy_all(
    from: &Store,
    from_name: &str,
    to: &Store,
    to_name: &str,
    opts: &Options,
    progress: &mut dyn Progress,
) -> Result<(Summary, Expected), Error> {
    let mut sum = Summary::default();
    let mut source_secret = None;
    let mut source_counters = Counters::default();
    progress.phase("counting the source", 0);
    from.for_each_record(&mut |r| {
        *sum.source.entry(r.kind()).or_default() += 1;
        match r {
            Record::Secret(s) => source_secret = Some(s),
            Record::Counters(c) => source_counters = c,
            _ => {}
        }
        progress.advance(1);
        Ok(())
    })
    .map_err(ctx(format!("reading {from_name}")))?;
    progress.finish();
    ensure_empty(to, to_name, source_secret.as_deref())?;
    // As a daemon does on a new store: the derived counters and indexes
    // marked built while there is nothing to count, so the writes of the
    // copy keep them and the first start does not count them again.
    crate::workload::ensure_loads(to).map_err(ctx(format!("preparing {to_name}")))?;

    let total: u64 = sum.source.values().sum();
    progress.phase("copying", total);
    let started = Instant::now();
    let mut copy = Copy {
        from,
        to,
        parallel: opts.parallel.max(1),
        moved: HashMap::new(),
        expect: HashMap::new(),
        raw_copied: 0,
        raw_bytes: 0,
    };
    let batch_size = opts.batch.max(1);
    let copied = std::thread::scope(|scope| -> Result<BTreeMap<&'static str, u64>, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(batch_size * 2);
        let reader = scope.spawn(move || {
            from.for_each_record(&mut |r| tx.send(r).map_err(|_| store::Error::Closed))
        });
        let mut copied: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut batch = Vec::with_capacity(batch_size);
        let mut failed = None;
        for r in rx.iter() {
            *copied.entry(r.kind()).or_default() += 1;
            batch.push(r);
            if batch.len() >= batch_size {
                let n = batch.len() as u64;
                if let Err(e) = copy.put(std::mem::take(&mut batch), to_name) {
                    failed = Some(e);
                    break;
                }
                progress.advance(n);
            }
        }
        // Dropping the receiver ends the reader's stream when we stopped
        // early; its own error (a send refused) then means nothing.
        drop(rx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(store::Error::Other("the source reader panicked".into())));
        if let Some(e) = failed {
            return Err(e);
        }
        read.map_err(ctx(format!("reading {from_name}")))?;
        let n = batch.len() as u64;
        copy.put(batch, to_name)?;
        progress.advance(n);
        Ok(copied)
    })?;
    progress.finish();
    sum.copied = copied;
    sum.copy_time = started.elapsed();
    sum.raw_copied = copy.raw_copied;
    sum.raw_bytes = copy.raw_bytes;
    Ok((
        sum,
        Expected {
            raw: copy.expect,
            counters: source_counters,
            total,
            parallel: opts.parallel.max(1),
        },
    ))
}

/// Streams the destination and compares it with what was copied; the
/// differences land in `sum.mismatches`.
fn check(
    to: &Store,
    to_name: &str,
    expected: Expected,
    sum: &mut Summary,
    progress: &mut dyn Progress,
) -> Result<(), Error> {
    let started = Instant::now();
    verify(to, to_name, expected, sum, progress)?;
    sum.check_time = started.elapsed();
    for (k, n) in &sum.source {
        let c = sum.copied.get(k).copied().unwrap_or(0);
        let d = sum.destination.get(k).copied().unwrap_or(0);
        if *n != c || *n != d {
            sum.mismatches.insert(
                0,
                format!("{k}: {n} in the source, {c} copied, {d} in the destination"),
            );
        }
    }
    for (k, d) in &sum.destination {
        if !sum.source.contains_key(k) {
            sum.mismatches.insert(
                0,
                format!("{k}: none in the source, {d} in the destination"),
            );
        }
    }
    Ok(())
}

/// The state of the copy pass.
struct Copy<'a> {
    from: &'a Store,
    to: &'a Store,
    parallel: usize,
    /// Source raw → destination raw and the bytes' SHA-256: outbox
    /// entries share their message's raw, copied once.
    moved: HashMap<RawKey, (SpoolRef, Sha)>,
    /// What the check expects to read back from the destination.
    expect: HashMap<RawOf, Sha>,
    raw_copied: u64,
    raw_bytes: u64,
}

impl Copy<'_> {
    /// Copies the raw messages a batch refers to, rewrites its refs, and
    /// puts it in one destination transaction.
    fn put(&mut self, mut batch: Vec<Record>, to_name: &str) -> Result<(), Error> {
        let mut todo: Vec<(SpoolRef, bool)> = Vec::new();
        let mut queued: std::collections::HashSet<RawKey> = Default::default();
        for r in &batch {
            let (raw, erased) = match r {
                Record::Message { rec, .. } | Record::Apart { rec, .. } => {
                    (Some(rec.raw), rec.raw_erased.is_some())
                }
                Record::Outbox(e) => (e.body.as_ref().map(|(r, _)| *r), false),
                _ => (None, false),
            };
            if let Some(raw) = raw {
                let k = raw_key(&raw);
                if !self.moved.contains_key(&k) && queued.insert(k) {
                    todo.push((raw, erased));
                }
            }
        }
        self.copy_raws(todo, to_name)?;
        for r in &mut batch {
            match r {
                Record::Message { ticket, seq, rec } => {
                    let sha = self.rewrite(rec)?;
                    self.expect.insert(RawOf::Message(*ticket, *seq), sha);
                }
                Record::Apart { id, rec } => {
                    let sha = self.rewrite(rec)?;
                    self.expect.insert(RawOf::Apart(*id), sha);
                }
                Record::Outbox(e) => {
                    if let Some((raw, _)) = e.body.as_mut() {
                        let (new, sha) = self.moved_to(raw)?;
                        *raw = new;
                        self.expect.insert(RawOf::Outbox(e.id), sha);
                    }
                }
                _ => {}
            }
        }
        self.to
            .put_records(batch)
            .map_err(ctx(format!("writing to {to_name}")))
    }

    fn moved_to(&self, raw: &SpoolRef) -> Result<(SpoolRef, Sha), Error> {
        self.moved
            .get(&raw_key(raw))
            .copied()
            .ok_or_else(|| Error::Store {
                what: "rewriting raw message references".into(),
                source: store::Error::Other(format!("{raw:?} was not copied")),
            })
    }

    fn rewrite(&self, rec: &mut MessageRecord) -> Result<Sha, Error> {
        let (new, sha) = self.moved_to(&rec.raw)?;
        rec.raw = new;
        Ok(sha)
    }

    /// Reads each raw from the source and commits it to the destination,
    /// `parallel` at a time. An erased raw is zeros of its length in the
    /// source (retention overwrote it); it is written as such, so its
    /// reference in the destination points at zeros of its own and not
    /// at another message's bytes (`forget` overwrites by location).
    fn copy_raws(&mut self, todo: Vec<(SpoolRef, bool)>, to_name: &str) -> Result<(), Error> {
        if todo.is_empty() {
            return Ok(());
        }
        let work = Mutex::new(todo.into_iter());
        let done: Mutex<Vec<(RawKey, SpoolRef, Sha, u64)>> = Mutex::new(Vec::new());
        let (from, to) = (self.from, self.to);
        let one = |raw: SpoolRef, erased: bool| -> Result<(RawKey, SpoolRef, Sha, u64), Error> {
            let bytes = if erased {
                vec![0u8; usize::try_from(raw.len).unwrap_or(0)]
            } else {
                from.read_raw(&raw).map_err(ctx(format!(
                    "reading the raw message at {raw:?} from the source"
                )))?
            };
            let (digest, len) = (sha(&bytes), bytes.len() as u64);
            let new = to
                .commit_blocking(Some(Arc::new(bytes)), |_, r| Ok(r))
                .map_err(ctx(format!("writing a raw message to {to_name}")))?
                .ok_or_else(|| Error::Store {
                    what: format!("writing a raw message to {to_name}"),
                    source: store::Error::Other("the destination gave no reference".into()),
                })?;
            Ok((raw_key(&raw), new, digest, len))
        };
        let worker = || -> Result<(), Error> {
            loop {
                let next = work.lock().ok().and_then(|mut w| w.next());
                let Some((raw, erased)) = next else {
                    return Ok(());
                };
                let got = one(raw, erased)?;
                if let Ok(mut d) = done.lock() {
                    d.push(got);
                }
            }
        };
        let results: Vec<Result<(), Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.parallel).map(|_| s.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Store {
                            what: "copying raw messages".into(),
                            source: store::Error::Other("a copier thread panicked".into()),
                        })
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
        for (k, new, digest, len) in done.into_inner().unwrap_or_default() {
            self.moved.insert(k, (new, digest));
            self.raw_copied += 1;
            self.raw_bytes += len;
        }
        Ok(())
    }
}

/// Raw messages read back per round of parallel reads in the check.
const CHECK_CHUNK: usize = 512;

/// Reads each raw back from the destination, `parallel` at once (on
/// PostgreSQL each read is a round trip), and names what does not match
/// its source's SHA-256, in the order given.
fn read_back(to: &Store, raws: &[(RawOf, SpoolRef, Sha)], parallel: usize) -> Vec<String> {
    if raws.is_empty() {
        return Vec::new();
    }
    let per = raws.len().div_ceil(parallel.max(1));
    let one = |(at, raw, want): &(RawOf, SpoolRef, Sha)| match to.read_raw(raw) {
        Ok(b) if sha(&b) == *want => None,
        Ok(_) => Some(format!("{at}: raw bytes differ (SHA-256)")),
        Err(e) => Some(format!("{at}: raw bytes unreadable: {e}")),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = raws
            .chunks(per)
            .map(|c| s.spawn(move || c.iter().filter_map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec!["a checker thread panicked".to_string()])
            })
            .collect()
    })
}

/// Streams the destination: counts per kind, and every raw message read
/// back and hashed against what was read from the source.
fn verify(
    to: &Store,
    to_name: &str,
    expected: Expected,
    sum: &mut Summary,
    progress: &mut dyn Progress,
) -> Result<(), Error> {
    let Expected {
        raw: mut expect,
        counters: source_counters,
        total,
        parallel,
    } = expected;
    progress.phase("checking", total);
    let mut found: Vec<String> = Vec::new();
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut checked = 0u64;
    let mut counters: Option<Counters> = None;
    let mut pending: Vec<(RawOf, SpoolRef, Sha)> = Vec::with_capacity(CHECK_CHUNK);
    to.for_each_record(&mut |r| {
        *counts.entry(r.kind()).or_default() += 1;
        progress.advance(1);
        let (at, raw) = match &r {
            Record::Message { ticket, seq, rec } => (RawOf::Message(*ticket, *seq), rec.raw),
            Record::Apart { id, rec } => (RawOf::Apart(*id), rec.raw),
            Record::Outbox(e) => match &e.body {
                Some((raw, _)) => (RawOf::Outbox(e.id), *raw),
                None => return Ok(()),
            },
            Record::Counters(c) => {
                counters = Some(*c);
                return Ok(());
            }
            _ => return Ok(()),
        };
        checked += 1;
        let Some(want) = expect.remove(&at) else {
            found.push(format!("{at}: in the destination, not in the source"));
            return Ok(());
        };
        pending.push((at, raw, want));
        if pending.len() >= CHECK_CHUNK {
            found.extend(read_back(to, &pending, parallel));
            pending.clear();
        }
        Ok(())
    })
    .map_err(ctx(format!("reading {to_name}")))?;
    found.extend(read_back(to, &pending, parallel));
    progress.finish();
    let mut missing: Vec<RawOf> = expect.into_keys().collect();
    missing.sort_by_key(|m| format!("{m:?}"));
    found.extend(
        missing
            .into_iter()
            .map(|m| format!("{m}: in the source, not in the destination")),
    );
    // New numbers must come after every copied one.
    match counters {
        None => found.push("the destination streams no counters".into()),
        Some(c) => {
            let s = source_counters;
            for (what, have, want) in [
                ("ticket", c.next_ticket, s.next_ticket),
                ("outbox", c.next_outbox, s.next_outbox),
                ("job", c.next_job, s.next_job),
                ("apart", c.next_apart, s.next_apart),
            ] {
                if have < want {
                    found.push(format!(
                        "the next {what} number is {have} in the destination, {want} in the source"
                    ));
                }
            }
        }
    }
    sum.destination = counts;
    sum.checked = checked;
    sum.mismatches = found;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::deliver::{decide_and_apply, Mode};
    use crate::ingest::{parse::parse, Envelope};
    use crate::render::Templates;
    use crate::store::{Timestamp, Writes};

    /// A sled store filled through the delivery path: tickets, a reply
    /// threaded into one, acknowledgements and team copies queued.
    fn filled(dir: &Path) -> Store {
        let s = Store::open(dir).unwrap();
        let cfg = Arc::new(
            Config::parse(
                "support: {address: support@desk.test}\nteam:\n  domains: [desk.test]\n  agents: [{email: a@desk.test}]\n",
                "t.yaml",
            )
            .unwrap(),
        );
        let tpl = Arc::new(Templates::builtin());
        for i in 0..6 {
            let from = format!("c{i}@cust.test");
            let irt = if i == 5 {
                "In-Reply-To: <m4@x>\r\n"
            } else {
                ""
            };
            let raw = Arc::new(
                format!(
                    "From: {from}\r\nTo: support@desk.test\r\nSubject: case {i}\r\nMessage-ID: <m{i}@x>\r\n{irt}\r\nBody {i}.\r\n"
                )
                .into_bytes(),
            );
            let parsed = Arc::new(parse(&raw));
            let env = Envelope {
                mail_from: from,
                rcpt_to: vec!["support@desk.test".into()],
            };
            let (c, t) = (cfg.clone(), tpl.clone());
            let now = Timestamp::from_second(1_800_000_000 + i).unwrap();
            s.commit_blocking(Some(raw), move |tx, r| {
                decide_and_apply(tx, r, &parsed, &env, &c, &t, now, Mode::Live).map(|_| ())
            })
            .unwrap();
        }
        s
    }

    fn small() -> Options {
        Options {
            batch: 4,
            parallel: 3,
        }
    }

    #[test]
    fn a_delivered_store_moves_and_checks_equal() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (filled(da.path()), Store::open(db.path()).unwrap());
        let sum = migrate(&a, "a", &b, "b", &small(), &mut Silent).unwrap();
        assert!(sum.ok(), "{:?}", sum.mismatches);
        assert_eq!(sum.source, sum.destination);
        assert_eq!(sum.source, sum.copied);
        assert_eq!(sum.source["messages"], 6);
        assert_eq!(sum.source["tickets"], 5);
        // Each message's raw once; the outbox copies share them.
        assert_eq!(sum.raw_copied, 6);
        assert!(
            sum.checked > 6,
            "outbox bodies checked too: {}",
            sum.checked
        );
        // Its counters were kept by the copy: a start finds nothing to count.
        assert!(!crate::workload::ensure_loads(&b).unwrap());
        assert_eq!(b.ticket_counts().unwrap(), a.ticket_counts().unwrap());
        assert_eq!(b.outbox_counts().unwrap(), a.outbox_counts().unwrap());
        // Once filled, it is refused as a destination, saying what it holds.
        let again = migrate(&a, "a", &b, "b", &small(), &mut Silent).unwrap_err();
        assert!(
            again.to_string().contains("not empty") && again.to_string().contains("5 tickets"),
            "{again}"
        );
    }

    #[test]
    fn the_check_names_a_missing_message_and_unreadable_raw_bytes() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (filled(da.path()), Store::open(db.path()).unwrap());
        let (mut sum, expected) = copy_all(&a, "a", &b, "b", &small(), &mut Silent).unwrap();
        // After the copy: one message record lost, another's raw bytes
        // damaged in the destination's spool.
        b.commit_blocking(None, |tx, _| Writes::delete_message(tx, 1, 0))
            .unwrap();
        let mut damaged = None;
        b.for_each_record(&mut |r| {
            if let Record::Message {
                ticket: 2,
                seq,
                rec,
            } = r
            {
                damaged = Some((seq, rec.raw));
            }
            Ok(())
        })
        .unwrap();
        let (seq, raw) = damaged.unwrap();
        let spool = db
            .path()
            .join("spool")
            .join(format!("{:08}.spool", raw.file));
        let mut bytes = std::fs::read(&spool).unwrap();
        let at = usize::try_from(raw.offset).unwrap();
        bytes[at] ^= 0xff;
        std::fs::write(&spool, bytes).unwrap();

        check(&b, "b", expected, &mut sum, &mut Silent).unwrap();
        assert!(!sum.ok());
        let all = sum.mismatches.join("\n");
        assert!(
            all.contains("messages: 6 in the source, 6 copied, 5 in the destination"),
            "{all}"
        );
        assert!(
            all.contains("message 0 of ticket 1: in the source, not in the destination"),
            "{all}"
        );
        assert!(
            all.contains(&format!("message {seq} of ticket 2: raw bytes unreadable")),
            "{all}"
        );
    }

    #[test]
    fn endpoints_parse_and_hide_the_password() {
        assert_eq!(
            "sled:/var/lib/postdesk".parse::<Endpoint>().unwrap(),
            Endpoint::Sled("/var/lib/postdesk".into())
        );
        for s in [
            "postgres:postgres://pd:secret@db/postdesk",
            "postgres://pd:secret@db/postdesk",
        ] {
            let e: Endpoint = s.parse().unwrap();
            assert_eq!(
                e,
                Endpoint::Postgres("postgres://pd:secret@db/postdesk".into())
            );
            assert_eq!(e.to_string(), "postgres:postgres://pd:***@db/postdesk");
        }
        assert_eq!(
            "postgres:postgresql://db/x".parse::<Endpoint>().unwrap(),
            Endpoint::Postgres("postgresql://db/x".into())
        );
        for bad in ["sled:", "/var/lib/postdesk", "postgres:db", "mysql://x"] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
