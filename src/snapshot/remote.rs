//! A Prepare served by lazy pulling: the store decides *whether* a Prepare is a
//! candidate (it carries `containerd.io/snapshot.ref`) and keeps containerd's
//! bookkeeping; the [`Mounter`] (the seam, in `seam`) decides *how* a layer is served
//! on a snapshot directory.
//!
//! The contract with containerd (PROTOCOL.md section 1): when the mounter serves the
//! layer, the active snapshot is committed under the ref name with every label plus
//! `containerd.io/snapshot/remote`, and Prepare answers AlreadyExists so that containerd
//! skips downloading the layer. When it cannot, the Prepare is an ordinary one.

use std::path::Path;

use super::db::Backing;
use super::seam::{Mounter, REMOTE_LABEL, REMOTE_LABEL_VALUE};
use super::{Error, Labels, Mount, Store};

impl Store {
    /// Tries to serve the freshly prepared `key` lazily and commit it as `target`.
    /// Answers AlreadyExists when that worked or `target` exists, and the ordinary
    /// `mounts` when the layer itself cannot be served lazily. Prepares of the same target
    /// take turns, so that one mounts the layer and the others find it committed.
    pub(super) fn try_remote(
        &self,
        mounter: &dyn Mounter,
        ns: &str,
        key: &str,
        target: &str,
        labels: Labels,
        mounts: Vec<Mount>,
    ) -> Result<Vec<Mount>, Error> {
        let wait = mounter.attempt_timeout();
        let turn = self.turns.take(ns, target, wait);
        if turn.is_none() {
            // Whoever holds the turn is stuck; a lost commit race is handled below.
            tracing::warn!(
                layer = target,
                ?wait,
                "another Prepare of this layer takes too long; trying without waiting for it"
            );
        }
        if self.stat(ns, target).is_ok() {
            // Another image already has this layer: nothing to pull, as the Go reference
            // answers.
            return self.reuse_committed(ns, key, target);
        }
        let id = self.stat_id(ns, key)?;
        let fs = self.fs_dir(id);
        let _intent = self.intend_lazy_mount(ns, key, id)?;
        if let Err(reason) = mounter.mount(&fs, &labels) {
            tracing::info!(key, layer = target, %reason, "no lazy pull; containerd pulls the layer");
            self.lazy_mount_failed(ns, key);
            return Ok(mounts);
        }
        let mut labels = labels;
        labels.insert(REMOTE_LABEL.to_owned(), REMOTE_LABEL_VALUE.to_owned());
        match self.commit_as(ns, target, key, labels, Backing::Remote) {
            Ok(()) => {
                tracing::info!(layer = target, "serving layer lazily");
                Err(Error::AlreadyExists {
                    namespace: ns.to_owned(),
                    key: target.to_owned(),
                })
            }
            Err(Error::AlreadyExists { .. }) => {
                // Committed by a Prepare that did not wait for this one's turn.
                self.unmount_remote(&fs);
                self.lazy_mount_failed(ns, key);
                self.reuse_committed(ns, key, target)
            }
            Err(e) => {
                crate::metrics::global().fallback(crate::metrics::FallbackReason::Commit);
                tracing::warn!(key, layer = target, error = %e, "commit lazily mounted layer; containerd pulls it");
                self.unmount_remote(&fs);
                self.lazy_mount_failed(ns, key);
                Ok(mounts)
            }
        }
    }

    /// Answers a Prepare of `key` whose `target` is committed already: the fresh active
    /// snapshot is not needed, and containerd skips the layer.
    fn reuse_committed(&self, ns: &str, key: &str, target: &str) -> Result<Vec<Mount>, Error> {
        tracing::info!(layer = target, "layer already committed; reusing it");
        self.remove(ns, key)?;
        Err(Error::AlreadyExists {
            namespace: ns.to_owned(),
            key: target.to_owned(),
        })
    }

