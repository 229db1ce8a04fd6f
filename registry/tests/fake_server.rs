//! Client behaviour against scripted servers: bearer tokens, redirects, 200 answers to range
//! requests, retries, upload Locations on other hosts, limits and timeouts.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::{client_with, form_pairs, plain_config, test_bytes, FakeServer, Reply};
use registry::{Client, Credential, Credentials, Digest, Error, Reference};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MANIFEST: &[u8] =
    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;

fn basic(user: &str, password: &str) -> Credential {
    Credential::Basic {
        username: user.to_owned(),
        password: password.to_owned(),
    }
}

fn credentials_for(host: &str, credential: Credential) -> Credentials {
    let mut credentials = Credentials::new();
    credentials.insert(host, credential);
    credentials
}

fn reference(host: &str, rest: &str) -> Reference {
    format!("{host}/{rest}").parse().unwrap()
}

fn basic_header(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

fn bearer_challenge(realm: &str, scope: &str) -> String {
    format!(r#"Bearer realm="{realm}",service="fake-registry",scope="{scope}""#)
}

#[tokio::test]
async fn bearer_flow_fetches_one_token_with_basic_credentials_and_caches_it() {
    let tokens = FakeServer::start(|seen| match seen.path.as_str() {
        "/token" => Reply::ok(r#"{"token":"tok-1","expires_in":300}"#),
        _ => Reply::status(404),
    })
    .await;
    let realm = format!("http://{}/token", tokens.host());
    let registry = FakeServer::start(move |seen| {
        if seen.header("authorization") != Some("Bearer tok-1") {
            let challenge = bearer_challenge(&realm, "repository:team/app:pull");
            return Reply::status(401).header("www-authenticate", &challenge);
        }
        match seen.path.as_str() {
            "/v2/team/app/manifests/v1" => Reply::ok(MANIFEST).header("content-type", OCI_MANIFEST),
            _ => Reply::status(404),
        }
    })
    .await;
    let client = client_with(credentials_for(&registry.host(), basic("alice", "s3cret")));
    let image = reference(&registry.host(), "team/app:v1");

    for _ in 0..2 {
        let manifest = client.get_manifest(&image).await.unwrap();
        assert_eq!(manifest.bytes, MANIFEST);
        assert_eq!(manifest.media_type, OCI_MANIFEST);
        assert_eq!(manifest.digest, Digest::sha256(MANIFEST));
    }

    let token_requests = tokens.seen_at("/token");
    assert_eq!(token_requests.len(), 1, "token cached for the second fetch");
    let request = &token_requests[0];
    assert_eq!(request.query_values("service"), ["fake-registry"]);
    assert_eq!(request.query_values("scope"), ["repository:team/app:pull"]);
    assert_eq!(
        request.header("authorization"),
        Some(basic_header("alice", "s3cret").as_str())
    );
    let statuses: Vec<Option<&str>> = registry
        .seen()
        .iter()
        .map(|s| s.header("authorization").map(|_| "auth"))
        .collect::<Vec<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        statuses,
        [None, Some("auth"), Some("auth")],
        "anonymous first, then token"
    );
}

#[tokio::test]
async fn push_asks_for_a_pull_push_token_and_accepts_access_token_field() {
    let tokens = FakeServer::start(|_| Reply::ok(r#"{"access_token":"anon-tok"}"#)).await;
    let realm = format!("http://{}/token", tokens.host());
    let digest = Digest::sha256(MANIFEST);
    let registry = FakeServer::start(move |seen| {
        if seen.header("authorization") != Some("Bearer anon-tok") {
            let challenge = bearer_challenge(&realm, "repository:app:pull,push");
            return Reply::status(401).header("www-authenticate", &challenge);
        }
        Reply::status(201).header("docker-content-digest", &digest.to_string())
    })
    .await;
    let client = client_with(Credentials::new());
    let image = reference(&registry.host(), "app:v1");

    let pushed = client
        .push_manifest(&image, OCI_MANIFEST, MANIFEST)
        .await
        .unwrap();

    assert_eq!(pushed, digest);
    let token_request = &tokens.seen()[0];
    assert_eq!(
        token_request.query_values("scope"),
        ["repository:app:pull,push"]
    );
    assert_eq!(
        token_request.header("authorization"),
        None,
        "anonymous token request"
    );
    let put = registry.seen().pop().unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, "/v2/app/manifests/v1");
    assert_eq!(put.header("content-type"), Some(OCI_MANIFEST));
    assert_eq!(put.body, MANIFEST);
}

#[tokio::test]
async fn identity_token_uses_the_refresh_token_grant() {
    let tokens = FakeServer::start(|seen| match seen.method.as_str() {
        "POST" => Reply::ok(r#"{"access_token":"from-refresh","expires_in":120}"#),
        _ => Reply::status(405),
    })
    .await;
    let realm = format!("http://{}/oauth2/token", tokens.host());
    let registry = FakeServer::start(move |seen| {
        if seen.header("authorization") != Some("Bearer from-refresh") {
            let challenge = bearer_challenge(&realm, "repository:app:pull");
            return Reply::status(401).header("www-authenticate", &challenge);
        }
        Reply::ok(MANIFEST).header("content-type", OCI_MANIFEST)
    })
    .await;
    let credential = Credential::IdentityToken("refresh-123".to_owned());
    let client = client_with(credentials_for(&registry.host(), credential));

    client
        .get_manifest(&reference(&registry.host(), "app:v1"))
        .await
        .unwrap();

    let request = &tokens.seen()[0];
    assert_eq!(request.method, "POST");
    let form = form_pairs(std::str::from_utf8(&request.body).unwrap());
    let field = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(field("grant_type"), Some("refresh_token"));
    assert_eq!(field("refresh_token"), Some("refresh-123"));
    assert_eq!(field("service"), Some("fake-registry"));
    assert_eq!(field("scope"), Some("repository:app:pull"));
    assert!(field("client_id").is_some());
}

#[tokio::test]
async fn token_endpoint_refusal_is_unauthorized_naming_the_host() {
    let tokens = FakeServer::start(|_| Reply::status(401)).await;
    let realm = format!("http://{}/token", tokens.host());
    let registry = FakeServer::start(move |_| {
        let challenge = bearer_challenge(&realm, "repository:app:pull");
        Reply::status(401).header("www-authenticate", &challenge)
    })
    .await;
    let client = client_with(credentials_for(&registry.host(), basic("bob", "pw-Zq81")));

    let error = client
        .get_manifest(&reference(&registry.host(), "app:v1"))
        .await
        .unwrap_err();

    match &error {
        Error::Unauthorized { host, .. } => assert_eq!(host, &registry.host()),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let message = error.to_string();
    assert!(!message.contains("pw-Zq81"), "no secret in {message}");
}

#[tokio::test]
async fn basic_challenge_without_or_with_wrong_credentials_is_unauthorized() {
    let registry = FakeServer::start(|seen| match seen.header("authorization") {
        Some(value) if value == basic_header("u", "right") => {
            Reply::ok(MANIFEST).header("content-type", OCI_MANIFEST)
        }
        _ => Reply::status(401).header("www-authenticate", r#"Basic realm="fake""#),
    })
    .await;
    let image = reference(&registry.host(), "app:v1");
    let cases = [
        ("no credentials", Credentials::new(), false),
        (
            "wrong password",
            credentials_for(&registry.host(), basic("u", "nope")),
            false,
        ),
        (
            "right password",
            credentials_for(&registry.host(), basic("u", "right")),
            true,
        ),
    ];
    for (name, credentials, succeeds) in cases {
        let before = registry.seen().len();
        let result = client_with(credentials).get_manifest(&image).await;
        assert_eq!(result.is_ok(), succeeds, "{name}: {result:?}");
        if !succeeds {
            assert!(matches!(result, Err(Error::Unauthorized { .. })), "{name}");
        }
        assert!(
            registry.seen().len() - before <= 2,
            "{name}: at most one retry with auth"
        );
    }
}

/// A registry that ignores `Range` and always sends the whole blob.
#[tokio::test]
async fn range_reads_from_a_registry_answering_200_return_only_the_range() {
    let blob = test_bytes(1 << 20, 7);
    let digest = Digest::sha256(&blob);
    let body = bytes::Bytes::from(blob.clone());
    let registry = FakeServer::start(move |_| Reply::ok(body.clone())).await;
    let client = client_with(Credentials::new());
    let repo = reference(&registry.host(), "app");
    let len = blob.len() as u64;

    for range in [0..10, 1000..2000, len - 5..len, 300_000..900_000] {
        let got = client
            .read_blob_range(&repo, &digest, range.clone())
            .await
            .unwrap();
        assert_eq!(
            got,
            blob[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    assert_eq!(
        registry.seen()[1].header("range"),
        Some("bytes=1000-1999"),
        "Range header sent"
    );
    let tail = client.read_blob_tail(&repo, &digest, 4096).await.unwrap();
    assert_eq!(tail.size, len, "size from Content-Length");
    assert!(
        tail.bytes == blob[blob.len() - 4096..],
        "the tail of a 200 answer"
    );
    let ranges = [500..600, 0..4, 550..560, 900_000..900_001];
    let got = client
        .read_blob_ranges(&repo, &digest, &ranges)
        .await
        .unwrap();
    for (range, bytes) in ranges.iter().zip(&got) {
        assert_eq!(
            bytes,
            &blob[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    let error = client
        .read_blob_range(&repo, &digest, len - 5..len + 5)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::RangeNotSatisfied { .. }),
        "{error:?}"
    );
}

fn parse_range(header: &str) -> (usize, usize) {
    let spec = header.strip_prefix("bytes=").unwrap();
    let (a, b) = spec.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// Honours ranges on `/v2/good/...`, lies in Content-Range on `/v2/liar/...`, and answers
/// 416 past the end.
async fn ranged_server(blob: Vec<u8>) -> FakeServer {
    FakeServer::start(move |seen| {
        let (first, last) = parse_range(seen.header("range").unwrap());
        if last >= blob.len() {
            return Reply::status(416).header("content-range", &format!("bytes */{}", blob.len()));
        }
        let claimed = if seen.path.starts_with("/v2/liar/") {
            first + 1
        } else {
            first
        };
        Reply::status(206)
            .header(
                "content-range",
                &format!("bytes {claimed}-{last}/{}", blob.len()),
            )
            .body(blob[first..=last].to_vec())
    })
    .await
}

#[tokio::test]
async fn partial_content_is_validated_and_close_ranges_are_merged() {
    let blob = test_bytes(600_000, 3);
    let digest = Digest::sha256(&blob);
    let registry = ranged_server(blob.clone()).await;
    let client = client_with(Credentials::new());
    let good = reference(&registry.host(), "good");

    let ranges = [20..30, 0..10, 500_000..500_010];
    let got = client
        .read_blob_ranges(&good, &digest, &ranges)
        .await
        .unwrap();
    for (range, bytes) in ranges.iter().zip(&got) {
        assert_eq!(bytes, &blob[range.start as usize..range.end as usize]);
    }
    let mut sent: Vec<String> = registry
        .seen()
        .iter()
        .map(|s| s.header("range").unwrap().to_owned())
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        ["bytes=0-29", "bytes=500000-500009"],
        "two merged requests"
    );

    let past_end = client
        .read_blob_range(&good, &digest, 599_990..600_010)
        .await;
    assert!(
        matches!(past_end, Err(Error::RangeNotSatisfied { .. })),
        "{past_end:?}"
    );
    let liar = reference(&registry.host(), "liar");
    let lie = client.read_blob_range(&liar, &digest, 10..20).await;
    assert!(matches!(lie, Err(Error::Protocol { .. })), "{lie:?}");
}

#[tokio::test]
async fn redirects_to_another_host_never_carry_the_registry_authorization() {
    let blob = test_bytes(4096, 11);
    let digest = Digest::sha256(&blob);
    let storage_blob = blob.clone();
    let storage = FakeServer::start(move |_| Reply::ok(storage_blob.clone())).await;
    // Both spellings differ from the registry's host:port: another name, another port.
    for storage_host in [format!("localhost:{}", storage.port()), storage.host()] {
        let target = format!("http://{storage_host}/bucket/blob?X-Amz-Signature=sig");
        let registry = FakeServer::start(move |seen| match seen.header("authorization") {
            None => Reply::status(401).header("www-authenticate", r#"Basic realm="r""#),
            Some(_) => Reply::status(307).header("location", &target),
        })
        .await;
        let client = client_with(credentials_for(&registry.host(), basic("u", "p")));
        let repo = reference(&registry.host(), "app");
        let before = storage.seen().len();

        let mut downloaded = Vec::new();
        client
            .download_blob(&repo, &digest, &mut downloaded)
            .await
            .unwrap();
        let part = client
            .read_blob_range(&repo, &digest, 100..200)
            .await
            .unwrap();

        assert_eq!(downloaded, blob);
        assert_eq!(part, blob[100..200]);
        let registry_auth = registry
            .seen()
            .iter()
            .filter(|s| s.header("authorization").is_some())
            .count();
        assert_eq!(registry_auth, 2, "registry got credentials");
        let at_storage = &storage.seen()[before..];
        assert_eq!(at_storage.len(), 2);
        for seen in at_storage {
            assert_eq!(
                seen.header("authorization"),
                None,
                "{storage_host} got Authorization"
            );
            assert_eq!(seen.query, "X-Amz-Signature=sig");
        }
        assert_eq!(
            at_storage[1].header("range"),
            Some("bytes=100-199"),
            "Range follows redirect"
        );
    }
}

#[tokio::test]
async fn idempotent_requests_retry_5xx_and_429_others_do_not() {
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let registry = FakeServer::start(move |seen| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        match (seen.method.as_str(), seen.path.as_str()) {
            ("GET", "/v2/flaky/manifests/v1") if n == 0 => Reply::status(503),
            ("GET", "/v2/flaky/manifests/v1") if n == 1 => Reply::status(429),
            ("GET", "/v2/flaky/manifests/v1") => {
                Reply::ok(MANIFEST).header("content-type", OCI_MANIFEST)
            }
            ("PUT", _) => {
                Reply::status(500).body(r#"{"errors":[{"code":"UNKNOWN","message":"disk full"}]}"#)
            }
            _ => Reply::status(404),
        }
    })
    .await;
    let client = client_with(Credentials::new());

    let manifest = client
        .get_manifest(&reference(&registry.host(), "flaky:v1"))
        .await
        .unwrap();
    assert_eq!(manifest.bytes, MANIFEST);
    assert_eq!(registry.seen().len(), 3, "two retries");

    let put = client
        .push_manifest(
            &reference(&registry.host(), "flaky:v1"),
            OCI_MANIFEST,
            MANIFEST,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(put, Error::BadResponse { status: 500, .. }),
        "{put:?}"
    );
    assert!(put.to_string().contains("disk full"), "{put}");
    assert_eq!(registry.seen().len(), 4, "PUT not retried");

    let missing = client
        .get_manifest(&reference(&registry.host(), "other:v1"))
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    assert_eq!(registry.seen().len(), 5, "404 not retried");
}

#[tokio::test]
async fn upload_to_an_absolute_location_on_another_host_keeps_its_query_and_no_auth() {
    let storage = FakeServer::start(|_| Reply::status(201)).await;
    let location = format!("http://localhost:{}/upload/1?_state=s%2B1", storage.port());
    let registry = FakeServer::start(move |seen| {
        if seen.header("authorization").is_none() {
            return Reply::status(401).header("www-authenticate", r#"Basic realm="r""#);
        }
        match seen.method.as_str() {
            "HEAD" => Reply::status(404),
            "POST" => Reply::status(202).header("location", &location),
            _ => Reply::status(400),
        }
    })
    .await;
    let client = client_with(credentials_for(&registry.host(), basic("u", "p")));
    let content = test_bytes(100_000, 5);
    let digest = Digest::sha256(&content);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &content).unwrap();

    let repo = reference(&registry.host(), "app");
    client
        .push_blob_file(&repo, &digest, &path, content.len() as u64)
        .await
        .unwrap();

    let put = storage.seen().pop().unwrap();
    assert_eq!(put.method, "PUT");
    assert_eq!(put.path, "/upload/1");
    assert_eq!(put.query_values("_state"), ["s+1"]);
    assert_eq!(put.query_values("digest"), [digest.to_string()]);
    assert_eq!(put.header("authorization"), None);
    assert_eq!(put.header("content-length"), Some("100000"));
    assert_eq!(put.body, content);

    let wrong_size = client.push_blob_file(&repo, &digest, &path, 5).await;
    assert!(
        matches!(wrong_size, Err(Error::Io { .. })),
        "{wrong_size:?}"
    );
}

#[tokio::test]
async fn manifests_are_bounded_and_checked_against_the_requested_digest() {
    let big = vec![b' '; 5 << 20];
    let registry = FakeServer::start(move |seen| match seen.path.as_str() {
        "/v2/app/manifests/big" => Reply::ok(big.clone()).header("content-type", OCI_MANIFEST),
        _ => Reply::ok(MANIFEST).header("content-type", OCI_MANIFEST),
    })
    .await;
    let client = client_with(Credentials::new());

    let too_big = client
        .get_manifest(&reference(&registry.host(), "app:big"))
        .await
        .unwrap_err();
    assert!(too_big.to_string().contains("larger than"), "{too_big}");

    let other = Digest::sha256(b"something else");
    let by_digest = reference(&registry.host(), "app").with_digest(other);
    match client.get_manifest(&by_digest).await {
        Err(Error::DigestMismatch {
            expected, actual, ..
        }) => {
            assert_eq!(expected, other);
            assert_eq!(actual, Digest::sha256(MANIFEST));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_servers_time_out_and_closed_ports_fail_to_connect() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap().to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let config = registry::ClientConfig {
        timeout: Duration::from_millis(300),
        retries: 1,
        ..plain_config()
    };
    let client = Client::with_credentials(config, Credentials::new()).unwrap();
    let error = client
        .get_manifest(&reference(&silent, "app:v1"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    hold.abort();

    let closed = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let error = client
        .get_manifest(&reference(&closed, "app:v1"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
}

#[tokio::test]
async fn concurrent_requests_on_a_cold_client_share_one_token_fetch() {
    let tokens = FakeServer::start(|_| Reply::ok(r#"{"token":"shared"}"#)).await;
    let realm = format!("http://{}/token", tokens.host());
    let blob = test_bytes(2 << 20, 21);
    let digest = Digest::sha256(&blob);
    let registry = FakeServer::start(move |seen| {
        if seen.header("authorization") != Some("Bearer shared") {
            let challenge = bearer_challenge(&realm, "repository:app:pull");
            return Reply::status(401).header("www-authenticate", &challenge);
        }
        Reply::ok(blob.clone())
    })
    .await;
    let client = client_with(Credentials::new());
    let repo = reference(&registry.host(), "app");

    let ranges = [
        0..10,
        500_000..500_010,
        1_000_000..1_000_010,
        2_000_000..2_000_010,
    ];
    let got = client
        .read_blob_ranges(&repo, &digest, &ranges)
        .await
        .unwrap();

    assert_eq!(got.len(), 4);
    assert_eq!(
        tokens.seen().len(),
        1,
        "one token fetch for four parallel requests"
    );
}

#[tokio::test]
async fn a_refused_cached_token_is_replaced_by_a_fresh_one() {
    let issued = Arc::new(AtomicUsize::new(0));
    let counter = issued.clone();
    let tokens = FakeServer::start(move |_| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::ok(format!(r#"{{"token":"tok-{n}","expires_in":3600}}"#))
    })
    .await;
    let realm = format!("http://{}/token", tokens.host());
    let accepted_once = Arc::new(AtomicUsize::new(0));
    let registry = FakeServer::start(move |seen| {
        let ok = match seen.header("authorization") {
            // tok-1 is revoked after its first use.
            Some("Bearer tok-1") => accepted_once.fetch_add(1, Ordering::SeqCst) == 0,
            Some("Bearer tok-2") => true,
            _ => false,
        };
        if ok {
            return Reply::ok(MANIFEST).header("content-type", OCI_MANIFEST);
        }
        let challenge = bearer_challenge(&realm, "repository:app:pull");
        Reply::status(401).header("www-authenticate", &challenge)
    })
    .await;
    let client = client_with(Credentials::new());
    let image = reference(&registry.host(), "app:v1");

    client.get_manifest(&image).await.unwrap();
    client.get_manifest(&image).await.unwrap();

    assert_eq!(
        tokens.seen().len(),
        2,
        "second token after the first was refused"
    );
    let last = registry.seen().pop().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer tok-2"));
}

/// Serves raw HTTP/1.1 responses, one scripted answer per connection, recording each
/// request head. The first answer promises `blob.len()` bytes but sends half and closes.
async fn truncating_server(
    blob: Vec<u8>,
    resume_with_206: bool,
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = heads.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            recorded.lock().unwrap().push(head.clone());
            let len = blob.len();
            let response = if connection == 0 {
                let mut r =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n").into_bytes();
                r.extend_from_slice(&blob[..len / 2]);
                r
            } else if resume_with_206 {
                let start: usize = head
                    .split("range: bytes=")
                    .nth(1)
                    .and_then(|rest| rest.split('-').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let body = &blob[start..];
                let mut r = format!(
                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\ncontent-range: bytes {start}-{}/{len}\r\nconnection: close\r\n\r\n",
                    body.len(),
                    len - 1
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            } else {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
                )
                .into_bytes();
                r.extend_from_slice(&blob);
                r
            };
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
        }
    });
    (host, heads)
}

#[tokio::test]
async fn broken_downloads_resume_from_the_received_offset() {
    let blob = test_bytes(300_000, 31);
    let digest = Digest::sha256(&blob);
    for resume_with_206 in [true, false] {
        let (host, heads) = truncating_server(blob.clone(), resume_with_206).await;
        let client = client_with(Credentials::new());

        let mut downloaded = Vec::new();
        let count = client
            .download_blob(&reference(&host, "app"), &digest, &mut downloaded)
            .await
            .unwrap();

        assert_eq!(count, blob.len() as u64, "206: {resume_with_206}");
        assert!(
            downloaded == blob,
            "content after resume (206: {resume_with_206})"
        );
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 2, "one resume");
        assert!(!heads[0].contains("range:"));
        assert!(heads[1].contains("range: bytes=150000-"), "{}", heads[1]);
    }
}

/// Every piece of a range body, until it ends or breaks.
async fn pieces(body: &mut registry::RangeBody) -> (Vec<u8>, Option<Error>) {
    let mut got = Vec::new();
    loop {
        match body.next_piece().await {
            Ok(Some(piece)) => got.extend_from_slice(&piece),
            Ok(None) => return (got, None),
            Err(error) => return (got, Some(error)),
        }
    }
}

#[tokio::test]
async fn range_bodies_hand_out_the_range_and_can_resume_after_a_break() {
    // A registry answering 200 with the whole blob: only the range comes out.
    let blob = test_bytes(1 << 20, 8);
    let digest = Digest::sha256(&blob);
    let whole = bytes::Bytes::from(blob.clone());
    let registry = FakeServer::start(move |_| Reply::ok(whole.clone())).await;
    let client = client_with(Credentials::new());
    let repo = reference(&registry.host(), "app");
    let mut body = client
        .open_blob_range(&repo, &digest, 300_000..900_000)
        .await
        .unwrap();
    let (got, error) = pieces(&mut body).await;
    assert!(error.is_none(), "{error:?}");
    assert!(
        got == blob[300_000..900_000],
        "the range out of a 200 answer"
    );
    assert_eq!(body.received(), 600_000);

    // A body that breaks half way: the bytes before the break, then a transient error,
    // and a second request from the break gives exactly the rest.
    let blob = test_bytes(300_000, 9);
    let digest = Digest::sha256(&blob);
    let (host, heads) = truncating_server(blob.clone(), true).await;
    let repo = reference(&host, "app");
    let len = blob.len() as u64;
    let mut body = client
        .open_blob_range(&repo, &digest, 0..len)
        .await
        .unwrap();
    let (mut got, error) = pieces(&mut body).await;
    let error = error.expect("the body broke");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(got.len() as u64, body.received());
    assert!(got.len() < blob.len() && got[..] == blob[..got.len()]);
    let from = body.received();
    let mut rest = client
        .open_blob_range(&repo, &digest, from..len)
        .await
        .unwrap();
    let (tail, error) = pieces(&mut rest).await;
    assert!(error.is_none(), "{error:?}");
    got.extend_from_slice(&tail);
    assert!(got == blob, "resumed body");
    let heads = heads.lock().unwrap().clone();
    assert!(
        heads[1].contains(&format!("range: bytes={from}-")),
        "{}",
        heads[1]
    );
}
