//! OCI distribution client shared by the converter and the daemon.
//!
//! Media-type agnostic: manifests travel as bytes plus a media type; callers own the JSON
//! schemas. Blobs can be downloaded whole (digest-verified), read by byte ranges, and
//! pushed monolithically from files. Auth: anonymous, HTTP basic, bearer tokens, with
//! credentials from a docker `config.json` or given explicitly; a keychain may register a
//! refresh hook that a refused credential triggers (`refresh.rs`). Registries resolve to
//! endpoints as containerd resolves them (`hosts.rs`: hosts.toml, loopback plain HTTP),
//! each with its TLS settings (`tls.rs`).

mod auth;
mod auth_cache;
mod blobs;
mod challenge;
mod client;
mod config;
mod credentials;
mod docker_creds;
mod endpoints;
mod error;
mod helpers;
mod hosts;
mod manifests;
mod mirror_health;
mod mirrors;
mod multipart;
mod range_answer;
mod range_body;
mod ranges;
mod reference;
mod referrers;
mod refresh;
mod refresh_gate;
mod retry;
mod single_range;
mod stream;
mod tls;
mod transport;
mod upload;

pub use blobs::BlobTail;
pub use client::Client;
pub use config::ClientConfig;
pub use credentials::{Credential, Credentials, CredentialsError};
pub use error::Error;
pub use estargz::Digest;
pub use hosts::HostsError;
pub use manifests::{Manifest, MANIFEST_MEDIA_TYPES, MAX_MANIFEST_SIZE};
pub use mirror_health::MIRROR_PENALTY;
pub use multipart::MultiRangeBody;
pub use range_body::RangeBody;
pub use reference::{Reference, ReferenceError};
pub use referrers::{referrers_tag, referrers_tag_reference};
pub use stream::BlobStream;
pub use tls::TlsError;
