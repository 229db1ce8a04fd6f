//! SOCI indexes for the integration tests: `estargz-convert index` through the library,
//! hand-made indexes pushed to the test registry, and reading the registry's access log.
#![allow(dead_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use estargz_convert::client::{build_client, TransportOptions};
use estargz_convert::index::{index_image, IndexOptions};
use estargz_convert::location::Location;
use estargz_convert::platform::PlatformFilter;
use estargz_convert::progress::{Mode, Progress};
use estargz_convert::store::Store;
use testkit::BuiltImage;

/// `estargz-convert index --min-layer-size 0 REFERENCE` through the library.
pub fn index(reference: &str) -> serde_json::Value {
    index_with(reference, None)
}

/// As [`index`], with `--record-from RECORD` when given.
pub fn index_with(reference: &str, record: Option<&std::path::Path>) -> serde_json::Value {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let work = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let location: Location = reference.parse().unwrap();
        let Location::Registry(r) = &location else {
            panic!("registry reference expected");
        };
        let transport = TransportOptions {
            plain_http: true,
            ..TransportOptions::default()
        };
        let client = build_client(&transport, &[r]).await.unwrap();
        let store = Store::source(&location, &client).unwrap();
        let options = IndexOptions {
            build: estargz::soci::BuildOptions::default(),
            min_layer_size: 0,
            platforms: PlatformFilter::default(),
            layer_jobs: 2,
            record: record.map(|path| {
                let files = estargz_convert::record::record_files(path).unwrap();
                estargz_convert::record::Prioritized::load(None, &files).unwrap()
            }),
        };
        let progress = Progress::new(Mode::Log);
        let cancel = Arc::new(AtomicBool::new(false));
        let report = index_image(
            &store,
            reference.to_owned(),
            &options,
            &progress,
            work.path(),
            cancel,
        )
        .await
        .unwrap();
        serde_json::to_value(&report).unwrap()
    })
}

/// Bytes the registry served for blob GETs of `digests`, from its access log.
pub fn served(log: &str, digests: &[String]) -> u64 {
    log.lines()
        .filter(|line| line.contains("\"GET /v2/"))
        .filter(|line| digests.iter().any(|d| line.contains(d.as_str())))
        .filter_map(|line| {
            let after = line.split("HTTP/1.1\" ").nth(1)?;
            let mut fields = after.split_whitespace();
            fields.next()?;
            fields.next()?.parse::<u64>().ok()
        })
        .sum()
}

/// A hand-made SOCI index (v1, tag schema) for `image` in `repo` with the given zTOC per
/// layer (None: layer not listed), without span blocks.
pub fn push_soci_index(
    registry: &testkit::Registry,
    repo: &str,
    image: &BuiltImage,
    ztocs: &[Option<Vec<u8>>],
) {
    push_soci_index_with_blocks(registry, repo, image, ztocs, &[]);
}

/// As [`push_soci_index`], with the span blocks blob of each layer given in `blocks`.
pub fn push_soci_index_with_blocks(
    registry: &testkit::Registry,
    repo: &str,
    image: &BuiltImage,
    ztocs: &[Option<Vec<u8>>],
    blocks: &[Option<Vec<u8>>],
) {
    let beside: Vec<_> = (blocks.iter().enumerate())
        .filter_map(|(i, b)| Some((estargz::soci::BLOCKS_MEDIA_TYPE, i, b.clone()?)))
        .collect();
    push_soci_index_with(registry, repo, image, ztocs, &beside);
}

/// As [`push_soci_index`], with blobs of ours beside the zTOCs: (media type, layer index,
/// bytes) each.
pub fn push_soci_index_with(
    registry: &testkit::Registry,
    repo: &str,
    image: &BuiltImage,
    ztocs: &[Option<Vec<u8>>],
    beside: &[(&str, usize, Vec<u8>)],
) {
    use serde_json::json;
    let manifest = &image.manifest;
    let subject = json!({
        "mediaType": manifest.media_type,
        "digest": manifest.digest.to_string(),
        "size": manifest.bytes.len(),
    });
    let (soci, soci_digest) =
        push_index_manifest(registry, repo, image, ztocs, beside, Some(subject));
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    let referrers = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": oci_manifest,
            "digest": soci_digest.to_string(),
            "size": soci.len(),
            "artifactType": estargz::soci::media::SOCI_INDEX_V1,
        }],
    });
    let tag = format!("sha256-{}", manifest.digest.hex());
    let referrers = serde_json::to_vec(&referrers).unwrap();
    let index_type = "application/vnd.oci.image.index.v1+json";
    (registry.client())
        .push_manifest(repo, &tag, index_type, &referrers)
        .unwrap();
}

