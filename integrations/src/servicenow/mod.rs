//! ServiceNow client: opens one incident per FINCORP incident (keyed by
//! `correlation_id`), appends work notes, updates and resolves it, and sends
//! events to Event Management.
//!
//! Calls (SPEC §6), all with `Accept: application/json`, all field values
//! sent as JSON strings:
//!
//! | what | request | plan |
//! |---|---|---|
//! | look up | `GET /api/now/table/incident?sysparm_query=correlation_id=<id>^active=true&sysparm_limit=1` | [`ServiceNowClient::plan_ensure`] |
//! | create | `POST /api/now/table/incident` → 201 `{"result":{...}}` | [`ServiceNowClient::plan_ensure`] |
//! | read | `GET /api/now/table/incident/{sys_id}` | |
//! | update, state change | `PATCH /api/now/table/incident/{sys_id}` | [`ServiceNowClient::plan_update`] |
//! | work note | `PATCH ...` `{"work_notes": ...}` (a journal field: appends) | [`ServiceNowClient::plan_add_work_note`] |
//! | resolve | `PATCH ...` state "6" + `close_code` + `close_notes` | [`ServiceNowClient::plan_resolve`] |
//! | event | `POST /api/global/em/jsonv2` `{"records":[...]}` → 200 | [`ServiceNowClient::plan_events`] |
//! | OAuth token | `POST /oauth_token.do` (form: `grant_type=password\|refresh_token`) | |
//!
//! Each action-facing call has three faces: checks without IO
//! ([`NewIncident::validate`], [`EmEvent::validate`], and the `plan_*`
//! functions, which run the same checks), a plan of the exact requests
//! (credentials redacted), and the call itself, built from the same request
//! value as its plan.
//!
//! **Auth.** Basic auth on every request, or OAuth ([`ServiceNowOptions`]):
//! a password grant for the first token, refresh grants after; a token is
//! renewed shortly before it expires (a tenth of its lifetime, at most a
//! minute), and once more when the instance answers 401 to it. A refused
//! refresh grant falls back to a password grant; if that is refused too the
//! call fails with [`ServiceNowError::OAuth`]. One grant at a time per
//! client: concurrent callers share its token.
//!
//! **Field mapping.** [`FieldMapping`] holds per-app default fields
//! (`assignment_group`, `cmdb_ci`, `caller_id`, `category`, ...);
//! [`ServiceNowClient::incident_for_app`] merges them into a request, where
//! what the request says wins.
//!
//! **No duplicate tickets.** [`ServiceNowClient::ensure_incident`] holds a
//! lock per correlation_id, looks the id up before creating, and looks it up
//! again before retrying a create that failed (a timed-out POST may have
//! been applied). A `^` in a correlation_id is escaped (`^^`) so it cannot
//! add conditions to the lookup, and a lookup answer whose correlation_id
//! does not match is refused rather than adopted.
//!
//! **Failures**, the same for the Table API, Event Management and the OAuth
//! endpoint: 429 and 503 wait for `Retry-After` (capped); other 5xx and
//! transport errors back off exponentially with full jitter
//! ([`RetryPolicy`]); 401 is [`ServiceNowError::Auth`] (after one token
//! renewal with OAuth); a success status with an HTML body (a hibernating
//! developer instance) is [`ServiceNowError::Hibernating`]; ServiceNow's
//! `{"error":{"message","detail"}}` body becomes the error message.
//!
//! Not implemented: tables other than `incident`, the client-credentials
//! and authorization-code grants.

mod client;
mod error;
mod event;
mod mapping;
mod oauth;
mod types;

#[cfg(test)]
mod tests;

pub use crate::plan::PlannedRequest;
pub use crate::retry::RetryPolicy;
pub use client::ServiceNowClient;
pub use error::ServiceNowError;
pub use event::{EmEvent, EventSeverity, EventsAccepted, glide_utc};
pub use mapping::{FieldMapping, MappingProblem};
pub use types::{Ensured, NewIncident, OAuthConfig, ServiceNowConfig, ServiceNowOptions, Ticket};
