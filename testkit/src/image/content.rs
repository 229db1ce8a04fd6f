//! Deterministic file contents: pseudo-random bytes mixed with compressible text.

/// Size of one block that is either all random or all text.
const BLOCK: usize = 4096;

/// Words for the compressible (text-like) blocks.
const WORDS: &[&str] = &[
    "layer",
    "chunk",
    "container",
    "snapshot",
    "registry",
    "digest",
    "manifest",
    "lazy",
    "fetch",
    "offset",
    "gzip",
    "stargz",
    "index",
    "config",
    "runtime",
    "mount",
    "\n",
];

/// A small deterministic generator (splitmix64); the same seed always gives the same bytes.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }
}

/// `size` bytes from `seed`; about `text_percent`% of the 4 KiB blocks are compressible text,
/// the rest random bytes.
pub fn mixed(seed: u64, size: usize, text_percent: u8) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(size);
    while out.len() < size {
        let block = BLOCK.min(size - out.len());
        if rng.below(100) < u64::from(text_percent) {
            push_text(&mut rng, &mut out, block);
        } else {
            push_random(&mut rng, &mut out, block);
        }
    }
    out
}

/// `size` incompressible bytes from `seed`.
pub fn random(seed: u64, size: usize) -> Vec<u8> {
    mixed(seed, size, 0)
}

/// `size` bytes of compressible text from `seed`.
pub fn text(seed: u64, size: usize) -> Vec<u8> {
    mixed(seed, size, 100)
}

fn push_random(rng: &mut SplitMix64, out: &mut Vec<u8>, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        let word = rng.next_u64().to_le_bytes();
        let take = word.len().min(end - out.len());
        out.extend_from_slice(&word[..take]);
    }
}

fn push_text(rng: &mut SplitMix64, out: &mut Vec<u8>, len: usize) {
    let end = out.len() + len;
    while out.len() < end {
        let index = usize::try_from(rng.below(WORDS.len() as u64)).unwrap_or(0);
        let word = WORDS[index].as_bytes();
        let take = word.len().min(end - out.len());
        out.extend_from_slice(&word[..take]);
        if out.len() < end {
            out.push(b' ');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn gzip_len(bytes: &[u8]) -> usize {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap().len()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(mixed(7, 10_000, 50), mixed(7, 10_000, 50));
        assert_ne!(mixed(7, 10_000, 50), mixed(8, 10_000, 50));
    }

    #[test]
    fn sizes_are_exact() {
        for (name, size) in [("empty", 0), ("odd", 4097), ("one", 1), ("big", 100_000)] {
            assert_eq!(mixed(1, size, 30).len(), size, "{name}");
        }
    }

    #[test]
    fn text_compresses_and_random_does_not() {
        let size = 256 * 1024;
        assert!(gzip_len(&text(1, size)) < size / 3);
        assert!(gzip_len(&random(1, size)) > size * 99 / 100);
        let half = gzip_len(&mixed(1, size, 50));
        assert!(half > size / 4 && half < size * 3 / 4, "{half}");
    }
}
