//! `dfs-bench`: the benchmark of SPEC §9 (issue 7), one command.
//!
//! One run starts a four-server cluster on 127.0.0.1 in a temp folder, each
//! server a child process (so its peak memory can be read from
//! `/proc/PID/status`), runs the client inside this process, and measures:
//!
//! 1. the machine's ceilings, with no protocol: a raw TCP stream memory to
//!    memory; a plain file copy through one TCP stream; the *GET ceiling*, the
//!    four stored chunk files read through four parallel TCP streams into one
//!    output file at their offsets; the *PUT ceiling*, the file sent as two
//!    copies to two receivers that each write and fdatasync;
//! 2. PUT and GET of a large random file (1 GiB), *paired* with their ceilings:
//!    after a warm-up, each pair runs ringdfs and its ceiling back to back (the
//!    order alternating), and the reported ratio is the median of the per-pair
//!    ratios. These machines swing up to 3× between identical runs; a ratio
//!    taken within one pair cancels most of that;
//! 3. the peak RSS of the client and of every server during those transfers
//!    (`VmHWM`, reset through `/proc/PID/clear_refs` before each transfer);
//! 4. GET with one server killed, paired with the GET ceiling;
//! 5. PUT and GET of many 4 KiB files, one after another in one session;
//! 6. login time (all four servers, real argon2id parameters) and LIST time
//!    with 10 000 files stored;
//! 7. `ls` of one folder of 100 000 files (issue 15), on four fresh servers
//!    whose stores hold the folder before they start (written as PUTs would
//!    have left them): the first page (median of 7, target ≤ 200 ms), and
//!    every page, one after another as `ls` reads them (median of 3);
//!    `dfs-bench --folder N` runs only this, with N files.
//!
//! `dfs-bench --files N` runs instead the benchmark of many small files
//! (issue 11), on the same four servers: N files of 4 KiB random data (named
//! `f0000000`…, taken in turn from 256 local source files) stored by 8 client
//! sessions at once (PUT/s); min(N, 1000) of them stored again by one session,
//! one after another (PUT/s, one client); as many random ones read by 8
//! sessions at once (GET/s); LIST of all N (median of 3). Then, once the
//! servers have settled (5 s and three heal rounds with no client request),
//! per server: CPU time over `--idle-secs` (default 30; utime + stime from
//! `/proc/PID/stat`, reported per 30 s and as a share of a core), `VmRSS`,
//! and its data folder's allocated bytes (`st_blocks` × 512) and inodes, with
//! all servers' bytes over the bytes of the files stored. Then dfs2 is
//! SIGKILLed and restarted, timed from the spawn until it answers STATUS to an
//! existing session (a new connection and login included); last, dfs3 is
//! SIGKILLed, 1000 new files are stored, and dfs3 is restarted and timed from
//! the spawn until its STATUS shows a heal round of its own finished with
//! nothing missing and as many files as every other server (polled every
//! 100 ms). Only this runs with `--files`, not the large-file pairs.
//!
//! `dfs-bench --http [--size MIB] [--pairs N]` measures instead the HTTP
//! endpoints (src/http/) against dfs's own client, on the same four servers
//! started with `http_listen` (free loopback ports): alice gets an S3 key
//! (through dfs1, as `dfs-server user key add` does), and one random file
//! (default 1 GiB) goes through PUT and GET pairs, after one warm-up pair,
//! `--pairs` of each (default 5), alternating which side goes first. S3: the
//! aws CLI's `s3 cp` as a child process (multipart above 8 MiB, no AWS
//! configuration of the machine's) against in-process `Client::put`; then
//! `aws s3 cp` down against `Client::get` of that same S3-stored file. curl:
//! `curl -T` to `/files/…` (HTTP Basic) and `curl -o`, likewise. Each side is
//! the wall time of the whole operation (the aws CLI's start included); every
//! file read back is compared with the source. Round `r` sends all its HTTP
//! requests to server `r mod 4`'s endpoint, so the rounds go round-robin over
//! the four. The figures: per operation, each side's median MB/s and the
//! median per-pair ratio http / dfs (target ≥ 0.70). Without the aws CLI the
//! S3 rows are skipped (one line says so); curl is required.
//!
//! The servers are this executable re-run as `dfs-bench --serve CONFIG`: the
//! same library server as `dfs-server`, but always built together with the
//! bench (`cargo run --bin dfs-bench` builds only this binary, so a
//! `dfs-server` beside it could be missing or stale). Every child is killed
//! when the bench ends, on error paths too.
//!
//! MB is 10^6 bytes; throughput counts file bytes (one copy), not wire bytes.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use rand::RngCore;
use ringdfs::accounts::UserChange;
use ringdfs::client::{no_progress, Client, ServerReport};
use ringdfs::config::{ClientConfig, ServerConfig};
use ringdfs::placement::{chunk_range, even_ring, Placement, DEFAULT_COPIES};
use ringdfs::protocol::{Member, ServerStatus};
use serde::Serialize;
use tokio::runtime::Runtime;

/// Block size of the ceiling transfers: the protocol's data block.
const BLOCK: usize = ringdfs::protocol::MAX_BLOCK;
const SERVERS: usize = 4;
const USER: (&str, &str) = ("alice", "wonderland");
/// The LIST measurement uses its own user, so the count is exact.
const LIST_USER: (&str, &str) = ("bob", "builder");
/// PUTs in flight while filling the store for LIST.
const FILL_CONCURRENCY: usize = 32;

#[derive(Parser)]
#[command(
    name = "dfs-bench",
    about = "The ringdfs benchmark (SPEC §9; issues 7, 11 and 17)"
)]
struct Args {
    /// A small smoke run (16 MiB, 2 pairs, few files): proves the bench works, judges nothing.
    #[arg(long)]
    quick: bool,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Size of the large file in MiB [default: 1024, 16 with --quick].
    #[arg(long, value_name = "MIB")]
    size: Option<u64>,
    /// Paired runs of ringdfs and its ceiling, after one warm-up [default: 6, 2 with --quick].
    #[arg(long, value_name = "N")]
    pairs: Option<usize>,
    /// Where the temp folder goes [default: the system's temp folder].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// For profilers: only repeat the ringdfs PUT (or GET, or a READ: the
    /// verified stream a gateway's GET sends, `Client::read`, drained) of
    /// the large file `--pairs` times, no ceilings, and print the process
    /// ids to attach to.
    #[arg(long, value_name = "OP", value_parser = ["put", "get", "read"])]
    profile: Option<String>,
    /// Instead of the large-file run: store this many 4 KiB files with 8
    /// concurrent clients, then measure the cluster holding them (idle CPU,
    /// RSS, disk, restart, LIST, catch-up; issue 11).
    #[arg(long, value_name = "N", conflicts_with_all = ["quick", "size", "pairs", "profile"])]
    files: Option<usize>,
    /// With --files: how long the servers are watched while idle.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "files")]
    idle_secs: u64,
    /// With --files: write the N files straight into each server's store
    /// before it starts (what N PUTs would leave there), for runs of a
    /// million files; PUT/s are then measured on 8000 further new files.
    #[arg(long, requires = "files")]
    direct: bool,
    /// Instead of the large-file run: only `ls` of one folder of N files
    /// (the last part of the full run, which uses 100 000).
    #[arg(long, value_name = "N", conflicts_with_all = ["quick", "size", "pairs", "profile", "files"])]
    folder: Option<usize>,
    /// Instead of the large-file run: PUT and GET of the large file through
    /// S3 (the aws CLI) and the files API (curl), each paired with dfs's own
    /// PUT and GET [pairs default: 5].
    #[arg(long, conflicts_with_all = ["quick", "profile", "files", "folder"])]
    http: bool,
    /// Instead of the large-file run: `cp` of the large file out of (and
    /// into) `dfs mount`'s folder, each paired with dfs's own GET (PUT)
    /// [pairs default: 5]. Needs FUSE (/dev/fuse and fusermount3).
    #[arg(long, conflicts_with_all = ["quick", "profile", "files", "folder", "http"])]
    mount: bool,
    /// Instead of the large-file run: PUT and GET of the large file by a
    /// ringdfs client process against OpenSSH's sftp to a private sshd on a
    /// loopback port, paired [pairs default: 5]. Needs sftp and sshd.
    #[arg(long, conflicts_with_all = ["quick", "profile", "files", "folder", "http", "mount"])]
    sftp: bool,
    /// Internal: one whole client process, as `dfs put` or `dfs get` is:
    /// OP (put or get), the client configuration, FROM, TO.
    #[arg(long, hide = true, num_args = 4, value_names = ["OP", "CONFIG", "FROM", "TO"])]
    client: Option<Vec<String>>,
    /// Internal: run one chunk server from this configuration file.
    #[arg(long, hide = true, value_name = "CONFIG")]
    serve: Option<PathBuf>,
}

/// The sizes of one run.
struct Plan {
    quick: bool,
    size: u64,
    pairs: usize,
    raw_tcp_bytes: u64,
    plain_copies: usize,
    small_files: usize,
    list_files: usize,
    logins: usize,
    lists: usize,
    /// Files in the folder `ls` lists (issue 15).
    folder_files: usize,
    /// Timed first pages of it; timed walks through all its pages.
    first_pages: usize,
    walks: usize,
}

impl Plan {
    fn from(args: &Args) -> Result<Plan> {
        let quick = args.quick;
        let mib = args.size.unwrap_or(if quick { 16 } else { 1024 });
        // An even count: each order (ringdfs first, ceiling first) runs as
        // often as the other, so the median does not favour either.
        let pairs = args.pairs.unwrap_or(if quick { 2 } else { 6 });
        if mib == 0 || pairs == 0 {
            bail!("--size and --pairs must be at least 1");
        }
        Ok(Plan {
            quick,
            size: mib << 20,
            pairs,
            raw_tcp_bytes: if quick { 256 << 20 } else { 4 << 30 },
            plain_copies: if quick { 1 } else { 3 },
            small_files: if quick { 100 } else { 1000 },
            list_files: if quick { 500 } else { 10_000 },
            logins: if quick { 3 } else { 7 },
            lists: if quick { 3 } else { 7 },
            folder_files: if quick { 2_000 } else { 100_000 },
            first_pages: if quick { 3 } else { 7 },
            walks: if quick { 1 } else { 3 },
        })
    }
}

