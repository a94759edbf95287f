//! Where a file's chunks live (SPEC §5), and how a file is cut into chunks.
//!
//! Pure functions, no I/O. Chunks and ring positions are 1-based here, as in
//! the SPEC's table. Consistent hashing, as Chord means it:
//!
//! * A file's *key* is the MD5 of `owner/name`, read as a big-endian number
//!   and scaled to the ring's 160 bits (`md5 · 2^32`).
//! * Chunk `c` of a file cut into `n` chunks has the point
//!   `key + (c-1)/n` of the way round the ring.
//! * It is stored on that point's successor (the first member whose id is at
//!   or after it) and the next `k-1` members clockwise: `k` distinct servers
//!   (all of them when the ring has fewer than `k`). The first is the one a
//!   GET reads; the others are tried in order when it fails.
//!
//! The ring is given as the members' ids in ascending order (ring order):
//! position `i` is `ids[i-1]`. Only the points in a member's arc change
//! holders when it joins or leaves, so a join moves about `k/(N+1)` of the
//! copies and nothing else.
//!
//! With four members whose ids split the ring evenly (the shipped
//! `1, 5, 9, d`), this is exactly SPEC §5's table: the row is the quarter of
//! the ring the key falls in.

use md5::{Digest, Md5};

use crate::ring::Id;

/// Copies of every chunk unless the cluster is configured otherwise.
pub const DEFAULT_COPIES: u32 = 2;

/// The placement of one file: its key on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub key: Id,
}

impl Placement {
    /// The placement of `owner`'s file `name`.
    pub fn of(owner: &str, name: &str) -> Placement {
        let mut key = [0u8; 20];
        key[..16].copy_from_slice(&key_hash(owner, name).to_be_bytes());
        Placement { key: Id(key) }
    }

    /// The point of chunk `chunk` (1-based) of a `chunks`-chunk file:
    /// `key + floor((chunk-1) · 2^160 / chunks)`.
    pub fn point(&self, chunk: u32, chunks: u32) -> Id {
        assert!((1..=chunks).contains(&chunk), "chunk {chunk} of {chunks}");
        self.key.wrapping_add(fraction(chunk - 1, chunks))
    }

    /// The ring positions (1-based into `ring`, the members' ids ascending)
    /// holding chunk `chunk` of a `chunks`-chunk file with `k` copies: the
    /// point's successor first, then the next members clockwise;
    /// `min(k, ring.len())` of them, all distinct. Empty on an empty ring.
    pub fn holders(&self, ring: &[Id], chunk: u32, chunks: u32, k: u32) -> Vec<u32> {
        if ring.is_empty() {
            return Vec::new();
        }
        let n = ring.len();
        let point = self.point(chunk, chunks);
        let first = ring.partition_point(|id| *id < point) % n;
        (0..(k as usize).min(n))
            .map(|step| ((first + step) % n) as u32 + 1)
            .collect()
    }

    /// The chunks (1-based, ascending) of a `chunks`-chunk file that the
    /// member at position `pos` holds.
    pub fn chunks_held(&self, ring: &[Id], pos: u32, chunks: u32, k: u32) -> Vec<u32> {
        (1..=chunks)
            .filter(|&c| self.holders(ring, c, chunks, k).contains(&pos))
            .collect()
    }
}

/// The ids of `n` evenly spaced members ([`Id::evenly_spaced`]), ascending:
/// the ring that tests and the benchmark start, with known positions.
pub fn even_ring(n: u32) -> Vec<Id> {
    (0..n).map(|i| Id::evenly_spaced(i, n)).collect()
}

/// `floor(i · 2^160 / n)` for `i < n`: long division, a byte at a time.
fn fraction(i: u32, n: u32) -> Id {
    assert!(i < n, "{i}/{n}");
    let (n, mut rest) = (u64::from(n), u64::from(i));
    let mut out = [0u8; 20];
    for byte in &mut out {
        rest <<= 8;
        *byte = (rest / n) as u8;
        rest %= n;
    }
    Id(out)
}

/// MD5 of `owner/name`, as a big-endian number. User names cannot hold `/`,
/// so the key is unambiguous.
pub fn key_hash(owner: &str, name: &str) -> u128 {
    let mut md5 = Md5::new();
    md5.update(owner.as_bytes());
    md5.update(b"/");
    md5.update(name.as_bytes());
    u128::from_be_bytes(md5.finalize().into())
}

/// The byte range `[start, end)` of chunk `chunk` (1-based) when a file of
/// `size` bytes is cut into `n` chunks. Sizes differ by at most one byte: the
/// first `size % n` chunks get the extra byte. A chunk may be empty.
pub fn chunk_range(size: u64, n: u32, chunk: u32) -> (u64, u64) {
    assert!((1..=n).contains(&chunk), "chunk {chunk} of {n}");
    let n = u64::from(n);
    let c = u64::from(chunk - 1);
    let (base, extra) = (size / n, size % n);
    let start = c * base + c.min(extra);
    let len = base + u64::from(c < extra);
    (start, start + len)
}

/// The midpoint of the largest gap between `ids` (any order): where a server
/// joining without an id goes, so servers started without ids still split
/// the ring evenly. On an empty ring, zero.
pub fn midpoint_of_largest_gap(ids: &[Id]) -> Id {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let Some(&last) = sorted.last() else {
        return Id::ZERO;
    };
    // Each id with the gap that ends at it (from its predecessor); a single
    // id's gap is the whole ring, which `distance` gives as zero.
    let mut best: Option<(Id, Id)> = None;
    let mut prev = last;
    for &id in &sorted {
        let gap = prev.distance(id);
        let whole = gap == Id::ZERO;
        let better = match best {
            None => true,
            Some((_, b)) => whole || (b != Id::ZERO && gap > b),
        };
        if better {
            best = Some((prev, gap));
        }
        prev = id;
    }
    let (from, gap) = best.expect("at least one id");
    from.wrapping_add(half(gap))
}

/// `x / 2`, with zero standing for the whole ring (2^160 / 2).
fn half(x: Id) -> Id {
    if x == Id::ZERO {
        return Id::pow2(159);
    }
    let mut out = [0u8; 20];
    let mut carry = 0u8;
    for (o, b) in out.iter_mut().zip(x.0) {
        *o = (b >> 1) | (carry << 7);
        carry = b & 1;
    }
    Id(out)
}

/// The share of the ring (0..=1) each member owns, in ring order: the arc
/// from its predecessor's id to its own, over the whole ring.
pub fn shares(ring: &[Id]) -> Vec<f64> {
    let as_f64 = |id: Id| {
        id.0.iter()
            .fold(0.0f64, |acc, &b| acc * 256.0 + f64::from(b))
            / 2f64.powi(160)
    };
    match ring.len() {
        0 => Vec::new(),
        1 => vec![1.0],
        n => (0..n)
            .map(|i| as_f64(ring[(i + n - 1) % n].distance(ring[i])))
            .collect(),
    }
}

#[cfg(test)]
mod tests;
