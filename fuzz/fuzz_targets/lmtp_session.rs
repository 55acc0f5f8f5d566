//! Arbitrary bytes from an LMTP client into one real session
//! (`lmtp::session::run_session`) over an in-memory duplex, with a fake
//! handler. Both halves are driven until the session ends, on a paused
//! clock: timeouts fire as soon as everything waits, so a run never hangs
//! and is deterministic.
//!
//! Input: the client's bytes. An optional prefix `0xFF N M` splits them
//! into writes of `N` bytes (0 → 1) and fires shutdown after `M` writes
//! (0 → never), to reach the split-read and shutdown paths.
//!
//! Checked besides "no panic, no hang":
//! - the server's output is CRLF lines, each a reply code (`ddd ` or
//!   `ddd-`), at most 512 octets (RFC 5321 §4.5.3.1.5), greeting first;
//! - no more reply lines than the input can ask for (no amplification);
//! - what reaches the handler respects every limit: size, line length,
//!   header block, recipients.

#![no_main]

use libfuzzer_sys::fuzz_target;
use postdesk::ingest::Envelope;
use postdesk::lmtp::session::{run_session, Settings};
use postdesk::lmtp::{BoxFuture, Handler, Outcome};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_INPUT: usize = 64 * 1024;

fn settings() -> Settings {
    Settings {
        hostname: "mx.fuzz".into(),
        // Small, so that short inputs reach every limit.
        max_message_size: 1024,
        max_line_length: 100,
        max_header_size: 300,
        max_recipients: 4,
        idle_timeout: Duration::from_secs(30),
        session_timeout: Duration::from_secs(600),
        max_sessions: 1,
    }
}

/// Refuses recipients starting with `n`; answers 451 for some messages.
struct Fake {
    settings: Settings,
}

impl Handler for Fake {
    fn check_rcpt(&self, rcpt: &str) -> Result<(), String> {
        if rcpt.starts_with(['n', 'N']) {
            Err(format!("not a support address: {rcpt}"))
        } else {
            Ok(())
        }
    }

    fn deliver(&self, env: Envelope, raw: Vec<u8>) -> BoxFuture<'_, Outcome> {
        let s = &self.settings;
        assert!(
            raw.len() as u64 <= s.max_message_size,
            "handed a message of {} bytes over the {} limit",
            raw.len(),
            s.max_message_size
        );
        assert!(
            !env.rcpt_to.is_empty() && env.rcpt_to.len() <= s.max_recipients,
            "handed {} recipients",
            env.rcpt_to.len()
        );
        let mut header = 0usize;
        let mut in_body = false;
        for line in raw.split_inclusive(|&b| b == b'\n') {
            let content = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            assert!(
                content.len() <= s.max_line_length,
                "handed a line of {} bytes",
                content.len()
            );
            if !in_body {
                if content.is_empty() && line.ends_with(b"\n") {
                    in_body = true;
                } else {
                    header += line.len();
                }
            }
        }
        assert!(
            header <= s.max_header_size,
            "handed a header block of {header} bytes"
        );
        let fail = raw.len() % 7 == 3;
        Box::pin(async move {
            // A delivery takes a moment; the session must wait for it.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if fail {
                Outcome::TempFail {
                    reason: "fuzz: store fault".into(),
                }
            } else {
                Outcome::Stored { id: "SUP-1".into() }
            }
        })
    }
}

fn check_replies(out: &[u8], input: &[u8]) {
    if out.is_empty() {
        return;
    }
    assert!(out.ends_with(b"\r\n"), "output does not end in CRLF");
    let lines: Vec<&[u8]> = out[..out.len() - 2].split(|&b| b == b'\n').collect();
    assert!(lines[0].starts_with(b"220 "), "no greeting first");
    for l in &lines {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        assert!(
            l.len() >= 4 && l[..3].iter().all(u8::is_ascii_digit) && (l[3] == b' ' || l[3] == b'-'),
            "not a reply line: {:?}",
            String::from_utf8_lossy(l)
        );
        assert!(!l.contains(&b'\r'), "bare CR inside a reply line");
        assert!(
            l.len() + 2 <= 512,
            "reply line of {} octets: {:?}",
            l.len() + 2,
            String::from_utf8_lossy(l)
        );
    }
    // Every input line gets at most one reply, LHLO six lines, a final dot
    // one per recipient; plus the greeting and a closing 421.
    let input_lines = input.iter().filter(|&&b| b == b'\n').count();
    assert!(
        lines.len() <= 6 * (input_lines + 1) + 2,
        "{} reply lines for {input_lines} input lines",
        lines.len()
    );
}

async fn drive(data: &[u8]) {
    let (chunk, fire_after, input) = match data {
        [0xff, n, m, rest @ ..] => ((*n as usize).max(1), *m as usize, rest),
        _ => (usize::MAX, 0, data),
    };
    let settings = settings();
    let handler = Fake {
        settings: settings.clone(),
    };
    let (trigger, shutdown) = postdesk::shutdown::channel();
    let (client, server) = tokio::io::duplex(4096);
    let (mut rd, mut wr) = tokio::io::split(client);

    let session = run_session(server, "fuzz", &settings, &handler, shutdown);
    let writer = async {
        for (i, c) in input.chunks(chunk).enumerate() {
            if fire_after != 0 && i == fire_after {
                trigger.fire();
            }
            if wr.write_all(c).await.is_err() {
                return; // the server closed
            }
            tokio::task::yield_now().await;
        }
        let _ = wr.shutdown().await;
    };
    let reader = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let all = async { tokio::join!(session, writer, reader) };
    // Virtual time: a day is instant unless something spins or deadlocks.
    let (_, _, out) = tokio::time::timeout(Duration::from_secs(86_400), all)
        .await
        .expect("the session did not end");
    check_replies(&out, input);
    drop(trigger);
}

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(drive(data));
});
