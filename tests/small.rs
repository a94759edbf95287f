//! Small files (at most `SMALL_FILE` bytes) move in one round each way:
//! `PutSmall` gives each holder all its chunks of the file in one message
//! and one commit, under a version taken from the writer's clock alone, and
//! `Fetch` brings a file's chunks back with its manifest.

use bytes::Bytes;
use md5::{Digest, Md5};

use ringdfs::client::no_progress;
use ringdfs::placement::chunk_range;
use ringdfs::protocol::{Manifest, Request, Response, SmallPart, Version, SMALL_FILE};

use crate::util::{chunk_checksums, holders, random_file, raw_login, Cluster};

const N: u32 = 4;

/// Stores `data` as alice's `name` at `version` through the protocol, as a
/// writer does: each holder its chunks, then the manifest everywhere.
async fn store_by_hand(cluster: &Cluster, name: &str, version: Version, data: &[u8]) {
    let checksums = chunk_checksums("alice", name, version, N, data);
    let size = data.len() as u64;
    for server in 1..=N as usize {
        let parts = (1..=N)
            .filter(|&c| holders("alice", name, c, N).contains(&server))
            .map(|chunk| {
                let (start, end) = chunk_range(size, N, chunk);
                SmallPart {
                    chunk,
                    checksum: checksums[chunk as usize - 1],
                    data: Bytes::copy_from_slice(&data[start as usize..end as usize]),
                }
            })
            .collect();
        let put = Request::PutSmall {
            name: name.into(),
            version,
            chunks: N,
            size,
            parts,
        };
        let mut conn = raw_login(cluster, server, "alice").await;
        let reply = conn.call(&put).await.unwrap();
        assert!(matches!(reply, Response::Stored { .. }), "{reply:?}");
    }
    let commit = Request::Commit {
        manifest: Manifest {
            name: name.into(),
            version,
            size,
            chunks: N,
            checksums,
            stored_at: 0,
            digest: ringdfs::protocol::FileDigest::Md5(Md5::digest(data).into()),
            deleted: false,
            data: None,
            kept: None,
            meta: None,
        },
        missing: Vec::new(),
    };
    for server in 1..=N as usize {
        let mut conn = raw_login(cluster, server, "alice").await;
        assert!(matches!(conn.call(&commit).await.unwrap(), Response::Ok));
    }
}

/// The version of alice's `name` each server has.
async fn versions(cluster: &Cluster, name: &str) -> Vec<Option<Version>> {
    let mut out = Vec::new();
    for server in 1..=N as usize {
        let mut conn = raw_login(cluster, server, "alice").await;
        let stat = Request::Stat { name: name.into() };
        match conn.call(&stat).await.unwrap() {
            Response::File { manifest, .. } => out.push(manifest.map(|m| m.version)),
            other => panic!("{other:?}"),
        }
    }
    out
}

/// A small PUT asks nobody what is current first. A file last written by a
/// client whose clock was an hour ahead holds a version newer than this
/// writer's clock: the holders say so, and the PUT is stored again above
/// it, so the new bytes win as they would have after a `Stat`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_put_over_a_version_from_a_clock_an_hour_ahead_is_stored_above_it() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let now = Version::next(None);
    let ahead = Version {
        gen: now.gen + 3600 * 1_000_000_000,
        writer: 7,
    };
    store_by_hand(&cluster, "clock.txt", ahead, b"from a clock an hour ahead").await;
    assert_eq!(versions(&cluster, "clock.txt").await, vec![Some(ahead); 4]);

    let work = tempfile::tempdir().unwrap();
    let (path, new) = random_file(work.path(), "new", 5000);
    let receipt = client.put(&path, "clock.txt", &no_progress).await.unwrap();
    assert!(
        receipt.version > ahead,
        "{:?} <= {ahead:?}",
        receipt.version
    );
    assert_eq!((receipt.copies, receipt.wanted), (8, 8));
    assert_eq!(
        versions(&cluster, "clock.txt").await,
        vec![Some(receipt.version); 4]
    );
    let out = work.path().join("out");
    client.get("clock.txt", &out, &no_progress).await.unwrap();
    assert!(
        std::fs::read(&out).unwrap() == new,
        "GET returned old bytes"
    );
}

