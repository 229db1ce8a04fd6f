//! The crate error, and the only place that maps errors to gRPC status codes.

use tonic::{Code, Status};

use crate::snapshot;

/// Errors a gRPC request can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Snapshot(#[from] snapshot::Error),
    #[error("store task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The gRPC code containerd expects for a snapshot store error.
pub fn snapshot_code(error: &snapshot::Error) -> Code {
    use snapshot::Error as E;
    match error {
        E::NotFound { .. } => Code::NotFound,
        E::AlreadyExists { .. } => Code::AlreadyExists,
        E::EmptyKey
        | E::ParentNotCommitted(_)
        | E::ParentChanged { .. }
        | E::ImmutableField { .. }
        | E::Filter(_) => Code::InvalidArgument,
        E::NotActive { .. } | E::NotMountable(_) | E::HasChildren(_) => Code::FailedPrecondition,
        E::Database(_)
        | E::Decode { .. }
        | E::Encode { .. }
        | E::IdOverflow
        | E::Io { .. }
        | E::CleanupIncomplete(_) => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = match &error {
            Error::Snapshot(e) => snapshot_code(e),
            Error::Task(_) => Code::Internal,
        };
        Status::new(code, error.to_string())
    }
}

impl From<snapshot::Error> for Status {
    fn from(error: snapshot::Error) -> Status {
        Error::from(error).into()
    }
}
