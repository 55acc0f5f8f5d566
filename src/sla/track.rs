//! A ticket's SLA clocks (issue #9), PURE: every writer that changes a
//! ticket calls [`track`] just before writing it, so pauses, the first
//! response, the policy, the due times and the pending warn/breach jobs
//! follow every change in one place. docs/sla.md.
//!
//! `track` works from the ticket's state, not from what the caller did:
//! the pauses follow the status, the policy follows category, priority and
//! customer, the jobs follow the due times. That is what makes it
//! idempotent and lets every writer call it the same way.

use super::calendar::Clock;
use super::policy::pick_policy;
use crate::config::Config;
use crate::store::{JobKind, Pause, ScheduledRef, SlaJobRef, SlaTarget, Status, Ticket, Timestamp};

/// The jobs a ticket's SLA wants added and removed; the caller writes them
/// with the ticket (see `deliver::write_jobs`, which remembers the added
/// ones in `sla.jobs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaPlan {
    pub schedule: Vec<(Timestamp, JobKind)>,
    pub cancel: Vec<ScheduledRef>,
}

impl SlaPlan {
    pub fn is_empty(&self) -> bool {
        self.schedule.is_empty() && self.cancel.is_empty()
    }
}

/// Statuses in which the clock stands still. `done` stops it too: the
/// resolution is met there, and a reopen resumes it with what was left.
pub fn pausing(s: Status) -> bool {
    matches!(s, Status::Waiting | Status::Snoozed | Status::Done)
}

/// Brings `t`'s SLA state up to date at `now`. `first_response`: the
/// change being written is mail of an agent that reaches the customer
/// (an agent's reply with the contact in To/Cc, or an `#answer`), not a
/// note, ack or generated mail. Needs no read of the ticket as stored:
/// the open pause records the status the clock stopped in.
pub fn track(t: &mut Ticket, first_response: bool, cfg: &Config, now: Timestamp) -> SlaPlan {
    // Work starts when an agent first holds the ticket active, however it
    // came to them (take, Reply-All, routing, distribution, refill): the
    // state machine's take is only one of those paths.
    if t.work_started_at.is_none()
        && t.status == crate::store::Status::Active
        && t.assignee.is_some()
    {
        t.work_started_at = Some(now);
    }
    sync_pauses(t, now);
    if first_response && t.sla.first_response_at.is_none() {
        t.sla.first_response_at = Some(now);
    }
    compute_due(t, cfg);
    reconcile_jobs(t, cfg, now)
}

/// Pauses follow the status: a pausing status has exactly one open pause
/// of that status; any other status has none.
fn sync_pauses(t: &mut Ticket, now: Timestamp) {
    let status = t.status;
    for p in t.pauses.iter_mut() {
        if p.until.is_none() && p.status != status {
            p.until = Some(now.max(p.from));
        }
    }
    // A pause that opened and closed in the same instant is no pause.
    t.pauses.retain(|p| p.until != Some(p.from));
    let open = t.pauses.iter().any(|p| p.until.is_none());
    if pausing(status) && !open {
        // A ticket stored in a pausing status before pauses were kept has
        // none: its pause starts now, not at some guessed earlier time.
        t.pauses.push(Pause {
            from: now,
            until: None,
            status,
        });
    }
}

/// The policy and both due times. `None` due: no policy or target, the
/// target met, the clock paused, or the ticket closed or deleted.
fn compute_due(t: &mut Ticket, cfg: &Config) {
    let customer_category = t
        .customer
        .as_deref()
        .and_then(|c| cfg.customer_by_id(c))
        .and_then(|c| c.category.as_deref());
    let policy = pick_policy(
        &cfg.sla,
        t.category.as_deref(),
        Some(t.priority.as_str()),
        t.customer.as_deref(),
        customer_category,
    );
    t.sla.policy = policy.map(|p| p.id.clone());
    let ended = matches!(t.status, Status::Closed | Status::Deleted);
    let cal = match policy {
        Some(p) if !ended => cfg.loaded_calendars.for_policy(p),
        _ => None,
    };
    let pauses: Vec<(Timestamp, Option<Timestamp>)> =
        t.pauses.iter().map(|p| (p.from, p.until)).collect();
    let due = |target: Option<crate::config::Duration>| -> Option<Timestamp> {
        let (cal, target) = (cal.as_ref()?, target?);
        match cal.due_with_pauses(t.started_at, target.signed(), &pauses) {
            Clock::Due(at) => Some(at),
            Clock::Paused { .. } => None,
        }
    };
    let fr = if t.sla.first_response_at.is_some() {
        None
    } else {
        due(policy.and_then(|p| p.first_response))
    };
    let res = due(policy.and_then(|p| p.resolution));
    t.sla.first_response_due = fr;
    t.sla.resolution_due = res;
}

/// The current due time of a target.
pub fn due_of(t: &Ticket, target: SlaTarget) -> Option<Timestamp> {
    match target {
        SlaTarget::FirstResponse => t.sla.first_response_due,
        SlaTarget::Resolution => t.sla.resolution_due,
    }
}

/// One wanted job: (breach?, target, deadline) identifies it; `at` is when
/// it runs.
struct Want {
    breach: bool,
    target: SlaTarget,
    deadline: Timestamp,
    at: Timestamp,
}

