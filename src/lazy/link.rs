//! The link to the registries, as every layer sharing one chunk cache (one daemon) sees
//! it: range requests on the wire per priority class (on-demand > prefetch > background),
//! admission of lower classes only while no higher class is on the wire, and estimates
//! of the link's latency and throughput from recent fetches, which size readahead
//! windows and pace background fetching.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Why chunks are fetched; also their priority class on the link, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FetchKind {
    /// A read of the mounted layer is waiting for them.
    OnDemand,
    /// The prioritized files, at mount.
    Prefetch,
    /// Filling the cache with the rest of the layer.
    Background,
}

impl FetchKind {
    pub const ALL: [FetchKind; 3] = [
        FetchKind::OnDemand,
        FetchKind::Prefetch,
        FetchKind::Background,
    ];

    /// Lowercase name for logs, metrics and status.
    pub fn name(self) -> &'static str {
        match self {
            FetchKind::OnDemand => "on_demand",
            FetchKind::Prefetch => "prefetch",
            FetchKind::Background => "background",
        }
    }

    pub(crate) fn slot(self) -> usize {
        match self {
            FetchKind::OnDemand => 0,
            FetchKind::Prefetch => 1,
            FetchKind::Background => 2,
        }
    }
}

/// Requests of a lower class on the wire at once: enough to keep the link busy (each is
/// megabytes), few enough that an on-demand read waits behind little.
const LOWER_CLASS_REQUESTS: usize = 2;

/// Small requests ([`Link::admit_sized`]) of a lower class on the wire at once: together
/// at most this many round trips' worth of bytes ahead of an on-demand read, less than
/// the few large requests of the class carry.
const LOWER_CLASS_SMALL_REQUESTS: usize = 8;

/// Weight of the newest sample in the moving averages.
const SMOOTHING: f64 = 0.25;

/// Fetches shorter than this say little about throughput (their time is mostly latency).
const MIN_THROUGHPUT_SAMPLE: u64 = 32 << 10;

/// The shared link: see the module documentation.
#[derive(Default)]
pub struct Link {
    state: Mutex<State>,
    /// Woken whenever a request leaves the wire.
    left: Notify,
}

#[derive(Default)]
struct State {
    on_wire: [usize; 3],
    /// Requests admitted as small ([`Link::admit_sized`]), per class.
    small_on_wire: [usize; 3],
    /// When a request of each class last left the wire.
    last_left: [Option<Instant>; 3],
    /// Moving average of the time to the first byte of a range request, seconds.
    latency: Option<f64>,
    /// Moving average of body throughput, bytes per second.
    throughput: Option<f64>,
}

impl Link {
    pub fn new() -> Arc<Link> {
        Arc::new(Link::default())
    }

    /// Waits until a request of `kind` may go on the wire, and counts it there until the
    /// ticket drops. On-demand requests go at once; prefetch waits while on-demand
    /// requests are on the wire, background while on-demand or prefetch requests are;
    /// both are limited to a few requests at once. Requests already on the wire are never
    /// stopped, so an on-demand read waits behind at most those.
    pub async fn admit(self: &Arc<Self>, kind: FetchKind) -> Ticket {
        loop {
            // Registered before the check, so a request leaving in between wakes us.
            let left = self.left.notified();
            {
                let mut state = self.lock();
                if state.may_start(kind) {
                    state.on_wire[kind.slot()] += 1;
                    return Ticket {
                        link: self.clone(),
                        kind,
                        small: false,
                    };
                }
            }
            left.await;
        }
    }

    /// [`Self::admit`] for a request of `bytes`. One carrying no more than a round trip's
    /// worth of bytes (32 KiB while the link is not measured yet) does not count toward
    /// the lower classes' few requests at once: it holds an on-demand read back by about
    /// a round trip at most, and counting it would let a prefetch of small ranges (each
    /// with a tiny window request beside it) use the link by halves.
    pub async fn admit_sized(self: &Arc<Self>, kind: FetchKind, bytes: u64) -> Ticket {
        let small = bytes <= self.round_trip_bytes().unwrap_or(MIN_THROUGHPUT_SAMPLE);
        if kind == FetchKind::OnDemand || !small {
            return self.admit(kind).await;
        }
        loop {
            let left = self.left.notified();
            {
                let mut state = self.lock();
                let above = |k: FetchKind| FetchKind::ALL.iter().filter(move |a| **a < k);
                let room = state.small_on_wire[kind.slot()] < LOWER_CLASS_SMALL_REQUESTS;
                if room && above(kind).all(|a| state.requests(*a) == 0) {
                    state.small_on_wire[kind.slot()] += 1;
                    return Ticket {
                        link: self.clone(),
                        kind,
                        small: true,
                    };
                }
            }
            left.await;
        }
    }

