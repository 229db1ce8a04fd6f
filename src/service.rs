//! Runs the daemon: sets up lazy pulling (an in-process FUSE mounter, or the FUSE manager
//! process with `[fuse] manager = true`, when enabled and FUSE is available), opens the
//! store, removes what a crash left that no snapshot owns and mounts again the remote
//! snapshots whose mounts were lost (in the background: startup never waits on the
//! network), watches the fuse manager (a dead one is replaced within seconds), serves
//! the Snapshots API on a unix socket until the shutdown future resolves, then finishes
//! in-flight requests and removes the sockets. systemd is told `READY=1` once the
//! socket listens (and `STOPPING=1` at shutdown).
//! An in-process mounter unmounts its layers at shutdown; the manager keeps them.
//!
//! With `[cri_keychain] enable`, the CRI image-service proxy is served on its own socket,
//! keeping pull credentials in the lazy layers' registry client; with
//! `[kubeconfig_keychain] enable`, docker config Secrets are polled into that client. Both
//! live where the registry client lives: here, or in the fuse manager.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::cri::{self, CriError};
use crate::grpc::SnapshotService;
use crate::kube::{self, AccessError};
use crate::lazy::{FuseMounter, LazyConfig, LazyError};
use crate::manager::{self, ManagerMounter};
use crate::private_fs::{self, PrivateFsError};
use crate::proto::snapshots::snapshots_server::SnapshotsServer;
use crate::snapshot::{self, Mounter, Store};
use crate::status::{self, endpoint::ServerError};
use crate::unix_socket::{self, BindError};

