//! Recording which files a workload opens at start, per image, so that
//! `estargz-convert --record-from` can put exactly those files first in an optimized image.
//!
//! With `[record] enable = true`, each lazily mounted layer appends, for every regular
//! file first opened within `window` after the mount, one JSON line
//! `{"path", "manifestDigest", "layerIndex"}` (ctr-remote's record format) to
//! `<dir>/<manifest digest hex>.jsonl`. The manifest and the layer's index in it are
//! looked up in the registry at mount time.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use estargz::{Digest, EntryId, Index};
use serde::Deserialize;

use crate::lazy::source::BlobLocation;
use crate::snapshot::Labels;

/// CRI plugin / nerdctl: the digest of the image manifest the layer belongs to.
pub const CRI_MANIFEST_DIGEST_LABEL: &str = "containerd.io/snapshot/cri.manifest-digest";
/// Children of an image index looked at to find the layer's manifest.
const MAX_INDEX_CHILDREN: usize = 32;

/// Access recording settings (the `[record]` table of the daemon config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct RecordConfig {
    /// Record the files each image opens after its layers are mounted. Default false.
    pub enable: bool,
    /// Directory of the record files; unset means `<root>/record`.
    pub dir: Option<PathBuf>,
    /// How long after a layer's mount opened files are recorded, in seconds (fractions
    /// allowed). Default 60.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub window: Duration,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            enable: false,
            dir: None,
            window: Duration::from_secs(60),
        }
    }
}

/// Why a layer's place in its image could not be found.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("fetch manifest {reference}: {source}")]
    Manifest {
        reference: String,
        source: registry::Error,
    },
    #[error("manifest {digest} is not JSON: {source}")]
    Json {
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("layer {layer} is in none of the manifests of {reference}")]
    NotFound { layer: Digest, reference: String },
    #[error("label {CRI_MANIFEST_DIGEST_LABEL}: {0}")]
    BadLabel(estargz::DigestError),
}

/// Where a layer sits in the image being run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerPlace {
    pub manifest: Digest,
    pub layer_index: usize,
}

/// Finds the manifest holding `location`'s layer (the CRI manifest-digest label when
/// present, else the image reference, looking into an index's children) and the layer's
/// index in it.
pub async fn locate(
    client: &registry::Client,
    location: &BlobLocation,
    labels: &Labels,
) -> Result<LayerPlace, RecordError> {
    let reference = match labels.get(CRI_MANIFEST_DIGEST_LABEL) {
        Some(value) => {
            let digest = value.parse().map_err(RecordError::BadLabel)?;
            location.reference.with_digest(digest)
        }
        None => location.reference.clone(),
    };
    let (digest, json) = fetch_json(client, &reference).await?;
    if let Some(layer_index) = layer_index(&json, &location.digest) {
        return Ok(LayerPlace {
            manifest: digest,
            layer_index,
        });
    }
    let children = json["manifests"].as_array().cloned().unwrap_or_default();
    for child in children.iter().take(MAX_INDEX_CHILDREN) {
        let Some(child) = child["digest"].as_str().and_then(|d| d.parse().ok()) else {
            continue;
        };
        let (digest, json) = fetch_json(client, &reference.with_digest(child)).await?;
        if let Some(layer_index) = layer_index(&json, &location.digest) {
            return Ok(LayerPlace {
                manifest: digest,
                layer_index,
            });
        }
    }
    Err(RecordError::NotFound {
        layer: location.digest,
        reference: reference.to_string(),
    })
}

async fn fetch_json(
    client: &registry::Client,
    reference: &registry::Reference,
) -> Result<(Digest, serde_json::Value), RecordError> {
    let manifest =
        client
            .get_manifest(reference)
            .await
            .map_err(|source| RecordError::Manifest {
                reference: reference.to_string(),
                source,
            })?;
    let json = serde_json::from_slice(&manifest.bytes).map_err(|source| RecordError::Json {
        digest: manifest.digest,
        source,
    })?;
    Ok((manifest.digest, json))
}

