//! Publishing a converted image at the destination, in the order that never shows a
//! reader a dangling reference: blobs first, then child manifests by digest, the tagged
//! top document (index or manifest) last.

use estargz::Digest;

use super::{
    source_error, Content, ConvertError, Converter, JobOutput, LayerPlan, ManifestPlan, NewManifest,
};
use crate::oci::{self, kind_of, Descriptor, Index, Kind};
use crate::rewrite;
use crate::store::StoreError;

impl Converter<'_> {
    /// Stores every blob the new manifests need that the destination lacks.
    pub(super) async fn publish_blobs(
        &self,
        plans: &[ManifestPlan],
        outputs: &mut [JobOutput],
    ) -> Result<(), ConvertError> {
        for output in outputs.iter_mut() {
            if let Some(blob) = output.pending.take() {
                let desc = &output.layer.descriptor;
                self.dst
                    .put_blob_file(&desc.digest, desc.size, blob, self.src.reference())
                    .await
                    .map_err(destination_error(format!("layer blob {}", desc.digest)))?;
            }
        }
        for plan in plans {
            match &plan.content {
                Content::Image { layers, .. } => {
                    for (desc, decision) in plan.manifest.layers.iter().zip(layers) {
                        if let LayerPlan::Keep { copy: true } = decision {
                            self.copy_blob(desc).await?;
                        }
                    }
                }
                Content::Artifact { .. } => {
                    self.copy_blob(&plan.manifest.config).await?;
                    for desc in &plan.manifest.layers {
                        if kind_of(&desc.media_type) != Kind::ForeignLayer {
                            self.copy_blob(desc).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies an unchanged blob from the source to the destination when missing there.
    pub(super) async fn copy_blob(&self, desc: &Descriptor) -> Result<(), ConvertError> {
        let destination = || destination_error(format!("blob {}", desc.digest));
        if self
            .dst
            .has_blob(&desc.digest)
            .await
            .map_err(destination())?
        {
            return Ok(());
        }
        let blob = self
            .src
            .fetch_blob(desc, &self.work_dir, |_| {})
            .await
            .map_err(source_error(format!("blob {}", desc.digest)))?;
        self.dst
            .put_blob_file(&desc.digest, desc.size, blob, self.src.reference())
            .await
            .map_err(destination())
    }

    /// Stores configs, then child manifests, then the tagged top document.
    pub(super) async fn publish_documents(
        &self,
        manifests: &[NewManifest],
        index: Option<&Index>,
    ) -> Result<Descriptor, ConvertError> {
        for manifest in manifests {
            if let Some((digest, bytes)) = &manifest.config {
                self.dst
                    .put_blob_bytes(digest, bytes.clone())
                    .await
                    .map_err(destination_error(format!("config {digest}")))?;
            }
        }
        let (top, bytes) = match index {
            None => {
                let only = manifests.first().ok_or(ConvertError::NothingToPublish)?;
                (only.descriptor.clone(), only.bytes.clone())
            }
            Some(index) => {
                for manifest in manifests {
                    self.dst
                        .put_manifest(&manifest.descriptor, &manifest.bytes)
                        .await
                        .map_err(destination_error(format!(
                            "manifest {}",
                            manifest.descriptor.digest
                        )))?;
                }
                let entries = manifests.iter().map(|m| m.descriptor.clone()).collect();
                let new_index = rewrite::rewrite_index(index, entries);
                let bytes = oci::to_json_bytes(&new_index, "index")?;
                let desc =
                    Descriptor::new(oci::OCI_INDEX, Digest::sha256(&bytes), bytes.len() as u64);
                (desc, bytes)
            }
        };
        self.dst
            .put_tagged(&top, &bytes)
            .await
            .map_err(destination_error(format!("image {}", top.digest)))?;
        Ok(top)
    }
}

fn destination_error(what: impl Into<String>) -> impl FnOnce(StoreError) -> ConvertError {
    let what = what.into();
    move |source| ConvertError::Destination {
        what,
        source: Box::new(source),
    }
}
