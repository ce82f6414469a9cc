//! The simulator's in-memory instance: incident records, journal entries,
//! injected faults and a log of the requests received, behind one lock that
//! is never held across an `.await`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

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
        }
    }
}

/// The fault chosen for one request, once it is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Injected {
    RateLimited { retry_after_s: u64 },
    ServerError { status: u16, retry_after_s: u64 },
}

/// One request the simulator received on `/api/now/*`, for tests to inspect.
/// The Authorization header's value is never kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string.
    pub query: Option<String>,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    pub has_authorization: bool,
    /// The body parsed as JSON, exactly as sent (numbers stay numbers).
    pub body: Option<serde_json::Value>,
    /// The status the simulator answered with.
    pub status: u16,
}

/// The simulated ServiceNow instance. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct SimState {
    inner: Arc<Inner>,
}

struct Inner {
    username: String,
    password: String,
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
    pub(crate) incidents: Vec<Record>,
    pub(crate) journal: Vec<Record>,
    numbers_issued: u32,
    faults: Faults,
    requests: VecDeque<RecordedRequest>,
}

impl SimState {
    /// An empty instance accepting basic auth with this one user.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                username: username.into(),
                password: password.into(),
                store: Mutex::new(Store::default()),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.inner.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `username`/`password` are the instance's credentials.
    pub(crate) fn authenticates(&self, username: &str, password: &str) -> bool {
        // Compare all bytes so timing does not reveal a matching prefix.
        let eq = |a: &[u8], b: &[u8]| {
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        };
        let user_ok = eq(username.as_bytes(), self.inner.username.as_bytes());
        let pass_ok = eq(password.as_bytes(), self.inner.password.as_bytes());
        user_ok & pass_ok
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

    /// The requests received on `/api/now/*`, oldest first (the last 10,000).
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

    /// Consumes one pending 429 or 5xx fault, 429s first.
    pub(crate) fn take_injected(&self) -> Option<Injected> {
        let mut store = self.lock();
        let faults = &mut store.faults;
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
            state.take_injected(),
            Some(Injected::RateLimited { retry_after_s: 2 })
        );
        assert_eq!(
            state.take_injected(),
            Some(Injected::ServerError {
                status: 503,
                retry_after_s: 2
            })
        );
        assert_eq!(state.take_injected(), None);
        assert_eq!(state.take_delay("GET"), None, "only POSTs are delayed");
        assert_eq!(state.take_delay("post"), Some(Duration::from_millis(5)));
        assert_eq!(
            state.take_delay("POST"),
            None,
            "only one response is delayed"
        );
        assert!(state.authenticates("u", "p"));
        assert!(!state.authenticates("u", "P"));
        assert!(!state.authenticates("u", "pp"));
        assert!(!format!("{state:?}").contains("\"p\""));
    }
}
