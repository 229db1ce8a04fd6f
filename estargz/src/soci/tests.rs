//! Round trips of whole layers built in code: build a zTOC, then every span must decode to
//! exactly the bytes flate2 gives for the same range, and the file table must match the tar.

use std::io::Write;

use proptest::prelude::*;

use crate::testutil::{pseudo_random_bytes, TarBuilder};

use super::*;

/// Text-like bytes (compressible, so deflate makes many blocks with odd bit ends).
pub(super) fn text(seed: u64, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "layer ",
        "span ",
        "gzip ",
        "checkpoint ",
        "window\n",
        "registry ",
        "fetch ",
        "containerd ",
        "overlay ",
        "snapshot ",
        "lazy ",
        "pull ",
    ];
    let noise = pseudo_random_bytes(seed, len);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        let r = noise[i % noise.len().max(1)];
        if r < 20 {
            out.push(r.wrapping_mul(7));
        } else {
            out.extend_from_slice(WORDS[usize::from(r) % WORDS.len()].as_bytes());
        }
        i += 1;
    }
    out.truncate(len);
    out
}

pub(super) fn many_small_files(count: usize) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir("usr/").dir("usr/lib/");
    for i in 0..count {
        let len = (i * 37) % 3000;
        t.file(&format!("usr/lib/f{i:05}"), &text(i as u64, len));
    }
    t.symlink("usr/lib/link", "f00001");
    t.hardlink("usr/lib/hard", "usr/lib/f00002");
    t.char_device("dev/null", 1, 3);
    t.finish()
}

fn large_files() -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.file("big/text", &text(1, 9 << 20));
    t.file("big/random", &pseudo_random_bytes(2, 1 << 20));
    t.file("big/zeros", &vec![0; 2 << 20]);
    t.finish()
}

pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// pigz-style: independent members, here cut at uneven points.
pub(super) fn gzip_members(data: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, chunk) in data.chunks(piece + 1234).enumerate() {
        let mut e = flate2::GzBuilder::new()
            .filename(format!("part{i}"))
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(chunk).unwrap();
        out.extend(e.finish().unwrap());
    }
    out
}

pub(super) fn opts(span: u64, min: u64) -> BuildOptions {
    BuildOptions {
        span_size: span,
        min_span_size: min,
        ..BuildOptions::default()
    }
}

pub(super) fn span_bytes<'a>(z: &Zinfo, blob: &'a [u8], span: usize) -> &'a [u8] {
    let r = z.compressed_range(span).unwrap();
    &blob[usize::try_from(r.start).unwrap()..usize::try_from(r.end).unwrap()]
}

/// Builds, round-trips the flatbuffer, and checks every span and the file table.
fn check_layer(tar: &[u8], blob: &[u8], compression: Compression, o: &BuildOptions) -> Ztoc {
    let built = build_ztoc(blob, compression, o).unwrap();
    let ztoc = Ztoc::from_bytes(&built.to_bytes()).unwrap();
    assert_eq!(ztoc, built);
    assert_eq!(ztoc.uncompressed_archive_size, tar.len() as u64);
    assert_eq!(ztoc.compressed_archive_size, blob.len() as u64);
    let z = Zinfo::new(&ztoc).unwrap();
    let mut joined = Vec::new();
    for span in 0..z.span_count() {
        let out = decompress_span(&z, span, span_bytes(&z, blob, span)).unwrap();
        let r = z.uncompressed_range(span).unwrap();
        assert_eq!(out.len() as u64, r.end - r.start, "span {span}");
        joined.extend(out);
    }
    assert!(joined == tar, "spans concatenate to the tar");
    let listing = crate::testutil::tar_listing(tar);
    let names: Vec<_> = ztoc
        .files
        .iter()
        .map(|f| f.name.trim_end_matches('/').to_owned())
        .collect();
    assert_eq!(names.len(), listing.len());
    for f in &ztoc.files {
        let start = usize::try_from(f.uncompressed_offset).unwrap();
        let end = start + usize::try_from(f.uncompressed_size).unwrap();
        assert!(end <= tar.len(), "{} content inside the tar", f.name);
    }
    ztoc
}

