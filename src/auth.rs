//! Users, passwords and sessions: `users.toml` with argon2id PHC strings, the
//! back-off after failed logins, and the session tokens a login opens.
//!
//! ```toml
//! [users]
//! alice = "$argon2id$v=19$m=19456,t=2,p=1$...salt...$...hash..."
//! ```
//!
//! Hashes are parsed when the file is loaded, so a malformed entry is a start-up
//! error rather than a failed login later. Verification is slow on purpose
//! (argon2id); callers run it off the async threads. An unknown user is checked
//! against a dummy hash made with the same parameters as the real ones, so it
//! costs the same time as a wrong password and gets the same answer.
//!
//! * [`UserTable`] is the table a running server uses: it reloads the file
//!   when it changes, so `dfs-server user add|passwd|del` needs no restart.
//! * [`Throttle`] slows repeated failures down, per account and per address:
//!   after a few failures each further one locks the key out for twice as long
//!   as the last, up to a cap. A locked-out login is not checked at all.
//! * [`Sessions`] holds the 256-bit tokens a login returns. They are looked up
//!   by their BLAKE3 digest, whose comparison is constant-time, so neither the
//!   lookup's timing nor a memory dump gives a token away.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::validate_user;
use crate::protocol::Token;

/// Passwords longer than this are refused before hashing (hashing cost grows with length).
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct UsersFile {
    #[serde(default)]
    users: BTreeMap<String, String>,
}

/// The parsed user table.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, PasswordHash>,
    /// What an unknown user's password is checked against: a hash of a random
    /// password with the parameters most users' hashes have, made on first use
    /// (at load, for a server).
    dummy: OnceLock<PasswordHash>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Users> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Users::parse(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Users> {
        let file: UsersFile = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let mut users = BTreeMap::new();
        for (name, phc) in file.users {
            validate_user(&name)?;
            let hash = PasswordHash::new(&phc)
                .map_err(|e| Error::Config(format!("user {name}: not a PHC password hash: {e}")))?;
            if hash.algorithm.as_str() != "argon2id" {
                return Err(Error::Config(format!(
                    "user {name}: hash must be argon2id, not {}",
                    hash.algorithm
                )));
            }
            users.insert(name, hash);
        }
        let users = Users {
            users,
            dummy: OnceLock::new(),
        };
        users.dummy();
        Ok(users)
    }

    /// Writes the table to `path` atomically (temp file, sync, rename), readable
    /// by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.to_toml();
        crate::atomic::write_file(
            path,
            text.as_bytes(),
            0o600,
            crate::atomic::Existing::Replace,
        )?;
        Ok(())
    }

    /// The file's text, for writing back after `set` or `remove`.
    pub fn to_toml(&self) -> String {
        let file = UsersFile {
            users: self
                .users
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        };
        let body = toml::to_string(&file).unwrap_or_default();
        format!(
            "# ringdfs users: argon2id password hashes only. Manage with\n\
             # `dfs-server user add|passwd|del NAME`; never edit a hash by hand.\n\n{body}"
        )
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Adds or replaces `user` with an argon2id hash of `password`.
    pub fn set(&mut self, user: &str, password: &str) -> Result<()> {
        validate_user(user)?;
        let hash = hash_password(password, &Params::default())?;
        self.users.insert(user.to_string(), hash);
        self.dummy = OnceLock::new();
        Ok(())
    }

    pub fn remove(&mut self, user: &str) -> bool {
        self.users.remove(user).is_some()
    }

    /// Every user's PHC string, for checking `users.toml` holds hashes only.
    pub fn hashes(&self) -> impl Iterator<Item = (&str, String)> {
        self.users.iter().map(|(k, v)| (k.as_str(), v.to_string()))
    }

    /// True when `password` is `user`'s. Blocking and slow (argon2id): call it
    /// from `spawn_blocking`. Unknown users and wrong passwords take alike.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_LEN {
            return false;
        }
        let argon = Argon2::default();
        match self.users.get(user) {
            Some(hash) => argon.verify_password(password.as_bytes(), hash).is_ok(),
            None => {
                // Same work as a real check, and the same answer as a wrong password.
                let _ = argon.verify_password(password.as_bytes(), self.dummy());
                false
            }
        }
    }

    /// The dummy hash, with the parameters (memory, passes, lanes) most of
    /// the real hashes use, so an unknown user costs what a known one does.
    fn dummy(&self) -> &PasswordHash {
        self.dummy.get_or_init(|| {
            let mut counts: BTreeMap<(u32, u32, u32), usize> = BTreeMap::new();
            for hash in self.users.values() {
                if let Ok(p) = Params::try_from(hash) {
                    *counts
                        .entry((p.m_cost(), p.t_cost(), p.p_cost()))
                        .or_default() += 1;
                }
            }
            let params = counts
                .into_iter()
                .max_by_key(|&(_, n)| n)
                .and_then(|((m, t, p), _)| Params::new(m, t, p, None).ok())
                .unwrap_or_default();
            let random: [u8; 16] = rand::random();
            hash_password(&crate::hex(&random), &params)
                .expect("hashing a fixed-length password cannot fail")
        })
    }
}

