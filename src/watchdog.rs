//! systemd's watchdog (`WatchdogSec=`): keep-alives only while mail can be
//! stored.
//!
//! A timer that pings systemd regardless proves only that the runtime runs.
//! What must not stall is the ingest path, whose narrow point is the store's
//! one committer thread. So each tick sends a no-op through the committer
//! ([`Store::quiet`]: it runs between batches, writes and syncs nothing) and
//! sends `WATCHDOG=1` only when it comes back within the tick. A wedged
//! committer stops the keep-alives, and systemd kills and restarts the
//! service (`Restart=on-failure`). Nothing acknowledged is lost: every `250`
//! follows a sync, and the MTA retries what was in flight.
//!
//! Must not: touch the store beyond the probe, or ping when the probe fails.

use crate::shutdown::Shutdown;
use crate::store::Store;
use std::time::Duration;

/// The keep-alive period systemd asks for, as `sd_watchdog_enabled(3)`
/// reads it: `WATCHDOG_USEC` set, and `WATCHDOG_PID` absent or ours. Half
/// the interval, as systemd recommends. `None`: no watchdog.
pub fn interval_from_env() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Probes the committer every `every` and tells systemd when it answered in
/// time; runs until `shutdown`.
pub async fn run(store: Store, every: Duration, mut shutdown: Shutdown) {
    tracing::info!(
        every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
        "systemd watchdog: keep-alives while the committer answers"
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    let mut progress = store.quiet_progress();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let probe = tokio::time::timeout(every, store.probe()).await;
        // A backup holds the committer for a while on a big store; while
        // its dump reports progress the committer is working, not wedged.
        let moved = store.quiet_progress() != progress;
        progress = store.quiet_progress();
        match probe {
            Err(_) if moved => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            Ok(Ok(())) => {
                if stalled {
                    tracing::info!("systemd watchdog: the committer answers again");
                    stalled = false;
                }
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "systemd watchdog: the committer is gone; no keep-alive");
                stalled = true;
            }
            Err(_) => {
                if !stalled {
                    tracing::error!(
                        "systemd watchdog: the committer did not answer a probe in time; keep-alives stop, so systemd restarts postdesk"
                    );
                }
                stalled = true;
            }
        }
    }
}
