//! A server's chunk storage on disk, and its in-memory index of it.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/
//!   tmp/                                   writes in progress; emptied at start
//!   quarantine/                            chunk files that failed their checksum
//!   users/<owner>/<file-id>/               one folder per file of a user
//!     manifest                             the file's current Manifest (or tombstone)
//!     <gen:016x>-<writer:016x>.<chunk>     chunk data of one version, then a trailer
//! ```
//!
//! `file-id` is the hex of the first 16 bytes of BLAKE3(`owner/name`): a name a
//! user sent never becomes a path, so it cannot escape the folder, and two names
//! cannot collide. `owner` comes from the login, never from a request.
//!
//! # Chunk file
//!
//! ```text
//! +-------------------+------------------------------+---------------------+--------------+
//! | data (len bytes)  | trailer: bincode ChunkTrailer | trailer_len: u32 LE | "RDFSCHK1"   |
//! +-------------------+------------------------------+---------------------+--------------+
//! ```
//!
//! The trailer says whose chunk it is and carries its checksum, so a chunk file
//! describes itself; a truncated file has no valid trailer.
//!
//! # Manifest file
//!
//! `"RDFSMAN1"`, BLAKE3 of the rest (32 bytes), bincode `StoredManifest`.
//!
//! # Durability
//!
//! Every file is written under `tmp/`, synced, and renamed into place: a
//! crash leaves either the old or the new file, never half of one. A manifest
//! rename is followed by a sync of its folder; a chunk's rename is made
//! durable by the sync of the same folder when its version is committed (or
//! by the healer after a copy), one folder sync per PUT rather than one per
//! chunk. A new version becomes visible by replacing `manifest`; only then are
//! older versions' chunks removed (after a grace period, for overwrites).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::names::{validate_name, validate_user};
use crate::placement::chunk_range;
use crate::protocol::{
    checksum_of, Checksum, ChunkId, FileEntry, InventoryEntry, Manifest, Version, MAX_BLOCK,
};

const CHUNK_MAGIC: &[u8; 8] = b"RDFSCHK1";
const MANIFEST_MAGIC: &[u8; 8] = b"RDFSMAN1";
const MAX_TRAILER: u32 = 4096;
/// Largest number of chunks a file may be cut into (the largest ring).
pub const MAX_CHUNKS: u32 = 1024;

/// What a chunk file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkTrailer {
    pub owner: String,
    pub name: String,
    pub version: Version,
    pub chunk: u32,
    pub chunks: u32,
    pub size: u64,
    pub len: u64,
    pub checksum: Checksum,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredManifest {
    owner: String,
    manifest: Manifest,
}

/// One file of one user, as this server knows it.
#[derive(Debug, Clone)]
struct FileState {
    manifest: Manifest,
    /// Chunks of `manifest.version` present on this server.
    held: BTreeSet<u32>,
    /// The version this one replaced, and when: its chunks stay readable for
    /// a grace period (see [`Store::expire_retired`]).
    retired: Option<(Version, Instant)>,
}

/// What a PUT of one chunk declares up front.
#[derive(Debug, Clone)]
pub struct ChunkSpec {
    pub owner: String,
    pub name: String,
    pub version: Version,
    pub chunk: u32,
    pub chunks: u32,
    pub size: u64,
}

impl ChunkSpec {
    /// Checks that the chunk fits the file it claims to belong to.
    pub fn validate(&self) -> Result<()> {
        validate_user(&self.owner)?;
        validate_name(&self.name)?;
        if !(1..=MAX_CHUNKS).contains(&self.chunks) {
            return Err(Error::BadRequest(format!(
                "a file has 1 to {MAX_CHUNKS} chunks, not {}",
                self.chunks
            )));
        }
        if !(1..=self.chunks).contains(&self.chunk) {
            return Err(Error::BadRequest(format!(
                "chunk {} of a file of {} chunks",
                self.chunk, self.chunks
            )));
        }
        Ok(())
    }

    /// The chunk's length in bytes.
    pub fn chunk_len(&self) -> u64 {
        let (start, end) = chunk_range(self.size, self.chunks, self.chunk);
        end - start
    }

    fn id(&self) -> ChunkId<'_> {
        ChunkId {
            owner: &self.owner,
            name: &self.name,
            version: self.version,
            chunk: self.chunk,
            len: self.chunk_len(),
        }
    }
}

/// Totals for STATUS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub chunks: u64,
    pub bytes: u64,
}

pub struct Store {
    root: PathBuf,
    /// owner → name → state. Guarded by a plain mutex: held only for map
    /// operations, never across I/O.
    index: Mutex<HashMap<String, BTreeMap<String, FileState>>>,
    /// Serialises manifest replacement, so "compare versions, then write" is atomic.
    commit_lock: Mutex<()>,
    /// Versions whose writers gave up before committing them (see
    /// [`Store::abort`]), newest last, so a chunk of one that lands after
    /// the abort goes too. A few hundred are plenty: such a chunk is one
    /// already received when its connection closed.
    aborted: Mutex<std::collections::VecDeque<(String, String, Version)>>,
}

