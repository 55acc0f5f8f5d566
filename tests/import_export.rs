//! `import mbox` and `export` with the real binary.
//!
//! The mbox is built here (see [`generate`]): real fixtures (list threads,
//! customer replies, auto-replies, bounces, malformed mail) interleaved
//! with synthetic conversations (roots and replies linked by In-Reply-To
//! and References, Outlook replies linked only by Thread-Index,
//! staff-started tickets, auto-replies and bounces of ticket mail, exact
//! redeliveries). The generator knows what each message must become, so the
//! import's summary is checked number for number.
//!
//! `fixtures/mbox/history.mbox` is the same generator's output, committed
//! for trying import by hand and for benchmarks; a test keeps it current
//! (`POSTDESK_WRITE_MBOX=1 cargo test --test import_export` rewrites it).

mod common;

use common::sink::Sink;
use common::{angle, fixture, free_port, header_value, Daemon, BIN};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Synthetic conversations in the test mbox: with the real fixtures they
/// make about 1,000 messages.
const CONVERSATIONS: usize = 270;

// ---- the generator ----------------------------------------------------------

/// xorshift64*: deterministic across platforms and crate versions, so the
/// committed mbox can be compared byte for byte.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Opens a ticket.
    New,
    /// Lands on an existing ticket (reply, note, attached auto-reply …).
    Join,
    Duplicate,
    /// Auto-reply or bounce that matches no ticket.
    Apart,
}

#[derive(Debug, Default)]
struct Expected {
    messages: u64,
    new: u64,
    joined: u64,
    duplicates: u64,
    apart: u64,
    /// Messages that certainly have problems noted (no Message-ID).
    min_malformed: u64,
    /// Synthetic roots: Message-ID → Date, the ticket's `started_at`.
    roots: BTreeMap<String, jiff::Timestamp>,
    /// Synthetic Message-IDs that must be on some ticket, and the root of
    /// the ticket each belongs to.
    in_ticket: BTreeMap<String, String>,
    /// Synthetic messages by Message-ID: (raw bytes, ticket root).
    raw: BTreeMap<String, Vec<u8>>,
}

struct Mbox {
    out: Vec<u8>,
    exp: Expected,
}

impl Mbox {
    /// Appends a message. `env_from` goes on the `From ` line: the envelope
    /// sender import falls back on when the message names none.
    fn push(&mut self, env_from: &str, when: jiff::Timestamp, raw: &[u8], fate: Fate) {
        let sender = if env_from.is_empty() {
            "MAILER-DAEMON"
        } else {
            env_from
        };
        let date = when
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%a %b %e %H:%M:%S %Y")
            .to_string();
        self.out
            .extend_from_slice(format!("From {sender} {date}\n").as_bytes());
        // mboxrd: every line that would read as a separator, quoted or not,
        // gets one more '>'.
        for line in raw.split_inclusive(|b| *b == b'\n') {
            let unq = line.iter().position(|b| *b != b'>').unwrap_or(line.len());
            if line[unq..].starts_with(b"From ") {
                self.out.push(b'>');
            }
            self.out.extend_from_slice(line);
        }
        if !raw.ends_with(b"\n") {
            // The reader keeps what the line had; this newline is the
            // message's own from now on.
            self.out.push(b'\n');
        }
        self.out.push(b'\n');
        self.exp.messages += 1;
        match fate {
            Fate::New => self.exp.new += 1,
            Fate::Join => self.exp.joined += 1,
            Fate::Duplicate => self.exp.duplicates += 1,
            Fate::Apart => self.exp.apart += 1,
        }
    }
}

/// One real fixture and what it must become.
struct Real {
    raw: Vec<u8>,
    fate: Fate,
    no_message_id: bool,
}

fn emls(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    v.sort();
    v
}