fn main() {
    ringdfs::memory::limit_retained_memory();
    if let Err(e) = real_main() {
        eprintln!("dfs-bench: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    if let Some(config) = &args.serve {
        return serve(config);
    }
    if let Some(client) = &args.client {
        return client_process(client);
    }
    let plan = Plan::from(&args)?;
    let files = args
        .files
        .map(|n| FilesPlan::new(n, args.idle_secs, args.direct))
        .transpose()?;
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("dfs-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("creating a temp folder in {}", base.display()))?;
    if let Some(op) = &args.profile {
        return profile(&plan, tmp.path(), op);
    }
    if args.sftp {
        let pairs = args.pairs.unwrap_or(HTTP_PAIRS);
        let Some(report) = sftp_bench(plan.size, pairs, tmp.path())? else {
            return Ok(());
        };
        let title = format!(
            "ringdfs vs sftp: {} MiB file, {pairs} pairs (ratios: median of per-pair ringdfs speed / sftp speed), whole processes, TLS on",
            plan.size >> 20
        );
        print_report(&title, &report.table, args.json.as_deref(), &report)?;
    } else if args.mount {
        let pairs = args.pairs.unwrap_or(HTTP_PAIRS);
        let report = mount_bench(plan.size, pairs, tmp.path())?;
        let title = format!(
            "ringdfs mount benchmark: {} MiB file, {pairs} pairs (ratios: median of per-pair cp / dfs), TLS on",
            plan.size >> 20
        );
        print_report(&title, &report.table, args.json.as_deref(), &report)?;
    } else if args.http {
        let pairs = args.pairs.unwrap_or(HTTP_PAIRS);
        let report = http_bench(plan.size, pairs, tmp.path())?;
        print_http_table(&report);
        write_json(args.json.as_deref(), &report)?;
    } else if let Some(n) = args.folder {
        if n == 0 {
            bail!("--folder must be at least 1");
        }
        let figures = folder_listing(n, 7, 3, tmp.path())?;
        let mut table = Vec::new();
        folder_rows(&figures, &mut table);
        let title = "ringdfs folder benchmark: ls of one folder, TLS on";
        print_report(title, &table, args.json.as_deref(), &figures)?;
    } else if let Some(files) = files {
        let report = files_bench(&files, tmp.path())?;
        print_files_table(&report);
        write_json(args.json.as_deref(), &report)?;
    } else {
        let report = bench(&plan, tmp.path())?;
        print_table(&report);
        write_json(args.json.as_deref(), &report)?;
    }
    // On a disk mounted with `discard` each unlink waits for the device, so
    // this can take a while.
    eprintln!("removing {}", tmp.path().display());
    Ok(())
}

/// A report's table under its title, and its figures as JSON if asked.
fn print_report(
    title: &str,
    table: &[Row],
    json: Option<&Path>,
    report: &impl Serialize,
) -> Result<()> {
    println!();
    println!("{title}");
    print_rows(table);
    write_json(json, report)
}

/// `--json PATH`: every figure of `report`, written to `path`.
fn write_json(path: Option<&Path>, report: &impl Serialize) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let text = serde_json::to_string_pretty(report).context("encoding the JSON report")?;
    fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The child-process mode: one chunk server, as `dfs-server --config` runs it.
fn serve(config: &Path) -> Result<()> {
    thread::spawn(|| {
        let _ = std::io::stdin().read(&mut [0u8; 1]);
        std::process::exit(0);
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        // Colour only on a terminal: a log file gets plain text.
        .with_ansi(ringdfs::cli::colour_on_stderr())
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig::load(config)?;
    let runtime = Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        // Bound before the server opens, as `dfs-server` does: a port taken
        // meanwhile fails the start instead of a later request.
        let http = ringdfs::http::bind(&config).await?;
        let server = Arc::new(ringdfs::server::Server::open(&config)?);
        let shutdown = tokio_util::sync::CancellationToken::new();
        if let Some(http) = http {
            ringdfs::http::start(Arc::clone(&server), &config, http, shutdown.clone())?;
        }
        ringdfs::server::run(listener, server, shutdown).await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// The run

/// `--profile put|get|read`: the cluster, one PUT, then only the timed
/// operation.
fn profile(plan: &Plan, dir: &Path, op: &str) -> Result<()> {
    write_users(&dir.join("users.toml"))?;
    let big = dir.join("big.src");
    write_random_file(&big, plan.size)?;
    let cluster = Cluster::start(dir)?;
    let pids: Vec<String> = std::iter::once(std::process::id())
        .chain(cluster.pids().into_iter().flatten())
        .map(|p| p.to_string())
        .collect();
    eprintln!("pids (client, dfs1..dfs4): {}", pids.join(","));
    let runtime = Runtime::new().context("starting the runtime")?;
    let client = runtime.block_on(Client::login(&cluster.client_config(dir), USER.0, USER.1))?;
    runtime.block_on(client.put(&big, "big", &no_progress))?;
    let out = dir.join("get.out");
    for round in 1..=plan.pairs {
        let t = Instant::now();
        match op {
            "put" => {
                runtime.block_on(client.put(&big, &format!("big-{round}"), &no_progress))?;
            }
            "read" => {
                let read = runtime.block_on(drain_read(&client, "big"))?;
                if read != plan.size {
                    bail!("READ gave {read} bytes of {}", plan.size);
                }
            }
            _ => {
                runtime.block_on(client.get("big", &out, &no_progress))?;
            }
        }
        let took = t.elapsed();
        remove(&out);
        eprintln!("{round}: {:.0} MB/s", mbps(plan.size, took));
    }
    Ok(())
}

/// Reads all of `name` with `Client::read`, dropping the bytes; how many
/// came.
async fn drain_read(client: &Client, name: &str) -> Result<u64> {
    let (_, mut stream) = client.read(name, None).await?;
    let mut read = 0;
    while let Some(piece) = stream.next().await {
        read += piece?.len() as u64;
    }
    Ok(read)
}

fn bench(plan: &Plan, dir: &Path) -> Result<Report> {
    let started = Instant::now();
    let say = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());

    say("writing users.toml (argon2id, default parameters) and test files");
    write_users(&dir.join("users.toml"))?;
    let big = dir.join("big.src");
    write_random_file(&big, plan.size)?;
    let small_dir = dir.join("small");
    fs::create_dir_all(&small_dir)?;
    let mut small = Vec::with_capacity(plan.small_files);
    for i in 0..plan.small_files {
        let path = small_dir.join(format!("f{i:05}"));
        write_random_file(&path, 4096)?;
        small.push(path);
    }
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch)?;

    say("starting four servers");
    let mut cluster = Cluster::start(dir)?;
    let runtime = Runtime::new().context("starting the runtime")?;
    let config = cluster.client_config(dir);

    say("ceilings: raw TCP, plain copy");
    let raw_tcp_mbps = raw_tcp(plan.raw_tcp_bytes)?;
    let mut plain = Vec::new();
    for _ in 0..plan.plain_copies {
        plain.push(plain_copy(&big, &scratch.join("plain.out"))?);
    }
    let plain_copy_mbps = median(&plain);

    say("login");
    let mut login_ms = Vec::new();
    let mut client = None;
    for _ in 0..plan.logins {
        let t = Instant::now();
        let c = runtime
            .block_on(Client::login(&config, USER.0, USER.1))
            .context("logging in")?;
        login_ms.push(ms(t.elapsed()));
        client = Some(c);
    }
    let client = client.context("no login ran")?;

    let size_mib = plan.size >> 20;
    say(&format!(
        "PUT and GET of {size_mib} MiB: warm-up, then {} pairs",
        plan.pairs
    ));
    let mut peaks = Peaks::new(&cluster);
    let get_out = scratch.join("get.out");
    let ceiling_out = scratch.join("ceiling.out");
    let copies = [scratch.join("copy0.out"), scratch.join("copy1.out")];
    let mut put_pairs = Vec::new();
    let mut get_pairs = Vec::new();
    let mut big_name = String::new();
    for round in 0..=plan.pairs {
        // A new name every round, so a PUT never pays for deleting the
        // previous version; the previous file is deleted between rounds,
        // untimed, like every other clean-up.
        if !big_name.is_empty() {
            runtime.block_on(client.delete(&big_name))?;
        }
        big_name = format!("big-{round}");
        let ringdfs_first = round % 2 == 0;
        let put = pair(
            ringdfs_first,
            plan.size,
            || {
                peaks.around(&cluster, || {
                    runtime.block_on(client.put(&big, &big_name, &no_progress))?;
                    Ok(())
                })
            },
            || put_ceiling(&big, &copies),
        )?;
        copies.iter().for_each(|c| remove(c));
        let sources = stored_chunks(&cluster, USER.0, &big_name, plan.size)?;
        let get = pair(
            ringdfs_first,
            plan.size,
            || {
                peaks.around(&cluster, || {
                    runtime.block_on(client.get(&big_name, &get_out, &no_progress))?;
                    Ok(())
                })
            },
            || get_ceiling(&sources, plan.size, &ceiling_out),
        )?;
        if round == 0 {
            verify_same(&big, &get_out).context("after the warm-up GET")?;
            verify_same(&big, &ceiling_out).context("after the warm-up GET ceiling")?;
        }
        remove(&get_out);
        remove(&ceiling_out);
        if round == 0 {
            continue; // the warm-up
        }
        say(&format!(
            "pair {round}: PUT {:.0} MB/s ({:.2}), GET {:.0} MB/s ({:.2})",
            put.ringdfs_mbps, put.ratio, get.ringdfs_mbps, get.ratio
        ));
        put_pairs.push(put);
        get_pairs.push(get);
    }

    say(&format!(
        "{} files of 4 KiB: PUT, then GET",
        plan.small_files
    ));
    let t = Instant::now();
    for (i, path) in small.iter().enumerate() {
        runtime
            .block_on(client.put(path, &format!("small-f{i:05}"), &no_progress))
            .context("PUT of a small file")?;
    }
    let small_put_per_s = plan.small_files as f64 / t.elapsed().as_secs_f64();
    let small_out = scratch.join("small-out");
    fs::create_dir_all(&small_out)?;
    let t = Instant::now();
    for i in 0..plan.small_files {
        let name = format!("small-f{i:05}");
        runtime
            .block_on(client.get(&name, &small_out.join(format!("f{i:05}")), &no_progress))
            .context("GET of a small file")?;
    }
    let small_get_per_s = plan.small_files as f64 / t.elapsed().as_secs_f64();
    let _ = fs::remove_dir_all(&small_out);

    say(&format!(
        "storing {} files for LIST ({FILL_CONCURRENCY} PUTs in flight)",
        plan.list_files
    ));
    let lister = runtime
        .block_on(Client::login(&config, LIST_USER.0, LIST_USER.1))
        .context("logging in")?;
    runtime.block_on(fill(&lister, &small[0], plan.list_files))?;
    let mut list_ms = Vec::new();
    for _ in 0..plan.lists {
        let t = Instant::now();
        let files = runtime.block_on(lister.list()).context("LIST")?;
        list_ms.push(ms(t.elapsed()));
        if files.len() != plan.list_files {
            bail!(
                "LIST returned {} files, {} were stored",
                files.len(),
                plan.list_files
            );
        }
    }
    drop(lister);

    say(&format!(
        "GET of {size_mib} MiB with dfs1 killed: warm-up, then {} pairs",
        plan.pairs
    ));
    cluster.kill(0)?;
    let sources = stored_chunks(&cluster, USER.0, &big_name, plan.size)?;
    let mut down_pairs = Vec::new();
    for round in 0..=plan.pairs {
        let get = pair(
            round % 2 == 0,
            plan.size,
            || {
                peaks.around(&cluster, || {
                    runtime.block_on(client.get(&big_name, &get_out, &no_progress))?;
                    Ok(())
                })
            },
            || get_ceiling(&sources, plan.size, &ceiling_out),
        )?;
        remove(&get_out);
        remove(&ceiling_out);
        if round > 0 {
            say(&format!(
                "pair {round}: GET {:.0} MB/s ({:.2})",
                get.ringdfs_mbps, get.ratio
            ));
            down_pairs.push(get);
        }
    }
    drop(client);
    drop(runtime);
    drop(cluster);

    say(&format!(
        "a folder of {} files: writing it into four new stores, then `ls`",
        plan.folder_files
    ));
    let folder = folder_listing(
        plan.folder_files,
        plan.first_pages,
        plan.walks,
        &dir.join("folder-run"),
    )?;
    say(&format!(
        "first page {:.1} ms; all {} pages {:.0} ms",
        folder.first_page_ms, folder.pages, folder.walk_ms
    ));
    say("done");

    Ok(Report::new(
        plan,
        Ceilings {
            raw_tcp_mbps,
            plain_copy_mbps,
            get_mbps: median(&get_pairs.iter().map(|p| p.ceiling_mbps).collect::<Vec<_>>()),
            put_mbps: median(&put_pairs.iter().map(|p| p.ceiling_mbps).collect::<Vec<_>>()),
        },
        put_pairs,
        get_pairs,
        down_pairs,
        peaks,
        small_put_per_s,
        small_get_per_s,
        median(&login_ms),
        median(&list_ms),
        folder,
    ))
}

/// The folder `ls` lists in [`folder_listing`].
const FOLDER: &str = "big";

/// What `ls` of one big folder took.
#[derive(Serialize)]
struct FolderFigures {
    files: usize,
    /// Pages one walk took (each checked to hold every name once, in order).
    pages: usize,
    first_page_ms: f64,
    walk_ms: f64,
}

/// Four new servers in `dir` whose stores hold `files` files of 64 bytes in
/// folder `big/` (written before they start, as PUTs would have left them:
/// every manifest on every server, each chunk on its holders), and `ls` of
/// that folder: the first page `first_pages` times, then every page in turn
/// `walks` times.
fn folder_listing(
    files: usize,
    first_pages: usize,
    walks: usize,
    dir: &Path,
) -> Result<FolderFigures> {
    fs::create_dir_all(dir)?;
    write_users(&dir.join("users.toml"))?;
    let mut data = vec![0u8; 64];
    rand::thread_rng().fill_bytes(&mut data);
    let seed = Seed {
        files,
        data: vec![data],
        owner: LIST_USER.0,
        prefix: "big/f",
    };
    let cluster = Cluster::start_seeded(dir, &seed)?;
    let runtime = Runtime::new().context("starting the runtime")?;
    let client = runtime
        .block_on(Client::login(
            &cluster.client_config(dir),
            LIST_USER.0,
            LIST_USER.1,
        ))
        .context("logging in")?;
    let mut first_ms = Vec::new();
    for _ in 0..first_pages {
        let t = Instant::now();
        let (page, _) = runtime
            .block_on(client.list_dir_page(FOLDER, None))
            .context("ls, the first page")?;
        first_ms.push(ms(t.elapsed()));
        if page.is_empty() {
            bail!("the first page of {FOLDER}/ is empty");
        }
    }
    let (mut walk_ms, mut pages) = (Vec::new(), 0);
    for _ in 0..walks {
        let t = Instant::now();
        let (mut names, mut after) = (Vec::new(), None::<String>);
        pages = 0;
        loop {
            let (page, next) = runtime
                .block_on(client.list_dir_page(FOLDER, after.as_deref()))
                .context("ls, page by page")?;
            pages += 1;
            names.extend(page.iter().map(|item| item.path().to_string()));
            match next {
                Some(cursor) => after = Some(cursor),
                None => break,
            }
        }
        walk_ms.push(ms(t.elapsed()));
        let want = (0..files).map(|i| file_name(seed.prefix, i));
        if names.len() != files || !names.into_iter().eq(want) {
            bail!("ls of {FOLDER}/ did not show every file once, in order");
        }
    }
    Ok(FolderFigures {
        files,
        pages,
        first_page_ms: median(&first_ms),
        walk_ms: median(&walk_ms),
    })
}

/// The rows of [`FolderFigures`], for a table.
fn folder_rows(f: &FolderFigures, rows: &mut Vec<Row>) {
    rows.push(Row::new(
        format!("ls of a folder of {} files: first page", f.files),
        format!("{:.1} ms", f.first_page_ms),
        "≤ 200 ms",
        Some(f.first_page_ms <= 200.0),
    ));
    rows.push(Row::new(
        format!("ls of a folder of {} files: all {} pages", f.files, f.pages),
        format!("{:.0} ms", f.walk_ms),
        "",
        None,
    ));
}

fn verify_same(a: &Path, b: &Path) -> Result<()> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; BLOCK], vec![0u8; BLOCK]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            bail!("the file read back differs from the file stored");
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Stores `count` copies of `local` as `list-NNNNN`, a bounded number at once.
async fn fill(client: &Client, local: &Path, count: usize) -> Result<()> {
    let mut puts = futures_util::stream::iter(0..count)
        .map(|i| async move {
            client
                .put(local, &format!("list-{i:05}"), &no_progress)
                .await
        })
        .buffer_unordered(FILL_CONCURRENCY);
    while let Some(result) = puts.next().await {
        result.context("PUT while filling the store")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// S3 and curl against dfs (`--http`)

/// Pairs of each kind the `--http` run times by default.
const HTTP_PAIRS: usize = 5;
/// The folder the `--http` run stores into: the S3 bucket, and the files
/// API's first path segment.
const HTTP_BUCKET: &str = "bench";
/// How long adding the S3 key through dfs1 may take.
const KEY_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP clients `--http` drives, as child processes.
#[derive(Clone, Copy, PartialEq)]
enum Tool {
    /// `aws s3 cp`: S3, multipart above 8 MiB (its default).
    Aws,
    /// `curl -T` and `curl -o`: the files API, one request.
    Curl,
}

impl Tool {
    /// The name in file names, the table and the JSON.
    fn label(self) -> &'static str {
        match self {
            Tool::Aws => "S3",
            Tool::Curl => "curl",
        }
    }
}

/// What the tools need: the authority to trust, alice's S3 key, and a path
/// that does not exist (so no AWS configuration of the machine's counts).
struct HttpTools {
    ca: PathBuf,
    key: (String, String),
    no_config: PathBuf,
}

impl HttpTools {
    /// Stores `local` as `remote` (`BUCKET/NAME`) through `endpoint`.
    fn put(&self, tool: Tool, endpoint: &str, local: &Path, remote: &str) -> Result<()> {
        match tool {
            Tool::Aws => run_tool(
                self.aws(endpoint).arg(local).arg(format!("s3://{remote}")),
                "aws s3 cp (PUT)",
            ),
            Tool::Curl => run_tool(
                self.curl()
                    .arg("-T")
                    .arg(local)
                    .arg(format!("{endpoint}/files/{remote}")),
                "curl -T (PUT)",
            ),
        }
    }

    /// Reads `remote` through `endpoint` into `local`.
    fn get(&self, tool: Tool, endpoint: &str, remote: &str, local: &Path) -> Result<()> {
        match tool {
            Tool::Aws => run_tool(
                self.aws(endpoint).arg(format!("s3://{remote}")).arg(local),
                "aws s3 cp (GET)",
            ),
            Tool::Curl => run_tool(
                self.curl()
                    .arg("-o")
                    .arg(local)
                    .arg(format!("{endpoint}/files/{remote}")),
                "curl -o (GET)",
            ),
        }
    }

    /// `aws … s3 cp`, waiting for its two paths.
    fn aws(&self, endpoint: &str) -> Command {
        let mut command = Command::new("aws");
        command
            .args(["--endpoint-url", endpoint, "--ca-bundle"])
            .arg(&self.ca)
            .args(["s3", "cp", "--only-show-errors"])
            .env("AWS_ACCESS_KEY_ID", &self.key.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.key.1)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", &self.no_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.no_config)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        command
    }

    /// `curl` as alice, failing on an HTTP error status.
    fn curl(&self) -> Command {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--fail-with-body", "--cacert"])
            .arg(&self.ca)
            .args(["-u", &format!("{}:{}", USER.0, USER.1)]);
        command
    }
}

/// Runs `command` to its end; an error with its output if it failed.
fn run_tool(command: &mut Command, what: &str) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    installed_with(program, "--version")
}

/// Whether `program FLAG` runs and succeeds.
fn installed_with(program: &str, flag: &str) -> bool {
    Command::new(program)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One HTTP transfer and its dfs twin, back to back.
#[derive(Serialize)]
struct HttpPair {
    http_first: bool,
    http_mbps: f64,
    dfs_mbps: f64,
    /// http over dfs, within this pair.
    ratio: f64,
}

impl HttpPair {
    /// `pair` was run with the HTTP side as "ringdfs" and dfs as "ceiling".
    fn from(pair: Pair) -> HttpPair {
        HttpPair {
            http_first: pair.ringdfs_first,
            http_mbps: pair.ringdfs_mbps,
            dfs_mbps: pair.ceiling_mbps,
            ratio: pair.ratio,
        }
    }
}

/// One operation (S3 PUT, …): the medians of its pairs.
#[derive(Serialize)]
struct HttpFigure {
    operation: String,
    /// The command the HTTP side ran.
    http_command: String,
    http_mbps: f64,
    dfs_mbps: f64,
    ratio: f64,
    pairs: Vec<HttpPair>,
}

impl HttpFigure {
    fn new(operation: String, http_command: &str, pairs: Vec<HttpPair>) -> HttpFigure {
        let med = |f: fn(&HttpPair) -> f64| median(&pairs.iter().map(f).collect::<Vec<_>>());
        HttpFigure {
            operation,
            http_command: http_command.to_string(),
            http_mbps: med(|p| p.http_mbps),
            dfs_mbps: med(|p| p.dfs_mbps),
            ratio: med(|p| p.ratio),
            pairs,
        }
    }
}

#[derive(Serialize)]
struct HttpReport {
    tls: bool,
    file_bytes: u64,
    pairs: usize,
    /// Whether the aws CLI was there (without it, no S3 figures).
    aws: bool,
    /// Which server's endpoint each request went to.
    endpoints: String,
    figures: Vec<HttpFigure>,
    table: Vec<Row>,
}

impl HttpReport {
    fn rows(&self) -> Vec<Row> {
        let size = self.file_bytes >> 20;
        self.figures
            .iter()
            .map(|f| {
                Row::new(
                    format!("{} {size} MiB ({})", f.operation, f.http_command),
                    format!(
                        "http {:.0} MB/s, dfs {:.0} MB/s, ratio {:.2}",
                        f.http_mbps, f.dfs_mbps, f.ratio
                    ),
                    "ratio ≥ 0.70",
                    Some(f.ratio >= 0.70),
                )
            })
            .collect()
    }
}

fn print_http_table(report: &HttpReport) {
    println!();
    println!(
        "ringdfs HTTP benchmark: {} MiB file, {} pairs (ratios: median of per-pair http / dfs), TLS on, {}",
        report.file_bytes >> 20,
        report.pairs,
        report.endpoints
    );
    if !report.aws {
        println!("(no S3 rows: the aws CLI is not installed)");
    }
    print_rows(&report.table);
}

/// What `--http`, `--mount` and `--sftp` start from: `users.toml` in
/// `dir`, a random source file of `size` bytes, and an empty scratch folder
/// for what is read back.
fn one_file_setup(dir: &Path, size: u64) -> Result<(PathBuf, PathBuf)> {
    write_users(&dir.join("users.toml"))?;
    let big = dir.join("big.src");
    write_random_file(&big, size)?;
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch)?;
    Ok((big, scratch))
}

/// `--http`: S3 (the aws CLI) and the files API (curl) paired with dfs's
/// own client, PUT and GET of one large file.
fn http_bench(size: u64, pairs: usize, dir: &Path) -> Result<HttpReport> {
    let started = Instant::now();
    let say = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    if !installed("curl") {
        bail!("--http needs curl, and it is not installed");
    }
    let aws = installed("aws");
    if !aws {
        println!("S3 rows skipped: the aws CLI is not installed (pip install awscli)");
    }
    let tools: Vec<Tool> = [Tool::Aws, Tool::Curl]
        .into_iter()
        .filter(|&t| aws || t != Tool::Aws)
        .collect();

    say("writing users.toml and the test file");
    let (big, scratch) = one_file_setup(dir, size)?;

    say("starting four servers with HTTPS endpoints");
    let cluster = Cluster::start_http(dir)?;
    let runtime = Runtime::new().context("starting the runtime")?;
    let client = runtime
        .block_on(Client::login(&cluster.client_config(dir), USER.0, USER.1))
        .context("logging in")?;
    let dfs1 = ServerConfig::load(&cluster.config_path(0))?;
    let (access, secret) = ringdfs::accounts::new_s3_key();
    let change = UserChange::KeyAdd {
        name: USER.0.to_string(),
        access: access.clone(),
        secret: secret.clone(),
    };
    runtime
        .block_on(ringdfs::accounts::change_on_server(
            &dfs1,
            change,
            KEY_TIMEOUT,
        ))
        .context("adding alice's S3 key through dfs1")?;
    runtime
        .block_on(client.folder(HTTP_BUCKET, true))
        .with_context(|| format!("creating the folder {HTTP_BUCKET}"))?;
    let endpoints: Vec<String> = cluster
        .http_addrs
        .iter()
        .flatten()
        .map(|addr| format!("https://{addr}"))
        .collect();
    let http = HttpTools {
        ca: ringdfs::tls::ca_cert_path(&dir.join("tls")),
        key: (access, secret),
        no_config: dir.join("no-aws-config"),
    };

    say(&format!(
        "PUT and GET of {} MiB through {}: warm-up, then {pairs} pairs",
        size >> 20,
        tools
            .iter()
            .map(|t| t.label())
            .collect::<Vec<_>>()
            .join(" and ")
    ));
    let (http_out, dfs_out) = (scratch.join("http.out"), scratch.join("dfs.out"));
    // Per tool: its PUT pairs, its GET pairs.
    let mut timed: Vec<(Vec<HttpPair>, Vec<HttpPair>)> =
        tools.iter().map(|_| (Vec::new(), Vec::new())).collect();
    let mut stored: Vec<String> = Vec::new();
    for round in 0..=pairs {
        // New names every round, the last round's files deleted untimed
        // first: no PUT pays for replacing a version.
        for name in stored.drain(..) {
            runtime
                .block_on(client.delete(&name))
                .with_context(|| format!("deleting {name}"))?;
        }
        let endpoint = &endpoints[round % endpoints.len()];
        let http_first = round % 2 == 0;
        for (t, &tool) in tools.iter().enumerate() {
            let label = tool.label();
            let http_name = format!("{HTTP_BUCKET}/{}-{round}.bin", label.to_lowercase());
            let dfs_name = format!("{HTTP_BUCKET}/dfs-{}-{round}.bin", label.to_lowercase());
            stored.push(http_name.clone());
            stored.push(dfs_name.clone());
            let put = pair(
                http_first,
                size,
                || http.put(tool, endpoint, &big, &http_name),
                || {
                    runtime.block_on(client.put(&big, &dfs_name, &no_progress))?;
                    Ok(())
                },
            )?;
            // Both sides read the file the HTTP side stored: the same
            // chunks, and a check of that PUT too.
            remove(&http_out);
            remove(&dfs_out);
            let get = pair(
                http_first,
                size,
                || http.get(tool, endpoint, &http_name, &http_out),
                || {
                    runtime.block_on(client.get(&http_name, &dfs_out, &no_progress))?;
                    Ok(())
                },
            )?;
            verify_same(&big, &http_out)
                .with_context(|| format!("{label} GET of {http_name}, round {round}"))?;
            verify_same(&big, &dfs_out)
                .with_context(|| format!("dfs GET of {http_name}, round {round}"))?;
            remove(&http_out);
            remove(&dfs_out);
            if round == 0 {
                continue; // the warm-up
            }
            say(&format!(
                "pair {round}, {label} via {endpoint}: PUT {:.0} vs dfs {:.0} MB/s ({:.2}), GET {:.0} vs dfs {:.0} MB/s ({:.2})",
                put.ringdfs_mbps, put.ceiling_mbps, put.ratio,
                get.ringdfs_mbps, get.ceiling_mbps, get.ratio
            ));
            timed[t].0.push(HttpPair::from(put));
            timed[t].1.push(HttpPair::from(get));
        }
    }
    say("done");

    let mut figures = Vec::new();
    for (tool, (puts, gets)) in tools.iter().zip(timed) {
        let (put_command, get_command) = match tool {
            Tool::Aws => ("aws s3 cp", "aws s3 cp"),
            Tool::Curl => ("curl -T", "curl -o"),
        };
        figures.push(HttpFigure::new(
            format!("{} PUT", tool.label()),
            put_command,
            puts,
        ));
        figures.push(HttpFigure::new(
            format!("{} GET", tool.label()),
            get_command,
            gets,
        ));
    }
    let mut report = HttpReport {
        tls: true,
        file_bytes: size,
        pairs,
        aws,
        endpoints: "endpoints round-robin over dfs1..dfs4 by round".to_string(),
        figures,
        table: Vec::new(),
    };
    report.table = report.rows();
    Ok(report)
}

// ---------------------------------------------------------------------------
// Against sftp (`--sftp`, issue 20)

/// `--client OP CONFIG FROM TO`: a whole ringdfs client process, as `dfs
/// put FROM TO` or `dfs get FROM TO` is (log in, one transfer, exit).
fn client_process(args: &[String]) -> Result<()> {
    let [op, config, from, to] = args else {
        bail!("--client takes OP CONFIG FROM TO");
    };
    let config = ClientConfig::load(Path::new(config))?;
    let runtime = Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let client = Client::login(&config, USER.0, USER.1).await?;
        match op.as_str() {
            "put" => client
                .put(Path::new(from), to, &no_progress)
                .await
                .map(drop),
            "get" => client
                .get(from, Path::new(to), &no_progress)
                .await
                .map(drop),
            other => Err(ringdfs::error::Error::BadRequest(format!(
                "--client {other}?"
            ))),
        }
    })?;
    Ok(())
}

