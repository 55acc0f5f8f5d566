//! What postdesk exposes (SPEC §8): the LMTP listener stays on loopback
//! unless told otherwise, raw mail and the store are readable by the
//! service user only, and the log does not carry what customers wrote.

mod common;

use common::sink::{Mode, Sink};
use common::*;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SUPPORT: &str = "support@example.com";

/// Runs `serve` with `config`; its exit status and stderr once it exits,
/// or `None` if it was still running after `secs` (then it is killed).
fn serve_exits(config: &Path, secs: u64) -> Option<(std::process::ExitStatus, String)> {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn postdesk");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            return Some((st, err));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_non_loopback_listener_needs_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = config_yaml(port, &dir.path().join("data"), free_port(), "")
        .replace(&format!("127.0.0.1:{port}"), &format!("0.0.0.0:{port}"));
    assert!(yaml.contains("0.0.0.0:"), "{yaml}");
    let config = dir.path().join("postdesk.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let (status, err) = serve_exits(&config, 20).expect("serve must refuse, not run");
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains("listen.allow_remote"), "{err}");
    assert!(err.contains("0.0.0.0"), "names the address: {err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );

    // Said explicitly, it starts and takes mail.
    let yaml = yaml.replace(
        &format!("  lmtp: [\"0.0.0.0:{port}\"]\n"),
        &format!("  lmtp: [\"0.0.0.0:{port}\"]\n  allow_remote: true\n"),
    );
    assert!(yaml.contains("allow_remote: true"), "{yaml}");
    std::fs::write(&config, &yaml).unwrap();
    assert!(
        serve_exits(&config, 3).is_none(),
        "with listen.allow_remote: true, serve keeps running"
    );
    // And it serves (this time as the harness's daemon, same config).
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    d.stop();
    let yaml = config_yaml(d.port, &d.data_dir(), sink.port(), "").replace(
        &format!("  lmtp: [\"127.0.0.1:{}\"]\n", d.port),
        &format!("  lmtp: [\"0.0.0.0:{}\"]\n  allow_remote: true\n", d.port),
    );
    std::fs::write(&d.config, yaml).unwrap();
    d.restart();
    eventually(20, "ready on 0.0.0.0", || {
        d.log().contains(&format!("lmtp=0.0.0.0:{}", d.port))
    });
    d.deliver_ok(
        "remote@cust.test",
        &mail("remote@cust.test", "remote@cust.test", "Remote", "", "x"),
    );
}

/// Every path under `root` whose mode lets anyone but the owner in: files
/// must be 0600, directories 0700, sockets closed to group and others.
fn loose_modes(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let ft = meta.file_type();
        let ok = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            mode == 0o700
        } else if ft.is_file() {
            mode == 0o600
        } else if ft.is_socket() {
            mode & 0o077 == 0
        } else {
            false
        };
        if !ok {
            out.push(format!("{:o} {}", mode, p.display()));
        }
    }
    out.sort();
    out
}

/// Run under the loosest umask there is: the daemon must set its own.
#[test]
fn data_dir_is_private_whatever_the_umask() {
    // SAFETY: only changes this test process's file-creation mask, which
    // the daemon (and the CLI) inherit.
    let old = unsafe { libc::umask(0) };
    let sink = Sink::start_blocking();
    let mut d = Daemon::start(sink.port(), "");
    for n in 0..5 {
        d.deliver_ok(
            &format!("p{n}@cust.test"),
            &mail(
                &format!("priv{n}@cust.test"),
                &format!("p{n}@cust.test"),
                "Private",
                "",
                "My contract number is 12345.",
            ),
        );
    }
    sink.wait_for(10, Duration::from_secs(15));
    let data = d.data_dir();
    // On PostgreSQL the data dir holds the control socket and the lock, the
    // records are in the database; whatever is there must be private.
    if !on_postgres() {
        assert!(data.join("spool").is_dir() && data.join("store").is_dir());
    }
    assert_eq!(
        loose_modes(&data),
        Vec::<String>::new(),
        "while serving, under umask 0"
    );
    d.restart();
    d.deliver_ok(
        "p9@cust.test",
        &mail("priv9@cust.test", "p9@cust.test", "Private", "", "x"),
    );
    d.stop();
    // The CLI opens the store itself when no daemon runs.
    let out = d.cli_ok(&["ticket", "list", "--json"]);
    assert!(out.contains("priv9@cust.test"), "{out}");
    unsafe { libc::umask(old) };
    assert_eq!(
        loose_modes(&data),
        Vec::<String>::new(),
        "after a restart and the CLI on the store"
    );
}

