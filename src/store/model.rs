//! Records kept in the store. Each is serialized with a leading version byte
//! (see `encode`/`decode`) so later versions can read older records.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

pub type Timestamp = jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Unassigned,
    Active,
    Waiting,
    Snoozed,
    Done,
    Closed,
    Deleted,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Unassigned,
        Status::Active,
        Status::Waiting,
        Status::Snoozed,
        Status::Done,
        Status::Closed,
        Status::Deleted,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Unassigned => "unassigned",
            Status::Active => "active",
            Status::Waiting => "waiting",
            Status::Snoozed => "snoozed",
            Status::Done => "done",
            Status::Closed => "closed",
            Status::Deleted => "deleted",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s.to_ascii_lowercase().as_str() {
            "unassigned" => Status::Unassigned,
            "active" => Status::Active,
            "waiting" => Status::Waiting,
            "snoozed" => Status::Snoozed,
            "done" => Status::Done,
            "closed" => Status::Closed,
            "deleted" => Status::Deleted,
            _ => return None,
        })
    }
    /// Open tickets are the ones later mail of their thread joins.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            Status::Unassigned | Status::Active | Status::Waiting | Status::Snoozed
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
}

/// What a stored message is to its ticket (SPEC §7 `messages[].kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Customer,
    Agent,
    Note,
    AutoReply,
    Bounce,
    Command,
    Generated,
}

impl MessageKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageKind::Customer => "customer",
            MessageKind::Agent => "agent",
            MessageKind::Note => "note",
            MessageKind::AutoReply => "auto_reply",
            MessageKind::Bounce => "bounce",
            MessageKind::Command => "command",
            MessageKind::Generated => "generated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub number: u64,
    pub status: Status,
    pub assignee: Option<String>,
    pub started_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub subject: String,
    pub description: String,
    pub contact: String,
    pub contact_name: Option<String>,
    pub customer: Option<String>,
    pub notified: bool,
    pub reopened: bool,
    pub replies: u32,
    pub last_direction: Direction,
    pub last_message_at: Timestamp,
    pub follow_up_of: Option<u64>,
    /// The newest follow-up ticket opened because a reply came too late to
    /// reopen this one: later mail of the thread joins it while it is open.
    pub followed_by: Option<u64>,
    /// Tickets a message's keys also pointed at (never merged by themselves).
    pub related: Vec<u64>,
    /// Received mail attached to the ticket, first first (SPEC §7).
    pub message_ids: Vec<String>,
    /// Addresses seen in From/To/Cc of its messages (lower-case), for the
    /// token participant check.
    pub participants: Vec<String>,
    /// Outbound mail that failed for good: (outbox id, recipient, reply).
    pub delivery_failures: Vec<DeliveryFailure>,
    /// The language the customer is answered in.
    pub language: String,
    /// Pending reminders and wake-ups of this ticket (SPEC: reminders), so
    /// done/release/spam can remove them.
    #[serde(default)]
    pub scheduled: Vec<ScheduledRef>,
    /// The own text (quotes stripped) of the last customer or agent mail:
    /// the preview in reports and notices.
    #[serde(default)]
    pub last_excerpt: String,
    /// A `categories[].id`, set by routing or `#category`. The desk-policy
    /// fields below all default, so stores written before them still decode.
    #[serde(default)]
    pub category: Option<String>,
    /// A `priorities[].id`; tickets from before priorities existed read as
    /// `normal`, the SPEC's default.
    #[serde(default = "default_priority")]
    pub priority: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Agents kept informed (lower-cased addresses).
    #[serde(default)]
    pub watchers: Vec<String>,
    /// The group that owns the ticket while nobody in it has taken it
    /// (a rule's `assignee: <group>`).
    #[serde(default)]
    pub group: Option<String>,
    /// Set while the ticket is with a second line (`#escalate`), so
    /// `#deescalate` knows where it came from (SPEC §9 `escalated`).
    #[serde(default)]
    pub escalated: Option<Escalation>,
    /// The ticket this one was merged into (`#merge`): it is then `closed`
    /// and every key of it resolves to the survivor.
    #[serde(default)]
    pub merged_into: Option<u64>,
    /// The Message-ID of the customer's newest mail: `#answer` replies in
    /// its thread.
    #[serde(default)]
    pub last_customer_message: Option<String>,
    /// Service-level state (SPEC §9 `sla`): the policy, due times, first
    /// response and breaches. Present on every ticket; `policy` is `None`
    /// when no SLA policy matched.
    #[serde(default)]
    pub sla: SlaState,
    /// When an agent first took the ticket (SPEC §9 `work_started_at`).
    #[serde(default)]
    pub work_started_at: Option<Timestamp>,
    /// How many times the ticket came back after `done` (by customer
    /// reply, reopen link or `#reopen`).
    #[serde(default)]
    pub reopen_count: u32,
    /// Spans the clock stood still (`waiting`, `snoozed`, and `done` until
    /// a reopen), oldest first; `until` is `None` while it lasts. The SLA
    /// due times and the response metrics subtract them.
    #[serde(default)]
    pub pauses: Vec<Pause>,
    /// How many times the ticket was resolved (`done`): resolution mail
    /// links (confirm, reopen, ratings) carry it, so a link from an older
    /// resolution no longer acts.
    #[serde(default)]
    pub resolutions: u32,
    /// When it was closed (confirmed, auto-closed or merged).
    #[serde(default)]
    pub closed_at: Option<Timestamp>,
    /// The customer's rating of the resolution (SPEC §9 `rating`).
    #[serde(default)]
    pub rating: Option<Rating>,
}

