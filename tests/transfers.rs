//! Many files at once through the real `dfs` binary: `put -r`/`get -r` of
//! whole folders (in parallel, a summary naming every failure) and
//! wildcards in `put`, `get`, `rm`, `ls` as sftp matches them, with quoting
//! turning them off.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

use crate::util::{dfs_as_alice, names, run_with_stdin, seed, Cluster};

/// `dfs` as alice with `args`, fed `stdin`; HOME beside `config`.
fn dfs(config: &Path, args: &[&str], stdin: &str) -> Output {
    let home = config.parent().unwrap().join("home");
    let mut command = dfs_as_alice(config, &home, "wonderland");
    command.args(args);
    run_with_stdin(command, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `dfs --json ARGS` and reads its one JSON object; it must succeed.
fn json_of(config: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = dfs(config, &all, "");
    assert!(
        out.status.success(),
        "dfs {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `diff -r a b`: the real one. Panics with its output unless identical.
fn assert_same_tree(a: &Path, b: &Path) {
    let out = std::process::Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .expect("diff is installed");
    assert!(
        out.status.success(),
        "diff -r {} {}:\n{}{}",
        a.display(),
        b.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Writes a tree of 500 files in 3 levels under `root`: 20 at the top of
/// it, 24 in each of 20 folders two levels down; sizes from 0 bytes to a
/// few MB; one name with a space, and two empty folders. Returns the
/// number of files and their bytes.
fn write_tree(root: &Path, rng: &mut rand::rngs::StdRng) -> (usize, u64) {
    let (mut files, mut bytes) = (0, 0u64);
    let mut write = |path: &Path, rng: &mut rand::rngs::StdRng| {
        let len = match files % 50 {
            0 => 0,
            7 if files < 200 => rng.gen_range(2_000_000..4_000_000),
            _ => rng.gen_range(1..20_000),
        };
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        std::fs::write(path, &data).unwrap();
        files += 1;
        bytes += len as u64;
    };
    std::fs::create_dir_all(root).unwrap();
    for i in 0..20 {
        let name = if i == 3 {
            "my photo 3.jpg".to_string()
        } else {
            format!("top-{i}.dat")
        };
        write(&root.join(name), rng);
    }
    for a in ["alpha", "beta", "gamma", "delta", "eps"] {
        for b in 0..4 {
            let dir = root.join(a).join(format!("2024-0{b}"));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..24 {
                write(&dir.join(format!("f{f:02}.bin")), rng);
            }
        }
    }
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("beta").join("nothing here")).unwrap();
    (files, bytes)
}

/// Done-when 1: `put -r` then `get -r` of 500 files in 3 levels (sizes
/// from 0 bytes to MBs, a space in a name, empty folders) gives a tree
/// `diff -r` finds identical, and more than one file was moving at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_r_then_get_r_of_500_files_is_identical_and_parallel() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("transfers_500"));
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let photos = work.path().join("photos");
    let (files, bytes) = write_tree(&photos, &mut rng);
    assert_eq!(files, 500);

    // Like sftp: `put -r photos` makes `photos/...` in the current folder.
    let put = json_of(&config, &["put", "-r", photos.to_str().unwrap()]);
    assert_eq!(put["files"], 500, "{put}");
    assert_eq!(put["total"], 500, "{put}");
    assert_eq!(put["bytes"], bytes, "{put}");
    assert_eq!(put["failed"], serde_json::json!([]), "{put}");
    assert_eq!(put["folders"], 2, "the two empty folders: {put}");
    let parallel = put["parallel"].as_u64().unwrap();
    assert!(parallel > 1, "one file at a time: {put}");

    let client = cluster.login("alice").await;
    let stored = names(&client).await;
    assert_eq!(stored.len(), 500);
    assert!(
        stored.iter().all(|n| n.starts_with("photos/")),
        "{stored:?}"
    );
    assert!(stored.contains(&"photos/my photo 3.jpg".to_string()));

    // `get -r photos INTO` with INTO a folder: INTO/photos, as sftp does.
    let into = work.path().join("back");
    std::fs::create_dir(&into).unwrap();
    let get = json_of(&config, &["get", "-r", "photos", into.to_str().unwrap()]);
    assert_eq!(get["files"], 500, "{get}");
    assert_eq!(get["failed"], serde_json::json!([]), "{get}");
    assert!(get["parallel"].as_u64().unwrap() > 1, "{get}");
    assert_same_tree(&photos, &into.join("photos"));
}

/// Small files go in batches (see `Client::put_small_files`); with a
/// server down a batch is refused whole, and `put -r` stores each of its
/// files on its own, degraded: every file arrives and reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_r_of_small_files_with_a_server_down_stores_every_file() {
    let mut cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("notes");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..90usize {
        std::fs::write(
            src.join(format!("n{i:02}.txt")),
            vec![b'a' + (i % 26) as u8; i * 37],
        )
        .unwrap();
    }
    cluster.stop(3).await;
    let put = json_of(&config, &["put", "-r", src.to_str().unwrap()]);
    assert_eq!(put["files"], 90, "{put}");
    assert_eq!(put["failed"], serde_json::json!([]), "{put}");
    let back = work.path().join("back");
    let get = json_of(&config, &["get", "-r", "notes", back.to_str().unwrap()]);
    assert_eq!(get["files"], 90, "{get}");
    assert_same_tree(&src, &back);
}

/// `put -r DIR REMOTE` stores DIR as REMOTE when REMOTE does not exist, and
/// inside it (REMOTE/DIR) when it is a folder; `get -r` likewise locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_r_and_get_r_go_into_an_existing_folder_as_sftp_does() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"a").unwrap();
    std::fs::write(src.join("sub/b.txt"), b"bb").unwrap();
    let src_arg = src.to_str().unwrap();

    json_of(&config, &["put", "-r", src_arg, "backup"]);
    json_of(&config, &["put", "-r", src_arg, "backup"]);
    let client = cluster.login("alice").await;
    let mut stored = names(&client).await;
    stored.sort();
    assert_eq!(
        stored,
        [
            "backup/a.txt",
            "backup/src/a.txt",
            "backup/src/sub/b.txt",
            "backup/sub/b.txt"
        ]
    );

    let fresh = work.path().join("fresh");
    json_of(
        &config,
        &["get", "-r", "backup/src", fresh.to_str().unwrap()],
    );
    assert_same_tree(&src, &fresh);
    json_of(
        &config,
        &["get", "-r", "backup/src", fresh.to_str().unwrap()],
    );
    assert_same_tree(&src, &fresh.join("src"));
}

/// A file the store refuses (its name ends in a space) fails alone: the
/// other files arrive, the exit status is 1, and the summary names it; a
/// symbolic link and a FIFO are skipped, and said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_file_in_put_r_is_named_and_the_rest_arrive() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("docs");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..12 {
        std::fs::write(src.join(format!("ok-{i}.txt")), vec![b'x'; 1000 * i]).unwrap();
    }
    std::fs::write(src.join("bad "), b"refused").unwrap();
    std::os::unix::fs::symlink(src.join("ok-1.txt"), src.join("link")).unwrap();
    let fifo = src.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());

    let out = dfs(&config, &["put", "-r", src.to_str().unwrap()], "");
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}{}", text(&out.stderr));
    let bad = src.join("bad ");
    assert!(
        said.contains(&format!("failed {}: ", bad.display())),
        "{said}"
    );
    assert!(said.contains("stored 12 of 13 files"), "{said}");
    assert!(
        said.contains(&format!("1 file failed: {}", bad.display())),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "skipped {}: a symbolic link",
            src.join("link").display()
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("skipped {}: not a regular file", fifo.display())),
        "{said}"
    );

    let client = cluster.login("alice").await;
    let stored: BTreeSet<String> = names(&client).await.into_iter().collect();
    let wanted: BTreeSet<String> = (0..12).map(|i| format!("docs/ok-{i}.txt")).collect();
    assert_eq!(stored, wanted);
}

