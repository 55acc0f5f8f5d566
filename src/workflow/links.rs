//! Signed action addresses (SPEC §5): `support+take-12-<sig>@example.com`,
//! carried in our mail as `mailto:` links, so an agent acts on a ticket with
//! one click and one Send, from any mail client.
//!
//! The signature is an HMAC over the action and the ticket number with a
//! secret kept in `data_dir/link-secret`: it proves that *we* wrote this
//! address for this action on this ticket, so a link cannot be edited into
//! another action or another ticket, nor guessed. It says nothing about who
//! sends it (a forwarded link still works); the caller still requires the
//! sender to be staff.
//!
//! Everything here is pure except [`load_or_create_secret`].
//!
//! Why the signature looks the way it does: local parts travel through MTAs
//! and mail clients that may change case (our own `Config::support_tag`
//! lower-cases), so the signature is lower-case base32 (RFC 4648 alphabet,
//! no padding) and compared case-insensitively. Ten bytes of HMAC-SHA256
//! (80 bits, 16 characters) keep the address short enough to read while
//! leaving nothing to brute-force by mail.

use crate::config::Config;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// The file in `data_dir` that holds the secret.
pub const SECRET_FILE: &str = "link-secret";
/// Secret length in bytes.
pub const SECRET_LEN: usize = 32;
/// Signature length in bytes (before base32), and in characters after.
const SIG_BYTES: usize = 10;
const SIG_CHARS: usize = 16;

/// The actions an action address may carry. `rate-*` contain a dash, which
/// is why [`parse_plus_tag`] reads the tag from the right.
pub const ACTIONS: &[&str] = &[
    "take",
    "done",
    "release",
    "spam",
    "snooze",
    "confirm",
    "reopen",
    "rate-good",
    "rate-neutral",
    "rate-bad",
];

/// The actions a customer's link carries (in the resolution mail and the
/// rating confirmation). Their addresses also carry the resolution number
/// (`support+confirm-12-3-<sig>@`), signed with it, so a link from an
/// earlier resolution of the same ticket is told apart and refused.
pub const CUSTOMER_ACTIONS: &[&str] =
    &["confirm", "reopen", "rate-good", "rate-neutral", "rate-bad"];

/// What a customer action signs in place of the bare action name:
/// `confirm/r3`. No staff action contains `/`, so a staff link's signature
/// never verifies as a customer link's, nor the other way round.
pub fn resolution_action(action: &str, resolution: u32) -> String {
    format!("{action}/r{resolution}")
}

