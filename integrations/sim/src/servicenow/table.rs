//! The Table API handlers (`/api/now/table/{table}[/{sys_id}]`) and how a
//! stored record is rendered: raw values, display values, journal fields and
//! `sysparm_fields`.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::query::EncodedQuery;
use super::state::{JOURNAL_FIELDS, Record, SimState, now_glide};

/// The user a request authenticated as, put there by the gate.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser(pub String);

/// The most rows one list call returns, whatever `sysparm_limit` says.
const MAX_LIMIT: usize = 10_000;

type Params = Query<HashMap<String, String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Incident,
    JournalField,
    /// Event Management's events (filled by `/api/global/em/jsonv2`).
    Event,
}

impl Table {
    fn parse(name: &str) -> Result<Self, ApiError> {
        match name {
            "incident" => Ok(Table::Incident),
            "sys_journal_field" => Ok(Table::JournalField),
            "em_event" => Ok(Table::Event),
            other => Err(ApiError::invalid_table(other)),
        }
    }

    /// Tables other than incident are read-only here.
    fn writable(self) -> Result<(), ApiError> {
        match self {
            Table::Incident => Ok(()),
            Table::JournalField | Table::Event => Err(ApiError::write_denied()),
        }
    }
}

/// `sysparm_display_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DisplayValue {
    False,
    True,
    All,
}

/// How to render records for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadOptions {
    display: DisplayValue,
    fields: Option<Vec<String>>,
}

impl ReadOptions {
    fn from_params(params: &HashMap<String, String>) -> Self {
        let display = match params
            .get("sysparm_display_value")
            .map(|v| v.to_ascii_lowercase())
        {
            Some(v) if v == "true" => DisplayValue::True,
            Some(v) if v == "all" => DisplayValue::All,
            _ => DisplayValue::False,
        };
        let fields = params.get("sysparm_fields").map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|f| !f.is_empty())
                .map(str::to_owned)
                .collect()
        });
        Self { display, fields }
    }
}

fn number_param(params: &HashMap<String, String>, name: &str) -> Result<Option<usize>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            ApiError::bad_parameter(format!("{name} must be a non-negative integer, got {v:?}"))
        }),
    }
}

/// `GET /api/now/table/{table}`: query, order, page and render.
pub(crate) async fn list(
    State(state): State<SimState>,
    Path(table): Path<String>,
    Query(params): Params,
) -> Result<Response, ApiError> {
    let table = Table::parse(&table)?;
    let query = EncodedQuery::parse(
        params
            .get("sysparm_query")
            .map(String::as_str)
            .unwrap_or(""),
    )
    .map_err(|e| ApiError::bad_parameter(e.to_string()))?;
    let limit = number_param(&params, "sysparm_limit")?
        .unwrap_or(MAX_LIMIT)
        .min(MAX_LIMIT);
    let offset = number_param(&params, "sysparm_offset")?.unwrap_or(0);
    let options = ReadOptions::from_params(&params);

    let store = state.lock();
    let rows = match table {
        Table::Incident => &store.incidents,
        Table::JournalField => &store.journal,
        Table::Event => &store.events,
    };
    let mut hits: Vec<&Record> = rows.iter().filter(|r| query.matches(r)).collect();
    query.sort(&mut hits);
    let total = hits.len();
    let result: Vec<Value> = hits
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|r| Value::Object(render(table, r, &store.journal, &options)))
        .collect();
    drop(store);

    let mut response = Json(json!({ "result": result })).into_response();
    response
        .headers_mut()
        .insert("x-total-count", HeaderValue::from(total));
    Ok(response)
}

/// `GET /api/now/table/{table}/{sys_id}`.
pub(crate) async fn read(
    State(state): State<SimState>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(params): Params,
) -> Result<Json<Value>, ApiError> {
    let table = Table::parse(&table)?;
    let options = ReadOptions::from_params(&params);
    let store = state.lock();
    let rows = match table {
        Table::Incident => &store.incidents,
        Table::JournalField => &store.journal,
        Table::Event => &store.events,
    };
    let record = rows
        .iter()
        .find(|r| r.get("sys_id") == Some(&sys_id))
        .ok_or_else(ApiError::no_record)?;
    Ok(Json(
        json!({ "result": render(table, record, &store.journal, &options) }),
    ))
}

