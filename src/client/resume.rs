//! What `put -c` and `get -c` need to continue an interrupted transfer:
//! small local records of it, written as it goes. Nothing in them is taken
//! on trust: the bytes they point to are checked against checksums before
//! they are used (see `put` and `get`).
//!
//! * An upload's record, `$XDG_STATE_HOME/ringdfs/uploads/<key>.json` (or
//!   `~/.local/state/...`; `key` names the user, owner and remote name): the
//!   version the PUT writes and the local file it reads (path, size,
//!   modification time). Written when a PUT of a file of at least
//!   [`RESUME_MIN`] bytes starts, removed when it is committed (or aborted).
//!   `put -c` reuses the version only while the local file is unchanged and
//!   the version is still newer than the servers' current one; the servers
//!   keep what arrived of each chunk (see `store`'s "Partial chunks").
//! * A download's record, beside its part file `.ringdfs-<key>.part` (both
//!   next to the target): which file version it holds and how many bytes of
//!   each chunk have been written, saved every [`SAVE_EVERY`] bytes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::protocol::{Manifest, Version};

/// Files smaller than this are sent whole again: no upload record is kept.
pub const RESUME_MIN: u64 = 8 << 20;

/// A download's record is saved after this many more bytes are written.
const SAVE_EVERY: u64 = 4 << 20;

/// Where the user's transfer state lives: `$XDG_STATE_HOME/ringdfs/` or
/// `~/.local/state/ringdfs/`.
fn state_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("ringdfs"))
}

/// A short hex key naming `parts` (kept apart, so no two lists collide).
fn key(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new();
    for part in parts {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    crate::hex(&h.finalize().as_bytes()[..12])
}

/// Writes `value` as JSON at `path`, whole or not at all (a temp file
/// renamed over it). Best effort: a record that cannot be written only
/// means the transfer cannot be continued.
fn save_json<T: Serialize>(path: &Path, value: &T) {
    let saved = (|| {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(value)?)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = saved {
        debug!(path = %path.display(), error = %e, "cannot save a transfer record");
    }
}

fn load_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(super) fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// The local file a PUT reads, as far as telling a change goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LocalFile {
    pub path: PathBuf,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime: u64,
}

impl LocalFile {
    pub fn of(path: &Path, meta: &std::fs::Metadata) -> LocalFile {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        LocalFile {
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            size: meta.len(),
            mtime,
        }
    }
}

/// An upload under way (see the module's doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct UploadRecord {
    pub user: String,
    pub owner: String,
    pub name: String,
    pub version: Version,
    pub local: LocalFile,
}

impl UploadRecord {
    /// Where the record of `user`'s upload of `owner`'s `name` is kept.
    pub fn path(user: &str, owner: &str, name: &str) -> Option<PathBuf> {
        let key = key(&[user.as_bytes(), owner.as_bytes(), name.as_bytes()]);
        Some(state_dir()?.join("uploads").join(format!("{key}.json")))
    }

    /// The version an earlier upload of the same file to the same name was
    /// writing, if it recorded one at `path` and the file is unchanged.
    pub fn version_to_resume(path: &Path, like: &UploadRecord) -> Option<Version> {
        let found: UploadRecord = load_json(path)?;
        let same = found.user == like.user
            && found.owner == like.owner
            && found.name == like.name
            && found.local == like.local;
        same.then_some(found.version)
    }

    pub fn save(&self, path: &Path) {
        save_json(path, self);
    }
}

/// What a download's part file holds (see the module's doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DownloadRecord {
    /// Names the file's data: see [`data_key`].
    data: String,
    /// Bytes written from the start of each chunk.
    done: Vec<u64>,
}

/// Names what a manifest's bytes are: the data's name and version, size,
/// chunks and checksums.
fn data_key(m: &Manifest) -> String {
    let version = m.data_version();
    let mut parts: Vec<Vec<u8>> = vec![
        m.data_name().as_bytes().to_vec(),
        version.gen.to_le_bytes().to_vec(),
        version.writer.to_le_bytes().to_vec(),
        m.size.to_le_bytes().to_vec(),
        m.chunks.to_le_bytes().to_vec(),
    ];
    parts.extend(m.checksums.iter().map(|c| c.0.to_vec()));
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    key(&refs)
}

/// The part file of a download to `target` and its record, beside it.
pub(super) fn part_paths(dir: &Path, target: &Path) -> (PathBuf, PathBuf) {
    let name = target.file_name().unwrap_or(target.as_os_str());
    let key = key(&[name.as_encoded_bytes()]);
    (
        dir.join(format!(".ringdfs-{key}.part")),
        dir.join(format!(".ringdfs-{key}.json")),
    )
}

/// How much of each chunk a download has written, saved now and then to
/// its record so a later `get -c` can go on.
pub(super) struct Written {
    record_path: PathBuf,
    /// The record, bytes written since it was saved, and whether it was
    /// removed (a writer still running must not write it again).
    state: Mutex<(DownloadRecord, u64, bool)>,
}

impl Written {
    /// The bytes of each chunk the record at `record_path` says were
    /// written of `manifest`'s data, when it is that data (else none).
    pub fn resumed(record_path: &Path, manifest: &Manifest) -> Option<Vec<u64>> {
        let found: DownloadRecord = load_json(record_path)?;
        (found.data == data_key(manifest) && found.done.len() == manifest.chunks as usize)
            .then_some(found.done)
    }

    /// Starts the record of a download of `manifest` with `done` written.
    pub fn start(record_path: PathBuf, manifest: &Manifest, done: Vec<u64>) -> Written {
        let record = DownloadRecord {
            data: data_key(manifest),
            done,
        };
        save_json(&record_path, &record);
        Written {
            record_path,
            state: Mutex::new((record, 0, false)),
        }
    }

    /// Bytes of chunk `chunk` (1-based) written so far.
    pub fn done(&self, chunk: u32) -> u64 {
        self.state.lock().expect("record lock").0.done[chunk as usize - 1]
    }

    /// `chunk` now has `done` bytes written; saves the record every
    /// [`SAVE_EVERY`] bytes, and at once when `now`.
    pub fn set(&self, chunk: u32, done: u64, now: bool) {
        let mut state = self.state.lock().expect("record lock");
        let (record, unsaved, removed) = &mut *state;
        let was = std::mem::replace(&mut record.done[chunk as usize - 1], done);
        *unsaved += done.abs_diff(was);
        if !*removed && (now || *unsaved >= SAVE_EVERY) {
            save_json(&self.record_path, record);
            *unsaved = 0;
        }
    }

    /// Saves the record as it is now (a `get -c` cancelled).
    pub fn save(&self) {
        let mut state = self.state.lock().expect("record lock");
        if !state.2 {
            save_json(&self.record_path, &state.0);
            state.1 = 0;
        }
    }

    /// Removes the record; it is not saved again.
    pub fn remove(&self) {
        let mut state = self.state.lock().expect("record lock");
        state.2 = true;
        remove(&self.record_path);
    }
}
