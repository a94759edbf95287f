//! Users, passwords and sessions: tables of argon2id PHC strings (a server's
//! come from the cluster, see `accounts`; `users.toml` seeds them), the
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
//! * [`Throttle`] slows repeated failures down, per account and per address:
//!   after a few failures each further one locks the key out for twice as long
//!   as the last, up to a cap. A locked-out login is not checked at all. An
//!   attempt counts from its start, so guesses sent at once on many
//!   connections are checked no further than the allowance.
//! * [`Sessions`] holds the 256-bit tokens a login returns. They are looked up
//!   by their BLAKE3 digest, whose comparison is constant-time, so neither the
//!   lookup's timing nor a memory dump gives a token away. Ending a user's
//!   sessions also ends the connections logged in as that user.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
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
        let hashes = read_hashes(path)?;
        Users::from_hashes(hashes.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    pub fn parse(text: &str) -> Result<Users> {
        let file: UsersFile = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        Users::from_hashes(file.users.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// A table of these users and their PHC strings, each checked to be an
    /// argon2id hash. Makes the dummy hash (slow: call it off the async threads).
    pub fn from_hashes<'a>(hashes: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Users> {
        let mut users = BTreeMap::new();
        for (name, phc) in hashes {
            validate_user(name)?;
            users.insert(name.to_string(), parse_phc(name, phc)?);
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

/// The users of a `users.toml` and their PHC strings, each checked (a
/// valid name, an argon2id hash), without building a table.
pub fn read_hashes(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let in_file = |e: Error| Error::Config(format!("{}: {e}", path.display()));
    let file: UsersFile =
        toml::from_str(&text).map_err(|e| in_file(Error::Config(e.to_string())))?;
    for (name, phc) in &file.users {
        validate_user(name)
            .and_then(|()| parse_phc(name, phc).map(drop))
            .map_err(in_file)?;
    }
    Ok(file.users.into_iter().collect())
}

/// `phc` parsed, if it is an argon2id hash.
pub fn parse_phc(name: &str, phc: &str) -> Result<PasswordHash> {
    let hash = PasswordHash::new(phc)
        .map_err(|e| Error::Config(format!("user {name}: not a PHC password hash: {e}")))?;
    if hash.algorithm.as_str() != "argon2id" {
        return Err(Error::Config(format!(
            "user {name}: hash must be argon2id, not {}",
            hash.algorithm
        )));
    }
    Ok(hash)
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
/// lock-out says nothing about who exists), or an address (see [`address_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ThrottleKey {
    User(String),
    Addr(IpAddr),
}

impl ThrottleKey {
    fn addr(ip: IpAddr) -> ThrottleKey {
        ThrottleKey::Addr(address_key(ip))
    }
}

/// The address a client is counted by, for login failures and connection
/// limits: an IPv4 address as it is (an IPv4-mapped IPv6 one as IPv4), an
/// IPv6 address by its /64, which one machine usually has all of.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
    /// Attempts being checked now: they count against the allowance from
    /// the moment they start, as if each were going to fail.
    in_flight: u32,
}

impl Failures {
    fn new(now: Instant) -> Failures {
        Failures {
            count: 0,
            last: now,
            locked_until: None,
            in_flight: 0,
        }
    }
}

/// Keys tracked at most; beyond this, keys below the lock-out threshold are
/// dropped first, so a flood of made-up names cannot exhaust memory.
const MAX_THROTTLE_KEYS: usize = 100_000;

/// Most login attempts checked at once for one account, or from one
/// address, however large the allowance.
pub const MAX_ATTEMPTS_IN_FLIGHT: u32 = 4;

/// Failed logins per account and per address, and the lock-outs they earn.
///
/// An attempt counts from the moment it starts ([`Throttle::begin`]):
/// attempts under way and failures together never exceed the allowance, so
/// a burst of guesses sent at once is checked no further than guesses sent
/// one by one. An attempt beyond what is left of the allowance waits for
/// those under way: if they fail, the lock-out they earn refuses it
/// unchecked; if they succeed (the owner's own parallel logins), it goes on.
/// Refusals during a lock-out are not failures, so a burst cannot lengthen
/// the lock-out beyond what the failures it had checked earn.
#[derive(Debug)]
pub struct Throttle {
    policy: Backoff,
    keys: Mutex<HashMap<ThrottleKey, Failures>>,
    /// Woken whenever an attempt ends, for the attempts waiting for room.
    ended: tokio::sync::Notify,
}

/// Whether an attempt may start now.
enum Admission {
    Go,
    Wait,
    Locked(Instant),
}

/// A login attempt under way, from [`Throttle::begin`]. Say how it ended
/// with [`Attempt::succeeded`] or [`Attempt::failed`]; one dropped unsaid
/// (its connection went away mid-check) counts as a failure.
#[derive(Debug)]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    user: String,
    addr: IpAddr,
    done: bool,
}

impl Attempt<'_> {
    pub fn succeeded(mut self) {
        self.done = true;
        self.throttle
            .ended(&self.user, self.addr, true, Instant::now());
    }

    pub fn failed(mut self) {
        self.done = true;
        self.throttle
            .ended(&self.user, self.addr, false, Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle
                .ended(&self.user, self.addr, false, Instant::now());
        }
    }
}

impl Throttle {
    pub fn new(policy: Backoff) -> Throttle {
        Throttle {
            policy,
            keys: Mutex::new(HashMap::new()),
            ended: tokio::sync::Notify::new(),
        }
    }

    pub fn policy(&self) -> Backoff {
        self.policy
    }

    /// Starts a login attempt as `user` from `addr`: waits while the
    /// allowance is taken by attempts under way, then either admits it or,
    /// during a lock-out, says until when the lock-out lasts.
    pub async fn begin(
        &self,
        user: &str,
        addr: IpAddr,
    ) -> std::result::Result<Attempt<'_>, Instant> {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before looking, so an end between the look and the
            // wait is not missed.
            ended.as_mut().enable();
            match self.admit(user, addr, Instant::now()) {
                Admission::Go => {
                    return Ok(Attempt {
                        throttle: self,
                        user: user.to_string(),
                        addr,
                        done: false,
                    })
                }
                Admission::Locked(until) => return Err(until),
                Admission::Wait => ended.await,
            }
        }
    }

    /// Whether an attempt may start now; if so, counts it as under way.
    fn admit(&self, user: &str, addr: IpAddr, now: Instant) -> Admission {
        let mut keys = self.keys.lock().expect("throttle lock");
        self.make_room(&mut keys, now);
        let both = [ThrottleKey::User(user.to_string()), ThrottleKey::addr(addr)];
        let mut locked = None;
        let mut full = false;
        for key in &both {
            let Some(f) = keys.get_mut(key) else { continue };
            if f.in_flight == 0 && now.duration_since(f.last) >= self.policy.forget {
                f.count = 0;
                f.locked_until = None;
            }
            if let Some(until) = f.locked_until.filter(|&t| t > now) {
                locked = locked.max(Some(until));
            }
            // What is left of the allowance; once it is used up, one attempt
            // at a time (each after the lock-out its predecessor earned).
            let room = self
                .policy
                .allowed
                .saturating_sub(f.count)
                .clamp(1, MAX_ATTEMPTS_IN_FLIGHT);
            full |= f.in_flight >= room;
        }
        if let Some(until) = locked {
            return Admission::Locked(until);
        }
        if full {
            return Admission::Wait;
        }
        for key in both {
            if keys.len() >= MAX_THROTTLE_KEYS && !keys.contains_key(&key) {
                continue;
            }
            let f = keys.entry(key).or_insert_with(|| Failures::new(now));
            f.in_flight += 1;
        }
        Admission::Go
    }

    /// At the key limit, drops the keys that matter least: those with
    /// nothing under way and no recent lock-out.
    fn make_room(&self, keys: &mut HashMap<ThrottleKey, Failures>, now: Instant) {
        if keys.len() >= MAX_THROTTLE_KEYS {
            let policy = self.policy;
            keys.retain(|_, f| {
                f.in_flight > 0
                    || (now.duration_since(f.last) < policy.forget && f.count >= policy.allowed)
            });
        }
    }

    /// An attempt under way has ended.
    fn ended(&self, user: &str, addr: IpAddr, ok: bool, now: Instant) {
        {
            let mut keys = self.keys.lock().expect("throttle lock");
            let user_key = ThrottleKey::User(user.to_string());
            for key in [user_key.clone(), ThrottleKey::addr(addr)] {
                if let Some(f) = keys.get_mut(&key) {
                    f.in_flight = f.in_flight.saturating_sub(1);
                }
            }
            if ok {
                // A success clears the account's failures (not the address's:
                // logging in to one's own account must not reset a guessing budget).
                if let Some(f) = keys.get_mut(&user_key) {
                    f.count = 0;
                    f.locked_until = None;
                    if f.in_flight == 0 {
                        keys.remove(&user_key);
                    }
                }
            } else {
                self.count_failure(&mut keys, user, addr, now);
            }
        }
        self.ended.notify_waiters();
    }

    fn count_failure(
        &self,
        keys: &mut HashMap<ThrottleKey, Failures>,
        user: &str,
        addr: IpAddr,
        now: Instant,
    ) {
        self.make_room(keys, now);
        for key in [ThrottleKey::User(user.to_string()), ThrottleKey::addr(addr)] {
            if keys.len() >= MAX_THROTTLE_KEYS && !keys.contains_key(&key) {
                continue;
            }
            let entry = keys.entry(key).or_insert_with(|| Failures::new(now));
            if now.duration_since(entry.last) >= self.policy.forget {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            entry.locked_until = self.policy.delay(entry.count).map(|d| now + d);
        }
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

    /// Counts a failed login as `user` from `addr` (one not begun with
    /// [`Throttle::begin`]).
    pub fn failed(&self, user: &str, addr: IpAddr, now: Instant) {
        let mut keys = self.keys.lock().expect("throttle lock");
        self.count_failure(&mut keys, user, addr, now);
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn succeeded(&self, user: &str) {
        let mut keys = self.keys.lock().expect("throttle lock");
        let key = ThrottleKey::User(user.to_string());
        if let Some(f) = keys.get_mut(&key) {
            f.count = 0;
            f.locked_until = None;
            if f.in_flight == 0 {
                keys.remove(&key);
            }
        }
    }
}

/// Most live sessions one user may have; logging in again beyond this ends
/// the oldest, so logins cannot pile up sessions without bound.
const MAX_SESSIONS_PER_USER: usize = 256;

/// Open sessions, by the BLAKE3 digest of their token, and each user's
/// *epoch*: a count of the times that user's sessions were ended. A
/// connection notes the epoch it logged in at, and is refused once that
/// has moved on (the password changed, or the user was removed).
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    open: Mutex<SessionTable>,
}

#[derive(Debug, Default)]
struct SessionTable {
    by_token: HashMap<blake3::Hash, Session>,
    /// Users whose sessions were ended, and how many times: absent is 0.
    epochs: HashMap<String, u64>,
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
            open: Mutex::new(SessionTable::default()),
        }
    }

    /// `user`'s epoch now: note it before checking a password, and open the
    /// session with [`Sessions::open_at`].
    pub fn epoch(&self, user: &str) -> u64 {
        let table = self.open.lock().expect("sessions lock");
        table.epochs.get(user).copied().unwrap_or(0)
    }

    /// Opens a session for `user`; the token is the only way back to it.
    pub fn open(&self, user: &str) -> Token {
        let epoch = self.epoch(user);
        self.open_at(user, epoch).expect("the epoch just read")
    }

    /// Opens a session for `user` whose password was checked at `epoch`;
    /// `None` if the user's sessions were ended since (the check used a
    /// password that may no longer be the user's).
    pub fn open_at(&self, user: &str, epoch: u64) -> Option<Token> {
        let token = Token(rand::random());
        let now = Instant::now();
        let mut table = self.open.lock().expect("sessions lock");
        if table.epochs.get(user).copied().unwrap_or(0) != epoch {
            return None;
        }
        let open = &mut table.by_token;
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
        Some(token)
    }

    /// The user of a live session, and that user's epoch now.
    /// `blake3::Hash` compares in constant time.
    pub fn resume(&self, token: &Token) -> Option<(String, u64)> {
        let digest = blake3::hash(&token.0);
        let table = self.open.lock().expect("sessions lock");
        let user = table
            .by_token
            .get(&digest)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.user.clone())?;
        let epoch = table.epochs.get(&user).copied().unwrap_or(0);
        Some((user, epoch))
    }

    /// Ends one session (a logout).
    pub fn end(&self, token: &Token) {
        let mut table = self.open.lock().expect("sessions lock");
        table.by_token.remove(&blake3::hash(&token.0));
    }

    /// Ends every session of these users (removed, or their password
    /// changed): their tokens, and the connections logged in before now.
    pub fn end_for(&self, users: &[String]) {
        if users.is_empty() {
            return;
        }
        let mut table = self.open.lock().expect("sessions lock");
        table.by_token.retain(|_, s| !users.contains(&s.user));
        for user in users {
            *table.epochs.entry(user.clone()).or_default() += 1;
        }
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

    fn two_allowed() -> Throttle {
        Throttle::new(Backoff {
            allowed: 2,
            first: Duration::from_secs(30),
            max: Duration::from_secs(60),
            forget: Duration::from_secs(600),
        })
    }

    #[tokio::test]
    async fn attempts_count_from_their_start_and_extra_ones_wait_for_the_outcome() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let throttle = two_allowed();
        let first = throttle.begin("alice", a).await.unwrap();
        let second = throttle.begin("alice", a).await.unwrap();
        // A third waits while the two under way could use up the allowance...
        let third = throttle.begin("alice", a);
        tokio::pin!(third);
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        first.failed();
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        // ...and is refused, unchecked, by the lock-out their failures earn.
        second.failed();
        assert!(third.await.is_err());
        // From another address, bob is not held up.
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        throttle.begin("bob", b).await.unwrap().succeeded();

        // When those under way succeed, the waiting attempt goes on.
        let throttle = two_allowed();
        let first = throttle.begin("alice", a).await.unwrap();
        let second = throttle.begin("alice", a).await.unwrap();
        let third = throttle.begin("alice", a);
        tokio::pin!(third);
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        first.succeeded();
        let third = third.await.unwrap();
        second.succeeded();
        third.succeeded();
        assert_eq!(throttle.locked_until("alice", a, Instant::now()), None);

        // An attempt dropped mid-check counts as a failure.
        let throttle = two_allowed();
        drop(throttle.begin("carol", a).await.unwrap());
        drop(throttle.begin("carol", a).await.unwrap());
        assert!(throttle.locked_until("carol", a, Instant::now()).is_some());
    }

    #[tokio::test]
    async fn at_most_a_few_attempts_are_under_way_per_key_however_large_the_allowance() {
        let throttle = Throttle::new(Backoff {
            allowed: u32::MAX,
            first: Duration::from_secs(1),
            max: Duration::from_secs(1),
            forget: Duration::from_secs(60),
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mut under_way = Vec::new();
        for _ in 0..MAX_ATTEMPTS_IN_FLIGHT {
            under_way.push(throttle.begin("alice", a).await.unwrap());
        }
        let next = throttle.begin("alice", a);
        tokio::pin!(next);
        assert!(futures_util::poll!(next.as_mut()).is_pending());
        under_way.pop().unwrap().failed();
        assert!(next.await.is_ok());
    }

    #[test]
    fn ending_sessions_moves_the_epoch_and_stops_a_login_checked_before() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let before = sessions.epoch("bob");
        sessions.end_for(&["bob".to_string()]);
        assert_ne!(sessions.epoch("bob"), before);
        assert!(sessions.open_at("bob", before).is_none());
        let token = sessions.open_at("bob", sessions.epoch("bob")).unwrap();
        assert_eq!(sessions.resume(&token).unwrap().1, sessions.epoch("bob"));
        assert_eq!(sessions.epoch("alice"), 0);
    }

    #[test]
    fn sessions_resume_until_ended() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let token = sessions.open("alice");
        assert_eq!(sessions.resume(&token), Some(("alice".to_string(), 0)));
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
