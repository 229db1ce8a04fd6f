//! A FUSE connection outlives the process serving it: a child process mounts a layer
//! (`fs::mount`, real FUSE) and sends this process a copy of the `/dev/fuse` connection
//! (SCM_RIGHTS); it is SIGKILLed while a read it took is unanswered and a file is open;
//! this process takes the connection over (`fs::adopt`, the relay in front of fuser).
//! The mount never goes away, the lost read is answered (FUSE_NOTIFY_RESEND), the open
//! file reads on, and inode numbers are those the dead process gave; a file it opened
//! with passthrough reopens with its backing id (from the mount's ledger). Also measures what
//! the relay costs per request against a fresh mount.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz::testutil::{pseudo_random_bytes, EntrySpec, TarBuilder};
use estargz::{EntryId, EntryType, Index, Reader, WriterOptions};
use estargz_snapshotter::lazy::fs::{self, LayerContent, MountOptions};
use futures::future::BoxFuture;

const CHUNK_SIZE: u64 = 64 << 10;
const HOSTS: &[u8] = b"127.0.0.1 localhost\n";
const SOCKET_ENV: &str = "FS_ADOPT_CHILD_SOCKET";
const MOUNT_ENV: &str = "FS_ADOPT_CHILD_MOUNT";
/// How long the child takes to answer a read of `slow`: it is killed long before.
const CHILD_SLOW_READ: Duration = Duration::from_secs(600);

/// A layer in memory; reads of `slow` wait `slow_read` first; `etc/hosts` has a local
/// copy for passthrough when `backing` names one.
struct MemContent {
    reader: Arc<Reader<Vec<u8>>>,
    slow: Option<(EntryId, Duration)>,
    backing: Option<(EntryId, PathBuf)>,
    /// Reads that reached this process (passthrough reads never do).
    reads: AtomicUsize,
}

impl LayerContent for MemContent {
    fn index(&self) -> &Index {
        self.reader.index()
    }

    fn backing_file(&self, file: EntryId) -> BoxFuture<'static, Option<std::fs::File>> {
        let local = self.backing.clone().filter(|(id, _)| *id == file);
        Box::pin(async move { std::fs::File::open(local?.1).ok() })
    }

    fn read(
        &self,
        file: EntryId,
        offset: u64,
        len: u32,
    ) -> BoxFuture<'static, std::io::Result<Vec<u8>>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let reader = Arc::clone(&self.reader);
        let delay = self.slow.filter(|(slow, _)| *slow == file).map(|(_, d)| d);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let end = offset + u64::from(len);
            let mut out = Vec::with_capacity(len as usize);
            for chunk in reader.index().chunks(file) {
                let chunk_end = chunk.file_offset + chunk.size;
                if chunk_end <= offset || chunk.file_offset >= end {
                    continue;
                }
                let bytes = reader.read_chunk(chunk).map_err(std::io::Error::other)?;
                let from = offset.max(chunk.file_offset) - chunk.file_offset;
                let to = end.min(chunk_end) - chunk.file_offset;
                out.extend_from_slice(&bytes[from as usize..to as usize]);
            }
            Ok(out)
        })
    }
}

fn big_content() -> Vec<u8> {
    pseudo_random_bytes(11, (6 * CHUNK_SIZE + 77) as usize)
}

fn blob() -> Vec<u8> {
    let mut tar = TarBuilder::new();
    tar.dir("etc")
        .file("etc/hosts", HOSTS)
        .symlink("etc/link", "hosts")
        .dir("data")
        .file("data/big.bin", &big_content())
        .entry(
            EntrySpec::new("data/attrs", EntryType::Reg)
                .content(b"x")
                .xattr("user.text", b"hello"),
        )
        .file("slow", b"slow content");
    for i in 0..50 {
        tar.file(&format!("many/file-{i}"), format!("file {i}\n").as_bytes());
    }
    let mut blob = Vec::new();
    let options = WriterOptions {
        chunk_size: CHUNK_SIZE,
        ..WriterOptions::default()
    };
    estargz::build(&*tar.finish(), &mut blob, &options).expect("build blob");
    blob
}

fn content(slow_read: Option<Duration>, hosts_copy: Option<PathBuf>) -> Arc<MemContent> {
    let reader = Arc::new(Reader::open(blob(), None).expect("open blob"));
    let slow = slow_read.map(|d| (reader.index().lookup("slow").expect("slow"), d));
    let hosts = reader.index().lookup("etc/hosts").expect("hosts");
    let backing = hosts_copy.map(|path| (hosts, path));
    Arc::new(MemContent {
        reader,
        slow,
        backing,
        reads: AtomicUsize::new(0),
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn missing_prerequisite() -> Option<&'static str> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing");
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        == Some("0");
    (!root).then_some("not running as root")
}

/// Path → inode number of everything under `root`.
fn inodes(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path.strip_prefix(root).expect("under").to_path_buf(),
                meta.ino(),
            );
        }
    }
    out
}

