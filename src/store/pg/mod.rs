//! The PostgreSQL backend (`store.backend: postgres`): several postdesk
//! nodes on one database, coordinating only through it.
//!
//! The decision core reads through the synchronous [`View`] inside its
//! transaction, so each lookup here is one statement run to completion on
//! a small runtime of our own ([`block`]). A delivery is one SQL
//! transaction (raw message, ticket, indexes, outbox rows); the caller's
//! `250` follows COMMIT.
//!
//! How nodes agree (docs/scaling.md):
//! - every key a write transaction reads or writes (a Message-ID, an
//!   Outlook conversation, an address, an agent, a category) is locked
//!   with `pg_advisory_xact_lock` first, and ticket rows `FOR UPDATE`:
//!   two mails of one thread at two nodes take turns, and the second sees
//!   the first's ticket. A deadlock or a unique-key race aborts one side,
//!   which re-runs on fresh state ([`Error::Conflict`]);
//! - ticket, outbox, job and apart numbers come from sequences;
//! - the outbox and scheduler claim due rows with `FOR UPDATE SKIP LOCKED`
//!   into a lease owned by this node, which beats in table `nodes`; rows
//!   of a node that stopped beating are claimed by the others.
//!
//! Derived counts (tickets per status, agent load, similar tickets) are
//! not kept as counters here: they are indexed queries over `tickets`, so
//! no hot row serialises the nodes.

mod records;
#[cfg(test)]
mod tests;
mod tx;

pub use tx::PgTx;

use super::sled_store::CommitStats;
use super::{
    Error, Job, MessageRecord, OutboxEntry, OutboxState, Result, SpoolRef, Status, Ticket,
    Timestamp,
};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// `SpoolRef.file` of a raw message kept in `raw_messages` (its id is the
/// `offset`); sled spool files are numbered from 0 and never get here.
pub const PG_RAW_FILE: u32 = u32::MAX;

/// A node that has not beaten for this long is taken for dead: its outbox
/// and job leases are claimed by the others.
pub const NODE_TTL: Duration = Duration::from_secs(10);
const BEAT_EVERY: Duration = Duration::from_secs(2);
/// Re-runs of one transaction after conflicts before giving up (451).
const MAX_ATTEMPTS: u32 = 30;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The runtime every PostgreSQL connection lives on. Process-wide and never
/// dropped, so a connection can be returned to its pool from any thread.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pg-io")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            // Without threads nothing of postdesk can run either.
            Err(e) => panic!("cannot start the PostgreSQL I/O runtime: {e}"),
        }
    })
}

/// Runs `fut` to completion on the PostgreSQL runtime from synchronous code,
/// wherever that code runs: a plain thread, a blocking-pool thread, or a
/// worker of a multi-threaded runtime (moved aside with `block_in_place`).
pub(crate) fn block<F>(fut: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    let h = rt().handle();
    match tokio::runtime::Handle::try_current() {
        Ok(cur) if cur.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(fut))
        }
        // A current-thread runtime cannot be blocked in place: hand the
        // wait to a scoped thread.
        Ok(_) => std::thread::scope(|s| match s.spawn(|| h.block_on(fut)).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }),
        Err(_) => h.block_on(fut),
    }
}

/// A bound value; queries are built at run time from these.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I(i64),
    S(String),
    OptS(Option<String>),
    OptI(Option<i64>),
    B(Vec<u8>),
    Json(String),
    OptJson(Option<String>),
    Strs(Vec<String>),
}

pub(crate) fn query(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    // Every statement text is ours (constants and `format!` of constants);
    // values are always bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for a in args {
        q = match a {
            Arg::I(v) => q.bind(v),
            Arg::S(v) => q.bind(text(v)),
            Arg::OptS(v) => q.bind(v.map(text)),
            Arg::OptI(v) => q.bind(v),
            Arg::B(v) => q.bind(v),
            Arg::Json(v) => q.bind(v),
            Arg::OptJson(v) => q.bind(v),
            Arg::Strs(v) => q.bind(v.into_iter().map(text).collect::<Vec<_>>()),
        };
    }
    q
}