/// How many aborted versions [`Store`] remembers.
const ABORTED_KEPT: usize = 256;

impl Store {
    /// Opens an existing store read-only, to inspect it beside a running
    /// server: nothing is created, cleaned or moved.
    pub fn inspect(root: &Path) -> Result<Store> {
        if !root.join("users").is_dir() {
            return Err(Error::Config(format!(
                "{} holds no ringdfs store",
                root.display()
            )));
        }
        let store = Store {
            root: root.to_path_buf(),
            index: Mutex::new(HashMap::new()),
            commit_lock: Mutex::new(()),
            aborted: Mutex::default(),
        };
        store.load_index(false)?;
        Ok(store)
    }

    /// Reads every chunk the store holds and checks it against its trailer
    /// and manifest. Returns the copies that failed, with why.
    pub fn scrub(&self) -> (u64, Vec<(String, String, u32, Error)>) {
        let files: Vec<(String, String, Version, Vec<u32>)> = {
            let index = self.index.lock().expect("index lock");
            index
                .iter()
                .flat_map(|(owner, files)| {
                    files
                        .values()
                        .filter(|s| !s.manifest.deleted)
                        .map(move |s| {
                            (
                                owner.clone(),
                                s.manifest.name.clone(),
                                s.manifest.version,
                                s.held.iter().copied().collect(),
                            )
                        })
                })
                .collect()
        };
        let mut checked = 0;
        let mut bad = Vec::new();
        for (owner, name, version, held) in files {
            for chunk in held {
                checked += 1;
                let read = self
                    .open_chunk(&owner, &name, version, chunk)
                    .and_then(|mut r| {
                        while r.next_block()?.is_some() {}
                        Ok(())
                    });
                if let Err(e) = read {
                    bad.push((owner.clone(), name.clone(), chunk, e));
                }
            }
        }
        (checked, bad)
    }

    /// Opens (creating if needed) the store under `root`, clears unfinished
    /// writes and loads the index.
    pub fn open(root: &Path) -> Result<Store> {
        let tmp = root.join("tmp");
        let users = root.join("users");
        for dir in [root, &tmp, &users] {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // Anything under tmp/ is a write that never finished.
        for entry in read_dir(&tmp)? {
            let _ = fs::remove_file(entry.path());
        }
        let store = Store {
            root: root.to_path_buf(),
            index: Mutex::new(HashMap::new()),
            commit_lock: Mutex::new(()),
            aborted: Mutex::default(),
        };
        store.load_index(true)?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Scans `users/` into the index; with `tidy`, also removes chunks of
    /// versions older than a file's current one (left by a crash mid-commit).
    fn load_index(&self, tidy: bool) -> Result<()> {
        let mut index = HashMap::new();
        for owner_dir in read_dir(&self.root.join("users"))? {
            let owner = owner_dir.file_name().to_string_lossy().into_owned();
            if validate_user(&owner).is_err() {
                continue;
            }
            let files: &mut BTreeMap<String, FileState> = index.entry(owner.clone()).or_default();
            for file_dir in read_dir(&owner_dir.path())? {
                let dir = file_dir.path();
                let manifest = match read_manifest(&dir.join("manifest")) {
                    Ok(Some(m)) if m.owner == owner => m.manifest,
                    Ok(_) => continue, // staged chunks of a PUT that never committed
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "unreadable manifest; skipping");
                        continue;
                    }
                };
                let held = if tidy {
                    self.sweep(&dir, manifest.version, None)?
                } else {
                    self.held_chunks(&dir, manifest.version)?
                };
                let state = FileState {
                    manifest,
                    held,
                    retired: None,
                };
                files.insert(state.manifest.name.clone(), state);
            }
        }
        *self.index.lock().expect("index lock") = index;
        Ok(())
    }

    /// The chunks of `version` present in a file folder.
    fn held_chunks(&self, dir: &Path, version: Version) -> Result<BTreeSet<u32>> {
        Ok(read_dir(dir)?
            .iter()
            .filter_map(|e| parse_chunk_file_name(&e.file_name()))
            .filter(|(v, _)| *v == version)
            .map(|(_, chunk)| chunk)
            .collect())
    }

    /// Removes chunks of versions older than `current` (but `keep`) from a
    /// file folder and returns the chunks of `current` present there.
    fn sweep(&self, dir: &Path, current: Version, keep: Option<Version>) -> Result<BTreeSet<u32>> {
        let mut held = BTreeSet::new();
        for entry in read_dir(dir)? {
            let Some((version, chunk)) = parse_chunk_file_name(&entry.file_name()) else {
                continue;
            };
            if version < current && Some(version) != keep {
                remove_file_logged(&entry.path());
            } else if version == current {
                held.insert(chunk);
            }
        }
        Ok(held)
    }

    fn file_dir(&self, owner: &str, name: &str) -> PathBuf {
        file_dir(&self.root, owner, name)
    }