    /// Requests of `kind` on the wire now.
    pub fn on_wire(&self, kind: FetchKind) -> usize {
        self.lock().requests(kind)
    }

    /// Whether a request of a class above `kind` is on the wire.
    pub fn busy_above(&self, kind: FetchKind) -> bool {
        let state = self.lock();
        FetchKind::ALL
            .iter()
            .filter(|k| **k < kind)
            .any(|k| state.requests(*k) > 0)
    }

    /// How long no request of a class above `kind` has been on the wire: zero while one
    /// is, `Duration::MAX` when none ever was.
    pub fn quiet_above(&self, kind: FetchKind) -> Duration {
        let state = self.lock();
        FetchKind::ALL
            .iter()
            .filter(|k| **k < kind)
            .map(|k| match (state.requests(*k), state.last_left[k.slot()]) {
                (0, Some(left)) => left.elapsed(),
                (0, None) => Duration::MAX,
                _ => Duration::ZERO,
            })
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// Adds a finished fetch of `bytes` whose first byte came after `first_byte` and whose
    /// last came after `total`.
    pub fn record(&self, bytes: u64, first_byte: Duration, total: Duration) {
        let mut state = self.lock();
        state.latency = Some(smooth(state.latency, first_byte.as_secs_f64()));
        let body = total.saturating_sub(first_byte).as_secs_f64();
        if bytes >= MIN_THROUGHPUT_SAMPLE && body > 0.0 {
            state.throughput = Some(smooth(state.throughput, bytes as f64 / body));
        }
    }

    /// Bytes the link carries in one round trip (throughput × latency), once both are
    /// estimated.
    pub fn round_trip_bytes(&self) -> Option<u64> {
        let state = self.lock();
        let bytes = state.throughput? * state.latency?;
        // Saturating float-to-int conversion.
        Some(bytes as u64)
    }

    /// Estimated body throughput, bytes per second.
    pub fn throughput(&self) -> Option<f64> {
        self.lock().throughput
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Requests of `kind` on the wire, small ones included.
    fn requests(&self, kind: FetchKind) -> usize {
        self.on_wire[kind.slot()] + self.small_on_wire[kind.slot()]
    }

    fn may_start(&self, kind: FetchKind) -> bool {
        let [on_demand, prefetch, background] = self.on_wire;
        let [small_on_demand, small_prefetch, _] = self.small_on_wire;
        let (on_demand, all_prefetch) = (on_demand + small_on_demand, prefetch + small_prefetch);
        match kind {
            FetchKind::OnDemand => true,
            FetchKind::Prefetch => on_demand == 0 && prefetch < LOWER_CLASS_REQUESTS,
            FetchKind::Background => {
                on_demand == 0 && all_prefetch == 0 && background < LOWER_CLASS_REQUESTS
            }
        }
    }
}

fn smooth(average: Option<f64>, sample: f64) -> f64 {
    match average {
        Some(average) => average + SMOOTHING * (sample - average),
        None => sample,
    }
}

/// A request on the wire; see [`Link::admit`].
pub struct Ticket {
    link: Arc<Link>,
    kind: FetchKind,
    /// Admitted as small, outside the lower classes' limit.
    small: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.link.lock();
        let counts = if self.small {
            &mut state.small_on_wire
        } else {
            &mut state.on_wire
        };
        let slot = &mut counts[self.kind.slot()];
        *slot = slot.saturating_sub(1);
        state.last_left[self.kind.slot()] = Some(Instant::now());
        drop(state);
        self.link.left.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `admit(kind)` completes within a short while.
    async fn admitted(link: &Arc<Link>, kind: FetchKind) -> Option<Ticket> {
        tokio::time::timeout(Duration::from_millis(50), link.admit(kind))
            .await
            .ok()
    }

    #[tokio::test]
    async fn lower_classes_wait_for_higher_ones_on_the_wire() {
        let link = Link::new();
        let on_demand = admitted(&link, FetchKind::OnDemand).await.expect("at once");
        assert!(admitted(&link, FetchKind::Prefetch).await.is_none());
        assert!(admitted(&link, FetchKind::Background).await.is_none());
        assert!(link.busy_above(FetchKind::Prefetch));
        // Another on-demand request never waits.
        let second = admitted(&link, FetchKind::OnDemand).await.expect("at once");
        drop((on_demand, second));

        let waiting = tokio::spawn({
            let link = link.clone();
            async move { link.admit(FetchKind::Background).await }
        });
        let prefetch = admitted(&link, FetchKind::Prefetch).await.expect("free");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "background waits for prefetch");
        // An on-demand request while prefetch is on the wire goes at once.
        let on_demand = admitted(&link, FetchKind::OnDemand).await.expect("at once");
        drop(prefetch);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "background waits for on-demand");
        drop(on_demand);
        let background = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken when the link is free")
            .expect("task");
        assert_eq!(link.on_wire(FetchKind::Background), 1);
        drop(background);
        assert_eq!(link.on_wire(FetchKind::Background), 0);
    }

