//! Faults only a real process has: SIGSTOP (hung, not dead) and SIGKILL at
//! any moment of a write. Servers are child processes of `dfs-server`.

use std::time::{Duration, Instant};

use rand::Rng;
use ringdfs::client::no_progress;
use ringdfs::placement::Placement;
use ringdfs::store::Store;

use crate::util::{random_file, ProcCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_holder_costs_a_bounded_wait_then_the_other_copy() {
    let cluster = ProcCluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "big", 256 << 20);
    client.put(&path, "big", &no_progress).await.unwrap();
    std::fs::remove_file(&path).unwrap();

    // Stop the first-choice holder of chunk 1 while the GET runs.
    let victim = Placement::of("alice", "big", 4).holders(1)[0] as usize;
    let out = work.path().join("out");
    let started = Instant::now();
    let get = client.get("big", &out, &no_progress);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.signal(victim, "STOP");
    };
    let (result, ()) = tokio::join!(get, stop);
    let took = started.elapsed();
    result.unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
    eprintln!("GET with dfs{victim} stopped mid-transfer took {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    cluster.signal(victim, "CONT");
    let fresh = cluster.login("alice").await;
    std::fs::remove_file(&out).unwrap();
    fresh.get("big", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
    assert!(fresh.status().await.iter().all(|r| r.state.is_ok()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_puts_never_shows_half_a_chunk_or_loses_an_acknowledged_file() {
    let mut cluster = ProcCluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "big", 256 << 20);
    let mut acknowledged = Vec::new();
    let mut rng = rand::thread_rng();
    for round in 0..10 {
        let name = format!("big-{round}");
        let victim = rng.gen_range(1..=4);
        let delay = Duration::from_millis(rng.gen_range(0..1200));
        let put = client.put(&path, &name, &no_progress);
        let kill = async {
            tokio::time::sleep(delay).await;
        };
        tokio::pin!(put);
        let result = tokio::select! {
            result = &mut put => Some(result),
            () = kill => None,
        };
        let result = match result {
            Some(done) => {
                cluster.kill(victim); // after the PUT: still a crash to recover from
                done
            }
            None => {
                cluster.kill(victim);
                put.await
            }
        };
        eprintln!(
            "round {round}: killed dfs{victim} after {delay:?}: {}",
            match &result {
                Ok(r) => format!("acknowledged, {} of {} copies", r.copies, r.wanted),
                Err(e) => format!("failed: {e}"),
            }
        );
        if result.is_ok() {
            acknowledged.push(name.clone());
        }
        cluster.restart(victim).await;

        // No half-written chunk is visible on any server, killed or not.
        for server in 1..=4 {
            let store = Store::inspect(&cluster.data_dir(server)).unwrap();
            let (_, bad) = store.scrub();
            assert!(bad.is_empty(), "dfs{server}: {bad:?}");
        }
        if result.is_ok() {
            let out = work.path().join("out");
            client.get(&name, &out, &no_progress).await.unwrap();
            assert!(std::fs::read(&out).unwrap() == data, "{name}");
        }
    }
    assert!(!acknowledged.is_empty());
    let fresh = cluster.login("alice").await;
    let listed: Vec<String> = fresh
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    for name in &acknowledged {
        assert!(listed.contains(name), "{name} is missing from LIST");
        let out = work.path().join("final");
        fresh.get(name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == data, "{name}");
    }
}
