//! A layer read lazily from a real docker-registry: only the footer, the TOC and the
//! chunks a read needs are fetched (counted in the registry's access log), reads fail in
//! bounded time while the registry is down and succeed again after it restarts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz::testutil::TarBuilder;
use estargz::{Digest, WriterOptions, TOC_DIGEST_ANNOTATION};
use estargz_snapshotter::lazy::cache::ChunkCache;
use estargz_snapshotter::lazy::layer::{Layer, LayerConfig};
use estargz_snapshotter::lazy::source::{
    toc_digest_from_labels, BlobLocation, BlobSource, RegistryBlob, RemoteConfig,
};
use testkit::{Prereq, Registry};

const REPO: &str = "lazy/app";
const CHUNK: u64 = 64 * 1024;

fn file_content(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// GET requests for blob `digest` in the registry's access log.
fn blob_gets(registry: &Registry, digest: &Digest) -> usize {
    let log = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    let needle = format!("GET /v2/{REPO}/blobs/{digest}");
    log.lines().filter(|line| line.contains(&needle)).count()
}

#[test]
fn reads_lazily_from_a_registry_and_recovers_after_an_outage() {
    if let Some(reason) =
        testkit::prereq::skip_reason(&[Prereq::Binary("/usr/bin/docker-registry")])
    {
        eprintln!("skipping: {reason}");
        return;
    }
    let data = file_content(2 << 20);
    let tar = TarBuilder::new()
        .file("data/blob.bin", &data)
        .file("hello.txt", b"hello")
        .finish();
    let mut blob = Vec::new();
    let options = WriterOptions {
        chunk_size: CHUNK,
        ..WriterOptions::default()
    };
    let written = estargz::build(&tar[..], &mut blob, &options).expect("build estargz");

    let mut registry = Registry::start().expect("start docker-registry");
    registry
        .client()
        .push_blob(REPO, &written.blob_digest, &blob)
        .expect("push blob");
    let labels: BTreeMap<String, String> = [
        (
            "containerd.io/snapshot/cri.image-ref".to_owned(),
            format!("{}/{REPO}:v1", registry.host()),
        ),
        (
            "containerd.io/snapshot/cri.layer-digest".to_owned(),
            written.blob_digest.to_string(),
        ),
        (
            TOC_DIGEST_ANNOTATION.to_owned(),
            written.toc_digest.to_string(),
        ),
    ]
    .into();

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = registry::Client::with_credentials(
            RemoteConfig {
                plain_http: vec![registry.host()],
                retries: 1,
                timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(1),
                ..RemoteConfig::default()
            },
            registry::Credentials::new(),
        )
        .expect("client");
        let location = BlobLocation::from_labels(&labels).expect("labels");
        let source = RegistryBlob::open(client, location).await.expect("blob");
        assert_eq!(source.size(), blob.len() as u64);
        let toc_digest = toc_digest_from_labels(&labels).expect("toc label");
        // No readahead: the test counts exactly the requests each read makes.
        let config = LayerConfig {
            read_timeout: Duration::from_secs(5),
            readahead: false,
            ..LayerConfig::default()
        };
        let cache = Arc::new(ChunkCache::in_memory(64 << 20));
        let layer = Layer::open(Arc::new(source), toc_digest, cache, config)
            .await
            .expect("open layer");
        assert_eq!(
            blob_gets(&registry, &written.blob_digest),
            1,
            "size, footer and toc in one suffix-range request, no HEAD"
        );

        let file = layer.index().lookup("data/blob.bin").expect("file");
        let offset = CHUNK * 3 - 10;
        let got = layer.read(file, offset, 20).await.expect("read");
        assert_eq!(got, data[offset as usize..offset as usize + 20]);
        assert_eq!(
            blob_gets(&registry, &written.blob_digest),
            2,
            "two adjacent chunks in one request"
        );
        let again = layer.read(file, offset, 20).await.expect("cached read");
        assert_eq!(again, got);
        assert_eq!(blob_gets(&registry, &written.blob_digest), 2, "cache hit");

        registry.stop();
        let started = Instant::now();
        let down = layer.read(file, CHUNK * 10, 100).await;
        assert!(down.is_err(), "registry is down");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "bounded failure"
        );

        registry.start_again().expect("restart registry");
        let back = layer
            .read(file, CHUNK * 10, 100)
            .await
            .expect("read after restart");
        let start = (CHUNK * 10) as usize;
        assert_eq!(back, data[start..start + 100]);
    });
}
