//! The web page: the user's files and a live picture of the ring, served
//! at `/` by the same HTTPS listener as S3 and the files API.
//!
//! ```text
//! GET  /  /web/app.js  /web/app.css   the page (embedded in the binary)
//! POST /web/login    {"user","password"} → {"user","csrf"}, and the cookie
//! GET  /web/session  {"user","csrf"} of the cookie's session (401: none)
//! POST /web/logout   ends the session, clears the cookie
//! POST /web/rename   {"from","to"} → {"moved","to","missed"}
//! POST /web/share    {"path","with","access": "read"|"write"|"none"}
//! GET  /web/shares   {"shares": [...]}: what the user shares and is shared
//! GET  /web/usage    {"used","quota","files","free"}
//! GET  /web/ring     {"servers": [...]}: each member's state, in ring order
//! GET  /web/where?path=P   {"path","size","chunks": [{"chunk","copies"}]}
//! ```
//!
//! Files themselves go through the files API (`/files/…`, see [`files`]),
//! which takes the session cookie as well as Basic and bearer tokens.
//! The cookie (`ringdfs_session`: the server's session token) is HttpOnly,
//! Secure and SameSite=Strict; every request that changes something and is
//! authenticated by it must also carry `X-CSRF-Token`, a keyed BLAKE3 of
//! the token under a key only this server process knows. A login is the
//! servers' login: the same back-off after failures. Errors of requests the
//! page makes are `{"error": "one line"}`.
//!
//! [`files`]: super::files

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use cookie::{Cookie, SameSite};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use s3s::Body;
use serde::Deserialize;
use serde_json::json;

use super::{json_response, with_type, Gateway};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::protocol::Token;
use crate::sharing::Access;

/// The session cookie's name.
pub const COOKIE: &str = "ringdfs_session";
/// The header a cookie-authenticated change carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Where the page's API paths start.
const PREFIX: &str = "/web/";
/// The largest JSON body the page sends (a login, a rename).
const MAX_JSON: usize = 64 << 10;
/// The page's own rules: nothing from elsewhere, no inline script.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// The page's files: path, type, the embedded text, and its name in
/// `RINGDFS_WEB_DIR` (a folder to serve them from instead, at every
/// request: for working on the page without rebuilding).
const ASSETS: [(&str, &str, &str, &str); 3] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("web/index.html"),
        "index.html",
    ),
    (
        "/web/app.js",
        "text/javascript; charset=utf-8",
        include_str!("web/app.js"),
        "app.js",
    ),
    (
        "/web/app.css",
        "text/css; charset=utf-8",
        include_str!("web/app.css"),
        "app.css",
    ),
];

/// Whether an unsigned request to `path` is the page's: an asset or the API.
pub fn is_web(path: &str) -> bool {
    path.starts_with(PREFIX) || ASSETS.iter().any(|(p, ..)| *p == path)
}

/// Serves a request for the page or its API.
pub async fn handle(
    gateway: &Arc<Gateway>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let path = request.uri().path().to_string();
    if let Some((_, content_type, embedded, file)) = ASSETS.iter().find(|(p, ..)| *p == path) {
        return asset(request.method(), content_type, embedded, file);
    }
    match api(gateway, peer, request).await {
        Ok(response) => response,
        Err(e) => error(&e),
    }
}

/// One of the page's files.
fn asset(
    method: &Method,
    content_type: &str,
    embedded: &'static str,
    file: &str,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return error(&Error::BadRequest("the page is read with GET".into()));
    }
    let body = match std::env::var_os("RINGDFS_WEB_DIR") {
        Some(dir) => match std::fs::read(PathBuf::from(dir).join(file)) {
            Ok(text) => Bytes::from(text),
            Err(e) => return error(&Error::io(format!("RINGDFS_WEB_DIR: reading {file}"), e)),
        },
        None => Bytes::from_static(embedded.as_bytes()),
    };
    let mut response = with_type(StatusCode::OK, content_type, body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    page_headers(headers);
    response
}

