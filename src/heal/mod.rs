//! Self-healing: every server keeps its own share of every file complete,
//! at a cost that does not grow with the files stored.
//!
//! A heal round runs when the server starts, every `heal_interval`, and at
//! once when a copy goes bad, a peer asks (`HealNow`) or the members change.
//! In a round the server
//!
//! 1. tells its store where it sits in the ring (the store then knows, file
//!    by file, which chunks it lacks and which it holds beyond its share:
//!    its `missing` and `surplus` tables, kept up to date by every commit,
//!    copy and quarantine; only a ring change rescans), and drops versions
//!    replaced more than two rounds ago;
//! 2. asks every other server for the root digest of its files (16 bytes,
//!    see `store::digest`); with a peer whose root differs it compares group
//!    digests, then bucket digests, then the entries of the buckets that
//!    differ, and commits every manifest the peer has newer ([`plan::adopt`]).
//!    An idle round exchanges one small message per peer, at 1 000 files as
//!    at 1 000 000;
//!    The same message carries a digest of its user records; a peer whose
//!    digest differs is asked for them all (see `accounts`);
//! 3. nudges servers that writers could not reach (hints) until they match;
//! 4. fetches each chunk its store lists as missing, from the chunk's other
//!    holders first, checking it against the manifest's checksum, several at
//!    once;
//! 5. drops copies it holds beyond its share once every holder has them, all
//!    members answer and agree on the ring ([`plan::may_drop_copy`]);
//! 6. drops tombstones older than the grace period in buckets whose digest
//!    every member shares ([`plan::drop_tombstones`]).
//!
//! Only pulls: each server mends itself. Beside the rounds, a scrub re-reads
//! every stored copy at a bounded rate and quarantines a bad one, so damage
//! that no read happens to touch is found and repaired too.
//!
//! A full disk is not an outage: the server says so once (and once more when
//! it has room again, see [`DiskSpace`]), refuses new copies with
//! [`Error::NoSpace`], and the healer backs off, waiting twice as long after
//! each round that still finds no space (up to [`MAX_FULL_BACKOFF`]), and
//! trying again at once when space is freed.
//!
//! Rebalancing after a join or a leave is nothing more: the table is the one
//! over the current members, steps 4 and 5 move each chunk to its new
//! holders, and a server that is leaving holds nothing under the new table.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::accounts::Accounts;
use crate::chord::{member_of, Chord};
use crate::codec;
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::peer::{Link, PeerConn};
use crate::placement::Placement;
use crate::protocol::{HealStatus, Manifest, Member, Request, Response, SyncEntry, Version};
use crate::store::digest::{bucket_of, differing, group_of, Digest};
use crate::store::{ChunkReader, ChunkSpec, CopyId, DataRow, Layout, Store};
use crate::transfer::{finish, pump_into};
use plan::Held;

/// Chunks fetched at once.
const FETCH_LANES: usize = 8;
/// Missing chunks, surplus copies or tombstones looked at per round.
const PER_ROUND: usize = 20_000;
/// The scrub counts a chunk as at least this many bytes against its rate.
const SCRUB_MIN_COST: u64 = 64 << 10;
/// The longest the healer waits between rounds while the disk is full.
pub const MAX_FULL_BACKOFF: Duration = Duration::from_secs(300);
/// Bytes that must be freed on a full disk before the healer tries again
/// ahead of its back-off.
const FREED: u64 = 1 << 20;
/// Free space kept for the metadata database: a chunk that would leave less
/// is refused as no space left. (A database write that finds the disk full
/// fails, and the database then refuses every write until the server
/// restarts; chunks are what fills a disk.)
pub const RESERVE: u64 = 4 << 20;

/// Whether this server's disk is full, as its writes find it. The change
/// is logged once each way: full, then room again.
pub struct DiskSpace {
    server: String,
    dir: PathBuf,
    /// Free bytes when a write failed for want of space; `None` while there
    /// is room.
    full: Mutex<Option<u64>>,
}

impl DiskSpace {
    fn new(server: String, dir: &Path) -> DiskSpace {
        DiskSpace {
            server,
            dir: dir.to_path_buf(),
            full: Mutex::new(None),
        }
    }

    pub fn is_full(&self) -> bool {
        self.full.lock().expect("space lock").is_some()
    }

    /// Takes note of a write's outcome: no space marks the disk full, a
    /// stored chunk shows there is room; other failures say nothing.
    pub fn saw<T>(&self, result: &Result<T>) {
        match result {
            Err(Error::NoSpace) => self.now_full(),
            Ok(_) => self.has_room(),
            Err(_) => {}
        }
    }

