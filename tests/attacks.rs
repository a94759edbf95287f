//! Issue 12, security items 1, 2, 5 and 6: what an outside test found when it
//! attacked running servers. Parallel login guesses, a changed password's
//! open sessions, one address filling the connection cap, oversized and
//! unprintable input, and the modes of `users.toml` and the data folder.
//! Each test names the promise it pins.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ringdfs::client::Client;
use ringdfs::config::Limits;
use ringdfs::error::ErrorKind;
use ringdfs::protocol::{Request, Response, Version, MAX_FRAME, PROTOCOL_VERSION};
use ringdfs::tls::{self, ClientStream};
use ringdfs::Error;
use tokio::net::{TcpSocket, TcpStream};

use crate::util::{captured_logs, raw_connection, raw_login, wait_until, Cluster, RawConn};

/// The one answer every refused login gets.
const REFUSAL: &str = "login failed: unknown user or wrong password";

/// A plain TCP connection to `addr` from the loopback address `from`
/// (every 127.x.y.z is this machine).
async fn tcp_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// A TLS connection from `from`, or `None` if the server closes it during
/// the handshake (within 20 s: a refused connection is closed at once).
async fn tls_from(from: &str, addr: SocketAddr, ca: &Path) -> Option<ClientStream<TcpStream>> {
    let stream = tcp_from(from, addr).await.ok()?;
    let config = tls::client_config_for_user(ca).unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        tls::connect(&config, &addr.to_string(), stream),
    )
    .await
    .expect("a TLS handshake neither finished nor failed within 20 s")
    .ok()
}

/// A connection from `from` that has said Hello, or `None` if the server
/// closed it on the way.
async fn hello_from(from: &str, addr: SocketAddr, ca: &Path) -> Option<RawConn> {
    let stream = tls_from(from, addr, ca).await?;
    let mut conn = ringdfs::protocol::Connection::new(stream, addr.to_string());
    let hello = Request::Hello {
        version: PROTOCOL_VERSION,
    };
    match conn.call(&hello).await {
        Ok(Response::Hello { .. }) => Some(conn),
        _ => None,
    }
}

/// `count` connections from `from`, every one past Hello before any logs
/// in; then `login(i)` on each, all at once. The answers, in order.
async fn logins_at_once(
    from: &str,
    addr: SocketAddr,
    ca: &Path,
    count: usize,
    login: impl Fn(usize) -> Request,
) -> Vec<ringdfs::Result<Response>> {
    let mut conns = Vec::new();
    for _ in 0..count {
        conns.push(hello_from(from, addr, ca).await.expect("connected"));
    }
    let calls = conns.into_iter().enumerate().map(|(i, mut conn)| {
        let request = login(i);
        async move { conn.call(&request).await }
    });
    futures_util::future::join_all(calls).await
}

/// One login attempt on a fresh connection from `from`: `true` when it
/// succeeds; a refusal must be the one generic answer.
async fn try_login(from: &str, addr: SocketAddr, ca: &Path, user: &str, password: &str) -> bool {
    let mut conn = hello_from(from, addr, ca)
        .await
        .expect("the server closed a connection before its login");
    let login = Request::Login {
        user: user.into(),
        password: password.into(),
    };
    match conn.call(&login).await {
        Ok(Response::LoggedIn { .. }) => true,
        Err(Error::Unauthorized) => false,
        other => panic!("unexpected answer to a login: {other:?}"),
    }
}

/// Log lines (everything captured so far) that contain every one of `words`.
fn log_lines_with(words: &[&str]) -> usize {
    captured_logs()
        .lines()
        .filter(|line| words.iter().all(|w| line.contains(w)))
        .count()
}