    /// Unmounts a remote snapshot's directory; failures are logged, Cleanup retries.
    pub(super) fn unmount_remote(&self, fs: &Path) {
        let Some(mounter) = &self.mounter else {
            return;
        };
        if let Err(e) = mounter.unmount(fs) {
            tracing::warn!(dir = %fs.display(), error = %e, "unmount remote snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::snapshot_code;
    use crate::snapshot::{Kind, MountError, SNAPSHOT_REF_LABEL};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use tonic::Code;

    /// Serves layers whose labels say `fake/remote=yes` by writing a marker file.
    #[derive(Default)]
    struct FakeMounter {
        unmounted: Mutex<Vec<PathBuf>>,
    }

    impl Mounter for FakeMounter {
        fn mount(&self, mountpoint: &Path, labels: &Labels) -> Result<(), MountError> {
            if labels.get("fake/remote").map(String::as_str) != Some("yes") {
                return Err(MountError::NotRemote("no fake/remote label".into()));
            }
            std::fs::write(mountpoint.join("marker"), vec![1u8; 9000]).unwrap();
            Ok(())
        }

        fn unmount(&self, mountpoint: &Path) -> Result<(), MountError> {
            self.unmounted
                .lock()
                .unwrap()
                .push(mountpoint.to_path_buf());
            Ok(())
        }

        fn mounted(&self) -> Result<Vec<PathBuf>, MountError> {
            Ok(Vec::new())
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn store() -> (tempfile::TempDir, Store, Arc<FakeMounter>) {
        let dir = tempfile::tempdir().unwrap();
        let mounter = Arc::new(FakeMounter::default());
        let store = Store::open_with(dir.path(), Some(mounter.clone())).unwrap();
        (dir, store, mounter)
    }

    #[test]
    fn served_layer_is_committed_and_answers_already_exists() {
        let (_dir, store, mounter) = store();
        let wanted = labels(&[(SNAPSHOT_REF_LABEL, "chain-1"), ("fake/remote", "yes")]);
        let err = store
            .prepare("ns", "extract-1", "", wanted.clone())
            .unwrap_err();
        assert_eq!(snapshot_code(&err), Code::AlreadyExists);

        let info = store.stat("ns", "chain-1").unwrap();
        assert_eq!(info.kind, Kind::Committed);
        let mut expected = wanted;
        expected.insert(REMOTE_LABEL.into(), REMOTE_LABEL_VALUE.into());
        assert_eq!(info.labels, expected);
        assert_eq!(
            snapshot_code(&store.stat("ns", "extract-1").unwrap_err()),
            Code::NotFound
        );
        assert_eq!(
            store.usage("ns", "chain-1").unwrap().size,
            0,
            "remote usage is 0"
        );

        store.remove("ns", "chain-1").unwrap();
        assert_eq!(
            mounter.unmounted.lock().unwrap().len(),
            1,
            "remove unmounts"
        );
    }

    #[test]
    fn ordinary_prepares_fall_back() {
        let cases: &[(&str, Labels)] = &[
            (
                "mounter refuses",
                labels(&[(SNAPSHOT_REF_LABEL, "chain-1")]),
            ),
            ("no ref label", labels(&[("fake/remote", "yes")])),
        ];
        for (name, wanted) in cases {
            let (_dir, store, _mounter) = store();
            let mounts = store
                .prepare("ns", "extract-1", "", wanted.clone())
                .unwrap();
            assert_eq!(mounts[0].kind, "bind", "{name}");
            assert_eq!(
                store.stat("ns", "extract-1").unwrap().kind,
                Kind::Active,
                "{name}"
            );
            assert_eq!(store.list::<&str>("ns", &[]).unwrap().len(), 1, "{name}");
        }
    }

    /// Takes `delay` to mount anything; counts mounts and unmounts.
    struct SlowMounter {
        delay: std::time::Duration,
        attempt: std::time::Duration,
        mounts: Mutex<Vec<PathBuf>>,
        unmounted: Mutex<Vec<PathBuf>>,
    }

    impl Mounter for SlowMounter {
        fn mount(&self, mountpoint: &Path, _labels: &Labels) -> Result<(), MountError> {
            std::thread::sleep(self.delay);
            self.mounts.lock().unwrap().push(mountpoint.to_path_buf());
            Ok(())
        }

        fn unmount(&self, mountpoint: &Path) -> Result<(), MountError> {
            self.unmounted
                .lock()
                .unwrap()
                .push(mountpoint.to_path_buf());
            Ok(())
        }

        fn mounted(&self) -> Result<Vec<PathBuf>, MountError> {
            Ok(Vec::new())
        }

        fn attempt_timeout(&self) -> std::time::Duration {
            self.attempt
        }
    }

    /// Four Prepares of the same layer at once, each with its own key; `attempt` is how
    /// long each waits for another's turn. Returns the store's mounter.
    fn racing_prepares(
        attempt: std::time::Duration,
    ) -> (Store, Arc<SlowMounter>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mounter = Arc::new(SlowMounter {
            delay: std::time::Duration::from_millis(300),
            attempt,
            mounts: Mutex::default(),
            unmounted: Mutex::default(),
        });
        let store = Store::open_with(dir.path(), Some(mounter.clone())).unwrap();
        let wanted = labels(&[(SNAPSHOT_REF_LABEL, "chain-1")]);
        std::thread::scope(|scope| {
            let prepares: Vec<_> = (0..4)
                .map(|i| {
                    let (store, wanted) = (&store, wanted.clone());
                    scope.spawn(move || store.prepare("ns", &format!("extract-{i}"), "", wanted))
                })
                .collect();
            for prepare in prepares {
                let err = prepare.join().unwrap().unwrap_err();
                assert_eq!(snapshot_code(&err), Code::AlreadyExists, "{err}");
            }
        });
        let names: Vec<String> = store
            .list::<&str>("ns", &[])
            .unwrap()
            .into_iter()
            .map(|info| info.name)
            .collect();
        assert_eq!(names, ["chain-1"], "no active snapshot is left");
        let info = store.stat("ns", "chain-1").unwrap();
        assert_eq!(
            info.labels.get(REMOTE_LABEL).map(String::as_str),
            Some(REMOTE_LABEL_VALUE)
        );
        (store, mounter, dir)
    }

    #[test]
    fn concurrent_prepares_of_one_layer_mount_it_once() {
        let (_store, mounter, _dir) = racing_prepares(std::time::Duration::from_secs(30));
        assert_eq!(mounter.mounts.lock().unwrap().len(), 1, "the others waited");
        assert!(mounter.unmounted.lock().unwrap().is_empty());
    }

    #[test]
    fn prepares_that_stop_waiting_lose_the_commit_race_without_falling_back() {
        let (_store, mounter, _dir) = racing_prepares(std::time::Duration::from_millis(10));
        let mounts = mounter.mounts.lock().unwrap().len();
        assert!(
            mounts > 1,
            "the waits ran out, so several mounted: {mounts}"
        );
        assert_eq!(
            mounter.unmounted.lock().unwrap().len(),
            mounts - 1,
            "every mount but the committed one is undone"
        );
    }

    #[test]
    fn existing_target_answers_already_exists_without_mounting() {
        let (_dir, store, mounter) = store();
        store.prepare("ns", "k", "", Labels::new()).unwrap();
        store.commit("ns", "chain-1", "k", Labels::new()).unwrap();
        let wanted = labels(&[(SNAPSHOT_REF_LABEL, "chain-1"), ("fake/remote", "yes")]);
        let err = store.prepare("ns", "extract-1", "", wanted).unwrap_err();
        assert_eq!(snapshot_code(&err), Code::AlreadyExists);
        assert_eq!(
            snapshot_code(&store.stat("ns", "extract-1").unwrap_err()),
            Code::NotFound,
            "the active snapshot is removed"
        );
        assert!(
            mounter.unmounted.lock().unwrap().is_empty(),
            "nothing was mounted"
        );
        assert_eq!(store.list::<&str>("ns", &[]).unwrap().len(), 1);
    }
}
