//! Daemon configuration, read from a TOML file (default
//! `/etc/containerd-stargz-grpc/config.toml`); command-line flags override it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::background::BackgroundConfig;
use crate::cache::CacheConfig;
use crate::cri::CriKeychainConfig;
use crate::kube::KubeconfigKeychainConfig;
use crate::layer::LayerConfig;
use crate::lazy::FuseConfig;
use crate::metrics::MetricsConfig;
use crate::prefetch::PrefetchConfig;
use crate::record::RecordConfig;
use crate::remote::RemoteConfig;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/containerd-stargz-grpc/config.toml";

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse config {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
}

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding the metadata database and snapshot directories; root only (0700,
    /// tightened at startup when found open). Default `/var/lib/containerd-stargz-grpc`.
    pub root: PathBuf,
    /// Unix socket the Snapshots gRPC API listens on.
    /// Default `/run/containerd-stargz-grpc/containerd-stargz-grpc.sock`.
    pub address: PathBuf,
    /// Numeric group id allowed to use the Snapshots socket besides root (the socket is
    /// then group-owned and mode 0660, its directory at least 0711). Default none: root
    /// only (mode 0600, its directory created 0700).
    pub socket_group: Option<u32>,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter
    /// directive). Default `info`.
    pub log_level: String,
    /// Serve eStargz layers lazily through FUSE. Default true; false makes the daemon a
    /// plain overlay snapshotter.
    pub lazy_pull: bool,
    /// Registry access (`[remote]`).
    pub remote: RemoteConfig,
    /// Chunk cache (`[cache]`); without `dir`, [`Config::cache_dir`] gives `<root>/cache`.
    pub cache: CacheConfig,
    /// Layer verification and read bounds (`[layer]`).
    pub layer: LayerConfig,
    /// FUSE mounts (`[fuse]`).
    pub fuse: FuseConfig,
    /// Prefetch at mount (`[prefetch]`).
    pub prefetch: PrefetchConfig,
    /// Background fetch of whole layers (`[background_fetch]`).
    pub background_fetch: BackgroundConfig,
    /// Recording the files images open at start (`[record]`); without `dir`,
    /// [`Config::resolved_record`] gives `<root>/record`.
    pub record: RecordConfig,
    /// Prometheus metrics endpoint (`[metrics]`); off unless `address` is set.
    pub metrics: MetricsConfig,
    /// CRI image-service proxy keeping kubelet's pull credentials (`[cri_keychain]`);
    /// off unless `enable`.
    pub cri_keychain: CriKeychainConfig,
    /// Credentials from the cluster's docker config Secrets (`[kubeconfig_keychain]`);
    /// off unless `enable`.
    pub kubeconfig_keychain: KubeconfigKeychainConfig,
    /// The file this configuration was read from (not a key: set by [`Config::load`]),
    /// so that the fuse manager can be started with the same configuration.
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/containerd-stargz-grpc"),
            address: PathBuf::from("/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"),
            socket_group: None,
            log_level: "info".to_owned(),
            lazy_pull: true,
            remote: RemoteConfig::default(),
            cache: CacheConfig::default(),
            layer: LayerConfig::default(),
            fuse: FuseConfig::default(),
            prefetch: PrefetchConfig::default(),
            background_fetch: BackgroundConfig::default(),
            record: RecordConfig::default(),
            metrics: MetricsConfig::default(),
            cri_keychain: CriKeychainConfig::default(),
            kubeconfig_keychain: KubeconfigKeychainConfig::default(),
            config_file: None,
        }
    }
}

/// Deserializes a duration given in (fractional) seconds; every config section uses it.
pub(crate) fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(deserializer)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

impl Config {
    /// The cache settings with the directory resolved: `cache.dir`, else `<root>/cache`.
    pub fn resolved_cache(&self) -> CacheConfig {
        CacheConfig {
            dir: Some(
                self.cache
                    .dir
                    .clone()
                    .unwrap_or_else(|| self.root.join("cache")),
            ),
            ..self.cache.clone()
        }
    }

