//! The `dfs` binary as a script uses it: one-shot commands, piped commands,
//! exit status, one-line errors.

use std::path::Path;
use std::process::Output;

use crate::util::{dfs_as_alice, random_file, run_with_stdin, Cluster};

/// `dfs` with `args`, fed `stdin`, as alice. Its HOME and XDG_STATE_HOME are
/// in a folder beside `config` (the test's own), never the user's running the tests.
fn dfs(config: &Path, password: &str, args: &[&str], stdin: &str) -> Output {
    let home = config.parent().unwrap().join("home");
    let mut command = dfs_as_alice(config, &home, password);
    command.args(args);
    run_with_stdin(command, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_commands_and_exit_codes() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "photo.jpg", 2_500_000);
    let path = path.to_str().unwrap().to_string();

    let out = dfs(
        &config,
        "wonderland",
        &["put", &path, "holiday photo.jpg"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let receipt = text(&out.stdout);
    assert!(receipt.contains("stored holiday photo.jpg: 2.4 MiB in 4 chunks, 8 copies"));
    // The receipt ends with the SHA-256 in sha256sum's form.
    use sha2::{Digest, Sha256};
    let sha256 = ringdfs::hex(&Sha256::digest(&data));
    assert!(
        receipt
            .trim_end()
            .ends_with(&format!("; sha256 {sha256}  holiday photo.jpg")),
        "{receipt}"
    );

    let out = dfs(&config, "wonderland", &["ls", "-l"], "");
    assert!(out.status.success());
    let listing = text(&out.stdout);
    assert!(
        listing.contains("holiday photo.jpg") && listing.contains("2.4 MiB"),
        "{listing}"
    );

    // GET with no local path lands in the configured download folder.
    let out = dfs(&config, "wonderland", &["get", "holiday photo.jpg"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // So does the GET's, from the manifest.
    assert!(
        text(&out.stdout).contains(&format!("; sha256 {sha256}  ")),
        "{}",
        text(&out.stdout)
    );
    let fetched = cluster
        .dir
        .path()
        .join("downloads")
        .join("holiday photo.jpg");
    assert_eq!(std::fs::read(fetched).unwrap(), data);

    let out = dfs(&config, "wonderland", &["status"], "");
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).matches(" up ").count(),
        4,
        "{}",
        text(&out.stdout)
    );

    // --json for scripts.
    let out = dfs(&config, "wonderland", &["--json", "list"], "");
    let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(files[0]["name"], "holiday photo.jpg");
    assert_eq!(files[0]["size"], 2_500_000);
    assert_eq!(files[0]["healthy"], true);
    let out = dfs(
        &config,
        "wonderland",
        &["--json", "where", "holiday photo.jpg"],
        "",
    );
    let place: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(place["chunks"].as_array().unwrap().len(), 4);
    assert_eq!(place["chunks"][0]["copies"][1]["present"], true);

    let out = dfs(&config, "wonderland", &["delete", "holiday photo.jpg"], "");
    assert!(out.status.success());
    let into = tempfile::tempdir().unwrap();
    let out = dfs(
        &config,
        "wonderland",
        &["get", "holiday photo.jpg", into.path().to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "dfs: no such file: holiday photo.jpg\n");
    assert!(
        crate::util::tree(into.path()).is_empty(),
        "a deleted file was written"
    );

    let out = dfs(&config, "wrong", &["ls"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "dfs: login failed: unknown user or wrong password\n"
    );

    // Argument mistakes: one line and status 2, like any well-behaved tool.
    for args in [&["put"][..], &["--bogus"], &["get", "a", "b", "c"]] {
        let out = dfs(&config, "wonderland", args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("dfs: ") && stderr.contains("(see dfs --help)"));
    }

    // Local mistakes: one line each, status 1, nothing stored or written.
    let dir = work.path().to_str().unwrap();
    let missing_folder = work.path().join("no/such/folder/out");
    let missing_folder = missing_folder.to_str().unwrap();
    let (put_photo, _) = random_file(work.path(), "kept.jpg", 10);
    dfs(
        &config,
        "wonderland",
        &["put", put_photo.to_str().unwrap()],
        "",
    );
    for args in [
        &["put", "/no/such/file"][..],
        &["put", dir, "folder"],
        &["get", "kept.jpg", missing_folder],
    ] {
        let out = dfs(&config, "wonderland", args, "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    assert_eq!(
        listed_names(&config),
        ["kept.jpg"],
        "nothing else was stored"
    );
    assert!(!std::path::Path::new(missing_folder).exists());
}

/// The names `dfs --json list` shows.
fn listed_names(config: &Path) -> Vec<String> {
    let out = dfs(config, "wonderland", &["--json", "list"], "");
    let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    files
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_commands_run_in_order_and_failures_set_the_exit_status() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "notes.txt", 10_000);
    let back = work.path().join("back.txt");
    let script = format!(
        "PUT {} \"my notes.txt\"\nls -l\nget \"my notes.txt\" {}\n",
        path.display(),
        back.display()
    );
    let out = dfs(&config, "wonderland", &[], &script);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("stored my notes.txt"), "{stdout}");
    assert!(stdout.contains("my notes.txt  9.8 KiB"), "{stdout}");
    assert_eq!(std::fs::read(&back).unwrap(), data);

    assert!(
        stdout.starts_with("dfs> PUT "),
        "each command is echoed: {stdout}"
    );
    assert!(stdout.contains("\ndfs> ls -l\n"), "{stdout}");

    // sftp's batch rules: a failure stops the run, unless its line starts
    // with `-`.
    let out = dfs(
        &config,
        "wonderland",
        &[],
        "-frobnicate\n-get\nls\nget\nls\n",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr,
        "error: unknown command \"frobnicate\"; type HELP for the list\nerror: usage: GET REMOTE [LOCAL] [-r] [-c] [-p]\nerror: usage: GET REMOTE [LOCAL] [-r] [-c] [-p]\n"
    );
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("my notes.txt").count(), 1, "{stdout}");
    assert!(
        stdout.ends_with("dfs> get\n"),
        "the last ls is not run: {stdout}"
    );
}

/// `mv` and `cp` one-shot (text and `--json`) and piped (relative to a
/// `cd`); a move that cannot be done is one line on stderr and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mv_and_cp_work_one_shot_piped_and_as_json() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "a.txt", 5_000);
    let path = path.to_str().unwrap().to_string();
    let out = dfs(&config, "wonderland", &["put", &path, "docs/a.txt"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = dfs(
        &config,
        "wonderland",
        &["mv", "docs/a.txt", "docs/b.txt"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "moved docs/a.txt to docs/b.txt (1 file)\n"
    );
    let out = dfs(
        &config,
        "wonderland",
        &["--json", "cp", "docs", "backup"],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let copied: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(copied["to"], "backup");
    assert_eq!(copied["files"], 1);
    assert_eq!(copied["copied"], true);

    let out = dfs(
        &config,
        "wonderland",
        &[],
        "cd backup\nmv b.txt c.txt\nls\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).ends_with("c.txt\n"),
        "{}",
        text(&out.stdout)
    );
    let fetched = work.path().join("c.txt");
    let out = dfs(
        &config,
        "wonderland",
        &["get", "backup/c.txt", fetched.to_str().unwrap()],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&fetched).unwrap(), data);

    let out = dfs(&config, "wonderland", &["mv", "docs", "docs/inner"], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot move docs into itself"), "{stderr}");
}

/// Where `dfs` finds its configuration without `--config` (README, For
/// scripts): `DFS_CONFIG`, then `./client/config.toml`, then the user's
/// `~/.config/ringdfs/config.toml`; a local name may start with `~`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_is_found_by_dfs_config_then_here_then_the_users_folder() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (_, data) = random_file(home.path(), "t.txt", 1000);
    let run = |cwd: &Path, env: Option<&Path>, args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_dfs"));
        command
            .current_dir(cwd)
            .args(["--user", "alice"])
            .args(args)
            .env("DFS_PASSWORD", "wonderland")
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("DFS_CONFIG")
            .env_remove("DFS_USER");
        if let Some(path) = env {
            command.env("DFS_CONFIG", path);
        }
        run_with_stdin(command, "")
    };
    let out = run(
        elsewhere.path(),
        Some(&config),
        &["put", "~/t.txt", "a.txt"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let user_config = home.path().join(".config/ringdfs");
    std::fs::create_dir_all(&user_config).unwrap();
    std::fs::copy(&config, user_config.join("config.toml")).unwrap();
    let out = run(elsewhere.path(), None, &["ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a.txt\n");

    // ./client/config.toml comes before the user's: a broken one here is
    // the one read.
    std::fs::create_dir_all(elsewhere.path().join("client")).unwrap();
    std::fs::write(elsewhere.path().join("client/config.toml"), "servers = 5\n").unwrap();
    let out = run(elsewhere.path(), None, &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("client/config.toml"),
        "{}",
        text(&out.stderr)
    );
    let fetched = home.path().join("back.txt");
    let out = run(
        elsewhere.path(),
        Some(&config),
        &["get", "a.txt", "~/back.txt"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(fetched).unwrap(), data);
}

/// `dfs -b FILE` runs a batch as sftp does: each command echoed, the first
/// failure ends it (status 1) unless its line starts with `-`; `-b -`
/// reads standard input; `--json` gives one object a line and no echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stops_at_its_first_failure_unless_the_line_starts_with_a_dash() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "a.txt", 2_000);
    let batch = work.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "# a comment\nput {} docs/a.txt\n-get docs/missing.txt\ncd docs\n\nls\nget missing.txt\nmkdir never\n",
            path.display()
        ),
    )
    .unwrap();
    let out = dfs(&config, "wonderland", &["-b", batch.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let echoed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("dfs> ")).collect();
    assert_eq!(
        echoed,
        [
            format!("dfs> put {} docs/a.txt", path.display()).as_str(),
            "dfs> get docs/missing.txt",
            "dfs> cd docs",
            "dfs> ls",
            "dfs> get missing.txt",
        ],
        "{stdout}"
    );
    assert!(stdout.contains("\na.txt\n"), "{stdout}");
    assert_eq!(
        text(&out.stderr).lines().count(),
        2,
        "{}",
        text(&out.stderr)
    );
    let out = dfs(&config, "wonderland", &["ls"], "");
    assert_eq!(
        text(&out.stdout),
        "docs/\n",
        "the batch stopped before mkdir"
    );

    // From standard input, as JSON: one object per line, no echo.
    let out = dfs(
        &config,
        "wonderland",
        &["--json", "-b", "-"],
        "-get nothing.txt\npwd\nls docs\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&out.stdout));
    assert_eq!(lines[0]["cwd"], "/");

    // A batch file that is not there: one line, status 1, nothing run.
    let missing = work.path().join("no-such-batch");
    let out = dfs(
        &config,
        "wonderland",
        &["-b", missing.to_str().unwrap()],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("reading the batch file"), "{stderr}");
}
