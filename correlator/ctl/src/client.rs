//! A small client of the correlator's REST API.

use std::time::Duration;

use anyhow::{Context, bail};
use fincorp_api::rest::{
    ApiError, AuditList, IncidentAction, IncidentDetail, IncidentList, NewSilence, SilenceList,
    SilenceView,
};
use serde::Serialize;
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
        self.call(reqwest::Method::GET, path_and_query, None::<&()>)
            .await
    }

    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path_and_query}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
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

    /// `POST /api/v1/incidents/{id}/{op}` with `op` one of ack, resolve, close.
    pub async fn incident_action(
        &self,
        id: &str,
        op: &str,
        by: &str,
        reason: &str,
    ) -> anyhow::Result<IncidentDetail> {
        let body = IncidentAction {
            by: Some(by.to_owned()),
            reason: reason.to_owned(),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/incidents/{id}/{op}"),
            Some(&body),
        )
        .await
    }

    pub async fn silences(&self) -> anyhow::Result<SilenceList> {
        self.get("/api/v1/silences").await
    }

    pub async fn add_silence(&self, new: &NewSilence) -> anyhow::Result<SilenceView> {
        self.call(reqwest::Method::POST, "/api/v1/silences", Some(new))
            .await
    }

    pub async fn expire_silence(&self, id: &str, by: &str) -> anyhow::Result<SilenceView> {
        let by: String = by
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_.@".contains(*c))
            .collect();
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/silences/{id}?by={by}"),
            None::<&()>,
        )
        .await
    }

    /// The whole audit log, page by page, oldest first.
    pub async fn audit(&self) -> anyhow::Result<AuditList> {
        let mut all = AuditList {
            entries: vec![],
            head: None,
        };
        loop {
            let after = all.entries.last().map(|e| e.seq).unwrap_or(0);
            let page: AuditList = self
                .get(&format!("/api/v1/audit?after={after}&limit=5000"))
                .await?;
            all.head = page.head;
            if page.entries.is_empty() {
                return Ok(all);
            }
            all.entries.extend(page.entries);
        }
    }
}
