//! Integration test harness: the real `postdesk` binary on a temporary data
//! dir and free loopback ports, a recording SMTP sink for what it sends, an
//! LMTP client of our own, and Python's `smtplib.LMTP` (a client none of us
//! wrote).
//!
//! The store under test is sled unless `POSTDESK_TEST_PG` names a PostgreSQL
//! server (`postgres://postgres@127.0.0.1:PORT/`, as `scripts/pg.sh` starts
//! one): then every desk's config gets a `store:` block naming a database of
//! its own there ([`store_yaml`]), and tests that mean nothing on PostgreSQL
//! say so and return ([`sled_only`]). docs/testing.md lists them.
#![allow(dead_code)]

pub mod lmtp;
pub mod sink;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The postdesk binary under test: cargo's (`CARGO_BIN_EXE_postdesk`), or
/// `POSTDESK_TEST_BIN` when set. Worktrees that share one target dir share
/// `target/debug/postdesk`, the last build of any of them; such a run points
/// `POSTDESK_TEST_BIN` at a copy of its own (docs/testing.md).
pub const BIN: Bin = Bin;

#[derive(Clone, Copy)]
pub struct Bin;

impl Bin {
    pub fn path(&self) -> &'static Path {
        static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        PATH.get_or_init(|| {
            std::env::var_os("POSTDESK_TEST_BIN")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_postdesk")))
        })
    }
}

impl AsRef<std::ffi::OsStr> for Bin {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path().as_os_str()
    }
}

impl AsRef<Path> for Bin {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

// ------------------------------------------------- the store under test --

/// The PostgreSQL server the suite runs against (`POSTDESK_TEST_PG`), if any.
pub fn pg_url() -> Option<String> {
    std::env::var("POSTDESK_TEST_PG")
        .ok()
        .filter(|u| !u.trim().is_empty())
}

pub fn on_postgres() -> bool {
    pg_url().is_some()
}

/// The `store.backend` the desks of this run use, as `postdesk status` names
/// it.
pub fn backend() -> &'static str {
    if on_postgres() {
        "postgres"
    } else {
        "sled"
    }
}

