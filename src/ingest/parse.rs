//! Raw bytes → owned [`Parsed`] facts. Never fails.

use super::Parsed;

pub fn parse(raw: &[u8]) -> Parsed {
    let _ = raw;
    Parsed::default()
}
