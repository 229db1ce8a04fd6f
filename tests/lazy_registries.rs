//! Registries as containerd and docker resolve them, through the real daemon and real
//! docker-registries on loopback: with no registry config at all, `127.0.0.1:PORT` and
//! `localhost:PORT` are plain HTTP and lazily pulled; a registry name that only a
//! hosts.toml resolves (server on a loopback port behind a mirror that is down and one
//! that lacks the blob); a TLS registry demanding a client certificate, with its CA and
//! the certificate named in hosts.toml; a basic-auth registry whose credential comes from
//! a docker credential helper on PATH (`credsStore`). Every read gives the layer's exact bytes and
//! no layer falls back to a full pull.

mod common;
use common::remote::{cri_labels, expect_remote, RemoteLayer};
use common::Daemon;

use std::path::{Path, PathBuf};

use testkit::{Prereq, Registry, RegistryOptions};

const NS: &str = "registries";
const REPO: &str = "team/app";
const FILE: &str = "data/file.bin";
const FILE_LEN: usize = 1 << 20;

/// Only the test's reads fetch (no readahead, no background fetch).
const QUIET: &str = "[layer]\nreadahead = false\n[background_fetch]\nenable = false\n";

fn content(seed: u64) -> Vec<u8> {
    estargz::testutil::pseudo_random_bytes(seed, FILE_LEN)
}

/// An eStargz layer of one file pushed to `registry`, its labels naming `name` as the
/// image reference's registry.
fn push_layer(registry: &Registry, name: &str, seed: u64) -> RemoteLayer {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer.file(FILE, &content(seed), 0o644).unwrap();
    let tar = layer.finish().unwrap();
    let options = estargz::writer::WriterOptions {
        chunk_size: 256 << 10,
        threads: 1,
        ..Default::default()
    };
    let mut blob = Vec::new();
    let written = estargz::writer::build(tar.as_slice(), &mut blob, &options).unwrap();
    let digest = written.blob_digest;
    registry.client().push_blob(REPO, &digest, &blob).unwrap();
    RemoteLayer {
        reference: format!("{name}/{REPO}:v1"),
        manifest_digest: digest.to_string(),
        digest: digest.to_string(),
        toc_digest: written.toc_digest.to_string(),
    }
}

/// The daemon with `config`; killed, and its mounts removed, on drop.
struct Stack {
    daemon: Daemon,
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
}

impl Stack {
    fn start(prefix: &str, config: &str) -> Stack {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let daemon = Daemon::start_with_config(dir.path(), config);
        let rt = tokio::runtime::Runtime::new().unwrap();
        Stack { daemon, dir, rt }
    }

    fn fuse_mounts(&self) -> Vec<PathBuf> {
        testkit::mounts::mounts_under(&self.dir.path().join("root/snapshots")).unwrap()
    }

    /// Prepares `layer` as snapshot `name`, checks it is remote, returns its FUSE mount.
    fn mount(&self, layer: &RemoteLayer, name: &str) -> PathBuf {
        let before = self.fuse_mounts();
        let mut c = self.rt.block_on(common::grpc::connect(&self.daemon.socket));
        let labels = cri_labels(layer, name, &layer.toc_digest);
        expect_remote(&self.rt, &mut c, NS, &format!("extract-{name}"), labels);
        let mut added = self.fuse_mounts();
        added.retain(|m| !before.contains(m));
        assert_eq!(added.len(), 1, "{name}: {}", self.daemon.log_text());
        added.remove(0)
    }

