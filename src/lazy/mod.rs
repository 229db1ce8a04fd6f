//! Serving a remote layer: everything between the snapshot store's decision that a layer
//! is remote and a verified byte handed to a reader.
//!
//! The path of one lazy read, in the order of the modules below: the [`mounter`] (the
//! store's `Mounter`) resolves the blob from the Prepare labels ([`source`]'s label
//! parsing), takes the one shared layer for its digest from [`layers`] and mounts it
//! through [`fs`] (FUSE); a read asks [`layer`] for a file range, which becomes chunks
//! (or, for unconverted gzip layers, [`soci`] spans), which come from [`cache`] or are
//! fetched: in-flight joins, the readahead window and range requests live in
//! `layer/fetch.rs`, `layer/window.rs` and `layer/receive.rs`, priorities on the wire in
//! [`link`], and the bytes from a [`source::BlobSource`] (the registry). The
//! [`producers`] (prefetch at mount, background fetch, pre-open, recording) feed the same
//! layers and never fetch on their own. What the path reports goes to the one
//! [`observe::Observer`] the process installs; why a layer falls back is [`fallback`].

pub mod cache;
pub mod fallback;
pub mod fs;
pub mod layer;
pub mod layers;
pub mod link;
pub mod mounter;
pub mod observe;
pub mod producers;
pub mod recorded;
pub mod soci;
pub mod source;

pub use mounter::{FuseConfig, FuseMounter, LazyConfig, LazyError, DEFAULT_MOUNT_TIMEOUT};
