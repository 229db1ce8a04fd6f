//! One layer -> one eStargz / zstd:chunked blob, its descriptor, DiffID and annotations.
//!
//! Runs on a blocking thread. The source blob is read once, as a stream: its sha256 is
//! checked against the descriptor while it is decompressed and fed to the writer, whose
//! output goes to a temporary file in the work dir. A source that already is in the target
//! format with a valid TOC is kept (only its annotations are completed).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use estargz::{
    Compression, Digest, Format, Hasher, Reader, WriteError, WriterOptions, TOC_DIGEST_ANNOTATION,
    UNCOMPRESSED_SIZE_ANNOTATION, ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
    ZSTD_MANIFEST_POSITION_ANNOTATION,
};
use flate2::read::MultiGzDecoder;

use crate::oci::{Descriptor, OCI_LAYER_GZIP, OCI_LAYER_ZSTD};
use crate::progress::LayerProgress;
use crate::store::BlobFile;

const READ_BUFFER: usize = 1 << 20;
const WRITE_BUFFER: usize = 1 << 20;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Errors from converting one layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("open source blob {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("create output file in work dir {}: {source}", dir.display())]
    Output { dir: PathBuf, source: io::Error },
    #[error("convert {compression} layer: {source}")]
    Write {
        compression: SourceCompression,
        source: WriteError,
    },
    #[error("read {compression} layer: {source}")]
    Read {
        compression: SourceCompression,
        source: io::Error,
    },
    #[error("source blob is corrupt: its sha256 is {actual}, the manifest says {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("source blob is {actual} bytes, the manifest says {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("cancelled")]
    Cancelled,
}

/// How the source bytes are compressed, from their magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCompression {
    Gzip,
    Zstd,
    Uncompressed,
}

impl std::fmt::Display for SourceCompression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SourceCompression::Gzip => "gzip",
            SourceCompression::Zstd => "zstd",
            SourceCompression::Uncompressed => "uncompressed tar",
        })
    }
}

/// Settings shared by every layer of a run.
#[derive(Debug, Clone)]
pub struct LayerOptions {
    pub compression: Compression,
    pub chunk_size: u64,
    /// Re-convert layers that already are in the target format.
    pub force: bool,
    /// Compression members in flight per layer (0 = cores).
    pub threads: usize,
    pub work_dir: PathBuf,
    /// Set when another layer failed: stop reading and give up early.
    pub cancel: Arc<AtomicBool>,
}

/// The outcome for one layer.
#[derive(Debug)]
pub struct ConvertedLayer {
    /// The descriptor for the new manifest.
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub toc_digest: Digest,
    pub uncompressed_size: u64,
    /// The source blob was kept as is.
    pub reused: bool,
}

/// Converts (or reuses) the layer `desc` whose blob is `source`; returns the outcome and
/// the blob to store at the destination (the source itself when reused).
pub fn convert_layer(
    source: BlobFile,
    desc: &Descriptor,
    prioritized_files: Vec<String>,
    opts: &LayerOptions,
    progress: &LayerProgress,
) -> Result<(ConvertedLayer, BlobFile), LayerError> {
    let file = open(source.path())?;
    let actual_size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if actual_size != desc.size {
        return Err(LayerError::SizeMismatch {
            expected: desc.size,
            actual: actual_size,
        });
    }
    if !opts.force && prioritized_files.is_empty() {
        if let Some(existing) = existing_in_target_format(&file, desc, opts.compression) {
            let layer = reuse(file, desc, existing, opts, progress)?;
            return Ok((layer, source));
        }
    }
    rewrite(file, desc, prioritized_files, opts, progress)
}

fn open(path: &Path) -> Result<File, LayerError> {
    File::open(path).map_err(|source| LayerError::Open {
        path: path.to_owned(),
        source,
    })
}

/// What a valid existing eStargz / zstd:chunked blob tells about itself.
struct Existing {
    format: Format,
    toc_digest: Digest,
    /// zstd:chunked: (checksum, `offset:clen:ulen:1`).
    zstd_manifest: Option<(Digest, String)>,
}

