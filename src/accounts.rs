//! Users as cluster state: every server keeps every user's record, and a
//! change made on any one server reaches all of them.
//!
//! A record is a user's account (the argon2id password hash) or a tombstone
//! (the user was removed), stamped with when and where it changed. Records
//! merge by last writer wins: the higher [`Stamp`] (milliseconds, then the
//! server's name, then the hash) is kept, on every server alike, so servers
//! that have seen the same records agree whatever order they saw them in. A
//! change is stamped later than the record it replaces even if the clock of
//! the server making it is behind.
//!
//! How a change spreads: the server it is made on stores it and sends it to
//! every other member at once (`MergeUsers`); each heal round compares a
//! digest of all records with every peer (in `SyncRoot`) and pulls them
//! all (`Users`) from a peer whose digest differs, so a server that was down
//! catches up within a round of its return. A user's sessions end on every
//! server whose record of the user's password changes.
//!
//! `users.toml` is the seed: at start, a user it names that the cluster has
//! no record of (not even a tombstone) is added, stamped at time zero so any
//! real change outranks it. After that, users are managed with
//! `dfs-server user`, through any one server.
//!
//! Records live in the store's `state` table under `user/NAME`, as JSON, so
//! fields added later (S3 keys, quotas) read old records with defaults.
//!
//! A user's S3 access keys are part of the account, so they spread, merge
//! and catch up exactly like a password: `dfs-server user key add` makes the
//! key pair on the administrator's machine and sends it in the change. The
//! secret itself is kept (an S3 server needs it to check a SigV4 signature;
//! a hash would not do), so it is never logged: [`S3Key`] and
//! [`UserChange`] print it as `***`. Each server keeps an index from access
//! key id to user, rebuilt with every change of the records, for the gateway's
//! lookup on every request ([`Accounts::key`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::auth::{parse_phc, Sessions, Users};
use crate::error::{Error, Result};
use crate::names::validate_user;
use crate::protocol::{Request, Response};
use crate::sharing::{Access, Share};
use crate::store::Store;

/// When and where a record changed. Ordered by time, then server name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Milliseconds since the Unix epoch; 0 for a record from `users.toml`.
    pub millis: u64,
    pub server: String,
}

/// A user's account.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Account {
    /// The argon2id password hash, as a PHC string.
    pub phc: String,
    /// The most bytes the user may use (see `store::Usage`); `None`: no
    /// limit. (Absent from records written before quotas.)
    #[serde(default)]
    pub quota: Option<u64>,
    /// What the user shares: path → the users it is shared with, and how
    /// (see `sharing`). (Absent from records written before sharing.)
    #[serde(default)]
    pub shares: BTreeMap<String, BTreeMap<String, Access>>,
    /// The user's S3 access keys: access key id → key. (Absent from records
    /// written before S3 keys.)
    #[serde(default)]
    pub keys: BTreeMap<String, S3Key>,
}

impl Account {
    /// A new account with this password hash and nothing else.
    fn new(phc: String) -> Account {
        Account {
            phc,
            quota: None,
            shares: BTreeMap::new(),
            keys: BTreeMap::new(),
        }
    }

    /// The user's access key ids and when each was made (Unix seconds), in
    /// id order: never the secrets.
    pub fn key_ids(&self) -> Vec<(String, u64)> {
        self.keys
            .iter()
            .map(|(access, key)| (access.clone(), key.created))
            .collect()
    }
}

/// One S3 access key's secret half, and when it was made.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct S3Key {
    /// The secret access key, kept as it is: SigV4 signs with it.
    pub secret: String,
    /// Unix seconds, by the clock of the server that took the key.
    pub created: u64,
}

impl std::fmt::Debug for S3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Key")
            .field("secret", &"***")
            .field("created", &self.created)
            .finish()
    }
}

/// The first characters of every access key id ringdfs makes (AWS's begin
/// `AKIA`), so a key is recognisable as this cluster's.
pub const ACCESS_PREFIX: &str = "RD";
/// Characters after the prefix: 18 of 32 (base32's alphabet) carry 90 bits,
/// so two keys never meet by chance.
const ACCESS_RANDOM: usize = 18;
const ACCESS_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// A secret is 40 characters of 64 (240 bits), AWS's length and alphabet.
const SECRET_LEN: usize = 40;
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A new S3 key pair: (access key id, secret access key), both drawn from
/// the operating system's random source.
pub fn new_s3_key() -> (String, String) {
    let mut rng = rand::rngs::OsRng;
    let mut draw = |alphabet: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
            .collect()
    };
    let access = format!("{ACCESS_PREFIX}{}", draw(ACCESS_ALPHABET, ACCESS_RANDOM));
    let secret = draw(SECRET_ALPHABET, SECRET_LEN);
    (access, secret)
}

