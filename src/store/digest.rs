//! Digests of key ranges, for anti-entropy: pure functions.
//!
//! Every file (owner, name) falls in one of 65 536 *buckets* by the first two
//! bytes of BLAKE3(owner, name); 256 buckets make a *group* (the first byte),
//! and the groups make the *root*. A bucket's digest is the XOR of the
//! digests of the live files in it, a file's digest being 16 bytes of
//! BLAKE3(owner, name, version): XOR lets a commit update a bucket, its group
//! and the root in place (take the old version out, put the new one in), so
//! nothing is ever recomputed by a scan.
//!
//! Two servers with the same live files at the same versions have the same
//! root. An idle heal round compares only roots (16 bytes per peer, at 1 000
//! files as at 1 000 000); when they differ, it compares the 256 groups, then
//! the 256 buckets of each differing group, then the entries of each
//! differing bucket (about 15 at a million files).
//!
//! Tombstones are not in the digests. A server that has a live older version
//! differs from one holding the tombstone, so the tombstone still spreads; but
//! a server that never had the file, or has dropped its tombstone, does not
//! differ from one that still keeps it, so tombstones can be dropped one
//! server at a time without the rounds handing them back (see `heal`).

use crate::protocol::Version;

/// A 16-byte digest: a file's, or the XOR of many.
pub type Digest = [u8; 16];

/// Buckets per group, and groups.
pub const FANOUT: usize = 256;

/// The bucket of `owner`'s file `name` (0..65 536).
pub fn bucket_of(owner: &str, name: &str) -> u16 {
    let hash = key_hash(owner, name);
    u16::from_be_bytes([hash[0], hash[1]])
}

/// The group of a bucket.
pub fn group_of(bucket: u16) -> u8 {
    (bucket >> 8) as u8
}

fn key_hash(owner: &str, name: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("ringdfs 2026-11 sync bucket v1");
    h.update(&(owner.len() as u64).to_le_bytes());
    h.update(owner.as_bytes());
    h.update(name.as_bytes());
    *h.finalize().as_bytes()
}

/// The digest of one live file at `version`.
pub fn entry_digest(owner: &str, name: &str, version: Version) -> Digest {
    let mut h = blake3::Hasher::new_derive_key("ringdfs 2026-11 sync entry v1");
    h.update(&(owner.len() as u64).to_le_bytes());
    h.update(owner.as_bytes());
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.update(&version.gen.to_le_bytes());
    h.update(&version.writer.to_le_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

/// `a ^= b`.
pub fn xor_into(a: &mut Digest, b: &Digest) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// Indices where two digest lists differ (a missing one counts as zero).
pub fn differing(mine: &[Digest], theirs: &[Digest]) -> Vec<usize> {
    let zero = [0u8; 16];
    (0..mine.len().max(theirs.len()))
        .filter(|&i| mine.get(i).unwrap_or(&zero) != theirs.get(i).unwrap_or(&zero))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(gen: u64) -> Version {
        Version { gen, writer: 1 }
    }

    #[test]
    fn xor_of_the_same_files_in_any_order_is_the_same() {
        let files = [
            ("alice", "a", v(1)),
            ("alice", "b", v(2)),
            ("bob", "a", v(3)),
        ];
        let mut forward = [0u8; 16];
        for (o, n, ver) in files {
            xor_into(&mut forward, &entry_digest(o, n, ver));
        }
        let mut backward = [0u8; 16];
        for (o, n, ver) in files.iter().rev() {
            xor_into(&mut backward, &entry_digest(o, n, *ver));
        }
        assert_eq!(forward, backward);
        // Replacing a version in place equals building with the new one.
        xor_into(&mut forward, &entry_digest("alice", "b", v(2)));
        xor_into(&mut forward, &entry_digest("alice", "b", v(9)));
        let mut rebuilt = [0u8; 16];
        for (o, n, ver) in [
            ("alice", "a", v(1)),
            ("alice", "b", v(9)),
            ("bob", "a", v(3)),
        ] {
            xor_into(&mut rebuilt, &entry_digest(o, n, ver));
        }
        assert_eq!(forward, rebuilt);
        assert_ne!(forward, [0; 16]);
    }

    #[test]
    fn owner_and_name_boundaries_matter() {
        assert_ne!(entry_digest("ab", "c", v(1)), entry_digest("a", "bc", v(1)));
        assert_ne!(bucket_of("ab", "c"), bucket_of("a", "bc"));
    }

    #[test]
    fn differing_finds_each_index() {
        let a = vec![[0u8; 16], [1; 16], [2; 16]];
        let b = vec![[0u8; 16], [9; 16], [2; 16], [4; 16]];
        assert_eq!(differing(&a, &b), vec![1, 3]);
        assert!(differing(&a, &a).is_empty());
    }
}
