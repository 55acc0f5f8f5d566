//! THE per-message path, top to bottom:
//!
//! 1. parse the raw bytes once, outside the committer (never fails);
//! 2. hand the committer one job: it appends the raw message to the spool
//!    and, inside one transaction, runs the pure `decide` against the
//!    current state, renders the outbound mail and writes ticket, message,
//!    indexes and outbox rows ([`apply`]);
//! 3. the committer makes the batch durable; only then does this return
//!    `Stored`, and the LMTP session answers `250` per recipient. Any fault
//!    is `TempFail` → `451 4.3.0`, and the MTA retries;
//! 4. log the SPEC's `delivered …` line (only here) and wake the sender.

use crate::config::Config;
use crate::ingest::decide::{decide_with, token, Action, Context, Decision, Intent, LinkSigner};
use crate::ingest::{parse::parse, Envelope, Parsed};
use crate::lmtp::{BoxFuture, Handler, Outcome};
use crate::policy::Rules;
use crate::render::{desk, render_all, render_all_with, Templates};
use crate::store::{
    JobKind, MessageRecord, OutboxEntry, Result, ScheduledRef, SpoolRef, Store, Ticket, Timestamp,
    View, Writes,
};
use crate::workflow::auth::{self, AuthResult, Resolver};
use crate::workflow::links::{self, Secret};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use tokio::sync::Notify;
use tracing::Instrument;

/// What the daemon's sessions deliver through. Config, templates and the
/// routing rules compiled from that config sit behind one lock, so a reload
/// swaps them together between messages and a message never meets rules
/// from another config.
pub struct Deliverer {
    state: RwLock<(Arc<Config>, Arc<Templates>, Rules)>,
    store: Store,
    wake: Arc<Notify>,
    /// Wakes the scheduler when a decision scheduled something.
    schedule_wake: Arc<Notify>,
    secret: Option<Arc<Secret>>,
    resolver: Option<Arc<Resolver>>,
    /// Last delivery and last error, for `postdesk status`.
    activity: Arc<crate::control::status::Activity>,
}

impl LinkSigner for Secret {
    fn sign(&self, action: &str, ticket: u64) -> String {
        links::sign(self, action, ticket)
    }
    fn verify(&self, action: &str, ticket: u64, sig: &str) -> bool {
        links::verify(self, action, ticket, sig)
    }
}

/// Does this mail try to command the desk? Only then is authentication
/// (which may need DNS) worth doing: a staff sender, and an action address
/// or `#` lines at the top of the own text.
fn carries_commands(p: &Parsed, env: &Envelope, cfg: &Config) -> bool {
    // Customer mail is most of the traffic: decide that first, and strip
    // quotes (the costly part) only for staff mail without a plus-tag.
    let staff = p.from.as_ref().is_some_and(|a| cfg.is_staff(&a.email));
    staff
        && (env
            .rcpt_to
            .iter()
            .any(|r| cfg.support_tag(r).is_some_and(|t| !t.is_empty()))
            || crate::ingest::quote::own_text(&p.text)
                .trim_start()
                .starts_with('#'))
}

