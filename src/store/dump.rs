//! A dump of every sled tree, for `postdesk backup` and `restore`.
//!
//! Written from a [`Quiet`] closure, so it is one consistent point: every
//! job answered before it is in, none after. The file is a plain framed
//! stream (no sled internals), so a backup is readable by any postdesk that
//! knows this format, whatever sled does to its own files.
//!
//! Format: `PDDUMP1\n`, then frames: `T` + u32 length + tree name opens a
//! tree; `R` + u32 key length + key + u32 value length + value is a record
//! of the open tree; `E` + u64 record count ends the dump. Integers are
//! big-endian. The checksum lives in the backup's manifest, not here.

use super::{keys, Error, Quiet, Result};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"PDDUMP1\n";

/// What a dump holds, counted while it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Every record of every tree.
    pub records: u64,
    pub tickets: u64,
    /// Messages filed in tickets.
    pub messages: u64,
    /// Messages kept apart (auto-replies and bounces matching no ticket).
    pub apart: u64,
    pub outbox: u64,
}

impl Counts {
    fn count(&mut self, tree: &[u8], key: &[u8]) {
        self.records += 1;
        if tree != b"postdesk" {
            return;
        }
        if key.starts_with(keys::TICKET) {
            self.tickets += 1;
        } else if key.starts_with(keys::MESSAGE) {
            self.messages += 1;
        } else if key.starts_with(keys::APART) {
            self.apart += 1;
        } else if key.starts_with(keys::OUTBOX) {
            self.outbox += 1;
        }
    }
}

/// A dump just written: its counts and size, and the length of every
/// spool file at the same point.
#[derive(Debug, Clone)]
pub struct Written {
    pub counts: Counts,
    pub bytes: u64,
    /// `NNNNNNNN.spool` → its length. The spool is append-only, so the
    /// bytes below these lengths no longer change and can be copied once
    /// the committer runs again.
    pub spool: Vec<(String, u64)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counts what goes through it. (No hashing here: that would lengthen
/// the time deliveries wait; the caller hashes the file afterwards.)
struct Counting<W> {
    w: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

fn frame(w: &mut impl Write, tag: u8, parts: &[&[u8]]) -> std::io::Result<()> {
    w.write_all(&[tag])?;
    for p in parts {
        let len = u32::try_from(p.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "record over 4 GiB")
        })?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(p)?;
    }
    Ok(())
}

/// Writes every tree to `out` (created, must not exist) and notes the spool
/// file lengths. Not synced: the caller syncs after letting the committer
/// go, so deliveries do not wait for that.
pub fn write(q: &Quiet, out: &Path) -> Result<Written> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(io(out))?;
    let mut w = Counting {
        w: BufWriter::with_capacity(1 << 20, file),
        n: 0,
    };
    let mut counts = Counts::default();
    w.write_all(MAGIC).map_err(io(out))?;
    let mut names = q.db.tree_names();
    names.sort();
    for name in names {
        let tree = q.db.open_tree(&name)?;
        frame(&mut w, b'T', &[&name]).map_err(io(out))?;
        for kv in tree.iter() {
            let (k, v) = kv?;
            counts.count(&name, &k);
            frame(&mut w, b'R', &[&k, &v]).map_err(io(out))?;
            if counts.records % 10_000 == 0 {
                q.progress();
            }
        }
    }
    w.write_all(b"E").map_err(io(out))?;
    w.write_all(&counts.records.to_be_bytes())
        .map_err(io(out))?;
    w.flush().map_err(io(out))?;
    let spool = spool_lengths(q.spool_dir)?;
    Ok(Written {
        counts,
        bytes: w.n,
        spool,
    })
}

fn spool_lengths(dir: &Path) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let e = e.map_err(io(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".spool") {
            let len = e.metadata().map_err(io(&e.path()))?.len();
            out.push((name, len));
        }
    }
    out.sort();
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bad(path: &Path, why: impl Into<String>) -> Error {
    Error::Corrupt {
        key: path.display().to_string(),
        why: why.into(),
    }
}

fn read_len(r: &mut impl Read, path: &Path) -> Result<usize> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)
        .map_err(|_| bad(path, "cut short inside a record"))?;
    Ok(u32::from_be_bytes(b) as usize)
}

