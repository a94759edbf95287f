//! Faults only a real process has: SIGSTOP (hung, not dead) and SIGKILL at
//! any moment of a write. Servers are child processes of `dfs-server`.
//!
//! Every randomized test here takes its seed from `CHAOS_SEED` (or a fresh
//! one) and prints it first, so a failing run can be repeated with the same
//! operations and faults (the timing of a real cluster still varies).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use ringdfs::client::{no_progress, Client, PutReceipt};
use ringdfs::protocol::Checksum;
use ringdfs::store::Store;
use ringdfs::Error;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::util::{chunk_checksums, chunks_on_disk, seed, seeded_file, ProcCluster, USERS};

/// Sends `signal` to `pid` at once, from inside a progress callback.
fn signal_now(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is a child
    // of this process that has not been reaped, so it cannot have been reused.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

/// The fields of every debug event the client library (`ringdfs::client`)
/// logs while a future runs with [`ClientEvents::dispatch`].
#[derive(Clone, Default)]
struct ClientEvents(Arc<Mutex<Vec<BTreeMap<String, String>>>>);

impl ClientEvents {
    /// A subscriber to run a future with. Made while the binary's global
    /// subscriber exists: tracing asks a scoped subscriber about a log
    /// statement another test reached first only when it is not the sole
    /// one registered (else that statement stays off for it).
    fn dispatch(&self) -> tracing::Dispatch {
        crate::util::captured_logs();
        let only_client = tracing_subscriber::filter::Targets::new()
            .with_target("ringdfs::client", tracing::Level::DEBUG);
        let subscriber = tracing_subscriber::registry().with(self.clone().with_filter(only_client));
        tracing::Dispatch::new(subscriber)
    }

    /// The events whose message is `message`.
    fn with_message(&self, message: &str) -> Vec<BTreeMap<String, String>> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|e| e.get("message").map(String::as_str) == Some(message))
            .cloned()
            .collect()
    }
}

impl<S: tracing::Subscriber> Layer<S> for ClientEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0
                    .insert(field.name().to_string(), format!("{value:?}"));
            }
        }
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