/// The user table of a running server: the parsed `users.toml`, replaced
/// whenever the file changes.
#[derive(Debug)]
pub struct UserTable {
    path: PathBuf,
    current: RwLock<Arc<Users>>,
    /// What the file looked like when last read.
    stamp: Mutex<Option<FileStamp>>,
}

/// Enough of a file's metadata to notice a rewrite: an atomic save (rename)
/// changes the inode, an edit in place the size or the modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        })
    }
}

impl UserTable {
    pub fn load(path: &Path) -> Result<UserTable> {
        let stamp = FileStamp::of(path);
        let users = Users::load(path)?;
        Ok(UserTable {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(users)),
            stamp: Mutex::new(stamp),
        })
    }

    /// The table as of now.
    pub fn current(&self) -> Arc<Users> {
        Arc::clone(&self.current.read().expect("users lock"))
    }

    /// Re-reads the file if it changed since it was last read. Returns the
    /// users whose password changed or who were removed (their sessions should
    /// end), or `None` when the file is unchanged. A file that does not parse
    /// is an error and leaves the current table in force. Blocking (it hashes
    /// the new dummy): call it off the async threads.
    pub fn reload_if_changed(&self) -> Result<Option<Vec<String>>> {
        let stamp = FileStamp::of(&self.path);
        {
            let mut last = self.stamp.lock().expect("stamp lock");
            if *last == stamp {
                return Ok(None);
            }
            // Remember it even if parsing fails, so a broken file is reported once.
            *last = stamp;
        }
        let new = Users::load(&self.path)?;
        let old = self.current();
        let gone = old
            .users
            .iter()
            .filter(|(name, hash)| {
                new.users
                    .get(*name)
                    .is_none_or(|h| h.to_string() != hash.to_string())
            })
            .map(|(name, _)| name.clone())
            .collect();
        *self.current.write().expect("users lock") = Arc::new(new);
        Ok(Some(gone))
    }
}

/// How failed logins are slowed down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Failures allowed before the first lock-out.
    pub allowed: u32,
    /// The first lock-out; each further failure doubles it...
    pub first: Duration,
    /// ...up to this.
    pub max: Duration,
    /// A key with no failure for this long starts afresh.
    pub forget: Duration,
}

impl Backoff {
    /// How long to lock a key out after its `failures`-th failure.
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.allowed)?;
        let factor = 1u32.checked_shl(over.min(31)).unwrap_or(u32::MAX);
        Some(self.first.saturating_mul(factor).min(self.max))
    }
}

/// What failures are counted against: an account name (known or not, so a
/// lock-out says nothing about who exists), or an address (an IPv6 address by
/// its /64, which one machine usually has all of).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    User(String),
    Addr(IpAddr),
}

impl ThrottleKey {
    fn addr(ip: IpAddr) -> ThrottleKey {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    IpAddr::V6(bits.into())
                }
            },
            v4 => v4,
        };
        ThrottleKey::Addr(ip)
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// Keys tracked at most; beyond this, keys below the lock-out threshold are
/// dropped first, so a flood of made-up names cannot exhaust memory.
const MAX_THROTTLE_KEYS: usize = 100_000;

