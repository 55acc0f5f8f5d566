//! The control socket: how the CLI reaches a running daemon (sled lets one
//! process open the store, so while the daemon runs, the CLI asks it).
//!
//! Protocol: one JSON request line, one JSON response line, per connection.
//! The JSON views of tickets ([`views`]) are the same whether the daemon
//! answers or the CLI opens the store itself.

pub mod views;

use crate::config::Config;
use crate::ingest::Envelope;
use crate::render::Templates;
use crate::shutdown::Shutdown;
use crate::store::{Store, Timestamp};
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
pub fn handle(req: Request, store: &Store, cfg: &Config, tpl: &Templates) -> Response {
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
            views::stats(store, &by, since.as_deref(), Timestamp::now())
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
    let secret =
        crate::workflow::links::load_or_create_secret(&cfg.data_dir).map_err(|e| e.to_string())?;
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
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    store: Store,
    current: Shared,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let store = store.clone();
                    let current = current.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_one(stream, store, current).await {
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

async fn serve_one(stream: UnixStream, store: Store, current: Shared) -> Result<(), Error> {
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
            // Reads scan the store: keep them off the async workers.
            tokio::task::spawn_blocking(move || handle(req, &store, &cfg, &tpl))
                .await
                .unwrap_or_else(|e| Response::Err(format!("request failed: {e}")))
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
