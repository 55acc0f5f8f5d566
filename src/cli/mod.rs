//! The command line (SPEC §7). `anyhow` lives here and in `main.rs` only.
//!
//! Commands that read state ask a running daemon over the control socket;
//! when none answers, they open the store themselves (sled allows one
//! process at a time, so both at once is impossible by construction).

pub mod backup;
pub mod check;
pub mod export;
pub mod import;
pub mod man;
pub mod migrate;

use crate::config::{Config, LogFormat};
use crate::control::{self, views, Request, Response};
use crate::ingest::{parse::parse, Envelope};
use crate::render::Templates;
use crate::store::{Store, Timestamp};
use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "postdesk",
    version,
    about = "LMTP delivery agent that turns a support mailing list into a ticket desk worked by mail"
)]
pub struct Cli {
    /// Config file (YAML). Without it, the built-in default: LMTP on
    /// 127.0.0.1:2424, data in ./data, outbound mail written to ./data/sent.
    #[arg(long, global = true, env = "POSTDESK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the daemon: LMTP listeners, outbox sender, control socket.
    Serve,
    /// Write the manual pages (one per command) into DIR; used by scripts/package.sh.
    #[command(hide = true)]
    Man {
        /// Output directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Response metrics per agent, customer or category: tickets, open,
    /// resolved, reopens, median and p90 first response and resolution
    /// (open time minus pauses), SLA compliance and ratings.
    Stats {
        /// agent, customer or category
        #[arg(long, default_value = "agent")]
        by: String,
        /// Window: tickets started this long ago or later, e.g. 30d.
        #[arg(long, default_value = "30d")]
        since: String,
        /// The report as one JSON object (durations in seconds).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// A header line, then one line per group and the total (RFC 4180).
        #[arg(long)]
        csv: bool,
    },
    /// Check the config file and say what is wrong, with key and line.
    CheckConfig,
    /// Look at tickets.
    Ticket {
        #[command(subcommand)]
        cmd: TicketCmd,
    },
    /// Dry run: how a message on stdin would be classified and threaded,
    /// and what would follow. Nothing is written or sent.
    Explain {
        /// Envelope sender (default: the From address).
        #[arg(long)]
        from: Option<String>,
        /// Envelope recipient (default: the support address).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Backfill history: every message through the same rules, nothing
    /// sent. Stop the daemon first.
    Import {
        #[command(subcommand)]
        cmd: import::ImportCmd,
    },
    /// The routing rules (docs/policies.md).
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
    },
    /// Version, uptime, listeners, store size, tickets by status, outbox
    /// depth, next scheduled job, last delivery and last error. With no
    /// daemon running, what the store says.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The outbound queue: list, show, retry or drop generated mail.
    Outbox {
        #[command(subcommand)]
        cmd: OutboxCmd,
    },
    /// Every ticket with its messages as JSON lines (the `ticket show
    /// --json` shape; reads the store: stop the daemon first), or with
    /// `--person` all that is stored about one person (through the daemon
    /// when it runs).
    Export {
        /// Write here (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Include each message's raw bytes, base64.
        #[arg(long)]
        raw: bool,
        /// Everything stored about one person (right of access), as one
        /// JSON document; through the daemon when it runs. Logged with who
        /// ran it.
        #[arg(long, value_name = "ADDRESS")]
        person: Option<String>,
    },
    /// A consistent copy of the store, spool and link secret into DIR (new
    /// or empty) while the daemon keeps delivering; works on a stopped
    /// daemon's data dir too.
    Backup {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a backup and restore it as the configured data_dir, which
    /// must be empty or absent, with no daemon running.
    Restore {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Erase a person (right to erasure): their messages, their address in
    /// every ticket, message and outbox record, their index entries; then
    /// the store is rewritten so no old copy stays on disk (at once
    /// without a daemon, else at its next start). Logged with who ran it.
    Forget {
        /// The person's mail address.
        address: String,
    },
    /// The `policy.retention` sweep: raw messages of tickets closed longer
    /// than `after` are erased (docs/operations.md#retention).
    Retention {
        #[command(subcommand)]
        cmd: RetentionCmd,
    },
    /// Copy every ticket, message, raw mail, outbox entry, job and the
    /// link secret from one store into another, empty one (sled to
    /// PostgreSQL and back), then check counts and per-message SHA-256.
    /// Stop postdesk first; the source's records are not changed. Exits
    /// non-zero when the check finds a difference.
    Migrate {
        /// sled:DIR (a data_dir) or postgres:URL (postgres://user@host/db).
        #[arg(long, value_name = "STORE")]
        from: String,
        /// sled:DIR or postgres:URL; must hold nothing yet.
        #[arg(long, value_name = "STORE")]
        to: String,
        /// Records per destination transaction.
        #[arg(long, value_name = "N", default_value_t = 500)]
        batch: usize,
        /// Raw messages written at once (the destination folds them into
        /// one durable write).
        #[arg(long, value_name = "N", default_value_t = 32)]
        parallel: usize,
        /// Plain progress lines instead of a bar.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RetentionCmd {
    /// Run the retention sweep now (it also runs daily by itself).
    Run,
}

#[derive(Debug, Subcommand)]
pub enum OutboxCmd {
    /// Outbound mail with its attempts and last relay reply; by default
    /// what is pending or failed, pending first in due order.
    List {
        /// pending, failed, sent, dropped or all.
        #[arg(long)]
        state: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = crate::control::outbox::DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One entry: envelope, kind, ticket, attempts, next attempt, last
    /// relay reply, times, and the mail's header block.
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Send a failed entry again, or one waiting on its backoff now.
    Retry { id: u64 },
    /// Take an entry out of the queue for good (kept as dropped, with the
    /// reason and who ran it, and logged).
    Drop {
        id: u64,
        /// Why: logged and kept with the entry.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Run the routing rules over a mail on stdin and print every rule in
    /// order, matched or not and why, and what would be set. Uses the
    /// config only: no daemon, no store (a customer is found from the
    /// directory, not from earlier tickets).
    Test {
        /// Arrival time for `business_hours` (RFC 3339, or a date and time
        /// in UTC such as 2026-03-10T08:15); default: the mail's Date
        /// header, else now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Envelope recipient, for `plus_tag` (default: the support
        /// addresses in To and Cc).
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
        /// Print the outcome and trace as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TicketCmd {
    /// List tickets, oldest first.
    List {
        /// unassigned, active, waiting, snoozed, done, closed or deleted.
        #[arg(long)]
        status: Option<String>,
        /// Agent address (or its local part).
        #[arg(long)]
        assignee: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one ticket with its messages.
    Show {
        /// e.g. SUP-12
        token: String,
        #[arg(long)]
        json: bool,
    },
    /// Take a ticket for an agent (the full process: notice, reminder,
    /// customer told once).
    Take {
        token: String,
        /// The agent taking it (a roster address or its local part).
        #[arg(long = "as", value_name = "AGENT")]
        agent: String,
    },
    /// Assign a ticket to an agent (Directo: redirect).
    Assign { token: String, agent: String },
    /// Clear the assignee: back to unassigned.
    Release { token: String },
    /// Mark done.
    Done { token: String },
    /// Reopen a done, closed or deleted ticket.
    Reopen { token: String },
    /// Snooze until a duration from now (2d) or a date (2026-12-01).
    Snooze { token: String, until: String },
    /// Mark as spam: deleted, hidden from reports.
    Spam { token: String },
    /// Set the ticket's customer and teach the directory.
    Customer { token: String, id: String },
    /// Set category, priority and tags (as #category, #priority, #tag by
    /// mail), all in one change.
    Set {
        token: String,
        /// A categories[].id.
        #[arg(long)]
        category: Option<String>,
        /// A priorities[].id.
        #[arg(long)]
        priority: Option<String>,
        /// Add a tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tag: Vec<String>,
        /// Remove a tag (repeatable).
        #[arg(long = "untag", value_name = "TAG")]
        untag: Vec<String>,
    },
    /// Join two tickets that are one conversation (as #merge by mail):
    /// the older survives, the other points at it.
    Merge { a: String, b: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("postdesk: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Ok(Config::load(p)?),
        None => Ok(Config::default()),
    }
}

pub fn init_logging(cfg: &Config, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse::<EnvFilter>().ok())
        .or_else(|| default_level.parse::<EnvFilter>().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config_path = cli.config.clone();
    match cli.cmd {
        Cmd::Man { dir } => {
            let pages = man::write_man(&dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            for p in pages {
                println!("{}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig => {
            let cfg = load_config(config_path.as_deref())?;
            match check::run(&cfg, config_path.as_deref())? {
                true => Ok(ExitCode::SUCCESS),
                false => Ok(ExitCode::FAILURE),
            }
        }
        Cmd::Serve => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, &cfg.log.level);
            serve(cfg, config_path)
        }
        Cmd::Ticket { cmd } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            ticket(cmd, &cfg)
        }
        Cmd::Explain { from, to, json } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            explain(&cfg, from, to, json)
        }
        Cmd::Stats {
            by,
            since,
            json,
            csv,
        } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            let v = ask(
                &cfg,
                Request::Stats {
                    by,
                    since: Some(since),
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let report: crate::stats::Report = serde_json::from_value(v)
                    .context("the stats answer is not a report this version reads")?;
                if csv {
                    print!("{}", report.to_csv());
                } else {
                    print!("{}", report.to_text());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            let v = ask(&cfg, Request::Status)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_status(&v);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Outbox { cmd } => {
            let cfg = load_config(config_path.as_deref())?;
            // `outbox drop` and `retry` log who did it; on the store
            // directly that line goes to this terminal, so show info.
            init_logging(&cfg, "info");
            outbox(cmd, &cfg)
        }
        Cmd::Import { cmd } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            import::run(&cfg, cmd)
        }
        Cmd::Export {
            out,
            raw: _,
            person: Some(address),
        } => {
            let cfg = load_config(config_path.as_deref())?;
            // Logged with who ran it: on the store directly, to this terminal.
            init_logging(&cfg, "info");
            let v = ask(&cfg, Request::ExportPerson { address })?;
            export::write_person(out.as_deref(), &v)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            out,
            raw,
            person: None,
        } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            export::run(&cfg, out.as_deref(), raw)
        }
        Cmd::Backup { dir, json } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            sled_only(&cfg, "backup", "pg_dump")?;
            backup::backup(&cfg, &dir, json)
        }
        Cmd::Restore { dir } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            sled_only(&cfg, "restore", "pg_restore")?;
            backup::restore(&cfg, &dir)
        }
        Cmd::Forget { address } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "info");
            forget(&cfg, &address)
        }
        Cmd::Retention {
            cmd: RetentionCmd::Run,
        } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "info");
            let v = ask(&cfg, Request::RetentionRun)?;
            println!(
                "retention: {} tickets, {} messages erased, {} sent mails, {} anonymised",
                v["tickets"], v["messages"], v["outbox"], v["anonymised"]
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Migrate {
            from,
            to,
            batch,
            parallel,
            quiet,
        } => {
            // Only the log format comes from a config: the stores are named
            // on the command line, so a broken config does not stop this.
            let cfg = load_config(config_path.as_deref()).unwrap_or_default();
            init_logging(&cfg, "warn");
            migrate::run(&from, &to, batch, parallel, quiet)
        }
        Cmd::Rules {
            cmd: RulesCmd::Test { at, to, json },
        } => {
            let cfg = load_config(config_path.as_deref())?;
            init_logging(&cfg, "warn");
            rules_test(&cfg, at.as_deref(), to.as_deref(), json)
        }
    }
}

/// `rules test`: the rules over a mail from stdin, config only.
fn rules_test(
    cfg: &Config,
    at: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .context("reading the message from stdin")?;
    let rules = crate::policy::Rules::new(cfg)?;
    let p = parse(&raw);
    let arrival = match at {
        Some(a) => crate::workflow::command::parse_until(a, Timestamp::now())
            .filter(|_| a.parse::<crate::config::Duration>().is_err())
            .ok_or_else(|| {
                anyhow!("--at {a:?}: give a time such as 2026-03-10T10:15:00+02:00 or 2026-03-10T08:15 (UTC)")
            })?,
        None => p
            .date
            .as_deref()
            .and_then(|d| d.parse::<Timestamp>().ok())
            .unwrap_or_else(Timestamp::now),
    };
    let rcpt_to: Vec<String> = match to {
        Some(t) => vec![t.to_string()],
        None => {
            p.to.iter()
                .chain(p.cc.iter())
                .filter(|a| cfg.support_tag(&a.email).is_some())
                .map(|a| a.email.clone())
                .collect()
        }
    };
    let env = Envelope {
        mail_from: String::new(),
        rcpt_to,
    };
    let sender = p
        .from
        .as_ref()
        .or(p.sender.as_ref())
        .map(|a| a.email.clone())
        .unwrap_or_default();
    let customer = crate::ingest::customer::identify(&sender, cfg, &crate::store::EmptyView)?;
    let own = crate::ingest::quote::own_text(&p.text);
    let outcome = crate::ingest::route::evaluate_mail(
        &rules,
        &p,
        &env,
        &sender,
        customer.as_ref().map(|c| c.customer.as_str()),
        &own,
        cfg,
        arrival,
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", crate::policy::render_trace(&outcome));
    }
    Ok(ExitCode::SUCCESS)
}

fn serve(cfg: Config, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // Raw mail, the store and the signing secret: the service user only,
    // whatever umask the service manager or shell handed us.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let (trigger, shutdown) = crate::shutdown::channel();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: stopping (in-flight deliveries finish)");
            trigger.fire();
        });
        let r = crate::daemon::run(cfg, shutdown, move |running| {
            let deliverer = running.deliverer.clone();
            tokio::spawn(reload_on_hangup(deliverer, config_path));
            // Type=notify: systemd starts Postfix's traffic only now. Outside
            // systemd (no NOTIFY_SOCKET) this does nothing.
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        })
        .await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        r
    })?;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP re-reads the config file and templates between messages. A bad
/// file is reported and the running config kept; listeners and the data
/// directory are bound at start and need a restart to change.
async fn reload_on_hangup(
    deliverer: std::sync::Arc<crate::deliver::Deliverer>,
    path: Option<PathBuf>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reload needs a restart");
        return;
    };
    while hup.recv().await.is_some() {
        let Some(p) = path.as_deref() else {
            tracing::info!("SIGHUP: running on the built-in config, nothing to reload");
            continue;
        };
        let loaded = Config::load(p).map_err(|e| e.to_string()).and_then(|c| {
            let t = Templates::for_config(&c).map_err(|e| e.to_string())?;
            // The rules are compiled here, once per reload, never per message.
            let r = crate::policy::Rules::new(&c).map_err(|e| e.to_string())?;
            Ok((c, t, r))
        });
        match loaded {
            Ok((cfg, tpl, rules)) => {
                let (old, _) = deliverer.current();
                if old.listen != cfg.listen || old.data_dir != cfg.data_dir {
                    tracing::warn!(
                        "SIGHUP: listen.* and data_dir changes take effect at the next restart"
                    );
                }
                let n = rules.len();
                let retrack = crate::sla::track::clocks_changed(&old, &cfg);
                deliverer.replace(std::sync::Arc::new(cfg), std::sync::Arc::new(tpl), rules);
                tracing::info!(config = %p.display(), rules = n, "SIGHUP: config, templates and routing rules reloaded");
                if retrack {
                    deliverer.retrack_sla().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: reload failed, keeping the running config")
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {},
                _ = i.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Asks the daemon; when none runs, answers from the store directly.
pub(crate) fn ask(cfg: &Config, req: Request) -> anyhow::Result<serde_json::Value> {
    if let Some(resp) = control::call(&cfg.control_path(), &req)? {
        return match resp {
            Response::Ok(v) => Ok(v),
            Response::Err(e) => Err(anyhow!(e)),
        };
    }
    let tpl = Templates::for_config(cfg)?;
    if !cfg.has_store() {
        // Nothing was ever delivered here: answer from an empty desk rather
        // than creating a data directory as a side effect of a query.
        return match req {
            Request::TicketList { .. } => Ok(serde_json::json!([])),
            Request::Explain { raw, envelope } => {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD.decode(raw)?;
                views::explain(None, &raw, &envelope, cfg, &tpl, Timestamp::now())
                    .map_err(|e| anyhow!(e))
            }
            Request::TicketShow { token } => bail!(
                "no ticket {token}: the data directory {} holds no store",
                cfg.data_dir.display()
            ),
            Request::Ping => bail!("no daemon is running"),
            Request::TicketCommand { token, .. } => bail!(
                "no ticket {token}: the data directory {} holds no store",
                cfg.data_dir.display()
            ),
            Request::Stats { by, since } => {
                views::stats(None, cfg, &by, since.as_deref(), Timestamp::now())
                    .map_err(|e| anyhow!(e))
            }
            Request::TicketSet { token, .. } => bail!(
                "no ticket {token}: the data directory {} holds no store",
                cfg.data_dir.display()
            ),
            Request::TicketMerge { a, .. } => bail!(
                "no ticket {a}: the data directory {} holds no store",
                cfg.data_dir.display()
            ),
            Request::Status => crate::control::status::status(None, cfg, None, Timestamp::now())
                .map_err(|e| anyhow!(e)),
            Request::OutboxList { .. } => Ok(serde_json::json!([])),
            Request::Forget { .. } | Request::ExportPerson { .. } | Request::RetentionRun => {
                bail!(
                    "the data directory {} holds no store: nothing is stored about anyone",
                    cfg.data_dir.display()
                )
            }
            Request::OutboxShow { id }
            | Request::OutboxRetry { id }
            | Request::OutboxDrop { id, .. } => bail!(
                "no outbox entry {id}: the data directory {} holds no store",
                cfg.data_dir.display()
            ),
            Request::Backup { .. } => bail!(
                "nothing to back up: the data directory {} holds no store",
                cfg.data_dir.display()
            ),
        };
    }
    let store = Store::open_backend(&cfg.store, &cfg.data_dir).with_context(|| {
        format!(
            "no daemon answered on {} and the store could not be opened",
            cfg.control_path().display()
        )
    })?;
    // A store from before the load counters gets them before any write.
    crate::workload::ensure_loads(&store)?;
    let caller = control::Caller {
        user: crate::control::outbox::current_user(),
        daemon: None,
    };
    let out = match control::handle(req, &store, cfg, &tpl, &caller) {
        Response::Ok(v) => Ok(v),
        Response::Err(e) => Err(anyhow!(e)),
    };
    store.close();
    out
}

/// `forget`: through the daemon (the store rewrite then waits for its
/// next start), or on the store directly and rewritten at once.
fn forget(cfg: &Config, address: &str) -> anyhow::Result<ExitCode> {
    crate::erase::normalise(address)?;
    let req = Request::Forget {
        address: address.to_string(),
    };
    let v = match control::call(&cfg.control_path(), &req)? {
        Some(Response::Ok(v)) => v,
        Some(Response::Err(e)) => bail!(e),
        None => {
            if !cfg.has_store() {
                bail!(
                    "the data directory {} holds no store: nothing is stored about anyone",
                    cfg.data_dir.display()
                );
            }
            let by = crate::control::outbox::current_user();
            serde_json::to_value(crate::erase::forget_offline(cfg, address, &by)?)?
        }
    };
    println!(
        "forgot {address} as {}: {} tickets, {} own messages erased, {} other messages redacted, {} raw messages overwritten, {} outbox entries ({} pending dropped), {} thread keys",
        s(&v, "pseudonym"),
        v["tickets"],
        v["messages_erased"],
        v["messages_redacted"],
        v["raw_overwritten"],
        v["outbox"],
        v["outbox_dropped"],
        v["thread_keys"]
    );
    if s(&v, "rewrite") == "done" {
        println!("store rewritten: no earlier copy remains on disk");
    } else if s(&v, "rewrite") == "vacuum" {
        println!("PostgreSQL keeps the old row versions until VACUUM reuses their space: run VACUUM (FULL) raw_messages, messages, tickets, outbox to drop them now (docs/scaling.md#erasure)");
    } else {
        println!("store rewrite pending: it runs at the daemon's next start (restart it to finish the erasure on disk)");
    }
    Ok(ExitCode::SUCCESS)
}

fn ticket(cmd: TicketCmd, cfg: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        TicketCmd::List {
            status,
            assignee,
            json,
        } => {
            let v = ask(cfg, Request::TicketList { status, assignee })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_list(&v);
            }
        }
        TicketCmd::Take { token, agent } => ticket_command(cfg, &token, "take", None, &agent)?,
        TicketCmd::Assign { token, agent } => {
            ticket_command(cfg, &token, "assign", Some(agent), "cli")?
        }
        TicketCmd::Release { token } => ticket_command(cfg, &token, "release", None, "cli")?,
        TicketCmd::Done { token } => ticket_command(cfg, &token, "done", None, "cli")?,
        TicketCmd::Reopen { token } => ticket_command(cfg, &token, "reopen", None, "cli")?,
        TicketCmd::Snooze { token, until } => {
            ticket_command(cfg, &token, "snooze", Some(until), "cli")?
        }
        TicketCmd::Spam { token } => ticket_command(cfg, &token, "spam", None, "cli")?,
        TicketCmd::Customer { token, id } => {
            ticket_command(cfg, &token, "customer", Some(id), "cli")?
        }
        TicketCmd::Set {
            token,
            category,
            priority,
            tag,
            untag,
        } => {
            // Checked here too, so a typo is refused before any daemon call.
            control::set_commands(
                category.clone(),
                priority.clone(),
                tag.clone(),
                untag.clone(),
            )
            .map_err(|e| anyhow!(e))?;
            let v = ask(
                cfg,
                Request::TicketSet {
                    token,
                    category,
                    priority,
                    tag,
                    untag,
                },
            )?;
            let tags: Vec<&str> = v["tags"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{} set: category {}, priority {}, tags [{}]",
                s(&v, "token"),
                s(&v, "category"),
                s(&v, "priority"),
                tags.join(", ")
            );
        }
        TicketCmd::Merge { a, b } => {
            let v = ask(cfg, Request::TicketMerge { a, b })?;
            println!(
                "{} merged into {} ({} messages moved; {} is now {})",
                s(&v, "merged"),
                s(&v, "survivor"),
                v.get("messages_moved")
                    .and_then(|x| x.as_u64())
                    .unwrap_or(0),
                s(&v, "survivor"),
                s(&v, "status")
            );
        }
        TicketCmd::Show { token, json } => {
            let v = ask(cfg, Request::TicketShow { token })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_show(&v);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn outbox(cmd: OutboxCmd, cfg: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        OutboxCmd::List { state, limit, json } => {
            let v = ask(
                cfg,
                Request::OutboxList {
                    state,
                    limit: Some(limit),
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_outbox_list(&v, limit);
            }
        }
        OutboxCmd::Show { id, json } => {
            let v = ask(cfg, Request::OutboxShow { id })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_outbox_show(&v);
            }
        }
        OutboxCmd::Retry { id } => {
            let v = ask(cfg, Request::OutboxRetry { id })?;
            println!(
                "outbox {id} ({} to {}, {}): due now (attempts so far: {})",
                s(&v, "kind"),
                joined(&v["rcpt_to"]),
                s(&v, "ticket"),
                v["attempts"].as_u64().unwrap_or(0)
            );
        }
        OutboxCmd::Drop { id, reason } => {
            if reason.trim().is_empty() {
                bail!("outbox drop needs --reason TEXT: say why, it is logged and kept");
            }
            let v = ask(cfg, Request::OutboxDrop { id, reason })?;
            println!(
                "outbox {id} ({} to {}, {}): dropped by {}",
                s(&v, "kind"),
                joined(&v["rcpt_to"]),
                s(&v, "ticket"),
                s(&v["dropped"], "by")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn joined(v: &serde_json::Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn print_outbox_list(v: &serde_json::Value, limit: usize) {
    let empty = Vec::new();
    let rows = v.as_array().unwrap_or(&empty);
    if rows.is_empty() {
        println!("no outbox entries");
        return;
    }
    println!(
        "{:>6} {:<8} {:<8} {:<9} {:>3} {:<20} {:<30} LAST REPLY",
        "ID", "STATE", "KIND", "TICKET", "TRY", "NEXT ATTEMPT", "TO"
    );
    for e in rows {
        let next = e["next_attempt_at"]
            .as_str()
            .map(|t| t.chars().take(19).collect::<String>())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>6} {:<8} {:<8} {:<9} {:>3} {:<20} {:<30} {}",
            e["id"].as_u64().unwrap_or(0),
            s(e, "state"),
            s(e, "kind"),
            s(e, "ticket"),
            e["attempts"].as_u64().unwrap_or(0),
            next,
            joined(&e["rcpt_to"]),
            s(e, "last_reply")
        );
    }
    if rows.len() >= limit {
        println!("(first {limit} shown: --limit N for more)");
    }
}

fn print_outbox_show(v: &serde_json::Value) {
    println!("outbox {}  {} {}", v["id"], s(v, "state"), s(v, "kind"));
    for (label, val) in [
        ("ticket", s(v, "ticket").to_string()),
        ("from", s(v, "mail_from").to_string()),
        ("to", joined(&v["rcpt_to"])),
        ("message-id", s(v, "message_id").to_string()),
        ("attempts", v["attempts"].to_string()),
        ("next attempt", s(v, "next_attempt_at").to_string()),
        ("last reply", s(v, "last_reply").to_string()),
        ("created", s(v, "created_at").to_string()),
        ("sent", s(v, "sent_at").to_string()),
        ("retried", s(v, "retried_at").to_string()),
        ("size", v["size"].to_string()),
    ] {
        println!("  {label:<13} {val}");
    }
    if let Some(d) = v.get("dropped").filter(|d| !d.is_null()) {
        println!(
            "  {:<13} {} by {}: {}",
            "dropped",
            s(d, "at"),
            s(d, "by"),
            s(d, "reason")
        );
    }
    println!("header:");
    for line in s(v, "head").lines() {
        println!("  {line}");
    }
    if v["body_from_spool"].as_bool() == Some(true) {
        println!("  (body: the stored customer mail)");
    }
}

fn print_status(v: &serde_json::Value) {
    let running = v["running"].as_bool() == Some(true);
    println!("postdesk {}", s(v, "version"));
    if running {
        let up = v["uptime_seconds"].as_i64().unwrap_or(0);
        println!(
            "  {:<15} running, pid {}, up {} (since {})",
            "daemon",
            v["pid"],
            crate::render::desk::age(
                Timestamp::UNIX_EPOCH,
                Timestamp::from_second(up).unwrap_or(Timestamp::UNIX_EPOCH)
            ),
            s(v, "started_at")
        );
    } else {
        println!(
            "  {:<15} not running (no answer on {}){}",
            "daemon",
            s(&v["listeners"], "control"),
            if v["tickets"].is_object() {
                "; figures from the store"
            } else {
                ""
            }
        );
    }
    println!(
        "  {:<15} {}{}",
        "lmtp",
        joined(&v["listeners"]["lmtp"]),
        if running { "" } else { " (configured)" }
    );
    if let Some(m) = v["listeners"]["metrics"].as_str() {
        println!(
            "  {:<15} http://{m}/metrics{}",
            "metrics",
            if running { "" } else { " (configured)" }
        );
    }
    let st = &v["store"];
    if let Some(node) = st["node"].as_str() {
        let live = st["nodes"].as_array().map(Vec::len).unwrap_or(0);
        println!(
            "  {:<15} postgres, this node {node}, {live} node(s) beating",
            "store"
        );
    } else {
        match st["size_bytes"].as_u64() {
            Some(b) => println!(
                "  {:<15} {} at {}, {:.1} MiB",
                "store",
                s(st, "backend"),
                s(st, "data_dir"),
                b as f64 / (1024.0 * 1024.0)
            ),
            None => println!(
                "  {:<15} {} at {}: no store yet",
                "store",
                s(st, "backend"),
                s(st, "data_dir")
            ),
        }
    }
    if let Some(t) = v["tickets"].as_object() {
        let parts: Vec<String> = crate::store::Status::ALL
            .iter()
            .map(|st| {
                format!(
                    "{} {}",
                    st.as_str(),
                    t.get(st.as_str()).unwrap_or(&0.into())
                )
            })
            .collect();
        println!("  {:<15} {} ({})", "tickets", t["total"], parts.join(", "));
    }
    let o = &v["outbox"];
    if o.is_object() {
        let oldest = match o["oldest_pending"].as_object() {
            Some(e) => format!(
                ", oldest pending {} ({} old, {} attempts)",
                e["id"],
                crate::render::desk::age(
                    Timestamp::UNIX_EPOCH,
                    Timestamp::from_second(e["age_seconds"].as_i64().unwrap_or(0))
                        .unwrap_or(Timestamp::UNIX_EPOCH)
                ),
                e["attempts"]
            ),
            None => String::new(),
        };
        println!(
            "  {:<15} {} pending, {} failed{}",
            "outbox", o["pending"], o["failed"], oldest
        );
    }
    match v["next_job"].as_object() {
        Some(j) => println!(
            "  {:<15} {} {} due {}{}",
            "next job",
            j.get("kind").and_then(|x| x.as_str()).unwrap_or("-"),
            j.get("ticket").and_then(|x| x.as_str()).unwrap_or(""),
            j.get("due").and_then(|x| x.as_str()).unwrap_or("-"),
            if j.get("late").and_then(|x| x.as_bool()) == Some(true) {
                " (late)"
            } else {
                ""
            }
        ),
        None if v["outbox"].is_object() => println!("  {:<15} none", "next job"),
        None => {}
    }
    if running {
        match v["last_delivery"].as_object() {
            Some(d) => println!(
                "  {:<15} {} <{}> stored as {}",
                "last delivery",
                d.get("at").and_then(|x| x.as_str()).unwrap_or("-"),
                d.get("message_id").and_then(|x| x.as_str()).unwrap_or("-"),
                d.get("stored_as").and_then(|x| x.as_str()).unwrap_or("-")
            ),
            None => println!("  {:<15} none since start", "last delivery"),
        }
        match v["last_error"].as_object() {
            Some(e) => println!(
                "  {:<15} {} <{}> {}",
                "last error",
                e.get("at").and_then(|x| x.as_str()).unwrap_or("-"),
                e.get("message_id").and_then(|x| x.as_str()).unwrap_or("-"),
                e.get("error").and_then(|x| x.as_str()).unwrap_or("-")
            ),
            None => println!("  {:<15} none since start", "last error"),
        }
    }
}

fn ticket_command(
    cfg: &Config,
    token: &str,
    command: &str,
    arg: Option<String>,
    actor: &str,
) -> anyhow::Result<()> {
    let v = ask(
        cfg,
        Request::TicketCommand {
            token: token.to_string(),
            command: command.to_string(),
            arg,
            actor: actor.to_string(),
        },
    )?;
    println!(
        "{} {}: {} -> {}{}",
        s(&v, "token"),
        s(&v, "command"),
        s(&v, "status_before"),
        s(&v, "status_after"),
        v.get("assignee")
            .and_then(|a| a.as_str())
            .map(|a| format!(" ({a})"))
            .unwrap_or_default()
    );
    if let Some(sent) = v.get("sent").and_then(|x| x.as_array()) {
        for m in sent.iter().filter_map(|m| m.as_str()) {
            println!("  queued: {m}");
        }
    }
    if let Some(given) = v.get("distributed").and_then(|x| x.as_array()) {
        for m in given.iter().filter_map(|m| m.as_str()) {
            println!("  distributed: {m}");
        }
    }
    Ok(())
}

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("-")
}

fn print_list(v: &serde_json::Value) {
    let empty = Vec::new();
    let rows = v.as_array().unwrap_or(&empty);
    if rows.is_empty() {
        println!("no tickets");
        return;
    }
    println!(
        "{:<9} {:<10} {:<24} {:>3} {:<3} {:<30} SUBJECT",
        "TOKEN", "STATUS", "ASSIGNEE", "RE", "DIR", "CONTACT"
    );
    for t in rows {
        let dir = if s(t, "last_direction") == "in" {
            "in"
        } else {
            "out"
        };
        let reopened = if t.get("reopened").and_then(|x| x.as_bool()) == Some(true) {
            " REOPENED"
        } else {
            ""
        };
        println!(
            "{:<9} {:<10} {:<24} {:>3} {:<3} {:<30} {}{}",
            s(t, "token"),
            s(t, "status"),
            s(t, "assignee"),
            t.get("replies").and_then(|x| x.as_u64()).unwrap_or(0),
            dir,
            s(t, "contact"),
            s(t, "subject"),
            reopened
        );
    }
}

/// `ticket show`'s response metrics, as `stats` counts them.
fn print_figures(v: &serde_json::Value) {
    let f = &v["figures"];
    let dur = |k: &str| {
        f[k].as_i64()
            .map(crate::stats::duration_text)
            .unwrap_or_else(|| "-".into())
    };
    let sla = |k: &str| f[k].as_str().unwrap_or("-").replace('_', " ");
    let started = f["work_started_at"].as_str().unwrap_or("not yet");
    println!("  {:<13} {started}", "work started");
    println!(
        "  {:<13} {} (SLA: {})",
        "1st response",
        dur("first_response_seconds"),
        sla("first_response_sla")
    );
    println!(
        "  {:<13} {} (SLA: {})",
        "resolution",
        dur("resolution_seconds"),
        sla("resolution_sla")
    );
    println!(
        "  {:<13} {}",
        "reopens",
        f["reopen_count"].as_u64().unwrap_or(0)
    );
}

fn print_show(v: &serde_json::Value) {
    println!("{}  {}", s(v, "token"), s(v, "subject"));
    for k in [
        "status",
        "assignee",
        "group",
        "contact",
        "customer",
        "category",
        "priority",
        "started_at",
        "ended_at",
        "follow_up_of",
        "merged_into",
        "description",
    ] {
        println!("  {k:<13} {}", s(v, k));
    }
    if let Some(e) = v.get("escalated").filter(|e| !e.is_null()) {
        println!(
            "  {:<13} to {} (first line: {})",
            "escalated",
            s(e, "group"),
            e.get("first_line")
                .and_then(|x| x.as_str())
                .unwrap_or("nobody")
        );
    }
    println!("  {:<13} {}", "sla", crate::sla::text::line(&v["sla"]));
    for k in ["tags", "watchers"] {
        let list: Vec<&str> = v[k]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        println!(
            "  {k:<13} {}",
            if list.is_empty() {
                "-".to_string()
            } else {
                list.join(", ")
            }
        );
    }
    println!(
        "  {:<13} {}",
        "replies",
        v.get("replies").and_then(|x| x.as_u64()).unwrap_or(0)
    );
    print_figures(v);
    if v.get("resolutions").and_then(|x| x.as_u64()).unwrap_or(0) > 0 {
        println!(
            "  {:<13} {}",
            "resolutions",
            v.get("resolutions").and_then(|x| x.as_u64()).unwrap_or(0)
        );
    }
    if v.get("closed_at").is_some_and(|x| !x.is_null()) {
        println!("  {:<13} {}", "closed_at", s(v, "closed_at"));
    }
    if let Some(r) = v.get("rating").filter(|r| !r.is_null()) {
        println!(
            "  {:<13} {} (resolution {}, {})",
            "rating",
            s(r, "value"),
            r.get("resolution").and_then(|x| x.as_u64()).unwrap_or(0),
            s(r, "at")
        );
        if let Some(c) = r.get("comment").and_then(|x| x.as_str()) {
            for line in c.lines() {
                println!("  {:<13} {line}", "");
            }
        }
    }
    if let Some(sim) = v
        .get("similar")
        .and_then(|m| m.as_array())
        .filter(|a| !a.is_empty())
    {
        println!("other tickets of the contact and customer:");
        for o in sim {
            println!(
                "  {:<9} {:<10} {} ({})",
                s(o, "token"),
                s(o, "status"),
                s(o, "subject"),
                o.get("assignee")
                    .and_then(|x| x.as_str())
                    .unwrap_or("unassigned")
            );
        }
    }
    if let Some(ms) = v.get("messages").and_then(|m| m.as_array()) {
        println!("messages:");
        for m in ms {
            println!(
                "  {:<9} {:<30} <{}>\n            {}",
                s(m, "kind"),
                s(m, "from"),
                s(m, "message_id"),
                s(m, "excerpt")
            );
        }
    }
}

fn explain(
    cfg: &Config,
    from: Option<String>,
    to: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .context("reading the message from stdin")?;
    let mail_from = match from {
        Some(f) => f,
        None => parse(&raw).from.map(|a| a.email).unwrap_or_default(),
    };
    let envelope = Envelope {
        mail_from,
        rcpt_to: vec![to.unwrap_or_else(|| cfg.support.address.clone())],
    };
    use base64::Engine;
    let v = ask(
        cfg,
        Request::Explain {
            raw: base64::engine::general_purpose::STANDARD.encode(&raw),
            envelope,
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let c = &v["classification"];
    println!("message-id:     <{}>", s(&v, "message_id"));
    println!("from:           {}", s(&v, "from"));
    println!("subject:        {}", s(&v, "subject"));
    println!(
        "classification: {} {}{}",
        if c["staff"].as_bool() == Some(true) {
            "staff"
        } else {
            "outside"
        },
        s(c, "kind"),
        if c["bulk"].as_bool() == Some(true) {
            " bulk"
        } else {
            ""
        }
    );
    if let Some(r) = c["reasons"].as_array().filter(|r| !r.is_empty()) {
        let r: Vec<&str> = r.iter().filter_map(|x| x.as_str()).collect();
        println!("  because:      {}", r.join("; "));
    }
    println!("rule:           {} ({})", s(&v, "rule"), s(&v, "why"));
    if let Some(r) = v["ignored_tokens"].as_array().filter(|r| !r.is_empty()) {
        let r: Vec<&str> = r.iter().filter_map(|x| x.as_str()).collect();
        println!("  ignored:      {}", r.join("; "));
    }
    println!(
        "action:         {} → ticket {} ({} → {})",
        s(&v, "action"),
        s(&v, "ticket"),
        s(&v, "status_before"),
        s(&v, "status_after")
    );
    if let Some(out) = v["outbound"].as_array() {
        for m in out {
            let to: Vec<&str> = m["to"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            println!("would send:     {} to {}", s(m, "kind"), to.join(", "));
        }
    }
    if let Some(why) = v["no_ack_reason"].as_str() {
        println!("no ack:         {why}");
    }
    if let Some(owner) = v["owner"].as_str() {
        println!("owner:          {owner}");
    }
    if !v["sla"].is_null() {
        println!("sla:            {}", crate::sla::text::line(&v["sla"]));
    }
    match v["routing_trace"].as_str() {
        Some(trace) => {
            println!();
            print!("{trace}");
        }
        None => {
            println!("routing:        not run (rules run on mail from outside that opens a ticket)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup` and `restore` copy sled's files; a PostgreSQL desk is backed up
/// by the database's own tools, which see every node's writes.
fn sled_only(cfg: &Config, what: &str, tool: &str) -> anyhow::Result<()> {
    if cfg.store.backend == crate::config::StoreBackend::Postgres {
        bail!(
            "{what} works on the sled store; store.backend is postgres: use {tool} (or the server's base backups) on the database instead (docs/scaling.md#backups)"
        );
    }
    Ok(())
}
