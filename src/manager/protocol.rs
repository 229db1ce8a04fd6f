//! The daemon ↔ manager protocol: one JSON request line, one JSON response line, per
//! connection. A `/dev/fuse` connection travels attached to a line (SCM_RIGHTS): with the
//! answer to `Mount` and `Connection`, with the request `Adopt`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::snapshot::Labels;

/// Longest request or response line accepted (labels are bounded by containerd).
pub(super) const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Request {
    Ping,
    Mount {
        mountpoint: PathBuf,
        labels: Labels,
    },
    Unmount {
        mountpoint: PathBuf,
        /// No snapshot owns it (a crash left it): counted in the manager's metrics.
        #[serde(default)]
        orphan: bool,
    },
    Mounted,
    /// Serve the layer on the `/dev/fuse` connection attached, that of its mount at
    /// `mountpoint`, whose manager died (the daemon kept a copy).
    Adopt {
        mountpoint: PathBuf,
        labels: Labels,
    },
    /// A copy of the connection serving `mountpoint` (a restarted daemon's copies).
    Connection {
        mountpoint: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub(super) enum Response {
    Ok,
    Pong {
        pid: u32,
    },
    /// The layer cannot be served lazily (the daemon falls back to an ordinary pull).
    NotRemote {
        reason: String,
    },
    Failed {
        reason: String,
    },
    Mountpoints {
        paths: Vec<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let requests = [
            Request::Ping,
            Request::Mount {
                mountpoint: "/r/snapshots/1/fs".into(),
                labels: [("a".to_owned(), "b".to_owned())].into(),
            },
            Request::Unmount {
                mountpoint: "/x".into(),
                orphan: true,
            },
            Request::Mounted,
            Request::Adopt {
                mountpoint: "/r/snapshots/2/fs".into(),
                labels: Labels::new(),
            },
            Request::Connection {
                mountpoint: "/r/snapshots/2/fs".into(),
            },
        ];
        for request in requests {
            let line = serde_json::to_string(&request).expect("encode");
            assert!(!line.contains('\n'));
            assert_eq!(
                serde_json::from_str::<Request>(&line).expect("decode"),
                request
            );
        }
        let line = serde_json::to_string(&Response::NotRemote {
            reason: "no labels".into(),
        })
        .expect("encode");
        assert_eq!(line, r#"{"result":"not_remote","reason":"no labels"}"#);
        // A daemon from before the orphan flag still unmounts.
        let old = r#"{"op":"unmount","mountpoint":"/x"}"#;
        assert_eq!(
            serde_json::from_str::<Request>(old).expect("decode"),
            Request::Unmount {
                mountpoint: "/x".into(),
                orphan: false
            }
        );
    }
}
