//! Server-to-server requests are for servers only: a user's session and a
//! connection that has not logged in are refused every one of them, and
//! nothing changes on the server; a peer login needs both the cluster key
//! and a certificate from the cluster's authority naming the server it
//! claims to be; and a peer session cannot act as a user.

use std::collections::BTreeMap;

use ringdfs::client::no_progress;
use ringdfs::error::ErrorKind;
use ringdfs::peer::ClusterKey;
use ringdfs::protocol::{Connection, Request, Response, Version, PROTOCOL_VERSION};
use ringdfs::ring::{Id, Node, View, ViewEntry};
use ringdfs::tls;
use ringdfs::Error;
use tokio::net::TcpStream;

use crate::util::{random_file, raw_connection, raw_login, wait_until, Cluster, RawConn};

/// A TLS connection to server `i` made with `config` (a user's, or a
/// server's with its certificate) that has said Hello: the connection and
/// the server's challenge.
async fn hello_with(
    cluster: &Cluster,
    i: usize,
    config: &std::sync::Arc<rustls::ClientConfig>,
) -> (RawConn, [u8; 32]) {
    let addr = cluster.addr(i);
    let stream = TcpStream::connect(addr).await.unwrap();
    let stream = tls::connect(config, &addr.to_string(), stream)
        .await
        .unwrap();
    let mut conn = Connection::new(stream, addr.to_string());
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    match conn.call(&hello).await.unwrap() {
        Response::Hello { challenge, .. } => (conn, challenge),
        other => panic!("Hello answered {other:?}"),
    }
}

/// The client configuration of server `name`: its own certificate.
fn as_server(cluster: &Cluster, name: &str) -> std::sync::Arc<rustls::ClientConfig> {
    tls::client_config_for_server(&cluster.dir.path().join("tls"), name).unwrap()
}

fn cluster_key(cluster: &Cluster) -> ClusterKey {
    ClusterKey::load_or_create(&cluster.dir.path().join("cluster.key")).unwrap()
}

/// A connection to server `i` logged in as peer `name`, the way servers do it.
async fn peer_login(cluster: &Cluster, i: usize, name: &str) -> RawConn {
    let (mut conn, challenge) = hello_with(cluster, i, &as_server(cluster, name)).await;
    let login = Request::PeerLogin {
        name: name.into(),
        proof: cluster_key(cluster).proof(&challenge, name),
    };
    assert!(matches!(conn.call(&login).await.unwrap(), Response::Ok));
    conn
}

/// The names of the ring's members as server `i` answers `Ring`.
async fn members(conn: &mut RawConn) -> Vec<String> {
    match conn.call(&Request::Ring).await.unwrap() {
        Response::Ring { members, .. } => members.into_iter().map(|m| m.name).collect(),
        other => panic!("Ring answered {other:?}"),
    }
}

/// Every request only a peer server may send, with arguments that would do
/// harm if obeyed: a made-up member `dfs9` offered as predecessor and as a
/// member, dfs2 announced as gone, a leave.
fn peer_requests(version: Version) -> Vec<Request> {
    let dfs9 = Node {
        id: Id::parse_hex("f").unwrap(),
        name: "dfs9".into(),
        addr: "127.0.0.1:9".into(),
    };
    let mut view = View {
        entries: BTreeMap::new(),
    };
    view.apply(ViewEntry {
        node: dfs9.clone(),
        active: true,
        stamp: u64::MAX,
    });
    view.apply(ViewEntry {
        node: Node {
            id: Id::evenly_spaced(1, 4),
            name: "dfs2".into(),
            addr: "127.0.0.1:9".into(),
        },
        active: false,
        stamp: u64::MAX,
    });
    vec![
        Request::SyncRoot,
        Request::SyncDigests { group: None },
        Request::SyncEntries { bucket: 0 },
        Request::PeerStat {
            owner: "alice".into(),
            name: "probe.bin".into(),
        },
        Request::PeerGetChunk {
            owner: "alice".into(),
            name: "probe.bin".into(),
            version,
            chunk: 1,
        },
        Request::HealNow,
        Request::FindSuccessor {
            id: Id::parse_hex("7").unwrap(),
        },
        Request::GetPredecessor,
        Request::GetSuccessorList,
        Request::Notify {
            node: dfs9,
            view: view.clone(),
        },
        Request::ExchangeView { view },
        Request::Leave,
    ]
}

