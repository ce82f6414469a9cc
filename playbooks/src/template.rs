//! Templates in a step's `with`: MiniJinja expressions over the run context
//! (`incident`, `alert`, `alerts`, `steps.<id>.result`, `playbook`, `run`).
//!
//! Undefined variables are errors, at validation (by name) and at render time
//! (by value), so a typo never sends an empty string to a real system.

use std::collections::{BTreeMap, HashSet};

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

/// The names a template may start with.
pub const ROOTS: &[&str] = &["incident", "alert", "alerts", "steps", "playbook", "run"];

/// The template environment: strict about undefined values, standard filters.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// True when `s` contains template syntax.
pub fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Compiles a template and returns the variables it reads (dotted paths such
/// as `steps.raise_cpu.result`), or the syntax error.
pub fn variables(env: &Environment<'_>, source: &str) -> Result<HashSet<String>, String> {
    env.template_from_str(source)
        .map(|t| t.undeclared_variables(true))
        .map_err(|e| describe(&e))
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

/// What templates see about the incident.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IncidentCtx {
    pub id: String,
    pub host: String,
    pub app: Option<String>,
    pub severity: String,
    pub state: String,
    pub title: String,
    /// RFC 3339.
    pub opened_at: String,
    pub opened_at_ms: i64,
}

/// What templates see about an alert.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertCtx {
    pub name: String,
    pub source: String,
    pub host: String,
    pub app: Option<String>,
    pub severity: String,
    pub status: String,
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    pub summary: String,
    pub fingerprint: String,
    /// RFC 3339.
    pub starts_at: String,
}

/// Everything a run's templates can read. `steps` grows as steps finish.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunContext {
    pub incident: IncidentCtx,
    /// The alert that triggered the run.
    pub alert: AlertCtx,
    pub alerts: Vec<AlertCtx>,
    /// `steps.<id>.result` for each finished step.
    pub steps: BTreeMap<String, Value>,
    pub playbook: PlaybookCtx,
    pub run: RunCtx,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlaybookCtx {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunCtx {
    pub id: String,
}

/// A template that failed to render, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot render with.{key}: {message}")]
pub struct RenderError {
    pub key: String,
    pub message: String,
}

/// Renders every string in `with` against `ctx`. Non-strings pass through.
pub fn render(
    env: &Environment<'_>,
    with: &Map<String, Value>,
    ctx: &RunContext,
) -> Result<Map<String, Value>, RenderError> {
    let ctx = minijinja::Value::from(minijinja::value::Serde(ctx));
    with.iter()
        .map(|(k, v)| Ok((k.clone(), render_value(env, k, v, &ctx)?)))
        .collect()
}

fn render_value(
    env: &Environment<'_>,
    key: &str,
    value: &Value,
    ctx: &minijinja::Value,
) -> Result<Value, RenderError> {
    Ok(match value {
        Value::String(s) if is_template(s) => {
            Value::String(env.render_str(s, ctx).map_err(|e| RenderError {
                key: key.to_owned(),
                message: describe(&e),
            })?)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_value(env, &format!("{key}[{i}]"), v, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(env, &format!("{key}.{k}"), v, ctx)?)))
                .collect::<Result<_, RenderError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_context() -> RunContext {
        RunContext {
            incident: IncidentCtx {
                id: "fc-1a2b-7".into(),
                host: "web01".into(),
                app: Some("FINCORP-APP-HFT".into()),
                severity: "critical".into(),
                state: "open".into(),
                title: "cpu_high on FINCORP-APP-HFT".into(),
                opened_at: "2026-11-22T10:00:00.000Z".into(),
                opened_at_ms: 1_795_000_000_000,
            },
            alert: AlertCtx {
                name: "cpu_high".into(),
                source: "agent".into(),
                host: "web01".into(),
                app: Some("FINCORP-APP-HFT".into()),
                severity: "critical".into(),
                status: "firing".into(),
                metric: "cpu".into(),
                value: 91.26,
                threshold: 80.0,
                summary: "FINCORP-APP-HFT cpu 91.3 > 80".into(),
                fingerprint: "abc".into(),
                starts_at: "2026-11-22T09:59:58.000Z".into(),
            },
            alerts: vec![],
            steps: BTreeMap::new(),
            playbook: PlaybookCtx { name: "p".into() },
            run: RunCtx { id: "r1".into() },
        }
    }

    #[test]
    fn renders_strings_and_keeps_other_values() {
        let env = environment();
        let with: Map<String, Value> = serde_json::from_str(
            r#"{"app":"{{ alert.app }}","pct":20,"msg":"{{ alert.value | round(1) }}% on {{ incident.host }}","plain":"x"}"#,
        )
        .unwrap();
        let out = render(&env, &with, &sample_context()).unwrap();
        assert_eq!(out["app"], "FINCORP-APP-HFT");
        assert_eq!(out["pct"], 20);
        assert_eq!(out["msg"], "91.3% on web01");
        assert_eq!(out["plain"], "x");
    }

    #[test]
    fn undefined_values_fail_to_render_naming_the_key() {
        let env = environment();
        let with: Map<String, Value> =
            serde_json::from_str(r#"{"note":"{{ steps.nope.result.x }}"}"#).unwrap();
        let err = render(&env, &with, &sample_context()).unwrap_err();
        assert_eq!(err.key, "note");
        assert!(err.message.contains("undefined"), "{err}");
    }

    #[test]
    fn variables_lists_dotted_paths_and_reports_syntax_errors() {
        let env = environment();
        let vars = variables(&env, "{{ steps.a.result.x }} {{ incident.id }}").unwrap();
        assert!(
            vars.contains("steps.a.result.x") && vars.contains("incident.id"),
            "{vars:?}"
        );
        assert!(variables(&env, "{{ incident.id ").is_err());
    }
}
