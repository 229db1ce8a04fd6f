//! `footer::parse` on arbitrary blob tails: never panics, and a footer it accepts
//! re-encodes to one that parses the same.
#![no_main]

use estargz::footer::{self, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 20 {
        return;
    }
    let Ok(parsed) = footer::parse(data) else {
        return;
    };
    assert!(parsed.size() as usize <= data.len());
    let encoded = match parsed.format {
        Format::Estargz => footer::encode_estargz(parsed.toc_offset).to_vec(),
        Format::LegacyStargz => footer::encode_legacy(parsed.toc_offset).to_vec(),
        Format::ZstdChunked => footer::encode_zstd(
            parsed.toc_offset,
            parsed.toc_compressed_size.unwrap_or_default(),
            parsed.toc_uncompressed_size.unwrap_or_default(),
        )
        .to_vec(),
    };
    assert_eq!(footer::parse(&encoded), Ok(parsed));
});
