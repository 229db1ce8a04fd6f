//! Assembles images in memory: gzip layer blobs, config JSON, manifest, multi-platform index.

use std::io::Write as _;

use estargz::Digest;
use serde_json::{json, Value};

/// Which family of media types an image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Oci,
    Docker,
}

impl MediaTypes {
    pub fn manifest(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.manifest.v1+json",
            Self::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    pub fn index(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.index.v1+json",
            Self::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    pub fn config(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.config.v1+json",
            Self::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }

    pub fn gzip_layer(self) -> &'static str {
        match self {
            Self::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
}

/// An image platform (`os`/`architecture`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
}

impl Platform {
    pub fn new(os: &str, architecture: &str) -> Self {
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
        }
    }

    pub fn linux_amd64() -> Self {
        Self::new("linux", "amd64")
    }

    pub fn linux_arm64() -> Self {
        Self::new("linux", "arm64")
    }

    /// `linux/amd64`, the form of `--platform` flags.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.os, self.architecture)
    }
}

/// Errors from building an image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("gzip layer {index}: {source}")]
    Gzip {
        index: usize,
        source: std::io::Error,
    },
    #[error("serialize {what}: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// A content-addressed blob with its media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest: Digest::sha256(&bytes),
            bytes,
        }
    }

    /// The OCI descriptor (`mediaType`, `digest`, `size`).
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }
}

/// One layer: the uncompressed tar and its gzip blob.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    pub tar: Vec<u8>,
    /// sha256 of `tar` (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    pub blob: Blob,
}

/// A single-platform image held in memory.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub media_types: MediaTypes,
    pub platform: Platform,
    pub layers: Vec<BuiltLayer>,
    pub config: Blob,
    pub manifest: Blob,
}

/// A multi-platform image: an index over several [`BuiltImage`]s.
#[derive(Debug, Clone)]
pub struct BuiltIndex {
    pub images: Vec<BuiltImage>,
    pub index: Blob,
}

/// Something that can be written to a layout or pushed: a top manifest plus its blobs.
pub trait Artifact {
    /// The manifest or index a tag points to.
    fn top(&self) -> &Blob;
    /// Manifests below the top one (those of an index), pushed before it.
    fn child_manifests(&self) -> Vec<&Blob>;
    /// Layers and configs.
    fn blobs(&self) -> Vec<&Blob>;
}

impl Artifact for BuiltImage {
    fn top(&self) -> &Blob {
        &self.manifest
    }
    fn child_manifests(&self) -> Vec<&Blob> {
        Vec::new()
    }
    fn blobs(&self) -> Vec<&Blob> {
        let layers = self.layers.iter().map(|l| &l.blob);
        std::iter::once(&self.config).chain(layers).collect()
    }
}

impl Artifact for BuiltIndex {
    fn top(&self) -> &Blob {
        &self.index
    }
    fn child_manifests(&self) -> Vec<&Blob> {
        self.images.iter().map(|i| &i.manifest).collect()
    }
    fn blobs(&self) -> Vec<&Blob> {
        self.images.iter().flat_map(Artifact::blobs).collect()
    }
}

/// Builds a [`BuiltImage`] from layer tars and a few config fields.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    media_types: MediaTypes,
    platform: Platform,
    layers: Vec<LayerInput>,
    cmd: Vec<String>,
    entrypoint: Vec<String>,
    env: Vec<String>,
    gzip_level: u32,
}

/// A layer given to [`ImageBuilder`]: a tar to gzip, or one gzipped already.
#[derive(Debug, Clone)]
enum LayerInput {
    Tar(Vec<u8>),
    Built(BuiltLayer),
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// OCI media types, linux/amd64, `PATH` set, gzip level 6, no layers.
    pub fn new() -> Self {
        Self {
            media_types: MediaTypes::Oci,
            platform: Platform::linux_amd64(),
            layers: Vec::new(),
            cmd: Vec::new(),
            entrypoint: Vec::new(),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            gzip_level: 6,
        }
    }

    pub fn media_types(mut self, media_types: MediaTypes) -> Self {
        self.media_types = media_types;
        self
    }

    pub fn platform(mut self, platform: Platform) -> Self {
        self.platform = platform;
        self
    }

    /// Appends a layer (uncompressed tar bytes), bottom first.
    pub fn layer(mut self, tar: Vec<u8>) -> Self {
        self.layers.push(LayerInput::Tar(tar));
        self
    }

    /// Appends a layer gzipped earlier by [`ImageBuilder::prebuild`], so that images sharing
    /// a big layer compress it once.
    pub fn built_layer(mut self, layer: BuiltLayer) -> Self {
        self.layers.push(LayerInput::Built(layer));
        self
    }

    /// Gzips `tar` as [`ImageBuilder::build`] would with this builder's settings.
    pub fn prebuild(&self, tar: Vec<u8>) -> Result<BuiltLayer, BuildError> {
        self.build_layer(0, tar)
    }

