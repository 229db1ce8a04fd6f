//! Tests of hosts directory resolution against directories built in temp dirs.

use super::*;

fn config_with(root: &Path) -> ClientConfig {
    ClientConfig {
        hosts_dirs: Some(vec![root.to_owned()]),
        ..ClientConfig::default()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn summary(endpoints: &[Endpoint]) -> Vec<String> {
    endpoints
        .iter()
        .map(|e| format!("{}://{}{}", e.scheme.as_str(), e.host, e.path))
        .collect()
}

#[test]
fn without_a_hosts_dir_the_registry_serves_itself() {
    let root = tempfile::tempdir().unwrap();
    let config = config_with(root.path());
    let cases = [
        ("docker hub", "docker.io", "https://registry-1.docker.io/v2"),
        (
            "loopback with port",
            "127.0.0.1:5000",
            "http://127.0.0.1:5000/v2",
        ),
        ("localhost without port", "localhost", "http://localhost/v2"),
        ("ipv6 loopback", "[::1]:5000", "http://[::1]:5000/v2"),
        ("remote", "ghcr.io", "https://ghcr.io/v2"),
    ];
    for (name, registry, expected) in cases {
        let endpoints = resolve(&config, registry).unwrap();
        assert_eq!(summary(&endpoints), [expected], "{name}");
        assert_eq!(endpoints[0].capabilities, Capabilities::ALL, "{name}");
    }
}

#[test]
fn hosts_toml_entries_in_file_order_then_server() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("reg.test:5000");
    write(
        &dir.join("hosts.toml"),
        r#"
server = "http://127.0.0.1:6000"
skip_verify = true

[host."https://zz-mirror.test"]
  capabilities = ["pull"]
  ca = "zz.crt"
  client = [["/abs/c.cert", "c.key"], "both.pem"]
  header = { X-Token = "t", X-Many = ["a", "b"] }

[host."http://aa-mirror.test:8080/base"]
  capabilities = ["pull", "resolve"]
  ca = ["a.crt", "/etc/b.crt"]

[host."https://proxy.test/v2/hub"]
  override_path = true
  skip_verify = false
"#,
    );
    let endpoints = resolve(&config_with(root.path()), "reg.test:5000").unwrap();
    assert_eq!(
        summary(&endpoints),
        [
            "https://zz-mirror.test/v2",
            "http://aa-mirror.test:8080/base/v2",
            "https://proxy.test/v2/hub",
            "http://127.0.0.1:6000/v2",
        ]
    );
    let zz = &endpoints[0];
    assert_eq!(
        zz.capabilities,
        Capabilities {
            pull: true,
            resolve: false,
            push: false
        }
    );
    assert_eq!(zz.tls.ca, [dir.join("zz.crt")]);
    assert_eq!(
        zz.tls.client,
        [
            (PathBuf::from("/abs/c.cert"), Some(dir.join("c.key"))),
            (dir.join("both.pem"), None)
        ]
    );
    assert_eq!(
        zz.headers,
        [
            ("X-Token".to_owned(), "t".to_owned()),
            ("X-Many".to_owned(), "a".to_owned()),
            ("X-Many".to_owned(), "b".to_owned())
        ]
    );
    assert!(!zz.tls.skip_verify);
    assert_eq!(
        endpoints[1].tls.ca,
        [dir.join("a.crt"), PathBuf::from("/etc/b.crt")]
    );
    assert_eq!(endpoints[3].capabilities, Capabilities::ALL);
    assert!(
        endpoints[3].tls.skip_verify,
        "top-level skip_verify is the server's"
    );
}

#[test]
fn directory_lookup_order() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("_default/hosts.toml"),
        "server = \"https://default.test\"\n",
    );
    write(
        &root.path().join("a.test:5000/hosts.toml"),
        "server = \"https://colon.test\"\n",
    );
    write(
        &root.path().join("b.test_5000_/hosts.toml"),
        "server = \"https://underscore.test\"\n",
    );
    write(
        &root.path().join("b.test:5000/hosts.toml"),
        "server = \"https://loses.test\"\n",
    );
    let config = config_with(root.path());
    let cases = [
        (
            "host:port directory",
            "a.test:5000",
            "https://colon.test/v2",
        ),
        (
            "host_port_ directory first",
            "b.test:5000",
            "https://underscore.test/v2",
        ),
        (
            "no directory: _default",
            "c.test",
            "https://default.test/v2",
        ),
    ];
    for (name, registry, expected) in cases {
        assert_eq!(
            summary(&resolve(&config, registry).unwrap()),
            [expected],
            "{name}"
        );
    }
    let none = ClientConfig {
        hosts_dirs: Some(Vec::new()),
        ..ClientConfig::default()
    };
    assert_eq!(
        summary(&resolve(&none, "c.test").unwrap()),
        ["https://c.test/v2"]
    );
}

