//! The decision: parsed mail + current state (a [`View`]) + policy + `now`
//! → the new ticket state, the message's place, the keys to index and the
//! mail to send. Pure: no I/O, no clock, no randomness, so `serve`,
//! `explain` and `import` share it and tests drive it with in-memory views.
//!
//! Follow-up rules (SPEC §3.5) live in [`follow_up`].

use super::classify::{classify, Classification, MailKind};
use super::customer::{identify, Identified};
use super::quote::own_text;
use super::thread::{clean_subject, conversation_key, thread, Rule, ThreadMatch};
use super::{Envelope, Parsed};
use crate::config::{Config, Distribute};
use crate::store::{
    Direction, JobKind, MessageKind, Result, ScheduledRef, Status, StoredIds, Ticket, Timestamp,
    View,
};
use crate::workflow::ops::{self, Effect, Notice};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A new ticket.
    New,
    /// A new ticket continuing a done/closed one (`follow_up_of`).
    FollowUp,
    /// Joined an open ticket.
    Append,
    /// A customer wrote on a done ticket within `policy.reopen_within`.
    Reopen,
    /// A customer answered a waiting or snoozed ticket: back to active.
    Wake,
    /// A staff Reply-All on an unassigned ticket: it is now the sender's.
    Assign,
    /// Staff mail without the contact in To/Cc: an internal note.
    Note,
    /// An auto-reply or bounce attached to its ticket (no state change), or
    /// mail on a deleted ticket.
    Attach,
    /// An auto-reply or bounce that matched no ticket: stored apart.
    Apart,
    /// Our own mail came back: stored apart, nothing else.
    Loop,
    /// Same Message-ID and content as a stored message: nothing changes.
    Duplicate,
    /// Commands or an action address from staff, obeyed.
    Command,
    /// Commands refused (unauthenticated, malformed, not allowed): the mail
    /// is kept and the sender told why.
    Refused,
    /// A report asked for by mail: scheduled to be built and sent.
    Report,
    /// A routing rule said `drop`: kept as a `deleted` ticket, nothing sent.
    Drop,
    /// A reply to a rating's confirmation: its text became the rating's
    /// comment; the ticket's state is unchanged.
    Comment,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::New => "new",
            Action::FollowUp => "follow-up",
            Action::Append => "append",
            Action::Reopen => "reopen",
            Action::Wake => "wake",
            Action::Assign => "assign",
            Action::Note => "note",
            Action::Attach => "attach",
            Action::Apart => "apart",
            Action::Loop => "loop",
            Action::Duplicate => "duplicate",
            Action::Command => "command",
            Action::Refused => "refused",
            Action::Report => "report",
            Action::Drop => "drop",
            Action::Comment => "comment",
        }
    }
}

/// Mail a decision asks for; `render` turns each into outbox bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Intent {
    /// Acknowledgement to the customer of a new ticket.
    Ack { to: String },
    /// The team's copy of this message.
    Copy { to: Vec<String> },
    /// Tell the assignee they have the ticket, or that it was reopened.
    Notice { to: String, notice: Notice },
    /// Tell the customer, once, that the question was taken into work.
    Taken { to: String },
    /// Tell the sender why their commands were not obeyed.
    Refusal { to: String, why: Vec<String> },
    /// Tell the team leads that every agent permitted for a category is
    /// full, so tickets wait (once per shortage, not per ticket).
    Capacity {
        to: Vec<String>,
        category: String,
        /// `alice@example.com: full (10 of 10)`, one per agent passed over.
        agents: Vec<String>,
        /// Tickets of the category now waiting, this one included.
        waiting: usize,
    },
    /// Tell the ticket's watchers what changed (`what`: "done", "taken by
    /// bob@…", …).
    Watchers { to: Vec<String>, what: String },
    /// Tell a second-line group that a ticket was escalated to it.
    Escalated { to: Vec<String>, group: String },
    /// A canned answer to the customer, in the ticket's thread.
    Answer { to: String, name: String },
    /// A status notice to the customer (`status_notices`); `resolution`
    /// is the text the done notice quotes.
    Status {
        to: String,
        notice: crate::workflow::close::StatusNotice,
        resolution: String,
    },
    /// Thanks for a rating; a reply to it adds a comment.
    Rated { to: String },
    /// Tell whoever used a customer's link why it did nothing.
    LinkRefused {
        to: String,
        why: Vec<String>,
        in_reply_to: String,
        subject: String,
    },
}

