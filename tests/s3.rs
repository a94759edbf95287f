//! S3 through real clients against a real cluster: boto3 (every operation
//! ringdfs serves, `tests/s3/boto3_suite.py`), the aws CLI and rclone.
//! Each needs its tool; a test whose tool is missing says so in one line
//! and passes (`.ci/run` installs them all, so CI runs every one).

use std::path::Path;
use std::process::Command;

use crate::http::http_cluster;
use crate::util::Cluster;

/// A new S3 key of `user`'s, made with `dfs-server user key add` through
/// server 1: (access key, secret).
pub fn s3_key(cluster: &Cluster, user: &str) -> (String, String) {
    let (ok, out, err) = crate::util::dfs_server_user(cluster, 1, &["key", "add", user, "--json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        json["access_key"].as_str().unwrap().to_string(),
        json["secret_key"].as_str().unwrap().to_string(),
    )
}

/// Whether `python3 -c CODE` runs (a module is importable).
fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn endpoints(cluster: &Cluster) -> Vec<String> {
    (1..=4)
        .map(|i| format!("https://{}", cluster.http_addr(i)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_does_every_operation_byte_exact_and_users_stay_apart() {
    if !python_has("boto3") {
        println!("skipped: boto3 is not installed (pip install boto3)");
        return;
    }
    let cluster = http_cluster().await;
    let (alice_key, alice_secret) = s3_key(&cluster, "alice");
    let (bob_key, bob_secret) = s3_key(&cluster, "bob");
    let work = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/boto3_suite.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .env("S3_ENDPOINTS", endpoints(&cluster).join(","))
        .env("S3_CA", cluster.ca())
        .env("ALICE_KEY", &alice_key)
        .env("ALICE_SECRET", &alice_secret)
        .env("BOB_KEY", &bob_key)
        .env("BOB_SECRET", &bob_secret)
        .env("WORK", work.path())
        .env("AWS_CONFIG_FILE", work.path().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            work.path().join("no-aws-credentials"),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Half-way the suite asks for alice's share with bob (made with dfs's
    // own client: one set of rules for every way in).
    let ask = work.path().join("share-photos");
    let mut shared = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the boto3 suite took over 10 minutes"
        );
        if !shared && ask.exists() {
            let alice = cluster.login("alice").await;
            alice
                .share("photos", "bob", Some(ringdfs::sharing::Access::Read))
                .await
                .unwrap();
            std::fs::write(work.path().join("share-done"), "done\n").unwrap();
            shared = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the boto3 suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
}

/// `aws s3 …` against `endpoint`, with `key` and nothing from the
/// environment's own AWS configuration.
fn aws(
    cluster: &Cluster,
    endpoint: &str,
    key: &(String, String),
    args: &[&str],
) -> std::process::Output {
    let none = cluster.dir.path().join("no-aws-config");
    Command::new("aws")
        .args(["--endpoint-url", endpoint, "--ca-bundle"])
        .arg(cluster.ca())
        .args(args)
        .env("AWS_ACCESS_KEY_ID", &key.0)
        .env("AWS_SECRET_ACCESS_KEY", &key.1)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", &none)
        .env("AWS_SHARED_CREDENTIALS_FILE", &none)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("aws runs")
}

fn ok(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tree of 200 files in 10 folders (0 to 64 KiB each) and one 20 MiB file.
fn make_tree(root: &Path) {
    let mut rng = crate::util::seed("s3-tree");
    for d in 0..10 {
        let dir = root.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..20 {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (rng >> 40) as usize % (64 << 10);
            let data: Vec<u8> = (0..len).map(|i| (i as u64 ^ rng) as u8).collect();
            std::fs::write(dir.join(format!("file {f}.bin")), data).unwrap();
        }
    }
    let big: Vec<u8> = (0..20u64 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("big.bin"), big).unwrap();
}

fn same_trees(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_and_rclone_sync_a_tree_both_ways_and_one_server_down_changes_nothing() {
    if !Command::new("aws")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!("skipped: the aws CLI is not installed (pip install awscli)");
        return;
    }
    let mut cluster = http_cluster().await;
    let key = s3_key(&cluster, "alice");
    let urls = endpoints(&cluster);
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    make_tree(&tree);

    ok(
        aws(&cluster, &urls[0], &key, &["s3", "mb", "s3://backup"]),
        "mb",
    );
    ok(
        aws(
            &cluster,
            &urls[0],
            &key,
            &["s3", "sync", tree.to_str().unwrap(), "s3://backup/t"],
        ),
        "sync up",
    );
    let listed = ok(
        aws(
            &cluster,
            &urls[1],
            &key,
            &["s3", "ls", "--recursive", "s3://backup/t/"],
        ),
        "ls",
    );
    assert_eq!(listed.lines().count(), 201, "{listed}");
    assert!(listed.contains("t/dir3/file 7.bin"), "{listed}");
    let back = work.path().join("back");
    ok(
        aws(
            &cluster,
            &urls[2],
            &key,
            &["s3", "sync", "s3://backup/t", back.to_str().unwrap()],
        ),
        "sync down",
    );
    same_trees(&tree, &back);
    // A second sync moves nothing.
    let again = ok(
        aws(
            &cluster,
            &urls[3],
            &key,
            &["s3", "sync", tree.to_str().unwrap(), "s3://backup/t"],
        ),
        "sync again",
    );
    assert!(again.trim().is_empty(), "a second sync uploaded: {again}");
    // The files are dfs's files too.
    let client = cluster.login("alice").await;
    assert_eq!(
        client.stat("backup/t/big.bin").await.unwrap().size,
        20 << 20
    );

    if Command::new("rclone")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let rclone = |args: &[&str]| {
            Command::new("rclone")
                .args(["--config", "/dev/null", "--ca-cert"])
                .arg(cluster.ca())
                .args(args)
                .env("RCLONE_CONFIG_RING_TYPE", "s3")
                .env("RCLONE_CONFIG_RING_PROVIDER", "Other")
                .env("RCLONE_CONFIG_RING_ACCESS_KEY_ID", &key.0)
                .env("RCLONE_CONFIG_RING_SECRET_ACCESS_KEY", &key.1)
                .env("RCLONE_CONFIG_RING_ENDPOINT", &urls[1])
                .env("RCLONE_CONFIG_RING_FORCE_PATH_STYLE", "true")
                // rclone 1.60's AWS SDK fails on a CA bundle of its own
                // beside --ca-cert.
                .env_remove("AWS_CA_BUNDLE")
                .output()
                .expect("rclone runs")
        };
        ok(
            rclone(&["sync", tree.to_str().unwrap(), "ring:backup/r"]),
            "rclone sync up",
        );
        ok(
            rclone(&["check", tree.to_str().unwrap(), "ring:backup/r"]),
            "rclone check",
        );
        let back = work.path().join("rclone-back");
        ok(
            rclone(&["sync", "ring:backup/r", back.to_str().unwrap()]),
            "rclone sync down",
        );
        same_trees(&tree, &back);
    } else {
        println!("skipped the rclone part: rclone is not installed (apt-get install rclone)");
    }

    // One server down: the others' endpoints still take and give files.
    cluster.stop(1).await;
    let one = work.path().join("one.bin");
    std::fs::write(&one, vec![42u8; 3 << 20]).unwrap();
    ok(
        aws(
            &cluster,
            &urls[1],
            &key,
            &[
                "s3",
                "cp",
                one.to_str().unwrap(),
                "s3://backup/down/one.bin",
            ],
        ),
        "cp with dfs1 down",
    );
    let copy = work.path().join("one.back");
    ok(
        aws(
            &cluster,
            &urls[2],
            &key,
            &[
                "s3",
                "cp",
                "s3://backup/down/one.bin",
                copy.to_str().unwrap(),
            ],
        ),
        "cp back with dfs1 down",
    );
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&one).unwrap());
    let big_back = work.path().join("big.back");
    ok(
        aws(
            &cluster,
            &urls[3],
            &key,
            &[
                "s3",
                "cp",
                "s3://backup/t/big.bin",
                big_back.to_str().unwrap(),
            ],
        ),
        "big with dfs1 down",
    );
    assert!(std::fs::read(&big_back).unwrap() == std::fs::read(tree.join("big.bin")).unwrap());

    ok(
        aws(
            &cluster,
            &urls[1],
            &key,
            &["s3", "rm", "--recursive", "s3://backup/t"],
        ),
        "rm",
    );
    // (aws s3 ls says 1 when it finds nothing.)
    let listed = aws(
        &cluster,
        &urls[1],
        &key,
        &["s3", "ls", "--recursive", "s3://backup/t/"],
    );
    assert!(
        listed.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&listed.stdout)
    );
    assert!(client
        .tree_page("backup/t", None)
        .await
        .unwrap()
        .0
        .is_empty());
}
