//! Readahead window and priority tests: a layer of many small files over an in-memory
//! blob behind a fake link with latency.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use estargz::testutil::TarBuilder;
use estargz::{Digest, WriterOptions};

use super::*;
use crate::lazy::source::memory_blob::MemoryBlob;

/// Files in the layer, each one chunk of incompressible bytes.
const FILES: usize = 200;
const FILE_BYTES: usize = 1500;
/// Round trip of the fake link.
const LATENCY: Duration = Duration::from_millis(5);

fn name(i: usize) -> String {
    format!("pkg/mod{i:03}.py")
}

fn small_files_blob() -> (Vec<u8>, Digest) {
    let mut tar = TarBuilder::new();
    tar.dir("pkg");
    for i in 0..FILES {
        let bytes = estargz::testutil::pseudo_random_bytes(i as u64, FILE_BYTES);
        tar.file(&name(i), &bytes);
    }
    // Another package right after the first one in the blob.
    tar.dir("next");
    for i in 0..20 {
        tar.file(&format!("next/mod{i}.py"), &[b'x'; 100]);
    }
    let mut blob = Vec::new();
    let options = WriterOptions {
        chunk_size: 1 << 20,
        ..WriterOptions::default()
    };
    let written = estargz::build(&tar.finish()[..], &mut blob, &options).expect("build");
    (blob, written.toc_digest)
}

fn window_config() -> LayerConfig {
    LayerConfig {
        readahead_min_bytes: 8 << 10,
        readahead_max_bytes: 64 << 10,
        ..LayerConfig::default()
    }
}

async fn open_small_files(cache: Arc<ChunkCache>) -> (Layer, Arc<MemoryBlob>) {
    open_with(cache, window_config()).await
}

async fn open_with(cache: Arc<ChunkCache>, config: LayerConfig) -> (Layer, Arc<MemoryBlob>) {
    let (bytes, toc_digest) = small_files_blob();
    let blob = MemoryBlob::with_delay(bytes, LATENCY);
    let source: Arc<dyn BlobSource> = blob.clone();
    let layer = Layer::open(source, Some(toc_digest), cache, config)
        .await
        .expect("open");
    blob.clear_requests();
    (layer, blob)
}

/// Reads file `i` whole and checks its bytes; returns its compressed size.
async fn read_file(layer: &Layer, i: usize) -> u64 {
    let id = layer.index().lookup(&name(i)).expect("file");
    let got = layer.read(id, 0, 1 << 20).await.expect("read");
    assert!(
        got == estargz::testutil::pseudo_random_bytes(i as u64, FILE_BYTES),
        "{}",
        name(i)
    );
    layer
        .index()
        .chunks(id)
        .iter()
        .map(|c| c.compressed.end - c.compressed.start)
        .sum()
}

/// No byte of the blob was asked for twice.
fn assert_disjoint(requests: &[Range<u64>]) {
    let mut sorted = requests.to_vec();
    sorted.sort_by_key(|r| r.start);
    for pair in sorted.windows(2) {
        assert!(pair[0].end <= pair[1].start, "fetched twice: {pair:?}");
    }
}