/// Desk-policy records a decision changes besides the ticket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeskChanges {
    /// (category key, its distribution state as it must be written).
    pub dist: Vec<(String, crate::store::DistState)>,
    /// (agent, their `#away` record; `None` = `#back`).
    pub away: Option<(String, Option<crate::store::Away>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub classification: Classification,
    pub thread: ThreadMatch,
    pub customer: Option<Identified>,
    pub action: Action,
    /// Where the message is kept: its Message-ID, or a derived id when the
    /// same Message-ID came earlier with other content.
    pub internal_id: String,
    pub kind: MessageKind,
    pub status_before: Option<Status>,
    /// The ticket as it must be written; `None` for apart/loop/duplicate.
    pub ticket: Option<Ticket>,
    pub new_ticket: bool,
    /// Another ticket that changes too (a done ticket learning its follow-up).
    pub also: Option<Ticket>,
    /// Ids to index as the ticket's thread keys (only ones not yet known).
    pub index_keys: Vec<String>,
    pub conversation: Option<String>,
    pub intents: Vec<Intent>,
    /// New acknowledgement times for the sender, when an ack is sent.
    pub ack_times: Option<(String, Vec<Timestamp>)>,
    /// (address, customer) to remember for later tickets from the address.
    pub learn: Option<(String, String)>,
    pub stored_ids: StoredIds,
    pub excerpt: String,
    /// Things worth a warning in the log (e.g. reused Message-ID).
    pub warnings: Vec<String>,
    /// Why an ack was not sent, when one could have been.
    pub no_ack_reason: Option<String>,
    /// Jobs to schedule (reminders, wake-ups, reports) and jobs to remove.
    pub schedule: Vec<(Timestamp, JobKind)>,
    pub cancel: Vec<ScheduledRef>,
    /// Commands obeyed, by name, for the log and `explain`.
    pub commands: Vec<String>,
    /// The routing rules' outcome and trace, when they ran (new tickets
    /// from outside; see `route`).
    pub routing: Option<crate::policy::RulesOutcome>,
    /// How the new ticket's owner was found (or why there is none).
    pub owner: Option<String>,
    /// What the assignee's notice says assigned the ticket, when the desk
    /// did (routing, distribution) rather than the mail's sender.
    pub notice_by: Option<String>,
    pub desk: DeskChanges,
    /// Waiting tickets given out in the same transaction because this
    /// change freed an agent's slot (`SUP-4 to alice@…`); filled by
    /// `deliver`, not by the pure decision.
    pub refilled: Vec<String>,
    /// The contact's and customer's other open and recent tickets, one
    /// line each, for the assignee's and the group's notices.
    pub similar: Vec<String>,
    /// `#merge`: what moves from the merged ticket to the survivor (which
    /// is `ticket`).
    pub merge: Option<crate::workflow::merge::MergePlan>,
}

impl Decision {
    /// A decision that changes nothing yet (action `apart`, no ticket); the
    /// rules fill in what applies.
    fn new(
        classification: Classification,
        thread: ThreadMatch,
        internal_id: String,
        stored_ids: StoredIds,
        excerpt: String,
        warnings: Vec<String>,
    ) -> Decision {
        Decision {
            classification,
            thread,
            customer: None,
            action: Action::Apart,
            internal_id,
            kind: MessageKind::Customer,
            status_before: None,
            ticket: None,
            new_ticket: false,
            also: None,
            index_keys: Vec::new(),
            conversation: None,
            intents: Vec::new(),
            ack_times: None,
            learn: None,
            stored_ids,
            excerpt,
            warnings,
            no_ack_reason: None,
            schedule: Vec::new(),
            cancel: Vec::new(),
            commands: Vec::new(),
            routing: None,
            owner: None,
            notice_by: None,
            desk: DeskChanges::default(),
            refilled: Vec::new(),
            similar: Vec::new(),
            merge: None,
        }
    }
}

/// What the pure core is told from outside the transaction: who vouched
/// for the sender (DKIM/SPF/Authentication-Results, checked before the
/// transaction because it needs DNS), and how to sign and check action
/// addresses (the secret lives in `data_dir`).
#[derive(Default, Clone, Copy)]
pub struct Context<'a> {
    pub vouched_by: Option<&'a str>,
    pub auth_notes: &'a [String],
    pub links: Option<&'a dyn LinkSigner>,
    /// The routing rules, compiled once per config load; `None` runs no
    /// rules (the default owner and distribution still apply).
    pub rules: Option<&'a crate::policy::Rules>,
    /// The mail is history being imported: routing sets category,
    /// priority, tags and watchers, but gives the ticket to nobody (who
    /// worked it shows in its replies) and queues nothing.
    pub history: bool,
    /// The canned answers `#answer` may send (the loaded templates' names).
    pub answers: &'a [String],
}