/// A private OpenSSH server on a loopback port: a throwaway host key, and
/// a throwaway client key as the only way in.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sshd {
    fn start(dir: &Path) -> Result<Sshd> {
        fs::create_dir_all(dir)?;
        let (host, key) = (dir.join("host"), dir.join("client"));
        for path in [&host, &key] {
            run_tool(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(path),
                "ssh-keygen",
            )?;
        }
        fs::copy(key.with_extension("pub"), dir.join("authorized_keys"))?;
        // sshd wants its privilege-separation folder when run as root.
        let _ = fs::create_dir_all("/run/sshd");
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nPidFile {}\n\
                 Subsystem sftp internal-sftp\n",
                host.display(),
                dir.join("authorized_keys").display(),
                dir.join("sshd.pid").display()
            ),
        )?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting sshd")?;
        let sshd = Sshd { child, port, key };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("sshd did not listen on 127.0.0.1:{port} within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(sshd)
    }

    /// `sftp` running one batch command (`put A B`, `get A B`).
    fn sftp(&self, command: &str, dir: &Path) -> Result<()> {
        let batch = dir.join("batch");
        fs::write(&batch, format!("{command}\n"))?;
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        run_tool(
            Command::new("sftp")
                .args(["-q", "-b"])
                .arg(&batch)
                .arg("-i")
                .arg(&self.key)
                .args([
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "LogLevel=ERROR",
                    "-P",
                ])
                .arg(self.port.to_string())
                .arg(format!("{user}@127.0.0.1")),
            "sftp",
        )
    }
}

