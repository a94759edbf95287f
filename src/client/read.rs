//! READ: a byte range of a file as a stream of verified bytes, in order,
//! with bounded memory — what an HTTP GET (ranged or not) answers with,
//! where [`Client::get`] would first download the whole file to disk.
//!
//! [`Client::read`] picks the newest manifest as GET does and returns it
//! with a [`ReadStream`]. The stream fetches every chunk that overlaps the
//! range from its first holder, then its others (holders known to be down
//! last, then any server that said it holds the chunk), and yields only the
//! bytes inside the range.
//!
//! What it guarantees:
//!
//! * A chunk of more than one block (see `crate::blocks`, 1 MiB) is read
//!   with `GetRange`: only the whole blocks covering the range come, with
//!   the chunk's block values, which must merge into the manifest's
//!   checksum. Each block is checked as it completes and only then passed
//!   on, so no unchecked byte of it ever reaches the reader; a holder that
//!   fails midway is followed by the next one from the first byte not yet
//!   passed on.
//! * A smaller chunk is read whole with `GetChunk`, hashed with its
//!   checksum key and compared with the manifest, and passed on only once
//!   it has verified: a bad or short copy costs nothing but a fetch from
//!   the next holder. (The parts of at most [`HOLD`] bytes are held back
//!   this way; a chunk of one block never has a larger one.)
//! * It never yields a wrong byte without then yielding an error: an error
//!   is the stream's last item, and a stream that ends without one has
//!   yielded exactly the range. `Error::ChunkUnavailable` says every holder
//!   of a chunk failed (why, for each, is in the message).
//!
//! What it costs: one connection per chunk being fetched; the reading and
//! hashing of the blocks the range touches (of a whole chunk of one
//! block); and at most [`MAX_BUFFERED`] bytes of file data held at once,
//! however large the file: the chunk being passed on and the next one are
//! fetched together ([`AHEAD`]), each keeping at most [`HOLD`] bytes back
//! plus a short queue. The next chunk's fetch therefore runs while the
//! current one is being passed on, but a chunk larger than that buffer
//! waits for its reader: a stream moves about as fast as one connection,
//! where a GET fetches every chunk at once.
//!
//! A stream reads the version it opened on the ring as it was then. If a
//! writer replaces the file and its old chunks are dropped, or the copies
//! move, it fails with `ChunkUnavailable`; opening it again reads the new
//! state. Dropping the stream stops its fetches: their tasks end and their
//! connections are dropped, never pooled mid-reply. A connection whose
//! chunk ended cleanly goes back to the pool.
//!
//! The stream is `'static`: it holds the client's login and the holders'
//! slots (both already shared through `Arc`s, as `StagedPut` does), not the
//! `Client`, so `read` takes `&self` like every other operation and callers
//! need not keep their client in an `Arc`.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::blocks::{self, BlockHasher, Layout};
use crate::error::{shown, Error, Result};
use crate::placement::{chunk_range, Placement};
use crate::protocol::{checksum_of, ChunkId, Manifest, Request, Response, MAX_BLOCK};

use super::*;

/// The most bytes of one chunk's part in the range held back until they
/// are checked: one block (a chunk of one block is checked whole).
pub const HOLD: u64 = crate::blocks::BLOCK;

/// Chunks fetched at once: the one being passed on and the next.
pub const AHEAD: usize = 2;

/// Pieces (each at most one block) queued between a chunk's fetch and the
/// stream.
const QUEUE: usize = 2;

/// The most file data a [`ReadStream`] holds at once: for each chunk being
/// fetched, what it holds back, one block just received, and its queue.
pub const MAX_BUFFERED: u64 = AHEAD as u64 * (HOLD + (QUEUE as u64 + 1) * MAX_BLOCK as u64);

// The budget a stream may keep in memory, whatever the file's size.
const _: () = assert!(MAX_BUFFERED <= 16 << 20);

impl Client {
    /// Opens `name` (a remote name as [`Client::get`] takes it,
    /// `shared/OWNER/...` included) for reading the bytes in `range`, a
    /// half-open range within the file (`None`: the whole file). Returns the
    /// newest manifest, as GET picks it, and a stream of the range's bytes in
    /// order (see the module's doc for what it guarantees and costs).
    ///
    /// Fails with `NotFound` for no file or a deleted one, and with
    /// `Refused` (one line) for a range that is not within the file.
    pub async fn read(
        &self,
        name: &str,
        range: Option<Range<u64>>,
    ) -> Result<(Manifest, ReadStream)> {
        one_command(self.read_command(name, range)).await
    }

