//! The ServiceNow Table API client: idempotent incident creation keyed by
//! correlation_id, updates, work notes and resolution, with retries.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Weak};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use super::error::ServiceNowError;
use super::retry::{Retry, delay_before_next, parse_retry_after, random_u64};
use super::types::{Ensured, NewIncident, PlannedRequest, RetryPolicy, ServiceNowConfig, Ticket};

const INCIDENT_TABLE: &str = "api/now/table/incident";
const JSON: &str = "application/json";
/// What plans show instead of the credentials.
const REDACTED_AUTHORIZATION: &str = "Basic <redacted>";
/// Prune the per-key lock map once it holds this many entries.
const LOCK_MAP_PRUNE_AT: usize = 256;
/// How much of a non-JSON error body goes into an error message.
const SNIPPET_CHARS: usize = 200;

/// A ServiceNow client. Cheap to clone; clones share the connection pool and
/// the per-correlation_id locks.
#[derive(Clone)]
pub struct ServiceNowClient {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

struct Inner {
    http: reqwest::Client,
    /// The instance URL, ending in `/`.
    base: Url,
    username: String,
    password: String,
    /// correlation_id → the lock serialising `ensure_incident` for it. Weak,
    /// so a key's lock disappears once nobody holds it.
    locks: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl fmt::Debug for ServiceNowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceNowClient")
            .field("url", &self.inner.base.as_str())
            .field("username", &self.inner.username)
            .field("password", &"<redacted>")
            .field("retry", &self.retry)
            .finish()
    }
}

/// One request, built once and used both to send and to plan.
#[derive(Debug, Clone)]
struct Prepared {
    method: Method,
    url: Url,
    body: Option<Value>,
}

impl Prepared {
    fn headers(&self, authorization: &str) -> Vec<(String, String)> {
        let mut headers = vec![
            ("Accept".to_owned(), JSON.to_owned()),
            ("Authorization".to_owned(), authorization.to_owned()),
        ];
        if self.body.is_some() {
            headers.push(("Content-Type".to_owned(), JSON.to_owned()));
        }
        headers
    }

    fn planned(&self) -> PlannedRequest {
        PlannedRequest {
            method: self.method.to_string(),
            url: self.url.to_string(),
            headers: self.headers(REDACTED_AUTHORIZATION),
            body: self.body.clone(),
        }
    }
}

/// A failed attempt and whether it may be retried.
struct Failure {
    error: ServiceNowError,
    retry: Retry,
}