const SSHD: &str = "/usr/sbin/sshd";

/// CPU-seconds of this process's children that have ended (a whole
/// client process, once waited for).
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU-seconds of `pid` and of its children that ended (sshd's sessions),
/// once it has no child left (a session's process ends a moment after its
/// client; its CPU counts only once sshd has reaped it).
fn tree_cpu(pid: u32) -> Result<f64> {
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read_to_string(&children).is_ok_and(|c| !c.trim().is_empty())
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(10));
    }
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .with_context(|| format!("no command name in {path}"))?;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime, stime, cutime, cstime: fields 14..=17, from field 3 on here.
    let ticks: u64 = fields.get(11..15).map_or(0, |f| f.iter().sum());
    Ok(ticks as f64 / clock_ticks_per_s())
}

/// One side of a pair: wall time, and CPU-seconds of the client process
/// and of the servers.
#[derive(Serialize, Clone, Copy)]
struct Side {
    secs: f64,
    client_cpu: f64,
    server_cpu: f64,
}

fn timed_side(servers: &dyn Fn() -> Result<f64>, run: impl FnOnce() -> Result<()>) -> Result<Side> {
    settle();
    let (client0, server0, t) = (children_cpu(), servers()?, Instant::now());
    run()?;
    let secs = t.elapsed().as_secs_f64();
    Ok(Side {
        secs,
        client_cpu: children_cpu() - client0,
        server_cpu: servers()? - server0,
    })
}

#[derive(Serialize)]
struct SftpPair {
    ringdfs_first: bool,
    ringdfs: Side,
    sftp: Side,
    /// ringdfs's speed over sftp's (sftp's time over ringdfs's).
    ratio: f64,
}

#[derive(Serialize)]
struct SftpFigure {
    operation: String,
    ringdfs_mbps: f64,
    sftp_mbps: f64,
    ratio: f64,
    /// Median CPU-seconds per GiB: ringdfs's client and servers, sftp's
    /// client and sshd.
    ringdfs_client_cpu_per_gib: f64,
    ringdfs_servers_cpu_per_gib: f64,
    sftp_client_cpu_per_gib: f64,
    sshd_cpu_per_gib: f64,
    pairs: Vec<SftpPair>,
}

#[derive(Serialize)]
struct SftpReport {
    file_bytes: u64,
    pairs: usize,
    figures: Vec<SftpFigure>,
    table: Vec<Row>,
}

/// `--sftp`: a ringdfs client process (`--client`) against `sftp` to a
/// private sshd, PUT and GET of one large file, alternating who goes first.
/// `None` (and a line) without sftp or sshd.
fn sftp_bench(size: u64, pairs: usize, dir: &Path) -> Result<Option<SftpReport>> {
    let started = Instant::now();
    let say = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    let on_path = |program: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
    };
    if !Path::new(SSHD).exists() || !on_path("sftp") || !on_path("ssh-keygen") {
        println!("skipped: --sftp needs OpenSSH's sftp and {SSHD} (apt-get install openssh-client openssh-server)");
        return Ok(None);
    }
    say("writing users.toml and the test file");
    let (big, scratch) = one_file_setup(dir, size)?;
    let store = dir.join("sftp-store");
    fs::create_dir_all(&store)?;

    say("starting four servers and a private sshd");
    let cluster = Cluster::start(dir)?;
    let sshd = Sshd::start(&dir.join("ssh"))?;
    let config = dir.join("client.toml");
    let client_config = cluster.client_config(dir);
    let text = toml::to_string(&client_config).context("writing the client's configuration")?;
    fs::write(&config, text)?;
    let me = std::env::current_exe().context("finding this executable")?;
    let ringdfs = |op: &str, from: &Path, to: &str| {
        run_tool(
            Command::new(&me)
                .arg("--client")
                .arg(op)
                .arg(&config)
                .arg(from)
                .arg(to),
            "the ringdfs client",
        )
    };
    let server_pids = running_pids(&cluster)?;
    let ringdfs_servers = || -> Result<f64> {
        let ticks: u64 = server_pids
            .iter()
            .map(|&p| cpu_ticks(p))
            .sum::<Result<u64>>()?;
        Ok(ticks as f64 / clock_ticks_per_s())
    };
    let sshd_pid = sshd.child.id();
    let sshd_cpu = || tree_cpu(sshd_pid);
    let (ringdfs_out, sftp_out) = (scratch.join("ringdfs.out"), scratch.join("sftp.out"));

    say(&format!(
        "PUT and GET of {} MiB: warm-up, then {pairs} pairs",
        size >> 20
    ));
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for round in 0..=pairs {
        let ringdfs_first = round % 2 == 0;
        let name = format!("sftp-bench-{round}.bin");
        let remote = store.join(&name);
        let pair_of = |first: bool,
                       r: &mut dyn FnMut() -> Result<Side>,
                       f: &mut dyn FnMut() -> Result<Side>|
         -> Result<SftpPair> {
            let (ringdfs, sftp) = if first {
                let r = r()?;
                (r, f()?)
            } else {
                let f = f()?;
                (r()?, f)
            };
            Ok(SftpPair {
                ringdfs_first: first,
                ringdfs,
                sftp,
                ratio: sftp.secs / ringdfs.secs,
            })
        };
        let put = pair_of(
            ringdfs_first,
            &mut || timed_side(&ringdfs_servers, || ringdfs("put", &big, &name)),
            &mut || {
                timed_side(&sshd_cpu, || {
                    sshd.sftp(
                        &format!("put {} {}", big.display(), remote.display()),
                        &scratch,
                    )
                })
            },
        )?;
        remove(&ringdfs_out);
        remove(&sftp_out);
        let get = pair_of(
            ringdfs_first,
            &mut || {
                timed_side(&ringdfs_servers, || {
                    ringdfs(
                        "get",
                        Path::new(&name),
                        ringdfs_out.to_str().unwrap_or_default(),
                    )
                })
            },
            &mut || {
                timed_side(&sshd_cpu, || {
                    sshd.sftp(
                        &format!("get {} {}", remote.display(), sftp_out.display()),
                        &scratch,
                    )
                })
            },
        )?;
        verify_same(&big, &ringdfs_out).with_context(|| format!("ringdfs GET, round {round}"))?;
        verify_same(&big, &sftp_out).with_context(|| format!("sftp GET, round {round}"))?;
        verify_same(&big, &remote).with_context(|| format!("sftp PUT, round {round}"))?;
        remove(&ringdfs_out);
        remove(&sftp_out);
        remove(&remote);
        Runtime::new()?.block_on(async {
            let client = Client::login(&client_config, USER.0, USER.1).await?;
            client.delete(&name).await.map(drop)
        })?;
        if round == 0 {
            continue;
        }
        say(&format!(
            "pair {round}: PUT ringdfs {:.2} s vs sftp {:.2} s ({:.2}×), GET ringdfs {:.2} s vs sftp {:.2} s ({:.2}×)",
            put.ringdfs.secs, put.sftp.secs, put.ratio, get.ringdfs.secs, get.sftp.secs, get.ratio
        ));
        puts.push(put);
        gets.push(get);
    }
    say("done");
    let gib = size as f64 / f64::from(1u32 << 30);
    let figure = |operation: &str, pairs: Vec<SftpPair>| {
        let med = |f: &dyn Fn(&SftpPair) -> f64| median(&pairs.iter().map(f).collect::<Vec<_>>());
        SftpFigure {
            operation: operation.to_string(),
            ringdfs_mbps: med(&|p| size as f64 / 1e6 / p.ringdfs.secs),
            sftp_mbps: med(&|p| size as f64 / 1e6 / p.sftp.secs),
            ratio: med(&|p| p.ratio),
            ringdfs_client_cpu_per_gib: med(&|p| p.ringdfs.client_cpu / gib),
            ringdfs_servers_cpu_per_gib: med(&|p| p.ringdfs.server_cpu / gib),
            sftp_client_cpu_per_gib: med(&|p| p.sftp.client_cpu / gib),
            sshd_cpu_per_gib: med(&|p| p.sftp.server_cpu / gib),
            pairs,
        }
    };
    let figures = vec![figure("PUT", puts), figure("GET", gets)];
    let mut table = Vec::new();
    for (f, target) in figures.iter().zip([1.5, 2.5]) {
        table.push(Row::new(
            format!("{} {} MiB, ringdfs vs sftp", f.operation, size >> 20),
            format!(
                "ringdfs {:.0} MB/s, sftp {:.0} MB/s, {:.2}× sftp's speed",
                f.ringdfs_mbps, f.sftp_mbps, f.ratio
            ),
            &format!("≥ {target}×"),
            Some(f.ratio >= target),
        ));
        table.push(Row::new(
            format!("{} CPU-s per GiB", f.operation),
            format!(
                "ringdfs client {:.2} + servers {:.2}; sftp client {:.2} + sshd {:.2}",
                f.ringdfs_client_cpu_per_gib,
                f.ringdfs_servers_cpu_per_gib,
                f.sftp_client_cpu_per_gib,
                f.sshd_cpu_per_gib
            ),
            "",
            None,
        ));
    }
    Ok(Some(SftpReport {
        file_bytes: size,
        pairs,
        figures,
        table,
    }))
}

// ---------------------------------------------------------------------------
// The mount (`--mount`, issue 19)

#[derive(Serialize)]
struct MountReport {
    file_bytes: u64,
    pairs: usize,
    figures: Vec<HttpFigure>,
    table: Vec<Row>,
}

/// `--mount`: `cp` out of and into the folder `dfs mount` serves (the same
/// `ringdfs::mount`, in this process), paired with dfs's own GET and PUT.
fn mount_bench(size: u64, pairs: usize, dir: &Path) -> Result<MountReport> {
    let started = Instant::now();
    let say = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    if !Path::new("/dev/fuse").exists() || !installed_with("fusermount3", "-V") {
        bail!("--mount needs FUSE: /dev/fuse and fusermount3 (apt-get install fuse3)");
    }
    say("writing users.toml and the test file");
    let (big, scratch) = one_file_setup(dir, size)?;
    let folder = dir.join("mnt");
    fs::create_dir_all(&folder)?;

    say("starting four servers and the mount");
    let cluster = Cluster::start(dir)?;
    let runtime = Runtime::new().context("starting the runtime")?;
    let config = cluster.client_config(dir);
    let login = || Client::login(&config, USER.0, USER.1);
    let client = runtime.block_on(login()).context("logging in")?;
    let mounted_client = Arc::new(runtime.block_on(login()).context("logging in")?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (up, is_up) = std::sync::mpsc::channel();
    let handle = runtime.handle().clone();
    let at = folder.clone();
    let serving = thread::spawn(move || {
        ringdfs::mount::run(
            mounted_client,
            handle,
            &at,
            async {
                let _ = stopped.await;
            },
            move || {
                let _ = up.send(());
            },
        )
    });
    is_up
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| anyhow!("the mount did not come up in 20 s"))?;

    say(&format!(
        "cp of {} MiB out of and into the mount: warm-up, then {pairs} pairs",
        size >> 20
    ));
    let (cp_out, dfs_out) = (scratch.join("cp.out"), scratch.join("dfs.out"));
    let cp = |from: &Path, to: &Path| run_tool(Command::new("cp").arg(from).arg(to), "cp");
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    let mut stored: Vec<String> = Vec::new();
    for round in 0..=pairs {
        for name in stored.drain(..) {
            runtime
                .block_on(client.delete(&name))
                .with_context(|| format!("deleting {name}"))?;
        }
        let (mount_name, dfs_name) = (format!("cp-{round}.bin"), format!("dfs-{round}.bin"));
        stored.push(mount_name.clone());
        stored.push(dfs_name.clone());
        let cp_first = round % 2 == 0;
        let put = pair(
            cp_first,
            size,
            || cp(&big, &folder.join(&mount_name)),
            || {
                runtime.block_on(client.put(&big, &dfs_name, &no_progress))?;
                Ok(())
            },
        )?;
        remove(&cp_out);
        remove(&dfs_out);
        // Both read the file dfs stored.
        let get = pair(
            cp_first,
            size,
            || cp(&folder.join(&dfs_name), &cp_out),
            || {
                runtime.block_on(client.get(&dfs_name, &dfs_out, &no_progress))?;
                Ok(())
            },
        )?;
        verify_same(&big, &cp_out)
            .with_context(|| format!("cp out of the mount, round {round}"))?;
        verify_same(&big, &dfs_out).with_context(|| format!("dfs GET, round {round}"))?;
        let through = runtime.block_on(client.stat(&mount_name))?;
        if through.size != size {
            bail!("cp into the mount stored {} bytes of {size}", through.size);
        }
        remove(&cp_out);
        remove(&dfs_out);
        if round == 0 {
            continue;
        }
        say(&format!(
            "pair {round}: cp in {:.0} vs dfs put {:.0} MB/s ({:.2}), cp out {:.0} vs dfs get {:.0} MB/s ({:.2})",
            put.ringdfs_mbps, put.ceiling_mbps, put.ratio,
            get.ringdfs_mbps, get.ceiling_mbps, get.ratio
        ));
        puts.push(HttpPair::from(put));
        gets.push(HttpPair::from(get));
    }
    let _ = stop.send(());
    serving
        .join()
        .map_err(|_| anyhow!("the mount's thread panicked"))??;
    say("done");
    let figures = vec![
        HttpFigure::new("mount GET".into(), "cp MOUNT/FILE out", gets),
        HttpFigure::new("mount PUT".into(), "cp FILE MOUNT/", puts),
    ];
    let table = figures
        .iter()
        .map(|f| {
            let get = f.operation == "mount GET";
            Row::new(
                format!("{} {} MiB ({})", f.operation, size >> 20, f.http_command),
                format!(
                    "cp {:.0} MB/s, dfs {:.0} MB/s, ratio {:.2}",
                    f.http_mbps, f.dfs_mbps, f.ratio
                ),
                if get { "ratio ≥ 0.50" } else { "no target" },
                get.then_some(f.ratio >= 0.50),
            )
        })
        .collect();
    Ok(MountReport {
        file_bytes: size,
        pairs,
        figures,
        table,
    })
}

