//! The SOCI prefetch artifact (soci-snapshotter 0.13's format): per indexed layer, the
//! spans to fetch at mount, in order. It is a layer of the SOCI index manifest with media
//! type [`PREFETCH_MEDIA_TYPE`], bound to the image layer by the
//! `com.amazon.soci.image-layer-digest` annotation; its body is
//! `{"version":"1.0","prefetch_spans":[{"start_span","end_span","priority"}]}` (inclusive
//! span ranges; lower priority values first).

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::Zinfo;

/// Media type of a prefetch artifact blob.
pub const PREFETCH_MEDIA_TYPE: &str = "application/vnd.amazon.soci.prefetch.v1+json";
/// The only artifact version soci writes and reads.
pub const PREFETCH_VERSION: &str = "1.0";
/// Largest prefetch artifact accepted by readers.
pub const MAX_PREFETCH_SIZE: u64 = 4 << 20;

/// Why a prefetch artifact cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    #[error("prefetch artifact is not JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("prefetch artifact version {0:?} is not {PREFETCH_VERSION}")]
    Version(String),
    #[error("prefetch span range {start}..={end} is outside the {spans} spans of the layer")]
    Range { start: u32, end: u32, spans: usize },
}

/// One inclusive range of span ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchSpan {
    pub start_span: u32,
    pub end_span: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A layer's prefetch artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchArtifact {
    pub version: String,
    pub prefetch_spans: Vec<PrefetchSpan>,
}

impl PrefetchArtifact {
    /// The artifact listing the spans that serve `reads` (uncompressed tar ranges), in
    /// the order of the reads; a span is listed once, at its first read. Consecutive
    /// spans of one read become one range; priorities count up in read order.
    pub fn from_reads(zinfo: &Zinfo, reads: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut seen = vec![false; zinfo.span_count()];
        let mut out: Vec<PrefetchSpan> = Vec::new();
        for read in reads {
            for span in zinfo.spans_for(read) {
                if std::mem::replace(&mut seen[span], true) {
                    continue;
                }
                let span = u32::try_from(span).unwrap_or(u32::MAX);
                match out.last_mut() {
                    Some(last) if last.end_span.checked_add(1) == Some(span) => {
                        last.end_span = span
                    }
                    _ => out.push(PrefetchSpan {
                        start_span: span,
                        end_span: span,
                        priority: out.len() as i64,
                    }),
                }
            }
        }
        PrefetchArtifact {
            version: PREFETCH_VERSION.to_owned(),
            prefetch_spans: out,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing plain integers and strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses an artifact and checks its ranges against a layer of `span_count` spans.
    pub fn from_bytes(bytes: &[u8], span_count: usize) -> Result<Self, PrefetchError> {
        let artifact: PrefetchArtifact = serde_json::from_slice(bytes)?;
        if artifact.version != PREFETCH_VERSION {
            return Err(PrefetchError::Version(artifact.version));
        }
        for s in &artifact.prefetch_spans {
            if s.start_span > s.end_span || s.end_span as usize >= span_count {
                return Err(PrefetchError::Range {
                    start: s.start_span,
                    end: s.end_span,
                    spans: span_count,
                });
            }
        }
        Ok(artifact)
    }

    /// Span ids in fetch order: by priority (stable, so equal priorities keep file order).
    pub fn span_order(&self) -> Vec<usize> {
        let mut ranges = self.prefetch_spans.clone();
        ranges.sort_by_key(|s| s.priority);
        let mut seen = std::collections::HashSet::new();
        ranges
            .iter()
            .flat_map(|s| s.start_span as usize..=s.end_span as usize)
            .filter(|s| seen.insert(*s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_soci_field_names_and_checks_ranges() {
        let a = PrefetchArtifact {
            version: PREFETCH_VERSION.into(),
            prefetch_spans: vec![
                PrefetchSpan {
                    start_span: 3,
                    end_span: 4,
                    priority: 0,
                },
                PrefetchSpan {
                    start_span: 0,
                    end_span: 0,
                    priority: 1,
                },
            ],
        };
        let bytes = a.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["prefetch_spans"][0]["start_span"], 3);
        assert_eq!(v["prefetch_spans"][0]["end_span"], 4);
        assert_eq!(v["prefetch_spans"][1]["priority"], 1);
        assert_eq!(PrefetchArtifact::from_bytes(&bytes, 5).unwrap(), a);
        assert_eq!(a.span_order(), vec![3, 4, 0]);
        assert!(matches!(
            PrefetchArtifact::from_bytes(&bytes, 4),
            Err(PrefetchError::Range { .. })
        ));
        let v2 = br#"{"version":"2.0","prefetch_spans":[]}"#;
        assert!(PrefetchArtifact::from_bytes(v2, 4).is_err());
    }
}
