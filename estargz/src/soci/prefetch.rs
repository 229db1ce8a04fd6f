//! The SOCI prefetch artifact (soci-snapshotter 0.13's format): per indexed layer, the
//! spans to fetch at mount, in order. It is a layer of the SOCI index manifest with media
//! type [`PREFETCH_MEDIA_TYPE`], bound to the image layer by the
//! `com.amazon.soci.image-layer-digest` annotation; its body is
//! `{"version":"1.0","prefetch_spans":[{"start_span","end_span","priority"}]}` (inclusive
//! span ranges; lower priority values first). A range may add `uncompressed_end`: its last
//! span is needed only up to that uncompressed offset, so with span blocks
//! ([`super::blocks`]) only that prefix is fetched (an addition of ours; soci's JSON
//! decoding ignores fields it does not know and fetches the whole range). The artifact
//! may also carry `ranges`, ours too: the uncompressed tar ranges the reads cover, in
//! read order, near ones merged; with resume points ([`super::resume`]) a daemon then
//! fetches just those, not the spans' heads.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::Zinfo;

/// Media type of a prefetch artifact blob.
pub const PREFETCH_MEDIA_TYPE: &str = "application/vnd.amazon.soci.prefetch.v1+json";
/// The only artifact version soci writes and reads.
pub const PREFETCH_VERSION: &str = "1.0";
/// Largest prefetch artifact accepted by readers.
pub const MAX_PREFETCH_SIZE: u64 = 4 << 20;
/// Reads closer than this (uncompressed) make one range: a span block holds about as
/// much, so the bytes between them mostly come anyway.
const MERGE_GAP: u64 = 64 << 10;

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
    /// The last span is needed only up to this uncompressed offset (absent: all of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncompressed_end: Option<u64>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A layer's prefetch artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchArtifact {
    pub version: String,
    pub prefetch_spans: Vec<PrefetchSpan>,
    /// The uncompressed `[start, end)` ranges the reads cover, in read order (ours).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<[u64; 2]>,
}

impl PrefetchArtifact {
    /// The artifact listing the spans that serve `reads` (uncompressed tar ranges), in
    /// the order of the reads; a span is listed once, at its first read, with how far
    /// into it any read goes. Consecutive spans of one read become one range (a range
    /// ends at a span not needed whole); priorities count up in read order.
    pub fn from_reads(zinfo: &Zinfo, reads: impl IntoIterator<Item = Range<u64>>) -> Self {
        let mut needed: Vec<Option<u64>> = vec![None; zinfo.span_count()];
        let mut order = Vec::new();
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for read in reads {
            match ranges.last_mut() {
                Some(last)
                    if read.start <= last[1].saturating_add(MERGE_GAP)
                        && read.end.saturating_add(MERGE_GAP) >= last[0] =>
                {
                    *last = [last[0].min(read.start), last[1].max(read.end)];
                }
                _ if read.start < read.end => ranges.push([read.start, read.end]),
                _ => {}
            }
            for span in zinfo.spans_for(read.clone()) {
                let span_end = zinfo.uncompressed_range(span).map_or(0, |u| u.end);
                let end = read.end.min(span_end);
                match &mut needed[span] {
                    Some(seen) => *seen = (*seen).max(end),
                    slot => {
                        *slot = Some(end);
                        order.push(span);
                    }
                }
            }
        }
        let partial = |span: usize| {
            let span_end = zinfo.uncompressed_range(span).map_or(0, |u| u.end);
            needed[span].filter(|&end| end < span_end)
        };
        let mut out: Vec<PrefetchSpan> = Vec::new();
        for span in order {
            let span_id = u32::try_from(span).unwrap_or(u32::MAX);
            match out.last_mut() {
                Some(last)
                    if last.end_span.checked_add(1) == Some(span_id)
                        && last.uncompressed_end.is_none() =>
                {
                    last.end_span = span_id;
                    last.uncompressed_end = partial(span);
                }
                _ => out.push(PrefetchSpan {
                    start_span: span_id,
                    end_span: span_id,
                    priority: out.len() as i64,
                    uncompressed_end: partial(span),
                }),
            }
        }
        PrefetchArtifact {
            version: PREFETCH_VERSION.to_owned(),
            prefetch_spans: out,
            ranges,
        }
    }

    /// The `ranges` inside a layer of `size` uncompressed bytes, as ranges (clamped;
    /// empty ones dropped).
    pub fn ranges_within(&self, size: u64) -> Vec<Range<u64>> {
        self.ranges
            .iter()
            .map(|&[a, b]| a.min(size)..b.min(size))
            .filter(|r| r.start < r.end)
            .collect()
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
        self.span_ends().into_iter().map(|(span, _)| span).collect()
    }

    /// [`Self::span_order`], each span with how far into it it is needed (`None`: all).
    pub fn span_ends(&self) -> Vec<(usize, Option<u64>)> {
        let mut ranges = self.prefetch_spans.clone();
        ranges.sort_by_key(|s| s.priority);
        let mut out: Vec<(usize, Option<u64>)> = Vec::new();
        let mut at: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        for r in &ranges {
            for span in r.start_span as usize..=r.end_span as usize {
                let end = if span == r.end_span as usize {
                    r.uncompressed_end
                } else {
                    None
                };
                match at.get(&span) {
                    // Listed twice: the farthest end wins.
                    Some(&i) => out[i].1 = out[i].1.zip(end).map(|(a, b)| a.max(b)),
                    None => {
                        at.insert(span, out.len());
                        out.push((span, end));
                    }
                }
            }
        }
        out
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
                    uncompressed_end: Some(1000),
                },
                PrefetchSpan {
                    start_span: 0,
                    end_span: 0,
                    priority: 1,
                    uncompressed_end: None,
                },
            ],
            ranges: vec![[10, 20], [5000, 9000]],
        };
        let bytes = a.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["prefetch_spans"][0]["start_span"], 3);
        assert_eq!(v["prefetch_spans"][0]["end_span"], 4);
        assert_eq!(v["prefetch_spans"][1]["priority"], 1);
        assert_eq!(PrefetchArtifact::from_bytes(&bytes, 5).unwrap(), a);
        assert_eq!(a.span_order(), vec![3, 4, 0]);
        assert_eq!(a.span_ends(), vec![(3, None), (4, Some(1000)), (0, None)]);
        assert_eq!(v["prefetch_spans"][0]["uncompressed_end"], 1000);
        assert!(v["prefetch_spans"][1].get("uncompressed_end").is_none());
        assert_eq!(a.ranges_within(6000), vec![10..20, 5000..6000]);
        let without: PrefetchArtifact =
            serde_json::from_slice(br#"{"version":"1.0","prefetch_spans":[]}"#).unwrap();
        assert!(without.ranges.is_empty());
        assert!(matches!(
            PrefetchArtifact::from_bytes(&bytes, 4),
            Err(PrefetchError::Range { .. })
        ));
        let v2 = br#"{"version":"2.0","prefetch_spans":[]}"#;
        assert!(PrefetchArtifact::from_bytes(v2, 4).is_err());
    }
}
