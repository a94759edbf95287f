//! Faults an unlucky operator meets (issue 12): a hung server, a full disk,
//! a closed pipe, a log written to a file, a target the client cannot write,
//! a read that fails once (strace injecting EIO into a running server).
//!
//! Hung servers are real `dfs-server` processes under SIGSTOP; a full disk is
//! a small tmpfs mounted in a private mount namespace over one server's data
//! folder (or over the client's download folder), which needs root and
//! `unshare`: without them those tests print why and return. The bounds on
//! time here are bounds on the number of client timeouts a command waits
//! out, never on speed: one timeout is 3 s, and "less than two timeouts"
//! leaves the command a whole timeout of slack.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use ringdfs::cli::{Outcome, Style};
use ringdfs::client::no_progress;

use crate::util::{
    dfs_as_alice, seed, seeded_file, tree, wait_until, Cluster, Launched, ProcCluster, USERS,
};

/// The client timeout of these tests' `dfs` commands.
const TIMEOUT_SECS: u64 = 3;

/// A client configuration file for the `dfs` binary in `dir`, naming every
/// server of `cluster`, with a [`TIMEOUT_SECS`] timeout and downloads in
/// `dir/downloads`.
fn write_config(cluster: &ProcCluster, dir: &Path) -> PathBuf {
    let config = cluster.client_config();
    let servers: Vec<String> = config.servers.iter().map(|s| format!("{s:?}")).collect();
    let path = dir.join("client.toml");
    let text = format!(
        "servers = [{}]\ndownload_dir = \"downloads\"\ntimeout_secs = {TIMEOUT_SECS}\nca = {:?}\n",
        servers.join(", "),
        config.ca.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `dfs ARGS` as alice with configuration `config`, HOME in `home`;
/// returns its output and how long it ran.
fn dfs(config: &Path, home: &Path, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = dfs_as_alice(config, home, USERS[0].1)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, started.elapsed())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One hung server (SIGSTOP: it accepts connections and never answers) costs
/// a one-shot `dfs get` or `dfs put` one client timeout, not one per step
/// (login, Stat, chunk, commit): each finishes in less than two timeouts.
/// GET reads the hung first holder's chunk from its other holder; PUT stores
/// the file degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hung_server_costs_a_one_shot_get_or_put_less_than_two_timeouts() {
    let mut rng = StdRng::seed_from_u64(seed("one_hung_server_costs"));
    let cluster = ProcCluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let config = write_config(&cluster, work.path());
    let timeout = Duration::from_secs(TIMEOUT_SECS);
    let client = cluster.login("alice").await;
    let (path, data) = seeded_file(&mut rng, work.path(), "f", 1 << 20);
    client.put(&path, "f", &no_progress).await.unwrap();
    // Ring positions are server numbers: the ids put dfs1..dfs4 in order.
    let victim = crate::util::holders("alice", "f", 1, 4)[0];
    cluster.signal(victim, "STOP");

    let target = work.path().join("got");
    let (out, took) = dfs(
        &config,
        work.path(),
        &["get", "f", target.to_str().unwrap()],
    );
    eprintln!("dfs get with dfs{victim} hung took {took:?}");
    assert!(out.status.success(), "dfs get: {}", text(&out.stderr));
    assert!(std::fs::read(&target).unwrap() == data, "wrong bytes");
    assert!(
        took < 2 * timeout,
        "dfs get with dfs{victim} hung took {took:?}: it waited out two client timeouts \
         ({timeout:?} each) or more"
    );

    let (out, took) = dfs(&config, work.path(), &["put", path.to_str().unwrap(), "g"]);
    eprintln!("dfs put with dfs{victim} hung took {took:?}");
    let said = text(&out.stdout);
    assert!(out.status.success(), "dfs put: {}", text(&out.stderr));
    assert!(
        said.contains(&format!("degraded until dfs{victim} is back")),
        "{said}"
    );
    assert!(
        took < 2 * timeout,
        "dfs put with dfs{victim} hung took {took:?}: it waited out two client timeouts \
         ({timeout:?} each) or more"
    );
    cluster.signal(victim, "CONT");
}

/// A holder that hangs in the middle of a PUT (it stops reading what is
/// sent to it) costs the PUT one client timeout: the PUT goes on with the
/// other holders, stores the file degraded, and does not wait for the hung
/// server again to commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_hung_mid_put_costs_it_less_than_two_timeouts() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    let mut rng = StdRng::seed_from_u64(seed("a_holder_hung_mid_put"));
    let cluster = ProcCluster::start(4).await;
    let mut config = cluster.client_config();
    config.timeout_secs = TIMEOUT_SECS;
    let timeout = config.timeout();
    let client = ringdfs::client::Client::login(&config, "alice", USERS[0].1)
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    // 16 MiB chunks: far more than socket buffers hold, so the hung
    // server stops the sending long before its chunks are through.
    let (path, _) = seeded_file(&mut rng, work.path(), "big", 64 << 20);
    let victim = crate::util::holders("alice", "big", 1, 4)[0];
    let pid = cluster.pid(victim);
    let stopped = AtomicBool::new(false);
    let stop_on_first_block = |delta: i64| {
        if delta > 0 && !stopped.swap(true, SeqCst) {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is
            // a child of this process, not yet reaped.
            assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) }, 0);
        }
    };
    let started = Instant::now();
    let put = client.put(&path, "big", &stop_on_first_block);
    let result = tokio::time::timeout(4 * timeout, put).await;
    let took = started.elapsed();
    eprintln!("PUT with dfs{victim} hung mid-transfer took {took:?}");
    assert!(stopped.load(SeqCst), "the PUT moved no data");
    let receipt = result
        .unwrap_or_else(|_| {
            panic!(
                "PUT still not done {:?} after dfs{victim} hung",
                4 * timeout
            )
        })
        .unwrap();
    assert_eq!(receipt.missing, [format!("dfs{victim}")]);
    assert!(
        took < 2 * timeout,
        "PUT with dfs{victim} hung mid-transfer took {took:?}: it waited out two client \
         timeouts ({timeout:?} each) or more"
    );
    cluster.signal(victim, "CONT");
}

