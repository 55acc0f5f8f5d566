//! Response metrics and the `postdesk stats` report (issue #9 item 6), PURE.
//!
//! Owns: the per-ticket figures (work started, first response and
//! resolution time in open time minus pauses, reopens, SLA outcome per
//! target, rating), the aggregator that is fed one ticket at a time and
//! groups them by agent, customer or category, and the report's text, JSON
//! and CSV forms. Must not: read the store or the clock; the caller streams
//! tickets in (`Store::for_each_ticket`) and passes `now`. docs/operations.md
//! (`stats`) has the definitions users read.
//!
//! Exact percentiles need every value, so each group keeps its first
//! response and resolution times as vectors: memory grows with the tickets
//! started inside the window (16 bytes per ticket and group, twice: the
//! group and the total), never with the whole store.

use crate::sla::{Calendar, Calendars, SlaConfig, SlaPolicy};
use crate::store::{RatingValue, SlaTarget, Status, Ticket, Timestamp};
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How one SLA target of one ticket turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The policy has no such target, or the ticket has no policy.
    NoTarget,
    /// There is a target and no answer yet (no first response, not done).
    Pending,
    Met,
    Breached,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::NoTarget => "no_target",
            Outcome::Pending => "pending",
            Outcome::Met => "met",
            Outcome::Breached => "breached",
        }
    }
}

/// What `stats` and `ticket show` know about one ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// The first take (`work_started_at`); `None`: nobody took it yet.
    pub work_started_at: Option<Timestamp>,
    /// Open time from arrival to the first agent answer, pauses removed.
    #[serde(with = "opt_secs", rename = "first_response_seconds")]
    pub first_response: Option<SignedDuration>,
    /// Open time from arrival to `done` (`ended_at`), pauses removed.
    #[serde(with = "opt_secs", rename = "resolution_seconds")]
    pub resolution: Option<SignedDuration>,
    pub reopen_count: u32,
    pub first_response_sla: Outcome,
    pub resolution_sla: Outcome,
    pub rating: Option<RatingValue>,
}

/// Durations travel as whole seconds, as everywhere in the JSON.
mod opt_secs {
    use jiff::SignedDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<SignedDuration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SignedDuration>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.map(SignedDuration::from_secs))
    }
}

/// The ticket's policy as configured now, found by the id the ticket
/// recorded (ids compare without regard to case, like other config ids).
fn policy_of<'a>(t: &Ticket, sla: &'a SlaConfig) -> Option<&'a SlaPolicy> {
    let id = t.sla.policy.as_deref()?;
    sla.policies
        .iter()
        .find(|p| p.id.trim().eq_ignore_ascii_case(id.trim()))
}

