//! TLS 1.3 for every connection: the cluster's certificates and the rustls
//! configurations built from them.
//!
//! # Trust
//!
//! A cluster has its own private certificate authority; nothing else is
//! trusted anywhere. [`ensure_certs`] creates it (once) and one certificate per
//! server, all in one folder (`data/tls/` for the shipped configuration):
//!
//! ```text
//! ca.pem               the authority's certificate: the only trust anchor
//! ca.key               its private key (mode 0600); needed only to issue more
//! <server>.pem/.key    a server's certificate and key (mode 0600)
//! ```
//!
//! A server certificate names the server (`dfs1`), `localhost`, `127.0.0.1`,
//! `::1` and the host it listens on, and may be used both to serve and to
//! connect, so one certificate is all a server needs:
//!
//! * a user's client ([`client_config_for_user`]) trusts `ca.pem` only (a copy
//!   under `client/`), checks the server's certificate against the host it
//!   dialled, and presents no certificate: users log in with a password
//!   inside the encrypted connection;
//! * a server connecting to another server ([`client_config_for_server`])
//!   presents its own certificate too (mutual TLS);
//! * a server ([`server_config`]) accepts both: a client without a
//!   certificate, which must then log in, or a peer presenting a certificate
//!   the authority signed, which [`peer_server`] names.
//!
//! Only TLS 1.3 is offered, with rustls' `ring` provider. Nothing here
//! implements cryptography; it only assembles rustls, rcgen and webpki.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

pub use tokio_rustls::{client::TlsStream as ClientStream, server::TlsStream as ServerStream};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The authority's name, as it appears in every certificate it issues.
const CA_NAME: &str = "ringdfs cluster CA";

/// Where a cluster's certificates live inside its TLS folder.
pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}

fn ca_key_path(dir: &Path) -> PathBuf {
    dir.join("ca.key")
}

pub fn cert_path(dir: &Path, server: &str) -> PathBuf {
    dir.join(format!("{server}.pem"))
}

pub fn key_path(dir: &Path, server: &str) -> PathBuf {
    dir.join(format!("{server}.key"))
}

/// A server that needs a certificate: its name and the hosts it is dialled at.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub name: String,
    /// Names and addresses others dial it by (`127.0.0.1`, `10.0.0.5`,
    /// `dfs1.lan`): its listen host, or what the operator gives with
    /// `dfs-server certs --host`.
    pub hosts: Vec<String>,
}

/// What [`ensure_certs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Created {
    pub authority: bool,
    pub servers: Vec<String>,
}

/// Creates, in `dir`, the cluster's authority if it is missing and a
/// certificate for every server in `servers` that has none. Existing files are
/// kept, so this is safe to run before every start.
///
/// A folder with `ca.pem` but no `ca.key` belongs to a server on another
/// machine than the authority: nothing is created there (a new authority
/// would cut it off from the others), and a missing certificate is an error
/// naming the file and how to make it.
pub fn ensure_certs(dir: &Path, servers: &[ServerIdentity]) -> Result<Created> {
    if ca_cert_path(dir).exists() && !ca_key_path(dir).exists() {
        for server in servers {
            for path in [cert_path(dir, &server.name), key_path(dir, &server.name)] {
                if !path.exists() {
                    return Err(Error::Tls(format!(
                        "{} is missing, and {} has the authority's ca.pem but not its ca.key \
                         (it is kept on the authority's machine): there, run `dfs-server certs \
                         --host {}=HOST` and copy the bundle it writes here",
                        path.display(),
                        dir.display(),
                        server.name
                    )));
                }
            }
        }
        return Ok(Created::default());
    }
    issue_certs(dir, servers, false)
}

/// (Re)issues the certificate of every server in `servers` with the
/// authority in `dir`, which must hold `ca.key`: `dfs-server certs --host`
/// and `--renew`, after a server's names or address changed.
pub fn renew_certs(dir: &Path, servers: &[ServerIdentity]) -> Result<Created> {
    if !ca_key_path(dir).exists() {
        return Err(Error::Tls(format!(
            "{} is missing: certificates are issued on the authority's machine",
            ca_key_path(dir).display()
        )));
    }
    issue_certs(dir, servers, true)
}

