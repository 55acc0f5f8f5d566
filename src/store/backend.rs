//! `Store` and `Tx`: one face over the two backends (`store.backend`).
//! Callers write against these and never learn which backend runs; what
//! only one backend can do (sled's quiet point for backups) says so in its
//! error.

use super::pg::{PgStore, PgTx};
use super::records::Record;
use super::sled_store::{CommitStats, Quiet, SledStore, SledTx};
use super::{
    AgentLoad, Away, DistState, Error, Job, JobKind, MessageRecord, OutboxEntry, OutboxState,
    Result, ScheduledRef, SimilarBy, SpoolRef, Status, StoredIds, Ticket, Timestamp, View, Writes,
};
use crate::config::{StoreBackend, StoreConfig};
use std::path::Path;
use std::sync::Arc;

/// Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Sled(SledStore),
    Pg(PgStore),
}

/// A transaction in progress on either backend.
pub enum Tx<'a> {
    Sled(SledTx<'a>),
    Pg(&'a PgTx),
}

macro_rules! both {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            Store::Sled($s) => $e,
            Store::Pg($s) => $e,
        }
    };
}

macro_rules! tx {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            Tx::Sled(x) => {
                let $t: &SledTx = x;
                $e
            }
            Tx::Pg(x) => {
                let $t: &PgTx = x;
                $e
            }
        }
    };
}

fn postgres_only_not(what: &str) -> Error {
    Error::Other(format!(
        "{what} works on the sled store only; with store.backend postgres use the database's own tools (pg_dump, pg_basebackup: docs/scaling.md)"
    ))
}

impl Store {
    /// The sled store under `data_dir` (tests, tools, `restore`).
    pub fn open(data_dir: &Path) -> Result<Store> {
        SledStore::open(data_dir).map(Store::Sled)
    }

    /// The store `store.backend` names: sled under `data_dir`, or the
    /// PostgreSQL database (migrated at open) with this process as a node.
    pub fn open_backend(cfg: &StoreConfig, data_dir: &Path) -> Result<Store> {
        match cfg.backend {
            StoreBackend::Sled => Store::open(data_dir),
            // Nothing of the desk's is written under data_dir here: a CLI
            // read on a node that never ran leaves no directory behind.
            StoreBackend::Postgres => {
                PgStore::open(&cfg.postgres.url, cfg.postgres.pool_size, data_dir).map(Store::Pg)
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Store::Sled(_) => "sled",
            Store::Pg(_) => "postgres",
        }
    }

    pub fn data_dir(&self) -> &Path {
        both!(self, s => s.data_dir())
    }

    pub fn set_commit_timeout(&self, limit: std::time::Duration) {
        both!(self, s => s.set_commit_timeout(limit))
    }

    pub fn set_min_free_space(&self, bytes: u64) {
        if let Store::Sled(s) = self {
            s.set_min_free_space(bytes)
        }
    }

    /// Runs `f` in one transaction after storing `raw`, re-run on conflict
    /// (so it must be pure apart from its writes through `Tx`), and returns
    /// once the transaction is durable.
    pub async fn commit<T, F>(&self, raw: Option<Arc<Vec<u8>>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Tx, Option<SpoolRef>) -> Result<T> + Send + 'static,
    {
        match self {
            Store::Sled(s) => s.commit(raw, move |t, r| f(&Tx::Sled(*t), r)).await,
            Store::Pg(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || {
                    p.commit_sync(raw.as_deref().map(|v| v.as_slice()), &|t, r| {
                        f(&Tx::Pg(t), r)
                    })
                })
                .await
                .map_err(|e| Error::Other(format!("store task failed: {e}")))?
            }
        }
    }

