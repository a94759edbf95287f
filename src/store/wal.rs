//! The write-ahead log: what lets the hot changes (small chunks received,
//! manifests committed) be durable with one small append and one sync,
//! instead of a synced database commit each.
//!
//! ```text
//! <data_dir>/wal.log    records, one after another:
//!                       [len u32 LE][seq u64 LE][blake3(seq ‖ payload), 16 bytes][payload]
//! ```
//!
//! A batch of logged changes is appended and synced first, then committed to
//! the database without a sync (`Durability::None`), so whatever a reader can
//! see is already in the log. Every second or so (and when the log grows
//! large, when a change that is not logged comes, and when the store closes)
//! the writer checkpoints: the volumes are synced, a durable commit records
//! the last sequence number applied (`meta` `log_seq`), and the log is
//! emptied. On start the records past that number are applied again, in
//! order, before anything is served. A record cut short or damaged (the
//! crash came while it was being written, before its sync, so nobody heard
//! "done") ends the log there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::blocks::BlockValue;
use crate::codec;
use crate::error::{Error, Result};
use crate::protocol::{Checksum, Manifest};

use super::chunk::ChunkSpec;

pub(super) const LOG_FILE: &str = "wal.log";
/// len + seq + hash.
const HEADER: usize = 4 + 8 + 16;

/// A change the log can carry: replayed through the same code that made it.
#[derive(Serialize, Deserialize)]
pub(super) enum Change {
    /// Small chunks received, with their bytes (`Store::record_chunks`).
    Chunks(Vec<LoggedChunk>),
    /// Manifests committed (`Store::commit`, `Store::commit_many`).
    Commits(Vec<(String, Manifest)>),
}

#[derive(Serialize, Deserialize)]
pub(super) struct LoggedChunk {
    pub spec: ChunkSpec,
    pub checksum: Checksum,
    pub values: Vec<BlockValue>,
    pub data: Vec<u8>,
}

/// The log file, opened for appending by the store's writer.
pub(super) struct Log {
    file: File,
    len: u64,
    /// The sequence number of the last record appended (or applied).
    last: u64,
}

fn hash(seq: u64, payload: &[u8]) -> [u8; 16] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// Splits `bytes` into its whole, intact records, in order; stops at the first
/// that is cut short, damaged, or not newer than the one before it.
fn parse(bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out: Vec<(u64, &[u8])> = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= HEADER {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let seq = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().expect("8 bytes"));
        let start = at + HEADER;
        let Some(payload) = bytes.get(start..start + len) else {
            break;
        };
        if hash(seq, payload) != bytes[at + 12..start] || out.last().is_some_and(|&(s, _)| s >= seq)
        {
            break;
        }
        out.push((seq, payload));
        at = start + len;
    }
    out
}

impl Log {
    /// Opens (creating) the log under `root`; returns it with the changes
    /// recorded after `checkpoint`, to apply again.
    pub(super) fn open(root: &Path, checkpoint: u64) -> Result<(Log, Vec<Change>)> {
        let path = root.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::storage(format!("opening {}", path.display()), e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::storage(format!("reading {}", path.display()), e))?;
        let records = parse(&bytes);
        let mut last = checkpoint;
        let mut changes = Vec::new();
        for (seq, payload) in records {
            if seq <= checkpoint {
                continue;
            }
            changes.push(codec::decode(payload)?);
            last = seq;
        }
        Ok((
            Log {
                file,
                len: bytes.len() as u64,
                last,
            },
            changes,
        ))
    }