impl Deliverer {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: Arc<Config>,
        templates: Arc<Templates>,
        rules: Rules,
        store: Store,
        wake: Arc<Notify>,
        schedule_wake: Arc<Notify>,
        secret: Option<Arc<Secret>>,
        resolver: Option<Arc<Resolver>>,
    ) -> Self {
        Deliverer {
            state: RwLock::new((cfg, templates, rules)),
            store,
            wake,
            schedule_wake,
            secret,
            resolver,
            activity: Arc::default(),
        }
    }

    pub fn activity(&self) -> Arc<crate::control::status::Activity> {
        self.activity.clone()
    }

    pub fn current(&self) -> (Arc<Config>, Arc<Templates>) {
        let (cfg, tpl, _) = self.snapshot();
        (cfg, tpl)
    }

    /// Config, templates and rules of one load, together.
    pub fn snapshot(&self) -> (Arc<Config>, Arc<Templates>, Rules) {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// After a reload changed the SLA policies or calendars: every open
    /// ticket's due times and warn/breach jobs follow the new config now,
    /// and the scheduler looks again. Logged; a failure keeps the old jobs
    /// (each is still checked against the ticket when it fires).
    pub async fn retrack_sla(&self) {
        let (cfg, _) = self.current();
        match crate::sla::track::retrack_open(&self.store, cfg).await {
            Ok(n) => {
                tracing::info!(tickets = n, "SLA clocks of open tickets recomputed");
                self.schedule_wake.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "SLA clocks not recomputed after reload"),
        }
    }

    /// `rules` must be compiled from `cfg` (`Rules::new`), once per load.
    pub fn replace(&self, cfg: Arc<Config>, templates: Arc<Templates>, rules: Rules) {
        match self.state.write() {
            Ok(mut g) => *g = (cfg, templates, rules),
            Err(poisoned) => *poisoned.into_inner() = (cfg, templates, rules),
        }
    }

    pub async fn deliver(&self, env: Envelope, raw: Vec<u8>) -> Outcome {
        let started = Instant::now();
        let parsed = Arc::new(parse(&raw));
        let span = tracing::info_span!(
            "message",
            queue_id = %parsed.queue_id.as_deref().unwrap_or("-"),
            message_id = %parsed.message_id
        );
        async move {
            let (cfg, tpl, rules) = self.snapshot();
            let auth = match (&self.resolver, carries_commands(&parsed, &env, &cfg)) {
                (Some(r), true) => Some(auth::check(&cfg, &raw, &env, &parsed, r).await),
                _ => None,
            };
            let now = Timestamp::now();
            let res = commit_delivery(
                &self.store,
                Arc::new(raw),
                parsed.clone(),
                env,
                cfg.clone(),
                tpl,
                rules,
                now,
                auth,
                self.secret.clone(),
            )
            .await;
            let ms = started.elapsed().as_millis();
            crate::metrics::delivery_time(started.elapsed());
            match res {
                Ok(d) => {
                    log_delivered(&parsed, &d, &cfg, ms);
                    crate::metrics::delivered(d.thread.rule.as_str(), d.action.as_str());
                    self.activity
                        .delivered(&parsed.message_id, &outcome_id(&d, &cfg));
                    if !d.intents.is_empty() || !d.refilled.is_empty() {
                        self.wake.notify_one();
                    }
                    if !d.schedule.is_empty() || !d.refilled.is_empty() {
                        self.schedule_wake.notify_one();
                    }
                    Outcome::Stored {
                        id: outcome_id(&d, &cfg),
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, ms, "delivery failed, answering 451");
                    self.activity.failed(&parsed.message_id, &e.to_string());
                    Outcome::TempFail {
                        reason: e.to_string(),
                    }
                }
            }
        }
        .instrument(span)
        .await
    }
}

impl Handler for Deliverer {
    fn check_rcpt(&self, rcpt: &str) -> std::result::Result<(), String> {
        let (cfg, _) = self.current();
        match cfg.support_tag(rcpt) {
            Some(_) => Ok(()),
            None => Err(format!("not the support address {}", cfg.support.address)),
        }
    }

    fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> BoxFuture<'_, Outcome> {
        Box::pin(Deliverer::deliver(self, envelope, raw))
    }
}

/// Decides and writes one delivered message in one transaction, durably.
#[allow(clippy::too_many_arguments)]
pub async fn commit_delivery(
    store: &Store,
    raw: Arc<Vec<u8>>,
    parsed: Arc<Parsed>,
    env: Envelope,
    cfg: Arc<Config>,
    tpl: Arc<Templates>,
    rules: Rules,
    now: Timestamp,
    auth: Option<AuthResult>,
    secret: Option<Arc<Secret>>,
) -> Result<Decision> {
    store
        .commit(Some(raw), move |tx, raw_ref| {
            let vouched_by = auth
                .as_ref()
                .and_then(|a| a.trusted_by(&cfg.commands.trust));
            let notes: &[String] = auth.as_ref().map(|a| a.reasons.as_slice()).unwrap_or(&[]);
            let ctx = Context {
                vouched_by,
                auth_notes: notes,
                links: secret.as_deref().map(|s| s as &dyn LinkSigner),
                rules: Some(&rules),
                history: false,
                answers: tpl.answers(),
            };
            decide_and_apply_with(
                tx,
                raw_ref,
                &parsed,
                &env,
                &cfg,
                &tpl,
                now,
                Mode::Live,
                &ctx,
            )
        })
        .await
}

/// Live delivery sends what the decision asks for; an import of history
/// records the same state and sends nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Import,
}