/// The blob's TOC, when the blob already is in the target format and its TOC is valid
/// (matching the annotated TOC digest, if there is one).
fn existing_in_target_format(
    file: &File,
    desc: &Descriptor,
    target: Compression,
) -> Option<Existing> {
    let footer = estargz::is_estargz(file)?;
    let wanted = match target {
        Compression::Gzip { .. } => Format::Estargz,
        Compression::Zstd { .. } => Format::ZstdChunked,
    };
    if footer.format != wanted {
        return None;
    }
    let annotated: Option<Digest> = desc
        .annotation(TOC_DIGEST_ANNOTATION)
        .and_then(|d| d.parse().ok());
    let reader = match Reader::open(file, annotated.as_ref()) {
        Ok(reader) => reader,
        Err(e) => {
            tracing::warn!(
                "layer {} has a {} footer but is not reusable: {e}",
                desc.digest,
                footer.format
            );
            return None;
        }
    };
    let zstd_manifest = match (footer.toc_compressed_size, footer.toc_uncompressed_size) {
        (Some(clen), Some(ulen)) => {
            let checksum = checksum_range(file, footer.toc_offset, clen).ok()?;
            Some((checksum, format!("{}:{clen}:{ulen}:1", footer.toc_offset)))
        }
        _ => None,
    };
    Some(Existing {
        format: footer.format,
        toc_digest: *reader.toc_digest(),
        zstd_manifest,
    })
}

fn checksum_range(file: &File, offset: u64, len: u64) -> io::Result<Digest> {
    let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    let mut buf = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut buf, offset)?;
    Ok(Digest::sha256(&buf))
}

/// Keeps an existing blob: one streaming pass checks its digest and computes the DiffID
/// and uncompressed size that the annotations and config need.
fn reuse(
    file: File,
    desc: &Descriptor,
    existing: Existing,
    opts: &LayerOptions,
    progress: &LayerProgress,
) -> Result<ConvertedLayer, LayerError> {
    progress.phase("verify", desc.size);
    let compression = match existing.format {
        Format::ZstdChunked => SourceCompression::Zstd,
        Format::Estargz | Format::LegacyStargz => SourceCompression::Gzip,
    };
    let mut input = SourceReader::new(file, progress.clone(), opts.cancel.clone());
    let (diff_id, uncompressed_size) = {
        let mut decoder = decoder(compression, &mut input)?;
        let mut hashing = CountingHasher::default();
        io::copy(&mut decoder, &mut hashing)
            .map_err(|e| read_error(compression, e, &opts.cancel))?;
        (hashing.hasher.finish(), hashing.count)
    };
    input.finish(desc, compression, &opts.cancel)?;
    let media_type = match existing.format {
        Format::ZstdChunked => OCI_LAYER_ZSTD,
        Format::Estargz | Format::LegacyStargz => OCI_LAYER_GZIP,
    };
    let mut descriptor = desc.clone();
    descriptor.media_type = media_type.to_owned();
    descriptor.set_annotation(TOC_DIGEST_ANNOTATION, existing.toc_digest.to_string());
    descriptor.set_annotation(UNCOMPRESSED_SIZE_ANNOTATION, uncompressed_size.to_string());
    if let Some((checksum, position)) = existing.zstd_manifest {
        descriptor.set_annotation(ZSTD_MANIFEST_CHECKSUM_ANNOTATION, checksum.to_string());
        descriptor.set_annotation(ZSTD_MANIFEST_POSITION_ANNOTATION, position);
    }
    Ok(ConvertedLayer {
        descriptor,
        diff_id,
        toc_digest: existing.toc_digest,
        uncompressed_size,
        reused: true,
    })
}

