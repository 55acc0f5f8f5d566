//! Prometheus metrics: the counters and histograms the per-message path,
//! the committer, the sender and the scheduler bump, the gauges read from
//! the store at scrape time, and the `listen.metrics` HTTP endpoint.
//!
//! Instrumentation goes through one process-wide registry in a `OnceLock`,
//! so a call site is one line (`metrics::delivered(rule, action)`). Until
//! the daemon calls [`init`] (only when `listen.metrics` is set) every such
//! call is a load of an empty `OnceLock` and nothing else: the CLI, `import`
//! and the unit tests never pay for metrics they cannot serve.
//!
//! State (tickets by status, outbox entries by state, the oldest pending
//! entry, due jobs, store size, free disk) is not counted here: it is read
//! on each scrape from the store's own counters (`n/t/<status>`,
//! `n/o/<state>`) and the first keys of its queues, never a walk of every
//! ticket. Labels are small, closed sets (`rule`, `action`, `class`,
//! `kind`, `status`, `state`, `result`, `target`); a value from outside
//! our code never becomes a label.
//!
//! Names, types and labels are documented in docs/operations.md#metrics
//! (a test keeps that table and [`encode_all`] in step).

use crate::config::Listen;
use crate::shutdown::Shutdown;
use crate::store::{OutboxState, Status, Store, Timestamp};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The content type `prometheus_client::encoding::text` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A scrape request is a request line and a few headers; anything longer is
/// not Prometheus.
const MAX_REQUEST: usize = 8 * 1024;
/// Bounds reading the request and writing the answer, so a silent peer
/// cannot hold a slot.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait for a slot (Prometheus scrapes one at
/// a time per target).
const MAX_CONNECTIONS: usize = 8;
/// A job this much past its due time when it fires counts as late.
pub const LATE_AFTER: Duration = Duration::from_secs(60);
/// The due-jobs gauge reads at most this many jobs: past that the desk is
/// far behind anyway and the exact number adds nothing.
const DUE_JOBS_CAP: usize = 10_000;

