//! PURE: the SLA warning and breach notices (issue #9), rendered from
//! `sla_warn.txt` / `sla_breach.txt` like the reminder.

use super::desk::{age, mail_to, render_or, view};
use super::Templates;
use crate::config::Config;
use crate::ingest::decide::{token, LinkSigner};
use crate::store::{OutboxEntry, SlaTarget, Status, Ticket, Timestamp};

/// The target's name in the desk's language.
pub fn target_name(lang: &str, target: SlaTarget) -> &'static str {
    match (lang, target) {
        ("et", SlaTarget::FirstResponse) => "esmane vastus",
        ("et", SlaTarget::Resolution) => "lahendus",
        (_, SlaTarget::FirstResponse) => "first response",
        (_, SlaTarget::Resolution) => "resolution",
    }
}

/// `due` in the zone of the ticket's policy calendar (UTC without one),
/// so a desk reads its own wall-clock time.
pub fn due_local(t: &Ticket, cfg: &Config, due: Timestamp) -> String {
    let tz = t
        .sla
        .policy
        .as_deref()
        .and_then(|id| cfg.sla.policies.iter().find(|p| p.id == id))
        .and_then(|p| cfg.loaded_calendars.for_policy(p))
        .map(|c| c.timezone().clone())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    due.to_zoned(tz)
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// A warning (`breach` false) or breach notice about `target` of `t`,
/// due at `due`, to `to`. `job_id` makes the Message-ID, so a job re-run
/// after a crash writes the same mail.
#[allow(clippy::too_many_arguments)]
pub fn notice(
    breach: bool,
    to: &[String],
    t: &Ticket,
    target: SlaTarget,
    due: Timestamp,
    job_id: u64,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> OutboxEntry {
    let lang = &cfg.support.language;
    let actions: &[&'static str] = if t.status == Status::Unassigned {
        &["take", "done"]
    } else {
        &["done"]
    };
    let v = view(t, cfg, lang, signer, actions, now);
    let name = target_name(lang, target);
    let (kind, file, subject) = if breach {
        (
            "sla_breach",
            "sla_breach.txt",
            format!("[{}] SLA breached ({name}): {}", v.token, t.subject),
        )
    } else {
        (
            "sla_warn",
            "sla_warn.txt",
            format!("[{}] SLA warning ({name}): {}", v.token, t.subject),
        )
    };
    let ctx = minijinja::context! {
        t => v,
        target => target.as_str(),
        target_name => name,
        due => due.to_string(),
        due_local => due_local(t, cfg, due),
        left => age(now, due),
        over => age(due, now),
        policy => t.sla.policy.clone().unwrap_or_default(),
    };
    let fallback = format!(
        "{}: {name} {} {}\n",
        token(cfg, t.number),
        if breach { "was due" } else { "is due" },
        due_local(t, cfg, due)
    );
    let body = render_or(tpl, lang, file, ctx, &fallback);
    mail_to(
        kind,
        t,
        cfg,
        to,
        subject,
        body,
        &format!("job-{job_id}"),
        &t.message_ids.iter().take(1).cloned().collect::<Vec<_>>(),
        "auto-generated",
        now,
    )
}
