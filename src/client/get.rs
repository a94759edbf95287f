//! GET: one task per chunk fetches it from a holder into a part file
//! beside the target, verifies it, and the file is renamed into place.
//!
//! The part file has a fixed name beside the target, with a record of how
//! much of each chunk it holds (see `resume`). A GET cancelled or failed
//! removes both, unless it is `get -c`; a killed one leaves them. `get -c`
//! goes on with them if they are of the same data: each chunk continues
//! from where it stopped (`GetChunkFrom`), its hash seeded by reading the
//! bytes already written, and the whole chunk is checked against the
//! manifest; a chunk that does not match is fetched again from its start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::{join_all, try_join_all};
use tracing::debug;

use crate::direct::DirectFile;
use crate::error::{Error, Result};
use crate::placement::{chunk_range, Placement};
use crate::protocol::{
    checksum_of, ChunkId, FileDigest, Kept, Manifest, Request, Response, Version,
};

use super::resume::Written;
use super::*;

/// What a GET did.
#[derive(Debug, Clone)]
pub struct GetReceipt {
    pub size: u64,
    pub path: PathBuf,
    /// The file's digest recorded at PUT; every chunk has been verified
    /// against BLAKE3 checksums computed from the same bytes.
    pub digest: FileDigest,
    /// The manifest's `kept` and `stored_at`, for `get -p`.
    pub kept: Option<Kept>,
    pub stored_at: u64,
}

/// Per member (by index): the version it has a manifest of, if any, and
/// the chunks of the file's data it holds.
pub(super) type Holdings = Vec<(usize, Option<Version>, Vec<u32>)>;

/// Chunks of a small file that came with its manifests (`Fetch`), each
/// verified against the newest manifest: (chunk, bytes).
pub(super) type Fetched = Vec<(u32, bytes::Bytes)>;

impl Client {
    /// The file's newest manifest among the members' answers (in the
    /// ring order `order`), and which chunks of which version each member
    /// holds: where a chunk is looked for once its placed holders have
    /// failed. With `data`, a small file's chunks come with the answers
    /// too, each from the holder a GET would read it from first (as placed
    /// on the ring as it is now: a file stored on another ring, or under
    /// another name, gets fewer or none).
    /// `NotFound` (naming `name`) for no file or a deleted one.
    pub(super) async fn newest_held(
        &self,
        order: &Ring,
        scope: &Scope,
        name: &str,
        data: bool,
    ) -> Result<(Manifest, Holdings, Fetched)> {
        let n = order.len() as u32;
        let placement = Placement::of(&scope.owner, &scope.name);
        let mut wanted: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        for chunk in (1..=n).filter(|_| data) {
            if let Some(&i) = self.holders_up_first(order, &placement, chunk, n).first() {
                wanted.entry(i).or_default().push(chunk);
            }
        }
        let answers: Vec<_> = join_all(order.iter().map(|&i| {
            let request = scope.request(
                Request::Fetch {
                    name: scope.name.clone(),
                    chunks: wanted.remove(&i).unwrap_or_default(),
                },
                &[],
            );
            async move { (i, self.call(i, &request).await) }
        }))
        .await
        .into_iter()
        .map(|(i, answer)| match answer? {
            Response::FileData {
                manifest,
                held,
                data,
            } => Ok((i, manifest, held, data)),
            other => Err(unexpected(&self.server_name(i), &other)),
        })
        .collect();
        let held: Holdings = answers
            .iter()
            .flatten()
            .map(|(i, m, held, _)| (*i, m.as_ref().map(|m| m.version), held.clone()))
            .collect();
        let (answers, _) = any_answered(answers.into_iter().enumerate())?;
        let newest = answers
            .iter()
            .filter_map(|(_, (_, m, _, _))| m.as_ref())
            .max_by_key(|m| m.version);
        let manifest = match newest {
            Some(m) if !m.deleted => m.clone(),
            _ => {
                return Err(Error::NotFound {
                    name: name.to_string(),
                })
            }
        };
        let mut fetched = Fetched::new();
        for (_, (_, m, _, data)) in answers {
            if m.is_none_or(|m| m.version != manifest.version) {
                continue;
            }
            for (chunk, bytes) in data {
                let fits = fetched.iter().all(|(c, _)| *c != chunk)
                    && verifies(&scope.owner, &manifest, chunk, &bytes);
                if fits {
                    fetched.push((chunk, bytes));
                }
            }
        }
        Ok((manifest, held, fetched))
    }