    /// Blocking form of [`Store::commit`] for code outside the runtime.
    pub fn commit_blocking<T, F>(&self, raw: Option<Arc<Vec<u8>>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&Tx, Option<SpoolRef>) -> Result<T> + Send + 'static,
    {
        match self {
            Store::Sled(s) => s.commit_blocking(raw, move |t, r| f(&Tx::Sled(*t), r)),
            Store::Pg(p) => p.commit_sync(raw.as_deref().map(|v| v.as_slice()), &|t, r| {
                f(&Tx::Pg(t), r)
            }),
        }
    }

    /// sled only: see `SledStore::quiet_blocking`.
    pub fn quiet_blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Quiet) -> T + Send + 'static,
    {
        match self {
            Store::Sled(s) => s.quiet_blocking(f),
            Store::Pg(_) => Err(postgres_only_not("a consistent dump of the store")),
        }
    }

    /// sled only: see `SledStore::quiet`.
    pub async fn quiet<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Quiet) -> T + Send + 'static,
    {
        match self {
            Store::Sled(s) => s.quiet(f).await,
            Store::Pg(_) => Err(postgres_only_not("a consistent dump of the store")),
        }
    }

    /// Passes when the ingest path can commit: sled's committer runs a
    /// no-op between batches; PostgreSQL takes a transaction round trip.
    pub async fn probe(&self) -> Result<()> {
        match self {
            Store::Sled(s) => s.quiet(|_| ()).await,
            Store::Pg(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || p.probe())
                    .await
                    .map_err(|e| Error::Other(format!("store task failed: {e}")))?
            }
        }
    }

    pub fn quiet_progress(&self) -> u64 {
        match self {
            Store::Sled(s) => s.quiet_progress(),
            Store::Pg(_) => 0,
        }
    }

    pub fn close(&self) {
        both!(self, s => s.close())
    }

    pub fn stats(&self) -> CommitStats {
        both!(self, s => s.stats())
    }

    pub fn ticket(&self, n: u64) -> Result<Option<Ticket>> {
        both!(self, s => s.ticket(n))
    }

    pub fn tickets(&self) -> Result<Vec<Ticket>> {
        let mut out = Vec::new();
        self.for_each_ticket(|t| out.push(t))?;
        Ok(out)
    }

    pub fn for_each_ticket(&self, f: impl FnMut(Ticket)) -> Result<()> {
        both!(self, s => s.for_each_ticket(f))
    }

    pub fn tickets_where(&self, keep: impl Fn(&Ticket) -> bool) -> Result<Vec<Ticket>> {
        let mut out = Vec::new();
        self.for_each_ticket(|t| {
            if keep(&t) {
                out.push(t);
            }
        })?;
        Ok(out)
    }

    pub fn outbox_where(&self, keep: impl Fn(&OutboxEntry) -> bool) -> Result<Vec<OutboxEntry>> {
        match self {
            Store::Sled(s) => s.outbox_where(keep),
            Store::Pg(p) => {
                let mut out = Vec::new();
                p.for_each_outbox(|e| {
                    if keep(&e) {
                        out.push(e);
                    }
                })?;
                Ok(out)
            }
        }
    }

    pub fn messages(&self, ticket: u64) -> Result<Vec<MessageRecord>> {
        both!(self, s => s.messages(ticket))
    }

    pub fn apart(&self) -> Result<Vec<MessageRecord>> {
        Ok(self.apart_entries()?.into_iter().map(|(_, m)| m).collect())
    }

    pub fn outbox(&self, id: u64) -> Result<Option<OutboxEntry>> {
        both!(self, s => s.outbox(id))
    }

    pub fn outbox_all(&self) -> Result<Vec<OutboxEntry>> {
        both!(self, s => s.outbox_all())
    }

    /// Ids of due pending entries, oldest due first (on PostgreSQL only
    /// those no live node holds).
    pub fn outbox_due(&self, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        both!(self, s => s.outbox_due(now, limit))
    }

    /// The sender's take: due entries that are now this node's to send.
    /// sled has one node; PostgreSQL leases them (`FOR UPDATE SKIP LOCKED`).
    pub fn outbox_claim(&self, now: Timestamp, limit: usize) -> Result<Vec<u64>> {
        match self {
            Store::Sled(s) => s.outbox_due(now, limit),
            Store::Pg(p) => p.outbox_claim(now, limit),
        }
    }

    /// How long the outbox sender and the scheduler may sleep with nothing
    /// due. One sled node hears of every write; a PostgreSQL node does not
    /// hear of other nodes' rows, nor of a dead node's leases coming free,
    /// so it looks again at least this often.
    pub fn idle_poll(&self) -> std::time::Duration {
        match self {
            Store::Sled(_) => std::time::Duration::from_secs(3600),
            Store::Pg(_) => super::pg::NODE_TTL / 2,
        }
    }

    pub fn jobs_due(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        both!(self, s => s.jobs_due(now, limit))
    }

    /// The scheduler's take: due jobs that are now this node's to fire.
    pub fn jobs_claim(&self, now: Timestamp, limit: usize) -> Result<Vec<Job>> {
        match self {
            Store::Sled(s) => s.jobs_due(now, limit),
            Store::Pg(p) => p.jobs_claim(now, limit),
        }
    }

    pub fn jobs_next_due(&self) -> Result<Option<Timestamp>> {
        both!(self, s => s.jobs_next_due())
    }

    pub fn jobs(&self) -> Result<Vec<Job>> {
        both!(self, s => s.jobs())
    }

    pub fn outbox_next_due(&self) -> Result<Option<Timestamp>> {
        both!(self, s => s.outbox_next_due())
    }

    pub fn read_raw(&self, r: &SpoolRef) -> Result<Vec<u8>> {
        both!(self, s => s.read_raw(r))
    }

    /// The full bytes of an outbox entry as they go on the wire.
    pub fn outbox_bytes(&self, e: &OutboxEntry) -> Result<Vec<u8>> {
        let mut out = e.head.clone();
        if let Some((r, start)) = &e.body {
            let raw = self.read_raw(r)?;
            let start = usize::try_from(*start).unwrap_or(raw.len()).min(raw.len());
            out.extend_from_slice(&raw[start..]);
        }
        Ok(out)
    }

    pub fn size_on_disk(&self) -> u64 {
        both!(self, s => s.size_on_disk())
    }

    /// Runs `f` against a consistent read view (nothing can be written).
    pub fn with_read_view<T>(&self, f: impl Fn(&dyn View) -> Result<T>) -> Result<T> {
        match self {
            Store::Sled(s) => s.with_read_view(f),
            Store::Pg(p) => p.with_read_view(&|t| f(t)),
        }
    }

    pub fn agent_loads(&self) -> Result<std::collections::BTreeMap<String, AgentLoad>> {
        both!(self, s => s.agent_loads())
    }

    pub fn loads_built(&self) -> Result<bool> {
        match self {
            Store::Sled(s) => s.loads_built(),
            Store::Pg(_) => Ok(true),
        }
    }

    pub fn similar_built(&self) -> Result<bool> {
        match self {
            Store::Sled(s) => s.similar_built(),
            Store::Pg(_) => Ok(true),
        }
    }

    pub fn ticket_counts(&self) -> Result<std::collections::BTreeMap<Status, u64>> {
        both!(self, s => s.ticket_counts())
    }

    pub fn outbox_counts(&self) -> Result<std::collections::BTreeMap<OutboxState, u64>> {
        both!(self, s => s.outbox_counts())
    }

    pub fn outbox_pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        both!(self, s => s.outbox_pending(limit))
    }

    pub fn outbox_oldest_pending(&self) -> Result<Option<OutboxEntry>> {
        both!(self, s => s.outbox_oldest_pending())
    }

    pub fn outbox_in_states(
        &self,
        states: &[OutboxState],
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        both!(self, s => s.outbox_in_states(states, limit))
    }

    /// Changes one outbox entry in one durable transaction (`outbox retry`,
    /// `outbox drop`); `Ok(None)`: no such entry.
    pub fn outbox_change<F>(
        &self,
        id: u64,
        change: F,
    ) -> Result<Option<std::result::Result<OutboxEntry, String>>>
    where
        F: Fn(&OutboxEntry) -> std::result::Result<OutboxEntry, String> + Send + 'static,
    {
        self.commit_blocking(None, move |tx, _| {
            let Some(cur) = tx.outbox(id)? else {
                return Ok(None);
            };
            match change(&cur) {
                Ok(new) => {
                    tx.update_outbox(&cur, &new)?;
                    Ok(Some(Ok(new)))
                }
                Err(why) => Ok(Some(Err(why))),
            }
        })
    }

    pub fn counts_built(&self) -> Result<bool> {
        match self {
            Store::Sled(s) => s.counts_built(),
            Store::Pg(_) => Ok(true),
        }
    }

    pub fn ensure_counts(&self) -> Result<bool> {
        match self {
            Store::Sled(s) => s.ensure_counts(),
            Store::Pg(_) => Ok(false),
        }
    }

    pub fn for_each_message(
        &self,
        f: impl FnMut(u64, u32, MessageRecord) -> Result<()>,
    ) -> Result<()> {
        both!(self, s => s.for_each_message(f))
    }

    pub fn message_entries(&self, ticket: u64) -> Result<Vec<(u32, MessageRecord)>> {
        both!(self, s => s.message_entries(ticket))
    }

    pub fn apart_entries(&self) -> Result<Vec<(u64, MessageRecord)>> {
        both!(self, s => s.apart_entries())
    }

    pub fn thread_keys_where(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        both!(self, s => s.thread_keys_where(keep))
    }

    // ---- raw messages in place (`forget`, `policy.retention`) ----

    /// The stored bytes of `r`, without checking them against `r.check`.
    pub fn raw_read_unchecked(&self, r: &SpoolRef) -> Result<Vec<u8>> {
        match self {
            Store::Sled(s) => super::spool::read_unchecked(&s.data_dir().join("spool"), r),
            Store::Pg(p) => p.raw_read_unchecked(r),
        }
    }

    /// Every raw message with where it lies, in storage order.
    pub fn raw_walk(
        &self,
        f: impl FnMut(super::spool::Located, &[u8]) -> Result<()>,
    ) -> Result<()> {
        match self {
            Store::Sled(s) => super::spool::walk(&s.data_dir().join("spool"), f),
            Store::Pg(p) => p.raw_walk(f),
        }
    }

    /// Overwrites one raw message with as many bytes, durably; returns the
    /// new check.
    pub fn raw_overwrite(&self, at: super::spool::Located, bytes: &[u8]) -> Result<u64> {
        match self {
            Store::Sled(s) => super::spool::overwrite(&s.data_dir().join("spool"), at, bytes),
            Store::Pg(p) => p.raw_overwrite(at, bytes),
        }
    }

    /// The action-link signing secret: a file in the data dir on sled, a
    /// row every node shares on PostgreSQL.
    pub fn load_or_create_secret(&self) -> std::io::Result<crate::workflow::links::Secret> {
        match self {
            Store::Sled(s) => crate::workflow::links::load_or_create_secret(s.data_dir()),
            Store::Pg(p) => {
                let bytes = p.load_or_create_secret().map_err(std::io::Error::other)?;
                let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::other(format!(
                        "the link-secret row holds {} bytes, not 32",
                        bytes.len()
                    ))
                })?;
                Ok(crate::workflow::links::Secret::from_bytes(arr))
            }
        }
    }

    /// Every record of the store, streamed (`postdesk migrate`).
    pub fn for_each_record(&self, f: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        match self {
            Store::Sled(s) => s.for_each_record(f),
            Store::Pg(p) => p.for_each_record(f),
        }
    }

    /// Writes a batch of records in one durable transaction.
    pub fn put_records(&self, batch: Vec<Record>) -> Result<()> {
        match self {
            Store::Sled(s) => s.put_records(batch),
            Store::Pg(p) => p.put_records(batch),
        }
    }
}