    fn chunk_path(&self, owner: &str, name: &str, version: Version, chunk: u32) -> PathBuf {
        self.file_dir(owner, name).join(format!(
            "{:016x}-{:016x}.{chunk}",
            version.gen, version.writer
        ))
    }

    /// Starts writing a chunk. The chunk is stored only by [`ChunkWriter::finish`].
    pub fn begin_chunk(self: &Arc<Self>, spec: ChunkSpec) -> Result<ChunkWriter> {
        spec.validate()?;
        let tmp = self.tmp_path()?;
        let file = File::create(&tmp).map_err(|e| Error::io("creating a chunk file", e))?;
        let hasher = spec.id().hasher();
        Ok(ChunkWriter {
            store: Arc::clone(self),
            tmp: Some(tmp),
            file,
            hasher,
            written: 0,
            spec,
        })
    }

    /// Opens a stored chunk of `version` for reading, after checking its
    /// trailer (and, when `version` is the current one here, the manifest).
    /// A version this server has no manifest for is still served if its chunk
    /// is stored: a writer that stopped halfway through committing leaves
    /// servers that have the chunks but not yet the manifest, and the reader
    /// checks every byte against the manifest it got elsewhere.
    pub fn open_chunk(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> Result<ChunkReader> {
        validate_name(name)?;
        let not_found = || Error::NotFound {
            name: format!("{name} (chunk {chunk})"),
        };
        let expected = {
            let index = self.index.lock().expect("index lock");
            match index.get(owner).and_then(|f| f.get(name)) {
                // Deleted, or replaced by a newer version (and past its grace
                // period): the chunk is gone.
                Some(s) if s.manifest.deleted => return Err(not_found()),
                Some(s)
                    if s.manifest.version > version
                        && s.retired.is_none_or(|(v, _)| v != version) =>
                {
                    return Err(not_found())
                }
                Some(s) if s.manifest.version == version => Some(
                    chunk
                        .checked_sub(1)
                        .and_then(|i| s.manifest.checksums.get(i as usize))
                        .copied()
                        .ok_or_else(not_found)?,
                ),
                _ => None,
            }
        };
        let path = self.chunk_path(owner, name, version, chunk);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found()),
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let trailer = read_trailer(&mut file).map_err(|reason| Error::Corrupt { chunk, reason })?;
        let wanted = (owner, name, version, chunk);
        let got = (
            trailer.owner.as_str(),
            trailer.name.as_str(),
            trailer.version,
            trailer.chunk,
        );
        if wanted != got || expected.is_some_and(|sum| sum != trailer.checksum) {
            return Err(Error::Corrupt {
                chunk,
                reason: "chunk trailer does not match the manifest".into(),
            });
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seeking a chunk file", e))?;
        let hasher = ChunkId {
            owner,
            name,
            version,
            chunk,
            len: trailer.len,
        }
        .hasher();
        Ok(ChunkReader {
            file,
            path,
            remaining: trailer.len,
            hasher,
            trailer,
        })
    }

    /// Makes `manifest` the file's current version if it is newer than what is
    /// there, then drops older versions' chunks. Returns whether it was applied.
    /// A tombstone (`deleted`) is committed the same way.
    pub fn commit(&self, owner: &str, manifest: Manifest) -> Result<bool> {
        validate_user(owner)?;
        validate_name(&manifest.name)?;
        if !manifest.deleted
            && (manifest.chunks == 0
                || manifest.chunks > MAX_CHUNKS
                || manifest.checksums.len() != manifest.chunks as usize)
        {
            return Err(Error::BadRequest(
                "manifest's chunk count and checksums disagree".into(),
            ));
        }
        let _serial = self.commit_lock.lock().expect("commit lock");
        let current = self.manifest(owner, &manifest.name);
        if current
            .as_ref()
            .is_some_and(|c| c.version >= manifest.version)
        {
            return Ok(false);
        }
        let dir = self.file_dir(owner, &manifest.name);
        self.write_manifest(&dir, owner, &manifest)?;
        // An overwrite keeps the version it replaces for a grace period, so
        // reads already under way finish; a delete takes everything at once.
        let keep = match &current {
            Some(c) if !manifest.deleted && !c.deleted => Some(c.version),
            _ => None,
        };
        let held = self.sweep(&dir, manifest.version, keep)?;
        let state = FileState {
            manifest,
            held,
            retired: keep.map(|v| (v, Instant::now())),
        };
        let mut index = self.index.lock().expect("index lock");
        index
            .entry(owner.to_string())
            .or_default()
            .insert(state.manifest.name.clone(), state);
        Ok(true)
    }

    /// Drops what a writer stored of `version` of `owner`'s `name` before it
    /// gave up without committing (its PUT failed or was cancelled): chunk
    /// files nothing would ever read, nor remove, while that version stays
    /// newer than the current one. Never touches a committed version: when
    /// the current manifest is `version` or newer, this does nothing (an
    /// older version's chunks go with the sweep of any commit anyway). A
    /// chunk of `version` still being finished is removed as it lands (see
    /// [`ChunkWriter::finish`]). Returns how many chunk files went.
    pub fn abort(&self, owner: &str, name: &str, version: Version) -> Result<usize> {
        validate_user(owner)?;
        validate_name(name)?;
        let _serial = self.commit_lock.lock().expect("commit lock");
        if self
            .manifest(owner, name)
            .is_some_and(|m| m.version >= version)
        {
            return Ok(0);
        }
        {
            let mut aborted = self.aborted.lock().expect("aborted lock");
            if aborted.len() >= ABORTED_KEPT {
                aborted.pop_front();
            }
            aborted.push_back((owner.to_string(), name.to_string(), version));
        }
        let mut dropped = 0;
        for entry in read_dir(&self.file_dir(owner, name))? {
            if parse_chunk_file_name(&entry.file_name()).is_some_and(|(v, _)| v == version) {
                remove_file_logged(&entry.path());
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// Whether the writer of `version` of `owner`'s `name` gave it up.
    fn was_aborted(&self, owner: &str, name: &str, version: Version) -> bool {
        self.aborted
            .lock()
            .expect("aborted lock")
            .iter()
            .any(|(o, n, v)| o == owner && n == name && *v == version)
    }

    /// Removes the chunks of versions replaced more than `grace` ago.
    /// Returns how many files had one.
    pub fn expire_retired(&self, grace: Duration) -> usize {
        let expired: Vec<(String, String, Version)> = {
            let mut index = self.index.lock().expect("index lock");
            let mut out = Vec::new();
            for (owner, files) in index.iter_mut() {
                for state in files.values_mut() {
                    if let Some((version, since)) = state.retired {
                        if since.elapsed() >= grace {
                            state.retired = None;
                            out.push((owner.clone(), state.manifest.name.clone(), version));
                        }
                    }
                }
            }
            out
        };
        for (owner, name, version) in &expired {
            for entry in read_dir(&self.file_dir(owner, name)).unwrap_or_default() {
                if parse_chunk_file_name(&entry.file_name()).is_some_and(|(v, _)| v == *version) {
                    remove_file_logged(&entry.path());
                }
            }
        }
        expired.len()
    }

    fn write_manifest(&self, dir: &Path, owner: &str, manifest: &Manifest) -> Result<()> {
        fs::create_dir_all(dir).map_err(|e| Error::io("creating a file folder", e))?;
        let stored = StoredManifest {
            owner: owner.to_string(),
            manifest: manifest.clone(),
        };
        let mut bytes = MANIFEST_MAGIC.to_vec();
        let body = codec::encode(&stored)?;
        bytes.extend_from_slice(blake3::hash(&body).as_bytes());
        bytes.extend_from_slice(&body);
        self.write_atomically(&dir.join("manifest"), &bytes)
    }

    /// A fresh temp file name under `tmp/` (recreated if someone removed it).
    fn tmp_path(&self) -> Result<PathBuf> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(dir.join(format!("{}.part", crate::hex(&rand::random::<[u8; 16]>()))))
    }

    /// Every file of every user (tombstones included), sorted by owner and name.
    pub fn inventory(&self) -> Vec<InventoryEntry> {
        let index = self.index.lock().expect("index lock");
        let mut out: Vec<InventoryEntry> = index
            .iter()
            .flat_map(|(owner, files)| {
                files.values().map(move |s| InventoryEntry {
                    owner: owner.clone(),
                    name: s.manifest.name.clone(),
                    version: s.manifest.version,
                    deleted: s.manifest.deleted,
                    held: s.held.iter().copied().collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        out
    }

    /// Moves a chunk file that failed its checks to `quarantine/` and forgets
    /// it, so healing fetches a good copy. Returns where it went.
    pub fn quarantine(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> Result<Option<PathBuf>> {
        self.forget_chunk(owner, name, version, chunk);
        let path = self.chunk_path(owner, name, version, chunk);
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating quarantine/", e))?;
        let id = path
            .parent()
            .and_then(Path::file_name)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file_name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = dir.join(format!("{}-{owner}-{id}-{file_name}", crate::unix_now()));
        match fs::rename(&path, &dest) {
            Ok(()) => Ok(Some(dest)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("quarantining {}", path.display()), e)),
        }
    }

    /// Removes this server's copy of a chunk it should no longer hold (the
    /// ring changed and the chunk's new holders have it). Returns whether a
    /// copy went. A reader that has the file open finishes reading it.
    pub fn drop_chunk(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> Result<bool> {
        let _serial = self.commit_lock.lock().expect("commit lock");
        let (manifest, held) = self.file(owner, name);
        if !(manifest.is_some_and(|m| m.version == version) && held.contains(&chunk)) {
            return Ok(false);
        }
        self.forget_chunk(owner, name, version, chunk);
        let path = self.chunk_path(owner, name, version, chunk);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }

    /// Forgets that this server holds a chunk (its file is gone or bad).
    pub fn forget_chunk(&self, owner: &str, name: &str, version: Version, chunk: u32) {
        let mut index = self.index.lock().expect("index lock");
        if let Some(state) = index.get_mut(owner).and_then(|f| f.get_mut(name)) {
            if state.manifest.version == version {
                state.held.remove(&chunk);
            }
        }
    }

    /// Compares the index with the disk, as someone may have deleted files or
    /// whole folders under a running server: manifests that vanished are
    /// written again from memory, chunks that vanished are forgotten (healing
    /// fetches them). Returns how many chunks were forgotten.
    pub fn check_disk(&self) -> Result<usize> {
        let files: Vec<(String, Manifest, Vec<u32>)> = {
            let index = self.index.lock().expect("index lock");
            index
                .iter()
                .flat_map(|(owner, files)| {
                    files.values().map(move |s| {
                        (
                            owner.clone(),
                            s.manifest.clone(),
                            s.held.iter().copied().collect(),
                        )
                    })
                })
                .collect()
        };
        let mut forgotten = 0;
        for (owner, manifest, held) in files {
            let dir = self.file_dir(&owner, &manifest.name);
            if !dir.join("manifest").exists() {
                let _serial = self.commit_lock.lock().expect("commit lock");
                // Only if it is still current: a commit may have raced us.
                if self.manifest(&owner, &manifest.name).as_ref() == Some(&manifest) {
                    tracing::warn!(file = %manifest.name, owner = %owner, "manifest vanished from disk; rewriting it");
                    self.write_manifest(&dir, &owner, &manifest)?;
                }
            }
            for chunk in held {
                if !self
                    .chunk_path(&owner, &manifest.name, manifest.version, chunk)
                    .exists()
                {
                    tracing::warn!(file = %manifest.name, owner = %owner, chunk, "chunk vanished from disk");
                    self.forget_chunk(&owner, &manifest.name, manifest.version, chunk);
                    forgotten += 1;
                }
            }
        }
        Ok(forgotten)
    }

    /// Removes a tombstone and its folder once every server has applied it, if
    /// it is still the file's current manifest at `version`.
    pub fn drop_tombstone(&self, owner: &str, name: &str, version: Version) -> Result<bool> {
        let _serial = self.commit_lock.lock().expect("commit lock");
        match self.manifest(owner, name) {
            Some(m) if m.deleted && m.version == version => {}
            _ => return Ok(false),
        }
        let dir = self.file_dir(owner, name);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
        }
        let mut index = self.index.lock().expect("index lock");
        if let Some(files) = index.get_mut(owner) {
            files.remove(name);
        }
        Ok(true)
    }

    /// The file's current manifest (possibly a tombstone), if this server has one.
    pub fn manifest(&self, owner: &str, name: &str) -> Option<Manifest> {
        self.file(owner, name).0
    }

    /// The file's current manifest and the chunks of that version held here.
    pub fn file(&self, owner: &str, name: &str) -> (Option<Manifest>, Vec<u32>) {
        let index = self.index.lock().expect("index lock");
        match index.get(owner).and_then(|files| files.get(name)) {
            Some(s) => (Some(s.manifest.clone()), s.held.iter().copied().collect()),
            None => (None, Vec::new()),
        }
    }

    /// The owner's files, tombstones included (so a client merging several
    /// servers' lists can tell "deleted" from "not here"), sorted by name.
    pub fn list(&self, owner: &str) -> Vec<FileEntry> {
        let index = self.index.lock().expect("index lock");
        let Some(files) = index.get(owner) else {
            return Vec::new();
        };
        files
            .values()
            .map(|s| FileEntry {
                name: s.manifest.name.clone(),
                version: s.manifest.version,
                size: s.manifest.size,
                chunks: s.manifest.chunks,
                stored_at: s.manifest.stored_at,
                deleted: s.manifest.deleted,
                held: s.held.iter().copied().collect(),
            })
            .collect()
    }

    pub fn stats(&self) -> Stats {
        let index = self.index.lock().expect("index lock");
        let mut stats = Stats::default();
        for state in index.values().flat_map(BTreeMap::values) {
            let m = &state.manifest;
            if m.deleted {
                continue;
            }
            stats.files += 1;
            for &chunk in &state.held {
                let (start, end) = chunk_range(m.size, m.chunks, chunk);
                stats.chunks += 1;
                stats.bytes += end - start;
            }
        }
        stats
    }

    /// Writes `bytes` to `path` via a synced temp file and a rename, then syncs
    /// the folder.
    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.tmp_path()?;
        let guard = RemoveOnDrop(Some(tmp.clone()));
        let mut file = File::create(&tmp).map_err(|e| Error::io("creating a temp file", e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("writing a temp file", e))?;
        rename_durably(&tmp, path)?;
        guard.disarm();
        Ok(())
    }

    /// Syncs the folder of `owner`'s file `name`, making chunk renames into it
    /// durable (see [`ChunkWriter::finish`]).
    pub fn sync_file_dir(&self, owner: &str, name: &str) -> Result<()> {
        sync_dir(&self.file_dir(owner, name))
    }

    /// Records that `chunk` of `version` is now stored (called after a rename).
    fn chunk_stored(&self, owner: &str, name: &str, version: Version, chunk: u32) {
        let mut index = self.index.lock().expect("index lock");
        let state = index.get_mut(owner).and_then(|f| f.get_mut(name));
        if let Some(state) = state {
            if state.manifest.version == version {
                state.held.insert(chunk);
            }
        }
    }
}

/// The folder holding `owner`'s file `name` in the store under `root`.
pub fn file_dir(root: &Path, owner: &str, name: &str) -> PathBuf {
    let mut id = blake3::Hasher::new();
    id.update(owner.as_bytes());
    id.update(b"/");
    id.update(name.as_bytes());
    let id = crate::hex(&id.finalize().as_bytes()[..16]);
    root.join("users").join(owner).join(id)
}

/// A chunk being written: bytes go to a temp file and into the checksum. Dropped
/// without `finish`, it removes the temp file.
pub struct ChunkWriter {
    store: Arc<Store>,
    tmp: Option<PathBuf>,
    file: File,
    hasher: blake3::Hasher,
    written: u64,
    spec: ChunkSpec,
}

impl ChunkWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let len = self.spec.chunk_len();
        if self.written + data.len() as u64 > len {
            return Err(Error::BadRequest(format!(
                "chunk {} is {len} bytes; more was sent",
                self.spec.chunk
            )));
        }
        self.hasher.update(data);
        self.file
            .write_all(data)
            .map_err(|e| Error::io("writing a chunk", e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks length and checksum, appends the trailer, syncs and renames the
    /// chunk into place. Only then is it stored.
    pub fn finish(mut self, claimed: Checksum) -> Result<()> {
        let spec = &self.spec;
        if self.written != spec.chunk_len() {
            return Err(Error::BadRequest(format!(
                "chunk {} is {} bytes; {} were sent",
                spec.chunk,
                spec.chunk_len(),
                self.written
            )));
        }
        let checksum = checksum_of(&self.hasher);
        if checksum != claimed {
            return Err(Error::Corrupt {
                chunk: spec.chunk,
                reason: "received bytes do not match the sender's checksum".into(),
            });
        }
        let trailer = ChunkTrailer {
            owner: spec.owner.clone(),
            name: spec.name.clone(),
            version: spec.version,
            chunk: spec.chunk,
            chunks: spec.chunks,
            size: spec.size,
            len: spec.chunk_len(),
            checksum,
        };
        let body = codec::encode(&trailer)?;
        let mut tail = body;
        tail.extend_from_slice(&(tail.len() as u32).to_le_bytes());
        tail.extend_from_slice(CHUNK_MAGIC);
        self.file
            .write_all(&tail)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io("syncing a chunk", e))?;

        let (owner, name, version, chunk) = (&spec.owner, &spec.name, spec.version, spec.chunk);
        let dest = self.store.chunk_path(owner, name, version, chunk);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("creating a file folder", e))?;
        }
        let tmp = self.tmp.take().expect("finish runs once");
        // The rename is made durable by the next sync of this file's folder:
        // the commit that makes this version visible writes its manifest into
        // the same folder and syncs it (nothing is acknowledged before), and
        // the healer syncs it after a copy. One folder sync per PUT, not one
        // per chunk: that is most of a small file's cost.
        if let Err(e) = fs::rename(&tmp, &dest) {
            remove_file_logged(&tmp);
            return Err(Error::io(format!("renaming into {}", dest.display()), e));
        }
        self.store.chunk_stored(owner, name, version, chunk);
        // A writer that lost a race may deliver after the winner's commit
        // swept the folder, and a chunk may land after its writer gave the
        // version up (`Store::abort`, which records the version before it
        // looks for files): such a chunk can never be read, so it goes now.
        if self
            .store
            .manifest(owner, name)
            .is_some_and(|m| m.version > version)
            || self.store.was_aborted(owner, name, version)
        {
            remove_file_logged(&dest);
        }
        Ok(())
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            remove_file_logged(&tmp);
        }
    }
}

/// A stored chunk being read. Yields the data in blocks and checks the
/// checksum when the last block has been read.
pub struct ChunkReader {
    file: File,
    path: PathBuf,
    remaining: u64,
    hasher: blake3::Hasher,
    trailer: ChunkTrailer,
}

impl ChunkReader {
    pub fn len(&self) -> u64 {
        self.trailer.len
    }

    pub fn is_empty(&self) -> bool {
        self.trailer.len == 0
    }

    pub fn checksum(&self) -> Checksum {
        self.trailer.checksum
    }

    /// The next block of data; `Ok(None)` after the last one, once the checksum
    /// has verified. A mismatch is `Error::Corrupt`.
    pub fn next_block(&mut self) -> Result<Option<Bytes>> {
        if self.remaining == 0 {
            return if checksum_of(&self.hasher) == self.trailer.checksum {
                Ok(None)
            } else {
                Err(Error::Corrupt {
                    chunk: self.trailer.chunk,
                    reason: format!("checksum mismatch in {}", self.path.display()),
                })
            };
        }
        let want = self.remaining.min(MAX_BLOCK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        self.file.read_exact(&mut buf).map_err(|e| Error::Corrupt {
            chunk: self.trailer.chunk,
            reason: format!("reading {}: {e}", self.path.display()),
        })?;
        self.hasher.update(&buf);
        self.remaining -= want as u64;
        Ok(Some(buf.freeze()))
    }
}

fn read_trailer(file: &mut File) -> std::result::Result<ChunkTrailer, String> {
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    if file_len < 12 {
        return Err("chunk file too short".into());
    }
    let mut end = [0u8; 12];
    file.seek(SeekFrom::Start(file_len - 12))
        .and_then(|_| file.read_exact(&mut end))
        .map_err(|e| e.to_string())?;
    if &end[4..] != CHUNK_MAGIC {
        return Err("chunk file has no trailer (truncated?)".into());
    }
    let trailer_len = u32::from_le_bytes(end[..4].try_into().expect("4 bytes"));
    if trailer_len > MAX_TRAILER || u64::from(trailer_len) + 12 > file_len {
        return Err("chunk trailer length is out of range".into());
    }
    let mut body = vec![0u8; trailer_len as usize];
    file.seek(SeekFrom::Start(file_len - 12 - u64::from(trailer_len)))
        .and_then(|_| file.read_exact(&mut body))
        .map_err(|e| e.to_string())?;
    let trailer: ChunkTrailer = codec::decode(&body).map_err(|e| e.to_string())?;
    if trailer.len + u64::from(trailer_len) + 12 != file_len {
        return Err("chunk file length does not match its trailer".into());
    }
    Ok(trailer)
}

fn read_manifest(path: &Path) -> Result<Option<StoredManifest>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let corrupt = |why: &str| Error::Internal(format!("{}: {why}", path.display()));
    if bytes.len() < 40 || &bytes[..8] != MANIFEST_MAGIC {
        return Err(corrupt("not a manifest"));
    }
    let (sum, body) = bytes[8..].split_at(32);
    if blake3::hash(body).as_bytes() != sum {
        return Err(corrupt("manifest checksum mismatch"));
    }
    codec::decode(body).map(Some)
}

/// `<gen:016x>-<writer:016x>.<chunk>` → (version, chunk).
fn parse_chunk_file_name(name: &std::ffi::OsStr) -> Option<(Version, u32)> {
    let name = name.to_str()?;
    let (version, chunk) = name.split_once('.')?;
    let (gen, writer) = version.split_once('-')?;
    if gen.len() != 16 || writer.len() != 16 {
        return None;
    }
    let version = Version {
        gen: u64::from_str_radix(gen, 16).ok()?,
        writer: u64::from_str_radix(writer, 16).ok()?,
    };
    Some((version, chunk.parse().ok()?))
}

/// Renames and then syncs the destination folder, so the rename survives a crash.
fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| Error::io(format!("renaming into {}", to.display()), e))?;
    match to.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Syncs a folder, so the renames into it survive a crash.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("listing {}", dir.display()), e)),
    }
}

