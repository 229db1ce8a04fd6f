//! Test support (feature `testutil`): `TarBuilder` builds tar fixtures in code, and
//! `tar_listing` summarises a tar so tests can compare input and output trees.
//!
//! These helpers panic on malformed input: they are for tests and benches only.

use std::collections::BTreeMap;
use std::io::Read;

use crate::digest::Digest;
use crate::footer::Format;
use crate::index::normalize_name;
use crate::toc::{EntryType, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME};

/// How names longer than the 100-byte ustar field are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LongNames {
    /// A PAX `x` header with `path` / `linkpath` records.
    #[default]
    Pax,
    /// GNU `L` / `K` long-name entries.
    Gnu,
}

/// Everything about one tar entry to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub path: String,
    /// `Chunk` is not a tar type and is rejected by [`TarBuilder::entry`].
    pub kind: EntryType,
    pub content: Vec<u8>,
    /// Symlink or hardlink target.
    pub link: String,
    /// Mode bits written to the header (may include setuid/setgid/sticky).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntrySpec {
    /// An entry of `kind` at `path` with mode 0755 (dirs) or 0644, root owned, mtime 1e9.
    pub fn new(path: &str, kind: EntryType) -> Self {
        Self {
            path: path.to_string(),
            kind,
            content: Vec::new(),
            link: String::new(),
            mode: if kind == EntryType::Dir { 0o755 } else { 0o644 },
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
            mtime: 1_000_000_000,
            dev_major: 0,
            dev_minor: 0,
            xattrs: BTreeMap::new(),
        }
    }

    pub fn content(mut self, content: &[u8]) -> Self {
        self.content = content.to_vec();
        self
    }

    pub fn link(mut self, target: &str) -> Self {
        self.link = target.to_string();
        self
    }

    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    pub fn owner(mut self, uid: u64, gid: u64, uname: &str, gname: &str) -> Self {
        self.uid = uid;
        self.gid = gid;
        self.uname = uname.to_string();
        self.gname = gname.to_string();
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    pub fn device(mut self, major: u32, minor: u32) -> Self {
        self.dev_major = major;
        self.dev_minor = minor;
        self
    }

    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.xattrs.insert(name.to_string(), value.to_vec());
        self
    }
}

/// Builds a tar archive in memory.
#[derive(Debug, Clone, Default)]
pub struct TarBuilder {
    out: Vec<u8>,
    long_names: LongNames,
}

