//! postdesk-bench: postdesk and Dovecot LMTP side by side, under the same
//! loads, in one run, on this machine (issue #6, docs/performance.md).
//!
//! Each row is run `--runs` times; each run starts both servers fresh (a new
//! data dir, a new Maildir), postdesk first and Dovecot second, so a noisy
//! moment hits both alike, and the table shows the median of every figure.
//! Nothing here asserts a speed: the CI smoke test only proves the
//! benchmark still runs end to end.

mod gen;
mod nodes;
mod procfs;
mod target;

use anyhow::{bail, Context};
use clap::Parser;
use gen::Mix;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use target::{Dovecot, Postdesk, Sink};

#[derive(Parser, Debug)]
#[command(
    name = "postdesk-bench",
    about = "Load benchmark: postdesk against Dovecot LMTP with smtp-source and a realistic desk mix"
)]
struct Args {
    /// Seconds-long run of every row with a few messages, one run, a tiny
    /// scale check: proves the benchmark works, measures nothing.
    #[arg(long)]
    smoke: bool,
    /// Runs per row; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Multiply every row's message count (e.g. 0.5 for a quicker look).
    #[arg(long, default_value_t = 1.0)]
    scale_messages: f64,
    /// Only rows whose label contains this (e.g. "source 16"; "scale" for
    /// the scale check alone).
    #[arg(long)]
    only: Option<String>,
    /// Skip the Dovecot side.
    #[arg(long)]
    no_dovecot: bool,
    /// Ticket counts for the scale check, comma-separated; "" skips it.
    #[arg(long, default_value = "10000,1000000")]
    fill: String,
    /// The postdesk binary (default: beside this one).
    #[arg(long)]
    postdesk: Option<PathBuf>,
    /// Where runs keep their data (default: a new folder under /tmp, which
    /// Dovecot's worker user can traverse).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the work folder.
    #[arg(long)]
    keep: bool,
    /// Also write the raw samples as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A PostgreSQL server URL (e.g. postgres://postgres@127.0.0.1:5432/):
    /// run the node-count table instead of the rows above, the generator
    /// loads against sled and against `--nodes` postdesk nodes sharing one
    /// fresh database on it (created and dropped with `psql`).
    #[arg(long)]
    pg: Option<String>,
    /// Node counts for the node-count table, comma-separated.
    #[arg(long, default_value = "1,2,3")]
    nodes: String,
}

#[derive(Debug, Clone, Copy)]
enum Load {
    /// Postfix's smtp-source -L, fixed-size messages.
    Source {
        size: usize,
    },
    Gen(Mix),
}

#[derive(Debug, Clone)]
struct Row {
    load: Load,
    sessions: usize,
    messages: usize,
}

impl Row {
    fn label(&self) -> String {
        match self.load {
            Load::Source { size } => {
                format!("smtp-source {} × {} KiB", self.sessions, size / 1024)
            }
            Load::Gen(Mix::Fixed4k) => format!("generator {} × 4 KiB new", self.sessions),
            Load::Gen(Mix::Realistic) => format!("generator {} × desk mix", self.sessions),
        }
    }
}

