//! Property tests for threading (SPEC §3.4, §3.8; STYLE §6): generated
//! conversations decided and applied over the in-memory store, the way
//! `deliver` does it.
//!
//! A conversation is a root and a tree of replies. Each reply has
//! `In-Reply-To` its parent and `References` the chain from the root to the
//! parent, trimmed as RFC 5322 §3.6.4 suggests (the root id and the last
//! ids kept) and sometimes reordered by a sloppy client. In an Outlook
//! conversation every message carries a `Thread-Index` (the root's 22 bytes,
//! plus 5 per level), and some replies carry nothing else. Strangers (an
//! address never in From/To/Cc of a ticket, at a domain of their own or a
//! public provider) quote ticket tokens; some messages are delivered twice.
//!
//! Invariants: a thread delivered in any order ends in one ticket; two
//! unrelated threads never share one; a stranger's token never attaches; a
//! duplicate changes nothing; `decide` is deterministic.
//!
//! What the generator leaves out, because in some orders no rule of the SPEC
//! can join the messages (these are not bugs):
//! - Replies with only `In-Reply-To` (no `References`): C answers B answers
//!   A, delivered C, A, B. C opens a ticket holding C and B; A shares no id
//!   with it and opens a second; B then has keys in both (it joins A's by
//!   In-Reply-To, C's is only "related"). So every reply here carries
//!   `References` with the root, as RFC 5322 trimming keeps it.
//! - A conversation mixing Outlook-only replies (Thread-Index, no ids) with
//!   messages that carry no Thread-Index: if such a message comes first and
//!   the Outlook-only reply next, nothing links them. So in an Outlook
//!   conversation every message carries the Thread-Index (as Outlook and
//!   Exchange do); in the others none does.
//! - Strangers each have a domain of their own (or a public provider):
//!   two strangers at one private domain are colleagues by the SPEC's rule
//!   (an address at the contact's domain may use the token).

use super::decide::{decide, Action, Decision};
use super::{Addr, Envelope, Parsed};
use crate::config::Config;
use crate::deliver::apply;
use crate::render::{render_all, Templates};
use crate::store::mem::MemStore;
use crate::store::{SpoolRef, Timestamp, View};
use proptest::prelude::*;
use proptest::sample::Index;
use std::collections::{BTreeMap, BTreeSet};

