//! Learned ranges: each decodes, from exactly its compressed bytes, to the tar's bytes it
//! needs; it fetches less than whole blocks would; its decoder goes on block by block;
//! wrong bytes and hostile blobs are refused.

use std::ops::Range;

use crate::testutil::pseudo_random_bytes;

use super::learned::{LearnedError, LearnedRange, LearnedRanges, LearnedStart};
use super::*;

/// A layer of incompressible files and text (resume points in both), gzip'd, indexed with
/// 4 KiB... 64 KiB blocks.
fn layer(block_size: u64) -> (Vec<u8>, Vec<u8>, Zinfo, SpanBlocks, Vec<u8>) {
    let mut tar = crate::testutil::TarBuilder::new();
    tar.file("a.bin", &pseudo_random_bytes(3, 3 << 20));
    for i in 0..300usize {
        tar.file(&format!("t/{i}.txt"), &super::tests::text(i as u64, 5000));
    }
    tar.file("b.bin", &pseudo_random_bytes(4, 2 << 20));
    let tar = tar.finish();
    let blob = super::tests::gzip(&tar);
    let o = BuildOptions {
        index_budget_per_mille: 1000,
        ..super::tests::opts(1 << 20, 1 << 20)
    };
    let (ztoc, blocks, windows) =
        build_ztoc_with_blocks(&blob[..], Compression::Gzip, &o, block_size).unwrap();
    let z = Zinfo::new(&ztoc).unwrap();
    (tar, blob, z, blocks, windows)
}

fn reads(tar_len: u64, z: &Zinfo) -> Vec<Range<u64>> {
    let span_end = z.uncompressed_range(0).unwrap().end;
    vec![
        // Small ones inside a.bin, and one across a span end.
        200_000..210_000,
        500_000..520_000,
        1_500_000..1_530_000,
        2_600_000..2_640_000,
        span_end - 5000..span_end + 7000,
        // Two close ones in the text, then one in b.bin, then one inside an earlier one.
        3_300_000..3_301_000,
        3_302_000..3_340_000,
        tar_len - 900_000..tar_len - 880_000,
        201_000..205_000,
    ]
}

fn build(
    blob: &[u8],
    z: &Zinfo,
    blocks: &SpanBlocks,
    windows: &[u8],
    reads: &[Range<u64>],
) -> LearnedRanges {
    LearnedRanges::build(z, blocks, windows, reads, |r| {
        Ok(blob[r.start as usize..r.end as usize].to_vec())
    })
    .unwrap()
}

#[test]
fn learned_ranges_decode_exactly_what_they_need_from_fewer_bytes_than_blocks() {
    let (tar, blob, z, blocks, windows) = layer(DEFAULT_BLOCK_SIZE);
    assert!(!blocks.points().is_empty());
    let reads = reads(tar.len() as u64, &z);
    let learned = build(&blob, &z, &blocks, &windows, &reads);
    assert!(learned
        .ranges
        .iter()
        .any(|r| matches!(r.start, LearnedStart::Point { .. })));
    assert!(learned
        .ranges
        .iter()
        .any(|r| r.start == LearnedStart::Checkpoint));
    for read in &reads {
        for span in z.spans_for(read.clone()) {
            let u = z.uncompressed_range(span).unwrap();
            let part = read.start.max(u.start)..read.end.min(u.end);
            assert!(
                learned.ranges.iter().any(|r| r.span == span
                    && r.needed.start <= part.start
                    && part.end <= r.needed.end),
                "{part:?} of span {span} is covered"
            );
        }
    }
    // Decoding starts at a block end before each read, closer than the index's points.
    let mut closer = 0;
    for r in &learned.ranges {
        let LearnedStart::Point { uncompressed, .. } = r.start else {
            continue;
        };
        let index_point = blocks
            .points_of(r.span)
            .iter()
            .filter(|p| p.uncompressed <= r.needed.start)
            .map(|p| p.uncompressed)
            .max();
        assert!(index_point.is_none_or(|p| p <= uncompressed), "{r:?}");
        closer += usize::from(index_point.is_none_or(|p| p < uncompressed));
    }
    assert!(
        closer >= 2,
        "{closer} ranges start closer than the index's points"
    );
    let (mut exact, mut whole) = (0, 0);
    for r in &learned.ranges {
        let bytes = &blob[r.compressed.start as usize..r.compressed.end as usize];
        let decoded = r.decode(&z, &blocks, bytes).unwrap();
        let from = (r.needed.start - decoded.start) as usize;
        let to = (r.needed.end - decoded.start) as usize;
        assert!(decoded.out[from..to] == tar[r.needed.start as usize..r.needed.end as usize]);
        // Whole blocks from the same start through the block giving the last byte.
        let last = blocks.needed(r.span, r.needed.end) - 1;
        let block_end = blocks.compressed_range(&z, r.span, last).unwrap().end;
        assert!(r.compressed.end <= block_end);
        let first = blocks.compressed_range(&z, r.span, 0).unwrap().start;
        let first_block =
            (r.compressed.start - first) / DEFAULT_BLOCK_SIZE * DEFAULT_BLOCK_SIZE + first;
        exact += r.compressed.end - r.compressed.start;
        whole += block_end - first_block;
    }
    assert!(
        exact * 10 < whole * 9,
        "exact {exact} against whole blocks {whole}"
    );
    // Wrong bytes are refused.
    let r = &learned.ranges[0];
    let mut bad = blob[r.compressed.start as usize..r.compressed.end as usize].to_vec();
    bad[10] ^= 1;
    assert!(matches!(
        r.decode(&z, &blocks, &bad),
        Err(SpanError::BlockDigest { .. })
    ));
    let parsed = LearnedRanges::from_bytes(&learned.to_bytes(), &z, &blocks).unwrap();
    assert_eq!(parsed, learned);
}

