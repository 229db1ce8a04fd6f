//! Daemon configuration, read from a TOML file (default
//! `/etc/containerd-stargz-grpc/config.toml`); command-line flags override it.
//!
//! The Go reference's config.toml is read too: its keys are rewritten into ours first
//! (`config/reference.rs`). A key nobody knows, or one with no effect here, is reported as a
//! [`KeyNotice`] (name and line) for the daemon to log, never a refusal to start.

mod notice;
mod reference;
#[cfg(test)]
mod reference_tests;

pub use notice::{KeyNotice, NoticeKind, Segment};
pub use reference::ReferenceError;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::cri::CriKeychainConfig;
use crate::kube::KubeconfigKeychainConfig;
use crate::lazy::cache::CacheConfig;
use crate::lazy::layer::LayerConfig;
use crate::lazy::producers::background_fetch::BackgroundConfig;
use crate::lazy::producers::prefetch::PrefetchConfig;
use crate::lazy::producers::record::RecordConfig;
use crate::lazy::source::RemoteConfig;
use crate::lazy::FuseConfig;
use crate::metrics::MetricsConfig;

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
    #[error("parse config {path}: {source}")]
    Reference {
        path: PathBuf,
        source: ReferenceError,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `message`, fields), for log
    /// collectors, like the Go reference's logs.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
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
    /// Log line format: `text` or `json`. Default `text`.
    pub log_format: LogFormat,
    /// Serve eStargz layers lazily through FUSE. Default true; false makes the daemon a
    /// plain overlay snapshotter.
    pub lazy_pull: bool,
    /// Registry access (`[remote]`).
    pub remote: RemoteConfig,
    /// Chunk cache (`[cache]`); without `dir`, [`Config::resolved_cache`] uses `<root>/cache`.
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
            log_format: LogFormat::Text,
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

    /// Parses a TOML document, dropping the notices (tests, and tools that only need the
    /// values).
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, Error> {
        Config::parse(text, path).map(|(config, _)| config)
    }

    /// Parses a TOML document, ours or the Go reference's; also returns what it has to
    /// say about single keys (mapped, without effect, unknown), in file order.
    pub fn parse(text: &str, path: &Path) -> Result<(Config, Vec<KeyNotice>), Error> {
        let parse_error = |source| Error::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        let mut notices = reference::translate(&mut table).map_err(|source| Error::Reference {
            path: path.to_path_buf(),
            source,
        })?;
        let mut unknown = Vec::new();
        let config: Config = serde_ignored::deserialize(toml::Value::Table(table), |ignored| {
            unknown.push(segments(&ignored))
        })
        .map_err(parse_error)?;
        notices.extend(
            unknown
                .into_iter()
                .map(|path| KeyNotice::new(path, NoticeKind::Unknown)),
        );
        if let Ok(doc) = toml_edit::ImDocument::parse(text) {
            for notice in &mut notices {
                notice.line = notice::line_of(&doc, &notice.path);
            }
        }
        notices.sort_by_key(|n| n.line);
        Ok((config, notices))
    }

    /// Reads `path`; a missing file gives the defaults when `optional`.
    pub fn load(path: &Path, optional: bool) -> Result<(Config, Vec<KeyNotice>), Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let (config, notices) = Config::parse(&text, path)?;
                let config = Config {
                    config_file: Some(path.to_path_buf()),
                    ..config
                };
                Ok((config, notices))
            }
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => {
                Ok((Config::default(), Vec::new()))
            }
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// A path as serde_ignored reports it, as key segments.
fn segments(path: &serde_ignored::Path) -> Vec<Segment> {
    let mut out = match path {
        serde_ignored::Path::Root => return Vec::new(),
        serde_ignored::Path::Seq { parent, .. }
        | serde_ignored::Path::Map { parent, .. }
        | serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => segments(parent),
    };
    match path {
        serde_ignored::Path::Seq { index, .. } => out.push(Segment::Index(*index)),
        serde_ignored::Path::Map { key, .. } => out.push(Segment::Key(key.clone())),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_config_parses_to_the_defaults_but_the_fuse_manager() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.toml");
        let (config, notices) = Config::load(&path, false).unwrap();
        assert_eq!(notices, [], "every key of the shipped file is ours");
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
            (
                "unknown field ignored",
                "rooot = \"/tmp/r\"",
                Some(Config::default()),
            ),
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
            (
                "unknown table key ignored",
                "[fuse]\nthreadz = 1",
                Some(Config::default()),
            ),
            (
                "log format",
                "log_format = \"json\"",
                Some(Config {
                    log_format: LogFormat::Json,
                    ..Config::default()
                }),
            ),
            ("bad log format", "log_format = \"xml\"", None),
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
        assert_eq!(
            Config::load(missing, true).unwrap(),
            (Config::default(), Vec::new())
        );
        assert!(Config::load(missing, false).is_err());
    }

    #[test]
    fn unknown_keys_are_named_with_their_lines() {
        let text = "root = \"/r\"\nrooot = 1\n\n[fuse]\nthreads = 3\nthreadz = 4\n\
                    [nosuch]\na = 1\n[blob]\nchunk_size = 1\nchunk_sise = 2\n";
        let (config, notices) = Config::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(config.fuse.threads, 3);
        let unknown: Vec<String> = notices
            .iter()
            .filter(|n| n.kind == NoticeKind::Unknown)
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            unknown,
            [
                "config key rooot (line 2): unknown key, ignored",
                "config key fuse.threadz (line 6): unknown key, ignored",
                "config key nosuch (line 7): unknown key, ignored",
                "config key blob.chunk_sise (line 11): unknown key, ignored",
            ]
        );
        let chunk_size = notices
            .iter()
            .find(|n| {
                n.path
                    == [
                        Segment::Key("blob".into()),
                        Segment::Key("chunk_size".into()),
                    ]
            })
            .unwrap();
        assert_eq!(chunk_size.line, Some(10));
        assert!(chunk_size.is_warning(), "{chunk_size}");
    }
}