impl TarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses how long names are encoded from now on.
    pub fn long_names(&mut self, style: LongNames) -> &mut Self {
        self.long_names = style;
        self
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.entry(EntrySpec::new(path, EntryType::Dir))
    }

    pub fn file(&mut self, path: &str, content: &[u8]) -> &mut Self {
        self.entry(EntrySpec::new(path, EntryType::Reg).content(content))
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(
            EntrySpec::new(path, EntryType::Symlink)
                .link(target)
                .mode(0o777),
        )
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(EntrySpec::new(path, EntryType::Hardlink).link(target))
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.entry(EntrySpec::new(path, EntryType::Char).device(major, minor))
    }

    pub fn block_device(&mut self, path: &str, major: u32, minor: u32) -> &mut Self {
        self.entry(EntrySpec::new(path, EntryType::Block).device(major, minor))
    }

    pub fn fifo(&mut self, path: &str) -> &mut Self {
        self.entry(EntrySpec::new(path, EntryType::Fifo))
    }

    /// An overlay whiteout `<dir>/.wh.<name>` (empty regular file).
    pub fn whiteout(&mut self, dir: &str, name: &str) -> &mut Self {
        self.file(&join(dir, &format!(".wh.{name}")), b"")
    }

    /// An opaque-directory marker `<dir>/.wh..wh..opq`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&join(dir, ".wh..wh..opq"), b"")
    }

    /// Appends any entry.
    pub fn entry(&mut self, spec: EntrySpec) -> &mut Self {
        let mut pax = Vec::new();
        if spec.path.len() > 100 || spec.link.len() > 100 {
            match self.long_names {
                LongNames::Pax => {
                    if spec.path.len() > 100 {
                        pax.push(pax_record("path", spec.path.as_bytes()));
                    }
                    if spec.link.len() > 100 {
                        pax.push(pax_record("linkpath", spec.link.as_bytes()));
                    }
                }
                LongNames::Gnu => self.gnu_long_names(&spec),
            }
        }
        for (name, value) in &spec.xattrs {
            pax.push(pax_record(&format!("SCHILY.xattr.{name}"), value));
        }
        if !pax.is_empty() {
            let records = pax.concat();
            self.out.extend_from_slice(&raw_header(
                b"././@PaxHeader",
                b'x',
                records.len() as u64,
                &spec,
            ));
            self.push_padded(&records);
        }
        let flag = type_flag(spec.kind);
        let size = if spec.kind == EntryType::Reg {
            spec.content.len() as u64
        } else {
            0
        };
        self.out
            .extend_from_slice(&raw_header(spec.path.as_bytes(), flag, size, &spec));
        if size > 0 {
            self.push_padded(&spec.content);
        }
        self
    }

    /// Appends raw bytes (for corrupt-input tests).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// The archive with its two end-of-archive blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.out.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    /// The archive so far, without end-of-archive blocks.
    pub fn unterminated(&self) -> Vec<u8> {
        self.out.clone()
    }

    fn gnu_long_names(&mut self, spec: &EntrySpec) {
        let mut long = |flag: u8, value: &str| {
            let mut data = value.as_bytes().to_vec();
            data.push(0);
            let header = raw_header(b"././@LongLink", flag, data.len() as u64, spec);
            self.out.extend_from_slice(&header);
            self.push_padded(&data);
        };
        if spec.path.len() > 100 {
            long(b'L', &spec.path);
        }
        if spec.link.len() > 100 {
            long(b'K', &spec.link);
        }
    }

    fn push_padded(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, padding));
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

