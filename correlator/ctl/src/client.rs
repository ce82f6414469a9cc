//! A small client of the correlator's REST API.

use std::time::Duration;

use anyhow::{Context, bail};
use fincorp_api::rest::{ApiError, IncidentDetail, IncidentList};
use serde::de::DeserializeOwned;

/// The correlator at `base` (e.g. `http://127.0.0.1:9470`).
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: fincorp_api::http::client(Duration::from_secs(10)),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: DeserializeOwned>(&self, path_and_query: &str) -> anyhow::Result<T> {
        let url = format!("{}{path_and_query}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach the correlator at {}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if !status.is_success() {
            match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => bail!("{url}: {status}: {}", e.error.message),
                Err(_) => bail!("{url}: {status}: {}", String::from_utf8_lossy(&bytes)),
            }
        }
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{url} answered something that is not the expected JSON"))
    }

    /// `GET /api/v1/incidents` with a query string such as `app=X&state=open`.
    pub async fn incidents(&self, query: &str) -> anyhow::Result<IncidentList> {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        self.get(&format!("/api/v1/incidents{q}")).await
    }

    /// `GET /api/v1/incidents/{id}`.
    pub async fn incident(&self, id: &str) -> anyhow::Result<IncidentDetail> {
        self.get(&format!("/api/v1/incidents/{id}")).await
    }
}
