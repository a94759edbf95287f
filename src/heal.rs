//! Self-healing: every server keeps its own share of every file complete.
//!
//! A heal round runs when the server starts, every `heal_interval`, and at
//! once when a bad copy is found. In a round the server
//!
//! 1. removes versions replaced more than two rounds ago (kept so reads under
//!    way could finish), and checks its index against the disk (files deleted
//!    under it are forgotten, vanished manifests rewritten),
//! 2. asks every other ring member for its inventory (owner, name, version,
//!    tombstone or not, chunks held),
//! 3. for each file takes the newest version anyone has; if that is newer than
//!    its own, fetches the manifest and commits it (which drops older chunks,
//!    or everything for a tombstone) — so an older version never overwrites a
//!    newer one, and a deleted file never comes back,
//! 4. fetches every chunk the placement table gives it that it lacks, from a
//!    server holding that chunk of that version, checking it against the
//!    manifest's checksum before storing it,
//! 5. drops a tombstone once every member is reachable and none has the file
//!    at an older version,
//! 6. drops its copy of a chunk the table no longer gives it (the ring grew
//!    or shrank), but only once both of the chunk's holders under the new
//!    table have it, every member is reachable, and all agree on the members
//!    (the same view digest): a copy is removed only when two others exist.
//!
//! Only pulls: each server mends itself, so a server returning after a crash
//! catches up within one round, and a bad copy is replaced within seconds.
//!
//! Rebalancing after a join or a leave is nothing more: the table is the one
//! over the current members (see `chord`), files keep their chunk count, and
//! steps 4 and 6 move each chunk to its new holders (`placement` explains the
//! table for a file whose chunk count differs from the ring's size). A
//! server that is leaving holds nothing under the new table, so its rounds
//! only drop copies once they are safe elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::placement::Placement;
use crate::protocol::{Connection, InventoryEntry, Manifest, Member, Request, Response};
use crate::server::{finish, pump_into, Server};
use crate::store::ChunkSpec;
use crate::tls::ClientStream;

type Conn = Connection<ClientStream<TcpStream>>;
type Key = (String, String);

/// Runs heal rounds until `shutdown`.
pub(crate) async fn heal_loop(server: Arc<Server>, shutdown: CancellationToken) {
    loop {
        let started = Instant::now();
        if !server.chord.settled() {
            // Members unknown yet (nobody answered): a table over a guessed
            // ring would fetch the wrong chunks.
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(server.chord.stabilize) => {}
            }
            continue;
        }
        match heal_round(&server).await {
            Ok(report) => record(&server, &report, started),
            Err(e) => warn!(server = %server.name, error = %e, "heal round failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(server.heal_interval) => {}
            () = server.heal_now.notified() => {}
        }
    }
}

/// What one round did.
#[derive(Debug, Default)]
struct Report {
    copied: u64,
    missing: u64,
    manifests: u64,
    tombstones_dropped: u64,
    /// Copies dropped because the ring changed and their new holders have them.
    dropped: u64,
}

fn record(server: &Server, report: &Report, started: Instant) {
    let mut heal = server.heal.lock().expect("heal lock");
    heal.rounds += 1;
    heal.copied += report.copied;
    heal.missing = report.missing;
    if report.missing > 0 || report.copied > 0 {
        heal.unhealthy_since.get_or_insert(started);
    }
    if report.missing == 0 {
        if let Some(since) = heal.unhealthy_since.take() {
            let took = since.elapsed();
            heal.healed_in = Some(took);
            if report.copied > 0 || report.manifests > 0 {
                info!(server = %server.name, copied = report.copied, secs = took.as_secs_f64(), "healed");
            }
        }
    }
    if report.copied + report.dropped > 0 {
        info!(server = %server.name, copied = report.copied, dropped = report.dropped, "heal round moved copies");
    }
    if report.copied + report.manifests + report.tombstones_dropped > 0 {
        debug!(server = %server.name, ?report, "heal round");
    }
}

/// A peer's connection and inventory, if it could be reached.
struct PeerView {
    member: Member,
    /// A member of the ring (not a server that is leaving).
    active: bool,
    conn: Option<Conn>,
    files: Option<BTreeMap<Key, InventoryEntry>>,
    /// Its membership digest.
    view: Option<u64>,
}

