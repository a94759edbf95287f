//! The ring as the client sees it: asking for it, adopting it, each member's
//! standing, and dialling a member.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::config::member_id;
use crate::error::{Error, Result};
use crate::placement::Placement;
use crate::protocol::{Connection, Member, Request, Response, ServerStatus, PROTOCOL_VERSION};
use crate::ring::Id;
use crate::standing::{standings, OwnView, Standing};
use crate::tls::{self};

use super::*;

/// The ring as one operation sees it: ring position - 1 → index into the
/// client's slots (it derefs to that list), the members' ids, and the copies
/// `k` of every chunk. An operation takes it once, so a ring change midway
/// does not mix two placements.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Ring {
    pub(super) order: Vec<usize>,
    pub(super) ids: Vec<Id>,
    pub(super) k: u32,
    /// The members the server that told us the ring sees as down.
    pub(super) down: Vec<String>,
}

impl std::ops::Deref for Ring {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        &self.order
    }
}

impl Ring {
    /// The slots holding chunk `chunk` of a `chunks`-chunk file, the one to
    /// read first first.
    pub(super) fn holders(&self, placement: &Placement, chunk: u32, chunks: u32) -> Vec<usize> {
        self.positions(placement, chunk, chunks)
            .iter()
            .map(|&pos| self.order[pos as usize - 1])
            .collect()
    }

    /// [`Ring::holders`] as ring positions (1-based).
    pub(super) fn positions(&self, placement: &Placement, chunk: u32, chunks: u32) -> Vec<u32> {
        placement.holders(&self.ids, chunk, chunks, self.k)
    }

    /// Copies a chunk has when all are stored: `k`, or every member of a
    /// smaller ring.
    pub(super) fn copies(&self) -> u32 {
        self.k.min(self.order.len() as u32)
    }
}

/// How often an operation asks the ring whether it has changed.
const RING_REFRESH: Duration = Duration::from_secs(1);

impl Client {
    /// The ring's members in ring order.
    pub fn ring(&self) -> Vec<Member> {
        self.order()
            .iter()
            .map(|&i| self.slot(i).member.clone())
            .collect()
    }

    pub(super) fn n(&self) -> u32 {
        self.order().len() as u32
    }

    /// The ring as it is now. An operation takes this once, so a ring change
    /// midway does not mix two placements.
    pub(super) fn order(&self) -> Arc<Ring> {
        Arc::clone(&self.order.read().expect("order lock"))
    }

    /// Makes `ring` (members in ring order) the client's ring, keeping the
    /// sessions and connections of servers it already knew. Members in
    /// `down` are marked down, so reads try their partners first. Every
    /// chunk has `copies` copies.
    pub(super) fn adopt(&self, ring: Vec<Member>, down: &[String], copies: u32) {
        let mut slots = self.slots.write().expect("slots lock");
        let mut order = Vec::with_capacity(ring.len());
        let ids = ring
            .iter()
            .map(|m| member_id(m).unwrap_or_else(|_| Id::of_name(&m.name)))
            .collect();
        for member in ring {
            let known = slots
                .iter()
                .position(|s| s.member.name == member.name && s.member.addr == member.addr);
            let i = match known {
                Some(i) => i,
                None => {
                    slots.push(Arc::new(Slot {
                        member,
                        token: Mutex::new(None),
                        pool: Mutex::new(Vec::new()),
                        up: AtomicBool::new(false),
                        standing: AtomicU8::new(standing_code(Standing::InRing)),
                    }));
                    slots.len() - 1
                }
            };
            if down.contains(&slots[i].member.name) {
                slots[i].up.store(false, Ordering::Relaxed);
            }
            order.push(i);
        }
        *self.order.write().expect("order lock") = Arc::new(Ring {
            order,
            ids,
            k: copies,
            down: down.to_vec(),
        });
        *self.refreshed.lock().expect("refresh lock") = Instant::now();
    }

    /// Asks the ring (any member that answers, else the configured servers)
    /// who its members are now: servers join and leave.
    pub async fn refresh_ring(&self) -> Result<()> {
        one_command(self.refresh_ring_command()).await
    }

