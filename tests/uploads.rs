//! Uploads never committed (issue 12, item 3): a PUT cancelled, or whose
//! client died, or a `PutChunk` never followed by `Commit`, leaves its chunks
//! on the servers only until `[store] upload_grace_secs` has passed without
//! another of them arriving; until then STATUS counts them.

use ringdfs::client::{no_progress, Client};
use ringdfs::placement::chunk_range;
use ringdfs::protocol::{checksum_of, ChunkId, Request, Response, Version};

use crate::util::{chunk_files, random_file, raw_login, tree, wait_until, Cluster};

/// The uploads dfs1 reports as pending.
async fn pending_on_dfs1(client: &Client) -> u64 {
    let reports = client.status().await;
    let dfs1 = reports
        .iter()
        .find(|r| r.member.name == "dfs1")
        .expect("dfs1 in the ring");
    dfs1.state.as_ref().expect("dfs1 answers").uploads_pending
}

/// Chunk files (not volumes, not the database) under a data folder's `users/`.
fn chunk_files_on_disk(cluster: &Cluster) -> usize {
    tree(&cluster.data_dir(1).join("users")).len()
}

/// Sends chunk 1 of a 4-chunk file of `size` bytes of `name` to dfs1, as a
/// client that then dies before committing would.
async fn upload_chunk_one(cluster: &Cluster, name: &str, size: u64) {
    let mut conn = raw_login(cluster, 1, "alice").await;
    let version = Version::next(None);
    let (start, end) = chunk_range(size, 4, 1);
    let data = vec![0x5a; (end - start) as usize];
    let id = ChunkId {
        owner: "alice",
        name,
        version,
        chunk: 1,
        len: end - start,
    };
    let mut hasher = id.hasher();
    hasher.update(&data);
    let put = Request::PutChunk {
        name: name.into(),
        version,
        chunk: 1,
        chunks: 4,
        size,
    };
    conn.send(&put).await.unwrap();
    conn.send_data(bytes::Bytes::from(data)).await.unwrap();
    conn.send(&Request::ChunkDone {
        checksum: checksum_of(&hasher),
    })
    .await
    .unwrap();
    assert!(matches!(conn.reply().await.unwrap(), Response::Ok));
}

/// Chunks of an upload never committed, packed or a file of their own, are
/// counted by STATUS and removed after the grace; committed files stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_an_upload_never_committed_are_collected_after_the_grace() {
    let cluster = Cluster::start_tuned(4, |c| c.store.upload_grace_secs = 3).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    // Large enough that its chunks are files (the tests pack up to 16 KiB).
    let (path, data) = random_file(work.path(), "kept", 200_000);
    alice.put(&path, "kept", &no_progress).await.unwrap();
    let kept_files = chunk_files_on_disk(&cluster);

    upload_chunk_one(&cluster, "small", 4_000).await;
    upload_chunk_one(&cluster, "large", 400_000).await;
    assert_eq!(chunk_files(&cluster.data_dir(1), "alice", "small").len(), 1);
    assert_eq!(chunk_files(&cluster.data_dir(1), "alice", "large").len(), 1);
    assert_eq!(chunk_files_on_disk(&cluster), kept_files + 1);
    assert_eq!(pending_on_dfs1(&alice).await, 2);

    wait_until(30, "dfs1 has collected both uploads", || async {
        pending_on_dfs1(&alice).await == 0
    })
    .await;
    assert!(chunk_files(&cluster.data_dir(1), "alice", "small").is_empty());
    assert!(chunk_files(&cluster.data_dir(1), "alice", "large").is_empty());
    assert_eq!(
        chunk_files_on_disk(&cluster),
        kept_files,
        "the large chunk's file went"
    );
    let out = work.path().join("out");
    alice.get("kept", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
}

/// A committed upload is not pending and nothing of it is collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_upload_is_never_collected() {
    let cluster = Cluster::start_tuned(4, |c| c.store.upload_grace_secs = 2).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, size) in [3_000, 300_000].into_iter().enumerate() {
        let (path, data) = random_file(work.path(), &format!("f{i}"), size);
        alice
            .put(&path, &format!("f{i}"), &no_progress)
            .await
            .unwrap();
        files.push(data);
    }
    // Several heal rounds (1 s each in tests) past the grace.
    let rounds = |s: &ringdfs::protocol::ServerStatus| s.heal.rounds;
    let before = rounds(alice.status().await[0].state.as_ref().unwrap());
    wait_until(30, "three more heal rounds", || async {
        rounds(alice.status().await[0].state.as_ref().unwrap()) >= before + 3
    })
    .await;
    assert_eq!(pending_on_dfs1(&alice).await, 0);
    for (i, data) in files.iter().enumerate() {
        let out = work.path().join("out");
        alice
            .get(&format!("f{i}"), &out, &no_progress)
            .await
            .unwrap();
        assert!(std::fs::read(&out).unwrap() == *data, "f{i}");
        assert!(alice.verify(Some(&format!("f{i}"))).await.is_ok());
    }
}
