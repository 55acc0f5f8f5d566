//! The SLA warn and breach jobs (issue #9): run by the scheduler in one
//! transaction each, which also removed the job, so each fires once.
//!
//! A job carries the deadline it was scheduled for; it acts only while
//! that is still the ticket's due time for its target (not met, paused,
//! moved or closed since). `sla.warned` and `sla.breaches` make sure no
//! deadline is warned of or reported twice, even if a job for it were
//! scheduled again.

use super::track::due_of;
use crate::config::Config;
use crate::ingest::decide::LinkSigner;
use crate::render::Templates;
use crate::schedule::Fired;
use crate::store::{Job, Ticket, Timestamp, Writes};

/// Who hears about a deadline: the assignee, or while nobody has the
/// ticket its group's members, or every agent when it has no group.
pub fn responsible(t: &Ticket, cfg: &Config) -> Vec<String> {
    if let Some(a) = t.assignee.as_deref().filter(|a| !a.trim().is_empty()) {
        return vec![a.trim().to_ascii_lowercase()];
    }
    let members: Vec<String> = match t.group.as_deref().and_then(|g| cfg.group(g)) {
        Some(g) => g.members.clone(),
        None => cfg.team.agents.iter().map(|a| a.email.clone()).collect(),
    };
    let mut out: Vec<String> = Vec::new();
    for m in members {
        let m = m.trim().to_ascii_lowercase();
        if !m.is_empty() && !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// Runs a `SlaWarn` or `SlaBreach` job (already taken from the queue).
pub fn run(
    tx: &dyn Writes,
    job: &Job,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> crate::store::Result<Fired> {
    let (ticket, target, due, breach) = match job.kind.sla_deadline() {
        Some(x) => x,
        None => return Ok(Fired::Skipped("not an SLA job")),
    };
    let Some(mut t) = tx.ticket(ticket)? else {
        return Ok(Fired::Skipped("ticket gone"));
    };
    t.sla.jobs.retain(|j| j.id != job.id);
    let skip = if due_of(&t, target) != Some(due) {
        Some("deadline met, paused or moved")
    } else if t.sla.breaches.iter().any(|(x, _)| *x == target) {
        Some("already breached")
    } else if !breach && t.sla.warned.contains(&(target, due)) {
        Some("already warned")
    } else if !breach && now >= due {
        // Downtime carried the warning past its deadline: the breach
        // notice, due at the same deadline, says it all.
        Some("deadline passed before the warning went out")
    } else {
        None
    };
    if let Some(why) = skip {
        tx.put_ticket(&t)?;
        return Ok(Fired::Skipped(why));
    }
    let mut to = responsible(&t, cfg);
    if breach {
        crate::metrics::sla_breach(target.as_str());
        t.sla.breaches.push((target, due));
        t.sla.breached = true;
        for l in &cfg.team.leads {
            let l = l.trim().to_ascii_lowercase();
            if !l.is_empty() && !to.contains(&l) {
                to.push(l);
            }
        }
    } else {
        crate::metrics::sla_warning(target.as_str());
        t.sla.warned.push((target, due));
    }
    let sent = if to.is_empty() {
        0
    } else {
        let mail =
            crate::render::sla::notice(breach, &to, &t, target, due, job.id, cfg, tpl, signer, now);
        tx.index_thread_key(&mail.message_id, t.number)?;
        tx.add_outbox(mail)?;
        1
    };
    tx.put_ticket(&t)?;
    Ok(Fired::Sent(sent))
}
