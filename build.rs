//! Compiles containerd's Snapshots v1 protos in `proto/` into tonic/prost code, and the
//! minimal CRI subset in `tests/proto/cri/` into client stubs that only the integration
//! tests include (`tests/common/cri.rs`); the library never compiles them.
//!
//! protoc and the google/protobuf well-known protos come from the `protoc-bin-vendored`
//! crate unless `PROTOC` is set, so the build needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=tests/proto");
    let protos = [PathBuf::from(
        "proto/containerd/services/snapshots/v1/snapshots.proto",
    )];
    let includes = [PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure().compile_protos(&protos, &includes)?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &[PathBuf::from("tests/proto/cri/runtime_v1_min.proto")],
            &[PathBuf::from("tests/proto/cri")],
        )?;
    Ok(())
}
