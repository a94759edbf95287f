//! The Chord ring on loopback (issue 5): formation from one known peer each,
//! failure detection, rejoining, discovery from one address, and data moving
//! when a server joins or leaves. The ring math and the 16..1024-node
//! simulation are unit tests in `src/ring.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ringdfs::client::{no_progress, Client};
use ringdfs::config::member_id;
use ringdfs::placement::{Placement, DEFAULT_COPIES};
use ringdfs::protocol::{Member, ServerStatus};
use ringdfs::ring::Id;

use crate::util::{chunks_on_disk, random_file, wait_until, Cluster, ProcCluster, USERS};

/// Every server's own account of its ring state, by name.
async fn statuses(client: &Client) -> Vec<(String, Option<ServerStatus>)> {
    client
        .status()
        .await
        .into_iter()
        .map(|r| (r.member.name.clone(), r.state.ok()))
        .collect()
}

/// Whether the servers `names` (in ring order) each have the next as
/// successor and the previous as predecessor, and see nobody down.
async fn ring_is(client: &Client, names: &[&str]) -> bool {
    let _ = client.refresh_ring().await;
    let ring: Vec<String> = client.ring().into_iter().map(|m| m.name).collect();
    if ring != names {
        return false;
    }
    let all = statuses(client).await;
    let n = names.len();
    names.iter().enumerate().all(|(i, name)| {
        all.iter().any(|(s, st)| {
            s == name
                && st.as_ref().is_some_and(|st| {
                    st.successor.as_deref() == Some(names[(i + 1) % n])
                        && st.predecessor.as_deref() == Some(names[(i + n - 1) % n])
                        && st.down.is_empty()
                })
        })
    })
}

