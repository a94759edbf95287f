//! One server's storage: the metadata database and the chunks.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/
//!   meta.redb                              the metadata database (tables below)
//!   wal.log                                the write-ahead log (see `wal`)
//!   volumes/<id:08x>.vol                   small chunks, packed (see `volume`)
//!   tmp/                                   large chunks being written; emptied at start
//!   partial/<owner>/<file-id>/<gen>-<writer>.<chunk>   large chunks of uploads, being
//!                                          written or cut off (kept for `put -c`; see below)
//!   quarantine/                            copies that failed their checks
//!   users/<owner>/<file-id>/<gen>-<writer>.<chunk>   large chunks (see `chunk`)
//! ```
//!
//! # Tables (redb: ordered keys, one writer, many readers, crash-safe commits)
//!
//! | table | key | value |
//! |---|---|---|
//! | `files` | (owner, name) | the file's current `Manifest` (or tombstone), bincode |
//! | `data` | (owner, data name, gen, writer) | `DataRow`: how many live manifests share this data (a PUT's; `mv` and `cp` share it), its size, chunks and checksums |
//! | `chunk_rows` | (owner, data name, gen, writer, chunk) | `ChunkRow`: length, checksum, and for a small chunk (≤ `inline_max`) its volume and offset |
//! | `block_values` | (owner, data name, gen, writer, chunk) | a chunk's block values, when it has more than one block (see `crate::blocks`): so a range of it is read and checked alone |
//! | `volumes` | volume | its live bytes (the rest is dead space, see `compact_volumes`) |
//! | `missing_copies` | (owner, data name, gen, writer, chunk) | chunks the placement gives this server that it lacks |
//! | `surplus_copies` | (owner, data name, gen, writer, chunk) | chunks it holds that the placement no longer gives it |
//! | `bucket_index` | (bucket, owner, name) | every file, by digest bucket (see `digest`) |
//! | `digests` | 0 = root, 1 + group, 65 536 + bucket | XOR digest of the live files there |
//! | `retired_data` | (owner, name) | the data a file's overwrite left with no manifest, kept for reads under way: `Retired` (data name, version, when) |
//! | `tombstones` | (gen, owner, name) | tombstones by age, for their collection |
//! | `hints` | (server, owner, name) | files a writer could not give that server copies of |
//! | `staged` | (owner, name, gen, writer) | an upload not committed yet: when its last chunk arrived (see `collect_staged`) |
//! | `usage`, `usage_versions` | owner; (owner, data name, gen, writer) | what each user uses, and the uploads and retired data counted in it (see `usage`) |
//! | `state` | `user/NAME` | cluster state every server keeps whole: a user's record, JSON (see `accounts`) |
//! | `meta` | name | `format`, `placement` (the ring's ids, this server's position, copies `k`), `counts`, `tidy` (legacy manifests left to remove), `log_seq` (the last write-ahead log record a durable commit holds) |
//!
//! A file's chunks are keyed by its *data*: the name and version of the PUT
//! that wrote them (`Manifest::data_name`, `data_version`), which a rename
//! or copy keeps, so neither moves a byte; `data` counts the manifests that
//! share each, and the chunks go when none is left.
//!
//! Keys are ordered, so one user's files list by a range scan, page by page;
//! nothing is held whole in memory and nothing is scanned at start. Whatever
//! the healer needs is kept up to date by the operation that changes it: a
//! commit, a stored chunk, a quarantine, a ring change (`set_layout`) update
//! `missing`, `surplus` and the digests in the same transaction.
//!
//! # Partial chunks
//!
//! A large chunk of a client's upload (`PutChunk`) is written to its
//! partial file, renamed into `users/` once whole and checked. If its
//! stream is cut (Ctrl-C, a killed client, a dropped connection) the bytes
//! that arrived stay there, so the client can continue with `put -c`:
//! `ChunkPrefix` reports how many are kept and their checksum (read again
//! from disk), and `PutChunkFrom` continues after them, re-reading them to
//! seed the whole chunk's checksum, which `ChunkDone` still checks. One
//! writer or reader holds a partial at a time ([`Store::claim_partial`]).
//! Unlike `tmp/`, `partial/` survives a restart (the upload's `staged` row
//! does too). Partials go with their upload: by `Abort`, by the commit of
//! that version or a newer one, and by the collection of uploads left
//! uncommitted for `upload_grace_secs` (`collect_staged`), which also
//! removes any partial untouched for that long (one whose row went in a
//! crash, say).
//!
//! # Durability and group commit
//!
//! Every change is committed before the caller hears "done", and one
//! thread owns the writing: it takes every change queued while the
//! previous commit was syncing and commits them together, so concurrent
//! small PUTs share one sync. The hot changes (small chunks received, with
//! their bytes; manifests committed) are made durable by the write-ahead
//! log (see `wal`): appended and synced, then committed without a sync of
//! the database. Every other change, and a checkpoint every second, is a
//! durable commit with quick repair on (the allocator state is saved with
//! it), so a killed server reopens in moments whatever its size, and
//! applies what its log holds past the checkpoint. A large chunk's file is
//! synced and renamed into place before its row is written; a small
//! chunk's bytes are appended to the active volume, which is synced before
//! a durable commit (the log holds the bytes until then).

mod chunk;
pub mod digest;
mod migrate;
mod usage;
mod volume;
mod wal;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use chunk::remove_file_logged;
pub use chunk::{
    file_dir, partial_dir, Busy, ChunkReader, ChunkSpec, ChunkTrailer, ChunkWriter, Sealed,
    MAX_CHUNKS,
};
use digest::{bucket_of, entry_digest, group_of, xor_into, Digest, FANOUT};
pub use usage::Usage;
use volume::{Appender, Volumes};
use wal::{Change, Log, LoggedChunk};

use crate::blocks::{BlockHasher, BlockValue};
use crate::codec;
use crate::error::{shown, Error, Result};
use crate::names::{validate_name, validate_user};
use crate::placement::Placement;
use crate::protocol::{
    checksum_of, Checksum, ChunkId, DirEntry, FileDigest, FileEntry, Manifest, SyncEntry, Version,
    SMALL_FILE,
};
use crate::ring::Id;

type FileKey = (&'static str, &'static str);
type ChunkKey = (&'static str, &'static str, u64, u64, u32);
/// (owner, data name, gen, writer): one PUT's data.
type DataKey = (&'static str, &'static str, u64, u64);
/// (owner, name, gen, writer): a version with chunks here and no commit yet.
type StagedKey = (&'static str, &'static str, u64, u64);

const FILES: TableDefinition<FileKey, &[u8]> = TableDefinition::new("files");
const CHUNKS: TableDefinition<ChunkKey, &[u8]> = TableDefinition::new("chunk_rows");
/// A large chunk's block values (see `blocks`), 32 bytes each, in order.
const BLOCKS: TableDefinition<ChunkKey, &[u8]> = TableDefinition::new("block_values");
const VOLUMES: TableDefinition<u32, u64> = TableDefinition::new("volumes");
const DATA: TableDefinition<DataKey, &[u8]> = TableDefinition::new("data");
const MISSING: TableDefinition<ChunkKey, ()> = TableDefinition::new("missing_copies");
const SURPLUS: TableDefinition<ChunkKey, ()> = TableDefinition::new("surplus_copies");
const BUCKETS: TableDefinition<(u16, &str, &str), ()> = TableDefinition::new("bucket_index");
const DIGESTS: TableDefinition<u32, Digest> = TableDefinition::new("digests");
const RETIRED: TableDefinition<FileKey, &[u8]> = TableDefinition::new("retired_data");
const TOMBSTONES: TableDefinition<(u64, &str, &str), u64> = TableDefinition::new("tombstones");
/// The `meta` key of the layout. (Releases before consistent hashing kept
/// ring size and position under `layout`; it is ignored, so their stores
/// recompute what each server should hold, and heal to it.)
const LAYOUT: &str = "placement";
const HINTS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("hints");
const STAGED: TableDefinition<StagedKey, u64> = TableDefinition::new("staged");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");

/// The database file under the data folder.
pub const DB_FILE: &str = "meta.redb";
/// The current layout of the data folder; a folder without it is migrated.
const FORMAT: &[u8] = b"8";
/// In `meta` while a migrated folder's legacy manifests may remain.
const TIDY: &str = "tidy";
/// Changes committed together at most.
const MAX_BATCH: usize = 512;
/// The `meta` key of the last write-ahead log record a durable commit holds.
const LOG_SEQ: &str = "log_seq";
/// How long changes may stay in the log alone before a checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How large the log may grow before a checkpoint.
const LOG_MAX: u64 = 64 << 20;
const ROOT_KEY: u32 = 0;

fn group_key(group: u8) -> u32 {
    1 + u32::from(group)
}

fn bucket_key(bucket: u16) -> u32 {
    0x1_0000 + u32::from(bucket)
}

/// How a server tunes its store (`[store]` in its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tuning {
    /// Chunks of at most this many bytes are packed into volume files, not
    /// kept in a file of their own.
    pub inline_max: u64,
    /// A volume file is sealed, and the next one started, at this size.
    pub volume_max: u64,
    /// Memory the database may use to cache pages.
    pub cache_mib: u64,
    /// The background scrub re-reads at most this many bytes a second (a
    /// chunk counts as at least 64 KiB, so small ones do not flood it); 0
    /// turns it off.
    pub scrub_bytes_per_sec: u64,
    /// A tombstone is kept at least this long, so a commit of an older
    /// version still on its way cannot bring the file back.
    pub tombstone_grace_secs: u64,
    /// Chunks of an upload never committed (cancelled, or its client died)
    /// are removed once none of them has arrived for this long.
    pub upload_grace_secs: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            inline_max: 64 << 10,
            volume_max: 64 << 20,
            cache_mib: 16,
            scrub_bytes_per_sec: 4 << 20,
            tombstone_grace_secs: 3600,
            upload_grace_secs: 3600,
        }
    }
}

/// A stored chunk's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkRow {
    len: u64,
    checksum: Checksum,
    /// Packed: (volume, offset). Else a file of its own.
    at: Option<(u32, u64)>,
}

/// One PUT's data: how many live manifests share it, and what it is (the
/// healer fetches and checks its chunks by this, whatever names it has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRow {
    /// Live manifests sharing it here; 0 while it is only kept as retired.
    pub refs: u32,
    pub size: u64,
    pub chunks: u32,
    pub checksums: Vec<Checksum>,
}

impl DataRow {
    fn of(m: &Manifest) -> DataRow {
        DataRow {
            refs: 0,
            size: m.size,
            chunks: m.chunks,
            checksums: m.checksums.clone(),
        }
    }

    /// Whether `m` describes this data as it is.
    fn describes(&self, m: &Manifest) -> bool {
        self.size == m.size && self.chunks == m.chunks && self.checksums == m.checksums
    }
}

/// The data an overwrite left without a manifest, kept for a grace period
/// so reads already under way finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Retired {
    data_name: String,
    version: Version,
    /// When it was retired (ms since the epoch).
    at: u64,
}

/// Totals kept as things change, for STATUS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Live files (tombstones not counted).
    pub files: u64,
    /// Chunk copies stored, of any version (committed, retired or not yet committed).
    pub chunks: u64,
    pub bytes: u64,
    /// Chunks the placement gives this server that it lacks.
    pub missing: u64,
    /// Tombstones kept.
    pub tombstones: u64,
}

/// The ring as placement sees it from this server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// The members' ids, ascending (ring order).
    pub ring: Vec<Id>,
    /// This server's position (1-based), if it is a member.
    pub pos: Option<u32>,
    /// Copies of every chunk.
    pub k: u32,
}

impl Layout {
    /// The chunks of `owner`'s `name` (of `chunks`) this server should hold.
    pub fn wanted(&self, owner: &str, name: &str, chunks: u32) -> Vec<u32> {
        match self.pos {
            Some(pos) => Placement::of(owner, name).chunks_held(&self.ring, pos, chunks, self.k),
            None => Vec::new(),
        }
    }
}

/// A chunk copy: whose, which data (the name and version it was written
/// under), which chunk.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CopyId {
    pub owner: String,
    pub name: String,
    pub version: Version,
    pub chunk: u32,
}

impl CopyId {
    /// How `verify` names a bad copy.
    pub fn bad_line(&self, error: &Error) -> String {
        format!(
            "BAD  {}/{} chunk {}: {error}",
            self.owner, self.name, self.chunk
        )
    }

