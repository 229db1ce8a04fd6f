//! What feeds a layer besides the reads containerd's containers make: the prioritized
//! range fetched at mount ([`prefetch`]), the rest of every layer fetched while the link
//! is idle ([`background_fetch`]), an image's other layers opened ahead of their Prepares
//! ([`preopen`]), and the record of which files a workload opens ([`record`]). They ask
//! `layer` for chunks at their priority; none of them talks to a registry itself.

pub mod background_fetch;
pub mod prefetch;
pub mod preopen;
pub mod record;
