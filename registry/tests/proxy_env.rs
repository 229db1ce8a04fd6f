//! `HTTP_PROXY` and `NO_PROXY` from the environment: a fake proxy on loopback receives the
//! registry requests of a client built with `HTTP_PROXY` set, and none for a host listed
//! in `NO_PROXY`. One test in its own binary, since it changes the process environment.

mod common;

use common::{plain_config, test_bytes, FakeServer, Reply};
use registry::{Client, Credentials, Digest, Reference};

#[tokio::test]
async fn http_proxy_and_no_proxy_are_honoured() {
    let blob = test_bytes(1024, 41);
    let digest = Digest::sha256(&blob);
    let served = blob.clone();
    let proxy = FakeServer::start(move |_| {
        Reply::status(206)
            .header("Content-Range", &format!("bytes 0-9/{}", served.len()))
            .body(served[..10].to_vec())
    })
    .await;
    std::env::set_var("HTTP_PROXY", format!("http://{}", proxy.host()));
    std::env::set_var("NO_PROXY", "direct.invalid");
    let client = Client::with_credentials(plain_config(), Credentials::new()).unwrap();

    let proxied: Reference = "registry.invalid/app".parse().unwrap();
    let got = client
        .read_blob_range(&proxied, &digest, 0..10)
        .await
        .unwrap();
    assert_eq!(got, blob[..10], "served through the proxy");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("host"), Some("registry.invalid"));
    assert_eq!(seen[0].path, format!("/v2/app/blobs/{digest}"));

    let direct: Reference = "direct.invalid/app".parse().unwrap();
    let config = registry::ClientConfig {
        retries: 0,
        ..plain_config()
    };
    let client = Client::with_credentials(config, Credentials::new()).unwrap();
    let error = client
        .read_blob_range(&direct, &digest, 0..10)
        .await
        .unwrap_err();
    assert_eq!(
        proxy.seen().len(),
        1,
        "NO_PROXY host not sent to the proxy: {error}"
    );
    std::env::remove_var("HTTP_PROXY");
    std::env::remove_var("NO_PROXY");
}
