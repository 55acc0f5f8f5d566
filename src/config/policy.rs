//! Desk policy keys (SPEC §9, issue #8): `priorities`, `groups`,
//! `categories` with their `distribution`, `routing` rules,
//! `policy.business_hours`, and the per-agent `vacation`.
//!
//! Owns: the shapes, their defaults, and every check that needs more than
//! serde (a reference to an unknown category, priority, group or agent; a
//! bad or oversized regex; `drop` mixed with other actions). Each check
//! names the key as a path (`routing[2].if.subject`) so `Config::parse` can
//! put the line in front. The rules themselves are compiled and evaluated in
//! `crate::policy`; the regex builder is here so that loading a config and
//! compiling its rules can never disagree about what is valid.

use super::{Agent, Config, Customer};
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Compiled-program and lazy-DFA budget per regex. The regex crate's own
/// default is 10 MiB each; rules are compiled once per reload and kept for
/// every delivery, so a pattern that needs more than this is almost always
/// an accident (`\w{100}` in Unicode mode), and `(?-u:\w)` fits easily.
pub const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;

/// What is wrong with one policy key. `key` is a path such as
/// `routing[2].if.subject`; `Config::parse` turns it into
/// `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    pub key: String,
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Priority {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The priority a ticket gets when no rule sets one. At most one may
    /// say so; with none, `normal` is the default.
    #[serde(default)]
    pub default: bool,
}

impl Priority {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
    /// Who is told about tickets the group owns; empty = the members.
    #[serde(default)]
    pub notify: Vec<String>,
}