/// `dfs-server user ACTION NAME --config CONFIG`, with the password in DFS_PASSWORD.
fn dfs_server_user(config: &Path, action: &str, name: &str, password: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dfs-server"))
        .args(["user", action, name, "--config"])
        .arg(config)
        .env("DFS_PASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "dfs-server user {action} {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// 1. Parallel guesses get no more than the allowance.

/// Hash parameters for the guessing tests: costly enough (4 MiB) that a
/// burst's connections have all sent their guess before a few are checked.
fn guessing_params() -> Option<argon2::Params> {
    Some(argon2::Params::new(4096, 1, 1, None).unwrap())
}

/// Limits for the guessing tests: 5 failures allowed, then a first lock-out
/// of 1 s; the cap is a minute, so a burst that were all counted as
/// failures would lock the account out far longer than the first back-off.
fn guessing_limits() -> Limits {
    Limits {
        login_failures_allowed: 5,
        login_backoff_ms: 1000,
        login_backoff_max_ms: 60_000,
        handshake_ms: 120_000,
        ..Limits::default()
    }
}

/// 40 wrong passwords for one account sent at once on 40 connections: every
/// one gets the same refusal, at most the allowance (5) are checked (the
/// server logs "login failed" for a checked one), and the owner, from his
/// own address, is refused at most once, within the first back-off (1 s,
/// answered within a generous 20 s), and then logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_parallel_guesses_is_checked_only_up_to_the_allowance() {
    captured_logs();
    let cluster = Cluster::start_with(1, guessing_limits(), guessing_params()).await;
    let (addr, ca) = (cluster.addr(1), cluster.ca());
    let attacker = "127.0.12.1";
    let answers: Vec<String> = logins_at_once(attacker, addr, &ca, 40, |i| Request::Login {
        user: "bob".into(),
        password: format!("guess{i}").as_str().into(),
    })
    .await
    .into_iter()
    .enumerate()
    .map(|(i, answer)| match answer {
        Err(Error::Unauthorized) => Error::Unauthorized.to_string(),
        other => panic!("guess {i}: {other:?}"),
    })
    .collect();
    assert_eq!(answers.len(), 40);
    assert!(answers.iter().all(|a| a == REFUSAL), "{answers:?}");

    let checked = log_lines_with(&["login failed", "user=bob", &format!("addr={attacker}")]);
    eprintln!("40 parallel guesses: {checked} checked");
    assert!(
        (1..=5).contains(&checked),
        "{checked} of 40 parallel guesses were checked; the allowance is 5"
    );

    // The owner, from elsewhere: refused at most once, then in.
    let mut refusals = 0;
    loop {
        let answered = tokio::time::timeout(
            Duration::from_secs(20),
            try_login("127.0.0.1", addr, &ca, "bob", "builder"),
        )
        .await
        .expect("the owner's login waited more than 20 s (the first back-off is 1 s)");
        if answered {
            break;
        }
        refusals += 1;
        assert!(refusals <= 1, "the owner was refused {refusals} times");
    }
}

/// 40 guesses at once from one address, each for a different made-up
/// account: the address's allowance (5) bounds how many are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_at_many_accounts_from_one_address_are_checked_only_up_to_the_allowance() {
    captured_logs();
    let cluster = Cluster::start_with(1, guessing_limits(), guessing_params()).await;
    let (addr, ca) = (cluster.addr(1), cluster.ca());
    let attacker = "127.0.12.2";
    let answers = logins_at_once(attacker, addr, &ca, 40, |i| Request::Login {
        user: format!("sprayed{i}"),
        password: "password1".into(),
    })
    .await;
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(Error::Unauthorized)));
    assert_eq!(refused.count(), 40);
    let checked = log_lines_with(&["login failed", "user=sprayed", &format!("addr={attacker}")]);
    eprintln!("40 parallel guesses at 40 accounts: {checked} checked");
    assert!(
        (1..=5).contains(&checked),
        "{checked} of 40 parallel guesses from one address were checked; the allowance is 5"
    );
}

/// The owner's own client logging in on many connections at once, with the
/// right password, is never refused: attempts beyond the allowance wait
/// for those under way instead of counting as failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_parallel_logins_with_the_right_password_all_succeed() {
    let cluster = Cluster::start_with(1, guessing_limits(), guessing_params()).await;
    let (addr, ca) = (cluster.addr(1), cluster.ca());
    let ok: Vec<bool> = logins_at_once("127.0.0.1", addr, &ca, 20, |_| Request::Login {
        user: "alice".into(),
        password: "wonderland".into(),
    })
    .await
    .iter()
    .map(|answer| matches!(answer, Ok(Response::LoggedIn { .. })))
    .collect();
    assert_eq!(ok.len(), 20);
    assert_eq!(ok.iter().filter(|o| **o).count(), 20, "{ok:?}");
}

// ---------------------------------------------------------------------------
// 2. A changed password ends the sessions that were open.

