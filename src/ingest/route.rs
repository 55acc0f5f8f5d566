//! Routing a new customer ticket (issue #8, docs/policies.md): the routing
//! rules, then the owner — the rules' assignee, else the default owner
//! (customer's manager, category's `default_owner`), else distribution when
//! the category has one — then the rules' status.
//!
//! PURE like the rest of `ingest`: the compiled rules come in through the
//! `Context`, loads, away records and the round-robin cursor through the
//! `View` (point lookups: one per permitted agent and one per category);
//! what must be written (the category's distribution state) goes back in
//! the `Decision`.
//!
//! Rules run only for mail from outside that opens a ticket (a new ticket
//! or a follow-up of one done too long ago), as Daktela and Okdesk route on
//! creation: a reply never re-routes the ticket it joins, so an agent's
//! `#category` or reassignment is never undone by the customer's next mail.

use super::classify::Classification;
use super::decide::{plan_effects, token, Action, Context, Decision, Intent};
use super::{Envelope, Parsed};
use crate::config::{Category, Config, Distribution};
use crate::policy::{
    away_at, default_owner, distribute, evaluate, Assignee, DistributeInput, Distributed,
    RuleInput, Rules, RulesOutcome, Unavailable,
};
use crate::store::{DistState, Result, Status, Ticket, Timestamp, View};
use crate::workflow::command::Command;
use crate::workflow::ops;
use std::collections::{BTreeMap, BTreeSet};

/// Runs the rules over a mail as it arrives: the plus-tags come from the
/// envelope recipients (what the MTA handed over), the customer from
/// `identify` as already done for the decision.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_mail(
    rules: &Rules,
    p: &Parsed,
    env: &Envelope,
    sender: &str,
    customer: Option<&str>,
    own: &str,
    cfg: &Config,
    arrival: Timestamp,
) -> RulesOutcome {
    let plus_tags: Vec<String> = env
        .rcpt_to
        .iter()
        .filter_map(|r| cfg.support_tag(r))
        .filter(|t| !t.is_empty())
        .collect();
    let customer_category = customer
        .and_then(|c| cfg.customer_by_id(c))
        .and_then(|c| c.category.as_deref());
    evaluate(
        rules,
        &RuleInput {
            sender,
            customer,
            customer_category,
            plus_tags: &plus_tags,
            subject: &p.subject,
            body: own,
            headers: &p.headers,
            arrival,
            has_attachments: p.has_attachments,
        },
    )
}

/// The store key of a category's distribution state: its id, lower-cased;
/// `""` for the desk-wide pool (no category).
pub fn category_key(c: Option<&Category>) -> String {
    c.map(|c| c.id.to_ascii_lowercase()).unwrap_or_default()
}

/// Agents away at `now`: `vacation` days plus `#away` records, for the
/// agents asked about.
pub fn away_now(
    cfg: &Config,
    agents: &[String],
    view: &dyn View,
    now: Timestamp,
) -> Result<BTreeSet<String>> {
    let mut by_mail = BTreeSet::new();
    for a in agents {
        if view.agent_away(a)?.is_some_and(|w| w.covers(now)) {
            by_mail.insert(a.to_ascii_lowercase());
        }
    }
    Ok(away_at(cfg, now, &by_mail))
}

/// Runs `policy::distribute` for a category against the current loads,
/// away set and cursor. Returns the choice and the category's state as
/// read (the caller updates and writes it).
pub fn pick(
    cfg: &Config,
    category: Option<&Category>,
    view: &dyn View,
    now: Timestamp,
) -> Result<(Distributed, DistState, Distribution)> {
    let dist = category
        .map(Category::distribution_or_default)
        .unwrap_or_default();
    let agents = cfg.permitted_agents(category);
    let mut load = BTreeMap::new();
    for a in &agents {
        load.insert(
            a.to_ascii_lowercase(),
            view.agent_load(a)?.total(&dist.count),
        );
    }
    let away = away_now(cfg, &agents, view, now)?;
    let state = view.dist_state(&category_key(category))?;
    let d = distribute(&DistributeInput::new(
        &dist,
        &agents,
        &load,
        &away,
        state.cursor.as_deref(),
    ));
    Ok((d, state, dist))
}

/// Whether `agent` can take one more ticket of a category now: permitted,
/// not away, below the cap.
pub fn can_take(
    cfg: &Config,
    category: Option<&Category>,
    agent: &str,
    view: &dyn View,
    now: Timestamp,
) -> Result<bool> {
    let agent = agent.trim().to_ascii_lowercase();
    let agents = cfg.permitted_agents(category);
    if !agents.contains(&agent) {
        return Ok(false);
    }
    if away_now(cfg, std::slice::from_ref(&agent), view, now)?.contains(&agent) {
        return Ok(false);
    }
    let dist = category
        .map(Category::distribution_or_default)
        .unwrap_or_default();
    let load = view.agent_load(&agent)?.total(&dist.count);
    Ok(dist.max_open.is_none_or(|max| load < max))
}

