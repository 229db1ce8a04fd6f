//! Test harness shared by the integration tests: real docker-registry, containerd, images.
//!
//! Typical use in an integration test:
//! ```no_run
//! use testkit::{image, Containerd, Registry};
//! # fn t() -> Result<(), testkit::Error> {
//! testkit::require!(stack: testkit::prereq::CONTAINERD_STACK);
//! let registry = Registry::start()?;
//! let image = testkit::busybox_image(&["/bin/sh", "-c", "echo hello"])?;
//! let reference = registry.push("demo", "v1", &image)?;
//! let containerd = Containerd::start()?;
//! containerd.ctr(["images", "pull", "--plain-http", reference.as_str()])?;
//! # Ok(()) }
//! ```

pub mod containerd;
pub mod fault_proxy;
pub mod http;
pub mod image;
pub mod mounts;
pub mod pagecache;
pub mod prereq;
pub mod process;
pub mod registry;
pub mod tls;
pub mod tools;

pub use containerd::{unique_id, Containerd, ContainerdError, ContainerdOptions};
pub use fault_proxy::{FaultMode, FaultProxy, FaultProxyError, MultiRangeAnswer};
pub use http::{Credentials, FetchedManifest, HttpError, RegistryClient};
pub use image::{
    build_index, busybox_layer, data_layer, write_layout, Artifact, BuiltImage, BuiltIndex,
    DataFile, ImageBuilder, LayerBuilder, Layout, MediaTypes, Platform,
};
pub use prereq::Prereq;
pub use registry::{Registry, RegistryError, RegistryOptions};
pub use tools::{run_tool, ToolError, ToolOutput};

/// Any testkit error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    FaultProxy(#[from] FaultProxyError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Build(#[from] image::BuildError),
    #[error(transparent)]
    Busybox(#[from] image::BusyboxError),
    #[error(transparent)]
    Layer(#[from] image::LayerError),
    #[error(transparent)]
    Layout(#[from] image::LayoutError),
    #[error(transparent)]
    Preset(#[from] image::PresetError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error(transparent)]
    Mounts(#[from] mounts::MountsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A one-layer busybox image (OCI media types, linux/amd64) running `cmd`.
pub fn busybox_image(cmd: &[&str]) -> Result<BuiltImage> {
    Ok(ImageBuilder::new()
        .layer(busybox_layer()?)
        .cmd(cmd)
        .build()?)
}