/// Open time between `a` and `b` on `cal`, not counting open time inside
/// any of the ticket's pauses. Pauses may overlap (a snooze during a
/// wait), so they are merged first: overlapping time is removed once.
pub fn open_time(
    cal: &Calendar,
    a: Timestamp,
    b: Timestamp,
    pauses: &[crate::store::Pause],
) -> SignedDuration {
    if b <= a {
        return SignedDuration::ZERO;
    }
    let mut spans: Vec<(Timestamp, Timestamp)> = pauses
        .iter()
        .map(|p| (p.from.max(a), p.until.unwrap_or(b).min(b)))
        .filter(|(from, to)| to > from)
        .collect();
    spans.sort();
    let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(spans.len());
    for (from, to) in spans {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    let paused: SignedDuration = merged
        .iter()
        .map(|&(from, to)| cal.business_between(from, to))
        .fold(SignedDuration::ZERO, |acc, d| acc + d);
    (cal.business_between(a, b) - paused).max(SignedDuration::ZERO)
}

fn outcome(
    t: &Ticket,
    target: SlaTarget,
    limit: Option<SignedDuration>,
    measured: Option<SignedDuration>,
) -> Outcome {
    // A breach the daemon recorded stands, even if the policy changed since.
    if t.sla.breaches.iter().any(|(k, _)| *k == target) {
        return Outcome::Breached;
    }
    match (limit, measured) {
        (None, _) => Outcome::NoTarget,
        (Some(_), None) => Outcome::Pending,
        (Some(l), Some(m)) if m > l => Outcome::Breached,
        (Some(_), Some(_)) => Outcome::Met,
    }
}

/// The figures of one ticket, on its SLA policy's calendar (around the
/// clock without a policy, with a policy that names no calendar, or one
/// whose policy or calendar is no longer configured).
pub fn figures(t: &Ticket, sla: &SlaConfig, calendars: &Calendars) -> Figures {
    let policy = policy_of(t, sla);
    let cal: Cow<'_, Calendar> = policy
        .and_then(|p| calendars.for_policy(p))
        .unwrap_or_else(|| Cow::Owned(Calendar::always_open()));
    let first_response = t
        .sla
        .first_response_at
        .map(|at| open_time(&cal, t.started_at, at, &t.pauses));
    let resolution = t
        .ended_at
        .map(|at| open_time(&cal, t.started_at, at, &t.pauses));
    let fr_limit = policy.and_then(|p| p.first_response).map(|d| d.signed());
    let res_limit = policy.and_then(|p| p.resolution).map(|d| d.signed());
    Figures {
        work_started_at: t.work_started_at,
        first_response,
        resolution,
        reopen_count: t.reopen_count,
        first_response_sla: outcome(t, SlaTarget::FirstResponse, fr_limit, first_response),
        resolution_sla: outcome(t, SlaTarget::Resolution, res_limit, resolution),
        rating: t.rating.as_ref().map(|r| r.value),
    }
}

/// What `--by` groups on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Agent,
    Customer,
    Category,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "agent" => Some(GroupBy::Agent),
            "customer" => Some(GroupBy::Customer),
            "category" => Some(GroupBy::Category),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            GroupBy::Agent => "agent",
            GroupBy::Customer => "customer",
            GroupBy::Category => "category",
        }
    }

    fn key(&self, t: &Ticket) -> String {
        match self {
            GroupBy::Agent => t.assignee.clone().unwrap_or_else(|| "(unassigned)".into()),
            GroupBy::Customer => t.customer.clone().unwrap_or_else(|| "(none)".into()),
            GroupBy::Category => t.category.clone().unwrap_or_else(|| "(none)".into()),
        }
    }
}

/// The label of the total row in text and CSV (JSON has `total`).
pub const TOTAL: &str = "(total)";

/// Nearest-rank percentile: the smallest value with at least `p` percent
/// of the values at or below it (rank ⌈p/100 · n⌉). Always one of the
/// values, never an interpolation; the median of an even count is the
/// lower middle value. `values` must be sorted.
pub fn nearest_rank(values: &[i64], p: u32) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    values.get(rank - 1).copied()
}

/// `part / whole` in percent, one decimal; `None` when `whole` is zero.
fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

#[derive(Debug, Default, Clone)]
struct Acc {
    // The command's first columns, with their first meaning (see `Row`).
    started: u64,
    done: u64,
    open: u64,
    reopened: u64,
    to_done: Vec<i64>,
    // The tickets started in the window.
    tickets: u64,
    resolved: u64,
    work_started: u64,
    reopened_tickets: u64,
    reopens: u64,
    first_response: Vec<i64>,
    resolution: Vec<i64>,
    fr_met: u64,
    fr_breached: u64,
    fr_pending: u64,
    res_met: u64,
    res_breached: u64,
    res_pending: u64,
    good: u64,
    neutral: u64,
    bad: u64,
}

impl Acc {
    fn backlog(&mut self, t: &Ticket, from: Timestamp) {
        if t.started_at >= from {
            self.started += 1;
        }
        if t.status.is_open() {
            self.open += 1;
        }
        if t.reopened {
            self.reopened += 1;
        }
        if let Some(end) = t.ended_at.filter(|e| *e >= from) {
            self.done += 1;
            self.to_done
                .push(end.duration_since(t.started_at).as_secs().max(0));
        }
    }