/// A holder that hangs while it sends its chunk costs the GET one client
/// timeout, then that chunk comes from its other holder; a holder already
/// hung when a GET starts costs one timeout too, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_holder_costs_one_timeout_then_the_other_copy() {
    let mut rng = StdRng::seed_from_u64(seed("a_hung_holder"));
    let cluster = ProcCluster::start(4).await;
    // A timeout long beside the transfer, so one timeout and two differ
    // by far more than the transfer's time.
    let mut config = cluster.client_config();
    config.timeout_secs = 8;
    let timeout = config.timeout();
    let client = Client::login(&config, "alice", USERS[0].1).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    // 32 MiB chunks: far more than the socket buffers between a server and
    // the client hold, so when the first block of the GET arrives, no holder
    // can have sent its whole chunk yet.
    let (path, data) = seeded_file(&mut rng, work.path(), "big", 128 << 20);
    client.put(&path, "big", &no_progress).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    // Ring positions are server numbers: the ids put dfs1..dfs4 in order.
    let [victim, other] = crate::util::holders("alice", "big", 1, 4)[..] else {
        unreachable!("two holders")
    };
    let pid = cluster.pid(victim);
    // Past this, a GET is not coming back (the client would have to wait
    // without a timeout).
    let hang = 4 * timeout;

    // 1. dfs`victim` is stopped the moment the GET's first data block
    // arrives: it has answered the GET's Stat (so the client counts it as
    // up) and is part way through sending chunk 1.
    let stopped = AtomicBool::new(false);
    let stop_on_first_block = |delta: i64| {
        if delta > 0 && !stopped.swap(true, SeqCst) {
            signal_now(pid, libc::SIGSTOP);
        }
    };
    let events = ClientEvents::default();
    let out = work.path().join("out");
    let started = Instant::now();
    let get = client.get("big", &out, &stop_on_first_block);
    let result = tokio::time::timeout(hang, get.with_subscriber(events.dispatch())).await;
    let took = started.elapsed();
    eprintln!("GET with dfs{victim} stopped mid-transfer took {took:?}");
    assert!(stopped.load(SeqCst), "the GET moved no data");
    let receipt = result.unwrap_or_else(|_| {
        panic!("GET still not done {hang:?} after dfs{victim} hung (client timeout {timeout:?})")
    });
    receipt.unwrap();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    // The client gave up on exactly one copy: dfs`victim`'s chunk 1, on its
    // timeout. dfs`victim` stayed stopped, so chunk 1 came from dfs`other`.
    let failed = events.with_message("chunk fetch failed");
    assert_eq!(failed.len(), 1, "failed fetches: {failed:?}");
    let failure = &failed[0];
    assert_eq!(failure["server"], format!("dfs{victim}"), "{failure:?}");
    assert_eq!(failure["chunk"], "1", "{failure:?}");
    assert!(failure["error"].contains("timed out"), "{failure:?}");
    let health = client.health();
    assert!(
        !health[victim - 1].1,
        "dfs{victim} is not counted as down: {health:?}"
    );
    assert!(took < 2 * timeout, "{took:?}: more than one timeout");
    eprintln!("chunk 1: dfs{victim} timed out, dfs{other} served it");

    // 2. A GET that starts while dfs`victim` is still stopped: its Stat
    // there times out (once), and chunk 1 is read from dfs`other`
    // (dfs`victim` is frozen).
    std::fs::remove_file(&out).unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(hang, client.get("big", &out, &no_progress)).await;
    let took = started.elapsed();
    eprintln!("GET started with dfs{victim} stopped took {took:?}");
    result
        .unwrap_or_else(|_| panic!("GET still not done {hang:?} with dfs{victim} hung"))
        .unwrap();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    assert!(took < 2 * timeout, "{took:?}: more than one timeout");

    // 3. Continued, it serves again.
    cluster.signal(victim, "CONT");
    let fresh = cluster.login("alice").await;
    std::fs::remove_file(&out).unwrap();
    fresh.get("big", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
    let status = fresh.status().await;
    assert_eq!(status.len(), 4);
    for report in &status {
        assert!(
            report.state.is_ok(),
            "{}: {:?}",
            report.member.name,
            report.state
        );
    }
}

/// Where in a PUT the victim is killed.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// Once this many bytes of the file have been sent (to both holders).
    Sent(u64),
    /// After the PUT was acknowledged.
    Acknowledged,
}

/// An acknowledged PUT and what every copy of it must be.
struct Acked {
    name: String,
    receipt: PutReceipt,
    /// Chunk checksums computed here from the bytes sent (index 0 = chunk 1).
    checksums: Vec<Checksum>,
}

/// Reads a stored chunk through `store` (checking its trailer and checksum)
/// and returns the checksum it carries.
fn read_chunk(store: &Store, name: &str, file: &Acked, chunk: u32) -> Checksum {
    let mut reader = store
        .open_chunk("alice", name, file.receipt.version, chunk)
        .unwrap_or_else(|e| panic!("{name} chunk {chunk}: {e}"));
    while reader
        .next_block()
        .unwrap_or_else(|e| panic!("{name} chunk {chunk}: {e}"))
        .is_some()
    {}
    reader.checksum()
}