/// Failed logins per account and per address, and the lock-outs they earn.
/// Pure bookkeeping: the caller passes the time and decides what to do.
#[derive(Debug)]
pub struct Throttle {
    policy: Backoff,
    keys: Mutex<HashMap<ThrottleKey, Failures>>,
}

impl Throttle {
    pub fn new(policy: Backoff) -> Throttle {
        Throttle {
            policy,
            keys: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> Backoff {
        self.policy
    }

    /// Until when a login as `user` from `addr` is locked out, if it is.
    pub fn locked_until(&self, user: &str, addr: IpAddr, now: Instant) -> Option<Instant> {
        let keys = self.keys.lock().expect("throttle lock");
        [ThrottleKey::User(user.to_string()), ThrottleKey::addr(addr)]
            .iter()
            .filter_map(|k| keys.get(k)?.locked_until)
            .filter(|&t| t > now)
            .max()
    }

    /// Counts a failed login as `user` from `addr`.
    pub fn failed(&self, user: &str, addr: IpAddr, now: Instant) {
        let mut keys = self.keys.lock().expect("throttle lock");
        if keys.len() >= MAX_THROTTLE_KEYS {
            let policy = self.policy;
            keys.retain(|_, f| {
                now.duration_since(f.last) < policy.forget && f.count >= policy.allowed
            });
        }
        for key in [ThrottleKey::User(user.to_string()), ThrottleKey::addr(addr)] {
            if keys.len() >= MAX_THROTTLE_KEYS && !keys.contains_key(&key) {
                continue;
            }
            let entry = keys.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            if now.duration_since(entry.last) >= self.policy.forget {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            entry.locked_until = self.policy.delay(entry.count).map(|d| now + d);
        }
    }

    /// A successful login clears the account's failures (not the address's:
    /// logging in to one's own account must not reset a guessing budget).
    pub fn succeeded(&self, user: &str) {
        let mut keys = self.keys.lock().expect("throttle lock");
        keys.remove(&ThrottleKey::User(user.to_string()));
    }
}

/// Most live sessions one user may have; logging in again beyond this ends
/// the oldest, so logins cannot pile up sessions without bound.
const MAX_SESSIONS_PER_USER: usize = 256;

/// Open sessions, by the BLAKE3 digest of their token.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    open: Mutex<HashMap<blake3::Hash, Session>>,
}

#[derive(Debug)]
struct Session {
    user: String,
    expires: Instant,
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session for `user`; the token is the only way back to it.
    pub fn open(&self, user: &str) -> Token {
        let token = Token(rand::random());
        let now = Instant::now();
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, s| s.expires > now);
        let mine: Vec<_> = open
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (s.expires, *k))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_USER {
            if let Some((_, oldest)) = mine.into_iter().min_by_key(|(expires, _)| *expires) {
                open.remove(&oldest);
            }
        }
        open.insert(
            blake3::hash(&token.0),
            Session {
                user: user.to_string(),
                expires: now + self.ttl,
            },
        );
        token
    }

    /// The user of a live session. `blake3::Hash` compares in constant time.
    pub fn resume(&self, token: &Token) -> Option<String> {
        let digest = blake3::hash(&token.0);
        let open = self.open.lock().expect("sessions lock");
        open.get(&digest)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.user.clone())
    }

    /// Ends every session of these users (removed, or their password changed).
    pub fn end_for(&self, users: &[String]) {
        if users.is_empty() {
            return;
        }
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, s| !users.contains(&s.user));
    }
}

