//! The interactive client, driven through a pseudo-terminal the way a person
//! types: login, every command, Tab, history, Ctrl-C during a GET and during
//! a PUT, Ctrl-D; and `dfs local`, which starts the servers first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use ringdfs::client::no_progress;
use ringdfs::protocol::Version;

use crate::util::{random_file, tree, version_in_file_name, Cluster, ProcCluster};

const PROMPT: &str = "alice@ringdfs [4/4]> ";

/// `dfs` on a pseudo-terminal, with its own HOME (for the history file).
fn spawn_dfs(config: &Path, home: &Path) -> PtySession {
    spawn_dfs_with(config, home, |_| {})
}

/// `dfs --config CONFIG` on a pseudo-terminal, with its own HOME and
/// nothing from the environment of whoever runs the tests; `more` adds to
/// the command (arguments, a working folder).
fn spawn_dfs_with(config: &Path, home: &Path, more: impl FnOnce(&mut Command)) -> PtySession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dfs"));
    more(&mut command);
    command
        .arg("--config")
        .arg(config)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("XDG_STATE_HOME")
        .env_remove("DFS_PASSWORD")
        .env_remove("DFS_USER")
        .env_remove("RUST_LOG");
    let options = Options::new()
        .timeout_ms(Some(30_000))
        .strip_ansi_escape_codes(true);
    spawn_with_options(command, options).unwrap()
}

/// Types `keys` without a newline.
fn send(p: &mut PtySession, keys: &str) {
    p.send(keys).unwrap();
    p.flush().unwrap();
}

/// Answers the user and password prompts as alice.
fn type_login(p: &mut PtySession, password: &str) {
    p.exp_string("user: ").unwrap();
    p.send_line("alice").unwrap();
    p.exp_string("password: ").unwrap();
    p.send_line(password).unwrap();
}

fn login(p: &mut PtySession) {
    type_login(p, "wonderland");
    let shown = p.exp_string(PROMPT).unwrap();
    assert!(!shown.contains("wonderland"), "the password was echoed");
}

/// Types `line`, expects each of `answers` in order, then the prompt.
fn type_and_expect(p: &mut PtySession, line: &str, answers: &[&str]) {
    p.send_line(line).unwrap();
    for answer in answers {
        p.exp_string(answer).unwrap();
    }
    p.exp_string(PROMPT).unwrap();
}