/// The key for action-address signatures. Its bytes never leave this
/// module in printable form: `Debug` shows `Secret(…)` and there is no
/// `Display`, so a `{:?}` of a struct holding one cannot leak it to logs.
/// No `PartialEq`: comparing secrets is never needed outside tests, and a
/// derived one would not be constant-time.
#[derive(Clone)]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// For tests and tools; the daemon uses [`load_or_create_secret`].
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    fn mac(&self, action: &str, ticket: u64) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail; `new_from_slice`
        // only returns a Result because other MACs have fixed key sizes.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        // Versioned and delimited: a future scheme cannot collide with this
        // one, and `take:12` cannot be read as `take:1` + `2`.
        mac.update(format!("v1:{action}:{ticket}").as_bytes());
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Reads `data_dir/link-secret`, creating it with 32 random bytes (mode
/// 0600) when it does not exist yet.
///
/// Creation is atomic and exclusive: the bytes are written and synced to a
/// private temporary file (`O_EXCL`, 0600) which is then hard-linked to the
/// final name. `link` fails if the name exists, so two processes starting
/// at once agree on one secret, and a crash never leaves a short secret
/// behind (which would otherwise refuse to load on every restart, or worse,
/// invalidate every link already sent). A secret of the wrong length is an
/// error: silently replacing it would break every link in every inbox.
pub fn load_or_create_secret(data_dir: &Path) -> io::Result<Secret> {
    let path = data_dir.join(SECRET_FILE);
    match read_secret(&path) {
        Ok(s) => return Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; SECRET_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| io::Error::other(format!("no randomness for {}: {e}", path.display())))?;
    let tmp = data_dir.join(format!(
        ".{SECRET_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = create_via_link(&tmp, &path, &bytes);
    // The temporary name is only a staging step; it goes in every case.
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => {
            // Make the new directory entry durable too, or a crash could lose
            // the secret after links signed with it were sent.
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(Secret(bytes))
        }
        // Someone else created it between our read and our link: theirs wins.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_secret(&path),
        Err(e) => Err(e),
    }
}

fn create_via_link(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::hard_link(tmp, path)
}

fn read_secret(path: &Path) -> io::Result<Secret> {
    let f = std::fs::File::open(path)?;
    let mode = f.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        // Anyone who can read it can forge action links; say so, but do
        // not refuse to start over a mode an operator set on purpose.
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:04o}", mode & 0o7777),
            "link secret is readable by group or others; chmod 600 it"
        );
    }
    // Read one byte more than we need, so an over-long file is detected
    // without reading an arbitrarily large one.
    let mut buf = Vec::with_capacity(SECRET_LEN + 1);
    f.take(SECRET_LEN as u64 + 1).read_to_end(&mut buf)?;
    let bytes: [u8; SECRET_LEN] = buf.as_slice().try_into().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: expected {SECRET_LEN} bytes, found {}{}; restore it from a backup \
                 (deleting it makes a new one and invalidates every action link sent)",
                path.display(),
                buf.len(),
                if buf.len() > SECRET_LEN {
                    " or more"
                } else {
                    ""
                }
            ),
        )
    })?;
    Ok(Secret(bytes))
}

/// The signature for `action` on `ticket`: 16 lower-case base32 characters.
pub fn sign(secret: &Secret, action: &str, ticket: u64) -> String {
    let tag = secret.mac(action, ticket).finalize().into_bytes();
    base32_lower(&tag[..SIG_BYTES])
}

/// Is `sig` our signature for `action` on `ticket`? Case-insensitive; the
/// comparison is constant-time (hmac's `verify_truncated_left`), so timing
/// does not reveal how much of a guess was right.
pub fn verify(secret: &Secret, action: &str, ticket: u64, sig: &str) -> bool {
    let Some(bytes) = base32_decode(sig) else {
        return false;
    };
    secret
        .mac(action, ticket)
        .verify_truncated_left(&bytes)
        .is_ok()
}

/// The plus-address for an action: `support+take-12-<sig>@example.com`.
pub fn action_address(cfg: &Config, secret: &Secret, action: &str, ticket: u64) -> String {
    let tag = format!("{action}-{ticket}-{}", sign(secret, action, ticket));
    let support = cfg.support_address();
    match support.rsplit_once('@') {
        Some((local, domain)) => format!("{local}+{tag}@{domain}"),
        // Config validation requires an `@`; keep a usable string anyway.
        None => format!("{support}+{tag}"),
    }
}

/// The plus-address for a customer's action on resolution `resolution`:
/// `support+confirm-12-3-<sig>@example.com`.
pub fn customer_address(
    cfg: &Config,
    sig: &str,
    action: &str,
    ticket: u64,
    resolution: u32,
) -> String {
    let tag = format!("{action}-{ticket}-{resolution}-{sig}");
    let support = cfg.support_address();
    match support.rsplit_once('@') {
        Some((local, domain)) => format!("{local}+{tag}@{domain}"),
        None => format!("{support}+{tag}"),
    }
}

/// A `mailto:` URL with `subject` for a customer's action address.
pub fn customer_mailto(
    cfg: &Config,
    sig: &str,
    action: &str,
    ticket: u64,
    resolution: u32,
    subject: &str,
) -> String {
    format!(
        "mailto:{}?subject={}",
        customer_address(cfg, sig, action, ticket, resolution),
        percent_encode(subject)
    )
}

