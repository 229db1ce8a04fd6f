//! The harness against the real programs: registry push/fetch/restart/auth, containerd pull/run.

use testkit::prereq::CONTAINERD_STACK;
use testkit::{
    busybox_image, mounts, Containerd, Credentials, Prereq, Registry, RegistryClient,
    RegistryOptions,
};

const REGISTRY_ONLY: &[Prereq] = &[
    Prereq::Binary(testkit::registry::REGISTRY_BIN),
    Prereq::StaticBusybox,
];

#[test]
fn registry_serves_pushed_image_and_survives_restart() -> testkit::Result<()> {
    testkit::require!(stack: REGISTRY_ONLY);
    let mut registry = Registry::start()?;
    let image = busybox_image(&["/bin/sh", "-c", "echo hi"])?;
    let reference = registry.push("demo/app", "v1", &image)?;
    assert_eq!(reference, format!("{}/demo/app:v1", registry.host()));

    let client = registry.client();
    let manifest = client.get_manifest("demo/app", "v1")?;
    assert_eq!(manifest.digest, image.manifest.digest);
    assert_eq!(manifest.bytes, image.manifest.bytes);

    registry.stop();
    assert!(client.ping().is_err(), "stopped registry still answers");
    registry.start_again()?;
    let layer = &image.layers[0].blob;
    assert_eq!(client.get_blob("demo/app", &layer.digest)?, layer.bytes);

    let log = std::fs::read_to_string(registry.log_path()).expect("registry log");
    assert!(
        log.contains("/v2/demo/app/manifests/v1"),
        "no access log line"
    );
    Ok(())
}

#[test]
fn registry_with_htpasswd_requires_credentials() -> testkit::Result<()> {
    testkit::require!(stack: REGISTRY_ONLY);
    let registry = Registry::start_with(RegistryOptions {
        htpasswd: Some(("tester".into(), "s3cret".into())),
    })?;
    let anonymous = RegistryClient::new(&registry.host(), None);
    assert_eq!(anonymous.ping()?, 401);
    let wrong = Credentials {
        user: "tester".into(),
        password: "wrong".into(),
    };
    assert_eq!(
        RegistryClient::new(&registry.host(), Some(&wrong)).ping()?,
        401
    );
    assert_eq!(registry.client().ping()?, 200);

    let image = busybox_image(&["/bin/true"])?;
    registry.push("private", "v1", &image)?;
    assert!(anonymous.get_manifest("private", "v1").is_err());
    assert_eq!(
        registry.client().get_manifest("private", "v1")?.digest,
        image.manifest.digest
    );
    Ok(())
}

#[test]
fn containerd_pulls_and_runs_pushed_image_then_cleans_up() -> testkit::Result<()> {
    testkit::require!(stack: CONTAINERD_STACK);
    let registry = Registry::start()?;
    let image = busybox_image(&["/bin/sh", "-c", "echo hello from testkit"])?;
    let reference = registry.push("run", "v1", &image)?;

    let containerd = Containerd::start()?;
    containerd.ctr(["images", "pull", "--plain-http", reference.as_str()])?;
    let listed = containerd.ctr(["images", "ls", "-q"])?;
    assert!(listed.stdout.contains(&reference), "{}", listed.stdout);

    let id = testkit::unique_id("run");
    let out = containerd.ctr(["run", "--rm", reference.as_str(), id.as_str()])?;
    assert_eq!(out.stdout.trim(), "hello from testkit");

    let version = containerd.ctr_remote(["version"])?;
    assert!(version.stdout.contains("Server"), "{}", version.stdout);

    let dir = containerd.dir().to_owned();
    drop(containerd);
    assert!(!dir.exists(), "temp dir left behind");
    assert!(mounts::mounts_under(&dir)?.is_empty(), "mounts left behind");
    Ok(())
}

#[test]
fn dropping_containerd_kills_running_tasks_and_unmounts() -> testkit::Result<()> {
    testkit::require!(stack: CONTAINERD_STACK);
    let registry = Registry::start()?;
    let image = busybox_image(&["/bin/sleep", "600"])?;
    let reference = registry.push("sleeper", "v1", &image)?;
    let containerd = Containerd::start()?;
    containerd.ctr(["images", "pull", "--plain-http", reference.as_str()])?;
    let id = testkit::unique_id("sleeper");
    containerd.ctr(["run", "-d", reference.as_str(), id.as_str()])?;
    let tasks = containerd.ctr(["tasks", "ls", "-q"])?;
    assert_eq!(tasks.stdout.trim(), id);
    let dir = containerd.dir().to_owned();
    assert!(
        !mounts::mounts_under(&dir)?.is_empty(),
        "no rootfs mount while running"
    );

    drop(containerd);
    assert!(!dir.exists(), "temp dir left behind");
    assert!(mounts::mounts_under(&dir)?.is_empty(), "mounts left behind");
    assert!(
        !any_process_mentions(&dir),
        "a process still refers to {}",
        dir.display()
    );
    Ok(())
}

/// True when some process's command line contains `dir` (a leaked shim would).
fn any_process_mentions(dir: &std::path::Path) -> bool {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
}