    fn from_key((owner, name, gen, writer, chunk): (&str, &str, u64, u64, u32)) -> CopyId {
        CopyId {
            owner: owner.to_string(),
            name: name.to_string(),
            version: Version { gen, writer },
            chunk,
        }
    }

    fn key(&self) -> (&str, &str, u64, u64, u32) {
        (
            &self.owner,
            &self.name,
            self.version.gen,
            self.version.writer,
            self.chunk,
        )
    }
}

enum Db {
    Write(Database),
    Read(ReadOnlyDatabase),
}

impl Db {
    fn read(&self) -> Result<ReadTransaction> {
        Ok(match self {
            Db::Write(db) => db.begin_read()?,
            Db::Read(db) => db.begin_read()?,
        })
    }
}

/// Why a shared transaction did not commit, as each of its changes hears
/// it: a full disk stays [`Error::NoSpace`], which callers act on.
#[derive(Debug, Clone)]
enum Failed {
    NoSpace,
    Other(String),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        match e {
            Error::NoSpace => Failed::NoSpace,
            e => Failed::Other(e.to_string()),
        }
    }
}

impl From<Failed> for Error {
    fn from(f: Failed) -> Self {
        match f {
            Failed::NoSpace => Error::NoSpace,
            Failed::Other(e) => Error::Internal(e),
        }
    }
}

