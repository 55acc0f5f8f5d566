//! `postdesk import mbox FILE` (SPEC §7): backfill history through the same
//! delivery transaction the daemon runs, sending nothing.
//!
//! Each message goes through `deliver::decide_and_apply` in `Mode::Import`,
//! with `now` taken from the message's own Date, so tickets start when the
//! mail was written and reopen windows are judged against history, not
//! against the day of the import.
//!
//! Order matters: a reply must be committed after its root or it opens a
//! ticket of its own. So jobs are handed to the store's committer in mbox
//! order, from one thread, and only the waiting is overlapped: each job is
//! submitted (the first poll of `Store::commit` queues it), and up to
//! `MAX_IN_FLIGHT` are awaited later, so the committer finds whole batches
//! queued and makes each durable with one sync (group commit). Committing
//! from several threads with `commit_blocking` would be as fast but would
//! lose the order.
//!
//! sled lets one process open the store, so import refuses while a daemon
//! runs. An import stopped halfway (Ctrl-C, a store error) is resumed by
//! running it again: what was committed comes back as duplicates.

use crate::config::Config;
use crate::control::{self, Request};
use crate::deliver::{decide_and_apply_with, Mode};
use crate::ingest::decide::Context as DecideContext;
use crate::ingest::decide::{Action, Decision};
use crate::ingest::{parse::parse, Envelope};
use crate::render::Templates;
use crate::store::{Store, Timestamp};
use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Backfill history from an mbox file (mboxrd or mboxo), oldest first.
    /// Nothing is sent. Stop the daemon first.
    Mbox {
        /// The mbox file.
        file: std::path::PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Jobs handed to the committer and not yet answered. Above one committer
/// batch (256) so a batch is always full while the previous one syncs.
const MAX_IN_FLIGHT: usize = 1024;
/// …and never more raw bytes than this waiting in memory.
const MAX_IN_FLIGHT_BYTES: usize = 64 * 1024 * 1024;

/// What an import did, for the summary (and `--json`).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub file: String,
    /// Messages read from the mbox (including skipped ones).
    pub messages: u64,
    pub bytes: u64,
    pub tickets_created: u64,
    /// Joined an existing ticket (reply, note, reopen, attached auto-reply…).
    pub joined: u64,
    pub duplicates: u64,
    /// Auto-replies and bounces that matched no ticket, and our own mail.
    pub kept_apart: u64,
    /// Stored, with problems noted (no Message-ID, broken MIME …).
    pub malformed: u64,
    /// Over `limits.max_message_size`: not imported, as the daemon would
    /// refuse them.
    pub too_large: u64,
    /// Per `action` of the decision (new, append, reopen, apart …).
    pub actions: BTreeMap<String, u64>,
    /// Group commits the store made (each one sync for many messages).
    pub syncs: u64,
    pub seconds: f64,
    pub messages_per_second: f64,
}

impl Summary {
    fn record(&mut self, d: &Decision) {
        *self
            .actions
            .entry(d.action.as_str().to_string())
            .or_default() += 1;
        match d.action {
            Action::Duplicate => self.duplicates += 1,
            Action::Apart | Action::Loop => self.kept_apart += 1,
            _ if d.new_ticket => self.tickets_created += 1,
            _ if d.ticket.is_some() => self.joined += 1,
            // Every other action carries a ticket; count a stray one apart
            // rather than lose it from the totals.
            _ => self.kept_apart += 1,
        }
    }

