//! `agent.yaml`: raw serde structs (stage one) and their validation into an
//! [`AgentConfig`] (stage two), which reports every problem at once with
//! file:line:col and the key path.
//!
//! The format is defined by the shipped example
//! `packaging/etc/fincorp/agent.yaml`; a test below parses it.

use std::collections::HashMap;
use std::net::SocketAddr;
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
const DEFAULT_STATE_DIR: &str = "/var/lib/fincorp-agent";
const DEFAULT_SPOOL_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// A spool smaller than this cannot hold a few batches.
const MIN_SPOOL_BYTES: u64 = 64 * 1024;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9472";
const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_MAX_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_RATE_LIMIT: u32 = 10;
const DEFAULT_RATE_WINDOW: Duration = Duration::from_secs(60);
const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
const MIB: f64 = 1024.0 * 1024.0;

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
    #[serde(default)]
    state_dir: Option<PathBuf>,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    shutdown_grace: Option<Duration>,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    overhead_budget: Option<RawBudget>,
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
struct RawSpool {
    #[serde(default)]
    max_size: Option<RawSize>,
    #[serde(default)]
    when_full: Option<String>,
}

/// A size: a number of bytes or text such as `64MiB`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    #[serde(default)]
    cpu_pct: Option<f64>,
    #[serde(default)]
    rss_mb: Option<f64>,
    #[serde(default)]
    window: Option<Duration>,
    #[serde(default)]
    max_sample_interval: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActions {
    #[serde(default)]
    reallocate: Option<RawReallocate>,
    #[serde(default)]
    set_limits: Option<RawSetLimits>,
    #[serde(default)]
    restart_unit: Option<RawEnabled>,
    #[serde(default)]
    run_script: Option<RawRunScript>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    systemctl: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReallocate {
    enabled: bool,
    #[serde(default)]
    max_increase_pct: Option<f64>,
    #[serde(default)]
    max_cpu_cores: Option<f64>,
    #[serde(default)]
    max_memory_mb: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSetLimits {
    enabled: bool,
    #[serde(default)]
    max_cpu_cores: Option<f64>,
    #[serde(default)]
    min_memory_mb: Option<f64>,
    #[serde(default)]
    max_memory_mb: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnabled {
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRunScript {
    enabled: bool,
    #[serde(default)]
    dir: Option<PathBuf>,
    #[serde(default)]
    max_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    max_commands: u32,
    per: Duration,
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
    #[serde(default)]
    pidfile: Option<PathBuf>,
    #[serde(default)]
    systemd_unit: Option<String>,
    #[serde(default)]
    cgroup: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    http: Option<RawHttpProbe>,
    #[serde(default)]
    tcp: Option<RawTcpProbe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcpProbe {
    address: String,
    #[serde(default)]
    timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpProbe {
    url: String,
    #[serde(default)]
    timeout: Option<Duration>,
    #[serde(default)]
    expect_status: Option<u16>,
    #[serde(default)]
    expect_body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: String,
    #[serde(default)]
    clear: Option<f64>,
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
    /// Where the spool, the alert state and the command journal live.
    pub state_dir: PathBuf,
    pub spool: SpoolConfig,
    /// How long SIGTERM waits for queued batches to be delivered.
    pub shutdown_grace: StdDuration,
    /// The loopback address of `/metrics` and `/healthz`; `None`: disabled.
    pub metrics_listen: Option<SocketAddr>,
    pub overhead_budget: Option<OverheadBudget>,
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

/// The on-disk spool of batches waiting for the correlator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolConfig {
    pub max_bytes: u64,
    pub when_full: FullPolicy,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            when_full: FullPolicy::DropOldest,
        }
    }
}

/// What a full spool does with a new batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Delete the oldest batch to make room (counted and logged).
    DropOldest,
    /// Stop sampling until the sender has made room.
    Block,
}

/// The agent's own resource budget; over it, sampling slows down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverheadBudget {
    /// Percent of one core, averaged over `window`.
    pub cpu_pct: f64,
    pub rss_bytes: u64,
    pub window: StdDuration,
    /// Sampling never slows beyond this.
    pub max_sample_interval: StdDuration,
}

/// The action allowlist: `None` (or `false`) means the action is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Actions {
    pub reallocate: Option<ReallocateLimits>,
    pub set_limits: Option<SetLimitsBounds>,
    pub restart_unit: bool,
    pub run_script: Option<ScriptPolicy>,
    /// At most this many mutating commands per window, whatever the correlator asks.
    pub rate_limit: RateLimit,
    /// The `systemctl` program (looked up on PATH unless it has a `/`).
    pub systemctl: PathBuf,
}

impl Default for Actions {
    fn default() -> Self {
        Self {
            reallocate: None,
            set_limits: None,
            restart_unit: false,
            run_script: None,
            rate_limit: RateLimit {
                max_commands: DEFAULT_RATE_LIMIT,
                per: DEFAULT_RATE_WINDOW.0,
            },
            systemctl: PathBuf::from("systemctl"),
        }
    }
}

/// Bounds on one `reallocate` command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReallocateLimits {
    /// A single step larger than this is refused.
    pub max_increase_pct: f64,
    /// A quota is never raised above this many cores.
    pub max_cpu_cores: f64,
    /// A memory limit is never raised above this; `None`: memory
    /// reallocation is refused.
    pub max_memory_bytes: Option<u64>,
}

