//! Retries of idempotent requests: bounded exponential waits with full jitter, and a
//! registry's `Retry-After` (429, 503) honoured.
//!
//! Many nodes pulling the same image hit the same registry together; if they all waited
//! the same time after a 429 they would come back together. So every wait is drawn at
//! random: after failure `n` uniformly from `min_wait ..= min(max_wait, min_wait * 2^n)`,
//! and after a `Retry-After` of `t` from `t ..= t + max(min_wait, t / 10)`. A `Retry-After`
//! longer than [`MAX_RETRY_AFTER`] is not waited for: the error is returned at once, so a
//! reader never hangs on a registry that asks for an hour.

use std::future::Future;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::ClientConfig;
use crate::error::Error;

/// The longest `Retry-After` that is waited for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How often and how long to wait between tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first try.
    pub(crate) retries: u32,
    /// Shortest wait before a retry.
    pub(crate) min_wait: Duration,
    /// Longest wait before a retry (a `Retry-After` may ask for more, up to
    /// [`MAX_RETRY_AFTER`]).
    pub(crate) max_wait: Duration,
}

impl ClientConfig {
    /// The retry settings of this config (`max_wait` never below `min_wait`).
    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.retries,
            min_wait: self.min_wait,
            max_wait: self.max_wait.max(self.min_wait),
        }
    }
}

impl RetryPolicy {
    /// The same waits without any retry (for requests that are not idempotent).
    pub(crate) fn no_retries(self) -> Self {
        RetryPolicy { retries: 0, ..self }
    }

    /// The wait before retry number `attempt` (1-based) after `error`, from `random` (any
    /// u64); None when the registry asked for a longer pause than is waited for.
    pub(crate) fn wait(&self, attempt: u32, error: &Error, random: u64) -> Option<Duration> {
        if let Some(asked) = error.retry_after() {
            if asked > MAX_RETRY_AFTER {
                return None;
            }
            let spread = self.min_wait.max(asked / 10);
            return Some(asked + pick(Duration::ZERO, spread, random));
        }
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let cap = self.min_wait.saturating_mul(factor).min(self.max_wait);
        Some(pick(self.min_wait.min(cap), cap, random))
    }
}

/// A duration in `low ..= high` chosen by `random`.
fn pick(low: Duration, high: Duration, random: u64) -> Duration {
    let span = high.saturating_sub(low);
    let span_nanos = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
    let offset = match span_nanos.checked_add(1) {
        Some(modulus) => random % modulus,
        None => random,
    };
    low + Duration::from_nanos(offset)
}

/// A random u64 (std's per-process random hash keys; no crate needed for jitter).
pub(crate) fn random_u64() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::collections::hash_map::RandomState::new().hash_one(nanos)
}

/// The pause a response's `Retry-After` asks for: delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The pause before resuming a broken body for the `attempt`th time (1-based).
pub(crate) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    let cap = policy.min_wait.saturating_mul(factor).min(policy.max_wait);
    pick(policy.min_wait.min(cap), cap, random_u64())
}