/// For a test that means nothing on PostgreSQL (it looks at sled's files,
/// the spool, sled's fault switches …): true, after saying why on stderr,
/// when the suite runs on PostgreSQL. `if common::sled_only("why") { return; }`
pub fn sled_only(why: &str) -> bool {
    if !on_postgres() {
        return false;
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    eprintln!("{name}: SKIPPED on PostgreSQL, sled only: {why}");
    true
}

/// Data dir → its database, so every config naming the same data dir (a
/// restart, a rewritten config, the CLI) reaches the same database.
static DATABASES: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
static DB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The URL of the database that belongs to the data dir `data` (created the
/// first time it is asked for); None on sled.
pub fn pg_database_url(data: &Path) -> Option<String> {
    let server = pg_url()?;
    let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    let name = match dbs.iter().find(|(d, _)| d == data) {
        Some((_, name)) => name.clone(),
        None => {
            let name = create_database(&server);
            dbs.push((data.to_path_buf(), name.clone()));
            name
        }
    };
    Some(format!("{}/{name}", server.trim_end_matches('/')))
}

/// psql from the cluster `scripts/pg.sh` started, else from the PATH, on the
/// server's maintenance database.
fn psql(server: &str, sql: &str) -> Output {
    psql_on(&format!("{}/postgres", server.trim_end_matches('/')), sql)
}

fn psql_on(db_url: &str, sql: &str) -> Output {
    let bin = std::env::var("POSTDESK_TEST_PG_BIN")
        .map(|b| Path::new(&b).join("psql"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"));
    Command::new(&bin)
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db_url,
        ])
        .args(["-c", sql])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

/// A fresh, empty database: unique per test process and call (a name left
/// by an earlier process with the same pid is skipped).
fn create_database(server: &str) -> String {
    for _ in 0..20 {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("pd_{}_{n}", std::process::id());
        let out = psql(server, &format!("CREATE DATABASE {name}"));
        if out.status.success() {
            return name;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("already exists") {
            panic!("CREATE DATABASE {name} on {server}: {err}");
        }
    }
    panic!("no free database name on {server}");
}

/// What `sql` prints (unaligned, tuples only) in the database of the data
/// dir `data`: on PostgreSQL, what reading a file under the data dir is on
/// sled. Panics on sled or on an SQL error.
pub fn pg_query(data: &Path, sql: &str) -> String {
    let url = pg_database_url(data).expect("pg_query needs POSTDESK_TEST_PG");
    let out = psql_on(&url, sql);
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// The store of the desk whose data dir is `data`, opened by the test itself
/// (no daemon running): sled under `data`, or that desk's database.
pub fn open_store(data: &Path) -> postdesk::store::Store {
    use postdesk::config::{PostgresConfig, StoreBackend, StoreConfig};
    let cfg = match pg_database_url(data) {
        Some(url) => StoreConfig {
            backend: StoreBackend::Postgres,
            postgres: PostgresConfig { url, pool_size: 4 },
        },
        None => StoreConfig::default(),
    };
    postdesk::store::Store::open_backend(&cfg, data).expect("open the store")
}

/// The desk's action-link signing secret: the file `link-secret` in the
/// data dir on sled, the `meta` row every node shares on PostgreSQL.
pub fn link_secret(data: &Path) -> Vec<u8> {
    if !on_postgres() {
        return std::fs::read(data.join("link-secret")).expect("link-secret");
    }
    let hex = pg_query(
        data,
        "SELECT encode(value, 'hex') FROM meta WHERE key = 'link-secret'",
    );
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex from encode()"))
        .collect()
}

/// The rows of the database of the data dir `data`, as `pg_dump
/// --data-only` writes them, with `bytea` in the escape format (printable
/// ASCII as itself), so a byte scan finds in raw messages what it would
/// find in sled's files. `tables`: pg_dump's selection (`-t raw_messages`,
/// `-T raw_messages`); none for all.
pub fn pg_dump(data: &Path, tables: &[&str]) -> Vec<u8> {
    let url = pg_database_url(data).expect("pg_dump needs POSTDESK_TEST_PG");
    let bin = std::env::var("POSTDESK_TEST_PG_BIN")
        .map(|b| Path::new(&b).join("pg_dump"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pg_dump"));
    let out = Command::new(&bin)
        .args(["--data-only", "--no-owner", "-d", &url])
        .args(tables)
        .env("PGOPTIONS", "-c bytea_output=escape")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Drops the database of the data dir `data`, if it has one: the cluster is
/// thrown away anyway, but a few hundred databases of 7 MB each add up.
pub fn drop_database(data: &Path) {
    let Some(server) = pg_url() else { return };
    let name = {
        let mut dbs = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
        match dbs.iter().position(|(d, _)| d == data) {
            Some(i) => dbs.swap_remove(i).1,
            None => return,
        }
    };
    let _ = psql(
        &server,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    );
}

/// The `store:` block of a desk whose data dir is `data`: empty on sled (the
/// default backend); on PostgreSQL, that desk's own database.
pub fn store_yaml(data: &Path) -> String {
    match pg_database_url(data) {
        Some(url) => format!("store:\n  backend: postgres\n  postgres:\n    url: {url}\n"),
        None => String::new(),
    }
}

/// `yaml` (a whole config) with the store block added, unless it has one.
/// The database is the one of the config's own `data_dir:` line (`data` when
/// it has none), so a closure that names another data dir gets that dir's.
pub fn with_store(yaml: String, data: &Path) -> String {
    if !on_postgres() || yaml.starts_with("store:") || yaml.contains("\nstore:") {
        return yaml;
    }
    let named = yaml
        .lines()
        .find_map(|l| l.strip_prefix("data_dir:"))
        .map(|d| PathBuf::from(d.trim().trim_matches(|c| c == '"' || c == '\'')));
    let block = store_yaml(named.as_deref().unwrap_or(data));
    let sep = if yaml.ends_with('\n') || yaml.is_empty() {
        ""
    } else {
        "\n"
    };
    format!("{yaml}{sep}{block}")
}

/// The test desk: support@example.com, staff domain example.com, agents
/// alice and bob; outbound to the sink.
pub fn config_yaml(port: u16, data: &Path, sink_port: u16, extra: &str) -> String {
    format!(
        r#"listen:
  lmtp: ["127.0.0.1:{port}"]
data_dir: {data}
{store}support:
  address: support@example.com
team:
  domains: [example.com]
  agents:
    - email: alice@example.com
      name: Alice
    - email: bob@example.com
  leads: [lead@example.com]
outbound:
  relay: smtp://127.0.0.1:{sink_port}
  retry_min: 200ms
{extra}"#,
        data = data.display(),
        store = store_yaml(data)
    )
}

impl Daemon {
    pub fn start(sink_port: u16, extra: &str) -> Daemon {
        Daemon::start_custom(|port, data| config_yaml(port, data, sink_port, extra))
    }

    /// As `start`, with the whole config written by `yaml(lmtp_port,
    /// data_dir)` (for a team other than alice and bob).
    pub fn start_custom(yaml: impl FnOnce(u16, &Path) -> String) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let data = dir.path().join("data");
        let config = dir.path().join("postdesk.yaml");
        std::fs::write(&config, with_store(yaml(port, &data), &data)).expect("write config");
        let log = dir.path().join("postdesk.log");
        let mut d = Daemon {
            dir,
            config,
            port,
            child: None,
            log,
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postdesk");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // The log first: each probe connection is an LMTP session the
            // daemon counts, so probe once it says it is ready.
            if self.log().contains("postdesk ready")
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                break;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("postdesk exited early ({st}):\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "postdesk did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: the clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), 15);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("postdesk did not stop on SIGTERM:\n{}", self.log());
        }
    }

    /// SIGHUP: reload the config file.
    pub fn hup(&self) {
        if let Some(c) = self.child.as_ref() {
            unsafe_kill(c.id(), 1);
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Waits up to `secs` for the daemon to exit by itself: its exit code.
    pub fn wait_exit(&mut self, secs: u64) -> Option<i32> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run postdesk cli")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "postdesk {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn tickets(&self) -> Vec<Value> {
        let out = self.cli_ok(&["ticket", "list", "--json"]);
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| panic!("ticket list --json is not an array: {out}"))
    }

    pub fn show(&self, token: &str) -> Value {
        let out = self.cli_ok(&["ticket", "show", token, "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
    }

    /// The ticket holding a received Message-ID (without brackets).
    pub fn ticket_of(&self, message_id: &str) -> Option<String> {
        self.tickets().into_iter().find_map(|t| {
            let ids = t["message_ids"].as_array()?;
            ids.iter()
                .any(|i| i.as_str() == Some(message_id))
                .then(|| t["token"].as_str().unwrap_or_default().to_string())
        })
    }

    pub fn lmtp(&self) -> Lmtp {
        Lmtp::connect(self.port)
    }

    /// One message through our own client; returns the per-recipient replies.
    pub fn deliver(&self, from: &str, rcpts: &[&str], data: &[u8]) -> Vec<String> {
        let mut c = self.lmtp();
        let r = c.send(from, rcpts, data);
        c.quit();
        r
    }

    pub fn deliver_ok(&self, from: &str, data: &[u8]) {
        let r = self.deliver(from, &["support@example.com"], data);
        assert!(
            r.len() == 1 && r[0].starts_with("250"),
            "not delivered: {r:?}\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- postdesk log ----\n{}", self.log());
        }
        // Its data dir goes with the temp dir; its database with it.
        drop_database(&self.data_dir());
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A small LMTP client of our own, reading replies line by line.
pub struct Lmtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Lmtp {
    pub fn connect(port: u16) -> Lmtp {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect LMTP");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let w = s.try_clone().expect("clone stream");
        let mut c = Lmtp {
            r: BufReader::new(s),
            w,
        };
        let greet = c.reply();
        assert!(greet.starts_with("220"), "greeting: {greet}");
        let l = c.cmd("LHLO test.example");
        assert!(l.starts_with("250"), "LHLO: {l}");
        c
    }

    /// Reads one (possibly multi-line) reply; returns its last line.
    pub fn reply(&mut self) -> String {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).unwrap_or(0);
            if n == 0 {
                return last;
            }
            let done = line.len() < 4 || line.as_bytes()[3] != b'-';
            last = line.trim_end().to_string();
            if done {
                return last;
            }
        }
    }

    pub fn cmd(&mut self, c: &str) -> String {
        self.w
            .write_all(format!("{c}\r\n").as_bytes())
            .expect("write");
        self.reply()
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write");
    }

    /// MAIL, RCPT…, DATA; returns one reply per accepted recipient.
    pub fn send(&mut self, from: &str, rcpts: &[&str], data: &[u8]) -> Vec<String> {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert!(r.starts_with("250"), "MAIL: {r}");
        let mut accepted = 0;
        let mut refused = Vec::new();
        for rc in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rc}>"));
            if r.starts_with("250") {
                accepted += 1;
            } else {
                refused.push(r);
            }
        }
        if accepted == 0 {
            self.cmd("RSET");
            return refused;
        }
        let r = self.cmd("DATA");
        assert!(r.starts_with("354"), "DATA: {r}");
        self.raw(&dot_stuff(data));
        self.raw(b".\r\n");
        let mut out: Vec<String> = (0..accepted).map(|_| self.reply()).collect();
        out.extend(refused);
        out
    }

    pub fn quit(&mut self) {
        let _ = self.w.write_all(b"QUIT\r\n");
        let mut rest = String::new();
        let _ = self.r.read_to_string(&mut rest);
    }
}

/// CRLF line ends and dot-stuffing, ending with CRLF.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let mut at_line_start = true;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
        at_line_start = b == b'\n';
        i += 1;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Delivers with Python's smtplib.LMTP; returns one reply per recipient
/// ("250 …"). smtplib reads only the first reply after DATA, so the script
/// reads one more per further recipient itself.
pub fn python_lmtp(port: u16, from: &str, rcpts: &[&str], data: &[u8]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("msg.eml");
    std::fs::write(&msg, data).expect("write msg");
    let script = r#"
import smtplib, sys
port, sender, path, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
data = open(path, 'rb').read()
s = smtplib.LMTP('127.0.0.1', port)
s.ehlo_or_helo_if_needed()
code, msg = s.mail(sender)
assert code == 250, (code, msg)
ok = []
for r in rcpts:
    code, msg = s.rcpt(r)
    if code == 250:
        ok.append(r)
    else:
        print(code, msg.decode())
if ok:
    code, msg = s.data(data)
    print(code, msg.decode())
    for _ in ok[1:]:
        code, msg = s.getreply()
        print(code, msg.decode())
s.quit()
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(from)
        .arg(&msg)
        .args(rcpts)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "smtplib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// A plain customer mail.
pub fn mail(id: &str, from: &str, subject: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0200\r\n{extra_headers}MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Waits until `f` holds, or panics with `what` after `secs`.
pub fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for: {what}");
}

/// The first `name` header of a raw message, unfolded (a plain reader for
/// tests, independent of the parser under test).
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            return None;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case(name) {
                let mut v = v.trim().to_string();
                while let Some(next) = lines.peek() {
                    if next.starts_with([' ', '\t']) {
                        v.push(' ');
                        v.push_str(next.trim());
                        lines.next();
                    } else {
                        break;
                    }
                }
                return Some(v);
            }
        }
    }
    None
}

/// The address or id inside angle brackets, or the trimmed value.
pub fn angle(v: &str) -> String {
    match (v.find('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].trim().to_string(),
        _ => v.trim().to_string(),
    }
}

// ------------------------------------------------ what the desk sent --

/// The `X-Postdesk-Kind` of a mail the desk sent (ack, copy, notice …).
pub fn kind(m: &sink::Received) -> String {
    m.header("X-Postdesk-Kind").unwrap_or_default()
}

/// Mail the desk sent about `token`, as (kind, recipients).
pub fn sent_for(sink: &sink::Sink, token: &str) -> Vec<(String, Vec<String>)> {
    sink.messages()
        .into_iter()
        .filter(|m| m.header("X-Postdesk-Ticket").as_deref() == Some(token))
        .map(|m| (kind(&m), m.rcpt_to.clone()))
        .collect()
}

pub fn of_kind(sink: &sink::Sink, k: &str) -> Vec<sink::Received> {
    sink.messages()
        .into_iter()
        .filter(|m| kind(m) == k)
        .collect()
}

/// Waits until a mail of kind `k` about `token` went to `to`.
pub fn wait_sent(sink: &sink::Sink, token: &str, k: &str, to: &str) {
    eventually(20, &format!("{k} to {to} for {token}"), || {
        sent_for(sink, token)
            .iter()
            .any(|(kk, rc)| kk == k && rc.iter().any(|r| r == to))
    });
}

// ------------------------------------------------------ staff mail --

/// What the MTA adds for a staff mail whose DKIM passed (the desk trusts
/// `authentication_results` from mx.example.com in the test configs).
pub const AUTH_OK: &str =
    "Authentication-Results: mx.example.com; dkim=pass header.d=example.com header.s=sel\r\n";

/// An authenticated staff mail to the support address (commands obeyed).
pub fn staff(d: &Daemon, from: &str, id: &str, subject: &str, body: &str) {
    let m = format!(
        "{AUTH_OK}From: {from}\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 11:00:00 +0200\r\n\r\n{body}\r\n"
    );
    let r = d.deliver(from, &["support@example.com"], m.as_bytes());
    assert!(r[0].starts_with("250"), "{r:?}");
}

/// A JSON array of strings as a Vec (empty when absent).
pub fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn field<'a>(t: &'a Value, k: &str) -> Option<&'a str> {
    t[k].as_str()
}
