//! A layer read from a real docker-registry through the fault proxy playing registries
//! that answer multi-range requests with parts (docker-registry itself), one range, 200
//! and the whole blob, or 400: a read missing chunks apart from each other gets them in
//! one request where parts come back; elsewhere the first such answer switches the host
//! to single ranges, and every byte read is right.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use estargz::testutil::TarBuilder;
use estargz::{WriterOptions, TOC_DIGEST_ANNOTATION};
use estargz_snapshotter::lazy::cache::ChunkCache;
use estargz_snapshotter::lazy::layer::{Layer, LayerConfig};
use estargz_snapshotter::lazy::source::{
    toc_digest_from_labels, BlobLocation, RegistryBlob, RemoteConfig,
};
use testkit::{FaultProxy, MultiRangeAnswer, Prereq, Registry};

const REPO: &str = "lazy/ranges";
const CHUNK: u64 = 64 * 1024;

#[test]
fn chunks_apart_come_in_one_request_or_range_by_range() {
    if let Some(reason) =
        testkit::prereq::skip_reason(&[Prereq::Binary("/usr/bin/docker-registry")])
    {
        eprintln!("skipping: {reason}");
        return;
    }
    let data = estargz::testutil::pseudo_random_bytes(7, 1 << 20);
    let mut tar = TarBuilder::new();
    tar.file("data/blob.bin", &data);
    let options = WriterOptions {
        chunk_size: CHUNK,
        ..WriterOptions::default()
    };
    let mut blob = Vec::new();
    let written = estargz::build(&tar.finish()[..], &mut blob, &options).expect("build");
    let registry = Registry::start().expect("start docker-registry");
    registry
        .client()
        .push_blob(REPO, &written.blob_digest, &blob)
        .expect("push blob");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    for answer in [
        MultiRangeAnswer::Parts,
        MultiRangeAnswer::FirstRange,
        MultiRangeAnswer::WholeBlob,
        MultiRangeAnswer::Status400,
    ] {
        let proxy = FaultProxy::start(&registry.host()).expect("proxy");
        proxy.set_multi_range(answer);
        let labels: BTreeMap<String, String> = [
            (
                "containerd.io/snapshot/cri.image-ref".to_owned(),
                format!("{}/{REPO}:v1", proxy.host()),
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
        runtime.block_on(async {
            let client = registry::Client::with_credentials(
                RemoteConfig {
                    plain_http: vec![proxy.host()],
                    retries: 0,
                    timeout: Duration::from_secs(5),
                    ..RemoteConfig::default()
                },
                registry::Credentials::new(),
            )
            .expect("client");
            let location = BlobLocation::from_labels(&labels).expect("labels");
            let source = RegistryBlob::open(client, location).await.expect("blob");
            let config = LayerConfig {
                readahead: false,
                ..LayerConfig::default()
            };
            let cache = Arc::new(ChunkCache::in_memory(64 << 20));
            let layer = Layer::open(
                Arc::new(source),
                toc_digest_from_labels(&labels).expect("label"),
                cache,
                config,
            )
            .await
            .expect("open layer");
            let file = layer.index().lookup("data/blob.bin").expect("file");
            // Chunks 3 and 9 cached: whole reads then miss runs apart from each other.
            for hole in [3, 9] {
                layer.read(file, CHUNK * hole, 10).await.expect("hole");
            }
            let before = proxy.blob_reads();
            let got = layer.read(file, 0, 1 << 20).await.expect("whole file");
            assert!(got == data, "{answer:?}: exact bytes");
            let gets = proxy.blob_reads() - before;
            assert_eq!(proxy.multi_range_reads(), 1, "{answer:?}: tried once");
            if answer == MultiRangeAnswer::Parts {
                assert_eq!(gets, 1, "three runs in one request");
            } else {
                assert_eq!(
                    gets, 4,
                    "{answer:?}: the refused try, then a request per run"
                );
            }
        });
    }
}
