//! (being wired: waits for lmtp::listener and outbox::sender)
use crate::config::Config;
use crate::shutdown::Shutdown;

pub struct Running {
    pub lmtp_addrs: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("not wired yet")]
pub struct Error;

pub async fn run(_cfg: Config, _s: Shutdown, _r: impl FnOnce(&Running)) -> Result<(), Error> {
    Err(Error)
}
