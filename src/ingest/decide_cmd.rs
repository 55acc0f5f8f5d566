//! Commands in the decision (SPEC §5): mail to an action address
//! (`support+done-12-SIG@`), a report request (`support+report@`), or `#`
//! lines at the top of an agent's mail. Obeyed only from staff, and only
//! when a means listed in `commands.trust` vouches; anything else is
//! refused with a reply that says why, and the mail is kept either way.

use super::classify::Classification;
use super::decide::{
    attach_message, copy_intent, finish, is_ours, plan_effects, recipients, watcher_intent, Action,
    Context, Decision, Intent,
};
use super::{Envelope, Parsed};
use crate::config::Config;
use crate::store::{
    Away, Direction, JobKind, MessageKind, Result, Status, Ticket, Timestamp, View,
};
use crate::workflow::command::{self, AwayUntil, Command};
use crate::workflow::links::{parse_plus_tag, PlusTag};
use crate::workflow::ops;

fn tags(env: &Envelope, cfg: &Config) -> Vec<PlusTag> {
    env.rcpt_to
        .iter()
        .filter_map(|r| cfg.support_tag(r))
        .map(|t| parse_plus_tag(&t))
        .filter(|t| *t != PlusTag::None)
        .collect()
}

fn trusts(cfg: &Config, means: &str) -> bool {
    cfg.commands.trust.iter().any(|t| t == means)
}

