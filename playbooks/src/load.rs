//! Loading playbooks: parse (stage one), then validate every step, parameter,
//! template, condition, schedule and guardrail, reporting all problems at
//! once with file:line:col, plus warnings for risky automation.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;

use fincorp_api::wire::Severity;
use fincorp_api::yaml::{Diagnostic, Diagnostics, Document, Level};

use crate::actions::{self, check_params};
use crate::model::{
    Budget, Guardrails, IncidentChange, IncidentTrigger, LockScope, OnFailure, Playbook, RawBudget,
    RawPlaybook, RawStep, Retry, Step, Trigger,
};
use crate::template;

/// A playbook and the warnings it drew.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub playbook: Playbook,
    pub warnings: Vec<Diagnostic>,
}

/// Loads and validates one playbook file.
pub fn load_file(path: &Path) -> Result<Loaded, Diagnostics> {
    let doc = Document::read(path)?;
    let raw: RawPlaybook = doc.parse()?;
    validate(&doc, raw)
}

/// Loads every `*.yaml` / `*.yml` file of a directory, in name order. Names
/// must be unique. All files are checked before any error is returned.
pub fn load_dir(dir: &Path) -> Result<Vec<Loaded>, Diagnostics> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            level: Level::Error,
            file: dir.to_owned(),
            line: 1,
            column: 1,
            key_path: String::new(),
            message: format!("cannot read playbook directory: {e}"),
        }])
    })?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();

    let mut loaded: Vec<Loaded> = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match load_file(&file) {
            Ok(l) if loaded.iter().any(|x| x.playbook.name == l.playbook.name) => {
                let doc = Document::read(&file)?;
                problems.push(doc.error(
                    "name",
                    format!("another playbook is already named {:?}", l.playbook.name),
                ));
            }
            Ok(l) => loaded.push(l),
            Err(d) => problems.extend(d.0),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(Diagnostics(problems))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Longest timeout a step may have.
pub(crate) const MAX_STEP_TIMEOUT_MS: i64 = 3_600_000;

struct Checker<'a> {
    doc: &'a Document,
    env: minijinja::Environment<'static>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    scheduled: bool,
    /// `secrets.NAME` read by any template.
    secrets: std::collections::BTreeSet<String>,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, msg: impl Into<String>) {
        self.errors.push(self.doc.error(path, msg));
    }

    fn warn(&mut self, path: &str, msg: impl Into<String>) {
        self.warnings.push(self.doc.warning(path, msg));
    }

    /// Checks the variables a template or expression reads.
    fn check_vars(&mut self, path: &str, vars: HashSet<String>, earlier: &[String]) {
        let mut vars: Vec<_> = vars.into_iter().collect();
        vars.sort();
        for var in vars {
            let mut parts = var.split('.');
            let root = parts.next().unwrap_or_default();
            if !template::ROOTS.contains(&root) {
                self.error(
                    path,
                    format!(
                        "unknown template variable `{var}` (available: {})",
                        template::ROOTS.join(", ")
                    ),
                );
            } else if self.scheduled && template::INCIDENT_ROOTS.contains(&root) {
                self.error(
                    path,
                    format!("`{var}`: a scheduled playbook has no incident or alert"),
                );
            } else if root == "secrets" {
                match parts.next() {
                    Some(name) => {
                        self.secrets.insert(name.to_owned());
                    }
                    None => self.error(path, "name the secret: `secrets.NAME`"),
                }
            } else if root == "steps" {
                match parts.next() {
                    Some(id) if earlier.iter().any(|e| e == id) => {}
                    Some(id) => self.error(
                        path,
                        format!("`{var}` refers to step {id:?}, which is not an earlier step"),
                    ),
                    None => {}
                }
            }
        }
    }

    fn check_templates(&mut self, path: &str, value: &serde_json::Value, earlier: &[String]) {
        match value {
            serde_json::Value::String(s) if template::is_template(s) => {
                match template::variables(&self.env, s) {
                    Err(e) => self.error(path, format!("template does not compile: {e}")),
                    Ok(vars) => self.check_vars(path, vars, earlier),
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    self.check_templates(&format!("{path}[{i}]"), v, earlier);
                }
            }
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    self.check_templates(&format!("{path}.{k}"), v, earlier);
                }
            }
            _ => {}
        }
    }

    fn duration_ms(&mut self, path: &str, d: Option<fincorp_api::config::Duration>) -> Option<i64> {
        let ms = d?.as_millis_i64();
        if ms <= 0 {
            self.error(path, "must be above 0");
            return None;
        }
        Some(ms)
    }

    /// Checks one step; `earlier` are the step ids its templates may read.
    fn step(&mut self, at: &str, s: &RawStep, earlier: &[String], rollback: bool) -> Option<Step> {
        let path = |k: &str| format!("{at}.{k}");
        if !is_identifier(&s.id) {
            self.error(
                &path("id"),
                format!(
                    "step id {:?} must be letters, digits and _ (and not start with a digit)",
                    s.id
                ),
            );
        }
        let action = actions::lookup(&s.action);
        if action.is_none() {
            let known: Vec<_> = actions::registry().iter().map(|a| a.name()).collect();
            self.error(
                &path("action"),
                format!(
                    "unknown action {:?} (known: {})",
                    s.action,
                    known.join(", ")
                ),
            );
        }
        if let Some(a) = action {
            for (key, message) in check_params(a, &s.with) {
                let p = if key.is_empty() {
                    path("with")
                } else {
                    path(&format!("with.{key}"))
                };
                self.error(&p, message);
            }
            if rollback && a.name() == "approval" {
                self.error(&path("action"), "a rollback step cannot wait for approval");
            }
        }
        for (key, value) in &s.with {
            self.check_templates(&path(&format!("with.{key}")), value, earlier);
        }
        if let Some(when) = &s.when {
            match template::expression_variables(&self.env, when) {
                Err(e) => self.error(&path("when"), format!("condition does not compile: {e}")),
                Ok(vars) => self.check_vars(&path("when"), vars, earlier),
            }
        }
        let retry = match &s.retry {
            None => Retry::default(),
            Some(r) => {
                if !(1..=10).contains(&r.attempts) {
                    self.error(&path("retry.attempts"), "attempts must be 1 to 10");
                }
                let backoff_ms = self
                    .duration_ms(&path("retry.backoff"), r.backoff)
                    .unwrap_or(Retry::default().backoff_ms);
                let max_backoff_ms = self
                    .duration_ms(&path("retry.max_backoff"), r.max_backoff)
                    .unwrap_or(Retry::default().max_backoff_ms)
                    .max(backoff_ms);
                Retry {
                    attempts: r.attempts.clamp(1, 10),
                    backoff_ms,
                    max_backoff_ms,
                }
            }
        };
        let timeout_ms = self.duration_ms(&path("timeout"), s.timeout);
        if timeout_ms.is_some_and(|t| t > MAX_STEP_TIMEOUT_MS) {
            self.error(&path("timeout"), "a step may take at most 1h");
        }
        let on_failure = match s.on_failure.as_deref() {
            None | Some("abort") => OnFailure::Abort,
            Some("continue") => OnFailure::Continue,
            Some(other) => match other.strip_prefix("goto:") {
                Some(target) if !rollback => OnFailure::Goto(target.trim().to_owned()),
                Some(_) => {
                    self.error(&path("on_failure"), "rollback steps cannot goto");
                    OnFailure::Abort
                }
                None => {
                    self.error(
                        &path("on_failure"),
                        format!(
                            "on_failure must be abort, continue or goto:STEP_ID, not {other:?}"
                        ),
                    );
                    OnFailure::Abort
                }
            },
        };
        action?;
        Some(Step {
            id: s.id.clone(),
            action: s.action.clone(),
            with: s.with.clone(),
            when: s.when.clone(),
            retry,
            timeout_ms,
            on_failure,
        })
    }

    fn budget(&mut self, path: &str, b: &Option<RawBudget>) -> Option<Budget> {
        let b = b.as_ref()?;
        if b.max == 0 {
            self.error(
                &format!("{path}.max"),
                "max must be at least 1 (remove the playbook to disable it)",
            );
        }
        let per_ms = self.duration_ms(&format!("{path}.per"), Some(b.per))?;
        Some(Budget {
            max: b.max.max(1),
            per_ms,
        })
    }
}