#[test]
fn gzip_layer_of_many_small_files() {
    let tar = many_small_files(3000);
    let blob = gzip(&tar);
    let z = check_layer(&tar, &blob, Compression::Gzip, &opts(256 << 10, 64 << 10));
    assert!(z.max_span_id > 3, "several spans: {}", z.max_span_id);
    let zinfo = Zinfo::new(&z).unwrap();
    assert!(
        (0..zinfo.span_count()).any(|s| zinfo.checkpoint(s).unwrap().bits != 0),
        "some checkpoint starts mid-byte, so priming is exercised"
    );
    let link = z.files.iter().find(|f| f.name == "usr/lib/link").unwrap();
    assert_eq!(link.link_name, "f00001");
    let dev = z.files.iter().find(|f| f.name == "dev/null").unwrap();
    assert_eq!((dev.dev_major, dev.dev_minor), (1, 3));
    let f = z.files.iter().find(|f| f.name == "usr/lib/f00007").unwrap();
    let off = usize::try_from(f.uncompressed_offset).unwrap();
    assert_eq!(&tar[off..off + 259], &text(7, 259)[..]);
}

#[test]
fn gzip_layer_of_large_files_with_default_spans() {
    let tar = large_files();
    let blob = gzip(&tar);
    // 12 MiB that compress to 2.3 MB: a window every 4 MiB would be over the zTOC's
    // share of the budget, so the spans stretch (here into one).
    let z = check_layer(&tar, &blob, Compression::Gzip, &BuildOptions::default());
    assert_eq!(z.max_span_id, 0);
    // Without a budget, regular cuts every 4 MiB.
    let unbudgeted = BuildOptions {
        index_budget_per_mille: 0,
        ..BuildOptions::default()
    };
    let z = check_layer(&tar, &blob, Compression::Gzip, &unbudgeted);
    assert_eq!(z.max_span_id, 2);
}

#[test]
fn concatenated_members_like_pigz() {
    let tar = many_small_files(800);
    for piece in [4096, 100_000, 700_000] {
        let blob = gzip_members(&tar, piece);
        check_layer(&tar, &blob, Compression::Gzip, &opts(64 << 10, 16 << 10));
    }
}

#[test]
fn uncompressed_tar_layer() {
    let tar = many_small_files(500);
    let z = check_layer(
        &tar,
        &tar,
        Compression::Uncompressed,
        &opts(100_000, 100_000),
    );
    assert_eq!(z.max_span_id as usize, tar.len().div_ceil(100_000) - 1);
}

#[test]
fn adaptive_spans_are_closer_for_small_files_and_bounded() {
    // Incompressible small files: an early cut has compressed bytes behind it to pay
    // for its window (the index budget), yet over 64 files start in every 1 MiB.
    let mut t = TarBuilder::new();
    for i in 0..3200 {
        t.file(&format!("f{i}"), &pseudo_random_bytes(i, 10_000));
    }
    let tar = t.finish();
    let blob = gzip(&tar);
    let fixed = build_ztoc(&blob[..], Compression::Gzip, &opts(4 << 20, 4 << 20)).unwrap();
    let adaptive = build_ztoc(&blob[..], Compression::Gzip, &opts(4 << 20, 1 << 20)).unwrap();
    assert!(
        adaptive.max_span_id > fixed.max_span_id,
        "{} vs {}",
        adaptive.max_span_id,
        fixed.max_span_id
    );
    let z = Zinfo::new(&adaptive).unwrap();
    for span in 0..z.span_count() - 1 {
        let r = z.uncompressed_range(span).unwrap();
        assert!(
            r.end - r.start >= 1 << 20,
            "span {span} respects the minimum"
        );
    }
    check_layer(&tar, &blob, Compression::Gzip, &opts(4 << 20, 1 << 20));
}

