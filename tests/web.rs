//! The web page: its API through curl (the session cookie, CSRF, users
//! kept apart), and the page itself in a real headless Chromium
//! (`tests/web/browser_suite.py`, Playwright). The browser test needs
//! Chromium and Playwright; without them it says so in one line and passes
//! (`.ci/run` installs both, so CI runs it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::http::{curl, http_cluster, Got};
use crate::util::Cluster;

const JSON: &str = "Content-Type: application/json";

fn url(cluster: &Cluster, i: usize, path: &str) -> String {
    format!("https://{}{path}", cluster.http_addr(i))
}

/// A logged-in page session: its cookie and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

impl Session {
    /// Logs `user` in through `/web/login` on server `i`.
    fn login(cluster: &Cluster, i: usize, user: &str, password: &str) -> Session {
        let body = serde_json::json!({ "user": user, "password": password }).to_string();
        let got = curl(
            cluster,
            &url(cluster, i, "/web/login"),
            &["-X", "POST", "-H", JSON, "--data-binary", &body],
        );
        assert_eq!(got.status, 200, "{}", got.text());
        let set = set_cookie(&got).expect("a login sets the session cookie");
        let cookie = set.split(';').next().unwrap().trim().to_string();
        let csrf = got.json()["csrf"].as_str().unwrap().to_string();
        Session { cookie, csrf }
    }

    /// curl with the cookie (and the CSRF token if `csrf`) and `args`.
    fn curl(&self, cluster: &Cluster, path: &str, csrf: bool, args: &[&str]) -> Got {
        let header = format!("X-CSRF-Token: {}", self.csrf);
        let mut all = vec!["-b", self.cookie.as_str()];
        if csrf {
            all.extend(["-H", header.as_str()]);
        }
        all.extend(args);
        curl(cluster, &url(cluster, 1, path), &all)
    }
}

/// The `Set-Cookie` header's value, if the answer has one.
fn set_cookie(got: &Got) -> Option<String> {
    got.headers.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("set-cookie")
            .then(|| value.trim().to_string())
    })
}

