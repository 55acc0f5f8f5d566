//! The ticket state machine (SPEC §5), pure: a ticket, a command, who gives
//! it, policy and `now` → the changed ticket and the effects to carry out
//! (mail to send, jobs to schedule). Mail commands, action links, the CLI
//! and the scheduler all come through here, so they cannot disagree.

use super::command::Command;
use crate::config::Config;
use crate::store::{Escalation, Status, Ticket, Timestamp};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The agent took it, or was given it.
    Assigned,
    /// A customer wrote again on a done ticket.
    Reopened,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Mail the assignee: summary, last mail, done/release/snooze links.
    NotifyAssignee {
        agent: String,
        notice: Notice,
    },
    /// Tell the customer, once, that the question was taken into work.
    TellCustomerTaken,
    /// Remove every pending reminder and wake-up of the ticket.
    CancelScheduled,
    ScheduleReminder {
        agent: String,
        at: Timestamp,
    },
    ScheduleWake {
        at: Timestamp,
    },
    /// Remember the customer of an address (`#customer`).
    Learn {
        address: String,
        customer: String,
    },
    /// The ticket went to a second-line group: tell the group, and
    /// distribute it among its members when the category distributes.
    Escalated {
        group: String,
    },
    /// Tell the customer of a status change, when `status_notices` says so.
    TellCustomer {
        notice: super::close::StatusNotice,
    },
    /// `policy.confirm_close`: close resolution `resolution` by itself at
    /// `at` unless the customer confirmed or reopened it first.
    ScheduleAutoClose {
        at: Timestamp,
        resolution: u32,
    },
}

/// The roster address an agent name means: an address on the roster, or
/// the local part of exactly one roster address.
pub fn resolve_agent(name: &str, cfg: &Config) -> Result<String, String> {
    let name = name.trim().to_ascii_lowercase();
    let roster: Vec<String> = cfg
        .team
        .agents
        .iter()
        .map(|a| a.email.to_ascii_lowercase())
        .collect();
    if roster.contains(&name) {
        return Ok(name);
    }
    let by_local: Vec<&String> = roster
        .iter()
        .filter(|a| a.split('@').next() == Some(name.as_str()))
        .collect();
    match by_local.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "{name} is not an agent on the roster ({})",
            roster.join(", ")
        )),
        _ => Err(format!("{name} matches several agents; give the address")),
    }
}

/// When the assignee's reminder is due: `reminder_after` from the ticket's
/// start, or at once if that moment has already passed.
fn reminder_at(t: &Ticket, cfg: &Config, now: Timestamp) -> Timestamp {
    let at = t
        .started_at
        .checked_add(cfg.policy.reminder_after.signed())
        .unwrap_or(now);
    at.max(now)
}

fn assign(t: &mut Ticket, agent: String, cfg: &Config, now: Timestamp) -> Vec<Effect> {
    if t.assignee.as_deref() == Some(agent.as_str()) && t.status == Status::Active {
        // Taking what is already yours changes nothing and sends nothing.
        return Vec::new();
    }
    if t.status == Status::Done || t.status == Status::Closed {
        t.reopen_count = t.reopen_count.saturating_add(1);
    }
    t.assignee = Some(agent.clone());
    t.status = Status::Active;
    t.ended_at = None;
    if t.work_started_at.is_none() {
        t.work_started_at = Some(now);
    }
    let mut fx = vec![
        Effect::CancelScheduled,
        Effect::ScheduleReminder {
            agent: agent.clone(),
            at: reminder_at(t, cfg, now),
        },
        Effect::NotifyAssignee {
            agent,
            notice: Notice::Assigned,
        },
    ];
    if !t.notified {
        t.notified = true;
        fx.push(Effect::TellCustomerTaken);
    }
    fx
}

