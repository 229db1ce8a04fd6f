//! Why the bytes of a span prefix could not be had (the read then fails with EIO).

use estargz::soci::SpanError;

use super::span_fetch::SpanFetchError;

/// Why a span prefix could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PrefixError {
    #[error("{0}")]
    Fetch(#[from] SpanFetchError),
    #[error("{0}")]
    Verify(#[from] SpanError),
    #[error("span {span}: all blocks decode to {got} bytes, the read needs {want}")]
    Short { span: usize, got: u64, want: u64 },
    #[error("span prefix task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Window(#[from] estargz::soci::sparse_window::SparseWindowError),
}
