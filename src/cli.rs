//! The `dfs` command language, shared by one-shot commands and the prompt:
//! parsing a line into a [`Command`], running it against a [`Client`], and
//! rendering results as plain text (tables, sizes, receipts).

use std::path::{Path, PathBuf};

use crate::client::{Client, FileInfo, Progress, ServerReport};
use crate::error::{Error, Result};

/// One thing a user asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Put {
        local: PathBuf,
        remote: Option<String>,
    },
    Get {
        remote: String,
        local: Option<PathBuf>,
    },
    List,
    Delete {
        remote: String,
    },
    Status,
    Help,
    Exit,
}

/// Commands, their arguments and what they do, for HELP and usage errors.
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "put",
        "LOCAL [REMOTE]",
        "store a local file (as REMOTE, default its name)",
    ),
    (
        "get",
        "REMOTE [LOCAL]",
        "fetch a file (to LOCAL, default the download folder)",
    ),
    ("list", "", "your files: size, chunks, when stored, health"),
    ("delete", "REMOTE", "remove a file and all its chunks"),
    (
        "status",
        "",
        "the ring: each server, up or down, what it stores",
    ),
    ("help", "", "this list"),
    ("exit", "", "leave (Ctrl-D does too)"),
];

/// Parses one line. `Ok(None)` for a blank line. Commands are case-insensitive;
/// arguments may be quoted like a shell's (`put "my file.txt"`).
pub fn parse_line(line: &str) -> std::result::Result<Option<Command>, String> {
    let words = shell_words::split(line).map_err(|_| "unbalanced quotes".to_string())?;
    let Some((first, args)) = words.split_first() else {
        return Ok(None);
    };
    let verb = first.to_ascii_lowercase();
    let usage = |name: &str| {
        let (_, args, _) = COMMANDS
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("known command");
        if args.is_empty() {
            format!("{} takes no arguments", name.to_uppercase())
        } else {
            format!("usage: {} {args}", name.to_uppercase())
        }
    };
    let command = match (verb.as_str(), args) {
        ("put" | "upload", [local]) => Command::Put {
            local: local.into(),
            remote: None,
        },
        ("put" | "upload", [local, remote]) => Command::Put {
            local: local.into(),
            remote: Some(remote.clone()),
        },
        ("put" | "upload", _) => return Err(usage("put")),
        ("get" | "download", [remote]) => Command::Get {
            remote: remote.clone(),
            local: None,
        },
        ("get" | "download", [remote, local]) => Command::Get {
            remote: remote.clone(),
            local: Some(local.into()),
        },
        ("get" | "download", _) => return Err(usage("get")),
        ("list" | "ls", []) => Command::List,
        ("list" | "ls", _) => return Err(usage("list")),
        ("delete" | "rm" | "del", [remote]) => Command::Delete {
            remote: remote.clone(),
        },
        ("delete" | "rm" | "del", _) => return Err(usage("delete")),
        ("status", []) => Command::Status,
        ("status", _) => return Err(usage("status")),
        ("help" | "?", _) => Command::Help,
        ("exit" | "quit" | "q", _) => Command::Exit,
        (other, _) => return Err(format!("unknown command {other:?}; type HELP for the list")),
    };
    Ok(Some(command))
}

/// Runs `command` and returns what to print. `download_dir` is where GET puts
/// files when no local path is given.
pub async fn run(
    client: &Client,
    command: &Command,
    download_dir: &Path,
    progress: &dyn Progress,
) -> Result<String> {
    match command {
        Command::Put { local, remote } => {
            let remote = match remote {
                Some(r) => r.clone(),
                None => default_remote_name(local)?,
            };
            let receipt = client.put(local, &remote, progress).await?;
            Ok(format!(
                "stored {remote}: {} in {} chunks, {} copies",
                human_size(receipt.size),
                receipt.chunks,
                receipt.copies
            ))
        }
        Command::Get { remote, local } => {
            if local.is_none() {
                std::fs::create_dir_all(download_dir)
                    .map_err(|e| Error::io(format!("creating {}", download_dir.display()), e))?;
            }
            let local = local_target(remote, local.as_deref(), download_dir);
            let receipt = client.get(remote, &local, progress).await?;
            Ok(format!(
                "fetched {remote} to {} ({})",
                receipt.path.display(),
                human_size(receipt.size)
            ))
        }
        Command::List => Ok(list_table(&client.list().await?)),
        Command::Delete { remote } => {
            let receipt = client.delete(remote).await?;
            if receipt.missed.is_empty() {
                Ok(format!("deleted {remote}"))
            } else {
                Ok(format!(
                    "deleted {remote} ({} did not answer; its stale copy is outranked)",
                    receipt.missed.join(", ")
                ))
            }
        }
        Command::Status => Ok(status_table(&client.status().await)),
        Command::Help => Ok(help_text()),
        Command::Exit => Ok(String::new()),
    }
}

