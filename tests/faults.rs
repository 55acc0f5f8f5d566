//! Faults on both sides of postdesk, as an operator meets them.
//!
//! Relay side (SPEC §6, "the outbox is sent at least once, retried with
//! backoff, and a permanent failure is recorded on the ticket and logged"):
//! the sink refuses with 4xx at RCPT or after the data, drops the connection
//! in the middle of DATA, never answers, or refuses with 5xx. The outbox backs
//! off (attempts are counted over a window), delivers once the relay works
//! again, and ingest never waits for it.
//!
//! Store side ("any internal fault answers 451 4.3.0, never 5xx"): the
//! debug fault switch under load from several sessions, a real full disk (a
//! small tmpfs as data_dir), an immutable spool file (`chattr +i`) and a
//! read-only data dir (a read-only bind mount). Mounting needs root; where
//! it is refused the test says so and skips that part.

mod common;

use common::sink::{Mode, Sink};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SUPPORT: &str = "support@example.com";

/// Continues the `outbound:` block of the test config: each network step
/// may take 1 s, so an attempt at a relay that never answers ends after
/// about 2 s (the sender's budget is twice the timeout). `retry_min` is
/// already 200ms there; the sender floors it at 1 s, so retries come after
/// about 1 s, 2 s, 4 s …
const FAST_TIMEOUT: &str = "  timeout: 1s\n";

fn customer_mail(n: usize) -> (String, Vec<u8>) {
    let from = format!("cust{n}@cust.test");
    let m = mail(
        &format!("fault{n}@cust.test"),
        &from,
        &format!("Relay trouble {n}"),
        "",
        "Please help.",
    );
    (from, m)
}

// ---------------------------------------------------------------- relay --

/// One mail (an ack and a team copy to send) while the relay misbehaves in
/// `mode`; then the relay is fixed.
fn relay_fault_backs_off_then_delivers(mode: Mode) {
    let sink = Sink::start_blocking();
    sink.set_mode(mode);
    let d = Daemon::start(sink.port(), FAST_TIMEOUT);
    let (from, m) = customer_mail(1);
    d.deliver_ok(&from, &m);

    // Two rows, each tried at about 0, 1 and 3 s: ~6 attempts in 5 s. A
    // sender that retried at once would make hundreds.
    let window = Duration::from_secs(5);
    std::thread::sleep(window);
    let n = sink.attempts();
    eprintln!("{mode:?}: {n} attempts in {window:?}");
    assert!(n >= 4, "{mode:?}: ack and copy each retried: {n} attempts");
    assert!(n <= 16, "{mode:?}: {n} attempts in {window:?}: no backoff");
    assert!(sink.messages().is_empty());
    let log = d.log();
    assert!(
        log.contains("retry kind=ack") && log.contains("retry kind=copy"),
        "{log}"
    );
    assert!(!log.contains("failed kind="), "a 4xx is not final: {log}");

    sink.set_mode(Mode::Accept);
    sink.wait_for(2, Duration::from_secs(20));
    // Sent once each, and not again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(of_kind(&sink, "ack").len(), 1);
    assert_eq!(of_kind(&sink, "copy").len(), 1);
    assert_eq!(sink.messages().len(), 2);
    let show = d.show("SUP-1");
    assert_eq!(show["delivery_failures"], serde_json::json!([]));
    assert!(
        d.log().contains("sent kind=ack ticket=SUP-1"),
        "{}",
        d.log()
    );
}

#[test]
fn relay_4xx_at_rcpt_backs_off_then_delivers() {
    relay_fault_backs_off_then_delivers(Mode::TempFail);
}

#[test]
fn relay_4xx_after_data_backs_off_then_delivers() {
    relay_fault_backs_off_then_delivers(Mode::TempFailData);
}

#[test]
fn relay_dropping_mid_data_backs_off_then_delivers() {
    relay_fault_backs_off_then_delivers(Mode::DropMidData);
}

