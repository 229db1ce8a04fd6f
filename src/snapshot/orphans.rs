//! What crashes leave under `snapshots/`, and the mark that makes it recognisable.
//!
//! A lazy Prepare writes its state in this order: the active record (with its id and
//! directory), then the [`Backing::Mounting`] mark, then the mount, then the commit that
//! turns the record into a remote snapshot. Whatever step a crash interrupts, a restart
//! sees a mount on a directory whose record is not a remote snapshot, or a directory with
//! no record: neither is owned.
//!
//! Ownership: a mount on `snapshots/<id>/..` is owned when the record with that id is a
//! remote snapshot, or when a lazy mount of this process is in flight for it; a directory
//! is owned when a record has its id. At startup and at each Cleanup the rest is
//! unmounted (the mounter is asked to drop it, so its server stops serving and fetching
//! it; then whatever is still mounted is detached) and removed. One failure does not stop
//! the rest: it is reported, and the next Cleanup tries again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::db::{self, Backing, SNAPSHOTS};
use super::stale;
use super::{Error, Store};

/// Keeps a snapshot's lazy mount owned until dropped (after its commit or fallback).
pub(super) struct MountIntent<'a> {
    store: &'a Store,
    id: u64,
}

impl Drop for MountIntent<'_> {
    fn drop(&mut self) {
        self.store.in_flight.lock().remove(&self.id);
    }
}

/// What one Cleanup did.
#[derive(Debug, Default)]
pub struct CleanupReport {
    /// Mount points unmounted because no snapshot owned them.
    pub mounts: Vec<PathBuf>,
    /// Snapshot directories removed because no snapshot owned them.
    pub directories: Vec<PathBuf>,
    /// What could not be unmounted or removed; the next Cleanup tries again.
    pub failures: Vec<Error>,
}

