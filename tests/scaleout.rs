//! Several postdesk nodes on one PostgreSQL database (issue #11): the real
//! binary, each node with its own `data_dir` and the same
//! `store.postgres.url`, coordinating only through the database.
//!
//! * The race tests send the two mails of a new thread (the first and a
//!   reply to it) and a redelivery of the first to different nodes at the
//!   same instant, many times: every round must end in ONE ticket holding
//!   both, the redelivered mail stored once.
//! * The kill test spreads LMTP load over three nodes, SIGKILLs one in the
//!   middle and checks what a user would: every `250` stored, no ticket
//!   doubled, every acknowledgement sent (repeats counted by Message-ID),
//!   every scheduled reminder fired once.
//! * The Postfix test puts the three nodes behind one Postfix as a list of
//!   `lmtp:` next-hops and kills the one Postfix uses.
//!
//! Needs `POSTDESK_TEST_PG=postgres://USER@HOST:PORT/` (a server where USER
//! may create databases; `psql` on the PATH): each test creates its own
//! database there and drops it at the end (kept when the test fails, or with
//! `POSTDESK_KEEP_DB=1`). Without the variable each test says SKIPPED and
//! passes. `POSTDESK_RACE_ROUNDS` (default 50) and `POSTDESK_KILL_ROUNDS`
//! (default 1) make longer local runs:
//! `POSTDESK_KILL_ROUNDS=10 cargo test --release --test scaleout -- --nocapture`.

mod common;
#[path = "common/postfix.rs"]
mod postfix;

use common::lmtp::{bare, token_in, Client, SUPPORT};
use common::sink::{Received, Sink};
use common::{eventually, free_port, mail, AUTH_OK, BIN};
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// ------------------------------------------------------------ database --

/// `POSTDESK_TEST_PG`, or `None` after saying why the test is skipped.
fn pg_server(test: &str) -> Option<String> {
    match std::env::var("POSTDESK_TEST_PG") {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            eprintln!(
                "{test}: SKIPPED, POSTDESK_TEST_PG is not set (a PostgreSQL server URL, \
                 e.g. postgres://postgres@127.0.0.1:5432/; scripts/pg.sh starts one)"
            );
            None
        }
    }
}

