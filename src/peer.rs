//! Servers talking to servers: the cluster key, proving it, and connecting to
//! a peer.
//!
//! Every server of a ring shares a 32-byte cluster key (a file of 64 hex
//! digits, created at first start if missing). A server answers `Hello` with a
//! random challenge; a peer logs in with `PeerLogin{name, proof}`, where
//! `proof = BLAKE3-keyed(cluster key, "ringdfs peer login" | challenge | name)`.
//! The key never crosses the wire, and a proof is good for one connection only.
//! A peer session may read any user's files (that is what healing needs), and
//! nothing else: it cannot act as a user.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::error::{Error, Result};
use crate::protocol::{Connection, Member, Request, Response};
use crate::tls::ClientStream;

/// The secret a ring's servers share.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// Reads the key at `path`, creating it first if there is none. Creation
    /// is atomic and never replaces a key: four servers starting at once on
    /// one machine end up with the same one.
    pub fn load_or_create(path: &Path) -> Result<ClusterKey> {
        if !path.exists() {
            create(path)?;
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        parse_hex32(text.trim()).map(ClusterKey).ok_or_else(|| {
            Error::Config(format!(
                "{}: a cluster key is 64 hex digits",
                path.display()
            ))
        })
    }

    /// The proof that a peer named `name` holds the key, for one challenge.
    pub fn proof(&self, challenge: &[u8; 32], name: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"ringdfs peer login");
        h.update(challenge);
        h.update(name.as_bytes());
        *h.finalize().as_bytes()
    }

    /// Checks a proof in constant time (`blake3::Hash` compares so).
    pub fn verify(&self, challenge: &[u8; 32], name: &str, proof: &[u8; 32]) -> bool {
        blake3::Hash::from(self.proof(challenge, name)) == blake3::Hash::from(*proof)
    }

    /// The proof that server `server` holds the key and acts for `user`
    /// (its HTTP endpoints, see `Request::GatewayLogin`), for one challenge.
    /// Its own context string keeps it from ever passing as a peer proof.
    pub fn proof_for(&self, challenge: &[u8; 32], server: &str, user: &str) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"ringdfs gateway login");
        h.update(challenge);
        h.update(&(server.len() as u64).to_le_bytes());
        h.update(server.as_bytes());
        h.update(user.as_bytes());
        *h.finalize().as_bytes()
    }

    /// Checks a [`ClusterKey::proof_for`] in constant time.
    pub fn verify_for(
        &self,
        challenge: &[u8; 32],
        server: &str,
        user: &str,
        proof: &[u8; 32],
    ) -> bool {
        blake3::Hash::from(self.proof_for(challenge, server, user)) == blake3::Hash::from(*proof)
    }
}

fn create(path: &Path) -> Result<()> {
    let dir = crate::atomic::parent_or_dot(path);
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let key: [u8; 32] = rand::random();
    let text = format!("{}\n", crate::hex(&key));
    // Whoever creates it first wins; the others read theirs.
    crate::atomic::write_file(path, text.as_bytes(), 0o600, crate::atomic::Existing::Keep)?;
    Ok(())
}

pub(crate) fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A connection from this server to a peer.
pub type PeerConn = Connection<ClientStream<TcpStream>>;

/// How a server reaches its peers: its name, the cluster key and its TLS
/// client configuration (its own certificate). Handed to the ring and the
/// healer, so neither needs the server.
pub struct Link {
    pub name: String,
    key: ClusterKey,
    tls: Arc<rustls::ClientConfig>,
}

impl Link {
    pub fn new(name: String, key: ClusterKey, tls: Arc<rustls::ClientConfig>) -> Link {
        Link { name, key, tls }
    }

    /// A logged-in connection to `member`.
    pub async fn connect(&self, member: &Member, timeout: Duration) -> Result<PeerConn> {
        connect(&self.name, &self.key, &self.tls, member, timeout).await
    }
}

