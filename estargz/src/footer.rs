//! The blob footer: where the TOC lives. eStargz (51 bytes), legacy stargz (47 bytes) and
//! zstd:chunked (a 48-byte skippable frame) layouts, parsed and encoded.

use std::fmt;

/// How many bytes from the end of a blob a reader should fetch to parse any footer.
pub const FOOTER_MAX_SIZE: usize = 51;
/// Size of the eStargz footer.
pub const ESTARGZ_FOOTER_SIZE: usize = 51;
/// Size of the legacy stargz footer.
pub const LEGACY_FOOTER_SIZE: usize = 47;
/// Size of the zstd:chunked footer frame (8-byte skippable frame header + 40-byte payload).
pub const ZSTD_FOOTER_SIZE: usize = 48;

/// Magic of a zstd skippable frame (little endian 0x184D2A50).
pub const ZSTD_SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
const ZSTD_FOOTER_PAYLOAD: usize = 40;
const ZSTD_CHUNKED_MAGIC: &[u8; 8] = b"GnUlInUx";
const ZSTD_MANIFEST_TYPE: u64 = 1;
const STARGZ_MAGIC: &[u8; 6] = b"STARGZ";

/// Errors from parsing a footer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FooterError {
    #[error("blob tail of {0} bytes is too short for any footer")]
    TooShort(usize),
    #[error("no estargz, zstd:chunked or legacy stargz footer at the end of the blob")]
    NotFound,
}

/// The layer format a footer identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// eStargz: gzip members, 51-byte footer.
    Estargz,
    /// Original stargz: gzip members, 47-byte footer.
    LegacyStargz,
    /// zstd:chunked: zstd frames, TOC in a skippable frame.
    ZstdChunked,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Estargz => "estargz",
            Format::LegacyStargz => "stargz",
            Format::ZstdChunked => "zstd:chunked",
        })
    }
}

/// A parsed footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub format: Format,
    /// Blob offset of the TOC: its gzip member, or (zstd) its compressed bytes.
    pub toc_offset: u64,
    /// zstd:chunked only: length of the compressed TOC.
    pub toc_compressed_size: Option<u64>,
    /// zstd:chunked only: length of the TOC JSON.
    pub toc_uncompressed_size: Option<u64>,
}

impl Footer {
    /// Bytes the footer occupies at the end of the blob.
    pub fn size(&self) -> u64 {
        let size = match self.format {
            Format::Estargz => ESTARGZ_FOOTER_SIZE,
            Format::LegacyStargz => LEGACY_FOOTER_SIZE,
            Format::ZstdChunked => ZSTD_FOOTER_SIZE,
        };
        size as u64
    }
}

/// Parses the footer from the last bytes of a blob (pass up to `FOOTER_MAX_SIZE` bytes).
///
/// Tries eStargz, then zstd:chunked, then legacy stargz.
pub fn parse(tail: &[u8]) -> Result<Footer, FooterError> {
    // Each layout is only accepted when the tail holds all of it (`Footer::size` bytes).
    if tail.len() < LEGACY_FOOTER_SIZE {
        return Err(FooterError::TooShort(tail.len()));
    }
    parse_gzip(tail, ESTARGZ_FOOTER_SIZE, Format::Estargz)
        .or_else(|| parse_zstd(tail))
        .or_else(|| parse_gzip(tail, LEGACY_FOOTER_SIZE, Format::LegacyStargz))
        .ok_or(FooterError::NotFound)
}

/// Encodes the 51-byte eStargz footer pointing at the TOC member at `toc_offset`.
pub fn encode_estargz(toc_offset: u64) -> [u8; ESTARGZ_FOOTER_SIZE] {
    let mut out = [0u8; ESTARGZ_FOOTER_SIZE];
    out[..10].copy_from_slice(&gzip_header_with_extra());
    out[10..12].copy_from_slice(&26u16.to_le_bytes());
    out[12..14].copy_from_slice(b"SG");
    out[14..16].copy_from_slice(&22u16.to_le_bytes());
    out[16..38].copy_from_slice(&stargz_payload(toc_offset));
    out[38..43].copy_from_slice(&EMPTY_STORED_BLOCK);
    // CRC32 and ISIZE of empty content are both zero: out[43..51] stays zero.
    out
}

