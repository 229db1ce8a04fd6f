//! `estargz::build` over arbitrary input tars into memory. Byte 0 picks the options
//! (bit 0: zstd, bit 1: prioritized files, bits 2..: chunk size 1..=64 KiB); the tar
//! follows. Whatever the writer accepts must be a blob the reader opens, with the TOC
//! digest it reported, and every file in it must verify.
#![no_main]

use estargz::{footer, toc, Compression, Index, Reader, WriterOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 20 {
        return;
    }
    let Some((&flags, tar)) = data.split_first() else {
        return;
    };
    let opts = WriterOptions {
        chunk_size: 1 + u64::from(flags >> 2) * 1024,
        compression: match flags & 1 {
            0 => Compression::Gzip { level: 1 },
            _ => Compression::Zstd { level: 1 },
        },
        prioritized_files: match flags & 2 {
            0 => Vec::new(),
            _ => ["a", "dir/b", "dir/sub/c", "hard", "missing"]
                .map(String::from)
                .to_vec(),
        },
        threads: 1,
        spool_dir: None,
    };
    let mut blob = Vec::new();
    let Ok(written) = estargz::build(tar, &mut blob, &opts) else {
        return;
    };
    assert_eq!(written.compressed_size, blob.len() as u64);
    assert_eq!(written.blob_digest, estargz::Digest::sha256(&blob));
    let tail = &blob[blob.len().saturating_sub(estargz::FOOTER_MAX_SIZE)..];
    let parsed = footer::parse(tail).expect("footer of a written blob");
    assert_eq!(parsed.toc_offset, written.toc_offset);
    let footer_start = blob.len() - parsed.size() as usize;
    let region = &blob[parsed.toc_offset as usize..footer_start];
    let (decoded, digest) = toc::decode(&parsed, region).expect("toc of a written blob");
    assert_eq!(digest, written.toc_digest);
    // The writer keeps what a tar may legally hold (e.g. a file replacing a directory);
    // the index refuses some of it. What it accepts must read back verified.
    if Index::build(&decoded, parsed.toc_offset).is_ok() {
        let reader = Reader::open(&blob[..], Some(&digest)).expect("open a written blob");
        reader.verify_all().expect("verify a written blob");
    }
});
