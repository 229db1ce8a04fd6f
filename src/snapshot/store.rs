//! The snapshot store: containerd's overlay snapshotter semantics on a redb database
//! under `<root>/metadata.redb`, with each snapshot's files in `<root>/snapshots/<id>`
//! (`fs` for its contents, `work` for overlay's scratch space when active).
//!
//! Every write runs in one database transaction. Directories are created before the
//! transaction commits and removed after it, so a crash leaves only orphan directories
//! and mounts, which [`Store::cleanup`] (in `orphans`) removes. Lazy mounts a killed
//! daemon left dead on those directories are detached when the store opens.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use redb::ReadableTable;

use super::db::{self, Backing, Record, CHILDREN, SNAPSHOTS};
use super::filter::Filter;
use super::mounts::mounts;
use super::seam::{Mounter, SNAPSHOT_REF_LABEL};
use super::stale;
use super::turns::Turns;
use super::usage::disk_usage;
use super::{Error, Info, Kind, Labels, Mount, Usage};

/// Ids of the snapshots this process is mounting lazily right now.
#[derive(Default)]
pub(super) struct InFlight(Mutex<HashSet<u64>>);

impl InFlight {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Persistent snapshot metadata plus the snapshot directories.
pub struct Store {
    pub(super) root: PathBuf,
    pub(super) db: redb::Database,
    /// Mounts layers lazily; without one every snapshot is an ordinary directory.
    pub(super) mounter: Option<Arc<dyn Mounter>>,
    /// Lazy mounts this process has started and not yet committed or given up.
    pub(super) in_flight: InFlight,
    /// Lazy attempts and removals of one layer take turns (see [`Turns`]).
    pub(super) turns: Turns,
}

impl Store {
    /// The metadata database in the root (mode 0600).
    pub const DB_FILE: &'static str = "metadata.redb";

    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path) -> Result<Store, Error> {
        Store::open_with(root, None)
    }

    /// Opens the store with a [`Mounter`] that may serve layers lazily.
    pub fn open_with(root: &Path, mounter: Option<Arc<dyn Mounter>>) -> Result<Store, Error> {
        let snapshots = root.join("snapshots");
        crate::private_fs::create_dir_all(&snapshots).map_err(Error::io("create", &snapshots))?;
        // Before anything mounts again on, or removes, those directories.
        stale::detach_dead_mounts(&snapshots);
        let path = root.join(Store::DB_FILE);
        let file = crate::private_fs::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        let db = redb::Builder::new().create_file(file)?;
        db::init(&db)?;
        Ok(Store {
            turns: Turns::default(),
            root: root.to_path_buf(),
            db,
            mounter,
            in_flight: InFlight::default(),
        })
    }

    /// Creates an active snapshot `key` on top of `parent` and returns its mounts.
    ///
    /// With a mounter and a `containerd.io/snapshot.ref` label, the layer may instead be
    /// mounted lazily and committed under that name: then the answer is AlreadyExists.
    pub fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>, Error> {
        let target = labels.get(SNAPSHOT_REF_LABEL).cloned();
        let mounts = self.create(ns, Kind::Active, key, parent, labels.clone())?;
        match (&self.mounter, target) {
            (Some(mounter), Some(target)) => {
                self.try_remote(mounter.as_ref(), ns, key, &target, labels, mounts)
            }
            _ => Ok(mounts),
        }
    }

    /// Creates a read-only view `key` of `parent` and returns its mounts.
    pub fn view(
        &self,
        ns: &str,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>, Error> {
        self.create(ns, Kind::View, key, parent, labels)
    }

    /// The mounts of an active snapshot or view.
    pub fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let record = db::get_existing(&table, ns, key)?;
        if record.kind == Kind::Committed {
            return Err(Error::NotMountable(key.to_owned()));
        }
        let lowers = self.parent_ids(&table, ns, &record.parent)?;
        Ok(self.mounts_of(&record, &lowers))
    }

    /// Commits active snapshot `key` as `name` with `labels` (replacing its own).
    pub fn commit(&self, ns: &str, name: &str, key: &str, labels: Labels) -> Result<(), Error> {
        self.commit_as(ns, name, key, labels, Backing::Local)
    }

