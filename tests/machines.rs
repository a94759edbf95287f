//! Several machines, by the README (issue 14): servers on 127.0.0.2..127.0.0.5,
//! each in its own folder holding only what the README says to copy there
//! (its bundle from `dfs-server certs --host`: `ca.pem`, its own `.pem` and
//! `.key`, `cluster.key`; and `users.toml`). The authority's `ca.key` stays in
//! the authority's folder.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use ringdfs::cli::{Outcome, Style};
use ringdfs::client::{no_progress, Client};
use ringdfs::config::ClientConfig;
use ringdfs::protocol::{Request, Response, PROTOCOL_VERSION};
use ringdfs::ring::Id;

use crate::util::{chunk_files, random_file, wait_until, write_users, RawConn, USERS};

/// A free port on `ip`.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server's configuration as it lives on its own machine (paths relative
/// to the file), in the ring `ring` of (name, address).
fn config_text(name: &str, listen: &str, ring: &[(String, String)]) -> String {
    let mut text = format!(
        "name = \"{name}\"\nlisten = \"{listen}\"\ndata_dir = \"data\"\nusers = \"users.toml\"\n\
         cluster_key = \"cluster.key\"\ntls_dir = \"tls\"\nheal_interval_secs = 1\n\
         stabilize_ms = 200\nfailure_timeout_ms = 1000\n\n"
    );
    for (i, (member, addr)) in ring.iter().enumerate() {
        let id = Id::evenly_spaced(i as u32, ring.len() as u32);
        text.push_str(&format!(
            "[[ring]]\nname = \"{member}\"\naddr = \"{addr}\"\nid = \"{id}\"\n\n"
        ));
    }
    text
}

fn dfs_server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dfs-server"))
}