    fn cohort(&mut self, t: &Ticket, f: &Figures) {
        self.tickets += 1;
        if t.ended_at.is_some() {
            self.resolved += 1;
        }
        if f.work_started_at.is_some() {
            self.work_started += 1;
        }
        if f.reopen_count > 0 {
            self.reopened_tickets += 1;
        }
        self.reopens += u64::from(f.reopen_count);
        if let Some(d) = f.first_response {
            self.first_response.push(d.as_secs());
        }
        if let Some(d) = f.resolution {
            self.resolution.push(d.as_secs());
        }
        match f.first_response_sla {
            Outcome::Met => self.fr_met += 1,
            Outcome::Breached => self.fr_breached += 1,
            Outcome::Pending => self.fr_pending += 1,
            Outcome::NoTarget => {}
        }
        match f.resolution_sla {
            Outcome::Met => self.res_met += 1,
            Outcome::Breached => self.res_breached += 1,
            Outcome::Pending => self.res_pending += 1,
            Outcome::NoTarget => {}
        }
        match f.rating {
            Some(RatingValue::Good) => self.good += 1,
            Some(RatingValue::Neutral) => self.neutral += 1,
            Some(RatingValue::Bad) => self.bad += 1,
            None => {}
        }
    }

    fn row(mut self, group: String) -> Row {
        self.to_done.sort_unstable();
        self.first_response.sort_unstable();
        self.resolution.sort_unstable();
        Row {
            group,
            started: self.started,
            done: self.done,
            open: self.open,
            reopened: self.reopened,
            median_seconds_to_done: nearest_rank(&self.to_done, 50),
            tickets: self.tickets,
            resolved: self.resolved,
            work_started: self.work_started,
            reopened_tickets: self.reopened_tickets,
            reopens: self.reopens,
            first_response_median_seconds: nearest_rank(&self.first_response, 50),
            first_response_p90_seconds: nearest_rank(&self.first_response, 90),
            resolution_median_seconds: nearest_rank(&self.resolution, 50),
            resolution_p90_seconds: nearest_rank(&self.resolution, 90),
            first_response_sla_met: self.fr_met,
            first_response_sla_breached: self.fr_breached,
            first_response_sla_pending: self.fr_pending,
            first_response_sla_pct: pct(self.fr_met, self.fr_met + self.fr_breached),
            resolution_sla_met: self.res_met,
            resolution_sla_breached: self.res_breached,
            resolution_sla_pending: self.res_pending,
            resolution_sla_pct: pct(self.res_met, self.res_met + self.res_breached),
            rating_good: self.good,
            rating_neutral: self.neutral,
            rating_bad: self.bad,
            rating_good_pct: pct(self.good, self.good + self.neutral + self.bad),
        }
    }
}

/// One group's line of the report. Field names are the `--json` contract
/// (docs/operations.md); durations are whole seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The agent, customer id or category (`(unassigned)`, `(none)`).
    pub group: String,
    /// Tickets started in the window.
    pub started: u64,
    /// Tickets done in the window, whenever they started.
    pub done: u64,
    /// Tickets open now, whenever they started (the backlog).
    pub open: u64,
    /// Tickets marked reopened, whenever they started.
    pub reopened: u64,
    /// Calendar time from arrival to done of the `done` tickets.
    pub median_seconds_to_done: Option<i64>,
    /// From here on: the tickets started in the window.
    pub tickets: u64,
    /// Done or closed now.
    pub resolved: u64,
    /// Taken by an agent at least once.
    pub work_started: u64,
    pub reopened_tickets: u64,
    pub reopens: u64,
    pub first_response_median_seconds: Option<i64>,
    pub first_response_p90_seconds: Option<i64>,
    pub resolution_median_seconds: Option<i64>,
    pub resolution_p90_seconds: Option<i64>,
    pub first_response_sla_met: u64,
    pub first_response_sla_breached: u64,
    pub first_response_sla_pending: u64,
    /// met / (met + breached), percent with one decimal; `None` without
    /// any outcome.
    pub first_response_sla_pct: Option<f64>,
    pub resolution_sla_met: u64,
    pub resolution_sla_breached: u64,
    pub resolution_sla_pending: u64,
    pub resolution_sla_pct: Option<f64>,
    pub rating_good: u64,
    pub rating_neutral: u64,
    pub rating_bad: u64,
    /// good / all ratings, percent with one decimal.
    pub rating_good_pct: Option<f64>,
}

