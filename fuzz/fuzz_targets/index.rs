//! `toc::parse_json` then `Index::build` with an arbitrary TOC offset (the first 8 input
//! bytes, little endian), then every query on every entry, checking the index agrees
//! with itself; and `Index::parse` (the daemon's streaming path) must agree with both.
#![no_main]

use estargz::{toc, EntryType, Index};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 20 {
        return;
    }
    let Some((offset, json)) = data.split_at_checked(8) else {
        return;
    };
    let toc_offset = u64::from_le_bytes(offset.try_into().expect("8 bytes"));
    let streamed = Index::parse(json, toc_offset);
    let Ok((toc, digest)) = toc::parse_json(json) else {
        assert!(streamed.is_err(), "streaming parse accepted a bad toc");
        return;
    };
    let Ok(index) = Index::build(&toc, toc_offset) else {
        assert!(streamed.is_err(), "streaming parse accepted a bad index");
        return;
    };
    let (streamed, streamed_digest) = streamed.expect("streaming parse of a good toc");
    assert_eq!(streamed_digest, digest);
    assert_eq!(streamed.len(), index.len());
    assert!(streamed.iter().zip(index.iter()).all(|(a, b)| a == b));
    check(&index, toc_offset);
});

fn check(index: &Index, toc_offset: u64) {
    assert!(!index.is_empty());
    assert!(index.entry(Index::ROOT).is_some_and(|e| e.is_dir()));
    assert!(index.entry(index.len() as u32).is_none());
    for (id, entry) in index.iter() {
        assert_eq!(index.entry(id), Some(entry));
        assert!(index.lookup(&entry.path).is_some(), "{:?}", entry.path);
        assert!(index.entry(entry.parent).is_some_and(|p| p.is_dir()));
        let _ = entry.name();
        assert!(!matches!(
            entry.kind,
            EntryType::Hardlink | EntryType::Chunk
        ));
        let children = index.children(id);
        assert!(children.windows(2).all(|w| w[0].name < w[1].name));
        for child in children {
            assert!(index.entry(child.id).is_some());
            assert_eq!(index.child(id, &child.name), Some(child.id));
            let path = match &*entry.path {
                "" => child.name.clone(),
                dir => format!("{dir}/{}", child.name),
            };
            assert_eq!(index.lookup(&path), Some(child.id), "{path:?}");
        }
        let mut next = 0;
        for chunk in index.chunks(id) {
            assert_eq!(chunk.file_offset, next);
            assert!(chunk.size > 0 && chunk.size <= estargz::MAX_CHUNK_SIZE);
            assert!(chunk.compressed.start < chunk.compressed.end);
            assert!(chunk.compressed.end <= toc_offset);
            assert_eq!(index.chunk_at(id, chunk.file_offset), Some(chunk));
            let last = chunk.file_offset + chunk.size - 1;
            assert_eq!(index.chunk_at(id, last), Some(chunk));
            next += chunk.size;
        }
        assert_eq!(next, entry.size);
        assert!(index.chunk_at(id, entry.size).is_none());
    }
}
