//! `--platform` filters: parse `os/arch[/variant]` and match index entries the way
//! containerd does (normalized architecture names and default variants, exact match).

use std::fmt;
use std::str::FromStr;

use crate::oci::Platform;

/// Errors from parsing a platform filter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error(
        "platform {0:?} is not of the form os/arch[/variant] (e.g. linux/amd64, linux/arm/v7)"
    )]
    Malformed(String),
}

/// A normalized `os/arch[/variant]` triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    os: String,
    arch: String,
    variant: String,
}

impl PlatformSpec {
    /// Normalizes the parts (`x86_64` -> `amd64`, `aarch64` -> `arm64`, arm's default `v7`).
    pub fn new(os: &str, arch: &str, variant: &str) -> Self {
        let os = os.to_ascii_lowercase();
        let (arch, variant) = normalize_arch(&arch.to_ascii_lowercase(), variant);
        Self { os, arch, variant }
    }

    /// Whether an index entry's platform is this one.
    pub fn matches(&self, platform: &Platform) -> bool {
        let variant = platform.variant.as_deref().unwrap_or("");
        *self == PlatformSpec::new(&platform.os, &platform.architecture, variant)
    }
}

fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let (arch, variant) = match (arch, variant) {
        ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("i386" | "i686", v) => ("386", v),
        ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64", ""),
        ("aarch64", v) => ("arm64", v),
        ("armhf", _) => ("arm", "v7"),
        ("armel", _) => ("arm", "v6"),
        ("arm", "" | "7") => ("arm", "v7"),
        ("arm", v @ ("5" | "6" | "8")) => return ("arm".to_owned(), format!("v{v}")),
        (a, v) => (a, v),
    };
    (arch.to_owned(), variant.to_owned())
}

impl FromStr for PlatformSpec {
    type Err = PlatformError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid_part = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid_part) {
            return Err(PlatformError::Malformed(text.to_owned()));
        }
        Ok(Self::new(
            parts[0],
            parts[1],
            parts.get(2).copied().unwrap_or(""),
        ))
    }
}

impl fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// The selected platforms; empty means all.
#[derive(Debug, Clone, Default)]
pub struct PlatformFilter(Vec<PlatformSpec>);

impl PlatformFilter {
    pub fn new(specs: Vec<PlatformSpec>) -> Self {
        Self(specs)
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries without a platform are always kept (containerd does the same).
    pub fn keeps(&self, platform: Option<&Platform>) -> bool {
        match platform {
            None => true,
            Some(platform) => self.is_all() || self.0.iter().any(|spec| spec.matches(platform)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: os.into(),
            variant: variant.map(Into::into),
            os_version: None,
            os_features: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn matching_table() {
        let cases = [
            (
                "same",
                "linux/amd64",
                platform("linux", "amd64", None),
                true,
            ),
            (
                "other arch",
                "linux/amd64",
                platform("linux", "arm64", None),
                false,
            ),
            (
                "other os",
                "linux/amd64",
                platform("windows", "amd64", None),
                false,
            ),
            (
                "arm64 v8 default",
                "linux/arm64",
                platform("linux", "arm64", Some("v8")),
                true,
            ),
            (
                "aarch64 alias",
                "linux/aarch64",
                platform("linux", "arm64", None),
                true,
            ),
            (
                "arm default v7",
                "linux/arm",
                platform("linux", "arm", Some("v7")),
                true,
            ),
            (
                "arm v6 is not v7",
                "linux/arm/v7",
                platform("linux", "arm", Some("v6")),
                false,
            ),
            (
                "x86_64 alias",
                "linux/x86_64",
                platform("linux", "amd64", None),
                true,
            ),
            (
                "variant must match",
                "linux/amd64/v3",
                platform("linux", "amd64", None),
                false,
            ),
            (
                "case insensitive",
                "Linux/AMD64",
                platform("linux", "amd64", None),
                true,
            ),
        ];
        for (name, spec, candidate, expected) in cases {
            let spec: PlatformSpec = spec.parse().unwrap();
            assert_eq!(spec.matches(&candidate), expected, "{name}");
        }
    }

    #[test]
    fn parse_rejects_table() {
        for (name, text) in [
            ("os only", "linux"),
            ("too many parts", "linux/arm/v7/x"),
            ("empty part", "linux//v7"),
            ("spaces", "linux/amd 64"),
        ] {
            assert!(text.parse::<PlatformSpec>().is_err(), "{name}");
        }
    }

    #[test]
    fn filter_keeps_entries_without_platform() {
        let filter = PlatformFilter::new(vec!["linux/amd64".parse().unwrap()]);
        assert!(filter.keeps(None));
        assert!(filter.keeps(Some(&platform("linux", "amd64", None))));
        assert!(!filter.keeps(Some(&platform("linux", "s390x", None))));
        assert!(PlatformFilter::default().keeps(Some(&platform("linux", "s390x", None))));
    }
}
