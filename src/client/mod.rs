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
//!   every server, and only then does the new version become visible. A PUT
//!   that fails or is cancelled before that asks the servers to drop the
//!   chunks it stored (`Request::Abort`).
//! * READ (for a gateway's GET) streams one byte range of a file in order,
//!   verified chunk by chunk, with bounded memory: see `read`.
//! * GET asks every server for the file's manifest and takes the newest, then
//!   one task per chunk fetches the chunk from its first holder (each server
//!   sends one chunk), falling back to the second only when the first fails.
//!   Chunks are written at their offsets into a temp file beside the target,
//!   checked against the manifest's checksums, and renamed into place.
//!
//! A server that times out (a hung process: it accepts connections and never
//! answers) is not waited for again in the same command ([`one_command`]):
//! each public operation is one command, and so is a one-shot `dfs` run,
//! login included. Waits that do not depend on each other run at once, so
//! one hung server, or all of them, costs a command at most one timeout.
//!
//! Every connection is TLS 1.3 trusting only the cluster's authority
//! (`ClientConfig::ca`): a server without a certificate it signed is refused
//! before a byte of the protocol, let alone the password, is sent.
//!
//! Here: the `Client`, its login and connection pool, and the helpers every
//! operation shares. `ring` keeps the client's view of the ring; `put`,
//! `get`, `read` (a verified byte-range stream), `list`, `files` (names: folders, mv/cp, sharing, usage) and
//! `report` (WHERE, VERIFY, STATUS) hold the operations.

mod files;
mod get;
mod list;
mod put;
mod read;
mod report;
mod resume;
mod ring;
mod source;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::ClientConfig;
use crate::error::{shown, Error, Result};
use crate::names::validate_name;
use crate::protocol::{Connection, Manifest, Member, Request, Response, Token};
use crate::sharing::SHARED;
use crate::tls::{self, ClientStream};

pub use self::files::*;
pub use self::get::*;
pub use self::list::*;
pub use self::put::*;
pub use self::read::*;
pub use self::report::*;
pub(crate) use self::ring::dial;
use self::ring::*;

type Conn = Connection<ClientStream<TcpStream>>;

type Tls = Arc<rustls::ClientConfig>;

/// Idle connections kept per server.
const POOL_SIZE: usize = 8;

tokio::task_local! {
    /// The servers (by address) that timed out in the command running on
    /// this task, and why: see [`one_command`].
    static TIMED_OUT: Mutex<BTreeMap<String, String>>;
}

/// Runs `work` as one command: a server that times out in it is not asked
/// again until it ends (it fails at once, for the same reason), so a hung
/// server costs the command one timeout, not one per step. Every public
/// operation of [`Client`] is a command of its own unless it runs inside
/// another (as a one-shot `dfs` runs its login and its command as one).
pub async fn one_command<F: std::future::Future>(work: F) -> F::Output {
    if TIMED_OUT.try_with(|_| ()).is_ok() {
        work.await
    } else {
        TIMED_OUT.scope(Mutex::new(BTreeMap::new()), work).await
    }
}

/// The servers that timed out in the command running on this task so far.
fn timeouts_so_far() -> BTreeMap<String, String> {
    TIMED_OUT
        .try_with(|m| m.lock().expect("timeouts lock").clone())
        .unwrap_or_default()
}

/// Runs `work` as a command of its own that starts knowing `timeouts` (see
/// [`one_command`]): for work a command hands to a task of its own.
async fn command_knowing<F: std::future::Future>(
    timeouts: BTreeMap<String, String>,
    work: F,
) -> F::Output {
    TIMED_OUT.scope(Mutex::new(timeouts), work).await
}

/// Why the server at `addr` was given up on earlier in this command.
fn timed_out_earlier(addr: &str) -> Option<String> {
    TIMED_OUT
        .try_with(|m| m.lock().expect("timeouts lock").get(addr).cloned())
        .ok()
        .flatten()
}

/// The server at `addr` timed out: not waited for again in this command.
fn remember_timeout(addr: &str, reason: &str) {
    let _ = TIMED_OUT.try_with(|m| {
        m.lock()
            .expect("timeouts lock")
            .entry(addr.to_string())
            .or_insert_with(|| reason.to_string());
    });
}