/// The body of the delivery transaction; shared with `import`.
#[allow(clippy::too_many_arguments)]
pub fn decide_and_apply(
    tx: &dyn Writes,
    raw_ref: Option<SpoolRef>,
    parsed: &Parsed,
    env: &Envelope,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
    mode: Mode,
) -> Result<Decision> {
    decide_and_apply_with(
        tx,
        raw_ref,
        parsed,
        env,
        cfg,
        tpl,
        now,
        mode,
        &Context::default(),
    )
}

/// [`decide_and_apply`] with authentication results and the link signer.
#[allow(clippy::too_many_arguments)]
pub fn decide_and_apply_with(
    tx: &dyn Writes,
    raw_ref: Option<SpoolRef>,
    parsed: &Parsed,
    env: &Envelope,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
    mode: Mode,
    ctx: &Context,
) -> Result<Decision> {
    let mut d = decide_with(parsed, env, cfg, as_view(tx), now, ctx)?;
    // The ticket as it was, to see whose load this change lowers.
    let before = match &d.ticket {
        Some(t) if !d.new_ticket => tx.ticket(t.number)?,
        _ => None,
    };
    if mode == Mode::Import {
        d.intents.clear();
        d.ack_times = None;
        d.no_ack_reason = Some("import: nothing is sent".into());
    }
    if mode == Mode::Import {
        // History: no reminders or reports for what happened long ago.
        d.schedule.clear();
    }
    let mails = render_all_with(&d, parsed, cfg, tpl, now, ctx.links);
    let raw_ref = raw_ref.ok_or_else(|| crate::store::Error::Other("no raw message".into()))?;
    apply(tx, &d, parsed, mails, raw_ref, now)?;
    if mode == Mode::Live {
        let mut freed: Vec<String> = before
            .iter()
            .zip(d.ticket.iter())
            .filter_map(|(b, a)| crate::workload::freed(b, a))
            .collect();
        if let Some((agent, None)) = &d.desk.away {
            freed.push(agent.clone());
        }
        d.refilled = crate::workload::refill(tx, &freed, cfg, tpl, ctx.links, now)?;
    }
    Ok(d)
}

/// Writes a decision through the transaction: message record, ticket,
/// thread keys, conversation key, duplicate index, ack times, learned
/// customer, outbox rows (and their Message-IDs as thread keys).
pub fn apply(
    tx: &dyn Writes,
    d: &Decision,
    p: &Parsed,
    mails: Vec<OutboxEntry>,
    raw: SpoolRef,
    now: Timestamp,
) -> Result<()> {
    if d.action == Action::Duplicate {
        return Ok(());
    }
    let record = MessageRecord {
        message_id: p.message_id.clone(),
        internal_id: d.internal_id.clone(),
        ticket: d.ticket.as_ref().map(|t| t.number),
        kind: d.kind,
        from: d.classification.sender.clone(),
        to: p.to.iter().map(|a| a.email.clone()).collect(),
        cc: p.cc.iter().map(|a| a.email.clone()).collect(),
        subject: p.subject.clone(),
        date: p.date.clone(),
        received_at: now,
        excerpt: d.excerpt.clone(),
        rule: d.thread.rule.as_str().to_string(),
        content_hash: p.content_hash.clone(),
        queue_id: p.queue_id.clone(),
        raw,
        problems: p.problems.clone(),
        raw_erased: None,
    };
    tx.put_stored_ids(&p.message_id, &d.stored_ids)?;
    write_desk(tx, d)?;
    let Some(t) = &d.ticket else {
        tx.put_apart(&record)?;
        // A report request is kept apart and still schedules its report.
        for (due, kind) in &d.schedule {
            tx.add_job(*due, kind.clone(), now)?;
        }
        for m in mails {
            tx.add_outbox(m)?;
        }
        return Ok(());
    };
    if d.new_ticket {
        let n = tx.take_ticket_number()?;
        if n != t.number {
            return Err(crate::store::Error::Other(format!(
                "ticket number moved from {} to {n} inside one transaction",
                t.number
            )));
        }
    }
    let seq = t
        .message_ids
        .iter()
        .position(|m| *m == d.internal_id)
        .unwrap_or(t.message_ids.len()) as u32;
    tx.put_message(t.number, seq, &record)?;
    if let Some(m) = &d.merge {
        write_merge(tx, m)?;
    }
    for k in &d.index_keys {
        tx.index_thread_key(k, t.number)?;
    }
    if let Some(c) = &d.conversation {
        tx.index_conversation(c, t.number)?;
    }
    if let Some((addr, times)) = &d.ack_times {
        tx.put_ack_times(addr, times)?;
    }
    if let Some((addr, customer)) = &d.learn {
        tx.learn_customer(addr, customer)?;
    }
    let mut t = t.clone();
    let mut also = d.also.clone();
    // The other ticket's SLA jobs are remembered on it, not on this one.
    let (theirs, ours): (Vec<_>, Vec<_>) = d.schedule.iter().cloned().partition(|(_, k)| {
        matches!(k, JobKind::SlaWarn { .. } | JobKind::SlaBreach { .. })
            && also.as_ref().map(|o| o.number) == k.ticket()
    });
    if let Some(other) = also.as_mut() {
        write_jobs(tx, other, &[], &theirs, now)?;
        tx.put_ticket(other)?;
    }
    write_jobs(tx, &mut t, &d.cancel, &ours, now)?;
    for mut m in mails {
        if let Some((r, _)) = m.body.as_mut() {
            *r = raw;
        }
        tx.index_thread_key(&m.message_id, t.number)?;
        tx.add_outbox(m)?;
    }
    tx.put_ticket(&t)
}

