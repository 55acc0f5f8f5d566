//! A PostgreSQL transaction as the decision core sees it: [`View`] and
//! [`Writes`], one statement per call.
//!
//! Locking (see the module above): before a write transaction reads or
//! writes anything keyed by a Message-ID, a conversation, an address, an
//! agent or a category, it takes a transaction-scoped advisory lock on that
//! key; ticket and outbox rows are read `FOR UPDATE`. Whatever a delivery
//! looked at stays as it saw it until COMMIT, which is what makes two nodes'
//! decisions about one thread come out as one ticket.

use super::{block, from_json, i, json, ms, pg_err, query, u, Arg, PG_RAW_FILE};
use crate::store::{
    AgentLoad, Away, DistState, Error, Job, JobKind, MessageRecord, OutboxEntry, Result,
    ScheduledRef, SimilarBy, SpoolRef, Status, StoredIds, Ticket, Timestamp, View, Writes,
    SIMILAR_KEEP,
};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row, Transaction};
use std::collections::HashSet;
use std::sync::Mutex;

pub struct PgTx {
    tx: Mutex<Option<Transaction<'static, Postgres>>>,
    read_only: bool,
    /// Keys already locked in this transaction (a lock is taken once).
    locked: Mutex<HashSet<String>>,
    /// The ticket number drawn from the sequence by `next_ticket_number`,
    /// handed out by `take_ticket_number`.
    drawn: Mutex<Option<u64>>,
    /// Outbox rows this transaction added (the queued-mail metric).
    added: std::sync::atomic::AtomicU64,
}

fn poisoned() -> Error {
    Error::Other("postgres transaction lock poisoned".into())
}

