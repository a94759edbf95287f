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

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

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
/// sent: no server ever sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

impl UserChange {
    pub fn name(&self) -> &str {
        match self {
            UserChange::Add { name, .. }
            | UserChange::Passwd { name, .. }
            | UserChange::Del { name }
            | UserChange::Quota { name, .. }
            | UserChange::Share { name, .. } => name,
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
        Ok(State {
            records,
            users: Arc::new(users),
            digest,
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
                    account: Some(Account {
                        phc,
                        quota: None,
                        shares: BTreeMap::new(),
                    }),
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
                Some(Account {
                    phc,
                    quota: None,
                    shares: BTreeMap::new(),
                })
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
            let phc = record.account.as_ref().map(|a| a.phc.as_str());
            if let Err(e) = validate_user(&record.name)
                .and_then(|()| phc.map_or(Ok(()), |p| parse_phc(&record.name, p).map(drop)))
            {
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
        *state = next;
        drop(state);
        self.sessions.end_for(&ended);
        tracing::info!(server = %self.server, kept, records, sessions_ended = ended.len(), "user records merged");
        Ok(kept)
    }
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
            account: phc.map(|p| Account {
                phc: p.into(),
                quota: None,
                shares: BTreeMap::new(),
            }),
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
}
