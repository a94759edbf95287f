//! Volumes: append-only files that hold the small chunks, many to a file (as
//! Haystack and SeaweedFS do), so a small chunk costs its bytes and a row, not
//! an inode and a B-tree leaf of its own.
//!
//! ```text
//! volumes/<id:08x>.vol    chunk bytes, one after another, no framing
//! ```
//!
//! A volume holds nothing but the chunks' bytes: where each chunk starts and
//! how long it is, and its checksum, are in its row in the database, and every
//! read hashes the bytes again against that checksum. Only the store's writer
//! thread appends, and only to the highest-numbered (active) volume; it syncs
//! the volume before the transaction that records the new rows commits, so a
//! row never points at bytes that a crash could lose. Bytes appended by a
//! commit that then failed (or was cut short by a crash) are dead space, as
//! are the bytes of chunks since deleted or replaced; the database keeps each
//! volume's live bytes, and [`super::Store::compact_volumes`] rewrites the live
//! chunks of a mostly dead volume into the active one and removes it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};

use super::chunk::{read_dir, read_exact_at, sync_dir};
use crate::error::{Error, Result};

const DIR: &str = "volumes";

fn file_name(id: u32) -> String {
    format!("{id:08x}.vol")
}

fn parse_name(name: &std::ffi::OsStr) -> Option<u32> {
    let hex = name.to_str()?.strip_suffix(".vol")?;
    (hex.len() == 8).then(|| u32::from_str_radix(hex, 16).ok())?
}

/// The volumes of one store, for reading (any thread).
pub(super) struct Volumes {
    dir: PathBuf,
    /// Open handles, so a read does not reopen the file; a handle taken
    /// before a volume is removed keeps reading it. A writing store opens
    /// every volume when it starts and each new one as it is created, so,
    /// like the database file, they stay readable whatever happens to their
    /// names.
    open: Mutex<HashMap<u32, Arc<File>>>,
    /// The volume being appended to, as of the last commit (0 before the
    /// writer has started, and in a read-only store).
    active: AtomicU32,
}

impl Volumes {
    pub(super) fn new(root: &Path) -> Volumes {
        Volumes {
            dir: root.join(DIR),
            open: Mutex::default(),
            active: AtomicU32::new(0),
        }
    }

    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(file_name(id))
    }

    pub(super) fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    fn handle(&self, id: u32) -> std::io::Result<Option<Arc<File>>> {
        let mut open = self.open.lock().expect("volume handles");
        if let Some(file) = open.get(&id) {
            return Ok(Some(Arc::clone(file)));
        }
        match File::open(self.path(id)) {
            Ok(file) => {
                let file = Arc::new(file);
                open.insert(id, Arc::clone(&file));
                Ok(Some(file))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens volume `id` for reading now (see `open`).
    fn hold(&self, id: u32) -> Result<()> {
        self.handle(id)
            .map_err(|e| Error::storage(format!("opening volume {id:08x}"), e))?;
        Ok(())
    }

    /// `len` bytes at `offset` of volume `id`; `Ok(None)` if the volume is
    /// gone (compacted away since the caller read where the chunk was).
    /// A short read (a truncated volume) is an `UnexpectedEof` error. A failed
    /// read is tried once more (see [`read_exact_at`]).
    pub(super) fn read(&self, id: u32, offset: u64, len: u64) -> std::io::Result<Option<Bytes>> {
        let Some(file) = self.handle(id)? else {
            return Ok(None);
        };
        let mut buf = BytesMut::zeroed(len as usize);
        read_exact_at(&file, &mut buf, offset)?;
        Ok(Some(buf.freeze()))
    }

    /// Removes a volume nothing points into any more.
    pub(super) fn remove(&self, id: u32) {
        self.open.lock().expect("volume handles").remove(&id);
        super::chunk::remove_file_logged(&self.path(id));
    }

    /// Every volume file: (id, size in bytes).
    pub(super) fn list(&self) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.dir)? {
            let Some(id) = parse_name(&entry.file_name()) else {
                continue;
            };
            let len = entry
                .metadata()
                .map_err(|e| Error::io(format!("reading the size of volume {id:08x}"), e))?
                .len();
            out.push((id, len));
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// The writer thread's end: appends to the active volume, starting a new one
/// when it reaches `max` bytes.
pub(super) struct Appender {
    volumes: Arc<Volumes>,
    id: u32,
    file: File,
    len: u64,
    max: u64,
    unsynced: bool,
}

impl Appender {
    /// Opens the highest-numbered volume for appending (creating the first).
    pub(super) fn open(volumes: Arc<Volumes>, max: u64) -> Result<Appender> {
        let existing = volumes.list()?;
        let last = existing.last().map_or(1, |&(id, _)| id);
        let (file, len) = create_or_open(&volumes, last)?;
        for &(id, _) in &existing {
            volumes.hold(id)?;
        }
        volumes.hold(last)?;
        volumes.active.store(last, Ordering::Release);
        Ok(Appender {
            volumes,
            id: last,
            file,
            len,
            max: max.max(1),
            unsynced: false,
        })
    }

    /// The volumes appended to, for reading.
    pub(super) fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// Appends `data`; returns (volume, offset). Durable only after [`Appender::sync`].
    pub(super) fn append(&mut self, data: &[u8]) -> Result<(u32, u64)> {
        if self.len > 0 && self.len + data.len() as u64 > self.max {
            self.rotate()?;
        }
        let offset = self.len;
        if let Err(e) = self.file.write_all(data) {
            // Part of it may be there: dead bytes, skipped from now on.
            self.len = self.file.metadata().map_or(self.len, |m| m.len());
            return Err(Error::storage(
                format!("appending to volume {:08x}", self.id),
                e,
            ));
        }
        self.len += data.len() as u64;
        self.unsynced = true;
        Ok((self.id, offset))
    }

    /// Makes everything appended so far durable.
    pub(super) fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            self.file
                .sync_data()
                .map_err(|e| Error::storage(format!("syncing volume {:08x}", self.id), e))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Seals the active volume (synced) and starts the next one.
    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        let next = self
            .id
            .checked_add(1)
            .ok_or_else(|| Error::Internal("volume numbers ran out".into()))?;
        let (file, len) = create_or_open(&self.volumes, next)?;
        self.volumes.hold(next)?;
        (self.id, self.file, self.len) = (next, file, len);
        Ok(())
    }

    /// Tells readers which volume is active: called once the batch that may
    /// have started it has committed, so a volume below the published one
    /// is never written again and every row pointing into it is committed.
    pub(super) fn publish(&self) {
        self.volumes.active.store(self.id, Ordering::Release);
    }
}

/// Opens volume `id` for appending, creating it (and syncing the folder, so
/// the file outlives a crash) if it does not exist.
fn create_or_open(volumes: &Volumes, id: u32) -> Result<(File, u64)> {
    fs::create_dir_all(&volumes.dir)
        .map_err(|e| Error::io(format!("creating {}", volumes.dir.display()), e))?;
    let path = volumes.path(id);
    let existed = path.exists();
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::storage(format!("opening volume {id:08x}"), e))?;
    if !existed {
        sync_dir(&volumes.dir)?;
    }
    let len = file
        .metadata()
        .map_err(|e| Error::io(format!("reading the size of volume {id:08x}"), e))?
        .len();
    Ok((file, len))
}