/// The merged-away side of a merge: its messages rewritten under the
/// survivor (same spool bytes), its thread keys pointed at the survivor
/// (keeping their stored ids), its jobs removed, and the ticket itself
/// closed with its pointer. The caller writes the survivor.
pub fn write_merge(tx: &dyn Writes, m: &crate::workflow::merge::MergePlan) -> Result<()> {
    for (old, new, rec) in &m.moves {
        tx.put_message(m.survivor, *new, rec)?;
        tx.delete_message(m.merged.number, *old)?;
    }
    for old in &m.drops {
        tx.delete_message(m.merged.number, *old)?;
    }
    for k in &m.keys {
        tx.index_thread_key(k, m.survivor)?;
    }
    for r in &m.cancel {
        tx.take_job(*r)?;
    }
    tx.put_ticket(&m.merged)
}

/// `ticket merge A B` from the CLI: `Ok(Err(why))` is a refusal.
pub fn merge_transaction(
    tx: &dyn Writes,
    a: u64,
    b: u64,
    cfg: &Config,
    now: Timestamp,
) -> Result<std::result::Result<serde_json::Value, String>> {
    let (Some(ta), Some(tb)) = (
        crate::workflow::merge::resolve(tx, a)?,
        crate::workflow::merge::resolve(tx, b)?,
    ) else {
        return Ok(Err(format!(
            "no ticket {}",
            if tx.ticket(a)?.is_none() {
                token(cfg, a)
            } else {
                token(cfg, b)
            }
        )));
    };
    let (mut s, mut plan) =
        match crate::workflow::merge::merge(ta, tb, as_view(tx), &cfg.support.token_prefix, now)? {
            Ok(x) => x,
            Err(why) => return Ok(Err(why)),
        };
    let gone = crate::sla::track::track(&mut plan.merged, false, cfg, now);
    plan.cancel.extend(gone.cancel);
    write_merge(tx, &plan)?;
    let sla = crate::sla::track::track(&mut s, false, cfg, now);
    write_jobs(tx, &mut s, &sla.cancel, &sla.schedule, now)?;
    tx.put_ticket(&s)?;
    Ok(Ok(serde_json::json!({
        "survivor": token(cfg, s.number),
        "merged": token(cfg, plan.merged.number),
        "messages_moved": plan.moves.len(),
        "status": s.status,
        "assignee": s.assignee,
    })))
}

/// The decision's desk-policy records: distribution states, `#away`.
fn write_desk(tx: &dyn Writes, d: &Decision) -> Result<()> {
    for (key, state) in &d.desk.dist {
        tx.put_dist_state(key, state)?;
    }
    if let Some((agent, away)) = &d.desk.away {
        tx.put_agent_away(agent, away.as_ref())?;
    }
    Ok(())
}

