//! SPEC §6 under SIGKILL: a `250` means the mail is safe.
//!
//! Each round starts a fresh daemon, lets eight LMTP sessions deliver
//! distinct mails (new tickets and replies to them) as fast as it answers,
//! kills it with SIGKILL at a random moment, restarts it and, as Postfix
//! would, sends again every mail that did not get its `250`. Then it checks
//! what a user would: every acknowledged mail is in the ticket its `250`
//! named, nothing is stored twice, every ticket's acknowledgement reaches the
//! relay (at least once), and no acknowledgement names a ticket the store
//! does not hold.
//!
//! SIGKILL only proves that a `250` comes after the mail has left the
//! process (sled's buffers included); the page cache survives it. That the
//! `250` also waits for stable storage is checked under strace:
//! `fdatasync` of the spool file and of sled's `db` file complete between
//! the `354` and the `250` of every transaction.
//!
//! `CRASH_ROUNDS` (default 3) sets the number of rounds, `CRASH_SEED` the
//! random seed (printed, so a failure can be replayed). The long run:
//! `CRASH_ROUNDS=20 cargo test --release --test crash_safety -- --nocapture`.

mod common;

use common::lmtp::{bare, token_in, Client};
use common::sink::{Received, Sink};
use common::*;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SESSIONS: usize = 8;

// ---- the mails of a round ----

#[derive(Debug, Clone)]
struct Sent {
    id: String,
    from: String,
    /// The root's Message-ID for a reply; its own for a root.
    root: String,
    data: Vec<u8>,
    /// The first answer: `250 … stored as SUP-N`, a 4xx, or the I/O error.
    first: String,
}

impl Sent {
    fn acked(&self) -> bool {
        self.first.starts_with("250")
    }
    fn is_root(&self) -> bool {
        self.id == self.root
    }
}

/// One session's stream of mails: a new ticket, then now and then a reply to
/// one of its own earlier tickets, until `stop` or the server dies.
fn session(port: u16, round: usize, s: usize, stop: Arc<AtomicBool>, out: Arc<Mutex<Vec<Sent>>>) {
    let Ok(mut c) = Client::connect(port, "crash.test") else {
        return;
    };
    let mut roots: Vec<(String, String)> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let (id, from, root, data) = match roots.get(n % roots.len().max(1)) {
            Some((root, from)) if n % 3 == 0 => {
                let id = format!("r{round}.s{s}.n{n}.reply@cust.test");
                let data = mail(
                    &id,
                    from,
                    &format!("Re: crash round {round} session {s}"),
                    &format!("In-Reply-To: <{root}>\r\nReferences: <{root}>\r\n"),
                    "a reply",
                );
                (id, from.clone(), root.clone(), data)
            }
            _ => {
                let id = format!("r{round}.s{s}.n{n}@cust.test");
                // One sender per ticket: the ack rate limit (5 an hour per
                // sender) never applies.
                let from = format!("c.r{round}.s{s}.n{n}@cust.test");
                let data = mail(
                    &id,
                    &from,
                    &format!("crash round {round} session {s} mail {n}"),
                    "",
                    "Hello, something is broken.",
                );
                roots.push((id.clone(), from.clone()));
                (id.clone(), from, id, data)
            }
        };
        let res = c.send(&from, &data);
        let first = match &res {
            Ok(r) => r.clone(),
            Err(e) => format!("error: {e}"),
        };
        out.lock().unwrap().push(Sent {
            id,
            from,
            root,
            data,
            first,
        });
        if res.is_err() {
            return;
        }
    }
    c.quit();
}

fn ready_count(d: &Daemon) -> usize {
    d.log().matches("postdesk ready").count()
}

/// Restarts after a kill and waits for this run's "postdesk ready" (the
/// control socket is bound by then, so the CLI talks to the daemon).
fn restart_after_kill(d: &mut Daemon) {
    let before = ready_count(d);
    d.restart();
    eventually(30, "postdesk ready after the restart", || {
        ready_count(d) > before
    });
}

fn acks(sink: &Sink) -> Vec<Received> {
    sink.messages()
        .into_iter()
        .filter(|m| m.header("X-Postdesk-Kind").as_deref() == Some("ack"))
        .collect()
}

