//! The rewritten manifest of one image from its finished layer conversions: converted
//! layers with their new descriptors and diff ids, kept layers as OCI media types, the
//! config rewritten to the new diff ids, and the report rows of each layer.

use estargz::Digest;

use super::{Content, ConvertError, JobOutput, LayerPlan, ManifestPlan, NewManifest};
use crate::layer::ConvertedLayer;
use crate::oci::{self, to_oci_media_type, Descriptor};
use crate::report::{LayerReport, ManifestReport};
use crate::rewrite;

/// The rewritten manifest for one plan, from the finished layer conversions.
pub(super) fn build_manifest(
    plan: &ManifestPlan,
    outputs: &[JobOutput],
) -> Result<NewManifest, ConvertError> {
    let platform = plan.source.platform.as_ref().map(ToString::to_string);
    let (config, decisions) = match &plan.content {
        Content::Artifact { bytes } => {
            return Ok(NewManifest {
                descriptor: plan.source.clone(),
                bytes: bytes.clone(),
                config: None,
                report: ManifestReport {
                    platform,
                    source_digest: plan.source.digest,
                    digest: plan.source.digest,
                    layers: Vec::new(),
                },
            })
        }
        Content::Image { config, layers } => (config, layers),
    };
    let mut layers = Vec::with_capacity(decisions.len());
    let mut diff_ids = Vec::with_capacity(decisions.len());
    let mut reports = Vec::with_capacity(decisions.len());
    for (source, decision) in plan.manifest.layers.iter().zip(decisions) {
        let (desc, diff_id, report) = match decision {
            LayerPlan::Convert(job) => converted_layer(source, &outputs[*job].layer),
            LayerPlan::Keep { .. } => kept_layer(source),
        };
        layers.push(desc);
        diff_ids.push(diff_id);
        reports.push(report);
    }
    let config_bytes =
        rewrite::rewrite_config(config, &diff_ids).map_err(|source| ConvertError::Config {
            digest: plan.manifest.config.digest,
            manifest: plan.source.digest,
            source,
        })?;
    let config_desc = rewrite::config_descriptor(&plan.manifest.config, &config_bytes);
    let config_digest = config_desc.digest;
    let manifest = rewrite::rewrite_manifest(&plan.manifest, config_desc, layers);
    let bytes = oci::to_json_bytes(&manifest, "manifest")?;
    let descriptor = rewrite::replace_target(&plan.source, oci::OCI_MANIFEST, &bytes);
    let report = ManifestReport {
        platform,
        source_digest: plan.source.digest,
        digest: descriptor.digest,
        layers: reports,
    };
    Ok(NewManifest {
        descriptor,
        bytes,
        config: Some((config_digest, config_bytes)),
        report,
    })
}

fn converted_layer(
    source: &Descriptor,
    layer: &ConvertedLayer,
) -> (Descriptor, Option<Digest>, LayerReport) {
    let report = LayerReport {
        source_digest: source.digest,
        digest: layer.descriptor.digest,
        toc_digest: Some(layer.toc_digest),
        source_size: source.size,
        size: layer.descriptor.size,
        uncompressed_size: Some(layer.uncompressed_size),
        status: if layer.reused { "reused" } else { "converted" },
    };
    (layer.descriptor.clone(), Some(layer.diff_id), report)
}

fn kept_layer(source: &Descriptor) -> (Descriptor, Option<Digest>, LayerReport) {
    let mut desc = source.clone();
    desc.media_type = to_oci_media_type(&source.media_type).to_owned();
    let report = LayerReport {
        source_digest: source.digest,
        digest: source.digest,
        toc_digest: None,
        source_size: source.size,
        size: source.size,
        uncompressed_size: None,
        status: "kept",
    };
    (desc, None, report)
}