impl Ticket {
    /// A ticket with nothing in it yet but its number, start and language:
    /// what a new ticket is built from (`Ticket { …, ..Ticket::new(…) }`),
    /// so adding a field means one default here, not one per builder.
    pub fn new(number: u64, started_at: Timestamp, language: &str) -> Ticket {
        Ticket {
            number,
            status: Status::Unassigned,
            assignee: None,
            started_at,
            ended_at: None,
            subject: String::new(),
            description: String::new(),
            contact: String::new(),
            contact_name: None,
            customer: None,
            notified: false,
            reopened: false,
            replies: 0,
            last_direction: Direction::In,
            last_message_at: started_at,
            follow_up_of: None,
            followed_by: None,
            related: Vec::new(),
            message_ids: Vec::new(),
            participants: Vec::new(),
            delivery_failures: Vec::new(),
            language: language.to_string(),
            scheduled: Vec::new(),
            last_excerpt: String::new(),
            category: None,
            priority: default_priority(),
            tags: Vec::new(),
            watchers: Vec::new(),
            group: None,
            escalated: None,
            merged_into: None,
            last_customer_message: None,
            sla: SlaState::default(),
            work_started_at: None,
            reopen_count: 0,
            pauses: Vec::new(),
            resolutions: 0,
            closed_at: None,
            rating: None,
        }
    }
}

/// A span the ticket's clock stood still.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub from: Timestamp,
    pub until: Option<Timestamp>,
    /// The status that paused it (`waiting`, `snoozed`, `done`).
    pub status: Status,
}

/// Which promise of an SLA policy a deadline is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum SlaTarget {
    FirstResponse,
    Resolution,
}

impl SlaTarget {
    pub fn as_str(&self) -> &'static str {
        match self {
            SlaTarget::FirstResponse => "first_response",
            SlaTarget::Resolution => "resolution",
        }
    }
}