/// `POST /api/now/table/{table}`: 201 with the new record and a Location.
pub(crate) async fn create(
    State(state): State<SimState>,
    Extension(AuthUser(user)): Extension<AuthUser>,
    Path(table): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let table = Table::parse(&table)?;
    table.writable()?;
    let fields = parse_fields(&body)?;
    let options = ReadOptions::from_params(&params);
    let mut store = state.lock();
    let record = store.insert_incident(fields, &user, &now_glide())?;
    let rendered = render(table, &record, &store.journal, &options);
    drop(store);

    let sys_id = record.get("sys_id").cloned().unwrap_or_default();
    let location = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}/api/now/table/incident/{sys_id}"),
        None => format!("/api/now/table/incident/{sys_id}"),
    };
    let mut response = (StatusCode::CREATED, Json(json!({ "result": rendered }))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `PATCH` and `PUT /api/now/table/{table}/{sys_id}`: both update the given
/// fields only, as ServiceNow's Table API does.
pub(crate) async fn update(
    State(state): State<SimState>,
    Extension(AuthUser(user)): Extension<AuthUser>,
    Path((table, sys_id)): Path<(String, String)>,
    Query(params): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let table = Table::parse(&table)?;
    table.writable()?;
    let fields = parse_fields(&body)?;
    let options = ReadOptions::from_params(&params);
    let mut store = state.lock();
    let record = store
        .update_incident(&sys_id, fields, &user, &now_glide())?
        .ok_or_else(ApiError::no_record)?;
    Ok(Json(
        json!({ "result": render(table, &record, &store.journal, &options) }),
    ))
}

/// A request body as field → string value. Numbers and booleans are stored
/// as their text, `null` as "". Names that cannot be ServiceNow columns are
/// ignored, as ServiceNow ignores unknown fields.
pub(crate) fn parse_fields(body: &[u8]) -> Result<Record, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(Record::new());
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request_body(format!("The payload is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request_body(
            "The payload must be a JSON object",
        ));
    };
    Ok(map
        .into_iter()
        .filter(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (k, text)
        })
        .collect())
}

/// The display value of a choice field, as ServiceNow's default incident
/// choice lists label them.
fn choice_label(field: &str, value: &str) -> Option<&'static str> {
    Some(match (field, value) {
        ("state", "1") => "New",
        ("state", "2") => "In Progress",
        ("state", "3") => "On Hold",
        ("state", "6") => "Resolved",
        ("state", "7") => "Closed",
        ("state", "8") => "Canceled",
        ("impact" | "urgency", "1") => "1 - High",
        ("impact" | "urgency", "2") => "2 - Medium",
        ("impact" | "urgency", "3") => "3 - Low",
        ("priority", "1") => "1 - Critical",
        ("priority", "2") => "2 - High",
        ("priority", "3") => "3 - Moderate",
        ("priority", "4") => "4 - Low",
        ("priority", "5") => "5 - Planning",
        _ => return None,
    })
}

/// A journal field's display value: its entries, newest first, each as
/// `"<time> - <user> (<label>)\n<text>\n\n"`.
pub(crate) fn journal_text(journal: &[Record], element_id: &str, element: &str) -> String {
    let label = match element {
        "work_notes" => "Work notes",
        "comments" => "Additional comments",
        other => other,
    };
    let field = |r: &Record, k: &str| r.get(k).cloned().unwrap_or_default();
    journal
        .iter()
        .rev()
        .filter(|r| {
            r.get("element_id").is_some_and(|v| v == element_id)
                && r.get("element").is_some_and(|v| v == element)
        })
        .map(|r| {
            format!(
                "{} - {} ({label})\n{}\n\n",
                field(r, "sys_created_on"),
                field(r, "sys_created_by"),
                field(r, "value")
            )
        })
        .collect()
}

