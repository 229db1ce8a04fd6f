//! Sparse windows: the part of a resume point's 32 KiB deflate window that the data after
//! it actually refers to. A decoder resumed at a deflate block end reads its window only
//! through back-references made within the next 32 KiB of output; any window byte none of
//! them reaches can be anything. So a window can be stored with those bytes zeroed and
//! compressed, which costs next to nothing where the data is poorly compressible (few
//! references) and less than the whole window elsewhere.
//!
//! Which bytes are referenced is found without a decoder that reports matches: the data
//! after the point is decoded three times from made-up windows. Window byte `i` holds
//! `i & 0xff` in the first, its complement in the second and `i >> 8` in the third. An
//! output byte that differs between the first two came from the window (a literal is the
//! same in every run, a copy of a window byte never is), and the first and third runs give
//! its window position. Copies of copies carry the same value, so they are found too.

use miniz_oxide::inflate::TINFLStatus;

use super::inflate::{Inflater, WINDOW};

/// zstd level of stored sparse windows (zeros cost nothing at any level).
const LEVEL: i32 = 3;

/// Window positions (0..WINDOW, oldest first) the output after a resume point refers
/// to, or `None` when `input` ends before that output is known (then the whole window
/// must be kept). `bits` and `byte` are the point's leftover bits and the byte holding
/// them; `input` the compressed bytes after it, through the end of its deflate stream or
/// at least far enough for 32 KiB of output.
pub fn referenced(bits: u8, byte: u8, input: &[u8]) -> Option<Vec<bool>> {
    let low: Vec<u8> = (0..WINDOW).map(|i| i as u8).collect();
    let inverted: Vec<u8> = low.iter().map(|b| !b).collect();
    let high: Vec<u8> = (0..WINDOW).map(|i| (i >> 8) as u8).collect();
    let a = decode_after(bits, byte, &low, input)?;
    let b = decode_after(bits, byte, &inverted, input)?;
    let c = decode_after(bits, byte, &high, input)?;
    let mut used = vec![false; WINDOW];
    for ((x, y), z) in a.iter().zip(&b).zip(&c) {
        if x != y {
            let at = usize::from(*x) | (usize::from(*z) << 8);
            if let Some(u) = used.get_mut(at) {
                *u = true;
            }
        }
    }
    Some(used)
}

/// The first 32 KiB of output after the point (less when the stream ends first), decoded
/// with `window` as history; `None` when the input runs out or is not deflate.
fn decode_after(bits: u8, byte: u8, window: &[u8], mut input: &[u8]) -> Option<Vec<u8>> {
    let mut inflater = Inflater::resume(bits, byte, window);
    let mut out = Vec::with_capacity(WINDOW);
    while out.len() < WINDOW {
        let step = inflater.step(input, true, false, WINDOW - out.len());
        out.extend_from_slice(&inflater.ring()[step.out.clone()]);
        input = &input[step.consumed..];
        match step.status {
            TINFLStatus::Done => return Some(out),
            TINFLStatus::HasMoreOutput => {}
            // Out of input, or stuck: the output after the point is not known.
            TINFLStatus::NeedsMoreInput if step.consumed == 0 && step.out.is_empty() => {
                return None
            }
            TINFLStatus::NeedsMoreInput => {}
            _ => return None,
        }
    }
    Some(out)
}

/// `window` with the unreferenced bytes zeroed, zstd-compressed; empty when no byte is
/// referenced (the point needs no window at all).
pub fn encode(window: &[u8], used: &[bool]) -> Vec<u8> {
    if !used.iter().any(|&u| u) {
        return Vec::new();
    }
    let sparse: Vec<u8> = window
        .iter()
        .zip(used)
        .map(|(&b, &u)| if u { b } else { 0 })
        .collect();
    zstd::bulk::compress(&sparse, LEVEL).unwrap_or_default()
}

/// Why a stored window cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sparse window does not decode to {WINDOW} bytes")]
pub struct SparseWindowError;

/// The 32 KiB window of a stored entry (all zeros for an empty one).
pub fn decode(entry: &[u8]) -> Result<Vec<u8>, SparseWindowError> {
    if entry.is_empty() {
        return Ok(vec![0; WINDOW]);
    }
    let window = zstd::bulk::decompress(entry, WINDOW).map_err(|_| SparseWindowError)?;
    if window.len() != WINDOW {
        return Err(SparseWindowError);
    }
    Ok(window)
}