#[test]
fn a_learned_decoder_goes_on_block_by_block_to_the_span_end() {
    let (tar, blob, z, blocks, windows) = layer(4096);
    let learned = build(&blob, &z, &blocks, &windows, &reads(tar.len() as u64, &z));
    for r in &learned.ranges {
        let bytes = &blob[r.compressed.start as usize..r.compressed.end as usize];
        let mut d = r.decode(&z, &blocks, bytes).unwrap();
        for block in d.decoder.next_block()..blocks.count(r.span) {
            let c = blocks.compressed_range(&z, r.span, block).unwrap();
            d.decoder
                .feed(&blob[c.start as usize..c.end as usize], &mut d.out)
                .unwrap();
        }
        let u = z.uncompressed_range(r.span).unwrap();
        assert_eq!(d.start + d.out.len() as u64, u.end, "{r:?}");
        assert!(d.out[..] == tar[d.start as usize..u.end as usize], "{r:?}");
    }
}

#[test]
fn hostile_learned_ranges_are_refused() {
    let (tar, blob, z, blocks, windows) = layer(DEFAULT_BLOCK_SIZE);
    let learned = build(&blob, &z, &blocks, &windows, &reads(tar.len() as u64, &z));
    let good = learned.to_bytes();
    let refused = |bytes: &[u8]| LearnedRanges::from_bytes(bytes, &z, &blocks).is_err();
    assert!(matches!(
        LearnedRanges::from_bytes(b"nonsense", &z, &blocks),
        Err(LearnedError::Magic)
    ));
    assert!(refused(&good[..good.len() - 1]));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(refused(&trailing));
    // The first entry's start kind (after magic, count, span and the needed range).
    let mut bad = good.clone();
    bad[32] = 7;
    assert!(refused(&bad));
    let u0 = z.uncompressed_range(0).unwrap();
    type Change = Box<dyn Fn(&mut LearnedRange)>;
    let changes: Vec<(&str, Change)> = vec![
        ("span", Box::new(|r| r.span = 10_000)),
        ("needed start", Box::new(|r| r.needed.start = u64::MAX)),
        ("needed end", Box::new(|r| r.needed.end = u64::MAX)),
        ("compressed start", Box::new(|r| r.compressed.start += 1)),
        ("compressed end", Box::new(|r| r.compressed.end = u64::MAX)),
        (
            "point outside the span",
            Box::new(move |r| {
                r.start = LearnedStart::Point {
                    compressed: 1,
                    uncompressed: u0.end + 1,
                    bits: 0,
                }
            }),
        ),
        (
            "bits",
            Box::new(|r| {
                if let LearnedStart::Point { bits, .. } = &mut r.start {
                    *bits = 9;
                } else {
                    r.window = vec![1];
                }
            }),
        ),
    ];
    for (what, change) in changes {
        let mut bad = learned.clone();
        change(&mut bad.ranges[0]);
        assert!(refused(&bad.to_bytes()), "{what}");
    }
}