/// `alice@example.com: full (10 of 10)`, for the leads' notice and explain.
pub fn passed_over_lines(d: &Distributed) -> Vec<String> {
    d.passed_over
        .iter()
        .map(|p| match p.why {
            Unavailable::Away => format!("{}: away", p.agent),
            Unavailable::Full { load, max_open } => {
                format!("{}: full ({load} of {max_open})", p.agent)
            }
        })
        .collect()
}

/// The full take process (notice, reminder, customer told once) for a
/// ticket the desk gives away; `by` is what the notice says assigned it.
fn give(
    t: &mut Ticket,
    agent: &str,
    by: String,
    cfg: &Config,
    now: Timestamp,
    d: &mut Decision,
) -> bool {
    match ops::apply(
        t,
        &Command::Assign {
            agent: agent.to_string(),
        },
        "postdesk",
        cfg,
        now,
    ) {
        Ok(fx) => {
            plan_effects(t, fx, cfg, d);
            d.notice_by = Some(by);
            true
        }
        Err(why) => {
            // Config validation makes every policy address an agent; a
            // config built in code might not be.
            d.warnings.push(format!(
                "routing could not give the ticket to {agent}: {why}"
            ));
            false
        }
    }
}

/// Distributes `t` among the category's agents; with nobody available it
/// waits in the category's queue and the leads hear of it once.
fn distribute_new(
    t: &mut Ticket,
    category: Option<&Category>,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    d: &mut Decision,
) -> Result<()> {
    let (picked, mut state, dist) = pick(cfg, category, view, now)?;
    let label = match category {
        Some(c) => format!("{}, {}", c.id, mode_name(&dist)),
        None => format!("all agents, {}", mode_name(&dist)),
    };
    let passed = passed_over_lines(&picked);
    let key = category_key(category);
    match picked.agent.as_deref() {
        Some(agent) => {
            if give(
                t,
                agent,
                format!("auto-distribution ({label})"),
                cfg,
                now,
                d,
            ) {
                d.owner = Some(format!("auto-distribution ({label}): {agent}"));
                state.cursor = picked.cursor.clone();
                state.leads_told = false;
            }
        }
        None => {
            let why = if passed.is_empty() {
                "no agent is permitted".to_string()
            } else {
                passed.join(", ")
            };
            d.owner = Some(format!(
                "auto-distribution ({label}): nobody available ({why}); the ticket waits for the first free agent"
            ));
            if !state.waiting.contains(&t.number) {
                state.waiting.push(t.number);
            }
            if picked.everyone_full() && !state.leads_told && !cfg.team.leads.is_empty() {
                state.leads_told = true;
                d.intents.push(Intent::Capacity {
                    to: cfg.team.leads.clone(),
                    category: category
                        .map(|c| c.display_name().to_string())
                        .unwrap_or_else(|| "all tickets".into()),
                    agents: passed,
                    waiting: state.waiting.len(),
                });
            }
        }
    }
    d.desk.dist.push((key, state));
    Ok(())
}

/// After `#escalate`: when the ticket's category distributes, the ticket
/// goes to one of the second-line group's members by the category's mode
/// and cap (the group keeps its own round-robin cursor, under the key
/// `group:<name>`); otherwise, or with every member away or full, it stays
/// unassigned in the group, whose notify list has been told. It does not
/// join a waiting queue: the group's notice is the call to take it.
pub fn distribute_escalated(
    t: &mut Ticket,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    d: &mut Decision,
) -> Result<()> {
    let Some(g) = t.group.as_deref().and_then(|g| cfg.group(g)) else {
        return Ok(());
    };
    let Some(dist) = t
        .category
        .as_deref()
        .and_then(|c| cfg.category(c))
        .and_then(|c| c.distribution.clone())
    else {
        return Ok(());
    };
    let pool = Category {
        id: format!("group:{}", g.name),
        agents: g.members.clone(),
        distribution: Some(dist),
        ..Category::default()
    };
    let (picked, mut state, dist) = pick(cfg, Some(&pool), view, now)?;
    let label = format!("{}, {}", g.name, mode_name(&dist));
    match picked.agent.as_deref() {
        Some(agent) => {
            if give(t, agent, format!("escalation ({label})"), cfg, now, d) {
                d.owner = Some(format!("escalation ({label}): {agent}"));
                state.cursor = picked.cursor.clone();
                d.desk.dist.push((category_key(Some(&pool)), state));
            }
        }
        None => {
            d.owner = Some(format!(
                "escalation ({label}): nobody available ({}); unassigned in {}",
                passed_over_lines(&picked).join(", "),
                g.name
            ));
        }
    }
    Ok(())
}

