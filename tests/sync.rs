//! Anti-entropy by digests (issue 11): what an idle heal round costs does
//! not grow with the files stored, and servers that differ in a few files
//! among many find and exchange only those.

use std::path::Path;
use std::sync::Arc;

use ringdfs::client::no_progress;
use ringdfs::placement::chunk_range;
use ringdfs::protocol::{checksum_of, ChunkId, Manifest, Version};
use ringdfs::store::{ChunkSpec, Store};

use crate::util::{random_file, test_tuning, wait_until, Cluster};

/// Stores files `first..last` (`f00000`…, 2 chunks of a few bytes each, at
/// version `gen`) straight into the store under `data_dir`, as a PUT to a
/// 2-server ring would have: both chunks and the manifest. Many writers at
/// once, so the store's group commit keeps this quick.
fn fill(data_dir: &Path, first: usize, last: usize) {
    let store = Store::open(data_dir, test_tuning()).unwrap();
    let threads: Vec<_> = (0..32)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let mut manifests = Vec::new();
                for i in (first + t..last).step_by(32) {
                    manifests.push(("alice".to_string(), stored(&store, i)));
                }
                store.commit_many(manifests).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Writes both chunks of file `i` and returns its manifest.
fn stored(store: &Arc<Store>, i: usize) -> Manifest {
    let name = format!("f{i:05}");
    let data = format!("file number {i}").into_bytes();
    let version = Version {
        gen: 1,
        writer: i as u64,
    };
    let size = data.len() as u64;
    let mut checksums = Vec::new();
    for chunk in 1..=2 {
        let (start, end) = chunk_range(size, 2, chunk);
        let bytes = &data[start as usize..end as usize];
        let mut hasher = ChunkId {
            owner: "alice",
            name: &name,
            version,
            chunk,
            len: end - start,
        }
        .hasher();
        hasher.update(bytes);
        let sum = checksum_of(&hasher);
        let spec = ChunkSpec {
            owner: "alice".into(),
            name: name.clone(),
            version,
            chunk,
            chunks: 2,
            size,
        };
        let mut writer = store.begin_chunk(spec).unwrap();
        writer.write(bytes).unwrap();
        writer.finish(sum).unwrap();
        checksums.push(sum);
    }
    Manifest {
        name,
        version,
        size,
        chunks: 2,
        checksums,
        stored_at: 0,
        digest: ringdfs::protocol::FileDigest::None,
        deleted: false,
        data: None,
        kept: None,
        meta: None,
    }
}

/// Bytes of digests a server received per idle heal round, over `rounds`
/// rounds of both servers, once both have settled.
async fn idle_bytes_per_round(cluster: &Cluster, rounds: u64) -> Vec<u64> {
    let client = cluster.login("alice").await;
    let status = || async {
        client
            .status()
            .await
            .into_iter()
            .map(|r| r.state.unwrap())
            .collect::<Vec<_>>()
    };
    wait_until(30, "both servers settled: nothing missing", || async {
        status()
            .await
            .iter()
            .all(|s| s.heal.rounds >= 2 && s.heal.missing == 0 && s.files > 0)
    })
    .await;
    let before = status().await;
    wait_until(30, "more heal rounds", || async {
        status()
            .await
            .iter()
            .zip(&before)
            .all(|(now, then)| now.heal.rounds >= then.heal.rounds + rounds)
    })
    .await;
    let after = status().await;
    after
        .iter()
        .zip(&before)
        .map(|(now, then)| {
            let bytes = now.heal.sync_bytes - then.heal.sync_bytes;
            let rounds = now.heal.rounds - then.heal.rounds;
            assert!(rounds > 0);
            bytes / rounds
        })
        .collect()
}

/// An idle round exchanges as many bytes with 10 000 files stored as with
/// 1 000 (counted by the servers), and two servers that then differ in 3
/// files converge on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_round_costs_the_same_at_10_000_files_and_3_differences_converge() {
    let mut cluster = Cluster::start(2).await;
    for server in 1..=2 {
        cluster.stop(server).await;
        fill(&cluster.data_dir(server), 0, 1000);
        cluster.restart(server).await;
    }
    let at_1000 = idle_bytes_per_round(&cluster, 3).await;
    assert!(at_1000.iter().all(|&b| b > 0), "{at_1000:?}");

    for server in 1..=2 {
        cluster.stop(server).await;
        fill(&cluster.data_dir(server), 1000, 10_000);
        cluster.restart(server).await;
    }
    let at_10000 = idle_bytes_per_round(&cluster, 3).await;
    assert_eq!(
        at_10000, at_1000,
        "bytes per idle round at 10 000 files vs 1 000"
    );

    // dfs2 misses an overwrite, a new file and a delete.
    cluster.stop(2).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (changed, changed_data) = random_file(work.path(), "changed", 3000);
    client.put(&changed, "f00042", &no_progress).await.unwrap();
    let (added, added_data) = random_file(work.path(), "added", 5000);
    client.put(&added, "new-file", &no_progress).await.unwrap();
    client.delete("f09999").await.unwrap();
    cluster.restart(2).await;

    // dfs2 alone serves the three changes once it has caught up.
    let started = std::time::Instant::now();
    wait_until(30, "dfs2 caught up", || async {
        let store = Store::inspect(&cluster.data_dir(2)).unwrap();
        let current = |name: &str| store.file("alice", name).unwrap();
        let (m, held) = current("f00042");
        let (added, added_held) = current("new-file");
        m.is_some_and(|m| m.size == 3000)
            && held == [1, 2]
            && added.is_some()
            && added_held == [1, 2]
            && current("f09999").0.is_none_or(|m| m.deleted)
    })
    .await;
    eprintln!("dfs2 caught up {:?} after its restart", started.elapsed());
    let status = client.status().await;
    let synced = status[1].state.as_ref().unwrap().heal.sync_bytes;
    assert!(
        synced < 64 << 10,
        "dfs2 received {synced} bytes of digests and entries to find 3 files among 10 000"
    );
    cluster.stop(1).await;
    let fresh = cluster.login("alice").await;
    for (name, data) in [("f00042", &changed_data), ("new-file", &added_data)] {
        let out = work.path().join(format!("{name}.out"));
        fresh.get(name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == *data, "{name}");
    }
    let names = crate::util::names(&fresh).await;
    assert_eq!(
        names.len(),
        10_000,
        "9 999 of the filled files and the new one"
    );
    assert!(!names.contains(&"f09999".to_string()));
}
