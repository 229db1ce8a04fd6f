//! Layer tests over an in-memory blob that counts, fails, stalls or corrupts reads.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz::testutil::TarBuilder;
use estargz::{Compression, Digest, EntryId, WriterOptions};

use super::backing::{BACKING_COPY_DELAY, BACKING_COPY_QUIET};
use super::*;
use crate::lazy::cache::CacheConfig;
use crate::lazy::source::memory_blob::{MemoryBlob, Mode};

const CHUNK: u64 = 1000;

/// Deterministic, incompressible file contents.
fn content(len: usize, seed: u32) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(u64::from(seed), len)
}

struct Fixture {
    blob: Vec<u8>,
    toc_digest: Digest,
    big: Vec<u8>,
    small: Vec<u8>,
}

fn fixture(compression: Compression) -> Fixture {
    let big = content(10_000, 1);
    let small = content(100, 2);
    let tar = TarBuilder::new()
        .dir("data")
        .file("data/big", &big)
        .file("data/small", &small)
        .symlink("data/link", "big")
        .finish();
    let mut blob = Vec::new();
    let opts = WriterOptions {
        chunk_size: CHUNK,
        compression,
        ..WriterOptions::default()
    };
    let written = estargz::build(&tar[..], &mut blob, &opts).expect("build estargz");
    Fixture {
        blob,
        toc_digest: written.toc_digest,
        big,
        small,
    }
}

/// Without readahead, so that tests can count exactly the fetches reads cause.
fn config(timeout: Duration) -> LayerConfig {
    LayerConfig {
        read_timeout: timeout,
        readahead: false,
        ..LayerConfig::default()
    }
}

async fn open(source: &Arc<MemoryBlob>, fx: &Fixture, cache: Arc<ChunkCache>) -> Layer {
    let source: Arc<dyn BlobSource> = source.clone();
    Layer::open(
        source,
        Some(fx.toc_digest),
        cache,
        config(Duration::from_secs(5)),
    )
    .await
    .expect("open layer")
}

fn memory_cache() -> Arc<ChunkCache> {
    Arc::new(ChunkCache::in_memory(1 << 20))
}

fn file(layer: &Layer, path: &str) -> EntryId {
    layer.index().lookup(path).expect("entry")
}

#[tokio::test]
async fn reads_exact_bytes_across_chunk_boundaries() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::new(fx.blob.clone());
    let layer = open(&source, &fx, memory_cache()).await;
    let big = file(&layer, "data/big");
    let cases: [(&str, u64, u32, Range<usize>); 7] = [
        ("first bytes", 0, 10, 0..10),
        ("inside one chunk", 1200, 300, 1200..1500),
        ("across one boundary", 990, 20, 990..1010),
        ("across several chunks", 500, 3000, 500..3500),
        ("past the end is cut", 9990, 100, 9990..10_000),
        ("at the end is empty", 10_000, 10, 0..0),
        ("whole file", 0, 20_000, 0..10_000),
    ];
    for (name, offset, len, want) in cases {
        let got = layer.read(big, offset, len).await.expect(name);
        assert_eq!(got, fx.big[want], "{name}");
    }
    let small = file(&layer, "data/small");
    assert_eq!(layer.read(small, 0, 4096).await.expect("small"), fx.small);
    let link = file(&layer, "data/link");
    assert!(matches!(
        layer.read(link, 0, 1).await,
        Err(LayerError::NotAFile { .. })
    ));
}

#[tokio::test]
async fn fetches_only_needed_chunks_in_one_request() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::new(fx.blob.clone());
    let layer = open(&source, &fx, memory_cache()).await;
    assert_eq!(source.requests().len(), 2, "footer and toc");
    source.clear_requests();
    let big = file(&layer, "data/big");
    let chunks = layer.index().chunks(big).to_vec();
    assert_eq!(chunks.len(), 10);

    let got = layer.read(big, 1500, 1000).await.expect("read");
    assert_eq!(got, fx.big[1500..2500]);
    let want = chunks[1].compressed.start..chunks[2].compressed.end;
    assert_eq!(
        source.requests(),
        vec![want],
        "chunks 1 and 2 in one request"
    );
    let fetched: u64 = source.requests().iter().map(|r| r.end - r.start).sum();
    let total = fx.blob.len() as u64;
    assert!(fetched * 3 < total, "fetched {fetched} of {total} bytes");
}