fn mode_name(d: &Distribution) -> &'static str {
    match d.mode {
        crate::config::DistributionMode::RoundRobin => "round robin",
        crate::config::DistributionMode::LeastLoaded => "least loaded",
    }
}

/// The rule that set the assignee, as `routing[3] "name"`.
fn assigning_rule(o: &RulesOutcome) -> String {
    o.trace
        .iter()
        .find(|r| r.reached && r.applied.iter().any(|a| a.starts_with("assignee ")))
        .map(|r| match &r.name {
            Some(n) => format!("routing[{}] {n:?}", r.index),
            None => format!("routing[{}]", r.index),
        })
        .unwrap_or_else(|| "routing".into())
}

/// Routes a new ticket opened by mail from outside. `t` is the ticket as
/// `new_ticket` built it (unassigned); returns `true` when a `drop` rule
/// matched: the ticket is then `deleted` and nothing may be sent.
#[allow(clippy::too_many_arguments)]
pub fn route_new(
    p: &Parsed,
    env: &Envelope,
    class: &Classification,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    ctx: &Context,
    own: &str,
    t: &mut Ticket,
    d: &mut Decision,
) -> Result<bool> {
    let outcome = ctx.rules.map(|r| {
        evaluate_mail(
            r,
            p,
            env,
            &class.sender,
            t.customer.as_deref(),
            own,
            cfg,
            now,
        )
    });
    let a = outcome
        .as_ref()
        .map(|o| o.actions.clone())
        .unwrap_or_default();
    let rule = outcome.as_ref().map(assigning_rule).unwrap_or_default();
    d.routing = outcome;
    if a.drop {
        t.status = Status::Deleted;
        d.action = Action::Drop;
        d.owner = Some("nobody: a drop rule matched".into());
        return Ok(true);
    }
    if let Some(c) = &a.category {
        t.category = Some(c.clone());
    }
    if let Some(p) = &a.priority {
        t.priority = p.clone();
    }
    for w in &a.watchers {
        if !t.watchers.contains(w) {
            t.watchers.push(w.clone());
        }
    }
    for tag in &a.tags {
        if !t.tags.contains(tag) {
            t.tags.push(tag.clone());
        }
    }
    let category = t.category.as_deref().and_then(|c| cfg.category(c));

    if let Some(s @ (Status::Done | Status::Closed)) = a.status {
        // Filed at once: nobody is asked to work it. A rule's own agent is
        // recorded as the owner, without notice or reminder.
        if let Some(Assignee::Agent(x)) = &a.assignee {
            t.assignee = Some(x.clone());
        }
        if let Some(Assignee::Group(g)) = &a.assignee {
            t.group = Some(g.clone());
        }
        t.status = s;
        t.ended_at = Some(now);
        d.owner = Some(format!("nobody asked: {rule} set status {}", s.as_str()));
        return Ok(false);
    }

    if ctx.history {
        // Importing history: who worked a ticket shows in its replies.
        d.owner = Some("not assigned: importing history".into());
    } else {
        match &a.assignee {
            Some(Assignee::Agent(x)) => {
                if give(t, x, format!("routing ({rule})"), cfg, now, d) {
                    d.owner = Some(format!("{rule}: {x}"));
                }
            }
            Some(Assignee::Group(g)) => {
                t.group = Some(g.clone());
                d.owner = Some(format!(
                    "{rule}: group {g} (unassigned within it; its notify list gets the team copy)"
                ));
            }
            Some(Assignee::Distribute) => distribute_new(t, category, cfg, view, now, d)?,
            None if a.status == Some(Status::Unassigned) => {
                d.owner = Some("nobody: the rules set status unassigned".into());
            }
            None => {
                let manager = t
                    .customer
                    .as_deref()
                    .and_then(|c| cfg.customer_by_id(c))
                    .and_then(|c| c.manager.as_deref());
                match default_owner(manager, category) {
                    Some(owner) => {
                        let why = match (manager, &t.customer, category) {
                            (Some(_), Some(c), _) => format!("{c}'s manager"),
                            (_, _, Some(c)) => format!("{}'s default owner", c.id),
                            _ => "default owner".into(),
                        };
                        if give(t, &owner, format!("routing ({why})"), cfg, now, d) {
                            d.owner = Some(format!("default owner ({why}): {owner}"));
                        }
                    }
                    None if category.is_some_and(|c| c.distribution.is_some()) => {
                        distribute_new(t, category, cfg, view, now, d)?
                    }
                    None => {}
                }
            }
        }
    }

    match a.status {
        Some(Status::Waiting) if t.assignee.is_some() => t.status = Status::Waiting,
        Some(s @ (Status::Waiting | Status::Active)) if t.assignee.is_none() => {
            d.warnings.push(format!(
                "{}: status {} needs an owner; the ticket stays unassigned",
                token(cfg, t.number),
                s.as_str()
            ));
        }
        _ => {}
    }
    Ok(false)
}
