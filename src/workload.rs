//! Distribution's side inside the store transaction (issue #8): when a
//! change frees an agent's slot — a ticket done, released, handed on,
//! marked spam or set waiting, or the agent back from `#away` — the oldest
//! ticket waiting in a category they may work goes to them, with the full
//! take process (notice, reminder, customer told once), in the same
//! transaction as the change. The new-ticket side is `ingest::route`.
//!
//! Also builds the per-agent load counters for a store written before they
//! existed. Afterwards `store::track_load`, run by every `put_ticket`,
//! keeps them true.

use crate::config::{Category, Config};
use crate::deliver::write_jobs;
use crate::ingest::decide::{plan, token, Intent, LinkSigner};
use crate::ingest::route::{can_take, category_key};
use crate::render::{desk, Templates};
use crate::store::{AgentLoad, Result, Status, Store, Ticket, Timestamp, Writes};
use crate::workflow::command::Command;

/// The agent whose load `before` → `after` lowers, if any: the one who
/// held the ticket in a counted status and no longer holds it so.
pub fn freed(before: &Ticket, after: &Ticket) -> Option<String> {
    let held = before
        .assignee
        .as_deref()
        .filter(|_| AgentLoad::counts(before.status))?;
    let same = after.assignee.as_deref() == Some(held) && after.status == before.status;
    (!same).then(|| held.to_ascii_lowercase())
}

/// A ticket waiting in a category's queue that `agent` may be given now.
struct Candidate {
    number: u64,
    key: String,
}

/// The oldest waiting ticket `agent` can take now, over every category
/// they are permitted for (and the desk-wide pool). Entries that no longer
/// wait (taken by hand, done, recategorised) are pruned on the way.
fn oldest_waiting(
    tx: &dyn Writes,
    cfg: &Config,
    agent: &str,
    now: Timestamp,
) -> Result<Option<Candidate>> {
    let pools: Vec<Option<&Category>> = cfg
        .categories
        .iter()
        .map(Some)
        .chain(std::iter::once(None))
        .collect();
    let mut best: Option<Candidate> = None;
    for c in pools {
        let key = category_key(c);
        let mut state = tx.dist_state(&key)?;
        if state.waiting.is_empty() || !can_take(cfg, c, agent, tx, now)? {
            continue;
        }
        let before = state.waiting.len();
        let mut found = None;
        while let Some(&n) = state.waiting.first() {
            let still = tx.ticket(n)?.is_some_and(|t| {
                t.status == Status::Unassigned
                    && t.assignee.is_none()
                    && category_key(t.category.as_deref().and_then(|id| cfg.category(id))) == key
            });
            if still {
                found = Some(n);
                break;
            }
            state.waiting.remove(0);
        }
        if state.waiting.len() != before {
            tx.put_dist_state(&key, &state)?;
        }
        if let Some(n) = found {
            if best.as_ref().is_none_or(|b| n < b.number) {
                best = Some(Candidate { number: n, key });
            }
        }
    }
    Ok(best)
}

