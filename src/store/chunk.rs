//! One chunk's bytes: written, checked, stored, read back and checked again.
//!
//! A chunk of at most `inline_max` bytes is gathered in memory and packed into
//! a volume file (see `volume`) by the commit that records its row: no file of
//! its own, no inode. A larger chunk is a file of its own, streamed to `tmp/`,
//! synced and renamed into place. A large chunk of a client's upload is
//! streamed to `partial/<owner>/<file-id>/<gen>-<writer>.<chunk>` instead,
//! and kept there if its stream is cut (see [`Store::prefix`] and `put -c`):
//!
//! ```text
//! users/<owner>/<file-id>/<gen:016x>-<writer:016x>.<chunk>
//! +-------------------+-------------------------------+---------------------+------------+
//! | data (len bytes)  | trailer: bincode ChunkTrailer | trailer_len: u32 LE | "RDFSCHK1" |
//! +-------------------+-------------------------------+---------------------+------------+
//! ```
//!
//! `file-id` is the hex of the first 16 bytes of BLAKE3(`owner/name`): a name a
//! user sent never becomes a path. The trailer says whose chunk it is and
//! carries its checksum, so a chunk file describes itself and a truncated one
//! has no valid trailer. Either way, every read hashes the bytes again and
//! compares them with the checksum stored when the chunk arrived.

use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::Store;
use crate::blocks::{BlockHasher, BlockValue, Layout};
use crate::codec;
use crate::direct::{self, DirectFile};
use crate::error::{Error, Result};
use crate::names::{validate_name, validate_user};
use crate::placement::chunk_range;
use crate::protocol::{checksum_of, Checksum, ChunkId, Version, MAX_BLOCK};

const CHUNK_MAGIC: &[u8; 8] = b"RDFSCHK1";
const MAX_TRAILER: u32 = 4096;
/// A chunk file at least this long is read past the page cache.
const DIRECT_READ_MIN: u64 = 1 << 20;
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

/// What a PUT of one chunk declares up front.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

    /// The chunk's key in the store's `chunk_rows` table.
    pub(super) fn key(&self) -> (&str, &str, u64, u64, u32) {
        (
            &self.owner,
            &self.name,
            self.version.gen,
            self.version.writer,
            self.chunk,
        )
    }

    pub(crate) fn id(&self) -> ChunkId<'_> {
        ChunkId {
            owner: &self.owner,
            name: &self.name,
            version: self.version,
            chunk: self.chunk,
            len: self.chunk_len(),
        }
    }
}

/// Where a chunk being written goes until it is finished.
enum Sink {
    /// A small chunk: gathered in memory, packed into a volume.
    Memory(Vec<u8>),
    /// A large one: a temp file, removed if the writer is dropped unfinished
    /// (`tmp` armed), or an upload's kept partial (`tmp` disarmed, `busy`
    /// held while it is written).
    File {
        file: DirectFile,
        path: PathBuf,
        tmp: RemoveOnDrop,
        busy: Option<Busy>,
    },
}

/// A partial chunk file claimed by one writer or reader at a time (see
/// [`Store::claim_partial`]); released when dropped.
pub struct Busy {
    store: Arc<Store>,
    path: PathBuf,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.store
            .busy
            .lock()
            .expect("busy lock")
            .remove(&self.path);
    }
}

impl Store {
    /// Claims the partial file at `path` for this writer or reader, unless
    /// another one holds it.
    pub(super) fn claim_partial(self: &Arc<Self>, path: &Path) -> Option<Busy> {
        let mut busy = self.busy.lock().expect("busy lock");
        if !busy.insert(path.to_path_buf()) {
            return None;
        }
        Some(Busy {
            store: Arc::clone(self),
            path: path.to_path_buf(),
        })
    }

    /// Whether a writer or reader holds the partial file at `path`.
    pub(super) fn partial_busy(&self, path: &Path) -> bool {
        self.busy.lock().expect("busy lock").contains(path)
    }
}

/// A chunk being written: bytes go to memory or a temp file, and into the
/// checksum. Dropped without `finish`, it leaves nothing.
pub struct ChunkWriter {
    store: Arc<Store>,
    sink: Sink,
    hasher: BlockHasher,
    written: u64,
    spec: ChunkSpec,
}

