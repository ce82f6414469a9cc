//! The simulator's in-memory instance: incident records, journal entries,
//! Event Management events, OAuth tokens, injected faults and a log of the
//! requests received, behind one lock that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

/// One row of a table: every value is a string, as in ServiceNow.
pub type Record = BTreeMap<String, String>;

/// The journal fields of `incident`: a write appends an entry.
pub const JOURNAL_FIELDS: [&str; 2] = ["work_notes", "comments"];

/// How many requests [`SimState::requests`] remembers.
const MAX_RECORDED_REQUESTS: usize = 10_000;

/// Faults the next requests to `/api/now/*` will suffer, set with
/// `POST /sim/faults`. Posting replaces the whole set; `{}` clears it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Answer this many authenticated requests with 429 and `Retry-After`.
    pub rate_limit_next: u32,
    /// The `Retry-After` seconds sent with 429 and 503.
    pub retry_after_s: u64,
    /// Answer this many authenticated requests with `fail_status`.
    pub fail_next_5xx: u32,
    /// The status of injected server errors, 500..=599 (default 500).
    pub fail_status: u16,
    /// Answer every request with the developer-instance hibernation page
    /// (200, `text/html`), before authentication, as a sleeping instance does.
    pub hibernate: bool,
    /// Delay responses by this many milliseconds. The request has already
    /// been applied when the delay starts, so a client that times out sees
    /// a lost response to a write that happened.
    pub delay_ms: u64,
    /// Delay only this many responses (absent: all of them).
    pub delay_next: Option<u32>,
    /// Delay only responses to this method, e.g. "POST" (absent: any).
    pub delay_method: Option<String>,
    /// Inject the 429s and 5xx above only into requests whose path starts
    /// with this, e.g. "/oauth_token.do" or "/api/global/em" (absent: any).
    pub path_prefix: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit_next: 0,
            retry_after_s: 1,
            fail_next_5xx: 0,
            fail_status: 500,
            hibernate: false,
            delay_ms: 0,
            delay_next: None,
            delay_method: None,
            path_prefix: None,
        }
    }
}

/// The fault chosen for one request, once it is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    RateLimited { retry_after_s: u64 },
    ServerError { status: u16, retry_after_s: u64 },
}

/// One request the simulator received on `/api/*` or `/oauth_token.do`,
/// for tests to inspect. The Authorization header's value is never kept,
/// only its scheme; secrets in an OAuth form are replaced by `<redacted>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string.
    pub query: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub has_authorization: bool,
    /// `Basic`, `Bearer`, ... (the Authorization header's scheme).
    pub auth_scheme: Option<String>,
    /// The body parsed as JSON, exactly as sent (numbers stay numbers); a
    /// form body as an object of its fields, secrets redacted.
    pub body: Option<serde_json::Value>,
    /// The status the simulator answered with.
    pub status: u16,
}

/// An OAuth application registered on the simulated instance (System OAuth
/// → Application Registry).
#[derive(Clone)]
pub struct OAuthApp {
    pub client_id: String,
    pub client_secret: String,
    /// Access token lifespan (ServiceNow's default: 1,800 s). Tests use a
    /// second or two to see tokens expire.
    pub access_token_lifetime: Duration,
    /// Refresh token lifespan (ServiceNow's default: 100 days).
    pub refresh_token_lifetime: Duration,
}

impl OAuthApp {
    /// An application with ServiceNow's default lifespans.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            access_token_lifetime: Duration::from_secs(1800),
            refresh_token_lifetime: Duration::from_secs(8_640_000),
        }
    }
}

impl std::fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthApp")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("access_token_lifetime", &self.access_token_lifetime)
            .field("refresh_token_lifetime", &self.refresh_token_lifetime)
            .finish()
    }
}

/// Who a token was issued to and until when.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub(crate) user: String,
    pub(crate) expires_at: Instant,
}

/// The answer to a granted token request.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
    pub(crate) expires_in: u64,
}

/// The simulated ServiceNow instance. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct SimState {
    inner: Arc<Inner>,
}

