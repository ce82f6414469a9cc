//! Templates in a step's `with` and conditions in its `when`: MiniJinja over
//! the run context (`incident`, `alert`, `alerts`, `steps.<id>.result`,
//! `vars`, `secrets`, `playbook`, `run`).
//!
//! Undefined variables are errors, at validation (by name) and at render time
//! (by value), so a typo never sends an empty string to a real system.
//! Secrets are rendered for execution only: what is stored or planned is
//! rendered with `secrets.NAME` shown as `<secret:NAME>`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use minijinja::value::{Object, ObjectRepr};
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The names a template may start with.
pub const ROOTS: &[&str] = &[
    "incident", "alert", "alerts", "steps", "vars", "secrets", "playbook", "run",
];
/// Roots that only exist for runs triggered by an incident.
pub const INCIDENT_ROOTS: &[&str] = &["incident", "alert", "alerts"];

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

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.kind().to_string();
    if let Some(detail) = e.detail() {
        msg.push_str(": ");
        msg.push_str(detail);
    }
    msg
}

/// Compiles a template and returns the variables it reads (dotted paths such
/// as `steps.raise_cpu.result`), or the syntax error.
pub fn variables(env: &Environment<'_>, source: &str) -> Result<HashSet<String>, String> {
    env.template_from_str(source)
        .map(|t| t.undeclared_variables(true))
        .map_err(|e| describe(&e))
}

/// Compiles a `when` expression and returns the variables it reads.
pub fn expression_variables(env: &Environment<'_>, expr: &str) -> Result<HashSet<String>, String> {
    env.compile_expression(expr)
        .map(|e| e.undeclared_variables(true))
        .map_err(|e| describe(&e))
}

/// What templates see about the incident.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// `None` for scheduled runs.
    pub incident: Option<IncidentCtx>,
    /// The alert that triggered the run.
    pub alert: Option<AlertCtx>,
    pub alerts: Vec<AlertCtx>,
    /// `steps.<id>.result` for each finished step.
    pub steps: BTreeMap<String, Value>,
    pub vars: Map<String, Value>,
    #[serde(skip)]
    pub secrets: BTreeMap<String, String>,
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

/// For plans: a step result that does not exist yet renders as
/// `<steps.ID.result.FIELD>`, whatever is read from it.
#[derive(Debug)]
struct Pending(String);

impl Object for Pending {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        Some(minijinja::Value::from_object(Pending(format!(
            "{}.{key}",
            self.0
        ))))
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

/// Which rendering: for execution (secrets in clear), for storage and plans
/// (secrets redacted; in plans, unknown step results as placeholders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Execute,
    Record,
    Plan,
}

impl RunContext {
    fn value(&self, mode: Mode, pending_steps: &[String]) -> minijinja::Value {
        let mut v = serde_json::to_value(self).expect("contexts serialise");
        let secrets: Map<String, Value> = self
            .secrets
            .iter()
            .map(|(k, s)| {
                let shown = if mode == Mode::Execute {
                    s.clone()
                } else {
                    format!("<secret:{k}>")
                };
                (k.clone(), Value::String(shown))
            })
            .collect();
        v["secrets"] = Value::Object(secrets);
        let mut ctx: BTreeMap<String, minijinja::Value> = match v {
            Value::Object(m) => m
                .into_iter()
                .map(|(k, v)| (k, minijinja::Value::from(minijinja::value::Serde(v))))
                .collect(),
            _ => unreachable!("a struct serialises to an object"),
        };
        if mode == Mode::Plan {
            let mut steps: BTreeMap<String, minijinja::Value> = self
                .steps
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        minijinja::Value::from(minijinja::value::Serde(v)),
                    )
                })
                .collect();
            for id in pending_steps {
                let mut result = BTreeMap::new();
                result.insert(
                    "result",
                    minijinja::Value::from_object(Pending(format!("steps.{id}.result"))),
                );
                steps.insert(id.clone(), minijinja::Value::from(result));
            }
            ctx.insert("steps".into(), minijinja::Value::from(steps));
        }
        minijinja::Value::from(ctx)
    }
}

/// A template that failed to render, with where it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot render {key}: {message}")]
pub struct RenderError {
    pub key: String,
    pub message: String,
}