    async fn refresh_ring_command(&self) -> Result<()> {
        // The member likeliest to answer is asked first (members known to
        // be down last); if it does not, the others are asked at once and
        // the first answer wins, so hung members cost one timeout at most.
        let mut order = self.order().to_vec();
        order.sort_by_key(|&i| !self.slot(i).up.load(Ordering::Relaxed));
        let ask = |i: usize| async move {
            match self.call(i, &Request::Ring).await? {
                Response::Ring {
                    members,
                    down,
                    copies,
                } if !members.is_empty() => Ok((members, down, copies)),
                other => Err(unexpected(&self.server_name(i), &other)),
            }
        };
        let mut first_error = None;
        if let Some((&first, rest)) = order.split_first() {
            match ask(first).await {
                Ok((members, down, copies)) => {
                    self.adopt(members, &down, copies);
                    return Ok(());
                }
                Err(e) => first_error = Some(e),
            }
            let mut asking: FuturesUnordered<_> = rest.iter().map(|&i| ask(i)).collect();
            while let Some(answer) = asking.next().await {
                match answer {
                    Ok((members, down, copies)) => {
                        self.adopt(members, &down, copies);
                        return Ok(());
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        match discover(&self.seeds, &self.login.tls, self.login.timeout).await {
            Ok((members, down, copies)) => {
                self.adopt(members, &down, copies);
                Ok(())
            }
            Err(e) => Err(first_error.unwrap_or(e)),
        }
    }

    /// Refreshes the ring if it was last asked for over a second ago.
    pub(super) async fn maybe_refresh(&self) {
        let stale = self.refreshed.lock().expect("refresh lock").elapsed() >= RING_REFRESH;
        if stale {
            if let Err(e) = self.refresh_ring().await {
                debug!(error = %e, "cannot refresh the ring");
            }
        }
    }

    /// Each member's name and whether the last attempt to reach it worked.
    pub fn health(&self) -> Vec<(String, bool)> {
        self.order()
            .iter()
            .map(|&i| {
                let s = self.slot(i);
                (s.member.name.clone(), s.up.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Each member's name and, if it answered when last asked, whether it
    /// is in one ring with the others (`None`: it did not answer).
    pub fn standing(&self) -> Vec<(String, Option<Standing>)> {
        self.order()
            .iter()
            .map(|&i| {
                let s = self.slot(i);
                let standing =
                    s.up.load(Ordering::Relaxed)
                        .then(|| standing_of(s.standing.load(Ordering::Relaxed)));
                (s.member.name.clone(), standing)
            })
            .collect()
    }

    /// Pings every member (on pooled connections), refreshing
    /// [`Client::health`] and [`Client::standing`] from their accounts of
    /// the ring (`Ring`: cheap, but without successors).
    pub async fn refresh_health(&self) {
        one_command(self.ring_standings(&self.order(), &Request::Ring)).await;
    }

    /// Asks the members `order` (slots) for their accounts of the ring
    /// (`request` is `Ring` or `Status`) and records each one's
    /// [`Standing`]; returns them, `None` for those that did not answer.
    pub(super) async fn ring_standings(
        &self,
        order: &[usize],
        request: &Request,
    ) -> Vec<(usize, Option<Standing>)> {
        let answers = self.call_on(order, request).await;
        let views: Vec<Option<OwnView>> = answers
            .iter()
            .map(|(i, answer)| match answer {
                Ok(Response::Ring { members, down, .. }) => Some(OwnView {
                    name: self.server_name(*i),
                    members: members.iter().map(|m| m.name.clone()).collect(),
                    down: down.clone(),
                    successor: None,
                }),
                Ok(Response::Status(s)) => Some(own_view(s)),
                _ => None,
            })
            .collect();
        self.record_standings(order, &views)
    }

    /// Judges the accounts `views` of the members `order` (slots), and
    /// remembers each answering one's standing.
    pub(super) fn record_standings(
        &self,
        order: &[usize],
        views: &[Option<OwnView>],
    ) -> Vec<(usize, Option<Standing>)> {
        let judged = standings(views);
        for (&i, standing) in order.iter().zip(&judged) {
            if let Some(standing) = standing {
                self.slot(i)
                    .standing
                    .store(standing_code(*standing), Ordering::Relaxed);
            }
        }
        order.iter().copied().zip(judged).collect()
    }
}

/// Asks the configured servers, in order, for the ring: its members in ring
/// order, and those the answering server sees as down.
pub(super) async fn discover<'a>(
    servers: &'a [String],
    tls: &Tls,
    timeout: Duration,
) -> Result<(Vec<Member>, Vec<String>, u32)> {
    // All at once, the first answer winning: hung servers cost one
    // timeout together, not one each.
    let ask = |addr: &'a String| async move {
        if let Some(reason) = timed_out_earlier(addr) {
            return Err(Error::Unavailable {
                server: addr.clone(),
                reason,
            });
        }
        let member = Member {
            name: addr.clone(),
            addr: addr.clone(),
            id: None,
        };
        let mut conn = connect(&member, tls, timeout).await?;
        match conn.call(&Request::Ring).await {
            Ok(Response::Ring {
                members,
                down,
                copies,
            }) if !members.is_empty() => Ok((members, down, copies)),
            Ok(other) => Err(unexpected(addr, &other)),
            Err(e) => {
                if let Error::Timeout { .. } = e {
                    remember_timeout(addr, &e.to_string());
                }
                Err(e)
            }
        }
    };
    let mut asking: FuturesUnordered<_> = servers
        .iter()
        .enumerate()
        .map(|(at, addr)| async move { (at, ask(addr).await) })
        .collect();
    let mut reasons = vec![None; servers.len()];
    while let Some((at, answer)) = asking.next().await {
        match answer {
            Ok(found) => return Ok(found),
            Err(e) => reasons[at] = Some(e.to_string()),
        }
    }
    Err(Error::Unavailable {
        server: "every configured server".into(),
        reason: reasons.into_iter().flatten().collect::<Vec<_>>().join("; "),
    })
}

/// Opens a TLS connection to `member` and exchanges `Hello`.
pub(super) async fn connect(member: &Member, tls: &Tls, timeout: Duration) -> Result<Conn> {
    dial(member, tls, timeout).await.map(|(conn, _)| conn)
}

/// TCP, TLS and `Hello` with `member`, each step within `timeout`. Returns the
/// connection and the server's challenge (which a peer server answers).
pub(crate) async fn dial(
    member: &Member,
    tls: &Tls,
    timeout: Duration,
) -> Result<(Conn, [u8; 32])> {
    let unavailable = |reason: String| Error::Unavailable {
        server: member.name.clone(),
        reason,
    };
    let timed_out = |what: &str| {
        let reason = format!("{what} within {} s", timeout.as_secs());
        remember_timeout(&member.addr, &reason);
        unavailable(reason)
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(&member.addr))
        .await
        .map_err(|_| timed_out("no answer"))?
        .map_err(|e| unavailable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let stream = tokio::time::timeout(timeout, tls::connect(tls, &member.addr, stream))
        .await
        .map_err(|_| timed_out("no TLS handshake"))??;
    let mut conn = Connection::new(stream, member.name.clone());
    conn.set_timeout(Some(timeout));
    conn.set_send_timeout(Some(timeout));
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    match conn.call(&hello).await? {
        Response::Hello { challenge, .. } => Ok((conn, challenge)),
        other => Err(unexpected(&member.name, &other)),
    }
}

/// A server's account of the ring, from its STATUS.
pub(super) fn own_view(s: &ServerStatus) -> OwnView {
    OwnView {
        name: s.name.clone(),
        members: s.ring.iter().map(|m| m.name.clone()).collect(),
        down: s.down.clone(),
        successor: s.successor.clone(),
    }
}

/// A [`Standing`] as a slot keeps it.
fn standing_code(standing: Standing) -> u8 {
    match standing {
        Standing::InRing => 0,
        Standing::Alone => 1,
        Standing::Apart => 2,
    }
}

pub(super) fn standing_of(code: u8) -> Standing {
    match code {
        1 => Standing::Alone,
        2 => Standing::Apart,
        _ => Standing::InRing,
    }
}