// ---------------------------------------------------------------------------
// Many small files (`--files N`, issue 11)

/// Size of every file the `--files` run stores.
const SMALL_FILE: u64 = 4096;
/// Clients storing (and reading) at once, each its own login session.
const FILES_CLIENTS: usize = 8;
/// Distinct local files to store from, used in turn: a million stored files
/// need not be a million local files.
const FILES_SOURCES: usize = 256;
/// At most this many PUTs in the one-client run and GETs in the read run.
const TIMED_OPS: usize = 1000;
/// LIST runs; the figure is their median.
const FILES_LISTS: usize = 3;
/// Writes the catching-up server misses while it is down.
const MISSED_WRITES: usize = 1000;
/// The server killed and restarted to time restart-to-serving (`dfs2`).
const RESTARTED: usize = 1;
/// The server that misses `MISSED_WRITES` writes (`dfs3`).
const CATCHING_UP: usize = 2;
/// Before the idle measurement: at least this long without clients…
const SETTLE: Duration = Duration::from_secs(5);
/// …and until every server has finished this many heal rounds since the last
/// client request. Today's servers drop replaced versions in the first round
/// after they are two heal intervals old; three rounds cover that.
const SETTLE_ROUNDS: u64 = 3;
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
const READY_LIMIT: Duration = Duration::from_secs(120);
const CATCH_UP_LIMIT: Duration = Duration::from_secs(600);
const CATCH_UP_POLL: Duration = Duration::from_millis(100);

/// The sizes of one `--files` run.
struct FilesPlan {
    files: usize,
    /// Seeded straight into the stores (`--direct`), not PUT.
    direct: bool,
    /// PUTs of the one-client run and GETs of the read run: `min(files, 1000)`.
    timed: usize,
    idle: Duration,
}

impl FilesPlan {
    fn new(files: usize, idle_secs: u64, direct: bool) -> Result<FilesPlan> {
        if files == 0 || idle_secs == 0 {
            bail!("--files and --idle-secs must be at least 1");
        }
        Ok(FilesPlan {
            files,
            direct,
            timed: files.min(TIMED_OPS),
            idle: Duration::from_secs(idle_secs),
        })
    }

    /// The PUTs of the 8-client run: all N files, or (seeded) 8000 new ones.
    fn puts(&self) -> usize {
        if self.direct {
            self.timed * FILES_CLIENTS
        } else {
            self.files
        }
    }

    /// Files stored once the PUT runs are done (the last, of a pattern,
    /// stores `timed` new ones).
    fn stored(&self) -> usize {
        let first = if self.direct {
            self.files + self.puts()
        } else {
            self.files
        };
        first + self.timed
    }
}

/// The `--files` run: the cluster holding many small files.
fn files_bench(plan: &FilesPlan, dir: &Path) -> Result<FilesReport> {
    let started = Instant::now();
    let say = |what: &str| eprintln!("[{:6.1} s] {what}", started.elapsed().as_secs_f64());
    let n = plan.files;

    say("writing users.toml (argon2id, default parameters) and source files");
    write_users(&dir.join("users.toml"))?;
    let sources = Arc::new(write_sources(&dir.join("small"), n.min(FILES_SOURCES))?);
    let scratch = dir.join("scratch");
    fs::create_dir_all(&scratch)?;

    let seed = if plan.direct {
        say(&format!("writing {n} files straight into the four stores"));
        let data: Vec<Vec<u8>> = sources
            .iter()
            .map(fs::read)
            .collect::<std::io::Result<_>>()?;
        Seed {
            files: n,
            data,
            owner: USER.0,
            prefix: "f",
        }
    } else {
        Seed::default()
    };
    say("starting four servers");
    let mut cluster = Cluster::start_seeded(dir, &seed)?;
    let runtime = Runtime::new().context("starting the runtime")?;
    say(&format!("logging in {FILES_CLIENTS} clients"));
    let clients = login_clients(&runtime, &cluster.client_config(dir), FILES_CLIENTS)?;
    let one = &clients[0];

    // Seeded: the PUT/s are those of new files into the full store.
    let (prefix, puts) = (if plan.direct { "g" } else { "f" }, plan.puts());
    say(&format!(
        "storing {puts} files of 4 KiB, {FILES_CLIENTS} clients at once"
    ));
    let t = Instant::now();
    runtime.block_on(put_files(&clients, &sources, prefix, 0..puts))?;
    let put_per_s = per_s(puts, t.elapsed());
    say(&format!("{put_per_s:.0} PUT/s"));

    say(&format!(
        "one client: storing {} of them again, one after another",
        plan.timed
    ));
    let t = Instant::now();
    runtime.block_on(put_files(&clients[..1], &sources, "f", 0..plan.timed))?;
    let one_client_put_per_s = per_s(plan.timed, t.elapsed());
    say(&format!("{one_client_put_per_s:.0} PUT/s"));

    say(&format!(
        "one client: storing {} new ones as `put` of a pattern (`put -r` alike)",
        plan.timed
    ));
    let tree = dir.join("tree");
    fs::create_dir_all(&tree)?;
    for i in 0..plan.timed {
        fs::copy(&sources[i % sources.len()], tree.join(file_name("p", i)))?;
    }
    let pattern = tree.join("*");
    let t = Instant::now();
    let summary = runtime.block_on(ringdfs::bulk::put(
        one,
        "",
        &pattern,
        None,
        true,
        false,
        Default::default(),
        &no_progress,
    ))?;
    let bulk_put_per_s = per_s(plan.timed, t.elapsed());
    if summary.files != plan.timed {
        bail!("put of a pattern: {}", summary.text());
    }
    say(&format!("{bulk_put_per_s:.0} PUT/s"));

    say(&format!(
        "GET of {} random files, {FILES_CLIENTS} clients at once",
        plan.timed
    ));
    let names: Vec<String> = rand::seq::index::sample(&mut rand::thread_rng(), n, plan.timed)
        .into_iter()
        .map(|i| file_name("f", i))
        .collect();
    let t = Instant::now();
    runtime.block_on(get_files(&clients, names, &scratch))?;
    let get_per_s = per_s(plan.timed, t.elapsed());
    say(&format!("{get_per_s:.0} GET/s"));

    say(&format!("LIST of the files stored, {FILES_LISTS} times"));
    let list_ms = median(&time_lists(&runtime, one, plan.stored())?);

    say("waiting for the servers to settle (no clients; heal rounds)");
    settle_servers(&runtime, one)?;
    say(&format!("idle for {} s", plan.idle.as_secs()));
    let idle = idle_cpu(&cluster, plan.idle)?;
    let pids = running_pids(&cluster)?;
    let mut servers = Vec::new();
    for (i, (pid, cpu_s)) in pids.iter().zip(&idle.cpu_s).enumerate() {
        let disk = disk_use(&cluster.data_dirs[i])?;
        servers.push(ServerFigures {
            name: cluster.names[i].clone(),
            idle_cpu_s_per_30s: cpu_s * 30.0 / idle.secs,
            idle_cpu_percent: cpu_s / idle.secs * 100.0,
            rss_mib: proc_status_kib(&pid.to_string(), "VmRSS")? as f64 / 1024.0,
            disk_bytes: disk.bytes,
            inodes: disk.inodes,
        });
    }

    let restarted = cluster.names[RESTARTED].clone();
    say(&format!(
        "killing {restarted}, restarting it, waiting until it serves"
    ));
    let ready = restart_to_ready(&mut cluster, &runtime, one, RESTARTED)?;
    say(&format!(
        "{restarted} served after {:.2} s",
        ready.as_secs_f64()
    ));

    let catching_up = cluster.names[CATCHING_UP].clone();
    say(&format!(
        "killing {catching_up}, storing {MISSED_WRITES} new files, restarting it"
    ));
    let catch_up = catch_up(&mut cluster, &runtime, &clients, &sources, CATCHING_UP)?;
    say(&format!(
        "{catching_up} complete {:.1} s after its restart",
        catch_up.took.as_secs_f64()
    ));

    drop(clients);
    drop(runtime);
    drop(cluster);
    say("done");
    Ok(FilesReport::new(
        plan,
        [put_per_s, one_client_put_per_s, bulk_put_per_s, get_per_s],
        list_ms,
        idle.secs,
        servers,
        (restarted, ready),
        (catching_up, catch_up),
    ))
}

/// `count` local files of 4 KiB random data in `dir`.
fn write_sources(dir: &Path, count: usize) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir)?;
    (0..count)
        .map(|i| {
            let path = dir.join(format!("s{i:03}"));
            write_random_file(&path, SMALL_FILE)?;
            Ok(path)
        })
        .collect()
}

/// `count` sessions of `USER`, logged in one after another.
fn login_clients(
    runtime: &Runtime,
    config: &ClientConfig,
    count: usize,
) -> Result<Vec<Arc<Client>>> {
    (0..count)
        .map(|_| {
            let client = runtime
                .block_on(Client::login(config, USER.0, USER.1))
                .context("logging in")?;
            Ok(Arc::new(client))
        })
        .collect()
}

/// The stored name of file `i` of a series.
fn file_name(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:07}")
}

/// Stores files `indices` of the series `prefix`, the clients at once, each
/// its share (every `clients.len()`-th index) one after another. File `i`
/// comes from source `i mod sources`, so consecutive files differ.
async fn put_files(
    clients: &[Arc<Client>],
    sources: &Arc<Vec<PathBuf>>,
    prefix: &'static str,
    indices: std::ops::Range<usize>,
) -> Result<()> {
    let tasks = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let (client, sources) = (Arc::clone(client), Arc::clone(sources));
            let share = indices.clone().skip(c).step_by(clients.len());
            tokio::spawn(async move {
                for i in share {
                    let name = file_name(prefix, i);
                    client
                        .put(&sources[i % sources.len()], &name, &no_progress)
                        .await
                        .with_context(|| format!("PUT of {name}"))?;
                }
                Ok(())
            })
        })
        .collect();
    join_tasks(tasks).await
}

/// Reads `names`, the clients at once, each its share one after another,
/// into one local file per client (replaced each time).
async fn get_files(clients: &[Arc<Client>], names: Vec<String>, out: &Path) -> Result<()> {
    let names = Arc::new(names);
    let tasks = clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            let (client, names) = (Arc::clone(client), Arc::clone(&names));
            let local = out.join(format!("get-{c}"));
            let step = clients.len();
            tokio::spawn(async move {
                for name in names.iter().skip(c).step_by(step) {
                    let got = client
                        .get(name, &local, &no_progress)
                        .await
                        .with_context(|| format!("GET of {name}"))?;
                    if got.size != SMALL_FILE {
                        bail!("GET of {name}: {} bytes, {SMALL_FILE} stored", got.size);
                    }
                }
                Ok(())
            })
        })
        .collect();
    join_tasks(tasks).await
}

async fn join_tasks(tasks: Vec<tokio::task::JoinHandle<Result<()>>>) -> Result<()> {
    for task in tasks {
        task.await.context("a client task panicked")??;
    }
    Ok(())
}

