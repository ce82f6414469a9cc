//! ServiceNow Table API client: opens one incident per FINCORP incident
//! (keyed by `correlation_id`), appends work notes, updates and resolves it.
//!
//! Calls (SPEC §6), all with basic auth and `Accept: application/json`, all
//! field values sent as JSON strings:
//!
//! | what | request |
//! |---|---|
//! | look up | `GET /api/now/table/incident?sysparm_query=correlation_id=<id>^active=true&sysparm_limit=1` |
//! | create | `POST /api/now/table/incident` → 201 `{"result":{...}}` |
//! | read | `GET /api/now/table/incident/{sys_id}` |
//! | update, work note, resolve | `PATCH /api/now/table/incident/{sys_id}`; resolve sends state "6" + `close_code` + `close_notes` |
//!
//! No duplicate tickets: [`ServiceNowClient::ensure_incident`] holds a lock
//! per correlation_id, looks the id up before creating, and looks it up again
//! before retrying a create that failed (a timed-out POST may have been
//! applied). A `^` in a correlation_id is escaped (`^^`) so it cannot add
//! conditions to the lookup, and a lookup answer whose correlation_id does
//! not match is refused rather than adopted.
//!
//! Failures: 429 and 503 wait for `Retry-After` (capped); other 5xx and
//! transport errors back off exponentially with full jitter
//! ([`RetryPolicy`]); 401 is [`ServiceNowError::Auth`]; a success status with
//! an HTML body (a hibernating developer instance) is
//! [`ServiceNowError::Hibernating`]; ServiceNow's
//! `{"error":{"message","detail"}}` body becomes the error message.
//!
//! Not implemented: OAuth (`/oauth_token.do`), tables other than `incident`.

mod client;
mod error;
mod retry;
mod types;

#[cfg(test)]
mod tests;

pub use client::ServiceNowClient;
pub use error::ServiceNowError;
pub use types::{Ensured, NewIncident, PlannedRequest, RetryPolicy, ServiceNowConfig, Ticket};
