//! Sharing: a user lets another read, or read and write, one of their files
//! or folders (and everything later added under it).
//!
//! Shares are part of the owner's user record (`Account::shares`), so they
//! are cluster state like the users: a change made on one server is sent
//! to every member, and every server can check any request on its own. The
//! recipient names a shared item as `shared/OWNER/PATH` (the client's
//! `Scope`); on the wire that is `Request::Shared { owner, paths, request }`,
//! an ordinary request on the owner's files, which a server serves only if
//! [`authorize`] lets it. A refusal says only what was refused: never
//! whether anything unshared exists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::accounts::{Accounts, UserRecord};
use crate::error::{shown, Error, Result};
use crate::names::validate_name;
use crate::protocol::{DirEntry, Request};
use crate::store::Store;

/// What a share allows. `Write` includes reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }

    pub fn parse(word: &str) -> Result<Access> {
        match word {
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            other => Err(Error::Refused(format!(
                "`{other}`: a share is `read` or `write`"
            ))),
        }
    }
}

/// One share: `owner` lets `user` reach `path` (a file or a folder).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub owner: String,
    pub path: String,
    pub user: String,
    pub access: Access,
}

/// The top folder under which a user sees what others share with them.
pub const SHARED: &str = "shared";

/// Whether `path` is `top` or inside folder `top`.
pub fn covers(top: &str, path: &str) -> bool {
    path == top
        || path
            .strip_prefix(top)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Refuses one of the user's own names under `shared/`, where the client
/// shows what others share.
pub fn check_own_name(name: &str) -> Result<()> {
    if covers(SHARED, name) {
        return Err(Error::Refused(format!(
            "{}: `{SHARED}/` is where what others share with you appears; pick another name",
            shown(name)
        )));
    }
    Ok(())
}

/// Applies a share change to `shares` (the owner's): grants `access` on
/// `path` to `with`, or with `None` withdraws it. `live` says whether a
/// user exists.
pub fn change(
    shares: &mut BTreeMap<String, BTreeMap<String, Access>>,
    owner: &str,
    path: &str,
    with: &str,
    access: Option<Access>,
    live: impl Fn(&str) -> bool,
) -> Result<()> {
    validate_name(path)?;
    if with == owner {
        return Err(Error::Refused(format!(
            "{}: you cannot share with yourself",
            shown(path)
        )));
    }
    match access {
        Some(access) => {
            if !live(with) {
                return Err(Error::Refused(format!("no user {with}")));
            }
            shares
                .entry(path.to_string())
                .or_default()
                .insert(with.to_string(), access);
        }
        None => {
            let had = shares
                .get_mut(path)
                .and_then(|users| users.remove(with))
                .is_some();
            if !had {
                return Err(Error::Refused(format!(
                    "{} is not shared with {with}",
                    shown(path)
                )));
            }
            if shares.get(path).is_some_and(BTreeMap::is_empty) {
                shares.remove(path);
            }
        }
    }
    Ok(())
}

/// Withdraws every share with `user`; true if there was one.
pub fn withdraw_all(shares: &mut BTreeMap<String, BTreeMap<String, Access>>, user: &str) -> bool {
    let mut any = false;
    shares.retain(|_, users| {
        any |= users.remove(user).is_some();
        !users.is_empty()
    });
    any
}

/// What `shares` (one owner's) let `user` do with `path`: the most any
/// share of `path` or of a folder above it allows.
pub fn access(
    shares: &BTreeMap<String, BTreeMap<String, Access>>,
    user: &str,
    path: &str,
) -> Option<Access> {
    shares
        .iter()
        .filter(|(top, _)| covers(top, path))
        .filter_map(|(_, users)| users.get(user).copied())
        .max()
}

/// Every live share of the live users in `records` whose owner or
/// recipient is `user`.
pub fn involving(records: &BTreeMap<String, UserRecord>, user: &str) -> Vec<Share> {
    let live = |u: &str| records.get(u).is_some_and(|r| r.account.is_some());
    let mut out = Vec::new();
    for record in records.values() {
        let Some(account) = &record.account else {
            continue;
        };
        for (path, users) in &account.shares {
            for (with, access) in users {
                if (record.name == user || with == user) && live(with) {
                    out.push(Share {
                        owner: record.name.clone(),
                        path: path.clone(),
                        user: with.clone(),
                        access: *access,
                    });
                }
            }
        }
    }
    out
}

/// How a shared request may be served.
#[derive(Debug)]
pub enum Grant {
    /// As the owner would be served.
    Whole,
    /// A folder above what is shared: only the way down to the shares.
    Listing(Vec<DirEntry>),
}

/// Whether `user` may send `request` on `owner`'s files. `paths` are the
/// names the request acts through where it does not name them itself:
/// those whose data a `GetChunk` or `Verify` reads, the name a
/// `CheckQuota` is for, the sources of a `CommitMany`.
pub fn authorize(
    accounts: &Accounts,
    store: &Store,
    user: &str,
    owner: &str,
    paths: &[String],
    request: &Request,
) -> Result<Grant> {
    let need = |path: &str, want: Access| -> Result<()> {
        match accounts.access(owner, user, path) {
            Some(have) if have >= want => Ok(()),
            Some(_) => Err(Error::Denied(format!(
                "{owner} shares {} with you read-only",
                shown(path)
            ))),
            None => Err(Error::Denied(format!(
                "{owner} does not share {} with you",
                shown(path)
            ))),
        }
    };
    // The data `name` at `version` is what one of `paths` (readable) is now.
    let reads_data = |name: &str, version| -> Result<()> {
        for path in paths {
            need(path, Access::Read)?;
            if let (Some(m), _) = store.file(owner, path)? {
                if !m.deleted && m.data_name() == name && m.data_version() == version {
                    return Ok(());
                }
            }
        }
        Err(Error::Denied(format!(
            "that data is not what {owner} shares with you"
        )))
    };
    match request {
        Request::Stat { name }
        | Request::Fetch { name, .. }
        | Request::Manifests { path: name, .. } => need(name, Access::Read)?,
        Request::Usage { path } => need(path, Access::Read)?,
        Request::ListDir { folder, after } => {
            if folder.is_empty() || accounts.access(owner, user, folder).is_none() {
                return way_down(accounts, store, user, owner, folder, after.as_deref())
                    .map(Grant::Listing);
            }
        }
        Request::PutChunk { name, .. }
        | Request::PutChunkFrom { name, .. }
        | Request::PutSmall { name, .. }
        | Request::ChunkPrefix { name, .. }
        | Request::Delete { name, .. }
        | Request::Abort { name, .. }
        | Request::MakeFolder { path: name }
        | Request::RemoveFolder { path: name } => need(name, Access::Write)?,
        Request::Commit { manifest, .. } => need(&manifest.name, Access::Write)?,
        Request::PutSmallMany { files } => {
            for f in files {
                need(&f.name, Access::Write)?;
            }
        }
        Request::CommitPuts { manifests } => {
            for m in manifests {
                need(&m.name, Access::Write)?;
            }
        }
        Request::CheckQuota { .. } => match paths {
            [name] => need(name, Access::Write)?,
            _ => {
                return Err(Error::BadRequest(
                    "a shared quota check names the one file it is for".into(),
                ))
            }
        },
        Request::GetChunk { name, version, .. }
        | Request::GetChunkFrom { name, version, .. }
        | Request::GetRange { name, version, .. }
        | Request::Verify { name, version, .. } => reads_data(name, *version)?,
        Request::CommitMany { manifests } => {
            for m in manifests {
                need(&m.name, Access::Write)?;
                if m.data.is_some() {
                    reads_data(m.data_name(), m.data_version())?;
                }
            }
        }
        _ => {
            return Err(Error::BadRequest(
                "not a request that can act on shared files".into(),
            ))
        }
    }
    Ok(Grant::Whole)
}

/// The listing of `folder` of `owner`'s, above what they share with `user`:
/// the shared items directly in it and the folders on the way to the
/// others, after the cursor `after`. Refused if nothing shared is under it.
fn way_down(
    accounts: &Accounts,
    store: &Store,
    user: &str,
    owner: &str,
    folder: &str,
    after: Option<&str>,
) -> Result<Vec<DirEntry>> {
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        format!("{folder}/")
    };
    let mut entries: BTreeMap<String, DirEntry> = BTreeMap::new();
    for top in accounts.shared_paths(owner, user) {
        let Some(rest) = top.strip_prefix(&prefix) else {
            continue;
        };
        let child = match rest.find('/') {
            Some(i) => format!("{prefix}{}", &rest[..i]),
            None => top.clone(),
        };
        let entry = match store.entry(owner, &child)? {
            Some(file) if child == top && !file.deleted => DirEntry::File(file),
            _ => DirEntry::Folder(child),
        };
        entries.insert(entry.cursor(), entry);
    }
    if entries.is_empty() {
        return Err(Error::Denied(if folder.is_empty() {
            format!("{owner} shares nothing with you")
        } else {
            format!("{owner} does not share {} with you", shown(folder))
        }));
    }
    Ok(entries
        .into_iter()
        .filter(|(cursor, _)| after.is_none_or(|a| cursor.as_str() > a))
        .map(|(_, entry)| entry)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(list: &[(&str, &str, Access)]) -> BTreeMap<String, BTreeMap<String, Access>> {
        let mut out: BTreeMap<String, BTreeMap<String, Access>> = BTreeMap::new();
        for (path, user, access) in list {
            out.entry(path.to_string())
                .or_default()
                .insert(user.to_string(), *access);
        }
        out
    }

    #[test]
    fn a_share_covers_its_path_and_what_is_under_it_only() {
        assert!(covers("docs", "docs"));
        assert!(covers("docs", "docs/a/b"));
        assert!(!covers("docs", "docs2"));
        assert!(!covers("docs", "doc"));
        assert!(!covers("docs/a", "docs"));
        let s = shares(&[
            ("docs", "bob", Access::Read),
            ("docs/team", "bob", Access::Write),
        ]);
        assert_eq!(access(&s, "bob", "docs/x"), Some(Access::Read));
        assert_eq!(access(&s, "bob", "docs/team/x"), Some(Access::Write));
        assert_eq!(access(&s, "bob", "docs2/x"), None);
        assert_eq!(access(&s, "carol", "docs/x"), None);
    }

    #[test]
    fn changes_refuse_oneself_unknown_users_and_missing_shares() {
        let mut s = BTreeMap::new();
        let live = |u: &str| u == "bob" || u == "alice";
        let e = change(&mut s, "alice", "docs", "alice", Some(Access::Read), live);
        assert!(e.unwrap_err().to_string().contains("yourself"));
        let e = change(&mut s, "alice", "docs", "zed", Some(Access::Read), live);
        assert!(e.unwrap_err().to_string().contains("no user zed"));
        let e = change(&mut s, "alice", "docs", "bob", None, live);
        assert!(e.unwrap_err().to_string().contains("not shared with bob"));
        assert!(change(&mut s, "alice", "a/../b", "bob", Some(Access::Read), live).is_err());
        assert!(s.is_empty());
        change(&mut s, "alice", "docs", "bob", Some(Access::Read), live).unwrap();
        change(&mut s, "alice", "docs", "bob", Some(Access::Write), live).unwrap();
        assert_eq!(access(&s, "bob", "docs"), Some(Access::Write));
        change(&mut s, "alice", "docs", "bob", None, live).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn withdrawing_a_user_leaves_the_others() {
        let mut s = shares(&[
            ("docs", "bob", Access::Read),
            ("docs", "carol", Access::Read),
            ("pics", "bob", Access::Write),
        ]);
        assert!(withdraw_all(&mut s, "bob"));
        assert_eq!(s, shares(&[("docs", "carol", Access::Read)]));
        assert!(!withdraw_all(&mut s, "bob"));
    }
}
