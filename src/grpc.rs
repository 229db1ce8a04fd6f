//! The thin tonic adapter for containerd's Snapshots v1 service: decode the request,
//! run the store call on the blocking pool, encode the answer. No snapshot logic here.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::proto::snapshots as pb;
use crate::proto::snapshots::snapshots_server::Snapshots;
use crate::proto::types as pbtypes;
use crate::snapshot::{Info, Kind, Labels, Mount, Store};

/// gRPC metadata header carrying containerd's namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// How many snapshot infos one List response message carries.
const LIST_BATCH: usize = 100;

/// Serves the Snapshots API from a [`Store`].
pub struct SnapshotService {
    store: Arc<Store>,
}

impl SnapshotService {
    /// Wraps `store`.
    pub fn new(store: Arc<Store>) -> Self {
        SnapshotService { store }
    }

    /// Runs `op` on the store off the async threads.
    async fn run<T, F>(&self, op: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, crate::snapshot::Error> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        let result = tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(Error::from)?;
        Ok(result?)
    }
}

/// The store namespace of a request: always the empty one, whatever the
/// [`NAMESPACE_HEADER`] says. containerd's metadata layer already makes backend keys
/// unique per namespace (`<ns>/<id>/<key>`, remote layers under their chain ID, as the Go
/// reference and containerd's own snapshotters keep them in one key space), and it sends
/// the header only from in-process callers such as the CRI plugin, never for requests of
/// its gRPC clients (`ctr snapshots`, client-side unpack) or of its garbage collector.
/// Keyed by the header, a snapshot the CRI plugin prepared would be invisible to
/// `ctr snapshots ls` and to the garbage collector.
fn namespace<T>(_request: &Request<T>) -> String {
    String::new()
}

fn labels(map: std::collections::HashMap<String, String>) -> Labels {
    map.into_iter().collect()
}

fn encode_mounts(mounts: Vec<Mount>) -> Vec<pbtypes::Mount> {
    mounts.into_iter().map(pbtypes::Mount::from).collect()
}

impl From<Mount> for pbtypes::Mount {
    fn from(m: Mount) -> Self {
        pbtypes::Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        }
    }
}

impl From<Kind> for pb::Kind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::View => pb::Kind::View,
            Kind::Active => pb::Kind::Active,
            Kind::Committed => pb::Kind::Committed,
        }
    }
}

impl From<Info> for pb::Info {
    fn from(info: Info) -> Self {
        pb::Info {
            name: info.name,
            parent: info.parent,
            kind: pb::Kind::from(info.kind).into(),
            created_at: Some(info.created.into()),
            updated_at: Some(info.updated.into()),
            labels: info.labels.into_iter().collect(),
        }
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<pb::ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for SnapshotService {
    async fn prepare(
        &self,
        request: Request<pb::PrepareSnapshotRequest>,
    ) -> Result<Response<pb::PrepareSnapshotResponse>, Status> {
        let ns = namespace(&request);
        let r = request.into_inner();
        tracing::debug!(ns, key = r.key, parent = r.parent, "prepare");
        let mounts = self
            .run(move |s| s.prepare(&ns, &r.key, &r.parent, labels(r.labels)))
            .await?;
        let mounts = encode_mounts(mounts);
        Ok(Response::new(pb::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<pb::ViewSnapshotRequest>,
    ) -> Result<Response<pb::ViewSnapshotResponse>, Status> {
        let ns = namespace(&request);
        let r = request.into_inner();
        tracing::debug!(ns, key = r.key, parent = r.parent, "view");
        let mounts = self
            .run(move |s| s.view(&ns, &r.key, &r.parent, labels(r.labels)))
            .await?;
        let mounts = encode_mounts(mounts);
        Ok(Response::new(pb::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        request: Request<pb::MountsRequest>,
    ) -> Result<Response<pb::MountsResponse>, Status> {
        let ns = namespace(&request);
        let key = request.into_inner().key;
        let mounts = self.run(move |s| s.mounts(&ns, &key)).await?;
        let mounts = encode_mounts(mounts);
        Ok(Response::new(pb::MountsResponse { mounts }))
    }

    async fn commit(
        &self,
        request: Request<pb::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request);
        let r = request.into_inner();
        tracing::debug!(ns, key = r.key, name = r.name, parent = r.parent, "commit");
        self.run(move |s| s.commit_onto(&ns, &r.name, &r.key, &r.parent, labels(r.labels)))
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&request);
        let key = request.into_inner().key;
        tracing::debug!(ns, key, "remove");
        self.run(move |s| s.remove(&ns, &key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<pb::StatSnapshotRequest>,
    ) -> Result<Response<pb::StatSnapshotResponse>, Status> {
        let ns = namespace(&request);
        let key = request.into_inner().key;
        let info = self.run(move |s| s.stat(&ns, &key)).await?;
        Ok(Response::new(pb::StatSnapshotResponse {
            info: Some(info.into()),
        }))
    }

    async fn update(
        &self,
        request: Request<pb::UpdateSnapshotRequest>,
    ) -> Result<Response<pb::UpdateSnapshotResponse>, Status> {
        let ns = namespace(&request);
        let r = request.into_inner();
        let info = r.info.unwrap_or_default();
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let wanted = labels(info.labels);
        let info = self
            .run(move |s| s.update(&ns, &info.name, &wanted, &paths))
            .await?;
        Ok(Response::new(pb::UpdateSnapshotResponse {
            info: Some(info.into()),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&request);
        let filters = request.into_inner().filters;
        let infos = self.run(move |s| s.list(&ns, &filters)).await?;
        let mut batches = Vec::new();
        let mut infos = infos.into_iter().map(pb::Info::from).peekable();
        while infos.peek().is_some() {
            let info = infos.by_ref().take(LIST_BATCH).collect();
            batches.push(Ok(pb::ListSnapshotsResponse { info }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        request: Request<pb::UsageRequest>,
    ) -> Result<Response<pb::UsageResponse>, Status> {
        let ns = namespace(&request);
        let key = request.into_inner().key;
        let usage = self.run(move |s| s.usage(&ns, &key)).await?;
        Ok(Response::new(pb::UsageResponse {
            size: usage.size,
            inodes: usage.inodes,
        }))
    }

    async fn cleanup(&self, _request: Request<pb::CleanupRequest>) -> Result<Response<()>, Status> {
        let report = self.run(|s| s.cleanup()).await?;
        crate::metrics::global().cleaned_up(report.mounts.len(), report.directories.len());
        tracing::info!(
            mounts = report.mounts.len(),
            directories = report.directories.len(),
            left = report.failures.len(),
            "cleanup removed orphans"
        );
        match report.failures.into_iter().next() {
            None => Ok(Response::new(())),
            // Reported so that containerd logs it; everything else was removed.
            Some(first) => Err(crate::snapshot::Error::CleanupIncomplete(Box::new(first)).into()),
        }
    }
}