    /// The record settings with the directory resolved: `record.dir`, else `<root>/record`.
    pub fn resolved_record(&self) -> RecordConfig {
        RecordConfig {
            dir: Some(
                self.record
                    .dir
                    .clone()
                    .unwrap_or_else(|| self.root.join("record")),
            ),
            ..self.record.clone()
        }
    }

    /// Parses a TOML document.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, Error> {
        toml::from_str(text).map_err(|source| Error::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Reads `path`; a missing file gives the defaults when `optional`.
    pub fn load(path: &Path, optional: bool) -> Result<Config, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Config {
                config_file: Some(path.to_path_buf()),
                ..Config::from_toml(&text, path)?
            }),
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_config_parses_to_the_defaults_but_the_fuse_manager() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.toml");
        let config = Config::load(&path, false).unwrap();
        assert_eq!(config.config_file.as_deref(), Some(path.as_path()));
        // The shipped file turns the manager on: restart-safe mounts on a node.
        assert!(config.fuse.manager);
        let mut want = Config::default();
        want.fuse.manager = true;
        let keys = Config {
            config_file: None,
            ..config
        };
        assert_eq!(keys, want);
    }

    #[test]
    fn cases() {
        let cases: &[(&str, &str, Option<Config>)] = &[
            ("empty is default", "", Some(Config::default())),
            (
                "root only",
                "root = \"/tmp/r\"",
                Some(Config {
                    root: "/tmp/r".into(),
                    ..Config::default()
                }),
            ),
            ("unknown field rejected", "rooot = \"/tmp/r\"", None),
            (
                "lazy pull off",
                "lazy_pull = false",
                Some(Config {
                    lazy_pull: false,
                    ..Config::default()
                }),
            ),
            (
                "tables",
                "[remote]\nplain_http = [\"127.0.0.1:5000\"]\n[layer]\nverify = false\n\
                 [fuse]\nmount_timeout = 2.5\n[cache]\nmemory_bytes = 10",
                Some(Config {
                    remote: RemoteConfig {
                        plain_http: vec!["127.0.0.1:5000".to_owned()],
                        ..RemoteConfig::default()
                    },
                    layer: LayerConfig {
                        verify: false,
                        ..LayerConfig::default()
                    },
                    fuse: FuseConfig {
                        mount_timeout: std::time::Duration::from_millis(2500),
                        ..FuseConfig::default()
                    },
                    cache: CacheConfig {
                        memory_bytes: 10,
                        ..CacheConfig::default()
                    },
                    ..Config::default()
                }),
            ),
            (
                "mirrors and prefetch",
                "[remote.mirrors]\n\"docker.io\" = [\"127.0.0.1:5001\", \"m.example\"]\n\
                 [prefetch]\ntimeout = 0.5",
                Some(Config {
                    remote: RemoteConfig {
                        mirrors: [(
                            "docker.io".to_owned(),
                            vec!["127.0.0.1:5001".to_owned(), "m.example".to_owned()],
                        )]
                        .into(),
                        ..RemoteConfig::default()
                    },
                    prefetch: PrefetchConfig {
                        timeout: std::time::Duration::from_millis(500),
                        ..PrefetchConfig::default()
                    },
                    ..Config::default()
                }),
            ),
            ("unknown table key rejected", "[fuse]\nthreadz = 1", None),
            ("wrong type rejected", "root = 3", None),
        ];
        for (name, text, want) in cases {
            let got = Config::from_toml(text, Path::new("test.toml")).ok();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn cache_dir_defaults_under_root() {
        let cases = [("unset", None, "/r/cache"), ("set", Some("/c"), "/c")];
        for (name, dir, want) in cases {
            let config = Config {
                root: "/r".into(),
                cache: CacheConfig {
                    dir: dir.map(PathBuf::from),
                    ..CacheConfig::default()
                },
                ..Config::default()
            };
            let got = config.resolved_cache().dir;
            assert_eq!(got, Some(PathBuf::from(want)), "{name}");
        }
    }

    #[test]
    fn missing_file() {
        let missing = Path::new("/nonexistent/config.toml");
        assert_eq!(Config::load(missing, true).unwrap(), Config::default());
        assert!(Config::load(missing, false).is_err());
    }
}
