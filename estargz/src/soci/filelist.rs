//! The learned prefetch of an eStargz layer, published beside the image (the image keeps
//! its digest): the files an access record lists for the layer, in the order the workload
//! opened them. It rides in the image's SOCI index manifest as a layer of media type
//! [`FILE_LIST_MEDIA_TYPE`], bound to the image layer by the
//! `com.amazon.soci.image-layer-digest` annotation like soci's prefetch artifact; its body
//! is `{"version":"1.0","files":["path", ...]}`. Readers that do not know the media type
//! skip it.

use serde::{Deserialize, Serialize};

/// Media type of a file list blob.
pub const FILE_LIST_MEDIA_TYPE: &str = "application/vnd.estargz.prefetch-files.v1+json";
/// The only version written and read.
pub const FILE_LIST_VERSION: &str = "1.0";
/// Largest file list accepted by readers.
pub const MAX_FILE_LIST_SIZE: u64 = 4 << 20;

/// Why a file list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileListError {
    #[error("prefetch file list is not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("prefetch file list version {0:?} is not {FILE_LIST_VERSION}")]
    Version(String),
}

/// A layer's learned files, in first-read order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    pub version: String,
    pub files: Vec<String>,
}

impl FileList {
    pub fn new(files: Vec<String>) -> Self {
        FileList {
            version: FILE_LIST_VERSION.to_owned(),
            files,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FileListError> {
        let list: FileList = serde_json::from_slice(bytes)?;
        if list.version != FILE_LIST_VERSION {
            return Err(FileListError::Version(list.version));
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_the_version() {
        let list = FileList::new(vec!["usr/lib/a.so".into(), "etc/hosts".into()]);
        let bytes = list.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["files"][1], "etc/hosts");
        assert_eq!(FileList::from_bytes(&bytes).unwrap(), list);
        assert!(FileList::from_bytes(br#"{"version":"2.0","files":[]}"#).is_err());
        assert!(FileList::from_bytes(b"[]").is_err());
    }
}