/// Encodes the 47-byte legacy stargz footer (only for tests and compatibility checks).
pub fn encode_legacy(toc_offset: u64) -> [u8; LEGACY_FOOTER_SIZE] {
    let mut out = [0u8; LEGACY_FOOTER_SIZE];
    out[..10].copy_from_slice(&gzip_header_with_extra());
    out[10..12].copy_from_slice(&22u16.to_le_bytes());
    out[12..34].copy_from_slice(&stargz_payload(toc_offset));
    out[34..39].copy_from_slice(&EMPTY_STORED_BLOCK);
    out
}

/// Encodes the 48-byte zstd:chunked footer frame.
///
/// `toc_offset` is where the compressed TOC bytes start (after their skippable frame header).
pub fn encode_zstd(
    toc_offset: u64,
    toc_compressed_size: u64,
    toc_uncompressed_size: u64,
) -> [u8; ZSTD_FOOTER_SIZE] {
    let mut out = [0u8; ZSTD_FOOTER_SIZE];
    out[..4].copy_from_slice(&ZSTD_SKIPPABLE_MAGIC);
    out[4..8].copy_from_slice(&(ZSTD_FOOTER_PAYLOAD as u32).to_le_bytes());
    out[8..16].copy_from_slice(&toc_offset.to_le_bytes());
    out[16..24].copy_from_slice(&toc_compressed_size.to_le_bytes());
    out[24..32].copy_from_slice(&toc_uncompressed_size.to_le_bytes());
    out[32..40].copy_from_slice(&ZSTD_MANIFEST_TYPE.to_le_bytes());
    out[40..48].copy_from_slice(ZSTD_CHUNKED_MAGIC);
    out
}

const EMPTY_STORED_BLOCK: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];

/// gzip magic, deflate, FEXTRA flag, mtime 0, XFL 0, OS unknown (255).
fn gzip_header_with_extra() -> [u8; 10] {
    [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff]
}

fn stargz_payload(toc_offset: u64) -> [u8; 22] {
    let mut payload = [0u8; 22];
    payload[..16].copy_from_slice(format!("{toc_offset:016x}").as_bytes());
    payload[16..].copy_from_slice(STARGZ_MAGIC);
    payload
}

fn parse_gzip(tail: &[u8], size: usize, format: Format) -> Option<Footer> {
    let footer = tail.get(tail.len().checked_sub(size)?..)?;
    // Only the gzip magic, the FEXTRA flag and the extra field matter; writers differ in
    // mtime/XFL/OS bytes.
    if footer[..3] != [0x1f, 0x8b, 0x08] || footer[3] & 0x04 == 0 {
        return None;
    }
    let xlen = u16::from_le_bytes([footer[10], footer[11]]);
    let payload = match format {
        Format::Estargz => {
            let subfield_len = u16::from_le_bytes([footer[14], footer[15]]);
            if xlen != 26 || &footer[12..14] != b"SG" || subfield_len != 22 {
                return None;
            }
            &footer[16..38]
        }
        _ if xlen == 22 => &footer[12..34],
        _ => return None,
    };
    if &payload[16..] != STARGZ_MAGIC {
        return None;
    }
    let hex = std::str::from_utf8(&payload[..16]).ok()?;
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let toc_offset = u64::from_str_radix(hex, 16).ok()?;
    Some(Footer {
        format,
        toc_offset,
        toc_compressed_size: None,
        toc_uncompressed_size: None,
    })
}

