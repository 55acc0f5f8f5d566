//! `postdesk backup DIR` and `postdesk restore DIR`.
//!
//! A backup is one consistent point while delivery goes on: the committer
//! runs a [`Store::quiet_blocking`] closure between batches that dumps every
//! sled tree (`store.dump`) and notes each spool file's length. Everything
//! acknowledged before it is in the dump, nothing after. Once the committer
//! is let go, the spool files are copied up to those lengths (append-only,
//! so those bytes are settled) together with the link-signing secret, and
//! `manifest.json` is written last, synced and renamed into place: a
//! directory without it is a backup that did not finish.
//!
//! Restore checks the manifest's sizes and checksums, builds the data dir
//! beside the target and renames it into place, so a failed restore leaves
//! no half-filled data dir behind.
//!
//! Must not: write to the live store, or restore over anything.

use crate::store::dump::{self, Counts};
use crate::store::{spool, Store};
use crate::workflow::links::SECRET_FILE;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const DUMP: &str = "store.dump";
/// Bumped when what a backup holds changes shape; restore refuses others.
pub const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not empty: a backup goes into a new or empty directory")]
    TargetNotEmpty(PathBuf),
    #[error("data directory {0} is not empty: restore only into an empty or absent one")]
    DataDirNotEmpty(PathBuf),
    #[error("{0}: no manifest.json, so this is not a finished backup (an interrupted backup leaves none)")]
    NoManifest(PathBuf),
    #[error("{path}: {why}")]
    Bad { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file of a backup, as the manifest lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSum {
    /// Relative to the backup directory.
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub postdesk_version: String,
    /// When the snapshot point was taken.
    pub created_at: String,
    /// Who asked (the control socket peer, or the CLI's user offline).
    pub by: String,
    /// What the store held at the snapshot point.
    pub counts: Counts,
    /// How long deliveries waited for the dump.
    pub committer_held_ms: u64,
    pub files: Vec<FileSum>,
}

/// Refuses a non-empty `dir`; creates it (mode 0700: raw mail and the
/// secret go in) when absent.
fn prepare_target(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty(dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        Err(e) => return Err(io(dir)(e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Copies the first `len` bytes of `from` to the new file `to` (0600),
/// syncs it, and returns its checksum.
fn copy_prefix(from: &Path, to: &Path, len: u64, name: &str) -> Result<FileSum, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let src = File::open(from).map_err(io(from))?;
    let mut src = src.take(len);
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io(to))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = src.read(&mut buf).map_err(io(from))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        dst.write_all(&buf[..k]).map_err(io(to))?;
        n += k as u64;
    }
    if n != len {
        return Err(Error::Bad {
            path: from.to_path_buf(),
            why: format!("shorter ({n} bytes) than at the snapshot point ({len})"),
        });
    }
    dst.sync_all().map_err(io(to))?;
    Ok(FileSum {
        name: name.to_string(),
        bytes: n,
        sha256: dump::hex(&h.finalize()),
    })
}

fn sum_of(path: &Path) -> Result<(u64, String), Error> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(io(path))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, dump::hex(&h.finalize())))
}

/// Takes a backup of the open `store` into `dir` (new or empty). Works the
/// same on the daemon's store (through the control socket) and on one the
/// CLI opened itself.
pub fn backup(store: &Store, dir: &Path, by: &str) -> Result<Manifest, Error> {
    prepare_target(dir)?;
    let dump_path = dir.join(DUMP);
    let p2 = dump_path.clone();
    let (written, held, created_at) = store.quiet_blocking(move |q| {
        // The snapshot point: between two batches, right here.
        let at = crate::store::Timestamp::now().to_string();
        let t0 = std::time::Instant::now();
        let w = dump::write(q, &p2);
        (w, t0.elapsed(), at)
    })?;
    let written = written?;
    let held_ms = u64::try_from(held.as_millis()).unwrap_or(u64::MAX);
    // Deliveries go on from here; what follows reads only settled bytes.
    File::open(&dump_path)
        .and_then(|f| f.sync_all())
        .map_err(io(&dump_path))?;
    let (bytes, sha256) = sum_of(&dump_path)?;
    if bytes != written.bytes {
        return Err(Error::Bad {
            path: dump_path,
            why: format!("{bytes} bytes on disk, {} written", written.bytes),
        });
    }
    let mut files = vec![FileSum {
        name: DUMP.to_string(),
        bytes,
        sha256,
    }];
    let spool_to = dir.join("spool");
    std::fs::create_dir(&spool_to).map_err(io(&spool_to))?;
    let data_dir = store.data_dir().to_path_buf();
    for (name, len) in &written.spool {
        files.push(copy_prefix(
            &data_dir.join("spool").join(name),
            &spool_to.join(name),
            *len,
            &format!("spool/{name}"),
        )?);
    }
    spool::sync_dir(&spool_to)?;
    let secret = data_dir.join(SECRET_FILE);
    if secret.exists() {
        let len = std::fs::metadata(&secret).map_err(io(&secret))?.len();
        files.push(copy_prefix(
            &secret,
            &dir.join(SECRET_FILE),
            len,
            SECRET_FILE,
        )?);
    }
    let manifest = Manifest {
        format: FORMAT,
        postdesk_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at,
        by: by.to_string(),
        counts: written.counts,
        committer_held_ms: held_ms,
        files,
    };
    write_manifest(dir, &manifest)?;
    tracing::info!(
        dir = %dir.display(),
        by,
        tickets = manifest.counts.tickets,
        messages = manifest.counts.messages,
        outbox = manifest.counts.outbox,
        committer_held_ms = held_ms,
        "backup written"
    );
    Ok(manifest)
}