/// What every answer of the page's carries: never cached, never framed,
/// never sniffed, no referrer.
fn page_headers(headers: &mut HeaderMap) {
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

#[derive(Deserialize)]
struct Rename {
    from: String,
    to: String,
}

#[derive(Deserialize)]
struct ShareWith {
    path: String,
    with: String,
    access: String,
}

async fn api(
    gateway: &Arc<Gateway>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>> {
    let (parts, body) = request.into_parts();
    let route = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let method = parts.method.clone();
    if route == "login" {
        if method != Method::POST {
            return Err(Error::BadRequest("POST /web/login".into()));
        }
        let Login { user, password } = read_json(&parts.headers, body).await?;
        crate::names::validate_user(&user).map_err(|_| Error::Unauthorized)?;
        let (token, _) = gateway
            .server
            .login(user.clone(), password, peer.ip())
            .await?;
        let mut response = json_response(
            StatusCode::OK,
            &json!({ "user": user, "csrf": gateway.csrf(&token) }),
        );
        let cookie = session_cookie(token.to_hex(), false);
        set_cookie(&mut response, &cookie);
        return Ok(response);
    }
    let (user, token) = session(gateway, &method, &parts.headers)?;
    let client = || gateway.client(&user);
    let body = match (method, route) {
        (Method::GET, "session") => json!({ "user": user, "csrf": gateway.csrf(&token) }),
        (Method::POST, "logout") => {
            gateway.server.accounts.sessions.end(&token);
            let mut response = super::empty(StatusCode::NO_CONTENT);
            set_cookie(&mut response, &session_cookie(String::new(), true));
            page_headers(response.headers_mut());
            return Ok(response);
        }
        (Method::POST, "rename") => {
            let Rename { from, to } = read_json(&parts.headers, body).await?;
            let receipt = client().await?.relink(&from, &to, false).await?;
            json!({ "moved": receipt.files, "to": receipt.to, "missed": receipt.missed })
        }
        (Method::POST, "share") => {
            let ShareWith { path, with, access } = read_json(&parts.headers, body).await?;
            let access = match access.as_str() {
                "none" => None,
                word => Some(Access::parse(word).map_err(|_| {
                    Error::BadRequest(format!("`{word}`: access is read, write or none"))
                })?),
            };
            client().await?.share(&path, &with, access).await?;
            let mut response = super::empty(StatusCode::NO_CONTENT);
            page_headers(response.headers_mut());
            return Ok(response);
        }
        (Method::GET, "shares") => {
            let shares = client().await?.shares().await?;
            let shares: Vec<_> = shares
                .iter()
                .map(|s| {
                    json!({
                        "owner": s.owner,
                        "path": s.path,
                        "user": s.user,
                        "access": s.access.as_str(),
                    })
                })
                .collect();
            json!({ "shares": shares })
        }
        (Method::GET, "usage") => {
            let usage = client().await?.usage("").await?;
            json!({
                "used": usage.report.used(),
                "quota": usage.report.quota,
                "files": usage.report.files,
                "free": usage.cluster_free,
            })
        }
        (Method::GET, "ring") => ring(&*client().await?).await,
        (Method::GET, "where") => {
            let path = parts
                .uri
                .query()
                .and_then(|q| super::files::query_value(q, "path"))
                .ok_or_else(|| Error::BadRequest("GET /web/where?path=FILE".into()))?;
            let location = client().await?.locate(&path).await?;
            let chunks: Vec<_> = location
                .chunks
                .iter()
                .enumerate()
                .map(|(i, copies)| {
                    let copies: Vec<_> = copies
                        .iter()
                        .map(|c| json!({ "server": c.server, "present": c.present }))
                        .collect();
                    json!({ "chunk": i + 1, "copies": copies })
                })
                .collect();
            json!({
                "path": path,
                "size": location.manifest.size,
                "version": format!("{:016x}-{:016x}", location.manifest.version.gen, location.manifest.version.writer),
                "chunks": chunks,
            })
        }
        (_, "session" | "logout" | "rename" | "share" | "shares" | "usage" | "ring" | "where") => {
            return Err(Error::BadRequest(format!(
                "/web/{route}: not with this method"
            )))
        }
        _ => {
            return Err(Error::NotFound {
                name: format!("/web/{route}"),
            })
        }
    };
    let mut response = json_response(StatusCode::OK, &body);
    page_headers(response.headers_mut());
    Ok(response)
}

/// Every member as the page draws it, in ring order.
async fn ring(client: &Client) -> serde_json::Value {
    let servers: Vec<_> = client
        .status()
        .await
        .into_iter()
        .map(|r| {
            let mut server = json!({
                "name": r.member.name,
                "addr": r.member.addr,
                "id": r.member.id,
                "position": r.position,
                "share": r.share,
            });
            let fields = match &r.state {
                Ok(s) => {
                    let state = if s.leaving {
                        "leaving"
                    } else if s.no_space {
                        "full"
                    } else if s.heal.missing > 0 {
                        "healing"
                    } else {
                        "up"
                    };
                    json!({
                        "state": state,
                        "id": s.id,
                        "files": s.files,
                        "chunks": s.chunks,
                        "bytes": s.bytes,
                        "heal": {
                            "missing": s.heal.missing,
                            "copied": s.heal.copied,
                            "rounds": s.heal.rounds,
                        },
                        "error": null,
                    })
                }
                Err(why) => json!({ "state": "down", "error": why }),
            };
            if let (Some(server), serde_json::Value::Object(fields)) =
                (server.as_object_mut(), fields)
            {
                server.extend(fields);
            }
            server
        })
        .collect();
    json!({ "servers": servers })
}

/// The user and token of the request's session cookie, if it has one
/// (`None`: no cookie). A change (any method but GET and HEAD) must carry
/// the session's CSRF token too.
pub fn cookie_session(
    gateway: &Gateway,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<(String, Token)>> {
    let Some(value) = cookie_value(headers) else {
        return Ok(None);
    };
    // An ended or unknown session is no login (not a wrong password).
    let token = Token::from_hex(&value).ok_or(Error::NotLoggedIn)?;
    let (user, _) = gateway
        .server
        .resume(&token)
        .map_err(|_| Error::NotLoggedIn)?;
    if method != Method::GET && method != Method::HEAD {
        let sent = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| blake3::Hash::from_hex(v.trim()).ok());
        // `blake3::Hash` compares in constant time.
        if sent != Some(gateway.csrf_hash(&token)) {
            return Err(Error::Denied(format!(
                "a change from the page needs the {CSRF_HEADER} header of its session"
            )));
        }
    }
    Ok(Some((user, token)))
}

/// Whether the request comes with the page's cookie (its errors are then
/// JSON, and a 401 asks for no Basic login).
pub fn has_cookie(headers: &HeaderMap) -> bool {
    cookie_value(headers).is_some()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(std::result::Result::ok)
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_string())
}

/// The session of a request to the page's API: required.
fn session(gateway: &Gateway, method: &Method, headers: &HeaderMap) -> Result<(String, Token)> {
    cookie_session(gateway, method, headers)?.ok_or(Error::NotLoggedIn)
}

/// The session cookie (`clear`: one that removes it).
fn session_cookie(value: String, clear: bool) -> Cookie<'static> {
    let mut cookie = Cookie::build((COOKIE, value))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .build();
    if clear {
        cookie.make_removal();
    }
    cookie
}

fn set_cookie(response: &mut Response<Body>, cookie: &Cookie<'_>) {
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A request's JSON body, of at most [`MAX_JSON`] bytes. It must say it is
/// JSON: a form on another site cannot send that type without the
/// browser asking this server first (CORS), which it never allows; so no
/// other site can post a login or a change here.
async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
) -> Result<T> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        return Err(Error::BadRequest(
            "the body must be JSON (Content-Type: application/json)".into(),
        ));
    }
    let bytes = http_body_util::Limited::new(body, MAX_JSON)
        .collect()
        .await
        .map_err(|e| Error::BadRequest(format!("the request body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::BadRequest(format!("the request body is not the JSON expected: {e}")))
}

/// An error as the page shows it: a status and `{"error": "one line"}`.
pub fn error(e: &Error) -> Response<Body> {
    let line = match e {
        Error::Unauthorized => "wrong user name or password".to_string(),
        Error::NotLoggedIn => "not logged in".to_string(),
        e => e.to_string(),
    };
    let line = line.replace(['\n', '\r'], " ");
    let mut response = json_response(super::files::status_of(e), &json!({ "error": line }));
    page_headers(response.headers_mut());
    response
}
