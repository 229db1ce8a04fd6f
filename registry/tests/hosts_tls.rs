//! Registries resolved through a containerd hosts directory, against real docker-registry
//! processes on loopback: a registry name only hosts.toml knows (server on a loopback
//! port, a mirror that is down, a mirror that lacks the blob, a mirror's extra headers),
//! a TLS registry whose CA is known only through `ca`, one that demands a client
//! certificate, and a 429 with `Retry-After`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{plain_config, test_bytes, FakeServer, Reply};
use registry::{Client, ClientConfig, Credentials, Digest, Error, Reference};
use testkit::tls::{Pki, TlsRegistry};
use testkit::{Prereq, Registry};

const REGISTRY: Prereq = Prereq::Binary(testkit::registry::REGISTRY_BIN);
const OPENSSL: Prereq = Prereq::Binary(testkit::tls::OPENSSL_BIN);

fn client_with_hosts_dir(root: &Path) -> Client {
    let config = ClientConfig {
        hosts_dirs: Some(vec![root.to_owned()]),
        plain_http: Vec::new(),
        retries: 0,
        ..plain_config()
    };
    Client::with_credentials(config, Credentials::new()).unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

async fn push(host: &str, repo: &str, bytes: &[u8]) -> Digest {
    let client = Client::with_credentials(plain_config(), Credentials::new()).unwrap();
    let reference: Reference = format!("{host}/{repo}").parse().unwrap();
    let digest = Digest::sha256(bytes);
    client
        .push_blob_bytes(&reference, &digest, bytes.to_vec().into())
        .await
        .unwrap();
    digest
}

#[tokio::test]
async fn a_name_only_hosts_toml_knows_reads_through_its_mirrors_then_its_server() {
    testkit::require!(REGISTRY);
    let origin = Registry::start().unwrap();
    let lacking = Registry::start().unwrap();
    let blob = test_bytes(64 << 10, 11);
    let digest = push(&origin.host(), "team/app", &blob).await;
    let headers_seen = FakeServer::start(|_| Reply::status(404)).await;
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("registry.internal.test/hosts.toml"),
        &format!(
            "server = \"http://{origin}\"\n\n\
             [host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n\
             [host.\"http://{lacking}\"]\n  capabilities = [\"pull\"]\n\n\
             [host.\"http://{fake}\"]\n  capabilities = [\"pull\"]\n  header = {{ X-Mirror-Token = \"m1\" }}\n",
            origin = origin.host(),
            lacking = lacking.host(),
            fake = headers_seen.host(),
        ),
    );
    let client = client_with_hosts_dir(root.path());
    let repo: Reference = "registry.internal.test/team/app".parse().unwrap();
    for _ in 0..2 {
        let got = client.read_blob_range(&repo, &digest, 100..4100).await;
        assert_eq!(
            got.unwrap(),
            blob[100..4100],
            "server serves what no mirror has"
        );
    }
    assert_eq!(
        client.blob_size(&repo, &digest).await.unwrap(),
        blob.len() as u64
    );
    let asked = headers_seen.seen();
    assert_eq!(
        asked.len(),
        3,
        "a mirror without the blob stays in rotation: {asked:?}"
    );
    assert!(
        asked
            .iter()
            .all(|s| s.header("x-mirror-token") == Some("m1")),
        "hosts.toml headers are sent to their host"
    );
    assert!(
        asked
            .iter()
            .all(|s| s.path.starts_with("/v2/team/app/blobs/")),
        "mirrors are asked for the same repository"
    );
    let lacking_log = std::fs::read_to_string(lacking.log_path()).unwrap();
    assert!(
        lacking_log.contains(&format!("/v2/team/app/blobs/{digest}")),
        "the mirror lacking the blob was asked"
    );
}

