//! Layer tarballs built in code: directories, files, links, and data-file layers.

use std::path::Path;

use tar::{EntryType, Header};

use super::content;

/// The modification time of every entry (2023-11-14), so builds are reproducible.
pub const FIXED_MTIME: u64 = 1_700_000_000;

/// Errors from building a layer tar.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("append tar entry {path}: {source}")]
    Append {
        path: String,
        source: std::io::Error,
    },
    #[error("finish layer tar: {0}")]
    Finish(std::io::Error),
}

/// Builds one uncompressed layer tar, entry by entry (root-owned, fixed mtime).
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Complete);
        Self { tar }
    }

    /// A directory; `path` without a trailing slash.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, LayerError> {
        let mut header = header(EntryType::Directory, mode, 0);
        self.append(
            &mut header,
            &format!("{}/", path.trim_end_matches('/')),
            &[][..],
        )
    }

    /// A regular file with `bytes` as content.
    pub fn file(&mut self, path: &str, bytes: &[u8], mode: u32) -> Result<&mut Self, LayerError> {
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let mut header = header(EntryType::Regular, mode, size);
        self.append(&mut header, path, bytes)
    }

    /// A regular file owned by the numeric `uid` and `gid` (no user or group names).
    pub fn file_owned(
        &mut self,
        path: &str,
        bytes: &[u8],
        mode: u32,
        (uid, gid): (u32, u32),
    ) -> Result<&mut Self, LayerError> {
        let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let mut header = header(EntryType::Regular, mode, size);
        header.set_uid(uid.into());
        header.set_gid(gid.into());
        let _ = header.set_username("");
        let _ = header.set_groupname("");
        self.append(&mut header, path, bytes)
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, LayerError> {
        self.link(EntryType::Symlink, path, target, 0o777)
    }

    /// A hard link at `path` to the earlier entry `target`.
    pub fn hardlink(&mut self, path: &str, target: &str) -> Result<&mut Self, LayerError> {
        self.link(EntryType::Link, path, target, 0o644)
    }

    /// An overlay whiteout hiding `dir/name` of lower layers.
    pub fn whiteout(&mut self, dir: &str, name: &str) -> Result<&mut Self, LayerError> {
        let path = Path::new(dir).join(format!(".wh.{name}"));
        self.file(&path.to_string_lossy(), &[], 0o644)
    }

    /// The finished tar bytes (with the end-of-archive blocks).
    pub fn finish(self) -> Result<Vec<u8>, LayerError> {
        self.tar.into_inner().map_err(LayerError::Finish)
    }

    fn link(
        &mut self,
        kind: EntryType,
        path: &str,
        target: &str,
        mode: u32,
    ) -> Result<&mut Self, LayerError> {
        let mut header = header(kind, mode, 0);
        self.tar
            .append_link(&mut header, path, target)
            .map_err(|source| LayerError::Append {
                path: path.to_owned(),
                source,
            })?;
        Ok(self)
    }

    fn append(
        &mut self,
        header: &mut Header,
        path: &str,
        data: &[u8],
    ) -> Result<&mut Self, LayerError> {
        self.tar
            .append_data(header, path, data)
            .map_err(|source| LayerError::Append {
                path: path.to_owned(),
                source,
            })?;
        Ok(self)
    }
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(FIXED_MTIME);
    // Names are optional; ignoring the error keeps numeric ids only.
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header
}

/// One data file of a data layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub path: String,
    pub size: usize,
    /// Share of 4 KiB blocks that are compressible text, 0..=100.
    pub text_percent: u8,
}

impl DataFile {
    pub fn new(path: &str, size: usize, text_percent: u8) -> Self {
        Self {
            path: path.to_owned(),
            size,
            text_percent,
        }
    }
}

/// A layer holding `files` (parent directories created as needed), contents from `seed`.
pub fn data_layer(files: &[DataFile], seed: u64) -> Result<Vec<u8>, LayerError> {
    let mut builder = LayerBuilder::new();
    let mut made_dirs = std::collections::BTreeSet::new();
    for (index, file) in files.iter().enumerate() {
        for dir in parent_dirs(&file.path) {
            if made_dirs.insert(dir.clone()) {
                builder.dir(&dir, 0o755)?;
            }
        }
        let index = u64::try_from(index).unwrap_or(u64::MAX);
        let file_seed = seed.wrapping_mul(1_000_003).wrapping_add(index);
        let bytes = content::mixed(file_seed, file.size, file.text_percent);
        builder.file(&file.path, &bytes, 0o644)?;
    }
    builder.finish()
}

/// `a`, `a/b` for `a/b/c`.
fn parent_dirs(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    (1..parts.len()).map(|n| parts[..n].join("/")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(tar_bytes: &[u8]) -> Vec<(String, EntryType, u64)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.size().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn builder_writes_each_kind() {
        let mut b = LayerBuilder::new();
        b.dir("etc", 0o755).unwrap();
        b.file("etc/hosts", b"127.0.0.1 localhost\n", 0o644)
            .unwrap();
        b.symlink("etc/alias", "hosts").unwrap();
        b.hardlink("etc/hard", "etc/hosts").unwrap();
        b.whiteout("etc", "gone").unwrap();
        let got = listing(&b.finish().unwrap());
        let kinds: Vec<_> = got.iter().map(|(p, k, _)| (p.as_str(), *k)).collect();
        assert_eq!(
            kinds,
            [
                ("etc/", EntryType::Directory),
                ("etc/hosts", EntryType::Regular),
                ("etc/alias", EntryType::Symlink),
                ("etc/hard", EntryType::Link),
                ("etc/.wh.gone", EntryType::Regular),
            ]
        );
        assert_eq!(got[1].2, 20);
    }

    #[test]
    fn long_names_survive() {
        let long = format!("d/{}", "x".repeat(150));
        let mut b = LayerBuilder::new();
        b.file(&long, b"1", 0o644).unwrap();
        let got = listing(&b.finish().unwrap());
        assert_eq!(got[0].0, long);
    }

    #[test]
    fn data_layer_creates_parents_once() {
        let files = [
            DataFile::new("data/a/one", 10, 0),
            DataFile::new("data/a/two", 5000, 50),
        ];
        let got = listing(&data_layer(&files, 1).unwrap());
        let paths: Vec<_> = got.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(paths, ["data/", "data/a/", "data/a/one", "data/a/two"]);
        assert_eq!(got[3].2, 5000);
    }
}