fn wanted(t: &Ticket, cfg: &Config, now: Timestamp) -> Vec<Want> {
    let mut out = Vec::new();
    for target in [SlaTarget::FirstResponse, SlaTarget::Resolution] {
        let Some(deadline) = due_of(t, target) else {
            continue;
        };
        if t.sla.breaches.iter().any(|(x, _)| *x == target) {
            continue;
        }
        // A deadline already past gets no warning: the breach covers it.
        let warned = t.sla.warned.contains(&(target, deadline));
        if deadline > now && !warned {
            let at = deadline
                .checked_sub(cfg.sla.warn_before.signed())
                .unwrap_or(deadline)
                .max(now);
            out.push(Want {
                breach: false,
                target,
                deadline,
                at,
            });
        }
        out.push(Want {
            breach: true,
            target,
            deadline,
            at: deadline,
        });
    }
    out
}

/// Cancels the remembered jobs no longer wanted and asks for the missing
/// ones. A job is matched by what it is for, not by when it runs, so a
/// warning put at `now` because the deadline was near is not moved on the
/// next call.
fn reconcile_jobs(t: &mut Ticket, cfg: &Config, now: Timestamp) -> SlaPlan {
    let mut want = wanted(t, cfg, now);
    let mut plan = SlaPlan::default();
    let mut keep = Vec::new();
    for j in t.sla.jobs.drain(..) {
        let hit = want
            .iter()
            .position(|w| w.breach == j.breach && w.target == j.target && w.deadline == j.deadline);
        match hit {
            Some(i) => {
                want.remove(i);
                keep.push(j);
            }
            None => plan.cancel.push(j.scheduled()),
        }
    }
    t.sla.jobs = keep;
    for w in want {
        let kind = if w.breach {
            JobKind::SlaBreach {
                ticket: t.number,
                target: w.target,
                due: w.deadline,
            }
        } else {
            JobKind::SlaWarn {
                ticket: t.number,
                target: w.target,
                due: w.deadline,
            }
        };
        plan.schedule.push((w.at, kind));
    }
    plan
}

/// What a scheduled SLA job is for, as `sla.jobs` remembers it; `None` for
/// other jobs or another ticket's.
pub fn job_ref(t: &Ticket, r: ScheduledRef, kind: &JobKind) -> Option<SlaJobRef> {
    let (ticket, target, deadline, breach) = kind.sla_deadline()?;
    (ticket == t.number).then_some(SlaJobRef {
        id: r.id,
        due: r.due,
        target,
        breach,
        deadline,
    })
}

/// Whether a decision's mail is a first response: an agent's mail that
/// reached the customer, or a canned answer sent to them.
pub fn is_first_response(d: &crate::ingest::decide::Decision) -> bool {
    d.kind == crate::store::MessageKind::Agent
        || d.intents
            .iter()
            .any(|i| matches!(i, crate::ingest::decide::Intent::Answer { .. }))
}

/// Runs [`track`] over everything a decision writes: its ticket, the
/// other ticket it changes, and a merged-away ticket, adding their jobs to
/// the decision's. History (import) records the clocks but schedules
/// nothing.
pub fn track_decision(
    d: &mut crate::ingest::decide::Decision,
    cfg: &Config,
    now: Timestamp,
    history: bool,
) {
    let first = is_first_response(d);
    let mut plans = Vec::new();
    if let Some(t) = d.ticket.as_mut() {
        plans.push(track(t, first, cfg, now));
    }
    if let Some(t) = d.also.as_mut() {
        plans.push(track(t, false, cfg, now));
    }
    if let Some(m) = d.merge.as_mut() {
        let p = track(&mut m.merged, false, cfg, now);
        m.cancel.extend(p.cancel);
    }
    for p in plans {
        d.cancel.extend(p.cancel);
        if !history {
            d.schedule.extend(p.schedule);
        }
    }
}

/// Whether a new config can change an existing ticket's clocks: its SLA
/// policies, calendars, or what picks a policy (customers' categories).
pub fn clocks_changed(old: &Config, new: &Config) -> bool {
    old.sla != new.sla
        || old.calendars != new.calendars
        || old.loaded_calendars != new.loaded_calendars
        || old.customers != new.customers
}

/// Open tickets handed to one transaction when clocks are re-tracked:
/// small enough that deliveries waiting behind it hardly notice.
const RETRACK_BATCH: usize = 200;

/// Re-tracks every open ticket under `cfg` after a reload changed the SLA
/// policies or calendars, so due times and pending warn/breach jobs follow
/// the new targets at once instead of at each ticket's next write.
/// Streams the ticket numbers, then commits in small batches; returns how
/// many tickets changed.
pub async fn retrack_open(
    store: &crate::store::Store,
    cfg: std::sync::Arc<Config>,
) -> crate::store::Result<usize> {
    let mut open = Vec::new();
    store.for_each_ticket(|t| {
        if t.status.is_open() {
            open.push(t.number);
        }
    })?;
    let mut changed = 0;
    for batch in open.chunks(RETRACK_BATCH) {
        let batch = batch.to_vec();
        let cfg = cfg.clone();
        let now = Timestamp::now();
        changed += store
            .commit(None, move |tx, _| {
                let mut n = 0;
                for &number in &batch {
                    let Some(mut t) = crate::store::View::ticket(tx, number)? else {
                        continue;
                    };
                    if !t.status.is_open() {
                        continue;
                    }
                    let before = t.clone();
                    let plan = track(&mut t, false, &cfg, now);
                    if plan.is_empty() && t == before {
                        continue;
                    }
                    crate::deliver::write_jobs(tx, &mut t, &plan.cancel, &plan.schedule, now)?;
                    tx.put_ticket(&t)?;
                    n += 1;
                }
                Ok(n)
            })
            .await?;
    }
    Ok(changed)
}

#[cfg(test)]
#[path = "track_tests.rs"]
mod tests;
