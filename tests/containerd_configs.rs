//! The containerd configuration files of deploy/ parse as TOML and say what the daemon
//! needs: the proxy plugin on the daemon's default socket for 1.6/1.7 (version 2) and
//! 2.x (version 3), and for 2.x the CRI images plugin with snapshot annotations and the
//! export that makes transfer-service pulls pass the labels. Only containerd 1.6 is
//! packaged for Debian 12, so the 2.x file is checked by parsing it.

use std::path::Path;

use estargz_snapshotter::config::Config;
use toml::Value;

fn deploy(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| {
        v.get(key).unwrap_or_else(|| panic!("no {key} in {path:?}"))
    })
}

fn default_address() -> String {
    Config::default().address.to_string_lossy().into_owned()
}

fn check_proxy_plugin(config: &Value) {
    let stargz = at(config, &["proxy_plugins", "stargz"]);
    assert_eq!(at(stargz, &["type"]).as_str(), Some("snapshot"));
    assert_eq!(
        at(stargz, &["address"]).as_str(),
        Some(default_address().as_str())
    );
}

#[test]
fn containerd_1_x_snippet() {
    let config = deploy("containerd-proxy-plugin.toml");
    check_proxy_plugin(&config);
    let k8s = deploy("kubernetes/containerd-config.toml");
    assert_eq!(at(&k8s, &["version"]).as_integer(), Some(2));
    check_proxy_plugin(&k8s);
}

#[test]
fn containerd_2_x_config() {
    let config = deploy("containerd-2.x-config.toml");
    assert_eq!(at(&config, &["version"]).as_integer(), Some(3));
    check_proxy_plugin(&config);
    let exports = at(&config, &["proxy_plugins", "stargz", "exports"]);
    // containerd reads exports as strings: a TOML boolean would not be the same.
    assert_eq!(
        at(exports, &["enable_remote_snapshot_annotations"]).as_str(),
        Some("true")
    );
    let images = at(&config, &["plugins", "io.containerd.cri.v1.images"]);
    assert_eq!(at(images, &["snapshotter"]).as_str(), Some("stargz"));
    assert_eq!(
        at(images, &["disable_snapshot_annotations"]).as_bool(),
        Some(false)
    );
    assert!(at(images, &["registry", "config_path"]).is_str());
    let unpack = at(
        &config,
        &[
            "plugins",
            "io.containerd.transfer.v1.local",
            "unpack_config",
        ],
    )
    .as_array()
    .unwrap();
    let snapshotters: Vec<_> = unpack
        .iter()
        .map(|u| at(u, &["snapshotter"]).as_str().unwrap())
        .collect();
    assert_eq!(snapshotters, ["stargz", "overlayfs"]);
    // No 1.x plugin names in a version 3 file: containerd 2.x would migrate or ignore them.
    let plugins = at(&config, &["plugins"]).as_table().unwrap();
    assert!(
        !plugins.contains_key("io.containerd.grpc.v1.cri"),
        "{plugins:?}"
    );
}
