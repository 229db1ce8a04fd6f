//! Multi-range blob reads against a real docker-registry, directly (it sends
//! `multipart/byteranges` parts) and through the fault proxy playing registries that
//! answer otherwise (one range, 200 with the whole blob, 400): each is detected on its
//! first answer and asked range by range from then on, with the right bytes.

mod common;

use std::ops::Range;

use common::{plain_config, test_bytes};
use registry::{Client, ClientConfig, Credentials, Digest, Reference};
use testkit::{FaultProxy, MultiRangeAnswer, Prereq, Registry};

const REGISTRY: Prereq = Prereq::Binary(testkit::registry::REGISTRY_BIN);
const RANGES: [Range<u64>; 3] = [100..200, 5000..9000, 700_000..700_001];

fn client_for(host: &str) -> Client {
    let config = ClientConfig {
        plain_http: vec![host.to_owned()],
        ..plain_config()
    };
    Client::with_credentials(config, Credentials::new()).unwrap()
}

/// A registry holding a 1 MiB blob in repository `ranges`.
async fn registry_with_blob() -> (Registry, Vec<u8>, Digest) {
    let registry = Registry::start().unwrap();
    let blob = test_bytes(1 << 20, 4);
    let digest = Digest::sha256(&blob);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &blob).unwrap();
    let repo: Reference = format!("{}/ranges", registry.host()).parse().unwrap();
    client_for(&registry.host())
        .push_blob_file(&repo, &digest, &path, blob.len() as u64)
        .await
        .unwrap();
    (registry, blob, digest)
}

/// Reads `RANGES` with one multi-range request; None when the client was told to ask
/// range by range. Every byte is checked against the blob.
async fn read_parts(client: &Client, host: &str, digest: &Digest, blob: &[u8]) -> Option<u64> {
    let repo: Reference = format!("{host}/ranges").parse().unwrap();
    let mut body = client
        .open_blob_ranges(&repo, digest, &RANGES)
        .await
        .unwrap()?;
    let mut got = 0u64;
    while let Some((at, piece)) = body.next_piece().await.unwrap() {
        let end = at + piece.len() as u64;
        assert!(
            RANGES.iter().any(|r| r.start <= at && end <= r.end),
            "piece {at}..{end} outside the ranges asked for"
        );
        assert!(piece == blob[at as usize..end as usize], "bytes at {at}");
        got += piece.len() as u64;
    }
    Some(got)
}

#[tokio::test]
async fn docker_registry_sends_the_parts() {
    testkit::require!(REGISTRY);
    let (registry, blob, digest) = registry_with_blob().await;
    let client = client_for(&registry.host());
    let got = read_parts(&client, &registry.host(), &digest, &blob).await;
    let want: u64 = RANGES.iter().map(|r| r.end - r.start).sum();
    assert_eq!(got, Some(want), "every range, in parts");
    let repo: Reference = format!("{}/ranges", registry.host()).parse().unwrap();
    assert!(client.multi_range(&repo), "still multi-range");
}

#[tokio::test]
async fn registries_answering_otherwise_are_asked_range_by_range() {
    testkit::require!(REGISTRY);
    let (registry, blob, digest) = registry_with_blob().await;
    for answer in [
        MultiRangeAnswer::FirstRange,
        MultiRangeAnswer::WholeBlob,
        MultiRangeAnswer::Status400,
    ] {
        let proxy = FaultProxy::start(&registry.host()).unwrap();
        proxy.set_multi_range(answer);
        let host = proxy.host();
        let client = client_for(&host);
        let repo: Reference = format!("{host}/ranges").parse().unwrap();
        assert!(client.multi_range(&repo), "{answer:?}: untried");
        assert_eq!(read_parts(&client, &host, &digest, &blob).await, None);
        assert!(!client.multi_range(&repo), "{answer:?}: detected");
        // From then on no multi-range request is sent to that host.
        assert_eq!(read_parts(&client, &host, &digest, &blob).await, None);
        assert_eq!(proxy.multi_range_reads(), 1, "{answer:?}");
        for range in RANGES {
            let bytes = client
                .read_blob_range(&repo, &digest, range.clone())
                .await
                .unwrap();
            assert!(bytes == blob[range.start as usize..range.end as usize]);
        }
        // Another host keeps multi-range.
        let direct: Reference = format!("{}/ranges", registry.host()).parse().unwrap();
        assert!(client.multi_range(&direct), "{answer:?}: per host");
    }
}
