//! The PostgreSQL side of `postdesk migrate`: every record streamed out,
//! and batches put in one transaction each.

use super::{from_json, pg_err, u, Arg, PgStore};
use crate::store::records::{Counters, Record};
use crate::store::{Result, Writes};
use sqlx::Row;

impl PgStore {
    /// Every record, one page at a time (see `Record` for the order).
    pub fn for_each_record(&self, f: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        let mut next = Counters::default();
        for (seq, slot) in [
            ("ticket_number_seq", &mut next.next_ticket),
            ("outbox_id_seq", &mut next.next_outbox),
            ("job_id_seq", &mut next.next_job),
            ("apart_id_seq", &mut next.next_apart),
        ] {
            let rows = self.rows(
                &format!(
                    "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM {seq}"
                ),
                vec![],
            )?;
            if let Some(r) = rows.first() {
                *slot = u(r.try_get::<i64, _>(0).map_err(pg_err)?);
            }
        }
        f(Record::Counters(next))?;
        let secret = self.rows("SELECT value FROM meta WHERE key = 'link-secret'", vec![])?;
        if let Some(r) = secret.first() {
            f(Record::Secret(r.try_get(0).map_err(pg_err)?))?;
        }
        let mut err = None;
        self.for_each_ticket(|t| {
            if err.is_none() {
                if let Err(e) = f(Record::Ticket(t)) {
                    err = Some(e);
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        self.for_each_message(|ticket, seq, rec| f(Record::Message { ticket, seq, rec }))?;
        for (id, rec) in self.apart_entries()? {
            f(Record::Apart { id, rec })?;
        }
        self.paged_text(
            "SELECT message_id, ticket, stored_ids::text FROM thread_keys \
             WHERE message_id > $1 ORDER BY message_id LIMIT $2",
            &mut |r| {
                let ticket: Option<i64> = r.try_get(1).map_err(pg_err)?;
                let stored: Option<String> = r.try_get(2).map_err(pg_err)?;
                f(Record::ThreadKey {
                    message_id: r.try_get(0).map_err(pg_err)?,
                    ticket: ticket.map(u).filter(|t| *t != 0),
                    stored: stored.map(|s| from_json("stored_ids", &s)).transpose()?,
                })
            },
        )?;
        for r in self.rows("SELECT key, ticket FROM conversations ORDER BY key", vec![])? {
            f(Record::Conversation {
                key: r.try_get(0).map_err(pg_err)?,
                ticket: u(r.try_get(1).map_err(pg_err)?),
            })?;
        }
        self.paged_text(
            "SELECT address, times::text FROM acks WHERE address > $1 ORDER BY address LIMIT $2",
            &mut |r| {
                let times: String = r.try_get(1).map_err(pg_err)?;
                f(Record::Acks {
                    address: r.try_get(0).map_err(pg_err)?,
                    times: from_json("acks", &times)?,
                })
            },
        )?;
        self.paged_text(
            "SELECT address, customer FROM learned WHERE address > $1 ORDER BY address LIMIT $2",
            &mut |r| {
                f(Record::Learned {
                    address: r.try_get(0).map_err(pg_err)?,
                    customer: r.try_get(1).map_err(pg_err)?,
                })
            },
        )?;
        let mut err = None;
        self.for_each_outbox(|e| {
            if err.is_none() {
                if let Err(x) = f(Record::Outbox(e)) {
                    err = Some(x);
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        for j in self.jobs()? {
            f(Record::Job(j))?;
        }
        for r in self.rows(
            "SELECT agent, body::text FROM agent_away ORDER BY agent",
            vec![],
        )? {
            let body: String = r.try_get(1).map_err(pg_err)?;
            f(Record::Away {
                agent: r.try_get(0).map_err(pg_err)?,
                away: from_json("away", &body)?,
            })?;
        }
        for r in self.rows(
            "SELECT category, body::text FROM dist_state ORDER BY category",
            vec![],
        )? {
            let body: String = r.try_get(1).map_err(pg_err)?;
            f(Record::Dist {
                category: r.try_get(0).map_err(pg_err)?,
                state: from_json("dist", &body)?,
            })?;
        }
        Ok(())
    }

    /// Pages over a text key: `sql` takes the last key as `$1` and the
    /// page size as `$2`, and selects the key first.
    fn paged_text(
        &self,
        sql: &str,
        f: &mut dyn FnMut(&sqlx::postgres::PgRow) -> Result<()>,
    ) -> Result<()> {
        let mut after = String::new();
        loop {
            let page = self.rows(sql, vec![Arg::S(after.clone()), Arg::I(1000)])?;
            for r in &page {
                after = r.try_get(0).map_err(pg_err)?;
                f(r)?;
            }
            if page.len() < 1000 {
                return Ok(());
            }
        }
    }

    /// Writes a batch in one transaction, committed when this returns.
    pub fn put_records(&self, batch: Vec<Record>) -> Result<()> {
        self.commit_sync(None, &|tx, _| {
            for r in &batch {
                match r {
                    Record::Ticket(t) => tx.put_ticket(t)?,
                    Record::Message { ticket, seq, rec } => tx.put_message(*ticket, *seq, rec)?,
                    Record::Apart { id, rec } => tx.put_apart_at(*id, rec)?,
                    Record::ThreadKey {
                        message_id,
                        ticket,
                        stored,
                    } => {
                        if let Some(t) = ticket {
                            tx.index_thread_key(message_id, *t)?;
                        }
                        if let Some(s) = stored {
                            tx.put_stored_ids(message_id, s)?;
                        }
                    }
                    Record::Conversation { key, ticket } => tx.index_conversation(key, *ticket)?,
                    Record::Acks { address, times } => tx.put_ack_times(address, times)?,
                    Record::Learned { address, customer } => {
                        tx.learn_customer(address, customer)?
                    }
                    Record::Outbox(e) => tx.put_outbox_at(e)?,
                    Record::Job(j) => tx.put_job_at(j)?,
                    Record::Away { agent, away } => tx.put_agent_away(agent, Some(away))?,
                    Record::Dist { category, state } => tx.put_dist_state(category, state)?,
                    Record::Counters(c) => tx.raise_counters(c)?,
                    Record::Secret(bytes) => {
                        let have = tx_secret(tx)?;
                        match have {
                            Some(h) if h != *bytes => {
                                return Err(crate::store::Error::Other(
                                    "the destination already has a different link-signing secret"
                                        .into(),
                                ))
                            }
                            Some(_) => {}
                            None => {
                                tx.put_meta("link-secret", bytes)?;
                            }
                        }
                    }
                }
            }
            Ok(())
        })
    }
}

fn tx_secret(tx: &super::PgTx) -> Result<Option<Vec<u8>>> {
    tx.meta("link-secret")
}
