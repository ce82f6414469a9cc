//! Per-app default fields for new incidents (`assignment_group`, `cmdb_ci`,
//! `caller_id`, `category`, ...), held in the correlator's config and merged
//! into each create request. Pure: no IO.
//!
//! In YAML (the correlator's `integrations.servicenow.fields`, say):
//!
//! ```yaml
//! default:
//!   caller_id: fincorp-operator
//!   category: software
//! apps:
//!   FINCORP-APP-CORE:
//!     assignment_group: Core Banking SRE
//!     cmdb_ci: core-banking
//!     urgency: 1
//! ```
//!
//! Precedence, strongest first: what the request says (a named field such as
//! `urgency` when set, or an `extra` entry), then the app's mapping, then
//! `default`. Values are sent as strings; YAML numbers and booleans are taken
//! as their text (`urgency: 1` is `"1"`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use super::types::{NewIncident, is_field_name};

/// Fields the instance or the client owns, which a mapping may not set.
const RESERVED: &[&str] = &[
    "correlation_id",
    "short_description",
    "work_notes",
    "comments",
    "number",
    "state",
    "active",
    "priority",
    "close_code",
    "close_notes",
    "opened_at",
    "resolved_at",
    "closed_at",
];

/// Default incident fields, for every app and per app name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// Fields for every incident.
    #[serde(default, deserialize_with = "fields")]
    pub default: BTreeMap<String, String>,
    /// Fields per app name (exact, e.g. `FINCORP-APP-CORE`), over `default`.
    #[serde(default, deserialize_with = "app_fields")]
    pub apps: BTreeMap<String, BTreeMap<String, String>>,
}

/// One problem in a mapping, with the key path it is at (e.g.
/// `apps.FINCORP-APP-CORE.state`), for a located config diagnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingProblem {
    pub key_path: String,
    pub message: String,
}

