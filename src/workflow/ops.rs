//! The ticket state machine (SPEC §5), pure: a ticket, a command, who gives
//! it, policy and `now` → the changed ticket and the effects to carry out
//! (mail to send, jobs to schedule). Mail commands, action links, the CLI
//! and the scheduler all come through here, so they cannot disagree.

use super::command::Command;
use crate::config::Config;
use crate::store::{Status, Ticket, Timestamp};
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
    t.assignee = Some(agent.clone());
    t.status = Status::Active;
    t.ended_at = None;
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
            vec![Effect::CancelScheduled]
        }
        Command::Waiting => {
            t.status = Status::Waiting;
            Vec::new()
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
            t.ended_at = None;
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
        // Handled by the delivery decision: they are about the mail (or
        // the agent), not the ticket's state.
        Command::Note | Command::Attach { .. } | Command::Away { .. } | Command::Back => Vec::new(),
    };
    Ok(fx)
}

/// A customer wrote on a done ticket within the window: back to work, and
/// the assignee hears of it.
pub fn reopen_by_customer(t: &mut Ticket) -> Vec<Effect> {
    t.status = Status::Active;
    t.ended_at = None;
    t.reopened = true;
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
    use crate::store::Direction;

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
            number: 1,
            status: Status::Unassigned,
            assignee: None,
            started_at: at(0),
            ended_at: None,
            subject: "s".into(),
            description: String::new(),
            contact: "mari@cust.test".into(),
            contact_name: None,
            customer: None,
            notified: false,
            reopened: false,
            replies: 0,
            last_direction: Direction::In,
            last_message_at: at(0),
            follow_up_of: None,
            followed_by: None,
            related: vec![],
            message_ids: vec![],
            participants: vec![],
            delivery_failures: vec![],
            language: "en".into(),
            scheduled: vec![],
            last_excerpt: String::new(),
            category: None,
            priority: "normal".into(),
            tags: Vec::new(),
            watchers: Vec::new(),
            group: None,
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
        assert_eq!(fx, vec![Effect::CancelScheduled]);
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
}
