//! The two servers under test, started fresh for each run, and the relay
//! postdesk sends its acknowledgements and team copies to.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Connects, reads the greeting and answers LHLO: the moment a client
/// could deliver.
fn lmtp_ready(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return false,
    });
    let mut w = s;
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 || !line.starts_with("220") {
        return false;
    }
    if w.write_all(b"LHLO probe\r\n").is_err() {
        return false;
    }
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line.len() >= 4 && line.as_bytes()[3] == b' ' {
            let ok = line.starts_with("250");
            let _ = w.write_all(b"QUIT\r\n");
            let mut bye = String::new();
            let _ = r.read_line(&mut bye);
            return ok;
        }
    }
}

fn wait_ready(port: u16, child: &mut Child, what: &str, log: &Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{what} exited with {status} before it was ready:\n{tail}");
        }
        if lmtp_ready(port) {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    bail!("{what} was not ready on port {port} after 120 s")
}

fn terminate(child: &mut Child) {
    // SAFETY: kill(2) with a pid we spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub struct Postdesk {
    pub port: u16,
    pub data: PathBuf,
    pub log: PathBuf,
    pub startup: Duration,
    child: Child,
}

impl Postdesk {
    /// Writes the config into `dir` and starts `postdesk serve` on `data`
    /// (fresh or pre-filled), relaying to the sink.
    pub fn start(bin: &Path, dir: &Path, data: &Path, sink_port: u16) -> anyhow::Result<Postdesk> {
        Postdesk::start_with(bin, dir, data, sink_port, "")
    }

