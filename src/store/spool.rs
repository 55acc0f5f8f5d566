//! Raw messages in our own append-only spool files, not in sled.
//!
//! Why: sled writes values over ~128 KiB to blob files it never syncs, and
//! its `flush()` is not a durability barrier (SPEC §6). So raw bytes go here,
//! the store holds a [`SpoolRef`], and the committer syncs the spool file in
//! the same batch as the store, before any `250`.
//!
//! Layout: `spool/NNNNNNNN.spool`, each record `PDSP` + length (u64 BE) +
//! bytes, so a file can be walked and checked without the store. A file
//! rolls over at `ROLL_AT`. Bytes written but never referenced (a crash
//! between append and commit) are harmless garbage.

use super::{Error, Result, SpoolRef};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"PDSP";
const ROLL_AT: u64 = 256 * 1024 * 1024;

pub struct Spool {
    dir: PathBuf,
    current: u32,
    file: File,
    len: u64,
    /// Files appended to since the last sync.
    dirty: bool,
}

fn file_name(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.spool"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn check_of(bytes: &[u8]) -> u64 {
    let d = Sha256::digest(bytes);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut newest = 0u32;
        for e in std::fs::read_dir(dir).map_err(io(dir))? {
            let e = e.map_err(io(dir))?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_suffix(".spool")
                .and_then(|s| s.parse::<u32>().ok())
            {
                newest = newest.max(n);
            }
        }
        let current = newest.max(1);
        let path = file_name(dir, current);
        let file = open_append(&path)?;
        let len = file.metadata().map_err(io(&path))?.len();
        // A new file's directory entry must survive a crash too.
        sync_dir(dir)?;
        Ok(Spool {
            dir: dir.to_path_buf(),
            current,
            file,
            len,
            dirty: false,
        })
    }

    /// Appends one message. Not durable until [`Spool::sync`] returns.
    pub fn append(&mut self, bytes: &[u8]) -> Result<SpoolRef> {
        if self.len >= ROLL_AT {
            self.roll()?;
        }
        let path = file_name(&self.dir, self.current);
        let mut rec = Vec::with_capacity(12 + bytes.len());
        rec.extend_from_slice(MAGIC);
        rec.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        rec.extend_from_slice(bytes);
        let start = self.len;
        if let Err(e) = self.file.write_all(&rec) {
            // A short write leaves a torn record; put the length back so the
            // next append starts clean and no reference ever points past it.
            let _ = self.file.set_len(start);
            return Err(io(&path)(e));
        }
        self.len += rec.len() as u64;
        self.dirty = true;
        Ok(SpoolRef {
            file: self.current,
            offset: start + 12,
            len: bytes.len() as u64,
            check: check_of(bytes),
        })
    }

    fn roll(&mut self) -> Result<()> {
        self.sync()?;
        self.current += 1;
        let path = file_name(&self.dir, self.current);
        self.file = open_append(&path)?;
        self.len = 0;
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// `fdatasync` of the current file if anything was appended.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            let path = file_name(&self.dir, self.current);
            self.file.sync_data().map_err(io(&path))?;
            self.dirty = false;
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads a spooled message back and checks it against its reference.
pub fn read(dir: &Path, r: &SpoolRef) -> Result<Vec<u8>> {
    let path = file_name(dir, r.file);
    let f = File::open(&path).map_err(io(&path))?;
    let len = usize::try_from(r.len).map_err(|_| Error::Corrupt {
        key: path.display().to_string(),
        why: "length does not fit in memory".into(),
    })?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, r.offset).map_err(io(&path))?;
    if check_of(&buf) != r.check {
        return Err(Error::Corrupt {
            key: format!("{}@{}", path.display(), r.offset),
            why: "checksum mismatch".into(),
        });
    }
    Ok(buf)
}