    /// Commits like [`Store::commit`], on `parent` when not empty (containerd 2.2's
    /// `CommitSnapshotRequest.parent`, used by parallel unpack): an active snapshot
    /// prepared without a parent is rebased onto it; one prepared on another parent is
    /// refused.
    pub fn commit_onto(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<(), Error> {
        self.commit_record(ns, name, key, parent, labels, Backing::Local)
    }

    /// Commits like [`Store::commit`]; a remote snapshot's usage is 0, not measured.
    pub(super) fn commit_as(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: Labels,
        backing: Backing,
    ) -> Result<(), Error> {
        self.commit_record(ns, name, key, "", labels, backing)
    }

    fn commit_record(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        parent: &str,
        labels: Labels,
        backing: Backing,
    ) -> Result<(), Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SNAPSHOTS)?;
            if db::get(&table, ns, name)?.is_some() {
                return Err(already_exists(ns, name));
            }
            let mut record = db::get_existing(&table, ns, key)?;
            if record.kind != Kind::Active {
                return Err(Error::NotActive {
                    key: key.to_owned(),
                    kind: record.kind,
                });
            }
            if !parent.is_empty() && record.parent != parent {
                if !record.parent.is_empty() {
                    return Err(Error::ParentChanged {
                        key: key.to_owned(),
                        parent: record.parent,
                    });
                }
                if db::get_existing(&table, ns, parent)?.kind != Kind::Committed {
                    return Err(Error::ParentNotCommitted(parent.to_owned()));
                }
                record.parent = parent.to_owned();
            }
            record.usage = match backing {
                Backing::Local => disk_usage(&self.fs_dir(record.id))?,
                Backing::Remote | Backing::Mounting => Usage::default(),
            };
            record.backing = backing;
            record.kind = Kind::Committed;
            record.labels = labels;
            record.created = SystemTime::now();
            record.updated = record.created;
            table.remove((ns, key))?;
            db::put(&mut table, ns, name, &record)?;
            if !record.parent.is_empty() {
                let mut children = txn.open_table(CHILDREN)?;
                children.remove((ns, record.parent.as_str(), key))?;
                children.insert((ns, record.parent.as_str(), name), ())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes snapshot `key`; refused while it has children.
    pub fn remove(&self, ns: &str, key: &str) -> Result<(), Error> {
        // A Prepare mounting this layer answers first (so it never sees a half-removed
        // layer); the wait is bounded like the Prepare's own.
        let _turn = self
            .mounter
            .as_ref()
            .and_then(|m| self.turns.take(ns, key, m.attempt_timeout()));
        let txn = self.db.begin_write()?;
        let record = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            let mut children = txn.open_table(CHILDREN)?;
            let record = db::get_existing(&table, ns, key)?;
            if db::has_children(&children, ns, key)? {
                return Err(Error::HasChildren(key.to_owned()));
            }
            table.remove((ns, key))?;
            if !record.parent.is_empty() {
                children.remove((ns, record.parent.as_str(), key))?;
            }
            record
        };
        txn.commit()?;
        self.release_for_remove(record.id, record.backing);
        let dir = self.snapshot_dir(record.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            // The metadata is gone; Cleanup retries the directory later.
            tracing::warn!(dir = %dir.display(), error = %e, "remove snapshot directory");
        }
        Ok(())
    }

