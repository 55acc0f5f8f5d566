//! An in-memory store implementing [`View`] and [`Writes`]: the pure core's
//! test bench (whole conversations decided and applied without disk), and
//! the reference the real backends must agree with.

use super::{
    AgentLoad, Away, DistState, Job, JobKind, MessageRecord, OutboxEntry, Result, ScheduledRef,
    SimilarBy, Status, StoredIds, Ticket, Timestamp, View, Writes,
};
use std::cell::RefCell;
use std::collections::BTreeMap;

#[derive(Default, Debug, Clone)]
pub struct Data {
    pub next_ticket: u64,
    pub tickets: BTreeMap<u64, Ticket>,
    pub messages: BTreeMap<(u64, u32), MessageRecord>,
    pub apart: Vec<MessageRecord>,
    pub keys: BTreeMap<String, u64>,
    pub conversations: BTreeMap<String, u64>,
    pub stored: BTreeMap<String, StoredIds>,
    pub acks: BTreeMap<String, Vec<Timestamp>>,
    pub learned: BTreeMap<String, String>,
    pub outbox: Vec<OutboxEntry>,
    pub jobs: BTreeMap<u64, Job>,
    pub loads: BTreeMap<String, AgentLoad>,
    pub away: BTreeMap<String, Away>,
    pub dist: BTreeMap<String, DistState>,
    pub similar: BTreeMap<(SimilarBy, String), Vec<u64>>,
    pub counts: BTreeMap<&'static str, u64>,
}

#[derive(Default, Debug)]
pub struct MemStore {
    pub data: RefCell<Data>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }
    pub fn tickets(&self) -> Vec<Ticket> {
        self.data.borrow().tickets.values().cloned().collect()
    }
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.data.borrow().outbox.clone()
    }
}

impl View for MemStore {
    fn ticket(&self, number: u64) -> Result<Option<Ticket>> {
        Ok(self.data.borrow().tickets.get(&number).cloned())
    }
    fn ticket_by_key(&self, message_id: &str) -> Result<Option<u64>> {
        Ok(self.data.borrow().keys.get(message_id).copied())
    }
    fn ticket_by_conversation(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.data.borrow().conversations.get(key).copied())
    }
    fn stored_ids(&self, message_id: &str) -> Result<Option<StoredIds>> {
        Ok(self.data.borrow().stored.get(message_id).cloned())
    }
    fn learned_customer(&self, address: &str) -> Result<Option<String>> {
        Ok(self.data.borrow().learned.get(address).cloned())
    }
    fn ack_times(&self, address: &str) -> Result<Vec<Timestamp>> {
        Ok(self
            .data
            .borrow()
            .acks
            .get(address)
            .cloned()
            .unwrap_or_default())
    }
    fn next_ticket_number(&self) -> Result<u64> {
        Ok(self.data.borrow().next_ticket.max(1))
    }
    fn agent_load(&self, agent: &str) -> Result<AgentLoad> {
        Ok(self
            .data
            .borrow()
            .loads
            .get(&agent.trim().to_ascii_lowercase())
            .copied()
            .unwrap_or_default())
    }
    fn agent_away(&self, agent: &str) -> Result<Option<Away>> {
        Ok(self
            .data
            .borrow()
            .away
            .get(&agent.trim().to_ascii_lowercase())
            .copied())
    }
    fn dist_state(&self, category: &str) -> Result<DistState> {
        Ok(self
            .data
            .borrow()
            .dist
            .get(&category.trim().to_ascii_lowercase())
            .cloned()
            .unwrap_or_default())
    }
    fn similar_index(&self, by: SimilarBy, key: &str) -> Result<Vec<u64>> {
        Ok(self
            .data
            .borrow()
            .similar
            .get(&(by, key.trim().to_ascii_lowercase()))
            .cloned()
            .unwrap_or_default())
    }
    fn message(&self, ticket: u64, seq: u32) -> Result<Option<MessageRecord>> {
        Ok(self.data.borrow().messages.get(&(ticket, seq)).cloned())
    }
}

