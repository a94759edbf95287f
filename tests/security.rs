//! Who may do what: logins, per-user isolation, hand-built requests, names.

use ringdfs::client::{no_progress, Client};
use ringdfs::error::ErrorKind;
use ringdfs::protocol::{Request, Response, Version};
use ringdfs::Error;

use crate::util::{random_file, raw_connection, raw_login, tree, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_the_same() {
    let cluster = Cluster::start(4).await;
    let config = cluster.client_config();
    let wrong = Client::login(&config, "alice", "Wonderland").await.err();
    let unknown = Client::login(&config, "mallory", "wonderland").await.err();
    let (wrong, unknown) = (wrong.unwrap(), unknown.unwrap());
    assert!(matches!(wrong, Error::Unauthorized));
    assert!(matches!(unknown, Error::Unauthorized));
    assert_eq!(wrong.to_string(), unknown.to_string());

    // On the wire too: the same error, and no session afterwards.
    for (user, password) in [("alice", "nope"), ("nobody", "wonderland")] {
        let mut conn = raw_connection(&cluster, 1).await;
        let login = Request::Login {
            user: user.into(),
            password: password.into(),
        };
        let err = conn.call(&login).await.unwrap_err();
        assert!(matches!(err, Error::Unauthorized), "{err}");
        let err = conn.call(&Request::List).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotLoggedIn);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_login_are_refused() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = random_file(work.path(), "secret", 100);
    client.put(&path, "secret", &no_progress).await.unwrap();
    let version = client.stat("secret").await.unwrap().version;

    let mut conn = raw_connection(&cluster, 1).await;
    for request in [
        Request::List,
        Request::Status,
        Request::Stat {
            name: "secret".into(),
        },
        Request::GetChunk {
            name: "secret".into(),
            version,
            chunk: 1,
        },
        Request::Delete {
            name: "secret".into(),
            version: Version::next(Some(version)),
        },
    ] {
        let err = conn.call(&request).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotLoggedIn, "{request:?}");
    }
    // A request before Hello closes the connection.
    let mut early = crate::util::tls_connection(cluster.addr(1), &cluster.ca()).await;
    assert!(early.call(&Request::List).await.is_err());
    assert!(client
        .get("secret", &work.path().join("o"), &no_progress)
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_cannot_list_get_or_delete_alices_files() {
    let cluster = Cluster::start(4).await;
    let alice = cluster.login("alice").await;
    let bob = cluster.login("bob").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "a", 50_000);
    alice.put(&path, "diary.txt", &no_progress).await.unwrap();
    let (path, _) = random_file(work.path(), "b", 10);
    bob.put(&path, "tools.txt", &no_progress).await.unwrap();

    let names = |files: Vec<ringdfs::client::FileInfo>| {
        files
            .into_iter()
            .map(|f| (f.name, f.size))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(alice.list().await.unwrap()),
        [("diary.txt".to_string(), 50_000)]
    );
    assert_eq!(
        names(bob.list().await.unwrap()),
        [("tools.txt".to_string(), 10)]
    );
    let out = work.path().join("stolen");
    assert!(matches!(
        bob.get("diary.txt", &out, &no_progress).await,
        Err(Error::NotFound { .. })
    ));
    assert!(!out.exists());
    assert!(matches!(
        bob.delete("diary.txt").await,
        Err(Error::NotFound { .. })
    ));

    // Hand-built requests as bob, on every server.
    let version = alice.stat("diary.txt").await.unwrap().version;
    for server in 1..=4 {
        let mut conn = raw_login(&cluster, server, "bob").await;
        let stat = Request::Stat {
            name: "diary.txt".into(),
        };
        assert!(matches!(
            conn.call(&stat).await.unwrap(),
            Response::File { manifest: None, .. }
        ));
        for chunk in 1..=4 {
            let get = Request::GetChunk {
                name: "diary.txt".into(),
                version,
                chunk,
            };
            let range = Request::GetRange {
                name: "diary.txt".into(),
                version,
                chunk,
                offset: 0,
                len: 1,
            };
            for request in [get, range] {
                assert_eq!(
                    conn.call(&request).await.unwrap_err().kind(),
                    ErrorKind::NotFound,
                    "{request:?}"
                );
            }
        }
        // `alice/diary.txt` is a path in bob's own space: nothing there.
        let stat = Request::Stat {
            name: "alice/diary.txt".into(),
        };
        assert!(matches!(
            conn.call(&stat).await,
            Ok(Response::File { manifest: None, .. })
        ));
        for name in ["../alice/diary.txt", "/alice/diary.txt"] {
            let stat = Request::Stat { name: name.into() };
            assert_eq!(
                conn.call(&stat).await.unwrap_err().kind(),
                ErrorKind::InvalidName,
                "{name}"
            );
        }
        // A delete by bob only ever tombstones a name in bob's own space.
        let delete = Request::Delete {
            name: "diary.txt".into(),
            version: Version {
                gen: u64::MAX,
                writer: u64::MAX,
            },
        };
        conn.call(&delete).await.unwrap();
        match conn.call(&Request::List).await.unwrap() {
            Response::Files { files, .. } => {
                assert!(files.iter().all(|f| f.name != "diary.txt" || f.deleted));
            }
            other => panic!("{other:?}"),
        }
    }
    let out = work.path().join("diary.out");
    alice.get("diary.txt", &out, &no_progress).await.unwrap();
    assert_eq!(std::fs::read(out).unwrap(), data);
    assert_eq!(alice.list().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaping_names_are_refused_and_odd_honest_names_work() {
    let cluster = Cluster::start(4).await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, data) = random_file(work.path(), "src", 3000);
    let before = tree(cluster.dir.path());

    let long = "n".repeat(256);
    for bad in [
        "..",
        "../escape",
        "/etc/passwd",
        "a\0b",
        long.as_str(),
        "a//b",
        "a/",
        "",
    ] {
        let err = client.put(&path, bad, &no_progress).await.unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{bad:?}: {err}");
        assert!(!err.to_string().contains('\n'));
        // Straight to a server, too.
        let mut conn = raw_login(&cluster, 1, "alice").await;
        let stat = Request::Stat { name: bad.into() };
        assert_eq!(
            conn.call(&stat).await.unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        let put = Request::PutChunk {
            name: bad.into(),
            version: Version::next(None),
            chunk: 1,
            chunks: 4,
            size: 0,
        };
        assert_eq!(
            conn.call(&put).await.unwrap_err().kind(),
            ErrorKind::InvalidName
        );
    }
    assert_eq!(tree(cluster.dir.path()), before, "nothing was written");
    assert!(!std::path::Path::new("/etc/passwd.part").exists());

    for good in ["my holiday photo.jpg", "Ünïcödé файл 文件.txt", ".hidden"] {
        client.put(&path, good, &no_progress).await.unwrap();
        let out = work.path().join("out");
        client.get(good, &out, &no_progress).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data, "{good}");
    }
}

/// A TLS connection to server `i` that says Hello and logs in as alice, or
/// `None` if the server closes it anywhere on the way.
async fn try_session(cluster: &Cluster, i: usize) -> Option<crate::util::RawConn> {
    let addr = cluster.addr(i);
    let config = ringdfs::tls::client_config_for_user(&cluster.ca()).unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let stream = ringdfs::tls::connect(&config, &addr.to_string(), stream)
        .await
        .ok()?;
    let mut conn = ringdfs::protocol::Connection::new(stream, addr.to_string());
    let hello = Request::Hello {
        version: ringdfs::protocol::PROTOCOL_VERSION,
    };
    conn.call(&hello).await.ok()?;
    let login = Request::Login {
        user: "alice".into(),
        password: "wonderland".into(),
    };
    match conn.call(&login).await.ok()? {
        Response::LoggedIn { .. } => Some(conn),
        _ => None,
    }
}

/// Whether a session still answers a request.
async fn answers(conn: &mut crate::util::RawConn) -> bool {
    matches!(conn.call(&Request::List).await, Ok(Response::Files { .. }))
}

/// `max_connections`: once that many are open, one more is closed on
/// arrival, while the open ones keep working; when one of them closes, a
/// new connection is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_max_connections_are_closed_on_arrival_and_the_others_keep_working() {
    let limits = ringdfs::config::Limits {
        max_connections: 3,
        ..ringdfs::config::Limits::default()
    };
    let cluster = Cluster::start_with(1, limits, None).await;
    let mut open = Vec::new();
    for n in 1..=3 {
        let conn = try_session(&cluster, 1).await;
        open.push(conn.unwrap_or_else(|| panic!("connection {n} of 3 was refused")));
    }
    for attempt in 1..=3 {
        assert!(
            try_session(&cluster, 1).await.is_none(),
            "extra connection {attempt} was served beyond max_connections = 3"
        );
    }
    for (n, conn) in open.iter_mut().enumerate() {
        assert!(
            answers(conn).await,
            "open connection {} stopped working",
            n + 1
        );
    }
    drop(open.pop());
    let started = std::time::Instant::now();
    let mut again = loop {
        if let Some(conn) = try_session(&cluster, 1).await {
            break conn;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "after 10 s a closed connection's place is still taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(answers(&mut again).await);
    for conn in &mut open {
        assert!(answers(conn).await);
    }
    assert!(
        try_session(&cluster, 1).await.is_none(),
        "a fourth connection was served"
    );
}

/// `idle_ms`: a logged-in connection silent for longer than that is closed
/// (within a generous 20 s of a 2 s limit), while one that keeps sending
/// requests more often than that stays open for several times the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_session_is_closed_after_idle_ms_and_a_talking_one_is_not() {
    use std::time::{Duration, Instant};
    let idle = Duration::from_millis(2000);
    let limits = ringdfs::config::Limits {
        idle_ms: idle.as_millis() as u64,
        ..ringdfs::config::Limits::default()
    };
    let cluster = Cluster::start_with(1, limits, None).await;
    let mut silent = raw_login(&cluster, 1, "alice").await;
    let mut talker = raw_login(&cluster, 1, "alice").await;
    let since = Instant::now();
    let silence = async {
        let closed = tokio::time::timeout(Duration::from_secs(20), silent.recv::<Response>()).await;
        (closed, since.elapsed())
    };
    let talk = async {
        // A request every eighth of the limit, for two and a half limits.
        let mut requests = 0;
        while since.elapsed() < idle * 5 / 2 {
            tokio::time::sleep(idle / 8).await;
            let reply = talker.call(&Request::List).await;
            assert!(
                matches!(reply, Ok(Response::Files { .. })),
                "the talking session failed after {:?}: {reply:?}",
                since.elapsed()
            );
            requests += 1;
        }
        requests
    };
    let ((closed, after), requests) = tokio::join!(silence, talk);
    match closed {
        Err(_) => panic!("the silent session was still open after 20 s"),
        Ok(Ok(None)) | Ok(Err(_)) => {}
        Ok(Ok(Some(frame))) => panic!("the silent session was sent {frame:?}"),
    }
    assert!(after >= idle / 2, "closed after only {after:?}");
    assert!(requests >= 15, "{requests}");
    assert!(answers(&mut talker).await, "the talking session was closed");
    eprintln!("silent session closed after {after:?}; the other sent {requests} requests");
}
