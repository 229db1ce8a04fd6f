//! Round trips through writer and reader, layout checks, and corrupt inputs.

use crate::testutil::{
    decompress_blob, pseudo_random_bytes, tar_listing, EntrySpec, LongNames, TarBuilder,
};
use crate::writer::{build, Compression, WriteError, WriteResult, WriterOptions};
use crate::{
    Digest, EntryType, Format, ReadError, Reader, TocEntry, NO_PREFETCH_LANDMARK,
    PREFETCH_LANDMARK, TOC_TAR_NAME,
};

const GZIP: Compression = Compression::Gzip { level: 6 };
const ZSTD: Compression = Compression::Zstd { level: 3 };

fn options(compression: Compression, chunk_size: u64) -> WriterOptions {
    WriterOptions {
        chunk_size,
        compression,
        prioritized_files: Vec::new(),
        threads: 2,
        spool_dir: None,
    }
}

fn format_of(compression: Compression) -> Format {
    match compression {
        Compression::Gzip { .. } => Format::Estargz,
        Compression::Zstd { .. } => Format::ZstdChunked,
    }
}

fn convert(tar: &[u8], opts: &WriterOptions) -> (Vec<u8>, WriteResult) {
    let mut blob = Vec::new();
    let result = build(tar, &mut blob, opts).expect("convert");
    (blob, result)
}

/// A tree with every entry kind and metadata feature.
fn sample_tree() -> Vec<u8> {
    let long_dir = "d".repeat(90);
    let long_name = format!("{long_dir}/{}", "f".repeat(120));
    let gnu_name = format!("{long_dir}/{}", "g".repeat(130));
    let mut tar = TarBuilder::new();
    tar.dir("etc")
        .file("etc/hostname", b"box\n")
        .file("etc/empty", b"")
        .entry(
            EntrySpec::new("usr", EntryType::Dir)
                .mode(0o1777)
                .mtime(1_600_000_000),
        )
        .entry(
            EntrySpec::new("usr/bin", EntryType::Dir)
                .owner(1000, 1001, "alice", "staff")
                .xattr("user.dir", b"d"),
        )
        .entry(
            EntrySpec::new("usr/bin/tool", EntryType::Reg)
                .content(&pseudo_random_bytes(1, 100_000))
                .mode(0o4755)
                .owner(0, 0, "root", "root")
                .xattr("security.capability", &[1, 0, 0, 2, 0, 0xff])
                .xattr("user.comment", b"hello world"),
        )
        .entry(
            EntrySpec::new("usr/bin/sg", EntryType::Reg)
                .content(b"#!/bin/sh\n")
                .mode(0o2711),
        )
        .symlink("usr/bin/link", "tool")
        .hardlink("usr/bin/hard", "usr/bin/tool")
        .char_device("dev-null", 1, 3)
        .block_device("dev-sda", 8, 0)
        .fifo("pipe")
        .dir(&long_dir)
        .file(&long_name, b"long name content")
        .symlink(&format!("{long_dir}/longlink"), &"t".repeat(150));
    tar.long_names(LongNames::Gnu)
        .file(&gnu_name, b"gnu long name")
        .long_names(LongNames::Pax)
        .whiteout("etc", "removed")
        .opaque("usr")
        .file("./dot-slash", &vec![b'a'; 70_000])
        .entry(EntrySpec::new("old", EntryType::Reg).content(b"o").mtime(0));
    tar.finish()
}

