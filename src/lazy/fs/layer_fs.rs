//! `LayerFs`: the fuser `Filesystem` of one layer. Metadata comes from memory; `read`
//! spawns the content read onto a tokio runtime and replies from that task.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use estargz::{Entry, EntryId, EntryType};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use super::passthrough::{
    open_inherited, register, Decision, OpenFiles, FH_PASSTHROUGH, PASSTHROUGH_FLAGS,
};
use super::view::{entry_of, inode_of, LayerView, Node};
use super::{LayerContent, MountOptions};

/// Layer content never changes: the kernel may cache names and attributes for long.
const TTL: Duration = Duration::from_secs(3600);
const BLOCK_SIZE: u32 = 4096;
const NAME_MAX: u32 = 255;
/// Entries (`.` and `..`) listed before a directory's children.
const DOTS: usize = 2;
const TRUSTED_OPAQUE: &str = "trusted.overlay.opaque";
const USER_OPAQUE: &str = "user.overlay.opaque";
/// File handle of files opened normally, untracked (passthrough off, or not a candidate).
const FH_FUSE: FileHandle = FileHandle(0);
/// File handle of passthrough candidates opened normally (tracked in [`OpenFiles`]).
const FH_NORMAL: FileHandle = FileHandle(2);

/// The read-only filesystem of one layer.
pub struct LayerFs {
    content: Arc<dyn LayerContent>,
    view: LayerView,
    runtime: tokio::runtime::Handle,
    userxattr: bool,
    /// Passthrough asked for in the options and granted by the kernel at init.
    passthrough: bool,
    open_files: Arc<OpenFiles>,
    /// Blocks of all regular files, for statfs.
    total_blocks: u64,
}

impl LayerFs {
    /// Builds the mounted view of `content`'s index (once, here).
    pub fn new(
        content: Arc<dyn LayerContent>,
        runtime: tokio::runtime::Handle,
        options: &MountOptions,
    ) -> Self {
        let view = LayerView::build(content.index());
        let total_blocks = content
            .index()
            .iter()
            .filter(|(_, e)| e.kind == EntryType::Reg)
            .map(|(_, e)| e.size.div_ceil(u64::from(BLOCK_SIZE)))
            .fold(0u64, u64::saturating_add);
        Self {
            content,
            view,
            runtime,
            userxattr: options.userxattr,
            passthrough: options.passthrough,
            open_files: Arc::default(),
            total_blocks,
        }
    }

    /// Opens regular file `id`: with passthrough when its content is local and no
    /// handle has it open normally, else normally. Finding out may assemble the backing
    /// file, so that reply comes from a task rather than from this FUSE thread.
    fn open_file(&self, id: EntryId, reply: ReplyOpen) {
        match self.open_files.begin(id) {
            Decision::Passthrough(backing) => {
                return reply.opened_passthrough(FH_PASSTHROUGH, PASSTHROUGH_FLAGS, &backing)
            }
            Decision::Normal => return reply.opened(FH_NORMAL, FopenFlags::FOPEN_KEEP_CACHE),
            Decision::Probe => {}
        }
        let local = self.content.backing_file(id);
        let open_files = self.open_files.clone();
        self.runtime.spawn(async move {
            let fresh = match local.await.map(|file| register(&reply, &file)) {
                Some(Ok(fresh)) => Some(fresh),
                Some(Err(error)) => {
                    tracing::debug!(file = id, %error, "passthrough refused; serving reads");
                    None
                }
                None => None,
            };
            match open_files.settle(id, fresh) {
                Decision::Passthrough(backing) => {
                    tracing::debug!(file = id, "opened with passthrough");
                    reply.opened_passthrough(FH_PASSTHROUGH, PASSTHROUGH_FLAGS, &backing);
                }
                Decision::Normal | Decision::Probe => {
                    reply.opened(FH_NORMAL, FopenFlags::FOPEN_KEEP_CACHE)
                }
            }
        });
    }

    /// Uses `files` for the open-file bookkeeping: with a ledger on fresh mounts, with
    /// the dead process's backing ids on adopted ones.
    pub(super) fn with_open_files(mut self, files: OpenFiles) -> Self {
        self.open_files = Arc::new(files);
        self
    }

    fn entry(&self, ino: INodeNo) -> Result<(EntryId, &Entry), Errno> {
        let id = entry_of(ino.0).ok_or(Errno::ENOENT)?;
        let entry = self.content.index().entry(id).ok_or(Errno::ENOENT)?;
        Ok((id, entry))
    }

