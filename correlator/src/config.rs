//! The correlator's configuration: raw YAML (stage one), validated into
//! [`Config`] (stage two) with every problem located as file:line:col.
//! Playbooks are loaded and validated here too, so a broken playbook stops
//! the correlator at start instead of at 3 a.m.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fincorp_api::config::{Duration, SecretRef, config_dir, relative_to};
use fincorp_api::signing::SigningKey;
use fincorp_api::yaml::{Diagnostics, Document};
use fincorp_integrations::servicenow::ServiceNowConfig;
use fincorp_playbooks::Playbook;
use serde::Deserialize;

use crate::core;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    listen: String,
    state_dir: PathBuf,
    agent_auth: RawAuth,
    #[serde(default)]
    correlation: RawCorrelation,
    playbooks_dir: PathBuf,
    #[serde(default)]
    integrations: RawIntegrations,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default = "default_skew")]
    max_skew: Duration,
    keys: Vec<RawKey>,
}

fn default_skew() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    secret: SecretRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorrelation {
    #[serde(default = "default_window")]
    window: Duration,
    #[serde(default = "default_resolve_after")]
    resolve_after: Duration,
}

impl Default for RawCorrelation {
    fn default() -> Self {
        Self {
            window: default_window(),
            resolve_after: default_resolve_after(),
        }
    }
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}

fn default_resolve_after() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrations {
    servicenow: Option<RawServiceNow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceNow {
    url: String,
    username: String,
    password: SecretRef,
    #[serde(default = "default_sn_timeout")]
    timeout: Duration,
}

fn default_sn_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub max_skew_ms: i64,
    pub keys: Vec<SigningKey>,
    pub correlation: core::Config,
    pub playbooks_dir: PathBuf,
    pub playbooks: Vec<Playbook>,
    pub servicenow: Option<ServiceNowConfig>,
}

impl Config {
    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("correlator.db")
    }
}

/// Command-line values that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
}

/// Reads, parses and validates the configuration and its playbooks.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, Diagnostics> {
    let doc = Document::read(path)?;
    let raw: RawConfig = doc.parse()?;
    validate(&doc, raw, overrides)
}