/// With every server hung, a command fails with a clear one-line reason
/// after one client timeout, not one per configured server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_server_hung_a_command_fails_in_less_than_two_timeouts() {
    let cluster = ProcCluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let config = write_config(&cluster, work.path());
    let timeout = Duration::from_secs(TIMEOUT_SECS);
    for i in 1..=4 {
        cluster.signal(i, "STOP");
    }
    let (out, took) = dfs(&config, work.path(), &["list"]);
    eprintln!("dfs list with every server hung took {took:?}");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unavailable"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    assert!(
        took < 2 * timeout,
        "dfs list with every server hung took {took:?}: it waited out two client \
         timeouts ({timeout:?} each) or more"
    );
    for i in 1..=4 {
        cluster.signal(i, "CONT");
    }
}

/// A GET whose target cannot be written names the target the user gave,
/// never the hidden temp file beside it (`.ringdfs-….part`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_that_cannot_write_names_the_target_not_a_temp_file() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed("a_get_that_cannot_write"));
    let (path, _) = seeded_file(&mut rng, work.path(), "f", 100_000);
    client.put(&path, "f", &no_progress).await.unwrap();
    let target = work.path().join("no-such-folder").join("out");
    let e = client
        .get("f", &target, &no_progress)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&target.display().to_string()), "{e}");
    assert!(!e.contains(".ringdfs-") && !e.contains(".part"), "{e}");
    assert!(!target.exists());
}

