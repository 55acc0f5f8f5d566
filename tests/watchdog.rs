//! systemd's watchdog, with the test acting as systemd: it owns the
//! NOTIFY_SOCKET, sets WATCHDOG_USEC and WATCHDOG_PID as systemd does, reads
//! READY=1 and the keep-alives, and when they stop it does what systemd does
//! (SIGABRT, start again).

mod common;

use common::sink::Sink;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// WATCHDOG_USEC given to the daemon: keep-alives are due every half.
const WATCHDOG: Duration = Duration::from_secs(2);

type Heard = Arc<Mutex<Vec<(Instant, String)>>>;

/// The service manager's end of NOTIFY_SOCKET: every datagram, timed.
fn listen(path: &Path) -> Heard {
    let sock = UnixDatagram::bind(path).expect("bind notify socket");
    let heard: Heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            h.lock().unwrap().push((Instant::now(), msg));
        }
    });
    heard
}

fn count(heard: &Heard, what: &str, after: Instant) -> usize {
    heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, m)| *t > after && m.lines().any(|l| l == what))
        .count()
}

/// Starts `postdesk serve` as systemd would: WATCHDOG_PID is the service's
/// own pid, so a shell puts its `$$` there and execs the daemon in place.
fn start(bin: &Path, config: &Path, notify: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new("sh")
        .arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$@""#)
        .arg(bin)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn postdesk")
}

fn wait_ready(heard: &Heard, since: Instant, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(heard, "READY=1", since) == 0 {
        assert!(
            Instant::now() < deadline,
            "no READY=1:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_wedged_ingest_path_stops_the_keepalives_and_a_restart_stores_the_retry_once() {
    let sink = Sink::start_blocking();
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let port = free_port();
    let config = dir.path().join("postdesk.yaml");
    // The store's own wedge exit (limits.commit_timeout) must not come
    // first: this is about the watchdog noticing.
    std::fs::write(
        &config,
        config_yaml(port, &data, sink.port(), "limits:\n  commit_timeout: 10m\n"),
    )
    .unwrap();
    let notify = dir.path().join("notify.sock");
    let log = dir.path().join("postdesk.log");
    let heard = listen(&notify);
    // The restart must run the very binary that was started (a shared
    // target dir may be rebuilt by another checkout meanwhile).
    let bin = dir.path().join("postdesk");
    std::fs::copy(BIN, &bin).unwrap();
    let t_start = Instant::now();
    let mut child = start(&bin, &config, &notify, &log);
    let logtext = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_ready(&heard, t_start, &log);

    // Healthy: regular keep-alives, never a gap as long as WATCHDOG_USEC.
    let t_ready = Instant::now();
    std::thread::sleep(WATCHDOG * 3);
    let pings: Vec<Instant> = heard
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, m)| *t > t_ready && m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    assert!(pings.len() >= 3, "keep-alives: {pings:?}\n{}", logtext());
    for w in pings.windows(2) {
        assert!(w[1] - w[0] < WATCHDOG, "a gap of {:?}", w[1] - w[0]);
    }

    // Wedge the committer and deliver: the mail sits in a stalled batch.
    let stall = data.join(postdesk::store::STALL_FILE);
    std::fs::write(&stall, b"").unwrap();
    let from = "wedge@cust.test".to_string();
    let m = mail("wedge1@cust.test", &from, "Stuck?", "", "Please help.");
    let (f2, m2) = (from.clone(), m.clone());
    let client = std::thread::spawn(move || {
        let mut l = Lmtp::connect(port);
        l.send(&f2, &["support@example.com"], &m2)
    });
    std::thread::sleep(Duration::from_millis(300));
    let t_wedged = Instant::now();
    // Within two keep-alive periods the pings stop, and stay stopped for
    // longer than systemd would wait, while the process runs on.
    std::thread::sleep(WATCHDOG * 3);
    let late = count(&heard, "WATCHDOG=1", t_wedged + WATCHDOG);
    assert_eq!(late, 0, "keep-alives went on while wedged:\n{}", logtext());
    assert!(
        child.try_wait().unwrap().is_none(),
        "postdesk exited by itself; the watchdog was to notice:\n{}",
        logtext()
    );
    assert!(
        logtext().contains("did not answer a probe in time"),
        "{}",
        logtext()
    );

    // What systemd does on a missed keep-alive: SIGABRT, then start again.
    let st = Command::new("kill")
        .arg("-ABRT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
    let _ = child.wait();
    let replies = client.join().unwrap_or_default();
    assert!(
        !replies.iter().any(|r| r.starts_with("250")),
        "acknowledged while wedged: {replies:?}"
    );
    std::fs::remove_file(&stall).unwrap();
    let t_again = Instant::now();
    let mut child = start(&bin, &config, &notify, &log);
    wait_ready(&heard, t_again, &log);

    // The MTA's retry is stored, once; keep-alives are back.
    let mut l = Lmtp::connect(port);
    let r = l.send(&from, &["support@example.com"], &m);
    l.quit();
    assert!(r.len() == 1 && r[0].starts_with("250"), "{r:?}");
    let out = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["ticket", "list", "--json"])
        .output()
        .unwrap();
    let tickets: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tickets = tickets.as_array().unwrap();
    assert_eq!(tickets.len(), 1, "{tickets:?}");
    assert_eq!(
        tickets[0]["message_ids"],
        serde_json::json!(["wedge1@cust.test"])
    );
    std::thread::sleep(WATCHDOG * 2);
    assert!(
        count(&heard, "WATCHDOG=1", t_again) >= 2,
        "no keep-alives after the restart: {:?}\n{}",
        heard
            .lock()
            .unwrap()
            .iter()
            .rev()
            .take(5)
            .collect::<Vec<_>>(),
        logtext()
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
