//! `POST /api/global/em/jsonv2`: Event Management's web service for
//! inserting events into `em_event`, as ServiceNow's "Pushing events to the
//! instance using web service API" describes it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use serde_json::{Value, json};

use super::error::ApiError;
use super::state::{Record, SimState, new_sys_id, now_glide};
use super::table::AuthUser;

/// A field name that can be an `em_event` column.
fn is_column(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// One incoming record as stored: every value as text. Strings are kept,
/// numbers and booleans become their text, `null` "", and an object or
/// array (an `additional_info` sent unencoded) its JSON text, as the
/// instance normalises `additional_info` to stringified JSON.
fn stored(record: &serde_json::Map<String, Value>, user: &str, now: &str) -> Record {
    let mut row: Record = record
        .iter()
        .filter(|(k, _)| is_column(k))
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    row.insert("sys_id".into(), new_sys_id());
    row.insert("state".into(), "Ready".into());
    row.insert("sys_created_on".into(), now.into());
    row.insert("sys_created_by".into(), user.into());
    row
}

/// The handler: 200 `{"result": {"Default Bulk Endpoint": "N events were
/// inserted"}}`, the answer ServiceNow instances give.
pub(crate) async fn insert(
    State(state): State<SimState>,
    Extension(AuthUser(user)): Extension<AuthUser>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let doc: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request_body(format!("The payload is not valid JSON: {e}")))?;
    let Some(Value::Array(records)) = doc.get("records") else {
        return Err(ApiError::bad_request_body(
            "The payload must be an object with a \"records\" array",
        ));
    };
    let mut rows = Vec::with_capacity(records.len());
    let now = now_glide();
    for (i, record) in records.iter().enumerate() {
        let Value::Object(record) = record else {
            return Err(ApiError::bad_request_body(format!(
                "records[{i}] must be a JSON object"
            )));
        };
        rows.push(stored(record, &user, &now));
    }
    let inserted = rows.len();
    state.lock().events.extend(rows);
    tracing::info!(inserted, "events inserted");
    Ok(Json(json!({
        "result": { "Default Bulk Endpoint": format!("{inserted} events were inserted") }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_stored_as_text() {
        let record = json!({"source": "FINCORP", "severity": 1, "additional_info": {"a": 1}, "x": null, "Bad Key": "y"});
        let row = stored(record.as_object().unwrap(), "u", "2026-11-22 10:00:00");
        assert_eq!(row["source"], "FINCORP");
        assert_eq!(row["severity"], "1");
        assert_eq!(row["additional_info"], r#"{"a":1}"#);
        assert_eq!(row["x"], "");
        assert!(!row.contains_key("Bad Key"));
        assert_eq!(row["state"], "Ready");
        assert_eq!(row["sys_created_by"], "u");
        assert_eq!(row["sys_id"].len(), 32);
    }
}
