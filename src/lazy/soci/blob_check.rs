//! The deferred whole-layer check of a SOCI-served layer. It starts after the mount's
//! start delay (containers start meanwhile) and walks the blob span by span in steps:
//! spans already in the cache (read or prefetched) are taken from there, the rest are
//! fetched in the background class on the shared link (waiting while reads are on the
//! wire, pausing `quiet` after any layer's reads and between steps like background fetching)
//! and, once they match their span digest, put into the cache, so the check and later
//! reads never download a span twice. The blob is assembled in a temporary file and
//! hashed on the way: it must match the layer digest, then [`super::verify`] checks the
//! index's checkpoints and file table against it. On a mismatch the layer is failed.
//! With span blocks, spans are assembled from their blocks (cached ones from the cache,
//! the rest fetched and cached block by block), so nothing a read fetched is fetched again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use estargz::{Digest, Hasher};
use tokio::io::AsyncWriteExt;

use super::soci_layer::{SociLayer, WeakSociLayer};
use super::span_fetch::SpanBytes;
use crate::lazy::link::FetchKind;
use crate::lazy::producers::background_fetch::BackgroundConfig;

/// Failed steps in a row after which the check is given up (logged, layer kept).
const MAX_FAILURES: u32 = 6;
/// Longest pause after a failed step.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the check could not be completed (the layer stays served; nothing is failed).
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error("temporary file in {dir}: {source}")]
    TempFile {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("write the temporary copy: {0}")]
    Write(#[from] std::io::Error),
    #[error("{0}")]
    Fetch(#[from] super::span_fetch::SpanFetchError),
    #[error("{0}")]
    Prefix(#[from] super::prefix_error::PrefixError),
    #[error("the layer was unmounted")]
    Gone,
}

/// How the check shares the link: the background-fetching settings.
#[derive(Debug, Clone)]
pub struct CheckPacing {
    pub start_delay: Duration,
    pub quiet: Duration,
    pub step_bytes: u64,
    pub link_share: f64,
}

impl From<&BackgroundConfig> for CheckPacing {
    fn from(config: &BackgroundConfig) -> Self {
        CheckPacing {
            start_delay: config.start_delay,
            quiet: config.quiet,
            step_bytes: config.step_bytes.max(1),
            link_share: config.link_share,
        }
    }
}

/// Starts [`check_whole_blob`] of `layer` on `runtime`, paced by the background-fetching
/// settings. The blob is assembled in the system temp dir (the cache's directories have
/// their own bookkeeping).
pub fn spawn_check(runtime: &tokio::runtime::Handle, layer: &SociLayer, config: &BackgroundConfig) {
    let checking = check_whole_blob(
        layer.downgrade(),
        CheckPacing::from(config),
        std::env::temp_dir(),
    );
    runtime.spawn(checking);
}

/// Checks the layer once the whole blob has come through the cache; see the module
/// documentation. Ends early (logged) when the layer is unmounted or the registry keeps
/// failing.
pub async fn check_whole_blob(layer: WeakSociLayer, pacing: CheckPacing, dir: PathBuf) {
    tokio::time::sleep(pacing.start_delay).await;
    let Some(digest) = layer.upgrade().map(|l| l.source().location.digest) else {
        return;
    };
    let file = match tempfile::NamedTempFile::new_in(&dir) {
        Ok(file) => file,
        Err(source) => {
            let error = CheckError::TempFile { dir, source };
            tracing::warn!(layer = %digest, %error, "soci check skipped");
            return;
        }
    };
    match assemble(&layer, &pacing, file.path()).await {
        Ok(got) if got != digest => {
            if let Some(layer) = layer.upgrade() {
                layer.fail(&format!("blob has digest {got}, the layer is {digest}"));
            }
        }
        Ok(_) => verify(&layer, file.path()).await,
        Err(CheckError::Gone) => tracing::debug!(layer = %digest, "soci check ended: unmounted"),
        Err(error) => tracing::warn!(layer = %digest, %error, "soci check skipped"),
    }
    drop(file);
}

/// Writes the blob to `path` from the cache and background fetches; returns its digest.
async fn assemble(
    weak: &WeakSociLayer,
    pacing: &CheckPacing,
    path: &Path,
) -> Result<Digest, CheckError> {
    let mut out = tokio::io::BufWriter::new(tokio::fs::File::create(path).await?);
    let mut hasher = Hasher::new();
    let mut at = 0u64;
    let (count, first) = {
        let layer = weak.upgrade().ok_or(CheckError::Gone)?;
        let zinfo = &layer.source().zinfo;
        (
            zinfo.span_count(),
            zinfo.compressed_range(0).map_or(0, |r| r.start),
        )
    };
    if first > 0 {
        // The gzip header before the first checkpoint.
        let layer = weak.upgrade().ok_or(CheckError::Gone)?;
        let head = with_retries(&layer, || {
            layer.source().fetch(0..first, FetchKind::Background)
        })
        .await?;
        hasher.update(&head);
        out.write_all(&head).await?;
        at = first;
    }
    let mut next = 0;
    while next < count {
        let layer = weak.upgrade().ok_or(CheckError::Gone)?;
        keep_quiet(&layer, pacing.quiet).await;
        let run = layer.source().run_from(next, pacing.step_bytes);
        layer.settle(run.clone()).await;
        let started = Instant::now();
        let pieces = match layer.prefixes() {
            Some(prefixes) => {
                with_retries(&layer, || {
                    prefixes.whole_spans(layer.source(), run.clone(), FetchKind::Background)
                })
                .await?
            }
            None => {
                with_retries(&layer, || {
                    layer
                        .source()
                        .compressed(run.clone(), FetchKind::Background)
                })
                .await?
            }
        };
        let fetched = pieces.iter().any(|p| p.fetched);
        for (span, piece) in run.clone().zip(&pieces) {
            let Some(range) = layer.source().zinfo.compressed_range(span) else {
                break;
            };
            // Adjacent spans share a byte where a checkpoint starts mid-byte.
            let skip = usize::try_from(at.saturating_sub(range.start)).unwrap_or(usize::MAX);
            let new = piece.bytes.get(skip..).unwrap_or_default();
            hasher.update(new);
            out.write_all(new).await?;
            at = at.max(range.end);
        }
        if layer.prefixes().is_none() {
            keep_fetched(&layer, run.start, pieces).await;
        }
        next = run.end;
        drop(layer);
        if fetched && pacing.link_share > 0.0 && pacing.link_share < 1.0 {
            let took = started.elapsed().as_secs_f64();
            let pause = took * (1.0 - pacing.link_share) / pacing.link_share;
            tokio::time::sleep(Duration::from_secs_f64(pause.min(60.0))).await;
        }
    }
    out.flush().await?;
    Ok(hasher.finish())
}

/// Puts the spans fetched for the check that match their digests into the cache.
async fn keep_fetched(layer: &SociLayer, first: usize, pieces: Vec<SpanBytes>) {
    let layer = layer.clone();
    let keeping = tokio::task::spawn_blocking(move || {
        let source = layer.source();
        for (span, piece) in (first..).zip(pieces).filter(|(_, p)| p.fetched) {
            let (Some(key), Some(want)) = (source.key(span), source.zinfo.digest(span)) else {
                continue;
            };
            // A span that does not match is left out; the checks below catch why.
            if Digest::sha256(&piece.bytes) == *want {
                source.cache.put_disk(key, piece.bytes);
            }
        }
    });
    if let Err(error) = keeping.await {
        tracing::warn!(%error, "soci check: caching spans failed");
    }
}

/// Waits until no on-demand or prefetch request of any layer has been on the shared link
/// for `quiet` (a starting container reads in bursts: the check goes in the pauses after).
async fn keep_quiet(layer: &SociLayer, quiet: Duration) {
    let link = layer.source().cache.link().clone();
    loop {
        let left = quiet.saturating_sub(link.quiet_above(FetchKind::Background));
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.max(Duration::from_millis(10))).await;
    }
}

/// Runs `step` until it succeeds, backing off between failures (1 s, 2 s, ...); gives
/// up after [`MAX_FAILURES`].
async fn with_retries<T, E, F, Fut>(layer: &SociLayer, mut step: F) -> Result<T, CheckError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<CheckError> + std::fmt::Display,
{
    let mut failures = 0;
    loop {
        match step().await {
            Ok(value) => return Ok(value),
            Err(error) if failures + 1 >= MAX_FAILURES => return Err(error.into()),
            Err(error) => {
                failures += 1;
                let pause = (Duration::from_secs(1) * 2u32.pow(failures)).min(MAX_BACKOFF);
                tracing::debug!(layer = %layer.source().location.digest, %error, ?pause, "soci check step failed");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Checks checkpoints and file table against the assembled blob in `path`.
async fn verify(weak: &WeakSociLayer, path: &Path) {
    let Some(layer) = weak.upgrade() else {
        return;
    };
    let (digest, ztoc) = (layer.source().location.digest, layer.ztoc());
    let windows = match windows_blob(&layer).await {
        Ok(windows) => windows,
        Err(error) => {
            tracing::warn!(layer = %digest, %error, "soci check skipped: windows not fetched");
            return;
        }
    };
    let (this, path) = (layer.clone(), path.to_owned());
    let checked = tokio::task::spawn_blocking(move || {
        let points = this.prefixes().map(|p| super::verify::Points {
            blocks: p.blocks(),
            windows: &windows,
            learned: this.prefetch_plan().learned(),
        });
        super::verify::verify_blob(&path, &this.source().zinfo, this.files(), points)
    })
    .await;
    match checked {
        Ok(Ok(())) => {
            tracing::info!(layer = %digest, %ztoc, "soci index checked against the whole layer")
        }
        Ok(Err(error)) => layer.fail(&error.to_string()),
        Err(error) => tracing::warn!(layer = %digest, %error, "soci check skipped: task failed"),
    }
}

/// The whole windows blob of the layer's resume points (empty when no point needs one),
/// fetched in the background class for the check.
async fn windows_blob(layer: &SociLayer) -> Result<Vec<u8>, CheckError> {
    let Some(prefixes) = layer.prefixes() else {
        return Ok(Vec::new());
    };
    let len = prefixes
        .blocks()
        .points()
        .iter()
        .map(|p| p.window.offset.saturating_add(u64::from(p.window.len)))
        .max()
        .unwrap_or(0);
    let Some(blob) = prefixes.windows().filter(|_| len > 0) else {
        return Ok(Vec::new());
    };
    if let Some(held) = blob.held() {
        return Ok(held.clone());
    }
    let bytes = with_retries(layer, || {
        layer
            .source()
            .fetch_from(&blob.digest, 0..len, FetchKind::Background)
    })
    .await?;
    Ok(bytes.to_vec())
}