/// Bounds on `set_limits`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SetLimitsBounds {
    pub max_cpu_cores: f64,
    /// A lower memory limit would risk the OOM killer: refused.
    pub min_memory_bytes: u64,
    pub max_memory_bytes: u64,
}

/// Where allowlisted scripts live and how long they may run.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptPolicy {
    pub dir: PathBuf,
    pub max_timeout: StdDuration,
}

/// A local rate limit on mutating commands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub max_commands: u32,
    pub per: StdDuration,
}

/// One application: how to find it, probe it, alert on it and resize it.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    pub selector: Selector,
    /// The app's cgroup, relative to each controller's mount (`cgroup`, or
    /// the `select.cgroup` path when that is the selector).
    pub cgroup: Option<PathBuf>,
    pub probe: Option<Probe>,
    pub rules: Vec<Rule>,
}

impl AppConfig {
    /// The systemd unit the app runs as, if it is selected by one.
    pub fn systemd_unit(&self) -> Option<&str> {
        match &self.selector {
            Selector::SystemdUnit(unit) => Some(unit),
            _ => None,
        }
    }
}

/// How an app's processes are recognised. Processes' *names* are never used:
/// Linux truncates them to 15 characters. Children of a selected process
/// belong to the same app.
#[derive(Debug, Clone)]
pub enum Selector {
    /// The file name of the process's executable equals this.
    Exe(String),
    /// The process's arguments joined by single spaces match this.
    Cmdline(Regex),
    /// The process whose PID this file holds (absolute path).
    Pidfile(PathBuf),
    /// The processes in this systemd unit's cgroup (e.g. `hft.service`).
    SystemdUnit(String),
    /// The processes in this cgroup or below it (relative path).
    Cgroup(PathBuf),
}

impl Selector {
    /// The key this selector is written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Exe(_) => "exe",
            Selector::Cmdline(_) => "cmdline",
            Selector::Pidfile(_) => "pidfile",
            Selector::SystemdUnit(_) => "systemd_unit",
            Selector::Cgroup(_) => "cgroup",
        }
    }
}

/// A latency probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http(HttpProbe),
    Tcp(TcpProbe),
}

impl Probe {
    pub fn timeout(&self) -> StdDuration {
        match self {
            Probe::Http(p) => p.timeout,
            Probe::Tcp(p) => p.timeout,
        }
    }

    /// What is probed, for logs.
    pub fn target(&self) -> &str {
        match self {
            Probe::Http(p) => &p.url,
            Probe::Tcp(p) => &p.address,
        }
    }
}

/// An HTTP latency probe.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpProbe {
    pub url: String,
    pub timeout: StdDuration,
    pub expect_status: u16,
    /// The body must contain this text.
    pub expect_body: Option<String>,
}