#[tokio::test]
async fn cached_chunks_are_not_fetched_again() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::new(fx.blob.clone());
    let layer = open(&source, &fx, memory_cache()).await;
    let big = file(&layer, "data/big");
    source.clear_requests();
    layer.read(big, 0, 2000).await.expect("first read");
    assert_eq!(source.requests().len(), 1);
    let again = layer.read(big, 500, 1000).await.expect("second read");
    assert_eq!(again, fx.big[500..1500]);
    assert_eq!(source.requests().len(), 1, "served from the cache");
    layer.read(big, 1500, 1000).await.expect("third read");
    let last = source.requests().pop().expect("a fetch");
    let chunks = layer.index().chunks(big);
    assert_eq!(last, chunks[2].compressed, "only the uncached chunk");
}

#[tokio::test]
async fn disk_cache_survives_reopening() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_config = CacheConfig {
        dir: Some(dir.path().to_path_buf()),
        memory_bytes: 1 << 20,
        ..CacheConfig::default()
    };
    let source = MemoryBlob::new(fx.blob.clone());
    let layer = open(
        &source,
        &fx,
        Arc::new(ChunkCache::new(&cache_config).expect("cache")),
    )
    .await;
    let big = file(&layer, "data/big");
    layer.read(big, 0, 10_000).await.expect("warm");
    // Readers are answered before the disk write; a fetch ends after it.
    while !layer.inner.inflight.lock().expect("lock").is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(layer);

    let fresh_source = MemoryBlob::new(fx.blob.clone());
    let cache = Arc::new(ChunkCache::new(&cache_config).expect("cache"));
    let layer = open(&fresh_source, &fx, cache).await;
    fresh_source.clear_requests();
    let got = layer.read(big, 0, 10_000).await.expect("read from disk");
    assert_eq!(got, fx.big);
    assert_eq!(fresh_source.requests(), Vec::<Range<u64>>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_share_one_fetch() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::with_delay(fx.blob.clone(), Duration::from_millis(200));
    let layer = open(&source, &fx, memory_cache()).await;
    let big = file(&layer, "data/big");
    source.clear_requests();
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let layer = layer.clone();
            tokio::spawn(async move { layer.read(big, 3000 + i * 10, 100).await })
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.await.expect("join").expect("read");
        let start = 3000 + i * 10;
        assert_eq!(got, fx.big[start..start + 100]);
    }
    assert_eq!(source.requests().len(), 1, "one fetch for chunk 3");
}

#[tokio::test]
async fn corrupted_chunk_is_refused_and_not_cached() {
    // Stored (level 0) members: a flipped byte changes the data, not the deflate stream.
    let fx = fixture(Compression::Gzip { level: 0 });
    let source = MemoryBlob::new(fx.blob.clone());
    let layer = open(&source, &fx, memory_cache()).await;
    let big = file(&layer, "data/big");
    let chunk = layer.index().chunks(big)[4].clone();
    let middle = (chunk.compressed.start + chunk.compressed.end) / 2;
    source.flip_byte(middle);

    let error = layer
        .read(big, 4100, 10)
        .await
        .expect_err("corrupted chunk");
    assert!(error.is_digest_mismatch(), "{error}");
    let spanning = layer
        .read(big, 3990, 20)
        .await
        .expect_err("spans the bad chunk");
    assert!(spanning.is_digest_mismatch(), "{spanning}");
    assert_eq!(
        layer.read(big, 3000, 100).await.expect("good chunk"),
        fx.big[3000..3100]
    );

    source.flip_byte(middle);
    tokio::time::sleep(fetch_outcome::FAILED_FETCH_HOLD * 2).await;
    source.clear_requests();
    let repaired = layer.read(big, 4100, 10).await.expect("refetched");
    assert_eq!(repaired, fx.big[4100..4110]);
    assert_eq!(source.requests().len(), 1, "the failure was not cached");
}