impl Tx<'_> {
    pub fn take_ticket_number(&self) -> Result<u64> {
        Writes::take_ticket_number(self)
    }
    pub fn put_ticket(&self, x: &Ticket) -> Result<()> {
        Writes::put_ticket(self, x)
    }
    pub fn put_message(&self, ticket: u64, seq: u32, m: &MessageRecord) -> Result<()> {
        Writes::put_message(self, ticket, seq, m)
    }
    pub fn put_apart(&self, m: &MessageRecord) -> Result<u64> {
        Writes::put_apart(self, m)
    }
    pub fn index_thread_key(&self, message_id: &str, ticket: u64) -> Result<()> {
        Writes::index_thread_key(self, message_id, ticket)
    }
    pub fn index_conversation(&self, key: &str, ticket: u64) -> Result<()> {
        Writes::index_conversation(self, key, ticket)
    }
    pub fn put_stored_ids(&self, message_id: &str, ids: &StoredIds) -> Result<()> {
        Writes::put_stored_ids(self, message_id, ids)
    }
    pub fn put_ack_times(&self, address: &str, times: &[Timestamp]) -> Result<()> {
        Writes::put_ack_times(self, address, times)
    }
    pub fn learn_customer(&self, address: &str, customer: &str) -> Result<()> {
        Writes::learn_customer(self, address, customer)
    }
    pub fn add_outbox(&self, e: OutboxEntry) -> Result<u64> {
        Writes::add_outbox(self, e)
    }
    pub fn outbox(&self, id: u64) -> Result<Option<OutboxEntry>> {
        tx!(self, t => t.outbox(id))
    }
    pub fn update_outbox(&self, old: &OutboxEntry, new: &OutboxEntry) -> Result<()> {
        tx!(self, t => t.update_outbox(old, new))
    }
    pub fn mark_loads_built(&self) -> Result<()> {
        tx!(self, t => t.mark_loads_built())
    }
    pub fn mark_similar_built(&self) -> Result<()> {
        tx!(self, t => t.mark_similar_built())
    }
    pub fn put_apart_at(&self, n: u64, m: &MessageRecord) -> Result<()> {
        tx!(self, t => t.put_apart_at(n, m))
    }
    pub fn apart_at(&self, n: u64) -> Result<Option<MessageRecord>> {
        tx!(self, t => t.apart_at(n))
    }
    pub fn move_thread_key(
        &self,
        old_id: &str,
        new_id: Option<&str>,
        stored: impl Fn(StoredIds) -> StoredIds,
    ) -> Result<()> {
        tx!(self, t => t.move_thread_key(old_id, new_id, stored))
    }
    pub fn forget_address_keys(&self, address: &str) -> Result<()> {
        tx!(self, t => t.forget_address_keys(address))
    }
}