    /// What the store knows about `key`.
    pub fn stat(&self, ns: &str, key: &str) -> Result<Info, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        Ok(db::get_existing(&table, ns, key)?.info(key))
    }

    /// Updates the labels of `key` as selected by `paths` (`labels`, `labels.<key>`; none
    /// means all mutable fields) from `labels`, and returns the new info.
    pub fn update(
        &self,
        ns: &str,
        key: &str,
        labels: &Labels,
        paths: &[String],
    ) -> Result<Info, Error> {
        let txn = self.db.begin_write()?;
        let updated = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            let mut record = db::get_existing(&table, ns, key)?;
            apply_update(&mut record.labels, key, labels, paths)?;
            record.updated = SystemTime::now();
            db::put(&mut table, ns, key, &record)?;
            record.info(key)
        };
        txn.commit()?;
        Ok(updated)
    }

    /// Every snapshot of the namespace matching any of `filters`.
    pub fn list<S: AsRef<str>>(&self, ns: &str, filters: &[S]) -> Result<Vec<Info>, Error> {
        let filter = Filter::parse_all(filters)?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        let infos = db::list(&table, ns)?
            .into_iter()
            .map(|(name, record)| record.info(&name))
            .filter(|info| filter.matches(info))
            .collect();
        Ok(infos)
    }

    /// The id (directory name) of `key`.
    pub(super) fn stat_id(&self, ns: &str, key: &str) -> Result<u64, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        Ok(db::get_existing(&table, ns, key)?.id)
    }

    /// Disk usage: measured now for active snapshots, as of commit otherwise.
    pub fn usage(&self, ns: &str, key: &str) -> Result<Usage, Error> {
        let record = {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(SNAPSHOTS)?;
            db::get_existing(&table, ns, key)?
        };
        match record.kind {
            Kind::Active => disk_usage(&self.fs_dir(record.id)),
            _ => Ok(record.usage),
        }
    }

    /// The directory and labels of every lazily mounted (remote) snapshot: what must be
    /// mounted again after the mounts were lost (a restart of the serving process).
    pub fn remote_snapshots(&self) -> Result<Vec<(PathBuf, Labels)>, Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(SNAPSHOTS)?;
        Ok(db::all_records(&table)?
            .into_iter()
            .filter(|record| record.backing == Backing::Remote)
            .map(|record| (self.fs_dir(record.id), record.labels))
            .collect())
    }

    fn create(
        &self,
        ns: &str,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: Labels,
    ) -> Result<Vec<Mount>, Error> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let now = SystemTime::now();
        let txn = self.db.begin_write()?;
        let (record, lowers) = {
            let mut table = txn.open_table(SNAPSHOTS)?;
            let lowers = self.check_parent(&table, ns, parent)?;
            if db::get(&table, ns, key)?.is_some() {
                return Err(already_exists(ns, key));
            }
            let record = Record {
                id: db::next_id(&txn)?,
                kind,
                parent: parent.to_owned(),
                labels,
                created: now,
                updated: now,
                usage: Usage::default(),
                backing: Backing::Local,
            };
            db::put(&mut table, ns, key, &record)?;
            if !parent.is_empty() {
                txn.open_table(CHILDREN)?.insert((ns, parent, key), ())?;
            }
            (record, lowers)
        };
        let owner = lowers.first().map(|&id| self.fs_dir(id));
        self.create_dirs(&record, owner.as_deref())?;
        if let Err(e) = txn.commit() {
            let _ = std::fs::remove_dir_all(self.snapshot_dir(record.id));
            return Err(e.into());
        }
        Ok(self.mounts_of(&record, &lowers))
    }

    /// Checks that `parent` is empty or committed; returns its id chain, top first.
    fn check_parent<T>(&self, table: &T, ns: &str, parent: &str) -> Result<Vec<u64>, Error>
    where
        T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    {
        if parent.is_empty() {
            return Ok(Vec::new());
        }
        let record = db::get_existing(table, ns, parent)?;
        if record.kind != Kind::Committed {
            return Err(Error::ParentNotCommitted(parent.to_owned()));
        }
        self.parent_ids(table, ns, parent)
    }

    /// Ids of `parent` and its ancestors, top first.
    fn parent_ids<T>(&self, table: &T, ns: &str, parent: &str) -> Result<Vec<u64>, Error>
    where
        T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
    {
        let mut ids = Vec::new();
        let mut next = parent.to_owned();
        while !next.is_empty() {
            let record = db::get_existing(table, ns, &next)?;
            ids.push(record.id);
            next = record.parent;
        }
        Ok(ids)
    }

    /// Makes `snapshots/<id>/fs` (owned like the parent's, mode 0755) and, for active
    /// snapshots, `work`. Built under a temporary name and renamed into place.
    fn create_dirs(&self, record: &Record, owner: Option<&Path>) -> Result<(), Error> {
        let target = self.snapshot_dir(record.id);
        let staging = self
            .root
            .join("snapshots")
            .join(format!("new-{}", record.id));
        for stale in [&staging, &target] {
            // Left by a crash before the id was committed: nothing refers to it.
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(Error::io("remove stale", stale))?;
            }
        }
        let result = self.fill_staging(&staging, record.kind, owner);
        let result = result.and_then(|()| {
            std::fs::rename(&staging, &target).map_err(Error::io("rename", &staging))
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    fn fill_staging(&self, staging: &Path, kind: Kind, owner: Option<&Path>) -> Result<(), Error> {
        let fs = staging.join("fs");
        // The snapshot's own directory 0700 like its parent; `fs` gets its mode below.
        crate::private_fs::create_dir_all(&fs).map_err(Error::io("create", &fs))?;
        set_mode(&fs, 0o755)?;
        if let Some(owner) = owner {
            let meta = std::fs::metadata(owner).map_err(Error::io("stat parent", owner))?;
            std::os::unix::fs::lchown(&fs, Some(meta.uid()), Some(meta.gid()))
                .map_err(Error::io("chown", &fs))?;
        }
        if kind == Kind::Active {
            let work = staging.join("work");
            std::fs::create_dir(&work).map_err(Error::io("create", &work))?;
            set_mode(&work, 0o711)?;
        }
        Ok(())
    }

    fn mounts_of(&self, record: &Record, lowers: &[u64]) -> Vec<Mount> {
        let lower_dirs: Vec<PathBuf> = lowers.iter().map(|&id| self.fs_dir(id)).collect();
        let lower_refs: Vec<&Path> = lower_dirs.iter().map(PathBuf::as_path).collect();
        let work = self.snapshot_dir(record.id).join("work");
        mounts(record.kind, &self.fs_dir(record.id), &work, &lower_refs)
    }

    pub(super) fn snapshot_dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    pub(super) fn fs_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir(id).join("fs")
    }
}

fn already_exists(ns: &str, key: &str) -> Error {
    Error::AlreadyExists {
        namespace: ns.to_owned(),
        key: key.to_owned(),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("chmod", path))
}

/// Applies an Update's field mask to `current`; a `labels.<key>` path whose key is not
/// in `wanted` removes that label.
fn apply_update(
    current: &mut Labels,
    key: &str,
    wanted: &Labels,
    paths: &[String],
) -> Result<(), Error> {
    if paths.is_empty() {
        current.clone_from(wanted);
        return Ok(());
    }
    for path in paths {
        if path == "labels" {
            current.clone_from(wanted);
        } else if let Some(label) = path.strip_prefix("labels.") {
            match wanted.get(label) {
                Some(value) => current.insert(label.to_owned(), value.clone()),
                None => current.remove(label),
            };
        } else {
            return Err(Error::ImmutableField {
                key: key.to_owned(),
                path: path.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