/// Signs and checks action addresses; implemented over the secret in
/// `data_dir`, and by fixed fakes in tests.
pub trait LinkSigner: Sync {
    fn sign(&self, action: &str, ticket: u64) -> String;
    fn verify(&self, action: &str, ticket: u64, sig: &str) -> bool;
    /// A customer's link for resolution `resolution` (`links::CUSTOMER_ACTIONS`).
    fn sign_resolution(&self, action: &str, ticket: u64, resolution: u32) -> String {
        self.sign(
            &crate::workflow::links::resolution_action(action, resolution),
            ticket,
        )
    }
    fn verify_resolution(&self, action: &str, ticket: u64, resolution: u32, sig: &str) -> bool {
        self.verify(
            &crate::workflow::links::resolution_action(action, resolution),
            ticket,
            sig,
        )
    }
}

const ACK_WINDOW_SECS: i64 = 3600;
const EXCERPT_CHARS: usize = 200;
const DESCRIPTION_CHARS: usize = 255;

fn truncate_chars(s: &str, n: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(n) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn token(cfg: &Config, n: u64) -> String {
    format!("{}-{}", cfg.support.token_prefix, n)
}

/// Decides what a delivered message does, with no authentication and no
/// action-link secret (commands are then refused). See the module comment.
pub fn decide(
    p: &Parsed,
    env: &Envelope,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
) -> Result<Decision> {
    decide_with(p, env, cfg, view, now, &Context::default())
}

/// [`decide`] with what was learnt outside the transaction. The SLA
/// clocks of every ticket it changes are brought up to date here, so
/// delivery, `explain` and import see the same due times and jobs.
pub fn decide_with(
    p: &Parsed,
    env: &Envelope,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    ctx: &Context,
) -> Result<Decision> {
    let mut d = decide_untracked(p, env, cfg, view, now, ctx)?;
    crate::sla::track::track_decision(&mut d, cfg, now, ctx.history);
    Ok(d)
}

fn decide_untracked(
    p: &Parsed,
    env: &Envelope,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    ctx: &Context,
) -> Result<Decision> {
    let class = classify(p, env, cfg);
    let own = own_text(&p.text);
    let excerpt = truncate_chars(&one_line(&own), EXCERPT_CHARS);
    let mut warnings = Vec::new();

    // Duplicate delivery: same id and content changes nothing. Same id with
    // other content is another message, kept under a derived id.
    let mut stored_ids = view.stored_ids(&p.message_id)?.unwrap_or_default();
    let mut internal_id = p.message_id.clone();
    if let Some((_, id)) = stored_ids
        .variants
        .iter()
        .find(|(h, _)| *h == p.content_hash)
    {
        let id = id.clone();
        return Ok(Decision {
            action: Action::Duplicate,
            no_ack_reason: Some("duplicate delivery".into()),
            ..Decision::new(
                class,
                ThreadMatch {
                    ticket: view.ticket_by_key(&p.message_id)?,
                    rule: Rule::New,
                    why: format!("already stored as <{id}>"),
                    related: Vec::new(),
                    ignored_tokens: Vec::new(),
                },
                id,
                stored_ids,
                excerpt,
                warnings,
            )
        });
    }
    if !stored_ids.variants.is_empty() {
        let short: String = p.content_hash.chars().take(16).collect();
        internal_id = format!("{}#{}", p.message_id, short);
        warnings.push(format!(
            "Message-ID <{}> seen before with other content; kept as <{internal_id}>",
            p.message_id
        ));
    }
    stored_ids
        .variants
        .push((p.content_hash.clone(), internal_id.clone()));

    let sender_customer = identify(&class.sender, cfg, view)?;
    let m = thread(
        p,
        &class,
        sender_customer.as_ref().map(|c| c.customer.as_str()),
        cfg,
        view,
    )?;

    let base = Decision {
        customer: sender_customer.clone(),
        ..Decision::new(
            class.clone(),
            m.clone(),
            internal_id,
            stored_ids,
            excerpt,
            warnings,
        )
    };

    if class.kind == MailKind::Loop {
        return Ok(Decision {
            action: Action::Loop,
            kind: MessageKind::Generated,
            ..base
        });
    }

    let target = match m.ticket {
        Some(n) => view.ticket(n)?,
        None => None,
    };
    if class.kind == MailKind::Ordinary {
        if let Some(d) = super::decide_cmd::commands(
            p,
            env,
            &class,
            cfg,
            view,
            now,
            ctx,
            target.clone(),
            &base,
            &own,
        )? {
            return Ok(d);
        }
    }
    if class.kind == MailKind::Ordinary && !class.staff {
        if let Some(d) =
            super::decide_close::rating_comment(p, &class, cfg, view, target.as_ref(), &base, &own)?
        {
            return Ok(d);
        }
    }
    follow_up(p, env, &class, cfg, view, now, ctx, target, base, &own)
}

/// Turns state-machine effects into the decision's mail and jobs.
/// Mail and jobs that state-machine effects call for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    pub intents: Vec<Intent>,
    pub schedule: Vec<(Timestamp, JobKind)>,
    pub cancel: Vec<ScheduledRef>,
    pub learn: Option<(String, String)>,
}

