//! A recording SMTP sink for integration tests (maddy's
//! `internal/testutils/smtp_server.go`, tokio flavour).
//!
//! The test starts it on its own port, points `outbound.relay` at
//! `smtp://127.0.0.1:<port>` and reads back what arrived. Its behaviour can
//! be scripted ([`Mode`]) to exercise retries: temporary and permanent
//! refusals, a connection dropped in the middle of DATA, a server that
//! never answers.
//!
//! The sink serves from its own thread and runtime, whichever constructor
//! is used, so a blocking [`Sink::wait_for`] never starves it and it works
//! from sync tests and from any tokio test flavour. Dropping the [`Sink`]
//! stops it and closes every connection.
//!
//! It uses nothing from the postdesk crate, so any test binary can include
//! it by path: `#[path = "common/sink.rs"] mod sink;`.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// How the sink answers. A mode applies to transactions (MAIL FROM) that
/// start after it was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every recipient and every message accepted and recorded.
    Accept,
    /// `451 4.3.0` to every RCPT TO (so DATA gets `554`): nothing recorded.
    TempFail,
    /// Recipients accepted, `451 4.3.0` after the final dot: nothing recorded.
    TempFailData,
    /// The next `n` transactions get `451 4.3.0` at RCPT, later ones are
    /// accepted: "fail twice, then work".
    TempFailFirst(u32),
    /// `550 5.1.1` to every RCPT TO: nothing recorded.
    PermFail,
    /// `354`, then a little of the data is read and the connection closed.
    DropMidData,
    /// The whole message is read and never answered; the connection stays
    /// open until the client gives up. Nothing recorded.
    Stall,
}

/// One accepted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The DATA as sent, dot-unstuffed, without the terminating `.` line.
    pub data: Vec<u8>,
}

struct Shared {
    messages: Mutex<Vec<Received>>,
    mode: Mutex<Mode>,
    /// Transactions still to refuse under `TempFailFirst`.
    fail_left: Mutex<u32>,
    connections: AtomicUsize,
    transactions: AtomicUsize,
    queued: AtomicUsize,
}

pub struct Sink {
    shared: Arc<Shared>,
    port: u16,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Sink {
    /// Starts a sink on 127.0.0.1 and a free port.
    pub async fn start() -> Sink {
        Sink::start_blocking()
    }

    /// Same as [`Sink::start`], for tests without a runtime.
    pub fn start_blocking() -> Sink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("sink: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("sink: non-blocking listener");
        let port = listener.local_addr().expect("sink: local address").port();
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            mode: Mutex::new(Mode::Accept),
            fail_left: Mutex::new(0),
            connections: AtomicUsize::new(0),
            transactions: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        std::thread::Builder::new()
            .name(format!("smtp-sink-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("sink: runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("sink: listener");
                    tokio::select! {
                        _ = stop_rx => {}
                        _ = accept_loop(listener, serving) => {}
                    }
                });
                // Dropping the runtime drops every session: sockets close.
            })
            .expect("sink: thread");
        Sink {
            shared,
            port,
            stop: Mutex::new(Some(stop_tx)),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>`, for `outbound.relay`.
    pub fn relay_url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        *self.shared.fail_left.lock().unwrap() = match mode {
            Mode::TempFailFirst(n) => n,
            _ => 0,
        };
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.lock().unwrap()
    }

    /// Messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Forgets the messages recorded so far (counters are kept).
    pub fn clear(&self) {
        self.shared.messages.lock().unwrap().clear();
    }

    /// Transactions started (MAIL FROM commands), whatever became of them:
    /// the number of delivery attempts a client made.
    pub fn attempts(&self) -> usize {
        self.shared.transactions.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits (polling every 20 ms, blocking the calling thread) until at
    /// least `n` messages arrived; panics listing what did arrive when
    /// `timeout` passes first.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let until = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= until {
                panic!("{}", self.shortfall(n, timeout, &got));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Sink::wait_for`] for async tests that run the code under test on
    /// their own runtime (a blocking wait would stall it).
    pub async fn wait_for_async(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let until = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n {
                return got;
            }
            if Instant::now() >= until {
                panic!("{}", self.shortfall(n, timeout, &got));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn shortfall(&self, n: usize, timeout: Duration, got: &[Received]) -> String {
        let mut s = format!(
            "sink: expected at least {n} message(s) within {timeout:?}, got {} \
             (mode {:?}, {} connection(s), {} transaction(s))",
            got.len(),
            self.mode(),
            self.connections(),
            self.attempts()
        );
        for (i, m) in got.iter().enumerate() {
            s.push_str(&format!(
                "\n  {}. from=<{}> to={:?} kind={} subject={:?}",
                i + 1,
                m.mail_from,
                m.rcpt_to,
                m.header("X-Postdesk-Kind").unwrap_or_else(|| "-".into()),
                m.header("Subject").unwrap_or_default()
            ));
        }
        s
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.stop.lock() {
            if let Some(tx) = stop.take() {
                let _ = tx.send(());
            }
        }
    }
}

impl Received {
    /// The whole message as text (lossy), for `contains` checks.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The first header field of that name (case-insensitive), unfolded,
    /// with RFC 2047 encoded words decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_raw(name).map(|v| decode_words(&v))
    }

    /// Every header field of that name, unfolded and decoded, in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.fields()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| decode_words(&v))
            .collect()
    }

