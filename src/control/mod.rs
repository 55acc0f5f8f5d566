//! The control socket: how the CLI reaches a running daemon (sled lets one
//! process open the store, so while the daemon runs, the CLI asks it).
//!
//! Protocol: one JSON request line, one JSON response line, per connection.
//! The JSON views of tickets ([`views`]) are the same whether the daemon
//! answers or the CLI opens the store itself.

pub mod outbox;
pub mod status;
pub mod views;

use crate::config::Config;
use crate::ingest::Envelope;
use crate::render::Templates;
use crate::shutdown::Shutdown;
use crate::store::{Store, Timestamp};
use crate::workflow::command::Command;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    TicketList {
        status: Option<String>,
        assignee: Option<String>,
    },
    TicketShow {
        token: String,
    },
    Explain {
        /// The raw message, base64.
        raw: String,
        envelope: Envelope,
    },
    /// A workflow command on a ticket, through the same state machine as
    /// mail (`ticket take|assign|release|done|reopen|snooze|spam|customer`).
    TicketCommand {
        token: String,
        command: String,
        arg: Option<String>,
        /// Who acts: a roster address for `take`; shown in notices.
        actor: String,
    },
    Stats {
        by: String,
        since: Option<String>,
    },
    /// `ticket set`: category, priority and tags in one change, all or
    /// nothing, through the same state machine as `#category`,
    /// `#priority` and `#tag`.
    TicketSet {
        token: String,
        category: Option<String>,
        priority: Option<String>,
        #[serde(default)]
        tag: Vec<String>,
        #[serde(default)]
        untag: Vec<String>,
    },
    /// `ticket merge A B`: the older survives (as `#merge` by mail).
    TicketMerge {
        a: String,
        b: String,
    },
    /// `status`: the daemon's own figures and the store's counts.
    Status,
    OutboxList {
        state: Option<String>,
        limit: Option<usize>,
    },
    OutboxShow {
        id: u64,
    },
    /// Make a failed or backed-off entry due now (and wake the sender).
    OutboxRetry {
        id: u64,
    },
    /// Take an entry out of the queue for good; who asked is the socket
    /// peer's user, not a field the client could fill in.
    OutboxDrop {
        id: u64,
        reason: String,
    },
    /// `backup DIR`: a consistent snapshot into `dir` (absolute; written by
    /// the daemon's user) while delivery goes on (`crate::backup`).
    Backup {
        dir: PathBuf,
    },
    /// `forget ADDRESS`: the right to erasure (src/erase.rs); logged with
    /// the socket peer's user.
    Forget {
        address: String,
    },
    /// `export --person ADDRESS`: the right of access.
    ExportPerson {
        address: String,
    },
    /// `retention run`: the `policy.retention` sweep now.
    RetentionRun,
}

/// Who asks, and what only a running daemon knows.
pub struct Caller<'a> {
    /// The Unix user: the control socket peer's (SO_PEERCRED), or the
    /// CLI's own when it works on the store directly.
    pub user: String,
    pub daemon: Option<&'a status::DaemonInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Err(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket: bad message: {0}")]
    Protocol(String),
}