type L1 = [(&'static str, &'static str); 1];
type L2 = [(&'static str, &'static str); 2];
type Owned1 = [(&'static str, String); 1];
type Owned2 = [(&'static str, String); 2];

/// Every counter and histogram the daemon updates as it works.
pub struct Metrics {
    registry: Registry,
    /// (full name, type) of every registered family, for [`catalogue`]: a
    /// labelled family with nothing counted yet is left out of a scrape,
    /// but not out of the docs.
    families: Vec<(String, &'static str)>,
    lmtp_sessions: Counter,
    lmtp_sessions_active: Gauge,
    lmtp_transactions: Family<L1, Counter>,
    lmtp_replies: Family<L1, Counter>,
    delivered: Family<L2, Counter>,
    delivery_seconds: Histogram,
    commit_seconds: Histogram,
    commit_batch_size: Histogram,
    outbox_queued: Counter,
    outbox_attempts: Family<Owned2, Counter>,
    jobs_fired: Family<L2, Counter>,
    jobs_late: Family<L1, Counter>,
    job_lateness_seconds: Histogram,
    sla_breaches: Family<Owned1, Counter>,
    sla_warnings: Family<Owned1, Counter>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::with_prefix("postdesk");
        let mut m = Metrics {
            lmtp_sessions: Counter::default(),
            lmtp_sessions_active: Gauge::default(),
            lmtp_transactions: Family::default(),
            lmtp_replies: Family::default(),
            delivered: Family::default(),
            // A message is parse + decide + one group commit: milliseconds
            // normally, seconds when the disk is slow.
            delivery_seconds: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            commit_seconds: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            // The committer takes at most 256 jobs per batch.
            commit_batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            outbox_queued: Counter::default(),
            outbox_attempts: Family::default(),
            jobs_fired: Family::default(),
            jobs_late: Family::default(),
            // Seconds to days: a job that came due while postdesk was down.
            job_lateness_seconds: Histogram::new([
                1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
            ]),
            sla_breaches: Family::default(),
            sla_warnings: Family::default(),
            registry: Registry::default(),
            families: Vec::new(),
        };
        reg(
            &mut r,
            &mut m.families,
            "lmtp_sessions",
            "LMTP connections accepted",
            None,
            m.lmtp_sessions.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "lmtp_sessions_active",
            "LMTP sessions open now",
            None,
            m.lmtp_sessions_active.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "lmtp_transactions",
            "LMTP transactions that reached the end of DATA, by outcome (stored, tempfail, refused)",
            None,
            m.lmtp_transactions.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "lmtp_replies",
            "LMTP replies sent, by class (2xx, 3xx, 4xx, 5xx)",
            None,
            m.lmtp_replies.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "messages_delivered",
            "Messages stored, by threading rule and action (the delivered log line)",
            None,
            m.delivered.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "delivery_duration",
            "Time from the end of DATA to the message being durable or refused",
            Some(Unit::Seconds),
            m.delivery_seconds.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "store_commit_duration",
            "Time one group commit took: its transactions and the fsync",
            Some(Unit::Seconds),
            m.commit_seconds.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "store_commit_batch_size",
            "Jobs made durable together in one group commit",
            None,
            m.commit_batch_size.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "outbox_queued",
            "Outbox entries written (acks, copies, notices, reminders, ...)",
            None,
            m.outbox_queued.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "outbox_attempts",
            "Send attempts, by mail kind and result (sent, retry, failed)",
            None,
            m.outbox_attempts.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "scheduler_jobs_fired",
            "Scheduled jobs run, by kind and result (sent, skipped, failed)",
            None,
            m.jobs_fired.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "scheduler_jobs_late",
            "Scheduled jobs that ran more than 60s after they were due, by kind",
            None,
            m.jobs_late.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "scheduler_lateness",
            "How long after its due time a job ran",
            Some(Unit::Seconds),
            m.job_lateness_seconds.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "sla_breaches",
            "Service-level targets breached, by target",
            None,
            m.sla_breaches.clone(),
        );
        reg(
            &mut r,
            &mut m.families,
            "sla_warnings",
            "Service-level warnings sent before a breach, by target",
            None,
            m.sla_warnings.clone(),
        );
        // Closed label sets start at 0, so rate() and alerts see them from
        // the first scrape rather than after the first 4xx.
        for o in ["stored", "tempfail", "refused"] {
            m.lmtp_transactions
                .get_or_create(&[("outcome", o)])
                .inc_by(0);
        }
        for c in ["2xx", "3xx", "4xx", "5xx"] {
            m.lmtp_replies.get_or_create(&[("class", c)]).inc_by(0);
        }
        m.registry = r;
        m
    }
}

/// Registers `metric` and notes its full name and type.
fn reg<M: prometheus_client::registry::Metric + EncodeMetric>(
    r: &mut Registry,
    families: &mut Vec<(String, &'static str)>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) {
    let ty = match metric.metric_type() {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
        _ => "unknown",
    };
    let full = match &unit {
        Some(u) => format!("postdesk_{name}_{}", u.as_str()),
        None => format!("postdesk_{name}"),
    };
    families.push((full, ty));
    match unit {
        Some(u) => r.register_with_unit(name, help, u, metric),
        None => r.register(name, help, metric),
    }
}

/// Every metric family the daemon can expose, as (name, type): the
/// counters and histograms whether or not anything was counted yet, and the
/// gauges a scrape reads from `store`. Counter samples carry `_total`,
/// histogram samples `_bucket`, `_sum` and `_count`.
pub fn catalogue(store: &Store) -> Result<Vec<(String, String)>, std::fmt::Error> {
    let mut out: Vec<(String, String)> = init()
        .families
        .iter()
        .map(|(n, t)| (n.clone(), t.to_string()))
        .collect();
    for line in encode_all(store, Timestamp::now())?.lines() {
        if let Some((name, ty)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            if !out.iter().any(|(n, _)| n == name) {
                out.push((name.to_string(), ty.to_string()));
            }
        }
    }
    Ok(out)
}

/// Turns instrumentation on for this process. Idempotent.
pub fn init() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

#[inline]
fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

// ---- instrumentation, one line at each call site --------------------------

/// An LMTP connection was accepted; the gauge of open sessions goes down
/// when the returned guard drops.
pub fn lmtp_session() -> SessionGuard {
    if let Some(m) = get() {
        m.lmtp_sessions.inc();
        m.lmtp_sessions_active.inc();
    }
    SessionGuard(())
}

pub struct SessionGuard(());

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(m) = get() {
            m.lmtp_sessions_active.dec();
        }
    }
}

/// A transaction reached the end of DATA: `stored`, `tempfail` or
/// `refused` (over a size limit).
pub fn lmtp_transaction(outcome: &'static str) {
    if let Some(m) = get() {
        m.lmtp_transactions
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }
}

/// Counts every complete reply in `bytes` (what one write sends: a
/// greeting, pipelined answers, a multi-line LHLO answer counted once).
pub fn lmtp_replies(bytes: &[u8]) {
    let Some(m) = get() else {
        return;
    };
    for line in bytes.split(|b| *b == b'\n') {
        // `250-…` continues a reply; `250 …` (or a bare code) ends one.
        let last = line.get(3).is_none_or(|b| *b == b' ' || *b == b'\r');
        if !last {
            continue;
        }
        let class = match line.first() {
            Some(b'2') => "2xx",
            Some(b'3') => "3xx",
            Some(b'4') => "4xx",
            Some(b'5') => "5xx",
            _ => continue,
        };
        m.lmtp_replies.get_or_create(&[("class", class)]).inc();
    }
}

/// One message stored (after the commit, with the `delivered` log line).
pub fn delivered(rule: &'static str, action: &'static str) {
    if let Some(m) = get() {
        m.delivered
            .get_or_create(&[("rule", rule), ("action", action)])
            .inc();
    }
}

/// One message handled, stored or not: end of DATA to durable (or 451).
pub fn delivery_time(took: Duration) {
    if let Some(m) = get() {
        m.delivery_seconds.observe(took.as_secs_f64());
    }
}

/// One group commit made `jobs` durable in `took`.
pub fn commit_batch(jobs: usize, took: Duration) {
    if let Some(m) = get() {
        m.commit_batch_size.observe(jobs as f64);
        m.commit_seconds.observe(took.as_secs_f64());
    }
}

/// `n` outbox entries became durable.
pub fn outbox_queued(n: u64) {
    if let Some(m) = get() {
        m.outbox_queued.inc_by(n);
    }
}

/// One send attempt recorded: `sent`, `retry` or `failed`.
pub fn outbox_attempt(kind: &str, result: &'static str) {
    if let Some(m) = get() {
        m.outbox_attempts
            .get_or_create(&[("kind", label(kind)), ("result", result.to_string())])
            .inc();
    }
}

/// One scheduled job run (`sent`, `skipped`, `failed`), `late` past its
/// due time.
pub fn job_fired(kind: &'static str, result: &'static str, late: Duration) {
    if let Some(m) = get() {
        m.jobs_fired
            .get_or_create(&[("kind", kind), ("result", result)])
            .inc();
        m.job_lateness_seconds.observe(late.as_secs_f64());
        if late > LATE_AFTER {
            m.jobs_late.get_or_create(&[("kind", kind)]).inc();
        }
    }
}

/// A service-level target was breached (`first_response`, `resolution`).
/// Called by the SLA breach job.
pub fn sla_breach(target: &str) {
    if let Some(m) = get() {
        m.sla_breaches
            .get_or_create(&[("target", label(target))])
            .inc();
    }
}

/// A warning went out before a service-level target's due time.
pub fn sla_warning(target: &str) {
    if let Some(m) = get() {
        m.sla_warnings
            .get_or_create(&[("target", label(target))])
            .inc();
    }
}

/// Our own names (outbox kinds, SLA targets) as a label value. They are
/// short lowercase words; anything else becomes `other`, so a label set
/// can never grow from outside input.
fn label(s: &str) -> String {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'-');
    if ok {
        s.to_string()
    } else {
        "other".to_string()
    }
}

// ---- gauges read at scrape time -----------------------------------------

/// What a scrape reads from the store.
struct StoreGauges {
    store: Store,
    started_at: Timestamp,
}

impl std::fmt::Debug for StoreGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreGauges").finish_non_exhaustive()
    }
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: V,
) -> Result<(), std::fmt::Error> {
    let me = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(me)
}

