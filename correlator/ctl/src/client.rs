//! A small client of the correlator's REST API. A refusal by the correlator
//! comes back as an [`ApiFailure`] carrying the status and its message.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use fincorp_api::rest::{
    ApiError, AuditList, AutomationStatus, DecisionRequest, IncidentAction, IncidentDetail,
    IncidentList, KillSwitchRequest, KillSwitchView, NewSilence, PlanRequest, PlanView,
    PlaybookView, ReloadView, ResetRequest, RunList, RunView, SilenceList, SilenceView,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The correlator answered with an error status: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub url: String,
    pub status: u16,
    /// `bad_request`, `not_found`, `conflict`, ... (empty when the body was not JSON).
    pub code: String,
    pub message: String,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = reqwest::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        write!(
            f,
            "{}: {} {reason}: {}",
            self.url, self.status, self.message
        )
    }
}

impl std::error::Error for ApiFailure {}

/// Percent-encodes `s` for one URL path segment or query value: everything
/// but the unreserved characters (`A-Z a-z 0-9 - . _ ~`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The filters of `GET /api/v1/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub incident_id: Option<String>,
    pub playbook: Option<String>,
    pub state: Option<String>,
    pub limit: Option<u32>,
}

impl RunQuery {
    /// The query string, without `?`; empty when there is no filter.
    pub fn to_query(&self) -> String {
        let mut q = Vec::new();
        for (k, v) in [
            ("incident_id", &self.incident_id),
            ("playbook", &self.playbook),
            ("state", &self.state),
        ] {
            if let Some(v) = v {
                q.push(format!("{k}={}", encode(v)));
            }
        }
        if let Some(n) = self.limit {
            q.push(format!("limit={n}"));
        }
        q.join("&")
    }
}

/// The correlator at `base` (e.g. `http://127.0.0.1:9470`).
#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// The API bearer token, when the correlator has `api.tokens`.
    token: Option<fincorp_api::config::Secret>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: fincorp_api::http::client(Duration::from_secs(10)),
            token: None,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: Option<fincorp_api::config::Secret>) -> Self {
        self.token = token;
        self
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
        if let Some(token) = &self.token {
            let token = token
                .expose_str()
                .map_err(|e| anyhow::anyhow!("the API token: {e}"))?;
            req = req.bearer_auth(token);
        }
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
            let (code, message) = match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(e) => (e.error.code, e.error.message),
                Err(_) => (
                    String::new(),
                    String::from_utf8_lossy(&bytes).trim().to_owned(),
                ),
            };
            return Err(ApiFailure {
                url,
                status: status.as_u16(),
                code,
                message,
            }
            .into());
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

    /// `GET /api/v1/runs`, newest first.
    pub async fn runs(&self, query: &RunQuery) -> anyhow::Result<RunList> {
        let q = query.to_query();
        let q = if q.is_empty() { q } else { format!("?{q}") };
        self.get(&format!("/api/v1/runs{q}")).await
    }

    /// `GET /api/v1/runs/{id}`.
    pub async fn run(&self, id: &str) -> anyhow::Result<RunView> {
        self.get(&format!("/api/v1/runs/{}", encode(id))).await
    }

    /// `POST /api/v1/runs/{id}/approve` or `/reject`.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: &str,
    ) -> anyhow::Result<RunView> {
        let op = if approve { "approve" } else { "reject" };
        let body = DecisionRequest {
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{}/{op}", encode(id)),
            Some(&body),
        )
        .await
    }

    /// `GET /api/v1/automation`.
    pub async fn automation(&self) -> anyhow::Result<AutomationStatus> {
        self.get("/api/v1/automation").await
    }

    /// `GET /api/v1/automation/kill-switch`.
    pub async fn kill_switch(&self) -> anyhow::Result<KillSwitchView> {
        self.get("/api/v1/automation/kill-switch").await
    }

    /// `POST /api/v1/automation/kill-switch`.
    pub async fn set_kill_switch(
        &self,
        on: bool,
        by: &str,
        reason: &str,
    ) -> anyhow::Result<KillSwitchView> {
        let body = KillSwitchRequest {
            on,
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        self.call(
            reqwest::Method::POST,
            "/api/v1/automation/kill-switch",
            Some(&body),
        )
        .await
    }

    /// `POST /api/v1/automation/breakers/{key}/reset`; the key (`fleet`,
    /// `playbook:NAME@HOST/APP`, ...) is percent-encoded.
    pub async fn reset_breaker(
        &self,
        key: &str,
        by: &str,
        reason: &str,
    ) -> anyhow::Result<AutomationStatus> {
        let body = ResetRequest {
            by: by.to_owned(),
            reason: reason.to_owned(),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/automation/breakers/{}/reset", encode(key)),
            Some(&body),
        )
        .await
    }

    /// `GET /api/v1/playbooks`: the loaded playbooks.
    pub async fn playbooks(&self) -> anyhow::Result<Vec<PlaybookView>> {
        self.get("/api/v1/playbooks").await
    }

    /// `POST /api/v1/playbooks/reload`: a 400 carries the diagnostics.
    pub async fn reload_playbooks(&self) -> anyhow::Result<ReloadView> {
        self.call(
            reqwest::Method::POST,
            "/api/v1/playbooks/reload",
            None::<&()>,
        )
        .await
    }

    /// `POST /api/v1/playbooks/{name}/run`: run the loaded playbook `name`
    /// for an incident now (it meets every guardrail).
    pub async fn run_playbook(
        &self,
        playbook: &str,
        request: &fincorp_api::rest::RunRequest,
    ) -> anyhow::Result<RunView> {
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/playbooks/{}/run", encode(playbook)),
            Some(request),
        )
        .await
    }

    /// `POST /api/v1/playbooks/{name}/plan`: a dry run of the loaded playbook
    /// `name` against a stored incident.
    pub async fn plan(&self, playbook: &str, incident_id: &str) -> anyhow::Result<PlanView> {
        let body = PlanRequest {
            incident_id: incident_id.to_owned(),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/playbooks/{}/plan", encode(playbook)),
            Some(&body),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_keys_are_one_path_segment() {
        assert_eq!(
            encode("playbook:hft-cpu@web01/FINCORP-APP-HFT"),
            "playbook%3Ahft-cpu%40web01%2FFINCORP-APP-HFT"
        );
        assert_eq!(encode("a b%é"), "a%20b%25%C3%A9");
    }

    #[test]
    fn run_filters_make_an_encoded_query() {
        assert_eq!(RunQuery::default().to_query(), "");
        let q = RunQuery {
            incident_id: Some("fc-1".into()),
            playbook: Some("a&b".into()),
            state: Some("awaiting_approval".into()),
            limit: Some(5),
        };
        assert_eq!(
            q.to_query(),
            "incident_id=fc-1&playbook=a%26b&state=awaiting_approval&limit=5"
        );
    }
}
