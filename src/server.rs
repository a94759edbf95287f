//! The chunk server: a listener, one task per connection, and the requests.
//!
//! `run(listener, server, shutdown)` accepts connections until `shutdown` is
//! cancelled; each connection says `Hello`, logs in (or resumes a session), and
//! then sends requests one at a time. Every request acts as the logged-in user:
//! the user's name comes from the session, never from the request, so no
//! request can reach another user's files.
//!
//! A connection is either a user's (after `Login`/`Resume`) or a peer
//! server's (after `PeerLogin`, see `peer`); each kind gets its own requests.
//!
//! Every connection is TLS 1.3 (see `tls`). Until it has logged in, a
//! connection gets small frames (`PRE_LOGIN_FRAME`) and a short deadline
//! (`Limits::handshake_ms`) for the TLS handshake, `Hello` and the login
//! together; after, the idle and per-frame timeouts of [`Limits`] apply. A
//! larger frame before login is read, dropped and answered (a `Login` with
//! the login refusal). Connections are limited in all and per address, the
//! address's limit checked first so one host cannot take every place. The
//! users are cluster state (see `accounts`); a user removed, or whose
//! password changed, on any server loses its sessions and connections here.
//! Alongside the listener runs the healer (`heal`), which keeps this server's
//! share of every file complete.
//!
//! Disk work runs on the blocking pool: a chunk upload streams blocks from the
//! socket into a channel drained by a blocking writer, and a download streams
//! blocks from a blocking reader, so the async threads only move bytes. A copy
//! that fails its checksum is quarantined and the healer is woken to replace it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::accounts::{Accounts, UserRecord};
use crate::auth::{address_key, Backoff, Sessions, Throttle, MAX_PASSWORD_LEN};
use crate::chord::{member_of, Chord};
use crate::config::{Limits, ServerConfig};
use crate::error::{Error, Result};
use crate::heal::Healer;
use crate::names::validate_name;
use crate::peer::{ClusterKey, Link};
use crate::protocol::{
    Connection, Frame, Manifest, Member, Received, Request, Response, ServerStatus, SmallFile,
    Token, Version, MAX_FRAME, PROTOCOL_VERSION, SMALL_FILE,
};
use crate::store::{ChunkSpec, Store};
use crate::tls::{self, TlsAcceptor};
use crate::transfer::{finish, pump_into, skip_rest, PIPELINE_DEPTH};

/// Most password verifications running at once: each takes 19 MiB and tens
/// of ms of a core, so two keep both cores busy and the peak memory bounded.
const MAX_LOGINS: usize = 2;
/// Largest frame accepted before login: enough for `Login` with the longest
/// user name and password, and small enough that a stranger's length prefix
/// cannot make the server reserve much.
pub const PRE_LOGIN_FRAME: usize = 4096;
/// A session (token) is valid this long after login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Entries per `Files` or `Inventory` page: far below the frame limit even
/// with 255-byte names.
pub(crate) const LIST_PAGE: usize = 1000;
/// Bytes of manifests at most in one `Manifests` answer (a frame is 1 MiB).
const MANIFESTS_BYTES: usize = 512 << 10;

/// One chunk server's shared state.
pub struct Server {
    pub(crate) name: String,
    /// The ring: Chord state and the membership view (see `chord`).
    pub(crate) chord: Arc<Chord>,
    /// Cancelled when the server has left the ring (`Leave`): `run` stops.
    pub(crate) left: CancellationToken,
    pub(crate) store: Arc<Store>,
    /// The users (cluster state, see `accounts`) and their sessions here.
    pub(crate) accounts: Arc<Accounts>,
    throttle: Throttle,
    logins: Semaphore,
    tls: TlsAcceptor,
    limits: Limits,
    /// Copies `k` of every chunk (a cluster setting).
    pub(crate) copies: u32,
    /// The cluster key, this server's peer certificate: how it proves itself
    /// to peers and checks theirs. Without a cluster key a server neither
    /// heals nor answers peers.
    key: Option<ClusterKey>,
    link: Option<Arc<Link>>,
    /// Keeps this server's share of every file complete (see `heal`).
    pub(crate) healer: Arc<Healer>,
    /// Admits uploads only within their owners' quotas (see `quota`).
    quota: crate::quota::Gate,
}

/// Who is on the other end of a connection.
enum Peer {
    Nobody,
    /// A user, logged in when the user's session epoch was `epoch` (see
    /// `auth::Sessions`): once it moves on, the connection's login is over.
    User {
        name: String,
        epoch: u64,
    },
    Server(String),
}

impl Server {
    /// Opens the server's store, user table and cluster key from its configuration.
    pub fn open(config: &ServerConfig) -> Result<Server> {
        config.validate()?;
        let tls = tls::server_config(&config.tls_dir, &config.name)?;
        owner_only_folder(&config.name, &config.data_dir)?;
        owner_only(&config.name, &config.users, 0o600, "users.toml");
        let store = Store::open(&config.data_dir, config.store.clone())?;
        let accounts = Arc::new(Accounts::open(
            &config.name,
            Arc::clone(&store),
            &config.users,
            Sessions::new(SESSION_TTL),
        )?);
        let limits = config.limits.clone();
        let ms = Duration::from_millis;
        let key = match &config.cluster_key {
            Some(path) => Some(ClusterKey::load_or_create(path)?),
            None => None,
        };
        let link = match &key {
            Some(key) => Some(Arc::new(Link::new(
                config.name.clone(),
                key.clone(),
                tls::client_config_for_server(&config.tls_dir, &config.name)?,
            ))),
            None => None,
        };
        let wake = Arc::new(Notify::new());
        let chord = Arc::new(Chord::open(config, Arc::clone(&store), Arc::clone(&wake))?);
        let healer = Arc::new(Healer::new(
            config,
            Arc::clone(&store),
            Arc::clone(&chord),
            link.clone(),
            Arc::clone(&accounts),
            wake,
        ));
        Ok(Server {
            name: config.name.clone(),
            chord,
            left: CancellationToken::new(),
            store,
            accounts,
            throttle: Throttle::new(Backoff {
                allowed: limits.login_failures_allowed,
                first: ms(limits.login_backoff_ms),
                max: ms(limits.login_backoff_max_ms),
                forget: ms(limits.login_forget_ms),
            }),
            logins: Semaphore::new(MAX_LOGINS),
            tls: TlsAcceptor::from(tls),
            limits,
            copies: config.copies,
            key,
            link,
            healer,
            quota: crate::quota::Gate::default(),
        })
    }

    /// The members in ring order, as the protocol describes them.
    pub fn ring(&self) -> Vec<Member> {
        self.chord.members().iter().map(member_of).collect()
    }

