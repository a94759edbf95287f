//! The client library: log in to the ring, then `put`, `get`, `list`, `delete`
//! and `status`. The `dfs` binary is a thin layer over this.
//!
//! A `Client` learns the ring from any one configured server, logs in to every
//! member, and keeps a small pool of authenticated connections per server
//! (a connection is reused only once its previous reply is complete).
//!
//! * PUT cuts the file into `n` chunks by [`chunk_range`]; one task per chunk
//!   reads its range of the local file and streams it to both of the chunk's
//!   holders at once. When every chunk is stored, the manifest is committed on
//!   every server, and only then does the new version become visible.
//! * GET asks every server for the file's manifest and takes the newest, then
//!   one task per chunk fetches the chunk from its first holder (each server
//!   sends one chunk), falling back to the second only when the first fails.
//!   Chunks are written at their offsets into a temp file beside the target,
//!   checked against the manifest's checksums, synced, and renamed into place.
//!
//! Every connection is TLS 1.3 trusting only the cluster's authority
//! (`ClientConfig::ca`): a server without a certificate it signed is refused
//! before a byte of the protocol, let alone the password, is sent.

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::{join_all, try_join_all};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::names::validate_name;
use crate::placement::{chunk_range, Placement};
use crate::protocol::{
    checksum_of, ChunkId, Connection, FileEntry, Frame, Manifest, Member, Request, Response,
    ServerStatus, Token, Version, MAX_BLOCK, PROTOCOL_VERSION,
};
use crate::tls::{self, ClientStream};
use crate::unix_now;

type Conn = Connection<ClientStream<TcpStream>>;
type Tls = Arc<rustls::ClientConfig>;

/// Idle connections kept per server.
const POOL_SIZE: usize = 8;

/// Told how many bytes of a transfer have moved; negative when a failed
/// attempt's bytes are taken back before a retry.
pub trait Progress: Sync {
    fn add(&self, delta: i64);
}

impl<F: Fn(i64) + Sync> Progress for F {
    fn add(&self, delta: i64) {
        self(delta)
    }
}

/// For callers that do not show progress.
pub fn no_progress(_: i64) {}

/// One ring member as the client tracks it.
struct Slot {
    member: Member,
    token: Mutex<Option<Token>>,
    pool: Mutex<Vec<Conn>>,
}

/// A logged-in user's handle on the ring.
pub struct Client {
    user: String,
    password: String,
    timeout: Duration,
    tls: Tls,
    slots: Vec<Slot>,
}

/// What a PUT did.
#[derive(Debug, Clone)]
pub struct PutReceipt {
    pub size: u64,
    pub chunks: u32,
    /// Chunk copies stored (two per chunk on a ring of two or more).
    pub copies: u32,
    pub version: Version,
}

/// What a GET did.
#[derive(Debug, Clone)]
pub struct GetReceipt {
    pub size: u64,
    pub path: PathBuf,
}

/// What a DELETE did: servers that applied it, and the ones that could not be reached.
#[derive(Debug, Clone)]
pub struct DeleteReceipt {
    pub applied: usize,
    pub missed: Vec<String>,
}

/// One file as LIST shows it, merged from every server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
    pub chunks: u32,
    pub stored_at: u64,
    pub version: Version,
    /// Copies of each chunk found on live servers.
    pub copies: Vec<u32>,
    /// Copies each chunk should have.
    pub wanted: u32,
}

impl FileInfo {
    /// All copies of every chunk present.
    pub fn healthy(&self) -> bool {
        self.copies.iter().all(|&c| c >= self.wanted)
    }
}

/// One server's line in STATUS.
#[derive(Debug, Clone)]
pub struct ServerReport {
    pub member: Member,
    /// 1-based ring position.
    pub position: u32,
    /// What the server said, or why it could not be asked.
    pub state: std::result::Result<ServerStatus, String>,
}

