//! FUSE passthrough bookkeeping. The kernel puts an inode in one I/O mode at a time: while
//! any handle of it is open normally (page cache filled by our reads, possibly mapped by
//! a running program), a passthrough open of it fails, and while it has a backing file,
//! a normal open fails. It must also be given the same backing id for every handle, and
//! the id must stay registered until the last handle is released. [`OpenFiles`] keeps,
//! per file, either its shared backing id or its count of normal handles, and decides
//! every open under one lock so the two never mix. It records each backing id in the
//! mount's [`Ledger`] while the kernel may hold it, for a process that takes the
//! connection over; on such an adopted connection, it hands out the ids recorded there.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use estargz::EntryId;
use fuser::{BackingId, FileHandle, FopenFlags, ReplyOpen};

use super::ledger::Ledger;

/// File handle of files opened with passthrough (reads go to the backing file).
pub(super) const FH_PASSTHROUGH: FileHandle = FileHandle(1);
/// Open flags of passthrough opens (the backing file's page cache serves them).
pub(super) const PASSTHROUGH_FLAGS: FopenFlags = FopenFlags::empty();

/// How a file is open right now.
enum Mode {
    /// Through its backing file, with this many handles.
    Passthrough(Arc<BackingId>, usize),
    /// Normally (reads come to the daemon), with this many handles.
    Normal(usize),
}

/// What an open of a file should do.
pub(super) enum Decision {
    /// Reply with this backing id (one more handle counted).
    Passthrough(Arc<BackingId>),
    /// Reply with a normal open (one more handle counted).
    Normal,
    /// Nothing is open: look for a backing file, then call [`OpenFiles::settle`].
    Probe,
}

/// Files open on one mount, by mode.
#[derive(Default)]
pub(super) struct OpenFiles {
    open: Mutex<HashMap<EntryId, Mode>>,
    /// Where the backing ids registered here are recorded (fresh mounts).
    ledger: Option<Ledger>,
    /// Backing ids a dead process registered on this connection (adopted mounts).
    inherited: BTreeMap<EntryId, u32>,
}

impl OpenFiles {
    /// Files of a fresh mount, whose backing ids go to `ledger`.
    pub(super) fn recorded(ledger: Ledger) -> Self {
        Self {
            ledger: Some(ledger),
            ..Self::default()
        }
    }

    /// Files of an adopted connection, on which a dead process left backing ids.
    pub(super) fn inheriting(ids: BTreeMap<EntryId, u32>) -> Self {
        Self {
            inherited: ids,
            ..Self::default()
        }
    }

    /// The backing id a dead process left for `file`, which every open of it must use:
    /// the kernel may still hold it for the inode. Never closed here (a handle the dead
    /// process opened may still use it); it goes with the connection.
    pub(super) fn inherited(&self, file: EntryId) -> Option<u32> {
        self.inherited.get(&file).copied()
    }

    /// Decides an open of `file` from the handles already open.
    pub(super) fn begin(&self, file: EntryId) -> Decision {
        join(self.lock().get_mut(&file)).unwrap_or(Decision::Probe)
    }

    /// Finishes a [`Decision::Probe`]: with a `fresh` backing id (and its number) the
    /// file opens with passthrough, unless another open meanwhile settled it differently,
    /// whose mode wins, or the id cannot be recorded in the ledger.
    pub(super) fn settle(&self, file: EntryId, fresh: Option<(BackingId, u32)>) -> Decision {
        let mut open = self.lock();
        if let Some(decision) = join(open.get_mut(&file)) {
            return decision;
        }
        // Recorded before the reply gives the id to the kernel (see the ledger's doc).
        let fresh = fresh.filter(|(_, raw)| match &self.ledger {
            Some(ledger) => ledger
                .record(file, *raw)
                .inspect_err(|error| tracing::warn!(file, %error, "opening without passthrough"))
                .is_ok(),
            None => true,
        });
        match fresh {
            Some((fresh, _)) => {
                let id = Arc::new(fresh);
                open.insert(file, Mode::Passthrough(id.clone(), 1));
                Decision::Passthrough(id)
            }
            None => {
                open.insert(file, Mode::Normal(1));
                Decision::Normal
            }
        }
    }

    /// One handle of `file` was released; its mode ends with the last one (closing the
    /// backing id, once struck out of the ledger).
    pub(super) fn release(&self, file: EntryId) {
        let mut open = self.lock();
        let last = match open.get_mut(&file) {
            Some(Mode::Passthrough(_, handles) | Mode::Normal(handles)) => {
                *handles = handles.saturating_sub(1);
                *handles == 0
            }
            None => false,
        };
        if !last {
            return;
        }
        if let (Some(Mode::Passthrough(id, _)), Some(ledger)) = (open.remove(&file), &self.ledger) {
            if let Err(error) = ledger.strike(file) {
                // Still recorded: closing it could leave the next process an id the
                // kernel no longer knows. Left open until the connection ends.
                tracing::warn!(file, %error, "backing id kept open");
                std::mem::forget(id);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EntryId, Mode>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One more handle in the file's current mode, if it is open.
fn join(mode: Option<&mut Mode>) -> Option<Decision> {
    match mode? {
        Mode::Passthrough(id, handles) => {
            *handles += 1;
            Some(Decision::Passthrough(id.clone()))
        }
        Mode::Normal(handles) => {
            *handles += 1;
            Some(Decision::Normal)
        }
    }
}

/// Registers `file` as a backing file: its id, and the id's number for the ledger.
#[allow(unsafe_code)] // fuser's only way to learn a fresh id's number and keep it owned
pub(super) fn register(
    reply: &ReplyOpen,
    file: &std::fs::File,
) -> std::io::Result<(BackingId, u32)> {
    let raw = reply.open_backing(file)?.into_raw();
    // SAFETY: `raw` was registered on this session's connection just above and nothing
    // has closed it; the wrapper returned owns it again (it closes it when dropped).
    let backing = unsafe { reply.wrap_backing(raw) };
    Ok((backing, raw))
}

/// Opens with `raw`, a backing id a dead process registered for this inode and the
/// ledger recorded: while the inode is held in passthrough mode, no other id works.
#[allow(unsafe_code)] // fuser's only way to reply with an id it did not register
pub(super) fn open_inherited(reply: ReplyOpen, raw: u32) {
    // SAFETY: `raw` is open on this connection (the ledger strikes an id out before
    // closing it, and inherited ids are never closed by this process), and ownership is
    // given back with `into_raw` right after the reply, so it is not closed through
    // fuser (whose channel here is the relay's socket, not the device).
    let backing = unsafe { reply.wrap_backing(raw) };
    reply.opened_passthrough(FH_PASSTHROUGH, PASSTHROUGH_FLAGS, &backing);
    backing.into_raw();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_handles_keep_passthrough_away_until_released() {
        let files = OpenFiles::default();
        assert!(matches!(files.begin(7), Decision::Probe));
        assert!(matches!(files.settle(7, None), Decision::Normal));
        assert!(matches!(files.begin(7), Decision::Normal), "second handle");
        files.release(7);
        assert!(matches!(files.begin(7), Decision::Normal), "one still open");
        files.release(7);
        files.release(7);
        assert!(matches!(files.begin(7), Decision::Probe), "all released");
        assert!(
            matches!(files.begin(8), Decision::Probe),
            "other files apart"
        );
    }
}