fn remove_file_logged(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove file");
        }
    }
}

/// Removes a temp file unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_file_logged(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, version: Version, chunk: u32, size: u64) -> ChunkSpec {
        ChunkSpec {
            owner: "alice".into(),
            name: name.into(),
            version,
            chunk,
            chunks: 4,
            size,
        }
    }

    /// Stores all four chunks of `data` and commits them.
    fn put(store: &Arc<Store>, name: &str, data: &[u8], version: Version) -> Manifest {
        let mut checksums = Vec::new();
        for chunk in 1..=4 {
            let s = spec(name, version, chunk, data.len() as u64);
            let (start, end) = chunk_range(data.len() as u64, 4, chunk);
            let bytes = &data[start as usize..end as usize];
            let mut h = s.id().hasher();
            h.update(bytes);
            let sum = checksum_of(&h);
            let mut w = store.begin_chunk(s).unwrap();
            w.write(bytes).unwrap();
            w.finish(sum).unwrap();
            checksums.push(sum);
        }
        let manifest = Manifest {
            name: name.into(),
            version,
            size: data.len() as u64,
            chunks: 4,
            checksums,
            stored_at: 0,
            md5: [0; 16],
            deleted: false,
        };
        assert!(store.commit("alice", manifest.clone()).unwrap());
        manifest
    }

    fn read_all(store: &Store, name: &str, version: Version, chunk: u32) -> Result<Vec<u8>> {
        let mut r = store.open_chunk("alice", name, version, chunk)?;
        let mut out = Vec::new();
        while let Some(b) = r.next_block()? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    #[test]
    fn store_commit_read_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let v1 = Version { gen: 1, writer: 9 };
        put(&store, "f.bin", b"hello world", v1);
        assert_eq!(read_all(&store, "f.bin", v1, 1).unwrap(), b"hel");
        assert_eq!(store.list("alice")[0].held, vec![1, 2, 3, 4]);
        assert!(store.list("bob").is_empty());

        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(read_all(&store, "f.bin", v1, 4).unwrap(), b"ld");
        assert_eq!(store.stats().bytes, 11);
    }

    #[test]
    fn a_newer_version_replaces_and_an_older_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (v1, v2) = (Version { gen: 1, writer: 0 }, Version { gen: 2, writer: 0 });
        put(&store, "f", b"first version", v1);
        let m2 = put(&store, "f", b"second", v2);
        assert_eq!(read_all(&store, "f", v2, 1).unwrap(), b"se");
        // The replaced version stays readable for reads under way...
        assert_eq!(read_all(&store, "f", v1, 1).unwrap(), b"firs");
        // ...until its grace period is over.
        assert_eq!(store.expire_retired(Duration::ZERO), 1);
        assert!(read_all(&store, "f", v1, 1).is_err());
        let mut stale = m2.clone();
        stale.version = v1;
        assert!(!store.commit("alice", stale).unwrap());
        // Only v2's four chunk files and the manifest remain.
        let files = fs::read_dir(store.file_dir("alice", "f")).unwrap().count();
        assert_eq!(files, 5);
    }

    #[test]
    fn corruption_and_truncation_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let v = Version { gen: 5, writer: 5 };
        put(&store, "f", &[42u8; 4000], v);
        let path = store.chunk_path("alice", "f", v, 2);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_all(&store, "f", v, 2),
            Err(Error::Corrupt { .. })
        ));

        let path = store.chunk_path("alice", "f", v, 3);
        let len = fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        assert!(matches!(
            read_all(&store, "f", v, 3),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn an_abandoned_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let v = Version { gen: 1, writer: 1 };
        let mut w = store.begin_chunk(spec("f", v, 1, 100)).unwrap();
        w.write(&[1; 10]).unwrap();
        assert!(w.write(&[1; 100]).is_err(), "more than the chunk's length");
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        let w = store.begin_chunk(spec("f", v, 1, 100)).unwrap();
        assert!(w.finish(Checksum([0; 32])).is_err(), "short chunk");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    /// A chunk of `data`'s `chunk`, written but not finished, and its checksum.
    fn staged(
        store: &Arc<Store>,
        name: &str,
        data: &[u8],
        v: Version,
        chunk: u32,
    ) -> (ChunkWriter, Checksum) {
        let s = spec(name, v, chunk, data.len() as u64);
        let (start, end) = chunk_range(data.len() as u64, 4, chunk);
        let bytes = &data[start as usize..end as usize];
        let mut h = s.id().hasher();
        h.update(bytes);
        let mut w = store.begin_chunk(s).unwrap();
        w.write(bytes).unwrap();
        (w, checksum_of(&h))
    }

    /// Chunk files of `version` of `name` on disk.
    fn on_disk(store: &Store, name: &str, version: Version) -> usize {
        read_dir(&store.file_dir("alice", name))
            .unwrap()
            .iter()
            .filter(|e| parse_chunk_file_name(&e.file_name()).is_some_and(|(v, _)| v == version))
            .count()
    }

    #[test]
    fn an_aborted_upload_leaves_no_chunk_and_a_committed_version_is_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let (v1, v2, v3) = (
            Version { gen: 1, writer: 0 },
            Version { gen: 2, writer: 0 },
            Version { gen: 3, writer: 0 },
        );
        let data = b"the first version";
        put(&store, "f", data, v1);
        // v2: two chunks stored, one still being received, then abandoned.
        for chunk in [1, 2] {
            let (w, sum) = staged(&store, "f", b"second", v2, chunk);
            w.finish(sum).unwrap();
        }
        let (late, late_sum) = staged(&store, "f", b"second", v2, 3);
        assert_eq!(on_disk(&store, "f", v2), 2);
        assert_eq!(store.abort("alice", "f", v2).unwrap(), 2);
        assert_eq!(on_disk(&store, "f", v2), 0);
        // The chunk that lands after the abort goes as it lands.
        late.finish(late_sum).unwrap();
        assert_eq!(on_disk(&store, "f", v2), 0);
        // The committed version is untouched, and an abort of it does nothing.
        assert_eq!(store.abort("alice", "f", v1).unwrap(), 0);
        assert_eq!(on_disk(&store, "f", v1), 4);
        assert_eq!(read_all(&store, "f", v1, 1).unwrap(), b"the f");
        assert_eq!(store.manifest("alice", "f").unwrap().version, v1);
        // Nor does an abort of an older version once a newer one is committed.
        put(&store, "f", b"third", v3);
        assert_eq!(store.abort("alice", "f", v3).unwrap(), 0);
        assert_eq!(on_disk(&store, "f", v3), 4);
        // A name never committed: its staged chunks go too.
        let (w, sum) = staged(&store, "new", b"never committed", v2, 4);
        w.finish(sum).unwrap();
        assert_eq!(store.abort("alice", "new", v2).unwrap(), 1);
        assert_eq!(on_disk(&store, "new", v2), 0);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