/// `dfs … | head -1`: a reader that closes the pipe ends `dfs` quietly (as
/// `ls` or `cat` end: status 0, 141 or SIGPIPE), without a panic, for a
/// one-shot command (text and JSON) and for commands read from stdin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_dfs_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed("a_closed_stdout"));
    let (path, _) = seeded_file(&mut rng, work.path(), "f", 1000);
    client.put(&path, "f", &no_progress).await.unwrap();
    let mut checked = 0;
    for (args, stdin) in [
        (&["list"][..], ""),
        (&["--json", "list"][..], ""),
        (&[][..], "list\nlist\n"),
    ] {
        // A pipe whose reader is gone before `dfs` writes a byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut command = dfs_as_alice(&config, work.path(), USERS[0].1);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(writer)
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        drop(command); // the parent's copy of the pipe's writer
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        let quiet = out.status.success()
            || out.status.code() == Some(141)
            || out.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet, "dfs {args:?} ended with {}: {err}", out.status);
        assert!(!err.contains("panicked"), "dfs {args:?}: {err}");
        checked += 1;
    }
    assert_eq!(checked, 3);
}

/// A server whose log goes to a file (not a terminal) writes no ANSI colour
/// codes into it, even without `NO_COLOR`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_logging_to_a_file_writes_no_colour_codes() {
    let mut cluster = ProcCluster::configure(1, None);
    let launched = cluster.launch_via(1, &["env", "-u", "NO_COLOR"]);
    cluster.wait_listening(1, &launched).await;
    let log = cluster.said_since(1, &launched);
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in the log file:\n{log:?}"
    );
}

// ---------------------------------------------------------------------------
// A full disk: a small tmpfs in a private mount namespace (root only).

/// Whether this process may mount a tmpfs in a private mount namespace
/// (root, with `unshare`); prints why not when it may not.
fn can_mount_tmpfs(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{test}: skipped: mounting a small disk needs root");
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let tried = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=1m tmpfs \"$0\"")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .output();
    match tried {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "{test}: skipped: cannot mount a tmpfs in a private mount namespace: {}",
                text(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("{test}: skipped: cannot run unshare: {e}");
            false
        }
    }
}

/// The program and arguments that run a command with a `size` tmpfs
/// mounted on `dir`, seen only by that command (and gone with it).
fn on_small_disk(dir: &Path, size: &str) -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &format!("mount -t tmpfs -o size={size} tmpfs \"$0\" && exec \"$@\""),
        dir.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `path` as process `pid` sees it (through its mount namespace).
fn as_seen_by(pid: u32, path: &Path) -> PathBuf {
    Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap())
}

/// Writes zeros into `path` until its disk is full, then frees `spare`
/// bytes of them.
fn fill(path: &Path, spare: u64) {
    let mut file = std::fs::File::create(path).unwrap();
    for block in [1 << 20, 4096] {
        let zeros = vec![0u8; block];
        loop {
            match file.write_all(&zeros) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(spare)).unwrap();
}

/// Lines of `log` that say a disk had no space, in any words.
fn no_space_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.to_lowercase().contains("no space"))
        .collect()
}

/// The STATUS table's row of `server`.
fn status_row(table: &str, server: &str) -> String {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(server))
        .unwrap_or_else(|| panic!("no row for {server}:\n{table}"))
        .to_string()
}

