//! The client against a real docker-registry (distribution v2): push, pull, HEAD, ranges,
//! mounts, corruption detection, and basic auth with a docker config file.

mod common;

use std::path::Path;

use common::{plain_config, test_bytes};
use registry::{Client, ClientConfig, Credentials, Digest, Error, Reference};
use testkit::{Prereq, Registry, RegistryOptions};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const REGISTRY: Prereq = Prereq::Binary(testkit::registry::REGISTRY_BIN);

fn client_for(registry: &Registry) -> Client {
    let config = ClientConfig {
        plain_http: vec![registry.host()],
        ..plain_config()
    };
    Client::with_credentials(config, Credentials::new()).unwrap()
}

fn reference(registry: &Registry, rest: &str) -> Reference {
    format!("{}/{rest}", registry.host()).parse().unwrap()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// An OCI manifest naming one config and one layer.
fn manifest_json(config: &[u8], layer: &[u8]) -> Vec<u8> {
    let descriptor = |media_type: &str, bytes: &[u8]| {
        serde_json::json!({
            "mediaType": media_type,
            "digest": Digest::sha256(bytes).to_string(),
            "size": bytes.len(),
        })
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.oci.image.config.v1+json", config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
    });
    serde_json::to_vec(&manifest).unwrap()
}

/// The registry's file holding a blob's bytes.
fn stored_blob_path(registry: &Registry, digest: &Digest) -> std::path::PathBuf {
    let hex = digest.hex();
    registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data")
}

