//! PUT: one task per chunk streams its range of the local file to the
//! chunk's holders; the manifest is committed once every chunk is stored.
//!
//! `put -c` continues an interrupted PUT of the same local file: it writes
//! the version the upload record names (see `resume`), and each chunk asks
//! its holders how much of it they kept (`ChunkPrefix`). A holder's kept
//! bytes are used only if their checksum matches the same bytes of the
//! local file; the chunk then goes on from there (`PutChunkFrom`), else
//! from its start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::{join_all, try_join_all};
use tracing::debug;

use crate::error::{Error, ErrorKind, Result};
use crate::placement::{chunk_range, Placement};
use crate::protocol::{
    checksum_of, Checksum, ChunkId, FileDigest, Hint, Kept, Manifest, ObjectMeta, Request,
    Response, SmallFile, SmallPart, Version, MAX_BLOCK, SMALL_FILE,
};
use crate::standing::Standing;
use crate::unix_now;

use super::resume::{LocalFile, UploadRecord, RESUME_MIN};
use super::source::Source;
use super::*;

/// What a PUT did.
#[derive(Debug, Clone)]
pub struct PutReceipt {
    pub size: u64,
    pub chunks: u32,
    /// Chunk copies stored, and how many there should be (two per chunk on a
    /// ring of two or more). Fewer: the file is degraded until healed.
    pub copies: u32,
    pub wanted: u32,
    /// Servers that could not take their copies.
    pub missing: Vec<String>,
    /// Servers that took copies but are not in one ring with the others
    /// (see [`Standing`]): nobody heals or counts their copies until they
    /// rejoin.
    pub apart: Vec<(String, Standing)>,
    /// Those of them that answered but could not store a copy, and why
    /// ("no space left"); the others could not be reached.
    pub refused: Vec<(String, String)>,
    pub version: Version,
    /// The file's digest: its SHA-256 (`sha256sum`'s), or the MD5 an HTTP
    /// upload worked out.
    pub digest: FileDigest,
}

/// What the HTTP endpoints know of an object they store (see
/// [`Client::put_object`]).
#[derive(Debug, Clone)]
pub struct Object {
    pub meta: ObjectMeta,
    /// MD5 of the object's bytes, if known: the file's digest (else the
    /// PUT works out its SHA-256).
    pub md5: Option<[u8; 16]>,
}

impl Client {
    /// Stores the local file `local` as `remote`, replacing any older version
    /// once every chunk is stored on both its holders.
    pub async fn put(
        &self,
        local: &Path,
        remote: &str,
        progress: &dyn Progress,
    ) -> Result<PutReceipt> {
        self.put_with(local, remote, Transfer::default(), progress)
            .await
    }

    /// [`Client::put`], going further as `how` says.
    pub async fn put_with(
        &self,
        local: &Path,
        remote: &str,
        how: Transfer,
        progress: &dyn Progress,
    ) -> Result<PutReceipt> {
        one_command(self.put_command(Local::File(local), remote, how, None, progress)).await
    }

    /// [`Client::put`] of an object that came in over HTTP: its metadata
    /// is kept in the manifest, and its MD5 (computed as the body arrived)
    /// is not computed again.
    pub async fn put_object(
        &self,
        local: &Path,
        remote: &str,
        object: Object,
        progress: &dyn Progress,
    ) -> Result<PutReceipt> {
        let how = Transfer::default();
        let local = Local::File(local);
        one_command(self.put_command(local, remote, how, Some(object), progress)).await
    }

    /// [`Client::put_object`] of an object that came in as several files
    /// (an S3 multipart upload's parts, in order): stored as the one file
    /// they make end to end, read where they lie (never joined on disk).
    pub async fn put_object_parts(
        &self,
        parts: &[PathBuf],
        remote: &str,
        object: Object,
        progress: &dyn Progress,
    ) -> Result<PutReceipt> {
        let how = Transfer::default();
        let local = Local::Parts(parts);
        one_command(self.put_command(local, remote, how, Some(object), progress)).await
    }

    async fn put_command(
        &self,
        local: Local<'_>,
        remote: &str,
        how: Transfer,
        object: Option<Object>,
        progress: &dyn Progress,
    ) -> Result<PutReceipt> {
        // A small file's version is taken from the clock without asking
        // what is current; should a holder have had a newer one, it is
        // stored again above that.
        let mut after = None;
        for _ in 0..STALE_TRIES {
            let object = object.clone();
            match self
                .put_attempt(local, remote, how, object, after, progress)
                .await?
            {
                Attempt::Stored(receipt) => return Ok(receipt),
                Attempt::Stale(current) => after = Some(current),
            }
        }
        Err(Error::Refused(format!(
            "{remote}: other writers kept replacing it while it was stored; try again"
        )))
    }

