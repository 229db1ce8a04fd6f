//! Debug logs name each request but never a password, basic credential or token.
//!
//! Its own test binary: the subscriber is process-global, so no other test's logging mixes
//! in and tracing's per-callsite interest cache sees the subscriber from the start.

mod common;

use std::sync::Arc;

use base64::Engine as _;
use common::{client_with, FakeServer, Reply};
use registry::{Credential, Credentials, Reference};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MANIFEST: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

/// Collects formatted log output in memory.
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn debug_logs_show_requests_but_never_secrets() {
    let capture = LogCapture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let tokens = FakeServer::start(|_| Reply::ok(r#"{"token":"tok-Secret-42"}"#)).await;
    let realm = format!("http://{}/token", tokens.host());
    let registry = FakeServer::start(move |seen| match seen.header("authorization") {
        Some("Bearer tok-Secret-42") => Reply::ok(MANIFEST).header("content-type", OCI_MANIFEST),
        _ => Reply::status(401).header(
            "www-authenticate",
            &format!(r#"Bearer realm="{realm}",service="s""#),
        ),
    })
    .await;
    let mut credentials = Credentials::new();
    let credential = Credential::Basic {
        username: "user".to_owned(),
        password: "pw-Hidden-7".to_owned(),
    };
    credentials.insert(&registry.host(), credential);
    let client = client_with(credentials.clone());
    client
        .get_manifest(
            &format!("{}/app:v1", registry.host())
                .parse::<Reference>()
                .unwrap(),
        )
        .await
        .unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode("user:pw-Hidden-7");
    assert!(
        logs.contains("registry request"),
        "per-request debug line:\n{logs}"
    );
    assert!(logs.contains("/v2/app/manifests/v1"), "url logged:\n{logs}");
    for secret in ["tok-Secret-42", "pw-Hidden-7", &encoded] {
        assert!(!logs.contains(secret), "{secret} logged:\n{logs}");
    }
    let debug = format!("{client:?} {credentials:?}");
    assert!(!debug.contains("pw-Hidden-7"), "{debug}");
}
