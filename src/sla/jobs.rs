//! The SLA warn and breach jobs (issue #9): run by the scheduler in one
//! transaction each.

use crate::config::Config;
use crate::ingest::decide::LinkSigner;
use crate::render::Templates;
use crate::schedule::Fired;
use crate::store::{Job, Timestamp, Writes};

/// Runs a `SlaWarn` or `SlaBreach` job (already taken from the queue).
pub fn run(
    _tx: &dyn Writes,
    _job: &Job,
    _cfg: &Config,
    _tpl: &Templates,
    _signer: Option<&dyn LinkSigner>,
    _now: Timestamp,
) -> crate::store::Result<Fired> {
    Ok(Fired::Skipped("not handled yet"))
}