/// Converts `tar`, opens the blob and checks every digest, size, file and listing.
fn check_round_trip(tar: &[u8], opts: &WriterOptions) -> (Vec<u8>, WriteResult) {
    let (blob, result) = convert(tar, opts);
    assert_eq!(Digest::sha256(&blob), result.blob_digest);
    assert_eq!(blob.len() as u64, result.compressed_size);
    let stream = decompress_blob(format_of(opts.compression), &blob);
    assert_eq!(Digest::sha256(&stream), result.diff_id);
    assert_eq!(stream.len() as u64, result.uncompressed_size);
    assert_eq!(
        tar_listing(&stream),
        tar_listing(tar),
        "unpacked trees differ"
    );

    let reader = Reader::open(blob.as_slice(), Some(&result.toc_digest)).expect("open blob");
    assert_eq!(reader.footer().toc_offset, result.toc_offset);
    assert_eq!(reader.footer().format, format_of(opts.compression));
    let index = reader.index();
    for (name, summary) in tar_listing(tar) {
        let id = index
            .lookup(&name)
            .unwrap_or_else(|| panic!("{name} not indexed"));
        let entry = index.entry(id).expect("entry");
        if summary.kind == '1' {
            continue;
        }
        assert_eq!(entry.mode, summary.mode & 0o7777, "{name} mode");
        assert_eq!(u64::from(entry.uid), summary.uid, "{name} uid");
        assert_eq!(u64::from(entry.gid), summary.gid, "{name} gid");
        if !summary.uname.is_empty() {
            // An empty name is filled from an earlier entry of that uid, as Go readers do.
            assert_eq!(&*entry.user_name, summary.uname, "{name} uname");
        }
        assert_eq!(entry.mtime, summary.mtime as i64, "{name} mtime");
        assert_eq!(entry.xattrs, summary.xattrs, "{name} xattrs");
        match summary.kind {
            '0' => {
                let data = reader.read_file(&name).expect("read file");
                assert_eq!(
                    Some(Digest::sha256(&data)),
                    summary.sha256,
                    "{name} content"
                );
                assert_eq!(entry.size, summary.size);
                assert_eq!(entry.digest, summary.sha256, "{name} toc digest");
            }
            '2' => assert_eq!(&*entry.link_target, summary.link, "{name} target"),
            '3' | '4' => {
                assert_eq!(
                    (entry.dev_major, entry.dev_minor),
                    (summary.dev_major, summary.dev_minor)
                )
            }
            _ => {}
        }
    }
    reader.verify_all().expect("verify all");
    (blob, result)
}

#[test]
fn round_trips_sample_tree_gzip() {
    check_round_trip(&sample_tree(), &options(GZIP, 4 << 20));
}

#[test]
fn round_trips_sample_tree_zstd() {
    let (blob, result) = check_round_trip(&sample_tree(), &options(ZSTD, 4 << 20));
    let manifest = result.zstd_manifest.expect("zstd manifest info");
    let start = manifest.offset as usize;
    let compressed = &blob[start..start + manifest.compressed_len as usize];
    assert_eq!(Digest::sha256(compressed), manifest.checksum);
    let annotations = result.annotations();
    assert!(annotations.contains(&(
        crate::ZSTD_MANIFEST_POSITION_ANNOTATION.to_string(),
        format!(
            "{}:{}:{}:1",
            manifest.offset, manifest.compressed_len, manifest.uncompressed_len
        )
    )));
}

#[test]
fn round_trips_small_chunks_both_formats() {
    for compression in [GZIP, ZSTD] {
        check_round_trip(&sample_tree(), &options(compression, 4096));
    }
}

#[test]
fn annotations_carry_toc_digest_and_size() {
    let (_, result) = convert(&sample_tree(), &options(GZIP, 1 << 20));
    let annotations = result.annotations();
    assert_eq!(
        annotations,
        vec![
            (
                crate::TOC_DIGEST_ANNOTATION.to_string(),
                result.toc_digest.to_string()
            ),
            (
                crate::UNCOMPRESSED_SIZE_ANNOTATION.to_string(),
                result.uncompressed_size.to_string()
            ),
        ]
    );
}

#[test]
fn chunks_files_at_every_boundary() {
    for chunk_size in [1u64, 7, 512, 4096] {
        let sizes = [
            0,
            1,
            chunk_size - 1,
            chunk_size,
            chunk_size + 1,
            3 * chunk_size,
            3 * chunk_size + 5,
        ];
        let mut tar = TarBuilder::new();
        for (i, size) in sizes.iter().enumerate() {
            tar.file(
                &format!("f{i}"),
                &pseudo_random_bytes(i as u64 + 7, *size as usize),
            );
        }
        let tar = tar.finish();
        for compression in [GZIP, ZSTD] {
            let (blob, _) = check_round_trip(&tar, &options(compression, chunk_size));
            let reader = Reader::open(blob.as_slice(), None).expect("open");
            for (i, size) in sizes.iter().enumerate() {
                let id = reader.index().lookup(&format!("f{i}")).expect("file");
                let chunks = reader.index().chunks(id);
                assert_eq!(
                    chunks.len() as u64,
                    size.div_ceil(chunk_size),
                    "size {size} chunk {chunk_size}"
                );
                for chunk in chunks {
                    let found = reader
                        .index()
                        .chunk_at(id, chunk.file_offset + chunk.size - 1);
                    assert_eq!(found, Some(chunk));
                }
                assert_eq!(reader.index().chunk_at(id, *size), None);
            }
            let records: Vec<&TocEntry> = reader
                .toc()
                .entries
                .iter()
                .filter(|e| e.name == "f5")
                .collect();
            assert_eq!(records.len(), 3);
            assert!(
                records.iter().all(|r| r.chunk_size == chunk_size),
                "full chunks name their size"
            );
            let last: Vec<&TocEntry> = reader
                .toc()
                .entries
                .iter()
                .filter(|e| e.name == "f6")
                .collect();
            assert_eq!(
                last.last().map(|r| r.chunk_size),
                Some(if chunk_size == 1 { 1 } else { 0 })
            );
        }
    }
}