impl Group {
    pub fn notified(&self) -> &[String] {
        if self.notify.is_empty() {
            &self.members
        } else {
            &self.notify
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Agent addresses and group names permitted to work the category;
    /// empty = every agent in `team.agents`.
    #[serde(default)]
    pub agents: Vec<String>,
    /// The group `#escalate` hands tickets of this category to.
    #[serde(default)]
    pub second_line: Option<String>,
    /// Owner when no rule assigns and the customer has no manager.
    #[serde(default)]
    pub default_owner: Option<String>,
    /// Present: new tickets of the category that no rule and no default
    /// owner gave to anyone are distributed. Absent: only a rule's
    /// `assignee: distribute` distributes, with the defaults.
    #[serde(default)]
    pub distribution: Option<Distribution>,
}

impl Category {
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The category's `distribution`, or the defaults when it has none.
    pub fn distribution_or_default(&self) -> Distribution {
        self.distribution.clone().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Distribution {
    pub mode: DistributionMode,
    /// An agent with this many counted tickets gets no more; `~` = no cap.
    pub max_open: Option<u32>,
    /// Ticket statuses that count as an agent's load.
    pub count: Vec<String>,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            mode: DistributionMode::RoundRobin,
            max_open: None,
            count: vec!["active".into()],
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DistributionMode {
    #[default]
    RoundRobin,
    LeastLoaded,
}

/// One routing rule. `if` and `continue` are Rust keywords, hence the
/// field names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(rename = "if", default)]
    pub when: Conditions,
    #[serde(default)]
    pub then: Actions,
    #[serde(rename = "continue", default)]
    pub continues: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            name: None,
            when: Conditions::default(),
            then: Actions::default(),
            continues: false,
            enabled: true,
        }
    }
}

/// All present conditions must hold; an absent one does not matter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Conditions {
    pub sender: Option<String>,
    pub sender_domain: Option<String>,
    pub customer: Option<String>,
    pub customer_category: Option<String>,
    pub plus_tag: Option<String>,
    pub subject: Option<String>,
    pub body: Option<String>,
    pub header: Option<HeaderCondition>,
    pub business_hours: Option<bool>,
    pub has_attachments: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderCondition {
    pub name: String,
    /// Absent = the header only has to be present.
    #[serde(default)]
    pub matches: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Actions {
    pub category: Option<String>,
    pub priority: Option<String>,
    /// An agent address, a group name, or `distribute`.
    pub assignee: Option<String>,
    pub status: Option<String>,
    pub watchers: Vec<String>,
    pub tags: Vec<String>,
    pub drop: bool,
}

impl Actions {
    /// The keys set besides `drop`, for the error that forbids mixing them.
    fn others(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (set, key) in [
            (self.category.is_some(), "category"),
            (self.priority.is_some(), "priority"),
            (self.assignee.is_some(), "assignee"),
            (self.status.is_some(), "status"),
            (!self.watchers.is_empty(), "watchers"),
            (!self.tags.is_empty(), "tags"),
        ] {
            if set {
                v.push(key);
            }
        }
        v
    }
}

/// A week of equal working days in one time zone. Enough for the
/// `business_hours` rule condition; real calendars (holidays, per-day
/// hours) come with the SLA work.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusinessHours {
    pub timezone: String,
    /// `HH:MM-HH:MM`, start included, end excluded; `24:00` ends at midnight.
    pub hours: String,
    pub days: Vec<String>,
}

impl Default for BusinessHours {
    fn default() -> Self {
        BusinessHours {
            timezone: "UTC".into(),
            hours: "09:00-17:00".into(),
            days: ["mon", "tue", "wed", "thu", "fri"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// `BusinessHours` checked and ready to answer "was this instant inside?".
#[derive(Debug, Clone)]
pub struct OpenHours {
    pub tz_name: String,
    pub tz: TimeZone,
    pub start: Time,
    /// `None` = until midnight (`24:00`).
    pub end: Option<Time>,
    /// Indexed by `Weekday::to_monday_zero_offset`.
    pub days: [bool; 7],
}

impl OpenHours {
    pub fn contains(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.tz.clone());
        let day = usize::try_from(local.weekday().to_monday_zero_offset()).unwrap_or(0);
        let t = local.time();
        self.days[day] && t >= self.start && self.end.is_none_or(|end| t < end)
    }

    /// `Tue 10:15 Europe/Tallinn`, for traces.
    pub fn local_label(&self, at: Timestamp) -> String {
        let local = at.to_zoned(self.tz.clone());
        format!("{} {}", local.strftime("%a %H:%M"), self.tz_name)
    }
}

impl BusinessHours {
    /// Errors are keyed below `prefix` (`policy.business_hours`).
    pub fn compile(&self, prefix: &str) -> Result<OpenHours, PolicyError> {
        let tz = TimeZone::get(&self.timezone).map_err(|e| {
            problem(
                format!("{prefix}.timezone"),
                format!(
                    "{:?} is not a time zone (e.g. Europe/Tallinn): {e}",
                    self.timezone
                ),
            )
        })?;
        let bad_hours = || {
            problem(
                format!("{prefix}.hours"),
                format!(
                    "{:?} is not a span of the day like 09:00-17:00 (start before end)",
                    self.hours
                ),
            )
        };
        let (a, b) = self.hours.split_once('-').ok_or_else(bad_hours)?;
        let start: Time = a.trim().parse().map_err(|_| bad_hours())?;
        let end = match b.trim() {
            "24:00" => None,
            b => Some(b.parse::<Time>().map_err(|_| bad_hours())?),
        };
        if end.is_some_and(|end| end <= start) {
            return Err(bad_hours());
        }
        let mut days = [false; 7];
        for (i, d) in self.days.iter().enumerate() {
            let wd = weekday(d).ok_or_else(|| {
                problem(
                    format!("{prefix}.days[{i}]"),
                    format!("{d:?} is not a day (mon, tue, wed, thu, fri, sat, sun)"),
                )
            })?;
            if let Ok(i) = usize::try_from(wd.to_monday_zero_offset()) {
                days[i] = true;
            }
        }
        Ok(OpenHours {
            tz_name: self.timezone.clone(),
            tz,
            start,
            end,
            days,
        })
    }
}

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

/// An agent's days away, both ends included, as days in the desk's time
/// zone (`Config::desk_timezone`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Vacation {
    pub from: Date,
    pub until: Date,
}

impl Vacation {
    pub fn covers(&self, day: Date) -> bool {
        self.from <= day && day <= self.until
    }
}

pub fn default_priorities() -> Vec<Priority> {
    [("low", "Low"), ("normal", "Normal"), ("high", "High")]
        .into_iter()
        .map(|(id, name)| Priority {
            id: id.into(),
            name: Some(name.into()),
            default: false,
        })
        .collect()
}

/// Builds a rule regex with the size limits every rule shares. The error is
/// one line, fit for `file:line: key: why`.
pub fn build_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!(
                "regex too big: compiled it exceeds the limit of {} KiB; simplify it (in Unicode mode \\w is large: (?-u:\\w) matches ASCII word characters)",
                limit / 1024
            ),
            regex::Error::Syntax(text) => {
                // The crate's message is several lines: the pattern, a caret
                // under the spot, then `error: why`.
                let why = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("error:"))
                    .unwrap_or(text.as_str())
                    .trim();
                format!("regex parse error: {why}")
            }
            other => format!("regex parse error: {other}"),
        })
}

/// Ids, names and tags said by mail (`#category billing`) and in plus
/// addresses (`support+report-billing@`) must be one word.
pub(crate) fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_address(s: &str) -> bool {
    super::is_plausible_address(s)
}

