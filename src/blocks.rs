//! Checked ranges of a chunk, without reading all of it.
//!
//! A chunk's checksum is BLAKE3 (derive-key mode) of its identity followed by
//! its bytes (see [`ChunkId::hasher`]). BLAKE3 is itself a tree over 1 KiB
//! pieces of its input, so the input can be cut into aligned [`BLOCK`]s
//! whose chaining values ("block values", 32 bytes each) merge, pairwise up
//! the same tree, into that very checksum. Whoever holds the block values
//! of a chunk checks them against the checksum in the manifest once, then
//! checks each block on its own: a read of 4 KiB in the middle of a 256 MiB
//! chunk fetches one block and 8 KiB of block values, not the whole chunk,
//! and is still checked end to end. Nothing about the checksum changes, so
//! chunks stored before block values existed verify as they always did.
//!
//! Blocks are cut in the hash *input*: block 0 is the identity and the
//! first `BLOCK - identity` bytes of data; block `j > 0` holds data bytes
//! `j * BLOCK - identity ..`. A chunk whose input fits in one block has no
//! block values: it is read whole.

use std::ops::Range;
use std::sync::LazyLock;

use blake3::hazmat::{
    left_subtree_len, merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};

use crate::error::{Error, Result};
use crate::protocol::{Checksum, ChunkId, CHUNK_CONTEXT};

/// The size of a block of hash input: a power of two, so every block is a
/// whole subtree of BLAKE3's tree.
pub const BLOCK: u64 = 1 << 20;

/// One block's chaining value.
pub type BlockValue = ChainingValue;

/// The derive-key mode's key for [`CHUNK_CONTEXT`], worked out once.
static CONTEXT: LazyLock<[u8; 32]> =
    LazyLock::new(|| blake3::hazmat::hash_derive_key_context(CHUNK_CONTEXT));

/// Where the blocks of one chunk fall in its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of identity before the data in the hash input.
    prefix: u64,
    /// Bytes of data.
    len: u64,
}

impl Layout {
    pub fn of(id: &ChunkId<'_>) -> Layout {
        Layout {
            prefix: id.prefix_len(),
            len: id.len,
        }
    }

    fn input(&self) -> u64 {
        self.prefix + self.len
    }

    /// How many block values the chunk has: 0 when its input is one block.
    pub fn values(&self) -> usize {
        if self.input() <= BLOCK {
            0
        } else {
            self.input().div_ceil(BLOCK) as usize
        }
    }

    /// The data bytes of block `j`.
    pub fn block(&self, j: u64) -> Range<u64> {
        let start = (j * BLOCK).saturating_sub(self.prefix).min(self.len);
        let end = ((j + 1) * BLOCK).saturating_sub(self.prefix).min(self.len);
        start..end
    }

    /// The block holding data byte `at` (the last block for `at == len`).
    fn block_of(&self, at: u64) -> u64 {
        ((at + self.prefix) / BLOCK).min(self.input().saturating_sub(1) / BLOCK)
    }

    /// The whole blocks covering data bytes `range`: the first block's
    /// number, and their data bytes. A chunk of one block is read whole.
    pub fn span(&self, range: Range<u64>) -> (u64, Range<u64>) {
        if self.values() == 0 {
            return (0, 0..self.len);
        }
        let first = self.block_of(range.start);
        let last = self.block_of(range.end.saturating_sub(1).max(range.start));
        (first, self.block(first).start..self.block(last).end)
    }
}

/// Hashes a chunk's data from the start of one of its blocks: either
/// collecting the block values (as a chunk arrives, from block 0), or
/// checking each block against known values as it completes.
pub struct BlockHasher {
    layout: Layout,
    /// The block being hashed, and the data bytes it still lacks.
    block: u64,
    left: u64,
    hasher: blake3::Hasher,
    values: Vec<BlockValue>,
    expected: Option<Vec<BlockValue>>,
}

impl BlockHasher {
    /// Collects the block values of the whole chunk `id` (with its `len`).
    pub fn new(id: &ChunkId<'_>) -> BlockHasher {
        Self::at(id, 0, None)
    }

