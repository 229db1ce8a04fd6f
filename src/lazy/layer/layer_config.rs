//! `LayerConfig`: how layers are verified, how long a read may take and how far reads
//! fetch ahead.

use std::time::Duration;

use serde::Deserialize;

/// Default bound on one read, including fetching its chunks.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default largest TOC region fetched when opening a layer.
pub const DEFAULT_MAX_TOC_BYTES: u64 = 256 << 20;
/// Default first readahead window.
pub const DEFAULT_READAHEAD_MIN_BYTES: u64 = 64 << 10;
/// Default largest readahead window.
pub const DEFAULT_READAHEAD_MAX_BYTES: u64 = 1 << 20;

/// Settings of lazily read layers (the `[layer]` table of the daemon config).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct LayerConfig {
    /// Require the TOC digest label and check the TOC against it. Default true; false
    /// serves layers whose TOC cannot be verified (chunk digests are checked either way).
    pub verify: bool,
    /// Longest time a read (or one chunk fetch) may take before failing, in seconds
    /// (fractions allowed). Default 30.
    #[serde(deserialize_with = "crate::config::seconds")]
    pub read_timeout: Duration,
    /// Largest TOC region fetched when opening a layer, bytes. Default 256 MiB.
    pub max_toc_bytes: u64,
    /// Fetch a file's next chunk when a read enters the current one, and fetch a window
    /// of the following chunks in blob order (the next files) with a miss while reads go
    /// through the layer in order, so sequential readers do not wait a round trip per
    /// chunk or per small file. Default true.
    pub readahead: bool,
    /// Smallest first readahead window once misses follow each other, bytes (the window
    /// opens at what one round trip of the link carries when that is more); a miss this
    /// close after the last fetch still counts as sequential. Default 65536.
    pub readahead_min_bytes: u64,
    /// Largest readahead window, bytes; the window is also capped at what four round trips
    /// of the link carry (measured). Default 1048576.
    pub readahead_max_bytes: u64,
}

impl LayerConfig {
    /// The readahead window's bounds, bytes (`None` when readahead is off).
    pub fn readahead_bounds(&self) -> Option<(u64, u64)> {
        self.readahead
            .then_some((self.readahead_min_bytes, self.readahead_max_bytes))
    }
}

impl Default for LayerConfig {
    fn default() -> Self {
        LayerConfig {
            verify: true,
            read_timeout: DEFAULT_READ_TIMEOUT,
            max_toc_bytes: DEFAULT_MAX_TOC_BYTES,
            readahead: true,
            readahead_min_bytes: DEFAULT_READAHEAD_MIN_BYTES,
            readahead_max_bytes: DEFAULT_READAHEAD_MAX_BYTES,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml() {
        let config: LayerConfig =
            toml::from_str("verify = false\nread_timeout = 1.5").expect("parse");
        assert_eq!(
            config,
            LayerConfig {
                verify: false,
                read_timeout: Duration::from_millis(1500),
                max_toc_bytes: DEFAULT_MAX_TOC_BYTES,
                ..LayerConfig::default()
            }
        );
        // Unknown keys are the loader's to report (config::KeyNotice), not a refusal.
        assert!(toml::from_str::<LayerConfig>("verfy = true").is_ok());
        assert!(toml::from_str::<LayerConfig>("read_timeout = -1").is_err());
    }
}