/// Milliseconds of each of `FILES_LISTS` LISTs, each checked to show `files` files.
fn time_lists(runtime: &Runtime, client: &Client, files: usize) -> Result<Vec<f64>> {
    (0..FILES_LISTS)
        .map(|_| {
            let t = Instant::now();
            let listed = runtime.block_on(client.list()).context("LIST")?;
            let took = ms(t.elapsed());
            if listed.len() != files {
                bail!("LIST returned {} files, {files} were stored", listed.len());
            }
            Ok(took)
        })
        .collect()
}

/// Waits, with no client requests but STATUS, until the servers should be
/// done with the writes: `SETTLE`, and `SETTLE_ROUNDS` heal rounds finished
/// on every server since the call. A server that reports no progress in its
/// rounds within `SETTLE_LIMIT` only costs a warning.
fn settle_servers(runtime: &Runtime, client: &Client) -> Result<()> {
    let t = Instant::now();
    let rounds = || -> Result<Vec<u64>> {
        runtime
            .block_on(client.status())
            .into_iter()
            .map(|r| match r.state {
                Ok(s) => Ok(s.heal.rounds),
                Err(e) => Err(anyhow!("STATUS of {}: {e}", r.member.name)),
            })
            .collect()
    };
    let first = rounds()?;
    thread::sleep(SETTLE);
    loop {
        let now = rounds()?;
        if now.len() == first.len() && now.iter().zip(&first).all(|(n, f)| *n >= f + SETTLE_ROUNDS)
        {
            return Ok(());
        }
        if t.elapsed() > SETTLE_LIMIT {
            eprintln!(
                "warning: heal rounds went from {first:?} to {now:?} in {} s; measuring anyway",
                SETTLE_LIMIT.as_secs()
            );
            return Ok(());
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// The process ids of all four servers, which must all be running.
fn running_pids(cluster: &Cluster) -> Result<Vec<u32>> {
    cluster
        .pids()
        .into_iter()
        .zip(&cluster.names)
        .map(|(pid, name)| pid.with_context(|| format!("{name} is not running")))
        .collect()
}

/// CPU time each server used while nobody used the cluster.
struct Idle {
    /// CPU-seconds (user + system, all threads), by server index.
    cpu_s: Vec<f64>,
    /// The wall-clock seconds they were taken over.
    secs: f64,
}

fn idle_cpu(cluster: &Cluster, period: Duration) -> Result<Idle> {
    let pids = running_pids(cluster)?;
    let ticks = || -> Result<Vec<u64>> { pids.iter().map(|&p| cpu_ticks(p)).collect() };
    let before = ticks()?;
    let t = Instant::now();
    thread::sleep(period);
    let after = ticks()?;
    let secs = t.elapsed().as_secs_f64();
    let hz = clock_ticks_per_s();
    Ok(Idle {
        cpu_s: after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.saturating_sub(*b) as f64 / hz)
            .collect(),
        secs,
    })
}

/// utime + stime of process `pid` (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces; after
    // it come field 3 (state) onwards, utime and stime being fields 14 and 15.
    let (_, rest) = stat
        .rsplit_once(')')
        .with_context(|| format!("no command name in {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {n} in {path}"))
    };
    Ok(field(14)? + field(15)?)
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

/// What a folder takes on disk.
#[derive(Debug, Default, Clone, Copy)]
struct DiskUse {
    /// Allocated bytes, `st_blocks` × 512 (as `du` counts).
    bytes: u64,
    /// Files, folders and other entries, the folder itself included.
    inodes: u64,
}

/// Walks `dir`; a file linked twice counts once. Entries that vanish during
/// the walk are skipped.
fn disk_use(dir: &Path) -> Result<DiskUse> {
    use std::os::unix::fs::MetadataExt;
    let mut total = DiskUse::default();
    let mut linked = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    while let Some(path) = stack.pop() {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e).with_context(|| format!("stat of {}", path.display())),
        };
        if !meta.is_dir() && meta.nlink() > 1 && !linked.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total.bytes += meta.blocks() * 512;
        total.inodes += 1;
        if meta.is_dir() {
            let entries = match fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            for entry in entries {
                stack.push(entry?.path());
            }
        }
    }
    Ok(total)
}

/// SIGKILLs server `i`, starts it again, and times from the spawn until it
/// answers a STATUS request of `client`'s session. Its first answer needs a
/// new connection (TCP, TLS) and a new login there (one argon2id check): the
/// restarted server has forgotten the session.
fn restart_to_ready(
    cluster: &mut Cluster,
    runtime: &Runtime,
    client: &Client,
    i: usize,
) -> Result<Duration> {
    cluster.kill(i)?;
    let name = cluster.names[i].clone();
    let t = Instant::now();
    cluster.restart(i)?;
    loop {
        let reports = runtime.block_on(client.status());
        if reports
            .iter()
            .any(|r| r.member.name == name && r.state.is_ok())
        {
            return Ok(t.elapsed());
        }
        cluster.check_running(i)?;
        if t.elapsed() > READY_LIMIT {
            bail!(
                "{name} did not answer within {} s of its restart",
                READY_LIMIT.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// How a server that missed writes caught up.
struct CatchUp {
    /// From its spawn until STATUS first showed it complete.
    took: Duration,
    /// Its own account (`heal.healed_in_secs`): from its start until a heal
    /// round found nothing missing.
    healed_in_secs: Option<f64>,
}

/// SIGKILLs server `i`, stores `MISSED_WRITES` new files (degraded writes),
/// starts it again and polls STATUS every `CATCH_UP_POLL` until it is complete.
fn catch_up(
    cluster: &mut Cluster,
    runtime: &Runtime,
    clients: &[Arc<Client>],
    sources: &Arc<Vec<PathBuf>>,
    i: usize,
) -> Result<CatchUp> {
    cluster.kill(i)?;
    runtime
        .block_on(put_files(clients, sources, "c", 0..MISSED_WRITES))
        .context("storing while a server is down")?;
    let name = cluster.names[i].clone();
    let t = Instant::now();
    cluster.restart(i)?;
    loop {
        let reports = runtime.block_on(clients[0].status());
        if let Some(status) = caught_up(&reports, &name) {
            return Ok(CatchUp {
                took: t.elapsed(),
                healed_in_secs: status.heal.healed_in_secs,
            });
        }
        cluster.check_running(i)?;
        if t.elapsed() > CATCH_UP_LIMIT {
            let states: Vec<String> = reports
                .iter()
                .map(|r| match &r.state {
                    Ok(s) => format!(
                        "{}: {} files, {} chunks missing, {} heal rounds",
                        s.name, s.files, s.heal.missing, s.heal.rounds
                    ),
                    Err(e) => format!("{}: {e}", r.member.name),
                })
                .collect();
            bail!(
                "{name} was not complete {} s after its restart ({})",
                CATCH_UP_LIMIT.as_secs(),
                states.join("; ")
            );
        }
        thread::sleep(CATCH_UP_POLL);
    }
}

/// `name`'s STATUS if it shows the server complete: a heal round of its own
/// has finished with no chunk missing, and it has as many files as every
/// other server (each holds the manifest of every file). `None` while not,
/// or while any server cannot be asked.
fn caught_up<'a>(reports: &'a [ServerReport], name: &str) -> Option<&'a ServerStatus> {
    let states: Vec<&ServerStatus> = reports
        .iter()
        .map(|r| r.state.as_ref().ok())
        .collect::<Option<_>>()?;
    let me = states.iter().find(|s| s.name == name)?;
    let complete =
        me.heal.rounds > 0 && me.heal.missing == 0 && states.iter().all(|s| s.files == me.files);
    complete.then_some(*me)
}

/// One server's figures, taken after the idle period.
#[derive(Serialize)]
struct ServerFigures {
    name: String,
    /// CPU-seconds (user + system) over the idle period, scaled to 30 s.
    idle_cpu_s_per_30s: f64,
    /// The same as a share of one core.
    idle_cpu_percent: f64,
    /// `VmRSS` after the idle period.
    rss_mib: f64,
    /// Allocated bytes under its data folder.
    disk_bytes: u64,
    /// Files and folders under its data folder, itself included.
    inodes: u64,
}

#[derive(Serialize)]
struct FilesReport {
    tls: bool,
    /// Files stored when the cluster is measured.
    files: usize,
    file_bytes: u64,
    clients: usize,
    /// `puts` files stored by `clients` sessions at once (all of them, or
    /// with `--direct` new ones beside those seeded).
    puts: usize,
    put_per_s: f64,
    /// `timed` files stored again by one session, one after another.
    one_client_puts: usize,
    one_client_put_per_s: f64,
    /// As many new files stored by one session as `put` of a pattern (or
    /// `put -r`) stores them: small ones in batches.
    bulk_put_per_s: f64,
    /// `timed` random files read by `clients` sessions at once.
    gets: usize,
    get_per_s: f64,
    /// The median of `FILES_LISTS` LISTs of all `files`.
    list_ms: f64,
    idle_secs: f64,
    servers: Vec<ServerFigures>,
    /// All servers' disk bytes over the bytes of the files stored (one copy).
    disk_ratio: f64,
    restarted: String,
    restart_to_ready_s: f64,
    missed_writes: usize,
    catching_up: String,
    catch_up_s: f64,
    catch_up_healed_in_s: Option<f64>,
    table: Vec<Row>,
}

impl FilesReport {
    fn new(
        plan: &FilesPlan,
        [put_per_s, one_client_put_per_s, bulk_put_per_s, get_per_s]: [f64; 4],
        list_ms: f64,
        idle_secs: f64,
        servers: Vec<ServerFigures>,
        (restarted, ready): (String, Duration),
        (catching_up, catch_up): (String, CatchUp),
    ) -> FilesReport {
        let disk: u64 = servers.iter().map(|s| s.disk_bytes).sum();
        let mut report = FilesReport {
            tls: true,
            files: plan.stored(),
            file_bytes: SMALL_FILE,
            clients: FILES_CLIENTS,
            puts: plan.puts(),
            put_per_s,
            one_client_puts: plan.timed,
            one_client_put_per_s,
            bulk_put_per_s,
            gets: plan.timed,
            get_per_s,
            list_ms,
            idle_secs,
            disk_ratio: disk as f64 / (plan.stored() as u64 * SMALL_FILE) as f64,
            servers,
            restarted,
            restart_to_ready_s: ready.as_secs_f64(),
            missed_writes: MISSED_WRITES,
            catching_up,
            catch_up_s: catch_up.took.as_secs_f64(),
            catch_up_healed_in_s: catch_up.healed_in_secs,
            table: Vec::new(),
        };
        report.table = report.rows();
        report
    }

    /// Targets: issue 11's, which are for 1 000 000 files stored.
    fn rows(&self) -> Vec<Row> {
        let (n, m) = (self.files, self.gets);
        let rate = |r: f64| format!("{r:.0} files/s");
        let mut rows = vec![
            Row::new(
                format!(
                    "PUT {} files of 4 KiB, {} clients at once",
                    self.puts, self.clients
                ),
                rate(self.put_per_s),
                "≥ 1000/s",
                Some(self.put_per_s >= 1000.0),
            ),
            Row::new(
                format!(
                    "PUT {} files of 4 KiB, one client, one after another",
                    self.one_client_puts
                ),
                rate(self.one_client_put_per_s),
                "≥ 300/s",
                Some(self.one_client_put_per_s >= 300.0),
            ),
            Row::new(
                format!(
                    "PUT {} new files of 4 KiB, one client, `put` of a pattern",
                    self.one_client_puts
                ),
                rate(self.bulk_put_per_s),
                "≥ 300/s",
                Some(self.bulk_put_per_s >= 300.0),
            ),
            Row::new(
                format!("GET {m} random files, {} clients at once", self.clients),
                rate(self.get_per_s),
                "≥ 2000/s",
                Some(self.get_per_s >= 2000.0),
            ),
            Row::new(
                format!("LIST of {n} files"),
                format!("{:.0} ms", self.list_ms),
                "",
                None,
            ),
        ];
        for s in &self.servers {
            rows.push(Row::new(
                format!("idle CPU, {}, per 30 s", s.name),
                format!(
                    "{:.2} CPU-s ({:.2} % of a core)",
                    s.idle_cpu_s_per_30s, s.idle_cpu_percent
                ),
                "≤ 0.3 CPU-s",
                Some(s.idle_cpu_s_per_30s <= 0.3),
            ));
        }
        for s in &self.servers {
            rows.push(Row::new(
                format!("RSS, {}, after idle", s.name),
                format!("{:.1} MiB", s.rss_mib),
                "≤ 64 MiB",
                Some(s.rss_mib <= 64.0),
            ));
        }
        for s in &self.servers {
            rows.push(Row::new(
                format!("disk, {}", s.name),
                format!(
                    "{:.1} MiB, {} inodes",
                    s.disk_bytes as f64 / (1 << 20) as f64,
                    s.inodes
                ),
                "",
                None,
            ));
        }
        rows.push(Row::new(
            "disk, all servers / bytes of the files".into(),
            format!("{:.2}×", self.disk_ratio),
            "≤ 2.5×",
            Some(self.disk_ratio <= 2.5),
        ));
        rows.push(Row::new(
            format!("restart to serving, {}", self.restarted),
            format!("{:.2} s", self.restart_to_ready_s),
            "≤ 2 s",
            Some(self.restart_to_ready_s <= 2.0),
        ));
        rows.push(Row::new(
            format!(
                "catch-up, {} after {} missed writes",
                self.catching_up, self.missed_writes
            ),
            format!("{:.1} s", self.catch_up_s),
            "≤ 10 s",
            Some(self.catch_up_s <= 10.0),
        ));
        rows
    }
}

fn print_files_table(report: &FilesReport) {
    println!();
    println!(
        "ringdfs files benchmark: {} files of 4 KiB stored, TLS on; the targets (issue 11) are for 1 000 000 files",
        report.files
    );
    print_rows(&report.table);
    println!(
        "(idle: {:.0} s measured; catch-up by the server's own account: {})",
        report.idle_secs,
        report
            .catch_up_healed_in_s
            .map_or("none".into(), |s| format!("{s:.1} s")),
    );
}

fn per_s(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64()
}

// ---------------------------------------------------------------------------
// Pairs

#[derive(Debug, Clone, Serialize)]
struct Pair {
    /// Which of the two ran first: on a VM disk the second of two big
    /// transfers can be much slower than the first, so look at both orders.
    ringdfs_first: bool,
    ringdfs_mbps: f64,
    ceiling_mbps: f64,
    /// ringdfs over ceiling, within this pair.
    ratio: f64,
}

/// Before each timed transfer: everything written so far goes to disk and
/// the disk gets a moment, so each side of a pair starts from the same state.
fn settle() {
    let _ = Command::new("sync").status();
    thread::sleep(Duration::from_millis(1500));
}

/// Runs ringdfs and its ceiling back to back (`ringdfs_first` picks the order).
fn pair(
    ringdfs_first: bool,
    bytes: u64,
    mut ringdfs: impl FnMut() -> Result<()>,
    mut ceiling: impl FnMut() -> Result<()>,
) -> Result<Pair> {
    let timed = |f: &mut dyn FnMut() -> Result<()>| -> Result<Duration> {
        settle();
        let t = Instant::now();
        f()?;
        Ok(t.elapsed())
    };
    let (r, c) = if ringdfs_first {
        let r = timed(&mut ringdfs).context("ringdfs transfer")?;
        (r, timed(&mut ceiling).context("ceiling transfer")?)
    } else {
        let c = timed(&mut ceiling).context("ceiling transfer")?;
        (timed(&mut ringdfs).context("ringdfs transfer")?, c)
    };
    let (ringdfs_mbps, ceiling_mbps) = (mbps(bytes, r), mbps(bytes, c));
    Ok(Pair {
        ringdfs_first,
        ringdfs_mbps,
        ceiling_mbps,
        ratio: ringdfs_mbps / ceiling_mbps,
    })
}

// ---------------------------------------------------------------------------
// Ceilings: plain std threads and sockets, no protocol.

/// A raw TCP stream, memory to memory, one direction.
fn raw_tcp(bytes: u64) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = thread::spawn(move || -> Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; BLOCK];
        let mut total = 0;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    });
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![0x5au8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let got = join(receiver)?;
    let took = t.elapsed();
    if got != bytes {
        bail!("raw TCP: {got} bytes arrived of {bytes}");
    }
    Ok(mbps(bytes, took))
}

