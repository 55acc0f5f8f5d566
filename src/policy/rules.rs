//! Routing rules: compiled once per config load, evaluated per message.
//!
//! Evaluation is first match wins. A matched rule's actions apply; with
//! `continue: true` the next rules are still tried, and the later matches
//! add to the result, but never replace a value an earlier matched rule set
//! (category, priority, assignee, status); watchers and tags accumulate.
//! A `drop` stops evaluation and wins over everything set before it.
//!
//! Every rule appears in the trace, including those after the stop: they
//! are still checked so `rules test` can say "would have matched", but
//! their actions are not applied.

use crate::config::{build_regex, domain_of, Config, OpenHours, PolicyError};
use crate::store::model::Status;
use jiff::Timestamp;
use regex::Regex;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// Who a rule gives the ticket to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum Assignee {
    /// Lower-cased address of an agent in `team.agents`.
    Agent(String),
    /// A group name as written in `groups`.
    Group(String),
    /// Auto-distribution among the category's permitted agents.
    Distribute,
}

impl fmt::Display for Assignee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Assignee::Agent(a) => write!(f, "{a}"),
            Assignee::Group(g) => write!(f, "group {g}"),
            Assignee::Distribute => write!(f, "distribute"),
        }
    }
}

/// The actions of the matched rules, merged. Ids are spelt as in the
/// config (`categories[].id`, `priorities[].id`, `groups[].name`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MergedActions {
    pub category: Option<String>,
    pub priority: Option<String>,
    pub assignee: Option<Assignee>,
    pub status: Option<Status>,
    /// Lower-cased agent addresses, each once, in rule order.
    pub watchers: Vec<String>,
    /// Each once, in rule order.
    pub tags: Vec<String>,
    /// Keep the mail as `deleted` and send nothing. When true the other
    /// fields only say what earlier rules had set.
    pub drop: bool,
}

impl MergedActions {
    pub fn is_empty(&self) -> bool {
        *self == MergedActions::default()
    }

    fn parts(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.drop {
            v.push("drop (kept as deleted, nothing sent)".to_string());
            return v;
        }
        if let Some(c) = &self.category {
            v.push(format!("category {c}"));
        }
        if let Some(p) = &self.priority {
            v.push(format!("priority {p}"));
        }
        if let Some(a) = &self.assignee {
            v.push(format!("assignee {a}"));
        }
        if let Some(s) = &self.status {
            v.push(format!("status {}", s.as_str()));
        }
        if !self.watchers.is_empty() {
            v.push(format!("watchers [{}]", self.watchers.join(", ")));
        }
        if !self.tags.is_empty() {
            v.push(format!("tags [{}]", self.tags.join(", ")));
        }
        v
    }
}

impl fmt::Display for MergedActions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.parts();
        if parts.is_empty() {
            write!(f, "nothing")
        } else {
            write!(f, "{}", parts.join(", "))
        }
    }
}

/// What the rules see of one message. Borrowed: evaluation runs on the
/// delivery path and copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct RuleInput<'a> {
    /// The contact's address (From), any case; "" when there is none.
    pub sender: &'a str,
    /// Customer id from `ingest::customer::identify`.
    pub customer: Option<&'a str>,
    /// `customers[].category` of that customer.
    pub customer_category: Option<&'a str>,
    /// The support address's plus-tags the mail came to, one per
    /// recipient (`support+billing@` → `billing`); empty strings and an
    /// empty slice mean the bare address. The condition holds when any
    /// tag is the one it names.
    pub plus_tags: &'a [String],
    /// Decoded subject.
    pub subject: &'a str,
    /// The decoded own text (`Parsed::text`, quotes stripped where the
    /// caller does so).
    pub body: &'a str,
    /// Top-level headers, as from `header_pairs`.
    pub headers: &'a [(String, String)],
    pub arrival: Timestamp,
    pub has_attachments: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Disabled,
    Matched,
    NotMatched,
}