impl Client {
    /// Learns the ring from the first configured server that answers, then logs
    /// in to every member. Fails with `Unauthorized` if any server refuses the
    /// password, and with `Unavailable` if none can be reached.
    pub async fn login(config: &ClientConfig, user: &str, password: &str) -> Result<Client> {
        let timeout = config.timeout();
        let tls = tls::client_config_for_user(&config.ca)?;
        let ring = discover(&config.servers, &tls, timeout).await?;
        let client = Client {
            user: user.to_string(),
            password: password.to_string(),
            timeout,
            tls,
            slots: ring
                .into_iter()
                .map(|member| Slot {
                    member,
                    token: Mutex::new(None),
                    pool: Mutex::new(Vec::new()),
                })
                .collect(),
        };
        let attempts = join_all((0..client.slots.len()).map(|i| client.conn(i))).await;
        let mut first_error = None;
        let mut any = false;
        for (i, attempt) in attempts.into_iter().enumerate() {
            match attempt {
                Ok(conn) => {
                    any = true;
                    client.release(i, conn);
                }
                Err(Error::Unauthorized) => return Err(Error::Unauthorized),
                Err(e) => {
                    warn!(server = %client.slots[i].member.name, error = %e, "login: server unavailable");
                    first_error.get_or_insert(e);
                }
            }
        }
        match (any, first_error) {
            (false, Some(e)) => Err(e),
            _ => Ok(client),
        }
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The ring's members in ring order.
    pub fn ring(&self) -> Vec<Member> {
        self.slots.iter().map(|s| s.member.clone()).collect()
    }

    fn n(&self) -> u32 {
        self.slots.len() as u32
    }

    fn server_name(&self, i: usize) -> &str {
        &self.slots[i].member.name
    }

    /// An authenticated connection to ring member `i`: a pooled one if one is
    /// still open, else a new one (resuming the session, or logging in again
    /// if the server has forgotten it, e.g. after a restart).
    async fn conn(&self, i: usize) -> Result<Conn> {
        let slot = &self.slots[i];
        loop {
            let pooled = slot.pool.lock().expect("pool lock").pop();
            match pooled {
                Some(conn) if still_open(&conn) => return Ok(conn),
                Some(_) => continue,
                None => break,
            }
        }
        let mut conn = connect(&slot.member, &self.tls, self.timeout).await?;
        let token = *slot.token.lock().expect("token lock");
        if let Some(token) = token {
            match conn.call(&Request::Resume { token }).await {
                Ok(_) => return Ok(conn),
                Err(Error::Unauthorized) => debug!(server = %slot.member.name, "session expired"),
                Err(e) => return Err(e),
            }
        }
        let login = Request::Login {
            user: self.user.clone(),
            password: self.password.clone(),
        };
        match conn.call(&login).await? {
            Response::LoggedIn { token } => {
                *slot.token.lock().expect("token lock") = Some(token);
                Ok(conn)
            }
            other => Err(unexpected(&slot.member.name, &other)),
        }
    }

    fn release(&self, i: usize, conn: Conn) {
        let mut pool = self.slots[i].pool.lock().expect("pool lock");
        if pool.len() < POOL_SIZE {
            pool.push(conn);
        }
    }

    /// One request and its reply on a connection to member `i`.
    async fn call(&self, i: usize, request: &Request) -> Result<Response> {
        let mut conn = self.conn(i).await?;
        let reply = conn.call(request).await?;
        self.release(i, conn);
        Ok(reply)
    }

    /// Sends `request` to every member at once; one result per member.
    async fn call_all(&self, request: &Request) -> Vec<Result<Response>> {
        join_all((0..self.slots.len()).map(|i| self.call(i, request))).await
    }

    /// The newest manifest any server has for `name` (tombstones included).
    /// Fails only when no server could be asked.
    async fn newest_manifest(&self, name: &str) -> Result<Option<Manifest>> {
        let request = Request::Stat {
            name: name.to_string(),
        };
        let mut newest: Option<Manifest> = None;
        let mut answered = false;
        let mut first_error = None;
        for (i, result) in self.call_all(&request).await.into_iter().enumerate() {
            match result {
                Ok(Response::Manifest(m)) => {
                    answered = true;
                    if let Some(m) = m {
                        if newest.as_ref().is_none_or(|n| m.version > n.version) {
                            newest = Some(m);
                        }
                    }
                }
                Ok(other) => {
                    first_error.get_or_insert(unexpected(self.server_name(i), &other));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (answered, first_error) {
            (false, Some(e)) => Err(e),
            _ => Ok(newest),
        }
    }

    /// The current manifest of a live file.
    pub async fn stat(&self, name: &str) -> Result<Manifest> {
        validate_name(name)?;
        match self.newest_manifest(name).await? {
            Some(m) if !m.deleted => Ok(m),
            _ => Err(Error::NotFound {
                name: name.to_string(),
            }),
        }
    }

    /// Stores the local file `local` as `remote`, replacing any older version
    /// once every chunk is stored on both its holders.
    pub async fn put(
        &self,
        local: &Path,
        remote: &str,
        progress: &dyn Progress,
    ) -> Result<PutReceipt> {
        validate_name(remote)?;
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| Error::io(local.display().to_string(), e))?;
        if !meta.is_file() {
            return Err(Error::BadRequest(format!(
                "{} is not a regular file",
                local.display()
            )));
        }
        let size = meta.len();
        let current = self.newest_manifest(remote).await?;
        let version = Version::next(current.map(|m| m.version));
        let n = self.n();
        let placement = Placement::of(&self.user, remote, n);
        let upload = UploadPlan {
            local,
            name: remote,
            version,
            size,
            n,
            placement,
        };
        let checksums = try_join_all((1..=n).map(|c| self.put_chunk(&upload, c, progress))).await?;
        let manifest = Manifest {
            name: remote.to_string(),
            version,
            size,
            chunks: n,
            checksums,
            stored_at: unix_now(),
            deleted: false,
        };
        let commit = Request::Commit { manifest };
        for (i, result) in self.call_all(&commit).await.into_iter().enumerate() {
            match result {
                Ok(Response::Ok) => {}
                Ok(other) => return Err(unexpected(self.server_name(i), &other)),
                Err(e) => return Err(e),
            }
        }
        Ok(PutReceipt {
            size,
            chunks: n,
            copies: n * n.min(2),
            version,
        })
    }

    /// Streams chunk `chunk` of the upload to both its holders; returns its checksum.
    async fn put_chunk(
        &self,
        plan: &UploadPlan<'_>,
        chunk: u32,
        progress: &dyn Progress,
    ) -> Result<crate::protocol::Checksum> {
        let [a, b] = plan.placement.holders(chunk);
        let mut holders = vec![a as usize - 1];
        if b != a {
            holders.push(b as usize - 1);
        }
        let (start, end) = chunk_range(plan.size, plan.n, chunk);
        let len = end - start;
        let mut conns = try_join_all(holders.iter().map(|&i| self.conn(i))).await?;
        let header = Request::PutChunk {
            name: plan.name.to_string(),
            version: plan.version,
            chunk,
            chunks: plan.n,
            size: plan.size,
        };
        try_join_all(conns.iter_mut().map(|c| c.send(&header))).await?;

        let local_error = |e| Error::io(plan.local.display().to_string(), e);
        let mut file = tokio::fs::File::open(plan.local)
            .await
            .map_err(local_error)?;
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(local_error)?;
        let mut hasher = ChunkId {
            owner: &self.user,
            name: plan.name,
            version: plan.version,
            chunk,
            len,
        }
        .hasher();
        let mut left = len;
        while left > 0 {
            let want = left.min(MAX_BLOCK as u64) as usize;
            let mut block = BytesMut::zeroed(want);
            file.read_exact(&mut block).await.map_err(|e| {
                Error::io(
                    format!("{} (did it change while being read?)", plan.local.display()),
                    e,
                )
            })?;
            hasher.update(&block);
            let block = block.freeze();
            try_join_all(conns.iter_mut().map(|c| c.send_data(block.clone()))).await?;
            progress.add(want as i64);
            left -= want as u64;
        }
        let done = Request::ChunkDone {
            checksum: checksum_of(&hasher),
        };
        try_join_all(conns.iter_mut().map(|c| c.send(&done))).await?;
        for (conn, &i) in conns.into_iter().zip(&holders) {
            let mut conn = conn;
            match conn.reply().await? {
                Response::Ok => self.release(i, conn),
                other => return Err(unexpected(self.server_name(i), &other)),
            }
        }
        Ok(checksum_of(&hasher))
    }

    /// Fetches `remote` into the local file `local`, which appears only when
    /// every byte has arrived and verified.
    pub async fn get(
        &self,
        remote: &str,
        local: &Path,
        progress: &dyn Progress,
    ) -> Result<GetReceipt> {
        let manifest = self.stat(remote).await?;
        if manifest.chunks != self.n() {
            return Err(Error::Internal(format!(
                "{remote} was stored on a ring of {} servers; this ring has {}",
                manifest.chunks,
                self.n()
            )));
        }
        let dir = match local.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let local_error = |e| Error::io(local.display().to_string(), e);
        let tmp = tempfile::Builder::new()
            .prefix(".ringdfs-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(local_error)?;
        tmp.as_file().set_len(manifest.size).map_err(local_error)?;
        let placement = Placement::of(&self.user, remote, manifest.chunks);
        try_join_all(
            (1..=manifest.chunks)
                .map(|c| self.get_chunk(&manifest, placement, c, tmp.path(), progress)),
        )
        .await?;
        tmp.as_file().sync_all().map_err(local_error)?;
        tmp.persist(local).map_err(|e| local_error(e.error))?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(GetReceipt {
            size: manifest.size,
            path: local.to_path_buf(),
        })
    }

    /// Fetches one chunk from its first holder, or from the second if that fails.
    async fn get_chunk(
        &self,
        manifest: &Manifest,
        placement: Placement,
        chunk: u32,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut failures = Vec::new();
        let holders = placement.holders(chunk);
        let tries = if holders[0] == holders[1] { 1 } else { 2 };
        for &pos in &holders[..tries] {
            let i = pos as usize - 1;
            match self.fetch_chunk(i, manifest, chunk, path, progress).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    warn!(server = %self.server_name(i), file = %manifest.name, chunk, error = %e, "chunk fetch failed");
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

    async fn fetch_chunk(
        &self,
        i: usize,
        manifest: &Manifest,
        chunk: u32,
        path: &Path,
        progress: &dyn Progress,
    ) -> Result<()> {
        let server = self.server_name(i);
        let (start, end) = chunk_range(manifest.size, manifest.chunks, chunk);
        let len = end - start;
        let mut conn = self.conn(i).await?;
        let request = Request::GetChunk {
            name: manifest.name.clone(),
            version: manifest.version,
            chunk,
        };
        match conn.call(&request).await? {
            Response::Chunk { len: l } if l == len => {}
            other => return Err(unexpected(server, &other)),
        }
        let mut received = 0u64;
        let result = async {
            let local_error = |e| Error::io(path.display().to_string(), e);
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .map_err(local_error)?;
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(local_error)?;
            let mut hasher = ChunkId {
                owner: &self.user,
                name: &manifest.name,
                version: manifest.version,
                chunk,
                len,
            }
            .hasher();
            loop {
                match conn.recv::<Response>().await? {
                    Some(Frame::Data(block)) => {
                        if received + block.len() as u64 > len {
                            return Err(Error::Protocol(format!("{server} sent too much data")));
                        }
                        hasher.update(&block);
                        file.write_all(&block).await.map_err(local_error)?;
                        received += block.len() as u64;
                        progress.add(block.len() as i64);
                    }
                    Some(Frame::Msg(Response::ChunkDone { .. })) => break,
                    Some(Frame::Msg(Response::Error(e))) => return Err(e.into_error(server)),
                    Some(Frame::Msg(other)) => return Err(unexpected(server, &other)),
                    None => {
                        return Err(Error::Unavailable {
                            server: server.to_string(),
                            reason: "connection closed during a transfer".into(),
                        })
                    }
                }
            }
            if received != len {
                return Err(Error::Protocol(format!("{server} sent a short chunk")));
            }
            if Some(&checksum_of(&hasher)) != manifest.checksums.get(chunk as usize - 1) {
                return Err(Error::Corrupt {
                    chunk,
                    reason: format!("{server} sent bytes that do not match the checksum"),
                });
            }
            file.flush().await.map_err(local_error)
        }
        .await;
        match result {
            Ok(()) => {
                self.release(i, conn);
                Ok(())
            }
            Err(e) => {
                progress.add(-(received as i64));
                Err(e)
            }
        }
    }

    /// The user's files, merged from every server that answers.
    pub async fn list(&self) -> Result<Vec<FileInfo>> {
        let answers = join_all((0..self.slots.len()).map(|i| self.list_on(i))).await;
        let mut lists = Vec::new();
        let mut first_error = None;
        for answer in answers {
            match answer {
                Ok(files) => lists.push(files),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if lists.is_empty() {
            return Err(first_error.unwrap_or(Error::Internal("empty ring".into())));
        }
        Ok(merge_lists(&lists, self.n().min(2)))
    }

    async fn list_on(&self, i: usize) -> Result<Vec<FileEntry>> {
        let mut conn = self.conn(i).await?;
        conn.send(&Request::List).await?;
        let mut all = Vec::new();
        loop {
            match conn.reply().await? {
                Response::Files { files, more } => {
                    all.extend(files);
                    if !more {
                        break;
                    }
                }
                other => return Err(unexpected(self.server_name(i), &other)),
            }
        }
        self.release(i, conn);
        Ok(all)
    }

    /// Deletes `remote` everywhere. Servers that are down keep a stale copy
    /// that the tombstone on the others outranks.
    pub async fn delete(&self, remote: &str) -> Result<DeleteReceipt> {
        let current = self.stat(remote).await?;
        let request = Request::Delete {
            name: remote.to_string(),
            version: Version::next(Some(current.version)),
        };
        let mut applied = 0;
        let mut missed = Vec::new();
        let mut first_error = None;
        for (i, result) in self.call_all(&request).await.into_iter().enumerate() {
            match result {
                Ok(Response::Ok) => applied += 1,
                Ok(other) => {
                    first_error.get_or_insert(unexpected(self.server_name(i), &other));
                }
                Err(e) => {
                    missed.push(self.server_name(i).to_string());
                    first_error.get_or_insert(e);
                }
            }
        }
        match (applied, first_error) {
            (0, Some(e)) => Err(e),
            _ => Ok(DeleteReceipt { applied, missed }),
        }
    }

    /// Every ring member's own account of itself, or why it could not be asked.
    pub async fn status(&self) -> Vec<ServerReport> {
        let answers = self.call_all(&Request::Status).await;
        answers
            .into_iter()
            .enumerate()
            .map(|(i, answer)| ServerReport {
                member: self.slots[i].member.clone(),
                position: i as u32 + 1,
                state: match answer {
                    Ok(Response::Status(s)) => Ok(s),
                    Ok(other) => Err(unexpected(self.server_name(i), &other).to_string()),
                    Err(e) => Err(e.to_string()),
                },
            })
            .collect()
    }
}

/// The parameters every chunk task of one PUT shares.
struct UploadPlan<'a> {
    local: &'a Path,
    name: &'a str,
    version: Version,
    size: u64,
    n: u32,
    placement: Placement,
}

/// Merges servers' listings: per name, the newest version wins; copies are
/// counted from servers holding chunks of exactly that version; deleted files
/// are dropped.
pub fn merge_lists(lists: &[Vec<FileEntry>], wanted: u32) -> Vec<FileInfo> {
    let mut newest: BTreeMap<&str, &FileEntry> = BTreeMap::new();
    for entry in lists.iter().flatten() {
        let slot = newest.entry(&entry.name).or_insert(entry);
        if entry.version > slot.version {
            *slot = entry;
        }
    }
    newest
        .into_values()
        .filter(|e| !e.deleted)
        .map(|best| {
            let mut copies = vec![0u32; best.chunks as usize];
            for entry in lists.iter().flatten() {
                if entry.name == best.name && entry.version == best.version {
                    for &c in &entry.held {
                        if let Some(n) = copies.get_mut(c as usize - 1) {
                            *n += 1;
                        }
                    }
                }
            }
            FileInfo {
                name: best.name.clone(),
                size: best.size,
                chunks: best.chunks,
                stored_at: best.stored_at,
                version: best.version,
                copies,
                wanted,
            }
        })
        .collect()
}

/// Asks the configured servers, in order, for the ring.
async fn discover(servers: &[String], tls: &Tls, timeout: Duration) -> Result<Vec<Member>> {
    let mut reasons = Vec::new();
    for addr in servers {
        let member = Member {
            name: addr.clone(),
            addr: addr.clone(),
        };
        let answer = async {
            let mut conn = connect(&member, tls, timeout).await?;
            match conn.call(&Request::Ring).await? {
                Response::Ring { members } if !members.is_empty() => Ok(members),
                other => Err(unexpected(addr, &other)),
            }
        };
        match answer.await {
            Ok(members) => return Ok(members),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    Err(Error::Unavailable {
        server: "every configured server".into(),
        reason: reasons.join("; "),
    })
}

/// Opens a TLS connection to `member` and exchanges `Hello`.
async fn connect(member: &Member, tls: &Tls, timeout: Duration) -> Result<Conn> {
    let unavailable = |reason: String| Error::Unavailable {
        server: member.name.clone(),
        reason,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&member.addr))
        .await
        .map_err(|_| unavailable(format!("no answer within {} s", timeout.as_secs())))?
        .map_err(|e| unavailable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let stream = tokio::time::timeout(timeout, tls::connect(tls, &member.addr, stream))
        .await
        .map_err(|_| unavailable(format!("no TLS handshake within {} s", timeout.as_secs())))??;
    let mut conn = Connection::new(stream, member.name.clone());
    conn.set_timeout(Some(timeout));
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    match conn.call(&hello).await? {
        Response::Hello { .. } => Ok(conn),
        other => Err(unexpected(&member.name, &other)),
    }
}

/// A pooled connection is reused only if the server has not closed it. An
/// idle open socket has nothing to read; a closed one reads EOF. This asks the
/// kernel directly (a non-blocking MSG_PEEK), because the runtime's cached
/// readiness may not have seen the close yet.
fn still_open(conn: &Conn) -> bool {
    if conn.has_buffered_input() {
        return false;
    }
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(conn.get_ref().get_ref().0).peek(&mut byte) {
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        Ok(_) => false, // EOF, or bytes nobody asked for: either way unusable
    }
}

fn unexpected(server: &str, reply: &Response) -> Error {
    let what = match reply {
        Response::Error(e) => return e.clone().into_error(server),
        other => format!("{other:?}"),
    };
    let what: String = what.chars().take(60).collect();
    Error::Protocol(format!("{server} sent an unexpected reply: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, gen: u64, held: &[u32], deleted: bool) -> FileEntry {
        FileEntry {
            name: name.into(),
            version: Version { gen, writer: 0 },
            size: 10,
            chunks: 4,
            stored_at: 0,
            deleted,
            held: held.to_vec(),
        }
    }

    #[test]
    fn merge_takes_the_newest_version_and_counts_its_copies() {
        let lists = vec![
            vec![entry("a", 2, &[1, 2], false), entry("gone", 5, &[], true)],
            vec![
                entry("a", 2, &[2, 3], false),
                entry("gone", 4, &[1, 2], false),
            ],
            vec![entry("a", 1, &[3, 4], false)], // stale: does not count
            vec![entry("a", 2, &[4, 1], false)],
        ];
        let merged = merge_lists(&lists, 2);
        assert_eq!(merged.len(), 1, "the tombstone hides the older live copy");
        assert_eq!(merged[0].name, "a");
        assert_eq!(merged[0].copies, vec![2, 2, 1, 1]);
        assert!(!merged[0].healthy());
    }
}
