//! Rust types and tonic stubs generated from containerd's protos in `proto/`. The
//! module tree mirrors the proto packages because generated code refers across them.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

pub mod containerd {
    /// `containerd.types`: the `Mount` message.
    pub mod types {
        tonic::include_proto!("containerd.types");
    }

    pub mod services {
        pub mod snapshots {
            /// `containerd.services.snapshots.v1`: the Snapshots service and messages.
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
    }
}

pub use containerd::services::snapshots::v1 as snapshots;
pub use containerd::types;