/// Checks each server's own store, on its disk (not through the cluster,
/// where the other copy would hide a lost one): for every acknowledged file,
/// a server its receipt does not list as missing holds exactly the chunks the
/// table gives it, at the acknowledged version, with the checksums of the
/// bytes sent; a server listed as missing holds none other. The scrub finds
/// no bad copy and reads at least every copy checked here. `uncommitted`
/// lists the (server, file) pairs whose PUT was still running when that
/// server was killed: it acknowledged its chunks but may have died before
/// the commit, and have no manifest until it heals. (The running servers
/// are stopped for the look and started again: see `check_stores`.)
async fn check_own_copies(
    cluster: &mut ProcCluster,
    files: &[Acked],
    uncommitted: &[(usize, String)],
) {
    cluster
        .check_stores(|server, store| {
            let data_dir = store.root().to_path_buf();
            let mut expected = 0;
            for file in files {
                let name = file.name.as_str();
                let table = crate::util::held("alice", name, server, 4);
                let on_disk = chunks_on_disk(&data_dir, "alice", name);
                if file.receipt.missing.contains(&format!("dfs{server}")) {
                    let strays: Vec<_> = on_disk.iter().filter(|c| !table.contains(c)).collect();
                    assert!(strays.is_empty(), "dfs{server}: {name} chunks {strays:?}");
                    continue;
                }
                assert_eq!(
                    on_disk, table,
                    "dfs{server} acknowledged {name} but holds these chunks of it"
                );
                match store.file("alice", name).unwrap() {
                    (Some(manifest), held) => {
                        assert_eq!(
                            manifest.version, file.receipt.version,
                            "dfs{server}: {name}"
                        );
                        assert!(
                            manifest.checksums == file.checksums,
                            "dfs{server}: {name}: the manifest's checksums are not the bytes sent"
                        );
                        assert_eq!(held, table, "dfs{server}: {name}");
                        // The scrub below reads these against the manifest.
                        expected += held.len() as u64;
                    }
                    (None, _) => {
                        assert!(
                            uncommitted.contains(&(server, file.name.clone())),
                            "dfs{server} has lost its manifest of {name}"
                        );
                        for &chunk in &table {
                            let sum = read_chunk(store, name, file, chunk);
                            assert!(
                                sum == file.checksums[chunk as usize - 1],
                                "dfs{server}: {name} chunk {chunk} is not the bytes sent"
                            );
                        }
                    }
                }
            }
            let (checked, bad) = store.scrub().unwrap();
            assert!(bad.is_empty(), "dfs{server}: bad copies {bad:?}");
            assert!(
                checked >= expected,
                "dfs{server}: the scrub read {checked} copies; it holds {expected}"
            );
        })
        .await;
}