/// One change, run by the writer thread inside a shared transaction.
trait Job: Send {
    fn run(&mut self, t: &mut Tables<'_>) -> Result<()>;
    /// The change encoded for the write-ahead log, if it is one the log
    /// carries (see `wal`); a batch of such changes commits without a sync.
    fn record(&self) -> Option<&[u8]>;
    /// Called once the transaction has committed (or failed).
    fn finish(self: Box<Self>, committed: std::result::Result<(), Failed>);
}

struct Op<T, F> {
    op: Option<F>,
    record: Option<Vec<u8>>,
    out: Option<T>,
    reply: mpsc::SyncSender<Result<T>>,
}

impl<T: Send, F: FnOnce(&mut Tables<'_>) -> Result<T> + Send> Job for Op<T, F> {
    fn run(&mut self, t: &mut Tables<'_>) -> Result<()> {
        let op = self.op.take().expect("a job runs once");
        self.out = Some(op(t)?);
        Ok(())
    }

    fn record(&self) -> Option<&[u8]> {
        self.record.as_deref()
    }

    fn finish(self: Box<Self>, committed: std::result::Result<(), Failed>) {
        let result = match (committed, self.out) {
            (Ok(()), Some(out)) => Ok(out),
            (Err(e), _) => Err(e.into()),
            (Ok(()), None) => Err(Error::Internal("a change was not applied".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// Every table, open in one write transaction, and the totals.
struct Tables<'t> {
    files: Table<'t, FileKey, &'static [u8]>,
    chunks: Table<'t, ChunkKey, &'static [u8]>,
    blocks: Table<'t, ChunkKey, &'static [u8]>,
    /// Live bytes per volume.
    volumes: Table<'t, u32, u64>,
    data: Table<'t, DataKey, &'static [u8]>,
    missing: Table<'t, ChunkKey, ()>,
    surplus: Table<'t, ChunkKey, ()>,
    buckets: Table<'t, (u16, &'static str, &'static str), ()>,
    digests: Table<'t, u32, Digest>,
    retired: Table<'t, FileKey, &'static [u8]>,
    tombstones: Table<'t, (u64, &'static str, &'static str), u64>,
    hints: Table<'t, (&'static str, &'static str, &'static str), ()>,
    staged: Table<'t, StagedKey, u64>,
    meta: Table<'t, &'static str, &'static [u8]>,
    counts: Stats,
    layout: Option<Layout>,
    /// Chunk files to remove once the transaction has committed.
    trash: Vec<PathBuf>,
    /// Volumes emptied by this transaction, to remove once it has committed.
    emptied: Vec<u32>,
    root: &'t Path,
    appender: &'t mut Appender,
    txn: &'t WriteTransaction,
}

impl<'t> Tables<'t> {
    fn open(
        txn: &'t WriteTransaction,
        root: &'t Path,
        appender: &'t mut Appender,
    ) -> Result<Tables<'t>> {
        let meta = txn.open_table(META)?;
        let counts = read_meta(&meta, "counts")?.unwrap_or_default();
        let layout = read_meta(&meta, LAYOUT)?;
        Ok(Tables {
            files: txn.open_table(FILES)?,
            chunks: txn.open_table(CHUNKS)?,
            blocks: txn.open_table(BLOCKS)?,
            volumes: txn.open_table(VOLUMES)?,
            data: txn.open_table(DATA)?,
            missing: txn.open_table(MISSING)?,
            surplus: txn.open_table(SURPLUS)?,
            buckets: txn.open_table(BUCKETS)?,
            digests: txn.open_table(DIGESTS)?,
            retired: txn.open_table(RETIRED)?,
            tombstones: txn.open_table(TOMBSTONES)?,
            hints: txn.open_table(HINTS)?,
            staged: txn.open_table(STAGED)?,
            meta,
            counts,
            layout,
            trash: Vec::new(),
            emptied: Vec::new(),
            root,
            appender,
            txn,
        })
    }

    fn save(&mut self) -> Result<()> {
        let counts = codec::encode(&self.counts)?;
        self.meta.insert("counts", counts.as_slice())?;
        Ok(())
    }

    fn current(&self, owner: &str, name: &str) -> Result<Option<Manifest>> {
        match self.files.get((owner, name))? {
            Some(bytes) => Ok(Some(codec::decode(bytes.value())?)),
            None => Ok(None),
        }
    }

    /// Replaces the file's entry (`old` → `new`, either may be absent),
    /// keeping the bucket index, the digests and the tombstone index in step.
    fn set_entry(
        &mut self,
        owner: &str,
        name: &str,
        old: Option<&Manifest>,
        new: Option<&Manifest>,
    ) -> Result<()> {
        usage::entry(self, owner, name, old, new)?;
        let bucket = bucket_of(owner, name);
        let mut change = [0u8; 16];
        for m in [old, new].into_iter().flatten() {
            if !m.deleted {
                xor_into(&mut change, &entry_digest(owner, name, m.version));
            }
        }
        if change != [0u8; 16] {
            for key in [ROOT_KEY, group_key(group_of(bucket)), bucket_key(bucket)] {
                let mut d = self.digests.get(key)?.map(|g| g.value()).unwrap_or([0; 16]);
                xor_into(&mut d, &change);
                self.digests.insert(key, d)?;
            }
        }
        if let Some(m) = old {
            if m.deleted {
                self.tombstones.remove((m.version.gen, owner, name))?;
                self.counts.tombstones -= 1;
            } else {
                self.counts.files -= 1;
            }
        }
        match new {
            Some(m) => {
                self.files
                    .insert((owner, name), codec::encode(m)?.as_slice())?;
                self.buckets.insert((bucket, owner, name), ())?;
                if m.deleted {
                    self.tombstones
                        .insert((m.version.gen, owner, name), m.version.writer)?;
                    self.counts.tombstones += 1;
                } else {
                    self.counts.files += 1;
                }
            }
            None => {
                self.files.remove((owner, name))?;
                self.buckets.remove((bucket, owner, name))?;
            }
        }
        Ok(())
    }

    /// Every stored chunk of the file: (version, chunk, record).
    fn copies(&self, owner: &str, name: &str) -> Result<Vec<(Version, u32, ChunkRow)>> {
        let range = self
            .chunks
            .range((owner, name, 0, 0, 0)..=(owner, name, u64::MAX, u64::MAX, u32::MAX))?;
        let mut out = Vec::new();
        for item in range {
            let (key, value) = item?;
            let (_, _, gen, writer, chunk) = key.value();
            out.push((
                Version { gen, writer },
                chunk,
                codec::decode(value.value())?,
            ));
        }
        Ok(out)
    }

    fn held(&self, owner: &str, name: &str, version: Version) -> Result<Vec<u32>> {
        held_in(&self.chunks, owner, name, version)
    }

    /// Records a copy: `data` (a small chunk's bytes) is appended to the
    /// active volume first; without it the copy is a file already in place.
    /// A received chunk's row (see [`Store::record_chunk`]): dropped when
    /// its version is no newer than the current one, or was given up.
    /// Applies a change the write-ahead log carries, as it was first made
    /// and as a replay makes it again. Returns how many manifests applied.
    fn apply(
        &mut self,
        change: &Change,
        aborted: &Mutex<VecDeque<(String, String, Version)>>,
    ) -> Result<usize> {
        match change {
            Change::Chunks(chunks) => {
                for c in chunks {
                    let parts = (&c.spec, c.checksum, c.values.as_slice(), Some(&c.data[..]));
                    self.record_copy(parts, aborted)?;
                }
                Ok(0)
            }
            Change::Commits(manifests) => {
                let mut applied = 0;
                // Live manifests first: a move's new name takes its share of the
                // data before the old name's tombstone lets go of it.
                let (live, gone): (Vec<_>, Vec<_>) =
                    manifests.iter().partition(|(_, m)| m.has_data());
                for (owner, m) in live.into_iter().chain(gone) {
                    applied += usize::from(self.commit(owner, m, now_ms())?);
                }
                Ok(applied)
            }
        }
    }

    fn record_copy(
        &mut self,
        (spec, checksum, values, data): (&ChunkSpec, Checksum, &[BlockValue], Option<&[u8]>),
        aborted: &Mutex<VecDeque<(String, String, Version)>>,
    ) -> Result<()> {
        if let Some(row) = self.data_row(&spec.owner, &spec.name, spec.version)? {
            // Data a manifest shares (or retired): a heal's copy.
            self.insert_copy(spec, checksum, data, values)?;
            return self.refresh_wants(&spec.owner, &spec.name, spec.version, Some(&row));
        }
        let current = self.current(&spec.owner, &spec.name)?;
        let given_up = aborted
            .lock()
            .expect("aborted lock")
            .iter()
            .any(|(o, n, v)| *o == spec.owner && *n == spec.name && *v == spec.version);
        if given_up || current.as_ref().is_some_and(|m| m.version >= spec.version) {
            if data.is_none() {
                self.trash.push(chunk_path(
                    self.root,
                    &spec.owner,
                    &spec.name,
                    spec.version,
                    spec.chunk,
                ));
            }
            return Ok(());
        }
        self.insert_copy(spec, checksum, data, values)?;
        self.stage(&spec.owner, &spec.name, spec.version)?;
        usage::upload(self, &spec.owner, &spec.name, spec.version, spec.size)
    }

    fn insert_copy(
        &mut self,
        spec: &ChunkSpec,
        checksum: Checksum,
        data: Option<&[u8]>,
        values: &[BlockValue],
    ) -> Result<()> {
        // A chunk of one block has none (and never had: its length is fixed).
        if !values.is_empty() {
            self.blocks.insert(spec.key(), values.concat().as_slice())?;
        }
        let at = match data {
            Some(data) => Some(self.appender.append(data)?),
            None => None,
        };
        let row = ChunkRow {
            len: spec.chunk_len(),
            checksum,
            at,
        };
        self.put_row(spec.key(), &row)
    }

    /// Writes a copy's row, replacing (and unaccounting) any earlier one.
    fn put_row(&mut self, key: (&str, &str, u64, u64, u32), row: &ChunkRow) -> Result<()> {
        let old: Option<ChunkRow> = match self.chunks.insert(key, codec::encode(row)?.as_slice())? {
            Some(old) => Some(codec::decode(old.value())?),
            None => None,
        };
        if let Some(old) = old {
            self.unaccount(&old)?;
        }
        self.counts.chunks += 1;
        self.counts.bytes += row.len;
        if let Some((vol, _)) = row.at {
            self.add_live(vol, row.len, true)?;
        }
        Ok(())
    }

    /// Adds `len` to (or takes it from) a volume's live bytes.
    fn add_live(&mut self, vol: u32, len: u64, add: bool) -> Result<()> {
        let live = self.volumes.get(vol)?.map_or(0, |l| l.value());
        let live = if add {
            live + len
        } else {
            live.saturating_sub(len)
        };
        self.volumes.insert(vol, live)?;
        Ok(())
    }

    /// Takes a copy that is no longer recorded out of the totals.
    fn unaccount(&mut self, row: &ChunkRow) -> Result<()> {
        self.counts.chunks -= 1;
        self.counts.bytes -= row.len;
        if let Some((vol, _)) = row.at {
            self.add_live(vol, row.len, false)?;
        }
        Ok(())
    }

    /// Forgets a stored copy; its file (if any) goes after the commit unless
    /// `keep_file`. Returns whether there was one.
    fn remove_copy(
        &mut self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
        keep_file: bool,
    ) -> Result<bool> {
        let key = (owner, name, version.gen, version.writer, chunk);
        let row: ChunkRow = match self.chunks.remove(key)? {
            Some(row) => codec::decode(row.value())?,
            None => return Ok(false),
        };
        self.blocks.remove(key)?;
        self.unaccount(&row)?;
        if row.at.is_none() && !keep_file {
            self.trash
                .push(chunk_path(self.root, owner, name, version, chunk));
        }
        Ok(true)
    }

    /// Moves a packed chunk from `vol` at `offset` to the active volume, if
    /// its row still points there.
    fn move_packed(&mut self, id: &CopyId, vol: u32, offset: u64) -> Result<()> {
        let row: ChunkRow = match self.chunks.get(id.key())? {
            Some(row) => codec::decode(row.value())?,
            None => return Ok(()),
        };
        if row.at != Some((vol, offset)) {
            return Ok(());
        }
        let data = self
            .appender
            .volumes()
            .read(vol, offset, row.len)
            .map_err(|e| Error::io(format!("reading volume {vol:08x}"), e))?
            .ok_or_else(|| Error::Internal(format!("volume {vol:08x} is missing")))?;
        // Damaged bytes move as they are: the scrub or a read finds them.
        let at = self.appender.append(&data)?;
        let moved = ChunkRow {
            at: Some(at),
            ..row
        };
        self.put_row(id.key(), &moved)
    }

    /// Removes, once the transaction has committed, the partial chunk files
    /// of uploads of `owner`'s `name` whose version `which` picks.
    fn trash_partials(
        &mut self,
        owner: &str,
        name: &str,
        which: impl Fn(Version) -> bool,
    ) -> Result<()> {
        for entry in chunk::read_dir(&partial_dir(self.root, owner, name))? {
            if chunk::parse_chunk_file_name(&entry.file_name()).is_some_and(|(v, _)| which(v)) {
                self.trash.push(entry.path());
            }
        }
        Ok(())
    }

    /// Notes that an upload of `version` is under way (or refreshes when).
    fn stage(&mut self, owner: &str, name: &str, version: Version) -> Result<()> {
        self.staged
            .insert((owner, name, version.gen, version.writer), now_ms())?;
        Ok(())
    }

    /// Forgets the uploads of the file up to `version` (committed or outdated).
    fn unstage(&mut self, owner: &str, name: &str, version: Version) -> Result<()> {
        let mut done = Vec::new();
        for item in self
            .staged
            .range((owner, name, 0, 0)..=(owner, name, version.gen, version.writer))?
        {
            let (key, _) = item?;
            let (_, _, gen, writer) = key.value();
            done.push((gen, writer));
        }
        for (gen, writer) in done {
            self.staged.remove((owner, name, gen, writer))?;
            usage::forget(self, owner, name, Version { gen, writer })?;
        }
        Ok(())
    }

    /// Recomputes `missing` and `surplus` for all the data live manifests share.
    fn refresh_all_wants(&mut self) -> Result<()> {
        self.missing.retain(|_, ()| false)?;
        self.surplus.retain(|_, ()| false)?;
        self.counts.missing = 0;
        let mut live = Vec::new();
        for item in self.data.iter()? {
            let (key, value) = item?;
            let (owner, name, gen, writer) = key.value();
            let row: DataRow = codec::decode(value.value())?;
            if row.refs > 0 {
                live.push((
                    owner.to_string(),
                    name.to_string(),
                    Version { gen, writer },
                    row,
                ));
            }
        }
        for (owner, name, version, row) in live {
            self.refresh_wants(&owner, &name, version, Some(&row))?;
        }
        Ok(())
    }

    /// The row of `owner`'s data written as `name` at `version`.
    fn data_row(&self, owner: &str, name: &str, version: Version) -> Result<Option<DataRow>> {
        data_row_in(&self.data, owner, name, version)
    }

    fn put_data_row(
        &mut self,
        owner: &str,
        name: &str,
        version: Version,
        row: &DataRow,
    ) -> Result<()> {
        self.data.insert(
            (owner, name, version.gen, version.writer),
            codec::encode(row)?.as_slice(),
        )?;
        Ok(())
    }

    /// Recomputes what this server lacks and holds beyond its share of one
    /// PUT's data (nothing, unless a live manifest shares it).
    fn refresh_wants(
        &mut self,
        owner: &str,
        name: &str,
        version: Version,
        row: Option<&DataRow>,
    ) -> Result<()> {
        let (gen, writer) = (version.gen, version.writer);
        let keys = |t: &Table<'t, ChunkKey, ()>| -> Result<Vec<u32>> {
            let mut out = Vec::new();
            for item in
                t.range((owner, name, gen, writer, 0)..=(owner, name, gen, writer, u32::MAX))?
            {
                out.push(item?.0.value().4);
            }
            Ok(out)
        };
        for chunk in keys(&self.missing)? {
            self.missing.remove((owner, name, gen, writer, chunk))?;
            self.counts.missing -= 1;
        }
        for chunk in keys(&self.surplus)? {
            self.surplus.remove((owner, name, gen, writer, chunk))?;
        }
        let (Some(row), Some(layout)) = (row.filter(|r| r.refs > 0), &self.layout) else {
            return Ok(());
        };
        let wanted = layout.wanted(owner, name, row.chunks);
        let held = self.held(owner, name, version)?;
        for &chunk in wanted.iter().filter(|c| !held.contains(c)) {
            self.missing.insert((owner, name, gen, writer, chunk), ())?;
            self.counts.missing += 1;
        }
        for &chunk in held.iter().filter(|c| !wanted.contains(c)) {
            self.surplus.insert((owner, name, gen, writer, chunk), ())?;
        }
        Ok(())
    }

    /// One more live manifest, `m`, shares its data.
    fn add_ref(&mut self, owner: &str, m: &Manifest) -> Result<()> {
        let (name, version) = (m.data_name(), m.data_version());
        let mut row = self
            .data_row(owner, name, version)?
            .unwrap_or_else(|| DataRow::of(m));
        row.refs += 1;
        self.put_data_row(owner, name, version, &row)?;
        if row.refs == 1 {
            self.refresh_wants(owner, name, version, Some(&row))?;
        }
        Ok(())
    }

    /// One live manifest fewer, `m`, shares its data. Data no manifest
    /// shares any more goes at once, or with `retire_for`, is kept as that
    /// file's retired data for a grace period (an overwrite: reads under way
    /// finish).
    fn drop_ref(
        &mut self,
        owner: &str,
        m: &Manifest,
        retire_for: Option<&str>,
        now_ms: u64,
    ) -> Result<()> {
        let (name, version) = (m.data_name(), m.data_version());
        let Some(mut row) = self.data_row(owner, name, version)? else {
            return Ok(());
        };
        row.refs = row.refs.saturating_sub(1);
        if row.refs > 0 {
            return self.put_data_row(owner, name, version, &row);
        }
        self.refresh_wants(owner, name, version, None)?;
        match retire_for {
            Some(file) => {
                self.put_data_row(owner, name, version, &row)?;
                self.release_retired(owner, file)?;
                let retired = Retired {
                    data_name: name.to_string(),
                    version,
                    at: now_ms,
                };
                self.retired
                    .insert((owner, file), codec::encode(&retired)?.as_slice())?;
                usage::kept(self, owner, name, version, row.size)?;
            }
            None => self.drop_data(owner, name, version)?,
        }
        Ok(())
    }

    /// Forgets the data `file` retired last, and drops it unless a manifest
    /// shares it again.
    fn release_retired(&mut self, owner: &str, file: &str) -> Result<()> {
        let retired: Option<Retired> = match self.retired.remove((owner, file))? {
            Some(r) => Some(codec::decode(r.value())?),
            None => None,
        };
        if let Some(r) = retired {
            usage::forget(self, owner, &r.data_name, r.version)?;
            if self
                .data_row(owner, &r.data_name, r.version)?
                .is_some_and(|row| row.refs == 0)
            {
                self.drop_data(owner, &r.data_name, r.version)?;
            }
        }
        Ok(())
    }

    /// Drops one PUT's data: its row and every copy of it here.
    fn drop_data(&mut self, owner: &str, name: &str, version: Version) -> Result<()> {
        self.data
            .remove((owner, name, version.gen, version.writer))?;
        for chunk in self.held(owner, name, version)? {
            self.remove_copy(owner, name, version, chunk, false)?;
        }
        Ok(())
    }

    /// Makes `manifest` current if it is newer; drops what it outdates.
    fn commit(&mut self, owner: &str, manifest: &Manifest, now_ms: u64) -> Result<bool> {
        let name = manifest.name.as_str();
        let current = self.current(owner, name)?;
        if current
            .as_ref()
            .is_some_and(|c| c.version >= manifest.version)
        {
            return Ok(false);
        }
        self.set_entry(owner, name, current.as_ref(), Some(manifest))?;
        self.unstage(owner, name, manifest.version)?;
        self.trash_partials(owner, name, |v| v <= manifest.version)?;
        // The new reference first: a manifest that shares the data it
        // replaces (a copy over itself) must not drop it.
        if manifest.has_data() {
            self.add_ref(owner, manifest)?;
        }
        if let Some(c) = current.as_ref().filter(|c| c.has_data()) {
            // An overwrite keeps the data it replaces for a grace period, so
            // reads already under way finish; a delete takes it at once.
            let retire = manifest.has_data().then_some(name);
            self.drop_ref(owner, c, retire, now_ms)?;
        }
        if !manifest.has_data() {
            self.release_retired(owner, name)?;
        }
        // Uploads under this name older than the new version that no
        // manifest shares were never committed: they can never be read.
        for (version, chunk, _) in self.copies(owner, name)? {
            if version < manifest.version && self.data_row(owner, name, version)?.is_none() {
                self.remove_copy(owner, name, version, chunk, false)?;
            }
        }
        Ok(true)
    }
}

/// Creates every table a store uses, so readers find them all.
fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(FILES)?;
    txn.open_table(CHUNKS)?;
    txn.open_table(BLOCKS)?;
    txn.open_table(VOLUMES)?;
    txn.open_table(DATA)?;
    txn.open_table(MISSING)?;
    txn.open_table(SURPLUS)?;
    txn.open_table(BUCKETS)?;
    txn.open_table(DIGESTS)?;
    txn.open_table(RETIRED)?;
    txn.open_table(TOMBSTONES)?;
    txn.open_table(HINTS)?;
    txn.open_table(STAGED)?;
    txn.open_table(META)?;
    txn.open_table(STATE)?;
    usage::create(txn)?;
    Ok(())
}

/// A file's line in a listing: its manifest and the chunks held here.
fn file_entry(
    chunks: &impl ReadableTable<ChunkKey, &'static [u8]>,
    owner: &str,
    m: Manifest,
) -> Result<FileEntry> {
    Ok(FileEntry {
        held: held_in(chunks, owner, m.data_name(), m.data_version())?,
        etag: m.etag(),
        name: m.name,
        version: m.version,
        size: m.size,
        chunks: m.chunks,
        stored_at: m.stored_at,
        deleted: m.deleted,
    })
}

/// Refuses `name` (the inner error) if one of the folders on its path is
/// a live file.
fn check_no_file_above(
    files: &impl ReadableTable<FileKey, &'static [u8]>,
    owner: &str,
    name: &str,
) -> Result<Result<()>> {
    for (i, _) in name.match_indices('/') {
        let above = &name[..i];
        if let Some(v) = files.get((owner, above))? {
            if !codec::decode::<Manifest>(v.value())?.deleted {
                return Ok(Err(Error::Refused(format!(
                    "{}: {} is a file, not a folder",
                    shown(name),
                    shown(above)
                ))));
            }
        }
    }
    Ok(Ok(()))
}

/// Refuses a file `name` (the inner error) where a folder of that path
/// has live files or was made with `mkdir`, or under a file.
fn check_free(
    files: &impl ReadableTable<FileKey, &'static [u8]>,
    owner: &str,
    name: &str,
) -> Result<Result<()>> {
    if let Err(refused) = check_no_file_above(files, owner, name)? {
        return Ok(Err(refused));
    }
    if live_within(files, owner, name, true)? {
        return Ok(Err(Error::Refused(format!("{} is a folder", shown(name)))));
    }
    Ok(Ok(()))
}

/// The manifest that marks folder `path` as made with `mkdir` (or, as a
/// tombstone, removed), newer than `after`.
fn folder_mark(path: &str, after: Option<Version>, deleted: bool) -> Manifest {
    Manifest {
        name: format!("{path}/"),
        version: Version::next(after),
        size: 0,
        chunks: 0,
        checksums: Vec::new(),
        stored_at: crate::unix_now(),
        digest: FileDigest::None,
        deleted,
        data: None,
        kept: None,
        meta: None,
    }
}

/// The smallest name after every name inside folder `path` (`path/...`):
/// `/` is followed by `0` in byte order.
fn past(path: &str) -> String {
    format!("{path}0")
}

/// Whether folder `path` holds a live file (not only tombstones), or
/// with `mark`, is a folder made with `mkdir` or holds one.
fn live_within(
    files: &impl ReadableTable<FileKey, &'static [u8]>,
    owner: &str,
    path: &str,
    mark: bool,
) -> Result<bool> {
    let inside = format!("{path}/");
    for item in files.range((owner, inside.as_str())..)? {
        let (key, value) = item?;
        let (o, name) = key.value();
        if o != owner || !name.starts_with(&inside) {
            break;
        }
        if !mark && name == inside {
            continue;
        }
        let m: Manifest = codec::decode(value.value())?;
        if !m.deleted {
            return Ok(true);
        }
    }
    Ok(false)
}

fn data_row_in(
    data: &impl ReadableTable<DataKey, &'static [u8]>,
    owner: &str,
    name: &str,
    v: Version,
) -> Result<Option<DataRow>> {
    match data.get((owner, name, v.gen, v.writer))? {
        Some(row) => Ok(Some(codec::decode(row.value())?)),
        None => Ok(None),
    }
}

fn held_in(
    chunks: &impl ReadableTable<ChunkKey, &'static [u8]>,
    owner: &str,
    name: &str,
    v: Version,
) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for item in chunks
        .range((owner, name, v.gen, v.writer, 0)..=(owner, name, v.gen, v.writer, u32::MAX))?
    {
        out.push(item?.0.value().4);
    }
    Ok(out)
}

