//! Reports: WHERE (each chunk's copies), VERIFY and STATUS.

use futures_util::future::join_all;

use crate::error::{Error, ErrorKind, Result};
use crate::placement::Placement;
use crate::protocol::{Manifest, Member, Request, Response, ServerStatus, Version};
use crate::standing::{OwnView, Standing};

use super::*;

/// Where a file's chunks are: the answer to WHERE.
#[derive(Debug, Clone)]
pub struct Location {
    pub manifest: Manifest,
    /// Per chunk (index 0 = chunk 1): its two holders, first choice first.
    pub chunks: Vec<Vec<CopyState>>,
    /// Whose file it is.
    pub scope: Scope,
}

/// One copy of a chunk on one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyState {
    pub server: String,
    /// `Some(true)`: stored; `Some(false)`: missing; `None`: server unreachable.
    pub present: Option<bool>,
}

/// How a file's copies are, as VERIFY found them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Every copy present and correct.
    Healthy,
    /// Every chunk readable, but some copies are missing or their servers down.
    Degraded,
    /// A copy failed its checksum; its server set it aside and is repairing it.
    Corrupt,
    /// Some chunk has no good copy left.
    Lost,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Corrupt => "corrupt",
            Health::Lost => "lost",
        }
    }
}

/// VERIFY's finding for one file.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub name: String,
    pub health: Health,
    /// One line per copy that is not right.
    pub problems: Vec<String>,
}

/// One server's line in STATUS.
#[derive(Debug, Clone)]
pub struct ServerReport {
    pub member: Member,
    /// 1-based ring position.
    pub position: u32,
    /// The share of the ring it owns (0..=1): the arc from its
    /// predecessor's id to its own, where it is the first holder.
    pub share: f64,
    /// What the server said, or why it could not be asked.
    pub state: std::result::Result<ServerStatus, String>,
    /// Whether it is in one ring with the others (`None`: it did not answer).
    pub standing: Option<Standing>,
}

impl Client {
    /// Which servers hold each chunk of `name`, and whether each copy is there.
    pub async fn locate(&self, name: &str) -> Result<Location> {
        one_command(self.locate_command(name)).await
    }

    async fn locate_command(&self, name: &str) -> Result<Location> {
        let scope = self.file_scope(name)?;
        self.maybe_refresh().await;
        let order = self.order();
        let answers = self.stat_on(&order, &scope).await;
        let held: Vec<Option<(Option<Version>, Vec<u32>)>> = answers
            .iter()
            .map(|a| {
                a.as_ref()
                    .ok()
                    .map(|(m, held)| (m.as_ref().map(|m| m.version), held.clone()))
            })
            .collect();
        let manifest = match newest_of(answers)? {
            Some(m) if !m.deleted => m,
            _ => {
                return Err(Error::NotFound {
                    name: name.to_string(),
                })
            }
        };
        let placement = Placement::of(&scope.owner, manifest.data_name());
        let chunks = (1..=manifest.chunks)
            .map(|c| {
                order
                    .positions(&placement, c, manifest.chunks)
                    .into_iter()
                    .map(|pos| {
                        let at = pos as usize - 1;
                        let present = held
                            .get(at)
                            .and_then(Option::as_ref)
                            .map(|(v, chunks)| *v == Some(manifest.version) && chunks.contains(&c));
                        CopyState {
                            server: self.server_name(order[at]),
                            present,
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(Location {
            manifest,
            chunks,
            scope,
        })
    }

    /// Has every copy of `name` (or of every file) read and checked by the
    /// server holding it, without moving the data.
    pub async fn verify(&self, name: Option<&str>) -> Result<Vec<VerifyReport>> {
        one_command(self.verify_command(name)).await
    }

    async fn verify_command(&self, name: Option<&str>) -> Result<Vec<VerifyReport>> {
        let names = match name {
            Some(n) => vec![n.to_string()],
            None => self.list().await?.into_iter().map(|f| f.name).collect(),
        };
        let mut reports = Vec::new();
        for name in names {
            let location = self.locate(&name).await?;
            reports.push(self.verify_file(&location).await);
        }
        Ok(reports)
    }

    async fn verify_file(&self, location: &Location) -> VerifyReport {
        let m = &location.manifest;
        let order = self.order();
        let scope = &location.scope;
        let placement = Placement::of(&scope.owner, m.data_name());
        let copies: Vec<(u32, usize)> = (1..=m.chunks)
            .flat_map(|c| {
                order
                    .holders(&placement, c, m.chunks)
                    .into_iter()
                    .map(move |i| (c, i))
            })
            .collect();
        let checks = join_all(copies.iter().map(|&(chunk, i)| {
            let request = scope.request(
                Request::Verify {
                    name: m.data_name().to_string(),
                    version: m.data_version(),
                    chunk,
                },
                &[&m.name],
            );
            async move { self.call(i, &request).await }
        }))
        .await;
        let mut good = vec![0u32; m.chunks as usize];
        let mut health = Health::Healthy;
        let mut problems = Vec::new();
        for (&(chunk, i), check) in copies.iter().zip(checks) {
            let server = self.server_name(i);
            match check {
                Ok(_) => good[chunk as usize - 1] += 1,
                Err(e) if e.kind() == ErrorKind::Corrupt => {
                    health = health.max(Health::Corrupt);
                    problems.push(format!(
                        "chunk {chunk} on {server}: corrupt (set aside; repairing)"
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    health = health.max(Health::Degraded);
                    problems.push(format!("chunk {chunk} on {server}: missing"));
                }
                Err(e) => {
                    health = health.max(Health::Degraded);
                    problems.push(format!("chunk {chunk} on {server}: {e}"));
                }
            }
        }
        for (c, &n) in good.iter().enumerate() {
            if n == 0 {
                health = Health::Lost;
                problems.push(format!("chunk {} has no good copy", c + 1));
            }
        }
        VerifyReport {
            name: scope.shown(&m.name),
            health,
            problems,
        }
    }

    /// Every ring member's own account of itself, or why it could not be asked.
    pub async fn status(&self) -> Vec<ServerReport> {
        one_command(self.status_command()).await
    }

    async fn status_command(&self) -> Vec<ServerReport> {
        let _ = self.refresh_ring().await;
        let order = self.order();
        let shares = crate::placement::shares(&order.ids);
        let answers = self.call_on(&order, &Request::Status).await;
        let states: Vec<(usize, std::result::Result<ServerStatus, String>)> = answers
            .into_iter()
            .map(|(i, answer)| {
                let state = match answer {
                    Ok(Response::Status(s)) => Ok(s),
                    Ok(other) => Err(unexpected(&self.server_name(i), &other).to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (i, state)
            })
            .collect();
        let views: Vec<Option<OwnView>> = states
            .iter()
            .map(|(_, state)| state.as_ref().ok().map(own_view))
            .collect();
        let judged = self.record_standings(&order, &views);
        states
            .into_iter()
            .zip(judged)
            .enumerate()
            .map(|(at, ((i, state), (_, standing)))| ServerReport {
                member: self.slot(i).member.clone(),
                position: at as u32 + 1,
                share: shares.get(at).copied().unwrap_or_default(),
                state,
                standing,
            })
            .collect()
    }
}
