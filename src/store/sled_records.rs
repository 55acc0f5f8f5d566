//! The sled side of the record stream `postdesk migrate` moves between
//! backends (see `records.rs`): every record of the store out, one at a
//! time, and batches of them in, each batch one durable transaction.
//!
//! A child module of `sled_store.rs`, so it reads the tree and writes
//! through `SledTx` without widening either's visibility.

use super::super::policy_keys;
use super::super::records::{Counters, Record};
use super::*;
use crate::workflow::links::{SECRET_FILE, SECRET_LEN};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// Decodes one value, naming its key when it is not what it should be.
fn decoded<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T> {
    decode(v).map_err(|why| Error::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        why,
    })
}

fn tail<'k>(k: &'k [u8], prefix: &[u8]) -> &'k [u8] {
    k.get(prefix.len()..).unwrap_or(&[])
}

fn text(k: &[u8], prefix: &[u8]) -> String {
    String::from_utf8_lossy(tail(k, prefix)).into_owned()
}

fn be_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

fn bad_key(k: &[u8]) -> Error {
    Error::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        why: "key does not have its layout".into(),
    }
}

impl SledStore {
    /// Every record of the store, streamed in key order, one at a time:
    /// counters and the link secret first, then tickets, messages, apart,
    /// thread keys, conversations, acks, learned customers, outbox entries,
    /// jobs, away and distribution state. What the destination derives
    /// from tickets (load counters, per-status counts, the similar-ticket
    /// index, the outbox queue, layout marks) is not streamed.
    pub fn for_each_record(&self, f: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        let tree = &self.inner.tree;
        let counter = |key: &[u8]| -> Result<u64> {
            match tree.get(key)? {
                Some(v) => keys::be_u64(&v).ok_or_else(|| bad_key(key)),
                None => Ok(1),
            }
        };
        f(Record::Counters(Counters {
            next_ticket: counter(keys::NEXT_TICKET)?,
            next_outbox: counter(keys::NEXT_OUTBOX)?,
            next_job: counter(keys::NEXT_JOB)?,
            next_apart: counter(keys::NEXT_APART)?,
        }))?;
        if let Some(secret) = read_secret_file(&self.inner.data_dir)? {
            f(Record::Secret(secret))?;
        }
        for kv in tree.scan_prefix(keys::TICKET) {
            let (k, v) = kv?;
            f(Record::Ticket(decoded(&k, &v)?))?;
        }
        for kv in tree.scan_prefix(keys::MESSAGE) {
            let (k, v) = kv?;
            let t = tail(&k, keys::MESSAGE);
            let (Some(ticket), Some(seq)) = (
                t.get(..8).and_then(keys::be_u64),
                t.get(8..12).and_then(be_u32),
            ) else {
                return Err(bad_key(&k));
            };
            f(Record::Message {
                ticket,
                seq,
                rec: decoded(&k, &v)?,
            })?;
        }
        for kv in tree.scan_prefix(keys::APART) {
            let (k, v) = kv?;
            let id = keys::be_u64(tail(&k, keys::APART)).ok_or_else(|| bad_key(&k))?;
            f(Record::Apart {
                id,
                rec: decoded(&k, &v)?,
            })?;
        }
        for kv in tree.scan_prefix(keys::THREAD_KEY) {
            let (k, v) = kv?;
            let (ticket, stored) = keys::split_thread_value(&v);
            let stored = if stored.is_empty() {
                None
            } else {
                Some(decoded::<StoredIds>(&k, stored)?)
            };
            f(Record::ThreadKey {
                message_id: text(&k, keys::THREAD_KEY),
                ticket,
                stored,
            })?;
        }
        for kv in tree.scan_prefix(keys::CONVERSATION) {
            let (k, v) = kv?;
            let ticket = keys::be_u64(&v).ok_or_else(|| bad_key(&k))?;
            f(Record::Conversation {
                key: text(&k, keys::CONVERSATION),
                ticket,
            })?;
        }
        for kv in tree.scan_prefix(keys::ACKS) {
            let (k, v) = kv?;
            f(Record::Acks {
                address: text(&k, keys::ACKS),
                times: decoded(&k, &v)?,
            })?;
        }
        for kv in tree.scan_prefix(keys::LEARNED) {
            let (k, v) = kv?;
            f(Record::Learned {
                address: text(&k, keys::LEARNED),
                customer: decoded(&k, &v)?,
            })?;
        }
        for kv in tree.scan_prefix(keys::OUTBOX) {
            let (k, v) = kv?;
            f(Record::Outbox(decoded(&k, &v)?))?;
        }
        for kv in tree.scan_prefix(keys::SCHEDULE) {
            let (k, v) = kv?;
            f(Record::Job(decoded(&k, &v)?))?;
        }
        for kv in tree.scan_prefix(policy_keys::AWAY) {
            let (k, v) = kv?;
            f(Record::Away {
                agent: text(&k, policy_keys::AWAY),
                away: decoded(&k, &v)?,
            })?;
        }
        for kv in tree.scan_prefix(policy_keys::DIST) {
            let (k, v) = kv?;
            f(Record::Dist {
                category: text(&k, policy_keys::DIST),
                state: decoded(&k, &v)?,
            })?;
        }
        Ok(())
    }

