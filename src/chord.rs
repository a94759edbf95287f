//! The thin async layer that runs a server's Chord state ([`crate::ring`])
//! over the protocol, and keeps its membership view.
//!
//! Every `stabilize_ms` a server
//!
//! 1. *stabilizes*: asks its successor for its predecessor and successor
//!    list (`GetPredecessor`, `GetSuccessorList`), adopts a closer successor
//!    if there is one, and `Notify`s the successor; a successor that does not
//!    answer within `failure_timeout_ms` is marked down and the next one in
//!    the successor list takes its place;
//! 2. *checks its predecessor* the same way (a dead one is forgotten, so the
//!    next live node's `Notify` replaces it);
//! 3. *fixes a few fingers* by iterative `FindSuccessor` lookups;
//! 4. every few rounds (every round while alone) *asks a contact* (its `join`
//!    address, its `[[ring]]` seeds, members it cannot see) for its own
//!    successor: that is how a server joins, how a returning server finds
//!    its place, and how two halves of a split ring merge;
//! 5. *walks the ring* by successor lists to learn who is on it; members of
//!    the view the walk does not reach (and members marked down) are asked
//!    directly, and are down if they do not answer within the timeout.
//!
//! Views travel with `GetSuccessorList` replies and `Notify`, and are merged
//! by [`View::merge`]; a changed view is saved (in the store's database,
//! so a restarted server knows the members at once) and wakes the
//! healer, which moves data to match the new placement table.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::peer::{Link, PeerConn as Conn, Refusals, Trouble};
use crate::protocol::{Member, Request, Response};
use crate::ring::{in_half_open, Id, Lookup, Node, RingState, View, ViewEntry};
use crate::store::Store;

/// Longest lookup path followed before giving up (a ring in flux may loop).
const MAX_HOPS: usize = 32;
/// Fingers refreshed per round.
const FINGERS_PER_ROUND: usize = 4;
/// Most nodes a ring walk visits.
const MAX_WALK: usize = 256;

/// A server's ring: Chord state, membership view, and what it sees.
pub struct Chord {
    me: Node,
    state: Mutex<RingState>,
    view: Mutex<View>,
    /// Where the view is saved.
    store: Arc<Store>,
    /// Addresses to ask for our place: `join` and the seeds.
    contacts: Vec<String>,
    /// Members the last walk or a failed message found unreachable.
    down: Mutex<BTreeSet<String>>,
    /// This server has exchanged views with another (or has nobody to ask):
    /// until then it does not know the members and must not heal.
    settled: AtomicBool,
    leaving: AtomicBool,
    pub(crate) stabilize: Duration,
    pub(crate) timeout: Duration,
    conns: tokio::sync::Mutex<HashMap<String, Conn>>,
    /// Why peers (by address) could not be reached, as last logged: each
    /// cause is logged once, and its end once (see [`Chord::call`]).
    trouble: Mutex<HashMap<String, Trouble>>,
    /// What this server has logged about peers and clients it refused.
    refusals: Refusals,
    /// Woken when the members change: the healer moves data to match.
    wake: Arc<tokio::sync::Notify>,
}