    /// The holders of `chunk` (of `chunks`), those known to be down (or
    /// hung) last, so they cost no timeout; the rest in the placement's order.
    fn holders_up_first(
        &self,
        order: &Ring,
        placement: &Placement,
        chunk: u32,
        chunks: u32,
    ) -> Vec<usize> {
        let mut holders = order.holders(placement, chunk, chunks);
        holders.sort_by_key(|&i| !self.slot(i).up.load(Ordering::Relaxed));
        holders
    }

    /// Fetches `remote` into the local file `local`, which appears only when
    /// every byte has arrived and verified.
    pub async fn get(
        &self,
        remote: &str,
        local: &Path,
        progress: &dyn Progress,
    ) -> Result<GetReceipt> {
        self.get_with(remote, local, Transfer::default(), progress)
            .await
    }

    /// [`Client::get`], going further as `how` says.
    pub async fn get_with(
        &self,
        remote: &str,
        local: &Path,
        how: Transfer,
        progress: &dyn Progress,
    ) -> Result<GetReceipt> {
        let receipt = one_command(self.get_command(remote, local, how, progress)).await?;
        if how.keep_times {
            keep_times(&receipt).map_err(|e| Error::io(local.display().to_string(), e))?;
        }
        Ok(receipt)
    }

    async fn get_command(
        &self,
        remote: &str,
        local: &Path,
        how: Transfer,
        progress: &dyn Progress,
    ) -> Result<GetReceipt> {
        // A writer may replace the file while we read it, and the old
        // version's chunks go once the new one is committed. Then a chunk is
        // missing everywhere: start again with the new manifest (a few times).
        // The ring may change too (a server joins or leaves): then the
        // copies move, and the ring is asked again.
        let scope = self.file_scope(remote)?;
        let counted = Counted::new(progress);
        let mut attempt = 0;
        self.maybe_refresh().await;
        loop {
            let order = self.order();
            let (manifest, held, fetched) = self.newest_held(&order, &scope, remote, true).await?;
            let source = Source {
                order: &order,
                held: &held,
                fetched: &fetched,
                scope: &scope,
            };
            match self
                .get_version(&manifest, local, how, &counted, &source)
                .await
            {
                Err(e @ Error::ChunkUnavailable { .. }) if attempt < 3 => {
                    let newest = self.newest_manifest(&scope).await?;
                    let _ = self.refresh_ring().await;
                    let moved = *self.order() != *order;
                    if !moved && newest.is_none_or(|m| m.version == manifest.version) {
                        return Err(e);
                    }
                    debug!(
                        file = remote,
                        "the file or the ring changed while being read; again"
                    );
                    counted.reset();
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// GET of one known version.
    async fn get_version(
        &self,
        manifest: &Manifest,
        local: &Path,
        how: Transfer,
        progress: &dyn Progress,
        source: &Source<'_>,
    ) -> Result<GetReceipt> {
        let dir = match local.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Errors name the target the user gave, never the temp file.
        let local_error = |e| Error::io(local.display().to_string(), e);
        let tmp = PartFile::open(dir, local, manifest, how.resume)?;
        progress.start(manifest.size);
        let placement = Placement::of(&source.scope.owner, manifest.data_name());
        let part = Part {
            path: &tmp.path,
            file: &tmp.file,
            target: local,
            written: &tmp.written,
        };
        try_join_all(
            (1..=manifest.chunks)
                .map(|c| self.get_chunk(manifest, placement, c, &part, progress, source)),
        )
        .await?;
        // Renamed into place only when every chunk has verified, so the file
        // never appears partial. Like cp or rsync, GET does not force it to
        // disk: the stored copies are what must survive a crash.
        tmp.persist(local).map_err(local_error)?;
        Ok(GetReceipt {
            size: manifest.size,
            path: local.to_path_buf(),
            digest: manifest.digest,
            kept: manifest.kept,
            stored_at: manifest.stored_at,
        })
    }

    /// Fetches one chunk from its first holder, or from the second if that
    /// fails; then from any other server that said it holds the chunk (while
    /// the ring changes, copies are on their way to their new holders).
    async fn get_chunk(
        &self,
        manifest: &Manifest,
        placement: Placement,
        chunk: u32,
        part: &Part<'_>,
        progress: &dyn Progress,
        source: &Source<'_>,
    ) -> Result<()> {
        // A small file's chunk that came with its manifest (verified).
        if let Some((_, bytes)) = source.fetched.iter().find(|(c, _)| *c == chunk) {
            use std::os::unix::fs::FileExt;
            let (start, _) = chunk_range(manifest.size, manifest.chunks, chunk);
            part.file
                .write_all_at(bytes, start)
                .map_err(|e| Error::io(part.target.display().to_string(), e))?;
            part.written.set(chunk, bytes.len() as u64, false);
            progress.add(bytes.len() as i64);
            return Ok(());
        }
        let mut failures = Vec::new();
        let mut holders = self.holders_up_first(source.order, &placement, chunk, manifest.chunks);
        for &(i, version, ref held) in source.held {
            if version == Some(manifest.version) && held.contains(&chunk) && !holders.contains(&i) {
                holders.push(i);
            }
        }
        let mut next = 0;
        while let Some(&i) = holders.get(next) {
            // Go on after what the part file holds of the chunk.
            let offset = part.written.done(chunk);
            let fetched = match self
                .fetch_chunk(i, source.scope, manifest, chunk, part, progress, offset)
                .await
            {
                Ok(()) => Ok(()),
                // The bytes kept locally, not the server's, may be what
                // does not match: the whole chunk again, from the same holder.
                Err(Fetch::Server(Error::Corrupt { .. })) if offset > 0 => {
                    debug!(file = %manifest.name, chunk, offset, "the part already written does not match: fetched again whole");
                    part.written.set(chunk, 0, true);
                    continue;
                }
                Err(Fetch::Server(e)) => Err(e),
                // Every holder would fail the same way (a full disk, say).
                Err(Fetch::Local(e)) => return Err(e),
            };
            next += 1;
            // A holder that timed out or hung up mid-chunk is down: later
            // reads ask its partner first, and the ring is asked elsewhere.
            self.note(i, &fetched);
            match fetched {
                Ok(()) => return Ok(()),
                Err(e) => {
                    debug!(server = %self.server_name(i), file = %manifest.name, chunk, error = %e, "chunk fetch failed");
                    failures.push(e.to_string());
                }
            }
        }
        Err(Error::ChunkUnavailable {
            name: manifest.name.clone(),
            chunk,
            reason: failures.join("; "),
        })
    }

    /// Fetches chunk `chunk` from member `i` into the part file, from byte
    /// `offset` of the chunk on (the bytes before it are read back from the
    /// part file into the checksum).
    #[allow(clippy::too_many_arguments)]
    async fn fetch_chunk(
        &self,
        i: usize,
        scope: &Scope,
        manifest: &Manifest,
        chunk: u32,
        part: &Part<'_>,
        progress: &dyn Progress,
        offset: u64,
    ) -> std::result::Result<(), Fetch> {
        let server = self.server_name(i);
        let server = server.as_str();
        let (start, end) = chunk_range(manifest.size, manifest.chunks, chunk);
        let len = end - start;
        let mut conn = self.conn(i).await?;
        let (name, version) = (manifest.data_name().to_string(), manifest.data_version());
        let request = scope.request(
            match offset {
                0 => Request::GetChunk {
                    name,
                    version,
                    chunk,
                },
                offset => Request::GetChunkFrom {
                    name,
                    version,
                    chunk,
                    offset,
                },
            },
            &[&manifest.name],
        );
        match conn.call(&request).await? {
            Response::Chunk { len: l } if l == len => {}
            other => return Err(unexpected(server, &other).into()),
        }
        progress.add(offset as i64);
        let mut received = 0u64;
        let result = async {
            let hasher = ChunkId {
                owner: &scope.owner,
                name: manifest.data_name(),
                version: manifest.data_version(),
                chunk,
                len,
            }
            .hasher();
            // Hashing and writing run on the blocking pool, one writer per
            // chunk: the chunks of a GET then hash on every core, and the
            // async thread only moves blocks (no copy into tokio's file buffer).
            let (tx, writer) = spawn_chunk_writer(part, chunk, (start, len), offset, hasher);
            while let Some(block) = next_block(&mut conn, server).await? {
                if offset + received + block.len() as u64 > len {
                    return Err(Error::Protocol(format!("{server} sent too much data")).into());
                }
                received += block.len() as u64;
                progress.add(block.len() as i64);
                if tx.send(block).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            drop(tx);
            let checksum = writer
                .await
                .map_err(|e| Fetch::Local(Error::Internal(format!("chunk writer: {e}"))))?
                .map_err(Fetch::Local)?;
            if offset + received != len {
                return Err(Error::Protocol(format!("{server} sent a short chunk")).into());
            }
            if Some(&checksum) != manifest.checksums.get(chunk as usize - 1) {
                return Err(Error::Corrupt {
                    chunk,
                    reason: format!("{server} sent bytes that do not match the checksum"),
                }
                .into());
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                self.release(i, conn);
                Ok(())
            }
            Err(e) => {
                progress.add(-((offset + received) as i64));
                Err(e)
            }
        }
    }
}

/// Passes progress on and remembers the sum, so a restarted transfer can
/// take back what its first attempt reported.
struct Counted<'a> {
    inner: &'a dyn Progress,
    sum: std::sync::atomic::AtomicI64,
}

impl<'a> Counted<'a> {
    fn new(inner: &'a dyn Progress) -> Self {
        Counted {
            inner,
            sum: std::sync::atomic::AtomicI64::new(0),
        }
    }

    fn reset(&self) {
        let sum = self.sum.swap(0, Ordering::Relaxed);
        self.inner.add(-sum);
    }
}

impl Progress for Counted<'_> {
    fn start(&self, total: u64) {
        self.inner.start(total);
    }

    fn add(&self, delta: i64) {
        self.sum.fetch_add(delta, Ordering::Relaxed);
        self.inner.add(delta);
    }
}

/// A GET's part file, beside its target (`.ringdfs-<key>.part`, see
/// `resume`), locked while this GET writes it: removed with its record
/// unless renamed into place, or kept for `get -c`.
struct PartFile {
    path: PathBuf,
    /// Locked: one GET writes a part file at a time.
    file: std::fs::File,
    written: Arc<Written>,
    armed: bool,
    /// `get -c`: a failure or cancel keeps it for the next `get -c`.
    keep: bool,
}

impl PartFile {
    /// Opens the part file of a GET of `manifest` to `target` in `dir`:
    /// with `resume`, going on with what an earlier GET of the same data
    /// left; else empty.
    fn open(dir: &Path, target: &Path, manifest: &Manifest, resume: bool) -> Result<PartFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let local_error = |e| Error::io(target.display().to_string(), e);
        let (path, record) = super::resume::part_paths(dir, target);
        // Never through a symbolic link someone put there.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(local_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Refused(format!(
                    "{}: another get is writing it",
                    target.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(local_error(e)),
        }
        let size = file.metadata().map_err(local_error)?.len();
        let kept = match resume && size == manifest.size {
            true => Written::resumed(&record, manifest),
            false => None,
        };
        let done = match kept {
            Some(done) => done,
            None => {
                file.set_len(0).map_err(local_error)?;
                file.set_len(manifest.size).map_err(local_error)?;
                vec![0; manifest.chunks as usize]
            }
        };
        Ok(PartFile {
            path,
            file,
            written: Arc::new(Written::start(record, manifest, done)),
            armed: true,
            keep: resume,
        })
    }

    /// Renames the file to `target`.
    fn persist(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, target)?;
        self.armed = false;
        self.written.remove();
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.armed && !self.keep {
            let _ = std::fs::remove_file(&self.path);
            self.written.remove();
        } else if self.armed {
            self.written.save();
        }
    }
}

