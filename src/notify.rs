//! systemd's readiness protocol (sd_notify): with `Type=notify`, systemd starts the units
//! ordered after this one (containerd) only once the daemon sends `READY=1` to the
//! datagram socket named in `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Without the variable nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for `Type=notify` services.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sending a notification failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify systemd at {socket:?}: {source}")]
    Send {
        socket: String,
        source: std::io::Error,
    },
}

/// Tells systemd the daemon serves; true when a notification was sent.
pub fn ready() -> Result<bool, NotifyError> {
    send("READY=1")
}

/// Tells systemd the daemon is shutting down.
pub fn stopping() -> Result<bool, NotifyError> {
    send("STOPPING=1")
}

/// Sends `state` to `$NOTIFY_SOCKET`; Ok(false) when it is unset or empty.
pub fn send(state: &str) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    if socket.is_empty() {
        return Ok(false);
    }
    let error = |source| NotifyError::Send {
        socket: socket.clone(),
        source,
    };
    let address = address(&socket).map_err(error)?;
    let sender = UnixDatagram::unbound().map_err(error)?;
    sender
        .send_to_addr(state.as_bytes(), &address)
        .map_err(error)?;
    Ok(true)
}

/// `@name` is in the abstract namespace (a leading NUL on the wire); anything else is a
/// path.
fn address(socket: &str) -> std::io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(socket),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        use std::os::linux::net::SocketAddrExt;
        let abstract_name = address("@estargz/notify").unwrap();
        assert_eq!(
            abstract_name.as_abstract_name(),
            Some(&b"estargz/notify"[..])
        );
        assert!(abstract_name.as_pathname().is_none());
        let path = address("/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }

    #[test]
    fn sends_to_a_listening_socket() {
        // Abstract: no file to clean up, and the form systemd itself uses.
        let name = format!("estargz-notify-test-{}", std::process::id());
        let listener = {
            use std::os::linux::net::SocketAddrExt;
            let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        };
        let address = address(&format!("@{name}")).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &address)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
