//! Images built in code: layer tars, busybox base, config/manifest/index, layouts, pushing.

pub mod build;
pub mod busybox;
pub mod content;
pub mod fleet;
pub mod interp;
pub mod layer;
pub mod layout;
pub mod ondemand;
pub mod presets;
pub mod push;

pub use build::{
    build_index, index_blob, Artifact, Blob, BuildError, BuiltImage, BuiltIndex, BuiltLayer,
    ImageBuilder, MediaTypes, Platform,
};
pub use busybox::{busybox_layer, BusyboxError};
pub use fleet::{fleet_read_set, FleetBase, FLEET_READY};
pub use interp::InterpBase;
pub use layer::{data_layer, DataFile, LayerBuilder, LayerError};
pub use layout::{write_layout, Layout, LayoutError};
pub use ondemand::{
    interp_image, interp_read_set, scattered_image, scattered_read_set, ONDEMAND_READY,
};
pub use presets::{
    bench_image, demo_image, lazy_bench_image, lazy_bench_read_set, read_bench_image, PresetError,
    DEMO_GREETING, LAZY_BENCH_READY, READ_BENCH_FILE,
};
pub use push::push_artifact;