/// The whole `stats` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `agent`, `customer` or `category`.
    pub by: String,
    /// The window as asked, e.g. `30d`.
    pub since: String,
    /// Start of the window.
    pub from: Timestamp,
    pub rows: Vec<Row>,
    pub total: Row,
}

/// Fed one ticket at a time; holds only the counters and, for the tickets
/// inside the window, their durations.
pub struct Aggregator<'a> {
    by: GroupBy,
    from: Timestamp,
    sla: &'a SlaConfig,
    calendars: &'a Calendars,
    groups: BTreeMap<String, Acc>,
    total: Acc,
}

impl<'a> Aggregator<'a> {
    pub fn new(
        by: GroupBy,
        from: Timestamp,
        sla: &'a SlaConfig,
        calendars: &'a Calendars,
    ) -> Aggregator<'a> {
        Aggregator {
            by,
            from,
            sla,
            calendars,
            groups: BTreeMap::new(),
            total: Acc::default(),
        }
    }

    /// Deleted (spam) tickets are hidden from reports (SPEC §5). A ticket
    /// merged into another is not a conversation of its own: it counts in
    /// the first columns as before, but not among the window's tickets.
    pub fn add(&mut self, t: &Ticket) {
        if t.status == Status::Deleted {
            return;
        }
        let in_window = t.started_at >= self.from && t.merged_into.is_none();
        let f = in_window.then(|| figures(t, self.sla, self.calendars));
        let g = self.groups.entry(self.by.key(t)).or_default();
        for acc in [g, &mut self.total] {
            acc.backlog(t, self.from);
            if let Some(f) = &f {
                acc.cohort(t, f);
            }
        }
    }

    pub fn finish(self, since: &str) -> Report {
        Report {
            by: self.by.as_str().to_string(),
            since: since.to_string(),
            // Whole seconds: the instant is for people and spreadsheets.
            from: Timestamp::from_second(self.from.as_second()).unwrap_or(self.from),
            rows: self.groups.into_iter().map(|(k, a)| a.row(k)).collect(),
            total: self.total.row(TOTAL.to_string()),
        }
    }
}

impl Report {
    /// The JSON answer: each row also carries its group under the `by`
    /// name (`"agent": "alice@…"`), as the command always did.
    pub fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut v = serde_json::to_value(self)?;
        if let Some(rows) = v.get_mut("rows").and_then(|r| r.as_array_mut()) {
            for r in rows {
                if let Some(obj) = r.as_object_mut() {
                    let g = obj.get("group").cloned().unwrap_or_default();
                    obj.insert(self.by.clone(), g);
                }
            }
        }
        Ok(v)
    }

    /// Header, then one line per group, then the total; CRLF line ends,
    /// fields quoted as RFC 4180 says. Empty field = no value.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        let head: Vec<&str> = std::iter::once(self.by.as_str())
            .chain(CSV_COLUMNS.iter().copied())
            .collect();
        push_csv_line(&mut out, head.iter().map(|s| s.to_string()));
        for r in self.rows.iter().chain(std::iter::once(&self.total)) {
            push_csv_line(&mut out, csv_fields(r));
        }
        out
    }

    /// The readable table: counts, open-time medians and p90s, SLA
    /// compliance and the share of good ratings.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let w = self
            .rows
            .iter()
            .map(|r| r.group.chars().count())
            .max()
            .unwrap_or(0)
            .max(self.by.len())
            .clamp(TOTAL.len(), 40);
        let _ = writeln!(
            out,
            "{:<w$} {:>7} {:>5} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>6}",
            self.by.to_uppercase(),
            "TICKETS",
            "OPEN",
            "RESOLVED",
            "REOPENS",
            "1ST MED",
            "1ST P90",
            "RES MED",
            "RES P90",
            "1ST SLA",
            "RES SLA",
            "GOOD",
        );
        for r in self.rows.iter().chain(std::iter::once(&self.total)) {
            let _ = writeln!(
                out,
                "{:<w$} {:>7} {:>5} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>6}",
                r.group,
                r.tickets,
                r.open,
                r.resolved,
                r.reopens,
                dur(r.first_response_median_seconds),
                dur(r.first_response_p90_seconds),
                dur(r.resolution_median_seconds),
                dur(r.resolution_p90_seconds),
                pct_text(r.first_response_sla_pct),
                pct_text(r.resolution_sla_pct),
                pct_text(r.rating_good_pct),
            );
        }
        let _ = writeln!(
            out,
            "window: tickets started since {} ({}); OPEN is every open ticket; times are open time minus pauses",
            self.from, self.since
        );
        out
    }
}