impl Writes for MemStore {
    fn take_ticket_number(&self) -> Result<u64> {
        let mut d = self.data.borrow_mut();
        let n = d.next_ticket.max(1);
        d.next_ticket = n + 1;
        Ok(n)
    }
    fn put_ticket(&self, t: &Ticket) -> Result<()> {
        super::track_load(self, t)?;
        self.data.borrow_mut().tickets.insert(t.number, t.clone());
        Ok(())
    }
    fn put_message(&self, ticket: u64, seq: u32, m: &MessageRecord) -> Result<()> {
        self.data
            .borrow_mut()
            .messages
            .insert((ticket, seq), m.clone());
        Ok(())
    }
    fn put_apart(&self, m: &MessageRecord) -> Result<u64> {
        let mut d = self.data.borrow_mut();
        d.apart.push(m.clone());
        Ok(d.apart.len() as u64)
    }
    fn index_thread_key(&self, message_id: &str, ticket: u64) -> Result<()> {
        self.data
            .borrow_mut()
            .keys
            .insert(message_id.to_string(), ticket);
        Ok(())
    }
    fn index_conversation(&self, key: &str, ticket: u64) -> Result<()> {
        self.data
            .borrow_mut()
            .conversations
            .insert(key.to_string(), ticket);
        Ok(())
    }
    fn put_stored_ids(&self, message_id: &str, ids: &StoredIds) -> Result<()> {
        self.data
            .borrow_mut()
            .stored
            .insert(message_id.to_string(), ids.clone());
        Ok(())
    }
    fn put_ack_times(&self, address: &str, times: &[Timestamp]) -> Result<()> {
        self.data
            .borrow_mut()
            .acks
            .insert(address.to_string(), times.to_vec());
        Ok(())
    }
    fn learn_customer(&self, address: &str, customer: &str) -> Result<()> {
        self.data
            .borrow_mut()
            .learned
            .insert(address.to_string(), customer.to_string());
        Ok(())
    }
    fn add_job(&self, due: Timestamp, kind: JobKind, now: Timestamp) -> Result<ScheduledRef> {
        let mut d = self.data.borrow_mut();
        let id = d.jobs.keys().next_back().copied().unwrap_or(0) + 1;
        d.jobs.insert(
            id,
            Job {
                id,
                due,
                kind,
                created_at: now,
            },
        );
        Ok(ScheduledRef { id, due })
    }
    fn take_job(&self, r: ScheduledRef) -> Result<Option<Job>> {
        Ok(self.data.borrow_mut().jobs.remove(&r.id))
    }
    fn add_outbox(&self, mut e: OutboxEntry) -> Result<u64> {
        let mut d = self.data.borrow_mut();
        e.id = d.outbox.len() as u64 + 1;
        let id = e.id;
        d.outbox.push(e);
        Ok(id)
    }
    fn put_agent_load(&self, agent: &str, load: &AgentLoad) -> Result<()> {
        self.data
            .borrow_mut()
            .loads
            .insert(agent.trim().to_ascii_lowercase(), *load);
        Ok(())
    }
    fn put_agent_away(&self, agent: &str, away: Option<&Away>) -> Result<()> {
        let key = agent.trim().to_ascii_lowercase();
        let mut d = self.data.borrow_mut();
        match away {
            Some(a) => d.away.insert(key, *a),
            None => d.away.remove(&key),
        };
        Ok(())
    }
    fn put_dist_state(&self, category: &str, state: &DistState) -> Result<()> {
        self.data
            .borrow_mut()
            .dist
            .insert(category.trim().to_ascii_lowercase(), state.clone());
        Ok(())
    }
    fn put_similar_index(&self, by: SimilarBy, key: &str, tickets: &[u64]) -> Result<()> {
        let k = (by, key.trim().to_ascii_lowercase());
        let mut d = self.data.borrow_mut();
        if tickets.is_empty() {
            d.similar.remove(&k);
        } else {
            d.similar.insert(k, tickets.to_vec());
        }
        Ok(())
    }
    fn delete_message(&self, ticket: u64, seq: u32) -> Result<()> {
        self.data.borrow_mut().messages.remove(&(ticket, seq));
        Ok(())
    }
    fn ticket_count(&self, status: Status) -> Result<u64> {
        Ok(self
            .data
            .borrow()
            .counts
            .get(status.as_str())
            .copied()
            .unwrap_or(0))
    }
    fn put_ticket_count(&self, status: Status, n: u64) -> Result<()> {
        self.data.borrow_mut().counts.insert(status.as_str(), n);
        Ok(())
    }
}