    fn assert_lazy(&self) {
        let log = self.daemon.log_text();
        assert!(!log.contains("no lazy pull"), "no layer fell back: {log}");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.daemon.kill();
        common::kill_fuse_manager(&self.dir.path().join("root"));
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

fn assert_reads(path: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{what}: read {path:?}: {e}"));
    assert!(got == want, "{what}: {path:?} differs from the layer");
}

/// Blob GETs a docker-registry answered with bytes, from its access log.
fn served_blob_gets(registry: &Registry, digest: &str) -> usize {
    let log = std::fs::read_to_string(registry.log_path()).unwrap_or_default();
    let request = format!("/blobs/{digest} HTTP/1.1\" ");
    log.lines()
        .filter(|line| line.contains("\"GET /v2/"))
        .filter_map(|line| line.split(&request).nth(1))
        .filter(|status| status.starts_with("200 ") || status.starts_with("206 "))
        .count()
}

const NEEDS: [Prereq; 3] = [
    Prereq::Root,
    Prereq::DevFuse,
    Prereq::Binary(testkit::registry::REGISTRY_BIN),
];

#[test]
fn loopback_registries_are_lazy_without_any_registry_config() {
    testkit::require!(stack: &NEEDS);
    let registry = Registry::start().unwrap();
    let port = registry.host().rsplit_once(':').unwrap().1.to_owned();
    // No [remote] section: nothing says plain HTTP; hosts directories point nowhere so
    // the machine's own /etc/containerd/certs.d cannot interfere.
    let empty = tempfile::tempdir().unwrap();
    let config = format!(
        "[remote]\nhosts_dirs = [\"{}\"]\n{QUIET}",
        empty.path().display()
    );
    let stack = Stack::start("reg-lo-", &config);
    for (seed, host) in [(31, registry.host()), (32, format!("localhost:{port}"))] {
        let layer = push_layer(&registry, &host, seed);
        let mounted = stack.mount(&layer, &format!("layer-{seed}"));
        assert_reads(&mounted.join(FILE), &content(seed), &host);
        assert!(
            served_blob_gets(&registry, &layer.digest) >= 2,
            "{host}: lazily read"
        );
    }
    stack.assert_lazy();
}

#[test]
fn a_registry_name_only_hosts_toml_resolves_is_lazy_through_its_mirrors() {
    testkit::require!(stack: &NEEDS);
    let origin = Registry::start().unwrap();
    let lacking = Registry::start().unwrap();
    let name = "registry.internal.test";
    let layer = push_layer(&origin, name, 33);
    let hosts = tempfile::tempdir().unwrap();
    let dir = hosts.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{}\"\n\n[host.\"http://127.0.0.1:1\"]\n  capabilities = [\"pull\"]\n\n\
             [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            origin.host(),
            lacking.host()
        ),
    )
    .unwrap();
    let config = format!(
        "[remote]\nhosts_dirs = [\"{}\"]\n{QUIET}",
        hosts.path().display()
    );
    let stack = Stack::start("reg-ht-", &config);
    let mounted = stack.mount(&layer, "hosts-toml");
    assert_reads(&mounted.join(FILE), &content(33), "through hosts.toml");
    assert!(
        served_blob_gets(&origin, &layer.digest) >= 2,
        "the server served"
    );
    let lacking_log = std::fs::read_to_string(lacking.log_path()).unwrap_or_default();
    assert!(
        lacking_log.contains(&format!("/v2/{REPO}/blobs/{}", layer.digest)),
        "the mirror lacking the blob was asked first"
    );
    let log = stack.daemon.log_text();
    assert!(
        log.contains("mirror failed"),
        "the dead mirror is logged: {log}"
    );
    stack.assert_lazy();
}

#[test]
fn a_credential_helper_authenticates_lazy_reads() {
    testkit::require!(stack: &NEEDS);
    let registry = Registry::start_with(RegistryOptions {
        htpasswd: Some(("helper-user".into(), "helper-pw-1".into())),
    })
    .unwrap();
    let layer = push_layer(&registry, &registry.host(), 34);
    let tools = tempfile::tempdir().unwrap();
    let helper = tools.path().join("docker-credential-teststore");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nserver=$(cat)\nif [ \"$server\" = '{}' ]; then\n  \
             echo '{{\"ServerURL\":\"x\",\"Username\":\"helper-user\",\"Secret\":\"helper-pw-1\"}}'\n\
             else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n",
            registry.host()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The daemon inherits PATH; this binary's other tests run no helpers.
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{path}", tools.path().display()));
    let docker_config = tools.path().join("config.json");
    std::fs::write(
        &docker_config,
        r#"{"auths": {}, "credsStore": "teststore"}"#,
    )
    .unwrap();
    let empty = tempfile::tempdir().unwrap();
    let config = format!(
        "[remote]\nhosts_dirs = [\"{}\"]\ndocker_config = \"{}\"\n{QUIET}",
        empty.path().display(),
        docker_config.display()
    );
    let stack = Stack::start("reg-ch-", &config);
    let mounted = stack.mount(&layer, "helper");
    assert_reads(
        &mounted.join(FILE),
        &content(34),
        "authenticated by the helper",
    );
    let log = stack.daemon.log_text();
    assert!(!log.contains("helper-pw-1"), "the secret is never logged");
    stack.assert_lazy();
}

#[test]
fn a_tls_registry_demanding_a_client_certificate_is_lazy_through_hosts_toml() {
    testkit::require!(stack: &NEEDS);
    testkit::require!(Prereq::Binary(testkit::tls::OPENSSL_BIN));
    let pki = testkit::tls::Pki::new().unwrap();
    let plain = Registry::start().unwrap();
    let tls = testkit::tls::TlsRegistry::start(&pki, &plain.storage_dir(), true).unwrap();
    let layer = push_layer(&plain, &tls.host(), 35);
    let hosts = tempfile::tempdir().unwrap();
    let dir = hosts.path().join(tls.host());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"https://{}\"\nca = \"{}\"\nclient = [[\"{}\", \"{}\"]]\n",
            tls.host(),
            pki.path("ca.pem").display(),
            pki.path("client.pem").display(),
            pki.path("client.key").display()
        ),
    )
    .unwrap();
    let config = format!(
        "[remote]\nhosts_dirs = [\"{}\"]\n{QUIET}",
        hosts.path().display()
    );
    let stack = Stack::start("reg-tls-", &config);
    let mounted = stack.mount(&layer, "tls");
    assert_reads(
        &mounted.join(FILE),
        &content(35),
        "over TLS with a client certificate",
    );
    assert_eq!(
        served_blob_gets(&plain, &layer.digest),
        0,
        "every byte came over TLS"
    );
    stack.assert_lazy();
}
