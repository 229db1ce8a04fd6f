//! `estargz-snapshotter`: the containerd remote snapshotter daemon.
//!
//! The daemon lands with its own issue; until then the binary only says so.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the snapshotter daemon is not built yet; use estargz-convert")
}