    /// As [`Postdesk::start`], with `extra` appended to the config (a
    /// `store:` section: a node on PostgreSQL).
    pub fn start_with(
        bin: &Path,
        dir: &Path,
        data: &Path,
        sink_port: u16,
        extra: &str,
    ) -> anyhow::Result<Postdesk> {
        let port = free_port()?;
        let config = dir.join("postdesk.yaml");
        std::fs::write(&config, config_yaml(port, data, sink_port) + extra)?;
        let log = dir.join("postdesk.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let startup = wait_ready(port, &mut child, "postdesk", &log)?;
        Ok(Postdesk {
            port,
            data: data.to_path_buf(),
            log,
            startup,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

/// The desk a benchmark delivers to: two agents, a lead, every message
/// acknowledged and copied to the team through the relay (the defaults).
pub fn config_yaml(port: u16, data: &Path, sink_port: u16) -> String {
    format!(
        r#"listen:
  lmtp: ["127.0.0.1:{port}"]
data_dir: {data}
support:
  address: support@example.com
team:
  domains: [example.com]
  agents:
    - email: alice@example.com
      name: Alice
    - email: bob@example.com
      name: Bob
  leads: [lead@example.com]
outbound:
  relay: smtp://127.0.0.1:{sink_port}
"#,
        data = data.display()
    )
}

pub struct Dovecot {
    pub port: u16,
    pub mail: PathBuf,
    child: Child,
}

impl Dovecot {
    /// A throwaway Dovecot: LMTP only, static userdb, Maildir under `dir`,
    /// everything else (fsync included) at Dovecot's defaults.
    pub fn start(dir: &Path) -> anyhow::Result<Dovecot> {
        let bin = Path::new("/usr/sbin/dovecot");
        if !bin.exists() {
            bail!(
                "Dovecot is not installed: apt-get install -y dovecot-lmtpd (scripts/test.sh does)"
            );
        }
        let port = free_port()?;
        let mail = dir.join("mail");
        let run = dir.join("run");
        for d in [&mail, &run, &dir.join("state")] {
            std::fs::create_dir_all(d)?;
        }
        // The lmtp worker runs as the static user and must reach its Maildir.
        set_mode(dir, 0o755)?;
        chown_nobody(&mail)?;
        let conf = dir.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                r#"protocols = lmtp
base_dir = {run}
state_dir = {state}
log_path = {dir}/dovecot.log
ssl = no
mail_location = maildir:{mail}/%n
passdb {{
  driver = static
  args = nopassword
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={mail}/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
"#,
                run = run.display(),
                state = dir.join("state").display(),
                dir = dir.display(),
                mail = mail.display(),
            ),
        )?;
        let log = dir.join("dovecot.log");
        // -F: stay in the foreground, so the pid is the master's.
        let mut child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dovecot")?;
        wait_ready(port, &mut child, "dovecot", &log)?;
        Ok(Dovecot { port, mail, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        terminate(&mut self.child);
    }
}

fn set_mode(p: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

fn chown_nobody(p: &Path) -> anyhow::Result<()> {
    // Only root can give the Maildir away; run as another user, Dovecot's
    // static uid must be that user instead (not supported here).
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        bail!("the Dovecot side of the benchmark runs as root (its static userdb uses nobody)");
    }
    let status = Command::new("chown")
        .arg("nobody:nogroup")
        .arg(p)
        .status()?;
    if !status.success() {
        bail!("chown nobody {}", p.display());
    }
    Ok(())
}

/// A relay that takes every message and keeps only the count: postdesk's
/// outbound side needs a peer, and the benchmark needs to know when the
/// outbox has drained.
pub struct Sink {
    pub port: u16,
    pub received: Arc<AtomicU64>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let received = Arc::new(AtomicU64::new(0));
        let count = received.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let _ = sink_session(s, count).await;
                });
            }
        });
        Ok(Sink { port, received })
    }

    pub fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Waits until nothing has arrived for `quiet`, or `limit` passed.
    pub async fn settle(&self, quiet: Duration, limit: Duration) -> u64 {
        let start = Instant::now();
        let mut last = self.count();
        let mut since = Instant::now();
        while start.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.count();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }
}

async fn sink_session(s: tokio::net::TcpStream, count: Arc<AtomicU64>) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (r, mut w) = s.into_split();
    let mut r = tokio::io::BufReader::new(r);
    w.write_all(b"220 sink.example.com ESMTP\r\n").await?;
    let mut line = Vec::new();
    let mut in_data = false;
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        if in_data {
            if line == b".\r\n" || line == b".\n" {
                in_data = false;
                count.fetch_add(1, Ordering::Relaxed);
                w.write_all(b"250 2.0.0 Ok: queued\r\n").await?;
            }
            continue;
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with(b"EHLO") {
            w.write_all(b"250-sink.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                .await?;
        } else if upper.starts_with(b"DATA") {
            in_data = true;
            w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                .await?;
        } else if upper.starts_with(b"QUIT") {
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            w.write_all(b"250 2.0.0 Ok\r\n").await?;
        }
    }
}

/// Runs Postfix's smtp-source -L against 127.0.0.1:port.
pub fn smtp_source(
    port: u16,
    sessions: usize,
    messages: usize,
    size: usize,
) -> anyhow::Result<Duration> {
    let bin = Path::new("/usr/sbin/smtp-source");
    if !bin.exists() {
        bail!("smtp-source is not installed: apt-get install -y postfix (scripts/test.sh does)");
    }
    let start = Instant::now();
    let out = Command::new(bin)
        .args([
            "-L",
            "-s",
            &sessions.to_string(),
            "-m",
            &messages.to_string(),
        ])
        .args(["-l", &size.to_string()])
        .args(["-f", "customer@example.net", "-t", "support@example.com"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running smtp-source")?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "smtp-source failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// The same server URL naming database `db` (query parameters kept).
pub fn pg_url(server: &str, db: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap_or(("postgres", server));
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(q) => format!("{scheme}://{authority}/{db}?{q}"),
        None => format!("{scheme}://{authority}/{db}"),
    }
}

/// Runs one statement with `psql` against `url`; its output.
pub fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .context("running psql (install postgresql-client)")?;
    if !out.status.success() {
        bail!(
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
