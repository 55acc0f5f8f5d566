//! `backup` and `restore` on the command line (the work is in
//! `crate::backup`).

use crate::config::Config;
use crate::control::Request;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

/// Through the daemon when one runs (it writes DIR as its own user), else
/// on the store directly.
pub fn backup(cfg: &Config, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    // The daemon has its own working directory: hand it an absolute path.
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .context("the current directory")?
            .join(dir)
    };
    let v = super::ask(cfg, Request::Backup { dir: dir.clone() })
        .with_context(|| format!("backup into {}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let c = &v["counts"];
        println!(
            "backup in {}: {} tickets, {} messages, {} outbox rows (deliveries waited {} ms)",
            dir.display(),
            c["tickets"],
            c["messages"],
            c["outbox"],
            v["committer_held_ms"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn restore(cfg: &Config, dir: &Path) -> anyhow::Result<ExitCode> {
    super::import::refuse_if_daemon_runs(cfg, "restore")?;
    let m = crate::backup::restore(dir, &cfg.data_dir)?;
    println!(
        "restored {} into {}: {} tickets, {} messages, {} outbox rows, as of {}",
        dir.display(),
        cfg.data_dir.display(),
        m.counts.tickets,
        m.counts.messages,
        m.counts.outbox,
        m.created_at
    );
    Ok(ExitCode::SUCCESS)
}