/// Runs `operation` until it succeeds, fails for good, or `policy.retries` retries were
/// spent. Only transient errors (`Error::is_transient`) are retried.
pub(crate) async fn with_retries<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut operation: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut attempt = 0;
    loop {
        match operation().await {
            Err(error) if error.is_transient() && attempt < policy.retries => {
                attempt += 1;
                let Some(delay) = policy.wait(attempt, &error, random_u64()) else {
                    tracing::warn!(%error, asked = ?error.retry_after(),
                        "{what}: registry asks for a longer pause than is waited for");
                    return Err(error);
                };
                tracing::debug!(%error, attempt, ?delay, "{what}: retrying");
                tokio::time::sleep(delay).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        retries: 3,
        min_wait: Duration::from_millis(100),
        max_wait: Duration::from_secs(5),
    };

    fn status(status: u16, retry_after: Option<Duration>) -> Error {
        Error::BadResponse {
            method: "GET".into(),
            url: "u".into(),
            status,
            message: String::new(),
            retry_after,
        }
    }

    #[test]
    fn waits_are_bounded_and_spread() {
        let cases = [
            (
                "first retry",
                1,
                Duration::from_millis(100),
                Duration::from_millis(200),
            ),
            (
                "third retry",
                3,
                Duration::from_millis(100),
                Duration::from_millis(800),
            ),
            (
                "capped",
                10,
                Duration::from_millis(100),
                Duration::from_secs(5),
            ),
            (
                "huge attempt",
                u32::MAX,
                Duration::from_millis(100),
                Duration::from_secs(5),
            ),
        ];
        let error = status(503, None);
        for (name, attempt, low, high) in cases {
            let waits: Vec<Duration> = (0..200)
                .map(|_| POLICY.wait(attempt, &error, random_u64()).unwrap())
                .collect();
            assert!(
                waits.iter().all(|w| (low..=high).contains(w)),
                "{name}: {waits:?}"
            );
            let distinct: std::collections::HashSet<_> = waits.iter().collect();
            assert!(
                distinct.len() > 100,
                "{name}: waits are jittered, not in lockstep"
            );
        }
        assert_eq!(POLICY.wait(1, &error, 0), Some(Duration::from_millis(100)));
        assert_eq!(
            POLICY.wait(1, &error, 100_000_000),
            Some(Duration::from_millis(200))
        );
    }

    #[test]
    fn retry_after_is_honoured_with_jitter_and_bounded() {
        let asked = Duration::from_secs(2);
        let error = status(429, Some(asked));
        let waits: Vec<Duration> = (0..200)
            .map(|_| POLICY.wait(1, &error, random_u64()).unwrap())
            .collect();
        let high = asked + Duration::from_millis(200);
        assert!(
            waits.iter().all(|w| (asked..=high).contains(w)),
            "{waits:?}"
        );
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "jittered");
        let too_long = status(503, Some(MAX_RETRY_AFTER + Duration::from_secs(1)));
        assert_eq!(POLICY.wait(1, &too_long, 7), None);
    }

    #[test]
    fn parses_retry_after_forms() {
        let header = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            parse_retry_after(&headers)
        };
        assert_eq!(header("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            header("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = SystemTime::now() + Duration::from_secs(30);
        let waited = header(&httpdate::fmt_http_date(later)).unwrap();
        assert!(waited > Duration::from_secs(27) && waited <= Duration::from_secs(30));
        assert_eq!(header("soon"), None);
        assert_eq!(parse_retry_after(&HeaderMap::new()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_transient_errors_and_sleeps_as_asked() {
        let mut calls = 0;
        let start = tokio::time::Instant::now();
        let result: Result<(), Error> = with_retries(POLICY, "test", || {
            calls += 1;
            async { Err(status(429, Some(Duration::from_secs(2)))) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 4, "one try and three retries");
        let slept = start.elapsed();
        assert!(
            slept >= Duration::from_secs(6) && slept <= Duration::from_millis(6600),
            "three Retry-After waits of 2 s plus jitter: {slept:?}"
        );

        let mut calls = 0;
        let result: Result<(), Error> = with_retries(POLICY, "test", || {
            calls += 1;
            async {
                Err(Error::NotFound {
                    method: "GET".into(),
                    url: "u".into(),
                })
            }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "404 is final");

        let mut calls = 0;
        let far = status(503, Some(Duration::from_secs(3600)));
        let result: Result<(), Error> = with_retries(POLICY, "test", || {
            calls += 1;
            let error = Error::BadResponse {
                method: "GET".into(),
                url: "u".into(),
                status: 503,
                message: String::new(),
                retry_after: far.retry_after(),
            };
            async move { Err(error) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 1, "an hour's Retry-After is not waited for");
    }
}