fn rows(smoke: bool, factor: f64) -> Vec<Row> {
    let n = |full: usize| {
        if smoke {
            20
        } else {
            ((full as f64 * factor) as usize).max(10)
        }
    };
    let mut v = Vec::new();
    for (size, counts) in [(4096, [1000, 2000, 4000]), (65536, [400, 800, 1500])] {
        for (sessions, m) in [1, 4, 16].into_iter().zip(counts) {
            v.push(Row {
                load: Load::Source { size },
                sessions,
                messages: n(m),
            });
        }
    }
    v.push(Row {
        load: Load::Gen(Mix::Fixed4k),
        sessions: 16,
        messages: n(4000),
    });
    for (sessions, m) in [(1, 800), (4, 1500), (16, 2500)] {
        v.push(Row {
            load: Load::Gen(Mix::Realistic),
            sessions,
            messages: n(m),
        });
    }
    v
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Sample {
    accepted: usize,
    rate: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    cpu_ms_per_msg: f64,
    peak_mem_mib: f64,
    disk_kib_per_msg: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn med(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = samples.iter().filter_map(&f).collect();
    (!v.is_empty()).then(|| median(v))
}

/// Delivered-message lines in postdesk's log: what it acknowledged.
fn postdesk_delivered(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|s| s.lines().filter(|l| l.contains(" delivered ")).count())
        .unwrap_or(0)
}

fn maildir_count(mail: &Path) -> usize {
    let mut n = 0;
    if let Ok(users) = std::fs::read_dir(mail) {
        for u in users.flatten() {
            for sub in ["new", "cur"] {
                if let Ok(rd) = std::fs::read_dir(u.path().join(sub)) {
                    n += rd.count();
                }
            }
        }
    }
    n
}

enum Server {
    Postdesk(Postdesk),
    Dovecot(Dovecot),
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Postdesk(p) => p.port,
            Server::Dovecot(d) => d.port,
        }
    }
    fn pid(&self) -> u32 {
        match self {
            Server::Postdesk(p) => p.pid(),
            Server::Dovecot(d) => d.pid(),
        }
    }
    fn store(&self) -> PathBuf {
        match self {
            Server::Postdesk(p) => p.data.clone(),
            Server::Dovecot(d) => d.mail.clone(),
        }
    }
    fn accepted(&self) -> usize {
        match self {
            Server::Postdesk(p) => postdesk_delivered(&p.log),
            Server::Dovecot(d) => maildir_count(&d.mail),
        }
    }
}

/// Drives one load against a started server and measures it.
async fn measure(server: &Server, row: &Row, ctx: &Ctx, seed: u64) -> anyhow::Result<Sample> {
    let sink = &ctx.sink;
    let pid = server.pid();
    let disk0 = procfs::disk_bytes(&server.store());
    let accepted0 = server.accepted();
    let cpu0 = procfs::cpu_seconds(pid);
    let mem = procfs::MemSampler::start(pid);
    let (wall, latencies, gen_accepted) = match row.load {
        Load::Source { size } => {
            let port = server.port();
            let (s, m) = (row.sessions, row.messages);
            let took = tokio::task::spawn_blocking(move || target::smtp_source(port, s, m, size))
                .await??;
            (took, Vec::new(), None)
        }
        Load::Gen(mix) => {
            let msgs = Arc::new(gen::messages(mix, row.messages, seed));
            let r = gen::run(&[server.port()], row.sessions, msgs).await?;
            (r.wall, r.latencies.clone(), Some(r.accepted))
        }
    };
    // postdesk's work for a message includes sending its acknowledgement
    // and team copies: count that CPU too, once the outbox has drained.
    if let Server::Postdesk(_) = server {
        sink.settle(ctx.quiet, Duration::from_secs(300)).await;
    }
    let cpu = procfs::cpu_seconds(pid) - cpu0;
    let peak_pss = mem.finish();
    let accepted = match gen_accepted {
        Some(a) => a,
        None => server.accepted().saturating_sub(accepted0),
    };
    if accepted < row.messages {
        bail!(
            "{}: only {accepted} of {} messages were accepted",
            row.label(),
            row.messages
        );
    }
    let peak_mib = match server {
        // One process: its own high-water mark is exact.
        Server::Postdesk(_) => procfs::peak_rss_kib(pid).unwrap_or(peak_pss) as f64 / 1024.0,
        Server::Dovecot(_) => peak_pss as f64 / 1024.0,
    };
    let disk = procfs::disk_bytes(&server.store()).saturating_sub(disk0);
    let pct = |p: f64| -> Option<f64> {
        if latencies.is_empty() {
            return None;
        }
        let mut v = latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        Some(v[i.min(v.len() - 1)].as_secs_f64() * 1000.0)
    };
    Ok(Sample {
        accepted,
        rate: accepted as f64 / wall.as_secs_f64().max(1e-9),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        cpu_ms_per_msg: cpu * 1000.0 / accepted.max(1) as f64,
        peak_mem_mib: peak_mib,
        disk_kib_per_msg: disk as f64 / 1024.0 / accepted.max(1) as f64,
    })
}