/// The real messages, in an order that keeps each thread's own order.
fn real_fixtures() -> Vec<Real> {
    let mut out = Vec::new();
    // List threads (ground truth: tests/threads_manifest.json): each thread
    // is one ticket. The two largest threads stay out to keep the mbox small.
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/threads_manifest.json"
        ))
        .expect("threads manifest"),
    )
    .expect("manifest JSON");
    let skip = [
        "usrp-users/x410-unbalanced-power",
        "usrp-users/uhd-python-api-2024",
    ];
    let mut seen_threads = BTreeSet::new();
    for e in manifest.as_array().expect("manifest array") {
        let thread = e["thread"].as_str().expect("thread");
        if skip.contains(&thread) {
            continue;
        }
        let file = e["file"].as_str().expect("file");
        let raw = std::fs::read(fixture(&format!("mail/threads/{file}"))).expect("thread file");
        let fate = if seen_threads.insert(thread.to_string()) {
            Fate::New
        } else {
            Fate::Join
        };
        out.push(Real {
            raw,
            fate,
            no_message_id: false,
        });
    }
    // Auto-replies and bounces of mail not in the mbox: kept apart. The
    // look-alikes: two are bounces, two people's mail (as classify's tests
    // assert).
    for f in emls(&fixture("mail/autoreplies")) {
        out.push(real(&f, Fate::Apart));
    }
    for f in emls(&fixture("mail/autoreplies/not-autoreply")) {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        let fate = if name.starts_with("sisimai-is-not-bounce") {
            Fate::New
        } else {
            Fate::Apart
        };
        out.push(real(&f, fate));
    }
    for f in emls(&fixture("mail/bounces")) {
        out.push(real(&f, Fate::Apart));
    }
    // Customers' replies to mail the desk never saw: a ticket each.
    for f in emls(&fixture("mail/replies")) {
        out.push(real(&f, Fate::New));
    }
    // Malformed mail without a Message-ID: stored, problems noted.
    for f in emls(&fixture("mail/malformed")) {
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("dovecot-malformed-") {
            out.push(real(&f, Fate::New));
        }
    }
    // The same Message-ID twice in the set would make the fate depend on
    // content details (duplicate or variant); identical files are exact
    // duplicates, anything else sharing an id stays out.
    let mut ids: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut bodies: BTreeSet<Vec<u8>> = BTreeSet::new();
    out.retain_mut(|r| {
        if bodies.contains(&r.raw) {
            r.fate = Fate::Duplicate;
            return true;
        }
        match header_value(&r.raw, "Message-ID").map(|v| angle(&v)) {
            Some(id) if !id.is_empty() => {
                if ids.contains_key(&id) {
                    return false;
                }
                ids.insert(id, r.raw.clone());
            }
            _ => r.no_message_id = true,
        }
        bodies.insert(r.raw.clone());
        true
    });
    out
}

/// The envelope sender a real fixture was delivered with, for its `From `
/// line: its Return-Path, else its From; the malformed ones that have
/// neither came from someone too, and import must not take them for
/// bounces (a null sender).
fn real_envelope(raw: &[u8]) -> String {
    header_value(raw, "Return-Path")
        .map(|v| angle(&v))
        .or_else(|| header_value(raw, "From").map(|v| angle(&v)))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "anonymous@fixtures.invalid".into())
}

