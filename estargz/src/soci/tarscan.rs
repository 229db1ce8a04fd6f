//! A push parser for tar headers: fed the uncompressed stream in pieces, it yields the
//! zTOC file table (names, types, content offsets, owners, times, devices, PAX records)
//! without buffering file contents, so the index is built in the same pass as inflating.

use crate::toc::EntryType;

use super::ztoc::FileMetadata;

const BLOCK: u64 = 512;

/// Errors from parsing the tar stream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TarScanError {
    #[error("tar header at {offset} has a bad checksum")]
    Checksum { offset: u64 },
    #[error("tar header at {offset} has an unreadable {field} field")]
    Field { offset: u64, field: &'static str },
    #[error("tar entry at {offset} has unsupported type {flag:?}")]
    UnsupportedType { offset: u64, flag: char },
    #[error("tar extension header at {offset} is {size} bytes, over the limit")]
    ExtensionTooLarge { offset: u64, size: u64 },
    #[error("pax header at {offset} is malformed")]
    Pax { offset: u64 },
    #[error("tar stream ends inside an entry at {offset}")]
    Truncated { offset: u64 },
}

/// Long names, link names and PAX headers above this are refused (they are buffered).
const MAX_EXTENSION: u64 = 1 << 20;

enum State {
    Header {
        buf: Box<[u8; 512]>,
        have: usize,
    },
    /// Skipping file content and padding.
    Skip {
        remaining: u64,
    },
    /// Collecting a GNU long name/link or a PAX header body (plus padding to skip).
    Collect {
        kind: u8,
        buf: Vec<u8>,
        want: usize,
        pad: u64,
        offset: u64,
    },
    End,
}

#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Vec<(String, Vec<u8>)>,
}

/// The parser. Feed it consecutive pieces of the tar stream with [`TarScanner::feed`].
pub struct TarScanner {
    state: State,
    pos: u64,
    pending: Pending,
    files: Vec<FileMetadata>,
}

impl Default for TarScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl TarScanner {
    pub fn new() -> Self {
        Self {
            state: State::Header {
                buf: Box::new([0; 512]),
                have: 0,
            },
            pos: 0,
            pending: Pending::default(),
            files: Vec::new(),
        }
    }

    /// Entries parsed so far.
    pub fn entry_count(&self) -> usize {
        self.files.len()
    }