fn issue_certs(dir: &Path, servers: &[ServerIdentity], renew: bool) -> Result<Created> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    // Servers started at the same moment (four terminals) must not each make
    // an authority: one at a time, and the later ones find it made.
    let lock_path = dir.join(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    lock.lock()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    let mut created = Created::default();
    let (ca_params, ca_key) = if ca_key_path(dir).exists() && ca_cert_path(dir).exists() {
        let pem = read_text(&ca_key_path(dir))?;
        let key = KeyPair::from_pem(&pem).map_err(|e| {
            Error::Tls(format!(
                "{}: not a private key: {e}",
                ca_key_path(dir).display()
            ))
        })?;
        (ca_params(), key)
    } else {
        let key = KeyPair::generate().map_err(tls_error("generating the authority's key"))?;
        let params = ca_params();
        let cert = params
            .self_signed(&key)
            .map_err(tls_error("signing the authority's certificate"))?;
        write_private(&ca_key_path(dir), &key.serialize_pem())?;
        write_public(&ca_cert_path(dir), &cert.pem())?;
        created.authority = true;
        (params, key)
    };
    let issuer = Issuer::new(ca_params, ca_key);
    for server in servers {
        if !renew && cert_path(dir, &server.name).exists() && key_path(dir, &server.name).exists() {
            continue;
        }
        let key = KeyPair::generate().map_err(tls_error("generating a server key"))?;
        let cert = server_params(server)?
            .signed_by(&key, &issuer)
            .map_err(tls_error("signing a server certificate"))?;
        write_private(&key_path(dir, &server.name), &key.serialize_pem())?;
        write_public(&cert_path(dir, &server.name), &cert.pem())?;
        created.servers.push(server.name.clone());
    }
    Ok(created)
}

/// The authority's parameters. Issuing a certificate needs only the subject
/// name and key identifier method of the issuer, which are fixed, so an
/// existing authority is rebuilt from these and its stored key.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let year = this_year();
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + 20, 1, 1);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn server_params(server: &ServerIdentity) -> Result<CertificateParams> {
    let mut names = vec![
        server.name.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for host in &server.hosts {
        let unspecified = host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if !unspecified && !names.contains(host) {
            names.push(host.clone());
        }
    }
    let mut params = CertificateParams::new(names).map_err(|e| {
        Error::Tls(format!(
            "server {}: cannot put its names in a certificate: {e}",
            server.name
        ))
    })?;
    let year = this_year();
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + 10, 1, 1);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, server.name.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn this_year() -> i32 {
    // Good to a day or so, which is all validity bounds a year wide need.
    1970 + (crate::unix_now() / 31_556_952) as i32
}

/// The configuration a server accepts connections with: its own certificate,
/// and client certificates optional but, when presented, signed by the authority.
pub fn server_config(dir: &Path, server: &str) -> Result<Arc<ServerConfig>> {
    let roots = Arc::new(load_roots(&ca_cert_path(dir))?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .allow_unauthenticated()
        .build()
        .map_err(|e| Error::Tls(format!("client certificate verifier: {e}")))?;
    let (certs, key) = load_identity(dir, server)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("server {server}: {e}")))?;
    Ok(Arc::new(config))
}

