//! Retrying requests to a server that is briefly away: exponential backoff with jitter, and a
//! deadline after which the caller gives up (in a pod, so that the Job's `backoffLimit`, not an
//! endless loop, decides what happens next). Used by the producer and the consumer.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// Exponential backoff with "equal jitter": half the delay is fixed, half random, so retries of
/// many producers after a server restart do not arrive in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// Starts at `base`, doubles per failure, never beyond `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The delay before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = exp / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A number in [0, 1); std's per-instance hasher keys are random enough for jitter and save a
/// dependency.
fn random_unit() -> f64 {
    (RandomState::new().hash_one(Instant::now()) >> 11) as f64 / (1u64 << 53) as f64
}

/// Why a retried request finally failed.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// The server kept failing (unreachable, 5xx, 429) for longer than the give-up deadline.
    #[error("{what}: gave up after {secs:.0}s: {chain}", secs = after.as_secs_f64(), chain = error_chain(last))]
    GaveUp {
        /// The operation, for the message.
        what: String,
        /// How long we kept trying.
        after: Duration,
        /// The last error.
        last: crate::Error,
    },
    /// The server refused in a way that retrying cannot fix (400, 401, 404, 413...).
    #[error("{what}: {source}")]
    Refused {
        /// The operation, for the message.
        what: String,
        /// The server's answer.
        source: crate::Error,
    },
}

/// Runs `op` until it succeeds, retrying retryable errors with backoff for up to
/// `give_up_after` from the first failure.
pub async fn retry<T, F, Fut>(what: &str, give_up_after: Duration, op: F) -> Result<T, RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, crate::Error>>,
{
    retry_with(
        what,
        give_up_after,
        Backoff::default(),
        crate::Error::is_retryable,
        op,
    )
    .await
}

/// [`retry`] with a given backoff and a given idea of which errors pass.
pub async fn retry_with<T, F, Fut>(
    what: &str,
    give_up_after: Duration,
    mut backoff: Backoff,
    transient: impl Fn(&crate::Error) -> bool,
    mut op: F,
) -> Result<T, RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, crate::Error>>,
{
    let mut first_failure = None;
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) if transient(&err) => err,
            Err(source) => {
                return Err(RetryError::Refused {
                    what: what.to_string(),
                    source,
                });
            }
        };
        let since = *first_failure.get_or_insert_with(Instant::now);
        let elapsed = since.elapsed();
        if elapsed >= give_up_after {
            return Err(RetryError::GaveUp {
                what: what.to_string(),
                after: elapsed,
                last: err,
            });
        }
        let mut delay = backoff.next_delay();
        if let crate::Error::Api {
            retry_after: Some(after),
            ..
        } = &err
        {
            delay = delay.max(*after);
        }
        let delay = delay.min(give_up_after - elapsed);
        tracing::warn!(
            operation = what,
            error = %error_chain(&err),
            retry_in_ms = delay.as_millis() as u64,
            giving_up_in_s = (give_up_after - elapsed).as_secs_f64().round(),
            "queue server not answering as expected; retrying"
        );
        tokio::time::sleep(delay).await;
    }
}

/// An error with its causes, `a: b: c`: reqwest's own message ("error sending request") hides
/// the useful part ("Connection refused") in its sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?}"
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let x = random_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }

    fn unreachable() -> crate::Error {
        crate::Error::Api {
            status: 503,
            code: "unavailable".into(),
            message: "down".into(),
            retry_after: None,
        }
    }

    fn fast() -> Backoff {
        Backoff::new(Duration::from_millis(1), Duration::from_millis(4))
    }

    #[tokio::test]
    async fn retries_until_success() {
        let mut calls = 0;
        let got = retry_with(
            "test",
            Duration::from_secs(60),
            fast(),
            crate::Error::is_retryable,
            || {
                calls += 1;
                let ok = calls >= 3;
                async move { if ok { Ok(calls) } else { Err(unreachable()) } }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_deadline() {
        let start = Instant::now();
        let deadline = Duration::from_millis(50);
        let err = retry_with(
            "load",
            deadline,
            fast(),
            crate::Error::is_retryable,
            || async { Err::<(), _>(unreachable()) },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RetryError::GaveUp { .. }), "{err}");
        assert!(err.to_string().starts_with("load: gave up after"), "{err}");
        let waited = start.elapsed();
        // Bounded by the deadline, not by the backoff's cap: the last sleep is cut short.
        assert!(
            waited >= deadline && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn does_not_retry_a_refusal() {
        let mut calls = 0;
        let err = retry_with(
            "load",
            Duration::from_secs(5),
            fast(),
            crate::Error::is_retryable,
            || {
                calls += 1;
                async {
                    Err::<(), _>(crate::Error::Api {
                        status: 400,
                        code: "bad_request".into(),
                        message: "no".into(),
                        retry_after: None,
                    })
                }
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RetryError::Refused { .. }));
        assert_eq!(calls, 1);
    }
}
