//! Writer throughput over a generated ~64 MiB layer tar with mixed content: small text-like
//! files, large binaries (half random, half text), and zero-filled files.
//!
//! Run: `cargo bench -p estargz --features testutil --bench writer`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use estargz::testutil::{pseudo_random_bytes, TarBuilder};
use estargz::{build, Compression, WriterOptions};

const TARGET_SIZE: usize = 64 << 20;

/// Text from a random 256-word vocabulary, compressing roughly like source or docs (~3:1).
fn text_like(seed: u64, len: usize) -> Vec<u8> {
    let letters = pseudo_random_bytes(seed ^ 0x5eed, 256 * 8);
    let vocabulary: Vec<Vec<u8>> = letters
        .chunks(8)
        .map(|w| {
            let word_len = 2 + usize::from(w[0]) % 7;
            w[..word_len].iter().map(|b| b % 26 + b'a').collect()
        })
        .collect();
    let picks = pseudo_random_bytes(seed, len / 3 + 1);
    let mut out = Vec::with_capacity(len + 16);
    for (i, pick) in picks.iter().enumerate() {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(&vocabulary[usize::from(*pick)]);
        out.push(if i % 12 == 11 { b'\n' } else { b' ' });
    }
    out.resize(len, b'\n');
    out
}

fn binary_like(seed: u64, len: usize) -> Vec<u8> {
    let mut out = pseudo_random_bytes(seed, len / 2);
    out.extend_from_slice(&text_like(seed + 1, len - len / 2));
    out
}

fn layer_tar() -> Vec<u8> {
    let mut tar = TarBuilder::new();
    let mut total = 0usize;
    let mut n = 0u64;
    tar.dir("usr").dir("usr/lib").dir("usr/share");
    while total < TARGET_SIZE {
        let (path, content) = match n % 10 {
            0 => (format!("usr/lib/lib{n}.so"), binary_like(n, 3 << 20)),
            1 => (format!("usr/share/zero{n}"), vec![0u8; 256 << 10]),
            _ => (
                format!("usr/share/doc{n}.txt"),
                text_like(n, 2000 + (n as usize * 997) % 60_000),
            ),
        };
        total += content.len();
        tar.file(&path, &content);
        n += 1;
    }
    tar.finish()
}

fn bench_writer(c: &mut Criterion) {
    let tar = layer_tar();
    let mut group = c.benchmark_group("writer");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(tar.len() as u64));
    for (name, compression) in [
        ("gzip9", Compression::DEFAULT_GZIP),
        ("zstd3", Compression::DEFAULT_ZSTD),
    ] {
        let opts = WriterOptions {
            compression,
            ..WriterOptions::default()
        };
        group.bench_function(name, |b| {
            b.iter(|| build(tar.as_slice(), std::io::sink(), &opts).expect("convert"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_writer);
criterion_main!(benches);
