//! Hostile and broken input against the real daemon (SPEC §8): every limit
//! refused with its enhanced code, the session still usable after, odd bytes
//! stored or refused cleanly, slow and idle clients dropped, too many
//! connections turned away, deep MIME and decompression bombs stored without
//! blowing up memory. Every test ends by delivering a normal mail to the same
//! daemon and reporting its peak RSS (`cargo test --test hostile --
//! --nocapture` prints the figures).

mod common;

use common::sink::Sink;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUPPORT: &str = "support@example.com";

/// Far above what a delivery agent holding one 40 MB message needs, far below
/// what decompressing the gzip bomb (1 GB) or keeping every message would.
const MAX_PEAK_RSS_KB: u64 = 500 * 1024;

// --- the daemon's side -------------------------------------------------------

/// The daemon's pid: the harness keeps its `Child` private, so find the
/// process whose command line names this daemon's (unique, temporary) config.
fn daemon_pid(d: &Daemon) -> u32 {
    let config = d.config.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.contains(&config) && args.iter().any(|a| a == "serve") {
            found.push(pid);
        }
    }
    assert_eq!(
        found.len(),
        1,
        "postdesk serve processes for {config}: {found:?}"
    );
    found[0]
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("postdesk (pid {pid}) is gone: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"))
}

/// After the abuse: the same process is still running, delivers a normal
/// mail into a new ticket, and its peak RSS stayed within bounds.
fn survives(d: &Daemon, what: &str) {
    let pid = daemon_pid(d);
    let id = format!("after-{what}@cust.test");
    let before = d.tickets().len();
    d.deliver_ok(
        "mari@cust.test",
        &mail(&id, "mari@cust.test", "Still there?", "", "Hello again."),
    );
    assert!(
        d.ticket_of(&id).is_some(),
        "the normal mail after {what} has no ticket"
    );
    assert_eq!(d.tickets().len(), before + 1);
    assert_eq!(daemon_pid(d), pid, "postdesk was restarted?");
    let peak = peak_rss_kb(pid);
    println!(
        "hostile/{what}: postdesk peak RSS (VmHWM) {:.1} MiB",
        peak as f64 / 1024.0
    );
    assert!(
        peak < MAX_PEAK_RSS_KB,
        "{what}: peak RSS {peak} kB over {MAX_PEAK_RSS_KB} kB"
    );
}

// --- a raw client ------------------------------------------------------------

/// Raw TCP, so the tests can send what no well-behaved client would.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect LMTP");
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let w = s.try_clone().expect("clone stream");
        Raw {
            r: BufReader::new(s),
            w,
        }
    }

    /// Connects, reads the greeting and says LHLO.
    fn hello(port: u16) -> Raw {
        let mut c = Raw::connect(port);
        assert_code(&c.line(), "220 ");
        c.send(b"LHLO hostile.test\r\n");
        while c.line().starts_with("250-") {}
        c
    }

    fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).expect("write to postdesk");
    }

    /// One reply line without its CRLF; "" once the server has closed.
    fn line(&mut self) -> String {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).expect("read reply");
        let l = String::from_utf8(l).expect("replies are UTF-8");
        assert!(l.is_empty() || l.ends_with("\r\n"), "reply not CRLF: {l:?}");
        // RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, CRLF included.
        assert!(l.len() <= 512, "reply line of {} octets: {l:?}", l.len());
        l.trim_end_matches("\r\n").to_string()
    }

    fn cmd(&mut self, c: &str) -> String {
        self.send(format!("{c}\r\n").as_bytes());
        self.line()
    }

    /// MAIL, one RCPT and DATA, each expected to be accepted.
    fn open_data(&mut self, from: &str, rcpts: &[&str]) {
        assert_code(&self.cmd(&format!("MAIL FROM:<{from}>")), "250 2.1.0");
        for r in rcpts {
            assert_code(&self.cmd(&format!("RCPT TO:<{r}>")), "250 2.1.5");
        }
        assert_code(&self.cmd("DATA"), "354 ");
    }

    /// A whole transaction of `data` (CRLF, dot-stuffed here); returns the
    /// reply to the final dot for each recipient.
    fn transaction(&mut self, rcpts: &[&str], data: &[u8]) -> Vec<String> {
        self.open_data("sender@cust.test", rcpts);
        self.send(&dot_stuff(data));
        self.send(b".\r\n");
        rcpts.iter().map(|_| self.line()).collect()
    }

    /// After an accepted MAIL: one RCPT, DATA and a small message.
    fn transaction_after_mail(&mut self) -> String {
        assert_code(&self.cmd(&format!("RCPT TO:<{SUPPORT}>")), "250 2.1.5");
        assert_code(&self.cmd("DATA"), "354 ");
        self.send(b"Subject: odd envelope\r\n\r\nhi\r\n.\r\n");
        self.line()
    }
}