/// Applies `cmd` given by `actor` (a roster address, or "cli:…"). `Err` is
/// the refusal text the actor gets back; the ticket is then unchanged.
pub fn apply(
    t: &mut Ticket,
    cmd: &Command,
    actor: &str,
    cfg: &Config,
    now: Timestamp,
) -> Result<Vec<Effect>, String> {
    if cmd.is_about_the_agent() {
        // `#away` / `#back` change the agent, not the ticket; the decision
        // records them whatever the ticket's state.
        return Ok(Vec::new());
    }
    if t.status == Status::Deleted && !matches!(cmd, Command::Reopen | Command::Note) {
        return Err("the ticket is deleted (spam); #reopen it first".into());
    }
    if t.status == Status::Closed
        && !matches!(
            cmd,
            Command::Reopen | Command::Note | Command::Customer { .. }
        )
    {
        return Err("the ticket is closed and read-only; #reopen it first".into());
    }
    let fx = match cmd {
        Command::Take => {
            let agent = resolve_agent(actor, cfg).map_err(|_| {
                format!("{actor} is not an agent on the roster, so cannot take tickets")
            })?;
            assign(t, agent, cfg, now)
        }
        Command::Assign { agent } => {
            let agent = resolve_agent(agent, cfg)?;
            assign(t, agent, cfg, now)
        }
        Command::Release => {
            t.assignee = None;
            t.status = Status::Unassigned;
            t.ended_at = None;
            vec![Effect::CancelScheduled]
        }
        Command::Done => {
            if t.status == Status::Done {
                return Ok(Vec::new());
            }
            t.status = Status::Done;
            t.ended_at = Some(now);
            t.resolutions = t.resolutions.saturating_add(1);
            let mut fx = vec![
                Effect::CancelScheduled,
                Effect::TellCustomer {
                    notice: super::close::StatusNotice::Done,
                },
            ];
            if cfg.policy.confirm_close {
                fx.push(Effect::ScheduleAutoClose {
                    at: now
                        .checked_add(cfg.policy.autoclose_after.signed())
                        .unwrap_or(now),
                    resolution: t.resolutions,
                });
            }
            fx
        }
        Command::Waiting => {
            if t.status == Status::Waiting {
                return Ok(Vec::new());
            }
            t.status = Status::Waiting;
            vec![Effect::TellCustomer {
                notice: super::close::StatusNotice::Waiting,
            }]
        }
        Command::Snooze { until } => {
            t.status = Status::Snoozed;
            vec![Effect::ScheduleWake { at: *until }]
        }
        Command::Spam => {
            t.status = Status::Deleted;
            vec![Effect::CancelScheduled]
        }
        Command::Customer { id } => {
            t.customer = Some(id.clone());
            vec![Effect::Learn {
                address: t.contact.clone(),
                customer: id.clone(),
            }]
        }
        Command::Reopen => {
            if t.status.is_open() {
                return Ok(Vec::new());
            }
            if matches!(t.status, Status::Done | Status::Closed) {
                t.reopen_count = t.reopen_count.saturating_add(1);
            }
            t.ended_at = None;
            t.closed_at = None;
            match t.assignee.clone() {
                Some(a) => {
                    t.status = Status::Active;
                    vec![Effect::ScheduleReminder {
                        agent: a,
                        at: reminder_at(t, cfg, now),
                    }]
                }
                None => {
                    t.status = Status::Unassigned;
                    Vec::new()
                }
            }
        }
        Command::Category { id } => {
            let c = cfg.category(id).ok_or_else(|| {
                format!(
                    "{id:?} is not a category ({})",
                    crate::config::known_categories(cfg)
                )
            })?;
            t.category = Some(c.id.clone());
            Vec::new()
        }
        Command::Priority { id } => {
            let p = cfg.priority(id).ok_or_else(|| {
                format!(
                    "{id:?} is not a priority ({})",
                    crate::config::known_priorities(cfg)
                )
            })?;
            t.priority = p.id.clone();
            Vec::new()
        }
        Command::Tag { add, remove } => {
            t.tags
                .retain(|x| !remove.iter().any(|r| r.eq_ignore_ascii_case(x)));
            for a in add {
                if !t.tags.iter().any(|x| x.eq_ignore_ascii_case(a)) {
                    t.tags.push(a.clone());
                }
            }
            Vec::new()
        }
        Command::Watch => {
            let me = resolve_agent(actor, cfg)
                .map_err(|_| format!("{actor} is not an agent on the roster, so cannot watch"))?;
            add_watcher(t, &me);
            Vec::new()
        }
        Command::Cc { agent } => {
            let a = resolve_agent(agent, cfg)?;
            add_watcher(t, &a);
            Vec::new()
        }
        Command::Unwatch => {
            let me = actor.trim().to_ascii_lowercase();
            t.watchers.retain(|w| *w != me);
            Vec::new()
        }
        Command::Escalate { group } => escalate(t, group.as_deref(), cfg, now)?,
        Command::Deescalate => deescalate(t, cfg, now)?,
        // Handled by the delivery decision: they are about the mail (or
        // the agent), or need what only the decision has (the answers, the
        // macros), not the ticket's state.
        Command::Note
        | Command::Attach { .. }
        | Command::Away { .. }
        | Command::Back
        | Command::Answer { .. }
        | Command::Macro { .. }
        | Command::Merge { .. } => Vec::new(),
    };
    Ok(fx)
}

