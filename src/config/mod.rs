//! Typed configuration (SPEC §7) with defaults, loaded from YAML.
//!
//! Owns: every key, its default, and the error that names a bad key and its
//! line. Must not: touch the network or the store (that is `check-config`'s
//! job in the CLI). A file with only the SPEC's minimal keys is valid; every
//! other key has a default here, and `docs/configuration.md` lists them all
//! (a test keeps that true).

mod duration;
mod locate;
mod policy;

pub use crate::sla::{Calendars, SlaConditions, SlaConfig, SlaPolicy};
pub use duration::Duration;
pub use locate::line_of_path;
pub(crate) use policy::is_word;
pub use policy::{
    build_regex, check as check_policy, default_priorities, known_categories, known_priorities,
    Actions, BusinessHours, Category, Conditions, Distribution, DistributionMode, Group,
    HeaderCondition, OpenHours, PolicyError, Priority, Rule, Vacation, REGEX_SIZE_LIMIT,
};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// `file:line: key: why`, the form an operator can jump to.
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {key}: {message}")]
    Semantic {
        file: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: Listen,
    pub data_dir: PathBuf,
    pub support: Support,
    pub team: Team,
    pub outbound: Outbound,
    pub policy: Policy,
    pub commands: Commands,
    pub limits: Limits,
    pub log: Log,
    /// Customer directory (SPEC §3.6): who a sender belongs to.
    pub customers: Vec<Customer>,
    /// A YAML file with more directory entries (a list of customers, as in
    /// `config/customers.yaml`), merged after `customers`. Relative paths
    /// are taken from the config file's folder.
    pub customers_file: Option<PathBuf>,
    /// Where `en/`, `et/` … template folders live; none = the built-in set.
    pub templates_dir: Option<PathBuf>,
    /// Where `en/`, `et/` … folders of canned answers (`NAME.txt`) live,
    /// laid over the built-in examples; none = the built-in set.
    pub answers_dir: Option<PathBuf>,
    /// Named lists of commands run by `#macro NAME`, all or nothing.
    pub macros: std::collections::BTreeMap<String, Vec<String>>,
    /// Ordered lowest first; see `policy.rs` for the desk-policy keys.
    pub priorities: Vec<Priority>,
    pub groups: Vec<Group>,
    pub categories: Vec<Category>,
    /// First match wins (docs/policies.md).
    pub routing: Vec<Rule>,
    /// Service calendars: id → calendar file (docs/sla.md); relative paths
    /// are taken from the config file's folder.
    pub calendars: std::collections::BTreeMap<String, PathBuf>,
    /// SLA policies and the warning lead time (docs/sla.md).
    pub sla: SlaConfig,
    pub status_notices: StatusNotices,
    /// Where tickets live: the embedded sled store under `data_dir`, or a
    /// PostgreSQL database several nodes share (docs/scaling.md).
    pub store: StoreConfig,
    /// The files of `calendars`, read by `Config::load` so that a broken
    /// calendar is a config error; empty after `Config::parse`, which
    /// reads no files.
    #[serde(skip)]
    pub loaded_calendars: Calendars,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// `HOST:PORT` or `unix:/path`.
    pub lmtp: Vec<String>,
    pub allow_remote: bool,
    pub lmtp_socket_group: String,
    pub lmtp_socket_mode: String,
    /// Control socket for the CLI; none = `data_dir/control.sock`.
    pub control: Option<PathBuf>,
    /// `HOST:PORT` serving Prometheus metrics at `/metrics`; none = off.
    pub metrics: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Support {
    pub address: String,
    /// Display name used in `"Name via Support" <support@…>` and our From.
    pub name: String,
    pub token_prefix: String,
    pub language: String,
    /// The `List-Id` of the team's own list in front of postdesk, if any:
    /// mail carrying it is not treated as bulk (SPEC §3.3).
    pub list_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Team {
    pub domains: Vec<String>,
    pub agents: Vec<Agent>,
    pub leads: Vec<String>,
    pub distribute: Distribute,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Days away: distribution skips the agent on them.
    #[serde(default)]
    pub vacation: Vec<Vacation>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Distribute {
    #[default]
    Everyone,
    Assignee,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Outbound {
    /// `smtp://host:port`, `direct`, or `file:DIR`.
    pub relay: String,
    /// HELO name for our SMTP client; none = the host name.
    pub helo_name: Option<String>,
    /// First retry delay; doubles per attempt up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// After this long a transient failure becomes permanent.
    pub give_up_after: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    pub reopen_within: Duration,
    pub reminder_after: Duration,
    /// Acknowledgements per sender per hour.
    pub ack_rate_limit: u32,
    pub digest_at: Option<String>,
    /// Public mail providers added to the bundled list (never matched by domain).
    pub extra_public_domains: Vec<String>,
    /// For the `business_hours` rule condition; none = that condition
    /// cannot be used.
    pub business_hours: Option<BusinessHours>,
    /// `done` means resolved: the customer confirms (closed) or reopens by
    /// a signed link, or it closes by itself after `autoclose_after`.
    pub confirm_close: bool,
    pub autoclose_after: Duration,
    /// Erase raw messages of long-closed tickets; none = keep forever.
    pub retention: Option<Retention>,
}

/// `policy.retention` (docs/operations.md#retention).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Raw messages and attachments of tickets closed (or done, without
    /// `confirm_close`) longer than this are erased.
    pub after: Duration,
    /// What happens to the ticket's own record then.
    #[serde(default)]
    pub metadata: RetainMetadata,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RetainMetadata {
    /// Keep subject, contact, excerpts and figures.
    #[default]
    Keep,
    /// Replace the contact, names, subject and excerpts; figures stay.
    Anonymise,
}

/// `store`: which backend holds the desk's state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    pub postgres: PostgresConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sled,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user@host:port/db` (libpq's URL form; a password is
    /// better kept in `~/.pgpass` or `PGPASSWORD` than here).
    pub url: String,
    /// Connections per node. Each LMTP delivery holds one for its
    /// transaction, the outbox and scheduler one each now and then.
    pub pool_size: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            pool_size: 16,
        }
    }
}

/// `status_notices`: which status changes the customer is told of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusNotices {
    /// Taken into work (once per ticket: SPEC §5 `notified`).
    pub active: bool,
    /// Waiting on the customer: asks for their answer.
    pub waiting: bool,
    /// Resolved: the resolution and the rating links (and, with
    /// `policy.confirm_close`, the confirm and reopen links).
    pub done: bool,
    /// Closed (confirmed, or closed by itself).
    pub closed: bool,
}

