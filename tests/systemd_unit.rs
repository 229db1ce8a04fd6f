//! deploy/estargz-snapshotter.service started the way systemd starts a `Type=notify`
//! unit: its ExecStart command line (the binary and config path swapped for the test's)
//! with `NOTIFY_SOCKET` naming a datagram socket the test listens on, in the abstract
//! namespace as systemd's own is. The daemon reports `READY=1` only once its gRPC socket
//! answers, and `STOPPING=1` on the unit's KillSignal before it exits cleanly.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

/// The `[Service]` settings of the unit file.
fn service_settings() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/estargz-snapshotter.service");
    let text = std::fs::read_to_string(path).unwrap();
    let mut section = "";
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.starts_with('#') {
            if let Some((key, value)) = line.split_once('=') {
                settings.push((key.to_owned(), value.to_owned()));
            }
        }
    }
    settings
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> &'a str {
    settings
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}= in [Service]"))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receive(listener: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).expect("a notification within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn unit_reports_ready_once_the_socket_serves_and_stopping_on_kill_signal() {
    let settings = service_settings();
    assert_eq!(setting(&settings, "Type"), "notify");
    let exec: Vec<&str> = setting(&settings, "ExecStart").split_whitespace().collect();
    let kill_signal = setting(&settings, "KillSignal");

    let dir = tempfile::Builder::new().prefix("unit-").tempdir().unwrap();
    let socket = dir.path().join("run/grpc.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = \"{}\"\naddress = \"{}\"\nlog_level = \"debug\"\n",
            dir.path().join("root").display(),
            socket.display()
        ),
    )
    .unwrap();
    // The unit's arguments, with the test's config file where it names one.
    let mut args: Vec<String> = Vec::new();
    let mut rest = exec[1..].iter();
    while let Some(arg) = rest.next() {
        if *arg == "--config" || *arg == "-config" {
            rest.next();
            args.extend([arg.to_string(), config.display().to_string()]);
        } else if let Some(flag) = arg.split_once('=').filter(|(k, _)| k.ends_with("config")) {
            args.push(format!("{}={}", flag.0, config.display()));
        } else {
            args.push(arg.to_string());
        }
    }
    let named = config.display().to_string();
    assert!(
        args.iter().any(|a| a.ends_with(&named)),
        "the unit names a config file: {exec:?}"
    );

    let name = format!("estargz-unit-test-{}", std::process::id());
    let listener =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_estargz-snapshotter"))
        .args(&args)
        .env("NOTIFY_SOCKET", format!("@{name}"))
        .stderr(log.try_clone().unwrap())
        .stdout(log)
        .spawn()
        .unwrap();
    let mut daemon = Killed(child);
    let log_text = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();

    assert_eq!(receive(&listener), "READY=1", "{}", log_text());
    // Ready means serving: the socket answers at once, no retry.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connected = rt.block_on(common::grpc::try_connect(&socket));
    assert!(connected.is_ok(), "not serving at READY: {}", log_text());

    let signal = format!("-{}", kill_signal.trim_start_matches("SIG"));
    let pid = daemon.0.id().to_string();
    assert!(Command::new("kill")
        .args([&signal, &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(receive(&listener), "STOPPING=1", "{}", log_text());
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}: {}", log_text());
}
