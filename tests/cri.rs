//! The Kubernetes path, for real: containerd's CRI plugin configured for our snapshotter
//! (`snapshotter = "stargz"`, `disable_snapshot_annotations = false`, proxy plugin) pulls
//! an eStargz image from a local plain-HTTP registry through the CRI `PullImage`; every
//! layer becomes a remote snapshot (no layer blob lands in containerd's content store),
//! and a pod (host network, so no CNI; sandbox image built here) runs a container of that
//! image whose output reaches the CRI log file.

mod common;
use common::cri::runtime;
use common::cri::{cri_config, host_network_pod, log_entries, CriClient, CriDirs, CRI_NAMESPACE};
use common::stack::{committed_snapshots, convert_to_estargz};
use common::Daemon;

use std::path::Path;
use std::time::{Duration, Instant};

use testkit::{Containerd, ContainerdOptions, Registry};

const GREETING_FILE: &str = "/data/greeting.txt";
const GREETING: &str = "hello from a lazily pulled pod";
/// How long the container may take to run and exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Registry, our daemon, a containerd with the CRI plugin, and the test directory (CNI
/// dirs, hosts.toml, pod logs). Fields drop in order: containerd (which kills leftover
/// pod tasks and unmounts), the daemon, the registry, then the directory.
struct CriStack {
    containerd: Containerd,
    daemon: Daemon,
    registry: Registry,
    dir: tempfile::TempDir,
    sandbox_image: String,
}

impl CriStack {
    fn start() -> CriStack {
        let registry = Registry::start().unwrap();
        let dir = tempfile::Builder::new().prefix("cri-").tempdir().unwrap();
        let daemon_config = format!("[remote]\nplain_http = [\"{}\"]\n", registry.host());
        let daemon = Daemon::start_with_config(dir.path(), &daemon_config);
        let pause = testkit::busybox_image(&["/bin/sleep", "3600"]).unwrap();
        let sandbox_image = registry.push("cri/pause", "v1", &pause).unwrap();
        let dirs = CriDirs {
            cni: &dir.path().join("cni"),
            registry_hosts: &dir.path().join("certs.d"),
        };
        let extra_config = cri_config(&daemon.socket, &registry.host(), &sandbox_image, &dirs);
        let mut containerd = Containerd::start_with(ContainerdOptions {
            extra_config,
            enable_cri: true,
        })
        .unwrap();
        containerd.set_namespace(CRI_NAMESPACE);
        CriStack {
            containerd,
            daemon,
            registry,
            dir,
            sandbox_image,
        }
    }
}

impl Drop for CriStack {
    fn drop(&mut self) {
        if let Err(e) = self.containerd.stop() {
            eprintln!("containerd cleanup: {e}");
        }
        self.daemon.kill();
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

/// busybox and a layer with the greeting file, running `cat` on it.
fn app_image() -> testkit::BuiltImage {
    let mut data = testkit::LayerBuilder::new();
    data.dir("data", 0o755).unwrap();
    let text = format!("{GREETING}\n");
    data.file("data/greeting.txt", text.as_bytes(), 0o644)
        .unwrap();
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(data.finish().unwrap())
        .cmd(&["/bin/cat", GREETING_FILE])
        .build()
        .unwrap()
}

/// The layer digests of `name:tag` in `registry`.
fn layer_digests(registry: &Registry, name: &str, tag: &str) -> Vec<String> {
    let manifest = registry.client().get_manifest(name, tag).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap();
    let layers = json["layers"].as_array().unwrap();
    let digests = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned());
    digests.collect()
}

/// The message of a CRI answer; on an error, panics with it and containerd's log.
fn answer<T>(
    result: Result<tonic::Response<T>, tonic::Status>,
    call: &str,
    containerd: &Containerd,
) -> T {
    match result {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let log = std::fs::read_to_string(containerd.log_path()).unwrap_or_default();
            panic!("{call}: {status}\ncontainerd log:\n{log}")
        }
    }
}

