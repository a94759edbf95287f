//! S3 access keys held with the users: `dfs-server user key add|list|del`
//! through one server reach every server (which finds the key by its id, as
//! the S3 gateway will), the list never shows a secret, a removal and a
//! removed user take keys away everywhere, and with no server running the
//! commands work on the data folders.

use std::process::Command;

use crate::util::{wait_until, Cluster};

/// `dfs-server user key ARGS... --config servers/dfsN.toml` (through server
/// `via`): success, stdout, stderr.
fn key(cluster: &Cluster, via: usize, args: &[&str]) -> (bool, String, String) {
    let config = cluster.write_server_config(via);
    let out = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .args(["user", "key"])
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `user key add USER` through `via` in text: the access key id and secret
/// from its two lines.
fn add_text(cluster: &Cluster, via: usize, user: &str) -> (String, String) {
    let (ok, out, err) = key(cluster, via, &["add", user]);
    assert!(ok, "user key add {user}: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let access = lines[0].strip_prefix("access key: ").expect(&out);
    let secret = lines[1].strip_prefix("secret key: ").expect(&out);
    assert!(lines[2].contains("not shown again"), "{out}");
    assert!(
        err.starts_with(&format!("added access key {access} for {user} on dfs{via}")),
        "{err}"
    );
    (access.to_string(), secret.to_string())
}

/// Waits until every running server of 1..=4 answers `want` for `access`.
async fn everywhere(cluster: &Cluster, access: &str, want: Option<(&str, &str)>, what: &str) {
    let want = want.map(|(u, s)| (u.to_string(), s.to_string()));
    wait_until(5, what, || async {
        (1..=4).all(|i| cluster.server(i).unwrap().s3_key(access) == want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_through_one_server_is_found_on_every_server_and_removed_everywhere() {
    let mut cluster = Cluster::start(4).await;

    let (first, first_secret) = add_text(&cluster, 2, "alice");
    assert_eq!((first.len(), first_secret.len()), (20, 40));
    everywhere(
        &cluster,
        &first,
        Some(("alice", &first_secret)),
        "alice's key, added through dfs2, is found by every server",
    )
    .await;

    let (ok, out, err) = key(&cluster, 3, &["add", "alice", "--json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect(&out);
    let object = json.as_object().expect(&out);
    assert_eq!(object.len(), 2, "{out}");
    let second = object["access_key"].as_str().expect(&out).to_string();
    let second_secret = object["secret_key"].as_str().expect(&out).to_string();
    assert_ne!(second, first);
    everywhere(
        &cluster,
        &second,
        Some(("alice", &second_secret)),
        "alice's second key (added with --json through dfs3) everywhere",
    )
    .await;

    // The list shows both ids, and no secret, in text and JSON.
    let (ok, out, err) = key(&cluster, 4, &["list", "alice"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    for id in [&first, &second] {
        assert!(
            out.lines().any(|l| l.starts_with(id.as_str())),
            "{id}: {out}"
        );
    }
    let (ok, json, err) = key(&cluster, 1, &["list", "alice", "--json"]);
    assert!(ok, "{err}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let listed: Vec<serde_json::Value> = serde_json::from_str(&json).expect(&json);
    let mut ids: Vec<&str> = listed
        .iter()
        .map(|k| {
            let created = k["created"].as_u64().expect(&json);
            assert!(created <= now && created + 120 > now, "{json}");
            k["access_key"].as_str().expect(&json)
        })
        .collect();
    ids.sort();
    let mut want = vec![first.as_str(), second.as_str()];
    want.sort();
    assert_eq!(ids, want);
    for text in [&out, &json] {
        assert!(!text.contains(&first_secret) && !text.contains(&second_secret));
    }
    let (ok, out, _) = key(&cluster, 1, &["list", "bob"]);
    assert!(ok && out.starts_with("bob has no access keys"), "{out}");

    // Removing one: gone from every server, the other stays.
    let (ok, out, err) = key(&cluster, 1, &["del", "alice", &first]);
    assert!(ok, "{err}");
    assert!(
        out.starts_with(&format!("removed access key {first} of alice on dfs1")),
        "{out}"
    );
    everywhere(&cluster, &first, None, "the removed key is gone everywhere").await;
    for i in 1..=4 {
        assert!(cluster.server(i).unwrap().s3_key(&second).is_some());
    }

    // Refusals: one line each, naming what.
    let (ok, _, err) = key(&cluster, 2, &["del", "alice", &first]);
    assert!(!ok);
    assert_eq!(
        err.trim_end(),
        format!("dfs-server: dfs2: alice has no access key {first}")
    );
    let (ok, out, err) = key(&cluster, 2, &["add", "nobody"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert_eq!(err.trim_end(), "dfs-server: dfs2: no user nobody");
    let (ok, _, err) = key(&cluster, 2, &["list", "nobody"]);
    assert!(!ok);
    assert_eq!(err.trim_end(), "dfs-server: no user nobody");

    // Removing a user removes their keys.
    let (bobs, bobs_secret) = add_text(&cluster, 4, "bob");
    everywhere(&cluster, &bobs, Some(("bob", &bobs_secret)), "bob's key").await;
    let out = Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .args(["user", "del", "bob", "--config"])
        .arg(cluster.write_server_config(3))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    everywhere(
        &cluster,
        &bobs,
        None,
        "a removed user's key is gone everywhere",
    )
    .await;

    // With no server running, the commands work on the data folder.
    for i in 1..=4 {
        cluster.stop(i).await;
    }
    let (third, _) = add_text_offline(&cluster, 1);
    let (ok, out, err) = key(&cluster, 1, &["list", "alice"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains(&second) && out.contains(&third), "{out}");
    let (ok, out, err) = key(&cluster, 1, &["del", "alice", &third]);
    assert!(ok, "{err}");
    assert!(out.contains("in the data folders of dfs1"), "{out}");
}

/// `user key add alice` through server `via`, which is not running: the
/// key goes into its data folder.
fn add_text_offline(cluster: &Cluster, via: usize) -> (String, String) {
    let (ok, out, err) = key(cluster, via, &["add", "alice"]);
    assert!(ok, "{err}");
    assert!(err.contains("in the data folders of dfs1"), "{err}");
    let mut lines = out.lines();
    let access = lines.next().and_then(|l| l.strip_prefix("access key: "));
    let secret = lines.next().and_then(|l| l.strip_prefix("secret key: "));
    (access.expect(&out).into(), secret.expect(&out).into())
}