fn real(path: &Path, fate: Fate) -> Real {
    Real {
        raw: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        fate,
        no_message_id: false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// In-Reply-To and References.
    Mail,
    /// Outlook: Thread-Index only.
    Outlook,
    /// An agent writes to the customer with the desk in copy.
    StaffStarted,
}

struct Conv {
    n: usize,
    style: Style,
    customer: String,
    name: String,
    subject: String,
    root: String,
    refs: Vec<String>,
    thread_index: Vec<u8>,
    left: u32,
    step: u32,
    /// The latest agent message, for auto-replies and bounces to point at.
    agent_msg: Option<(String, String)>,
}

const AGENTS: [(&str, &str); 2] = [("Alice", "alice@desk.test"), ("Bob", "bob@desk.test")];
const FIRST: [&str; 8] = [
    "Mari", "Jaan", "Liis", "Peeter", "Kadri", "Toomas", "Anu", "Rein",
];
const TOPICS: [&str; 8] = [
    "Printer on fire",
    "Invoice does not match the order",
    "Cannot log in since Monday",
    "Export to Excel is empty",
    "VPN drops every hour",
    "Wrong VAT on credit note",
    "Warehouse report missing rows",
    "Password reset mail never arrives",
];

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn rfc2822(t: jiff::Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%a, %d %b %Y %H:%M:%S +0000")
        .to_string()
}

/// Plain text body; some lines start with "From " on purpose, so the
/// mboxrd quoting has something to do.
fn body(rng: &mut Rng, who: &str, lf: &str) -> String {
    let lines = [
        "Could you have a look at this when you have a moment?",
        "From what I can see, it started after the last update.",
        "It happens on two of our machines, not on the third.",
        "From 9 to 5 someone is here to try things out.",
        "The error message says nothing useful, I am afraid.",
    ];
    let mut b = String::from("Hello,");
    b.push_str(lf);
    b.push_str(lf);
    for _ in 0..1 + rng.below(3) {
        b.push_str(lines[rng.below(lines.len() as u64) as usize]);
        b.push_str(lf);
    }
    b.push_str(lf);
    b.push_str("Regards,");
    b.push_str(lf);
    b.push_str(who);
    b.push_str(lf);
    b
}

fn message(headers: &[(&str, String)], body: &str, lf: &str) -> Vec<u8> {
    let mut s = String::new();
    for (k, v) in headers {
        s.push_str(k);
        s.push_str(": ");
        s.push_str(v);
        s.push_str(lf);
    }
    s.push_str("MIME-Version: 1.0");
    s.push_str(lf);
    s.push_str("Content-Type: text/plain; charset=utf-8");
    s.push_str(lf);
    s.push_str(lf);
    s.push_str(body);
    s.into_bytes()
}

/// Builds the test mbox: `conversations` synthetic conversations with the
/// real fixtures spread among them.
fn generate(conversations: usize, with_real: bool) -> Mbox {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut mb = Mbox {
        out: Vec::new(),
        exp: Expected::default(),
    };
    let reals = if with_real {
        real_fixtures()
    } else {
        Vec::new()
    };
    let mut reals = reals.into_iter().peekable();
    let real_total = if with_real { 170 } else { 0 };
    let mut clock: jiff::Timestamp = "2024-01-08T08:00:00Z".parse().expect("start time");
    let mut active: Vec<Conv> = Vec::new();
    let mut started = 0usize;
    // Synthetic messages sent so far, for redeliveries: (raw, env sender).
    let mut sent: Vec<(Vec<u8>, String)> = Vec::new();
    let mut extra = 0usize;
    loop {
        clock = clock
            .checked_add(jiff::SignedDuration::from_mins(1 + rng.below(90) as i64))
            .expect("clock");
        // A real fixture now and then, in their own order.
        if reals.peek().is_some() && rng.below((conversations as u64 * 3).max(1)) < real_total {
            if let Some(r) = reals.next() {
                let from = real_envelope(&r.raw);
                if r.no_message_id && r.fate != Fate::Duplicate {
                    mb.exp.min_malformed += 1;
                }
                mb.push(&from, clock, &r.raw, r.fate);
                continue;
            }
        }
        // Extras: a redelivery of something already imported, or an
        // auto-reply or bounce about mail the desk never saw.
        if !sent.is_empty() && rng.chance(3) {
            let (raw, from) = sent[rng.below(sent.len() as u64) as usize].clone();
            let lf = if raw.windows(2).any(|w| w == b"\r\n") {
                "\r\n"
            } else {
                "\n"
            };
            let mut again = format!(
                "Received: from relay2.desk.test by mx.desk.test; {}{lf}",
                rfc2822(clock)
            )
            .into_bytes();
            again.extend_from_slice(&raw);
            mb.push(&from, clock, &again, Fate::Duplicate);
            continue;
        }
        if rng.chance(2) {
            extra += 1;
            let raw = if rng.chance(50) {
                auto_reply(
                    &format!("stranger{extra}@elsewhere.test"),
                    &format!("unknown.{extra}@elsewhere.test"),
                    "Your newsletter",
                    &format!("ooo.x{extra}@elsewhere.test"),
                    clock,
                )
            } else {
                bounce(
                    &format!("unknown.{extra}@desk.test"),
                    "Something we never saw",
                    &format!("dsn.x{extra}@mx.elsewhere.test"),
                    clock,
                )
            };
            mb.push("", clock, &raw, Fate::Apart);
            continue;
        }
        // Start a conversation, or carry one on.
        let start = started < conversations && (active.len() < 3 || rng.chance(35));
        if start {
            let n = started;
            started += 1;
            let style = match rng.below(10) {
                0..=5 => Style::Mail,
                6..=8 => Style::Outlook,
                _ => Style::StaffStarted,
            };
            let first = FIRST[rng.below(FIRST.len() as u64) as usize];
            let company = format!("company{}.test", rng.below(40));
            let customer = format!("{}.{n}@{company}", first.to_lowercase());
            let subject = format!("{} (case {n})", TOPICS[n % TOPICS.len()]);
            let mut ti = clock.as_second().to_be_bytes()[2..8].to_vec();
            for _ in 0..2 {
                ti.extend_from_slice(&rng.next().to_be_bytes());
            }
            let mut c = Conv {
                n,
                style,
                customer,
                name: first.to_string(),
                subject,
                root: String::new(),
                refs: Vec::new(),
                thread_index: ti,
                left: rng.below(5) as u32,
                step: 0,
                agent_msg: None,
            };
            let lf = if rng.chance(30) { "\r\n" } else { "\n" };
            let (raw, from) = match style {
                Style::StaffStarted => {
                    let (aname, agent) = AGENTS[n % 2];
                    c.root = format!("start.{n}@desk.test");
                    let raw = message(
                        &[
                            ("Return-Path", format!("<{agent}>")),
                            ("From", format!("{aname} <{agent}>")),
                            ("To", format!("{} <{}>", c.name, c.customer)),
                            ("Cc", "Support <support@desk.test>".into()),
                            ("Subject", c.subject.clone()),
                            ("Date", rfc2822(clock)),
                            ("Message-ID", format!("<{}>", c.root)),
                        ],
                        &body(&mut rng, aname, lf),
                        lf,
                    );
                    c.agent_msg = Some((c.root.clone(), agent.to_string()));
                    (raw, agent.to_string())
                }
                _ => {
                    c.root = format!("root.{n}@{company}");
                    let mut h = vec![
                        ("Return-Path", format!("<{}>", c.customer)),
                        ("From", format!("{} <{}>", c.name, c.customer)),
                        ("To", "Support <support@desk.test>".into()),
                        ("Subject", c.subject.clone()),
                        ("Date", rfc2822(clock)),
                        ("Message-ID", format!("<{}>", c.root)),
                    ];
                    if style == Style::Outlook {
                        h.push(("Thread-Topic", c.subject.clone()));
                        h.push(("Thread-Index", b64(&c.thread_index)));
                    }
                    (
                        message(&h, &body(&mut rng, &c.name, lf), lf),
                        c.customer.clone(),
                    )
                }
            };
            c.refs.push(c.root.clone());
            mb.exp.roots.insert(c.root.clone(), clock);
            mb.exp.in_ticket.insert(c.root.clone(), c.root.clone());
            mb.exp.raw.insert(c.root.clone(), raw.clone());
            mb.push(&from, clock, &raw, Fate::New);
            sent.push((raw, from));
            active.push(c);
            continue;
        }
        if active.is_empty() {
            break;
        }
        let i = rng.below(active.len() as u64) as usize;
        let c = &mut active[i];
        if c.left == 0 {
            active.swap_remove(i);
            continue;
        }
        c.left -= 1;
        c.step += 1;
        // Sometimes the customer's mailbox answers the agent by itself.
        if let Some((agent_id, agent)) = c.agent_msg.clone().filter(|_| rng.chance(12)) {
            let id = format!("auto.{}.{}@{}", c.n, c.step, domain(&c.customer));
            let raw = if rng.chance(50) {
                auto_reply(&c.customer, &agent_id, &c.subject, &id, clock)
            } else {
                bounce(&agent_id, &c.subject, &id, clock)
            };
            let _ = agent;
            mb.exp.in_ticket.insert(id, c.root.clone());
            mb.push("", clock, &raw, Fate::Join);
            continue;
        }
        // Agents and customer take turns; a staff-started ticket is
        // answered by the customer first.
        let agent_turn = (c.step % 2 == 1) != (c.style == Style::StaffStarted);
        let lf = if rng.chance(30) { "\r\n" } else { "\n" };
        let re = if c.style == Style::Outlook {
            "RE: "
        } else {
            "Re: "
        };
        let (raw, from, id) = if agent_turn {
            let (aname, agent) = AGENTS[c.n % 2];
            let id = format!("r{}.{}@desk.test", c.step, c.n);
            let mut h = vec![
                ("Return-Path", format!("<{agent}>")),
                ("From", format!("{aname} <{agent}>")),
                ("To", format!("{} <{}>", c.name, c.customer)),
                ("Cc", "Support <support@desk.test>".into()),
                ("Subject", format!("{re}{}", c.subject)),
                ("Date", rfc2822(clock)),
                ("Message-ID", format!("<{id}>")),
            ];
            thread_headers(c, &mut h, &mut rng);
            let raw = message(&h, &body(&mut rng, aname, lf), lf);
            c.agent_msg = Some((id.clone(), agent.to_string()));
            (raw, agent.to_string(), id)
        } else {
            let id = format!("r{}.{}@{}", c.step, c.n, domain(&c.customer));
            let to = match c.style {
                Style::StaffStarted => {
                    let (aname, agent) = AGENTS[c.n % 2];
                    format!("{aname} <{agent}>")
                }
                _ => "Support <support@desk.test>".into(),
            };
            let mut h = vec![
                ("Return-Path", format!("<{}>", c.customer)),
                ("From", format!("{} <{}>", c.name, c.customer)),
                ("To", to),
                ("Subject", format!("{re}{}", c.subject)),
                ("Date", rfc2822(clock)),
                ("Message-ID", format!("<{id}>")),
            ];
            if c.style == Style::StaffStarted {
                h.push(("Cc", "Support <support@desk.test>".into()));
            }
            thread_headers(c, &mut h, &mut rng);
            let raw = message(&h, &body(&mut rng, &c.name, lf), lf);
            (raw, c.customer.clone(), id)
        };
        c.refs.push(id.clone());
        mb.exp.in_ticket.insert(id.clone(), c.root.clone());
        mb.exp.raw.insert(id, raw.clone());
        mb.push(&from, clock, &raw, Fate::Join);
        sent.push((raw, from));
    }
    // Whatever real fixtures are left go at the end.
    for r in reals {
        let from = real_envelope(&r.raw);
        if r.no_message_id && r.fate != Fate::Duplicate {
            mb.exp.min_malformed += 1;
        }
        mb.push(&from, clock, &r.raw, r.fate);
    }
    mb
}

fn domain(addr: &str) -> &str {
    addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}

/// Mail replies carry In-Reply-To and References (sometimes trimmed to the
/// root and the parent, as some clients do); Outlook replies only the
/// parent's Thread-Index plus five bytes.
fn thread_headers(c: &mut Conv, h: &mut Vec<(&str, String)>, rng: &mut Rng) {
    match c.style {
        Style::Outlook => {
            let mut child = c.thread_index.clone();
            child.extend_from_slice(&rng.next().to_be_bytes()[..5]);
            h.push(("Thread-Topic", c.subject.clone()));
            h.push(("Thread-Index", b64(&child)));
            c.thread_index = child;
        }
        _ => {
            let parent = c.refs.last().cloned().unwrap_or_default();
            h.push(("In-Reply-To", format!("<{parent}>")));
            let refs: Vec<String> = if c.refs.len() > 2 && rng.chance(30) {
                vec![c.refs[0].clone(), parent]
            } else {
                c.refs.clone()
            };
            let refs: Vec<String> = refs.iter().map(|r| format!("<{r}>")).collect();
            h.push(("References", refs.join(" ")));
        }
    }
}

fn auto_reply(
    from: &str,
    in_reply_to: &str,
    subject: &str,
    id: &str,
    when: jiff::Timestamp,
) -> Vec<u8> {
    format!(
        "Return-Path: <>\nFrom: <{from}>\nTo: support@desk.test\nSubject: Automatic reply: {subject}\nDate: {}\nMessage-ID: <{id}>\nIn-Reply-To: <{in_reply_to}>\nReferences: <{in_reply_to}>\nAuto-Submitted: auto-replied\nX-Auto-Response-Suppress: All\nContent-Type: text/plain; charset=utf-8\n\nI am out of the office until Monday.\n",
        rfc2822(when)
    )
    .into_bytes()
}

fn bounce(original: &str, subject: &str, id: &str, when: jiff::Timestamp) -> Vec<u8> {
    format!(
        "Return-Path: <>\nFrom: Mail Delivery System <MAILER-DAEMON@mx.elsewhere.test>\nTo: support@desk.test\nSubject: Undelivered Mail Returned to Sender\nDate: {date}\nMessage-ID: <{id}>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"b-{id}\"\n\n--b-{id}\nContent-Type: text/plain; charset=us-ascii\n\nThis is the mail system at host mx.elsewhere.test.\nI'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients.\n\n--b-{id}\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.elsewhere.test\n\nFinal-Recipient: rfc822; gone@elsewhere.test\nAction: failed\nStatus: 5.1.1\n\n--b-{id}\nContent-Type: text/rfc822-headers\n\nFrom: someone@desk.test\nSubject: {subject}\nMessage-ID: <{original}>\n\n--b-{id}--\n",
        date = rfc2822(when)
    )
    .into_bytes()
}

// ---- running postdesk ---------------------------------------------------------

struct Desk {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Desk {
    fn new() -> Desk {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("postdesk.yaml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            common::with_store(
                format!(
                    r#"listen:
  lmtp: ["127.0.0.1:{port}"]
data_dir: {data}
support:
  address: support@desk.test
team:
  domains: [desk.test]
  agents:
    - email: alice@desk.test
      name: Alice
    - email: bob@desk.test
outbound:
  relay: file:{sent}
"#,
                    port = free_port(),
                    data = data.display(),
                    sent = dir.path().join("sent").display(),
                ),
                &data,
            ),
        )
        .expect("write config");
        Desk { dir, config }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run postdesk")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "postdesk {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn import(&self, mbox: &Path) -> Value {
        let out = self.ok(&["import", "mbox", &mbox.display().to_string(), "--json"]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("summary is not JSON ({e}): {out}"))
    }

    fn tickets(&self) -> Vec<Value> {
        let out = self.ok(&["ticket", "list", "--json"]);
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_else(|| panic!("ticket list --json is not an array: {out}"))
    }
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("summary has no number {k}: {v}"))
}

// ---- tests --------------------------------------------------------------------

#[test]
fn import_backfills_history_and_export_gives_it_back() {
    let mb = generate(CONVERSATIONS, true);
    let exp = &mb.exp;
    assert!(
        (950..=1100).contains(&exp.messages),
        "the generator should make about 1,000 messages, made {}",
        exp.messages
    );
    let desk = Desk::new();
    let mbox = desk.dir.path().join("history.mbox");
    std::fs::write(&mbox, &mb.out).expect("write mbox");

    let s = desk.import(&mbox);
    let counts = format!(
        "summary {s}\nexpected: messages {} new {} joined {} duplicates {} apart {}",
        exp.messages, exp.new, exp.joined, exp.duplicates, exp.apart
    );
    assert_eq!(n(&s, "messages"), exp.messages, "{counts}");
    assert_eq!(n(&s, "tickets_created"), exp.new, "{counts}");
    assert_eq!(n(&s, "joined"), exp.joined, "{counts}");
    assert_eq!(n(&s, "duplicates"), exp.duplicates, "{counts}");
    assert_eq!(n(&s, "kept_apart"), exp.apart, "{counts}");
    assert_eq!(n(&s, "too_large"), 0, "{counts}");
    assert!(n(&s, "malformed") >= exp.min_malformed, "{counts}");

    // The desk agrees: one ticket per thread, every synthetic message on
    // its root's ticket, which started when the root was written.
    let tickets = desk.tickets();
    assert_eq!(tickets.len() as u64, exp.new);
    let mut ticket_of: BTreeMap<String, String> = BTreeMap::new();
    for t in &tickets {
        let tok = t["token"].as_str().unwrap_or_default().to_string();
        for id in t["message_ids"].as_array().into_iter().flatten() {
            let id = id.as_str().unwrap_or_default().to_string();
            assert!(
                ticket_of.insert(id.clone(), tok.clone()).is_none(),
                "<{id}> is on two tickets"
            );
        }
        let first = t["message_ids"][0].as_str().unwrap_or_default();
        if let Some(date) = exp.roots.get(first) {
            let started: jiff::Timestamp = t["started_at"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{tok}: started_at {}", t["started_at"]));
            assert_eq!(
                started, *date,
                "{tok} started when its first mail was written"
            );
        }
    }
    // Mbox order is commit order: each root is its ticket's first message.
    let first_of: BTreeMap<String, &str> = tickets
        .iter()
        .map(|t| {
            (
                t["token"].as_str().unwrap_or_default().to_string(),
                t["message_ids"][0].as_str().unwrap_or_default(),
            )
        })
        .collect();
    for root in exp.roots.keys() {
        let tok = ticket_of
            .get(root)
            .unwrap_or_else(|| panic!("root <{root}> is on no ticket"));
        assert_eq!(first_of.get(tok).copied(), Some(root.as_str()), "{tok}");
    }
    for (id, root) in &exp.in_ticket {
        let got = ticket_of
            .get(id)
            .unwrap_or_else(|| panic!("<{id}> is on no ticket"));
        assert_eq!(
            Some(got),
            ticket_of.get(root),
            "<{id}> is not on the ticket of its root <{root}>"
        );
    }

    // History sends nothing: no mail written, nothing queued.
    let sent = desk.dir.path().join("sent");
    assert!(
        std::fs::read_dir(&sent).map_or(true, |mut d| d.next().is_none()),
        "import sent mail into {}",
        sent.display()
    );

    // Export: a line per ticket, the same messages, no generated mail.
    let out = desk.ok(&["export"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), tickets.len());
    for (line, t) in lines.iter().zip(&tickets) {
        assert_eq!(line["token"], t["token"]);
        for k in ["status", "subject", "contact", "started_at", "message_ids"] {
            assert_eq!(line[k], t[k], "{} {k}", t["token"]);
        }
        let got: BTreeSet<&str> = line["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["message_id"].as_str().unwrap_or_default())
            .collect();
        let want: BTreeSet<&str> = t["message_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m.as_str().unwrap_or_default())
            .collect();
        assert_eq!(got, want, "{}", t["token"]);
        for m in line["messages"].as_array().into_iter().flatten() {
            assert_ne!(m["kind"], "generated", "import queued mail: {m}");
            assert!(m.get("raw").is_none(), "raw without --raw");
            for k in [
                "from", "to", "cc", "date", "kind", "excerpt", "subject", "size",
            ] {
                assert!(m.get(k).is_some(), "message without {k}: {m}");
            }
        }
    }

    // --raw to a file: the bytes as they were in the mbox, `>From ` lines
    // unquoted.
    let file = desk.dir.path().join("export.jsonl");
    desk.ok(&["export", "--raw", "--out", &file.display().to_string()]);
    let text = std::fs::read_to_string(&file).expect("export file");
    assert_eq!(text.lines().count(), tickets.len());
    let mut checked = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("line");
        for m in v["messages"].as_array().into_iter().flatten() {
            let id = m["message_id"].as_str().unwrap_or_default();
            if let Some(want) = exp.raw.get(id) {
                use base64::Engine;
                let got = base64::engine::general_purpose::STANDARD
                    .decode(m["raw"].as_str().unwrap_or_default())
                    .expect("raw is base64");
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(want),
                    "<{id}>"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked,
        exp.raw.len(),
        "every synthetic message exported raw"
    );

    // The same mbox again changes nothing.
    let again = desk.import(&mbox);
    assert_eq!(n(&again, "messages"), exp.messages, "{again}");
    assert_eq!(n(&again, "duplicates"), exp.messages, "{again}");
    assert_eq!(n(&again, "tickets_created"), 0, "{again}");
    assert_eq!(desk.tickets(), tickets);

    // The import leaves the per-agent load counters built and true, so the
    // daemon's first start does not count every ticket before it listens.
    let store = common::open_store(&desk.dir.path().join("data"));
    assert!(
        store.loads_built().expect("read"),
        "load counters not built by the import"
    );
    let mut scanned = std::collections::BTreeMap::new();
    store
        .for_each_ticket(|t| postdesk::store::add_load(&mut scanned, &t))
        .expect("scan");
    assert_eq!(store.agent_loads().expect("loads"), scanned);
    store.close();
}

#[test]
fn import_and_export_refuse_while_the_daemon_runs() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    let mbox = d.dir.path().join("one.mbox");
    std::fs::write(
        &mbox,
        "From a@b.test Mon Jan  1 00:00:00 2024\nFrom: a@b.test\nSubject: x\nMessage-ID: <x@b.test>\n\nhi\n",
    )
    .expect("write mbox");
    for args in [
        vec!["import", "mbox", mbox.to_str().unwrap_or_default()],
        vec!["export"],
    ] {
        let out = d.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} ran beside the daemon");
        assert!(
            err.contains("daemon is running") && err.contains("stop it first"),
            "{args:?}: {err}"
        );
    }
    assert!(d.tickets().is_empty());
}

#[test]
fn import_of_something_else_says_what_is_wrong() {
    let desk = Desk::new();
    let eml = fixture("mail/replies/talon-gmail.eml");
    let out = desk.run(&["import", "mbox", &eml.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not an mbox"), "{err}");
    let out = desk.run(&["import", "mbox", "/nonexistent/x.mbox"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.mbox"),
        "the error names the file"
    );
}

#[test]
fn committed_mbox_is_the_generators_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/mbox/history.mbox");
    let mb = generate(CONVERSATIONS, true);
    if std::env::var_os("POSTDESK_WRITE_MBOX").is_some() {
        std::fs::write(&path, &mb.out).expect("write fixtures/mbox/history.mbox");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == mb.out,
        "{} is not what the generator makes now (fixtures or generator changed): \
         POSTDESK_WRITE_MBOX=1 cargo test --test import_export committed_mbox",
        path.display()
    );
    assert!(
        mb.out.len() <= 3 << 20,
        "keep the committed mbox under 3 MiB"
    );
}

/// The import rate on small messages (run in release):
/// `cargo test --release --test import_export -- --ignored --nocapture import_rate`
#[test]
#[ignore]
fn import_rate() {
    let conversations: usize = std::env::var("POSTDESK_RATE_CONVERSATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let mb = generate(conversations, false);
    let desk = Desk::new();
    // POSTDESK_RATE_MBOX=FILE keeps the mbox, for profiling by hand.
    let mbox = std::env::var_os("POSTDESK_RATE_MBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| desk.dir.path().join("big.mbox"));
    std::fs::write(&mbox, &mb.out).expect("write mbox");
    let s = desk.import(&mbox);
    eprintln!(
        "{} messages ({} bytes) in {:.2}s: {:.0} messages/s",
        n(&s, "messages"),
        n(&s, "bytes"),
        s["seconds"].as_f64().unwrap_or(0.0),
        s["messages_per_second"].as_f64().unwrap_or(0.0)
    );
    assert_eq!(n(&s, "tickets_created"), mb.exp.new);
}
