//! One fetch of runs of adjacent chunks: a range request per run, or one multi-range
//! request for all of them where the source serves those, whose bytes are cut into
//! chunks as they arrive (`segments.rs`). A blocking thread decompresses and verifies each
//! chunk while the rest of the range is still on the wire, caches it and answers its
//! waiting readers at once, so the end of a big prefetch is not waited for chunk by chunk
//! after its last byte. A body that breaks part way is resumed where it broke.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use estargz::{decompress_chunk, ChunkInfo};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::fetch_outcome::{span, ChunkResult, FetchError, FAILED_FETCH_HOLD};
use super::segments::{Segment, Segmenter};
use super::{FetchKind, Inner};
use crate::lazy::cache::{CacheKey, ChunkBytes};
use crate::lazy::observe;
use crate::lazy::source::RemoteError;

/// Times a broken body is resumed within one fetch (each time only after new bytes came).
const MAX_RESUMES: u32 = 3;

/// A chunk a fetch owes an answer for.
pub(super) struct Member {
    key: CacheKey,
    chunk: ChunkInfo,
    answer: oneshot::Sender<ChunkResult>,
}

impl Member {
    pub(super) fn new(
        key: CacheKey,
        chunk: ChunkInfo,
        answer: oneshot::Sender<ChunkResult>,
    ) -> Self {
        Member { key, chunk, answer }
    }
}

/// Arrived bytes and the members whose chunks they hold, for the verifier.
type Work = (Segment, Vec<Member>);

/// A fetch of some runs of adjacent chunks: one range request per run, or one
/// multi-range request for all runs where the source serves those, from the request to
/// the last answer.
pub(super) struct GroupFetch {
    inner: Arc<Inner>,
    id: u64,
    kind: FetchKind,
    keys: Vec<CacheKey>,
    parts: Vec<Part>,
}

/// One run of adjacent chunks: a contiguous blob range.
struct Part {
    range: Range<u64>,
    segmenter: Segmenter,
    /// Members in segmenter order; taken when their segment goes to the verifier.
    waiting: Vec<Option<Member>>,
    /// Why the part could not be had, once that is known.
    failure: Option<FetchError>,
}

impl GroupFetch {
    /// A fetch (numbered `id` in the layer's in-flight table) of `runs`, each a list of
    /// members whose compressed ranges touch or overlap, the runs apart from each other.
    pub(super) fn new(inner: Arc<Inner>, id: u64, runs: Vec<Vec<Member>>, kind: FetchKind) -> Self {
        let keys = runs.iter().flatten().map(|m| m.key).collect();
        let mut parts: Vec<Part> = runs.into_iter().map(Part::new).collect();
        parts.sort_by_key(|p| p.range.start);
        GroupFetch {
            inner,
            id,
            kind,
            keys,
            parts,
        }
    }

    /// Fetches the runs within the read timeout; by the end every member was answered
    /// with its verified bytes or an error. Runs to the end even when no reader waits.
    pub(super) async fn run(mut self) {
        let (to_verifier, work) = mpsc::unbounded_channel();
        let verifier = {
            let (inner, id, kind) = (self.inner.clone(), self.id, self.kind);
            tokio::task::spawn_blocking(move || inner.verify_all(id, kind, work))
        };
        let timeout = self.inner.config.read_timeout;
        // Lower classes wait here while higher ones are on the wire.
        let queued = Instant::now();
        let ticket = self.inner.cache.link().admit(self.kind).await;
        let waited = queued.elapsed();
        if waited >= Duration::from_millis(1) {
            tracing::debug!(blob = %self.inner.blob, kind = self.kind.name(), waited_ms = waited.as_millis(), "fetch admitted");
        }
        let received = tokio::time::timeout(timeout, self.receive_all(&to_verifier)).await;
        drop(ticket);
        drop(to_verifier);
        let blob = self.inner.blob;
        let mut all_good = true;
        for part in &mut self.parts {
            let failure = match (&received, part.failure.take()) {
                (Err(_), _) => FetchError::TimedOut {
                    blob,
                    range: part.range.clone(),
                    timeout,
                },
                (Ok(()), Some(error)) => error,
                (Ok(()), None) => FetchError::Lost {
                    blob,
                    offset: part.segmenter.end(),
                },
            };
            let failure = Arc::new(failure);
            for member in part.waiting.iter_mut().filter_map(Option::take) {
                all_good = false;
                let _ = member.answer.send(Err(failure.clone()));
            }
        }
        all_good &= verifier.await.unwrap_or_else(|error| {
            tracing::warn!(%blob, %error, "chunk verifier failed");
            false
        });
        if !all_good {
            // Verified chunks were already released; failed ones stay joinable a moment.
            tokio::time::sleep(FAILED_FETCH_HOLD).await;
            self.inner.unregister(self.id, self.keys);
        }
    }