fn assert_code(line: &str, code: &str) {
    assert!(line.starts_with(code), "expected `{code}…`, got {line:?}");
}

/// A well-formed reply: three digits, then (for 2xx/4xx/5xx after the
/// greeting) an enhanced status code of the same class.
fn assert_clean_reply(line: &str) {
    let b = line.as_bytes();
    assert!(
        b.len() > 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ',
        "not a reply line: {line:?}"
    );
    if b[0] != b'3' {
        let enhanced = line[4..].split(' ').next().unwrap_or("");
        let parts: Vec<&str> = enhanced.split('.').collect();
        assert!(
            parts.len() == 3
                && parts[0].as_bytes() == [b[0]]
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())),
            "no enhanced status code of class {}: {line:?}",
            b[0] as char
        );
    }
}

fn start(extra: &str) -> (Sink, Daemon) {
    let sink = Sink::start_blocking();
    let d = Daemon::start(sink.port(), extra);
    (sink, d)
}

/// Small limits so the tests stay cheap; each is still far above real mail.
const SMALL_LIMITS: &str = "limits:
  max_message_size: 1048576
  max_header_size: 524288
  max_line_length: 262144
";

/// `lines` lines of `width` bytes each (CRLF after each).
fn lines(width: usize, lines: usize, byte: u8) -> Vec<u8> {
    let mut line = vec![byte; width];
    line.extend_from_slice(b"\r\n");
    line.repeat(lines)
}

fn headers(id: &str) -> String {
    format!(
        "From: sender@cust.test\r\nTo: {SUPPORT}\r\nMessage-ID: <{id}>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0200\r\n"
    )
}

// --- the tests ---------------------------------------------------------------

#[test]
fn oversized_message_is_552_at_mail_or_after_the_dot_and_the_session_goes_on() {
    let (_sink, d) = start(SMALL_LIMITS);
    let mut c = Raw::hello(d.port);

    // Declared: refused before a byte of the message is sent.
    let r = c.cmd("MAIL FROM:<big@cust.test> SIZE=2000000");
    assert_eq!(
        r,
        "552 5.3.4 Declared size 2000000 exceeds the maximum message size of 1048576 bytes"
    );

    // Not declared, or declared small and then a lie: read to the final dot,
    // then 552 for every accepted recipient, in step with the client.
    for mail_cmd in [
        "MAIL FROM:<big@cust.test>",
        "MAIL FROM:<big@cust.test> SIZE=1000",
    ] {
        assert_code(&c.cmd(mail_cmd), "250 2.1.0");
        assert_code(&c.cmd(&format!("RCPT TO:<{SUPPORT}>")), "250 2.1.5");
        assert_code(&c.cmd("RCPT TO:<support+billing@example.com>"), "250 2.1.5");
        assert_code(&c.cmd("DATA"), "354 ");
        let mut msg = headers("big@cust.test").into_bytes();
        msg.extend_from_slice(b"Subject: big\r\n\r\n");
        msg.extend(lines(998, 1600, b'x')); // 1.6 MB
        c.send(&dot_stuff(&msg));
        c.send(b".\r\n");
        for _ in 0..2 {
            assert_eq!(
                c.line(),
                "552 5.3.4 Message exceeds the maximum size of 1048576 bytes"
            );
        }
    }

    // The same session delivers the next message.
    let r = c.transaction(
        &[SUPPORT],
        &mail("small@cust.test", "mari@cust.test", "Small", "", "fits"),
    );
    assert_code(&r[0], "250 2.0.0");
    assert_code(&c.cmd("QUIT"), "221 ");
    assert!(
        d.ticket_of("big@cust.test").is_none(),
        "a refused message was stored"
    );
    assert!(d.ticket_of("small@cust.test").is_some());
    survives(&d, "oversized");
}

