//! The system trust store: a CA that only the system bundle (`SSL_CERT_FILE`, as Debian's
//! /etc/ssl/certs/ca-certificates.crt would) holds is trusted for a TLS registry. One test
//! in its own binary: the bundle is read once per process.

mod common;

use common::{plain_config, test_bytes};
use registry::{Client, ClientConfig, Credentials, Digest, Reference};
use testkit::tls::{Pki, TlsRegistry};
use testkit::{Prereq, Registry};

#[tokio::test]
async fn a_ca_in_the_system_bundle_is_trusted() {
    testkit::require!(
        Prereq::Binary(testkit::registry::REGISTRY_BIN),
        Prereq::Binary(testkit::tls::OPENSSL_BIN)
    );
    let pki = Pki::new().unwrap();
    // The real bundle plus the test CA, as update-ca-certificates would make it.
    let bundle = pki.path("bundle.pem");
    let mut text = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    text.extend(std::fs::read(pki.path("ca.pem")).unwrap());
    std::fs::write(&bundle, text).unwrap();
    std::env::set_var("SSL_CERT_FILE", &bundle);

    let plain = Registry::start().unwrap();
    let blob = test_bytes(8 << 10, 51);
    let client = Client::with_credentials(plain_config(), Credentials::new()).unwrap();
    let pushed: Reference = format!("{}/sys/app", plain.host()).parse().unwrap();
    let digest = Digest::sha256(&blob);
    client
        .push_blob_bytes(&pushed, &digest, blob.clone().into())
        .await
        .unwrap();
    let tls = TlsRegistry::start(&pki, &plain.storage_dir(), false).unwrap();

    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(tls.host());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!("server = \"https://{}\"\n", tls.host()),
    )
    .unwrap();
    let config = ClientConfig {
        hosts_dirs: Some(vec![root.path().to_owned()]),
        plain_http: Vec::new(),
        retries: 0,
        ..plain_config()
    };
    let client = Client::with_credentials(config, Credentials::new()).unwrap();
    let repo: Reference = format!("{}/sys/app", tls.host()).parse().unwrap();
    let got = client.read_blob_range(&repo, &digest, 0..1000).await;
    assert_eq!(
        got.unwrap(),
        blob[..1000],
        "trusted through the system bundle"
    );
}
