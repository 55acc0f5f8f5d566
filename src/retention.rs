//! `policy.retention` and the right to erasure (issue #10).

use crate::config::Config;
use crate::schedule::Fired;
use crate::store::{Job, Timestamp, Writes};

/// Runs the daily `Retention` job (already taken from the queue).
pub fn run_job(
    _tx: &dyn Writes,
    _job: &Job,
    _cfg: &Config,
    _now: Timestamp,
) -> crate::store::Result<Fired> {
    Ok(Fired::Skipped("not handled yet"))
}