    /// Hands this server's data over to the other members and leaves the
    /// ring: announces the leave, then waits until every chunk it holds is
    /// on both its holders under the new table (its own heal rounds drop
    /// its copies as that happens).
    async fn leave(&self) -> Result<()> {
        info!(server = %self.name, "leaving the ring: handing the data over");
        let link = self.link.as_ref().ok_or(Error::NotLoggedIn)?;
        self.chord.announce_leave(link).await;
        loop {
            match crate::heal::handed_over(&self.healer).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => debug!(server = %self.name, error = %e, "hand-over check"),
            }
            self.healer.wake();
            tokio::time::sleep(self.chord.stabilize.max(Duration::from_millis(200))).await;
        }
        info!(server = %self.name, "handed the data over; leaving");
        Ok(())
    }

    /// Checks a password off the async threads; on success opens a session
    /// and returns it with the user's session epoch. The attempt counts
    /// against the back-off from its start (see `auth::Throttle`): beyond
    /// the allowance it waits for the attempts under way, and during a
    /// lock-out the answer waits for the lock to lift and is a refusal, the
    /// password unchecked.
    pub(crate) async fn login(
        &self,
        user: String,
        password: String,
        addr: IpAddr,
    ) -> Result<(Token, u64)> {
        let attempt = match self.throttle.begin(&user, addr).await {
            Ok(attempt) => attempt,
            Err(until) => return Err(self.backing_off(&user, addr, until).await),
        };
        if password.len() > MAX_PASSWORD_LEN {
            // Refused before hashing: argon2's cost grows with the input.
            attempt.failed();
            info!(server = %self.name, user = %user, %addr, "login failed: password too long");
            return Err(Error::Unauthorized);
        }
        // Read before the table: a change to the user from here on ends
        // the session this check would open.
        let epoch = self.accounts.sessions.epoch(&user);
        let _slot = self.logins.acquire().await.expect("semaphore never closed");
        let users = self.accounts.users();
        let (ok, user) =
            tokio::task::spawn_blocking(move || (users.verify(&user, &password), user))
                .await
                .map_err(|e| Error::Internal(format!("login task: {e}")))?;
        if !ok {
            attempt.failed();
            info!(server = %self.name, user = %user, %addr, "login failed");
            return Err(Error::Unauthorized);
        }
        attempt.succeeded();
        match self.accounts.sessions.open_at(&user, epoch) {
            Some(token) => Ok((token, epoch)),
            None => {
                info!(server = %self.name, user = %user, %addr, "login refused: the user changed during the check");
                Err(Error::Unauthorized)
            }
        }
    }

    /// A login too large to read (its password is longer than a connection
    /// may send before login): refused unchecked, and counted as a failure
    /// like any other attempt.
    async fn refuse_oversized_login(&self, user: &str, addr: IpAddr) -> Error {
        match self.throttle.begin(user, addr).await {
            Ok(attempt) => {
                attempt.failed();
                info!(server = %self.name, user = %user, %addr, "login failed: password too long");
                Error::Unauthorized
            }
            Err(until) => self.backing_off(user, addr, until).await,
        }
    }

    /// The answer to a login during a lock-out: it waits for the lock to
    /// lift (at most the longest lock-out), then is the usual refusal.
    async fn backing_off(&self, user: &str, addr: IpAddr, until: Instant) -> Error {
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(self.throttle.policy().max);
        info!(server = %self.name, user = %user, %addr, wait_ms = wait.as_millis() as u64, "login refused: backing off");
        tokio::time::sleep(wait).await;
        Error::Unauthorized
    }

    pub(crate) fn resume(&self, token: &Token) -> Result<(String, u64)> {
        self.accounts
            .sessions
            .resume(token)
            .ok_or(Error::Unauthorized)
    }

    /// A change to the users (an administrator's, or a user's share): made
    /// here, then sent to every other member at once (those it misses learn
    /// it in their next heal round, see `accounts`). Returns the changed
    /// records.
    async fn change_user(&self, change: crate::accounts::UserChange) -> Result<Vec<UserRecord>> {
        let accounts = Arc::clone(&self.accounts);
        let records = tokio::task::spawn_blocking(move || accounts.change(change))
            .await
            .map_err(|e| Error::Internal(format!("user change: {e}")))??;
        let record = &records[0];
        info!(server = %self.name, user = %record.name, removed = record.account.is_none(), changed = records.len(), "user record changed");
        if let Some(link) = &self.link {
            let mut sends = tokio::task::JoinSet::new();
            for node in self.chord.nodes() {
                if node.name == self.name {
                    continue;
                }
                let (link, member) = (Arc::clone(link), member_of(&node));
                let records = records.clone();
                let timeout = self.chord.timeout;
                sends.spawn(async move {
                    let sent = async {
                        let mut conn = link.connect(&member, timeout).await?;
                        conn.call(&Request::MergeUsers(records)).await
                    };
                    let sent = tokio::time::timeout(timeout, sent).await;
                    (member.name, sent)
                });
            }
            while let Some(Ok((peer, sent))) = sends.join_next().await {
                if !matches!(sent, Ok(Ok(Response::Ok))) {
                    debug!(server = %self.name, peer, "user change not sent; the peer's next heal round takes it");
                }
            }
        }
        Ok(records)
    }

    pub(crate) fn status(&self) -> ServerStatus {
        let stats = self.store.stats().unwrap_or_default();
        ServerStatus {
            name: self.name.clone(),
            ring: self.ring(),
            id: self.chord.me().id.to_string(),
            successor: Some(self.chord.successor().name),
            predecessor: self.chord.predecessor().map(|p| p.name),
            down: self.chord.down(),
            leaving: self.chord.leaving(),
            chunks: stats.chunks,
            bytes: stats.bytes,
            files: stats.files,
            uploads_pending: self.store.uploads_pending().unwrap_or_default(),
            heal: self.healer.status(),
            no_space: self.healer.space().is_full(),
        }
    }

    /// Files a writer could not give other servers copies of: the healer
    /// nudges those servers until they have caught up.
    async fn add_hints(&self, owner: &str, name: &str, missing: &[crate::protocol::Hint]) {
        let targets: std::collections::BTreeSet<String> = missing
            .iter()
            .filter(|h| h.server != self.name)
            .map(|h| h.server.clone())
            .collect();
        if targets.is_empty() {
            return;
        }
        let store = Arc::clone(&self.store);
        let (owner, name) = (owner.to_string(), name.to_string());
        let added = tokio::task::spawn_blocking(move || {
            targets
                .iter()
                .try_for_each(|server| store.add_hints(server, &owner, &name))
        })
        .await;
        if let Ok(Err(e)) = added {
            warn!(server = %self.name, error = %e, "cannot record hints");
        }
    }
}

