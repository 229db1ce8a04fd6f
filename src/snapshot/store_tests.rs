//! Unit tests of the snapshot store on a temporary root.

use super::*;
use crate::error::snapshot_code;
use tonic::Code;

const NS: &str = "test";

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A store with committed `base`, active `active` and view `view` on top of it.
fn fixture() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.prepare(NS, "base-key", "", Labels::new()).unwrap();
    store
        .commit(NS, "base", "base-key", labels(&[("a", "1")]))
        .unwrap();
    store.prepare(NS, "active", "base", Labels::new()).unwrap();
    store.view(NS, "view", "base", Labels::new()).unwrap();
    (dir, store)
}

type Op = Box<dyn Fn(&Store) -> Result<(), Error>>;

#[test]
fn failed_requests_get_containerd_codes_and_change_nothing() {
    let cases: Vec<(&str, Op, Code)> = vec![
        (
            "prepare existing key",
            Box::new(|s| s.prepare(NS, "active", "", Labels::new()).map(drop)),
            Code::AlreadyExists,
        ),
        (
            "prepare missing parent",
            Box::new(|s| s.prepare(NS, "k", "nope", Labels::new()).map(drop)),
            Code::NotFound,
        ),
        (
            "prepare on active parent",
            Box::new(|s| s.prepare(NS, "k", "active", Labels::new()).map(drop)),
            Code::InvalidArgument,
        ),
        (
            "prepare empty key",
            Box::new(|s| s.prepare(NS, "", "", Labels::new()).map(drop)),
            Code::InvalidArgument,
        ),
        (
            "view on view",
            Box::new(|s| s.view(NS, "k", "view", Labels::new()).map(drop)),
            Code::InvalidArgument,
        ),
        (
            "commit unknown key",
            Box::new(|s| s.commit(NS, "new", "nope", Labels::new())),
            Code::NotFound,
        ),
        (
            "commit onto existing name",
            Box::new(|s| s.commit(NS, "base", "active", Labels::new())),
            Code::AlreadyExists,
        ),
        (
            "commit a view",
            Box::new(|s| s.commit(NS, "new", "view", Labels::new())),
            Code::FailedPrecondition,
        ),
        (
            "commit twice",
            Box::new(|s| s.commit(NS, "new", "base", Labels::new())),
            Code::FailedPrecondition,
        ),
        (
            "mounts of committed",
            Box::new(|s| s.mounts(NS, "base").map(drop)),
            Code::FailedPrecondition,
        ),
        (
            "mounts unknown",
            Box::new(|s| s.mounts(NS, "nope").map(drop)),
            Code::NotFound,
        ),
        (
            "remove with children",
            Box::new(|s| s.remove(NS, "base")),
            Code::FailedPrecondition,
        ),
        (
            "remove unknown",
            Box::new(|s| s.remove(NS, "nope")),
            Code::NotFound,
        ),
        (
            "stat unknown",
            Box::new(|s| s.stat(NS, "nope").map(drop)),
            Code::NotFound,
        ),
        (
            "stat other namespace",
            Box::new(|s| s.stat("other", "base").map(drop)),
            Code::NotFound,
        ),
        (
            "usage unknown",
            Box::new(|s| s.usage(NS, "nope").map(drop)),
            Code::NotFound,
        ),
        (
            "update unknown",
            Box::new(|s| s.update(NS, "nope", &Labels::new(), &[]).map(drop)),
            Code::NotFound,
        ),
        (
            "update immutable field",
            Box::new(|s| {
                s.update(NS, "base", &Labels::new(), &["parent".to_owned()])
                    .map(drop)
            }),
            Code::InvalidArgument,
        ),
        (
            "list bad filter",
            Box::new(|s| s.list(NS, &["name=="]).map(drop)),
            Code::InvalidArgument,
        ),
    ];
    for (name, op, want) in cases {
        let (_dir, store) = fixture();
        let before = store.list::<&str>(NS, &[]).unwrap();
        let err = op(&store).expect_err(name);
        assert_eq!(snapshot_code(&err), want, "{name}: {err}");
        assert_eq!(
            store.list::<&str>(NS, &[]).unwrap(),
            before,
            "{name} changed the store"
        );
    }
}