impl FieldMapping {
    /// Every problem at once: field names that cannot be ServiceNow columns,
    /// fields the mapping may not set, impact/urgency outside "1".."3",
    /// empty app names.
    pub fn validate(&self) -> Result<(), Vec<MappingProblem>> {
        let mut problems = Vec::new();
        let mut check = |prefix: &str, fields: &BTreeMap<String, String>| {
            for (name, value) in fields {
                let key_path = format!("{prefix}.{name}");
                if !is_field_name(name) {
                    problems.push(MappingProblem {
                        key_path,
                        message: format!(
                            "{name:?} is not a ServiceNow field name (lowercase a-z, 0-9, _)"
                        ),
                    });
                } else if RESERVED.contains(&name.as_str()) || name.starts_with("sys_") {
                    problems.push(MappingProblem {
                        key_path,
                        message: format!(
                            "{name} is set by FINCORP or the instance and cannot be mapped"
                        ),
                    });
                } else if matches!(name.as_str(), "impact" | "urgency")
                    && !matches!(value.as_str(), "1" | "2" | "3")
                {
                    problems.push(MappingProblem {
                        key_path,
                        message: format!("{name} must be \"1\", \"2\" or \"3\", not {value:?}"),
                    });
                }
            }
        };
        check("default", &self.default);
        for (app, fields) in &self.apps {
            check(&format!("apps.{app}"), fields);
        }
        if self.apps.keys().any(|app| app.trim().is_empty()) {
            problems.push(MappingProblem {
                key_path: "apps".into(),
                message: "an app name must not be empty".into(),
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The mapped fields for an app: `default` overlaid with the app's own.
    /// `None` (an incident without an app) gets `default` only.
    pub fn fields_for(&self, app: Option<&str>) -> BTreeMap<String, String> {
        let mut fields = self.default.clone();
        if let Some(own) = app.and_then(|a| self.apps.get(a)) {
            fields.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        fields
    }

    /// `new` with the mapping merged in. What `new` says wins: a mapped
    /// field is added to `extra` only when `extra` lacks it and the
    /// same-named field of `new` (`description`, `urgency`, `impact`) is
    /// unset.
    pub fn apply(&self, app: Option<&str>, new: &NewIncident) -> NewIncident {
        let mut out = new.clone();
        for (name, value) in self.fields_for(app) {
            let named_is_set = match name.as_str() {
                "description" => new.description.is_some(),
                "urgency" => new.urgency.is_some(),
                "impact" => new.impact.is_some(),
                _ => false,
            };
            if !named_is_set {
                out.extra.entry(name).or_insert(value);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.apps.values().all(BTreeMap::is_empty)
    }
}

/// A YAML/JSON scalar taken as text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Uint(u) => u.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

fn fields<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, v.into_text())).collect())
}

fn app_fields<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, D::Error> {
    let raw = BTreeMap::<String, BTreeMap<String, Scalar>>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(app, fields)| {
            let fields = fields
                .into_iter()
                .map(|(k, v)| (k, v.into_text()))
                .collect();
            (app, fields)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping() -> FieldMapping {
        serde_json::from_value(json!({
            "default": {"caller_id": "fincorp-operator", "category": "software", "urgency": 3},
            "apps": {
                "FINCORP-APP-CORE": {"assignment_group": "Core Banking SRE", "cmdb_ci": "core-banking", "urgency": 1, "u_pci": true},
                "FINCORP-APP-HFT": {"assignment_group": "Trading SRE", "category": "hardware"}
            }
        }))
        .unwrap()
    }

    fn incident() -> NewIncident {
        NewIncident {
            correlation_id: "inc-1".into(),
            short_description: "CPU high".into(),
            ..NewIncident::default()
        }
    }

    #[test]
    fn scalars_become_strings_and_unknown_keys_are_refused() {
        let m = mapping();
        assert_eq!(m.default["urgency"], "3");
        assert_eq!(m.apps["FINCORP-APP-CORE"]["u_pci"], "true");
        assert!(m.validate().is_ok());
        let err = serde_json::from_value::<FieldMapping>(json!({"defaults": {}})).unwrap_err();
        assert!(err.to_string().contains("defaults"), "{err}");
        let err = serde_json::from_value::<FieldMapping>(json!({"default": {"x": null}}));
        assert!(err.is_err(), "null is not a field value");
        assert!(FieldMapping::default().is_empty());
    }

    #[test]
    fn the_app_overrides_the_default_and_the_request_overrides_both() {
        let m = mapping();
        let core = m.apply(Some("FINCORP-APP-CORE"), &incident());
        assert_eq!(core.extra["assignment_group"], "Core Banking SRE");
        assert_eq!(core.extra["cmdb_ci"], "core-banking");
        assert_eq!(core.extra["caller_id"], "fincorp-operator");
        assert_eq!(
            core.extra["urgency"], "1",
            "the app's urgency over the default"
        );
        assert_eq!(core.urgency, None);

        let mut explicit = incident();
        explicit.urgency = Some("2".into());
        explicit
            .extra
            .insert("assignment_group".into(), "Night shift".into());
        let mapped = m.apply(Some("FINCORP-APP-CORE"), &explicit);
        assert_eq!(mapped.urgency.as_deref(), Some("2"));
        assert!(
            !mapped.extra.contains_key("urgency"),
            "a set named field is not shadowed in extra"
        );
        assert_eq!(mapped.extra["assignment_group"], "Night shift");
        assert_eq!(mapped.extra["cmdb_ci"], "core-banking");

        let hft = m.apply(Some("FINCORP-APP-HFT"), &incident());
        assert_eq!(hft.extra["category"], "hardware");
        assert!(!hft.extra.contains_key("cmdb_ci"));
        let unknown = m.apply(Some("FINCORP-APP-UNKNOWN"), &incident());
        assert_eq!(
            unknown.extra.keys().collect::<Vec<_>>(),
            ["caller_id", "category", "urgency"]
        );
        assert_eq!(m.apply(None, &incident()).extra.len(), 3);
    }

    #[test]
    fn validation_reports_every_problem_with_its_key_path() {
        let m: FieldMapping = serde_json::from_value(json!({
            "default": {"Assignment Group": "x", "state": "6", "impact": "high"},
            "apps": {"FINCORP-APP-CORE": {"sys_id": "abc", "cmdb_ci": "ok"}, "": {}}
        }))
        .unwrap();
        let problems = m.validate().unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.key_path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "default.Assignment Group",
                "default.impact",
                "default.state",
                "apps.FINCORP-APP-CORE.sys_id",
                "apps"
            ]
        );
        assert!(problems[1].message.contains("\"1\", \"2\" or \"3\""));
        assert!(problems[2].message.contains("cannot be mapped"));
    }
}
