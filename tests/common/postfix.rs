//! A real Postfix in front of the real postdesk, for end-to-end tests.
//!
//! [`Postfix`] is a private Postfix 3.x instance under its own directory in
//! /tmp, beside the machine's own (which it never touches): SMTP in on a free
//! loopback port, a second smtpd (no content filter) as postdesk's relay,
//! virtual Maildirs for the team (example.com) and the customers
//! (cust.test), and the support address routed over LMTP to postdesk, on TCP
//! or on a Unix socket. The facts it rests on are in
//! `shared/notes/postfix-throwaway.md`; the lines it writes are quoted in
//! docs/postfix.md.
//!
//! [`Desk`] is the postdesk side: the real binary, with the test desk of
//! [`crate::common::config_yaml`] and the Postfix relay as
//! `outbound.relay`. Unlike `common::Daemon` it can listen on a Unix socket,
//! and it can be stopped and started again on the same data.
//!
//! Both print their logs when a test fails (on drop while panicking), or
//! always with `POSTDESK_E2E_LOGS=1`.
//!
//! Include it beside the shared harness:
//! `mod common; #[path = "common/postfix.rs"] mod postfix;`.
#![allow(dead_code)]

use crate::common::{config_yaml, free_port, BIN};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where Postfix hands the support address to postdesk.
#[derive(Debug, Clone)]
pub enum Lmtp {
    /// `lmtp:inet:127.0.0.1:PORT`, postdesk on `127.0.0.1:PORT`.
    Inet(u16),
    /// `lmtp:unix:PATH`, postdesk on `unix:PATH`.
    Unix(PathBuf),
}

impl Lmtp {
    /// The `transport_maps` value.
    pub fn transport(&self) -> String {
        match self {
            Lmtp::Inet(port) => format!("lmtp:inet:127.0.0.1:{port}"),
            Lmtp::Unix(path) => format!("lmtp:unix:{}", path.display()),
        }
    }
}

/// Every mailbox of the test world: the team and two customers. The support
/// address is listed too (smtpd accepts only listed addresses), though
/// `transport_maps` takes its mail before `virtual(8)` would.
pub const MAILBOXES: &[&str] = &[
    "support@example.com",
    "alice@example.com",
    "bob@example.com",
    "mari@cust.test",
    "jaan@cust.test",
];