/// After `dfs-server user passwd bob` through dfs2, a connection already logged in as
/// bob, on every server, is refused its next request, and his old session
/// token no longer resumes; the new password works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_ends_open_sessions_on_every_server() {
    let limits = Limits {
        // The polling below tries the new password before every server has
        // read it: those failures must not lock bob out.
        login_failures_allowed: 10_000,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(4, limits, None).await;
    let mut open = Vec::new();
    for server in 1..=4 {
        let mut conn = raw_login(&cluster, server, "bob").await;
        assert!(matches!(
            conn.call(&Request::List).await,
            Ok(Response::Files { .. })
        ));
        open.push(conn);
    }
    let mut first = raw_connection(&cluster, 1).await;
    let login = Request::Login {
        user: "bob".into(),
        password: "builder".into(),
    };
    let Ok(Response::LoggedIn { token }) = first.call(&login).await else {
        panic!("bob's login failed");
    };
    let client = cluster.login("bob").await;
    client.list().await.unwrap();

    dfs_server_user(
        &cluster.write_server_config(2),
        "passwd",
        "bob",
        "a new builder",
    );
    let config = cluster.client_config();
    wait_until(15, "every server takes bob's new password", || async {
        Client::login(&config, "bob", "a new builder").await.is_ok()
    })
    .await;

    for (i, conn) in open.iter_mut().enumerate() {
        let after = conn.call(&Request::List).await;
        assert!(
            !matches!(after, Ok(Response::Files { .. })),
            "dfs{}: bob's connection from before the change still lists his files",
            i + 1
        );
    }
    let mut again = raw_connection(&cluster, 1).await;
    assert!(
        matches!(
            again.call(&Request::Resume { token }).await,
            Err(Error::Unauthorized)
        ),
        "bob's old session token still resumes"
    );
    assert!(client.list().await.is_err(), "bob's old client still lists");
}

// ---------------------------------------------------------------------------
// 5. One address cannot fill the connection cap.

/// With `max_connections = 12` and `max_connections_per_address = 4`: of
/// 16 connections from 127.0.0.2 the server keeps 4 (they still answer)
/// and closes the rest on arrival; 30 more idle TCP connections from there
/// change nothing; a client from 127.0.0.1 logs in and lists; and once the
/// flood ends, 127.0.0.2 is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_flooding_connections_does_not_lock_other_addresses_out() {
    let limits = Limits {
        max_connections: 12,
        max_connections_per_address: 4,
        handshake_ms: 120_000,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(1, limits, None).await;
    let (addr, ca) = (cluster.addr(1), cluster.ca());
    let flooder = "127.0.0.2";
    let mut held = Vec::new();
    let mut closed = 0;
    for _ in 0..16 {
        match hello_from(flooder, addr, &ca).await {
            Some(conn) => held.push(conn),
            None => closed += 1,
        }
    }
    let mut idle = Vec::new();
    for _ in 0..30 {
        if let Ok(stream) = tcp_from(flooder, addr).await {
            idle.push(stream);
        }
    }
    eprintln!(
        "{} held, {closed} closed, {} idle TCP connections made",
        held.len(),
        idle.len()
    );
    assert_eq!(held.len(), 4, "connections kept from one address");
    assert_eq!(closed, 12);

    let client = Client::login(&cluster.client_config(), "alice", "wonderland")
        .await
        .expect("a client from 127.0.0.1 was locked out by 127.0.0.2's flood");
    client.list().await.unwrap();
    for conn in &mut held {
        let login = Request::Login {
            user: "alice".into(),
            password: "wonderland".into(),
        };
        assert!(matches!(
            conn.call(&login).await,
            Ok(Response::LoggedIn { .. })
        ));
    }

    drop(held);
    drop(idle);
    wait_until(20, "127.0.0.2 is served again", || async {
        hello_from(flooder, addr, &ca).await.is_some()
    })
    .await;
}

// ---------------------------------------------------------------------------
// 6. Oversized and unprintable input; file modes.

/// The request `kind` for the file `name` (version and chunk made up, and
/// fixed, so the message's size depends on the name alone).
fn named(kind: &str, name: String) -> Request {
    let version = Version { gen: 1, writer: 1 };
    match kind {
        "Stat" => Request::Stat { name },
        "GetChunk" => Request::GetChunk {
            name,
            version,
            chunk: 1,
        },
        "Delete" => Request::Delete { name, version },
        "Verify" => Request::Verify {
            name,
            version,
            chunk: 1,
        },
        "Abort" => Request::Abort { name, version },
        "PutChunk" => Request::PutChunk {
            name,
            version,
            chunk: 1,
            chunks: 1,
            size: 0,
        },
        other => panic!("no request kind {other}"),
    }
}

