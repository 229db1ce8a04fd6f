//! The table of contents (TOC): `Toc`, `TocEntry`, `EntryType`, their exact JSON form, and
//! decoding the TOC out of a blob's TOC region.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::footer::{Footer, Format};
use crate::modtime;

/// Name of the tar entry that holds the TOC JSON in eStargz blobs.
pub const TOC_TAR_NAME: &str = "stargz.index.json";
/// Entry marking the end of the prioritized files; prefetch everything before it.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Entry marking a layer without prioritized files: do not prefetch.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// The single content byte of both landmark files.
pub const LANDMARK_CONTENTS: u8 = 0x0f;

/// Layer annotation holding the sha256 of the uncompressed TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Layer annotation holding the decimal size of the uncompressed layer tar.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// zstd:chunked layer annotation: digest of the compressed TOC.
pub const ZSTD_MANIFEST_CHECKSUM_ANNOTATION: &str = "io.containers.zstd-chunked.manifest-checksum";
/// zstd:chunked layer annotation: `offset:compressed_len:uncompressed_len:1`.
pub const ZSTD_MANIFEST_POSITION_ANNOTATION: &str = "io.containers.zstd-chunked.manifest-position";

/// Largest TOC JSON accepted when reading (uncompressed); bigger TOCs are rejected early.
pub const MAX_TOC_JSON_SIZE: u64 = 256 << 20;
/// Most TOC entries accepted (counted while parsing, before they are all in memory); an
/// index holds at most this many entries, implicit parent directories included.
pub const MAX_TOC_ENTRIES: usize = 1 << 21;
/// Longest entry name or link target accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_NAME_LEN: usize = 4096;

/// Errors from decoding a TOC.
#[derive(Debug, thiserror::Error)]
pub enum TocError {
    #[error("decompress toc: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("read toc tar: {0}")]
    Tar(#[source] std::io::Error),
    #[error("toc tar entry {TOC_TAR_NAME} not found")]
    Missing,
    #[error("toc tar starts with entry {0:?}, expected {TOC_TAR_NAME}")]
    UnexpectedEntry(String),
    #[error("toc json exceeds {MAX_TOC_JSON_SIZE} bytes")]
    TooLarge,
    #[error("toc has more than {MAX_TOC_ENTRIES} entries")]
    TooManyEntries,
    #[error("toc json is {actual} bytes, footer says {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("toc region of {have} bytes is shorter than the {need} bytes the footer names")]
    ShortRegion { need: u64, have: usize },
    #[error("parse toc json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported toc version {0}")]
    Version(i32),
    #[error("toc json has no version")]
    MissingVersion,
}

/// The parsed TOC: every tar entry of the layer (and chunk records) in blob order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toc {
    pub version: i32,
    pub entries: Vec<TocEntry>,
}

/// Start of the serde error the entry visitor gives past `MAX` entries; mapped to
/// [`TocError::TooManyEntries`].
const TOO_MANY_ENTRIES: &str = "too many toc entries";
/// The serde error the entry visitor gives when the caller's handler stops the parse.
const STOPPED: &str = "stopped by the entry handler";

/// Visits the top-level TOC object, handing each entry to `each` as soon as it is parsed.
struct TocVisitor<'a, F, E, const MAX: usize> {
    each: &'a mut F,
    stopped: &'a mut Option<E>,
}

impl<'de, F, E, const MAX: usize> serde::de::Visitor<'de> for TocVisitor<'_, F, E, MAX>
where
    F: FnMut(TocEntry) -> Result<(), E>,
{
    /// The version field, if present.
    type Value = Option<i32>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a toc object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut version = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "version" => version = Some(map.next_value()?),
                "entries" => map.next_value_seed(EntriesSeed::<F, E, MAX> {
                    each: &mut *self.each,
                    stopped: &mut *self.stopped,
                })?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(version)
    }
}

/// The `entries` list: parsed one entry at a time, failing past `MAX` entries.
struct EntriesSeed<'a, F, E, const MAX: usize> {
    each: &'a mut F,
    stopped: &'a mut Option<E>,
}

