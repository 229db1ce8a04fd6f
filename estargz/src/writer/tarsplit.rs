//! A raw tar splitter over 512-byte blocks: yields each entry's header bytes verbatim
//! (PAX `x`/`g` and GNU `L`/`K` blocks included) with its parsed metadata, then streams
//! its data. Re-emitting the header bytes unchanged keeps the unpacked tree identical.

use std::collections::BTreeMap;
use std::io::{self, Read};

use crate::index::clean_path;
use crate::toc::{EntryType, MAX_NAME_LEN};

const BLOCK: usize = 512;
/// Most PAX and GNU long-name payload bytes accepted before one entry (names and xattrs),
/// summed over all its extension headers.
const MAX_EXTENSION_SIZE: u64 = 16 << 20;
/// Largest entry size accepted (what tar's 12-digit octal field can hold is 8 GiB; PAX
/// can say more, but not past what offsets can count).
const MAX_ENTRY_SIZE: u64 = i64::MAX as u64;

/// Errors from reading the input tar.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("read input tar at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("input tar is truncated at byte {offset}")]
    Truncated { offset: u64 },
    #[error("input tar header at byte {offset} has a bad checksum")]
    Checksum { offset: u64 },
    #[error("input tar header at byte {offset}: bad {field} field")]
    Field { offset: u64, field: &'static str },
    #[error("input tar entry {path:?} escapes the layer root")]
    EscapingPath { path: String },
    #[error("input tar entry {path:?} has unsupported type {flag:?}")]
    UnsupportedType { path: String, flag: char },
    #[error("input tar extension header at byte {offset} brings its entry's extensions to {size} bytes, more than {MAX_EXTENSION_SIZE}")]
    ExtensionTooLarge { offset: u64, size: u64 },
    #[error(
        "input tar entry {path:?}: name or link target is {len} bytes, more than {MAX_NAME_LEN}"
    )]
    NameTooLong { path: String, len: usize },
}

/// Parsed metadata of one entry (what its TOC record needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// Name as in the tar (PAX / GNU long name applied).
    pub raw_path: String,
    /// Normalised name (no `./`, `/` prefix or trailing `/`).
    pub path: String,
    pub kind: EntryType,
    /// Content size (regular files only, else 0).
    pub size: u64,
    pub link_name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user_name: String,
    pub group_name: String,
    pub mtime: i64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// One entry's header bytes and metadata; its data follows in the input.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// All header blocks of the entry, verbatim.
    pub header: Vec<u8>,
    pub meta: EntryMeta,
    /// Input offset of the first content byte.
    pub data_offset: u64,
}

/// Reads entries one by one from a tar stream.
pub struct TarSplitter<R> {
    reader: R,
    offset: u64,
    /// Unread content plus padding of the current entry.
    pending_data: u64,
    pending_padding: u64,
    finished: bool,
}