struct Inner {
    username: String,
    store: Mutex<Store>,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("username", &self.inner.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(crate) struct Store {
    password: String,
    pub(crate) incidents: Vec<Record>,
    pub(crate) journal: Vec<Record>,
    pub(crate) events: Vec<Record>,
    numbers_issued: u32,
    faults: Faults,
    requests: VecDeque<RecordedRequest>,
    oauth: Option<OAuthApp>,
    access_tokens: HashMap<String, Issued>,
    refresh_tokens: HashMap<String, Issued>,
}

/// `now + lifetime`, or a century from now if that overflows the clock.
fn later(now: Instant, lifetime: Duration) -> Instant {
    now.checked_add(lifetime)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Compares all bytes, so timing does not reveal a matching prefix.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SimState {
    /// An empty instance accepting basic auth with this one user (and, once
    /// [`enable_oauth`](Self::enable_oauth) is called, bearer tokens).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                username: username.into(),
                store: Mutex::new(Store {
                    password: password.into(),
                    ..Store::default()
                }),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `username`/`password` are the instance's credentials.
    pub(crate) fn authenticates(&self, username: &str, password: &str) -> bool {
        let user_ok = same_secret(username, &self.inner.username);
        let pass_ok = same_secret(password, &self.lock().password);
        user_ok & pass_ok
    }

    /// Changes the user's password (as an administrator would). Tokens
    /// already issued stay valid, as in ServiceNow.
    pub fn set_password(&self, password: impl Into<String>) {
        self.lock().password = password.into();
    }

    /// Registers the OAuth application `/oauth_token.do` accepts, replacing
    /// any earlier one.
    pub fn enable_oauth(&self, app: OAuthApp) {
        self.lock().oauth = Some(app);
    }

    /// The user a valid, unexpired access token was issued to.
    pub(crate) fn bearer_user(&self, token: &str, now: Instant) -> Option<String> {
        let store = self.lock();
        store
            .access_tokens
            .get(token)
            .filter(|i| now < i.expires_at)
            .map(|i| i.user.clone())
    }

    /// Whether `client_id`/`client_secret` are the registered application's.
    pub(crate) fn oauth_client_ok(&self, client_id: &str, client_secret: &str) -> bool {
        let store = self.lock();
        match &store.oauth {
            Some(app) => {
                same_secret(client_id, &app.client_id)
                    & same_secret(client_secret, &app.client_secret)
            }
            None => false,
        }
    }

    /// Issues an access token, and a refresh token (`refresh`: the one to
    /// keep, else a new one), to `user`. `None` without an OAuth application.
    pub(crate) fn issue_tokens(
        &self,
        user: &str,
        refresh: Option<&str>,
        now: Instant,
    ) -> Option<Grant> {
        let mut store = self.lock();
        let app = store.oauth.clone()?;
        store.access_tokens.retain(|_, i| now < i.expires_at);
        let access_token = fincorp_api::signing::random_hex(32);
        store.access_tokens.insert(
            access_token.clone(),
            Issued {
                user: user.to_owned(),
                expires_at: later(now, app.access_token_lifetime),
            },
        );
        let refresh_token = match refresh {
            Some(kept) => kept.to_owned(),
            None => {
                let token = fincorp_api::signing::random_hex(32);
                store.refresh_tokens.insert(
                    token.clone(),
                    Issued {
                        user: user.to_owned(),
                        expires_at: later(now, app.refresh_token_lifetime),
                    },
                );
                token
            }
        };
        Some(Grant {
            access_token,
            refresh_token,
            expires_in: app.access_token_lifetime.as_secs(),
        })
    }

    /// The user a valid, unexpired refresh token was issued to.
    pub(crate) fn refresh_user(&self, token: &str, now: Instant) -> Option<String> {
        self.lock()
            .refresh_tokens
            .get(token)
            .filter(|i| now < i.expires_at)
            .map(|i| i.user.clone())
    }

    /// Revokes every access token (as deleting them from `oauth_credential`
    /// would): the next request with one gets 401. Refresh tokens stay.
    pub fn revoke_access_tokens(&self) {
        self.lock().access_tokens.clear();
    }

    /// Revokes every refresh token: the next refresh grant gets 401.
    pub fn revoke_refresh_tokens(&self) {
        self.lock().refresh_tokens.clear();
    }

    /// How many access tokens are valid now.
    pub fn live_access_tokens(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .access_tokens
            .values()
            .filter(|i| now < i.expires_at)
            .count()
    }

    /// A snapshot of the Event Management events received (`em_event`),
    /// oldest first.
    pub fn events(&self) -> Vec<Record> {
        self.lock().events.clone()
    }

    /// A snapshot of the incident table as stored. Journal fields are not
    /// part of the stored record (see [`SimState::journal`]).
    pub fn incidents(&self) -> Vec<Record> {
        self.lock().incidents.clone()
    }

    /// A snapshot of `sys_journal_field`, oldest entry first.
    pub fn journal(&self) -> Vec<Record> {
        self.lock().journal.clone()
    }

    /// The requests received on `/api/*` and `/oauth_token.do`, oldest
    /// first (the last 10,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The faults still pending.
    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    /// Replaces the pending faults.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub(crate) fn hibernating(&self) -> bool {
        self.lock().faults.hibernate
    }

    /// Consumes one pending 429 or 5xx fault for a request to `path`, 429s
    /// first.
    pub(crate) fn take_injected(&self, path: &str) -> Option<Injected> {
        let mut store = self.lock();
        let faults = &mut store.faults;
        if faults
            .path_prefix
            .as_deref()
            .is_some_and(|prefix| !path.starts_with(prefix))
        {
            return None;
        }
        if faults.rate_limit_next > 0 {
            faults.rate_limit_next -= 1;
            return Some(Injected::RateLimited {
                retry_after_s: faults.retry_after_s,
            });
        }
        if faults.fail_next_5xx > 0 {
            faults.fail_next_5xx -= 1;
            return Some(Injected::ServerError {
                status: faults.fail_status,
                retry_after_s: faults.retry_after_s,
            });
        }
        None
    }

    /// Consumes one pending response delay for a request with `method`.
    pub(crate) fn take_delay(&self, method: &str) -> Option<Duration> {
        let mut store = self.lock();
        let faults = &mut store.faults;
        if faults.delay_ms == 0 {
            return None;
        }
        if faults
            .delay_method
            .as_deref()
            .is_some_and(|m| !m.eq_ignore_ascii_case(method))
        {
            return None;
        }
        match &mut faults.delay_next {
            None => {}
            Some(0) => return None,
            Some(n) => *n -= 1,
        }
        Some(Duration::from_millis(faults.delay_ms))
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        let mut store = self.lock();
        if store.requests.len() >= MAX_RECORDED_REQUESTS {
            store.requests.pop_front();
        }
        store.requests.push_back(request);
    }
}

/// Now as ServiceNow writes date-times: `YYYY-MM-DD HH:MM:SS`, UTC.
pub(crate) fn now_glide() -> String {
    glide_time(SystemTime::now())
}

pub(crate) fn glide_time(t: SystemTime) -> String {
    // "2026-11-22T10:00:00Z" → "2026-11-22 10:00:00"
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

/// A new 32-character lowercase hex sys_id.
pub(crate) fn new_sys_id() -> String {
    fincorp_api::signing::random_hex(16)
}

/// ServiceNow's default priority lookup: impact × urgency → priority.
pub(crate) fn priority(impact: &str, urgency: &str) -> Option<&'static str> {
    let level = |v: &str| match v {
        "1" => Some(1u8),
        "2" => Some(2),
        "3" => Some(3),
        _ => None,
    };
    Some(match level(impact)? + level(urgency)? - 1 {
        1 => "1",
        2 => "2",
        3 => "3",
        4 => "4",
        _ => "5",
    })
}

fn is_set(record: &Record, field: &str) -> bool {
    record.get(field).is_some_and(|v| !v.trim().is_empty())
}

/// Fields that describe the record itself; writes to them are ignored.
fn is_read_only(field: &str) -> bool {
    field.starts_with("sys_") || matches!(field, "number" | "active" | "priority" | "opened_at")
}

impl Store {
    /// Inserts an incident built from `fields`, as `user` at `now`.
    pub(crate) fn insert_incident(
        &mut self,
        fields: Record,
        user: &str,
        now: &str,
    ) -> Result<Record, ApiError> {
        let number = self
            .numbers_issued
            .checked_add(1)
            .filter(|n| *n <= 9_989_999)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    "Incident numbers exhausted",
                    None,
                )
            })?;
        let sys_id = new_sys_id();
        let mut record = Record::new();
        for (k, v) in [
            ("state", "1"),
            ("impact", "3"),
            ("urgency", "3"),
            ("short_description", ""),
            ("description", ""),
            ("correlation_id", ""),
            ("close_code", ""),
            ("close_notes", ""),
            ("resolved_at", ""),
            ("closed_at", ""),
        ] {
            record.insert(k.into(), v.into());
        }
        record.insert("sys_id".into(), sys_id);
        record.insert("number".into(), format!("INC{:07}", 10_000 + number));
        record.insert("opened_at".into(), now.into());
        record.insert("sys_created_on".into(), now.into());
        record.insert("sys_created_by".into(), user.into());
        record.insert("sys_mod_count".into(), "0".into());
        let record = self.apply(record, fields, user, now)?;
        self.numbers_issued = number;
        self.incidents.push(record.clone());
        Ok(record)
    }

    /// Updates an existing incident; `None` when no record has this sys_id.
    pub(crate) fn update_incident(
        &mut self,
        sys_id: &str,
        fields: Record,
        user: &str,
        now: &str,
    ) -> Result<Option<Record>, ApiError> {
        let Some(index) = self
            .incidents
            .iter()
            .position(|r| r.get("sys_id").is_some_and(|s| s == sys_id))
        else {
            return Ok(None);
        };
        let mut record = self.incidents[index].clone();
        let count = record
            .get("sys_mod_count")
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        record.insert("sys_mod_count".into(), (count + 1).to_string());
        let record = self.apply(record, fields, user, now)?;
        self.incidents[index] = record.clone();
        Ok(Some(record))
    }

    /// Applies a write to a copy of the record, runs the business rules and
    /// the resolution data policy, and only then appends journal entries.
    fn apply(
        &mut self,
        mut record: Record,
        fields: Record,
        user: &str,
        now: &str,
    ) -> Result<Record, ApiError> {
        let mut notes = Vec::new();
        for (field, value) in fields {
            if JOURNAL_FIELDS.contains(&field.as_str()) {
                if !value.trim().is_empty() {
                    notes.push((field, value));
                }
            } else if !is_read_only(&field) {
                record.insert(field, value);
            }
        }
        let impact = record.get("impact").cloned().unwrap_or_default();
        let urgency = record.get("urgency").cloned().unwrap_or_default();
        if let Some(p) = priority(&impact, &urgency) {
            record.insert("priority".into(), p.into());
        }
        let state = record.get("state").cloned().unwrap_or_default();
        let resolving = matches!(state.as_str(), "6" | "7");
        if resolving {
            let missing: Vec<&str> = [
                ("close_code", "Resolution code"),
                ("close_notes", "Resolution notes"),
            ]
            .into_iter()
            .filter(|(field, _)| !is_set(&record, field))
            .map(|(_, label)| label)
            .collect();
            if !missing.is_empty() {
                return Err(ApiError::data_policy(&missing));
            }
            if !is_set(&record, "resolved_at") {
                record.insert("resolved_at".into(), now.into());
            }
            if state == "7" && !is_set(&record, "closed_at") {
                record.insert("closed_at".into(), now.into());
            }
        } else if state != "8" {
            // Reopened (or never resolved): no resolution timestamps.
            record.insert("resolved_at".into(), String::new());
            record.insert("closed_at".into(), String::new());
        }
        let active = !matches!(state.as_str(), "6" | "7" | "8");
        record.insert("active".into(), active.to_string());
        record.insert("sys_updated_on".into(), now.into());
        record.insert("sys_updated_by".into(), user.into());

        let element_id = record.get("sys_id").cloned().unwrap_or_default();
        for (element, value) in notes {
            let mut row = Record::new();
            row.insert("sys_id".into(), new_sys_id());
            row.insert("name".into(), "incident".into());
            row.insert("element_id".into(), element_id.clone());
            row.insert("element".into(), element);
            row.insert("value".into(), value);
            row.insert("sys_created_on".into(), now.into());
            row.insert("sys_created_by".into(), user.into());
            self.journal.push(row);
        }
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Record {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn glide_time_is_space_separated_utc_without_zone() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_341_600); // 2026-11-22 10:00:00
        assert_eq!(glide_time(t), "2026-11-22 10:00:00");
    }

    #[test]
    fn priority_follows_the_default_impact_urgency_lookup() {
        let expected = [
            ("1", "1", "1"),
            ("1", "2", "2"),
            ("1", "3", "3"),
            ("2", "1", "2"),
            ("2", "2", "3"),
            ("2", "3", "4"),
            ("3", "1", "3"),
            ("3", "2", "4"),
            ("3", "3", "5"),
        ];
        for (impact, urgency, p) in expected {
            assert_eq!(
                priority(impact, urgency),
                Some(p),
                "impact {impact} urgency {urgency}"
            );
        }
        assert_eq!(priority("4", "1"), None);
        assert_eq!(priority("", "1"), None);
    }

    #[test]
    fn inserts_number_sequentially_and_resolving_needs_both_close_fields() {
        let mut store = Store::default();
        let a = store
            .insert_incident(
                fields(&[("short_description", "a")]),
                "u",
                "2026-01-01 00:00:00",
            )
            .unwrap();
        let b = store
            .insert_incident(
                fields(&[("impact", "1"), ("urgency", "1")]),
                "u",
                "2026-01-01 00:00:00",
            )
            .unwrap();
        assert_eq!(a["number"], "INC0010001");
        assert_eq!(b["number"], "INC0010002");
        assert_eq!(a["priority"], "5");
        assert_eq!(b["priority"], "1");
        assert_eq!(a["sys_id"].len(), 32);
        assert!(
            a["sys_id"]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );

        let err = store
            .update_incident(
                &a["sys_id"],
                fields(&[("state", "6"), ("close_code", "Solved")]),
                "u",
                "t",
            )
            .unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(
            err.detail
                .as_deref()
                .unwrap_or("")
                .contains("Resolution notes")
        );
        assert!(
            !err.detail
                .as_deref()
                .unwrap_or("")
                .contains("Resolution code")
        );
        // The refused write changed nothing.
        assert_eq!(store.incidents[0]["state"], "1");

        let resolved = store
            .update_incident(
                &a["sys_id"],
                fields(&[
                    ("state", "6"),
                    ("close_code", "Solved"),
                    ("close_notes", "done"),
                    ("work_notes", "fixed"),
                ]),
                "u",
                "2026-01-02 00:00:00",
            )
            .unwrap()
            .unwrap();
        assert_eq!(resolved["active"], "false");
        assert_eq!(resolved["resolved_at"], "2026-01-02 00:00:00");
        assert_eq!(resolved["sys_mod_count"], "1");
        assert_eq!(store.journal.len(), 1);
        assert_eq!(store.journal[0]["element_id"], a["sys_id"]);
        assert!(
            store
                .update_incident("nope", Record::new(), "u", "t")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_refused_write_appends_no_journal_entry_and_read_only_fields_are_ignored() {
        let mut store = Store::default();
        let err = store
            .insert_incident(fields(&[("state", "6"), ("work_notes", "x")]), "u", "t")
            .unwrap_err();
        assert_eq!(err.status, StatusCode::FORBIDDEN);
        assert!(store.journal.is_empty());
        assert!(store.incidents.is_empty());
        let r = store
            .insert_incident(
                fields(&[("number", "INC9"), ("sys_id", "x"), ("active", "false")]),
                "u",
                "t",
            )
            .unwrap();
        assert_eq!(r["number"], "INC0010001");
        assert_ne!(r["sys_id"], "x");
        assert_eq!(r["active"], "true");
    }

    #[test]
    fn faults_with_a_path_prefix_only_hit_those_paths() {
        let state = SimState::new("u", "p");
        state.set_faults(Faults {
            rate_limit_next: 1,
            path_prefix: Some("/oauth_token.do".into()),
            ..Faults::default()
        });
        assert_eq!(state.take_injected("/api/now/table/incident"), None);
        assert_eq!(
            state.take_injected("/oauth_token.do"),
            Some(Injected::RateLimited { retry_after_s: 1 })
        );
    }

    #[test]
    fn tokens_are_issued_only_with_an_app_and_expire() {
        let state = SimState::new("u", "p");
        let now = Instant::now();
        assert!(
            state.issue_tokens("u", None, now).is_none(),
            "no OAuth app yet"
        );
        assert!(!state.oauth_client_ok("c", "s"));
        state.enable_oauth(OAuthApp {
            access_token_lifetime: Duration::from_secs(10),
            ..OAuthApp::new("c", "s")
        });
        assert!(state.oauth_client_ok("c", "s"));
        assert!(!state.oauth_client_ok("c", "S"));
        let grant = state.issue_tokens("u", None, now).unwrap();
        assert_eq!(grant.expires_in, 10);
        assert_eq!(
            state.bearer_user(&grant.access_token, now).as_deref(),
            Some("u")
        );
        assert_eq!(
            state.bearer_user(&grant.access_token, now + Duration::from_secs(10)),
            None,
            "expired"
        );
        assert_eq!(
            state.refresh_user(&grant.refresh_token, now).as_deref(),
            Some("u")
        );
        let refreshed = state
            .issue_tokens("u", Some(&grant.refresh_token), now)
            .unwrap();
        assert_eq!(refreshed.refresh_token, grant.refresh_token);
        assert_ne!(refreshed.access_token, grant.access_token);
        state.revoke_access_tokens();
        assert_eq!(state.bearer_user(&refreshed.access_token, now), None);
        assert!(state.refresh_user(&grant.refresh_token, now).is_some());
        state.revoke_refresh_tokens();
        assert_eq!(state.refresh_user(&grant.refresh_token, now), None);
        assert!(!format!("{:?}", OAuthApp::new("c", "top-secret")).contains("top-secret"));
    }

    #[test]
    fn delays_and_injected_faults_are_consumed_one_request_at_a_time() {
        let state = SimState::new("u", "p");
        state.set_faults(Faults {
            rate_limit_next: 1,
            fail_next_5xx: 1,
            fail_status: 503,
            retry_after_s: 2,
            delay_ms: 5,
            delay_next: Some(1),
            delay_method: Some("POST".into()),
            ..Faults::default()
        });
        assert_eq!(
            state.take_injected("/api/now/table/incident"),
            Some(Injected::RateLimited { retry_after_s: 2 })
        );
        assert_eq!(
            state.take_injected("/oauth_token.do"),
            Some(Injected::ServerError {
                status: 503,
                retry_after_s: 2
            })
        );
        assert_eq!(state.take_injected("/api/now/table/incident"), None);
        assert_eq!(state.take_delay("GET"), None, "only POSTs are delayed");
        assert_eq!(state.take_delay("post"), Some(Duration::from_millis(5)));
        assert_eq!(
            state.take_delay("POST"),
            None,
            "only one response is delayed"
        );
        assert!(state.authenticates("u", "p"));
        assert!(!state.authenticates("u", "P"));
        state.set_password("P");
        assert!(state.authenticates("u", "P"));
        assert!(!state.authenticates("u", "p"));
        assert!(!state.authenticates("u", "pp"));
        assert!(!format!("{state:?}").contains("\"p\""));
    }
}