fn add_watcher(t: &mut Ticket, agent: &str) {
    let a = agent.trim().to_ascii_lowercase();
    if !a.is_empty() && !t.watchers.contains(&a) {
        t.watchers.push(a);
    }
}

/// `#escalate [group]`: the ticket leaves its holder for a second-line
/// group, unassigned within it; the holder keeps watching. Where it came
/// from is kept (across repeated escalations, the first line stays the
/// first) so `#deescalate` can return it.
fn escalate(
    t: &mut Ticket,
    group: Option<&str>,
    cfg: &Config,
    now: Timestamp,
) -> Result<Vec<Effect>, String> {
    if !t.status.is_open() {
        return Err(format!(
            "the ticket is {}; #reopen it before escalating",
            t.status
        ));
    }
    let name = match group {
        Some(g) => g.to_string(),
        None => t
            .category
            .as_deref()
            .and_then(|c| cfg.category(c))
            .and_then(|c| c.second_line.clone())
            .ok_or_else(|| match &t.category {
                Some(c) => format!(
                    "category {c} has no second_line group; name one: #escalate <group>"
                ),
                None => "the ticket has no category, so no second_line group; name one: #escalate <group>".to_string(),
            })?,
    };
    let g = cfg.group(&name).ok_or_else(|| {
        let known: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
        format!("{name:?} is not a group ({})", known.join(", "))
    })?;
    if t.escalated.as_ref().is_some_and(|e| e.group == g.name) {
        return Err(format!("the ticket is already escalated to {}", g.name));
    }
    let (first_line, first_group) = match t.escalated.take() {
        Some(e) => (e.first_line, e.first_group),
        None => (t.assignee.clone(), t.group.clone()),
    };
    if let Some(a) = t.assignee.take() {
        add_watcher(t, &a);
    }
    t.escalated = Some(Escalation {
        group: g.name.clone(),
        first_line,
        first_group,
        at: now,
    });
    t.group = Some(g.name.clone());
    t.status = Status::Unassigned;
    Ok(vec![
        Effect::CancelScheduled,
        Effect::Escalated {
            group: g.name.clone(),
        },
    ])
}

/// `#deescalate`: back to the first-line agent (the full take process) if
/// they are still on the roster, else unassigned in the first line.
fn deescalate(t: &mut Ticket, cfg: &Config, now: Timestamp) -> Result<Vec<Effect>, String> {
    let Some(e) = t.escalated.take() else {
        return Err("the ticket is not escalated".into());
    };
    if !t.status.is_open() {
        t.escalated = Some(e);
        return Err(format!(
            "the ticket is {}; #reopen it before returning it",
            t.status
        ));
    }
    t.group = e.first_group;
    let back = e
        .first_line
        .as_deref()
        .and_then(|a| resolve_agent(a, cfg).ok());
    match back {
        Some(agent) => {
            // Theirs again: the assignee notice replaces the watcher's copy.
            t.watchers.retain(|w| *w != agent);
            t.assignee = None;
            Ok(assign(t, agent, cfg, now))
        }
        None => {
            t.assignee = None;
            t.status = Status::Unassigned;
            Ok(vec![Effect::CancelScheduled])
        }
    }
}