#[test]
fn corrupted_span_is_a_digest_error() {
    let tar = many_small_files(1000);
    let blob = gzip(&tar);
    let ztoc = build_ztoc(&blob[..], Compression::Gzip, &opts(64 << 10, 64 << 10)).unwrap();
    let z = Zinfo::new(&ztoc).unwrap();
    let mut bytes = span_bytes(&z, &blob, 1).to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    assert!(matches!(
        decompress_span(&z, 1, &bytes),
        Err(SpanError::Digest { span: 1, .. })
    ));
    let short = &span_bytes(&z, &blob, 1)[1..];
    assert!(matches!(
        decompress_span(&z, 1, short),
        Err(SpanError::Length { .. })
    ));
}

#[test]
fn damaged_blobs_fail_to_index() {
    let tar = many_small_files(200);
    let blob = gzip(&tar);
    let cut = &blob[..blob.len() - 20];
    assert!(build_ztoc(cut, Compression::Gzip, &BuildOptions::default()).is_err());
    let mut bad = blob.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xff; // ISIZE
    assert!(matches!(
        build_ztoc(&bad[..], Compression::Gzip, &BuildOptions::default()),
        Err(BuildError::Gzip(_))
    ));
    assert!(build_ztoc(&tar[..], Compression::Gzip, &BuildOptions::default()).is_err());
}

