//! Serving a FUSE connection that another process opened: a new fuse manager takes over
//! the `/dev/fuse` connections of one that died, so the mounts (and the containers reading
//! them) stay, with no remount.
//!
//! fuser only serves a connection after a FUSE_INIT, which the kernel sends once per
//! connection, long since answered by the dead process. So fuser is given one end of a
//! `SOCK_SEQPACKET` socket pair instead of the device: the relay first writes a synthetic
//! FUSE_INIT there (and drops fuser's answer: the kernel keeps what was negotiated), then
//! two threads copy kernel requests to fuser and fuser's replies to the kernel, one
//! message each way per read (seqpacket keeps message boundaries, as the device does).
//! fuser does nothing else on its fd for this filesystem but read and write, except
//! registering passthrough backing files (an ioctl), so adopted mounts register none:
//! they serve reads themselves, except of files the dead process left in passthrough
//! mode, reopened with its backing ids (see [`super::ledger`]). Only adopted connections
//! pay the copy; fresh mounts read the device.
//!
//! Requests the dead process had read but not answered are lost to it; the kernel keeps
//! them in its "processing" list and their readers wait. Before reading anything, the
//! relay sends FUSE_NOTIFY_RESEND (Linux >= 6.9), which puts every such request back in
//! the queue (marked with bit 63 of its id), so the new process answers them.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use rustix::io::Errno;
use rustix::net::{AddressFamily, Shutdown, SocketFlags, SocketType};

/// fuser's read buffer (its largest request plus a page): the kernel refuses reads into
/// a smaller buffer than it may need. Untouched pages of it are never resident.
const BUFFER: usize = 16 * 1024 * 1024 + 4096;
/// Room for one fuser reply in the socket (the largest is a read: 1 MiB plus header).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// `FUSE_INIT`.
const OPCODE_INIT: u32 = 26;
/// Id of the synthetic INIT (the kernel's own ids are even and small).
const INIT_UNIQUE: u64 = 1 << 62;
/// `FUSE_NOTIFY_RESEND`.
const NOTIFY_RESEND: i32 = 7;
/// Protocol minor version put in the synthetic INIT: fuser's own.
const MINOR: u32 = 40;
/// Size of `fuse_in_header`.
const IN_HEADER: usize = 40;
/// Size of `fuse_out_header`.
const OUT_HEADER: usize = 16;

/// The threads relaying one adopted connection.
pub(super) struct Relay {
    threads: Vec<JoinHandle<()>>,
    /// The relay's end of the socket pair: shut down to stop fuser.
    socket: Arc<OwnedFd>,
}

impl Relay {
    /// Waits for both threads (they end when the connection does).
    pub(super) fn join(mut self) {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    /// Stops fuser's side (its reads see the end of the socket).
    pub(super) fn stop(&self) {
        let _ = rustix::net::shutdown(&*self.socket, Shutdown::Both);
    }
}

/// Errors setting up a relay.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("the connection has ended (the layer was unmounted)")]
    Ended,
    #[error("socket pair for the fuse relay: {0}")]
    Socket(#[source] std::io::Error),
    #[error("fuser did not answer the synthetic FUSE_INIT: {0}")]
    Handshake(#[source] std::io::Error),
}

/// Fails when `device`'s connection has ended (its mount is gone: unmounted by a manager
/// that stopped, or by hand), which the kernel tells with POLLERR.
pub(super) fn check_alive(device: &OwnedFd) -> Result<(), AdoptError> {
    use rustix::event::{PollFd, PollFlags};
    let mut fds = [PollFd::new(device, PollFlags::IN)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(_) if fds[0].revents().contains(PollFlags::ERR) => Err(AdoptError::Ended),
        Ok(_) => Ok(()),
        Err(error) => Err(AdoptError::Socket(error.into())),
    }
}

/// The pair: fuser's end (handed to `Session::from_fd` after the synthetic INIT is
/// written to it) and the relay's end.
pub(super) fn socket_pair() -> Result<(OwnedFd, OwnedFd), AdoptError> {
    let io = |e: Errno| AdoptError::Socket(e.into());
    let (fusers, ours) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io)?;
    for end in [&fusers, &ours] {
        // A message may not exceed the sender's buffer; fuser's 1 MiB read replies
        // would not fit the default (about 200 KiB), nor the unprivileged maximum.
        rustix::net::sockopt::set_socket_send_buffer_size_force(end, SOCKET_BUFFER)
            .or_else(|_| rustix::net::sockopt::set_socket_send_buffer_size(end, SOCKET_BUFFER))
            .map_err(io)?;
    }
    rustix::io::write(&ours, &synthetic_init()).map_err(io)?;
    Ok((fusers, ours))
}

/// Reads and drops fuser's answer to the synthetic INIT (`from_fd` has written it).
pub(super) fn drop_init_reply(ours: &OwnedFd) -> Result<(), AdoptError> {
    let mut reply = vec![0u8; 4096];
    let n = rustix::io::read(ours, &mut reply).map_err(|e| AdoptError::Handshake(e.into()))?;
    let unique = reply
        .get(8..16)
        .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])));
    if n < OUT_HEADER || unique != Some(INIT_UNIQUE) {
        return Err(AdoptError::Handshake(std::io::Error::other(format!(
            "unexpected {n}-byte message"
        ))));
    }
    Ok(())
}