/// Reads a spooled message back without checking it: erasure re-reads
/// bytes it may already have overwritten (a `forget` interrupted between
/// the spool and the store is run again).
pub fn read_unchecked(dir: &Path, r: &SpoolRef) -> Result<Vec<u8>> {
    let path = file_name(dir, r.file);
    let f = File::open(&path).map_err(io(&path))?;
    let len = usize::try_from(r.len).map_err(|_| Error::Corrupt {
        key: path.display().to_string(),
        why: "length does not fit in memory".into(),
    })?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, r.offset).map_err(io(&path))?;
    Ok(buf)
}

/// One stored record found by [`walk`]: where its bytes are and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub file: u32,
    pub offset: u64,
    pub len: u64,
}

/// Every record of every spool file, in file and offset order, read from
/// the files alone (the `PDSP` framing), including bytes no record of the
/// store refers to any more (a crash between append and commit).
pub fn walk(dir: &Path, mut f: impl FnMut(Located, &[u8]) -> Result<()>) -> Result<()> {
    let mut files: Vec<u32> = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name();
        if let Some(n) = name
            .to_string_lossy()
            .strip_suffix(".spool")
            .and_then(|s| s.parse::<u32>().ok())
        {
            files.push(n);
        }
    }
    files.sort_unstable();
    for n in files {
        let path = file_name(dir, n);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut at = 0usize;
        while let Some(head) = bytes.get(at..at + 12) {
            if &head[..4] != MAGIC {
                // A torn tail from a failed append: nothing after it counts.
                break;
            }
            let mut l = [0u8; 8];
            l.copy_from_slice(&head[4..12]);
            let len = u64::from_be_bytes(l);
            let start = at + 12;
            let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
                break;
            };
            let Some(body) = bytes.get(start..end) else {
                break;
            };
            f(
                Located {
                    file: n,
                    offset: start as u64,
                    len,
                },
                body,
            )?;
            at = end;
        }
    }
    Ok(())
}

/// Overwrites a stored record's bytes in place with `bytes` of the same
/// length and syncs the file: every [`SpoolRef`] to it stays valid apart
/// from its `check`, which is returned. Used by erasure only; the
/// committer's appends go to the end of the newest file, never here.
pub fn overwrite(dir: &Path, at: Located, bytes: &[u8]) -> Result<u64> {
    let path = file_name(dir, at.file);
    if bytes.len() as u64 != at.len {
        return Err(Error::Other(format!(
            "spool overwrite of {}@{}: {} bytes for a record of {}",
            path.display(),
            at.offset,
            bytes.len(),
            at.len
        )));
    }
    let f = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    f.write_all_at(bytes, at.offset).map_err(io(&path))?;
    f.sync_data().map_err(io(&path))?;
    Ok(check_of(bytes))
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_back_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path()).unwrap();
        let a = s.append(b"hello").unwrap();
        let b = s.append(&[0u8, 1, 2, 255]).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = Spool::open(d.path()).unwrap();
        let c = s.append(b"third").unwrap();
        assert_eq!(read(d.path(), &a).unwrap(), b"hello");
        assert_eq!(read(d.path(), &b).unwrap(), vec![0u8, 1, 2, 255]);
        assert_eq!(read(d.path(), &c).unwrap(), b"third");
        let mut bad = a;
        bad.check ^= 1;
        assert!(matches!(read(d.path(), &bad), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn walk_finds_every_record_and_overwrite_keeps_the_others() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path()).unwrap();
        let a = s.append(b"first one").unwrap();
        let b = s.append(b"second").unwrap();
        s.sync().unwrap();
        let mut seen = Vec::new();
        walk(d.path(), |at, bytes| {
            seen.push((at, bytes.to_vec()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].1, b"second");
        assert_eq!((seen[0].0.offset, seen[0].0.len), (a.offset, a.len));
        let check = overwrite(d.path(), seen[0].0, b"XXXXX one").unwrap();
        assert!(overwrite(d.path(), seen[0].0, b"short").is_err());
        let mut a2 = a;
        a2.check = check;
        assert_eq!(read(d.path(), &a2).unwrap(), b"XXXXX one");
        assert_eq!(read(d.path(), &b).unwrap(), b"second");
        assert!(read(d.path(), &a).is_err());
        assert_eq!(read_unchecked(d.path(), &a).unwrap(), b"XXXXX one");
    }
}
