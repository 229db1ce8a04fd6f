//! What a SOCI layer's prefetch artifact (and learned ranges) ask for, as the layer keeps
//! it; fetched by [`super::soci_prefetch`].

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use estargz::soci::learned::LearnedRange;

/// What a layer's prefetch artifact asks for.
#[derive(Debug, Default)]
pub struct PrefetchPlan {
    /// Spans in fetch order, each with how far into it it is needed (`None`: all).
    pub spans: Vec<(usize, Option<u64>)>,
    /// Exact uncompressed ranges in fetch order (with span blocks, these are fetched).
    pub ranges: Vec<Range<u64>>,
    /// The same reads as exact compressed ranges, when the index has them.
    pub learned: Vec<LearnedRange>,
}

/// A [`PrefetchPlan`] as a layer keeps it.
#[derive(Default)]
pub(super) struct Prefetch {
    /// Spans to fetch, in order.
    pub spans: Vec<usize>,
    /// How far into a prefetched span it is needed, when not all of it.
    pub ends: HashMap<usize, u64>,
    pub ranges: Vec<Range<u64>>,
    pub learned: Vec<Arc<LearnedRange>>,
}

impl Prefetch {
    /// The learned ranges (checked against the whole blob with the rest of the index).
    pub fn learned(&self) -> &[Arc<LearnedRange>] {
        &self.learned
    }
}

impl From<PrefetchPlan> for Prefetch {
    fn from(plan: PrefetchPlan) -> Self {
        Self {
            ends: plan
                .spans
                .iter()
                .filter_map(|&(span, end)| Some((span, end?)))
                .collect(),
            spans: plan.spans.into_iter().map(|(span, _)| span).collect(),
            ranges: plan.ranges,
            learned: plan.learned.into_iter().map(Arc::new).collect(),
        }
    }
}
