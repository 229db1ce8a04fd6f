//! `Reference`: an image reference `[host[:port]/]path[:tag][@digest]` with docker's rules.
//!
//! The first path component is a registry host when it contains `.` or `:` or is
//! `localhost`; otherwise the registry is `docker.io`, where single names live under
//! `library/`. Without tag and digest the tag is `latest`.

use std::fmt;
use std::str::FromStr;

use estargz::Digest;

/// The registry used when a reference names none.
pub const DOCKER_HUB: &str = "docker.io";
/// Where docker.io's distribution API is actually served.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Errors from parsing an image reference or tag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("image reference {0:?} is empty")]
    Empty(String),
    #[error("image reference {reference:?}: invalid registry host {host:?}")]
    InvalidHost { reference: String, host: String },
    #[error("image reference {reference:?}: invalid repository name {repository:?} (lowercase letters, digits and separators)")]
    InvalidRepository {
        reference: String,
        repository: String,
    },
    #[error("image reference {reference:?}: invalid tag {tag:?}")]
    InvalidTag { reference: String, tag: String },
    #[error("image reference {reference:?}: invalid digest: {source}")]
    InvalidDigest {
        reference: String,
        #[source]
        source: estargz::DigestError,
    },
    #[error("image reference {reference:?}: repository name longer than {MAX_NAME_LEN} bytes")]
    TooLong { reference: String },
}

/// A parsed image reference. `registry` is `docker.io` for Docker Hub images.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with `:port` when one was given.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/alpine`.
    pub repository: String,
    /// Tag; `Some("latest")` when the text named neither tag nor digest.
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// The same repository, pointing at `digest` (the tag is dropped so the digest rules).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository, pointing at `tag` (any digest is dropped).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidTag {
                reference: self.to_string(),
                tag: tag.to_owned(),
            });
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The last path element of a manifest URL: the digest if any, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_owned(),
        }
    }

    /// The host (and port) that serves this registry's API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(ReferenceError::Empty(text.to_owned()));
        }
        let (name_and_tag, digest) = split_digest(text)?;
        let (name, tag) = split_tag(name_and_tag);
        let (registry, repository) = split_registry(name);
        validate_host(text, &registry)?;
        validate_repository(text, &repository)?;
        if let Some(tag) = tag {
            if !is_valid_tag(tag) {
                return Err(ReferenceError::InvalidTag {
                    reference: text.to_owned(),
                    tag: tag.to_owned(),
                });
            }
        }
        let tag = match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            (tag, _) => tag.map(str::to_owned),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

fn split_digest(text: &str) -> Result<(&str, Option<Digest>), ReferenceError> {
    match text.split_once('@') {
        None => Ok((text, None)),
        Some((name, digest)) => {
            let digest = digest
                .parse()
                .map_err(|source| ReferenceError::InvalidDigest {
                    reference: text.to_owned(),
                    source,
                })?;
            Ok((name, Some(digest)))
        }
    }
}

/// Splits `name:tag`; a `:` before the last `/` belongs to a host port, not a tag.
fn split_tag(text: &str) -> (&str, Option<&str>) {
    let last_slash = text.rfind('/').map_or(0, |i| i + 1);
    match text[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            (&text[..colon], Some(&text[colon + 1..]))
        }
        None => (text, None),
    }
}

fn split_registry(name: &str) -> (String, String) {
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if looks_like_host(first) => (normalize_hub(first), rest.to_owned()),
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    (registry, repository)
}

fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn normalize_hub(host: &str) -> String {
    if host == "index.docker.io" {
        DOCKER_HUB.to_owned()
    } else {
        host.to_owned()
    }
}

fn validate_host(reference: &str, host: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::InvalidHost {
        reference: reference.to_owned(),
        host: host.to_owned(),
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    if let Some(port) = port {
        port.parse::<u16>().map_err(|_| invalid())?;
    }
    if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| invalid());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(invalid())
    }
}