    /// The first header field of that name, unfolded, as sent.
    pub fn header_raw(&self, name: &str) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The text body, decoded (transfer encoding, charset; the first text
    /// part of a multipart), as a mail client would show it.
    pub fn body_text(&self) -> String {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
            .unwrap_or_else(|| {
                let text = self.text();
                let body = text
                    .split_once("\r\n\r\n")
                    .or_else(|| text.split_once("\n\n"))
                    .map(|(_, b)| b.to_string());
                body.unwrap_or_default()
            })
    }

    /// (name, unfolded value) of every header field, in order.
    fn fields(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(&self.data);
        let mut out: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                // Unfolding removes the line break, keeps the whitespace.
                if let Some((_, v)) = out.last_mut() {
                    v.push_str(line);
                }
                continue;
            }
            if let Some((n, v)) = line.split_once(':') {
                out.push((n.trim().to_string(), v.trim_start().to_string()));
            }
        }
        for (_, v) in &mut out {
            *v = v.trim_end().to_string();
        }
        out
    }
}

/// Decodes `=?utf-8?q?…?=` words by letting mail-parser read the value as
/// an unstructured header.
fn decode_words(raw: &str) -> String {
    if !raw.contains("=?") {
        return raw.to_string();
    }
    let fake = format!("Subject: {raw}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse(fake.as_bytes())
        .and_then(|m| m.subject().map(str::to_string))
        .unwrap_or_else(|| raw.to_string())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            // Out of descriptors or similar: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        tokio::spawn(async move {
            // An I/O error just ends the session, as with a real server.
            let _ = session(sock, &shared).await;
        });
    }
}

/// What this transaction's commands get, fixed at MAIL FROM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Accept,
    TempRcpt,
    TempData,
    PermRcpt,
    Drop,
    Stall,
}

impl Shared {
    fn verdict(&self) -> Verdict {
        match *self.mode.lock().unwrap() {
            Mode::Accept => Verdict::Accept,
            Mode::TempFail => Verdict::TempRcpt,
            Mode::TempFailData => Verdict::TempData,
            Mode::PermFail => Verdict::PermRcpt,
            Mode::DropMidData => Verdict::Drop,
            Mode::Stall => Verdict::Stall,
            Mode::TempFailFirst(_) => {
                let mut left = self.fail_left.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    Verdict::TempRcpt
                } else {
                    Verdict::Accept
                }
            }
        }
    }
}