/// Asks the kernel to queue again the requests a dead reader took, then relays
/// `device` <-> `ours` until the connection ends.
pub(super) fn start(device: OwnedFd, ours: OwnedFd, mountpoint: &Path) -> Relay {
    resend_lost_requests(&device, mountpoint);
    let device = Arc::new(device);
    let ours = Arc::new(ours);
    let point = mountpoint.to_path_buf();
    let (d, o) = (device.clone(), ours.clone());
    let to_fuser = std::thread::Builder::new()
        .name("fuse-relay-in".into())
        .spawn(move || kernel_to_fuser(&d, &o, &point));
    let point = mountpoint.to_path_buf();
    let (d, o) = (device, ours.clone());
    let to_kernel = std::thread::Builder::new()
        .name("fuse-relay-out".into())
        .spawn(move || fuser_to_kernel(&d, &o, &point));
    let mut threads = Vec::new();
    for spawned in [to_fuser, to_kernel] {
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(error) => tracing::warn!(%error, "start a fuse relay thread"),
        }
    }
    Relay {
        threads,
        socket: ours,
    }
}

/// FUSE_NOTIFY_RESEND: requests read but never answered go back to the queue.
fn resend_lost_requests(device: &OwnedFd, mountpoint: &Path) {
    let mut message = Vec::with_capacity(OUT_HEADER);
    message.extend_from_slice(&(OUT_HEADER as u32).to_ne_bytes());
    message.extend_from_slice(&NOTIFY_RESEND.to_ne_bytes());
    message.extend_from_slice(&0u64.to_ne_bytes());
    match rustix::io::write(device, &message) {
        Ok(_) => {
            tracing::debug!(mountpoint = %mountpoint.display(), "asked the kernel to resend lost requests")
        }
        Err(error) => tracing::warn!(
            mountpoint = %mountpoint.display(), %error,
            "kernel cannot resend the requests the dead manager took (Linux < 6.9): their readers wait until interrupted"
        ),
    }
}

fn kernel_to_fuser(device: &OwnedFd, ours: &OwnedFd, mountpoint: &Path) {
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = match rustix::io::read(device, &mut buffer) {
            Ok(n) => n,
            // An interrupted request, or a signal: read on.
            Err(Errno::NOENT | Errno::INTR | Errno::AGAIN) => continue,
            // Unmounted or aborted.
            Err(Errno::NODEV) => break,
            Err(error) => {
                tracing::warn!(mountpoint = %mountpoint.display(), %error, "fuse relay: read from the kernel");
                break;
            }
        };
        let Some(message) = buffer.get(..n) else {
            break;
        };
        if let Err(error) = send_all(ours, message) {
            tracing::debug!(mountpoint = %mountpoint.display(), %error, "fuse relay: fuser gone");
            break;
        }
    }
    let _ = rustix::net::shutdown(ours, Shutdown::Both);
    tracing::debug!(mountpoint = %mountpoint.display(), "fuse relay: connection ended");
}

fn fuser_to_kernel(device: &OwnedFd, ours: &OwnedFd, mountpoint: &Path) {
    let mut buffer = vec![0u8; BUFFER];
    loop {
        let n = match rustix::io::read(ours, &mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        };
        let Some(reply) = buffer.get(..n) else {
            break;
        };
        match rustix::io::write(device, reply) {
            Ok(_) => {}
            // The request was interrupted or answered already (a resent one).
            Err(Errno::NOENT) => {}
            Err(Errno::NODEV) => break,
            Err(error) => {
                tracing::debug!(mountpoint = %mountpoint.display(), %error, "fuse relay: reply refused")
            }
        }
    }
}

/// Sends one whole message (seqpacket: all or nothing; retried on signals).
fn send_all(socket: &OwnedFd, message: &[u8]) -> Result<(), Errno> {
    loop {
        match rustix::net::send(socket, message, rustix::net::SendFlags::NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(error) => return Err(error),
        }
    }
}

/// A FUSE_INIT request as the kernel would send it: protocol 7.40, no passthrough (its
/// ioctls need the device itself), readdirplus as on fresh mounts.
fn synthetic_init() -> Vec<u8> {
    use fuser::InitFlags;
    let offered = InitFlags::FUSE_ASYNC_READ
        | InitFlags::FUSE_DO_READDIRPLUS
        | InitFlags::FUSE_READDIRPLUS_AUTO
        | InitFlags::FUSE_MAX_PAGES;
    let flags = u32::try_from(offered.bits()).unwrap_or(0);
    let len = IN_HEADER + 64;
    let mut message = Vec::with_capacity(len);
    message.extend_from_slice(&(len as u32).to_ne_bytes());
    message.extend_from_slice(&OPCODE_INIT.to_ne_bytes());
    message.extend_from_slice(&INIT_UNIQUE.to_ne_bytes());
    message.extend_from_slice(&0u64.to_ne_bytes()); // nodeid
    message.extend_from_slice(&[0u8; 12]); // uid, gid, pid
    message.extend_from_slice(&[0u8; 4]); // total_extlen, padding
    for word in [7, MINOR, 1024 * 1024, flags, 0] {
        message.extend_from_slice(&word.to_ne_bytes());
    }
    message.extend_from_slice(&[0u8; 44]); // unused
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_init_has_the_kernel_layout() {
        let init = synthetic_init();
        assert_eq!(init.len(), 104, "fuse_in_header + fuse_init_in");
        assert_eq!(u32::from_ne_bytes(init[0..4].try_into().unwrap()), 104);
        assert_eq!(
            u32::from_ne_bytes(init[4..8].try_into().unwrap()),
            OPCODE_INIT
        );
        assert_eq!(u32::from_ne_bytes(init[40..44].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(init[44..48].try_into().unwrap()), MINOR);
        let flags = u32::from_ne_bytes(init[52..56].try_into().unwrap());
        assert_ne!(flags, 0, "readdirplus offered");
        // Passthrough (bit 37) needs FUSE_INIT_EXT and flags2: neither is offered.
        assert_eq!(flags & fuser::InitFlags::FUSE_INIT_EXT.bits() as u32, 0);
        assert_eq!(u32::from_ne_bytes(init[56..60].try_into().unwrap()), 0);
    }
}