impl Chord {
    /// The ring state of the server `config` describes: its view is the saved
    /// one (if any), the `[[ring]]` seeds, and itself as an active member.
    pub fn open(
        config: &ServerConfig,
        store: Arc<Store>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Result<Chord> {
        let me = config.node()?;
        let mut view = load_view(&store, &config.data_dir.join(LEGACY_VIEW))?;
        for seed in config.seeds()? {
            view.apply(ViewEntry {
                node: seed,
                active: true,
                stamp: 0,
            });
        }
        let stamp = match view.entries.get(&me.name) {
            Some(e) if e.active && e.node == me => e.stamp,
            _ => now_ns(),
        };
        view.apply(ViewEntry {
            node: me.clone(),
            active: true,
            stamp,
        });
        let mut contacts: Vec<String> = config.join.iter().cloned().collect();
        contacts.extend(
            config
                .ring
                .iter()
                .filter(|m| m.name != me.name)
                .map(|m| m.addr.clone()),
        );
        let alone = contacts.is_empty() && view.entries.len() == 1;
        Ok(Chord {
            state: Mutex::new(RingState::new(me.clone(), config.successors)),
            me,
            view: Mutex::new(view),
            store,
            contacts,
            down: Mutex::new(BTreeSet::new()),
            settled: AtomicBool::new(alone),
            leaving: AtomicBool::new(false),
            stabilize: config.stabilize(),
            timeout: config.failure_timeout(),
            conns: tokio::sync::Mutex::new(HashMap::new()),
            trouble: Mutex::new(HashMap::new()),
            refusals: Refusals::default(),
            wake,
        })
    }

    pub fn me(&self) -> &Node {
        &self.me
    }

    /// The members in ring order (position 1 first).
    pub fn members(&self) -> Vec<Node> {
        self.view.lock().expect("view lock").members()
    }

    /// Every node of the view, members or leaving.
    pub fn nodes(&self) -> Vec<Node> {
        self.view.lock().expect("view lock").nodes()
    }

    pub fn view(&self) -> View {
        self.view.lock().expect("view lock").clone()
    }

    pub fn digest(&self) -> u64 {
        self.view.lock().expect("view lock").digest()
    }

    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// Members seen as down.
    pub fn down(&self) -> Vec<String> {
        self.down
            .lock()
            .expect("down lock")
            .iter()
            .cloned()
            .collect()
    }

    pub fn successor(&self) -> Node {
        self.state.lock().expect("ring lock").successor().clone()
    }

    pub fn predecessor(&self) -> Option<Node> {
        self.state.lock().expect("ring lock").predecessor().cloned()
    }

    pub fn successors(&self) -> Vec<Node> {
        self.state.lock().expect("ring lock").successors().to_vec()
    }

    pub fn lookup_step(&self, id: Id) -> Lookup {
        self.state.lock().expect("ring lock").lookup(id)
    }

    /// `node` says it may be our predecessor.
    pub fn notified(&self, node: Node, view: &View) {
        self.merge(view);
        let mut state = self.state.lock().expect("ring lock");
        if state.notified(node.clone()) {
            debug!(server = %self.me.name, predecessor = %node.name, "new predecessor");
        }
        drop(state);
        self.up(&node.name);
    }

    /// Merges a view from another server; saves it and wakes the healer if
    /// the members changed.
    pub fn merge(&self, other: &View) {
        self.settled.store(true, Ordering::Relaxed);
        let (changed, members) = {
            let mut view = self.view.lock().expect("view lock");
            let before = view.digest();
            let changed = view.merge(other);
            (
                changed.then(|| (before != view.digest(), view.clone())),
                view.members().len(),
            )
        };
        if let Some((members_changed, view)) = changed {
            if let Err(e) = save_view(&self.store, &view) {
                warn!(server = %self.me.name, error = %e, "cannot save the ring view");
            }
            if members_changed {
                info!(server = %self.me.name, members, "the ring's members changed");
                self.wake.notify_one();
            }
        }
    }

    fn mark_down(&self, name: &str) {
        if self
            .down
            .lock()
            .expect("down lock")
            .insert(name.to_string())
        {
            info!(server = %self.me.name, peer = %name, "marked down");
        }
    }

    fn up(&self, name: &str) {
        if self.down.lock().expect("down lock").remove(name) {
            info!(server = %self.me.name, peer = %name, "back up");
        }
    }

    /// One ring message to `node`, on a cached peer connection, within the
    /// failure timeout. A node that answers is not down; why one that does
    /// not could not be reached is logged when it changes (see
    /// [`Chord::reached`]).
    async fn call(&self, link: &Link, node: &Member, request: &Request) -> Result<Response> {
        let cached = self.conns.lock().await.remove(&node.addr);
        let fresh = cached.is_none();
        let result = self.attempt(link, node, request, cached).await;
        match &result {
            Ok(_) => {
                self.reached(node, None);
                if node.id.is_some() {
                    self.up(&node.name);
                }
            }
            // A cached connection the peer has closed says nothing yet.
            Err(e) if fresh => self.reached(node, Some(Trouble::of(e))),
            Err(_) => {}
        }
        result
    }

    async fn attempt(
        &self,
        link: &Link,
        node: &Member,
        request: &Request,
        cached: Option<Conn>,
    ) -> Result<Response> {
        let attempt = async {
            let mut conn = match cached {
                Some(c) => c,
                None => link.connect(node, self.timeout).await?,
            };
            let reply = conn.call(request).await?;
            Ok::<_, Error>((conn, reply))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok((conn, reply))) => {
                self.conns.lock().await.insert(node.addr.clone(), conn);
                Ok(reply)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Timeout {
                what: node.name.clone(),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// Logs, once per change, why `node` cannot be reached (`trouble`), or
    /// that it can again: one line per peer and cause, not one per attempt.
    fn reached(&self, node: &Member, trouble: Option<Trouble>) {
        let mut known = self.trouble.lock().expect("trouble lock");
        let before = match &trouble {
            Some(t) => match known.insert(node.addr.clone(), t.clone()) {
                Some(old) if old.same_cause(t) => return,
                old => old,
            },
            None => match known.remove(&node.addr) {
                Some(old) => Some(old),
                None => return,
            },
        };
        drop(known);
        let name = self.name_at(node);
        match trouble {
            Some(t) => {
                let why = t.describe(&name, crate::tls::host_of(&node.addr));
                warn!(server = %self.me.name, peer = %name, "cannot reach {name}: {why}");
            }
            None if before.is_some() => {
                info!(server = %self.me.name, peer = %name, "reaches {name} again");
            }
            None => {}
        }
    }

    /// A peer's name: a contact is known by its address until the view
    /// names the node there.
    fn name_at(&self, node: &Member) -> String {
        if node.id.is_some() || node.name != node.addr {
            return node.name.clone();
        }
        self.nodes()
            .into_iter()
            .find(|n| n.addr == node.addr)
            .map_or_else(|| node.name.clone(), |n| n.name)
    }

    /// Logs a peer login this server refused: once per peer and cause.
    pub(crate) fn peer_login_refused(&self, peer: &str, addr: std::net::IpAddr, why: &str) {
        let peer = crate::error::shown(peer);
        if self.refusals.first(&format!("login {peer}"), why) {
            warn!(server = %self.me.name, %peer, %addr, "refused a peer login from {peer} ({addr}): {why}");
        }
    }

    /// A peer login this server accepted: a later refusal is news again.
    pub(crate) fn peer_login_accepted(&self, peer: &str) {
        self.refusals.accepted(&format!("login {peer}"));
    }

    /// Logs a TLS handshake this server's listener failed: once per address
    /// and cause (a server with another authority's certificates tries
    /// every half second).
    pub(crate) fn handshake_failed(&self, addr: std::net::IpAddr, error: &std::io::Error) {
        let why = error.to_string();
        if self.refusals.first(&format!("tls {addr}"), &why) {
            warn!(server = %self.me.name, %addr, "TLS handshake with {addr} failed: {why} (a server or client with another authority's certificates? tls/ca.pem must be the cluster's)");
        }
    }

    async fn call_node(&self, link: &Link, node: &Node, request: &Request) -> Result<Response> {
        self.call(link, &member_of(node), request).await
    }

    /// `find_successor(id)`, iteratively from here (or from `start`).
    pub async fn find_successor(&self, link: &Link, id: Id, start: Option<Member>) -> Result<Node> {
        let mut step = match start {
            None => self.lookup_step(id),
            Some(contact) => self.ask_lookup(link, &contact, id).await?,
        };
        for _ in 0..MAX_HOPS {
            match step {
                Lookup::Found(node) => return Ok(node),
                Lookup::Ask(node) if node.id == self.me.id => {
                    step = self.lookup_step(id);
                    if let Lookup::Ask(n) = &step {
                        if n.id == self.me.id {
                            return Ok(self.successor());
                        }
                    }
                }
                Lookup::Ask(node) => match self.ask_lookup(link, &member_of(&node), id).await {
                    Ok(next) => step = next,
                    Err(e) => {
                        self.state.lock().expect("ring lock").failed(node.id);
                        return Err(e);
                    }
                },
            }
        }
        Err(Error::Protocol(format!(
            "no successor of {id:?} within {MAX_HOPS} hops"
        )))
    }

    async fn ask_lookup(&self, link: &Link, node: &Member, id: Id) -> Result<Lookup> {
        match self
            .call(link, node, &Request::FindSuccessor { id })
            .await?
        {
            Response::Lookup(step) => Ok(step),
            other => Err(Error::Protocol(format!("{}: {other:?}", node.name))),
        }
    }

    /// Stabilize: find a live successor, learn its predecessor and list,
    /// notify it.
    async fn stabilize_once(&self, link: &Link) {
        // Alone, yet notified by a predecessor: as in Chord, a lone node's
        // predecessor is its successor. (Otherwise a ring whose others all
        // point at this server keeps it its own successor: every contact it
        // asks for its place answers "you".)
        if let Some(pred) = self.predecessor() {
            let mut state = self.state.lock().expect("ring lock");
            if state.alone() && state.offer_successor(pred.clone()) {
                debug!(server = %self.me.name, successor = %pred.name, "adopted our predecessor as successor");
            }
        }
        for _ in 0..=self.successors().len() {
            let succ = self.successor();
            if succ.id == self.me.id {
                return;
            }
            let answer = async {
                let pred = match self
                    .call_node(link, &succ, &Request::GetPredecessor)
                    .await?
                {
                    Response::Predecessor(p) => p,
                    other => return Err(Error::Protocol(format!("{other:?}"))),
                };
                match self
                    .call_node(link, &succ, &Request::GetSuccessorList)
                    .await?
                {
                    Response::Successors { nodes, view } => Ok((pred, nodes, view)),
                    other => Err(Error::Protocol(format!("{other:?}"))),
                }
            }
            .await;
            match answer {
                Ok((pred, list, view)) => {
                    self.up(&succ.name);
                    self.merge(&view);
                    let changed = self.state.lock().expect("ring lock").stabilized(pred, list);
                    let succ = self.successor();
                    if changed {
                        debug!(server = %self.me.name, successor = %succ.name, "new successor");
                    }
                    let notify = Request::Notify {
                        node: self.me.clone(),
                        view: self.view(),
                    };
                    if let Err(e) = self.call_node(link, &succ, &notify).await {
                        debug!(server = %self.me.name, peer = %succ.name, error = %e, "notify failed");
                    }
                    return;
                }
                Err(e) => {
                    debug!(server = %self.me.name, peer = %succ.name, error = %e, "successor did not answer");
                    self.mark_down(&succ.name);
                    self.state.lock().expect("ring lock").failed(succ.id);
                }
            }
        }
    }

    async fn check_predecessor(&self, link: &Link) {
        let Some(pred) = self.predecessor() else {
            return;
        };
        match self.call_node(link, &pred, &Request::GetPredecessor).await {
            Ok(_) => self.up(&pred.name),
            Err(e) => {
                debug!(server = %self.me.name, peer = %pred.name, error = %e, "predecessor did not answer");
                self.mark_down(&pred.name);
                self.state.lock().expect("ring lock").failed(pred.id);
            }
        }
    }

    async fn fix_fingers(&self, link: &Link) {
        for _ in 0..FINGERS_PER_ROUND {
            let (i, target) = self.state.lock().expect("ring lock").next_finger();
            let succ = self.successor();
            let found = if in_half_open(target, self.me.id, succ.id) {
                Ok(succ)
            } else {
                self.find_successor(link, target, None).await
            };
            match found {
                Ok(node) => self.state.lock().expect("ring lock").set_finger(i, node),
                Err(e) => {
                    debug!(server = %self.me.name, finger = i, error = %e, "finger lookup failed")
                }
            }
        }
    }

    /// Asks a contact where we belong; adopts a closer successor.
    async fn rejoin(&self, link: &Link, round: u64) {
        let succ = self.successor();
        let mut contacts: Vec<Member> = self
            .contacts
            .iter()
            .map(|addr| Member {
                name: addr.clone(),
                addr: addr.clone(),
                id: None,
            })
            .collect();
        let down = self.down();
        contacts.extend(
            self.nodes()
                .iter()
                .filter(|n| n.id != self.me.id && (succ.id == self.me.id || down.contains(&n.name)))
                .map(member_of),
        );
        contacts.retain(|c| c.addr != self.me.addr);
        if contacts.is_empty() {
            return;
        }
        let contact = contacts[round as usize % contacts.len()].clone();
        match self
            .find_successor(link, self.me.id, Some(contact.clone()))
            .await
        {
            Ok(node) => {
                let adopted = self
                    .state
                    .lock()
                    .expect("ring lock")
                    .offer_successor(node.clone());
                if adopted {
                    info!(server = %self.me.name, successor = %node.name, via = %contact.name, "joined the ring");
                    // Learn the members at once rather than at the next walk.
                    let exchange = Request::ExchangeView { view: self.view() };
                    if let Ok(Response::View(view)) = self.call_node(link, &node, &exchange).await {
                        self.merge(&view);
                    }
                }
            }
            Err(e) => {
                debug!(server = %self.me.name, via = %contact.name, error = %e, "cannot ask for our place");
                // A member that does not answer is down, so a server that
                // cannot reach any says so (STATUS shows it alone).
                let unreached = self
                    .trouble
                    .lock()
                    .expect("trouble lock")
                    .contains_key(&contact.addr);
                let name = self.name_at(&contact);
                if unreached && self.nodes().iter().any(|n| n.name == name) {
                    self.mark_down(&name);
                }
            }
        }
    }

    /// Walks the ring by successor lists; members not reached are down.
    async fn walk(&self, link: &Link) {
        let mut live: Vec<Node> = vec![self.me.clone()];
        let mut frontier = self.successors();
        let mut complete = false;
        'walk: for _ in 0..MAX_WALK {
            for node in &frontier {
                if node.id == self.me.id {
                    complete = true;
                    break 'walk;
                }
                if !live.iter().any(|n| n.id == node.id) {
                    live.push(node.clone());
                }
            }
            let Some(last) = frontier.last().cloned() else {
                break;
            };
            match self
                .call_node(link, &last, &Request::GetSuccessorList)
                .await
            {
                Ok(Response::Successors { nodes, view }) => {
                    self.merge(&view);
                    if nodes.iter().any(|n| n.id == self.me.id) {
                        // Back round to us: everyone on the way is live.
                        for node in nodes.iter().take_while(|n| n.id != self.me.id) {
                            if !live.iter().any(|l| l.id == node.id) {
                                live.push(node.clone());
                            }
                        }
                        complete = true;
                        break;
                    }
                    if nodes.iter().all(|n| live.iter().any(|l| l.id == n.id)) {
                        // Brings nothing new and never leads back to us:
                        // the ring has not formed yet.
                        break;
                    }
                    frontier = nodes;
                }
                _ => {
                    self.mark_down(&last.name);
                    break;
                }
            }
        }
        if !complete || live.len() == 1 {
            // Alone, or the walk did not come back round to us (the ring is still
            // forming, or a list was cut short): it proves nothing about
            // who is down. Neighbours that failed to answer are marked
            // down by stabilize and check_predecessor all the same.
            return;
        }
        // Members the walk did not reach may only not have found their place
        // yet: down means not answering, so ask them (at once, in parallel).
        // Those marked down are asked again too (a stale successor list may
        // still name a dead one, so reaching it by the walk proves nothing).
        let members = self.members();
        let down = self.down();
        let unreached: Vec<&Node> = members
            .iter()
            .filter(|m| {
                m.id != self.me.id && (!live.iter().any(|n| n.id == m.id) || down.contains(&m.name))
            })
            .collect();
        let pings = futures_util::future::join_all(
            unreached
                .iter()
                .map(|m| self.call_node(link, m, &Request::GetPredecessor)),
        )
        .await;
        for (m, ping) in unreached.iter().zip(pings) {
            match ping {
                Ok(_) => self.up(&m.name),
                Err(_) => self.mark_down(&m.name),
            }
        }
        // Forget servers that are no longer members.
        self.down
            .lock()
            .expect("down lock")
            .retain(|name| members.iter().any(|m| &m.name == name));
    }

    /// Marks this server as leaving in its view and tells every node.
    pub async fn announce_leave(&self, link: &Link) {
        self.leaving.store(true, Ordering::Relaxed);
        let view = {
            let mut view = self.view.lock().expect("view lock");
            view.apply(ViewEntry {
                node: self.me.clone(),
                active: false,
                stamp: now_ns(),
            });
            view.clone()
        };
        if let Err(e) = save_view(&self.store, &view) {
            warn!(server = %self.me.name, error = %e, "cannot save the ring view");
        }
        for node in self.nodes().iter().filter(|n| n.id != self.me.id) {
            let exchange = Request::ExchangeView { view: view.clone() };
            if let Ok(Response::View(v)) = self.call_node(link, node, &exchange).await {
                self.merge(&v);
            }
        }
        self.wake.notify_one();
    }
}

/// Runs the ring rounds until `shutdown`.
pub(crate) async fn chord_loop(chord: Arc<Chord>, link: Arc<Link>, shutdown: CancellationToken) {
    let mut round: u64 = 0;
    loop {
        let work = async {
            chord.stabilize_once(&link).await;
            chord.check_predecessor(&link).await;
            chord.fix_fingers(&link).await;
            if chord.state.lock().expect("ring lock").alone() || round.is_multiple_of(4) {
                chord.rejoin(&link, round / 4).await;
            }
            chord.walk(&link).await;
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = work => {}
        }
        round += 1;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(chord.stabilize) => {}
        }
    }
}

/// A ring node as the protocol's `Member`.
pub fn member_of(node: &Node) -> Member {
    Member {
        name: node.name.clone(),
        addr: node.addr.clone(),
        id: Some(node.id.to_string()),
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Where the first release kept the view, beside the data (read once, at
/// the first start after the upgrade).
const LEGACY_VIEW: &str = "ring.json";

/// The saved view: from the store, else the first release's `ring.json`.
fn load_view(store: &Store, legacy: &Path) -> Result<View> {
    let (text, source) = match store.ring_view()? {
        Some(bytes) => (
            String::from_utf8(bytes).map_err(|e| Error::Internal(format!("ring view: {e}")))?,
            "the store's ring view".to_string(),
        ),
        None => match std::fs::read_to_string(legacy) {
            Ok(text) => (text, legacy.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(View::default()),
            Err(e) => return Err(Error::io(format!("reading {}", legacy.display()), e)),
        },
    };
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{source}: {e}")))
}

/// Saves the view in the store (JSON: a person can read it with any redb tool).
fn save_view(store: &Store, view: &View) -> Result<()> {
    let text =
        serde_json::to_string(view).map_err(|e| Error::Internal(format!("ring view: {e}")))?;
    store.save_ring_view(text.into_bytes())
}