/// SIGKILL at any moment of a PUT (while blocks stream, once all are sent,
/// after the acknowledgement): every PUT is acknowledged, the dead server's
/// store shows no half-written chunk, and every server keeps every copy it
/// acknowledged (checked on its own disk before it restarts, so no heal can
/// cover a loss); once back, the ring holds every copy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_puts_never_shows_half_a_chunk_or_loses_an_acknowledged_file() {
    let mut rng = StdRng::seed_from_u64(seed("kill_9_during_puts"));
    let mut cluster = ProcCluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    // 8 MiB chunks of 1 MiB blocks: a kill after a random number of sent
    // bytes lands inside a chunk's stream, its fsync or its rename. A larger
    // file (256 MiB, once) only costs CPU: where the kill lands is chosen by
    // bytes sent, not by time.
    const SIZE: u64 = 32 << 20;
    let (path, data) = seeded_file(&mut rng, work.path(), "big", SIZE as usize);
    let mut schedule: Vec<KillAt> = (0..6)
        .map(|_| KillAt::Sent(rng.gen_range(0..SIZE)))
        .chain([KillAt::Sent(SIZE); 2])
        .chain([KillAt::Acknowledged; 2])
        .collect();
    schedule.shuffle(&mut rng);
    let mut acknowledged: Vec<Acked> = Vec::new();
    let mut uncommitted = Vec::new();
    let mut cut_short = 0;
    for (round, &kill_at) in schedule.iter().enumerate() {
        let name = format!("big-{round}");
        let victim = rng.gen_range(1..=4);
        let pid = cluster.pid(victim);
        let sent = AtomicI64::new(0);
        let killed = AtomicBool::new(false);
        let kill_when_sent = |delta: i64| {
            let total = sent.fetch_add(delta, SeqCst) + delta;
            if let KillAt::Sent(at) = kill_at {
                if total as u64 >= at && !killed.swap(true, SeqCst) {
                    signal_now(pid, libc::SIGKILL);
                }
            }
        };
        let result = client.put(&path, &name, &kill_when_sent).await;
        let during_put = killed.load(SeqCst);
        cluster.kill(victim); // the kill, after the acknowledgement; else a reaping
        let receipt = result.unwrap_or_else(|e| {
            panic!("round {round}: PUT failed with only dfs{victim} killed ({kill_at:?}): {e}")
        });
        eprintln!(
            "round {round}: killed dfs{victim} at {kill_at:?}: {} of {} copies",
            receipt.copies, receipt.wanted
        );
        assert_eq!(during_put, matches!(kill_at, KillAt::Sent(_)));
        if receipt.copies < receipt.wanted {
            cut_short += 1;
        }
        let checksums = chunk_checksums("alice", &name, receipt.version, receipt.chunks, &data);
        acknowledged.push(Acked {
            name: name.clone(),
            receipt,
            checksums,
        });
        if during_put {
            uncommitted.push((victim, name));
        }
        // While dfs`victim` is dead: what the kill left on its disk.
        check_own_copies(&mut cluster, &acknowledged, &uncommitted).await;
        cluster.restart(victim).await;
    }
    assert!(
        cut_short > 0,
        "no kill landed before the victim's copies were stored"
    );

    // Back up, the servers copy what they missed: every copy is where the
    // table says, on every server, and every file reads back.
    let every_copy = |server: usize, store: &Store| {
        acknowledged.iter().all(|file| {
            let table = crate::util::held("alice", &file.name, server, 4);
            store.file("alice", &file.name).unwrap().1 == table
                && chunks_on_disk(store.root(), "alice", &file.name) == table
        })
    };
    cluster
        .wait_for_stores(90, "every server to hold its copies again", every_copy)
        .await;
    let healed: Vec<Acked> = acknowledged
        .iter()
        .map(|file| Acked {
            name: file.name.clone(),
            receipt: PutReceipt {
                missing: Vec::new(),
                ..file.receipt.clone()
            },
            checksums: file.checksums.clone(),
        })
        .collect();
    check_own_copies(&mut cluster, &healed, &[]).await;
    let fresh = cluster.login("alice").await;
    let listed = crate::util::names(&fresh).await;
    assert_eq!(listed.len(), schedule.len(), "{listed:?}");
    for file in &acknowledged {
        assert!(
            listed.contains(&file.name),
            "{} is missing from LIST",
            file.name
        );
        let out = work.path().join("final");
        fresh.get(&file.name, &out, &no_progress).await.unwrap();
        assert!(std::fs::read(&out).unwrap() == data, "{}", file.name);
    }
}

/// What a GET of a name may legitimately return: the last acknowledged state,
/// or that of an operation that failed after it (its commit may have landed).
#[derive(Default)]
struct Possible(Vec<Option<[u8; 16]>>);

impl Possible {
    fn may_be_absent(&self) -> bool {
        self.0.is_empty() || self.0.contains(&None)
    }
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(bytes).into()
}

/// The faults the chaos injector makes, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    /// SIGKILL, down for a while, restarted.
    Kill,
    /// SIGSTOP for a while, then SIGCONT.
    Stop,
    /// SIGKILL and an immediate restart.
    Crash,
}

/// Whether a fault is on, as the workload sees it.
#[derive(Default)]
struct Faults {
    /// Faults begun so far (counted before `on` is set).
    begun: AtomicU64,
    /// A server is killed and not yet restarted, or stopped and not yet
    /// continued.
    on: AtomicBool,
}

impl Faults {
    /// Taken when an operation starts; `begun` is read before `on`.
    fn snapshot(&self) -> (u64, bool) {
        (self.begun.load(SeqCst), self.on.load(SeqCst))
    }

    /// Whether a fault was on at any moment since `start` was taken.
    fn since(&self, start: (u64, bool)) -> bool {
        let (begun, on) = self.snapshot();
        start.1 || on || begun != start.0
    }
}