/// A server whose disk is full is not an outage: the PUT receipt says
/// `dfs2: no space left` (not "until dfs2 is back"), dfs2 logs it once (not
/// once per heal round), STATUS shows it, and once space is freed dfs2 says
/// so once and heals its copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_as_no_space_logged_once_shown_and_healed_once_freed() {
    const TEST: &str = "a_full_disk_is_reported_as_no_space";
    if !can_mount_tmpfs(TEST) {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed(TEST));
    let full = 2;
    let mut cluster = ProcCluster::configure(4, None);
    let disk = cluster.data_dir(full);
    std::fs::create_dir_all(&disk).unwrap();
    let wrapper = on_small_disk(&disk, "16m");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let launched: Vec<Launched> = (1..=4)
        .map(|i| {
            if i == full {
                cluster.launch_via(i, &wrapper)
            } else {
                cluster.launch(i)
            }
        })
        .collect();
    for (i, l) in (1..=4).zip(&launched) {
        cluster.wait_listening(i, l).await;
    }
    // Full: 128 KiB left, less than a chunk (a little room for the metadata
    // database's small writes).
    let filler = as_seen_by(cluster.pid(full), &disk).join("filler");
    fill(&filler, 128 << 10);

    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    // 4 chunks of 256 KiB (files, not database rows): two of them on dfs2.
    let (path, data) = seeded_file(&mut rng, work.path(), "f", 1 << 20);
    let receipt = client.put(&path, "f", &no_progress).await.unwrap();
    let said = Outcome::Put {
        name: "f".into(),
        receipt: receipt.clone(),
    }
    .text(Style::PLAIN);
    eprintln!("{said}");
    assert_eq!((receipt.copies, receipt.wanted), (6, 8), "{said}");
    assert!(
        said.contains(&format!("dfs{full}: no space left")),
        "{said}"
    );
    assert!(!said.contains("is back"), "{said}");

    // The servers were only just started: until the ring has formed STATUS
    // may show dfs2 alone, and then it shows the full disk.
    let start = std::time::Instant::now();
    loop {
        let table = Outcome::Status(client.status().await).text(Style::PLAIN);
        if status_row(&table, &format!("dfs{full}")).contains("no space") {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "STATUS does not say dfs{full} is full:\n{table}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Heal rounds go by (dfs1's, as a clock): dfs2 has said it once.
    let start_rounds = heal_rounds(&client, 1).await;
    wait_until(30, "dfs1 runs 6 more heal rounds", || async {
        heal_rounds(&client, 1).await >= start_rounds + 6
    })
    .await;
    let log = cluster.log(full);
    let lines = no_space_lines(&log);
    assert_eq!(lines.len(), 1, "dfs{full} said it is full not once:\n{log}");

    std::fs::remove_file(&filler).unwrap();
    wait_until(60, "dfs2 heals its copies once space is freed", || async {
        client
            .locate("f")
            .await
            .is_ok_and(|l| l.chunks.iter().flatten().all(|c| c.present == Some(true)))
    })
    .await;
    let table = Outcome::Status(client.status().await).text(Style::PLAIN);
    let row = status_row(&table, &format!("dfs{full}"));
    assert!(!row.contains("no space"), "still shown full:\n{table}");
    let log = cluster.log(full);
    assert_eq!(no_space_lines(&log).len(), 1, "{log}");
    assert!(
        log.contains("room again"),
        "dfs{full} did not say it has room:\n{log}"
    );
    let out = work.path().join("out");
    client.get("f", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data, "wrong bytes");
}

/// Heal rounds server `i` has finished, as STATUS says.
async fn heal_rounds(client: &ringdfs::client::Client, i: usize) -> u64 {
    client.status().await[i - 1]
        .state
        .as_ref()
        .map_or(0, |s| s.heal.rounds)
}

/// A GET that runs out of local disk names the target the user gave (never
/// the temp file beside it), says why, and is not blamed on the servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_onto_a_full_local_disk_names_the_target() {
    const TEST: &str = "a_get_onto_a_full_local_disk";
    if !can_mount_tmpfs(TEST) {
        return;
    }
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed(TEST));
    let (path, _) = seeded_file(&mut rng, work.path(), "big", 4 << 20);
    client.put(&path, "big", &no_progress).await.unwrap();
    let downloads = cluster.dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let template = dfs_as_alice(&config, work.path(), USERS[0].1);
    let wrapper = on_small_disk(&downloads, "1m");
    let mut command = Command::new(&wrapper[0]);
    command.args(&wrapper[1..]).arg(template.get_program());
    command.args(template.get_args()).args(["get", "big"]);
    for (key, value) in template.get_envs() {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    let out = command.stdin(Stdio::null()).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let target = downloads.join("big").display().to_string();
    assert!(err.contains(&target), "{err}");
    assert!(err.contains("No space left"), "{err}");
    assert!(
        !err.contains(".ringdfs-") && !err.contains(".part"),
        "{err}"
    );
    assert!(!err.contains("unavailable"), "blamed on the servers: {err}");
}

// ---------------------------------------------------------------------------
// A transient read error: one EIO, made by strace's syscall fault injection.

/// Every server's copies (volumes and chunk files) of what `cluster` stores.
fn stored_files(dir: &Path) -> Vec<PathBuf> {
    tree(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "vol") || p.starts_with("users"))
        .map(|p| dir.join(p))
        .collect()
}

