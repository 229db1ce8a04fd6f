//! Pure document rewrites: config `rootfs.diff_ids`, manifest layers and config, index
//! entries. Everything not named here is carried over unchanged.

use estargz::Digest;
use serde_json::Value;

use crate::oci::{Descriptor, Index, Manifest, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

/// Errors from rewriting an image config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("parse image config: {0}")]
    Parse(#[source] serde_json::Error),
    #[error("image config has no rootfs.diff_ids array")]
    NoDiffIds,
    #[error("image config lists {diff_ids} diff_ids but the manifest has {layers} layers")]
    CountMismatch { diff_ids: usize, layers: usize },
}

/// Replaces `rootfs.diff_ids[i]` with `diff_ids[i]` where it is `Some`; every other
/// field of the config JSON is kept as it was.
pub fn rewrite_config(bytes: &[u8], diff_ids: &[Option<Digest>]) -> Result<Vec<u8>, ConfigError> {
    let mut config: Value = serde_json::from_slice(bytes).map_err(ConfigError::Parse)?;
    let current = config
        .get_mut("rootfs")
        .and_then(|rootfs| rootfs.get_mut("diff_ids"))
        .and_then(Value::as_array_mut)
        .ok_or(ConfigError::NoDiffIds)?;
    if current.len() != diff_ids.len() {
        return Err(ConfigError::CountMismatch {
            diff_ids: current.len(),
            layers: diff_ids.len(),
        });
    }
    for (slot, new) in current.iter_mut().zip(diff_ids) {
        if let Some(diff_id) = new {
            *slot = Value::String(diff_id.to_string());
        }
    }
    serde_json::to_vec(&config).map_err(ConfigError::Parse)
}

/// A descriptor for rewritten content: new type, digest and size, while platform,
/// annotations and extension fields stay; embedded `data` of the old content goes.
pub fn replace_target(source: &Descriptor, media_type: &str, bytes: &[u8]) -> Descriptor {
    let mut desc = source.clone();
    desc.media_type = media_type.to_owned();
    desc.digest = Digest::sha256(bytes);
    desc.size = bytes.len() as u64;
    desc.extra.remove("data");
    desc
}

/// The new manifest (OCI media type) with the converted config and layers.
pub fn rewrite_manifest(
    source: &Manifest,
    config: Descriptor,
    layers: Vec<Descriptor>,
) -> Manifest {
    Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_owned()),
        config,
        layers,
        annotations: source.annotations.clone(),
        extra: source.extra.clone(),
    }
}

/// The new config descriptor for rewritten config bytes.
pub fn config_descriptor(source: &Descriptor, bytes: &[u8]) -> Descriptor {
    replace_target(source, OCI_CONFIG, bytes)
}

/// The new index (OCI media type) with the converted entries.
pub fn rewrite_index(source: &Index, manifests: Vec<Descriptor>) -> Index {
    Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_owned()),
        manifests,
        annotations: source.annotations.clone(),
        extra: source.extra.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::DOCKER_CONFIG;

    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","created":"2024-01-01T00:00:00Z",
        "config":{"Env":["PATH=/bin"],"Cmd":["sh"]},
        "rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111",
                                              "sha256:2222222222222222222222222222222222222222222222222222222222222222"]},
        "history":[{"created_by":"a"},{"created_by":"b","empty_layer":false}],
        "x-unknown":{"nested":[1,2.5,null]}}"#;

    #[test]
    fn config_rewrite_changes_only_diff_ids() {
        let new = Digest::sha256(b"layer 2");
        let out = rewrite_config(CONFIG.as_bytes(), &[None, Some(new)]).unwrap();
        let mut before: Value = serde_json::from_str(CONFIG).unwrap();
        let after: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(after["rootfs"]["diff_ids"][1], new.to_string());
        assert_eq!(
            after["rootfs"]["diff_ids"][0],
            before["rootfs"]["diff_ids"][0]
        );
        before["rootfs"]["diff_ids"][1] = Value::String(new.to_string());
        assert_eq!(after, before, "nothing else changed");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(r#"{"architecture":"amd64","os":"linux""#),
            "key order kept: {text}"
        );
    }

    #[test]
    fn config_rewrite_rejects_table() {
        let cases: [(&str, &str, usize); 3] = [
            ("not json", "{", 0),
            ("no rootfs", r#"{"os":"linux"}"#, 0),
            ("count mismatch", CONFIG, 3),
        ];
        for (name, config, layers) in cases {
            let diff_ids = vec![None; layers];
            assert!(
                rewrite_config(config.as_bytes(), &diff_ids).is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn replaced_descriptor_keeps_annotations_and_platform() {
        let mut source = Descriptor::new(DOCKER_CONFIG, Digest::sha256(b"old"), 3);
        source.set_annotation("k", "v");
        source
            .extra
            .insert("data".into(), Value::String("b2xk".into()));
        source
            .extra
            .insert("artifactType".into(), Value::String("t".into()));
        let desc = config_descriptor(&source, b"new config");
        assert_eq!(desc.media_type, OCI_CONFIG);
        assert_eq!(desc.digest, Digest::sha256(b"new config"));
        assert_eq!(desc.size, 10);
        assert_eq!(desc.annotation("k"), Some("v"));
        assert!(!desc.extra.contains_key("data"));
        assert!(desc.extra.contains_key("artifactType"));
    }
}
