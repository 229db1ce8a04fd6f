//! Learned prefetch for indexed layers: the files an access record lists for a layer
//! become the spans holding their contents, in the order they were first read, as a SOCI
//! prefetch artifact, with their exact compressed ranges; and where the layer's spans should start so that those reads need
//! little before them.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use estargz::soci::learned::LearnedError;
use estargz::soci::prefetch::PrefetchArtifact;
use estargz::soci::{BuiltIndex, LearnedRanges, Zinfo, ZinfoError, Ztoc};
use estargz::EntryType;

/// Paths as the record and the tar may spell them (`./a/b`, `/a/b`, `a/b/`) compared as one.
fn normalize(path: &str) -> &str {
    let path = path.trim_start_matches("./").trim_start_matches('/');
    path.trim_end_matches('/')
}

/// Recorded files closer together than this (uncompressed) are read through: a
/// checkpoint between them (a 32 KiB window in the zTOC) would save less than it costs.
const READ_THROUGH: u64 = 256 << 10;

/// The uncompressed offsets where runs of the recorded `paths` start in the layer `ztoc`
/// indexes (files in tar order, a new run after a gap over [`READ_THROUGH`]): a span
/// starting just before each saves fetching the span's head up to it.
pub fn cut_hints(ztoc: &Ztoc, paths: &[String]) -> Vec<u64> {
    let wanted: std::collections::HashSet<&str> = paths.iter().map(|p| normalize(p)).collect();
    let mut reads: Vec<(u64, u64)> = ztoc
        .files
        .iter()
        .filter(|f| f.entry_type == EntryType::Reg && f.uncompressed_size > 0)
        .filter(|f| wanted.contains(normalize(&f.name)))
        .map(|f| {
            let start = f.uncompressed_offset;
            (start, start.saturating_add(f.uncompressed_size))
        })
        .collect();
    reads.sort_unstable();
    let mut hints = Vec::new();
    let mut end = None;
    for (start, stop) in reads {
        if end.is_none_or(|e: u64| start > e.saturating_add(READ_THROUGH)) {
            hints.push(start);
        }
        end = Some(end.map_or(stop, |e: u64| e.max(stop)));
    }
    hints
}

/// The prefetch artifact for `paths` (record order) of the layer `ztoc` indexes; `None`
/// when none of them has content in the layer. Also returns how many paths matched.
pub fn artifact_for(
    ztoc: &Ztoc,
    paths: &[String],
) -> Result<Option<(PrefetchArtifact, usize)>, ZinfoError> {
    let reads = reads_of(ztoc, paths);
    if reads.is_empty() {
        return Ok(None);
    }
    let matched = reads.len();
    let zinfo = Zinfo::new(ztoc)?;
    let artifact = PrefetchArtifact::from_reads(&zinfo, reads);
    Ok((!artifact.prefetch_spans.is_empty()).then_some((artifact, matched)))
}

/// The learned ranges of `paths` in the layer `built` indexes ([`estargz::soci::learned`]):
/// the artifact's ranges, each with its exact compressed bytes read from `blob`. `None`
/// when none of the paths has content in the layer.
pub fn learned_for(
    built: &BuiltIndex,
    paths: &[String],
    blob: &std::path::Path,
) -> Result<Option<LearnedRanges>, LearnedError> {
    let Ok(Some((artifact, _))) = artifact_for(&built.ztoc, paths) else {
        return Ok(None);
    };
    let Ok(zinfo) = Zinfo::new(&built.ztoc) else {
        return Ok(None);
    };
    let mut file = std::fs::File::open(blob)?;
    let read_at = |range: Range<u64>| {
        let mut bytes = vec![0; usize::try_from(range.end - range.start).unwrap_or(0)];
        file.seek(SeekFrom::Start(range.start))?;
        file.read_exact(&mut bytes)?;
        Ok(bytes)
    };
    let reads = artifact.ranges_within(zinfo.uncompressed_size());
    LearnedRanges::build(&zinfo, &built.blocks, &built.windows, &reads, read_at).map(Some)
}

/// The content ranges of `paths` (record order) in the layer `ztoc` indexes.
fn reads_of(ztoc: &Ztoc, paths: &[String]) -> Vec<Range<u64>> {
    if paths.is_empty() {
        return Vec::new();
    }
    let contents: HashMap<&str, Range<u64>> = ztoc
        .files
        .iter()
        .filter(|f| f.entry_type == EntryType::Reg && f.uncompressed_size > 0)
        .map(|f| {
            let start = f.uncompressed_offset;
            let end = start.saturating_add(f.uncompressed_size);
            (normalize(&f.name), start..end)
        })
        .collect();
    paths
        .iter()
        .filter_map(|p| contents.get(normalize(p)).cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_hints_start_each_run_of_recorded_files() {
        let mut t = estargz::testutil::TarBuilder::new();
        t.file("a", &[1; 10]);
        t.file("b", &vec![2; 300_000]);
        t.file("c", &[3; 10]);
        t.file("d", &[4; 10]);
        let tar = t.finish();
        let ztoc = estargz::soci::build_ztoc(
            &tar[..],
            estargz::soci::Compression::Uncompressed,
            &estargz::soci::BuildOptions::default(),
        )
        .unwrap();
        let at = |name: &str| {
            ztoc.files
                .iter()
                .find(|f| f.name == name)
                .unwrap()
                .uncompressed_offset
        };
        let paths: Vec<String> = ["./d", "/a", "c", "missing"].map(String::from).into();
        assert_eq!(
            cut_hints(&ztoc, &paths),
            vec![at("a"), at("c")],
            "c starts a run after b's 300 KB, d is read through from c"
        );
        assert!(cut_hints(&ztoc, &[]).is_empty());
    }

    #[test]
    fn paths_compare_however_spelled() {
        assert_eq!(normalize("./etc/hosts"), "etc/hosts");
        assert_eq!(normalize("/etc/hosts"), "etc/hosts");
        assert_eq!(normalize("etc/"), "etc");
    }
}