/// One condition's result. `reason` reads on its own:
/// `subject /(?i)invoice/ did not match "Hello"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub condition: &'static str,
    pub passed: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleTrace {
    /// Position in `routing`, as in config errors (`routing[2]`).
    pub index: usize,
    pub name: Option<String>,
    pub verdict: Verdict,
    /// In order; they stop at the first that failed. Empty for a disabled
    /// rule and for a rule without conditions.
    pub checks: Vec<Check>,
    /// False when an earlier rule ended evaluation: the verdict then only
    /// says what would have happened.
    pub reached: bool,
    /// What this rule set (`priority high`).
    pub applied: Vec<String>,
    /// What it would have set but an earlier rule already had:
    /// `priority high, set earlier (this rule says normal)`.
    pub kept: Vec<String>,
    /// Evaluation ended at this rule.
    pub stopped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesOutcome {
    pub actions: MergedActions,
    pub trace: Vec<RuleTrace>,
    /// Index of the rule that ended evaluation, if one did.
    pub stopped_at: Option<usize>,
}

impl RulesOutcome {
    /// Did any rule match (and apply)?
    pub fn matched(&self) -> bool {
        self.trace
            .iter()
            .any(|t| t.reached && t.verdict == Verdict::Matched)
    }
}

#[derive(Debug)]
enum Cond {
    Sender(String),
    SenderDomain(String),
    Customer(String),
    CustomerCategory(String),
    PlusTag(String),
    Subject(Regex),
    Body(Regex),
    Header { name: String, re: Option<Regex> },
    BusinessHours(bool),
    HasAttachments(bool),
}

#[derive(Debug)]
struct CompiledRule {
    name: Option<String>,
    enabled: bool,
    continues: bool,
    conds: Vec<Cond>,
    actions: MergedActions,
}

#[derive(Debug, Default)]
struct Compiled {
    rules: Vec<CompiledRule>,
    hours: Option<OpenHours>,
}

/// The compiled `routing` of one config. Cheap to clone (an `Arc`); build a
/// new one when the config is reloaded.
#[derive(Debug, Clone, Default)]
pub struct Rules(Arc<Compiled>);

impl Rules {
    /// Checks the config's policy keys (the same checks `Config::parse`
    /// makes, so a `Config` built in code is held to them too) and compiles
    /// the rules.
    pub fn new(cfg: &Config) -> Result<Rules, PolicyError> {
        crate::config::check_policy(cfg)?;
        let hours = match &cfg.policy.business_hours {
            Some(b) => Some(b.compile("policy.business_hours")?),
            None => None,
        };
        let mut rules = Vec::with_capacity(cfg.routing.len());
        for (i, r) in cfg.routing.iter().enumerate() {
            let key = format!("routing[{i}]");
            rules.push(CompiledRule {
                name: r.name.clone(),
                enabled: r.enabled,
                continues: r.continues,
                conds: compile_conditions(&key, &r.when)?,
                actions: compile_actions(cfg, &key, &r.then)?,
            });
        }
        Ok(Rules(Arc::new(Compiled { rules, hours })))
    }

    pub fn len(&self) -> usize {
        self.0.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.rules.is_empty()
    }
}

fn compile_conditions(key: &str, w: &crate::config::Conditions) -> Result<Vec<Cond>, PolicyError> {
    let re = |sub: &str, p: &str| {
        build_regex(p).map_err(|message| PolicyError {
            key: format!("{key}.if.{sub}"),
            message,
        })
    };
    // Cheap checks first: a failed one ends the rule before any regex runs
    // over the body.
    let mut c = Vec::new();
    if let Some(s) = &w.sender {
        c.push(Cond::Sender(s.trim().to_ascii_lowercase()));
    }
    if let Some(s) = &w.sender_domain {
        c.push(Cond::SenderDomain(s.trim().to_ascii_lowercase()));
    }
    if let Some(s) = &w.customer {
        c.push(Cond::Customer(s.trim().to_string()));
    }
    if let Some(s) = &w.customer_category {
        c.push(Cond::CustomerCategory(s.trim().to_string()));
    }
    if let Some(s) = &w.plus_tag {
        c.push(Cond::PlusTag(s.trim().to_ascii_lowercase()));
    }
    if let Some(b) = w.has_attachments {
        c.push(Cond::HasAttachments(b));
    }
    if let Some(b) = w.business_hours {
        c.push(Cond::BusinessHours(b));
    }
    if let Some(h) = &w.header {
        let r = match &h.matches {
            Some(p) => Some(re("header.matches", p)?),
            None => None,
        };
        c.push(Cond::Header {
            name: h.name.clone(),
            re: r,
        });
    }
    if let Some(p) = &w.subject {
        c.push(Cond::Subject(re("subject", p)?));
    }
    if let Some(p) = &w.body {
        c.push(Cond::Body(re("body", p)?));
    }
    Ok(c)
}

fn compile_actions(
    cfg: &Config,
    key: &str,
    t: &crate::config::Actions,
) -> Result<MergedActions, PolicyError> {
    let unknown = |sub: &str, v: &str| PolicyError {
        key: format!("{key}.then.{sub}"),
        message: format!("{v:?} is not known"),
    };
    let category = match &t.category {
        Some(c) => Some(
            cfg.category(c)
                .ok_or_else(|| unknown("category", c))?
                .id
                .clone(),
        ),
        None => None,
    };
    let priority = match &t.priority {
        Some(p) => Some(
            cfg.priority(p)
                .ok_or_else(|| unknown("priority", p))?
                .id
                .clone(),
        ),
        None => None,
    };
    let assignee = match t.assignee.as_deref().map(str::trim) {
        None => None,
        Some(a) if a.eq_ignore_ascii_case("distribute") => Some(Assignee::Distribute),
        Some(a) if a.contains('@') => Some(Assignee::Agent(a.to_ascii_lowercase())),
        Some(g) => Some(Assignee::Group(
            cfg.group(g)
                .ok_or_else(|| unknown("assignee", g))?
                .name
                .clone(),
        )),
    };
    let status = match &t.status {
        Some(s) => Some(Status::parse(s).ok_or_else(|| unknown("status", s))?),
        None => None,
    };
    let mut actions = MergedActions {
        category,
        priority,
        assignee,
        status,
        watchers: Vec::new(),
        tags: Vec::new(),
        drop: t.drop,
    };
    for w in &t.watchers {
        push_once(&mut actions.watchers, w.trim().to_ascii_lowercase());
    }
    for tag in &t.tags {
        push_once(&mut actions.tags, tag.trim().to_string());
    }
    Ok(actions)
}

fn push_once(v: &mut Vec<String>, s: String) -> bool {
    if v.contains(&s) {
        false
    } else {
        v.push(s);
        true
    }
}

/// Case-insensitive glob: `*` any run of characters, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much text it has taken so far: on a
    // mismatch, let it take one more character (linear backtracking).
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `*.acme.test` also matches `acme.test` itself: a customer's own domain
/// and its subdomains are nearly always meant together. `?*.acme.test`
/// means subdomains only.
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    if let Some(base) = pattern.strip_prefix("*.") {
        if domain.eq_ignore_ascii_case(base) {
            return true;
        }
    }
    glob_match(pattern, domain)
}

