//! The ServiceNow client: idempotent incident creation keyed by
//! correlation_id, updates, work notes and resolution on the Table API;
//! events to Event Management; basic auth or OAuth; retries throughout.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Instant;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Map, Value};
use tracing::{debug, info, warn};

use super::error::ServiceNowError;
use super::event::{EmEvent, EventsAccepted, events_accepted, events_body};
use super::mapping::FieldMapping;
use super::oauth::{Bearer, Grant, TokenSource, token_response};
use super::types::{
    Ensured, NewIncident, OAuthConfig, ServiceNowConfig, ServiceNowOptions, Ticket,
    check_field_name, require,
};
use crate::http::{
    check_login, content_type, endpoint, error_chain, looks_like_json, millis, parse_base_url,
    redirect_message, unstructured_message,
};
use crate::plan::{PlannedRequest, REDACTED_BASIC, REDACTED_BEARER};
use crate::retry::{Retry, RetryPolicy, delay_before_next, random_u64};

const INCIDENT_TABLE: &str = "api/now/table/incident";
const EM_EVENTS: &str = "api/global/em/jsonv2";
const OAUTH_TOKEN: &str = "oauth_token.do";
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
/// Prune the per-key lock map once it holds this many entries.
const LOCK_MAP_PRUNE_AT: usize = 256;
/// The incident states a client may set ("4"/"5" do not exist in the
/// default incident choice list).
const STATES: &[&str] = &["1", "2", "3", "6", "7", "8"];

/// A ServiceNow client. Cheap to clone; clones share the connection pool,
/// the OAuth token and the per-correlation_id locks.
#[derive(Clone)]
pub struct ServiceNowClient {
    inner: Arc<Inner>,
    retry: RetryPolicy,
    mapping: Arc<FieldMapping>,
}

struct Inner {
    http: reqwest::Client,
    /// The instance URL, ending in `/`.
    base: Url,
    auth: Auth,
    /// correlation_id → the lock serialising `ensure_incident` for it. Weak,
    /// so a key's lock disappears once nobody holds it.
    locks: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

/// How requests are authenticated.
enum Auth {
    /// Basic auth on every request.
    Basic { username: String, password: String },
    /// A bearer token from `/oauth_token.do`.
    OAuth(TokenSource),
}

impl fmt::Debug for ServiceNowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ServiceNowClient");
        s.field("url", &self.inner.base.as_str());
        match &self.inner.auth {
            Auth::Basic { username, .. } => s
                .field("auth", &"basic")
                .field("username", username)
                .field("password", &"<redacted>"),
            Auth::OAuth(source) => s.field("auth", &"oauth").field("oauth", source),
        };
        s.field("retry", &self.retry).finish_non_exhaustive()
    }
}

/// One request, built once and used both to send and to plan.
#[derive(Debug, Clone)]
struct Prepared {
    method: Method,
    url: Url,
    body: Option<Value>,
}

/// A request body as sent.
#[derive(Clone, Copy)]
enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// Form-encoded, secret (an OAuth grant): never logged.
    Form(&'a str),
}

/// What authenticates one exchange.
enum Credential {
    Basic,
    Bearer(Bearer),
    /// `/oauth_token.do` authenticates with the form's client credentials.
    None,
}

/// A failed attempt and whether it may be retried.
struct Failure {
    error: ServiceNowError,
    retry: Retry,
}

impl Failure {
    fn fatal(error: ServiceNowError) -> Self {
        Self {
            error,
            retry: Retry::No,
        }
    }
}