/// Turns state-machine effects into mail and jobs (shared by mail commands
/// and the CLI).
pub fn plan(t: &mut Ticket, fx: Vec<Effect>, cfg: &Config) -> Plan {
    let mut p = Plan::default();
    for e in fx {
        match e {
            Effect::NotifyAssignee { agent, notice } => {
                p.intents.push(Intent::Notice { to: agent, notice })
            }
            Effect::TellCustomerTaken => {
                if cfg.status_notices.active && reachable_customer(t, cfg) {
                    p.intents.push(Intent::Taken {
                        to: t.contact.clone(),
                    });
                }
            }
            Effect::CancelScheduled => p.cancel.append(&mut t.scheduled),
            Effect::ScheduleReminder { agent, at } => p.schedule.push((
                at,
                JobKind::Reminder {
                    ticket: t.number,
                    agent,
                },
            )),
            Effect::ScheduleWake { at } => {
                p.schedule.push((at, JobKind::Wake { ticket: t.number }))
            }
            Effect::Learn { address, customer } => {
                if !address.is_empty() {
                    p.learn = Some((address, customer));
                }
            }
            Effect::TellCustomer { notice } => {
                if notice.enabled(cfg) && reachable_customer(t, cfg) {
                    p.intents.push(Intent::Status {
                        to: t.contact.clone(),
                        notice,
                        // The agent's last words, when the last mail was
                        // theirs; a mail that resolves it replaces this
                        // with its own text.
                        resolution: if t.last_direction == Direction::Out {
                            t.last_excerpt.clone()
                        } else {
                            String::new()
                        },
                    });
                }
            }
            Effect::ScheduleAutoClose { at, resolution } => p.schedule.push((
                at,
                JobKind::AutoClose {
                    ticket: t.number,
                    resolution,
                },
            )),
            Effect::Escalated { group } => {
                if let Some(g) = cfg.group(&group) {
                    let to: Vec<String> = g
                        .notified()
                        .iter()
                        .map(|a| a.to_ascii_lowercase())
                        .collect();
                    if !to.is_empty() {
                        p.intents.push(Intent::Escalated {
                            to,
                            group: g.name.clone(),
                        });
                    }
                }
            }
        }
    }
    p
}

pub(super) fn plan_effects(t: &mut Ticket, fx: Vec<Effect>, cfg: &Config, d: &mut Decision) {
    let p = plan(t, fx, cfg);
    d.intents.extend(p.intents);
    d.schedule.extend(p.schedule);
    d.cancel.extend(p.cancel);
    if p.learn.is_some() {
        d.learn = p.learn;
    }
}

/// A customer address the desk may write to: not ours, not staff.
fn reachable_customer(t: &Ticket, cfg: &Config) -> bool {
    !t.contact.is_empty() && !is_ours(&t.contact, cfg) && !cfg.is_staff(&t.contact)
}

pub(super) fn is_ours(addr: &str, cfg: &Config) -> bool {
    cfg.support_tag(addr).is_some()
}

pub(super) fn recipients(p: &Parsed) -> impl Iterator<Item = &str> {
    p.to.iter().chain(p.cc.iter()).map(|a| a.email.as_str())
}