/// Checks that `access` and `secret` are a key pair as [`new_s3_key`] makes
/// them (so a record from elsewhere cannot carry an id with a `/`, which
/// SigV4's credential scope could not hold). The error names the key id,
/// never the secret.
pub fn validate_s3_key(user: &str, access: &str, secret: &str) -> Result<()> {
    let id_ok = access.len() == ACCESS_PREFIX.len() + ACCESS_RANDOM
        && access.starts_with(ACCESS_PREFIX)
        && access[ACCESS_PREFIX.len()..]
            .bytes()
            .all(|b| ACCESS_ALPHABET.contains(&b));
    if !id_ok {
        return Err(Error::Refused(format!(
            "{user}: {access:?} is not an access key id ({ACCESS_PREFIX} and {ACCESS_RANDOM} of A-Z, 2-7)"
        )));
    }
    if secret.len() != SECRET_LEN || !secret.bytes().all(|b| SECRET_ALPHABET.contains(&b)) {
        return Err(Error::Refused(format!(
            "{user}: the secret of access key {access} is not {SECRET_LEN} of A-Z, a-z, 0-9, + and /"
        )));
    }
    Ok(())
}

/// One user as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    /// `None`: the user was removed (a tombstone, so the removal spreads and
    /// outranks older records).
    pub account: Option<Account>,
    pub changed: Stamp,
}

impl UserRecord {
    /// True when this record outranks `other` (of the same user).
    pub fn outranks(&self, other: &UserRecord) -> bool {
        (&self.changed, &self.account) > (&other.changed, &other.account)
    }
}

/// A change an administrator asks for. The password is hashed before it is
/// sent: no server ever sees it. (Debug shows no secret key: see below.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserChange {
    Add {
        name: String,
        phc: String,
    },
    Passwd {
        name: String,
        phc: String,
    },
    Del {
        name: String,
    },
    /// Sets (or with `None` removes) the user's quota, in bytes. Refused
    /// below what the user uses now.
    Quota {
        name: String,
        bytes: Option<u64>,
    },
    /// The user `name` shares `path` with the user `with` (`access`), or
    /// with `None` no longer does. Asked by the user (`Request::Share`).
    Share {
        name: String,
        path: String,
        with: String,
        access: Option<Access>,
    },
    /// Gives the user the S3 key `access` with `secret` (made by
    /// [`new_s3_key`] where the administrator runs `dfs-server user key add`).
    KeyAdd {
        name: String,
        access: String,
        secret: String,
    },
    /// Takes the S3 key `access` from the user.
    KeyDel {
        name: String,
        access: String,
    },
}

impl std::fmt::Debug for UserChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserChange::Add { name, phc } => f
                .debug_struct("Add")
                .field("name", name)
                .field("phc", phc)
                .finish(),
            UserChange::Passwd { name, phc } => f
                .debug_struct("Passwd")
                .field("name", name)
                .field("phc", phc)
                .finish(),
            UserChange::Del { name } => f.debug_struct("Del").field("name", name).finish(),
            UserChange::Quota { name, bytes } => f
                .debug_struct("Quota")
                .field("name", name)
                .field("bytes", bytes)
                .finish(),
            UserChange::Share {
                name,
                path,
                with,
                access,
            } => f
                .debug_struct("Share")
                .field("name", name)
                .field("path", path)
                .field("with", with)
                .field("access", access)
                .finish(),
            // The one variant with a secret: never printed, not even in a
            // debug log of the request that carries it.
            UserChange::KeyAdd { name, access, .. } => f
                .debug_struct("KeyAdd")
                .field("name", name)
                .field("access", access)
                .field("secret", &"***")
                .finish(),
            UserChange::KeyDel { name, access } => f
                .debug_struct("KeyDel")
                .field("name", name)
                .field("access", access)
                .finish(),
        }
    }
}

impl UserChange {
    pub fn name(&self) -> &str {
        match self {
            UserChange::Add { name, .. }
            | UserChange::Passwd { name, .. }
            | UserChange::Del { name }
            | UserChange::Quota { name, .. }
            | UserChange::Share { name, .. }
            | UserChange::KeyAdd { name, .. }
            | UserChange::KeyDel { name, .. } => name,
        }
    }
}