impl ChunkWriter {
    pub(super) fn new(store: Arc<Store>, spec: ChunkSpec) -> Result<ChunkWriter> {
        spec.validate()?;
        let len = spec.chunk_len();
        let sink = if len <= store.tuning.inline_max {
            Sink::Memory(Vec::with_capacity(len as usize))
        } else {
            store.note_upload(&spec)?;
            temp_sink(&store, len)?
        };
        Ok(ChunkWriter {
            hasher: BlockHasher::new(&spec.id()),
            store,
            sink,
            written: 0,
            spec,
        })
    }

    /// A writer of a client's upload that starts at `offset`: a large chunk
    /// goes to its partial file, kept if the stream is cut, and from an
    /// `offset` above 0 the bytes kept there before it are read again to
    /// seed the checksum (so `finish` checks the whole chunk). Refused when
    /// fewer than `offset` bytes are kept, or another writer holds them.
    pub(super) fn upload(store: Arc<Store>, spec: ChunkSpec, offset: u64) -> Result<ChunkWriter> {
        spec.validate()?;
        let len = spec.chunk_len();
        if len <= store.tuning.inline_max {
            if offset > 0 {
                return Err(Error::BadRequest(format!(
                    "chunk {} is small: it is sent whole",
                    spec.chunk
                )));
            }
            return ChunkWriter::new(store, spec);
        }
        if offset > len {
            return Err(Error::BadRequest(format!(
                "chunk {} is {len} bytes; it cannot go on from byte {offset}",
                spec.chunk
            )));
        }
        store.note_upload(&spec)?;
        let path = store.partial_path(&spec.owner, &spec.name, spec.version, spec.chunk);
        let Some(busy) = store.claim_partial(&path) else {
            if offset > 0 {
                return Err(Error::Refused(format!(
                    "chunk {} is still arriving from an earlier attempt",
                    spec.chunk
                )));
            }
            // Another attempt is still writing it: this one is not kept.
            let sink = temp_sink(&store, len)?;
            return Ok(ChunkWriter {
                hasher: BlockHasher::new(&spec.id()),
                store,
                sink,
                written: 0,
                spec,
            });
        };
        let mut hasher = BlockHasher::new(&spec.id());
        let file = if offset == 0 {
            let dir = path.parent().expect("a partial path has a folder");
            fs::create_dir_all(dir).map_err(|e| Error::storage("creating a partial folder", e))?;
            File::create(&path).map_err(|e| Error::storage("creating a chunk file", e))?
        } else {
            let gone = || {
                Error::Refused(format!(
                    "the part of chunk {} kept here is gone; send it whole",
                    spec.chunk
                ))
            };
            let file = match fs::OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone()),
                Err(e) => return Err(Error::storage("opening a partial chunk", e)),
            };
            let kept = file
                .metadata()
                .map_err(|e| Error::storage("opening a partial chunk", e))?
                .len();
            if kept < offset {
                return Err(gone());
            }
            file.set_len(offset)
                .map_err(|e| Error::storage("cutting a partial chunk", e))?;
            hash_prefix(&file, offset, |b| hasher.update(b))?;
            file
        };
        Ok(ChunkWriter {
            hasher,
            store,
            sink: Sink::File {
                file: DirectFile::new(file, offset, len - offset),
                path,
                tmp: RemoveOnDrop(None),
                busy: Some(busy),
            },
            written: offset,
            spec,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let len = self.spec.chunk_len();
        if self.written + data.len() as u64 > len {
            return Err(Error::BadRequest(format!(
                "chunk {} is {len} bytes; more was sent",
                self.spec.chunk
            )));
        }
        self.hasher.update(data)?;
        match &mut self.sink {
            Sink::Memory(buf) => buf.extend_from_slice(data),
            Sink::File { file, .. } => file
                .write_all(data)
                .map_err(|e| Error::storage("writing a chunk", e))?,
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks length and checksum, then stores the chunk durably (a file:
    /// trailer, sync, rename, folder sync; packed: appended to a volume by
    /// one commit, shared with whatever else is committing). Only then is it
    /// stored.
    pub fn finish(self, claimed: Checksum) -> Result<()> {
        let sealed = self.seal(claimed)?;
        Arc::clone(&sealed.store).record_chunk(sealed)
    }

    /// [`ChunkWriter::finish`] but for the record: the chunk's bytes are
    /// checked, and a file chunk is durable in place; its row is written by
    /// [`Store::record_chunks`], with others in one commit.
    pub fn seal(self, claimed: Checksum) -> Result<Sealed> {
        let spec = &self.spec;
        if self.written != spec.chunk_len() {
            return Err(Error::BadRequest(format!(
                "chunk {} is {} bytes; {} were sent",
                spec.chunk,
                spec.chunk_len(),
                self.written
            )));
        }
        let (checksum, values) = self.hasher.finish()?;
        if checksum != claimed {
            return Err(Error::Corrupt {
                chunk: spec.chunk,
                reason: "received bytes do not match the sender's checksum".into(),
            });
        }
        let inline = match self.sink {
            Sink::Memory(data) => Some(data),
            Sink::File {
                mut file,
                path,
                tmp,
                busy,
            } => {
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
                let mut tail = codec::encode(&trailer)?;
                tail.extend_from_slice(&(tail.len() as u32).to_le_bytes());
                tail.extend_from_slice(CHUNK_MAGIC);
                file.finish(&tail)
                    .map_err(|e| Error::storage("syncing a chunk", e))?;
                let dest = self
                    .store
                    .chunk_path(&spec.owner, &spec.name, spec.version, spec.chunk);
                let parent = dest.parent().expect("a chunk path has a folder");
                fs::create_dir_all(parent)
                    .map_err(|e| Error::storage("creating a file folder", e))?;
                fs::rename(&path, &dest)
                    .map_err(|e| Error::storage(format!("renaming into {}", dest.display()), e))?;
                tmp.disarm();
                drop(busy);
                if let Err(e) = sync_dir(parent) {
                    remove_file_logged(&dest);
                    return Err(e);
                }
                None
            }
        };
        Ok(Sealed {
            store: self.store,
            spec: self.spec,
            checksum,
            values,
            data: inline,
        })
    }
}

/// A received chunk whose bytes checked out, not yet recorded (see
/// [`ChunkWriter::seal`]): a packed chunk's bytes, or `None` for a chunk
/// file already in place.
pub struct Sealed {
    store: Arc<Store>,
    pub(super) spec: ChunkSpec,
    pub(super) checksum: Checksum,
    /// Its block values (see `blocks`), recorded with it.
    pub(super) values: Vec<BlockValue>,
    pub(super) data: Option<Vec<u8>>,
}

/// A sink writing to a fresh file under `tmp/`, removed unless finished.
fn temp_sink(store: &Store, len: u64) -> Result<Sink> {
    let tmp = store.tmp_path()?;
    let file = File::create(&tmp).map_err(|e| Error::storage("creating a chunk file", e))?;
    Ok(Sink::File {
        file: DirectFile::new(file, 0, len),
        path: tmp.clone(),
        tmp: RemoveOnDrop(Some(tmp)),
        busy: None,
    })
}

/// Feeds the first `len` bytes of a partial chunk `file` to `feed`.
pub(super) fn hash_prefix(
    file: &File,
    len: u64,
    mut feed: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; len.min(MAX_BLOCK as u64) as usize];
    let mut at = 0;
    while at < len {
        let want = (len - at).min(MAX_BLOCK as u64) as usize;
        read_exact_at(file, &mut buf[..want], at)
            .map_err(|e| Error::storage("reading a partial chunk", e))?;
        feed(&buf[..want])?;
        at += want as u64;
    }
    Ok(())
}

/// Where a stored chunk's bytes are read from.
enum Source {
    /// `direct`: read past the page cache (see `crate::direct`).
    File {
        file: File,
        path: PathBuf,
        direct: bool,
    },
    Memory(Bytes),
}

/// A stored chunk being read. Yields the data in blocks and checks the
/// checksum when the last block has been read.
pub struct ChunkReader {
    source: Source,
    remaining: u64,
    /// Where the bytes read end: the chunk's end, or a range's.
    end: u64,
    hasher: blake3::Hasher,
    /// Reading a range (see [`ChunkReader::range`]): each block is checked
    /// against the chunk's block values as it completes, not the checksum.
    blocks: Option<BlockHasher>,
    len: u64,
    chunk: u32,
    checksum: Checksum,
}

impl ChunkReader {
    /// A reader of a chunk file, after checking its trailer names `id` and
    /// carries `expected` (the checksum recorded when it was stored).
    pub(super) fn file(path: PathBuf, id: ChunkId<'_>, expected: Checksum) -> Result<ChunkReader> {
        let chunk = id.chunk;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    name: format!("{} (chunk {chunk})", id.name),
                })
            }
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        let trailer = read_trailer(&file).map_err(|reason| Error::Corrupt { chunk, reason })?;
        let got = (
            trailer.owner.as_str(),
            trailer.name.as_str(),
            trailer.version,
            trailer.chunk,
        );
        if got != (id.owner, id.name, id.version, chunk) || trailer.checksum != expected {
            return Err(Error::Corrupt {
                chunk,
                reason: "chunk trailer does not match the chunk's record".into(),
            });
        }
        let id = ChunkId {
            len: trailer.len,
            ..id
        };
        let direct = trailer.len >= DIRECT_READ_MIN && direct::set_direct(&file, true).is_ok();
        Ok(ChunkReader {
            source: Source::File { file, path, direct },
            remaining: trailer.len,
            end: trailer.len,
            hasher: id.hasher(),
            blocks: None,
            len: trailer.len,
            chunk,
            checksum: expected,
        })
    }

    /// A reader of a packed chunk's bytes.
    pub(super) fn memory(data: Bytes, id: ChunkId<'_>, expected: Checksum) -> ChunkReader {
        let len = data.len() as u64;
        let id = ChunkId { len, ..id };
        ChunkReader {
            source: Source::Memory(data),
            remaining: len,
            end: len,
            hasher: id.hasher(),
            blocks: None,
            len,
            chunk: id.chunk,
            checksum: expected,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn checksum(&self) -> Checksum {
        self.checksum
    }

    /// This reader, made to read only the whole blocks covering `range`
    /// (see [`Layout::span`]), each checked against `values` (the chunk's
    /// block values, already checked against its checksum). Returns where
    /// the blocks start and end. A chunk of one block is read whole.
    pub(super) fn range(
        mut self,
        id: &ChunkId<'_>,
        range: Range<u64>,
        values: Vec<BlockValue>,
    ) -> (ChunkReader, Range<u64>) {
        let (first, span) = Layout::of(id).span(range);
        if !values.is_empty() {
            if let Source::Memory(data) = &mut self.source {
                *data = data.slice(span.start as usize..span.end as usize);
            }
            self.blocks = Some(BlockHasher::checking(id, first, values));
            self.remaining = span.end - span.start;
            self.end = span.end;
        }
        (self, span)
    }

    /// The whole chunk, checked (it must fit in memory: a small file's).
    pub fn read_all(mut self) -> Result<Bytes> {
        let mut all = BytesMut::new();
        while let Some(block) = self.next_block()? {
            all.extend_from_slice(&block);
        }
        Ok(all.freeze())
    }

    /// The next block of data; `Ok(None)` after the last one, once the checksum
    /// has verified. A mismatch is `Error::Corrupt`.
    pub fn next_block(&mut self) -> Result<Option<Bytes>> {
        let chunk = self.chunk;
        if self.remaining == 0 && self.blocks.is_some() {
            // Every block was checked as it completed.
            return Ok(None);
        }
        if self.remaining == 0 {
            return if checksum_of(&self.hasher) == self.checksum {
                Ok(None)
            } else {
                // The path is for the server's log; a reply names the chunk only.
                if let Source::File { path, .. } = &self.source {
                    tracing::warn!(path = %path.display(), chunk, "checksum mismatch");
                }
                Err(Error::Corrupt {
                    chunk,
                    reason: "checksum mismatch".into(),
                })
            };
        }
        let at = self.end - self.remaining;
        let mut want = self.remaining.min(MAX_BLOCK as u64);
        if let Some(blocks) = &self.blocks {
            // A frame per block: the reader passes each on once checked.
            want = want.min(blocks.block_end() - at);
        }
        let want = want as usize;
        let block = match &mut self.source {
            Source::Memory(data) => data.split_to(want),
            Source::File { file, path, direct } => {
                read_block(file, direct, at, want).map_err(|e| {
                    tracing::warn!(path = %path.display(), chunk, error = %e, "cannot read a chunk file");
                    Error::Corrupt {
                        chunk,
                        reason: format!("reading it failed: {e}"),
                    }
                })?
            }
        };
        match &mut self.blocks {
            Some(blocks) => blocks.update(&block).map_err(|e| {
                if let Source::File { path, .. } = &self.source {
                    tracing::warn!(path = %path.display(), chunk, "block mismatch");
                }
                match e {
                    Error::Corrupt { reason, .. } => Error::Corrupt { chunk, reason },
                    e => e,
                }
            })?,
            None => {
                self.hasher.update(&block);
            }
        }
        self.remaining -= want as u64;
        Ok(Some(block))
    }

    /// Reads to the end, checking the checksum.
    pub fn check(mut self) -> Result<u64> {
        while self.next_block()?.is_some() {}
        Ok(self.len)
    }
}

/// Reads `buf.len()` bytes of `file` at `offset`, and once more if that
/// fails: a copy whose read fails is quarantined, and one transient I/O
/// error must not make a good copy look bad.
pub(super) fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, offset)
        .or_else(|_| file.read_exact_at(buf, offset))
}

