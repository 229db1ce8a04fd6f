//! Lays entries out into compressed members (headers in the current member, each data
//! chunk starting a new one), builds the TOC, and writes the TOC and footer at the end.

use std::io::Write;

use crate::digest::{Digest, Hasher};
use crate::footer::{encode_estargz, encode_zstd, ZSTD_SKIPPABLE_MAGIC};
use crate::toc::{self, EntryType, Toc, TocEntry, LANDMARK_CONTENTS, TOC_TAR_NAME};

use super::pipeline::{compress, Pipeline};
use super::tarsplit::{padding, EntryMeta, TarError};
use super::{Compression, WriteError, WriteResult, WriterOptions, ZstdManifestInfo};

/// Tar end-of-archive: two zero blocks.
const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];

/// A TOC field that is only known once a member has been compressed and written.
enum Fixup {
    /// `offset` and `chunkDigest` of the entry from its data member.
    Chunk { toc_index: usize, seq: u64 },
    /// Whole-file `digest` of a one-chunk file: its chunk digest.
    FileDigest { toc_index: usize, seq: u64 },
}

/// Builds the blob entry by entry.
pub struct Emitter<W: Write> {
    pipeline: Pipeline<W>,
    compression: Compression,
    chunk_size: u64,
    current: Vec<u8>,
    /// How many leading bytes of `current` are a chunk to digest (0: none).
    current_digest_len: usize,
    entries: Vec<TocEntry>,
    fixups: Vec<Fixup>,
    diff: Hasher,
    uncompressed_size: u64,
}

impl<W: Write> Emitter<W> {
    pub fn new(out: W, opts: &WriterOptions) -> Self {
        Self {
            pipeline: Pipeline::new(out, opts.compression, opts.threads, opts.chunk_size),
            compression: opts.compression,
            chunk_size: opts.chunk_size,
            current: Vec::new(),
            current_digest_len: 0,
            entries: Vec::new(),
            fixups: Vec::new(),
            diff: Hasher::new(),
            uncompressed_size: 0,
        }
    }

    /// Adds one entry: `header` is its verbatim tar header bytes, `read_data` fills a
    /// buffer with the next content bytes.
    pub fn add_entry(
        &mut self,
        meta: &EntryMeta,
        header: &[u8],
        read_data: &mut dyn FnMut(&mut [u8]) -> Result<(), TarError>,
    ) -> Result<(), WriteError> {
        self.push_uncompressed(header);
        let mut entry = toc_entry(meta);
        if meta.kind != EntryType::Reg || meta.size == 0 {
            if meta.kind == EntryType::Reg {
                // Like the reference writer, empty files carry the digest of no bytes.
                entry.digest = Some(Digest::sha256(&[]));
            }
            self.entries.push(entry);
            return Ok(());
        }
        self.flush_member()?;
        self.add_chunks(entry, meta.size, read_data)?;
        self.push_uncompressed(&vec![0u8; padding(meta.size) as usize]);
        Ok(())
    }

    /// Adds a landmark file (`.prefetch.landmark` / `.no.prefetch.landmark`).
    pub fn add_landmark(&mut self, name: &str) -> Result<(), WriteError> {
        let meta = EntryMeta {
            raw_path: name.to_string(),
            path: name.to_string(),
            kind: EntryType::Reg,
            size: 1,
            link_name: String::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            user_name: String::new(),
            group_name: String::new(),
            mtime: 0,
            dev_major: 0,
            dev_minor: 0,
            xattrs: Default::default(),
        };
        let header = simple_file_header(name, 1);
        self.add_entry(&meta, &header, &mut |buf| {
            buf.fill(LANDMARK_CONTENTS);
            Ok(())
        })
    }

    fn add_chunks(
        &mut self,
        first: TocEntry,
        size: u64,
        read_data: &mut dyn FnMut(&mut [u8]) -> Result<(), TarError>,
    ) -> Result<(), WriteError> {
        let file_index = self.entries.len();
        let name = first.name.clone();
        let mut file_hasher = (size > self.chunk_size).then(Hasher::new);
        let mut record = first;
        let mut written = 0u64;
        let first_seq = self.pipeline.next_seq();
        loop {
            let len = (size - written).min(self.chunk_size);
            let len_usize =
                usize::try_from(len).map_err(|_| WriteError::Options("chunk too large"))?;
            let mut chunk = Vec::with_capacity(len_usize + 4096);
            chunk.resize(len_usize, 0);
            read_data(&mut chunk)?;
            self.diff.update(&chunk);
            self.uncompressed_size += len;
            if let Some(hasher) = file_hasher.as_mut() {
                hasher.update(&chunk);
            }
            record.chunk_offset = written;
            record.chunk_size = if len == self.chunk_size { len } else { 0 };
            let seq = self.pipeline.next_seq();
            self.fixups.push(Fixup::Chunk {
                toc_index: self.entries.len(),
                seq,
            });
            self.entries.push(record);
            written += len;
            if written == size {
                // Padding and following headers join the last chunk's member.
                self.current = chunk;
                self.current_digest_len = len_usize;
                break;
            }
            self.pipeline.submit(chunk, len_usize)?;
            record = TocEntry {
                name: name.clone(),
                entry_type: EntryType::Chunk,
                ..TocEntry::default()
            };
        }
        match file_hasher {
            Some(hasher) => self.entries[file_index].digest = Some(hasher.finish()),
            None => self.fixups.push(Fixup::FileDigest {
                toc_index: file_index,
                seq: first_seq,
            }),
        }
        Ok(())
    }

    fn push_uncompressed(&mut self, bytes: &[u8]) {
        self.current.extend_from_slice(bytes);
        self.diff.update(bytes);
        self.uncompressed_size += bytes.len() as u64;
    }

