//! `estargz-convert`: rewrite an image's layers into eStargz (or zstd:chunked) so that it can
//! be pulled lazily; `estargz-convert index` instead pushes seekable indexes beside an
//! unchanged image. CLI, logging, progress display and exit codes live here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use estargz::Compression;
use estargz_convert::client::{build_client, TransportOptions};
use estargz_convert::convert::{convert, ConvertOptions, Endpoints};
use estargz_convert::index::{index_image, IndexOptions, IndexReport, DEFAULT_MIN_LAYER_SIZE};
use estargz_convert::location::Location;
use estargz_convert::platform::{PlatformFilter, PlatformSpec};
use estargz_convert::progress::{human_bytes, Mode, Progress};
use estargz_convert::record::{record_files, Prioritized};
use estargz_convert::report::Report;
use estargz_convert::store::Store;
use registry::Reference;
use tracing_subscriber::EnvFilter;

/// Convert an OCI or Docker image into a lazily pullable eStargz (or zstd:chunked) image.
///
/// SRC and DST are registry references (`127.0.0.1:5000/app:v1`, `host/ns/app@sha256:...`)
/// or OCI image layout directories (`oci:PATH[:TAG]`; a missing DST layout is created).
/// Multi-platform images keep all platforms unless `--platform` selects some: the result
/// is then an index of the selected platforms (like `ctr-remote image convert --platform`).
#[derive(Debug, Parser)]
#[command(name = "estargz-convert", version)]
struct Cli {
    /// Source image.
    #[arg(value_name = "SRC")]
    source: Location,
    /// Destination image (must name a tag).
    #[arg(value_name = "DST")]
    destination: Location,
    /// Write zstd:chunked layers instead of eStargz (gzip).
    #[arg(long)]
    zstd: bool,
    /// Largest uncompressed chunk of a file, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = estargz::writer::DEFAULT_CHUNK_SIZE,
          value_parser = clap::value_parser!(u64).range(1..))]
    chunk_size: u64,
    /// Compression level: gzip 1-12 (default 9), zstd 1-22 (default 3).
    #[arg(long, value_name = "N")]
    compression_level: Option<i32>,
    /// Files to place first in every layer that has them: one path per line, in order;
    /// blank lines and lines starting with '#' are ignored.
    #[arg(long, value_name = "FILE")]
    prioritized_files: Option<PathBuf>,
    /// ctr-remote record file (`ctr-remote image optimize --record-out`): JSON lines of
    /// {"path", "manifestDigest", "layerIndex"} giving prioritized files per layer.
    #[arg(long, value_name = "FILE")]
    record_in: Option<PathBuf>,
    /// Access records written by estargz-snapshotter (`[record] enable = true`): its
    /// record directory (every `<manifest>.jsonl` in it) or one record file. The files a
    /// run opened come first, per layer, in the order it opened them.
    #[arg(long, value_name = "DIR|FILE")]
    record_from: Option<PathBuf>,
    /// Convert layers that already are in the target format instead of reusing them.
    #[arg(long)]
    force: bool,
    /// Convert only this platform (os/arch[/variant]); repeatable. Default: all.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    platforms: Vec<PlatformSpec>,
    /// Use plain HTTP for every registry.
    #[arg(long)]
    plain_http: bool,
    /// Registry host to reach over HTTPS without certificate checks, or plain HTTP when it
    /// does not speak TLS; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Docker config file with registry credentials (default: $DOCKER_CONFIG/config.json
    /// or ~/.docker/config.json).
    #[arg(long, value_name = "PATH")]
    docker_config: Option<PathBuf>,
    /// Worker threads for compression and layers converted at once (default: CPU cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Directory for temporary files (a fresh subdirectory is used and removed at exit).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Plain log lines instead of progress bars, even on a terminal.
    #[arg(long)]
    no_progress: bool,
}

