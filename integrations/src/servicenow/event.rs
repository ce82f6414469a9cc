//! ServiceNow Event Management events (`servicenow.event`): one record of
//! the `em_event` table as `POST /api/global/em/jsonv2` takes it. Pure:
//! building and checking records, no IO.
//!
//! Followed: ServiceNow's "Pushing events to the instance using web service
//! API" (Event Management): the body is `{"records": [...]}`; each record has
//! `source`, `event_class`, `node`, `resource`, `metric_name`, `type`,
//! `message_key`, `severity` (1 Critical .. 5 OK, 0 Clear), `description`,
//! `additional_info` (a *string* holding a JSON object) and `time_of_event`
//! (`yyyy-MM-dd HH:mm:ss`, GMT). Every value is sent as a JSON string.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use fincorp_api::UnixMs;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::error::ServiceNowError;
use super::types::require;

/// An event's severity as Event Management numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSeverity {
    /// "0": the condition has cleared; closes the alert.
    Clear,
    /// "1"
    Critical,
    /// "2"
    Major,
    /// "3"
    Minor,
    /// "4"
    Warning,
    /// "5"
    Ok,
}

impl EventSeverity {
    /// The value sent: "0" .. "5".
    pub fn as_str(self) -> &'static str {
        match self {
            EventSeverity::Clear => "0",
            EventSeverity::Critical => "1",
            EventSeverity::Major => "2",
            EventSeverity::Minor => "3",
            EventSeverity::Warning => "4",
            EventSeverity::Ok => "5",
        }
    }
}

impl fmt::Display for EventSeverity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventSeverity {
    type Err = ServiceNowError;

    /// "0".."5", or the names (`clear`, `critical`, `major`, `minor`,
    /// `warning`, `ok`, any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "0" | "clear" => EventSeverity::Clear,
            "1" | "critical" => EventSeverity::Critical,
            "2" | "major" => EventSeverity::Major,
            "3" | "minor" => EventSeverity::Minor,
            "4" | "warning" => EventSeverity::Warning,
            "5" | "ok" => EventSeverity::Ok,
            _ => {
                return Err(ServiceNowError::InvalidInput {
                    field: "severity",
                    reason: format!(
                        "{s:?} is not an Event Management severity (0 clear, 1 critical, 2 major, 3 minor, 4 warning, 5 ok)"
                    ),
                });
            }
        })
    }
}

impl Serialize for EventSeverity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventSeverity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One event for Event Management.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmEvent {
    /// The event source type, e.g. `FINCORP`. Required.
    pub source: String,
    /// The specific instance of the source, e.g. `fincorp-correlator on ny-ops-01`.
    #[serde(default)]
    pub event_class: Option<String>,
    /// The host the event is about (name, FQDN, IP or MAC); binds the event
    /// to a CMDB CI. Required.
    pub node: String,
    /// The event type, used for grouping (`CPU`, `Memory`, `Failover`).
    #[serde(rename = "type", default)]
    pub event_type: String,
    /// The device or application on the node (`FINCORP-APP-HFT`).
    #[serde(default)]
    pub resource: String,
    /// The metric that triggered it (`cpu_pct`).
    #[serde(default)]
    pub metric_name: String,
    pub severity: EventSeverity,
    #[serde(default)]
    pub description: String,
    /// De-duplication key: events with the same key update one alert.
    /// Empty lets the instance use source+node+type+resource+metric_name.
    #[serde(default)]
    pub message_key: String,
    /// Supplemental key/values, sent as a JSON-encoded string.
    #[serde(default)]
    pub additional_info: Map<String, Value>,
    /// When it happened, in ms since the epoch; sent as
    /// `YYYY-MM-DD HH:MM:SS` UTC.
    pub time_of_event: UnixMs,
}

impl EmEvent {
    /// Checks what can be checked without the instance.
    pub fn validate(&self) -> Result<(), ServiceNowError> {
        require("source", &self.source)?;
        require("node", &self.node)?;
        if self.time_of_event < 0 {
            return Err(ServiceNowError::InvalidInput {
                field: "time_of_event",
                reason: format!("{} is before 1970", self.time_of_event),
            });
        }
        Ok(())
    }

    /// The record exactly as sent: every value a JSON string.
    pub fn record(&self) -> Value {
        let mut record = Map::new();
        let mut put = |k: &str, v: &str| {
            record.insert(k.to_owned(), Value::String(v.to_owned()));
        };
        put("source", &self.source);
        if let Some(class) = &self.event_class {
            put("event_class", class);
        }
        put("node", &self.node);
        put("type", &self.event_type);
        put("resource", &self.resource);
        put("metric_name", &self.metric_name);
        put("severity", self.severity.as_str());
        put("description", &self.description);
        put("message_key", &self.message_key);
        put(
            "additional_info",
            &Value::Object(self.additional_info.clone()).to_string(),
        );
        put("time_of_event", &glide_utc(self.time_of_event));
        Value::Object(record)
    }
}