#[test]
fn hostile_checkpoints_are_refused() {
    let tar = many_small_files(300);
    let blob = gzip(&tar);
    let ztoc = build_ztoc(&blob[..], Compression::Gzip, &opts(32 << 10, 32 << 10)).unwrap();
    let mut bad = ztoc.clone();
    bad.checkpoints.truncate(bad.checkpoints.len() - 1);
    assert!(Zinfo::new(&bad).is_err());
    let mut bad = ztoc.clone();
    bad.span_digests.pop();
    assert!(Zinfo::new(&bad).is_err());
    let mut bad = ztoc;
    bad.compressed_archive_size = 5;
    assert!(Zinfo::new(&bad).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_range_reads_from_its_spans(start in 0usize..400_000, len in 0usize..200_000, piece in 20_000usize..300_000) {
        static TAR: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let tar = TAR.get_or_init(|| many_small_files(600));
        let blob = gzip_members(tar, piece);
        let ztoc = build_ztoc(&blob[..], Compression::Gzip, &opts(48 << 10, 16 << 10)).unwrap();
        let z = Zinfo::new(&ztoc).unwrap();
        let start = start % tar.len();
        let end = (start + len).min(tar.len());
        let spans = z.spans_for(start as u64..end as u64);
        let mut out = Vec::new();
        for span in spans.clone() {
            out.extend(decompress_span(&z, span, span_bytes(&z, &blob, span)).unwrap());
        }
        if start < end {
            let first = z.uncompressed_range(spans.start).unwrap().start as usize;
            prop_assert!(first <= start);
            prop_assert_eq!(&out[start - first..end - first], &tar[start..end]);
        } else {
            prop_assert!(spans.is_empty());
        }
    }
}

/// Builds with blocks, checks the blob round-trips, and that every prefix of every span
/// decodes at least to its recorded end, matching the tar.
fn check_blocks(tar: &[u8], blob: &[u8], compression: Compression, o: &BuildOptions) -> SpanBlocks {
    let (ztoc, blocks, windows) = build_ztoc_with_blocks(blob, compression, o, 4096).unwrap();
    assert_eq!(ztoc, build_ztoc(blob, compression, o).unwrap(), "same ztoc");
    let z = Zinfo::new(&ztoc).unwrap();
    let parsed = SpanBlocks::from_bytes(&blocks.to_bytes(), &z).unwrap();
    assert_eq!(parsed, blocks);
    super::tests_resume::check_points(tar, blob, &z, &blocks, &windows);
    let mut partial_prefixes = 0;
    for span in 0..z.span_count() {
        let u = z.uncompressed_range(span).unwrap();
        let c = z.compressed_range(span).unwrap();
        for count in 1..=blocks.count(span) {
            let end = blocks.compressed_range(&z, span, count - 1).unwrap().end;
            let prefix = &blob[c.start as usize..end as usize];
            let out = decompress_prefix(&z, &blocks, span, count, prefix).unwrap();
            let want = blocks.block(span, count - 1).unwrap().uncompressed_end - u.start;
            assert!(
                out.len() as u64 >= want,
                "span {span} blocks {count}: {} < {want}",
                out.len()
            );
            let at = u.start as usize;
            assert!(
                out[..] == tar[at..at + out.len()],
                "span {span} blocks {count}"
            );
            if count == blocks.count(span) {
                assert_eq!(out.len() as u64, u.end - u.start, "whole span {span}");
            } else {
                partial_prefixes += 1;
            }
            assert_eq!(
                blocks.needed(
                    span,
                    blocks.block(span, count - 1).unwrap().uncompressed_end
                ),
                blocks
                    .needed(
                        span,
                        blocks.block(span, count - 1).unwrap().uncompressed_end
                    )
                    .min(count),
            );
        }
        assert_eq!(blocks.needed(span, u.end), blocks.count(span));
    }
    assert!(partial_prefixes > 0, "spans have several blocks");
    blocks
}

#[test]
fn span_prefixes_decode_block_by_block() {
    let tar = many_small_files(3000);
    let blob = gzip(&tar);
    check_blocks(&tar, &blob, Compression::Gzip, &opts(256 << 10, 64 << 10));
    for piece in [4096, 100_000] {
        let blob = gzip_members(&tar, piece);
        check_blocks(&tar, &blob, Compression::Gzip, &opts(64 << 10, 16 << 10));
    }
    check_blocks(
        &tar,
        &tar,
        Compression::Uncompressed,
        &opts(100_000, 100_000),
    );
    let tar = large_files();
    check_blocks(
        &tar,
        &gzip(&tar),
        Compression::Gzip,
        &BuildOptions::default(),
    );
}

#[test]
fn needed_blocks_stop_at_the_first_covering_block() {
    let tar = many_small_files(3000);
    let blob = gzip(&tar);
    let o = opts(1 << 20, 1 << 20);
    let (ztoc, blocks, _) = build_ztoc_with_blocks(&blob[..], Compression::Gzip, &o, 4096).unwrap();
    let z = Zinfo::new(&ztoc).unwrap();
    let u = z.uncompressed_range(0).unwrap();
    assert_eq!(
        blocks.needed(0, u.start + 1),
        1.max(blocks.needed(0, u.start + 1))
    );
    let first_end = blocks.block(0, 0).unwrap().uncompressed_end;
    assert_eq!(
        blocks.needed(0, first_end),
        1,
        "a read inside block 0's output"
    );
    assert_eq!(
        blocks.needed(0, first_end + 1),
        2,
        "one byte more needs block 1"
    );
    assert!(
        blocks.count(0) > 8,
        "a 1 MiB span of text has many 4 KiB blocks"
    );
}

#[test]
fn corrupted_block_and_hostile_blocks_blobs_are_refused() {
    let tar = many_small_files(1000);
    let blob = gzip(&tar);
    let o = opts(64 << 10, 64 << 10);
    let (ztoc, blocks, _) = build_ztoc_with_blocks(&blob[..], Compression::Gzip, &o, 4096).unwrap();
    let z = Zinfo::new(&ztoc).unwrap();
    let c = z.compressed_range(1).unwrap();
    let end = blocks.compressed_range(&z, 1, 1).unwrap().end;
    let mut prefix = blob[c.start as usize..end as usize].to_vec();
    prefix[5000] ^= 1;
    assert!(matches!(
        decompress_prefix(&z, &blocks, 1, 2, &prefix),
        Err(SpanError::BlockDigest {
            span: 1,
            block: 1,
            ..
        })
    ));
    assert!(matches!(
        decompress_prefix(&z, &blocks, 1, 2, &prefix[..4000]),
        Err(SpanError::Length { .. })
    ));
    let bytes = blocks.to_bytes();
    assert!(SpanBlocks::from_bytes(&bytes[..bytes.len() - 1], &z).is_err());
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(SpanBlocks::from_bytes(&extra, &z).is_err());
    let other = build_ztoc(&blob[..], Compression::Gzip, &opts(512 << 10, 512 << 10)).unwrap();
    assert!(
        SpanBlocks::from_bytes(&bytes, &Zinfo::new(&other).unwrap()).is_err(),
        "blocks of another span geometry"
    );
    let mut wrong_end = bytes.clone();
    // First block's uncompressed end of span 0: past the span.
    wrong_end[8 + 8 + 4 + 4 + 32..8 + 8 + 4 + 4 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(SpanBlocks::from_bytes(&wrong_end, &z).is_err());
}

#[test]
fn blocks_blob_is_tiny_against_the_layer() {
    let tar = large_files();
    let blob = gzip(&tar);
    // No budget: no resume points, only the block digests.
    let (_, blocks, _) = build_ztoc_with_blocks(
        &blob[..],
        Compression::Gzip,
        &BuildOptions {
            index_budget_per_mille: 0,
            ..BuildOptions::default()
        },
        DEFAULT_BLOCK_SIZE,
    )
    .unwrap();
    let ratio = blocks.to_bytes().len() as f64 / blob.len() as f64;
    assert!(ratio < 0.001, "blocks blob is {ratio} of the layer");
}

#[test]
fn prefetch_artifact_keeps_how_far_into_a_span_reads_go() {
    use super::prefetch::PrefetchArtifact;
    let tar = many_small_files(3000);
    let blob = gzip(&tar);
    let ztoc = build_ztoc(&blob[..], Compression::Gzip, &opts(256 << 10, 256 << 10)).unwrap();
    let z = Zinfo::new(&ztoc).unwrap();
    let (s1, s2, s3) = (
        z.uncompressed_range(1).unwrap(),
        z.uncompressed_range(2).unwrap(),
        z.uncompressed_range(3).unwrap(),
    );
    // A read inside span 3, one from span 1 into span 2, a later one further into span 3.
    let reads = [
        s3.start + 10..s3.start + 20,
        s1.start + 5..s2.start + 100,
        s3.start + 30..s3.start + 50,
    ];
    let a = PrefetchArtifact::from_reads(&z, reads);
    assert_eq!(
        a.span_ends(),
        vec![
            (3, Some(s3.start + 50)),
            (1, None),
            (2, Some(s2.start + 100))
        ]
    );
    assert_eq!(a.prefetch_spans.len(), 2, "spans 1 and 2 are one range");
    let whole = PrefetchArtifact::from_reads(&z, std::iter::once(s1.start..s2.end));
    assert_eq!(whole.span_ends(), vec![(1, None), (2, None)]);
}

#[test]
fn wanted_cuts_start_spans_just_before_the_offsets() {
    // Incompressible files: the compressed bytes leave room in the index budget.
    let mut t = TarBuilder::new();
    for i in 0..200 {
        t.file(&format!("f{i:03}"), &pseudo_random_bytes(i, 100_000));
    }
    let tar = t.finish();
    let blob = gzip(&tar);
    let plain = build_ztoc(&blob[..], Compression::Gzip, &BuildOptions::default()).unwrap();
    let wanted: Vec<u64> = ["f050", "f120", "f170"]
        .iter()
        .map(|name| {
            plain
                .files
                .iter()
                .find(|f| f.name == *name)
                .unwrap()
                .uncompressed_offset
        })
        .collect();
    let o = BuildOptions {
        cut_before: wanted.clone(),
        ..BuildOptions::default()
    };
    let ztoc = check_layer(&tar, &blob, Compression::Gzip, &o);
    let z = Zinfo::new(&ztoc).unwrap();
    for &at in &wanted {
        let span = z.span_of(at).unwrap();
        let start = z.uncompressed_range(span).unwrap().start;
        assert!(
            at - start <= 128 << 10,
            "a span starts at most 128 KiB before {at}: {start}"
        );
    }
    assert!(
        ztoc.max_span_id > plain.max_span_id,
        "the wanted cuts were added"
    );
}
