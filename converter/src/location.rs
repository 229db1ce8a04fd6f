//! Where an image is read from or written to: a registry reference or an OCI layout directory.
//!
//! Syntax: `oci:PATH[:TAG]` or `oci:PATH@sha256:<hex>` for a layout directory; anything
//! else is a registry reference (`host[:port]/repo[:tag][@digest]`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use estargz::Digest;
use registry::{Reference, ReferenceError};

/// Prefix that selects an OCI image layout directory.
pub const LAYOUT_PREFIX: &str = "oci:";

/// Errors from parsing a location argument.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("{0:?}: empty layout path (expected oci:PATH[:TAG])")]
    EmptyPath(String),
    #[error("{text:?}: invalid layout tag {tag:?} (letters, digits, '_', '.', '-', at most 128)")]
    InvalidTag { text: String, tag: String },
    #[error("{text:?}: invalid digest: {source}")]
    InvalidDigest {
        text: String,
        source: estargz::DigestError,
    },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// How a manifest is picked inside a layout's `index.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSelector {
    /// The entry annotated with this `org.opencontainers.image.ref.name`.
    Tag(String),
    /// The entry with this digest.
    Digest(Digest),
    /// No tag given: the only entry (reading); writing needs a tag.
    Only,
}

/// A parsed SRC or DST argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry(Reference),
    Layout {
        dir: PathBuf,
        selector: LayoutSelector,
    },
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.strip_prefix(LAYOUT_PREFIX) {
            Some(rest) => parse_layout(text, rest),
            None => Ok(Location::Registry(text.parse()?)),
        }
    }
}

fn parse_layout(text: &str, rest: &str) -> Result<Location, LocationError> {
    let (path, selector) = if let Some((path, digest)) = rest.rsplit_once('@') {
        let digest = digest
            .parse()
            .map_err(|source| LocationError::InvalidDigest {
                text: text.to_owned(),
                source,
            })?;
        (path, LayoutSelector::Digest(digest))
    } else if let Some((path, tag)) = rest.rsplit_once(':') {
        if !is_valid_tag(tag) {
            return Err(LocationError::InvalidTag {
                text: text.to_owned(),
                tag: tag.to_owned(),
            });
        }
        (path, LayoutSelector::Tag(tag.to_owned()))
    } else {
        (rest, LayoutSelector::Only)
    };
    if path.is_empty() {
        return Err(LocationError::EmptyPath(text.to_owned()));
    }
    Ok(Location::Layout {
        dir: PathBuf::from(path),
        selector,
    })
}

/// Same rule as a registry tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    first_ok
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(reference) => write!(f, "{reference}"),
            Location::Layout { dir, selector } => {
                write!(f, "{LAYOUT_PREFIX}{}", dir.display())?;
                match selector {
                    LayoutSelector::Tag(tag) => write!(f, ":{tag}"),
                    LayoutSelector::Digest(digest) => write!(f, "@{digest}"),
                    LayoutSelector::Only => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dir: &str, selector: LayoutSelector) -> Location {
        Location::Layout {
            dir: PathBuf::from(dir),
            selector,
        }
    }

    #[test]
    fn parses_table() {
        let digest = Digest::sha256(b"x");
        let digest_ref = format!("registry.example.com/ns/app@{digest}");
        let layout_digest = format!("oci:/tmp/img@{digest}");
        let cases: Vec<(&str, &str, Location)> = vec![
            (
                "registry with port and tag",
                "127.0.0.1:5000/app:v1",
                Location::Registry("127.0.0.1:5000/app:v1".parse().unwrap()),
            ),
            (
                "registry by digest",
                &digest_ref,
                Location::Registry(digest_ref.parse().unwrap()),
            ),
            (
                "relative layout with tag",
                "oci:./dir:tag",
                layout("./dir", LayoutSelector::Tag("tag".into())),
            ),
            (
                "absolute layout without tag",
                "oci:/srv/images/app",
                layout("/srv/images/app", LayoutSelector::Only),
            ),
            (
                "layout by digest",
                &layout_digest,
                layout("/tmp/img", LayoutSelector::Digest(digest)),
            ),
            (
                "layout path with colon keeps last part as tag",
                "oci:a:b:v2.1-rc",
                layout("a:b", LayoutSelector::Tag("v2.1-rc".into())),
            ),
        ];
        for (name, text, expected) in cases {
            let parsed: Location = text.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(parsed, expected, "{name}");
        }
    }

    #[test]
    fn rejects_table() {
        let cases = [
            ("empty layout path", "oci::tag"),
            ("bad layout tag", "oci:./dir:bad/tag"),
            ("bad layout digest", "oci:./dir@sha256:abc"),
            ("uppercase repository", "127.0.0.1:5000/App:v1"),
            ("empty", ""),
        ];
        for (name, text) in cases {
            assert!(text.parse::<Location>().is_err(), "{name} accepted");
        }
    }

    #[test]
    fn displays_as_parsed() {
        for text in ["oci:./dir:tag", "oci:/x", "127.0.0.1:5000/app:v1"] {
            let parsed: Location = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
    }
}
