//! The files API, for curl and scripts: a user's files by path.
//!
//! ```text
//! PUT    /files/PATH     the body is the file (curl -T FILE); 201 and a JSON receipt
//! GET    /files/PATH     the file (Range: bytes=A-B gives 206 and those bytes)
//! HEAD   /files/PATH     its headers: Content-Length, ETag, Last-Modified
//! DELETE /files/PATH     204
//! GET    /files/PATH/    the folder as JSON, one page ({"entries", "next"}; ?after=NEXT)
//! PUT    /files/PATH/    makes the folder; DELETE /files/PATH/ removes it (if empty)
//! POST   /login          HTTP Basic in, {"token": …} out: a bearer token for this server
//! ```
//!
//! Every request but `/login` carries HTTP Basic (the user's password,
//! checked with the same back-off as logins) or `Authorization: Bearer
//! TOKEN`. `PATH` is percent-decoded and is what `dfs` calls the file
//! (`shared/OWNER/…` included), so sharing and quotas apply as there.
//! Small bodies make it a key-value store too: `PUT /files/kv/KEY`.
//! Errors are a status and one line of text.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyStream;
use hyper::body::Incoming;
use s3s::dto::StreamingBlob;
use s3s::Body;
use serde_json::json;

use super::{empty, json_response, spool, text, web, Gateway};
use crate::client::{DirItem, Object};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::{Manifest, ObjectMeta};

/// Where the API's paths start.
pub const PREFIX: &str = "/files";

/// Serves one request of the files API (or `/login`).
pub async fn handle(
    gateway: &Arc<Gateway>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    // The web page's requests: authenticated by its cookie, answered as it
    // reads errors (JSON, and no Basic login prompt on a 401).
    let from_page =
        web::has_cookie(&parts.headers) && !parts.headers.contains_key(header::AUTHORIZATION);
    let mut body = Some(body);
    // Not a body the client holds back for `100 Continue`, nor a large
    // one: reading it would ask for what is then cut off.
    let waits = parts.headers.contains_key(header::EXPECT);
    let small = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len <= 1 << 20);
    match serve(gateway, peer, parts, &mut body).await {
        Ok(response) => response,
        Err(e) => {
            // A refusal before the body was read: a small body is read and
            // dropped first, so closing the connection does not reset it
            // under the answer (a large one was sent with Expect: 100-continue
            // by curl, and is never sent).
            if let Some(body) = body.filter(|_| small && !waits) {
                discard_small(body).await;
            }
            match from_page {
                true => web::error(&e),
                false => error_response(&e),
            }
        }
    }
}

/// Reads and drops a request body of at most 1 MiB (within 5 s).
async fn discard_small(body: Incoming) {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, 1 << 20);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), limited.collect()).await;
}

