//! One LMTP session (RFC 2033), from greeting to close.
//!
//! Owns the conversation: the command state machine, the DATA phase and its
//! limits, timeouts, and one reply per accepted recipient. Wire parsing is
//! smtp-proto's (`RequestReceiver`, `DataReceiver`, `DummyDataReceiver`,
//! `DummyLineReceiver`): bytes go in as they arrive, complete commands and
//! messages come out, nothing is buffered past a bound. Must not: parse the
//! mail or touch the store; a complete transaction goes to the [`Handler`]
//! once, and its one [`Outcome`] answers every recipient.
//!
//! Shape (after stalwart's `Session::ingest`): a read loop that races the
//! read alone against the idle timer, the session deadline and shutdown, and
//! an `ingest` step that consumes the whole chunk, queueing replies in order
//! (pipelining) and awaiting the handler when a message is complete. A
//! delivery in progress is therefore never cut short by shutdown or a timer.

use super::{reply, Handler, Outcome};
use crate::config::Config;
use crate::ingest::Envelope;
use crate::shutdown::Shutdown;
use smtp_proto::request::receiver::{
    DataReceiver, DummyDataReceiver, DummyLineReceiver, RequestReceiver, MAX_LINE_LENGTH,
};
use smtp_proto::{MailFrom, RcptTo, Request, MAIL_BODY_BINARYMIME};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::Instrument;

/// Read size. Large enough that a 50 MiB message is not thousands of tiny
/// reads, small enough that what we hold past a limit stays trivial.
const READ_CHUNK: usize = 16 * 1024;

/// Limits and names for sessions, resolved once from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Our name in the greeting, LHLO and 421 replies.
    pub hostname: String,
    pub max_message_size: u64,
    pub max_line_length: usize,
    pub max_header_size: usize,
    pub max_recipients: usize,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
    pub max_sessions: usize,
}

impl Settings {
    pub fn from_config(cfg: &Config) -> Settings {
        let l = &cfg.limits;
        Settings {
            hostname: hostname(),
            max_message_size: l.max_message_size,
            max_line_length: l.max_line_length,
            max_header_size: l.max_header_size,
            max_recipients: l.max_recipients,
            idle_timeout: l.idle_timeout.std(),
            session_timeout: l.session_timeout.std(),
            max_sessions: l.max_sessions,
        }
    }
}

/// The host name for replies; "localhost" when the OS gives none we can put
/// in a reply line as is.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    // POSIX leaves NUL termination unspecified on truncation, so stop at the
    // buffer's end as well.
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name)
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            name.to_string()
        }
        _ => "localhost".into(),
    }
}

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// Runs one LMTP session over `stream` until QUIT, the peer closing, a
/// timeout or shutdown. Never fails: I/O errors end the session and are
/// logged; the MTA retries whatever was not answered `250`.
pub async fn run_session<S>(
    stream: S,
    peer: &str,
    settings: &Settings,
    handler: &dyn Handler,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let id = NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed);
    let _open = crate::metrics::lmtp_session();
    let span = tracing::info_span!("lmtp_session", peer = %peer, session = id);
    Session::new(settings, handler)
        .run(stream, shutdown)
        .instrument(span)
        .await
}

/// Why the read loop stopped.
enum Stop {
    Quit,
    PeerClosed,
    Idle,
    TooLong,
    Shutdown,
    Io(std::io::Error),
}

/// Whether `ingest` wants the session to go on.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// Which limit a message broke; each is answered `552 5.3.4`, naming it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breach {
    MessageSize,
    HeaderSize,
    LineLength,
}

enum State {
    Command,
    /// A command line overran smtp-proto's bound: discard to its end, then
    /// answer, so the tail is not taken for a command.
    LineTooLong(DummyLineReceiver),
    Data(Box<Incoming>),
    /// A message broke a limit: read on to the final dot, keeping nothing,
    /// so the 552s land where the client expects the DATA replies.
    SkipData(DummyDataReceiver, Breach),
    /// BDAT was sent although not offered: step over its chunk, then 502.
    SkipBdat(DummyDataReceiver),
}

/// A message being received.
struct Incoming {
    rx: DataReceiver,
    raw: Vec<u8>,
    meter: Meter,
}

/// The envelope being built; reset by LHLO, RSET and the end of DATA.
#[derive(Default)]
struct Transaction {
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

struct Session<'a> {
    settings: &'a Settings,
    handler: &'a dyn Handler,
    receiver: RequestReceiver,
    state: State,
    greeted: bool,
    tx: Transaction,
}

impl<'a> Session<'a> {
    fn new(settings: &'a Settings, handler: &'a dyn Handler) -> Self {
        Session {
            settings,
            handler,
            receiver: RequestReceiver::default(),
            state: State::Command,
            greeted: false,
            tx: Transaction::default(),
        }
    }

    async fn run<S>(mut self, mut stream: S, mut shutdown: Shutdown)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let host = self.settings.hostname.clone();
        let idle = self.settings.idle_timeout;
        // No deadline at all if the configured one overflows the clock.
        let deadline = Instant::now().checked_add(self.settings.session_timeout);
        tracing::debug!("session opened");

