//! Loading playbooks: parse (stage one), then validate every step, parameter
//! and template, reporting all problems at once with file:line:col.

use std::collections::HashSet;
use std::path::Path;

use fincorp_api::wire::Severity;
use fincorp_api::yaml::{Diagnostic, Diagnostics, Document};

use crate::actions::{ActionKind, check_params};
use crate::model::{Playbook, RawPlaybook, Step, Trigger};
use crate::template;

/// Loads and validates one playbook file.
pub fn load_file(path: &Path) -> Result<Playbook, Diagnostics> {
    let doc = Document::read(path)?;
    let raw: RawPlaybook = doc.parse()?;
    validate(&doc, raw)
}

/// Loads every `*.yaml` / `*.yml` file of a directory, in name order. Names
/// must be unique. All files are checked before any error is returned.
pub fn load_dir(dir: &Path) -> Result<Vec<Playbook>, Diagnostics> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Diagnostics(vec![Diagnostic {
            level: fincorp_api::yaml::Level::Error,
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

    let mut playbooks = Vec::new();
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    for file in files {
        match load_file(&file) {
            Ok(p) => {
                if !names.insert(p.name.clone()) {
                    let doc = Document::read(&file)?;
                    problems.push(doc.error(
                        "name",
                        format!("another playbook is already named {:?}", p.name),
                    ));
                } else {
                    playbooks.push(p);
                }
            }
            Err(d) => problems.extend(d.0),
        }
    }
    if problems.is_empty() {
        Ok(playbooks)
    } else {
        Err(Diagnostics(problems))
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Stage two: checks a parsed playbook and builds the validated form.
pub(crate) fn validate(doc: &Document, raw: RawPlaybook) -> Result<Playbook, Diagnostics> {
    let mut errors = Vec::new();
    if raw.version != 1 {
        errors.push(doc.error(
            "version",
            format!(
                "unsupported version {} (this build reads version 1)",
                raw.version
            ),
        ));
    }
    if raw.name.trim().is_empty() {
        errors.push(doc.error("name", "name must not be empty"));
    }
    if raw.steps.is_empty() {
        errors.push(doc.error("steps", "a playbook needs at least one step"));
    }

    let env = template::environment();
    let mut seen_ids: Vec<&str> = Vec::new();
    let mut steps = Vec::new();
    for (i, step) in raw.steps.iter().enumerate() {
        let at = |key: &str| {
            if key.is_empty() {
                format!("steps[{i}]")
            } else {
                format!("steps[{i}].{key}")
            }
        };
        if !is_identifier(&step.id) {
            errors.push(doc.error(
                &at("id"),
                format!(
                    "step id {:?} must be letters, digits and _ (and not start with a digit)",
                    step.id
                ),
            ));
        } else if seen_ids.contains(&step.id.as_str()) {
            errors.push(doc.error(&at("id"), format!("duplicate step id {:?}", step.id)));
        }
        let Some(action) = ActionKind::parse(&step.action) else {
            let known: Vec<_> = ActionKind::ALL.iter().map(|k| k.name()).collect();
            errors.push(doc.error(
                &at("action"),
                format!(
                    "unknown action {:?} (known: {})",
                    step.action,
                    known.join(", ")
                ),
            ));
            seen_ids.push(&step.id);
            continue;
        };
        for (key, message) in check_params(action, &step.with) {
            let path = if key.is_empty() {
                at("with")
            } else {
                at(&format!("with.{key}"))
            };
            errors.push(doc.error(&path, message));
        }
        for (key, value) in &step.with {
            check_templates(
                doc,
                &env,
                &at(&format!("with.{key}")),
                value,
                &seen_ids,
                &mut errors,
            );
        }
        seen_ids.push(&step.id);
        steps.push(Step {
            id: step.id.clone(),
            action,
            with: step.with.clone(),
        });
    }

    if errors.is_empty() {
        Ok(Playbook {
            name: raw.name,
            description: raw.description,
            file: doc.file.clone(),
            trigger: Trigger {
                apps: raw.trigger.apps,
                alerts: raw.trigger.alerts,
                min_severity: raw.trigger.min_severity.unwrap_or(Severity::Warning),
            },
            steps,
        })
    } else {
        Err(Diagnostics(errors))
    }
}

/// Every template must compile and read only known roots; `steps.<id>` must
/// name an earlier step.
fn check_templates(
    doc: &Document,
    env: &minijinja::Environment<'_>,
    path: &str,
    value: &serde_json::Value,
    earlier: &[&str],
    errors: &mut Vec<Diagnostic>,
) {
    match value {
        serde_json::Value::String(s) if template::is_template(s) => {
            match template::variables(env, s) {
                Err(e) => errors.push(doc.error(path, format!("template does not compile: {e}"))),
                Ok(vars) => {
                    let mut vars: Vec<_> = vars.into_iter().collect();
                    vars.sort();
                    for var in vars {
                        let mut parts = var.split('.');
                        let root = parts.next().unwrap_or_default();
                        if !template::ROOTS.contains(&root) {
                            errors.push(doc.error(
                                path,
                                format!(
                                    "unknown template variable `{var}` (available: {})",
                                    template::ROOTS.join(", ")
                                ),
                            ));
                        } else if root == "steps" {
                            match parts.next() {
                            Some(id) if earlier.contains(&id) => {}
                            Some(id) => errors.push(doc.error(
                                path,
                                format!("`{var}` refers to step {id:?}, which is not an earlier step"),
                            )),
                            None => {}
                        }
                        }
                    }
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_templates(doc, env, &format!("{path}[{i}]"), v, earlier, errors);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                check_templates(doc, env, &format!("{path}.{k}"), v, earlier, errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn shipped_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/fincorp/playbooks")
    }

    #[test]
    fn every_shipped_playbook_validates() {
        let playbooks = load_dir(&shipped_dir()).unwrap_or_else(|d| panic!("{d}"));
        let hft = playbooks
            .iter()
            .find(|p| p.name == "hft-cpu-reallocation")
            .expect("shipped HFT playbook");
        assert_eq!(hft.steps[0].action, ActionKind::Reallocate);
        assert_eq!(hft.steps[1].action, ActionKind::ServiceNowCreate);
        assert!(
            hft.trigger
                .apps
                .contains(&"FINCORP-APP-HFT-TEST".to_string())
        );
    }

    fn check(text: &str) -> Diagnostics {
        let doc = Document::from_text(Path::new("p.yaml"), text);
        match doc.parse::<RawPlaybook>() {
            Ok(raw) => validate(&doc, raw).expect_err("should be invalid"),
            Err(d) => d,
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_position() {
        let text = "\
version: 1
name: bad
trigger:
  apps: [X]
steps:
  - id: first
    action: reallocate
    with:
      host: \"{{ incident.hots }}\"
      app: X
      resource: disk
      increase_pct: 20
  - id: first
    action: servicenow.create
    with:
      short_description: \"{{ steps.later.result.x }}\"
  - id: later
    action: teleport
";
        let d = check(text);
        let lines: Vec<String> = d.0.iter().map(|d| d.to_string()).collect();
        let all = lines.join("\n");
        assert!(
            all.contains("p.yaml:11:17: error: `resource` must be one of"),
            "{all}"
        );
        assert!(
            all.contains("p.yaml:13:9: error: duplicate step id \"first\""),
            "{all}"
        );
        assert!(
            all.contains("p.yaml:16:26: error: `steps.later.result.x` refers to step \"later\""),
            "{all}"
        );
        assert!(
            all.contains("p.yaml:18:13: error: unknown action \"teleport\""),
            "{all}"
        );
        assert_eq!(d.0.len(), 4, "{all}");
    }

    #[test]
    fn unknown_roots_and_syntax_errors_in_templates_are_located() {
        let text = "\
version: 1
name: t
trigger: {}
steps:
  - id: s
    action: servicenow.create
    with:
      short_description: \"{{ secrets.password }}\"
      description: \"{{ incident.id \"
";
        let all = check(text).to_string();
        assert!(
            all.contains("p.yaml:8:26: error: unknown template variable `secrets.password`"),
            "{all}"
        );
        assert!(
            all.contains("p.yaml:9:20: error: template does not compile"),
            "{all}"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let all = check("version: 1\nname: t\ntrigger: {}\nsteps: []\nretries: 3\n").to_string();
        assert!(
            all.starts_with("p.yaml:5:1: error: unknown field `retries`"),
            "{all}"
        );
    }

    #[test]
    fn duplicate_names_across_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let body = "version: 1\nname: same\ntrigger: {}\nsteps:\n  - id: s\n    action: servicenow.create\n    with: {short_description: x}\n";
        std::fs::write(dir.path().join("a.yaml"), body).unwrap();
        std::fs::write(dir.path().join("b.yaml"), body).unwrap();
        let all = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            all.contains("b.yaml:2:7: error: another playbook is already named \"same\""),
            "{all}"
        );
    }
}