/// A connection to peer `member` over mutual TLS (`tls` carries this
/// server's certificate), logged in as server `me`.
pub async fn connect(
    me: &str,
    key: &ClusterKey,
    tls: &Arc<rustls::ClientConfig>,
    member: &Member,
    timeout: Duration,
) -> Result<Connection<ClientStream<TcpStream>>> {
    let (mut conn, challenge) = crate::client::dial(member, tls, timeout).await?;
    let login = Request::PeerLogin {
        name: me.to_string(),
        proof: key.proof(&challenge, me),
    };
    match conn.call(&login).await? {
        Response::Ok => Ok(conn),
        // A refused login is `Unauthorized`: the cluster keys differ.
        Response::Error(e) => Err(e.into_error(&member.name)),
        other => Err(Error::Protocol(format!("{}: {other:?}", member.name))),
    }
}

/// Why a server cannot talk to a peer, as its log says it: the three
/// causes an operator can act on, told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trouble {
    /// The peer's certificate is not signed by our authority (`ca.pem`).
    TheirCertificate,
    /// The peer's certificate does not name the host we dial it at.
    CertificateName,
    /// The peer refused our certificate in the TLS handshake.
    OurCertificate,
    /// The peer refused our `PeerLogin`: the cluster keys differ.
    ClusterKey,
    /// No answer, or not one we understand; why.
    Unreachable(String),
}

impl Trouble {
    /// Classifies a failed attempt to reach a peer (see [`connect`]).
    pub fn of(error: &Error) -> Trouble {
        match error {
            Error::Unauthorized => Trouble::ClusterKey,
            // The handshake as the dialler sees it (see `tls::connect`).
            Error::Unavailable { reason, .. } if reason.contains("TLS handshake failed") => {
                if reason.contains("not valid for name") {
                    Trouble::CertificateName
                } else if reason.contains("invalid peer certificate") {
                    Trouble::TheirCertificate
                } else if reason.contains("received fatal alert") {
                    Trouble::OurCertificate
                } else {
                    Trouble::Unreachable(reason.clone())
                }
            }
            Error::Unavailable { reason, .. } => Trouble::Unreachable(reason.clone()),
            // In TLS 1.3 the server checks the client's certificate after the
            // client has finished: its refusal is an alert on the first read.
            Error::Io { cause, .. } if refused_by_alert(cause) => Trouble::OurCertificate,
            Error::Io { cause, .. } => Trouble::Unreachable(cause.to_string()),
            e => Trouble::Unreachable(e.to_string()),
        }
    }

    /// Same cause (whatever the words of an unreachable one).
    pub fn same_cause(&self, other: &Trouble) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// The cause in plain words, with the file to check: `peer` is the
    /// peer's name, `host` the host it was dialled at.
    pub fn describe(&self, peer: &str, host: &str) -> String {
        match self {
            Trouble::TheirCertificate => format!(
                "bad certificate: {peer}'s is not signed by our authority (tls/ca.pem must be \
                 the cluster's ca.pem on every server, and each server's certificate issued by it)"
            ),
            Trouble::CertificateName => format!(
                "bad certificate: {peer}'s does not name {host} (reissue it on the authority's \
                 machine: dfs-server certs --renew {peer})"
            ),
            Trouble::OurCertificate => format!(
                "bad certificate: {peer} refuses ours (is tls/ca.pem the cluster's authority, \
                 and our certificate issued by it?)"
            ),
            Trouble::ClusterKey => format!(
                "wrong cluster key: {peer} refuses our login (cluster.key must be the same \
                 file on every server)"
            ),
            Trouble::Unreachable(why) => format!("unreachable: {why}"),
        }
    }
}

/// Whether an I/O error is a TLS alert saying the other end refused our
/// certificate.
fn refused_by_alert(cause: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let Some(rustls::Error::AlertReceived(alert)) = cause
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    matches!(
        alert,
        A::BadCertificate
            | A::UnknownCA
            | A::DecryptError
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRequired
            | A::AccessDenied
    )
}