        let mut out = reply::greeting(&host).into_bytes();
        let mut buf = vec![0u8; READ_CHUNK];
        let stop = loop {
            if let Err(e) = send(&mut stream, &out, idle).await {
                break Stop::Io(e);
            }
            out.clear();

            // Only the read races the timers and shutdown; once bytes are in
            // hand, their commands (and a delivery) run to completion.
            let n = tokio::select! {
                biased;
                _ = shutdown.wait() => break Stop::Shutdown,
                _ = sleep_until(deadline) => break Stop::TooLong,
                r = tokio::time::timeout(idle, stream.read(&mut buf)) => match r {
                    Err(_) => break Stop::Idle,
                    Ok(Err(e)) => break Stop::Io(e),
                    Ok(Ok(0)) => break Stop::PeerClosed,
                    Ok(Ok(n)) => n,
                },
            };
            if self.ingest(&buf[..n], &mut out).await == Flow::Quit {
                // Best effort: the peer may already be gone after QUIT.
                let _ = send(&mut stream, &out, idle).await;
                break Stop::Quit;
            }
        };

        let in_data = matches!(self.state, State::Data(_) | State::SkipData(..));
        let last = match stop {
            Stop::Quit => None,
            Stop::PeerClosed => {
                if in_data {
                    tracing::warn!("peer closed the connection in the middle of a message");
                } else {
                    tracing::debug!("peer closed the connection");
                }
                None
            }
            Stop::Io(e) => {
                tracing::warn!(error = %e, "connection error, closing");
                None
            }
            Stop::Idle => {
                tracing::warn!(
                    idle_timeout = ?idle,
                    in_data,
                    "idle timeout, closing (limits.idle_timeout)"
                );
                Some(reply::idle_timeout(&host))
            }
            Stop::TooLong => {
                tracing::warn!(
                    session_timeout = ?self.settings.session_timeout,
                    in_data,
                    "session too long, closing (limits.session_timeout)"
                );
                Some(reply::session_too_long(&host))
            }
            Stop::Shutdown => {
                tracing::debug!(in_data, "shutting down, closing");
                Some(reply::shutting_down(&host))
            }
        };
        if let Some(last) = last {
            let _ = send(&mut stream, last.as_bytes(), idle).await;
        }
        let _ = tokio::time::timeout(idle, stream.shutdown()).await;
        tracing::debug!("session closed");
    }

    /// Consumes `chunk` completely: every complete command is answered (into
    /// `out`, in order), message bytes go to the current message, and a
    /// partial command waits in the receiver for the next chunk.
    async fn ingest(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Flow {
        let mut bytes = chunk.iter();
        loop {
            match &mut self.state {
                State::Command => {
                    // A line arriving whole in one chunk bypasses the
                    // receiver's own bound; measure it so the limit does not
                    // depend on how TCP split the input.
                    let buffered = !self.receiver.buf().is_empty();
                    let before = bytes.len();
                    let parsed = self.receiver.ingest(&mut bytes);
                    let too_long = !buffered && before - bytes.len() > MAX_LINE_LENGTH;
                    match parsed {
                        Err(smtp_proto::Error::NeedsMoreData { .. }) => return Flow::Continue,
                        Err(smtp_proto::Error::ResponseTooLong) => {
                            self.state = State::LineTooLong(DummyLineReceiver::default());
                        }
                        _ if too_long => {
                            tracing::warn!("command line too long, refused");
                            push(out, reply::LINE_TOO_LONG);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "garbled command, refused");
                            push(out, &reply::syntax_error(&e.to_string()));
                        }
                        Ok(request) => {
                            let request = request.into_owned();
                            if self.command(request, out) == Flow::Quit {
                                return Flow::Quit;
                            }
                        }
                    }
                }
                State::LineTooLong(rx) => {
                    if !rx.ingest(&mut bytes) {
                        return Flow::Continue;
                    }
                    tracing::warn!("command line too long, refused");
                    push(out, reply::LINE_TOO_LONG);
                    self.state = State::Command;
                }
                State::SkipBdat(rx) => {
                    if !rx.ingest(&mut bytes) {
                        return Flow::Continue;
                    }
                    tracing::warn!("BDAT refused: not offered");
                    push(out, reply::BDAT_NOT_OFFERED);
                    self.state = State::Command;
                }
                State::SkipData(rx, breach) => {
                    if !rx.ingest(&mut bytes) {
                        return Flow::Continue;
                    }
                    let breach = *breach;
                    self.refuse_message(breach, out);
                }
                State::Data(incoming) => {
                    let done = incoming.rx.ingest(&mut bytes, &mut incoming.raw);
                    if let Some(breach) = incoming.check(self.settings, done) {
                        if done {
                            self.refuse_message(breach, out);
                        } else {
                            let skip = DummyDataReceiver::new_data(&incoming.rx);
                            // Dropping the Incoming frees what was kept so far.
                            self.state = State::SkipData(skip, breach);
                        }
                        continue;
                    }
                    if !done {
                        return Flow::Continue;
                    }
                    if let State::Data(incoming) =
                        std::mem::replace(&mut self.state, State::Command)
                    {
                        self.deliver(incoming.raw, out).await;
                    }
                }
            }
        }
    }

    fn command(&mut self, request: Request<String>, out: &mut Vec<u8>) -> Flow {
        tracing::debug!(command = request.name(), "command");
        match request {
            Request::Lhlo { .. } => {
                self.greeted = true;
                self.tx = Transaction::default();
                let r = reply::lhlo(&self.settings.hostname, self.settings.max_message_size);
                push(out, &r);
            }
            Request::Helo { .. } | Request::Ehlo { .. } => push(out, reply::HELO_NOT_LMTP),
            Request::Mail { from } => self.mail(from, out),
            Request::Rcpt { to } => self.rcpt(to, out),
            Request::Data => self.data(out),
            Request::Bdat { chunk_size, .. } => {
                self.state = State::SkipBdat(DummyDataReceiver::new_bdat(chunk_size));
            }
            Request::Rset => {
                self.tx = Transaction::default();
                push(out, reply::OK);
            }
            Request::Noop { .. } => push(out, reply::OK),
            Request::Vrfy { .. } => push(out, reply::VRFY),
            Request::Quit => {
                push(out, reply::BYE);
                return Flow::Quit;
            }
            Request::Expn { .. }
            | Request::Help { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Auth { .. }
            | Request::StartTls => push(out, reply::NOT_IMPLEMENTED),
        }
        Flow::Continue
    }

    fn mail(&mut self, from: MailFrom<String>, out: &mut Vec<u8>) {
        if !self.greeted {
            push(out, reply::NEED_LHLO);
        } else if self.tx.mail_from.is_some() {
            push(out, reply::NESTED_MAIL);
        } else if from.flags & MAIL_BODY_BINARYMIME != 0 {
            tracing::warn!(from = %from.address, "MAIL refused: BODY=BINARYMIME without BDAT");
            push(out, reply::BINARYMIME_REFUSED);
        } else if from.size as u64 > self.settings.max_message_size {
            tracing::warn!(
                from = %from.address,
                declared = from.size,
                max = self.settings.max_message_size,
                "MAIL refused: declared SIZE over limits.max_message_size"
            );
            let max = self.settings.max_message_size;
            push(out, &reply::declared_size_too_big(from.size as u64, max));
        } else {
            // BODY=8BITMIME and SMTPUTF8 need nothing from us: the bytes are
            // kept exactly as received either way.
            self.tx.mail_from = Some(from.address);
            push(out, reply::MAIL_OK);
        }
    }

    fn rcpt(&mut self, to: RcptTo<String>, out: &mut Vec<u8>) {
        if self.tx.mail_from.is_none() {
            push(out, reply::NEED_MAIL);
            return;
        }
        if self.tx.rcpt_to.len() >= self.settings.max_recipients {
            tracing::warn!(
                rcpt = %to.address,
                max = self.settings.max_recipients,
                "recipient refused: over limits.max_recipients"
            );
            push(out, reply::TOO_MANY_RECIPIENTS);
            return;
        }
        match self.handler.check_rcpt(&to.address) {
            Ok(()) => {
                // A repeated recipient is kept: LMTP owes it its own reply.
                self.tx.rcpt_to.push(to.address);
                push(out, reply::RCPT_OK);
            }
            Err(why) => {
                tracing::warn!(rcpt = %to.address, reason = %why, "recipient refused");
                push(out, &reply::rcpt_refused(&to.address, &why));
            }
        }
    }

    fn data(&mut self, out: &mut Vec<u8>) {
        if self.tx.mail_from.is_none() {
            push(out, reply::DATA_NEED_MAIL);
        } else if self.tx.rcpt_to.is_empty() {
            push(out, reply::DATA_NEED_RCPT);
        } else {
            push(out, reply::START_DATA);
            self.state = State::Data(Box::new(Incoming::new()));
        }
    }

    /// Hands the message over once and answers every accepted recipient with
    /// its one outcome, in RCPT order.
    async fn deliver(&mut self, raw: Vec<u8>, out: &mut Vec<u8>) {
        let tx = std::mem::take(&mut self.tx);
        let rcpt_to = tx.rcpt_to;
        let envelope = Envelope {
            mail_from: tx.mail_from.unwrap_or_default(),
            rcpt_to: rcpt_to.clone(),
        };
        let size = raw.len();
        match self.handler.deliver(envelope, raw).await {
            Outcome::Stored { id } => {
                crate::metrics::lmtp_transaction("stored");
                tracing::debug!(id = %id, size, rcpts = rcpt_to.len(), "message stored");
                for rcpt in &rcpt_to {
                    push(out, &reply::stored(rcpt, &id));
                }
            }
            Outcome::TempFail { reason } => {
                crate::metrics::lmtp_transaction("tempfail");
                tracing::warn!(reason = %reason, size, "delivery failed, answered 451 to retry");
                for rcpt in &rcpt_to {
                    push(out, &reply::temp_fail(rcpt));
                }
            }
        }
    }

    /// Answers every accepted recipient 552 for a message that broke a limit
    /// (it has been read to its end) and ends the transaction.
    fn refuse_message(&mut self, breach: Breach, out: &mut Vec<u8>) {
        let s = self.settings;
        let (key, text) = match breach {
            Breach::MessageSize => (
                "limits.max_message_size",
                reply::message_too_big(s.max_message_size),
            ),
            Breach::HeaderSize => (
                "limits.max_header_size",
                reply::header_too_big(s.max_header_size),
            ),
            Breach::LineLength => (
                "limits.max_line_length",
                reply::line_too_long_in_message(s.max_line_length),
            ),
        };
        let tx = std::mem::take(&mut self.tx);
        crate::metrics::lmtp_transaction("refused");
        tracing::warn!(
            from = %tx.mail_from.as_deref().unwrap_or_default(),
            rcpts = tx.rcpt_to.len(),
            limit = key,
            "message refused: over {key}"
        );
        for _ in &tx.rcpt_to {
            push(out, &text);
        }
        self.state = State::Command;
    }
}