impl Collector for StoreGauges {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Timestamp::now();
        let warn = |what: &str, e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "metrics: cannot read {what}; left out of this scrape");
        };
        gauge(
            &mut enc,
            "start_time",
            "When this daemon started, in seconds since the epoch",
            Some(&Unit::Seconds),
            self.started_at.as_second(),
        )?;
        {
            let mut me = enc.encode_descriptor(
                "build_info",
                "The running version (value 1)",
                None,
                MetricType::Gauge,
            )?;
            let labels: L1 = [("version", env!("CARGO_PKG_VERSION"))];
            ConstGauge::new(1i64).encode(me.encode_family(&labels)?)?;
        }
        match self.store.ticket_counts() {
            Ok(counts) => {
                let mut me = enc.encode_descriptor(
                    "tickets",
                    "Tickets by status (the store's counters, as in postdesk status)",
                    None,
                    MetricType::Gauge,
                )?;
                for s in Status::ALL {
                    let n = counts.get(&s).copied().unwrap_or(0);
                    let labels: L1 = [("status", s.as_str())];
                    ConstGauge::new(n).encode(me.encode_family(&labels)?)?;
                }
            }
            Err(e) => warn("ticket counts", &e),
        }
        match self.store.outbox_counts() {
            Ok(counts) => {
                let mut me = enc.encode_descriptor(
                    "outbox_entries",
                    "Outbox entries by state",
                    None,
                    MetricType::Gauge,
                )?;
                for s in OutboxState::ALL {
                    let n = counts.get(&s).copied().unwrap_or(0);
                    let labels: L1 = [("state", s.as_str())];
                    ConstGauge::new(n).encode(me.encode_family(&labels)?)?;
                }
            }
            Err(e) => warn("outbox counts", &e),
        }
        match self.store.outbox_oldest_pending() {
            Ok(oldest) => {
                let age = oldest
                    .map(|e| now.duration_since(e.created_at).as_secs_f64().max(0.0))
                    .unwrap_or(0.0);
                gauge(
                    &mut enc,
                    "outbox_oldest_pending_age",
                    "Age of the oldest pending outbox entry (0 when none is pending)",
                    Some(&Unit::Seconds),
                    age,
                )?;
            }
            Err(e) => warn("the outbox queue", &e),
        }
        match self.store.jobs_due(now, DUE_JOBS_CAP) {
            Ok(due) => {
                gauge(
                    &mut enc,
                    "scheduler_jobs_due",
                    "Scheduled jobs whose time has come and that have not run yet",
                    None,
                    due.len() as u64,
                )?;
                let late = due
                    .first()
                    .map(|j| now.duration_since(j.due).as_secs_f64().max(0.0))
                    .unwrap_or(0.0);
                gauge(
                    &mut enc,
                    "scheduler_oldest_due_age",
                    "How far past its due time the earliest waiting job is (0 when none waits)",
                    Some(&Unit::Seconds),
                    late,
                )?;
            }
            Err(e) => warn("the schedule", &e),
        }
        gauge(
            &mut enc,
            "store_size",
            "Bytes the store takes on disk (sled files and the raw-message spool)",
            Some(&Unit::Bytes),
            self.store.size_on_disk(),
        )?;
        if let Some(free) = free_bytes(self.store.data_dir()) {
            gauge(
                &mut enc,
                "store_free",
                "Bytes available to postdesk on the data directory's filesystem",
                Some(&Unit::Bytes),
                free,
            )?;
        }
        Ok(())
    }
}

