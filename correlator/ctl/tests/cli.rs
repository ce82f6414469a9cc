//! The `fincorpctl` binary's command line, and the commands that need no
//! correlator: `playbook validate` and `playbook plan --sample`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fincorpctl"))
}

#[test]
fn help_lists_the_commands() {
    let out = ctl().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["incidents", "playbook", "runs", "automation", "chaos"] {
        assert!(text.contains(cmd), "{text}");
    }
    let out = ctl()
        .args(["chaos", "cpu-spike", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--step"));
}

#[test]
fn usage_errors_exit_2() {
    let out = ctl().args(["chaos", "cpu-spike"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn an_invalid_playbook_exits_64_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, "version: 1\nname: p\ntrigger: {}\nsteps:\n  - id: s\n    action: servicenow.create\n    with: {}\n").unwrap();
    let out = ctl()
        .args(["playbook", "validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}:7:11: error: missing required parameter `short_description`",
            file.display()
        )),
        "{stdout}"
    );
}

#[test]
fn an_unreachable_correlator_is_a_clear_failure() {
    let out = ctl()
        .args(["--url", "http://127.0.0.1:1", "incidents", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("cannot reach the correlator at http://127.0.0.1:1")
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn shipped() -> PathBuf {
    repo().join("packaging/etc/fincorp/playbooks/hft-cpu-reallocation.yaml")
}

/// Asserts the exit code and returns (stdout, stderr).
fn exits(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

const WARN_ONLY: &str = "version: 1\nname: w\ntrigger:\n  apps: [A]\nguardrails:\n  lock: none\nsteps:\n  - id: raise\n    action: reallocate\n    with:\n      host: \"{{ incident.host }}\"\n      app: A\n      resource: cpu\n      increase_pct: 20\n";

#[test]
fn validate_exits_0_with_only_warnings_and_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let warn = dir.path().join("w.yaml");
    std::fs::write(&warn, WARN_ONLY).unwrap();
    let out = ctl()
        .args(["playbook", "validate"])
        .arg(&warn)
        .arg(shipped())
        .output()
        .unwrap();
    let (stdout, _) = exits(&out, 0);
    for want in [
        format!(
            "{}:6:3: warning: mutating automation without a rate limit (guardrails.rate_limit): a loop could act without bound (at guardrails)",
            warn.display()
        ),
        format!(
            "{}:6:9: warning: mutating automation without a lock",
            warn.display()
        ),
        format!("{}: OK (1 playbook, 0 errors, 2 warnings)", warn.display()),
        "ok: 2 playbooks valid, 0 errors, 2 warnings\n".to_owned(),
    ] {
        assert!(stdout.contains(&want), "{want:?} not in:\n{stdout}");
    }
}

#[test]
fn validate_exits_64_on_any_error_and_still_shows_every_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.yaml"), WARN_ONLY).unwrap();
    let bad = dir.path().join("x.yaml");
    std::fs::write(
        &bad,
        "version: 1\nname: x\ntrigger:\n  apps: [A]\nsteps:\n  - id: a\n    action: nuke\n  - id: b\n    action: notify\n    with: {url: 42}\n",
    )
    .unwrap();
    let out = ctl()
        .args(["playbook", "validate"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (stdout, _) = exits(&out, 64);
    for want in [
        format!("{}:7:13: error: unknown action \"nuke\"", bad.display()),
        format!(
            "{}:10:17: error: `url` must be a string, not a number (at steps[1].with.url)",
            bad.display()
        ),
        format!(
            "{}:6:9: warning: mutating automation without a lock",
            dir.path().join("w.yaml").display()
        ),
        format!(
            "{}: INVALID (1 playbook, 2 errors, 2 warnings)",
            dir.path().display()
        ),
        "failed: 1 playbook valid, 2 errors, 2 warnings\n".to_owned(),
    ] {
        assert!(stdout.contains(&want), "{want:?} not in:\n{stdout}");
    }
}

#[test]
fn plan_sample_prints_each_step_with_the_exact_requests() {
    let out = ctl()
        .args(["playbook", "plan", "--sample"])
        .arg(shipped())
        .output()
        .unwrap();
    let (stdout, _) = exits(&out, 0);
    // The same plan as the checked-in golden file.
    let golden =
        std::fs::read_to_string(repo().join("playbooks/test_data/plans/hft-cpu-reallocation.plan"))
            .unwrap();
    assert_eq!(stdout, golden);
    assert!(stdout.contains("signed command to the agent on hft-ny-01"));
    assert!(stdout.contains("-> POST https://fincorp.service-now.com/api/now/table/incident"));

    let out = ctl()
        .args([
            "playbook",
            "plan",
            "--sample",
            "--app",
            "FINCORP-APP-HFT-TEST",
            "--json",
        ])
        .arg(shipped())
        .output()
        .unwrap();
    let (stdout, _) = exits(&out, 0);
    let view: fincorp_api::rest::PlanView = serde_json::from_str(&stdout).unwrap();
    assert!(
        view.text
            .contains("\"short_description\": \"FINCORP-APP-HFT-TEST CPU 91.3% on hft-ny-01\""),
        "{}",
        view.text
    );
    assert_eq!(
        view.plan["steps"][0]["params"]["app"],
        "FINCORP-APP-HFT-TEST"
    );
}

#[test]
fn plan_refuses_an_invalid_file_with_64_and_an_unplannable_mutation_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "version: 1\nname: x\n").unwrap();
    let out = ctl()
        .args(["playbook", "plan", "--sample"])
        .arg(&bad)
        .output()
        .unwrap();
    let (stdout, stderr) = exits(&out, 64);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("{}:", bad.display())) && stderr.contains("error:"),
        "{stderr}"
    );

    // The script's name renders to a path, which exec refuses to plan.
    let odd = dir.path().join("odd.yaml");
    std::fs::write(
        &odd,
        "version: 1\nname: odd\ntrigger:\n  apps: [A]\nguardrails:\n  rate_limit:\n    per_target: {max: 1, per: 1h}\n  approval: {required: true, timeout: 5m}\nsteps:\n  - id: run_it\n    action: exec\n    with:\n      host: \"{{ incident.host }}\"\n      script: \"{{ incident.host }}/x.sh\"\n",
    )
    .unwrap();
    let out = ctl()
        .args(["playbook", "plan", "--sample"])
        .arg(&odd)
        .output()
        .unwrap();
    let (stdout, stderr) = exits(&out, 1);
    assert!(stdout.starts_with("playbook odd\n"), "{stdout}");
    assert!(stdout.contains("requests: NOT PLANNABLE"), "{stdout}");
    assert!(
        stderr.contains(
            "dry run refused: mutating step(s) run_it cannot say exactly what they would do"
        ),
        "{stderr}"
    );
}

#[test]
fn plan_needs_sample_or_incident_and_not_both() {
    let out = ctl()
        .args(["playbook", "plan"])
        .arg(shipped())
        .output()
        .unwrap();
    let (_, stderr) = exits(&out, 2);
    assert!(stderr.contains("--sample|--incident"), "{stderr}");
    let out = ctl()
        .args(["playbook", "plan", "--sample", "--incident", "fc-1"])
        .arg(shipped())
        .output()
        .unwrap();
    exits(&out, 2);
    let out = ctl()
        .args(["playbook", "plan", "--incident", "fc-1", "--app", "A"])
        .arg(shipped())
        .output()
        .unwrap();
    exits(&out, 2);
}

#[test]
fn who_acts_comes_from_by_or_user_and_is_never_blank() {
    for args in [
        &["runs", "approve", "run-1"][..],
        &["automation", "kill-switch", "on", "--reason", "x"],
        &["automation", "breaker", "reset", "fleet"],
    ] {
        let out = ctl()
            .args(["--url", "http://127.0.0.1:1"])
            .args(args)
            .env_remove("USER")
            .output()
            .unwrap();
        let (_, stderr) = exits(&out, 2);
        assert!(
            stderr.contains("--by <BY>")
                && stderr.contains("--by names who acts; it defaults to $USER, which is not set"),
            "{args:?}: {stderr}"
        );
        let out = ctl()
            .args(["--url", "http://127.0.0.1:1"])
            .args(args)
            .env("USER", " ")
            .output()
            .unwrap();
        let (_, stderr) = exits(&out, 2);
        assert!(
            stderr.contains("name who acts: pass --by or set USER"),
            "{args:?}: {stderr}"
        );
        // With $USER it gets as far as the (absent) correlator.
        let out = ctl()
            .args(["--url", "http://127.0.0.1:1"])
            .args(args)
            .env("USER", "alice")
            .output()
            .unwrap();
        let (_, stderr) = exits(&out, 1);
        assert!(stderr.contains("cannot reach the correlator"), "{stderr}");
    }
}

#[test]
fn completions_are_generated_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_fincorpctl()"),
        ("zsh", "#compdef fincorpctl"),
        ("fish", "complete -c fincorpctl"),
    ] {
        let out = ctl().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        // Subcommands are completed too.
        assert!(script.contains("kill-switch"), "{shell}");
    }
    let out = ctl().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The URL comes from the flag, else FINCORP_URL, else the config file,
/// else the default; a token_file in the config file is read relative to it.
#[test]
fn the_url_and_token_come_from_flags_then_env_then_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    // Ports nobody listens on, so each answer names the URL it tried.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (file_port, env_port, flag_port) = (free(), free(), free());
    let config = dir.path().join("fincorpctl.yaml");
    std::fs::write(
        &config,
        format!("url: http://127.0.0.1:{file_port}\ntoken_file: token\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    let ctl = || {
        let mut c = ctl();
        c.env_remove("FINCORP_URL").env_remove("FINCORP_TOKEN");
        c
    };
    let tried = |cmd: &mut Command| -> String {
        let out = cmd.args(["incidents", "list"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let from_file = tried(ctl().arg("--config").arg(&config));
    assert!(
        from_file.contains(&format!("127.0.0.1:{file_port}")),
        "{from_file}"
    );
    let from_env = tried(
        ctl()
            .arg("--config")
            .arg(&config)
            .env("FINCORP_URL", format!("http://127.0.0.1:{env_port}")),
    );
    assert!(
        from_env.contains(&format!("127.0.0.1:{env_port}")),
        "{from_env}"
    );
    let from_flag = tried(
        ctl()
            .arg("--config")
            .arg(&config)
            .arg("--url")
            .arg(format!("http://127.0.0.1:{flag_port}")),
    );
    assert!(
        from_flag.contains(&format!("127.0.0.1:{flag_port}")),
        "{from_flag}"
    );
    // A token file named in the config must exist.
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let missing = tried(ctl().arg("--config").arg(&config));
    assert!(missing.contains("cannot read the token file"), "{missing}");
    // An unknown key is refused, naming the file.
    std::fs::write(&config, "url: http://127.0.0.1:1\ncolour: red\n").unwrap();
    let bad = tried(ctl().arg("--config").arg(&config));
    assert!(bad.contains("not a valid fincorpctl config"), "{bad}");
}