fn read_meta<T: serde::de::DeserializeOwned>(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match meta.get(key)? {
        Some(bytes) => Ok(Some(codec::decode(bytes.value())?)),
        None => Ok(None),
    }
}

/// A manifest a store may commit: a valid owner and name, and as many
/// checksums as chunks.
fn check_manifest(owner: &str, manifest: &Manifest) -> Result<()> {
    validate_user(owner)?;
    if let Some(folder) = manifest.name.strip_suffix('/') {
        // A folder made with `mkdir`: no data.
        validate_name(folder)?;
        if manifest.chunks != 0 || manifest.size != 0 {
            return Err(Error::BadRequest("a folder holds no data".into()));
        }
        return Ok(());
    }
    validate_name(&manifest.name)?;
    if let Some(data) = &manifest.data {
        validate_name(&data.name)?;
    }
    if !manifest.deleted
        && (manifest.chunks == 0
            || manifest.chunks > MAX_CHUNKS
            || manifest.checksums.len() != manifest.chunks as usize)
    {
        return Err(Error::BadRequest(
            "manifest's chunk count and checksums disagree".into(),
        ));
    }
    Ok(())
}

fn chunk_path(root: &Path, owner: &str, name: &str, version: Version, chunk: u32) -> PathBuf {
    file_dir(root, owner, name).join(format!(
        "{:016x}-{:016x}.{chunk}",
        version.gen, version.writer
    ))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Stores open in this process, so `inspect` finds a running server's.
static OPEN: Mutex<Vec<(PathBuf, Weak<Store>)>> = Mutex::new(Vec::new());

/// Abandoned uploads removed per transaction.
const COLLECT_BATCH: usize = 1000;

/// Chunks moved per transaction when compacting a volume (at most 16 MiB).
const COMPACT_BATCH: usize = 256;

/// How many aborted versions [`Store`] remembers.
const ABORTED_KEPT: usize = 256;

pub struct Store {
    root: PathBuf,
    db: Arc<Db>,
    volumes: Arc<Volumes>,
    tuning: Tuning,
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Versions whose writers gave up before committing them (see
    /// [`Store::abort`]), newest last, so a chunk of one that lands after
    /// the abort goes too.
    aborted: Arc<Mutex<VecDeque<(String, String, Version)>>>,
    /// Partial chunk files a writer or reader holds (see [`Store::claim_partial`]).
    busy: Mutex<HashSet<PathBuf>>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // The writer finishes what is queued, then closes the database.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Store {
    /// Opens (creating if needed) the store under `root`: clears unfinished
    /// writes, and migrates a folder written by an earlier release.
    pub fn open(root: &Path, tuning: Tuning) -> Result<Arc<Store>> {
        let tmp = root.join("tmp");
        for dir in [root, &tmp, &root.join("users")] {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // Anything under tmp/ is a write that never finished.
        for entry in chunk::read_dir(&tmp)? {
            let _ = fs::remove_file(entry.path());
        }
        let db = redb::Builder::new()
            .set_cache_size((tuning.cache_mib as usize) << 20)
            // Commits without a sync (see `wal`) need the database to
            // itself: other processes look through the server.
            .set_concurrency_mode(redb::ConcurrencyMode::ExclusiveWriter)
            .create(root.join(DB_FILE))
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => in_use(root),
                e => e.into(),
            })?;
        let (format, checkpoint) = {
            let mut txn = db.begin_write()?;
            txn.set_quick_repair(true);
            create_tables(&txn)?;
            let meta = txn.open_table(META)?;
            let format = meta.get("format")?.map(|f| f.value().to_vec());
            let checkpoint = log_seq(&meta)?;
            drop(meta);
            txn.commit()?;
            (format, checkpoint)
        };
        let volumes = Arc::new(Volumes::new(root));
        let mut appender = Appender::open(Arc::clone(&volumes), tuning.volume_max)?;
        let (mut log, changes) = Log::open(root, checkpoint)?;
        if !changes.is_empty() {
            replay(&db, root, &mut appender, &mut log, changes)?;
        }
        let db = Arc::new(Db::Write(db));
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let writer = {
            let (db, root) = (Arc::clone(&db), root.to_path_buf());
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || write_loop(&db, &root, appender, log, &queue))
                .map_err(|e| Error::io("starting the store's writer", e))?
        };
        let store = Arc::new(Store {
            root: root.to_path_buf(),
            db,
            volumes,
            tuning,
            jobs: Some(jobs),
            writer: Some(writer),
            aborted: Arc::default(),
            busy: Mutex::default(),
        });
        match format.as_deref() {
            Some(FORMAT) => {}
            Some(b"2") => {
                migrate::from_v2(&store)?;
                migrate::from_v3(&store)?;
            }
            Some(b"3") => migrate::from_v3(&store)?,
            Some(b"4") => migrate::from_v4(&store)?,
            Some(b"5") => migrate::from_v5(&store)?,
            Some(b"6") => migrate::from_v6(&store)?,
            Some(b"7") => migrate::from_v7(&store)?,
            Some(other) => {
                return Err(Error::Config(format!(
                    "{} was written by a newer release (store format {})",
                    root.display(),
                    String::from_utf8_lossy(other)
                )))
            }
            None => {
                migrate::run(&store)?;
                store.write(|t| {
                    t.meta.insert("format", FORMAT)?;
                    // Recorded with the format: until the legacy manifests are
                    // all removed, every start removes them (a crash may stop
                    // that half-way, and nothing else would ever remove the rest).
                    t.meta.insert(TIDY, &b""[..])?;
                    Ok(())
                })?;
            }
        }
        let tidy_pending = store.read()?.open_table(META)?.get(TIDY)?.is_some();
        if tidy_pending {
            migrate::tidy(&store.root);
            store.write(|t| {
                t.meta.remove(TIDY)?;
                Ok(())
            })?;
        }
        register(root, &store);
        Ok(store)
    }

    /// A store to look at: the running server's own if it is in this
    /// process, else a stopped server's, read-only (its log applied first, if
    /// it left one). A server running in another process has its database
    /// to itself: [`Error::InUse`].
    pub fn inspect(root: &Path) -> Result<Arc<Store>> {
        {
            let open = OPEN.lock().expect("open stores");
            if let Some(store) = open
                .iter()
                .filter(|(path, _)| path == root)
                .find_map(|(_, s)| s.upgrade())
            {
                return Ok(store);
            }
        }
        let path = root.join(DB_FILE);
        if !path.is_file() {
            return Err(Error::Config(format!(
                "{} holds no ringdfs store (or one its server has not opened since the upgrade)",
                root.display()
            )));
        }
        // Changes left in the log by a server stopped without its last
        // checkpoint (killed, say): applied as its next start would. (A
        // running server's refuses: it has the database.)
        if Log::pending(root) {
            return Store::open(root, Tuning::default());
        }
        let mut builder = redb::Builder::new();
        builder
            .set_cache_size(16 << 20)
            .set_concurrency_mode(redb::ConcurrencyMode::ExclusiveWriter);
        let db = match builder.open_read_only(&path) {
            Ok(db) => Db::Read(db),
            // Left by a server that was killed, and not running (a running
            // one would have recovered it): recover it as that server's
            // next start would, then only read.
            Err(redb::DatabaseError::RepairAborted) => Db::Write(builder.open(&path)?),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(in_use(root)),
            Err(e) => return Err(e.into()),
        };
        let store = Arc::new(Store {
            root: root.to_path_buf(),
            db: Arc::new(db),
            volumes: Arc::new(Volumes::new(root)),
            tuning: Tuning::default(),
            jobs: None,
            writer: None,
            aborted: Arc::default(),
            busy: Mutex::default(),
        });
        // Another look while this one lasts shares it (a second handle on
        // the file would be refused).
        register(root, &store);
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs store work on the blocking pool, off the async threads.
    pub async fn off_thread<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Internal(format!("store task: {e}")))?
    }

    pub fn tuning(&self) -> &Tuning {
        &self.tuning
    }

    /// Runs `op` in the next shared transaction and returns its result once
    /// that has committed durably.
    fn write<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T> + Send + 'static,
    {
        self.submit(op, None)
    }

    /// Applies a change the write-ahead log carries: appended to the log
    /// and synced, then committed without a sync of the database (see
    /// `wal`). Returns how many manifests were applied.
    fn write_logged(&self, change: Change) -> Result<usize> {
        // Too big for one record (over the codec's limit): committed durably.
        let record = codec::encode(&change).ok();
        let aborted = Arc::clone(&self.aborted);
        self.submit(move |t| t.apply(&change, &aborted), record)
    }

    fn submit<T, F>(&self, op: F, record: Option<Vec<u8>>) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<T> + Send + 'static,
    {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Internal("this store is open read-only".into()))?;
        let (reply, result) = mpsc::sync_channel(1);
        let job = Box::new(Op {
            op: Some(op),
            record,
            out: None,
            reply,
        });
        jobs.send(job)
            .map_err(|_| Error::Internal("the store's writer has stopped".into()))?;
        result
            .recv()
            .map_err(|_| Error::Internal("the store's writer has stopped".into()))?
    }

    /// [`Store::write`] for a change that may be refused: `op` answers
    /// `Ok(Err(refusal))` having changed nothing, and the refusal reaches
    /// the caller without failing the changes committed with it (an `Err`
    /// from `op` fails the whole shared transaction).
    fn write_or_refuse<T, F>(&self, op: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tables<'_>) -> Result<Result<T>> + Send + 'static,
    {
        self.write(op)?
    }

    fn read(&self) -> Result<ReadTransaction> {
        self.db.read()
    }

    pub(crate) fn chunk_path(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> PathBuf {
        chunk_path(&self.root, owner, name, version, chunk)
    }

    /// A fresh temp file name under `tmp/` (recreated if someone removed it).
    fn tmp_path(&self) -> Result<PathBuf> {
        let dir = self.root.join("tmp");
        fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(dir.join(format!("{}.part", crate::hex(&rand::random::<[u8; 16]>()))))
    }

    /// Starts writing a chunk. The chunk is stored only by [`ChunkWriter::finish`].
    pub fn begin_chunk(self: &Arc<Self>, spec: ChunkSpec) -> Result<ChunkWriter> {
        ChunkWriter::new(Arc::clone(self), spec)
    }

    /// Starts writing a chunk a client uploads, from byte `offset` on (0:
    /// all of it): a large chunk's bytes are kept if the stream is cut
    /// (see "Partial chunks" above).
    pub fn begin_upload(self: &Arc<Self>, spec: ChunkSpec, offset: u64) -> Result<ChunkWriter> {
        ChunkWriter::upload(Arc::clone(self), spec, offset)
    }

    /// Where the partial file of a chunk of an upload is.
    fn partial_path(&self, owner: &str, name: &str, version: Version, chunk: u32) -> PathBuf {
        partial_dir(&self.root, owner, name).join(format!(
            "{:016x}-{:016x}.{chunk}",
            version.gen, version.writer
        ))
    }

    /// Whether a writer or reader holds the partial of `spec`'s chunk now.
    pub fn partial_in_use(&self, spec: &ChunkSpec) -> bool {
        self.partial_busy(&self.partial_path(&spec.owner, &spec.name, spec.version, spec.chunk))
    }

    /// How many bytes of `spec`'s chunk an interrupted upload left here, and
    /// the checksum of those bytes (the chunk's keyed hasher fed only them),
    /// read again from disk; for a chunk stored whole, its length and
    /// recorded checksum. `(0, _)` when none are kept, or another writer
    /// holds them.
    pub fn prefix(self: &Arc<Self>, spec: &ChunkSpec) -> Result<(u64, Checksum)> {
        spec.validate()?;
        let mut hasher = spec.id().hasher();
        let none = (0, checksum_of(&hasher));
        let len = spec.chunk_len();
        // Stored whole already (checked when it arrived): its checksum.
        if let Ok(stored) = self.open_chunk(&spec.owner, &spec.name, spec.version, spec.chunk) {
            if stored.len() == len {
                return Ok((len, stored.checksum()));
            }
        }
        if len <= self.tuning.inline_max {
            return Ok(none);
        }
        let path = self.partial_path(&spec.owner, &spec.name, spec.version, spec.chunk);
        let Some(_busy) = self.claim_partial(&path) else {
            return Ok(none);
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(none),
            Err(e) => return Err(Error::storage("opening a partial chunk", e)),
        };
        let kept = file
            .metadata()
            .map_err(|e| Error::storage("opening a partial chunk", e))?
            .len();
        if kept == 0 || kept > len {
            return Ok(none);
        }
        chunk::hash_prefix(&file, kept, |b| {
            hasher.update(b);
            Ok(())
        })?;
        Ok((kept, checksum_of(&hasher)))
    }

    /// Removes the partial files older than `grace` (by their last write)
    /// that nobody holds. Returns how many went.
    fn sweep_partials(&self, grace: Duration) -> usize {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut removed = 0;
        let Ok(owners) = chunk::read_dir(&self.root.join(chunk::PARTIAL)) else {
            return 0;
        };
        for owner in owners {
            for file in chunk::read_dir(&owner.path()).unwrap_or_default() {
                let entries = chunk::read_dir(&file.path()).unwrap_or_default();
                if entries.is_empty() {
                    let _ = fs::remove_dir(file.path());
                }
                for entry in entries {
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|at| at <= cutoff);
                    if stale && !self.partial_busy(&entry.path()) {
                        remove_file_logged(&entry.path());
                        removed += 1;
                    }
                }
            }
        }
        removed
    }

    /// Records a chunk whose bytes have been checked (and, for a file,
    /// synced into place). A chunk of a version already outdated here, or
    /// given up by its writer, can never be read: it goes at once.
    fn record_chunk(&self, sealed: Sealed) -> Result<()> {
        self.record_chunks(vec![sealed])
    }

    /// Records received chunks (see [`ChunkWriter::seal`]) in one commit,
    /// each as [`ChunkWriter::finish`] would.
    pub fn record_chunks(&self, sealed: Vec<Sealed>) -> Result<()> {
        // Small chunks go in the log with their bytes; a file chunk, synced
        // in place already, is recorded by a durable commit.
        if sealed.iter().all(|s| s.data.is_some()) {
            let chunks = sealed
                .into_iter()
                .map(|s| LoggedChunk {
                    spec: s.spec,
                    checksum: s.checksum,
                    values: s.values,
                    data: s.data.unwrap_or_default(),
                })
                .collect();
            return self.write_logged(Change::Chunks(chunks)).map(drop);
        }
        let aborted = Arc::clone(&self.aborted);
        self.write(move |t| {
            for s in &sealed {
                let parts = (&s.spec, s.checksum, s.values.as_slice(), s.data.as_deref());
                t.record_copy(parts, &aborted)?;
            }
            Ok(())
        })
    }

    /// `Fetch`: [`Store::file`], and when the file has at most `SMALL_FILE`
    /// bytes each of `wanted` held here, read and checked: its bytes, or
    /// why it could not be read.
    pub fn file_with_data(&self, owner: &str, name: &str, wanted: &[u32]) -> Result<FileData> {
        let (manifest, held) = self.file(owner, name)?;
        let mut chunks = Vec::new();
        if let Some(m) = manifest
            .as_ref()
            .filter(|m| !m.deleted && m.size <= SMALL_FILE)
        {
            for &chunk in held.iter().filter(|c| wanted.contains(c)) {
                let read = self
                    .open_chunk(owner, m.data_name(), m.data_version(), chunk)
                    .and_then(|r| r.read_all());
                chunks.push((chunk, read));
            }
        }
        Ok(FileData {
            manifest,
            held,
            chunks,
        })
    }

    /// Notes, durably, that a chunk file of `spec`'s version is about to be
    /// put in place: should the commit of its row never happen (the server
    /// killed in between) or the upload never be committed, the collection
    /// of the upload finds the file. Nothing to note for committed data.
    fn note_upload(&self, spec: &ChunkSpec) -> Result<()> {
        let (owner, name, version) = (spec.owner.clone(), spec.name.clone(), spec.version);
        let size = spec.size;
        self.write(move |t| {
            if t.data_row(&owner, &name, version)?.is_none() {
                t.stage(&owner, &name, version)?;
                usage::upload(t, &owner, &name, version, size)?;
            }
            Ok(())
        })
    }

    /// Removes the chunks of uploads that were never committed, once none of
    /// their chunks has arrived for `grace`: a PUT cancelled, or whose
    /// client died, leaves nothing behind. Chunk files of such a version that
    /// have no row (the server was killed between putting one in place and
    /// recording it) go too. Returns how many uploads went.
    pub fn collect_staged(&self, grace: Duration) -> Result<usize> {
        let swept = self.sweep_partials(grace);
        if swept > 0 {
            tracing::debug!(swept, "stale partial chunks removed");
        }
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let expired: Vec<(String, String, Version)> = {
            let txn = self.read()?;
            let staged = txn.open_table(STAGED)?;
            let mut out = Vec::new();
            for item in staged.iter()? {
                let (key, at) = item?;
                if at.value() <= cutoff {
                    let (owner, name, gen, writer) = key.value();
                    out.push((owner.to_string(), name.to_string(), Version { gen, writer }));
                }
                if out.len() == COLLECT_BATCH {
                    break;
                }
            }
            out
        };
        if expired.is_empty() {
            return Ok(0);
        }
        self.write(move |t| {
            let mut collected = 0;
            for (owner, name, version) in &expired {
                let key = (owner.as_str(), name.as_str(), version.gen, version.writer);
                // A chunk that arrived since the scan keeps the upload.
                if t.staged.get(key)?.is_none_or(|at| at.value() > cutoff) {
                    continue;
                }
                t.staged.remove(key)?;
                usage::forget(t, owner, name, *version)?;
                if t.data_row(owner, name, *version)?.is_some()
                    || t.current(owner, name)?
                        .is_some_and(|m| m.version >= *version)
                {
                    continue; // committed, or outdated: the commit took care of it
                }
                for (v, chunk, _) in t.copies(owner, name)? {
                    if v == *version {
                        t.remove_copy(owner, name, v, chunk, false)?;
                    }
                }
                for entry in chunk::read_dir(&file_dir(t.root, owner, name))? {
                    if chunk::parse_chunk_file_name(&entry.file_name())
                        .is_some_and(|(v, _)| v == *version)
                    {
                        t.trash.push(entry.path());
                    }
                }
                t.trash_partials(owner, name, |v| v == *version)?;
                collected += 1;
            }
            Ok(collected)
        })
    }

    /// Uploads under way or abandoned (not committed) whose chunks are here.
    pub fn uploads_pending(&self) -> Result<u64> {
        let txn = self.read()?;
        Ok(txn.open_table(STAGED)?.len()?)
    }

    /// Opens a stored chunk of `version` for reading, after checking its
    /// record against the manifest (when `version` is the current one). A
    /// version this server has no manifest for yet is still served if its
    /// chunk is stored: a writer that stopped halfway through committing
    /// leaves servers with the chunks but not the manifest, and the reader
    /// checks every byte against the manifest it got elsewhere.
    pub fn open_chunk(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> Result<ChunkReader> {
        validate_name(name)?;
        // A packed chunk whose volume was compacted away after the snapshot
        // was taken is found at its new place by a fresh one.
        for _ in 0..3 {
            if let Some(reader) = self.open_chunk_once(owner, name, version, chunk)? {
                return Ok(reader);
            }
        }
        Err(Error::Corrupt {
            chunk,
            reason: "the chunk's volume is missing".into(),
        })
    }

    /// [`Store::open_chunk`] for data bytes `range` of the chunk: a reader
    /// of only the whole blocks covering it, each checked on its own (see
    /// `crate::blocks`); where those blocks lie; and the chunk's block
    /// values, which the reader checks against its manifest. A chunk of one
    /// block is read whole, with no values. A chunk stored before block
    /// values were kept has them worked out here once, reading it whole.
    pub fn open_range(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
        range: Range<u64>,
    ) -> Result<(ChunkReader, Range<u64>, Vec<BlockValue>)> {
        let reader = self.open_chunk(owner, name, version, chunk)?;
        if range.start > range.end || range.end > reader.len() {
            return Err(Error::BadRequest(format!(
                "chunk {chunk} is {} bytes; bytes {}..{} are not within it",
                reader.len(),
                range.start,
                range.end
            )));
        }
        let id = ChunkId {
            owner,
            name,
            version,
            chunk,
            len: reader.len(),
        };
        if crate::blocks::Layout::of(&id).values() == 0 {
            let whole = 0..reader.len();
            return Ok((reader, whole, Vec::new()));
        }
        let values = match self.block_values(&id, reader.checksum())? {
            Some(values) => values,
            None => self.work_out_values(&id)?,
        };
        let (reader, span) = reader.range(&id, range, values.clone());
        Ok((reader, span, values))
    }

    /// The recorded block values of chunk `id`, if they are there and merge
    /// into its `checksum`.
    fn block_values(
        &self,
        id: &ChunkId<'_>,
        checksum: Checksum,
    ) -> Result<Option<Vec<BlockValue>>> {
        let txn = self.read()?;
        let table = txn.open_table(BLOCKS)?;
        let key = (
            id.owner,
            id.name,
            id.version.gen,
            id.version.writer,
            id.chunk,
        );
        let Some(bytes) = table.get(key)? else {
            return Ok(None);
        };
        let values: Vec<BlockValue> = bytes
            .value()
            .chunks_exact(32)
            .map(|v| v.try_into().expect("32 bytes"))
            .collect();
        match crate::blocks::check_values(id, &values, &checksum) {
            Ok(()) => Ok(Some(values)),
            Err(e) => {
                tracing::warn!(file = %id.name, chunk = id.chunk, error = %e, "block values worked out again");
                Ok(None)
            }
        }
    }

    /// Reads chunk `id` whole (checked) to work out its block values, and
    /// records them while the copy is still recorded.
    fn work_out_values(&self, id: &ChunkId<'_>) -> Result<Vec<BlockValue>> {
        let mut reader = self.open_chunk(id.owner, id.name, id.version, id.chunk)?;
        let mut hasher = BlockHasher::new(id);
        while let Some(block) = reader.next_block()? {
            hasher.update(&block)?;
        }
        let (_, values) = hasher.finish()?;
        let (owner, name, version, chunk) = (
            id.owner.to_string(),
            id.name.to_string(),
            id.version,
            id.chunk,
        );
        let bytes = values.concat();
        let saved = self.write(move |t| {
            let key = (
                owner.as_str(),
                name.as_str(),
                version.gen,
                version.writer,
                chunk,
            );
            if t.chunks.get(key)?.is_some() {
                t.blocks.insert(key, bytes.as_slice())?;
            }
            Ok(())
        });
        // Only a saving: the next range read works them out again.
        if let Err(e) = saved {
            tracing::debug!(error = %e, "block values not recorded");
        }
        Ok(values)
    }

    /// [`Store::open_chunk`] in one snapshot; `None` if the chunk's volume is gone.
    fn open_chunk_once(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> Result<Option<ChunkReader>> {
        let not_found = || Error::NotFound {
            name: format!("{name} (chunk {chunk})"),
        };
        let txn = self.read()?;
        let expected = match data_row_in(&txn.open_table(DATA)?, owner, name, version)? {
            Some(row) => Some(
                chunk
                    .checked_sub(1)
                    .and_then(|i| row.checksums.get(i as usize))
                    .copied()
                    .ok_or_else(not_found)?,
            ),
            // Not data any manifest here shares: an upload whose commit has
            // not arrived is served (the reader checks it against the
            // manifest it has); one the file's entry has outdated is gone.
            None => {
                let files = txn.open_table(FILES)?;
                let outdated = match files.get((owner, name))? {
                    Some(b) => codec::decode::<Manifest>(b.value())?.version >= version,
                    None => false,
                };
                if outdated {
                    return Err(not_found());
                }
                None
            }
        };
        let key = (owner, name, version.gen, version.writer, chunk);
        let chunks = txn.open_table(CHUNKS)?;
        let Some(row) = chunks.get(key)? else {
            return Err(not_found());
        };
        let row: ChunkRow = codec::decode(row.value())?;
        if expected.is_some_and(|sum| sum != row.checksum) {
            return Err(Error::Corrupt {
                chunk,
                reason: "the stored checksum does not match the manifest".into(),
            });
        }
        let id = ChunkId {
            owner,
            name,
            version,
            chunk,
            len: row.len,
        };
        match row.at {
            Some((vol, offset)) => Ok(self
                .read_packed(vol, offset, row.len, chunk)?
                .map(|data| ChunkReader::memory(data, id, row.checksum))),
            None => ChunkReader::file(
                self.chunk_path(owner, name, version, chunk),
                id,
                row.checksum,
            )
            .map(Some),
        }
    }

    /// A packed chunk's bytes (`None` if its volume is gone).
    fn read_packed(&self, vol: u32, offset: u64, len: u64, chunk: u32) -> Result<Option<Bytes>> {
        self.volumes
            .read(vol, offset, len)
            .map_err(|e| Error::Corrupt {
                chunk,
                reason: format!("reading its volume: {e}"),
            })
    }

    /// Makes `manifest` the file's current version if it is newer than what is
    /// there, then drops older versions' chunks. Returns whether it was applied.
    /// A tombstone (`deleted`) is committed the same way.
    pub fn commit(&self, owner: &str, manifest: Manifest) -> Result<bool> {
        check_manifest(owner, &manifest)?;
        let applied = self.write_logged(Change::Commits(vec![(owner.to_string(), manifest)]))?;
        Ok(applied > 0)
    }

    /// Commits several manifests (of any owners) in one transaction, each as
    /// [`Store::commit`] would. Returns how many were applied.
    pub fn commit_many(&self, manifests: Vec<(String, Manifest)>) -> Result<usize> {
        for (owner, m) in &manifests {
            check_manifest(owner, m)?;
        }
        self.write_logged(Change::Commits(manifests))
    }

    /// `mv` and `cp`: commits `owner`'s `manifests` in one transaction, or
    /// refuses them all with nothing changed. Every live one must share
    /// data this server has (a copy or move never brings new data), as it
    /// is, and must not put a file where a folder is or under a file.
    /// Returns how many were applied (older than what is here: skipped).
    pub fn commit_shared(&self, owner: &str, manifests: Vec<Manifest>) -> Result<usize> {
        for m in &manifests {
            check_manifest(owner, m)?;
        }
        let owner = owner.to_string();
        self.write_or_refuse(move |t| {
            for m in manifests.iter().filter(|m| m.has_data()) {
                let known = t
                    .data_row(&owner, m.data_name(), m.data_version())?
                    .is_some_and(|row| row.describes(m));
                if !known {
                    return Ok(Err(Error::Refused(format!(
                        "{}: its data is not on this server",
                        shown(&m.name)
                    ))));
                }
                if let Err(refused) = check_free(&t.files, &owner, &m.name)? {
                    return Ok(Err(refused));
                }
            }
            let mut applied = 0;
            for m in manifests.iter().filter(|m| m.has_data()) {
                applied += usize::from(t.commit(&owner, m, now_ms())?);
            }
            for m in manifests.iter().filter(|m| !m.has_data()) {
                applied += usize::from(t.commit(&owner, m, now_ms())?);
            }
            Ok(Ok(applied))
        })
    }

    /// Drops what a writer stored of `version` of `owner`'s `name` before it
    /// gave up without committing (its PUT failed or was cancelled). Never
    /// touches a committed version: when the current manifest is `version`
    /// or newer, this does nothing. A chunk of `version` still being
    /// finished is dropped as it lands. Returns how many copies went.
    pub fn abort(&self, owner: &str, name: &str, version: Version) -> Result<usize> {
        validate_user(owner)?;
        validate_name(name)?;
        if self
            .manifest(owner, name)?
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
        let (owner, name) = (owner.to_string(), name.to_string());
        self.write(move |t| {
            if t.data_row(&owner, &name, version)?.is_some()
                || t.current(&owner, &name)?
                    .is_some_and(|m| m.version >= version)
            {
                return Ok(0);
            }
            let mut dropped = 0;
            for (v, chunk, _) in t.copies(&owner, &name)? {
                if v == version && t.remove_copy(&owner, &name, v, chunk, false)? {
                    dropped += 1;
                }
            }
            t.staged
                .remove((owner.as_str(), name.as_str(), version.gen, version.writer))?;
            usage::forget(t, &owner, &name, version)?;
            t.trash_partials(&owner, &name, |v| v == version)?;
            Ok(dropped)
        })
    }

    /// Removes the data overwrites retired more than `grace` ago (unless a
    /// manifest shares it again). Returns how many files had some.
    pub fn expire_retired(&self, grace: Duration) -> Result<usize> {
        let cutoff = now_ms().saturating_sub(grace.as_millis() as u64);
        let expired: Vec<(String, String)> = {
            let txn = self.read()?;
            let retired = txn.open_table(RETIRED)?;
            let mut out = Vec::new();
            for item in retired.iter()? {
                let (key, value) = item?;
                let (owner, name) = key.value();
                if codec::decode::<Retired>(value.value())?.at <= cutoff {
                    out.push((owner.to_string(), name.to_string()));
                }
            }
            out
        };
        if expired.is_empty() {
            return Ok(0);
        }
        self.write(move |t| {
            let mut count = 0;
            for (owner, name) in &expired {
                let still = match t.retired.get((owner.as_str(), name.as_str()))? {
                    Some(r) => codec::decode::<Retired>(r.value())?.at <= cutoff,
                    None => false,
                };
                if still {
                    t.release_retired(owner, name)?;
                    count += 1;
                }
            }
            Ok(count)
        })
    }

    /// Sets a copy that failed its checks aside in `quarantine/` and forgets
    /// it, so healing fetches a good one. Returns where it went.
    pub fn quarantine(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> Result<Option<PathBuf>> {
        let row: Option<ChunkRow> = {
            let txn = self.read()?;
            let chunks = txn.open_table(CHUNKS)?;
            let key = (owner, name, version.gen, version.writer, chunk);
            match chunks.get(key)? {
                Some(r) => Some(codec::decode(r.value())?),
                None => None,
            }
        };
        let dir = self.root.join("quarantine");
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating quarantine/", e))?;
        let dest = dir.join(format!(
            "{}-{owner}-{}-{:016x}-{:016x}.{chunk}",
            crate::unix_now(),
            file_dir(Path::new(""), owner, name)
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            version.gen,
            version.writer
        ));
        let moved = match row.as_ref().and_then(|r| r.at.map(|at| (at, r.len))) {
            Some(((vol, offset), len)) => {
                // What is left of it, for whoever looks into the damage.
                let bytes = self
                    .volumes
                    .read(vol, offset, len)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                File::create(&dest)
                    .and_then(|mut f| f.write_all(&bytes))
                    .map_err(|e| Error::io("writing into quarantine/", e))?;
                Some(dest)
            }
            _ => {
                let path = self.chunk_path(owner, name, version, chunk);
                match fs::rename(&path, &dest) {
                    Ok(()) => Some(dest),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(Error::io(format!("quarantining {}", path.display()), e)),
                }
            }
        };
        let (owner, name) = (owner.to_string(), name.to_string());
        self.write(move |t| {
            t.remove_copy(&owner, &name, version, chunk, true)?;
            let row = t.data_row(&owner, &name, version)?;
            t.refresh_wants(&owner, &name, version, row.as_ref())
        })?;
        Ok(moved)
    }

    /// Removes this server's copy of a chunk it should no longer hold (the
    /// ring changed and the chunk's holders have it). Returns whether a copy
    /// went. A reader that has the file open finishes reading it.
    pub fn drop_chunk(
        &self,
        owner: &str,
        name: &str,
        version: Version,
        chunk: u32,
    ) -> Result<bool> {
        let (owner, name) = (owner.to_string(), name.to_string());
        self.write(move |t| {
            let row = t.data_row(&owner, &name, version)?;
            if row.as_ref().is_none_or(|r| r.refs == 0) {
                return Ok(false);
            }
            let dropped = t.remove_copy(&owner, &name, version, chunk, false)?;
            t.refresh_wants(&owner, &name, version, row.as_ref())?;
            Ok(dropped)
        })
    }

    /// Rewrites the live chunks of every sealed volume that is at least half
    /// dead into the active one, then removes it. Cheap when there is nothing
    /// to do (it reads the volumes' sizes and live bytes); otherwise one scan
    /// of the chunk rows finds what to move. Returns how many volumes went.
    pub fn compact_volumes(&self) -> Result<usize> {
        // Read before the snapshot: every batch that appended to a volume
        // below this one has committed (see `write_loop`), so the snapshot
        // sees every row that points into one.
        let active = self.volumes.active();
        let txn = self.read()?;
        let live_of = txn.open_table(VOLUMES)?;
        let mut doomed = Vec::new();
        for (vol, size) in self.volumes.list()? {
            let live = live_of.get(vol)?.map_or(0, |l| l.value());
            if vol < active && live.saturating_mul(2) <= size {
                doomed.push(vol);
            }
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut moves: BTreeMap<u32, Vec<(CopyId, u64)>> = BTreeMap::new();
        for item in txn.open_table(CHUNKS)?.iter()? {
            let (key, value) = item?;
            let row: ChunkRow = codec::decode(value.value())?;
            let Some((vol, offset)) = row.at.filter(|(v, _)| doomed.contains(v)) else {
                continue;
            };
            let (owner, name, gen, writer, chunk) = key.value();
            let id = CopyId {
                owner: owner.to_string(),
                name: name.to_string(),
                version: Version { gen, writer },
                chunk,
            };
            moves.entry(vol).or_default().push((id, offset));
        }
        drop((live_of, txn));
        for &vol in &doomed {
            let todo = moves.remove(&vol).unwrap_or_default();
            let count = todo.len();
            for piece in todo.chunks(COMPACT_BATCH) {
                let piece = piece.to_vec();
                self.write(move |t| {
                    for (id, offset) in &piece {
                        t.move_packed(id, vol, *offset)?;
                    }
                    Ok(())
                })?;
            }
            // Nothing is appended to a sealed volume, so once its chunks have
            // moved nothing points into it.
            self.write(move |t| {
                t.volumes.remove(vol)?;
                t.emptied.push(vol);
                Ok(())
            })?;
            tracing::info!(root = %self.root.display(), volume = vol, chunks = count, "compacted a volume");
        }
        Ok(doomed.len())
    }

    /// Forgets a tombstone once no member can still hold an older version
    /// (see `heal`), if it is still the file's entry at `version`.
    pub fn drop_tombstone(&self, owner: &str, name: &str, version: Version) -> Result<bool> {
        let (o, n) = (owner.to_string(), name.to_string());
        let dropped = self.write(move |t| {
            let current = t.current(&o, &n)?;
            match &current {
                Some(m) if m.deleted && m.version == version => {}
                _ => return Ok(false),
            }
            t.set_entry(&o, &n, current.as_ref(), None)?;
            Ok(true)
        })?;
        if dropped {
            // The chunk files' folder, if the file had large chunks.
            let _ = fs::remove_dir(file_dir(&self.root, owner, name));
        }
        Ok(dropped)
    }

    /// Tells the store where this server sits in the ring, so it knows which
    /// chunks it should hold. A change recomputes `missing` and `surplus`
    /// for every file (a join or leave is rare; nothing else scans).
    pub fn set_layout(&self, layout: Layout) -> Result<bool> {
        self.write(move |t| {
            if t.layout.as_ref() == Some(&layout) {
                return Ok(false);
            }
            t.meta.insert(LAYOUT, codec::encode(&layout)?.as_slice())?;
            t.layout = Some(layout);
            t.refresh_all_wants()?;
            Ok(true)
        })
    }

    /// The ring view this server saved (see `chord`), as it was saved.
    pub fn ring_view(&self) -> Result<Option<Vec<u8>>> {
        let txn = self.read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get("view")?.map(|v| v.value().to_vec()))
    }

    /// Saves the ring view, durably.
    pub fn save_ring_view(&self, view: Vec<u8>) -> Result<()> {
        self.write(move |t| {
            t.meta.insert("view", view.as_slice())?;
            Ok(())
        })
    }

    /// The cluster state's rows whose keys start with `prefix`.
    pub fn state(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.read()?;
        let table = txn.open_table(STATE)?;
        let mut rows = Vec::new();
        for item in table.range(prefix..)? {
            let (key, value) = item?;
            if !key.value().starts_with(prefix) {
                break;
            }
            rows.push((key.value().to_string(), value.value().to_vec()));
        }
        Ok(rows)
    }

    /// Stores cluster state rows, durably, in one transaction.
    pub fn put_state(&self, rows: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.write(move |t| {
            let mut table = t.txn.open_table(STATE)?;
            for (key, value) in &rows {
                table.insert(key.as_str(), value.as_slice())?;
            }
            Ok(())
        })
    }

    /// The layout last set.
    pub fn layout(&self) -> Result<Option<Layout>> {
        let txn = self.read()?;
        read_meta(&txn.open_table(META)?, LAYOUT)
    }

    /// The file's current manifest (possibly a tombstone), if this server has one.
    pub fn manifest(&self, owner: &str, name: &str) -> Result<Option<Manifest>> {
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        match files.get((owner, name))? {
            Some(b) => Ok(Some(codec::decode(b.value())?)),
            None => Ok(None),
        }
    }

    /// The file's current manifest and the chunks of that version held here.
    pub fn file(&self, owner: &str, name: &str) -> Result<(Option<Manifest>, Vec<u32>)> {
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        let Some(bytes) = files.get((owner, name))? else {
            return Ok((None, Vec::new()));
        };
        let m: Manifest = codec::decode(bytes.value())?;
        let held = held_in(
            &txn.open_table(CHUNKS)?,
            owner,
            m.data_name(),
            m.data_version(),
        )?;
        Ok((Some(m), held))
    }

    /// Whether `path` is one of the owner's live files, or a folder that
    /// holds one or was made with `mkdir`.
    pub fn exists(&self, owner: &str, path: &str) -> Result<bool> {
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        if let Some(bytes) = files.get((owner, path))? {
            if !codec::decode::<Manifest>(bytes.value())?.deleted {
                return Ok(true);
            }
        }
        live_within(&files, owner, path, true)
    }

    /// The listing entry of the owner's file `name` (a tombstone too), if
    /// any.
    pub fn entry(&self, owner: &str, name: &str) -> Result<Option<FileEntry>> {
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        let Some(bytes) = files.get((owner, name))? else {
            return Ok(None);
        };
        let m: Manifest = codec::decode(bytes.value())?;
        Ok(Some(file_entry(&txn.open_table(CHUNKS)?, owner, m)?))
    }

    /// Up to `limit` of the owner's files after `after`, by name, tombstones
    /// included (so a client merging several servers' lists can tell
    /// "deleted" from "not here"); and whether more follow.
    pub fn list_page(
        &self,
        owner: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FileEntry>, bool)> {
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        let chunks = txn.open_table(CHUNKS)?;
        let range = match after {
            Some(after) => files.range((owner, after)..)?,
            None => files.range((owner, "")..)?,
        };
        let mut out = Vec::new();
        for item in range {
            let (key, value) = item?;
            let (o, name) = key.value();
            if o != owner {
                break;
            }
            if after == Some(name) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            let m: Manifest = codec::decode(value.value())?;
            out.push(file_entry(&chunks, owner, m)?);
        }
        Ok((out, false))
    }

    /// Up to `limit` of the owner's manifests (tombstones and folder marks
    /// too) named `path` or under folder `path`, in name order after
    /// `after`; and whether more follow. What `mv` and `cp` move.
    pub fn manifests_under(
        &self,
        owner: &str,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Manifest>, bool)> {
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        let inside = format!("{path}/");
        let mut out = Vec::new();
        if after.is_none() {
            if let Some(m) = files.get((owner, path))? {
                out.push(codec::decode(m.value())?);
            }
        }
        let start = match after {
            Some(a) if a > inside.as_str() => a,
            _ => inside.as_str(),
        };
        for item in files.range((owner, start)..)? {
            let (key, value) = item?;
            let (o, name) = key.value();
            if o != owner || !name.starts_with(&inside) {
                break;
            }
            if after == Some(name) {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(codec::decode(value.value())?);
        }
        Ok((out, false))
    }

    /// One page of `folder` (`""`: the top) of `owner`'s files, one level
    /// deep: its files (tombstones too) and its sub-folders that hold a live
    /// file, in name order, after the cursor `after` (see
    /// `DirEntry::cursor`); `true` if more follow. A range scan: each
    /// sub-folder costs one seek past its contents, however many it holds.
    pub fn list_dir(
        &self,
        owner: &str,
        folder: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<DirEntry>, bool)> {
        let txn = self.read()?;
        let files = txn.open_table(FILES)?;
        let chunks = txn.open_table(CHUNKS)?;
        let prefix = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        // Where to start, and a name to skip if the scan meets it.
        let (mut start, mut skip) = match after {
            Some(a) => match a.strip_suffix('/') {
                Some(path) => (past(path), None),
                None => (a.to_string(), Some(a.to_string())),
            },
            None => (prefix.clone(), None),
        };
        let mut out = Vec::new();
        'scan: loop {
            for item in files.range((owner, start.as_str())..)? {
                let (key, value) = item?;
                let (o, name) = key.value();
                if o != owner || !name.starts_with(&prefix) {
                    break 'scan;
                }
                if skip.as_deref() == Some(name) || name.len() == prefix.len() {
                    // The cursor's entry, or this folder's own mark (`mkdir`).
                    continue;
                }
                let m: Manifest = codec::decode(value.value())?;
                if let Some(i) = name[prefix.len()..].find('/') {
                    // A sub-folder: listed if it holds a live file, then
                    // the scan goes on past everything inside it.
                    let sub = name[..prefix.len() + i].to_string();
                    (start, skip) = (past(&sub), None);
                    if !m.deleted || live_within(&files, owner, &sub, true)? {
                        if out.len() == limit {
                            return Ok((out, true));
                        }
                        out.push(DirEntry::Folder(sub));
                    }
                    continue 'scan;
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(DirEntry::File(file_entry(&chunks, owner, m)?));
            }
            break;
        }
        Ok((out, false))
    }

    /// `mkdir`: makes folder `path` of `owner`'s, empty, as a mark (a
    /// manifest named `path/`, no data) that listings show as a folder and
    /// that syncs like a file. Refused where a file or a folder is.
    pub fn make_folder(&self, owner: &str, path: &str) -> Result<()> {
        validate_name(path)?;
        check_manifest(owner, &folder_mark(path, None, false))?;
        let (owner, path) = (owner.to_string(), path.to_string());
        self.write_or_refuse(move |t| {
            if live_within(&t.files, &owner, &path, true)? {
                return Ok(Err(Error::Refused(format!("{} exists", shown(&path)))));
            }
            if t.current(&owner, &path)?.is_some_and(|m| !m.deleted) {
                return Ok(Err(Error::Refused(format!("{} is a file", shown(&path)))));
            }
            if let Err(refused) = check_no_file_above(&t.files, &owner, &path)? {
                return Ok(Err(refused));
            }
            let mark = format!("{path}/");
            let current = t.current(&owner, &mark)?.map(|m| m.version);
            t.commit(&owner, &folder_mark(&path, current, false), now_ms())?;
            Ok(Ok(()))
        })
    }

    /// `rmdir`: removes empty folder `path` (its mark, as a tombstone).
    pub fn remove_folder(&self, owner: &str, path: &str) -> Result<()> {
        validate_name(path)?;
        let (owner, path) = (owner.to_string(), path.to_string());
        self.write_or_refuse(move |t| {
            if live_within(&t.files, &owner, &path, false)? {
                return Ok(Err(Error::Refused(format!(
                    "{} is not empty",
                    shown(&path)
                ))));
            }
            let mark = format!("{path}/");
            match t.current(&owner, &mark)? {
                Some(m) if !m.deleted => {
                    t.commit(&owner, &folder_mark(&path, Some(m.version), true), now_ms())?;
                    Ok(Ok(()))
                }
                _ => Ok(Err(Error::NotFound { name: mark })),
            }
        })
    }

    /// Refuses a file `name` where a folder of that path has live files
    /// (`docs` beside `docs/plan.txt`), or under a path one of whose folders
    /// is a live file (`plan.txt/x`): one name is a file or a folder, never
    /// both.
    pub fn check_path_free(&self, owner: &str, name: &str) -> Result<()> {
        let txn = self.read()?;
        check_free(&txn.open_table(FILES)?, owner, name)?
    }

    /// All the owner's files (see [`Store::list_page`]).
    pub fn list(&self, owner: &str) -> Result<Vec<FileEntry>> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map(|e: &FileEntry| e.name.clone());
            let (page, more) = self.list_page(owner, after.as_deref(), 1000)?;
            all.extend(page);
            if !more {
                return Ok(all);
            }
        }
    }

    pub fn stats(&self) -> Result<Stats> {
        let txn = self.read()?;
        Ok(read_meta(&txn.open_table(META)?, "counts")?.unwrap_or_default())
    }

    /// The digest of everything: equal on two servers with the same live files.
    pub fn root_digest(&self) -> Result<Digest> {
        self.digest(ROOT_KEY)
    }

    fn digest(&self, key: u32) -> Result<Digest> {
        let txn = self.read()?;
        let digests = txn.open_table(DIGESTS)?;
        Ok(digests.get(key)?.map(|d| d.value()).unwrap_or([0; 16]))
    }

    /// The 256 group digests (`group` None), or the 256 bucket digests of one group.
    pub fn digests(&self, group: Option<u8>) -> Result<Vec<Digest>> {
        let txn = self.read()?;
        let digests = txn.open_table(DIGESTS)?;
        let first = match group {
            None => group_key(0),
            Some(g) => bucket_key(u16::from(g) << 8),
        };
        let mut out = vec![[0u8; 16]; FANOUT];
        for item in digests.range(first..first + FANOUT as u32)? {
            let (key, value) = item?;
            out[(key.value() - first) as usize] = value.value();
        }
        Ok(out)
    }

    /// Every file in one bucket, tombstones included.
    pub fn bucket_entries(&self, bucket: u16) -> Result<Vec<SyncEntry>> {
        let txn = self.read()?;
        let index = txn.open_table(BUCKETS)?;
        let files = txn.open_table(FILES)?;
        let mut out = Vec::new();
        for item in index.range((bucket, "", "")..)? {
            let (key, ()) = (item?.0, ());
            let (b, owner, name) = key.value();
            if b != bucket {
                break;
            }
            let Some(bytes) = files.get((owner, name))? else {
                continue;
            };
            let m: Manifest = codec::decode(bytes.value())?;
            out.push(SyncEntry {
                owner: owner.to_string(),
                name: name.to_string(),
                version: m.version,
                deleted: m.deleted,
            });
        }
        Ok(out)
    }

    /// Up to `limit` chunks this server lacks, after `after`.
    pub fn missing(&self, after: Option<&CopyId>, limit: usize) -> Result<Vec<CopyId>> {
        self.wants(MISSING, after, limit)
    }

    /// Up to `limit` chunks this server holds beyond its share, after `after`.
    pub fn surplus(&self, after: Option<&CopyId>, limit: usize) -> Result<Vec<CopyId>> {
        self.wants(SURPLUS, after, limit)
    }

    fn wants(
        &self,
        table: TableDefinition<ChunkKey, ()>,
        after: Option<&CopyId>,
        limit: usize,
    ) -> Result<Vec<CopyId>> {
        let txn = self.read()?;
        let t = txn.open_table(table)?;
        let range = match after {
            Some(a) => t.range(a.key()..)?,
            None => t.range::<ChunkKey>(..)?,
        };
        let mut out = Vec::new();
        for item in range {
            let (key, _) = item?;
            let id = CopyId::from_key(key.value());
            if Some(&id) == after {
                continue;
            }
            out.push(id);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The row of `owner`'s data written as `name` at `version`, if any
    /// manifest here shares it (or it is retired).
    pub fn data(&self, owner: &str, name: &str, version: Version) -> Result<Option<DataRow>> {
        let txn = self.read()?;
        data_row_in(&txn.open_table(DATA)?, owner, name, version)
    }

    /// The chunks of `owner`'s data written as `name` at `version` held here.
    pub fn held(&self, owner: &str, name: &str, version: Version) -> Result<Vec<u32>> {
        let txn = self.read()?;
        held_in(&txn.open_table(CHUNKS)?, owner, name, version)
    }

    /// Up to `limit` tombstones older than `gen` (a version's clock, in ns).
    pub fn old_tombstones(&self, gen: u64, limit: usize) -> Result<Vec<(String, String, Version)>> {
        let txn = self.read()?;
        let t = txn.open_table(TOMBSTONES)?;
        let mut out = Vec::new();
        for item in t.range((0u64, "", "")..)?.take(limit) {
            let (key, writer) = item?;
            let (g, owner, name) = key.value();
            if g >= gen {
                break;
            }
            out.push((
                owner.to_string(),
                name.to_string(),
                Version {
                    gen: g,
                    writer: writer.value(),
                },
            ));
        }
        Ok(out)
    }

    /// Notes files `server` was not given copies of (hinted handoff).
    pub fn add_hints(&self, server: &str, owner: &str, name: &str) -> Result<()> {
        let (s, o, n) = (server.to_string(), owner.to_string(), name.to_string());
        self.write(move |t| {
            t.hints.insert((s.as_str(), o.as_str(), n.as_str()), ())?;
            Ok(())
        })
    }

    /// Servers with hints, and how many files each.
    pub fn hinted(&self) -> Result<BTreeMap<String, u64>> {
        let txn = self.read()?;
        let t = txn.open_table(HINTS)?;
        let mut out = BTreeMap::new();
        for item in t.iter()? {
            let (key, _) = item?;
            let (server, _, _) = key.value();
            *out.entry(server.to_string()).or_insert(0) += 1;
        }
        Ok(out)
    }

    /// Forgets the hints for `server` (it has caught up).
    pub fn clear_hints(&self, server: &str) -> Result<()> {
        let s = server.to_string();
        self.write(move |t| {
            t.hints.retain(|(server, _, _), ()| server != s)?;
            Ok(())
        })
    }

    /// Up to `limit` stored copies after `after`, in key order, for the scrub.
    pub fn copies(&self, after: Option<&CopyId>, limit: usize) -> Result<Vec<CopyId>> {
        let txn = self.read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let range = match after {
            Some(a) => chunks.range(a.key()..)?,
            None => chunks.range::<ChunkKey>(..)?,
        };
        let mut out = Vec::new();
        for item in range {
            let (key, _) = item?;
            let id = CopyId::from_key(key.value());
            if Some(&id) == after {
                continue;
            }
            out.push(id);
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// Reads every chunk the store holds and checks it against its record
    /// and manifest. Returns how many were read, and the copies that failed,
    /// with why.
    pub fn scrub(&self) -> Result<(u64, Vec<(CopyId, Error)>)> {
        let mut checked = 0;
        let mut bad = Vec::new();
        let mut after = None;
        loop {
            let page = self.copies(after.as_ref(), 1000)?;
            let Some(last) = page.last().cloned() else {
                return Ok((checked, bad));
            };
            for id in page {
                checked += 1;
                let read = self
                    .open_chunk(&id.owner, &id.name, id.version, id.chunk)
                    .and_then(ChunkReader::check);
                match read {
                    Ok(_) => {}
                    // Replaced or deleted since it was listed.
                    Err(Error::NotFound { .. }) if !self.holds(&id)? => checked -= 1,
                    Err(e) => bad.push((id, e)),
                }
            }
            after = Some(last);
        }
    }

    /// Every copy of the file this store holds, of any version: (version, chunk).
    pub fn stored(&self, owner: &str, name: &str) -> Result<Vec<(Version, u32)>> {
        let txn = self.read()?;
        let chunks = txn.open_table(CHUNKS)?;
        let mut out = Vec::new();
        for item in
            chunks.range((owner, name, 0, 0, 0)..=(owner, name, u64::MAX, u64::MAX, u32::MAX))?
        {
            let (key, _) = item?;
            let (_, _, gen, writer, chunk) = key.value();
            out.push((Version { gen, writer }, chunk));
        }
        Ok(out)
    }

    /// Whether the store still records this copy.
    pub fn holds(&self, id: &CopyId) -> Result<bool> {
        let txn = self.read()?;
        let chunks = txn.open_table(CHUNKS)?;
        Ok(chunks.get(id.key())?.is_some())
    }
}

/// A file's manifest, the chunks of it held here, and for a small file
/// each of them read (see [`Store::file_with_data`]).
pub struct FileData {
    pub manifest: Option<Manifest>,
    pub held: Vec<u32>,
    pub chunks: Vec<(u32, Result<Bytes>)>,
}

/// The writer thread: commits queued changes in batches until the store
/// closes, checkpointing the write-ahead log (see `wal`) every
/// `CHECKPOINT_EVERY`, and once more at the end.
fn write_loop(
    db: &Db,
    root: &Path,
    mut appender: Appender,
    mut log: Log,
    queue: &mpsc::Receiver<Box<dyn Job>>,
) {
    let Db::Write(db) = db else { return };
    let mut checkpointed = std::time::Instant::now();
    loop {
        let first = match log.len() {
            0 => queue
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            _ => queue.recv_timeout(CHECKPOINT_EVERY.saturating_sub(checkpointed.elapsed())),
        };
        let mut batch = match first {
            Ok(job) => vec![job],
            Err(mpsc::RecvTimeoutError::Timeout) => Vec::new(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if log.len() > 0 {
                    // Already logged as failed; the next start replays the log.
                    let _ = commit_batch(db, root, &mut appender, &mut log, Vec::new(), true);
                }
                return;
            }
        };
        while !batch.is_empty() && batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|job| job.record().is_none())
            || log.len() >= LOG_MAX
            || checkpointed.elapsed() >= CHECKPOINT_EVERY;
        let committed = commit_batch(db, root, &mut appender, &mut log, batch, durable);
        if committed.is_ok() && durable {
            checkpointed = std::time::Instant::now();
        }
    }
}

/// Commits `batch` (durably, or logged: see [`run_batch`]), cleans up after
/// it, and answers its jobs. Returns the outcome they heard.
fn commit_batch(
    db: &Database,
    root: &Path,
    appender: &mut Appender,
    log: &mut Log,
    mut batch: Vec<Box<dyn Job>>,
    durable: bool,
) -> std::result::Result<(), Failed> {
    let (outcome, (trash, emptied)) = run_batch(db, root, appender, log, &mut batch, durable);
    match &outcome {
        Ok(()) => {
            for path in trash {
                remove_file_logged(&path);
            }
            for vol in emptied {
                appender.volumes().remove(vol);
            }
        }
        Err(e) => tracing::error!(error = ?e, "metadata commit failed"),
    }
    appender.publish();
    for job in batch {
        job.finish(outcome.clone());
    }
    outcome
}

/// Applies again, in one durable commit, the changes a server stopped
/// without checkpointing (killed, say) left in its write-ahead log.
fn replay(
    db: &Database,
    root: &Path,
    appender: &mut Appender,
    log: &mut Log,
    changes: Vec<Change>,
) -> Result<()> {
    let count = changes.len();
    // Nothing is given up yet: the store is not open to anyone.
    let aborted = Arc::<Mutex<VecDeque<_>>>::default();
    let batch: Vec<Box<dyn Job>> = changes
        .into_iter()
        .map(|change| {
            // The batch's outcome is the answer: nobody waits on each change.
            let (reply, _) = mpsc::sync_channel(1);
            let aborted = Arc::clone(&aborted);
            Box::new(Op {
                op: Some(move |t: &mut Tables<'_>| t.apply(&change, &aborted).map(drop)),
                record: None,
                out: None,
                reply,
            }) as Box<dyn Job>
        })
        .collect();
    commit_batch(db, root, appender, log, batch, true)?;
    tracing::info!(root = %root.display(), count, "applied the changes left in the write-ahead log");
    Ok(())
}

/// The last write-ahead log record the database holds (0: none yet).
fn log_seq(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64> {
    Ok(meta
        .get(LOG_SEQ)?
        .and_then(|v| v.value().try_into().ok())
        .map_or(0, u64::from_le_bytes))
}

/// Makes `store` the one [`Store::inspect`] finds for `root` in this process.
fn register(root: &Path, store: &Arc<Store>) {
    let mut open = OPEN.lock().expect("open stores");
    open.retain(|(_, s)| s.strong_count() > 0);
    open.push((root.to_path_buf(), Arc::downgrade(store)));
}

/// Why a store cannot be opened: its server (another process) has it open.
fn in_use(root: &Path) -> Error {
    Error::InUse(root.display().to_string())
}

/// What to remove once a batch has committed: chunk files, emptied volumes.
type Leftovers = (Vec<PathBuf>, Vec<u32>);

/// One transaction for the whole batch. Durable: the volumes are synced,
/// then the commit is (with the log's last record number: everything the
/// log holds is in it, so the log is emptied). Logged (every job is a
/// change the log carries): the records are appended and synced, then the
/// transaction commits without a sync.
fn run_batch(
    db: &Database,
    root: &Path,
    appender: &mut Appender,
    log: &mut Log,
    batch: &mut [Box<dyn Job>],
    durable: bool,
) -> (std::result::Result<(), Failed>, Leftovers) {
    let mut attempt = || -> Result<Leftovers> {
        let mut txn = db.begin_write()?;
        if durable {
            // Each durable commit saves the allocator state, so a server
            // killed at any moment reopens at once instead of walking the
            // whole database to rebuild it (a full repair takes seconds per
            // hundred thousand files).
            txn.set_quick_repair(true);
        } else {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| Error::Internal(format!("a commit without a sync: {e}")))?;
        }
        let leftovers = {
            let mut t = Tables::open(&txn, root, appender)?;
            for job in batch.iter_mut() {
                job.run(&mut t)?;
            }
            if durable {
                t.meta.insert(LOG_SEQ, &log.last().to_le_bytes()[..])?;
            }
            t.save()?;
            (std::mem::take(&mut t.trash), std::mem::take(&mut t.emptied))
        };
        if durable {
            // The bytes the new rows point at are durable before the rows are.
            appender.sync()?;
            txn.commit()?;
            if let Err(e) = log.reset() {
                // Harmless: its records are at or below `log_seq` now.
                tracing::warn!(error = %e, "the write-ahead log was not emptied");
            }
        } else {
            let before = log.append(batch.iter().filter_map(|job| job.record()))?;
            if let Err(e) = txn.commit() {
                if let Err(undo) = log.undo(before) {
                    tracing::error!(error = %undo, "changes that did not commit stay in the write-ahead log");
                }
                return Err(e.into());
            }
        }
        Ok(leftovers)
    };
    match attempt() {
        Ok(leftovers) => (Ok(()), leftovers),
        Err(e) => (Err(e.into()), Default::default()),
    }
}

#[cfg(test)]
mod tests;