impl View for Tx<'_> {
    fn ticket(&self, number: u64) -> Result<Option<Ticket>> {
        tx!(self, t => t.ticket(number))
    }
    fn ticket_by_key(&self, message_id: &str) -> Result<Option<u64>> {
        tx!(self, t => t.ticket_by_key(message_id))
    }
    fn ticket_by_conversation(&self, key: &str) -> Result<Option<u64>> {
        tx!(self, t => t.ticket_by_conversation(key))
    }
    fn stored_ids(&self, message_id: &str) -> Result<Option<StoredIds>> {
        tx!(self, t => t.stored_ids(message_id))
    }
    fn learned_customer(&self, address: &str) -> Result<Option<String>> {
        tx!(self, t => t.learned_customer(address))
    }
    fn ack_times(&self, address: &str) -> Result<Vec<Timestamp>> {
        tx!(self, t => t.ack_times(address))
    }
    fn next_ticket_number(&self) -> Result<u64> {
        tx!(self, t => t.next_ticket_number())
    }
    fn agent_load(&self, agent: &str) -> Result<AgentLoad> {
        tx!(self, t => t.agent_load(agent))
    }
    fn agent_away(&self, agent: &str) -> Result<Option<Away>> {
        tx!(self, t => t.agent_away(agent))
    }
    fn dist_state(&self, category: &str) -> Result<DistState> {
        tx!(self, t => t.dist_state(category))
    }
    fn similar_index(&self, by: SimilarBy, key: &str) -> Result<Vec<u64>> {
        tx!(self, t => t.similar_index(by, key))
    }
    fn message(&self, ticket: u64, seq: u32) -> Result<Option<MessageRecord>> {
        tx!(self, t => t.message(ticket, seq))
    }
}