/// Build seekable indexes (SOCI zTOCs) for the gzip and uncompressed layers of IMAGE and
/// push them beside it as a SOCI index manifest v1 per image manifest, linked through the
/// referrers API or the referrers tag schema. The image itself is not changed.
///
/// IMAGE is a registry reference or an OCI layout (`oci:PATH[:TAG]`).
#[derive(Debug, Parser)]
#[command(name = "estargz-convert index", version)]
struct IndexCli {
    /// Image to index.
    #[arg(value_name = "IMAGE")]
    image: Location,
    /// Uncompressed bytes between checkpoints (up to 16 times this where their windows
    /// would outgrow the index's 3 % budget: well-compressible layers).
    #[arg(long, value_name = "BYTES", default_value_t = estargz::soci::DEFAULT_SPAN_SIZE,
          value_parser = clap::value_parser!(u64).range(65536..))]
    span_size: u64,
    /// Uncompressed bytes between checkpoints, at least, when many small files make spans
    /// end early (default 1 MiB or --span-size if smaller; equal to --span-size: no
    /// early ends).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(65536..))]
    min_span_size: Option<u64>,
    /// Layers smaller than this (compressed) are left to a normal pull.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MIN_LAYER_SIZE)]
    min_layer_size: u64,
    /// Index only this platform (os/arch[/variant]); repeatable. Default: all.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]")]
    platforms: Vec<PlatformSpec>,
    /// Use plain HTTP for every registry.
    #[arg(long)]
    plain_http: bool,
    /// Registry host to reach over HTTPS without certificate checks, or plain HTTP.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Docker config file with registry credentials.
    #[arg(long, value_name = "PATH")]
    docker_config: Option<PathBuf>,
    /// Layers indexed at once (default: CPU cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Directory for downloaded layers (a fresh subdirectory, removed at exit).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Plain log lines instead of progress bars.
    #[arg(long)]
    no_progress: bool,
    /// The daemon's access record (a `.jsonl` file or its record directory): the spans
    /// the recorded files were read from become a prefetch artifact in the SOCI index.
    #[arg(long, value_name = "RECORD")]
    record_from: Option<PathBuf>,
}

fn main() -> ExitCode {
    // `index` is dispatched before the convert CLI, whose SRC DST stay positional.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "index") {
        args.remove(1);
        let cli = IndexCli::parse_from(args);
        let progress = start(cli.no_progress);
        return finish(run_index(cli, progress));
    }
    let cli = Cli::parse();
    let progress = start(cli.no_progress);
    finish(run(cli, progress))
}

fn start(no_progress: bool) -> Progress {
    let mode = if no_progress || !std::io::stderr().is_terminal() {
        Mode::Log
    } else {
        Mode::Bars
    };
    let progress = Progress::new(mode);
    init_logging(&progress);
    progress
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", render_error(&error));
            if let Some(hint) = auth_hint(&error) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(progress: &Progress) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(progress.log_writer())
        .init();
}

fn run(cli: Cli, progress: Progress) -> anyhow::Result<()> {
    let threads = match cli.threads {
        Some(n) => usize::try_from(n)?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let work_root = match &cli.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir(),
    };
    let work_dir = tempfile::Builder::new()
        .prefix("estargz-convert-")
        .tempdir_in(&work_root)
        .with_context(|| format!("create work dir in {}", work_root.display()))?;
    // Compression of every layer shares one pool: --threads bounds the CPU use of the run.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .context("start compression thread pool")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start async runtime")?;
    let result = runtime.block_on(run_async(cli, threads, &progress, work_dir.path()));
    // Let cancelled conversions notice and stop before their directory disappears.
    runtime.shutdown_timeout(Duration::from_secs(30));
    let removed = work_dir.close();
    result?;
    removed.context("remove work dir")
}

