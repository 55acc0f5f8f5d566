//! The durable scheduler: reminders, snooze wake-ups, reports and the
//! daily digest.
//!
//! Jobs live in the store (`s/` keys, due-ordered), written in the same
//! transaction as the decision that made them. This task sleeps until the
//! earliest due time (or until woken when a delivery scheduled something),
//! and runs each due job in one transaction that also removes the job: it
//! fires once, and a job that came due while postdesk was down runs late
//! rather than never. Reports and the digest need every ticket, which a
//! transaction cannot scan, so the tickets are read just before.

use crate::config::Config;
use crate::ingest::decide::LinkSigner;
use crate::render::{desk, Templates};
use crate::shutdown::Shutdown;
use crate::store::{Job, JobKind, ScheduledRef, Status, Store, Timestamp, Writes};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub type Current = Arc<dyn Fn() -> (Arc<Config>, Arc<Templates>) + Send + Sync>;

/// What one job did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    Sent(usize),
    /// The job no longer applied (ticket done, reassigned, woken already).
    Skipped(&'static str),
    Gone,
}

/// The next time `digest_at` ("08:00 Europe/Tallinn", or "08:00" for UTC)
/// comes after `now`.
pub fn next_digest(digest_at: &str, now: Timestamp) -> Result<Timestamp, String> {
    let mut parts = digest_at.split_whitespace();
    let time = parts.next().unwrap_or("");
    let tz = parts.next().unwrap_or("UTC");
    let time: jiff::civil::Time = time
        .parse()
        .map_err(|e| format!("policy.digest_at: {time:?} is not a time of day like 08:00 ({e})"))?;
    let tz = jiff::tz::TimeZone::get(tz)
        .map_err(|e| format!("policy.digest_at: {tz:?} is not a time zone ({e})"))?;
    let today = now.to_zoned(tz.clone()).date();
    for days in 0..3 {
        let date = today
            .checked_add(jiff::Span::new().days(days))
            .map_err(|e| e.to_string())?;
        let at = date
            .to_datetime(time)
            .to_zoned(tz.clone())
            .map_err(|e| e.to_string())?
            .timestamp();
        if at > now {
            return Ok(at);
        }
    }
    Err("policy.digest_at: no next occurrence".into())
}

/// Makes sure exactly one digest job is pending when `policy.digest_at` is
/// set (at start, and after each digest the job schedules the next).
pub async fn ensure_digest(store: &Store, cfg: &Config) -> Result<(), String> {
    let Some(at) = cfg.policy.digest_at.clone() else {
        return Ok(());
    };
    let pending = store
        .jobs()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|j| j.kind == JobKind::Digest);
    if pending {
        return Ok(());
    }
    let now = Timestamp::now();
    let due = next_digest(&at, now)?;
    store
        .commit(None, move |tx, _| tx.add_job(due, JobKind::Digest, now))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(due = %due, "digest scheduled");
    Ok(())
}

