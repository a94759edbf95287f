//! Bounded memory: the `dfs` binary streams a file far larger than the
//! bound through, PUT and GET, while its peak resident set (VmHWM) is read
//! from `/proc`.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use crate::util::Cluster;

/// The file moved: 1 GiB, four 256 MiB chunks. Holding the file, or one
/// whole chunk, in memory would break the bound below.
const SIZE: u64 = 1 << 30;

/// The client's design keeps, per chunk (4 at once), at most
/// `PIPELINE_DEPTH` (2) 1 MiB blocks queued between disk and socket, one
/// being read or written and one being sent or received: ~4 MiB a chunk,
/// ~16 MiB in all, plus the MD5 reader's 1 MiB block, TLS buffers and the
/// runtime — some 30-40 MiB. 128 MiB leaves room for allocator slack and is
/// an eighth of the file.
const BOUND_KIB: u64 = 128 << 10;

/// The peak resident set (VmHWM, KiB) of process `pid` so far, if it is
/// still there to ask.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `dfs ARGS` as alice with its own HOME and XDG_STATE_HOME, and
/// returns its exit status, output, and peak resident set (KiB) as last
/// read while it ran. (Its rusage at exit will not do: the kernel counts a
/// spawned child's peak from before its exec, when its memory was this test
/// process's.)
fn dfs_peak_rss(config: &Path, home: &Path, args: &[String]) -> (ExitStatus, String, u64) {
    let out = home.join("out.txt");
    let err = home.join("err.txt");
    let mut child = crate::util::dfs_as_alice(config, home, "wonderland")
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    // VmHWM only grows: the last value read before the process ends is its
    // peak but for its last moments. Polling, not synchronisation.
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let said = std::fs::read_to_string(&out).unwrap() + &std::fs::read_to_string(&err).unwrap();
    (status, said, peak)
}

/// PUT and GET of a 1 GiB file by the `dfs` binary each peak below 128 MiB
/// of resident memory: files stream through in bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_streams_a_gib_in_bounded_memory() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let home = tempfile::tempdir().unwrap();
    // A sparse file: reading it costs no disk, and its bytes are as real to
    // the client as any (the servers store 2 GiB of copies).
    let source = home.path().join("big.bin");
    std::fs::File::create(&source)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let fetched = home.path().join("fetched.bin");
    let runs = [
        (
            "PUT",
            vec!["put".into(), source.display().to_string(), "big.bin".into()],
        ),
        (
            "GET",
            vec![
                "get".into(),
                "big.bin".into(),
                fetched.display().to_string(),
            ],
        ),
    ];
    for (what, args) in runs {
        let home = home.path().to_path_buf();
        let config = config.clone();
        let (status, said, peak_kib) =
            tokio::task::spawn_blocking(move || dfs_peak_rss(&config, &home, &args))
                .await
                .unwrap();
        eprintln!("{what} of 1 GiB: peak RSS {} MiB", peak_kib >> 10);
        assert!(status.success(), "{what}: {status}: {said}");
        assert!(peak_kib > 0, "{what}: its memory was never read");
        assert!(
            peak_kib < BOUND_KIB,
            "{what} of 1 GiB peaked at {} MiB of resident memory",
            peak_kib >> 10
        );
    }
    // GET verified every chunk's checksum before renaming the file in place.
    assert_eq!(std::fs::metadata(&fetched).unwrap().len(), SIZE);
}