/// The configuration of a server's HTTPS endpoints (S3, files API): its own
/// certificate, no client certificates, TLS 1.2 or 1.3 (for the widest
/// range of S3 tools), HTTP/1.1 (what S3 tools speak; ALPN says so).
pub fn http_server_config(dir: &Path, server: &str) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (certs, key) = load_identity(dir, server)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Tls(format!("server {server}: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The configuration a user's client connects with: trusts the authority in
/// `ca` and nothing else; presents no certificate.
pub fn client_config_for_user(ca: &Path) -> Result<Arc<ClientConfig>> {
    let config = client_builder(ca)?.with_no_client_auth();
    Ok(Arc::new(config))
}

/// The configuration server `server` connects to its peers with: trusts the
/// authority only, and proves who it is with its own certificate (mutual TLS).
pub fn client_config_for_server(dir: &Path, server: &str) -> Result<Arc<ClientConfig>> {
    let (certs, key) = load_identity(dir, server)?;
    let config = client_builder(&ca_cert_path(dir))?
        .with_client_auth_cert(certs, key)
        .map_err(|e| Error::Tls(format!("server {server}: {e}")))?;
    Ok(Arc::new(config))
}

fn client_builder(
    ca: &Path,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>> {
    let roots = load_roots(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots))
}

/// The name a server's certificate must carry for a connection to `addr`
/// (`host:port`): the host, as an IP address or a DNS name.
pub fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = host_of(addr);
    ServerName::try_from(host.to_string()).map_err(|_| {
        Error::Config(format!(
            "{addr}: the host is neither an IP address nor a DNS name"
        ))
    })
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.parse::<u16>().is_ok() => host,
        _ => addr,
    }
}

/// Completes a TLS handshake as the client on an open TCP connection to `addr`.
/// A certificate the authority did not sign, or one for another host, fails here,
/// before a byte of the protocol is sent.
pub async fn connect(
    config: &Arc<ClientConfig>,
    addr: &str,
    stream: TcpStream,
) -> Result<ClientStream<TcpStream>> {
    let name = server_name(addr)?;
    TlsConnector::from(Arc::clone(config))
        .connect(name, stream)
        .await
        .map_err(|e| {
            let hint = if e.to_string().contains("certificate") {
                " (is the client's `ca` this cluster's ca.pem?)"
            } else {
                ""
            };
            Error::Unavailable {
                server: addr.to_string(),
                reason: format!("TLS handshake failed: {e}{hint}"),
            }
        })
}

/// The client certificate of an accepted connection, if it presented one
/// (only cluster servers have one; the verifier has already checked that the
/// authority signed it for client use). See [`certificate_names`].
pub fn peer_certificate(conn: &rustls::ServerConnection) -> Option<CertificateDer<'static>> {
    conn.peer_certificates()?
        .first()
        .map(|c| c.clone().into_owned())
}

/// Whether `cert` is valid for the server name `name`.
pub fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    ServerName::try_from(name).is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
}

/// Which of `servers` the peer of an accepted connection proved to be, when it
/// presented a certificate (only cluster servers have one; the verifier has
/// already checked that the authority signed it for client use).
pub fn peer_server<'a>(
    conn: &rustls::ServerConnection,
    mut servers: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    servers
        .find(|name| {
            ServerName::try_from(*name)
                .is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
        })
        .map(str::to_string)
}

fn load_roots(ca: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = load_certs(ca)?;
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))?;
    }
    Ok(roots)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = read_text(path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn load_identity(
    dir: &Path,
    server: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = load_certs(&cert_path(dir, server))?;
    let path = key_path(dir, server);
    let text = read_text(&path)?;
    let key = PrivateKeyDer::from_pem_slice(text.as_bytes())
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    Ok((certs, key))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (create the certificates with `dfs-server certs`)"
        } else {
            ""
        };
        Error::Tls(format!("reading {}: {e}{hint}", path.display()))
    })
}

fn write_public(path: &Path, text: &str) -> Result<()> {
    write_file(path, text, 0o644)
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    write_file(path, text, 0o600)
}

/// Writes atomically with the given mode, so a key is never readable by
/// others, not even for a moment.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    crate::atomic::write_file(
        path,
        text.as_bytes(),
        mode,
        crate::atomic::Existing::Replace,
    )?;
    Ok(())
}