/// An error that only says a server could not be reached or did not answer
/// in time (a transfer cut off included) — never one about a chunk's bytes.
fn only_unavailable(e: &Error) -> bool {
    let about_bytes = {
        let text = e.to_string().to_lowercase();
        text.contains("corrupt") || text.contains("checksum")
    };
    let transport = match e {
        Error::Unavailable { .. } | Error::ChunkUnavailable { .. } | Error::Timeout { .. } => true,
        Error::Io { context, .. } => {
            context.starts_with("sending to ") || context.starts_with("receiving from ")
        }
        _ => false,
    };
    transport && !about_bytes
}

/// Makes one fault at a time, each kind once in every three (in a seeded
/// order), on a seeded victim, with seeded pauses, until `stop`. Returns how
/// many of each kind it made.
async fn inject(
    cluster: Arc<tokio::sync::Mutex<ProcCluster>>,
    faults: Arc<Faults>,
    stop: Arc<AtomicBool>,
    mut rng: StdRng,
) -> HashMap<Fault, u64> {
    let mut made = HashMap::new();
    let mut kinds = Vec::new();
    loop {
        // The pause between faults is the schedule, not synchronisation.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3000))).await;
        if stop.load(SeqCst) {
            return made;
        }
        if kinds.is_empty() {
            kinds = vec![Fault::Kill, Fault::Stop, Fault::Crash];
            kinds.shuffle(&mut rng);
        }
        let kind = kinds.pop().expect("refilled");
        let victim = rng.gen_range(1..=4);
        let outage = Duration::from_millis(rng.gen_range(300..3000));
        faults.begun.fetch_add(1, SeqCst);
        faults.on.store(true, SeqCst);
        let mut c = cluster.lock().await;
        match kind {
            Fault::Kill => {
                c.kill(victim);
                tokio::time::sleep(outage).await;
                c.restart(victim).await;
            }
            Fault::Stop => {
                c.signal(victim, "STOP");
                tokio::time::sleep(outage).await;
                c.signal(victim, "CONT");
            }
            Fault::Crash => {
                c.kill(victim);
                c.restart(victim).await;
            }
        }
        drop(c);
        faults.on.store(false, SeqCst);
        *made.entry(kind).or_insert(0) += 1;
    }
}