impl<'de, F, E, const MAX: usize> serde::de::DeserializeSeed<'de> for EntriesSeed<'_, F, E, MAX>
where
    F: FnMut(TocEntry) -> Result<(), E>,
{
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F, E, const MAX: usize> serde::de::Visitor<'de> for EntriesSeed<'_, F, E, MAX>
where
    F: FnMut(TocEntry) -> Result<(), E>,
{
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of toc entries")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut count = 0;
        while let Some(entry) = seq.next_element()? {
            if count == MAX {
                return Err(serde::de::Error::custom(TOO_MANY_ENTRIES));
            }
            count += 1;
            if let Err(error) = (self.each)(entry) {
                *self.stopped = Some(error);
                return Err(serde::de::Error::custom(STOPPED));
            }
        }
        Ok(())
    }
}

/// Why [`parse_json_each`] failed: the JSON, or the entry handler.
#[derive(Debug)]
pub enum EachError<E> {
    Toc(TocError),
    Entry(E),
}

impl Default for Toc {
    fn default() -> Self {
        Self {
            version: 1,
            entries: Vec::new(),
        }
    }
}

/// The kind of a TOC entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    Dir,
    #[default]
    Reg,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// A continuation chunk of the preceding `reg` entry.
    Chunk,
}

/// One TOC record. Field names and omission rules follow the Go `estargz.TOCEntry` JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TocEntry {
    /// Path in the layer, normally without a leading `./` or `/`.
    pub name: String,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Modification time, RFC 3339 (UTC, second precision when written by us).
    #[serde(rename = "modtime", default, skip_serializing_if = "String::is_empty")]
    pub mod_time: String,
    #[serde(rename = "linkName", default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u32,
    #[serde(rename = "userName", default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(
        rename = "groupName",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub group_name: String,
    /// Blob offset of the compressed member holding this entry's (chunk's) data.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Bytes to skip inside the decompressed member before this chunk's data.
    #[serde(rename = "innerOffset", default, skip_serializing_if = "is_zero")]
    pub inner_offset: u64,
    #[serde(rename = "devMajor", default, skip_serializing_if = "is_zero")]
    pub dev_major: u32,
    #[serde(rename = "devMinor", default, skip_serializing_if = "is_zero")]
    pub dev_minor: u32,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        with = "xattrs_base64"
    )]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// sha256 of the whole regular file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Uncompressed offset of this chunk within the file.
    #[serde(rename = "chunkOffset", default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    /// Chunk length; 0 means "to the end of the file".
    #[serde(rename = "chunkSize", default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    /// sha256 of the chunk's uncompressed bytes.
    #[serde(
        rename = "chunkDigest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub chunk_digest: Option<Digest>,
}

impl TocEntry {
    /// The modification time as Unix seconds, if present and well formed.
    pub fn mtime_unix(&self) -> Option<i64> {
        modtime::parse_rfc3339(&self.mod_time)
    }

    /// Sets `mod_time` from Unix seconds, formatted like the Go writer (UTC, `Z`).
    pub fn set_mtime_unix(&mut self, secs: i64) {
        self.mod_time = modtime::format_rfc3339(secs);
    }
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Serde for `xattrs`: values are bytes, base64 (std alphabet, padded) in JSON like Go's `[]byte`.
mod xattrs_base64 {
    use std::collections::BTreeMap;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(map.iter().map(|(k, v)| (k, STANDARD.encode(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let encoded = Option::<BTreeMap<String, String>>::deserialize(deserializer)?;
        encoded
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                let bytes = STANDARD
                    .decode(v.as_bytes())
                    .map_err(|e| serde::de::Error::custom(format!("xattr {k}: {e}")))?;
                Ok((k, bytes))
            })
            .collect()
    }
}

/// Serializes a TOC the way the Go writer does (tab-indented JSON).
pub fn encode(toc: &Toc) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * toc.entries.len() + 64);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing plain structs into a Vec cannot fail.
    if toc.serialize(&mut serializer).is_err() {
        unreachable!("toc serialization into memory failed");
    }
    out
}

/// Parses TOC JSON and returns it with the sha256 of the raw JSON bytes.
pub fn parse_json(json: &[u8]) -> Result<(Toc, Digest), TocError> {
    parse_json_bounded::<MAX_TOC_ENTRIES>(json)
}