    fn print(&self) {
        println!("imported {}", self.file);
        println!(
            "  messages read    {:>8}  ({})",
            self.messages,
            human_bytes(self.bytes)
        );
        println!("  tickets created  {:>8}", self.tickets_created);
        println!("  joined a ticket  {:>8}", self.joined);
        println!("  duplicates       {:>8}", self.duplicates);
        println!(
            "  kept apart       {:>8}  (auto-replies and bounces matching no ticket)",
            self.kept_apart
        );
        println!(
            "  malformed        {:>8}  (stored, problems noted)",
            self.malformed
        );
        if self.too_large > 0 {
            println!(
                "  too large        {:>8}  (over limits.max_message_size: skipped)",
                self.too_large
            );
        }
        println!(
            "  time             {:>8.2}s ({:.0} messages/s, {} syncs)",
            self.seconds, self.messages_per_second, self.syncs
        );
        println!("  nothing was sent");
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

pub fn run(cfg: &Config, cmd: ImportCmd) -> anyhow::Result<std::process::ExitCode> {
    match cmd {
        ImportCmd::Mbox { file, json } => {
            let s = import_mbox(cfg, &file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                s.print();
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// Refuses when a daemon answers on the control socket: it holds the store.
pub(crate) fn refuse_if_daemon_runs(cfg: &Config, what: &str) -> anyhow::Result<()> {
    let path = cfg.control_path();
    match control::call(&path, &Request::Ping) {
        Ok(None) => Ok(()),
        Ok(Some(_)) => bail!(
            "a postdesk daemon is running (it answered on {}); it holds the store, \
             and sled allows one process: stop it first (systemctl stop postdesk), \
             {what}, then start it again",
            path.display()
        ),
        Err(e) => bail!(
            "cannot tell whether a daemon is running ({e}); if one is, stop it first, \
             then {what}"
        ),
    }
}

/// Opens the store directly, turning "locked" into what to do about it.
pub(crate) fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open_backend(&cfg.store, &cfg.data_dir).map_err(|e| match e {
        crate::store::Error::Locked(dir) => anyhow!(
            "the store in {} is in use by another process (a daemon not answering on {}, \
             or another import): stop it first",
            dir.display(),
            cfg.control_path().display()
        ),
        e => anyhow!(e).context(format!("opening the store in {}", cfg.data_dir.display())),
    })
}

pub fn import_mbox(cfg: &Config, file: &Path) -> anyhow::Result<Summary> {
    refuse_if_daemon_runs(cfg, "run the import")?;
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("reading {}", file.display()))?;
    // The last resort for a message with no usable Date and none before it.
    let file_time = meta
        .modified()
        .ok()
        .and_then(|t| Timestamp::try_from(t).ok())
        .unwrap_or_else(Timestamp::now);
    let mut reader = MboxReader::new(BufReader::with_capacity(1 << 20, f));
    // Not an mbox: say so before a store is opened or created.
    reader
        .start()
        .with_context(|| format!("reading {}", file.display()))?;
    let tpl = Templates::for_config(cfg)?;
    let store = open_store(cfg)?;
    // A new store starts with its load counters marked built and keeps them
    // with every ticket written here; an older one is counted now, streamed.
    // Otherwise the daemon's first start after a large import would count a
    // million tickets before it listens.
    crate::workload::ensure_loads(&store)?;
    let progress = Progress::new(meta.len());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting the runtime")?;
    let job = Import {
        store: store.clone(),
        rules: crate::policy::Rules::new(cfg)?,
        cfg: Arc::new(cfg.clone()),
        tpl: Arc::new(tpl),
        file_time,
        progress,
    };
    let started = Instant::now();
    let r = rt.block_on(job.run(reader));
    drop(job);
    // Every job already queued is committed and synced before close returns.
    store.close();
    let syncs = store.stats().batches;
    drop(store);
    if r.is_ok() {
        replay_once(cfg);
    }
    let mut s = r?;
    s.syncs = syncs;
    s.file = file.display().to_string();
    s.seconds = started.elapsed().as_secs_f64();
    s.messages_per_second = if s.seconds > 0.0 {
        s.messages as f64 / s.seconds
    } else {
        0.0
    };
    Ok(s)
}

/// sled writes its page-table snapshot only when a store is opened, and the
/// next open replays every log write made since: after a large import that
/// would be the daemon's first start (1.5 s after a million tickets,
/// docs/performance.md). Opening the store once more here moves that replay
/// into the import. sled lets go of its lock a moment after the last handle
/// is dropped, hence the short wait.
fn replay_once(cfg: &Config) {
    if cfg.store.backend == crate::config::StoreBackend::Postgres {
        return;
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(&cfg.data_dir) {
            Ok(s) => {
                s.close();
                return;
            }
            Err(crate::store::Error::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            // Only a speed-up: the daemon replays the log itself otherwise.
            Err(e) => {
                tracing::debug!(error = %e, "reopening the store after the import");
                return;
            }
        }
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = crate::store::Result<Decision>> + 'a>>;

struct InFlight<'a> {
    fut: Pending<'a>,
    /// 1-based position in the mbox: for errors.
    number: u64,
    parsed: Arc<crate::ingest::Parsed>,
    len: usize,
    submitted: Instant,
}

struct Import {
    store: Store,
    /// Compiled once for the whole import.
    rules: crate::policy::Rules,
    cfg: Arc<Config>,
    tpl: Arc<Templates>,
    file_time: Timestamp,
    progress: Progress,
}

impl Import {
    async fn run<R: BufRead>(&self, mut reader: MboxReader<R>) -> anyhow::Result<Summary> {
        let mut s = Summary::default();
        let mut queue: VecDeque<InFlight<'_>> = VecDeque::new();
        let mut queued_bytes = 0usize;
        let mut last_time: Option<Timestamp> = None;
        let wall = Timestamp::now();
        let max = usize::try_from(self.cfg.limits.max_message_size).unwrap_or(usize::MAX);
        loop {
            let next = reader
                .next_message(max)
                .with_context(|| format!("reading message {} of the mbox", s.messages + 1))?;
            let Some(msg) = next else { break };
            s.messages += 1;
            s.bytes += msg.len as u64;
            // Done = read and answered by the store (the queue is ahead).
            self.progress
                .update(reader.consumed(), s.messages - queue.len() as u64);
            if msg.truncated {
                s.too_large += 1;
                continue;
            }
            let parsed = Arc::new(parse(&msg.raw));
            if !parsed.problems.is_empty() {
                s.malformed += 1;
            }
            let now = message_time(parsed.date.as_deref(), wall)
                .or(last_time)
                .unwrap_or(self.file_time);
            last_time = Some(now);
            let env = Envelope {
                mail_from: envelope_sender(&msg.raw)
                    .or_else(|| {
                        parsed
                            .from
                            .as_ref()
                            .or(parsed.sender.as_ref())
                            .map(|a| a.email.clone())
                            .filter(|e| !e.is_empty())
                    })
                    .or_else(|| from_line_sender(&msg.from_line))
                    .unwrap_or_default(),
                rcpt_to: vec![self.cfg.support.address.clone()],
            };
            let len = msg.raw.len();
            let (cfg, tpl, p) = (self.cfg.clone(), self.tpl.clone(), parsed.clone());
            let rules = self.rules.clone();
            let mut fut: Pending<'_> = Box::pin(self.store.commit(
                Some(Arc::new(msg.raw)),
                move |tx, raw_ref| {
                    // History: routed for category, priority, tags and
                    // watchers, given to nobody (see `Context::history`).
                    let ctx = DecideContext {
                        rules: Some(&rules),
                        history: true,
                        answers: tpl.answers(),
                        ..DecideContext::default()
                    };
                    decide_and_apply_with(
                        tx,
                        raw_ref,
                        &p,
                        &env,
                        &cfg,
                        &tpl,
                        now,
                        Mode::Import,
                        &ctx,
                    )
                },
            ));
            // The first poll queues the job with the committer (in mbox
            // order); its answer is collected later.
            let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
            let inflight = InFlight {
                fut,
                number: s.messages,
                parsed,
                len,
                submitted: Instant::now(),
            };
            match first {
                Poll::Ready(r) => finish(&mut s, &inflight, r, &self.cfg)?,
                Poll::Pending => {
                    queued_bytes += len;
                    queue.push_back(inflight);
                }
            }
            // sled's one committer takes jobs in the order they were
            // queued; PostgreSQL runs each in its own transaction, in any
            // order, so there a message waits for the one before it.
            let max_in_flight = match self.store {
                Store::Sled(_) => MAX_IN_FLIGHT,
                Store::Pg(_) => 1,
            };
            while queue.len() >= max_in_flight || queued_bytes > MAX_IN_FLIGHT_BYTES {
                let Some(f) = queue.pop_front() else { break };
                queued_bytes -= f.len;
                let r = wait(f, &mut s, &self.cfg).await;
                if r.is_err() {
                    // The first failure is the one to report; the rest of
                    // the queue is only collected for the counts.
                    let _later = drain(queue, &mut s, &self.cfg).await;
                    self.progress.finish();
                    return r.map(|_| s);
                }
            }
        }
        let r = drain(queue, &mut s, &self.cfg).await;
        self.progress.finish();
        r.map(|_| s)
    }
}

/// Collects the rest of the queue (they were submitted: each is committed
/// or not, and the summary should say so), returning the first error.
async fn drain(queue: VecDeque<InFlight<'_>>, s: &mut Summary, cfg: &Config) -> anyhow::Result<()> {
    let mut first_err = None;
    for f in queue {
        if let Err(e) = wait(f, s, cfg).await {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn wait(mut f: InFlight<'_>, s: &mut Summary, cfg: &Config) -> anyhow::Result<()> {
    let r = f.fut.as_mut().await;
    finish(s, &f, r, cfg)
}

fn finish(
    s: &mut Summary,
    f: &InFlight<'_>,
    r: crate::store::Result<Decision>,
    cfg: &Config,
) -> anyhow::Result<()> {
    match r {
        Ok(d) => {
            s.record(&d);
            // The daemon's `delivered` line, at info level: `RUST_LOG=info`
            // shows what became of each message.
            crate::deliver::log_delivered(&f.parsed, &d, cfg, f.submitted.elapsed().as_millis());
            Ok(())
        }
        Err(e) => Err(anyhow!(e).context(format!(
            "message {} of the mbox (<{}>) could not be stored; the messages before it \
             are, and running the same import again skips them as duplicates",
            f.number, f.parsed.message_id
        ))),
    }
}

/// The message's own Date, when it parsed and is not in the future (a
/// clock-skewed sender must not push tickets past today).
fn message_time(date: Option<&str>, wall: Timestamp) -> Option<Timestamp> {
    date.and_then(|d| d.parse::<Timestamp>().ok())
        .filter(|t| *t <= wall)
}

/// The envelope sender the final MTA recorded: the topmost `Return-Path`.
/// `Some("")` for the null sender `<>` (bounces), `None` when absent.
pub fn envelope_sender(raw: &[u8]) -> Option<String> {
    for (name, value) in header_fields(raw) {
        if name.eq_ignore_ascii_case("return-path") {
            let v = value.trim();
            let inner = match (v.find('<'), v.rfind('>')) {
                (Some(a), Some(b)) if a < b => &v[a + 1..b],
                _ => v,
            };
            return Some(inner.trim().to_ascii_lowercase());
        }
    }
    None
}

/// The sender on the `From sender date` line, when it is an address. Last
/// in line after `Return-Path` and the From header: tools write all sorts
/// there (`-`, a commit id, `MAILER-DAEMON` for any unknown sender), and a
/// made-up null sender would turn a person's mail into an auto-reply.
fn from_line_sender(line: &str) -> Option<String> {
    let s = line.strip_prefix("From ")?.split_whitespace().next()?;
    let s = s.trim_start_matches('<').trim_end_matches('>');
    match s.split_once('@') {
        Some((l, d)) if !l.is_empty() && !d.is_empty() => Some(s.to_ascii_lowercase()),
        _ => None,
    }
}

/// Unfolded (name, value) header fields, up to the first empty line.
fn header_fields(raw: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(String::from_utf8_lossy(line).trim());
            }
            continue;
        }
        let text = String::from_utf8_lossy(line);
        if let Some((n, v)) = text.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

// ---- mbox -------------------------------------------------------------

/// One message out of an mbox, `>From ` unquoted, separator line removed.
#[derive(Debug)]
pub struct MboxMessage {
    pub raw: Vec<u8>,
    /// The `From ` separator line (envelope sender and delivery time).
    pub from_line: String,
    /// Bytes the message had in the file, whether or not it was kept whole.
    pub len: usize,
    /// Longer than the limit given to `next_message`: `raw` holds only its
    /// beginning.
    pub truncated: bool,
}

/// Reads an mbox message by message, holding one message in memory.
///
/// Separator: a line starting `From ` at the start of the file or after an
/// empty line, which also carries a time (`12:08:34`, as every `From_`
/// line's asctime date does). The empty line before it belongs to the
/// mbox, not to the message. Quoted lines (`>From `, `>>From ` …) lose one
/// `>`: right for mboxrd, and for mboxo, whose writers quote only
/// `From ` itself.
pub struct MboxReader<R> {
    r: R,
    consumed: u64,
    /// The separator line already read that starts the next message.
    pending_from: Option<String>,
    started: bool,
    line: Vec<u8>,
}

impl<R: BufRead> MboxReader<R> {
    pub fn new(r: R) -> Self {
        MboxReader {
            r,
            consumed: 0,
            pending_from: None,
            started: false,
            line: Vec::with_capacity(1024),
        }
    }

    /// Bytes of the file read so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    fn read_line(&mut self) -> std::io::Result<bool> {
        self.line.clear();
        let n = self.r.read_until(b'\n', &mut self.line)?;
        self.consumed += n as u64;
        Ok(n > 0)
    }

    /// Reads up to the first separator: an error when the file is not an
    /// mbox, before anything else is touched. `next_message` calls it.
    pub fn start(&mut self) -> std::io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        // Empty lines before the first separator are tolerated; anything
        // else means this is not an mbox.
        loop {
            if !self.read_line()? {
                return Ok(());
            }
            if is_blank(&self.line) {
                continue;
            }
            if is_separator(&self.line) {
                self.pending_from = Some(line_text(&self.line));
                return Ok(());
            }
            let first: String = line_text(&self.line).chars().take(80).collect();
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an mbox: it should start with a \"From sender date\" line, not {first:?}"
                ),
            ));
        }
    }

    /// The next message; `raw` keeps at most `max` bytes (the rest is read
    /// and dropped, and `truncated` set).
    pub fn next_message(&mut self, max: usize) -> std::io::Result<Option<MboxMessage>> {
        self.start()?;
        let Some(from_line) = self.pending_from.take() else {
            return Ok(None);
        };
        let mut raw = Vec::new();
        let mut len = 0usize;
        let mut truncated = false;
        // Length of the last line when it was empty: dropped if a separator
        // (or the end of the file) follows it.
        let mut blank_tail: Option<usize> = None;
        while self.read_line()? {
            if blank_tail.is_some() && is_separator(&self.line) {
                self.pending_from = Some(line_text(&self.line));
                break;
            }
            let line: &[u8] = if is_quoted_from(&self.line) {
                &self.line[1..]
            } else {
                &self.line
            };
            len += line.len();
            if raw.len() + line.len() <= max {
                raw.extend_from_slice(line);
            } else {
                truncated = true;
            }
            blank_tail = is_blank(line).then_some(line.len());
        }
        if let Some(n) = blank_tail {
            len -= n;
            if !truncated {
                raw.truncate(raw.len().saturating_sub(n));
            }
        }
        Ok(Some(MboxMessage {
            raw,
            from_line,
            len,
            truncated,
        }))
    }
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

fn line_text(line: &[u8]) -> String {
    String::from_utf8_lossy(line).trim_end().to_string()
}

/// `From sender Thu Jan  1 00:00:00 2024`: starts `From `, has a time.
fn is_separator(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"From ") else {
        return false;
    };
    rest.split(|b| b.is_ascii_whitespace()).any(|w| {
        let mut parts = w.split(|b| *b == b':');
        let ok = |p: Option<&[u8]>| {
            p.is_some_and(|p| (1..=2).contains(&p.len()) && p.iter().all(u8::is_ascii_digit))
        };
        ok(parts.next()) && ok(parts.next())
    })
}

fn is_quoted_from(line: &[u8]) -> bool {
    let unq = line.iter().position(|b| *b != b'>').unwrap_or(line.len());
    unq > 0 && line[unq..].starts_with(b"From ")
}

// ---- progress -----------------------------------------------------------

/// A progress bar on stderr when it is a terminal; nothing otherwise (a
/// log or a pipe gets only the summary).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    /// When the text was last rebuilt (not worth it per message).
    shown: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        Progress {
            bar,
            started: Instant::now(),
            shown: std::cell::Cell::new(Instant::now()),
        }
    }

    fn update(&self, bytes: u64, messages: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(bytes);
        // indicatif redraws at most 20 times a second; the text is rebuilt
        // about as often.
        if self.shown.get().elapsed() >= std::time::Duration::from_millis(100) {
            self.shown.set(Instant::now());
            let secs = self.started.elapsed().as_secs_f64();
            let rate = if secs > 0.0 {
                messages as f64 / secs
            } else {
                0.0
            };
            bar.set_message(format!("{messages} messages, {rate:.0}/s"));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mbox: &[u8]) -> Vec<MboxMessage> {
        let mut r = MboxReader::new(mbox);
        let mut out = Vec::new();
        while let Some(m) = r.next_message(usize::MAX).unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn splits_on_from_lines_and_unquotes() {
        let mbox = b"From a@x Thu Jan  1 00:00:00 2024\nSubject: one\n\nhello\n>From here\n>>From there\n\nFrom b@y Fri Jan  2 10:11:12 2024\nSubject: two\n\nbye\n\n";
        let m = read_all(mbox);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0].raw,
            b"Subject: one\n\nhello\nFrom here\n>From there\n".to_vec()
        );
        assert_eq!(m[0].from_line, "From a@x Thu Jan  1 00:00:00 2024");
        assert_eq!(m[1].raw, b"Subject: two\n\nbye\n".to_vec());
        assert_eq!(m[1].len, m[1].raw.len());
    }

    #[test]
    fn a_from_paragraph_without_a_time_is_body() {
        let mbox =
            b"From a@x Thu Jan  1 00:00:00 2024\r\nSubject: one\r\n\r\nhi\r\n\r\nFrom me, thanks\r\n";
        let m = read_all(mbox);
        assert_eq!(m.len(), 1);
        assert!(m[0].raw.ends_with(b"\r\n\r\nFrom me, thanks\r\n"));
    }

    #[test]
    fn not_an_mbox_is_an_error() {
        let mut r = MboxReader::new(&b"Subject: x\n\nbody\n"[..]);
        assert!(r.next_message(usize::MAX).is_err());
        let mut r = MboxReader::new(&b""[..]);
        assert!(r.next_message(usize::MAX).unwrap().is_none());
    }

    #[test]
    fn oversized_messages_are_marked_not_kept() {
        let mbox = b"From a@x Thu Jan  1 00:00:00 2024\nSubject: big\n\n0123456789\n\nFrom b@y Thu Jan  1 00:00:01 2024\nSubject: s\n\nx\n";
        let mut r = MboxReader::new(&mbox[..]);
        let big = r.next_message(16).unwrap().unwrap();
        assert!(big.truncated);
        assert_eq!(big.len, "Subject: big\n\n0123456789\n".len());
        let small = r.next_message(16).unwrap().unwrap();
        assert!(!small.truncated);
        assert_eq!(small.raw, b"Subject: s\n\nx\n".to_vec());
    }

    #[test]
    fn return_path_gives_the_envelope_sender() {
        assert_eq!(
            envelope_sender(b"Return-Path: <Bob@Example.org>\nFrom: x@y\n\nb").as_deref(),
            Some("bob@example.org")
        );
        assert_eq!(
            envelope_sender(b"Return-Path: <>\n\nb").as_deref(),
            Some("")
        );
        assert_eq!(envelope_sender(b"From: x@y\n\nReturn-Path: <a@b>\n"), None);
    }

    #[test]
    fn from_line_sender_only_when_it_is_an_address() {
        let f = |l: &str| from_line_sender(l);
        assert_eq!(
            f("From Jane@Example.org Thu Jan  1 00:00:00 2024").as_deref(),
            Some("jane@example.org")
        );
        assert_eq!(f("From - Thu Jan  1 00:00:00 2024"), None);
        assert_eq!(f("From MAILER-DAEMON Thu Jan  1 00:00:00 2024"), None);
        assert_eq!(
            f("From 0123abcd Mon Sep 17 00:00:00 2001"),
            None,
            "git format-patch"
        );
    }

    #[test]
    fn future_dates_are_not_trusted() {
        let wall: Timestamp = "2024-06-01T00:00:00Z".parse().unwrap();
        assert!(message_time(Some("2024-05-01T00:00:00Z"), wall).is_some());
        assert!(message_time(Some("2030-05-01T00:00:00Z"), wall).is_none());
        assert!(message_time(Some("garbage"), wall).is_none());
    }
}