/// PUT/GET/DELETE for `secs` seconds while one server at a time is killed,
/// stopped or crashed and restarted. Never wrong bytes, never a corrupt
/// chunk, never an acknowledged file not found; a failure is excused only
/// if a fault was on while the operation ran, and only as "unavailable". At
/// the end every acknowledged write reads back.
async fn chaos(secs: u64) {
    let seed = seed("chaos");
    let cluster = ProcCluster::start(4).await;
    let client = cluster.login("alice").await;
    let cluster = Arc::new(tokio::sync::Mutex::new(cluster));
    let faults = Arc::new(Faults::default());
    let stop = Arc::new(AtomicBool::new(false));
    let injector = tokio::spawn(inject(
        cluster.clone(),
        faults.clone(),
        stop.clone(),
        StdRng::seed_from_u64(seed.wrapping_add(1)),
    ));

    let work = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: BTreeMap<String, Possible> = BTreeMap::new();
    let (mut puts, mut gets, mut deletes) = (0, 0, 0);
    let (mut excused, mut during_faults) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let name = format!("c{}", rng.gen_range(0..16));
        let entry = model.entry(name.clone()).or_default();
        let roll = rng.gen_range(0..100);
        let start = faults.snapshot();
        // Judged once the operation is over: a fault on at any moment of it?
        let judge = |what: &str, e: &Error| {
            assert!(
                only_unavailable(e),
                "{what} {name} failed, and not for want of a server: {e:?}"
            );
            assert!(
                faults.since(start),
                "{what} {name} failed while no fault was on: {e}"
            );
        };
        match roll {
            0..50 => {
                let len = if rng.gen_ratio(1, 20) {
                    8 << 20
                } else {
                    rng.gen_range(0..2 << 20)
                };
                let (path, data) = seeded_file(&mut rng, work.path(), "src", len);
                match client.put(&path, &name, &no_progress).await {
                    Ok(_) => {
                        puts += 1;
                        entry.0 = vec![Some(md5_of(&data))];
                    }
                    Err(e) => {
                        judge("PUT", &e);
                        excused += 1;
                        entry.0.push(Some(md5_of(&data)));
                    }
                }
            }
            50..85 => {
                let out = work.path().join("out");
                match client.get(&name, &out, &no_progress).await {
                    Ok(_) => {
                        let got = md5_of(&std::fs::read(&out).unwrap());
                        assert!(entry.0.contains(&Some(got)), "{name}: wrong bytes");
                        gets += 1;
                    }
                    Err(Error::NotFound { .. }) => {
                        assert!(entry.may_be_absent(), "{name}: acknowledged, not found");
                    }
                    Err(e) => {
                        judge("GET", &e);
                        excused += 1;
                    }
                }
            }
            _ => match client.delete(&name).await {
                Ok(_) => {
                    deletes += 1;
                    entry.0 = vec![None];
                }
                Err(Error::NotFound { .. }) => {
                    assert!(entry.may_be_absent(), "{name}: acknowledged, not found");
                }
                Err(e) => {
                    judge("DELETE", &e);
                    excused += 1;
                    entry.0.push(None);
                }
            },
        }
        if faults.since(start) {
            during_faults += 1;
        }
    }
    stop.store(true, SeqCst);
    let made = injector.await.unwrap();

    // Every server running again (the injector ends each fault it makes);
    // none panicked; then one last crash.
    let last = rng.gen_range(1..=4);
    {
        let mut c = cluster.lock().await;
        for i in 1..=4 {
            assert!(
                !c.log(i).contains("panicked"),
                "dfs{i} panicked:\n{}",
                c.log(i)
            );
        }
        c.kill(last);
        c.restart(last).await;
    }
    // No fault is on now: every read must work, and give an allowed state.
    let fresh = cluster.lock().await.login("alice").await;
    let mut present = 0;
    for (name, possible) in &model {
        let out = work.path().join("final");
        match fresh.get(name, &out, &no_progress).await {
            Ok(_) => {
                let got = md5_of(&std::fs::read(&out).unwrap());
                assert!(
                    possible.0.contains(&Some(got)),
                    "{name}: wrong bytes at the end"
                );
                present += 1;
            }
            Err(Error::NotFound { .. }) => {
                assert!(possible.may_be_absent(), "{name}: acknowledged, lost");
            }
            Err(e) => panic!("{name}: unreadable after the faults ended: {e}"),
        }
    }
    eprintln!(
        "chaos: {secs} s, faults {made:?}; {puts} PUTs, {gets} GETs and {deletes} DELETEs \
         done, {during_faults} operations during faults, {excused} of them failed as \
         unavailable; {present} files read back at the end, no wrong bytes"
    );
    // The run did something: writes, checked reads, every kind of fault.
    assert!(
        puts >= 10 && gets >= 10 && deletes >= 1,
        "too little work done"
    );
    for kind in [Fault::Kill, Fault::Stop, Fault::Crash] {
        assert!(
            made.get(&kind).copied().unwrap_or(0) >= 1,
            "no {kind:?} fault made"
        );
    }
    assert!(during_faults > 0, "no operation ran during a fault");
    assert!(present > 0, "nothing to read back at the end");
}

/// One minute of random faults (in CI): see [`chaos`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_a_minute_of_random_faults_never_loses_or_corrupts_a_byte() {
    chaos(60).await;
}

/// Ten minutes (or `CHAOS_SECS`) of the same, by hand:
/// `CHAOS_SECS=600 cargo test --release -- --ignored chaos --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute randomized run, by hand"]
async fn chaos_random_faults_never_lose_or_corrupt_a_byte() {
    let secs = std::env::var("CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    chaos(secs).await;
}