/// Which request a `Request` is, for messages and for counting variants.
fn variant(request: &Request) -> String {
    let shown = format!("{request:?}");
    shown
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap()
        .to_string()
}

/// Every peer-only request, sent by a connection that has only said Hello
/// and by alice's session, is refused (not logged in / not a user's
/// request), the connection stays usable, and the server is unchanged: the
/// same members and predecessor, not leaving, and no heal round run (its
/// count of rounds moves only when a real peer says HealNow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_only_requests_are_refused_to_users_and_strangers_and_change_nothing() {
    // Heal rounds only at start and when asked: a HealNow would show.
    let cluster = Cluster::start_tuned(4, |c| c.heal_interval_secs = 3600).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "probe", 100_000);
    client.put(&path, "probe.bin", &no_progress).await.unwrap();
    let version = client.stat("probe.bin").await.unwrap().version;
    let status = |s: &Vec<ringdfs::client::ServerReport>| s[0].state.clone().unwrap();
    wait_until(
        20,
        "dfs1 ran its first heal round and knows dfs4 precedes it",
        || async {
            let s = status(&client.status().await);
            s.heal.rounds >= 1 && s.predecessor.as_deref() == Some("dfs4")
        },
    )
    .await;
    let before = status(&client.status().await);
    assert_eq!(before.predecessor.as_deref(), Some("dfs4"));
    assert!(!before.leaving);
    let requests = peer_requests(version);
    let mut variants: Vec<String> = requests.iter().map(variant).collect();
    variants.dedup();
    assert_eq!(variants.len(), 12, "{variants:?}");
    let mut refused = Vec::new();
    for (who, mut conn, kind) in [
        (
            "a connection not logged in",
            raw_connection(&cluster, 1).await,
            ErrorKind::NotLoggedIn,
        ),
        (
            "alice's session",
            raw_login(&cluster, 1, "alice").await,
            ErrorKind::BadRequest,
        ),
    ] {
        for request in &requests {
            match conn.call(request).await {
                Err(e) => assert_eq!(e.kind(), kind, "{who}, {}: {e}", variant(request)),
                Ok(reply) => panic!("{who}, {}: answered {reply:?}", variant(request)),
            }
            // Still usable: the ring is answered to anyone.
            assert_eq!(
                members(&mut conn).await,
                ["dfs1", "dfs2", "dfs3", "dfs4"],
                "{who}"
            );
            refused.push((who, variant(request)));
        }
    }
    assert_eq!(refused.len(), 24);

    let after = status(&client.status().await);
    assert_eq!(after.ring, before.ring, "the members changed");
    assert_eq!(after.predecessor.as_deref(), Some("dfs4"));
    assert!(!after.leaving, "dfs1 is leaving");
    assert_eq!(after.heal.rounds, before.heal.rounds, "a heal round ran");
    // A real peer's HealNow does run one (so the check above could fail).
    let mut peer = peer_login(&cluster, 1, "dfs2").await;
    assert!(matches!(
        peer.call(&Request::HealNow).await.unwrap(),
        Response::Ok
    ));
    wait_until(10, "a peer's HealNow ran a heal round", || async {
        status(&client.status().await).heal.rounds > before.heal.rounds
    })
    .await;
}

