//! The mount (`dfs mount DIR`, FUSE) with real programs: `cp -r`, `diff
//! -r`, `dd`, `mv`, `truncate`, `df`. Each test runs the real `dfs` binary
//! as a child process against a real cluster. Without `/dev/fuse` or
//! `fusermount3` a test says so in one line and passes (`.ci/run` installs
//! `fuse3`, so CI runs them). Bytes moved are counted by the kernel, per
//! socket (`ss`, from iproute2).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{random_file, Cluster};

/// Why the mount tests cannot run here, if they cannot.
fn no_fuse() -> Option<&'static str> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing");
    }
    let found = Command::new("fusermount3")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    (!found).then_some("fusermount3 is missing (apt-get install fuse3)")
}

/// `dfs mount` of `user`'s files at a new folder, running until dropped.
struct Mounted {
    /// Taken by [`Mounted::unmount`].
    child: Option<Child>,
    dir: PathBuf,
}

impl Mounted {
    fn start(cluster: &Cluster, user: &str, dir: &Path) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let password = crate::util::USERS
            .iter()
            .find(|(u, _)| *u == user)
            .unwrap()
            .1;
        let child = Command::new(env!("CARGO_BIN_EXE_dfs"))
            .arg("--config")
            .arg(cluster.write_client_config())
            .args(["--user", user, "mount"])
            .arg(dir)
            .env("DFS_PASSWORD", password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mounted = Mounted {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !mounted.is_mounted() {
            assert!(Instant::now() < deadline, "dfs mount did not mount in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        mounted
    }

    fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let dir = self.dir.to_str().unwrap();
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Bytes the mount's process has received on its open TCP connections
    /// (from the servers: TLS records, frames and data), as the kernel
    /// counts them (`ss -tip`: each socket's `bytes_received`).
    fn bytes_received(&self) -> u64 {
        let out = Command::new("ss")
            .args(["-tinpH"])
            .output()
            .expect("ss runs");
        assert!(
            out.status.success(),
            "ss: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mine = format!("pid={},", self.pid());
        // A socket is a line naming its process, then an indented line of
        // its counters.
        let mut total = 0;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if !line.contains(&mine) {
                continue;
            }
            let counters = lines.peek().copied().unwrap_or_default();
            total += counters
                .split_whitespace()
                .find_map(|f| f.strip_prefix("bytes_received:"))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        total
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Unmounts with `fusermount3 -u`; the process must end cleanly.
    fn unmount(mut self) -> Output {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "dfs mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.is_mounted() {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a shell command line; returns whether it succeeded, and what it said.
fn sh(line: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", line]).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn ok(line: &str) -> String {
    let (done, said) = sh(line);
    assert!(done, "{line}: {said}");
    said
}

/// A tree of files of uneven sizes (one over a chunk's worth of blocks),
/// an empty file and an empty folder.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("docs/2026/deep")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    for (i, size) in [0usize, 1, 4095, 70_000, 1 << 20, (3 << 20) + 5]
        .into_iter()
        .enumerate()
    {
        random_file(&root.join("docs"), &format!("f{i}.bin"), size);
    }
    std::fs::write(root.join("docs/2026/deep/notes.txt"), "deep\n").unwrap();
    std::fs::write(root.join("a name with spaces.txt"), "spaces\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cp_r_in_and_out_diff_r_saves_renames_truncates_and_a_read_only_share_is_eacces() {
    if let Some(why) = no_fuse() {
        println!("skipped: {why}");
        return;
    }
    let mut cluster = Cluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path().to_str().unwrap().to_string();
    make_tree(&work.path().join("tree"));
    let mount = Mounted::start(&cluster, "alice", &work.path().join("mnt"));
    let m = mount.dir.to_str().unwrap().to_string();

    // A tree in and out, byte for byte, empty folder and file included.
    ok(&format!("cp -r {w}/tree {m}/tree"));
    ok(&format!("diff -r {w}/tree {m}/tree"));
    ok(&format!("cp -r {m}/tree {w}/back"));
    ok(&format!("diff -r {w}/tree {w}/back"));
    // The mount's names are the store's.
    let alice = cluster.login("alice").await;
    let stored = alice.stat("tree/docs/f5.bin").await.unwrap();
    assert_eq!(stored.size, (3 << 20) + 5);
    let listed = ok(&format!("ls -l {m}/tree/docs"));
    assert!(listed.contains(&((3 << 20) + 5).to_string()), "{listed}");

    // An editor's save: the new text written to a temp file, renamed over
    // the old. Until the rename the old file is whole; after, the new.
    ok(&format!("printf 'old text\\n' > {m}/tree/doc.txt"));
    ok(&format!("printf 'new text\\n' > {m}/tree/.doc.txt.swp"));
    assert_eq!(ok(&format!("cat {m}/tree/doc.txt")), "old text\n");
    ok(&format!("mv {m}/tree/.doc.txt.swp {m}/tree/doc.txt"));
    assert_eq!(ok(&format!("cat {m}/tree/doc.txt")), "new text\n");
    assert!(!mount.path("tree/.doc.txt.swp").exists());
    assert!(alice.stat("tree/.doc.txt.swp").await.is_err());

    // Appending, truncating, removing; folders.
    ok(&format!("printf 'more\\n' >> {m}/tree/doc.txt"));
    assert_eq!(ok(&format!("cat {m}/tree/doc.txt")), "new text\nmore\n");
    ok(&format!("truncate -s 3 {m}/tree/doc.txt"));
    assert_eq!(ok(&format!("cat {m}/tree/doc.txt")), "new");
    ok(&format!("rm {m}/tree/doc.txt"));
    assert!(alice.stat("tree/doc.txt").await.is_err());
    ok(&format!("mkdir {m}/made && rmdir {m}/made"));
    let (done, said) = sh(&format!("rmdir {m}/tree/docs"));
    assert!(!done && said.contains("not empty"), "{said}");
    ok(&format!("mv {m}/tree/empty {m}/tree/renamed"));
    assert!(mount.path("tree/renamed").is_dir());
    let (done, said) = sh(&format!("cat {m}/tree/no-such-file"));
    assert!(!done && said.contains("No such file"), "{said}");

    // df shows the quota.
    let (ok_quota, out, err) =
        crate::util::dfs_server_user(&cluster, 1, &["quota", "alice", "1GiB"]);
    assert!(ok_quota, "{out}{err}");
    crate::util::wait_until(10, "df shows the quota", || async {
        let df = ok(&format!("df -B1 --output=size {m}"));
        df.lines().nth(1).map(str::trim) == Some("1073741824")
    })
    .await;

    // Bob shares a folder read-only: alice reads it and cannot write it.
    let bob = cluster.login("bob").await;
    let (local, data) = random_file(work.path(), "bobs.bin", 5000);
    bob.put(&local, "papers/bobs.bin", &ringdfs::client::no_progress)
        .await
        .unwrap();
    bob.share("papers", "alice", Some(ringdfs::sharing::Access::Read))
        .await
        .unwrap();
    crate::util::wait_until(10, "the share shows in the mount", || async {
        mount.path("shared/bob/papers/bobs.bin").exists()
    })
    .await;
    assert_eq!(
        std::fs::read(mount.path("shared/bob/papers/bobs.bin")).unwrap(),
        data
    );
    for line in [
        format!("cp {w}/tree/docs/f1.bin {m}/shared/bob/papers/new.bin"),
        format!("printf x >> {m}/shared/bob/papers/bobs.bin"),
        format!("rm {m}/shared/bob/papers/bobs.bin"),
        format!("mkdir {m}/shared/bob/papers/sub"),
    ] {
        let (done, said) = sh(&line);
        assert!(
            !done && said.contains("Permission denied"),
            "{line}: {said}"
        );
    }
    assert_eq!(bob.stat("papers/bobs.bin").await.unwrap().size, 5000);

    // One server down: reading and writing go on.
    cluster.stop(2).await;
    ok(&format!("diff -r {w}/tree/docs {m}/tree/docs"));
    ok(&format!("cp {w}/tree/docs/f5.bin {m}/while-down.bin"));
    ok(&format!("cmp {w}/tree/docs/f5.bin {m}/while-down.bin"));

    // Over the quota: the store refuses the file, and cp hears EDQUOT.
    let used = alice.usage("").await.unwrap().report.used();
    let quota = (used + (1 << 20)).to_string();
    let (ok_quota, out, err) =
        crate::util::dfs_server_user(&cluster, 1, &["quota", "alice", &quota]);
    assert!(ok_quota, "{out}{err}");
    let (done, said) = sh(&format!("cp {w}/tree/docs/f5.bin {m}/over.bin"));
    assert!(!done && said.contains("quota exceeded"), "{said}");
    assert!(alice.stat("over.bin").await.is_err());

    // Both holders of a chunk down (dfs2 and dfs3 are neighbours): its
    // bytes cannot be had, and a read says EIO, not wrong bytes.
    cluster.stop(3).await;
    let (done, said) = sh(&format!("cat {m}/tree/docs/f5.bin > /dev/null"));
    assert!(!done && said.contains("Input/output error"), "{said}");
    cluster.restart(2).await;
    cluster.restart(3).await;

    // fusermount3 -u ends the mount and the process, cleanly.
    let said = mount.unmount();
    assert!(String::from_utf8_lossy(&said.stdout).contains("alice's files are at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_point_that_is_no_folder_is_one_line_before_any_login() {
    let cluster = Cluster::start(1).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for dir in [file, work.path().join("missing")] {
        let out = Command::new(env!("CARGO_BIN_EXE_dfs"))
            .arg("--config")
            .arg(cluster.write_client_config())
            .args(["--user", "alice", "mount"])
            .arg(&dir)
            .env("DFS_PASSWORD", "a wrong one: never asked for")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert_eq!(
            said.trim_end(),
            format!("dfs: {}: not a folder to mount on", dir.display())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_4_kib_in_the_middle_of_a_1_gib_file_moves_about_one_block() {
    if let Some(why) = no_fuse() {
        println!("skipped: {why}");
        return;
    }
    let cluster = Cluster::start(4).await;
    let work = tempfile::tempdir().unwrap();
    let (local, data) = random_file(work.path(), "big.bin", 1 << 30);
    let alice = cluster.login("alice").await;
    alice
        .put(&local, "big.bin", &ringdfs::client::no_progress)
        .await
        .unwrap();
    let mount = Mounted::start(&cluster, "alice", &work.path().join("mnt"));
    let m = mount.dir.to_str().unwrap().to_string();
    ok(&format!("ls -l {m}/big.bin"));

    // 4 KiB a little past the middle (inside chunk 3, in a block of its
    // own), read by this process through the kernel. The count is taken
    // while the file is still open, so the connections that carried it are
    // still there to be counted.
    let offset: u64 = (1 << 29) + (5 << 20) + 12345;
    let before = mount.bytes_received();
    let file = std::fs::File::open(mount.path("big.bin")).unwrap();
    let mut got = vec![0; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut got, offset).unwrap();
    let moved = mount.bytes_received() - before;
    drop(file);
    assert!(
        got == data[offset as usize..offset as usize + 4096],
        "the 4 KiB read differ"
    );
    println!("reading 4 KiB through the mount moved {moved} bytes from the servers");
    // One 1 MiB block, its block values and the protocol's frames (the
    // kernel may read ahead within the block); not the chunk (256 MiB).
    // And the bytes did come over the wire: the count is a real one.
    assert!(
        (4096..3 << 20).contains(&moved),
        "reading 4 KiB moved {moved} bytes into the mount's process"
    );

    // Ctrl-C (SIGINT) unmounts cleanly too.
    let pid = mount.pid().to_string();
    ok(&format!("kill -INT {pid}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while mount.is_mounted() {
        assert!(Instant::now() < deadline, "still mounted 20 s after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}