/// The follow-up rules of SPEC §3.5, applied to the matched ticket.
#[allow(clippy::too_many_arguments)]
fn follow_up(
    p: &Parsed,
    env: &Envelope,
    class: &Classification,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    ctx: &Context,
    target: Option<Ticket>,
    mut d: Decision,
    own: &str,
) -> Result<Decision> {
    let auto = matches!(class.kind, MailKind::AutoReply | MailKind::Bounce);
    let auto_kind = if class.kind == MailKind::Bounce {
        MessageKind::Bounce
    } else {
        MessageKind::AutoReply
    };

    // A done ticket past the reopen window (or a closed one) sends its
    // thread to its open follow-up, when it has one.
    let target = match target {
        Some(t) if !auto && class_is_outside(class) && too_late(&t, cfg, now) => {
            match t.followed_by.map(|f| view.ticket(f)).transpose()?.flatten() {
                Some(f) if f.status.is_open() => {
                    d.thread.why = format!(
                        "{} → its open follow-up {}",
                        d.thread.why,
                        token(cfg, f.number)
                    );
                    Some(f)
                }
                _ => Some(t),
            }
        }
        other => other,
    };

    let Some(mut t) = target else {
        if auto {
            d.action = Action::Apart;
            d.kind = auto_kind;
            return Ok(d);
        }
        return new_ticket(p, env, class, cfg, view, now, ctx, d, own, None);
    };
    d.status_before = Some(t.status);

    if auto {
        d.action = Action::Attach;
        d.kind = auto_kind;
        attach_message(&mut t, p, &d.internal_id, cfg);
        finish(p, cfg, view, &mut d, t, false)?;
        return Ok(d);
    }

    let sender = class.sender.clone();
    if class.staff {
        let contact_included = recipients(p).any(|a| a == t.contact);
        if !contact_included {
            d.action = Action::Note;
            d.kind = MessageKind::Note;
        } else {
            d.kind = MessageKind::Agent;
            t.replies += 1;
            t.last_direction = Direction::Out;
            if t.status == Status::Unassigned {
                // Directo's auto-assign by mail: no notice to the sender,
                // but the watchers hear who has it.
                d.action = Action::Assign;
                let before = t.clone();
                t.assignee = Some(sender.clone());
                t.status = Status::Active;
                d.intents
                    .extend(watcher_intent(&before, &t, &sender, &d.intents));
            } else {
                d.action = Action::Append;
            }
        }
        t.last_message_at = now;
        if d.kind == MessageKind::Agent {
            t.last_excerpt = d.excerpt.clone();
        }
        attach_message(&mut t, p, &d.internal_id, cfg);
        d.intents.extend(copy_intent(p, class, cfg, &t));
        finish(p, cfg, view, &mut d, t, false)?;
        return Ok(d);
    }

    // Outside sender.
    match t.status {
        Status::Done | Status::Closed if too_late(&t, cfg, now) => {
            let old = t.number;
            return new_ticket(p, env, class, cfg, view, now, ctx, d, own, Some(t)).map(|mut d| {
                if d.action != Action::Drop {
                    d.action = Action::FollowUp;
                }
                d.thread.why = format!(
                    "{} (done too long ago: follow-up of {})",
                    d.thread.why,
                    token(cfg, old)
                );
                d
            });
        }
        Status::Done => {
            d.action = Action::Reopen;
            let before = t.clone();
            let fx = ops::reopen_by_customer(&mut t);
            plan_effects(&mut t, fx, cfg, &mut d);
            d.intents
                .extend(watcher_intent(&before, &t, &class.sender, &d.intents));
        }
        Status::Waiting | Status::Snoozed => {
            d.action = Action::Wake;
            t.status = Status::Active;
        }
        Status::Deleted => {
            // Spam stays hidden: kept, nothing sent.
            d.action = Action::Attach;
            attach_message(&mut t, p, &d.internal_id, cfg);
            finish(p, cfg, view, &mut d, t, false)?;
            return Ok(d);
        }
        _ => d.action = Action::Append,
    }
    d.kind = MessageKind::Customer;
    t.replies += 1;
    t.last_direction = Direction::In;
    t.last_customer_message = Some(p.message_id.clone());
    t.last_message_at = now;
    t.last_excerpt = d.excerpt.clone();
    attach_message(&mut t, p, &d.internal_id, cfg);
    d.intents.extend(copy_intent(p, class, cfg, &t));
    finish(p, cfg, view, &mut d, t, false)?;
    Ok(d)
}

fn class_is_outside(c: &Classification) -> bool {
    !c.staff
}