/// Free bytes for unprivileged users on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs only writes into the zeroed struct we pass it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The whole exposition: the process-wide counters, then the store's
/// gauges, then `# EOF`.
pub fn encode_all(store: &Store, started_at: Timestamp) -> Result<String, std::fmt::Error> {
    let m = init();
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode_registry(&mut out, &m.registry)?;
    let mut state = Registry::with_prefix("postdesk");
    state.register_collector(Box::new(StoreGauges {
        store: store.clone(),
        started_at,
    }));
    prometheus_client::encoding::text::encode_registry(&mut out, &state)?;
    prometheus_client::encoding::text::encode_eof(&mut out)?;
    Ok(out)
}

// ---- the HTTP endpoint ------------------------------------------------------

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listen.metrics: {spec:?} is not HOST:PORT (an IP address and a port)")]
    BadSpec { spec: String },
    #[error(
        "listen.metrics: {addr} is not a loopback address; set listen.allow_remote: true to serve metrics to other hosts"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("listen.metrics: cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Why `spec` may not be `listen.metrics` under `listen`, if it may not
/// (config validation and [`bind`] share it).
pub fn check_spec(spec: &str, listen: &Listen) -> Result<SocketAddr, Error> {
    let addr: SocketAddr = spec.parse().map_err(|_| Error::BadSpec {
        spec: spec.to_string(),
    })?;
    if !listen.allow_remote && !crate::lmtp::listener::is_loopback(addr.ip()) {
        return Err(Error::NotLoopback { addr });
    }
    Ok(addr)
}

pub async fn bind(spec: &str, listen: &Listen) -> Result<TcpListener, Error> {
    let addr = check_spec(spec, listen)?;
    TcpListener::bind(addr).await.map_err(|source| Error::Bind {
        addr: spec.to_string(),
        source,
    })
}

/// Serves `GET /metrics` until `shutdown`. Everything else is `404`; a
/// request over 8 KiB or slower than 10 s is dropped.
pub async fn serve(
    listener: TcpListener,
    store: Store,
    started_at: Timestamp,
    mut shutdown: Shutdown,
) {
    init();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let store = store.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) =
                tokio::time::timeout(IO_TIMEOUT, answer(stream, store, started_at)).await
            {
                tracing::debug!(error = %e, "metrics: scrape timed out");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, store: Store, started_at: Timestamp) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            let _ = respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
            )
            .await;
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        let _ = respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
        )
        .await;
        return;
    }
    if method != "GET" && method != "HEAD" {
        let _ = respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET /metrics\n",
        )
        .await;
        return;
    }
    let body = tokio::task::spawn_blocking(move || encode_all(&store, started_at)).await;
    match body {
        Ok(Ok(text)) => {
            let bytes = if method == "HEAD" {
                &b""[..]
            } else {
                text.as_bytes()
            };
            let _ = respond(&mut stream, "200 OK", CONTENT_TYPE, bytes).await;
        }
        _ => {
            tracing::warn!("metrics: encoding failed");
            let _ = respond(
                &mut stream,
                "500 Internal Server Error",
                "text/plain",
                b"encoding failed\n",
            )
            .await;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_our_names_only() {
        assert_eq!(label("ack"), "ack");
        assert_eq!(label("first_response"), "first_response");
        assert_eq!(label("auto-generated"), "auto-generated");
        assert_eq!(label("Evil\nlabel"), "other");
        assert_eq!(label(""), "other");
        assert_eq!(label(&"x".repeat(40)), "other");
    }

    #[test]
    fn loopback_unless_allowed() {
        let mut l = Listen::default();
        assert!(check_spec("127.0.0.1:9187", &l).is_ok());
        assert!(check_spec("[::1]:9187", &l).is_ok());
        let e = check_spec("0.0.0.0:9187", &l).unwrap_err().to_string();
        assert!(
            e.contains("listen.metrics") && e.contains("listen.allow_remote"),
            "{e}"
        );
        assert!(check_spec("localhost:9187", &l).is_err());
        l.allow_remote = true;
        assert!(check_spec("0.0.0.0:9187", &l).is_ok());
    }
}