    /// Consumes the next piece of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), TarScanError> {
        while !data.is_empty() {
            let used = match &mut self.state {
                State::End => return Ok(()),
                State::Header { buf, have } => {
                    let n = (512 - *have).min(data.len());
                    buf[*have..*have + n].copy_from_slice(&data[..n]);
                    *have += n;
                    if *have == 512 {
                        let block = std::mem::replace(buf, Box::new([0; 512]));
                        *have = 0;
                        let header_at = self.pos + n as u64 - BLOCK;
                        self.pos += n as u64;
                        self.header(&block, header_at)?;
                        data = &data[n..];
                        continue;
                    }
                    n
                }
                State::Skip { remaining } => {
                    let n = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    *remaining -= n as u64;
                    if *remaining == 0 {
                        self.state = header_state();
                    }
                    n
                }
                State::Collect {
                    kind,
                    buf,
                    want,
                    pad,
                    offset,
                } => {
                    let n = (*want - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..n]);
                    if buf.len() == *want {
                        let (kind, body, pad, offset) = (*kind, std::mem::take(buf), *pad, *offset);
                        self.extension(kind, body, offset)?;
                        self.state = if pad == 0 {
                            header_state()
                        } else {
                            State::Skip { remaining: pad }
                        };
                    }
                    n
                }
            };
            self.pos += used as u64;
            data = &data[used..];
        }
        Ok(())
    }

    /// The file table, once the whole stream was fed. A stream that stops inside an
    /// entry is an error; one that stops between entries without the end blocks is not
    /// (Go's reader accepts it too).
    pub fn finish(self) -> Result<Vec<FileMetadata>, TarScanError> {
        match self.state {
            State::End | State::Header { have: 0, .. } => Ok(self.files),
            _ => Err(TarScanError::Truncated { offset: self.pos }),
        }
    }

    fn header(&mut self, block: &[u8; 512], offset: u64) -> Result<(), TarScanError> {
        if block.iter().all(|&b| b == 0) {
            self.state = State::End;
            return Ok(());
        }
        verify_checksum(block, offset)?;
        let field = |name| {
            move || TarScanError::Field {
                offset,
                field: name,
            }
        };
        let size = numeric(&block[124..136]).ok_or_else(field("size"))?;
        let size = u64::try_from(size).map_err(|_| field("size")())?;
        let flag = block[156];
        let padded = size
            .checked_add(BLOCK - 1)
            .map(|s| s / BLOCK * BLOCK)
            .ok_or_else(field("size"))?;
        match flag {
            b'L' | b'K' | b'x' | b'g' => {
                if size > MAX_EXTENSION {
                    return Err(TarScanError::ExtensionTooLarge { offset, size });
                }
                let want = usize::try_from(size).map_err(|_| field("size")())?;
                self.state = if want == 0 {
                    self.extension(flag, Vec::new(), offset)?;
                    skip_or_header(padded)
                } else {
                    State::Collect {
                        kind: flag,
                        buf: Vec::with_capacity(want),
                        want,
                        pad: padded - size,
                        offset,
                    }
                };
                return Ok(());
            }
            _ => {}
        }
        let entry_type = match flag {
            b'0' | 0 | b'7' => EntryType::Reg,
            b'1' => EntryType::Hardlink,
            b'2' => EntryType::Symlink,
            b'3' => EntryType::Char,
            b'4' => EntryType::Block,
            b'5' => EntryType::Dir,
            b'6' => EntryType::Fifo,
            other => {
                return Err(TarScanError::UnsupportedType {
                    offset,
                    flag: char::from(other),
                })
            }
        };
        let pending = std::mem::take(&mut self.pending);
        let ustar = &block[257..263] == b"ustar\0";
        let mut name = cstr(&block[0..100]).to_vec();
        if ustar && block[345] != 0 {
            let mut full = cstr(&block[345..500]).to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
        let mut meta = FileMetadata {
            name: lossy(pending.long_name.as_deref().unwrap_or(&name)),
            entry_type,
            uncompressed_offset: offset + BLOCK,
            uncompressed_size: size,
            link_name: lossy(
                pending
                    .long_link
                    .as_deref()
                    .unwrap_or(cstr(&block[157..257])),
            ),
            mode: numeric(&block[100..108]).ok_or_else(field("mode"))?,
            uid: id(&block[108..116]).ok_or_else(field("uid"))?,
            gid: id(&block[116..124]).ok_or_else(field("gid"))?,
            uname: lossy(cstr(&block[265..297])),
            gname: lossy(cstr(&block[297..329])),
            mod_time: crate::modtime::format_rfc3339(
                numeric(&block[136..148]).ok_or_else(field("mtime"))?,
            ),
            dev_major: if ustar || is_gnu(block) {
                numeric(&block[329..337]).unwrap_or(0)
            } else {
                0
            },
            dev_minor: if ustar || is_gnu(block) {
                numeric(&block[337..345]).unwrap_or(0)
            } else {
                0
            },
            pax: Vec::new(),
        };
        apply_pax(&mut meta, &pending.pax, offset)?;
        meta.pax = pending.pax;
        // Header-only types carry no data whatever their size field says (as Go reads them).
        let data = if matches!(entry_type, EntryType::Reg) {
            meta.uncompressed_size
        } else {
            meta.uncompressed_size = 0;
            0
        };
        let skip = data
            .checked_add(BLOCK - 1)
            .map(|s| s / BLOCK * BLOCK)
            .ok_or_else(field("size"))?;
        self.files.push(meta);
        self.state = skip_or_header(skip);
        Ok(())
    }

    fn extension(&mut self, kind: u8, body: Vec<u8>, offset: u64) -> Result<(), TarScanError> {
        match kind {
            b'L' => self.pending.long_name = Some(cstr(&body).to_vec()),
            b'K' => self.pending.long_link = Some(cstr(&body).to_vec()),
            b'x' => self.pending.pax = parse_pax(&body, offset)?,
            // Global headers apply to nothing we record; soci's reader refuses them as
            // entries, we simply do not list them.
            _ => {}
        }
        Ok(())
    }
}

fn header_state() -> State {
    State::Header {
        buf: Box::new([0; 512]),
        have: 0,
    }
}

fn skip_or_header(n: u64) -> State {
    if n == 0 {
        header_state()
    } else {
        State::Skip { remaining: n }
    }
}

fn is_gnu(block: &[u8; 512]) -> bool {
    &block[257..265] == b"ustar  \0"
}