/// At most 60 characters, quoted and escaped, for traces.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

fn check(cond: &Cond, input: &RuleInput<'_>, hours: Option<&OpenHours>) -> Check {
    let sender = input.sender.trim().to_ascii_lowercase();
    let (condition, passed, reason) = match cond {
        Cond::Sender(pat) => {
            if sender.is_empty() {
                (
                    "sender",
                    false,
                    format!("sender {pat}: the mail has no sender address"),
                )
            } else if glob_match(pat, &sender) {
                ("sender", true, format!("sender {pat} matched {sender}"))
            } else {
                (
                    "sender",
                    false,
                    format!("sender {pat} did not match {sender}"),
                )
            }
        }
        Cond::SenderDomain(pat) => {
            let dom = domain_of(&sender);
            if dom.is_empty() {
                (
                    "sender_domain",
                    false,
                    format!("sender_domain {pat}: the mail has no sender address"),
                )
            } else if domain_matches(pat, dom) {
                (
                    "sender_domain",
                    true,
                    format!("sender_domain {pat} matched {dom}"),
                )
            } else {
                (
                    "sender_domain",
                    false,
                    format!("sender_domain {pat} did not match {dom}"),
                )
            }
        }
        Cond::Customer(want) => match input.customer {
            Some(c) if c.eq_ignore_ascii_case(want) => {
                ("customer", true, format!("customer {want} matched"))
            }
            Some(c) => (
                "customer",
                false,
                format!("customer {want}: the sender's customer is {c}"),
            ),
            None => (
                "customer",
                false,
                format!("customer {want}: the sender has no customer"),
            ),
        },
        Cond::CustomerCategory(want) => {
            let who = input
                .customer
                .map(|c| format!(" (customer {c})"))
                .unwrap_or_default();
            match (input.customer, input.customer_category) {
                (_, Some(c)) if c.eq_ignore_ascii_case(want) => (
                    "customer_category",
                    true,
                    format!("customer_category {want} matched{who}"),
                ),
                (_, Some(c)) => (
                    "customer_category",
                    false,
                    format!("customer_category {want}: the customer's category is {c}{who}"),
                ),
                (Some(_), None) => (
                    "customer_category",
                    false,
                    format!("customer_category {want}: the customer has no category{who}"),
                ),
                (None, None) => (
                    "customer_category",
                    false,
                    format!("customer_category {want}: the sender has no customer"),
                ),
            }
        }
        Cond::PlusTag(want) => {
            let tags: Vec<&str> = input
                .plus_tags
                .iter()
                .map(|t| t.trim())
                .filter(|t| !t.is_empty())
                .collect();
            if tags.iter().any(|t| t.eq_ignore_ascii_case(want)) {
                ("plus_tag", true, format!("plus_tag {want} matched"))
            } else if tags.is_empty() {
                (
                    "plus_tag",
                    false,
                    format!("plus_tag {want}: the mail came to the bare support address"),
                )
            } else {
                (
                    "plus_tag",
                    false,
                    format!(
                        "plus_tag {want}: the mail came to the plus-tag {}",
                        tags.join(", ")
                    ),
                )
            }
        }
        Cond::Subject(re) => match re.find(input.subject) {
            Some(m) => (
                "subject",
                true,
                format!("subject /{re}/ matched {}", quote(m.as_str())),
            ),
            None => (
                "subject",
                false,
                format!("subject /{re}/ did not match {}", quote(input.subject)),
            ),
        },
        Cond::Body(re) => match re.find(input.body) {
            Some(m) => (
                "body",
                true,
                format!("body /{re}/ matched {}", quote(m.as_str())),
            ),
            None => (
                "body",
                false,
                format!(
                    "body /{re}/ did not match the own text ({} characters)",
                    input.body.chars().count()
                ),
            ),
        },
        Cond::Header { name, re } => {
            let values: Vec<&str> = input
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
                .collect();
            match (re, values.as_slice()) {
                (_, []) => ("header", false, format!("header {name} is absent")),
                (None, _) => ("header", true, format!("header {name} is present")),
                (Some(re), vals) => match vals.iter().find_map(|v| re.find(v)) {
                    Some(m) => (
                        "header",
                        true,
                        format!("header {name} /{re}/ matched {}", quote(m.as_str())),
                    ),
                    None if vals.len() == 1 => (
                        "header",
                        false,
                        format!("header {name} /{re}/ did not match {}", quote(vals[0])),
                    ),
                    None => (
                        "header",
                        false,
                        format!(
                            "header {name} /{re}/ did not match any of its {} values",
                            vals.len()
                        ),
                    ),
                },
            }
        }
        Cond::BusinessHours(want) => match hours {
            Some(h) => {
                let inside = h.contains(input.arrival);
                (
                    "business_hours",
                    inside == *want,
                    format!(
                        "business_hours {want}: arrived {} business hours ({})",
                        if inside { "inside" } else { "outside" },
                        h.local_label(input.arrival)
                    ),
                )
            }
            // Config validation forbids this; a rule that cannot be judged
            // must not match.
            None => (
                "business_hours",
                false,
                "business_hours: policy.business_hours is not set".to_string(),
            ),
        },
        Cond::HasAttachments(want) => (
            "has_attachments",
            input.has_attachments == *want,
            format!(
                "has_attachments {want}: the mail has {}",
                if input.has_attachments {
                    "attachments"
                } else {
                    "no attachments"
                }
            ),
        ),
    };
    Check {
        condition,
        passed,
        reason,
    }
}