#[test]
fn header_floods_and_long_lines_are_refused_or_stored_never_crash() {
    let (_sink, d) = start(SMALL_LIMITS);
    let mut c = Raw::hello(d.port);

    // 100,000 header lines within max_header_size: a customer's mail is
    // never refused for its form, so it is stored and ticketed.
    let mut msg = headers("flood@cust.test").into_bytes();
    msg.extend_from_slice(b"Subject: flood\r\n");
    msg.extend_from_slice(&b"X:1\r\n".repeat(100_000)); // 500 kB
    msg.extend_from_slice(b"\r\nbody\r\n");
    let started = Instant::now();
    let r = c.transaction(&[SUPPORT], &msg);
    assert_code(&r[0], "250 2.0.0");
    println!(
        "hostile: 100k header lines stored in {:?}",
        started.elapsed()
    );
    assert!(d.ticket_of("flood@cust.test").is_some());

    // One header folded over 100,000 lines: the same.
    let mut msg = headers("folded@cust.test").into_bytes();
    msg.extend_from_slice(b"Subject: folded\r\nX-Folded: start\r\n");
    msg.extend_from_slice(&b" x\r\n".repeat(100_000));
    msg.extend_from_slice(b"\r\nbody\r\n");
    assert_code(&c.transaction(&[SUPPORT], &msg)[0], "250 2.0.0");
    assert!(d.ticket_of("folded@cust.test").is_some());

    // 100,000 header lines over max_header_size (512 KiB): refused.
    let mut msg = headers("flood2@cust.test").into_bytes();
    msg.extend_from_slice(&b"X-Flood: 1\r\n".repeat(100_000)); // 1.2 MB
    msg.extend_from_slice(b"\r\nbody\r\n");
    let r = c.transaction(&[SUPPORT], &msg);
    assert_eq!(
        r[0],
        "552 5.3.4 Header block exceeds the maximum of 524288 bytes"
    );

    // A 1 MB line, in the body and in the header: over max_line_length.
    let long = vec![b'L'; 1_000_000];
    for in_header in [false, true] {
        let mut msg = headers("long@cust.test").into_bytes();
        if in_header {
            msg.extend_from_slice(b"Subject: ");
            msg.extend_from_slice(&long);
            msg.extend_from_slice(b"\r\n\r\nbody\r\n");
        } else {
            msg.extend_from_slice(b"Subject: long\r\n\r\n");
            msg.extend_from_slice(&long);
            msg.extend_from_slice(b"\r\n");
        }
        let r = c.transaction(&[SUPPORT], &msg);
        assert_eq!(
            r[0],
            "552 5.3.4 Message has a line over the maximum length of 262144 bytes",
            "1 MB line in the {}",
            if in_header { "header" } else { "body" }
        );
    }
    assert!(d.ticket_of("long@cust.test").is_none());

    // A line of exactly max_line_length is fine.
    let mut msg = headers("edge@cust.test").into_bytes();
    msg.extend_from_slice(b"Subject: edge\r\n\r\n");
    msg.extend_from_slice(&vec![b'E'; 262_144]);
    msg.extend_from_slice(b"\r\n");
    assert_code(&c.transaction(&[SUPPORT], &msg)[0], "250 2.0.0");

    // A 1 MB command line: smtp-proto's 4 KiB bound, the tail discarded.
    let mut line = b"NOOP ".to_vec();
    line.extend_from_slice(&long);
    line.extend_from_slice(b" QUIT\r\nNOOP\r\n");
    c.send(&line);
    assert_eq!(c.line(), "500 5.5.2 Line too long");
    assert_eq!(c.line(), "250 2.0.0 OK");
    assert_code(&c.cmd("QUIT"), "221 ");
    survives(&d, "header-floods-and-long-lines");
}

