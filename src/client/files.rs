//! Names: stat, folders, delete, mv/cp, sharing and usage.

use std::collections::BTreeMap;

use futures_util::future::join_all;

use crate::error::{shown, Error, ErrorKind, Result};
use crate::names::validate_name;
use crate::protocol::{Manifest, Request, Response, Version};
use crate::sharing::{Access, Share};

use super::*;

/// What a DELETE did: servers that applied it, and the ones that could not be reached.
#[derive(Debug, Clone)]
pub struct DeleteReceipt {
    pub applied: usize,
    pub missed: Vec<String>,
}

/// What `mv` or `cp` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelinkReceipt {
    /// The path the file or folder has now (`to`, or inside it).
    pub to: String,
    /// Files moved or copied (folders made with `mkdir` not counted).
    pub files: usize,
    /// Servers that did not take it (down, or not yet holding the data):
    /// healing brings them up to date.
    pub missed: Vec<String>,
}

impl Client {
    /// The current manifest of a live file.
    pub async fn stat(&self, name: &str) -> Result<Manifest> {
        let scope = self.file_scope(name)?;
        match one_command(self.newest_manifest(&scope)).await? {
            Some(m) if !m.deleted => Ok(m),
            _ => Err(Error::NotFound {
                name: name.to_string(),
            }),
        }
    }

    /// `share` (`access` given) or `unshare` (`None`) of the user's own
    /// file or folder `path` with `with`: once a server has it (it sends
    /// it to every other member).
    pub async fn share(&self, path: &str, with: &str, access: Option<Access>) -> Result<()> {
        let scope = self.file_scope(path)?;
        if scope.shared {
            return Err(Error::Refused(format!(
                "{}: you can share only your own files",
                shown(path)
            )));
        }
        crate::names::validate_user(with)?;
        let request = Request::Share {
            path: scope.name,
            with: with.to_string(),
            access,
        };
        one_command(async {
            match self.first_answer(&request).await? {
                (_, Response::Ok) => Ok(()),
                (i, other) => Err(unexpected(&self.server_name(i), &other)),
            }
        })
        .await
    }

    /// What the user shares and what is shared with them.
    pub async fn shares(&self) -> Result<Vec<Share>> {
        one_command(async {
            match self.first_answer(&Request::Shares).await? {
                (_, Response::Shares(shares)) => Ok(shares),
                (i, other) => Err(unexpected(&self.server_name(i), &other)),
            }
        })
        .await
    }

    pub(super) async fn shared_with_me(&self) -> Result<Vec<Share>> {
        let mut shares = self.shares().await?;
        shares.retain(|s| s.user == self.login.user);
        Ok(shares)
    }

