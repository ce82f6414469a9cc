//! Retry timing: exponential backoff with full jitter, and `Retry-After`.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// Backoff for calls to the correlator: 200 ms doubling up to 30 s.
pub const HTTP_BASE: Duration = Duration::from_millis(200);
pub const HTTP_CAP: Duration = Duration::from_secs(30);
/// A `Retry-After` longer than this is clamped, so a bad header cannot stall
/// the agent for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(cap, base × 2ⁿ)]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(HTTP_BASE, HTTP_CAP)
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The upper bound of the next delay, without consuming an attempt.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay; each call doubles the ceiling until the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(random_u64() % nanos.saturating_add(1))
    }

    /// Attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // The OS RNG failing is not worth crashing a retry loop over: without
    // jitter the delay is simply the ceiling.
    match SystemRandom::new().fill(&mut buf) {
        Ok(()) => u64::from_le_bytes(buf),
        Err(_) => u64::MAX,
    }
}

/// The delay a `Retry-After: <seconds>` header asks for, clamped to
/// [`MAX_RETRY_AFTER`]. HTTP dates are not supported (the correlator and
/// ServiceNow send seconds).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn delays_stay_under_a_doubling_ceiling_up_to_the_cap() {
        let mut b = Backoff::default();
        let expected_ceilings_ms = [
            200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000,
        ];
        for ceiling_ms in expected_ceilings_ms {
            assert_eq!(b.ceiling(), Duration::from_millis(ceiling_ms));
            let d = b.next_delay();
            assert!(
                d <= Duration::from_millis(ceiling_ms),
                "{d:?} > {ceiling_ms}ms"
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= HTTP_CAP);
        }
        b.reset();
        assert_eq!((b.attempts(), b.ceiling()), (0, HTTP_BASE));
    }

    #[test]
    fn delays_are_jittered() {
        let mut b = Backoff::new(Duration::from_secs(30), Duration::from_secs(30));
        let delays: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "full jitter spreads delays: {delays:?}");
    }

    #[test]
    fn retry_after_reads_seconds_and_is_clamped() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
