//! FUSE passthrough bookkeeping. The kernel puts an inode in one I/O mode at a time: while
//! any handle of it is open normally (page cache filled by our reads, possibly mapped by
//! a running program), a passthrough open of it fails, and while it has a backing file,
//! a normal open fails. It must also be given the same backing id for every handle, and
//! the id must stay registered until the last handle is released. [`OpenFiles`] keeps,
//! per file, either its shared backing id or its count of normal handles, and decides
//! every open under one lock so the two never mix.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use estargz::EntryId;
use fuser::BackingId;

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
}

impl OpenFiles {
    /// Decides an open of `file` from the handles already open.
    pub(super) fn begin(&self, file: EntryId) -> Decision {
        join(self.lock().get_mut(&file)).unwrap_or(Decision::Probe)
    }

    /// Finishes a [`Decision::Probe`]: with a `fresh` backing id the file opens with
    /// passthrough, unless another open meanwhile settled it differently, whose mode wins.
    pub(super) fn settle(&self, file: EntryId, fresh: Option<BackingId>) -> Decision {
        let mut open = self.lock();
        if let Some(decision) = join(open.get_mut(&file)) {
            return decision;
        }
        match fresh {
            Some(fresh) => {
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
    /// backing id).
    pub(super) fn release(&self, file: EntryId) {
        let mut open = self.lock();
        let last = match open.get_mut(&file) {
            Some(Mode::Passthrough(_, handles) | Mode::Normal(handles)) => {
                *handles = handles.saturating_sub(1);
                *handles == 0
            }
            None => false,
        };
        if last {
            open.remove(&file);
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