/// Escapes a value for an encoded query: `^` is written `^^`, so a value
/// cannot end the condition and inject another.
pub(crate) fn encode_query_value(value: &str) -> String {
    value.replace('^', "^^")
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

/// ServiceNow's error message from an error body: the Table API's
/// `{"error":{"message","detail"},"status":"failure"}` or the OAuth
/// endpoint's `{"error":"server_error","error_description":"access_denied"}`;
/// else a short, printable snippet of whatever came back.
pub(crate) fn error_message(status: StatusCode, content_type: &str, body: &[u8]) -> String {
    let doc = serde_json::from_slice::<Value>(body).ok();
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match doc.as_ref().and_then(|d| d.get("error")) {
        Some(Value::Object(error)) => {
            match (text(error.get("message")), text(error.get("detail"))) {
                (Some(m), Some(d)) => return format!("{m}: {d}"),
                (Some(m), None) => return m,
                (None, Some(d)) => return d,
                (None, None) => {}
            }
        }
        Some(code @ Value::String(_)) => {
            let description = text(doc.as_ref().and_then(|d| d.get("error_description")));
            match (description, text(Some(code))) {
                (Some(d), Some(c)) => return format!("{d} ({c})"),
                (None, Some(c)) => return c,
                _ => {}
            }
        }
        _ => {}
    }
    unstructured_message(status, content_type, body)
}

impl ServiceNowClient {
    /// A client with basic auth and default options. Checks the
    /// configuration and builds the HTTP client (rustls with the ring
    /// provider, the configured timeout, no redirects).
    pub fn new(cfg: ServiceNowConfig) -> Result<Self, ServiceNowError> {
        Self::with_options(cfg, ServiceNowOptions::default())
    }

    /// A client with OAuth and/or a field mapping and/or a retry policy.
    /// With OAuth, `cfg.username`/`cfg.password` are the resource owner's
    /// credentials for the password grant.
    pub fn with_options(
        cfg: ServiceNowConfig,
        options: ServiceNowOptions,
    ) -> Result<Self, ServiceNowError> {
        let base = parse_base_url(&cfg.url, "instance").map_err(ServiceNowError::Config)?;
        let password = check_login(&cfg.username, &cfg.password, cfg.timeout)
            .map_err(ServiceNowError::Config)?;
        if let Err(problems) = options.field_mapping.validate() {
            let text: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.key_path, p.message))
                .collect();
            return Err(ServiceNowError::Config(format!(
                "field mapping: {}",
                text.join("; ")
            )));
        }
        let auth = match options.oauth {
            None => Auth::Basic {
                username: cfg.username,
                password,
            },
            Some(OAuthConfig {
                client_id,
                client_secret,
            }) => {
                if client_id.trim().is_empty() {
                    return Err(ServiceNowError::Config(
                        "oauth client_id must not be empty".into(),
                    ));
                }
                let secret = client_secret
                    .expose_str()
                    .map_err(|e| ServiceNowError::Config(format!("oauth client_secret: {e}")))?
                    .to_owned();
                if secret.is_empty() {
                    return Err(ServiceNowError::Config(
                        "oauth client_secret must not be empty".into(),
                    ));
                }
                Auth::OAuth(TokenSource::new(
                    client_id.trim().to_owned(),
                    secret,
                    cfg.username,
                    password,
                ))
            }
        };
        let http = fincorp_api::http::client_builder(cfg.timeout)
            // A redirect from the instance is never expected; following one
            // could turn a POST into a GET or leave the instance.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ServiceNowError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                locks: std::sync::Mutex::new(HashMap::new()),
            }),
            retry: options.retry,
            mapping: Arc::new(options.field_mapping),
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

    /// Whether requests carry an OAuth bearer token (else basic auth).
    pub fn uses_oauth(&self) -> bool {
        matches!(self.inner.auth, Auth::OAuth(_))
    }

    pub fn field_mapping(&self) -> &FieldMapping {
        &self.mapping
    }

    /// `new` with the configured field mapping for `app` merged in (what
    /// `new` says wins; see [`FieldMapping::apply`]). Pass the result to
    /// [`ensure_incident`](Self::ensure_incident) and
    /// [`plan_ensure`](Self::plan_ensure).
    pub fn incident_for_app(&self, app: &str, new: &NewIncident) -> NewIncident {
        self.mapping.apply(Some(app), new)
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
        new.validate()?;
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
        let request = self.work_note_request(sys_id, note)?;
        let ticket = self.send_for_ticket(&request).await?;
        info!(sys_id = %ticket.sys_id, number = %ticket.number, "servicenow work note added");
        Ok(ticket)
    }

    /// Sets fields (PATCH); every value is sent as a JSON string. A `state`
    /// must be one of "1", "2", "3", "6", "7", "8"; `work_notes` and
    /// `comments` append journal entries.
    ///
    /// A PATCH that fails in transport is retried. If it had in fact been
    /// applied, a journal field in it (`work_notes`, `comments`) is appended
    /// twice: the Table API has no idempotency key for writes.
    pub async fn update(
        &self,
        sys_id: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Ticket, ServiceNowError> {
        let request = self.update_request(sys_id, fields)?;
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
        let request = self.resolve_request(sys_id, close_code, close_notes)?;
        let ticket = self.send_for_ticket(&request).await?;
        info!(sys_id = %ticket.sys_id, number = %ticket.number, state = %ticket.state, "servicenow incident resolved");
        Ok(ticket)
    }

    /// Sends events to Event Management (`POST /api/global/em/jsonv2`), all
    /// in one request. Each is validated first; nothing is sent if one is
    /// invalid.
    ///
    /// A POST that fails in transport or with a 5xx is retried; if it had
    /// been applied, Event Management de-duplicates the repeat by
    /// `message_key` into the same alert.
    pub async fn send_events(&self, events: &[EmEvent]) -> Result<EventsAccepted, ServiceNowError> {
        let request = self.events_request(events)?;
        let doc = self.send(&request).await?;
        let accepted = events_accepted(&doc).map_err(|m| self.decode_error(&request, m))?;
        info!(
            events = events.len(),
            inserted = accepted.inserted,
            "servicenow events sent"
        );
        Ok(accepted)
    }

    /// The exact HTTP requests `ensure_incident` sends when no active ticket
    /// exists: the lookup GET, then the POST. (When the lookup finds one, the
    /// POST is replaced by a PATCH of `work_notes` to it, or by nothing.)
    /// The Authorization value is redacted. With OAuth, a token request to
    /// `/oauth_token.do` precedes them when no valid token is held.
    pub fn plan_ensure(&self, new: &NewIncident) -> Vec<PlannedRequest> {
        vec![
            self.planned(&self.lookup_request(&new.correlation_id)),
            self.planned(&self.create_request(new)),
        ]
    }

    /// The GET [`find_active`](Self::find_active) sends.
    pub fn plan_find_active(
        &self,
        correlation_id: &str,
    ) -> Result<PlannedRequest, ServiceNowError> {
        require("correlation_id", correlation_id)?;
        Ok(self.planned(&self.lookup_request(correlation_id)))
    }

    /// The PATCH [`update`](Self::update) sends, after the same checks.
    pub fn plan_update(
        &self,
        sys_id: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<PlannedRequest, ServiceNowError> {
        Ok(self.planned(&self.update_request(sys_id, fields)?))
    }

    /// The PATCH [`add_work_note`](Self::add_work_note) sends.
    pub fn plan_add_work_note(
        &self,
        sys_id: &str,
        note: &str,
    ) -> Result<PlannedRequest, ServiceNowError> {
        Ok(self.planned(&self.work_note_request(sys_id, note)?))
    }

    /// The PATCH [`resolve`](Self::resolve) sends.
    pub fn plan_resolve(
        &self,
        sys_id: &str,
        close_code: &str,
        close_notes: &str,
    ) -> Result<PlannedRequest, ServiceNowError> {
        Ok(self.planned(&self.resolve_request(sys_id, close_code, close_notes)?))
    }

    /// The POST [`send_events`](Self::send_events) sends.
    pub fn plan_events(&self, events: &[EmEvent]) -> Result<PlannedRequest, ServiceNowError> {
        Ok(self.planned(&self.events_request(events)?))
    }

    fn planned(&self, request: &Prepared) -> PlannedRequest {
        let authorization = match self.inner.auth {
            Auth::Basic { .. } => REDACTED_BASIC,
            Auth::OAuth(_) => REDACTED_BEARER,
        };
        let mut headers = vec![
            ("Accept".to_owned(), JSON.to_owned()),
            ("Authorization".to_owned(), authorization.to_owned()),
        ];
        if request.body.is_some() {
            headers.push(("Content-Type".to_owned(), JSON.to_owned()));
        }
        PlannedRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers,
            body: request.body.clone(),
        }
    }

    fn table_url(&self) -> Url {
        endpoint(&self.inner.base, INCIDENT_TABLE)
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

    fn update_request(
        &self,
        sys_id: &str,
        fields: &BTreeMap<String, String>,
    ) -> Result<Prepared, ServiceNowError> {
        if fields.is_empty() {
            return Err(ServiceNowError::InvalidInput {
                field: "fields",
                reason: "nothing to update".into(),
            });
        }
        for name in fields.keys() {
            check_field_name(name)?;
        }
        if let Some(state) = fields
            .get("state")
            .filter(|s| !STATES.contains(&s.as_str()))
        {
            return Err(ServiceNowError::InvalidInput {
                field: "state",
                reason: format!(
                    "{state:?} is not an incident state (1 New, 2 In Progress, 3 On Hold, 6 Resolved, 7 Closed, 8 Canceled)"
                ),
            });
        }
        let body: Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        Ok(Prepared {
            method: Method::PATCH,
            url: self.record_url(sys_id)?,
            body: Some(Value::Object(body)),
        })
    }

    fn work_note_request(&self, sys_id: &str, note: &str) -> Result<Prepared, ServiceNowError> {
        require("work note", note)?;
        let fields = BTreeMap::from([("work_notes".to_owned(), note.to_owned())]);
        self.update_request(sys_id, &fields)
    }

    fn resolve_request(
        &self,
        sys_id: &str,
        close_code: &str,
        close_notes: &str,
    ) -> Result<Prepared, ServiceNowError> {
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
        self.update_request(sys_id, &fields)
    }

    fn events_request(&self, events: &[EmEvent]) -> Result<Prepared, ServiceNowError> {
        if events.is_empty() {
            return Err(ServiceNowError::InvalidInput {
                field: "events",
                reason: "nothing to send".into(),
            });
        }
        for event in events {
            event.validate()?;
        }
        Ok(Prepared {
            method: Method::POST,
            url: endpoint(&self.inner.base, EM_EVENTS),
            body: Some(events_body(events)),
        })
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
                        wait_ms = millis(wait),
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
        self.retrying(&request.method, &request.url, |attempt| {
            self.attempt(request, attempt)
        })
        .await
    }

    /// Runs `once` until it succeeds, fails for good, or the attempts run
    /// out, waiting between attempts as the policy says.
    async fn retrying<F, Fut>(
        &self,
        method: &Method,
        url: &Url,
        mut once: F,
    ) -> Result<Value, ServiceNowError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Value, Failure>>,
    {
        let mut attempt = 1;
        loop {
            match once(attempt).await {
                Ok(doc) => return Ok(doc),
                Err(failure) => {
                    let Some(wait) =
                        delay_before_next(&self.retry, failure.retry, attempt, random_u64())
                    else {
                        return Err(failure.error);
                    };
                    warn!(
                        method = %method,
                        path = url.path(),
                        attempt,
                        wait_ms = millis(wait),
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

    /// One attempt at an instance API request: with OAuth, a bearer token
    /// that the instance refuses (401) is renewed once and the request sent
    /// again.
    async fn attempt(&self, request: &Prepared, attempt: u32) -> Result<Value, Failure> {
        let body = match &request.body {
            Some(v) => Body::Json(v),
            None => Body::Empty,
        };
        let credential = self.credential().await.map_err(Failure::fatal)?;
        let result = self
            .exchange(&request.method, &request.url, &credential, body, attempt)
            .await;
        match (&self.inner.auth, credential, result) {
            (
                Auth::OAuth(source),
                Credential::Bearer(used),
                Err(Failure {
                    error: ServiceNowError::Auth { .. },
                    ..
                }),
            ) => {
                warn!(
                    method = %request.method,
                    path = request.url.path(),
                    "servicenow refused the access token; renewing it and sending once more"
                );
                source.invalidate(used.generation, Instant::now());
                let fresh = self.credential().await.map_err(Failure::fatal)?;
                self.exchange(&request.method, &request.url, &fresh, body, attempt)
                    .await
            }
            (_, _, result) => result,
        }
    }

    /// What authenticates the next request: basic auth, or a bearer token
    /// (obtained or renewed first when needed).
    async fn credential(&self) -> Result<Credential, ServiceNowError> {
        match &self.inner.auth {
            Auth::Basic { .. } => Ok(Credential::Basic),
            Auth::OAuth(source) => Ok(Credential::Bearer(self.bearer(source).await?)),
        }
    }

    /// A usable access token: the held one until shortly before it expires,
    /// else a refresh grant, else (no refresh token, or it was refused) a
    /// password grant. One grant at a time per client; concurrent callers
    /// wait for it and share its token.
    async fn bearer(&self, source: &TokenSource) -> Result<Bearer, ServiceNowError> {
        if let Some(bearer) = source.usable(Instant::now()) {
            return Ok(bearer);
        }
        let _one_grant_at_a_time = source.fetching.lock().await;
        if let Some(bearer) = source.usable(Instant::now()) {
            return Ok(bearer);
        }
        let requested_at = Instant::now();
        let (grant, response) = match source.next_grant() {
            Grant::Refresh => match self.grant(source, Grant::Refresh).await {
                Ok(response) => (Grant::Refresh, response),
                Err(ServiceNowError::OAuth {
                    status,
                    message: refused,
                    ..
                }) => {
                    warn!(
                        status,
                        reason = %refused,
                        "servicenow refused the refresh token; logging in again with the password grant"
                    );
                    source.drop_refresh_token();
                    let requested_at = Instant::now();
                    let response = self
                        .grant(source, Grant::Password)
                        .await
                        .map_err(|e| match e {
                            ServiceNowError::OAuth {
                                grant,
                                url,
                                status: s,
                                message,
                            } => ServiceNowError::OAuth {
                                grant,
                                url,
                                status: s,
                                message: format!(
                                    "{message}; the refresh_token grant before it was refused too (HTTP {status}: {refused})"
                                ),
                            },
                            other => other,
                        })?;
                    let bearer = source.store(response.clone(), requested_at);
                    info!(
                        grant = Grant::Password.name(),
                        expires_in_s = response.lifetime.as_secs(),
                        "servicenow oauth token obtained"
                    );
                    return Ok(bearer);
                }
                Err(other) => return Err(other),
            },
            Grant::Password => (Grant::Password, self.grant(source, Grant::Password).await?),
        };
        info!(
            grant = grant.name(),
            expires_in_s = response.lifetime.as_secs(),
            "servicenow oauth token obtained"
        );
        Ok(source.store(response, requested_at))
    }

    /// One grant request to `/oauth_token.do`, with retries for 429, 5xx
    /// and transport errors. A 400 or 401 is the grant being refused.
    async fn grant(
        &self,
        source: &TokenSource,
        grant: Grant,
    ) -> Result<super::oauth::TokenResponse, ServiceNowError> {
        let url = endpoint(&self.inner.base, OAUTH_TOKEN);
        let form = source.form(grant).ok_or_else(|| {
            ServiceNowError::Config("a refresh grant was attempted without a refresh token".into())
        })?;
        let method = Method::POST;
        let result = self
            .retrying(&method, &url, |attempt| {
                self.exchange(&method, &url, &Credential::None, Body::Form(&form), attempt)
            })
            .await;
        let doc = match result {
            Ok(doc) => doc,
            Err(ServiceNowError::Auth { url, message, .. }) => {
                return Err(ServiceNowError::OAuth {
                    grant: grant.name(),
                    url,
                    status: 401,
                    message,
                });
            }
            Err(ServiceNowError::Http {
                url,
                status: 400,
                message,
                ..
            }) => {
                return Err(ServiceNowError::OAuth {
                    grant: grant.name(),
                    url,
                    status: 400,
                    message,
                });
            }
            Err(other) => return Err(other),
        };
        token_response(&doc).map_err(|message| ServiceNowError::Decode {
            method: method.to_string(),
            url: url.to_string(),
            message,
        })
    }

    /// One HTTP exchange, classified.
    async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        credential: &Credential,
        body: Body<'_>,
        attempt: u32,
    ) -> Result<Value, Failure> {
        let method_text = method.to_string();
        let url_text = url.to_string();
        let mut builder = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .header(ACCEPT, JSON);
        match (credential, &self.inner.auth) {
            (Credential::Basic, Auth::Basic { username, password }) => {
                builder = builder.basic_auth(username, Some(password));
            }
            (Credential::Bearer(bearer), _) => {
                let mut value = HeaderValue::from_str(&bearer.header).map_err(|_| {
                    Failure::fatal(ServiceNowError::Decode {
                        method: method_text.clone(),
                        url: url_text.clone(),
                        message: "the access token is not a valid header value".into(),
                    })
                })?;
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
            _ => {}
        }
        builder = match body {
            Body::Empty => builder,
            Body::Json(v) => builder.header(CONTENT_TYPE, JSON).body(v.to_string()),
            Body::Form(f) => builder.header(CONTENT_TYPE, FORM).body(f.to_owned()),
        };

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
                        method: method_text,
                        url: url_text,
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
                        method: method_text,
                        url: url_text,
                        message: error_chain(&e),
                    },
                    retry: Retry::Backoff,
                });
            }
        };
        debug!(method = %method, path = url.path(), status = status.as_u16(), attempt, "servicenow response");

        if status.is_success() {
            if !looks_like_json(&content_type, &body) {
                return Err(Failure::fatal(ServiceNowError::Hibernating {
                    method: method_text,
                    url: url_text,
                    status: status.as_u16(),
                    content_type,
                }));
            }
            return serde_json::from_slice::<Value>(&body).map_err(|e| {
                Failure::fatal(ServiceNowError::Decode {
                    method: method_text,
                    url: url_text,
                    message: format!("invalid JSON: {e}"),
                })
            });
        }

        let message = error_message(status, &content_type, &body);
        if status == StatusCode::UNAUTHORIZED {
            return Err(Failure::fatal(ServiceNowError::Auth {
                method: method_text,
                url: url_text,
                message,
            }));
        }
        let retry = Retry::for_status(
            status,
            headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()),
        );
        let message = if status.is_redirection() {
            redirect_message(&headers)
        } else {
            message
        };
        Err(Failure {
            error: ServiceNowError::Http {
                method: method_text,
                url: url_text,
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
