//! `estargz-snapshotter`: a containerd remote snapshotter serving the Snapshots v1 gRPC
//! API on a unix socket. The binary in `main.rs` wires these modules together.
//!
//! The modules in the order a lazy read meets them: containerd's API ([`proto`],
//! [`grpc`], run by [`service`]), containerd's snapshot semantics ([`snapshot`]: decides
//! whether a layer is remote), then everything that serves a remote layer ([`lazy`]).
//! The rest is process plumbing.

// containerd's API and the daemon's run.
pub mod error;
pub mod grpc;
pub mod proto;
pub mod service;

// containerd snapshot semantics; decides whether a layer is remote.
pub mod snapshot;

// How a remote layer is served: mount, FUSE, read path, fetch, producers, cache.
pub mod lazy;

// Observers: what users and Prometheus see.
pub mod metrics;
pub mod status;

// Credentials from the cluster, the FUSE manager process and process plumbing.
pub mod config;
pub mod cri;
pub mod goflags;
pub mod kube;
pub mod logging;
pub mod malloc;
pub mod manager;
pub mod notify;
pub mod private_fs;
#[cfg(test)]
pub(crate) mod testing;
pub mod unix_socket;