    /// The first answer of the servers, asked in ring order until one
    /// answers; a server's refusal is the answer.
    async fn first_answer(&self, request: &Request) -> Result<(usize, Response)> {
        self.maybe_refresh().await;
        let mut last = None;
        for &i in self.order().iter() {
            match self.call(i, request).await {
                Ok(response) => return Ok((i, response)),
                Err(e @ Error::Remote { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable {
            server: "the ring".into(),
            reason: "no server answered".into(),
        }))
    }

    /// `mkdir` (`make`) or `rmdir` of `path`, on every server: done if one
    /// did it; else the first refusal (it exists, it is not empty...).
    pub async fn folder(&self, path: &str, make: bool) -> Result<()> {
        let scope = self.file_scope(path)?;
        let path = scope.name.clone();
        let request = if make {
            Request::MakeFolder { path }
        } else {
            Request::RemoveFolder { path }
        };
        let request = scope.request(request, &[]);
        one_command(async {
            let results = self.call_all(&request).await;
            any_answered(self.acknowledged(results)).map(drop)
        })
        .await
    }

    /// Deletes `remote` everywhere. Servers that are down keep a stale copy
    /// that the tombstone on the others outranks.
    pub async fn delete(&self, remote: &str) -> Result<DeleteReceipt> {
        one_command(self.delete_command(remote)).await
    }

    async fn delete_command(&self, remote: &str) -> Result<DeleteReceipt> {
        let current = self.stat(remote).await?;
        let scope = self.file_scope(remote)?;
        let request = scope.request(
            Request::Delete {
                name: scope.name.clone(),
                version: Version::next(Some(current.version)),
            },
            &[],
        );
        let results = self.call_all(&request).await;
        let (applied, failed) = any_answered(self.acknowledged(results))?;
        Ok(DeleteReceipt {
            applied: applied.len(),
            missed: failed.iter().map(|(i, _)| self.server_name(*i)).collect(),
        })
    }

    /// `mv` (`keep` false) or `cp` (`keep` true) of the file or folder
    /// `from` to `to`, or into `to` if it is a folder, as `mv` and `cp -r`
    /// do. Metadata only: the new names share the data where it is (see
    /// `Manifest::data`), so no chunk moves, and the servers do it without
    /// the data passing through the client. On each server the new names
    /// and the old names' tombstones commit in one transaction, so a
    /// reader sees the old names or the new ones (a folder of more than a
    /// message's worth of files, about 5 000, moves in several steps).
    pub async fn relink(&self, from: &str, to: &str, keep: bool) -> Result<RelinkReceipt> {
        one_command(self.relink_command(from, to, keep)).await
    }

    async fn relink_command(
        &self,
        from_name: &str,
        to_name: &str,
        keep: bool,
    ) -> Result<RelinkReceipt> {
        let verb = if keep { "copy" } else { "move" };
        let scope = self.file_scope(from_name)?;
        let to_scope = self.file_scope(to_name)?;
        if to_scope.owner != scope.owner {
            return Err(Error::Refused(format!(
                "cannot {verb} {} to {}: mv and cp stay within one user's files (get and put copy between them)",
                shown(from_name),
                shown(to_name)
            )));
        }
        let (from, to) = (scope.name.as_str(), to_scope.name.as_str());
        self.maybe_refresh().await;
        let sources: Vec<Manifest> = self
            .manifests_under(&scope)
            .await?
            .into_values()
            .filter(|m| !m.deleted)
            .collect();
        if sources.is_empty() {
            return Err(Error::NotFound {
                name: from_name.to_string(),
            });
        }
        let is_file = sources.iter().any(|m| m.name == from);
        // A folder takes the source inside it. One with a live file or
        // sub-folder says so on its first page, however large it is; else
        // only tombstones and maybe its `mkdir` mark are under it.
        let into = !self.list_dir_page(to_name, None).await?.0.is_empty()
            || self
                .manifests_under(&to_scope)
                .await?
                .values()
                .any(|m| !m.deleted && m.name != to);
        let dest = if into {
            let base = from.rsplit('/').next().unwrap_or(from);
            let dest = format!("{to}/{base}");
            validate_name(&dest)?;
            dest
        } else {
            to.to_string()
        };
        if dest == from {
            return Err(Error::Refused(format!(
                "{} and {} are the same",
                shown(from),
                shown(&dest)
            )));
        }
        if dest.starts_with(&format!("{from}/")) {
            return Err(Error::Refused(format!(
                "cannot {verb} {} into itself",
                shown(from)
            )));
        }
        let at_dest = self.manifests_under(&scope.with_name(&dest)).await?;
        let live_at_dest: Vec<&Manifest> = at_dest.values().filter(|m| !m.deleted).collect();
        if is_file && live_at_dest.iter().any(|m| m.name != dest) {
            return Err(Error::Refused(format!("{} is a folder", shown(&dest))));
        }
        if !is_file && live_at_dest.iter().any(|m| m.name == dest) {
            return Err(Error::Refused(format!("{} is a file", shown(&dest))));
        }
        if !is_file && !live_at_dest.is_empty() {
            return Err(Error::Refused(format!("{} exists", shown(&dest))));
        }
        let newest = sources
            .iter()
            .chain(at_dest.values())
            .map(|m| m.version)
            .max();
        let version = Version::next(newest);
        // Each batch with the sources it takes data from.
        let mut batches: Vec<(Vec<Manifest>, Vec<&str>)> = vec![Default::default()];
        let mut bytes = 0;
        for source in &sources {
            let name = format!("{dest}{}", &source.name[from.len()..]);
            let mut group = vec![Manifest {
                name,
                version,
                data: source.has_data().then(|| source.data_ref()),
                ..source.clone()
            }];
            if !keep {
                group.push(Manifest::tombstone(source.name.clone(), version));
            }
            let len: usize = group.iter().map(Manifest::encoded_len).sum();
            if bytes + len > RELINK_BATCH_BYTES {
                batches.push(Default::default());
                bytes = 0;
            }
            bytes += len;
            let batch = batches.last_mut().expect("one batch at least");
            batch.0.extend(group);
            batch.1.push(&source.name);
        }
        let mut missed = std::collections::BTreeSet::new();
        for (manifests, sources) in batches {
            let request = scope.request(Request::CommitMany { manifests }, &sources);
            let results = self.call_all(&request).await;
            let (_, failed) = any_answered(self.acknowledged(results))?;
            missed.extend(failed.iter().map(|(i, _)| self.server_name(*i)));
        }
        Ok(RelinkReceipt {
            to: scope.shown(&dest),
            files: sources.iter().filter(|m| m.has_data()).count(),
            missed: missed.into_iter().collect(),
        })
    }

    /// Every manifest of `path` and under folder `path` (tombstones and
    /// folder marks too), the newest of each name among the servers that
    /// answer.
    pub(super) async fn manifests_under(
        &self,
        scope: &Scope,
    ) -> Result<BTreeMap<String, Manifest>> {
        let order = self.order();
        let answers = join_all(order.iter().map(|&i| async move {
            let (mut all, mut after) = (Vec::new(), None);
            loop {
                let request = scope.request(
                    Request::Manifests {
                        path: scope.name.clone(),
                        after: after.take(),
                    },
                    &[],
                );
                match self.call(i, &request).await? {
                    Response::Manifests { manifests, more } => {
                        after = manifests.last().map(|m: &Manifest| m.name.clone());
                        all.extend(manifests);
                        if !more || after.is_none() {
                            return Ok(all);
                        }
                    }
                    other => return Err(unexpected(&self.server_name(i), &other)),
                }
            }
        }))
        .await;
        let (answers, _) = any_answered(order.iter().copied().zip(answers))?;
        let mut newest: BTreeMap<String, Manifest> = BTreeMap::new();
        for m in answers.into_iter().flat_map(|(_, all)| all) {
            if newest
                .get(&m.name)
                .is_none_or(|old| old.version < m.version)
            {
                newest.insert(m.name.clone(), m);
            }
        }
        Ok(newest)
    }

    /// `du` (`path`: a file or folder, `""` everything) and `df`: the
    /// user's usage as the servers count it (every server keeps every
    /// user's; the largest answer is taken, so a server that has not yet
    /// heard of a change does not make it look smaller), the quota, and the
    /// cluster's free space: the free bytes of each disk the answering
    /// servers store on (a disk several share counted once), over the
    /// copies kept of each chunk.
    pub async fn usage(&self, path: &str) -> Result<UsageInfo> {
        let scope = self.scope(path)?;
        if scope.shared && scope.name.is_empty() {
            return Err(Error::Refused(format!(
                "{}: du works on a shared file or folder, not on all of {}'s",
                shown(path),
                scope.owner
            )));
        }
        one_command(async {
            self.maybe_refresh().await;
            let order = self.order();
            let request = scope.request(
                Request::Usage {
                    path: scope.name.clone(),
                },
                &[],
            );
            let answers = self.call_on(&order, &request).await;
            let answers = answers.into_iter().map(|(i, answer)| {
                let report = match answer {
                    Ok(Response::Usage(report)) => Ok(report),
                    Ok(other) => Err(unexpected(&self.server_name(i), &other)),
                    Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::NotFound {
                        name: path.to_string(),
                    }),
                    Err(e) => Err(e),
                };
                (i, report)
            });
            let (reports, _) = any_answered(answers)?;
            let mut disks = BTreeMap::new();
            for (_, r) in &reports {
                disks.insert(r.disk.clone(), r.free);
            }
            let best = reports
                .iter()
                .map(|(_, r)| r)
                .max_by_key(|r| (r.used(), r.path_bytes, r.path_files))
                .cloned()
                .expect("any_answered returns at least one answer");
            let copies = u64::from(order.copies().max(1));
            Ok(UsageInfo {
                path: path.to_string(),
                cluster_free: disks.values().sum::<u64>() / copies,
                copies: copies as u32,
                answered: reports.len(),
                servers: order.len(),
                report: best,
            })
        })
        .await
    }
}

/// What `du` and `df` show: see [`Client::usage`].
#[derive(Debug, Clone)]
pub struct UsageInfo {
    /// The file or folder asked about (`""`: everything).
    pub path: String,
    /// The user's usage and quota, and what is under `path`.
    pub report: crate::protocol::UsageReport,
    /// Free bytes in the cluster for new files: the answering servers'
    /// disks' free bytes (each disk once) over `copies`.
    pub cluster_free: u64,
    pub copies: u32,
    /// Servers that answered, of the ring's.
    pub answered: usize,
    pub servers: usize,
}

/// Bytes of manifests at most in one `CommitMany` (a frame is 1 MiB).
const RELINK_BATCH_BYTES: usize = 512 << 10;
