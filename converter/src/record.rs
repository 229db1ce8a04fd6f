//! Prioritized file lists: a plain list for every layer (`--prioritized-files`) and
//! per-layer records (JSON lines of path, manifest digest, layer index): ctr-remote's
//! (`--record-in`) and estargz-snapshotter's access records (`--record-from`, a file or
//! the snapshotter's record directory of `<manifest>.jsonl` files).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use estargz::Digest;
use serde::Deserialize;

/// Errors from reading prioritized file lists.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a ctr-remote record line: {source}")]
    Parse {
        path: PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// One line of a ctr-remote record file.
#[derive(Debug, Deserialize)]
struct RecordLine {
    path: String,
    #[serde(rename = "manifestDigest")]
    manifest_digest: Digest,
    #[serde(rename = "layerIndex")]
    layer_index: usize,
}

/// Which files each layer puts first.
#[derive(Debug, Default, Clone)]
pub struct Prioritized {
    /// Applied to every layer, after any recorded paths.
    common: Vec<String>,
    /// Recorded paths by source manifest digest and layer index, in record order.
    recorded: HashMap<(Digest, usize), Vec<String>>,
}

impl Prioritized {
    /// Reads the optional list and the record files (in order: earlier files' paths come
    /// first for a layer named in several).
    pub fn load(list: Option<&Path>, records: &[PathBuf]) -> Result<Self, RecordError> {
        let common = match list {
            Some(path) => parse_list(&read(path)?),
            None => Vec::new(),
        };
        let mut recorded: HashMap<(Digest, usize), Vec<String>> = HashMap::new();
        for path in records {
            for (key, paths) in parse_record(path, &read(path)?)? {
                recorded.entry(key).or_default().extend(paths);
            }
        }
        let recorded = recorded
            .into_iter()
            .map(|(key, paths)| (key, dedup(paths.into_iter())))
            .collect();
        Ok(Self { common, recorded })
    }

    /// The ordered, de-duplicated paths for layer `layer_index` of `manifest`.
    pub fn for_layer(&self, manifest: &Digest, layer_index: usize) -> Vec<String> {
        let recorded = self.recorded.get(&(*manifest, layer_index));
        dedup(recorded.into_iter().flatten().chain(&self.common).cloned())
    }

    /// Manifest digests named by the record file, to warn about ones the image lacks.
    pub fn recorded_manifests(&self) -> HashSet<Digest> {
        self.recorded.keys().map(|(digest, _)| *digest).collect()
    }
}

fn read(path: &Path) -> Result<String, RecordError> {
    std::fs::read_to_string(path).map_err(|source| RecordError::Read {
        path: path.to_owned(),
        source,
    })
}

/// One path per line; blank lines and `#` comments are skipped.
pub fn parse_list(text: &str) -> Vec<String> {
    let paths = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(normalize_path);
    dedup(paths)
}

fn parse_record(
    path: &Path,
    text: &str,
) -> Result<HashMap<(Digest, usize), Vec<String>>, RecordError> {
    let mut recorded: HashMap<(Digest, usize), Vec<String>> = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: RecordLine =
            serde_json::from_str(line).map_err(|source| RecordError::Parse {
                path: path.to_owned(),
                line: number + 1,
                source,
            })?;
        recorded
            .entry((entry.manifest_digest, entry.layer_index))
            .or_default()
            .push(normalize_path(&entry.path));
    }
    Ok(recorded
        .into_iter()
        .map(|(key, paths)| (key, dedup(paths.into_iter())))
        .collect())
}