/// Told how many bytes of a transfer have moved; negative when a failed
/// attempt's bytes are taken back before a retry.
pub trait Progress: Sync {
    /// The transfer's total size, once known.
    fn start(&self, _total: u64) {}
    fn add(&self, delta: i64);
    /// Whether progress is drawn (a transfer of many files draws its own).
    fn shows(&self) -> bool {
        false
    }
}

impl<F: Fn(i64) + Sync> Progress for F {
    fn add(&self, delta: i64) {
        self(delta)
    }
}

/// How a PUT or GET goes beyond copying one file (`put`/`get` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// `-c`: continue an interrupted transfer of the same file, reusing
    /// only what verifies against checksums.
    pub resume: bool,
    /// `-p`: keep the modification time (and, on GET, the mode bits).
    pub keep_times: bool,
}

/// For callers that do not show progress.
pub fn no_progress(_: i64) {}

/// One ring member as the client tracks it.
struct Slot {
    member: Member,
    token: Mutex<Option<Token>>,
    pool: Mutex<Vec<Conn>>,
    /// Whether the last attempt to reach it worked.
    up: AtomicBool,
    /// Its [`Standing`] when the servers were last asked (see
    /// [`Client::standing`]), as [`standing_code`] spells it.
    standing: AtomicU8,
}

impl Slot {
    /// Records whether the server answered; transport failures mark it
    /// down, and a timeout is remembered for the rest of the command.
    fn note<T>(&self, result: &Result<T>) {
        self.note_failure(result.as_ref().err());
    }

    /// [`Slot::note`], given the error if there was one.
    fn note_failure(&self, error: Option<&Error>) {
        if let Some(e @ Error::Timeout { .. }) = error {
            remember_timeout(&self.member.addr, &e.to_string());
        }
        let up = match error {
            None => true,
            Some(Error::Unavailable { .. } | Error::Io { .. } | Error::Timeout { .. }) => false,
            Some(_) => true, // it answered, with an error
        };
        self.up.store(up, Ordering::Relaxed);
    }

    /// Puts a connection that finished its request back in the pool.
    fn release(&self, conn: Conn) {
        let mut pool = self.pool.lock().expect("pool lock");
        if pool.len() < POOL_SIZE {
            pool.push(conn);
        }
    }
}

/// A logged-in user's handle on the ring.
pub struct Client {
    /// Who is logged in and how to connect; shared with work that outlives
    /// a call (see [`StagedPut`]).
    login: Arc<Login>,
    /// Every server ever seen, never removed, so an index stays valid.
    slots: RwLock<Vec<Arc<Slot>>>,
    /// The ring now (ring position - 1 → index into `slots`).
    order: RwLock<Arc<Ring>>,
    /// When the ring was last asked for.
    refreshed: Mutex<Instant>,
    /// The configured servers, should every known member stop answering.
    seeds: Vec<String>,
}

impl Client {
    /// Learns the ring from the first configured server that answers, then logs
    /// in to every member. Fails with `Unauthorized` if any server refuses the
    /// password, and with `Unavailable` if none can be reached.
    pub async fn login(config: &ClientConfig, user: &str, password: &str) -> Result<Client> {
        one_command(Client::login_command(config, user, password)).await
    }

    async fn login_command(config: &ClientConfig, user: &str, password: &str) -> Result<Client> {
        let tls = tls::client_config_for_user(&config.ca)?;
        let credential = Credential::Password(password.to_string());
        Client::connect_as(config, tls, user, credential).await
    }

    /// A client acting for `user` on behalf of server `server` (its HTTP
    /// endpoints: S3 and the files API), which has checked the user's own
    /// credentials itself. It proves to every member that it is that server
    /// (its certificate, `tls`, and the cluster key) and names the user
    /// (`GatewayLogin`); the members then serve it as they serve the user.
    pub async fn for_gateway(
        config: &ClientConfig,
        tls: Tls,
        server: &str,
        key: crate::peer::ClusterKey,
        user: &str,
    ) -> Result<Client> {
        let credential = Credential::Gateway {
            server: server.to_string(),
            key,
        };
        one_command(Client::connect_as(config, tls, user, credential)).await
    }

