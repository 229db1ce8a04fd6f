//! `estargz-convert`: rewrite an image into eStargz or zstd:chunked layers.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