/// How long a server stays quiet about the same refusal (see [`Refusals`]).
const REFUSAL_REMINDER: Duration = Duration::from_secs(600);

/// What a server has said about those it refused (a peer login, a TLS
/// handshake), so that it says it once per cause (and again every ten
/// minutes while it lasts), not at every attempt, several a second.
#[derive(Debug, Default)]
pub struct Refusals {
    said: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

impl Refusals {
    /// Whether to log that `who` was refused because `why`: yes the first
    /// time, when the cause changes, and every ten minutes.
    pub fn first(&self, who: &str, why: &str) -> bool {
        let mut said = self.said.lock().expect("refusals lock");
        if said.len() > 1024 {
            said.clear(); // a scan from many addresses: forget, keep bounded
        }
        let now = std::time::Instant::now();
        match said.get_mut(who) {
            Some((cause, at)) if cause == why && now.duration_since(*at) < REFUSAL_REMINDER => {
                false
            }
            _ => {
                said.insert(who.to_string(), (why.to_string(), now));
                true
            }
        }
    }

    /// `who` got in: a later refusal is news again.
    pub fn accepted(&self, who: &str) {
        self.said.lock().expect("refusals lock").remove(who);
    }
}

/// A connection to the running server `config` describes, logged in as
/// that server itself (its own certificate and the cluster key): how its
/// administrator's commands (`dfs-server leave`, `dfs-server user`) reach it.
pub async fn connect_as_self(
    config: &crate::config::ServerConfig,
    timeout: Duration,
) -> Result<PeerConn> {
    let path = config
        .cluster_key
        .as_ref()
        .ok_or_else(|| Error::Config(format!("{}: no cluster_key", config.name)))?;
    if !path.exists() {
        return Err(Error::Config(format!(
            "{}: no cluster key at {}",
            config.name,
            path.display()
        )));
    }
    let key = ClusterKey::load_or_create(path)?;
    let tls = crate::tls::client_config_for_server(&config.tls_dir, &config.name)?;
    let member = Member {
        name: config.name.clone(),
        addr: config.addr().to_string(),
        id: None,
    };
    connect(&config.name, &key, &tls, &member, timeout).await
}

/// `dfs-server leave`: asks the running server `config` describes to hand
/// its data over and leave the ring. Returns once it has (waiting at most
/// `wait`).
pub async fn request_leave(config: &crate::config::ServerConfig, wait: Duration) -> Result<()> {
    match call_as_self(config, wait, &Request::Leave).await? {
        Response::Ok => Ok(()),
        other => Err(Error::Protocol(format!("{}: {other:?}", config.name))),
    }
}

/// `dfs-server verify` of a running server: it reads and checks every copy
/// it holds. Returns the copies checked and a line per bad one.
pub async fn request_verify(config: &crate::config::ServerConfig) -> Result<(u64, Vec<String>)> {
    // Every copy is read: as long as the disk takes.
    let wait = Duration::from_secs(24 * 3600);
    match call_as_self(config, wait, &Request::VerifyStore).await? {
        Response::Verified { checked, bad } => Ok((checked, bad)),
        other => Err(Error::Protocol(format!("{}: {other:?}", config.name))),
    }
}

/// One request of the server's own administrator, answered within `wait`.
async fn call_as_self(
    config: &crate::config::ServerConfig,
    wait: Duration,
    request: &Request,
) -> Result<Response> {
    let mut conn = connect_as_self(config, Duration::from_secs(10)).await?;
    conn.set_timeout(Some(wait));
    conn.call(request).await
}

/// The file in a data folder that keeps the ring id a server chose when it
/// first joined (see [`settle_id`]).
pub const ID_FILE: &str = "ring-id";

/// Gives a server that joins without an id (none in its configuration, no
/// `[[ring]]` entry with one) its place: at its first start, the midpoint of
/// the largest gap between the members' ids, asked of its `join` address, so
/// servers started without ids still split the ring evenly. The id is kept
/// in `data/ring-id` for later starts. A data folder from before this rule
/// keeps the id it had (SHA-1 of the name). Sets `config.id`.
pub async fn settle_id(config: &mut crate::config::ServerConfig) -> Result<()> {
    let own = config
        .ring
        .iter()
        .any(|m| m.name == config.name && m.id.is_some());
    let Some(join) = config.join.clone().filter(|_| config.id.is_none() && !own) else {
        return Ok(());
    };
    let path = config.data_dir.join(ID_FILE);
    let id = match std::fs::read_to_string(&path) {
        Ok(hex) => hex.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = if config.data_dir.join(crate::store::DB_FILE).exists() {
                crate::ring::Id::of_name(&config.name)
            } else {
                choose_id(config, &join).await.map_err(|e| {
                    Error::Config(format!(
                        "{}: cannot ask {join} for the ring to choose an id: {e}",
                        config.name
                    ))
                })?
            };
            crate::server::owner_only_folder(&config.name, &config.data_dir)?;
            let hex = id.to_string();
            crate::atomic::write_file(
                &path,
                hex.as_bytes(),
                0o600,
                crate::atomic::Existing::Replace,
            )?;
            tracing::info!(server = %config.name, id = %id.short(), "chose a ring id");
            hex
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    config.id = Some(id);
    Ok(())
}

/// The midpoint of the largest gap between the ring's members (this server
/// left out), as the server at `join` sees them.
async fn choose_id(config: &crate::config::ServerConfig, join: &str) -> Result<crate::ring::Id> {
    let tls = crate::tls::client_config_for_server(&config.tls_dir, &config.name)?;
    let member = Member {
        name: join.to_string(),
        addr: join.to_string(),
        id: None,
    };
    let (mut conn, _) = crate::client::dial(&member, &tls, config.failure_timeout()).await?;
    let members = match conn.call(&Request::Ring).await? {
        Response::Ring { members, .. } => members,
        other => return Err(Error::Protocol(format!("{join}: {other:?}"))),
    };
    let ids = members
        .iter()
        .filter(|m| m.name != config.name)
        .map(crate::config::member_id)
        .collect::<Result<Vec<_>>>()?;
    Ok(crate::placement::midpoint_of_largest_gap(&ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_file_however_many_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let keys: Vec<ClusterKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| ClusterKey::load_or_create(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0].0 == w[1].0));
        assert_eq!(ClusterKey::load_or_create(&path).unwrap().0, keys[0].0);
    }

    #[test]
    fn proofs_bind_key_challenge_and_name() {
        let a = ClusterKey([1; 32]);
        let b = ClusterKey([2; 32]);
        let challenge = [7; 32];
        let proof = a.proof(&challenge, "dfs1");
        assert!(a.verify(&challenge, "dfs1", &proof));
        assert!(!a.verify(&challenge, "dfs2", &proof));
        assert!(!a.verify(&[8; 32], "dfs1", &proof));
        assert!(!b.verify(&challenge, "dfs1", &proof));
    }

    /// Dials `addr` as server `me` of the TLS folder `ours`, where a
    /// listener with `theirs`'s certificate for `them` accepts one
    /// connection; returns what the dialler makes of the failure.
    async fn trouble_dialling(
        ours: &Path,
        me: &str,
        theirs: &Path,
        them: &str,
        ip: &str,
    ) -> Trouble {
        let acceptor =
            crate::tls::TlsAcceptor::from(crate::tls::server_config(theirs, them).unwrap());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            // A refused handshake ends here, after rustls sent its alert.
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let mut buf = [0u8; 64];
                let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
            }
        });
        let tls = crate::tls::client_config_for_server(ours, me).unwrap();
        let member = Member {
            name: them.into(),
            addr: addr.to_string(),
            id: None,
        };
        let error = crate::client::dial(&member, &tls, Duration::from_secs(5))
            .await
            .err()
            .expect("the dial should fail");
        server.abort();
        Trouble::of(&error)
    }

    fn identity(name: &str, host: &str) -> crate::tls::ServerIdentity {
        crate::tls::ServerIdentity {
            name: name.into(),
            hosts: vec![host.into()],
        }
    }

    #[tokio::test]
    async fn failed_dials_say_which_certificate_is_wrong() {
        let ring = tempfile::tempdir().unwrap();
        let foreign = tempfile::tempdir().unwrap();
        crate::tls::ensure_certs(ring.path(), &[identity("dfs1", "127.0.0.1")]).unwrap();
        crate::tls::ensure_certs(foreign.path(), &[identity("dfs2", "127.0.0.1")]).unwrap();
        // dfs2 with another authority entirely: it cannot trust dfs1.
        let t = trouble_dialling(foreign.path(), "dfs2", ring.path(), "dfs1", "127.0.0.1").await;
        assert_eq!(t, Trouble::TheirCertificate);
        // dfs2 with the ring's ca.pem but a certificate from another
        // authority: dfs1 refuses it.
        let mixed = tempfile::tempdir().unwrap();
        std::fs::copy(ring.path().join("ca.pem"), mixed.path().join("ca.pem")).unwrap();
        for file in ["dfs2.pem", "dfs2.key"] {
            std::fs::copy(foreign.path().join(file), mixed.path().join(file)).unwrap();
        }
        let t = trouble_dialling(mixed.path(), "dfs2", ring.path(), "dfs1", "127.0.0.1").await;
        assert_eq!(t, Trouble::OurCertificate);
        // dfs1 dialled at an address its certificate does not name.
        crate::tls::ensure_certs(ring.path(), &[identity("dfs3", "127.0.0.1")]).unwrap();
        let t = trouble_dialling(ring.path(), "dfs3", ring.path(), "dfs1", "127.0.0.2").await;
        assert_eq!(t, Trouble::CertificateName);
        assert!(t
            .describe("dfs1", "127.0.0.2")
            .contains("certs --renew dfs1"));
    }

    #[tokio::test]
    async fn failed_dials_and_refused_logins_say_why_in_plain_words() {
        assert_eq!(Trouble::of(&Error::Unauthorized), Trouble::ClusterKey);
        let says = Trouble::ClusterKey.describe("dfs1", "10.0.0.1");
        assert!(
            says.starts_with("wrong cluster key: dfs1") && says.contains("cluster.key"),
            "{says}"
        );
        let says = Trouble::TheirCertificate.describe("dfs1", "10.0.0.1");
        assert!(
            says.starts_with("bad certificate") && says.contains("tls/ca.pem"),
            "{says}"
        );
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        crate::tls::ensure_certs(dir.path(), &[identity("dfs1", "127.0.0.1")]).unwrap();
        let tls = crate::tls::client_config_for_server(dir.path(), "dfs1").unwrap();
        let member = Member {
            name: "dfs2".into(),
            addr: format!("127.0.0.1:{port}"),
            id: None,
        };
        let e = crate::client::dial(&member, &tls, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        let t = Trouble::of(&e);
        assert!(matches!(t, Trouble::Unreachable(_)), "{t:?}");
        assert!(t.describe("dfs2", "127.0.0.1").starts_with("unreachable: "));
        // Two failures with other words but one cause are one cause.
        assert!(Trouble::Unreachable("refused".into())
            .same_cause(&Trouble::Unreachable("timed out".into())));
        assert!(!Trouble::ClusterKey.same_cause(&Trouble::OurCertificate));
    }

    #[test]
    fn a_refusal_is_said_once_per_cause() {
        let said = Refusals::default();
        assert!(said.first("login dfs2", "wrong cluster key"));
        assert!(!said.first("login dfs2", "wrong cluster key"));
        assert!(said.first("login dfs3", "wrong cluster key"));
        assert!(said.first("login dfs2", "no certificate"));
        said.accepted("login dfs2");
        assert!(said.first("login dfs2", "no certificate"));
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "not hex").unwrap();
        assert!(ClusterKey::load_or_create(&path).is_err());
    }
}
