//! Entry names as paths: the one lexical normalisation every TOC name goes through
//! (no `./`, leading `/`, trailing `/`, empty or `.` components; `..` resolved), shared by
//! the TOC reader (to recognise its own tar entry) and the index (to build the tree).

/// Normalises a path lexically; `None` when `..` would leave the root.
pub(crate) fn clean(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// Normalises an entry name: like `clean`, but a name escaping the root is returned
/// unchanged (it is rejected later, where the index is built).
pub fn normalize_name(name: &str) -> String {
    clean(name).unwrap_or_else(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, want) in [
            ("./a/b/", Some("a/b")),
            ("/a//./b", Some("a/b")),
            ("a/../b", Some("b")),
            ("", Some("")),
            ("../a", None),
            ("a/../../b", None),
        ] {
            assert_eq!(clean(name).as_deref(), want, "{name:?}");
        }
        assert_eq!(normalize_name("../a"), "../a");
        assert_eq!(normalize_name("./x/"), "x");
    }
}