    async fn put_attempt(
        &self,
        local: Local<'_>,
        remote: &str,
        how: Transfer,
        object: Option<Object>,
        after: Option<Version>,
        progress: &dyn Progress,
    ) -> Result<Attempt> {
        let scope = self.file_scope(remote)?;
        let remote = scope.name.as_str();
        let (source, meta) = local.open().await?;
        let size = source.len();
        let small = size <= SMALL_FILE;
        // A small file's holders refuse it themselves, in the same round
        // trip that would have asked.
        if !small {
            self.check_quota(&scope, size).await?;
        }
        // The whole file's digest is sequential work: one blocking thread
        // reads the file front to back while the chunk tasks stream their
        // ranges. A small file is read whole into memory first, and sent
        // from there. An HTTP upload's MD5 is known already.
        let stop_digest = Arc::new(AtomicBool::new(false));
        let _stop_digest_on_drop = SetOnDrop(Arc::clone(&stop_digest));
        let known = object.as_ref().and_then(|o| o.md5).map(FileDigest::Md5);
        let reading = source.clone();
        let body = if small {
            let (data, digest) = tokio::task::spawn_blocking(move || read_small(&reading, known))
                .await
                .map_err(|e| Error::Internal(format!("reader task: {e}")))?
                .map_err(|e| Error::io(source.shown(), e))?;
            Body::Small(data, digest)
        } else {
            Body::Streamed(tokio::task::spawn_blocking(move || match known {
                Some(digest) => Ok(digest),
                None => sha256_of(&reading, &stop_digest),
            }))
        };
        self.maybe_refresh().await;
        let order = self.order();
        // A small file's version comes from the clock alone (above `after`,
        // what a holder had when an earlier attempt was stale): no round
        // trip asks what is current first.
        let current = match small {
            true => after,
            false => newest_of(self.stat_on(&order, &scope).await)?.map(|m| m.version),
        };
        // A large file's upload is recorded, so `put -c` can go on with it;
        // `-c` goes on with the recorded one if it is the same file's, and
        // still newer than what the servers have.
        // (Parts are an upload of the gateway's: nothing to continue.)
        let recorded = match (source.single(), &meta) {
            (Some(path), Some(meta)) if size >= RESUME_MIN => {
                UploadRecord::path(&self.login.user, &scope.owner, remote).map(|at| {
                    let record = UploadRecord {
                        user: self.login.user.clone(),
                        owner: scope.owner.clone(),
                        name: remote.to_string(),
                        version: Version { gen: 0, writer: 0 },
                        local: LocalFile::of(path, meta),
                    };
                    (at, record)
                })
            }
            _ => None,
        };
        let resumed = match (&recorded, how.resume) {
            (Some((path, record)), true) => UploadRecord::version_to_resume(path, record)
                .filter(|v| current.is_none_or(|c| *v > c)),
            _ => None,
        };
        let version = resumed.unwrap_or_else(|| Version::next(current));
        let record_path = recorded.map(|(path, mut record)| {
            record.version = version;
            record.save(&path);
            path
        });
        if resumed.is_some() {
            debug!(file = remote, ?version, "continuing an interrupted upload");
        }
        // Until the commit is sent, a failure or a cancel drops what the
        // servers stored of this version (see `StagedPut`); with `-c` it
        // stays, for the next `put -c`.
        let staged = StagedPut {
            keep: how.resume,
            record: record_path.clone(),
            login: Some(Arc::clone(&self.login)),
            slots: order.iter().map(|&i| self.slot(i)).collect(),
            abort: scope.request(
                Request::Abort {
                    name: remote.to_string(),
                    version,
                },
                &[],
            ),
        };
        progress.start(size);
        let n = order.len() as u32;
        let placement = Placement::of(&scope.owner, remote);
        let upload = UploadPlan {
            source: &source,
            scope: &scope,
            name: remote,
            version,
            size,
            n,
            placement,
            order: Arc::clone(&order),
            resume: resumed.is_some(),
        };
        // `newest`: for a small file, the newest version a holder had.
        let uploaded = async {
            match body {
                Body::Small(data, digest) => {
                    let (chunks, newest) = self.put_small(&upload, &data).await?;
                    Ok((chunks, digest, newest))
                }
                Body::Streamed(digest_task) => {
                    let chunks =
                        try_join_all((1..=n).map(|c| self.put_chunk(&upload, c, progress))).await?;
                    let digest = digest_task
                        .await
                        .map_err(|e| Error::Internal(format!("digest task: {e}")))?
                        .map_err(|e| Error::io(source.shown(), e))?;
                    Ok::<_, Error>((chunks, digest, None))
                }
            }
        }
        .await;
        let (chunks, digest) = match uploaded {
            Ok((_, _, Some(newest))) if newest >= version => {
                debug!(
                    file = remote,
                    ?version,
                    ?newest,
                    "a holder had a newer version"
                );
                staged.abort().await;
                return Ok(Attempt::Stale(newest));
            }
            Ok((chunks, digest, _)) => (chunks, digest),
            Err(e) => {
                staged.abort().await;
                return Err(e);
            }
        };
        if small {
            progress.add(size as i64);
        }
        // Copies that could not be stored: the hint the servers keep for healing.
        let mut missing = Vec::new();
        let mut refused: BTreeMap<String, String> = BTreeMap::new();
        for (c, (_, stored, said_no)) in (1..=n).zip(&chunks) {
            for (i, reason) in said_no {
                refused.insert(self.server_name(*i), reason.clone());
            }
            for i in order.holders(&placement, c, n) {
                if !stored.contains(&i) {
                    missing.push(Hint {
                        chunk: c,
                        server: self.server_name(i),
                    });
                }
            }
        }
        let checksums = chunks.iter().map(|(sum, _, _)| *sum).collect();
        let manifest = Manifest {
            name: remote.to_string(),
            version,
            size,
            chunks: n,
            checksums,
            stored_at: unix_now(),
            digest,
            deleted: false,
            data: None,
            kept: meta.as_ref().filter(|_| how.keep_times).map(kept_of),
            meta: object.map(|o| o.meta),
        };
        let commit = scope.request(
            Request::Commit {
                manifest,
                missing: missing.clone(),
            },
            &[],
        );
        // Visible once any server has the manifest (the others are healed);
        // a server that stored chunks but missed the commit still serves them.
        // So from here on the chunks stay, whatever happens to this call.
        staged.disarm();
        let results = self.call_on(&order, &commit).await;
        any_answered(self.acknowledged(results))?;
        if let Some(path) = &record_path {
            super::resume::remove(path);
        }
        let wanted = n * order.copies();
        let mut down: Vec<String> = missing.iter().map(|h| h.server.clone()).collect();
        down.sort();
        down.dedup();
        let holders: Vec<usize> = order
            .iter()
            .copied()
            .filter(|i| chunks.iter().any(|(_, stored, _)| stored.contains(i)))
            .collect();
        let apart = self.apart_holders(&order, &holders).await;
        Ok(Attempt::Stored(PutReceipt {
            size,
            chunks: n,
            copies: wanted - missing.len() as u32,
            wanted,
            missing: down,
            apart,
            refused: refused.into_iter().collect(),
            version,
            digest,
        }))
    }