    async fn read_command(
        &self,
        name: &str,
        range: Option<Range<u64>>,
    ) -> Result<(Manifest, ReadStream)> {
        let scope = self.file_scope(name)?;
        self.maybe_refresh().await;
        let order = self.order();
        let (manifest, held, _) = self.newest_held(&order, &scope, name, false).await?;
        let range = within(name, manifest.size, range)?;
        if manifest.chunks == 0 && manifest.size > 0 {
            return Err(Error::Protocol(format!(
                "{}: its manifest has {} bytes in no chunks",
                shown(name),
                manifest.size
            )));
        }
        let overlapping: Vec<u32> = (1..=manifest.chunks)
            .filter(|&c| {
                let (start, end) = chunk_range(manifest.size, manifest.chunks, c);
                start < range.end && end > range.start
            })
            .collect();
        let placement = Placement::of(&scope.owner, manifest.data_name());
        let chunks = overlapping
            .iter()
            .map(|&c| {
                let placed = order.holders(&placement, c, manifest.chunks);
                let others = held
                    .iter()
                    .filter(|(i, version, chunks)| {
                        *version == Some(manifest.version)
                            && chunks.contains(&c)
                            && !placed.contains(i)
                    })
                    .map(|&(i, _, _)| self.slot(i))
                    .collect();
                ChunkSource {
                    chunk: c,
                    placed: placed.into_iter().map(|i| self.slot(i)).collect(),
                    others,
                }
            })
            .collect::<VecDeque<_>>();
        let plan = Arc::new(Plan {
            login: Arc::clone(&self.login),
            scope,
            manifest: manifest.clone(),
            range,
            timeouts: timeouts_so_far(),
            gauge: Gauge::default(),
        });
        let stream = ReadStream {
            plan,
            runtime: tokio::runtime::Handle::current(),
            waiting: chunks,
            running: VecDeque::new(),
            ended: false,
        };
        Ok((manifest, stream))
    }
}

/// `range` checked against a file of `size` bytes (`None`: all of it).
fn within(name: &str, size: u64, range: Option<Range<u64>>) -> Result<Range<u64>> {
    let range = range.unwrap_or(0..size);
    if range.start > range.end || range.end > size {
        return Err(Error::Refused(format!(
            "{}: bytes {}..{} are not within the file ({size} bytes)",
            shown(name),
            range.start,
            range.end
        )));
    }
    Ok(range)
}

/// The bytes of a range of a file, in order, verified (see the module's
/// doc). `'static` and `Send`, so an HTTP response body can own it; dropping
/// it stops its fetches.
pub struct ReadStream {
    plan: Arc<Plan>,
    /// Where chunk fetches are spawned (the runtime `read` ran on).
    runtime: tokio::runtime::Handle,
    /// Chunks not fetched yet, in order.
    waiting: VecDeque<ChunkSource>,
    /// Chunks being fetched, in order: the first is being passed on.
    running: VecDeque<Running>,
    /// An error was yielded (or the range is done): nothing more comes.
    ended: bool,
}

impl ReadStream {
    /// The most bytes of file data this stream has held at once so far
    /// (at most [`MAX_BUFFERED`]); for tests and benchmarks.
    pub fn peak_buffered(&self) -> u64 {
        self.plan.gauge.peak.load(Ordering::Relaxed)
    }

    /// The byte range this stream yields.
    pub fn range(&self) -> Range<u64> {
        self.plan.range.clone()
    }

    /// Starts fetching chunks until [`AHEAD`] are under way.
    fn start_ahead(&mut self) {
        while self.running.len() < AHEAD {
            let Some(source) = self.waiting.pop_front() else {
                return;
            };
            let (tx, rx) = mpsc::channel(QUEUE);
            let plan = Arc::clone(&self.plan);
            let timeouts = plan.timeouts.clone();
            let task = self
                .runtime
                .spawn(command_knowing(timeouts, fetch(plan, source, tx)));
            self.running.push_back(Running { rx, task });
        }
    }