/// `len` bytes at `at` of a chunk file: past the page cache while `direct`
/// (see `crate::direct`); through it from a range that starts inside a
/// page, or a filesystem that would not (`O_DIRECT` then off for good).
fn read_block(file: &File, direct: &mut bool, at: u64, len: usize) -> std::io::Result<Bytes> {
    if *direct {
        match direct::read_at(file, at, len) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                direct::set_direct(file, false)?;
                *direct = false;
            }
            read => return read,
        }
    }
    let mut buf = BytesMut::zeroed(len);
    read_exact_at(file, &mut buf, at)?;
    Ok(buf.freeze())
}

/// Reads and checks a chunk file's trailer.
pub(super) fn read_trailer(file: &File) -> std::result::Result<ChunkTrailer, String> {
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    if file_len < 12 {
        return Err("chunk file too short".into());
    }
    let mut end = [0u8; 12];
    read_exact_at(file, &mut end, file_len - 12).map_err(|e| e.to_string())?;
    if &end[4..] != CHUNK_MAGIC {
        return Err("chunk file has no trailer (truncated?)".into());
    }
    let trailer_len = u32::from_le_bytes(end[..4].try_into().expect("4 bytes"));
    if trailer_len > MAX_TRAILER || u64::from(trailer_len) + 12 > file_len {
        return Err("chunk trailer length is out of range".into());
    }
    let mut body = vec![0u8; trailer_len as usize];
    read_exact_at(file, &mut body, file_len - 12 - u64::from(trailer_len))
        .map_err(|e| e.to_string())?;
    let trailer: ChunkTrailer = codec::decode(&body).map_err(|e| e.to_string())?;
    if trailer.len + u64::from(trailer_len) + 12 != file_len {
        return Err("chunk file length does not match its trailer".into());
    }
    Ok(trailer)
}

