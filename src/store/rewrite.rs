//! Store rewrite: what makes an erasure real on disk.
//!
//! sled keeps earlier versions of a value in its log segments until it
//! reuses the segment, which may be never on a quiet desk: after `forget`
//! rewrote a ticket, a byte scan of `store/` still finds the old copy. So
//! after an erasure the store is copied, live keys only, into a fresh sled
//! directory, which is synced and swapped in; the old directory, with every
//! stale copy, is deleted. Chosen over per-person keys (crypto-shredding):
//! it touches no read or write path of the desk, and a copy of live keys
//! is something sled does at the speed of a scan.
//!
//! It runs when the store is opened and [`PENDING`] exists (`forget` and
//! the retention sweep leave it; `forget` without a daemon compacts at
//! once), so it never races the committer. Each step is safe to repeat:
//! a crash part-way is finished, or started over, at the next open.

use super::spool::sync_dir;
use super::{Error, Result};
use std::path::Path;

/// Present in the data dir while a rewrite is owed. Holds no address.
pub const PENDING: &str = "compact.pending";

const LIVE: &str = "store";
const NEW: &str = "store.compact";
const OLD: &str = "store.old";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Leaves the mark: the next open of the store rewrites it.
pub fn mark_pending(data_dir: &Path) -> Result<()> {
    let p = data_dir.join(PENDING);
    std::fs::write(&p, b"rewrite the store at the next open (erasure)\n").map_err(io(&p))?;
    sync_dir(data_dir)
}

pub fn is_pending(data_dir: &Path) -> bool {
    data_dir.join(PENDING).exists()
}

/// What a rewrite did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub keys: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Finishes a swap a crash interrupted, then rewrites the store if a
/// rewrite is owed. Must run before sled opens `store/`.
pub fn compact_if_pending(data_dir: &Path) -> Result<Option<Compacted>> {
    let (live, new, old) = (data_dir.join(LIVE), data_dir.join(NEW), data_dir.join(OLD));
    if !live.exists() && new.exists() {
        // Crashed between the two renames: the copy was complete and synced.
        std::fs::rename(&new, &live).map_err(io(&new))?;
        sync_dir(data_dir)?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
        sync_dir(data_dir)?;
    }
    if !is_pending(data_dir) {
        return Ok(None);
    }
    if !live.exists() {
        let p = data_dir.join(PENDING);
        std::fs::remove_file(&p).map_err(io(&p))?;
        return Ok(None);
    }
    compact(data_dir).map(Some)
}

fn dir_size(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += dir_size(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

/// Copies every live key of every tree into a fresh directory, syncs it,
/// swaps it in and deletes the old one.
fn compact(data_dir: &Path) -> Result<Compacted> {
    let (live, new, old) = (data_dir.join(LIVE), data_dir.join(NEW), data_dir.join(OLD));
    if new.exists() {
        // An earlier attempt died while copying: start over.
        std::fs::remove_dir_all(&new).map_err(io(&new))?;
    }
    let bytes_before = dir_size(&live);
    let mut keys = 0u64;
    {
        let from = sled::Config::new().path(&live).open()?;
        let to = sled::Config::new().path(&new).open()?;
        for name in from.tree_names() {
            let src = from.open_tree(&name)?;
            let dst = to.open_tree(&name)?;
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in src.iter() {
                let (k, v) = kv?;
                batch.insert(k, v);
                n += 1;
                if n == 10_000 {
                    dst.apply_batch(std::mem::take(&mut batch))?;
                    keys += n;
                    n = 0;
                }
            }
            dst.apply_batch(batch)?;
            keys += n;
        }
        to.flush()?;
    }
    sync_tree(&new)?;
    std::fs::rename(&live, &old).map_err(io(&live))?;
    std::fs::rename(&new, &live).map_err(io(&new))?;
    sync_dir(data_dir)?;
    std::fs::remove_dir_all(&old).map_err(io(&old))?;
    let p = data_dir.join(PENDING);
    std::fs::remove_file(&p).map_err(io(&p))?;
    sync_dir(data_dir)?;
    let c = Compacted {
        keys,
        bytes_before,
        bytes_after: dir_size(&live),
    };
    tracing::info!(
        keys = c.keys,
        bytes_before = c.bytes_before,
        bytes_after = c.bytes_after,
        "store rewritten after an erasure: no earlier versions of any value remain"
    );
    Ok(c)
}

/// `fsync` of every file and directory under `dir` (sled's own flush is
/// not a barrier: docs/reliability.md).
fn sync_tree(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        if e.file_type().map_err(io(&p))?.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io(&p))?;
        }
    }
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(dir: &Path, needle: &[u8]) -> bool {
        let mut found = false;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                found |= holds(&p, needle);
            } else {
                let b = std::fs::read(&p).unwrap();
                found |= b.windows(needle.len()).any(|w| w == needle);
            }
        }
        found
    }

    #[test]
    fn a_rewrite_keeps_live_values_and_drops_old_versions() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join(LIVE);
        {
            let db = sled::Config::new().path(&live).open().unwrap();
            let t = db.open_tree("postdesk").unwrap();
            t.insert(b"k1", b"secret-old-value-1".to_vec()).unwrap();
            db.flush().unwrap();
            t.insert(b"k1", b"replacement-value".to_vec()).unwrap();
            t.insert(b"k2", b"kept".to_vec()).unwrap();
            db.insert(b"d", b"default tree").unwrap();
            db.flush().unwrap();
        }
        assert!(
            holds(&live, b"secret-old-value-1"),
            "sled kept no old copy: test proves nothing"
        );
        mark_pending(d.path()).unwrap();
        let c = compact_if_pending(d.path()).unwrap().unwrap();
        assert!(c.keys >= 3);
        assert!(!holds(d.path(), b"secret-old-value-1"));
        assert!(!is_pending(d.path()));
        let db = sled::Config::new().path(&live).open().unwrap();
        let t = db.open_tree("postdesk").unwrap();
        assert_eq!(t.get(b"k1").unwrap().unwrap(), &b"replacement-value"[..]);
        assert_eq!(t.get(b"k2").unwrap().unwrap(), &b"kept"[..]);
        assert_eq!(db.get(b"d").unwrap().unwrap(), &b"default tree"[..]);
        drop(t);
        drop(db);
        // Nothing owed: a second open leaves it alone.
        assert_eq!(compact_if_pending(d.path()).unwrap(), None);
    }

    #[test]
    fn a_crash_between_the_renames_is_finished_at_the_next_open() {
        let d = tempfile::tempdir().unwrap();
        let new = d.path().join(NEW);
        {
            let db = sled::Config::new().path(&new).open().unwrap();
            db.insert(b"k", b"v").unwrap();
            db.flush().unwrap();
        }
        std::fs::create_dir(d.path().join(OLD)).unwrap();
        mark_pending(d.path()).unwrap();
        compact_if_pending(d.path()).unwrap();
        assert!(!d.path().join(OLD).exists() && !new.exists());
        let db = sled::Config::new()
            .path(d.path().join(LIVE))
            .open()
            .unwrap();
        assert_eq!(db.get(b"k").unwrap().unwrap(), &b"v"[..]);
    }
}
