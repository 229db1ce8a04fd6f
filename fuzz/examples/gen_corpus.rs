//! Writes the checked-in seed corpora under `fuzz/corpus/<target>/`: small real inputs
//! built in code (tars, blobs of every format, footers, TOC regions and JSON).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus` (rewrites the seeds;
//! the output is deterministic, and depends on `estargz::testutil::pseudo_random_bytes`:
//! rerun it when that generator changes). Hand-added `regression-*` seeds are kept.

use std::fs;
use std::path::{Path, PathBuf};

use estargz::testutil::{
    blob_with_toc_json, pseudo_random_bytes, EntrySpec, LongNames, TarBuilder,
};
use estargz::{footer, toc, Compression, EntryType, Footer, WriterOptions};

/// Tars to convert: (name, tar).
fn tars() -> Vec<(&'static str, Vec<u8>)> {
    let mut basic = TarBuilder::new();
    basic
        .dir("dir")
        .file("a", &pseudo_random_bytes(1, 3000))
        .file("dir/b", b"hello\n")
        .dir("dir/sub")
        .file("dir/sub/c", &[7u8; 2500])
        .symlink("dir/link", "../a")
        .hardlink("hard", "a")
        .char_device("dev/null", 1, 3)
        .block_device("dev/sda", 8, 0)
        .fifo("dir/fifo")
        .whiteout("dir", "gone")
        .opaque("dir/sub")
        .entry(
            EntrySpec::new("attrs", EntryType::Reg)
                .content(b"x")
                .xattr("user.k", b"\x00\xff")
                .owner(1000, 1000, "user", "group")
                .mode(0o4755),
        )
        .file("empty", b"");
    let long = "long/".repeat(25) + "name.txt";
    let mut pax = TarBuilder::new();
    pax.file(&long, b"pax name")
        .symlink("pax-link", &long)
        .hardlink("pax-hard", &long);
    let mut gnu = TarBuilder::new();
    gnu.long_names(LongNames::Gnu)
        .file(&long, b"gnu name")
        .symlink("gnu-link", &long)
        .hardlink("gnu-hard", &long);
    let mut odd = TarBuilder::new();
    odd.file("./dot/./slash", b"1")
        .file("/abs", b"2")
        .file("dup", b"first")
        .file("dup", b"later wins")
        .dir("d/")
        .dir("d");
    vec![
        ("basic", basic.finish()),
        ("pax-long-names", pax.finish()),
        ("gnu-long-names", gnu.finish()),
        ("odd-names", odd.finish()),
        ("unterminated", basic.unterminated()),
    ]
}

/// Writer options of the `tar` target, as its flag byte encodes them.
fn flags(zstd: bool, prioritized: bool) -> u8 {
    (1 << 2) | u8::from(zstd) | (u8::from(prioritized) << 1)
}

fn options(zstd: bool, prioritized: bool) -> WriterOptions {
    WriterOptions {
        chunk_size: 1025,
        compression: match zstd {
            false => Compression::Gzip { level: 9 },
            true => Compression::Zstd { level: 3 },
        },
        prioritized_files: match prioritized {
            false => Vec::new(),
            true => vec!["a".into(), "dir/b".into(), "hard".into()],
        },
        threads: 1,
        spool_dir: None,
    }
}

struct Blob {
    name: String,
    bytes: Vec<u8>,
    footer: Footer,
}

impl Blob {
    fn new(name: String, bytes: Vec<u8>) -> Self {
        let tail = &bytes[bytes.len() - estargz::FOOTER_MAX_SIZE..];
        let footer = footer::parse(tail).expect("footer");
        Self {
            name,
            bytes,
            footer,
        }
    }

    fn toc_region(&self) -> &[u8] {
        let end = self.bytes.len() - self.footer.size() as usize;
        &self.bytes[self.footer.toc_offset as usize..end]
    }

    fn toc_json(&self) -> Vec<u8> {
        let (toc, _) = toc::decode(&self.footer, self.toc_region()).expect("toc");
        toc::encode(&toc)
    }
}