/// An argon2id PHC hash of `password` with the given cost parameters.
pub fn hash_password(password: &str, params: &Params) -> Result<PasswordHash> {
    if password.is_empty() || password.len() > MAX_PASSWORD_LEN {
        return Err(Error::BadRequest(format!(
            "a password is 1 to {MAX_PASSWORD_LEN} bytes"
        )));
    }
    let argon = Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params.clone());
    argon
        .hash_password(password.as_bytes())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn verify_accepts_the_password_and_nothing_else() {
        let mut users = Users::default();
        users.users.insert(
            "alice".into(),
            hash_password("wonderland", &cheap()).unwrap(),
        );
        assert!(users.verify("alice", "wonderland"));
        assert!(!users.verify("alice", "Wonderland"));
        assert!(!users.verify("mallory", "wonderland"));
        assert!(!users.verify("alice", &"x".repeat(MAX_PASSWORD_LEN + 1)));
    }

    #[test]
    fn the_dummy_hash_costs_what_the_real_ones_do() {
        let mut users = Users::default();
        users
            .users
            .insert("alice".into(), hash_password("w", &cheap()).unwrap());
        let dummy = Params::try_from(users.dummy()).unwrap();
        assert_eq!((dummy.m_cost(), dummy.t_cost(), dummy.p_cost()), (64, 1, 1));
        // With nobody to copy, the default (the strongest we issue).
        let empty = Users::default();
        assert_eq!(
            Params::try_from(empty.dummy()).unwrap().m_cost(),
            Params::DEFAULT_M_COST
        );
    }

    #[test]
    fn backoff_starts_after_the_allowed_failures_doubles_and_is_capped() {
        let policy = Backoff {
            allowed: 5,
            first: Duration::from_secs(1),
            max: Duration::from_secs(10),
            forget: Duration::from_secs(60),
        };
        let delays: Vec<_> = (1..=10).map(|n| policy.delay(n)).collect();
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(
            delays,
            [None, None, None, None, s(1), s(2), s(4), s(8), s(10), s(10)]
        );
        assert_eq!(policy.delay(u32::MAX), s(10));
    }

    #[test]
    fn throttle_locks_accounts_and_addresses_separately_and_forgets() {
        let throttle = Throttle::new(Backoff {
            allowed: 2,
            first: Duration::from_secs(1),
            max: Duration::from_secs(4),
            forget: Duration::from_secs(100),
        });
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        throttle.failed("alice", a, t0);
        assert_eq!(throttle.locked_until("alice", a, t0), None);
        throttle.failed("alice", b, t0);
        // Alice's account is locked from anywhere; address a is not (one failure).
        let until = throttle.locked_until("alice", a, t0).unwrap();
        assert_eq!(until, t0 + Duration::from_secs(1));
        assert_eq!(throttle.locked_until("bob", a, t0), None);
        assert_eq!(
            throttle.locked_until("alice", a, t0 + Duration::from_secs(2)),
            None
        );
        // A success clears the account, not the addresses.
        throttle.failed("mallory", b, t0);
        throttle.succeeded("alice");
        assert_eq!(throttle.locked_until("alice", a, t0), None);
        assert!(throttle.locked_until("bob", b, t0).is_some());
        // Old failures are forgotten.
        let later = t0 + Duration::from_secs(200);
        throttle.failed("carol", a, later);
        assert_eq!(throttle.locked_until("carol", a, later), None);
        // IPv6 neighbours in one /64 count as one address.
        let (x, y): (IpAddr, IpAddr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        throttle.failed("u1", x, t0);
        throttle.failed("u2", y, t0);
        assert!(throttle.locked_until("u3", x, t0).is_some());
    }

    #[test]
    fn sessions_resume_until_ended() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let token = sessions.open("alice");
        assert_eq!(sessions.resume(&token).as_deref(), Some("alice"));
        assert_eq!(sessions.resume(&Token([0; 32])), None);
        sessions.end_for(&["alice".to_string()]);
        assert_eq!(sessions.resume(&token), None);
        let expired = Sessions::new(Duration::ZERO);
        let token = expired.open("bob");
        assert_eq!(expired.resume(&token), None);
    }

    #[test]
    fn round_trips_through_toml_and_refuses_other_algorithms() {
        let mut users = Users::default();
        users
            .users
            .insert("bob".into(), hash_password("builder", &cheap()).unwrap());
        let again = Users::parse(&users.to_toml()).unwrap();
        assert!(again.verify("bob", "builder"));

        assert!(Users::parse("[users]\nbob = \"plain\"\n").is_err());
        let argon2i =
            "$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A";
        assert!(Users::parse(&format!("[users]\nbob = \"{argon2i}\"\n")).is_err());
        assert!(Users::parse("[users]\n\"../x\" = \"$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHQ$iWh06vD8Fy27wf9npn6FXWiCX4K6pW6Ue1Bnzz07Z8A\"\n").is_err());
    }
}