/// The device FUSE mounts need.
const FUSE_DEVICE: &str = "/dev/fuse";
/// Pause between attempts to mount again remote snapshots that could not be (registry
/// down at startup).
const RESTORE_RETRY: Duration = Duration::from_secs(30);
/// How often the daemon checks that the fuse manager is still there.
const MANAGER_POLL: Duration = Duration::from_secs(1);

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open snapshot store in {root}: {source}")]
    Store {
        root: PathBuf,
        source: snapshot::Error,
    },
    #[error(transparent)]
    Socket(#[from] BindError),
    #[error("set up lazy pulling: {0}")]
    Lazy(#[from] LazyError),
    #[error("metrics endpoint: {0}")]
    Metrics(#[from] ServerError),
    #[error("CRI proxy: {0}")]
    Cri(#[from] CriError),
    #[error("kubeconfig keychain: {0}")]
    Kubeconfig(#[from] AccessError),
    #[error("serve gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the fuse manager needs lazy pulling on and {FUSE_DEVICE}")]
    NoFuse,
    #[error("another fuse manager already serves {0}")]
    ManagerRunning(PathBuf),
    #[error("daemon state: {0}")]
    State(#[from] PrivateFsError),
}

/// How lazy layers are mounted in this daemon.
enum Lazy {
    Off,
    InProcess(Arc<FuseMounter>),
    Manager(Arc<ManagerMounter>),
}

impl Lazy {
    fn mounter(&self) -> Option<Arc<dyn Mounter>> {
        match self {
            Lazy::Off => None,
            Lazy::InProcess(m) => Some(m.clone()),
            Lazy::Manager(m) => Some(m.clone()),
        }
    }
}

/// Serves until `shutdown` resolves.
pub async fn run(config: &Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    secure_state(config)?;
    crate::lazy::observe::install(crate::metrics::global());
    let root = config.root.clone();
    let lazy = if config.fuse.manager {
        match fuse_available(config) {
            true => Lazy::Manager(Arc::new(manager_mounter(config))),
            false => Lazy::Off,
        }
    } else {
        fuse_mounter(config)?.map_or(Lazy::Off, Lazy::InProcess)
    };
    let mounter = lazy.mounter();
    let store =
        Store::open_with(&root, mounter.clone()).map_err(|source| Error::Store { root, source })?;
    let store = Arc::new(store);
    // The manager serves status itself; an in-process mounter's board is served here.
    let endpoints = match &lazy {
        Lazy::Manager(_) => None,
        Lazy::InProcess(m) => Some(start_status(config, m.board()).await?),
        Lazy::Off => Some(start_status(config, Arc::default()).await?),
    };
    // The keychains go with the registry client: in the manager when there is one.
    let in_process = match &lazy {
        Lazy::InProcess(m) => Some(m.as_ref()),
        _ => None,
    };
    let keychains = match &lazy {
        Lazy::Manager(_) => Keychains::default(),
        _ => match Keychains::start(config, in_process) {
            Ok(keychains) => keychains,
            Err(e) => {
                stop_status(endpoints);
                return Err(e);
            }
        },
    };
    let running = Arc::new(AtomicBool::new(true));
    if let Some(mounter) = mounter {
        let manager = match &lazy {
            Lazy::Manager(m) => Some(m.clone()),
            _ => None,
        };
        let (store, running) = (store.clone(), running.clone());
        std::thread::spawn(move || converge(&store, mounter.as_ref(), manager, &running));
    }
    // The Snapshots socket last: its appearance tells that the daemon is ready.
    let access = unix_socket::Access::shared_with(config.socket_group);
    let listener = match unix_socket::bind(&config.address, access) {
        Ok(listener) => listener,
        Err(e) => {
            stop_status(endpoints);
            keychains.stop().await;
            return Err(e.into());
        }
    };
    tracing::info!(
        root = %config.root.display(),
        address = %config.address.display(),
        "serving containerd snapshots API"
    );
    // The socket listens: connections queue until the server below accepts them.
    notify_systemd(crate::notify::ready(), "READY=1");
    let shutdown = async {
        shutdown.await;
        notify_systemd(crate::notify::stopping(), "STOPPING=1");
    };
    let service = SnapshotsServer::new(SnapshotService::new(store));
    let served = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    running.store(false, Ordering::Relaxed);
    remove_socket(&config.address);
    keychains.stop().await;
    stop_status(endpoints);
    match lazy {
        Lazy::InProcess(mounter) => unmount_on_blocking_thread(mounter).await,
        Lazy::Manager(_) => tracing::info!("lazy layers stay mounted in the fuse manager"),
        Lazy::Off => {}
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs the outcome of a systemd notification: a failure is not fatal (systemd then
/// times the start out, which names the cause itself).
fn notify_systemd(sent: Result<bool, crate::notify::NotifyError>, state: &str) {
    match sent {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "notify systemd"),
    }
}

async fn start_status(
    config: &Config,
    board: Arc<crate::status::Board>,
) -> Result<status::endpoint::Endpoints, Error> {
    let socket = status::socket_path(&config.root);
    Ok(status::endpoint::start(&config.metrics, &socket, board).await?)
}

/// The CRI image-service proxy and the Secrets watch, when configured.
#[derive(Default)]
pub(crate) struct Keychains {
    cri_proxy: Option<cri::ProxyHandle>,
    _secrets: Option<kube::SecretsWatch>,
}

impl Keychains {
    /// Starts what `config` enables; credentials go to `mounter`'s registry client (the
    /// proxy still forwards without one).
    pub(crate) fn start(
        config: &Config,
        mounter: Option<&FuseMounter>,
    ) -> Result<Keychains, Error> {
        let client = mounter.map(FuseMounter::registry_client);
        let keychain = &config.kubeconfig_keychain;
        let secrets = match &client {
            Some(client) if keychain.enable => Some(kube::start(keychain, client.clone())?),
            _ => None,
        };
        let cri_proxy = match config.cri_keychain.enable {
            true => Some(cri::start(&config.cri_keychain, client)?),
            false => None,
        };
        Ok(Keychains {
            cri_proxy,
            _secrets: secrets,
        })
    }

    pub(crate) async fn stop(self) {
        if let Some(proxy) = self.cri_proxy {
            proxy.shutdown().await;
        }
    }
}

fn stop_status(endpoints: Option<status::endpoint::Endpoints>) {
    if let Some(endpoints) = endpoints {
        endpoints.shutdown();
    }
}

/// Makes the daemon's state root-only before anything uses it: the root is created 0700,
/// or tightened to 0700 with a warning, and what an older version may have left open to
/// other users is tightened: the root's files and sockets, the snapshot directories (not
/// their contents, which are containers' files with the image's modes), and the cache
/// and record directories with everything in them. One stat per path, a chmod only
/// where one is too loose. The fuse manager runs it too.
pub(crate) fn secure_state(config: &Config) -> Result<(), Error> {
    let root = &config.root;
    private_fs::ensure_private_dir(root)?;
    let in_root = [
        root.join(Store::DB_FILE),
        status::socket_path(root),
        manager::socket_path(root),
        manager::pid_path(root),
        manager::log_path(root),
    ];
    let mut passes: Vec<_> = in_root.iter().map(|p| private_fs::tighten(p)).collect();
    passes.push(private_fs::tighten_entries(&root.join("snapshots")));
    let dirs = [config.resolved_cache().dir, config.resolved_record().dir];
    passes.extend(dirs.iter().flatten().map(|d| private_fs::tighten_tree(d)));
    let done = private_fs::total(passes);
    if done.changed > 0 {
        tracing::warn!(
            paths = done.changed,
            root = %root.display(),
            "state other users could read (left by an older version) is now owner-only"
        );
    }
    tracing::debug!(
        checked = done.checked,
        failed = done.failed,
        "state permissions checked"
    );
    Ok(())
}

/// Whether lazy pulling is on and FUSE is there (logged when not).
fn fuse_available(config: &Config) -> bool {
    if !config.lazy_pull {
        tracing::info!("lazy_pull = false: serving as a plain overlay snapshotter");
        return false;
    }
    if !Path::new(FUSE_DEVICE).exists() {
        tracing::warn!(
            device = FUSE_DEVICE,
            "no FUSE device: lazy pulling disabled"
        );
        return false;
    }
    true
}

/// The in-process FUSE mounter, or None (logged) when lazy pulling is off or FUSE is
/// unavailable. The fuse manager process runs one too.
pub(crate) fn fuse_mounter(config: &Config) -> Result<Option<Arc<FuseMounter>>, Error> {
    if !fuse_available(config) {
        return Ok(None);
    }
    let lazy = LazyConfig {
        remote: config.remote.clone(),
        cache: config.resolved_cache(),
        layer: config.layer.clone(),
        fuse: config.fuse.clone(),
        prefetch: config.prefetch.clone(),
        background: config.background_fetch.clone(),
        record: config.resolved_record(),
    };
    let cache_dir = lazy.cache.dir.clone();
    let mounter = FuseMounter::new(lazy, tokio::runtime::Handle::current())?;
    tracing::info!(cache = ?cache_dir, "lazy pulling enabled");
    Ok(Some(Arc::new(mounter)))
}

/// The client of the fuse manager, which it starts with this daemon's configuration.
fn manager_mounter(config: &Config) -> ManagerMounter {
    let mut args: Vec<OsString> = Vec::new();
    if let Some(file) = &config.config_file {
        args.extend(["--config".into(), file.clone().into_os_string()]);
    }
    args.extend(["--root".into(), config.root.clone().into_os_string()]);
    args.extend(["--log-level".into(), config.log_level.clone().into()]);
    let format = match config.log_format {
        crate::config::LogFormat::Text => "text",
        crate::config::LogFormat::Json => "json",
    };
    args.extend(["--log-format".into(), format.into()]);
    args.push("fuse-manager".into());
    // A mount includes opening the layer and waiting for its prefetch.
    let call_timeout =
        config.fuse.mount_timeout + config.prefetch.timeout + Duration::from_secs(30);
    tracing::info!("lazy layers are served by the fuse manager process");
    ManagerMounter::new(&config.root, args, call_timeout)
}

/// Brings the mounts to what the snapshots need: removes what a crash left that no
/// snapshot owns, mounts again the remote snapshots that lost their mount, then (with a
/// fuse manager) keeps a copy of each mount's connection and watches the manager while
/// the daemon runs: when it is gone, a new one takes over the connections and mounts
/// again what was lost.
fn converge(
    store: &Store,
    mounter: &dyn Mounter,
    manager: Option<Arc<ManagerMounter>>,
    running: &AtomicBool,
) {
    sweep_orphans(store);
    restore_remote_snapshots(store, mounter);
    let Some(manager) = manager else {
        return;
    };
    // Copies of the connections, so that the mounts outlive the manager.
    match store.remote_snapshots() {
        Ok(remote) => manager.keep_connections(&remote),
        Err(error) => tracing::warn!(%error, "list remote snapshots to keep their connections"),
    }
    let mut known = manager.running_pid().ok().flatten();
    while running.load(Ordering::Relaxed) {
        std::thread::sleep(MANAGER_POLL);
        if !running.load(Ordering::Relaxed) {
            break;
        }
        // A different pid: the manager died and a request of ours already started a new
        // one, which serves none of the old mounts.
        let pid = match manager.running_pid() {
            Ok(Some(pid)) if Some(pid) == known => continue,
            Ok(Some(pid)) => pid,
            Ok(None) => {
                tracing::warn!("the fuse manager is gone; starting a new one");
                match manager.ensure_running() {
                    Ok(pid) => pid,
                    Err(error) => {
                        tracing::warn!(%error, "start the fuse manager again");
                        continue;
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "fuse manager busy");
                continue;
            }
        };
        // Whoever started it, the new manager took over the kept connections first;
        // what is still dead now is detached and mounted again.
        manager.wait_until_started();
        let detached = store.detach_dead_mounts();
        tracing::info!(
            pid,
            detached,
            "new fuse manager: mounting the lost lazy layers again"
        );
        known = Some(pid);
        restore_remote_snapshots(store, mounter);
    }
}

/// Startup: unmounts and removes what no snapshot owns (Cleanup does it again later).
fn sweep_orphans(store: &Store) {
    match store.cleanup() {
        Ok(report) => {
            crate::metrics::global().cleaned_up(report.mounts.len(), report.directories.len());
            tracing::info!(
                mounts = report.mounts.len(),
                directories = report.directories.len(),
                left = report.failures.len(),
                "startup removed orphans"
            );
        }
        Err(error) => tracing::warn!(%error, "look for orphans at startup"),
    }
}

/// Mounts again every remote snapshot the mounter does not serve (its mount was lost
/// with the process that served it); those it cannot mount now (registry down) are
/// tried again every [`RESTORE_RETRY`].
fn restore_remote_snapshots(store: &Store, mounter: &dyn Mounter) {
    loop {
        let remote = match store.remote_snapshots() {
            Ok(remote) => remote,
            Err(error) => {
                tracing::warn!(%error, "list remote snapshots to restore");
                return;
            }
        };
        let mounted = match mounter.mounted() {
            Ok(mounted) => mounted,
            Err(error) => {
                // Unknown is not lost: mounting again over a live mount would hide it.
                tracing::warn!(%error, "not mounting remote snapshots again for now");
                std::thread::sleep(RESTORE_RETRY);
                continue;
            }
        };
        let lost: Vec<_> = remote
            .into_iter()
            .filter(|(dir, _)| !mounted.contains(dir))
            .collect();
        if lost.is_empty() {
            return;
        }
        let mut failed = 0;
        for (dir, labels) in &lost {
            match mounter.mount(dir, labels) {
                Ok(()) => tracing::info!(dir = %dir.display(), "remote snapshot mounted again"),
                Err(error) => {
                    failed += 1;
                    tracing::warn!(dir = %dir.display(), %error, "remote snapshot not mounted again yet");
                }
            }
        }
        if failed == 0 {
            return;
        }
        std::thread::sleep(RESTORE_RETRY);
    }
}

/// Unmounting waits for FUSE threads, so it must not block the runtime.
pub(crate) async fn unmount_on_blocking_thread(mounter: Arc<FuseMounter>) {
    let count = mounter.mountpoints().len();
    let unmounting = tokio::task::spawn_blocking(move || mounter.unmount_all());
    if let Err(e) = unmounting.await {
        tracing::warn!(error = %e, "unmount lazy layers at shutdown");
    }
    tracing::info!(count, "unmounted lazy layers");
}

/// Binds a unix socket only its owner (root) may use, replacing a stale one left by an
/// earlier run.
pub(crate) fn bind_private(path: &Path) -> Result<UnixListener, Error> {
    Ok(unix_socket::bind(path, unix_socket::Access::PRIVATE)?)
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "remove socket");
    }
}
