//! Why a layer is served by an ordinary pull instead: the small fixed set of reasons that
//! metrics and the status board count. Each error type of the data path says which
//! reason it counts as where it is defined (`mounter` for `LazyError`, `layer` for
//! `LayerError`), so the observers need not know those errors.

/// Why a layer was not mounted lazily: a small fixed set derived from the error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// The Prepare labels name no image reference and layer digest.
    NoLabels,
    /// A reference or digest label does not parse.
    BadLabels,
    /// No TOC digest label while verification is on.
    NoTocDigest,
    /// The TOC does not match its digest label.
    TocMismatch,
    /// The blob has no eStargz footer.
    NotEstargz,
    /// The TOC is malformed, too large or refused by the index.
    InvalidToc,
    /// The registry lookup or a range request failed.
    Registry,
    /// Opening the layer took too long.
    Timeout,
    /// The FUSE mount failed.
    Fuse,
    /// The snapshot store could not commit the mounted layer.
    Commit,
    /// Anything else (cache setup, a failed task).
    Internal,
    /// A SOCI index or zTOC was found but cannot be used (wrong layer, malformed).
    InvalidSociIndex,
}

impl FallbackReason {
    pub const ALL: [FallbackReason; 12] = [
        FallbackReason::NoLabels,
        FallbackReason::BadLabels,
        FallbackReason::NoTocDigest,
        FallbackReason::TocMismatch,
        FallbackReason::NotEstargz,
        FallbackReason::InvalidToc,
        FallbackReason::Registry,
        FallbackReason::Timeout,
        FallbackReason::Fuse,
        FallbackReason::Commit,
        FallbackReason::Internal,
        FallbackReason::InvalidSociIndex,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            FallbackReason::NoLabels => "no_labels",
            FallbackReason::BadLabels => "bad_labels",
            FallbackReason::NoTocDigest => "no_toc_digest",
            FallbackReason::TocMismatch => "toc_mismatch",
            FallbackReason::NotEstargz => "not_estargz",
            FallbackReason::InvalidToc => "invalid_toc",
            FallbackReason::Registry => "registry",
            FallbackReason::Timeout => "timeout",
            FallbackReason::Fuse => "fuse",
            FallbackReason::Commit => "commit",
            FallbackReason::Internal => "internal",
            FallbackReason::InvalidSociIndex => "invalid_soci_index",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lazy::layer::LayerError;
    use crate::lazy::source::LabelError;
    use crate::lazy::LazyError;
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