fn names(reader: &Reader<&[u8]>) -> Vec<String> {
    reader
        .toc()
        .entries
        .iter()
        .filter(|e| e.entry_type != EntryType::Chunk)
        .map(|e| e.name.clone())
        .collect()
}

fn prioritized_tree() -> Vec<u8> {
    TarBuilder::new()
        .dir("a")
        .file("a/one", b"1")
        .dir("a/b")
        .file("a/b/two", b"22")
        .dir("y")
        .file("y/target", b"target")
        .dir("x")
        .hardlink("x/link", "y/target")
        .file("z", b"zzz")
        .file(PREFETCH_LANDMARK, &[0x0f])
        .file(TOC_TAR_NAME, b"{}")
        .finish()
}

#[test]
fn prioritized_files_come_first_with_parents_and_link_targets() {
    let mut opts = options(GZIP, 4 << 20);
    opts.prioritized_files = vec![
        "z".into(),
        "/a/b/two".into(),
        "x/link".into(),
        "missing".into(),
    ];
    let (blob, _) = check_round_trip(&prioritized_tree(), &opts);
    let reader = Reader::open(blob.as_slice(), None).expect("open");
    assert_eq!(
        names(&reader),
        [
            "z",
            "a",
            "a/b",
            "a/b/two",
            "x",
            "y",
            "y/target",
            "x/link",
            PREFETCH_LANDMARK,
            "a/one"
        ]
    );
    let landmark = reader
        .toc()
        .entries
        .iter()
        .find(|e| e.name == PREFETCH_LANDMARK)
        .expect("landmark");
    assert_eq!(
        reader.index().prefetch_landmark_offset(),
        Some(landmark.offset)
    );
    assert!(!reader.index().has_no_prefetch_landmark());
    assert_eq!(
        reader.index().lookup(PREFETCH_LANDMARK),
        None,
        "landmarks are hidden"
    );
    let target = reader.index().lookup("y/target").expect("target");
    assert_eq!(reader.index().lookup("x/link"), Some(target));
    assert_eq!(reader.index().entry(target).map(|e| e.nlink), Some(2));
}

#[test]
fn without_prioritized_files_no_prefetch_landmark_leads() {
    for prioritized in [vec![], vec!["not/here".to_string()]] {
        let mut opts = options(ZSTD, 4 << 20);
        opts.prioritized_files = prioritized;
        let (blob, _) = check_round_trip(&prioritized_tree(), &opts);
        let reader = Reader::open(blob.as_slice(), None).expect("open");
        let names = names(&reader);
        assert_eq!(names[0], NO_PREFETCH_LANDMARK);
        assert_eq!(
            names
                .iter()
                .filter(|n| n.as_str() == TOC_TAR_NAME || n.contains("landmark"))
                .count(),
            1
        );
        assert!(reader.index().has_no_prefetch_landmark());
        assert_eq!(reader.index().prefetch_landmark_offset(), None);
    }
}

#[test]
fn duplicate_input_entries_keep_later_wins() {
    let tar = TarBuilder::new()
        .file("f", b"first")
        .file("f", b"second")
        .dir("d")
        .entry(EntrySpec::new("d", EntryType::Dir).mode(0o700))
        .finish();
    for prioritized in [vec![], vec!["f".to_string()]] {
        let mut opts = options(GZIP, 4 << 20);
        opts.prioritized_files = prioritized;
        let (blob, _) = check_round_trip(&tar, &opts);
        let reader = Reader::open(blob.as_slice(), None).expect("open");
        assert_eq!(reader.read_file("f").expect("read"), b"second");
        let d = reader.index().lookup("d").expect("dir");
        assert_eq!(reader.index().entry(d).map(|e| e.mode), Some(0o700));
    }
}

