//! Docker credential helpers as docker runs them: scripts named `docker-credential-NAME` on
//! PATH, chosen by `credHelpers` and `credsStore` in a docker config file, in front of a
//! basic-auth docker-registry and a token-auth fake registry; a helper that hangs and one
//! that says "not found".

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{plain_config, test_bytes, FakeServer, Reply};
use registry::{Client, ClientConfig, Credentials, Digest, Error, Reference};
use testkit::{Prereq, Registry, RegistryOptions};

const REGISTRY: Prereq = Prereq::Binary(testkit::registry::REGISTRY_BIN);

/// The directory on PATH that holds this binary's helper scripts (PATH is set once).
fn helper_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", dir.path().display()));
        dir
    })
    .path()
}

/// Writes `docker-credential-<name>` running `body` (sh); its stdin is saved to
/// `<name>.stdin` in the helper directory.
fn helper(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = helper_dir();
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nserver=$(cat)\nprintf '%s' \"$server\" > '{}/{name}.stdin'\n{body}\n",
        dir.display()
    );
    let path = dir.join(format!("docker-credential-{name}"));
    let staging = dir.join(format!(".{name}.tmp"));
    std::fs::write(&staging, script).unwrap();
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&staging, &path).unwrap();
    dir.join(format!("{name}.stdin"))
}

fn client_with_docker_config(dir: &Path, json: &str) -> Client {
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    let config = ClientConfig {
        docker_config: Some(path),
        credential_helper_timeout: Duration::from_secs(2),
        retries: 0,
        ..plain_config()
    };
    Client::new(config).unwrap()
}

async fn push_with(registry: &Registry, repo: &str, bytes: &[u8]) -> Digest {
    let mut credentials = Credentials::new();
    if let Some(c) = registry.credentials() {
        credentials.insert(
            &registry.host(),
            registry::Credential::Basic {
                username: c.user.clone(),
                password: c.password.clone(),
            },
        );
    }
    let client = Client::with_credentials(plain_config(), credentials).unwrap();
    let reference: Reference = format!("{}/{repo}", registry.host()).parse().unwrap();
    let digest = Digest::sha256(bytes);
    client
        .push_blob_bytes(&reference, &digest, bytes.to_vec().into())
        .await
        .unwrap();
    digest
}

const NOT_FOUND: &str = "echo 'credentials not found in native keychain'; exit 1";

#[tokio::test]
async fn creds_store_helper_authenticates_basic_auth_reads() {
    testkit::require!(REGISTRY);
    let registry = Registry::start_with(RegistryOptions {
        htpasswd: Some(("alice".into(), "s3cret-pw".into())),
    })
    .unwrap();
    let blob = test_bytes(16 << 10, 21);
    let digest = push_with(&registry, "private/app", &blob).await;
    let stdin = helper(
        "basicstore",
        &format!(
            "if [ \"$server\" = '{}' ]; then echo '{{\"ServerURL\":\"x\",\"Username\":\"alice\",\"Secret\":\"s3cret-pw\"}}'; else {NOT_FOUND}; fi",
            registry.host()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let client =
        client_with_docker_config(dir.path(), r#"{"auths": {}, "credsStore": "basicstore"}"#);
    let repo: Reference = format!("{}/private/app", registry.host()).parse().unwrap();
    let got = client.read_blob_range(&repo, &digest, 10..2010).await;
    assert_eq!(got.unwrap(), blob[10..2010]);
    assert_eq!(
        std::fs::read_to_string(stdin).unwrap(),
        registry.host(),
        "server URL on stdin"
    );

    // A helper that says "not found" means anonymous: the registry refuses.
    helper("nothing", NOT_FOUND);
    let anonymous = client_with_docker_config(dir.path(), r#"{"credsStore": "nothing"}"#);
    let error = anonymous
        .read_blob_range(&repo, &digest, 0..10)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Unauthorized { .. }), "{error}");
}

#[tokio::test]
async fn cred_helpers_identity_token_goes_to_the_token_server_as_a_refresh_grant() {
    let blob = test_bytes(4096, 22);
    let digest = Digest::sha256(&blob);
    let served = blob.clone();
    let server = FakeServer::start(move |seen| {
        if seen.path == "/token" {
            let form = common::form_pairs(&String::from_utf8_lossy(&seen.body));
            let grant = form
                .iter()
                .any(|(k, v)| k == "grant_type" && v == "refresh_token");
            let refresh = form
                .iter()
                .any(|(k, v)| k == "refresh_token" && v == "refresh-abc");
            return if seen.method == "POST" && grant && refresh {
                Reply::ok(r#"{"access_token": "tok-1", "expires_in": 300}"#)
            } else {
                Reply::status(401)
            };
        }
        if seen.header("authorization") != Some("Bearer tok-1") {
            let host = seen.header("host").unwrap_or_default().to_owned();
            return Reply::status(401).header(
                "WWW-Authenticate",
                &format!("Bearer realm=\"http://{host}/token\",service=\"fake\""),
            );
        }
        Reply::status(206)
            .header("Content-Range", &format!("bytes 0-9/{}", served.len()))
            .body(served[..10].to_vec())
    })
    .await;
    helper("wrongstore", NOT_FOUND);
    let stdin = helper(
        "tokenhelper",
        "echo '{\"ServerURL\":\"x\",\"Username\":\"<token>\",\"Secret\":\"refresh-abc\"}'",
    );
    let dir = tempfile::tempdir().unwrap();
    let client = client_with_docker_config(
        dir.path(),
        &format!(
            r#"{{"credsStore": "wrongstore", "credHelpers": {{"{}": "tokenhelper"}}}}"#,
            server.host()
        ),
    );
    let repo: Reference = format!("{}/app", server.host()).parse().unwrap();
    let got = client.read_blob_range(&repo, &digest, 0..10).await.unwrap();
    assert_eq!(got, blob[..10], "credHelpers beats credsStore");
    assert_eq!(std::fs::read_to_string(stdin).unwrap(), server.host());
    assert_eq!(server.seen_at("/token").len(), 1, "one refresh grant");
}

#[tokio::test]
async fn a_hanging_helper_is_killed_and_the_read_goes_on_anonymously() {
    testkit::require!(REGISTRY);
    let registry = Registry::start().unwrap();
    let blob = test_bytes(4096, 23);
    let digest = push_with(&registry, "open/app", &blob).await;
    helper("hangs", "exec sleep 60");
    let dir = tempfile::tempdir().unwrap();
    let client = client_with_docker_config(dir.path(), r#"{"credsStore": "hangs"}"#);
    let repo: Reference = format!("{}/open/app", registry.host()).parse().unwrap();
    let start = Instant::now();
    let got = client.read_blob_range(&repo, &digest, 0..100).await;
    assert_eq!(got.unwrap(), blob[..100]);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "bounded by credential_helper_timeout (2 s): {took:?}"
    );
    // Its answer (none) is remembered: the next read does not wait again.
    let start = Instant::now();
    client
        .read_blob_range(&repo, &digest, 0..100)
        .await
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
}