/// strace attached to a server: the first `read` or `pread64` of each of its
/// threads on one of `paths` fails with EIO (once per thread), as a flaky
/// disk's would. [`Injector::detach`] detaches.
struct Injector {
    child: std::process::Child,
    out: PathBuf,
}

impl Injector {
    /// Attaches to `pid`; `None` (with a line saying why) without strace.
    fn attach(test: &str, pid: u32, paths: &[PathBuf], out: PathBuf) -> Option<Injector> {
        let mut command = Command::new("strace");
        command.args(["-f", "-o"]).arg(&out);
        command.args(["-e", "trace=read,pread64"]);
        command.args(["-e", "inject=read,pread64:error=EIO:when=1"]);
        for path in paths {
            command.arg("-P").arg(path);
        }
        command.args(["-p", &pid.to_string()]);
        let mut child = match command.stderr(Stdio::piped()).spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!("{test}: skipped: cannot run strace (apt-get install strace): {e}");
                return None;
            }
        };
        // strace says "Process N attached with M threads" once it has them all.
        let mut said = std::io::BufReader::new(child.stderr.take().unwrap());
        let (mut line, mut all) = (String::new(), String::new());
        while !line.contains("attached") {
            line.clear();
            if std::io::BufRead::read_line(&mut said, &mut line).unwrap() == 0 {
                // It may not trace here (no ptrace in this container, say).
                let _ = child.wait();
                eprintln!(
                    "{test}: skipped: strace cannot attach to pid {pid}: {}",
                    all.trim()
                );
                return None;
            }
            all.push_str(&line);
        }
        // Keep draining what strace says, so it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut said, &mut std::io::sink()));
        Some(Injector { child, out })
    }

    /// Detaches, and returns how many reads it failed.
    fn detach(mut self) -> usize {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap();
        let trace = std::fs::read_to_string(&self.out).unwrap_or_default();
        trace.lines().filter(|l| l.contains("(INJECTED)")).count()
    }
}

/// One failed read of a good copy (EIO from the disk, once) is read again,
/// not taken for damage: the GET gets the right bytes, and no server sets a
/// copy aside in quarantine/. Both kinds of copy: chunks packed in volumes
/// (a 16 KiB file's) and chunk files (a 1 MiB file's, trailer and blocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transient_read_error_does_not_quarantine_a_good_copy() {
    const TEST: &str = "one_transient_read_error";
    let mut rng = StdRng::seed_from_u64(seed(TEST));
    let cluster = ProcCluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let client = cluster.login("alice").await;
    let mut files = Vec::new();
    for (name, len) in [("small", 16 << 10), ("large", 1 << 20)] {
        let (path, data) = seeded_file(&mut rng, work.path(), name, len);
        client.put(&path, name, &no_progress).await.unwrap();
        files.push((name, data));
    }

    let mut injectors = Vec::new();
    for i in 1..=4 {
        let paths = stored_files(&cluster.data_dir(i));
        let out = work.path().join(format!("strace-dfs{i}.txt"));
        match Injector::attach(TEST, cluster.pid(i), &paths, out) {
            Some(injector) => injectors.push(injector),
            None => return,
        }
    }
    for (name, data) in &files {
        let target = work.path().join(format!("{name}.got"));
        client.get(name, &target, &no_progress).await.unwrap();
        assert!(
            std::fs::read(&target).unwrap() == *data,
            "{name}: wrong bytes"
        );
    }
    let failed: usize = injectors.into_iter().map(Injector::detach).sum();
    assert!(failed > 0, "strace failed no read: the test tested nothing");
    eprintln!("{TEST}: {failed} reads failed with EIO once");

    for i in 1..=4 {
        let quarantine = cluster.data_dir(i).join("quarantine");
        let set_aside: Vec<_> = std::fs::read_dir(&quarantine)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            set_aside.is_empty(),
            "dfs{i} quarantined a good copy after one failed read: {set_aside:?}\n{}",
            cluster.log(i)
        );
    }
}