/// A customer wrote on a done ticket within the window: back to work, and
/// the assignee hears of it.
pub fn reopen_by_customer(t: &mut Ticket) -> Vec<Effect> {
    t.status = Status::Active;
    t.ended_at = None;
    t.reopened = true;
    t.reopen_count = t.reopen_count.saturating_add(1);
    match &t.assignee {
        Some(a) => vec![Effect::NotifyAssignee {
            agent: a.clone(),
            notice: Notice::Reopened,
        }],
        None => {
            t.status = Status::Unassigned;
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            "support: {address: support@example.com}\nteam:\n  agents: [{email: alice@example.com}, {email: bob@example.com}]\npolicy: {reminder_after: 3d}\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn ticket() -> Ticket {
        Ticket {
            subject: "s".into(),
            contact: "mari@cust.test".into(),
            ..Ticket::new(1, at(0), "en")
        }
    }

    #[test]
    fn take_assigns_reminds_notifies_and_tells_the_customer_once() {
        let c = cfg();
        let mut t = ticket();
        let fx = apply(&mut t, &Command::Take, "alice@example.com", &c, at(10)).unwrap();
        assert_eq!(
            (t.status, t.assignee.as_deref(), t.notified),
            (Status::Active, Some("alice@example.com"), true)
        );
        assert!(fx.contains(&Effect::TellCustomerTaken));
        assert!(fx.contains(&Effect::ScheduleReminder {
            agent: "alice@example.com".into(),
            at: at(3 * 86400)
        }));
        // Redirect to bob: the full process for bob, the customer not told again.
        let fx = apply(
            &mut t,
            &Command::Assign {
                agent: "bob".into(),
            },
            "alice@example.com",
            &c,
            at(20),
        )
        .unwrap();
        assert_eq!(t.assignee.as_deref(), Some("bob@example.com"));
        assert!(!fx.contains(&Effect::TellCustomerTaken));
        assert!(fx.contains(&Effect::NotifyAssignee {
            agent: "bob@example.com".into(),
            notice: Notice::Assigned
        }));
        // Taking it again changes nothing.
        assert!(apply(&mut t, &Command::Take, "bob@example.com", &c, at(30))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn done_release_snooze_spam() {
        let c = cfg();
        let mut t = ticket();
        apply(&mut t, &Command::Take, "alice@example.com", &c, at(1)).unwrap();
        let fx = apply(&mut t, &Command::Done, "alice@example.com", &c, at(2)).unwrap();
        assert_eq!((t.status, t.ended_at), (Status::Done, Some(at(2))));
        assert_eq!(
            fx,
            vec![
                Effect::CancelScheduled,
                Effect::TellCustomer {
                    notice: crate::workflow::close::StatusNotice::Done
                }
            ]
        );
        apply(&mut t, &Command::Release, "alice@example.com", &c, at(3)).unwrap();
        assert_eq!(
            (t.status, t.assignee.clone(), t.ended_at),
            (Status::Unassigned, None, None)
        );
        let fx = apply(
            &mut t,
            &Command::Snooze { until: at(99) },
            "alice@example.com",
            &c,
            at(4),
        )
        .unwrap();
        assert_eq!(
            (t.status, fx),
            (Status::Snoozed, vec![Effect::ScheduleWake { at: at(99) }])
        );
        apply(&mut t, &Command::Spam, "alice@example.com", &c, at(5)).unwrap();
        assert_eq!(t.status, Status::Deleted);
        assert!(apply(&mut t, &Command::Done, "alice@example.com", &c, at(6)).is_err());
    }

    #[test]
    fn unknown_agents_are_refused() {
        let c = cfg();
        let mut t = ticket();
        let e = apply(
            &mut t,
            &Command::Assign {
                agent: "zed".into(),
            },
            "alice@example.com",
            &c,
            at(1),
        )
        .unwrap_err();
        assert!(e.contains("not an agent"), "{e}");
        assert_eq!(t.status, Status::Unassigned);
        assert!(apply(&mut t, &Command::Take, "mallory@evil.test", &c, at(1)).is_err());
    }

    #[test]
    fn reminder_in_the_past_fires_now() {
        let c = cfg();
        let mut t = ticket();
        let fx = apply(
            &mut t,
            &Command::Take,
            "alice@example.com",
            &c,
            at(5 * 86400),
        )
        .unwrap();
        assert!(fx.contains(&Effect::ScheduleReminder {
            agent: "alice@example.com".into(),
            at: at(5 * 86400)
        }));
    }

    #[test]
    fn work_start_resolutions_and_reopens_are_counted() {
        let c = cfg();
        let mut t = ticket();
        apply(&mut t, &Command::Take, "alice@example.com", &c, at(10)).unwrap();
        assert_eq!(t.work_started_at, Some(at(10)));
        apply(&mut t, &Command::Done, "alice@example.com", &c, at(20)).unwrap();
        assert_eq!((t.resolutions, t.reopen_count), (1, 0));
        // Done twice is one resolution.
        apply(&mut t, &Command::Done, "alice@example.com", &c, at(21)).unwrap();
        assert_eq!(t.resolutions, 1);
        reopen_by_customer(&mut t);
        assert_eq!(t.reopen_count, 1);
        apply(&mut t, &Command::Done, "alice@example.com", &c, at(30)).unwrap();
        apply(&mut t, &Command::Reopen, "alice@example.com", &c, at(40)).unwrap();
        assert_eq!((t.resolutions, t.reopen_count), (2, 2));
        // A later take (by someone else) keeps the first start of work.
        apply(&mut t, &Command::Done, "alice@example.com", &c, at(50)).unwrap();
        apply(&mut t, &Command::Take, "bob@example.com", &c, at(60)).unwrap();
        assert_eq!((t.work_started_at, t.reopen_count), (Some(at(10)), 3));
    }
}
