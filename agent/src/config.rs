//! `agent.yaml`: raw serde structs (stage one) and their validation into an
//! [`AgentConfig`] (stage two), which reports every problem at once with
//! file:line:col and the key path.
//!
//! The format is defined by the shipped example
//! `packaging/etc/fincorp/agent.yaml`; a test below parses it.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration as StdDuration;

use fincorp_api::config::{
    self as api_config, Duration, Secret, SecretError, SecretRef, SecretSource,
};
use fincorp_api::signing::SigningKey;
use fincorp_api::wire::Severity;
use fincorp_api::yaml::{Diagnostic, Diagnostics, Document, Level};
use regex::Regex;
use serde::Deserialize;

use crate::rules::{Condition, Rule, Scope};

/// The only config format version this agent understands.
pub const CONFIG_VERSION: u32 = 1;
const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_CORRELATOR_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// sysinfo does not re-read CPU times more often than this, so process CPU%
/// would be wrong with a shorter sampling interval.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

// ---------------------------------------------------------------------------
// Stage one: the file as written.
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    sample_interval: Option<Duration>,
    #[serde(default)]
    heartbeat_interval: Option<Duration>,
    #[serde(default)]
    discovery_interval: Option<Duration>,
    correlator: RawCorrelator,
    #[serde(default)]
    actions: RawActions,
    #[serde(default)]
    cgroup_root: Option<PathBuf>,
    #[serde(default)]
    apps: Vec<RawApp>,
    #[serde(default)]
    host_rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorrelator {
    url: String,
    key_id: String,
    secret: SecretRef,
    #[serde(default)]
    timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActions {
    #[serde(default)]
    reallocate: Option<RawReallocate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReallocate {
    enabled: bool,
    #[serde(default)]
    max_increase_pct: Option<f64>,
    #[serde(default)]
    max_cpu_cores: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: String,
    select: RawSelect,
    #[serde(default)]
    cgroup: Option<PathBuf>,
    #[serde(default)]
    probe: Option<RawProbe>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    #[serde(default)]
    exe: Option<String>,
    #[serde(default)]
    cmdline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    http: RawHttpProbe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpProbe {
    url: String,
    #[serde(default)]
    timeout: Option<Duration>,
    #[serde(default)]
    expect_status: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: String,
    #[serde(default, rename = "for")]
    for_: Option<Duration>,
    #[serde(default)]
    severity: Option<String>,
}

// ---------------------------------------------------------------------------
// Stage two: the checked configuration the agent runs on.
// ---------------------------------------------------------------------------

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The file it was read from.
    pub file: PathBuf,
    /// The name this host reports (`host: auto` resolved to the hostname).
    pub host: String,
    pub sample_interval: StdDuration,
    pub heartbeat_interval: StdDuration,
    /// How often the full process table is scanned and selectors re-matched.
    pub discovery_interval: StdDuration,
    pub correlator: CorrelatorConfig,
    pub actions: Actions,
    pub cgroup_root: PathBuf,
    pub apps: Vec<AppConfig>,
    pub host_rules: Vec<Rule>,
    /// Problems that do not make the file invalid.
    pub warnings: Vec<Diagnostic>,
}

/// Where batches go and how they are signed.
#[derive(Debug, Clone)]
pub struct CorrelatorConfig {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:9470`.
    pub url: String,
    /// The HMAC key; its `Debug` never shows the secret.
    pub key: SigningKey,
    pub timeout: StdDuration,
}

/// The action allowlist: `None` means the action is refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    pub reallocate: Option<ReallocateLimits>,
}

/// Bounds on one `reallocate` command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReallocateLimits {
    /// A single step larger than this is refused.
    pub max_increase_pct: f64,
    /// A quota is never raised above this many cores.
    pub max_cpu_cores: f64,
}

/// One application: how to find it, probe it, alert on it and resize it.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub selector: Selector,
    /// The app's cgroup, relative to the cpu controller's mount.
    pub cgroup: Option<PathBuf>,
    pub probe: Option<HttpProbe>,
    pub rules: Vec<Rule>,
}

/// How an app's processes are recognised. Processes' *names* are never used:
/// Linux truncates them to 15 characters.
#[derive(Debug, Clone)]
pub enum Selector {
    /// The file name of the process's executable equals this.
    Exe(String),
    /// The process's arguments joined by single spaces match this.
    Cmdline(Regex),
}

/// An HTTP latency probe.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpProbe {
    pub url: String,
    pub timeout: StdDuration,
    pub expect_status: u16,
}

/// Reads secrets named in the config; swapped out in tests so they need not
/// mutate the process environment.
pub type SecretResolver<'a> = dyn Fn(&SecretSource, &Path) -> Result<Secret, SecretError> + 'a;

/// Reads and validates `path`, resolving the secret from the environment or
/// its file. `Err` holds every problem found (and any warnings).
pub fn load(path: &Path) -> Result<AgentConfig, Diagnostics> {
    load_with(path, &|source, base| source.resolve(base))
}

/// [`load`] with a custom secret resolver.
pub fn load_with(path: &Path, secrets: &SecretResolver<'_>) -> Result<AgentConfig, Diagnostics> {
    let doc = Document::read(path)?;
    from_document(&doc, secrets)
}

/// Both stages over an already-read document.
pub fn from_document(
    doc: &Document,
    secrets: &SecretResolver<'_>,
) -> Result<AgentConfig, Diagnostics> {
    let raw: RawConfig = doc.parse()?;
    validate(doc, raw, secrets)
}

fn validate(
    doc: &Document,
    raw: RawConfig,
    secrets: &SecretResolver<'_>,
) -> Result<AgentConfig, Diagnostics> {
    let mut v = Validator {
        doc,
        diags: Vec::new(),
    };

    if raw.version != CONFIG_VERSION {
        v.error(
            "version",
            format!(
                "unsupported config version {}; this agent reads version {CONFIG_VERSION}",
                raw.version
            ),
        );
    }

    let host = v.host(raw.host.as_deref());
    let sample_interval = v.positive(
        "sample_interval",
        raw.sample_interval,
        DEFAULT_SAMPLE_INTERVAL,
    );
    if !sample_interval.is_zero() && sample_interval < MIN_SAMPLE_INTERVAL.0 {
        v.error(
            "sample_interval",
            format!("must be at least {MIN_SAMPLE_INTERVAL}"),
        );
    }
    let heartbeat_interval = v.positive(
        "heartbeat_interval",
        raw.heartbeat_interval,
        DEFAULT_HEARTBEAT_INTERVAL,
    );
    if heartbeat_interval < sample_interval {
        v.warning(
            "heartbeat_interval",
            "shorter than sample_interval: batches are still sent at most once per sample",
        );
    }
    let discovery_interval = v.positive(
        "discovery_interval",
        raw.discovery_interval,
        DEFAULT_DISCOVERY_INTERVAL,
    );
    let correlator = v.correlator(raw.correlator, secrets);
    let actions = v.actions(raw.actions);
    let cgroup_root = api_config::relative_to(
        &api_config::config_dir(&doc.file),
        raw.cgroup_root
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_CGROUP_ROOT)),
    );

    let mut apps = Vec::with_capacity(raw.apps.len());
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (i, app) in raw.apps.into_iter().enumerate() {
        let at = format!("apps[{i}]");
        if app.name.trim().is_empty() {
            v.error(&format!("{at}.name"), "app name must not be empty");
        } else if let Some(first) = first_seen.get(&app.name) {
            v.error(
                &format!("{at}.name"),
                format!(
                    "duplicate app name {:?} (first defined at apps[{first}])",
                    app.name
                ),
            );
        } else {
            first_seen.insert(app.name.clone(), i);
        }
        if let Some(app) = v.app(&at, app, actions.reallocate.is_some()) {
            apps.push(app);
        }
    }
    let host_rules = v.rules("host_rules", raw.host_rules, Scope::Host, false);

    if v.diags.iter().any(|d| d.level == Level::Error) {
        return Err(Diagnostics(v.diags));
    }
    let Some(correlator) = correlator else {
        // Unreachable in practice: a missing correlator always adds an error.
        return Err(Diagnostics(v.diags));
    };
    Ok(AgentConfig {
        file: doc.file.clone(),
        host,
        sample_interval,
        heartbeat_interval,
        discovery_interval,
        correlator,
        actions,
        cgroup_root,
        apps,
        host_rules,
        warnings: v.diags,
    })
}

struct Validator<'a> {
    doc: &'a Document,
    diags: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, key_path: &str, message: impl Into<String>) {
        self.diags.push(self.doc.error(key_path, message));
    }

    fn warning(&mut self, key_path: &str, message: impl Into<String>) {
        self.diags.push(self.doc.warning(key_path, message));
    }

    fn positive(
        &mut self,
        key_path: &str,
        value: Option<Duration>,
        default: Duration,
    ) -> StdDuration {
        let value = value.unwrap_or(default);
        if value.0.is_zero() {
            self.error(key_path, "must be longer than 0s");
        }
        value.0
    }

    fn host(&mut self, raw: Option<&str>) -> String {
        let host = match raw.map(str::trim) {
            None | Some("auto") => match hostname() {
                Some(h) => h,
                None => {
                    self.error(
                        "host",
                        "cannot determine this machine's hostname; set `host` explicitly",
                    );
                    return String::new();
                }
            },
            Some(h) => h.to_owned(),
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error("host", format!("invalid host name {host:?}"));
        }
        host
    }

    fn correlator(
        &mut self,
        raw: RawCorrelator,
        secrets: &SecretResolver<'_>,
    ) -> Option<CorrelatorConfig> {
        let url = match check_http_url(&raw.url) {
            Ok(url) => url,
            Err(msg) => {
                self.error("correlator.url", msg);
                String::new()
            }
        };
        let timeout = self.positive(
            "correlator.timeout",
            raw.timeout,
            DEFAULT_CORRELATOR_TIMEOUT,
        );
        let base = api_config::config_dir(&self.doc.file);
        let source = match raw.secret.source() {
            Ok(source) => source,
            Err(msg) => {
                self.error("correlator.secret", msg);
                return None;
            }
        };
        let key = match secrets(&source, &base) {
            Ok(secret) => match SigningKey::new(raw.key_id.clone(), secret.expose()) {
                Ok(key) => Some(key),
                Err(e) => {
                    let at = if raw.key_id.is_empty() {
                        "correlator.key_id"
                    } else {
                        "correlator.secret"
                    };
                    self.error(at, e.to_string());
                    None
                }
            },
            Err(e) => {
                self.error("correlator.secret", e.to_string());
                None
            }
        };
        key.map(|key| CorrelatorConfig { url, key, timeout })
    }

    fn actions(&mut self, raw: RawActions) -> Actions {
        let Some(r) = raw.reallocate else {
            return Actions::default();
        };
        if !r.enabled {
            return Actions::default();
        }
        let mut required = |key: &str, value: Option<f64>| -> f64 {
            let at = format!("actions.reallocate.{key}");
            match value {
                None => {
                    self.error(
                        "actions.reallocate",
                        format!("`{key}` is required when reallocate is enabled"),
                    );
                    0.0
                }
                Some(v) if !v.is_finite() || v <= 0.0 => {
                    self.error(&at, format!("must be a number greater than 0, not {v}"));
                    0.0
                }
                Some(v) => v,
            }
        };
        let max_increase_pct = required("max_increase_pct", r.max_increase_pct);
        let max_cpu_cores = required("max_cpu_cores", r.max_cpu_cores);
        Actions {
            reallocate: Some(ReallocateLimits {
                max_increase_pct,
                max_cpu_cores,
            }),
        }
    }

    fn app(&mut self, at: &str, raw: RawApp, reallocate_enabled: bool) -> Option<AppConfig> {
        let selector = match (raw.select.exe, raw.select.cmdline) {
            (Some(exe), None) => {
                if exe.is_empty() || exe.contains('/') {
                    self.error(
                        &format!("{at}.select.exe"),
                        format!("{exe:?} must be an executable's file name (e.g. `hft-engine`), not a path"),
                    );
                    None
                } else {
                    Some(Selector::Exe(exe))
                }
            }
            (None, Some(pattern)) => match Regex::new(&pattern) {
                Ok(re) => Some(Selector::Cmdline(re)),
                Err(e) => {
                    self.error(
                        &format!("{at}.select.cmdline"),
                        format!("invalid regex {pattern:?}: {}", one_line_regex_error(&e)),
                    );
                    None
                }
            },
            (Some(_), Some(_)) => {
                self.error(
                    &format!("{at}.select"),
                    "choose exactly one selector: `exe` or `cmdline`, not both",
                );
                None
            }
            (None, None) => {
                self.error(
                    &format!("{at}.select"),
                    "a selector is required: `exe` or `cmdline`",
                );
                None
            }
        };

        let cgroup_missing = raw.cgroup.is_none();
        let cgroup = raw.cgroup.filter(|p| {
            let ok = !p.as_os_str().is_empty()
                && p.components().all(|c| matches!(c, Component::Normal(_)));
            if !ok {
                self.error(
                    &format!("{at}.cgroup"),
                    format!(
                        "{:?} must be a relative path below the cgroup root, without `..`",
                        p.display()
                    ),
                );
            }
            ok
        });
        if cgroup_missing && reallocate_enabled {
            self.warning(
                at,
                format!(
                    "app {:?} has no `cgroup`: reallocate commands for it will be refused",
                    raw.name
                ),
            );
        }

        let probe = raw.probe.map(|p| {
            let url_at = format!("{at}.probe.http.url");
            let url = check_http_url(&p.http.url).unwrap_or_else(|msg| {
                self.error(&url_at, msg);
                String::new()
            });
            let timeout = self.positive(
                &format!("{at}.probe.http.timeout"),
                p.http.timeout,
                DEFAULT_PROBE_TIMEOUT,
            );
            let expect_status = p.http.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                self.error(
                    &format!("{at}.probe.http.expect_status"),
                    format!("{expect_status} is not an HTTP status code (100-599)"),
                );
            }
            HttpProbe {
                url,
                timeout,
                expect_status,
            }
        });

        let rules = self.rules(
            &format!("{at}.rules"),
            raw.rules,
            Scope::App,
            probe.is_some(),
        );
        Some(AppConfig {
            name: raw.name,
            selector: selector?,
            cgroup,
            probe,
            rules,
        })
    }

    fn rules(&mut self, at: &str, raw: Vec<RawRule>, scope: Scope, has_probe: bool) -> Vec<Rule> {
        let mut out = Vec::with_capacity(raw.len());
        let mut first_seen: HashMap<String, usize> = HashMap::new();
        for (i, r) in raw.into_iter().enumerate() {
            let at = format!("{at}[{i}]");
            let mut ok = true;
            if r.name.trim().is_empty() {
                self.error(&format!("{at}.name"), "rule name must not be empty");
                ok = false;
            } else if let Some(first) = first_seen.get(&r.name) {
                self.error(
                    &format!("{at}.name"),
                    format!(
                        "duplicate rule name {:?} (first defined at index {first})",
                        r.name
                    ),
                );
                ok = false;
            } else {
                first_seen.insert(r.name.clone(), i);
            }
            let condition = match Condition::parse(&r.when, scope) {
                Ok(c) => {
                    if c.metric.needs_probe() && !has_probe {
                        self.error(
                            &format!("{at}.when"),
                            format!(
                                "metric `{}` needs a probe, but this app has no `probe`",
                                c.metric.name()
                            ),
                        );
                        ok = false;
                    }
                    Some(c)
                }
                Err(msg) => {
                    self.error(&format!("{at}.when"), msg);
                    None
                }
            };
            let severity = match r.severity.as_deref() {
                None => Severity::Warning,
                Some(s) => s.parse().unwrap_or_else(|msg: String| {
                    self.error(&format!("{at}.severity"), msg);
                    ok = false;
                    Severity::Warning
                }),
            };
            let for_ = r.for_.unwrap_or_default().0;
            if let (Some(condition), true) = (condition, ok) {
                out.push(Rule {
                    name: r.name,
                    condition,
                    for_,
                    severity,
                });
            }
        }
        out
    }
}

/// Checks an http(s) URL and returns it without a trailing slash.
fn check_http_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("invalid URL {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "URL {text:?} must use http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL {text:?} has no host"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// regex errors span several lines (pattern, caret, message); keep the message.
fn one_line_regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().trim_start_matches("error: ").to_owned())
        .unwrap_or(text)
}

/// This machine's hostname, for `host: auto`.
fn hostname() -> Option<String> {
    sysinfo::System::host_name()
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Metric, Op};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn fixed_secret(_: &SecretSource, _: &Path) -> Result<Secret, SecretError> {
        Ok(Secret::new(SECRET))
    }

    fn parse(text: &str) -> Result<AgentConfig, Diagnostics> {
        let doc = Document::from_text(Path::new("agent.yaml"), text);
        from_document(&doc, &fixed_secret)
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(d) => {
                d.0.iter()
                    .filter(|d| d.level == Level::Error)
                    .map(ToString::to_string)
                    .collect()
            }
        }
    }

    const MINIMAL: &str = "\
version: 1
host: web01
correlator:
  url: http://127.0.0.1:9470/
  key_id: fleet
  secret: { env: FINCORP_AGENT_KEY }
apps:
  - name: A
    select:
      exe: a-server
    rules:
      - name: cpu_high
        when: cpu > 80
";

    fn shipped_example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/fincorp/agent.yaml")
    }

    #[test]
    fn the_shipped_example_parses() {
        let seen = std::cell::RefCell::new(None);
        let resolver = |source: &SecretSource, base: &Path| {
            *seen.borrow_mut() = Some((source.clone(), base.to_owned()));
            Ok(Secret::new(SECRET))
        };
        let cfg = load_with(&shipped_example(), &resolver).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(
            seen.borrow().as_ref().map(|(s, _)| s.clone()),
            Some(SecretSource::Env("FINCORP_AGENT_KEY".into()))
        );
        assert_eq!(cfg.sample_interval, StdDuration::from_secs(1));
        assert_eq!(cfg.heartbeat_interval, StdDuration::from_secs(10));
        assert_eq!(cfg.discovery_interval, StdDuration::from_secs(2));
        assert_eq!(cfg.correlator.url, "http://127.0.0.1:9470");
        assert_eq!(cfg.correlator.key.id(), "fleet");
        assert_eq!(cfg.correlator.timeout, StdDuration::from_secs(5));
        assert_eq!(
            cfg.actions.reallocate,
            Some(ReallocateLimits {
                max_increase_pct: 50.0,
                max_cpu_cores: 2.0
            })
        );
        assert_eq!(cfg.cgroup_root, PathBuf::from("/sys/fs/cgroup"));
        let names: Vec<_> = cfg.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "FINCORP-APP-TRANSPROC",
                "FINCORP-APP-HFT",
                "FINCORP-APP-CRM",
                "FINCORP-APP-CORE",
                "FINCORP-APP-INSURANCE",
                "FINCORP-APP-HFT-TEST"
            ]
        );
        let test_app = &cfg.apps[5];
        assert!(test_app.probe.is_none());
        assert_eq!(
            test_app.cgroup.as_deref(),
            Some(Path::new("fincorp/FINCORP-APP-HFT-TEST"))
        );
        match &test_app.selector {
            Selector::Cmdline(re) => {
                assert!(re.is_match("fincorpctl chaos burn --app FINCORP-APP-HFT-TEST --step 5s"));
                assert!(!re.is_match("fincorpctl chaos burn --app FINCORP-APP-HFT-TESTX"));
            }
            other => panic!("expected a cmdline selector, got {other:?}"),
        }
        let rule = &test_app.rules[0];
        assert_eq!(
            (
                rule.name.as_str(),
                rule.condition.metric,
                rule.condition.op,
                rule.condition.threshold
            ),
            ("cpu_high", Metric::Cpu, Op::Gt, 80.0)
        );
        assert_eq!(
            (rule.for_, rule.severity),
            (StdDuration::from_secs(1), Severity::Critical)
        );
        assert_eq!(
            cfg.apps[1].probe.as_ref().map(|p| p.timeout),
            Some(StdDuration::from_millis(200))
        );
        assert_eq!(cfg.host_rules.len(), 2);
        assert_eq!(cfg.host_rules[1].condition.metric, Metric::MemUsedPct);
        assert!(!cfg.host.is_empty(), "host: auto resolves to the hostname");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    }

    #[test]
    fn the_secret_is_resolved_from_a_file_next_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.key"), format!("{SECRET}\n")).unwrap();
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            MINIMAL.replace("{ env: FINCORP_AGENT_KEY }", "{ file: agent.key }"),
        )
        .unwrap();
        let cfg = load(&path).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.correlator.key.id(), "fleet");
        assert!(
            !format!("{cfg:?}").contains(SECRET),
            "the secret must never be printed"
        );
    }

    #[test]
    fn defaults_apply_and_the_trailing_slash_is_dropped() {
        let cfg = parse(MINIMAL).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.host, "web01");
        assert_eq!(cfg.correlator.url, "http://127.0.0.1:9470");
        assert_eq!(cfg.discovery_interval, StdDuration::from_secs(2));
        assert_eq!(cfg.actions, Actions::default());
        let rule = &cfg.apps[0].rules[0];
        assert_eq!(
            (rule.for_, rule.severity),
            (StdDuration::ZERO, Severity::Warning)
        );
    }

    #[test]
    fn a_missing_secret_is_located_at_correlator_secret() {
        let doc = Document::from_text(Path::new("agent.yaml"), MINIMAL);
        let err = from_document(&doc, &|_: &SecretSource, _: &Path| {
            Err(SecretError::EnvMissing("FINCORP_AGENT_KEY".into()))
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "agent.yaml:6:11: error: environment variable FINCORP_AGENT_KEY is not set (at correlator.secret)"
        );
        let short = from_document(&doc, &|_: &SecretSource, _: &Path| Ok(Secret::new("short")))
            .unwrap_err();
        assert!(
            short
                .to_string()
                .starts_with("agent.yaml:6:11: error: secret for key \"fleet\" is 5 bytes"),
            "{short}"
        );
    }

    #[test]
    fn an_unknown_key_is_located() {
        let text = MINIMAL.replace("    select:\n", "    colour: red\n    select:\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("agent.yaml:9:5: error: unknown field `colour`"),
            "{errs:?}"
        );
    }

    #[test]
    fn semantic_problems_are_all_reported_at_once_with_positions() {
        let text = "\
version: 2
host: web01
correlator:
  url: ftp://example.com
  key_id: fleet
  secret: { env: K }
apps:
  - name: A
    select:
      cmdline: 'java (unclosed'
    rules:
      - name: r1
        when: cpu_load > 80
      - name: r1
        when: rss_mb >> 5
        severity: page
  - name: A
    select:
      exe: a
      cmdline: b
    rules:
      - name: lat
        when: latency_ms > 5
host_rules:
  - name: h
    when: rss_mb > 1
";
        let errs = errors(text);
        let expected = [
            "agent.yaml:1:10: error: unsupported config version 2; this agent reads version 1 (at version)",
            "agent.yaml:4:8: error: URL \"ftp://example.com\" must use http or https, not \"ftp\" (at correlator.url)",
            "agent.yaml:10:16: error: invalid regex \"java (unclosed\": unclosed group (at apps[0].select.cmdline)",
            "agent.yaml:13:15: error: unknown metric `cpu_load`; app rules can use cpu, rss_mb, processes, latency_ms, probe_up (at apps[0].rules[0].when)",
            "agent.yaml:14:15: error: duplicate rule name \"r1\" (first defined at index 0) (at apps[0].rules[1].name)",
            "agent.yaml:15:15: error: expected `<metric> <op> <number>` with op one of >, >=, <, <=, e.g. `cpu > 80`; got \"rss_mb >> 5\" (at apps[0].rules[1].when)",
            "agent.yaml:16:19: error: unknown severity \"page\" (expected info, warning or critical) (at apps[0].rules[1].severity)",
            "agent.yaml:17:11: error: duplicate app name \"A\" (first defined at apps[0]) (at apps[1].name)",
            "agent.yaml:19:7: error: choose exactly one selector: `exe` or `cmdline`, not both (at apps[1].select)",
            "agent.yaml:23:15: error: metric `latency_ms` needs a probe, but this app has no `probe` (at apps[1].rules[0].when)",
            "agent.yaml:26:11: error: unknown metric `rss_mb`; host rules can use cpu, mem_used_pct (at host_rules[0].when)",
        ];
        assert_eq!(errs, expected, "got:\n{}", errs.join("\n"));
    }

    #[test]
    fn zero_durations_bad_cgroups_and_limits_are_errors() {
        let text = "\
version: 1
host: web01
sample_interval: 0s
discovery_interval: 0s
correlator:
  url: http://c:9470
  key_id: fleet
  secret: { env: K }
actions:
  reallocate:
    enabled: true
    max_increase_pct: -5
apps:
  - name: A
    select:
      exe: /usr/bin/a
    cgroup: ../escape
";
        let errs = errors(text);
        let expected = [
            "agent.yaml:3:18: error: must be longer than 0s (at sample_interval)",
            "agent.yaml:4:21: error: must be longer than 0s (at discovery_interval)",
            "agent.yaml:12:23: error: must be a number greater than 0, not -5 (at actions.reallocate.max_increase_pct)",
            "agent.yaml:11:5: error: `max_cpu_cores` is required when reallocate is enabled (at actions.reallocate)",
            "agent.yaml:16:12: error: \"/usr/bin/a\" must be an executable's file name (e.g. `hft-engine`), not a path (at apps[0].select.exe)",
            "agent.yaml:17:13: error: \"../escape\" must be a relative path below the cgroup root, without `..` (at apps[0].cgroup)",
        ];
        assert_eq!(errs, expected, "got:\n{}", errs.join("\n"));
    }

    #[test]
    fn sampling_faster_than_sysinfo_can_measure_cpu_is_an_error() {
        let errs =
            errors(&MINIMAL.replace("host: web01\n", "host: web01\nsample_interval: 100ms\n"));
        assert_eq!(
            errs,
            ["agent.yaml:3:18: error: must be at least 200ms (at sample_interval)"]
        );
    }

    #[test]
    fn a_secret_needs_exactly_one_source() {
        for secret in ["{ env: K, file: k.txt }", "{}", "{ env: '' }"] {
            let errs = errors(&MINIMAL.replace("{ env: FINCORP_AGENT_KEY }", secret));
            assert_eq!(
                errs,
                [
                    "agent.yaml:6:11: error: write exactly one of `{ env: NAME }` or `{ file: PATH }`; secrets are never inline (at correlator.secret)"
                ],
                "{secret}"
            );
        }
        for inline in ["hunter2hunter2hunter2", "{ value: hunter2hunter2hunter2 }"] {
            let errs = errors(&MINIMAL.replace("{ env: FINCORP_AGENT_KEY }", inline));
            assert_eq!(
                errs,
                [
                    "agent.yaml:6:11: error: write exactly one of `{ env: NAME }` or `{ file: PATH }`; secrets are never inline (at correlator.secret)"
                ],
                "an inline secret is refused and not echoed"
            );
        }
    }

    #[test]
    fn warnings_do_not_invalidate_the_file() {
        let text = MINIMAL
            .replace("host: web01\n", "host: web01\nheartbeat_interval: 500ms\n")
            .replace("apps:\n", "actions:\n  reallocate:\n    enabled: true\n    max_increase_pct: 20\n    max_cpu_cores: 1\napps:\n");
        let cfg = parse(&text).unwrap_or_else(|d| panic!("{d}"));
        let warnings: Vec<String> = cfg.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            [
                "agent.yaml:3:21: warning: shorter than sample_interval: batches are still sent at most once per sample (at heartbeat_interval)",
                "agent.yaml:14:5: warning: app \"A\" has no `cgroup`: reallocate commands for it will be refused (at apps[0])",
            ]
        );
        assert_eq!(
            cfg.actions.reallocate,
            Some(ReallocateLimits {
                max_increase_pct: 20.0,
                max_cpu_cores: 1.0
            })
        );
    }

    #[test]
    fn a_wrong_type_is_a_stage_one_error_with_position() {
        let errs = errors(&MINIMAL.replace("when: cpu > 80", "when: [cpu]"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("agent.yaml:13:15: error: "), "{errs:?}");
    }
}