/// A ticket's service-level state (SPEC §9 `sla`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SlaState {
    /// `sla.policies[].id` that matched; `None`: no SLA.
    #[serde(default)]
    pub policy: Option<String>,
    /// `None` when there is no target, it was met, or the clock is paused.
    #[serde(default)]
    pub first_response_due: Option<Timestamp>,
    #[serde(default)]
    pub resolution_due: Option<Timestamp>,
    /// The first agent mail that reached the customer (not an ack, not a
    /// note).
    #[serde(default)]
    pub first_response_at: Option<Timestamp>,
    /// Some deadline was missed.
    #[serde(default)]
    pub breached: bool,
    /// Which deadlines were missed, and when each was due.
    #[serde(default)]
    pub breaches: Vec<(SlaTarget, Timestamp)>,
    /// Deadlines already warned of: a warning goes out once per deadline.
    #[serde(default)]
    pub warned: Vec<(SlaTarget, Timestamp)>,
    /// The pending warn and breach jobs of this ticket.
    #[serde(default)]
    pub jobs: Vec<SlaJobRef>,
}

/// A pending SLA job as its ticket remembers it: the job, and the deadline
/// it is for, so a recompute can tell which jobs still apply without
/// reading them from the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaJobRef {
    pub id: u64,
    /// When the job runs.
    pub due: Timestamp,
    pub target: SlaTarget,
    /// `true`: the breach job; `false`: the warning.
    pub breach: bool,
    /// The deadline it was scheduled for.
    pub deadline: Timestamp,
}

impl SlaJobRef {
    pub fn scheduled(&self) -> ScheduledRef {
        ScheduledRef {
            id: self.id,
            due: self.due,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RatingValue {
    Good,
    Neutral,
    Bad,
}

impl RatingValue {
    pub fn as_str(&self) -> &'static str {
        match self {
            RatingValue::Good => "good",
            RatingValue::Neutral => "neutral",
            RatingValue::Bad => "bad",
        }
    }
    pub fn parse(s: &str) -> Option<RatingValue> {
        match s.trim().to_ascii_lowercase().as_str() {
            "good" => Some(RatingValue::Good),
            "neutral" => Some(RatingValue::Neutral),
            "bad" => Some(RatingValue::Bad),
            _ => None,
        }
    }
}

/// The customer's rating of a resolution (one per resolution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub value: RatingValue,
    pub at: Timestamp,
    /// Added by a reply to the rating's confirmation.
    #[serde(default)]
    pub comment: Option<String>,
    /// `Ticket::resolutions` when it was given.
    #[serde(default)]
    pub resolution: u32,
}

/// Where an escalated ticket came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    /// The second-line group that has it now.
    pub group: String,
    /// Who held it on the first line (`None`: nobody had taken it).
    pub first_line: Option<String>,
    /// The group it had on the first line, if a group owned it.
    #[serde(default)]
    pub first_group: Option<String>,
    pub at: Timestamp,
}

fn default_priority() -> String {
    "normal".into()
}

/// Tickets an agent holds, per open status: the load auto-distribution
/// compares with `max_open`. Kept as a counter beside the tickets (updated
/// with every ticket write) so distributing a ticket never scans them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentLoad {
    pub active: u32,
    pub waiting: u32,
    pub snoozed: u32,
}

impl AgentLoad {
    /// The counter for `status`; `None` for statuses that are never load.
    fn slot(&mut self, status: Status) -> Option<&mut u32> {
        match status {
            Status::Active => Some(&mut self.active),
            Status::Waiting => Some(&mut self.waiting),
            Status::Snoozed => Some(&mut self.snoozed),
            _ => None,
        }
    }

    pub fn get(&self, status: Status) -> u32 {
        match status {
            Status::Active => self.active,
            Status::Waiting => self.waiting,
            Status::Snoozed => self.snoozed,
            _ => 0,
        }
    }

    /// Adds `delta` (±1) to the counter of `status`, never below zero.
    pub fn add(&mut self, status: Status, delta: i64) {
        if let Some(c) = self.slot(status) {
            let v = i64::from(*c).saturating_add(delta).max(0);
            *c = u32::try_from(v).unwrap_or(u32::MAX);
        }
    }

    /// Whether a ticket in `status` held by someone is load at all.
    pub fn counts(status: Status) -> bool {
        matches!(status, Status::Active | Status::Waiting | Status::Snoozed)
    }