/// Serves `listener` until `shutdown` is cancelled; then closes every
/// connection and returns. The healer runs alongside, if the server has a
/// cluster key.
pub async fn run(listener: TcpListener, server: Arc<Server>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(server.limits.max_connections));
    let per_address = Arc::new(AddressSlots::new(server.limits.max_connections_per_address));
    if let Ok(addr) = listener.local_addr() {
        info!(server = %server.name, %addr, "listening");
    }
    if let Some(link) = &server.link {
        tracker.spawn(Arc::clone(&server.healer).run(shutdown.clone()));
        tracker.spawn(Arc::clone(&server.healer).scrub(shutdown.clone()));
        tracker.spawn(crate::chord::chord_loop(
            Arc::clone(&server.chord),
            Arc::clone(link),
            shutdown.clone(),
        ));
    }
    {
        // A server that has left stops as if told to.
        let (left, shutdown) = (server.left.clone(), shutdown.clone());
        tracker.spawn(async move {
            tokio::select! {
                () = left.cancelled() => shutdown.cancel(),
                () = shutdown.cancelled() => {}
            }
        });
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(server = %server.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // The address's own limit first, so a flood from one address
        // never takes the places every other address shares.
        let address_slot = match AddressSlots::take(&per_address, peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                if refused.is_power_of_two() {
                    warn!(server = %server.name, %peer, refused, limit = server.limits.max_connections_per_address, "too many connections from one address; closing new ones");
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(server = %server.name, %peer, "too many connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let server = Arc::clone(&server);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = (permit, address_slot);
            tokio::select! {
                () = shutdown.cancelled() => {}
                result = serve_tls(stream, peer, &server) => {
                    if let Err(e) = result {
                        warn!(server = %server.name, %peer, error = %e, "connection closed");
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    info!(server = %server.name, "stopped");
}

/// What the handler does after a request.
enum Next {
    Continue,
    /// The stream is out of step (e.g. a failed upload left data in flight).
    Close,
}

/// The TLS handshake, within the connection's login deadline, then the protocol.
async fn serve_tls(stream: tokio::net::TcpStream, peer: SocketAddr, server: &Server) -> Result<()> {
    let accepted = Instant::now();
    let deadline = server.limits.handshake();
    let stream = match tokio::time::timeout(deadline, server.tls.accept(stream))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("{peer}'s TLS handshake"),
            secs: deadline.as_secs(),
        })? {
        Ok(stream) => stream,
        Err(e) => {
            // Logged once per address and cause, not at every attempt.
            server.chord.handshake_failed(peer.ip(), &e);
            return Ok(());
        }
    };
    // A server presents a certificate the cluster's authority signed; which
    // server it is gets checked against the name its PeerLogin claims (a
    // joining server is not a member yet).
    let certified = tls::peer_certificate(stream.get_ref().1);
    serve_connection(stream, peer, server, accepted, certified).await
}

/// Serves one connection's protocol. `accepted` starts its login deadline;
/// `certified` is the TLS client certificate, if any.
async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    server: &Server,
    accepted: Instant,
    certified: Option<rustls_pki_types::CertificateDer<'static>>,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &server.limits;
    let mut conn = Connection::new(stream, peer.to_string());
    conn.set_max_frame(PRE_LOGIN_FRAME);
    conn.set_frame_timeout(Some(limits.frame()));
    let login_left = || Some(limits.handshake().saturating_sub(accepted.elapsed()));
    conn.set_timeout(login_left());
    let challenge: [u8; 32] = rand::random();
    match conn.recv_msg::<Request>().await? {
        Request::Hello { version } if version == PROTOCOL_VERSION => {
            let hello = Response::Hello {
                version,
                server: server.name.clone(),
                challenge,
            };
            conn.send(&hello).await?;
        }
        Request::Hello { version } => {
            let e = Error::BadRequest(format!(
                "protocol version {version} is not supported (this server speaks {PROTOCOL_VERSION})"
            ));
            conn.send(&Response::Error(e.to_wire())).await?;
            return Err(e);
        }
        _ => {
            let e = Error::Protocol("the first message must be Hello".into());
            conn.send(&Response::Error(e.to_wire())).await?;
            return Err(e);
        }
    }
    debug!(server = %server.name, %peer, "hello");
    // Before login, a frame over the small limit but within the protocol's
    // is read and dropped, and answered (a 100 KiB password gets the login
    // refusal, not a reset).
    conn.set_skip_oversized(MAX_FRAME);

    let mut who = Peer::Nobody;
    let auth = Auth {
        challenge,
        certified,
        addr: peer.ip(),
    };
    loop {
        // Until a login succeeds, what is left of the login deadline; after, the idle timeout.
        let logged_in = !matches!(who, Peer::Nobody);
        conn.set_timeout(if logged_in {
            Some(limits.idle())
        } else {
            login_left()
        });
        let request = match conn.recv_or_oversized::<Request>().await? {
            None => break,
            Some(Received::Frame(Frame::Msg(request))) => request,
            Some(Received::Frame(Frame::Data(_))) => {
                return Err(Error::Protocol("data block outside an upload".into()));
            }
            Some(Received::Oversized { len, message, head }) => {
                let e = oversized(server, auth.addr, len, message, &head).await;
                debug!(server = %server.name, %peer, len, error = %e, "oversized frame before login");
                conn.send(&Response::Error(e.to_wire())).await?;
                continue;
            }
        };
        let result = handle(server, &mut conn, &mut who, &auth, request).await;
        match (logged_in, !matches!(who, Peer::Nobody)) {
            (false, true) => conn.set_max_frame(crate::protocol::MAX_FRAME),
            (true, false) => conn.set_max_frame(PRE_LOGIN_FRAME),
            _ => {}
        }
        let (reply, next) = match result {
            Ok(None) => continue, // the handler has replied itself
            Ok(Some(reply)) => (reply, Next::Continue),
            Err((e, next)) => {
                if e.kind() == crate::error::ErrorKind::Internal {
                    // The reply says less (no server paths): the log says all.
                    warn!(server = %server.name, %peer, error = %e, "request failed");
                } else {
                    debug!(server = %server.name, %peer, error = %e, "request failed");
                }
                (Response::Error(e.to_wire()), next)
            }
        };
        conn.send(&reply).await?;
        if let Next::Close = next {
            return Ok(());
        }
    }
    Ok(())
}

type Handled = std::result::Result<Option<Response>, (Error, Next)>;

/// What a connection can prove about its other end.
struct Auth {
    /// Sent in `Hello`; a peer's `PeerLogin` answers it.
    challenge: [u8; 32],
    /// Its TLS client certificate (cluster servers have one).
    certified: Option<rustls_pki_types::CertificateDer<'static>>,
    addr: IpAddr,
}

fn soft(e: Error) -> (Error, Next) {
    (e, Next::Continue)
}

/// Serves one request. `Ok(None)`: the reply has already been sent (streams).
async fn handle<S>(
    server: &Server,
    conn: &mut Connection<S>,
    who: &mut Peer,
    auth: &Auth,
    request: Request,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match request {
        // Requests that need no login.
        Request::Login { user, password } => {
            *who = Peer::Nobody;
            let (token, epoch) = server
                .login(user.clone(), password.0, auth.addr)
                .await
                .map_err(soft)?;
            *who = Peer::User { name: user, epoch };
            Ok(Some(Response::LoggedIn { token }))
        }
        Request::Resume { token } => {
            let (name, epoch) = server.resume(&token).map_err(soft)?;
            *who = Peer::User { name, epoch };
            Ok(Some(Response::Ok))
        }
        Request::PeerLogin { name, proof } => {
            // Two proofs: a certificate from the cluster's authority naming
            // this ring member (mutual TLS), and the cluster key.
            let certified = auth
                .certified
                .as_ref()
                .is_some_and(|cert| tls::certificate_names(cert, &name));
            let valid = server
                .key
                .as_ref()
                .is_some_and(|key| key.verify(&auth.challenge, &name, &proof));
            if !(certified && valid) {
                *who = Peer::Nobody;
                let why = match (auth.certified.is_some(), certified) {
                    (false, _) => "it presented no certificate".to_string(),
                    (true, false) => {
                        format!(
                            "its certificate does not name {}",
                            crate::error::shown(&name)
                        )
                    }
                    (true, true) => "wrong cluster key (its cluster.key differs from ours)".into(),
                };
                server.chord.peer_login_refused(&name, auth.addr, &why);
                return Err(soft(Error::Unauthorized));
            }
            server.chord.peer_login_accepted(&name);
            *who = Peer::Server(name);
            Ok(Some(Response::Ok))
        }
        Request::GatewayLogin {
            server: gateway,
            user,
            proof,
        } => {
            // The same two proofs as a peer's, for the server whose HTTP
            // endpoint authenticated `user`: its certificate and the key.
            *who = Peer::Nobody;
            let certified = auth
                .certified
                .as_ref()
                .is_some_and(|cert| tls::certificate_names(cert, &gateway));
            let valid = server
                .key
                .as_ref()
                .is_some_and(|key| key.verify_for(&auth.challenge, &gateway, &user, &proof));
            if !(certified && valid) {
                debug!(server = %server.name, gateway = %crate::error::shown(&gateway), "gateway login refused");
                return Err(soft(Error::Unauthorized));
            }
            if !server.accounts.users().contains(&user) {
                return Err(soft(Error::Unauthorized));
            }
            let epoch = server.accounts.sessions.epoch(&user);
            *who = Peer::User { name: user, epoch };
            Ok(Some(Response::Ok))
        }
        Request::Ring => Ok(Some(Response::Ring {
            members: server.ring(),
            down: server.chord.down(),
            copies: server.copies,
        })),
        Request::Hello { .. } | Request::ChunkDone { .. } => {
            Err((Error::Protocol("unexpected message".into()), Next::Close))
        }
        request => match who {
            Peer::User { name: user, epoch } => {
                if server.accounts.sessions.epoch(user) != *epoch
                    || !server.accounts.users().contains(user)
                {
                    // Removed, or the password changed, since this
                    // connection logged in.
                    *who = Peer::Nobody;
                    return Err((Error::NotLoggedIn, Next::Close));
                }
                let user = user.clone();
                handle_user(server, conn, user, request).await
            }
            Peer::Server(peer) => {
                let peer = peer.clone();
                handle_peer(server, conn, &peer, request).await
            }
            Peer::Nobody => {
                // A client that streams after an unauthorised PutChunk would
                // leave data in flight, so close rather than guess.
                let next = match request.streams() {
                    true => Next::Close,
                    false => Next::Continue,
                };
                Err((Error::NotLoggedIn, next))
            }
        },
    }
}

/// Requests of a logged-in user, acting as that user.
async fn handle_user<S>(
    server: &Server,
    conn: &mut Connection<S>,
    owner: String,
    request: Request,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let store = &server.store;
    if let Some(name) = own_new_name(&request) {
        crate::sharing::check_own_name(name).map_err(|e| match request.streams() {
            true => (e, Next::Close),
            false => soft(e),
        })?;
    }
    match request {
        Request::Shared {
            owner: sharer,
            paths,
            request,
        } => {
            let streams = request.streams();
            let (accounts, store) = (Arc::clone(&server.accounts), Arc::clone(store));
            let (user, asked) = (owner.clone(), *request);
            let (grant, asked) = tokio::task::spawn_blocking(move || {
                let grant =
                    crate::sharing::authorize(&accounts, &store, &user, &sharer, &paths, &asked);
                (grant.map(|g| (g, sharer)), asked)
            })
            .await
            .map_err(|e| soft(Error::Internal(format!("share check: {e}"))))?;
            let refuse = |e| if streams { (e, Next::Close) } else { soft(e) };
            match grant.map_err(refuse)? {
                // `authorize` lets no `Shared` through, so this recursion
                // is one level deep.
                (crate::sharing::Grant::Whole, sharer) => {
                    Box::pin(handle_user(server, conn, sharer, asked)).await
                }
                (crate::sharing::Grant::Listing(entries), _) => Ok(Some(Response::Dir {
                    entries,
                    more: false,
                })),
            }
        }
        Request::Share { path, with, access } => {
            validate_name(&path).map_err(soft)?;
            crate::sharing::check_own_name(&path).map_err(soft)?;
            let (o, p) = (owner.clone(), path.clone());
            let exists = blocking(server, move |s| s.exists(&o, &p))
                .await
                .map_err(soft)?;
            if access.is_some() && !exists {
                return Err(soft(Error::NotFound { name: path }));
            }
            let change = crate::accounts::UserChange::Share {
                name: owner,
                path,
                with,
                access,
            };
            server.change_user(change).await.map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::Shares => Ok(Some(Response::Shares(server.accounts.shares_of(&owner)))),
        Request::Status => Ok(Some(Response::Status(server.status()))),
        Request::List => send_list(server, conn, owner).await,
        Request::MakeFolder { path } => {
            blocking(server, move |s| s.make_folder(&owner, &path))
                .await
                .map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::RemoveFolder { path } => {
            blocking(server, move |s| s.remove_folder(&owner, &path))
                .await
                .map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::ListDir { folder, after } => {
            crate::names::validate_folder(&folder).map_err(soft)?;
            let (entries, more) = blocking(server, move |s| {
                s.list_dir(&owner, &folder, after.as_deref(), LIST_PAGE)
            })
            .await
            .map_err(soft)?;
            Ok(Some(Response::Dir { entries, more }))
        }
        Request::Stat { name } => {
            validate_name(&name).map_err(soft)?;
            let (manifest, held) = store.file(&owner, &name).map_err(soft)?;
            Ok(Some(Response::File { manifest, held }))
        }
        Request::Fetch { name, chunks } => {
            validate_name(&name).map_err(soft)?;
            // Chunk data is read on a blocking thread; a bare `Stat` stays here.
            let found = if chunks.is_empty() {
                store.file_with_data(&owner, &name, &[])
            } else {
                let (o, n) = (owner.clone(), name.clone());
                blocking(server, move |s| s.file_with_data(&o, &n, &chunks)).await
            }
            .map_err(soft)?;
            let mut data = Vec::with_capacity(found.chunks.len());
            let source = found
                .manifest
                .as_ref()
                .map(|m| (m.data_name(), m.data_version()));
            for (chunk, read) in found.chunks {
                match (read, source) {
                    (Ok(bytes), _) => data.push((chunk, bytes)),
                    // Left out: the reader asks another holder. A bad copy
                    // is dealt with as a failed `GetChunk` of it would be.
                    (Err(e), Some((data_name, version))) => {
                        if is_lost(server, &owner, data_name, version, chunk, &e) {
                            server
                                .healer
                                .lost(&owner, data_name, version, chunk, &e)
                                .await;
                        }
                    }
                    (Err(_), None) => {}
                }
            }
            Ok(Some(Response::FileData {
                manifest: found.manifest,
                held: found.held,
                data,
            }))
        }
        Request::PutSmall {
            name,
            version,
            chunks,
            size,
            parts,
        } => {
            let file = SmallFile {
                name,
                version,
                chunks,
                size,
                parts,
            };
            let current = put_small(server, owner, vec![file]).await.map_err(soft)?;
            Ok(Some(Response::Stored {
                current: current.into_iter().next().flatten(),
            }))
        }
        Request::PutSmallMany { files } => {
            let current = put_small(server, owner, files).await.map_err(soft)?;
            Ok(Some(Response::StoredMany { current }))
        }
        Request::CommitPuts { manifests } => {
            if manifests.iter().any(|m| m.data.is_some()) {
                return Err(soft(Error::BadRequest(
                    "a manifest that shares data is committed with CommitMany".into(),
                )));
            }
            let applied = blocking(server, move |s| {
                for m in &manifests {
                    s.check_path_free(&owner, &m.name)?;
                    s.check_commit_size(&owner, m)?;
                }
                s.commit_many(manifests.into_iter().map(|m| (owner.clone(), m)).collect())
            })
            .await
            .map_err(soft)?;
            debug!(server = %server.name, applied, "commit of new files");
            Ok(Some(Response::Ok))
        }
        Request::Commit { manifest, missing } => {
            if manifest.data.is_some() {
                return Err(soft(Error::BadRequest(
                    "a manifest that shares data is committed with CommitMany".into(),
                )));
            }
            // The checks and the commit on one blocking thread: one hop.
            let (o, name) = (owner.clone(), manifest.name.clone());
            let applied = blocking(server, move |s| {
                s.check_path_free(&o, &manifest.name)?;
                s.check_commit_size(&o, &manifest)?;
                s.commit(&o, manifest)
            })
            .await
            .map_err(soft)?;
            debug!(server = %server.name, file = %name, applied, "commit");
            server.add_hints(&owner, &name, &missing).await;
            Ok(Some(Response::Ok))
        }
        Request::Delete { name, version } => {
            validate_name(&name).map_err(soft)?;
            commit(server, owner, Manifest::tombstone(name, version))
                .await
                .map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::PutChunk {
            name,
            version,
            chunk,
            chunks,
            size,
        } => {
            let spec = ChunkSpec {
                owner,
                name,
                version,
                chunk,
                chunks,
                size,
            };
            upload(server, conn, spec, 0).await
        }
        Request::PutChunkFrom {
            name,
            version,
            chunk,
            chunks,
            size,
            offset,
        } => {
            let spec = ChunkSpec {
                owner,
                name,
                version,
                chunk,
                chunks,
                size,
            };
            upload(server, conn, spec, offset).await
        }
        Request::ChunkPrefix {
            name,
            version,
            chunk,
            chunks,
            size,
        } => {
            let spec = ChunkSpec {
                owner,
                name,
                version,
                chunk,
                chunks,
                size,
            };
            spec.validate().map_err(soft)?;
            // The connection of an attempt cut moments ago may not have
            // been seen closing yet: give it a moment to let go.
            let until = Instant::now() + PARTIAL_WAIT;
            while store.partial_in_use(&spec) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if store.partial_in_use(&spec) {
                info!(server = %server.name, file = %spec.name, chunk = spec.chunk,
                    "an earlier attempt still writes the kept part of this chunk: it comes again whole");
            }
            let store = Arc::clone(store);
            let (len, checksum) = tokio::task::spawn_blocking(move || store.prefix(&spec))
                .await
                .map_err(|e| soft(Error::Internal(format!("prefix task: {e}"))))?
                .map_err(soft)?;
            Ok(Some(Response::Prefix { len, checksum }))
        }
        Request::GetChunk {
            name,
            version,
            chunk,
        } => send_chunk(server, conn, &owner, &name, version, chunk, Part::From(0)).await,
        Request::GetChunkFrom {
            name,
            version,
            chunk,
            offset,
        } => {
            let part = Part::From(offset);
            send_chunk(server, conn, &owner, &name, version, chunk, part).await
        }
        Request::GetRange {
            name,
            version,
            chunk,
            offset,
            len,
        } => {
            let part = Part::Range(offset..offset.saturating_add(len));
            send_chunk(server, conn, &owner, &name, version, chunk, part).await
        }
        Request::Verify {
            name,
            version,
            chunk,
        } => {
            verify_chunk(server, &owner, &name, version, chunk)
                .await
                .map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::CheckQuota { size } => {
            let quota = server.accounts.quota(&owner);
            server
                .quota
                .check(store, &owner, quota, size)
                .map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::Usage { path } => {
            let quota = server.accounts.quota(&owner);
            let report = blocking(server, move |s| {
                crate::quota::report(s, &owner, quota, &path)
            })
            .await
            .map_err(soft)?;
            Ok(Some(Response::Usage(report)))
        }
        Request::CommitMany { manifests } => {
            let applied = blocking(server, move |s| s.commit_shared(&owner, manifests))
                .await
                .map_err(soft)?;
            debug!(server = %server.name, applied, "commit of shared data");
            Ok(Some(Response::Ok))
        }
        Request::Manifests { path, after } => {
            validate_name(&path).map_err(soft)?;
            let (mut manifests, mut more) = blocking(server, move |s| {
                s.manifests_under(&owner, &path, after.as_deref(), LIST_PAGE)
            })
            .await
            .map_err(soft)?;
            // A page stays well inside a frame, however many chunks each has.
            let mut bytes = 0;
            if let Some(cut) = manifests.iter().position(|m| {
                bytes += m.encoded_len();
                bytes > MANIFESTS_BYTES
            }) {
                manifests.truncate(cut.max(1));
                more = true;
            }
            Ok(Some(Response::Manifests { manifests, more }))
        }
        Request::Abort { name, version } => {
            validate_name(&name).map_err(soft)?;
            let store = Arc::clone(store);
            let file = name.clone();
            let dropped = tokio::task::spawn_blocking(move || store.abort(&owner, &name, version))
                .await
                .map_err(|e| soft(Error::Internal(format!("abort task: {e}"))))?
                .map_err(soft)?;
            debug!(server = %server.name, %file, dropped, "abandoned upload dropped");
            Ok(Some(Response::Ok))
        }
        _ => Err(soft(Error::BadRequest(
            "not a request a user may send".into(),
        ))),
    }
}

/// The name a request of the user's own would create or write, if any: it
/// must not be under `shared/` (see `sharing::check_own_name`).
fn own_new_name(request: &Request) -> Option<&str> {
    match request {
        Request::PutChunk { name, .. }
        | Request::PutChunkFrom { name, .. }
        | Request::PutSmall { name, .. } => Some(name),
        Request::Commit { manifest, .. } => Some(&manifest.name),
        Request::MakeFolder { path } => Some(path),
        Request::PutSmallMany { files } => under_shared(files.iter().map(|f| f.name.as_str())),
        Request::CommitPuts { manifests } | Request::CommitMany { manifests } => {
            under_shared(manifests.iter().map(|m| m.name.as_str()))
        }
        _ => None,
    }
}

/// The first of `names` under `shared/`, for a request of several.
fn under_shared<'a>(mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names.find(|name| crate::sharing::covers(crate::sharing::SHARED, name))
}

/// Requests of a peer server: reading any user's files, for healing.
async fn handle_peer<S>(
    server: &Server,
    conn: &mut Connection<S>,
    peer: &str,
    request: Request,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    debug!(server = %server.name, peer, ?request, "peer request");
    match request {
        Request::SyncRoot => {
            let (root, stats) = blocking(server, |s| Ok((s.root_digest()?, s.stats()?)))
                .await
                .map_err(soft)?;
            Ok(Some(Response::SyncRoot {
                root,
                missing: stats.missing,
                view: server.chord.digest(),
                users: server.accounts.digest(),
            }))
        }
        Request::SyncDigests { group } => {
            let digests = blocking(server, move |s| s.digests(group))
                .await
                .map_err(soft)?;
            Ok(Some(Response::Digests(digests)))
        }
        Request::SyncEntries { bucket } => {
            let entries = blocking(server, move |s| s.bucket_entries(bucket))
                .await
                .map_err(soft)?;
            Ok(Some(Response::Entries(entries)))
        }
        Request::PeerHeld {
            owner,
            name,
            version,
        } => {
            let chunks = blocking(server, move |s| s.held(&owner, &name, version))
                .await
                .map_err(soft)?;
            Ok(Some(Response::Held { chunks }))
        }
        Request::PeerStat { owner, name } => {
            let (manifest, held) = server.store.file(&owner, &name).map_err(soft)?;
            Ok(Some(Response::File { manifest, held }))
        }
        Request::PeerGetChunk {
            owner,
            name,
            version,
            chunk,
        } => send_chunk(server, conn, &owner, &name, version, chunk, Part::From(0)).await,
        Request::HealNow => {
            server.healer.wake();
            Ok(Some(Response::Ok))
        }
        Request::FindSuccessor { id } => Ok(Some(Response::Lookup(server.chord.lookup_step(id)))),
        Request::GetPredecessor => Ok(Some(Response::Predecessor(server.chord.predecessor()))),
        Request::GetSuccessorList => Ok(Some(Response::Successors {
            nodes: server.chord.successors(),
            view: server.chord.view(),
        })),
        Request::Notify { node, view } => {
            server.chord.notified(node, &view);
            Ok(Some(Response::Ok))
        }
        Request::ExchangeView { view } => {
            server.chord.merge(&view);
            Ok(Some(Response::View(server.chord.view())))
        }
        Request::ChangeUser(change) if peer == server.name => {
            let records = server.change_user(change).await.map_err(soft)?;
            Ok(Some(Response::Users(records)))
        }
        Request::Users => Ok(Some(Response::Users(server.accounts.records()))),
        Request::MergeUsers(records) => {
            let accounts = Arc::clone(&server.accounts);
            tokio::task::spawn_blocking(move || accounts.merge(records))
                .await
                .map_err(|e| soft(Error::Internal(format!("users merge: {e}"))))?
                .map_err(soft)?;
            Ok(Some(Response::Ok))
        }
        Request::VerifyStore if peer == server.name => {
            let store = Arc::clone(&server.store);
            let (checked, bad) = store.off_thread(|s| s.scrub()).await.map_err(soft)?;
            let bad = bad.iter().map(|(copy, e)| copy.bad_line(e)).collect();
            Ok(Some(Response::Verified { checked, bad }))
        }
        Request::Leave if peer == server.name => {
            server.leave().await.map_err(soft)?;
            // Stop once the reply is on its way.
            let left = server.left.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                left.cancel();
            });
            Ok(Some(Response::Ok))
        }
        _ => Err(soft(Error::BadRequest(
            "not a request a peer may send".into(),
        ))),
    }
}

/// Sends the owner's files a page at a time, each read from the store as it
/// goes: all but the last page sent here, the last returned as the reply.
async fn send_list<S>(server: &Server, conn: &mut Connection<S>, owner: String) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let owner = Arc::new(owner);
    let mut after: Option<String> = None;
    loop {
        let (o, a) = (Arc::clone(&owner), after.clone());
        let (files, more) = blocking(server, move |s| s.list_page(&o, a.as_deref(), LIST_PAGE))
            .await
            .map_err(soft)?;
        if !more {
            return Ok(Some(Response::Files { files, more }));
        }
        after = files.last().map(|f| f.name.clone());
        conn.send(&Response::Files { files, more })
            .await
            .map_err(|e| (e, Next::Close))?;
    }
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    server: &Server,
    f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    server.store.off_thread(f).await
}

async fn commit(server: &Server, owner: String, manifest: Manifest) -> Result<()> {
    let store = Arc::clone(&server.store);
    let name = manifest.name.clone();
    let applied = tokio::task::spawn_blocking(move || store.commit(&owner, manifest))
        .await
        .map_err(|e| Error::Internal(format!("commit task: {e}")))??;
    debug!(server = %server.name, file = %name, applied, "commit");
    Ok(())
}

/// `PutChunk` and `PutChunkFrom`: [`receive_chunk`], noting a full disk.
/// Any failure leaves the client mid-stream: reply and close.
async fn upload<S>(
    server: &Server,
    conn: &mut Connection<S>,
    spec: ChunkSpec,
    offset: u64,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let stored = receive_chunk(server, conn, spec, offset).await;
    server.healer.space().saw(&stored);
    stored.map_err(|e| (e, Next::Close))?;
    Ok(Some(Response::Ok))
}

/// `PutSmall`: checks and stores the chunks of `parts` of the file `file`
/// (its `chunk` unused) in one commit, under the same admission as
/// `PutChunk`. Returns the version that was current here before.
async fn put_small(
    server: &Server,
    owner: String,
    files: Vec<SmallFile>,
) -> Result<Vec<Option<Version>>> {
    let mut names = std::collections::HashSet::new();
    let mut batch = Vec::with_capacity(files.len());
    for file in files {
        if file.size > SMALL_FILE {
            return Err(Error::BadRequest(format!(
                "a file of {} bytes is not small: send its chunks one by one",
                file.size
            )));
        }
        if !names.insert(file.name.clone()) {
            return Err(Error::BadRequest(format!(
                "{} is twice in one request",
                crate::error::shown(&file.name)
            )));
        }
        let specs: Vec<ChunkSpec> = file
            .parts
            .iter()
            .map(|p| ChunkSpec {
                owner: owner.clone(),
                name: file.name.clone(),
                version: file.version,
                chunk: p.chunk,
                chunks: file.chunks,
                size: file.size,
            })
            .collect();
        batch.push((file.name, specs, file.parts));
    }
    let quota = server.accounts.quota(&owner);
    // The quota's admissions, held until the chunks are stored or have failed.
    let mut _admitted = Vec::new();
    for (name, specs, _) in &batch {
        for spec in specs {
            spec.validate()?;
            _admitted.push(server.quota.admit(&server.store, quota, spec)?);
        }
        server.store.check_path_free(&owner, name)?;
    }
    let space = server.healer.space();
    let bytes = batch
        .iter()
        .flat_map(|(_, specs, _)| specs)
        .map(ChunkSpec::chunk_len);
    space.room_for(bytes.sum())?;
    let store = Arc::clone(&server.store);
    let stored = tokio::task::spawn_blocking(move || {
        let mut current = Vec::with_capacity(batch.len());
        let mut sealed = Vec::new();
        for (name, specs, parts) in batch {
            current.push(store.file(&owner, &name)?.0.map(|m| m.version));
            for (spec, part) in specs.into_iter().zip(parts) {
                let mut writer = store.begin_upload(spec, 0)?;
                writer.write(&part.data)?;
                sealed.push(writer.seal(part.checksum)?);
            }
        }
        // One commit for them all.
        store.record_chunks(sealed)?;
        Ok(current)
    })
    .await
    .map_err(|e| Error::Internal(format!("store task: {e}")))?;
    space.saw(&stored);
    stored
}

/// Receives one chunk's data blocks and `ChunkDone`, storing them durably.
/// From `offset` on: the bytes before it are those the server kept of an
/// earlier attempt (see `store`'s "Partial chunks").
async fn receive_chunk<S>(
    server: &Server,
    conn: &mut Connection<S>,
    spec: ChunkSpec,
    offset: u64,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The quota's admission, held until the chunk is stored or has failed.
    let mut _admitted = None;
    let begun = spec.validate().and_then(|()| {
        server.store.check_path_free(&spec.owner, &spec.name)?;
        let quota = server.accounts.quota(&spec.owner);
        _admitted = server.quota.admit(&server.store, quota, &spec)?;
        server.healer.space().room_for(spec.chunk_len())?;
        server.store.begin_upload(spec, offset)
    });
    let writer = match begun {
        Ok(writer) => writer,
        Err(e @ (Error::NoSpace | Error::Io { .. } | Error::Refused(_) | Error::OverQuota(_))) => {
            // The client streams the chunk regardless: take it, so it
            // reads why (e.g. no space left, or a folder has that name)
            // rather than a reset.
            let _ = skip_rest::<S, Request>(conn).await;
            return Err(e);
        }
        // A request that is wrong in itself: reply and close at once.
        Err(e) => return Err(e),
    };
    let (writer, claimed) = pump_into(conn, writer, |m: Request| match m {
        Request::ChunkDone { checksum } => Ok(checksum),
        _ => Err(Error::Protocol("a message inside an upload".into())),
    })
    .await?;
    finish(writer, claimed).await
}

/// Which part of a chunk a read asks for.
enum Part {
    /// From this byte to the end (the whole chunk is read and checked).
    From(u64),
    /// These bytes, in the whole blocks covering them, checked alone.
    Range(std::ops::Range<u64>),
}

/// Streams one stored chunk: `Chunk{len}`, data blocks, `ChunkDone`. The reader
/// verifies the checksum as it goes; a mismatch ends the stream with an error
/// and puts the copy in quarantine. From `offset` on, the bytes before it are
/// read and checked but not sent. A range: `Range{start, len, values}` and
/// only the blocks covering it, each checked as it is read.
async fn send_chunk<S>(
    server: &Server,
    conn: &mut Connection<S>,
    owner: &str,
    name: &str,
    version: Version,
    chunk: u32,
    part: Part,
) -> Handled
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let store = Arc::clone(&server.store);
    let (o, n) = (owner.to_string(), name.to_string());
    let opened = tokio::task::spawn_blocking(move || match part {
        Part::From(offset) => store.open_chunk(&o, &n, version, chunk).map(|reader| {
            let header = Response::Chunk { len: reader.len() };
            (reader, header, offset)
        }),
        Part::Range(range) => {
            store
                .open_range(&o, &n, version, chunk, range)
                .map(|(reader, span, values)| {
                    let header = Response::Range {
                        start: span.start,
                        len: span.end - span.start,
                        values,
                    };
                    (reader, header, 0)
                })
        }
    })
    .await
    .map_err(|e| soft(Error::Internal(format!("chunk reader: {e}"))))?;
    let (mut reader, header, offset) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if is_lost(server, owner, name, version, chunk, &e) {
                server.healer.lost(owner, name, version, chunk, &e).await;
            }
            return Err(soft(e));
        }
    };
    let checksum = reader.checksum();
    if offset > reader.len() {
        return Err(soft(Error::BadRequest(format!(
            "chunk {chunk} is {} bytes; it cannot be sent from byte {offset}",
            reader.len()
        ))));
    }
    conn.send(&header).await.map_err(|e| (e, Next::Close))?;

    let (tx, mut rx) = mpsc::channel::<Result<bytes::Bytes>>(PIPELINE_DEPTH);
    tokio::task::spawn_blocking(move || {
        // Where the next block starts in the chunk.
        let mut at = 0u64;
        loop {
            let mut block = reader.next_block().transpose();
            let last = !matches!(block, Some(Ok(_)));
            if let Some(Ok(data)) = &mut block {
                let len = data.len() as u64;
                if at + len <= offset {
                    // Before `offset`: read and checked, not sent.
                    at += len;
                    continue;
                }
                if at < offset {
                    *data = data.slice((offset - at) as usize..);
                }
                at += len;
            }
            if let Some(item) = block {
                if tx.blocking_send(item).is_err() {
                    return;
                }
            }
            if last {
                return;
            }
        }
    });
    while let Some(item) = rx.recv().await {
        match item {
            Ok(block) => conn.send_data(block).await.map_err(|e| (e, Next::Close))?,
            Err(e) => {
                server.healer.lost(owner, name, version, chunk, &e).await;
                return Err((e, Next::Close));
            }
        }
    }
    Ok(Some(Response::ChunkDone { checksum }))
}

/// How long `ChunkPrefix` waits for the attempt that holds a partial chunk
/// to let go of it (its connection is closing) before answering "none kept".
/// Generous: on a loaded machine the cut attempt's task can take seconds to
/// see its connection close (a full test run once saw 3 s pass, and a whole
/// 256 MiB chunk sent again).
const PARTIAL_WAIT: Duration = Duration::from_secs(10);

/// Reads a whole stored chunk to check it; a bad copy is quarantined.
async fn verify_chunk(
    server: &Server,
    owner: &str,
    name: &str,
    version: Version,
    chunk: u32,
) -> Result<()> {
    let store = Arc::clone(&server.store);
    let (o, n) = (owner.to_string(), name.to_string());
    let checked = tokio::task::spawn_blocking(move || {
        let mut reader = store.open_chunk(&o, &n, version, chunk)?;
        while reader.next_block()?.is_some() {}
        Ok::<_, Error>(())
    })
    .await
    .map_err(|e| Error::Internal(format!("verify task: {e}")))?;
    if let Err(e) = &checked {
        if is_lost(server, owner, name, version, chunk, e) {
            server.healer.lost(owner, name, version, chunk, e).await;
        }
    }
    checked
}

/// Whether `error`, opening a chunk this server believes it holds, means the
/// copy is bad or gone (rather than, say, never stored here).
fn is_lost(
    server: &Server,
    owner: &str,
    name: &str,
    version: Version,
    chunk: u32,
    error: &Error,
) -> bool {
    match error {
        Error::Corrupt { .. } => true,
        Error::NotFound { .. } => server
            .store
            .holds(&crate::store::CopyId {
                owner: owner.to_string(),
                name: name.to_string(),
                version,
                chunk,
            })
            .unwrap_or(false),
        _ => false,
    }
}

/// The answer to a frame over the pre-login limit (read and dropped): a
/// `Login` is refused as a login (its password is longer than any
/// password), anything else is a bad request.
async fn oversized(server: &Server, addr: IpAddr, len: usize, message: bool, head: &[u8]) -> Error {
    if message && is_login(head) {
        // The user name is in the head (user names are short); without it
        // the attempt counts against the address and a name nobody has.
        let user = crate::codec::decode_prefix::<(u32, String)>(head)
            .map(|(_, user)| user)
            .unwrap_or_default();
        return server.refuse_oversized_login(&user, addr).await;
    }
    Error::BadRequest(format!(
        "a message of {len} bytes before login (at most {PRE_LOGIN_FRAME} until logged in)"
    ))
}

/// Whether a message's first bytes are those of a `Login`.
fn is_login(head: &[u8]) -> bool {
    let probe = Request::Login {
        user: String::new(),
        password: "".into(),
    };
    let login = crate::codec::encode(&probe)
        .and_then(|bytes| crate::codec::decode_prefix::<u32>(&bytes))
        .ok();
    login.is_some() && crate::codec::decode_prefix::<u32>(head).ok() == login
}

/// Connections open per address (by `auth::address_key`), against
/// `Limits::max_connections_per_address`.
struct AddressSlots {
    limit: usize,
    /// Per address: connections open, and new ones refused since it was last
    /// below the limit.
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, (usize, u64)>>,
}

/// One connection's place in its address's count; given back when dropped.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    addr: IpAddr,
}

impl AddressSlots {
    fn new(limit: usize) -> AddressSlots {
        AddressSlots {
            limit: limit.max(1),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A place for a new connection from `ip`, or how many have been refused
    /// (this one included) since the address was last below its limit.
    fn take(slots: &Arc<AddressSlots>, ip: IpAddr) -> std::result::Result<AddressSlot, u64> {
        let addr = address_key(ip);
        let mut open = slots.open.lock().expect("address slots lock");
        let (count, refused) = open.entry(addr).or_insert((0, 0));
        if *count >= slots.limit {
            *refused += 1;
            return Err(*refused);
        }
        *count += 1;
        *refused = 0;
        Ok(AddressSlot {
            slots: Arc::clone(slots),
            addr,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("address slots lock");
        if let Some((count, _)) = open.get_mut(&self.addr) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// Creates the server's data folder readable by its owner only, or, if it
/// exists readable by others, makes it so and says so: it holds every
/// user's files.
pub(crate) fn owner_only_folder(server: &str, dir: &std::path::Path) -> Result<()> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        return builder
            .create(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e));
    }
    owner_only(server, dir, 0o700, "the data folder");
    Ok(())
}

/// If `path` grants anything beyond `mode` (group or others can read it),
/// sets it to `mode` and logs a warning; a failure to is logged too.
fn owner_only(server: &str, path: &std::path::Path, mode: u32, what: &str) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        let old = meta.permissions().mode() & 0o777;
        if old & !mode == 0 {
            return;
        }
        let path_shown = path.display();
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            Ok(()) => {
                warn!(server, path = %path_shown, "{what} was mode {old:04o}, open to other users: made it {mode:04o}")
            }
            Err(e) => {
                warn!(server, path = %path_shown, error = %e, "{what} is mode {old:04o}, open to other users, and could not be made {mode:04o}")
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (server, path, mode, what);
}

/// A running server, for `dfs local` and tests: started on its own listener,
/// stopped by [`RunningServer::stop`] (which waits until it has closed).
pub struct RunningServer {
    pub name: String,
    pub addr: SocketAddr,
    /// Where its HTTP endpoints listen, if it has them.
    pub http_addr: Option<SocketAddr>,
    server: Arc<Server>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    http: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Starts a server from `config` on an already-bound `listener`.
    pub fn start(config: &ServerConfig, listener: TcpListener) -> Result<RunningServer> {
        RunningServer::start_with_http(config, listener, None)
    }

    /// [`RunningServer::start`], with its HTTP endpoints (see `http`) on
    /// `http`, already bound.
    pub fn start_with_http(
        config: &ServerConfig,
        listener: TcpListener,
        http: Option<TcpListener>,
    ) -> Result<RunningServer> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let server = Arc::new(Server::open(config)?);
        let shutdown = CancellationToken::new();
        let (http_addr, http) = match http {
            Some(listener) => {
                let at = listener
                    .local_addr()
                    .map_err(|e| Error::io("reading the listener's address", e))?;
                let task =
                    crate::http::start(Arc::clone(&server), config, listener, shutdown.clone())?;
                (Some(at), Some(task))
            }
            None => (None, None),
        };
        let task = tokio::spawn(run(listener, server.clone(), shutdown.clone()));
        Ok(RunningServer {
            name: config.name.clone(),
            addr,
            http_addr,
            server,
            shutdown,
            task,
            http,
        })
    }

    /// Whether it sees exactly `names` as the ring's members, none of them
    /// down: a ring that has formed, as this server sees it.
    pub fn sees_ring_of(&self, names: &[&str]) -> bool {
        let mut members: Vec<String> = self
            .server
            .chord
            .members()
            .into_iter()
            .map(|n| n.name)
            .collect();
        members.sort();
        let mut want: Vec<&str> = names.to_vec();
        want.sort();
        members == want && self.server.chord.down().is_empty()
    }

    /// The name of its successor on the ring, as it sees it now.
    pub fn successor(&self) -> String {
        self.server.chord.successor().name
    }

    /// The user holding the S3 access key `access` and its secret, as this
    /// server knows them (see [`crate::accounts::Accounts::key`]).
    pub fn s3_key(&self, access: &str) -> Option<(String, String)> {
        self.server.accounts.key(access)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        if let Some(http) = self.http {
            let _ = http.await;
        }
    }
}
