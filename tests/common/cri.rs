//! A small client of containerd's CRI plugin (Kubernetes CRI `runtime.v1`, the subset in
//! `tests/proto/cri/`), and the containerd config that points the CRI plugin at our
//! snapshotter, a plain-HTTP local registry and a sandbox image.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// Generated from `tests/proto/cri/runtime_v1_min.proto` by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod runtime {
    tonic::include_proto!("runtime.v1");
}

use runtime::image_service_client::ImageServiceClient;
use runtime::runtime_service_client::RuntimeServiceClient;

/// The containerd namespace every CRI object lives in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Both CRI services on one containerd socket.
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to containerd at `socket` and waits (up to 20 s) until the CRI plugin
    /// answers `Version`; panics with the last error otherwise.
    pub async fn connect(socket: &Path) -> CriClient {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let last = match super::grpc::unix_channel(socket).await {
                Ok(channel) => {
                    let mut client = CriClient {
                        runtime: RuntimeServiceClient::new(channel.clone()),
                        image: ImageServiceClient::new(channel),
                    };
                    let version = runtime::VersionRequest {
                        version: "v1".into(),
                    };
                    match client.runtime.version(version).await {
                        Ok(_) => return client,
                        Err(status) => status.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "CRI at {} never answered: {last}",
                socket.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Where the CRI plugin keeps what it would otherwise put on the host.
pub struct CriDirs<'a> {
    /// CNI `bin_dir` and `conf_dir` parent (left empty: pods use the host network).
    pub cni: &'a Path,
    /// containerd's `hosts.toml` tree (`registry.config_path`).
    pub registry_hosts: &'a Path,
}

/// containerd config enabling the CRI plugin with snapshotter `stargz` (our daemon at
/// `socket`, as proxy plugin), snapshot annotations passed as labels, `sandbox_image`,
/// and `registry` (`host:port`) reached over plain HTTP through a `hosts.toml` that this
/// writes under `dirs.registry_hosts`. `restrict_oom_score_adj`: the sandbox's default
/// oom_score_adj (-998) is lower than ours, which needs CAP_SYS_RESOURCE; test machines
/// (containers themselves) may lack it, and runc then fails with "can't get final child's
/// PID from pipe".
pub fn cri_config(socket: &Path, registry: &str, sandbox_image: &str, dirs: &CriDirs) -> String {
    let host_dir = dirs.registry_hosts.join(registry);
    std::fs::create_dir_all(&host_dir).unwrap();
    let hosts = format!(
        "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  \
         capabilities = [\"pull\", \"resolve\"]\n"
    );
    std::fs::write(host_dir.join("hosts.toml"), hosts).unwrap();
    let cni = dirs.cni.display();
    format!(
        "{proxy}\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n  \
           sandbox_image = \"{sandbox_image}\"\n  \
           restrict_oom_score_adj = true\n  \
           [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    \
             snapshotter = \"stargz\"\n    \
             disable_snapshot_annotations = false\n  \
           [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    \
             bin_dir = \"{cni}/bin\"\n    \
             conf_dir = \"{cni}/net.d\"\n  \
           [plugins.\"io.containerd.grpc.v1.cri\".registry]\n    \
             config_path = \"{hosts}\"\n",
        proxy = super::stack::proxy_plugin(socket),
        hosts = dirs.registry_hosts.display(),
    )
}

/// A pod sandbox config on the host network (no CNI needed) logging under `log_dir`.
pub fn host_network_pod(name: &str, log_dir: &Path) -> runtime::PodSandboxConfig {
    use runtime::NamespaceMode;
    runtime::PodSandboxConfig {
        metadata: Some(runtime::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        // Host network means the host UTS namespace: no hostname of its own (as kubelet).
        hostname: String::new(),
        log_directory: log_dir.display().to_string(),
        linux: Some(runtime::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(runtime::LinuxSandboxSecurityContext {
                namespace_options: Some(runtime::NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                }),
            }),
        }),
        ..Default::default()
    }
}

/// Each line of a CRI container log file (`<time> <stream> <tag> <message>`) without its
/// timestamp: `stdout F hello`.
pub fn log_entries(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.split_once(' ').map(|(_, rest)| rest))
        .collect()
}