    /// Receives every run: all in one multi-range request where the source serves those,
    /// then what is still missing range by range, in parallel. Failures are kept per part.
    async fn receive_all(&mut self, verifier: &mpsc::UnboundedSender<Work>) {
        let (inner, kind) = (&self.inner, self.kind);
        if self.parts.len() > 1 && inner.source.multi_range() {
            if let Err(error) = receive_parts(inner, kind, &mut self.parts, verifier).await {
                tracing::debug!(blob = %inner.blob, %error, "multi-range read failed; asking range by range");
            }
        }
        let singles =
            self.parts
                .iter_mut()
                .filter(|part| !part.complete())
                .map(|part| async move {
                    if let Err(error) = part.receive_all(inner, kind, verifier).await {
                        part.failure = Some(error);
                    }
                });
        futures::future::join_all(singles).await;
    }
}

/// One multi-range request for what the parts still miss; pieces go to the parts they
/// continue (a source may merge, reorder or leave out ranges: what is missing after it is
/// asked for again range by range).
async fn receive_parts(
    inner: &Arc<Inner>,
    kind: FetchKind,
    parts: &mut [Part],
    verifier: &mpsc::UnboundedSender<Work>,
) -> Result<(), FetchError> {
    let ranges: Vec<Range<u64>> = parts.iter().map(Part::missing).collect();
    let remote = |source| FetchError::Remote {
        range: span(ranges.iter()),
        source,
    };
    let sent = Instant::now();
    let opening = inner.source.read_parts(&ranges);
    let Some(mut pieces) = observe::range_request(kind.name(), opening)
        .await
        .map_err(remote)?
    else {
        return Ok(());
    };
    let first_byte = sent.elapsed();
    let mut total = 0u64;
    while let Some(piece) = pieces.next().await {
        let (at, piece) = piece.map_err(remote)?;
        let len = piece.len() as u64;
        total = total.saturating_add(len);
        inner.activity.add_fetched(kind, len);
        observe::observer().fetched(kind.name(), len);
        for part in parts.iter_mut() {
            part.feed(at, &piece, verifier);
        }
    }
    let elapsed = sent.elapsed();
    inner.cache.link().record(total, first_byte, elapsed);
    tracing::debug!(
        blob = %inner.blob,
        kind = kind.name(),
        ranges = ranges.len(),
        bytes = total,
        first_byte_ms = first_byte.as_millis(),
        total_ms = elapsed.as_millis(),
        "multi-range fetch done"
    );
    Ok(())
}

impl Part {
    fn new(mut members: Vec<Member>) -> Part {
        members.sort_by_key(|m| m.chunk.compressed.start);
        let range = span(members.iter().map(|m| &m.chunk.compressed));
        let chunks = members.iter().map(|m| m.chunk.compressed.clone()).collect();
        Part {
            segmenter: Segmenter::new(range.start, chunks),
            range,
            waiting: members.into_iter().map(Some).collect(),
            failure: None,
        }
    }

    /// The blob range not received yet.
    fn missing(&self) -> Range<u64> {
        self.segmenter.end()..self.range.end
    }

    fn complete(&self) -> bool {
        self.segmenter.end() >= self.range.end
    }

    /// Takes the bytes of a piece at blob offset `at` that continue this part.
    fn feed(&mut self, at: u64, piece: &[u8], verifier: &mpsc::UnboundedSender<Work>) {
        let next = self.segmenter.end();
        let piece_end = at.saturating_add(piece.len() as u64).min(self.range.end);
        if at > next || piece_end <= next {
            return;
        }
        let from = usize::try_from(next - at).unwrap_or(usize::MAX);
        let to = usize::try_from(piece_end - at).unwrap_or(usize::MAX);
        if let Some(bytes) = piece.get(from..to) {
            self.push(bytes, verifier);
        }
    }

    /// Adds arrived bytes; completed segments go to the verifier with their members.
    fn push(&mut self, bytes: &[u8], verifier: &mpsc::UnboundedSender<Work>) {
        for segment in self.segmenter.push(bytes) {
            let members = self.waiting[segment.chunks.clone()]
                .iter_mut()
                .filter_map(Option::take)
                .collect();
            // Fails only when the verifier died; its members are then answered Lost.
            let _ = verifier.send((segment, members));
        }
    }