/// The body of `POST /api/global/em/jsonv2` for these events.
pub(crate) fn events_body(events: &[EmEvent]) -> Value {
    json!({ "records": events.iter().map(EmEvent::record).collect::<Vec<_>>() })
}

/// Unix ms as ServiceNow writes date-times: `YYYY-MM-DD HH:MM:SS`, UTC.
/// Negative values are clamped to the epoch (callers validate first).
pub fn glide_utc(ms: UnixMs) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    // "2026-11-22T10:00:00Z" → "2026-11-22 10:00:00"
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

/// What Event Management answered: ServiceNow answers
/// `{"result": {"Default Bulk Endpoint": "N events were inserted"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAccepted {
    /// N, when the answer says it.
    pub inserted: Option<u64>,
    /// The answer's text, e.g. `1 events were inserted`.
    pub message: String,
}

/// Reads the jsonv2 answer.
pub(crate) fn events_accepted(doc: &Value) -> Result<EventsAccepted, String> {
    let Some(Value::Object(result)) = doc.get("result") else {
        return Err("the response has no \"result\" object".into());
    };
    let message = result
        .values()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    let inserted = message
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|_| message.contains("inserted"));
    Ok(EventsAccepted { inserted, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> EmEvent {
        EmEvent {
            source: "FINCORP".into(),
            event_class: None,
            node: "ny-core-01".into(),
            event_type: "CPU".into(),
            resource: "FINCORP-APP-CORE".into(),
            metric_name: "cpu_pct".into(),
            severity: EventSeverity::Critical,
            description: "CPU above 95%".into(),
            message_key: "inc-1:cpu".into(),
            additional_info: serde_json::from_value(json!({"cpu_pct": 97.5, "incident": "inc-1"}))
                .unwrap(),
            time_of_event: 1_795_341_600_123, // 2026-11-22 10:00:00.123 UTC
        }
    }

    #[test]
    fn the_record_is_all_strings_with_stringified_additional_info() {
        let record = event().record();
        let obj = record.as_object().unwrap();
        assert!(obj.values().all(Value::is_string), "{record}");
        assert_eq!(record["severity"], "1");
        assert_eq!(record["type"], "CPU");
        assert_eq!(record["time_of_event"], "2026-11-22 10:00:00");
        assert!(!obj.contains_key("event_class"));
        let info: Value =
            serde_json::from_str(record["additional_info"].as_str().unwrap()).unwrap();
        assert_eq!(info, json!({"cpu_pct": 97.5, "incident": "inc-1"}));
        let with_class = EmEvent {
            event_class: Some("fincorp-correlator".into()),
            ..event()
        };
        assert_eq!(with_class.record()["event_class"], "fincorp-correlator");
        assert_eq!(
            events_body(&[event(), event()])["records"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn severities_parse_from_numbers_and_names() {
        for (text, sev) in [
            ("0", EventSeverity::Clear),
            ("clear", EventSeverity::Clear),
            ("1", EventSeverity::Critical),
            ("Major", EventSeverity::Major),
            ("3", EventSeverity::Minor),
            ("WARNING", EventSeverity::Warning),
            ("5", EventSeverity::Ok),
        ] {
            assert_eq!(text.parse::<EventSeverity>().unwrap(), sev, "{text}");
        }
        for bad in ["6", "-1", "", "info"] {
            assert!(bad.parse::<EventSeverity>().is_err(), "{bad}");
        }
        let parsed: EmEvent = serde_json::from_value(json!({
            "source": "FINCORP", "node": "n", "severity": "critical", "time_of_event": 0
        }))
        .unwrap();
        assert_eq!(parsed.severity, EventSeverity::Critical);
        assert_eq!(serde_json::to_value(parsed.severity).unwrap(), "1");
    }

    #[test]
    fn validation_needs_a_source_a_node_and_a_time_after_1970() {
        assert!(event().validate().is_ok());
        for (bad, field) in [
            (
                EmEvent {
                    source: " ".into(),
                    ..event()
                },
                "source",
            ),
            (
                EmEvent {
                    node: String::new(),
                    ..event()
                },
                "node",
            ),
            (
                EmEvent {
                    time_of_event: -1,
                    ..event()
                },
                "time_of_event",
            ),
        ] {
            match bad.validate() {
                Err(ServiceNowError::InvalidInput { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_answer_is_read_for_the_inserted_count() {
        let answer = json!({"result": {"Default Bulk Endpoint": "2 events were inserted"}});
        assert_eq!(
            events_accepted(&answer).unwrap(),
            EventsAccepted {
                inserted: Some(2),
                message: "2 events were inserted".into()
            }
        );
        let odd = json!({"result": {"x": "accepted"}});
        assert_eq!(events_accepted(&odd).unwrap().inserted, None);
        assert!(events_accepted(&json!({"result": []})).is_err());
    }
}