/// `Ok(None)`: the mail carries no command; the ordinary rules go on.
#[allow(clippy::too_many_arguments)]
pub(super) fn commands(
    p: &Parsed,
    env: &Envelope,
    class: &Classification,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    ctx: &Context,
    target: Option<Ticket>,
    base: &Decision,
    own: &str,
) -> Result<Option<Decision>> {
    // A customer's link (confirm, reopen, rating): signed, not staff.
    if let Some(d) = super::decide_close::customer_link(p, env, class, cfg, view, now, ctx, base)? {
        return Ok(Some(d));
    }
    let tags = tags(env, cfg);
    let sender = class.sender.clone();
    let on_roster = cfg
        .team
        .agents
        .iter()
        .any(|a| a.email.eq_ignore_ascii_case(&sender));

    // A report request: the reply goes to the roster address only, so it
    // needs no further authentication.
    if let Some((all, category)) = tags.iter().find_map(|t| match t {
        PlusTag::Report => Some((false, None)),
        PlusTag::ReportCategory(c) => Some((false, Some(c.clone()))),
        PlusTag::ReportAll => Some((true, None)),
        _ => None,
    }) {
        let mut d = base.clone();
        d.kind = MessageKind::Command;
        let known = category
            .as_deref()
            .map(|c| cfg.category(c).map(|c| c.id.clone()));
        if let (Some(c), Some(None)) = (&category, &known) {
            // A typo must not come back as an empty report that looks real.
            let why = vec![format!(
                "support+report-{c}@: {c:?} is not a category ({})",
                crate::config::known_categories(cfg)
            )];
            return Ok(Some(if on_roster {
                refuse(d, class, None, why)
            } else {
                d.action = Action::Refused;
                d
            }));
        }
        if on_roster {
            d.action = Action::Report;
            d.commands.push(match (&known, all) {
                (Some(Some(c)), _) => format!("report-{c}"),
                (_, true) => "report-all".into(),
                _ => "report".into(),
            });
            d.schedule.push((
                now,
                JobKind::Report {
                    to: sender,
                    // One category is the whole desk's tickets of it.
                    all: all || category.is_some(),
                    in_reply_to: p.message_id.clone(),
                    subject: p.subject.clone(),
                    category: known.flatten(),
                },
            ));
        } else {
            // No reply to a stranger: a report address must not reflect mail.
            d.action = Action::Refused;
            d.warnings.push(format!(
                "report asked for by {sender}, who is not on the roster: ignored"
            ));
        }
        return Ok(Some(d));
    }

    // A signed action address: one click in any mail client.
    if let Some((action, n, sig)) = tags.iter().find_map(|t| match t {
        PlusTag::Action {
            action,
            ticket,
            sig,
        } => Some((action.to_string(), *ticket, sig.clone())),
        PlusTag::Unsigned { action, ticket } => Some((action.to_string(), *ticket, String::new())),
        _ => None,
    }) {
        let mut d = base.clone();
        d.kind = MessageKind::Command;
        let Some(mut t) = view.ticket(n)? else {
            return Ok(Some(refuse(
                d,
                class,
                None,
                vec![format!(
                    "there is no ticket {}",
                    super::decide::token(cfg, n)
                )],
            )));
        };
        let signed =
            trusts(cfg, "signed_address") && ctx.links.is_some_and(|l| l.verify(&action, n, &sig));
        let mut why = Vec::new();
        if !class.staff {
            why.push(format!("{sender} is not on the team"));
        }
        if sig.is_empty() {
            why.push(format!(
                "support+{action}-{n}@ carries no signature: use the link from a notice or report"
            ));
        } else if !signed && ctx.vouched_by.is_none() {
            why.push(format!(
                "the action link's signature is not valid for {action} on {}, and nothing else vouched for the sender ({})",
                super::decide::token(cfg, n),
                auth_summary(ctx)
            ));
        }
        let cmd = match action.as_str() {
            "take" => Some(Command::Take),
            "done" => Some(Command::Done),
            "release" => Some(Command::Release),
            "spam" => Some(Command::Spam),
            "reopen" => Some(Command::Reopen),
            "snooze" => command::parse_until("1d", now).map(|until| Command::Snooze { until }),
            _ => None,
        };
        let Some(cmd) = cmd else {
            why.push(format!("the {action} action is not available on this desk"));
            return Ok(Some(refuse(d, class, Some(t), why)));
        };
        if !why.is_empty() {
            return Ok(Some(refuse(d, class, Some(t), why)));
        }
        d.status_before = Some(t.status);
        let before = t.clone();
        match ops::apply(&mut t, &cmd, &sender, cfg, now) {
            Ok(fx) => {
                plan_effects(&mut t, fx, cfg, &mut d);
                d.intents
                    .extend(watcher_intent(&before, &t, &sender, &d.intents));
                d.commands.push(cmd.name().into());
                d.action = Action::Command;
                attach_message(&mut t, p, &d.internal_id, cfg);
                finish(p, cfg, view, &mut d, t, false)?;
            }
            Err(e) => return Ok(Some(refuse(d, class, Some(before), vec![e]))),
        }
        return Ok(Some(d));
    }

    // `#` lines at the top of a staff member's own text.
    if !class.staff {
        return Ok(None);
    }
    let mut parsed = command::parse(own, &cfg.support.token_prefix, now);
    if parsed.is_empty() {
        return Ok(None);
    }
    expand_macros(&mut parsed, cfg, now);
    let mut d = base.clone();
    let attach_to = parsed.commands.iter().find_map(|c| match c {
        Command::Attach { ticket } => Some(*ticket),
        _ => None,
    });
    let target = match attach_to {
        Some(n) => view.ticket(n)?,
        None => target,
    };
    let mut why: Vec<String> = parsed
        .bad
        .iter()
        .map(|b| format!("{}: {}", b.line, b.why))
        .collect();
    if let (Some(n), None) = (attach_to, &target) {
        why.push(format!(
            "#attach: there is no ticket {}",
            super::decide::token(cfg, n)
        ));
    }
    // `#away` / `#back` alone need no ticket: they are about the sender.
    let agent_only = attach_to.is_none()
        && !parsed.commands.is_empty()
        && parsed.commands.iter().all(Command::is_about_the_agent);
    if target.is_none() && agent_only {
        if ctx.vouched_by.is_none() {
            why.push(format!(
                "your mail is not authenticated ({})",
                auth_summary(ctx)
            ));
        }
        let away = match agent_changes(&parsed.commands, &class.sender, cfg, now) {
            Ok(a) => a,
            Err(e) => {
                why.push(e);
                None
            }
        };
        if !why.is_empty() {
            return Ok(Some(refuse(d, class, None, why)));
        }
        d.kind = MessageKind::Command;
        d.action = Action::Command;
        d.commands = parsed.commands.iter().map(|c| c.name().into()).collect();
        d.desk.away = away;
        return Ok(Some(d));
    }
    let Some(mut t) = target else {
        if why.is_empty() {
            why.push(format!(
                "no ticket to act on: keep the ticket's token (e.g. [{}-12]) in the subject",
                cfg.support.token_prefix
            ));
        }
        return Ok(Some(refuse(d, class, None, why)));
    };
    if ctx.vouched_by.is_none() {
        why.push(format!(
            "your mail is not authenticated ({})",
            auth_summary(ctx)
        ));
    }
    let away = match agent_changes(&parsed.commands, &class.sender, cfg, now) {
        Ok(a) => a,
        Err(e) => {
            why.push(e);
            None
        }
    };
    if !why.is_empty() {
        return Ok(Some(refuse(d, class, Some(t), why)));
    }
    d.desk.away = away;

    if let Some(other) = parsed.commands.iter().find_map(|c| match c {
        Command::Merge { ticket } => Some(*ticket),
        _ => None,
    }) {
        return merge_by_mail(p, cfg, view, now, class, d, t, other, &parsed.commands);
    }

    d.status_before = Some(t.status);
    let before = t.clone();
    let is_note = parsed.commands.contains(&Command::Note);
    let contact_included = recipients(p).any(|a| a == t.contact);
    if contact_included && !is_note {
        // An answer to the customer that also carries commands.
        d.kind = MessageKind::Agent;
        t.replies += 1;
        t.last_direction = Direction::Out;
        t.last_excerpt = d.excerpt.clone();
        let explicit = parsed
            .commands
            .iter()
            .any(|c| matches!(c, Command::Take | Command::Assign { .. }));
        // The quiet Reply-All assignment, unless the agent asked for the
        // full take process (notice, reminder, customer told).
        if t.status == Status::Unassigned && !explicit {
            t.assignee = Some(class.sender.clone());
            t.status = Status::Active;
        }
    } else {
        d.kind = if is_note {
            MessageKind::Note
        } else {
            MessageKind::Command
        };
    }
    for c in &parsed.commands {
        let done = ops::apply(&mut t, c, &class.sender, cfg, now).and_then(|fx| {
            plan_effects(&mut t, fx, cfg, &mut d);
            match c {
                Command::Answer { name } => answer(&mut t, name, &class.sender, cfg, ctx, &mut d),
                Command::Escalate { .. } => {
                    super::route::distribute_escalated(&mut t, cfg, view, now, &mut d)
                        .map_err(|e| e.to_string())
                }
                _ => Ok(()),
            }
        });
        match done {
            Ok(()) => {
                d.commands.push(c.name().into());
            }
            Err(e) => {
                // All or nothing: a half-obeyed list surprises everyone.
                let mut d = base.clone();
                d.kind = MessageKind::Command;
                return Ok(Some(refuse(
                    d,
                    class,
                    Some(before),
                    vec![format!("#{}: {e}; nothing was done", c.name())],
                )));
            }
        }
    }
    d.action = Action::Command;
    if d.kind == MessageKind::Agent {
        // The mail that resolved it: the done notice quotes its own words.
        let text = crate::workflow::close::resolution_text(own);
        for i in d.intents.iter_mut() {
            if let Intent::Status { resolution, .. } = i {
                *resolution = text.clone();
            }
        }
    }
    d.intents
        .extend(watcher_intent(&before, &t, &class.sender, &d.intents));
    t.last_message_at = now;
    attach_message(&mut t, p, &d.internal_id, cfg);
    if let Some(n) = attach_to {
        // The stray mail's own original (forwarded inside it) joins too, so
        // the customer's later replies to it follow.
        d.thread.why = format!("#attach {}", super::decide::token(cfg, n));
        for id in &p.returned_message_ids {
            if view.ticket_by_key(id)?.is_none() {
                d.index_keys.push(id.clone());
            }
        }
    }
    if d.kind != MessageKind::Command {
        d.intents.extend(copy_intent(p, class, cfg, &t));
    }
    let extra = std::mem::take(&mut d.index_keys);
    finish(p, cfg, view, &mut d, t, false)?;
    for k in extra {
        if !d.index_keys.contains(&k) {
            d.index_keys.push(k);
        }
    }
    Ok(Some(d))
}