async fn heal_round(server: &Arc<Server>) -> Result<Report> {
    let store = Arc::clone(&server.store);
    // Versions replaced more than two rounds ago: readers have had their turn.
    let grace = server.heal_interval * 2;
    tokio::task::spawn_blocking(move || {
        store.expire_retired(grace);
        store.check_disk()
    })
    .await
    .map_err(|e| Error::Internal(format!("disk check: {e}")))??;

    // The table is over the members in ring order; a server that is leaving
    // is not one (it holds nothing), but still a source until it has gone.
    let ring = server.ring();
    let n = ring.len() as u32;
    let my_pos = ring
        .iter()
        .position(|m| m.name == server.name)
        .map(|i| i as u32 + 1);
    let mut peers = Vec::new();
    for node in server.chord.nodes() {
        if node.name == server.name {
            continue;
        }
        let member = crate::chord::member_of(&node);
        let active = ring.iter().any(|m| m.name == node.name);
        let view = match fetch_inventory(server, &member).await {
            Ok((conn, files, view)) => PeerView {
                member,
                active,
                conn: Some(conn),
                files: Some(files),
                view: Some(view),
            },
            Err(e) => {
                debug!(server = %server.name, peer = %member.name, error = %e, "peer unreachable");
                PeerView {
                    member,
                    active,
                    conn: None,
                    files: None,
                    view: None,
                }
            }
        };
        peers.push(view);
    }
    // Copies move away only while every member answers and agrees on the ring.
    let digest = server.chord.digest();
    let agreed = peers
        .iter()
        .filter(|p| p.active)
        .all(|p| p.view == Some(digest))
        && n > 0;

    let mine: BTreeMap<Key, InventoryEntry> = server
        .store
        .inventory()
        .into_iter()
        .map(|e| ((e.owner.clone(), e.name.clone()), e))
        .collect();
    let mut keys: BTreeSet<Key> = mine.keys().cloned().collect();
    for files in peers.iter().filter_map(|p| p.files.as_ref()) {
        keys.extend(files.keys().cloned());
    }

    let mut report = Report::default();
    nudge_hinted(server, &mut peers).await;
    for key in keys {
        let (owner, name) = (&key.0, &key.1);
        let newest = peers
            .iter()
            .filter_map(|p| entry(p, &key))
            .chain(mine.get(&key))
            .map(|e| e.version)
            .max()
            .expect("the key came from somewhere");
        let my_version = mine.get(&key).map(|e| e.version);

        if my_version < Some(newest) {
            let Some(source) = peers
                .iter()
                .position(|p| entry(p, &key).is_some_and(|e| e.version == newest))
            else {
                continue;
            };
            match fetch_manifest(&mut peers[source], owner, name).await {
                Ok(manifest) if manifest.version == newest => {
                    let store = Arc::clone(&server.store);
                    let o = owner.clone();
                    tokio::task::spawn_blocking(move || store.commit(&o, manifest))
                        .await
                        .map_err(|e| Error::Internal(format!("commit task: {e}")))??;
                    report.manifests += 1;
                }
                Ok(_) => continue, // it changed meanwhile; next round
                Err(e) => {
                    debug!(server = %server.name, file = %name, error = %e, "manifest fetch failed");
                    peers[source].conn = None;
                    continue;
                }
            }
        }

        let Some(manifest) = server.store.manifest(owner, name) else {
            continue;
        };
        if manifest.deleted {
            let everyone_has_it = peers.iter().filter(|p| p.active).all(|p| match &p.files {
                None => false, // unreachable: it may still hold the file
                Some(files) => files
                    .get(&key)
                    .is_none_or(|e| e.deleted && e.version >= manifest.version),
            });
            if everyone_has_it {
                let store = Arc::clone(&server.store);
                let (o, nm, v) = (owner.clone(), name.clone(), manifest.version);
                let dropped = tokio::task::spawn_blocking(move || store.drop_tombstone(&o, &nm, v))
                    .await
                    .map_err(|e| Error::Internal(format!("tombstone task: {e}")))??;
                report.tombstones_dropped += u64::from(dropped);
            }
            continue;
        }
        let placement = Placement::of(owner, name, n);
        let held = server.store.file(owner, name).1;
        let wanted: BTreeSet<u32> = my_pos
            .map(|pos| placement.chunks_held(pos, manifest.chunks))
            .unwrap_or_default()
            .into_iter()
            .collect();
        if agreed {
            for &chunk in held.iter().filter(|c| !wanted.contains(c)) {
                let safe = placement.holders(chunk).iter().all(|&pos| {
                    let holder = &ring[pos as usize - 1].name;
                    peers.iter().any(|p| {
                        &p.member.name == holder
                            && entry(p, &key).is_some_and(|e| {
                                e.version == manifest.version && e.held.contains(&chunk)
                            })
                    })
                });
                if safe {
                    let store = Arc::clone(&server.store);
                    let (o, nm, v) = (owner.clone(), name.clone(), manifest.version);
                    let dropped =
                        tokio::task::spawn_blocking(move || store.drop_chunk(&o, &nm, v, chunk))
                            .await
                            .map_err(|e| Error::Internal(format!("drop task: {e}")))??;
                    if dropped {
                        debug!(server = %server.name, owner = %owner, file = %name, chunk, "moved: dropped the old copy");
                        report.dropped += 1;
                    }
                }
            }
        }
        for chunk in wanted.into_iter().filter(|c| !held.contains(c)) {
            let sources: Vec<usize> = (0..peers.len())
                .filter(|&i| {
                    entry(&peers[i], &key)
                        .is_some_and(|e| e.version == manifest.version && e.held.contains(&chunk))
                })
                .collect();
            let mut done = false;
            for i in sources {
                match fetch_chunk(server, &mut peers[i], owner, &manifest, chunk).await {
                    Ok(()) => {
                        info!(server = %server.name, owner = %owner, file = %name, chunk, from = %peers[i].member.name, "copied a missing chunk");
                        done = true;
                        break;
                    }
                    Err(e) => {
                        warn!(server = %server.name, file = %name, chunk, from = %peers[i].member.name, error = %e, "chunk copy failed");
                        peers[i].conn = None;
                    }
                }
            }
            if done {
                report.copied += 1;
            } else {
                report.missing += 1;
            }
        }
    }
    Ok(report)
}