/// A relay that takes the data and never answers holds no delivery up:
/// LMTP keeps answering 250 at once, stalled sends are abandoned after
/// the timeout and retried, and everything goes out once the relay answers.
#[test]
fn stalled_relay_never_slows_ingest_and_delivers_later() {
    let sink = Sink::start_blocking();
    sink.set_mode(Mode::Stall);
    let d = Daemon::start(sink.port(), FAST_TIMEOUT);
    const MAILS: usize = 11;
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for n in 0..MAILS {
        let (from, m) = customer_mail(n);
        let t = Instant::now();
        let r = d.deliver(&from, &[SUPPORT], &m);
        let took = t.elapsed();
        assert!(r[0].starts_with("250"), "{r:?}");
        assert!(
            took < Duration::from_secs(2),
            "delivery {n} took {took:?} while the relay stalls"
        );
        slowest = slowest.max(took);
        // Spread over the stall, so later mails meet busy send slots.
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("stall: slowest LMTP delivery {slowest:?}");
    let until = started + Duration::from_secs(7);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let n = sink.attempts();
    eprintln!("stall: {n} attempts in 7 s");
    // 4 send slots, each attempt abandoned after ~2 s: about 4 per 2 s.
    assert!(n > 4, "stalled sends are abandoned and retried: {n}");
    assert!(n <= 30, "{n} attempts in 7 s");
    assert!(sink.messages().is_empty());
    assert!(d.log().contains("no answer within"), "{}", d.log());

    sink.set_mode(Mode::Accept);
    sink.wait_for(2 * MAILS, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let acks = of_kind(&sink, "ack");
    let mut ids: Vec<String> = acks.iter().filter_map(|a| a.header("Message-ID")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(acks.len(), MAILS, "one ack per ticket");
    assert_eq!(ids.len(), MAILS);
    assert_eq!(of_kind(&sink, "copy").len(), MAILS);
}

/// 5xx is final: recorded on the ticket, logged, never retried.
#[test]
fn relay_5xx_is_recorded_on_the_ticket_and_not_retried() {
    let sink = Sink::start_blocking();
    sink.set_mode(Mode::PermFail);
    let d = Daemon::start(sink.port(), FAST_TIMEOUT);
    let (from, m) = customer_mail(1);
    d.deliver_ok(&from, &m);
    eventually(15, "two delivery failures on SUP-1", || {
        d.show("SUP-1")["delivery_failures"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    });
    let show = d.show("SUP-1");
    let failures = show["delivery_failures"].as_array().unwrap();
    let mut kinds: Vec<&str> = failures.iter().filter_map(|f| f["kind"].as_str()).collect();
    kinds.sort();
    assert_eq!(kinds, ["ack", "copy"]);
    for f in failures {
        let reply = f["reply"].as_str().unwrap_or_default();
        assert!(reply.contains("550"), "{f}");
    }
    let ack = failures.iter().find(|f| f["kind"] == "ack").unwrap();
    assert_eq!(ack["recipients"], serde_json::json!([from]));
    let log = d.log();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("failed kind=")).collect();
    assert_eq!(failed.len(), 2, "{log}");
    assert!(
        failed
            .iter()
            .all(|l| l.contains("WARN") && l.contains("ticket=SUP-1") && l.contains("550")),
        "{failed:?}"
    );
    let n = sink.attempts();
    assert_eq!(n, 2, "one attempt each");
    // Even once the relay would take it, a permanent failure stays final.
    sink.set_mode(Mode::Accept);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sink.attempts(), n, "a 5xx is not retried");
    assert!(sink.messages().is_empty());
}

/// A relay that only ever says 4xx: after `outbound.give_up_after` the
/// failure is permanent, recorded on the ticket and logged.
#[test]
fn relay_4xx_past_give_up_after_becomes_a_recorded_failure() {
    let sink = Sink::start_blocking();
    sink.set_mode(Mode::TempFail);
    let d = Daemon::start(sink.port(), &format!("{FAST_TIMEOUT}  give_up_after: 3s\n"));
    let (from, m) = customer_mail(1);
    d.deliver_ok(&from, &m);
    eventually(20, "the 4xx becomes a recorded failure", || {
        d.show("SUP-1")["delivery_failures"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    });
    let show = d.show("SUP-1");
    for f in show["delivery_failures"].as_array().unwrap() {
        let reply = f["reply"].as_str().unwrap_or_default();
        assert!(reply.starts_with("gave up after 3s: "), "{f}");
        assert!(reply.contains("451"), "{f}");
    }
    assert!(
        d.log().contains("failed kind=ack ticket=SUP-1"),
        "{}",
        d.log()
    );
    let n = sink.attempts();
    eprintln!("give_up_after 3s: {n} attempts");
    assert!((4..=12).contains(&n), "{n} attempts in about 3 s");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.attempts(), n, "nothing after giving up");
}

// ---------------------------------------------------------------- store --

/// One test mail: envelope sender (also its Message-ID), recipients, bytes.
type Mail = (String, Vec<&'static str>, Vec<u8>);

/// Sends `mails[i]` over `sessions` concurrent connections; the replies of
/// each mail (one per recipient), in order.
fn deliver_concurrently(port: u16, mails: &[Mail], sessions: usize) -> Vec<Vec<String>> {
    let chunks: Vec<Vec<(usize, Mail)>> = (0..sessions)
        .map(|s| {
            mails
                .iter()
                .cloned()
                .enumerate()
                .filter(|(i, _)| i % sessions == s)
                .collect()
        })
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                let mut c = Lmtp::connect(port);
                let out: Vec<(usize, Vec<String>)> = chunk
                    .into_iter()
                    .map(|(i, (from, rcpts, data))| (i, c.send(&from, &rcpts, &data)))
                    .collect();
                c.quit();
                out
            })
        })
        .collect();
    let mut all: Vec<(usize, Vec<String>)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("session thread"))
        .collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

