//! Starts everything `serve` runs and owns its shutdown: the store and its
//! committer, the LMTP listeners, the outbox sender, the control socket and
//! the metrics endpoint (`listen.metrics`).
//!
//! Order on shutdown: listeners stop accepting and sessions drain (a commit
//! in progress finishes and is answered), then the sender and the control
//! socket stop, then the store takes no more jobs.

use crate::config::Config;
use crate::deliver::Deliverer;
use crate::lmtp::{listener, session};
use crate::outbox::{sender, transport};
use crate::render::Templates;
use crate::shutdown::{self, Shutdown};
use crate::store::Store;
use crate::workflow::auth::Resolver;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("listener {spec}: {why}")]
    Listen { spec: String, why: String },
    #[error(transparent)]
    Templates(#[from] crate::render::Error),
    #[error("outbound.relay: {0}")]
    Transport(String),
    #[error(transparent)]
    Control(#[from] crate::control::Error),
    #[error("action-link secret {path}: {why}")]
    Secret { path: String, why: String },
    #[error(transparent)]
    Policy(#[from] crate::config::PolicyError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::Error),
}

/// Handles the caller can use while the daemon runs (tests, signal loop).
pub struct Running {
    pub deliverer: Arc<Deliverer>,
    pub lmtp_addrs: Vec<String>,
    /// Where `/metrics` is served, when `listen.metrics` is set.
    pub metrics_addr: Option<String>,
}

/// Runs the daemon until `shutdown` fires. `on_ready` is called once every
/// listener is bound (readiness for systemd and tests).
pub async fn run(
    cfg: Config,
    shutdown: Shutdown,
    on_ready: impl FnOnce(&Running),
) -> Result<(), Error> {
    let cfg = Arc::new(cfg);
    let templates = Arc::new(Templates::for_config(&cfg)?);
    // Compiled once per load; deliveries share it (a reload builds anew).
    let rules = crate::policy::Rules::new(&cfg)?;
    let store = Store::open_backend(&cfg.store, &cfg.data_dir)?;
    // On PostgreSQL the node's data_dir holds only its control socket (and
    // the debug fault switches); sled made it already.
    if !cfg.data_dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.data_dir)
            .map_err(|source| crate::store::Error::Io {
                path: cfg.data_dir.clone(),
                source,
            })?;
    }
    store.set_min_free_space(cfg.limits.min_free_space);
    store.set_commit_timeout(cfg.limits.commit_timeout.std());
    // Before anything else writes: a store from before the load counters
    // gets them, counted from its tickets.
    let s2 = store.clone();
    if tokio::task::spawn_blocking(move || crate::workload::ensure_loads(&s2))
        .await
        .map_err(|e| crate::store::Error::Other(e.to_string()))??
    {
        tracing::info!("agent load counters built from the tickets");
    }
    let transport = transport::from_config(&cfg.outbound).map_err(Error::Transport)?;

    let mut bound = Vec::new();
    let mut lmtp_addrs = Vec::new();
    for spec in &cfg.listen.lmtp {
        let b = listener::bind(spec, &cfg.listen)
            .await
            .map_err(|e| Error::Listen {
                spec: spec.clone(),
                why: e.to_string(),
            })?;
        lmtp_addrs.push(b.local_addr_string());
        bound.push(b);
    }
    let metrics_listener = match &cfg.listen.metrics {
        Some(spec) => {
            crate::metrics::init();
            Some(crate::metrics::bind(spec, &cfg.listen).await?)
        }
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string());
    let control_path = cfg.control_path();
    let control = crate::control::bind(&control_path)?;

    let secret = Arc::new(store.load_or_create_secret().map_err(|e| Error::Secret {
        path: cfg.data_dir.join("link-secret").display().to_string(),
        why: e.to_string(),
    })?);
    // DKIM/SPF need DNS; without a usable resolver those means simply never
    // vouch (signed addresses and Authentication-Results still work).
    let resolver = match Resolver::from_system_conf() {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver: dkim and spf cannot vouch for commands");
            // Authentication-Results needs no DNS: keep that means working.
            Resolver::offline().ok().map(Arc::new)
        }
    };
    let wake = Arc::new(Notify::new());
    let schedule_wake = Arc::new(Notify::new());
    let control_schedule_wake = schedule_wake.clone();
    let deliverer = Arc::new(Deliverer::new(
        cfg.clone(),
        templates,
        rules,
        store.clone(),
        wake.clone(),
        schedule_wake.clone(),
        Some(secret.clone()),
        resolver,
    ));
    let (inner_trigger, inner) = shutdown::channel();

    let d3 = deliverer.clone();
    let scheduler_task = tokio::spawn(crate::schedule::run(
        store.clone(),
        Arc::new(move || d3.current()),
        Some(secret as Arc<dyn crate::ingest::decide::LinkSigner + Send>),
        schedule_wake,
        wake.clone(),
        inner.clone(),
    ));

    let sender_task = tokio::spawn(sender::run(
        store.clone(),
        transport,
        sender::Settings::from_config(&cfg),
        wake.clone(),
        inner.clone(),
    ));
    let d2 = deliverer.clone();
    let started_at = crate::store::Timestamp::now();
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(crate::metrics::serve(
            l,
            store.clone(),
            started_at,
            inner.clone(),
        ))
    });
    let info = Arc::new(crate::control::status::DaemonInfo {
        started_at,
        pid: std::process::id(),
        lmtp: lmtp_addrs.clone(),
        metrics: metrics_addr.clone(),
        control: control_path.clone(),
        activity: deliverer.activity(),
    });
    let control_task = tokio::spawn(crate::control::serve(
        control,
        control_path,
        store.clone(),
        Arc::new(move || d2.current()),
        wake.clone(),
        control_schedule_wake,
        info,
        inner.clone(),
    ));

    let running = Running {
        deliverer: deliverer.clone(),
        lmtp_addrs: lmtp_addrs.clone(),
        metrics_addr: metrics_addr.clone(),
    };
    tracing::info!(
        lmtp = %lmtp_addrs.join(","),
        metrics = %metrics_addr.as_deref().unwrap_or("off"),
        data_dir = %cfg.data_dir.display(),
        relay = %cfg.outbound.relay,
        version = env!("CARGO_PKG_VERSION"),
        "postdesk ready"
    );
    on_ready(&running);
    // systemd's WatchdogSec: keep-alives only while the committer answers.
    if let Some(every) = crate::watchdog::interval_from_env() {
        tokio::spawn(crate::watchdog::run(store.clone(), every, inner.clone()));
    }

    let settings = Arc::new(session::Settings::from_config(&cfg));
    let handler: Arc<dyn crate::lmtp::Handler> = deliverer;
    listener::serve(bound, settings, handler, shutdown).await;

    tracing::info!("listeners drained; stopping sender and control socket");
    inner_trigger.fire();
    let _ = sender_task.await;
    let _ = scheduler_task.await;
    let _ = control_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    store.close();
    tracing::info!(
        batches = store.stats().batches,
        jobs = store.stats().jobs,
        "postdesk stopped"
    );
    Ok(())
}