/// A request of exactly the frame limit, whose name is far too long, gets
/// a one-line answer that names the name only in part, and the connection
/// goes on working (Stat, GetChunk, Delete, Verify, Abort); an upload of
/// that size gets its answer before the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_exactly_the_frame_limit_gets_a_short_answer() {
    let cluster = Cluster::start(1).await;
    let mut conn = raw_login(&cluster, 1, "alice").await;
    let kinds = ["Stat", "GetChunk", "Delete", "Verify", "Abort", "PutChunk"];
    let mut answered = 0;
    for what in kinds {
        // The name that makes the frame (tag + message) exactly MAX_FRAME bytes.
        let probe = ringdfs::codec::encode(&named(what, "x".repeat(100_000))).unwrap();
        let name = "x".repeat(100_000 + MAX_FRAME - 1 - probe.len());
        let request = named(what, name);
        assert_eq!(
            ringdfs::codec::encode(&request).unwrap().len() + 1,
            MAX_FRAME
        );
        let err = match conn.call(&request).await {
            Err(Error::Remote { error, .. }) => error,
            other => panic!("{what} of the frame limit: {other:?}"),
        };
        assert!(
            err.message.len() < 300 && !err.message.contains('\n'),
            "{what}: a {}-byte answer",
            err.message.len()
        );
        answered += 1;
        if what != "PutChunk" {
            assert!(
                matches!(conn.call(&Request::List).await, Ok(Response::Files { .. })),
                "{what}: the connection stopped working"
            );
        }
    }
    assert_eq!(answered, kinds.len());
}

/// A 100 KiB password (more than a connection may send before login) gets
/// the login refusal, on the wire and through the client, not a reset;
/// the connection then still accepts the right password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_kib_password_gets_the_login_refusal() {
    let cluster = Cluster::start(1).await;
    let huge = "p".repeat(100 << 10);
    let mut conn = raw_connection(&cluster, 1).await;
    let login = Request::Login {
        user: "alice".into(),
        password: huge.as_str().into(),
    };
    match conn.call(&login).await {
        Err(e @ Error::Unauthorized) => assert_eq!(e.to_string(), REFUSAL),
        other => panic!("a 100 KiB password got {other:?}"),
    }
    let login = Request::Login {
        user: "alice".into(),
        password: "wonderland".into(),
    };
    assert!(matches!(
        conn.call(&login).await,
        Ok(Response::LoggedIn { .. })
    ));
    match Client::login(&cluster.client_config(), "alice", &huge).await {
        Err(e @ Error::Unauthorized) => assert_eq!(e.to_string(), REFUSAL),
        Err(e) => panic!("the client got {e} for a 100 KiB password"),
        Ok(_) => panic!("a 100 KiB password logged in"),
    }
}

/// Names with Unicode bidirectional controls (which make `exe.txt` show as
/// `txt.exe`) are refused like other control characters, by the server
/// and by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_bidirectional_controls_are_refused() {
    let cluster = Cluster::start(1).await;
    let mut conn = raw_login(&cluster, 1, "alice").await;
    let client = cluster.login("alice").await;
    let work = tempfile::tempdir().unwrap();
    let (path, _) = crate::util::random_file(work.path(), "src", 100);
    let controls = [
        '\u{061C}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
        '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    ];
    let mut refused = 0;
    for c in controls {
        let name = format!("report{c}fdp.exe");
        let stat = Request::Stat { name: name.clone() };
        match conn.call(&stat).await {
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidName, "U+{:04X}: {e}", c as u32),
            Ok(reply) => panic!("U+{:04X}: the server answered {reply:?}", c as u32),
        }
        let err = client
            .put(&path, &name, &ringdfs::client::no_progress)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidName { .. }),
            "U+{:04X}: {err}",
            c as u32
        );
        refused += 1;
    }
    assert_eq!(refused, controls.len());
    assert!(client.list().await.unwrap().is_empty());
}

/// A server started on a `users.toml` of mode 0644 and a data folder of
/// mode 0755 makes them 0600 and 0700, and logs a warning naming each.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_tightens_users_toml_and_its_data_folder_and_says_so() {
    use std::os::unix::fs::PermissionsExt;
    captured_logs();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let mut cluster = Cluster::start_tuned(1, |config| {
        std::fs::create_dir_all(&config.data_dir).unwrap();
        set(&config.data_dir, 0o755).unwrap();
        set(&config.users, 0o644).unwrap();
    })
    .await;
    let (users, data) = (cluster.config(1).users.clone(), cluster.data_dir(1));
    assert_eq!(mode(&users), 0o600, "users.toml");
    assert_eq!(mode(&data), 0o700, "the data folder");
    let warnings = |path: &Path| {
        let shown = path.display().to_string();
        log_lines_with(&["WARN", &shown, "0600"]) + log_lines_with(&["WARN", &shown, "0700"])
    };
    assert_eq!(
        warnings(&users),
        1,
        "one warning naming {}",
        users.display()
    );
    assert_eq!(warnings(&data), 1, "one warning naming {}", data.display());
    // A restart on the tightened modes has nothing more to say.
    cluster.stop(1).await;
    cluster.restart(1).await;
    cluster.login("alice").await.list().await.unwrap();
    assert_eq!(
        warnings(&users) + warnings(&data),
        2,
        "warned again after a restart"
    );
    assert_eq!((mode(&users), mode(&data)), (0o600, 0o700));
}
