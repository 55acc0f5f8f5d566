//! Resolve → confirm → close (issue #9, `policy.confirm_close`).

use crate::config::Config;
use crate::ingest::decide::LinkSigner;
use crate::render::Templates;
use crate::schedule::Fired;
use crate::store::{Job, Timestamp, Writes};

/// Runs an `AutoClose` job (already taken from the queue).
pub fn run_autoclose(
    _tx: &dyn Writes,
    _job: &Job,
    _cfg: &Config,
    _tpl: &Templates,
    _signer: Option<&dyn LinkSigner>,
    _now: Timestamp,
) -> crate::store::Result<Fired> {
    Ok(Fired::Skipped("not handled yet"))
}