#[test]
fn rejects_bad_input_tars() {
    let mut truncated = TarBuilder::new().file("f", &[7u8; 3000]).unterminated();
    truncated.truncate(1500);
    let mut bad_checksum = TarBuilder::new().file("f", b"x").finish();
    bad_checksum[0] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            TarBuilder::new().file("a/../../etc/passwd", b"x").finish(),
            "escapes",
        ),
        (
            "hardlink dotdot",
            TarBuilder::new().hardlink("l", "../x").finish(),
            "escapes",
        ),
        ("truncated", truncated, "truncated"),
        ("bad checksum", bad_checksum, "checksum"),
        ("partial block", vec![1u8; 100], "truncated"),
    ];
    for (name, tar, want) in cases {
        let err = build(tar.as_slice(), Vec::new(), &options(GZIP, 4096)).expect_err(name);
        assert!(matches!(err, WriteError::Tar(_)), "{name}: {err}");
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
}

#[test]
fn reader_rejects_corrupt_blobs() {
    let (blob, result) = convert(&sample_tree(), &options(GZIP, 4096));
    let mut bad_footer = blob.clone();
    let len = bad_footer.len();
    bad_footer[len - 20] = b'X';
    let mut toc_garbled = blob.clone();
    let toc_at = result.toc_offset as usize;
    toc_garbled[toc_at + 20] ^= 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated end", blob[..blob.len() - 10].to_vec()),
        ("truncated middle", blob[..blob.len() / 2].to_vec()),
        ("bad footer", bad_footer),
        ("garbled toc", toc_garbled),
    ];
    for (name, bad) in cases {
        assert!(
            Reader::open(bad.as_slice(), None).is_err(),
            "{name} accepted"
        );
    }
    let wrong = Digest::sha256(b"other");
    let err = Reader::open(blob.as_slice(), Some(&wrong))
        .err()
        .expect("digest mismatch");
    assert!(matches!(err, ReadError::TocDigestMismatch { .. }), "{err}");
}

