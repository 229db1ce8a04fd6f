//! The busybox base layer: the host's static /bin/busybox with applet symlinks and /etc files.

use std::path::Path;

use super::layer::{LayerBuilder, LayerError};

/// Where the static busybox (package busybox-static) lives on the host.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets linked in /bin; enough for test containers and scripts.
pub const APPLETS: &[&str] = &[
    "sh",
    "echo",
    "cat",
    "ls",
    "sha256sum",
    "md5sum",
    "head",
    "tail",
    "wc",
    "sleep",
    "true",
    "false",
    "env",
    "find",
    "stat",
    "dd",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "grep",
    "sed",
    "tr",
    "sort",
    "uniq",
    "du",
    "id",
    "date",
    "printf",
    "test",
    "readlink",
    "xargs",
    "cmp",
    "od",
];

/// A marker of a dynamically linked x86-64 binary: the program interpreter path.
const DYNAMIC_LOADER: &[u8] = b"/lib64/ld-linux-x86-64.so";

/// Errors from building the busybox layer.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    #[error("read {HOST_BUSYBOX}: {0}")]
    Read(std::io::Error),
    #[error("{HOST_BUSYBOX} is dynamically linked; install busybox-static")]
    NotStatic,
    #[error("busybox layer: {0}")]
    Layer(#[from] LayerError),
}

/// Ok when the host has a statically linked busybox, else the reason (for skip messages).
pub fn check_static_busybox() -> Result<(), String> {
    read_static_busybox().map(|_| ()).map_err(|e| e.to_string())
}

fn read_static_busybox() -> Result<Vec<u8>, BusyboxError> {
    let bytes = std::fs::read(Path::new(HOST_BUSYBOX)).map_err(BusyboxError::Read)?;
    if bytes
        .windows(DYNAMIC_LOADER.len())
        .any(|w| w == DYNAMIC_LOADER)
    {
        return Err(BusyboxError::NotStatic);
    }
    Ok(bytes)
}

/// A base layer: /bin/busybox, `/bin/<applet>` symlinks, /etc/passwd and /etc/group, and the
/// usual empty directories.
pub fn busybox_layer() -> Result<Vec<u8>, BusyboxError> {
    let busybox = read_static_busybox()?;
    let mut b = LayerBuilder::new();
    for dir in ["bin", "etc", "root", "proc", "sys", "dev", "var"] {
        b.dir(dir, 0o755)?;
    }
    b.dir("tmp", 0o1777)?;
    b.file("bin/busybox", &busybox, 0o755)?;
    for applet in APPLETS {
        b.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    b.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        0o644,
    )?;
    b.file("etc/group", b"root:x:0:\nnogroup:x:65534:\n", 0o644)?;
    Ok(b.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_layer_has_binary_and_links() {
        if let Err(reason) = check_static_busybox() {
            eprintln!("SKIPPED busybox_layer_has_binary_and_links: {reason}");
            return;
        }
        let tar_bytes = busybox_layer().unwrap();
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            if path == "bin/sh" {
                assert_eq!(
                    entry.link_name().unwrap().unwrap().to_str(),
                    Some("busybox")
                );
            }
            names.push(path);
        }
        for want in [
            "bin/busybox",
            "bin/sh",
            "bin/sha256sum",
            "etc/passwd",
            "tmp/",
        ] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
    }
}