/// Renders every string in `with` against `ctx`. Non-strings pass through.
/// `pending_steps` (plan mode) are steps whose results are not known yet.
pub fn render(
    env: &Environment<'_>,
    with: &Map<String, Value>,
    ctx: &RunContext,
    mode: Mode,
    pending_steps: &[String],
) -> Result<Map<String, Value>, RenderError> {
    let ctx = ctx.value(mode, pending_steps);
    with.iter()
        .map(|(k, v)| Ok((k.clone(), render_value(env, &format!("with.{k}"), v, &ctx)?)))
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

/// Evaluates a `when` expression. In plan mode an expression that reads a
/// result not known yet cannot be decided: `Ok(None)`.
pub fn condition(
    env: &Environment<'_>,
    expr: &str,
    ctx: &RunContext,
    mode: Mode,
    pending_steps: &[String],
) -> Result<Option<bool>, RenderError> {
    let err = |e: minijinja::Error| RenderError {
        key: "when".into(),
        message: describe(&e),
    };
    let compiled = env.compile_expression(expr).map_err(err)?;
    if mode == Mode::Plan {
        let reads_pending = compiled.undeclared_variables(true).iter().any(|v| {
            pending_steps
                .iter()
                .any(|p| v.starts_with(&format!("steps.{p}")))
        });
        if reads_pending {
            return Ok(None);
        }
    }
    compiled
        .eval(ctx.value(mode, pending_steps))
        .map(|v| Some(v.is_true()))
        .map_err(err)
}

/// A realistic incident context for `playbook plan --sample`.
pub fn sample_context(playbook: &str, app: Option<&str>) -> RunContext {
    let app = app.unwrap_or("FINCORP-APP-HFT").to_owned();
    RunContext {
        incident: Some(IncidentCtx {
            id: "fc-sample-1".into(),
            host: "hft-ny-01".into(),
            app: Some(app.clone()),
            severity: "critical".into(),
            state: "open".into(),
            title: format!("cpu_high on {app} (hft-ny-01)"),
            opened_at: "2026-11-22T10:00:00.000Z".into(),
            opened_at_ms: 1_795_341_600_000,
        }),
        alert: Some(AlertCtx {
            name: "cpu_high".into(),
            source: "agent".into(),
            host: "hft-ny-01".into(),
            app: Some(app.clone()),
            severity: "critical".into(),
            status: "firing".into(),
            metric: "cpu".into(),
            value: 91.26,
            threshold: 80.0,
            summary: format!("{app} cpu 91.3 > 80 for 2s on host hft-ny-01"),
            fingerprint: "0f3c1a9b2d4e5f60".into(),
            starts_at: "2026-11-22T09:59:58.000Z".into(),
        }),
        alerts: vec![],
        steps: BTreeMap::new(),
        vars: Map::new(),
        secrets: BTreeMap::new(),
        playbook: PlaybookCtx {
            name: playbook.into(),
        },
        run: RunCtx {
            id: "run-sample".into(),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> RunContext {
        let mut c = sample_context("p", None);
        c.secrets.insert("hook_token".into(), "s3cret".into());
        c.vars.insert("pct".into(), Value::from(20));
        c
    }

    fn map(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn renders_strings_and_keeps_other_values() {
        let with = map(
            r#"{"app":"{{ alert.app }}","pct":"{{ vars.pct }}","msg":"{{ alert.value | round(1) }}% on {{ incident.host }}","n":20}"#,
        );
        let out = render(&environment(), &with, &sample(), Mode::Execute, &[]).unwrap();
        assert_eq!(out["app"], "FINCORP-APP-HFT");
        assert_eq!(out["pct"], "20");
        assert_eq!(out["msg"], "91.3% on hft-ny-01");
        assert_eq!(out["n"], 20);
    }

    #[test]
    fn secrets_are_clear_only_for_execution() {
        let with = map(r#"{"headers":{"Authorization":"Bearer {{ secrets.hook_token }}"}}"#);
        let env = environment();
        assert_eq!(
            render(&env, &with, &sample(), Mode::Execute, &[]).unwrap()["headers"]["Authorization"],
            "Bearer s3cret"
        );
        assert_eq!(
            render(&env, &with, &sample(), Mode::Record, &[]).unwrap()["headers"]["Authorization"],
            "Bearer <secret:hook_token>"
        );
    }

    #[test]
    fn unknown_results_render_as_placeholders_in_plans_and_fail_otherwise() {
        let with = map(
            r#"{"note":"raised {{ steps.raise.result.before }} -> {{ steps.raise.result.after }}"}"#,
        );
        let env = environment();
        let planned = render(&env, &with, &sample(), Mode::Plan, &["raise".into()]).unwrap();
        assert_eq!(
            planned["note"],
            "raised <steps.raise.result.before> -> <steps.raise.result.after>"
        );
        let err = render(&env, &with, &sample(), Mode::Execute, &[]).unwrap_err();
        assert_eq!(err.key, "with.note");
        assert!(err.message.contains("undefined"), "{err}");
    }

    #[test]
    fn conditions_evaluate_and_are_undecided_on_pending_results() {
        let env = environment();
        assert_eq!(
            condition(&env, "alert.value > 90", &sample(), Mode::Execute, &[]),
            Ok(Some(true))
        );
        assert_eq!(
            condition(&env, "alert.value > 95", &sample(), Mode::Execute, &[]),
            Ok(Some(false))
        );
        assert_eq!(
            condition(
                &env,
                "steps.a.result.ok",
                &sample(),
                Mode::Plan,
                &["a".into()]
            ),
            Ok(None)
        );
        assert!(condition(&env, "alert.value >", &sample(), Mode::Execute, &[]).is_err());
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
        assert!(
            expression_variables(&env, "vars.x > 1")
                .unwrap()
                .contains("vars.x")
        );
    }
}