#[test]
fn flipped_chunk_byte_is_a_digest_mismatch() {
    let content = pseudo_random_bytes(3, 10_000);
    let tar = TarBuilder::new().file("data", &content).finish();
    // Level 0 stores bytes verbatim, so a flipped byte is found in the blob.
    let (mut blob, _) = convert(&tar, &options(Compression::Gzip { level: 0 }, 4096));
    let at = blob
        .windows(64)
        .position(|w| w == &content[5000..5064])
        .expect("stored chunk");
    blob[at] ^= 0x55;
    let reader = Reader::open(blob.as_slice(), None).expect("toc is intact");
    let err = reader.read_file("data").expect_err("corrupt chunk served");
    assert!(
        matches!(
            &err,
            ReadError::Chunk {
                source: crate::ChunkError::DigestMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(reader.verify_all().is_err());
}

#[test]
fn rejects_bad_options() {
    let tar = TarBuilder::new().finish();
    for (name, opts) in [
        ("zero chunk", options(GZIP, 0)),
        (
            "chunk over the limit",
            options(GZIP, crate::MAX_CHUNK_SIZE + 1),
        ),
        ("gzip level", options(Compression::Gzip { level: 13 }, 4096)),
        ("zstd level", options(Compression::Zstd { level: 23 }, 4096)),
    ] {
        assert!(
            matches!(
                build(tar.as_slice(), Vec::new(), &opts),
                Err(WriteError::Options(_))
            ),
            "{name}"
        );
    }
}

#[test]
fn empty_tar_converts_to_landmark_only() {
    let tar = TarBuilder::new().finish();
    for compression in [GZIP, ZSTD] {
        let (blob, _) = check_round_trip(&tar, &options(compression, 4096));
        let reader = Reader::open(blob.as_slice(), None).expect("open");
        assert_eq!(names(&reader), [NO_PREFETCH_LANDMARK]);
        assert_eq!(reader.index().len(), 1);
    }
}

#[test]
fn is_estargz_detects_formats() {
    let tar = sample_tree();
    for compression in [GZIP, ZSTD] {
        let (blob, result) = convert(&tar, &options(compression, 1 << 20));
        let footer = crate::is_estargz(blob.as_slice()).expect("detected");
        assert_eq!(footer.format, format_of(compression));
        assert_eq!(footer.toc_offset, result.toc_offset);
    }
    let plain = crate::testutil::pseudo_random_bytes(9, 4096);
    assert_eq!(crate::is_estargz(plain.as_slice()), None);
}

#[test]
fn many_threads_and_levels_give_identical_blobs() {
    let tar = sample_tree();
    let mut reference = None;
    for threads in [1, 2, 8] {
        let mut opts = options(Compression::DEFAULT_GZIP, 4096);
        opts.threads = threads;
        let (blob, _) = convert(&tar, &opts);
        let digest = Digest::sha256(&blob);
        assert_eq!(
            *reference.get_or_insert(digest),
            digest,
            "threads {threads}"
        );
    }
}

#[test]
fn all_entries_prioritized_puts_landmark_last() {
    let tar = TarBuilder::new().file("only", b"1").finish();
    let mut opts = options(GZIP, 4096);
    opts.prioritized_files = vec!["only".into()];
    let (blob, _) = check_round_trip(&tar, &opts);
    let reader = Reader::open(blob.as_slice(), None).expect("open");
    assert_eq!(names(&reader), ["only", PREFETCH_LANDMARK]);
}

#[test]
fn reads_legacy_stargz_footer() {
    let (mut blob, result) = convert(&sample_tree(), &options(GZIP, 4096));
    blob.truncate(blob.len() - 51);
    blob.extend_from_slice(&crate::footer::encode_legacy(result.toc_offset));
    let reader = Reader::open(blob.as_slice(), Some(&result.toc_digest)).expect("open legacy");
    assert_eq!(reader.footer().format, Format::LegacyStargz);
    reader.verify_all().expect("verify");
}

#[test]
fn build_inside_a_one_thread_rayon_pool_does_not_deadlock() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let tar = sample_tree();
    let (_, expected) = convert(&tar, &options(GZIP, 4096));
    let result = pool.install(|| build(tar.as_slice(), Vec::new(), &options(GZIP, 4096)));
    assert_eq!(
        result.expect("convert in pool").blob_digest,
        expected.blob_digest
    );
}

#[test]
fn pseudo_random_bytes_differ_for_every_seed() {
    const LEN: usize = 4096;
    // Neighbours (2k and 2k+1 once collided), 0, and the extremes.
    let mut seeds: Vec<u64> = (0..64).collect();
    seeds.extend([u64::MAX - 1, u64::MAX, 1 << 63, (1 << 63) | 1]);
    let streams: Vec<Vec<u8>> = seeds.iter().map(|&s| pseudo_random_bytes(s, LEN)).collect();
    for (i, a) in streams.iter().enumerate() {
        assert_eq!(a.len(), LEN);
        for (j, b) in streams.iter().enumerate().skip(i + 1) {
            assert!(
                a != b,
                "seeds {} and {} give the same bytes",
                seeds[i],
                seeds[j]
            );
            // Not merely different somewhere: no shared first 8-byte word either.
            assert_ne!(a[..8], b[..8], "seeds {} and {}", seeds[i], seeds[j]);
        }
    }
    assert!(
        pseudo_random_bytes(0, LEN).iter().any(|&b| b != 0),
        "seed 0 is not a stuck stream"
    );
}

#[test]
fn pseudo_random_bytes_are_deterministic_and_length_exact() {
    for len in [0, 1, 7, 8, 9, 1000, 100_003] {
        let a = pseudo_random_bytes(42, len);
        assert_eq!(a.len(), len);
        assert!(a == pseudo_random_bytes(42, len));
        // A shorter stream is a prefix of a longer one of the same seed.
        assert!(pseudo_random_bytes(42, 100_003).starts_with(&a));
    }
    // Incompressible: a fixture built from these bytes must not shrink when gzipped.
    let bytes = pseudo_random_bytes(7, 256 << 10);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &bytes).expect("gzip");
    assert!(gz.finish().expect("gzip").len() > bytes.len() * 99 / 100);
}