/// Last, and atomically: its presence says every file it lists is there.
fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(".manifest.json.tmp");
    let path = dir.join(MANIFEST);
    let mut body = serde_json::to_vec_pretty(m).map_err(|e| Error::Bad {
        path: path.clone(),
        why: e.to_string(),
    })?;
    body.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(&body).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    spool::sync_dir(dir)?;
    Ok(())
}

/// Reads `dir`'s manifest and checks every file it lists, size and
/// SHA-256; an error names the first file that does not match.
pub fn verify(dir: &Path) -> Result<Manifest, Error> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoManifest(dir.to_path_buf()))
        }
        Err(e) => return Err(io(&path)(e)),
    };
    let m: Manifest = serde_json::from_slice(&text).map_err(|e| Error::Bad {
        path: path.clone(),
        why: format!("not a backup manifest: {e}"),
    })?;
    if m.format != FORMAT {
        return Err(Error::Bad {
            path,
            why: format!(
                "backup format {} (this postdesk reads format {FORMAT})",
                m.format
            ),
        });
    }
    if !m.files.iter().any(|f| f.name == DUMP) {
        return Err(Error::Bad {
            path,
            why: format!("lists no {DUMP}"),
        });
    }
    for f in &m.files {
        // Names come from a file anyone could edit: only ours, inside DIR.
        let ok = f.name == DUMP
            || f.name == SECRET_FILE
            || f.name.strip_prefix("spool/").is_some_and(|n| {
                n.strip_suffix(".spool")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            });
        if !ok {
            return Err(Error::Bad {
                path,
                why: format!("lists an unexpected file {:?}", f.name),
            });
        }
        let p = dir.join(&f.name);
        let (bytes, sha) = sum_of(&p)?;
        if bytes != f.bytes || sha != f.sha256 {
            return Err(Error::Bad {
                path: p,
                why: format!(
                    "does not match the manifest ({bytes} bytes, sha256 {sha}; the manifest says {} bytes, sha256 {}): the backup is damaged",
                    f.bytes, f.sha256
                ),
            });
        }
    }
    Ok(m)
}

fn fsync_tree(dir: &Path) -> Result<(), Error> {
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let p = e.path();
        if e.file_type().map_err(io(&p))?.is_dir() {
            fsync_tree(&p)?;
        } else {
            File::open(&p).and_then(|f| f.sync_all()).map_err(io(&p))?;
        }
    }
    spool::sync_dir(dir)?;
    Ok(())
}

/// Restores the backup in `from` as `data_dir` (absent or empty). The
/// caller has made sure no daemon runs on it.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Manifest, Error> {
    use std::os::unix::fs::PermissionsExt;
    let m = verify(from)?;
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::DataDirNotEmpty(data_dir.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(data_dir)(e)),
    }
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Bad {
            path: data_dir.to_path_buf(),
            why: "has no directory name".into(),
        })?;
    let parent = data_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    std::fs::create_dir(&staging).map_err(io(&staging))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
        .map_err(io(&staging))?;
    let r = fill(from, &staging, &m).and_then(|()| {
        // Empty (checked above): rename(2) replaces an empty directory.
        std::fs::rename(&staging, data_dir).map_err(io(data_dir))?;
        spool::sync_dir(parent)?;
        Ok(())
    });
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    r?;
    tracing::info!(
        from = %from.display(),
        data_dir = %data_dir.display(),
        tickets = m.counts.tickets,
        messages = m.counts.messages,
        "backup restored"
    );
    Ok(m)
}

fn fill(from: &Path, to: &Path, m: &Manifest) -> Result<(), Error> {
    let store_dir = to.join("store");
    {
        let db = sled::Config::new()
            .path(&store_dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(crate::store::Error::from)?;
        let got = dump::load(&from.join(DUMP), &db)?;
        if got != m.counts {
            return Err(Error::Bad {
                path: from.join(DUMP),
                why: format!("holds {got:?}, the manifest says {:?}", m.counts),
            });
        }
        db.flush().map_err(crate::store::Error::from)?;
    }
    let spool_dir = to.join("spool");
    std::fs::create_dir(&spool_dir).map_err(io(&spool_dir))?;
    for f in &m.files {
        if f.name == DUMP {
            continue;
        }
        copy_prefix(&from.join(&f.name), &to.join(&f.name), f.bytes, &f.name)?;
    }
    fsync_tree(to)?;
    // The store must open and read back as the manifest says before it
    // takes the data dir's name.
    let store = Store::open(to)?;
    let mut tickets = 0u64;
    store.for_each_ticket(|_| tickets += 1)?;
    store.close();
    if tickets != m.counts.tickets {
        return Err(Error::Bad {
            path: to.to_path_buf(),
            why: format!(
                "restored store holds {tickets} tickets, the manifest says {}",
                m.counts.tickets
            ),
        });
    }
    Ok(())
}
