//! `postdesk check-config`, past the YAML: will this config run here?
//!
//! After the file loads (syntax, keys and values are `config`'s job), each
//! check looks at the machine: are the LMTP listeners free (or already held
//! by this postdesk), does the relay answer, can the data directory be
//! written, do the templates render, is the customer directory sane. One
//! line per check, `ok`, `warn` or `FAIL`, and for anything not ok what to
//! do about it. Any FAIL makes the command exit non-zero, so it can gate a
//! deployment (`ExecStartPre=postdesk check-config` or a CI step).
//!
//! Every probe is read-only apart from a test file created and removed in a
//! directory postdesk will write to, and has a short timeout, so the command
//! never hangs on a silent relay.

use crate::config::{domain_of, Config};
use crate::control::{self, Request};
use crate::ingest::thread::is_public_provider;
use crate::render::Templates;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Upper bound for one network probe (connect, or one reply).
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Templates rendered with sample data (`render`'s built-in set; the
/// renderer falls back to English for a language without the file).
const TEMPLATE_NAMES: &[&str] = &[
    "ack.txt",
    "taken.txt",
    "notice.txt",
    "refusal.txt",
    "reminder.txt",
    "report.txt",
    "digest.txt",
    "capacity.txt",
];
/// The ones customers get: they must carry the ticket token, or replies by
/// subject cannot find the ticket.
const CUSTOMER_TEMPLATES: &[&str] = &["ack.txt", "taken.txt"];
const SAMPLE_TOKEN_NUMBER: u64 = 123;
/// How our LMTP greeting ends (`lmtp::reply::greeting`; a test keeps the
/// two together): how a held listener is recognised as postdesk's.
const OUR_GREETING: &str = " LMTP postdesk ready";
/// A server greets at once; a port that stays silent is not worth more.
const GREETING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// Lines as they are found, printed at once (a slow probe shows where it
/// is), kept for the totals.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<(Level, String, String)>,
    quiet: bool,
}

impl Report {
    fn add(&mut self, level: Level, key: &str, text: String) {
        if !self.quiet {
            println!("{:<5} {key}: {text}", level.label());
        }
        self.lines.push((level, key.to_string(), text));
    }
    fn ok(&mut self, key: &str, text: impl Into<String>) {
        self.add(Level::Ok, key, text.into());
    }
    fn warn(&mut self, key: &str, text: impl Into<String>) {
        self.add(Level::Warn, key, text.into());
    }
    fn fail(&mut self, key: &str, text: impl Into<String>) {
        self.add(Level::Fail, key, text.into());
    }
    fn count(&self, l: Level) -> usize {
        self.lines.iter().filter(|(x, _, _)| *x == l).count()
    }
}

/// Runs every check, printing one line each and a total. `Ok(false)` when
/// any check failed.
pub fn run(cfg: &Config, path: Option<&Path>) -> anyhow::Result<bool> {
    let mut r = Report::default();
    check_all(cfg, path, &mut r);
    let (ok, warn, fail) = (
        r.count(Level::Ok),
        r.count(Level::Warn),
        r.count(Level::Fail),
    );
    println!("{ok} ok, {warn} warn, {fail} FAIL");
    Ok(fail == 0)
}

/// The checks without printing: for tests and callers with their own output.
pub fn report(cfg: &Config, path: Option<&Path>) -> Report {
    let mut r = Report {
        quiet: true,
        ..Report::default()
    };
    check_all(cfg, path, &mut r);
    r
}

fn check_all(cfg: &Config, path: Option<&Path>, r: &mut Report) {
    match path {
        Some(p) => r.ok("config", format!("{} loads", p.display())),
        None => r.ok("config", "no --config: the built-in default"),
    }
    let daemon = daemon_runs(cfg);
    match daemon {
        Some(true) => r.ok(
            "listen.control",
            format!(
                "a postdesk daemon answers on {} (listeners it holds count as ours)",
                cfg.control_path().display()
            ),
        ),
        Some(false) => r.ok(
            "listen.control",
            format!("no daemon answers on {}", cfg.control_path().display()),
        ),
        None => r.warn(
            "listen.control",
            format!(
                "{} exists but cannot be reached: check its permissions (run as the service user)",
                cfg.control_path().display()
            ),
        ),
    }
    let daemon = daemon == Some(true);
    check_listeners(cfg, daemon, r);
    check_relay(cfg, r);
    check_data_dir(&cfg.data_dir, r);
    check_templates(cfg, r);
    check_customers(cfg, r);
    check_team(cfg, r);
    check_policies(cfg, r);
}