    /// The sum over the statuses a category counts (`distribution.count`).
    pub fn total(&self, counted: &[String]) -> u32 {
        counted
            .iter()
            .filter_map(|s| Status::parse(s))
            .map(|s| self.get(s))
            .sum()
    }

    pub fn is_zero(&self) -> bool {
        *self == AgentLoad::default()
    }
}

/// The two similar-ticket indexes (Pyrus' "other tickets of this
/// contact/customer"): address or customer id → their ticket numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimilarBy {
    Contact,
    Customer,
}

/// How many ticket numbers one similar-ticket index entry keeps, newest
/// last: enough for "the last few", bounded so a prolific sender's entry
/// stays one small leaf.
pub const SIMILAR_KEEP: usize = 50;

/// An agent away by mail (`#away until …`), until `#back` or `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Away {
    pub since: Timestamp,
    /// `None`: until `#back`.
    pub until: Option<Timestamp>,
}

impl Away {
    pub fn covers(&self, at: Timestamp) -> bool {
        self.since <= at && self.until.is_none_or(|u| at < u)
    }
}

/// Distribution state of one category (or of the desk-wide pool, for
/// `assignee: distribute` on a ticket with no category).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DistState {
    /// The agent given the previous ticket: round robin goes on after them.
    pub cursor: Option<String>,
    /// Tickets that found every permitted agent away or full, oldest first;
    /// the next agent whose load drops gets the first still unassigned.
    pub waiting: Vec<u64>,
    /// The team leads were told that everyone is full; cleared when a
    /// ticket is distributed again, so they hear once per shortage.
    pub leads_told: bool,
}

/// A job of the durable scheduler, as a ticket remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledRef {
    pub id: u64,
    pub due: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobKind {
    /// Remind the assignee of an active ticket.
    Reminder { ticket: u64, agent: String },
    /// Wake a snoozed ticket.
    Wake { ticket: u64 },
    /// The daily digest to the team leads.
    Digest,
    /// A report asked for by mail (`support+report@`): built when the job
    /// runs, from every ticket, which a delivery transaction cannot scan.
    Report {
        to: String,
        all: bool,
        in_reply_to: String,
        subject: String,
        /// `support+report-<category>@`: only that category's tickets.
        #[serde(default)]
        category: Option<String>,
    },
    /// Warn the assignee (or the team) that a deadline is near. `due` is
    /// the deadline it was scheduled for: a job whose deadline moved since
    /// does nothing.
    SlaWarn {
        ticket: u64,
        target: SlaTarget,
        due: Timestamp,
    },
    /// A deadline passed: tell the assignee and `team.leads`.
    SlaBreach {
        ticket: u64,
        target: SlaTarget,
        due: Timestamp,
    },
    /// `policy.autoclose_after` ran out on a resolved ticket; `resolution`
    /// is `Ticket::resolutions` when it was scheduled.
    AutoClose { ticket: u64, resolution: u32 },
    /// `policy.retention`: erase the raw messages of tickets closed longer
    /// than the set time (one sweep a day).
    Retention,
}

impl JobKind {
    /// The name in logs, `status` and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Reminder { .. } => "reminder",
            JobKind::Wake { .. } => "wake",
            JobKind::Report { .. } => "report",
            JobKind::Digest => "digest",
            JobKind::SlaWarn { .. } => "sla_warn",
            JobKind::SlaBreach { .. } => "sla_breach",
            JobKind::AutoClose { .. } => "autoclose",
            JobKind::Retention => "retention",
        }
    }

    /// An SLA job's (ticket, target, deadline, is it the breach); `None`
    /// for every other kind.
    pub fn sla_deadline(&self) -> Option<(u64, SlaTarget, Timestamp, bool)> {
        match self {
            JobKind::SlaWarn {
                ticket,
                target,
                due,
            } => Some((*ticket, *target, *due, false)),
            JobKind::SlaBreach {
                ticket,
                target,
                due,
            } => Some((*ticket, *target, *due, true)),
            _ => None,
        }
    }

    /// The ticket the job is about, if any.
    pub fn ticket(&self) -> Option<u64> {
        match self {
            JobKind::Reminder { ticket, .. }
            | JobKind::Wake { ticket }
            | JobKind::SlaWarn { ticket, .. }
            | JobKind::SlaBreach { ticket, .. }
            | JobKind::AutoClose { ticket, .. } => Some(*ticket),
            JobKind::Digest | JobKind::Report { .. } | JobKind::Retention => None,
        }
    }
}

