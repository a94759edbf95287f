//! Sharing (issue 15): alice shares a folder with bob, who sees it under
//! `shared/alice/`, reads it, writes it only when allowed, and loses both
//! when alice unshares; the servers enforce every rule, also against
//! hand-built messages, and bob never sees alice's other files.

use std::path::Path;

use ringdfs::client::{no_progress, Client, DirItem};
use ringdfs::error::Error;
use ringdfs::protocol::{Manifest, Request, Response};
use ringdfs::sharing::Access;

use crate::util::{dfs_as, random_file, raw_login, run_with_stdin, Cluster, RawConn};

/// The paths of a folder's listing.
async fn ls(client: &Client, folder: &str) -> Vec<String> {
    client
        .list_dir(folder)
        .await
        .unwrap_or_else(|e| panic!("ls {folder}: {e}"))
        .iter()
        .map(|item| match item {
            DirItem::File(f) => f.name.clone(),
            DirItem::Folder(p) => format!("{p}/"),
        })
        .collect()
}

/// The error's one line, which must say `what`.
fn refused<T: std::fmt::Debug>(result: Result<T, Error>, what: &str) -> String {
    let e = result.expect_err(what).to_string();
    assert!(!e.contains('\n'), "{e}");
    e
}

/// Stores `len` random bytes as alice's `name`; returns them.
async fn put(client: &Client, dir: &Path, name: &str, len: usize) -> Vec<u8> {
    let local = name.replace('/', "_");
    let (path, data) = random_file(dir, &local, len);
    client.put(&path, name, &no_progress).await.unwrap();
    data
}