struct Ctx {
    bin: PathBuf,
    work: PathBuf,
    sink: Sink,
    runs: usize,
    dovecot: bool,
    /// How long the relay must stay silent before the outbox counts as
    /// drained.
    quiet: Duration,
    keep: bool,
    counter: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    fn fresh_dir(&self, what: &str) -> anyhow::Result<PathBuf> {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = self.work.join(format!("{n:03}-{what}"));
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    fn remove(&self, d: &Path) {
        if self.keep {
            return;
        }
        let _ = std::fs::remove_dir_all(d);
    }
}

#[derive(Default, serde::Serialize)]
struct RowResult {
    label: String,
    postdesk: Vec<Sample>,
    dovecot: Vec<Sample>,
}

async fn run_row(ctx: &Ctx, row: &Row) -> anyhow::Result<RowResult> {
    let mut res = RowResult {
        label: row.label(),
        ..Default::default()
    };
    for run in 0..ctx.runs {
        let seed = 1000 + run as u64;
        let dir = ctx.fresh_dir("postdesk")?;
        let pd = Postdesk::start(&ctx.bin, &dir, &dir.join("data"), ctx.sink.port)?;
        let s = Server::Postdesk(pd);
        let sample = measure(&s, row, ctx, seed).await;
        if let Server::Postdesk(p) = s {
            p.stop();
        }
        res.postdesk
            .push(sample.with_context(|| format!("postdesk, {}", row.label()))?);
        ctx.remove(&dir);
        if ctx.dovecot {
            let dir = ctx.fresh_dir("dovecot")?;
            let dv = Dovecot::start(&dir)?;
            let s = Server::Dovecot(dv);
            let sample = measure(&s, row, ctx, seed).await;
            if let Server::Dovecot(d) = s {
                d.stop();
            }
            res.dovecot
                .push(sample.with_context(|| format!("dovecot, {}", row.label()))?);
            ctx.remove(&dir);
        }
        eprintln!(
            "  {} run {}: postdesk {:.0} msg/s{}",
            row.label(),
            run + 1,
            res.postdesk.last().map(|s| s.rate).unwrap_or(0.0),
            res.dovecot
                .last()
                .map(|s| format!(", Dovecot {:.0} msg/s", s.rate))
                .unwrap_or_default()
        );
    }
    Ok(res)
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "–".into(),
    }
}

fn table(results: &[RowResult]) -> String {
    let mut s = String::new();
    s.push_str("| load | postdesk msg/s | Dovecot msg/s | ratio | p50 / p99 ms postdesk | p50 / p99 ms Dovecot | CPU ms/msg postdesk / Dovecot | peak MiB postdesk / Dovecot | disk KiB/msg postdesk / Dovecot |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        let p = |f: &dyn Fn(&Sample) -> Option<f64>| med(&r.postdesk, f);
        let d = |f: &dyn Fn(&Sample) -> Option<f64>| med(&r.dovecot, f);
        let pr = p(&|s| Some(s.rate));
        let dr = d(&|s| Some(s.rate));
        let ratio = match (pr, dr) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {} / {} |\n",
            r.label,
            fmt_opt(pr, 0),
            fmt_opt(dr, 0),
            fmt_opt(ratio, 2),
            fmt_opt(p(&|s| s.p50_ms), 1),
            fmt_opt(p(&|s| s.p99_ms), 1),
            fmt_opt(d(&|s| s.p50_ms), 1),
            fmt_opt(d(&|s| s.p99_ms), 1),
            fmt_opt(p(&|s| Some(s.cpu_ms_per_msg)), 2),
            fmt_opt(d(&|s| Some(s.cpu_ms_per_msg)), 2),
            fmt_opt(p(&|s| Some(s.peak_mem_mib)), 0),
            fmt_opt(d(&|s| Some(s.peak_mem_mib)), 0),
            fmt_opt(p(&|s| Some(s.disk_kib_per_msg)), 1),
            fmt_opt(d(&|s| Some(s.disk_kib_per_msg)), 1),
        ));
    }
    s
}

