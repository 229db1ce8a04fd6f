//! Bounded exponential backoff for idempotent requests.

use std::future::Future;
use std::time::Duration;

use crate::error::Error;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// The pause before retry number `attempt` (1-based): 100 ms, 200 ms, 400 ms, ... up to 5 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

/// Runs `operation` until it succeeds, fails for good, or `retries` retries were spent.
/// Only transient errors (`Error::is_transient`) are retried.
pub(crate) async fn with_retries<T, F, Fut>(
    retries: u32,
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
            Err(error) if error.is_transient() && attempt < retries => {
                attempt += 1;
                let delay = backoff(attempt);
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

    #[test]
    fn backoff_doubles_and_is_bounded() {
        let cases = [
            (1, Duration::from_millis(100)),
            (2, Duration::from_millis(200)),
            (4, Duration::from_millis(800)),
            (7, MAX_DELAY),
            (40, MAX_DELAY),
            (u32::MAX, MAX_DELAY),
        ];
        for (attempt, expected) in cases {
            assert_eq!(backoff(attempt), expected, "attempt {attempt}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_only_transient_errors() {
        let transient = || Error::BadResponse {
            method: "GET".into(),
            url: "u".into(),
            status: 503,
            message: String::new(),
        };
        let mut calls = 0;
        let result: Result<(), Error> = with_retries(2, "test", || {
            calls += 1;
            async { Err(transient()) }
        })
        .await;
        assert!(result.is_err());
        assert_eq!(calls, 3, "one try and two retries");

        let mut calls = 0;
        let result: Result<(), Error> = with_retries(5, "test", || {
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
    }
}