/// Merges one matched rule's actions into `out`, noting in `step` what it
/// set and what earlier rules had already decided.
fn merge(out: &mut MergedActions, a: &MergedActions, step: &mut RuleTrace) {
    fn scalar<T: Clone + PartialEq>(
        slot: &mut Option<T>,
        want: &Option<T>,
        what: &str,
        show: impl Fn(&T) -> String,
        step: &mut RuleTrace,
    ) {
        let Some(w) = want else { return };
        match slot {
            None => {
                *slot = Some(w.clone());
                step.applied.push(format!("{what} {}", show(w)));
            }
            Some(have) if have == w => {}
            Some(have) => step.kept.push(format!(
                "{what} {}, set earlier (this rule says {})",
                show(have),
                show(w)
            )),
        }
    }
    if a.drop {
        out.drop = true;
        step.applied
            .push("drop (kept as deleted, nothing sent)".into());
        return;
    }
    scalar(
        &mut out.category,
        &a.category,
        "category",
        String::clone,
        step,
    );
    scalar(
        &mut out.priority,
        &a.priority,
        "priority",
        String::clone,
        step,
    );
    scalar(
        &mut out.assignee,
        &a.assignee,
        "assignee",
        Assignee::to_string,
        step,
    );
    scalar(
        &mut out.status,
        &a.status,
        "status",
        |s: &Status| s.as_str().to_string(),
        step,
    );
    let added: Vec<String> = a
        .watchers
        .iter()
        .filter(|w| push_once(&mut out.watchers, (*w).clone()))
        .cloned()
        .collect();
    if !added.is_empty() {
        step.applied
            .push(format!("watchers [{}]", added.join(", ")));
    }
    let added: Vec<String> = a
        .tags
        .iter()
        .filter(|t| push_once(&mut out.tags, (*t).clone()))
        .cloned()
        .collect();
    if !added.is_empty() {
        step.applied.push(format!("tags [{}]", added.join(", ")));
    }
}

/// Runs the rules over one message. Pure: the same input gives the same
/// outcome, so `serve`, `explain` and `rules test` agree.
pub fn evaluate(rules: &Rules, input: &RuleInput<'_>) -> RulesOutcome {
    let hours = rules.0.hours.as_ref();
    let mut actions = MergedActions::default();
    let mut trace = Vec::with_capacity(rules.len());
    let mut stopped_at: Option<usize> = None;
    for (index, r) in rules.0.rules.iter().enumerate() {
        let mut step = RuleTrace {
            index,
            name: r.name.clone(),
            verdict: Verdict::Disabled,
            checks: Vec::new(),
            reached: stopped_at.is_none(),
            applied: Vec::new(),
            kept: Vec::new(),
            stopped: false,
        };
        if !r.enabled {
            trace.push(step);
            continue;
        }
        let mut matched = true;
        for c in &r.conds {
            let ch = check(c, input, hours);
            let passed = ch.passed;
            step.checks.push(ch);
            if !passed {
                matched = false;
                break;
            }
        }
        step.verdict = if matched {
            Verdict::Matched
        } else {
            Verdict::NotMatched
        };
        if matched && step.reached {
            merge(&mut actions, &r.actions, &mut step);
            if r.actions.drop || !r.continues {
                step.stopped = true;
                stopped_at = Some(index);
            }
        }
        trace.push(step);
    }
    RulesOutcome {
        actions,
        trace,
        stopped_at,
    }
}