const CSV_COLUMNS: &[&str] = &[
    "started",
    "done",
    "open",
    "reopened",
    "median_seconds_to_done",
    "tickets",
    "resolved",
    "work_started",
    "reopened_tickets",
    "reopens",
    "first_response_median_seconds",
    "first_response_p90_seconds",
    "resolution_median_seconds",
    "resolution_p90_seconds",
    "first_response_sla_met",
    "first_response_sla_breached",
    "first_response_sla_pending",
    "first_response_sla_pct",
    "resolution_sla_met",
    "resolution_sla_breached",
    "resolution_sla_pending",
    "resolution_sla_pct",
    "rating_good",
    "rating_neutral",
    "rating_bad",
    "rating_good_pct",
];

fn csv_fields(r: &Row) -> Vec<String> {
    let o = |x: Option<i64>| x.map(|v| v.to_string()).unwrap_or_default();
    let p = |x: Option<f64>| x.map(|v| format!("{v:.1}")).unwrap_or_default();
    vec![
        r.group.clone(),
        r.started.to_string(),
        r.done.to_string(),
        r.open.to_string(),
        r.reopened.to_string(),
        o(r.median_seconds_to_done),
        r.tickets.to_string(),
        r.resolved.to_string(),
        r.work_started.to_string(),
        r.reopened_tickets.to_string(),
        r.reopens.to_string(),
        o(r.first_response_median_seconds),
        o(r.first_response_p90_seconds),
        o(r.resolution_median_seconds),
        o(r.resolution_p90_seconds),
        r.first_response_sla_met.to_string(),
        r.first_response_sla_breached.to_string(),
        r.first_response_sla_pending.to_string(),
        p(r.first_response_sla_pct),
        r.resolution_sla_met.to_string(),
        r.resolution_sla_breached.to_string(),
        r.resolution_sla_pending.to_string(),
        p(r.resolution_sla_pct),
        r.rating_good.to_string(),
        r.rating_neutral.to_string(),
        r.rating_bad.to_string(),
        p(r.rating_good_pct),
    ]
}

/// RFC 4180 §2: a field with a comma, quote, CR or LF is quoted, and a
/// quote inside is doubled.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\r', '\n']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

fn push_csv_line(out: &mut String, fields: impl IntoIterator<Item = String>) {
    let mut first = true;
    for f in fields {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&csv_field(&f));
    }
    out.push_str("\r\n");
}

/// `45s`, `12m`, `2h 05m`, `3d 04h`; `-` for none.
pub fn duration_text(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60);
    if d > 0 {
        format!("{d}d {h:02}h")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

fn dur(secs: Option<i64>) -> String {
    secs.map(duration_text).unwrap_or_else(|| "-".into())
}

fn pct_text(p: Option<f64>) -> String {
    p.map(|v| format!("{v:.1}%")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
