//! The prefetch at mount of a [`SociLayer`]: what its prefetch artifact lists, fetched
//! and kept for the layer's life. With span blocks, the learned ranges when the index has
//! them ([`super::learned_fetch`]), else the artifact's exact uncompressed ranges, else
//! its spans' prefixes; without, its whole spans.

use std::ops::Range;

use super::learned_fetch;
use super::soci_layer::{runs_in_order, SociLayer, MAX_RUN_SPANS};
use crate::lazy::link::FetchKind;

/// Prefetch requests in flight at once.
const PREFETCH_PARALLEL: usize = 4;

impl SociLayer {
    /// Whether a prefetch artifact listed spans for this layer.
    pub fn has_prefetch(&self) -> bool {
        let plan = self.prefetch_plan();
        !plan.spans.is_empty() || !plan.ranges.is_empty() || !plan.learned.is_empty()
    }

    /// Fetches the prefetch artifact's spans (runs of adjacent ones in one request, a few
    /// requests at a time, in its order) and keeps them; returns how many were fetched.
    /// A failed span is only logged: reads retry it.
    pub async fn prefetch(self) -> usize {
        use futures::stream::StreamExt;
        if self.prefixes().is_some() {
            return self.prefetch_prefixes().await;
        }
        let runs = runs_in_order(&self.prefetch_plan().spans);
        let fetched = futures::stream::iter(runs)
            .map(|run| {
                let this = self.clone();
                async move {
                    let futures = this.spans(run.clone(), FetchKind::Prefetch);
                    let results = futures::future::join_all(futures).await;
                    run.zip(results).collect::<Vec<_>>()
                }
            })
            .buffered(PREFETCH_PARALLEL)
            .map(futures::stream::iter)
            .flatten()
            .filter_map(|(span, result)| {
                let this = self.clone();
                async move {
                    match result {
                        Ok(bytes) => {
                            this.pin(span, bytes);
                            Some(())
                        }
                        Err(error) => {
                            tracing::warn!(layer = %this.source().location.digest, span, %error, "soci prefetch span failed");
                            None
                        }
                    }
                }
            })
            .count()
            .await;
        tracing::info!(
            layer = %self.source().location.digest, spans = fetched, "soci prefetch done"
        );
        fetched
    }

    /// [`Self::prefetch`] through span prefixes: the artifact's exact ranges when it has
    /// them (each read from the cheapest start, a resume point where there is one), else
    /// its spans, a span needed only in part up to there (and ending its run).
    async fn prefetch_prefixes(self) -> usize {
        use futures::stream::StreamExt;
        let learned = &self.prefetch_plan().learned;
        if !learned.is_empty() {
            let kept = learned_fetch::pin_learned(&self, learned, FetchKind::Prefetch).await;
            tracing::info!(
                layer = %self.source().location.digest, ranges = kept, of = learned.len(), "soci learned prefetch done"
            );
            return kept;
        }
        let mut ranges = self.prefetch_plan().ranges.clone();
        if ranges.is_empty() {
            ranges = self.span_runs_as_ranges();
        }
        let groups = self.sharing_spans(ranges);
        let fetched = futures::stream::iter(groups)
            .map(|group| {
                let this = self.clone();
                async move {
                    let (source, prefixes) = (this.source(), this.prefixes()?);
                    match prefixes.pin(source, &group, FetchKind::Prefetch).await {
                        Ok(()) => Some(group.len()),
                        Err(error) => {
                            tracing::warn!(layer = %source.location.digest, ranges = ?group, %error, "soci prefetch ranges failed");
                            None
                        }
                    }
                }
            })
            .buffered(PREFETCH_PARALLEL)
            .filter_map(|n| async move { n })
            .fold(0, |a, n| async move { a + n })
            .await;
        tracing::info!(
            layer = %self.source().location.digest, ranges = fetched, "soci prefetch done"
        );
        fetched
    }

    /// `ranges` (in fetch order) in groups: a range joins the group before it when their
    /// spans meet (one fetch for the group, where separate ones would queue on the span
    /// locks they share).
    fn sharing_spans(&self, ranges: Vec<Range<u64>>) -> Vec<Vec<Range<u64>>> {
        let zinfo = &self.source().zinfo;
        let mut groups: Vec<(Range<usize>, Vec<Range<u64>>)> = Vec::new();
        for range in ranges {
            let spans = zinfo.spans_for(range.clone());
            match groups.last_mut() {
                Some((held, group)) if spans.start <= held.end && held.start <= spans.end => {
                    *held = held.start.min(spans.start)..held.end.max(spans.end);
                    group.push(range);
                }
                _ => groups.push((spans, vec![range])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// The artifact's spans as uncompressed ranges: runs of adjacent spans (up to
    /// [`MAX_RUN_SPANS`]), a run ending at a span needed only up to some offset.
    fn span_runs_as_ranges(&self) -> Vec<Range<u64>> {
        let zinfo = &self.source().zinfo;
        let ends = &self.prefetch_plan().ends;
        let mut runs: Vec<(Range<usize>, u64)> = Vec::new();
        for &span in &self.prefetch_plan().spans {
            let end = ends.get(&span).copied().unwrap_or(u64::MAX);
            match runs.last_mut() {
                Some((run, last_end))
                    if *last_end == u64::MAX && run.end == span && run.len() < MAX_RUN_SPANS =>
                {
                    run.end += 1;
                    *last_end = end;
                }
                _ => runs.push((span..span + 1, end)),
            }
        }
        runs.into_iter()
            .filter_map(|(run, end)| {
                let start = zinfo.uncompressed_range(run.start)?.start;
                let last = zinfo.uncompressed_range(run.end - 1)?.end;
                Some(start..last.min(end))
            })
            .collect()
    }
}