fn is_mounted(point: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let point = point.to_str().expect("utf-8");
    table.lines().any(|l| l.split(' ').nth(4) == Some(point))
}

/// On a failing assertion, aborts the mount's FUSE connection (through a private
/// fusectl mount) before anything unwinds: this process holds the connection and files
/// on it, so without a server its unwinding and exit would wait for its own answers.
fn abort_connection_on_panic(connection: u32, dir: PathBuf) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let ctl = dir.join("fusectl");
        let _ = std::fs::create_dir_all(&ctl);
        let mounted = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(&ctl)
            .status();
        if mounted.map(|s| s.success()).unwrap_or(false) {
            let _ = std::fs::write(ctl.join(connection.to_string()).join("abort"), "1");
            let _ = Command::new("umount").arg(&ctl).status();
        }
    }));
}

/// Receives one descriptor sent with SCM_RIGHTS.
fn receive_fd(stream: &UnixStream) -> OwnedFd {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    rustix::net::recvmsg(
        stream,
        &mut iov,
        &mut control,
        rustix::net::RecvFlags::empty(),
    )
    .expect("recvmsg");
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return fd;
            }
        }
    }
    panic!("no descriptor came");
}

/// Not a test by itself: the serving child of the test below (does nothing unless
/// started by it).
#[test]
fn serving_child() {
    let (Some(socket), Some(mountpoint)) =
        (std::env::var_os(SOCKET_ENV), std::env::var_os(MOUNT_ENV))
    else {
        return;
    };
    let runtime = runtime();
    let hosts_copy = Path::new(&mountpoint).with_file_name("hosts-copy");
    std::fs::write(&hosts_copy, HOSTS).expect("write the local copy");
    let handle = fs::mount(
        Path::new(&mountpoint),
        content(Some(CHILD_SLOW_READ), Some(hosts_copy)),
        runtime.handle().clone(),
        &MountOptions::default(),
    )
    .expect("child mount");
    let connection = handle.connection().expect("copy the connection");
    let stream = UnixStream::connect(socket).expect("connect to the parent");
    let fds = [std::os::fd::AsFd::as_fd(&connection)];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        &stream,
        &[std::io::IoSlice::new(b"!")],
        &mut control,
        rustix::net::SendFlags::empty(),
    )
    .expect("send the connection");
    // Serve until killed.
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Mean time of one getxattr on `path` (each one is a FUSE request: no kernel cache).
fn getxattr_latency(path: &Path) -> Duration {
    const CALLS: u32 = 3000;
    let started = Instant::now();
    for _ in 0..CALLS {
        let value = xattr::get(path, "user.text").expect("getxattr");
        assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    }
    started.elapsed() / CALLS
}

/// Starts `serving_child` on `mnt` and receives its connection; on a later panic the
/// connection is aborted.
fn serving_child_at(dir: &Path, mnt: &Path) -> (std::process::Child, OwnedFd) {
    let socket = dir.join("socket");
    let listener = UnixListener::bind(&socket).expect("bind");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "serving_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SOCKET_ENV, &socket)
        .env(MOUNT_ENV, mnt)
        .spawn()
        .expect("start the serving child");
    let (stream, _) = listener.accept().expect("child connects");
    let connection = receive_fd(&stream);
    assert!(is_mounted(mnt), "child mounted the layer");
    // The connection number is the mount's device minor.
    let device = std::fs::metadata(mnt).expect("stat mount").dev();
    abort_connection_on_panic(libc::minor(device), dir.to_path_buf());
    (child, connection)
}

