//! The deployment files a cluster admin applies as they are: the Kubernetes manifests in
//! `deploy/kubernetes/`, the containerd CRI snippet next to them, and the CI conversion
//! workflow in `deploy/ci/`. Every YAML document is parsed (serde_yaml_ng, into
//! `serde_json::Value`) and the fields that make the deployment work are checked against
//! each other and against the daemon's own config parser.

use std::path::{Path, PathBuf};

use estargz_snapshotter::config::Config;
use serde::Deserialize;
use serde_json::Value;

const ROOT_DIR: &str = "/var/lib/containerd-stargz-grpc";
const SOCKET_DIR: &str = "/run/containerd-stargz-grpc";

fn deploy_file(relative: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    (path, text)
}

/// Every document of a (multi-document) YAML file.
fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

/// The one document of `kind` in `documents`.
fn of_kind<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let mut found = documents.iter().filter(|d| d["kind"] == kind);
    let document = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    document
}

/// The entry of array `list` whose `name` is `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    let items = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"));
    let item = items.iter().find(|item| item["name"] == name);
    item.unwrap_or_else(|| panic!("no {name:?} in {list}"))
}

/// The host path behind the container's mount at `mount_path`, and the mount itself.
fn host_mount<'a>(pod: &'a Value, mount_path: &str) -> (&'a str, &'a Value) {
    let container = &pod["containers"][0];
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount = mounts.iter().find(|m| m["mountPath"] == mount_path);
    let mount = mount.unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
    let volume = named(&pod["volumes"], mount["name"].as_str().unwrap());
    let host = volume["hostPath"]["path"].as_str();
    (
        host.unwrap_or_else(|| panic!("{mount_path} is not a hostPath")),
        mount,
    )
}

fn manifests() -> Vec<Value> {
    yaml_documents(&deploy_file("kubernetes/estargz-snapshotter.yaml").1)
}

/// The optional RBAC for `[kubeconfig_keychain]`.
fn keychain_rbac() -> Vec<Value> {
    yaml_documents(&deploy_file("kubernetes/secrets-keychain-rbac.yaml").1)
}

fn containerd_config() -> toml::Value {
    let (_, text) = deploy_file("kubernetes/containerd-config.toml");
    toml::from_str(&text).unwrap()
}

/// The daemon config shipped in the ConfigMap, parsed by the daemon's own parser.
fn configmap_config(documents: &[Value]) -> Config {
    let configmap = of_kind(documents, "ConfigMap");
    let text = configmap["data"]["config.toml"].as_str().unwrap();
    Config::from_toml(text, Path::new("configmap/config.toml")).unwrap()
}

#[test]
fn every_manifest_has_the_api_version_of_its_kind() {
    let documents = manifests();
    let cases = [
        ("Namespace", "v1"),
        ("ServiceAccount", "v1"),
        ("ConfigMap", "v1"),
        ("RuntimeClass", "node.k8s.io/v1"),
        ("DaemonSet", "apps/v1"),
    ];
    assert_eq!(documents.len(), cases.len(), "{documents:?}");
    for (kind, api_version) in cases {
        let document = of_kind(&documents, kind);
        assert_eq!(document["apiVersion"], api_version, "{kind}");
        assert!(
            document["metadata"]["name"].is_string(),
            "{kind} has a name"
        );
    }
}