/// Answers one request against the open store.
pub fn handle(
    req: Request,
    store: &Store,
    cfg: &Config,
    tpl: &Templates,
    caller: &Caller,
) -> Response {
    let r = match req {
        Request::Ping => Ok(serde_json::json!({"pong": true})),
        Request::TicketList { status, assignee } => {
            views::ticket_list(store, cfg, status.as_deref(), assignee.as_deref())
                .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
        }
        Request::TicketShow { token } => views::ticket_show(store, cfg, &token)
            .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())),
        Request::Explain { raw, envelope } => {
            use base64::Engine;
            match base64::engine::general_purpose::STANDARD.decode(raw.as_bytes()) {
                Ok(raw) => views::explain(Some(store), &raw, &envelope, cfg, tpl, Timestamp::now()),
                Err(e) => Err(format!("raw message is not base64: {e}")),
            }
        }
        Request::TicketCommand {
            token,
            command,
            arg,
            actor,
        } => ticket_command(store, cfg, tpl, &token, &command, arg.as_deref(), &actor),
        Request::Stats { by, since } => {
            views::stats(Some(store), cfg, &by, since.as_deref(), Timestamp::now())
        }
        Request::TicketSet {
            token,
            category,
            priority,
            tag,
            untag,
        } => ticket_set(store, cfg, tpl, &token, category, priority, tag, untag),
        Request::TicketMerge { a, b } => ticket_merge(store, cfg, &a, &b),
        Request::Status => status::status(Some(store), cfg, caller.daemon, Timestamp::now()),
        Request::OutboxList { state, limit } => outbox::list(
            store,
            cfg,
            state.as_deref(),
            limit.unwrap_or(outbox::DEFAULT_LIMIT),
        )
        .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())),
        Request::OutboxShow { id } => outbox::show(store, cfg, id)
            .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())),
        Request::OutboxRetry { id } => outbox::retry(store, cfg, id, &caller.user)
            .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())),
        Request::OutboxDrop { id, reason } => {
            outbox::drop_entry(store, cfg, id, &reason, &caller.user)
                .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
        }
        Request::Backup { dir } => crate::backup::backup(store, &dir, &caller.user)
            .map_err(|e| e.to_string())
            .and_then(|m| serde_json::to_value(m).map_err(|e| e.to_string())),
        Request::Forget { address } => crate::erase::forget(store, cfg, &address, &caller.user)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string())),
        Request::ExportPerson { address } => {
            crate::erase::export_person(store, cfg, &address, &caller.user)
                .map_err(|e| e.to_string())
                .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
        }
        Request::RetentionRun if cfg.policy.retention.is_none() => {
            Err("policy.retention is not set: there is nothing to sweep".to_string())
        }
        Request::RetentionRun => {
            tracing::info!(by = %caller.user, "retention sweep asked for");
            crate::retention::sweep(store, cfg, Timestamp::now())
                .map_err(|e| e.to_string())
                .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
        }
    };
    match r {
        Ok(v) => Response::Ok(v),
        Err(e) => Response::Err(e),
    }
}

fn ticket_command(
    store: &Store,
    cfg: &Config,
    tpl: &Templates,
    tok: &str,
    command: &str,
    arg: Option<&str>,
    actor: &str,
) -> Result<serde_json::Value, String> {
    let n = views::parse_token(tok, cfg).ok_or_else(|| {
        format!(
            "{tok:?} is not a ticket token (e.g. {}-12)",
            cfg.support.token_prefix
        )
    })?;
    let now = Timestamp::now();
    let cmd = crate::workflow::command::command(
        command,
        arg.unwrap_or(""),
        &cfg.support.token_prefix,
        now,
    )?;
    let secret = store.load_or_create_secret().map_err(|e| e.to_string())?;
    let (cfg2, tpl2, actor) = (cfg.clone(), tpl.clone(), actor.to_string());
    let out = store
        .commit_blocking(None, move |tx, _| {
            crate::deliver::command_transaction(
                tx,
                n,
                &cmd,
                &actor,
                &cfg2,
                &tpl2,
                Some(&secret),
                now,
            )
        })
        .map_err(|e| e.to_string())??;
    tracing::info!(ticket = %out.token, command = %out.command, status = %format_args!("{}->{}", out.status_before, out.status_after), "cli command");
    serde_json::to_value(out).map_err(|e| e.to_string())
}

/// The commands `ticket set` stands for; checked like the mail commands
/// (`workflow::command`), so the CLI refuses what mail would.
pub fn set_commands(
    category: Option<String>,
    priority: Option<String>,
    tag: Vec<String>,
    untag: Vec<String>,
) -> Result<Vec<Command>, String> {
    let mut cmds = Vec::new();
    if let Some(c) = category {
        cmds.push(Command::Category { id: c });
    }
    if let Some(p) = priority {
        cmds.push(Command::Priority { id: p });
    }
    for t in tag.iter().chain(untag.iter()) {
        if !crate::workflow::command::is_tag(t) {
            return Err(format!(
                "{t:?} is not a tag: one word of letters, digits, - or _"
            ));
        }
    }
    if !tag.is_empty() || !untag.is_empty() {
        cmds.push(Command::Tag {
            add: tag,
            remove: untag,
        });
    }
    if cmds.is_empty() {
        return Err("nothing to set: give --category, --priority, --tag or --untag".into());
    }
    Ok(cmds)
}

#[allow(clippy::too_many_arguments)]
fn ticket_set(
    store: &Store,
    cfg: &Config,
    tpl: &Templates,
    tok: &str,
    category: Option<String>,
    priority: Option<String>,
    tag: Vec<String>,
    untag: Vec<String>,
) -> Result<serde_json::Value, String> {
    let n = views::parse_token(tok, cfg).ok_or_else(|| {
        format!(
            "{tok:?} is not a ticket token (e.g. {}-12)",
            cfg.support.token_prefix
        )
    })?;
    let cmds = set_commands(category, priority, tag, untag)?;
    let now = Timestamp::now();
    let (cfg2, tpl2) = (cfg.clone(), tpl.clone());
    let out = store
        .commit_blocking(None, move |tx, _| {
            crate::deliver::commands_transaction(
                tx, n, &cmds, "set", "cli", &cfg2, &tpl2, None, now,
            )
        })
        .map_err(|e| e.to_string())??;
    tracing::info!(ticket = %out.token, category = ?out.category, priority = %out.priority, tags = ?out.tags, "cli set");
    serde_json::to_value(out).map_err(|e| e.to_string())
}