/// A `mailto:` URL (RFC 6068) for an action address with a subject. The
/// subject is percent-encoded as UTF-8, spaces as `%20` (never `+`, which
/// some clients keep literally); the address is left as is, since our
/// addresses only hold letters, digits, `-`, `.`, `+` and `@`.
pub fn mailto(cfg: &Config, secret: &Secret, action: &str, ticket: u64, subject: &str) -> String {
    format!(
        "mailto:{}?subject={}",
        action_address(cfg, secret, action, ticket),
        percent_encode(subject)
    )
}

/// What the plus-part of a recipient (`support+<tag>@…`) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlusTag {
    /// The bare support address.
    None,
    /// `<action>-<N>-<sig>`: check `sig` with [`verify`] before obeying.
    Action {
        action: &'static str,
        ticket: u64,
        sig: String,
    },
    /// `<action>-<N>` without a signature: looks like an action address
    /// but carries no proof, so it must not be obeyed. A separate variant
    /// (rather than `Other`) so the reply can say what is missing.
    Unsigned { action: &'static str, ticket: u64 },
    /// `<action>-<N>-<R>-<sig>`: a customer's link for resolution `R`
    /// (one of [`CUSTOMER_ACTIONS`]); check `sig` against
    /// [`resolution_action`] before obeying.
    Customer {
        action: &'static str,
        ticket: u64,
        resolution: u32,
        sig: String,
    },
    /// `report`: the sender's own tickets.
    Report,
    /// `report-all`: every agent's.
    ReportAll,
    /// `report-<x>`, e.g. `report-billing`.
    ReportCategory(String),
    /// Any other tag (`billing`, `urgent`, …): an ordinary mail to support.
    Other(String),
}

/// Reads a recipient plus-tag (already lower-cased, as
/// `Config::support_tag` returns it). Actions may contain a dash
/// (`rate-good`), so the ticket number and signature are taken from the
/// right. Never fails: anything unrecognised is `Other`.
pub fn parse_plus_tag(tag: &str) -> PlusTag {
    if tag.is_empty() {
        return PlusTag::None;
    }
    match tag {
        "report" => return PlusTag::Report,
        "report-all" => return PlusTag::ReportAll,
        _ => {}
    }
    // `<action>-<N>-<sig>`
    if let Some((rest, sig)) = tag.rsplit_once('-') {
        if let Some((action, ticket)) = action_and_ticket(rest) {
            if !sig.is_empty() {
                return PlusTag::Action {
                    action,
                    ticket,
                    sig: sig.to_string(),
                };
            }
        }
    }
    // `<action>-<N>-<R>-<sig>`, customer actions only.
    if let Some((rest, sig)) = tag.rsplit_once('-') {
        if let Some((head, r)) = rest.rsplit_once('-') {
            let r = (!r.is_empty() && r.len() <= 10 && r.bytes().all(|b| b.is_ascii_digit()))
                .then(|| r.parse::<u32>().ok())
                .flatten();
            if let (Some(resolution), Some((action, ticket))) = (r, action_and_ticket(head)) {
                if !sig.is_empty() && CUSTOMER_ACTIONS.contains(&action) {
                    return PlusTag::Customer {
                        action,
                        ticket,
                        resolution,
                        sig: sig.to_string(),
                    };
                }
            }
        }
    }
    // `<action>-<N>`
    if let Some((action, ticket)) = action_and_ticket(tag) {
        return PlusTag::Unsigned { action, ticket };
    }
    if let Some(category) = tag.strip_prefix("report-") {
        if !category.is_empty() {
            return PlusTag::ReportCategory(category.to_string());
        }
    }
    PlusTag::Other(tag.to_string())
}

