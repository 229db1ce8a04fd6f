//! `estargz-snapshotter`: the containerd remote snapshotter daemon. Parses flags (ours,
//! and the Go reference's single-dash spellings), loads the config, installs logging and
//! serves until SIGTERM or SIGINT. The `status` subcommand instead asks a running daemon
//! for its lazily mounted layers.

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use estargz_snapshotter::config::{Config, KeyNotice, LogFormat, DEFAULT_CONFIG_PATH};
use estargz_snapshotter::status;
use tokio::signal::unix::{signal, SignalKind};

/// containerd remote snapshotter serving the Snapshots v1 gRPC API. Go-style flags
/// (`-config=FILE`, `-log-level debug`) are accepted too.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; a missing file at the default path means defaults.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Directory for the metadata database and snapshots (overrides the config).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Unix socket to serve on (overrides the config).
    #[arg(long)]
    address: Option<PathBuf>,
    /// Log filter such as `info` or `debug` (overrides the config).
    #[arg(long)]
    log_level: Option<String>,
    /// Log line format, `text` or `json` (overrides the config).
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// Without a subcommand, run the daemon.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the lazy FUSE mounts for the daemon (`[fuse] manager = true`; the daemon
    /// starts it when none answers).
    FuseManager,
    /// Show the lazily mounted layers of the running daemon (from `<root>/status.sock`).
    Status {
        /// Print the daemon's JSON as it is.
        #[arg(long)]
        json: bool,
        /// Status socket (default `<root>/status.sock`).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    // Before the threads and buffers it is about (see the module).
    let threshold_fixed = estargz_snapshotter::malloc::fix_mmap_threshold();
    let args = Args::parse_from(estargz_snapshotter::goflags::normalize(
        &Args::command(),
        std::env::args_os(),
    ));
    let optional = args.config == std::path::Path::new(DEFAULT_CONFIG_PATH);
    let (mut config, notices) = Config::load(&args.config, optional)?;
    if let Some(root) = args.root {
        config.root = root;
    }
    if let Some(Command::Status { json, socket }) = args.command {
        let socket = socket.unwrap_or_else(|| status::socket_path(&config.root));
        return show_status(&socket, json);
    }
    if let Some(address) = args.address {
        config.address = address;
    }
    if let Some(level) = args.log_level {
        config.log_level = level;
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    estargz_snapshotter::logging::init(&config.log_level, config.log_format)?;
    let manager = matches!(args.command, Some(Command::FuseManager));
    // The fuse manager reads the daemon's file again: the daemon has said it all.
    if !manager {
        log_notices(&notices);
    }
    if !threshold_fixed {
        tracing::warn!("allocator mmap threshold not fixed: FUSE buffers may stay resident");
    }

    let runtime = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        if manager {
            estargz_snapshotter::manager::server::run(&config, shutdown).await?;
        } else {
            estargz_snapshotter::service::run(&config, shutdown).await?;
        }
        Ok(())
    })
}

/// One line per config key that is not simply ours: a warning when the key does not do
/// what its writer meant.
fn log_notices(notices: &[KeyNotice]) {
    for notice in notices {
        if notice.is_warning() {
            tracing::warn!("{notice}");
        } else {
            tracing::info!("{notice}");
        }
    }
}

/// Prints the daemon's status as a report, or as JSON.
fn show_status(socket: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start tokio runtime")?;
    let (report, raw) = runtime.block_on(status::cli::fetch(socket))?;
    if json {
        println!("{}", raw.trim_end());
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        print!("{}", status::cli::render(&report, now));
    }
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}