fn outcome_id(d: &Decision, cfg: &Config) -> String {
    match (&d.ticket, d.action) {
        (_, Action::Duplicate) => format!("<{}> (duplicate)", d.internal_id),
        (Some(t), _) => token(cfg, t.number),
        (None, _) => format!("<{}> (kept apart)", d.internal_id),
    }
}

/// The one `delivered …` line per message (SPEC §7).
pub fn log_delivered(p: &Parsed, d: &Decision, cfg: &Config, ms: u128) {
    let ticket = d
        .ticket
        .as_ref()
        .map(|t| token(cfg, t.number))
        .or_else(|| d.thread.ticket.map(|n| token(cfg, n)))
        .unwrap_or_else(|| "-".into());
    let status = match (&d.status_before, &d.ticket) {
        (Some(b), Some(t)) if *b != t.status => format!("{b}->{}", t.status),
        (Some(b), _) => b.to_string(),
        (None, Some(t)) => format!("new->{}", t.status),
        (None, None) => "-".into(),
    };
    let from = if d.classification.sender.is_empty() {
        "<>"
    } else {
        d.classification.sender.as_str()
    };
    tracing::info!(
        queue_id = %p.queue_id.as_deref().unwrap_or("-"),
        message_id = %format_args!("<{}>", p.message_id),
        from = %from,
        ticket = %ticket,
        rule = %d.thread.rule.as_str(),
        action = %d.action.as_str(),
        status = %status,
        ms = ms as u64,
        "delivered"
    );
    if let Some(why) = d
        .no_ack_reason
        .as_deref()
        .filter(|w| w.starts_with("ack rate limit"))
    {
        tracing::info!(message_id = %format_args!("<{}>", p.message_id), "no ack: {why}");
    }
    for w in &d.warnings {
        tracing::warn!(message_id = %format_args!("<{}>", p.message_id), "{w}");
    }
    if !d.thread.ignored_tokens.is_empty() {
        tracing::info!(
            message_id = %format_args!("<{}>", p.message_id),
            "token ignored: {}",
            d.thread.ignored_tokens.join("; ")
        );
    }
}

fn as_view(w: &dyn Writes) -> &dyn View {
    w
}

/// Runs the decision against a read-only view, writing nothing: `explain`.
pub fn explain(
    store: Option<&Store>,
    raw: &[u8],
    env: &Envelope,
    cfg: &Config,
    tpl: &Templates,
    now: Timestamp,
) -> Result<(Parsed, Decision, Vec<OutboxEntry>)> {
    let parsed = parse(raw);
    // A dry run on demand, not the delivery path: compiling here is fine.
    let rules = Rules::new(cfg).map_err(|e| crate::store::Error::Other(e.to_string()))?;
    let ctx = Context {
        rules: Some(&rules),
        answers: tpl.answers(),
        ..Context::default()
    };
    let run = |view: &dyn View| {
        let d = decide_with(&parsed, env, cfg, view, now, &ctx)?;
        let mails = render_all(&d, &parsed, cfg, tpl, now);
        Ok((d, mails))
    };
    let (d, mails) = match store {
        Some(s) => s.with_read_view(run)?,
        None => run(&crate::store::EmptyView)?,
    };
    Ok((parsed, d, mails))
}

/// Removes cancelled jobs and adds scheduled ones; a ticket remembers its
/// reminders, wake-ups and autoclose so done/release/confirm can remove them.
pub(crate) fn write_jobs(
    tx: &dyn Writes,
    t: &mut Ticket,
    cancel: &[ScheduledRef],
    schedule: &[(Timestamp, JobKind)],
    now: Timestamp,
) -> Result<()> {
    for r in cancel {
        tx.take_job(*r)?;
    }
    for (due, kind) in schedule {
        let r = tx.add_job(*due, kind.clone(), now)?;
        if matches!(
            kind,
            JobKind::Reminder { .. } | JobKind::Wake { .. } | JobKind::AutoClose { .. }
        ) {
            t.scheduled.push(r);
        }
        if let Some(j) = crate::sla::track::job_ref(t, r, kind) {
            t.sla.jobs.push(j);
        }
    }
    Ok(())
}

/// What a command given outside mail (the CLI) did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandOutcome {
    pub token: String,
    pub command: String,
    pub status_before: crate::store::Status,
    pub status_after: crate::store::Status,
    pub assignee: Option<String>,
    pub category: Option<String>,
    pub priority: String,
    pub tags: Vec<String>,
    pub sent: Vec<String>,
    /// Waiting tickets this change let distribution give out.
    pub distributed: Vec<String>,
}