/// `Fetch` answers like `Stat`, and with the bytes of the chunks asked for
/// that the server holds, checked, for small files only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_brings_the_held_chunks_asked_for_and_only_of_small_files() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (small, data) = random_file(work.path(), "small", 10_000);
    client.put(&small, "s.bin", &no_progress).await.unwrap();
    let (large, _) = random_file(work.path(), "large", SMALL_FILE as usize + 1);
    client.put(&large, "l.bin", &no_progress).await.unwrap();
    let fetch = |name: &str, chunks: Vec<u32>| Request::Fetch {
        name: name.into(),
        chunks,
    };
    for server in 1..=N as usize {
        let mut conn = raw_login(&cluster, server, "alice").await;
        let Response::FileData {
            manifest,
            held,
            data: got,
        } = conn.call(&fetch("s.bin", vec![1, 2, 3, 4])).await.unwrap()
        else {
            panic!("not FileData")
        };
        assert_eq!(manifest.unwrap().size, 10_000);
        assert_eq!(held, crate::util::held("alice", "s.bin", server, N));
        let chunks: Vec<u32> = got.iter().map(|(c, _)| *c).collect();
        assert_eq!(chunks, held, "dfs{server} sent other chunks than it holds");
        for (chunk, bytes) in got {
            let (start, end) = chunk_range(10_000, N, chunk);
            assert!(
                bytes[..] == data[start as usize..end as usize],
                "chunk {chunk}"
            );
        }
        // Only the chunks asked for.
        let one = held[0];
        match conn.call(&fetch("s.bin", vec![one])).await.unwrap() {
            Response::FileData { data, .. } => {
                assert_eq!(data.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [one])
            }
            other => panic!("{other:?}"),
        }
        // A large file's chunks are streamed, never sent this way.
        match conn.call(&fetch("l.bin", vec![1, 2, 3, 4])).await.unwrap() {
            Response::FileData {
                manifest,
                held,
                data,
            } => {
                assert!(manifest.is_some() && !held.is_empty());
                assert!(data.is_empty(), "dfs{server} sent a large file's chunks");
            }
            other => panic!("{other:?}"),
        }
        match conn.call(&fetch("none.bin", vec![1])).await.unwrap() {
            Response::FileData { manifest, data, .. } => {
                assert!(manifest.is_none() && data.is_empty())
            }
            other => panic!("{other:?}"),
        }
    }
}

/// `PutSmall` refuses what `PutChunk` refuses: a file too large for it,
/// a chunk number outside the file, bytes that do not match their
/// checksum. Nothing is stored by a refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_small_refuses_large_files_bad_chunks_and_wrong_bytes() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let mut conn = raw_login(&cluster, 1, "alice").await;
    let version = Version::next(None);
    let data = Bytes::from_static(b"four");
    let sums = chunk_checksums("alice", "x.bin", version, 1, &data);
    let put = |size: u64, chunk: u32, checksum| Request::PutSmall {
        name: "x.bin".into(),
        version,
        chunks: 1,
        size,
        parts: vec![SmallPart {
            chunk,
            checksum,
            data: data.clone(),
        }],
    };
    let refusals = [
        (put(SMALL_FILE + 1, 1, sums[0]), "not small"),
        (put(4, 2, sums[0]), "chunk"),
        (
            put(4, 1, chunk_checksums("alice", "y", version, 1, &data)[0]),
            "checksum",
        ),
    ];
    for (request, why) in refusals {
        let err = conn.call(&request).await.unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    let usage = client.usage("").await.unwrap().report;
    assert_eq!((usage.bytes, usage.uploads), (0, 0), "{usage:?}");
}
