//! Lines with an optional file descriptor attached (SCM_RIGHTS) on the manager socket:
//! how `/dev/fuse` connections travel between the manager and the daemon.

use std::io::{IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Bytes read per call while looking for the end of a line.
const CHUNK: usize = 64 * 1024;

/// Writes `line` (ending in a newline), with `fd` attached to its first byte.
pub(super) fn send_line(
    stream: &UnixStream,
    line: &[u8],
    fd: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let Some(fd) = fd else {
        return (&*stream).write_all(line);
    };
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(line)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // The descriptor went with the first byte; the rest is plain data.
    (&*stream).write_all(line.get(sent..).unwrap_or_default())
}

/// Reads one line (at most `max` bytes) and the first descriptor sent with it; more
/// descriptors than one are closed. One line per connection: what follows it is dropped.
pub(super) fn recv_line(
    stream: &UnixStream,
    max: usize,
) -> std::io::Result<(String, Option<OwnedFd>)> {
    let mut line = Vec::new();
    let mut fd = None;
    let mut chunk = vec![0u8; CHUNK];
    while !line.ends_with(b"\n") {
        if line.len() >= max {
            return Err(std::io::Error::other("line too long"));
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let received =
            rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = message {
                for received_fd in fds {
                    fd.get_or_insert(received_fd);
                }
            }
        }
        if received.bytes == 0 {
            break;
        }
        line.extend_from_slice(chunk.get(..received.bytes).unwrap_or_default());
    }
    let text = String::from_utf8(line).map_err(std::io::Error::other)?;
    Ok((text, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn a_descriptor_travels_with_its_line() {
        let (a, b) = UnixStream::pair().expect("pair");
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"shared").expect("write");
        let long = format!("{}\n", "x".repeat(3 * CHUNK));
        send_line(&a, long.as_bytes(), Some(std::os::fd::AsFd::as_fd(&file))).expect("send");
        let (line, fd) = recv_line(&b, 1 << 20).expect("receive");
        assert_eq!(line, long);
        let mut copy = std::fs::File::from(fd.expect("descriptor"));
        copy.rewind().expect("rewind");
        let mut text = String::new();
        copy.read_to_string(&mut text).expect("read");
        assert_eq!(text, "shared", "the same open file");
        let (a, b) = UnixStream::pair().expect("pair");
        send_line(&a, b"plain\n", None).expect("send plain");
        let (line, fd) = recv_line(&b, 1 << 20).expect("receive plain");
        assert_eq!(line, "plain\n");
        assert!(fd.is_none());
    }
}