fn layer_index(manifest: &serde_json::Value, layer: &Digest) -> Option<usize> {
    let wanted = layer.to_string();
    manifest["layers"]
        .as_array()?
        .iter()
        .position(|l| l["digest"].as_str() == Some(wanted.as_str()))
}

/// Records the files of one mounted layer opened within the window.
pub struct Recorder {
    path: PathBuf,
    place: LayerPlace,
    until: Instant,
    seen: Mutex<HashSet<EntryId>>,
}

impl Recorder {
    /// Records into `<dir>/<manifest hex>.jsonl` until `window` from now.
    pub fn new(dir: &std::path::Path, place: LayerPlace, window: Duration) -> Recorder {
        Recorder {
            path: dir.join(format!("{}.jsonl", place.manifest.hex())),
            place,
            until: Instant::now() + window,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Notes that `file` was opened; the first open of each file in the window is written.
    pub fn opened(&self, index: &Index, file: EntryId) {
        if Instant::now() > self.until {
            return;
        }
        let first = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(file);
        let Some(entry) = index.entry(file).filter(|_| first) else {
            return;
        };
        let line = serde_json::json!({
            "path": entry.path,
            "manifestDigest": self.place.manifest.to_string(),
            "layerIndex": self.place.layer_index,
        });
        if let Err(error) = self.append(&format!("{line}\n")) {
            tracing::warn!(path = %self.path.display(), %error, "record opened file");
        }
    }

    fn append(&self, line: &str) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            crate::private_fs::create_dir_all(dir)?;
        }
        let mut file = crate::private_fs::append_file(&self.path)?;
        // One write per line: concurrent layers of an image never interleave a line.
        file.write_all(line.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_layer_index() {
        let d = |n: u8| Digest::from_bytes([n; 32]);
        let manifest = serde_json::json!({
            "layers": [{"digest": d(1).to_string()}, {"digest": d(2).to_string()}]
        });
        let cases = [
            ("first", d(1), Some(0)),
            ("second", d(2), Some(1)),
            ("absent", d(3), None),
        ];
        for (name, layer, want) in cases {
            assert_eq!(layer_index(&manifest, &layer), want, "{name}");
        }
        assert_eq!(
            layer_index(&serde_json::json!({"manifests": []}), &d(1)),
            None
        );
    }

    #[test]
    fn records_first_opens_within_the_window_as_ctr_remote_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = estargz::testutil::TarBuilder::new()
            .file("bin/sh", b"#!")
            .file("etc/hosts", b"localhost")
            .finish();
        let mut blob = Vec::new();
        estargz::build(&tar[..], &mut blob, &estargz::WriterOptions::default()).expect("build");
        let reader = estargz::Reader::open(blob.as_slice(), None).expect("open");
        let index = reader.index();
        let place = LayerPlace {
            manifest: Digest::sha256(b"manifest"),
            layer_index: 2,
        };
        let recorder = Recorder::new(dir.path(), place, Duration::from_secs(60));
        let sh = index.lookup("bin/sh").expect("sh");
        let hosts = index.lookup("etc/hosts").expect("hosts");
        for file in [sh, hosts, sh] {
            recorder.opened(index, file);
        }
        let text =
            std::fs::read_to_string(dir.path().join(format!("{}.jsonl", place.manifest.hex())))
                .expect("record file");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["path"], "bin/sh");
        assert_eq!(lines[1]["path"], "etc/hosts");
        assert_eq!(lines[1]["manifestDigest"], place.manifest.to_string());
        assert_eq!(lines[1]["layerIndex"], 2);

        let closed = Recorder::new(dir.path(), place, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        closed.opened(index, hosts);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(format!("{}.jsonl", place.manifest.hex())))
                .expect("record file")
                .lines()
                .count(),
            2,
            "nothing after the window"
        );
    }
}
