//! OCI image layout directories: write an image under a tag, read manifests and blobs back.

use std::path::{Path, PathBuf};

use estargz::Digest;
use serde_json::{json, Value};

use super::build::{Artifact, Blob};

/// The annotation naming a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Errors from reading or writing a layout.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("layout {dir} has no tag {tag:?}")]
    NoSuchTag { dir: PathBuf, tag: String },
    #[error("layout {dir}: index entry for {tag:?} has a bad descriptor")]
    BadDescriptor { dir: PathBuf, tag: String },
}

/// Writes `artifact` into the layout at `dir` under `tag`, keeping other tags there.
pub fn write_layout(dir: &Path, tag: &str, artifact: &impl Artifact) -> Result<(), LayoutError> {
    let blobs_dir = dir.join("blobs").join("sha256");
    create_dir(&blobs_dir)?;
    let all = artifact
        .blobs()
        .into_iter()
        .chain(artifact.child_manifests())
        .chain(std::iter::once(artifact.top()));
    for blob in all {
        write(&blobs_dir.join(blob.digest.hex()), &blob.bytes)?;
    }
    write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index_path = dir.join("index.json");
    let mut index = if index_path.exists() {
        read_json(&index_path)?
    } else {
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
    };
    set_tag(&mut index, tag, artifact.top());
    let bytes = serde_json::to_vec_pretty(&index).map_err(|source| LayoutError::Json {
        path: index_path.clone(),
        source,
    })?;
    write(&index_path, &bytes)
}

/// Points `tag` at `top` in an `index.json` value, replacing an older entry of that tag.
fn set_tag(index: &mut Value, tag: &str, top: &Blob) {
    let mut descriptor = top.descriptor();
    descriptor["annotations"] = json!({ REF_NAME: tag });
    if !index["manifests"].is_array() {
        index["manifests"] = json!([]);
    }
    if let Some(list) = index["manifests"].as_array_mut() {
        list.retain(|m| m["annotations"][REF_NAME] != tag);
        list.push(descriptor);
    }
}

/// Reads an OCI layout directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

impl Layout {
    pub fn open(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The manifest or index `tag` points to, as `(media type, digest, bytes)`.
    pub fn resolve(&self, tag: &str) -> Result<Blob, LayoutError> {
        let index = read_json(&self.dir.join("index.json"))?;
        let no_tag = || LayoutError::NoSuchTag {
            dir: self.dir.clone(),
            tag: tag.to_owned(),
        };
        let entry = index["manifests"]
            .as_array()
            .and_then(|list| list.iter().find(|m| m["annotations"][REF_NAME] == tag))
            .ok_or_else(no_tag)?;
        let bad = || LayoutError::BadDescriptor {
            dir: self.dir.clone(),
            tag: tag.to_owned(),
        };
        let digest: Digest = entry["digest"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .ok_or_else(bad)?;
        let media_type = entry["mediaType"].as_str().ok_or_else(bad)?;
        Ok(Blob {
            media_type: media_type.to_owned(),
            digest,
            bytes: self.blob(&digest)?,
        })
    }

    /// The bytes of blob `digest`.
    pub fn blob(&self, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
        let path = self.dir.join("blobs").join("sha256").join(digest.hex());
        std::fs::read(&path).map_err(|source| LayoutError::Io {
            action: "read",
            path,
            source,
        })
    }
}

fn create_dir(path: &Path) -> Result<(), LayoutError> {
    std::fs::create_dir_all(path).map_err(|source| LayoutError::Io {
        action: "create",
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    std::fs::write(path, bytes).map_err(|source| LayoutError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn read_json(path: &Path) -> Result<Value, LayoutError> {
    let bytes = std::fs::read(path).map_err(|source| LayoutError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::build::{build_index, ImageBuilder, Platform};
    use crate::image::layer::{data_layer, DataFile};

    fn image(seed: u64, platform: Platform) -> crate::image::build::BuiltImage {
        ImageBuilder::new()
            .platform(platform)
            .layer(data_layer(&[DataFile::new("f", 1000, 50)], seed).unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn round_trips_tags_and_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let one = image(1, Platform::linux_amd64());
        let two = image(2, Platform::linux_amd64());
        write_layout(dir.path(), "v1", &one).unwrap();
        write_layout(dir.path(), "v2", &two).unwrap();
        write_layout(dir.path(), "v1", &two).unwrap();
        let layout = Layout::open(dir.path());
        assert_eq!(layout.resolve("v1").unwrap().digest, two.manifest.digest);
        assert_eq!(layout.resolve("v2").unwrap(), two.manifest);
        let layer = &one.layers[0].blob;
        assert_eq!(layout.blob(&layer.digest).unwrap(), layer.bytes);
        assert!(matches!(
            layout.resolve("v3"),
            Err(LayoutError::NoSuchTag { .. })
        ));
        let index: Value = read_json(&dir.path().join("index.json")).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn index_artifact_writes_children() {
        let dir = tempfile::tempdir().unwrap();
        let index = build_index(vec![
            image(1, Platform::linux_amd64()),
            image(2, Platform::linux_arm64()),
        ])
        .unwrap();
        write_layout(dir.path(), "multi", &index).unwrap();
        let layout = Layout::open(dir.path());
        assert_eq!(layout.resolve("multi").unwrap(), index.index);
        for child in &index.images {
            assert_eq!(
                layout.blob(&child.manifest.digest).unwrap(),
                child.manifest.bytes
            );
        }
    }
}