impl<R: Read> TarSplitter<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            offset: 0,
            pending_data: 0,
            pending_padding: 0,
            finished: false,
        }
    }

    /// The next entry, or `None` at the end-of-archive marker (or a clean end of input).
    pub fn next_entry(&mut self) -> Result<Option<RawEntry>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip(self.pending_data + self.pending_padding)?;
        self.pending_data = 0;
        self.pending_padding = 0;
        let mut header = Vec::with_capacity(BLOCK);
        let mut ext = Extensions::default();
        let mut ext_bytes = 0u64;
        loop {
            let block_offset = self.offset;
            let Some(block) = self.read_block()? else {
                self.finished = true;
                return match header.is_empty() {
                    true => Ok(None),
                    false => Err(TarError::Truncated {
                        offset: self.offset,
                    }),
                };
            };
            if block.iter().all(|&b| b == 0) {
                if !header.is_empty() {
                    return Err(TarError::Truncated {
                        offset: block_offset,
                    });
                }
                self.finished = true;
                return Ok(None);
            }
            check_checksum(&block, block_offset)?;
            header.extend_from_slice(&block);
            let parsed = tar::Header::from_byte_slice(&block);
            let flag = parsed.entry_type().as_byte();
            if matches!(flag, b'x' | b'g' | b'L' | b'K') {
                let size = field(parsed.entry_size(), block_offset, "size")?;
                ext_bytes = ext_bytes.saturating_add(size);
                let payload = self.read_extension(ext_bytes, size, block_offset)?;
                header.extend_from_slice(&payload.padded);
                ext.absorb(flag, &payload.data)
                    .map_err(|()| TarError::Field {
                        offset: block_offset,
                        field: "pax record",
                    })?;
                continue;
            }
            let meta = parse_meta(parsed, &ext, block_offset)?;
            self.pending_data = meta.size;
            self.pending_padding = padding(meta.size);
            return Ok(Some(RawEntry {
                header,
                meta,
                data_offset: self.offset,
            }));
        }
    }

    /// Reads the next `buf.len()` content bytes of the current entry.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        if buf.len() as u64 > self.pending_data {
            return Err(TarError::Truncated {
                offset: self.offset,
            });
        }
        self.read_exact(buf)?;
        self.pending_data -= buf.len() as u64;
        Ok(())
    }

    /// Reads one extension payload of `size` bytes; `total` counts this entry's so far.
    fn read_extension(
        &mut self,
        total: u64,
        size: u64,
        offset: u64,
    ) -> Result<Extension, TarError> {
        if total > MAX_EXTENSION_SIZE {
            return Err(TarError::ExtensionTooLarge {
                offset,
                size: total,
            });
        }
        let padded_len = size + padding(size);
        let mut padded = vec![0u8; padded_len as usize];
        self.read_exact(&mut padded)?;
        let data = padded[..size as usize].to_vec();
        Ok(Extension { data, padded })
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.reader.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(None),
                Ok(0) => {
                    return Err(TarError::Truncated {
                        offset: self.offset + filled as u64,
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TarError::Io {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        self.offset += BLOCK as u64;
        Ok(Some(block))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        self.reader
            .read_exact(buf)
            .map_err(|source| match source.kind() {
                io::ErrorKind::UnexpectedEof => TarError::Truncated {
                    offset: self.offset,
                },
                _ => TarError::Io {
                    offset: self.offset,
                    source,
                },
            })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, len: u64) -> Result<(), TarError> {
        let copied =
            io::copy(&mut (&mut self.reader).take(len), &mut io::sink()).map_err(|source| {
                TarError::Io {
                    offset: self.offset,
                    source,
                }
            })?;
        self.offset += copied;
        if copied < len {
            return Err(TarError::Truncated {
                offset: self.offset,
            });
        }
        Ok(())
    }
}

struct Extension {
    data: Vec<u8>,
    padded: Vec<u8>,
}

/// Values from the extension headers preceding an entry.
#[derive(Default)]
struct Extensions {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    uname: Option<String>,
    gname: Option<String>,
    mtime: Option<i64>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Extensions {
    fn absorb(&mut self, flag: u8, data: &[u8]) -> Result<(), ()> {
        match flag {
            b'L' => self.path = Some(c_string(data)),
            b'K' => self.link = Some(c_string(data)),
            // Global headers are kept verbatim but not interpreted per entry.
            b'g' => {}
            _ => self.absorb_pax(data)?,
        }
        Ok(())
    }

    fn absorb_pax(&mut self, data: &[u8]) -> Result<(), ()> {
        for ext in tar::PaxExtensions::new(data) {
            let ext = ext.map_err(|_| ())?;
            let Ok(key) = ext.key() else { continue };
            let text = || String::from_utf8_lossy(ext.value_bytes()).into_owned();
            match key {
                "path" => self.path = Some(text()),
                "linkpath" => self.link = Some(text()),
                "size" => self.size = text().parse().ok(),
                "uid" => self.uid = text().parse().ok(),
                "gid" => self.gid = text().parse().ok(),
                "uname" => self.uname = Some(text()),
                "gname" => self.gname = Some(text()),
                "mtime" => self.mtime = parse_pax_time(&text()),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        self.xattrs
                            .insert(name.to_string(), ext.value_bytes().to_vec());
                    }
                }
            }
        }
        Ok(())
    }
}

fn parse_pax_time(text: &str) -> Option<i64> {
    let whole = text.split('.').next()?;
    whole.parse().ok()
}

fn c_string(data: &[u8]) -> String {
    let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

fn parse_meta(h: &tar::Header, ext: &Extensions, offset: u64) -> Result<EntryMeta, TarError> {
    let raw_path = ext
        .path
        .clone()
        .unwrap_or_else(|| String::from_utf8_lossy(&h.path_bytes()).into_owned());
    let path = clean_path(&raw_path).map_err(|_| TarError::EscapingPath {
        path: raw_path.clone(),
    })?;
    let flag = h.entry_type().as_byte();
    let kind = entry_kind(flag).ok_or_else(|| TarError::UnsupportedType {
        path: raw_path.clone(),
        flag: char::from(flag),
    })?;
    let link_name = ext.link.clone().unwrap_or_else(|| {
        h.link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default()
    });
    if kind == EntryType::Hardlink && clean_path(&link_name).is_err() {
        return Err(TarError::EscapingPath { path: link_name });
    }
    let len = raw_path.len().max(link_name.len());
    if len > MAX_NAME_LEN {
        return Err(TarError::NameTooLong {
            path: crate::toc::truncated(&raw_path),
            len,
        });
    }
    let header_size = field(h.entry_size(), offset, "size")?;
    let size = ext.size.unwrap_or(header_size);
    if size > MAX_ENTRY_SIZE {
        return Err(TarError::Field {
            offset,
            field: "size",
        });
    }
    let number = |v: io::Result<u64>, name| field(v, offset, name);
    let small = |v: u64, name| {
        u32::try_from(v).map_err(|_| TarError::Field {
            offset,
            field: name,
        })
    };
    let uid = ext.uid.map_or_else(|| number(h.uid(), "uid"), Ok)?;
    let gid = ext.gid.map_or_else(|| number(h.gid(), "gid"), Ok)?;
    let (dev_major, dev_minor) = match kind {
        EntryType::Char | EntryType::Block => (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        ),
        _ => (0, 0),
    };
    let mtime = match ext.mtime {
        Some(t) => t,
        None => i64::try_from(number(h.mtime(), "mtime")?).unwrap_or(i64::MAX),
    };
    Ok(EntryMeta {
        raw_path,
        path,
        kind,
        // Like Go's archive/tar, header-only types carry no content whatever size says.
        size: if kind == EntryType::Reg { size } else { 0 },
        link_name,
        mode: field(h.mode(), offset, "mode")?,
        uid: small(uid, "uid")?,
        gid: small(gid, "gid")?,
        user_name: ext
            .uname
            .clone()
            .unwrap_or_else(|| bytes_text(h.username_bytes())),
        group_name: ext
            .gname
            .clone()
            .unwrap_or_else(|| bytes_text(h.groupname_bytes())),
        mtime,
        dev_major,
        dev_minor,
        xattrs: ext.xattrs.clone(),
    })
}

fn bytes_text(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn entry_kind(flag: u8) -> Option<EntryType> {
    Some(match flag {
        b'0' | b'\0' | b'7' => EntryType::Reg,
        b'1' => EntryType::Hardlink,
        b'2' => EntryType::Symlink,
        b'3' => EntryType::Char,
        b'4' => EntryType::Block,
        b'5' => EntryType::Dir,
        b'6' => EntryType::Fifo,
        _ => return None,
    })
}

fn field<T>(value: io::Result<T>, offset: u64, name: &'static str) -> Result<T, TarError> {
    value.map_err(|_| TarError::Field {
        offset,
        field: name,
    })
}

fn check_checksum(block: &[u8; BLOCK], offset: u64) -> Result<(), TarError> {
    let header = tar::Header::from_byte_slice(block);
    let stored = header.cksum().map_err(|_| TarError::Checksum { offset })?;
    let unsigned: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    // Some old writers summed signed bytes.
    let signed: i64 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                i64::from(b as i8)
            }
        })
        .sum();
    if stored == unsigned || i64::from(stored) == signed {
        Ok(())
    } else {
        Err(TarError::Checksum { offset })
    }
}

/// Zero bytes after `size` content bytes up to the next block boundary.
pub fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{EntrySpec, LongNames, TarBuilder};

    /// Splits `tar` and returns (header bytes ++ data ++ padding) per entry with metadata.
    fn split(tar: &[u8]) -> Result<Vec<(Vec<u8>, EntryMeta)>, TarError> {
        let mut splitter = TarSplitter::new(tar);
        let mut out = Vec::new();
        while let Some(entry) = splitter.next_entry()? {
            let mut bytes = entry.header.clone();
            let mut data = vec![0u8; entry.meta.size as usize];
            splitter.read_data(&mut data)?;
            bytes.extend_from_slice(&data);
            bytes.resize(bytes.len() + padding(entry.meta.size) as usize, 0);
            out.push((bytes, entry.meta));
        }
        Ok(out)
    }

    #[test]
    fn keeps_every_header_byte() {
        let long = "x".repeat(150);
        let mut builder = TarBuilder::new();
        builder
            .file(&long, b"pax")
            .long_names(LongNames::Gnu)
            .file(&format!("g/{long}"), b"gnu")
            .entry(EntrySpec::new("attrs", EntryType::Reg).xattr("user.k", b"\x00\xff"));
        let tar = builder.finish();
        let entries = split(&tar).expect("split");
        let rebuilt: Vec<u8> = entries.iter().flat_map(|(b, _)| b.clone()).collect();
        assert_eq!(rebuilt, tar[..tar.len() - 1024]);
        assert_eq!(entries[0].1.path, long);
        assert_eq!(entries[1].1.path, format!("g/{long}"));
        assert_eq!(entries[2].1.xattrs["user.k"], b"\x00\xff");
    }

    #[test]
    fn parses_metadata() {
        let tar = TarBuilder::new()
            .entry(
                EntrySpec::new("./bin/", EntryType::Dir)
                    .mode(0o1755)
                    .owner(7, 8, "u", "g")
                    .mtime(1234),
            )
            .block_device("dev/sda", 8, 1)
            .symlink("l", "../t")
            .finish();
        let entries = split(&tar).expect("split");
        let dir = &entries[0].1;
        assert_eq!(
            (dir.path.as_str(), dir.raw_path.as_str()),
            ("bin", "./bin/")
        );
        assert_eq!(
            (dir.mode, dir.uid, dir.gid, dir.mtime),
            (0o1755, 7, 8, 1234)
        );
        assert_eq!(
            (dir.user_name.as_str(), dir.group_name.as_str()),
            ("u", "g")
        );
        assert_eq!((entries[1].1.dev_major, entries[1].1.dev_minor), (8, 1));
        assert_eq!(
            entries[2].1.link_name, "../t",
            "symlink targets may leave the dir"
        );
    }

    #[test]
    fn pax_records_override_header_fields() {
        let records = b"21 path=pax/name.txt\n12 uid=4242\n22 mtime=1700000000.5\n";
        let mut pax_header = TarBuilder::new();
        pax_header.entry(EntrySpec::new("ignored", EntryType::Reg).content(records));
        let mut tar = pax_header.unterminated();
        tar[156] = b'x';
        rewrite_checksum(&mut tar[..512]);
        tar.extend_from_slice(&TarBuilder::new().file("short", b"body").finish());
        let entries = split(&tar).expect("split");
        assert_eq!(entries.len(), 1);
        let meta = &entries[0].1;
        assert_eq!(
            (meta.path.as_str(), meta.uid, meta.mtime),
            ("pax/name.txt", 4242, 1_700_000_000)
        );
    }

    fn rewrite_checksum(block: &mut [u8]) {
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    }

    #[test]
    fn rejects_unsupported_and_broken_input() {
        let mut sparse = TarBuilder::new().file("s", b"x").finish();
        sparse[156] = b'S';
        rewrite_checksum(&mut sparse[..512]);
        let mut orphan_ext = TarBuilder::new().file("p", b"records").unterminated();
        orphan_ext[156] = b'L';
        rewrite_checksum(&mut orphan_ext[..512]);
        orphan_ext.extend_from_slice(&[0u8; 1024]);
        let mut bad_pax = TarBuilder::new().file("p", b"99 path=x\n").unterminated();
        bad_pax[156] = b'x';
        rewrite_checksum(&mut bad_pax[..512]);
        bad_pax.extend_from_slice(&TarBuilder::new().file("f", b"").finish());
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("sparse", sparse, "unsupported type 'S'"),
            ("bad pax record", bad_pax, "pax record"),
            ("extension without entry", orphan_ext, "truncated"),
        ];
        for (name, tar, want) in cases {
            let err = split(&tar).expect_err(name);
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
    }

    /// A PAX `x` header holding `records`, as raw blocks.
    fn pax_header(records: &[u8]) -> Vec<u8> {
        let mut tar = TarBuilder::new().file("pax", records).unterminated();
        tar[156] = b'x';
        rewrite_checksum(&mut tar[..512]);
        tar
    }

    #[test]
    fn enforces_bounds() {
        let long = "n".repeat(MAX_NAME_LEN + 1);
        let mut gnu = TarBuilder::new();
        gnu.long_names(LongNames::Gnu);
        let big_xattr = TarBuilder::new()
            .entry(EntrySpec::new("f", EntryType::Reg).xattr("user.big", &vec![b'a'; 9 << 20]))
            .unterminated();
        let one_extension = &big_xattr[..big_xattr.len() - 512];
        let end = TarBuilder::new().file("f", b"").finish();
        let huge_size = format!("29 size={}\n", u64::MAX);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "pax name too long",
                TarBuilder::new().file(&long, b"").finish(),
                "name or link target is 4097 bytes, more than 4096",
            ),
            (
                "gnu link target too long",
                gnu.symlink("l", &long).finish(),
                "name or link target is 4097 bytes",
            ),
            (
                "extension headers summing past the limit",
                [one_extension, one_extension, &end].concat(),
                "extensions to 18874430 bytes, more than 16777216",
            ),
            (
                "pax size past what offsets count",
                [pax_header(huge_size.as_bytes()), end.clone()].concat(),
                "bad size field",
            ),
        ];
        for (name, tar, want) in cases {
            // Skip data like the spooling writer does: reading headers only.
            let mut splitter = TarSplitter::new(tar.as_slice());
            let err = loop {
                match splitter.next_entry() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{name}: accepted"),
                    Err(err) => break err,
                }
            };
            assert!(err.to_string().contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn missing_end_blocks_is_a_clean_end() {
        let tar = TarBuilder::new().file("a", b"1").unterminated();
        assert_eq!(split(&tar).expect("split").len(), 1);
    }
}