    fn now_full(&self) {
        let mut full = self.full.lock().expect("space lock");
        if full.is_none() {
            *full = Some(free_bytes(&self.dir).unwrap_or(0));
            warn!(server = %self.server, data = %self.dir.display(), "no space left: new copies are refused until space is freed");
        }
    }

    fn has_room(&self) {
        if self.full.lock().expect("space lock").take().is_some() {
            info!(server = %self.server, data = %self.dir.display(), "the disk has room again");
        }
    }

    /// Whether a chunk of `len` bytes fits and leaves [`RESERVE`] free;
    /// if not, the disk is full ([`Error::NoSpace`]).
    pub fn room_for(&self, len: u64) -> Result<()> {
        match free_bytes(&self.dir) {
            Some(free) if free < len.saturating_add(RESERVE) => {
                self.now_full();
                Err(Error::NoSpace)
            }
            _ => Ok(()),
        }
    }

    /// Whether space has been freed since the disk was found full.
    fn freed(&self) -> bool {
        let full = *self.full.lock().expect("space lock");
        match (full, free_bytes(&self.dir)) {
            (Some(then), Some(now)) => now >= then.max(RESERVE).saturating_add(FREED),
            _ => false,
        }
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
pub(crate) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is a writable
    // statvfs that the call fills in when it returns 0.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// The healer's bookkeeping, shown in STATUS.
#[derive(Debug)]
struct HealState {
    rounds: u64,
    copied: u64,
    /// Since when something has been missing (the start counts: a server that
    /// comes back may have missed writes); `None` while healthy.
    unhealthy_since: Option<Instant>,
    healed_in: Option<Duration>,
}

/// A server's healer: its rounds, its scrub, and what they report.
pub struct Healer {
    name: String,
    store: Arc<Store>,
    chord: Arc<Chord>,
    link: Option<Arc<Link>>,
    /// The users, kept the same on every server (see `accounts`).
    accounts: Arc<Accounts>,
    interval: Duration,
    /// Copies `k` of every chunk.
    copies: u32,
    wake: Arc<Notify>,
    state: Mutex<HealState>,
    sync_bytes: AtomicU64,
    scrubbed: AtomicU64,
    scrub_bad: AtomicU64,
    /// Connections to peers kept between rounds, so an idle round costs no
    /// TLS handshakes.
    conns: tokio::sync::Mutex<BTreeMap<String, PeerConn>>,
    space: DiskSpace,
}

/// One peer as a round sees it.
struct Peer {
    member: Member,
    /// A member of the ring (not a server that is leaving).
    active: bool,
    conn: Option<PeerConn>,
    /// What it said of itself, if it answered.
    root: Option<Root>,
}

/// A peer's answer to `SyncRoot`.
#[derive(Debug, Clone, Copy)]
struct Root {
    /// The digest of its files.
    files: Digest,
    /// Chunks it lacks.
    missing: u64,
    /// Its membership digest.
    view: u64,
    /// The digest of its user records.
    users: [u8; 16],
}

/// What one round did.
#[derive(Debug, Default)]
struct Report {
    manifests: u64,
    copied: u64,
    missing: u64,
    dropped: u64,
    tombstones_dropped: u64,
}

impl Healer {
    pub fn new(
        config: &ServerConfig,
        store: Arc<Store>,
        chord: Arc<Chord>,
        link: Option<Arc<Link>>,
        accounts: Arc<Accounts>,
        wake: Arc<Notify>,
    ) -> Healer {
        Healer {
            space: DiskSpace::new(config.name.clone(), store.root()),
            name: config.name.clone(),
            store,
            chord,
            link,
            accounts,
            interval: config.heal_interval(),
            copies: config.copies,
            wake,
            state: Mutex::new(HealState {
                rounds: 0,
                copied: 0,
                unhealthy_since: Some(Instant::now()),
                healed_in: None,
            }),
            sync_bytes: AtomicU64::new(0),
            scrubbed: AtomicU64::new(0),
            scrub_bad: AtomicU64::new(0),
            conns: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether the disk is full, as writes find it.
    pub fn space(&self) -> &DiskSpace {
        &self.space
    }

    /// Runs a round soon.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn status(&self) -> HealStatus {
        let state = self.state.lock().expect("heal lock");
        let stats = self.store.stats().unwrap_or_default();
        HealStatus {
            rounds: state.rounds,
            copied: state.copied,
            missing: stats.missing,
            hints: self
                .store
                .hinted()
                .map(|h| h.values().sum())
                .unwrap_or_default(),
            healed_in_secs: state
                .unhealthy_since
                .is_none()
                .then(|| state.healed_in.map(|d| d.as_secs_f64()))
                .flatten(),
            sync_bytes: self.sync_bytes.load(Ordering::Relaxed),
            scrubbed: self.scrubbed.load(Ordering::Relaxed),
            scrub_bad: self.scrub_bad.load(Ordering::Relaxed),
        }
    }

    /// A copy of a chunk is bad or gone: set it aside and heal.
    pub async fn lost(&self, owner: &str, name: &str, version: Version, chunk: u32, why: &Error) {
        warn!(server = %self.name, owner, file = name, chunk, error = %why, "bad copy: quarantined, healing");
        let store = Arc::clone(&self.store);
        let (o, n) = (owner.to_string(), name.to_string());
        let moved =
            tokio::task::spawn_blocking(move || store.quarantine(&o, &n, version, chunk)).await;
        if let Ok(Err(e)) = moved {
            warn!(server = %self.name, error = %e, "cannot quarantine");
        }
        self.state
            .lock()
            .expect("heal lock")
            .unhealthy_since
            .get_or_insert_with(Instant::now);
        self.wake();
    }

    /// The layout of the ring from this server: members, and its position.
    fn layout(&self) -> (Vec<Member>, Layout) {
        let nodes = self.chord.members();
        let pos = nodes
            .iter()
            .position(|m| m.name == self.name)
            .map(|i| i as u32 + 1);
        let layout = Layout {
            ring: nodes.iter().map(|n| n.id).collect(),
            pos,
            k: self.copies,
        };
        (nodes.iter().map(member_of).collect(), layout)
    }

    /// Runs heal rounds until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // While the disk is full: when the next round may run, and how long
        // the wait after it will be if it still finds no space.
        let mut backoff: Option<(Instant, Duration)> = None;
        loop {
            let started = Instant::now();
            if !self.chord.settled() {
                // Members unknown yet (nobody answered): a table over a guessed
                // ring would fetch the wrong chunks.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(self.chord.stabilize) => {}
                }
                continue;
            }
            if self.space.is_full() && self.space.freed() {
                self.space.has_room();
            }
            if !self.space.is_full() {
                backoff = None;
            }
            let waiting = backoff.is_some_and(|(next, _)| Instant::now() < next);
            if !waiting {
                match self.round().await {
                    Ok(report) => {
                        if report.copied > 0 {
                            self.space.has_room();
                        }
                        self.record(&report, started);
                    }
                    // Said once, by `DiskSpace`; the rounds back off below.
                    Err(Error::NoSpace) => self.space.now_full(),
                    Err(e) => warn!(server = %self.name, error = %e, "heal round failed"),
                }
                if self.space.is_full() {
                    let wait =
                        backoff.map_or(self.interval, |(_, w)| (w * 2).min(MAX_FULL_BACKOFF));
                    debug!(server = %self.name, secs = wait.as_secs_f64(), "disk full: next heal round after a pause");
                    backoff = Some((Instant::now() + wait, wait));
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    fn record(&self, report: &Report, started: Instant) {
        let mut state = self.state.lock().expect("heal lock");
        state.rounds += 1;
        state.copied += report.copied;
        if report.missing > 0 || report.copied > 0 {
            state.unhealthy_since.get_or_insert(started);
        }
        if report.missing == 0 {
            if let Some(since) = state.unhealthy_since.take() {
                let took = since.elapsed();
                state.healed_in = Some(took);
                if report.copied > 0 || report.manifests > 0 {
                    info!(server = %self.name, copied = report.copied, secs = took.as_secs_f64(), "healed");
                }
            }
        }
        if report.copied + report.dropped > 0 {
            info!(server = %self.name, copied = report.copied, dropped = report.dropped, "heal round moved copies");
        }
        if report.manifests + report.tombstones_dropped > 0 {
            debug!(server = %self.name, ?report, "heal round");
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.store.off_thread(f).await
    }

    /// Asks every other server for its root digest, on the connection kept
    /// from the last round if it still works, else a new one.
    async fn peers(&self, ring: &[Member]) -> Vec<Peer> {
        let mut peers = Vec::new();
        for node in self.chord.nodes() {
            if node.name == self.name {
                continue;
            }
            let member = member_of(&node);
            let active = ring.iter().any(|m| m.name == node.name);
            let cached = self.conns.lock().await.remove(&member.name);
            let asked = match cached {
                Some(conn) => match self.ask_root(&member, conn).await {
                    Ok(answer) => Ok(answer),
                    Err(_) => self.ask_root_anew(&member).await,
                },
                None => self.ask_root_anew(&member).await,
            };
            let (conn, root) = match asked {
                Ok((conn, root)) => (Some(conn), Some(root)),
                Err(e) => {
                    debug!(server = %self.name, peer = %member.name, error = %e, "peer unreachable");
                    (None, None)
                }
            };
            peers.push(Peer {
                member,
                active,
                conn,
                root,
            });
        }
        peers
    }

    async fn connect(&self, member: &Member) -> Result<PeerConn> {
        let link = self.link.as_ref().ok_or(Error::NotLoggedIn)?;
        link.connect(member, self.interval.max(Duration::from_secs(3)))
            .await
    }

    async fn ask_root_anew(&self, member: &Member) -> Result<(PeerConn, Root)> {
        let conn = self.connect(member).await?;
        self.ask_root(member, conn).await
    }

    async fn ask_root(&self, member: &Member, mut conn: PeerConn) -> Result<(PeerConn, Root)> {
        conn.set_timeout(Some(self.interval.max(Duration::from_secs(3))));
        match self.call(&mut conn, &Request::SyncRoot).await? {
            Response::SyncRoot {
                root,
                missing,
                view,
                users,
            } => Ok((
                conn,
                Root {
                    files: root,
                    missing,
                    view,
                    users,
                },
            )),
            other => Err(Error::Protocol(format!("{}: {other:?}", member.name))),
        }
    }

    /// A sync request; its reply's size counts toward `sync_bytes`.
    async fn call(&self, conn: &mut PeerConn, request: &Request) -> Result<Response> {
        let reply = conn.call(request).await?;
        let size = codec::encode(&reply).map_or(0, |b| b.len() as u64);
        self.sync_bytes.fetch_add(size, Ordering::Relaxed);
        Ok(reply)
    }

    async fn digests(&self, conn: &mut PeerConn, group: Option<u8>) -> Result<Vec<Digest>> {
        match self.call(conn, &Request::SyncDigests { group }).await? {
            Response::Digests(d) => Ok(d),
            other => Err(Error::Protocol(format!("{other:?}"))),
        }
    }

    async fn round(&self) -> Result<Report> {
        let mut report = Report::default();
        let grace = self.interval * 2;
        let (ring, layout) = self.layout();
        let set = layout.clone();
        self.blocking(move |s| {
            s.set_layout(set)?;
            s.expire_retired(grace)?;
            let uploads = Duration::from_secs(s.tuning().upload_grace_secs);
            s.collect_staged(uploads)?;
            s.compact_volumes()
        })
        .await?;
        let mut peers = self.peers(&ring).await;
        let my_view = self.chord.digest();
        let all_reachable = peers.iter().filter(|p| p.active).all(|p| p.root.is_some());
        let agreed = all_reachable
            && !layout.ring.is_empty()
            && peers
                .iter()
                .filter(|p| p.active)
                .all(|p| p.root.is_some_and(|r| r.view == my_view));

        for peer in &mut peers {
            if let Err(e) = self.sync_users(peer).await {
                debug!(server = %self.name, peer = %peer.member.name, error = %e, "users sync failed");
                peer.conn = None;
            }
            report.manifests += match self.sync_with(peer).await {
                Ok(adopted) => adopted,
                Err(Error::NoSpace) => return Err(Error::NoSpace),
                Err(e) => {
                    debug!(server = %self.name, peer = %peer.member.name, error = %e, "sync failed");
                    peer.conn = None;
                    0
                }
            };
        }
        self.nudge_hinted(&mut peers).await?;
        let (copied, missing) = self.fetch_missing(&ring, &layout, &peers).await?;
        report.copied = copied;
        report.missing = missing;
        if agreed {
            report.dropped = self.drop_surplus(&ring, &layout, &mut peers).await?;
        }
        if all_reachable {
            report.tombstones_dropped = self.drop_tombstones(&mut peers).await?;
        }
        let mut conns = self.conns.lock().await;
        for peer in peers {
            if let Some(conn) = peer.conn {
                conns.insert(peer.member.name, conn);
            }
        }
        Ok(report)
    }

    /// Takes a peer's user records when their digest differs from ours
    /// (each side pulls, so a change on either reaches the other).
    async fn sync_users(&self, peer: &mut Peer) -> Result<()> {
        let (Some(conn), Some(root)) = (peer.conn.as_mut(), peer.root) else {
            return Ok(());
        };
        if root.users == self.accounts.digest() {
            return Ok(());
        }
        let records = match self.call(conn, &Request::Users).await? {
            Response::Users(records) => records,
            other => return Err(Error::Protocol(format!("{other:?}"))),
        };
        let accounts = Arc::clone(&self.accounts);
        tokio::task::spawn_blocking(move || accounts.merge(records))
            .await
            .map_err(|e| Error::Internal(format!("users merge: {e}")))??;
        Ok(())
    }

    /// Compares digests with one peer and commits every manifest it has
    /// newer. Returns how many.
    async fn sync_with(&self, peer: &mut Peer) -> Result<u64> {
        let (Some(conn), Some(root)) = (peer.conn.as_mut(), peer.root) else {
            return Ok(0);
        };
        let mine = self.blocking(|s| s.root_digest()).await?;
        if mine == root.files {
            return Ok(0);
        }
        let my_groups = self.blocking(|s| s.digests(None)).await?;
        let their_groups = self.digests(conn, None).await?;
        let mut adopted = Vec::new();
        for group in differing(&my_groups, &their_groups) {
            let group = group as u8;
            let my_buckets = self.blocking(move |s| s.digests(Some(group))).await?;
            let their_buckets = self.digests(conn, Some(group)).await?;
            for i in differing(&my_buckets, &their_buckets) {
                let bucket = (u16::from(group) << 8) | i as u16;
                let theirs = match self.call(conn, &Request::SyncEntries { bucket }).await? {
                    Response::Entries(entries) => entries,
                    other => return Err(Error::Protocol(format!("{other:?}"))),
                };
                let mine = self.blocking(move |s| s.bucket_entries(bucket)).await?;
                adopted.extend(plan::adopt(&mine, &theirs));
            }
        }
        let mut manifests = Vec::new();
        for entry in adopted {
            if let Some(m) = fetch_manifest(conn, &entry).await? {
                manifests.push((entry.owner, m));
            }
        }
        let count = manifests.len() as u64;
        if count > 0 {
            self.blocking(move |s| s.commit_many(manifests)).await?;
        }
        Ok(count)
    }

    /// Hinted handoff: forget the hints of a server that has caught up,
    /// nudge one that has not.
    async fn nudge_hinted(&self, peers: &mut [Peer]) -> Result<()> {
        let hinted = self.blocking(|s| s.hinted()).await?;
        if hinted.is_empty() {
            return Ok(());
        }
        let (mine, missing) = self
            .blocking(|s| Ok((s.root_digest()?, s.stats()?.missing)))
            .await?;
        for target in hinted.keys() {
            let Some(peer) = peers.iter_mut().find(|p| &p.member.name == target) else {
                continue;
            };
            let theirs = peer.root.map(|r| (r.files, r.missing));
            match plan::nudge(mine, theirs) {
                plan::Nudge::Forget if missing == 0 => {
                    let t = target.clone();
                    self.blocking(move |s| s.clear_hints(&t)).await?;
                }
                plan::Nudge::Wait => {}
                _ => {
                    if let Some(conn) = peer.conn.as_mut() {
                        let _ = conn.call(&Request::HealNow).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Fetches the chunks the store lists as missing, several at once.
    /// Returns (copied, still missing).
    async fn fetch_missing(
        &self,
        ring: &[Member],
        layout: &Layout,
        peers: &[Peer],
    ) -> Result<(u64, u64)> {
        let wanted = self.blocking(|s| s.missing(None, PER_ROUND)).await?;
        if wanted.is_empty() {
            return Ok((0, 0));
        }
        let reachable: Vec<Member> = peers
            .iter()
            .filter(|p| p.root.is_some())
            .map(|p| p.member.clone())
            .collect();
        let names: Vec<String> = reachable.iter().map(|m| m.name.clone()).collect();
        let queue = Arc::new(Mutex::new(wanted));
        // Set when a copy finds the disk full: the lanes stop (the rest
        // would fail the same way) and the round backs off.
        let no_space = AtomicBool::new(false);
        let lanes = (0..FETCH_LANES).map(|_| {
            let queue = Arc::clone(&queue);
            let (reachable, names, no_space) = (&reachable, &names, &no_space);
            async move {
                let mut conns: BTreeMap<String, PeerConn> = BTreeMap::new();
                let (mut copied, mut missing) = (0u64, 0u64);
                loop {
                    if no_space.load(Ordering::Relaxed) {
                        return (copied, missing);
                    }
                    let Some(copy) = queue.lock().expect("queue").pop() else {
                        return (copied, missing);
                    };
                    let id = copy.clone();
                    let data = match self
                        .blocking(move |s| s.data(&id.owner, &id.name, id.version))
                        .await
                    {
                        Ok(Some(row)) if row.refs > 0 => row,
                        _ => continue,
                    };
                    let (owner, name, chunk) = (&copy.owner, &copy.name, copy.chunk);
                    let holders: Vec<String> = Placement::of(owner, name)
                        .holders(&layout.ring, chunk, data.chunks, layout.k)
                        .iter()
                        .map(|&pos| ring[pos as usize - 1].name.clone())
                        .collect();
                    let mut done = false;
                    for source in plan::sources(&self.name, &holders, names) {
                        let Some(member) = reachable.iter().find(|m| m.name == source) else {
                            continue;
                        };
                        if !conns.contains_key(&source) {
                            match self.connect(member).await {
                                Ok(c) => {
                                    conns.insert(source.clone(), c);
                                }
                                Err(_) => continue,
                            }
                        }
                        let conn = conns.get_mut(&source).expect("just connected");
                        match self.fetch_chunk(conn, &copy, &data).await {
                            Ok(()) => {
                                info!(server = %self.name, owner = %owner, file = %name, chunk, from = %source, "copied a missing chunk");
                                done = true;
                                break;
                            }
                            Err(Error::NoSpace) => {
                                no_space.store(true, Ordering::Relaxed);
                                conns.remove(&source);
                                break;
                            }
                            Err(e) => {
                                warn!(server = %self.name, file = %name, chunk, from = %source, error = %e, "chunk copy failed");
                                conns.remove(&source);
                            }
                        }
                    }
                    if done {
                        copied += 1;
                    } else {
                        missing += 1;
                    }
                }
            }
        });
        let results = futures_util::future::join_all(lanes).await;
        if no_space.load(Ordering::Relaxed) {
            return Err(Error::NoSpace);
        }
        Ok(results
            .into_iter()
            .fold((0, 0), |(c, m), (c2, m2)| (c + c2, m + m2)))
    }

    /// Copies one chunk of `data` from a peer into the store, accepting it
    /// only if it matches the checksum the data's manifests give it.
    async fn fetch_chunk(&self, conn: &mut PeerConn, copy: &CopyId, data: &DataRow) -> Result<()> {
        let chunk = copy.chunk;
        let request = Request::PeerGetChunk {
            owner: copy.owner.clone(),
            name: copy.name.clone(),
            version: copy.version,
            chunk,
        };
        let spec = ChunkSpec {
            owner: copy.owner.clone(),
            name: copy.name.clone(),
            version: copy.version,
            chunk,
            chunks: data.chunks,
            size: data.size,
        };
        self.space.room_for(spec.chunk_len())?;
        match conn.call(&request).await? {
            Response::Chunk { len } if len == spec.chunk_len() => {}
            other => return Err(Error::Protocol(format!("{other:?}"))),
        }
        let expected = *data
            .checksums
            .get(chunk as usize - 1)
            .ok_or_else(|| Error::Internal("manifest lacks a checksum".into()))?;
        let writer = self.store.begin_chunk(spec)?;
        let (writer, _) = pump_into(conn, writer, |m: Response| match m {
            Response::ChunkDone { checksum } => Ok(checksum),
            Response::Error(e) => Err(e.into_error("peer")),
            other => Err(Error::Protocol(format!("{other:?}"))),
        })
        .await?;
        // Checked against the manifest, not the sender's word.
        finish(writer, expected).await
    }

    /// Drops copies the table no longer gives this server, once their
    /// holders have them. Returns how many went.
    async fn drop_surplus(
        &self,
        ring: &[Member],
        layout: &Layout,
        peers: &mut [Peer],
    ) -> Result<u64> {
        let surplus = self.blocking(|s| s.surplus(None, PER_ROUND)).await?;
        let mut dropped = 0;
        for copy in surplus {
            let id = copy.clone();
            let Some(data) = self
                .blocking(move |s| s.data(&id.owner, &id.name, id.version))
                .await?
            else {
                continue;
            };
            let CopyId {
                owner,
                name,
                version,
                chunk,
            } = copy;
            let mut holders = Vec::new();
            let placement = Placement::of(&owner, &name);
            for pos in placement.holders(&layout.ring, chunk, data.chunks, layout.k) {
                let holder = ring[pos as usize - 1].name.clone();
                let held = match peers.iter_mut().find(|p| p.member.name == holder) {
                    Some(peer) => match peer.conn.as_mut() {
                        Some(conn) => holds(conn, &owner, &name, version, chunk).await,
                        None => Held::Unknown,
                    },
                    None => Held::Unknown,
                };
                holders.push((holder, held));
            }
            if plan::may_drop_copy(&self.name, &holders, true, true) {
                let went = self
                    .blocking(move |s| s.drop_chunk(&owner, &name, version, chunk))
                    .await?;
                dropped += u64::from(went);
            }
        }
        Ok(dropped)
    }

    /// Drops old tombstones whose buckets every member shares.
    async fn drop_tombstones(&self, peers: &mut [Peer]) -> Result<u64> {
        let grace = self.store.tuning().tombstone_grace_secs;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .saturating_sub(grace.saturating_mul(1_000_000_000));
        let old = self
            .blocking(move |s| s.old_tombstones(before, PER_ROUND))
            .await?;
        if old.is_empty() {
            return Ok(0);
        }
        let tombstones: Vec<(u16, (String, String, Version))> = old
            .into_iter()
            .map(|(o, n, v)| (bucket_of(&o, &n), (o, n, v)))
            .collect();
        let groups: BTreeSet<u8> = tombstones.iter().map(|(b, _)| group_of(*b)).collect();
        let bucket_digests = |digests: Vec<(u8, Vec<Digest>)>| -> BTreeMap<u16, Digest> {
            digests
                .into_iter()
                .flat_map(|(g, list)| {
                    list.into_iter()
                        .enumerate()
                        .map(move |(i, d)| ((u16::from(g) << 8) | i as u16, d))
                })
                .collect()
        };
        let mut mine = Vec::new();
        for &g in &groups {
            mine.push((g, self.blocking(move |s| s.digests(Some(g))).await?));
        }
        let mine = bucket_digests(mine);
        let mut theirs = Vec::new();
        for peer in peers.iter_mut().filter(|p| p.active) {
            let mut got = Some(Vec::new());
            for &g in &groups {
                let answer = match peer.conn.as_mut() {
                    Some(conn) => self.digests(conn, Some(g)).await.ok(),
                    None => None,
                };
                match (answer, got.as_mut()) {
                    (Some(d), Some(list)) => list.push((g, d)),
                    _ => got = None,
                }
            }
            theirs.push(got.map(bucket_digests));
        }
        let droppable = plan::drop_tombstones(&tombstones, &mine, &theirs);
        let count = droppable.len() as u64;
        if count > 0 {
            self.blocking(move |s| {
                for (o, n, v) in droppable {
                    s.drop_tombstone(&o, &n, v)?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(count)
    }

    /// Re-reads every stored copy at the configured rate, forever: a bad
    /// one is quarantined and healed. It checks a batch worth a second of
    /// the rate, in key order, in one blocking task, then waits until the
    /// rate allows what the batch read (see [`scrub_wait`]).
    pub async fn scrub(self: Arc<Self>, shutdown: CancellationToken) {
        let rate = self.store.tuning().scrub_bytes_per_sec;
        if rate == 0 {
            return; // turned off
        }
        let mut after: Option<CopyId> = None;
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            let from = after.take();
            let started = std::time::Instant::now();
            let batch = self.blocking(move |s| scrub_batch(s, from, rate)).await;
            wait = scrub_wait(
                batch.as_ref().map_or(0, |b| b.spent),
                rate,
                started.elapsed(),
            );
            let ScrubBatch {
                next, checked, bad, ..
            } = match batch {
                Ok(result) => result,
                Err(e) => {
                    warn!(server = %self.name, error = %e, "scrub");
                    continue;
                }
            };
            self.scrubbed.fetch_add(checked, Ordering::Relaxed);
            self.scrub_bad
                .fetch_add(bad.len() as u64, Ordering::Relaxed);
            for (id, e) in bad {
                self.lost(&id.owner, &id.name, id.version, id.chunk, &e)
                    .await;
            }
            match next {
                Some(id) => after = Some(id),
                // A pass is done: rest a round before the next.
                None => tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(self.interval) => {}
                },
            }
        }
    }
}

/// What one batch of the scrub did.
struct ScrubBatch {
    /// Where the next batch goes on from; `None` at the end of the store.
    next: Option<CopyId>,
    checked: u64,
    /// Bytes counted against the rate.
    spent: u64,
    bad: Vec<(CopyId, Error)>,
}

/// How long the scrub waits after a batch that counted `spent` bytes and
/// took `took`: at least a second from its start, and as long as `rate`
/// bytes a second asks. A chunk is read whole, so a batch overruns its
/// second's budget by up to a chunk: paced by the tick alone, a store of
/// 256 MiB chunks was scrubbed at a chunk a second, 64 times a rate of
/// 4 MiB/s, and that hashing and reading was a core's worth of CPU among
/// four servers during a benchmark.
fn scrub_wait(spent: u64, rate: u64, took: Duration) -> Duration {
    let due = Duration::from_secs_f64(spent as f64 / rate.max(1) as f64);
    due.max(Duration::from_secs(1)).saturating_sub(took)
}

/// Checks copies after `after` until `budget` bytes are spent (a chunk
/// counts as at least [`SCRUB_MIN_COST`]).
fn scrub_batch(store: &Store, mut after: Option<CopyId>, budget: u64) -> Result<ScrubBatch> {
    let (mut spent, mut checked, mut bad) = (0u64, 0u64, Vec::new());
    while spent < budget {
        let page = store.copies(after.as_ref(), 64)?;
        let Some(last) = page.last().cloned() else {
            return Ok(ScrubBatch {
                next: None,
                checked,
                spent,
                bad,
            });
        };
        for id in page {
            if spent >= budget {
                return Ok(ScrubBatch {
                    next: after,
                    checked,
                    spent,
                    bad,
                });
            }
            let read = store
                .open_chunk(&id.owner, &id.name, id.version, id.chunk)
                .and_then(ChunkReader::check);
            match read {
                Ok(len) => {
                    checked += 1;
                    spent += len.max(SCRUB_MIN_COST);
                }
                // Replaced or deleted since it was listed: not a loss.
                Err(Error::NotFound { .. }) if !store.holds(&id)? => {}
                Err(e) => {
                    checked += 1;
                    spent += SCRUB_MIN_COST;
                    bad.push((id.clone(), e));
                }
            }
            after = Some(id);
        }
        after = Some(last);
    }
    Ok(ScrubBatch {
        next: after,
        checked,
        spent,
        bad,
    })
}

/// Whether every chunk this server holds is on its holders under the
/// current table (the members, this server not among them), and every
/// member agrees on the ring: a leaving server may go.
pub(crate) async fn handed_over(healer: &Healer) -> Result<bool> {
    let (ring, layout) = healer.layout();
    if ring.is_empty() || layout.pos.is_some() {
        return Ok(false);
    }
    let current = healer.blocking(|s| s.layout()).await?;
    if current != Some(layout) {
        return Ok(false); // the store does not know it is leaving yet
    }
    let peers = healer.peers(&ring).await;
    let digest = healer.chord.digest();
    let agreed = peers
        .iter()
        .filter(|p| p.active)
        .all(|p| p.root.is_some_and(|r| r.view == digest));
    let nothing_left = healer
        .blocking(|s| Ok(s.surplus(None, 1)?.is_empty()))
        .await?;
    Ok(agreed && nothing_left)
}

/// Asks a peer whether it holds `chunk` of `version` of a file.
async fn holds(conn: &mut PeerConn, owner: &str, name: &str, version: Version, chunk: u32) -> Held {
    let request = Request::PeerHeld {
        owner: owner.to_string(),
        name: name.to_string(),
        version,
    };
    match conn.call(&request).await {
        Ok(Response::Held { chunks }) if chunks.contains(&chunk) => Held::Yes,
        Ok(Response::Held { .. }) => Held::No,
        _ => Held::Unknown,
    }
}

/// A peer's manifest of a file, if still the version it listed.
async fn fetch_manifest(conn: &mut PeerConn, entry: &SyncEntry) -> Result<Option<Manifest>> {
    let request = Request::PeerStat {
        owner: entry.owner.clone(),
        name: entry.name.clone(),
    };
    match conn.call(&request).await? {
        Response::File {
            manifest: Some(m), ..
        } if m.version >= entry.version => Ok(Some(m)),
        Response::File { .. } => Ok(None), // changed meanwhile; next round
        other => Err(Error::Protocol(format!("no manifest: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrub_waits_as_long_as_its_rate_asks_for_what_a_batch_read() {
        let s = Duration::from_secs;
        let rate = 4 << 20;
        // A second's budget of small chunks: the rest of the second.
        assert_eq!(scrub_wait(rate, rate, Duration::ZERO), s(1));
        assert_eq!(
            scrub_wait(1 << 20, rate, Duration::from_millis(300)),
            Duration::from_millis(700)
        );
        // One 256 MiB chunk at 4 MiB/s: 64 s from the batch's start.
        assert_eq!(scrub_wait(256 << 20, rate, s(2)), s(62));
        // Nothing read: a second.
        assert_eq!(scrub_wait(0, rate, Duration::ZERO), s(1));
        // A batch that took longer than its due: no wait.
        assert_eq!(scrub_wait(rate, rate, s(3)), Duration::ZERO);
    }
}