/// The log says what happened to a mail, never what it said: a marker in
/// the body of every kind of mail (new, reply, malformed, base64, an
/// auto-reply, one whose ack the relay refuses) appears nowhere in it, in
/// text or JSON format.
#[test]
fn the_log_never_carries_a_mail_body() {
    for format in ["text", "json"] {
        let marker = format!("BODY-MARKER-{}-{format}", std::process::id());
        let sink = Sink::start_blocking();
        sink.set_mode(Mode::TempFailFirst(2));
        let d = Daemon::start(sink.port(), &format!("log:\n  format: {format}\n"));
        let body = format!("My password is {marker}, please reset it.");
        d.deliver_ok(
            "secret@cust.test",
            &mail("s1@cust.test", "secret@cust.test", "Reset", "", &body),
        );
        d.deliver_ok(
            "secret@cust.test",
            &mail(
                "s2@cust.test",
                "secret@cust.test",
                "Re: Reset",
                "In-Reply-To: <s1@cust.test>\r\n",
                &format!("> {body}\r\nStill {marker}"),
            ),
        );
        let broken = format!(
            "From: secret@cust.test\r\nSubject: broken\r\nMessage-ID: <s3@cust.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"nope\"\r\n\r\n--other\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
        );
        d.deliver_ok("secret@cust.test", broken.as_bytes());
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
        let encoded = format!(
            "From: other@cust.test\r\nSubject: encoded\r\nMessage-ID: <s4@cust.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n"
        );
        d.deliver_ok("other@cust.test", encoded.as_bytes());
        d.deliver_ok(
            "away@cust.test",
            &mail(
                "s5@cust.test",
                "away@cust.test",
                "Out of office",
                "Auto-Submitted: auto-replied\r\n",
                &body,
            ),
        );
        let r = d.deliver(
            "secret@cust.test",
            &[SUPPORT, "nobody@example.com"],
            &mail("s6@cust.test", "secret@cust.test", "Two rcpts", "", &body),
        );
        assert!(r[0].starts_with("250"), "{r:?}");
        // The acks and copies went out after two refusals (retry lines).
        sink.wait_for(6, Duration::from_secs(20));
        let log = d.log();
        assert!(log.contains("delivered") && log.contains("retry"), "{log}");
        assert!(
            sink.messages().iter().any(|m| m.text().contains(&marker)),
            "the marker did travel (team copy)"
        );
        assert!(
            !log.contains(&marker) && !log.contains(&b64),
            "{format} log carries a mail body:\n{log}"
        );
    }
}

/// The action-link secret never leaves its place (`data_dir/link-secret` on
/// sled, a row on PostgreSQL): not in the
/// log (text or JSON), not in `explain`, not in any mail sent (only
/// signatures derived from it are).
#[test]
fn the_link_secret_is_in_no_log_explain_or_mail() {
    use std::io::Write;
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), "commands:\n  trust: [signed_address]\n");
    d.deliver_ok(
        "s@cust.test",
        &mail("sec1@cust.test", "s@cust.test", "Secret?", "", "x"),
    );
    let ask = b"From: alice@example.com\r\nTo: support+report@example.com\r\nSubject: r\r\nMessage-ID: <sec2@example.com>\r\n\r\n\r\n";
    d.deliver("alice@example.com", &["support+report@example.com"], ask);
    eventually(15, "the report", || {
        sink.messages()
            .iter()
            .any(|m| m.header("X-Postdesk-Kind").as_deref() == Some("report"))
    });
    let secret = link_secret(&d.data_dir());
    assert_eq!(secret.len(), 32);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&secret)
    };
    let mut child = Command::new(BIN)
        .args(["--config", d.config.to_str().unwrap(), "explain", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(ask).unwrap();
    let explain = child.wait_with_output().unwrap();
    let mut seen: Vec<(String, Vec<u8>)> = vec![
        ("log".into(), d.log().into_bytes()),
        ("explain".into(), explain.stdout),
    ];
    for m in sink.messages() {
        seen.push((format!("mail to {:?}", m.rcpt_to), m.data.clone()));
    }
    for (what, bytes) in &seen {
        let text = String::from_utf8_lossy(bytes).to_lowercase();
        assert!(!text.contains(&hex), "{what} holds the secret in hex");
        assert!(
            !String::from_utf8_lossy(bytes).contains(&b64),
            "{what} holds the secret in base64"
        );
        assert!(
            !bytes.windows(32).any(|w| w == secret.as_slice()),
            "{what} holds the raw secret"
        );
    }
}
