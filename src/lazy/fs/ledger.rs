//! The backing-id ledger of one mount: which FUSE passthrough backing ids its connection
//! holds, per file, kept in a root-only file beside the mountpoint so that a process
//! taking the connection over after a crash can answer opens of those files.
//!
//! The kernel keeps backing ids in the connection, not in the process that registered
//! them: they stay valid after that process dies, until closed or until the connection
//! ends. While any handle of an inode is open with passthrough, the kernel accepts only
//! that inode's own backing id for a new open (anything else fails the open with EIO), so
//! the new process must reply with the dead one's id.
//!
//! Order, and what a crash between two steps leaves:
//! - an id is recorded after it is registered and before the open reply hands it to the
//!   kernel. Killed before recording: the kernel holds an id no inode uses (it leaks
//!   until unmount); killed after: the id is recorded and the next process reuses it,
//!   whether or not the reply went out.
//! - an id is struck out before it is closed. Killed in between: the kernel holds an id
//!   nobody records and no inode uses (its last handle was released first), a leak. The
//!   other order could leave a recorded id the kernel no longer knows.
//! - a record that cannot be written: the open goes without passthrough; a strike-out
//!   that cannot be written: the id is never closed.
//!
//! A killed process loses no write it completed (only a machine crash does, and that
//! ends every connection too), so lines are appended with one `write` each and no fsync.
//! Format: `+<file> <id>` and `-<file>` lines; rewritten (new file, rename) when
//! struck-out lines dominate.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use estargz::EntryId;

/// Suffix of the ledger's name (beside the mountpoint: `<mountpoint>.backing-ids`).
const SUFFIX: &str = "backing-ids";
/// Lines beyond twice the live entries (plus this) make the file be rewritten.
const SLACK: usize = 256;

/// Errors writing the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("write the backing-id ledger {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The ledger of a mount this process made (and registers backing ids on).
pub(super) struct Ledger {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    ids: BTreeMap<EntryId, u32>,
    /// Written at its end; `None` when it could not be created (nothing is recorded,
    /// so no open gets passthrough).
    file: Option<File>,
    lines: usize,
}

/// Where the ledger of `mountpoint` lives.
pub(super) fn path_for(mountpoint: &Path) -> PathBuf {
    let mut name = mountpoint
        .file_name()
        .map(|name| name.to_os_string())
        .unwrap_or_else(|| "mount".into());
    name.push(".");
    name.push(SUFFIX);
    mountpoint.with_file_name(name)
}

/// The backing ids recorded for the connection of `mountpoint` (empty when there is no
/// ledger). Malformed lines (a torn last write) are skipped.
pub(super) fn load(mountpoint: &Path) -> BTreeMap<EntryId, u32> {
    let text = std::fs::read_to_string(path_for(mountpoint)).unwrap_or_default();
    replay(&text)
}

/// Removes the ledger of `mountpoint` (its connection has ended).
pub(super) fn remove(mountpoint: &Path) {
    let path = path_for(mountpoint);
    if let Err(error) = std::fs::remove_file(&path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::debug!(path = %path.display(), %error, "remove the backing-id ledger");
        }
    }
}

fn replay(text: &str) -> BTreeMap<EntryId, u32> {
    let mut ids = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('+') {
            let mut words = rest.split(' ');
            let file = words.next().and_then(|w| w.parse::<EntryId>().ok());
            let id = words.next().and_then(|w| w.parse::<u32>().ok());
            // The kernel's ids start at 1.
            if let (Some(file), Some(id @ 1..)) = (file, id) {
                ids.insert(file, id);
            }
        } else if let Some(file) = line.strip_prefix('-').and_then(|w| w.parse().ok()) {
            ids.remove(&file);
        }
    }
    ids
}

impl Ledger {
    /// An empty ledger for a fresh mount on `mountpoint` (a new connection: whatever an
    /// earlier one left there is void).
    pub(super) fn create(mountpoint: &Path) -> Self {
        let path = path_for(mountpoint);
        let file = open(&path);
        if let Err(error) = &file {
            tracing::warn!(path = %path.display(), %error, "no backing-id ledger: files open without passthrough");
        }
        Self {
            path,
            state: Mutex::new(State {
                ids: BTreeMap::new(),
                file: file.ok(),
                lines: 0,
            }),
        }
    }

