//! `fincorpctl playbook validate PATH...`: every problem of every file at
//! once, as file:line:col.

use std::path::{Path, PathBuf};

use fincorp_api::yaml::Diagnostics;

/// Validates files and directories of playbooks. Returns the report and
/// whether everything was valid.
pub fn validate(paths: &[PathBuf]) -> (String, bool) {
    let mut report = String::new();
    let mut ok = true;
    for path in paths {
        let result = if path.is_dir() {
            fincorp_playbooks::load_dir(path).map(|p| p.len())
        } else {
            fincorp_playbooks::load_file(path).map(|_| 1)
        };
        match result {
            Ok(n) => report.push_str(&format!(
                "{}: OK ({n} playbook{})\n",
                show(path),
                if n == 1 { "" } else { "s" }
            )),
            Err(Diagnostics(problems)) => {
                ok = false;
                for d in problems {
                    report.push_str(&format!("{d}\n"));
                }
            }
        }
    }
    (report, ok)
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_problem_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            "version: 1\nname: x\ntrigger: {}\nsteps:\n  - id: a\n    action: nuke\n",
        )
        .unwrap();
        let (report, ok) = validate(std::slice::from_ref(&bad));
        assert!(!ok);
        assert!(
            report.contains(&format!(
                "{}:6:13: error: unknown action \"nuke\"",
                bad.display()
            )),
            "{report}"
        );
    }

    #[test]
    fn the_shipped_playbooks_pass() {
        let dir =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../packaging/etc/fincorp/playbooks");
        let (report, ok) = validate(&[dir]);
        assert!(ok, "{report}");
    }
}