/// Gives waiting tickets to each agent in `agents` while they can take
/// more. Returns `SUP-4 to alice@…` for each ticket given.
pub fn refill(
    tx: &dyn Writes,
    agents: &[String],
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut seen: Vec<&String> = Vec::new();
    for agent in agents {
        if seen.contains(&agent) || cfg.agent(agent).is_none() {
            continue;
        }
        seen.push(agent);
        // Each turn gives one ticket and raises the agent's load, so the
        // cap ends the loop; the bound only guards against a bug.
        for _ in 0..10_000 {
            let Some(c) = oldest_waiting(tx, cfg, agent, now)? else {
                break;
            };
            let Some(mut t) = tx.ticket(c.number)? else {
                break;
            };
            let cmd = Command::Assign {
                agent: agent.clone(),
            };
            let fx = match crate::workflow::ops::apply(&mut t, &cmd, "postdesk", cfg, now) {
                Ok(fx) => fx,
                Err(_) => break,
            };
            let mut p = plan(&mut t, fx, cfg);
            let sla = crate::sla::track::track(&mut t, false, cfg, now);
            p.cancel.extend(sla.cancel);
            p.schedule.extend(sla.schedule);
            write_jobs(tx, &mut t, &p.cancel, &p.schedule, now)?;
            let by = format!(
                "auto-distribution ({}, a place came free)",
                if c.key.is_empty() {
                    "all agents"
                } else {
                    &c.key
                }
            );
            let cause = format!("refill:{}:{agent}:{}", t.number, now.as_millisecond());
            let similar = crate::ingest::decide::similar_lines(tx, &t, cfg)?;
            for i in &p.intents {
                let mail = match i {
                    Intent::Notice { to, notice } => desk::notice(
                        to, *notice, &by, &t, &similar, &cause, cfg, tpl, signer, now,
                    ),
                    Intent::Taken { to } => desk::taken(to, &t, &cause, cfg, tpl, now),
                    _ => continue,
                };
                tx.index_thread_key(&mail.message_id, t.number)?;
                tx.add_outbox(mail)?;
            }
            tx.put_ticket(&t)?;
            let mut state = tx.dist_state(&c.key)?;
            state.waiting.retain(|n| *n != t.number);
            state.cursor = Some(agent.to_ascii_lowercase());
            state.leads_told = false;
            tx.put_dist_state(&c.key, &state)?;
            tracing::info!(ticket = %token(cfg, t.number), agent = %agent, "distributed a waiting ticket");
            out.push(format!("{} to {agent}", token(cfg, t.number)));
        }
    }
    Ok(out)
}

/// Builds the load counters from every ticket when this store has none yet
/// (written before they existed). Call before anything else writes: at
/// daemon start, or when the CLI opens the store itself.
pub fn ensure_loads(store: &Store) -> Result<bool> {
    // The similar-ticket index has the same life: built once, then kept
    // by every ticket write.
    if ensure_similar(store)? {
        tracing::info!("similar-ticket index built from the tickets");
    }
    // And the per-status counts `postdesk status` reads.
    if store.ensure_counts()? {
        tracing::info!("ticket and outbox counters built");
    }
    if store.loads_built()? {
        return Ok(false);
    }
    // Streamed: an upgraded store of a million tickets must not be read
    // into memory whole (that peaked at 1.5 GiB, docs/performance.md).
    let mut want = std::collections::BTreeMap::new();
    store.for_each_ticket(|t| crate::store::add_load(&mut want, &t))?;
    let have = store.agent_loads()?;
    store.commit_blocking(None, move |tx, _| {
        for a in have.keys().filter(|a| !want.contains_key(*a)) {
            crate::store::Writes::put_agent_load(tx, a, &AgentLoad::default())?;
        }
        for (a, l) in &want {
            crate::store::Writes::put_agent_load(tx, a, l)?;
        }
        tx.mark_loads_built()
    })?;
    Ok(true)
}

const SIMILAR_CHUNK: usize = 2_000;