/// Decompresses the source and writes a new blob.
fn rewrite(
    file: File,
    desc: &Descriptor,
    prioritized_files: Vec<String>,
    opts: &LayerOptions,
    progress: &LayerProgress,
) -> Result<(ConvertedLayer, BlobFile), LayerError> {
    progress.phase("convert", desc.size);
    let compression = sniff(&file);
    let output = tempfile::Builder::new()
        .prefix("out-")
        .tempfile_in(&opts.work_dir)
        .map_err(|source| LayerError::Output {
            dir: opts.work_dir.clone(),
            source,
        })?;
    let writer_opts = WriterOptions {
        chunk_size: opts.chunk_size,
        compression: opts.compression,
        prioritized_files,
        threads: opts.threads,
        spool_dir: Some(opts.work_dir.clone()),
    };
    let mut input = SourceReader::new(file, progress.clone(), opts.cancel.clone());
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, output.as_file());
    let result = {
        let mut decoder = decoder(compression, &mut input)?;
        let result = estargz::build(&mut decoder, &mut out, &writer_opts).map_err(|source| {
            if opts.cancel.load(Ordering::Relaxed) {
                LayerError::Cancelled
            } else {
                LayerError::Write {
                    compression,
                    source,
                }
            }
        })?;
        // The writer may stop at the tar end marker: read the rest so that gzip CRCs and
        // the blob digest cover every byte.
        io::copy(&mut decoder, &mut io::sink())
            .map_err(|e| read_error(compression, e, &opts.cancel))?;
        result
    };
    input.finish(desc, compression, &opts.cancel)?;
    out.flush().map_err(|source| LayerError::Write {
        compression,
        source: WriteError::Output(source),
    })?;
    drop(out);
    let blob = BlobFile::temporary(output.into_temp_path());
    let layer = ConvertedLayer {
        descriptor: new_descriptor(desc, &result),
        diff_id: result.diff_id,
        toc_digest: result.toc_digest,
        uncompressed_size: result.uncompressed_size,
        reused: false,
    };
    Ok((layer, blob))
}

/// The converted layer's descriptor: source annotations and extension fields kept, except
/// those describing the old blob.
fn new_descriptor(source: &Descriptor, result: &estargz::WriteResult) -> Descriptor {
    let media_type = match result.zstd_manifest {
        Some(_) => OCI_LAYER_ZSTD,
        None => OCI_LAYER_GZIP,
    };
    let mut descriptor = source.clone();
    descriptor.media_type = media_type.to_owned();
    descriptor.digest = result.blob_digest;
    descriptor.size = result.compressed_size;
    descriptor.urls = None;
    descriptor.extra.remove("data");
    if let Some(annotations) = descriptor.annotations.as_mut() {
        for key in [
            TOC_DIGEST_ANNOTATION,
            UNCOMPRESSED_SIZE_ANNOTATION,
            ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
            ZSTD_MANIFEST_POSITION_ANNOTATION,
        ] {
            annotations.remove(key);
        }
    }
    for (key, value) in result.annotations() {
        descriptor.set_annotation(&key, value);
    }
    descriptor
}

/// The compression the first bytes show (media types are not always honest).
fn sniff(file: &File) -> SourceCompression {
    let mut magic = [0u8; 4];
    let n = std::os::unix::fs::FileExt::read_at(file, &mut magic, 0).unwrap_or(0);
    if n >= 2 && magic[..2] == GZIP_MAGIC {
        SourceCompression::Gzip
    } else if n == 4 && magic == ZSTD_MAGIC {
        SourceCompression::Zstd
    } else {
        SourceCompression::Uncompressed
    }
}

fn decoder<'a, R: Read + 'a>(
    compression: SourceCompression,
    input: R,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    Ok(match compression {
        SourceCompression::Gzip => Box::new(MultiGzDecoder::new(input)),
        SourceCompression::Zstd => {
            Box::new(
                zstd::Decoder::new(input).map_err(|source| LayerError::Read {
                    compression,
                    source,
                })?,
            )
        }
        SourceCompression::Uncompressed => Box::new(input),
    })
}