fn validate(doc: &Document, raw: RawConfig, overrides: &Overrides) -> Result<Config, Diagnostics> {
    let base = config_dir(&doc.file);
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
    let listen = match overrides.listen {
        Some(addr) => Some(addr),
        None => match raw.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(doc.error(
                    "listen",
                    format!("listen must be IP:PORT, e.g. 127.0.0.1:9470 ({e})"),
                ));
                None
            }
        },
    };

    if raw.agent_auth.max_skew.0.is_zero() {
        errors.push(doc.error("agent_auth.max_skew", "max_skew must be above 0"));
    }
    if raw.agent_auth.keys.is_empty() {
        errors.push(doc.error("agent_auth.keys", "at least one agent key is required"));
    }
    let mut keys: Vec<SigningKey> = Vec::new();
    for (i, k) in raw.agent_auth.keys.iter().enumerate() {
        if keys.iter().any(|existing| existing.id() == k.id) {
            errors.push(doc.error(
                &format!("agent_auth.keys[{i}].id"),
                format!("duplicate key id {:?}", k.id),
            ));
            continue;
        }
        match k.secret.resolve(&base) {
            Err(e) => {
                errors.push(doc.error(&format!("agent_auth.keys[{i}].secret"), e.to_string()))
            }
            Ok(secret) => match SigningKey::new(k.id.clone(), secret.expose()) {
                Ok(key) => keys.push(key),
                Err(e) => errors.push(doc.error(&format!("agent_auth.keys[{i}]"), e.to_string())),
            },
        }
    }

    let c = &raw.correlation;
    if c.window.0.is_zero() {
        errors.push(doc.error("correlation.window", "window must be above 0"));
    }

    let servicenow = raw.integrations.servicenow.as_ref().and_then(|sn| {
        let mut ok = true;
        if !(sn.url.starts_with("https://") || sn.url.starts_with("http://")) {
            errors.push(doc.error(
                "integrations.servicenow.url",
                "url must start with https:// (or http:// for a local simulator)",
            ));
            ok = false;
        }
        if sn.username.is_empty() {
            errors.push(doc.error(
                "integrations.servicenow.username",
                "username must not be empty",
            ));
            ok = false;
        }
        let password = match sn.password.resolve(&base) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(doc.error("integrations.servicenow.password", e));
                None
            }
        };
        match (ok, password) {
            (true, Some(password)) => Some(ServiceNowConfig {
                url: sn.url.trim_end_matches('/').to_owned(),
                username: sn.username.clone(),
                password,
                timeout: sn.timeout.0,
            }),
            _ => None,
        }
    });

    let playbooks_dir = relative_to(&base, &raw.playbooks_dir);
    let playbooks = match fincorp_playbooks::load_dir(&playbooks_dir) {
        Ok(p) => p,
        Err(d) => {
            errors.extend(d.0);
            vec![]
        }
    };

    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    Ok(Config {
        file: doc.file.clone(),
        listen: listen.expect("checked above"),
        state_dir: overrides
            .state_dir
            .clone()
            .unwrap_or_else(|| relative_to(&base, &raw.state_dir)),
        max_skew_ms: raw.agent_auth.max_skew.as_millis_i64(),
        keys,
        correlation: core::Config {
            window_ms: c.window.as_millis_i64(),
            resolve_after_ms: c.resolve_after.as_millis_i64(),
        },
        playbooks_dir,
        playbooks,
        servicenow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/fincorp/correlator.yaml")
    }

    /// The shipped config names its secrets by environment variable; tests
    /// point them at files instead by rewriting those two lines, so no test
    /// mutates the process environment.
    fn with_file_secrets(text: &str, dir: &Path) -> String {
        std::fs::write(dir.join("agent.key"), "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::write(dir.join("sn.pass"), "sim-password\n").unwrap();
        text.replace("{ env: FINCORP_AGENT_KEY }", "{ file: agent.key }")
            .replace("{ env: FINCORP_SERVICENOW_PASSWORD }", "{ file: sn.pass }")
    }

    #[test]
    fn the_shipped_config_and_its_playbooks_validate() {
        let dir = tempfile::tempdir().unwrap();
        let text = with_file_secrets(&std::fs::read_to_string(shipped()).unwrap(), dir.path());
        let playbooks =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/fincorp/playbooks");
        let text = text.replace(
            "playbooks_dir: playbooks",
            &format!("playbooks_dir: {}", playbooks.display()),
        );
        let file = dir.path().join("correlator.yaml");
        std::fs::write(&file, text).unwrap();
        let cfg = load(&file, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:9470");
        assert_eq!(cfg.keys[0].id(), "fleet");
        assert!(
            cfg.playbooks
                .iter()
                .any(|p| p.name == "hft-cpu-reallocation")
        );
        assert_eq!(
            cfg.correlation,
            core::Config {
                window_ms: 300_000,
                resolve_after_ms: 5_000
            }
        );
        assert!(cfg.servicenow.is_some());
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("short.key"), "tooshort").unwrap();
        std::fs::create_dir(dir.path().join("pb")).unwrap();
        let text = "\
version: 1
listen: localhost
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { file: short.key }
    - id: other
      secret: { env: FINCORP_TEST_UNSET_VARIABLE_XYZ }
playbooks_dir: pb
integrations:
  servicenow:
    url: ftp://example
    username: u
    password: { file: missing.pass }
";
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, text).unwrap();
        let err = load(&file, &Overrides::default()).unwrap_err();
        let all = err.to_string();
        let f = file.display();
        assert!(
            all.contains(&format!("{f}:2:9: error: listen must be IP:PORT")),
            "{all}"
        );
        assert!(
            all.contains(&format!(
                "{f}:6:7: error: secret for key \"fleet\" is 8 bytes"
            )),
            "{all}"
        );
        assert!(
            all.contains(&format!(
                "{f}:9:15: error: environment variable FINCORP_TEST_UNSET_VARIABLE_XYZ is not set"
            )),
            "{all}"
        );
        assert!(
            all.contains(&format!("{f}:13:10: error: url must start with https://")),
            "{all}"
        );
        assert!(
            all.contains(&format!("{f}:15:15: error: cannot read secret file")),
            "{all}"
        );
        assert_eq!(err.0.len(), 5, "{all}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = with_file_secrets(&std::fs::read_to_string(shipped()).unwrap(), dir.path());
        std::fs::create_dir(dir.path().join("playbooks")).unwrap();
        let file = dir.path().join("correlator.yaml");
        std::fs::write(&file, text).unwrap();
        let o = Overrides {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            state_dir: Some("/tmp/x".into()),
        };
        let cfg = load(&file, &o).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.listen.port(), 1);
        assert_eq!(cfg.database(), PathBuf::from("/tmp/x/correlator.db"));
    }
}