/// The prefix of user records' keys in the store's `state` table.
const PREFIX: &str = "user/";

/// A server's users: the records, the table logins check, and the sessions
/// logins opened.
pub struct Accounts {
    server: String,
    store: Arc<Store>,
    state: RwLock<State>,
    pub sessions: Sessions,
}

struct State {
    records: BTreeMap<String, UserRecord>,
    users: Arc<Users>,
    digest: [u8; 16],
    /// Access key id → the live user who holds it. An id two users hold
    /// (only a hand-made record could do that) is in neither's name: which
    /// of them signed could not be told.
    keys: BTreeMap<String, String>,
    /// How many access key ids more than one user holds.
    clashes: usize,
}

impl State {
    fn new(records: BTreeMap<String, UserRecord>) -> Result<State> {
        let users = Users::from_hashes(
            records
                .values()
                .filter_map(|r| Some((r.name.as_str(), r.account.as_ref()?.phc.as_str()))),
        )?;
        let mut h = blake3::Hasher::new();
        for r in records.values() {
            h.update(&crate::codec::encode(r)?);
        }
        let mut digest = [0; 16];
        digest.copy_from_slice(&h.finalize().as_bytes()[..16]);
        let mut keys = BTreeMap::new();
        let mut clashed = std::collections::BTreeSet::new();
        for r in records.values() {
            // A tombstone has no account, so a removed user's keys are gone.
            let Some(account) = &r.account else { continue };
            for access in account.keys.keys() {
                if keys.insert(access.clone(), r.name.clone()).is_some() {
                    clashed.insert(access.clone());
                }
            }
        }
        for access in &clashed {
            keys.remove(access);
        }
        Ok(State {
            records,
            users: Arc::new(users),
            digest,
            keys,
            clashes: clashed.len(),
        })
    }
}

impl Accounts {
    /// Loads the records from `store` and adds the users of the seed file
    /// (if there is one) that it has no record of. Blocking (hashes the
    /// dummy once).
    pub fn open(
        server: &str,
        store: Arc<Store>,
        seed: &Path,
        sessions: Sessions,
    ) -> Result<Accounts> {
        let mut records = load(&store)?;
        if seed.exists() {
            let new: Vec<UserRecord> = crate::auth::read_hashes(seed)?
                .into_iter()
                .filter(|(name, _)| !records.contains_key(name))
                .map(|(name, phc)| UserRecord {
                    name,
                    account: Some(Account::new(phc)),
                    changed: Stamp {
                        millis: 0,
                        server: server.to_string(),
                    },
                })
                .collect();
            if !new.is_empty() {
                tracing::info!(server, users = new.len(), seed = %seed.display(), "added the seed's users");
                store.put_state(new.iter().map(row).collect::<Result<_>>()?)?;
                records.extend(new.into_iter().map(|r| (r.name.clone(), r)));
            }
        }
        Ok(Accounts {
            server: server.to_string(),
            store,
            state: RwLock::new(State::new(records)?),
            sessions,
        })
    }

    /// The table logins are checked against.
    pub fn users(&self) -> Arc<Users> {
        Arc::clone(&self.state.read().expect("accounts lock").users)
    }

    /// A digest of every record, tombstones included: equal on two servers
    /// when they know the same.
    pub fn digest(&self) -> [u8; 16] {
        self.state.read().expect("accounts lock").digest
    }

    /// Every record, in name order.
    pub fn records(&self) -> Vec<UserRecord> {
        let state = self.state.read().expect("accounts lock");
        state.records.values().cloned().collect()
    }

