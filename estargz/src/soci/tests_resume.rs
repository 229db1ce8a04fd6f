//! Resume points: decoding from every kept point with its stored sparse window gives the
//! tar's bytes, hostile points are refused, and the points stay within the index budget.

use crate::testutil::pseudo_random_bytes;

use super::prefix::PrefixDecoder;
use super::sparse_window;
use super::*;

/// Every point of `blocks`: its window entry matches its digest, and its span's blocks
/// from the point's block on decode from it to exactly the tar's bytes.
pub(super) fn check_points(
    tar: &[u8],
    blob: &[u8],
    z: &Zinfo,
    blocks: &SpanBlocks,
    windows: &[u8],
) {
    for point in blocks.points() {
        let w = point.window;
        let entry = &windows[w.offset as usize..w.offset as usize + w.len as usize];
        assert_eq!(crate::Digest::sha256(entry), w.digest);
        let window = sparse_window::decode(entry).unwrap();
        let span = point.span as usize;
        let mut decoder = PrefixDecoder::at_point(z, blocks, point, window).unwrap();
        let mut out = Vec::new();
        for block in point.block as usize..blocks.count(span) {
            let r = blocks.compressed_range(z, span, block).unwrap();
            decoder
                .feed(&blob[r.start as usize..r.end as usize], &mut out)
                .unwrap();
        }
        let u = z.uncompressed_range(span).unwrap();
        assert_eq!(
            out.len() as u64,
            u.end - point.uncompressed,
            "point {point:?}"
        );
        assert!(
            out[..] == tar[point.uncompressed as usize..u.end as usize],
            "point {point:?} decodes to the tar"
        );
    }
}

fn text_tar() -> Vec<u8> {
    let mut tar = crate::testutil::TarBuilder::new();
    for i in 0..2000usize {
        tar.file(&format!("t/{i}.txt"), &super::tests::text(i as u64, 4000));
    }
    tar.finish()
}

#[test]
fn points_are_kept_where_windows_are_cheap_and_decode_exactly() {
    // Poorly compressible data: windows are nearly empty, every block gets a point.
    let mut tar = crate::testutil::TarBuilder::new();
    tar.file("big.bin", &pseudo_random_bytes(7, 3 << 20));
    let tar = tar.finish();
    let blob = super::tests::gzip(&tar);
    let o = BuildOptions::default();
    let (ztoc, blocks, windows) =
        build_ztoc_with_blocks(&blob[..], Compression::Gzip, &o, DEFAULT_BLOCK_SIZE).unwrap();
    let z = Zinfo::new(&ztoc).unwrap();
    let per_span = blob.len() as u64 / DEFAULT_BLOCK_SIZE / z.span_count() as u64;
    assert!(
        blocks.points().len() as u64 >= per_span.saturating_sub(2) * z.span_count() as u64,
        "{} points for {} blocks",
        blocks.points().len(),
        blob.len() as u64 / DEFAULT_BLOCK_SIZE
    );
    assert!(
        windows.len() < blocks.points().len() * 2048,
        "windows are sparse"
    );
    check_points(&tar, &blob, &z, &blocks, &windows);
    let parsed = SpanBlocks::from_bytes(&blocks.to_bytes(), &z).unwrap();
    assert_eq!(parsed, blocks);
}

#[test]
fn points_decode_exactly_from_sparse_windows_of_compressible_data() {
    let tar = text_tar();
    let members = super::tests::gzip_members(&tar, 300_000);
    for blob in [super::tests::gzip(&tar), members] {
        let o = BuildOptions {
            index_budget_per_mille: 1000,
            ..super::tests::opts(1 << 20, 1 << 20)
        };
        let (ztoc, blocks, windows) =
            build_ztoc_with_blocks(&blob[..], Compression::Gzip, &o, 4096).unwrap();
        let z = Zinfo::new(&ztoc).unwrap();
        assert!(
            blocks.points().len() > 10,
            "{} points, blob {}",
            blocks.points().len(),
            blob.len()
        );
        assert!(!windows.is_empty(), "text refers to its windows");
        let full = blocks.points().len() * 32 * 1024;
        assert!(windows.len() < full / 4, "{} of {full}", windows.len());
        check_points(&tar, &blob, &z, &blocks, &windows);
    }
}

#[test]
fn the_index_with_points_stays_within_three_percent() {
    for tar in [text_tar(), super::tests::many_small_files(3000)] {
        let blob = super::tests::gzip(&tar);
        let o = super::tests::opts(256 << 10, 64 << 10);
        let (ztoc, blocks, windows) =
            build_ztoc_with_blocks(&blob[..], Compression::Gzip, &o, 4096).unwrap();
        let index = ztoc.to_bytes().len() + blocks.to_bytes().len() + windows.len();
        let budget = (blob.len() * 30 / 1000).max(ztoc.to_bytes().len() + blocks.to_bytes().len());
        assert!(index <= budget, "index {index} > {budget}");
        let z = Zinfo::new(&ztoc).unwrap();
        check_points(&tar, &blob, &z, &blocks, &windows);
    }
}

