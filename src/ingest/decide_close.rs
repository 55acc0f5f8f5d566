//! The customer's side of resolve → confirm → close in the decision: mail
//! to a customer's link (`support+confirm-12-3-SIG@`, `+rate-good-…`) and a
//! reply to a rating's confirmation. The link's signature is the whole
//! authentication (see `workflow::close`); anything it cannot do is refused
//! with a reply that says why, and the mail is kept on the ticket either way.

use super::classify::Classification;
use super::decide::{
    attach_message, copy_intent, finish, is_ours, plan_effects, token, watcher_intent, Action,
    Context, Decision, Intent,
};
use super::{Envelope, Parsed};
use crate::config::Config;
use crate::store::{MessageKind, Result, Ticket, Timestamp, View};
use crate::workflow::close::{self, CustomerAction};
use crate::workflow::links::{parse_plus_tag, PlusTag};

/// `Ok(None)`: the mail is not to a customer's link.
#[allow(clippy::too_many_arguments)]
pub(super) fn customer_link(
    p: &Parsed,
    env: &Envelope,
    class: &Classification,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    ctx: &Context,
    base: &Decision,
) -> Result<Option<Decision>> {
    let Some((action, n, resolution, sig)) = env
        .rcpt_to
        .iter()
        .filter_map(|r| cfg.support_tag(r))
        .find_map(|t| match parse_plus_tag(&t) {
            PlusTag::Customer {
                action,
                ticket,
                resolution,
                sig,
            } => Some((action, ticket, resolution, sig)),
            _ => None,
        })
    else {
        return Ok(None);
    };
    let mut d = base.clone();
    d.kind = MessageKind::Command;
    let Some(mut t) = view.ticket(n)? else {
        return Ok(Some(refuse(
            d,
            p,
            class,
            cfg,
            None,
            format!("there is no ticket {}", token(cfg, n)),
        )));
    };
    let signed = ctx
        .links
        .is_some_and(|l| l.verify_resolution(action, n, resolution, &sig));
    if !signed {
        return Ok(Some(refuse(
            d,
            p,
            class,
            cfg,
            Some(t),
            format!(
                "the link is not valid for {action} on {} (it was changed, or is not ours); use the link exactly as it came in our mail",
                token(cfg, n)
            ),
        )));
    }
    let Some(what) = CustomerAction::parse(action) else {
        // `parse_plus_tag` only yields customer actions; kept for safety.
        return Ok(Some(refuse(
            d,
            p,
            class,
            cfg,
            Some(t),
            format!("{action} is not something a link can do"),
        )));
    };
    d.status_before = Some(t.status);
    let before = t.clone();
    match close::customer_action(&mut t, what, resolution, now) {
        Ok(fx) => {
            if what == CustomerAction::Reopen {
                d.action = Action::Reopen;
            } else {
                d.action = Action::Command;
            }
            plan_effects(&mut t, fx, cfg, &mut d);
            if let CustomerAction::Rate(_) = what {
                if let Some(to) = reply_to(class, cfg) {
                    d.intents.push(Intent::Rated { to });
                }
            }
            d.intents
                .extend(watcher_intent(&before, &t, &class.sender, &d.intents));
            d.commands.push(action.to_string());
            attach_message(&mut t, p, &d.internal_id, cfg);
            finish(p, cfg, view, &mut d, t, false)?;
            Ok(Some(d))
        }
        Err(why) => Ok(Some(refuse(d, p, class, cfg, Some(before), why))),
    }
}

/// A customer's reply to the confirmation of their rating (In-Reply-To its
/// Message-ID): the text becomes the rating's comment, and the ticket is
/// not reopened nor followed up. `Ok(None)` for every other mail.
pub(super) fn rating_comment(
    p: &Parsed,
    class: &Classification,
    cfg: &Config,
    view: &dyn View,
    target: Option<&Ticket>,
    base: &Decision,
    own: &str,
) -> Result<Option<Decision>> {
    let Some(t) = target else { return Ok(None) };
    let Some(r) = &t.rating else { return Ok(None) };
    let rated = crate::render::close::rated_message_id(cfg, t.number, r.resolution);
    if !p.in_reply_to.contains(&rated) {
        return Ok(None);
    }
    let mut t = t.clone();
    let mut d = base.clone();
    d.status_before = Some(t.status);
    d.action = Action::Comment;
    d.kind = MessageKind::Customer;
    close::add_comment(&mut t, own);
    d.thread.why = format!("{} (a comment on the rating)", d.thread.why);
    attach_message(&mut t, p, &d.internal_id, cfg);
    d.intents.extend(copy_intent(p, class, cfg, &t));
    finish(p, cfg, view, &mut d, t, false)?;
    Ok(Some(d))
}

/// Where a reply to the sender of a link may go: nowhere for an empty or
/// our own address, or a mail that must not be answered.
fn reply_to(class: &Classification, cfg: &Config) -> Option<String> {
    let s = &class.sender;
    (!s.is_empty() && !is_ours(s, cfg) && !class.suppress_ack).then(|| s.clone())
}

/// The refusal: nothing changes, the mail is kept on the ticket when there
/// is one, and the sender is told why.
fn refuse(
    mut d: Decision,
    p: &Parsed,
    class: &Classification,
    cfg: &Config,
    t: Option<Ticket>,
    why: String,
) -> Decision {
    d.action = Action::Refused;
    d.kind = MessageKind::Command;
    d.warnings.push(format!(
        "customer link refused from {}: {why}",
        class.sender
    ));
    if let Some(to) = reply_to(class, cfg) {
        d.intents.push(Intent::LinkRefused {
            to,
            why: vec![why],
            in_reply_to: p.message_id.clone(),
            subject: p.subject.clone(),
        });
    }
    if let Some(mut t) = t {
        d.status_before = Some(t.status);
        if !t.message_ids.contains(&d.internal_id) {
            t.message_ids.push(d.internal_id.clone());
        }
        d.ticket = Some(t);
    }
    d
}