fn verify_checksum(block: &[u8; 512], offset: u64) -> Result<(), TarScanError> {
    let stored = numeric(&block[148..156]).ok_or(TarScanError::Checksum { offset })?;
    let sum = |signed: bool| -> i64 {
        block
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    i64::from(b' ')
                } else if signed {
                    i64::from(b as i8)
                } else {
                    i64::from(b)
                }
            })
            .sum()
    };
    if stored == sum(false) || stored == sum(true) {
        Ok(())
    } else {
        Err(TarScanError::Checksum { offset })
    }
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An octal field (space/NUL padded) or a GNU base-256 field (big-endian two's complement
/// after a marker bit).
fn numeric(field: &[u8]) -> Option<i64> {
    let first = *field.first()?;
    if first & 0x80 != 0 {
        let negative = first & 0x40 != 0;
        let mut bytes = field.to_vec();
        if !negative {
            bytes[0] &= 0x7f;
        }
        let fill = if negative { 0xff } else { 0 };
        let (head, tail) = bytes.split_at(bytes.len().saturating_sub(8));
        if head.iter().any(|&b| b != fill) {
            return None;
        }
        let mut buf = [fill; 8];
        buf[8 - tail.len()..].copy_from_slice(tail);
        let v = i64::from_be_bytes(buf);
        return (negative == (v < 0)).then_some(v);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    i64::from_str_radix(text, 8).ok()
}

fn id(field: &[u8]) -> Option<u32> {
    numeric(field).and_then(|v| u32::try_from(v).ok())
}

/// Records `<len> <key>=<value>\n`; values stay bytes (xattr values may be binary).
fn parse_pax(body: &[u8], offset: u64) -> Result<Vec<(String, Vec<u8>)>, TarScanError> {
    let bad = || TarScanError::Pax { offset };
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() && rest[0] != 0 {
        let sp = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad())?;
        out.retain(|(k, _): &(String, Vec<u8>)| k != key);
        out.push((key.to_owned(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn apply_pax(
    meta: &mut FileMetadata,
    pax: &[(String, Vec<u8>)],
    offset: u64,
) -> Result<(), TarScanError> {
    let bad = || TarScanError::Pax { offset };
    let text = |v: &[u8]| std::str::from_utf8(v).map(str::to_owned).map_err(|_| bad());
    for (key, value) in pax {
        match key.as_str() {
            "path" => meta.name = lossy(value),
            "linkpath" => meta.link_name = lossy(value),
            "uname" => meta.uname = lossy(value),
            "gname" => meta.gname = lossy(value),
            "uid" => meta.uid = text(value)?.parse().map_err(|_| bad())?,
            "gid" => meta.gid = text(value)?.parse().map_err(|_| bad())?,
            "size" => meta.uncompressed_size = text(value)?.parse().map_err(|_| bad())?,
            "mtime" => meta.mod_time = pax_time(&text(value)?).ok_or_else(bad)?,
            _ => {}
        }
    }
    Ok(())
}

/// A PAX `mtime` (`secs[.frac]`) in RFC 3339 with the fraction kept, as Go formats it.
fn pax_time(value: &str) -> Option<String> {
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let base = crate::modtime::format_rfc3339(secs);
    let frac = frac
        .get(..frac.len().min(9))
        .unwrap_or("")
        .trim_end_matches('0');
    if frac.is_empty() {
        return Some(base);
    }
    Some(format!("{}.{frac}Z", base.trim_end_matches('Z')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn scan(bytes: &[u8], piece: usize) -> Vec<FileMetadata> {
        let mut s = TarScanner::new();
        for c in bytes.chunks(piece) {
            s.feed(c).unwrap();
        }
        s.finish().unwrap()
    }

    #[test]
    fn entries_with_long_names_links_devices_and_pax_xattrs() {
        let long = format!("{}/file", "d".repeat(150));
        let bytes = tar_of(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(5);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "lnk", "target/of/link").unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Char);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_size(0);
            b.append_data(&mut h, "dev/null", &b""[..]).unwrap();
            b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v\x00\xff"[..])])
                .unwrap();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(3);
            b.append_data(&mut h, "x", &b"abc"[..]).unwrap();
        });
        for piece in [1, 7, 512, 100_000] {
            let files = scan(&bytes, piece);
            assert_eq!(files.len(), 4, "piece {piece}");
            assert_eq!(files[0].name, long);
            assert_eq!(files[0].mod_time, "2023-11-14T22:13:20Z");
            let off = usize::try_from(files[0].uncompressed_offset).unwrap();
            assert_eq!(&bytes[off..off + 5], b"hello");
            assert_eq!(files[1].entry_type, EntryType::Symlink);
            assert_eq!(files[1].link_name, "target/of/link");
            assert_eq!((files[2].dev_major, files[2].dev_minor), (1, 3));
            assert_eq!(
                files[3].pax,
                vec![("SCHILY.xattr.user.k".to_owned(), b"v\x00\xff".to_vec())]
            );
            let off = usize::try_from(files[3].uncompressed_offset).unwrap();
            assert_eq!(&bytes[off..off + 3], b"abc");
        }
    }

    #[test]
    fn corrupt_header_and_truncation_are_errors() {
        let mut bytes = tar_of(|b| {
            let mut h = tar::Header::new_ustar();
            h.set_size(600);
            b.append_data(&mut h, "f", &[7u8; 600][..]).unwrap();
        });
        let mut s = TarScanner::new();
        s.feed(&bytes[..700]).unwrap();
        assert!(matches!(s.finish(), Err(TarScanError::Truncated { .. })));
        bytes[0] ^= 1;
        let mut s = TarScanner::new();
        assert_eq!(s.feed(&bytes), Err(TarScanError::Checksum { offset: 0 }));
    }

    #[test]
    fn pax_mtime_keeps_its_fraction() {
        assert_eq!(pax_time("1.5").unwrap(), "1970-01-01T00:00:01.5Z");
        assert_eq!(pax_time("0").unwrap(), "1970-01-01T00:00:00Z");
        assert!(pax_time("x").is_none());
    }
}
