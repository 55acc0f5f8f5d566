//! `check-config` against the machine: listeners, relay, data directory,
//! templates, customer directory. The real binary, a recording SMTP sink
//! as the relay, and ports held by this test process as "another process".

mod common;

use common::sink::Sink;
use common::BIN;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

struct Run {
    ok: bool,
    out: String,
    _dir: tempfile::TempDir,
}

impl Run {
    /// Lines of one level (`ok`, `warn`, `FAIL`) about one key.
    fn lines(&self, level: &str, key: &str) -> Vec<&str> {
        self.out
            .lines()
            .filter(|l| {
                l.split_whitespace().next() == Some(level)
                    && l[level.len()..]
                        .trim_start()
                        .starts_with(&format!("{key}:"))
            })
            .collect()
    }
}

/// A sane desk: a free loopback listener, a fresh data directory, agents in
/// the team domain, one customer; `relay` and `extra` YAML vary.
fn check(lmtp_port: u16, relay: &str, extra: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let config: PathBuf = dir.path().join("postdesk.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        common::with_store(
            format!(
                r#"listen:
  lmtp: ["127.0.0.1:{lmtp_port}"]
data_dir: {data}
support:
  address: support@desk.test
team:
  domains: [desk.test]
  agents:
    - email: alice@desk.test
    - email: bob@desk.test
outbound:
  relay: {relay}
  timeout: 5s
{extra}"#,
                data = data.display(),
            ),
            &data,
        ),
    )
    .expect("write config");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()
        .expect("run postdesk check-config");
    Run {
        ok: out.status.success(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        _dir: dir,
    }
}

const CUSTOMERS: &str = r#"customers:
  - id: acme
    domains: [acme.test]
    addresses: [boss@acme-holding.test]
  - id: beta
    domains: [beta.test]
"#;

#[test]
fn a_good_config_with_a_live_relay_is_all_ok() {
    let sink = Sink::start_blocking();
    let r = check(free_port(), &sink.relay_url(), CUSTOMERS);
    assert!(r.ok, "{}", r.out);
    let checks: Vec<&str> = r
        .out
        .lines()
        // All but the totals line.
        .filter(|l| !l.contains(" ok, "))
        .collect();
    assert!(checks.len() >= 8, "one line per check:\n{}", r.out);
    for l in &checks {
        assert!(l.starts_with("ok "), "not ok: {l}\n{}", r.out);
    }
    for key in [
        "listen.lmtp",
        "listen.allow_remote",
        "outbound.relay",
        "data_dir",
        "templates",
        "customers",
        "team.agents",
    ] {
        assert_eq!(r.lines("ok", key).len(), 1, "{key}:\n{}", r.out);
    }
    // The relay was really spoken to: its greeting is shown.
    let relay = r.lines("ok", "outbound.relay")[0];
    assert!(relay.contains("220 sink.test"), "{relay}");
    assert!(r.out.contains(", 0 warn, 0 FAIL"), "{}", r.out);
}

#[test]
fn a_relay_nobody_listens_on_fails_with_the_fix() {
    let port = free_port();
    let r = check(free_port(), &format!("smtp://127.0.0.1:{port}"), "");
    assert!(!r.ok, "exit status must be non-zero:\n{}", r.out);
    let fail = r.lines("FAIL", "outbound.relay");
    assert_eq!(fail.len(), 1, "{}", r.out);
    assert!(
        fail[0].contains(&format!("127.0.0.1:{port}"))
            && fail[0].contains("start the relay")
            && fail[0].contains("correct outbound.relay"),
        "{}",
        fail[0]
    );
    // The rest is still checked and reported.
    assert_eq!(r.lines("ok", "data_dir").len(), 1, "{}", r.out);
}

#[test]
fn a_listener_port_held_by_another_process_fails() {
    let sink = Sink::start_blocking();
    // Another server on the port we want: it greets like one.
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = held.accept() {
            let _ = s.write_all(b"220 other.test ESMTP Exim\r\n");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    let r = check(port, &sink.relay_url(), "");
    let _ = server.join();
    assert!(!r.ok, "exit status must be non-zero:\n{}", r.out);
    let fail = r.lines("FAIL", "listen.lmtp");
    assert_eq!(fail.len(), 1, "{}", r.out);
    assert!(
        fail[0].contains(&format!("127.0.0.1:{port}"))
            && fail[0].contains("in use by another process")
            && fail[0].contains("220 other.test ESMTP Exim")
            && fail[0].contains("listen.lmtp"),
        "{}",
        fail[0]
    );
}

#[test]
fn a_public_provider_as_customer_domain_warns() {
    let sink = Sink::start_blocking();
    let r = check(
        free_port(),
        &sink.relay_url(),
        "customers:\n  - id: smallshop\n    domains: [gmail.com]\n",
    );
    // A warning is advice, not a failure.
    assert!(r.ok, "{}", r.out);
    let warn = r.lines("warn", "customers");
    assert_eq!(warn.len(), 1, "{}", r.out);
    assert!(
        warn[0].contains("gmail.com") && warn[0].contains("smallshop"),
        "{}",
        warn[0]
    );
}

#[test]
fn customers_claiming_the_same_domain_fail() {
    let sink = Sink::start_blocking();
    let r = check(
        free_port(),
        &sink.relay_url(),
        "customers:\n  - id: a\n    domains: [shared.test]\n  - id: b\n    domains: [Shared.test]\n",
    );
    assert!(!r.ok, "{}", r.out);
    let fail = r.lines("FAIL", "customers");
    assert_eq!(fail.len(), 1, "{}", r.out);
    assert!(
        fail[0].contains("shared.test is claimed by a and b"),
        "{}",
        fail[0]
    );
}