/// `<gen:016x>-<writer:016x>.<chunk>` → (version, chunk).
pub(super) fn parse_chunk_file_name(name: &std::ffi::OsStr) -> Option<(Version, u32)> {
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

/// The folder holding `owner`'s file `name`'s chunk files in the store under `root`.
pub fn file_dir(root: &Path, owner: &str, name: &str) -> PathBuf {
    root.join("users").join(owner).join(file_id(owner, name))
}

/// The folder holding the kept partial chunks of `owner`'s uploads of
/// `name` in the store under `root`.
pub fn partial_dir(root: &Path, owner: &str, name: &str) -> PathBuf {
    root.join(PARTIAL).join(owner).join(file_id(owner, name))
}

/// The folder of kept partial chunks under a store's root.
pub(super) const PARTIAL: &str = "partial";

/// A file's folder name: the hex of the first 16 bytes of BLAKE3(`owner/name`).
fn file_id(owner: &str, name: &str) -> String {
    let mut id = blake3::Hasher::new();
    id.update(owner.as_bytes());
    id.update(b"/");
    id.update(name.as_bytes());
    crate::hex(&id.finalize().as_bytes()[..16])
}

/// Syncs a folder, so the renames into it survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}

pub(super) fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("listing {}", dir.display()), e)),
    }
}

pub(super) fn remove_file_logged(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove file");
        }
    }
}

/// Removes a temp file unless disarmed.
pub(super) struct RemoveOnDrop(pub(super) Option<PathBuf>);

impl RemoveOnDrop {
    pub(super) fn disarm(mut self) {
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