    /// Records that `file`'s inode is being given backing id `id`.
    pub(super) fn record(&self, file: EntryId, id: u32) -> Result<(), LedgerError> {
        let mut state = self.lock();
        self.append(&mut state, &format!("+{file} {id}\n"))?;
        state.ids.insert(file, id);
        Ok(())
    }

    /// Strikes out `file`'s backing id, about to be closed.
    pub(super) fn strike(&self, file: EntryId) -> Result<(), LedgerError> {
        let mut state = self.lock();
        self.append(&mut state, &format!("-{file}\n"))?;
        state.ids.remove(&file);
        if state.lines > state.ids.len().saturating_mul(2).saturating_add(SLACK) {
            if let Err(error) = self.rewrite(&mut state) {
                tracing::debug!(%error, "compact the backing-id ledger");
            }
        }
        Ok(())
    }

    fn append(&self, state: &mut State, line: &str) -> Result<(), LedgerError> {
        let written = match &mut state.file {
            Some(file) => file.write_all(line.as_bytes()),
            None => Err(std::io::ErrorKind::NotFound.into()),
        };
        written.map_err(|source| self.failed(source))?;
        state.lines = state.lines.saturating_add(1);
        Ok(())
    }

    /// Writes the live entries to a new file and renames it over the ledger (a crash
    /// leaves the old file or the new one, both right).
    fn rewrite(&self, state: &mut State) -> Result<(), LedgerError> {
        let temp = self.path.with_extension(format!("{SUFFIX}.tmp"));
        let mut text = String::new();
        for (file, id) in &state.ids {
            text.push_str(&format!("+{file} {id}\n"));
        }
        let mut file = open(&temp).map_err(|source| self.failed(source))?;
        file.write_all(text.as_bytes())
            .and_then(|()| std::fs::rename(&temp, &self.path))
            .map_err(|source| self.failed(source))?;
        state.file = Some(file);
        state.lines = state.ids.len();
        Ok(())
    }

    fn failed(&self, source: std::io::Error) -> LedgerError {
        LedgerError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Creates `path` empty and root-only; this process is its only writer, so its writes
/// land at the end.
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_strikes_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("fs");
        assert_eq!(path_for(&mnt), dir.path().join("fs.backing-ids"));
        let ledger = Ledger::create(&mnt);
        ledger.record(7, 1).expect("record");
        ledger.record(9, 2).expect("record");
        ledger.strike(7).expect("strike");
        assert_eq!(load(&mnt), BTreeMap::from([(9, 2)]));
        // A new mount on the same path starts empty.
        drop(Ledger::create(&mnt));
        assert!(load(&mnt).is_empty());
        remove(&mnt);
        assert!(!path_for(&mnt).exists());
        assert!(load(&mnt).is_empty(), "no ledger, no ids");
    }

    #[test]
    fn compaction_keeps_the_live_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mnt = dir.path().join("fs");
        let ledger = Ledger::create(&mnt);
        ledger.record(1, 10).expect("record");
        for round in 0..SLACK as u32 {
            ledger.record(2, round + 20).expect("record");
            ledger.strike(2).expect("strike");
        }
        ledger.record(3, 30).expect("record after compaction");
        let text = std::fs::read_to_string(path_for(&mnt)).expect("read");
        let lines = text.lines().count();
        assert!(
            lines <= SLACK + 2,
            "rewritten, not 2 * {SLACK} + 2 lines: {lines}"
        );
        assert_eq!(load(&mnt), BTreeMap::from([(1, 10), (3, 30)]));
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped() {
        let ids = replay("+1 5\n+2 0\nnonsense\n+3\n-9\n+4 7\n-4\n+5 1");
        assert_eq!(ids, BTreeMap::from([(1, 5), (5, 1)]));
    }
}