    fn attr(&self, id: EntryId, entry: &Entry) -> FileAttr {
        let mtime = unix_time(entry.mtime);
        let mut attr = FileAttr {
            ino: INodeNo(inode_of(id)),
            size: entry.size,
            blocks: entry.size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: file_type(entry.kind),
            perm: u16::try_from(entry.mode & 0o7777).unwrap_or(0),
            nlink: entry.nlink,
            uid: entry.uid,
            gid: entry.gid,
            rdev: 0,
            blksize: BLOCK_SIZE,
            flags: 0,
        };
        match self.view.node(id) {
            Node::Whiteout(_) => {
                attr.kind = FileType::CharDevice;
                attr.perm = 0;
                attr.size = 0;
                attr.blocks = 0;
                attr.nlink = 1;
            }
            Node::Entry(_) => match entry.kind {
                EntryType::Dir => attr.nlink = 2u32.saturating_add(self.view.subdir_count(id)),
                EntryType::Char | EntryType::Block => {
                    attr.rdev = make_dev(entry.dev_major, entry.dev_minor);
                }
                EntryType::Symlink => attr.size = entry.link_target.len() as u64,
                _ => {}
            },
        }
        attr
    }

    /// Directory `ino` from position `offset` on: (next offset, id, entry, name), with
    /// `.` and `..` first. Offsets are positions in this fixed listing.
    fn listing(
        &self,
        ino: INodeNo,
        offset: u64,
    ) -> Result<impl Iterator<Item = (u64, EntryId, &Entry, &str)> + '_, Errno> {
        let (id, dir) = self.entry(ino)?;
        if !dir.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let index = self.content.index();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let dots = [(id, "."), (dir.parent, "..")];
        let dots = dots.into_iter().enumerate().skip(start);
        // Skipping within the slice keeps each call O(entries returned) in huge directories.
        let children = self
            .view
            .children_of(index, id)
            .iter()
            .enumerate()
            .skip(start.saturating_sub(DOTS))
            .map(|(at, child)| (at.saturating_add(DOTS), (child.id, child.name.as_str())));
        let listing = dots
            .chain(children)
            .filter_map(|(position, (child, name))| {
                let entry = index.entry(child)?;
                let next = u64::try_from(position).ok()?.checked_add(1)?;
                Some((next, child, entry, name))
            });
        Ok(listing)
    }

    /// The node's xattrs: the tar's, plus the overlay opaque marker where it applies.
    fn xattrs(&self, id: EntryId, entry: &Entry) -> Vec<(String, Vec<u8>)> {
        if matches!(self.view.node(id), Node::Whiteout(_)) {
            return Vec::new();
        }
        let mut out: Vec<(String, Vec<u8>)> = entry
            .xattrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.view.is_opaque(id) {
            let mut markers = vec![TRUSTED_OPAQUE];
            if self.userxattr {
                markers.push(USER_OPAQUE);
            }
            for marker in markers {
                out.retain(|(key, _)| key != marker);
                out.push((marker.to_string(), b"y".to_vec()));
            }
        }
        out
    }
}

/// Replies with `value` for a getxattr/listxattr of buffer `size` (0 asks the length).
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    let Ok(len) = u32::try_from(value.len()) else {
        return reply.error(Errno::E2BIG);
    };
    if size == 0 {
        reply.size(len);
    } else if len > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn unix_time(secs: i64) -> SystemTime {
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(offset).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(offset).unwrap_or(UNIX_EPOCH)
    }
}

fn file_type(kind: EntryType) -> FileType {
    match kind {
        EntryType::Dir => FileType::Directory,
        EntryType::Symlink => FileType::Symlink,
        EntryType::Char => FileType::CharDevice,
        EntryType::Block => FileType::BlockDevice,
        EntryType::Fifo => FileType::NamedPipe,
        EntryType::Reg | EntryType::Hardlink | EntryType::Chunk => FileType::RegularFile,
    }
}

/// A device number in the kernel's 32-bit "new" encoding, which FUSE's `rdev` carries:
/// minor low byte, 12-bit major, then the minor's upper 12 bits.
fn make_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & 0xfff00) << 12)
}