#[test]
fn directory_without_hosts_toml_gives_cert_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls.test");
    for name in [
        "ca.crt",
        "client.cert",
        "client.key",
        "lonely.cert",
        "notes.txt",
    ] {
        write(&dir.join(name), "x");
    }
    let endpoints = resolve(&config_with(root.path()), "tls.test").unwrap();
    assert_eq!(summary(&endpoints), ["https://tls.test/v2"]);
    assert_eq!(endpoints[0].tls.ca, [dir.join("ca.crt")]);
    assert_eq!(
        endpoints[0].tls.client,
        [
            (dir.join("client.cert"), Some(dir.join("client.key"))),
            (dir.join("lonely.cert"), None)
        ]
    );
}

#[test]
fn loopback_with_certificates_speaks_tls() {
    let root = tempfile::tempdir().unwrap();
    write(&root.path().join("localhost:5000/ca.crt"), "x");
    write(
        &root.path().join("127.0.0.1:5001/hosts.toml"),
        "skip_verify = true\n",
    );
    write(&root.path().join("127.0.0.1:80/ca.crt"), "x");
    let config = config_with(root.path());
    let cases = [
        (
            "docker certs.d layout",
            "localhost:5000",
            "https://localhost:5000/v2",
        ),
        (
            "hosts.toml without server",
            "127.0.0.1:5001",
            "https://127.0.0.1:5001/v2",
        ),
        (
            "port 80 stays plain",
            "127.0.0.1:80",
            "http://127.0.0.1:80/v2",
        ),
        (
            "no certificates",
            "127.0.0.1:5002",
            "http://127.0.0.1:5002/v2",
        ),
    ];
    for (name, registry, expected) in cases {
        assert_eq!(
            summary(&resolve(&config, registry).unwrap()),
            [expected],
            "{name}"
        );
    }
}

#[test]
fn broken_hosts_toml_falls_back_to_cert_files() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("bad.test");
    write(&dir.join("hosts.toml"), "server = [\n");
    write(&dir.join("ca.crt"), "x");
    let endpoints = resolve(&config_with(root.path()), "bad.test").unwrap();
    assert_eq!(summary(&endpoints), ["https://bad.test/v2"]);
    assert_eq!(endpoints[0].tls.ca, [dir.join("ca.crt")]);
    write(
        &dir.join("hosts.toml"),
        "[host.\"https://m.test\"]\ncapabilities = [\"fly\"]\n",
    );
    let endpoints = resolve(&config_with(root.path()), "bad.test").unwrap();
    assert_eq!(
        summary(&endpoints),
        ["https://bad.test/v2"],
        "unknown capability"
    );
}

#[test]
fn config_mirrors_come_first() {
    let root = tempfile::tempdir().unwrap();
    write(
        &root.path().join("docker.io/hosts.toml"),
        "server = \"https://registry-1.docker.io\"\n[host.\"https://hub-mirror.test\"]\n",
    );
    let mut config = config_with(root.path());
    config
        .mirrors
        .insert("docker.io".to_owned(), vec!["127.0.0.1:5001".to_owned()]);
    let endpoints = resolve(&config, "docker.io").unwrap();
    assert_eq!(
        summary(&endpoints),
        [
            "http://127.0.0.1:5001/v2",
            "https://hub-mirror.test/v2",
            "https://registry-1.docker.io/v2"
        ]
    );
    assert_eq!(endpoints[0].capabilities, Capabilities::READ);
}

#[test]
fn api_path_rule() {
    let cases = [
        ("", false, "/v2"),
        ("/", false, "/v2"),
        ("/v2", false, "/v2"),
        ("/base", false, "/base/v2"),
        ("/v2/proxy", true, "/v2/proxy"),
        ("/", true, "/"),
    ];
    for (path, override_path, expected) in cases {
        assert_eq!(
            api_path(path, override_path),
            expected,
            "{path:?} {override_path}"
        );
    }
}
