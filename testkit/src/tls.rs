//! TLS fixtures: a throwaway PKI made with openssl (a CA, a server certificate for
//! 127.0.0.1 and localhost, a client certificate) and a docker-registry serving an
//! existing storage directory over TLS, optionally demanding a client certificate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{free_port, ProcessError, Supervised};
use crate::registry::REGISTRY_BIN;

/// The openssl program (Debian package openssl).
pub const OPENSSL_BIN: &str = "/usr/bin/openssl";

/// How long [`TlsRegistry::start`] waits for the listener.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors making the PKI or starting the registry.
#[derive(Debug, thiserror::Error)]
pub enum TlsFixtureError {
    #[error("tls fixture temp dir: {0}")]
    TempDir(std::io::Error),
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("run openssl {args}: {source}")]
    Spawn {
        args: String,
        source: std::io::Error,
    },
    #[error("openssl {args} failed: {stderr}")]
    Openssl { args: String, stderr: String },
    #[error("tls registry process: {0}")]
    Process(#[from] ProcessError),
}

/// A CA (`ca.pem`), a server pair (`server.pem`, `server.key`) and a client pair
/// (`client.pem`, `client.key`), all v3 certificates (webpki refuses v1).
#[derive(Debug)]
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    pub fn new() -> Result<Pki, TlsFixtureError> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-pki-")
            .tempdir()
            .map_err(TlsFixtureError::TempDir)?;
        let pki = Pki { dir };
        pki.write("server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        pki.write("client.ext", "extendedKeyUsage=clientAuth\n")?;
        pki.openssl(&[
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
            "/CN=testkit-ca",
        ])?;
        for name in ["server", "client"] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            let subject = format!("/CN={name}");
            pki.openssl(&[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subject,
            ])?;
            pki.openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &pem,
                "-extfile",
                &ext,
            ])?;
        }
        Ok(pki)
    }

    /// A file of the PKI, e.g. `ca.pem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> Result<(), TlsFixtureError> {
        let path = self.path(name);
        std::fs::write(&path, text).map_err(|source| TlsFixtureError::Write { path, source })
    }

    fn openssl(&self, args: &[&str]) -> Result<(), TlsFixtureError> {
        let shown = args.join(" ");
        let out = Command::new(OPENSSL_BIN)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .map_err(|source| TlsFixtureError::Spawn {
                args: shown.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(TlsFixtureError::Openssl {
                args: shown,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }
}

/// A docker-registry serving `storage` over TLS on 127.0.0.1 with the PKI's server
/// certificate. Killed and its directory removed on drop.
#[derive(Debug)]
pub struct TlsRegistry {
    _process: Supervised,
    port: u16,
    _dir: TempDir,
}

impl TlsRegistry {
    /// Starts it; with `client_ca` it demands a client certificate signed by the PKI's CA.
    pub fn start(pki: &Pki, storage: &Path, client_ca: bool) -> Result<Self, TlsFixtureError> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-tls-registry-")
            .tempdir()
            .map_err(TlsFixtureError::TempDir)?;
        let port = free_port()?;
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
        std::fs::write(&config_path, config).map_err(|source| TlsFixtureError::Write {
            path: config_path.clone(),
            source,
        })?;
        let mut command = Command::new(REGISTRY_BIN);
        command.arg("serve").arg(&config_path);
        let mut process = Supervised::spawn(command, &dir.path().join("registry.log"))?;
        process.wait_ready("tls listener", READY_TIMEOUT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })?;
        Ok(TlsRegistry {
            _process: process,
            port,
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}