fn sh(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Waits until `f` gives `Some`, or panics with `what` after `secs`.
pub fn poll<T>(secs: u64, what: impl std::fmt::Display, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Uid and gid of user `postfix` (`mail_owner`): the Maildirs' owner.
fn postfix_ids() -> (u32, u32) {
    let out = sh(Command::new("id").arg("-u").arg("postfix"));
    let uid = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    let out = sh(Command::new("id").arg("-g").arg("postfix"));
    let gid = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    match (uid, gid) {
        (Some(u), Some(g)) => (u, g),
        _ => panic!("no user postfix: install Postfix (scripts/test.sh does)"),
    }
}

fn system_param(name: &str) -> String {
    let out = sh(Command::new("postconf").arg("-dh").arg(name));
    assert!(out.status.success(), "postconf -dh {name} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A private Postfix instance. Created by [`Postfix::new`] (directories,
/// ports), started by [`Postfix::start`] once postdesk's address is known,
/// stopped on drop.
pub struct Postfix {
    dir: tempfile::TempDir,
    /// Where customers and agents submit mail (smtpd, default restrictions).
    pub smtp_port: u16,
    /// postdesk's `outbound.relay` (second smtpd, no content filter).
    pub relay_port: u16,
    running: bool,
}

impl Postfix {
    pub fn new() -> Postfix {
        // SAFETY: geteuid(2) has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the Postfix end-to-end tests start a private Postfix and need root"
        );
        // /tmp, not $TMPDIR: Postfix's lmtp and virtual run as user postfix
        // and must pass through the directory (0755).
        let dir = tempfile::Builder::new()
            .prefix("postdesk-postfix.")
            .tempdir_in("/tmp")
            .expect("instance dir in /tmp");
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["etc", "queue", "mail", "run"] {
            std::fs::create_dir(root.join(d)).unwrap();
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let (uid, gid) = postfix_ids();
        std::os::unix::fs::chown(root.join("mail"), Some(uid), Some(gid)).unwrap();
        Postfix {
            dir,
            smtp_port: free_port(),
            relay_port: free_port(),
            running: false,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `-c` argument of every Postfix command: the config directory.
    pub fn config_dir(&self) -> PathBuf {
        self.dir().join("etc")
    }

    /// A place for postdesk's Unix socket that Postfix can reach.
    pub fn socket_path(&self) -> PathBuf {
        self.dir().join("run").join("lmtp.sock")
    }

    pub fn main_cf(&self) -> String {
        let d = self.dir().display();
        let (uid, gid) = postfix_ids();
        let meta = system_param("meta_directory");
        format!(
            "\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
# postfix-files and dynamicmaps.cf live here
meta_directory = {meta}
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postdesk.test
mydomain = postdesk.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_peername_lookup = no
alias_maps =
alias_database =
biff = no
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
# the support desk
recipient_delimiter = +
virtual_mailbox_domains = example.com, cust.test
virtual_mailbox_base = {d}/mail
virtual_mailbox_maps = texthash:{d}/etc/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
transport_maps = texthash:{d}/etc/transport
# a deferred mail is retried within seconds, not minutes
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"
        )
    }

    pub fn master_cf(&self) -> String {
        format!(
            "\
127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{relay} inet n - n - - smtpd
  -o syslog_name=postfix/postdesk-in
  -o content_filter=
  -o smtpd_milters=
  -o mynetworks=127.0.0.0/8
  -o smtpd_client_restrictions=permit_mynetworks,reject
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
",
            smtp = self.smtp_port,
            relay = self.relay_port
        )
    }

    /// Writes the configuration and runs `postfix -c DIR start`; returns
    /// once the SMTP port answers.
    pub fn start(&mut self, lmtp: &Lmtp) {
        self.start_transport(&lmtp.transport());
    }

    /// As [`Postfix::start`], with the support address's `transport_maps`
    /// value written as given: e.g. several LMTP next-hops,
    /// `lmtp:inet:127.0.0.1:P1, inet:127.0.0.1:P2` (Postfix ≥ 3.5 tries
    /// them in order, the next when one does not answer).
    pub fn start_transport(&mut self, transport: &str) {
        let etc = self.config_dir();
        std::fs::write(etc.join("main.cf"), self.main_cf()).unwrap();
        std::fs::write(etc.join("master.cf"), self.master_cf()).unwrap();
        let vmailbox: String = MAILBOXES
            .iter()
            .map(|a| {
                let (local, domain) = a.split_once('@').unwrap();
                format!("{a}    {domain}/{local}/\n")
            })
            .collect();
        std::fs::write(etc.join("vmailbox"), vmailbox).unwrap();
        std::fs::write(
            etc.join("transport"),
            format!("support@example.com    {transport}\n"),
        )
        .unwrap();
        let out = sh(Command::new("postfix").arg("-c").arg(&etc).arg("start"));
        self.running = true;
        assert!(
            out.status.success(),
            "postfix start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        poll(20, "Postfix's smtpd to greet", || {
            smtp_probe(self.smtp_port).then_some(())
        });
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir().join("queue/pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// `postfix stop`, then waits for the master to go; its children that
    /// outlive it are killed by pid.
    pub fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let master = self.master_pid();
        let children: Vec<u32> = master.map(children_of).unwrap_or_default();
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.config_dir())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left: Vec<u32> = master.into_iter().chain(children).collect();
        while Instant::now() < deadline {
            left.retain(|p| alive(*p));
            if left.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in left {
            // SAFETY: kill(2) on pids this instance started (its master and
            // the master's children), still alive after `postfix stop`.
            unsafe {
                libc::kill(p as i32, libc::SIGKILL);
            }
        }
    }

    /// Postfix's log (`maillog_file`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("maillog")).unwrap_or_default()
    }

    /// The log lines of one queue id.
    pub fn log_of(&self, queue_id: &str) -> Vec<String> {
        let needle = format!(" {queue_id}: ");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Queue ids of Postfix's log whose `message-id=` is this one (without
    /// brackets): the first is the submission, later ones are reinjections.
    pub fn queue_ids_of(&self, message_id: &str) -> Vec<String> {
        let needle = format!("message-id=<{message_id}>");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| {
                let head = l.split(&needle).next()?;
                let id = head.trim_end().strip_suffix(':')?.rsplit(' ').next()?;
                Some(id.to_string())
            })
            .collect()
    }

    /// `postqueue -j`: one JSON object per queued message.
    pub fn queue(&self) -> Vec<Value> {
        let out = sh(Command::new("postqueue")
            .arg("-c")
            .arg(self.config_dir())
            .arg("-j"));
        assert!(
            out.status.success(),
            "postqueue -j failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The queue entry of one queue id, if it is still queued.
    pub fn queued(&self, queue_id: &str) -> Option<Value> {
        self.queue()
            .into_iter()
            .find(|q| q["queue_id"].as_str() == Some(queue_id))
    }

    /// `postqueue -f`: deliver the deferred mail now.
    pub fn flush(&self) {
        let out = sh(Command::new("postqueue")
            .arg("-c")
            .arg(self.config_dir())
            .arg("-f"));
        assert!(
            out.status.success(),
            "postqueue -f failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn maildir(&self, address: &str) -> PathBuf {
        let (local, domain) = address.split_once('@').expect("an address");
        self.dir().join("mail").join(domain).join(local)
    }

    /// Every mail in a Maildir (new/ and cur/), oldest first.
    pub fn mails(&self, address: &str) -> Vec<Mail> {
        let md = self.maildir(address);
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(md.join(sub)).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort_by_key(|p| {
            let t = std::fs::metadata(p).and_then(|m| m.modified()).ok();
            (t, p.clone())
        });
        files
            .into_iter()
            .filter_map(|path| {
                let raw = std::fs::read(&path).ok()?;
                Some(Mail { path, raw })
            })
            .collect()
    }

    /// Waits for a mail in `address`'s Maildir that `f` accepts.
    pub fn wait_mail(&self, address: &str, what: &str, f: impl Fn(&Mail) -> bool) -> Mail {
        poll(15, format!("{what} in {address}'s Maildir"), || {
            self.mails(address).into_iter().find(|m| f(m))
        })
    }

    /// Submits a message over SMTP (Python's smtplib) as a customer's or
    /// agent's mail program would; returns Postfix's queue id.
    pub fn submit(&self, from: &str, rcpts: &[&str], data: &[u8]) -> String {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), data).unwrap();
        let out = sh(Command::new("python3")
            .arg("-c")
            .arg(SUBMIT_PY)
            .arg(self.smtp_port.to_string())
            .arg(tmp.path())
            .arg(from)
            .args(rcpts));
        queue_id_of(&out)
    }

    /// Answers the mail at `original` as a mail client does (Python's
    /// `email`): To the Reply-To addresses (else From) minus the sender and
    /// anything in `cc`, Cc `cc`, Subject `Re: …`, In-Reply-To its
    /// Message-ID, References its References plus its Message-ID, the
    /// original quoted below `body`. Returns Postfix's queue id.
    pub fn reply(&self, original: &Path, from: &str, cc: &[&str], id: &str, body: &str) -> String {
        let out = sh(Command::new("python3")
            .arg("-c")
            .arg(REPLY_PY)
            .arg(self.smtp_port.to_string())
            .arg(original)
            .arg(from)
            .arg(id)
            .arg(body)
            .args(cc));
        queue_id_of(&out)
    }
}

impl Default for Postfix {
    fn default() -> Self {
        Postfix::new()
    }
}

/// Logs are printed when a test fails, or always with `POSTDESK_E2E_LOGS=1`.
fn print_logs() -> bool {
    std::thread::panicking() || std::env::var("POSTDESK_E2E_LOGS").as_deref() == Ok("1")
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if print_logs() {
            eprintln!(
                "---- Postfix log ({}) ----\n{}",
                self.dir().join("maillog").display(),
                self.log()
            );
            let q = Command::new("postqueue")
                .arg("-c")
                .arg(self.config_dir())
                .arg("-p")
                .output();
            if let Ok(q) = q {
                eprintln!(
                    "---- postqueue -p ----\n{}",
                    String::from_utf8_lossy(&q.stdout)
                );
            }
        }
        self.stop();
    }
}

fn queue_id_of(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "submission failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .split("queued as ")
        .nth(1)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no queue id in {stdout:?}"))
}

/// Connects to an SMTP port and says hello and goodbye.
fn smtp_probe(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port))
        .map(|s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            greet_and_quit(s)
        })
        .unwrap_or(false)
}

/// Reads the `220` greeting and says QUIT: a readiness probe that leaves no
/// "lost connection after CONNECT" (Postfix) or "connection reset" (postdesk)
/// in the logs.
fn greet_and_quit<S: std::io::Read + Write>(s: S) -> bool {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let ok = r.read_line(&mut line).is_ok() && line.starts_with("220");
    let _ = r.get_mut().write_all(b"QUIT\r\n");
    line.clear();
    let _ = r.read_line(&mut line);
    ok
}

fn alive(pid: u32) -> bool {
    // Zombies of our own children are reaped by init, not us; a pid whose
    // stat says Z is gone for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn children_of(parent: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit(')').next()?.to_string();
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

const SUBMIT_PY: &str = r#"
import smtplib, sys
port, path, sender, rcpts = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
data = open(path, 'rb').read()
s = smtplib.SMTP('127.0.0.1', port)
s.ehlo()
code, msg = s.mail(sender)
assert code == 250, (code, msg)
for r in rcpts:
    code, msg = s.rcpt(r)
    assert code == 250, (r, code, msg)
code, msg = s.data(data)
assert code == 250, (code, msg)
print(msg.decode())
s.quit()
"#;

const REPLY_PY: &str = r#"
import email, email.policy, email.utils, smtplib, sys
from email.message import EmailMessage
port, path, sender, msgid, body, cc = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
with open(path, 'rb') as f:
    orig = email.message_from_binary_file(f, policy=email.policy.default)
targets = orig.get_all('Reply-To') or orig.get_all('From')
skip = {sender.lower()} | {c.lower() for c in cc}
to = []
for name, addr in email.utils.getaddresses([str(h) for h in targets]):
    if addr.lower() not in skip:
        to.append(email.utils.formataddr((name, addr)))
m = EmailMessage()
m['From'] = sender
m['To'] = ', '.join(to)
if cc:
    m['Cc'] = ', '.join(cc)
subject = str(orig['Subject'])
m['Subject'] = subject if subject.lower().startswith('re:') else 'Re: ' + subject
m['Message-ID'] = '<' + msgid + '>'
m['Date'] = email.utils.formatdate(localtime=True)
parent = str(orig['Message-ID']).strip()
m['In-Reply-To'] = parent
m['References'] = ' '.join(str(orig['References'] or '').split() + [parent])
text = orig.get_body(preferencelist=('plain',)).get_content()
quoted = ''.join('> ' + line + '\n' for line in text.splitlines())
m.set_content(body + '\n\nOn ' + str(orig['Date']) + ', ' + str(orig['From']) + ' wrote:\n' + quoted)
rcpts = [a for _, a in email.utils.getaddresses(to + cc)]
s = smtplib.SMTP('127.0.0.1', int(port))
s.ehlo()
code, msg = s.mail(sender)
assert code == 250, (code, msg)
for r in rcpts:
    code, msg = s.rcpt(r)
    assert code == 250, (r, code, msg)
code, msg = s.data(m.as_bytes())
assert code == 250, (code, msg)
print(msg.decode())
s.quit()
"#;

/// One mail as it landed in a Maildir.
pub struct Mail {
    pub path: PathBuf,
    pub raw: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .unwrap_or_else(|| panic!("{} does not parse", self.path.display()))
    }

    /// A header's value, unfolded, as written (not decoded).
    pub fn header(&self, name: &str) -> Option<String> {
        let p = self.parsed();
        let raw = p.header_raw(name)?;
        Some(raw.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    /// The decoded Subject.
    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_string()
    }

    pub fn kind(&self) -> Option<String> {
        self.header("X-Postdesk-Kind")
    }

    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_string()
    }

    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }
}

/// The real postdesk binary behind the Postfix instance: the desk of
/// `common::config_yaml` (support@example.com, agents alice and bob), with
/// `outbound.relay` Postfix's relay port.
pub struct Desk {
    dir: tempfile::TempDir,
    pub config: PathBuf,
    pub lmtp: Lmtp,
    child: Option<Child>,
    log: PathBuf,
}

impl Desk {
    /// postdesk on a free loopback TCP port.
    pub fn start_tcp(relay_port: u16) -> Desk {
        Desk::start(relay_port, Lmtp::Inet(free_port()))
    }

    /// postdesk on `unix:PATH`, the socket group `postfix` (the group
    /// Postfix's `lmtp` runs as) and mode 0660.
    pub fn start_unix(relay_port: u16, path: &Path) -> Desk {
        Desk::start(relay_port, Lmtp::Unix(path.to_path_buf()))
    }

    pub fn start(relay_port: u16, lmtp: Lmtp) -> Desk {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let config = dir.path().join("postdesk.yaml");
        let tcp_port = match &lmtp {
            Lmtp::Inet(p) => *p,
            Lmtp::Unix(_) => free_port(),
        };
        let mut yaml = config_yaml(tcp_port, &data, relay_port, "");
        if let Lmtp::Unix(path) = &lmtp {
            let tcp = format!("lmtp: [\"127.0.0.1:{tcp_port}\"]");
            assert!(yaml.contains(&tcp), "config_yaml changed its listen line");
            yaml = yaml.replace(
                &tcp,
                &format!(
                    "lmtp: [\"unix:{}\"]\n  lmtp_socket_group: postfix\n  lmtp_socket_mode: \"0660\"",
                    path.display()
                ),
            );
        }
        std::fs::write(&config, yaml).expect("write config");
        let log = dir.path().join("postdesk.log");
        let mut d = Desk {
            dir,
            config,
            lmtp,
            child: None,
            log,
        };
        d.spawn();
        d
    }

    /// Starts the daemon (again) on the same config and data.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "postdesk already runs");
        let from = self.log().len();
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
            let listening = match &self.lmtp {
                Lmtp::Inet(p) => TcpStream::connect(("127.0.0.1", *p))
                    .map(|s| {
                        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                        greet_and_quit(s)
                    })
                    .unwrap_or(false),
                Lmtp::Unix(path) => std::os::unix::net::UnixStream::connect(path)
                    .map(|s| {
                        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                        greet_and_quit(s)
                    })
                    .unwrap_or(false),
            };
            if listening && self.log()[from..].contains("postdesk ready") {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("postdesk exited early ({st}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postdesk did not become ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// SIGTERM and wait: the clean stop.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of our own child.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
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

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// postdesk's log lines holding every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
            .collect()
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = sh(Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args));
        assert!(
            out.status.success(),
            "postdesk {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `postdesk ticket list --json`.
    pub fn tickets(&self) -> Vec<Value> {
        let out = self.cli_ok(&["ticket", "list", "--json"]);
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| panic!("ticket list --json is not an array: {out}"))
    }

    /// `postdesk ticket show TOKEN --json`.
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
}

impl Drop for Desk {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if print_logs() {
            eprintln!("---- postdesk log ----\n{}", self.log());
        }
        crate::common::drop_database(&self.data_dir());
    }
}
