//! Keys of the desk-policy records (issue #8) in the sled backend, apart
//! from `keys.rs` so the two can change independently. Same tree, same
//! conventions: short prefixes, no existing prefix starts with `p`.

/// `pl/` + agent address (lower-cased) → `AgentLoad`.
pub const LOAD: &[u8] = b"pl/";
/// `pa/` + agent address (lower-cased) → `Away` (absent: not away by mail).
pub const AWAY: &[u8] = b"pa/";
/// `pd/` + category id (lower-cased; empty for the desk-wide pool) →
/// `DistState`.
pub const DIST: &[u8] = b"pd/";
/// Present once the load counters were rebuilt from the tickets: a store
/// written before the counters existed gets them at the next start.
pub const LOADS_BUILT: &[u8] = b"meta/loads_v1";

/// `ps/c/` + contact address, `ps/u/` + customer id (both lower-cased) →
/// the ticket numbers listed under it, oldest first (`Vec<u64>`).
pub const SIMILAR_CONTACT: &[u8] = b"ps/c/";
pub const SIMILAR_CUSTOMER: &[u8] = b"ps/u/";
/// Present once the similar-ticket index was built from the tickets.
pub const SIMILAR_BUILT: &[u8] = b"meta/similar_v1";

fn cat(prefix: &[u8], s: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + s.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(s.trim().to_ascii_lowercase().as_bytes());
    k
}

pub fn load(agent: &str) -> Vec<u8> {
    cat(LOAD, agent)
}
pub fn away(agent: &str) -> Vec<u8> {
    cat(AWAY, agent)
}
pub fn dist(category: &str) -> Vec<u8> {
    cat(DIST, category)
}
pub fn similar(by: super::SimilarBy, key: &str) -> Vec<u8> {
    match by {
        super::SimilarBy::Contact => cat(SIMILAR_CONTACT, key),
        super::SimilarBy::Customer => cat(SIMILAR_CUSTOMER, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_lower_cased_and_do_not_meet_other_prefixes() {
        assert_eq!(load(" Alice@X.test "), b"pl/alice@x.test".to_vec());
        assert_eq!(dist(""), b"pd/".to_vec());
        for p in [LOAD, AWAY, DIST, SIMILAR_CONTACT, SIMILAR_CUSTOMER] {
            for other in [
                super::super::keys::TICKET,
                super::super::keys::MESSAGE,
                super::super::keys::QUEUE,
                super::super::keys::SCHEDULE,
            ] {
                assert!(!p.starts_with(other) && !other.starts_with(p));
            }
        }
    }
}
