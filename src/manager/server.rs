//! The manager process: serves mount requests from the daemon with an in-process
//! [`FuseMounter`], plus the status and metrics endpoints, until SIGTERM.

use std::future::Future;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;

use super::fds;
use super::protocol::{Request, Response, MAX_LINE};
use crate::config::Config;
use crate::lazy::FuseMounter;
use crate::metrics;
use crate::service::{self, Error};
use crate::snapshot::{MountError, Mounter};
use crate::status;

/// Serves until `shutdown` resolves, then unmounts every layer.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    service::secure_state(config)?;
    crate::lazy::observe::install(metrics::global());
    let socket = super::socket_path(&config.root);
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(Error::ManagerRunning(socket));
    }
    let mounter = service::fuse_mounter(config)?.ok_or(Error::NoFuse)?;
    let endpoints = status::endpoint::start(
        &config.metrics,
        &status::socket_path(&config.root),
        mounter.board(),
    )
    .await?;
    let keychains = service::Keychains::start(config, Some(&mounter))?;
    let listener = service::bind_private(&socket)?;
    write_pid(&config.root);
    tracing::info!(socket = %socket.display(), "fuse manager serving");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, mounter.clone()));
                }
                Err(error) => tracing::warn!(%error, "accept on the manager socket"),
            },
            () = &mut shutdown => break,
        }
    }
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(super::pid_path(&config.root));
    endpoints.shutdown();
    keychains.stop().await;
    service::unmount_on_blocking_thread(mounter).await;
    tracing::info!("fuse manager stopped");
    Ok(())
}

fn write_pid(root: &Path) {
    let path = super::pid_path(root);
    if let Err(error) =
        crate::private_fs::write_file(&path, std::process::id().to_string().as_bytes())
    {
        tracing::warn!(path = %path.display(), %error, "write pid file");
    }
}

/// Longest wait for a request line (the daemon writes it at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads one request line from `stream` and writes the response line. Descriptors ride
/// on the lines, which needs the blocking socket calls: it all runs on a blocking thread
/// (mounting blocks anyway: it waits on the network and FUSE).
async fn answer(stream: UnixStream, mounter: Arc<FuseMounter>) {
    let work = tokio::task::spawn_blocking(move || {
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => return tracing::debug!(%error, "manager client socket"),
        };
        answer_blocking(&stream, &mounter);
    });
    if let Err(error) = work.await {
        tracing::warn!(%error, "manager task");
    }
}

fn answer_blocking(stream: &std::os::unix::net::UnixStream, mounter: &FuseMounter) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let (response, connection) = match fds::recv_line(stream, MAX_LINE) {
        Ok((line, fd)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => dispatch(request, fd, mounter),
            Err(error) => (
                Response::Failed {
                    reason: format!("bad request: {error}"),
                },
                None,
            ),
        },
        Err(error) => (
            Response::Failed {
                reason: format!("read request: {error}"),
            },
            None,
        ),
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    let fd = connection.as_ref().map(AsFd::as_fd);
    if let Err(error) = fds::send_line(stream, text.as_bytes(), fd) {
        tracing::debug!(%error, "manager client went away");
    }
}

/// The answer to `request`, and the connection to attach to it.
fn dispatch(
    request: Request,
    fd: Option<OwnedFd>,
    mounter: &FuseMounter,
) -> (Response, Option<OwnedFd>) {
    match request {
        Request::Ping => (
            Response::Pong {
                pid: std::process::id(),
            },
            None,
        ),
        Request::Mounted => (
            Response::Mountpoints {
                paths: mounter.mountpoints(),
            },
            None,
        ),
        Request::Mount { mountpoint, labels } => {
            let response = outcome(mounter.mount(&mountpoint, &labels));
            (response, copy_of(mounter, &mountpoint))
        }
        Request::Connection { mountpoint } => match copy_of(mounter, &mountpoint) {
            Some(fd) => (Response::Ok, Some(fd)),
            None => (
                Response::Failed {
                    reason: format!("no connection serves {}", mountpoint.display()),
                },
                None,
            ),
        },
        Request::Adopt { mountpoint, labels } => {
            let Some(fd) = fd else {
                let reason = "adopt without a connection attached".to_owned();
                return (Response::Failed { reason }, None);
            };
            let adopted = mounter.adopt(&mountpoint, &labels, fd);
            if adopted.is_ok() {
                metrics::global().connection_adopted();
            }
            (outcome(adopted), None)
        }
        Request::Unmount { mountpoint, orphan } => {
            let unmounted = mounter.unmount(&mountpoint);
            if orphan && unmounted.is_ok() {
                tracing::info!(mountpoint = %mountpoint.display(), "unmounted a layer no snapshot owns");
                metrics::global().orphan_removed(metrics::ORPHAN_MOUNT);
            }
            (outcome(unmounted), None)
        }
    }
}

/// A copy of the connection of `mountpoint` (None, logged, when it cannot be made).
fn copy_of(mounter: &FuseMounter, mountpoint: &Path) -> Option<OwnedFd> {
    match mounter.connection(mountpoint)? {
        Ok(fd) => Some(fd),
        Err(error) => {
            tracing::warn!(mountpoint = %mountpoint.display(), %error, "copy a fuse connection");
            None
        }
    }
}

fn outcome(result: Result<(), MountError>) -> Response {
    match result {
        Ok(()) => Response::Ok,
        Err(MountError::NotRemote(reason)) => Response::NotRemote { reason },
        Err(error) => Response::Failed {
            reason: error.to_string(),
        },
    }
}