async fn serve(
    gateway: &Arc<Gateway>,
    peer: SocketAddr,
    parts: http::request::Parts,
    body: &mut Option<Incoming>,
) -> Result<Response<Body>> {
    if parts.uri.path() == "/login" {
        if parts.method != Method::POST {
            return Ok(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST /login with HTTP Basic\n",
            ));
        }
        let Some((user, password)) = basic(&parts.headers)? else {
            return Err(Error::Unauthorized);
        };
        let (token, _) = gateway
            .server
            .login(user.clone(), password, peer.ip())
            .await?;
        let body = json!({ "user": user, "token": token.to_hex() });
        return Ok(json_response(StatusCode::OK, &body));
    }
    let user = authenticate(gateway, peer, &parts.method, &parts.headers).await?;
    let path = decode_path(parts.uri.path())?;
    let client = gateway.client(&user).await?;
    let folder = path.is_empty() || path.ends_with('/');
    let name = path.trim_end_matches('/');
    match (parts.method, folder) {
        (Method::GET, true) => {
            let after = parts.uri.query().and_then(|q| query_value(q, "after"));
            let (page, next) = client.list_dir_page(name, after.as_deref()).await?;
            let entries: Vec<_> = page.iter().map(entry_json).collect();
            let body = json!({ "path": name, "entries": entries, "next": next });
            Ok(json_response(StatusCode::OK, &body))
        }
        (Method::PUT, true) => {
            client.folder(name, true).await?;
            Ok(text(StatusCode::CREATED, "created\n"))
        }
        (Method::DELETE, true) => {
            client.folder(name, false).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::PUT, false) => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // Over quota: refused before the body is taken in.
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(len) = declared {
                client.check_room(name, len).await?;
            }
            let body = body
                .take()
                .ok_or_else(|| Error::Internal("the body was taken twice".into()))?;
            let body = BodyStream::new(body);
            let data = futures_util::StreamExt::filter_map(body, |frame| async move {
                match frame {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(e) => Some(Err(e)),
                }
            });
            let spooled = spool(gateway, Box::pin(data)).await?;
            let object = Object {
                meta: ObjectMeta {
                    content_type,
                    ..ObjectMeta::default()
                },
                md5: Some(spooled.md5),
            };
            let receipt = client
                .put_object(
                    spooled.file.path(),
                    name,
                    object,
                    &crate::client::no_progress,
                )
                .await?;
            let body = json!({
                "name": name,
                "size": receipt.size,
                receipt.digest.algorithm(): receipt.digest.hex(),
                "copies": receipt.copies,
                "wanted": receipt.wanted,
                "missing": receipt.missing,
            });
            Ok(json_response(StatusCode::CREATED, &body))
        }
        (method @ (Method::GET | Method::HEAD), false) => {
            let manifest = client.stat(name).await?;
            let range = match parts.headers.get(header::RANGE) {
                Some(value) => Some(byte_range(value, manifest.size)?),
                None => None,
            };
            let mut response = Response::new(Body::empty());
            let (status, len) = match &range {
                Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
                None => (StatusCode::OK, manifest.size),
            };
            *response.status_mut() = status;
            object_headers(response.headers_mut(), &manifest, len, range.as_ref());
            let download = parts
                .uri
                .query()
                .is_some_and(|q| query_value(q, "download").is_some());
            file_safety(response.headers_mut(), name, download);
            if method == Method::GET && len > 0 {
                let (_, stream) = client.read(name, range).await?;
                *response.body_mut() = Body::from(StreamingBlob::wrap(stream));
            }
            Ok(response)
        }
        (Method::DELETE, false) => {
            client.delete(name).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET, HEAD, PUT or DELETE\n",
        )),
    }
}

/// The user a request is from: HTTP Basic, a bearer token, or the web
/// page's session cookie (with its CSRF token on a change).
async fn authenticate(
    gateway: &Gateway,
    peer: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Result<String> {
    if let Some((user, password)) = basic(headers)? {
        crate::names::validate_user(&user).map_err(|_| Error::Unauthorized)?;
        gateway.check_password(&user, &password, peer).await?;
        return Ok(user);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(token) => gateway.check_token(token.trim()),
        None => match web::cookie_session(gateway, method, headers)? {
            Some((user, _)) => Ok(user),
            None => Err(Error::Unauthorized),
        },
    }
}

/// The user and password of an `Authorization: Basic` header, if there is one.
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let Some(encoded) = value.to_str().ok().and_then(|v| v.strip_prefix("Basic ")) else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| Error::BadRequest("the Basic credentials are not base64".into()))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| Error::BadRequest("the Basic credentials are not UTF-8".into()))?;
    match decoded.split_once(':') {
        Some((user, password)) => Ok(Some((user.to_string(), password.to_string()))),
        None => Err(Error::BadRequest(
            "the Basic credentials have no ':'".into(),
        )),
    }
}

/// The remote name of a `/files/…` path, percent-decoded; a trailing `/`
/// (a folder) is kept.
fn decode_path(path: &str) -> Result<String> {
    let rest = path.strip_prefix(PREFIX).unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| Error::BadRequest("the path is not UTF-8 once decoded".into()))?;
    Ok(decoded.into_owned())
}