/// Copies the authority's certificate to `dest` (the client's trust anchor)
/// when it is missing or differs.
pub fn install_ca(dir: &Path, dest: &Path) -> Result<bool> {
    let ca = read_text(&ca_cert_path(dir))?;
    if std::fs::read_to_string(dest).is_ok_and(|old| old == ca) {
        return Ok(false);
    }
    if let Some(parent) = dest.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
    }
    write_public(dest, &ca)?;
    Ok(true)
}

fn tls_error(what: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |e| Error::Tls(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_handles_ipv4_ipv6_and_names() {
        assert_eq!(host_of("127.0.0.1:7101"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7101"), "::1");
        assert_eq!(host_of("dfs1.lan:7101"), "dfs1.lan");
        assert_eq!(host_of("dfs1"), "dfs1");
        assert!(server_name("127.0.0.1:1").is_ok());
        assert!(server_name("dfs1:1").is_ok());
    }

    #[test]
    fn certs_are_created_once_and_keys_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let ids = [ServerIdentity {
            name: "dfs1".into(),
            hosts: vec!["127.0.0.1".into()],
        }];
        let first = ensure_certs(dir.path(), &ids).unwrap();
        assert!(first.authority);
        assert_eq!(first.servers, ["dfs1"]);
        let ca = std::fs::read(ca_cert_path(dir.path())).unwrap();
        let more = [
            ids[0].clone(),
            ServerIdentity {
                name: "dfs2".into(),
                hosts: Vec::new(),
            },
        ];
        let second = ensure_certs(dir.path(), &more).unwrap();
        assert!(!second.authority);
        assert_eq!(second.servers, ["dfs2"]);
        assert_eq!(std::fs::read(ca_cert_path(dir.path())).unwrap(), ca);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [ca_key_path(dir.path()), key_path(dir.path(), "dfs2")] {
                let mode = std::fs::metadata(key).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600);
            }
        }
        // A certificate issued by the re-loaded authority still chains to it.
        server_config(dir.path(), "dfs2").unwrap();
        client_config_for_server(dir.path(), "dfs2").unwrap();
        client_config_for_user(&ca_cert_path(dir.path())).unwrap();
    }

    #[test]
    fn a_folder_with_ca_pem_but_no_ca_key_never_gets_an_authority_of_its_own() {
        let authority = tempfile::tempdir().unwrap();
        let id = |name: &str, host: &str| ServerIdentity {
            name: name.into(),
            hosts: vec![host.into()],
        };
        ensure_certs(authority.path(), &[id("dfs2", "10.0.0.2")]).unwrap();
        // dfs2's machine: what its bundle holds, no ca.key.
        let machine = tempfile::tempdir().unwrap();
        for file in ["ca.pem", "dfs2.pem", "dfs2.key"] {
            std::fs::copy(authority.path().join(file), machine.path().join(file)).unwrap();
        }
        let ca = std::fs::read(ca_cert_path(machine.path())).unwrap();
        let made = ensure_certs(machine.path(), &[id("dfs2", "10.0.0.2")]).unwrap();
        assert_eq!(made, Created::default());
        assert_eq!(std::fs::read(ca_cert_path(machine.path())).unwrap(), ca);
        assert!(!ca_key_path(machine.path()).exists());
        // A server whose certificate was not copied is told what to do.
        let err = ensure_certs(machine.path(), &[id("dfs3", "10.0.0.3")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("dfs3.pem is missing"), "{err}");
        assert!(err.contains("certs --host dfs3=HOST"), "{err}");
        assert!(!ca_key_path(machine.path()).exists());
        // Only the authority's machine reissues.
        assert!(renew_certs(machine.path(), &[id("dfs2", "10.0.0.9")]).is_err());
        let old = std::fs::read(cert_path(authority.path(), "dfs2")).unwrap();
        let renewed = renew_certs(authority.path(), &[id("dfs2", "10.0.0.9")]).unwrap();
        assert_eq!(renewed.servers, ["dfs2"]);
        assert_ne!(
            std::fs::read(cert_path(authority.path(), "dfs2")).unwrap(),
            old
        );
        server_config(authority.path(), "dfs2").unwrap();
    }
}
