//! Private registries through the CRI image-service proxy, for real: a docker-registry
//! requiring HTTP basic auth, containerd with the CRI plugin using our snapshotter, and
//! our daemon with `[cri_keychain] enable` and no docker config credentials.
//!
//! A `PullImage` sent to containerd directly (with auth, so containerd can pull) leaves
//! the daemon without credentials: its layers fall back. The same call sent to our proxy
//! socket reaches containerd unchanged and leaves the credentials with the daemon: every
//! layer of that image is a remote snapshot and a file reads back through its FUSE mount.
//! The proxy also forwards `ImageStatus` and `ListImages`.

mod common;
use common::cri::runtime;
use common::cri::runtime::image_service_client::ImageServiceClient;
use common::cri::{cri_config, CriClient, CriDirs, CRI_NAMESPACE};
use common::stack::{committed_snapshots, convert_authenticated};
use common::Daemon;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use estargz_convert::record::Prioritized;
use testkit::{Containerd, ContainerdOptions, Registry, RegistryOptions};
use tonic::transport::Channel;

const USER: &str = "kube";
const PASSWORD: &str = "pull-s3cret";
const GREETING: &[u8] = b"hello from a private registry\n";

/// Registry with basic auth, containerd with CRI, our daemon with the proxy. Fields drop
/// in order: containerd, the daemon, the registry, then the directory.
struct Stack {
    containerd: Containerd,
    daemon: Daemon,
    registry: Registry,
    dir: tempfile::TempDir,
    /// A docker config with the registry's credentials, for the converter only.
    docker_config: PathBuf,
}