impl fuser::Filesystem for LayerFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Listings with attributes in one round trip: `ls -l` of a big directory.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(unsupported) = config.add_capabilities(wanted) {
            tracing::debug!(?unsupported, "kernel lacks readdirplus");
        }
        if self.passthrough {
            // Depth 1: backing files are on a plain filesystem, and overlayfs may still
            // stack on top of this mount.
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            if !granted {
                tracing::info!("kernel lacks FUSE passthrough; all reads are served by the daemon");
            }
            self.passthrough = granted;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.entry(parent).and_then(|(dir, _)| {
            let name = name.to_str().ok_or(Errno::ENOENT)?;
            let index = self.content.index();
            let id = self.view.child(index, dir, name).ok_or(Errno::ENOENT)?;
            let entry = index.entry(id).ok_or(Errno::ENOENT)?;
            Ok(self.attr(id, entry))
        });
        match found {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(errno) => reply.error(errno),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.entry(ino) {
            Ok((id, entry)) => reply.attr(&TTL, &self.attr(id, entry)),
            Err(errno) => reply.error(errno),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.entry(ino) {
            Ok((_, entry)) if entry.kind == EntryType::Symlink => {
                reply.data(entry.link_target.as_bytes())
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(errno) => reply.error(errno),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let (id, entry) = match self.entry(ino) {
            Ok(found) => found,
            Err(errno) => return reply.error(errno),
        };
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if entry.is_dir() {
            return reply.error(Errno::EISDIR);
        }
        if entry.kind == EntryType::Reg {
            self.content.opened(id);
            if let Some(raw) = self.open_files.inherited(id) {
                return open_inherited(reply, raw);
            }
            if self.passthrough && entry.size > 0 {
                return self.open_file(id, reply);
            }
        }
        reply.opened(FH_FUSE, FopenFlags::FOPEN_KEEP_CACHE)
    }

    /// Nothing to write back on close. ENOSYS (rather than fuser's default, which logs a
    /// warning) makes the kernel stop sending flushes for the whole mount.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if fh == FH_PASSTHROUGH || fh == FH_NORMAL {
            if let Some(id) = entry_of(ino.0) {
                self.open_files.release(id);
            }
        }
        reply.ok();
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let (id, entry) = match self.entry(ino) {
            Ok(found) if found.1.kind == EntryType::Reg => found,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(errno) => return reply.error(errno),
        };
        let remaining = entry.size.saturating_sub(offset);
        let len = u32::try_from(remaining).unwrap_or(u32::MAX).min(size);
        if len == 0 {
            return reply.data(&[]);
        }
        tracing::debug!(file = id, offset, len, "layer read");
        // Building the future does no I/O; the task does, and replies when done.
        let read = self.content.read(id, offset, len);
        self.runtime.spawn(async move {
            match read.await {
                Ok(data) => reply.data(&data),
                Err(error) => {
                    tracing::warn!(file = id, offset, len, %error, "layer read failed");
                    reply.error(Errno::EIO);
                }
            }
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.entry(ino) {
            Ok((_, entry)) if entry.is_dir() => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(errno) => reply.error(errno),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = match self.listing(ino, offset) {
            Ok(listing) => listing,
            Err(errno) => return reply.error(errno),
        };
        for (next, id, entry, name) in listing {
            let kind = self.attr(id, entry).kind;
            if reply.add(INodeNo(inode_of(id)), next, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listing = match self.listing(ino, offset) {
            Ok(listing) => listing,
            Err(errno) => return reply.error(errno),
        };
        for (next, id, entry, name) in listing {
            let attr = self.attr(id, entry);
            if reply.add(attr.ino, next, name, &TTL, &attr, Generation(0)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.content.index().len() as u64;
        reply.statfs(
            self.total_blocks,
            0,
            0,
            files,
            0,
            BLOCK_SIZE,
            NAME_MAX,
            BLOCK_SIZE,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (id, entry) = match self.entry(ino) {
            Ok(found) => found,
            Err(errno) => return reply.error(errno),
        };
        let value = self
            .xattrs(id, entry)
            .into_iter()
            .find(|(key, _)| OsStr::new(key) == name);
        match value {
            Some((_, value)) => reply_xattr(reply, size, &value),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let (id, entry) = match self.entry(ino) {
            Ok(found) => found,
            Err(errno) => return reply.error(errno),
        };
        let mut names = Vec::new();
        for (key, _) in self.xattrs(id, entry) {
            names.extend_from_slice(key.as_bytes());
            names.push(0);
        }
        reply_xattr(reply, size, &names);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.entry(ino) {
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(errno) => reply.error(errno),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_new_encoding() {
        let cases = [
            ("null", 1, 3, 0x0103),
            ("sda", 8, 0, 0x0800),
            ("big minor", 0, 0x12345, 0x1230_0045),
            ("whiteout", 0, 0, 0),
        ];
        for (name, major, minor, want) in cases {
            assert_eq!(make_dev(major, minor), want, "{name}");
        }
    }

    #[test]
    fn times_before_and_after_the_epoch() {
        let cases = [
            ("epoch", 0, UNIX_EPOCH),
            ("after", 90, UNIX_EPOCH + Duration::from_secs(90)),
            ("before", -90, UNIX_EPOCH - Duration::from_secs(90)),
        ];
        for (name, secs, want) in cases {
            assert_eq!(unix_time(secs), want, "{name}");
        }
    }
}