impl Default for StatusNotices {
    fn default() -> Self {
        StatusNotices {
            active: true,
            waiting: false,
            done: false,
            closed: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Commands {
    pub trust: Vec<String>,
    pub authserv_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_message_size: u64,
    pub max_line_length: usize,
    pub max_header_size: usize,
    pub max_recipients: usize,
    pub max_sessions: usize,
    pub idle_timeout: Duration,
    /// Whole-session cap, so a trickling client cannot hold a slot forever.
    pub session_timeout: Duration,
    /// Bytes that must stay free on the data dir's filesystem; below that,
    /// mail is answered 451 before anything is written.
    pub min_free_space: u64,
    /// A store commit still running after this long means the store is
    /// wedged: postdesk exits 75 so the service manager restarts it.
    pub commit_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `postdesk=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub domains: Vec<String>,
    /// Free text (`gold`, `partner`) for the `customer_category` rule
    /// condition; not a ticket category.
    #[serde(default)]
    pub category: Option<String>,
    /// The agent responsible for this customer: the default owner of its
    /// tickets when no rule assigns one.
    #[serde(default)]
    pub manager: Option<String>,
}

impl Config {
    /// Whether there may be desk data to read: a sled store under
    /// `data_dir`, or a PostgreSQL database (always: it is shared, and
    /// another node may have written it).
    pub fn has_store(&self) -> bool {
        match self.store.backend {
            StoreBackend::Sled => self.data_dir.join("store").exists(),
            StoreBackend::Postgres => true,
        }
    }
}

impl Default for Config {
    /// The built-in default (SPEC §7): loopback, data in `./data`, outbound
    /// to files, so a newcomer's first mail shows up without any set-up.
    fn default() -> Self {
        Config {
            listen: Listen::default(),
            data_dir: PathBuf::from("./data"),
            support: Support::default(),
            team: Team::default(),
            outbound: Outbound::default(),
            policy: Policy::default(),
            commands: Commands::default(),
            limits: Limits::default(),
            log: Log::default(),
            customers: Vec::new(),
            customers_file: None,
            templates_dir: None,
            answers_dir: None,
            macros: Default::default(),
            priorities: default_priorities(),
            groups: Vec::new(),
            categories: Vec::new(),
            routing: Vec::new(),
            calendars: Default::default(),
            sla: SlaConfig::default(),
            status_notices: StatusNotices::default(),
            store: StoreConfig::default(),
            loaded_calendars: Calendars::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            lmtp: vec!["127.0.0.1:2424".into()],
            allow_remote: false,
            lmtp_socket_group: "postfix".into(),
            lmtp_socket_mode: "0660".into(),
            control: None,
            metrics: None,
        }
    }
}

impl Default for Support {
    fn default() -> Self {
        Support {
            address: "support@localhost".into(),
            name: "Support".into(),
            token_prefix: "SUP".into(),
            language: "en".into(),
            list_id: None,
        }
    }
}

impl Default for Team {
    fn default() -> Self {
        Team {
            domains: Vec::new(),
            agents: vec![Agent {
                email: "agent@localhost".into(),
                name: None,
                vacation: Vec::new(),
            }],
            leads: Vec::new(),
            distribute: Distribute::Everyone,
        }
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            relay: "file:./data/sent".into(),
            helo_name: None,
            retry_min: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(5 * 86400),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            reopen_within: Duration::from_secs(14 * 86400),
            reminder_after: Duration::from_secs(3 * 86400),
            ack_rate_limit: 5,
            digest_at: None,
            extra_public_domains: Vec::new(),
            business_hours: None,
            confirm_close: false,
            autoclose_after: Duration::from_secs(7 * 86400),
            retention: None,
        }
    }
}

impl Default for Commands {
    fn default() -> Self {
        Commands {
            trust: vec!["signed_address".into(), "dkim".into()],
            authserv_id: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 50 * 1024 * 1024,
            max_line_length: 1024 * 1024,
            max_header_size: 1024 * 1024,
            max_recipients: 100,
            max_sessions: 100,
            idle_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(1800),
            min_free_space: 32 * 1024 * 1024,
            commit_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Loads and checks a config file. Errors name the file, line and key.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            file: file.clone(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &file)?;
        if let Some(cf) = cfg.customers_file.clone() {
            let cf = if cf.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(cf)
            } else {
                cf
            };
            let name = cf.display().to_string();
            let text = std::fs::read_to_string(&cf).map_err(|source| Error::Read {
                file: name.clone(),
                source,
            })?;
            let more: Vec<Customer> = serde_yaml::from_str(&text).map_err(|e| Error::Invalid {
                file: name.clone(),
                line: e.location().map(|l| l.line()).unwrap_or(0),
                message: tidy_serde_message(&e.to_string()),
            })?;
            policy::check_customers(&cfg, &more, "")
                .map_err(|e| locate_policy_error(&text, &name, e))?;
            cfg.customers.extend(more);
        }
        cfg.loaded_calendars = crate::sla::load_calendars(&cfg, path)?;
        Ok(cfg)
    }

    /// Parses YAML text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, Error> {
        // An empty file is "all defaults", which serde_yaml reports as EOF.
        let cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                let line = e.location().map(|l| l.line()).unwrap_or(0);
                let tidy = tidy_serde_message(&e.to_string());
                let (line, message) = match find_item_key(&tidy, text, line) {
                    Some(found) => found,
                    None => (line, name_the_key(&tidy, text, line)),
                };
                Error::Invalid {
                    file: file.to_string(),
                    line,
                    message,
                }
            })?
        };
        cfg.validate(text, file)?;
        Ok(cfg)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), Error> {
        let bad = |key: &str, message: String| {
            let line = line_of_key(text, key);
            match line {
                Some(line) => Error::Invalid {
                    file: file.to_string(),
                    line,
                    message: format!("{key}: {message}"),
                },
                None => Error::Semantic {
                    file: file.to_string(),
                    key: key.to_string(),
                    message,
                },
            }
        };
        if self.store.backend == StoreBackend::Postgres {
            let url = self.store.postgres.url.trim();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(bad(
                    "store.postgres.url",
                    format!(
                        "{url:?} is not a PostgreSQL URL (e.g. postgres://postdesk@db.example.com/postdesk); store.backend is postgres"
                    ),
                ));
            }
            if self.store.postgres.pool_size == 0 {
                return Err(bad("store.postgres.pool_size", "must be at least 1".into()));
            }
        }
        if !is_plausible_address(&self.support.address) {
            return Err(bad(
                "support.address",
                format!(
                    "{:?} is not a mail address (e.g. support@example.com)",
                    self.support.address
                ),
            ));
        }
        if self.support.token_prefix.is_empty()
            || !self
                .support
                .token_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        {
            return Err(bad(
                "support.token_prefix",
                format!(
                    "{:?} must be letters and digits (e.g. SUP)",
                    self.support.token_prefix
                ),
            ));
        }
        for (i, a) in self.team.agents.iter().enumerate() {
            if !is_plausible_address(&a.email) {
                return Err(bad(
                    "team.agents",
                    format!("entry {i}: {:?} is not a mail address", a.email),
                ));
            }
        }
        if self.listen.lmtp.is_empty() {
            return Err(bad("listen.lmtp", "needs at least one listener".into()));
        }
        for l in &self.listen.lmtp {
            if l.strip_prefix("unix:").is_none() && l.parse::<std::net::SocketAddr>().is_err() {
                return Err(bad(
                    "listen.lmtp",
                    format!("{l:?} is neither HOST:PORT (an IP address) nor unix:/path"),
                ));
            }
        }
        if let Some(spec) = &self.listen.metrics {
            if let Err(e) = crate::metrics::check_spec(spec, &self.listen) {
                let why = e.to_string();
                let why = why.strip_prefix("listen.metrics: ").unwrap_or(&why);
                return Err(bad("listen.metrics", why.to_string()));
            }
        }
        if u32::from_str_radix(self.listen.lmtp_socket_mode.trim_start_matches("0o"), 8).is_err() {
            return Err(bad(
                "listen.lmtp_socket_mode",
                format!(
                    "{:?} is not an octal mode (e.g. 0660)",
                    self.listen.lmtp_socket_mode
                ),
            ));
        }
        let r = &self.outbound.relay;
        if r != "direct"
            && !r.starts_with("file:")
            && !r.starts_with("smtp://")
            && !r.starts_with("smtps://")
        {
            return Err(bad(
                "outbound.relay",
                format!("{r:?} must be smtp://HOST:PORT, smtps://HOST:PORT, direct, or file:DIR"),
            ));
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(bad(
                "log.level",
                format!("{:?} is not a log filter (e.g. info)", self.log.level),
            ));
        }
        for t in &self.commands.trust {
            if !["signed_address", "dkim", "spf", "authentication_results"].contains(&t.as_str()) {
                return Err(bad(
                    "commands.trust",
                    format!(
                        "{t:?} is not one of signed_address, dkim, spf, authentication_results"
                    ),
                ));
            }
        }
        policy::check(self).map_err(|e| locate_policy_error(text, file, e))?;
        crate::sla::check(self).map_err(|e| locate_policy_error(text, file, e))?;
        Ok(())
    }

    pub fn support_address(&self) -> String {
        self.support.address.to_ascii_lowercase()
    }

    pub fn support_domain(&self) -> String {
        domain_of(&self.support_address()).to_string()
    }

    /// The control socket path the daemon listens on and the CLI dials.
    pub fn control_path(&self) -> PathBuf {
        self.listen
            .control
            .clone()
            .unwrap_or_else(|| self.data_dir.join("control.sock"))
    }

    /// Is `addr` one of ours as a recipient: the support address or a
    /// plus-form of it? Returns the plus-tag (empty for the bare address).
    pub fn support_tag(&self, addr: &str) -> Option<String> {
        let addr = addr.to_ascii_lowercase();
        let support = self.support_address();
        let (s_local, s_dom) = support.split_once('@')?;
        let (local, dom) = addr.rsplit_once('@')?;
        if dom != s_dom {
            return None;
        }
        if local == s_local {
            return Some(String::new());
        }
        let tag = local.strip_prefix(s_local)?.strip_prefix('+')?;
        Some(tag.to_string())
    }

    pub fn is_staff(&self, addr: &str) -> bool {
        let addr = addr.to_ascii_lowercase();
        if self
            .team
            .agents
            .iter()
            .any(|a| a.email.eq_ignore_ascii_case(&addr))
        {
            return true;
        }
        let dom = domain_of(&addr);
        !dom.is_empty()
            && self
                .team
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(dom))
    }
}

pub fn domain_of(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

fn is_plausible_address(a: &str) -> bool {
    match a.split_once('@') {
        Some((l, d)) => !l.is_empty() && !d.is_empty() && !a.contains(char::is_whitespace),
        None => false,
    }
}

/// A policy check names its key as a path (`routing[2].if.subject`); this
/// finds its line, or leaves the line out when the key is not written.
fn locate_policy_error(text: &str, file: &str, e: PolicyError) -> Error {
    match line_of_path(text, &e.key) {
        Some(line) => Error::Invalid {
            file: file.to_string(),
            line,
            message: e.to_string(),
        },
        None => Error::Semantic {
            file: file.to_string(),
            key: e.key,
            message: e.message,
        },
    }
}

/// serde_yaml appends " at line L column C"; we put the line in front.
pub(crate) fn tidy_serde_message(m: &str) -> String {
    match m.rfind(" at line ") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

/// serde_yaml names the enclosing section ("policy: …") for a bad value;
/// the operator wants the key itself ("policy.reopen_within: …"), which is
/// the key on the reported line.
pub(crate) fn name_the_key(message: &str, text: &str, line: usize) -> String {
    let Some(src) = line.checked_sub(1).and_then(|i| text.lines().nth(i)) else {
        return message.to_string();
    };
    let key = src
        .trim_start()
        .trim_start_matches("- ")
        .split(':')
        .next()
        .unwrap_or("")
        .trim();
    if key.is_empty() || message.contains(key) {
        return message.to_string();
    }
    match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => format!("{path}.{key}: {rest}"),
        _ => format!("{key}: {message}"),
    }
}

/// serde_yaml puts a bad value inside a list item (`sla.policies[0]:
/// "3x" is not a duration`) at the item's first line and names only the
/// item. When the message quotes the value, the key holding it within that
/// item gives the true line and key.
fn find_item_key(message: &str, text: &str, line: usize) -> Option<(usize, String)> {
    let (path, rest) = message.split_once(": ")?;
    if !path.ends_with(']') || path.contains(' ') {
        return None;
    }
    let value = rest.strip_prefix('"')?.split('"').next()?;
    if value.is_empty() {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let first = line.checked_sub(1)?;
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let item_indent = indent_of(lines.get(first)?);
    for (i, l) in lines.iter().enumerate().skip(first) {
        let t = l.trim_start();
        if i > first && !t.is_empty() && !t.starts_with('#') && indent_of(l) <= item_indent {
            break;
        }
        for pat in [
            format!(": {value}"),
            format!(": \"{value}\""),
            format!(": '{value}'"),
        ] {
            let Some(pos) = l.find(&pat) else { continue };
            let after = l[pos + pat.len()..].chars().next();
            if !matches!(after, None | Some(',' | '}' | ' ' | '\t')) {
                continue;
            }
            let key = l[..pos]
                .rsplit(['{', ',', ' ', '\t'])
                .next()
                .unwrap_or("")
                .trim_matches(['"', '\'']);
            if !key.is_empty() && key != "-" {
                return Some((i + 1, format!("{path}.{key}: {rest}")));
            }
        }
    }
    None
}

/// Finds the line of a dotted key (`policy.reopen_within`) in YAML text by
/// walking indentation, for errors found after deserializing.
pub fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let mut parts = dotted.split('.').peekable();
    let mut want = parts.next()?;
    let mut min_indent = 0usize;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent < min_indent {
            continue;
        }
        let key = trimmed.split(':').next().unwrap_or("").trim();
        if key == want {
            match parts.next() {
                Some(next) => {
                    want = next;
                    min_indent = indent + 1;
                }
                None => return Some(i + 1),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_spec_file_is_valid() {
        let text = r#"
listen:
  lmtp: ["127.0.0.1:2424", "unix:/run/postdesk/lmtp.sock"]
data_dir: /var/lib/postdesk
support:
  address: support@example.com
team:
  domains: [example.com]
  agents:
    - email: alice@example.com
outbound:
  relay: smtp://127.0.0.1:10025      # or "direct", or "file:DIR"
"#;
        let c = Config::parse(text, "t.yaml").unwrap();
        assert_eq!(c.support.token_prefix, "SUP");
        assert_eq!(c.policy.reopen_within.as_secs(), 14 * 86400);
        assert!(c.is_staff("Bob@Example.com"));
        assert!(!c.is_staff("bob@example.org"));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "support:\n  address: s@x.org\npolicy:\n  reopen_witin: 3d\n";
        let e = Config::parse(text, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml:4:"), "{e}");
        assert!(e.contains("reopen_witin"), "{e}");
    }

    #[test]
    fn bad_duration_names_line() {
        let text = "support:\n  address: s@x.org\npolicy:\n  reopen_within: 3x\n";
        let e = Config::parse(text, "c.yaml").unwrap_err().to_string();
        assert!(e.starts_with("c.yaml:4:"), "{e}");
        assert!(e.contains("not a duration"), "{e}");
        assert!(e.contains("policy.reopen_within"), "{e}");
    }

    #[test]
    fn semantic_error_names_key_and_line() {
        let text = "support:\n  address: nobody\n";
        let e = Config::parse(text, "c.yaml").unwrap_err().to_string();
        assert_eq!(
            e,
            "c.yaml:2: support.address: \"nobody\" is not a mail address (e.g. support@example.com)"
        );
    }

    #[test]
    fn plus_tags() {
        let c = Config::default();
        assert_eq!(c.support_tag("support@localhost").as_deref(), Some(""));
        assert_eq!(
            c.support_tag("Support+report@LOCALHOST").as_deref(),
            Some("report")
        );
        assert_eq!(c.support_tag("supportx@localhost"), None);
        assert_eq!(c.support_tag("other@localhost"), None);
    }
}