    async fn connect_as(
        config: &ClientConfig,
        tls: Tls,
        user: &str,
        credential: Credential,
    ) -> Result<Client> {
        let timeout = config.timeout();
        let (ring, down, copies) = discover(&config.servers, &tls, timeout).await?;
        let client = Client {
            login: Arc::new(Login {
                user: user.to_string(),
                credential,
                tls,
                timeout,
            }),
            slots: RwLock::new(Vec::new()),
            order: RwLock::new(Arc::new(Ring::default())),
            refreshed: Mutex::new(Instant::now()),
            seeds: config.servers.clone(),
        };
        client.adopt(ring, &down, copies);
        let attempts = join_all((0..client.n() as usize).map(|i| client.conn(i))).await;
        // One refusal is a wrong password; being unreachable is not.
        if attempts
            .iter()
            .any(|a| matches!(a, Err(Error::Unauthorized)))
        {
            return Err(Error::Unauthorized);
        }
        let (conns, failed) = any_answered(attempts.into_iter().enumerate())?;
        for (i, e) in failed {
            debug!(server = %client.server_name(i), error = %e, "login: server unavailable");
        }
        for (i, conn) in conns {
            client.release(i, conn);
        }
        Ok(client)
    }

    pub fn user(&self) -> &str {
        &self.login.user
    }

    /// Whose files the remote name `name` (a file's or a folder's, `""`:
    /// the top) is: see [`Scope`]. `shared/OWNER` is OWNER's top.
    pub fn scope(&self, name: &str) -> Result<Scope> {
        let own = |name: &str| Scope {
            owner: self.login.user.clone(),
            name: name.to_string(),
            shared: false,
        };
        let Some(rest) = name.strip_prefix(SHARED).and_then(|r| r.strip_prefix('/')) else {
            return Ok(own(name));
        };
        let (owner, path) = rest.split_once('/').unwrap_or((rest, ""));
        crate::names::validate_user(owner)?;
        if owner == self.login.user {
            return Ok(own(path));
        }
        Ok(Scope {
            owner: owner.to_string(),
            name: path.to_string(),
            shared: true,
        })
    }

    /// A file's scope: one of a user's files, not a top.
    fn file_scope(&self, name: &str) -> Result<Scope> {
        validate_name(name)?;
        let scope = self.scope(name)?;
        if scope.name.is_empty() || (name == SHARED && !scope.shared) {
            return Err(Error::Refused(format!(
                "{}: a folder, not a file",
                shown(name)
            )));
        }
        Ok(scope)
    }

    fn slot(&self, i: usize) -> Arc<Slot> {
        Arc::clone(&self.slots.read().expect("slots lock")[i])
    }

    fn server_name(&self, i: usize) -> String {
        self.slot(i).member.name.clone()
    }

    /// Records whether member `i` answered; transport failures mark it down.
    fn note<T>(&self, i: usize, result: &Result<T>) {
        self.slot(i).note(result);
    }

    /// An authenticated connection to ring member `i`: a pooled one if one is
    /// still open, else a new one (resuming the session, or logging in again
    /// if the server has forgotten it, e.g. after a restart).
    async fn conn(&self, i: usize) -> Result<Conn> {
        let result = self.open_conn(i).await;
        self.note(i, &result);
        result
    }

    async fn open_conn(&self, i: usize) -> Result<Conn> {
        self.login.open(&self.slot(i)).await
    }

    fn release(&self, i: usize, conn: Conn) {
        self.slot(i).release(conn);
    }

    /// One request and its reply on a connection to member `i`.
    async fn call(&self, i: usize, request: &Request) -> Result<Response> {
        let result = async {
            let mut conn = self.conn(i).await?;
            let reply = conn.call(request).await?;
            self.release(i, conn);
            Ok(reply)
        }
        .await;
        self.note(i, &result);
        result
    }

    /// Sends `request` to every member at once; one (slot, result) per
    /// member, in ring order.
    async fn call_all(&self, request: &Request) -> Vec<(usize, Result<Response>)> {
        self.call_on(&self.order(), request).await
    }