/// Statuses that can count as load: the open ones an agent holds.
const COUNTABLE: [&str; 3] = ["active", "waiting", "snoozed"];
/// Statuses a rule may set: not `deleted` (that is `drop`), not `snoozed`
/// (it needs a wake-up time a rule cannot give).
const SETTABLE: [&str; 5] = ["unassigned", "active", "waiting", "done", "closed"];

impl Config {
    pub fn agent(&self, email: &str) -> Option<&Agent> {
        self.team
            .agents
            .iter()
            .find(|a| a.email.eq_ignore_ascii_case(email.trim()))
    }

    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id.trim()))
    }

    pub fn priority(&self, id: &str) -> Option<&Priority> {
        self.priorities
            .iter()
            .find(|p| p.id.eq_ignore_ascii_case(id.trim()))
    }

    /// The one marked `default: true`, else `normal`. Validation makes sure
    /// one of the two exists, so `None` only for an unvalidated `Config`.
    pub fn default_priority(&self) -> Option<&Priority> {
        self.priorities
            .iter()
            .find(|p| p.default)
            .or_else(|| self.priority("normal"))
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(name.trim()))
    }

    pub fn customer_by_id(&self, id: &str) -> Option<&Customer> {
        self.customers
            .iter()
            .find(|c| c.id.eq_ignore_ascii_case(id.trim()))
    }

    /// Agent addresses and group names → lower-cased addresses, groups
    /// expanded to their members, in the order written, each once.
    pub fn expand_agents(&self, names: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |a: &str| {
            let a = a.trim().to_ascii_lowercase();
            if !out.contains(&a) {
                out.push(a);
            }
        };
        for n in names {
            if n.contains('@') {
                push(n);
            } else if let Some(g) = self.group(n) {
                for m in &g.members {
                    push(m);
                }
            }
        }
        out
    }

    /// Who may be given a ticket of `category`: its `agents` expanded, or
    /// every agent in `team.agents` when it names none or there is no
    /// category.
    pub fn permitted_agents(&self, category: Option<&Category>) -> Vec<String> {
        match category {
            Some(c) if !c.agents.is_empty() => self.expand_agents(&c.agents),
            _ => {
                let all: Vec<String> = self.team.agents.iter().map(|a| a.email.clone()).collect();
                self.expand_agents(&all)
            }
        }
    }

    /// Agents whose `vacation` covers `day`, lower-cased.
    pub fn on_vacation(&self, day: Date) -> BTreeSet<String> {
        self.team
            .agents
            .iter()
            .filter(|a| a.vacation.iter().any(|v| v.covers(day)))
            .map(|a| a.email.to_ascii_lowercase())
            .collect()
    }

    /// The zone vacation days and business hours are read in: that of
    /// `policy.business_hours`, else UTC.
    pub fn desk_timezone(&self) -> TimeZone {
        self.policy
            .business_hours
            .as_ref()
            .and_then(|b| TimeZone::get(&b.timezone).ok())
            .unwrap_or(TimeZone::UTC)
    }
}

/// Every policy check that serde cannot make. Customers from
/// `customers_file` are checked by `check_customers` after the merge.
pub fn check(cfg: &Config) -> Result<(), PolicyError> {
    check_priorities(cfg)?;
    check_groups(cfg)?;
    check_categories(cfg)?;
    for (i, a) in cfg.team.agents.iter().enumerate() {
        for (j, v) in a.vacation.iter().enumerate() {
            if v.until < v.from {
                return Err(problem(
                    format!("team.agents[{i}].vacation[{j}].until"),
                    format!("{} is before from ({})", v.until, v.from),
                ));
            }
        }
    }
    let hours = match &cfg.policy.business_hours {
        Some(b) => Some(b.compile("policy.business_hours")?),
        None => None,
    };
    check_customers(cfg, &cfg.customers, "customers")?;
    for (i, r) in cfg.routing.iter().enumerate() {
        check_rule(cfg, &format!("routing[{i}]"), r, hours.is_some())?;
    }
    check_macros(cfg)
}

/// Each macro line must be one command the grammar knows; a macro may not
/// run another (no loops to guard against when obeying).
fn check_macros(cfg: &Config) -> Result<(), PolicyError> {
    let now = Timestamp::UNIX_EPOCH;
    for (name, lines) in &cfg.macros {
        if !crate::workflow::command::is_tag(name) {
            return Err(problem(
                format!("macros.{name}"),
                "a macro name is one word of letters, digits, - or _",
            ));
        }
        if lines.is_empty() {
            return Err(problem(
                format!("macros.{name}"),
                "an empty macro does nothing",
            ));
        }
        for (i, line) in lines.iter().enumerate() {
            let p = crate::workflow::command::parse(line, &cfg.support.token_prefix, now);
            let why = match (p.commands.as_slice(), p.bad.first()) {
                (_, Some(b)) => Some(b.why.clone()),
                ([crate::workflow::command::Command::Macro { .. }], _) => {
                    Some("a macro cannot run another macro".into())
                }
                ([_], None) => None,
                _ => Some(format!("{line:?} is not one #command")),
            };
            if let Some(why) = why {
                return Err(problem(format!("macros.{name}[{i}]"), why));
            }
        }
    }
    Ok(())
}