// ---- desk policies ----------------------------------------------------------

/// The rules compile (loading the file already checked every reference);
/// say what the desk will do with new tickets.
fn check_policies(cfg: &Config, r: &mut Report) {
    match crate::policy::Rules::new(cfg) {
        Ok(rules) => {
            let enabled = cfg.routing.iter().filter(|x| x.enabled).count();
            let distributed = cfg
                .categories
                .iter()
                .filter(|c| c.distribution.is_some())
                .count();
            r.ok(
                "routing",
                format!(
                    "{} rules ({enabled} enabled), {} categories ({distributed} auto-distributed), {} priorities; try one with `postdesk rules test < mail.eml`",
                    rules.len(),
                    cfg.categories.len(),
                    cfg.priorities.len()
                ),
            );
        }
        Err(e) => r.fail("routing", format!("{e}; fix the rule")),
    }
}

/// `Some(true)` when a daemon answers a ping on the control socket,
/// `Some(false)` when none listens, `None` when it cannot be told.
fn daemon_runs(cfg: &Config) -> Option<bool> {
    match control::call(&cfg.control_path(), &Request::Ping) {
        Ok(Some(_)) => Some(true),
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

// ---- listen ---------------------------------------------------------------

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn check_listeners(cfg: &Config, daemon: bool, r: &mut Report) {
    let mut remote = Vec::new();
    for spec in &cfg.listen.lmtp {
        match spec.strip_prefix("unix:") {
            Some(path) => check_unix_listener(cfg, spec, Path::new(path), daemon, r),
            None => match spec.parse::<SocketAddr>() {
                Ok(addr) => {
                    if !is_loopback(addr.ip()) {
                        remote.push(spec.clone());
                    }
                    check_tcp_listener(cfg, spec, addr, daemon, r);
                }
                Err(_) => r.fail(
                    "listen.lmtp",
                    format!("{spec:?} is neither HOST:PORT (an IP address) nor unix:/path"),
                ),
            },
        }
    }
    match (cfg.listen.allow_remote, remote.is_empty()) {
        (false, true) => r.ok(
            "listen.allow_remote",
            "false, and every listener is loopback or a Unix socket",
        ),
        // Each such listener already has its FAIL line.
        (false, false) => {}
        (true, true) => r.warn(
            "listen.allow_remote",
            "true, but no listener is on a non-loopback address: it has no effect; set it to false",
        ),
        (true, false) => r.warn(
            "listen.allow_remote",
            format!(
                "LMTP is open to other hosts on {}: LMTP has no authentication, so let only your MTA reach it (firewall)",
                remote.join(", ")
            ),
        ),
    }
}

fn check_tcp_listener(cfg: &Config, spec: &str, addr: SocketAddr, daemon: bool, r: &mut Report) {
    let key = "listen.lmtp";
    if !cfg.listen.allow_remote && !is_loopback(addr.ip()) {
        r.fail(
            key,
            format!(
                "{spec} is not a loopback address and listen.allow_remote is false: the daemon will not start; listen on 127.0.0.1, or set listen.allow_remote: true and firewall the port"
            ),
        );
        return;
    }
    match std::net::TcpListener::bind(addr) {
        Ok(l) => {
            drop(l);
            r.ok(key, format!("{spec} is free"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let greeting = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT)
                .ok()
                .and_then(read_greeting);
            in_use(spec, greeting, daemon, cfg, r);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => r.fail(
            key,
            format!("{spec}: {} is not an address of this host: correct listen.lmtp", addr.ip()),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => r.fail(
            key,
            format!(
                "{spec}: not allowed to bind ({e}); ports below 1024 need CAP_NET_BIND_SERVICE: pick a port from 1024 up in listen.lmtp, or grant the capability (AmbientCapabilities= in the unit)"
            ),
        ),
        Err(e) => r.fail(key, format!("{spec}: cannot bind: {e}")),
    }
}

/// A listener address someone holds: ours when it greets as postdesk and
/// our daemon answers on this config's control socket.
fn in_use(spec: &str, greeting: Option<String>, daemon: bool, cfg: &Config, r: &mut Report) {
    let key = "listen.lmtp";
    let postdesk = greeting
        .as_deref()
        .is_some_and(|g| g.starts_with("220") && g.ends_with(OUR_GREETING));
    let shown = greeting
        .as_deref()
        .map(|g| format!("greeting {g:?}"))
        .unwrap_or_else(|| "no LMTP greeting".into());
    match (postdesk, daemon) {
        (true, true) => r.ok(
            key,
            format!("{spec} is held by this postdesk, which is running ({shown})"),
        ),
        (true, false) => r.fail(
            key,
            format!(
                "{spec} is held by another postdesk (its control socket is not {}; {shown}): stop that instance, or choose another address in listen.lmtp",
                cfg.control_path().display()
            ),
        ),
        (false, _) => r.fail(
            key,
            format!(
                "{spec} is in use by another process ({shown}): stop it, or choose another address in listen.lmtp (and in Postfix's transport map)"
            ),
        ),
    }
}

/// The first reply line a server sends on connect, if it sends one soon.
fn read_greeting<S: Read + SetTimeout>(s: S) -> Option<String> {
    s.set_timeout(GREETING_TIMEOUT);
    let mut line = String::new();
    BufReader::new(s.take(4096)).read_line(&mut line).ok()?;
    let line = line.trim_end().to_string();
    (!line.is_empty()).then_some(line)
}

trait SetTimeout {
    fn set_timeout(&self, t: Duration);
}

impl SetTimeout for TcpStream {
    fn set_timeout(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
        let _ = self.set_write_timeout(Some(t));
    }
}

impl SetTimeout for std::os::unix::net::UnixStream {
    fn set_timeout(&self, t: Duration) {
        let _ = self.set_read_timeout(Some(t));
        let _ = self.set_write_timeout(Some(t));
    }
}

fn check_unix_listener(cfg: &Config, spec: &str, path: &Path, daemon: bool, r: &mut Report) {
    use std::os::unix::fs::FileTypeExt;
    let key = "listen.lmtp";
    if path.as_os_str().is_empty() {
        r.fail(key, format!("{spec:?}: no path after unix:"));
        return;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => r.fail(
            key,
            format!(
                "{spec}: {} exists and is not a socket; postdesk will not remove it: move it away, or choose another path",
                path.display()
            ),
        ),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(s) => in_use(spec, read_greeting(s), daemon, cfg, r),
            Err(_) => r.ok(
                key,
                format!("{spec}: a stale socket nobody answers on; the daemon replaces it"),
            ),
        },
        Err(_) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            match dir_state(dir) {
                DirState::Writable => r.ok(key, format!("{spec} is free")),
                DirState::Creatable(at) => r.ok(
                    key,
                    format!(
                        "{spec} is free ({} will be created under {})",
                        dir.display(),
                        at.display()
                    ),
                ),
                DirState::No(why) => r.fail(
                    key,
                    format!(
                        "{spec}: the socket cannot be created in {}: {why}; make it writable for the service user (systemd: RuntimeDirectory=postdesk)",
                        dir.display()
                    ),
                ),
            }
        }
    }
    let group = &cfg.listen.lmtp_socket_group;
    if !group.is_empty() && !group_exists(group) {
        r.warn(
            "listen.lmtp_socket_group",
            format!(
                "no group {group:?} in /etc/group: the socket keeps the service user's group and Postfix may not connect; create it, or name a group Postfix's user is in"
            ),
        );
    }
    let mode =
        u32::from_str_radix(cfg.listen.lmtp_socket_mode.trim_start_matches("0o"), 8).unwrap_or(0);
    if mode & 0o060 != 0o060 && mode & 0o006 != 0o006 {
        r.warn(
            "listen.lmtp_socket_mode",
            format!(
                "{:?} gives neither group nor others read and write: only the service user can deliver; 0660 lets the socket group (Postfix) in",
                cfg.listen.lmtp_socket_mode
            ),
        );
    }
}

/// `/etc/group` only: a group served by NSS (LDAP …) is reported missing,
/// which is why a missing group is a warning, not a failure.
fn group_exists(name: &str) -> bool {
    std::fs::read_to_string("/etc/group")
        .map(|t| t.lines().any(|l| l.split(':').next() == Some(name)))
        .unwrap_or(true)
}

// ---- directories ----------------------------------------------------------

enum DirState {
    /// Exists, and a file could be created in it.
    Writable,
    /// Missing; this existing ancestor is writable, so it can be created.
    Creatable(PathBuf),
    No(String),
}

/// Writes and removes a file: the only honest test (read-only mounts, ACLs
/// and root squash all fool a permission-bit reading).
fn try_write(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".postdesk-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn dir_state(dir: &Path) -> DirState {
    if dir.is_dir() {
        return match try_write(dir) {
            Ok(()) => DirState::Writable,
            Err(e) => DirState::No(format!("not writable: {e}")),
        };
    }
    if dir.exists() {
        return DirState::No("exists and is not a directory".into());
    }
    let mut up = dir.parent();
    while let Some(a) = up {
        let a = if a.as_os_str().is_empty() {
            Path::new(".")
        } else {
            a
        };
        if a.is_dir() {
            return match try_write(a) {
                Ok(()) => DirState::Creatable(a.to_path_buf()),
                Err(e) => {
                    DirState::No(format!("missing, and {} is not writable: {e}", a.display()))
                }
            };
        }
        if a.exists() {
            return DirState::No(format!("{} is not a directory", a.display()));
        }
        up = a.parent();
    }
    DirState::No("no existing parent directory".into())
}

fn check_data_dir(dir: &Path, r: &mut Report) {
    use std::os::unix::fs::PermissionsExt;
    let key = "data_dir";
    match dir_state(dir) {
        DirState::Writable => {
            let mode = std::fs::metadata(dir)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o700);
            if mode & 0o077 != 0 {
                r.warn(
                    key,
                    format!(
                        "{} is writable but has mode {mode:04o}: others can read raw mail; chmod 700 {}",
                        dir.display(),
                        dir.display()
                    ),
                );
            } else {
                r.ok(key, format!("{} is writable, mode {mode:04o}", dir.display()));
            }
        }
        DirState::Creatable(at) => r.ok(
            key,
            format!(
                "{} does not exist yet; it will be created with mode 0700 (under {})",
                dir.display(),
                at.display()
            ),
        ),
        DirState::No(why) => r.fail(
            key,
            format!(
                "{}: {why}; create it for the service user (install -d -m 700 -o postdesk {}), or point data_dir elsewhere",
                dir.display(),
                dir.display()
            ),
        ),
    }
}

// ---- outbound.relay -------------------------------------------------------

fn check_relay(cfg: &Config, r: &mut Report) {
    let key = "outbound.relay";
    let relay = cfg.outbound.relay.trim();
    // The transport the daemon would build: URL syntax, TLS set-up, and for
    // `direct` the system resolver configuration. Hickory's builder wants a
    // runtime context to exist.
    let built = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
        .and_then(|rt| {
            let _g = rt.enter();
            crate::outbox::transport::from_config(&cfg.outbound).map(|_| ())
        });
    if let Err(e) = built {
        let e = e.trim_start_matches("outbound.relay: ");
        r.fail(
            key,
            format!("{e}; the daemon will not start: correct outbound.relay"),
        );
        return;
    }
    if relay == "direct" {
        r.ok(
            key,
            format!(
                "direct: resolver configuration read; mail goes to each domain's MX on port 25 (needs outbound port 25, a PTR record, and SPF for {})",
                cfg.support_domain()
            ),
        );
        return;
    }
    if let Some(dir) = relay.strip_prefix("file:") {
        let dir = Path::new(dir);
        match dir_state(dir) {
            DirState::No(why) => r.fail(
                key,
                format!(
                    "file:{}: {why}; make it writable for the service user, or choose another directory",
                    dir.display()
                ),
            ),
            state => r.warn(
                key,
                format!(
                    "file:{}: {}; generated mail is written there and never sent (fine for a trial; use smtp://HOST:PORT in production)",
                    dir.display(),
                    match state {
                        DirState::Writable => "writable",
                        _ => "will be created",
                    }
                ),
            ),
        }
        return;
    }
    match RelayUrl::parse(relay) {
        Some(u) if u.implicit_tls => smtps_probe(cfg, relay, &u, r),
        Some(u) => match smtp_probe(cfg, &u) {
            Ok(p) => {
                if u.starttls_required && !p.starttls {
                    r.fail(
                        key,
                        format!(
                            "{relay}: the relay does not offer STARTTLS, and ?tls=required asks for it: enable TLS on the relay, or drop ?tls=required"
                        ),
                    );
                } else {
                    r.ok(
                        key,
                        format!(
                            "{relay} answers: {:?}; EHLO, NOOP and QUIT ok ({} ms)",
                            p.greeting, p.ms
                        ),
                    );
                }
            }
            Err(why) => r.fail(key, format!("{relay}: {why}")),
        },
        None => r.fail(
            key,
            format!("{relay:?} is not smtp://HOST:PORT: correct outbound.relay"),
        ),
    }
}

struct RelayUrl {
    host: String,
    port: u16,
    implicit_tls: bool,
    starttls_required: bool,
}

impl RelayUrl {
    /// `smtp://HOST[:PORT][?tls=…]` or `smtps://HOST[:PORT]`; the transport
    /// has already vetted the syntax, this only takes it apart.
    fn parse(url: &str) -> Option<RelayUrl> {
        let (rest, implicit_tls) = match url.strip_prefix("smtps://") {
            Some(r) => (r, true),
            None => (url.strip_prefix("smtp://")?, false),
        };
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hostport = hostport.trim_end_matches('/');
        let default_port = if implicit_tls { 465 } else { 25 };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (hostport.to_string(), default_port),
            }
        };
        Some(RelayUrl {
            host,
            port,
            implicit_tls,
            starttls_required: query.split('&').any(|kv| kv == "tls=required"),
        })
    }
}

