//! Fair auto-distribution (issue #8 §3), pure: the caller counts the load,
//! knows who is away, and persists the round-robin cursor per category.
//!
//! Both modes walk the permitted agents in rotation: starting just after
//! the cursor (the agent given the previous ticket), wrapping around. An
//! agent who is away, or whose load has reached `max_open`, is passed over.
//! `round_robin` gives the ticket to the first one left; `least_loaded` to
//! the one with the lowest load, ties going to the earliest in the rotation
//! (so equal agents take turns rather than the first in the config taking
//! every tie). With no one left the ticket stays unassigned and the cursor
//! does not move; the next call, after someone's load drops or someone
//! returns, picks them up without any other bookkeeping.

use crate::config::{Config, Distribution, DistributionMode};
use crate::store::model::Status;
use jiff::Timestamp;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy)]
pub struct DistributeInput<'a> {
    /// Permitted agents in config order, groups expanded
    /// (`Config::permitted_agents`). Compared case-insensitively.
    pub agents: &'a [String],
    /// Tickets each agent holds in the counted statuses
    /// (`counts_as_load`), keyed by lower-cased address; absent = 0.
    pub load: &'a BTreeMap<String, u32>,
    /// Lower-cased addresses of agents away now (`away_at`).
    pub away: &'a BTreeSet<String>,
    pub mode: DistributionMode,
    /// `None` = no cap.
    pub max_open: Option<u32>,
    /// The agent given the category's previous ticket.
    pub cursor: Option<&'a str>,
}

