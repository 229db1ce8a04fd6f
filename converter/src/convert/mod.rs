//! Orchestration of one conversion: read the source image, convert its layers concurrently,
//! rewrite configs, manifests and the index, then publish to the destination: blobs first,
//! then child manifests by digest, the tagged top document last.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use estargz::{Compression, Digest};
use futures_util::future::try_join_all;
use tokio::sync::Semaphore;

mod manifest;
mod publish_image;

use manifest::build_manifest;

use crate::layer::{convert_layer, ConvertedLayer, LayerError, LayerOptions};
use crate::oci::{
    kind_of, Descriptor, Document, Index, Kind, Manifest, OciError, ANNOTATION_REFERENCE_TYPE,
};
use crate::platform::PlatformFilter;
use crate::progress::Progress;
use crate::record::Prioritized;
use crate::report::{ManifestReport, Report};
use crate::rewrite::ConfigError;
use crate::store::{BlobFile, Store, StoreError};

/// What to produce.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub compression: Compression,
    pub chunk_size: u64,
    /// Re-convert layers already in the target format.
    pub force: bool,
    pub platforms: PlatformFilter,
    pub prioritized: Prioritized,
    /// Layers processed at the same time.
    pub layer_jobs: usize,
    /// Compression members in flight per layer (0 = cores).
    pub writer_threads: usize,
}

/// Errors from a conversion.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("read source {what}: {source}")]
    Source {
        what: String,
        source: Box<StoreError>,
    },
    #[error(transparent)]
    Document(#[from] OciError),
    #[error("{position} {digest}: {source}")]
    Layer {
        position: String,
        digest: Digest,
        source: Box<LayerFailure>,
    },
    #[error("config {digest} of manifest {manifest}: {source}")]
    Config {
        digest: Digest,
        manifest: Digest,
        source: ConfigError,
    },
    #[error("no manifest in index {index} matches the requested platforms")]
    NoPlatformMatched { index: Digest },
    #[error("index {index} contains another index ({child}): nested indexes are not supported")]
    NestedIndex { index: Digest, child: Digest },
    #[error("the source image has no manifest to publish")]
    NothingToPublish,
    #[error("write destination {what}: {source}")]
    Destination {
        what: String,
        source: Box<StoreError>,
    },
}

/// Why one layer failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Convert(#[from] LayerError),
    #[error("conversion thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// One image manifest to rewrite (or an artifact to copy).
struct ManifestPlan {
    source: Descriptor,
    manifest: Manifest,
    content: Content,
}

enum Content {
    Image {
        config: Vec<u8>,
        layers: Vec<LayerPlan>,
    },
    /// Not an image (its config is no image config): copied byte for byte.
    Artifact { bytes: Vec<u8> },
}

#[derive(Clone, Copy)]
enum LayerPlan {
    Convert(usize),
    /// Carried over unchanged; `copy` says whether the blob must be copied.
    Keep {
        copy: bool,
    },
}

/// One distinct layer conversion (identical source layers are converted once).
struct Job {
    source: Descriptor,
    prioritized: Vec<String>,
    label: String,
    position: String,
}

struct JobOutput {
    layer: ConvertedLayer,
    /// Blob still to be stored at the destination (layouts store blobs at commit time).
    pending: Option<BlobFile>,
}

/// A rewritten manifest ready to publish.
struct NewManifest {
    descriptor: Descriptor,
    bytes: Vec<u8>,
    config: Option<(Digest, Vec<u8>)>,
    report: ManifestReport,
}

/// Where a run reads, writes and keeps its temporary files.
pub struct Endpoints<'a> {
    pub src: &'a Store,
    pub dst: &'a Store,
    /// How the destination is shown in the report.
    pub destination_name: String,
    pub work_dir: &'a Path,
}

/// Runs one conversion. Setting `cancel` stops running layer conversions early (the
/// caller drops the returned future at the same time).
pub async fn convert(
    endpoints: Endpoints<'_>,
    opts: &ConvertOptions,
    progress: &Progress,
    cancel: Arc<AtomicBool>,
) -> Result<Report, ConvertError> {
    let Endpoints {
        src,
        dst,
        destination_name,
        work_dir,
    } = endpoints;
    let converter = Converter {
        src,
        dst,
        opts,
        progress,
        work_dir: work_dir.to_owned(),
        cancel,
    };
    converter.run(destination_name).await
}