fn parse_zstd(tail: &[u8]) -> Option<Footer> {
    let footer = tail.get(tail.len().checked_sub(ZSTD_FOOTER_SIZE)?..)?;
    let payload = &footer[ZSTD_FOOTER_SIZE - ZSTD_FOOTER_PAYLOAD..];
    if &payload[32..40] != ZSTD_CHUNKED_MAGIC {
        return None;
    }
    let word = |i: usize| {
        let bytes: [u8; 8] = payload[i * 8..i * 8 + 8].try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    };
    if word(3)? != ZSTD_MANIFEST_TYPE {
        return None;
    }
    Some(Footer {
        format: Format::ZstdChunked,
        toc_offset: word(0)?,
        toc_compressed_size: Some(word(1)?),
        toc_uncompressed_size: Some(word(2)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estargz_footer_has_the_documented_bytes() {
        let footer = encode_estargz(0x1234);
        let mut expected = vec![
            0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
        ];
        expected.extend_from_slice(b"0000000000001234STARGZ");
        expected.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(footer.to_vec(), expected);
    }

    #[test]
    fn estargz_footer_is_an_empty_gzip_member() {
        use std::io::Read;
        let mut out = Vec::new();
        let footer = encode_estargz(99);
        let mut decoder = flate2::read::GzDecoder::new(&footer[..]);
        decoder.read_to_end(&mut out).expect("valid gzip");
        assert!(out.is_empty());
        let header = decoder.header().expect("gzip header");
        assert_eq!(
            header.extra(),
            Some(&b"SG\x16\x000000000000000063STARGZ"[..])
        );
    }

    #[test]
    fn parses_table_cases() {
        let mut with_prefix = vec![0xaa; 100];
        with_prefix.extend_from_slice(&encode_estargz(7));
        let mut corrupt_magic = encode_estargz(7);
        corrupt_magic[37] = b'X';
        let mut bad_hex = encode_estargz(7);
        bad_hex[20] = b'g';
        let zstd = encode_zstd(10, 20, 30);
        let mut zstd_bad_type = zstd;
        zstd_bad_type[32] = 2;
        // Found by the `footer` fuzz target: the 40-byte payload alone was accepted as a
        // 48-byte footer.
        let zstd_cut = zstd[3..].to_vec();
        let zstd_payload_only = [&[0u8; 7][..], &zstd[8..]].concat();
        type Case = (&'static str, Vec<u8>, Result<(Format, u64), FooterError>);
        let cases: Vec<Case> = vec![
            (
                "estargz",
                encode_estargz(7).to_vec(),
                Ok((Format::Estargz, 7)),
            ),
            (
                "estargz with blob before",
                with_prefix,
                Ok((Format::Estargz, 7)),
            ),
            (
                "max offset",
                encode_estargz(u64::MAX).to_vec(),
                Ok((Format::Estargz, u64::MAX)),
            ),
            (
                "legacy",
                encode_legacy(4096).to_vec(),
                Ok((Format::LegacyStargz, 4096)),
            ),
            ("zstd", zstd.to_vec(), Ok((Format::ZstdChunked, 10))),
            ("too short", vec![0; 10], Err(FooterError::TooShort(10))),
            ("zeros", vec![0; 51], Err(FooterError::NotFound)),
            (
                "bad magic",
                corrupt_magic.to_vec(),
                Err(FooterError::NotFound),
            ),
            ("bad hex", bad_hex.to_vec(), Err(FooterError::NotFound)),
            (
                "zstd bad type",
                zstd_bad_type.to_vec(),
                Err(FooterError::NotFound),
            ),
            (
                "zstd cut into its frame header",
                zstd_cut,
                Err(FooterError::TooShort(45)),
            ),
            (
                "zstd payload without room for the frame header",
                zstd_payload_only,
                Err(FooterError::NotFound),
            ),
        ];
        for (name, tail, want) in cases {
            let got = parse(&tail).map(|f| (f.format, f.toc_offset));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn zstd_footer_carries_sizes() {
        let footer = parse(&encode_zstd(1, 2, 3)).expect("zstd footer");
        assert_eq!(footer.toc_compressed_size, Some(2));
        assert_eq!(footer.toc_uncompressed_size, Some(3));
        assert_eq!(footer.size(), 48);
        assert_eq!(
            &encode_zstd(1, 2, 3)[..8],
            &[0x50, 0x2a, 0x4d, 0x18, 40, 0, 0, 0]
        );
    }

    proptest::proptest! {
        #[test]
        fn estargz_round_trips(offset: u64) {
            let footer = parse(&encode_estargz(offset)).expect("parse");
            proptest::prop_assert_eq!((footer.format, footer.toc_offset), (Format::Estargz, offset));
        }

        #[test]
        fn legacy_round_trips(offset: u64) {
            let footer = parse(&encode_legacy(offset)).expect("parse");
            proptest::prop_assert_eq!((footer.format, footer.toc_offset), (Format::LegacyStargz, offset));
        }

        #[test]
        fn zstd_round_trips(offset: u64, clen: u64, ulen: u64) {
            let footer = parse(&encode_zstd(offset, clen, ulen)).expect("parse");
            proptest::prop_assert_eq!(footer.toc_offset, offset);
            proptest::prop_assert_eq!(footer.toc_compressed_size, Some(clen));
            proptest::prop_assert_eq!(footer.toc_uncompressed_size, Some(ulen));
        }

        #[test]
        fn never_panics_on_garbage(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = parse(&tail);
        }
    }
}