#[test]
fn ten_thousand_recipients_get_452_past_the_limit_and_the_session_survives() {
    let (_sink, d) = start(SMALL_LIMITS);
    let mut c = Raw::hello(d.port);
    assert_code(&c.cmd("MAIL FROM:<many@cust.test>"), "250 2.1.0");

    // Pipelined in one go from another thread while this one reads, so
    // neither side blocks on a full socket buffer.
    let mut w = c.w.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let mut all = Vec::with_capacity(10_000 * 40);
        for i in 0..10_000 {
            all.extend_from_slice(format!("RCPT TO:<support+r{i}@example.com>\r\n").as_bytes());
        }
        w.write_all(&all).expect("write RCPTs");
    });
    let (mut ok, mut full) = (0, 0);
    for i in 0..10_000 {
        let l = c.line();
        if i < 100 {
            assert_eq!(l, "250 2.1.5 OK", "recipient {i}");
            ok += 1;
        } else {
            assert_eq!(l, "452 4.5.3 Too many recipients", "recipient {i}");
            full += 1;
        }
    }
    writer.join().unwrap();
    assert_eq!((ok, full), (100, 9_900));

    // The first 100 still get their message, one reply each.
    assert_code(&c.cmd("DATA"), "354 ");
    c.send(&dot_stuff(&mail(
        "many@cust.test",
        "many@cust.test",
        "Many",
        "",
        "to many",
    )));
    c.send(b".\r\n");
    for i in 0..100 {
        let l = c.line();
        assert_eq!(
            l,
            format!("250 2.0.0 <support+r{i}@example.com> OK, stored as SUP-1")
        );
    }
    assert_eq!(c.cmd("NOOP"), "250 2.0.0 OK");
    assert_eq!(d.tickets().len(), 1, "one delivery, one ticket");
    survives(&d, "ten-thousand-recipients");
}

