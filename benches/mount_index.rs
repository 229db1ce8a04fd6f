//! The in-memory metadata a lazy mount builds from a layer's TOC, for a 100k-entry
//! layer: the `estargz::Index` and the mounted `LayerView` over it. Both are built once
//! per mount, so their time adds to every lazy Prepare. The layer holds 100 directories
//! of 1,000 files; in the view case each directory also holds a whiteout, so every
//! listing is rewritten (the costly path).
//!
//! Run: `cargo bench --bench mount_index`.

use criterion::{criterion_group, criterion_main, Criterion};
use estargz::{EntryType, Index, Toc, TocEntry};
use estargz_snapshotter::lazy::fs::LayerView;

/// Largest chunk the index accepts in these TOCs; the files here are one chunk each.
const MAX_CHUNK: u64 = 10_000_000;

fn entry(name: String, entry_type: EntryType, offset: u64) -> TocEntry {
    TocEntry {
        name,
        entry_type,
        size: if entry_type == EntryType::Reg { 10 } else { 0 },
        offset,
        ..TocEntry::default()
    }
}

/// 100 directories of 1,000 files, plus a whiteout in each when `whiteouts`.
fn toc_of_100k(whiteouts: bool) -> Toc {
    let mut entries = Vec::with_capacity(101_100);
    let mut offset = 0;
    for d in 0..100 {
        entries.push(entry(format!("dir{d}"), EntryType::Dir, 0));
        if whiteouts {
            entries.push(entry(format!("dir{d}/.wh.gone"), EntryType::Reg, 0));
        }
        for f in 0..1000 {
            offset += 10;
            entries.push(entry(format!("dir{d}/file{f}"), EntryType::Reg, offset));
        }
    }
    Toc {
        version: 1,
        entries,
    }
}

fn mount_metadata(c: &mut Criterion) {
    let mut group = c.benchmark_group("mount_index_100k_entries");
    group.sample_size(20);
    let toc = toc_of_100k(false);
    group.bench_function("index_build", |b| {
        b.iter(|| Index::build(std::hint::black_box(&toc), MAX_CHUNK).expect("index"))
    });
    let index = Index::build(&toc_of_100k(true), MAX_CHUNK).expect("index");
    group.bench_function("layer_view_build_with_whiteouts", |b| {
        b.iter(|| LayerView::build(std::hint::black_box(&index)))
    });
    group.finish();
}

criterion_group!(benches, mount_metadata);
criterion_main!(benches);