struct Probe {
    greeting: String,
    starttls: bool,
    ms: u128,
}

/// The relay's fix, said once for every way of not answering.
fn relay_fix(u: &RelayUrl) -> String {
    format!(
        "start the relay on {}:{} (Postfix: the listener for postdesk's mail in docs/postfix.md), or correct outbound.relay",
        u.host, u.port
    )
}

fn smtp_probe(cfg: &Config, u: &RelayUrl) -> Result<Probe, String> {
    let started = Instant::now();
    let timeout = relay_timeout(cfg);
    let addrs: Vec<SocketAddr> = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}; correct outbound.relay", u.host))?
        .collect();
    let mut last = String::from("no address");
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    let s = stream.ok_or_else(|| format!("cannot connect ({last}): {}", relay_fix(u)))?;
    s.set_timeout(timeout);
    let mut w = s
        .try_clone()
        .map_err(|e| format!("cannot use the connection: {e}"))?;
    let mut rd = BufReader::new(s);
    let (code, lines) = read_reply(&mut rd).map_err(|e| {
        format!(
            "no greeting ({e}): is this an SMTP server? {}",
            relay_fix(u)
        )
    })?;
    let greeting = format!("{code} {}", lines.first().cloned().unwrap_or_default());
    if code != 220 {
        return Err(format!(
            "the relay refuses connections ({greeting}): allow this host on the relay (Postfix: mynetworks), or correct outbound.relay"
        ));
    }
    let helo = cfg
        .outbound
        .helo_name
        .clone()
        .unwrap_or_else(|| "localhost".into());
    let mut step = |cmd: &str, want: u16| -> Result<Vec<String>, String> {
        w.write_all(format!("{cmd}\r\n").as_bytes())
            .map_err(|e| format!("{cmd}: {e}"))?;
        let (code, lines) = read_reply(&mut rd).map_err(|e| format!("{cmd}: {e}"))?;
        if code != want {
            return Err(format!(
                "{cmd} answered {code} {}: check the relay's log; it must accept mail from this host",
                lines.join(" / ")
            ));
        }
        Ok(lines)
    };
    let ehlo = step(&format!("EHLO {helo}"), 250)?;
    step("NOOP", 250)?;
    // A relay that hangs up on QUIT without 221 is still a working relay.
    let _ = step("QUIT", 221);
    Ok(Probe {
        greeting,
        starttls: ehlo
            .iter()
            .any(|l| l.trim().eq_ignore_ascii_case("STARTTLS")),
        ms: started.elapsed().as_millis(),
    })
}