#[test]
fn prepare_commit_view_remove_lifecycle() {
    let (dir, store) = fixture();
    let mounts = store.mounts(NS, "active").unwrap();
    let Some(upper) = mounts[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
    else {
        panic!("active mount has no upperdir: {mounts:?}");
    };
    std::fs::write(Path::new(upper).join("file"), vec![7u8; 8192]).unwrap();
    assert!(store.usage(NS, "active").unwrap().size >= 8192);

    store
        .commit(NS, "top", "active", labels(&[("b", "2")]))
        .unwrap();
    let top = store.stat(NS, "top").unwrap();
    assert_eq!((top.kind, top.parent.as_str()), (Kind::Committed, "base"));
    assert_eq!(top.labels, labels(&[("b", "2")]), "commit replaces labels");
    assert_eq!(top.created, top.updated);
    assert!(
        store.usage(NS, "top").unwrap().size >= 8192,
        "usage kept at commit"
    );

    let view = store.view(NS, "top-view", "top", Labels::new()).unwrap();
    assert_eq!(view[0].kind, "overlay");
    assert_eq!(
        view[0].options.len(),
        1,
        "read-only stack has only lowerdir: {view:?}"
    );

    store.remove(NS, "top-view").unwrap();
    let id_dirs = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .count();
    store.remove(NS, "top").unwrap();
    let after = std::fs::read_dir(dir.path().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(after + 1, id_dirs, "remove deletes the snapshot directory");
    assert_eq!(
        snapshot_code(&store.stat(NS, "top").unwrap_err()),
        Code::NotFound
    );
}

#[test]
fn snapshots_persist_across_reopen() {
    let (dir, store) = fixture();
    let before = store.list::<&str>(NS, &[]).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.list::<&str>(NS, &[]).unwrap(), before);
    // New ids do not collide with the old ones.
    store.prepare(NS, "after", "base", Labels::new()).unwrap();
    assert_eq!(store.cleanup().unwrap().directories, Vec::<PathBuf>::new());
}

#[test]
fn cleanup_removes_only_orphans() {
    let (dir, store) = fixture();
    let orphans = [
        dir.path().join("snapshots/999"),
        dir.path().join("snapshots/new-5"),
    ];
    for orphan in &orphans {
        std::fs::create_dir_all(orphan.join("fs")).unwrap();
    }
    let mut removed = store.cleanup().unwrap().directories;
    removed.sort();
    assert_eq!(removed, orphans.to_vec());
    for key in ["active", "view"] {
        store.mounts(NS, key).unwrap();
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .count(),
        3
    );
}

#[test]
fn update_field_masks() {
    let wanted = labels(&[("a", "9"), ("c", "3")]);
    let cases: &[(&str, &[&str], Labels)] = &[
        ("no mask replaces labels", &[], wanted.clone()),
        ("labels replaces labels", &["labels"], wanted.clone()),
        (
            "one label set",
            &["labels.c"],
            labels(&[("a", "1"), ("c", "3")]),
        ),
        (
            "absent label removed",
            &["labels.a", "labels.x"],
            labels(&[("a", "9")]),
        ),
    ];
    for (name, mask, want) in cases {
        let (_dir, store) = fixture();
        let mask: Vec<String> = mask.iter().map(|s| s.to_string()).collect();
        let before = store.stat(NS, "base").unwrap();
        let info = store.update(NS, "base", &wanted, &mask).unwrap();
        assert_eq!(&info.labels, want, "{name}");
        assert_eq!(store.stat(NS, "base").unwrap(), info, "{name} persisted");
        assert_eq!(info.created, before.created, "{name}");
        assert!(info.updated >= before.updated, "{name}");
    }
}

#[test]
fn list_filters_by_label_and_parent() {
    let (_dir, store) = fixture();
    store
        .prepare(
            NS,
            "extract",
            "base",
            labels(&[("containerd.io/snapshot.ref", "sha256:x")]),
        )
        .unwrap();
    store
        .commit(
            NS,
            "sha256:x",
            "extract",
            labels(&[("containerd.io/snapshot.ref", "sha256:x")]),
        )
        .unwrap();
    let names = |filters: &[&str]| -> Vec<String> {
        store
            .list(NS, filters)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(
        names(&[r#"labels."containerd.io/snapshot.ref"==sha256:x,parent==base"#]),
        ["sha256:x"]
    );
    assert!(names(&[r#"labels."containerd.io/snapshot.ref"==sha256:x,parent=="""#]).is_empty());
    assert_eq!(names(&["kind==view", "kind==active"]), ["active", "view"]);
    assert!(
        store.list::<&str>("other", &[]).unwrap().is_empty(),
        "namespaces are separate"
    );
}

#[test]
fn commit_onto_a_parent_rebases_a_parentless_snapshot() {
    let (_dir, store) = fixture();
    // containerd 2.2's parallel unpack: prepared without a parent, committed onto one.
    store.prepare(NS, "loose", "", Labels::new()).unwrap();
    store
        .commit_onto(NS, "rebased", "loose", "base", Labels::new())
        .unwrap();
    assert_eq!(store.stat(NS, "rebased").unwrap().parent, "base");
    let view = store.view(NS, "v2", "rebased", Labels::new()).unwrap();
    let lower = view[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap();
    assert_eq!(lower.split(':').count(), 2, "both layers stacked: {view:?}");
    assert!(
        store.remove(NS, "base").is_err(),
        "base now has the rebased child"
    );

    let cases: Vec<(&str, Op, Code)> = vec![
        (
            "another parent than prepared",
            Box::new(|s| {
                s.prepare(NS, "on-base", "base", Labels::new())?;
                s.commit_onto(NS, "x", "on-base", "rebased", Labels::new())
            }),
            Code::InvalidArgument,
        ),
        (
            "parent not committed",
            Box::new(|s| {
                s.prepare(NS, "loose2", "", Labels::new())?;
                s.commit_onto(NS, "y", "loose2", "active", Labels::new())
            }),
            Code::InvalidArgument,
        ),
        (
            "parent missing",
            Box::new(|s| {
                s.prepare(NS, "loose3", "", Labels::new())?;
                s.commit_onto(NS, "z", "loose3", "nope", Labels::new())
            }),
            Code::NotFound,
        ),
    ];
    for (name, op, code) in cases {
        let error = op(&store).unwrap_err();
        assert_eq!(snapshot_code(&error), code, "{name}: {error}");
    }
    // The same parent as prepared is no change.
    store
        .commit_onto(NS, "same", "on-base", "base", Labels::new())
        .unwrap();
    assert_eq!(store.stat(NS, "same").unwrap().parent, "base");
}
