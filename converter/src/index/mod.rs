//! `estargz-convert index`: make an unconverted image lazily pullable without changing
//! it. Every gzip (or uncompressed) layer gets a zTOC and span blocks built in one pass
//! over its blob; per image manifest a SOCI index manifest v1 lists them and names the
//! manifest as its `subject`, published through the referrers API or the referrers tag
//! schema.
//!
//! - [`soci`]: the SOCI index manifest and referrers index JSON.
//! - [`publish`]: storing and linking it (registry or OCI layout).
//! - [`prefetch`]: an access record's files as a prefetch artifact per layer.
//! - `build`: one layer's zTOC and span blocks from its blob.

mod build;
mod index_report;
pub mod prefetch;
pub mod publish;
pub mod soci;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use estargz::soci::filelist::{FileList, FILE_LIST_MEDIA_TYPE};
use estargz::soci::{
    BuildError, BuildOptions, Compression, BLOCKS_MEDIA_TYPE, LEARNED_MEDIA_TYPE, LITE_MEDIA_TYPE,
    WINDOWS_MEDIA_TYPE,
};
use estargz::Digest;
use futures_util::future::try_join_all;
use tokio::sync::Semaphore;

use crate::oci::{kind_of, Descriptor, Document, Kind, LayerCompression, OciError};
use crate::platform::PlatformFilter;
use crate::progress::Progress;
use crate::record::Prioritized;
use crate::store::{Store, StoreError};

pub use index_report::{IndexReport, LayerIndexReport, ManifestIndexReport, PrefetchReport};
use publish::{publish_index, PublishError};
use soci::{PrefetchEntry, ZtocEntry, EMPTY_CONFIG, PREFETCH_MEDIA_TYPE};

/// Layers smaller than this are left to a normal pull by default (soci's default).
pub const DEFAULT_MIN_LAYER_SIZE: u64 = 10 << 20;

/// What to build.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    pub build: BuildOptions,
    /// Layers below this many (compressed) bytes are not indexed.
    pub min_layer_size: u64,
    pub platforms: PlatformFilter,
    /// Layers indexed at the same time.
    pub layer_jobs: usize,
    /// Files read per layer (an access record): each indexed layer with any gets a
    /// prefetch artifact of the spans holding them, each eStargz layer with any a list
    /// of the files (prefetched by the daemon like prioritized files).
    pub record: Option<Prioritized>,
}

/// Errors from indexing an image.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("read {what}: {source}")]
    Source {
        what: String,
        source: Box<StoreError>,
    },
    #[error(transparent)]
    Document(#[from] OciError),
    #[error("layer {digest}: {source}")]
    Build { digest: Digest, source: BuildError },
    #[error("layer {digest}: blob has digest {actual}")]
    LayerDigest { digest: Digest, actual: Digest },
    #[error("layer {digest}: indexing thread failed: {source}")]
    Join {
        digest: Digest,
        source: tokio::task::JoinError,
    },
    #[error("layer {digest}: cancelled")]
    Cancelled { digest: Digest },
    #[error("publish index of {manifest}: {source}")]
    Publish {
        manifest: Digest,
        source: PublishError,
    },
    #[error("no manifest of {0} matches the requested platforms")]
    NoPlatformMatched(Digest),
    #[error("layer {digest}: learned ranges: {source}")]
    Learned {
        digest: Digest,
        source: Box<estargz::soci::learned::LearnedError>,
    },
    #[error("layer {digest}: prefetch spans: {source}")]
    Prefetch {
        digest: Digest,
        source: estargz::soci::ZinfoError,
    },
}

struct Built {
    /// Kept for mapping recorded files to spans.
    parsed: estargz::soci::Ztoc,
    ztoc: Vec<u8>,
    digest: Digest,
    /// The span blocks blob and its digest.
    blocks: Vec<u8>,
    blocks_digest: Digest,
    /// The resume points' windows blob (empty: none pushed) and its digest.
    windows: Vec<u8>,
    windows_digest: Digest,
    /// The lite zTOC and its digest.
    lite: Vec<u8>,
    lite_digest: Digest,
    /// The exact ranges of the recorded reads (empty: none) and their digest.
    learned: Vec<u8>,
    learned_digest: Digest,
    spans: u32,
    files: usize,
}