impl<'a> DistributeInput<'a> {
    /// Mode and cap from a category's `distribution`.
    pub fn new(
        d: &Distribution,
        agents: &'a [String],
        load: &'a BTreeMap<String, u32>,
        away: &'a BTreeSet<String>,
        cursor: Option<&'a str>,
    ) -> Self {
        DistributeInput {
            agents,
            load,
            away,
            mode: d.mode,
            max_open: d.max_open,
            cursor,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "why")]
pub enum Unavailable {
    Away,
    Full { load: u32, max_open: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassedOver {
    pub agent: String,
    #[serde(flatten)]
    pub why: Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Distributed {
    /// Lower-cased; `None` when every permitted agent is away or full (or
    /// none is permitted).
    pub agent: Option<String>,
    /// Persist this as the next call's cursor.
    pub cursor: Option<String>,
    /// The agents not eligible and why, in rotation order, for `explain`.
    pub passed_over: Vec<PassedOver>,
}

impl Distributed {
    /// Nobody got the ticket because of the cap (at least one permitted
    /// agent is present but full): the case that earns the team leads
    /// their notice.
    pub fn everyone_full(&self) -> bool {
        self.agent.is_none()
            && self
                .passed_over
                .iter()
                .any(|p| matches!(p.why, Unavailable::Full { .. }))
    }
}

pub fn distribute(input: &DistributeInput<'_>) -> Distributed {
    let agents: Vec<String> = {
        let mut v: Vec<String> = Vec::with_capacity(input.agents.len());
        for a in input.agents {
            let a = a.trim().to_ascii_lowercase();
            if !a.is_empty() && !v.contains(&a) {
                v.push(a);
            }
        }
        v
    };
    let start = input
        .cursor
        .and_then(|c| agents.iter().position(|a| a.eq_ignore_ascii_case(c.trim())))
        .map(|i| i + 1)
        .unwrap_or(0);
    let n = agents.len();
    let mut passed_over = Vec::new();
    let mut eligible: Vec<(&String, u32)> = Vec::with_capacity(n);
    for k in 0..n {
        let a = &agents[(start + k) % n];
        let load = input.load.get(a).copied().unwrap_or(0);
        if input.away.contains(a) {
            passed_over.push(PassedOver {
                agent: a.clone(),
                why: Unavailable::Away,
            });
        } else if let Some(max) = input.max_open.filter(|&m| load >= m) {
            passed_over.push(PassedOver {
                agent: a.clone(),
                why: Unavailable::Full {
                    load,
                    max_open: max,
                },
            });
        } else {
            eligible.push((a, load));
        }
    }
    let pick = match input.mode {
        DistributionMode::RoundRobin => eligible.first(),
        // `min_by_key` keeps the first of equal minima: the earliest in
        // the rotation.
        DistributionMode::LeastLoaded => eligible.iter().min_by_key(|(_, load)| *load),
    }
    .map(|(a, _)| (*a).clone());
    Distributed {
        cursor: pick
            .clone()
            .or_else(|| input.cursor.map(|c| c.trim().to_ascii_lowercase())),
        agent: pick,
        passed_over,
    }
}

/// Whether a ticket in `status` counts toward its assignee's load.
pub fn counts_as_load(d: &Distribution, status: Status) -> bool {
    d.count
        .iter()
        .any(|c| c.eq_ignore_ascii_case(status.as_str()))
}

/// Agents away at `at`: those whose `vacation` covers that day in the desk's
/// time zone, plus those away by mail (`#away until …`, tracked by the
/// caller).
pub fn away_at(cfg: &Config, at: Timestamp, away_by_mail: &BTreeSet<String>) -> BTreeSet<String> {
    let day = at.to_zoned(cfg.desk_timezone()).date();
    let mut away = cfg.on_vacation(day);
    away.extend(away_by_mail.iter().map(|a| a.trim().to_ascii_lowercase()));
    away
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn run(
        agents: &[String],
        load: &BTreeMap<String, u32>,
        away: &BTreeSet<String>,
        mode: DistributionMode,
        max_open: Option<u32>,
        cursor: Option<&str>,
    ) -> Distributed {
        distribute(&DistributeInput {
            agents,
            load,
            away,
            mode,
            max_open,
            cursor,
        })
    }

    #[test]
    fn round_robin_goes_after_the_cursor_and_wraps() {
        let agents = names(&["a@x", "b@x", "c@x"]);
        let (load, away) = (BTreeMap::new(), BTreeSet::new());
        let mut cursor: Option<String> = None;
        let mut got = Vec::new();
        for _ in 0..5 {
            let d = run(
                &agents,
                &load,
                &away,
                DistributionMode::RoundRobin,
                None,
                cursor.as_deref(),
            );
            got.push(d.agent.clone().unwrap());
            cursor = d.cursor;
        }
        assert_eq!(got, names(&["a@x", "b@x", "c@x", "a@x", "b@x"]));
    }

    #[test]
    fn a_cursor_no_longer_permitted_starts_from_the_top() {
        let agents = names(&["a@x", "b@x"]);
        let d = run(
            &agents,
            &BTreeMap::new(),
            &BTreeSet::new(),
            DistributionMode::RoundRobin,
            None,
            Some("gone@x"),
        );
        assert_eq!(d.agent.as_deref(), Some("a@x"));
    }

    #[test]
    fn away_and_full_agents_are_passed_over_with_reasons() {
        let agents = names(&["A@x", "b@x", "c@x"]);
        let load = BTreeMap::from([("b@x".to_string(), 2)]);
        let away = BTreeSet::from(["a@x".to_string()]);
        let d = run(
            &agents,
            &load,
            &away,
            DistributionMode::RoundRobin,
            Some(2),
            None,
        );
        assert_eq!(d.agent.as_deref(), Some("c@x"));
        assert_eq!(
            d.passed_over,
            vec![
                PassedOver {
                    agent: "a@x".into(),
                    why: Unavailable::Away
                },
                PassedOver {
                    agent: "b@x".into(),
                    why: Unavailable::Full {
                        load: 2,
                        max_open: 2
                    }
                },
            ]
        );
    }

    #[test]
    fn least_loaded_breaks_ties_in_rotation_order() {
        let agents = names(&["a@x", "b@x", "c@x"]);
        let load = BTreeMap::from([("a@x".to_string(), 1), ("b@x".to_string(), 1)]);
        let away = BTreeSet::new();
        let ll = DistributionMode::LeastLoaded;
        assert_eq!(
            run(&agents, &load, &away, ll, None, None).agent.as_deref(),
            Some("c@x")
        );
        let load = BTreeMap::from([("c@x".to_string(), 1)]);
        // a and b tie at 0: after cursor b the rotation is c, a, b.
        assert_eq!(
            run(&agents, &load, &away, ll, None, Some("b@x"))
                .agent
                .as_deref(),
            Some("a@x")
        );
    }

    #[test]
    fn everyone_full_gives_none_keeps_the_cursor_and_resumes_after_a_close() {
        let agents = names(&["a@x", "b@x"]);
        let mut load = BTreeMap::from([("a@x".to_string(), 3), ("b@x".to_string(), 3)]);
        let away = BTreeSet::new();
        for mode in [DistributionMode::RoundRobin, DistributionMode::LeastLoaded] {
            let d = run(&agents, &load, &away, mode, Some(3), Some("a@x"));
            assert_eq!(d.agent, None);
            assert!(d.everyone_full());
            assert_eq!(d.cursor.as_deref(), Some("a@x"));
        }
        load.insert("a@x".into(), 2);
        for mode in [DistributionMode::RoundRobin, DistributionMode::LeastLoaded] {
            let d = run(&agents, &load, &away, mode, Some(3), Some("a@x"));
            assert_eq!(d.agent.as_deref(), Some("a@x"));
        }
    }

    #[test]
    fn everyone_away_is_not_everyone_full() {
        let agents = names(&["a@x"]);
        let away = BTreeSet::from(["a@x".to_string()]);
        let d = run(
            &agents,
            &BTreeMap::new(),
            &away,
            DistributionMode::RoundRobin,
            Some(1),
            None,
        );
        assert_eq!(d.agent, None);
        assert!(!d.everyone_full());
        let none: Vec<String> = Vec::new();
        let d = run(
            &none,
            &BTreeMap::new(),
            &BTreeSet::new(),
            DistributionMode::LeastLoaded,
            None,
            None,
        );
        assert_eq!(d.agent, None);
    }

    #[test]
    fn vacation_and_mail_away_make_the_away_set() {
        let text = "support: {address: s@x.test}\npolicy:\n  business_hours: {timezone: Europe/Tallinn}\nteam:\n  agents:\n    - email: A@x.test\n      vacation: [{from: 2026-07-01, until: 2026-07-14}]\n    - email: b@x.test\n";
        let cfg = Config::parse(text, "t.yaml").unwrap();
        let by_mail = BTreeSet::from(["B@x.test".to_string()]);
        // 2026-06-30 22:30 UTC is already July 1st in Tallinn.
        let at: Timestamp = "2026-06-30T22:30:00Z".parse().unwrap();
        assert_eq!(
            away_at(&cfg, at, &by_mail),
            BTreeSet::from(["a@x.test".to_string(), "b@x.test".to_string()])
        );
        let after: Timestamp = "2026-07-15T08:00:00Z".parse().unwrap();
        assert_eq!(away_at(&cfg, after, &BTreeSet::new()), BTreeSet::new());
    }

    #[test]
    fn the_result_serializes_for_json_output() {
        let agents = names(&["a@x", "b@x"]);
        let load = BTreeMap::from([("b@x".to_string(), 1)]);
        let away = BTreeSet::from(["a@x".to_string()]);
        let d = run(
            &agents,
            &load,
            &away,
            DistributionMode::RoundRobin,
            Some(1),
            None,
        );
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"agent":null,"cursor":null,"passed_over":[{"agent":"a@x","why":"away"},{"agent":"b@x","why":"full","load":1,"max_open":1}]}"#
        );
    }

    #[test]
    fn load_counts_the_configured_statuses() {
        let d = Distribution::default();
        assert!(counts_as_load(&d, Status::Active));
        assert!(!counts_as_load(&d, Status::Waiting));
        assert!(!counts_as_load(&d, Status::Snoozed));
    }

    /// One scripted step: a new ticket, or closing one of an agent's.
    #[derive(Debug, Clone)]
    enum Step {
        Ticket,
        Close(usize),
        /// Toggle whether agent i is away.
        Away(usize),
    }

    fn steps(closes: bool, away: bool) -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec((0u8..10, 0usize..8), 1000).prop_map(move |v| {
            v.into_iter()
                .map(|(k, i)| match k {
                    6..=8 if closes => Step::Close(i),
                    9 if away => Step::Away(i),
                    _ => Step::Ticket,
                })
                .collect()
        })
    }