fn cfg() -> Config {
    Config::parse(
        r#"
support: {address: support@example.com}
team:
  domains: [example.com]
  agents: [{email: alice@example.com}, {email: bob@example.com}]
policy: {reopen_within: 14d, ack_rate_limit: 3}
customers:
  - {id: ACME, domains: [acme.test]}
"#,
        "test.yaml",
    )
    .unwrap()
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

/// The longest References a reply carries: the root plus the last ids.
const REFS_KEPT: usize = 4;

/// One conversation's shape, before it is given ids and addresses.
#[derive(Debug, Clone)]
struct ThreadSpec {
    /// `parents[i - 1] % i` is the parent of node `i` (shrinks to a flat
    /// thread: every reply to the root).
    parents: Vec<usize>,
    /// Every message carries a Thread-Index.
    outlook: bool,
    /// Per reply (outlook only): Thread-Index and nothing else.
    outlook_only: Vec<bool>,
    /// Per node: 0 = the contact, 1 = a colleague, 2 = staff (not the root).
    senders: Vec<u8>,
    /// Per node: References in a scrambled order.
    scrambled: Vec<bool>,
    /// Per node: a colleague in Cc.
    cc: Vec<bool>,
    /// The customer is at a public provider.
    public: bool,
    /// The root's Thread-Index after its first byte, and each reply's 5 bytes.
    ti_root: Vec<u8>,
    ti_tails: Vec<[u8; 5]>,
}

fn thread_spec() -> impl Strategy<Value = ThreadSpec> {
    (1usize..=7).prop_flat_map(|n| {
        (
            prop::collection::vec(any::<usize>(), n - 1),
            any::<bool>(),
            prop::collection::vec(prop::bool::weighted(0.4), n),
            prop::collection::vec(0u8..=2, n),
            prop::collection::vec(prop::bool::weighted(0.2), n),
            prop::collection::vec(any::<bool>(), n),
            prop::bool::weighted(0.3),
            prop::collection::vec(any::<u8>(), 21),
            prop::collection::vec(any::<[u8; 5]>(), n),
        )
            .prop_map(
                |(
                    parents,
                    outlook,
                    outlook_only,
                    senders,
                    scrambled,
                    cc,
                    public,
                    ti_root,
                    ti_tails,
                )| {
                    ThreadSpec {
                        parents,
                        outlook,
                        outlook_only,
                        senders,
                        scrambled,
                        cc,
                        public,
                        ti_root,
                        ti_tails,
                    }
                },
            )
    })
}

fn addr(e: &str) -> Addr {
    Addr::new(e)
}

/// Gives thread `k` its ids, addresses and headers.
fn build_thread(k: usize, spec: &ThreadSpec) -> Vec<Parsed> {
    let n = spec.parents.len() + 1;
    let domain = if spec.public {
        "gmail.com".to_string()
    } else {
        format!("cust{k}.test")
    };
    let people = [
        format!("mari.t{k}@{domain}"),
        format!("jaan.t{k}@{domain}"),
        "alice@example.com".to_string(),
    ];
    let parent: Vec<usize> = std::iter::once(0)
        .chain(spec.parents.iter().enumerate().map(|(i, r)| r % (i + 1)))
        .collect();
    let id = |i: usize| format!("t{k}.m{i}@{domain}");
    // Distinct per thread (first byte), so conversations never collide.
    let mut ti: Vec<Vec<u8>> = Vec::with_capacity(n);
    let mut msgs = Vec::with_capacity(n);
    for i in 0..n {
        let mut chain = Vec::new();
        if i > 0 {
            let mut a = parent[i];
            loop {
                chain.push(id(a));
                if a == 0 {
                    break;
                }
                a = parent[a];
            }
            chain.reverse();
        }
        if chain.len() > REFS_KEPT {
            let tail = chain.split_off(chain.len() - (REFS_KEPT - 1));
            chain.truncate(1);
            chain.extend(tail);
        }
        if spec.scrambled[i] {
            chain.reverse();
        }
        let index = if i == 0 {
            let mut root = vec![k as u8];
            root.extend_from_slice(&spec.ti_root);
            root
        } else {
            let mut child = ti[parent[i]].clone();
            child.extend_from_slice(&spec.ti_tails[i]);
            child
        };
        ti.push(index.clone());
        let sender = if i == 0 { 0 } else { spec.senders[i] as usize };
        let from = people[sender].clone();
        let mut to = vec![addr("support@example.com")];
        if sender == 2 {
            // Staff answer the contact (a Reply-All).
            to.push(addr(&people[0]));
        }
        let cc = if spec.cc[i] {
            vec![addr(&people[if sender == 1 { 0 } else { 1 }])]
        } else {
            Vec::new()
        };
        let only_ti = i > 0 && spec.outlook && spec.outlook_only[i];
        let mut p = Parsed {
            message_id: id(i),
            subject: match (i, spec.outlook) {
                (0, _) => format!("Topic {k}"),
                (_, true) => format!("RE: Topic {k}"),
                (_, false) => format!("Re: Topic {k}"),
            },
            from: Some(addr(&from)),
            to,
            cc,
            text: format!("message {i} of thread {k}"),
            content_type: "text/plain".into(),
            thread_index: spec.outlook.then_some(index),
            ..Default::default()
        };
        if i > 0 && !only_ti {
            p.in_reply_to = vec![id(parent[i])];
            p.references = chain;
        }
        p.content_hash = format!("hash-of-{}", p.message_id);
        msgs.push(p);
    }
    msgs
}

/// A stranger quoting ticket `token`'s token.
fn stranger(j: usize, public: bool, token: u64) -> Parsed {
    let domain = if public {
        "gmail.com".to_string()
    } else {
        format!("evil{j}.test")
    };
    let id = format!("stranger{j}@{domain}");
    Parsed {
        message_id: id.clone(),
        subject: format!("Re: Topic [SUP-{token}]"),
        from: Some(addr(&format!("eve{j}@{domain}"))),
        to: vec![addr("support@example.com")],
        text: "give me that ticket".into(),
        content_type: "text/plain".into(),
        content_hash: format!("hash-of-{id}"),
        ..Default::default()
    }
}

/// One step of a delivery sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Thread, node. A step seen twice is a duplicate delivery.
    Msg(usize, usize),
    /// Stranger number, public provider, quoted ticket number.
    Stranger(usize, bool, u64),
}

#[derive(Debug, Clone)]
struct Scenario {
    threads: Vec<ThreadSpec>,
    steps: Vec<Step>,
}

