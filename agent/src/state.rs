//! The agent's state directory: the spool (`spool/`), the command journal
//! (`commands.jsonl`) and the alerts firing at the last transition
//! (`alerts.json`), so a restart neither forgets an open alert nor re-runs
//! a command.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::FiringAlert;

pub const SPOOL_DIR: &str = "spool";
pub const JOURNAL_FILE: &str = "commands.jsonl";
pub const ALERTS_FILE: &str = "alerts.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct AlertState {
    firing: Vec<FiringAlert>,
}

/// Creates the state directory (mode 0700) if needed.
pub fn prepare(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

fn alerts_path(dir: &Path) -> PathBuf {
    dir.join(ALERTS_FILE)
}

/// The alerts that were firing when the agent last recorded a transition.
pub fn load_alerts(dir: &Path) -> Vec<FiringAlert> {
    match std::fs::read(alerts_path(dir)) {
        Ok(bytes) => match serde_json::from_slice::<AlertState>(&bytes) {
            Ok(s) => s.firing,
            Err(e) => {
                tracing::warn!(file = %alerts_path(dir).display(), error = %e, "unreadable alert state ignored");
                Vec::new()
            }
        },
        Err(_) => Vec::new(),
    }
}

/// Records the firing alerts atomically (temporary file, fsync, rename).
pub fn save_alerts(dir: &Path, firing: &[FiringAlert]) -> io::Result<()> {
    let path = alerts_path(dir);
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(&AlertState {
        firing: firing.to_vec(),
    })
    .map_err(io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_alerts_round_trip_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_alerts(dir.path()).is_empty());
        let firing = vec![FiringAlert {
            fingerprint: "abc".into(),
            since: 42,
        }];
        save_alerts(dir.path(), &firing).unwrap();
        assert_eq!(load_alerts(dir.path()), firing);
        std::fs::write(dir.path().join(ALERTS_FILE), "{not json").unwrap();
        assert!(load_alerts(dir.path()).is_empty());
    }
}