/// The record files at `path`: the file itself, or the `*.jsonl` files of a directory
/// (the snapshotter's record directory), sorted by name.
pub fn record_files(path: &Path) -> Result<Vec<PathBuf>, RecordError> {
    let read_error = |source| RecordError::Read {
        path: path.to_owned(),
        source,
    };
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path();
        if file.extension().is_some_and(|e| e == "jsonl") && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Paths as tar entries name them: no leading `/` or `./`.
fn normalize_path(path: &str) -> String {
    let mut rest = path.trim();
    loop {
        if let Some(stripped) = rest.strip_prefix("./") {
            rest = stripped;
        } else if let Some(stripped) = rest.strip_prefix('/') {
            rest = stripped;
        } else {
            return rest.to_owned();
        }
    }
}

fn dedup(paths: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    paths
        .filter(|path| !path.is_empty() && seen.insert(path.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parsing_table() {
        let cases: [(&str, &str, &[&str]); 4] = [
            ("plain", "bin/sh\netc/passwd\n", &["bin/sh", "etc/passwd"]),
            (
                "comments and blanks",
                "# boot files\n\n  /bin/sh  \n#x\n./lib/ld.so\n",
                &["bin/sh", "lib/ld.so"],
            ),
            ("duplicates keep first", "a\nb\n/a\n", &["a", "b"]),
            ("empty", "\n\n", &[]),
        ];
        for (name, text, expected) in cases {
            assert_eq!(parse_list(text), expected, "{name}");
        }
    }

    #[test]
    fn record_lines_group_by_manifest_and_layer() {
        let m1 = Digest::sha256(b"m1");
        let m2 = Digest::sha256(b"m2");
        let text = format!(
            "{{\"path\":\"/bin/sh\",\"manifestDigest\":\"{m1}\",\"layerIndex\":0}}\n\
             {{\"path\":\"etc/hosts\",\"manifestDigest\":\"{m1}\",\"layerIndex\":1}}\n\
             \n\
             {{\"path\":\"lib/a.so\",\"manifestDigest\":\"{m1}\",\"layerIndex\":0}}\n\
             {{\"path\":\"bin/sh\",\"manifestDigest\":\"{m1}\",\"layerIndex\":0}}\n\
             {{\"path\":\"x\",\"manifestDigest\":\"{m2}\",\"layerIndex\":0}}\n"
        );
        let recorded = parse_record(Path::new("rec"), &text).unwrap();
        let prioritized = Prioritized {
            common: vec!["etc/passwd".into(), "bin/sh".into()],
            recorded,
        };
        assert_eq!(
            prioritized.for_layer(&m1, 0),
            ["bin/sh", "lib/a.so", "etc/passwd"]
        );
        assert_eq!(
            prioritized.for_layer(&m1, 1),
            ["etc/hosts", "etc/passwd", "bin/sh"]
        );
        assert_eq!(prioritized.for_layer(&m2, 3), ["etc/passwd", "bin/sh"]);
        assert_eq!(prioritized.recorded_manifests().len(), 2);
    }

    #[test]
    fn records_load_from_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let m = Digest::sha256(b"m");
        let line = |path: &str| {
            format!("{{\"path\":\"{path}\",\"manifestDigest\":\"{m}\",\"layerIndex\":0}}\n")
        };
        std::fs::write(dir.path().join("a.jsonl"), line("bin/sh")).unwrap();
        std::fs::write(
            dir.path().join("b.jsonl"),
            line("etc/hosts") + &line("bin/sh"),
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a record").unwrap();
        let files = record_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        let prioritized = Prioritized::load(None, &files).unwrap();
        assert_eq!(prioritized.for_layer(&m, 0), ["bin/sh", "etc/hosts"]);
        let single = record_files(&dir.path().join("b.jsonl")).unwrap();
        assert_eq!(
            Prioritized::load(None, &single).unwrap().for_layer(&m, 0),
            ["etc/hosts", "bin/sh"]
        );
    }

    #[test]
    fn bad_record_line_names_the_line() {
        let err = parse_record(Path::new("rec.json"), "{\"path\":\"a\"}\n").unwrap_err();
        assert!(err.to_string().starts_with("rec.json:1:"), "{err}");
    }
}
