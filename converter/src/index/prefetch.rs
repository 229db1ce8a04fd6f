//! Learned prefetch for indexed layers: the files an access record lists for a layer
//! become the spans holding their contents, in the order they were first read, as a SOCI
//! prefetch artifact.

use std::collections::HashMap;

use estargz::soci::prefetch::PrefetchArtifact;
use estargz::soci::{Zinfo, ZinfoError, Ztoc};
use estargz::EntryType;

/// Paths as the record and the tar may spell them (`./a/b`, `/a/b`, `a/b/`) compared as one.
fn normalize(path: &str) -> &str {
    let path = path.trim_start_matches("./").trim_start_matches('/');
    path.trim_end_matches('/')
}

/// The prefetch artifact for `paths` (record order) of the layer `ztoc` indexes; `None`
/// when none of them has content in the layer. Also returns how many paths matched.
pub fn artifact_for(
    ztoc: &Ztoc,
    paths: &[String],
) -> Result<Option<(PrefetchArtifact, usize)>, ZinfoError> {
    if paths.is_empty() {
        return Ok(None);
    }
    let contents: HashMap<&str, std::ops::Range<u64>> = ztoc
        .files
        .iter()
        .filter(|f| f.entry_type == EntryType::Reg && f.uncompressed_size > 0)
        .map(|f| {
            let start = f.uncompressed_offset;
            let end = start.saturating_add(f.uncompressed_size);
            (normalize(&f.name), start..end)
        })
        .collect();
    let reads: Vec<_> = paths
        .iter()
        .filter_map(|p| contents.get(normalize(p)).cloned())
        .collect();
    if reads.is_empty() {
        return Ok(None);
    }
    let matched = reads.len();
    let zinfo = Zinfo::new(ztoc)?;
    let artifact = PrefetchArtifact::from_reads(&zinfo, reads);
    Ok((!artifact.prefetch_spans.is_empty()).then_some((artifact, matched)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_compare_however_spelled() {
        assert_eq!(normalize("./etc/hosts"), "etc/hosts");
        assert_eq!(normalize("/etc/hosts"), "etc/hosts");
        assert_eq!(normalize("etc/"), "etc");
    }
}