    async fn call_on(&self, order: &[usize], request: &Request) -> Vec<(usize, Result<Response>)> {
        let answers = join_all(order.iter().map(|&i| self.call(i, request))).await;
        order.iter().copied().zip(answers).collect()
    }

    /// Replies to a request whose only good answer is `Ok`, as results.
    fn acknowledged(&self, results: Vec<(usize, Result<Response>)>) -> Vec<(usize, Result<()>)> {
        results
            .into_iter()
            .map(|(i, result)| {
                let acked = match result {
                    Ok(Response::Ok) => Ok(()),
                    Ok(other) => Err(unexpected(&self.server_name(i), &other)),
                    Err(e) => Err(e),
                };
                (i, acked)
            })
            .collect()
    }

    /// Every member's answer to `Stat{name}` (in the ring order `order`):
    /// its manifest and held chunks.
    async fn stat_on(
        &self,
        order: &[usize],
        scope: &Scope,
    ) -> Vec<Result<(Option<Manifest>, Vec<u32>)>> {
        let request = scope.request(
            Request::Stat {
                name: scope.name.clone(),
            },
            &[],
        );
        let answers = self.call_on(order, &request).await;
        answers
            .into_iter()
            .map(|(i, answer)| match answer? {
                Response::File { manifest, held } => Ok((manifest, held)),
                other => Err(unexpected(&self.server_name(i), &other)),
            })
            .collect()
    }

    /// The newest manifest any server has for `name` (tombstones included).
    /// Fails only when no server could be asked.
    async fn newest_manifest(&self, scope: &Scope) -> Result<Option<Manifest>> {
        newest_of(self.stat_on(&self.order(), scope).await)
    }
}

/// Whose files a remote name is: the user's own, or for
/// `shared/OWNER/PATH` OWNER's `PATH`, reached through what OWNER shares
/// with the user (see `sharing`). Requests about it go as they are, or
/// wrapped in `Request::Shared`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub owner: String,
    /// The name among the owner's files (`""`: the owner's top).
    pub name: String,
    pub shared: bool,
}

impl Scope {
    /// `request` as sent for this scope; `paths`: the names it acts
    /// through where it does not name them itself (see `Request::Shared`).
    fn request(&self, request: Request, paths: &[&str]) -> Request {
        if !self.shared {
            return request;
        }
        Request::Shared {
            owner: self.owner.clone(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            request: Box::new(request),
        }
    }

    /// `name`, one of the owner's, as the user names it.
    pub fn shown(&self, name: &str) -> String {
        match (self.shared, name.is_empty()) {
            (false, _) => name.to_string(),
            (true, true) => format!("{SHARED}/{}", self.owner),
            (true, false) => format!("{SHARED}/{}/{name}", self.owner),
        }
    }

    /// The same owner's `name`.
    fn with_name(&self, name: &str) -> Scope {
        Scope {
            name: name.to_string(),
            ..self.clone()
        }
    }
}

/// What opening an authenticated connection to a server takes.
struct Login {
    user: String,
    credential: Credential,
    tls: Tls,
    timeout: Duration,
}

/// How a client proves who it acts for.
enum Credential {
    /// The user's password (`Login`, then `Resume` with the session token).
    Password(String),
    /// A server's HTTP endpoint acting for a user it authenticated itself:
    /// the server's certificate (in `Login::tls`) and the cluster key.
    Gateway {
        server: String,
        key: crate::peer::ClusterKey,
    },
}

impl Login {
    /// An authenticated connection to `slot`'s server: a pooled one if one is
    /// still open, else a new one (resuming the session, or logging in again
    /// if the server has forgotten it, e.g. after a restart).
    async fn open(&self, slot: &Slot) -> Result<Conn> {
        if let Some(reason) = timed_out_earlier(&slot.member.addr) {
            return Err(Error::Unavailable {
                server: slot.member.name.clone(),
                reason,
            });
        }
        loop {
            let pooled = slot.pool.lock().expect("pool lock").pop();
            match pooled {
                Some(conn) if still_open(&conn) => return Ok(conn),
                Some(_) => continue,
                None => break,
            }
        }
        let (mut conn, challenge) = ring::dial(&slot.member, &self.tls, self.timeout).await?;
        let password = match &self.credential {
            Credential::Password(password) => password,
            Credential::Gateway { server, key } => {
                let login = Request::GatewayLogin {
                    server: server.clone(),
                    user: self.user.clone(),
                    proof: key.proof_for(&challenge, server, &self.user),
                };
                return match conn.call(&login).await? {
                    Response::Ok => Ok(conn),
                    other => Err(unexpected(&slot.member.name, &other)),
                };
            }
        };
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
            password: password.clone().into(),
        };
        match conn.call(&login).await? {
            Response::LoggedIn { token } => {
                *slot.token.lock().expect("token lock") = Some(token);
                Ok(conn)
            }
            other => Err(unexpected(&slot.member.name, &other)),
        }
    }
}