fn read_error(
    compression: SourceCompression,
    source: io::Error,
    cancel: &AtomicBool,
) -> LayerError {
    if cancel.load(Ordering::Relaxed) {
        LayerError::Cancelled
    } else {
        LayerError::Read {
            compression,
            source,
        }
    }
}

/// Reads the source blob, hashing and counting every byte and reporting progress.
struct SourceReader {
    inner: BufReader<File>,
    hasher: Hasher,
    count: u64,
    progress: LayerProgress,
    cancel: Arc<AtomicBool>,
}

impl SourceReader {
    fn new(file: File, progress: LayerProgress, cancel: Arc<AtomicBool>) -> Self {
        Self {
            inner: BufReader::with_capacity(READ_BUFFER, file),
            hasher: Hasher::new(),
            count: 0,
            progress,
            cancel,
        }
    }

    /// Reads what is left and checks size and digest against the descriptor.
    fn finish(
        mut self,
        desc: &Descriptor,
        compression: SourceCompression,
        cancel: &AtomicBool,
    ) -> Result<(), LayerError> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| read_error(compression, e, cancel))?;
        if self.count != desc.size {
            return Err(LayerError::SizeMismatch {
                expected: desc.size,
                actual: self.count,
            });
        }
        let actual = self.hasher.finish();
        if actual != desc.digest {
            return Err(LayerError::DigestMismatch {
                expected: desc.digest,
                actual,
            });
        }
        Ok(())
    }
}

impl Read for SourceReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count = self.count.saturating_add(n as u64);
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// A sink that hashes and counts what it is given.
#[derive(Default)]
struct CountingHasher {
    hasher: Hasher,
    count: u64,
}

impl Write for CountingHasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.count = self.count.saturating_add(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Seek;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.rewind().unwrap();
        file
    }

    #[test]
    fn sniff_table() {
        let cases: [(&str, &[u8], SourceCompression); 5] = [
            ("gzip", &[0x1f, 0x8b, 8, 0], SourceCompression::Gzip),
            (
                "zstd",
                &[0x28, 0xb5, 0x2f, 0xfd, 0],
                SourceCompression::Zstd,
            ),
            ("tar", b"etc/passwd\0\0\0", SourceCompression::Uncompressed),
            ("short", &[0x28], SourceCompression::Uncompressed),
            ("empty", &[], SourceCompression::Uncompressed),
        ];
        for (name, bytes, expected) in cases {
            assert_eq!(sniff(&file_with(bytes)), expected, "{name}");
        }
    }

    #[test]
    fn new_descriptor_drops_stale_blob_facts() {
        let mut source = Descriptor::new(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Digest::sha256(b"old"),
            3,
        );
        source.set_annotation("org.example.keep", "yes");
        source.set_annotation(ZSTD_MANIFEST_CHECKSUM_ANNOTATION, "stale");
        source.urls = Some(vec!["https://example.com/blob".into()]);
        source
            .extra
            .insert("data".into(), serde_json::Value::String("b2xk".into()));
        let result = estargz::WriteResult {
            toc_digest: Digest::sha256(b"toc"),
            diff_id: Digest::sha256(b"tar"),
            blob_digest: Digest::sha256(b"blob"),
            compressed_size: 4,
            uncompressed_size: 3,
            toc_offset: 1,
            zstd_manifest: None,
        };
        let desc = new_descriptor(&source, &result);
        assert_eq!(desc.media_type, OCI_LAYER_GZIP);
        assert_eq!((desc.digest, desc.size), (Digest::sha256(b"blob"), 4));
        assert_eq!(desc.annotation("org.example.keep"), Some("yes"));
        assert_eq!(
            desc.annotation(TOC_DIGEST_ANNOTATION),
            Some(Digest::sha256(b"toc").to_string().as_str())
        );
        assert_eq!(desc.annotation(UNCOMPRESSED_SIZE_ANNOTATION), Some("3"));
        assert_eq!(desc.annotation(ZSTD_MANIFEST_CHECKSUM_ANNOTATION), None);
        assert!(desc.urls.is_none() && !desc.extra.contains_key("data"));
    }
}