/// A hand-made SOCI v2 index for `image` in `repo` (as soci 0.10 and later build them): no
/// subject; the image manifest, rewritten to name the index in its
/// `com.amazon.soci.index-digest` annotation, is pushed under `tag` (a new image digest).
pub fn push_soci_index_v2(
    registry: &testkit::Registry,
    repo: &str,
    image: &BuiltImage,
    ztocs: &[Option<Vec<u8>>],
    tag: &str,
) {
    let (_, soci_digest) = push_index_manifest(registry, repo, image, ztocs, &[], None);
    let mut rewritten: serde_json::Value = serde_json::from_slice(&image.manifest.bytes).unwrap();
    rewritten["annotations"][estargz::soci::media::IMAGE_INDEX_DIGEST] =
        soci_digest.to_string().into();
    let bytes = serde_json::to_vec(&rewritten).unwrap();
    (registry.client())
        .push_manifest(repo, tag, &image.manifest.media_type, &bytes)
        .unwrap();
}

/// Pushes the zTOCs, the blobs `beside` them and the SOCI index manifest naming them: v1
/// with `subject`, else v2. Returns the index manifest and its digest.
fn push_index_manifest(
    registry: &testkit::Registry,
    repo: &str,
    image: &BuiltImage,
    ztocs: &[Option<Vec<u8>>],
    beside: &[(&str, usize, Vec<u8>)],
    subject: Option<serde_json::Value>,
) -> (Vec<u8>, estargz::Digest) {
    use estargz::soci::media::{SOCI_INDEX_V1, SOCI_INDEX_V2};
    use estargz::Digest;
    use serde_json::json;
    let client = registry.client();
    let config = b"{}".to_vec();
    client
        .push_blob(repo, &Digest::sha256(&config), &config)
        .unwrap();
    let mut layers = Vec::new();
    for (layer, ztoc) in image.layers.iter().zip(ztocs) {
        let Some(ztoc) = ztoc else { continue };
        let digest = Digest::sha256(ztoc);
        client.push_blob(repo, &digest, ztoc).unwrap();
        layers.push(json!({
            "mediaType": "application/octet-stream",
            "digest": digest.to_string(),
            "size": ztoc.len(),
            "annotations": {
                "com.amazon.soci.image-layer-digest": layer.blob.digest.to_string(),
                "com.amazon.soci.image-layer-mediaType": layer.blob.media_type,
                "com.amazon.soci.span-size": "4194304",
            }
        }));
    }
    for (media_type, i, bytes) in beside {
        let layer = &image.layers[*i];
        let digest = Digest::sha256(bytes);
        client.push_blob(repo, &digest, bytes).unwrap();
        layers.push(json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": bytes.len(),
            "annotations": {
                "com.amazon.soci.image-layer-digest": layer.blob.digest.to_string(),
            }
        }));
    }
    let config_type = if subject.is_some() {
        SOCI_INDEX_V1
    } else {
        SOCI_INDEX_V2
    };
    let mut soci = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": config_type,
            "digest": Digest::sha256(&config).to_string(),
            "size": 2,
        },
        "layers": layers,
    });
    if let Some(subject) = subject {
        soci["subject"] = subject;
    }
    let soci = serde_json::to_vec(&soci).unwrap();
    let soci_digest = Digest::sha256(&soci);
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    client
        .push_manifest(repo, &soci_digest.to_string(), oci_manifest, &soci)
        .unwrap();
    (soci, soci_digest)
}

pub fn ztoc_of(blob: &[u8]) -> estargz::soci::Ztoc {
    let options = estargz::soci::BuildOptions::default();
    estargz::soci::build_ztoc(blob, estargz::soci::Compression::Gzip, &options).unwrap()
}

/// The number after `key` (e.g. `" ranges="`) in a log line without colors.
pub fn log_field(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// A log line without its ANSI color sequences.
pub fn without_colors(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip up to and including the final letter of the sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