impl Incoming {
    fn new() -> Self {
        let mut rx = DataReceiver::new();
        // smtp-proto only recognises "." after a CRLF it has seen itself, so
        // feed it the CRLF that ended the DATA line: an empty message (".")
        // and a dot-stuffed first line then work like any other line.
        let mut discarded = Vec::new();
        rx.ingest(&mut b"\r\n".iter(), &mut discarded);
        Incoming {
            rx,
            raw: Vec::new(),
            meter: Meter::default(),
        }
    }

    /// Measures what the receiver appended since the last call. `done`: the
    /// final dot has been seen and `raw` is the whole message.
    fn check(&mut self, s: &Settings, done: bool) -> Option<Breach> {
        // Mid-message, `raw` may end in a CR the receiver takes back if the
        // next byte completes the final ".\r\n": allow for it until the end.
        let slack = u64::from(!done);
        if self.raw.len() as u64 > s.max_message_size.saturating_add(slack) {
            return Some(Breach::MessageSize);
        }
        let new = self.raw.get(self.meter.seen..).unwrap_or_default();
        let breach = self.meter.feed(new, s);
        self.meter.seen = self.raw.len();
        breach
    }
}

/// Line and header-block accounting over the (unstuffed) message bytes.
/// A line ends at LF, with or without a CR before it: mail is never refused
/// for its line ends, only for its size.
#[derive(Default)]
struct Meter {
    /// How much of `raw` has been fed.
    seen: usize,
    /// Bytes of the current line so far, LF excluded.
    line: usize,
    last: u8,
    /// Past the blank line that ends the header block.
    in_body: bool,
    /// Header bytes so far, line ends included, the blank line not.
    header: usize,
}