/// Where a GET writes: the part file, what of it is written, and the
/// target it becomes (which errors name).
struct Part<'a> {
    path: &'a Path,
    file: &'a std::fs::File,
    target: &'a Path,
    written: &'a Arc<Written>,
}

/// Why a chunk fetch failed: the server (its other holder may serve it) or
/// the local file (every holder would fail the same way).
enum Fetch {
    Server(Error),
    Local(Error),
}

impl From<Error> for Fetch {
    fn from(e: Error) -> Self {
        Fetch::Server(e)
    }
}

/// Where a GET may find chunks: the ring it reads over (position - 1 → slot)
/// and what each server said it holds (slot, version, chunks).
struct Source<'a> {
    order: &'a Ring,
    held: &'a [(usize, Option<Version>, Vec<u32>)],
    fetched: &'a [(u32, bytes::Bytes)],
    /// Whose file it is.
    scope: &'a Scope,
}

/// A blocking task that writes the blocks sent to it into the part file
/// for chunk `chunk` (at `start`, `chunk_len` bytes) from its byte `offset` on, hashing them
/// after the `offset` bytes already there (read back first); it notes what
/// is written in the part's record and returns the checksum once the
/// sender is dropped. Its errors name the part's target.
fn spawn_chunk_writer(
    part: &Part<'_>,
    chunk: u32,
    (start, chunk_len): (u64, u64),
    offset: u64,
    mut hasher: blake3::Hasher,
) -> (
    tokio::sync::mpsc::Sender<bytes::Bytes>,
    tokio::task::JoinHandle<Result<crate::protocol::Checksum>>,
) {
    use std::os::unix::fs::FileExt;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(PIPELINE_DEPTH);
    let (path, target) = (part.path.to_path_buf(), part.target.display().to_string());
    let written = Arc::clone(part.written);
    let writer = tokio::task::spawn_blocking(move || {
        let local_error = |e| Error::io(target.clone(), e);
        // Its own open: its own O_DIRECT flag (see `direct`).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(local_error)?;
        // Only what is read back (resuming) needs a buffer.
        let mut buf = vec![0u8; offset.min(crate::protocol::MAX_BLOCK as u64) as usize];
        let mut at = 0u64;
        while at < offset {
            let want = (offset - at).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..want], start + at)
                .map_err(local_error)?;
            hasher.update(&buf[..want]);
            at += want as u64;
        }
        let len = chunk_len - offset;
        let mut out = DirectFile::new(file, start + offset, len);
        while let Some(block) = rx.blocking_recv() {
            hasher.update(&block);
            out.write_all(&block).map_err(local_error)?;
            written.set(chunk, out.written_to() - start, false);
        }
        // What is left in its stage (the rest is not forced to disk: see
        // `get_version`).
        out.flush().map_err(local_error)?;
        written.set(chunk, out.written_to() - start, false);
        Ok(checksum_of(&hasher))
    });
    (tx, writer)
}

