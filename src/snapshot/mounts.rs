//! The mounts that assemble a snapshot, shaped like containerd's overlay snapshotter:
//! a bind mount when there is one directory to show, an overlay for a stack.

use std::path::Path;

use super::{Kind, Mount};

/// Mounts for snapshot `fs` (its own directory) with parent directories `lowers`, top
/// first. Active snapshots write to `fs` through `work`; views only read.
pub(super) fn mounts(kind: Kind, fs: &Path, work: &Path, lowers: &[&Path]) -> Vec<Mount> {
    match (kind, lowers) {
        (_, []) => {
            let access = if kind == Kind::View { "ro" } else { "rw" };
            vec![bind(fs, access)]
        }
        (Kind::Active, _) => vec![overlay(vec![
            format!("workdir={}", work.display()),
            format!("upperdir={}", fs.display()),
            lowerdir(lowers),
        ])],
        (_, [single]) => vec![bind(single, "ro")],
        (_, _) => vec![overlay(vec![lowerdir(lowers)])],
    }
}

fn bind(source: &Path, access: &str) -> Mount {
    Mount {
        kind: "bind".to_owned(),
        source: source.display().to_string(),
        options: vec![access.to_owned(), "rbind".to_owned()],
    }
}

fn overlay(options: Vec<String>) -> Mount {
    Mount {
        kind: "overlay".to_owned(),
        source: "overlay".to_owned(),
        options,
    }
}

fn lowerdir(lowers: &[&Path]) -> String {
    let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
    format!("lowerdir={}", joined.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            kind: kind.to_owned(),
            source: source.to_owned(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn mount_shapes() {
        let (fs, work) = (Path::new("/r/3/fs"), Path::new("/r/3/work"));
        let (p1, p2) = (Path::new("/r/2/fs"), Path::new("/r/1/fs"));
        let cases: Vec<(&str, Kind, Vec<&Path>, Vec<Mount>)> = vec![
            (
                "active without parent",
                Kind::Active,
                vec![],
                vec![m("bind", "/r/3/fs", &["rw", "rbind"])],
            ),
            (
                "view without parent",
                Kind::View,
                vec![],
                vec![m("bind", "/r/3/fs", &["ro", "rbind"])],
            ),
            (
                "view of one parent",
                Kind::View,
                vec![p1],
                vec![m("bind", "/r/2/fs", &["ro", "rbind"])],
            ),
            (
                "view of a stack",
                Kind::View,
                vec![p1, p2],
                vec![m("overlay", "overlay", &["lowerdir=/r/2/fs:/r/1/fs"])],
            ),
            (
                "active on a stack",
                Kind::Active,
                vec![p1, p2],
                vec![m(
                    "overlay",
                    "overlay",
                    &[
                        "workdir=/r/3/work",
                        "upperdir=/r/3/fs",
                        "lowerdir=/r/2/fs:/r/1/fs",
                    ],
                )],
            ),
        ];
        for (name, kind, lowers, want) in cases {
            assert_eq!(mounts(kind, fs, work, &lowers), want, "{name}");
        }
    }
}