    /// Makes an administrator's (or for `Share`, the user's) change here,
    /// stamped now (and later than the record it replaces). Refuses to add
    /// a user who exists, or to change one who does not. Returns the
    /// changed records, the user's first (removing a user also withdraws
    /// what others share with them). Blocking.
    pub fn change(&self, change: UserChange) -> Result<Vec<UserRecord>> {
        let name = change.name().to_string();
        validate_user(&name)?;
        let current = self.live(&name);
        let mut withdrawn = Vec::new();
        let account = match change {
            UserChange::Add { phc, .. } => {
                if current.is_some() {
                    return Err(Error::Refused(format!(
                        "user {name} exists; use `user passwd {name}` to change the password"
                    )));
                }
                Some(Account::new(phc))
            }
            UserChange::Passwd { phc, .. } => {
                let current = current.ok_or_else(|| Error::Refused(format!("no user {name}")))?;
                Some(Account { phc, ..current })
            }
            UserChange::Share {
                path, with, access, ..
            } => {
                let mut current =
                    current.ok_or_else(|| Error::Refused(format!("no user {name}")))?;
                crate::sharing::change(&mut current.shares, &name, &path, &with, access, |u| {
                    self.live(u).is_some()
                })?;
                Some(current)
            }
            UserChange::Quota { bytes, .. } => {
                let current = current.ok_or_else(|| Error::Refused(format!("no user {name}")))?;
                if let Some(quota) = bytes {
                    let used = self.store.usage(&name)?.used();
                    if quota < used {
                        return Err(Error::Refused(format!(
                            "a quota of {} is below what {name} uses now ({}); nothing changed",
                            crate::quota::size_text(quota),
                            crate::quota::size_text(used)
                        )));
                    }
                }
                Some(Account {
                    quota: bytes,
                    ..current
                })
            }
            UserChange::KeyAdd { access, secret, .. } => {
                let mut current =
                    current.ok_or_else(|| Error::Refused(format!("no user {name}")))?;
                validate_s3_key(&name, &access, &secret)?;
                if let Some(holder) = self.key_holder(&access) {
                    return Err(Error::Refused(format!(
                        "access key {access} is {holder}'s already; nothing changed"
                    )));
                }
                let created = crate::unix_millis() / 1000;
                current.keys.insert(access, S3Key { secret, created });
                Some(current)
            }
            UserChange::KeyDel { access, .. } => {
                let mut current =
                    current.ok_or_else(|| Error::Refused(format!("no user {name}")))?;
                if current.keys.remove(&access).is_none() {
                    return Err(Error::Refused(format!("{name} has no access key {access}")));
                }
                Some(current)
            }
            UserChange::Del { .. } => {
                current.ok_or_else(|| Error::Refused(format!("no user {name}")))?;
                // Grants to a removed user go too: a user added later under
                // the same name gets none of them.
                for record in self.records() {
                    let Some(mut account) = record.account.filter(|_| record.name != name) else {
                        continue;
                    };
                    if crate::sharing::withdraw_all(&mut account.shares, &name) {
                        withdrawn.push((record.name, account, record.changed.millis));
                    }
                }
                None
            }
        };
        if let Some(account) = &account {
            parse_phc(&name, &account.phc)?;
        }
        let after = self
            .state
            .read()
            .expect("accounts lock")
            .records
            .get(&name)
            .map_or(0, |r| r.changed.millis);
        let now = crate::unix_millis();
        let stamp = |after: u64| Stamp {
            millis: now.max(after + 1),
            server: self.server.clone(),
        };
        let mut records = vec![UserRecord {
            name,
            account,
            changed: stamp(after),
        }];
        records.extend(
            withdrawn
                .into_iter()
                .map(|(name, account, after)| UserRecord {
                    name,
                    account: Some(account),
                    changed: stamp(after),
                }),
        );
        self.merge(records.clone())?;
        Ok(records)
    }

    /// Every share whose owner or recipient is `user`, and only those, in
    /// owner, path, recipient order.
    pub fn shares_of(&self, user: &str) -> Vec<Share> {
        let state = self.state.read().expect("accounts lock");
        crate::sharing::involving(&state.records, user)
    }

    /// What `owner` lets `user` do with `path` (through a share of it or of
    /// a folder above it): `None` if nothing.
    pub fn access(&self, owner: &str, user: &str, path: &str) -> Option<Access> {
        let state = self.state.read().expect("accounts lock");
        let account = state.records.get(owner)?.account.as_ref()?;
        state.records.get(user)?.account.as_ref()?;
        crate::sharing::access(&account.shares, user, path)
    }