    /// Ends the stream: every fetch still running stops.
    fn stop(&mut self) {
        self.ended = true;
        self.waiting.clear();
        for running in self.running.drain(..) {
            running.task.abort();
        }
    }
}

impl Drop for ReadStream {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Stream for ReadStream {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            this.start_ahead();
            let Some(front) = this.running.front_mut() else {
                this.ended = true;
                return Poll::Ready(None);
            };
            match front.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(Step::Data(piece)))) => {
                    this.plan.gauge.sub(piece.len() as u64);
                    return Poll::Ready(Some(Ok(piece)));
                }
                Poll::Ready(Some(Ok(Step::End))) => {
                    this.running.pop_front();
                }
                Poll::Ready(Some(Err(e))) => {
                    this.stop();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    // The fetch ended without saying it finished: it
                    // panicked. Its chunk may be short, so this is an error.
                    this.stop();
                    return Poll::Ready(Some(Err(Error::Internal(
                        "a chunk's fetch stopped before its end".into(),
                    ))));
                }
            }
        }
    }
}

/// What a [`ReadStream`]'s fetches share.
struct Plan {
    login: Arc<Login>,
    scope: Scope,
    manifest: Manifest,
    range: Range<u64>,
    /// The servers that timed out while the stream was opened: each fetch
    /// starts knowing them (see [`one_command`]).
    timeouts: BTreeMap<String, String>,
    gauge: Gauge,
}

impl Plan {
    /// Chunk `chunk` (of `len` bytes) of the data the stream reads, as its
    /// checksum names it.
    fn chunk_id(&self, chunk: u32, len: u64) -> ChunkId<'_> {
        ChunkId {
            owner: &self.scope.owner,
            name: self.manifest.data_name(),
            version: self.manifest.data_version(),
            chunk,
            len,
        }
    }
}