/// An mbox of `n` first mails from many customers: history to import.
fn write_fill_mbox(path: &Path, n: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let f = std::fs::File::create(path)?;
    let mut w = std::io::BufWriter::new(f);
    for i in 0..n {
        let c = i % 50_000;
        let d = c % 3000;
        let day = 1 + (i % 28);
        writeln!(
            w,
            "From user{c}@fill{d}.example.net Mon Nov  2 10:00:00 2026\n\
             From: Customer {c} <user{c}@fill{d}.example.net>\n\
             To: support@example.com\n\
             Subject: {} request {i}\n\
             Date: {day} Nov 2026 10:{:02}:00 +0000\n\
             Message-ID: <fill.{i}@fill{d}.example.net>\n\
             Content-Type: text/plain; charset=utf-8\n\n\
             Hello, the {} does not work since this morning.\n\
             Could you have a look? Order {i}, customer {c}.\n\n\
             Regards,\nCustomer {c}\n",
            ["Printer", "Invoice", "Login", "VPN", "Backup"][i % 5],
            i % 60,
            ["printer", "portal", "VPN", "backup job", "mailbox"][i % 5],
        )?;
    }
    w.flush()?;
    Ok(())
}

#[derive(serde::Serialize)]
struct ScaleResult {
    tickets: usize,
    import_seconds: f64,
    startup_ms: Vec<f64>,
    samples: Vec<Sample>,
}

async fn scale_check(
    ctx: &Ctx,
    sizes: &[usize],
    messages: usize,
) -> anyhow::Result<Vec<ScaleResult>> {
    let mut out = Vec::new();
    for &n in sizes {
        let dir = ctx.fresh_dir(&format!("fill-{n}"))?;
        let data = dir.join("data");
        let mbox = dir.join("fill.mbox");
        write_fill_mbox(&mbox, n)?;
        // The same config the daemon will run on: import needs it.
        std::fs::write(
            dir.join("postdesk.yaml"),
            target::config_yaml(target::free_port()?, &data, ctx.sink.port),
        )?;
        eprintln!("  filling a store with {n} tickets (postdesk import mbox)…");
        let t = Instant::now();
        let st = std::process::Command::new(&ctx.bin)
            .arg("--config")
            .arg(dir.join("postdesk.yaml"))
            .args(["import", "mbox"])
            .arg(&mbox)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("running postdesk import")?;
        if !st.success() {
            bail!("postdesk import of the fill failed: {st}");
        }
        let import_seconds = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&mbox);
        eprintln!("  filled in {import_seconds:.1} s");
        let row = Row {
            load: Load::Source { size: 4096 },
            sessions: 16,
            messages,
        };
        let mut res = ScaleResult {
            tickets: n,
            import_seconds,
            startup_ms: Vec::new(),
            samples: Vec::new(),
        };
        for run in 0..ctx.runs {
            let pd = Postdesk::start(&ctx.bin, &dir, &data, ctx.sink.port)?;
            res.startup_ms.push(pd.startup.as_secs_f64() * 1000.0);
            let s = Server::Postdesk(pd);
            let sample = measure(&s, &row, ctx, 1).await;
            if let Server::Postdesk(p) = s {
                p.stop();
            }
            let sample = sample.with_context(|| format!("scale {n}"))?;
            eprintln!(
                "  {n} tickets run {}: {:.0} msg/s, start-up {:.0} ms, peak RSS {:.0} MiB",
                run + 1,
                sample.rate,
                res.startup_ms.last().copied().unwrap_or(0.0),
                sample.peak_mem_mib
            );
            res.samples.push(sample);
        }
        ctx.remove(&dir);
        out.push(res);
    }
    Ok(out)
}