/// `get -p`: gives the fetched file the modification time and mode bits
/// `put -p` kept (a file put without `-p`: when it was stored, and the mode
/// stays as created).
fn keep_times(receipt: &GetReceipt) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};
    let file = std::fs::File::options().write(true).open(&receipt.path)?;
    let when = match receipt.kept {
        Some(k) if k.mtime >= 0 => {
            UNIX_EPOCH + Duration::new(k.mtime.unsigned_abs(), k.mtime_nanos)
        }
        Some(k) => {
            UNIX_EPOCH - Duration::from_secs(k.mtime.unsigned_abs())
                + Duration::from_nanos(u64::from(k.mtime_nanos))
        }
        None => UNIX_EPOCH + Duration::from_secs(receipt.stored_at),
    };
    file.set_modified(when)?;
    if let Some(k) = receipt.kept {
        file.set_permissions(std::fs::Permissions::from_mode(k.mode & 0o7777))?;
    }
    Ok(())
}

/// Whether `bytes` are chunk `chunk` of `manifest`'s data (owned by
/// `owner`): its length and its checksum.
fn verifies(owner: &str, manifest: &Manifest, chunk: u32, bytes: &[u8]) -> bool {
    let Some(expected) = manifest.checksums.get((chunk as usize).wrapping_sub(1)) else {
        return false;
    };
    let (start, end) = chunk_range(manifest.size, manifest.chunks, chunk);
    if bytes.len() as u64 != end - start {
        return false;
    }
    let id = ChunkId {
        owner,
        name: manifest.data_name(),
        version: manifest.data_version(),
        chunk,
        len: end - start,
    };
    id.checksum(bytes) == *expected
}