async fn get(client: &Client, dir: &Path, name: &str) -> Result<Vec<u8>, Error> {
    let out = dir.join(format!("got_{}", name.replace('/', "_")));
    client.get(name, &out, &no_progress).await?;
    Ok(std::fs::read(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_reads_a_shared_folder_writes_it_only_when_allowed_and_not_after_unshare() {
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let bob = cluster.login("bob").await;
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let a = put(&alice, w, "docs/a.txt", 3_000).await;
    let big = put(&alice, w, "docs/sub/big.bin", 1_500_000).await;
    let secret = put(&alice, w, "private/secret.txt", 2_000).await;
    put(&alice, w, "top.txt", 100).await;
    // Data written under another name and moved in: its data keeps its
    // first name, and bob reads it all the same.
    let moved = put(&alice, w, "draft.txt", 4_000).await;
    alice
        .relink("draft.txt", "docs/final.txt", false)
        .await
        .unwrap();

    // Nothing shared yet.
    assert!(!ls(&bob, "").await.contains(&"shared/".to_string()));
    assert!(ls(&bob, "shared").await.is_empty());
    refused(
        get(&bob, w, "shared/alice/docs/a.txt").await,
        "read before a share",
    );

    alice
        .share("docs", "bob", Some(Access::Read))
        .await
        .unwrap();
    assert!(ls(&bob, "").await.contains(&"shared/".to_string()));
    assert_eq!(ls(&bob, "shared").await, ["shared/alice/"]);
    assert_eq!(ls(&bob, "shared/alice").await, ["shared/alice/docs/"]);
    assert_eq!(
        ls(&bob, "shared/alice/docs").await,
        [
            "shared/alice/docs/a.txt",
            "shared/alice/docs/final.txt",
            "shared/alice/docs/sub/"
        ]
    );
    assert_eq!(get(&bob, w, "shared/alice/docs/a.txt").await.unwrap(), a);
    assert_eq!(
        get(&bob, w, "shared/alice/docs/sub/big.bin").await.unwrap(),
        big
    );
    assert_eq!(
        get(&bob, w, "shared/alice/docs/final.txt").await.unwrap(),
        moved
    );
    let location = bob.locate("shared/alice/docs/sub/big.bin").await.unwrap();
    assert!(location
        .chunks
        .iter()
        .flatten()
        .all(|c| c.present == Some(true)));
    let reports = bob
        .verify(Some("shared/alice/docs/sub/big.bin"))
        .await
        .unwrap();
    assert!(reports[0].problems.is_empty(), "{:?}", reports[0].problems);

    // Read-only: no write of any kind.
    let (new, _) = random_file(w, "new.txt", 500);
    let e = refused(
        bob.put(&new, "shared/alice/docs/new.txt", &no_progress)
            .await,
        "put with read",
    );
    assert!(e.contains("read-only"), "{e}");
    refused(
        bob.delete("shared/alice/docs/a.txt").await,
        "delete with read",
    );
    refused(
        bob.folder("shared/alice/docs/made", true).await,
        "mkdir with read",
    );
    refused(
        bob.relink("shared/alice/docs/a.txt", "shared/alice/docs/b.txt", false)
            .await,
        "mv with read",
    );
    // Nothing outside the share, however it is named.
    for name in ["shared/alice/private/secret.txt", "shared/alice/top.txt"] {
        let e = refused(get(&bob, w, name).await, "read outside the share");
        assert!(e.contains("does not share"), "{e}");
    }
    refused(bob.list_dir("shared/alice/private").await, "ls outside");
    refused(
        bob.relink("shared/alice/docs/a.txt", "mine.txt", true)
            .await,
        "cp across owners",
    );

    // Write: bob adds, renames and removes files in the share; alice sees
    // them, and the new file counts as hers.
    alice
        .share("docs", "bob", Some(Access::Write))
        .await
        .unwrap();
    bob.put(&new, "shared/alice/docs/new.txt", &no_progress)
        .await
        .unwrap();
    bob.relink(
        "shared/alice/docs/new.txt",
        "shared/alice/docs/renamed.txt",
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        get(&alice, w, "docs/renamed.txt").await.unwrap(),
        std::fs::read(&new).unwrap()
    );
    bob.folder("shared/alice/docs/made", true).await.unwrap();
    assert!(ls(&alice, "docs").await.contains(&"docs/made/".to_string()));
    bob.delete("shared/alice/docs/renamed.txt").await.unwrap();
    assert!(!ls(&alice, "docs")
        .await
        .contains(&"docs/renamed.txt".to_string()));
    // Still nothing outside it.
    refused(
        bob.put(&new, "shared/alice/private/x.txt", &no_progress)
            .await,
        "put outside the share",
    );
    refused(
        bob.relink(
            "shared/alice/docs/a.txt",
            "shared/alice/private/a.txt",
            true,
        )
        .await,
        "cp out of the share",
    );

    let shares = alice.shares().await.unwrap();
    assert_eq!(shares.len(), 1);
    assert_eq!(
        (
            shares[0].path.as_str(),
            shares[0].user.as_str(),
            shares[0].access
        ),
        ("docs", "bob", Access::Write)
    );
    assert_eq!(bob.shares().await.unwrap(), shares);

    // Unshared: bob can do neither, and sees nothing of alice's.
    alice.share("docs", "bob", None).await.unwrap();
    refused(
        get(&bob, w, "shared/alice/docs/a.txt").await,
        "read after unshare",
    );
    refused(
        bob.put(&new, "shared/alice/docs/again.txt", &no_progress)
            .await,
        "write after unshare",
    );
    assert!(ls(&bob, "shared").await.is_empty());
    assert!(!ls(&bob, "").await.contains(&"shared/".to_string()));
    refused(bob.list_dir("shared/alice").await, "ls after unshare");
    assert!(bob.shares().await.unwrap().is_empty());
    // alice's files are all as they were.
    assert_eq!(get(&alice, w, "private/secret.txt").await.unwrap(), secret);
    assert_eq!(get(&alice, w, "docs/a.txt").await.unwrap(), a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shares_are_one_line_and_change_nothing() {
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    put(&alice, work.path(), "docs/a.txt", 100).await;
    let cases: [(&str, &str, Option<Access>, &str); 6] = [
        ("docs", "zed", Some(Access::Read), "no user zed"),
        ("docs", "alice", Some(Access::Read), "yourself"),
        ("nothing", "bob", Some(Access::Read), "nothing"),
        ("docs", "bob", None, "not shared with bob"),
        ("shared/bob/x", "bob", Some(Access::Read), "only your own"),
        ("a/../b", "bob", Some(Access::Read), ".."),
    ];
    for (path, user, access, says) in cases {
        let e = refused(alice.share(path, user, access).await, path);
        assert!(e.contains(says), "share {path} {user}: {e}");
    }
    assert!(alice.shares().await.unwrap().is_empty());
    // `shared/` at the top is where shares appear: not a name of one's own.
    let (local, _) = random_file(work.path(), "x", 10);
    let e = refused(
        alice.put(&local, "shared", &no_progress).await,
        "put shared",
    );
    assert!(e.contains("folder"), "{e}");
    let e = refused(
        alice.folder("shared/mine", true).await,
        "mkdir under shared",
    );
    assert!(
        e.contains("bob") || e.contains("not share") || e.contains("shared/"),
        "{e}"
    );
}

/// A request wrapped as bob's on alice's files.
fn as_bob_on_alice(paths: &[&str], request: Request) -> Request {
    Request::Shared {
        owner: "alice".into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        request: Box::new(request),
    }
}

/// The server's refusal of `request` (an error frame, and the connection
/// still usable).
async fn refused_raw(conn: &mut RawConn, request: &Request) -> String {
    match conn.call(request).await {
        Err(e) => e.to_string(),
        Ok(other) => panic!("{request:?} was answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_built_messages_reach_nothing_that_is_not_shared() {
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    put(&alice, work.path(), "docs/a.txt", 3_000).await;
    put(&alice, work.path(), "private/secret.txt", 3_000).await;
    let secret = alice.stat("private/secret.txt").await.unwrap();
    let shared = alice.stat("docs/a.txt").await.unwrap();
    alice
        .share("docs", "bob", Some(Access::Write))
        .await
        .unwrap();
    let mut bob = raw_login(&cluster, 1, "bob").await;

    let chunk_of = |m: &Manifest| Request::GetChunk {
        name: m.data_name().to_string(),
        version: m.data_version(),
        chunk: 1,
    };
    // Reading the secret's data: through no path, through the shared one,
    // through its own (not shared) path.
    let range_of = |m: &Manifest| Request::GetRange {
        name: m.data_name().to_string(),
        version: m.data_version(),
        chunk: 1,
        offset: 0,
        len: 10,
    };
    for paths in [&[][..], &["docs/a.txt"][..], &["private/secret.txt"][..]] {
        for read in [chunk_of(&secret), range_of(&secret)] {
            let e = refused_raw(&mut bob, &as_bob_on_alice(paths, read)).await;
            assert!(
                e.contains("not what alice shares") || e.contains("does not share"),
                "{paths:?}: {e}"
            );
        }
    }
    // The shared file's data reads (on a server holding chunk 1).
    let holds = cluster_holder_of_chunk_1(&alice, "docs/a.txt").await;
    let mut bob_there = raw_login(&cluster, holds, "bob").await;
    match bob_there
        .call(&as_bob_on_alice(&["docs/a.txt"], chunk_of(&shared)))
        .await
        .unwrap()
    {
        Response::Chunk { .. } => {}
        other => panic!("shared chunk: {other:?}"),
    }
    drop(bob_there);
    let mut bob_there = raw_login(&cluster, holds, "bob").await;
    match bob_there
        .call(&as_bob_on_alice(&["docs/a.txt"], range_of(&shared)))
        .await
        .unwrap()
    {
        Response::Range { .. } => {}
        other => panic!("shared range: {other:?}"),
    }
    drop(bob_there);

    let stat_secret = as_bob_on_alice(
        &[],
        Request::Stat {
            name: "private/secret.txt".into(),
        },
    );
    assert!(refused_raw(&mut bob, &stat_secret)
        .await
        .contains("does not share"));
    let list_private = as_bob_on_alice(
        &[],
        Request::ListDir {
            folder: "private".into(),
            after: None,
        },
    );
    assert!(refused_raw(&mut bob, &list_private)
        .await
        .contains("does not share"));
    // The top shows only the way to the share.
    match bob
        .call(&as_bob_on_alice(
            &[],
            Request::ListDir {
                folder: String::new(),
                after: None,
            },
        ))
        .await
        .unwrap()
    {
        Response::Dir { entries, .. } => {
            let names: Vec<String> = entries.iter().map(|e| e.cursor()).collect();
            assert_eq!(names, ["docs/"]);
        }
        other => panic!("{other:?}"),
    }
    // A link in the writable share to the secret's data is refused.
    let leak = Manifest {
        name: "docs/leak.txt".into(),
        data: Some(secret.data_ref()),
        ..secret.clone()
    };
    for paths in [&["docs/a.txt"][..], &["private/secret.txt"][..]] {
        let e = refused_raw(
            &mut bob,
            &as_bob_on_alice(
                paths,
                Request::CommitMany {
                    manifests: vec![leak.clone()],
                },
            ),
        )
        .await;
        assert!(
            e.contains("not what alice shares") || e.contains("does not share"),
            "{e}"
        );
    }
    // A plain commit, a delete, a folder outside the share.
    let outside = Manifest {
        name: "private/new.txt".into(),
        data: None,
        ..shared.clone()
    };
    for request in [
        Request::Commit {
            manifest: outside,
            missing: Vec::new(),
        },
        Request::Delete {
            name: "private/secret.txt".into(),
            version: ringdfs::protocol::Version::next(Some(secret.version)),
        },
        Request::MakeFolder {
            path: "private/x".into(),
        },
        Request::Usage {
            path: "private".into(),
        },
    ] {
        let e = refused_raw(&mut bob, &as_bob_on_alice(&[], request)).await;
        assert!(e.contains("does not share"), "{e}");
    }
    // No quota check without the file it is for; no shared request inside
    // another; no whole-account listing; no peer messages from a user.
    let nested = as_bob_on_alice(
        &[],
        as_bob_on_alice(
            &[],
            Request::Stat {
                name: "docs/a.txt".into(),
            },
        ),
    );
    for request in [
        as_bob_on_alice(&[], Request::CheckQuota { size: 1 }),
        nested,
        as_bob_on_alice(&[], Request::List),
        as_bob_on_alice(&[], Request::Shares),
        Request::PeerGetChunk {
            owner: "alice".into(),
            name: "private/secret.txt".into(),
            version: secret.version,
            chunk: 1,
        },
    ] {
        refused_raw(&mut bob, &request).await;
    }
    // alice's own names under `shared/` are refused by the server too.
    let mut alice_raw = raw_login(&cluster, 2, "alice").await;
    let e = refused_raw(
        &mut alice_raw,
        &Request::MakeFolder {
            path: "shared/x".into(),
        },
    )
    .await;
    assert!(e.contains("shared/"), "{e}");

    // After unshare the shared file's data is refused too.
    alice.share("docs", "bob", None).await.unwrap();
    let e = refused_raw(
        &mut bob,
        &as_bob_on_alice(&["docs/a.txt"], chunk_of(&shared)),
    )
    .await;
    assert!(e.contains("does not share"), "{e}");
    // Everything of alice's is intact.
    let after = alice.stat("private/secret.txt").await.unwrap();
    assert_eq!(after.version, secret.version);
    assert!(alice.stat("docs/leak.txt").await.is_err());
}

/// A server (1-based) holding chunk 1 of alice's `name`.
async fn cluster_holder_of_chunk_1(alice: &Client, name: &str) -> usize {
    let location = alice.locate(name).await.unwrap();
    let server = &location.chunks[0][0].server;
    server.trim_start_matches("dfs").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_unshare_and_shares_work_one_shot_piped_and_as_json() {
    let cluster = Cluster::start(4).await;
    let config = cluster.write_client_config();
    let home = config.parent().unwrap().join("home");
    let dfs = |user: &str, password: &str, args: &[&str], stdin: &str| {
        let mut command = dfs_as(user, &config, &home, password);
        command.args(args);
        let out = run_with_stdin(command, stdin);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "plan.txt", 5_000);
    let path = path.to_str().unwrap();
    let (code, _, err) = dfs("alice", "wonderland", &["put", path, "docs/plan.txt"], "");
    assert_eq!(code, Some(0), "{err}");

    let (code, out, err) = dfs(
        "alice",
        "wonderland",
        &["share", "docs", "bob", "write"],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "shared /docs with bob (write)\n");
    let (code, out, err) = dfs("bob", "builder", &["--json", "shares"], "");
    assert_eq!(code, Some(0), "{err}");
    let shares: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shares["mine"], serde_json::json!([]));
    assert_eq!(shares["with_me"][0]["owner"], "alice");
    assert_eq!(shares["with_me"][0]["access"], "write");
    assert_eq!(shares["with_me"][0]["seen_as"], "/shared/alice/docs");

    // Piped: bob goes into the share and reads the file.
    let fetched = work.path().join("fetched.txt");
    let script = format!(
        "cd shared/alice/docs\nls\nget plan.txt {}\n",
        fetched.display()
    );
    let (code, out, err) = dfs("bob", "builder", &[], &script);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("plan.txt"), "{out}");
    assert_eq!(std::fs::read(&fetched).unwrap(), data);

    // Bad input: one line, exit status 1 (or clap's 2 for a bad word).
    let (code, _, err) = dfs("alice", "wonderland", &["share", "docs", "zed"], "");
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no user zed"), "{err}");
    let (code, _, err) = dfs(
        "alice",
        "wonderland",
        &["share", "docs", "bob", "admin"],
        "",
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let (code, out, err) = dfs(
        "alice",
        "wonderland",
        &["--json", "unshare", "docs", "bob"],
        "",
    );
    assert_eq!(code, Some(0), "{err}");
    let said: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(said["access"], serde_json::Value::Null);
    let (code, out, _) = dfs("bob", "builder", &["shares"], "");
    assert_eq!(code, Some(0));
    assert!(out.contains("nothing is shared with you"), "{out}");
    let (code, _, err) = dfs("bob", "builder", &["get", "shared/alice/docs/plan.txt"], "");
    assert_eq!(code, Some(1));
    assert!(err.contains("does not share"), "{err}");
}