/// `#merge SUP-N` on ticket `t`: the older of the two survives and this
/// mail joins it. Alone in its mail (a `#note` aside), so it is clear which
/// ticket any other command would mean.
#[allow(clippy::too_many_arguments)]
fn merge_by_mail(
    p: &Parsed,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    class: &Classification,
    mut d: Decision,
    t: Ticket,
    other: u64,
    cmds: &[Command],
) -> Result<Option<Decision>> {
    let tok = |n| super::decide::token(cfg, n);
    if cmds
        .iter()
        .any(|c| !matches!(c, Command::Merge { .. } | Command::Note))
        || cmds
            .iter()
            .filter(|c| matches!(c, Command::Merge { .. }))
            .count()
            > 1
    {
        return Ok(Some(refuse(
            d,
            class,
            Some(t),
            vec!["#merge goes alone in its mail (a #note aside); nothing was done".into()],
        )));
    }
    let Some(o) = crate::workflow::merge::resolve(view, other)? else {
        return Ok(Some(refuse(
            d,
            class,
            Some(t),
            vec![format!("#merge: there is no ticket {}", tok(other))],
        )));
    };
    let (mut s, plan) =
        match crate::workflow::merge::merge(t.clone(), o, view, &cfg.support.token_prefix, now)? {
            Ok(x) => x,
            Err(why) => {
                return Ok(Some(refuse(
                    d,
                    class,
                    Some(t),
                    vec![format!("#merge: {why}; nothing was done")],
                )))
            }
        };
    d.status_before = Some(s.status);
    d.kind = if cmds.contains(&Command::Note) {
        MessageKind::Note
    } else {
        MessageKind::Command
    };
    d.action = Action::Command;
    d.commands.push("merge".into());
    d.thread.why = format!(
        "#merge: {} merged into {}",
        tok(plan.merged.number),
        tok(s.number)
    );
    // The merged ticket's watchers hear where the conversation went.
    let mut told = plan.merged.clone();
    told.merged_into = None;
    d.intents.extend(watcher_intent(
        &told,
        &plan.merged,
        &class.sender,
        &d.intents,
    ));
    s.last_message_at = s.last_message_at.max(now);
    attach_message(&mut s, p, &d.internal_id, cfg);
    d.merge = Some(plan);
    finish(p, cfg, view, &mut d, s, false)?;
    Ok(Some(d))
}