/// The fixture's layer over a switchable in-memory source, with a memory cache and the
/// given read timeout.
async fn open_over_memory(fx: &Fixture, timeout: Duration) -> (Layer, Arc<MemoryBlob>) {
    let source = MemoryBlob::new(fx.blob.clone());
    (open_over(&source, fx, timeout).await, source)
}

/// The fixture's layer over `source`, with a memory cache and the given read timeout.
async fn open_over(source: &Arc<MemoryBlob>, fx: &Fixture, timeout: Duration) -> Layer {
    let dyn_source: Arc<dyn BlobSource> = source.clone();
    Layer::open(
        dyn_source,
        Some(fx.toc_digest),
        memory_cache(),
        config(timeout),
    )
    .await
    .expect("open")
}

#[tokio::test]
async fn failing_source_errors_in_time_then_recovers() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let timeout = Duration::from_millis(300);
    let (layer, source) = open_over_memory(&fx, timeout).await;
    let big = file(&layer, "data/big");

    source.set_mode(Mode::Fail);
    let error = layer.read(big, 0, 10).await.expect_err("source down");
    assert!(
        matches!(&error, LayerError::Fetch(f) if matches!(f.as_ref(), FetchError::Remote { .. })),
        "{error}"
    );

    tokio::time::sleep(fetch_outcome::FAILED_FETCH_HOLD * 2).await;
    source.set_mode(Mode::Stall);
    let started = Instant::now();
    let error = layer.read(big, 0, 10).await.expect_err("source stalls");
    assert!(started.elapsed() < Duration::from_secs(2), "bounded wait");
    assert!(
        matches!(&error, LayerError::Timeout { .. })
            || matches!(&error, LayerError::Fetch(f) if matches!(f.as_ref(), FetchError::TimedOut { .. })),
        "{error}"
    );

    source.set_mode(Mode::Serve);
    // Let the stalled background fetch hit its own timeout and unregister.
    tokio::time::sleep(timeout * 2 + fetch_outcome::FAILED_FETCH_HOLD * 2).await;
    assert_eq!(
        layer.read(big, 0, 10).await.expect("recovered"),
        fx.big[..10]
    );
}

#[tokio::test]
async fn an_immediate_retry_of_a_failed_read_fails_at_once() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let timeout = Duration::from_millis(300);
    let (layer, source) = open_over_memory(&fx, timeout).await;
    let big = file(&layer, "data/big");
    source.set_mode(Mode::Fail);
    source.clear_requests();
    layer.read(big, 0, 10).await.expect_err("source down");
    // As the kernel does after a failed read: the same page again, at once. Were it
    // fetched again, a stalling source would make it wait a second timeout.
    layer.read(big, 0, 10).await.expect_err("still failing");
    assert_eq!(source.requests().len(), 1, "no second fetch");

    source.set_mode(Mode::Serve);
    tokio::time::sleep(fetch_outcome::FAILED_FETCH_HOLD * 2).await;
    assert_eq!(layer.read(big, 0, 10).await.expect("retried"), fx.big[..10]);
}

#[tokio::test]
async fn prefetch_fills_the_cache() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::new(fx.blob.clone());
    let layer = open(&source, &fx, memory_cache()).await;
    let big = file(&layer, "data/big");
    let chunks = layer.index().chunks(big).to_vec();
    source.clear_requests();
    let range = chunks[0].compressed.start..chunks[9].compressed.end;
    layer.prefetch(range.clone()).await.expect("prefetch");
    assert_eq!(source.requests(), vec![range], "one request for the run");
    assert_eq!(layer.read(big, 0, 10_000).await.expect("read"), fx.big);
    assert_eq!(source.requests().len(), 1);
}