/// Whether every chunk this server holds is on both its holders under the
/// current table (the members, this server not among them), and every
/// member agrees on the ring: a leaving server may go.
pub(crate) async fn handed_over(server: &Server) -> Result<bool> {
    let ring = server.ring();
    let n = ring.len() as u32;
    if n == 0 {
        return Ok(false); // nobody to hand the data to
    }
    let digest = server.chord.digest();
    let mut inventories = BTreeMap::new();
    for member in ring.iter().filter(|m| m.name != server.name) {
        let (_, files, view) = fetch_inventory(server, member).await?;
        if view != digest {
            return Ok(false);
        }
        inventories.insert(member.name.clone(), files);
    }
    for e in server.store.inventory() {
        let Some(manifest) = server.store.manifest(&e.owner, &e.name) else {
            continue;
        };
        if manifest.deleted {
            continue;
        }
        let key = (e.owner.clone(), e.name.clone());
        let placement = Placement::of(&e.owner, &e.name, n);
        for chunk in 1..=manifest.chunks {
            for pos in placement.holders(chunk) {
                let holder = &ring[pos as usize - 1].name;
                let has = inventories
                    .get(holder)
                    .and_then(|files| files.get(&key))
                    .is_some_and(|h| {
                        h.version > manifest.version
                            || (h.version == manifest.version && h.held.contains(&chunk))
                    });
                if !has {
                    return Ok(false);
                }
            }
        }
    }
    Ok(true)
}

fn entry<'a>(peer: &'a PeerView, key: &Key) -> Option<&'a InventoryEntry> {
    peer.files.as_ref().and_then(|f| f.get(key))
}