/// Stage two: checks a parsed playbook and builds the validated form.
pub(crate) fn validate(doc: &Document, raw: RawPlaybook) -> Result<Loaded, Diagnostics> {
    let t = &raw.trigger;
    let scheduled = t.schedule.is_some();
    let mut c = Checker {
        doc,
        env: template::environment(),
        errors: vec![],
        warnings: vec![],
        scheduled,
        secrets: Default::default(),
    };
    if raw.version != 1 {
        c.error(
            "version",
            format!(
                "unsupported version {} (this build reads version 1)",
                raw.version
            ),
        );
    }
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
    {
        c.error(
            "name",
            "name must be letters, digits, - _ and . (it appears in URLs and logs)",
        );
    }

    // Trigger: incident conditions or a schedule, not both.
    let trigger = match &t.schedule {
        Some(text) => {
            let conditions = !t.apps.is_empty()
                || !t.alerts.is_empty()
                || !t.sources.is_empty()
                || t.min_severity.is_some()
                || t.on.is_some();
            if conditions {
                c.error(
                    "trigger",
                    "a trigger is either a schedule or incident conditions, not both",
                );
            }
            match cron::Schedule::from_str(text) {
                Ok(s) => Some(Trigger::Schedule {
                    text: text.clone(),
                    schedule: Box::new(s),
                }),
                Err(e) => {
                    c.error("trigger.schedule", format!("invalid cron schedule {text:?}: {e} (six or seven fields, seconds first, e.g. \"0 0 2 * * Sun\")"));
                    None
                }
            }
        }
        None => {
            let mut on = Vec::new();
            for (i, name) in
                t.on.clone()
                    .unwrap_or_else(|| vec!["opened".into(), "alert_joined".into()])
                    .iter()
                    .enumerate()
            {
                match IncidentChange::parse(name) {
                    Some(ch) => on.push(ch),
                    None => c.error(
                        &format!("trigger.on[{i}]"),
                        format!(
                            "unknown incident change {name:?} (opened, alert_joined, reopened, resolved)"
                        ),
                    ),
                }
            }
            Some(Trigger::Incident(IncidentTrigger {
                apps: t.apps.clone(),
                alerts: t.alerts.clone(),
                sources: t.sources.clone(),
                min_severity: t.min_severity.unwrap_or(Severity::Warning),
                on,
            }))
        }
    };

    // Guardrails.
    let g = &raw.guardrails;
    let per_playbook = c.budget(
        "guardrails.rate_limit.per_playbook",
        &g.rate_limit
            .as_ref()
            .and_then(|r| r.per_playbook.as_ref().map(clone_budget)),
    );
    let per_target = c.budget(
        "guardrails.rate_limit.per_target",
        &g.rate_limit
            .as_ref()
            .and_then(|r| r.per_target.as_ref().map(clone_budget)),
    );
    let lock = match g.lock.as_deref() {
        None | Some("app") => LockScope::App,
        Some("host") => LockScope::Host,
        Some("none") => LockScope::None,
        Some(other) => {
            c.error(
                "guardrails.lock",
                format!("lock must be app, host or none, not {other:?}"),
            );
            LockScope::App
        }
    };
    if g.max_hosts == Some(0) {
        c.error("guardrails.max_hosts", "max_hosts must be at least 1");
    }
    let approval_timeout_ms = match &g.approval {
        Some(a) if a.required => Some(
            c.duration_ms("guardrails.approval.timeout", a.timeout)
                .unwrap_or(actions::approval::DEFAULT_TIMEOUT_MS),
        ),
        _ => None,
    };
    let guardrails = Guardrails {
        per_playbook,
        per_target,
        lock,
        max_hosts: g.max_hosts.unwrap_or(1).max(1),
        max_depth: g.max_depth.unwrap_or(1),
        approval_timeout_ms,
        dry_run: g.dry_run,
    };

    // Steps, then rollback steps (which may read any main step's result).
    if raw.steps.is_empty() {
        c.error("steps", "a playbook needs at least one step");
    }
    let mut ids: Vec<String> = Vec::new();
    let mut steps = Vec::new();
    for (i, s) in raw.steps.iter().enumerate() {
        if ids.contains(&s.id) {
            c.error(
                &format!("steps[{i}].id"),
                format!("duplicate step id {:?}", s.id),
            );
        }
        if let Some(step) = c.step(&format!("steps[{i}]"), s, &ids, false) {
            steps.push(step);
        }
        ids.push(s.id.clone());
    }
    let main_ids = ids.clone();
    let mut rollback = Vec::new();
    for (i, s) in raw.rollback.iter().enumerate() {
        if ids.contains(&s.id) {
            c.error(
                &format!("rollback[{i}].id"),
                format!("duplicate step id {:?}", s.id),
            );
        }
        if let Some(step) = c.step(&format!("rollback[{i}]"), s, &main_ids, true) {
            rollback.push(step);
        }
        ids.push(s.id.clone());
    }
    // goto only forward, so every run ends.
    for (i, s) in steps.iter().enumerate() {
        if let OnFailure::Goto(target) = &s.on_failure {
            match main_ids.iter().position(|x| x == target) {
                Some(j) if j > i => {}
                Some(_) => c.error(
                    &format!("steps[{i}].on_failure"),
                    format!("goto:{target} must jump forward (to a later step), so every run ends"),
                ),
                None => c.error(
                    &format!("steps[{i}].on_failure"),
                    format!("goto:{target}: no such step"),
                ),
            }
        }
    }

    // Warnings for risky automation.
    let mutating: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.action().mutating())
        .map(|(i, _)| i)
        .collect();
    if !mutating.is_empty() {
        if per_playbook.is_none() && per_target.is_none() {
            c.warn("guardrails", "mutating automation without a rate limit (guardrails.rate_limit): a loop could act without bound");
        }
        if lock == LockScope::None {
            c.warn("guardrails.lock", "mutating automation without a lock: two playbooks could act on the same target at once");
        }
        for &i in &mutating {
            let s = &steps[i];
            let approved_before =
                approval_timeout_ms.is_some() || steps[..i].iter().any(|p| p.action == "approval");
            if !s.action().reversible() && !approved_before {
                c.warn(&format!("steps[{i}].action"), format!("{} cannot be undone and runs without an approval (guardrails.approval or an approval step)", s.action));
            }
        }
    }

    if !c.errors.is_empty() {
        return Err(Diagnostics(c.errors));
    }
    Ok(Loaded {
        playbook: Playbook {
            name: raw.name,
            description: raw.description,
            file: doc.file.clone(),
            trigger: trigger.expect("no errors means a trigger"),
            vars: raw.vars,
            guardrails,
            steps,
            rollback,
            secrets: c.secrets.into_iter().collect(),
        },
        warnings: c.warnings,
    })
}

fn clone_budget(b: &RawBudget) -> RawBudget {
    RawBudget {
        max: b.max,
        per: b.per,
    }
}
