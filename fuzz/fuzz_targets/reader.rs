//! `Reader::open` over arbitrary blobs, then every regular file read and verified (files
//! over 1 MiB, or past 16 MiB in total, are skipped to keep each run small).
#![no_main]

use estargz::{is_estargz, EntryType, Reader};
use libfuzzer_sys::fuzz_target;

const MAX_FILE: u64 = 1 << 20;
const MAX_TOTAL: u64 = 16 << 20;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 << 20 {
        return;
    }
    let footer = is_estargz(data);
    let Ok(reader) = Reader::open(data, None) else {
        return;
    };
    assert_eq!(footer.as_ref(), Some(reader.footer()));
    let wrong = estargz::Digest::sha256(b"not the toc");
    if *reader.toc_digest() != wrong {
        assert!(Reader::open(data, Some(&wrong)).is_err());
    }
    let mut budget = MAX_TOTAL;
    for (_, entry) in reader.index().iter() {
        if entry.kind != EntryType::Reg || entry.size > MAX_FILE.min(budget) {
            continue;
        }
        budget -= entry.size;
        if let Ok(bytes) = reader.read_file(&entry.path) {
            // The path may now name a later entry (later wins): compare with that one.
            let id = reader.index().lookup(&entry.path).expect("path");
            let current = reader.index().entry(id).expect("entry");
            assert_eq!(bytes.len() as u64, current.size);
        }
        for chunk in entry.chunks() {
            if let Ok(bytes) = reader.read_chunk(chunk) {
                assert_eq!(bytes.len() as u64, chunk.size);
            }
        }
    }
});
