//! The manager process: serves mount requests from the daemon with an in-process
//! [`FuseMounter`], plus the status and metrics endpoints, until SIGTERM.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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

/// Reads one request line from `stream` and writes the response line.
async fn answer(stream: UnixStream, mounter: Arc<FuseMounter>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64));
    let response = match reader.read_line(&mut line).await {
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => dispatch(request, mounter).await,
            Err(error) => Response::Failed {
                reason: format!("bad request: {error}"),
            },
        },
        Err(error) => Response::Failed {
            reason: format!("read request: {error}"),
        },
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    if let Err(error) = write.write_all(text.as_bytes()).await {
        tracing::debug!(%error, "manager client went away");
    }
}

/// Mounting blocks (it waits on the network and FUSE), so it runs on a blocking thread.
async fn dispatch(request: Request, mounter: Arc<FuseMounter>) -> Response {
    let work = tokio::task::spawn_blocking(move || match request {
        Request::Ping => Response::Pong {
            pid: std::process::id(),
        },
        Request::Mounted => Response::Mountpoints {
            paths: mounter.mountpoints(),
        },
        Request::Mount { mountpoint, labels } => outcome(mounter.mount(&mountpoint, &labels)),
        Request::Unmount { mountpoint, orphan } => {
            let unmounted = mounter.unmount(&mountpoint);
            if orphan && unmounted.is_ok() {
                tracing::info!(mountpoint = %mountpoint.display(), "unmounted a layer no snapshot owns");
                metrics::global().orphan_removed(metrics::ORPHAN_MOUNT);
            }
            outcome(unmounted)
        }
    });
    work.await.unwrap_or_else(|error| Response::Failed {
        reason: format!("manager task: {error}"),
    })
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