    /// Receives the rest of the range, resuming a body that broke after new bytes came.
    async fn receive_all(
        &mut self,
        inner: &Arc<Inner>,
        kind: FetchKind,
        verifier: &mpsc::UnboundedSender<Work>,
    ) -> Result<(), FetchError> {
        let mut resumes = 0;
        loop {
            let from = self.segmenter.end();
            match self.receive(inner, kind, verifier).await {
                Ok(()) => return Ok(()),
                Err(error) if self.segmenter.end() > from && resumes < MAX_RESUMES => {
                    resumes += 1;
                    let at = self.segmenter.end();
                    tracing::debug!(blob = %inner.blob, %error, at, "range read broke; resuming");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// One range request for the missing range; completed segments go to the verifier as
    /// they come.
    async fn receive(
        &mut self,
        inner: &Arc<Inner>,
        kind: FetchKind,
        verifier: &mpsc::UnboundedSender<Work>,
    ) -> Result<(), FetchError> {
        let range = self.missing();
        let opening = inner.source.read_stream(range.clone());
        let remote = |source| FetchError::Remote {
            range: range.clone(),
            source,
        };
        let sent = Instant::now();
        let mut pieces = observe::range_request(kind.name(), opening)
            .await
            .map_err(remote)?;
        let first_byte = sent.elapsed();
        while let Some(piece) = pieces.next().await {
            let piece = piece.map_err(remote)?;
            let len = piece.len() as u64;
            inner.activity.add_fetched(kind, len);
            observe::observer().fetched(kind.name(), len);
            self.push(&piece, verifier);
        }
        let got = self.segmenter.end() - range.start;
        let elapsed = sent.elapsed();
        inner.cache.link().record(got, first_byte, elapsed);
        tracing::debug!(
            blob = %inner.blob,
            kind = kind.name(),
            start = range.start,
            bytes = got,
            first_byte_ms = first_byte.as_millis(),
            total_ms = elapsed.as_millis(),
            "range fetch done"
        );
        if got < range.end - range.start {
            let digest = inner.blob;
            let got = usize::try_from(got).unwrap_or(usize::MAX);
            return Err(remote(RemoteError::ShortRead {
                digest,
                range: range.clone(),
                got,
            }));
        }
        Ok(())
    }
}

impl Inner {
    /// Verifies segments as the receiver hands them over; true when every chunk passed.
    fn verify_all(
        &self,
        id: u64,
        kind: FetchKind,
        mut work: mpsc::UnboundedReceiver<Work>,
    ) -> bool {
        let mut all_good = true;
        while let Some((segment, members)) = work.blocking_recv() {
            all_good &= self.verify_segment(id, kind, &segment, members);
        }
        all_good
    }

    /// Decompresses and verifies each member's chunk out of `segment`; only verified chunks
    /// reach the cache. A member is answered once its chunk is in memory, before the disk
    /// write; background chunks, which nobody waits for, go to disk only, so filling a
    /// layer does not push hot chunks out of memory.
    fn verify_segment(
        &self,
        id: u64,
        kind: FetchKind,
        segment: &Segment,
        members: Vec<Member>,
    ) -> bool {
        let mut all_good = true;
        let mut to_disk = Vec::new();
        for member in members {
            let result = self.verify_chunk(segment, &member.chunk);
            match &result {
                Ok(data) if kind == FetchKind::Background => {
                    self.cache.put_disk(member.key, data.clone());
                    self.unregister(id, [member.key]);
                }
                Ok(data) => {
                    self.cache.put_memory(member.key, data.clone());
                    to_disk.push((member.key, data.clone()));
                }
                Err(error) => {
                    all_good = false;
                    tracing::warn!(%error, "chunk failed verification");
                    if matches!(error, FetchError::Chunk { .. }) {
                        observe::observer().verification_failed(observe::CHUNK);
                    }
                }
            }
            let _ = member.answer.send(result.map_err(Arc::new));
        }
        for (key, data) in to_disk {
            self.cache.write_disk(&key, &data);
            // Until now a reader joins the answered promise instead of missing both caches.
            self.unregister(id, [key]);
        }
        all_good
    }

    fn verify_chunk(&self, segment: &Segment, chunk: &ChunkInfo) -> Result<ChunkBytes, FetchError> {
        let start = chunk.compressed.start.checked_sub(segment.base);
        let end = chunk.compressed.end.checked_sub(segment.base);
        let member = start
            .zip(end)
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?))
            .and_then(|r| segment.bytes.get(r));
        let Some(member) = member else {
            return Err(FetchError::Lost {
                blob: self.blob,
                offset: chunk.compressed.start,
            });
        };
        match decompress_chunk(self.format, member, chunk) {
            Ok(data) => Ok(data.into()),
            Err(source) => Err(FetchError::Chunk {
                blob: self.blob,
                range: chunk.compressed.clone(),
                source: Box::new(source),
            }),
        }
    }
}
