//! What loading the config file says about single keys (a reference key read as one of
//! ours, one with no effect here, one nobody knows) and where each key sits (its line),
//! so that every such notice names the key and points at it.

use std::fmt;

use toml_edit::{ImDocument, Item, Value};

/// One key the loader has something to say about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNotice {
    /// The key's path in the file.
    pub path: Vec<Segment>,
    /// Its 1-based line, when known.
    pub line: Option<usize>,
    pub kind: NoticeKind,
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeKind {
    /// A key of the Go reference read as our key (`to`, e.g. `prefetch.enable = false`).
    Mapped { to: String },
    /// A key of the Go reference that does not change anything here, and why.
    NoEffect { why: &'static str },
    /// A key of the Go reference whose meaning our own key `ours`, also set, overrides.
    Overridden { ours: String },
    /// A key neither this daemon nor the Go reference knows.
    Unknown,
}

impl KeyNotice {
    pub fn new(path: Vec<Segment>, kind: NoticeKind) -> KeyNotice {
        KeyNotice {
            path,
            line: None,
            kind,
        }
    }

    /// Whether this deserves a warning (the key does not do what its writer meant), rather
    /// than an informational line.
    pub fn is_warning(&self) -> bool {
        !matches!(self.kind, NoticeKind::Mapped { .. })
    }
}

impl fmt::Display for KeyNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key {}", render(&self.path))?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        match &self.kind {
            NoticeKind::Mapped { to } => write!(f, ": the Go reference's key, read as {to}"),
            NoticeKind::NoEffect { why } => write!(f, ": accepted, no effect here: {why}"),
            NoticeKind::Overridden { ours } => {
                write!(f, ": ignored, {ours} is also set and wins")
            }
            NoticeKind::Unknown => write!(f, ": unknown key, ignored"),
        }
    }
}

/// One step of a key path: a table key, or an index into an array (of tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// Renders a path as written in TOML: `blob.chunk_size`, `resolver.host."a:5000".mirrors[0]`.
pub fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(key);
                } else {
                    out.push_str(&format!("{key:?}"));
                }
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// The 1-based line of the last key of `path` in `doc`; None when the path is not in it.
pub fn line_of(doc: &ImDocument<&str>, path: &[Segment]) -> Option<usize> {
    let offset = offset_of(doc.as_item(), path, None)?;
    let before = doc.raw().get(..offset)?;
    Some(before.matches('\n').count() + 1)
}

/// Byte offset of the deepest key (or array element) of `path` that has a position.
fn offset_of(item: &Item, path: &[Segment], found: Option<usize>) -> Option<usize> {
    let Some((first, rest)) = path.split_first() else {
        return found;
    };
    match first {
        Segment::Key(name) => {
            let (key, child) = item.as_table_like()?.get_key_value(name)?;
            let here = key.span().map(|s| s.start).or(found);
            offset_of(child, rest, here)
        }
        Segment::Index(i) => match item {
            Item::ArrayOfTables(tables) => {
                let table = tables.get(*i)?;
                let here = table.span().map(|s| s.start).or(found);
                offset_of(&Item::Table(table.clone()), rest, here)
            }
            Item::Value(Value::Array(values)) => {
                let value = values.get(*i)?;
                let here = value.span().map(|s| s.start).or(found);
                offset_of(&Item::Value(value.clone()), rest, here)
            }
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Segment {
        Segment::Key(s.to_owned())
    }

    #[test]
    fn lines_of_keys() {
        let text = "a = 1\n\n[blob]\nchunk_size = 2\nx = { y = 3 }\n\
                    [[resolver.host.\"r:5000\".mirrors]]\nhost = \"m\"\n\
                    [[resolver.host.\"r:5000\".mirrors]]\nhost = \"n\"\nbad = 1\n";
        let doc = ImDocument::parse(text).unwrap();
        let mirror = |i, k: &str| {
            vec![
                key("resolver"),
                key("host"),
                key("r:5000"),
                key("mirrors"),
                Segment::Index(i),
                key(k),
            ]
        };
        let cases: &[(&str, Vec<Segment>, Option<usize>)] = &[
            ("top level", vec![key("a")], Some(1)),
            ("in a table", vec![key("blob"), key("chunk_size")], Some(4)),
            (
                "inline table",
                vec![key("blob"), key("x"), key("y")],
                Some(5),
            ),
            ("first mirror", mirror(0, "host"), Some(7)),
            ("second mirror", mirror(1, "bad"), Some(10)),
            ("absent", vec![key("nope")], None),
        ];
        for (name, path, want) in cases {
            assert_eq!(line_of(&doc, path), *want, "{name}");
        }
    }

    #[test]
    fn rendering() {
        let path = [
            key("resolver"),
            key("host"),
            key("r:5000"),
            key("mirrors"),
            Segment::Index(1),
            key("header"),
        ];
        assert_eq!(render(&path), "resolver.host.\"r:5000\".mirrors[1].header");
        assert_eq!(render(&[key("blob"), key("chunk_size")]), "blob.chunk_size");
    }
}