    /// Writes a batch of records in one committer transaction, durable when
    /// this returns. Tickets go through `put_ticket`, so the load counters,
    /// per-status counts and similar-ticket index follow; numbered records
    /// keep their numbers and the counters are raised past them. The link
    /// secret is written when the data dir has none, and refused when it
    /// holds a different one (links already sent would stop working).
    pub fn put_records(&self, batch: Vec<Record>) -> Result<()> {
        // Checked before the transaction: a refused secret writes nothing.
        for r in &batch {
            if let Record::Secret(s) = r {
                self.put_secret(s)?;
            }
        }
        self.commit_blocking(None, move |tx, _| {
            for r in &batch {
                tx.put_record(r)?;
            }
            Ok(())
        })
    }

    fn put_secret(&self, secret: &[u8]) -> Result<()> {
        let dir = &self.inner.data_dir;
        let path = dir.join(SECRET_FILE);
        if secret.len() != SECRET_LEN {
            return Err(Error::Other(format!(
                "the link secret to write is {} bytes, not {SECRET_LEN}",
                secret.len()
            )));
        }
        match read_secret_file(dir)? {
            Some(have) if have == secret => return Ok(()),
            Some(_) => {
                return Err(Error::Other(format!(
                    "{} holds a different link secret: replacing it would break the action \
                     links its own mail carries, keeping it breaks the migrated ones",
                    path.display()
                )))
            }
            None => {}
        }
        // As links.rs creates it: private, synced, then the directory entry
        // synced, so a crash cannot lose a secret whose links were sent.
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(secret)?;
            f.sync_all()?;
            File::open(dir)?.sync_all()
        };
        write().map_err(io(&path))
    }
}