impl Meter {
    fn feed(&mut self, bytes: &[u8], s: &Settings) -> Option<Breach> {
        for &b in bytes {
            if b == b'\n' {
                let content = self.line.saturating_sub(usize::from(self.last == b'\r'));
                if content > s.max_line_length {
                    return Some(Breach::LineLength);
                }
                if !self.in_body {
                    if content == 0 {
                        self.in_body = true;
                    } else {
                        self.header += self.line + 1;
                        if self.header > s.max_header_size {
                            return Some(Breach::HeaderSize);
                        }
                    }
                }
                self.line = 0;
            } else {
                self.line += 1;
                // The trailing CR of a CRLF does not count, hence the +1.
                if self.line > s.max_line_length.saturating_add(1) {
                    return Some(Breach::LineLength);
                }
            }
            self.last = b;
        }
        // A header line still arriving already counts once it cannot be the
        // blank line (a lone CR still could be).
        let partial_header = self.line > 1 || (self.line == 1 && self.last != b'\r');
        if !self.in_body && partial_header && self.header + self.line > s.max_header_size {
            return Some(Breach::HeaderSize);
        }
        None
    }
}

fn push(out: &mut Vec<u8>, reply: &str) {
    out.extend_from_slice(reply.as_bytes());
}

/// Writes and flushes `bytes` (if any). Bounded by the idle timeout: a peer
/// that stops reading must not hold a session slot forever.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    idle: Duration,
) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    crate::metrics::lmtp_replies(bytes);
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match tokio::time::timeout(idle, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "peer is not reading our replies",
        )),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lmtp::BoxFuture;
    use crate::shutdown::{self, Trigger};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};
    use tokio::sync::Notify;
    use tokio::task::JoinHandle;

    /// Records every delivery and answers with a configurable outcome;
    /// refuses recipients starting with "nobody".
    struct FakeHandler {
        outcome: Mutex<Outcome>,
        delivered: Mutex<Vec<(Envelope, Vec<u8>)>>,
        /// When set, `deliver` waits for it: a delivery "in progress".
        gate: Option<Arc<Notify>>,
        entered: Notify,
    }

    impl FakeHandler {
        fn new() -> Arc<Self> {
            Self::with_gate(None)
        }
        fn with_gate(gate: Option<Arc<Notify>>) -> Arc<Self> {
            Arc::new(FakeHandler {
                outcome: Mutex::new(Outcome::Stored { id: "SUP-1".into() }),
                delivered: Mutex::new(Vec::new()),
                gate,
                entered: Notify::new(),
            })
        }
        fn delivered(&self) -> Vec<(Envelope, Vec<u8>)> {
            self.delivered.lock().unwrap().clone()
        }
    }

    impl Handler for FakeHandler {
        fn check_rcpt(&self, rcpt: &str) -> Result<(), String> {
            if rcpt.starts_with("nobody") {
                Err("not a support address".into())
            } else {
                Ok(())
            }
        }
        fn deliver(&self, envelope: Envelope, raw: Vec<u8>) -> BoxFuture<'_, Outcome> {
            Box::pin(async move {
                self.entered.notify_one();
                if let Some(gate) = &self.gate {
                    gate.notified().await;
                }
                self.delivered.lock().unwrap().push((envelope, raw));
                self.outcome.lock().unwrap().clone()
            })
        }
    }

    fn settings() -> Settings {
        Settings {
            hostname: "mx.test".into(),
            max_message_size: 2000,
            max_line_length: 100,
            max_header_size: 300,
            max_recipients: 3,
            idle_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(60),
            max_sessions: 10,
        }
    }

    /// The test's end of the connection.
    struct Client {
        r: BufReader<tokio::io::ReadHalf<DuplexStream>>,
        w: tokio::io::WriteHalf<DuplexStream>,
    }

    impl Client {
        async fn send(&mut self, s: &str) {
            self.send_bytes(s.as_bytes()).await;
        }
        async fn send_bytes(&mut self, b: &[u8]) {
            self.w.write_all(b).await.unwrap();
        }
        /// One reply line, CRLF stripped; "" once the server has closed.
        async fn line(&mut self) -> String {
            let mut l = String::new();
            tokio::time::timeout(Duration::from_secs(5), self.r.read_line(&mut l))
                .await
                .expect("no reply within 5 s")
                .unwrap();
            assert!(l.is_empty() || l.ends_with("\r\n"), "not CRLF: {l:?}");
            l.trim_end_matches("\r\n").to_string()
        }
        async fn expect(&mut self, code: &str) -> String {
            let l = self.line().await;
            assert_reply(&l, code);
            l
        }
        /// Reads the greeting and says LHLO.
        async fn hello(&mut self) {
            self.expect("220 ").await;
            self.send("LHLO client.test\r\n").await;
            while self.expect("250").await.starts_with("250-") {}
        }
        async fn expect_closed(&mut self) {
            assert_eq!(self.line().await, "", "server should have closed");
        }
    }

    fn assert_reply(line: &str, code: &str) {
        assert!(
            line.starts_with(code),
            "expected a `{code}` reply, got {line:?}"
        );
    }

    fn start(settings: Settings, handler: Arc<FakeHandler>) -> (Client, Trigger, JoinHandle<()>) {
        let (trigger, shutdown) = shutdown::channel();
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            run_session(theirs, "test", &settings, &*handler, shutdown).await;
        });
        let (r, w) = tokio::io::split(ours);
        let client = Client {
            r: BufReader::new(r),
            w,
        };
        (client, trigger, task)
    }

    const MSG: &str = "Subject: hi\r\nFrom: a@example.org\r\n\r\nHello\r\n";

    #[tokio::test]
    async fn happy_transaction_two_recipients_one_delivery() {
        let h = FakeHandler::new();
        let (mut c, _t, task) = start(settings(), h.clone());
        assert_eq!(c.line().await, "220 mx.test LMTP postdesk ready");
        c.send("LHLO client.test\r\n").await;
        let mut lhlo = Vec::new();
        loop {
            let l = c.expect("250").await;
            let last = l.starts_with("250 ");
            lhlo.push(l);
            if last {
                break;
            }
        }
        assert_eq!(
            lhlo,
            [
                "250-mx.test",
                "250-PIPELINING",
                "250-ENHANCEDSTATUSCODES",
                "250-8BITMIME",
                "250-SMTPUTF8",
                "250 SIZE 2000"
            ]
        );
        c.send("MAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8\r\n")
            .await;
        c.expect("250 2.1.0").await;
        c.send("RCPT TO:<support@example.com>\r\n").await;
        c.expect("250 2.1.5").await;
        c.send("RCPT TO:<Support+Billing@example.com>\r\n").await;
        c.expect("250 2.1.5").await;
        c.send("DATA\r\n").await;
        c.expect("354").await;
        c.send(MSG).await;
        c.send(".\r\n").await;
        assert_eq!(
            c.line().await,
            "250 2.0.0 <support@example.com> OK, stored as SUP-1"
        );
        assert_eq!(
            c.line().await,
            "250 2.0.0 <Support+Billing@example.com> OK, stored as SUP-1"
        );
        c.send("QUIT\r\n").await;
        c.expect("221 2.0.0").await;
        c.expect_closed().await;
        task.await.unwrap();

        let d = h.delivered();
        assert_eq!(d.len(), 1, "one deliver call for two recipients");
        assert_eq!(d[0].0.mail_from, "a@example.org");
        assert_eq!(
            d[0].0.rcpt_to,
            ["support@example.com", "Support+Billing@example.com"]
        );
        assert_eq!(d[0].1, MSG.as_bytes());
    }

    #[tokio::test]
    async fn duplicate_recipient_is_answered_twice() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<>\r\n").await;
        c.expect("250 2.1.0").await;
        for _ in 0..2 {
            c.send("RCPT TO:<support@example.com>\r\n").await;
            c.expect("250 2.1.5").await;
        }
        c.send("DATA\r\n").await;
        c.expect("354").await;
        c.send(MSG).await;
        c.send(".\r\n").await;
        c.expect("250 2.0.0 <support@example.com>").await;
        c.expect("250 2.0.0 <support@example.com>").await;
        let d = h.delivered();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0.mail_from, "", "null sender");
        assert_eq!(d[0].0.rcpt_to.len(), 2);
    }

    #[tokio::test]
    async fn pipelined_commands_in_one_write() {
        let h = FakeHandler::new();
        let (mut c, _t, task) = start(settings(), h.clone());
        c.expect("220").await;
        // Everything, message and QUIT included, in a single write.
        let all = format!(
            "LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@example.com>\r\n\
             RCPT TO:<support@example.com>\r\nDATA\r\n{MSG}.\r\nNOOP\r\nQUIT\r\n"
        );
        c.send(&all).await;
        while c.expect("250").await.starts_with("250-") {}
        c.expect("250 2.1.0").await;
        c.expect("550 5.1.1 <nobody@example.com>: not a support address")
            .await;
        c.expect("250 2.1.5").await;
        c.expect("354").await;
        c.expect("250 2.0.0 <support@example.com> OK, stored as SUP-1")
            .await;
        c.expect("250 2.0.0 OK").await;
        c.expect("221 2.0.0").await;
        c.expect_closed().await;
        task.await.unwrap();
        assert_eq!(h.delivered()[0].1, MSG.as_bytes());
    }

    /// One transaction with `body` sent after 354, to one recipient.
    struct Sent {
        client: Client,
        handler: Arc<FakeHandler>,
        /// The reply to the final dot.
        reply: String,
        /// What the handler got, if it was called.
        raw: Option<Vec<u8>>,
        /// Dropping the trigger would count as shutdown.
        _trigger: Trigger,
    }

    async fn transaction(settings: Settings, body: &[u8]) -> Sent {
        let h = FakeHandler::new();
        let (mut c, t, _task) = start(settings, h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n")
            .await;
        c.expect("250 2.1.0").await;
        c.expect("250 2.1.5").await;
        c.expect("354").await;
        c.send_bytes(body).await;
        let reply = c.line().await;
        let raw = h.delivered().pop().map(|(_, raw)| raw);
        Sent {
            client: c,
            handler: h,
            reply,
            raw,
            _trigger: t,
        }
    }

    #[tokio::test]
    async fn dot_unstuffing() {
        let body = b"..starts with a dot\r\nSubject: x\r\n\r\n..\r\n...more\r\n.\r\n";
        let Sent { reply, raw, .. } = transaction(settings(), body).await;
        assert_reply(&reply, "250 2.0.0");
        assert_eq!(
            raw.unwrap(),
            b".starts with a dot\r\nSubject: x\r\n\r\n.\r\n..more\r\n"
        );
    }

    #[tokio::test]
    async fn empty_message_right_after_data() {
        let Sent { reply, raw, .. } = transaction(settings(), b".\r\n").await;
        assert_reply(&reply, "250 2.0.0");
        assert_eq!(raw.unwrap(), b"");
    }

    #[tokio::test]
    async fn bare_lf_lines_are_kept_as_received() {
        let body = b"Subject: lf\nFrom: a@example.org\n\nline one\nline two\r\n.\r\n";
        let Sent { reply, raw, .. } = transaction(settings(), body).await;
        assert_reply(&reply, "250 2.0.0");
        assert_eq!(
            raw.unwrap(),
            b"Subject: lf\nFrom: a@example.org\n\nline one\nline two\r\n"
        );
    }

    /// SMTP smuggling: only CRLF.CRLF ends the data, so a bare-LF dot and
    /// the "commands" after it stay inside the message.
    #[tokio::test]
    async fn bare_lf_dot_does_not_end_the_message() {
        let body = b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@example.org>\r\n.\r\n";
        let Sent {
            handler: h,
            reply,
            raw,
            ..
        } = transaction(settings(), body).await;
        assert_reply(&reply, "250 2.0.0");
        assert_eq!(
            raw.unwrap(),
            b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@example.org>\r\n"
        );
        assert_eq!(h.delivered().len(), 1);
    }

    #[tokio::test]
    async fn message_split_across_many_writes() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n")
            .await;
        c.expect("250").await;
        c.expect("250").await;
        c.expect("354").await;
        let wire = b"Subject: x\r\n\r\n..dot\r\nend\r\n.\r\n";
        for b in wire.iter() {
            c.send_bytes(&[*b]).await;
            tokio::task::yield_now().await;
        }
        c.expect("250 2.0.0").await;
        assert_eq!(h.delivered()[0].1, b"Subject: x\r\n\r\n.dot\r\nend\r\n");
    }

    #[tokio::test]
    async fn declared_size_over_limit_is_552() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org> SIZE=2001\r\n").await;
        let l = c.expect("552 5.3.4").await;
        assert!(l.contains("2000"), "{l}");
        // Still usable, and SIZE within the limit is fine.
        c.send("MAIL FROM:<a@example.org> SIZE=2000\r\n").await;
        c.expect("250 2.1.0").await;
    }

    #[tokio::test]
    async fn oversized_body_is_552_for_every_recipient_and_session_goes_on() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.com>\r\nRCPT TO:<support+x@example.com>\r\nDATA\r\n")
            .await;
        c.expect("250").await;
        c.expect("250").await;
        c.expect("250").await;
        c.expect("354").await;
        c.send("Subject: big\r\n\r\n").await;
        let line = format!("{}\r\n", "x".repeat(90));
        for _ in 0..50 {
            c.send(&line).await;
        }
        c.send(".\r\n").await;
        let l = c.expect("552 5.3.4").await;
        assert!(l.contains("maximum size of 2000 bytes"), "{l}");
        c.expect("552 5.3.4").await;
        assert!(h.delivered().is_empty());

        // In step: the next transaction works.
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.com>\r\nDATA\r\n")
            .await;
        c.expect("250 2.1.0").await;
        c.expect("250 2.1.5").await;
        c.expect("354").await;
        c.send(MSG).await;
        c.send(".\r\n").await;
        c.expect("250 2.0.0").await;
        assert_eq!(h.delivered().len(), 1);
    }

    #[tokio::test]
    async fn message_of_exactly_the_limit_is_accepted() {
        // 2000 bytes, final CRLF included (it belongs to the message).
        let mut body = "Subject: x\r\n\r\n".to_string();
        while body.len() < 2000 {
            let n = (2000 - body.len()).min(60);
            body.push_str(&"y".repeat(n - 2));
            body.push_str("\r\n");
        }
        assert_eq!(body.len(), 2000);
        let wire = format!("{body}.\r\n");
        let Sent { reply, raw, .. } = transaction(settings(), wire.as_bytes()).await;
        assert_reply(&reply, "250 2.0.0");
        assert_eq!(raw.unwrap(), body.as_bytes());

        let wire = format!("{body}z\r\n.\r\n");
        let Sent { reply, .. } = transaction(settings(), wire.as_bytes()).await;
        assert_reply(&reply, "552 5.3.4");
    }

    #[tokio::test]
    async fn header_too_large_is_552() {
        let mut body = String::new();
        for i in 0..10 {
            body.push_str(&format!("X-Filler-{i}: {}\r\n", "h".repeat(40)));
        }
        body.push_str("\r\nshort body\r\n.\r\n");
        let Sent {
            client: mut c,
            handler: h,
            reply,
            _trigger: _t,
            ..
        } = transaction(settings(), body.as_bytes()).await;
        assert_reply(&reply, "552 5.3.4");
        assert!(reply.contains("Header block"), "{reply}");
        assert!(h.delivered().is_empty());
        c.send("NOOP\r\n").await;
        c.expect("250 2.0.0").await;
    }

    #[tokio::test]
    async fn header_without_body_counts_whole_message() {
        let mut body = String::new();
        for i in 0..10 {
            body.push_str(&format!("X-Filler-{i}: {}\r\n", "h".repeat(40)));
        }
        body.push_str(".\r\n");
        let Sent { reply, .. } = transaction(settings(), body.as_bytes()).await;
        assert_reply(&reply, "552 5.3.4 Header block");
    }

    #[tokio::test]
    async fn line_too_long_is_552() {
        let body = format!("Subject: x\r\n\r\n{}\r\n.\r\n", "L".repeat(101));
        let Sent {
            client: mut c,
            handler: h,
            reply,
            _trigger: _t,
            ..
        } = transaction(settings(), body.as_bytes()).await;
        assert_reply(&reply, "552 5.3.4");
        assert!(
            reply.contains("line over the maximum length of 100"),
            "{reply}"
        );
        assert!(h.delivered().is_empty());
        c.send("RSET\r\n").await;
        c.expect("250 2.0.0").await;

        // Exactly the limit is fine, with CRLF or bare LF.
        let body = format!(
            "Subject: x\r\n\r\n{}\r\n{}\nend\r\n.\r\n",
            "L".repeat(100),
            "M".repeat(100)
        );
        let Sent { reply, .. } = transaction(settings(), body.as_bytes()).await;
        assert_reply(&reply, "250 2.0.0");
    }

    #[tokio::test]
    async fn unknown_recipient_is_550() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org>\r\n").await;
        c.expect("250").await;
        c.send("RCPT TO:<nobody@example.com>\r\n").await;
        assert_eq!(
            c.line().await,
            "550 5.1.1 <nobody@example.com>: not a support address"
        );
        // Only refused recipients: DATA is refused too.
        c.send("DATA\r\n").await;
        c.expect("503 5.5.1").await;
    }

    #[tokio::test]
    async fn out_of_order_commands_are_503() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.expect("220").await;
        c.send("MAIL FROM:<a@example.org>\r\n").await;
        c.expect("503 5.5.1").await;
        c.send("LHLO c\r\n").await;
        while c.expect("250").await.starts_with("250-") {}
        c.send("RCPT TO:<support@example.com>\r\n").await;
        c.expect("503 5.5.1").await;
        c.send("DATA\r\n").await;
        c.expect("503 5.5.1").await;
        c.send("MAIL FROM:<a@example.org>\r\nMAIL FROM:<b@example.org>\r\nDATA\r\n")
            .await;
        c.expect("250 2.1.0").await;
        c.expect("503 5.5.1").await;
        c.expect("503 5.5.1").await;
        c.send("RSET\r\nRCPT TO:<support@example.com>\r\n").await;
        c.expect("250 2.0.0").await;
        c.expect("503 5.5.1").await;
    }

    #[tokio::test]
    async fn tempfail_is_451_per_recipient() {
        let h = FakeHandler::new();
        *h.outcome.lock().unwrap() = Outcome::TempFail {
            reason: "disk full".into(),
        };
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.com>\r\nRCPT TO:<s2@example.com>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.expect("250").await;
        }
        c.expect("354").await;
        c.send(MSG).await;
        c.send(".\r\n").await;
        assert_eq!(
            c.line().await,
            "451 4.3.0 <support@example.com> Temporary failure, try again later"
        );
        assert_eq!(
            c.line().await,
            "451 4.3.0 <s2@example.com> Temporary failure, try again later"
        );
        assert_eq!(h.delivered().len(), 1);
    }

    #[tokio::test]
    async fn too_many_recipients_is_452() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org>\r\n").await;
        c.expect("250").await;
        for i in 0..3 {
            c.send(&format!("RCPT TO:<s{i}@example.com>\r\n")).await;
            c.expect("250 2.1.5").await;
        }
        c.send("RCPT TO:<s3@example.com>\r\n").await;
        c.expect("452 4.5.3").await;
        c.send("DATA\r\n").await;
        c.expect("354").await;
        c.send(MSG).await;
        c.send(".\r\n").await;
        for _ in 0..3 {
            c.expect("250 2.0.0").await;
        }
        assert_eq!(h.delivered()[0].0.rcpt_to.len(), 3);
    }

    #[tokio::test]
    async fn other_commands() {
        let h = FakeHandler::new();
        let (mut c, _t, task) = start(settings(), h.clone());
        c.expect("220").await;
        c.send("HELO c\r\n").await;
        c.expect("500 5.5.1").await;
        c.send("EHLO c\r\n").await;
        let l = c.expect("500 5.5.1").await;
        assert!(l.contains("LHLO"), "{l}");
        c.send("VRFY support\r\n").await;
        c.expect("252 2.5.0").await;
        c.send("NOOP\r\n").await;
        assert_eq!(c.line().await, "250 2.0.0 OK");
        c.send("RSET\r\n").await;
        assert_eq!(c.line().await, "250 2.0.0 OK");
        c.send("HELP\r\nSTARTTLS\r\n").await;
        c.expect("502 5.5.1").await;
        c.expect("502 5.5.1").await;
        // BDAT is refused after its chunk is stepped over, so "QUIT\r\n"
        // inside the chunk is not taken for a command.
        c.send("BDAT 6\r\nQUIT\r\nNOOP\r\n").await;
        c.expect("502 5.5.1").await;
        c.expect("250 2.0.0").await;
        c.send("LHLO c\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\n")
            .await;
        while c.expect("250").await.starts_with("250-") {}
        c.expect("555 5.5.4").await;
        c.send("QUIT\r\n").await;
        assert_eq!(c.line().await, "221 2.0.0 Bye");
        c.expect_closed().await;
        task.await.unwrap();
    }

    #[tokio::test]
    async fn garbled_command_is_500_with_parser_reason() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        c.send("FROB\r\n").await;
        assert_eq!(c.line().await, "500 5.5.2 Unknown command");
        c.send("MAIL FROM:<a@example.org> HELLO=WORLD\r\n").await;
        let l = c.expect("500 5.5.2").await;
        assert!(l.contains("HELLO=WORLD"), "{l}");
        c.send("MAIL FROM:a@example.org\r\n").await;
        let l = c.expect("500 5.5.2 Syntax error").await;
        assert!(l.contains("MAIL FROM:<reverse-path>"), "{l}");
        c.send("MAIL FROM:<a@example.org>\r\n").await;
        c.expect("250 2.1.0").await;
    }

    #[tokio::test]
    async fn long_command_line_is_500_and_tail_is_discarded() {
        let h = FakeHandler::new();
        let (mut c, _t, _task) = start(settings(), h.clone());
        c.hello().await;
        // Split over writes, so smtp-proto's receiver holds the partial line.
        c.send("NOOP ").await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
            c.send(&"a".repeat(1000)).await;
        }
        c.send(" QUIT\r\nNOOP\r\n").await;
        assert_eq!(c.line().await, "500 5.5.2 Line too long");
        c.expect("250 2.0.0").await;
        // Whole in one write: the same answer.
        c.send(&format!("NOOP {}\r\nNOOP\r\n", "b".repeat(5000)))
            .await;
        assert_eq!(c.line().await, "500 5.5.2 Line too long");
        c.expect("250 2.0.0").await;
    }

    #[tokio::test]
    async fn idle_timeout_is_421() {
        let mut s = settings();
        s.idle_timeout = Duration::from_millis(200);
        let (mut c, _t, task) = start(s, FakeHandler::new());
        c.expect("220").await;
        assert_eq!(c.line().await, "421 4.4.2 mx.test Idle timeout, closing");
        c.expect_closed().await;
        task.await.unwrap();
    }

    #[tokio::test]
    async fn idle_timeout_mid_message_is_421() {
        let mut s = settings();
        s.idle_timeout = Duration::from_millis(1000);
        let h = FakeHandler::new();
        let (mut c, _t, task) = start(s, h.clone());
        c.expect("220").await;
        // One write, so a slow test machine cannot trip the timer early.
        c.send("LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.com>\r\nDATA\r\nSubject: x\r\n")
            .await;
        while c.expect("250").await.starts_with("250-") {}
        c.expect("250").await;
        c.expect("250").await;
        c.expect("354").await;
        c.expect("421 4.4.2").await;
        c.expect_closed().await;
        task.await.unwrap();
        assert!(h.delivered().is_empty());
    }

    #[tokio::test]
    async fn session_timeout_is_421_even_when_busy() {
        let mut s = settings();
        s.session_timeout = Duration::from_millis(300);
        let (mut c, _t, task) = start(s, FakeHandler::new());
        c.expect("220").await;
        loop {
            // The server may close between our sleep and this write.
            let _ = c.w.write_all(b"NOOP\r\n").await;
            let l = c.line().await;
            if l.starts_with("421") {
                assert_eq!(l, "421 4.4.2 mx.test Session too long, closing; try again");
                break;
            }
            assert_reply(&l, "250 2.0.0");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_while_idle_is_421() {
        let (mut c, t, task) = start(settings(), FakeHandler::new());
        c.hello().await;
        t.fire();
        assert_eq!(
            c.line().await,
            "421 4.3.0 mx.test Shutting down, try again later"
        );
        c.expect_closed().await;
        task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_during_delivery_lets_it_finish() {
        let gate = Arc::new(Notify::new());
        let h = FakeHandler::with_gate(Some(gate.clone()));
        let (mut c, t, task) = start(settings(), h.clone());
        c.hello().await;
        c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<support@example.com>\r\nRCPT TO:<s2@example.com>\r\nDATA\r\n")
            .await;
        for _ in 0..3 {
            c.expect("250").await;
        }
        c.expect("354").await;
        c.send(MSG).await;
        c.send(".\r\n").await;
        h.entered.notified().await;
        t.fire();
        tokio::task::yield_now().await;
        gate.notify_one();
        c.expect("250 2.0.0 <support@example.com>").await;
        c.expect("250 2.0.0 <s2@example.com>").await;
        c.expect("421 4.3.0").await;
        c.expect_closed().await;
        task.await.unwrap();
        assert_eq!(h.delivered().len(), 1);
    }

    #[test]
    fn settings_from_config() {
        let s = Settings::from_config(&Config::default());
        assert_eq!(s.max_message_size, 50 * 1024 * 1024);
        assert_eq!(s.max_recipients, 100);
        assert_eq!(s.idle_timeout, Duration::from_secs(300));
        assert_eq!(s.session_timeout, Duration::from_secs(1800));
        assert!(!s.hostname.is_empty());
        assert!(!s.hostname.contains(char::is_whitespace));
    }

    #[tokio::test]
    async fn peer_closing_ends_the_session() {
        let (c, _t, task) = start(settings(), FakeHandler::new());
        drop(c);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
