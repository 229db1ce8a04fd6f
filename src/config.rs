//! Daemon configuration, read from a TOML file (default
//! `/etc/containerd-stargz-grpc/config.toml`); command-line flags override it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding the metadata database and snapshot directories.
    /// Default `/var/lib/containerd-stargz-grpc`.
    pub root: PathBuf,
    /// Unix socket the Snapshots gRPC API listens on.
    /// Default `/run/containerd-stargz-grpc/containerd-stargz-grpc.sock`.
    pub address: PathBuf,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter
    /// directive). Default `info`.
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/containerd-stargz-grpc"),
            address: PathBuf::from("/run/containerd-stargz-grpc/containerd-stargz-grpc.sock"),
            log_level: "info".to_owned(),
        }
    }
}

impl Config {
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
            Ok(text) => Config::from_toml(&text, path),
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
    fn deploy_config_parses_to_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.toml");
        let config = Config::load(&path, false).unwrap();
        assert_eq!(config, Config::default());
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
            ("wrong type rejected", "root = 3", None),
        ];
        for (name, text, want) in cases {
            let got = Config::from_toml(text, Path::new("test.toml")).ok();
            assert_eq!(&got, want, "{name}");
        }
    }

    #[test]
    fn missing_file() {
        let missing = Path::new("/nonexistent/config.toml");
        assert_eq!(Config::load(missing, true).unwrap(), Config::default());
        assert!(Config::load(missing, false).is_err());
    }
}