/// `take-12` → (`take`, 12), only for a known action and a plain number.
fn action_and_ticket(s: &str) -> Option<(&'static str, u64)> {
    let (action, n) = s.rsplit_once('-')?;
    let action = ACTIONS.iter().copied().find(|a| *a == action)?;
    // Digits only: `u64::from_str` would also take `+12`. At most 20 digits
    // fit in a u64; longer is not a ticket of ours.
    if n.is_empty() || n.len() > 20 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((action, n.parse().ok()?))
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lower case, no padding. Only ever called with
/// `SIG_BYTES` (a multiple of 5), so there are no partial groups.
fn base32_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u64::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes exactly `SIG_CHARS` base32 characters (either case) into
/// `SIG_BYTES` bytes; anything else is `None`. 16 × 5 = 80 bits = 10 bytes
/// exactly, so every accepted spelling maps to one value.
fn base32_decode(s: &str) -> Option<[u8; SIG_BYTES]> {
    if s.len() != SIG_CHARS {
        return None;
    }
    let mut out = [0u8; SIG_BYTES];
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut i = 0;
    for c in s.bytes() {
        let v = match c.to_ascii_lowercase() {
            c @ b'a'..=b'z' => c - b'a',
            c @ b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u64::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            *out.get_mut(i)? = (acc >> bits) as u8;
            i += 1;
        }
    }
    (i == SIG_BYTES).then_some(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::from_bytes([7u8; SECRET_LEN])
    }

    fn cfg() -> Config {
        let mut c = Config::default();
        c.support.address = "Support@Example.com".into();
        c
    }

    #[test]
    fn sign_verify_round_trip() {
        let s = secret();
        for action in ACTIONS {
            for ticket in [1u64, 12, 999_999, u64::MAX] {
                let sig = sign(&s, action, ticket);
                assert_eq!(sig.len(), SIG_CHARS, "{sig}");
                assert!(sig.bytes().all(|b| BASE32.contains(&b)), "{sig}");
                assert!(verify(&s, action, ticket, &sig), "{action} {ticket}");
            }
        }
    }

    #[test]
    fn verify_is_case_insensitive() {
        let s = secret();
        let sig = sign(&s, "done", 12);
        assert!(verify(&s, "done", 12, &sig.to_ascii_uppercase()));
    }

    #[test]
    fn verify_refuses_tampering_replay_and_other_actions() {
        let s = secret();
        let sig = sign(&s, "take", 12);
        // Another ticket: replaying ticket 12's link on ticket 13.
        assert!(!verify(&s, "take", 13, &sig));
        // Another action with the same ticket and signature.
        assert!(!verify(&s, "done", 12, &sig));
        assert!(!verify(&s, "spam", 12, &sig));
        // Another secret.
        assert!(!verify(
            &Secret::from_bytes([8; SECRET_LEN]),
            "take",
            12,
            &sig
        ));
        // Every single-character change.
        for i in 0..sig.len() {
            let mut t = sig.clone().into_bytes();
            t[i] = if t[i] == b'a' { b'b' } else { b'a' };
            let t = String::from_utf8(t).unwrap();
            assert!(!verify(&s, "take", 12, &t), "{t}");
        }
        // Wrong length, wrong alphabet, empty.
        assert!(!verify(&s, "take", 12, &sig[..15]));
        assert!(!verify(&s, "take", 12, &format!("{sig}a")));
        assert!(!verify(&s, "take", 12, "0189abcdefghijkl"));
        assert!(!verify(&s, "take", 12, ""));
        assert!(!verify(&s, "take", 12, "ééééééééé"));
    }

    /// A customer's link, as the resolution mail writes it, read back.
    fn customer_link(s: &Secret, c: &Config, action: &str, n: u64, r: u32) -> PlusTag {
        let sig = sign(s, &resolution_action(action, r), n);
        let a = customer_address(c, &sig, action, n, r);
        parse_plus_tag(&c.support_tag(&a).unwrap())
    }

    fn customer_ok(s: &Secret, tag: &PlusTag) -> bool {
        match tag {
            PlusTag::Customer {
                action,
                ticket,
                resolution,
                sig,
            } => verify(s, &resolution_action(action, *resolution), *ticket, sig),
            _ => false,
        }
    }

    #[test]
    fn customer_links_round_trip_with_their_resolution() {
        let s = secret();
        let c = cfg();
        for action in CUSTOMER_ACTIONS {
            for (n, r) in [(1u64, 1u32), (12, 3), (u64::MAX, u32::MAX)] {
                let tag = customer_link(&s, &c, action, n, r);
                match &tag {
                    PlusTag::Customer {
                        action: a,
                        ticket,
                        resolution,
                        ..
                    } => assert_eq!((*a, *ticket, *resolution), (*action, n, r)),
                    other => panic!("{action}-{n}-{r}: {other:?}"),
                }
                assert!(customer_ok(&s, &tag), "{tag:?}");
            }
        }
        // The staff form of the same words still parses as a staff action.
        assert!(matches!(
            parse_plus_tag("reopen-12-abcdefghabcdefgh"),
            PlusTag::Action {
                action: "reopen",
                ticket: 12,
                ..
            }
        ));
    }

    #[test]
    fn customer_links_refuse_tampering_stale_resolutions_and_other_actions() {
        let s = secret();
        let c = cfg();
        let PlusTag::Customer { sig, .. } = customer_link(&s, &c, "rate-good", 12, 3) else {
            panic!("not a customer link");
        };
        let with =
            |action: &'static str, ticket: u64, resolution: u32, sig: &str| PlusTag::Customer {
                action,
                ticket,
                resolution,
                sig: sig.to_string(),
            };
        assert!(customer_ok(&s, &with("rate-good", 12, 3, &sig)));
        // Edited into another rating, another ticket, another resolution.
        assert!(!customer_ok(&s, &with("rate-bad", 12, 3, &sig)));
        assert!(!customer_ok(&s, &with("confirm", 12, 3, &sig)));
        assert!(!customer_ok(&s, &with("rate-good", 13, 3, &sig)));
        assert!(!customer_ok(&s, &with("rate-good", 12, 4, &sig)));
        assert!(!customer_ok(&s, &with("rate-good", 12, 2, &sig)));
        // A changed character.
        let mut t = sig.clone().into_bytes();
        t[0] = if t[0] == b'a' { b'b' } else { b'a' };
        assert!(!customer_ok(
            &s,
            &with("rate-good", 12, 3, &String::from_utf8(t).unwrap())
        ));
        // A staff link's signature does not make a customer link, nor the
        // other way round.
        let staff = sign(&s, "reopen", 12);
        assert!(!customer_ok(&s, &with("reopen", 12, 3, &staff)));
        let cust = sign(&s, &resolution_action("reopen", 3), 12);
        assert!(!verify(&s, "reopen", 12, &cust));
        // Customer actions only; no signature is no customer link.
        assert!(matches!(
            parse_plus_tag("take-12-3-abcdefghabcdefgh"),
            PlusTag::Other(_)
        ));
        // (`confirm-12-3` reads as a staff link with signature "3", which
        // then fails to verify.)
        assert!(!matches!(
            parse_plus_tag("confirm-12-3"),
            PlusTag::Customer { .. }
        ));
        assert!(matches!(
            parse_plus_tag("confirm-12-x-abcdefghabcdefgh"),
            PlusTag::Other(_)
        ));
    }

    #[test]
    fn base32_known_vectors() {
        // RFC 4648 §10, lower-cased, on inputs that are multiples of 5.
        assert_eq!(base32_lower(b"fooba"), "mzxw6ytb");
        assert_eq!(base32_lower(b""), "");
        let ten = *b"0123456789";
        let enc = base32_lower(&ten);
        assert_eq!(base32_decode(&enc), Some(ten));
        assert_eq!(base32_decode(&enc.to_ascii_uppercase()), Some(ten));
    }

    #[test]
    fn action_address_and_mailto() {
        let s = secret();
        let c = cfg();
        let a = action_address(&c, &s, "take", 12);
        let sig = sign(&s, "take", 12);
        assert_eq!(a, format!("support+take-12-{sig}@example.com"));
        // The config's own reading of the address gives the tag back.
        let tag = c.support_tag(&a).unwrap();
        assert_eq!(
            parse_plus_tag(&tag),
            PlusTag::Action {
                action: "take",
                ticket: 12,
                sig: sig.clone()
            }
        );
        let m = mailto(&c, &s, "rate-good", 7, "Re: [SUP-7] Löök + see & go?");
        assert_eq!(
            m,
            format!(
                "mailto:support+rate-good-7-{}@example.com?subject=Re%3A%20%5BSUP-7%5D%20L%C3%B6%C3%B6k%20%2B%20see%20%26%20go%3F",
                sign(&s, "rate-good", 7)
            )
        );
    }

    #[test]
    fn plus_tags() {
        let sig = "abcdefghijklmnop".to_string();
        let cases: Vec<(&str, PlusTag)> = vec![
            ("", PlusTag::None),
            ("report", PlusTag::Report),
            ("report-all", PlusTag::ReportAll),
            ("report-billing", PlusTag::ReportCategory("billing".into())),
            ("report-", PlusTag::Other("report-".into())),
            (
                "take-12-abcdefghijklmnop",
                PlusTag::Action {
                    action: "take",
                    ticket: 12,
                    sig: sig.clone(),
                },
            ),
            (
                "rate-good-12-abcdefghijklmnop",
                PlusTag::Action {
                    action: "rate-good",
                    ticket: 12,
                    sig: sig.clone(),
                },
            ),
            (
                "rate-neutral-3-x",
                PlusTag::Action {
                    action: "rate-neutral",
                    ticket: 3,
                    sig: "x".into(),
                },
            ),
            (
                "take-12",
                PlusTag::Unsigned {
                    action: "take",
                    ticket: 12,
                },
            ),
            (
                "rate-bad-9",
                PlusTag::Unsigned {
                    action: "rate-bad",
                    ticket: 9,
                },
            ),
            ("take-12-", PlusTag::Other("take-12-".into())),
            ("take", PlusTag::Other("take".into())),
            ("take-", PlusTag::Other("take-".into())),
            ("take-x-abc", PlusTag::Other("take-x-abc".into())),
            ("take-+12-abc", PlusTag::Other("take-+12-abc".into())),
            ("rate-12-abc", PlusTag::Other("rate-12-abc".into())),
            ("delete-12-abc", PlusTag::Other("delete-12-abc".into())),
            (
                "take-123456789012345678901-abc",
                PlusTag::Other("take-123456789012345678901-abc".into()),
            ),
            ("billing", PlusTag::Other("billing".into())),
            ("urgent", PlusTag::Other("urgent".into())),
            ("-", PlusTag::Other("-".into())),
            ("--", PlusTag::Other("--".into())),
        ];
        for (tag, want) in cases {
            assert_eq!(parse_plus_tag(tag), want, "{tag:?}");
        }
    }

    #[test]
    fn secret_debug_hides_bytes() {
        let d = format!("{:?}", secret());
        assert_eq!(d, "Secret(…)");
    }

    #[test]
    fn secret_created_once_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_secret(dir.path()).unwrap();
        let path = dir.path().join(SECRET_FILE);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), SECRET_LEN as u64);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let b = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(a.0, b.0);
        // No staging files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)]);
        // A signature made before a restart verifies after it.
        assert!(verify(&b, "done", 5, &sign(&a, "done", 5)));
    }

    #[test]
    fn secret_of_wrong_length_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_FILE);
        for len in [0usize, 31, 33, 4096] {
            std::fs::write(&path, vec![1u8; len]).unwrap();
            let e = load_or_create_secret(dir.path()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{len}");
            assert!(e.to_string().contains("expected 32 bytes"), "{e}");
            // And it was not replaced.
            assert_eq!(std::fs::read(&path).unwrap().len(), len);
        }
    }

    #[test]
    fn missing_data_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_or_create_secret(&dir.path().join("nope")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn concurrent_creation_agrees_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || load_or_create_secret(&p).unwrap())
            })
            .collect();
        let secrets: Vec<Secret> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(secrets.windows(2).all(|w| w[0].0 == w[1].0));
    }
}