impl Store {
    /// Records that active snapshot `key` (id `id`) is about to be mounted lazily: the
    /// mount stays owned while the returned intent lives, and a crash before its commit
    /// leaves the [`Backing::Mounting`] mark.
    pub(super) fn intend_lazy_mount(
        &self,
        ns: &str,
        key: &str,
        id: u64,
    ) -> Result<MountIntent<'_>, Error> {
        self.in_flight.lock().insert(id);
        let intent = MountIntent { store: self, id };
        self.set_backing(ns, key, Backing::Mounting)?;
        Ok(intent)
    }

    /// The lazy mount of `key` failed: it is an ordinary active snapshot again.
    pub(super) fn lazy_mount_failed(&self, ns: &str, key: &str) {
        if let Err(error) = self.set_backing(ns, key, Backing::Local) {
            // The mark only makes Remove and Cleanup look for a mount; harmless if kept.
            tracing::warn!(key, %error, "clear the lazy mount mark");
        }
    }

    fn set_backing(&self, ns: &str, key: &str, backing: Backing) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SNAPSHOTS)?;
            let mut record = db::get_existing(&table, ns, key)?;
            record.backing = backing;
            db::put(&mut table, ns, key, &record)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Unmounts every mount and removes every directory under `snapshots/` that no
    /// snapshot owns (see the module doc), going on past failures.
    pub fn cleanup(&self) -> Result<CleanupReport, Error> {
        // Holding the write transaction keeps creations and commits out meanwhile.
        let txn = self.db.begin_write()?;
        let owners: HashMap<u64, Backing> = {
            let table = txn.open_table(SNAPSHOTS)?;
            db::all_records(&table)?
                .into_iter()
                .map(|record| (record.id, record.backing))
                .collect()
        };
        let in_flight = self.in_flight.lock().clone();
        let dir = self.root.join("snapshots");
        let mut report = CleanupReport::default();
        // Mounts first: a mounted directory cannot be removed.
        for point in self.lazy_mountpoints(&dir) {
            let id = snapshot_id(&dir, &point);
            let record = id.and_then(|id| owners.get(&id));
            if id.is_some_and(|id| in_flight.contains(&id)) || record == Some(&Backing::Remote) {
                continue;
            }
            // What it was: Mounting is a Prepare killed mid-mount; Local, a mount that
            // finished after its Prepare gave up; none, a snapshot already removed.
            let was = record.map_or("no snapshot", |backing| match backing {
                Backing::Mounting => "a lazy Prepare interrupted before its commit",
                _ => "an ordinary active snapshot",
            });
            match self.release(&point, true) {
                Ok(()) => {
                    tracing::info!(mountpoint = %point.display(), on = was, "unmounted a lazy layer mount no snapshot owns");
                    report.mounts.push(point);
                }
                Err(error) => report.failures.push(error),
            }
        }
        for entry in std::fs::read_dir(&dir).map_err(Error::io("read dir", &dir))? {
            let entry = entry.map_err(Error::io("read dir", &dir))?;
            let name = entry.file_name();
            let id = name.to_str().and_then(|name| name.parse::<u64>().ok());
            if id.is_some_and(|id| owners.contains_key(&id)) {
                continue;
            }
            let path = entry.path();
            match self.remove_orphan_dir(&path) {
                Ok(()) => {
                    tracing::info!(dir = %path.display(), "removed a snapshot directory no snapshot owns");
                    report.directories.push(path);
                }
                Err(error) => report.failures.push(error),
            }
        }
        txn.abort()?;
        for error in &report.failures {
            tracing::warn!(%error, "cleanup left an orphan; the next cleanup tries again");
        }
        Ok(report)
    }

    /// Unmounts whatever is mounted under the directory of a snapshot being removed (its
    /// own lazy mount, or one a crash left on an active snapshot), so that the directory
    /// can go; failures are logged, Cleanup retries.
    pub(super) fn release_for_remove(&self, id: u64, backing: Backing) {
        let dir = self.snapshot_dir(id);
        let mounted = !stale::mounts_under(&dir, false).is_empty();
        if backing == Backing::Local && !mounted {
            return;
        }
        if backing != Backing::Remote && mounted {
            tracing::info!(dir = %dir.display(), ?backing, "unmounting a lazy mount no commit owned");
        }
        if let Err(error) = self.release(&self.fs_dir(id), backing != Backing::Remote) {
            tracing::warn!(%error, "unmount removed snapshot");
        }
    }

    /// Detaches the lazy mounts whose server is gone (a killed FUSE manager), so that
    /// they can be mounted again; returns how many.
    pub fn detach_dead_mounts(&self) -> usize {
        stale::detach_dead_mounts(&self.root.join("snapshots")).len()
    }

    /// Every lazy mountpoint under `dir`: in the mount table, or served by the mounter
    /// (when it cannot say, the mount table alone: those are real mounts either way).
    fn lazy_mountpoints(&self, dir: &Path) -> Vec<PathBuf> {
        let mut points = stale::mounts_under(dir, true);
        if let Some(mounter) = &self.mounter {
            match mounter.mounted() {
                Ok(served) => points.extend(served.into_iter().filter(|p| p.starts_with(dir))),
                Err(error) => tracing::warn!(%error, "orphans: only the mount table is searched"),
            }
        }
        points.sort();
        points.dedup();
        points
    }

    /// Asks the mounter to drop `point` (its server stops serving it), then detaches
    /// whatever is still mounted there (a dead mount, or one the mounter never knew).
    fn release(&self, point: &Path, orphan: bool) -> Result<(), Error> {
        if let Some(mounter) = &self.mounter {
            let dropped = match orphan {
                true => mounter.drop_orphan(point),
                false => mounter.unmount(point),
            };
            if let Err(error) = dropped {
                tracing::debug!(mountpoint = %point.display(), %error, "mounter did not unmount");
            }
        }
        stale::detach_all_under(point).map_err(detach_error)
    }

    /// Removes a directory no record owns; its lazy mount, if any, went in the first pass.
    fn remove_orphan_dir(&self, path: &Path) -> Result<(), Error> {
        stale::detach_all_under(path).map_err(detach_error)?;
        std::fs::remove_dir_all(path).map_err(Error::io("remove", path))
    }
}

fn detach_error((point, errno): (PathBuf, nix::errno::Errno)) -> Error {
    Error::Io {
        op: "detach",
        path: point,
        source: errno.into(),
    }
}

