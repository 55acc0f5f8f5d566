//! `postdesk migrate --from … --to …` on the command line (the work is in
//! `crate::migrate`): a progress bar on a terminal, plain lines otherwise,
//! and the check's table at the end.

use crate::migrate::{self, Endpoint, Options};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How many mismatches are named before "and N more".
const SHOW_MISMATCHES: usize = 10;

pub fn run(
    from: &str,
    to: &str,
    batch: usize,
    parallel: usize,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let from: Endpoint = from.parse()?;
    let to: Endpoint = to.parse()?;
    migrate::check_distinct(&from, &to)?;
    let pool = u32::try_from(parallel)
        .unwrap_or(u32::MAX)
        .saturating_add(2);
    let src = migrate::open(&from, true, pool)?;
    let dst = migrate::open(&to, false, pool)?;
    let opts = Options { batch, parallel };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = Progress::new(tty && !quiet);
    eprintln!("postdesk migrate: {from} → {to}");
    let out = migrate::migrate(
        &src,
        &from.to_string(),
        &dst,
        &to.to_string(),
        &opts,
        &mut progress,
    );
    // Everything the copy wrote is durable already (each batch was); this
    // only stops the committers before the process goes.
    src.close();
    dst.close();
    let sum = out?;
    print!("{}", sum.table());
    println!(
        "raw messages: {} copied ({:.1} MiB) in {:.1} s, {:.0} messages/s; {} checked by SHA-256 in {:.1} s",
        sum.raw_copied,
        sum.raw_bytes as f64 / (1024.0 * 1024.0),
        sum.copy_time.as_secs_f64(),
        sum.messages_per_second(),
        sum.checked,
        sum.check_time.as_secs_f64()
    );
    if sum.ok() {
        println!("migrated {from} → {to}: every count and checksum matches");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "postdesk migrate: the destination does not match the source ({} problems):",
        sum.mismatches.len()
    );
    for m in sum.mismatches.iter().take(SHOW_MISMATCHES) {
        eprintln!("  {m}");
    }
    if sum.mismatches.len() > SHOW_MISMATCHES {
        eprintln!("  … and {} more", sum.mismatches.len() - SHOW_MISMATCHES);
    }
    Ok(ExitCode::FAILURE)
}

/// A bar on a terminal; otherwise a line per phase and one every few
/// seconds, so a log or a pipe shows it is moving.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    tty: bool,
    phase: String,
    total: u64,
    done: u64,
    started: Instant,
    said: Instant,
}

const EVERY: Duration = Duration::from_secs(5);

impl Progress {
    fn new(tty: bool) -> Progress {
        Progress {
            bar: None,
            tty,
            phase: String::new(),
            total: 0,
            done: 0,
            started: Instant::now(),
            said: Instant::now(),
        }
    }

    fn line(&self) {
        let of = if self.total > 0 {
            format!("/{}", self.total)
        } else {
            String::new()
        };
        eprintln!(
            "postdesk migrate: {}: {}{of} records, {:.1} s",
            self.phase,
            self.done,
            self.started.elapsed().as_secs_f64()
        );
    }
}

impl migrate::Progress for Progress {
    fn phase(&mut self, name: &str, total: u64) {
        self.phase = name.to_string();
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        self.said = Instant::now();
        if !self.tty {
            return;
        }
        let bar = indicatif::ProgressBar::with_draw_target(
            (total > 0).then_some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        let template = if total > 0 {
            "{elapsed_precise} [{wide_bar}] {pos}/{len} records {msg} (eta {eta})"
        } else {
            "{elapsed_precise} {spinner} {pos} records {msg}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(name.to_string());
        self.bar = Some(bar);
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.said.elapsed() >= EVERY => {
                self.said = Instant::now();
                self.line();
            }
            None => {}
        }
    }

    fn finish(&mut self) {
        match self.bar.take() {
            Some(b) => b.finish_and_clear(),
            None => self.line(),
        }
        if self.tty {
            self.line();
        }
    }
}