/// Read a file → one TCP stream → write a file (not synced, as GET's is not).
fn plain_copy(src: &Path, out: &Path) -> Result<f64> {
    let len = fs::metadata(src)?.len();
    let t = Instant::now();
    get_ceiling(&[(src.to_path_buf(), 0, len)], len, out)?;
    let took = t.elapsed();
    remove(out);
    Ok(mbps(len, took))
}

/// The GET shape without a protocol: each source `(file, offset, len)` is the
/// first `len` bytes of `file`, sent through its own TCP stream and written at
/// `offset` into `out`. Not synced at the end, as ringdfs's GET does not
/// sync the file it writes (like cp): the same shape, minus the protocol.
fn get_ceiling(sources: &[(PathBuf, u64, u64)], size: u64, out: &Path) -> Result<()> {
    let file = Arc::new(File::create(out)?);
    file.set_len(size)?;
    let mut threads = Vec::new();
    for (src, offset, len) in sources.iter().cloned() {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let file = Arc::clone(&file);
        threads.push(thread::spawn(move || -> Result<u64> {
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; BLOCK];
            let mut at = offset;
            loop {
                let n = read_full(&mut s, &mut buf)?;
                if n == 0 {
                    return Ok(at - offset);
                }
                file.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
        }));
        threads.push(thread::spawn(move || -> Result<u64> {
            let mut s = TcpStream::connect(addr)?;
            let mut f = File::open(&src)?;
            let mut buf = vec![0u8; BLOCK];
            let mut left = len;
            while left > 0 {
                let want = left.min(BLOCK as u64) as usize;
                f.read_exact(&mut buf[..want])?;
                s.write_all(&buf[..want])?;
                left -= want as u64;
            }
            s.shutdown(Shutdown::Write)?;
            Ok(0)
        }));
    }
    let mut moved = 0;
    for t in threads {
        moved += join(t)?;
    }
    if moved != size {
        bail!("GET ceiling: {moved} bytes arrived of {size}");
    }
    Ok(())
}

/// The PUT shape without a protocol: the file read once and sent as two
/// copies over two TCP streams to two receivers that each write a new file
/// (`outs`) and fdatasync it, then acknowledge.
fn put_ceiling(src: &Path, outs: &[PathBuf; 2]) -> Result<()> {
    let len = fs::metadata(src)?.len();
    let mut streams = Vec::new();
    let mut receivers = Vec::new();
    for out in outs.clone() {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        receivers.push(thread::spawn(move || -> Result<u64> {
            let (mut s, _) = listener.accept()?;
            let mut file = File::create(&out)?;
            let mut buf = vec![0u8; BLOCK];
            let mut total = 0;
            loop {
                let n = read_full(&mut s, &mut buf)?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n])?;
                total += n as u64;
            }
            file.sync_data()?;
            s.write_all(b"k")?;
            Ok(total)
        }));
        streams.push(TcpStream::connect(addr)?);
    }
    let mut f = File::open(src)?;
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        for s in &mut streams {
            s.write_all(&buf[..n])?;
        }
    }
    for s in &mut streams {
        s.shutdown(Shutdown::Write)?;
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack)?;
    }
    for r in receivers {
        let got = join(r)?;
        if got != len {
            bail!("PUT ceiling: {got} bytes arrived of {len}");
        }
    }
    Ok(())
}

