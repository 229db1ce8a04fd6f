//! Why a layer is served by an ordinary pull instead: the fixed [`FallbackReason`] each
//! lazy-mount error counts as, in metrics and in the status board. Decided here, where the
//! errors are defined, so that the observers need not know the data path's error types.

use crate::lazy::layer::{FetchError, LayerError};
use crate::lazy::source::LabelError;
use crate::lazy::LazyError;
use crate::metrics::FallbackReason;

impl From<&LazyError> for FallbackReason {
    fn from(error: &LazyError) -> FallbackReason {
        match error {
            LazyError::Labels(LabelError::Missing) => FallbackReason::NoLabels,
            LazyError::Labels(_) => FallbackReason::BadLabels,
            LazyError::Client(_) | LazyError::Remote(_) => FallbackReason::Registry,
            LazyError::Layer(layer) => FallbackReason::from(layer),
            LazyError::Fs(_) => FallbackReason::Fuse,
            LazyError::Timeout { .. } => FallbackReason::Timeout,
            LazyError::Cache(_) | LazyError::NotMounted(_) => FallbackReason::Internal,
            LazyError::Soci(_) => FallbackReason::InvalidSociIndex,
        }
    }
}

impl From<&LayerError> for FallbackReason {
    fn from(error: &LayerError) -> FallbackReason {
        match error {
            LayerError::Remote(_) => FallbackReason::Registry,
            LayerError::Footer { .. } => FallbackReason::NotEstargz,
            LayerError::BadTocRange { .. }
            | LayerError::TocTooLarge { .. }
            | LayerError::Toc { .. }
            | LayerError::Index { .. }
            | LayerError::NotAFile { .. }
            | LayerError::ChunkSize { .. } => FallbackReason::InvalidToc,
            LayerError::MissingTocDigest { .. } => FallbackReason::NoTocDigest,
            LayerError::TocDigestMismatch { .. } => FallbackReason::TocMismatch,
            LayerError::Timeout { .. } => FallbackReason::Timeout,
            LayerError::Fetch(fetch) => match fetch.as_ref() {
                FetchError::Remote { .. } => FallbackReason::Registry,
                FetchError::TimedOut { .. } => FallbackReason::Timeout,
                FetchError::Chunk { .. } | FetchError::Lost { .. } => FallbackReason::InvalidToc,
                FetchError::Task { .. } => FallbackReason::Internal,
            },
            LayerError::Task { .. } => FallbackReason::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use estargz::Digest;
    use std::time::Duration;

    #[test]
    fn fallback_reasons_come_from_the_error_type() {
        let blob = Digest::from_bytes([1; 32]);
        let cases: Vec<(&str, LazyError, &str)> = vec![
            (
                "missing labels",
                LazyError::Labels(LabelError::Missing),
                "no_labels",
            ),
            (
                "bad digest label",
                LazyError::Labels(LabelError::BadDigest {
                    label: "l".into(),
                    value: "v".into(),
                    reason: "r".into(),
                }),
                "bad_labels",
            ),
            (
                "no toc digest",
                LayerError::MissingTocDigest { blob }.into(),
                "no_toc_digest",
            ),
            (
                "toc mismatch",
                LayerError::TocDigestMismatch {
                    blob,
                    expected: blob,
                    actual: Digest::from_bytes([2; 32]),
                }
                .into(),
                "toc_mismatch",
            ),
            (
                "toc too large",
                LayerError::TocTooLarge {
                    blob,
                    size: 2,
                    max: 1,
                }
                .into(),
                "invalid_toc",
            ),
            (
                "registry",
                crate::lazy::source::RemoteError::Unavailable {
                    digest: blob,
                    reason: "down",
                }
                .into(),
                "registry",
            ),
            (
                "open timeout",
                LazyError::Timeout {
                    digest: blob,
                    timeout: Duration::from_secs(1),
                },
                "timeout",
            ),
            (
                "not mounted",
                LazyError::NotMounted("/x".into()),
                "internal",
            ),
        ];
        for (name, error, want) in cases {
            assert_eq!(FallbackReason::from(&error).label(), want, "{name}");
        }
        let labels: std::collections::HashSet<_> =
            FallbackReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels.len(),
            FallbackReason::ALL.len(),
            "labels are distinct"
        );
    }
}