fn scenario(max_threads: usize, strangers: bool) -> impl Strategy<Value = Scenario> {
    prop::collection::vec(thread_spec(), 1..=max_threads).prop_flat_map(move |threads| {
        let mut steps = Vec::new();
        for (k, t) in threads.iter().enumerate() {
            for i in 0..=t.parents.len() {
                steps.push(Step::Msg(k, i));
            }
        }
        let total = steps.len();
        let dups = prop::collection::vec(any::<Index>(), 0..=3);
        let strangers = if strangers {
            prop::collection::vec((any::<bool>(), 1u64..=4), 0..=3).boxed()
        } else {
            Just(Vec::new()).boxed()
        };
        (Just(threads), Just(steps), dups, strangers).prop_flat_map(
            move |(threads, mut steps, dups, strangers)| {
                for d in dups {
                    steps.push(steps[d.index(total)].clone());
                }
                for (j, (public, token)) in strangers.into_iter().enumerate() {
                    steps.push(Step::Stranger(j, public, token));
                }
                (Just(threads), Just(steps).prop_shuffle())
                    .prop_map(|(threads, steps)| Scenario { threads, steps })
            },
        )
    })
}

/// Decides and applies like `deliver` does, on the in-memory store.
fn deliver(s: &MemStore, cfg: &Config, tpl: &Templates, p: &Parsed, now: Timestamp) -> Decision {
    let env = Envelope {
        mail_from: p.from.as_ref().map(|a| a.email.clone()).unwrap_or_default(),
        rcpt_to: vec!["support@example.com".into()],
    };
    let d = decide(p, &env, cfg, s, now).unwrap();
    // Deterministic: the same state gives the same decision.
    assert_eq!(
        d,
        decide(p, &env, cfg, s, now).unwrap(),
        "decide differs on the same state"
    );
    let mails = render_all(&d, p, cfg, tpl, now);
    let raw = SpoolRef {
        file: 1,
        offset: 0,
        len: 1,
        check: 0,
    };
    apply(s, &d, p, mails, raw, now).unwrap();
    d
}

/// What a run left behind, for the properties to check.
struct Run {
    store: MemStore,
    threads: Vec<Vec<Parsed>>,
    /// (step, decision, store before, store after), in delivery order.
    log: Vec<(Step, Decision, String, String)>,
}

fn run(sc: &Scenario) -> Run {
    let (cfg, tpl) = (cfg(), Templates::builtin());
    let threads: Vec<Vec<Parsed>> = sc
        .threads
        .iter()
        .enumerate()
        .map(|(k, t)| build_thread(k, t))
        .collect();
    let store = MemStore::new();
    let mut log = Vec::new();
    for (i, step) in sc.steps.iter().enumerate() {
        let p = match step {
            Step::Msg(k, n) => threads[*k][*n].clone(),
            Step::Stranger(j, public, token) => stranger(*j, *public, *token),
        };
        let before = format!("{:?}", store.data.borrow());
        let d = deliver(&store, &cfg, &tpl, &p, at(i as i64 * 60));
        let after = format!("{:?}", store.data.borrow());
        log.push((step.clone(), d, before, after));
    }
    Run {
        store,
        threads,
        log,
    }
}