#[tokio::test]
async fn open_refuses_unverifiable_or_foreign_blobs() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let open_with = |bytes: Vec<u8>, digest: Option<Digest>, verify: bool| async move {
        let source: Arc<dyn BlobSource> = MemoryBlob::new(bytes);
        let config = LayerConfig {
            verify,
            ..LayerConfig::default()
        };
        Layer::open(source, digest, memory_cache(), config).await
    };
    let wrong = Digest::sha256(b"not the toc");
    let mismatch = open_with(fx.blob.clone(), Some(wrong), true).await;
    assert!(matches!(
        mismatch,
        Err(LayerError::TocDigestMismatch { .. })
    ));
    let unlabelled = open_with(fx.blob.clone(), None, true).await;
    assert!(matches!(
        unlabelled,
        Err(LayerError::MissingTocDigest { .. })
    ));
    let unverified = open_with(fx.blob.clone(), None, false)
        .await
        .expect("verify off");
    assert_eq!(unverified.toc_digest(), fx.toc_digest);
    let plain = open_with(content(5000, 3), Some(fx.toc_digest), true).await;
    assert!(matches!(plain, Err(LayerError::Footer { .. })));
    let tiny = open_with(vec![1, 2, 3], Some(fx.toc_digest), true).await;
    assert!(matches!(tiny, Err(LayerError::Footer { .. })));
}

#[tokio::test]
async fn zstd_chunked_layers_read_too() {
    let fx = fixture(Compression::Zstd { level: 3 });
    let source = MemoryBlob::new(fx.blob.clone());
    let layer = open(&source, &fx, memory_cache()).await;
    let big = file(&layer, "data/big");
    assert_eq!(
        layer.read(big, 900, 2500).await.expect("read"),
        fx.big[900..3400]
    );
}

#[tokio::test]
async fn entering_a_chunk_fetches_the_next_one() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::new(fx.blob.clone());
    let blob: Arc<dyn BlobSource> = source.clone();
    let layer = Layer::open(
        blob,
        Some(fx.toc_digest),
        memory_cache(),
        LayerConfig::default(),
    )
    .await
    .expect("open layer");
    let big = file(&layer, "data/big");
    let chunks = layer.index().chunks(big).to_vec();
    source.clear_requests();

    layer.read(big, 200, 400).await.expect("inside chunk 0");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        source.requests(),
        vec![chunks[0].compressed.clone()],
        "no readahead yet"
    );

    layer.read(big, 0, 100).await.expect("entering chunk 0");
    let deadline = Instant::now() + Duration::from_secs(2);
    let next = &chunks[1].compressed;
    // Fetched alone or with the blob-order window after it.
    let covers = |r: &Range<u64>| r.start <= next.start && next.end <= r.end;
    while !source.requests().iter().any(covers) {
        assert!(
            Instant::now() < deadline,
            "next chunk not fetched: {:?}",
            source.requests()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = source.requests().len();
    let got = layer.read(big, CHUNK, 100).await.expect("next chunk");
    assert_eq!(got, fx.big[CHUNK as usize..CHUNK as usize + 100]);
    assert_eq!(source.requests().len(), before, "served from the readahead");
}

#[tokio::test]
async fn a_missed_chunk_and_the_next_one_come_in_one_request() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::new(fx.blob.clone());
    let blob: Arc<dyn BlobSource> = source.clone();
    let layer = Layer::open(
        blob,
        Some(fx.toc_digest),
        memory_cache(),
        LayerConfig::default(),
    )
    .await
    .expect("open layer");
    let big = file(&layer, "data/big");
    let chunks = layer.index().chunks(big).to_vec();
    source.clear_requests();

    // Entering chunk 0, which is not cached: chunk 1 streams after it in the same
    // request rather than in a second one sharing the link with it.
    let got = layer.read(big, 0, 100).await.expect("entering chunk 0");
    assert_eq!(got, fx.big[..100]);
    // Chunk 1 was asked for before that read was answered: this read joins it.
    let got = layer.read(big, CHUNK, 100).await.expect("chunk 1");
    assert_eq!(got, fx.big[CHUNK as usize..CHUNK as usize + 100]);
    let both = chunks[0].compressed.start..chunks[1].compressed.end;
    let requests = source.requests();
    assert_eq!(requests[0], both, "requests: {requests:?}");
    // Sequential reads may start a readahead of what follows, but nothing fetches
    // chunk 0 or 1 a second time.
    let overlaps = |r: &Range<u64>| r.start < both.end && both.start < r.end;
    assert!(
        !requests[1..].iter().any(overlaps),
        "chunks 0-1 fetched again: {requests:?}"
    );
}

