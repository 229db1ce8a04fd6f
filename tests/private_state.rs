//! The daemon's state is root-only. A private image (registry with basic auth) holding a
//! 0600 secret owned by uid 1000 is lazily pulled through containerd and run: the
//! container reads the secret as its owner and another uid cannot, while an unprivileged
//! process (uid 65534, parents of the root opened up so that only the daemon's own modes
//! stand in the way) can open, list or connect to nothing under the root, the cache
//! directory or the record directory (both configured elsewhere), every path tried; all
//! files there are 0600 and all directories 0700, except the snapshots' own contents.
//! The status and metrics endpoints show neither the secret nor the credentials, and the
//! daemon listens on TCP only at the configured metrics address. State loosened as an
//! older version left it is tightened when the daemon starts again. With `[fuse] manager
//! = true` the manager's log, pid file and socket are checked too.

mod common;
use common::stack::{convert_authenticated, proxy_plugin};
use common::Daemon;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use estargz_convert::record::Prioritized;
use testkit::{unique_id, Containerd, ContainerdOptions, Registry, RegistryOptions, ToolError};

const USER: &str = "private-puller";
const PASSWORD: &str = "pw-7f3a9c1e-never-shown";
const SECRET: &str = "only-uid-1000-may-read-this-5b2f8d41";
const OWNER: (u32, u32) = (1000, 1000);
const NOBODY: u32 = 65534;
/// Set for the probe process only.
const PROBE_ENV: &str = "ESTARGZ_PRIVATE_STATE_PROBE";
const PROBE_TEST: &str = "probe_as_unprivileged_user";

/// busybox, users `app` (1000) and `other` (2000), and `/secret/token` (0600, app's).
fn image() -> testkit::BuiltImage {
    let mut app = testkit::LayerBuilder::new();
    app.dir("etc", 0o755).unwrap();
    app.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\nother:x:2000:2000::/:/bin/sh\n",
        0o644,
    )
    .unwrap();
    app.file(
        "etc/group",
        b"root:x:0:\napp:x:1000:\nother:x:2000:\n",
        0o644,
    )
    .unwrap();
    app.dir("secret", 0o755).unwrap();
    app.file_owned("secret/token", SECRET.as_bytes(), 0o600, OWNER)
        .unwrap();
    testkit::ImageBuilder::new()
        .layer(testkit::busybox_layer().unwrap())
        .layer(app.finish().unwrap())
        .cmd(&["/bin/true"])
        .build()
        .unwrap()
}

/// A registry with basic auth, our daemon (credentials from a docker config) and
/// containerd. Fields drop in order: containerd, the daemon, the registry, the dirs.
struct Stack {
    containerd: Containerd,
    daemon: Daemon,
    registry: Registry,
    dir: tempfile::TempDir,
    /// The daemon's config text, for a restart.
    config: String,
    docker_config: PathBuf,
}