#[test]
fn nul_and_8bit_bytes_everywhere_are_stored_or_refused_cleanly() {
    let (_sink, d) = start(SMALL_LIMITS);
    let mut c = Raw::hello(d.port);

    // Envelope: a UTF-8 address is fine; NUL, raw 8-bit and control bytes
    // get a clean reply (whatever it is) and the session goes on.
    assert_code(&c.cmd("MAIL FROM:<märi@cust.test> SMTPUTF8"), "250 2.1.0");
    assert_code(&c.cmd("RSET"), "250 2.0.0");
    let envelopes: [&[u8]; 8] = [
        b"MAIL FROM:<a\0b@cust.test>\r\n",
        b"MAIL FROM:<\xff\xfe@cust.test>\r\n",
        b"MAIL FROM:<x@cust.test>\0\r\n",
        b"\0\0\0\0\r\n",
        b"MAIL FROM:<\x80\x81\x82@\xc3\x28.test> BODY=8BITMIME\r\n",
        b"RCPT TO:<support\0@example.com>\r\n",
        b"RCPT TO:<support@example.com\xff>\r\n",
        b"\xff\xfe\xfd\r\n",
    ];
    for e in envelopes {
        assert_code(&c.cmd("RSET"), "250 2.0.0");
        c.send(e);
        let r = c.line();
        assert_clean_reply(&r);
        assert!(!r.contains('\0'), "NUL echoed: {r:?}");
        if e.starts_with(b"MAIL") && r.starts_with("250") {
            // Accepted: the RCPT and the message must work too.
            let r = c.transaction_after_mail();
            assert_code(&r, "250 2.0.0");
        }
    }
    assert_code(&c.cmd("RSET"), "250 2.0.0");

    // Long UTF-8 text echoed in a reply (a refused address, an unknown
    // parameter) is cut so the line stays within 512 octets (checked in
    // `Raw::line`), however many bytes each character takes.
    assert_code(&c.cmd("MAIL FROM:<m@cust.test> SMTPUTF8"), "250 2.1.0");
    let r = c.cmd(&format!("RCPT TO:<{}@example.com>", "€".repeat(80)));
    assert_code(&r, "550 5.1.1 <€€");
    let r = c.cmd(&format!("MAIL FROM:<m@cust.test> X{}=1", "😀".repeat(300)));
    assert_code(&r, "500 5.5.2 Unsupported parameter: X😀");
    assert_code(&c.cmd("RSET"), "250 2.0.0");

    // Content: NUL and 8-bit bytes in the header names and values, the
    // subject, the addresses and the body. Never refused for its form.
    let mut msg = Vec::new();
    msg.extend_from_slice(b"From: M\xe4ri \0<mari@cust.test>\r\n");
    msg.extend_from_slice(b"To: support@example.com, \xff\xfe@\x80.test\r\n");
    msg.extend_from_slice(b"Subject: \0\xc3\x28 caf\xe9 \xf0\x9f\x92\xa9 \x1b[31m\r\n");
    msg.extend_from_slice(b"Message-ID: <nul8bit@cust.test>\r\n");
    msg.extend_from_slice(b"X-\xff\0Bad: \0\0\0\r\n");
    msg.extend_from_slice(b"\0\xff: weird name\r\n");
    msg.extend_from_slice(b"Content-Type: text/plain; charset=\"\xff\0\"\r\n");
    msg.extend_from_slice(b"\r\n");
    msg.extend_from_slice(b"body \0 with NUL\r\n");
    let all: Vec<u8> = (0u8..=255).collect();
    msg.extend_from_slice(&all);
    msg.extend_from_slice(b"\r\n");
    msg.extend_from_slice(&[0u8; 4096]);
    msg.extend_from_slice(b"\r\n");
    let r = c.transaction(&[SUPPORT], &msg);
    assert_code(&r[0], "250 2.0.0");
    let token = d.ticket_of("nul8bit@cust.test").expect("ticketed");
    let shown = d.show(&token);
    assert_eq!(shown["contact"], "mari@cust.test", "{shown}");

    // NUL inside the Message-ID, and a message that is nothing but binary.
    let r = c.transaction(
        &[SUPPORT],
        b"From: a@cust.test\r\nMessage-ID: <a\0b@cust.test>\r\nSubject: x\r\n\r\nhi\r\n",
    );
    assert_code(&r[0], "250 2.0.0");
    let binary: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let r = c.transaction(&[SUPPORT], &binary);
    assert_clean_reply(&r[0]);
    assert_code(&r[0], "250 2.0.0");
    assert_code(&c.cmd("QUIT"), "221 ");

    // The CLI still reads everything back.
    assert!(d.tickets().len() >= 3);
    survives(&d, "nul-and-8bit");
}