/// One SMTP reply, possibly multi-line (`250-…` … `250 …`): the code and
/// the text of each line.
fn read_reply<R: BufRead>(r: &mut R) -> Result<(u16, Vec<String>), String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = r
            .by_ref()
            .take(4096)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end();
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| format!("not an SMTP reply: {line:?}"))?;
        lines.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, lines));
        }
        if lines.len() > 100 {
            return Err("reply too long".into());
        }
    }
}

fn relay_timeout(cfg: &Config) -> Duration {
    let t = cfg.outbound.timeout.std();
    if t.is_zero() {
        PROBE_TIMEOUT
    } else {
        t.min(PROBE_TIMEOUT)
    }
}

/// Implicit TLS: lettre does the handshake (with certificate checks, as the
/// daemon will), then EHLO, NOOP and QUIT.
fn smtps_probe(cfg: &Config, relay: &str, u: &RelayUrl, r: &mut Report) {
    use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
    use lettre::transport::smtp::extension::ClientId;
    let key = "outbound.relay";
    let started = Instant::now();
    let timeout = relay_timeout(cfg);
    let hello = match &cfg.outbound.helo_name {
        Some(h) => ClientId::Domain(h.clone()),
        None => ClientId::default(),
    };
    let res = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
        .and_then(|rt| {
            rt.block_on(async {
                let tls =
                    TlsParameters::new(u.host.clone()).map_err(|e| format!("TLS set-up: {e}"))?;
                let fut = async {
                    let mut c = AsyncSmtpConnection::connect_tokio1(
                        (u.host.as_str(), u.port),
                        Some(timeout),
                        &hello,
                        Some(tls),
                        None,
                    )
                    .await
                    .map_err(|e| format!("{e}: {}", relay_fix(u)))?;
                    let name = c.server_info().name().to_string();
                    if !c.test_connected().await {
                        return Err("NOOP failed: check the relay's log".to_string());
                    }
                    let _ = c.quit().await;
                    Ok(name)
                };
                tokio::time::timeout(timeout * 4, fut)
                    .await
                    .map_err(|_| format!("no answer in time: {}", relay_fix(u)))?
            })
        });
    match res {
        Ok(name) => r.ok(
            key,
            format!(
                "{relay} answers as {name:?} over TLS; EHLO, NOOP and QUIT ok ({} ms)",
                started.elapsed().as_millis()
            ),
        ),
        Err(why) => r.fail(key, format!("{relay}: {why}")),
    }
}