    /// Those of `holders` (slots that took copies) that are not in one ring
    /// with the others. Asked only when the ring the operation used says a
    /// holder is down (it answered us all the same), or it was outside the
    /// ring when last asked: then every live member is asked for its
    /// account of the ring (`Status`, which names its successor).
    async fn apart_holders(&self, order: &Ring, holders: &[usize]) -> Vec<(String, Standing)> {
        let suspect = holders.iter().any(|&i| {
            order.down.contains(&self.server_name(i))
                || standing_of(self.slot(i).standing.load(Ordering::Relaxed)) != Standing::InRing
        });
        if !suspect {
            return Vec::new();
        }
        // Members that just failed (a hung one) are not asked again.
        let asked: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.slot(i).up.load(Ordering::Relaxed))
            .collect();
        self.ring_standings(&asked, &Request::Status)
            .await
            .into_iter()
            .filter(|(i, _)| holders.contains(i))
            .filter_map(|(i, standing)| match standing {
                Some(s) if s != Standing::InRing => Some((self.server_name(i), s)),
                _ => None,
            })
            .collect()
    }

    /// Streams chunk `chunk` of the upload to every holder that answers (both,
    /// normally); a holder that fails midway is dropped and the others go on.
    /// Returns the checksum, the holders (member indices) that stored it,
    /// and those that answered they could not, with their reasons.
    async fn put_chunk(
        &self,
        plan: &UploadPlan<'_>,
        chunk: u32,
        progress: &dyn Progress,
    ) -> Result<ChunkStored> {
        let holders = plan.order.holders(&plan.placement, chunk, plan.n);
        let (start, end) = chunk_range(plan.size, plan.n, chunk);
        let len = end - start;
        let header = plan.scope.request(
            Request::PutChunk {
                name: plan.name.to_string(),
                version: plan.version,
                chunk,
                chunks: plan.n,
                size: plan.size,
            },
            &[],
        );
        let mut failures = Vec::new();
        let prefix = plan.scope.request(
            Request::ChunkPrefix {
                name: plan.name.to_string(),
                version: plan.version,
                chunk,
                chunks: plan.n,
                size: plan.size,
            },
            &[],
        );
        let prefix = &prefix;
        // Resuming: what each holder kept of the chunk (an error answer,
        // say from a server that cannot tell, is "nothing").
        let opened = join_all(holders.iter().map(|&i| async move {
            let mut conn = self.conn(i).await?;
            let mut kept = None;
            if plan.resume {
                match conn.call(prefix).await {
                    Ok(Response::Prefix { len: l, checksum }) if l > 0 && l <= len => {
                        kept = Some((l, checksum))
                    }
                    Ok(_) => {}
                    Err(Error::Remote { server, error }) => {
                        debug!(%server, chunk, error = %error.message, "no kept part");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, Error>((i, conn, kept))
        }))
        .await;
        let mut holding: Vec<Holding> = Vec::new();
        for attempt in opened {
            match attempt {
                Ok(holder) => holding.push(holder),
                Err(e) => failures.push(e.to_string()),
            }
        }
        let unavailable = |failures: &[String]| Error::ChunkUnavailable {
            name: plan.name.to_string(),
            chunk,
            reason: failures.join("; "),
        };
        if holding.is_empty() {
            return Err(unavailable(&failures));
        }

        let hasher = ChunkId {
            owner: &plan.scope.owner,
            name: plan.name,
            version: plan.version,
            chunk,
            len,
        }
        .hasher();
        // A holder goes on after what it kept only if those bytes match the
        // local file's; the stream starts at the lowest such point, seeded
        // with the local hash of the bytes before it.
        let marks: Vec<u64> = holding
            .iter()
            .filter_map(|(_, _, k)| k.map(|k| k.0))
            .collect();
        let local_marks = if marks.is_empty() {
            Vec::new()
        } else {
            let source = plan.source.clone();
            let seed = hasher.clone();
            tokio::task::spawn_blocking(move || hash_local_prefixes(&source, start, marks, seed))
                .await
                .map_err(|e| Error::Internal(format!("chunk reader: {e}")))??
        };
        let mut live: Vec<(usize, Conn, u64)> = Vec::new();
        // Holders that stored the whole chunk before the cut: nothing to send.
        let mut whole = Vec::new();
        for (i, conn, kept) in holding {
            let matched = match kept {
                Some((l, sum)) if local_marks.iter().any(|(m, s, _)| *m == l && *s == sum) => {
                    Some(l)
                }
                Some((l, _)) => {
                    debug!(server = %self.server_name(i), chunk, kept = l, "kept part does not match: sent whole");
                    None
                }
                None => None,
            };
            // Only a kept, matching part can be the whole chunk (an empty
            // chunk is still sent: nothing was kept of it).
            if matched == Some(len) {
                self.release(i, conn);
                whole.push(i);
                continue;
            }
            live.push((i, conn, matched.unwrap_or(0)));
        }
        if live.is_empty() {
            let checksum = local_marks
                .iter()
                .find(|(m, _, _)| *m == len)
                .map(|(_, sum, _)| *sum)
                .ok_or_else(|| Error::Internal("a whole chunk without its checksum".into()))?;
            progress.add(len as i64);
            return Ok((checksum, whole, Vec::new()));
        }
        let from = live.iter().map(|(_, _, f)| *f).min().unwrap_or(0);
        let hasher = match local_marks.into_iter().find(|(m, _, _)| *m == from) {
            Some((_, _, seeded)) => seeded,
            None => hasher,
        };
        let headers = join_all(live.iter_mut().map(|(_, c, at)| {
            let header = match *at {
                0 => header.clone(),
                offset => plan.scope.request(
                    Request::PutChunkFrom {
                        name: plan.name.to_string(),
                        version: plan.version,
                        chunk,
                        chunks: plan.n,
                        size: plan.size,
                        offset,
                    },
                    &[],
                ),
            };
            async move { c.send(&header).await }
        }))
        .await;
        live = drop_failed(self, live, headers, &mut failures);
        if live.is_empty() {
            return Err(unavailable(&failures));
        }
        progress.add(from as i64);

        // Reading and hashing run on the blocking pool, one reader per chunk:
        // the chunks of a PUT then hash on every core, and the async thread
        // only sends blocks.
        let (mut blocks, reader) =
            spawn_chunk_reader(plan.source.clone(), start + from, len - from, hasher);
        // Where the next block starts in the chunk.
        let mut at = from;
        while let Some(block) = blocks.recv().await {
            let want = block.len() as u64;
            let sent = join_all(live.iter_mut().map(|(_, c, skip)| {
                // A holder that kept more than the stream's start gets only
                // what is past its own.
                let part = if at + want <= *skip {
                    None
                } else if at < *skip {
                    Some(block.slice((*skip - at) as usize..))
                } else {
                    Some(block.clone())
                };
                async move {
                    match part {
                        Some(b) => c.send_data(b).await,
                        None => Ok(()),
                    }
                }
            }))
            .await;
            live = drop_failed(self, live, sent, &mut failures);
            if live.is_empty() {
                return Err(unavailable(&failures));
            }
            at += want;
            progress.add(want as i64);
        }
        let checksum = reader
            .await
            .map_err(|e| Error::Internal(format!("chunk reader: {e}")))??;
        let done = Request::ChunkDone { checksum };
        let sent = join_all(live.iter_mut().map(|(_, c, _)| c.send(&done))).await;
        live = drop_failed(self, live, sent, &mut failures);
        let replies = join_all(live.iter_mut().map(|(_, c, _)| c.reply())).await;
        let mut stored = whole;
        let mut refused = Vec::new();
        for ((i, conn, _), reply) in live.into_iter().zip(replies) {
            self.note(i, &reply);
            match reply {
                Ok(Response::Ok) => {
                    self.release(i, conn);
                    stored.push(i);
                }
                Ok(other) => failures.push(unexpected(&self.server_name(i), &other).to_string()),
                // It answered: it is up, and says why it could not (no
                // space left, say).
                Err(Error::Remote { server, error }) => {
                    failures.push(format!("{server}: {}", error.message));
                    refused.push((i, error.message));
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if stored.is_empty() {
            return Err(unavailable(&failures));
        }
        for failure in &failures {
            debug!(file = %plan.name, chunk, error = %failure, "a copy could not be stored");
        }
        Ok((checksum, stored, refused))
    }

    /// Stores a small file's chunks (`data` is the whole file): one
    /// `PutSmall` to each holder with all its chunks. Per chunk as
    /// [`Client::put_chunk`] returns it; and the newest version a holder
    /// had, which if newer than the upload's means it was not stored.
    async fn put_small(
        &self,
        plan: &UploadPlan<'_>,
        data: &Bytes,
    ) -> Result<(Vec<ChunkStored>, Option<Version>)> {
        let n = plan.n;
        let (checksums, by_holder) = small_parts(
            &plan.scope.owner,
            plan.name,
            plan.version,
            data,
            &plan.order,
            &plan.placement,
        );
        let replies = join_all(by_holder.into_iter().map(|(i, parts)| async move {
            let chunks: Vec<u32> = parts.iter().map(|p| p.chunk).collect();
            let request = plan.scope.request(
                Request::PutSmall {
                    name: plan.name.to_string(),
                    version: plan.version,
                    chunks: n,
                    size: plan.size,
                    parts,
                },
                &[],
            );
            (i, chunks, self.call(i, &request).await)
        }))
        .await;
        let mut stored = vec![Vec::new(); n as usize];
        let mut refused = vec![Vec::new(); n as usize];
        let mut failures = Vec::new();
        let mut newest = None;
        for (i, chunks, reply) in replies {
            match reply {
                Ok(Response::Stored { current }) => {
                    newest = newest.max(current);
                    for c in chunks {
                        stored[c as usize - 1].push(i);
                    }
                }
                Ok(other) => failures.push(unexpected(&self.server_name(i), &other).to_string()),
                // The user's quota or a share's limits: the same answer
                // from every holder, and the PUT's.
                Err(e @ (Error::OverQuota(_) | Error::Denied(_))) => return Err(e),
                // It answered: it is up, and says why it could not.
                Err(Error::Remote { server, error }) => {
                    failures.push(format!("{server}: {}", error.message));
                    for c in chunks {
                        refused[c as usize - 1].push((i, error.message.clone()));
                    }
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
        if let Some(chunk) = stored.iter().position(Vec::is_empty) {
            return Err(Error::ChunkUnavailable {
                name: plan.name.to_string(),
                chunk: chunk as u32 + 1,
                reason: failures.join("; "),
            });
        }
        for failure in &failures {
            debug!(file = %plan.name, error = %failure, "copies could not be stored");
        }
        let chunks = checksums
            .into_iter()
            .zip(stored)
            .zip(refused)
            .map(|((sum, stored), refused)| (sum, stored, refused))
            .collect();
        Ok((chunks, newest))
    }

    /// Whether a new file `remote` of `size` bytes fits its owner's quota
    /// (the check a PUT makes before sending data), for callers that learn
    /// the size before they have the bytes (the HTTP endpoints, from
    /// `Content-Length`).
    pub async fn check_room(&self, remote: &str, size: u64) -> Result<()> {
        let scope = self.file_scope(remote)?;
        one_command(self.check_quota(&scope, size)).await
    }

    /// Asks the servers, in ring order until one answers, whether a new
    /// file of `size` bytes fits the user's quota; its refusal is the
    /// error, as the one line it says (`quota: ... used; this file needs
    /// ...`). Sends no data.
    async fn check_quota(&self, scope: &Scope, size: u64) -> Result<()> {
        let request = scope.request(Request::CheckQuota { size }, &[&scope.name]);
        let mut last = None;
        for &i in self.order().iter() {
            match self.call(i, &request).await {
                Ok(Response::Ok) => return Ok(()),
                Ok(other) => last = Some(unexpected(&self.server_name(i), &other)),
                Err(Error::Remote { error, .. }) if error.kind == ErrorKind::BadRequest => {
                    return Err(Error::Refused(error.message))
                }
                Err(e @ (Error::OverQuota(_) | Error::Denied(_))) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable {
            server: "the ring".into(),
            reason: "no server answered".into(),
        }))
    }
}

/// Small files stored together by [`Client::put_small_files`]: at most
/// this many, and this many bytes (each holder's share of them stays
/// inside one frame).
pub const BATCH_FILES: usize = 64;
pub const BATCH_BYTES: u64 = 512 << 10;

impl Client {
    /// Stores several small local files (`put -r`, wildcards) as the
    /// remote names paired with them, together: one `PutSmallMany` to each
    /// server with all its parts, one commit each, then one `CommitPuts`.
    /// All or nothing: any server that fails or refuses, a file that is
    /// not a small regular file, names of different owners, and nothing
    /// is committed (what was stored is dropped) and the error says why;
    /// the caller then stores them one by one, where each gets its own
    /// answer (and a degraded write its hints). A file a server had a
    /// newer version of is left out (`None`), to be stored alone.
    pub async fn put_small_files(
        &self,
        files: &[(PathBuf, String)],
        how: Transfer,
    ) -> Result<Vec<Option<PutReceipt>>> {
        let Some((_, first)) = files.first() else {
            return Ok(Vec::new());
        };
        let scope = self.file_scope(first)?;
        let mut names = Vec::with_capacity(files.len());
        for (_, remote) in files {
            let s = self.file_scope(remote)?;
            if s.owner != scope.owner || s.shared != scope.shared {
                return Err(Error::Refused("files of different owners".into()));
            }
            names.push(s.name);
        }
        let locals: Vec<PathBuf> = files.iter().map(|(l, _)| l.clone()).collect();
        let read = tokio::task::spawn_blocking(move || {
            locals
                .iter()
                .map(|local| {
                    let shown = |e| Error::io(local.display().to_string(), e);
                    let meta = std::fs::metadata(local).map_err(shown)?;
                    if !meta.is_file() || meta.len() > SMALL_FILE {
                        return Err(Error::Refused(format!(
                            "{} is not a small regular file",
                            local.display()
                        )));
                    }
                    let source = Source::file(local, meta.len());
                    let (data, digest) = read_small(&source, None).map_err(shown)?;
                    Ok((data, digest, meta))
                })
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("reader task: {e}")))??;
        self.maybe_refresh().await;
        let order = self.order();
        let n = order.len() as u32;
        // Each server's files (their positions, and its parts of them).
        let mut by_holder: BTreeMap<usize, (Vec<usize>, Vec<SmallFile>)> = BTreeMap::new();
        let mut manifests = Vec::with_capacity(files.len());
        for (p, (name, (data, digest, meta))) in names.iter().zip(&read).enumerate() {
            let version = Version::next(None);
            let placement = Placement::of(&scope.owner, name);
            let (checksums, parts) =
                small_parts(&scope.owner, name, version, data, &order, &placement);
            for (i, parts) in parts {
                let (positions, files) = by_holder.entry(i).or_default();
                positions.push(p);
                files.push(SmallFile {
                    name: name.clone(),
                    version,
                    chunks: n,
                    size: data.len() as u64,
                    parts,
                });
            }
            manifests.push(Manifest {
                name: name.clone(),
                version,
                size: data.len() as u64,
                chunks: n,
                checksums,
                stored_at: unix_now(),
                digest: *digest,
                deleted: false,
                data: None,
                kept: how.keep_times.then(|| kept_of(meta)),
                meta: None,
            });
        }
        let abort_all = |manifests: Vec<Manifest>| {
            let (order, scope) = (&order, &scope);
            join_all(manifests.into_iter().map(move |m| async move {
                let abort = Request::Abort {
                    name: m.name,
                    version: m.version,
                };
                self.call_on(order, &scope.request(abort, &[])).await
            }))
        };
        let replies = join_all(by_holder.into_iter().map(|(i, (positions, files))| {
            let request = scope.request(Request::PutSmallMany { files }, &[]);
            async move { (i, positions, self.call(i, &request).await) }
        }))
        .await;
        // The newest version any server had of each file.
        let mut newest: Vec<Option<Version>> = vec![None; manifests.len()];
        for (i, positions, reply) in replies {
            let failed = match reply {
                Ok(Response::StoredMany { current }) if current.len() == positions.len() => {
                    for (p, c) in positions.into_iter().zip(current) {
                        newest[p] = newest[p].max(c);
                    }
                    None
                }
                Ok(other) => Some(unexpected(&self.server_name(i), &other)),
                Err(e) => Some(e),
            };
            if let Some(e) = failed {
                abort_all(manifests).await;
                return Err(e);
            }
        }
        // A file a server had a newer version of is left out (its version
        // dropped), to be stored alone; the others are committed together.
        let (mut stale, mut fresh) = (Vec::new(), Vec::new());
        let receipts: Vec<Option<PutReceipt>> = manifests
            .into_iter()
            .zip(newest)
            .map(|(m, newest)| {
                if newest.is_some_and(|v| v >= m.version) {
                    stale.push(m);
                    return None;
                }
                let receipt = PutReceipt {
                    size: m.size,
                    chunks: n,
                    copies: n * order.copies(),
                    wanted: n * order.copies(),
                    missing: Vec::new(),
                    apart: Vec::new(),
                    refused: Vec::new(),
                    version: m.version,
                    digest: m.digest,
                };
                fresh.push(m);
                Some(receipt)
            })
            .collect();
        abort_all(stale).await;
        if !fresh.is_empty() {
            let commit = scope.request(Request::CommitPuts { manifests: fresh }, &[]);
            // Visible once any server has the manifests (the others are healed).
            any_answered(self.acknowledged(self.call_on(&order, &commit).await))?;
        }
        Ok(receipts)
    }
}

/// A small file's chunks: their checksums, in order, and the parts each
/// holder (member index) is to store.
fn small_parts(
    owner: &str,
    name: &str,
    version: Version,
    data: &Bytes,
    order: &Ring,
    placement: &Placement,
) -> (Vec<Checksum>, BTreeMap<usize, Vec<SmallPart>>) {
    let (size, n) = (data.len() as u64, order.len() as u32);
    let mut by_holder: BTreeMap<usize, Vec<SmallPart>> = BTreeMap::new();
    let mut checksums = Vec::with_capacity(n as usize);
    for chunk in 1..=n {
        let (start, end) = chunk_range(size, n, chunk);
        let bytes = data.slice(start as usize..end as usize);
        let checksum = ChunkId {
            owner,
            name,
            version,
            chunk,
            len: end - start,
        }
        .checksum(&bytes);
        checksums.push(checksum);
        for i in order.holders(placement, chunk, n) {
            by_holder.entry(i).or_default().push(SmallPart {
                chunk,
                checksum,
                data: bytes.clone(),
            });
        }
    }
    (checksums, by_holder)
}

/// How many times a small file's PUT is stored again when a holder had a
/// newer version than the one its clock gave (see `Client::put_command`).
const STALE_TRIES: usize = 3;

/// One chunk of a PUT: its checksum, the holders (member indices) that
/// stored it, and those that answered they could not, with their reasons.
type ChunkStored = (Checksum, Vec<usize>, Vec<(usize, String)>);

/// What one attempt of a PUT came to.
enum Attempt {
    Stored(PutReceipt),
    /// A holder had this version, newer than the one sent: nothing was
    /// committed, and the attempt's chunks were dropped.
    Stale(Version),
}

/// A PUT's bytes: a small file read whole, with its digest; or a file
/// streamed from disk chunk by chunk while a task computes its digest.
enum Body {
    Small(Bytes, FileDigest),
    Streamed(tokio::task::JoinHandle<std::io::Result<FileDigest>>),
}

/// A small file's bytes (it must still have `size` of them) and their
/// digest (`known`, if given, else their SHA-256).
fn read_small(source: &Source, known: Option<FileDigest>) -> std::io::Result<(Bytes, FileDigest)> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let size = source.len();
    // A file read whole shows whether it grew since it was looked at.
    let data = match source.single() {
        Some(path) => std::fs::read(path)?,
        None => {
            let mut data = Vec::with_capacity(size as usize);
            source.reader_at(0)?.read_to_end(&mut data)?;
            data
        }
    };
    if data.len() as u64 != size {
        return Err(std::io::Error::other(format!(
            "it changed while being read ({size} bytes, then {})",
            data.len()
        )));
    }
    let digest = known.unwrap_or_else(|| FileDigest::Sha256(Sha256::digest(&data).into()));
    Ok((Bytes::from(data), digest))
}

/// The chunks of a PUT that are stored but not committed. When the PUT
/// fails, or is cancelled (Ctrl-C drops it), before its commit is sent, the
/// servers are told to drop that version (`Request::Abort`): nothing else
/// would ever remove those chunks, and "Ctrl-C during a transfer leaves
/// nothing half-done remotely". Disarmed just before the commit is sent:
/// from then on the version may be visible on some server, and its chunks
/// must stay. Best effort: a server that cannot be reached keeps them.
struct StagedPut {
    /// `put -c`: a failure or cancel keeps what was stored, and the upload
    /// record, for the next `put -c` (the upload collection removes it if
    /// none comes).
    keep: bool,
    /// The upload record, removed when the upload is aborted.
    record: Option<PathBuf>,
    /// `None` once disarmed or aborted.
    login: Option<Arc<Login>>,
    /// Every ring member of the PUT (those that got nothing drop nothing).
    slots: Vec<Arc<Slot>>,
    /// The `Abort` that drops the upload.
    abort: Request,
}

impl StagedPut {
    fn disarm(mut self) {
        self.login = None;
    }

    /// Tells the servers at once and waits for their answers (a failed PUT).
    async fn abort(mut self) {
        if self.keep {
            self.login = None;
            return;
        }
        if let Some(path) = self.record.take() {
            super::resume::remove(&path);
        }
        if let Some(login) = self.login.take() {
            let mut slots = std::mem::take(&mut self.slots);
            slots.retain(|slot| timed_out_earlier(&slot.member.addr).is_none());
            abort_upload(login, slots, self.abort.clone()).await;
        }
    }
}

impl Drop for StagedPut {
    /// Dropped armed: the PUT was cancelled mid-way. The servers are told in
    /// the background, on the runtime, which outlives a cancelled command.
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Some(path) = self.record.take() {
            super::resume::remove(&path);
        }
        if let Some(login) = self.login.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let slots = std::mem::take(&mut self.slots);
                let abort = std::mem::replace(&mut self.abort, Request::Ring);
                runtime.spawn(abort_upload(login, slots, abort));
            }
        }
    }
}

/// Asks every server in `slots` to drop an uncommitted upload (`request`:
/// its `Abort`).
async fn abort_upload(login: Arc<Login>, slots: Vec<Arc<Slot>>, request: Request) {
    let (login, request) = (&login, &request);
    join_all(slots.iter().map(|slot| async move {
        let result = async {
            let mut conn = login.open(slot).await?;
            conn.call(request).await?;
            slot.release(conn);
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = result {
            debug!(server = %slot.member.name, error = %e, "an abandoned upload's chunks stay");
        }
    }))
    .await;
}

/// Keeps the connections whose last send worked; notes why the others failed
/// and marks their servers down.
fn drop_failed(
    client: &Client,
    live: Vec<(usize, Conn, u64)>,
    results: Vec<Result<()>>,
    failures: &mut Vec<String>,
) -> Vec<(usize, Conn, u64)> {
    live.into_iter()
        .zip(results)
        .filter_map(|((i, conn, from), result)| match result {
            Ok(()) => Some((i, conn, from)),
            Err(e) => {
                if let Error::Timeout { .. } = e {
                    remember_timeout(&client.slot(i).member.addr, &e.to_string());
                }
                client.note::<()>(
                    i,
                    &Err(Error::Unavailable {
                        server: client.server_name(i),
                        reason: e.to_string(),
                    }),
                );
                failures.push(e.to_string());
                None
            }
        })
        .collect()
}

/// SHA-256 of the whole source, read front to back; gives up early once
/// `stop` is set.
fn sha256_of(source: &Source, stop: &AtomicBool) -> std::io::Result<FileDigest> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = source.reader_at(0)?;
    let mut sha = Sha256::new();
    // No bigger than the file: a fresh 1 MiB buffer per small file costs
    // more (page faults, zeroing) than hashing it.
    let len = source.len();
    let mut buf = vec![0u8; len.clamp(1, MAX_BLOCK as u64) as usize];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("cancelled"));
        }
        match file.read(&mut buf)? {
            0 => return Ok(FileDigest::Sha256(sha.finalize().into())),
            n => sha.update(&buf[..n]),
        }
    }
}

/// Sets the flag when dropped: stops background work of a cancelled operation.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Where a PUT's bytes are (read through a [`Source`]).
#[derive(Clone, Copy)]
enum Local<'a> {
    File(&'a Path),
    /// An S3 multipart upload's parts, in order.
    Parts(&'a [PathBuf]),
}

impl Local<'_> {
    /// The bytes to store and, for a file, its metadata; what is not a
    /// regular file is refused.
    async fn open(self) -> Result<(Source, Option<std::fs::Metadata>)> {
        match self {
            Local::File(path) => {
                let meta = tokio::fs::metadata(path)
                    .await
                    .map_err(|e| Error::io(path.display().to_string(), e))?;
                if !meta.is_file() {
                    return Err(Error::Refused(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                Ok((Source::file(path, meta.len()), Some(meta)))
            }
            Local::Parts(paths) => {
                let paths = paths.to_vec();
                let source = tokio::task::spawn_blocking(move || Source::parts(&paths))
                    .await
                    .map_err(|e| Error::Internal(format!("reader task: {e}")))?
                    .map_err(|e| Error::io("the upload's parts", e))?;
                Ok((source, None))
            }
        }
    }
}

/// The parameters every chunk task of one PUT shares.
struct UploadPlan<'a> {
    source: &'a Source,
    scope: &'a Scope,
    name: &'a str,
    version: Version,
    size: u64,
    n: u32,
    placement: Placement,
    /// The ring the placement is over.
    order: Arc<Ring>,
    /// Continuing an interrupted upload of this version: ask what the
    /// holders kept.
    resume: bool,
}

/// The checksum of the first `m` bytes of the chunk at `start` of `source`
/// (the chunk's `hasher` fed them), and the hasher at that point, for each
/// mark `m`.
fn hash_local_prefixes(
    source: &Source,
    start: u64,
    mut marks: Vec<u64>,
    mut hasher: blake3::Hasher,
) -> Result<Vec<(u64, Checksum, blake3::Hasher)>> {
    use std::io::Read;
    marks.sort_unstable();
    marks.dedup();
    let local_error = |e| Error::io(source.shown(), e);
    let mut file = source.reader_at(start).map_err(local_error)?;
    let mut buf = vec![0u8; MAX_BLOCK];
    let mut at = 0u64;
    let mut out = Vec::new();
    for mark in marks {
        while at < mark {
            let want = (mark - at).min(MAX_BLOCK as u64) as usize;
            file.read_exact(&mut buf[..want]).map_err(local_error)?;
            hasher.update(&buf[..want]);
            at += want as u64;
        }
        out.push((mark, checksum_of(&hasher), hasher.clone()));
    }
    Ok(out)
}

/// A blocking task that reads `len` bytes of `source` from offset `start` in
/// blocks of at most `MAX_BLOCK`, hashing them and sending them on; it returns
/// the checksum after the last block. Dropping the receiver stops it.
fn spawn_chunk_reader(
    source: Source,
    start: u64,
    len: u64,
    mut hasher: blake3::Hasher,
) -> (
    tokio::sync::mpsc::Receiver<bytes::Bytes>,
    tokio::task::JoinHandle<Result<crate::protocol::Checksum>>,
) {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(PIPELINE_DEPTH);
    let reader = tokio::task::spawn_blocking(move || {
        let local_error = |e| Error::io(source.shown(), e);
        let mut file = source.reader_at(start).map_err(local_error)?;
        let mut left = len;
        while left > 0 {
            let want = left.min(MAX_BLOCK as u64) as usize;
            let mut block = BytesMut::zeroed(want);
            file.read_exact(&mut block).map_err(|e| {
                Error::io(
                    format!("{} (did it change while being read?)", source.shown()),
                    e,
                )
            })?;
            hasher.update(&block);
            if tx.blocking_send(block.freeze()).is_err() {
                return Err(Error::Internal("the chunk's sender stopped".into()));
            }
            left -= want as u64;
        }
        Ok(checksum_of(&hasher))
    });
    (rx, reader)
}

/// A holder of a chunk being put: its slot, the connection, and what it
/// kept of the chunk from an interrupted put (bytes, their checksum).
type Holding = (usize, Conn, Option<(u64, Checksum)>);

/// What `put -p` keeps of the local file.
fn kept_of(meta: &std::fs::Metadata) -> Kept {
    use std::os::unix::fs::MetadataExt;
    Kept {
        mtime: meta.mtime(),
        mtime_nanos: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
        mode: meta.mode() & 0o7777,
    }
}