#[tokio::test]
async fn push_then_pull_blobs_and_manifests() {
    testkit::require!(REGISTRY);
    let registry = Registry::start().unwrap();
    let client = client_for(&registry);
    let dir = tempfile::tempdir().unwrap();
    let layer = test_bytes(3 << 20, 42);
    let layer_digest = Digest::sha256(&layer);
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = Digest::sha256(config);
    let repo = reference(&registry, "team/app");
    let layer_path = write_file(dir.path(), "layer", &layer);

    assert!(!client.blob_exists(&repo, &layer_digest).await.unwrap());
    client
        .push_blob_file(&repo, &layer_digest, &layer_path, layer.len() as u64)
        .await
        .unwrap();
    client
        .push_blob_bytes(&repo, &config_digest, config.to_vec().into())
        .await
        .unwrap();
    // A second push finds the blob and uploads nothing.
    client
        .push_blob_file(&repo, &layer_digest, &layer_path, layer.len() as u64)
        .await
        .unwrap();

    assert!(client.blob_exists(&repo, &layer_digest).await.unwrap());
    assert_eq!(
        client.blob_size(&repo, &layer_digest).await.unwrap(),
        layer.len() as u64
    );
    let mut downloaded = Vec::new();
    let count = client
        .download_blob(&repo, &layer_digest, &mut downloaded)
        .await
        .unwrap();
    assert_eq!(count, layer.len() as u64);
    assert!(downloaded == layer, "downloaded blob differs");

    let manifest = manifest_json(config, &layer);
    let tagged = repo.with_tag("v1").unwrap();
    let pushed = client
        .push_manifest(&tagged, OCI_MANIFEST, &manifest)
        .await
        .unwrap();
    assert_eq!(pushed, Digest::sha256(&manifest));
    let by_tag = client.get_manifest(&tagged).await.unwrap();
    assert_eq!(by_tag.bytes, manifest);
    assert_eq!(by_tag.media_type, OCI_MANIFEST);
    assert_eq!(by_tag.digest, pushed);
    let by_digest = client
        .get_manifest(&repo.with_digest(pushed))
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, manifest);
    let pushed_by_digest = client
        .push_manifest(&repo.with_digest(pushed), OCI_MANIFEST, &manifest)
        .await
        .unwrap();
    assert_eq!(pushed_by_digest, pushed);

    let missing = client
        .get_manifest(&repo.with_tag("nope").unwrap())
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    let absent = Digest::sha256(b"absent");
    assert!(matches!(
        client.blob_size(&repo, &absent).await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn range_reads_return_exact_bytes() {
    testkit::require!(REGISTRY);
    let registry = Registry::start().unwrap();
    let client = client_for(&registry);
    let dir = tempfile::tempdir().unwrap();
    let blob = test_bytes(1 << 20, 9);
    let digest = Digest::sha256(&blob);
    let repo = reference(&registry, "ranges");
    let path = write_file(dir.path(), "blob", &blob);
    client
        .push_blob_file(&repo, &digest, &path, blob.len() as u64)
        .await
        .unwrap();
    let len = blob.len() as u64;

    for range in [0..1, 0..len, 4096..8192, len - 1..len, 123_456..654_321] {
        let got = client
            .read_blob_range(&repo, &digest, range.clone())
            .await
            .unwrap();
        assert!(
            got == blob[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    let ranges = [10..20, 0..5, 700_000..700_100, 15..40];
    let got = client
        .read_blob_ranges(&repo, &digest, &ranges)
        .await
        .unwrap();
    for (range, bytes) in ranges.iter().zip(&got) {
        assert!(
            bytes == &blob[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    for (suffix, want_start) in [(100, len - 100), (len, 0), (len * 2, 0)] {
        let tail = client.read_blob_tail(&repo, &digest, suffix).await.unwrap();
        assert_eq!(tail.size, len, "size from Content-Range");
        assert!(
            tail.bytes == blob[want_start as usize..],
            "tail of {suffix}"
        );
    }
    let beyond = client.read_blob_range(&repo, &digest, len..len + 10).await;
    assert!(
        matches!(beyond, Err(Error::RangeNotSatisfied { .. })),
        "{beyond:?}"
    );
}

#[tokio::test]
async fn corrupted_blob_is_a_digest_mismatch() {
    testkit::require!(REGISTRY);
    let registry = Registry::start().unwrap();
    let client = client_for(&registry);
    let blob = test_bytes(100_000, 13);
    let digest = Digest::sha256(&blob);
    let repo = reference(&registry, "corrupt");
    client
        .push_blob_bytes(&repo, &digest, blob.clone().into())
        .await
        .unwrap();

    let mut corrupted = blob.clone();
    corrupted[50_000] ^= 0xff;
    std::fs::write(stored_blob_path(&registry, &digest), &corrupted).unwrap();

    let mut sink = Vec::new();
    match client.download_blob(&repo, &digest, &mut sink).await {
        Err(Error::DigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, digest);
            assert_eq!(actual, Digest::sha256(&corrupted));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    let wrong = Digest::sha256(b"not the content");
    let refused = client.push_blob_bytes(&repo, &wrong, blob.into()).await;
    assert!(
        matches!(refused, Err(Error::DigestMismatch { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn blob_is_mounted_from_another_repository() {
    testkit::require!(REGISTRY);
    let registry = Registry::start().unwrap();
    let client = client_for(&registry);
    let dir = tempfile::tempdir().unwrap();
    let blob = test_bytes(200_000, 17);
    let digest = Digest::sha256(&blob);
    let path = write_file(dir.path(), "blob", &blob);
    let source = reference(&registry, "source/app");
    let target = reference(&registry, "target/app");
    client
        .push_blob_file(&source, &digest, &path, blob.len() as u64)
        .await
        .unwrap();

    client
        .push_blob_file_or_mount(&target, &digest, &path, blob.len() as u64, &source)
        .await
        .unwrap();

    assert!(client.blob_exists(&target, &digest).await.unwrap());
    let log = std::fs::read_to_string(registry.log_path()).unwrap();
    let access_log = || log.lines().filter(|l| l.starts_with("127.0.0.1 - - "));
    let mount_line = access_log().find(|l| l.contains("mount=") && l.contains("from=source"));
    assert!(
        mount_line.is_some_and(|l| l.contains("\" 201 ")),
        "mount answered 201:\n{log}"
    );
    let uploads_to_target = access_log()
        .filter(|l| l.contains("\"PUT /v2/target/app/blobs/uploads/"))
        .count();
    assert_eq!(uploads_to_target, 0, "no upload after a mount");
}

#[tokio::test]
async fn basic_auth_needs_the_docker_config_credentials() {
    testkit::require!(REGISTRY);
    let options = RegistryOptions {
        htpasswd: Some(("tester".to_owned(), "pa55-word".to_owned())),
    };
    let registry = Registry::start_with(options).unwrap();
    let repo = reference(&registry, "private/app");
    let blob = b"secret layer".to_vec();
    let digest = Digest::sha256(&blob);
    let dir = tempfile::tempdir().unwrap();
    let config_for = |name: &str, auth: &str| {
        let json =
            serde_json::json!({"auths": {format!("http://{}", registry.host()): {"auth": auth}}});
        let path = dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        ClientConfig {
            plain_http: vec![registry.host()],
            docker_config: Some(path),
            ..plain_config()
        }
    };
    use base64::Engine as _;
    let good = base64::engine::general_purpose::STANDARD.encode("tester:pa55-word");
    let bad = base64::engine::general_purpose::STANDARD.encode("tester:nope");

    let anonymous = client_for(&registry);
    match anonymous.blob_exists(&repo, &digest).await {
        Err(Error::Unauthorized { host, .. }) => assert_eq!(host, registry.host()),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let wrong = Client::new(config_for("bad.json", &bad)).unwrap();
    let refused = wrong
        .push_blob_bytes(&repo, &digest, blob.clone().into())
        .await;
    assert!(
        matches!(refused, Err(Error::Unauthorized { .. })),
        "{refused:?}"
    );

    let client = Client::new(config_for("good.json", &good)).unwrap();
    client
        .push_blob_bytes(&repo, &digest, blob.clone().into())
        .await
        .unwrap();
    let mut downloaded = Vec::new();
    client
        .download_blob(&repo, &digest, &mut downloaded)
        .await
        .unwrap();
    assert_eq!(downloaded, blob);
    let part = client.read_blob_range(&repo, &digest, 7..12).await.unwrap();
    assert_eq!(&part[..], b"layer");
}