// ---- templates --------------------------------------------------------------

fn check_templates(cfg: &Config, r: &mut Report) {
    let key = "templates";
    let tpl = match Templates::for_config(cfg) {
        Ok(t) => t,
        Err(e) => {
            r.fail(
                key,
                format!(
                    "{e}; fix it, or remove templates_dir or answers_dir to use the built-in set"
                ),
            );
            return;
        }
    };
    let token = crate::ingest::decide::token(cfg, SAMPLE_TOKEN_NUMBER);
    let ctx = sample_context(cfg, &token);
    let mut rendered = Vec::new();
    let mut bad = false;
    for lang in tpl.languages() {
        for name in TEMPLATE_NAMES {
            match tpl.render(lang, name, ctx.clone()) {
                Ok(text) if CUSTOMER_TEMPLATES.contains(name) && !text.contains(&token) => {
                    bad = true;
                    r.warn(
                        key,
                        format!(
                            "{lang}/{name} renders without the ticket token ({token}): customers cannot reply into their ticket by subject; add {{{{ token }}}}"
                        ),
                    );
                }
                Ok(_) => rendered.push(format!("{lang}/{name}")),
                Err(e) => {
                    bad = true;
                    r.fail(key, format!("{lang}/{name}: {e}; fix the template"));
                }
            }
        }
    }
    if !bad {
        r.ok(
            key,
            format!(
                "{} templates ({} in each of {}) render with sample data",
                rendered.len(),
                TEMPLATE_NAMES.len(),
                tpl.languages().join(", ")
            ),
        );
    }
    let lang = &cfg.support.language;
    if !tpl.languages().iter().any(|l| l == lang) {
        r.warn(
            "support.language",
            format!(
                "{lang:?} has no templates (there are: {}): customers get English; add {lang}/ templates or pick one of those",
                tpl.languages().join(", ")
            ),
        );
    }
}