#[test]
fn a_new_process_takes_over_a_dead_servers_mount() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipping: {reason}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let (mut child, connection) = serving_child_at(dir.path(), &mnt);
    // Served by the child: names, attributes, an open file read part way.
    let before = inodes(&mnt);
    assert!(before.len() > 50, "listed {}", before.len());
    let big = std::fs::File::open(mnt.join("data/big.bin")).expect("open big");
    let expected = big_content();
    let mut head = vec![0u8; 100_000];
    big.read_exact_at(&mut head, 0).expect("read head");
    assert_eq!(head, expected[..100_000]);
    // A read the child takes and never answers.
    let slow = mnt.join("slow");
    let (sender, lost_read) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(std::fs::read(slow));
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        lost_read.try_recv().is_err(),
        "the child holds the read of `slow`"
    );
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");
    assert!(is_mounted(&mnt), "the mount outlives its server");

    let runtime = runtime();
    let adopted_at = Instant::now();
    let handle = fs::adopt(
        &mnt,
        connection,
        content(None, None),
        runtime.handle().clone(),
        &MountOptions::default(),
    )
    .expect("take over the connection");
    assert!(handle.adopted());

    // The read the dead child took is sent again by the kernel and answered here.
    let answered = lost_read
        .recv_timeout(Duration::from_secs(20))
        .expect("the lost read is answered after the takeover");
    assert_eq!(answered.expect("read slow"), b"slow content");
    eprintln!(
        "lost read answered {:?} after the takeover",
        adopted_at.elapsed()
    );

    // The file opened under the dead child reads on (its handle value came from it).
    let mut tail = vec![0u8; expected.len() - 100_000];
    big.read_exact_at(&mut tail, 100_000)
        .expect("read the rest");
    assert_eq!(tail, expected[100_000..]);

    // With the kernel's dentries and inodes dropped, every lookup comes here, and the
    // inode numbers are those the dead process gave.
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("drop dentries");
    assert_eq!(inodes(&mnt), before, "same TOC, same inode numbers");
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/link")).expect("through the symlink"),
        "127.0.0.1 localhost\n"
    );

    // What the relay costs per request, against a fresh mount of the same layer.
    let fresh_dir = dir.path().join("fresh");
    std::fs::create_dir(&fresh_dir).expect("mkdir fresh");
    let fresh = fs::mount(
        &fresh_dir,
        content(None, None),
        runtime.handle().clone(),
        &MountOptions::default(),
    )
    .expect("fresh mount");
    assert_eq!(inodes(&fresh_dir), before, "a fresh mount numbers alike");
    let fresh_latency = getxattr_latency(&fresh_dir.join("data/attrs"));
    let adopted_latency = getxattr_latency(&mnt.join("data/attrs"));
    eprintln!(
        "getxattr round trip: fresh {fresh_latency:?}, adopted (relayed) {adopted_latency:?}, ratio {:.2}",
        adopted_latency.as_secs_f64() / fresh_latency.as_secs_f64()
    );
    fresh.unmount().expect("unmount fresh");

    drop(big);
    handle.unmount().expect("unmount the adopted mount");
    assert!(!is_mounted(&mnt), "unmounted");
}

/// A file the dead process opened with FUSE passthrough and that is still open: the
/// kernel holds the inode in passthrough mode with the dead process's backing id and
/// accepts no other for a new open. The dead process recorded it in the mount's ledger;
/// the new one reopens the file with it (no read reaches it: the kernel reads the backing
/// file), while the old handle is held and after it is closed.
#[test]
fn a_file_held_open_with_passthrough_across_a_takeover() {
    if let Some(reason) = missing_prerequisite() {
        eprintln!("skipping: {reason}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let (mut child, connection) = serving_child_at(dir.path(), &mnt);
    let hosts = mnt.join("etc/hosts");
    let held = std::fs::File::open(&hosts).expect("open with passthrough");
    let mut text = vec![0u8; HOSTS.len()];
    held.read_exact_at(&mut text, 0).expect("read");
    assert_eq!(text, HOSTS);
    let ledger = dir.path().join("mnt.backing-ids");
    let recorded = std::fs::read_to_string(&ledger).expect("the child's ledger");
    assert!(
        recorded.starts_with('+'),
        "a backing id recorded: {recorded:?}"
    );
    child.kill().expect("SIGKILL the child");
    child.wait().expect("reap the child");

    let runtime = runtime();
    let adopted = content(None, None);
    let handle = fs::adopt(
        &mnt,
        connection,
        adopted.clone(),
        runtime.handle().clone(),
        &MountOptions::default(),
    )
    .expect("take over the connection");
    let reopened = std::fs::File::open(&hosts).expect("reopen while the old handle is held");
    let mut again = vec![0u8; HOSTS.len()];
    reopened
        .read_exact_at(&mut again, 0)
        .expect("read the reopened file");
    assert_eq!(again, HOSTS);
    held.read_exact_at(&mut text, 0)
        .expect("the held handle reads on");
    assert_eq!(text, HOSTS);
    drop(reopened);
    drop(held);
    assert_eq!(
        std::fs::read(&hosts).expect("opens once every handle is closed"),
        HOSTS
    );
    assert_eq!(std::fs::read(&hosts).expect("and again"), HOSTS);
    assert_eq!(
        adopted.reads.load(Ordering::Relaxed),
        0,
        "every read went to the backing file"
    );
    assert_eq!(
        std::fs::read_to_string(&ledger).expect("ledger kept for a next takeover"),
        recorded
    );
    handle.unmount().expect("unmount");
    assert!(!ledger.exists(), "the ledger goes with the connection");
}
