//! Retries shared by every client: the policy, which failures are retried,
//! and how long to wait (`Retry-After` or exponential backoff with full
//! jitter). Pure arithmetic; the clients do the waiting.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How failed requests are retried. 429 and 503 wait for `Retry-After`
/// (capped at `max_retry_after`); other 5xx, vendor errors that say "busy"
/// or "unavailable", and transport errors back off exponentially with full
/// jitter: a random wait in `[0, min(max_delay, base_delay × 2^(attempt-1))]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// What a failed attempt allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Final: 4xx, hibernation, bad JSON.
    No,
    /// 429/503 with a usable `Retry-After`.
    After(Duration),
    /// Other 5xx, 429/503 without `Retry-After`, transport errors.
    Backoff,
}

impl Retry {
    /// The retry a status allows: 429 and 503 honour `Retry-After`, other
    /// 5xx back off, everything else is final.
    pub(crate) fn for_status(status: reqwest::StatusCode, retry_after: Option<&str>) -> Self {
        use reqwest::StatusCode;
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => retry_after
                .and_then(parse_retry_after)
                .map_or(Retry::Backoff, Retry::After),
            s if s.is_server_error() => Retry::Backoff,
            _ => Retry::No,
        }
    }
}

/// `Retry-After` as delta-seconds. HTTP-dates are not used by ServiceNow and
/// are not parsed (the caller then backs off instead).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Full jitter: a wait drawn uniformly (from `random`) from
/// `[0, min(max_delay, base_delay × 2^(attempt-1))]`.
pub(crate) fn full_jitter(policy: &RetryPolicy, attempt: u32, random: u64) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    let ceiling = policy
        .base_delay
        .saturating_mul(factor)
        .min(policy.max_delay);
    let ceiling_ns = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % ceiling_ns.saturating_add(1))
}

/// How long to wait before attempt `attempt + 1`, or `None` when `attempt`
/// was the last one allowed or the failure is final.
pub(crate) fn delay_before_next(
    policy: &RetryPolicy,
    retry: Retry,
    attempt: u32,
    random: u64,
) -> Option<Duration> {
    if attempt >= policy.max_attempts.max(1) {
        return None;
    }
    match retry {
        Retry::No => None,
        Retry::After(wait) => Some(wait.min(policy.max_retry_after)),
        Retry::Backoff => Some(full_jitter(policy, attempt, random)),
    }
}

/// 64 random bits from the OS.
pub(crate) fn random_u64() -> u64 {
    u64::from_str_radix(&fincorp_api::signing::random_hex(8), 16).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn statuses_map_to_retries() {
        use reqwest::StatusCode;
        assert_eq!(
            Retry::for_status(StatusCode::TOO_MANY_REQUESTS, Some("2")),
            Retry::After(Duration::from_secs(2))
        );
        assert_eq!(
            Retry::for_status(StatusCode::SERVICE_UNAVAILABLE, None),
            Retry::Backoff
        );
        assert_eq!(
            Retry::for_status(StatusCode::TOO_MANY_REQUESTS, Some("soon")),
            Retry::Backoff
        );
        assert_eq!(
            Retry::for_status(StatusCode::BAD_GATEWAY, Some("5")),
            Retry::Backoff,
            "Retry-After is honoured on 429 and 503 only"
        );
        for final_status in [
            StatusCode::BAD_REQUEST,
            StatusCode::UNAUTHORIZED,
            StatusCode::NOT_FOUND,
            StatusCode::FOUND,
        ] {
            assert_eq!(Retry::for_status(final_status, Some("1")), Retry::No);
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_and_dates_are_not_guessed() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn full_jitter_stays_within_the_doubling_ceiling_and_the_cap() {
        let p = policy();
        assert_eq!(
            full_jitter(&p, 1, u64::MAX),
            Duration::from_nanos(u64::MAX % 100_000_001)
        );
        for attempt in 1..=40 {
            let ceiling = Duration::from_millis((100u64 << (attempt - 1).min(10)).min(350));
            for random in [0, 1, 12_345_678_901, u64::MAX / 3, u64::MAX] {
                let d = full_jitter(&p, attempt, random);
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            }
        }
        assert_eq!(full_jitter(&p, 1, 0), Duration::ZERO);
        // Different random draws give different waits (it is not a constant).
        assert_ne!(full_jitter(&p, 3, 7), full_jitter(&p, 3, 123_456_789));
    }

    #[test]
    fn retry_after_is_capped_and_attempts_run_out() {
        let p = policy();
        assert_eq!(
            delay_before_next(&p, Retry::After(Duration::from_secs(3600)), 1, 0),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            delay_before_next(&p, Retry::After(Duration::from_secs(2)), 3, 0),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            delay_before_next(&p, Retry::After(Duration::from_secs(2)), 4, 0),
            None
        );
        assert_eq!(delay_before_next(&p, Retry::Backoff, 4, 0), None);
        assert_eq!(delay_before_next(&p, Retry::No, 1, 0), None);
        let once = RetryPolicy {
            max_attempts: 0,
            ..p
        };
        assert_eq!(delay_before_next(&once, Retry::Backoff, 1, 0), None);
    }
}