/// One context holding every variable any template is given (each
/// template takes what it uses), filled with plausible values.
fn sample_context(cfg: &Config, token: &str) -> minijinja::Value {
    let links = minijinja::context! {
        done => "https://desk.example/done", release => "https://desk.example/release",
        snooze => "https://desk.example/snooze", spam => "https://desk.example/spam",
        take => "https://desk.example/take",
    };
    let t = minijinja::context! {
        token => token, number => SAMPLE_TOKEN_NUMBER, subject => "Printer on fire",
        contact => "mari@customer.example", customer => "acme", assignee => "alice@desk.example",
        age => "2d", started => "2026-01-05 09:12", preview => "The printer is on fire again.",
        replies => 3, status_name => "active", direction_arrow => "←", reopened => true,
        links => links.clone(), category => "billing", priority => "high", escalated => "l2",
        watchers => vec!["bob@desk.example"],
    };
    let ts = vec![t.clone()];
    minijinja::context! {
        token => token, subject => "Printer on fire", name => "Mari Maasikas",
        support_name => cfg.support.name, support_address => cfg.support_address(),
        t => t, by => "alice@desk.example", to => "bob@desk.example", notice => "reopened",
        links => links, why => vec!["the sender is not staff"], trust => cfg.commands.trust.join(", "),
        date => "2026-01-05", unassigned => ts.clone(), reopened => ts.clone(),
        overdue => ts.clone(), escalated => ts.clone(),
        what => "done", group => "l2", first_line => "bob@desk.example",
        similar => vec!["SUP-7  ACTIVE  Printer (bob@desk.example, 2026-01-02)"],
        workload => vec![minijinja::context! { agent => "alice@desk.example", count => 4 }],
        customers => vec![minijinja::context! { customer => "acme", count => 2 }],
        agents => vec![minijinja::context! { name => "Alice", tickets => ts }],
        category => "Billing", passed_over => vec!["alice@desk.example: full (10 of 10)"],
        waiting => 3,
    }
}