    /// Whether a store's log holds anything (a server stopped without its
    /// last checkpoint: killed, say).
    pub(super) fn pending(root: &Path) -> bool {
        std::fs::metadata(root.join(LOG_FILE)).is_ok_and(|m| m.len() > 0)
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn last(&self) -> u64 {
        self.last
    }

    /// Appends one record per encoded change and syncs them: durable when
    /// this returns. Returns the length before, for [`Log::undo`].
    pub(super) fn append<'a>(&mut self, payloads: impl Iterator<Item = &'a [u8]>) -> Result<u64> {
        let before = self.len;
        let mut buf = Vec::new();
        let mut seq = self.last;
        for payload in payloads {
            seq += 1;
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&hash(seq, payload));
            buf.extend_from_slice(payload);
        }
        let written = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // What did reach the file must not be replayed.
            let _ = self.file.set_len(before);
            return Err(Error::storage("appending to the write-ahead log", e));
        }
        self.len += buf.len() as u64;
        self.last = seq;
        Ok(before)
    }

    /// Takes back the records appended since the log was `len` long (their
    /// changes did not commit), durably, so they are never applied.
    pub(super) fn undo(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::storage("cutting back the write-ahead log", e))?;
        self.len = len;
        Ok(())
    }

    /// Empties the log once a durable commit holds everything in it (and
    /// `log_seq` says so: records left by a truncation a crash undid are
    /// skipped by their numbers).
    pub(super) fn reset(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .map_err(|e| Error::storage("emptying the write-ahead log", e))?;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&hash(seq, payload));
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn records_parse_in_order_and_the_log_ends_at_the_first_bad_one() {
        let mut log = [record(1, b"one"), record(2, b""), record(3, b"three")].concat();
        let whole = parse(&log);
        assert_eq!(
            whole,
            vec![(1, &b"one"[..]), (2, &b""[..]), (3, &b"three"[..])]
        );
        // Cut anywhere inside the last record: the first two stand.
        for cut in 1..record(3, b"three").len() {
            assert_eq!(parse(&log[..log.len() - cut]).len(), 2, "cut {cut}");
        }
        // A flipped byte in the second: only the first.
        let second = record(1, b"one").len() + HEADER - 1;
        log[second] ^= 1;
        assert_eq!(parse(&log), vec![(1, &b"one"[..])]);
        // A number not above the one before (an old record after a
        // truncation that did not last): the log ends there.
        let old = [record(5, b"new"), record(2, b"old")].concat();
        assert_eq!(parse(&old), vec![(5, &b"new"[..])]);
        assert!(parse(&[0u8; HEADER - 1]).is_empty());
        // A length past the end is a cut record, not a huge allocation.
        let mut huge = record(1, b"x");
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&huge).is_empty());
    }

    #[test]
    fn appended_records_come_back_past_the_checkpoint_only() {
        let dir = tempfile::tempdir().unwrap();
        let change = |name: &str| {
            codec::encode(&Change::Commits(vec![(
                "alice".into(),
                crate::store::tests::tombstone(name, crate::store::tests::v(1)),
            )]))
            .unwrap()
        };
        let (mut log, replay) = Log::open(dir.path(), 0).unwrap();
        assert!(replay.is_empty() && !Log::pending(dir.path()));
        let (a, b, c) = (change("a"), change("b"), change("c"));
        log.append([a.as_slice(), b.as_slice()].into_iter())
            .unwrap();
        let before = log.append(std::iter::once(c.as_slice())).unwrap();
        assert_eq!(log.last(), 3);
        drop(log);
        let names = |changes: Vec<Change>| -> Vec<String> {
            changes
                .into_iter()
                .flat_map(|c| match c {
                    Change::Commits(m) => m.into_iter().map(|(_, m)| m.name).collect(),
                    Change::Chunks(_) => vec!["chunks".to_string()],
                })
                .collect()
        };
        let (mut log, replay) = Log::open(dir.path(), 1).unwrap();
        assert_eq!(names(replay), ["b", "c"]);
        assert_eq!(log.last(), 3);
        // Undone: c is never applied; numbering goes on past it.
        log.undo(before).unwrap();
        drop(log);
        let (mut log, replay) = Log::open(dir.path(), 0).unwrap();
        assert_eq!(names(replay), ["a", "b"]);
        log.reset().unwrap();
        assert!(!Log::pending(dir.path()));
        log.append(std::iter::once(c.as_slice())).unwrap();
        drop(log);
        let (_, replay) = Log::open(dir.path(), 2).unwrap();
        assert_eq!(names(replay), ["c"]);
    }
}