/// The address inside `FROM:<…>` / `TO:<…>`, parameters dropped.
fn path_arg(rest: &str) -> String {
    let rest = rest.trim_start();
    match rest.strip_prefix('<') {
        Some(r) => r.split('>').next().unwrap_or("").to_string(),
        None => rest.split_whitespace().next().unwrap_or("").to_string(),
    }
}

async fn session(sock: tokio::net::TcpStream, shared: &Shared) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 sink.test ESMTP postdesk test sink\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    let mut verdict = Verdict::Accept;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let cmd = String::from_utf8_lossy(&line);
        let cmd = cmd.trim_end_matches(['\r', '\n']);
        let upper = cmd.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        let reply: &[u8] = match verb {
            "EHLO" => b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 SIZE 104857600\r\n",
            "HELO" => b"250 sink.test\r\n",
            "MAIL" if from.is_some() => b"503 5.5.1 Error: nested MAIL command\r\n",
            "MAIL" if upper.starts_with("MAIL FROM:") => {
                from = Some(path_arg(&cmd["MAIL FROM:".len()..]));
                rcpts.clear();
                verdict = shared.verdict();
                shared.transactions.fetch_add(1, Ordering::SeqCst);
                b"250 2.1.0 Ok\r\n"
            }
            "RCPT" if from.is_none() => b"503 5.5.1 Error: need MAIL command\r\n",
            "RCPT" if upper.starts_with("RCPT TO:") => match verdict {
                Verdict::TempRcpt => b"451 4.3.0 <rcpt>: Temporary failure (sink)\r\n",
                Verdict::PermRcpt => b"550 5.1.1 <rcpt>: Recipient address rejected (sink)\r\n",
                _ => {
                    rcpts.push(path_arg(&cmd["RCPT TO:".len()..]));
                    b"250 2.1.5 Ok\r\n"
                }
            },
            "MAIL" | "RCPT" => b"501 5.5.4 Syntax error\r\n",
            "DATA" if from.is_none() => b"503 5.5.1 Error: need MAIL command\r\n",
            "DATA" if rcpts.is_empty() => b"554 5.5.1 Error: no valid recipients\r\n",
            "DATA" => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                if verdict == Verdict::Drop {
                    // Part of the data, then the connection goes away.
                    let mut some = [0u8; 16];
                    let _ = r.read(&mut some).await?;
                    return Ok(());
                }
                let Some(data) = read_data(&mut r).await? else {
                    return Ok(());
                };
                let mail_from = from.take().unwrap_or_default();
                let rcpt_to = std::mem::take(&mut rcpts);
                match verdict {
                    Verdict::Stall => {
                        // Never answer: read and discard until the client leaves.
                        let mut sink = Vec::new();
                        let _ = r.read_to_end(&mut sink).await;
                        return Ok(());
                    }
                    Verdict::TempData => b"451 4.3.0 Error: queue file write error (sink)\r\n",
                    _ => {
                        shared.messages.lock().unwrap().push(Received {
                            mail_from,
                            rcpt_to,
                            data,
                        });
                        let n = shared.queued.fetch_add(1, Ordering::SeqCst) + 1;
                        let ok = format!("250 2.0.0 Ok: queued as SINK{n}\r\n");
                        w.write_all(ok.as_bytes()).await?;
                        continue;
                    }
                }
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                b"250 2.0.0 Ok\r\n"
            }
            "NOOP" => b"250 2.0.0 Ok\r\n",
            "VRFY" => b"252 2.0.0 Cannot VRFY user\r\n",
            "QUIT" => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => b"500 5.5.2 Error: command not recognized\r\n",
        };
        w.write_all(reply).await?;
    }
}

/// Reads DATA up to the `.` line, undoing dot-stuffing; `None` when the
/// client went away first.
async fn read_data<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> std::io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(None);
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(data));
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        data.extend_from_slice(content);
    }
}