/// The same server URL naming database `db` (query parameters kept).
fn with_database(server: &str, db: &str) -> String {
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

/// `psql` from `POSTDESK_TEST_PG_BIN` (scripts/pg.sh sets it) or the PATH.
fn psql_bin() -> PathBuf {
    std::env::var_os("POSTDESK_TEST_PG_BIN")
        .map(|d| PathBuf::from(d).join("psql"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("psql"))
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(psql_bin())
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
        .unwrap_or_else(|e| panic!("cannot run psql (install postgresql-client): {e}"));
    assert!(
        out.status.success(),
        "psql {sql:?} on {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A database of this test's own, dropped at the end.
struct Db {
    server: String,
    name: String,
}

impl Db {
    fn create(test: &str, tag: &str) -> Option<Db> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let server = pg_server(test)?;
        let name = format!(
            "postdesk_scaleout_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        psql(
            &with_database(&server, "postgres"),
            &format!("CREATE DATABASE {name}"),
        );
        Some(Db { server, name })
    }

    fn url(&self) -> String {
        with_database(&self.server, &self.name)
    }

    fn sql(&self, q: &str) -> String {
        psql(&self.url(), q)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var("POSTDESK_KEEP_DB").as_deref() == Ok("1") {
            eprintln!("database kept: {}", self.url());
            return;
        }
        let _ = Command::new(psql_bin())
            .args(["-X", "-q", "-d"])
            .arg(with_database(&self.server, "postgres"))
            .arg("-c")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// --------------------------------------------------------------- nodes --

/// One postdesk node: its own data dir and LMTP port, the shared database.
struct Node {
    name: String,
    /// Holds the data dir, config and log until the node is dropped.
    _dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// The test desk of `common::config_yaml` (support@example.com, agents
/// alice and bob, staff commands trusted by Authentication-Results of
/// mx.example.com) on PostgreSQL.
fn node_yaml(port: u16, data: &Path, relay_port: u16, url: &str, extra: &str) -> String {
    format!(
        r#"listen:
  lmtp: ["127.0.0.1:{port}"]
data_dir: {data}
store:
  backend: postgres
  postgres:
    url: "{url}"
support:
  address: support@example.com
team:
  domains: [example.com]
  agents:
    - email: alice@example.com
      name: Alice
    - email: bob@example.com
  leads: [lead@example.com]
commands:
  trust: [authentication_results]
  authserv_id: mx.example.com
outbound:
  relay: smtp://127.0.0.1:{relay_port}
  retry_min: 200ms
{extra}"#,
        data = data.display()
    )
}

impl Node {
    fn new(name: &str, port: u16, url: &str, relay_port: u16, extra: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let config = dir.path().join("postdesk.yaml");
        std::fs::write(&config, node_yaml(port, &data, relay_port, url, extra))
            .expect("write config");
        let log = dir.path().join("postdesk.log");
        Node {
            name: name.to_string(),
            _dir: dir,
            config,
            port,
            child: None,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ready_count(&self) -> usize {
        self.log().matches("postdesk ready").count()
    }

    /// Starts the process; [`Node::wait_ready`] waits for it.
    fn launch(&mut self) -> usize {
        assert!(self.child.is_none(), "{} already runs", self.name);
        let before = self.ready_count();
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
        before
    }

    fn wait_ready(&mut self, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.ready_count() > before && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited early ({st}):\n{}", self.name, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not become ready:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
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
            panic!("{} did not stop on SIGTERM:\n{}", self.name, self.log());
        }
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run postdesk cli");
        assert!(
            out.status.success(),
            "postdesk {args:?} on {} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
    }

    fn tickets(&self) -> Vec<Value> {
        self.json(&["ticket", "list", "--json"])
            .as_array()
            .cloned()
            .expect("ticket list --json is an array")
    }

    fn show(&self, token: &str) -> Value {
        self.json(&["ticket", "show", token, "--json"])
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() || std::env::var("POSTDESK_E2E_LOGS").as_deref() == Ok("1") {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}

/// `n` nodes on one database, started at the same moment (so their schema
/// migrations race too), each ready before this returns.
fn start_nodes(n: usize, db: &Db, relay_port: u16, extra: &str) -> Vec<Node> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    start_nodes_on(&ports, db, relay_port, extra)
}

fn start_nodes_on(ports: &[u16], db: &Db, relay_port: u16, extra: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Node::new(&format!("node{i}"), *p, &db.url(), relay_port, extra))
        .collect();
    let before: Vec<usize> = nodes.iter_mut().map(Node::launch).collect();
    for (n, b) in nodes.iter_mut().zip(before) {
        n.wait_ready(b);
    }
    nodes
}

/// One mail on a session of its own; a `4xx` is retried (as an MTA would)
/// up to ten times. Returns the final reply and the retries it took.
fn deliver_retrying(port: u16, from: &str, data: &[u8]) -> (String, usize) {
    for retry in 0..10 {
        let mut c = Client::connect(port, "scaleout.test").expect("connect");
        let r = c.send(from, data).expect("send");
        c.quit();
        if !r.starts_with('4') {
            return (r, retry);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("<{from}>: still 4xx after 10 tries");
}

/// Message-ID (bare) → the tickets whose `message_ids` hold it.
fn where_stored(tickets: &[Value]) -> HashMap<String, Vec<String>> {
    let mut at: HashMap<String, Vec<String>> = HashMap::new();
    for t in tickets {
        let tok = t["token"].as_str().unwrap_or_default().to_string();
        for id in common::strs(&t["message_ids"]) {
            at.entry(id).or_default().push(tok.clone());
        }
    }
    at
}

/// How many received messages of a `ticket show --json` carry this
/// Message-ID (bare).
fn copies_in(show: &Value, id: &str) -> usize {
    show["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["kind"] != "generated")
                .filter(|m| m["message_id"].as_str().map(bare).as_deref() == Some(id))
                .count()
        })
        .unwrap_or(0)
}

fn of_kind(sink: &Sink, k: &str) -> Vec<Received> {
    sink.messages()
        .into_iter()
        .filter(|m| m.header("X-Postdesk-Kind").as_deref() == Some(k))
        .collect()
}

// ---------------------------------------------------------------- race --

#[derive(Debug, Default)]
struct RaceFigures {
    rounds: usize,
    /// Rounds whose ticket was started by the reply (it won the race).
    reply_first: usize,
    /// 4xx answers retried.
    retries: usize,
}

/// One round: A (new), B (reply to A) and A again, each on its own session
/// to its own node (A and its copy never to the same one), released by a
/// barrier after everything but the final dot is sent.
fn race_round(nodes: &[Node], tag: &str, r: usize) -> ([String; 3], usize) {
    let a_id = format!("{tag}.r{r}.a@cust.test");
    let b_id = format!("{tag}.r{r}.b@cust.test");
    let from = format!("c.{tag}.r{r}@cust.test");
    let a = mail(&a_id, &from, &format!("Race {r}"), "", "The first mail.");
    let b = mail(
        &b_id,
        &from,
        &format!("Re: Race {r}"),
        &format!("In-Reply-To: <{a_id}>\r\nReferences: <{a_id}>\r\n"),
        "And one more thing.",
    );
    let n = nodes.len();
    let a_node = r % n;
    let b_node = (r + 1) % n;
    let copy_node = if n >= 3 { (r + 2) % n } else { (r + 1) % n };
    let plan = [
        (a.clone(), nodes[a_node].port),
        (b, nodes[b_node].port),
        (a, nodes[copy_node].port),
    ];
    let barrier = Arc::new(Barrier::new(plan.len()));
    let handles: Vec<_> = plan
        .into_iter()
        .map(|(data, port)| {
            let (barrier, from) = (barrier.clone(), from.clone());
            std::thread::spawn(move || {
                let mut c = Client::connect(port, "scaleout.test").expect("connect");
                c.send_body(&from, &data).expect("send");
                barrier.wait();
                let first = c.finish().expect("reply to the final dot");
                c.quit();
                if first.starts_with('4') {
                    let (r, retries) = deliver_retrying(port, &from, &data);
                    (r, retries + 1)
                } else {
                    (first, 0)
                }
            })
        })
        .collect();
    let mut replies: Vec<String> = Vec::new();
    let mut retries = 0;
    for h in handles {
        let (r, n) = h.join().expect("race session");
        replies.push(r);
        retries += n;
    }
    let [ra, rb, rc]: [String; 3] = replies.try_into().expect("three replies");
    ([ra, rb, rc], retries)
}

fn race(test: &str, n: usize) {
    let Some(db) = Db::create(test, &format!("race{n}")) else {
        return;
    };
    let rounds = env_usize("POSTDESK_RACE_ROUNDS", 50);
    let sink = Sink::start_blocking();
    let nodes = start_nodes(n, &db, sink.port(), "");
    let tag = format!("race{n}");
    let mut f = RaceFigures::default();
    let mut replies = Vec::new();
    for r in 0..rounds {
        let (rs, retries) = race_round(&nodes, &tag, r);
        f.retries += retries;
        for x in &rs {
            assert!(x.starts_with("250"), "round {r}: {rs:?}");
        }
        replies.push(rs);
    }
    // What the desk holds, asked of the last node.
    let q = &nodes[n - 1];
    let tickets = q.tickets();
    let at = where_stored(&tickets);
    for (r, [ra, rb, rc]) in replies.iter().enumerate() {
        let a_id = format!("{tag}.r{r}.a@cust.test");
        let b_id = format!("{tag}.r{r}.b@cust.test");
        let ta = at.get(&a_id).cloned().unwrap_or_default();
        let tb = at.get(&b_id).cloned().unwrap_or_default();
        assert_eq!(ta.len(), 1, "round {r}: <{a_id}> is in tickets {ta:?}");
        assert_eq!(
            ta, tb,
            "round {r}: the first mail and its reply are in different tickets"
        );
        let tok = &ta[0];
        // Of the two deliveries of A, one stored it, the other was
        // recognised as the same message; both named to the sender.
        let dups = [ra, rc]
            .iter()
            .filter(|x| x.contains("(duplicate)"))
            .count();
        assert_eq!(dups, 1, "round {r}: A delivered twice: {ra:?} / {rc:?}");
        for x in [ra, rb, rc] {
            if !x.contains("(duplicate)") {
                assert_eq!(
                    token_in(x).as_deref(),
                    Some(tok.as_str()),
                    "round {r}: {x:?}, stored in {tok}"
                );
            }
        }
        let show = q.show(tok);
        assert_eq!(copies_in(&show, &a_id), 1, "round {r}: {tok} holds A");
        assert_eq!(copies_in(&show, &b_id), 1, "round {r}: {tok} holds B");
        if common::strs(&show["message_ids"]).first() == Some(&b_id) {
            f.reply_first += 1;
        }
        f.rounds += 1;
    }
    assert_eq!(tickets.len(), rounds, "one ticket per round, no more");
    // The database agrees with the CLI.
    assert_eq!(db.sql("SELECT count(*) FROM tickets"), rounds.to_string());
    eprintln!(
        "{test}: {n} nodes, {} rounds: {} tickets (one per round), the redelivery a duplicate every round, \
         {} rounds started by the reply, {} 4xx retried",
        f.rounds,
        tickets.len(),
        f.reply_first,
        f.retries
    );
}

#[test]
fn race_two_nodes_one_ticket_per_thread() {
    race("race_two_nodes_one_ticket_per_thread", 2);
}

#[test]
fn race_three_nodes_one_ticket_per_thread() {
    race("race_three_nodes_one_ticket_per_thread", 3);
}

// ---------------------------------------------------------------- kill --

const SESSIONS_PER_NODE: usize = 3;
/// Tickets taken before the load, whose reminders come due around the kill.
const REMINDED: usize = 4;

#[derive(Debug, Clone)]
struct Sent {
    id: String,
    from: String,
    /// The root's Message-ID for a reply; its own for a root.
    root: String,
    data: Vec<u8>,
    node: usize,
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

/// One session's stream: new tickets and now and then a reply to one of its
/// own, until `stop` or its node dies.
fn load_session(
    port: u16,
    node: usize,
    tag: String,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Vec<Sent>>>,
) {
    let Ok(mut c) = Client::connect(port, "scaleout.test") else {
        return;
    };
    let mut roots: Vec<(String, String)> = Vec::new();
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let (id, from, root, data) = match roots.get(n % roots.len().max(1)) {
            Some((root, from)) if n % 3 == 0 => {
                let id = format!("{tag}.n{n}.reply@cust.test");
                let data = mail(
                    &id,
                    from,
                    &format!("Re: {tag} mail"),
                    &format!("In-Reply-To: <{root}>\r\nReferences: <{root}>\r\n"),
                    "a reply",
                );
                (id, from.clone(), root.clone(), data)
            }
            _ => {
                let id = format!("{tag}.n{n}@cust.test");
                // One sender per ticket: the ack rate limit never applies.
                let from = format!("c.{tag}.n{n}@cust.test");
                let data = mail(
                    &id,
                    &from,
                    &format!("{tag} mail {n}"),
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
            node,
            first,
        });
        if res.is_err() {
            return;
        }
    }
    c.quit();
}

#[derive(Debug, Default)]
struct KillFigures {
    sent: usize,
    acked: usize,
    acked_by_victim: usize,
    lost: usize,
    resent: usize,
    unacked_but_stored: usize,
    tickets: usize,
    acks: usize,
    ack_repeats: usize,
    reminders: usize,
    /// Reminders the killed node sent before it died (the rest, by others).
    reminders_by_victim: usize,
    reminder_repeats: usize,
    kill_after_ms: Vec<u64>,
    /// Pending outbox entries and jobs leased to the node when it was
    /// killed: what the others took over.
    outbox_held_by_victim: usize,
    jobs_held_by_victim: usize,
}

/// Waits until the desk has nothing left to send: no pending outbox entry
/// (one the dead node had claimed is pending again once its lease lapses)
/// and nothing failed.
fn outbox_drained(q: &Node) -> bool {
    // Without --state: pending and failed entries.
    q.json(&["outbox", "list", "--json"])
        .as_array()
        .is_some_and(|a| a.is_empty())
}

fn kill_round(round: usize, rng: &mut impl Rng, f: &mut KillFigures) -> bool {
    let test = "sigkill_one_of_three_nodes_under_load_loses_nothing";
    let Some(db) = Db::create(test, &format!("kill{round}")) else {
        return false;
    };
    let sink = Sink::start_blocking();
    let mut nodes = start_nodes(3, &db, sink.port(), "policy:\n  reminder_after: 3s\n");
    let victim = round % 3;
    let survivor = (victim + 1) % 3;

    // Tickets an agent takes at once: each gets one reminder, due 3 s after
    // the ticket started, which is about when the kill comes.
    let mut reminded: Vec<(String, String)> = Vec::new();
    for i in 0..REMINDED {
        let id = format!("k{round}.remind{i}@cust.test");
        let from = format!("c.k{round}.remind{i}@cust.test");
        let m = mail(&id, &from, &format!("Remind me {i}"), "", "Please look.");
        let (r, _) = deliver_retrying(nodes[i % 3].port, &from, &m);
        let tok = token_in(&r).unwrap_or_else(|| panic!("no ticket in {r:?}"));
        let take = format!(
            "{AUTH_OK}From: alice@example.com\r\nTo: {SUPPORT}\r\nSubject: Re: Remind me {i} [{tok}]\r\n\
             Message-ID: <k{round}.take{i}@example.com>\r\nIn-Reply-To: <{id}>\r\nReferences: <{id}>\r\n\
             Date: Sun, 22 Nov 2026 11:00:00 +0200\r\n\r\n#take\r\n"
        );
        let (r, _) = deliver_retrying(
            nodes[(i + 1) % 3].port,
            "alice@example.com",
            take.as_bytes(),
        );
        assert!(r.starts_with("250"), "take of {tok}: {r}");
        reminded.push((tok, id));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..3 * SESSIONS_PER_NODE)
        .map(|s| {
            let node = s % 3;
            let (stop, sent, port) = (stop.clone(), sent.clone(), nodes[node].port);
            let tag = format!("k{round}.s{s}");
            std::thread::spawn(move || load_session(port, node, tag, stop, sent))
        })
        .collect();
    eventually(30, "a first 250", || {
        sent.lock().unwrap().iter().any(Sent::acked)
    });
    let delay = rng.gen_range(200..2500u64);
    f.kill_after_ms.push(delay);
    std::thread::sleep(Duration::from_millis(delay));
    // What the victim holds at the moment it dies: the rows the others
    // must take over (its lease, by its pid in `nodes`).
    let held = nodes[victim]
        .pid()
        .map(|pid| {
            db.sql(&format!(
                "SELECT (SELECT count(*) FROM outbox o JOIN nodes n ON n.id = o.lease_owner \
                 WHERE n.pid = {pid} AND o.state = 'pending'), \
                 (SELECT count(*) FROM jobs j JOIN nodes n ON n.id = j.lease_owner WHERE n.pid = {pid})"
            ))
        })
        .unwrap_or_default();
    nodes[victim].kill9();
    let mut held = held
        .split('|')
        .map(|v| v.trim().parse::<usize>().unwrap_or(0));
    f.outbox_held_by_victim += held.next().unwrap_or(0);
    f.jobs_held_by_victim += held.next().unwrap_or(0);
    // The other two keep taking load for a while.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("session thread");
    }
    let sent: Vec<Sent> = std::mem::take(&mut *sent.lock().unwrap());

    // The killed node stays down: what it had claimed (outbox entries,
    // reminders) must be taken over by the others. An MTA sends whatever
    // got no 250 again, to another next-hop.
    let q = &nodes[survivor];
    let mut dup = 0;
    let mut resent = 0;
    for m in sent.iter().filter(|m| !m.acked()) {
        let (r, _) = deliver_retrying(q.port, &m.from, &m.data);
        assert!(
            r.starts_with("250"),
            "round {round}: resend of <{}>: {r}",
            m.id
        );
        resent += 1;
        if r.contains("(duplicate)") {
            dup += 1;
        }
    }

    let tickets = q.tickets();
    let at = where_stored(&tickets);
    let mut lost = Vec::new();
    for m in &sent {
        let t = at.get(&m.id).cloned().unwrap_or_default();
        match t.len() {
            0 if m.acked() => lost.push(format!(
                "<{}> acked by node{} as {:?}",
                m.id, m.node, m.first
            )),
            0 => panic!(
                "round {round}: <{}> was resent and got 250 but is in no ticket",
                m.id
            ),
            1 => {}
            _ => panic!("round {round}: <{}> is in several tickets: {t:?}", m.id),
        }
        if m.acked() && t.len() == 1 && !m.first.contains("(duplicate)") {
            assert_eq!(
                token_in(&m.first).as_deref(),
                Some(t[0].as_str()),
                "round {round}: <{}> got {:?} but is stored in {}",
                m.id,
                m.first,
                t[0]
            );
        }
    }
    assert!(
        lost.is_empty(),
        "round {round}: {} acknowledged mail(s) lost after SIGKILL of node{victim} at {delay} ms:\n{}",
        lost.len(),
        lost.join("\n")
    );
    let roots: Vec<&Sent> = sent.iter().filter(|m| m.is_root()).collect();
    let ticket_of = |id: &str| at.get(id).and_then(|v| v.first()).cloned();
    // No ticket doubled: each root in its own ticket, each reply with its
    // root, and no ticket beyond those.
    let root_tickets: HashSet<String> = roots.iter().filter_map(|r| ticket_of(&r.id)).collect();
    assert_eq!(
        root_tickets.len(),
        roots.len(),
        "round {round}: roots share tickets"
    );
    for m in sent.iter().filter(|m| !m.is_root()) {
        assert_eq!(
            ticket_of(&m.id),
            ticket_of(&m.root),
            "round {round}: reply <{}> is not in the ticket of <{}>",
            m.id,
            m.root
        );
    }
    assert_eq!(
        tickets.len(),
        roots.len() + REMINDED,
        "round {round}: one ticket per new mail"
    );
    // Every message stored once, in the database itself.
    let doubled = db.sql(
        "SELECT count(*) FROM (SELECT message_id FROM messages GROUP BY message_id HAVING count(*) > 1) d",
    );
    assert_eq!(doubled, "0", "round {round}: a Message-ID stored twice");

    // Every acknowledgement goes out at least once, naming the right ticket.
    let want: BTreeMap<String, String> = roots
        .iter()
        .map(|r| (r.id.clone(), ticket_of(&r.id).unwrap_or_default()))
        .chain(reminded.iter().map(|(tok, id)| (id.clone(), tok.clone())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got: HashSet<String> = of_kind(&sink, "ack")
            .iter()
            .filter_map(|a| a.header("In-Reply-To").map(|v| bare(&v)))
            .collect();
        let reminders: HashSet<String> = of_kind(&sink, "reminder")
            .iter()
            .filter_map(|m| m.header("X-Postdesk-Ticket"))
            .collect();
        let missing: Vec<&String> = want.keys().filter(|id| !got.contains(*id)).collect();
        let unreminded: Vec<&String> = reminded
            .iter()
            .map(|(t, _)| t)
            .filter(|t| !reminders.contains(*t))
            .collect();
        if missing.is_empty() && unreminded.is_empty() && outbox_drained(q) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: after 90 s, no acknowledgement for {} ticket(s) (e.g. {:?}), \
             no reminder for {unreminded:?}, outbox drained: {}",
            missing.len(),
            missing.first(),
            outbox_drained(q)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A repeat of something the dead node was sending comes after its lease
    // lapsed; the outbox is drained by then. Let a last one land.
    std::thread::sleep(Duration::from_millis(1000));
    let mut per_ack: HashMap<String, usize> = HashMap::new();
    for a in of_kind(&sink, "ack") {
        let root = bare(&a.header("In-Reply-To").unwrap_or_default());
        let named = a.header("X-Postdesk-Ticket").unwrap_or_default();
        assert_eq!(
            want.get(&root),
            Some(&named),
            "round {round}: ack for <{root}> names {named}"
        );
        *per_ack
            .entry(a.header("Message-ID").unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        per_ack.len(),
        want.len(),
        "round {round}: one acknowledgement (one Message-ID) per ticket"
    );
    // Each reminder fired once: one reminder Message-ID per taken ticket
    // (the same one again is the outbox's at-least-once, counted apart).
    let mut per_reminder: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for m in of_kind(&sink, "reminder") {
        *per_reminder
            .entry(m.header("X-Postdesk-Ticket").unwrap_or_default())
            .or_default()
            .entry(m.header("Message-ID").unwrap_or_default())
            .or_default() += 1;
    }
    for (tok, _) in &reminded {
        let ids = per_reminder.get(tok).cloned().unwrap_or_default();
        assert_eq!(ids.len(), 1, "round {round}: {tok} reminded as {ids:?}");
    }
    assert_eq!(
        per_reminder.len(),
        REMINDED,
        "round {round}: reminders only for the taken tickets: {per_reminder:?}"
    );

    f.sent += sent.len();
    f.acked += sent.iter().filter(|m| m.acked()).count();
    f.acked_by_victim += sent
        .iter()
        .filter(|m| m.acked() && m.node == victim)
        .count();
    f.lost += lost.len();
    f.resent += resent;
    f.unacked_but_stored += dup;
    f.tickets += tickets.len();
    f.acks += per_ack.len();
    f.ack_repeats += per_ack.values().map(|n| n - 1).sum::<usize>();
    f.reminders += REMINDED;
    f.reminders_by_victim += nodes[victim]
        .log()
        .lines()
        .filter(|l| l.contains(" sent ") && l.contains("kind=reminder"))
        .count();
    f.reminder_repeats += per_reminder
        .values()
        .flat_map(|m| m.values())
        .map(|n| n - 1)
        .sum::<usize>();
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != victim {
            n.stop();
        }
    }
    true
}

#[test]
fn sigkill_one_of_three_nodes_under_load_loses_nothing() {
    let rounds = env_usize("POSTDESK_KILL_ROUNDS", 1);
    let seed: u64 = std::env::var("POSTDESK_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = KillFigures::default();
    for r in 0..rounds {
        if !kill_round(r, &mut rng, &mut f) {
            return;
        }
        eprintln!("scaleout kill: round {} done ({f:?})", r + 1);
    }
    eprintln!(
        "scaleout kill: {rounds} round(s), POSTDESK_KILL_SEED={seed}, a node SIGKILLed {:?} ms after the first 250: \
         lost {} of {} acked ({} acked by the killed node; {} sent; {} resent, {} of them already stored); \
         the killed node held {} pending outbox entries and {} jobs when it died; \
         {} tickets, doubled 0; {} acks, {} ack repeats; {} reminders fired once each ({} sent by the killed node before it died), {} reminder repeats",
        f.kill_after_ms,
        f.lost,
        f.acked,
        f.acked_by_victim,
        f.sent,
        f.resent,
        f.unacked_but_stored,
        f.outbox_held_by_victim,
        f.jobs_held_by_victim,
        f.tickets,
        f.acks,
        f.ack_repeats,
        f.reminders,
        f.reminders_by_victim,
        f.reminder_repeats
    );
}

// ------------------------------------------------------------- Postfix --

/// Submits every message over one SMTP session to Postfix.
const SUBMIT_MANY_PY: &str = r#"
import smtplib, sys, os
port, sender, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = smtplib.SMTP('127.0.0.1', port)
s.ehlo()
for name in sorted(os.listdir(folder)):
    data = open(os.path.join(folder, name), 'rb').read()
    s.sendmail(sender, ['support@example.com'], data)
s.quit()
"#;

fn submit_many(pf: &postfix::Postfix, from: &str, mails: &[Vec<u8>]) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, m) in mails.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:05}.eml")), m).expect("write mail");
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(SUBMIT_MANY_PY)
        .arg(pf.smtp_port.to_string())
        .arg(from)
        .arg(dir.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "submission failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Postfix delivering the support address to three nodes, given as one
/// list of `lmtp:` next-hops: all accepted mail is stored once, also after
/// the next-hop Postfix uses first is SIGKILLed in the middle (Postfix goes
/// on to the next one in the list, or retries the deferred mail).
#[test]
fn postfix_with_three_lmtp_next_hops_stores_everything_when_one_dies() {
    let test = "postfix_with_three_lmtp_next_hops_stores_everything_when_one_dies";
    let Some(db) = Db::create(test, "postfix") else {
        return;
    };
    let mut pf = postfix::Postfix::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = start_nodes_on(&ports, &db, pf.relay_port, "");
    // No `inet:` prefix: Postfix 3.7 strips it from the whole next-hop
    // field once, not from each entry, and an lmtp(8) given
    // `…, inet:127.0.0.1:P` dies with "valid hostname or network address
    // required". A bare `[address]:port` is TCP anyway.
    let transport = format!(
        "lmtp:{}",
        ports
            .iter()
            .map(|p| format!("[127.0.0.1]:{p}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    pf.start_transport(&transport);

    let batch = |b: usize, n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let id = format!("pf.b{b}.m{i}@cust.test");
                let m = mail(
                    &id,
                    "Mari Maasikas <mari@cust.test>",
                    &format!("Postfix batch {b} mail {i}"),
                    "",
                    "Hello,\r\nthe printer on floor 2 prints nothing.\r\n",
                );
                (id, m)
            })
            .collect()
    };
    let first = batch(1, 80);
    let second = batch(2, 20);
    submit_many(
        &pf,
        "mari@cust.test",
        &first.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
    );
    // Kill the first next-hop while Postfix is delivering to it.
    let q = &nodes[1];
    eventually(60, "a first few mails stored", || q.tickets().len() >= 5);
    nodes[0].kill9();
    let q = &nodes[1];
    submit_many(
        &pf,
        "mari@cust.test",
        &second.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
    );
    let all: Vec<&String> = first.iter().chain(&second).map(|(id, _)| id).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let at = where_stored(&q.tickets());
        let missing: Vec<&&String> = all.iter().filter(|id| !at.contains_key(**id)).collect();
        if missing.is_empty() && pf.queue().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s, {} mail(s) not stored (e.g. <{}>), {} still in Postfix's queue",
            missing.len(),
            missing.first().map(|s| s.as_str()).unwrap_or(""),
            pf.queue().len()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let tickets = q.tickets();
    let at = where_stored(&tickets);
    assert_eq!(tickets.len(), all.len(), "one ticket per mail");
    for id in &all {
        let t = &at[*id];
        assert_eq!(t.len(), 1, "<{id}> in {t:?}");
        assert_eq!(copies_in(&q.show(&t[0]), id), 1, "<{id}> stored once");
    }
    // After the kill, the other next-hops took the mail: every mail of the
    // second batch was delivered by node1 or node2 (their own logs; Postfix's
    // `relay=` names the first next-hop even for a cached session to
    // another).
    let delivered = |n: &Node| {
        n.log()
            .lines()
            .filter(|l| l.contains(" delivered "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let per_node: Vec<Vec<String>> = nodes.iter().map(delivered).collect();
    for (id, _) in &second {
        let needle = format!("message_id=<{id}>");
        assert!(
            per_node[1..].iter().flatten().any(|l| l.contains(&needle)),
            "<{id}> (sent after the kill) was not delivered by node1 or node2"
        );
    }
    let (n0, n1, n2) = (per_node[0].len(), per_node[1].len(), per_node[2].len());
    let log = pf.log();
    let deferred = log
        .lines()
        .filter(|l| l.contains("to=<support@example.com>") && l.contains("status=deferred"))
        .count();
    let cut = log
        .lines()
        .filter(|l| l.contains("lost connection") && l.contains("[127.0.0.1]"))
        .count();
    eprintln!(
        "{test}: {} mails accepted by Postfix, all stored once in {} tickets; delivered via node0 {n0}, \
         node1 {n1}, node2 {n2}; {cut} LMTP sessions cut by the kill, {deferred} deliveries deferred and retried",
        all.len(),
        tickets.len()
    );
    for n in nodes.iter_mut().skip(1) {
        n.stop();
    }
}