/// Polls the container until it exited; its final status.
async fn wait_exited(cri: &mut CriClient, id: &str) -> runtime::ContainerStatus {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let request = runtime::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        let status = cri.runtime.container_status(request).await.unwrap();
        let status = status.into_inner().status.unwrap();
        if status.state == runtime::ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(Instant::now() < deadline, "still running: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a pod with one container of `image` logging under `log_dir`; returns the
/// container's log text. Checks that the CRI plugin keeps the sandbox's root and state
/// under `containerd`'s temp dir. Stops and removes the pod before returning.
async fn run_pod(
    cri: &mut CriClient,
    containerd: &Containerd,
    image: &str,
    log_dir: &Path,
) -> String {
    let pod = host_network_pod("lazy-pod", log_dir);
    let request = runtime::RunPodSandboxRequest {
        config: Some(pod.clone()),
        runtime_handler: String::new(),
    };
    let pod_id = cri.runtime.run_pod_sandbox(request).await;
    let pod_id = answer(pod_id, "RunPodSandbox", containerd).pod_sandbox_id;
    for base in [containerd.root(), containerd.dir().join("state")] {
        let sandbox = base
            .join("io.containerd.grpc.v1.cri/sandboxes")
            .join(&pod_id);
        assert!(
            sandbox.is_dir(),
            "CRI keeps {} under the test dir",
            sandbox.display()
        );
    }
    let container = runtime::ContainerConfig {
        metadata: Some(runtime::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(runtime::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        log_path: "app.log".into(),
        ..Default::default()
    };
    let request = runtime::CreateContainerRequest {
        pod_sandbox_id: pod_id.clone(),
        config: Some(container),
        sandbox_config: Some(pod),
    };
    let id = cri.runtime.create_container(request).await;
    let id = answer(id, "CreateContainer", containerd).container_id;
    let start = runtime::StartContainerRequest {
        container_id: id.clone(),
    };
    answer(
        cri.runtime.start_container(start).await,
        "StartContainer",
        containerd,
    );
    let status = wait_exited(cri, &id).await;
    assert_eq!(status.exit_code, 0, "{status:?}");
    assert_eq!(
        status.log_path,
        log_dir.join("app.log").display().to_string()
    );
    let log = std::fs::read_to_string(&status.log_path).unwrap();

    let stop = runtime::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    };
    answer(
        cri.runtime.stop_pod_sandbox(stop).await,
        "StopPodSandbox",
        containerd,
    );
    let remove = runtime::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    };
    answer(
        cri.runtime.remove_pod_sandbox(remove).await,
        "RemovePodSandbox",
        containerd,
    );
    log
}

#[test]
fn cri_pulls_estargz_lazily_and_runs_a_pod() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = CriStack::start();
    let plain = stack
        .registry
        .push("cri/app", "plain", &app_image())
        .unwrap();
    let reference = stack.registry.reference("cri/app", "esgz");
    convert_to_estargz(&plain, &reference);
    let log_dir = stack.dir.path().join("pods/lazy-pod");
    std::fs::create_dir_all(&log_dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cri = rt.block_on(CriClient::connect(&stack.containerd.address()));

    let pull = runtime::PullImageRequest {
        image: Some(runtime::ImageSpec {
            image: reference.clone(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: None,
    };
    let pulled = rt.block_on(cri.image.pull_image(pull));
    let image_ref = answer(pulled, "PullImage", &stack.containerd).image_ref;

    let (committed, remote) = committed_snapshots(&stack.containerd);
    assert_eq!(committed, 2, "{}", stack.daemon.log_text());
    assert_eq!(remote, 2, "every layer is a remote snapshot");
    let content = stack
        .containerd
        .ctr(["content", "ls", "-q"])
        .unwrap()
        .stdout;
    for layer in layer_digests(&stack.registry, "cri/app", "esgz") {
        assert!(!content.contains(&layer), "layer {layer} was downloaded");
    }
    let daemon_log = stack.daemon.log_text();
    assert!(!daemon_log.contains("no lazy pull"), "{daemon_log}");

    let log = rt.block_on(run_pod(&mut cri, &stack.containerd, &image_ref, &log_dir));

    assert_eq!(log_entries(&log), [format!("stdout F {GREETING}")], "{log}");
    let sandbox_pulled = stack
        .containerd
        .ctr(["images", "ls", "-q"])
        .unwrap()
        .stdout
        .contains(&stack.sandbox_image);
    assert!(
        sandbox_pulled,
        "the sandbox image came from the local registry"
    );
}

/// `deploy/kubernetes/containerd-config.toml` as an admin merges it: containerd loads the
/// CRI plugin with it (a config error disables the plugin, it does not stop containerd)
/// and registers the `stargz` proxy snapshotter.
#[test]
fn deploy_containerd_config_loads_the_cri_plugin() {
    testkit::require!(
        testkit::Prereq::Root,
        testkit::Prereq::Binary(testkit::containerd::CONTAINERD_BIN),
        testkit::Prereq::Binary(testkit::containerd::CTR_BIN),
    );
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/containerd-config.toml");
    let snippet = std::fs::read_to_string(path).unwrap();
    // testkit's generated config already says `version = 2`.
    let extra_config: String = snippet
        .lines()
        .filter(|line| !line.starts_with("version"))
        .map(|line| format!("{line}\n"))
        .collect();
    let containerd = Containerd::start_with(ContainerdOptions {
        extra_config,
        enable_cri: true,
    })
    .unwrap();

    let plugins = containerd.ctr(["plugins", "ls"]).unwrap().stdout;
    let status = |id: &str| {
        plugins
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(id))
            .and_then(|line| line.split_whitespace().last().map(str::to_owned))
    };
    let log = std::fs::read_to_string(containerd.log_path()).unwrap();
    assert_eq!(status("cri").as_deref(), Some("ok"), "{plugins}\n{log}");
    assert_eq!(status("stargz").as_deref(), Some("ok"), "{plugins}");
}
