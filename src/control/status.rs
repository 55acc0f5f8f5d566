//! `postdesk status`: what the daemon knows about itself (uptime,
//! listeners, the last delivery and the last error, kept in memory) and
//! what the store says (counts, outbox depth, next job). With no daemon
//! running, the store half alone.

use crate::config::Config;
use crate::ingest::decide::token;
use crate::store::{OutboxState, Store, Timestamp};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The daemon's recent activity. In memory only: it describes this run,
/// and a restart starts it afresh.
#[derive(Debug, Default)]
pub struct Activity {
    state: Mutex<ActivityState>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ActivityState {
    pub last_delivery: Option<LastDelivery>,
    pub last_error: Option<LastError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastDelivery {
    pub at: Timestamp,
    pub message_id: String,
    /// The ticket token, or what the message became (`<id> (duplicate)`).
    pub stored_as: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: Timestamp,
    pub message_id: String,
    pub error: String,
}

impl Activity {
    pub fn delivered(&self, message_id: &str, stored_as: &str) {
        let d = LastDelivery {
            at: Timestamp::now(),
            message_id: message_id.to_string(),
            stored_as: stored_as.to_string(),
        };
        match self.state.lock() {
            Ok(mut g) => g.last_delivery = Some(d),
            Err(p) => p.into_inner().last_delivery = Some(d),
        }
    }

    pub fn failed(&self, message_id: &str, error: &str) {
        let e = LastError {
            at: Timestamp::now(),
            message_id: message_id.to_string(),
            error: error.to_string(),
        };
        match self.state.lock() {
            Ok(mut g) => g.last_error = Some(e),
            Err(p) => p.into_inner().last_error = Some(e),
        }
    }

    pub fn snapshot(&self) -> ActivityState {
        match self.state.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// What only the running daemon can tell.
#[derive(Debug)]
pub struct DaemonInfo {
    pub started_at: Timestamp,
    pub pid: u32,
    pub lmtp: Vec<String>,
    /// The bound `listen.metrics` address, if serving.
    pub metrics: Option<String>,
    pub control: PathBuf,
    pub activity: Arc<Activity>,
}

/// The `status --json` object. Field names are the contract
/// (docs/operations.md).
pub fn status(
    store: Option<&Store>,
    cfg: &Config,
    daemon: Option<&DaemonInfo>,
    now: Timestamp,
) -> Result<serde_json::Value, String> {
    let err = |e: crate::store::Error| e.to_string();
    let activity = daemon.map(|d| d.activity.snapshot()).unwrap_or_default();
    let mut v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "running": daemon.is_some(),
        "pid": daemon.map(|d| d.pid),
        "started_at": daemon.map(|d| d.started_at),
        "uptime_seconds": daemon.map(|d| now.duration_since(d.started_at).as_secs().max(0)),
        // Bound addresses while running; the configured ones otherwise.
        "listeners": {
            "lmtp": daemon.map(|d| d.lmtp.clone()).unwrap_or_else(|| cfg.listen.lmtp.clone()),
            "metrics": match daemon {
                Some(d) => d.metrics.clone(),
                None => cfg.listen.metrics.clone(),
            },
            "control": daemon.map(|d| d.control.clone()).unwrap_or_else(|| cfg.control_path()),
        },
        "last_delivery_at": activity.last_delivery.as_ref().map(|d| d.at),
        "last_delivery": activity.last_delivery,
        "last_error": activity.last_error,
        "store": {
            "backend": match cfg.store.backend {
                crate::config::StoreBackend::Sled => "sled",
                crate::config::StoreBackend::Postgres => "postgres",
            },
            "data_dir": cfg.data_dir,
            "size_bytes": serde_json::Value::Null,
        },
        "tickets": serde_json::Value::Null,
        "outbox": serde_json::Value::Null,
        "next_job": serde_json::Value::Null,
    });
    let Some(store) = store else {
        return Ok(v);
    };
    v["store"]["size_bytes"] = store.size_on_disk().into();
    v["store"]["backend"] = store.backend_name().into();
    if let crate::store::Store::Pg(p) = store {
        // Which node this is, and who else beats: the first thing to look
        // at when mail waits on a lease.
        v["store"]["node"] = p.node().into();
        v["store"]["nodes"] = p
            .live_nodes()
            .map_err(err)?
            .into_iter()
            .map(serde_json::Value::from)
            .collect::<Vec<_>>()
            .into();
    }
    let mut by_status = serde_json::Map::new();
    let mut total = 0u64;
    let counts = store.ticket_counts().map_err(err)?;
    for s in crate::store::Status::ALL {
        let n = counts.get(&s).copied().unwrap_or(0);
        total += n;
        by_status.insert(s.as_str().to_string(), n.into());
    }
    by_status.insert("total".into(), total.into());
    v["tickets"] = by_status.into();
    let oc = store.outbox_counts().map_err(err)?;
    let oldest = store.outbox_oldest_pending().map_err(err)?;
    let pending = oc.get(&OutboxState::Pending).copied().unwrap_or(0);
    v["outbox"] = serde_json::json!({
        // What is still to be sent: the pending entries.
        "depth": pending,
        "pending": pending,
        "failed": oc.get(&OutboxState::Failed).copied().unwrap_or(0),
        "sent": oc.get(&OutboxState::Sent).copied().unwrap_or(0),
        "dropped": oc.get(&OutboxState::Dropped).copied().unwrap_or(0),
        "oldest_pending": oldest.map(|e| serde_json::json!({
            "id": e.id,
            "created_at": e.created_at,
            "age_seconds": now.duration_since(e.created_at).as_secs().max(0),
            "attempts": e.attempts,
            "next_attempt_at": e.next_attempt_at,
        })),
        "next_due": store.outbox_next_due().map_err(err)?,
    });
    let job = store
        .jobs_due(Timestamp::MAX, 1)
        .map_err(err)?
        .into_iter()
        .next();
    v["next_job"] = match job {
        Some(j) => {
            let (kind, ticket) = (j.kind.name(), j.kind.ticket());
            serde_json::json!({
                "kind": kind,
                "ticket": ticket.map(|n| token(cfg, n)),
                "due": j.due,
                "late": j.due < now,
            })
        }
        None => serde_json::Value::Null,
    };
    Ok(v)
}