/// The remote name PUT uses when none is given: the local file's name.
fn default_remote_name(local: &Path) -> Result<String> {
    local
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::BadRequest(format!(
                "cannot name {} remotely; give a remote name",
                local.display()
            ))
        })
}

/// Where GET writes: `local` if given (inside it, if it is a folder), else the
/// download folder.
pub fn local_target(remote: &str, local: Option<&Path>, download_dir: &Path) -> PathBuf {
    match local {
        Some(path) if path.is_dir() => path.join(remote),
        Some(path) => path.to_path_buf(),
        None => download_dir.join(remote),
    }
}

pub fn help_text() -> String {
    let mut out = String::from("commands (case-insensitive):\n");
    for (name, args, what) in COMMANDS {
        out.push_str(&format!("  {:<22} {what}\n", format!("{name} {args}")));
    }
    out.push_str("aliases: ls = list, rm = delete, quit = exit; quote names with spaces");
    out
}

/// `1.5 MiB`-style sizes; exact bytes below 1 KiB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn time_of(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-11-21T00:42:34Z → 2026-11-21 00:42:34
    s.trim_end_matches('Z').replacen('T', " ", 1)
}

/// LIST as an aligned table.
pub fn list_table(files: &[FileInfo]) -> String {
    if files.is_empty() {
        return "no files".into();
    }
    let rows: Vec<[String; 5]> = files
        .iter()
        .map(|f| {
            let health = if f.healthy() {
                "ok".to_string()
            } else {
                let missing: u32 = f.copies.iter().map(|&c| f.wanted.saturating_sub(c)).sum();
                format!("degraded ({missing} copies missing)")
            };
            [
                f.name.clone(),
                human_size(f.size),
                f.chunks.to_string(),
                time_of(f.stored_at),
                health,
            ]
        })
        .collect();
    table(&["NAME", "SIZE", "CHUNKS", "STORED (UTC)", "HEALTH"], &rows)
}

/// STATUS as an aligned table.
pub fn status_table(reports: &[ServerReport]) -> String {
    let n = reports.len();
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            let successor = &reports[r.position as usize % n].member.name;
            match &r.state {
                Ok(s) => [
                    r.position.to_string(),
                    r.member.name.clone(),
                    r.member.addr.clone(),
                    "up".into(),
                    successor.clone(),
                    format!("{} chunks, {}", s.chunks, human_size(s.bytes)),
                ],
                Err(e) => [
                    r.position.to_string(),
                    r.member.name.clone(),
                    r.member.addr.clone(),
                    "DOWN".into(),
                    successor.clone(),
                    e.clone(),
                ],
            }
        })
        .collect();
    table(
        &["#", "SERVER", "ADDRESS", "STATE", "SUCCESSOR", "STORES"],
        &rows,
    )
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_aliases_and_quotes() {
        let cases: &[(&str, Command)] = &[
            (
                "put a.txt",
                Command::Put {
                    local: "a.txt".into(),
                    remote: None,
                },
            ),
            (
                "PUT \"my file.txt\" 'remote name'",
                Command::Put {
                    local: "my file.txt".into(),
                    remote: Some("remote name".into()),
                },
            ),
            (
                "Get x ./y",
                Command::Get {
                    remote: "x".into(),
                    local: Some("./y".into()),
                },
            ),
            ("ls", Command::List),
            ("LIST", Command::List),
            ("rm x", Command::Delete { remote: "x".into() }),
            ("status", Command::Status),
            ("quit", Command::Exit),
            ("help", Command::Help),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line).unwrap().as_ref(), Some(want), "{line}");
        }
        assert_eq!(parse_line("   ").unwrap(), None);
    }

    #[test]
    fn usage_errors_are_one_line() {
        for (line, want) in [
            ("put", "usage: PUT LOCAL [REMOTE]"),
            ("get a b c", "usage: GET REMOTE [LOCAL]"),
            ("delete", "usage: DELETE REMOTE"),
            ("ls -l", "LIST takes no arguments"),
            (
                "frobnicate",
                "unknown command \"frobnicate\"; type HELP for the list",
            ),
            ("put \"open", "unbalanced quotes"),
        ] {
            assert_eq!(parse_line(line).unwrap_err(), want, "{line}");
        }
    }

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(human_size(1 << 40), "1.0 TiB");
    }

    #[test]
    fn times_are_utc_without_the_t() {
        assert_eq!(time_of(0), "1970-01-01 00:00:00");
    }
}
