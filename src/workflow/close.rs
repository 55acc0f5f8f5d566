//! Resolve → confirm → close, and ratings (issue #9; `policy.confirm_close`).
//!
//! `done` means resolved. The resolution mail carries one-click links the
//! customer may use: confirm (the ticket becomes `closed`, read-only),
//! reopen, and a rating. Each link is a signed plus-address that also
//! carries the ticket's resolution number (`Ticket::resolutions`), so a link
//! from an earlier resolution is refused; the state it would change (done
//! → closed, one rating per resolution) refuses a second use. The
//! signature is the only authentication: a customer is not staff, and one
//! click must work from any client.
//!
//! Everything here is pure except [`run_autoclose`], which the scheduler
//! calls inside its transaction.

use super::ops::{self, Effect};
use crate::config::Config;
use crate::ingest::decide::{plan, watcher_intent, Intent, LinkSigner};
use crate::render::Templates;
use crate::schedule::Fired;
use crate::store::{Job, JobKind, Rating, RatingValue, Status, Ticket, Timestamp, Writes};
use serde::Serialize;

/// A status change the customer is told of (`status_notices`; `active` is
/// the older "taken into work" mail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusNotice {
    /// Waiting on the customer: asks for their answer.
    Waiting,
    /// Resolved: the resolution, the rating links and, with
    /// `confirm_close`, the confirm and reopen links.
    Done,
    /// Closed: confirmed by the customer or closed by itself.
    Closed,
}

impl StatusNotice {
    pub fn as_str(&self) -> &'static str {
        match self {
            StatusNotice::Waiting => "waiting",
            StatusNotice::Done => "done",
            StatusNotice::Closed => "closed",
        }
    }

    /// Is this notice sent on this desk? With `confirm_close` the done
    /// notice always goes: it carries the only way to confirm.
    pub fn enabled(&self, cfg: &Config) -> bool {
        match self {
            StatusNotice::Waiting => cfg.status_notices.waiting,
            StatusNotice::Done => cfg.status_notices.done || cfg.policy.confirm_close,
            StatusNotice::Closed => cfg.status_notices.closed,
        }
    }
}

/// What a customer's link asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomerAction {
    Confirm,
    Reopen,
    Rate(RatingValue),
}

impl CustomerAction {
    /// From a link's action name (`links::CUSTOMER_ACTIONS`).
    pub fn parse(action: &str) -> Option<CustomerAction> {
        match action {
            "confirm" => Some(CustomerAction::Confirm),
            "reopen" => Some(CustomerAction::Reopen),
            _ => action
                .strip_prefix("rate-")
                .and_then(RatingValue::parse)
                .map(CustomerAction::Rate),
        }
    }
}

/// Closes a resolved ticket: read-only from now on, its pending jobs
/// (the autoclose) gone, the customer told when `status_notices.closed`.
pub fn close(t: &mut Ticket, now: Timestamp) -> Vec<Effect> {
    t.status = Status::Closed;
    t.closed_at = Some(now);
    vec![
        Effect::CancelScheduled,
        Effect::TellCustomer {
            notice: StatusNotice::Closed,
        },
    ]
}

/// Obeys a customer's link for resolution `resolution` of `t` (its
/// signature already checked). `Err` is the refusal the sender gets; the
/// ticket is then unchanged.
pub fn customer_action(
    t: &mut Ticket,
    action: CustomerAction,
    resolution: u32,
    now: Timestamp,
) -> Result<Vec<Effect>, String> {
    if resolution != t.resolutions {
        return Err(
            "this link belongs to an earlier resolution of the ticket; use the links in the latest mail about it"
                .into(),
        );
    }
    match action {
        CustomerAction::Confirm => match t.status {
            Status::Done => Ok(close(t, now)),
            Status::Closed => Err("the ticket is already closed".into()),
            s => Err(format!(
                "the ticket is not resolved ({s}), so there is nothing to confirm"
            )),
        },
        CustomerAction::Reopen => match t.status {
            Status::Done => Ok(ops::reopen_by_customer(t)),
            Status::Closed => Err(
                "the ticket is closed and cannot be reopened; write a new mail to start a new one"
                    .into(),
            ),
            s => Err(format!("the ticket is already open ({s})")),
        },
        CustomerAction::Rate(value) => {
            if let Some(r) = t.rating.as_ref().filter(|r| r.resolution == resolution) {
                return Err(format!(
                    "this resolution was already rated ({}); one rating per resolution",
                    r.value.as_str()
                ));
            }
            if !matches!(t.status, Status::Done | Status::Closed) {
                return Err(format!(
                    "the ticket was reopened ({}); you can rate it when it is resolved again",
                    t.status
                ));
            }
            t.rating = Some(Rating {
                value,
                at: now,
                comment: None,
                resolution,
            });
            Ok(Vec::new())
        }
    }
}

/// How long a rating comment may be, in characters.
const COMMENT_CHARS: usize = 2000;