fn parse_json_bounded<const MAX: usize>(json: &[u8]) -> Result<(Toc, Digest), TocError> {
    let mut entries = Vec::new();
    let collect = |entry| {
        entries.push(entry);
        Ok::<(), std::convert::Infallible>(())
    };
    match parse_json_each_bounded::<_, _, MAX>(json, collect) {
        Ok(digest) => Ok((
            Toc {
                version: 1,
                entries,
            },
            digest,
        )),
        Err(EachError::Toc(error)) => Err(error),
        Err(EachError::Entry(never)) => match never {},
    }
}

/// Parses TOC JSON and hands each entry to `each` in order, without keeping them: a big
/// TOC's parsed entries would take as much memory as what is built from them. A handler
/// error stops the parse. Returns the sha256 of the raw JSON bytes.
pub fn parse_json_each<E>(
    json: &[u8],
    each: impl FnMut(TocEntry) -> Result<(), E>,
) -> Result<Digest, EachError<E>> {
    parse_json_each_bounded::<_, _, MAX_TOC_ENTRIES>(json, each)
}

fn parse_json_each_bounded<F, E, const MAX: usize>(
    json: &[u8],
    mut each: F,
) -> Result<Digest, EachError<E>>
where
    F: FnMut(TocEntry) -> Result<(), E>,
{
    if json.len() as u64 > MAX_TOC_JSON_SIZE {
        return Err(EachError::Toc(TocError::TooLarge));
    }
    let mut stopped = None;
    let visitor = TocVisitor::<F, E, MAX> {
        each: &mut each,
        stopped: &mut stopped,
    };
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let parsed = serde::Deserializer::deserialize_map(&mut deserializer, visitor)
        .and_then(|version| deserializer.end().map(|()| version));
    if let Some(error) = stopped {
        return Err(EachError::Entry(error));
    }
    let version = parsed.map_err(|e| {
        EachError::Toc(
            match e.is_data() && e.to_string().starts_with(TOO_MANY_ENTRIES) {
                true => TocError::TooManyEntries,
                false => TocError::Json(e),
            },
        )
    })?;
    match version {
        Some(1) => Ok(Digest::sha256(json)),
        Some(other) => Err(EachError::Toc(TocError::Version(other))),
        None => Err(EachError::Toc(TocError::MissingVersion)),
    }
}

/// Decodes the TOC from `region`: the blob bytes from `footer.toc_offset` up to the footer.
///
/// Returns the TOC and the sha256 of its JSON bytes (the `toc.digest` annotation value).
pub fn decode(footer: &Footer, region: &[u8]) -> Result<(Toc, Digest), TocError> {
    parse_json(&decode_json(footer, region)?)
}

/// Decompresses the TOC JSON from `region` (see [`decode`]) without parsing it.
pub fn decode_json(footer: &Footer, region: &[u8]) -> Result<Vec<u8>, TocError> {
    match footer.format {
        Format::Estargz | Format::LegacyStargz => json_from_gzip_tar(region),
        Format::ZstdChunked => json_from_zstd(footer, region),
    }
}

