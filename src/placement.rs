//! Where a file's chunks live (SPEC §5), and how a file is cut into chunks.
//!
//! Pure functions, no I/O. Chunks and ring positions are 1-based here, as in the
//! SPEC's table, so the code reads like the table:
//!
//! * `h` is the MD5 of the file's key, `owner/name`, read as a big-endian
//!   128-bit number, and `r = h mod n`.
//! * The server at ring position `i` (1..=n) stores chunks
//!   `((i - 1 - r) mod n) + 1` and `((i - r) mod n) + 1`.
//!
//! Consequently chunk `c` is held by positions `c + r` (as its first chunk) and
//! `c + r - 1` (as its second), mod n: two neighbours on the ring. GET reads
//! chunk `c` from its *first* holder, which spreads a file's chunks evenly: every
//! server sends exactly one chunk.
//!
//! # A file whose chunk count is not the ring's size
//!
//! A file keeps the chunk count `c` it was written with (its manifest's
//! `chunks`, the ring's `n` then). When the ring has grown or shrunk, chunk
//! `k` of it lives where [`Placement::holders`] says over the *current* ring:
//! positions `((k + r - 1) mod n) + 1` and `((k + r - 2) mod n) + 1` with
//! `r = h mod n`. The formula does not involve `c`, so when `c == n` it is
//! exactly SPEC §5's table, and when `c != n` chunks only move, never change.
//! Any `n >= 2` gives every chunk two distinct, neighbouring holders.

use md5::{Digest, Md5};

/// The placement of one file on a ring of `n` servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// `h mod n`.
    pub r: u32,
    /// Servers in the ring, and so chunks in the file.
    pub n: u32,
}

impl Placement {
    /// The placement of `owner`'s file `name` on a ring of `n` servers.
    pub fn of(owner: &str, name: &str, n: u32) -> Placement {
        assert!(n > 0, "a ring has at least one server");
        let r = (key_hash(owner, name) % u128::from(n)) as u32;
        Placement { r, n }
    }

    /// The two chunks the server at ring position `pos` (1-based) stores.
    pub fn chunks_of(&self, pos: u32) -> (u32, u32) {
        let (n, r) = (i64::from(self.n), i64::from(self.r));
        let i = i64::from(pos);
        let first = (i - 1 - r).rem_euclid(n) + 1;
        let second = (i - r).rem_euclid(n) + 1;
        (first as u32, second as u32)
    }

    /// The chunks (1-based, ascending) of a `chunks`-chunk file that the
    /// server at ring position `pos` holds: the generalisation of
    /// [`Placement::chunks_of`] to files written on a ring of another size.
    pub fn chunks_held(&self, pos: u32, chunks: u32) -> Vec<u32> {
        (1..=chunks)
            .filter(|&c| self.holders(c).contains(&pos))
            .collect()
    }

