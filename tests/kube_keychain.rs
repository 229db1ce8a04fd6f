//! Registry credentials from Kubernetes Secrets (`[kubeconfig_keychain]`) through the
//! daemon: a docker-registry requiring basic auth, a fake API server on loopback serving
//! the cluster's Secret list, a kubeconfig with a bearer token pointing at it, and no
//! docker config. While the cluster has no pull secret a layer falls back; once a
//! `kubernetes.io/dockerconfigjson` Secret for the registry appears, the next poll hands
//! it to the registry client and a layer of the private registry is mounted lazily and
//! read through FUSE. The API server sees the token and the type selector.
//!
//! Rotation: with a poll interval far longer than the test, the registry's password and
//! the pull Secret change together; the next lazy read of a chunk not yet fetched is
//! refused by the registry, which makes the daemon list the Secrets right away (one extra
//! list), and the read succeeds with the rotated password instead of failing with EIO.

mod common;
use common::remote::{cri_labels, expect_remote, DaemonStack, RemoteLayer};

use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use testkit::{Prereq, Registry, RegistryOptions};

const NS: &str = "kube";
const REPO: &str = "private/app";
const USER: &str = "puller";
const PASSWORD: &str = "s3cret-from-a-secret";
const ROTATED_PASSWORD: &str = "r0tated-s3cret";
const TOKEN: &str = "snapshotter-sa-token";
const FILE: &str = "data/greeting.txt";

/// A fake API server: answers every request with the current `body` (a SecretList) and
/// records each request's head.
struct ApiServer {
    address: String,
    body: Arc<Mutex<String>>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ApiServer {
    fn start(body: String) -> ApiServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new(body));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (served, seen) = (body.clone(), heads.clone());
        // Lives until the test process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = served.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        ApiServer {
            address,
            body,
            heads,
        }
    }

    fn serve(&self, body: String) {
        *self.body.lock().unwrap() = body;
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A SecretList with, for each host, one dockerconfigjson Secret holding our user and
/// `password`.
fn secret_list(hosts: &[String], password: &str) -> String {
    let items: Vec<serde_json::Value> = hosts
        .iter()
        .map(|host| {
            let auth = b64(format!("{USER}:{password}").as_bytes());
            let config = serde_json::json!({"auths": {host: {"auth": auth}}});
            serde_json::json!({
                "metadata": {"name": "pull", "namespace": "team"},
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": b64(config.to_string().as_bytes())},
            })
        })
        .collect();
    serde_json::json!({"kind": "SecretList", "apiVersion": "v1", "items": items}).to_string()
}

fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: node\n\
         clusters:\n- name: local\n  cluster:\n    server: {server}\n\
         users:\n- name: snapshotter\n  user:\n    token: {TOKEN}\n\
         contexts:\n- name: node\n  context:\n    cluster: local\n    user: snapshotter\n"
    )
}

/// A one-file eStargz layer (text `greeting`) pushed with the registry's credentials.
fn push_layer(registry: &Registry, greeting: &str) -> RemoteLayer {
    push_files(registry, &[(FILE, greeting.as_bytes())])
}

/// An eStargz layer of `files` under `data/`, pushed with the registry's credentials.
fn push_files(registry: &Registry, files: &[(&str, &[u8])]) -> RemoteLayer {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    for (path, bytes) in files {
        layer.file(path, bytes, 0o644).unwrap();
    }
    let tar = layer.finish().unwrap();
    let mut blob = Vec::new();
    let options = estargz::writer::WriterOptions::default();
    let written = estargz::writer::build(tar.as_slice(), &mut blob, &options).unwrap();
    let digest = written.blob_digest;
    registry.client().push_blob(REPO, &digest, &blob).unwrap();
    RemoteLayer {
        reference: format!("{}/{REPO}:v1", registry.host()),
        manifest_digest: digest.to_string(),
        digest: digest.to_string(),
        toc_digest: written.toc_digest.to_string(),
    }
}