/// Past the reopen window, or closed (read-only): a reply makes a follow-up.
fn too_late(t: &Ticket, cfg: &Config, now: Timestamp) -> bool {
    match t.status {
        Status::Closed => true,
        Status::Done => match t.ended_at {
            Some(end) => now.duration_since(end) > cfg.policy.reopen_within.signed(),
            None => false,
        },
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn new_ticket(
    p: &Parsed,
    env: &Envelope,
    class: &Classification,
    cfg: &Config,
    view: &dyn View,
    now: Timestamp,
    ctx: &Context,
    mut d: Decision,
    own: &str,
    follow_of: Option<Ticket>,
) -> Result<Decision> {
    let number = view.next_ticket_number()?;
    // A staff member who writes to a customer with the support address in
    // copy starts a ticket that is theirs; the contact is the customer.
    let outside_rcpt = recipients(p)
        .find(|a| !cfg.is_staff(a) && !is_ours(a, cfg))
        .map(str::to_string);
    let staff_started = class.staff && outside_rcpt.is_some();
    let (contact, contact_name) = if staff_started {
        let c = outside_rcpt.unwrap_or_default();
        let name =
            p.to.iter()
                .chain(p.cc.iter())
                .find(|a| a.email == c)
                .and_then(|a| a.name.clone());
        (c, name)
    } else {
        (
            class.sender.clone(),
            p.from.as_ref().and_then(|a| a.name.clone()),
        )
    };
    let customer = if staff_started {
        identify(&contact, cfg, view)?
    } else {
        d.customer.clone()
    };
    let mut t = Ticket {
        status: if staff_started {
            Status::Active
        } else {
            Status::Unassigned
        },
        assignee: staff_started.then(|| class.sender.clone()),
        subject: clean_subject(&p.subject, &cfg.support.token_prefix),
        description: truncate_chars(own, DESCRIPTION_CHARS),
        contact: contact.clone(),
        contact_name,
        customer: customer.as_ref().map(|c| c.customer.clone()),
        last_direction: if class.staff {
            Direction::Out
        } else {
            Direction::In
        },
        follow_up_of: follow_of.as_ref().map(|t| t.number),
        related: d.thread.related.clone(),
        last_excerpt: d.excerpt.clone(),
        priority: cfg
            .default_priority()
            .map(|p| p.id.clone())
            .unwrap_or_else(|| "normal".into()),
        ..Ticket::new(number, now, &cfg.support.language)
    };
    if !class.staff {
        t.last_customer_message = Some(p.message_id.clone());
    }
    d.customer = customer;
    d.kind = if class.staff {
        MessageKind::Agent
    } else {
        MessageKind::Customer
    };
    d.action = Action::New;
    d.new_ticket = true;
    if let Some(c) = &t.customer {
        if !contact.is_empty() {
            d.learn = Some((contact.clone(), c.clone()));
        }
    }
    if let Some(mut old) = follow_of {
        old.followed_by = Some(number);
        d.also = Some(old);
    }
    attach_message(&mut t, p, &d.internal_id, cfg);

    // Routing (mail from outside only): its mail goes after the ack.
    let mut routed = Vec::new();
    if !class.staff {
        let mark = d.intents.len();
        let dropped =
            super::route::route_new(p, env, class, cfg, view, now, ctx, own, &mut t, &mut d)?;
        routed = d.intents.split_off(mark);
        if dropped {
            // Kept, and nothing at all is sent: no ack, no team copy.
            d.no_ack_reason = Some("a routing rule dropped the mail".into());
            finish(p, cfg, view, &mut d, t, true)?;
            return Ok(d);
        }
        if ack_refusal(class, cfg).is_some() {
            // Whoever must not get an ack must not get "taken" either;
            // the customer is still to be told when someone takes it.
            if routed.iter().any(|i| matches!(i, Intent::Taken { .. })) {
                t.notified = false;
            }
            routed.retain(|i| !matches!(i, Intent::Taken { .. }));
        }
    }

    // Acknowledge the customer, unless they must not be answered.
    if !class.staff {
        match ack_refusal(class, cfg) {
            Some(why) => d.no_ack_reason = Some(why),
            None => {
                let since = now - jiff::SignedDuration::from_secs(ACK_WINDOW_SECS);
                let mut times: Vec<Timestamp> = view
                    .ack_times(&class.sender)?
                    .into_iter()
                    .filter(|t| *t > since)
                    .collect();
                if times.len() >= cfg.policy.ack_rate_limit as usize {
                    d.no_ack_reason = Some(format!(
                        "ack rate limit: {} acks to {} in the last hour",
                        times.len(),
                        class.sender
                    ));
                } else {
                    times.push(now);
                    d.intents.push(Intent::Ack {
                        to: class.sender.clone(),
                    });
                    d.ack_times = Some((class.sender.clone(), times));
                }
            }
        }
    }
    d.intents.extend(routed);
    d.intents.extend(copy_intent(p, class, cfg, &t));
    finish(p, cfg, view, &mut d, t, true)?;
    Ok(d)
}

/// Why no acknowledgement may go to this sender, if any (SPEC §4).
fn ack_refusal(class: &Classification, cfg: &Config) -> Option<String> {
    if class.sender.is_empty() {
        return Some("no sender address".into());
    }
    if is_ours(&class.sender, cfg) {
        return Some("sender is our own address".into());
    }
    if class.suppress_ack {
        let why = if class.reasons.is_empty() {
            "automatic answers suppressed".to_string()
        } else {
            class.reasons.join("; ")
        };
        return Some(why);
    }
    None
}

/// Team copy recipients: the roster (or the assignee), never the sender,
/// never someone the mail already reached directly.
pub(super) fn copy_intent(
    p: &Parsed,
    class: &Classification,
    cfg: &Config,
    t: &Ticket,
) -> Option<Intent> {
    let direct: Vec<&str> = recipients(p).collect();
    let group = match (&t.assignee, &t.group) {
        (None, Some(g)) => cfg.group(g),
        _ => None,
    };
    let pool: Vec<String> = match (cfg.team.distribute, &t.assignee, group) {
        // A group-owned ticket nobody has taken: the group's notify list.
        (_, None, Some(g)) => g
            .notified()
            .iter()
            .map(|a| a.to_ascii_lowercase())
            .collect(),
        (Distribute::Assignee, Some(a), _) => vec![a.clone()],
        _ => cfg
            .team
            .agents
            .iter()
            .map(|a| a.email.to_ascii_lowercase())
            .collect(),
    };
    // Watchers hear of every customer mail, also in the quiet
    // `team.distribute: assignee` mode.
    let pool = pool.into_iter().chain(t.watchers.iter().cloned());
    let mut to: Vec<String> = Vec::new();
    for a in pool {
        if a != class.sender && !direct.contains(&a.as_str()) && !to.contains(&a) {
            to.push(a);
        }
    }
    (!to.is_empty()).then_some(Intent::Copy { to })
}

pub(super) fn attach_message(t: &mut Ticket, p: &Parsed, internal_id: &str, cfg: &Config) {
    if !t.message_ids.iter().any(|m| m == internal_id) {
        t.message_ids.push(internal_id.to_string());
    }
    let addrs = p
        .from
        .iter()
        .chain(p.to.iter())
        .chain(p.cc.iter())
        .map(|a| a.email.as_str());
    for a in addrs {
        if !a.is_empty() && !is_ours(a, cfg) && !t.participants.iter().any(|x| x == a) {
            t.participants.push(a.to_string());
        }
    }
}

/// Indexes the message's keys for `t` and stores `t` in the decision.
pub(super) fn finish(
    p: &Parsed,
    _cfg: &Config,
    view: &dyn View,
    d: &mut Decision,
    t: Ticket,
    _is_new: bool,
) -> Result<()> {
    // The message's own id always points at its ticket. Ids it references
    // become keys of this ticket only when no ticket holds them yet, so a
    // message joining by token never steals another ticket's thread.
    let mut keys = Vec::new();
    match view.ticket_by_key(&p.message_id)? {
        Some(n) if n == t.number => {}
        _ => keys.push(p.message_id.clone()),
    }
    if d.internal_id != p.message_id {
        keys.push(d.internal_id.clone());
    }
    for id in p.in_reply_to.iter().chain(p.references.iter()) {
        if !keys.contains(id) && view.ticket_by_key(id)?.is_none() {
            keys.push(id.clone());
        }
    }
    d.index_keys = keys;
    if let Some(k) = p.thread_index.as_deref().and_then(conversation_key) {
        if view.ticket_by_conversation(&k)?.is_none() {
            d.conversation = Some(k);
        }
    }
    let notified = d.intents.iter().any(|i| {
        matches!(
            i,
            Intent::Notice {
                notice: Notice::Assigned,
                ..
            } | Intent::Escalated { .. }
        )
    });
    if notified {
        d.similar = similar_lines(view, &t, _cfg)?;
    }
    d.ticket = Some(t);
    Ok(())
}

/// How many other tickets the notices and `ticket show` list.
pub const SIMILAR_SHOWN: usize = 5;
/// A closed-over ticket still counts as recent this long after its last mail.
const SIMILAR_RECENT_DAYS: i64 = 30;

/// The contact's and the customer's other tickets that are open, or had
/// mail in the last 30 days, newest first, at most [`SIMILAR_SHOWN`]: from
/// the similar-ticket index, never a scan. Merged and deleted tickets are
/// left out, and so are entries whose ticket has since changed contact or
/// customer.
pub fn similar_tickets(view: &dyn View, t: &Ticket) -> Result<Vec<Ticket>> {
    let mut numbers: Vec<(crate::store::SimilarBy, String, u64)> = Vec::new();
    for (by, key) in crate::store::similar_keys(t) {
        for n in view.similar_index(by, &key)? {
            numbers.push((by, key.clone(), n));
        }
    }
    // Newest first; both lists may hold the same ticket.
    numbers.sort_by_key(|x| std::cmp::Reverse(x.2));
    numbers.dedup_by_key(|x| x.2);
    let recent = t
        .last_message_at
        .checked_sub(jiff::SignedDuration::from_hours(24 * SIMILAR_RECENT_DAYS))
        .unwrap_or(t.last_message_at);
    let mut out = Vec::new();
    for (by, key, n) in numbers {
        if out.len() >= SIMILAR_SHOWN {
            break;
        }
        if n == t.number {
            continue;
        }
        let Some(o) = view.ticket(n)? else { continue };
        let still = crate::store::similar_keys(&o)
            .iter()
            .any(|(b, k)| *b == by && *k == key);
        let shown = still
            && o.merged_into.is_none()
            && o.status != Status::Deleted
            && (o.status.is_open() || o.last_message_at >= recent);
        if shown {
            out.push(o);
        }
    }
    Ok(out)
}

/// `SUP-3  ACTIVE  Printer broken (bob@example.com, 2026-11-20)`.
pub fn similar_line(o: &Ticket, cfg: &Config) -> String {
    format!(
        "{}  {}  {} ({}, {})",
        token(cfg, o.number),
        crate::render::desk::status_name(&cfg.support.language, o.status),
        o.subject,
        o.assignee.as_deref().unwrap_or("unassigned"),
        o.started_at.strftime("%Y-%m-%d")
    )
}

pub fn similar_lines(view: &dyn View, t: &Ticket, cfg: &Config) -> Result<Vec<String>> {
    Ok(similar_tickets(view, t)?
        .iter()
        .map(|o| similar_line(o, cfg))
        .collect())
}

/// What watchers are told about a change from `before` to `after` made by
/// `actor`, or `None` when nothing they follow changed. The actor and
/// whoever already gets a notice of their own are left out.
pub fn watcher_intent(
    before: &Ticket,
    after: &Ticket,
    actor: &str,
    intents: &[Intent],
) -> Option<Intent> {
    let mut what = Vec::new();
    match (&before.escalated, &after.escalated) {
        (None, Some(e)) => what.push(format!("escalated to {}", e.group)),
        (Some(a), Some(b)) if a.group != b.group => what.push(format!("escalated to {}", b.group)),
        (Some(_), None) => what.push("returned to the first line".to_string()),
        _ => {}
    }
    if before.assignee != after.assignee {
        match &after.assignee {
            Some(a) if a.eq_ignore_ascii_case(actor) => what.push(format!("taken by {a}")),
            Some(a) => what.push(format!("given to {a}")),
            None if after.escalated.is_none() || before.escalated == after.escalated => {
                what.push("released: nobody has it now".to_string())
            }
            None => {}
        }
    }
    if before.status != after.status {
        let s = match after.status {
            Status::Done => Some("done"),
            Status::Closed => Some("closed"),
            Status::Deleted => Some("marked as spam"),
            Status::Waiting => Some("waiting for the customer"),
            Status::Snoozed => Some("snoozed"),
            Status::Active | Status::Unassigned if !before.status.is_open() => Some("reopened"),
            _ => None,
        };
        what.extend(s.map(str::to_string));
    }
    if after.merged_into != before.merged_into {
        if let Some(n) = after.merged_into {
            what.push(format!("merged into ticket {n}"));
        }
    }
    if what.is_empty() {
        return None;
    }
    let told: Vec<&str> = intents
        .iter()
        .filter_map(|i| match i {
            Intent::Notice { to, .. } => Some(to.as_str()),
            _ => None,
        })
        .collect();
    let actor = actor.trim().to_ascii_lowercase();
    let to: Vec<String> = after
        .watchers
        .iter()
        .filter(|w| **w != actor && !told.contains(&w.as_str()))
        .filter(|w| after.assignee.as_deref() != Some(w.as_str()))
        .cloned()
        .collect();
    (!to.is_empty()).then(|| Intent::Watchers {
        to,
        what: what.join("; "),
    })
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