impl Stack {
    fn start() -> Stack {
        let options = RegistryOptions {
            htpasswd: Some((USER.to_owned(), PASSWORD.to_owned())),
        };
        let registry = Registry::start_with(options).unwrap();
        let dir = tempfile::Builder::new().prefix("crik-").tempdir().unwrap();
        let docker_config = dir.path().join("converter-docker-config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let json = serde_json::json!({"auths": {registry.host(): {"auth": auth}}});
        std::fs::write(&docker_config, serde_json::to_vec(&json).unwrap()).unwrap();

        // containerd's socket is known only once it runs: the daemon forwards to a
        // symlink made then (the proxy connects on first use).
        let upstream = dir.path().join("containerd-cri.sock");
        let daemon_config = format!(
            "[remote]\nplain_http = [\"{host}\"]\ndocker_config = \"{none}\"\n\
             [background_fetch]\nenable = false\n\
             [cri_keychain]\nenable = true\nlisten_path = \"{listen}\"\n\
             image_service_path = \"{upstream}\"\n",
            host = registry.host(),
            none = dir.path().join("no-such-docker-config.json").display(),
            listen = proxy_socket(dir.path()).display(),
            upstream = upstream.display(),
        );
        let daemon = Daemon::start_with_config(dir.path(), &daemon_config);
        let dirs = CriDirs {
            cni: &dir.path().join("cni"),
            registry_hosts: &dir.path().join("certs.d"),
        };
        let sandbox_image = registry.reference("unused/pause", "v1");
        let extra_config = cri_config(&daemon.socket, &registry.host(), &sandbox_image, &dirs);
        let mut containerd = Containerd::start_with(ContainerdOptions {
            extra_config,
            enable_cri: true,
        })
        .unwrap();
        containerd.set_namespace(CRI_NAMESPACE);
        std::os::unix::fs::symlink(containerd.address(), &upstream).unwrap();
        Stack {
            containerd,
            daemon,
            registry,
            dir,
            docker_config,
        }
    }

    /// Pushes `layers` as `private/NAME:plain` and converts it to `private/NAME:esgz`
    /// with the converter's credentials; returns the eStargz reference.
    fn estargz_image(&self, name: &str, layers: Vec<Vec<u8>>) -> String {
        let mut image = testkit::ImageBuilder::new();
        for layer in layers {
            image = image.layer(layer);
        }
        let image = image
            .cmd(&["/bin/cat", "/data/greeting.txt"])
            .build()
            .unwrap();
        let plain = self
            .registry
            .push(&format!("private/{name}"), "plain", &image)
            .unwrap();
        let reference = self.registry.reference(&format!("private/{name}"), "esgz");
        let prioritized = Prioritized::load(None, &[]).unwrap();
        convert_authenticated(&plain, &reference, prioritized, Some(&self.docker_config));
        reference
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Err(e) = self.containerd.stop() {
            eprintln!("containerd cleanup: {e}");
        }
        self.daemon.kill();
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

fn proxy_socket(dir: &Path) -> PathBuf {
    dir.join("run/cri.sock")
}

fn data_layer(text: &[u8]) -> Vec<u8> {
    let mut layer = testkit::LayerBuilder::new();
    layer.dir("data", 0o755).unwrap();
    layer.file("data/greeting.txt", text, 0o644).unwrap();
    layer.finish().unwrap()
}

/// An image client on `socket`, retrying the connection for up to 20 s.
async fn image_client(socket: &Path) -> ImageServiceClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match common::grpc::unix_channel(socket).await {
            Ok(channel) => return ImageServiceClient::new(channel),
            Err(e) => assert!(Instant::now() < deadline, "{}: {e}", socket.display()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pull_request(image: &str) -> runtime::PullImageRequest {
    runtime::PullImageRequest {
        image: Some(runtime::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        auth: Some(runtime::AuthConfig {
            username: USER.to_owned(),
            password: PASSWORD.to_owned(),
            ..Default::default()
        }),
        sandbox_config: None,
    }
}

/// `<mount>/data/greeting.txt` of the FUSE layer mounts under the daemon's root.
fn greetings_through_mounts(dir: &Path) -> Vec<Vec<u8>> {
    let mounts = testkit::mounts::mounts_under(&dir.join("root/snapshots")).unwrap();
    mounts
        .iter()
        .filter_map(|mount| std::fs::read(mount.join("data/greeting.txt")).ok())
        .collect()
}

#[test]
fn pull_credentials_through_the_cri_proxy_make_private_layers_lazy() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = Stack::start();
    let direct = stack.estargz_image("direct", vec![data_layer(b"pulled around the proxy\n")]);
    let proxied = stack.estargz_image(
        "proxied",
        vec![testkit::busybox_layer().unwrap(), data_layer(GREETING)],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let containerd_log = || std::fs::read_to_string(stack.containerd.log_path()).unwrap();

    // Around the proxy: containerd has the credentials, our daemon does not.
    let mut cri = rt.block_on(CriClient::connect(&stack.containerd.address()));
    let pulled = rt.block_on(cri.image.pull_image(pull_request(&direct)));
    assert!(pulled.is_ok(), "{pulled:?}\n{}", containerd_log());
    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!((committed, remote), (1, 0), "{}", stack.daemon.log_text());
    assert!(
        stack.daemon.log_text().contains("no lazy pull"),
        "the layer fell back: {}",
        stack.daemon.log_text()
    );

    // Through the proxy: the same call, and now the daemon has them too.
    let mut proxy = rt.block_on(image_client(&proxy_socket(stack.dir.path())));
    let pulled = rt.block_on(proxy.pull_image(pull_request(&proxied)));
    let image_ref = match pulled {
        Ok(response) => response.into_inner().image_ref,
        Err(status) => panic!(
            "{status}\n{}\n{}",
            stack.daemon.log_text(),
            containerd_log()
        ),
    };
    assert!(image_ref.starts_with("sha256:"), "{image_ref}");
    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(
        (committed, remote),
        (3, 2),
        "both layers of the proxied pull are remote: {}",
        stack.daemon.log_text()
    );
    let greetings = greetings_through_mounts(stack.dir.path());
    assert_eq!(
        greetings,
        [GREETING.to_vec()],
        "read through the FUSE mount"
    );

    // Other image calls go through unchanged.
    let status = runtime::ImageStatusRequest {
        image: Some(runtime::ImageSpec {
            image: proxied.clone(),
            ..Default::default()
        }),
        verbose: false,
    };
    let status = rt
        .block_on(proxy.image_status(status))
        .unwrap()
        .into_inner();
    assert_eq!(status.image.map(|i| i.id), Some(image_ref.clone()));
    let listed = rt
        .block_on(proxy.list_images(runtime::ListImagesRequest::default()))
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.images.iter().map(|i| i.id.as_str()).collect();
    assert!(ids.contains(&image_ref.as_str()), "{ids:?}");

    let log = stack.daemon.log_text();
    assert!(log.contains("pull credentials kept"), "{log}");
    assert!(
        !log.contains(PASSWORD),
        "the password never reaches the log"
    );
}