/// Runs one job inside one transaction; `tickets` is a fresh read of every
/// ticket for reports and the digest. Their created/resolved chart counts
/// `tickets` only; the scheduler uses [`run_job_with`] and a count over
/// the whole store.
pub fn run_job(
    tx: &dyn Writes,
    job: &Job,
    tickets: &[crate::store::Ticket],
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> crate::store::Result<Fired> {
    let flow = crate::render::charts::Flow::of(
        now,
        crate::render::charts::desk_zone(cfg),
        job_category(&job.kind),
        tickets,
    );
    run_job_with(tx, job, tickets, &flow, cfg, tpl, signer, now)
}

/// The category a report job is about, for its charts.
fn job_category(k: &JobKind) -> Option<&str> {
    match k {
        JobKind::Report { category, .. } => category.as_deref(),
        _ => None,
    }
}

/// Reads what a report or the digest needs in one pass over the store:
/// the open tickets, and the created/resolved counts of every ticket
/// (streamed: closed tickets are counted, never held).
fn read_for_report(
    store: &Store,
    kind: &JobKind,
    cfg: &Config,
    now: Timestamp,
) -> crate::store::Result<(Vec<crate::store::Ticket>, crate::render::charts::Flow)> {
    let mut flow = crate::render::charts::Flow::new(
        now,
        crate::render::charts::desk_zone(cfg),
        job_category(kind),
    );
    let mut open = Vec::new();
    store.for_each_ticket(|t| {
        flow.add(&t);
        if t.status.is_open() {
            open.push(t);
        }
    })?;
    Ok((open, flow))
}

/// [`run_job`] with the chart counts read beside `tickets`.
#[allow(clippy::too_many_arguments)]
pub fn run_job_with(
    tx: &dyn Writes,
    job: &Job,
    tickets: &[crate::store::Ticket],
    flow: &crate::render::charts::Flow,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> crate::store::Result<Fired> {
    let r = ScheduledRef {
        id: job.id,
        due: job.due,
    };
    let Some(job) = tx.take_job(r)? else {
        return Ok(Fired::Gone);
    };
    match &job.kind {
        JobKind::SlaWarn { .. } | JobKind::SlaBreach { .. } => {
            crate::sla::jobs::run(tx, &job, cfg, tpl, signer, now)
        }
        JobKind::AutoClose { .. } => {
            crate::workflow::close::run_autoclose(tx, &job, cfg, tpl, signer, now)
        }
        JobKind::Retention => crate::retention::run_job(tx, &job, cfg, now),
        JobKind::Reminder { ticket, agent } => {
            let Some(mut t) = tx.ticket(*ticket)? else {
                return Ok(Fired::Skipped("ticket gone"));
            };
            t.scheduled.retain(|s| s.id != job.id);
            tx.put_ticket(&t)?;
            if t.status != Status::Active || t.assignee.as_deref() != Some(agent.as_str()) {
                return Ok(Fired::Skipped("no longer active with that agent"));
            }
            tx.add_outbox(desk::reminder(agent, &t, job.id, cfg, tpl, signer, now))?;
            Ok(Fired::Sent(1))
        }
        JobKind::Wake { ticket } => {
            let Some(mut t) = tx.ticket(*ticket)? else {
                return Ok(Fired::Skipped("ticket gone"));
            };
            t.scheduled.retain(|s| s.id != job.id);
            let woke = t.status == Status::Snoozed;
            if woke {
                t.status = Status::Active;
            }
            let sla = crate::sla::track::track(&mut t, false, cfg, now);
            crate::deliver::write_jobs(tx, &mut t, &sla.cancel, &sla.schedule, now)?;
            tx.put_ticket(&t)?;
            Ok(if woke {
                Fired::Sent(0)
            } else {
                Fired::Skipped("not snoozed any more")
            })
        }
        JobKind::Report {
            to,
            all,
            in_reply_to,
            subject,
            category,
        } => {
            let mail = desk::report(
                to,
                *all,
                category.as_deref(),
                in_reply_to,
                subject,
                tickets,
                cfg,
                tpl,
                signer,
                flow,
                now,
            );
            tx.add_outbox(mail)?;
            Ok(Fired::Sent(1))
        }
        JobKind::Digest => {
            let mut n = 0;
            for lead in &cfg.team.leads {
                tx.add_outbox(desk::digest(lead, tickets, cfg, tpl, flow, now))?;
                n += 1;
            }
            // The next one, once: a digest missed during downtime is sent
            // late, not once per missed day.
            if let Some(at) = &cfg.policy.digest_at {
                if let Ok(next) = next_digest(at, now) {
                    tx.add_job(next, JobKind::Digest, now)?;
                }
            }
            Ok(Fired::Sent(n))
        }
    }
}

fn kind_name(k: &JobKind) -> &'static str {
    k.name()
}

pub async fn run(
    store: Store,
    current: Current,
    signer: Option<Arc<dyn LinkSigner + Send>>,
    wake: Arc<Notify>,
    outbox: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    {
        let (cfg, _) = current();
        if let Err(e) = ensure_digest(&store, &cfg).await {
            tracing::warn!(error = %e, "digest not scheduled");
        }
        if let Err(e) = crate::retention::ensure_job(&store, &cfg).await {
            tracing::warn!(error = %e, "retention sweep not scheduled");
        }
    }
    loop {
        if shutdown.is_set() {
            return;
        }
        // Register before looking, so a wake-up during the scan is not lost.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let now = Timestamp::now();
        let due = match store.jobs_claim(now, 64) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: cannot read jobs; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for job in due {
            let (cfg, tpl) = current();
            let needs_tickets = matches!(job.kind, JobKind::Report { .. } | JobKind::Digest);
            let read = if needs_tickets {
                let s = store.clone();
                let (kind, cfg) = (job.kind.clone(), cfg.clone());
                // Reports and the digest list open tickets only; their
                // charts count every ticket of the last days.
                tokio::task::spawn_blocking(move || read_for_report(&s, &kind, &cfg, now))
                    .await
                    .map_err(|e| crate::store::Error::Other(e.to_string()))
                    .and_then(|r| r)
            } else {
                Ok((
                    Vec::new(),
                    crate::render::charts::Flow::new(now, jiff::tz::TimeZone::UTC, None),
                ))
            };
            let (tickets, flow) = match read {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, job = job.id, "scheduler: cannot read tickets");
                    continue;
                }
            };
            if job.kind == JobKind::Retention {
                // The sweep scans and writes the spool: before the job's
                // own transaction, which only takes it and plans the next.
                let (s, c) = (store.clone(), cfg.clone());
                let swept = tokio::task::spawn_blocking(move || {
                    crate::retention::sweep(&s, &c, now).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
                if let Err(e) = swept {
                    tracing::warn!(error = %e, job = job.id, "retention sweep failed; retrying later");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            let signer2 = signer.clone();
            let j = job.clone();
            let res = store
                .commit(None, move |tx, _| {
                    let s: Option<&dyn LinkSigner> = match &signer2 {
                        Some(s) => Some(s.as_ref()),
                        None => None,
                    };
                    run_job_with(tx, &j, &tickets, &flow, &cfg, &tpl, s, now)
                })
                .await;
            let late = now.duration_since(job.due).as_secs();
            let late_by = Duration::from_secs(late.max(0).unsigned_abs());
            let result = match &res {
                Ok(Fired::Sent(_)) => "sent",
                Ok(Fired::Skipped(_)) => "skipped",
                Ok(Fired::Gone) => "gone",
                Err(_) => "failed",
            };
            crate::metrics::job_fired(kind_name(&job.kind), result, late_by);
            let ticket = job
                .kind
                .ticket()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into());
            match res {
                Ok(Fired::Sent(n)) => {
                    tracing::info!(job = job.id, kind = kind_name(&job.kind), ticket = %ticket, mails = n, late_s = late, "fired");
                    if n > 0 {
                        outbox.notify_one();
                    }
                }
                Ok(Fired::Skipped(why)) => {
                    tracing::info!(job = job.id, kind = kind_name(&job.kind), ticket = %ticket, "skipped: {why}");
                }
                Ok(Fired::Gone) => {}
                Err(e) => {
                    tracing::warn!(job = job.id, error = %e, "scheduler: job failed; retrying later");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        let idle = Duration::from_secs(60).min(store.idle_poll());
        let sleep_for = match store.jobs_next_due() {
            Ok(Some(t)) => {
                let ms = t.duration_since(Timestamp::now()).as_millis().max(0) as u64;
                Duration::from_millis(ms).min(idle)
            }
            Ok(None) => idle,
            Err(_) => Duration::from_secs(1),
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = &mut notified => {},
            _ = tokio::time::sleep(sleep_for) => {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_times_follow_the_zone() {
        let now: Timestamp = "2026-11-22T10:00:00Z".parse().unwrap();
        // 08:00 in Tallinn (UTC+2 in winter) has passed today: tomorrow 06:00Z.
        assert_eq!(
            next_digest("08:00 Europe/Tallinn", now).unwrap(),
            "2026-11-23T06:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            next_digest("13:30", now).unwrap(),
            "2026-11-22T13:30:00Z".parse::<Timestamp>().unwrap()
        );
        assert!(next_digest("25:00", now).is_err());
        assert!(next_digest("08:00 Mars/Olympus", now).is_err());
    }
}