/// Replaces each `#macro NAME` by the commands `macros.NAME` lists (checked
/// when the config loads: one known command per line, no nested macros).
/// An unknown name is a bad line, so the whole mail is refused.
fn expand_macros(parsed: &mut command::Parsed, cfg: &Config, now: Timestamp) {
    if !parsed
        .commands
        .iter()
        .any(|c| matches!(c, Command::Macro { .. }))
    {
        return;
    }
    let mut out = Vec::new();
    for c in std::mem::take(&mut parsed.commands) {
        let Command::Macro { name } = &c else {
            out.push(c);
            continue;
        };
        match cfg.macros.get(name) {
            Some(lines) => {
                for line in lines {
                    let p = command::parse(line, &cfg.support.token_prefix, now);
                    for inner in p.commands {
                        if matches!(inner, Command::Macro { .. }) {
                            parsed.bad.push(command::BadCommand {
                                line: format!("#macro {name}"),
                                why: "a macro cannot run another macro".into(),
                            });
                        } else {
                            out.push(inner);
                        }
                    }
                    parsed
                        .bad
                        .extend(p.bad.into_iter().map(|b| command::BadCommand {
                            line: format!("#macro {name}: {}", b.line),
                            why: b.why,
                        }));
                }
            }
            None => {
                let known: Vec<&str> = cfg.macros.keys().map(String::as_str).collect();
                parsed.bad.push(command::BadCommand {
                    line: format!("#macro {name}"),
                    why: if known.is_empty() {
                        "this desk has no macros (macros: in the config)".into()
                    } else {
                        format!("{name:?} is not a macro ({})", known.join(", "))
                    },
                });
            }
        }
    }
    parsed.commands = out;
}

