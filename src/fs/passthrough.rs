//! FUSE passthrough bookkeeping: the kernel must be given the same backing id for every
//! open handle of an inode, and the id must stay registered until the last handle is
//! released. [`BackingFiles`] keeps one shared id per open file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use estargz::EntryId;
use fuser::BackingId;

/// Backing ids of files open with passthrough, with their open-handle counts.
#[derive(Default)]
pub(super) struct BackingFiles {
    open: Mutex<HashMap<EntryId, (Arc<BackingId>, usize)>>,
}

impl BackingFiles {
    /// The id already registered for `file`, counting one more open handle.
    pub(super) fn reuse(&self, file: EntryId) -> Option<Arc<BackingId>> {
        let mut open = self.lock();
        let (id, handles) = open.get_mut(&file)?;
        *handles += 1;
        Some(id.clone())
    }

    /// Registers `fresh` for `file` with one handle; when another open registered one
    /// meanwhile, that one is used and `fresh` is closed.
    pub(super) fn insert(&self, file: EntryId, fresh: BackingId) -> Arc<BackingId> {
        let mut open = self.lock();
        let (id, handles) = open.entry(file).or_insert_with(|| (Arc::new(fresh), 0));
        *handles += 1;
        id.clone()
    }

    /// One handle of `file` was released; the id is closed with the last one.
    pub(super) fn release(&self, file: EntryId) {
        let mut open = self.lock();
        if let Some((_, handles)) = open.get_mut(&file) {
            *handles = handles.saturating_sub(1);
            if *handles == 0 {
                open.remove(&file);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EntryId, (Arc<BackingId>, usize)>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