/// `prefix` is `customers` for the config's own list and empty for a
/// `customers_file` (a bare list), so keys read `customers[3].manager` or
/// `[3].manager`.
pub fn check_customers(
    cfg: &Config,
    customers: &[Customer],
    prefix: &str,
) -> Result<(), PolicyError> {
    for (i, c) in customers.iter().enumerate() {
        if let Some(m) = &c.manager {
            if cfg.agent(m).is_none() {
                return Err(problem(
                    format!("{prefix}[{i}].manager"),
                    format!("{m:?} is not an agent in team.agents"),
                ));
            }
        }
    }
    Ok(())
}

fn check_priorities(cfg: &Config) -> Result<(), PolicyError> {
    if cfg.priorities.is_empty() {
        return Err(problem(
            "priorities",
            "needs at least one priority (the default is low, normal, high)",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut defaults = 0;
    for (i, p) in cfg.priorities.iter().enumerate() {
        if !is_word(&p.id) {
            return Err(problem(
                format!("priorities[{i}].id"),
                format!("{:?} must be one word of letters, digits, - or _", p.id),
            ));
        }
        if !seen.insert(p.id.to_ascii_lowercase()) {
            return Err(problem(
                format!("priorities[{i}].id"),
                format!("{:?} is listed twice", p.id),
            ));
        }
        if p.default {
            defaults += 1;
            if defaults > 1 {
                return Err(problem(
                    format!("priorities[{i}].default"),
                    "only one priority can be the default",
                ));
            }
        }
    }
    if cfg.default_priority().is_none() {
        return Err(problem(
            "priorities",
            "no default priority: list `normal` or mark one with `default: true`",
        ));
    }
    Ok(())
}

fn check_groups(cfg: &Config) -> Result<(), PolicyError> {
    let mut seen = BTreeSet::new();
    for (i, g) in cfg.groups.iter().enumerate() {
        let key = format!("groups[{i}]");
        if !is_word(&g.name) || g.name.eq_ignore_ascii_case("distribute") {
            return Err(problem(
                format!("{key}.name"),
                format!(
                    "{:?} must be one word of letters, digits, - or _ (and not `distribute`)",
                    g.name
                ),
            ));
        }
        if !seen.insert(g.name.to_ascii_lowercase()) {
            return Err(problem(
                format!("{key}.name"),
                format!("{:?} is listed twice", g.name),
            ));
        }
        if g.members.is_empty() {
            return Err(problem(
                format!("{key}.members"),
                "a group needs at least one member",
            ));
        }
        for (j, m) in g.members.iter().enumerate() {
            if cfg.agent(m).is_none() {
                return Err(problem(
                    format!("{key}.members[{j}]"),
                    format!("{m:?} is not an agent in team.agents"),
                ));
            }
        }
        for (j, n) in g.notify.iter().enumerate() {
            if !is_address(n) {
                return Err(problem(
                    format!("{key}.notify[{j}]"),
                    format!("{n:?} is not a mail address"),
                ));
            }
        }
    }
    Ok(())
}

/// An agent address or a group name, as `categories[].agents` takes them.
fn check_agent_or_group(cfg: &Config, key: String, name: &str) -> Result<(), PolicyError> {
    if name.contains('@') {
        if cfg.agent(name).is_none() {
            return Err(problem(
                key,
                format!("{name:?} is not an agent in team.agents"),
            ));
        }
    } else if cfg.group(name).is_none() {
        return Err(problem(
            key,
            format!(
                "{name:?} is neither an agent address nor a group ({})",
                known_groups(cfg)
            ),
        ));
    }
    Ok(())
}

fn known_groups(cfg: &Config) -> String {
    if cfg.groups.is_empty() {
        return "no groups are defined".into();
    }
    let names: Vec<&str> = cfg.groups.iter().map(|g| g.name.as_str()).collect();
    format!("groups: {}", names.join(", "))
}

/// `categories: billing, tech`, for errors and refusals.
pub fn known_categories(cfg: &Config) -> String {
    if cfg.categories.is_empty() {
        return "no categories are defined".into();
    }
    let ids: Vec<&str> = cfg.categories.iter().map(|c| c.id.as_str()).collect();
    format!("categories: {}", ids.join(", "))
}

/// `priorities: low, normal, high`, for errors and refusals.
pub fn known_priorities(cfg: &Config) -> String {
    let ids: Vec<&str> = cfg.priorities.iter().map(|p| p.id.as_str()).collect();
    format!("priorities: {}", ids.join(", "))
}

fn check_categories(cfg: &Config) -> Result<(), PolicyError> {
    let mut seen = BTreeSet::new();
    for (i, c) in cfg.categories.iter().enumerate() {
        let key = format!("categories[{i}]");
        if !is_word(&c.id) {
            return Err(problem(
                format!("{key}.id"),
                format!("{:?} must be one word of letters, digits, - or _", c.id),
            ));
        }
        if !seen.insert(c.id.to_ascii_lowercase()) {
            return Err(problem(
                format!("{key}.id"),
                format!("{:?} is listed twice", c.id),
            ));
        }
        for (j, a) in c.agents.iter().enumerate() {
            check_agent_or_group(cfg, format!("{key}.agents[{j}]"), a)?;
        }
        if let Some(g) = &c.second_line {
            if cfg.group(g).is_none() {
                return Err(problem(
                    format!("{key}.second_line"),
                    format!("{g:?} is not a group ({})", known_groups(cfg)),
                ));
            }
        }
        if let Some(o) = &c.default_owner {
            if cfg.agent(o).is_none() {
                return Err(problem(
                    format!("{key}.default_owner"),
                    format!("{o:?} is not an agent in team.agents"),
                ));
            }
        }
        let Some(d) = &c.distribution else { continue };
        if d.max_open == Some(0) {
            return Err(problem(
                format!("{key}.distribution.max_open"),
                "0 would give nobody a ticket; use at least 1, or ~ for no cap",
            ));
        }
        if d.count.is_empty() {
            return Err(problem(
                format!("{key}.distribution.count"),
                "needs at least one status (the default is [active])",
            ));
        }
        for (j, s) in d.count.iter().enumerate() {
            if !COUNTABLE.contains(&s.to_ascii_lowercase().as_str()) {
                return Err(problem(
                    format!("{key}.distribution.count[{j}]"),
                    format!("{s:?} is not one of {}", COUNTABLE.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn check_rule(cfg: &Config, key: &str, r: &Rule, have_hours: bool) -> Result<(), PolicyError> {
    let w = &r.when;
    let k = |sub: &str| format!("{key}.if.{sub}");
    if let Some(s) = &w.sender {
        if !s.contains('@') || s.contains(char::is_whitespace) {
            return Err(problem(
                k("sender"),
                format!("{s:?} is not an address pattern (e.g. *@acme.test or boss@acme.test)"),
            ));
        }
    }
    if let Some(s) = &w.sender_domain {
        if s.is_empty() || s.contains('@') || s.contains(char::is_whitespace) {
            return Err(problem(
                k("sender_domain"),
                format!("{s:?} is not a domain pattern (e.g. acme.test or *.acme.test)"),
            ));
        }
    }
    for (sub, v) in [
        ("customer", &w.customer),
        ("customer_category", &w.customer_category),
    ] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(problem(k(sub), "is empty"));
        }
    }
    if let Some(t) = &w.plus_tag {
        let tag_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if t.is_empty() || !t.chars().all(tag_char) {
            return Err(problem(
                k("plus_tag"),
                format!("{t:?} is not a plus-tag (support+billing@ has the tag billing)"),
            ));
        }
    }
    for (sub, v) in [("subject", &w.subject), ("body", &w.body)] {
        if let Some(p) = v {
            build_regex(p).map_err(|m| problem(k(sub), m))?;
        }
    }
    if let Some(h) = &w.header {
        if h.name.is_empty() || !h.name.chars().all(|c| c.is_ascii_graphic() && c != ':') {
            return Err(problem(
                k("header.name"),
                format!("{:?} is not a header name (e.g. X-Priority)", h.name),
            ));
        }
        if let Some(p) = &h.matches {
            build_regex(p).map_err(|m| problem(k("header.matches"), m))?;
        }
    }
    if w.business_hours.is_some() && !have_hours {
        return Err(problem(
            k("business_hours"),
            "needs policy.business_hours (timezone, hours, days)",
        ));
    }

    let t = &r.then;
    let k = |sub: &str| format!("{key}.then.{sub}");
    if t.drop {
        let others = t.others();
        if !others.is_empty() {
            return Err(problem(
                k("drop"),
                format!(
                    "drop keeps the mail as deleted and does nothing else; remove {} or drop",
                    others.join(", ")
                ),
            ));
        }
        if r.continues {
            return Err(problem(
                format!("{key}.continue"),
                "a drop rule ends evaluation; remove continue or drop",
            ));
        }
    }
    if let Some(c) = &t.category {
        if cfg.category(c).is_none() {
            return Err(problem(
                k("category"),
                format!("{c:?} is not a category ({})", known_categories(cfg)),
            ));
        }
    }
    if let Some(p) = &t.priority {
        if cfg.priority(p).is_none() {
            return Err(problem(
                k("priority"),
                format!("{p:?} is not a priority ({})", known_priorities(cfg)),
            ));
        }
    }
    if let Some(a) = &t.assignee {
        if !a.eq_ignore_ascii_case("distribute") {
            check_agent_or_group(cfg, k("assignee"), a).map_err(|e| PolicyError {
                message: format!("{} (or distribute)", e.message),
                ..e
            })?;
        }
    }
    if let Some(s) = &t.status {
        if !SETTABLE.contains(&s.to_ascii_lowercase().as_str()) {
            return Err(problem(
                k("status"),
                format!(
                    "{s:?} is not one of {} (deleted is drop: true)",
                    SETTABLE.join(", ")
                ),
            ));
        }
    }
    for (j, w) in t.watchers.iter().enumerate() {
        if cfg.agent(w).is_none() {
            return Err(problem(
                format!("{}[{j}]", k("watchers")),
                format!("{w:?} is not an agent in team.agents"),
            ));
        }
    }
    for (j, tag) in t.tags.iter().enumerate() {
        if !is_word(tag) {
            return Err(problem(
                format!("{}[{j}]", k("tags")),
                format!("{tag:?} must be one word of letters, digits, - or _"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "\
support:
  address: support@desk.test
team:
  agents:
    - email: alice@desk.test
    - email: bob@desk.test
groups:
  - name: l2
    members: [bob@desk.test]
categories:
  - id: billing
    agents: [alice@desk.test, l2]
";

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), "postdesk.yaml").map_err(|e| e.to_string())
    }

    fn err(extra: &str) -> String {
        match parse(extra) {
            Ok(_) => panic!("accepted:\n{extra}"),
            Err(e) => e,
        }
    }

    #[test]
    fn macros_are_checked_line_by_line() {
        assert!(parse(
            "macros:\n  close: [\"#answer thanks\", \"#category billing\", \"#done\"]\n"
        )
        .is_ok());
        for (extra, want) in [
            ("macros:\n  m: [\"#frobnicate\"]\n", "macros.m[0]"),
            (
                "macros:\n  m: [\"#done\", \"#macro m\"]\n",
                "a macro cannot run another macro",
            ),
            ("macros:\n  m: [\"done\"]\n", "is not one #command"),
            ("macros:\n  m: []\n", "an empty macro does nothing"),
        ] {
            let e = err(extra);
            assert!(e.contains(want), "{extra}: {e}");
        }
    }

    /// Line numbers below count BASE's 12 lines.
    #[test]
    fn broken_rules_name_index_key_and_line() {
        let cases: Vec<(&str, &str)> = vec![
            (
                "routing:\n  - then: {priority: high}\n  - if: {plus_tag: x}\n    then: {tags: [x]}\n  - if: {subject: \"(unclosed\"}\n",
                "postdesk.yaml:17: routing[2].if.subject: regex parse error: unclosed group",
            ),
            (
                "routing:\n  - if:\n      body: \"\\\\w{1000}\"\n",
                "postdesk.yaml:15: routing[0].if.body: regex too big: compiled it exceeds the limit of 2048 KiB; simplify it (in Unicode mode \\w is large: (?-u:\\w) matches ASCII word characters)",
            ),
            (
                "routing:\n  - if: {header: {name: X-A, matches: \"[\"}}\n",
                "postdesk.yaml:14: routing[0].if.header.matches: regex parse error: unclosed character class",
            ),
            (
                "routing:\n  - then:\n      category: biling\n",
                "postdesk.yaml:15: routing[0].then.category: \"biling\" is not a category (categories: billing)",
            ),
            (
                "routing:\n  - then: {priority: urgent}\n",
                "postdesk.yaml:14: routing[0].then.priority: \"urgent\" is not a priority (priorities: low, normal, high)",
            ),
            (
                "routing:\n  - then: {assignee: l3}\n",
                "postdesk.yaml:14: routing[0].then.assignee: \"l3\" is neither an agent address nor a group (groups: l2) (or distribute)",
            ),
            (
                "routing:\n  - then: {assignee: carol@desk.test}\n",
                "postdesk.yaml:14: routing[0].then.assignee: \"carol@desk.test\" is not an agent in team.agents (or distribute)",
            ),
            (
                "routing:\n  - then: {watchers: [alice@desk.test, eve@desk.test]}\n",
                "postdesk.yaml:14: routing[0].then.watchers[1]: \"eve@desk.test\" is not an agent in team.agents",
            ),
            (
                "routing:\n  - then: {status: deleted}\n",
                "postdesk.yaml:14: routing[0].then.status: \"deleted\" is not one of unassigned, active, waiting, done, closed (deleted is drop: true)",
            ),
            (
                "routing:\n  - then: {tags: [two words]}\n",
                "postdesk.yaml:14: routing[0].then.tags[0]: \"two words\" must be one word of letters, digits, - or _",
            ),
            (
                "routing:\n  - if: {subject: x}\n    then: {drop: true, priority: high, tags: [a]}\n",
                "postdesk.yaml:15: routing[0].then.drop: drop keeps the mail as deleted and does nothing else; remove priority, tags or drop",
            ),
            (
                "routing:\n  - then: {drop: true}\n    continue: true\n",
                "postdesk.yaml:15: routing[0].continue: a drop rule ends evaluation; remove continue or drop",
            ),
            (
                "routing:\n  - if: {business_hours: true}\n",
                "postdesk.yaml:14: routing[0].if.business_hours: needs policy.business_hours (timezone, hours, days)",
            ),
            (
                "routing:\n  - if: {sender: acme.test}\n",
                "postdesk.yaml:14: routing[0].if.sender: \"acme.test\" is not an address pattern (e.g. *@acme.test or boss@acme.test)",
            ),
            (
                "routing:\n  - if: {sender_domain: \"*@acme.test\"}\n",
                "postdesk.yaml:14: routing[0].if.sender_domain: \"*@acme.test\" is not a domain pattern (e.g. acme.test or *.acme.test)",
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(err(extra), want, "{extra}");
        }
    }

    #[test]
    fn unknown_keys_in_rules_are_errors_naming_the_rule() {
        let e = err("routing:\n  - if: {plus_tag: a}\n  - if:\n      subjcet: x\n");
        assert!(
            e.starts_with("postdesk.yaml:16: routing[1].if: unknown field `subjcet`"),
            "{e}"
        );
        let e = err("routing:\n  - then: {categry: billing}\n");
        assert!(
            e.starts_with("postdesk.yaml:14: routing[0].then: unknown field `categry`"),
            "{e}"
        );
        let e = err("routing:\n  - when: {}\n");
        assert!(e.contains("routing[0]: unknown field `when`"), "{e}");
        let e = err("  - id: x\n    distribution: {mode: random}\n");
        assert!(e.contains("unknown variant `random`"), "{e}");
    }

    #[test]
    fn an_empty_if_and_an_empty_then_are_allowed() {
        let c = parse("routing:\n  - if: {}\n    then: {priority: low}\n  - name: stop here\n")
            .unwrap();
        assert_eq!(c.routing.len(), 2);
        assert!(c.routing[1].enabled && !c.routing[1].continues);
    }

    #[test]
    fn references_in_groups_categories_and_customers() {
        assert_eq!(
            err("  - id: tech\n    agents: [l3]\n"),
            "postdesk.yaml:14: categories[1].agents[0]: \"l3\" is neither an agent address nor a group (groups: l2)"
        );
        assert_eq!(
            err("  - id: tech\n    second_line: l9\n"),
            "postdesk.yaml:14: categories[1].second_line: \"l9\" is not a group (groups: l2)"
        );
        assert_eq!(
            err("  - id: tech\n    default_owner: zed@desk.test\n"),
            "postdesk.yaml:14: categories[1].default_owner: \"zed@desk.test\" is not an agent in team.agents"
        );
        assert_eq!(
            err("  - id: tech\n    distribution: {max_open: 0}\n"),
            "postdesk.yaml:14: categories[1].distribution.max_open: 0 would give nobody a ticket; use at least 1, or ~ for no cap"
        );
        assert_eq!(
            err("  - id: tech\n    distribution: {count: [active, done]}\n"),
            "postdesk.yaml:14: categories[1].distribution.count[1]: \"done\" is not one of active, waiting, snoozed"
        );
        assert_eq!(
            err("  - id: billing\n"),
            "postdesk.yaml:13: categories[1].id: \"billing\" is listed twice"
        );
        assert_eq!(
            err("customers:\n  - {id: A, manager: zed@desk.test}\n"),
            "postdesk.yaml:14: customers[0].manager: \"zed@desk.test\" is not an agent in team.agents"
        );
        let e = Config::parse(
            "support: {address: s@d.test}\ngroups:\n  - name: g\n    members: [nobody@d.test]\n",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "c.yaml:4: groups[0].members[0]: \"nobody@d.test\" is not an agent in team.agents"
        );
    }

    #[test]
    fn customers_file_managers_are_checked_with_that_files_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("customers.yaml"),
            "- id: A\n  domains: [a.test]\n- id: B\n  manager: zed@desk.test\n",
        )
        .unwrap();
        let cfg = dir.path().join("postdesk.yaml");
        std::fs::write(&cfg, format!("{BASE}customers_file: customers.yaml\n")).unwrap();
        let e = Config::load(&cfg).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "customers.yaml:4: [1].manager: \"zed@desk.test\" is not an agent in team.agents"
            ),
            "{e}"
        );
    }

    #[test]
    fn priorities_default_and_custom() {
        let c = parse("").unwrap();
        let ids: Vec<&str> = c.priorities.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["low", "normal", "high"]);
        assert_eq!(c.default_priority().map(|p| p.id.as_str()), Some("normal"));
        assert_eq!(c.priority("HIGH").map(Priority::display_name), Some("High"));
        let c = parse("priorities:\n  - {id: p3}\n  - {id: p2, default: true}\n  - {id: p1}\n")
            .unwrap();
        assert_eq!(c.default_priority().map(|p| p.id.as_str()), Some("p2"));
        assert_eq!(
            err("priorities:\n  - {id: p2}\n  - {id: p1}\n"),
            "postdesk.yaml:13: priorities: no default priority: list `normal` or mark one with `default: true`"
        );
        assert_eq!(
            err("priorities:\n  - {id: a, default: true}\n  - {id: b, default: true}\n"),
            "postdesk.yaml:15: priorities[1].default: only one priority can be the default"
        );
        assert_eq!(
            err("priorities: []\n"),
            "postdesk.yaml:13: priorities: needs at least one priority (the default is low, normal, high)"
        );
    }

    #[test]
    fn business_hours_and_vacation_checks() {
        let e = err("policy:\n  business_hours: {timezone: Mars/Olympus}\n");
        assert!(
            e.starts_with("postdesk.yaml:14: policy.business_hours.timezone: \"Mars/Olympus\" is not a time zone"),
            "{e}"
        );
        assert_eq!(
            err("policy:\n  business_hours:\n    hours: \"17:00-09:00\"\n"),
            "postdesk.yaml:15: policy.business_hours.hours: \"17:00-09:00\" is not a span of the day like 09:00-17:00 (start before end)"
        );
        assert_eq!(
            err("policy:\n  business_hours: {days: [mon, fry]}\n"),
            "postdesk.yaml:14: policy.business_hours.days[1]: \"fry\" is not a day (mon, tue, wed, thu, fri, sat, sun)"
        );
        let c =
            parse("policy:\n  business_hours: {hours: \"00:00-24:00\", days: [sat]}\n").unwrap();
        let h = c
            .policy
            .business_hours
            .as_ref()
            .unwrap()
            .compile("x")
            .unwrap();
        assert!(h.contains("2026-03-14T23:59:59Z".parse().unwrap()));
        assert!(!h.contains("2026-03-15T00:00:00Z".parse().unwrap()));
        let text = "support: {address: s@d.test}\nteam:\n  agents:\n    - email: a@d.test\n      vacation:\n        - {from: 2026-07-10, until: 2026-07-01}\n";
        assert_eq!(
            Config::parse(text, "c.yaml").unwrap_err().to_string(),
            "c.yaml:6: team.agents[0].vacation[0].until: 2026-07-01 is before from (2026-07-10)"
        );
        let bad_date = "support: {address: s@d.test}\nteam:\n  agents:\n    - email: a@d.test\n      vacation: [{from: 2026-13-01, until: 2026-12-01}]\n";
        let e = Config::parse(bad_date, "c.yaml").unwrap_err().to_string();
        assert!(
            e.starts_with("c.yaml:5: team.agents[0].vacation[0].from:"),
            "{e}"
        );
    }

    #[test]
    fn lookups_and_expansion() {
        let c = parse(
            "  - id: all\ncustomers:\n  - {id: ACME, category: gold, manager: Alice@desk.test}\n",
        )
        .unwrap();
        let billing = c.category("Billing");
        assert_eq!(
            c.permitted_agents(billing),
            vec!["alice@desk.test", "bob@desk.test"]
        );
        assert_eq!(
            c.permitted_agents(c.category("all")),
            vec!["alice@desk.test", "bob@desk.test"]
        );
        assert_eq!(c.permitted_agents(None).len(), 2);
        assert_eq!(
            c.group("L2").map(Group::notified),
            Some(&["bob@desk.test".to_string()][..])
        );
        assert_eq!(
            c.customer_by_id("acme").and_then(|x| x.manager.as_deref()),
            Some("Alice@desk.test")
        );
        assert_eq!(c.desk_timezone(), TimeZone::UTC);
    }
}
