//! The files API and `/health`, driven by the real `curl` against a real
//! cluster's HTTPS endpoints.

use std::path::{Path, PathBuf};
use std::process::Command;

use md5::Digest;

use crate::util::{random_file, wait_until, Cluster};

/// A cluster of four with HTTPS endpoints on ports of their own.
pub async fn http_cluster() -> Cluster {
    Cluster::start_tuned(4, |c| c.http_listen = Some("127.0.0.1:0".into())).await
}

/// What curl got: the status and the body.
pub struct Got {
    pub status: u16,
    /// What curl said on its standard error (why it failed, if it did).
    pub said: String,
    pub body: Vec<u8>,
    pub headers: String,
}

impl Got {
    /// The body as text, and curl's own complaint if it had one.
    pub fn text(&self) -> String {
        format!("{}{}", String::from_utf8_lossy(&self.body), self.said)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Runs curl against `url` with `args`, trusting the cluster's authority.
pub fn curl(cluster: &Cluster, url: &str, args: &[&str]) -> Got {
    let out = tempfile::tempdir().unwrap();
    let (body, headers) = (out.path().join("body"), out.path().join("headers"));
    let output = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(cluster.ca())
        .arg("-o")
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl said: {}", String::from_utf8_lossy(&output.stderr)));
    Got {
        status,
        said: String::from_utf8_lossy(&output.stderr).into_owned(),
        body: std::fs::read(&body).unwrap_or_default(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
    }
}

fn url(cluster: &Cluster, i: usize, path: &str) -> String {
    format!("https://{}{path}", cluster.http_addr(i))
}

const ALICE: &str = "alice:wonderland";
const BOB: &str = "bob:builder";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_stores_lists_reads_ranges_and_deletes_files_through_any_server() {
    let cluster = http_cluster().await;
    let work = tempfile::tempdir().unwrap();
    // 3 MiB + 5: four chunks of uneven length on four servers.
    let (local, data) = random_file(work.path(), "a.bin", (3 << 20) + 5);
    let local = local.to_str().unwrap();

    let put = curl(
        &cluster,
        &url(&cluster, 1, "/files/docs/a%20b.bin"),
        &["-u", ALICE, "-T", local],
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let receipt = put.json();
    assert_eq!(receipt["size"], data.len() as u64);
    let md5 = ringdfs::hex(&<[u8; 16]>::from(md5::Md5::digest(&data)));
    assert_eq!(receipt["md5"], md5);
    assert_eq!(receipt["copies"], receipt["wanted"]);

    // Read back through another server: whole, and ranges across chunks.
    let got = curl(
        &cluster,
        &url(&cluster, 3, "/files/docs/a%20b.bin"),
        &["-u", ALICE],
    );
    assert_eq!(got.status, 200);
    assert!(got.body == data, "the bytes read back differ");
    assert!(got
        .headers
        .to_ascii_lowercase()
        .contains(&format!("etag: \"{md5}\"")));
    let chunk = data.len() / 4 + 1;
    for (start, end) in [
        (0, 0),
        (chunk - 10, chunk + 10),
        (100, 3 * chunk + 7),
        (data.len() - 1, data.len() - 1),
    ] {
        let range = format!("{start}-{end}");
        let got = curl(
            &cluster,
            &url(&cluster, 2, "/files/docs/a%20b.bin"),
            &["-u", ALICE, "-r", &range],
        );
        assert_eq!(got.status, 206, "{range}: {}", got.text());
        assert!(got.body == data[start..=end], "range {range} differs");
        assert!(
            got.headers
                .contains(&format!("bytes {start}-{end}/{}", data.len())),
            "{}",
            got.headers
        );
    }
    let past = format!("{}-", data.len() + 10);
    let got = curl(
        &cluster,
        &url(&cluster, 2, "/files/docs/a%20b.bin"),
        &["-u", ALICE, "-r", &past],
    );
    assert_eq!(got.status, 416, "{}", got.text());

    // HEAD, the folder as JSON, and the same file through dfs.
    let head = curl(
        &cluster,
        &url(&cluster, 4, "/files/docs/a%20b.bin"),
        &["-u", ALICE, "-I"],
    );
    assert_eq!(head.status, 200);
    assert!(head
        .headers
        .to_ascii_lowercase()
        .contains(&format!("content-length: {}", data.len())));
    let folder = curl(&cluster, &url(&cluster, 4, "/files/docs/"), &["-u", ALICE]);
    assert_eq!(folder.status, 200, "{}", folder.text());
    let entries = folder.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "docs/a b.bin");
    assert_eq!(entries[0]["size"], data.len() as u64);
    let client = cluster.login("alice").await;
    assert_eq!(
        client.stat("docs/a b.bin").await.unwrap().size,
        data.len() as u64
    );
    // A file stored by dfs has no MD5: its ETag is its SHA-256, which no
    // client takes for one.
    let receipt = client
        .put(
            Path::new(local),
            "docs/by-dfs.bin",
            &ringdfs::client::no_progress,
        )
        .await
        .unwrap();
    let sha256: [u8; 32] = sha2::Sha256::digest(&data).into();
    assert_eq!(
        receipt.digest,
        ringdfs::protocol::FileDigest::Sha256(sha256)
    );
    let sha256 = ringdfs::hex(&sha256);
    let got = curl(
        &cluster,
        &url(&cluster, 2, "/files/docs/by-dfs.bin"),
        &["-u", ALICE, "-I"],
    );
    assert!(
        got.headers
            .to_ascii_lowercase()
            .contains(&format!("etag: \"{sha256}\"")),
        "{}",
        got.headers
    );

    // Small bodies: a key-value store.
    let put = curl(
        &cluster,
        &url(&cluster, 2, "/files/kv/colour"),
        &["-u", ALICE, "-T", &body_file(&cluster, "blue")],
    );
    assert!(put.status == 201 || put.status == 200, "{}", put.text());
    let got = curl(
        &cluster,
        &url(&cluster, 3, "/files/kv/colour"),
        &["-u", ALICE],
    );
    assert_eq!(got.text(), "blue");

    // A bearer token from /login works like the password.
    let login = curl(
        &cluster,
        &url(&cluster, 1, "/login"),
        &["-u", ALICE, "-X", "POST"],
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let token = login.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Authorization: Bearer {token}");
    let got = curl(
        &cluster,
        &url(&cluster, 1, "/files/kv/colour"),
        &["-H", &bearer],
    );
    assert_eq!(got.text(), "blue");

    // Delete: gone for both dfs and curl.
    let del = curl(
        &cluster,
        &url(&cluster, 1, "/files/docs/a%20b.bin"),
        &["-u", ALICE, "-X", "DELETE"],
    );
    assert_eq!(del.status, 204, "{}", del.text());
    let got = curl(
        &cluster,
        &url(&cluster, 2, "/files/docs/a%20b.bin"),
        &["-u", ALICE],
    );
    assert_eq!(got.status, 404, "{}", got.text());
    assert!(got.text().starts_with("no such file"), "{}", got.text());
    assert!(client.stat("docs/a b.bin").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_api_refuses_strangers_and_other_users_files_in_one_line() {
    let cluster = http_cluster().await;
    let put = curl(
        &cluster,
        &url(&cluster, 1, "/files/secret.txt"),
        &["-u", ALICE, "-T", &body_file(&cluster, "mine")],
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let got = curl(&cluster, &url(&cluster, 1, "/files/secret.txt"), &[]);
    assert_eq!(got.status, 401);
    assert!(got.headers.contains("WWW-Authenticate") || got.headers.contains("www-authenticate"));
    let got = curl(
        &cluster,
        &url(&cluster, 1, "/files/secret.txt"),
        &["-u", "alice:wrong"],
    );
    assert_eq!(got.status, 401);
    assert_eq!(got.text().lines().count(), 1, "{}", got.text());
    let got = curl(
        &cluster,
        &url(&cluster, 1, "/files/secret.txt"),
        &["-H", "Authorization: Bearer 00"],
    );
    assert_eq!(got.status, 401);
    // bob has no such file of his own, and alice shares nothing with him.
    let got = curl(
        &cluster,
        &url(&cluster, 2, "/files/secret.txt"),
        &["-u", BOB],
    );
    assert_eq!(got.status, 404, "{}", got.text());
    let got = curl(
        &cluster,
        &url(&cluster, 2, "/files/shared/alice/secret.txt"),
        &["-u", BOB],
    );
    assert_eq!(got.status, 403, "{}", got.text());
    let got = curl(
        &cluster,
        &url(&cluster, 2, "/files/shared/alice/secret.txt"),
        &["-u", BOB, "-X", "DELETE"],
    );
    assert_eq!(got.status, 403, "{}", got.text());
    // Names the servers refuse: 400 and one line.
    for bad in ["/files/a/../b", "/files/a//b", "/files/%2e%2e/x"] {
        let got = curl(
            &cluster,
            &url(&cluster, 1, bad),
            &["-u", ALICE, "--path-as-is", "-T", &body_file(&cluster, "x")],
        );
        assert_eq!(got.status, 400, "{bad}: {}", got.text());
        assert_eq!(got.text().lines().count(), 1, "{bad}: {}", got.text());
    }
    // alice's file is untouched by all of it.
    let got = curl(
        &cluster,
        &url(&cluster, 3, "/files/secret.txt"),
        &["-u", ALICE],
    );
    assert_eq!(got.text(), "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_without_login_and_an_upload_cut_off_leaves_nothing() {
    let cluster = http_cluster().await;
    let health = curl(&cluster, &url(&cluster, 2, "/health"), &[]);
    assert_eq!(health.status, 200, "{}", health.text());
    let json = health.json();
    assert_eq!(json["name"], "dfs2");
    assert_eq!(json["ring"].as_array().unwrap().len(), 4);
    assert!(json["heal"].is_object(), "{json}");

    // A client that promises 8 MiB, sends 1 MiB and goes away.
    let addr = cluster.http_addr(1);
    let mut stream = crate::util::tls_stream(addr, &cluster.ca()).await;
    use tokio::io::AsyncWriteExt;
    let auth = base64_basic(ALICE);
    let head = format!(
        "PUT /files/cut.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\n\r\n",
        8 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![7u8; 1 << 20]).await.unwrap();
    stream.flush().await.unwrap();
    drop(stream);
    let spool = ringdfs::http::spool_dir(&cluster.data_dir(1));
    wait_until(10, "the spool to empty", || async {
        files_in(&spool).is_empty()
    })
    .await;
    let client = cluster.login("alice").await;
    assert!(
        client.stat("cut.bin").await.is_err(),
        "a cut-off upload became a file"
    );
}

/// A file holding `text`, for curl's `-T` (a small body).
fn body_file(cluster: &Cluster, text: &str) -> String {
    let path = cluster.dir.path().join(format!("body-{text}"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn base64_basic(credentials: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(credentials)
}

/// Raises this process's open-file limit towards `want` (up to the hard
/// limit); returns the limit now.
fn raise_fd_limit(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_ten_thousand_idle_connections_leave_the_endpoints_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let cluster = http_cluster().await;
    let addr = cluster.http_addr(1);
    // Garbage where a TLS handshake should be, plain HTTP on the HTTPS
    // port, and a TLS client that says nothing: each connection is closed.
    let mut noise = vec![0u8; 64 << 10];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2654435761).to_le_bytes()[1];
    }
    for garbage in [
        noise.as_slice(),
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(garbage).await;
        let mut sink = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            stream.read_to_end(&mut sink),
        )
        .await;
        assert!(read.is_ok(), "a connection sending garbage was kept open");
    }
    // Garbage inside TLS: not HTTP.
    let mut tls = crate::util::tls_stream(addr, &cluster.ca()).await;
    tls.write_all(&noise[..4096]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tls.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // Ten thousand connections that say nothing (as many as this process
    // may open, beside the servers' own ends).
    let limit = raise_fd_limit(32_000);
    let n =
        10_000.min(limit.saturating_sub(ringdfs::http::MAX_CONNECTIONS as u64 + 2_000) as usize);
    if n < 10_000 {
        println!("only {n} idle connections: the open-file limit is {limit}");
    }
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => idle.push(stream),
            Err(e) => panic!("connection {} failed: {e}", idle.len()),
        }
    }
    // The other servers' endpoints serve as ever, and dfs1 is up.
    let put = curl(
        &cluster,
        &url(&cluster, 2, "/files/during.txt"),
        &["-u", ALICE, "-T", &body_file(&cluster, "during")],
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let client = cluster.login("alice").await;
    assert_eq!(client.stat("during.txt").await.unwrap().size, 6);
    drop(idle);
    // Once they are gone, dfs1's endpoint answers again.
    wait_until(30, "dfs1's endpoint to answer again", || async {
        curl(&cluster, &url(&cluster, 1, "/health"), &[]).status == 200
    })
    .await;
    let got = curl(
        &cluster,
        &url(&cluster, 1, "/files/during.txt"),
        &["-u", ALICE],
    );
    assert_eq!(got.text(), "during");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_an_http_upload_before_its_body_and_a_share_governs_curl_as_dfs() {
    let cluster = http_cluster().await;
    let (ok, _, err) = crate::util::dfs_server_user(&cluster, 1, &["quota", "alice", "1MB"]);
    assert!(ok, "{err}");
    let work = tempfile::tempdir().unwrap();
    let (big, _) = random_file(work.path(), "big", 2 << 20);
    let put = curl(
        &cluster,
        &url(&cluster, 3, "/files/big.bin"),
        &["-u", ALICE, "-T", big.to_str().unwrap()],
    );
    assert_eq!(put.status, 507, "{}", put.text());
    assert!(put.text().starts_with("quota: "), "{}", put.text());
    assert_eq!(put.text().lines().count(), 1);
    let client = cluster.login("alice").await;
    assert!(client.stat("big.bin").await.is_err());
    // What fits goes in; what alice shares read-only, bob reads but cannot change.
    let put = curl(
        &cluster,
        &url(&cluster, 3, "/files/docs/small.txt"),
        &["-u", ALICE, "-T", &body_file(&cluster, "small")],
    );
    assert_eq!(put.status, 201, "{}", put.text());
    client
        .share("docs", "bob", Some(ringdfs::sharing::Access::Read))
        .await
        .unwrap();
    let got = curl(
        &cluster,
        &url(&cluster, 2, "/files/shared/alice/docs/small.txt"),
        &["-u", BOB],
    );
    assert_eq!(got.text(), "small");
    let put = curl(
        &cluster,
        &url(&cluster, 2, "/files/shared/alice/docs/evil.txt"),
        &["-u", BOB, "-T", &body_file(&cluster, "evil")],
    );
    assert_eq!(put.status, 403, "{}", put.text());
    assert!(put.text().contains("read-only"), "{}", put.text());
    let listing = curl(
        &cluster,
        &url(&cluster, 2, "/files/shared/alice/docs/"),
        &["-u", BOB],
    );
    assert_eq!(
        listing.json()["entries"].as_array().unwrap().len(),
        1,
        "{}",
        listing.text()
    );
}