#[test]
fn docker_config_secrets_from_the_api_server_make_private_layers_lazy() {
    testkit::require!(
        Prereq::Root,
        Prereq::DevFuse,
        Prereq::Binary(testkit::registry::REGISTRY_BIN)
    );
    let registry = private_registry();
    let api = ApiServer::start(secret_list(&[], PASSWORD));
    let (_files, extra) = keychain_config(&api, 1, "");
    let stack = DaemonStack::with_registry("kub-", registry, &[], &extra);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));

    // No pull secret in the cluster yet: the private layer cannot be read lazily.
    let before = push_layer(&stack.registry, "before the secret\n");
    let labels = cri_labels(&before, "before", &before.toc_digest);
    let prepared = rt.block_on(common::remote::prepare(
        &mut c,
        NS,
        "extract-before",
        labels,
    ));
    assert!(prepared.is_ok(), "{prepared:?}");
    assert!(stack.daemon.log_text().contains("no lazy pull"));

    // The Secret appears; the next poll stores it.
    api.serve(secret_list(&[stack.registry.host()], PASSWORD));
    stack.daemon.wait_for_log(
        "credential from a docker config secret",
        1,
        Duration::from_secs(10),
    );
    let after = push_layer(&stack.registry, "after the secret\n");
    let labels = cri_labels(&after, "after", &after.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-after", labels);
    let mounts = stack.fuse_mounts();
    assert_eq!(mounts.len(), 1, "{}", stack.daemon.log_text());
    let read = std::fs::read_to_string(mounts[0].join(FILE)).unwrap();
    assert_eq!(read, "after the secret\n");

    let heads = api.heads();
    assert!(!heads.is_empty());
    for head in &heads {
        let want = "GET /api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson ";
        assert!(head.starts_with(want), "{head}");
        let bearer = format!("authorization: bearer {TOKEN}");
        assert!(head.to_lowercase().contains(&bearer), "{head}");
    }
    let log = stack.daemon.log_text();
    assert!(
        !log.contains(PASSWORD),
        "the password never reaches the log"
    );
    assert!(!log.contains(TOKEN), "the token never reaches the log");
}

/// docker-registry on loopback that wants USER and PASSWORD.
fn private_registry() -> Registry {
    Registry::start_with(RegistryOptions {
        htpasswd: Some((USER.to_owned(), PASSWORD.to_owned())),
    })
    .unwrap()
}

/// Daemon config in which the Secrets of `api` (listed every `interval` seconds) are the
/// only source of credentials (no docker config), with `sections` (TOML tables) added;
/// and the temp dir holding its kubeconfig.
fn keychain_config(api: &ApiServer, interval: u64, sections: &str) -> (tempfile::TempDir, String) {
    let files = tempfile::tempdir().unwrap();
    let kubeconfig_path = files.path().join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig(&api.address)).unwrap();
    let config = format!(
        "docker_config = \"{}\"\n{sections}[kubeconfig_keychain]\nenable = true\n\
         kubeconfig_path = \"{}\"\nrefresh_interval = {interval}\n",
        files.path().join("none.json").display(),
        kubeconfig_path.display()
    );
    (files, config)
}

/// Deterministic, incompressible bytes: several chunks.
fn big_bytes() -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(11, 3 << 20)
}

#[test]
fn a_refused_lazy_read_relists_the_secrets_and_succeeds_with_the_rotated_password() {
    testkit::require!(
        Prereq::Root,
        Prereq::DevFuse,
        Prereq::Binary(testkit::registry::REGISTRY_BIN)
    );
    let registry = private_registry();
    let api = ApiServer::start(secret_list(&[registry.host()], PASSWORD));
    // One list at startup, the next only in an hour: any other list came from a refusal.
    // No background fetch: the big file's chunks stay in the registry until read.
    let (_files, extra) = keychain_config(&api, 3600, "[background_fetch]\nenable = false\n");
    let mut stack = DaemonStack::with_registry("kur-", registry, &[], &extra);
    stack.daemon.wait_for_log(
        "credential from a docker config secret",
        1,
        Duration::from_secs(10),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(common::grpc::connect(&stack.daemon.socket));

    let big = big_bytes();
    let layer = push_files(
        &stack.registry,
        &[(FILE, b"before the rotation\n"), ("data/big.bin", &big)],
    );
    let labels = cri_labels(&layer, "rotating", &layer.toc_digest);
    expect_remote(&rt, &mut c, NS, "extract-rotating", labels);
    let mounts = stack.fuse_mounts();
    assert_eq!(mounts.len(), 1, "{}", stack.daemon.log_text());
    let read = std::fs::read_to_string(mounts[0].join(FILE)).unwrap();
    assert_eq!(read, "before the rotation\n");
    let lists_before = api.heads().len();
    assert_eq!(lists_before, 1, "only the startup list so far");

    // The password rotates; the pull Secret is updated with it, long before the next poll.
    stack.registry.change_password(ROTATED_PASSWORD).unwrap();
    api.serve(secret_list(&[stack.registry.host()], ROTATED_PASSWORD));
    let read = std::fs::read(mounts[0].join("data/big.bin"));
    let read = read.unwrap_or_else(|e| panic!("{e}: {}", stack.daemon.log_text()));
    assert!(read == big, "bytes read after the rotation differ");

    let heads = api.heads();
    assert_eq!(
        heads.len(),
        lists_before + 1,
        "the refusals shared one extra list: {heads:?}"
    );
    let want = "GET /api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson ";
    assert!(heads[lists_before].starts_with(want), "{heads:?}");
    let log = stack.daemon.log_text();
    assert!(
        log.contains("docker config secrets listed after a refusal"),
        "{log}"
    );
    for secret in [PASSWORD, ROTATED_PASSWORD, TOKEN] {
        assert!(!log.contains(secret), "{secret} reached the log");
    }
}
