//! `estargz-convert` as a library: the binary's modules, exposed for its tests.
//!
//! - [`location`]: parse SRC / DST arguments.
//! - [`oci`]: image JSON types and media types.
//! - [`layout`] and [`store`]: read and write images in layout directories and registries.
//! - [`layer`]: convert one layer blob.
//! - [`rewrite`]: config, manifest and index rewrites.
//! - [`convert`]: orchestrate a whole image; [`report`]: its result.
//! - [`index`]: `estargz-convert index`: SOCI indexes pushed beside an unconverted image.
//! - [`record`], [`platform`], [`progress`]: prioritized files, platform filters, display.

pub mod client;
pub mod convert;
pub mod index;
pub mod layer;
pub mod layout;
pub mod location;
pub mod oci;
pub mod platform;
pub mod progress;
pub mod record;
pub mod report;
pub mod rewrite;
pub mod store;