/// Bytes of file data a stream holds (held back or queued), and the most
/// it has held.
#[derive(Default)]
struct Gauge {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    fn add(&self, n: u64) {
        let now = self.now.fetch_add(n, Ordering::Relaxed) + n;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn sub(&self, n: u64) {
        self.now.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Where one chunk may be fetched from: its placed holders (first to read
/// first), then servers that said they hold it.
struct ChunkSource {
    chunk: u32,
    placed: Vec<Arc<Slot>>,
    others: Vec<Arc<Slot>>,
}

/// A chunk being fetched: its queue of pieces and its task.
struct Running {
    rx: mpsc::Receiver<Result<Step>>,
    task: JoinHandle<()>,
}

/// What a chunk's fetch sends the stream.
enum Step {
    /// The next bytes of the range.
    Data(Bytes),
    /// The chunk's part of the range is complete and verified.
    End,
}

/// Fetches one chunk and sends its part of the range to `tx`, then `End`,
/// or an error.
async fn fetch(plan: Arc<Plan>, source: ChunkSource, tx: mpsc::Sender<Result<Step>>) {
    let last = match deliver(&plan, source, &tx).await {
        Ok(()) => Ok(Step::End),
        Err(Stop::Error(e)) => Err(e),
        Err(Stop::ReaderGone) => return,
    };
    let _ = tx.send(last).await;
}

/// Why a chunk's fetch ended early.
enum Stop {
    /// The stream ends with this error.
    Error(Error),
    /// The stream was dropped: nobody to tell.
    ReaderGone,
}

/// How one attempt at a chunk (from one holder) failed.
enum Failed {
    /// This holder failed: the next one may serve the chunk.
    Holder(Error),
    /// The chunk's fetch ends.
    Stop(Stop),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Self {
        Failed::Holder(e)
    }
}

/// The fetch of one chunk: from each holder in turn until one serves it
/// whole and verified.
async fn deliver(
    plan: &Plan,
    source: ChunkSource,
    tx: &mpsc::Sender<Result<Step>>,
) -> std::result::Result<(), Stop> {
    let manifest = &plan.manifest;
    let chunk = source.chunk;
    let (start, end) = chunk_range(manifest.size, manifest.chunks, chunk);
    // The range's part of this chunk, in the chunk's own offsets.
    let from = plan.range.start.max(start) - start;
    let to = plan.range.end.min(end) - start;
    let want = Want {
        chunk,
        len: end - start,
        from,
        to,
    };
    // The first byte of the chunk not yet passed on (all before it checked).
    let mut sent = from;
    // Holders known to be down (or hung) go last, so they cost no timeout;
    // the rest keep the placement's order.
    let mut holders = source.placed;
    holders.sort_by_key(|slot| !slot.up.load(Ordering::Relaxed));
    holders.extend(source.others);
    let ranged = Layout::of(&plan.chunk_id(chunk, want.len)).values() > 0;
    let mut failures = Vec::new();
    for slot in &holders {
        if ranged && sent == want.to {
            // All of it passed on, checked, before that holder failed.
            return Ok(());
        }
        let attempt = match ranged {
            true => attempt_range(plan, slot, &want, &mut sent, tx).await,
            false => attempt(plan, slot, &want).await,
        };
        match attempt {
            Ok((conn, held)) => {
                slot.note_failure(None);
                slot.release(conn);
                // Verified: what was held back goes out as it is.
                for piece in held.drain() {
                    if tx.send(Ok(Step::Data(piece))).await.is_err() {
                        return Err(Stop::ReaderGone);
                    }
                }
                return Ok(());
            }
            Err(Failed::Stop(stop)) => return Err(stop),
            Err(Failed::Holder(e)) => {
                // A holder that timed out or hung up mid-chunk is down: later
                // chunks ask its partner first.
                slot.note_failure(Some(&e));
                debug!(server = %slot.member.name, file = %manifest.name, chunk, error = %e, "chunk read failed");
                failures.push(e.to_string());
            }
        }
    }
    Err(Stop::Error(Error::ChunkUnavailable {
        name: plan.scope.shown(&manifest.name),
        chunk,
        reason: match failures.is_empty() {
            true => "no server holds it".into(),
            false => failures.join("; "),
        },
    }))
}

/// The part of a chunk a fetch wants: bytes `from..to` of its `len`.
struct Want {
    chunk: u32,
    len: u64,
    from: u64,
    to: u64,
}

/// One attempt at a chunk of one block (at most [`HOLD`] bytes) from the
/// server of `slot`: the whole chunk is read and verified, its part of the
/// range held back meanwhile. On success, the connection (to pool) and
/// what was held back.
async fn attempt<'p>(
    plan: &'p Plan,
    slot: &Slot,
    want: &Want,
) -> std::result::Result<(Conn, Held<'p>), Failed> {
    let manifest = &plan.manifest;
    let server = slot.member.name.as_str();
    let Want {
        chunk,
        len,
        from,
        to,
    } = *want;
    let mut conn = plan.login.open(slot).await?;
    let request = plan.scope.request(
        Request::GetChunk {
            name: manifest.data_name().to_string(),
            version: manifest.data_version(),
            chunk,
        },
        &[&manifest.name],
    );
    match conn.call(&request).await? {
        Response::Chunk { len: l } if l == len => {}
        other => return Err(unexpected(server, &other).into()),
    }
    let mut hasher = plan.chunk_id(chunk, len).hasher();
    let mut held = Held::new(&plan.gauge);
    let mut at = 0u64;
    loop {
        let Some(block) = next_block(&mut conn, server).await? else {
            break;
        };
        let n = block.len() as u64;
        if at + n > len {
            return Err(Error::Protocol(format!("{server} sent too much data")).into());
        }
        hasher.update(&block);
        let (a, b) = (at.max(from), (at + n).min(to));
        if a < b {
            held.push(block.slice((a - at) as usize..(b - at) as usize));
        }
        at += n;
    }
    if at != len {
        return Err(Error::Protocol(format!("{server} sent a short chunk")).into());
    }
    if Some(&checksum_of(&hasher)) != manifest.checksums.get(chunk as usize - 1) {
        return Err(Error::Corrupt {
            chunk,
            reason: format!("{server} sent bytes that do not match the checksum"),
        }
        .into());
    }
    Ok((conn, held))
}

/// One attempt at the part of a chunk of more than one block (see
/// `crate::blocks`) from the server of `slot`: `GetRange` from the first
/// byte the reader lacks, each block checked as it completes and only then
/// passed on, so a holder that fails midway costs nothing sent and the next
/// one goes on from there. On success, the connection (to pool) and
/// nothing held back.
async fn attempt_range<'p>(
    plan: &'p Plan,
    slot: &Slot,
    want: &Want,
    sent: &mut u64,
    tx: &mpsc::Sender<Result<Step>>,
) -> std::result::Result<(Conn, Held<'p>), Failed> {
    let manifest = &plan.manifest;
    let server = slot.member.name.as_str();
    let Want { chunk, len, to, .. } = *want;
    let from = *sent;
    let id = plan.chunk_id(chunk, len);
    let (first, span) = Layout::of(&id).span(from..to);
    let mut conn = plan.login.open(slot).await?;
    let request = plan.scope.request(
        Request::GetRange {
            name: manifest.data_name().to_string(),
            version: manifest.data_version(),
            chunk,
            offset: from,
            len: to - from,
        },
        &[&manifest.name],
    );
    let values = match conn.call(&request).await? {
        Response::Range { start, len, values }
            if start == span.start && len == span.end - span.start =>
        {
            values
        }
        other => return Err(unexpected(server, &other).into()),
    };
    let bad = |what: &str| Error::Corrupt {
        chunk,
        reason: format!("{server} sent {what} that do not match the checksum"),
    };
    let checksum = manifest
        .checksums
        .get(chunk as usize - 1)
        .ok_or_else(|| Error::Protocol(format!("the manifest has no chunk {chunk}")))?;
    blocks::check_values(&id, &values, checksum).map_err(|_| bad("block values"))?;
    let mut checker = BlockHasher::checking(&id, first, values);
    let mut held = Held::new(&plan.gauge);
    let mut at = span.start;
    while let Some(mut frame) = next_block(&mut conn, server).await? {
        if at + frame.len() as u64 > span.end {
            return Err(Error::Protocol(format!("{server} sent too much data")).into());
        }
        // Cut where blocks end, so each block goes out once it is checked.
        while !frame.is_empty() {
            let piece = frame.split_to(((checker.block_end() - at) as usize).min(frame.len()));
            let n = piece.len() as u64;
            checker.update(&piece).map_err(|_| bad("bytes"))?;
            let (a, b) = (at.max(from), (at + n).min(to));
            if a < b {
                held.push(piece.slice((a - at) as usize..(b - at) as usize));
            }
            at += n;
            if checker.at_block_end() {
                while let Some(out) = held.pop() {
                    *sent += out.len() as u64;
                    if tx.send(Ok(Step::Data(out))).await.is_err() {
                        return Err(Failed::Stop(Stop::ReaderGone));
                    }
                }
            }
        }
    }
    if at != span.end {
        return Err(Error::Protocol(format!("{server} sent a short range")).into());
    }
    Ok((conn, held))
}

/// Bytes of a chunk held back until it verifies, counted in the stream's
/// [`Gauge`] until they reach the reader (or are dropped with this).
struct Held<'a> {
    pieces: VecDeque<Bytes>,
    len: u64,
    gauge: &'a Gauge,
}

impl<'a> Held<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        Held {
            pieces: VecDeque::new(),
            len: 0,
            gauge,
        }
    }

    fn push(&mut self, piece: Bytes) {
        self.len += piece.len() as u64;
        self.gauge.add(piece.len() as u64);
        self.pieces.push_back(piece);
    }

    /// The oldest piece, on its way to the reader (still counted in the
    /// gauge until the stream yields it).
    fn pop(&mut self) -> Option<Bytes> {
        let piece = self.pieces.pop_front()?;
        self.len -= piece.len() as u64;
        Some(piece)
    }

    fn drain(mut self) -> std::collections::vec_deque::IntoIter<Bytes> {
        let pieces = std::mem::take(&mut self.pieces);
        self.len = 0;
        pieces.into_iter()
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.gauge.sub(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_must_lie_within_the_file() {
        assert_eq!(within("f", 10, None).unwrap(), 0..10);
        assert_eq!(within("f", 10, Some(3..7)).unwrap(), 3..7);
        assert_eq!(within("f", 10, Some(10..10)).unwrap(), 10..10);
        assert_eq!(within("f", 0, None).unwrap(), 0..0);
        for bad in [5..11, 11..12, Range { start: 7, end: 3 }] {
            let e = within("f", 10, Some(bad.clone())).unwrap_err();
            assert!(
                matches!(&e, Error::Refused(m) if m.contains("not within") && !m.contains('\n')),
                "{bad:?}: {e}"
            );
        }
    }
}