/// The stored chunk files of `owner`'s file `name` (current version), each
/// from its first holder, as `(path, offset in the file, length)`.
fn stored_chunks(
    cluster: &Cluster,
    owner: &str,
    name: &str,
    size: u64,
) -> Result<Vec<(PathBuf, u64, u64)>> {
    let n = SERVERS as u32;
    let (placement, ring) = (Placement::of(owner, name), even_ring(n));
    (1..=n)
        .map(|chunk| {
            let holder = placement.holders(&ring, chunk, n, DEFAULT_COPIES)[0] as usize - 1;
            let dir = ringdfs::store::file_dir(&cluster.data_dirs[holder], owner, name);
            let suffix = format!(".{chunk}");
            // Chunk files are `<gen:016x>-<writer:016x>.<chunk>`: the newest sorts last.
            let path = fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(&suffix))
                .max()
                .with_context(|| format!("no chunk {chunk} in {}", dir.display()))?;
            let (start, end) = chunk_range(size, n, chunk);
            Ok((path, start, end - start))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The cluster: four child processes, killed on drop.

/// Files written straight into the stores before the servers start
/// (`--direct`, and the big folder): `owner`'s file `i` is `{prefix}{i}`
/// (see [`file_name`]), of `data[i mod len]`, at version (base + i,
/// 0x5eed), exactly as a PUT would leave it on each server.
#[derive(Default)]
struct Seed {
    files: usize,
    data: Vec<Vec<u8>>,
    owner: &'static str,
    prefix: &'static str,
}

/// Threads writing into one store at once, so its commits are shared.
const SEED_THREADS: usize = 64;

impl Seed {
    /// Writes the files into the store under `data_dir` of the server at
    /// ring position `pos` (1-based, of `SERVERS`).
    fn write(&self, data_dir: &Path, pos: u32, base: u64) -> Result<()> {
        use ringdfs::protocol::{ChunkId, FileDigest, Manifest, Version};
        use ringdfs::store::{ChunkSpec, Layout, Store};
        use sha2::Digest as _;
        if self.files == 0 {
            return Ok(());
        }
        let store = Store::open(data_dir, Default::default())?;
        let layout = Layout {
            ring: even_ring(SERVERS as u32),
            pos: Some(pos),
            k: DEFAULT_COPIES,
        };
        store.set_layout(layout.clone())?;
        let stored_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let digests: Vec<FileDigest> = self
            .data
            .iter()
            .map(|d| FileDigest::Sha256(sha2::Sha256::digest(d).into()))
            .collect();
        thread::scope(|scope| {
            let workers: Vec<_> = (0..SEED_THREADS)
                .map(|t| {
                    let (store, digests, layout) = (&store, &digests, &layout);
                    scope.spawn(move || -> Result<()> {
                        for i in (t..self.files).step_by(SEED_THREADS) {
                            let (owner, name) = (self.owner, file_name(self.prefix, i));
                            let data = &self.data[i % self.data.len()];
                            let size = data.len() as u64;
                            let version = Version {
                                gen: base + i as u64,
                                writer: 0x5eed,
                            };
                            let n = SERVERS as u32;
                            let held = layout.wanted(owner, &name, n);
                            let mut checksums = Vec::new();
                            for chunk in 1..=n {
                                let (start, end) = chunk_range(size, n, chunk);
                                let bytes = &data[start as usize..end as usize];
                                let id = ChunkId {
                                    owner,
                                    name: &name,
                                    version,
                                    chunk,
                                    len: end - start,
                                };
                                let sum = id.checksum(bytes);
                                checksums.push(sum);
                                if held.contains(&chunk) {
                                    let mut w = store.begin_chunk(ChunkSpec {
                                        owner: owner.into(),
                                        name: name.clone(),
                                        version,
                                        chunk,
                                        chunks: n,
                                        size,
                                    })?;
                                    w.write(bytes)?;
                                    w.finish(sum)?;
                                }
                            }
                            let manifest = Manifest {
                                name,
                                version,
                                size,
                                chunks: n,
                                checksums,
                                stored_at,
                                digest: digests[i % digests.len()],
                                deleted: false,
                                data: None,
                                kept: None,
                                meta: None,
                            };
                            store.commit(owner, manifest)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| anyhow!("a seeding thread panicked"))?)
        })
    }
}

struct Cluster {
    children: Vec<Option<Child>>,
    addrs: Vec<String>,
    /// Each server's HTTPS endpoint (`http_listen`), if it was started
    /// with one ([`Cluster::start_http`]).
    http_addrs: Vec<Option<String>>,
    data_dirs: Vec<PathBuf>,
    /// `dfs1`…, by index.
    names: Vec<String>,
    /// This executable, run as `--serve CONFIG` for each server.
    exe: PathBuf,
    /// Holds each server's `NAME.toml` and `NAME.log`.
    dir: PathBuf,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster> {
        Cluster::launch(dir, &Seed::default(), false)
    }

    /// Starts the servers, each on a store `seed` has been written into.
    fn start_seeded(dir: &Path, seed: &Seed) -> Result<Cluster> {
        Cluster::launch(dir, seed, false)
    }

    /// Starts the servers with their HTTPS endpoints (S3 and the files API)
    /// too.
    fn start_http(dir: &Path) -> Result<Cluster> {
        Cluster::launch(dir, &Seed::default(), true)
    }

    fn launch(dir: &Path, seed: &Seed, http: bool) -> Result<Cluster> {
        let exe = std::env::current_exe().context("finding this executable")?;
        // Free ports: bind them all at once (so they differ), note them, let
        // go. Another process could take one in between; for a benchmark
        // that is fine.
        let free = |n: usize| {
            (0..n)
                .map(|_| TcpListener::bind("127.0.0.1:0"))
                .collect::<std::io::Result<Vec<_>>>()
                .context("finding free ports")
        };
        let listeners = free(SERVERS)?;
        let http_listeners = free(if http { SERVERS } else { 0 })?;
        let http_addrs = (0..SERVERS)
            .map(|i| {
                http_listeners
                    .get(i)
                    .map(|l| Ok(l.local_addr()?.to_string()))
                    .transpose()
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        drop(http_listeners);
        let ring = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                Ok(Member {
                    name: format!("dfs{}", i + 1),
                    addr: l.local_addr()?.to_string(),
                    // Evenly spaced, in dfs1..dfsN order.
                    id: Some(
                        ringdfs::ring::Id::evenly_spaced(i as u32, SERVERS as u32).to_string(),
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        drop(listeners);
        let mut cluster = Cluster {
            children: ring.iter().map(|_| None).collect(),
            addrs: ring.iter().map(|m| m.addr.clone()).collect(),
            http_addrs,
            data_dirs: Vec::new(),
            names: ring.iter().map(|m| m.name.clone()).collect(),
            exe,
            dir: dir.to_path_buf(),
        };
        for (i, member) in ring.iter().enumerate() {
            let config = ServerConfig {
                name: member.name.clone(),
                listen: member.addr.clone(),
                advertise: None,
                data_dir: dir.join("data").join(&member.name),
                http_listen: cluster.http_addrs[i].clone(),
                http_plain: false,
                users: dir.join("users.toml"),
                cluster_key: Some(dir.join("cluster.key")),
                heal_interval_secs: 5,
                tls_dir: dir.join("tls"),
                limits: Default::default(),
                id: None,
                join: None,
                copies: ringdfs::placement::DEFAULT_COPIES,
                stabilize_ms: 500,
                failure_timeout_ms: 2000,
                successors: 4,
                ring: ring.clone(),
                store: Default::default(),
            };
            ringdfs::tls::ensure_certs(&config.tls_dir, &[config.identity()])?;
            fs::write(cluster.config_path(i), toml::to_string(&config)?)?;
            cluster.data_dirs.push(config.data_dir);
        }
        let base = ringdfs::protocol::Version::next(None).gen;
        thread::scope(|scope| {
            let seeding: Vec<_> = cluster
                .data_dirs
                .iter()
                .enumerate()
                .map(|(i, data_dir)| scope.spawn(move || seed.write(data_dir, i as u32 + 1, base)))
                .collect();
            seeding
                .into_iter()
                .try_for_each(|t| t.join().map_err(|_| anyhow!("a seeding thread panicked"))?)
        })?;
        for i in 0..ring.len() {
            cluster.spawn(i)?;
        }
        for i in 0..ring.len() {
            cluster.wait_ready(i)?;
        }
        Ok(cluster)
    }

    fn config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.toml", self.names[i]))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", self.names[i]))
    }

    /// Starts server `i` from its configuration file.
    fn spawn(&mut self, i: usize) -> Result<()> {
        // Appended to: a restarted server's log follows its earlier life's.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let child = Command::new(&self.exe)
            .arg("--serve")
            .arg(self.config_path(i))
            // The child exits when this pipe closes, i.e. when the bench
            // dies, even by a signal that skips `Drop`.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.names[i]))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// Starts server `i` again after [`Cluster::kill`]: the same
    /// configuration, port and data folder.
    fn restart(&mut self, i: usize) -> Result<()> {
        if self.children[i].is_some() {
            bail!("{} is still running", self.names[i]);
        }
        self.spawn(i)
    }

    /// Fails, with its log, if server `i` has exited.
    fn check_running(&mut self, i: usize) -> Result<()> {
        let child = self.children[i].as_mut().context("server not running")?;
        if let Some(status) = child.try_wait()? {
            let log = fs::read_to_string(self.log_path(i)).unwrap_or_default();
            bail!("{} exited ({status}): {}", self.names[i], log.trim());
        }
        Ok(())
    }

    /// Waits until server `i` accepts connections on its ring address and,
    /// if it has one, its HTTP endpoint.
    fn wait_ready(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let addrs = std::iter::once(self.addrs[i].clone()).chain(self.http_addrs[i].clone());
        for addr in addrs.collect::<Vec<_>>() {
            loop {
                if TcpStream::connect(&addr).is_ok() {
                    break;
                }
                self.check_running(i)?;
                if Instant::now() > deadline {
                    bail!(
                        "{} did not start listening on {addr} within 20 s",
                        self.names[i]
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn client_config(&self, dir: &Path) -> ClientConfig {
        let mut config = ClientConfig::for_servers(self.addrs.clone());
        config.download_dir = dir.join("scratch");
        config.ca = ringdfs::tls::ca_cert_path(&dir.join("tls"));
        config
    }

    /// Process ids of the servers still running, by index.
    fn pids(&self) -> Vec<Option<u32>> {
        self.children
            .iter()
            .map(|c| c.as_ref().map(Child::id))
            .collect()
    }

    /// SIGKILLs server `i` (0-based).
    fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut child) = self.children[i].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Peak memory

/// Peak RSS seen during ringdfs transfers: the client (this process) and each server.
struct Peaks {
    client_kib: u64,
    servers_kib: Vec<u64>,
    /// Whether VmHWM could be reset before each transfer; if not, the figures
    /// are lifetime peaks (which include logins).
    reset_works: bool,
}

impl Peaks {
    fn new(cluster: &Cluster) -> Peaks {
        Peaks {
            client_kib: 0,
            servers_kib: vec![0; cluster.children.len()],
            reset_works: true,
        }
    }

    /// Runs `f`, with every process's VmHWM reset before and read after.
    fn around(&mut self, cluster: &Cluster, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let pids = cluster.pids();
        let mut procs: Vec<String> = vec!["self".into()];
        procs.extend(pids.iter().flatten().map(u32::to_string));
        for p in &procs {
            if fs::write(format!("/proc/{p}/clear_refs"), "5").is_err() {
                self.reset_works = false;
            }
        }
        f()?;
        self.client_kib = self.client_kib.max(vm_hwm_kib("self")?);
        for (i, pid) in pids.iter().enumerate() {
            if let Some(pid) = pid {
                self.servers_kib[i] = self.servers_kib[i].max(vm_hwm_kib(&pid.to_string())?);
            }
        }
        Ok(())
    }
}

fn vm_hwm_kib(pid: &str) -> Result<u64> {
    proc_status_kib(pid, "VmHWM")
}

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`…).
fn proc_status_kib(pid: &str, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------
// The report

#[derive(Serialize)]
struct Ceilings {
    raw_tcp_mbps: f64,
    plain_copy_mbps: f64,
    get_mbps: f64,
    put_mbps: f64,
}

#[derive(Serialize)]
struct Row {
    figure: String,
    value: String,
    target: String,
    /// `None`: no target.
    met: Option<bool>,
}

impl Row {
    fn new(figure: String, value: String, target: &str, met: Option<bool>) -> Row {
        Row {
            figure,
            value,
            target: target.to_string(),
            met,
        }
    }
}

#[derive(Serialize)]
struct Report {
    quick: bool,
    tls: bool,
    file_bytes: u64,
    pairs: usize,
    ceilings: Ceilings,
    put_mbps: f64,
    get_mbps: f64,
    put_ratio: f64,
    get_ratio: f64,
    /// The geometric mean of the two orders' medians: a fixed penalty for
    /// running second cancels out.
    put_ratio_balanced: f64,
    get_ratio_balanced: f64,
    get_one_down_mbps: f64,
    get_one_down_ratio: f64,
    put_pairs: Vec<Pair>,
    get_pairs: Vec<Pair>,
    get_one_down_pairs: Vec<Pair>,
    rss_client_mib: f64,
    rss_servers_mib: Vec<f64>,
    rss_reset_per_transfer: bool,
    small_files: usize,
    small_put_per_s: f64,
    small_get_per_s: f64,
    login_ms: f64,
    list_files: usize,
    list_ms: f64,
    /// `ls` of one folder of many files.
    folder: FolderFigures,
    table: Vec<Row>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: &Plan,
        ceilings: Ceilings,
        put_pairs: Vec<Pair>,
        get_pairs: Vec<Pair>,
        down_pairs: Vec<Pair>,
        peaks: Peaks,
        small_put_per_s: f64,
        small_get_per_s: f64,
        login_ms: f64,
        list_ms: f64,
        folder: FolderFigures,
    ) -> Report {
        let med =
            |pairs: &[Pair], f: fn(&Pair) -> f64| median(&pairs.iter().map(f).collect::<Vec<_>>());
        let mib = |kib: u64| kib as f64 / 1024.0;
        let balanced = |pairs: &[Pair]| {
            let by_order = |first: bool| {
                let ratios: Vec<f64> = pairs
                    .iter()
                    .filter(|p| p.ringdfs_first == first)
                    .map(|p| p.ratio)
                    .collect();
                median(&ratios)
            };
            (by_order(true) * by_order(false)).sqrt()
        };
        let mut report = Report {
            quick: plan.quick,
            tls: true,
            put_ratio_balanced: balanced(&put_pairs),
            get_ratio_balanced: balanced(&get_pairs),
            file_bytes: plan.size,
            pairs: plan.pairs,
            ceilings,
            put_mbps: med(&put_pairs, |p| p.ringdfs_mbps),
            get_mbps: med(&get_pairs, |p| p.ringdfs_mbps),
            put_ratio: med(&put_pairs, |p| p.ratio),
            get_ratio: med(&get_pairs, |p| p.ratio),
            get_one_down_mbps: med(&down_pairs, |p| p.ringdfs_mbps),
            get_one_down_ratio: med(&down_pairs, |p| p.ratio),
            put_pairs,
            get_pairs,
            get_one_down_pairs: down_pairs,
            rss_client_mib: mib(peaks.client_kib),
            rss_servers_mib: peaks.servers_kib.iter().map(|&k| mib(k)).collect(),
            rss_reset_per_transfer: peaks.reset_works,
            small_files: plan.small_files,
            small_put_per_s,
            small_get_per_s,
            login_ms,
            list_files: plan.list_files,
            list_ms,
            folder,
            table: Vec::new(),
        };
        report.table = report.rows();
        report
    }

    fn rows(&self) -> Vec<Row> {
        let size = format!("{} MiB", self.file_bytes >> 20);
        let mut rows = Vec::new();
        let mut row = |figure: String, value: String, target: &str, met: Option<bool>| {
            rows.push(Row::new(figure, value, target, met))
        };
        let c = &self.ceilings;
        row(
            "ceiling: raw TCP stream, memory to memory".into(),
            format!("{:.0} MB/s", c.raw_tcp_mbps),
            "",
            None,
        );
        row(
            "ceiling: plain file copy, one TCP stream".into(),
            format!("{:.0} MB/s", c.plain_copy_mbps),
            "",
            None,
        );
        row(
            "ceiling: GET shape, 4 streams into one file".into(),
            format!("{:.0} MB/s", c.get_mbps),
            "",
            None,
        );
        row(
            "ceiling: PUT shape, 2 copies, fdatasync".into(),
            format!("{:.0} MB/s", c.put_mbps),
            "",
            None,
        );
        let ratio = |mbps: f64, r: f64| format!("{mbps:.0} MB/s, ratio {r:.2}");
        let both = |mbps: f64, r: f64, balanced: f64| {
            format!("{mbps:.0} MB/s, ratio {r:.2} (order-balanced {balanced:.2})")
        };
        row(
            format!("PUT {size}"),
            both(self.put_mbps, self.put_ratio, self.put_ratio_balanced),
            "ratio ≥ 0.70",
            Some(self.put_ratio >= 0.70),
        );
        row(
            format!("GET {size}"),
            both(self.get_mbps, self.get_ratio, self.get_ratio_balanced),
            "ratio ≥ 0.70",
            Some(self.get_ratio >= 0.70),
        );
        row(
            format!("GET {size}, one server down"),
            ratio(self.get_one_down_mbps, self.get_one_down_ratio),
            "ratio ≥ 0.50",
            Some(self.get_one_down_ratio >= 0.50),
        );
        row(
            "peak RSS, client".into(),
            format!("{:.1} MiB", self.rss_client_mib),
            "≤ 64 MiB",
            Some(self.rss_client_mib <= 64.0),
        );
        for (i, &m) in self.rss_servers_mib.iter().enumerate() {
            row(
                format!("peak RSS, dfs{}", i + 1),
                format!("{m:.1} MiB"),
                "≤ 64 MiB",
                Some(m <= 64.0),
            );
        }
        let n = self.small_files;
        row(
            format!("PUT {n} files of 4 KiB"),
            format!("{:.0} files/s", self.small_put_per_s),
            "≥ 300/s",
            Some(self.small_put_per_s >= 300.0),
        );
        row(
            format!("GET {n} files of 4 KiB"),
            format!("{:.0} files/s", self.small_get_per_s),
            "≥ 1000/s",
            Some(self.small_get_per_s >= 1000.0),
        );
        row(
            "login, all four servers".into(),
            format!("{:.0} ms", self.login_ms),
            "≤ 150 ms",
            Some(self.login_ms <= 150.0),
        );
        row(
            format!("LIST, {} files stored", self.list_files),
            format!("{:.0} ms", self.list_ms),
            "≤ 200 ms",
            Some(self.list_ms <= 200.0),
        );
        folder_rows(&self.folder, &mut rows);
        rows
    }
}

fn print_table(report: &Report) {
    println!();
    if report.quick {
        println!("QUICK RUN: a smoke check of the bench; these figures judge nothing.");
    }
    println!(
        "ringdfs benchmark: {} MiB file, {} pairs (ratios: median of per-pair ratios), TLS on",
        report.file_bytes >> 20,
        report.pairs
    );
    print_rows(&report.table);
    if !report.rss_reset_per_transfer {
        println!("(peak RSS could not be reset per transfer: the figures are lifetime peaks)");
    }
}

/// The table's rows, in aligned columns.
fn print_rows(table: &[Row]) {
    let w0 = table
        .iter()
        .map(|r| r.figure.chars().count())
        .max()
        .unwrap_or(0);
    let w1 = table
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    let w2 = table
        .iter()
        .map(|r| r.target.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:w0$}  {:w1$}  {:w2$}  result",
        "figure", "value", "target"
    );
    for r in table {
        let met = match r.met {
            None => "",
            Some(true) => "met",
            Some(false) => "NOT MET",
        };
        println!("{:w0$}  {:w1$}  {:w2$}  {met}", r.figure, r.value, r.target);
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn write_users(path: &Path) -> Result<()> {
    let params = argon2::Params::default();
    let mut text = String::from("[users]\n");
    for (user, password) in [USER, LIST_USER] {
        let hash = ringdfs::auth::hash_password(password, &params)?;
        text.push_str(&format!("{user} = \"{hash}\"\n"));
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_random_file(path: &Path, len: u64) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut rng = rand::thread_rng();
    let mut buf = vec![0u8; BLOCK];
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    // On disk before anything is measured, so no writeback of it competes.
    file.sync_all()?;
    Ok(())
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn join<T>(handle: thread::JoinHandle<Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("a transfer thread panicked"))?
}

fn remove(path: &Path) {
    let _ = fs::remove_file(path);
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