    struct Desk {
        agents: Vec<String>,
        load: BTreeMap<String, u32>,
        away: BTreeSet<String>,
        cursor: Option<String>,
    }

    impl Desk {
        fn new(n: usize) -> Desk {
            Desk {
                agents: (0..n).map(|i| format!("agent{i}@desk.test")).collect(),
                load: BTreeMap::new(),
                away: BTreeSet::new(),
                cursor: None,
            }
        }
        fn load(&self, a: &str) -> u32 {
            self.load.get(a).copied().unwrap_or(0)
        }
        fn assign(&mut self, mode: DistributionMode, max_open: Option<u32>) -> Distributed {
            let d = distribute(&DistributeInput {
                agents: &self.agents,
                load: &self.load,
                away: &self.away,
                mode,
                max_open,
                cursor: self.cursor.as_deref(),
            });
            if let Some(a) = &d.agent {
                *self.load.entry(a.clone()).or_default() += 1;
            }
            self.cursor = d.cursor.clone();
            d
        }
        fn close(&mut self, i: usize) -> Option<String> {
            let a = self.agents[i % self.agents.len()].clone();
            let l = self.load.entry(a.clone()).or_default();
            (*l > 0).then(|| {
                *l -= 1;
                a
            })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Round robin, nobody closes, nobody at a cap: loads never differ
        /// by more than one, after every one of 1,000 tickets.
        #[test]
        fn round_robin_is_even_over_1000_tickets(n in 1usize..8, s in steps(false, false)) {
            let mut desk = Desk::new(n);
            for _ in s {
                let d = desk.assign(DistributionMode::RoundRobin, None);
                prop_assert!(d.agent.is_some());
                let loads: Vec<u32> = desk.agents.iter().map(|a| desk.load(a)).collect();
                let (max, min) = (loads.iter().max().copied().unwrap_or(0), loads.iter().min().copied().unwrap_or(0));
                prop_assert!(max - min <= 1, "loads {loads:?}");
            }
        }

        /// Both modes, random closes and absences, a cap: nobody is ever
        /// given a ticket at or above the cap or while away; a None means
        /// every present agent is full; and after a close that frees the
        /// only present agent below the cap, the next ticket goes to them.
        #[test]
        fn cap_and_away_hold_over_1000_scripted_tickets(
            n in 1usize..8,
            cap in 1u32..6,
            least in any::<bool>(),
            s in steps(true, true),
        ) {
            let mode = if least { DistributionMode::LeastLoaded } else { DistributionMode::RoundRobin };
            let mut desk = Desk::new(n);
            let mut was_full = false;
            for step in s {
                match step {
                    Step::Ticket => {
                        let before: BTreeMap<String, u32> = desk.agents.iter().map(|a| (a.clone(), desk.load(a))).collect();
                        let d = desk.assign(mode, Some(cap));
                        match &d.agent {
                            Some(a) => {
                                prop_assert!(before[a] < cap, "{a} had {} of {cap}", before[a]);
                                prop_assert!(!desk.away.contains(a), "{a} is away");
                                if least {
                                    let lowest = desk.agents.iter()
                                        .filter(|x| !desk.away.contains(*x) && before[*x] < cap)
                                        .map(|x| before[x]).min();
                                    prop_assert_eq!(Some(before[a]), lowest);
                                }
                                was_full = false;
                            }
                            None => {
                                prop_assert!(desk.agents.iter().all(|x| desk.away.contains(x) || before[x] >= cap));
                                was_full = d.everyone_full();
                            }
                        }
                    }
                    Step::Close(i) => {
                        let closed = desk.close(i);
                        if let Some(a) = closed {
                            if was_full && !desk.away.contains(&a) {
                                let d = desk.assign(mode, Some(cap));
                                prop_assert_eq!(d.agent.as_deref(), Some(a.as_str()));
                                was_full = false;
                            }
                        }
                    }
                    Step::Away(i) => {
                        let a = desk.agents[i % n].clone();
                        if !desk.away.remove(&a) {
                            desk.away.insert(a);
                        }
                        was_full = false;
                    }
                }
            }
        }
    }
}