    pub fn cmd(mut self, cmd: &[&str]) -> Self {
        self.cmd = cmd.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn entrypoint(mut self, entrypoint: &[&str]) -> Self {
        self.entrypoint = entrypoint.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn env(mut self, var: &str) -> Self {
        self.env.push(var.to_owned());
        self
    }

    /// gzip level of the layer blobs (0..=9).
    pub fn gzip_level(mut self, level: u32) -> Self {
        self.gzip_level = level.min(9);
        self
    }

    pub fn build(mut self) -> Result<BuiltImage, BuildError> {
        let layers = std::mem::take(&mut self.layers)
            .into_iter()
            .enumerate()
            .map(|(index, input)| match input {
                LayerInput::Tar(tar) => self.build_layer(index, tar),
                LayerInput::Built(layer) => Ok(layer),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = Blob::new(self.media_types.config(), self.config_json(&layers)?);
        let manifest = Blob::new(
            self.media_types.manifest(),
            manifest_json(self.media_types, &config, &layers)?,
        );
        Ok(BuiltImage {
            media_types: self.media_types,
            platform: self.platform,
            layers,
            config,
            manifest,
        })
    }

    fn build_layer(&self, index: usize, tar: Vec<u8>) -> Result<BuiltLayer, BuildError> {
        let gzip_error = |source| BuildError::Gzip { index, source };
        let mut encoder =
            flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(self.gzip_level));
        encoder.write_all(&tar).map_err(gzip_error)?;
        let gz = encoder.finish().map_err(gzip_error)?;
        Ok(BuiltLayer {
            diff_id: Digest::sha256(&tar),
            tar,
            blob: Blob::new(self.media_types.gzip_layer(), gz),
        })
    }

    fn config_json(&self, layers: &[BuiltLayer]) -> Result<Vec<u8>, BuildError> {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let mut config = json!({ "Env": self.env });
        if !self.cmd.is_empty() {
            config["Cmd"] = json!(self.cmd);
        }
        if !self.entrypoint.is_empty() {
            config["Entrypoint"] = json!(self.entrypoint);
        }
        let value = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layers.iter().map(|_| json!({"created_by": "testkit"})).collect::<Vec<_>>(),
        });
        to_json("image config", &value)
    }
}

fn manifest_json(
    media_types: MediaTypes,
    config: &Blob,
    layers: &[BuiltLayer],
) -> Result<Vec<u8>, BuildError> {
    let value = json!({
        "schemaVersion": 2,
        "mediaType": media_types.manifest(),
        "config": config.descriptor(),
        "layers": layers.iter().map(|l| l.blob.descriptor()).collect::<Vec<_>>(),
    });
    to_json("manifest", &value)
}

fn to_json(what: &'static str, value: &Value) -> Result<Vec<u8>, BuildError> {
    serde_json::to_vec(value).map_err(|source| BuildError::Json { what, source })
}

/// An index over `images`, each entry carrying its platform; media types of the first image.
pub fn build_index(images: Vec<BuiltImage>) -> Result<BuiltIndex, BuildError> {
    let media_types = images.first().map_or(MediaTypes::Oci, |i| i.media_types);
    let entries: Vec<(&Blob, &Platform)> =
        images.iter().map(|i| (&i.manifest, &i.platform)).collect();
    let index = index_blob(media_types, &entries)?;
    Ok(BuiltIndex { images, index })
}

/// The index over manifests given as (manifest, platform), in that order; platforms may
/// repeat (a bundle of images for one platform, as a converter input).
pub fn index_blob(
    media_types: MediaTypes,
    manifests: &[(&Blob, &Platform)],
) -> Result<Blob, BuildError> {
    let manifests: Vec<Value> = manifests
        .iter()
        .map(|(manifest, platform)| {
            let mut descriptor = manifest.descriptor();
            descriptor["platform"] = json!({
                "os": platform.os,
                "architecture": platform.architecture,
            });
            descriptor
        })
        .collect();
    let value = json!({
        "schemaVersion": 2,
        "mediaType": media_types.index(),
        "manifests": manifests,
    });
    Ok(Blob::new(media_types.index(), to_json("index", &value)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layer::{data_layer, DataFile};

    fn small_image(media_types: MediaTypes, platform: Platform) -> BuiltImage {
        ImageBuilder::new()
            .media_types(media_types)
            .platform(platform)
            .layer(data_layer(&[DataFile::new("a", 100, 50)], 1).unwrap())
            .layer(data_layer(&[DataFile::new("b", 200, 50)], 2).unwrap())
            .cmd(&["/bin/sh"])
            .build()
            .unwrap()
    }

    #[test]
    fn manifest_and_config_agree_with_layers() {
        for (name, media) in [("oci", MediaTypes::Oci), ("docker", MediaTypes::Docker)] {
            let image = small_image(media, Platform::linux_amd64());
            let manifest: Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
            let config: Value = serde_json::from_slice(&image.config.bytes).unwrap();
            assert_eq!(manifest["mediaType"], media.manifest(), "{name}");
            assert_eq!(
                manifest["config"]["digest"],
                image.config.digest.to_string()
            );
            for (i, layer) in image.layers.iter().enumerate() {
                assert_eq!(
                    manifest["layers"][i]["digest"],
                    layer.blob.digest.to_string()
                );
                assert_eq!(manifest["layers"][i]["mediaType"], media.gzip_layer());
                assert_eq!(config["rootfs"]["diff_ids"][i], layer.diff_id.to_string());
            }
            assert_eq!(config["architecture"], "amd64", "{name}");
            assert_eq!(config["config"]["Cmd"][0], "/bin/sh", "{name}");
        }
    }

    #[test]
    fn gzip_blob_decompresses_to_tar() {
        use std::io::Read as _;
        let image = small_image(MediaTypes::Oci, Platform::linux_amd64());
        let layer = &image.layers[0];
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&layer.blob.bytes[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, layer.tar);
    }

    #[test]
    fn index_lists_each_platform() {
        let index = build_index(vec![
            small_image(MediaTypes::Oci, Platform::linux_amd64()),
            small_image(MediaTypes::Oci, Platform::linux_arm64()),
        ])
        .unwrap();
        let value: Value = serde_json::from_slice(&index.index.bytes).unwrap();
        assert_eq!(value["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(value["manifests"][1]["platform"]["architecture"], "arm64");
        assert_eq!(index.child_manifests().len(), 2);
        assert_eq!(index.blobs().len(), 6);
    }
}