fn read_part(r: &mut impl Read, path: &Path) -> Result<Vec<u8>> {
    let len = read_len(r, path)?;
    let mut v = vec![0u8; len];
    r.read_exact(&mut v)
        .map_err(|_| bad(path, "cut short inside a record"))?;
    Ok(v)
}

/// Loads a dump into `db` (a fresh, empty sled store) and returns its
/// counts. Does not flush: the caller does, then syncs the files.
pub fn load(path: &Path, db: &sled::Db) -> Result<Counts> {
    let f = File::open(path).map_err(io(path))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)
        .map_err(|_| bad(path, "not a postdesk dump"))?;
    if &magic != MAGIC {
        return Err(bad(path, "not a postdesk dump (or another format version)"));
    }
    let mut counts = Counts::default();
    let mut tree: Option<(Vec<u8>, sled::Tree)> = None;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0usize;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)
            .map_err(|_| bad(path, "ends without its end frame"))?;
        match tag[0] {
            b'T' => {
                if let Some((_, t)) = tree.take() {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
                let name = read_part(&mut r, path)?;
                let t = db.open_tree(&name)?;
                tree = Some((name, t));
            }
            b'R' => {
                let Some((name, t)) = tree.as_ref() else {
                    return Err(bad(path, "a record before any tree"));
                };
                let k = read_part(&mut r, path)?;
                let v = read_part(&mut r, path)?;
                counts.count(name, &k);
                batch.insert(k, v);
                in_batch += 1;
                if in_batch >= 10_000 {
                    t.apply_batch(std::mem::take(&mut batch))?;
                    in_batch = 0;
                }
            }
            b'E' => {
                if let Some((_, t)) = tree.take() {
                    t.apply_batch(std::mem::take(&mut batch))?;
                }
                let mut n = [0u8; 8];
                r.read_exact(&mut n)
                    .map_err(|_| bad(path, "cut short in the end frame"))?;
                if u64::from_be_bytes(n) != counts.records {
                    return Err(bad(
                        path,
                        format!(
                            "holds {} records but says {}",
                            counts.records,
                            u64::from_be_bytes(n)
                        ),
                    ));
                }
                let mut rest = [0u8; 1];
                if r.read(&mut rest).map_err(io(path))? != 0 {
                    return Err(bad(path, "bytes after the end frame"));
                }
                return Ok(counts);
            }
            other => return Err(bad(path, format!("unknown frame {other:#04x}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_loads_into_an_identical_store() {
        let src = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(src.path().join("db"))
            .open()
            .unwrap();
        let t = db.open_tree("postdesk").unwrap();
        t.insert(keys::ticket(1), b"one".to_vec()).unwrap();
        t.insert(keys::message(1, 0), b"m".to_vec()).unwrap();
        t.insert(keys::outbox(7), vec![0u8; 300_000]).unwrap();
        db.open_tree("other").unwrap().insert("x", "y").unwrap();
        let spool = src.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::write(spool.join("00000001.spool"), b"abc").unwrap();
        let q = Quiet {
            db: &db,
            spool_dir: &spool,
            data_dir: src.path(),
            progress: None,
        };
        let out = src.path().join("store.dump");
        let w = write(&q, &out).unwrap();
        assert_eq!(
            (w.counts.tickets, w.counts.messages, w.counts.outbox),
            (1, 1, 1)
        );
        assert_eq!(w.spool, vec![("00000001.spool".to_string(), 3)]);
        assert_eq!(w.bytes, std::fs::metadata(&out).unwrap().len());
        assert!(write(&q, &out).is_err(), "an existing file is not replaced");

        let dst = tempfile::tempdir().unwrap();
        let db2 = sled::Config::new().path(dst.path()).open().unwrap();
        assert_eq!(load(&out, &db2).unwrap(), w.counts);
        for name in db.tree_names() {
            let a: Vec<_> = db.open_tree(&name).unwrap().iter().collect();
            let b: Vec<_> = db2.open_tree(&name).unwrap().iter().collect();
            assert_eq!(a, b, "tree {name:?}");
        }

        let mut cut = std::fs::read(&out).unwrap();
        cut.truncate(cut.len() - 3);
        let cutp = src.path().join("cut.dump");
        std::fs::write(&cutp, &cut).unwrap();
        let db3 = sled::Config::new().temporary(true).open().unwrap();
        let e = load(&cutp, &db3).unwrap_err().to_string();
        assert!(e.contains("cut.dump"), "{e}");
    }
}