/// Indexes the image `store` names and publishes the indexes beside it.
pub async fn index_image(
    store: &Store,
    image_name: String,
    opts: &IndexOptions,
    progress: &Progress,
    work_dir: &Path,
    cancel: Arc<AtomicBool>,
) -> Result<IndexReport, IndexError> {
    let root = store.root().await.map_err(source_error("image"))?;
    let root_desc = Descriptor::new(&root.media_type, root.digest, root.bytes.len() as u64);
    let manifests = match Document::parse(&root.bytes, &root.media_type, root.digest)? {
        Document::Manifest(m) => vec![(root_desc, *m)],
        Document::Index(index) => {
            let mut out = Vec::new();
            for entry in &index.manifests {
                if !opts.platforms.keeps(entry.platform.as_ref()) {
                    continue;
                }
                let bytes = store
                    .read_manifest(entry)
                    .await
                    .map_err(source_error(format!("manifest {}", entry.digest)))?;
                if let Document::Manifest(m) =
                    Document::parse(&bytes, &entry.media_type, entry.digest)?
                {
                    // Attestations and other artifacts have no image config: nothing to index.
                    if kind_of(&m.config.media_type) == Kind::Config {
                        let mut desc = entry.clone();
                        desc.size = bytes.len() as u64;
                        out.push((desc, *m));
                    }
                }
            }
            if out.is_empty() {
                return Err(IndexError::NoPlatformMatched(root.digest));
            }
            out
        }
    };
    let plans: Vec<Vec<(Descriptor, &'static str)>> = manifests
        .iter()
        .map(|(_, m)| {
            m.layers
                .iter()
                .map(|l| (l.clone(), decide(l, opts)))
                .collect()
        })
        .collect();
    // Each distinct layer is indexed once, however many manifests share it.
    let mut jobs: Vec<Descriptor> = Vec::new();
    let mut seen = HashMap::new();
    for (layer, status) in plans.iter().flatten() {
        if *status == "indexed" && seen.insert(layer.digest, jobs.len()).is_none() {
            jobs.push(layer.clone());
        }
    }
    // The recorded files of each layer (any manifest that has it): spans start before
    // the runs they read.
    let mut recorded: HashMap<Digest, Vec<String>> = HashMap::new();
    if let Some(record) = &opts.record {
        for ((desc, _), plan) in manifests.iter().zip(&plans) {
            for (i, (layer, _)) in plan.iter().enumerate() {
                recorded
                    .entry(layer.digest)
                    .or_default()
                    .extend(record.for_layer(&desc.digest, i));
            }
        }
    }
    let permits = Semaphore::new(opts.layer_jobs.max(1));
    let runs = jobs.iter().enumerate().map(|(i, layer)| {
        let (permits, cancel) = (&permits, cancel.clone());
        let label = format!("layer {}/{} {}", i + 1, jobs.len(), short(&layer.digest));
        let paths = recorded.get(&layer.digest).cloned().unwrap_or_default();
        async move {
            let _permit = permits.acquire().await;
            if cancel.load(Ordering::Relaxed) {
                return Err(IndexError::Cancelled {
                    digest: layer.digest,
                });
            }
            let built = index_layer(store, layer, opts, paths, progress, label, work_dir).await;
            if built.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            built
        }
    });
    let built = try_join_all(runs).await?;
    let by_digest: HashMap<Digest, &Built> =
        jobs.iter().map(|l| l.digest).zip(built.iter()).collect();
    for b in &built {
        store
            .put_blob_bytes(&b.digest, b.ztoc.clone())
            .await
            .map_err(source_error(format!("push ztoc {}", b.digest)))?;
        store
            .put_blob_bytes(&b.blocks_digest, b.blocks.clone())
            .await
            .map_err(source_error(format!(
                "push span blocks {}",
                b.blocks_digest
            )))?;
        let ours = [
            (b.windows_digest, &b.windows),
            (b.lite_digest, &b.lite),
            (b.learned_digest, &b.learned),
        ];
        for (digest, bytes) in ours {
            if !bytes.is_empty() {
                store
                    .put_blob_bytes(&digest, bytes.clone())
                    .await
                    .map_err(source_error(format!("push {digest}")))?;
            }
        }
    }
    let mut reports = Vec::new();
    for ((desc, _), plan) in manifests.iter().zip(&plans) {
        reports.push(publish_manifest(store, desc, plan, &by_digest, opts).await?);
    }
    let count = |indexed: bool| {
        reports
            .iter()
            .flat_map(|m| &m.layers)
            .filter(|l| (l.status == "indexed") == indexed)
            .count()
    };
    Ok(IndexReport {
        image: image_name,
        digest: root.digest,
        indexed: count(true),
        skipped: count(false),
        manifests: reports,
    })
}

/// What happens to one layer.
fn decide(layer: &Descriptor, opts: &IndexOptions) -> &'static str {
    match kind_of(&layer.media_type) {
        Kind::Layer(LayerCompression::Gzip | LayerCompression::None) => {
            if layer.annotation(estargz::TOC_DIGEST_ANNOTATION).is_some() {
                "estargz"
            } else if layer.size < opts.min_layer_size {
                "small"
            } else {
                "indexed"
            }
        }
        _ => "unsupported",
    }
}