struct Converter<'a> {
    src: &'a Store,
    dst: &'a Store,
    opts: &'a ConvertOptions,
    progress: &'a Progress,
    work_dir: PathBuf,
    cancel: Arc<AtomicBool>,
}

impl Converter<'_> {
    async fn run(&self, destination_name: String) -> Result<Report, ConvertError> {
        let root = self
            .src
            .root()
            .await
            .map_err(source_error("image".to_owned()))?;
        let document = Document::parse(&root.bytes, &root.media_type, root.digest)?;
        let root_desc = Descriptor::new(&root.media_type, root.digest, root.bytes.len() as u64);
        let (plans, index) = match document {
            Document::Manifest(manifest) => (
                vec![self.plan_manifest(root_desc, *manifest, root.bytes).await?],
                None,
            ),
            Document::Index(index) => (self.plan_index(root.digest, &index).await?, Some(index)),
        };
        self.warn_unused_records(&plans);
        let mut plans = plans;
        let jobs = self.collect_jobs(&mut plans);
        let mut outputs = self.run_jobs(&jobs).await?;
        let manifests = plans
            .iter()
            .map(|plan| build_manifest(plan, &outputs))
            .collect::<Result<Vec<_>, _>>()?;
        self.publish_blobs(&plans, &mut outputs).await?;
        let top = self.publish_documents(&manifests, index.as_ref()).await?;
        Ok(Report {
            destination: destination_name,
            digest: top.digest,
            media_type: top.media_type,
            size: top.size,
            manifests: manifests.into_iter().map(|m| m.report).collect(),
        })
    }

    async fn plan_index(
        &self,
        digest: Digest,
        index: &Index,
    ) -> Result<Vec<ManifestPlan>, ConvertError> {
        let mut plans = Vec::new();
        for entry in &index.manifests {
            if entry.annotation(ANNOTATION_REFERENCE_TYPE) == Some("attestation-manifest") {
                tracing::info!(
                    "dropping attestation manifest {}: it describes the unconverted image",
                    entry.digest
                );
                continue;
            }
            if !self.opts.platforms.keeps(entry.platform.as_ref()) {
                tracing::debug!("skipping manifest {} for another platform", entry.digest);
                continue;
            }
            let bytes = self
                .src
                .read_manifest(entry)
                .await
                .map_err(source_error(format!("manifest {}", entry.digest)))?;
            match Document::parse(&bytes, &entry.media_type, entry.digest)? {
                Document::Manifest(manifest) => {
                    plans.push(self.plan_manifest(entry.clone(), *manifest, bytes).await?)
                }
                Document::Index(_) => {
                    return Err(ConvertError::NestedIndex {
                        index: digest,
                        child: entry.digest,
                    })
                }
            }
        }
        if plans.is_empty() {
            return Err(ConvertError::NoPlatformMatched { index: digest });
        }
        Ok(plans)
    }

    async fn plan_manifest(
        &self,
        source: Descriptor,
        manifest: Manifest,
        bytes: Vec<u8>,
    ) -> Result<ManifestPlan, ConvertError> {
        if kind_of(&manifest.config.media_type) != Kind::Config {
            return Ok(ManifestPlan {
                source,
                manifest,
                content: Content::Artifact { bytes },
            });
        }
        let config = self
            .src
            .read_document(&manifest.config)
            .await
            .map_err(source_error(format!("config {}", manifest.config.digest)))?;
        let layers = vec![LayerPlan::Keep { copy: false }; manifest.layers.len()];
        Ok(ManifestPlan {
            source,
            manifest,
            content: Content::Image { config, layers },
        })
    }

    fn warn_unused_records(&self, plans: &[ManifestPlan]) {
        let present: HashSet<Digest> = plans.iter().map(|p| p.source.digest).collect();
        for digest in self.opts.prioritized.recorded_manifests() {
            if !present.contains(&digest) {
                tracing::warn!("record file names manifest {digest}, which is not among the converted manifests");
            }
        }
    }

    /// Decides per layer what happens and assigns distinct conversions to jobs.
    fn collect_jobs(&self, plans: &mut [ManifestPlan]) -> Vec<Job> {
        let multi = plans.len() > 1;
        let mut jobs: Vec<Job> = Vec::new();
        let mut by_key: HashMap<(Digest, Vec<String>), usize> = HashMap::new();
        for plan in plans.iter_mut() {
            let Content::Image {
                layers: decisions, ..
            } = &mut plan.content
            else {
                continue;
            };
            let total = plan.manifest.layers.len();
            let platform = plan.source.platform.as_ref().filter(|_| multi);
            for (i, layer) in plan.manifest.layers.iter().enumerate() {
                let position = match platform {
                    Some(platform) => format!("{platform} layer {}/{total}", i + 1),
                    None => format!("layer {}/{total}", i + 1),
                };
                decisions[i] = match kind_of(&layer.media_type) {
                    Kind::Layer(_) => {
                        let prioritized = self.opts.prioritized.for_layer(&plan.source.digest, i);
                        let next = jobs.len();
                        let job = *by_key
                            .entry((layer.digest, prioritized.clone()))
                            .or_insert(next);
                        if job == next {
                            jobs.push(Job {
                                source: layer.clone(),
                                prioritized,
                                label: format!("{position} {}", short(&layer.digest)),
                                position,
                            });
                        }
                        LayerPlan::Convert(job)
                    }
                    Kind::ForeignLayer => LayerPlan::Keep { copy: false },
                    _ => {
                        tracing::warn!(
                            "{position} {} has media type {}: copied unchanged",
                            layer.digest,
                            layer.media_type
                        );
                        LayerPlan::Keep { copy: true }
                    }
                };
            }
        }
        jobs
    }

    /// Converts every job, `layer_jobs` at a time; the first failure cancels the others.
    async fn run_jobs(&self, jobs: &[Job]) -> Result<Vec<JobOutput>, ConvertError> {
        let permits = Semaphore::new(self.opts.layer_jobs.max(1));
        let runs = jobs.iter().map(|job| {
            let permits = &permits;
            async move {
                let _permit = permits.acquire().await;
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(self.layer_error(job, LayerError::Cancelled.into()));
                }
                self.run_job(job).await.map_err(|source| {
                    self.cancel.store(true, Ordering::Relaxed);
                    self.layer_error(job, source)
                })
            }
        });
        try_join_all(runs).await
    }

    fn layer_error(&self, job: &Job, source: LayerFailure) -> ConvertError {
        ConvertError::Layer {
            position: job.position.clone(),
            digest: job.source.digest,
            source: Box::new(source),
        }
    }

    async fn run_job(&self, job: &Job) -> Result<JobOutput, LayerFailure> {
        let progress = self.progress.layer(job.label.clone());
        if self.src.reference().is_some() {
            progress.phase("download", job.source.size);
        }
        let blob = self
            .src
            .fetch_blob(&job.source, &self.work_dir, |n| progress.advance(n))
            .await?;
        let options = self.layer_options();
        let (desc, prioritized, layer_progress) = (
            job.source.clone(),
            job.prioritized.clone(),
            progress.clone(),
        );
        let (layer, blob) = tokio::task::spawn_blocking(move || {
            convert_layer(blob, &desc, prioritized, &options, &layer_progress)
        })
        .await??;
        let source_size = job.source.size;
        let pending = match self.dst {
            Store::Registry { .. } => {
                progress.phase("push", layer.descriptor.size);
                let desc = &layer.descriptor;
                self.dst
                    .put_blob_file(&desc.digest, desc.size, blob, self.src.reference())
                    .await?;
                None
            }
            Store::Layout { .. } => Some(blob),
        };
        if layer.reused {
            progress.reused(source_size);
        } else {
            progress.converted(source_size, layer.descriptor.size);
        }
        Ok(JobOutput { layer, pending })
    }

    fn layer_options(&self) -> LayerOptions {
        LayerOptions {
            compression: self.opts.compression,
            chunk_size: self.opts.chunk_size,
            force: self.opts.force,
            threads: self.opts.writer_threads,
            work_dir: self.work_dir.clone(),
            cancel: self.cancel.clone(),
        }
    }
}

fn source_error(what: impl Into<String>) -> impl FnOnce(StoreError) -> ConvertError {
    let what = what.into();
    move |source| ConvertError::Source {
        what,
        source: Box::new(source),
    }
}

fn short(digest: &Digest) -> String {
    digest.to_string().chars().take(19).collect()
}
