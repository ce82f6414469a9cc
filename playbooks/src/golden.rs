//! Golden files: the validator's diagnostics for a corpus of broken (and
//! risky) playbooks, one problem class per file in `test_data/validate`;
//! the dry-run plan of every shipped playbook in `test_data/plans` (against
//! the sample HFT incident, or the playbook's own sample incident in
//! `test_data/plans/NAME.sample.json` when it has one); and the
//! checked-in JSON Schema in `schema/playbook.schema.json`. Run with
//! `UPDATE_EXPECT=1` to rewrite them after a deliberate change, then review
//! the diff.

use std::path::{Path, PathBuf};

use fincorp_api::yaml::Document;

use crate::plan::{PlanOnlyEnv, plan, render_text};
use crate::template::sample_context;
use crate::{load_file, model};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped example playbooks.
fn shipped_dir() -> PathBuf {
    manifest().join("../packaging/etc/fincorp/playbooks")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no playbooks in {}", dir.display());
    files
}

/// Diagnostics with paths relative to the crate, so goldens are portable.
fn relative(text: String) -> String {
    let root = format!("{}/", manifest().display());
    text.replace(&root, "")
}

#[test]
fn the_validator_reports_each_problem_class_with_its_position() {
    let dir = manifest().join("test_data/validate");
    for file in yaml_files(&dir) {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let actual = match load_file(&file) {
            Ok(loaded) => {
                assert!(
                    name.starts_with("warn_"),
                    "{name}: expected errors, but it loaded"
                );
                assert!(!loaded.warnings.is_empty(), "{name}: expected a warning");
                loaded
                    .warnings
                    .iter()
                    .map(|w| format!("{w}\n"))
                    .collect::<String>()
            }
            Err(d) => {
                assert!(
                    !name.starts_with("warn_"),
                    "{name}: expected only warnings, got:\n{d}"
                );
                assert!(d.has_errors(), "{name}");
                format!("{d}\n")
            }
        };
        expect_test::expect_file![dir.join(format!("{name}.expected"))]
            .assert_eq(&relative(actual));
    }
}

#[test]
fn every_shipped_playbook_loads_without_warnings_and_plans_as_recorded() {
    let env = PlanOnlyEnv::sample();
    for file in yaml_files(&shipped_dir()) {
        let loaded = load_file(&file).unwrap_or_else(|d| panic!("{d}"));
        assert!(
            loaded.warnings.is_empty(),
            "a shipped playbook must not draw warnings:\n{}",
            loaded
                .warnings
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let pb = &loaded.playbook;
        let app = pb
            .trigger
            .incident()
            .and_then(|t| t.apps.first())
            .map(String::as_str);
        let mut ctx = sample_context(&pb.name, app);
        ctx.vars = pb.vars.clone();
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let own = manifest().join(format!("test_data/plans/{name}.sample.json"));
        if own.exists() {
            // {"incident": {...}, "alert": {...}, "alerts": [...]}, as
            // templates see them.
            let sample: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&own).unwrap()).unwrap();
            ctx.incident = serde_json::from_value(sample["incident"].clone()).unwrap();
            ctx.alert = serde_json::from_value(sample["alert"].clone()).unwrap();
            ctx.alerts = serde_json::from_value(sample["alerts"].clone()).unwrap();
        }
        let scheduled = pb.trigger.incident().is_none();
        if scheduled {
            ctx.incident = None;
            ctx.alert = None;
        }
        let p = plan(
            pb,
            &ctx,
            &env,
            if scheduled {
                "sched-sample"
            } else {
                "fc-sample-1"
            },
        );
        expect_test::expect_file![manifest().join(format!("test_data/plans/{name}.plan"))]
            .assert_eq(&render_text(&p));
        assert!(
            crate::plan::dry_run_refusal(&p).is_none(),
            "{}: every mutating step must be plannable",
            pb.name
        );
    }
}

fn schema_validator() -> jsonschema::Validator {
    jsonschema::validator_for(&model::json_schema())
        .expect("the generated schema is a valid JSON Schema")
}

#[test]
fn the_checked_in_schema_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&model::json_schema()).unwrap() + "\n";
    expect_test::expect_file![manifest().join("schema/playbook.schema.json")].assert_eq(&generated);
}

#[test]
fn the_schema_accepts_every_shipped_playbook_and_rejects_shape_errors() {
    let validator = schema_validator();
    for file in yaml_files(&shipped_dir()) {
        let doc = Document::read(&file).unwrap();
        let value: serde_json::Value = doc.parse().unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }
    // Shape errors the schema must catch as the loader does.
    for case in ["unknown_key", "wrong_type"] {
        let file = manifest().join(format!("test_data/validate/{case}.yaml"));
        let value: serde_json::Value = Document::read(&file).unwrap().parse().unwrap();
        assert!(!validator.is_valid(&value), "{case} passed the schema");
    }
}