/// Scheduled work: survives restarts, runs late rather than never, and is
/// removed in the same transaction as its effects, so it fires once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub due: Timestamp,
    pub kind: JobKind,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    pub outbox_id: u64,
    pub kind: String,
    pub recipients: Vec<String>,
    pub reply: String,
    pub at: Timestamp,
}

/// Where the raw bytes of a message live: our own append-only spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolRef {
    pub file: u32,
    pub offset: u64,
    pub len: u64,
    /// CRC-32C-ish check (first 8 bytes of SHA-256) of the stored bytes.
    pub check: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The Message-ID as received (or derived), without brackets.
    pub message_id: String,
    /// Unique key inside the store: the Message-ID, or a derived id when the
    /// same Message-ID came with other content.
    pub internal_id: String,
    pub ticket: Option<u64>,
    pub kind: MessageKind,
    pub from: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub date: Option<String>,
    pub received_at: Timestamp,
    pub excerpt: String,
    pub rule: String,
    pub content_hash: String,
    pub queue_id: Option<String>,
    pub raw: SpoolRef,
    pub problems: Vec<String>,
    /// When the raw bytes were erased (`policy.retention`); the record
    /// stays, `raw` then points at zeros of the same length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_erased: Option<Timestamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    Pending,
    Sent,
    Failed,
    /// Taken out of the queue by an operator (`outbox drop`); kept, with
    /// who and why, so the history of a ticket's mail stays whole.
    Dropped,
}

impl OutboxState {
    pub const ALL: [OutboxState; 4] = [
        OutboxState::Pending,
        OutboxState::Sent,
        OutboxState::Failed,
        OutboxState::Dropped,
    ];
    pub fn parse(s: &str) -> Option<OutboxState> {
        OutboxState::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s.trim()))
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            OutboxState::Pending => "pending",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
            OutboxState::Dropped => "dropped",
        }
    }
}

/// Who dropped an outbox entry, when and why (`outbox drop`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub at: Timestamp,
    pub by: String,
    pub reason: String,
}

/// One outbound mail, written in the same commit as the state change that
/// caused it. The bytes are `head` followed by the spooled `body` slice, so
/// a team copy reuses the customer's body (attachments and all) unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub id: u64,
    pub ticket: Option<u64>,
    pub kind: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub message_id: String,
    pub head: Vec<u8>,
    /// Body bytes taken from a spooled raw message: (ref, start offset in it).
    pub body: Option<(SpoolRef, u64)>,
    pub created_at: Timestamp,
    pub next_attempt_at: Timestamp,
    pub attempts: u32,
    pub last_reply: Option<String>,
    pub state: OutboxState,
    pub sent_at: Option<Timestamp>,
    /// Set by `outbox drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
    /// When an operator last made it due again (`outbox retry`): the
    /// sender's `give_up_after` counts from here, so a retried entry gets
    /// a whole new window instead of failing at its first 4xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_at: Option<Timestamp>,
}

/// What we know about a Message-ID we have stored (duplicate detection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredIds {
    /// (content hash, internal id) of each stored variant.
    pub variants: Vec<(String, String)>,
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![1u8];
    // Serializing plain data structs to JSON cannot fail.
    if serde_json::to_writer(&mut out, v).is_err() {
        out.truncate(1);
    }
    out
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    match b.split_first() {
        Some((1, rest)) => serde_json::from_slice(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("unknown record version {v}")),
        None => Err("empty record".into()),
    }
}