/// `#answer NAME`: the canned answer goes to the customer in the ticket's
/// thread and counts as the agent's reply (an unassigned ticket becomes
/// theirs, quietly, as a Reply-All would make it).
fn answer(
    t: &mut Ticket,
    name: &str,
    sender: &str,
    cfg: &Config,
    ctx: &Context,
    d: &mut Decision,
) -> std::result::Result<(), String> {
    if !ctx.answers.iter().any(|a| a == name) {
        return Err(if ctx.answers.is_empty() {
            format!("{name:?} is not a canned answer (there are none)")
        } else {
            format!(
                "{name:?} is not a canned answer ({})",
                ctx.answers.join(", ")
            )
        });
    }
    if t.contact.is_empty() || is_ours(&t.contact, cfg) || cfg.is_staff(&t.contact) {
        return Err("the ticket has no customer address to answer".into());
    }
    if d.intents.iter().any(|i| matches!(i, Intent::Answer { .. })) {
        return Err("one #answer per mail".into());
    }
    d.intents.push(Intent::Answer {
        to: t.contact.clone(),
        name: name.to_string(),
    });
    t.replies += 1;
    t.last_direction = Direction::Out;
    if t.status == Status::Unassigned {
        t.assignee = Some(sender.to_ascii_lowercase());
        t.status = Status::Active;
    }
    Ok(())
}

/// The sender's `#away` / `#back`, the last one winning: (agent, the away
/// record to keep, `None` to remove it). `Ok(None)` when there is neither.
/// A bare date means through that day in the desk's time zone.
fn agent_changes(
    cmds: &[Command],
    sender: &str,
    cfg: &Config,
    now: Timestamp,
) -> std::result::Result<Option<(String, Option<Away>)>, String> {
    let Some(last) = cmds.iter().rev().find(|c| c.is_about_the_agent()) else {
        return Ok(None);
    };
    let agent = ops::resolve_agent(sender, cfg).map_err(|_| {
        format!(
            "#{}: {sender} is not an agent on the roster, so distribution does not count on them anyway",
            last.name()
        )
    })?;
    let until = match last {
        Command::Away { until: None } => None,
        Command::Away {
            until: Some(AwayUntil::At(t)),
        } => Some(*t),
        Command::Away {
            until: Some(AwayUntil::Day(day)),
        } => {
            let next = day
                .tomorrow()
                .and_then(|d| d.to_zoned(cfg.desk_timezone()))
                .map(|z| z.timestamp())
                .map_err(|e| format!("#away until {day}: {e}"))?;
            if next <= now {
                return Err(format!("#away until {day}: that day has passed"));
            }
            Some(next)
        }
        _ => return Ok(Some((agent, None))),
    };
    Ok(Some((agent, Some(Away { since: now, until }))))
}

fn auth_summary(ctx: &Context) -> String {
    if ctx.auth_notes.is_empty() {
        "no DKIM, SPF or Authentication-Results vouched for it".into()
    } else {
        ctx.auth_notes.join("; ")
    }
}

/// The refusal: the mail is kept (on the ticket when there is one), nothing
/// changes, and a staff sender is told why. Outsiders get no reply, so an
/// action address never reflects mail to a forged sender outside the team.
fn refuse(
    mut d: Decision,
    class: &Classification,
    t: Option<Ticket>,
    why: Vec<String>,
) -> Decision {
    d.action = Action::Refused;
    d.kind = MessageKind::Command;
    d.warnings.push(format!(
        "commands refused from {}: {}",
        class.sender,
        why.join("; ")
    ));
    if class.staff && !class.sender.is_empty() {
        d.intents.push(Intent::Refusal {
            to: class.sender.clone(),
            why,
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
