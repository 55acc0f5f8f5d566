//! `postdesk backup` under LMTP load and `postdesk restore`: the restored
//! store holds exactly what was acknowledged before the snapshot point,
//! identical to the live store, and nothing after it.

mod common;

use common::sink::Sink;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `backup` and `restore` snapshot sled's store and spool; a PostgreSQL desk
/// is backed up with the database's own tools (docs/operations.md).
const BACKUP_SLED_ONLY: &str =
    "backup and restore copy sled's store and spool; PostgreSQL has pg_dump and pg_basebackup";

/// One delivery of the load: which thread sent it, when, and the reply.
#[derive(Debug, Clone)]
struct Sent {
    thread: usize,
    message_id: String,
    started: Instant,
    acked: Instant,
}

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run postdesk")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `export --raw` of a stopped desk: ticket number → its JSON line.
fn export(config: &Path) -> BTreeMap<u64, Value> {
    let o = cli(config, &["export", "--raw"]);
    assert!(o.status.success(), "export: {}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("export line is JSON");
            (v["number"].as_u64().expect("number"), v)
        })
        .collect()
}

/// The customer messages of an exported ticket (ours end in @cust.test),
/// in ticket order; generated mail changes state after sending, so it is
/// not part of the comparison.
fn received(t: &Value) -> Vec<Value> {
    t["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m["message_id"]
                .as_str()
                .is_some_and(|i| i.ends_with("@cust.test"))
        })
        .collect()
}

fn without(v: &Value, keys: &[&str]) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in keys {
            o.remove(*k);
        }
    }
    v
}

/// Delivers until `stop`: new tickets (one sender each, so the ack rate
/// limit never applies) and replies to the thread's own earlier tickets.
fn load(
    port: u16,
    thread: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Sent>>>,
) -> impl FnOnce() {
    move || {
        let mut c = Lmtp::connect(port);
        let mut roots: Vec<(String, String)> = Vec::new();
        let mut i = 0usize;
        while !stop.load(Ordering::SeqCst) {
            i += 1;
            let id = format!("load{thread}-{i}@cust.test");
            let (from, m) = if i % 3 == 0 && !roots.is_empty() {
                let (from, root) = roots[i % roots.len()].clone();
                let m = mail(
                    &id,
                    &from,
                    &format!("Re: question {root}"),
                    &format!("In-Reply-To: <{root}>\r\nReferences: <{root}>\r\n"),
                    &format!("More detail {i} from thread {thread}."),
                );
                (from, m)
            } else {
                let from = format!("t{thread}c{i}@cust.test");
                roots.push((from.clone(), id.clone()));
                let m = mail(
                    &id,
                    &from,
                    &format!("question {id}"),
                    "",
                    &format!("Help with case {i} please.\r\n{}", "x".repeat(i * 37)),
                );
                (from, m)
            };
            let started = Instant::now();
            let r = c.send(&from, &["support@example.com"], &m);
            let acked = Instant::now();
            assert!(
                r.len() == 1 && r[0].starts_with("250"),
                "{id}: not delivered: {r:?}"
            );
            log.lock().unwrap().push(Sent {
                thread,
                message_id: id,
                started,
                acked,
            });
        }
        c.quit();
    }
}

fn restore_config(sink_port: u16, data: &Path, dir: &Path) -> PathBuf {
    let p = dir.join("restored.yaml");
    std::fs::write(&p, config_yaml(free_port(), data, sink_port, "")).unwrap();
    p
}