/// Waits until no fetch of the layer is under way (window fetches are not awaited).
async fn settle(layer: &Layer) {
    for _ in 0..200 {
        if layer.inner.inflight.lock().expect("lock").is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("fetches did not end");
}

#[tokio::test]
async fn files_read_in_blob_order_come_in_growing_windows() {
    let (layer, blob) = open_small_files(Arc::new(ChunkCache::in_memory(64 << 20))).await;
    let mut read_bytes = 0;
    // Most of the package, as an interpreter importing it would.
    for i in 0..150 {
        read_bytes += read_file(&layer, i).await;
    }
    settle(&layer).await;
    let requests = blob.requests();
    assert!(
        requests.len() <= 20,
        "{} requests for 150 files: {requests:?}",
        requests.len()
    );
    assert_disjoint(&requests);
    let fetched = layer.fetched_bytes(FetchKind::OnDemand);
    // What was fetched and not read is at most the last window and the one fetched
    // ahead of it.
    assert!(
        fetched <= read_bytes + 2 * window_config().readahead_max_bytes,
        "fetched {fetched} for {read_bytes} read"
    );
    let max_request = requests.iter().map(|r| r.end - r.start).max().unwrap_or(0);
    assert!(
        max_request <= window_config().readahead_max_bytes + 2 * FILE_BYTES as u64,
        "window over its bound: {max_request}"
    );

    // Everything the windows fetched is served without the network.
    blob.clear_requests();
    for i in 0..150 {
        read_file(&layer, i).await;
    }
    assert!(blob.requests().is_empty(), "{:?}", blob.requests());
}

#[tokio::test]
async fn reads_that_jump_around_fetch_only_their_chunks() {
    let (layer, blob) = open_small_files(Arc::new(ChunkCache::in_memory(64 << 20))).await;
    let mut read_bytes = 0;
    for k in 0..60 {
        read_bytes += read_file(&layer, (k * 37) % FILES).await;
    }
    settle(&layer).await;
    assert_eq!(blob.requests().len(), 60, "one request per file");
    assert_eq!(layer.fetched_bytes(FetchKind::OnDemand), read_bytes);
}

#[tokio::test]
async fn the_window_skips_cached_and_in_flight_chunks() {
    let cache = Arc::new(ChunkCache::in_memory(64 << 20));
    let (layer, blob) = open_small_files(cache).await;
    // Files 3 and 5 are cached already; file 4 is being fetched by another reader.
    read_file(&layer, 3).await;
    read_file(&layer, 5).await;
    let other = {
        let layer = layer.clone();
        tokio::spawn(async move { read_file(&layer, 4).await })
    };
    read_file(&layer, 0).await;
    read_file(&layer, 1).await; // opens the window over the next files
    other.await.expect("reader");
    for i in 0..10 {
        read_file(&layer, i).await;
    }
    settle(&layer).await;
    assert_disjoint(&blob.requests());
}

#[tokio::test]
async fn background_fetching_waits_for_another_layers_on_demand_read() {
    // Two layers sharing one cache, so one link.
    let cache = Arc::new(ChunkCache::in_memory(64 << 20));
    let timeout = Duration::from_millis(400);
    let config = LayerConfig {
        read_timeout: timeout,
        ..window_config()
    };
    let (reader, reader_blob) = open_with(cache.clone(), config).await;
    let (filler, filler_blob) = open_small_files(cache.clone()).await;
    reader_blob.set_mode(crate::lazy::source::memory_blob::Mode::Stall);
    let read = {
        let reader = reader.clone();
        let id = reader.index().lookup(&name(7)).expect("file");
        tokio::spawn(async move { reader.read(id, 0, 100).await })
    };
    while cache.link().on_wire(FetchKind::OnDemand) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let step = {
        let filler = filler.clone();
        tokio::spawn(async move { filler.fetch_background_step(64 << 10).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        filler_blob.requests().is_empty(),
        "background request sent while an on-demand read was on the wire"
    );
    // The stalled request leaves the wire when it times out; then background goes.
    assert!(read.await.expect("task").is_err(), "stalled read times out");
    let fetched = tokio::time::timeout(Duration::from_secs(5), step)
        .await
        .expect("background step resumes")
        .expect("task")
        .expect("step");
    assert!(fetched.is_some_and(|bytes| bytes > 0));
    assert!(!filler_blob.requests().is_empty());
}

#[tokio::test]
async fn a_window_ends_with_the_directory() {
    let (layer, blob) = open_small_files(Arc::new(ChunkCache::in_memory(64 << 20))).await;
    let mut read_bytes = 0;
    for i in 0..FILES {
        read_bytes += read_file(&layer, i).await;
    }
    settle(&layer).await;
    assert_eq!(
        layer.fetched_bytes(FetchKind::OnDemand),
        read_bytes,
        "the whole package and nothing of the next"
    );
    assert!(blob.requests().len() < 20, "{:?}", blob.requests());
}