fn load(n: usize, tag: &str) -> Vec<Mail> {
    (0..n)
        .map(|i| {
            let from = format!("{tag}{i}@cust.test");
            // Every other mail to two recipients: each gets its own reply.
            let rcpts = if i % 2 == 0 {
                vec![SUPPORT]
            } else {
                vec![SUPPORT, "support+billing@example.com"]
            };
            let m = mail(
                &format!("{tag}{i}@cust.test"),
                &from,
                &format!("{tag} {i}"),
                "",
                "stored or refused, never lost",
            );
            (from, rcpts, m)
        })
        .collect()
}

fn all_ids(d: &Daemon) -> Vec<String> {
    let mut ids: Vec<String> = d
        .tickets()
        .iter()
        .flat_map(|t| {
            t["message_ids"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
        })
        .collect();
    ids.sort();
    ids
}

fn expected_ids(mails: &[Mail]) -> Vec<String> {
    let mut ids: Vec<String> = mails.iter().map(|(f, _, _)| f.clone()).collect();
    ids.sort();
    ids
}

fn assert_all_451(replies: &[Vec<String>], what: &str) {
    for r in replies {
        assert!(
            !r.is_empty() && r.iter().all(|x| x.starts_with("451 4.3.0")),
            "{what}: every recipient gets 451 4.3.0, got {r:?}"
        );
    }
}

fn assert_all_250(replies: &[Vec<String>], what: &str) {
    for r in replies {
        assert!(
            !r.is_empty() && r.iter().all(|x| x.starts_with("250")),
            "{what}: {r:?}"
        );
    }
}

#[test]
fn store_fault_under_load_answers_451_to_all_and_recovers_without_restart() {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    let marker = d.data_dir().join(postdesk::store::FAULT_FILE);
    std::fs::write(&marker, b"").unwrap();
    let mails = load(24, "storefault");
    let replies = deliver_concurrently(d.port, &mails, 6);
    assert_all_451(&replies, "during the store fault");
    assert!(d.tickets().is_empty(), "nothing half-written");
    let log = d.log();
    let warns = log
        .lines()
        .filter(|l| {
            l.contains("WARN")
                && l.contains("delivery failed")
                && l.contains(postdesk::store::FAULT_FILE)
        })
        .count();
    assert!(warns >= mails.len(), "a warning per refused mail: {log}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(sink.messages().is_empty(), "nothing sent for refused mail");

    // The MTA tries again after the fault is gone: no restart needed.
    std::fs::remove_file(&marker).unwrap();
    let replies = deliver_concurrently(d.port, &mails, 6);
    assert_all_250(&replies, "after the store fault");
    assert_eq!(all_ids(&d), expected_ids(&mails), "each mail stored once");
    let acks = sink.wait_for(2 * mails.len(), Duration::from_secs(30));
    assert_eq!(
        acks.iter()
            .filter(|m| m.header("X-Postdesk-Kind").as_deref() == Some("ack"))
            .count(),
        mails.len()
    );
}

// A mounted filesystem, unmounted (lazily) when dropped.
struct Mount {
    dir: tempfile::TempDir,
    point: PathBuf,
}

impl Mount {
    fn point(&self) -> &Path {
        &self.point
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        let _ = &self.dir;
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// A tmpfs of `size` (e.g. "8m"), or why not (not root, no CAP_SYS_ADMIN).
fn tmpfs(size: &str) -> Result<Mount, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let point = dir.path().join("mnt");
    std::fs::create_dir(&point).map_err(|e| e.to_string())?;
    run(Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(&point))?;
    Ok(Mount { dir, point })
}

/// `dir` bind-mounted onto itself read-only.
fn read_only_bind(dir: &Path) -> Result<Mount, String> {
    run(Command::new("mount").arg("--bind").arg(dir).arg(dir))?;
    let m = Mount {
        dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        point: dir.to_path_buf(),
    };
    run(Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(dir))?;
    Ok(m)
}

/// Points a running test daemon at another data dir and restarts it.
fn move_data_dir(d: &mut Daemon, sink: &Sink, data: &Path) {
    d.stop();
    // A small reserve: the tmpfs under it is only 8 MiB.
    let extra = "limits:\n  min_free_space: 1048576\n";
    std::fs::write(&d.config, config_yaml(d.port, data, sink.port(), extra)).unwrap();
    restart(d);
}

fn restart(d: &mut Daemon) {
    let before = d.log().matches("postdesk ready").count();
    d.restart();
    eventually(30, "postdesk ready again", || {
        d.log().matches("postdesk ready").count() > before
    });
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // Fill the last partial block too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    let _ = f.sync_all();
}

const FULL_DISK_SLED_ONLY: &str =
    "fills the filesystem under data_dir, where sled keeps the store; PostgreSQL's files are the server's";

fn full_disk_setup(what: &str) -> Option<(Mount, Sink, Daemon, Vec<Mail>)> {
    let mnt = match tmpfs("8m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("{what}: SKIPPED, cannot mount a tmpfs here: {why}");
            return None;
        }
    };
    let sink = Sink::start_blocking();
    // The reserve is what keeps sled off a full disk; on an 8 MiB tmpfs it
    // must be small.
    let mut d = Daemon::start(sink.port(), "");
    move_data_dir(&mut d, &sink, &mnt.point().join("data"));
    d.deliver_ok(
        "before@cust.test",
        &mail(
            "before-full@cust.test",
            "before@cust.test",
            "Before",
            "",
            "x",
        ),
    );
    fill(&mnt.point().join("filler"));
    let mails = load(12, "diskfull");
    let replies = deliver_concurrently(d.port, &mails, 4);
    assert_all_451(&replies, "with the disk full");
    assert!(
        d.log().contains("no space left on device") || d.log().contains("No space left on device"),
        "the log says why: {}",
        d.log()
    );
    Some((mnt, sink, d, mails))
}

/// A real full disk (data_dir on an 8 MiB tmpfs, filled up): every mail is
/// refused with 451 4.3.0, none accepted, none 5xx; after space is freed
/// and postdesk restarted, the MTA's retries are all stored, once each, and
/// what was acknowledged before is still there.
#[test]
fn full_disk_answers_451_and_nothing_is_lost_after_a_restart() {
    if sled_only(FULL_DISK_SLED_ONLY) {
        return;
    }
    let Some((mnt, _sink, mut d, mails)) = full_disk_setup("full disk") else {
        return;
    };
    std::fs::remove_file(mnt.point().join("filler")).unwrap();
    d.stop();
    restart(&mut d);
    let replies = deliver_concurrently(d.port, &mails, 4);
    assert_all_250(&replies, "after freeing space and a restart");
    let mut want = expected_ids(&mails);
    want.push("before-full@cust.test".into());
    want.sort();
    assert_eq!(all_ids(&d), want, "each mail stored once, none lost");
}

/// What an operator expects: freeing space is enough, as with the fault
/// switch. Today it is not: sled keeps the first I/O error of its log
/// writer as a global error and fails every later operation, so postdesk
/// answers 451 until it is restarted; and the batch whose flush failed
/// stays visible in the running daemon (`ticket list` shows a ticket for a
/// mail that was refused with 451). See docs/reliability.md.
#[test]
fn full_disk_recovers_without_restart_once_space_is_freed() {
    if sled_only(FULL_DISK_SLED_ONLY) {
        return;
    }
    let Some((mnt, _sink, d, mails)) = full_disk_setup("full disk, no restart") else {
        return;
    };
    assert_eq!(
        all_ids(&d),
        vec!["before-full@cust.test".to_string()],
        "mail refused with 451 shows in no ticket"
    );
    std::fs::remove_file(mnt.point().join("filler")).unwrap();
    let replies = deliver_concurrently(d.port, &mails, 4);
    assert_all_250(&replies, "after freeing space, without a restart");
    let mut want = expected_ids(&mails);
    want.push("before-full@cust.test".into());
    want.sort();
    assert_eq!(all_ids(&d), want);
}

fn chattr(flag: &str, path: &Path) -> Result<(), String> {
    run(Command::new("chattr").arg(flag).arg(path))
}

/// As root, chmod stops nothing; the immutable flag does. With the spool
/// file immutable every mail gets 451 4.3.0, and clearing the flag is
/// enough: the next delivery is stored, no restart.
#[test]
fn immutable_spool_file_answers_451_and_recovers_without_restart() {
    if sled_only("makes sled's spool file immutable; PostgreSQL keeps raw messages in a table") {
        return;
    }
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "");
    d.deliver_ok(
        "first@cust.test",
        &mail("imm1@cust.test", "first@cust.test", "First", "", "x"),
    );
    let spool = d.data_dir().join("spool/00000001.spool");
    if let Err(why) = chattr("+i", &spool) {
        eprintln!("immutable spool: SKIPPED, chattr +i does not work here: {why}");
        return;
    }
    let mails = load(6, "immutable");
    let replies = deliver_concurrently(d.port, &mails, 3);
    let cleared = chattr("-i", &spool);
    assert_all_451(&replies, "with the spool file immutable");
    cleared.expect("chattr -i");
    assert!(d.log().contains("Operation not permitted"), "{}", d.log());
    let replies = deliver_concurrently(d.port, &mails, 3);
    assert_all_250(&replies, "after chattr -i");
    let mut want = expected_ids(&mails);
    want.push("imm1@cust.test".into());
    want.sort();
    assert_eq!(all_ids(&d), want);
}

/// A write error inside sled (here: its `db` file made immutable, so the
/// flush after the batch fails). sled keeps such an error, and the running
/// store may hold writes that never reached the disk, so postdesk answers
/// the batch 451 4.3.0 and exits non-zero for the service manager to
/// restart it. Nothing of the refused mail was sent (the sender sends only
/// what is durable), and after the restart delivery works again.
#[test]
fn store_write_error_refuses_exits_and_a_restart_resumes() {
    if sled_only("makes sled's db file immutable (a write error inside sled)") {
        return;
    }
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    d.deliver_ok(
        "first@cust.test",
        &mail("db1@cust.test", "first@cust.test", "First", "", "x"),
    );
    sink.wait_for(2, Duration::from_secs(10));
    let db = d.data_dir().join("store/db");
    if let Err(why) = chattr("+i", &db) {
        eprintln!("immutable db: SKIPPED, chattr +i does not work here: {why}");
        return;
    }
    let r = d.deliver(
        "refused@cust.test",
        &[SUPPORT],
        &mail("db2@cust.test", "refused@cust.test", "Refused", "", "x"),
    );
    eventually(10, "postdesk exits", || {
        d.log().contains("exiting so a restart resumes")
    });
    std::thread::sleep(Duration::from_secs(1));
    chattr("-i", &db).expect("chattr -i");
    assert!(r.len() == 1 && r[0].starts_with("451 4.3.0"), "{r:?}");
    assert!(
        !sink
            .messages()
            .iter()
            .any(|m| m.rcpt_to.iter().any(|r| r == "refused@cust.test")),
        "a mail answered 451 was acknowledged"
    );
    d.kill9();
    restart(&mut d);
    // The MTA retries the refused mail: stored once now.
    d.deliver_ok(
        "refused@cust.test",
        &mail("db2@cust.test", "refused@cust.test", "Refused", "", "x"),
    );
    assert!(d.ticket_of("db2@cust.test").is_some());
    assert!(
        d.ticket_of("db1@cust.test").is_some(),
        "what was acknowledged is kept"
    );
}

/// A data dir on a read-only mount: `serve` refuses to start (exit status
/// non-zero, the reason on stderr) rather than accept mail it cannot keep.
#[test]
fn read_only_data_dir_refuses_to_start() {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    d.deliver_ok(
        "ro@cust.test",
        &mail("ro1@cust.test", "ro@cust.test", "Read-only", "", "x"),
    );
    d.stop();
    let _ro = match read_only_bind(&d.data_dir()) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("read-only data dir: SKIPPED, cannot bind-mount read-only here: {why}");
            return;
        }
    };
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&d.config)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve kept running on a read-only data dir");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", d.port)).is_err(),
        "nothing listens"
    );
}