/// Builds the similar-ticket index (contact and customer → tickets) when
/// this store has none yet; afterwards `store::track_load` keeps it.
pub fn ensure_similar(store: &Store) -> Result<bool> {
    if store.similar_built()? {
        return Ok(false);
    }
    let mut counted = std::collections::BTreeMap::new();
    store.for_each_ticket(|t| crate::store::add_similar(&mut counted, &t))?;
    let want: Vec<_> = counted
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_unstable();
            let extra = v.len().saturating_sub(crate::store::SIMILAR_KEEP);
            v.drain(..extra);
            (k, v)
        })
        .collect();
    // An imported store has an entry per contact: in chunks, so no single
    // transaction grows with the store (the mark comes last, so a crash
    // part-way builds it again, to the same values).
    for chunk in want.chunks(SIMILAR_CHUNK) {
        let chunk = chunk.to_vec();
        store.commit_blocking(None, move |tx, _| {
            for ((by, key), list) in &chunk {
                crate::store::Writes::put_similar_index(tx, *by, key, list)?;
            }
            Ok(())
        })?;
    }
    store.commit_blocking(None, |tx, _| tx.mark_similar_built())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::command_transaction;
    use crate::store::count_loads;
    use crate::store::mem::MemStore;
    use crate::store::{Direction, View};
    use proptest::prelude::*;

    const AGENTS: [&str; 3] = ["a@desk.test", "b@desk.test", "c@desk.test"];

    fn cfg() -> Config {
        Config::parse(
            "support: {address: support@desk.test}\nteam:\n  agents: [{email: a@desk.test}, {email: b@desk.test}, {email: c@desk.test}]\ncategories:\n  - id: billing\n    distribution: {max_open: 2}\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn ticket(n: u64) -> Ticket {
        let mut t = crate::render::desk::view_less_ticket(&cfg(), at(0));
        t.number = n;
        t.status = Status::Unassigned;
        t.contact = format!("c{n}@cust.test");
        t.last_direction = Direction::In;
        t
    }

    #[derive(Debug, Clone)]
    enum Op {
        New,
        Cmd(u64, Command),
        Wake(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let agent = prop::sample::select(AGENTS.to_vec()).prop_map(String::from);
        let n = 1u64..8;
        prop_oneof![
            1 => Just(Op::New),
            3 => (n.clone(), agent.clone()).prop_map(|(n, a)| Op::Cmd(n, Command::Assign { agent: a })),
            2 => n.clone().prop_map(|n| Op::Cmd(n, Command::Release)),
            2 => n.clone().prop_map(|n| Op::Cmd(n, Command::Done)),
            1 => n.clone().prop_map(|n| Op::Cmd(n, Command::Waiting)),
            1 => n.clone().prop_map(|n| Op::Cmd(n, Command::Snooze { until: at(99_999) })),
            1 => n.clone().prop_map(|n| Op::Cmd(n, Command::Spam)),
            1 => n.clone().prop_map(|n| Op::Cmd(n, Command::Reopen)),
            1 => n.clone().prop_map(|n| Op::Cmd(n, Command::Category { id: "billing".into() })),
            1 => n.prop_map(Op::Wake),
        ]
    }

    /// Whatever happens to tickets, through whichever writer, the counters
    /// equal what a full scan counts.
    fn check_counters(store: &MemStore) {
        for s in Status::ALL {
            let n = store.tickets().iter().filter(|t| t.status == s).count() as u64;
            assert_eq!(
                crate::store::Writes::ticket_count(store, s).unwrap(),
                n,
                "{s}"
            );
        }
        let want = count_loads(&store.tickets());
        for a in AGENTS {
            assert_eq!(
                store.agent_load(a).unwrap(),
                want.get(a).copied().unwrap_or_default(),
                "{a}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn load_counters_match_a_full_scan(ops in prop::collection::vec(op(), 1..60)) {
            let c = cfg();
            let tpl = Templates::builtin();
            let s = MemStore::new();
            for (i, o) in ops.iter().enumerate() {
                let now = at(i as i64);
                match o {
                    Op::New => {
                        let n = s.take_ticket_number().unwrap();
                        let mut t = ticket(n);
                        t.category = Some("billing".into());
                        s.put_ticket(&t).unwrap();
                        // A new ticket waiting for distribution, as route
                        // leaves it when everyone is full.
                        let mut st = s.dist_state("billing").unwrap();
                        st.waiting.push(n);
                        s.put_dist_state("billing", &st).unwrap();
                    }
                    Op::Cmd(n, cmd) => {
                        let _ = command_transaction(&s, *n, cmd, "a@desk.test", &c, &tpl, None, now).unwrap();
                    }
                    Op::Wake(n) => {
                        // The scheduler's wake-up writes through put_ticket too.
                        if let Some(mut t) = s.ticket(*n).unwrap() {
                            if t.status == Status::Snoozed {
                                t.status = Status::Active;
                                s.put_ticket(&t).unwrap();
                            }
                        }
                    }
                }
                check_counters(&s);
            }
        }
    }

    #[test]
    fn a_freed_slot_takes_the_oldest_waiting_ticket_in_the_same_transaction() {
        let c = cfg();
        let tpl = Templates::builtin();
        let s = MemStore::new();
        for n in 1..=5 {
            assert_eq!(s.take_ticket_number().unwrap(), n);
            let mut t = ticket(n);
            t.category = Some("billing".into());
            s.put_ticket(&t).unwrap();
        }
        for (n, a) in [(1, "a"), (2, "a")] {
            let cmd = Command::Assign {
                agent: format!("{a}@desk.test"),
            };
            command_transaction(&s, n, &cmd, "cli", &c, &tpl, None, at(1))
                .unwrap()
                .unwrap();
        }
        // b and c are away by mail; a is full (max_open 2): 3, 4, 5 wait.
        for a in ["b@desk.test", "c@desk.test"] {
            s.put_agent_away(
                a,
                Some(&crate::store::Away {
                    since: at(0),
                    until: None,
                }),
            )
            .unwrap();
        }
        s.put_dist_state(
            "billing",
            &crate::store::DistState {
                cursor: None,
                waiting: vec![4, 3, 5],
                leads_told: true,
            },
        )
        .unwrap();
        let out = command_transaction(&s, 1, &Command::Done, "cli", &c, &tpl, None, at(2))
            .unwrap()
            .unwrap();
        assert_eq!(out.distributed, vec!["SUP-4 to a@desk.test"]);
        let t4 = s.ticket(4).unwrap().unwrap();
        assert_eq!(
            (t4.status, t4.assignee.as_deref(), t4.notified),
            (Status::Active, Some("a@desk.test"), true)
        );
        assert!(!t4.scheduled.is_empty(), "reminder scheduled");
        let st = s.dist_state("billing").unwrap();
        assert_eq!(st.waiting, vec![3, 5]);
        assert!(!st.leads_told);
        let kinds: Vec<String> = s.outbox().iter().map(|m| m.kind.clone()).collect();
        assert!(kinds.contains(&"notice".to_string()) && kinds.contains(&"status".to_string()));
        // Ticket 3 was taken by hand meanwhile: the next freed slot skips
        // it and takes 5, pruning 3 from the queue.
        command_transaction(
            &s,
            3,
            &Command::Assign {
                agent: "b@desk.test".into(),
            },
            "cli",
            &c,
            &tpl,
            None,
            at(3),
        )
        .unwrap()
        .unwrap();
        let out = command_transaction(&s, 2, &Command::Release, "cli", &c, &tpl, None, at(4))
            .unwrap()
            .unwrap();
        assert_eq!(out.distributed, vec!["SUP-5 to a@desk.test"]);
        assert!(s.dist_state("billing").unwrap().waiting.is_empty());
        check_counters(&s);
    }

    #[test]
    fn sled_counters_match_a_full_scan_and_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let c = std::sync::Arc::new(cfg());
        let tpl = std::sync::Arc::new(Templates::builtin());
        // Pseudo-random but fixed operations through the real backend.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        for i in 0..300i64 {
            let (c2, tpl2) = (c.clone(), tpl.clone());
            let pick = next(6);
            let n = next(10) + 1;
            let agent = AGENTS[next(3) as usize].to_string();
            store
                .commit_blocking(None, move |tx, _| {
                    if pick == 0 || tx.ticket(n)?.is_none() {
                        let k = tx.take_ticket_number()?;
                        tx.put_ticket(&ticket(k))?;
                        return Ok(());
                    }
                    let cmd = match pick {
                        1 | 2 => Command::Assign {
                            agent: agent.clone(),
                        },
                        3 => Command::Done,
                        4 => Command::Waiting,
                        _ => Command::Release,
                    };
                    let _ = command_transaction(tx, n, &cmd, "cli", &c2, &tpl2, None, at(i))?;
                    Ok(())
                })
                .unwrap();
        }
        let want = count_loads(&store.tickets().unwrap());
        assert!(!want.is_empty());
        assert_eq!(store.agent_loads().unwrap(), want);
        // A store from before the counters: wipe them, rebuild at start.
        store
            .commit_blocking(None, |tx, _| {
                for a in AGENTS {
                    crate::store::Writes::put_agent_load(tx, a, &AgentLoad::default())?;
                }
                crate::store::Writes::put_agent_load(
                    tx,
                    "gone@desk.test",
                    &AgentLoad {
                        active: 7,
                        waiting: 0,
                        snoozed: 0,
                    },
                )
            })
            .unwrap();
        assert!(ensure_loads(&store).unwrap());
        assert_eq!(store.agent_loads().unwrap(), want);
        assert!(!ensure_loads(&store).unwrap(), "built once");
        store.close();
    }
}