#[tokio::test]
async fn tls_registry_trusted_through_hosts_toml_ca_and_client_certificate() {
    testkit::require!(REGISTRY, OPENSSL);
    let pki = Pki::new().unwrap();
    let plain = Registry::start().unwrap();
    let blob = test_bytes(32 << 10, 12);
    let digest = push(&plain.host(), "secure/app", &blob).await;
    let tls = TlsRegistry::start(&pki, &plain.storage_dir(), false).unwrap();
    let mtls = TlsRegistry::start(&pki, &plain.storage_dir(), true).unwrap();
    let root = tempfile::tempdir().unwrap();
    let repo = |registry: &TlsRegistry| -> Reference {
        format!("{}/secure/app", registry.host()).parse().unwrap()
    };

    // https named in hosts.toml, but no CA: the error names the host and the cause.
    let server_only = |registry: &TlsRegistry| {
        write(
            &root.path().join(registry.host()).join("hosts.toml"),
            &format!("server = \"https://{}\"\n", registry.host()),
        );
    };
    server_only(&tls);
    let error = client_with_hosts_dir(root.path())
        .read_blob_range(&repo(&tls), &digest, 0..10)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, Error::Tls { .. }), "{text}");
    assert!(
        text.contains(&tls.host()) && text.contains("unknown authority"),
        "{text}"
    );

    // The CA known only through `ca` (relative to the directory): reads work.
    std::fs::copy(
        pki.path("ca.pem"),
        root.path().join(tls.host()).join("ca.pem"),
    )
    .unwrap();
    write(
        &root.path().join(tls.host()).join("hosts.toml"),
        &format!("server = \"https://{}\"\nca = \"ca.pem\"\n", tls.host()),
    );
    let got = client_with_hosts_dir(root.path())
        .read_blob_range(&repo(&tls), &digest, 0..4096)
        .await;
    assert_eq!(got.unwrap(), blob[..4096], "trusted through hosts.toml ca");

    // A registry demanding a client certificate refuses one without.
    write(
        &root.path().join(mtls.host()).join("hosts.toml"),
        &format!(
            "server = \"https://{}\"\nca = \"{}\"\n",
            mtls.host(),
            pki.path("ca.pem").display()
        ),
    );
    let error = client_with_hosts_dir(root.path())
        .read_blob_range(&repo(&mtls), &digest, 0..10)
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains(&mtls.host()) && text.contains("client certificate"),
        "{text}"
    );

    // With `client = [[cert, key]]` it serves.
    write(
        &root.path().join(mtls.host()).join("hosts.toml"),
        &format!(
            "server = \"https://{}\"\nca = \"{}\"\nclient = [[\"{}\", \"{}\"]]\n",
            mtls.host(),
            pki.path("ca.pem").display(),
            pki.path("client.pem").display(),
            pki.path("client.key").display(),
        ),
    );
    let got = client_with_hosts_dir(root.path())
        .read_blob_range(&repo(&mtls), &digest, 0..4096)
        .await;
    assert_eq!(got.unwrap(), blob[..4096], "client certificate accepted");
}

#[tokio::test]
async fn loopback_registries_are_plain_http_without_any_config() {
    testkit::require!(REGISTRY);
    let registry = Registry::start().unwrap();
    let blob = test_bytes(8 << 10, 13);
    let digest = push(&registry.host(), "loop/app", &blob).await;
    let config = ClientConfig {
        hosts_dirs: Some(Vec::new()),
        ..ClientConfig::default()
    };
    let client = Client::with_credentials(config, Credentials::new()).unwrap();
    let port = registry.host().rsplit_once(':').unwrap().1.to_owned();
    for host in [registry.host(), format!("localhost:{port}")] {
        let repo: Reference = format!("{host}/loop/app").parse().unwrap();
        let got = client.read_blob_range(&repo, &digest, 0..100).await;
        assert_eq!(got.unwrap(), blob[..100], "{host}");
    }
}

#[tokio::test]
async fn retry_after_on_429_is_waited_for() {
    let blob = test_bytes(1024, 14);
    let digest = Digest::sha256(&blob);
    let served = blob.clone();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let server = FakeServer::start(move |_| {
        if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            return Reply::status(429).header("Retry-After", "1");
        }
        Reply::status(206)
            .header("Content-Range", &format!("bytes 0-9/{}", served.len()))
            .body(served[..10].to_vec())
    })
    .await;
    let config = ClientConfig {
        retries: 3,
        min_wait: Duration::from_millis(10),
        max_wait: Duration::from_millis(50),
        ..plain_config()
    };
    let client = Client::with_credentials(config, Credentials::new()).unwrap();
    let repo: Reference = format!("{}/app", server.host()).parse().unwrap();
    let start = Instant::now();
    let got = client.read_blob_range(&repo, &digest, 0..10).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(got, blob[..10]);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Two Retry-After: 1 waits, each plus at most 0.1 s of jitter; max_wait (50 ms)
    // does not cut them short.
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
}
