//! `toc::decode` for each format on arbitrary TOC regions, and `toc::parse_json` on the
//! raw bytes. Input: byte 0 picks the format (bit 7: zstd footer without sizes), bytes
//! 1..9 the declared uncompressed size (zstd), byte 9 how much shorter than the region
//! the compressed size is; the region follows.
#![no_main]

use estargz::footer::{Footer, Format};
use estargz::toc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 20 {
        return;
    }
    check_json(data);
    let Some((head, region)) = data.split_at_checked(10) else {
        return;
    };
    let format = match head[0] % 3 {
        0 => Format::Estargz,
        1 => Format::LegacyStargz,
        _ => Format::ZstdChunked,
    };
    let with_sizes = format == Format::ZstdChunked && head[0] & 0x80 == 0;
    let uncompressed = u64::from_le_bytes(head[1..9].try_into().expect("8 bytes"));
    let compressed = (region.len() as u64).saturating_sub(u64::from(head[9]));
    let footer = Footer {
        format,
        toc_offset: 0,
        toc_compressed_size: with_sizes.then_some(compressed),
        toc_uncompressed_size: with_sizes.then_some(uncompressed),
    };
    if let Ok((toc, _)) = toc::decode(&footer, region) {
        round_trip(&toc);
    }
    check_json(region);
});

fn check_json(json: &[u8]) {
    if let Ok((toc, digest)) = toc::parse_json(json) {
        assert_eq!(digest, estargz::Digest::sha256(json));
        round_trip(&toc);
    }
}

/// What we parse we write back the same.
fn round_trip(toc: &estargz::Toc) {
    let json = toc::encode(toc);
    let (again, _) = toc::parse_json(&json).expect("re-parse an encoded toc");
    assert_eq!(&again, toc);
}