#[test]
fn hostile_points_are_refused() {
    let mut tar = crate::testutil::TarBuilder::new();
    tar.file("big.bin", &pseudo_random_bytes(9, 3 << 20));
    let tar = tar.finish();
    let blob = super::tests::gzip(&tar);
    let (ztoc, blocks, _) =
        build_ztoc_with_blocks(&blob[..], Compression::Gzip, &BuildOptions::default(), 4096)
            .unwrap();
    let z = Zinfo::new(&ztoc).unwrap();
    assert!(!blocks.points().is_empty());
    let good = blocks.to_bytes();
    let points_at = good.len() - blocks.points().len() * resume::POINT_BYTES as usize;
    // Fields of the first point: span, block, compressed, uncompressed, bits.
    for (at, value) in [
        (0, u32::MAX as u64),
        (4, 0),
        (8, 0),
        (16, u64::MAX),
        (24, 9),
    ] {
        let mut bad = good.clone();
        let field = &mut bad[points_at + at..];
        let bytes = value.to_le_bytes();
        let len = if at == 24 {
            1
        } else if at < 8 {
            4
        } else {
            8
        };
        field[..len].copy_from_slice(&bytes[..len]);
        assert!(
            SpanBlocks::from_bytes(&bad, &z).is_err(),
            "field at {at} = {value}"
        );
    }
    // Leftover bits at compressed byte 0: no byte before it to take them from.
    let mut bad = good.clone();
    bad[points_at + 8..points_at + 16].copy_from_slice(&0u64.to_le_bytes());
    bad[points_at + 24] = 3;
    assert!(SpanBlocks::from_bytes(&bad, &z).is_err());
    // A blob of the previous layout (no points) still reads.
    let mut v1 = good[..points_at - 4].to_vec();
    v1[..8].copy_from_slice(b"ESZBLK01");
    assert!(SpanBlocks::from_bytes(&v1, &z).unwrap().points().is_empty());
}

#[test]
fn the_lite_ztoc_is_small_and_every_span_inflates_from_it_as_from_the_ztoc() {
    let text = text_tar();
    let mut random = crate::testutil::TarBuilder::new();
    random.file("big.bin", &pseudo_random_bytes(11, 6 << 20));
    for tar in [text, random.finish()] {
        let blob = super::tests::gzip(&tar);
        let o = super::tests::opts(256 << 10, 256 << 10);
        let built = build_index(&blob[..], Compression::Gzip, &o, DEFAULT_BLOCK_SIZE).unwrap();
        let lite = from_lite(&built.lite).unwrap();
        assert_eq!(lite.files, built.ztoc.files);
        assert_eq!(lite.span_digests, built.ztoc.span_digests);
        let full = built.ztoc.to_bytes().len();
        assert!(
            built.lite.len() * 2 < full,
            "lite {} of {full}",
            built.lite.len()
        );
        let (z, zl) = (Zinfo::new(&built.ztoc).unwrap(), Zinfo::new(&lite).unwrap());
        assert!(z.span_count() > 3);
        for span in 0..z.span_count() {
            let bytes = super::tests::span_bytes(&z, &blob, span);
            assert_eq!(
                decompress_span(&zl, span, bytes).unwrap(),
                decompress_span(&z, span, bytes).unwrap(),
                "span {span}"
            );
        }
    }
    assert!(from_lite(b"not zstd").is_err());
}

#[test]
fn spans_stretch_where_windows_would_outgrow_the_budget_and_the_index_stays_within_it() {
    // Large text files between some binaries (about 3:1 overall): a window per
    // `span_size` of output would be several per cent of the layer, so regular cuts wait.
    let mut t = crate::testutil::TarBuilder::new();
    for i in 0..32u64 {
        t.file(&format!("doc/{i}.txt"), &super::tests::text(i, 256 << 10));
        t.file(
            &format!("bin/{i}"),
            &crate::testutil::pseudo_random_bytes(i, 64 << 10),
        );
    }
    let tar = t.finish();
    let blob = super::tests::gzip(&tar);
    let span = 512 << 10;
    let built = super::build_index(
        &blob[..],
        Compression::Gzip,
        &super::tests::opts(span, span),
        64 << 10,
    )
    .unwrap();
    let z = Zinfo::new(&built.ztoc).unwrap();
    let longest = (0..z.span_count())
        .map(|s| z.uncompressed_range(s).map(|r| r.end - r.start).unwrap())
        .max()
        .unwrap();
    let index = built.ztoc.to_bytes().len()
        + built.blocks.to_bytes().len()
        + built.windows.len()
        + built.lite.len();
    eprintln!(
        "blob {} tar {} spans {} longest {longest} index {index}",
        blob.len(),
        tar.len(),
        z.span_count()
    );
    assert!(longest > span, "no span was stretched: longest {longest}");
    assert!(longest <= 16 * span + (128 << 10), "longest span {longest}");
    assert!(
        index * 1000 <= blob.len() * 30,
        "index {index} over 3 % of {}",
        blob.len()
    );
    check_points(&tar, &blob, &z, &built.blocks, &built.windows);
}