    fn flush_member(&mut self) -> Result<(), WriteError> {
        if self.current.is_empty() {
            return Ok(());
        }
        let member = std::mem::take(&mut self.current);
        self.pipeline.submit(member, self.current_digest_len)?;
        self.current_digest_len = 0;
        Ok(())
    }

    /// Writes the last member, the TOC and the footer.
    pub fn finish(mut self) -> Result<WriteResult, WriteError> {
        if let Compression::Zstd { .. } = self.compression {
            // zstd:chunked has no tar-wrapped TOC: end the tar in the last member.
            self.push_uncompressed(&END_OF_ARCHIVE);
        }
        self.flush_member()?;
        self.pipeline.drain()?;
        let toc = self.resolved_toc()?;
        let json = toc::encode(&toc);
        let toc_digest = Digest::sha256(&json);
        let (toc_offset, zstd_manifest) = match self.compression {
            Compression::Gzip { .. } => (self.write_gzip_toc(&json)?, None),
            Compression::Zstd { .. } => {
                let info = self.write_zstd_toc(&json)?;
                (info.offset, Some(info))
            }
        };
        let written = self.pipeline.finish()?;
        Ok(WriteResult {
            toc_digest,
            diff_id: self.diff.finish(),
            blob_digest: written.blob_digest,
            compressed_size: written.size,
            uncompressed_size: self.uncompressed_size,
            toc_offset,
            zstd_manifest,
        })
    }

    /// The TOC with member offsets and digests filled in (all members written).
    fn resolved_toc(&mut self) -> Result<Toc, WriteError> {
        let missing = || WriteError::Compress(std::io::Error::other("member result missing"));
        for fixup in &self.fixups {
            match *fixup {
                Fixup::Chunk { toc_index, seq } => {
                    let entry = &mut self.entries[toc_index];
                    entry.offset = self.pipeline.offset(seq).ok_or_else(missing)?;
                    entry.chunk_digest = Some(self.pipeline.chunk_digest(seq).ok_or_else(missing)?);
                }
                Fixup::FileDigest { toc_index, seq } => {
                    self.entries[toc_index].digest =
                        Some(self.pipeline.chunk_digest(seq).ok_or_else(missing)?);
                }
            }
        }
        Ok(Toc {
            version: 1,
            entries: std::mem::take(&mut self.entries),
        })
    }

    fn write_gzip_toc(&mut self, json: &[u8]) -> Result<u64, WriteError> {
        let json_len = json.len() as u64;
        let mut member = Vec::with_capacity(json.len() + 2048);
        member.extend_from_slice(&simple_file_header(TOC_TAR_NAME, json_len));
        member.extend_from_slice(json);
        member.resize(member.len() + padding(json_len) as usize, 0);
        member.extend_from_slice(&END_OF_ARCHIVE);
        self.diff.update(&member);
        self.uncompressed_size += member.len() as u64;
        let compressed = compress(self.compression, &member).map_err(WriteError::Compress)?;
        let toc_offset = self.pipeline.write_raw(&compressed)?;
        self.pipeline.write_raw(&encode_estargz(toc_offset))?;
        Ok(toc_offset)
    }

    fn write_zstd_toc(&mut self, json: &[u8]) -> Result<ZstdManifestInfo, WriteError> {
        let compressed = compress(self.compression, json).map_err(WriteError::Compress)?;
        let frame_len = u32::try_from(compressed.len())
            .map_err(|_| WriteError::Options("compressed toc exceeds 4 GiB"))?;
        let mut frame = Vec::with_capacity(compressed.len() + 8);
        frame.extend_from_slice(&ZSTD_SKIPPABLE_MAGIC);
        frame.extend_from_slice(&frame_len.to_le_bytes());
        frame.extend_from_slice(&compressed);
        let frame_offset = self.pipeline.write_raw(&frame)?;
        let info = ZstdManifestInfo {
            checksum: Digest::sha256(&compressed),
            offset: frame_offset + 8,
            compressed_len: compressed.len() as u64,
            uncompressed_len: json.len() as u64,
        };
        let footer = encode_zstd(info.offset, info.compressed_len, info.uncompressed_len);
        self.pipeline.write_raw(&footer)?;
        Ok(info)
    }
}

/// The TOC record of an entry (offsets and digests are filled in later).
fn toc_entry(meta: &EntryMeta) -> TocEntry {
    let has_link = matches!(meta.kind, EntryType::Symlink | EntryType::Hardlink);
    let is_device = matches!(meta.kind, EntryType::Char | EntryType::Block);
    let mut entry = TocEntry {
        name: meta.path.clone(),
        entry_type: meta.kind,
        size: if meta.kind == EntryType::Reg {
            meta.size
        } else {
            0
        },
        link_name: if has_link {
            meta.link_name.clone()
        } else {
            String::new()
        },
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        user_name: meta.user_name.clone(),
        group_name: meta.group_name.clone(),
        dev_major: if is_device { meta.dev_major } else { 0 },
        dev_minor: if is_device { meta.dev_minor } else { 0 },
        xattrs: meta.xattrs.clone(),
        ..TocEntry::default()
    };
    entry.set_mtime_unix(meta.mtime);
    entry
}

/// A ustar header for a regular file owned by root, mode 0644, mtime 0.
fn simple_file_header(name: &str, size: u64) -> [u8; 512] {
    let mut header = tar::Header::new_ustar();
    let name_field = &mut header.as_old_mut().name;
    let len = name.len().min(name_field.len());
    name_field[..len].copy_from_slice(&name.as_bytes()[..len]);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    *header.as_bytes()
}