    #[tokio::test]
    async fn small_requests_pass_the_lower_class_limit_but_not_higher_classes() {
        let link = Link::new();
        let sized = |kind, bytes| {
            let link = link.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(50), link.admit_sized(kind, bytes))
                    .await
                    .ok()
            }
        };
        let full: Vec<Ticket> = futures::future::join_all(
            (0..LOWER_CLASS_REQUESTS).map(|_| sized(FetchKind::Prefetch, 1 << 30)),
        )
        .await
        .into_iter()
        .flatten()
        .collect();
        assert_eq!(full.len(), LOWER_CLASS_REQUESTS);
        assert!(sized(FetchKind::Prefetch, 1 << 30).await.is_none(), "limit");
        let small = sized(FetchKind::Prefetch, 1024).await.expect("small goes");
        assert_eq!(link.on_wire(FetchKind::Prefetch), LOWER_CLASS_REQUESTS + 1);
        drop(full);
        // A small prefetch request keeps background away like any other.
        assert!(sized(FetchKind::Background, 1024).await.is_none());
        let on_demand = admitted(&link, FetchKind::OnDemand).await.expect("at once");
        drop(small);
        assert!(
            sized(FetchKind::Prefetch, 1024).await.is_none(),
            "waits for on-demand"
        );
        drop(on_demand);
        assert!(sized(FetchKind::Background, 1024).await.is_some());
        assert_eq!(link.on_wire(FetchKind::Background), 0);
    }

    #[tokio::test]
    async fn lower_classes_are_limited_to_a_few_requests() {
        let link = Link::new();
        let mut held = Vec::new();
        for _ in 0..LOWER_CLASS_REQUESTS {
            held.push(admitted(&link, FetchKind::Prefetch).await.expect("free"));
        }
        assert!(admitted(&link, FetchKind::Prefetch).await.is_none());
        held.pop();
        assert!(admitted(&link, FetchKind::Prefetch).await.is_some());
    }

    #[tokio::test]
    async fn quiet_counts_from_the_last_higher_request() {
        let link = Link::new();
        assert_eq!(link.quiet_above(FetchKind::Background), Duration::MAX);
        let on_demand = link.admit(FetchKind::OnDemand).await;
        assert_eq!(link.quiet_above(FetchKind::Background), Duration::ZERO);
        assert_eq!(
            link.quiet_above(FetchKind::OnDemand),
            Duration::MAX,
            "no class above on-demand"
        );
        drop(on_demand);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let quiet = link.quiet_above(FetchKind::Background);
        assert!(quiet >= Duration::from_millis(30) && quiet < Duration::from_secs(5));
        // A background request does not break the quiet of the classes above it.
        drop(link.admit(FetchKind::Background).await);
        assert!(link.quiet_above(FetchKind::Background) >= quiet);
    }

    #[test]
    fn estimates_follow_recent_fetches() {
        let link = Link::default();
        assert_eq!(link.round_trip_bytes(), None, "nothing measured yet");
        // 1 MB in 100 ms after a 20 ms first byte: 12.5 MB/s.
        link.record(
            1_000_000,
            Duration::from_millis(20),
            Duration::from_millis(100),
        );
        let bytes = link.round_trip_bytes().expect("estimated");
        assert!(bytes.abs_diff(250_000) < 10, "{bytes}");
        // Small fetches update the latency only.
        link.record(100, Duration::from_millis(60), Duration::from_millis(60));
        let throughput = link.throughput().expect("kept");
        assert!((throughput - 12_500_000.0).abs() < 1.0, "{throughput}");
        let bytes = link.round_trip_bytes().expect("estimated");
        assert!(bytes.abs_diff(375_000) < 10, "latency 30 ms: {bytes}");
    }
}