#[test]
fn slow_and_silent_clients_are_dropped_with_421() {
    let (_sink, d) = start("limits:\n  idle_timeout: 2s\n  session_timeout: 5s\n");
    let port = d.port;

    // Silent after the greeting, and silent in the middle of a message.
    let silent = std::thread::spawn(move || {
        let mut c = Raw::connect(port);
        assert_code(&c.line(), "220 ");
        let t = Instant::now();
        let l = c.line();
        assert!(
            l.starts_with("421 4.4.2 ") && l.ends_with("Idle timeout, closing"),
            "{l:?}"
        );
        let waited = t.elapsed();
        // The server's timer starts when it has sent the greeting, a little
        // before we read it: leave slack for a loaded machine.
        assert!(waited >= Duration::from_millis(1500), "early: {waited:?}");
        assert_eq!(c.line(), "", "closed after the 421");

        let mut c = Raw::hello(port);
        c.open_data("slow@cust.test", &[SUPPORT]);
        c.send(b"Subject: half a message\r\n");
        let l = c.line();
        assert!(
            l.starts_with("421 4.4.2 ") && l.contains("Idle timeout"),
            "{l:?}"
        );
        waited
    });

    // Trickling one byte per second: never idle for 2 s, but the session
    // deadline (5 s) ends it.
    let mut c = Raw::connect(port);
    assert_code(&c.line(), "220 ");
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut w = c.w.try_clone().expect("clone");
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let wire = b"LHLO trickle.test\r\nMAIL FROM:<slow@cust.test>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n";
            for b in wire.iter().cycle() {
                if stop.load(Ordering::Relaxed) || w.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // Fail fast rather than trickle on for ever if the deadline is broken.
    c.r.get_ref()
        .set_read_timeout(Some(Duration::from_secs(12)))
        .unwrap();
    let mut last = String::new();
    loop {
        let l = c.line();
        if l.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still talking after 15 s: {l:?}"
        );
        last = l;
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert!(
        last.starts_with("421 4.4.2 ") && last.ends_with("Session too long, closing; try again"),
        "{last:?}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "session deadline of 5 s hit after {took:?}"
    );
    let idle_wait = silent.join().expect("idle client thread");
    println!("hostile: idle client dropped after {idle_wait:?}, trickling client after {took:?}");
    trickle.join().unwrap();
    assert!(d.tickets().is_empty(), "nothing half-received was stored");
    survives(&d, "slow-clients");
}

#[test]
fn connections_over_max_sessions_get_421_4_3_2_and_the_desk_recovers() {
    let (_sink, d) = start("limits:\n  max_sessions: 50\n");
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut c = Raw::connect(d.port);
        // Greeted: this connection holds a slot from here on.
        assert_code(&c.line(), "220 ");
        held.push(c);
    }
    // 450 more, every one turned away before any greeting.
    let mut refused = 0;
    for i in 50..500 {
        let mut c = Raw::connect(d.port);
        let l = c.line();
        assert_eq!(
            l,
            "421 4.3.2 Too many sessions, try again later",
            "connection {}",
            i + 1
        );
        assert_eq!(c.line(), "", "connection {} closed after the 421", i + 1);
        refused += 1;
    }
    assert_eq!(refused, 450);
    // The held ones still work.
    assert_code(&held[0].cmd("NOOP"), "250 2.0.0");
    drop(held);

    // Slots come back as the server sees the closes.
    eventually(10, "a free session slot", || {
        let mut c = Raw::connect(d.port);
        let l = c.line();
        if l.starts_with("421 4.3.2") {
            std::thread::sleep(Duration::from_millis(100));
            return false;
        }
        assert_code(&l, "220 ");
        true
    });
    survives(&d, "max-sessions");
}

/// A gzip file that expands to 1,032,000,001 zero bytes (~1 GB) from 6.5 MB:
/// one literal zero, then 4,000,000 back-references of length 258 at
/// distance 1, in one fixed-Huffman block. Built here so the fixture needs no
/// compressor; `gzip -t` accepts it.
fn gzip_bomb() -> Vec<u8> {
    const REFS: usize = 4_000_000;
    const SIZE: u32 = (1 + 258 * REFS) as u32;
    // zlib.crc32 of SIZE zero bytes, computed once with Python's zlib.
    const CRC: u32 = 0x462b_ad65;
    struct Bits {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }
    impl Bits {
        /// Plain fields, least significant bit first.
        fn put(&mut self, v: u64, n: u32) {
            self.acc |= v << self.n;
            self.n += n;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }
        /// Huffman codes, most significant bit first.
        fn code(&mut self, code: u64, n: u32) {
            let rev = (0..n).fold(0, |r, i| r | (((code >> i) & 1) << (n - 1 - i)));
            self.put(rev, n);
        }
    }
    let mut b = Bits {
        out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
        acc: 0,
        n: 0,
    };
    b.put(1, 1); // BFINAL
    b.put(1, 2); // BTYPE = fixed Huffman
    b.code(0x30, 8); // literal 0
    for _ in 0..REFS {
        b.code(0xc5, 8); // length 258 (code 285)
        b.code(0, 5); // distance 1 (code 0)
    }
    b.code(0, 7); // end of block
    if b.n > 0 {
        b.put(0, 8 - b.n);
    }
    let mut out = b.out;
    out.extend_from_slice(&CRC.to_le_bytes());
    out.extend_from_slice(&SIZE.to_le_bytes());
    out
}

fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(text.len() + text.len() / 38);
    for chunk in text.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn attachment_mail(id: &str, subject: &str, ctype: &str, name: &str, b64: &[u8]) -> Vec<u8> {
    let mut m = headers(id).into_bytes();
    m.extend_from_slice(
        format!(
            "Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n\
             --b\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        )
        .as_bytes(),
    );
    m.extend_from_slice(b64);
    m.extend_from_slice(b"--b--\r\n");
    m
}

#[test]
fn deep_mime_and_decompression_bombs_are_stored_and_memory_stays_bounded() {
    // Default limits: max_message_size 50 MiB.
    let (_sink, d) = start("");
    let mut c = Raw::hello(d.port);

    // 1,000 nested multiparts.
    const DEPTH: usize = 1_000;
    let mut m = headers("deep-multipart@cust.test").into_bytes();
    m.extend_from_slice(b"Subject: deep multipart\r\nMIME-Version: 1.0\r\n");
    for i in 0..DEPTH {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n")
                .as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nthe bottom\r\n");
    for i in (0..DEPTH).rev() {
        m.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
    }
    assert_code(&c.transaction(&[SUPPORT], &m)[0], "250 2.0.0");
    assert!(d.ticket_of("deep-multipart@cust.test").is_some());

    // 1,000 nested message/rfc822 parts, each with its own headers.
    let mut m = headers("deep-rfc822@cust.test").into_bytes();
    m.extend_from_slice(b"Subject: deep rfc822\r\nMIME-Version: 1.0\r\n");
    for i in 0..DEPTH {
        m.extend_from_slice(
            format!(
                "Content-Type: message/rfc822\r\n\r\nFrom: n{i}@cust.test\r\nMessage-ID: <n{i}@cust.test>\r\nSubject: level {i}\r\n"
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nthe bottom\r\n");
    assert_code(&c.transaction(&[SUPPORT], &m)[0], "250 2.0.0");
    assert!(d.ticket_of("deep-rfc822@cust.test").is_some());

    // 40 MB of base64 (30 MB of zeros) under the 50 MiB limit.
    let zeros = vec![0u8; 30 * 1024 * 1024];
    let b64 = base64_lines(&zeros);
    drop(zeros);
    assert!(b64.len() > 40_000_000, "{}", b64.len());
    let m = attachment_mail(
        "zeros@cust.test",
        "zeros",
        "application/octet-stream",
        "zeros.bin",
        &b64,
    );
    drop(b64);
    let started = Instant::now();
    assert_code(&c.transaction(&[SUPPORT], &m)[0], "250 2.0.0");
    println!(
        "hostile: {:.1} MB message stored in {:?}",
        m.len() as f64 / 1e6,
        started.elapsed()
    );
    drop(m);
    assert!(d.ticket_of("zeros@cust.test").is_some());

    // A 6.5 MB gzip that would expand to 1 GB, as an attachment and as a
    // gzip-encoded body: kept as received, never decompressed.
    let bomb = gzip_bomb();
    let b64 = base64_lines(&bomb);
    let m = attachment_mail(
        "gzip@cust.test",
        "logs",
        "application/gzip",
        "logs.tar.gz",
        &b64,
    );
    assert_code(&c.transaction(&[SUPPORT], &m)[0], "250 2.0.0");
    assert!(d.ticket_of("gzip@cust.test").is_some());
    let mut m = headers("gzip-body@cust.test").into_bytes();
    m.extend_from_slice(
        b"Subject: gzip body\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    m.extend_from_slice(&b64);
    assert_code(&c.transaction(&[SUPPORT], &m)[0], "250 2.0.0");
    assert!(d.ticket_of("gzip-body@cust.test").is_some());
    assert_code(&c.cmd("QUIT"), "221 ");

    // Nothing on disk was expanded either.
    let mut on_disk = 0u64;
    let mut dirs = vec![d.data_dir()];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let md = e.metadata().unwrap();
            if md.is_dir() {
                dirs.push(e.path());
            } else {
                on_disk += md.len();
            }
        }
    }
    println!("hostile: data_dir holds {:.1} MB", on_disk as f64 / 1e6);
    assert!(on_disk < 400_000_000, "data_dir grew to {on_disk} bytes");
    survives(&d, "deep-mime-and-bombs");
}