/// Adds the customer's own text as the comment of the ticket's rating
/// (a second reply adds to the first). `false` when there is no rating.
pub fn add_comment(t: &mut Ticket, text: &str) -> bool {
    let Some(r) = t.rating.as_mut() else {
        return false;
    };
    let text: String = text.trim().chars().take(COMMENT_CHARS).collect();
    if text.is_empty() {
        return true;
    }
    r.comment = Some(match r.comment.take() {
        Some(old) if !old.is_empty() => format!("{old}\n\n{text}"),
        _ => text,
    });
    true
}

/// The resolution as the done notice quotes it: the agent's own text
/// without the `#` command lines at its top.
pub fn resolution_text(own: &str) -> String {
    own.lines()
        .skip_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

/// Runs an `AutoClose` job (already taken from the queue): closes the
/// ticket if it is still done with the resolution the job was made for.
pub fn run_autoclose(
    tx: &dyn Writes,
    job: &Job,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> crate::store::Result<Fired> {
    let JobKind::AutoClose { ticket, resolution } = &job.kind else {
        return Ok(Fired::Skipped("not an autoclose job"));
    };
    let Some(mut t) = tx.ticket(*ticket)? else {
        return Ok(Fired::Skipped("ticket gone"));
    };
    t.scheduled.retain(|s| s.id != job.id);
    if t.status != Status::Done || t.resolutions != *resolution {
        tx.put_ticket(&t)?;
        return Ok(Fired::Skipped("no longer done with that resolution"));
    }
    let before = t.clone();
    let fx = close(&mut t, now);
    let p = plan(&mut t, fx, cfg);
    crate::deliver::write_jobs(tx, &mut t, &p.cancel, &p.schedule, now)?;
    // Closing ends both SLA clocks: their pending jobs go with it.
    let sla = crate::sla::track::track(&mut t, false, cfg, now);
    crate::deliver::write_jobs(tx, &mut t, &sla.cancel, &sla.schedule, now)?;
    let mut intents = p.intents;
    intents.extend(watcher_intent(&before, &t, "postdesk", &intents));
    let cause = format!("autoclose:{}", job.id);
    let mut sent = 0;
    for i in &intents {
        let mail = match i {
            Intent::Watchers { to, what } => crate::render::desk::watchers(
                to,
                what,
                "postdesk (closed by itself)",
                &t,
                &format!("{cause}:watch"),
                cfg,
                tpl,
                now,
            ),
            other => {
                match crate::render::close::render_intent(other, &t, &cause, cfg, tpl, signer, now)
                {
                    Some(m) => m,
                    None => continue,
                }
            }
        };
        tx.index_thread_key(&mail.message_id, t.number)?;
        tx.add_outbox(mail)?;
        sent += 1;
    }
    tx.put_ticket(&t)?;
    Ok(Fired::Sent(sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::command::Command;

    fn cfg(extra: &str) -> Config {
        Config::parse(
            &format!("support: {{address: support@example.com}}\nteam:\n  agents: [{{email: alice@example.com}}]\n{extra}"),
            "t.yaml",
        )
        .unwrap()
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn done_ticket(c: &Config) -> (Ticket, Vec<Effect>) {
        let mut t = crate::render::desk::view_less_ticket(c, at(0));
        t.number = 5;
        t.status = Status::Unassigned;
        t.contact = "mari@cust.test".into();
        ops::apply(&mut t, &Command::Take, "alice@example.com", c, at(1)).unwrap();
        let fx = ops::apply(&mut t, &Command::Done, "alice@example.com", c, at(2)).unwrap();
        (t, fx)
    }

    #[test]
    fn done_tells_the_customer_and_with_confirm_close_schedules_the_autoclose() {
        let c = cfg("");
        let (t, fx) = done_ticket(&c);
        assert!(fx.contains(&Effect::TellCustomer {
            notice: StatusNotice::Done
        }));
        assert!(!fx
            .iter()
            .any(|e| matches!(e, Effect::ScheduleAutoClose { .. })));
        assert_eq!(t.resolutions, 1);
        // Off by default: no mail, and no autoclose job.
        let mut t2 = t.clone();
        let p = plan(&mut t2, fx, &c);
        assert!(p.intents.is_empty(), "{:?}", p.intents);

        let c = cfg("policy: {confirm_close: true, autoclose_after: 2d}\n");
        let (mut t, fx) = done_ticket(&c);
        assert!(fx.contains(&Effect::ScheduleAutoClose {
            at: at(2 + 2 * 86400),
            resolution: 1
        }));
        let p = plan(&mut t, fx, &c);
        assert!(p.schedule.contains(&(
            at(2 + 2 * 86400),
            JobKind::AutoClose {
                ticket: 5,
                resolution: 1
            }
        )));
        assert!(matches!(
            p.intents.as_slice(),
            [Intent::Status {
                notice: StatusNotice::Done,
                ..
            }]
        ));
    }

    #[test]
    fn waiting_notice_follows_its_switch() {
        let c = cfg("status_notices: {waiting: true}\n");
        let mut t = crate::render::desk::view_less_ticket(&c, at(0));
        t.contact = "mari@cust.test".into();
        t.status = Status::Active;
        let fx = ops::apply(&mut t, &Command::Waiting, "alice@example.com", &c, at(1)).unwrap();
        let p = plan(&mut t, fx.clone(), &c);
        assert!(matches!(
            p.intents.as_slice(),
            [Intent::Status { to, notice: StatusNotice::Waiting, .. }] if to == "mari@cust.test"
        ));
        let off = cfg("");
        let p = plan(&mut t, fx, &off);
        assert!(p.intents.is_empty());
    }

    #[test]
    fn confirm_closes_once_and_only_the_latest_resolution() {
        let c = cfg("policy: {confirm_close: true}\nstatus_notices: {closed: true}\n");
        let (mut t, _) = done_ticket(&c);
        // A link from resolution 0 (none) or 2 (not yet) is refused.
        assert!(customer_action(&mut t, CustomerAction::Confirm, 0, at(3)).is_err());
        assert!(customer_action(&mut t, CustomerAction::Confirm, 2, at(3)).is_err());
        assert_eq!(t.status, Status::Done);
        let fx = customer_action(&mut t, CustomerAction::Confirm, 1, at(3)).unwrap();
        assert_eq!((t.status, t.closed_at), (Status::Closed, Some(at(3))));
        assert!(fx.contains(&Effect::CancelScheduled));
        assert!(fx.contains(&Effect::TellCustomer {
            notice: StatusNotice::Closed
        }));
        // A second click changes nothing.
        let e = customer_action(&mut t, CustomerAction::Confirm, 1, at(4)).unwrap_err();
        assert!(e.contains("already closed"), "{e}");
        assert_eq!(t.closed_at, Some(at(3)));
        // A closed ticket is not reopened by link, but by an agent.
        let e = customer_action(&mut t, CustomerAction::Reopen, 1, at(5)).unwrap_err();
        assert!(e.contains("write a new mail"), "{e}");
        ops::apply(&mut t, &Command::Reopen, "alice@example.com", &c, at(6)).unwrap();
        assert_eq!((t.status, t.closed_at), (Status::Active, None));
    }

    #[test]
    fn reopen_link_reopens_a_done_ticket_and_the_old_links_go_stale() {
        let c = cfg("policy: {confirm_close: true}\n");
        let (mut t, _) = done_ticket(&c);
        customer_action(&mut t, CustomerAction::Reopen, 1, at(3)).unwrap();
        assert_eq!((t.status, t.reopen_count), (Status::Active, 1));
        assert!(customer_action(&mut t, CustomerAction::Reopen, 1, at(4)).is_err());
        ops::apply(&mut t, &Command::Done, "alice@example.com", &c, at(5)).unwrap();
        assert_eq!(t.resolutions, 2);
        // Resolution 1's links no longer act.
        let e = customer_action(&mut t, CustomerAction::Confirm, 1, at(6)).unwrap_err();
        assert!(e.contains("earlier resolution"), "{e}");
        customer_action(&mut t, CustomerAction::Confirm, 2, at(6)).unwrap();
        assert_eq!(t.status, Status::Closed);
    }

    #[test]
    fn one_rating_per_resolution_with_a_comment() {
        let c = cfg("");
        let (mut t, _) = done_ticket(&c);
        customer_action(&mut t, CustomerAction::Rate(RatingValue::Bad), 1, at(3)).unwrap();
        assert_eq!(
            t.rating.as_ref().map(|r| (r.value, r.resolution, r.at)),
            Some((RatingValue::Bad, 1, at(3)))
        );
        let e =
            customer_action(&mut t, CustomerAction::Rate(RatingValue::Good), 1, at(4)).unwrap_err();
        assert!(e.contains("already rated (bad)"), "{e}");
        assert!(add_comment(&mut t, "  Took too long.  "));
        assert_eq!(
            t.rating.as_ref().and_then(|r| r.comment.as_deref()),
            Some("Took too long.")
        );
        // Reopened: no rating until it is resolved again; then a new one.
        ops::reopen_by_customer(&mut t);
        assert!(
            customer_action(&mut t, CustomerAction::Rate(RatingValue::Good), 1, at(5)).is_err()
        );
        ops::apply(&mut t, &Command::Done, "alice@example.com", &c, at(6)).unwrap();
        customer_action(&mut t, CustomerAction::Rate(RatingValue::Good), 2, at(7)).unwrap();
        assert_eq!(
            t.rating
                .as_ref()
                .map(|r| (r.value, r.resolution, r.comment.clone())),
            Some((RatingValue::Good, 2, None))
        );
    }

    #[test]
    fn names_and_resolution_text() {
        assert_eq!(
            CustomerAction::parse("rate-neutral"),
            Some(CustomerAction::Rate(RatingValue::Neutral))
        );
        assert_eq!(
            CustomerAction::parse("confirm"),
            Some(CustomerAction::Confirm)
        );
        assert_eq!(CustomerAction::parse("rate-great"), None);
        assert_eq!(CustomerAction::parse("take"), None);
        assert_eq!(
            resolution_text("#done\n#tag x\n\nThe driver is updated.\nRestart once."),
            "The driver is updated.\nRestart once."
        );
    }
}
