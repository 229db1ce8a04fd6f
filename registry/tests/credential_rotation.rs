//! Credentials that rotate while a client is in use (a lazily pulled layer is read for as
//! long as its container runs): after the registry starts refusing the old secret, a
//! secret given with `set_credential`, or written to the docker config file, is used by
//! the next range read of the same client, with HTTP basic auth and with bearer tokens; a
//! registered refresh hook is asked after a refusal (once for concurrent refusals, at most
//! once per interval) and the refused read is retried with what it brings.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use common::{client_with, plain_config, test_bytes, FakeServer, Reply};
use registry::{Client, ClientConfig, Credential, Credentials, Digest, Error, Reference};

const USER: &str = "puller";

fn basic(password: &str) -> Credential {
    Credential::Basic {
        username: USER.to_owned(),
        password: password.to_owned(),
    }
}

fn basic_header(password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    format!("Basic {encoded}")
}

/// The password the fake registry currently accepts; tests rotate it.
#[derive(Clone)]
struct Password(Arc<Mutex<String>>);

impl Password {
    fn new(text: &str) -> Password {
        Password(Arc::new(Mutex::new(text.to_owned())))
    }
    fn rotate(&self, text: &str) {
        *self.0.lock().unwrap() = text.to_owned();
    }
    fn current(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// A 206 answer with `blob`'s bytes in the request's `Range`.
fn range_reply(blob: &[u8], range: Option<&str>) -> Reply {
    let spec = range
        .and_then(|r| r.strip_prefix("bytes="))
        .unwrap_or("0-0");
    let (a, b) = spec.split_once('-').unwrap_or(("0", "0"));
    let (first, last): (usize, usize) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
    let last = last.min(blob.len() - 1);
    Reply::status(206)
        .header(
            "content-range",
            &format!("bytes {first}-{last}/{}", blob.len()),
        )
        .body(blob[first..=last].to_vec())
}

/// A registry serving `blob` to requests carrying basic auth with the current password.
async fn basic_registry(blob: Vec<u8>, password: Password) -> FakeServer {
    FakeServer::start(move |seen| {
        if seen.header("authorization") == Some(basic_header(&password.current()).as_str()) {
            return range_reply(&blob, seen.header("range"));
        }
        Reply::status(401).header("www-authenticate", r#"Basic realm="fake""#)
    })
    .await
}

fn blob_ref(host: &str) -> Reference {
    format!("{host}/private/app").parse().unwrap()
}

fn unauthorized(result: &Result<bytes::Bytes, Error>) -> bool {
    matches!(result, Err(Error::Unauthorized { .. }))
}

#[tokio::test]
async fn basic_password_rotated_with_set_credential_is_used_by_the_next_read() {
    let blob = test_bytes(4096, 1);
    let digest = Digest::sha256(&blob);
    let password = Password::new("first");
    let registry = basic_registry(blob.clone(), password.clone()).await;
    let repo = blob_ref(&registry.host());
    let mut credentials = Credentials::new();
    credentials.insert(&registry.host(), basic("first"));
    let client = client_with(credentials);

    let part = client.read_blob_range(&repo, &digest, 0..100).await;
    assert_eq!(&part.unwrap()[..], &blob[..100]);

    password.rotate("second");
    let refused = client.read_blob_range(&repo, &digest, 100..200).await;
    assert!(unauthorized(&refused), "old password: {refused:?}");

    client.set_credential(&registry.host(), basic("second"));
    let part = client.read_blob_range(&repo, &digest, 100..200).await;
    assert_eq!(&part.unwrap()[..], &blob[100..200]);
    let last = registry.seen().pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(basic_header("second").as_str())
    );
}

#[tokio::test]
async fn bearer_tokens_of_a_rotated_password_are_replaced_after_set_credential() {
    let blob = test_bytes(4096, 2);
    let digest = Digest::sha256(&blob);
    let password = Password::new("first");
    let issuer = password.clone();
    // Tokens name the password they were issued for; only the current one's are valid.
    let tokens = FakeServer::start(move |seen| {
        let current = issuer.current();
        if seen.header("authorization") == Some(basic_header(&current).as_str()) {
            return Reply::ok(format!(r#"{{"token":"tok-{current}","expires_in":3600}}"#));
        }
        Reply::status(401)
    })
    .await;
    let realm = format!("http://{}/token", tokens.host());
    let checker = password.clone();
    let served = blob.clone();
    let registry = FakeServer::start(move |seen| {
        let valid = format!("Bearer tok-{}", checker.current());
        if seen.header("authorization") == Some(valid.as_str()) {
            return range_reply(&served, seen.header("range"));
        }
        let challenge =
            format!(r#"Bearer realm="{realm}",service="fake",scope="repository:private/app:pull""#);
        Reply::status(401).header("www-authenticate", &challenge)
    })
    .await;
    let repo = blob_ref(&registry.host());
    let mut credentials = Credentials::new();
    credentials.insert(&registry.host(), basic("first"));
    let client = client_with(credentials);

    client.read_blob_range(&repo, &digest, 0..10).await.unwrap();
    password.rotate("second");
    let refused = client.read_blob_range(&repo, &digest, 10..20).await;
    assert!(
        unauthorized(&refused),
        "token of the old password: {refused:?}"
    );

    client.set_credential(&registry.host(), basic("second"));
    let part = client.read_blob_range(&repo, &digest, 10..20).await;
    assert_eq!(&part.unwrap()[..], &blob[10..20]);
    assert_eq!(
        registry.seen().pop().unwrap().header("authorization"),
        Some("Bearer tok-second")
    );
}

#[tokio::test]
async fn a_refused_password_is_replaced_by_the_rewritten_docker_config_without_an_error() {
    let blob = test_bytes(4096, 3);
    let digest = Digest::sha256(&blob);
    let password = Password::new("first");
    let registry = basic_registry(blob.clone(), password.clone()).await;
    let repo = blob_ref(&registry.host());
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("config.json");
    let write_config = |password: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
        let json = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
        std::fs::write(&docker_config, serde_json::to_vec(&json).unwrap()).unwrap();
    };
    write_config("first");
    let client = Client::new(ClientConfig {
        docker_config: Some(docker_config.clone()),
        ..plain_config()
    })
    .unwrap();
    client.read_blob_range(&repo, &digest, 0..10).await.unwrap();

    password.rotate("second");
    let refused = client.read_blob_range(&repo, &digest, 10..20).await;
    assert!(unauthorized(&refused), "file unchanged: {refused:?}");

    write_config("second");
    let part = client.read_blob_range(&repo, &digest, 10..20).await;
    assert_eq!(
        &part.unwrap()[..],
        &blob[10..20],
        "retried with the new file"
    );
}

/// A keychain whose source holds `password`'s current value; counts its refreshes, each
/// taking a moment so that concurrent refusals overlap it.
fn counting_hook(client: &Client, host: String, password: Password) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    client.set_refresh_hook(move |refused: String| {
        let (host, password, counter) = (host.clone(), password.clone(), counter.clone());
        async move {
            assert_eq!(refused, host, "the hook is told which registry refused");
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut found = Credentials::new();
            found.insert(&host, basic(&password.current()));
            found
        }
    });
    calls
}

#[tokio::test]
async fn concurrent_refusals_share_one_hook_refresh_and_their_reads_succeed() {
    let blob = test_bytes(8192, 4);
    let digest = Digest::sha256(&blob);
    let password = Password::new("first");
    let registry = basic_registry(blob.clone(), password.clone()).await;
    let repo = blob_ref(&registry.host());
    let mut credentials = Credentials::new();
    credentials.insert(&registry.host(), basic("first"));
    let client = client_with(credentials);
    let calls = counting_hook(&client, registry.host(), password.clone());
    client.read_blob_range(&repo, &digest, 0..10).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no refusal, no refresh");

    password.rotate("second");
    let reads = (1..9u64).map(|i| {
        let (client, repo) = (client.clone(), repo.clone());
        async move {
            client
                .read_blob_range(&repo, &digest, i * 100..i * 100 + 50)
                .await
        }
    });
    let results = futures_util::future::join_all(reads).await;
    for (i, result) in (1..9usize).zip(results) {
        assert_eq!(
            &result.unwrap()[..],
            &blob[i * 100..i * 100 + 50],
            "read {i}"
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one refresh for every refusal"
    );
}

#[tokio::test]
async fn a_registry_that_keeps_refusing_is_refreshed_at_most_once_per_interval() {
    let blob = test_bytes(4096, 5);
    let digest = Digest::sha256(&blob);
    let registry = basic_registry(blob.clone(), Password::new("accepted")).await;
    let repo = blob_ref(&registry.host());
    let mut credentials = Credentials::new();
    credentials.insert(&registry.host(), basic("revoked"));
    let client = client_with(credentials);
    // The keychain's source still has the refused password: nothing fresher to retry with.
    let calls = counting_hook(&client, registry.host(), Password::new("revoked"));
    for i in 0..3u64 {
        let refused = client.read_blob_range(&repo, &digest, i..i + 1).await;
        assert!(unauthorized(&refused), "read {i}: {refused:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "later refusals wait out the interval"
    );
}