// -------------------------------------------------------------- wedged --

/// A commit that never finishes (sled 0.34's log-writer deadlock, upstream
/// spacejam/sled#1412; here the debug-only stall switch) must not hold the
/// MTA's sessions until they time out: the watchdog exits 75 for a restart,
/// nothing was acknowledged, and the retried mail is stored once.
#[test]
fn a_wedged_store_exits_75_and_the_retry_is_stored_once() {
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "limits:\n  commit_timeout: 1s\n");
    let stall = d.data_dir().join(postdesk::store::STALL_FILE);
    std::fs::write(&stall, b"").unwrap();
    let (from, m) = customer_mail(75);
    let port = d.port;
    let (f2, m2) = (from.clone(), m.clone());
    let client = std::thread::spawn(move || {
        let mut l = Lmtp::connect(port);
        l.send(&f2, &["support@example.com"], &m2)
    });
    assert_eq!(d.wait_exit(30), Some(75), "{}", d.log());
    let replies = client.join().unwrap_or_default();
    assert!(
        !replies.iter().any(|r| r.starts_with("250")),
        "acknowledged while wedged: {replies:?}"
    );
    assert!(d.log().contains("store wedged"), "{}", d.log());

    std::fs::remove_file(&stall).unwrap();
    d.restart();
    d.deliver_ok(&from, &m);
    let tickets = d.tickets();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(tickets[0]["message_ids"][0], "fault75@cust.test");
}