    /// Checks data from block `first` on against `values`, which must be
    /// the chunk's (see [`check_values`]).
    pub fn checking(id: &ChunkId<'_>, first: u64, values: Vec<BlockValue>) -> BlockHasher {
        Self::at(id, first, Some(values))
    }

    fn at(id: &ChunkId<'_>, first: u64, expected: Option<Vec<BlockValue>>) -> BlockHasher {
        let layout = Layout::of(id);
        let hasher = if first == 0 {
            id.hasher()
        } else {
            block_hasher(first)
        };
        BlockHasher {
            layout,
            block: first,
            left: layout.block(first).end - layout.block(first).start,
            hasher,
            values: Vec::new(),
            expected,
        }
    }

    /// Hashes the next data bytes. Checking, a block that does not match
    /// is `Error::Corrupt`.
    pub fn update(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.left == 0 {
                return Err(corrupt("more bytes than the chunk holds"));
            }
            let n = (self.left as usize).min(data.len());
            self.hasher.update(&data[..n]);
            self.left -= n as u64;
            data = &data[n..];
            if self.left == 0 && self.layout.values() > 0 {
                self.end_block()?;
            }
        }
        Ok(())
    }

    /// Block `self.block` is complete: keep or check its value, start the next.
    fn end_block(&mut self) -> Result<()> {
        let value = self.hasher.finalize_non_root();
        match &self.expected {
            Some(expected) => {
                if expected.get(self.block as usize) != Some(&value) {
                    return Err(corrupt(&format!("block {} does not match", self.block)));
                }
            }
            None => self.values.push(value),
        }
        let next = self.block + 1;
        if (next as usize) < self.layout.values() {
            self.block = next;
            let range = self.layout.block(next);
            self.left = range.end - range.start;
            self.hasher = block_hasher(next);
        }
        Ok(())
    }

    /// The data offset where the block being hashed ends: a stream cut
    /// there has its last block complete (and checked).
    pub fn block_end(&self) -> u64 {
        self.layout.block(self.block).end
    }

    /// Whether every byte of the blocks begun has been hashed (and checked).
    pub fn at_block_end(&self) -> bool {
        let block = self.layout.block(self.block);
        self.left == 0 || self.left == block.end - block.start
    }

    /// Collecting, at the chunk's end: its checksum and block values.
    pub fn finish(self) -> Result<(Checksum, Vec<BlockValue>)> {
        if self.left != 0 {
            return Err(corrupt("fewer bytes than the chunk holds"));
        }
        if self.layout.values() == 0 {
            return Ok((Checksum(*self.hasher.finalize().as_bytes()), Vec::new()));
        }
        let root = root_of(&self.values, self.layout.input())?;
        Ok((root, self.values))
    }
}

/// A fresh hasher for block `j > 0` of a chunk.
fn block_hasher(j: u64) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_from_context_key(&CONTEXT);
    h.set_input_offset(j * BLOCK);
    h
}

fn corrupt(reason: &str) -> Error {
    Error::Corrupt {
        chunk: 0,
        reason: reason.to_string(),
    }
}

/// Checks that `values` are the block values of chunk `id` (with its len)
/// whose checksum is `checksum`.
pub fn check_values(id: &ChunkId<'_>, values: &[BlockValue], checksum: &Checksum) -> Result<()> {
    let layout = Layout::of(id);
    if values.len() != layout.values() {
        return Err(corrupt(&format!(
            "{} block values for a chunk of {}",
            values.len(),
            layout.values()
        )));
    }
    if layout.values() == 0 {
        return Ok(());
    }
    if root_of(values, layout.input())? != *checksum {
        return Err(corrupt("the block values do not match the checksum"));
    }
    Ok(())
}

/// The checksum that `values` (two or more, of an input of `input` bytes)
/// merge into, along BLAKE3's left-balanced tree.
fn root_of(values: &[BlockValue], input: u64) -> Result<Checksum> {
    if values.len() < 2 || (values.len() as u64) != input.div_ceil(BLOCK) {
        return Err(corrupt("block values do not fit the chunk"));
    }
    let mode = Mode::DeriveKeyMaterial(&CONTEXT);
    let (left, right) = split(values, input);
    let root = merge_subtrees_root(
        &node(mode, left.0, left.1),
        &node(mode, right.0, right.1),
        mode,
    );
    Ok(Checksum(*root.as_bytes()))
}

