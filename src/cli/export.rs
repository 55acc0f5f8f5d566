//! `postdesk export [--out FILE] [--raw]`: every ticket as one JSON line.
//!
//! Each line is the `ticket show --json` object (SPEC §7, built from the
//! same `control::views` types, so the two cannot drift apart) with a few
//! more facts per message: subject, size, problems, Postfix queue id, and
//! with `--raw` the message bytes, base64 (received mail from the spool,
//! generated mail as it went on the wire).
//!
//! It reads the store directly, so the daemon must be stopped (sled allows
//! one process). `ticket show` answers per ticket from the whole outbox;
//! here the outbox is read once and grouped, so an export stays linear in
//! the size of the store.

use super::import::{open_store, refuse_if_daemon_runs};
use crate::config::Config;
use crate::control::views::{self, MessageJson, TicketJson};
use crate::store::{MessageRecord, OutboxEntry, Store};
use anyhow::Context;
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Serialize)]
pub struct ExportTicket {
    #[serde(flatten)]
    pub ticket: TicketJson,
    pub messages: Vec<ExportMessage>,
}

#[derive(Debug, Serialize)]
pub struct ExportMessage {
    #[serde(flatten)]
    pub message: MessageJson,
    pub subject: Option<String>,
    /// Bytes of the raw message (received mail) or of the mail as sent.
    pub size: u64,
    pub problems: Vec<String>,
    pub queue_id: Option<String>,
    /// With `--raw`: the bytes, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub tickets: u64,
    pub messages: u64,
}

pub fn run(cfg: &Config, out: Option<&Path>, raw: bool) -> anyhow::Result<ExitCode> {
    refuse_if_daemon_runs(cfg, "run the export")?;
    if !cfg.has_store() {
        // Nothing was ever delivered here: an empty export, and no data
        // directory made as a side effect.
        eprintln!(
            "postdesk: {} holds no store: nothing to export",
            cfg.data_dir.display()
        );
        write_to(out, |_| Ok(Counts::default()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let store = open_store(cfg)?;
    let r = write_to(out, |w| export(&store, cfg, raw, w));
    store.close();
    let c = r?;
    eprintln!(
        "exported {} tickets, {} messages{}",
        c.tickets,
        c.messages,
        out.map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

/// `export --person`: the document, pretty, to stdout or `FILE`.
pub fn write_person(out: Option<&Path>, v: &serde_json::Value) -> anyhow::Result<()> {
    write_to(out, |w| {
        serde_json::to_writer_pretty(&mut *w, v)?;
        w.write_all(b"\n")?;
        Ok(Counts::default())
    })?;
    Ok(())
}

/// Runs `f` on stdout, or on `FILE.tmp` renamed to `FILE` once complete and
/// synced: a reader (or a backup job) never sees half an export.
fn write_to(
    out: Option<&Path>,
    f: impl FnOnce(&mut dyn Write) -> anyhow::Result<Counts>,
) -> anyhow::Result<Counts> {
    let Some(path) = out else {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        let c = f(&mut w)?;
        w.flush().context("writing to stdout")?;
        return Ok(c);
    };
    let tmp = tmp_path(path);
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let done = f(&mut w).and_then(|c| {
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(c)
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes one JSON line per ticket, oldest first.
pub fn export(store: &Store, cfg: &Config, raw: bool, w: &mut dyn Write) -> anyhow::Result<Counts> {
    let mut outbox: HashMap<u64, Vec<OutboxEntry>> = HashMap::new();
    for e in store.outbox_all()? {
        if let Some(n) = e.ticket {
            outbox.entry(n).or_default().push(e);
        }
    }
    let mut c = Counts::default();
    for t in store.tickets()? {
        let mut messages = Vec::new();
        for m in store.messages(t.number)? {
            messages.push(received(store, m, raw)?);
        }
        for e in outbox.remove(&t.number).unwrap_or_default() {
            messages.push(generated(store, e, raw)?);
        }
        // As `ticket show`: received and generated mail in time order.
        messages.sort_by_key(|m| m.message.received_at);
        c.tickets += 1;
        c.messages += messages.len() as u64;
        let line = ExportTicket {
            ticket: views::ticket_json(&t, cfg),
            messages,
        };
        serde_json::to_writer(&mut *w, &line)?;
        w.write_all(b"\n").context("writing the export")?;
    }
    Ok(c)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn received(store: &Store, m: MessageRecord, raw: bool) -> anyhow::Result<ExportMessage> {
    let bytes = if raw {
        let b = store
            .read_raw(&m.raw)
            .with_context(|| format!("reading the raw message <{}>", m.internal_id))?;
        Some(b64(&b))
    } else {
        None
    };
    Ok(ExportMessage {
        subject: Some(m.subject.clone()),
        size: m.raw.len,
        problems: m.problems.clone(),
        queue_id: m.queue_id.clone(),
        raw: bytes,
        message: MessageJson::from(m),
    })
}

fn generated(store: &Store, e: OutboxEntry, raw: bool) -> anyhow::Result<ExportMessage> {
    // The size without reading the spool; the bytes only when asked for.
    let size = e.head.len() as u64 + e.body.map_or(0, |(r, start)| r.len.saturating_sub(start));
    let bytes = if raw {
        let b = store
            .outbox_bytes(&e)
            .with_context(|| format!("reading the outbound mail <{}>", e.message_id))?;
        Some(b64(&b))
    } else {
        None
    };
    Ok(ExportMessage {
        subject: None,
        size,
        problems: Vec::new(),
        queue_id: None,
        raw: bytes,
        message: MessageJson::from(e),
    })
}
