//! Small files (at most `SMALL_FILE` bytes) move in one round each way:
//! `PutSmall` gives each holder all its chunks of the file in one message
//! and one commit, under a version taken from the writer's clock alone, and
//! `Fetch` brings a file's chunks back with its manifest.

use bytes::Bytes;
use md5::{Digest, Md5};

use ringdfs::client::no_progress;
use ringdfs::placement::chunk_range;
use ringdfs::protocol::{Manifest, Request, Response, SmallFile, SmallPart, Version, SMALL_FILE};

use crate::util::{chunk_checksums, holders, random_file, raw_login, Cluster};

const N: u32 = 4;

/// Stores `data` as alice's `name` at `version` through the protocol, as a
/// writer does: each holder its chunks, then the manifest everywhere.
async fn store_by_hand(cluster: &Cluster, name: &str, version: Version, data: &[u8]) {
    let checksums = chunk_checksums("alice", name, version, N, data);
    let size = data.len() as u64;
    for server in 1..=N as usize {
        let file = small_file(name, version, data, server);
        let put = Request::PutSmall {
            name: file.name,
            version,
            chunks: N,
            size,
            parts: file.parts,
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

/// One small file of a `PutSmallMany` to `server`: the parts of `data`
/// that server holds, as alice's `name`.
fn small_file(name: &str, version: Version, data: &[u8], server: usize) -> SmallFile {
    let checksums = chunk_checksums("alice", name, version, N, data);
    let size = data.len() as u64;
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
    SmallFile {
        name: name.into(),
        version,
        chunks: N,
        size,
        parts,
    }
}

/// `PutSmallMany` stores every file it names in one commit or none (a bad
/// part, a name twice: refused, nothing stored); `CommitPuts` makes them
/// all current, and refuses a manifest that shares data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_small_many_stores_all_files_or_none_and_commit_puts_makes_them_current() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let version = Version::next(None);
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("many/{i}.txt"), vec![b'a' + i as u8; 3000 + i]))
        .collect();

    let mut conn = raw_login(&cluster, 1, "alice").await;
    let mut bad = small_file("many/bad.txt", version, b"bad bytes", 1);
    if let Some(part) = bad.parts.first_mut() {
        part.data = part.data.iter().map(|b| b ^ 1).collect();
    }
    let good: Vec<SmallFile> = files
        .iter()
        .map(|(name, data)| small_file(name, version, data, 1))
        .collect();
    let with_bad = Request::PutSmallMany {
        files: good.iter().cloned().chain([bad]).collect(),
    };
    let err = conn.call(&with_bad).await.unwrap_err().to_string();
    assert!(err.contains("checksum"), "{err}");
    let twice = Request::PutSmallMany {
        files: vec![good[0].clone(), good[0].clone()],
    };
    let err = conn.call(&twice).await.unwrap_err().to_string();
    assert!(err.contains("twice"), "{err}");
    let usage = client.usage("").await.unwrap().report;
    assert_eq!((usage.bytes, usage.uploads), (0, 0), "{usage:?}");

    let manifests: Vec<Manifest> = files
        .iter()
        .map(|(name, data)| Manifest {
            name: name.clone(),
            version,
            size: data.len() as u64,
            chunks: N,
            checksums: chunk_checksums("alice", name, version, N, data),
            stored_at: 0,
            digest: ringdfs::protocol::FileDigest::None,
            deleted: false,
            data: None,
            kept: None,
            meta: None,
        })
        .collect();
    for server in 1..=N as usize {
        let mut conn = raw_login(&cluster, server, "alice").await;
        let put = Request::PutSmallMany {
            files: files
                .iter()
                .map(|(name, data)| small_file(name, version, data, server))
                .collect(),
        };
        match conn.call(&put).await.unwrap() {
            Response::StoredMany { current } => assert_eq!(current, vec![None; 3]),
            other => panic!("{other:?}"),
        }
    }
    let mut sharing = manifests[0].clone();
    sharing.name = "many/copy.txt".into();
    sharing.data = Some(ringdfs::protocol::DataRef {
        name: manifests[0].name.clone(),
        version,
    });
    let refused = Request::CommitPuts {
        manifests: vec![sharing],
    };
    let err = conn.call(&refused).await.unwrap_err().to_string();
    assert!(err.contains("CommitMany"), "{err}");
    let commit = Request::CommitPuts { manifests };
    for server in 1..=N as usize {
        let mut conn = raw_login(&cluster, server, "alice").await;
        assert!(matches!(conn.call(&commit).await.unwrap(), Response::Ok));
    }
    let work = tempfile::tempdir().unwrap();
    for (name, data) in &files {
        let out = work.path().join("out");
        client.get(name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == *data, "{name}");
    }
}

/// `Client::put_small_files` stores a batch, all copies; with a server
/// down it stores nothing and says so (`put -r` then stores each file on
/// its own, degraded), and another owner's files go only where shared for
/// writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_small_files_is_whole_or_refused_and_put_r_falls_back_to_one_by_one() {
    let mut cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = (0..70)
        .map(|i| random_file(work.path(), &format!("f{i}"), 100 * i))
        .collect();
    let pairs: Vec<(std::path::PathBuf, String)> = files
        .iter()
        .enumerate()
        .map(|(i, (path, _))| (path.clone(), format!("batch/f{i}")))
        .collect();
    let receipts = alice
        .put_small_files(&pairs, Default::default())
        .await
        .unwrap();
    for (i, receipt) in receipts.iter().enumerate() {
        let r = receipt.as_ref().expect("stored");
        assert_eq!((r.size, r.copies, r.wanted), (100 * i as u64, 8, 8));
        let out = work.path().join("out");
        alice
            .get(&format!("batch/f{i}"), &out, &no_progress)
            .await
            .unwrap();
        assert!(std::fs::read(&out).unwrap() == files[i].1, "f{i}");
    }

    // Another owner's names: only through a share for writing.
    let bob = cluster.login("bob").await;
    let into_share = |pairs: &[(std::path::PathBuf, String)]| -> Vec<(std::path::PathBuf, String)> {
        pairs[..3]
            .iter()
            .map(|(p, r)| (p.clone(), format!("shared/alice/{r}")))
            .collect()
    };
    let err = bob
        .put_small_files(&into_share(&pairs), Default::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("share"), "{err}");
    alice
        .share("batch", "bob", Some(ringdfs::sharing::Access::Write))
        .await
        .unwrap();
    let receipts = bob
        .put_small_files(&into_share(&pairs), Default::default())
        .await
        .unwrap();
    assert!(receipts.iter().all(Option::is_some), "{receipts:?}");

    // A server down: the batch is refused whole, and nothing of it stays.
    cluster.stop(2).await;
    let renamed: Vec<(std::path::PathBuf, String)> = pairs
        .iter()
        .map(|(p, r)| (p.clone(), r.replace("batch/", "down/")))
        .collect();
    assert!(alice
        .put_small_files(&renamed, Default::default())
        .await
        .is_err());
    let usage = alice.usage("").await.unwrap().report;
    // Bob's three replaced three of the 70; nothing of down/ is there.
    assert_eq!((usage.files, usage.uploads), (70, 0), "{usage:?}");
}
