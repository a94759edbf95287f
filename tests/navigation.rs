//! Moving about folders in the client (issue 15): `cd` and `pwd`, names
//! relative to the current folder for every command, `ls` short and `ls -l`
//! long; and a folder of 100 000 files listed page by page.

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use ringdfs::client::{no_progress, DirItem};
use ringdfs::placement::{chunk_range, even_ring, Placement, DEFAULT_COPIES};
use ringdfs::protocol::{Manifest, Version};
use ringdfs::store::{ChunkSpec, Store};

use crate::folders::ls;
use crate::util::{
    chunk_checksums, dfs_as_alice, random_file, run_with_stdin, test_tuning, Cluster,
};

/// `dfs` with `args` as alice, fed `stdin`; its HOME is beside `config`.
fn dfs(config: &Path, args: &[&str], stdin: &str) -> Output {
    let home = config.parent().unwrap().join("home");
    let mut command = dfs_as_alice(config, &home, "wonderland");
    command.args(args);
    run_with_stdin(command, stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `haystack` holds each of `needles`, in this order.
fn in_order(haystack: &str, needles: &[&str]) {
    let mut rest = haystack;
    for needle in needles {
        match rest.find(needle) {
            Some(at) => rest = &rest[at + needle.len()..],
            None => panic!("{needle:?} is missing (or out of order) in:\n{haystack}"),
        }
    }
}

/// In piped mode `cd` moves the current folder and every command's remote
/// name is relative to it (put, its default name, get, where, verify, ls,
/// rm, mkdir, rmdir), with `.` and `..` resolved by the client and `/`
/// meaning the top; `cd` into a missing folder, a file, or above the top is
/// one line of error and leaves the current folder as it was; `cd` alone
/// goes back to the top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cd_makes_every_remote_name_relative_to_the_current_folder() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let (a, a_data) = random_file(work.path(), "a.txt", 5000);
    let (b, _) = random_file(work.path(), "b.txt", 3000);
    let (top, top_data) = random_file(work.path(), "top.txt", 2000);
    client.put(&top, "top.txt", &no_progress).await.unwrap();
    client.put(&a, "docs/plan.txt", &no_progress).await.unwrap();
    let (out1, out2) = (work.path().join("out1"), work.path().join("out2"));

    let script = format!(
        "pwd\n\
         cd docs\n\
         pwd\n\
         put {a} a.txt\n\
         put {b}\n\
         mkdir sub\n\
         cd sub/\n\
         pwd\n\
         put {a} ../../top2.txt\n\
         put {a} ./x/../deeper.txt\n\
         cd ..\n\
         get plan.txt {out1}\n\
         get ../top.txt {out2}\n\
         where a.txt\n\
         verify ./a.txt\n\
         ls\n\
         rm b.txt\n\
         rm sub/deeper.txt\n\
         rmdir sub\n\
         -cd ../..\n\
         -cd nowhere\n\
         -cd /top.txt\n\
         -get ../../top.txt\n\
         pwd\n\
         ls /\n\
         cd\n\
         pwd\n\
         cd /docs/\n\
         cd ./..\n\
         pwd\n",
        a = a.display(),
        b = b.display(),
        out1 = out1.display(),
        out2 = out2.display(),
    );
    let out = dfs(&config, &[], &script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // The lines that fail start with `-`: the batch goes on past them.
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    in_order(
        &stdout,
        &[
            "/\n",
            "/docs\n",
            "stored docs/a.txt: 4.9 KiB",
            "stored docs/b.txt: 2.9 KiB",
            "made folder docs/sub/\n",
            "/docs/sub\n",
            "stored top2.txt: 4.9 KiB",
            "stored docs/sub/deeper.txt: 4.9 KiB",
            "fetched 4.9 KiB",
            "fetched 2.0 KiB",
            "docs/a.txt: 4.9 KiB, 4 chunks",
            "docs/a.txt  healthy",
            "1 of 1 file healthy\n",
            "a.txt\nb.txt\nplan.txt\nsub/\n",
            "deleted docs/b.txt\n",
            "deleted docs/sub/deeper.txt\n",
            "removed folder docs/sub/\n",
            // The failed `cd`s left it in /docs.
            "/docs\n",
            "docs/\ntop.txt\ntop2.txt\n",
            "/\n",
            "/\n",
        ],
    );
    assert!(
        stdout.ends_with("dfs> pwd\n/\ndfs> cd /docs/\ndfs> cd ./..\ndfs> pwd\n/\n"),
        "{stdout}"
    );
    assert_eq!(
        stderr,
        "error: invalid name \"../..\": `..` goes above the top folder\n\
         error: no such folder: /docs/nowhere\n\
         error: /top.txt is a file, not a folder\n\
         error: invalid name \"../../top.txt\": `..` goes above the top folder\n",
    );

    // What the servers hold: clean paths, where the folder said.
    assert_eq!(std::fs::read(&out1).unwrap(), a_data);
    assert_eq!(std::fs::read(&out2).unwrap(), top_data);
    assert_eq!(ls(&client, "").await, ["docs/", "top.txt", "top2.txt"]);
    assert_eq!(ls(&client, "docs").await, ["docs/a.txt", "docs/plan.txt"]);
}

/// One-shot `dfs pwd` prints `/` (and `{"cwd": "/"}` with `--json`); piped
/// with `--json`, each command that prints gives one JSON line, `pwd` the
/// folder `cd` moved to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pwd_prints_the_current_folder_as_text_and_as_json() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let (f, _) = random_file(work.path(), "f", 100);
    client
        .put(&f, "docs/2026/jan.txt", &no_progress)
        .await
        .unwrap();

    let out = dfs(&config, &["pwd"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "/\n");
    let out = dfs(&config, &["--json", "pwd"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, serde_json::json!({ "cwd": "/" }));

    let out = dfs(&config, &["--json"], "cd docs/2026\npwd\nls\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&out.stdout));
    assert_eq!(lines[0], serde_json::json!({ "cwd": "/docs/2026" }));
    assert_eq!(lines[1][0]["name"], "docs/2026/jan.txt");
    assert_eq!(lines[1][0]["size"], 100);
}

/// Plain `ls` prints names only (folders with a trailing `/`), relative to
/// the folder listed; `ls -l` (and `list`) the long table: name, size,
/// chunks, when stored and health, folders marked `/`; `-R` lists every file
/// under the folder, short or long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_shows_names_and_ls_l_the_long_listing() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let config = cluster.write_client_config();
    let work = tempfile::tempdir().unwrap();
    let (f, _) = random_file(work.path(), "f", 5000);
    for name in ["top.txt", "docs/plan.txt", "docs/2026/jan.txt"] {
        client.put(&f, name, &no_progress).await.unwrap();
    }

    let out = dfs(&config, &["ls"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "docs/\ntop.txt\n");
    let out = dfs(&config, &["ls", "-R", "docs"], "");
    assert_eq!(text(&out.stdout), "2026/jan.txt\nplan.txt\n");

    let long = r"NAME\s+SIZE\s+CHUNKS\s+STORED \(UTC\)\s+HEALTH\n";
    let row =
        |name: &str| format!(r"{name}\s+4\.9 KiB\s+4\s+\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\s+ok\n");
    for args in [&["ls", "-l"][..], &["list"], &["ls", "-l", "/"]] {
        let out = dfs(&config, args, "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let want = format!(r"\A{long}docs/\s+-\s+-\s+-\s*\n{}\z", row("top\\.txt"));
        let re = regex_lite(&want);
        assert!(re(&text(&out.stdout)), "{args:?}:\n{}", text(&out.stdout));
    }
    let out = dfs(&config, &[], "cd docs\nls -l -R\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = format!(
        r"\Adfs> cd docs\ndfs> ls -l -R\n{long}{}{}\z",
        row("2026/jan\\.txt"),
        row("plan\\.txt")
    );
    assert!(
        regex_lite(&want)(&text(&out.stdout)),
        "{}",
        text(&out.stdout)
    );

    // Mistakes: one line each.
    for (line, error) in [
        ("ls -x", "error: LS: unknown option -x\n"),
        ("ls a b", "error: usage: LS [FOLDER] [-l] [-R]\n"),
        ("ls nowhere", "error: no such folder: /nowhere\n"),
    ] {
        let out = dfs(&config, &[], &format!("{line}\n"));
        assert_eq!(out.status.code(), Some(1), "{line}");
        assert_eq!(text(&out.stderr), error, "{line}");
    }
}

/// A tiny matcher for the patterns above: `regex` is not a dependency, so
/// the pattern is checked with the one the test suite has, rexpect's.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let re = rexpect::reader::Regex::new(pattern).unwrap();
    move |text| re.is_match(text)
}

// ---------------------------------------------------------------------------
// A folder of 100 000 files

/// Files in the big folder.
const BIG: usize = 100_000;
/// Threads writing into one store at once: the store commits what they
/// write in shared batches (one sync for many), so more threads fill it
/// faster where syncs are slow.
const FILL_THREADS: usize = 128;

/// The name of file `i` of the big folder.
fn big_name(i: usize) -> String {
    format!("big/f{i:06}")
}

/// Writes files `0..BIG` of the big folder (a few bytes each, `chunks`
/// chunks) straight into the store of server `pos` (1-based) of a ring of
/// `n`, as PUTs would have left them: every manifest, and the chunk copies
/// that placement gives this server.
fn fill_big_folder(data_dir: &Path, pos: u32, n: u32) {
    let store = Store::open(data_dir, test_tuning()).unwrap();
    let ring = even_ring(n);
    let threads: Vec<_> = (0..FILL_THREADS)
        .map(|t| {
            let (store, ring) = (Arc::clone(&store), ring.clone());
            std::thread::spawn(move || {
                let mut manifests = Vec::new();
                for i in (t..BIG).step_by(FILL_THREADS) {
                    let name = big_name(i);
                    let data = format!("file {i}").into_bytes();
                    let size = data.len() as u64;
                    let version = Version {
                        gen: 1,
                        writer: i as u64,
                    };
                    let held =
                        Placement::of("alice", &name).chunks_held(&ring, pos, n, DEFAULT_COPIES);
                    let checksums = chunk_checksums("alice", &name, version, n, &data);
                    for (chunk, &sum) in (1..=n).zip(&checksums) {
                        let (start, end) = chunk_range(size, n, chunk);
                        let bytes = &data[start as usize..end as usize];
                        if held.contains(&chunk) {
                            let spec = ChunkSpec {
                                owner: "alice".into(),
                                name: name.clone(),
                                version,
                                chunk,
                                chunks: n,
                                size,
                            };
                            let mut writer = store.begin_chunk(spec).unwrap();
                            writer.write(bytes).unwrap();
                            writer.finish(sum).unwrap();
                        }
                    }
                    let md5 = {
                        use md5::Digest;
                        md5::Md5::digest(&data).into()
                    };
                    manifests.push((
                        "alice".to_string(),
                        Manifest {
                            name,
                            version,
                            size,
                            chunks: n,
                            checksums,
                            stored_at: 1_700_000_000,
                            digest: ringdfs::protocol::FileDigest::Md5(md5),
                            deleted: false,
                            data: None,
                            kept: None,
                            meta: None,
                        },
                    ));
                }
                store.commit_many(manifests).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The issue's "100 000 files in one folder list page by page": a folder
/// of 100 000 files (written into the four stores while the servers are
/// stopped, as PUTs would have) lists through the client page by page,
/// every name exactly once and in order, each page a bounded part of the
/// folder, the files beside it (and a sub-folder inside it) in their
/// places; a file of it reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_of_100_000_files_lists_page_by_page_each_name_once_in_order() {
    let started = std::time::Instant::now();
    // No background scrub re-reading 400 000 chunk copies meanwhile.
    let mut cluster = Cluster::start_tuned(4, |c| c.store.scrub_bytes_per_sec = 0).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (f, data) = random_file(work.path(), "f", 300);
    // Beside the folder, and inside it (a sub-folder sorts among its files).
    for name in ["bi", "big0", "big/f050000x/inner.txt", "bigger/x"] {
        client.put(&f, name, &no_progress).await.unwrap();
    }
    for i in 1..=4 {
        cluster.stop(i).await;
    }
    let dirs: Vec<_> = (1..=4).map(|i| cluster.data_dir(i)).collect();
    std::thread::scope(|s| {
        for (i, dir) in dirs.iter().enumerate() {
            s.spawn(move || fill_big_folder(dir, i as u32 + 1, 4));
        }
    });
    let filled = started.elapsed();
    for i in 1..=4 {
        cluster.restart(i).await;
    }
    cluster.wait_ring_formed().await;
    let client = {
        drop(client);
        cluster.login("alice").await
    };

    let mut want: Vec<String> = (0..BIG).map(big_name).collect();
    want.push("big/f050000x/".into());
    want.sort();
    let (mut got, mut pages, mut after) = (Vec::new(), 0, None::<String>);
    loop {
        let (page, next) = client.list_dir_page("big", after.as_deref()).await.unwrap();
        pages += 1;
        assert!(
            !page.is_empty() && page.len() <= BIG / 10,
            "page {pages}: {} entries",
            page.len()
        );
        for item in &page {
            got.push(match item {
                DirItem::File(f) => {
                    assert!(f.healthy() && f.size > 0, "{}: {f:?}", f.name);
                    f.name.clone()
                }
                DirItem::Folder(p) => format!("{p}/"),
            });
        }
        match next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
        assert!(pages <= BIG, "the listing does not end");
    }
    assert_eq!(got.len(), BIG + 1, "entries listed");
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "an entry was listed twice");
    assert!(got == want, "not every name, or not in order");
    assert!(pages > 10, "{pages} pages: not paged");
    assert_eq!(ls(&client, "").await, ["bi", "big/", "big0", "bigger/"]);
    let out = work.path().join("out");
    client
        .get("big/f050000x/inner.txt", &out, &no_progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), data);
    client
        .get(&big_name(77_777), &out, &no_progress)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), b"file 77777");
    eprintln!(
        "{BIG} files: filled the stores in {:.1} s; listed in {pages} pages; {:.1} s in all",
        filled.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