fn type_flag(kind: EntryType) -> u8 {
    match kind {
        EntryType::Dir => b'5',
        EntryType::Reg => b'0',
        EntryType::Symlink => b'2',
        EntryType::Hardlink => b'1',
        EntryType::Char => b'3',
        EntryType::Block => b'4',
        EntryType::Fifo => b'6',
        EntryType::Chunk => panic!("chunk is not a tar entry type"),
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // The length prefix counts itself; settle it by iterating.
    let body_len = key.len() + value.len() + 3;
    let mut len = body_len + 1;
    while len != body_len + len.to_string().len() {
        len = body_len + len.to_string().len();
    }
    let mut record = format!("{len} {key}=").into_bytes();
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

/// A ustar header written byte by byte (so test names may contain "..").
fn raw_header(name: &[u8], flag: u8, size: u64, spec: &EntrySpec) -> [u8; 512] {
    let mut h = [0u8; 512];
    put_bytes(&mut h[0..100], name);
    put_octal(&mut h[100..108], u64::from(spec.mode));
    put_octal(&mut h[108..116], spec.uid);
    put_octal(&mut h[116..124], spec.gid);
    put_octal(&mut h[124..136], size);
    put_octal(&mut h[136..148], spec.mtime);
    h[156] = flag;
    put_bytes(&mut h[157..257], spec.link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    put_bytes(&mut h[265..297], spec.uname.as_bytes());
    put_bytes(&mut h[297..329], spec.gname.as_bytes());
    put_octal(&mut h[329..337], u64::from(spec.dev_major));
    put_octal(&mut h[337..345], u64::from(spec.dev_minor));
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() <= digits,
        "{value} does not fit a {digits}-digit field"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// What `tar_listing` records about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySummary {
    /// Tar type flag as a char ('0' regular, '5' dir, '2' symlink, '1' hardlink, ...).
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: u64,
    pub size: u64,
    pub link: String,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// sha256 of the content of regular files.
    pub sha256: Option<Digest>,
}

/// Summarises every entry of a tar by normalised name (later duplicates win), leaving out
/// `stargz.index.json` and the landmark files.
pub fn tar_listing(tar: &[u8]) -> BTreeMap<String, EntrySummary> {
    let mut archive = tar::Archive::new(tar);
    let mut listing = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = normalize_name(&String::from_utf8_lossy(&entry.path_bytes()));
        if [TOC_TAR_NAME, PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK].contains(&name.as_str()) {
            continue;
        }
        let summary = summarize(&mut entry);
        listing.insert(name, summary);
    }
    listing
}

fn summarize<R: Read>(entry: &mut tar::Entry<'_, R>) -> EntrySummary {
    let mut xattrs = BTreeMap::new();
    if let Some(extensions) = entry.pax_extensions().expect("pax extensions") {
        for ext in extensions {
            let ext = ext.expect("pax record");
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                xattrs.insert(name.to_string(), ext.value_bytes().to_vec());
            }
        }
    }
    let header = entry.header().clone();
    let kind = char::from(header.entry_type().as_byte());
    let link = entry
        .link_name_bytes()
        .map(|l| String::from_utf8_lossy(&l).into_owned())
        .unwrap_or_default();
    let mut content = Vec::new();
    entry.read_to_end(&mut content).expect("entry content");
    let is_reg = matches!(kind, '0' | '\0' | '7');
    EntrySummary {
        kind: if kind == '\0' { '0' } else { kind },
        mode: header.mode().expect("mode"),
        uid: header.uid().expect("uid"),
        gid: header.gid().expect("gid"),
        uname: String::from_utf8_lossy(header.username_bytes().unwrap_or_default()).into_owned(),
        gname: String::from_utf8_lossy(header.groupname_bytes().unwrap_or_default()).into_owned(),
        mtime: header.mtime().expect("mtime"),
        size: entry.size(),
        link,
        dev_major: header.device_major().ok().flatten().unwrap_or(0),
        dev_minor: header.device_minor().ok().flatten().unwrap_or(0),
        xattrs,
        sha256: is_reg.then(|| Digest::sha256(&content)),
    }
}

/// Decompresses a whole blob (all gzip members / zstd frames) into the tar stream.
pub fn decompress_blob(format: Format, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        Format::Estargz | Format::LegacyStargz => {
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut out)
                .expect("gunzip blob");
        }
        Format::ZstdChunked => {
            zstd::stream::read::Decoder::new(blob)
                .expect("zstd decoder")
                .read_to_end(&mut out)
                .expect("unzstd blob");
        }
    }
    out
}

/// Deterministic pseudo-random bytes (splitmix64) for incompressible fixture content.
///
/// Every seed, 0 included, gives its own stream: two calls give the same bytes only when
/// both the seed and the length agree, or one length is a prefix of the other. (The stream
/// of seed `s` is the stream of seed `s + 0x9E37_79B9_7F4A_7C15` shifted by eight bytes;
/// no test uses seeds that far apart.)
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let word = z.to_le_bytes();
        let take = word.len().min(len - out.len());
        out.extend_from_slice(&word[..take]);
    }
    out
}

/// An eStargz blob holding no file data, only a TOC with exactly `toc_json` (not checked:
/// tests use it to hand a reader a hostile TOC) and the footer. Returns the blob and the
/// TOC digest a converter would have annotated it with.
pub fn blob_with_toc_json(toc_json: &[u8]) -> (Vec<u8>, Digest) {
    let mut tar = TarBuilder::new();
    tar.file(TOC_TAR_NAME, toc_json);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, &tar.finish()).expect("gzip toc");
    let mut blob = gzip.finish().expect("gzip toc");
    blob.extend_from_slice(&crate::footer::encode_estargz(0));
    (blob, Digest::sha256(toc_json))
}