#[test]
fn daemonset_runs_the_daemon_privileged_with_the_host_dirs_it_needs() {
    let documents = manifests();
    let daemonset = of_kind(&documents, "DaemonSet");
    let namespace = of_kind(&documents, "Namespace")["metadata"]["name"].clone();
    assert_eq!(daemonset["metadata"]["namespace"], namespace);
    let selector = &daemonset["spec"]["selector"]["matchLabels"];
    let template = &daemonset["spec"]["template"];
    for (key, value) in selector.as_object().unwrap() {
        assert_eq!(
            &template["metadata"]["labels"][key], value,
            "selector {key}"
        );
    }
    let pod = &template["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["privileged"], true);
    assert_ne!(pod["hostPID"], true, "hostPID is not needed");

    let cases = [
        ("root dir, shared back to the host", ROOT_DIR, ROOT_DIR),
        ("socket dir on the host", SOCKET_DIR, SOCKET_DIR),
        ("FUSE device", "/dev/fuse", "/dev/fuse"),
        ("docker config", "/root/.docker", "/root/.docker"),
        // `[cri_keychain] image_service_path` (containerd's socket) lives there.
        ("containerd sockets", "/run/containerd", "/run/containerd"),
    ];
    for (name, mount_path, host_path) in cases {
        let (host, _) = host_mount(pod, mount_path);
        assert_eq!(host, host_path, "{name}");
    }
    let (_, root) = host_mount(pod, ROOT_DIR);
    assert_eq!(
        root["mountPropagation"], "Bidirectional",
        "FUSE mounts reach the host"
    );
    let fuse = named(
        &pod["volumes"],
        host_mount(pod, "/dev/fuse").1["name"].as_str().unwrap(),
    );
    assert_eq!(fuse["hostPath"]["type"], "CharDevice");
}

#[test]
fn configmap_config_parses_and_matches_the_mounts() {
    let documents = manifests();
    let config = configmap_config(&documents);
    let pod = &of_kind(&documents, "DaemonSet")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    assert_eq!(config.root, Path::new(ROOT_DIR));
    assert_eq!(config.address.parent(), Some(Path::new(SOCKET_DIR)));
    let docker_config = config.remote.docker_config.as_deref().unwrap();
    assert!(
        docker_config.starts_with("/root/.docker"),
        "{docker_config:?}"
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_arg = args.iter().position(|a| *a == "--config").unwrap();
    let config_path = Path::new(args[config_arg + 1]);
    let mount_dir = config_path.parent().unwrap().to_str().unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let config_mount = mounts.iter().find(|m| m["mountPath"] == mount_dir).unwrap();
    let volume = named(&pod["volumes"], config_mount["name"].as_str().unwrap());
    let configmap = of_kind(&documents, "ConfigMap");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    assert_eq!(config_path.file_name().unwrap(), "config.toml");
}

#[test]
fn keychain_rbac_grants_the_daemonset_account_only_listing_secrets() {
    let documents = manifests();
    let rbac = keychain_rbac();
    let cases = [
        ("ClusterRole", "rbac.authorization.k8s.io/v1"),
        ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
    ];
    assert_eq!(rbac.len(), cases.len(), "{rbac:?}");
    for (kind, api_version) in cases {
        let document = of_kind(&rbac, kind);
        assert_eq!(document["apiVersion"], api_version, "{kind}");
        assert!(
            document["metadata"]["name"].is_string(),
            "{kind} has a name"
        );
        assert!(
            document["metadata"]["namespace"].is_null(),
            "{kind} is cluster-wide"
        );
    }

    // src/kube/secrets.rs sends one request: GET /api/v1/secrets (a list, all namespaces).
    let role = of_kind(&rbac, "ClusterRole");
    let want = serde_json::json!([
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}
    ]);
    assert_eq!(role["rules"], want, "only list on secrets, nothing else");
    assert!(role["aggregationRule"].is_null());

    let account = of_kind(&documents, "ServiceAccount");
    let namespace = &of_kind(&documents, "Namespace")["metadata"]["name"];
    assert_eq!(&account["metadata"]["namespace"], namespace);
    let binding = of_kind(&rbac, "ClusterRoleBinding");
    let role_ref = &binding["roleRef"];
    assert_eq!(role_ref["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(role_ref["kind"], "ClusterRole");
    assert_eq!(role_ref["name"], role["metadata"]["name"]);
    let want = serde_json::json!([{
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": account["metadata"]["namespace"],
    }]);
    assert_eq!(
        binding["subjects"], want,
        "bound to the DaemonSet's account only"
    );

    let pod = &of_kind(&documents, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_ne!(
        pod["automountServiceAccountToken"], false,
        "the keychain authenticates with the mounted token"
    );
}

#[test]
fn configmap_keychain_section_uncommented_uses_the_pod_service_account() {
    let documents = manifests();
    let configmap = of_kind(&documents, "ConfigMap");
    let text = configmap["data"]["config.toml"].as_str().unwrap();
    let start = text
        .find("# [kubeconfig_keychain]")
        .expect("a commented keychain section");
    let section: String = text[start..]
        .lines()
        .take_while(|line| line.trim_start().starts_with('#'))
        .map(|line| line.trim_start().trim_start_matches("# "))
        .collect::<Vec<_>>()
        .join("\n");
    let enabled = format!("{}\n{section}\n", &text[..start]);
    let config = Config::from_toml(&enabled, Path::new("configmap/config.toml")).unwrap();
    let keychain = &config.kubeconfig_keychain;
    assert!(keychain.enable, "{section}");
    // The kubeconfig path lies in the ConfigMap's mount, where no kubeconfig is shipped:
    // the daemon falls back to the service account kubelet mounts.
    let file = keychain
        .kubeconfig_path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        configmap["data"][file].is_null(),
        "no {file} in the ConfigMap"
    );
    assert_eq!(
        keychain.service_account_dir,
        Path::new("/var/run/secrets/kubernetes.io/serviceaccount")
    );
    let pod = &of_kind(&documents, "DaemonSet")["spec"]["template"]["spec"];
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let shadowed = mounts.iter().any(|m| {
        keychain
            .service_account_dir
            .starts_with(m["mountPath"].as_str().unwrap())
    });
    assert!(!shadowed, "no volume hides the service-account mount");
}

#[test]
fn containerd_config_points_the_cri_plugin_at_the_daemonset_socket() {
    let documents = manifests();
    let daemon = configmap_config(&documents);
    let containerd = containerd_config();

    let proxy = &containerd["proxy_plugins"]["stargz"];
    assert_eq!(proxy["type"].as_str(), Some("snapshot"));
    let address = proxy["address"].as_str().unwrap();
    assert_eq!(Path::new(address), daemon.address);
    let pod = &of_kind(&documents, "DaemonSet")["spec"]["template"]["spec"];
    let (host_socket_dir, _) = host_mount(pod, SOCKET_DIR);
    assert_eq!(
        Path::new(address).parent(),
        Some(Path::new(host_socket_dir))
    );

    let cri = &containerd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
    assert_eq!(cri["snapshotter"].as_str(), Some("stargz"));
    assert_eq!(cri["disable_snapshot_annotations"].as_bool(), Some(false));
}

#[test]
fn snapshotter_pod_runs_on_the_bootstrap_runtime_without_the_snapshotter() {
    let documents = manifests();
    let class = of_kind(&documents, "RuntimeClass");
    let pod = &of_kind(&documents, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["runtimeClassName"], class["metadata"]["name"]);
    let handler = class["handler"].as_str().unwrap();
    let containerd = containerd_config();
    let runtime =
        &containerd["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"][handler];
    assert_eq!(
        runtime["snapshotter"].as_str(),
        Some("overlayfs"),
        "{runtime}"
    );
    assert_eq!(
        runtime["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
}

/// `run` scripts of every step of every job of a workflow.
fn steps(workflow: &Value) -> Vec<&Value> {
    let jobs = workflow["jobs"].as_object().unwrap();
    assert!(!jobs.is_empty(), "no jobs");
    jobs.values()
        .flat_map(|job| job["steps"].as_array().unwrap())
        .collect()
}

#[test]
fn ci_workflow_builds_the_converter_and_keeps_secrets_out_of_scripts() {
    let (_, text) = deploy_file("ci/convert-estargz.yml");
    let documents = yaml_documents(&text);
    assert_eq!(documents.len(), 1);
    let workflow = &documents[0];
    assert!(workflow["on"].is_object(), "triggers: {}", workflow["on"]);
    let steps = steps(workflow);
    let runs: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();

    let build = runs
        .iter()
        .any(|r| r.contains("cargo build --release") && r.contains("-p estargz-convert"));
    assert!(build, "a step builds the converter: {runs:?}");
    let convert = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("estargz-convert \""))
        })
        .expect("a step runs the converter");
    let script = convert["run"].as_str().unwrap();
    assert!(script.contains("--json"), "{script}");
    assert!(
        script.contains("GITHUB_OUTPUT"),
        "result passed to later steps: {script}"
    );
    assert!(
        convert["id"].is_string(),
        "later steps refer to the convert step by id"
    );
    assert!(
        convert["env"]["DOCKER_CONFIG"].is_string(),
        "credentials file given"
    );

    let mut secret_vars = Vec::new();
    for step in &steps {
        if let Some(env) = step["env"].as_object() {
            for (name, value) in env {
                let value = value.as_str().unwrap();
                if value.contains("secrets.") {
                    assert!(
                        value.starts_with("${{ secrets.") && value.ends_with("}}"),
                        "{name} is a secret reference, not a value: {value}"
                    );
                    secret_vars.push(name.clone());
                }
            }
        }
    }
    assert!(!secret_vars.is_empty(), "credentials come from secrets");
    for run in &runs {
        assert!(
            !run.contains("secrets."),
            "secrets interpolated into a script: {run}"
        );
        for line in run
            .lines()
            .filter(|l| l.contains("echo") || l.contains("printf"))
        {
            for var in &secret_vars {
                assert!(!line.contains(&format!("${var}")), "{var} printed: {line}");
            }
        }
    }
    let secret_mentions = text.matches("secrets.").count();
    assert_eq!(
        secret_mentions,
        secret_vars.len() + count_comment_mentions(&text)
    );
}

/// `secrets.` mentioned in comment lines (documentation of the settings).
fn count_comment_mentions(text: &str) -> usize {
    text.lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .map(|l| l.matches("secrets.").count())
        .sum()
}