async fn run_async(
    cli: Cli,
    threads: usize,
    progress: &Progress,
    work_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let options = convert_options(&cli, threads)?;
    let transport = TransportOptions {
        plain_http: cli.plain_http,
        insecure_hosts: cli.insecure_registries.clone(),
        docker_config: cli.docker_config.clone(),
    };
    let references: Vec<&Reference> = [&cli.source, &cli.destination]
        .into_iter()
        .filter_map(|location| match location {
            Location::Registry(reference) => Some(reference),
            Location::Layout { .. } => None,
        })
        .collect();
    let client = build_client(&transport, &references)
        .await
        .context("set up registry client")?;
    let src =
        Store::source(&cli.source, &client).with_context(|| format!("open {}", cli.source))?;
    let dst = Store::destination(&cli.destination, &client)
        .with_context(|| format!("open {}", cli.destination))?;
    tracing::info!("converting {} -> {}", cli.source, cli.destination);
    let endpoints = Endpoints {
        src: &src,
        dst: &dst,
        destination_name: cli.destination.to_string(),
        work_dir,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let conversion = convert(endpoints, &options, progress, cancel.clone());
    let report = tokio::select! {
        report = conversion => report?,
        _ = tokio::signal::ctrl_c() => {
            cancel.store(true, Ordering::Relaxed);
            bail!("interrupted: nothing was tagged at {}", cli.destination);
        }
    };
    print_summary(&report, cli.json)
}

fn run_index(cli: IndexCli, progress: Progress) -> anyhow::Result<()> {
    let threads = match cli.threads {
        Some(n) => usize::try_from(n)?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let min_span_size = cli
        .min_span_size
        .unwrap_or(estargz::soci::DEFAULT_MIN_SPAN_SIZE.min(cli.span_size));
    if min_span_size > cli.span_size {
        bail!(
            "--min-span-size {min_span_size} is above --span-size {}",
            cli.span_size
        );
    }
    let work_root = cli.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let work_dir = tempfile::Builder::new()
        .prefix("estargz-index-")
        .tempdir_in(&work_root)
        .with_context(|| format!("create work dir in {}", work_root.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(threads.max(1) + 2)
        .enable_all()
        .build()
        .context("start async runtime")?;
    let result = runtime.block_on(async {
        let transport = TransportOptions {
            plain_http: cli.plain_http,
            insecure_hosts: cli.insecure_registries.clone(),
            docker_config: cli.docker_config.clone(),
        };
        let references: Vec<&Reference> = match &cli.image {
            Location::Registry(reference) => vec![reference],
            Location::Layout { .. } => Vec::new(),
        };
        let client = build_client(&transport, &references)
            .await
            .context("set up registry client")?;
        let store =
            Store::source(&cli.image, &client).with_context(|| format!("open {}", cli.image))?;
        let options = IndexOptions {
            build: estargz::soci::BuildOptions {
                span_size: cli.span_size,
                min_span_size,
                ..Default::default()
            },
            min_layer_size: cli.min_layer_size,
            platforms: PlatformFilter::new(cli.platforms.clone()),
            layer_jobs: threads,
            record: match &cli.record_from {
                Some(path) => Some(Prioritized::load(None, &record_files(path)?)?),
                None => None,
            },
        };
        tracing::info!("indexing {}", cli.image);
        let cancel = Arc::new(AtomicBool::new(false));
        let run = index_image(
            &store,
            cli.image.to_string(),
            &options,
            &progress,
            work_dir.path(),
            cancel.clone(),
        );
        let report = tokio::select! {
            report = run => report?,
            _ = tokio::signal::ctrl_c() => {
                cancel.store(true, Ordering::Relaxed);
                bail!("interrupted: no index was linked to {}", cli.image);
            }
        };
        print_index_summary(&report, cli.json)
    });
    runtime.shutdown_timeout(Duration::from_secs(30));
    let removed = work_dir.close();
    result?;
    removed.context("remove work dir")
}

fn print_index_summary(report: &IndexReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let ztoc_bytes: u64 = report
        .manifests
        .iter()
        .flat_map(|m| &m.layers)
        .filter_map(|l| l.ztoc_size)
        .sum();
    tracing::info!(
        "indexed {} ({}, unchanged): {} layers indexed, {} left to a normal pull, zTOCs {}",
        report.image,
        report.digest,
        report.indexed,
        report.skipped,
        human_bytes(ztoc_bytes)
    );
    Ok(())
}

fn convert_options(cli: &Cli, threads: usize) -> anyhow::Result<ConvertOptions> {
    let compression = match (cli.zstd, cli.compression_level) {
        (false, None) => Compression::DEFAULT_GZIP,
        (true, None) => Compression::DEFAULT_ZSTD,
        (false, Some(level @ 1..=12)) => Compression::Gzip { level },
        (true, Some(level @ 1..=22)) => Compression::Zstd { level },
        (false, Some(level)) => bail!("--compression-level {level}: gzip levels are 1 to 12"),
        (true, Some(level)) => bail!("--compression-level {level}: zstd levels are 1 to 22"),
    };
    let mut records: Vec<PathBuf> = cli.record_in.iter().cloned().collect();
    if let Some(path) = &cli.record_from {
        records.extend(record_files(path)?);
    }
    let prioritized = Prioritized::load(cli.prioritized_files.as_deref(), &records)?;
    Ok(ConvertOptions {
        compression,
        chunk_size: cli.chunk_size,
        force: cli.force,
        platforms: PlatformFilter::new(cli.platforms.clone()),
        prioritized,
        layer_jobs: threads,
        writer_threads: threads,
    })
}

fn print_summary(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let (before, after) = report
        .manifests
        .iter()
        .flat_map(|m| &m.layers)
        .fold((0u64, 0u64), |(b, a), l| {
            (b.saturating_add(l.source_size), a.saturating_add(l.size))
        });
    tracing::info!(
        "wrote {} ({}): layers {} -> {}",
        report.destination,
        report.digest,
        human_bytes(before),
        human_bytes(after)
    );
    Ok(())
}

/// The error and its causes on one line, skipping causes whose text a message already
/// includes (most messages embed their source).
fn render_error(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

/// For authentication failures: where credentials come from.
fn auth_hint(error: &anyhow::Error) -> Option<String> {
    let registry_error = error.chain().find_map(|cause| {
        cause
            .downcast_ref::<registry::Error>()
            .or_else(|| cause.downcast_ref::<Box<registry::Error>>().map(|b| &**b))
    })?;
    match registry_error {
        registry::Error::Unauthorized { host, .. } => Some(format!(
            "credentials for {host} are read from the docker config file \
             (--docker-config, $DOCKER_CONFIG/config.json or ~/.docker/config.json); \
             run `docker login {host}` or add an \"auths\" entry"
        )),
        registry::Error::Denied { .. } => Some(
            "the registry refused access with the credentials from the docker config file: \
             check that the account may pull the source and push the destination"
                .to_owned(),
        ),
        _ => None,
    }
}