async fn login_via(config: &ringdfs::config::ClientConfig) -> Client {
    Client::login(config, "alice", USERS[0].1).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_servers_knowing_one_peer_each_form_the_ring_in_order() {
    let cluster = Cluster::start_joined(4).await;
    // A client that knows only dfs3 learns the whole ring from it.
    let client = login_via(&cluster.client_config_for(3)).await;
    let took = wait_until(30, "the ring dfs1 → dfs2 → dfs3 → dfs4", || {
        ring_is(&client, &["dfs1", "dfs2", "dfs3", "dfs4"])
    })
    .await;
    println!(
        "ring formed from one peer each in {:.1} s",
        took.as_secs_f64()
    );

    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "src", 300_001);
    let receipt = client
        .put(&path, "one-address.bin", &no_progress)
        .await
        .unwrap();
    assert_eq!(receipt.chunks, 4);
    assert_eq!(receipt.copies, 8);
    let out = work.path().join("out");
    client
        .get("one-address.bin", &out, &no_progress)
        .await
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_marked_down_by_its_neighbours_and_rejoins() {
    let mut cluster = Cluster::start_joined(4).await;
    let client = login_via(&cluster.client_config_for(1)).await;
    let names = ["dfs1", "dfs2", "dfs3", "dfs4"];
    wait_until(30, "the ring forms", || ring_is(&client, &names)).await;

    cluster.stop(3).await;
    let took = wait_until(10, "dfs2 and dfs4 mark dfs3 down", || async {
        let all = statuses(&client).await;
        ["dfs2", "dfs4"].iter().all(|n| {
            all.iter().any(|(s, st)| {
                s == n
                    && st
                        .as_ref()
                        .is_some_and(|st| st.down.iter().any(|d| d == "dfs3"))
            })
        })
    })
    .await;
    println!(
        "killed dfs3 marked down by its neighbours in {:.2} s",
        took.as_secs_f64()
    );
    // The ring heals around it.
    wait_until(10, "dfs2's successor is dfs4", || async {
        statuses(&client).await.iter().any(|(s, st)| {
            s == "dfs2"
                && st
                    .as_ref()
                    .is_some_and(|st| st.successor.as_deref() == Some("dfs4"))
        })
    })
    .await;

    cluster.restart(3).await;
    let took = wait_until(30, "dfs3 rejoins", || ring_is(&client, &names)).await;
    println!("restarted dfs3 rejoined in {:.2} s", took.as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_is_marked_down_within_the_default_bound() {
    // Real processes with the shipped defaults (stabilize 0.5 s, failure
    // timeout 2 s): SIGSTOP only works on a process.
    let mut cluster = ProcCluster::start(4).await;
    let client = cluster.login("alice").await;
    let names = ["dfs1", "dfs2", "dfs3", "dfs4"];
    wait_until(30, "the ring forms", || ring_is(&client, &names)).await;
    cluster.signal(2, "STOP");
    // From the neighbours' logs: asking the hung server for STATUS would
    // cost the client its own timeout on every poll.
    let marked = |i: usize| {
        cluster
            .log(i)
            .lines()
            // (the log may be coloured: match the words, not `peer=dfs2`)
            .any(|l| l.contains("marked down") && l.contains("dfs2"))
    };
    let took = wait_until(10, "dfs1 and dfs3 mark dfs2 down", || async {
        marked(1) && marked(3)
    })
    .await;
    println!(
        "hung dfs2 marked down by its neighbours in {:.2} s",
        took.as_secs_f64()
    );
    assert!(took.as_secs_f64() < 5.0, "the default bound is 0.5 + 2 s");
    cluster.signal(2, "CONT");
    wait_until(30, "dfs2 is back", || ring_is(&client, &names)).await;
    cluster.kill(2);
}

/// Which servers (names) hold each chunk of `name` on disk.
fn copies_on_disk(
    cluster: &Cluster,
    servers: &[(String, usize)],
    name: &str,
) -> Vec<BTreeSet<String>> {
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for (server, i) in servers {
        for chunk in chunks_on_disk(&cluster.data_dir(*i), "alice", name) {
            let c = chunk as usize;
            if out.len() < c {
                out.resize(c, BTreeSet::new());
            }
            out[c - 1].insert(server.clone());
        }
    }
    out
}

/// Whether every file has exactly two copies of each of its `chunks`
/// chunks, on the holders the placement over `ring` (members in ring order)
/// says.
fn placed_by_table(
    cluster: &Cluster,
    servers: &[(String, usize)],
    ring: &[Member],
    files: &[(String, u32)],
) -> bool {
    let ring_ids: Vec<Id> = ring.iter().map(|m| member_id(m).unwrap()).collect();
    files.iter().all(|(name, chunks)| {
        let placement = Placement::of("alice", name);
        let on_disk = copies_on_disk(cluster, servers, name);
        on_disk.len() == *chunks as usize
            && (1..=*chunks).all(|c| {
                let want: BTreeSet<String> = placement
                    .holders(&ring_ids, c, *chunks, DEFAULT_COPIES)
                    .iter()
                    .map(|&p| ring[p as usize - 1].name.clone())
                    .collect();
                on_disk[c as usize - 1] == want
            })
    })
}

/// Reads every file again and again until `stop`; counts reads and failures.
fn reader(
    client: Arc<Client>,
    files: Arc<Vec<(String, Vec<u8>)>>,
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("out");
        while !stop.load(Ordering::Relaxed) {
            for (name, data) in files.iter() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client.get(name, &out, &no_progress).await {
                    Ok(_) if std::fs::read(&out).unwrap() == *data => {}
                    Ok(_) => {
                        eprintln!("GET {name}: wrong bytes");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("GET {name}: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Files a writer stored: name, bytes, and the chunk count PUT gave each.
type Written = Arc<std::sync::Mutex<Vec<(String, Vec<u8>, u32)>>>;

/// PUTs new files (`w0000`, `w0001`, ...) one after another, 50 ms apart, until `stop`;
/// records each stored file and counts failures.
fn writer(
    client: Arc<Client>,
    written: Written,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let work = tempfile::tempdir().unwrap();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("w{i:04}");
            let (path, data) = random_file(work.path(), "src", 5000 + i * 131);
            match client.put(&path, &name, &no_progress).await {
                Ok(receipt) => {
                    // A degraded PUT is stored (healing adds the copies): the
                    // placement check at the end says whether they came.
                    if receipt.copies < receipt.wanted {
                        eprintln!(
                            "PUT {name}: {} of {} copies",
                            receipt.copies, receipt.wanted
                        );
                    }
                    written.lock().unwrap().push((name, data, receipt.chunks));
                }
                Err(e) => {
                    eprintln!("PUT {name}: {e}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
            i += 1;
            // A steady stream of writes, not a flood: on 2 busy cores a
            // flood can outrun a leaving server's hand-over (which waits for
            // every chunk it holds, new ones included).
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
}

/// How many files the writer has stored so far.
fn stored(written: &Written) -> usize {
    written.lock().unwrap().len()
}

fn total_copied(all: &[(String, Option<ServerStatus>)]) -> u64 {
    all.iter()
        .filter_map(|(_, s)| s.as_ref())
        .map(|s| s.heal.copied)
        .sum()
}

/// README, Joining and leaving: a fifth server joins and later leaves while
/// reads and writes go on; every GET and every PUT during the rebalancing
/// succeeds (some PUTs fall inside each rebalancing), a file written while
/// five servers are up gets five chunks on the five-server table's holders,
/// and in the end every chunk of every file (200 from before, the writer's,
/// the five-chunk one) has two copies where the four-server table says and
/// reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifth_server_joins_and_leaves_while_reads_and_writes_go_on_and_every_chunk_keeps_two_copies_where_the_table_says(
) {
    let mut cluster = Cluster::start(4).await;
    let client = Arc::new(cluster.login("alice").await);
    let work = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut bytes = 0u64;
    for i in 0..200 {
        let len = 1000 + (i * 997) % 20_000;
        let (path, data) = random_file(work.path(), "src", len);
        let name = format!("f{i:03}");
        client.put(&path, &name, &no_progress).await.unwrap();
        bytes += len as u64;
        files.push((name, data));
    }
    let table: Vec<(String, u32)> = files.iter().map(|(n, _)| (n.clone(), 4)).collect();
    let four: Vec<(String, usize)> = (1..=4).map(|i| (format!("dfs{i}"), i)).collect();
    let four_names: Vec<String> = four.iter().map(|(n, _)| n.clone()).collect();
    let ring4 = client.ring();
    wait_until(30, "200 files placed on four servers", || async {
        placed_by_table(&cluster, &four, &ring4, &table)
    })
    .await;
    let before: BTreeMap<&str, Vec<BTreeSet<String>>> = table
        .iter()
        .map(|(name, _)| (name.as_str(), copies_on_disk(&cluster, &four, name)))
        .collect();
    let copied_before = total_copied(&statuses(&client).await);

    // GETs and PUTs run throughout the join and the leave, each with its
    // own client (its own connections), as two users' sessions would.
    let files = Arc::new(files);
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let readers = reader(
        Arc::clone(&client),
        Arc::clone(&files),
        Arc::clone(&stop),
        Arc::clone(&reads),
        Arc::clone(&failures),
    );
    let written: Written = Arc::default();
    let write_failures = Arc::new(AtomicU64::new(0));
    let writers = writer(
        Arc::new(cluster.login("alice").await),
        Arc::clone(&written),
        Arc::clone(&stop),
        Arc::clone(&write_failures),
    );

    // dfs5 joins through dfs1 without an id: it takes the midpoint of the
    // largest gap (all four are equal: the first, from dfs4 round to dfs1).
    let join_addr = cluster.addr(1).to_string();
    let started = Instant::now();
    let written_before_join = stored(&written);
    let five = cluster.add_server("dfs5", &join_addr).await;
    let names5: Vec<String> = ["dfs1", "dfs2", "dfs3", "dfs4", "dfs5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut all5 = four.clone();
    all5.push(("dfs5".into(), five));
    wait_until(60, "dfs5 is in the ring", || async {
        let _ = client.refresh_ring().await;
        client
            .ring()
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
            == names5
    })
    .await;
    let ring5 = client.ring();
    let took = wait_until(
        120,
        "every chunk on its two holders in the five-server table",
        || async { placed_by_table(&cluster, &all5, &ring5, &table) },
    )
    .await;
    let rebalance = started.elapsed();
    let written_during_join = stored(&written) - written_before_join;
    let copied = total_copied(&statuses(&client).await) - copied_before;
    let copies = 200 * 4 * 2;
    // Copies moved, counted on disk: each copy on a server that did not
    // hold it before the join.
    let moved: usize = table
        .iter()
        .map(|(name, _)| {
            let after = copies_on_disk(&cluster, &all5, name);
            after
                .iter()
                .zip(&before[name.as_str()])
                .map(|(now, then)| now.difference(then).count())
                .sum::<usize>()
        })
        .sum();
    println!(
        "join: {moved} of {copies} chunk copies moved on disk ({:.1} %; the healers copied {copied}), {} files {} bytes, rebalanced {:.1} s after start ({:.1} s after the placement check began), {written_during_join} files written meanwhile",
        100.0 * moved as f64 / copies as f64,
        files.len(),
        bytes,
        rebalance.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(written_during_join > 0, "no PUT finished during the join");
    assert!(
        moved * 4 <= copies,
        "the join moved {moved} of {copies} copies: more than a quarter"
    );

    // Written at five servers: five chunks, on the five-server table's holders.
    let (path, five_data) = random_file(work.path(), "five", 500_001);
    let receipt = client.put(&path, "five.bin", &no_progress).await.unwrap();
    assert_eq!((receipt.chunks, receipt.copies), (5, 10));
    let five_file = [("five.bin".to_string(), 5)];
    wait_until(
        30,
        "five.bin on the five-server table's holders",
        || async { placed_by_table(&cluster, &all5, &ring5, &five_file) },
    )
    .await;
    let out = work.path().join("five.out");
    client.get("five.bin", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == five_data);

    // dfs5 leaves: the four servers' table again, for every file written so
    // far whatever its chunk count; the writer keeps going meanwhile.
    let started = Instant::now();
    let written_before_leave = stored(&written);
    cluster.leave(five).await;
    let mut everything = table.clone();
    everything.push(five_file[0].clone());
    wait_until(
        120,
        "every chunk on its two holders in the four-server table",
        || async { placed_by_table(&cluster, &four, &ring4, &everything) },
    )
    .await;
    let written_during_leave = stored(&written) - written_before_leave;
    println!(
        "leave: data handed over and placed in {:.1} s, {written_during_leave} files written meanwhile",
        started.elapsed().as_secs_f64()
    );
    assert!(written_during_leave > 0, "no PUT finished during the leave");
    let _ = client.refresh_ring().await;
    assert_eq!(
        client
            .ring()
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>(),
        four_names
    );

    stop.store(true, Ordering::Relaxed);
    readers.await.unwrap();
    writers.await.unwrap();
    let reads = reads.load(Ordering::Relaxed);
    let written = std::mem::take(&mut *written.lock().unwrap());
    println!(
        "{reads} GETs and {} PUTs during the join and the leave",
        written.len()
    );
    assert!(reads > 0);
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "a GET failed during rebalancing"
    );
    assert_eq!(
        write_failures.load(Ordering::Relaxed),
        0,
        "a PUT failed during rebalancing"
    );
    // Every file, the writer's too, on the four-server table's holders...
    let written_table: Vec<(String, u32)> =
        written.iter().map(|(n, _, c)| (n.clone(), *c)).collect();
    wait_until(
        120,
        "every written file on its two holders in the four-server table",
        || async { placed_by_table(&cluster, &four, &ring4, &written_table) },
    )
    .await;
    // ...and every file reads back.
    let out = work.path().join("after");
    let all = files
        .iter()
        .map(|(n, d)| (n, d))
        .chain(written.iter().map(|(n, d, _)| (n, d)))
        .chain(std::iter::once((&five_file[0].0, &five_data)));
    let mut checked = 0;
    for (name, data) in all {
        client.get(name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == *data, "{name}");
        checked += 1;
    }
    assert_eq!(checked, files.len() + written.len() + 1);
}
