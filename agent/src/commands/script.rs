//! `run_script`: runs a script from the allowlist directory, never anything
//! else. The command names a file (no path); the file must be a regular,
//! executable file directly in the directory, and neither it nor the
//! directory may be writable by group or others. The script runs with an
//! empty environment (plus a fixed PATH), no stdin, in its own process
//! group, and the whole group is killed when the timeout passes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fincorp_api::wire::CommandDetail;
use tokio::io::AsyncReadExt;

use super::reallocate::Outcome;

/// Output kept from each of stdout and stderr (the end of it).
pub const OUTPUT_TAIL: usize = 4 * 1024;
/// Most arguments, and longest argument, a command may pass.
pub const MAX_ARGS: usize = 32;
pub const MAX_ARG_LEN: usize = 1024;
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Checks the script name against the allowlist directory and returns its
/// path, or why it is refused.
pub fn resolve(dir: &Path, script: &str, args: &[String]) -> Result<PathBuf, String> {
    let plain = !script.is_empty()
        && script != "."
        && script != ".."
        && !script.contains('/')
        && !script.contains('\0');
    if !plain {
        return Err(format!(
            "script {script:?} must be a file name in the allowlist directory, not a path"
        ));
    }
    if args.len() > MAX_ARGS
        || args
            .iter()
            .any(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
    {
        return Err(format!(
            "too many or too long arguments (at most {MAX_ARGS}, each at most {MAX_ARG_LEN} bytes, no NUL)"
        ));
    }
    let dir_meta = std::fs::metadata(dir)
        .map_err(|e| format!("allowlist directory {}: {e}", dir.display()))?;
    if dir_meta.mode() & 0o022 != 0 {
        return Err(format!(
            "allowlist directory {} is writable by group or others; refusing to run anything from it",
            dir.display()
        ));
    }
    let path = dir.join(script);
    let meta = std::fs::symlink_metadata(&path).map_err(|_| {
        format!(
            "script {script:?} is not in the allowlist directory {}",
            dir.display()
        )
    })?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{} is not a regular file (symlinks are refused)",
            path.display()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o111 == 0 {
        return Err(format!("{} is not executable", path.display()));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others; refusing to run it",
            path.display()
        ));
    }
    Ok(path)
}

/// Keeps the last `OUTPUT_TAIL` bytes, on a character boundary.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(OUTPUT_TAIL);
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.trim_end().to_owned()
}

async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    // Keep memory bounded for chatty scripts: only the tail is kept.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > 4 * OUTPUT_TAIL {
                    out.drain(..out.len() - OUTPUT_TAIL);
                }
            }
        }
    }
}

/// Runs the script and waits for it, at most `timeout`.
pub async fn run(path: &Path, script: &str, args: &[String], timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .current_dir(path.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.as_std_mut().process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot start {}: {e}", path.display())),
    };
    let pgid = child.id();
    let stdout = tokio::spawn(read_all(child.stdout.take().expect("piped stdout")));
    let stderr = tokio::spawn(read_all(child.stderr.take().expect("piped stderr")));
    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            if let Some(pid) = pgid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            (child.wait().await.ok(), true)
        }
    };
    // Children that kept the pipes open were killed with the group; do not
    // wait for them for ever anyway.
    let grab = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
        tokio::time::timeout(Duration::from_secs(2), h)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (out, err) = (grab(stdout).await, grab(stderr).await);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let exit_code = status.and_then(|s| s.code());
    let detail = CommandDetail::Script {
        script: script.to_owned(),
        exit_code,
        timed_out,
        duration_ms,
        stdout: tail(&out),
        stderr: tail(&err),
    };
    match (timed_out, exit_code) {
        (true, _) => Outcome::FailedWith {
            message: format!("{script} timed out after {timeout:?} and was killed"),
            detail,
        },
        (false, Some(0)) => Outcome::Applied {
            message: format!("{script} exited 0 after {duration_ms} ms"),
            detail,
        },
        (false, Some(code)) => Outcome::FailedWith {
            message: format!("{script} exited {code}"),
            detail,
        },
        (false, None) => Outcome::FailedWith {
            message: format!(
                "{script} was killed by signal {}",
                status.and_then(|s| s.signal()).unwrap_or(0)
            ),
            detail,
        },
    }
}