/// The text `postdesk rules test` and `explain` print: every rule in order
/// with its verdict and why, what it set, where evaluation ended, and the
/// merged result.
pub fn render_trace(outcome: &RulesOutcome) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let n = outcome.trace.len();
    match n {
        0 => s.push_str("routing: no rules\n"),
        1 => s.push_str("routing: 1 rule, first match wins\n"),
        _ => {
            let _ = writeln!(s, "routing: {n} rules, first match wins");
        }
    }
    for t in &outcome.trace {
        let label = match &t.name {
            Some(name) => format!("routing[{}] {name:?}", t.index),
            None => format!("routing[{}]", t.index),
        };
        let verdict = match t.verdict {
            Verdict::Disabled => "disabled, skipped".to_string(),
            v if !t.reached => {
                let at = outcome
                    .stopped_at
                    .map(|i| format!(" (evaluation ended at routing[{i}])"))
                    .unwrap_or_default();
                let would = if v == Verdict::Matched {
                    "would match"
                } else {
                    "would not match"
                };
                format!("not reached{at}; {would}")
            }
            Verdict::Matched => "matched".to_string(),
            Verdict::NotMatched => "not matched".to_string(),
        };
        let _ = writeln!(s, "{label}: {verdict}");
        if t.verdict == Verdict::Disabled {
            continue;
        }
        if t.checks.is_empty() {
            s.push_str("  yes: no conditions, matches every mail\n");
        }
        for c in &t.checks {
            let _ = writeln!(s, "  {}: {}", if c.passed { "yes" } else { "no" }, c.reason);
        }
        if !(t.reached && t.verdict == Verdict::Matched) {
            continue;
        }
        if t.applied.is_empty() {
            s.push_str("  sets: nothing new\n");
        } else {
            let _ = writeln!(s, "  sets: {}", t.applied.join(", "));
        }
        for k in &t.kept {
            let _ = writeln!(s, "  kept: {k}");
        }
        if t.stopped {
            let why = if t.applied.iter().any(|a| a.starts_with("drop")) {
                "drop"
            } else {
                "no continue"
            };
            let _ = writeln!(s, "  stop: {why}, evaluation ends here");
        } else {
            s.push_str("  continue: evaluation goes on\n");
        }
    }
    if outcome.matched() {
        let _ = writeln!(s, "result: {}", outcome.actions);
    } else {
        s.push_str("result: no rule matched, nothing set\n");
    }
    s
}