fn parse_base(url: &str) -> Result<Url, ServiceNowError> {
    // Never echo the URL: it might carry credentials.
    let mut base = Url::parse(url.trim()).map_err(|e| {
        ServiceNowError::Config(format!("the instance url is not a valid URL: {e}"))
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(ServiceNowError::Config(format!(
            "the instance url must be http or https, not {}",
            base.scheme()
        )));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(ServiceNowError::Config(
            "the instance url must not contain credentials; use username and password".into(),
        ));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(ServiceNowError::Config(
            "the instance url must not have a query or fragment".into(),
        ));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// Escapes a value for an encoded query: `^` is written `^^`, so a value
/// cannot end the condition and inject another.
pub(crate) fn encode_query_value(value: &str) -> String {
    value.replace('^', "^^")
}

fn require(field: &'static str, value: &str) -> Result<(), ServiceNowError> {
    if value.trim().is_empty() {
        return Err(ServiceNowError::InvalidInput {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

/// A record's field as text: ServiceNow sends strings, or
/// `{"value", "display_value"}` objects with `sysparm_display_value=all`.
fn field_text(record: &Map<String, Value>, name: &str) -> String {
    match record.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Object(o)) => o
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

/// The [`Ticket`] in a Table API record.
pub(crate) fn ticket_from_record(record: &Value) -> Result<Ticket, String> {
    let Value::Object(record) = record else {
        return Err(format!(
            "a record must be a JSON object, got {}",
            kind(record)
        ));
    };
    let sys_id = field_text(record, "sys_id");
    if sys_id.is_empty() {
        return Err("the record has no sys_id".into());
    }
    let active = match field_text(record, "active").as_str() {
        "true" => true,
        "false" => false,
        other => {
            return Err(format!(
                "the record's active field is {other:?}, not \"true\" or \"false\""
            ));
        }
    };
    Ok(Ticket {
        sys_id,
        number: field_text(record, "number"),
        state: field_text(record, "state"),
        active,
        correlation_id: field_text(record, "correlation_id"),
        short_description: field_text(record, "short_description"),
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// ServiceNow's error message from an error body
/// (`{"error":{"message","detail"},"status":"failure"}`), else a short,
/// printable snippet of whatever came back.
pub(crate) fn error_message(status: StatusCode, content_type: &str, body: &[u8]) -> String {
    let doc = serde_json::from_slice::<Value>(body).ok();
    if let Some(Value::Object(error)) = doc.as_ref().and_then(|d| d.get("error")) {
        let text = |k: &str| {
            error
                .get(k)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
        };
        match (text("message"), text("detail")) {
            (Some(m), Some(d)) => return format!("{m}: {d}"),
            (Some(m), None) => return m.to_owned(),
            (None, Some(d)) => return d.to_owned(),
            (None, None) => {}
        }
    }
    let snippet: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_CHARS)
        .collect();
    let snippet = snippet.split_whitespace().collect::<Vec<_>>().join(" ");
    let reason = status.canonical_reason().unwrap_or("error");
    if snippet.is_empty() {
        reason.to_owned()
    } else if content_type.is_empty() {
        format!("{reason}: {snippet}")
    } else {
        format!("{reason} ({content_type}): {snippet}")
    }
}

/// Whether a success response is the Table API's JSON, as opposed to the HTML
/// page a hibernating developer instance serves.
fn looks_like_json(content_type: &str, body: &[u8]) -> bool {
    content_type.to_ascii_lowercase().contains("json")
        && body.trim_ascii_start().first() != Some(&b'<')
}

/// The chain of causes of a transport error, for the message.
fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

impl ServiceNowClient {
    /// Checks the configuration and builds the HTTP client (rustls with the
    /// ring provider, the configured timeout, no redirects).
    pub fn new(cfg: ServiceNowConfig) -> Result<Self, ServiceNowError> {
        let base = parse_base(&cfg.url)?;
        if cfg.username.trim().is_empty() {
            return Err(ServiceNowError::Config("username must not be empty".into()));
        }
        if cfg.username.contains(':') {
            return Err(ServiceNowError::Config(
                "username must not contain ':' (basic auth)".into(),
            ));
        }
        let password = cfg
            .password
            .expose_str()
            .map_err(|e| ServiceNowError::Config(format!("password: {e}")))?
            .to_owned();
        if password.is_empty() {
            return Err(ServiceNowError::Config("password must not be empty".into()));
        }
        if cfg.timeout.is_zero() {
            return Err(ServiceNowError::Config(
                "timeout must be greater than zero".into(),
            ));
        }
        let http = fincorp_api::http::client_builder(cfg.timeout)
            // A redirect from the Table API is never expected; following one
            // could turn a POST into a GET or leave the instance.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ServiceNowError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                username: cfg.username,
                password,
                locks: std::sync::Mutex::new(HashMap::new()),
            }),
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Looks up an active incident by correlation_id; creates it only if none
    /// exists. Serialised per correlation_id inside this client (and its
    /// clones): concurrent callers for the same key never create two tickets.
    /// When one already exists and `new.work_notes` is set, the work notes
    /// are appended to it instead.
    ///
    /// Across processes there is no lock: the lookup before every create
    /// (and before every retried create) is what prevents duplicates.
    pub async fn ensure_incident(&self, new: &NewIncident) -> Result<Ensured, ServiceNowError> {
        require("correlation_id", &new.correlation_id)?;
        let lock = self.key_lock(&new.correlation_id);
        let _serialised = lock.lock().await;

        if let Some(existing) = self.find_active(&new.correlation_id).await? {
            let ticket = match new.work_notes.as_deref().filter(|n| !n.trim().is_empty()) {
                Some(notes) => self.add_work_note(&existing.sys_id, notes).await?,
                None => existing,
            };
            info!(
                correlation_id = %new.correlation_id,
                sys_id = %ticket.sys_id,
                number = %ticket.number,
                created = false,
                "servicenow incident already open"
            );
            return Ok(Ensured {
                ticket,
                created: false,
            });
        }

        let ticket = self.create(new).await?;
        info!(
            correlation_id = %new.correlation_id,
            sys_id = %ticket.sys_id,
            number = %ticket.number,
            created = true,
            "servicenow incident created"
        );
        Ok(Ensured {
            ticket,
            created: true,
        })
    }

    /// The active incident with this correlation_id, if any.
    pub async fn find_active(
        &self,
        correlation_id: &str,
    ) -> Result<Option<Ticket>, ServiceNowError> {
        require("correlation_id", correlation_id)?;
        let request = self.lookup_request(correlation_id);
        let doc = self.send(&request).await?;
        let rows = match doc.get("result") {
            Some(Value::Array(rows)) => rows,
            other => {
                return Err(self.decode_error(
                    &request,
                    format!(
                        "\"result\" must be an array, got {}",
                        other.map_or("nothing", kind)
                    ),
                ));
            }
        };
        let Some(first) = rows.first() else {
            debug!(correlation_id, "no active servicenow incident");
            return Ok(None);
        };
        let ticket = ticket_from_record(first).map_err(|m| self.decode_error(&request, m))?;
        // An instance that cannot use a query condition (a field hidden by an
        // ACL, say) may ignore it and return unrelated rows: never adopt one.
        if ticket.correlation_id != correlation_id || !ticket.active {
            return Err(self.decode_error(
                &request,
                format!(
                    "the lookup returned {} (correlation_id {:?}, active {}), which does not match; \
                     check that the user may read correlation_id and that invalid queries return no rows",
                    ticket.number, ticket.correlation_id, ticket.active
                ),
            ));
        }
        debug!(correlation_id, sys_id = %ticket.sys_id, number = %ticket.number, "found active servicenow incident");
        Ok(Some(ticket))
    }

    /// The incident with this sys_id (404 → `Http { status: 404, .. }`).
    pub async fn get(&self, sys_id: &str) -> Result<Ticket, ServiceNowError> {
        let request = Prepared {
            method: Method::GET,
            url: self.record_url(sys_id)?,
            body: None,
        };
        self.send_for_ticket(&request).await
    }

    /// Appends a work note (a journal entry; earlier notes are kept).
    pub async fn add_work_note(&self, sys_id: &str, note: &str) -> Result<Ticket, ServiceNowError> {
        require("work note", note)?;
        let mut fields = BTreeMap::new();
        fields.insert("work_notes".to_owned(), note.to_owned());
        let ticket = self.update(sys_id, &fields).await?;
        info!(sys_id = %ticket.sys_id, number = %ticket.number, "servicenow work note added");
        Ok(ticket)
    }

    /// Sets fields (PATCH); every value is sent as a JSON string.
    ///
    /// A PATCH that fails in transport is retried. If it had in fact been
    /// applied, a journal field in it (`work_notes`, `comments`) is appended
    /// twice: the Table API has no idempotency key for writes.
    pub async fn update(
        &self,
        sys_id: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Ticket, ServiceNowError> {
        if let Some(empty) = fields.keys().find(|k| k.trim().is_empty()) {
            return Err(ServiceNowError::InvalidInput {
                field: "field name",
                reason: format!("{empty:?} is not a field name"),
            });
        }
        let body: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let request = Prepared {
            method: Method::PATCH,
            url: self.record_url(sys_id)?,
            body: Some(Value::Object(body)),
        };
        let ticket = self.send_for_ticket(&request).await?;
        debug!(sys_id = %ticket.sys_id, number = %ticket.number, fields = ?fields.keys().collect::<Vec<_>>(), "servicenow incident updated");
        Ok(ticket)
    }

    /// Resolves the incident: state "6" with `close_code` and `close_notes`
    /// (both mandatory under ServiceNow's resolution data policy).
    pub async fn resolve(
        &self,
        sys_id: &str,
        close_code: &str,
        close_notes: &str,
    ) -> Result<Ticket, ServiceNowError> {
        require("close_code", close_code)?;
        require("close_notes", close_notes)?;
        let fields: BTreeMap<String, String> = [
            ("state", "6"),
            ("close_code", close_code),
            ("close_notes", close_notes),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let ticket = self.update(sys_id, &fields).await?;
        info!(sys_id = %ticket.sys_id, number = %ticket.number, state = %ticket.state, "servicenow incident resolved");
        Ok(ticket)
    }

    /// The exact HTTP requests `ensure_incident` sends when no active ticket
    /// exists: the lookup GET, then the POST. (When the lookup finds one, the
    /// POST is replaced by a PATCH of `work_notes` to it, or by nothing.)
    /// The Authorization value is redacted.
    pub fn plan_ensure(&self, new: &NewIncident) -> Vec<PlannedRequest> {
        vec![
            self.lookup_request(&new.correlation_id).planned(),
            self.create_request(new).planned(),
        ]
    }

    fn table_url(&self) -> Url {
        let mut url = self.inner.base.clone();
        let path = format!("{}{INCIDENT_TABLE}", self.inner.base.path());
        url.set_path(&path);
        url
    }

    fn record_url(&self, sys_id: &str) -> Result<Url, ServiceNowError> {
        require("sys_id", sys_id)?;
        let mut url = self.table_url();
        url.path_segments_mut()
            .map_err(|()| ServiceNowError::Config("the instance url cannot have a path".into()))?
            .push(sys_id);
        Ok(url)
    }

    fn lookup_request(&self, correlation_id: &str) -> Prepared {
        let mut url = self.table_url();
        url.query_pairs_mut()
            .append_pair(
                "sysparm_query",
                &format!(
                    "correlation_id={}^active=true",
                    encode_query_value(correlation_id)
                ),
            )
            .append_pair("sysparm_limit", "1");
        Prepared {
            method: Method::GET,
            url,
            body: None,
        }
    }

    fn create_request(&self, new: &NewIncident) -> Prepared {
        let mut fields: Map<String, Value> = new
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut set = |k: &str, v: &str| {
            fields.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        set("correlation_id", &new.correlation_id);
        set("short_description", &new.short_description);
        for (k, v) in [
            ("description", &new.description),
            ("urgency", &new.urgency),
            ("impact", &new.impact),
            ("work_notes", &new.work_notes),
        ] {
            if let Some(v) = v {
                set(k, v);
            }
        }
        Prepared {
            method: Method::POST,
            url: self.table_url(),
            body: Some(Value::Object(fields)),
        }
    }

    /// POSTs the incident. Before any retry, looks the correlation_id up
    /// again: a POST that failed (timed out, 5xx) may have been applied.
    /// The caller holds the key's lock.
    async fn create(&self, new: &NewIncident) -> Result<Ticket, ServiceNowError> {
        let request = self.create_request(new);
        let mut attempt = 1;
        loop {
            match self.attempt(&request, attempt).await {
                Ok(doc) => return self.ticket_in(&request, &doc),
                Err(failure) => {
                    let Some(wait) =
                        delay_before_next(&self.retry, failure.retry, attempt, random_u64())
                    else {
                        return Err(failure.error);
                    };
                    warn!(
                        correlation_id = %new.correlation_id,
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %failure.error,
                        "servicenow create failed; checking whether it was applied before retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    if let Some(ticket) = self.find_active(&new.correlation_id).await? {
                        warn!(
                            correlation_id = %new.correlation_id,
                            sys_id = %ticket.sys_id,
                            number = %ticket.number,
                            "the failed create had been applied; not creating again"
                        );
                        return Ok(ticket);
                    }
                }
            }
        }
    }

    async fn send_for_ticket(&self, request: &Prepared) -> Result<Ticket, ServiceNowError> {
        let doc = self.send(request).await?;
        self.ticket_in(request, &doc)
    }

    fn ticket_in(&self, request: &Prepared, doc: &Value) -> Result<Ticket, ServiceNowError> {
        let record = doc
            .get("result")
            .ok_or_else(|| self.decode_error(request, "the response has no \"result\"".into()))?;
        ticket_from_record(record).map_err(|m| self.decode_error(request, m))
    }

    /// Sends with retries; the JSON document on success.
    async fn send(&self, request: &Prepared) -> Result<Value, ServiceNowError> {
        let mut attempt = 1;
        loop {
            match self.attempt(request, attempt).await {
                Ok(doc) => return Ok(doc),
                Err(failure) => {
                    let Some(wait) =
                        delay_before_next(&self.retry, failure.retry, attempt, random_u64())
                    else {
                        return Err(failure.error);
                    };
                    warn!(
                        method = %request.method,
                        path = request.url.path(),
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %failure.error,
                        "servicenow request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    fn decode_error(&self, request: &Prepared, message: String) -> ServiceNowError {
        ServiceNowError::Decode {
            method: request.method.to_string(),
            url: request.url.to_string(),
            message,
        }
    }

    /// One HTTP exchange, classified.
    async fn attempt(&self, request: &Prepared, attempt: u32) -> Result<Value, Failure> {
        let method = request.method.to_string();
        let url = request.url.to_string();
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .basic_auth(&self.inner.username, Some(&self.inner.password))
            .header(ACCEPT, JSON);
        if let Some(body) = &request.body {
            builder = builder.header(CONTENT_TYPE, JSON).body(body.to_string());
        }

        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let retry = if e.is_builder() {
                    Retry::No
                } else {
                    Retry::Backoff
                };
                return Err(Failure {
                    error: ServiceNowError::Transport {
                        method,
                        url,
                        message: error_chain(&e),
                    },
                    retry,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = content_type(&headers);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err(Failure {
                    error: ServiceNowError::Transport {
                        method,
                        url,
                        message: error_chain(&e),
                    },
                    retry: Retry::Backoff,
                });
            }
        };
        debug!(method = %request.method, path = request.url.path(), status = status.as_u16(), attempt, "servicenow response");

        if status.is_success() {
            if !looks_like_json(&content_type, &body) {
                return Err(Failure {
                    error: ServiceNowError::Hibernating {
                        method,
                        url,
                        status: status.as_u16(),
                        content_type,
                    },
                    retry: Retry::No,
                });
            }
            return serde_json::from_slice::<Value>(&body).map_err(|e| Failure {
                error: ServiceNowError::Decode {
                    method,
                    url,
                    message: format!("invalid JSON: {e}"),
                },
                retry: Retry::No,
            });
        }

        let message = error_message(status, &content_type, &body);
        if status == StatusCode::UNAUTHORIZED {
            return Err(Failure {
                error: ServiceNowError::Auth {
                    method,
                    url,
                    message,
                },
                retry: Retry::No,
            });
        }
        let retry = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
                .map_or(Retry::Backoff, Retry::After),
            s if s.is_server_error() => Retry::Backoff,
            _ => Retry::No,
        };
        let message = if status.is_redirection() {
            let location = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?");
            format!("unexpected redirect to {location}")
        } else {
            message
        };
        Err(Failure {
            error: ServiceNowError::Http {
                method,
                url,
                status: status.as_u16(),
                message,
            },
            retry,
        })
    }

    /// The lock for one correlation_id.
    fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() >= LOCK_MAP_PRUNE_AT {
            locks.retain(|_, weak| weak.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }

    #[cfg(test)]
    pub(crate) fn lock_map_len(&self) -> usize {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use fincorp_api::config::Secret;
    use serde_json::json;
    use std::time::Duration;

    fn config(url: &str) -> ServiceNowConfig {
        ServiceNowConfig {
            url: url.into(),
            username: "fincorp-operator".into(),
            password: Secret::new("hunter2-password"),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn config_is_checked_and_never_shows_the_password() {
        let cfg = config("https://fincorp.service-now.com");
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let client = ServiceNowClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));

        for (url, why) in [
            ("not a url", "not a valid URL"),
            ("ftp://x", "http or https"),
            ("https://admin:hunter2@x.service-now.com", "credentials"),
            ("https://x.service-now.com/?a=b", "query"),
        ] {
            let err = ServiceNowClient::new(config(url)).unwrap_err();
            assert!(
                matches!(&err, ServiceNowError::Config(m) if m.contains(why)),
                "{url}: {err}"
            );
            assert!(!err.to_string().contains("hunter2"));
        }
        let mut cfg = config("https://x");
        cfg.username = " ".into();
        assert!(matches!(
            ServiceNowClient::new(cfg),
            Err(ServiceNowError::Config(_))
        ));
        let mut cfg = config("https://x");
        cfg.password = Secret::new(vec![0xff, 0xfe]);
        assert!(matches!(
            ServiceNowClient::new(cfg),
            Err(ServiceNowError::Config(_))
        ));
        let mut cfg = config("https://x");
        cfg.timeout = Duration::ZERO;
        assert!(matches!(
            ServiceNowClient::new(cfg),
            Err(ServiceNowError::Config(_))
        ));
    }

    #[test]
    fn urls_keep_a_path_prefix_and_escape_sys_ids() {
        let client = ServiceNowClient::new(config("http://proxy.local:8080/sn")).unwrap();
        assert_eq!(
            client.table_url().as_str(),
            "http://proxy.local:8080/sn/api/now/table/incident"
        );
        assert_eq!(
            client.record_url("a/b?c").unwrap().as_str(),
            "http://proxy.local:8080/sn/api/now/table/incident/a%2Fb%3Fc"
        );
        assert!(matches!(
            client.record_url(""),
            Err(ServiceNowError::InvalidInput {
                field: "sys_id",
                ..
            })
        ));
    }

    #[test]
    fn the_lookup_escapes_carets_so_a_correlation_id_cannot_inject_conditions() {
        let client = ServiceNowClient::new(config("https://x.service-now.com/")).unwrap();
        let url = client.lookup_request("abc^ORactive=false").url;
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            query,
            vec![
                (
                    "sysparm_query".to_owned(),
                    "correlation_id=abc^^ORactive=false^active=true".to_owned()
                ),
                ("sysparm_limit".to_owned(), "1".to_owned()),
            ]
        );
    }

    #[test]
    fn records_decode_into_tickets_and_bad_records_are_explained() {
        let ticket = ticket_from_record(&json!({
            "sys_id": "abc", "number": "INC0010001", "state": "6", "active": "false",
            "correlation_id": "c", "short_description": "s", "extra": "ignored"
        }))
        .unwrap();
        assert_eq!(
            ticket,
            Ticket {
                sys_id: "abc".into(),
                number: "INC0010001".into(),
                state: "6".into(),
                active: false,
                correlation_id: "c".into(),
                short_description: "s".into(),
            }
        );
        let all = ticket_from_record(&json!({"sys_id": {"value": "x", "display_value": "x"}, "active": {"value": "true", "display_value": "true"}})).unwrap();
        assert_eq!((all.sys_id.as_str(), all.active), ("x", true));
        assert!(
            ticket_from_record(&json!({"active": "true"}))
                .unwrap_err()
                .contains("sys_id")
        );
        assert!(
            ticket_from_record(&json!({"sys_id": "x", "active": "maybe"}))
                .unwrap_err()
                .contains("active")
        );
        assert!(
            ticket_from_record(&json!([1]))
                .unwrap_err()
                .contains("object")
        );
    }

    #[test]
    fn error_bodies_are_decoded_into_the_message() {
        let body = br#"{"error":{"message":"Operation Failed","detail":"Data Policy Exception"},"status":"failure"}"#;
        assert_eq!(
            error_message(StatusCode::FORBIDDEN, "application/json", body),
            "Operation Failed: Data Policy Exception"
        );
        let body = br#"{"error":{"message":"Invalid table x","detail":null},"status":"failure"}"#;
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, "application/json", body),
            "Invalid table x"
        );
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, "", b""),
            "Bad Gateway"
        );
        let html = b"<html>\n<body>upstream\tdown</body></html>";
        assert_eq!(
            error_message(StatusCode::BAD_GATEWAY, "text/html", html),
            "Bad Gateway (text/html): <html> <body>upstream down</body></html>"
        );
        let long = "x".repeat(10_000);
        assert!(error_message(StatusCode::BAD_GATEWAY, "", long.as_bytes()).len() < 300);
    }

    #[test]
    fn html_or_non_json_success_bodies_are_not_json() {
        assert!(looks_like_json(
            "application/json;charset=UTF-8",
            b"{\"result\":{}}"
        ));
        assert!(!looks_like_json(
            "text/html; charset=utf-8",
            b"<html>hibernating</html>"
        ));
        assert!(!looks_like_json("application/json", b"  <html>"));
        assert!(!looks_like_json("", b"{}"));
    }

    #[test]
    fn key_locks_are_shared_while_held_and_pruned_after() {
        let client = ServiceNowClient::new(config("https://x")).unwrap();
        let a = client.key_lock("k");
        let b = client.clone().key_lock("k");
        assert!(Arc::ptr_eq(&a, &b), "clones share one lock per key");
        drop((a, b));
        for i in 0..LOCK_MAP_PRUNE_AT * 3 {
            let _held_only_briefly = client.key_lock(&format!("key-{i}"));
        }
        assert!(
            client.lock_map_len() <= LOCK_MAP_PRUNE_AT + 1,
            "{}",
            client.lock_map_len()
        );
    }
}
