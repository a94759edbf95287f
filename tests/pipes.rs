//! `dfs put - NAME` and `dfs get NAME -` in shell pipelines, and `-p`
//! (keep times), through the real binary.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::{RngCore, SeedableRng};

use crate::util::{dfs_as_alice, Cluster};

/// The peak resident memory of a running process so far (`VmHWM`), in
/// bytes, or `None` once it has exited.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Waits for `child`, sampling its peak memory until it exits: the last
/// sample is its peak up to a few milliseconds before the end.
fn wait_measuring(mut child: Child) -> (std::process::ExitStatus, u64, String) {
    let mut peak = 0;
    let status = loop {
        if let Some(rss) = peak_rss(child.id()) {
            peak = peak.max(rss);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut stderr).unwrap();
    }
    (status, peak, stderr)
}

/// A tree of seeded random files, `total` bytes in all.
fn random_tree(dir: &Path, total: usize, seed: u64) {
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    let names = ["a.bin", "sub/b.bin", "sub/deeper/c.bin", "d.txt"];
    let mut left = total;
    for (i, name) in names.iter().enumerate() {
        let len = if i + 1 == names.len() {
            left
        } else {
            total / 3
        };
        let len = len.min(left);
        left -= len;
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        std::fs::write(dir.join(name), data).unwrap();
    }
    std::fs::write(dir.join("empty"), b"").unwrap();
}

/// `tar c DIR | dfs put - t.tar` stores the stream whose size nobody knew
/// in advance, and `dfs get t.tar - | tar x` gives back the same tree
/// (`diff -r`); `dfs` holds a bounded amount of memory either way, far less
/// than the 256 MiB that pass through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tar_stream_round_trips_through_put_dash_and_get_dash_in_bounded_memory() {
    const TOTAL: usize = 256 << 20;
    const BOUND: u64 = 128 << 20;
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let src = work.path().join("src");
    random_tree(&src, TOTAL, 16);

    let (config2, home2, src2) = (config.clone(), home.clone(), src.clone());
    let (put_status, put_peak, put_err) = tokio::task::spawn_blocking(move || {
        let mut tar = Command::new("tar")
            .args(["cf", "-", "-C"])
            .arg(&src2)
            .arg(".")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut put = dfs_as_alice(&config2, &home2, "wonderland");
        put.args(["put", "-", "backup/t.tar"])
            .stdin(tar.stdout.take().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let measured = wait_measuring(put.spawn().unwrap());
        assert!(tar.wait().unwrap().success());
        measured
    })
    .await
    .unwrap();
    assert!(put_status.success(), "{put_err}");
    println!("put -: peak RSS {} MiB", put_peak >> 20);
    assert!(put_peak > 0, "the memory was sampled");
    assert!(
        put_peak < BOUND,
        "put - held {} MiB for a {} MiB stream",
        put_peak >> 20,
        TOTAL >> 20
    );
    let client = cluster.login("alice").await;
    let stored = client.stat("backup/t.tar").await.unwrap();
    assert!(stored.size > TOTAL as u64, "{}", stored.size);

    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let out2 = out.clone();
    let (get_status, get_peak, get_err) = tokio::task::spawn_blocking(move || {
        let mut get = dfs_as_alice(&config, &home, "wonderland");
        get.args(["get", "backup/t.tar", "-"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut get = get.spawn().unwrap();
        let mut tar = Command::new("tar")
            .args(["xf", "-", "-C"])
            .arg(&out2)
            .stdin(get.stdout.take().unwrap())
            .spawn()
            .unwrap();
        let measured = wait_measuring(get);
        assert!(tar.wait().unwrap().success(), "tar x read a whole archive");
        measured
    })
    .await
    .unwrap();
    assert!(get_status.success(), "{get_err}");
    println!("get -: peak RSS {} MiB", get_peak >> 20);
    assert!(get_peak > 0, "the memory was sampled");
    assert!(get_peak < BOUND, "get - held {} MiB", get_peak >> 20);
    let diff = Command::new("diff")
        .arg("-r")
        .arg(&src)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );

    // Mistakes are one line each.
    let work_home = work.path().join("home");
    for (args, said) in [
        (vec!["get", "nothing-here", "-"], "no such file"),
        (vec!["put", "-"], "put - needs the remote name"),
    ] {
        let mut command = dfs_as_alice(&cluster.write_client_config(), &work_home, "wonderland");
        command.args(&args).stdin(Stdio::null());
        let out = command.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(said), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing on stdout: {args:?}");
    }
}

/// `put -p` keeps the file's modification time (to the nanosecond) and
/// mode bits; `get -p` gives them back. Without `-p` neither is kept; `get
/// -p` of a file put without it dates it when it was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_with_p_keep_the_modification_time_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let dfs = |args: &[&str]| {
        let mut command = dfs_as_alice(&config, &home, "wonderland");
        command.args(args).stdin(Stdio::null());
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let local = work.path().join("report.txt");
    std::fs::write(&local, b"the quarterly numbers").unwrap();
    let then = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    let file = std::fs::File::options().write(true).open(&local).unwrap();
    file.set_modified(then).unwrap();
    file.set_permissions(std::fs::Permissions::from_mode(0o640))
        .unwrap();
    drop(file);
    let local_s = local.to_str().unwrap();

    dfs(&["put", "-p", local_s, "kept.txt"]);
    dfs(&["put", local_s, "plain.txt"]);
    let back = |name: &str| work.path().join(format!("back-{name}"));
    for (name, p) in [("kept.txt", true), ("plain.txt", true), ("kept.txt", false)] {
        let to = back(&format!("{name}-{p}"));
        let to_s = to.to_str().unwrap();
        if p {
            dfs(&["get", "-p", name, to_s]);
        } else {
            dfs(&["get", name, to_s]);
        }
        let meta = std::fs::metadata(&to).unwrap();
        let mtime = meta.modified().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        match (name, p) {
            ("kept.txt", true) => {
                assert_eq!(mtime, then, "{name} -p");
                assert_eq!(mode, 0o640, "{name} -p");
            }
            ("plain.txt", true) => {
                let age = SystemTime::now().duration_since(mtime).unwrap();
                assert!(age < Duration::from_secs(600), "dated when stored: {age:?}");
                assert_eq!(mtime.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(), 0);
            }
            _ => {
                assert_ne!(mtime, then, "no -p: the time of the GET");
            }
        }
    }
}
