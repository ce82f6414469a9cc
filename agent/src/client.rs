//! Signed requests to the correlator and how their answers are classified
//! for retrying. Every attempt is signed afresh (new timestamp and nonce), so
//! a retry is never mistaken for a replay.

use std::time::Duration;

use fincorp_api::signing::{SigningKey, sign_request};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::backoff::retry_after;
use crate::error_chain;

/// Longest response body the agent reads (poll responses); larger answers are
/// treated as a failed request.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What became of one signed POST.
#[derive(Debug)]
pub enum PostOutcome {
    /// 2xx, with the response body.
    Success(Vec<u8>),
    /// Worth retrying: 429, 5xx, 408 or a transport error. `after` is the
    /// server's `Retry-After` (only honoured for 429 and 503).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// 401: wrong key or clock skew. Retried, but logged loudly.
    Unauthorized(String),
    /// Any other 4xx: this request will never succeed.
    Rejected { status: StatusCode, reason: String },
}

/// A client for one correlator with the agent's signing key.
#[derive(Debug, Clone)]
pub struct Correlator {
    client: reqwest::Client,
    base_url: String,
    key: SigningKey,
}

impl Correlator {
    /// `base_url` has no trailing slash; `timeout` bounds each request.
    pub fn new(base_url: &str, key: SigningKey, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = fincorp_api::http::client_builder(timeout).build()?;
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// POSTs `body` (JSON) to `path`, signed with the current time.
    pub async fn post_signed(&self, path: &str, body: &[u8]) -> PostOutcome {
        let sig = sign_request(&self.key, "POST", path, body, fincorp_api::now_ms());
        let mut request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        for (name, value) in sig.headers() {
            request = request.header(name, value);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return PostOutcome::Retry {
                    after: None,
                    reason: error_chain(&e),
                };
            }
        };
        let status = response.status();
        let after = retry_after(response.headers());
        let mut body = Vec::new();
        let read_error = loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_RESPONSE_BYTES => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    break Some(format!(
                        "response body larger than {MAX_RESPONSE_BYTES} bytes"
                    ));
                }
                Ok(None) => break None,
                Err(e) => break Some(error_chain(&e)),
            }
        };
        let text = || {
            String::from_utf8_lossy(&body[..body.len().min(300)])
                .trim()
                .to_owned()
        };
        match status {
            s if s.is_success() => match read_error {
                None => PostOutcome::Success(body),
                Some(reason) => PostOutcome::Retry {
                    after: None,
                    reason,
                },
            },
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => PostOutcome::Retry {
                after,
                reason: format!("{status}: {}", text()),
            },
            StatusCode::UNAUTHORIZED => PostOutcome::Unauthorized(text()),
            StatusCode::REQUEST_TIMEOUT => PostOutcome::Retry {
                after: None,
                reason: format!("{status}"),
            },
            s if s.is_client_error() => PostOutcome::Rejected {
                status,
                reason: text(),
            },
            _ => PostOutcome::Retry {
                after: None,
                reason: format!("{status}: {}", text()),
            },
        }
    }
}