/// PostgreSQL text cannot hold NUL, and hostile mail puts it in
/// Message-IDs and addresses. Keys are bound through here both when written
/// and when looked up, so a key with NUL still finds itself. (JSON columns
/// keep the exact value: serde escapes NUL there.)
fn text(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

/// Conflicts a re-run resolves: serialization failure, deadlock, a unique
/// key another node inserted first, and a transaction already aborted by
/// one of those.
pub(crate) fn pg_err(e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &e {
        if let Some(code) = db.code() {
            if matches!(code.as_ref(), "40001" | "40P01" | "23505" | "25P02") {
                return Error::Conflict;
            }
        }
    }
    Error::Pg(e.to_string())
}

pub(crate) fn i(v: u64) -> Arg {
    Arg::I(i64::try_from(v).unwrap_or(i64::MAX))
}

pub(crate) fn ms(t: Timestamp) -> Arg {
    Arg::I(t.as_millisecond())
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<Arg> {
    serde_json::to_string(v)
        .map(Arg::Json)
        .map_err(|e| Error::Other(format!("cannot encode a record: {e}")))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt {
        key: what.to_string(),
        why: e.to_string(),
    })
}

pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Cheap to clone: every clone shares the pool and the node's lease.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Commits in progress by start time (for the wedge watchdog).
    busy: Mutex<std::collections::BTreeMap<u64, std::time::Instant>>,
    next_commit: std::sync::atomic::AtomicU64,
    /// `limits.commit_timeout` in ms (0: no watchdog).
    commit_timeout_ms: std::sync::atomic::AtomicU64,
    pool: PgPool,
    data_dir: PathBuf,
    /// This process's name in `nodes` and in lease columns.
    node: String,
    stats: Mutex<CommitStats>,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl PgStore {
    /// Connects, applies the embedded migrations, and registers this
    /// process as a node (beating until the store is closed or dropped).
    pub fn open(url: &str, pool_size: u32, data_dir: &Path) -> Result<PgStore> {
        let opts: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| {
            Error::Pg(format!(
                "store.postgres.url: {e} (expected postgres://USER@HOST:PORT/DB)"
            ))
        })?;
        // A node that froze inside a transaction (SIGSTOP, a swap storm)
        // would hold its key locks for ever: the server ends such a
        // session, and a delivery waiting on a lock gives up with a 451
        // (the MTA retries) instead of holding its client.
        let opts = opts.application_name("postdesk").options([
            ("lock_timeout", "30s"),
            ("idle_in_transaction_session_timeout", "60s"),
            // The schema's "already exists, skipping" notices at every start
            // are not news.
            ("client_min_messages", "warning"),
        ]);
        let pool = block(
            PgPoolOptions::new()
                .max_connections(pool_size.max(1))
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts),
        )
        .map_err(|e| Error::Pg(format!("cannot connect to PostgreSQL: {e}")))?;
        block(MIGRATOR.run(&pool))
            .map_err(|e| Error::Pg(format!("schema migration failed: {e}")))?;
        let node = format!(
            "{}:{}:{:08x}",
            hostname(),
            std::process::id(),
            rand::random::<u32>()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let store = PgStore {
            inner: Arc::new(Inner {
                busy: Mutex::new(Default::default()),
                next_commit: std::sync::atomic::AtomicU64::new(0),
                commit_timeout_ms: std::sync::atomic::AtomicU64::new(0),
                pool,
                data_dir: data_dir.to_path_buf(),
                node,
                stats: Mutex::new(CommitStats::default()),
                stop: stop.clone(),
            }),
        };
        store.exec(
            "INSERT INTO nodes (id, host, pid, started_ms, alive_until_ms) \
             VALUES ($1, $2, $3, $4, (extract(epoch from clock_timestamp()) * 1000)::bigint + $5)",
            vec![
                Arg::S(store.inner.node.clone()),
                Arg::S(hostname()),
                Arg::I(i64::from(std::process::id())),
                ms(Timestamp::now()),
                Arg::I(NODE_TTL.as_millis() as i64),
            ],
        )?;
        let pool = store.inner.pool.clone();
        let me = store.inner.node.clone();
        rt().spawn(beat(pool, me, stop));
        let watched = Arc::downgrade(&store.inner);
        std::thread::Builder::new()
            .name("store-watchdog".into())
            .spawn(move || watchdog(watched))
            .map_err(|source| Error::Io {
                path: data_dir.to_path_buf(),
                source,
            })?;
        Ok(store)
    }

    /// Exit 75 when one commit has been running for longer than `limit`
    /// (`limits.commit_timeout`, as on sled; zero turns it off).
    pub fn set_commit_timeout(&self, limit: Duration) {
        let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        self.inner.commit_timeout_ms.store(ms, Ordering::SeqCst);
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Nodes beating now, by id.
    pub fn live_nodes(&self) -> Result<Vec<String>> {
        self.rows(
            "SELECT id FROM nodes WHERE alive_until_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint ORDER BY id",
            vec![],
        )?
        .iter()
        .map(|r| r.try_get(0).map_err(pg_err))
        .collect()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.data_dir
    }

    pub fn stats(&self) -> CommitStats {
        self.inner.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Stops beating and hands back this node's leases at once, so the
    /// other nodes need not wait for them to run out.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        let me = self.inner.node.clone();
        let _ = self.exec(
            "UPDATE outbox SET lease_owner = NULL WHERE lease_owner = $1",
            vec![Arg::S(me.clone())],
        );
        let _ = self.exec(
            "UPDATE jobs SET lease_owner = NULL WHERE lease_owner = $1",
            vec![Arg::S(me.clone())],
        );
        let _ = self.exec("DELETE FROM nodes WHERE id = $1", vec![Arg::S(me)]);
    }

    // ---- statements outside a transaction ----

    pub(crate) fn rows(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<PgRow>> {
        block(query(sql, args).fetch_all(&self.inner.pool)).map_err(pg_err)
    }

    pub(crate) fn exec(&self, sql: &str, args: Vec<Arg>) -> Result<u64> {
        block(query(sql, args).execute(&self.inner.pool))
            .map(|r| r.rows_affected())
            .map_err(pg_err)
    }

    fn bodies<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<T>> {
        self.rows(sql, args)?
            .iter()
            .map(|r| {
                let s: String = r.try_get(0).map_err(pg_err)?;
                from_json(what, &s)
            })
            .collect()
    }

    /// Calls `f` with every row of `sql`, fetched in pages keyed by the
    /// first column (an id ascending); `sql` must take the last id as `$1`
    /// and the page size as `$2`.
    fn paged(&self, sql: &str, mut f: impl FnMut(&PgRow) -> Result<()>) -> Result<()> {
        let mut after = i64::MIN;
        loop {
            let page = self.rows(sql, vec![Arg::I(after), Arg::I(1000)])?;
            for r in &page {
                after = r.try_get(0).map_err(pg_err)?;
                f(r)?;
            }
            if page.len() < 1000 {
                return Ok(());
            }
        }
    }

    // ---- transactions ----

    /// Runs `f` in one SQL transaction after inserting `raw`, re-running it
    /// on a conflict, and returns once COMMIT has returned.
    pub fn commit_sync<T>(
        &self,
        raw: Option<&[u8]>,
        f: &dyn Fn(&PgTx, Option<SpoolRef>) -> Result<T>,
    ) -> Result<T> {
        if injected_fault(&self.inner.data_dir) {
            return Err(Error::Other(format!(
                "injected fault: {} exists (debug build)",
                super::FAULT_FILE
            )));
        }
        let _busy = Busy::new(&self.inner);
        while cfg!(debug_assertions) && self.inner.data_dir.join(super::STALL_FILE).exists() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tx = block(self.inner.pool.begin()).map_err(pg_err)?;
            let ptx = PgTx::new(tx, false);
            let r = (|| {
                let raw_ref = match raw {
                    Some(b) => Some(ptx.put_raw(b)?),
                    None => None,
                };
                f(&ptx, raw_ref)
            })();
            let r = match r {
                Ok(v) => ptx.commit().map(|()| v),
                Err(e) => {
                    ptx.rollback();
                    Err(e)
                }
            };
            match r {
                Err(Error::Conflict) if attempt < MAX_ATTEMPTS => {
                    // Let the other side finish before looking again.
                    let wait = 2u64.saturating_pow(attempt.min(6)) + rand::random::<u64>() % 5;
                    std::thread::sleep(Duration::from_millis(wait));
                    continue;
                }
                Err(Error::Conflict) => {
                    return Err(Error::Other(format!(
                        "gave up after {attempt} conflicting attempts"
                    )))
                }
                other => {
                    if other.is_ok() {
                        crate::metrics::commit_batch(1, started.elapsed());
                        crate::metrics::outbox_queued(ptx.outbox_added());
                        if let Ok(mut s) = self.inner.stats.lock() {
                            s.batches += 1;
                            s.jobs += 1;
                            s.max_batch = s.max_batch.max(1);
                        }
                    }
                    return other;
                }
            }
        }
    }

    /// A read-only snapshot for `explain`: no locks, nothing written.
    pub fn with_read_view<T>(&self, f: &dyn Fn(&PgTx) -> Result<T>) -> Result<T> {
        let tx = block(self.inner.pool.begin()).map_err(pg_err)?;
        let ptx = PgTx::new(tx, true);
        ptx.exec_raw("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")?;
        let r = f(&ptx);
        ptx.rollback();
        r
    }

    /// A round trip through a transaction, as a delivery makes one: the
    /// watchdog's proof that the database answers.
    pub fn probe(&self) -> Result<()> {
        self.commit_sync(None, &|tx, _| tx.exec_raw("SELECT 1").map(|_| ()))
    }

    // ---- the read side ----

    pub fn ticket(&self, n: u64) -> Result<Option<Ticket>> {
        Ok(self
            .bodies(
                "ticket",
                "SELECT body::text FROM tickets WHERE number = $1",
                vec![i(n)],
            )?
            .pop())
    }

    pub fn for_each_ticket(&self, mut f: impl FnMut(Ticket)) -> Result<()> {
        self.paged(
            "SELECT number, body::text FROM tickets WHERE number > $1 ORDER BY number LIMIT $2",
            |r| {
                let s: String = r.try_get(1).map_err(pg_err)?;
                f(from_json("ticket", &s)?);
                Ok(())
            },
        )
    }

    pub fn for_each_outbox(&self, mut f: impl FnMut(OutboxEntry)) -> Result<()> {
        self.paged(
            "SELECT id, body::text FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
            |r| {
                let s: String = r.try_get(1).map_err(pg_err)?;
                f(from_json("outbox", &s)?);
                Ok(())
            },
        )
    }

    pub fn messages(&self, ticket: u64) -> Result<Vec<MessageRecord>> {
        Ok(self
            .message_entries(ticket)?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }

    pub fn message_entries(&self, ticket: u64) -> Result<Vec<(u32, MessageRecord)>> {
        self.rows(
            "SELECT seq, body::text FROM messages WHERE ticket = $1 ORDER BY seq",
            vec![i(ticket)],
        )?
        .iter()
        .map(|r| {
            let seq: i32 = r.try_get(0).map_err(pg_err)?;
            let s: String = r.try_get(1).map_err(pg_err)?;
            Ok((u32::try_from(seq).unwrap_or(0), from_json("message", &s)?))
        })
        .collect()
    }

    pub fn for_each_message(
        &self,
        mut f: impl FnMut(u64, u32, MessageRecord) -> Result<()>,
    ) -> Result<()> {
        // Keyed by (ticket, seq): page on the ticket number, whole tickets.
        let mut after = i64::MIN;
        loop {
            let page = self.rows(
                "SELECT ticket, seq, body::text FROM messages WHERE ticket IN \
                 (SELECT DISTINCT ticket FROM messages WHERE ticket > $1 ORDER BY ticket LIMIT $2) \
                 ORDER BY ticket, seq",
                vec![Arg::I(after), Arg::I(500)],
            )?;
            let mut tickets = 0;
            let mut last = None;
            for r in &page {
                let t: i64 = r.try_get(0).map_err(pg_err)?;
                let seq: i32 = r.try_get(1).map_err(pg_err)?;
                let s: String = r.try_get(2).map_err(pg_err)?;
                if last != Some(t) {
                    tickets += 1;
                    last = Some(t);
                }
                after = t;
                f(
                    u(t),
                    u32::try_from(seq).unwrap_or(0),
                    from_json("message", &s)?,
                )?;
            }
            if tickets < 500 {
                return Ok(());
            }
        }
    }

    pub fn apart_entries(&self) -> Result<Vec<(u64, MessageRecord)>> {
        self.rows("SELECT id, body::text FROM apart ORDER BY id", vec![])?
            .iter()
            .map(|r| {
                let id: i64 = r.try_get(0).map_err(pg_err)?;
                let s: String = r.try_get(1).map_err(pg_err)?;
                Ok((u(id), from_json("apart", &s)?))
            })
            .collect()
    }

    pub fn outbox(&self, id: u64) -> Result<Option<OutboxEntry>> {
        Ok(self
            .bodies(
                "outbox",
                "SELECT body::text FROM outbox WHERE id = $1",
                vec![i(id)],
            )?
            .pop())
    }

    pub fn outbox_all(&self) -> Result<Vec<OutboxEntry>> {
        let mut out = Vec::new();
        self.for_each_outbox(|e| out.push(e))?;
        Ok(out)
    }

    /// The lease test: a row is free when nobody holds it, this node does,
    /// or its holder has stopped beating.
    const FREE: &'static str = "(o.lease_owner IS NULL OR o.lease_owner = $1 OR NOT EXISTS \
        (SELECT 1 FROM nodes n WHERE n.id = o.lease_owner \
         AND n.alive_until_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint))";

    /// Free for another node to take: nobody holds it, or its holder has
    /// stopped beating.
    const TAKEN_OVER: &'static str = "(o.lease_owner IS NULL OR NOT EXISTS \
        (SELECT 1 FROM nodes n WHERE n.id = o.lease_owner \
         AND n.alive_until_ms > (extract(epoch from clock_timestamp()) * 1000)::bigint))";

    /// Due pending entries this node may take (free leases), oldest due
    /// first; claims nothing.
    pub fn outbox_due(&self, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        let sql = format!(
            "SELECT o.id FROM outbox o WHERE o.state = 'pending' AND o.due_ms <= $2 AND {} \
             ORDER BY o.due_ms, o.id LIMIT $3",
            Self::FREE
        );
        self.ids(&sql, now, limit)
    }

    /// Claims due pending entries for this node: they are skipped by the
    /// other nodes' claims until this node settles them or stops beating.
    pub fn outbox_claim(&self, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        // Rows this node holds already are returned as they are: writing the
        // same lease again would cost a row version per poll (measured: ~70
        // updates per outbox row before this was split). New rows are leased
        // only up to `limit` in all, so a node never holds more than it can
        // start, and the scan for free rows never walks past a long run of
        // its own.
        let sql = format!(
            "WITH mine AS (SELECT o.id, o.due_ms FROM outbox o WHERE o.state = 'pending' \
             AND o.due_ms <= $2 AND o.lease_owner = $1 ORDER BY o.due_ms, o.id LIMIT $3), \
             c AS (SELECT o.id FROM outbox o WHERE o.state = 'pending' AND o.due_ms <= $2 \
             AND {} ORDER BY o.due_ms, o.id \
             LIMIT greatest(0, $3 - (SELECT count(*) FROM mine)) FOR UPDATE SKIP LOCKED), \
             u AS (UPDATE outbox SET lease_owner = $1 FROM c WHERE outbox.id = c.id \
             RETURNING outbox.id, outbox.due_ms) \
             SELECT id, due_ms FROM mine UNION ALL SELECT id, due_ms FROM u",
            Self::TAKEN_OVER
        );
        let mut ids = self.claimed(&sql, now, limit)?;
        ids.truncate(limit);
        Ok(ids)
    }

    pub fn outbox_next_due(&self) -> Result<Option<Timestamp>> {
        let sql = format!(
            "SELECT min(o.due_ms) FROM outbox o WHERE o.state = 'pending' AND {}",
            Self::FREE
        );
        self.min_time(&sql)
    }

    pub fn jobs_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        let sql = format!(
            "SELECT o.body::text FROM jobs o WHERE o.due_ms <= $2 AND {} ORDER BY o.due_ms, o.id LIMIT $3",
            Self::FREE
        );
        self.bodies(
            "job",
            &sql,
            vec![
                Arg::S(self.inner.node.clone()),
                ms(now),
                Arg::I(limit as i64),
            ],
        )
    }

    /// Claims due jobs for this node. Firing deletes the row in the same
    /// transaction as its effects, so a job fires once even when its lease
    /// passes to another node mid-way.
    pub fn jobs_claim(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        let sql = format!(
            "WITH mine AS (SELECT o.body::text AS body FROM jobs o WHERE o.due_ms <= $2 \
             AND o.lease_owner = $1 ORDER BY o.due_ms, o.id LIMIT $3), \
             c AS (SELECT o.id FROM jobs o WHERE o.due_ms <= $2 AND {} \
             ORDER BY o.due_ms, o.id \
             LIMIT greatest(0, $3 - (SELECT count(*) FROM mine)) FOR UPDATE SKIP LOCKED), \
             u AS (UPDATE jobs SET lease_owner = $1 FROM c WHERE jobs.id = c.id \
             RETURNING jobs.body::text AS body) \
             SELECT body FROM mine UNION ALL SELECT body FROM u",
            Self::TAKEN_OVER
        );
        let rows = self.rows(
            &sql,
            vec![
                Arg::S(self.inner.node.clone()),
                ms(now),
                Arg::I(limit as i64),
            ],
        )?;
        let mut jobs = rows
            .iter()
            .map(|r| {
                let s: String = r.try_get(0).map_err(pg_err)?;
                from_json::<Job>("job", &s)
            })
            .collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.due, j.id));
        jobs.truncate(limit);
        Ok(jobs)
    }

    pub fn jobs_next_due(&self) -> Result<Option<Timestamp>> {
        let sql = format!("SELECT min(o.due_ms) FROM jobs o WHERE {}", Self::FREE);
        self.min_time(&sql)
    }

    pub fn jobs(&self) -> Result<Vec<Job>> {
        self.bodies(
            "job",
            "SELECT body::text FROM jobs ORDER BY due_ms, id",
            vec![],
        )
    }

    fn ids(&self, sql: &str, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        self.rows(
            sql,
            vec![
                Arg::S(self.inner.node.clone()),
                ms(now),
                Arg::I(limit as i64),
            ],
        )?
        .iter()
        .map(|r| r.try_get::<i64, _>(0).map(u).map_err(pg_err))
        .collect()
    }

    fn claimed(&self, sql: &str, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        let mut rows = self
            .rows(
                sql,
                vec![
                    Arg::S(self.inner.node.clone()),
                    ms(now),
                    Arg::I(limit as i64),
                ],
            )?
            .iter()
            .map(|r| {
                let id: i64 = r.try_get(0).map_err(pg_err)?;
                let due: i64 = r.try_get(1).map_err(pg_err)?;
                Ok((due, id))
            })
            .collect::<Result<Vec<_>>>()?;
        rows.sort_unstable();
        Ok(rows.into_iter().map(|(_, id)| u(id)).collect())
    }

    fn min_time(&self, sql: &str) -> Result<Option<Timestamp>> {
        let rows = self.rows(sql, vec![Arg::S(self.inner.node.clone())])?;
        let v: Option<i64> = match rows.first() {
            Some(r) => r.try_get(0).map_err(pg_err)?,
            None => None,
        };
        Ok(v.and_then(|ms| Timestamp::from_millisecond(ms).ok()))
    }

    pub fn read_raw(&self, r: &SpoolRef) -> Result<Vec<u8>> {
        if r.file != PG_RAW_FILE {
            return Err(Error::Other(format!(
                "raw message {}:{} lives in a sled spool, not in PostgreSQL (was the store migrated with `postdesk migrate`?)",
                r.file, r.offset
            )));
        }
        let rows = self.rows(
            "SELECT data FROM raw_messages WHERE id = $1",
            vec![i(r.offset)],
        )?;
        let Some(row) = rows.first() else {
            return Err(Error::Corrupt {
                key: format!("raw_messages/{}", r.offset),
                why: "missing".into(),
            });
        };
        let data: Vec<u8> = row.try_get(0).map_err(pg_err)?;
        if super::spool::check_of(&data) != r.check || data.len() as u64 != r.len {
            return Err(Error::Corrupt {
                key: format!("raw_messages/{}", r.offset),
                why: "checksum or length differs from the message record".into(),
            });
        }
        Ok(data)
    }

    pub fn raw_read_unchecked(&self, r: &SpoolRef) -> Result<Vec<u8>> {
        let rows = self.rows(
            "SELECT data FROM raw_messages WHERE id = $1",
            vec![i(r.offset)],
        )?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(pg_err),
            None => Err(Error::Corrupt {
                key: format!("raw_messages/{}", r.offset),
                why: "missing".into(),
            }),
        }
    }

    pub fn raw_walk(
        &self,
        mut f: impl FnMut(super::spool::Located, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.paged(
            "SELECT id, data FROM raw_messages WHERE id > $1 ORDER BY id LIMIT $2",
            |r| {
                let id: i64 = r.try_get(0).map_err(pg_err)?;
                let data: Vec<u8> = r.try_get(1).map_err(pg_err)?;
                f(
                    super::spool::Located {
                        file: PG_RAW_FILE,
                        offset: u(id),
                        len: data.len() as u64,
                    },
                    &data,
                )
            },
        )
    }

    /// Replaces a raw message's bytes (same length). The old row version
    /// stays in the table's pages until VACUUM reclaims it
    /// (docs/scaling.md#erasure).
    pub fn raw_overwrite(&self, at: super::spool::Located, bytes: &[u8]) -> Result<u64> {
        if bytes.len() as u64 != at.len {
            return Err(Error::Other(format!(
                "overwrite of raw message {} with {} bytes, not {}",
                at.offset,
                bytes.len(),
                at.len
            )));
        }
        self.exec(
            "UPDATE raw_messages SET data = $2 WHERE id = $1",
            vec![i(at.offset), Arg::B(bytes.to_vec())],
        )?;
        Ok(super::spool::check_of(bytes))
    }

    pub fn size_on_disk(&self) -> u64 {
        self.rows("SELECT pg_database_size(current_database())", vec![])
            .ok()
            .and_then(|r| r.first().and_then(|r| r.try_get::<i64, _>(0).ok()))
            .map(u)
            .unwrap_or(0)
    }

    pub fn agent_loads(&self) -> Result<std::collections::BTreeMap<String, super::AgentLoad>> {
        let mut out: std::collections::BTreeMap<String, super::AgentLoad> = Default::default();
        for r in self.rows(
            "SELECT assignee, status, count(*) FROM tickets WHERE assignee IS NOT NULL \
             GROUP BY assignee, status",
            vec![],
        )? {
            let a: String = r.try_get(0).map_err(pg_err)?;
            let s: String = r.try_get(1).map_err(pg_err)?;
            let n: i64 = r.try_get(2).map_err(pg_err)?;
            if let Some(st) = Status::parse(&s).filter(|s| super::AgentLoad::counts(*s)) {
                out.entry(a).or_default().add(st, n);
            }
        }
        Ok(out)
    }

    pub fn ticket_counts(&self) -> Result<std::collections::BTreeMap<Status, u64>> {
        let mut out = std::collections::BTreeMap::new();
        for r in self.rows(
            "SELECT status, count(*) FROM tickets GROUP BY status",
            vec![],
        )? {
            let s: String = r.try_get(0).map_err(pg_err)?;
            let n: i64 = r.try_get(1).map_err(pg_err)?;
            if let Some(st) = Status::parse(&s) {
                out.insert(st, u(n));
            }
        }
        Ok(out)
    }

    pub fn outbox_counts(&self) -> Result<std::collections::BTreeMap<OutboxState, u64>> {
        let mut out: std::collections::BTreeMap<OutboxState, u64> =
            OutboxState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in self.rows("SELECT state, count(*) FROM outbox GROUP BY state", vec![])? {
            let s: String = r.try_get(0).map_err(pg_err)?;
            let n: i64 = r.try_get(1).map_err(pg_err)?;
            if let Some(st) = OutboxState::ALL.iter().find(|x| x.as_str() == s) {
                out.insert(*st, u(n));
            }
        }
        Ok(out)
    }

    pub fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.bodies(
            "outbox",
            "SELECT body::text FROM outbox WHERE state = 'pending' ORDER BY due_ms, id LIMIT $1",
            vec![Arg::I(limit as i64)],
        )
    }

    pub fn outbox_oldest_pending(&self) -> Result<Option<OutboxEntry>> {
        Ok(self
            .bodies(
                "outbox",
                "SELECT body::text FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1",
                vec![],
            )?
            .pop())
    }

    pub fn outbox_in_states(
        &self,
        states: &[OutboxState],
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let states: Vec<String> = states.iter().map(|s| s.as_str().to_string()).collect();
        self.bodies(
            "outbox",
            "SELECT body::text FROM outbox WHERE state = ANY($1) ORDER BY id LIMIT $2",
            vec![Arg::Strs(states), Arg::I(limit as i64)],
        )
    }

    pub fn thread_keys_where(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for r in self.rows("SELECT message_id FROM thread_keys", vec![])? {
            let id: String = r.try_get(0).map_err(pg_err)?;
            if keep(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// The link-signing secret, shared by every node: created once, by
    /// whichever node gets there first.
    pub fn load_or_create_secret(&self) -> Result<Vec<u8>> {
        let mut fresh = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
        self.exec(
            "INSERT INTO meta (key, value) VALUES ('link-secret', $1) ON CONFLICT (key) DO NOTHING",
            vec![Arg::B(fresh.to_vec())],
        )?;
        let rows = self.rows("SELECT value FROM meta WHERE key = 'link-secret'", vec![])?;
        match rows.first() {
            Some(r) => r.try_get(0).map_err(pg_err),
            None => Err(Error::Other("link-secret vanished after its insert".into())),
        }
    }
}

/// Marks a commit in progress for the watchdog while it lives.
struct Busy<'a> {
    inner: &'a Inner,
    id: u64,
}

impl<'a> Busy<'a> {
    fn new(inner: &'a Inner) -> Busy<'a> {
        let id = inner.next_commit.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut b) = inner.busy.lock() {
            b.insert(id, std::time::Instant::now());
        }
        Busy { inner, id }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Ok(mut b) = self.inner.busy.lock() {
            b.remove(&self.id);
        }
    }
}

/// As sled's: a commit that runs past `limits.commit_timeout` means the
/// database or this node is wedged (a hung server, a lost network with no
/// TCP reset). Exit 75 so the service manager restarts a clean process;
/// nothing acknowledged is lost (every 250 follows a COMMIT) and the MTA
/// retries what was in flight.
fn watchdog(inner: std::sync::Weak<Inner>) {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let limit = inner.commit_timeout_ms.load(Ordering::SeqCst);
        let oldest = inner
            .busy
            .lock()
            .ok()
            .and_then(|b| b.values().min().copied());
        let (Some(oldest), true) = (oldest, limit > 0) else {
            continue;
        };
        let busy = u64::try_from(oldest.elapsed().as_millis()).unwrap_or(u64::MAX);
        if busy > limit {
            tracing::error!(
                busy_ms = busy,
                limit_ms = limit,
                node = %inner.node,
                "store wedged: a PostgreSQL commit has not finished; exiting so a restart resumes from what is committed"
            );
            std::process::exit(75);
        }
    }
}

/// Keeps this node's row alive; stops when the store is closed or dropped.
async fn beat(pool: PgPool, me: String, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(BEAT_EVERY).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let r = sqlx::query(
            "INSERT INTO nodes (id, host, pid, started_ms, alive_until_ms) \
             VALUES ($1, $2, $3, (extract(epoch from clock_timestamp()) * 1000)::bigint, \
                     (extract(epoch from clock_timestamp()) * 1000)::bigint + $4) \
             ON CONFLICT (id) DO UPDATE SET alive_until_ms = EXCLUDED.alive_until_ms",
        )
        .bind(&me)
        .bind(hostname())
        .bind(i64::from(std::process::id()))
        .bind(NODE_TTL.as_millis() as i64)
        .execute(&pool)
        .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, node = %me, "postgres: node heartbeat failed");
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn injected_fault(data_dir: &Path) -> bool {
    cfg!(debug_assertions) && data_dir.join(super::FAULT_FILE).exists()
}