/// A command on ticket `n` by `actor` through the same state machine as
/// mail: `Ok(Err(why))` is a refusal, nothing changed.
#[allow(clippy::too_many_arguments)]
pub fn command_transaction(
    tx: &dyn Writes,
    n: u64,
    cmd: &crate::workflow::command::Command,
    actor: &str,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> Result<std::result::Result<CommandOutcome, String>> {
    commands_transaction(
        tx,
        n,
        std::slice::from_ref(cmd),
        cmd.name(),
        actor,
        cfg,
        tpl,
        signer,
        now,
    )
}

/// Several commands on one ticket, all or nothing (`ticket set`): the
/// first refusal leaves the ticket as it was. `name` is what the outcome
/// and log call it.
#[allow(clippy::too_many_arguments)]
pub fn commands_transaction(
    tx: &dyn Writes,
    n: u64,
    cmds: &[crate::workflow::command::Command],
    name: &str,
    actor: &str,
    cfg: &Config,
    tpl: &Templates,
    signer: Option<&dyn LinkSigner>,
    now: Timestamp,
) -> Result<std::result::Result<CommandOutcome, String>> {
    let Some(mut t) = tx.ticket(n)? else {
        return Ok(Err(format!("no ticket {}", token(cfg, n))));
    };
    let before = t.clone();
    let mut fx = Vec::new();
    for cmd in cmds {
        match crate::workflow::ops::apply(&mut t, cmd, actor, cfg, now) {
            Ok(mut more) => fx.append(&mut more),
            Err(e) if cmds.len() > 1 => {
                return Ok(Err(format!("{}: {e}; nothing was changed", cmd.name())))
            }
            Err(e) => return Ok(Err(e)),
        }
    }
    let mut plan = crate::ingest::decide::plan(&mut t, fx, cfg);
    let sla = crate::sla::track::track(&mut t, false, cfg, now);
    plan.cancel.extend(sla.cancel);
    plan.schedule.extend(sla.schedule);
    write_jobs(tx, &mut t, &plan.cancel, &plan.schedule, now)?;
    if let Some((addr, customer)) = &plan.learn {
        tx.learn_customer(addr, customer)?;
    }
    let cause = format!("cli:{}:{}:{}", name, n, now.as_millisecond());
    let mut sent = Vec::new();
    let mut intents = plan.intents.clone();
    intents.extend(crate::ingest::decide::watcher_intent(
        &before, &t, actor, &intents,
    ));
    let similar = if intents.iter().any(|i| matches!(i, Intent::Notice { .. })) {
        crate::ingest::decide::similar_lines(tx, &t, cfg)?
    } else {
        Vec::new()
    };
    for i in &intents {
        let mail = match i {
            Intent::Watchers { to, what } => desk::watchers(
                to,
                what,
                actor,
                &t,
                &format!("{cause}:watch"),
                cfg,
                tpl,
                now,
            ),
            Intent::Notice { to, notice } => desk::notice(
                to,
                *notice,
                actor,
                &t,
                &similar,
                &format!("{cause}:{to}"),
                cfg,
                tpl,
                signer,
                now,
            ),
            Intent::Taken { to } => desk::taken(to, &t, &cause, cfg, tpl, now),
            other => {
                match crate::render::close::render_intent(other, &t, &cause, cfg, tpl, signer, now)
                {
                    Some(m) => m,
                    None => continue,
                }
            }
        };
        sent.push(format!("{} to {}", mail.kind, mail.rcpt_to.join(",")));
        tx.index_thread_key(&mail.message_id, t.number)?;
        tx.add_outbox(mail)?;
    }
    tx.put_ticket(&t)?;
    let freed: Vec<String> = crate::workload::freed(&before, &t).into_iter().collect();
    let distributed = crate::workload::refill(tx, &freed, cfg, tpl, signer, now)?;
    Ok(Ok(CommandOutcome {
        token: token(cfg, n),
        command: name.into(),
        status_before: before.status,
        status_after: t.status,
        assignee: t.assignee.clone(),
        category: t.category.clone(),
        priority: t.priority.clone(),
        tags: t.tags.clone(),
        sent,
        distributed,
    }))
}