fn json_from_gzip_tar(region: &[u8]) -> Result<Vec<u8>, TocError> {
    // The TOC member holds a tar header, the JSON and two end blocks.
    let limit = MAX_TOC_JSON_SIZE + 64 * 1024;
    let gunzip = flate2::read::GzDecoder::new(region).take(limit);
    let mut archive = tar::Archive::new(gunzip);
    let mut entries = archive.entries().map_err(TocError::Tar)?;
    // Like the Go reader, only the first entry counts: nothing else is decompressed.
    let mut entry = entries
        .next()
        .ok_or(TocError::Missing)?
        .map_err(TocError::Tar)?;
    let path = entry.path_bytes();
    let name = String::from_utf8_lossy(&path);
    if crate::path::normalize_name(&name) != TOC_TAR_NAME {
        return Err(TocError::UnexpectedEntry(truncated(&name)));
    }
    if entry.size() > MAX_TOC_JSON_SIZE {
        return Err(TocError::TooLarge);
    }
    let mut json = Vec::new();
    entry.read_to_end(&mut json).map_err(TocError::Tar)?;
    if (json.len() as u64) < entry.size() {
        return Err(TocError::Tar(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(json)
}

/// At most the first 256 bytes of a hostile name, for error messages.
pub(crate) fn truncated(name: &str) -> String {
    let mut end = name.len().min(256);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

fn json_from_zstd(footer: &Footer, region: &[u8]) -> Result<Vec<u8>, TocError> {
    let compressed_len = footer.toc_compressed_size.unwrap_or(region.len() as u64);
    let compressed = usize::try_from(compressed_len)
        .ok()
        .and_then(|len| region.get(..len))
        .ok_or(TocError::ShortRegion {
            need: compressed_len,
            have: region.len(),
        })?;
    // Stop decompressing one byte past the declared size: a bomb ends there.
    let declared = footer.toc_uncompressed_size.unwrap_or(MAX_TOC_JSON_SIZE);
    if declared > MAX_TOC_JSON_SIZE {
        return Err(TocError::TooLarge);
    }
    let decoder = zstd::stream::read::Decoder::new(compressed).map_err(TocError::Decompress)?;
    let mut json = Vec::new();
    decoder
        .take(declared + 1)
        .read_to_end(&mut json)
        .map_err(TocError::Decompress)?;
    if json.len() as u64 > MAX_TOC_JSON_SIZE {
        return Err(TocError::TooLarge);
    }
    if let Some(expected) = footer.toc_uncompressed_size {
        if expected != json.len() as u64 {
            return Err(TocError::SizeMismatch {
                expected,
                actual: json.len() as u64,
            });
        }
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_entry() -> TocEntry {
        TocEntry {
            name: "usr/bin/tool".into(),
            entry_type: EntryType::Reg,
            size: 10,
            mod_time: "2023-11-14T22:13:20Z".into(),
            link_name: "x".into(),
            mode: 0o755,
            uid: 1,
            gid: 2,
            user_name: "u".into(),
            group_name: "g".into(),
            offset: 3,
            inner_offset: 4,
            dev_major: 5,
            dev_minor: 6,
            xattrs: BTreeMap::from([("user.a".to_string(), b"hi".to_vec())]),
            digest: Some(Digest::sha256(b"d")),
            chunk_offset: 7,
            chunk_size: 8,
            chunk_digest: Some(Digest::sha256(b"c")),
        }
    }

    #[test]
    fn json_uses_the_go_field_names() {
        let value = serde_json::to_value(full_entry()).expect("serialize");
        let keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "name",
            "type",
            "size",
            "modtime",
            "linkName",
            "mode",
            "uid",
            "gid",
            "userName",
            "groupName",
            "offset",
            "innerOffset",
            "devMajor",
            "devMinor",
            "xattrs",
            "digest",
            "chunkOffset",
            "chunkSize",
            "chunkDigest",
        ];
        let mut keys = keys;
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(value["xattrs"]["user.a"], "aGk=");
        assert_eq!(value["type"], "reg");
    }

    #[test]
    fn empty_fields_are_omitted() {
        let entry = TocEntry {
            name: "d".into(),
            entry_type: EntryType::Dir,
            ..TocEntry::default()
        };
        assert_eq!(
            serde_json::to_string(&entry).expect("json"),
            r#"{"name":"d","type":"dir"}"#
        );
    }

    #[test]
    fn parses_go_json_and_ignores_unknown_fields() {
        let json = br#"{"version":1,"entries":[
            {"name":"bin/","type":"dir","modtime":"2020-01-01T00:00:00Z","mode":493,"NumLink":2},
            {"name":"bin/sh","type":"reg","size":3,"offset":12,"digest":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","xattrs":{"user.x":"AAE="}},
            {"name":"dev/null","type":"char","devMajor":1,"devMinor":3}
        ]}"#;
        let (toc, digest) = parse_json(json).expect("parse");
        assert_eq!(digest, Digest::sha256(json));
        assert_eq!(toc.entries.len(), 3);
        assert_eq!(toc.entries[0].mtime_unix(), Some(1_577_836_800));
        assert_eq!(toc.entries[1].xattrs["user.x"], vec![0, 1]);
        assert_eq!(toc.entries[2].entry_type, EntryType::Char);
    }

    #[test]
    fn rejects_bad_json() {
        let cases: [(&str, &[u8]); 4] = [
            (
                "unknown type",
                br#"{"version":1,"entries":[{"name":"a","type":"socket"}]}"#,
            ),
            (
                "bad digest",
                br#"{"version":1,"entries":[{"name":"a","type":"reg","digest":"md5:00"}]}"#,
            ),
            ("version 2", br#"{"version":2,"entries":[]}"#),
            ("not json", b"hello"),
        ];
        for (name, json) in cases {
            assert!(parse_json(json).is_err(), "{name}");
        }
    }

    #[test]
    fn encode_round_trips() {
        let toc = Toc {
            version: 1,
            entries: vec![full_entry()],
        };
        let json = encode(&toc);
        assert!(json.starts_with(b"{\n\t\"version\": 1"));
        assert_eq!(parse_json(&json).expect("parse").0, toc);
    }

    fn zstd_footer(compressed: &[u8], uncompressed_size: u64) -> Footer {
        Footer {
            format: Format::ZstdChunked,
            toc_offset: 0,
            toc_compressed_size: Some(compressed.len() as u64),
            toc_uncompressed_size: Some(uncompressed_size),
        }
    }

    fn gzip_tar(tar: &[u8]) -> Vec<u8> {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, tar).expect("gzip");
        gzip.finish().expect("gzip")
    }

    #[test]
    fn enforces_bounds() {
        let entry = r#"{"name":"a","type":"reg"}"#;
        let json = |n: usize| {
            format!(
                r#"{{"version":1,"entries":[{}]}}"#,
                vec![entry; n].join(",")
            )
        };
        let bounded = |n| parse_json_bounded::<2>(json(n).as_bytes()).map(|(t, _)| t.entries.len());
        assert_eq!(
            bounded(2).map_err(|e| e.to_string()),
            Ok(2),
            "entries at the limit"
        );
        assert!(
            matches!(bounded(3), Err(TocError::TooManyEntries)),
            "too many entries"
        );

        let spaces = zstd::bulk::compress(&vec![b' '; 1 << 20], 1).expect("compress");
        let other_first = gzip_tar(
            &crate::testutil::TarBuilder::new()
                .file("other", b"{}")
                .file(TOC_TAR_NAME, json(1).as_bytes())
                .finish(),
        );
        let empty_tar = gzip_tar(&[0u8; 1024]);
        let estargz = Footer {
            format: Format::Estargz,
            toc_offset: 0,
            toc_compressed_size: None,
            toc_uncompressed_size: None,
        };
        let cases: Vec<(&str, Footer, Vec<u8>, &str)> = vec![
            (
                "declared toc size over the limit",
                zstd_footer(&spaces, MAX_TOC_JSON_SIZE + 1),
                spaces.clone(),
                "toc json exceeds 268435456 bytes",
            ),
            (
                "bomb stops one byte past the declared size",
                zstd_footer(&spaces, 10),
                spaces.clone(),
                "toc json is 11 bytes, footer says 10",
            ),
            (
                "toc tar starting with another entry",
                estargz,
                other_first,
                "toc tar starts with entry \"other\", expected stargz.index.json",
            ),
            (
                "empty toc tar",
                estargz,
                empty_tar,
                "toc tar entry stargz.index.json not found",
            ),
        ];
        for (name, footer, region, want) in cases {
            let got = decode(&footer, &region)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_string()), "{name}");
        }
    }

    #[test]
    fn zstd_toc_bomb_is_rejected() {
        let big = vec![b' '; (MAX_TOC_JSON_SIZE + 10) as usize];
        let compressed = zstd::bulk::compress(&big, 1).expect("compress");
        let footer = Footer {
            format: Format::ZstdChunked,
            toc_offset: 0,
            toc_compressed_size: Some(compressed.len() as u64),
            toc_uncompressed_size: Some(big.len() as u64),
        };
        assert!(matches!(
            decode(&footer, &compressed),
            Err(TocError::TooLarge)
        ));
    }
}
