//! Saved TOCs: the end of each lazily opened blob (TOC region and footer) with the blob's
//! size, under `<cache>/tocs/`, so that a layer can be opened again without the registry
//! (a restart with the registry unreachable: metadata is served and reads wait for it).
//! The bytes are untrusted on the way back: the layer checks the TOC digest label again.

use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use estargz::Digest;

use super::TOCS_DIR;

/// Largest saved TOC read back (the layer's `max_toc_bytes` bounds what is saved).
const MAX_SAVED: u64 = 512 << 20;

/// Writes `size` and the blob's last bytes `tail` for `blob` (temp file, then rename).
pub(super) fn save(dir: &Path, blob: &Digest, size: u64, tail: &[u8]) -> std::io::Result<()> {
    let dir = dir.join(TOCS_DIR);
    crate::private_fs::create_dir_all(&dir)?;
    let path = dir.join(blob.hex());
    // Named like the cache's other temps, so the startup scan deletes a killed run's.
    let temp = dir.join(format!("{}.tmp-{}-0", blob.hex(), std::process::id()));
    let written = (|| {
        let mut file = crate::private_fs::create_file(&temp)?;
        file.write_all(&size.to_le_bytes())?;
        file.write_all(tail)?;
        file.sync_data()?;
        std::fs::rename(&temp, &path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// The saved size and tail of `blob`, when there is a well-formed one.
pub(super) fn load(dir: &Path, blob: &Digest) -> Option<(u64, Bytes)> {
    let path = dir.join(TOCS_DIR).join(blob.hex());
    if std::fs::metadata(&path).ok()?.len() > MAX_SAVED {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let (size, tail) = bytes.split_at_checked(8)?;
    let size = u64::from_le_bytes(size.try_into().ok()?);
    (tail.len() as u64 <= size).then(|| (size, Bytes::copy_from_slice(tail)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_tails_come_back_and_garbage_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blob = Digest::sha256(b"blob");
        assert_eq!(load(dir.path(), &blob), None, "nothing saved");
        save(dir.path(), &blob, 1000, b"toc and footer").expect("save");
        let (size, tail) = load(dir.path(), &blob).expect("load");
        assert_eq!((size, &tail[..]), (1000, &b"toc and footer"[..]));
        std::fs::write(dir.path().join(TOCS_DIR).join(blob.hex()), b"short").unwrap();
        assert_eq!(load(dir.path(), &blob), None, "truncated file");
        save(dir.path(), &blob, 3, b"longer than the blob").expect("save");
        assert_eq!(load(dir.path(), &blob), None, "tail longer than the blob");
    }
}