    /// The ring positions (1-based) holding chunk `chunk` (1-based): the one
    /// that reads should try first, then the other. With `n == 1` both are 1.
    pub fn holders(&self, chunk: u32) -> [u32; 2] {
        let (n, r) = (i64::from(self.n), i64::from(self.r));
        let c = i64::from(chunk);
        // Solve ((i - 1 - r) mod n) + 1 == c for i, and ((i - r) mod n) + 1 == c.
        let primary = (c + r - 1).rem_euclid(n) + 1;
        let secondary = (c + r - 2).rem_euclid(n) + 1;
        [primary as u32, secondary as u32]
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// SPEC §5's table for n = 4: row r, column dfs1..dfs4.
    const TABLE: [[(u32, u32); 4]; 4] = [
        [(1, 2), (2, 3), (3, 4), (4, 1)],
        [(4, 1), (1, 2), (2, 3), (3, 4)],
        [(3, 4), (4, 1), (1, 2), (2, 3)],
        [(2, 3), (3, 4), (4, 1), (1, 2)],
    ];

    #[test]
    fn all_sixteen_cells_of_the_spec_table() {
        for (r, row) in TABLE.iter().enumerate() {
            let p = Placement { r: r as u32, n: 4 };
            for (col, &cell) in row.iter().enumerate() {
                assert_eq!(p.chunks_of(col as u32 + 1), cell, "r={r} dfs{}", col + 1);
            }
        }
    }

    #[test]
    fn md5_vectors_read_big_endian() {
        // RFC 1321 test vectors; our key is `owner/name`.
        assert_eq!(
            u128::from_be_bytes(Md5::digest(b"").into()),
            0xd41d8cd98f00b204e9800998ecf8427e
        );
        assert_eq!(
            u128::from_be_bytes(Md5::digest(b"abc").into()),
            0x900150983cd24fb0d6963f7d28e17f72
        );
        // md5("alice/report.pdf"), checked with `printf alice/report.pdf | md5sum`.
        assert_eq!(
            key_hash("alice", "report.pdf"),
            0x4fae873e0832859a74bdea9958a02c54
        );
        assert_eq!(Placement::of("alice", "report.pdf", 4).r, 0);
    }

    #[test]
    fn placement_uses_h_mod_n() {
        let h = key_hash("alice", "a.txt");
        assert_eq!(Placement::of("alice", "a.txt", 4).r, (h % 4) as u32);
        assert_eq!(Placement::of("alice", "a.txt", 7).r, (h % 7) as u32);
    }

    #[test]
    fn chunk_ranges_for_small_files() {
        let ranges = |size| (1..=4).map(|c| chunk_range(size, 4, c)).collect::<Vec<_>>();
        assert_eq!(ranges(0), [(0, 0); 4]);
        assert_eq!(ranges(1), [(0, 1), (1, 1), (1, 1), (1, 1)]);
        assert_eq!(ranges(3), [(0, 1), (1, 2), (2, 3), (3, 3)]);
        assert_eq!(ranges(5), [(0, 2), (2, 3), (3, 4), (4, 5)]);
    }

    proptest! {
        #[test]
        fn holders_and_chunks_of_agree(n in 1u32..40, h in any::<u128>()) {
            let p = Placement { r: (h % u128::from(n)) as u32, n };
            for chunk in 1..=n {
                let [a, b] = p.holders(chunk);
                let (a1, _) = p.chunks_of(a);
                let (_, b2) = p.chunks_of(b);
                prop_assert_eq!(a1, chunk);
                prop_assert_eq!(b2, chunk);
                // Two neighbours (or the same server when n == 1).
                prop_assert_eq!(a, b % n + 1);
            }
        }

        #[test]
        fn chunks_held_agrees_with_the_table_and_holders(n in 1u32..12, c in 1u32..12, h in any::<u128>()) {
            let p = Placement { r: (h % u128::from(n)) as u32, n };
            if c == n {
                for pos in 1..=n {
                    let (a, b) = p.chunks_of(pos);
                    let mut want = vec![a, b];
                    want.sort_unstable();
                    want.dedup();
                    prop_assert_eq!(p.chunks_held(pos, c), want);
                }
            }
            // Every chunk is held by exactly its two holders (one when n == 1).
            for chunk in 1..=c {
                let holders: Vec<u32> = (1..=n).filter(|&pos| p.chunks_held(pos, c).contains(&chunk)).collect();
                prop_assert_eq!(holders.len(), n.min(2) as usize);
            }
        }

        #[test]
        fn every_server_primary_for_exactly_one_chunk(n in 1u32..40, r in 0u32..40) {
            let p = Placement { r: r % n, n };
            let mut primaries: Vec<u32> = (1..=n).map(|c| p.holders(c)[0]).collect();
            primaries.sort_unstable();
            prop_assert_eq!(primaries, (1..=n).collect::<Vec<_>>());
        }

        #[test]
        fn chunk_ranges_tile_the_file(size in 0u64..1 << 40, n in 1u32..64) {
            let mut next = 0;
            for c in 1..=n {
                let (start, end) = chunk_range(size, n, c);
                prop_assert_eq!(start, next);
                prop_assert!(end - start <= size / u64::from(n) + 1);
                next = end;
            }
            prop_assert_eq!(next, size);
        }
    }
}
