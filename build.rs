//! Compiles containerd's Snapshots v1 protos in `proto/` into tonic/prost code.
//!
//! protoc and the google/protobuf well-known protos come from the `protoc-bin-vendored`
//! crate unless `PROTOC` is set, so the build needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    let protos = [PathBuf::from(
        "proto/containerd/services/snapshots/v1/snapshots.proto",
    )];
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure().compile_protos(&protos, &includes)?;
    Ok(())
}
