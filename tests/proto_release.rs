//! The containerd protos in `proto/` match the containerd API release recorded next to
//! them (proto/README.md): every package, rpc, message, enum value and field, with its
//! number, in order; comments, imports and options aside.

use std::path::Path;

/// Declarations of a .proto text, one per line, whitespace collapsed.
fn declarations(text: &str) -> Vec<String> {
    let mut cleaned = String::new();
    let mut rest = text;
    // Block comments, then line comments.
    while let Some(start) = rest.find("/*") {
        cleaned.push_str(&rest[..start]);
        rest = rest[start..]
            .split_once("*/")
            .map_or("", |(_, after)| after);
    }
    cleaned.push_str(rest);
    let lines: Vec<&str> = cleaned
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .filter(|line| {
            let line = line.trim_start();
            !(line.starts_with("option")
                || line.starts_with("import")
                || line.starts_with("syntax"))
        })
        .collect();
    lines
        .join("\n")
        .split([';', '{', '}', '\n'])
        .map(|part| part.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|part| !part.is_empty())
        .map(|part| part.replace(" (", "(").replace(") returns (", ") returns("))
        .collect()
}

#[test]
fn protos_match_the_recorded_containerd_api_release() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let mut ours = declarations(&read("containerd/services/snapshots/v1/snapshots.proto"));
    ours.extend(declarations(&read("containerd/types/mount.proto")));
    let release: Vec<String> = read("containerd-api-v1.11.1.txt")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(ours, release);
    // The fields containerd 2.x added since 1.6 are there.
    let commit = ours
        .iter()
        .position(|d| d == "message CommitSnapshotRequest")
        .unwrap();
    assert!(ours[commit..].contains(&"string parent = 5".to_owned()));
}