#[test]
fn backup_under_lmtp_load_restores_exactly_the_snapshot() {
    if sled_only(BACKUP_SLED_ONLY) {
        return;
    }
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    // Some bulk first, so copying the spool takes a while and the load has
    // time to go on while the backup runs.
    let mut preload = Vec::new();
    for n in 0..6 {
        let id = format!("bulk{n}@cust.test");
        let from = format!("bulk{n}@cust.test");
        let body = format!("{}\r\n", "0123456789abcdef".repeat(4)).repeat(40_000);
        d.deliver_ok(&from, &mail(&id, &from, &format!("bulk {n}"), "", &body));
        preload.push(id);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let threads: Vec<_> = (0..3)
        .map(|t| std::thread::spawn(load(d.port, t, stop.clone(), log.clone())))
        .collect();
    eventually(60, "30 deliveries under load", || {
        log.lock().unwrap().len() >= 30
    });

    let work = tempfile::tempdir().unwrap();
    let bdir = work.path().join("backup");
    let b_start = Instant::now();
    let out = d.cli(&["backup", bdir.to_str().unwrap(), "--json"]);
    let b_end = Instant::now();
    assert!(out.status.success(), "backup: {}", text(&out));
    let n_before = log.lock().unwrap().len();
    eventually(60, "20 more deliveries after the backup", || {
        log.lock().unwrap().len() >= n_before + 20
    });
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("load thread");
    }
    let sent = log.lock().unwrap().clone();
    let reply: Value = serde_json::from_slice(&out.stdout).expect("backup --json");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bdir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(reply["counts"], manifest["counts"]);
    assert!(
        d.log()
            .lines()
            .any(|l| l.contains("backup written") && l.contains("by=")),
        "the daemon logs the backup and who ran it:\n{}",
        d.log()
    );

    // Deliveries went on while the backup ran.
    let during = sent
        .iter()
        .filter(|s| s.acked > b_start && s.acked < b_end)
        .count();
    eprintln!(
        "backup took {:?} (committer held {} ms); {during} of {} deliveries got 250 meanwhile; snapshot: {}",
        b_end - b_start,
        manifest["committer_held_ms"],
        sent.len(),
        manifest["counts"]
    );
    assert!(
        during > 0,
        "no 250 while the backup ran ({:?})",
        b_end - b_start
    );

    // A non-empty target is refused, and says why.
    let again = d.cli(&["backup", bdir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));

    d.stop();
    let live = export(&d.config);

    // Restore into a fresh data dir (absent), then read it offline.
    let restored_data = work.path().join("restored-data");
    let rcfg = restore_config(sink.port(), &restored_data, work.path());
    let r = cli(&rcfg, &["restore", bdir.to_str().unwrap()]);
    assert!(r.status.success(), "restore: {}", text(&r));
    let back = export(&rcfg);

    // The snapshot point: the manifest's counts are what came back …
    let counts = &manifest["counts"];
    let back_msgs: Vec<String> = back
        .values()
        .flat_map(received)
        .map(|m| m["message_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(back.len() as u64, counts["tickets"].as_u64().unwrap());
    assert_eq!(back_msgs.len() as u64, counts["messages"].as_u64().unwrap());
    // … the tickets are the live store's first N, by number …
    let n_tickets = back.len() as u64;
    assert_eq!(
        back.keys().copied().collect::<Vec<_>>(),
        (1..=n_tickets).collect::<Vec<_>>()
    );
    assert!(
        live.len() as u64 > n_tickets,
        "load went on after the backup"
    );
    // … and each load thread's restored mails are exactly its first ones
    // (a thread sends one at a time, so it commits in order).
    for id in &preload {
        assert!(back_msgs.contains(id), "{id} missing");
    }
    let in_back: std::collections::HashSet<&str> = back_msgs.iter().map(|s| s.as_str()).collect();
    let mut restored_load = 0;
    for t in 0..3 {
        let mine: Vec<&Sent> = sent.iter().filter(|s| s.thread == t).collect();
        let k = mine
            .iter()
            .take_while(|s| in_back.contains(s.message_id.as_str()))
            .count();
        assert!(
            mine[k..]
                .iter()
                .all(|s| !in_back.contains(s.message_id.as_str())),
            "thread {t}: restored mails are not a prefix of what it sent"
        );
        for s in &mine[..k] {
            assert!(s.started < b_end, "{} sent after the backup", s.message_id);
        }
        for s in &mine[k..] {
            assert!(
                s.acked > b_start,
                "{} acknowledged before the backup began, but not restored",
                s.message_id
            );
        }
        restored_load += k;
    }
    assert_eq!(restored_load + preload.len(), back_msgs.len());
    assert!(restored_load >= 30);

    // Identical to the live store for everything before the point: every
    // restored message (fields and raw bytes), and every ticket that got
    // nothing more afterwards; no ticket lists a message it lacks.
    let mut unchanged = 0;
    for (n, bt) in &back {
        let lt = &live[n];
        let (bm, lm) = (received(bt), received(lt));
        assert!(lm.len() >= bm.len(), "SUP-{n} lost messages");
        assert_eq!(bm, lm[..bm.len()], "SUP-{n}: messages differ");
        for m in &bm {
            assert!(
                m["raw"].as_str().is_some_and(|r| !r.is_empty()),
                "SUP-{n}: no raw bytes for {}",
                m["message_id"]
            );
        }
        let ids: Vec<&str> = bt["message_ids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .filter(|i| i.ends_with("@cust.test"))
            .collect();
        let have: Vec<&str> = bm.iter().filter_map(|m| m["message_id"].as_str()).collect();
        assert_eq!(ids, have, "SUP-{n}: message_ids without their records");
        if lm.len() == bm.len() {
            unchanged += 1;
            assert_eq!(
                without(bt, &["messages"]),
                without(lt, &["messages"]),
                "SUP-{n} differs from the live store"
            );
        }
    }
    assert!(unchanged > 0);

    // A daemon starts on the restored data dir and carries on numbering.
    let mut r2 = Daemon::start_custom(|port, _| config_yaml(port, &restored_data, sink.port(), ""));
    let next = format!("SUP-{}", n_tickets + 1);
    let (from, m) = (
        "after@cust.test".to_string(),
        mail(
            "after@cust.test",
            "after@cust.test",
            "after restore",
            "",
            "hi",
        ),
    );
    let rep = r2.deliver(&from, &["support@example.com"], &m);
    assert!(
        rep.len() == 1 && rep[0].starts_with("250") && rep[0].contains(&next),
        "{rep:?}"
    );

    // Restore refuses a running daemon and a non-empty data dir.
    let busy = r2.cli(&["restore", bdir.to_str().unwrap()]);
    assert!(!busy.status.success());
    assert!(text(&busy).contains("daemon is running"), "{}", text(&busy));
    r2.stop();
    let full = r2.cli(&["restore", bdir.to_str().unwrap()]);
    assert!(!full.status.success());
    assert!(text(&full).contains("not empty"), "{}", text(&full));
    r2.stop();

    // Offline backup of the stopped live desk holds everything.
    let odir = work.path().join("offline");
    let o = d.cli(&["backup", odir.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "offline backup: {}", text(&o));
    let om: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(om["counts"]["tickets"].as_u64(), Some(live.len() as u64));
    assert_eq!(
        om["counts"]["messages"].as_u64(),
        Some(live.values().map(|t| received(t).len() as u64).sum::<u64>())
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn flip_byte(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_damaged_or_unfinished_backup_is_refused_naming_the_file() {
    if sled_only(BACKUP_SLED_ONLY) {
        return;
    }
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    for n in 0..3 {
        let id = format!("dmg{n}@cust.test");
        d.deliver_ok(&id, &mail(&id, &id, "damage test", "", "Please help."));
    }
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good");
    d.cli_ok(&["backup", good.to_str().unwrap()]);
    d.stop();

    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "spool",
            Box::new(|b: &Path| flip_byte(&b.join("spool/00000001.spool"), 40)),
            "spool/00000001.spool",
        ),
        (
            "dump",
            Box::new(|b: &Path| flip_byte(&b.join("store.dump"), 100)),
            "store.dump",
        ),
        (
            "secret",
            Box::new(|b: &Path| flip_byte(&b.join("link-secret"), 3)),
            "link-secret",
        ),
        (
            "unfinished",
            Box::new(|b: &Path| std::fs::remove_file(b.join("manifest.json")).unwrap()),
            "no manifest.json",
        ),
    ];
    for (what, damage, named) in cases {
        let b = work.path().join(format!("bad-{what}"));
        copy_dir(&good, &b);
        damage(&b);
        let data = work.path().join(format!("data-{what}"));
        let cfg = restore_config(sink.port(), &data, work.path());
        let r = cli(&cfg, &["restore", b.to_str().unwrap()]);
        assert!(!r.status.success(), "{what}: restored a damaged backup");
        assert!(text(&r).contains(named), "{what}: {}", text(&r));
        assert!(!data.exists(), "{what}: a refused restore left {data:?}");
    }
    // The undamaged copy restores, so the refusals were about the damage.
    let data = work.path().join("data-good");
    let cfg = restore_config(sink.port(), &data, work.path());
    let r = cli(&cfg, &["restore", good.to_str().unwrap()]);
    assert!(r.status.success(), "{}", text(&r));
    let tickets: HashMap<u64, Value> = export(&cfg).into_iter().collect();
    assert_eq!(tickets.len(), 3);
}
