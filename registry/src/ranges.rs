//! Byte-range arithmetic: `Range` headers, `Content-Range` parsing, merging of close ranges.

use std::ops::Range;

/// The `Range` header value for a non-empty `range` (HTTP ranges are inclusive).
pub(crate) fn range_header(range: &Range<u64>) -> String {
    format!("bytes={}-{}", range.start, range.end.saturating_sub(1))
}

/// A parsed `Content-Range: bytes first-last/total` (`total` may be `*`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub(crate) range: Range<u64>,
    pub(crate) total: Option<u64>,
}

pub(crate) fn parse_content_range(value: &str) -> Option<ContentRange> {
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = spec.split_once('/')?;
    let (first, last) = span.trim().split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    if last < first {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        digits => Some(digits.parse::<u64>().ok()?),
    };
    let end = last.checked_add(1)?;
    if total.is_some_and(|total| end > total) {
        return None;
    }
    Some(ContentRange {
        range: first..end,
        total,
    })
}

/// One request covering several requested ranges.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MergedRange {
    pub(crate) range: Range<u64>,
    /// Indexes into the requested ranges that this request serves.
    pub(crate) members: Vec<usize>,
}

/// Groups non-empty `ranges` so that ranges overlapping or separated by at most `max_gap`
/// bytes share one request. Empty ranges are left out (they need no request).
pub(crate) fn merge_ranges(ranges: &[Range<u64>], max_gap: u64) -> Vec<MergedRange> {
    let mut order: Vec<usize> = (0..ranges.len())
        .filter(|&i| ranges[i].start < ranges[i].end)
        .collect();
    order.sort_by_key(|&i| (ranges[i].start, ranges[i].end));
    let mut merged: Vec<MergedRange> = Vec::new();
    for i in order {
        let range = &ranges[i];
        match merged.last_mut() {
            Some(last) if range.start <= last.range.end.saturating_add(max_gap) => {
                last.range.end = last.range.end.max(range.end);
                last.members.push(i);
            }
            _ => merged.push(MergedRange {
                range: range.clone(),
                members: vec![i],
            }),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_table() {
        let cases = [
            ("full", "bytes 0-9/100", Some((0..10, Some(100)))),
            ("unknown total", "bytes 5-5/*", Some((5..6, None))),
            ("spaces", " bytes  10-19/20 ", Some((10..20, Some(20)))),
            ("last before first", "bytes 9-0/100", None),
            ("past total", "bytes 0-100/100", None),
            ("unsatisfied form", "bytes */100", None),
            ("other unit", "items 0-1/2", None),
            ("overflow", "bytes 0-18446744073709551615/*", None),
            ("garbage", "bytes a-b/c", None),
        ];
        for (name, value, expected) in cases {
            let expected = expected.map(|(range, total)| ContentRange { range, total });
            assert_eq!(parse_content_range(value), expected, "{name}");
        }
    }

    #[test]
    fn range_header_is_inclusive() {
        assert_eq!(range_header(&(0..1)), "bytes=0-0");
        assert_eq!(range_header(&(10..20)), "bytes=10-19");
    }

    /// (name, requested ranges, max gap, expected (request, members)).
    type MergeCase = (
        &'static str,
        Vec<Range<u64>>,
        u64,
        Vec<(Range<u64>, Vec<usize>)>,
    );

    #[test]
    fn merge_table() {
        let cases: [MergeCase; 6] = [
            ("none", vec![], 10, vec![]),
            (
                "far apart",
                vec![0..10, 100..110],
                10,
                vec![(0..10, vec![0]), (100..110, vec![1])],
            ),
            (
                "gap within limit",
                vec![0..10, 20..30],
                10,
                vec![(0..30, vec![0, 1])],
            ),
            (
                "unsorted overlap",
                vec![50..60, 0..55],
                0,
                vec![(0..60, vec![1, 0])],
            ),
            (
                "contained",
                vec![0..100, 10..20],
                0,
                vec![(0..100, vec![0, 1])],
            ),
            ("empty skipped", vec![5..5, 0..1], 0, vec![(0..1, vec![1])]),
        ];
        for (name, ranges, gap, expected) in cases {
            let expected: Vec<MergedRange> = expected
                .into_iter()
                .map(|(range, members)| MergedRange { range, members })
                .collect();
            assert_eq!(merge_ranges(&ranges, gap), expected, "{name}");
        }
    }
}