fn leave(mut p: PtySession) {
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    let status = p.process().wait().unwrap();
    assert!(
        matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
}

/// README, Commands: a person logs in (after one wrong password) and types
/// every command of the table, aliases too: `put`, `get`, `list`, `ls -l`,
/// `ls`, `where`, `verify` (all files, one, and one with a damaged copy),
/// `status`, `help`, `delete`, `rm`, then `exit`; each answers as
/// documented, mistakes get one line, and `exit` ends the session with
/// status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_logs_in_runs_every_command_and_leaves() {
    // VERIFY itself must find the copy damaged below: the background scrub
    // would otherwise race it and set the copy aside first.
    let cluster = Cluster::start_tuned(4, |c| c.store.scrub_bytes_per_sec = 0).await;
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (local, data) = random_file(work.path(), "notes.txt", 5000);
    // Big enough that its chunks are files (see util::test_tuning).
    let (other, _) = random_file(work.path(), "other.bin", 100_000);
    let back = work.path().join("back.txt");
    let home_path = home.path().to_path_buf();
    let data_dirs: Vec<PathBuf> = (1..=4).map(|i| cluster.data_dir(i)).collect();

    tokio::task::spawn_blocking(move || {
        let mut p = spawn_dfs(&config, &home_path);
        // A bad login first, then a good one (three tries are allowed).
        type_login(&mut p, "not-her-password");
        p.exp_string("login failed: unknown user or wrong password")
            .unwrap();
        login(&mut p);

        type_and_expect(
            &mut p,
            &format!("PUT {} \"my notes.txt\"", local.display()),
            &["stored my notes.txt: 4.9 KiB in 4 chunks, 8 copies"],
        );
        type_and_expect(
            &mut p,
            &format!("put {}", other.display()),
            &["stored other.bin: 97.7 KiB in 4 chunks, 8 copies"],
        );

        for list in ["list", "ls -l"] {
            p.send_line(list).unwrap();
            p.exp_regex(r"NAME\s+SIZE\s+CHUNKS\s+STORED \(UTC\)\s+HEALTH")
                .unwrap();
            p.exp_regex(r"my notes\.txt\s+4\.9 KiB\s+4\s+\S+ \S+\s+ok")
                .unwrap();
            p.exp_regex(r"other\.bin\s+97\.7 KiB\s+4\s+\S+ \S+\s+ok")
                .unwrap();
            p.exp_string(PROMPT).unwrap();
        }
        // Plain `ls`: the names only.
        type_and_expect(&mut p, "ls", &["my notes.txt\r\nother.bin\r\n"]);

        p.send_line("where \"my notes.txt\"").unwrap();
        p.exp_string("FIRST COPY").unwrap();
        p.exp_regex(r"4\s+1\.2 KiB\s+dfs\d ok\s+dfs\d ok").unwrap();
        p.exp_string(PROMPT).unwrap();

        p.send_line("verify").unwrap();
        p.exp_regex(r"my notes\.txt\s+healthy").unwrap();
        p.exp_regex(r"other\.bin\s+healthy").unwrap();
        p.exp_string("2 of 2 files healthy").unwrap();
        p.exp_string(PROMPT).unwrap();
        type_and_expect(&mut p, "VERIFY 'my notes.txt'", &["1 of 1 file healthy"]);
        // A copy damaged on disk: VERIFY at the prompt calls the file corrupt
        // and names the copy (it is repaired in the background).
        let second = crate::util::holders("alice", "other.bin", 2, 4)[1];
        let copy = crate::util::chunk_file(&data_dirs[second - 1], "alice", "other.bin", 2)
            .expect("the second holder's copy of chunk 2");
        let mut bytes = std::fs::read(&copy).unwrap();
        bytes[0] ^= 0x40;
        std::fs::write(&copy, bytes).unwrap();
        p.send_line("verify other.bin").unwrap();
        p.exp_regex(r"other\.bin\s+corrupt").unwrap();
        p.exp_string(&format!("chunk 2 on dfs{second}: corrupt"))
            .unwrap();
        p.exp_string("0 of 1 file healthy").unwrap();
        p.exp_string(PROMPT).unwrap();

        p.send_line("status").unwrap();
        p.exp_regex(r"4\s+dfs4\s+[0-9a-f]{8}\s+25\.0 %\s+127\.0\.0\.1:\d+\s+up\s+dfs1")
            .unwrap();
        p.exp_string(PROMPT).unwrap();

        type_and_expect(
            &mut p,
            &format!("get 'my notes.txt' {}", back.display()),
            &["fetched 4.9 KiB and verified every chunk"],
        );

        // HELP names every command with its arguments.
        type_and_expect(
            &mut p,
            "help",
            &[
                "put LOCAL [REMOTE]",
                "get REMOTE [LOCAL]",
                "list [FOLDER] [-R]",
                "ls [FOLDER] [-l] [-R]",
                "cd [FOLDER]",
                "pwd",
                "delete REMOTE",
                "where REMOTE",
                "verify [REMOTE]",
                "status",
                "help",
                "exit",
                "rm = delete",
            ],
        );

        // Mistakes get one line each, and the prompt comes back.
        for (line, error) in [
            (
                "frobnicate",
                "error: unknown command \"frobnicate\"; type HELP for the list",
            ),
            ("put", "error: usage: PUT LOCAL [REMOTE]"),
            ("get nosuch.txt", "error: no such file: nosuch.txt"),
        ] {
            type_and_expect(&mut p, line, &[error]);
        }

        type_and_expect(&mut p, "rm 'my notes.txt'", &["deleted my notes.txt"]);
        type_and_expect(&mut p, "delete other.bin", &["deleted other.bin"]);
        type_and_expect(&mut p, "list", &["no files"]);
        type_and_expect(&mut p, "get other.bin", &["error: no such file: other.bin"]);

        p.send_line("exit").unwrap();
        p.exp_eof().unwrap();
        let status = p.process().wait().unwrap();
        assert!(
            matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
        assert_eq!(std::fs::read(&back).unwrap(), data);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_completes_remote_names_and_history_is_recalled() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, data) = random_file(work.path(), "src", 3000);
    client
        .put(&local, "holiday photo.jpg", &no_progress)
        .await
        .unwrap();
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let downloads = cluster.dir.path().join("downloads");

    tokio::task::spawn_blocking(move || {
        let mut p = spawn_dfs(&config, &home_path);
        login(&mut p);
        // Tab completes the remote name, quoted because of its space.
        send(&mut p, "get hol");
        send(&mut p, "\t");
        p.exp_string("get 'holiday photo.jpg' ").unwrap();
        send(&mut p, "\r");
        p.exp_string("fetched 2.9 KiB").unwrap();
        p.exp_string(PROMPT).unwrap();
        assert_eq!(
            std::fs::read(downloads.join("holiday photo.jpg")).unwrap(),
            data
        );
        std::fs::remove_file(downloads.join("holiday photo.jpg")).unwrap();

        // Up-arrow recalls the last line.
        send(&mut p, "\x1b[A");
        p.exp_string("get 'holiday photo.jpg'").unwrap();
        send(&mut p, "\r");
        p.exp_string("fetched 2.9 KiB").unwrap();
        p.exp_string(PROMPT).unwrap();
        leave(p);

        // History survives the session, and never holds the password.
        let history =
            std::fs::read_to_string(home_path.join(".local/state/ringdfs/history-alice")).unwrap();
        assert!(history.contains("get 'holiday photo.jpg'"), "{history}");
        assert!(!history.contains("wonderland"));
        let mut p = spawn_dfs(&config, &home_path);
        login(&mut p);
        send(&mut p, "\x1b[A");
        p.exp_string("get 'holiday photo.jpg'").unwrap();
        p.send_control('c').unwrap(); // clears the line
        p.exp_string(PROMPT).unwrap();
        leave(p);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_large_get_and_leaves_nothing() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, _) = random_file(work.path(), "big", 400 << 20);
    client.put(&local, "big.bin", &no_progress).await.unwrap();
    std::fs::remove_file(&local).unwrap();
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().to_path_buf();

    tokio::task::spawn_blocking(move || {
        let mut p = spawn_dfs(&config, &home_path);
        login(&mut p);
        p.send_line(&format!(
            "get big.bin {}",
            out_path.join("big.bin").display()
        ))
        .unwrap();
        // The progress bar shows the rate once bytes flow; then Ctrl-C.
        p.exp_string("MiB/s").unwrap();
        p.send_control('c').unwrap();
        p.exp_string("error: cancelled").unwrap();
        p.exp_string(PROMPT).unwrap();
        assert!(tree(&out_path).is_empty(), "{:?}", tree(&out_path));
        // The client is still usable.
        p.send_line("ls").unwrap();
        p.exp_string("big.bin").unwrap();
        p.exp_string(PROMPT).unwrap();
        leave(p);
    })
    .await
    .unwrap();
}

/// The prompt, whatever the ring's health shows.
const ANY_PROMPT: &str = r"alice@ringdfs \[[^\]]*\]> ";

/// The chunk files (`<version>.<chunk>`) of alice's `name` on a server,
/// but for those of version `keep`. Large chunks (these tests' are) are
/// files, found on disk beside the running server (which has its database
/// to itself).
fn chunk_files_besides(data_dir: &Path, name: &str, keep: Option<Version>) -> Vec<String> {
    let keep = keep.map(|v| format!("{}.", version_in_file_name(v)));
    let mut files: Vec<String> = tree(&ringdfs::store::file_dir(data_dir, "alice", name))
        .into_iter()
        .map(|f| f.display().to_string())
        .filter(|f| keep.as_ref().is_none_or(|k| !f.starts_with(k.as_str())))
        .collect();
    files.sort();
    files
}

/// Waits (up to `secs`) until no server among `data_dirs` holds a chunk file
/// of `name` other than version `keep`, nor any temp file; panics naming
/// what is left.
fn wait_for_no_leftovers(data_dirs: &[PathBuf], name: &str, keep: Option<Version>, secs: u64) {
    let leftovers = || {
        let mut left = Vec::new();
        for (i, dir) in data_dirs.iter().enumerate() {
            for f in chunk_files_besides(dir, name, keep) {
                left.push(format!("dfs{}: {name} {f}", i + 1));
            }
            for f in tree(&dir.join("tmp")) {
                left.push(format!("dfs{}: tmp/{}", i + 1, f.display()));
            }
        }
        left
    };
    let start = std::time::Instant::now();
    loop {
        let left = leftovers();
        if left.is_empty() {
            eprintln!(
                "no leftovers of the cancelled PUT after {:?}",
                start.elapsed()
            );
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(secs),
            "{secs} s after the cancel, the servers still hold {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// README, Keys: "Ctrl-C cancels a running transfer (nothing half-done is
/// left, locally or remotely) and returns to the prompt". Ctrl-C during a
/// large PUT of a new name: the prompt returns and works, LIST does not show
/// the name, no server keeps a chunk or a temp file of it (within 30 s), and
/// locally there is still just the source file, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_a_large_put_and_leaves_nothing_locally_or_remotely() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let work = tempfile::tempdir().unwrap();
    let (local, data) = random_file(work.path(), "big", 400 << 20);
    let data_dirs: Vec<PathBuf> = (1..=4).map(|i| cluster.data_dir(i)).collect();
    let work_path = work.path().to_path_buf();
    let downloads = cluster.dir.path().join("downloads");

    tokio::task::spawn_blocking(move || {
        let mut p = spawn_dfs(&config, &home_path);
        login(&mut p);
        p.send_line(&format!("put {} fresh.bin", local.display()))
            .unwrap();
        // The progress bar shows the rate once bytes flow; then Ctrl-C.
        p.exp_string("MiB/s").unwrap();
        p.send_control('c').unwrap();
        p.exp_string("error: cancelled").unwrap();
        p.exp_string(PROMPT).unwrap();
        p.send_line("list").unwrap();
        p.exp_string("no files").unwrap();
        p.exp_string(PROMPT).unwrap();
        leave(p);

        wait_for_no_leftovers(&data_dirs, "fresh.bin", None, 30);
        assert_eq!(tree(&work_path), [PathBuf::from("big")]);
        assert!(std::fs::read(&local).unwrap() == data, "the source changed");
        assert!(tree(&downloads).is_empty(), "{:?}", tree(&downloads));
    })
    .await
    .unwrap();
}

/// Ctrl-C during a PUT that has already stored some chunks on their
/// servers. One server hangs (SIGSTOP) once the PUT is streaming, so the
/// chunks it does not hold are stored while the others wait for it (for up
/// to the client timeout); Ctrl-C then. The prompt returns, the
/// older version of the name is still the one listed and read, and no
/// server keeps a chunk of the cancelled version (within 30 s, the hung one
/// included once it resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_put_that_stored_some_chunks_leaves_none_of_them_and_the_older_version_intact(
) {
    let cluster = ProcCluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (v1_path, v1) = random_file(work.path(), "v1", 8 << 20);
    client
        .put(&v1_path, "kept.bin", &no_progress)
        .await
        .unwrap();
    let old = client.stat("kept.bin").await.unwrap().version;
    // 40 MiB chunks: far more than the hung server can have taken when it
    // is stopped, as soon as the progress bar shows the PUT under way.
    let (v2_path, _) = random_file(work.path(), "v2", 160 << 20);
    let data_dirs: Vec<PathBuf> = (1..=4).map(|i| cluster.data_dir(i)).collect();
    // dfs2 will hang: the chunks it does not hold, on their two holders each,
    // are what the PUT stores before it waits (ring positions are dfs1..dfs4).
    let hung = 2;
    let stored_first: Vec<(usize, u32)> = (1..=4)
        .filter(|&c| !crate::util::holders("alice", "kept.bin", c, 4).contains(&hung))
        .flat_map(|c| {
            crate::util::holders("alice", "kept.bin", c, 4)
                .into_iter()
                .map(move |s| (s, c))
        })
        .collect();
    assert_eq!(stored_first.len(), 4, "{stored_first:?}");

    // The prompt's client waits 10 s for a silent server: the window in
    // which the other chunks are stored and the hung holder's are not. (A
    // server hung before the PUT began would cost it one timeout at its
    // first request and then be left out: the PUT would finish degraded.)
    let mut base = cluster.client_config();
    let config = work.path().join("client.toml");
    let servers: Vec<String> = base.servers.iter().map(|s| format!("{s:?}")).collect();
    base.ca = std::fs::canonicalize(&base.ca).unwrap();
    std::fs::write(
        &config,
        format!(
            "servers = [{}]\ndownload_dir = \"downloads\"\ntimeout_secs = 10\nca = {:?}\n",
            servers.join(", "),
            base.ca.display().to_string()
        ),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let out = work.path().join("out");
    let cluster = Arc::new(cluster);

    let session = tokio::task::spawn_blocking({
        let cluster = Arc::clone(&cluster);
        let data_dirs = data_dirs.clone();
        move || {
            let mut p = spawn_dfs(&config, &home_path);
            type_login(&mut p, "wonderland");
            p.exp_regex(ANY_PROMPT).unwrap();
            p.send_line(&format!("put {} kept.bin", v2_path.display()))
                .unwrap();
            // The bar: the PUT is streaming.
            p.exp_regex(r"/160(\.\d+)? MiB").unwrap();
            cluster.signal(hung, "STOP");
            let start = std::time::Instant::now();
            let landed = || {
                stored_first.iter().all(|&(server, chunk)| {
                    chunk_files_besides(&data_dirs[server - 1], "kept.bin", Some(old))
                        .iter()
                        .any(|f| f.ends_with(&format!(".{chunk}")))
                })
            };
            while !landed() {
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(60),
                    "the chunks without a hung holder were never stored"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            p.send_control('c').unwrap();
            p.exp_string("error: cancelled").unwrap();
            p.exp_regex(ANY_PROMPT).unwrap();
            cluster.signal(hung, "CONT");
            p.send_line("list").unwrap();
            p.exp_regex(r"kept\.bin\s+8\.0 MiB").unwrap();
            p.exp_regex(ANY_PROMPT).unwrap();
            p.send_line(&format!("get kept.bin {}", out.display()))
                .unwrap();
            p.exp_string("fetched 8.0 MiB and verified every chunk")
                .unwrap();
            p.exp_regex(ANY_PROMPT).unwrap();
            leave(p);
            assert!(std::fs::read(&out).unwrap() == v1, "GET gave other bytes");
            wait_for_no_leftovers(&data_dirs, "kept.bin", Some(old), 30);
        }
    });
    let result = session.await;
    // Whatever happened, the hung server must run again before the cluster stops.
    cluster.signal(hung, "CONT");
    result.unwrap();
    assert_eq!(client.stat("kept.bin").await.unwrap().version, old);
}

/// A copy of the shipped layout in `root` (servers/, client/, users.toml,
/// data/) whose four servers listen on `ports` instead of 7101..7104.
fn local_layout(root: &Path, ports: &[u16]) {
    for dir in ["servers", "client", "data"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(shipped.join("users.toml"), root.join("users.toml")).unwrap();
    // The shipped ids, so dfs1..dfs4 keep their ring order.
    let ids = ["1", "5", "9", "d"];
    let ring: String = ports
        .iter()
        .zip(ids)
        .enumerate()
        .map(|(i, (port, id))| {
            format!(
                "[[ring]]\nname = \"dfs{}\"\naddr = \"127.0.0.1:{port}\"\nid = \"{id}\"\n\n",
                i + 1
            )
        })
        .collect();
    for (i, port) in ports.iter().enumerate() {
        let n = i + 1;
        std::fs::write(
            root.join(format!("servers/dfs{n}.toml")),
            format!(
                "name = \"dfs{n}\"\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"../data/dfs{n}\"\n\
                 users = \"../users.toml\"\ncluster_key = \"../data/cluster.key\"\n\
                 tls_dir = \"../data/tls\"\n\n{ring}"
            ),
        )
        .unwrap();
    }
    let servers: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    std::fs::write(
        root.join("client/config.toml"),
        format!(
            "servers = [{}]\ndownload_dir = \"files\"\ntimeout_secs = 5\nca = \"../data/tls/ca.pem\"\n",
            servers.join(", ")
        ),
    )
    .unwrap();
}

/// Processes other than this one whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != me)
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// README, Quick start: `dfs local` starts dfs1..dfs4 from a servers folder
/// (here a copy of the shipped one on free ports, so 7101..7104 are never
/// touched), makes the certificates, and opens the prompt; PUT, LIST, GET
/// (into the client's download folder) and STATUS work against those
/// servers; `exit` stops all four (each logs its stop, nothing answers on
/// their ports any more), the command exits 0, and no process is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dfs_local_starts_four_servers_and_exit_stops_them() {
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_path_buf();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let (local, data) = random_file(home.path(), "src.bin", 300_000);

    let ports = tokio::task::spawn_blocking(move || {
        let root = root_path;
        // The ports are picked free and released before `dfs local` binds
        // them, so another process may take one first: then pick others.
        let mut started = None;
        for _ in 0..3 {
            let probes: Vec<std::net::TcpListener> = (0..4)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            let ports: Vec<u16> = probes
                .iter()
                .map(|p| p.local_addr().unwrap().port())
                .collect();
            drop(probes);
            local_layout(&root, &ports);
            let mut p = spawn_dfs_with(&root.join("client/config.toml"), &home_path, |c| {
                c.arg("local")
                    .arg("--servers")
                    .arg(root.join("servers"))
                    .current_dir(&root);
            });
            let (_, said) = p
                .exp_regex(r"started 4 servers \([^)]*\)|cannot listen on \S+")
                .unwrap();
            if said.starts_with("cannot listen") {
                eprintln!("{said}: taken meanwhile; trying other ports");
                p.exp_eof().unwrap();
                continue;
            }
            for (i, port) in ports.iter().enumerate() {
                let listed = format!("dfs{} on 127.0.0.1:{port}", i + 1);
                assert!(said.contains(&listed), "{said}");
            }
            started = Some((p, ports));
            break;
        }
        let (mut p, ports) = started.expect("no free ports in 3 tries");
        login(&mut p);
        p.send_line(&format!("put {} local.bin", local.display()))
            .unwrap();
        p.exp_string("stored local.bin: 293.0 KiB in 4 chunks, 8 copies")
            .unwrap();
        p.exp_string(PROMPT).unwrap();
        p.send_line("list").unwrap();
        p.exp_regex(r"local\.bin\s+293\.0 KiB\s+4\s+\S+ \S+\s+ok")
            .unwrap();
        p.exp_string(PROMPT).unwrap();
        p.send_line("get local.bin").unwrap();
        p.exp_string("fetched 293.0 KiB and verified every chunk")
            .unwrap();
        p.exp_string(PROMPT).unwrap();
        assert!(std::fs::read(root.join("client/files/local.bin")).unwrap() == data);
        p.send_line("status").unwrap();
        for (i, port) in ports.iter().enumerate() {
            p.exp_regex(&format!(
                r"dfs{}\s+[0-9a-f]{{8}}\s+25\.0 %\s+127\.0\.0\.1:{port}\s+up",
                i + 1
            ))
            .unwrap();
        }
        p.exp_string(PROMPT).unwrap();
        p.send_line("exit").unwrap();
        p.exp_eof().unwrap();
        let status = p.process().wait().unwrap();
        assert!(
            matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
        ports
    })
    .await
    .unwrap();

    // Every server stopped, logged it, and let go of its port.
    let log = std::fs::read_to_string(root.path().join("data/dfs-local.log")).unwrap();
    for (i, port) in ports.iter().enumerate() {
        let name = format!("dfs{}", i + 1);
        assert!(
            log.lines()
                .any(|l| l.contains(" stopped") && l.contains(&format!("server={name}"))),
            "{name} did not log its stop: {log}"
        );
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let connect =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2));
        assert!(connect.is_err(), "something still answers on {addr}");
        // The servers kept their data in the copy, not in the project.
        let mine = root.path().join(format!("data/{name}/users/alice"));
        assert!(mine.is_dir(), "{} missing", mine.display());
    }
    assert!(root.path().join("data/tls/ca.pem").is_file());
    let left = processes_mentioning(&root.path().display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_shows_which_server_is_down() {
    let mut cluster = Cluster::start(4).await;
    cluster.stop(2).await;
    // The other three first close their ring (until then, STATUS and the
    // prompt rightly show a server that is its own successor as alone).
    let client = cluster.login("alice").await;
    crate::util::wait_until(30, "dfs1, dfs3 and dfs4 in one ring", || async {
        let reports = client.status().await;
        let in_ring = reports
            .iter()
            .filter(|r| r.standing == Some(ringdfs::standing::Standing::InRing))
            .count();
        // dfs1 has also found dfs2 gone and linked to dfs3: until then it
        // may be its own successor for a moment (alone).
        let relinked = reports.iter().any(|r| {
            r.member.name == "dfs1"
                && r.state
                    .as_ref()
                    .is_ok_and(|s| s.successor.as_deref() == Some("dfs3"))
        });
        in_ring == 3 && relinked
    })
    .await;
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut p = spawn_dfs(&config, &home_path);
        type_login(&mut p, "wonderland");
        p.exp_string("alice@ringdfs [3/4 dfs2 down]> ").unwrap();
        p.send_line("status").unwrap();
        p.exp_regex(r"2\s+dfs2\s+[0-9a-f]{8}\s+25\.0 %\s+127\.0\.0\.1:\d+\s+DOWN")
            .unwrap();
        p.exp_string("alice@ringdfs [3/4 dfs2 down]> ").unwrap();
        leave(p);
    })
    .await
    .unwrap();
}

/// README, Commands and Keys: `cd` moves the current folder, which the
/// prompt shows beside the ring's health (at the top, the prompt is as it
/// always was); Tab completes remote names folder by folder, relative to
/// the current folder (`get do<Tab>` gives `docs/`, then that folder's
/// entries; `..` works; `cd` offers folders only), and a file stored at the
/// prompt a moment ago completes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_shows_the_folder_and_tab_completes_folder_by_folder() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (local, data) = random_file(work.path(), "src", 3000);
    for name in [
        "top.txt",
        "docs/plan.txt",
        "docs/2026/jan.txt",
        "photos/cat.jpg",
    ] {
        client.put(&local, name, &no_progress).await.unwrap();
    }
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let downloads = cluster.dir.path().join("downloads");
    const IN_2026: &str = "alice@ringdfs:/docs/2026 [4/4]> ";

    tokio::task::spawn_blocking(move || {
        let mut p = spawn_dfs(&config, &home_path);
        login(&mut p);
        send(&mut p, "get do\t");
        p.exp_string("get docs/").unwrap();
        send(&mut p, "p\t");
        p.exp_string("get docs/plan.txt ").unwrap();
        send(&mut p, "\r");
        p.exp_string("fetched 2.9 KiB").unwrap();
        p.exp_string(PROMPT).unwrap();

        // `cd` completes folders, and the prompt shows where it went.
        send(&mut p, "cd do\t");
        p.exp_string("cd docs/").unwrap();
        send(&mut p, "2\t");
        p.exp_string("cd docs/2026/").unwrap();
        send(&mut p, "\r");
        p.exp_string(IN_2026).unwrap();
        send(&mut p, "get ../p\t");
        p.exp_string("get ../plan.txt ").unwrap();
        send(&mut p, "\r");
        p.exp_string("fetched 2.9 KiB").unwrap();
        p.exp_string(IN_2026).unwrap();
        send(&mut p, "get ../../t\t");
        p.exp_string("get ../../top.txt ").unwrap();
        send(&mut p, "\r");
        p.exp_string("fetched 2.9 KiB").unwrap();
        p.exp_string(IN_2026).unwrap();
        send(&mut p, "get \t");
        p.exp_string("get jan.txt ").unwrap();
        p.send_control('c').unwrap();
        p.exp_string(IN_2026).unwrap();

        // A file stored here completes at once (the folder is listed again).
        p.send_line(&format!("put {} feb.txt", local.display()))
            .unwrap();
        p.exp_string("stored docs/2026/feb.txt").unwrap();
        p.exp_string(IN_2026).unwrap();
        send(&mut p, "get f\t");
        p.exp_string("get feb.txt ").unwrap();
        send(&mut p, "\r");
        p.exp_string("fetched 2.9 KiB").unwrap();
        p.exp_string(IN_2026).unwrap();

        type_and_expect(&mut p, "cd", &[]);
        leave(p);
        for file in ["plan.txt", "top.txt", "feb.txt"] {
            assert_eq!(std::fs::read(downloads.join(file)).unwrap(), data, "{file}");
        }
    })
    .await
    .unwrap();
}

/// The local side at the prompt (issue 16): `lcd` moves where local names
/// start, `lpwd` and `lls` show it, `~` is the home folder; `help COMMAND`
/// and `COMMAND --help` show one command with an example; Tab completes
/// `lcd`'s folder and command aliases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lcd_lls_lpwd_tilde_and_help_for_one_command() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let work = home.path().join("work");
    std::fs::create_dir_all(work.join("inner")).unwrap();
    let (_, data) = random_file(&work, "notes.txt", 3000);
    let (_, at_home) = random_file(home.path(), "top.txt", 100);
    let client = cluster.login("alice").await;

    tokio::task::spawn_blocking(move || {
        let mut p = spawn_dfs(&config, &home_path);
        login(&mut p);
        type_and_expect(&mut p, "lcd ~/work", &[work.to_str().unwrap()]);
        type_and_expect(&mut p, "lpwd", &[work.to_str().unwrap()]);
        type_and_expect(&mut p, "lls", &["inner/", "notes.txt"]);
        // Relative local names start in the local folder; ~ at home.
        type_and_expect(&mut p, "put notes.txt", &["stored notes.txt"]);
        type_and_expect(&mut p, "put ~/top.txt", &["stored top.txt"]);
        type_and_expect(&mut p, "get notes.txt inner/", &["fetched"]);
        type_and_expect(&mut p, "lcd /no/such/folder", &["lcd /no/such/folder: "]);
        type_and_expect(&mut p, "lpwd", &[work.to_str().unwrap()]);
        type_and_expect(
            &mut p,
            "help mv",
            &["usage: MV OLD NEW", "also: move, rename", "example: mv "],
        );
        type_and_expect(
            &mut p,
            "get --help",
            &["usage: GET REMOTE [LOCAL]", "example: get "],
        );
        type_and_expect(&mut p, "help frob", &["no command \"frob\""]);
        // Tab: an alias completes like a name; lcd completes local folders.
        send(&mut p, "downl\t");
        p.exp_string("download ").unwrap();
        send(&mut p, "notes.txt again.txt\r");
        p.exp_string("fetched").unwrap();
        p.exp_string(PROMPT).unwrap();
        send(&mut p, "lcd inn\t");
        p.exp_string("lcd inner/").unwrap();
        send(&mut p, "\r");
        p.exp_string(work.join("inner").to_str().unwrap()).unwrap();
        p.exp_string(PROMPT).unwrap();
        leave(p);
        assert_eq!(std::fs::read(work.join("inner/notes.txt")).unwrap(), data);
        assert_eq!(std::fs::read(work.join("again.txt")).unwrap(), data);
    })
    .await
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let back = work.path().join("top.txt");
    client.get("top.txt", &back, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(back).unwrap(), at_home);
}
