//! `estargz-snapshotter`: a containerd remote snapshotter serving the Snapshots v1 gRPC
//! API on a unix socket. The binary in `main.rs` wires these modules together.

pub mod background;
pub mod cache;
pub mod config;
pub mod cri;
pub mod error;
pub mod fs;
pub mod goflags;
pub mod grpc;
pub mod kube;
pub mod layer;
pub mod layers;
pub mod lazy;
pub mod link;
pub mod logging;
pub mod malloc;
pub mod manager;
pub mod metrics;
pub mod notify;
pub mod prefetch;
pub mod preopen;
pub mod private_fs;
pub mod proto;
pub mod record;
pub mod remote;
pub mod service;
pub mod snapshot;
pub mod soci;
pub mod status;
#[cfg(test)]
pub(crate) mod testing;
pub mod unix_socket;