/// The ticket holding a received message (by its Message-ID in `message_ids`).
fn ticket_of(s: &MemStore, id: &str) -> Option<u64> {
    s.tickets()
        .into_iter()
        .find(|t| t.message_ids.iter().any(|m| m == id))
        .map(|t| t.number)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// One thread, any order (with duplicates): one ticket holding all of it.
    #[test]
    fn a_thread_in_any_order_is_one_ticket(sc in scenario(1, false)) {
        let r = run(&sc);
        let tickets = r.store.tickets();
        prop_assert_eq!(tickets.len(), 1, "order: {:?}", sc.steps);
        let all: BTreeSet<&str> = r.threads[0].iter().map(|m| m.message_id.as_str()).collect();
        let held: BTreeSet<&str> = tickets[0].message_ids.iter().map(String::as_str).collect();
        prop_assert_eq!(held, all);
        for m in &r.threads[0] {
            prop_assert_eq!(r.store.ticket_by_key(&m.message_id).unwrap(), Some(tickets[0].number));
        }
    }

    /// Several threads interleaved: each is one ticket, no two share one,
    /// and strangers' mail never lands in a thread's ticket.
    #[test]
    fn unrelated_threads_never_share_a_ticket(sc in scenario(3, true)) {
        let r = run(&sc);
        let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
        for (k, msgs) in r.threads.iter().enumerate() {
            let ts: BTreeSet<Option<u64>> = msgs.iter().map(|m| ticket_of(&r.store, &m.message_id)).collect();
            prop_assert_eq!(ts.len(), 1, "thread {} spread over {:?}; order {:?}", k, ts, sc.steps);
            let t = ts.into_iter().next().flatten();
            prop_assert!(t.is_some(), "thread {} has no ticket", k);
            let t = t.unwrap_or_default();
            if let Some(other) = owner.insert(t, k) {
                prop_assert!(false, "threads {} and {} share ticket {}", other, k, t);
            }
        }
    }

    /// A stranger quoting a token never joins that ticket, learns nothing
    /// of it, and changes nothing on it.
    #[test]
    fn a_strangers_token_never_attaches(sc in scenario(2, true)) {
        let r = run(&sc);
        for (step, d, before, after) in &r.log {
            let Step::Stranger(j, _, token) = step else { continue };
            prop_assert_eq!(d.action, Action::New, "stranger {} quoting SUP-{}: {:?}", j, token, d.thread);
            prop_assert!(d.new_ticket);
            prop_assert_ne!(d.thread.rule, crate::ingest::thread::Rule::Token);
            let quoted_before = ticket_in(before, *token);
            let quoted_after = ticket_in(after, *token);
            // The quoted ticket is untouched (it may not exist, or may be the
            // stranger's own new one when the number was the next free one).
            if d.ticket.as_ref().map(|t| t.number) != Some(*token) {
                prop_assert_eq!(quoted_before, quoted_after);
            }
        }
        // No stranger is a participant of any ticket but their own.
        for t in r.store.tickets() {
            let strangers: Vec<&String> = t.participants.iter().filter(|p| p.starts_with("eve")).collect();
            prop_assert!(strangers.len() <= 1 && (strangers.is_empty() || t.contact == *strangers[0]),
                "ticket {} has stranger participants {:?}", t.number, strangers);
        }
    }

    /// A second delivery of the same message changes nothing at all.
    #[test]
    fn a_duplicate_changes_nothing(sc in scenario(2, false)) {
        let r = run(&sc);
        let mut seen = Vec::new();
        for (step, d, before, after) in &r.log {
            if seen.contains(step) {
                prop_assert_eq!(d.action, Action::Duplicate, "{:?}", step);
                prop_assert!(d.intents.is_empty());
                prop_assert!(before == after, "duplicate {:?} changed the store", step);
            } else {
                prop_assert_ne!(d.action, Action::Duplicate, "{:?}", step);
                seen.push(step.clone());
            }
        }
    }

    /// The same deliveries on a fresh store give the same decisions and the
    /// same final state (and each `decide` is checked twice in `deliver`).
    #[test]
    fn decide_is_deterministic(sc in scenario(2, true)) {
        let (a, b) = (run(&sc), run(&sc));
        prop_assert_eq!(format!("{:?}", a.store.data.borrow()), format!("{:?}", b.store.data.borrow()));
        let da: Vec<&Decision> = a.log.iter().map(|l| &l.1).collect();
        let db: Vec<&Decision> = b.log.iter().map(|l| &l.1).collect();
        prop_assert_eq!(da, db);
    }
}

/// The Debug text of ticket `n` inside a `Data` Debug dump; `None` if absent.
/// Comparing text keeps this independent of which fields `Data` grows.
fn ticket_in(dump: &str, n: u64) -> Option<String> {
    let start = dump.find(&format!("{n}: Ticket {{ number: {n},"))?;
    let rest = &dump[start..];
    let end = rest.find(", language:").unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

#[test]
fn generator_builds_trimmed_references_and_thread_index_children() {
    let spec = ThreadSpec {
        // A chain: 0 ← 1 ← 2 ← … ← 6.
        parents: (0..6).collect(),
        outlook: true,
        outlook_only: vec![false; 7],
        senders: vec![0; 7],
        scrambled: vec![false; 7],
        cc: vec![false; 7],
        public: false,
        ti_root: vec![7; 21],
        ti_tails: vec![[1, 2, 3, 4, 5]; 7],
    };
    let msgs = build_thread(0, &spec);
    let p6 = &msgs[6];
    let parent = &p6.in_reply_to[0];
    let refs = &p6.references;
    assert_eq!(refs.len(), REFS_KEPT, "{refs:?}");
    assert_eq!(refs[0], msgs[0].message_id, "root kept");
    assert_eq!(refs.last(), Some(parent), "parent last");
    let depth = |p: &Parsed| (p.thread_index.as_ref().unwrap().len() - 22) / 5;
    assert_eq!(depth(&msgs[0]), 0);
    let ti6 = p6.thread_index.as_ref().unwrap();
    assert_eq!(&ti6[..22], &msgs[0].thread_index.as_ref().unwrap()[..]);
}