/// `dfs-server certs ARGS` in the authority's folder; panics with its output
/// if it fails.
fn certs(authority: &Path, args: &[&str]) {
    let out = dfs_server()
        .current_dir(authority)
        .args(["certs", "--servers", "servers", "--out", "bundles"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dfs-server certs {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sets up machine `dir` for server `name` as the README says: its bundle's
/// files and `users.toml`, and its configuration.
fn install(authority: &Path, dir: &Path, name: &str, config: &str) {
    let bundle = authority.join("bundles").join(name);
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    for file in [
        "ca.pem".to_string(),
        format!("{name}.pem"),
        format!("{name}.key"),
    ] {
        std::fs::copy(bundle.join(&file), dir.join("tls").join(&file)).unwrap();
    }
    std::fs::copy(bundle.join("cluster.key"), dir.join("cluster.key")).unwrap();
    std::fs::copy(authority.join("users.toml"), dir.join("users.toml")).unwrap();
    std::fs::write(dir.join(format!("{name}.toml")), config).unwrap();
}

/// The servers, killed when dropped.
struct Machines {
    dirs: Vec<PathBuf>,
    children: Vec<Option<Child>>,
}

impl Machines {
    fn start(&mut self, i: usize) {
        let dir = &self.dirs[i - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .unwrap();
        let child = dfs_server()
            .arg("--config")
            .arg(dir.join(format!("dfs{i}.toml")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i - 1] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dirs[i - 1].join("log")).unwrap_or_default()
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for i in 1..=self.children.len() {
            self.kill(i);
        }
    }
}

/// Every server up in one ring: each names the next as its successor.
async fn one_ring(client: &Client, names: &[&str]) -> bool {
    let _ = client.refresh_ring().await;
    let reports = client.status().await;
    reports.len() == names.len()
        && reports.iter().enumerate().all(|(i, r)| {
            r.state.as_ref().is_ok_and(|s| {
                s.successor.as_deref() == Some(names[(i + 1) % names.len()]) && s.down.is_empty()
            })
        })
}

/// alice's client, once a server answers (the processes were just
/// started: they may not listen yet).
async fn login(addrs: &[String], ca: &Path) -> Client {
    let mut config = ClientConfig::for_servers(addrs.to_vec());
    config.timeout_secs = 3;
    config.ca = ca.to_path_buf();
    let start = std::time::Instant::now();
    loop {
        match Client::login(&config, "alice", USERS[0].1).await {
            Ok(client) => return client,
            Err(_) if start.elapsed() < std::time::Duration::from_secs(30) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("alice cannot log in after 30 s: {e}"),
        }
    }
}

/// The authority's machine keeps every server's configuration (its own
/// paths do not matter: only its tls_dir and cluster_key are used).
fn write_authority_configs(authority: &Path, ring: &[(String, String)]) {
    for (name, addr) in ring {
        let text = config_text(name, addr, ring)
            .replace("tls_dir = \"tls\"", "tls_dir = \"../tls\"")
            .replace(
                "cluster_key = \"cluster.key\"",
                "cluster_key = \"../cluster.key\"",
            )
            .replace("users = \"users.toml\"", "users = \"../users.toml\"");
        std::fs::write(authority.join("servers").join(format!("{name}.toml")), text).unwrap();
    }
}

/// Four servers on 127.0.0.2..5, each in its own folder with its bundle,
/// started and in one ring; alice logged in. `root` keeps the folders.
struct Site {
    authority: PathBuf,
    ring: Vec<(String, String)>,
    machines: Machines,
    client: Client,
}

const NAMES: [&str; 4] = ["dfs1", "dfs2", "dfs3", "dfs4"];

/// Sets four machines up as the README says and starts them. With
/// `seed_everywhere`, each gets `users.toml`; without, only machine 1 (the
/// others learn the users from the ring).
async fn four_machines(root: &Path, seed_everywhere: bool) -> Site {
    let authority = root.join("authority");
    std::fs::create_dir_all(authority.join("servers")).unwrap();
    write_users(&authority, None);
    let ring: Vec<(String, String)> = (0..4)
        .map(|i| {
            let ip = format!("127.0.0.{}", i + 2);
            (NAMES[i].to_string(), format!("{ip}:{}", free_port(&ip)))
        })
        .collect();
    write_authority_configs(&authority, &ring);
    let mut args = Vec::new();
    for (name, addr) in &ring {
        args.push("--host".to_string());
        args.push(format!("{name}={}", addr.split(':').next().unwrap()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    certs(&authority, &args);
    let mut machines = Machines {
        dirs: (1..=4).map(|i| root.join(format!("machine{i}"))).collect(),
        children: (0..4).map(|_| None).collect(),
    };
    for (i, (name, addr)) in ring.iter().enumerate() {
        let dir = &machines.dirs[i];
        install(&authority, dir, name, &config_text(name, addr, &ring));
        if i > 0 && !seed_everywhere {
            std::fs::remove_file(dir.join("users.toml")).unwrap();
        }
        machines.start(i + 1);
    }
    let addrs: Vec<String> = ring.iter().map(|(_, a)| a.clone()).collect();
    let client = login(&addrs, &authority.join("tls").join("ca.pem")).await;
    wait_until(30, "the four servers form one ring", || {
        one_ring(&client, &NAMES)
    })
    .await;
    Site {
        authority,
        ring,
        machines,
        client,
    }
}

impl Site {
    fn ca(&self) -> PathBuf {
        self.authority.join("tls").join("ca.pem")
    }

    fn addr(&self, i: usize) -> std::net::SocketAddr {
        self.ring[i - 1].1.parse().unwrap()
    }

    /// A connection to server `i` alone, logged in as `user`, or `None` if
    /// the login is refused.
    async fn session(&self, i: usize, user: &str, password: &str) -> Option<RawConn> {
        let addr = self.addr(i);
        let config = ringdfs::tls::client_config_for_user(&self.ca()).unwrap();
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let stream = ringdfs::tls::connect(&config, &addr.to_string(), stream)
            .await
            .ok()?;
        let mut conn = RawConn::new(stream, addr.to_string());
        let hello = Request::Hello {
            version: PROTOCOL_VERSION,
        };
        conn.call(&hello).await.ok()?;
        let login = Request::Login {
            user: user.into(),
            password: password.into(),
        };
        match conn.call(&login).await {
            Ok(Response::LoggedIn { .. }) => Some(conn),
            _ => None,
        }
    }

    /// `dfs-server user ACTION NAME` run on machine `i` against its own
    /// server, with the password in DFS_PASSWORD.
    fn user(&self, i: usize, action: &str, name: &str, password: &str) {
        let dir = &self.machines.dirs[i - 1];
        let out = dfs_server()
            .current_dir(dir)
            .args(["user", action, name, "--config"])
            .arg(format!("dfs{i}.toml"))
            .env("DFS_PASSWORD", password)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dfs-server user {action} {name} on machine {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Four servers on four loopback addresses, each in its own folder with its
/// bundle only: the ring forms, PUT/GET/STATUS work, a `kill -9` and restart
/// heals; no machine but the authority's has `ca.key`, and no server made an
/// authority of its own. Then dfs4 moves to another address: `certs --renew
/// dfs4` gives it a certificate for it, and it is reachable there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_machines_by_the_readme_form_one_ring_and_a_renewed_certificate_follows_a_move() {
    let root = tempfile::tempdir().unwrap();
    let Site {
        authority,
        mut ring,
        mut machines,
        client,
    } = four_machines(root.path(), true).await;
    let ca = authority.join("tls").join("ca.pem");
    let mut addrs: Vec<String> = ring.iter().map(|(_, a)| a.clone()).collect();
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "one.bin", 300_000);
    let receipt = client.put(&path, "one.bin", &no_progress).await.unwrap();
    assert_eq!((receipt.copies, receipt.wanted), (8, 8));
    let out = work.path().join("out");
    client.get("one.bin", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data);

    // kill -9 of one; a PUT meanwhile is degraded; its return heals it.
    machines.kill(3);
    let (path, two) = random_file(work.path(), "two.bin", 200_000);
    let receipt = client.put(&path, "two.bin", &no_progress).await.unwrap();
    assert!(receipt.copies < receipt.wanted, "dfs3 is down: {receipt:?}");
    machines.start(3);
    wait_until(30, "two.bin healed after dfs3's return", || async {
        let _ = client.refresh_ring().await;
        client
            .list()
            .await
            .is_ok_and(|files| files.iter().all(|f| f.healthy()))
    })
    .await;
    client.get("two.bin", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == two);
    let authority_ca = std::fs::read(&ca).unwrap();
    for (i, dir) in machines.dirs.iter().enumerate() {
        assert!(
            !dir.join("tls/ca.key").exists(),
            "machine{} has ca.key",
            i + 1
        );
        assert_eq!(
            std::fs::read(dir.join("tls/ca.pem")).unwrap(),
            authority_ca,
            "dfs{}'s ca.pem was replaced:\n{}",
            i + 1,
            machines.log(i + 1)
        );
    }

    // dfs4 moves to 127.0.0.6: its certificate does not name that address
    // until `certs --renew dfs4` reissues it from its new configuration.
    machines.kill(4);
    let moved = format!("127.0.0.6:{}", free_port("127.0.0.6"));
    ring[3].1 = moved.clone();
    write_authority_configs(&authority, &ring);
    certs(&authority, &["--renew", "dfs4"]);
    install(
        &authority,
        &machines.dirs[3],
        "dfs4",
        &config_text("dfs4", &moved, &ring),
    );
    machines.start(4);
    addrs[3] = moved.clone();
    let client = login(&addrs, &ca).await;
    wait_until(
        30,
        "dfs4 reachable at its new address, in the ring",
        || async {
            one_ring(&client, &NAMES).await && client.ring().iter().any(|m| m.addr == moved)
        },
    )
    .await;
    client.get("one.bin", &out, &no_progress).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == data);
}

// ---------------------------------------------------------------------------
// Users are cluster state.

/// Users are the cluster's, not a file's: machines 2..4 have no
/// `users.toml` and learn the seed's users from the ring; a user added on
/// dfs1's machine logs in through dfs3 within 5 s; `passwd` on dfs2 ends
/// alice's sessions on every server; dfs4, down during that change, learns
/// it when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_added_or_changed_on_one_machine_reach_every_server() {
    let root = tempfile::tempdir().unwrap();
    let mut site = four_machines(root.path(), false).await;
    let alice = USERS[0].1;
    for i in 1..=4 {
        wait_until(
            30,
            &format!("dfs{i} knows alice (from the seed on dfs1)"),
            || async { site.session(i, "alice", alice).await.is_some() },
        )
        .await;
    }

    site.user(1, "add", "carol", "correct horse");
    wait_until(
        5,
        "carol, added on dfs1's machine, logs in through dfs3",
        || async { site.session(3, "carol", "correct horse").await.is_some() },
    )
    .await;

    let list = dfs_server()
        .current_dir(&site.machines.dirs[2])
        .args(["user", "list", "--config", "dfs3.toml"])
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("carol ") && l.ends_with(" on dfs1")),
        "user list on machine 3:\n{list}"
    );

    site.machines.kill(4);
    let mut open = Vec::new();
    for i in 1..=3 {
        let mut conn = site.session(i, "alice", alice).await.unwrap();
        assert!(matches!(
            conn.call(&Request::List).await,
            Ok(Response::Files { .. })
        ));
        open.push(conn);
    }
    site.user(2, "passwd", "alice", "a new wonderland");
    for (i, conn) in open.iter_mut().enumerate() {
        let i = i + 1;
        // The change reached every running server before the command
        // returned: no waiting.
        let after = conn.call(&Request::List).await;
        assert!(
            !matches!(after, Ok(Response::Files { .. })),
            "alice's session on dfs{i} from before passwd still lists"
        );
        assert!(
            site.session(i, "alice", alice).await.is_none(),
            "dfs{i} takes the old password"
        );
        assert!(
            site.session(i, "alice", "a new wonderland").await.is_some(),
            "dfs{i}"
        );
    }

    site.machines.start(4);
    // Watched through its user list, not by logging in: failed logins while
    // it has not heard yet would lock this address out (the back-off counts
    // failures per address too), and carol's login below with it.
    let users_on_4 = || {
        let out = dfs_server()
            .current_dir(&site.machines.dirs[3])
            .args(["user", "list", "--config", "dfs4.toml"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_until(
        30,
        "dfs4, down during passwd, learns it on its return",
        || async {
            users_on_4()
                .lines()
                .any(|l| l.starts_with("alice ") && l.ends_with(" on dfs2"))
        },
    )
    .await;
    assert!(site.session(4, "alice", "a new wonderland").await.is_some());
    assert!(site.session(4, "alice", alice).await.is_none());
    assert!(site.session(4, "carol", "correct horse").await.is_some());
}

// ---------------------------------------------------------------------------
// Honest status (issue 14): a server that cannot join the ring says why in
// its log, STATUS shows it outside the ring, the other three go on, and it
// deletes nothing.

/// Stores three files of four chunks (so every server holds copies) and
/// waits until every copy is in place; returns their contents by name.
async fn store_files(client: &Client, work: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for name in ["a.bin", "b.bin", "c.bin"] {
        let (path, data) = random_file(work, name, 300_000);
        let receipt = client.put(&path, name, &no_progress).await.unwrap();
        assert_eq!((receipt.copies, receipt.wanted), (8, 8), "{name}");
        files.push((name.to_string(), data));
    }
    files
}

/// The chunk copies machine `i`'s store holds of each file (it must be stopped).
/// Stops dfs2 and returns the copies it holds of `files` (at least three).
fn stop_dfs2_holding_copies(
    site: &mut Site,
    files: &[(String, Vec<u8>)],
) -> Vec<(String, Vec<(String, u32)>)> {
    site.machines.kill(2);
    let before = held(site, 2, files);
    let copies: usize = before.iter().map(|(_, h)| h.len()).sum();
    assert!(
        copies >= 3,
        "dfs2 should hold copies of each file: {before:?}"
    );
    before
}

fn held(site: &Site, i: usize, files: &[(String, Vec<u8>)]) -> Vec<(String, Vec<(String, u32)>)> {
    let data = site.machines.dirs[i - 1].join("data");
    files
        .iter()
        .map(|(name, _)| (name.clone(), chunk_files(&data, "alice", name)))
        .collect()
}

/// Lines of machine `i`'s log, after its first `from` bytes, that contain
/// every one of `words`.
fn log_lines(site: &Site, i: usize, from: usize, words: &[&str]) -> Vec<String> {
    let log = site.machines.log(i);
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .map(str::to_string)
        .collect()
}

/// STATUS as the `dfs` binary prints it (plain) and as `--json` gives it;
/// printed when it differs from the last one `seen`.
async fn status(client: &Client, seen: &Mutex<String>) -> (String, serde_json::Value) {
    let _ = client.refresh_ring().await;
    let outcome = Outcome::Status(client.status().await);
    let table = outcome.text(Style::PLAIN);
    let mut last = seen.lock().unwrap();
    if *last != table {
        println!("{table}\n");
        last.clone_from(&table);
    }
    (table, outcome.json())
}

/// Server `name`'s entry in the `--json` STATUS.
fn standing<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json.as_array()
        .unwrap()
        .iter()
        .find(|s| s["server"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

/// STATUS's line for server `name`.
fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{table}"))
}

/// The three healthy servers, seen from the `--json` STATUS: each in the ring.
fn others_in_ring(json: &serde_json::Value, outcast: &str) -> bool {
    let servers = json.as_array().unwrap();
    let others: Vec<_> = servers.iter().filter(|s| s["server"] != outcast).collect();
    others.len() == 3 && others.iter().all(|s| s["in_ring"] == true)
}

/// Waits until dfs1, dfs3 and dfs4 have each finished `rounds` more heal rounds.
async fn heal_rounds(client: &Client, rounds: u64) {
    let rounds_now = || async {
        client
            .status()
            .await
            .iter()
            .filter(|r| r.member.name != "dfs2")
            .map(|r| r.state.as_ref().map_or(0, |s| s.heal.rounds))
            .collect::<Vec<u64>>()
    };
    let start = rounds_now().await;
    assert_eq!(start.len(), 3, "{start:?}");
    wait_until(
        60,
        "three more heal rounds on the healthy servers",
        || async {
            let now = rounds_now().await;
            now.len() == 3 && now.iter().zip(&start).all(|(n, s)| *n >= s + rounds)
        },
    )
    .await;
}

/// The healthy three store and serve a new file, and the old ones still read back.
async fn others_keep_working(
    client: &Client,
    work: &Path,
    files: &[(String, Vec<u8>)],
) -> ringdfs::client::PutReceipt {
    let (path, data) = random_file(work, "d.bin", 300_000);
    let receipt = client.put(&path, "d.bin", &no_progress).await.unwrap();
    let out = work.join("out");
    for (name, bytes) in files.iter().chain([&("d.bin".to_string(), data)]) {
        client.get(name, &out, &no_progress).await.unwrap();
        assert!(
            std::fs::read(&out).unwrap() == *bytes,
            "{name} read back wrong"
        );
    }
    receipt
}

/// A server restarted with another ring's `cluster.key`: its log says, in
/// one line per peer, that the cluster keys differ; STATUS (and `--json`)
/// shows it alone, outside the ring; a PUT that gives it copies says they
/// are not all in one ring; the other three store and serve; and none of
/// the copies it held is deleted. With the ring's key back, it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_wrong_cluster_key_says_so_stays_out_of_the_ring_and_keeps_its_data() {
    let root = tempfile::tempdir().unwrap();
    let mut site = four_machines(root.path(), true).await;
    let work = tempfile::tempdir().unwrap();
    let files = store_files(&site.client, work.path()).await;

    let before = stop_dfs2_holding_copies(&mut site, &files);
    let key_file = site.machines.dirs[1].join("cluster.key");
    let ring_key = std::fs::read(&key_file).unwrap();
    std::fs::write(&key_file, format!("{}\n", "7".repeat(64))).unwrap();
    let from: Vec<usize> = (1..=4).map(|i| site.machines.log(i).len()).collect();
    site.machines.start(2);

    wait_until(30, "dfs2's log says its cluster key is wrong", || async {
        !log_lines(&site, 2, from[1], &["cannot reach", "wrong cluster key"]).is_empty()
    })
    .await;
    let seen = Mutex::new(String::new());
    wait_until(
        30,
        "STATUS shows dfs2 alone and the others in the ring",
        || async {
            let (table, json) = status(&site.client, &seen).await;
            row(&table, "dfs2").contains("alone")
                && standing(&json, "dfs2")["in_ring"] == false
                && others_in_ring(&json, "dfs2")
        },
    )
    .await;

    let receipt = others_keep_working(&site.client, work.path(), &files).await;
    let text = Outcome::Put {
        name: "d.bin".into(),
        receipt,
    }
    .text(Style::PLAIN);
    assert!(
        text.contains("not all in one ring") && text.contains("dfs2"),
        "a PUT with copies on dfs2 should say so: {text}"
    );
    println!("{text}");
    heal_rounds(&site.client, 3).await;

    // One line per peer, not one per attempt (several a second).
    for peer in ["dfs1", "dfs3", "dfs4"] {
        let lines = log_lines(&site, 2, from[1], &["cannot reach", peer]);
        assert!(
            lines.len() <= 1,
            "dfs2 repeats itself about {peer}: {lines:#?}"
        );
    }
    let seen = log_lines(
        &site,
        1,
        from[0],
        &["cannot reach", "dfs2", "wrong cluster key"],
    );
    assert_eq!(
        seen.len(),
        1,
        "dfs1 names dfs2 and the reason once: {seen:#?}"
    );
    println!("dfs2: {:#?}", log_lines(&site, 2, from[1], &["WARN"]));
    println!("dfs1: {seen:#?}");

    site.machines.kill(2);
    assert_eq!(held(&site, 2, &files), before, "dfs2 lost copies");
    std::fs::write(&key_file, ring_key).unwrap();
    site.machines.start(2);
    wait_until(30, "dfs2 back in one ring with its key", || {
        one_ring(&site.client, &NAMES)
    })
    .await;
}

/// A server given another authority's `ca.pem` (and a certificate from it,
/// so it starts): its log says the certificates do not match, once per
/// peer, and so do its peers'; STATUS shows it not in the ring; the other
/// three store and serve; and none of the copies it held is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_foreign_authority_says_so_stays_out_of_the_ring_and_keeps_its_data() {
    let root = tempfile::tempdir().unwrap();
    let mut site = four_machines(root.path(), true).await;
    let work = tempfile::tempdir().unwrap();
    let files = store_files(&site.client, work.path()).await;

    let before = stop_dfs2_holding_copies(&mut site, &files);
    // Another authority, as a second `dfs-server certs` elsewhere would make.
    let foreign = root.path().join("foreign");
    std::fs::create_dir_all(foreign.join("servers")).unwrap();
    std::fs::copy(
        site.authority.join("servers/dfs2.toml"),
        foreign.join("servers/dfs2.toml"),
    )
    .unwrap();
    std::fs::copy(
        site.authority.join("cluster.key"),
        foreign.join("cluster.key"),
    )
    .unwrap();
    let host = format!("dfs2={}", site.ring[1].1.split(':').next().unwrap());
    certs(&foreign, &["--host", &host]);
    for file in ["ca.pem", "dfs2.pem", "dfs2.key"] {
        std::fs::copy(
            foreign.join("bundles/dfs2").join(file),
            site.machines.dirs[1].join("tls").join(file),
        )
        .unwrap();
    }
    let from: Vec<usize> = (1..=4).map(|i| site.machines.log(i).len()).collect();
    site.machines.start(2);

    wait_until(
        30,
        "dfs2's log says the certificates do not match",
        || async { !log_lines(&site, 2, from[1], &["cannot reach", "bad certificate"]).is_empty() },
    )
    .await;
    wait_until(30, "dfs1's log names dfs2's certificate", || async {
        !log_lines(
            &site,
            1,
            from[0],
            &["cannot reach", "dfs2", "bad certificate"],
        )
        .is_empty()
    })
    .await;
    let seen = Mutex::new(String::new());
    wait_until(
        30,
        "STATUS shows dfs2 outside the ring, the others in it",
        || async {
            let (table, json) = status(&site.client, &seen).await;
            !row(&table, "dfs2").contains(" up")
                && standing(&json, "dfs2")["in_ring"] == false
                && others_in_ring(&json, "dfs2")
        },
    )
    .await;

    let receipt = others_keep_working(&site.client, work.path(), &files).await;
    assert!(
        receipt.copies < receipt.wanted,
        "dfs2 took copies: {receipt:?}"
    );
    heal_rounds(&site.client, 3).await;
    for peer in ["dfs1", "dfs3", "dfs4"] {
        let lines = log_lines(&site, 2, from[1], &["cannot reach", peer]);
        assert!(
            lines.len() <= 1,
            "dfs2 repeats itself about {peer}: {lines:#?}"
        );
    }
    println!("dfs2: {:#?}", log_lines(&site, 2, from[1], &["WARN"]));
    println!("dfs1: {:#?}", log_lines(&site, 1, from[0], &["WARN"]));
    site.machines.kill(2);
    assert_eq!(held(&site, 2, &files), before, "dfs2 lost copies");
}