impl Writes for Tx<'_> {
    fn take_ticket_number(&self) -> Result<u64> {
        tx!(self, t => Writes::take_ticket_number(t))
    }
    fn put_ticket(&self, x: &Ticket) -> Result<()> {
        tx!(self, t => Writes::put_ticket(t, x))
    }
    fn put_message(&self, ticket: u64, seq: u32, m: &MessageRecord) -> Result<()> {
        tx!(self, t => Writes::put_message(t, ticket, seq, m))
    }
    fn put_apart(&self, m: &MessageRecord) -> Result<u64> {
        tx!(self, t => Writes::put_apart(t, m))
    }
    fn index_thread_key(&self, message_id: &str, ticket: u64) -> Result<()> {
        tx!(self, t => Writes::index_thread_key(t, message_id, ticket))
    }
    fn index_conversation(&self, key: &str, ticket: u64) -> Result<()> {
        tx!(self, t => Writes::index_conversation(t, key, ticket))
    }
    fn put_stored_ids(&self, message_id: &str, ids: &StoredIds) -> Result<()> {
        tx!(self, t => Writes::put_stored_ids(t, message_id, ids))
    }
    fn put_ack_times(&self, address: &str, times: &[Timestamp]) -> Result<()> {
        tx!(self, t => Writes::put_ack_times(t, address, times))
    }
    fn learn_customer(&self, address: &str, customer: &str) -> Result<()> {
        tx!(self, t => Writes::learn_customer(t, address, customer))
    }
    fn add_outbox(&self, e: OutboxEntry) -> Result<u64> {
        tx!(self, t => Writes::add_outbox(t, e))
    }
    fn add_job(&self, due: Timestamp, kind: JobKind, now: Timestamp) -> Result<ScheduledRef> {
        tx!(self, t => Writes::add_job(t, due, kind, now))
    }
    fn take_job(&self, r: ScheduledRef) -> Result<Option<Job>> {
        tx!(self, t => Writes::take_job(t, r))
    }
    fn put_agent_load(&self, agent: &str, load: &AgentLoad) -> Result<()> {
        tx!(self, t => Writes::put_agent_load(t, agent, load))
    }
    fn put_agent_away(&self, agent: &str, away: Option<&Away>) -> Result<()> {
        tx!(self, t => Writes::put_agent_away(t, agent, away))
    }
    fn put_dist_state(&self, category: &str, state: &DistState) -> Result<()> {
        tx!(self, t => Writes::put_dist_state(t, category, state))
    }
    fn put_similar_index(&self, by: SimilarBy, key: &str, tickets: &[u64]) -> Result<()> {
        tx!(self, t => Writes::put_similar_index(t, by, key, tickets))
    }
    fn delete_message(&self, ticket: u64, seq: u32) -> Result<()> {
        tx!(self, t => Writes::delete_message(t, ticket, seq))
    }
    fn ticket_count(&self, status: Status) -> Result<u64> {
        tx!(self, t => Writes::ticket_count(t, status))
    }
    fn put_ticket_count(&self, status: Status, n: u64) -> Result<()> {
        tx!(self, t => Writes::put_ticket_count(t, status, n))
    }
}