fn validate_repository(reference: &str, repository: &str) -> Result<(), ReferenceError> {
    if repository.len() > MAX_NAME_LEN {
        return Err(ReferenceError::TooLong {
            reference: reference.to_owned(),
        });
    }
    if repository.split('/').all(is_valid_path_component) {
        Ok(())
    } else {
        Err(ReferenceError::InvalidRepository {
            reference: reference.to_owned(),
            repository: repository.to_owned(),
        })
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn is_valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match tag.as_bytes().split_first() {
        Some((&first, rest)) => {
            tag.len() <= MAX_TAG_LEN
                && word(first)
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    struct Case {
        name: &'static str,
        input: String,
        registry: &'static str,
        repository: &'static str,
        tag: Option<&'static str>,
        digest: bool,
    }

    fn case(
        name: &'static str,
        input: &str,
        registry: &'static str,
        repository: &'static str,
        tag: Option<&'static str>,
        digest: bool,
    ) -> Case {
        Case {
            name,
            input: input.to_owned(),
            registry,
            repository,
            tag,
            digest,
        }
    }

    #[test]
    fn parses_valid_references() {
        let cases = [
            case(
                "single name",
                "alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                false,
            ),
            case(
                "single name tag",
                "alpine:3.19",
                "docker.io",
                "library/alpine",
                Some("3.19"),
                false,
            ),
            case(
                "hub user repo",
                "user/app",
                "docker.io",
                "user/app",
                Some("latest"),
                false,
            ),
            case(
                "explicit hub",
                "docker.io/alpine",
                "docker.io",
                "library/alpine",
                Some("latest"),
                false,
            ),
            case(
                "index alias",
                "index.docker.io/user/app:v1",
                "docker.io",
                "user/app",
                Some("v1"),
                false,
            ),
            case(
                "host with dot",
                "ghcr.io/org/app:v1",
                "ghcr.io",
                "org/app",
                Some("v1"),
                false,
            ),
            case(
                "host with port",
                "127.0.0.1:5000/app",
                "127.0.0.1:5000",
                "app",
                Some("latest"),
                false,
            ),
            case(
                "host port tag",
                "registry:5000/a/b:v2",
                "registry:5000",
                "a/b",
                Some("v2"),
                false,
            ),
            case(
                "localhost",
                "localhost/app",
                "localhost",
                "app",
                Some("latest"),
                false,
            ),
            case(
                "digest only",
                &format!("ghcr.io/app@{D}"),
                "ghcr.io",
                "app",
                None,
                true,
            ),
            case(
                "tag and digest",
                &format!("ghcr.io/app:v1@{D}"),
                "ghcr.io",
                "app",
                Some("v1"),
                true,
            ),
            case(
                "port and digest",
                &format!("localhost:5000/x/y@{D}"),
                "localhost:5000",
                "x/y",
                None,
                true,
            ),
            case(
                "separators",
                "a.b/x__y/z-w--v.u_t:T_1.-a",
                "a.b",
                "x__y/z-w--v.u_t",
                Some("T_1.-a"),
                false,
            ),
            case(
                "first component not host",
                "user_1/app",
                "docker.io",
                "user_1/app",
                Some("latest"),
                false,
            ),
        ];
        for c in cases {
            let r: Reference = c
                .input
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(r.registry, c.registry, "{}", c.name);
            assert_eq!(r.repository, c.repository, "{}", c.name);
            assert_eq!(r.tag.as_deref(), c.tag, "{}", c.name);
            assert_eq!(r.digest.is_some(), c.digest, "{}", c.name);
            let again: Reference = r.to_string().parse().unwrap();
            assert_eq!(again, r, "{}: display round trip", c.name);
        }
    }

    #[test]
    fn rejects_invalid_references() {
        let long = format!("x.io/{}", "a".repeat(256));
        let cases: [(&str, &str); 14] = [
            ("empty", ""),
            ("uppercase repo", "ghcr.io/Org/app"),
            ("uppercase single", "Alpine"),
            ("empty tag", "alpine:"),
            ("bad tag char", "alpine:v/1"),
            ("tag starts with dot", "alpine:.v1"),
            ("bad digest", "alpine@sha256:abc"),
            ("unsupported digest algorithm", "alpine@md5:0123"),
            ("bad port", "host:99999/app"),
            ("empty component", "ghcr.io//app"),
            ("trailing separator", "ghcr.io/app-"),
            ("host dash", "-bad.io/app"),
            ("bad ipv6", "[::zz]:5000/app"),
            ("too long", &long),
        ];
        for (name, input) in cases {
            assert!(
                input.parse::<Reference>().is_err(),
                "{name}: {input:?} accepted"
            );
        }
    }

    #[test]
    fn display_is_canonical() {
        let r: Reference = "alpine".parse().unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.manifest_reference(), "latest");
    }

    #[test]
    fn with_digest_and_with_tag_replace_each_other() {
        let r: Reference = "localhost:5000/app:v1".parse().unwrap();
        let d: Digest = D.parse().unwrap();
        let by_digest = r.with_digest(d);
        assert_eq!(by_digest.to_string(), format!("localhost:5000/app@{D}"));
        assert_eq!(by_digest.manifest_reference(), D);
        let by_tag = by_digest.with_tag("v2").unwrap();
        assert_eq!(by_tag.to_string(), "localhost:5000/app:v2");
        assert!(r.with_tag("bad/tag").is_err());
    }
}