/// Hinted handoff: for every reachable server a writer could not give copies
/// to, drop the hints it has caught up on, and ask it to heal now if it has
/// not.
async fn nudge_hinted(server: &Server, peers: &mut [PeerView]) {
    let hinted: Vec<(String, Vec<Key>)> = {
        let hints = server.hints.lock().expect("hints lock");
        hints
            .iter()
            .map(|(target, files)| (target.clone(), files.iter().cloned().collect()))
            .collect()
    };
    for (target, files) in hinted {
        let Some(peer) = peers.iter_mut().find(|p| p.member.name == target) else {
            continue;
        };
        let Some(theirs) = &peer.files else {
            continue; // still down
        };
        let ring = server.ring();
        let Some(pos) = ring.iter().position(|m| m.name == target) else {
            continue;
        };
        let n = ring.len() as u32;
        let caught_up: Vec<Key> = files
            .iter()
            .filter(|key| {
                let Some(mine) = server.store.manifest(&key.0, &key.1) else {
                    return true;
                };
                let Some(entry) = theirs.get(*key) else {
                    return false;
                };
                if mine.deleted {
                    return entry.version >= mine.version;
                }
                let wanted =
                    Placement::of(&key.0, &key.1, n).chunks_held(pos as u32 + 1, mine.chunks);
                entry.version > mine.version
                    || (entry.version == mine.version
                        && wanted.iter().all(|c| entry.held.contains(c)))
            })
            .cloned()
            .collect();
        if caught_up.len() < files.len() {
            if let Some(conn) = peer.conn.as_mut() {
                let _ = conn.call(&Request::HealNow).await;
            }
        }
        let mut hints = server.hints.lock().expect("hints lock");
        if let Some(set) = hints.get_mut(&target) {
            for key in &caught_up {
                set.remove(key);
            }
            if set.is_empty() {
                hints.remove(&target);
            }
        }
    }
}

/// Connects to `member` as a peer and reads its whole inventory.
async fn fetch_inventory(
    server: &Server,
    member: &Member,
) -> Result<(Conn, BTreeMap<Key, InventoryEntry>, u64)> {
    let key = server.key.as_ref().ok_or(Error::NotLoggedIn)?;
    let timeout = server.heal_interval.max(std::time::Duration::from_secs(3));
    let mut conn =
        crate::peer::connect(&server.name, key, &server.peer_tls, member, timeout).await?;
    let mut files = BTreeMap::new();
    let mut after = None;
    loop {
        match conn.call(&Request::Inventory { after }).await? {
            Response::Inventory {
                files: page,
                more,
                view,
            } => {
                after = page.last().map(|e| (e.owner.clone(), e.name.clone()));
                for e in page {
                    files.insert((e.owner.clone(), e.name.clone()), e);
                }
                if !more || after.is_none() {
                    return Ok((conn, files, view));
                }
            }
            other => return Err(Error::Protocol(format!("{}: {other:?}", member.name))),
        }
    }
}

async fn fetch_manifest(peer: &mut PeerView, owner: &str, name: &str) -> Result<Manifest> {
    let conn = peer.conn.as_mut().ok_or(Error::NotLoggedIn)?;
    let request = Request::PeerStat {
        owner: owner.to_string(),
        name: name.to_string(),
    };
    match conn.call(&request).await? {
        Response::File {
            manifest: Some(m), ..
        } => Ok(m),
        other => Err(Error::Protocol(format!(
            "{}: no manifest: {other:?}",
            peer.member.name
        ))),
    }
}

/// Copies one chunk from `peer` into this server's store, accepting it only
/// if it matches the manifest's checksum.
async fn fetch_chunk(
    server: &Server,
    peer: &mut PeerView,
    owner: &str,
    manifest: &Manifest,
    chunk: u32,
) -> Result<()> {
    let conn = peer.conn.as_mut().ok_or(Error::NotLoggedIn)?;
    let request = Request::PeerGetChunk {
        owner: owner.to_string(),
        name: manifest.name.clone(),
        version: manifest.version,
        chunk,
    };
    let spec = ChunkSpec {
        owner: owner.to_string(),
        name: manifest.name.clone(),
        version: manifest.version,
        chunk,
        chunks: manifest.chunks,
        size: manifest.size,
    };
    match conn.call(&request).await? {
        Response::Chunk { len } if len == spec.chunk_len() => {}
        other => return Err(Error::Protocol(format!("{other:?}"))),
    }
    let expected = *manifest
        .checksums
        .get(chunk as usize - 1)
        .ok_or_else(|| Error::Internal("manifest lacks a checksum".into()))?;
    let writer = server.store.begin_chunk(spec)?;
    let (writer, _) = pump_into(conn, writer, |m: Response| match m {
        Response::ChunkDone { checksum } => Ok(checksum),
        Response::Error(e) => Err(e.into_error(&peer.member.name)),
        other => Err(Error::Protocol(format!("{other:?}"))),
    })
    .await?;
    // Checked against the manifest, not the sender's word.
    finish(writer, expected).await?;
    let store = Arc::clone(&server.store);
    let (owner, name) = (owner.to_string(), manifest.name.clone());
    tokio::task::spawn_blocking(move || store.sync_file_dir(&owner, &name))
        .await
        .map_err(|e| Error::Internal(format!("sync task: {e}")))?
}