/// Done-when 5: wildcards in `put`, `get`, `rm` and `ls` match what sftp
/// matches (`*` and `?` not across `/` nor a leading `.`; sets; a pattern
/// in a folder), a quoted or escaped `*` is the literal name, a pattern
/// that matches nothing is an error naming it, and several matches need a
/// folder to go into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_as_sftp_does_and_quotes_turn_them_off() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("photos")).unwrap();
    for name in [
        "a.pdf",
        "b.pdf",
        ".hidden.pdf",
        "c.txt",
        "star*name",
        "starXname",
        "photos/2024-01.jpg",
        "photos/2024-02.jpg",
        "photos/2023-12.jpg",
    ] {
        std::fs::write(src.join(name), name.as_bytes()).unwrap();
    }
    let client = cluster.login("alice").await;
    let stored = || async {
        let mut n = names(&client).await;
        n.sort();
        n
    };

    // put: local patterns, each match stored under its own name.
    let script = format!(
        "lcd {}\nput *.pdf\nmkdir pics\nput photos/2024-* pics\nput 'star*name'\n",
        shell_words::quote(src.to_str().unwrap())
    );
    let out = dfs(&config, &[], &script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        stored().await,
        [
            "a.pdf",
            "b.pdf",
            "pics/2024-01.jpg",
            "pics/2024-02.jpg",
            "star*name"
        ]
    );
    // The escaped and the bare forms, one-shot and at the prompt.
    let out = dfs(
        &config,
        &[],
        &format!("lcd {}\nput star\\*name quoted\nput .h*\n", src.display()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = dfs(&config, &["put", &format!("{}/starX*", src.display())], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        stored().await,
        [
            ".hidden.pdf",
            "a.pdf",
            "b.pdf",
            "pics/2024-01.jpg",
            "pics/2024-02.jpg",
            "quoted",
            "star*name",
            "starXname"
        ]
    );

    // ls: `*` skips the leading dot, `.*` does not; a set, `?`, a folder.
    let ls = |pattern: &str| {
        let out = dfs(&config, &["ls", pattern], "");
        assert!(out.status.success(), "ls {pattern}: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(ls("*.pdf"), ["a.pdf", "b.pdf"]);
    assert_eq!(ls(".*"), [".hidden.pdf"]);
    assert_eq!(ls("[ab].pdf"), ["a.pdf", "b.pdf"]);
    assert_eq!(ls("[!a]*.pdf"), ["b.pdf"]);
    assert_eq!(
        ls("pics/2024-0?.jpg"),
        ["pics/2024-01.jpg", "pics/2024-02.jpg"]
    );
    assert_eq!(ls("*/2024-02*"), ["pics/2024-02.jpg"]);
    assert_eq!(ls("star\\*name"), ["star*name"]);
    assert_eq!(ls("star*name"), ["star*name", "starXname"]);
    // One folder matched: its entries, as sftp lists it.
    assert_eq!(ls("pi*"), ["2024-01.jpg", "2024-02.jpg"]);

    // Nothing matched: an error naming the pattern.
    let out = dfs(&config, &["ls", "*.zip"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "dfs: nothing matches *.zip\n");

    // get: several matches go into a folder, and need one.
    let dest = work.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let out = dfs(&config, &["get", "*.pdf", dest.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut got: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["a.pdf", "b.pdf"]);
    let out = dfs(
        &config,
        &["get", "*.pdf", dest.join("one.pdf").to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("*.pdf matches 2 entries, but"),
        "{}",
        text(&out.stderr)
    );
    let out = dfs(
        &config,
        &["put", &format!("{}/*.pdf", src.display()), "quoted"],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("matches 2 files, but /quoted is not a folder"),
        "{}",
        text(&out.stderr)
    );

    // rm: a quoted `*` removes the one literal name only.
    let out = dfs(&config, &[], "rm 'star*name'\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "dfs> rm 'star*name'\ndeleted star*name\n"
    );
    let out = dfs(&config, &[], "rm *.pdf\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "dfs> rm *.pdf\ndeleted a.pdf\ndeleted b.pdf\n"
    );
    assert_eq!(
        stored().await,
        [
            ".hidden.pdf",
            "pics/2024-01.jpg",
            "pics/2024-02.jpg",
            "quoted",
            "starXname"
        ]
    );
}

/// At the prompt, `put -r` draws one display for the whole transfer (files
/// done of all, with a line per file moving) and ends with the summary;
/// the folder lands in the current remote folder, and `get -r` brings it
/// back identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_r_at_the_prompt_shows_one_display_and_lands_in_the_current_folder() {
    use rexpect::reader::Options;
    use rexpect::session::spawn_with_options;

    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("big");
    std::fs::create_dir_all(src.join("inner")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed("transfers_prompt"));
    for i in 0..4 {
        let mut data = vec![0u8; 6_000_000];
        rng.fill_bytes(&mut data);
        std::fs::write(src.join(format!("part-{i}.bin")), &data).unwrap();
        std::fs::write(src.join("inner").join(format!("small-{i}.txt")), b"small").unwrap();
    }
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dfs"));
    command
        .arg("--config")
        .arg(&config)
        .args(["--user", "alice"])
        .env("DFS_PASSWORD", "wonderland")
        .env("HOME", work.path())
        .env("NO_COLOR", "1")
        .env_remove("XDG_STATE_HOME")
        .env_remove("DFS_USER")
        .env_remove("RUST_LOG");
    let options = Options::new()
        .timeout_ms(Some(60_000))
        .strip_ansi_escape_codes(true);
    let mut p = spawn_with_options(command, options).unwrap();
    p.exp_string("alice@ringdfs [4/4]> ").unwrap();
    p.send_line("mkdir docs").unwrap();
    p.exp_string("alice@ringdfs [4/4]> ").unwrap();
    p.send_line("cd docs").unwrap();
    p.exp_string("alice@ringdfs:/docs [4/4]> ").unwrap();
    p.send_line(&format!("put -r {}", src.display())).unwrap();
    // The whole transfer's line, then a file's own line while it moves.
    p.exp_string("/8 files").unwrap();
    p.exp_string("part-").unwrap();
    p.exp_string("stored 8 of 8 files").unwrap();
    p.exp_string("alice@ringdfs:/docs [4/4]> ").unwrap();

    let back = work.path().join("back");
    p.send_line(&format!("get -r big {}", back.display()))
        .unwrap();
    p.exp_string("fetched 8 of 8 files").unwrap();
    p.exp_string("alice@ringdfs:/docs [4/4]> ").unwrap();
    p.send_control('d').unwrap();
    p.exp_eof().unwrap();
    assert_same_tree(&src, &back);

    let client = cluster.login("alice").await;
    let mut stored = names(&client).await;
    stored.sort();
    assert_eq!(stored.len(), 8);
    assert!(
        stored.iter().all(|n| n.starts_with("docs/big/")),
        "{stored:?}"
    );
}