/// A peer login needs the cluster key and a certificate naming the server
/// it claims to be: a wrong key, no certificate, another server's
/// certificate, or a proof made for another connection's challenge is
/// refused like a wrong password, and the connection gets no peer request
/// answered. A real peer may not make a server leave either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_logins_need_the_cluster_key_and_the_servers_own_certificate() {
    let cluster = Cluster::start(3).await;
    let key = cluster_key(&cluster);
    let other_keys = tempfile::tempdir().unwrap();
    let wrong_key = ClusterKey::load_or_create(&other_keys.path().join("other.key")).unwrap();
    let user_tls = tls::client_config_for_user(&cluster.ca()).unwrap();
    let (_, stale_challenge) = hello_with(&cluster, 1, &as_server(&cluster, "dfs2")).await;

    // (what, TLS identity, claimed name, key, use another connection's challenge)
    let cases: [(&str, Option<&str>, &str, &ClusterKey, bool); 5] = [
        (
            "the wrong cluster key",
            Some("dfs2"),
            "dfs2",
            &wrong_key,
            false,
        ),
        ("no client certificate", None, "dfs2", &key, false),
        (
            "dfs2's certificate claiming dfs3",
            Some("dfs2"),
            "dfs3",
            &key,
            false,
        ),
        (
            "dfs2's certificate claiming dfs1 itself",
            Some("dfs2"),
            "dfs1",
            &key,
            false,
        ),
        (
            "a proof for another challenge",
            Some("dfs2"),
            "dfs2",
            &key,
            true,
        ),
    ];
    for (what, cert, name, key, replay) in cases {
        let config = match cert {
            Some(server) => as_server(&cluster, server),
            None => user_tls.clone(),
        };
        let (mut conn, challenge) = hello_with(&cluster, 1, &config).await;
        let challenge = if replay { stale_challenge } else { challenge };
        let login = Request::PeerLogin {
            name: name.into(),
            proof: key.proof(&challenge, name),
        };
        match conn.call(&login).await {
            Err(Error::Unauthorized) => {}
            Err(e) => panic!("{what}: refused, but not as a failed login: {e}"),
            Ok(reply) => panic!("{what}: the peer login was accepted ({reply:?})"),
        }
        for request in [Request::SyncRoot, Request::Leave] {
            let err = conn.call(&request).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotLoggedIn, "{what}: {request:?}");
        }
    }
    // A user's session that tries to become a peer loses its session.
    let mut conn = raw_login(&cluster, 1, "alice").await;
    let login = Request::PeerLogin {
        name: "dfs2".into(),
        proof: [0; 32],
    };
    assert!(matches!(
        conn.call(&login).await.unwrap_err(),
        Error::Unauthorized
    ));
    let err = conn.call(&Request::SyncRoot).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotLoggedIn);

    // The real thing works; and even a real peer cannot make dfs1 leave.
    let mut peer = peer_login(&cluster, 1, "dfs2").await;
    assert!(matches!(
        peer.call(&Request::SyncRoot).await.unwrap(),
        Response::SyncRoot { .. }
    ));
    let err = peer.call(&Request::Leave).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    assert_eq!(members(&mut peer).await, ["dfs1", "dfs2", "dfs3"]);
    let client = cluster.login("alice").await;
    let status = client.status().await;
    assert!(status
        .iter()
        .all(|r| r.state.as_ref().is_ok_and(|s| !s.leaving)));
    assert_eq!(status.len(), 3);
}

/// A peer session may read for healing and nothing a user may: listing,
/// reading, writing, deleting or checking a user's files are refused, and
/// alice's file is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_session_cannot_act_as_a_user() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "diary", 50_000);
    client.put(&path, "diary.txt", &no_progress).await.unwrap();
    let manifest = client.stat("diary.txt").await.unwrap();
    let version = manifest.version;
    let mut peer = peer_login(&cluster, 1, "dfs2").await;
    let name = || "diary.txt".to_string();
    let requests = [
        Request::List,
        Request::Status,
        Request::Stat { name: name() },
        Request::GetChunk {
            name: name(),
            version,
            chunk: 1,
        },
        Request::Verify {
            name: name(),
            version,
            chunk: 1,
        },
        Request::Delete {
            name: name(),
            version: Version::next(Some(version)),
        },
        Request::Commit {
            manifest: ringdfs::protocol::Manifest {
                deleted: true,
                version: Version::next(Some(version)),
                ..manifest.clone()
            },
            missing: Vec::new(),
        },
    ];
    for request in &requests {
        match peer.call(request).await {
            Err(e) => assert_eq!(e.kind(), ErrorKind::BadRequest, "{request:?}: {e}"),
            Ok(reply) => panic!("a peer's {request:?} was answered {reply:?}"),
        }
    }
    let out = work.path().join("out");
    client.get("diary.txt", &out, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), data);
    assert_eq!(client.stat("diary.txt").await.unwrap().version, version);
}