// ---- customers and team -----------------------------------------------------

fn check_customers(cfg: &Config, r: &mut Report) {
    let key = "customers";
    if cfg.customers.is_empty() {
        r.ok(
            key,
            "none listed: customers are learned from mail (#customer) only",
        );
        return;
    }
    let mut problems = 0usize;
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in cfg.customers.iter().enumerate() {
        if let Some(first) = ids.insert(c.id.as_str(), i) {
            problems += 1;
            r.fail(
                key,
                format!(
                    "id {:?} is used by entries {first} and {i}: ids must be unique; rename one",
                    c.id
                ),
            );
        }
    }
    // Address and domain claims: the directory is searched in order, so the
    // first entry silently wins and the second never gets this mail.
    for (what, claims) in [
        (
            "address",
            claims(cfg, |c| c.addresses.iter().collect::<Vec<_>>()),
        ),
        ("domain", claims(cfg, |c| c.domains.iter().collect())),
    ] {
        for (value, owners) in claims {
            if owners.len() > 1 {
                problems += 1;
                r.fail(
                    key,
                    format!(
                        "{what} {value} is claimed by {}: the first listed wins and the others never get its mail; keep it under one customer",
                        owners.join(" and ")
                    ),
                );
            }
        }
    }
    for c in &cfg.customers {
        for d in &c.domains {
            if is_public_provider(d, cfg) {
                problems += 1;
                r.warn(
                    key,
                    format!(
                        "{:?} claims the domain {d}, a public mail provider: senders are never matched by a public domain, so this has no effect; list the customer's addresses instead",
                        c.id
                    ),
                );
            } else if cfg.team.domains.iter().any(|t| t.eq_ignore_ascii_case(d)) {
                problems += 1;
                r.warn(
                    key,
                    format!(
                        "{:?} claims {d}, which is also in team.domains: its senders count as staff, not as this customer; remove one of the two",
                        c.id
                    ),
                );
            }
        }
        if c.addresses.is_empty() && c.domains.is_empty() {
            problems += 1;
            r.warn(
                key,
                format!(
                    "{:?} has neither addresses nor domains: nothing maps to it except #customer; add some",
                    c.id
                ),
            );
        }
    }
    if problems == 0 {
        let addrs: usize = cfg.customers.iter().map(|c| c.addresses.len()).sum();
        let doms: usize = cfg.customers.iter().map(|c| c.domains.len()).sum();
        r.ok(
            key,
            format!(
                "{} listed ({addrs} addresses, {doms} domains), unique ids, no address or domain claimed twice",
                cfg.customers.len()
            ),
        );
    }
}

