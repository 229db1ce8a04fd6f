//! gzip member framing (RFC 1952): header length and trailer check. The deflate data in
//! between is handled by `inflate`; a layer may hold many members (pigz, concatenation).

/// Errors in gzip framing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GzipError {
    #[error("gzip member at {offset} has a bad magic or method")]
    Header { offset: u64 },
    #[error("gzip member ending at {offset} fails its check (crc or size)")]
    Trailer { offset: u64 },
}

/// Size of the member trailer: CRC32 and ISIZE, little endian.
pub const TRAILER_LEN: usize = 8;

/// The length of the gzip header at the start of `buf`, or `None` if `buf` is too short
/// to tell yet. `offset` is only for the error.
pub fn header_len(buf: &[u8], offset: u64) -> Result<Option<usize>, GzipError> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    if buf.len() < 10 {
        // Reject early what cannot become a header.
        let magic = [0x1f, 0x8b, 8];
        if buf.iter().zip(magic.iter()).any(|(a, b)| a != b) {
            return Err(GzipError::Header { offset });
        }
        return Ok(None);
    }
    if buf[0] != 0x1f || buf[1] != 0x8b || buf[2] != 8 || buf[3] & 0xe0 != 0 {
        return Err(GzipError::Header { offset });
    }
    let flags = buf[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(xlen) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            match buf
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
            {
                Some(nul) => at += nul + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    Ok((at <= buf.len()).then_some(at))
}

/// Checks a member trailer against the CRC32 and length of the member's output.
pub fn check_trailer(trailer: &[u8], crc: u32, len: u64, offset: u64) -> Result<(), GzipError> {
    let ok = trailer.len() == TRAILER_LEN
        && trailer[..4] == crc.to_le_bytes()
        && trailer[4..]
            == u32::try_from(len & 0xffff_ffff)
                .unwrap_or_default()
                .to_le_bytes();
    if ok {
        Ok(())
    } else {
        Err(GzipError::Trailer { offset })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn header_lengths_with_and_without_name() {
        let mut plain = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        plain.write_all(b"x").unwrap();
        let plain = plain.finish().unwrap();
        assert_eq!(header_len(&plain, 0).unwrap(), Some(10));
        let mut named = flate2::GzBuilder::new()
            .filename("layer.tar")
            .extra(vec![1, 2, 3])
            .write(Vec::new(), flate2::Compression::fast());
        named.write_all(b"x").unwrap();
        let named = named.finish().unwrap();
        assert_eq!(header_len(&named, 0).unwrap(), Some(10 + 2 + 3 + 10));
        assert_eq!(header_len(&named[..14], 0).unwrap(), None);
        assert!(header_len(b"PK\x03\x04", 0).is_err());
    }
}