/// A TOC written by hand: chunks, hardlinks, whiteouts, landmarks, devices, xattrs.
const HAND_TOC: &str = r#"{"version":1,"entries":[
{"name":".no.prefetch.landmark","type":"reg","size":1,"offset":10},
{"name":"./","type":"dir","mode":493},
{"name":"bin/","type":"dir","modtime":"2020-01-01T00:00:00Z","mode":493,"uid":1,"userName":"u"},
{"name":"bin/big","type":"reg","size":10,"offset":100,"chunkSize":4,"digest":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad","chunkDigest":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
{"name":"bin/big","type":"chunk","offset":200,"chunkOffset":4,"chunkSize":4,"innerOffset":3},
{"name":"bin/big","type":"chunk","offset":300,"chunkOffset":8},
{"name":"bin/hard","type":"hardlink","linkName":"bin/big"},
{"name":"bin/sym","type":"symlink","linkName":"../etc/passwd"},
{"name":"etc/.wh..wh..opq","type":"reg"},
{"name":"etc/.wh.gone","type":"reg"},
{"name":"dev/null","type":"char","devMajor":1,"devMinor":3,"xattrs":{"user.x":"AAE="}},
{"name":"a/../b/./c","type":"fifo"},
{"name":"stargz.index.json","type":"reg","size":5,"offset":400}
]}"#;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

/// Removes the seeds this program writes from `dir`, keeping `regression-*` files: those
/// are inputs a fuzzer found, checked in by hand, and not reproducible from here.
fn clear_generated(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("read corpus dir");
        if !entry
            .file_name()
            .to_string_lossy()
            .starts_with("regression-")
        {
            fs::remove_file(entry.path()).expect("remove old seed");
        }
    }
}

fn with_prefix(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

fn main() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in ["footer", "toc", "index", "reader", "tar"] {
        clear_generated(&corpus.join(target));
    }
    let mut blobs = Vec::new();
    for (name, tar) in tars() {
        for (zstd, prioritized) in [(false, false), (true, false), (false, true), (true, true)] {
            let label = format!(
                "{name}-{}{}",
                if zstd { "zstd" } else { "gzip" },
                if prioritized { "-prio" } else { "" }
            );
            write(
                &corpus,
                "tar",
                &label,
                &with_prefix(&[flags(zstd, prioritized)], &tar),
            );
            let mut blob = Vec::new();
            estargz::build(&tar[..], &mut blob, &options(zstd, prioritized)).expect("build");
            if !prioritized && name != "unterminated" {
                blobs.push(Blob::new(label, blob));
            }
        }
    }
    // Legacy stargz: an eStargz blob with the 47-byte footer instead.
    let legacy = {
        let gzip = &blobs[0];
        let mut bytes = gzip.bytes[..gzip.bytes.len() - 51].to_vec();
        bytes.extend_from_slice(&footer::encode_legacy(gzip.footer.toc_offset));
        Blob::new("basic-legacy".into(), bytes)
    };
    blobs.push(legacy);
    let (hand, _) = blob_with_toc_json(HAND_TOC.as_bytes());
    blobs.push(Blob::new("hand-toc".into(), hand));

    write(
        &corpus,
        "footer",
        "estargz",
        &footer::encode_estargz(0x1234),
    );
    write(&corpus, "footer", "legacy", &footer::encode_legacy(4096));
    write(&corpus, "footer", "zstd", &footer::encode_zstd(10, 20, 30));
    write(
        &corpus,
        "index",
        "hand-toc",
        &with_prefix(&1000u64.to_le_bytes(), HAND_TOC.as_bytes()),
    );
    write(&corpus, "toc", "hand-json", HAND_TOC.as_bytes());
    for blob in &blobs {
        let tail = &blob.bytes[blob.bytes.len() - estargz::FOOTER_MAX_SIZE..];
        write(&corpus, "footer", &blob.name, tail);
        write(&corpus, "reader", &blob.name, &blob.bytes);
        let json = blob.toc_json();
        let offset = blob.footer.toc_offset.to_le_bytes();
        write(&corpus, "index", &blob.name, &with_prefix(&offset, &json));
        let mut head = [0u8; 10];
        head[0] = match blob.footer.format {
            estargz::Format::Estargz => 0,
            estargz::Format::LegacyStargz => 1,
            estargz::Format::ZstdChunked => 2,
        };
        let uncompressed = blob.footer.toc_uncompressed_size.unwrap_or_default();
        head[1..9].copy_from_slice(&uncompressed.to_le_bytes());
        write(
            &corpus,
            "toc",
            &blob.name,
            &with_prefix(&head, blob.toc_region()),
        );
    }
}