async fn index_layer(
    store: &Store,
    layer: &Descriptor,
    opts: &IndexOptions,
    paths: Vec<String>,
    progress: &Progress,
    label: String,
    work_dir: &Path,
) -> Result<Built, IndexError> {
    let p = progress.layer(label);
    p.phase("download", layer.size);
    let blob = store
        .fetch_blob(layer, work_dir, |n| p.advance(n))
        .await
        .map_err(source_error(format!("layer {}", layer.digest)))?;
    p.phase("index", layer.size);
    let compression = match kind_of(&layer.media_type) {
        Kind::Layer(LayerCompression::None) => Compression::Uncompressed,
        _ => Compression::Gzip,
    };
    // A registry download was digest-checked on arrival; a layout blob is checked here.
    let verify = matches!(store, Store::Layout { .. });
    let (build, digest) = (opts.build.clone(), layer.digest);
    let index = tokio::task::spawn_blocking(move || {
        build::build_layer(&blob, compression, build, verify, digest, &paths)
    })
    .await
    .map_err(|source| IndexError::Join { digest, source })??;
    let (index, learned) = index;
    let learned = learned.map(|l| l.to_bytes()).unwrap_or_default();
    let (ztoc, windows, lite) = (index.ztoc, index.windows, index.lite);
    let bytes = ztoc.to_bytes();
    let blocks = index.blocks.to_bytes();
    let built = Built {
        digest: Digest::sha256(&bytes),
        spans: ztoc.max_span_id + 1,
        files: ztoc.files.len(),
        ztoc: bytes,
        parsed: ztoc,
        blocks_digest: Digest::sha256(&blocks),
        blocks,
        windows_digest: Digest::sha256(&windows),
        windows,
        lite_digest: Digest::sha256(&lite),
        lite,
        learned_digest: Digest::sha256(&learned),
        learned,
    };
    let index_size =
        (built.ztoc.len() + built.blocks.len() + built.windows.len() + built.lite.len()) as u64;
    p.indexed(layer.size, index_size, built.spans);
    Ok(built)
}