/// The big file's whole compressed range (its ten chunks are adjacent).
fn big_range(layer: &Layer) -> Range<u64> {
    let chunks = layer.index().chunks(file(layer, "data/big"));
    chunks[0].compressed.start..chunks[chunks.len() - 1].compressed.end
}

#[tokio::test]
async fn bytes_arriving_in_small_pieces_read_exactly() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    for piece in [1, 7, 999, 4096] {
        let source = MemoryBlob::in_pieces(fx.blob.clone(), piece);
        let layer = open(&source, &fx, memory_cache()).await;
        let big = file(&layer, "data/big");
        source.clear_requests();
        let got = layer.read(big, 0, 10_000).await.expect("read");
        assert!(got == fx.big, "pieces of {piece} bytes");
        assert_eq!(source.requests(), [big_range(&layer)], "pieces of {piece}");
    }
}

#[tokio::test]
async fn a_broken_body_is_resumed_where_it_broke() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::in_pieces(fx.blob.clone(), 100);
    let layer = open(&source, &fx, memory_cache()).await;
    let big = file(&layer, "data/big");
    let range = big_range(&layer);
    source.clear_requests();
    // Breaks inside the third chunk: the first two are kept, the rest asked for again.
    source.set_mode(Mode::BreakAfter(2500));
    let got = layer.read(big, 0, 10_000).await.expect("resumed read");
    assert!(got == fx.big, "exact bytes across the break");
    let resumed = range.start + 2500..range.end;
    assert_eq!(source.requests(), [range, resumed]);
}

#[tokio::test]
async fn chunks_are_answered_before_the_rest_of_their_request_arrives() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let source = MemoryBlob::in_pieces(fx.blob.clone(), 64);
    // The stall ends only when this times out; long enough that "answered before the
    // stall ended" (half of it) holds on a loaded machine too.
    let timeout = Duration::from_secs(2);
    let layer = open_over(&source, &fx, timeout).await;
    let big = file(&layer, "data/big");
    let chunks = layer.index().chunks(big).to_vec();
    let range = big_range(&layer);
    source.clear_requests();
    // The prefetch of all ten chunks delivers three of them, then stalls.
    source.set_mode(Mode::StallAfter(chunks[2].compressed.end - range.start));
    let prefetch = tokio::spawn({
        let layer = layer.clone();
        let range = range.clone();
        async move { layer.prefetch(range).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    let front = layer.read(big, 0, 3000).await.expect("the arrived chunks");
    assert_eq!(front, fx.big[..3000]);
    assert!(
        started.elapsed() < timeout / 2,
        "answered before the stall ended"
    );
    assert_eq!(
        source.requests(),
        std::slice::from_ref(&range),
        "joined the prefetch"
    );

    // A chunk behind the stall fails when the fetch times out, never with other bytes.
    let error = layer.read(big, 5000, 10).await.expect_err("stalled chunk");
    assert!(
        matches!(&error, LayerError::Timeout { .. })
            || matches!(&error, LayerError::Fetch(f) if matches!(f.as_ref(), FetchError::TimedOut { .. })),
        "{error}"
    );
    assert!(prefetch.await.expect("join").is_err(), "prefetch timed out");
    assert!(started.elapsed() < timeout * 2, "bounded");

    // The verified front stayed cached; the rest is fetched again once the source serves.
    source.set_mode(Mode::Serve);
    tokio::time::sleep(fetch_outcome::FAILED_FETCH_HOLD * 2).await;
    source.clear_requests();
    assert_eq!(layer.read(big, 0, 10_000).await.expect("read"), fx.big);
    let rest = chunks[3].compressed.start..range.end;
    assert_eq!(source.requests(), [rest]);
}

#[tokio::test]
async fn a_toc_longer_than_the_known_tail_costs_one_request_for_its_front() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let size = fx.blob.len() as u64;
    let whole = open(&MemoryBlob::new(fx.blob.clone()), &fx, memory_cache()).await;
    let toc_offset = whole.toc_offset();
    let toc_and_footer = (size - toc_offset) as usize;
    let front = toc_offset..toc_offset + 20;
    for (name, tail, want) in [
        ("tail covers the toc", toc_and_footer + 10, &[][..]),
        (
            "tail starts inside the toc",
            toc_and_footer - 20,
            std::slice::from_ref(&front),
        ),
    ] {
        let source = MemoryBlob::new(fx.blob.clone());
        source.set_tail(tail);
        let layer = open(&source, &fx, memory_cache()).await;
        assert_eq!(source.requests(), want, "{name}");
        let small = file(&layer, "data/small");
        assert_eq!(
            layer.read(small, 0, 100).await.expect("read"),
            fx.small,
            "{name}"
        );
    }
}

/// Caches chunk 3 of the big file, so a whole read of it misses two runs apart.
async fn big_file_with_a_hole(
    parts: crate::lazy::source::memory_blob::Parts,
) -> (Layer, Arc<MemoryBlob>) {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let (layer, source) = open_over_memory(&fx, Duration::from_secs(5)).await;
    let big = file(&layer, "data/big");
    layer.read(big, 3 * CHUNK, 10).await.expect("chunk 3");
    source.clear_requests();
    source.set_parts(parts);
    (layer, source)
}

#[tokio::test]
async fn chunks_apart_come_in_one_multi_range_request() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let (layer, source) =
        big_file_with_a_hole(crate::lazy::source::memory_blob::Parts::Serve).await;
    let big = file(&layer, "data/big");
    let chunks = layer.index().chunks(big).to_vec();
    let got = layer.read(big, 0, 10_000).await.expect("read");
    assert!(got == fx.big, "exact bytes");
    let runs = vec![
        chunks[0].compressed.start..chunks[2].compressed.end,
        chunks[4].compressed.start..chunks[9].compressed.end,
    ];
    assert_eq!(
        source.part_requests(),
        vec![runs],
        "one request, two ranges"
    );
}