fn scale_table(r: &[ScaleResult]) -> String {
    let mut s = String::from(
        "| tickets in store | fill (import) s | msg/s (16 × 4 KiB) | ratio to first | peak RSS MiB | start-up ms |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let base = r.first().and_then(|x| med(&x.samples, |s| Some(s.rate)));
    for x in r {
        let rate = med(&x.samples, |s| Some(s.rate));
        let ratio = match (rate, base) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let rss = x
            .samples
            .iter()
            .map(|s| s.peak_mem_mib)
            .fold(f64::NAN, f64::max);
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} |\n",
            x.tickets,
            x.import_seconds,
            fmt_opt(rate, 0),
            fmt_opt(ratio, 2),
            fmt_opt(Some(rss), 0),
            fmt_opt(Some(median(x.startup_ms.clone())), 0),
        ));
    }
    s
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.0} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.postdesk {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("postdesk"))
            .context("no folder for the postdesk binary")?,
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release) or pass --postdesk",
            bin.display()
        );
    }
    let tmp;
    let work = match &args.work {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            w.clone()
        }
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    let sink = Sink::start().await?;
    let runs = if args.smoke { 1 } else { args.runs.max(1) };
    let ctx = Ctx {
        bin,
        work: work.clone(),
        sink,
        runs,
        dovecot: !args.no_dovecot,
        quiet: Duration::from_millis(if args.smoke { 300 } else { 1500 }),
        keep: args.keep,
        counter: Default::default(),
    };
    eprintln!("postdesk-bench: {} ; work in {}", machine(), work.display());
    if let Some(pg) = &args.pg {
        let counts: Vec<usize> = args
            .nodes
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .context("--nodes: comma-separated node counts")?;
        let res = nodes::node_count(
            &ctx,
            pg,
            &counts,
            args.smoke,
            args.scale_messages,
            args.only.as_deref(),
        )
        .await?;
        println!("machine: {}", machine());
        println!(
            "runs per row: {runs} (medians); postdesk {}",
            env!("CARGO_PKG_VERSION")
        );
        println!();
        print!("{}", nodes::table(&res));
        print!("{}", nodes::sizes(&res));
        if let Some(j) = &args.json {
            let v = serde_json::json!({ "machine": machine(), "nodes": res });
            std::fs::write(j, serde_json::to_string_pretty(&v)?)?;
        }
        if !args.keep && args.work.is_none() {
            let _ = std::fs::remove_dir_all(&work);
        }
        return Ok(());
    }
    let mut results = Vec::new();
    for row in rows(args.smoke, args.scale_messages) {
        if let Some(o) = &args.only {
            if !row.label().contains(o.as_str()) {
                continue;
            }
        }
        results.push(run_row(&ctx, &row).await?);
    }
    let sizes: Vec<usize> = if args.smoke {
        vec![100, 1000]
    } else {
        args.fill
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .context("--fill: comma-separated ticket counts")?
    };
    let scale_msgs = if args.smoke { 20 } else { 4000 };
    let scale = match &args.only {
        Some(o) if !"scale check".contains(o.as_str()) => Vec::new(),
        _ => scale_check(&ctx, &sizes, scale_msgs).await?,
    };

    println!("machine: {}", machine());
    println!(
        "runs per row: {runs} (medians); postdesk {}",
        env!("CARGO_PKG_VERSION")
    );
    println!();
    print!("{}", table(&results));
    if !scale.is_empty() {
        println!();
        print!("{}", scale_table(&scale));
    }
    if let Some(j) = &args.json {
        let v = serde_json::json!({ "machine": machine(), "rows": results, "scale": scale });
        std::fs::write(j, serde_json::to_string_pretty(&v)?)?;
    }
    if !args.keep && args.work.is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

/// A new folder under /tmp, world-traversable, since Dovecot's worker runs
/// as nobody and must reach its Maildir inside.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let base = PathBuf::from(format!(
        "/tmp/postdesk-bench-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&base)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))?;
    Ok(base)
}
