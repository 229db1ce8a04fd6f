//! `estargz-convert` against a real docker-registry: registry -> registry for single and
//! multi-platform images, registry <-> layout, and authentication through the docker config.

mod convert_support;

use std::path::Path;

use base64::Engine as _;
use convert_support::*;
use estargz::{Digest, Format};
use testkit::registry::REGISTRY_BIN;
use testkit::{build_index, write_layout, MediaTypes, Platform, Prereq, Registry, RegistryOptions};

/// The image `name:tag` in `registry`, fetched with the testkit client.
fn registry_images(registry: &Registry, name: &str, tag: &str) -> Vec<ImageView> {
    let client = registry.client();
    let top = client.get_manifest(name, tag).unwrap();
    let blob = |d: &Digest| client.get_blob(name, d).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&top.bytes).unwrap();
    match json["manifests"].as_array() {
        Some(entries) => entries
            .iter()
            .map(|entry| {
                let child = client
                    .get_manifest(name, &digest_of(entry).to_string())
                    .unwrap();
                view_manifest(&child.media_type, &child.bytes, &blob)
            })
            .collect(),
        None => vec![view_manifest(&top.media_type, &top.bytes, &blob)],
    }
}

#[test]
fn registry_to_registry_single_and_multi_platform() {
    testkit::require!(Prereq::Binary(REGISTRY_BIN));
    let registry = Registry::start().unwrap();
    let single = sample_image(30, MediaTypes::Docker, Platform::linux_amd64());
    let src = registry.push("app", "v1", &single).unwrap();

    // Loopback registries need no flag: HTTPS is probed, plain HTTP used.
    let report = convert_json(&[&src, &registry.reference("app", "esgz")]);

    let images = registry_images(&registry, "app", "esgz");
    assert_converted(&single, &images[0], Format::Estargz);
    assert_eq!(report["digest"], images[0].digest.to_string());

    let amd64 = sample_image(31, MediaTypes::Oci, Platform::linux_amd64());
    let arm64 = sample_image(32, MediaTypes::Oci, Platform::linux_arm64());
    let index = build_index(vec![amd64.clone(), arm64.clone()]).unwrap();
    let src = registry.push("multi", "v1", &index).unwrap();

    convert_ok(&[
        "--plain-http",
        "--zstd",
        &src,
        &registry.reference("other/repo", "zstd"),
    ]);

    let images = registry_images(&registry, "other/repo", "zstd");
    assert_eq!(images.len(), 2);
    assert_converted(&amd64, &images[0], Format::ZstdChunked);
    assert_converted(&arm64, &images[1], Format::ZstdChunked);
}

#[test]
fn layout_to_registry_and_back() {
    testkit::require!(Prereq::Binary(REGISTRY_BIN));
    let registry = Registry::start().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let image = sample_image(33, MediaTypes::Oci, Platform::linux_amd64());
    write_layout(&tmp.path().join("src"), "v1", &image).unwrap();
    let pushed = registry.reference("pushed", "esgz");

    convert_ok(&[
        &format!("oci:{}:v1", tmp.path().join("src").display()),
        &pushed,
    ]);
    let images = registry_images(&registry, "pushed", "esgz");
    assert_converted(&image, &images[0], Format::Estargz);

    // Back into a layout: already eStargz, so the layers are reused byte for byte.
    let back = tmp.path().join("back");
    let report = convert_json(&[&pushed, &format!("oci:{}:copy", back.display())]);
    assert_eq!(statuses(&report), ["reused", "reused"]);
    let (_, copied) = read_layout(&back, "copy");
    assert_eq!(copied[0].digest, images[0].digest);
}

fn write_docker_config(path: &Path, host: &str, user_password: Option<&str>) {
    let config = match user_password {
        Some(secret) => {
            let auth = base64::engine::general_purpose::STANDARD.encode(secret);
            serde_json::json!({ "auths": { host: { "auth": auth } } })
        }
        None => serde_json::json!({ "auths": {} }),
    };
    std::fs::write(path, serde_json::to_vec(&config).unwrap()).unwrap();
}

#[test]
fn missing_credentials_fail_without_creating_the_tag() {
    testkit::require!(Prereq::Binary(REGISTRY_BIN));
    let registry = Registry::start_with(RegistryOptions {
        htpasswd: Some(("ci".to_owned(), "s3cret".to_owned())),
    })
    .unwrap();
    let image = sample_image(34, MediaTypes::Oci, Platform::linux_amd64());
    let src = registry.push("private", "v1", &image).unwrap();
    let dst = registry.reference("private", "esgz");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.json");
    write_docker_config(&config, &registry.host(), None);

    let stderr = convert_fails(&["--docker-config", config.to_str().unwrap(), &src, &dst]);
    eprintln!("estargz-convert said:\n{stderr}");

    assert!(
        stderr.contains(&registry.host()),
        "names the host: {stderr}"
    );
    assert!(
        stderr.contains("docker config"),
        "says where credentials come from: {stderr}"
    );
    assert!(
        registry.client().get_manifest("private", "esgz").is_err(),
        "tag created"
    );

    write_docker_config(&config, &registry.host(), Some("ci:s3cret"));
    convert_ok(&["--docker-config", config.to_str().unwrap(), &src, &dst]);
    let images = registry_images(&registry, "private", "esgz");
    assert_converted(&image, &images[0], Format::Estargz);
}

#[test]
fn layer_missing_in_registry_fails_without_creating_the_tag() {
    testkit::require!(Prereq::Binary(REGISTRY_BIN));
    let registry = Registry::start().unwrap();
    let image = sample_image(35, MediaTypes::Oci, Platform::linux_amd64());
    let src = registry.push("app", "v1", &image).unwrap();
    let digest = image.layers[1].blob.digest;
    let hex = digest.hex();
    let data = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(&hex)
        .join("data");
    std::fs::remove_file(&data).unwrap_or_else(|e| panic!("remove {}: {e}", data.display()));

    let stderr = convert_fails(&[&src, &registry.reference("app", "esgz")]);
    eprintln!("estargz-convert said:\n{stderr}");

    assert!(stderr.contains(&format!("layer 2/2 {digest}")), "{stderr}");
    assert!(
        registry.client().get_manifest("app", "esgz").is_err(),
        "tag created"
    );
}