    /// The paths `owner` shares with `user`.
    pub fn shared_paths(&self, owner: &str, user: &str) -> Vec<String> {
        let state = self.state.read().expect("accounts lock");
        let Some(Some(account)) = state.records.get(owner).map(|r| r.account.as_ref()) else {
            return Vec::new();
        };
        account
            .shares
            .iter()
            .filter(|(_, with)| with.contains_key(user))
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// The user holding the S3 access key `access`, and its secret: what
    /// the S3 gateway checks a signature with. `None` for an id nobody
    /// (alive) holds.
    pub fn key(&self, access: &str) -> Option<(String, String)> {
        let state = self.state.read().expect("accounts lock");
        let user = state.keys.get(access)?;
        let key = state
            .records
            .get(user)?
            .account
            .as_ref()?
            .keys
            .get(access)?;
        Some((user.clone(), key.secret.clone()))
    }

    /// The user's access key ids and when each was made (Unix seconds), in
    /// id order; empty for a user who has none or does not exist.
    pub fn keys_of(&self, user: &str) -> Vec<(String, u64)> {
        let state = self.state.read().expect("accounts lock");
        match state.records.get(user).and_then(|r| r.account.as_ref()) {
            Some(account) => account.key_ids(),
            None => Vec::new(),
        }
    }

    /// Which live user's record holds the access key id `access`, clashing
    /// or not (a new key must be no one's).
    fn key_holder(&self, access: &str) -> Option<String> {
        let state = self.state.read().expect("accounts lock");
        state
            .records
            .values()
            .find(|r| {
                r.account
                    .as_ref()
                    .is_some_and(|a| a.keys.contains_key(access))
            })
            .map(|r| r.name.clone())
    }

    /// The user's quota in bytes, if the user has one.
    pub fn quota(&self, name: &str) -> Option<u64> {
        self.live(name).and_then(|a| a.quota)
    }

    fn live(&self, name: &str) -> Option<Account> {
        let state = self.state.read().expect("accounts lock");
        state.records.get(name)?.account.clone()
    }

    /// Keeps each record that outranks the one held for its user, durably;
    /// ends the sessions of users whose password changed or who were
    /// removed. Returns how many records were kept. Blocking.
    pub fn merge(&self, records: Vec<UserRecord>) -> Result<usize> {
        // One merge at a time, so two cannot each keep a record the other
        // then overwrites in the store.
        let mut state = self.state.write().expect("accounts lock");
        let mut winners = BTreeMap::new();
        for record in records {
            if let Err(e) = usable(&record) {
                tracing::warn!(server = %self.server, error = %e, "a user record that cannot be used: ignored");
                continue;
            }
            let held = winners
                .get(&record.name)
                .or_else(|| state.records.get(&record.name));
            if held.is_none_or(|h| record.outranks(h)) {
                winners.insert(record.name.clone(), record);
            }
        }
        if winners.is_empty() {
            return Ok(0);
        }
        let mut records = state.records.clone();
        let mut ended = Vec::new();
        let mut rows = Vec::new();
        for (name, record) in winners {
            // A removal or a new password ends the user's sessions.
            let before = records.get(&name).and_then(password);
            if before.is_some() && before != password(&record) {
                ended.push(name.clone());
            }
            rows.push(row(&record)?);
            records.insert(name, record);
        }
        let next = State::new(records)?;
        let kept = rows.len();
        self.store.put_state(rows)?;
        let records = next.records.len();
        let clashes = next.clashes;
        *state = next;
        drop(state);
        self.sessions.end_for(&ended);
        tracing::info!(server = %self.server, kept, records, sessions_ended = ended.len(), "user records merged");
        if clashes > 0 {
            tracing::warn!(server = %self.server, clashes, "access key ids held by more than one user: none of them is usable");
        }
        Ok(kept)
    }
}

/// Checks a record from elsewhere before it is kept: the name, the password
/// hash and every S3 key.
fn usable(record: &UserRecord) -> Result<()> {
    validate_user(&record.name)?;
    if let Some(account) = &record.account {
        parse_phc(&record.name, &account.phc)?;
        for (access, key) in &account.keys {
            validate_s3_key(&record.name, access, &key.secret)?;
        }
    }
    Ok(())
}

/// A record's password hash (`None`: removed).
fn password(record: &UserRecord) -> Option<&str> {
    record.account.as_ref().map(|a| a.phc.as_str())
}

/// A record as the store keeps it: its key and JSON.
fn row(record: &UserRecord) -> Result<(String, Vec<u8>)> {
    let json = serde_json::to_vec(record)
        .map_err(|e| Error::Internal(format!("user {}: {e}", record.name)))?;
    Ok((format!("{PREFIX}{}", record.name), json))
}

/// The records kept in `store`.
fn load(store: &Store) -> Result<BTreeMap<String, UserRecord>> {
    let mut records = BTreeMap::new();
    for (key, value) in store.state(PREFIX)? {
        let record: UserRecord = serde_json::from_slice(&value)
            .map_err(|e| Error::Internal(format!("state {key}: {e}")))?;
        records.insert(record.name.clone(), record);
    }
    Ok(records)
}

/// Makes `change` through the running server `config` describes, which
/// sends it on to every other member.
pub async fn change_on_server(
    config: &crate::config::ServerConfig,
    change: UserChange,
    timeout: std::time::Duration,
) -> Result<UserRecord> {
    let mut conn = crate::peer::connect_as_self(config, timeout).await?;
    match conn.call(&Request::ChangeUser(change)).await? {
        Response::Users(mut records) if !records.is_empty() => Ok(records.remove(0)),
        other => Err(Error::Protocol(format!("{}: {other:?}", config.name))),
    }
}

/// Every user record of the running server `config` describes.
pub async fn records_on_server(
    config: &crate::config::ServerConfig,
    timeout: std::time::Duration,
) -> Result<Vec<UserRecord>> {
    let mut conn = crate::peer::connect_as_self(config, timeout).await?;
    match conn.call(&Request::Users).await? {
        Response::Users(records) => Ok(records),
        other => Err(Error::Protocol(format!("{}: {other:?}", config.name))),
    }
}

/// Makes `change` directly in the data folder of a server that is not
/// running (the store refuses to open beside a running server).
pub fn change_offline(
    config: &crate::config::ServerConfig,
    change: UserChange,
) -> Result<UserRecord> {
    let store = Store::open(&config.data_dir, config.store.clone())?;
    let accounts = Accounts::open(
        &config.name,
        store,
        &config.users,
        Sessions::new(std::time::Duration::ZERO),
    )?;
    Ok(accounts.change(change)?.remove(0))
}

/// The records in the data folder of a server that is not running.
pub fn records_offline(config: &crate::config::ServerConfig) -> Result<Vec<UserRecord>> {
    let store = Store::open(&config.data_dir, config.store.clone())?;
    Ok(load(&store)?.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, phc: Option<&str>, millis: u64, server: &str) -> UserRecord {
        UserRecord {
            name: name.into(),
            account: phc.map(|p| Account::new(p.into())),
            changed: Stamp {
                millis,
                server: server.into(),
            },
        }
    }

    #[test]
    fn a_record_written_before_quotas_reads_with_none_and_a_quota_round_trips() {
        let old =
            r#"{"name":"alice","account":{"phc":"x"},"changed":{"millis":5,"server":"dfs1"}}"#;
        let record: UserRecord = serde_json::from_str(old).unwrap();
        assert_eq!(record.account.as_ref().unwrap().quota, None);
        let mut with = record.clone();
        with.account.as_mut().unwrap().quota = Some(10 << 30);
        let json = serde_json::to_string(&with).unwrap();
        assert_eq!(serde_json::from_str::<UserRecord>(&json).unwrap(), with);
        let wire: UserRecord = crate::codec::decode(&crate::codec::encode(&with).unwrap()).unwrap();
        assert_eq!(wire, with);
    }

    #[test]
    fn the_later_stamp_wins_then_the_server_then_the_hash() {
        let old = record("alice", Some("a"), 1, "dfs1");
        let new = record("alice", None, 2, "dfs1");
        assert!(new.outranks(&old) && !old.outranks(&new));
        let other = record("alice", Some("a"), 2, "dfs2");
        assert!(other.outranks(&new));
        let same_time = record("alice", Some("b"), 2, "dfs2");
        assert!(same_time.outranks(&other) && !other.outranks(&same_time));
        assert!(!other.outranks(&other.clone()));
    }

    /// One server's accounts over a fresh store in `dir` (no seed).
    fn accounts(dir: &Path, server: &str) -> Accounts {
        let store = Store::open(dir, crate::store::Tuning::default()).unwrap();
        Accounts::open(
            server,
            store,
            &dir.join("no-seed.toml"),
            Sessions::new(std::time::Duration::ZERO),
        )
        .unwrap()
    }

    /// A real argon2id PHC string, made cheaply.
    fn phc() -> String {
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        crate::auth::hash_password("wonderland", &params)
            .unwrap()
            .to_string()
    }

    fn add_key(accounts: &Accounts, name: &str) -> (String, String) {
        let (access, secret) = new_s3_key();
        accounts
            .change(UserChange::KeyAdd {
                name: name.into(),
                access: access.clone(),
                secret: secret.clone(),
            })
            .unwrap();
        (access, secret)
    }

    fn refusal(result: Result<Vec<UserRecord>>) -> String {
        match result {
            Err(Error::Refused(line)) => line,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_record_written_before_s3_keys_reads_with_none_and_keys_round_trip() {
        let old = r#"{"name":"alice","account":{"phc":"x","quota":null,"shares":{}},"changed":{"millis":5,"server":"dfs1"}}"#;
        let record: UserRecord = serde_json::from_str(old).unwrap();
        assert!(record.account.as_ref().unwrap().keys.is_empty());
        let mut with = record.clone();
        let (access, secret) = new_s3_key();
        with.account.as_mut().unwrap().keys.insert(
            access.clone(),
            S3Key {
                secret: secret.clone(),
                created: 1_700_000_000,
            },
        );
        let json = serde_json::to_string(&with).unwrap();
        assert!(json.contains(&secret), "the store keeps the secret itself");
        assert_eq!(serde_json::from_str::<UserRecord>(&json).unwrap(), with);
        let wire: UserRecord = crate::codec::decode(&crate::codec::encode(&with).unwrap()).unwrap();
        assert_eq!(wire, with);
        assert_eq!(
            with.account.unwrap().key_ids(),
            vec![(access, 1_700_000_000)]
        );
    }

    #[test]
    fn new_keys_have_the_documented_shape_and_differ() {
        let (a1, s1) = new_s3_key();
        let (a2, s2) = new_s3_key();
        for (access, secret) in [(&a1, &s1), (&a2, &s2)] {
            assert_eq!(access.len(), 20, "{access}");
            assert!(access.starts_with("RD"), "{access}");
            assert!(
                access[2..]
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
                "{access}"
            );
            assert_eq!(secret.len(), 40);
            assert!(secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
            validate_s3_key("alice", access, secret).unwrap();
        }
        assert_ne!(a1, a2);
        assert_ne!(s1, s2);
        for (access, secret) in [
            ("AKIAIOSFODNN7EXAMPLE", s1.as_str()),
            ("RD/BCDEFGHIJKLMNOPQR", s1.as_str()),
            ("RDABC", s1.as_str()),
            (a1.as_str(), "short"),
            (a1.as_str(), &"é".repeat(20)),
        ] {
            let e = validate_s3_key("alice", access, secret).unwrap_err();
            assert!(!e.to_string().contains(secret), "{e}");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let (access, secret) = new_s3_key();
        let change = UserChange::KeyAdd {
            name: "alice".into(),
            access: access.clone(),
            secret: secret.clone(),
        };
        let key = S3Key {
            secret: secret.clone(),
            created: 1,
        };
        let mut record = record("alice", Some("x"), 1, "dfs1");
        record
            .account
            .as_mut()
            .unwrap()
            .keys
            .insert(access.clone(), key.clone());
        for text in [
            format!("{change:?}"),
            format!("{key:?}"),
            format!("{record:?}"),
            format!("{:?}", Request::ChangeUser(change.clone())),
            format!("{:?}", Request::MergeUsers(vec![record.clone()])),
        ] {
            assert!(!text.contains(&secret), "{text}");
            assert!(text.contains("***"), "{text}");
        }
        assert!(format!("{change:?}").contains(&access));
    }

    #[test]
    fn a_key_is_found_by_its_id_here_and_where_the_records_are_merged() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dfs1 = accounts(one.path(), "dfs1");
        let dfs2 = accounts(two.path(), "dfs2");
        dfs1.change(UserChange::Add {
            name: "alice".into(),
            phc: phc(),
        })
        .unwrap();
        let before_keys = dfs1.records();
        let (access, secret) = add_key(&dfs1, "alice");
        let (second, _) = add_key(&dfs1, "alice");
        assert_eq!(
            dfs1.key(&access),
            Some(("alice".to_string(), secret.clone()))
        );
        assert_eq!(dfs1.key("RDAAAAAAAAAAAAAAAAAA"), None);
        let ids: Vec<String> = dfs1.keys_of("alice").into_iter().map(|k| k.0).collect();
        let mut want = vec![access.clone(), second.clone()];
        want.sort();
        assert_eq!(ids, want);
        assert!(dfs1.keys_of("bob").is_empty());

        // The other server learns the keys by a merge, and an older record
        // without them arriving later does not take them away.
        assert_eq!(dfs2.merge(dfs1.records()).unwrap(), 1);
        assert_eq!(dfs2.merge(before_keys).unwrap(), 0);
        assert_eq!(
            dfs2.key(&access),
            Some(("alice".to_string(), secret.clone()))
        );
        assert_eq!(dfs2.digest(), dfs1.digest());

        // A new password, a quota: the keys stay.
        dfs2.change(UserChange::Passwd {
            name: "alice".into(),
            phc: phc(),
        })
        .unwrap();
        dfs2.change(UserChange::Quota {
            name: "alice".into(),
            bytes: Some(1 << 30),
        })
        .unwrap();
        dfs1.merge(dfs2.records()).unwrap();
        assert_eq!(dfs1.keys_of("alice").len(), 2);
        assert_eq!(dfs1.key(&second).map(|k| k.0), Some("alice".into()));

        // Removing one key: gone from the index, the other still found.
        dfs1.change(UserChange::KeyDel {
            name: "alice".into(),
            access: access.clone(),
        })
        .unwrap();
        dfs2.merge(dfs1.records()).unwrap();
        for server in [&dfs1, &dfs2] {
            assert_eq!(server.key(&access), None);
            assert!(server.key(&second).is_some());
        }

        // The index is rebuilt from the store when a server starts again.
        drop(dfs2);
        let dfs2 = accounts(two.path(), "dfs2");
        assert_eq!(dfs2.key(&second).map(|k| k.0), Some("alice".into()));
        assert_eq!(dfs2.key(&access), None);
    }

    #[test]
    fn a_removed_users_keys_are_not_found_and_a_new_user_of_the_name_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let dfs1 = accounts(dir.path(), "dfs1");
        let add = || UserChange::Add {
            name: "alice".into(),
            phc: phc(),
        };
        dfs1.change(add()).unwrap();
        let (access, _) = add_key(&dfs1, "alice");
        dfs1.change(UserChange::Del {
            name: "alice".into(),
        })
        .unwrap();
        assert_eq!(dfs1.key(&access), None);
        assert!(dfs1.keys_of("alice").is_empty());
        dfs1.change(add()).unwrap();
        assert_eq!(dfs1.key(&access), None);
        assert!(dfs1.keys_of("alice").is_empty());
    }

    #[test]
    fn bad_key_changes_are_refused_in_one_line_naming_what() {
        let dir = tempfile::tempdir().unwrap();
        let dfs1 = accounts(dir.path(), "dfs1");
        let (access, secret) = new_s3_key();
        let key_add = |name: &str, access: &str, secret: &str| UserChange::KeyAdd {
            name: name.into(),
            access: access.into(),
            secret: secret.into(),
        };
        assert_eq!(
            refusal(dfs1.change(key_add("alice", &access, &secret))),
            "no user alice"
        );
        for name in ["alice", "bob"] {
            dfs1.change(UserChange::Add {
                name: name.into(),
                phc: phc(),
            })
            .unwrap();
        }
        dfs1.change(key_add("alice", &access, &secret)).unwrap();
        let line = refusal(dfs1.change(key_add("bob", &access, &new_s3_key().1)));
        assert_eq!(
            line,
            format!("access key {access} is alice's already; nothing changed")
        );
        let line = refusal(dfs1.change(UserChange::KeyDel {
            name: "bob".into(),
            access: access.clone(),
        }));
        assert_eq!(line, format!("bob has no access key {access}"));
        let line = refusal(dfs1.change(key_add("bob", "RD-not-a-key", &secret)));
        assert!(
            line.contains("\"RD-not-a-key\" is not an access key id"),
            "{line}"
        );
        assert_eq!(dfs1.key(&access).map(|k| k.0), Some("alice".into()));
        assert!(dfs1.keys_of("bob").is_empty());
    }

    #[test]
    fn an_access_key_id_two_users_hold_is_nobodys_and_a_bad_key_is_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let dfs1 = accounts(dir.path(), "dfs1");
        let (access, secret) = new_s3_key();
        let key = S3Key {
            secret: secret.clone(),
            created: 1,
        };
        let hash = phc();
        let mut records = Vec::new();
        for name in ["alice", "bob"] {
            let mut r = record(name, Some(&hash), 10, "dfs9");
            r.account
                .as_mut()
                .unwrap()
                .keys
                .insert(access.clone(), key.clone());
            records.push(r);
        }
        assert_eq!(dfs1.merge(records).unwrap(), 2);
        assert_eq!(dfs1.key(&access), None);

        let mut carol = record("carol", Some(&hash), 10, "dfs9");
        carol
            .account
            .as_mut()
            .unwrap()
            .keys
            .insert("RD/../../etc".into(), S3Key { secret, created: 1 });
        assert_eq!(dfs1.merge(vec![carol]).unwrap(), 0);
        assert!(dfs1.records().iter().all(|r| r.name != "carol"));
    }
}