#[derive(Debug, Default)]
struct Figures {
    sent: usize,
    acked: usize,
    lost: usize,
    /// Mails that got no 250 but had been stored (their resend was a
    /// recognised duplicate).
    unacked_but_stored: usize,
    tickets: usize,
    /// Acknowledgements the relay received more than once (same Message-ID).
    ack_repeats: usize,
    kill_after_ms: Vec<u64>,
}

fn round(round: usize, rng: &mut impl Rng, f: &mut Figures) {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..SESSIONS)
        .map(|s| {
            let (stop, sent, port) = (stop.clone(), sent.clone(), d.port);
            std::thread::spawn(move || session(port, round, s, stop, sent))
        })
        .collect();
    // The kill lands at a random moment of steady load: after the first
    // 250, so a slow start on a busy machine does not make a round empty.
    eventually(30, "a first 250", || {
        sent.lock().unwrap().iter().any(Sent::acked)
    });
    let delay = rng.gen_range(0..1200u64);
    f.kill_after_ms.push(delay);
    std::thread::sleep(Duration::from_millis(delay));
    d.kill9();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("session thread");
    }
    let sent: Vec<Sent> = std::mem::take(&mut *sent.lock().unwrap());

    restart_after_kill(&mut d);

    // Postfix sends again whatever did not get its 250.
    let mut dup = 0;
    for m in sent.iter().filter(|m| !m.acked()) {
        let mut c = Client::connect(d.port, "crash.test").expect("connect after restart");
        let r = c.send(&m.from, &m.data).expect("resend after restart");
        c.quit();
        assert!(
            r.starts_with("250"),
            "round {round}: resend of <{}> after the restart: {r}",
            m.id
        );
        if r.contains("(duplicate)") {
            dup += 1;
        }
    }

    // Where each mail is now.
    let tickets = d.tickets();
    let mut where_: HashMap<String, Vec<String>> = HashMap::new();
    let mut first_of: HashMap<String, String> = HashMap::new();
    for t in &tickets {
        let tok = t["token"].as_str().unwrap_or_default().to_string();
        let ids: Vec<String> = t["message_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(first) = ids.first() {
            first_of.insert(tok.clone(), first.clone());
        }
        for id in ids {
            where_.entry(id).or_default().push(tok.clone());
        }
    }
    let mut lost = Vec::new();
    for m in &sent {
        let at = where_.get(&m.id).cloned().unwrap_or_default();
        match at.len() {
            0 if m.acked() => lost.push(format!("<{}> acked as {:?}", m.id, m.first)),
            0 => panic!(
                "round {round}: <{}> was resent and got 250 but is in no ticket",
                m.id
            ),
            1 => {}
            _ => panic!("round {round}: <{}> is in several tickets: {at:?}", m.id),
        }
        if m.acked() && at.len() == 1 {
            assert_eq!(
                token_in(&m.first).as_deref(),
                Some(at[0].as_str()),
                "round {round}: <{}> got {:?} but is stored in {}",
                m.id,
                m.first,
                at[0]
            );
        }
    }
    // Lost mail is the one failure that must never happen: report them all.
    assert!(
        lost.is_empty(),
        "round {round}: {} acknowledged mail(s) lost after SIGKILL at {delay} ms:\n{}",
        lost.len(),
        lost.join("\n")
    );
    // No ticket doubled: one ticket per root, started by it; replies with it.
    let roots: Vec<&Sent> = sent.iter().filter(|m| m.is_root()).collect();
    assert_eq!(
        tickets.len(),
        roots.len(),
        "round {round}: one ticket per new mail"
    );
    let ticket_of = |id: &str| where_.get(id).and_then(|v| v.first()).cloned();
    for r in &roots {
        let tok = ticket_of(&r.id).unwrap();
        assert_eq!(
            first_of.get(&tok),
            Some(&r.id),
            "round {round}: {tok} does not start with <{}>",
            r.id
        );
    }
    for m in sent.iter().filter(|m| !m.is_root()) {
        assert_eq!(
            ticket_of(&m.id),
            ticket_of(&m.root),
            "round {round}: reply <{}> is not in the ticket of <{}>",
            m.id,
            m.root
        );
    }

    // Every ticket's acknowledgement reaches the relay, at least once.
    let want: BTreeMap<String, String> = roots
        .iter()
        .map(|r| (r.id.clone(), ticket_of(&r.id).unwrap()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: Vec<String> = acks(&sink)
            .iter()
            .filter_map(|a| a.header("In-Reply-To").map(|v| bare(&v)))
            .collect();
        let missing: Vec<&String> = want.keys().filter(|id| !got.contains(id)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: no acknowledgement for {} ticket(s), e.g. <{}>\n{}",
            missing.len(),
            missing[0],
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let a repeat after the restart arrive too before counting.
    std::thread::sleep(Duration::from_millis(500));
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for a in acks(&sink) {
        let root = bare(&a.header("In-Reply-To").unwrap_or_default());
        let named = a.header("X-Postdesk-Ticket").unwrap_or_default();
        // An acknowledgement the customer got must name the ticket that
        // holds their mail: one sent for state lost in the crash would
        // point them at a number that is now someone else's.
        assert_eq!(
            want.get(&root),
            Some(&named),
            "round {round}: ack {} for <{root}> names {named}, the store has {:?}",
            a.header("Message-ID").unwrap_or_default(),
            want.get(&root)
        );
        *per_id
            .entry(a.header("Message-ID").unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        per_id.len(),
        want.len(),
        "round {round}: one acknowledgement Message-ID per ticket"
    );

    f.sent += sent.len();
    f.acked += sent.iter().filter(|m| m.acked()).count();
    f.lost += lost.len();
    f.unacked_but_stored += dup;
    f.tickets += tickets.len();
    f.ack_repeats += per_id.values().map(|n| n - 1).sum::<usize>();
    d.stop();
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_mail() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("crash_safety: {rounds} round(s), CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = Figures::default();
    for r in 0..rounds {
        round(r, &mut rng, &mut f);
    }
    eprintln!(
        "crash_safety: {rounds} rounds, kills {:?} ms after the first 250: lost {} of {} acked ({} sent; {} unacked but stored, resent as duplicates; {} tickets; {} ack repeats)",
        f.kill_after_ms, f.lost, f.acked, f.sent, f.unacked_but_stored, f.tickets, f.ack_repeats
    );
}

/// The received (not generated) messages of a `ticket show --json`.
fn received(show: &serde_json::Value) -> Vec<serde_json::Value> {
    show["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["kind"] != "generated")
        .collect()
}

/// The `250` was lost on the way (the client closed before reading it): the
/// MTA sends the same mail again, which is acknowledged and changes nothing.
#[test]
fn redelivery_after_a_lost_250_changes_nothing() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    let m = mail(
        "lost-reply@cust.test",
        "lost@cust.test",
        "Did you get this?",
        "",
        "The reply to my dot never came.",
    );
    let mut c = Client::connect(d.port, "crash.test").unwrap();
    c.send_body("lost@cust.test", &m).unwrap();
    c.send_dot().unwrap();
    // Hang up without reading the reply.
    drop(c);
    // The delivery still runs to its end: the mail is stored.
    eventually(15, "the mail whose 250 was lost is stored", || {
        d.ticket_of("lost-reply@cust.test").is_some()
    });
    sink.wait_for(2, Duration::from_secs(15));
    let before = d.show("SUP-1");

    let mut c = Client::connect(d.port, "crash.test").unwrap();
    let r = c.send("lost@cust.test", &m).unwrap();
    c.quit();
    assert!(r.starts_with("250 "), "{r}");
    assert!(r.contains("duplicate"), "{r}");

    std::thread::sleep(Duration::from_millis(1500));
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    let after = d.show("SUP-1");
    assert_eq!(
        after["message_ids"],
        serde_json::json!(["lost-reply@cust.test"])
    );
    assert_eq!(received(&after), received(&before));
    assert_eq!(after["replies"], before["replies"]);
    assert_eq!(acks(&sink).len(), 1, "no second acknowledgement");
    assert_eq!(sink.messages().len(), 2, "one ack, one team copy");
    assert!(d.log().contains("action=duplicate"), "{}", d.log());
}

/// A sync (fsync/fdatasync) of a file whose path contains `what` that
/// completed (returned 0) between trace lines `from` and `to`.
fn synced_between(syncs: &[(usize, String)], what: &str, from: usize, to: usize) -> bool {
    syncs
        .iter()
        .any(|(at, path)| *at > from && *at < to && path.contains(what))
}

/// Completed fsync/fdatasync calls of a `strace -f -y` trace: (line, path).
fn completed_syncs(lines: &[&str]) -> Vec<(usize, String)> {
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let pid = l.split_whitespace().next().unwrap_or("").to_string();
        let is_sync = l.contains("fdatasync(") || l.contains("fsync(");
        let path = || {
            l.split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(p, _)| p.to_string())
                .unwrap_or_default()
        };
        if is_sync && l.contains("<unfinished ...>") {
            pending.insert(pid, path());
        } else if is_sync && l.trim_end().ends_with("= 0") {
            out.push((i, path()));
        } else if (l.contains("<... fdatasync resumed>") || l.contains("<... fsync resumed>"))
            && l.trim_end().ends_with("= 0")
        {
            if let Some(p) = pending.remove(&pid) {
                out.push((i, p));
            }
        }
    }
    out
}

/// The durability half SIGKILL cannot show: before each `250`, the spool
/// file and sled's `db` file were fdatasync'ed after the message arrived.
/// Needs strace and ptrace (skipped, and said so, without them).
#[test]
fn every_250_follows_fdatasync_of_spool_and_store() {
    if common::sled_only(
        "traces fdatasync of sled's spool and db files; on PostgreSQL the 250 waits for COMMIT",
    ) {
        return;
    }
    let usable = std::process::Command::new("strace")
        .args(["-qq", "-e", "trace=none", "true"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !usable {
        eprintln!(
            "every_250_follows_fdatasync: SKIPPED, strace is missing or ptrace is not permitted"
        );
        return;
    }
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    d.stop();
    let trace = d.dir.path().join("trace");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "48"])
        .args(["-e", "trace=fdatasync,fsync,write,writev,sendto"])
        .arg("-o")
        .arg(&trace)
        .arg(BIN)
        .arg("--config")
        .arg(&d.config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace");
    // The traced daemon: strace's child.
    let daemon_pid = || -> Option<String> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", strace.id())).ok()?;
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
            .flat_map(|c| c.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .next()
    };
    let mut replies = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(30, "traced daemon listening", || {
            TcpStream::connect(("127.0.0.1", d.port)).is_ok()
        });
        let mut c = Client::connect(d.port, "crash.test").expect("connect");
        for n in 0..3 {
            let m = mail(
                &format!("traced{n}@cust.test"),
                "traced@cust.test",
                "Traced",
                "",
                "x",
            );
            replies.push(c.send("traced@cust.test", &m).expect("send"));
        }
        c.quit();
    }));
    if let Some(pid) = daemon_pid() {
        let _ = std::process::Command::new("kill").arg(&pid).status();
    }
    let _ = strace.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    for r in &replies {
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    let text = std::fs::read_to_string(&trace).expect("trace");
    let lines: Vec<&str> = text.lines().collect();
    let syncs = completed_syncs(&lines);
    let sent = |code: &str| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                (l.contains("sendto(") || l.contains("write(") || l.contains("writev("))
                    && l.contains("<socket:")
                    && l.contains(&format!("\"{code}"))
            })
            .map(|(i, _)| i)
            .collect()
    };
    let go_ahead = sent("354");
    let stored = sent("250 2.0.0");
    assert_eq!(go_ahead.len(), 3, "three 354s in the trace");
    assert_eq!(stored.len(), 3, "three 250 2.0.0 in the trace");
    for (from, to) in go_ahead.iter().zip(&stored) {
        assert!(from < to);
        assert!(
            synced_between(&syncs, ".spool", *from, *to),
            "no completed fdatasync of the spool between lines {from} and {to}"
        );
        assert!(
            synced_between(&syncs, "store/db", *from, *to),
            "no completed fdatasync of store/db between lines {from} and {to}"
        );
    }
}