impl Stack {
    fn start(prefix: &str, extra_config: &str) -> Stack {
        let registry = Registry::start_with(RegistryOptions {
            htpasswd: Some((USER.to_owned(), PASSWORD.to_owned())),
        })
        .unwrap();
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        // Others may walk up to the root: only the daemon's modes keep them out.
        open_up(dir.path());
        let docker_config = dir.path().join("docker-config.json");
        let json = serde_json::json!({"auths": {registry.host(): {"auth": auth()}}});
        std::fs::write(&docker_config, serde_json::to_vec(&json).unwrap()).unwrap();
        std::fs::set_permissions(&docker_config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = format!(
            "[remote]\nplain_http = [\"{}\"]\ndocker_config = \"{}\"\n{extra_config}",
            registry.host(),
            docker_config.display()
        );
        let daemon = Daemon::start_with_config(dir.path(), &config);
        let containerd = Containerd::start_with(ContainerdOptions {
            extra_config: proxy_plugin(&daemon.socket),
            ..ContainerdOptions::default()
        })
        .unwrap();
        Stack {
            containerd,
            daemon,
            registry,
            dir,
            config,
            docker_config,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Pushes the image, converts it to eStargz, lazily pulls it with the credentials.
    fn pull(&self) -> String {
        let plain = self
            .registry
            .push("private/app", "plain", &image())
            .unwrap();
        let reference = self.registry.reference("private/app", "esgz");
        let none = Prioritized::load(None, &[]).unwrap();
        convert_authenticated(&plain, &reference, none, Some(&self.docker_config));
        let user = format!("{USER}:{PASSWORD}");
        let args = [
            "image",
            "rpull",
            "--plain-http",
            "--user",
            &user,
            "--snapshotter",
            "stargz",
            &reference,
        ];
        self.containerd.ctr_remote(args).unwrap();
        reference
    }

    /// Runs `cat /secret/token` in a container of `reference` as `user`; its output.
    /// Retried while containerd's connection to a restarted daemon is backing off.
    fn cat_secret_as(&self, reference: &str, user: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.try_cat_secret_as(reference, user) {
                Ok(out) => return out,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("retrying after: {error}");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(error) => panic!("{error}: {}", self.daemon.log_text()),
            }
        }
    }

    fn try_cat_secret_as(&self, reference: &str, user: &str) -> Result<String, ToolError> {
        let id = unique_id("priv");
        let script = "cat /secret/token 2>&1; echo \" rc=$?\"";
        let run = [
            "run",
            "--rm",
            "--snapshotter",
            "stargz",
            reference,
            &id,
            "/bin/busybox",
            "su",
            "-s",
            "/bin/sh",
            user,
            "-c",
            script,
        ];
        Ok(self.containerd.ctr(run)?.stdout)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.daemon.kill();
        common::kill_fuse_manager(&self.root());
        let _ = testkit::mounts::unmount_all_under(self.dir.path());
    }
}

fn auth() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
}

fn open_up(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The container reads the secret as its owner, and only as its owner.
fn check_container_access(stack: &Stack, reference: &str) {
    let owner = stack.cat_secret_as(reference, "app");
    assert_eq!(
        owner.trim(),
        format!("{SECRET} rc=0"),
        "{}",
        stack.daemon.log_text()
    );
    let other = stack.cat_secret_as(reference, "other");
    assert!(
        other.contains("Permission denied") && !other.contains(SECRET),
        "uid 2000 in the container: {other}"
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Socket,
    Link,
    Other,
}

impl Kind {
    fn code(self) -> char {
        match self {
            Kind::Dir => 'd',
            Kind::File => 'f',
            Kind::Socket => 's',
            Kind::Link => 'l',
            Kind::Other => 'o',
        }
    }
}

/// `top` and everything below it (as root; symlinks not followed).
fn walk(top: &Path) -> Vec<(Kind, PathBuf)> {
    let mut found = Vec::new();
    let mut pending = vec![top.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let kind = meta.file_type();
        let kind = if kind.is_symlink() {
            Kind::Link
        } else if kind.is_dir() {
            Kind::Dir
        } else if kind.is_file() {
            Kind::File
        } else if std::os::unix::fs::FileTypeExt::is_socket(&kind) {
            Kind::Socket
        } else {
            Kind::Other
        };
        if kind == Kind::Dir {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        }
        found.push((kind, path));
    }
    found
}

/// Below `<root>/snapshots/<id>/`: containers' files, with the image's own modes.
fn snapshot_contents(path: &Path, root: &Path) -> bool {
    path.strip_prefix(root.join("snapshots"))
        .is_ok_and(|rest| rest.components().count() >= 2)
}

/// The daemon's paths (not snapshot contents, not symlinks) with group or other bits,
/// as `mode path`.
fn open_to_others(paths: &[(Kind, PathBuf)], root: &Path) -> Vec<String> {
    paths
        .iter()
        .filter(|(kind, path)| *kind != Kind::Link && !snapshot_contents(path, root))
        .filter_map(|(_, path)| {
            let mode = std::fs::symlink_metadata(path).ok()?.mode() & 0o7777;
            (mode & 0o077 != 0).then(|| format!("{mode:04o} {}", path.display()))
        })
        .collect()
}

/// The paths a process running as uid/gid 65534 could open, list, connect to or
/// readlink; `/etc/passwd` and `/` go along as controls and must come back readable.
fn readable_by_nobody(paths: &[(Kind, PathBuf)]) -> Vec<String> {
    let controls = [(Kind::File, "/etc/passwd"), (Kind::Dir, "/")];
    let mut list = String::new();
    for (kind, path) in controls.iter().map(|(k, p)| (*k, Path::new(p))) {
        list.push_str(&format!("{} {}\n", kind.code(), path.display()));
    }
    for (kind, path) in paths {
        list.push_str(&format!("{} {}\n", kind.code(), path.display()));
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", PROBE_TEST, "--nocapture"])
        .args(["--test-threads", "1"])
        .env(PROBE_ENV, "1")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "probe failed: {text}");
    let readable: Vec<String> = text
        .lines()
        // libtest's own `test ... ` may share the first line.
        .filter_map(|line| Some(line.split_once("READABLE ")?.1.to_owned()))
        .collect();
    for (_, control) in controls {
        assert!(
            readable.iter().any(|p| p == control),
            "the probe cannot even read {control}: {text}"
        );
    }
    readable
        .into_iter()
        .filter(|p| !controls.iter().any(|(_, c)| c == p))
        .collect()
}

/// Not a test: the unprivileged process [`readable_by_nobody`] starts. Reads `kind path`
/// lines on stdin and prints `READABLE path` for each it could get into.
#[test]
#[ignore = "a helper the other tests run as uid 65534"]
fn probe_as_unprivileged_user() {
    if std::env::var_os(PROBE_ENV).is_none() {
        return;
    }
    // /proc/self belongs to the process's effective uid.
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(uid, NOBODY, "the probe must run as uid {NOBODY}");
    let mut list = String::new();
    std::io::stdin().read_to_string(&mut list).unwrap();
    for line in list.lines() {
        let Some((kind, path)) = line.split_once(' ') else {
            continue;
        };
        let got_in = match kind {
            "d" => std::fs::read_dir(path).is_ok(),
            "f" => std::fs::File::open(path).is_ok(),
            "s" => std::os::unix::net::UnixStream::connect(path).is_ok(),
            "l" => std::fs::read_link(path).is_ok(),
            // Devices and fifos: opening could block; even a stat is too much.
            _ => std::fs::symlink_metadata(path).is_ok(),
        };
        if got_in {
            println!("READABLE {path}");
        }
    }
}

/// Every path under `tops`: none open to others, none readable by uid 65534.
fn check_private(tops: &[&Path], root: &Path, when: &str) -> Vec<(Kind, PathBuf)> {
    let paths: Vec<_> = tops.iter().flat_map(|top| walk(top)).collect();
    let loose = open_to_others(&paths, root);
    assert!(
        loose.is_empty(),
        "{when}: open to others:\n{}",
        loose.join("\n")
    );
    let readable = readable_by_nobody(&paths);
    assert!(
        readable.is_empty(),
        "{when}: uid 65534 got into:\n{}",
        readable.join("\n")
    );
    eprintln!("{when}: {} paths tried as uid 65534", paths.len());
    paths
}

/// Waits until a regular file under `dir` holds `needle`: the cache keeps the secret
/// decompressed, so its modes matter.
fn wait_for_file_holding(dir: &Path, needle: &[u8]) -> PathBuf {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = walk(dir).into_iter().find(|(kind, path)| {
            *kind == Kind::File
                && std::fs::read(path)
                    .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        });
        if let Some((_, path)) = found {
            return path;
        }
        assert!(
            Instant::now() < deadline,
            "no file under {} holds the secret",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET path` over HTTP/1.0; the whole response.
fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    response
}

/// TCP addresses process `pid` listens on: its socket inodes matched against
/// /proc/net/tcp and tcp6 (v6 ones as raw hex).
fn tcp_listeners(pid: u32) -> Vec<String> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut listening = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, st field 3 (0A: LISTEN), inode field 9.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                listening.push(decode_v4(fields[1]).unwrap_or_else(|| fields[1].to_owned()));
            }
        }
    }
    listening
}

/// `0100007F:1F90` -> `127.0.0.1:8080`.
fn decode_v4(field: &str) -> Option<String> {
    let (ip, port) = field.split_once(':')?;
    if ip.len() != 8 {
        return None;
    }
    let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes());
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((ip, port)).to_string())
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Nothing the daemon shows or logs carries the secret or the credentials.
fn check_no_leak(what: &str, text: &str) {
    for (name, needle) in [
        ("the secret", SECRET.to_owned()),
        ("the password", PASSWORD.to_owned()),
        ("the basic auth", auth()),
        ("the user name", USER.to_owned()),
    ] {
        assert!(!text.contains(&needle), "{what} shows {name}:\n{text}");
    }
}

/// Gives every path an older version's modes (dirs 0755, files 0644).
fn loosen(paths: &[(Kind, PathBuf)], root: &Path) {
    for (kind, path) in paths {
        if snapshot_contents(path, root) {
            continue;
        }
        let mode = match kind {
            Kind::Dir => 0o755,
            Kind::File => 0o644,
            _ => continue,
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

#[test]
fn private_image_state_is_root_only_with_cache_and_record_elsewhere() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let elsewhere = tempfile::Builder::new().prefix("privx-").tempdir().unwrap();
    open_up(elsewhere.path());
    let cache = elsewhere.path().join("state/cache");
    let record = elsewhere.path().join("state/record");
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = format!(
        "[cache]\ndir = \"{}\"\n[record]\nenable = true\ndir = \"{}\"\n\
         [metrics]\naddress = \"{metrics}\"\n",
        cache.display(),
        record.display()
    );
    let mut stack = Stack::start("priv-", &config);
    let root = stack.root();

    let reference = stack.pull();
    check_container_access(&stack, &reference);

    let holder = wait_for_file_holding(&cache, SECRET.as_bytes());
    eprintln!("the secret is cached in {}", holder.display());
    assert!(
        walk(&record).iter().any(|(kind, _)| *kind == Kind::File),
        "a record file was written"
    );
    let tops = [root.as_path(), cache.as_path(), record.as_path()];
    let paths = check_private(&tops, &root, "after the run");
    assert!(paths.iter().any(|(_, p)| p.ends_with("metadata.redb")));
    assert!(paths.iter().any(|(_, p)| p.ends_with("status.sock")));
    assert!(paths.iter().any(|(_, p)| p.starts_with(cache.join("tocs"))));
    let copies = paths
        .iter()
        .filter(|(_, p)| p.starts_with(cache.join("files")));
    eprintln!("passthrough copies and their dir: {}", copies.count());

    let status = http_get(metrics, "/status");
    assert!(
        status.contains("private/app"),
        "status lists the layers: {status}"
    );
    check_no_leak("GET /status", &status);
    let scraped = http_get(metrics, "/metrics");
    assert!(scraped.contains("estargz_"), "{scraped}");
    check_no_leak("GET /metrics", &scraped);
    check_no_leak("the daemon log", &stack.daemon.log_text());
    assert_eq!(
        tcp_listeners(stack.daemon.pid()),
        vec![metrics.to_string()],
        "the daemon listens on TCP only at the metrics address"
    );

    // An older version's modes: tightened when the daemon starts again.
    assert!(stack.daemon.signal("-TERM").success());
    let earlier_log = stack.daemon.log_text().len();
    let paths: Vec<_> = tops.iter().flat_map(|top| walk(top)).collect();
    loosen(&paths, &root);
    assert!(!open_to_others(&paths, &root).is_empty());
    stack.daemon = Daemon::start_with_config(stack.dir.path(), &stack.config);
    let log = stack.daemon.log_text()[earlier_log..].to_owned();
    assert!(
        log.contains("state directory was open to other users"),
        "the root's tightening is a warning: {log}"
    );
    assert!(log.contains("is now owner-only"), "{log}");
    // The run needs the layers mounted again: then the walk goes through them too.
    check_container_access(&stack, &reference);
    check_private(&tops, &root, "after a restart on loose state");
}

#[test]
fn fuse_manager_state_is_root_only() {
    testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
    testkit::require!(testkit::Prereq::DevFuse);
    let stack = Stack::start("privm-", "[fuse]\nmanager = true\n");
    let root = stack.root();

    let reference = stack.pull();
    check_container_access(&stack, &reference);

    let cache = root.join("cache");
    let holder = wait_for_file_holding(&cache, SECRET.as_bytes());
    eprintln!("the secret is cached in {}", holder.display());
    let paths = check_private(&[root.as_path()], &root, "fuse manager");
    for name in ["fuse-manager.log", "fuse-manager.pid", "fuse-manager.sock"] {
        assert!(
            paths.iter().any(|(_, p)| p == &root.join(name)),
            "{name} was checked"
        );
    }
}
