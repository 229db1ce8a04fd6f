//! Registry mirrors on loopback: reads try each configured mirror in order and fall back to
//! the origin registry; a failing mirror is rested, a mirror lacking the blob is not; the
//! origin can be down while a mirror serves.

mod common;

use common::{plain_config, test_bytes, FakeServer, Reply};
use registry::{Client, ClientConfig, Credentials, Digest, Reference};
use testkit::{Prereq, Registry};

const REGISTRY: Prereq = Prereq::Binary(testkit::registry::REGISTRY_BIN);

fn client_with_mirrors(origin: &str, mirrors: &[String]) -> Client {
    let config = ClientConfig {
        mirrors: [(origin.to_owned(), mirrors.to_vec())].into(),
        retries: 0,
        ..plain_config()
    };
    Client::with_credentials(config, Credentials::new()).unwrap()
}

async fn push(registry: &Registry, repo: &str, bytes: &[u8]) -> Digest {
    let client = Client::with_credentials(plain_config(), Credentials::new()).unwrap();
    let reference: Reference = format!("{}/{repo}", registry.host()).parse().unwrap();
    let digest = Digest::sha256(bytes);
    client
        .push_blob_bytes(&reference, &digest, bytes.to_vec().into())
        .await
        .unwrap();
    digest
}

/// Range reads of `digest` a docker-registry answered (206 lines in its access log).
fn blob_reads_served(registry: &Registry, digest: &Digest) -> usize {
    let log = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    let needle = format!("blobs/{digest}");
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(&needle) && l.contains("\" 206 "))
        .count()
}

#[tokio::test]
async fn reads_go_to_mirrors_in_order_then_the_origin() {
    testkit::require!(REGISTRY);
    let mut origin = Registry::start().unwrap();
    let mut mirror = Registry::start().unwrap();
    let blob = test_bytes(256 << 10, 5);
    let digest = push(&origin, "team/app", &blob).await;
    // Nothing listens on port 1: a dead mirror first, then a real one.
    let dead = "127.0.0.1:1".to_owned();
    let client = client_with_mirrors(&origin.host(), &[dead, mirror.host()]);
    let repo: Reference = format!("{}/team/app", origin.host()).parse().unwrap();
    let range = 1000..5000;
    let want = &blob[1000..5000];

    // The live mirror lacks the blob (404): the origin serves.
    let got = client.read_blob_range(&repo, &digest, range.clone()).await;
    assert_eq!(got.unwrap(), want, "origin serves when no mirror has it");
    assert_eq!(blob_reads_served(&origin, &digest), 1);

    // Once the mirror has it, reads come from the mirror, even with the origin down.
    push(&mirror, "team/app", &blob).await;
    origin.stop();
    let size = client.blob_size(&repo, &digest).await.unwrap();
    assert_eq!(size, blob.len() as u64);
    let got = client.read_blob_range(&repo, &digest, range.clone()).await;
    assert_eq!(got.unwrap(), want, "mirror serves with the origin down");
    assert_eq!(blob_reads_served(&mirror, &digest), 1);

    // Mirror down, origin back: the origin serves again.
    mirror.stop();
    origin.start_again().unwrap();
    let got = client.read_blob_range(&repo, &digest, range).await;
    assert_eq!(got.unwrap(), want, "origin serves after the mirror died");
}

#[tokio::test]
async fn a_failing_mirror_is_rested_but_a_mirror_without_the_blob_is_not() {
    let blob = test_bytes(4096, 7);
    let digest = Digest::sha256(&blob);
    let served = blob.clone();
    let origin = FakeServer::start(move |seen| match seen.method.as_str() {
        "HEAD" => Reply::status(200).header("Content-Length", &served.len().to_string()),
        _ => Reply::status(206)
            .header("Content-Range", &format!("bytes 0-9/{}", served.len()))
            .body(served[..10].to_vec()),
    })
    .await;
    let broken = FakeServer::start(|_| Reply::status(500)).await;
    let empty = FakeServer::start(|_| Reply::status(404)).await;
    let client = client_with_mirrors(&origin.host(), &[broken.host(), empty.host()]);
    let repo: Reference = format!("{}/app", origin.host()).parse().unwrap();

    for _ in 0..3 {
        let got = client.read_blob_range(&repo, &digest, 0..10).await.unwrap();
        assert_eq!(got, blob[..10]);
    }
    assert_eq!(broken.seen().len(), 1, "the failing mirror was rested");
    assert_eq!(empty.seen().len(), 3, "a 404 mirror stays in the rotation");
    assert_eq!(origin.seen().len(), 3);
}