/// Lower-cased value → ids of the customers that list it, in order.
fn claims<'a>(
    cfg: &'a Config,
    of: impl Fn(&'a crate::config::Customer) -> Vec<&'a String>,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &cfg.customers {
        for v in of(c) {
            let owners = out.entry(v.to_ascii_lowercase()).or_default();
            if !owners.contains(&c.id) {
                owners.push(c.id.clone());
            }
        }
    }
    out
}

fn check_team(cfg: &Config, r: &mut Report) {
    let key = "team.agents";
    let outside: Vec<&str> = cfg
        .team
        .agents
        .iter()
        .map(|a| a.email.as_str())
        .filter(|e| {
            !cfg.team
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain_of(e)))
        })
        .collect();
    let n = match cfg.team.agents.len() {
        1 => "1 agent".to_string(),
        n => format!("{n} agents"),
    };
    if outside.is_empty() {
        r.ok(key, format!("{n}, all inside team.domains"));
    } else {
        // Information, not a problem: a contractor with an outside address
        // is staff by the roster.
        r.ok(
            key,
            format!(
                "{n}; outside team.domains (staff by the roster only): {}",
                outside.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_greeting_is_recognised() {
        let g = crate::lmtp::reply::greeting("mx.example.com");
        assert!(g.trim_end().ends_with(OUR_GREETING), "{g}");
    }

    #[test]
    fn relay_urls_come_apart() {
        let u = RelayUrl::parse("smtp://127.0.0.1:10025").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.implicit_tls),
            ("127.0.0.1", 10025, false)
        );
        let u = RelayUrl::parse("smtps://[::1]").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.implicit_tls),
            ("::1", 465, true)
        );
        let u = RelayUrl::parse("smtp://mx.example.com?tls=required").unwrap();
        assert_eq!((u.port, u.starttls_required), (25, true));
    }

    #[test]
    fn multi_line_replies_are_read_whole() {
        let mut r = &b"250-mx.example.com\r\n250-PIPELINING\r\n250 STARTTLS\r\n220 next\r\n"[..];
        let (code, lines) = read_reply(&mut r).unwrap();
        assert_eq!(code, 250);
        assert_eq!(lines, vec!["mx.example.com", "PIPELINING", "STARTTLS"]);
        assert!(read_reply(&mut &b"hello\r\n"[..]).is_err());
    }

    fn cfg(yaml: &str) -> Config {
        Config::parse(yaml, "t.yaml").unwrap()
    }

    #[test]
    fn customer_directory_conflicts() {
        let c = cfg(r#"
support: {address: s@example.com}
team: {domains: [example.com], agents: [{email: a@example.com}]}
customers:
  - {id: acme, domains: [acme.test, gmail.com], addresses: [boss@other.test]}
  - {id: acme, addresses: [Boss@other.test]}
  - {id: beta, domains: [ACME.test]}
"#);
        let mut r = Report {
            quiet: true,
            ..Report::default()
        };
        check_customers(&c, &mut r);
        let text: Vec<String> = r
            .lines
            .iter()
            .map(|(l, _, t)| format!("{} {t}", l.label()))
            .collect();
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(
            has("FAIL id \"acme\" is used by entries 0 and 1"),
            "{text:?}"
        );
        assert!(
            has("FAIL domain acme.test is claimed by acme and beta"),
            "{text:?}"
        );
        assert!(has("warn \"acme\" claims the domain gmail.com"), "{text:?}");
        // Both entries are "acme": one id, so no address conflict between ids.
        assert!(!has("address boss@other.test"), "{text:?}");
    }

    #[test]
    fn data_dir_states() {
        let t = std::env::temp_dir().join(format!("postdesk-check-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        assert!(matches!(dir_state(&t.join("a/b")), DirState::Creatable(_)));
        std::fs::create_dir_all(&t).unwrap();
        assert!(matches!(dir_state(&t), DirState::Writable));
        std::fs::write(t.join("f"), b"x").unwrap();
        assert!(matches!(dir_state(&t.join("f")), DirState::No(_)));
        assert!(matches!(dir_state(&t.join("f/sub")), DirState::No(_)));
        let _ = std::fs::remove_dir_all(&t);
    }
}