/// Renders one record for the response. Journal fields of an incident read
/// as "" unless display values are asked for.
fn render(
    table: Table,
    record: &Record,
    journal: &[Record],
    options: &ReadOptions,
) -> Map<String, Value> {
    let mut cells: Vec<(String, String, String)> = record
        .iter()
        .map(|(k, v)| {
            let display = match table {
                Table::Incident => choice_label(k, v)
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.clone()),
                Table::JournalField | Table::Event => v.clone(),
            };
            (k.clone(), v.clone(), display)
        })
        .collect();
    if table == Table::Incident {
        let sys_id = record.get("sys_id").map(String::as_str).unwrap_or("");
        for element in JOURNAL_FIELDS {
            cells.push((
                element.to_owned(),
                String::new(),
                journal_text(journal, sys_id, element),
            ));
        }
    }
    cells
        .into_iter()
        .filter(|(k, _, _)| {
            options
                .fields
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|w| w == k))
        })
        .map(|(k, raw, display)| {
            let value = match options.display {
                DisplayValue::False => Value::String(raw),
                DisplayValue::True => Value::String(display),
                DisplayValue::All => json!({ "display_value": display, "value": raw }),
            };
            (k, value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, &str)]) -> Record {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn bodies_become_strings_and_bad_bodies_are_400() {
        let fields = parse_fields(br#"{"impact": 2, "active": true, "description": null, "short_description": "x", "Bad Name": "y"}"#).unwrap();
        assert_eq!(
            fields,
            record(&[
                ("impact", "2"),
                ("active", "true"),
                ("description", ""),
                ("short_description", "x")
            ])
        );
        assert_eq!(parse_fields(b"  ").unwrap(), Record::new());
        for bad in [&b"{not json"[..], b"[1,2]", b"\"text\""] {
            let err = parse_fields(bad).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert_eq!(err.message, "Exception while reading request");
        }
    }

    #[test]
    fn journal_text_lists_entries_newest_first_in_servicenow_format() {
        let journal = vec![
            record(&[
                ("element_id", "a"),
                ("element", "work_notes"),
                ("value", "first"),
                ("sys_created_on", "2026-11-22 10:00:00"),
                ("sys_created_by", "op"),
            ]),
            record(&[
                ("element_id", "b"),
                ("element", "work_notes"),
                ("value", "other ticket"),
                ("sys_created_on", "2026-11-22 10:00:01"),
                ("sys_created_by", "op"),
            ]),
            record(&[
                ("element_id", "a"),
                ("element", "comments"),
                ("value", "to the caller"),
                ("sys_created_on", "2026-11-22 10:00:02"),
                ("sys_created_by", "op"),
            ]),
            record(&[
                ("element_id", "a"),
                ("element", "work_notes"),
                ("value", "second"),
                ("sys_created_on", "2026-11-22 10:00:03"),
                ("sys_created_by", "op"),
            ]),
        ];
        assert_eq!(
            journal_text(&journal, "a", "work_notes"),
            "2026-11-22 10:00:03 - op (Work notes)\nsecond\n\n2026-11-22 10:00:00 - op (Work notes)\nfirst\n\n"
        );
        assert_eq!(
            journal_text(&journal, "a", "comments"),
            "2026-11-22 10:00:02 - op (Additional comments)\nto the caller\n\n"
        );
        assert_eq!(journal_text(&journal, "c", "work_notes"), "");
    }

    #[test]
    fn render_honours_display_value_and_fields() {
        let rec = record(&[
            ("sys_id", "a"),
            ("state", "6"),
            ("priority", "1"),
            ("short_description", "x"),
        ]);
        let journal = vec![record(&[
            ("element_id", "a"),
            ("element", "work_notes"),
            ("value", "n"),
            ("sys_created_on", "t"),
            ("sys_created_by", "op"),
        ])];
        let raw = render(
            Table::Incident,
            &rec,
            &journal,
            &ReadOptions {
                display: DisplayValue::False,
                fields: None,
            },
        );
        assert_eq!(raw["state"], "6");
        assert_eq!(raw["work_notes"], "");
        let shown = render(
            Table::Incident,
            &rec,
            &journal,
            &ReadOptions {
                display: DisplayValue::True,
                fields: None,
            },
        );
        assert_eq!(shown["state"], "Resolved");
        assert_eq!(shown["priority"], "1 - Critical");
        assert_eq!(shown["work_notes"], "t - op (Work notes)\nn\n\n");
        let all = render(
            Table::Incident,
            &rec,
            &journal,
            &ReadOptions {
                display: DisplayValue::All,
                fields: Some(vec!["state".into(), "nope".into()]),
            },
        );
        assert_eq!(all.len(), 1);
        assert_eq!(
            all["state"],
            json!({"display_value": "Resolved", "value": "6"})
        );
    }
}
