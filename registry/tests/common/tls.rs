//! TLS fixtures: a test PKI made with openssl and a docker-registry serving over TLS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::process::{free_port, Supervised};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        // Extensions make v3 certificates; webpki refuses v1.
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
        ]);
        for name in ["server", "client"] {
            run(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ]);
            let mut args = vec!["x509", "-req", "-in", &*format!("{name}.csr")]
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            args.extend(
                [
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                ]
                .map(str::to_owned),
            );
            args.push(format!("{name}.pem"));
            args.extend(["-extfile".to_owned(), format!("{name}.ext")]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args);
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A docker-registry serving `storage` over TLS on 127.0.0.1, demanding a client
/// certificate signed by the test CA when `client_ca` is set.
pub struct TlsRegistry {
    _process: Supervised,
    port: u16,
    _dir: tempfile::TempDir,
}

impl TlsRegistry {
    pub fn start(pki: &Pki, storage: &Path, client_ca: bool) -> TlsRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let client_cas = if client_ca {
            format!("    clientcas:\n      - {}\n", pki.path("ca.pem").display())
        } else {
            String::new()
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n{client_cas}",
            storage.display(),
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(testkit::registry::REGISTRY_BIN);
        command.arg("serve").arg(&config_path);
        let mut process = Supervised::spawn(command, &dir.path().join("log")).unwrap();
        process
            .wait_ready("tls listener", Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            })
            .unwrap();
        TlsRegistry {
            _process: process,
            port,
            _dir: dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