async fn publish_manifest(
    store: &Store,
    desc: &Descriptor,
    plan: &[(Descriptor, &'static str)],
    built: &HashMap<Digest, &Built>,
    opts: &IndexOptions,
) -> Result<ManifestIndexReport, IndexError> {
    let mut ztocs = Vec::new();
    let mut prefetches = Vec::new();
    let mut layers = Vec::new();
    for (i, (layer, status)) in plan.iter().enumerate() {
        let b = built.get(&layer.digest).filter(|_| *status == "indexed");
        let mut prefetch_report = None;
        if let (Some(b), Some(record)) = (b, &opts.record) {
            let paths = record.for_layer(&desc.digest, i);
            let artifact = prefetch::artifact_for(&b.parsed, &paths).map_err(|source| {
                IndexError::Prefetch {
                    digest: layer.digest,
                    source,
                }
            })?;
            if let Some((artifact, files)) = artifact {
                let bytes = artifact.to_bytes();
                let digest = Digest::sha256(&bytes);
                let size = bytes.len() as u64;
                store
                    .put_blob_bytes(&digest, bytes)
                    .await
                    .map_err(source_error(format!("push prefetch artifact {digest}")))?;
                let spans = artifact.span_order().len();
                prefetch_report = Some(PrefetchReport {
                    digest,
                    files,
                    spans,
                });
                prefetches.push(PrefetchEntry {
                    media_type: PREFETCH_MEDIA_TYPE,
                    digest,
                    size,
                    layer_digest: layer.digest,
                });
                // Ours: the same reads as exact compressed ranges (soci ignores it).
                if !b.learned.is_empty() {
                    prefetches.push(PrefetchEntry {
                        media_type: LEARNED_MEDIA_TYPE,
                        digest: b.learned_digest,
                        size: b.learned.len() as u64,
                        layer_digest: layer.digest,
                    });
                }
            }
        }
        if let (true, Some(record)) = (*status == "estargz", &opts.record) {
            // An eStargz layer: the recorded files themselves, prefetched by the daemon
            // like prioritized files, the image unchanged.
            let paths = record.for_layer(&desc.digest, i);
            if !paths.is_empty() {
                let files = paths.len();
                let bytes = FileList::new(paths).to_bytes();
                let digest = Digest::sha256(&bytes);
                let size = bytes.len() as u64;
                store
                    .put_blob_bytes(&digest, bytes)
                    .await
                    .map_err(source_error(format!("push prefetch file list {digest}")))?;
                prefetch_report = Some(PrefetchReport {
                    digest,
                    files,
                    spans: 0,
                });
                prefetches.push(PrefetchEntry {
                    media_type: FILE_LIST_MEDIA_TYPE,
                    digest,
                    size,
                    layer_digest: layer.digest,
                });
            }
        }
        if let Some(b) = b {
            // Our span blocks, beside the zTOC (soci ignores the unknown media type).
            prefetches.push(PrefetchEntry {
                media_type: BLOCKS_MEDIA_TYPE,
                digest: b.blocks_digest,
                size: b.blocks.len() as u64,
                layer_digest: layer.digest,
            });
            let ours = [
                (WINDOWS_MEDIA_TYPE, b.windows_digest, &b.windows),
                (LITE_MEDIA_TYPE, b.lite_digest, &b.lite),
            ];
            for (media_type, digest, bytes) in ours.into_iter().filter(|o| !o.2.is_empty()) {
                prefetches.push(PrefetchEntry {
                    media_type,
                    digest,
                    size: bytes.len() as u64,
                    layer_digest: layer.digest,
                });
            }
            ztocs.push(ZtocEntry {
                ztoc_digest: b.digest,
                ztoc_size: b.ztoc.len() as u64,
                layer_digest: layer.digest,
                layer_media_type: layer.media_type.clone(),
                span_size: opts.build.span_size,
            });
        }
        layers.push(LayerIndexReport {
            digest: layer.digest,
            size: layer.size,
            status,
            ztoc_digest: b.map(|b| b.digest),
            ztoc_size: b.map(|b| b.ztoc.len() as u64),
            blocks_size: b.map(|b| b.blocks.len() as u64),
            spans: b.map(|b| b.spans),
            files: b.map(|b| b.files),
            prefetch: prefetch_report,
        });
    }
    let mut report = ManifestIndexReport {
        platform: desc.platform.as_ref().map(ToString::to_string),
        manifest_digest: desc.digest,
        soci_index_digest: None,
        referrers: None,
        layers,
    };
    if ztocs.is_empty() && prefetches.is_empty() {
        tracing::info!(
            "manifest {}: no layer to index, no SOCI index pushed",
            desc.digest
        );
        return Ok(report);
    }
    let publish_error = |source| IndexError::Publish {
        manifest: desc.digest,
        source,
    };
    let config = soci::config_descriptor();
    store
        .put_blob_bytes(&config.digest, EMPTY_CONFIG.to_vec())
        .await
        .map_err(source_error("push soci config"))?;
    let subject = soci::subject_of(desc);
    let bytes = soci::index_manifest(
        &subject,
        &ztocs,
        &prefetches,
        &opts.build.build_tool_identifier,
    )?;
    let via = publish_index(store, &subject, &bytes, &opts.build.build_tool_identifier)
        .await
        .map_err(publish_error)?;
    let digest = Digest::sha256(&bytes);
    tracing::info!(
        "manifest {}: SOCI index {digest} ({} zTOCs, {} span blocks and prefetch blobs) linked via {via:?}",
        desc.digest,
        ztocs.len(),
        prefetches.len()
    );
    report.soci_index_digest = Some(digest);
    report.referrers = Some(via);
    Ok(report)
}

fn source_error(what: impl Into<String>) -> impl FnOnce(StoreError) -> IndexError {
    let what = what.into();
    move |source| IndexError::Source {
        what,
        source: Box::new(source),
    }
}

fn short(digest: &Digest) -> String {
    digest.to_string().chars().take(19).collect()
}