/// The id of the snapshot directory `point` lies in, if it is under `snapshots`.
fn snapshot_id(snapshots: &Path, point: &Path) -> Option<u64> {
    let name = point.strip_prefix(snapshots).ok()?.components().next()?;
    name.as_os_str().to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SNAPSHOT_REF_LABEL;
    use crate::snapshot::{Labels, MountError, Mounter};
    use std::sync::{Arc, Mutex};

    const NS: &str = "ns";

    /// "Mounts" by remembering the path; records what it was asked to drop.
    #[derive(Default)]
    struct FakeMounter {
        mounted: Mutex<Vec<PathBuf>>,
        dropped: Mutex<Vec<PathBuf>>,
    }

    impl Mounter for FakeMounter {
        fn mount(&self, mountpoint: &Path, _labels: &Labels) -> Result<(), MountError> {
            self.mounted.lock().unwrap().push(mountpoint.to_path_buf());
            Ok(())
        }

        fn unmount(&self, mountpoint: &Path) -> Result<(), MountError> {
            self.mounted.lock().unwrap().retain(|p| p != mountpoint);
            Ok(())
        }

        fn mounted(&self) -> Result<Vec<PathBuf>, MountError> {
            Ok(self.mounted.lock().unwrap().clone())
        }

        fn drop_orphan(&self, mountpoint: &Path) -> Result<(), MountError> {
            self.dropped.lock().unwrap().push(mountpoint.to_path_buf());
            self.unmount(mountpoint)
        }
    }

    fn store() -> (tempfile::TempDir, Store, Arc<FakeMounter>) {
        let dir = tempfile::tempdir().unwrap();
        let mounter = Arc::new(FakeMounter::default());
        let store = Store::open_with(dir.path(), Some(mounter.clone())).unwrap();
        (dir, store, mounter)
    }

    #[test]
    fn a_mount_is_owned_while_in_flight_or_committed_and_dropped_after_a_crash() {
        let (_dir, store, mounter) = store();
        let remote = [(SNAPSHOT_REF_LABEL.to_owned(), "chain-1".to_owned())].into();
        store.prepare(NS, "extract-1", "", remote).unwrap_err();
        let committed = store.fs_dir(store.stat_id(NS, "chain-1").unwrap());

        // A Prepare between its mount and its commit when the process dies.
        store.prepare(NS, "extract-2", "", Labels::new()).unwrap();
        let id = store.stat_id(NS, "extract-2").unwrap();
        let intent = store.intend_lazy_mount(NS, "extract-2", id).unwrap();
        mounter.mount(&store.fs_dir(id), &Labels::new()).unwrap();
        let report = store.cleanup().unwrap();
        assert!(report.mounts.is_empty(), "in flight: {report:?}");
        drop(intent);

        let report = store.cleanup().unwrap();
        assert_eq!(report.mounts, vec![store.fs_dir(id)]);
        assert!(report.directories.is_empty() && report.failures.is_empty());
        assert_eq!(*mounter.dropped.lock().unwrap(), vec![store.fs_dir(id)]);
        assert_eq!(
            mounter.mounted().unwrap(),
            vec![committed],
            "the committed one stays"
        );
        let record = store.stat(NS, "extract-2").unwrap();
        assert_eq!(record.name, "extract-2", "containerd still owns the key");
    }

    #[test]
    fn a_failed_mount_clears_the_mark() {
        let (_dir, store, _mounter) = store();
        store.prepare(NS, "extract-1", "", Labels::new()).unwrap();
        let id = store.stat_id(NS, "extract-1").unwrap();
        drop(store.intend_lazy_mount(NS, "extract-1", id).unwrap());
        store.lazy_mount_failed(NS, "extract-1");
        let txn = store.db.begin_read().unwrap();
        let table = txn.open_table(SNAPSHOTS).unwrap();
        let record = db::get_existing(&table, NS, "extract-1").unwrap();
        assert_eq!(record.backing, Backing::Local);
    }

    /// A real mount (tmpfs) on a directory no record owns: detached, then removed.
    #[test]
    fn a_mounted_orphan_directory_is_detached_and_removed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let (dir, store, _mounter) = store();
        store.prepare(NS, "kept", "", Labels::new()).unwrap();
        let orphans = [
            dir.path().join("snapshots/77"),
            dir.path().join("snapshots/78"),
        ];
        for orphan in &orphans {
            std::fs::create_dir_all(orphan.join("fs")).unwrap();
        }
        let fs = orphans[0].join("fs");
        nix::mount::mount(
            Some("tmpfs"),
            &fs,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
        let report = store.cleanup().unwrap();
        assert!(report.failures.is_empty(), "{report:?}");
        let mut removed = report.directories;
        removed.sort();
        assert_eq!(removed, orphans.to_vec());
        assert!(stale::mounts_under(dir.path(), false).is_empty());
        assert!(store.stat(NS, "kept").is_ok());
    }

    #[test]
    fn snapshot_ids_of_mountpoints() {
        let cases: &[(&str, &str, Option<u64>)] = &[
            ("a layer mount", "/r/snapshots/12/fs", Some(12)),
            ("the directory itself", "/r/snapshots/7", Some(7)),
            ("a staging directory", "/r/snapshots/new-7/fs", None),
            ("elsewhere", "/other/12/fs", None),
        ];
        for (name, point, want) in cases {
            let got = snapshot_id(Path::new("/r/snapshots"), Path::new(point));
            assert_eq!(got, *want, "{name}");
        }
    }
}