fn ticket_merge(
    store: &Store,
    cfg: &Config,
    a: &str,
    b: &str,
) -> Result<serde_json::Value, String> {
    let num = |tok: &str| {
        views::parse_token(tok, cfg).ok_or_else(|| {
            format!(
                "{tok:?} is not a ticket token (e.g. {}-12)",
                cfg.support.token_prefix
            )
        })
    };
    let (na, nb) = (num(a)?, num(b)?);
    let now = Timestamp::now();
    let cfg2 = cfg.clone();
    let out = store
        .commit_blocking(None, move |tx, _| {
            crate::deliver::merge_transaction(tx, na, nb, &cfg2, now)
        })
        .map_err(|e| e.to_string())??;
    tracing::info!(result = %out, "cli merge");
    Ok(out)
}

/// Binds the control socket (mode 0600: it can do what the CLI can).
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path).map_err(io)?;
        }
    }
    let l = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(l)
}

pub type Shared = Arc<dyn Fn() -> (Arc<Config>, Arc<Templates>) + Send + Sync>;

/// Serves requests until shutdown; each connection on its own task.
/// `outbox` and `schedule` are woken after a request that may have queued
/// mail or jobs (ticket commands: notices, "taken", reminders, snooze
/// wake-ups, auto-close, SLA jobs), so a job due soon is not left to the
/// scheduler's next poll.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    store: Store,
    current: Shared,
    outbox: Arc<tokio::sync::Notify>,
    schedule: Arc<tokio::sync::Notify>,
    info: Arc<status::DaemonInfo>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let store = store.clone();
                    let current = current.clone();
                    let outbox = outbox.clone();
                    let schedule = schedule.clone();
                    let info = info.clone();
                    tokio::spawn(async move {
                        if let Err(e) =
                            serve_one(stream, store, current, outbox, schedule, info).await
                        {
                            tracing::warn!(error = %e, "control request failed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

async fn serve_one(
    stream: UnixStream,
    store: Store,
    current: Shared,
    outbox: Arc<tokio::sync::Notify>,
    schedule: Arc<tokio::sync::Notify>,
    info: Arc<status::DaemonInfo>,
) -> Result<(), Error> {
    // The kernel's word on who connected (SO_PEERCRED): what `outbox drop`
    // logs as `by=`. A peer it cannot name is refused nothing, but shows so.
    let user = match stream.peer_cred() {
        Ok(c) => outbox::user_name(c.uid()),
        Err(_) => "unknown".to_string(),
    };
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(r);
    reader
        .read_line(&mut line)
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            let (cfg, tpl) = current();
            let writes = matches!(
                req,
                Request::TicketCommand { .. }
                    | Request::TicketSet { .. }
                    | Request::TicketMerge { .. }
                    | Request::OutboxRetry { .. }
                    | Request::Forget { .. }
            );
            // Reads scan the store: keep them off the async workers.
            let resp = tokio::task::spawn_blocking(move || {
                let caller = Caller {
                    user,
                    daemon: Some(info.as_ref()),
                };
                handle(req, &store, &cfg, &tpl, &caller)
            })
            .await
            .unwrap_or_else(|e| Response::Err(format!("request failed: {e}")));
            if writes && matches!(resp, Response::Ok(_)) {
                outbox.notify_one();
                schedule.notify_one();
            }
            resp
        }
        Err(e) => Response::Err(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp).map_err(|e| Error::Protocol(e.to_string()))?;
    out.push(b'\n');
    w.write_all(&out)
        .await
        .map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(())
}

/// Client side, blocking (the CLI has no runtime of its own for this).
/// `Ok(None)` when no daemon listens there.
pub fn call(path: &Path, req: &Request) -> Result<Option<Response>, Error> {
    use std::io::{BufRead, Write};
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut s = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(io(e)),
    };
    let mut line = serde_json::to_vec(req).map_err(|e| Error::Protocol(e.to_string()))?;
    line.push(b'\n');
    s.write_all(&line).map_err(io)?;
    let mut resp = String::new();
    std::io::BufReader::new(s)
        .read_line(&mut resp)
        .map_err(io)?;
    serde_json::from_str(&resp)
        .map(Some)
        .map_err(|e| Error::Protocol(e.to_string()))
}