type Subtree<'a> = (&'a [BlockValue], u64);

/// The left and right subtrees of an input of `input` bytes (more than a block).
fn split(values: &[BlockValue], input: u64) -> (Subtree<'_>, Subtree<'_>) {
    let left = left_subtree_len(input);
    let n = (left / BLOCK) as usize;
    ((&values[..n], left), (&values[n..], input - left))
}

fn node(mode: Mode<'_>, values: &[BlockValue], input: u64) -> ChainingValue {
    if values.len() == 1 {
        return values[0];
    }
    let (left, right) = split(values, input);
    merge_subtrees_non_root(
        &node(mode, left.0, left.1),
        &node(mode, right.0, right.1),
        mode,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{checksum_of, Version};

    fn id(len: u64) -> ChunkId<'static> {
        ChunkId {
            owner: "alice",
            name: "docs/report.pdf",
            version: Version { gen: 7, writer: 9 },
            chunk: 2,
            len,
        }
    }

    fn data(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn whole(len: u64) -> Checksum {
        let mut h = id(len).hasher();
        h.update(&data(len));
        checksum_of(&h)
    }

    const LENS: [u64; 8] = [
        0,
        1000,
        BLOCK - 60,
        BLOCK,
        BLOCK + 1,
        3 * BLOCK + 12_345,
        4 * BLOCK,
        9 * BLOCK - 7,
    ];

    #[test]
    fn block_values_merge_into_the_chunk_checksum() {
        for len in LENS {
            let bytes = data(len);
            // Fed in uneven pieces, as blocks arrive from the network.
            let mut h = BlockHasher::new(&id(len));
            for piece in bytes.chunks(77_777) {
                h.update(piece).unwrap();
            }
            let (sum, values) = h.finish().unwrap();
            assert_eq!(sum, whole(len), "len {len}");
            assert_eq!(values.len(), Layout::of(&id(len)).values(), "len {len}");
            check_values(&id(len), &values, &sum).unwrap();
        }
    }

    #[test]
    fn any_span_checks_on_its_own_and_a_changed_byte_fails() {
        for len in LENS.into_iter().filter(|&l| l > BLOCK) {
            let bytes = data(len);
            let mut h = BlockHasher::new(&id(len));
            h.update(&bytes).unwrap();
            let (_, values) = h.finish().unwrap();
            let layout = Layout::of(&id(len));
            let ranges = [0..1, 5..BLOCK + 3, len / 2..len / 2 + 4096, len - 1..len];
            for range in ranges.into_iter().filter(|r| r.end <= len) {
                let (first, span) = layout.span(range.clone());
                assert!(span.start <= range.start && span.end >= range.end);
                let mut c = BlockHasher::checking(&id(len), first, values.clone());
                c.update(&bytes[span.start as usize..span.end as usize])
                    .unwrap();
                assert!(c.at_block_end());

                let mut bad = bytes[span.start as usize..span.end as usize].to_vec();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                let mut c = BlockHasher::checking(&id(len), first, values.clone());
                assert!(c.update(&bad).is_err(), "len {len} range {range:?}");
            }
        }
    }

    #[test]
    fn wrong_values_are_refused() {
        let len = 3 * BLOCK;
        let mut h = BlockHasher::new(&id(len));
        h.update(&data(len)).unwrap();
        let (sum, mut values) = h.finish().unwrap();
        assert!(check_values(&id(len), &values[1..], &sum).is_err());
        values[1][0] ^= 1;
        assert!(check_values(&id(len), &values, &sum).is_err());
        // Another chunk's identity: the same bytes do not verify.
        let other = ChunkId {
            chunk: 3,
            ..id(len)
        };
        let mut h = BlockHasher::new(&other);
        h.update(&data(len)).unwrap();
        let (_, theirs) = h.finish().unwrap();
        assert!(check_values(&id(len), &theirs, &sum).is_err());
    }
}