fn header(got: &Got, name: &str) -> Option<String> {
    got.headers.lines().find_map(|line| {
        let (n, value) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_logs_in_by_cookie_and_refuses_changes_without_its_csrf_token() {
    let mut cluster = http_cluster().await;
    let work = tempfile::tempdir().unwrap();

    // The page itself: no login needed, its own strict rules.
    let page = curl(&cluster, &url(&cluster, 1, "/"), &[]);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("<html"), "{}", page.text());
    let policy = header(&page, "content-security-policy").expect("the page has a CSP");
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"));
    for asset in ["/web/app.js", "/web/app.css"] {
        assert_eq!(curl(&cluster, &url(&cluster, 1, asset), &[]).status, 200);
    }

    // A wrong password: one line, and no cookie.
    let wrong = serde_json::json!({ "user": "alice", "password": "nope" }).to_string();
    let got = curl(
        &cluster,
        &url(&cluster, 1, "/web/login"),
        &["-X", "POST", "-H", JSON, "--data-binary", &wrong],
    );
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"], "wrong user name or password");
    assert!(set_cookie(&got).is_none(), "{}", got.headers);

    // The cookie's flags.
    // A login posted as a form (what another site's page could send) is
    // refused before the password is looked at.
    let body = serde_json::json!({ "user": "alice", "password": "wonderland" }).to_string();
    let got = curl(
        &cluster,
        &url(&cluster, 1, "/web/login"),
        &["-X", "POST", "--data-binary", &body],
    );
    assert_eq!(got.status, 400, "{}", got.text());
    assert!(set_cookie(&got).is_none());
    let got = curl(
        &cluster,
        &url(&cluster, 1, "/web/login"),
        &["-X", "POST", "-H", JSON, "--data-binary", &body],
    );
    let set = set_cookie(&got).unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    let alice = Session::login(&cluster, 1, "alice", "wonderland");
    let got = alice.curl(&cluster, "/web/session", false, &[]);
    assert_eq!(got.json()["user"], "alice");
    assert_eq!(got.json()["csrf"], alice.csrf.as_str());

    // A change without the CSRF token, or with another session's, is
    // refused and stores nothing; with it, it is done.
    let local = work.path().join("note.txt");
    std::fs::write(&local, b"hello from the page\n").unwrap();
    let local = local.to_str().unwrap();
    let bob = Session::login(&cluster, 1, "bob", "builder");
    let forged = Session {
        cookie: alice.cookie.clone(),
        csrf: bob.csrf.clone(),
    };
    for (who, with) in [(&alice, false), (&forged, true)] {
        let got = who.curl(&cluster, "/files/note.txt", with, &["-T", local]);
        assert_eq!(got.status, 403, "{}", got.text());
        assert!(got.json()["error"]
            .as_str()
            .unwrap()
            .contains("x-csrf-token"));
    }
    let client = cluster.login("alice").await;
    assert!(
        client.stat("note.txt").await.is_err(),
        "a refused PUT stored the file"
    );
    let got = alice.curl(&cluster, "/files/note.txt", true, &["-T", local]);
    assert_eq!(got.status, 201, "{}", got.text());
    // A read needs only the cookie; a stored file is never run as the page.
    let got = alice.curl(&cluster, "/files/note.txt?download", false, &[]);
    assert_eq!(got.body, b"hello from the page\n");
    assert!(header(&got, "content-security-policy")
        .unwrap()
        .contains("sandbox"));
    assert_eq!(
        header(&got, "content-disposition").unwrap(),
        "attachment; filename*=UTF-8''note.txt"
    );

    // Rename, share, where, usage and the ring through the page's API.
    let rename = serde_json::json!({ "from": "note.txt", "to": "docs/note.txt" }).to_string();
    let got = alice.curl(
        &cluster,
        "/web/rename",
        false,
        &["-X", "POST", "-H", JSON, "--data-binary", &rename],
    );
    assert_eq!(
        got.status,
        403,
        "a rename without the token: {}",
        got.text()
    );
    let got = alice.curl(
        &cluster,
        "/web/rename",
        true,
        &["-X", "POST", "-H", JSON, "--data-binary", &rename],
    );
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["moved"], 1);
    let listing = alice.curl(&cluster, "/files/docs/", false, &[]).json();
    assert_eq!(listing["entries"][0]["name"], "docs/note.txt");
    let at = alice
        .curl(&cluster, "/web/where?path=docs/note.txt", false, &[])
        .json();
    assert_eq!(at["size"], 20);
    let chunks = at["chunks"].as_array().unwrap();
    assert!(!chunks.is_empty());
    for chunk in chunks {
        let copies = chunk["copies"].as_array().unwrap();
        assert_eq!(copies.len(), 2, "{at}");
        assert!(copies.iter().all(|c| c["present"] == true), "{at}");
    }
    let usage = alice.curl(&cluster, "/web/usage", false, &[]).json();
    assert_eq!(usage["used"], 20);
    assert_eq!(usage["files"], 1);
    let ring = alice.curl(&cluster, "/web/ring", false, &[]).json();
    let servers = ring["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 4, "{ring}");
    assert!(servers.iter().all(|s| s["state"] == "up"), "{ring}");

    // Bob cannot reach alice's file by editing a URL, until she shares it.
    let got = bob.curl(&cluster, "/files/docs/note.txt", false, &[]);
    assert_eq!(got.status, 404, "{}", got.text());
    let got = bob.curl(&cluster, "/files/shared/alice/docs/note.txt", false, &[]);
    assert!(matches!(got.status, 403 | 404), "{}", got.text());
    let share = serde_json::json!({ "path": "docs", "with": "bob", "access": "read" }).to_string();
    let got = alice.curl(
        &cluster,
        "/web/share",
        true,
        &["-X", "POST", "-H", JSON, "--data-binary", &share],
    );
    assert_eq!(got.status, 204, "{}", got.text());
    let got = bob.curl(&cluster, "/files/shared/alice/docs/note.txt", false, &[]);
    assert_eq!(got.body, b"hello from the page\n");
    let shares = bob.curl(&cluster, "/web/shares", false, &[]).json();
    assert_eq!(shares["shares"][0]["owner"], "alice");
    // Read-only: bob's change is refused by the servers, not the page.
    let got = bob.curl(
        &cluster,
        "/files/shared/alice/docs/note.txt",
        true,
        &["-X", "DELETE"],
    );
    assert_eq!(got.status, 403, "{}", got.text());

    // A 401 of the page asks for no Basic login (no browser prompt); a
    // logout ends the session on the server, not only in the browser.
    let got = alice.curl(&cluster, "/web/logout", true, &["-X", "POST"]);
    assert_eq!(got.status, 204);
    assert!(set_cookie(&got).unwrap().contains("Max-Age=0"));
    let got = alice.curl(&cluster, "/files/docs/", false, &[]);
    assert_eq!(got.status, 401);
    assert!(
        header(&got, "www-authenticate").is_none(),
        "{}",
        got.headers
    );
    assert_eq!(got.json()["error"], "not logged in");
    assert_eq!(alice.curl(&cluster, "/web/session", false, &[]).status, 401);

    // A server that stops is down in the ring's picture within seconds.
    cluster.stop(4).await;
    crate::util::wait_until(30, "dfs4 down on the page", || async {
        let ring = bob.curl(&cluster, "/web/ring", false, &[]).json();
        let servers = ring["servers"].as_array().cloned().unwrap_or_default();
        servers.len() == 4
            && servers
                .iter()
                .all(|s| (s["name"] == "dfs4") == (s["state"] == "down"))
    })
    .await;
}

/// Whether Playwright for Python and a Chromium for it are here.
fn browser_ready() -> Option<PathBuf> {
    let playwright = std::process::Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .output()
        .is_ok_and(|o| o.status.success());
    let chromium = PathBuf::from("/usr/bin/chromium");
    (playwright && chromium.exists()).then_some(chromium)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_uploads_downloads_renames_shares_deletes_and_sees_a_server_go_down() {
    if browser_ready().is_none() {
        println!("skipped: the browser test needs /usr/bin/chromium (apt-get install chromium) and Playwright (pip install playwright)");
        return;
    }
    let mut cluster = http_cluster().await;
    let work = tempfile::tempdir().unwrap();
    // Screenshots go to RINGDFS_SHOTS if set (to look at), else stay in
    // the temp folder.
    let shots = std::env::var_os("RINGDFS_SHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| work.path().join("shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web/browser_suite.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(&script)
        .env("WEB_URL", url(&cluster, 1, "/"))
        .env("WEB_URL_2", url(&cluster, 2, "/"))
        .env("ALICE_PASSWORD", "wonderland")
        .env("BOB_PASSWORD", "builder")
        .env("WORK", work.path())
        .env("SHOTS", &shots)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Half-way the suite asks for a server to go down, to see it on the page.
    let (ask, done) = (
        work.path().join("stop-server"),
        work.path().join("server-stopped"),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut stopped = false;
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the browser suite took over 10 minutes"
        );
        if !stopped && ask.exists() {
            let which: usize = std::fs::read_to_string(&ask)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!((2..=4).contains(&which), "the page is served by server 1");
            cluster.stop(which).await;
            std::fs::write(&done, "stopped\n").unwrap();
            stopped = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser suite failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    assert!(stopped, "the suite never asked for a server to stop");
    for shot in ["files-desktop", "ring-desktop", "files-phone", "ring-phone"] {
        let file = shots.join(format!("{shot}.png"));
        let len = std::fs::metadata(&file).map_or(0, |m| m.len());
        assert!(len > 1000, "{} missing or empty", file.display());
    }
}