/// The next data block of a chunk `server` is sending on `conn`; `None`
/// once it says `ChunkDone` (GET and READ check the checksum themselves).
async fn next_block(conn: &mut Conn, server: &str) -> Result<Option<bytes::Bytes>> {
    match conn.recv::<Response>().await? {
        Some(crate::protocol::Frame::Data(block)) => Ok(Some(block)),
        Some(crate::protocol::Frame::Msg(Response::ChunkDone { .. })) => Ok(None),
        Some(crate::protocol::Frame::Msg(Response::Error(e))) => Err(e.into_error(server)),
        Some(crate::protocol::Frame::Msg(other)) => Err(unexpected(server, &other)),
        None => Err(Error::Unavailable {
            server: server.to_string(),
            reason: "connection closed during a transfer".into(),
        }),
    }
}

/// The newest manifest among servers' answers; an error only if none answered.
fn newest_of(answers: Vec<Result<(Option<Manifest>, Vec<u32>)>>) -> Result<Option<Manifest>> {
    let (answers, _) = any_answered(answers.into_iter().enumerate())?;
    Ok(answers
        .into_iter()
        .filter_map(|(_, (manifest, _))| manifest)
        .max_by_key(|m| m.version))
}

/// Per-member values, each with the member's index.
type ByMember<T> = Vec<(usize, T)>;

/// Splits per-member results into answers and failures, failing (with the
/// first failure) only when no member answered: the rule for every request
/// that needs just one server.
fn any_answered<T>(
    results: impl IntoIterator<Item = (usize, Result<T>)>,
) -> Result<(ByMember<T>, ByMember<Error>)> {
    let (mut answers, mut failures) = (Vec::new(), Vec::new());
    for (i, result) in results {
        match result {
            Ok(value) => answers.push((i, value)),
            Err(e) => failures.push((i, e)),
        }
    }
    if answers.is_empty() {
        let first = failures.into_iter().next().map(|(_, e)| e);
        return Err(first.unwrap_or_else(|| Error::Internal("the ring is empty".into())));
    }
    Ok((answers, failures))
}

/// Blocks in flight between the socket and a chunk's reader or writer.
const PIPELINE_DEPTH: usize = 2;

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
    use crate::protocol::{FileEntry, Version};

    fn entry(name: &str, gen: u64, held: &[u32], deleted: bool) -> FileEntry {
        FileEntry {
            name: name.into(),
            version: Version { gen, writer: 0 },
            size: 10,
            chunks: 4,
            stored_at: 0,
            deleted,
            held: held.to_vec(),
            etag: String::new(),
        }
    }

    #[test]
    fn one_answer_is_enough_and_the_first_failure_is_reported() {
        let down = |s: &str| Error::Unavailable {
            server: s.into(),
            reason: "down".into(),
        };
        let (answers, failures) = any_answered(vec![
            (0, Err(down("dfs1"))),
            (1, Ok(7)),
            (2, Err(down("dfs3"))),
        ])
        .unwrap();
        assert_eq!(answers, [(1, 7)]);
        assert_eq!(failures.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);

        let all_down = any_answered::<u8>(vec![(0, Err(down("dfs1"))), (1, Err(down("dfs2")))]);
        assert!(matches!(all_down, Err(Error::Unavailable { server, .. }) if server == "dfs1"));
        assert!(any_answered::<u8>(Vec::new()).is_err());
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