/// Top-level header fields of a raw message as (name, value): folded lines
/// joined, values trimmed, not decoded (RFC 2047 words stay as sent; the
/// `subject` condition sees the decoded subject). Stops at the blank line.
pub fn header_pairs(raw: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let text = String::from_utf8_lossy(line);
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = out.last_mut() {
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(text.trim());
            }
            continue;
        }
        if let Some((name, value)) = text.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                out.push((name.to_string(), value.trim().to_string()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::domain_of;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "support: {{address: support@desk.test}}\n\
             team:\n  agents:\n    - email: alice@desk.test\n    - email: bob@desk.test\n    - email: dave@desk.test\n\
             policy:\n  business_hours: {{timezone: Europe/Tallinn, hours: \"09:00-17:00\", days: [mon, tue, wed, thu, fri]}}\n\
             groups:\n  - {{name: l2, members: [dave@desk.test]}}\n\
             categories:\n  - {{id: billing, agents: [alice@desk.test, bob@desk.test], second_line: l2}}\n  - {{id: tech}}\n\
             {extra}"
        );
        Config::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn rules(routing: &str) -> Rules {
        Rules::new(&cfg(&format!("routing:\n{routing}"))).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Tuesday 10 March 2026, 10:15 in Tallinn.
    fn tuesday_morning() -> Timestamp {
        "2026-03-10T08:15:00Z".parse().unwrap()
    }

    static URGENT: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["urgent".to_string()]);

    fn input<'a>(headers: &'a [(String, String)]) -> RuleInput<'a> {
        RuleInput {
            sender: "Mari@Billing.Acme.test",
            customer: Some("ACME"),
            customer_category: Some("gold"),
            plus_tags: &URGENT,
            subject: "Invoice 2026-114 is wrong",
            body: "Hello, the total is wrong.\nRegards, Mari",
            headers,
            arrival: tuesday_morning(),
            has_attachments: false,
        }
    }

    fn one(rule_if: &str, i: &RuleInput<'_>) -> (bool, String) {
        let r = rules(&format!("  - if: {rule_if}\n    then: {{tags: [x]}}\n"));
        let o = evaluate(&r, i);
        let t = &o.trace[0];
        let reason = t
            .checks
            .last()
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        (t.verdict == Verdict::Matched, reason)
    }

    #[test]
    fn globs() {
        assert!(glob_match("*@acme.test", "mari@acme.test"));
        assert!(glob_match("*@ACME.test", "Mari@acme.TEST"));
        assert!(!glob_match("*@acme.test", "mari@acme.test.evil"));
        assert!(glob_match("m?ri@*", "mari@x"));
        assert!(glob_match("*a*b*c", "xxaxxbxxbxc"));
        assert!(!glob_match("*a*b*c", "xxaxxbxxbx"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("?", ""));
        assert!(domain_matches("*.acme.test", "acme.test"));
        assert!(domain_matches("*.acme.test", "billing.acme.test"));
        assert!(!domain_matches("*.acme.test", "notacme.test"));
        assert!(!domain_matches("?*.acme.test", "acme.test"));
        assert!(domain_matches("?*.acme.test", "eu.acme.test"));
    }

    #[test]
    fn each_condition_says_why() {
        let h = vec![
            ("X-Priority".to_string(), "1 (Highest)".to_string()),
            ("Received".to_string(), "from a".to_string()),
            ("Received".to_string(), "from b".to_string()),
        ];
        let i = input(&h);
        let cases: Vec<(&str, bool, &str)> = vec![
            (
                "{sender: \"*@*.acme.test\"}",
                true,
                "sender *@*.acme.test matched mari@billing.acme.test",
            ),
            (
                "{sender: \"*@kalev.test\"}",
                false,
                "sender *@kalev.test did not match mari@billing.acme.test",
            ),
            (
                "{sender_domain: \"*.acme.test\"}",
                true,
                "sender_domain *.acme.test matched billing.acme.test",
            ),
            (
                "{sender_domain: acme.test}",
                false,
                "sender_domain acme.test did not match billing.acme.test",
            ),
            ("{customer: acme}", true, "customer acme matched"),
            (
                "{customer: KALEV}",
                false,
                "customer KALEV: the sender's customer is ACME",
            ),
            (
                "{customer_category: gold}",
                true,
                "customer_category gold matched (customer ACME)",
            ),
            (
                "{customer_category: silver}",
                false,
                "customer_category silver: the customer's category is gold (customer ACME)",
            ),
            ("{plus_tag: urgent}", true, "plus_tag urgent matched"),
            (
                "{plus_tag: billing}",
                false,
                "plus_tag billing: the mail came to the plus-tag urgent",
            ),
            (
                "{subject: \"(?i)invoice\"}",
                true,
                "subject /(?i)invoice/ matched \"Invoice\"",
            ),
            (
                "{subject: \"^Re:\"}",
                false,
                "subject /^Re:/ did not match \"Invoice 2026-114 is wrong\"",
            ),
            (
                "{body: \"(?m)^Regards\"}",
                true,
                "body /(?m)^Regards/ matched \"Regards\"",
            ),
            (
                "{body: refund}",
                false,
                "body /refund/ did not match the own text (40 characters)",
            ),
            (
                "{header: {name: x-priority}}",
                true,
                "header x-priority is present",
            ),
            ("{header: {name: X-Spam}}", false, "header X-Spam is absent"),
            (
                "{header: {name: X-Priority, matches: \"^1\"}}",
                true,
                "header X-Priority /^1/ matched \"1\"",
            ),
            (
                "{header: {name: X-Priority, matches: \"^5\"}}",
                false,
                "header X-Priority /^5/ did not match \"1 (Highest)\"",
            ),
            (
                "{header: {name: Received, matches: \"from c\"}}",
                false,
                "header Received /from c/ did not match any of its 2 values",
            ),
            (
                "{header: {name: Received, matches: \"from b\"}}",
                true,
                "header Received /from b/ matched \"from b\"",
            ),
            (
                "{business_hours: true}",
                true,
                "business_hours true: arrived inside business hours (Tue 10:15 Europe/Tallinn)",
            ),
            (
                "{business_hours: false}",
                false,
                "business_hours false: arrived inside business hours (Tue 10:15 Europe/Tallinn)",
            ),
            (
                "{has_attachments: false}",
                true,
                "has_attachments false: the mail has no attachments",
            ),
            (
                "{has_attachments: true}",
                false,
                "has_attachments true: the mail has no attachments",
            ),
        ];
        for (cond, want, why) in cases {
            let (got, reason) = one(cond, &i);
            assert_eq!((got, reason.as_str()), (want, why), "{cond}");
        }
    }

    static EMPTY_TAG: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec![String::new()]);

    #[test]
    fn missing_facts_do_not_match() {
        let h = vec![];
        let i = RuleInput {
            sender: "",
            customer: None,
            customer_category: None,
            plus_tags: &EMPTY_TAG,
            ..input(&h)
        };
        for (cond, why) in [
            (
                "{sender: \"*@x.test\"}",
                "sender *@x.test: the mail has no sender address",
            ),
            (
                "{sender_domain: x.test}",
                "sender_domain x.test: the mail has no sender address",
            ),
            (
                "{customer: ACME}",
                "customer ACME: the sender has no customer",
            ),
            (
                "{customer_category: gold}",
                "customer_category gold: the sender has no customer",
            ),
            (
                "{plus_tag: urgent}",
                "plus_tag urgent: the mail came to the bare support address",
            ),
        ] {
            assert_eq!(one(cond, &i), (false, why.to_string()), "{cond}");
        }
        let i = RuleInput {
            customer_category: None,
            ..input(&h)
        };
        assert_eq!(
            one("{customer_category: gold}", &i).1,
            "customer_category gold: the customer has no category (customer ACME)"
        );
    }

    #[test]
    fn business_hours_edges_in_the_desk_time_zone() {
        let h = vec![];
        let at = |ts: &str| RuleInput {
            arrival: ts.parse().unwrap(),
            ..input(&h)
        };
        // 09:00 Tallinn (UTC+2 in March) is inside, 17:00 is not.
        assert!(one("{business_hours: true}", &at("2026-03-10T07:00:00Z")).0);
        assert!(!one("{business_hours: true}", &at("2026-03-10T06:59:59Z")).0);
        assert!(!one("{business_hours: true}", &at("2026-03-10T15:00:00Z")).0);
        // Saturday noon.
        let (m, why) = one("{business_hours: false}", &at("2026-03-14T10:00:00Z"));
        assert!(m);
        assert_eq!(
            why,
            "business_hours false: arrived outside business hours (Sat 12:00 Europe/Tallinn)"
        );
    }

    #[test]
    fn an_empty_if_matches_everything() {
        let r = rules("  - then: {priority: low}\n  - if: {}\n    then: {priority: high}\n");
        let h = vec![];
        let o = evaluate(&r, &input(&h));
        assert_eq!(o.actions.priority.as_deref(), Some("low"));
        assert_eq!(o.stopped_at, Some(0));
        assert!(render_trace(&o).contains("yes: no conditions, matches every mail"));
    }

    #[test]
    fn first_match_wins_and_continue_goes_on_without_overriding() {
        let r = rules(
            "  - if: {subject: nomatch}\n    then: {category: tech}\n\
             \x20 - if: {plus_tag: urgent}\n    then: {priority: high, tags: [urgent], watchers: [Dave@desk.test]}\n    continue: true\n\
             \x20 - if: {customer: ACME}\n    then: {category: billing, priority: normal, assignee: distribute, tags: [urgent, acme]}\n\
             \x20 - then: {category: tech, tags: [never]}\n",
        );
        let h = vec![];
        let o = evaluate(&r, &input(&h));
        assert_eq!(
            o.actions,
            MergedActions {
                category: Some("billing".into()),
                priority: Some("high".into()),
                assignee: Some(Assignee::Distribute),
                status: None,
                watchers: vec!["dave@desk.test".into()],
                tags: vec!["urgent".into(), "acme".into()],
                drop: false,
            }
        );
        assert_eq!(o.stopped_at, Some(2));
        let t = &o.trace;
        assert_eq!(t[0].verdict, Verdict::NotMatched);
        assert!(!t[1].stopped && t[2].stopped);
        assert_eq!(
            t[2].kept,
            vec!["priority high, set earlier (this rule says normal)".to_string()]
        );
        assert_eq!(
            t[2].applied,
            vec!["category billing", "assignee distribute", "tags [acme]"]
        );
        assert!(!t[3].reached);
        assert_eq!(t[3].verdict, Verdict::Matched);
        assert!(t[3].applied.is_empty());
    }

    #[test]
    fn a_disabled_rule_is_skipped() {
        let r = rules(
            "  - if: {plus_tag: urgent}\n    then: {priority: low}\n    enabled: false\n\
             \x20 - then: {priority: high}\n",
        );
        let h = vec![];
        let o = evaluate(&r, &input(&h));
        assert_eq!(o.actions.priority.as_deref(), Some("high"));
        assert_eq!(o.trace[0].verdict, Verdict::Disabled);
        assert!(o.trace[0].checks.is_empty());
        assert!(render_trace(&o).contains("routing[0]: disabled, skipped\n"));
    }

    #[test]
    fn drop_reached_through_continue_drops() {
        let r = rules(
            "  - then: {priority: high}\n    continue: true\n\
             \x20 - if: {subject: Invoice}\n    then: {drop: true}\n\
             \x20 - then: {category: tech}\n",
        );
        let h = vec![];
        let o = evaluate(&r, &input(&h));
        assert!(o.actions.drop);
        assert_eq!(o.actions.category, None);
        assert_eq!(o.stopped_at, Some(1));
        let text = render_trace(&o);
        assert!(
            text.contains("  stop: drop, evaluation ends here\n"),
            "{text}"
        );
        assert!(
            text.ends_with("result: drop (kept as deleted, nothing sent)\n"),
            "{text}"
        );
    }

    #[test]
    fn assignees_statuses_and_ids_take_the_config_spelling() {
        let r = rules(
            "  - then: {category: BILLING, assignee: L2, status: Waiting}\n    continue: true\n\
             \x20 - then: {assignee: Alice@Desk.test}\n",
        );
        let h = vec![];
        let o = evaluate(&r, &input(&h));
        assert_eq!(o.actions.category.as_deref(), Some("billing"));
        assert_eq!(o.actions.assignee, Some(Assignee::Group("l2".into())));
        assert_eq!(o.actions.status, Some(Status::Waiting));
        assert_eq!(
            o.trace[1].kept,
            vec!["assignee group l2, set earlier (this rule says alice@desk.test)".to_string()]
        );
    }

    #[test]
    fn no_rules_and_no_match() {
        let h = vec![];
        let o = evaluate(&Rules::default(), &input(&h));
        assert_eq!(
            render_trace(&o),
            "routing: no rules\nresult: no rule matched, nothing set\n"
        );
        let r = rules("  - if: {plus_tag: other}\n    then: {priority: high}\n");
        let o = evaluate(&r, &input(&h));
        assert!(!o.matched());
        assert!(o.actions.is_empty());
    }

    #[test]
    fn the_outcome_serializes_for_json_output() {
        let r = rules("  - name: r\n    if: {plus_tag: urgent}\n    then: {assignee: distribute, status: waiting}\n");
        let h = vec![];
        let v = serde_json::to_value(evaluate(&r, &input(&h))).unwrap();
        assert_eq!(
            v["actions"]["assignee"],
            serde_json::json!({"kind": "distribute"})
        );
        assert_eq!(v["actions"]["status"], "waiting");
        assert_eq!(v["trace"][0]["verdict"], "matched");
        assert_eq!(v["trace"][0]["checks"][0]["condition"], "plus_tag");
        assert_eq!(v["stopped_at"], 0);
    }

    #[test]
    fn rules_are_shared_not_copied() {
        let r = rules("  - then: {priority: high}\n");
        let r2 = r.clone();
        assert!(Arc::ptr_eq(&r.0, &r2.0));
        assert_eq!(r2.len(), 1);
    }

    #[test]
    fn rules_new_holds_a_config_built_in_code_to_the_checks() {
        let mut c = cfg("");
        c.routing.push(crate::config::Rule {
            then: crate::config::Actions {
                category: Some("nope".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let e = Rules::new(&c).unwrap_err();
        assert_eq!(e.key, "routing[0].then.category");
    }

    #[test]
    fn header_pairs_unfold_and_stop_at_the_body() {
        let raw =
            b"From: a@b\r\nX-Long: one\r\n two\r\n\tthree\r\nSubject: hi\r\n\r\nX-Not: body\r\n";
        assert_eq!(
            header_pairs(raw),
            vec![
                ("From".to_string(), "a@b".to_string()),
                ("X-Long".to_string(), "one two three".to_string()),
                ("Subject".to_string(), "hi".to_string()),
            ]
        );
    }

    /// The fenced block after `<!-- example:NAME -->` in docs/policies.md.
    fn doc_block<'a>(doc: &'a str, name: &str) -> &'a str {
        let marker = format!("<!-- example:{name} -->");
        let at = doc.find(&marker).unwrap_or_else(|| panic!("no {marker}"));
        let rest = &doc[at + marker.len()..];
        let open = rest.find("```").unwrap();
        let body_start = open + rest[open..].find('\n').unwrap() + 1;
        let close = rest[body_start..].find("\n```").unwrap();
        &rest[body_start..body_start + close + 1]
    }

    /// docs/policies.md shows a config, a mail and the trace they give;
    /// this runs them, so the page cannot drift from the code.
    #[test]
    fn the_trace_in_docs_policies_md_is_what_render_trace_prints() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/policies.md"))
            .unwrap();
        let cfg = Config::parse(doc_block(&doc, "config"), "policies.md")
            .unwrap_or_else(|e| panic!("{e}"));
        let raw = doc_block(&doc, "mail").replace('\n', "\r\n");
        let parsed = crate::ingest::parse::parse(raw.as_bytes());
        let sender = parsed
            .from
            .as_ref()
            .map(|a| a.email.clone())
            .unwrap_or_default();
        let customer = cfg
            .customers
            .iter()
            .find(|c| {
                c.domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain_of(&sender)))
            })
            .unwrap();
        let tags: Vec<String> = parsed
            .to
            .iter()
            .filter_map(|a| cfg.support_tag(&a.email))
            .collect();
        let headers = header_pairs(raw.as_bytes());
        let arrival: Timestamp = parsed.date.as_deref().unwrap().parse().unwrap();
        let input = RuleInput {
            sender: &sender,
            customer: Some(&customer.id),
            customer_category: customer.category.as_deref(),
            plus_tags: &tags,
            subject: &parsed.subject,
            body: &parsed.text,
            headers: &headers,
            arrival,
            has_attachments: parsed.has_attachments,
        };
        let outcome = evaluate(&Rules::new(&cfg).unwrap(), &input);
        let got = render_trace(&outcome);
        assert_eq!(
            doc_block(&doc, "trace"),
            got,
            "docs/policies.md's trace is stale; the code prints:\n{got}"
        );
        assert_eq!(
            crate::policy::default_owner(customer.manager.as_deref(), None).as_deref(),
            Some("alice@example.com")
        );
    }
}