/// The `link-secret` file's bytes, `None` when there is none.
fn read_secret_file(dir: &Path) -> Result<Option<Vec<u8>>> {
    let path = dir.join(SECRET_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

impl SledTx<'_> {
    /// An outbox entry at its own id (a migration keeps ids: tickets and
    /// logs name them), queued when pending, counted in the `n/` counters,
    /// and the id counter raised past it.
    pub fn put_outbox_at(&self, e: &OutboxEntry) -> Result<()> {
        if let Some(old) = self.outbox(e.id)? {
            return self.update_outbox(&old, e);
        }
        self.raise(keys::NEXT_OUTBOX, e.id.saturating_add(1))?;
        self.put(keys::outbox(e.id), encode(e))?;
        self.bump(&keys::outbox_count(e.state.as_str()), 1)?;
        if e.state == OutboxState::Pending {
            self.put(
                keys::queue(e.next_attempt_at.as_millisecond(), e.id),
                Vec::new(),
            )?;
        }
        Ok(())
    }

    /// A job at its own id and due time (tickets hold `ScheduledRef`s to
    /// them), the id counter raised past it.
    pub fn put_job_at(&self, j: &Job) -> Result<()> {
        self.raise(keys::NEXT_JOB, j.id.saturating_add(1))?;
        self.put(keys::job(j.due.as_millisecond(), j.id), encode(j))
    }

    /// Sets a `meta/next_*` counter to at least `n`.
    fn raise(&self, key: &[u8], n: u64) -> Result<()> {
        if self.counter(key, 1)? < n {
            self.put(key.to_vec(), n.to_be_bytes().to_vec())?;
        }
        Ok(())
    }

    fn put_record(&self, r: &Record) -> Result<()> {
        match r {
            Record::Ticket(t) => {
                self.raise(keys::NEXT_TICKET, t.number.saturating_add(1))?;
                self.put_ticket(t)
            }
            Record::Message { ticket, seq, rec } => self.put_message(*ticket, *seq, rec),
            Record::Apart { id, rec } => {
                self.raise(keys::NEXT_APART, id.saturating_add(1))?;
                self.put_apart_at(*id, rec)
            }
            Record::ThreadKey {
                message_id,
                ticket,
                stored,
            } => self.put(
                keys::thread_key(message_id),
                keys::thread_value(
                    ticket.unwrap_or(0),
                    &stored.as_ref().map(encode).unwrap_or_default(),
                ),
            ),
            Record::Conversation { key, ticket } => self.index_conversation(key, *ticket),
            Record::Acks { address, times } => self.put_ack_times(address, times),
            Record::Learned { address, customer } => self.learn_customer(address, customer),
            Record::Outbox(e) => self.put_outbox_at(e),
            Record::Job(j) => self.put_job_at(j),
            Record::Away { agent, away } => Writes::put_agent_away(self, agent, Some(away)),
            Record::Dist { category, state } => Writes::put_dist_state(self, category, state),
            Record::Counters(c) => {
                self.raise(keys::NEXT_TICKET, c.next_ticket)?;
                self.raise(keys::NEXT_OUTBOX, c.next_outbox)?;
                self.raise(keys::NEXT_JOB, c.next_job)?;
                self.raise(keys::NEXT_APART, c.next_apart)
            }
            // Written by `put_records` before the transaction.
            Record::Secret(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::deliver::{command_transaction, decide_and_apply, Mode};
    use crate::ingest::{parse::parse, Envelope};
    use crate::render::Templates;
    use crate::store::SimilarBy;
    use crate::workflow::command::Command;
    use std::sync::Arc;

    fn cfg() -> Config {
        Config::parse(
            "support: {address: support@desk.test}\nteam:\n  domains: [desk.test]\n  agents: [{email: a@desk.test}, {email: b@desk.test}]\ncategories:\n  - id: billing\n    distribution: {max_open: 1}\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn deliver(store: &SledStore, from: &str, raw: String, now: Timestamp) {
        let (c, tpl) = (Arc::new(cfg()), Arc::new(Templates::builtin()));
        let raw = Arc::new(raw.into_bytes());
        let parsed = Arc::new(parse(&raw));
        let env = Envelope {
            mail_from: from.to_string(),
            rcpt_to: vec!["support@desk.test".into()],
        };
        store
            .commit_blocking(Some(raw), move |tx, r| {
                decide_and_apply(tx, r, &parsed, &env, &c, &tpl, now, Mode::Live).map(|_| ())
            })
            .unwrap();
    }

    fn command(store: &SledStore, n: u64, cmd: Command, actor: &'static str, now: Timestamp) {
        let (c, tpl) = (Arc::new(cfg()), Arc::new(Templates::builtin()));
        store
            .commit_blocking(None, move |tx, _| {
                command_transaction(tx, n, &cmd, actor, &c, &tpl, None, now).map(|_| ())
            })
            .unwrap();
    }

    fn mail(id: &str, from: &str, subject: &str, extra: &str) -> String {
        format!(
            "From: {from}\r\nTo: support@desk.test\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0200\r\n{extra}\r\nHello, {subject}.\r\n"
        )
    }

    /// A store as a desk leaves it: tickets threaded by reference and by
    /// conversation, an auto-reply kept apart, acks and copies queued,
    /// a ticket taken (its reminder scheduled), one agent away.
    fn filled(dir: &Path) -> SledStore {
        let s = SledStore::open(dir).unwrap();
        for i in 0..12i64 {
            let from = format!("c{}@cust.test", i % 5);
            let extra = if i % 4 == 3 {
                format!("In-Reply-To: <m{}@cust.test>\r\n", i - 1)
            } else {
                String::new()
            };
            deliver(
                &s,
                &from,
                mail(
                    &format!("m{i}@cust.test"),
                    &from,
                    &format!("case {i}"),
                    &extra,
                ),
                at(i * 60),
            );
        }
        deliver(
            &s,
            "o@cust.test",
            mail(
                "conv1@cust.test",
                "o@cust.test",
                "outlook",
                "Thread-Index: AdkAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n",
            ),
            at(900),
        );
        deliver(
            &s,
            "x@cust.test",
            mail(
                "ooo@cust.test",
                "x@cust.test",
                "Out of office",
                "Auto-Submitted: auto-replied\r\n",
            ),
            at(960),
        );
        command(&s, 1, Command::Take, "a@desk.test", at(1000));
        command(
            &s,
            2,
            Command::Category {
                id: "billing".into(),
            },
            "a@desk.test",
            at(1010),
        );
        command(&s, 3, Command::Done, "a@desk.test", at(1020));
        // Away, distribution and learned customers come from staff mail
        // the test would need DKIM for: written through the same `Writes`
        // calls the desk makes.
        s.commit_blocking(None, |tx, _| {
            Writes::put_agent_away(
                tx,
                "b@desk.test",
                Some(&crate::store::Away {
                    since: at(1030),
                    until: Some(at(90_000)),
                }),
            )?;
            Writes::put_dist_state(
                tx,
                "billing",
                &crate::store::DistState {
                    cursor: Some("a@desk.test".into()),
                    waiting: vec![4],
                    leads_told: true,
                },
            )?;
            Writes::learn_customer(tx, "c1@cust.test", "acme")
        })
        .unwrap();
        std::fs::write(dir.join(SECRET_FILE), [7u8; SECRET_LEN]).unwrap();
        s
    }

    fn stream(s: &SledStore) -> Vec<Record> {
        let mut out = Vec::new();
        s.for_each_record(&mut |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
        out
    }

    fn kinds(rs: &[Record]) -> std::collections::BTreeMap<&'static str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for r in rs {
            *m.entry(r.kind()).or_default() += 1;
        }
        m
    }

    #[test]
    fn a_delivered_store_streams_into_a_fresh_one_record_for_record() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = filled(da.path());
        let out = stream(&a);
        let k = kinds(&out);
        for kind in [
            "counters",
            "secret",
            "tickets",
            "messages",
            "apart",
            "thread_keys",
            "conversations",
            "acks",
            "outbox",
            "jobs",
            "away",
            "dist",
            "learned",
        ] {
            assert!(k.get(kind).copied().unwrap_or(0) > 0, "no {kind}: {k:?}");
        }

        let b = SledStore::open(db.path()).unwrap();
        for chunk in out.chunks(7) {
            b.put_records(chunk.to_vec()).unwrap();
        }
        assert_eq!(stream(&b), out);
        // What the destination derives from the records matches the source.
        assert!(!a.agent_loads().unwrap().is_empty());
        assert_eq!(b.agent_loads().unwrap(), a.agent_loads().unwrap());
        assert_eq!(b.ticket_counts().unwrap(), a.ticket_counts().unwrap());
        assert_eq!(b.outbox_counts().unwrap(), a.outbox_counts().unwrap());
        let ids = |s: &SledStore| -> Vec<u64> {
            s.outbox_pending(1000)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect()
        };
        assert!(!ids(&a).is_empty());
        assert_eq!(ids(&b), ids(&a));
        assert_eq!(b.jobs_next_due().unwrap(), a.jobs_next_due().unwrap());
        let similar = |s: &SledStore| {
            s.with_read_view(|v| {
                Ok((
                    v.similar_index(SimilarBy::Contact, "c1@cust.test")?,
                    v.next_ticket_number()?,
                ))
            })
            .unwrap()
        };
        assert!(!similar(&a).0.is_empty());
        assert_eq!(similar(&b), similar(&a));
        assert_eq!(
            std::fs::read(db.path().join(SECRET_FILE)).unwrap(),
            vec![7u8; SECRET_LEN]
        );

        // New numbers continue after the copied ones.
        let next = |s: &SledStore| {
            s.commit_blocking(None, |tx, _| {
                Ok((
                    tx.take_ticket_number()?,
                    tx.add_outbox(tx.outbox(1)?.ok_or(Error::Closed)?)?,
                    Writes::add_job(tx, at(5), crate::store::JobKind::Digest, at(5))?.id,
                ))
            })
            .unwrap()
        };
        assert_eq!(next(&b), next(&a));
        a.close();
        b.close();
    }

    #[test]
    fn a_different_link_secret_in_the_destination_is_refused_and_nothing_written() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = filled(da.path());
        let out = stream(&a);
        let b = SledStore::open(db.path()).unwrap();
        std::fs::write(db.path().join(SECRET_FILE), [9u8; SECRET_LEN]).unwrap();
        let err = b.put_records(out.clone()).unwrap_err();
        assert!(err.to_string().contains("different link secret"), "{err}");
        assert_eq!(kinds(&stream(&b)).get("tickets"), None);
        // The same secret is no conflict.
        std::fs::write(db.path().join(SECRET_FILE), [7u8; SECRET_LEN]).unwrap();
        b.put_records(out.clone()).unwrap();
        assert_eq!(stream(&b), out);
    }
}