#[tokio::test]
async fn a_source_refusing_multi_range_is_asked_range_by_range() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let (layer, source) =
        big_file_with_a_hole(crate::lazy::source::memory_blob::Parts::Refuse).await;
    let big = file(&layer, "data/big");
    let got = layer.read(big, 0, 10_000).await.expect("read");
    assert!(got == fx.big, "exact bytes");
    assert_eq!(source.part_requests().len(), 1, "tried once");
    assert_eq!(source.requests().len(), 2, "then one request per run");
    // The small file and the big one's chunks: later reads do not try again.
    let small = file(&layer, "data/small");
    assert_eq!(layer.read(small, 0, 100).await.expect("small"), fx.small);
    assert_eq!(source.part_requests().len(), 1, "not tried again");
}

#[tokio::test]
async fn backing_copies_wait_while_reads_wait_on_the_network() {
    let fx = fixture(Compression::DEFAULT_GZIP);
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_config = CacheConfig {
        dir: Some(dir.path().to_path_buf()),
        memory_bytes: 1 << 20,
        ..CacheConfig::default()
    };
    let source = MemoryBlob::new(fx.blob.clone());
    let cache = Arc::new(ChunkCache::new(&cache_config).expect("cache"));
    let layer = open(&source, &fx, cache).await;
    let big = file(&layer, "data/big");
    layer
        .read(big, 0, fx.big.len() as u32)
        .await
        .expect("all cached");
    while !layer.inner.inflight.lock().expect("lock").is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A reader of this layer keeps waiting on the network.
    let waiting = layer.inner.activity.on_demand();
    assert!(layer.backing_file(big).await.expect("probe").is_none());
    tokio::time::sleep(BACKING_COPY_DELAY + Duration::from_millis(700)).await;
    assert!(
        layer.backing_file(big).await.expect("probe").is_none(),
        "copied while a read waits"
    );
    drop(waiting);
    let deadline = Instant::now() + BACKING_COPY_QUIET * 4 + Duration::from_secs(5);
    while layer.backing_file(big).await.expect("probe").is_none() {
        assert!(Instant::now() < deadline, "never copied once quiet");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