impl PgTx {
    pub(crate) fn new(tx: Transaction<'static, Postgres>, read_only: bool) -> PgTx {
        PgTx {
            tx: Mutex::new(Some(tx)),
            read_only,
            locked: Mutex::new(HashSet::new()),
            drawn: Mutex::new(None),
            added: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub(crate) fn outbox_added(&self) -> u64 {
        self.added.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn commit(&self) -> Result<()> {
        let tx = self.tx.lock().map_err(|_| poisoned())?.take();
        match tx {
            Some(tx) => block(tx.commit()).map_err(super::pg_err),
            None => Err(Error::Other("transaction already finished".into())),
        }
    }

    /// Rolls back (a transaction is never dropped unfinished: its
    /// connection must go back to the pool on the PostgreSQL runtime).
    pub(crate) fn rollback(&self) {
        let tx = self.tx.lock().ok().and_then(|mut g| g.take());
        if let Some(tx) = tx {
            let _ = block(tx.rollback());
        }
    }

    fn rows(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<PgRow>> {
        let mut g = self.tx.lock().map_err(|_| poisoned())?;
        let tx = g
            .as_mut()
            .ok_or_else(|| Error::Other("transaction already finished".into()))?;
        block(query(sql, args).fetch_all(&mut **tx)).map_err(pg_err)
    }

    fn exec(&self, sql: &str, args: Vec<Arg>) -> Result<u64> {
        if self.read_only {
            return Err(Error::Other("write in a read-only view".into()));
        }
        let mut g = self.tx.lock().map_err(|_| poisoned())?;
        let tx = g
            .as_mut()
            .ok_or_else(|| Error::Other("transaction already finished".into()))?;
        block(query(sql, args).execute(&mut **tx))
            .map(|r| r.rows_affected())
            .map_err(pg_err)
    }

    pub(crate) fn exec_raw(&self, sql: &str) -> Result<u64> {
        let mut g = self.tx.lock().map_err(|_| poisoned())?;
        let tx = g
            .as_mut()
            .ok_or_else(|| Error::Other("transaction already finished".into()))?;
        block(query(sql, Vec::new()).execute(&mut **tx))
            .map(|r| r.rows_affected())
            .map_err(pg_err)
    }

    fn body<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Option<T>> {
        match self.rows(sql, args)?.first() {
            Some(r) => {
                let s: Option<String> = r.try_get(0).map_err(pg_err)?;
                s.map(|s| from_json(what, &s)).transpose()
            }
            None => Ok(None),
        }
    }

    /// `FOR UPDATE` in a write transaction; nothing in a read-only one.
    fn for_update(&self) -> &'static str {
        if self.read_only {
            ""
        } else {
            " FOR UPDATE"
        }
    }

    /// Locks `space:key` until this transaction ends (write transactions
    /// only). Hash collisions only make unrelated keys take turns.
    fn lock(&self, space: &str, key: &str) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let name = format!("{space}:{key}");
        {
            let mut l = self.locked.lock().map_err(|_| poisoned())?;
            if !l.insert(name.clone()) {
                return Ok(());
            }
        }
        self.rows(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            vec![Arg::S(name)],
        )
        .map(|_| ())
    }

    pub(crate) fn put_raw(&self, bytes: &[u8]) -> Result<SpoolRef> {
        let rows = self.rows(
            "INSERT INTO raw_messages (data) VALUES ($1) RETURNING id",
            vec![Arg::B(bytes.to_vec())],
        )?;
        let id: i64 = match rows.first() {
            Some(r) => r.try_get(0).map_err(pg_err)?,
            None => return Err(Error::Other("raw message insert returned no id".into())),
        };
        Ok(SpoolRef {
            file: PG_RAW_FILE,
            offset: u(id),
            len: bytes.len() as u64,
            check: crate::store::spool::check_of(bytes),
        })
    }

    fn thread_row(&self, message_id: &str) -> Result<Option<(Option<i64>, Option<String>)>> {
        self.lock("k", message_id)?;
        match self
            .rows(
                "SELECT ticket, stored_ids::text FROM thread_keys WHERE message_id = $1",
                vec![Arg::S(message_id.to_string())],
            )?
            .first()
        {
            Some(r) => Ok(Some((
                r.try_get(0).map_err(pg_err)?,
                r.try_get(1).map_err(pg_err)?,
            ))),
            None => Ok(None),
        }
    }

    pub fn outbox(&self, id: u64) -> Result<Option<OutboxEntry>> {
        let sql = format!(
            "SELECT body::text FROM outbox WHERE id = $1{}",
            self.for_update()
        );
        self.body("outbox", &sql, vec![i(id)])
    }

    /// Rewrites an entry; the lease ends with the attempt it covered.
    pub fn update_outbox(&self, _old: &OutboxEntry, new: &OutboxEntry) -> Result<()> {
        self.exec(
            "UPDATE outbox SET state = $2, due_ms = $3, lease_owner = NULL, body = $4::json WHERE id = $1",
            vec![
                i(new.id),
                Arg::S(new.state.as_str().to_string()),
                ms(new.next_attempt_at),
                json(new)?,
            ],
        )
        .map(|_| ())
    }

    /// Writes an entry at its own id (migration).
    pub fn put_outbox_at(&self, e: &OutboxEntry) -> Result<()> {
        self.exec(
            "INSERT INTO outbox (id, state, due_ms, ticket, body) VALUES ($1, $2, $3, $4, $5::json) \
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, due_ms = EXCLUDED.due_ms, \
             ticket = EXCLUDED.ticket, body = EXCLUDED.body",
            vec![
                i(e.id),
                Arg::S(e.state.as_str().to_string()),
                ms(e.next_attempt_at),
                Arg::OptI(e.ticket.map(|t| i64::try_from(t).unwrap_or(i64::MAX))),
                json(e)?,
            ],
        )
        .map(|_| ())
    }

    /// Writes a job at its own id and due time (migration).
    pub fn put_job_at(&self, j: &Job) -> Result<()> {
        self.exec(
            "INSERT INTO jobs (id, due_ms, body) VALUES ($1, $2, $3::json) \
             ON CONFLICT (id) DO UPDATE SET due_ms = EXCLUDED.due_ms, body = EXCLUDED.body",
            vec![i(j.id), ms(j.due), json(j)?],
        )
        .map(|_| ())
    }

    /// The load counters are queries here: nothing to mark.
    pub fn mark_loads_built(&self) -> Result<()> {
        Ok(())
    }

    pub fn mark_similar_built(&self) -> Result<()> {
        Ok(())
    }

    pub fn put_apart_at(&self, n: u64, m: &MessageRecord) -> Result<()> {
        self.exec(
            "INSERT INTO apart (id, body) VALUES ($1, $2::json) \
             ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body",
            vec![i(n), json(m)?],
        )
        .map(|_| ())
    }

    pub fn apart_at(&self, n: u64) -> Result<Option<MessageRecord>> {
        self.body(
            "apart",
            "SELECT body::text FROM apart WHERE id = $1",
            vec![i(n)],
        )
    }

    pub fn move_thread_key(
        &self,
        old_id: &str,
        new_id: Option<&str>,
        stored: impl Fn(StoredIds) -> StoredIds,
    ) -> Result<()> {
        let Some((ticket, ids)) = self.thread_row(old_id)? else {
            return Ok(());
        };
        self.exec(
            "DELETE FROM thread_keys WHERE message_id = $1",
            vec![Arg::S(old_id.to_string())],
        )?;
        let Some(new_id) = new_id else {
            return Ok(());
        };
        self.lock("k", new_id)?;
        let ids = match ids {
            Some(s) => match from_json::<StoredIds>("stored_ids", &s) {
                Ok(v) => Some(serde_json::to_string(&stored(v)).unwrap_or(s)),
                Err(_) => Some(s),
            },
            None => None,
        };
        self.exec(
            "INSERT INTO thread_keys (message_id, ticket, stored_ids) VALUES ($1, $2, $3::json) \
             ON CONFLICT (message_id) DO UPDATE SET ticket = EXCLUDED.ticket, stored_ids = EXCLUDED.stored_ids",
            vec![Arg::S(new_id.to_string()), Arg::OptI(ticket), Arg::OptJson(ids)],
        )
        .map(|_| ())
    }

    pub fn forget_address_keys(&self, address: &str) -> Result<()> {
        let lower = address.trim().to_ascii_lowercase();
        for a in [address.to_string(), lower] {
            self.lock("a", &a)?;
            self.exec(
                "DELETE FROM acks WHERE address = $1",
                vec![Arg::S(a.clone())],
            )?;
            self.exec("DELETE FROM learned WHERE address = $1", vec![Arg::S(a)])?;
        }
        Ok(())
    }

    /// Raises the sequences to at least these next values (migration).
    pub fn raise_counters(&self, c: &crate::store::records::Counters) -> Result<()> {
        for (seq, next) in [
            ("ticket_number_seq", c.next_ticket),
            ("outbox_id_seq", c.next_outbox),
            ("job_id_seq", c.next_job),
            ("apart_id_seq", c.next_apart),
        ] {
            if next <= 1 {
                continue;
            }
            // setval(n, true): the next nextval() gives n + 1.
            let sql = format!(
                "SELECT setval('{seq}', greatest($1, (SELECT last_value FROM {seq})), true)"
            );
            self.rows(&sql, vec![i(next - 1)])?;
        }
        Ok(())
    }

    pub(crate) fn meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self
            .rows(
                "SELECT value FROM meta WHERE key = $1",
                vec![Arg::S(key.to_string())],
            )?
            .first()
        {
            Some(r) => Ok(Some(r.try_get(0).map_err(pg_err)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn put_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.exec(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            vec![Arg::S(key.to_string()), Arg::B(value.to_vec())],
        )
        .map(|_| ())
    }

    fn next(&self, seq: &str) -> Result<u64> {
        let rows = self.rows(&format!("SELECT nextval('{seq}')"), vec![])?;
        match rows.first() {
            Some(r) => r.try_get::<i64, _>(0).map(u).map_err(pg_err),
            None => Err(Error::Other(format!("{seq} gave no value"))),
        }
    }
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

impl View for PgTx {
    fn ticket(&self, number: u64) -> Result<Option<Ticket>> {
        let sql = format!(
            "SELECT body::text FROM tickets WHERE number = $1{}",
            self.for_update()
        );
        self.body("ticket", &sql, vec![i(number)])
    }
    fn ticket_by_key(&self, message_id: &str) -> Result<Option<u64>> {
        Ok(self
            .thread_row(message_id)?
            .and_then(|(t, _)| t)
            .map(u)
            .filter(|t| *t != 0))
    }
    fn ticket_by_conversation(&self, key: &str) -> Result<Option<u64>> {
        self.lock("c", key)?;
        match self
            .rows(
                "SELECT ticket FROM conversations WHERE key = $1",
                vec![Arg::S(key.to_string())],
            )?
            .first()
        {
            Some(r) => Ok(Some(u(r.try_get(0).map_err(pg_err)?))),
            None => Ok(None),
        }
    }
    fn stored_ids(&self, message_id: &str) -> Result<Option<StoredIds>> {
        match self.thread_row(message_id)?.and_then(|(_, s)| s) {
            Some(s) => from_json("stored_ids", &s).map(Some),
            None => Ok(None),
        }
    }
    fn learned_customer(&self, address: &str) -> Result<Option<String>> {
        self.lock("a", address)?;
        match self
            .rows(
                "SELECT customer FROM learned WHERE address = $1",
                vec![Arg::S(address.to_string())],
            )?
            .first()
        {
            Some(r) => Ok(Some(r.try_get(0).map_err(pg_err)?)),
            None => Ok(None),
        }
    }
    fn ack_times(&self, address: &str) -> Result<Vec<Timestamp>> {
        self.lock("a", address)?;
        Ok(self
            .body(
                "acks",
                "SELECT times::text FROM acks WHERE address = $1",
                vec![Arg::S(address.to_string())],
            )?
            .unwrap_or_default())
    }
    fn next_ticket_number(&self) -> Result<u64> {
        let mut d = self.drawn.lock().map_err(|_| poisoned())?;
        if let Some(n) = *d {
            return Ok(n);
        }
        if self.read_only {
            // explain: what the sequence would give next, drawing nothing.
            let rows = self.rows(
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM ticket_number_seq",
                vec![],
            )?;
            return match rows.first() {
                Some(r) => r.try_get::<i64, _>(0).map(u).map_err(pg_err),
                None => Ok(1),
            };
        }
        let n = self.next("ticket_number_seq")?;
        *d = Some(n);
        Ok(n)
    }
    fn agent_load(&self, agent: &str) -> Result<AgentLoad> {
        let agent = norm(agent);
        self.lock("l", &agent)?;
        let mut load = AgentLoad::default();
        for r in self.rows(
            "SELECT status, count(*) FROM tickets WHERE assignee = $1 GROUP BY status",
            vec![Arg::S(agent)],
        )? {
            let s: String = r.try_get(0).map_err(pg_err)?;
            let n: i64 = r.try_get(1).map_err(pg_err)?;
            if let Some(st) = Status::parse(&s).filter(|s| AgentLoad::counts(*s)) {
                load.add(st, n);
            }
        }
        Ok(load)
    }
    fn agent_away(&self, agent: &str) -> Result<Option<Away>> {
        self.body(
            "away",
            "SELECT body::text FROM agent_away WHERE agent = $1",
            vec![Arg::S(norm(agent))],
        )
    }
    fn dist_state(&self, category: &str) -> Result<DistState> {
        let c = norm(category);
        self.lock("d", &c)?;
        Ok(self
            .body(
                "dist",
                "SELECT body::text FROM dist_state WHERE category = $1",
                vec![Arg::S(c)],
            )?
            .unwrap_or_default())
    }
    fn similar_index(&self, by: SimilarBy, key: &str) -> Result<Vec<u64>> {
        let col = match by {
            SimilarBy::Contact => "contact",
            SimilarBy::Customer => "customer",
        };
        let sql = format!(
            "SELECT number FROM (SELECT number FROM tickets WHERE {col} = $1 \
             ORDER BY number DESC LIMIT $2) t ORDER BY number"
        );
        self.rows(&sql, vec![Arg::S(norm(key)), Arg::I(SIMILAR_KEEP as i64)])?
            .iter()
            .map(|r| r.try_get::<i64, _>(0).map(u).map_err(pg_err))
            .collect()
    }
    fn message(&self, ticket: u64, seq: u32) -> Result<Option<MessageRecord>> {
        self.body(
            "message",
            "SELECT body::text FROM messages WHERE ticket = $1 AND seq = $2",
            vec![i(ticket), Arg::I(i64::from(seq))],
        )
    }
}

impl Writes for PgTx {
    fn take_ticket_number(&self) -> Result<u64> {
        let drawn = self.drawn.lock().map_err(|_| poisoned())?.take();
        match drawn {
            Some(n) => Ok(n),
            None => self.next("ticket_number_seq"),
        }
    }
    fn put_ticket(&self, t: &Ticket) -> Result<()> {
        let assignee = t.assignee.as_deref().map(norm).filter(|a| !a.is_empty());
        let customer = t.customer.as_deref().map(norm).filter(|c| !c.is_empty());
        self.exec(
            "INSERT INTO tickets (number, status, assignee, contact, customer, started_ms, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::json) \
             ON CONFLICT (number) DO UPDATE SET status = EXCLUDED.status, assignee = EXCLUDED.assignee, \
             contact = EXCLUDED.contact, customer = EXCLUDED.customer, started_ms = EXCLUDED.started_ms, \
             body = EXCLUDED.body",
            vec![
                i(t.number),
                Arg::S(t.status.as_str().to_string()),
                Arg::OptS(assignee),
                Arg::S(norm(&t.contact)),
                Arg::OptS(customer),
                ms(t.started_at),
                json(t)?,
            ],
        )
        .map(|_| ())
    }
    fn put_message(&self, ticket: u64, seq: u32, m: &MessageRecord) -> Result<()> {
        self.exec(
            "INSERT INTO messages (ticket, seq, message_id, body) VALUES ($1, $2, $3, $4::json) \
             ON CONFLICT (ticket, seq) DO UPDATE SET message_id = EXCLUDED.message_id, body = EXCLUDED.body",
            vec![
                i(ticket),
                Arg::I(i64::from(seq)),
                Arg::S(m.message_id.clone()),
                json(m)?,
            ],
        )
        .map(|_| ())
    }
    fn put_apart(&self, m: &MessageRecord) -> Result<u64> {
        let n = self.next("apart_id_seq")?;
        self.put_apart_at(n, m)?;
        Ok(n)
    }
    fn index_thread_key(&self, message_id: &str, ticket: u64) -> Result<()> {
        self.lock("k", message_id)?;
        self.exec(
            "INSERT INTO thread_keys (message_id, ticket) VALUES ($1, $2) \
             ON CONFLICT (message_id) DO UPDATE SET ticket = EXCLUDED.ticket",
            vec![Arg::S(message_id.to_string()), i(ticket)],
        )
        .map(|_| ())
    }
    fn index_conversation(&self, key: &str, ticket: u64) -> Result<()> {
        self.lock("c", key)?;
        self.exec(
            "INSERT INTO conversations (key, ticket) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET ticket = EXCLUDED.ticket",
            vec![Arg::S(key.to_string()), i(ticket)],
        )
        .map(|_| ())
    }
    fn put_stored_ids(&self, message_id: &str, ids: &StoredIds) -> Result<()> {
        self.lock("k", message_id)?;
        self.exec(
            "INSERT INTO thread_keys (message_id, ticket, stored_ids) VALUES ($1, NULL, $2::json) \
             ON CONFLICT (message_id) DO UPDATE SET stored_ids = EXCLUDED.stored_ids",
            vec![Arg::S(message_id.to_string()), json(ids)?],
        )
        .map(|_| ())
    }
    fn put_ack_times(&self, address: &str, times: &[Timestamp]) -> Result<()> {
        self.lock("a", address)?;
        self.exec(
            "INSERT INTO acks (address, times) VALUES ($1, $2::json) \
             ON CONFLICT (address) DO UPDATE SET times = EXCLUDED.times",
            vec![Arg::S(address.to_string()), json(&times)?],
        )
        .map(|_| ())
    }
    fn learn_customer(&self, address: &str, customer: &str) -> Result<()> {
        self.lock("a", address)?;
        self.exec(
            "INSERT INTO learned (address, customer) VALUES ($1, $2) \
             ON CONFLICT (address) DO UPDATE SET customer = EXCLUDED.customer",
            vec![Arg::S(address.to_string()), Arg::S(customer.to_string())],
        )
        .map(|_| ())
    }
    fn add_outbox(&self, mut e: OutboxEntry) -> Result<u64> {
        e.id = self.next("outbox_id_seq")?;
        self.put_outbox_at(&e)?;
        self.added
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(e.id)
    }
    fn add_job(&self, due: Timestamp, kind: JobKind, now: Timestamp) -> Result<ScheduledRef> {
        let id = self.next("job_id_seq")?;
        let job = Job {
            id,
            due,
            kind,
            created_at: now,
        };
        self.put_job_at(&job)?;
        Ok(ScheduledRef { id, due })
    }
    fn take_job(&self, r: ScheduledRef) -> Result<Option<Job>> {
        let rows = self.rows(
            "DELETE FROM jobs WHERE id = $1 RETURNING body::text",
            vec![i(r.id)],
        )?;
        match rows.first() {
            Some(row) => {
                let s: String = row.try_get(0).map_err(pg_err)?;
                from_json("job", &s).map(Some)
            }
            None => Ok(None),
        }
    }
    // Loads, counts and the similar-ticket index are indexed queries over
    // `tickets` here, so their raw writes have nothing to keep.
    fn put_agent_load(&self, _agent: &str, _load: &AgentLoad) -> Result<()> {
        Ok(())
    }
    fn put_agent_away(&self, agent: &str, away: Option<&Away>) -> Result<()> {
        match away {
            Some(a) => self.exec(
                "INSERT INTO agent_away (agent, body) VALUES ($1, $2::json) \
                 ON CONFLICT (agent) DO UPDATE SET body = EXCLUDED.body",
                vec![Arg::S(norm(agent)), json(a)?],
            ),
            None => self.exec(
                "DELETE FROM agent_away WHERE agent = $1",
                vec![Arg::S(norm(agent))],
            ),
        }
        .map(|_| ())
    }
    fn put_dist_state(&self, category: &str, state: &DistState) -> Result<()> {
        let c = norm(category);
        self.lock("d", &c)?;
        if *state == DistState::default() {
            self.exec(
                "DELETE FROM dist_state WHERE category = $1",
                vec![Arg::S(c)],
            )
        } else {
            self.exec(
                "INSERT INTO dist_state (category, body) VALUES ($1, $2::json) \
                 ON CONFLICT (category) DO UPDATE SET body = EXCLUDED.body",
                vec![Arg::S(c), json(state)?],
            )
        }
        .map(|_| ())
    }
    fn put_similar_index(&self, _by: SimilarBy, _key: &str, _tickets: &[u64]) -> Result<()> {
        Ok(())
    }
    fn delete_message(&self, ticket: u64, seq: u32) -> Result<()> {
        self.exec(
            "DELETE FROM messages WHERE ticket = $1 AND seq = $2",
            vec![i(ticket), Arg::I(i64::from(seq))],
        )
        .map(|_| ())
    }
    fn ticket_count(&self, _status: Status) -> Result<u64> {
        Ok(0)
    }
    fn put_ticket_count(&self, _status: Status, _n: u64) -> Result<()> {
        Ok(())
    }
}