/// A TCP connect latency probe.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpProbe {
    /// `host:port`.
    pub address: String,
    pub timeout: StdDuration,
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
    let base = api_config::config_dir(&doc.file);
    let state_dir = api_config::relative_to(
        &base,
        raw.state_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_STATE_DIR)),
    );
    let spool = v.spool(raw.spool);
    let shutdown_grace = raw.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE).0;
    let metrics_listen = v.metrics(raw.metrics);
    let overhead_budget = raw
        .overhead_budget
        .and_then(|b| v.budget(b, sample_interval));
    let correlator = v.correlator(raw.correlator, secrets);
    let actions = v.actions(raw.actions, &base);
    let cgroup_root = api_config::relative_to(
        &base,
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
        let resizes = actions.reallocate.is_some() || actions.set_limits.is_some();
        if let Some(app) = v.app(&at, app, resizes, &base) {
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
        state_dir,
        spool,
        shutdown_grace,
        metrics_listen,
        overhead_budget,
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

    fn spool(&mut self, raw: RawSpool) -> SpoolConfig {
        let mut spool = SpoolConfig::default();
        if let Some(size) = raw.max_size {
            match size.bytes() {
                Ok(b) if b >= MIN_SPOOL_BYTES => spool.max_bytes = b,
                Ok(b) => self.error(
                    "spool.max_size",
                    format!("{b} bytes is too small; at least {MIN_SPOOL_BYTES} (64KiB)"),
                ),
                Err(msg) => self.error("spool.max_size", msg),
            }
        }
        match raw.when_full.as_deref() {
            None | Some("drop_oldest") => {}
            Some("block") => spool.when_full = FullPolicy::Block,
            Some(other) => self.error(
                "spool.when_full",
                format!("unknown policy {other:?} (expected drop_oldest or block)"),
            ),
        }
        spool
    }

    fn metrics(&mut self, raw: RawMetrics) -> Option<SocketAddr> {
        if raw.enabled == Some(false) {
            return None;
        }
        let text = raw.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.ip().is_loopback() => Some(addr),
            Ok(_) => {
                self.error(
                    "metrics.listen",
                    format!(
                        "{text} is not a loopback address: /metrics and /healthz are unauthenticated and listen on 127.0.0.1 or [::1] only"
                    ),
                );
                None
            }
            Err(_) => {
                self.error(
                    "metrics.listen",
                    format!("{text:?} is not an address such as 127.0.0.1:9472"),
                );
                None
            }
        }
    }

    fn budget(&mut self, raw: RawBudget, sample_interval: StdDuration) -> Option<OverheadBudget> {
        let cpu_pct = raw.cpu_pct.unwrap_or(f64::INFINITY);
        if raw.cpu_pct.is_some_and(|c| !c.is_finite() || c <= 0.0) {
            self.error(
                "overhead_budget.cpu_pct",
                "must be a number greater than 0 (percent of one core)",
            );
        }
        let rss_bytes = match raw.rss_mb {
            None => u64::MAX,
            Some(mb) if mb.is_finite() && mb > 0.0 => (mb * MIB) as u64,
            Some(_) => {
                self.error("overhead_budget.rss_mb", "must be a number greater than 0");
                u64::MAX
            }
        };
        if raw.cpu_pct.is_none() && raw.rss_mb.is_none() {
            self.error(
                "overhead_budget",
                "set `cpu_pct`, `rss_mb` or both, or remove the section",
            );
        }
        let window = self.positive("overhead_budget.window", raw.window, DEFAULT_BUDGET_WINDOW);
        let max_sample_interval = raw
            .max_sample_interval
            .unwrap_or(DEFAULT_MAX_SAMPLE_INTERVAL)
            .0;
        if max_sample_interval < sample_interval {
            self.error(
                "overhead_budget.max_sample_interval",
                "must not be shorter than sample_interval",
            );
        }
        Some(OverheadBudget {
            cpu_pct,
            rss_bytes,
            window,
            max_sample_interval,
        })
    }

    /// A required positive number under `section` when the action is enabled.
    fn required_positive(&mut self, section: &str, key: &str, value: Option<f64>) -> f64 {
        match value {
            None => {
                self.error(
                    section,
                    format!(
                        "`{key}` is required when {} is enabled",
                        section.rsplit('.').next().unwrap_or(section)
                    ),
                );
                0.0
            }
            Some(v) => self.positive_number(&format!("{section}.{key}"), v),
        }
    }

    fn positive_number(&mut self, at: &str, v: f64) -> f64 {
        if !v.is_finite() || v <= 0.0 {
            self.error(at, format!("must be a number greater than 0, not {v}"));
            0.0
        } else {
            v
        }
    }

    fn actions(&mut self, raw: RawActions, base: &Path) -> Actions {
        let mut actions = Actions::default();
        if let Some(r) = raw.reallocate.filter(|r| r.enabled) {
            let max_increase_pct = self.required_positive(
                "actions.reallocate",
                "max_increase_pct",
                r.max_increase_pct,
            );
            let max_cpu_cores =
                self.required_positive("actions.reallocate", "max_cpu_cores", r.max_cpu_cores);
            let max_memory_bytes = r.max_memory_mb.map(|mb| {
                (self.positive_number("actions.reallocate.max_memory_mb", mb) * MIB) as u64
            });
            actions.reallocate = Some(ReallocateLimits {
                max_increase_pct,
                max_cpu_cores,
                max_memory_bytes,
            });
        }
        if let Some(r) = raw.set_limits.filter(|r| r.enabled) {
            let max_cpu_cores =
                self.required_positive("actions.set_limits", "max_cpu_cores", r.max_cpu_cores);
            let min_memory_mb =
                self.required_positive("actions.set_limits", "min_memory_mb", r.min_memory_mb);
            let max_memory_mb =
                self.required_positive("actions.set_limits", "max_memory_mb", r.max_memory_mb);
            if max_memory_mb > 0.0 && min_memory_mb > max_memory_mb {
                self.error(
                    "actions.set_limits.min_memory_mb",
                    "must not be larger than max_memory_mb",
                );
            }
            actions.set_limits = Some(SetLimitsBounds {
                max_cpu_cores,
                min_memory_bytes: (min_memory_mb * MIB) as u64,
                max_memory_bytes: (max_memory_mb * MIB) as u64,
            });
        }
        actions.restart_unit = raw.restart_unit.is_some_and(|r| r.enabled);
        if let Some(r) = raw.run_script.filter(|r| r.enabled) {
            let dir = match r.dir {
                Some(dir) => api_config::relative_to(base, &dir),
                None => {
                    self.error(
                        "actions.run_script",
                        "`dir` (the allowlist directory) is required when run_script is enabled",
                    );
                    PathBuf::new()
                }
            };
            let max_timeout = self.positive(
                "actions.run_script.max_timeout",
                r.max_timeout,
                DEFAULT_SCRIPT_TIMEOUT,
            );
            actions.run_script = Some(ScriptPolicy { dir, max_timeout });
        }
        if let Some(r) = raw.rate_limit {
            if r.max_commands == 0 {
                self.error(
                    "actions.rate_limit.max_commands",
                    "must be at least 1 (disable actions in the allowlist instead)",
                );
            }
            let per = self.positive("actions.rate_limit.per", Some(r.per), r.per);
            actions.rate_limit = RateLimit {
                max_commands: r.max_commands,
                per,
            };
        }
        if let Some(systemctl) = raw.systemctl {
            if systemctl.as_os_str().is_empty() {
                self.error("actions.systemctl", "must not be empty");
            } else if systemctl.components().count() > 1 {
                actions.systemctl = api_config::relative_to(base, &systemctl);
            } else {
                actions.systemctl = systemctl;
            }
        }
        actions
    }

    fn relative_cgroup(&mut self, at: &str, p: PathBuf) -> Option<PathBuf> {
        let ok =
            !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
        if ok {
            Some(p)
        } else {
            self.error(
                at,
                format!(
                    "{:?} must be a relative path below the cgroup root, without `..`",
                    p.display()
                ),
            );
            None
        }
    }

    fn selector(&mut self, at: &str, raw: RawSelect, base: &Path) -> Option<Selector> {
        let given: Vec<&str> = [
            raw.exe.as_ref().map(|_| "exe"),
            raw.cmdline.as_ref().map(|_| "cmdline"),
            raw.pidfile.as_ref().map(|_| "pidfile"),
            raw.systemd_unit.as_ref().map(|_| "systemd_unit"),
            raw.cgroup.as_ref().map(|_| "cgroup"),
        ]
        .into_iter()
        .flatten()
        .collect();
        const KINDS: &str = "`exe`, `cmdline`, `pidfile`, `systemd_unit` or `cgroup`";
        match given.len() {
            0 => {
                self.error(
                    &format!("{at}.select"),
                    format!("a selector is required: {KINDS}"),
                );
                return None;
            }
            1 => {}
            _ => {
                self.error(
                    &format!("{at}.select"),
                    format!(
                        "choose exactly one selector: {KINDS}, not {}",
                        given
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
                return None;
            }
        }
        if let Some(exe) = raw.exe {
            if exe.is_empty() || exe.contains('/') {
                self.error(
                    &format!("{at}.select.exe"),
                    format!(
                        "{exe:?} must be an executable's file name (e.g. `hft-engine`), not a path"
                    ),
                );
                return None;
            }
            return Some(Selector::Exe(exe));
        }
        if let Some(pattern) = raw.cmdline {
            return match Regex::new(&pattern) {
                Ok(re) => Some(Selector::Cmdline(re)),
                Err(e) => {
                    self.error(
                        &format!("{at}.select.cmdline"),
                        format!("invalid regex {pattern:?}: {}", one_line_regex_error(&e)),
                    );
                    None
                }
            };
        }
        if let Some(pidfile) = raw.pidfile {
            if pidfile.as_os_str().is_empty() {
                self.error(&format!("{at}.select.pidfile"), "must not be empty");
                return None;
            }
            return Some(Selector::Pidfile(api_config::relative_to(base, &pidfile)));
        }
        if let Some(unit) = raw.systemd_unit {
            let valid = unit.len() <= 256
                && !unit.starts_with('-')
                && unit.contains('.')
                && unit
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
            if !valid {
                self.error(
                    &format!("{at}.select.systemd_unit"),
                    format!("{unit:?} is not a systemd unit name such as `hft-engine.service`"),
                );
                return None;
            }
            return Some(Selector::SystemdUnit(unit));
        }
        let cgroup = raw.cgroup?;
        self.relative_cgroup(&format!("{at}.select.cgroup"), cgroup)
            .map(Selector::Cgroup)
    }

    fn app(&mut self, at: &str, raw: RawApp, resizes: bool, base: &Path) -> Option<AppConfig> {
        let selector = self.selector(at, raw.select, base);
        let explicit = raw.cgroup.is_some();
        let mut cgroup = raw
            .cgroup
            .and_then(|p| self.relative_cgroup(&format!("{at}.cgroup"), p));
        match &selector {
            Some(Selector::SystemdUnit(_)) if explicit => self.error(
                &format!("{at}.cgroup"),
                "a systemd unit's cgroup belongs to systemd: its limits are set with `systemctl set-property`; remove `cgroup`",
            ),
            Some(Selector::Cgroup(path)) if cgroup.is_none() && !explicit => {
                cgroup = Some(path.clone());
            }
            Some(Selector::SystemdUnit(_)) | None => {}
            Some(_) if !explicit && resizes => self.warning(
                at,
                format!(
                    "app {:?} has no `cgroup`: reallocate and set_limits commands for it will be refused",
                    raw.name
                ),
            ),
            Some(_) => {}
        }

        let probe = raw.probe.and_then(|p| self.probe(at, p));
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

    fn probe(&mut self, at: &str, raw: RawProbe) -> Option<Probe> {
        match (raw.http, raw.tcp) {
            (Some(http), None) => {
                let url_at = format!("{at}.probe.http.url");
                let url = check_http_url(&http.url).unwrap_or_else(|msg| {
                    self.error(&url_at, msg);
                    String::new()
                });
                let timeout = self.positive(
                    &format!("{at}.probe.http.timeout"),
                    http.timeout,
                    DEFAULT_PROBE_TIMEOUT,
                );
                let expect_status = http.expect_status.unwrap_or(200);
                if !(100..=599).contains(&expect_status) {
                    self.error(
                        &format!("{at}.probe.http.expect_status"),
                        format!("{expect_status} is not an HTTP status code (100-599)"),
                    );
                }
                if http.expect_body.as_deref() == Some("") {
                    self.error(
                        &format!("{at}.probe.http.expect_body"),
                        "must not be empty (remove it to accept any body)",
                    );
                }
                Some(Probe::Http(HttpProbe {
                    url,
                    timeout,
                    expect_status,
                    expect_body: http.expect_body,
                }))
            }
            (None, Some(tcp)) => {
                let ok = tcp.address.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !ok {
                    self.error(
                        &format!("{at}.probe.tcp.address"),
                        format!("{:?} must be `host:port`, e.g. 127.0.0.1:5432", tcp.address),
                    );
                }
                let timeout = self.positive(
                    &format!("{at}.probe.tcp.timeout"),
                    tcp.timeout,
                    DEFAULT_PROBE_TIMEOUT,
                );
                Some(Probe::Tcp(TcpProbe {
                    address: tcp.address,
                    timeout,
                }))
            }
            (Some(_), Some(_)) => {
                self.error(
                    &format!("{at}.probe"),
                    "choose exactly one probe: `http` or `tcp`, not both",
                );
                None
            }
            (None, None) => {
                self.error(&format!("{at}.probe"), "a probe needs `http` or `tcp`");
                None
            }
        }
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
            if let (Some(c), Some(clear)) = (condition.as_ref(), r.clear) {
                if let Err(msg) = c.check_clear(clear) {
                    self.error(&format!("{at}.clear"), msg);
                    ok = false;
                }
            }
            if let (Some(condition), true) = (condition, ok) {
                out.push(Rule {
                    name: r.name,
                    condition,
                    clear: r.clear,
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

impl RawSize {
    fn bytes(&self) -> Result<u64, String> {
        match self {
            RawSize::Bytes(b) => Ok(*b),
            RawSize::Text(t) => parse_size(t),
        }
    }
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `100MB`, `4096` or `4096B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?} (write e.g. 64MiB, 512KiB, 1GiB)"))?;
    let factor: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => MIB,
        "GiB" => MIB * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes as u64)
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
                max_cpu_cores: 2.0,
                max_memory_bytes: Some(8192 * 1024 * 1024),
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
            cfg.apps[1].probe.as_ref().map(Probe::timeout),
            Some(StdDuration::from_millis(200))
        );
        assert_eq!(cfg.host_rules.len(), 3);
        assert_eq!(cfg.host_rules[1].condition.metric, Metric::MemUsedPct);
        assert_eq!(
            (cfg.host_rules[2].condition.metric, cfg.host_rules[2].clear),
            (Metric::Load5, Some(6.0))
        );
        assert!(!cfg.host.is_empty(), "host: auto resolves to the hostname");
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        // Every selector kind but `cgroup` is shown; each probe kind too.
        let kinds: Vec<&str> = cfg.apps.iter().map(|a| a.selector.kind()).collect();
        assert_eq!(
            kinds,
            [
                "exe",
                "exe",
                "cmdline",
                "pidfile",
                "systemd_unit",
                "cmdline"
            ]
        );
        assert_eq!(cfg.apps[4].systemd_unit(), Some("insurance-claims.service"));
        assert_eq!(cfg.apps[4].cgroup, None);
        assert!(matches!(&cfg.apps[3].probe, Some(Probe::Tcp(t)) if t.address == "127.0.0.1:8104"));
        assert!(
            matches!(&cfg.apps[1].probe, Some(Probe::Http(h)) if h.expect_body.as_deref() == Some("UP"))
        );
        assert_eq!(cfg.apps[1].rules[0].clear, Some(70.0));
        assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/fincorp-agent"));
        assert_eq!(
            cfg.spool,
            SpoolConfig {
                max_bytes: 64 << 20,
                when_full: FullPolicy::DropOldest
            }
        );
        assert_eq!(cfg.shutdown_grace, StdDuration::from_secs(5));
        assert_eq!(cfg.metrics_listen, Some("127.0.0.1:9472".parse().unwrap()));
        assert_eq!(
            cfg.overhead_budget,
            Some(OverheadBudget {
                cpu_pct: 0.5,
                rss_bytes: 15 << 20,
                window: StdDuration::from_secs(30),
                max_sample_interval: StdDuration::from_secs(10),
            })
        );
        let a = &cfg.actions;
        assert_eq!(
            a.set_limits,
            Some(SetLimitsBounds {
                max_cpu_cores: 2.0,
                min_memory_bytes: 256 << 20,
                max_memory_bytes: 8192 << 20,
            })
        );
        assert!(
            !a.restart_unit && a.run_script.is_none(),
            "disabled in the example"
        );
        assert_eq!(
            a.rate_limit,
            RateLimit {
                max_commands: 10,
                per: StdDuration::from_secs(60)
            }
        );
        assert_eq!(a.systemctl, PathBuf::from("systemctl"));
    }

    #[test]
    fn new_sections_are_validated_with_positions() {
        let text = MINIMAL.replace(
            "correlator:\n",
            "\
state_dir: state
spool:
  max_size: 10KiB
  when_full: panic
metrics:
  listen: 0.0.0.0:9472
overhead_budget:
  cpu_pct: -1
  max_sample_interval: 100ms
correlator:
",
        ) + "\
actions:
  set_limits:
    enabled: true
    max_cpu_cores: 2
    min_memory_mb: 512
    max_memory_mb: 256
  run_script:
    enabled: true
  rate_limit:
    max_commands: 0
    per: 1m
";
        let errs = errors(&text);
        let expected = [
            "agent.yaml:5:13: error: 10240 bytes is too small; at least 65536 (64KiB) (at spool.max_size)",
            "agent.yaml:6:14: error: unknown policy \"panic\" (expected drop_oldest or block) (at spool.when_full)",
            "agent.yaml:8:11: error: 0.0.0.0:9472 is not a loopback address: /metrics and /healthz are unauthenticated and listen on 127.0.0.1 or [::1] only (at metrics.listen)",
            "agent.yaml:10:12: error: must be a number greater than 0 (percent of one core) (at overhead_budget.cpu_pct)",
            "agent.yaml:11:24: error: must not be shorter than sample_interval (at overhead_budget.max_sample_interval)",
            "agent.yaml:27:20: error: must not be larger than max_memory_mb (at actions.set_limits.min_memory_mb)",
            "agent.yaml:30:5: error: `dir` (the allowlist directory) is required when run_script is enabled (at actions.run_script)",
            "agent.yaml:32:19: error: must be at least 1 (disable actions in the allowlist instead) (at actions.rate_limit.max_commands)",
        ];
        assert_eq!(errs, expected, "got:\n{}", errs.join("\n"));
    }

    #[test]
    fn selectors_probes_and_clear_thresholds_are_validated() {
        let text = "\
version: 1
host: web01
correlator:
  url: http://c:9470
  key_id: fleet
  secret: { env: K }
apps:
  - name: A
    select: { systemd_unit: 'not a unit' }
  - name: B
    select: { systemd_unit: b.service }
    cgroup: fincorp/B
  - name: C
    select: { cgroup: ../up }
  - name: D
    select: {}
    probe: { tcp: { address: nohost } }
  - name: E
    select: { pidfile: e.pid }
    probe: {}
    rules:
      - name: r
        when: cpu > 80
        clear: 90
  - name: F
    select: { cgroup: fincorp/F }
    probe: { http: { url: 'http://x/', expect_body: '' } }
";
        let errs = errors(text);
        let expected = [
            "agent.yaml:9:29: error: \"not a unit\" is not a systemd unit name such as `hft-engine.service` (at apps[0].select.systemd_unit)",
            "agent.yaml:12:13: error: a systemd unit's cgroup belongs to systemd: its limits are set with `systemctl set-property`; remove `cgroup` (at apps[1].cgroup)",
            "agent.yaml:14:23: error: \"../up\" must be a relative path below the cgroup root, without `..` (at apps[2].select.cgroup)",
            "agent.yaml:16:13: error: a selector is required: `exe`, `cmdline`, `pidfile`, `systemd_unit` or `cgroup` (at apps[3].select)",
            "agent.yaml:17:30: error: \"nohost\" must be `host:port`, e.g. 127.0.0.1:5432 (at apps[3].probe.tcp.address)",
            "agent.yaml:20:12: error: a probe needs `http` or `tcp` (at apps[4].probe)",
            "agent.yaml:24:16: error: `clear` must be at most the threshold 80 of `cpu > 80`: the alert resolves once `cpu > clear` no longer holds (at apps[4].rules[0].clear)",
            "agent.yaml:27:53: error: must not be empty (remove it to accept any body) (at apps[5].probe.http.expect_body)",
        ];
        assert_eq!(errs, expected, "got:\n{}", errs.join("\n"));
        // A cgroup selector is also the app's cgroup; a pidfile is relative to the config.
        let ok = parse(&text.replace(
            "    select: { cgroup: ../up }\n",
            "    select: { cgroup: fincorp/C }\n",
        ));
        assert!(ok.is_err());
        let cfg = parse(
            "version: 1\nhost: h\ncorrelator: { url: 'http://c', key_id: k, secret: { env: K } }\napps:\n  - name: C\n    select: { cgroup: fincorp/C }\n  - name: P\n    select: { pidfile: run/p.pid }\n",
        )
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.apps[0].cgroup.as_deref(), Some(Path::new("fincorp/C")));
        assert!(
            matches!(&cfg.apps[1].selector, Selector::Pidfile(p) if p == Path::new("./run/p.pid"))
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size(" 2 KB "), Ok(2_000));
        assert!(
            parse_size("64 parsecs")
                .unwrap_err()
                .starts_with("unknown size unit")
        );
        assert!(parse_size("lots").is_err());
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
            "agent.yaml:13:15: error: unknown metric `cpu_load`; app rules can use cpu, host_cpu, rss_mb, processes, up, throttled_pct, throttled_ms, latency_ms, probe_up (at apps[0].rules[0].when)",
            "agent.yaml:14:15: error: duplicate rule name \"r1\" (first defined at index 0) (at apps[0].rules[1].name)",
            "agent.yaml:15:15: error: expected `<metric> <op> <number>` with op one of >, >=, <, <=, e.g. `cpu > 80`; got \"rss_mb >> 5\" (at apps[0].rules[1].when)",
            "agent.yaml:16:19: error: unknown severity \"page\" (expected info, warning or critical) (at apps[0].rules[1].severity)",
            "agent.yaml:17:11: error: duplicate app name \"A\" (first defined at apps[0]) (at apps[1].name)",
            "agent.yaml:19:7: error: choose exactly one selector: `exe`, `cmdline`, `pidfile`, `systemd_unit` or `cgroup`, not `exe` and `cmdline` (at apps[1].select)",
            "agent.yaml:23:15: error: metric `latency_ms` needs a probe, but this app has no `probe` (at apps[1].rules[0].when)",
            "agent.yaml:26:11: error: unknown metric `rss_mb`; host rules can use cpu, cpu_core_max, mem_used_pct, mem_available_mb, swap_used_pct, load1, load5, load15 (at host_rules[0].when)",
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
                "agent.yaml:14:5: warning: app \"A\" has no `cgroup`: reallocate and set_limits commands for it will be refused (at apps[0])",
            ]
        );
        assert_eq!(
            cfg.actions.reallocate,
            Some(ReallocateLimits {
                max_increase_pct: 20.0,
                max_cpu_cores: 1.0,
                max_memory_bytes: None,
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