/// One query parameter's decoded value.
pub(super) fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// The byte range a `Range` header asks of a `size`-byte file (s3s parses
/// it, as it does for S3's ranged GET).
pub fn byte_range(value: &HeaderValue, size: u64) -> Result<std::ops::Range<u64>> {
    let text = value
        .to_str()
        .map_err(|_| Error::BadRequest("Range is not text".into()))?;
    let range = s3s::dto::Range::parse(text)
        .map_err(|_| Error::BadRequest(format!("Range {text:?} is not bytes=A-B")))?;
    range
        .check(size)
        .map_err(|_| Error::RangeNotSatisfiable { size })
}

/// Content-Length, ETag, Last-Modified, Content-Type (and Content-Range) of
/// a file's response.
fn object_headers(
    headers: &mut HeaderMap,
    m: &Manifest,
    len: u64,
    range: Option<&std::ops::Range<u64>>,
) {
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_LENGTH, len.to_string());
    set(header::ETAG, format!("\"{}\"", m.etag()));
    set(header::ACCEPT_RANGES, "bytes".into());
    let modified = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.stored_at);
    set(header::LAST_MODIFIED, httpdate::fmt_http_date(modified));
    let content_type = m
        .meta
        .as_ref()
        .and_then(|meta| meta.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".into());
    set(header::CONTENT_TYPE, content_type);
    if let Some(r) = range {
        set(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", r.start, r.end - 1, m.size),
        );
    }
}

/// A stored file is shown, never run: served on the page's origin, an
/// HTML file (or any type a browser would run) must not act as the page. A
/// sandbox gives it an origin of its own and no scripts; `download` asks
/// the browser to save it under its own name.
fn file_safety(headers: &mut HeaderMap, name: &str, download: bool) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'; media-src 'self'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if download {
        let base = name.rsplit('/').next().unwrap_or(name);
        // RFC 8187's attr-char: letters, digits and a few marks stay.
        const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'.')
            .remove(b'-')
            .remove(b'_')
            .remove(b'~');
        let encoded = percent_encoding::utf8_percent_encode(base, ENCODED);
        let value = format!("attachment; filename*=UTF-8''{encoded}");
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::CONTENT_DISPOSITION, value);
        }
    }
}

fn entry_json(item: &DirItem) -> serde_json::Value {
    match item {
        DirItem::File(f) => json!({
            "name": f.name,
            "type": "file",
            "size": f.size,
            "modified": f.stored_at,
            "etag": f.etag,
            "healthy": f.healthy(),
        }),
        DirItem::Folder(path) => json!({ "name": path, "type": "folder" }),
    }
}

/// The status an error answers with.
pub(super) fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Unauthorized | Error::NotLoggedIn => StatusCode::UNAUTHORIZED,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::Denied(_) => StatusCode::FORBIDDEN,
        Error::OverQuota(_) | Error::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        Error::InvalidName { .. } | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Refused(_) => StatusCode::CONFLICT,
        Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
        Error::Unavailable { .. } | Error::ChunkUnavailable { .. } | Error::Timeout { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::Remote { error, .. } => match error.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::InvalidName | ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NoSpace | ErrorKind::OverQuota => StatusCode::INSUFFICIENT_STORAGE,
            ErrorKind::Denied => StatusCode::FORBIDDEN,
            ErrorKind::Unauthorized | ErrorKind::NotLoggedIn => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error's answer: its status and one line of text.
fn error_response(e: &Error) -> Response<Body> {
    let status = status_of(e);
    let line = match e {
        Error::Unauthorized => {
            "login required: HTTP Basic (user:password) or Bearer TOKEN".to_string()
        }
        e => e.to_string(),
    };
    let line = line.replace(['\n', '\r'], " ");
    let mut response = text(status, &format!("{line}\n"));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ringdfs\", charset=\"UTF-8\""),
        );
    }
    response
}
