//! The correlator's configuration: raw YAML (stage one), validated into
//! [`Config`] (stage two) with every problem located as file:line:col.
//! Playbooks are loaded and validated here too, so a broken playbook stops
//! the correlator at start instead of at 3 a.m.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fincorp_api::config::{Duration, SecretRef, config_dir, relative_to};
use fincorp_api::signing::SigningKey;
use fincorp_api::yaml::{Diagnostics, Document};
use fincorp_integrations::servicenow::{
    FieldMapping, OAuthConfig, ServiceNowConfig, ServiceNowOptions,
};
use fincorp_integrations::vsphere::VsphereConfig;
use fincorp_playbooks::Playbook;
use serde::Deserialize;

use crate::core::{self, AlertFilter, AppInfo, GroupRule, HostInfo, KeyPart, Topology};
use crate::ingest::alertmanager::Mapping;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    listen: String,
    state_dir: PathBuf,
    /// How long event ids are remembered to recognise resends.
    dedup_window: Option<Duration>,
    /// Most event ids remembered; past it the oldest are forgotten early.
    dedup_max_ids: Option<u64>,
    agent_auth: RawAuth,
    #[serde(default)]
    correlation: RawCorrelation,
    playbooks_dir: PathBuf,
    #[serde(default)]
    integrations: RawIntegrations,
    #[serde(default)]
    alertmanager: Option<RawAlertmanager>,
    #[serde(default)]
    automation: RawAutomation,
    /// Secrets playbooks read as `secrets.NAME`.
    #[serde(default)]
    secrets: std::collections::BTreeMap<String, SecretRef>,
    #[serde(default)]
    api: RawApi,
    /// Predictive analytics: forecasts and anomaly detection (every key has
    /// a default; see `fincorp_predict::Config`).
    #[serde(default)]
    predict: fincorp_predict::Config,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default)]
    tokens: Vec<RawToken>,
    /// Serve HTTPS with these PEM files (relative to this file).
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    /// Recorded as the actor of everything done with the token.
    name: String,
    /// viewer, operator or admin.
    role: String,
    /// Hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAutomation {
    /// Runs of all playbooks together, per window.
    rate_limit: Option<RawBudget>,
    /// An alert on a host/app that starts within this after one of our runs
    /// changed that host/app is attributed to the run.
    causal_window: Option<Duration>,
    #[serde(default)]
    escalation: RawEscalation,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    max: u32,
    per: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEscalation {
    /// POSTed a JSON description of every tripped breaker.
    webhook: Option<String>,
    /// Also open a ServiceNow incident (when ServiceNow is configured).
    #[serde(default = "yes")]
    servicenow: bool,
}

impl Default for RawEscalation {
    fn default() -> Self {
        RawEscalation {
            webhook: None,
            servicenow: true,
        }
    }
}

fn yes() -> bool {
    true
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorrelation {
    window: Option<Duration>,
    max_window: Option<Duration>,
    resolve_after: Option<Duration>,
    reopen_window: Option<Duration>,
    close_after: Option<Duration>,
    flapping: Option<RawFlapping>,
    #[serde(default)]
    rules: Vec<RawRule>,
    /// The inventory file, relative to this one.
    topology: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlapping {
    changes: usize,
    within: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    #[serde(default, rename = "match")]
    filter: RawFilter,
    group_by: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    #[serde(default)]
    sources: Vec<String>,
    #[serde(default)]
    alerts: Vec<String>,
    #[serde(default)]
    apps: Vec<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    version: u32,
    #[serde(default)]
    hosts: std::collections::BTreeMap<String, RawHost>,
    #[serde(default)]
    apps: std::collections::BTreeMap<String, RawTopoApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    site: Option<String>,
    rack: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopoApp {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    host_labels: Option<Vec<String>>,
    app_labels: Option<Vec<String>>,
    severity_label: Option<String>,
    severity_map: Option<std::collections::BTreeMap<String, fincorp_api::wire::Severity>>,
    default_severity: Option<fincorp_api::wire::Severity>,
    default_host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrations {
    servicenow: Option<RawServiceNow>,
    vsphere: Option<RawVsphere>,
}

/// vCenter, for `vsphere.reallocate` and `failover`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVsphere {
    url: String,
    username: String,
    password: SecretRef,
    #[serde(default = "default_vsphere_timeout")]
    timeout: Duration,
}

fn default_vsphere_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceNow {
    url: String,
    username: String,
    password: SecretRef,
    #[serde(default = "default_sn_timeout")]
    timeout: Duration,
    /// Log in with OAuth (password grant, refreshed) instead of basic auth.
    #[serde(default)]
    oauth: Option<RawOAuth>,
    /// Fields set on new incidents: `default` and per app.
    #[serde(default)]
    fields: FieldMapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOAuth {
    client_id: String,
    client_secret: SecretRef,
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
    pub dedup_window_ms: i64,
    pub dedup_max_ids: usize,
    pub max_skew_ms: i64,
    pub keys: Vec<SigningKey>,
    pub correlation: core::Config,
    pub alertmanager: Mapping,
    pub playbooks_dir: PathBuf,
    pub playbooks: Vec<Playbook>,
    pub servicenow: Option<ServiceNow>,
    /// vCenter (`integrations.vsphere`).
    pub vsphere: Option<VsphereConfig>,
    pub automation: Automation,
    /// Secrets by name, for playbook templates.
    pub secrets: Secrets,
    /// Warnings about risky playbooks (logged at start).
    pub playbook_warnings: Vec<fincorp_api::yaml::Diagnostic>,
    /// API bearer tokens; empty: the API is open (loopback only).
    pub tokens: Vec<crate::api::auth::Token>,
    /// Predictive analytics (`predict:`), validated; read at start only.
    pub predict: fincorp_predict::Config,
    /// HTTPS: the certificate chain and key (PEM), checked at load.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Config {
    /// The SQLite database file.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("correlator.db")
    }
}

/// The ServiceNow instance and how to talk to it.
#[derive(Debug)]
pub struct ServiceNow {
    pub config: ServiceNowConfig,
    pub options: ServiceNowOptions,
}

/// Command-line values that take precedence over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
}

/// Secrets by name.
pub type Secrets = std::collections::BTreeMap<String, fincorp_api::config::Secret>;

/// Fleet-wide automation guardrails.
#[derive(Debug, Clone, PartialEq)]
pub struct Automation {
    /// Runs of all playbooks together.
    pub fleet_budget: Option<fincorp_playbooks::model::Budget>,
    pub causal_window_ms: i64,
    pub escalation_webhook: Option<String>,
    pub escalation_servicenow: bool,
}

impl Default for Automation {
    fn default() -> Self {
        Automation {
            fleet_budget: None,
            causal_window_ms: DEFAULT_CAUSAL_WINDOW_MS,
            escalation_webhook: None,
            escalation_servicenow: true,
        }
    }
}

/// How long after one of our runs changed a target an alert on it is
/// attributed to the run.
pub const DEFAULT_CAUSAL_WINDOW_MS: i64 = 600_000;

/// Loads the playbooks of `dir` and checks that the secrets they read are
/// configured. Used at start and on reload.
pub fn load_playbooks(
    dir: &Path,
    secrets: &Secrets,
) -> Result<(Vec<Playbook>, Vec<fincorp_api::yaml::Diagnostic>), Diagnostics> {
    let loaded = fincorp_playbooks::load_dir(dir)?;
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut playbooks = Vec::new();
    for l in loaded {
        for name in &l.playbook.secrets {
            if !secrets.contains_key(name) {
                let doc = Document::read(&l.playbook.file)?;
                errors.push(doc.error(
                    "steps",
                    format!(
                        "reads secrets.{name}, which is not in the correlator's `secrets:` section"
                    ),
                ));
            }
        }
        warnings.extend(l.warnings);
        playbooks.push(l.playbook);
    }
    if errors.is_empty() {
        Ok((playbooks, warnings))
    } else {
        Err(Diagnostics(errors))
    }
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

    if raw
        .dedup_window
        .is_some_and(|d| d.0 < std::time::Duration::from_secs(60))
    {
        errors.push(doc.error("dedup_window", "dedup_window must be at least 1m"));
    }
    if raw.dedup_max_ids.is_some_and(|n| n < 1_000) {
        errors.push(doc.error("dedup_max_ids", "dedup_max_ids must be at least 1000"));
    }
    let correlation = correlation(doc, &base, &raw.correlation, &mut errors);
    let alertmanager = alertmanager_mapping(doc, raw.alertmanager.as_ref(), &mut errors);

    let servicenow = raw
        .integrations
        .servicenow
        .as_ref()
        .and_then(|sn| servicenow(doc, &base, sn, &mut errors));
    let vsphere = raw
        .integrations
        .vsphere
        .as_ref()
        .and_then(|vc| vsphere(doc, &base, vc, &mut errors));

    let mut secrets = Secrets::new();
    for (name, r) in &raw.secrets {
        match r.resolve(&base) {
            Ok(secret) => {
                secrets.insert(name.clone(), secret);
            }
            Err(e) => errors.push(doc.error(&format!("secrets.{name}"), e.to_string())),
        }
    }
    let automation = automation(doc, &raw.automation, &mut errors);
    let tokens = api_tokens(doc, &raw.api, &mut errors);
    if let Err(problems) = raw.predict.validate() {
        for p in problems {
            errors.push(doc.error(&format!("predict.{}", p.key_path), p.message));
        }
    }
    let tls = raw.api.tls.as_ref().and_then(|t| {
        let (cert, key) = (relative_to(&base, &t.cert), relative_to(&base, &t.key));
        match crate::tls::acceptor(&cert, &key) {
            Ok(_) => Some((cert, key)),
            Err(e) => {
                errors.push(doc.error("api.tls", format!("{e:#}")));
                None
            }
        }
    });
    if let Some(addr) = listen {
        if tokens.is_empty() && !addr.ip().is_loopback() {
            errors.push(doc.error(
                "listen",
                format!("{addr} is not a loopback address: configure api.tokens before serving the API beyond this host"),
            ));
        }
    }

    let playbooks_dir = relative_to(&base, &raw.playbooks_dir);
    let (playbooks, playbook_warnings) = match load_playbooks(&playbooks_dir, &secrets) {
        Ok(p) => p,
        Err(d) => {
            errors.extend(d.0);
            (vec![], vec![])
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
        dedup_window_ms: raw
            .dedup_window
            .map(Duration::as_millis_i64)
            .unwrap_or(DEFAULT_DEDUP_WINDOW_MS),
        dedup_max_ids: raw.dedup_max_ids.map_or(DEFAULT_DEDUP_MAX_IDS, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        }),
        max_skew_ms: raw.agent_auth.max_skew.as_millis_i64(),
        keys,
        correlation,
        alertmanager,
        playbooks_dir,
        playbooks,
        servicenow,
        vsphere,
        automation,
        secrets,
        playbook_warnings,
        tokens,
        tls,
        predict: raw.predict,
    })
}

/// The `api.tokens` section.
fn api_tokens(
    doc: &Document,
    raw: &RawApi,
    errors: &mut Vec<fincorp_api::yaml::Diagnostic>,
) -> Vec<crate::api::auth::Token> {
    let mut out: Vec<crate::api::auth::Token> = Vec::new();
    for (i, t) in raw.tokens.iter().enumerate() {
        let at = |k: &str| format!("api.tokens[{i}].{k}");
        let role = crate::api::auth::Role::parse(&t.role);
        if role.is_none() {
            errors.push(doc.error(
                &at("role"),
                format!("role must be viewer, operator or admin, not {:?}", t.role),
            ));
        }
        let digest = hex::decode(t.sha256.trim())
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok());
        if digest.is_none() {
            errors.push(doc.error(&at("sha256"), "sha256 must be 64 hex digits: the SHA-256 of the token (printf %s TOKEN | sha256sum)"));
        }
        if t.name.trim().is_empty() || out.iter().any(|o| o.name == t.name) {
            errors.push(doc.error(
                &at("name"),
                format!("token names must be unique and not empty ({:?})", t.name),
            ));
        }
        if let (Some(role), Some(sha256)) = (role, digest) {
            if out.iter().any(|o| o.sha256 == sha256) {
                errors.push(doc.error(&at("sha256"), "the same token is listed twice"));
            }
            out.push(crate::api::auth::Token {
                name: t.name.clone(),
                role,
                sha256,
            });
        }
    }
    out
}

/// The `automation` section.
fn automation(
    doc: &Document,
    raw: &RawAutomation,
    errors: &mut Vec<fincorp_api::yaml::Diagnostic>,
) -> Automation {
    let mut out = Automation::default();
    if let Some(b) = &raw.rate_limit {
        if b.max == 0 || b.per.0.is_zero() {
            errors.push(doc.error(
                "automation.rate_limit",
                "max and per must be above 0 (to stop all automation, use the kill switch)",
            ));
        }
        out.fleet_budget = Some(fincorp_playbooks::model::Budget {
            max: b.max,
            per_ms: b.per.as_millis_i64(),
        });
    }
    if let Some(w) = raw.causal_window {
        out.causal_window_ms = w.as_millis_i64();
    }
    if let Some(url) = &raw.escalation.webhook {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            errors.push(doc.error(
                "automation.escalation.webhook",
                "the webhook must be an http:// or https:// URL",
            ));
        }
        out.escalation_webhook = Some(url.clone());
    }
    out.escalation_servicenow = raw.escalation.servicenow;
    out
}

/// The `integrations.vsphere` section.
fn vsphere(
    doc: &Document,
    base: &Path,
    vc: &RawVsphere,
    errors: &mut Vec<fincorp_api::yaml::Diagnostic>,
) -> Option<VsphereConfig> {
    let at = |key: &str| format!("integrations.vsphere.{key}");
    let before = errors.len();
    if !(vc.url.starts_with("https://") || vc.url.starts_with("http://")) {
        errors.push(doc.error(
            &at("url"),
            "url must start with https:// (or http:// for a local simulator)",
        ));
    }
    if vc.username.trim().is_empty() {
        errors.push(doc.error(&at("username"), "username must not be empty"));
    } else if vc.username.contains(':') {
        errors.push(doc.error(
            &at("username"),
            "username must not contain ':' (it is sent with basic auth)",
        ));
    }
    if vc.timeout.0.is_zero() {
        errors.push(doc.error(&at("timeout"), "timeout must be above 0"));
    }
    let password = vc
        .password
        .resolve(base)
        .map_err(|e| errors.push(doc.error(&at("password"), e)))
        .ok();
    if errors.len() > before {
        return None;
    }
    Some(VsphereConfig {
        url: vc.url.trim_end_matches('/').to_owned(),
        username: vc.username.clone(),
        password: password?,
        timeout: vc.timeout.0,
    })
}

/// The `integrations.servicenow` section.
fn servicenow(
    doc: &Document,
    base: &Path,
    sn: &RawServiceNow,
    errors: &mut Vec<fincorp_api::yaml::Diagnostic>,
) -> Option<ServiceNow> {
    let at = |key: &str| format!("integrations.servicenow.{key}");
    let before = errors.len();
    if !(sn.url.starts_with("https://") || sn.url.starts_with("http://")) {
        errors.push(doc.error(
            &at("url"),
            "url must start with https:// (or http:// for a local simulator)",
        ));
    }
    if sn.username.is_empty() {
        errors.push(doc.error(&at("username"), "username must not be empty"));
    }
    let password = sn
        .password
        .resolve(base)
        .map_err(|e| errors.push(doc.error(&at("password"), e)))
        .ok();
    let oauth = sn.oauth.as_ref().and_then(|o| {
        if o.client_id.trim().is_empty() {
            errors.push(doc.error(&at("oauth.client_id"), "client_id must not be empty"));
        }
        let secret = o
            .client_secret
            .resolve(base)
            .map_err(|e| errors.push(doc.error(&at("oauth.client_secret"), e)))
            .ok()?;
        Some(OAuthConfig {
            client_id: o.client_id.clone(),
            client_secret: secret,
        })
    });
    if let Err(problems) = sn.fields.validate() {
        for p in problems {
            errors.push(doc.error(&at(&format!("fields.{}", p.key_path)), p.message));
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(ServiceNow {
        config: ServiceNowConfig {
            url: sn.url.trim_end_matches('/').to_owned(),
            username: sn.username.clone(),
            password: password?,
            timeout: sn.timeout.0,
        },
        options: ServiceNowOptions {
            oauth,
            field_mapping: sn.fields.clone(),
            ..Default::default()
        },
    })
}

/// Six hours of event ids: longer than any agent spool outage we expect.
pub const DEFAULT_DEDUP_WINDOW_MS: i64 = 6 * 3_600_000;
/// About 1 GB of memory at about 50 bytes per id.
pub const DEFAULT_DEDUP_MAX_IDS: usize = 20_000_000;

fn ms(d: Option<Duration>, default_ms: i64) -> i64 {
    d.map(Duration::as_millis_i64).unwrap_or(default_ms)
}

/// The `correlation` section: timings, grouping rules and the topology file.
fn correlation(
    doc: &Document,
    base: &Path,
    raw: &RawCorrelation,
    errors: &mut Vec<fincorp_api::yaml::Diagnostic>,
) -> core::Config {
    let d = core::Config::with_defaults();
    let mut cfg = core::Config {
        window_ms: ms(raw.window, d.window_ms),
        max_window_ms: ms(raw.max_window, d.max_window_ms),
        resolve_after_ms: ms(raw.resolve_after, d.resolve_after_ms),
        reopen_window_ms: ms(raw.reopen_window, d.reopen_window_ms),
        close_after_ms: ms(raw.close_after, d.close_after_ms),
        flap_transitions: raw
            .flapping
            .as_ref()
            .map(|f| f.changes)
            .unwrap_or(d.flap_transitions),
        flap_window_ms: raw
            .flapping
            .as_ref()
            .map(|f| f.within.as_millis_i64())
            .unwrap_or(d.flap_window_ms),
        rules: d.rules,
        topology: Topology::default(),
    };
    if cfg.window_ms <= 0 {
        errors.push(doc.error("correlation.window", "window must be above 0"));
    }
    if cfg.max_window_ms < cfg.window_ms {
        errors.push(doc.error(
            "correlation.max_window",
            "max_window must be at least window",
        ));
    }
    if cfg.close_after_ms < cfg.reopen_window_ms {
        errors.push(doc.error(
            "correlation.close_after",
            "close_after must be at least reopen_window",
        ));
    }
    if raw.flapping.as_ref().is_some_and(|f| f.changes < 2) {
        errors.push(doc.error("correlation.flapping.changes", "changes must be at least 2"));
    }
    if !raw.rules.is_empty() {
        cfg.rules.clear();
        for (i, r) in raw.rules.iter().enumerate() {
            if r.name.trim().is_empty() {
                errors.push(doc.error(
                    &format!("correlation.rules[{i}].name"),
                    "name must not be empty",
                ));
            } else if raw.rules[..i].iter().any(|x| x.name == r.name) {
                errors.push(doc.error(
                    &format!("correlation.rules[{i}].name"),
                    format!("duplicate rule name {:?}", r.name),
                ));
            }
            if r.group_by.is_empty() {
                errors.push(doc.error(
                    &format!("correlation.rules[{i}].group_by"),
                    "group_by needs at least one key",
                ));
            }
            let mut parts = Vec::new();
            for (j, k) in r.group_by.iter().enumerate() {
                match KeyPart::parse(k) {
                    Ok(p) => parts.push(p),
                    Err(e) => {
                        errors.push(doc.error(&format!("correlation.rules[{i}].group_by[{j}]"), e))
                    }
                }
            }
            cfg.rules.push(GroupRule {
                name: r.name.clone(),
                filter: AlertFilter {
                    sources: r.filter.sources.clone(),
                    names: r.filter.alerts.clone(),
                    apps: r.filter.apps.clone(),
                    labels: r.filter.labels.clone(),
                },
                group_by: parts,
            });
        }
    }
    if let Some(file) = &raw.topology {
        let path = relative_to(base, file);
        match topology(&path) {
            Ok(t) => cfg.topology = t,
            Err(d) => errors.extend(d.0),
        }
    }
    cfg
}

/// Reads and checks an inventory file.
pub fn topology(path: &Path) -> Result<Topology, Diagnostics> {
    let doc = Document::read(path)?;
    let raw: RawTopology = doc.parse()?;
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
    for (app, info) in &raw.apps {
        for (j, dep) in info.depends_on.iter().enumerate() {
            if !raw.apps.contains_key(dep) {
                errors.push(doc.error(
                    &format!("apps.{app}.depends_on[{j}]"),
                    format!("{dep:?} is not an app of this inventory (list it under apps, even with no hosts)"),
                ));
            } else if dep == app {
                errors.push(doc.error(
                    &format!("apps.{app}.depends_on[{j}]"),
                    "an app cannot depend on itself",
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(Diagnostics(errors));
    }
    Ok(Topology {
        hosts: raw
            .hosts
            .into_iter()
            .map(|(h, i)| {
                (
                    h,
                    HostInfo {
                        site: i.site,
                        rack: i.rack,
                    },
                )
            })
            .collect(),
        apps: raw
            .apps
            .into_iter()
            .map(|(a, i)| {
                (
                    a,
                    AppInfo {
                        hosts: i.hosts,
                        depends_on: i.depends_on,
                    },
                )
            })
            .collect(),
    })
}

fn alertmanager_mapping(
    doc: &Document,
    raw: Option<&RawAlertmanager>,
    errors: &mut Vec<fincorp_api::yaml::Diagnostic>,
) -> Mapping {
    let mut m = Mapping::default();
    let Some(raw) = raw else { return m };
    for (field, value) in [
        ("host_labels", &raw.host_labels),
        ("app_labels", &raw.app_labels),
    ] {
        if value.as_ref().is_some_and(Vec::is_empty) {
            errors.push(doc.error(
                &format!("alertmanager.{field}"),
                "give at least one label name",
            ));
        }
    }
    if let Some(v) = &raw.host_labels {
        m.host_labels = v.clone();
    }
    if let Some(v) = &raw.app_labels {
        m.app_labels = v.clone();
    }
    if let Some(v) = &raw.severity_label {
        m.severity_label = v.clone();
    }
    if let Some(v) = &raw.severity_map {
        m.severity_map = v.clone();
    }
    if let Some(v) = raw.default_severity {
        m.default_severity = v;
    }
    if let Some(v) = &raw.default_host {
        m.default_host = v.clone();
    }
    m
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
        std::fs::write(dir.join("vc.pass"), "vc-sim-password\n").unwrap();
        let topology = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/etc/fincorp/topology.yaml");
        text.replace("{ env: FINCORP_AGENT_KEY }", "{ file: agent.key }")
            .replace("{ env: FINCORP_SERVICENOW_PASSWORD }", "{ file: sn.pass }")
            .replace("{ env: FINCORP_VSPHERE_PASSWORD }", "{ file: vc.pass }")
            .replace(
                "topology: topology.yaml",
                &format!("topology: {}", topology.display()),
            )
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
            (cfg.correlation.window_ms, cfg.correlation.resolve_after_ms),
            (300_000, 5_000)
        );
        assert_eq!(cfg.correlation.rules, vec![core::GroupRule::same_host()]);
        assert!(
            cfg.correlation
                .topology
                .dependencies("FINCORP-APP-TRANSPROC")
                .contains(&"FINCORP-APP-CORE".to_string())
        );
        assert!(cfg.servicenow.is_some());
        let vc = cfg
            .vsphere
            .as_ref()
            .expect("the example configures vSphere");
        assert_eq!(
            (vc.url.as_str(), vc.username.as_str()),
            ("http://127.0.0.1:9473", "fincorp-automation@vsphere.local")
        );
        assert_eq!(vc.password.expose_str().unwrap(), "vc-sim-password");
        assert_eq!(vc.timeout, std::time::Duration::from_secs(30));
        assert!(
            cfg.playbooks
                .iter()
                .any(|p| p.name == "core-failover-london")
        );
        assert!(cfg.predict.enabled);
        let cpu = cfg
            .predict
            .metric("FINCORP-APP-TRANSPROC", fincorp_predict::Metric::Cpu);
        assert_eq!((cpu.threshold, cpu.horizon_ms), (Some(80.0), 300_000));
        assert!(
            cfg.playbooks
                .iter()
                .any(|p| p.name == "transproc-cpu-prediction")
        );
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
dedup_max_ids: 10
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
        assert!(
            all.contains(&format!(
                "{f}:16:16: error: dedup_max_ids must be at least 1000"
            )),
            "{all}"
        );
        assert_eq!(err.0.len(), 6, "{all}");
    }

    #[test]
    fn api_tokens_are_checked_and_required_beyond_loopback() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("agent.key"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("pb")).unwrap();
        let base = "version: 1
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { file: agent.key }
playbooks_dir: pb
";
        let file = dir.path().join("c.yaml");
        let load_text = |text: String| {
            std::fs::write(&file, text).unwrap();
            load(&file, &Overrides::default())
        };
        // Open API beyond this host: refused.
        let err = load_text(format!("{base}listen: 0.0.0.0:9470\n")).unwrap_err();
        assert!(err.to_string().contains("configure api.tokens"), "{err}");
        // Bad tokens are located.
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let err = load_text(format!(
            "{base}listen: 0.0.0.0:9470\napi:\n  tokens:\n    - {{name: a, role: root, sha256: {sha}}}\n    - {{name: b, role: viewer, sha256: abc}}\n"
        ))
        .unwrap_err();
        let all = err.to_string();
        assert!(
            all.contains(":11:") && all.contains("role must be viewer, operator or admin"),
            "{all}"
        );
        assert!(
            all.contains(":12:") && all.contains("sha256 must be 64 hex digits"),
            "{all}"
        );
        // Good tokens on any address.
        let cfg = load_text(format!(
            "{base}listen: 0.0.0.0:9470\napi:\n  tokens:\n    - {{name: ops, role: operator, sha256: {sha}}}\n"
        ))
        .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.tokens.len(), 1);
        assert_eq!(cfg.tokens[0].role, crate::api::auth::Role::Operator);
        // Loopback without tokens stays open.
        let cfg = load_text(format!("{base}listen: 127.0.0.1:9470\n")).unwrap();
        assert!(cfg.tokens.is_empty());
    }

    #[test]
    fn vsphere_problems_are_reported_where_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("agent.key"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("pb")).unwrap();
        let text = "\
version: 1
listen: 127.0.0.1:9470
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { file: agent.key }
playbooks_dir: pb
integrations:
  vsphere:
    url: vcenter.ny.fincorp.example
    username: 'domain:svc'
    password: { env: FINCORP_TEST_NO_SUCH_VC_PASSWORD }
    timeout: 0s
    insecure: true
";
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, text).unwrap();
        let all = load(&file, &Overrides::default()).unwrap_err().to_string();
        let f = file.display();
        assert!(
            all.contains(&format!("{f}:15:5: error: unknown field `insecure`")),
            "unknown keys are errors: {all}"
        );

        let file = dir.path().join("c2.yaml");
        std::fs::write(&file, text.replace("    insecure: true\n", "")).unwrap();
        let err = load(&file, &Overrides::default()).unwrap_err();
        let all = err.to_string();
        let f = file.display();
        for expected in [
            format!("{f}:11:10: error: url must start with https://"),
            format!("{f}:12:15: error: username must not contain ':'"),
            format!(
                "{f}:13:15: error: environment variable FINCORP_TEST_NO_SUCH_VC_PASSWORD is not set"
            ),
            format!("{f}:14:14: error: timeout must be above 0"),
        ] {
            assert!(all.contains(&expected), "{expected}\nin:\n{all}");
        }
        assert_eq!(err.0.len(), 4, "{all}");

        let file = dir.path().join("c3.yaml");
        std::fs::write(dir.path().join("vc.pass"), "pw\n").unwrap();
        std::fs::write(
            &file,
            "version: 1\nlisten: 127.0.0.1:9470\nstate_dir: state\nagent_auth:\n  keys:\n    - id: fleet\n      secret: { file: agent.key }\nplaybooks_dir: pb\nintegrations:\n  vsphere:\n    url: https://vcenter.ny.fincorp.example/\n    username: fincorp-automation@vsphere.local\n    password: { file: vc.pass }\n",
        )
        .unwrap();
        let cfg = load(&file, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
        let vc = cfg.vsphere.unwrap();
        assert_eq!(vc.url, "https://vcenter.ny.fincorp.example");
        assert_eq!(vc.password.expose_str().unwrap(), "pw", "trimmed");
        assert_eq!(vc.timeout, std::time::Duration::from_secs(30), "default");
        assert!(cfg.servicenow.is_none());
    }

    #[test]
    fn servicenow_oauth_and_field_mapping_are_checked_where_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("agent.key"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        std::fs::write(dir.path().join("sn.pass"), "pw").unwrap();
        std::fs::create_dir(dir.path().join("pb")).unwrap();
        let text = "\
version: 1
listen: 127.0.0.1:9470
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { file: agent.key }
playbooks_dir: pb
integrations:
  servicenow:
    url: https://fincorp.service-now.com
    username: svc
    password: { file: sn.pass }
    oauth:
      client_id: fincorp
      client_secret: { env: FINCORP_TEST_NO_SUCH_SECRET }
    fields:
      apps:
        FINCORP-APP-HFT: { state: \"6\" }
";
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, text).unwrap();
        let all = load(&file, &Overrides::default()).unwrap_err().to_string();
        let f = file.display();
        assert!(
            all.contains(&format!(
                "{f}:16:22: error: environment variable FINCORP_TEST_NO_SUCH_SECRET is not set"
            )),
            "{all}"
        );
        assert!(
            all.contains(&format!("{f}:19:35: error: state is set by FINCORP or the instance and cannot be mapped (at integrations.servicenow.fields.apps.FINCORP-APP-HFT.state)")),
            "{all}"
        );
    }

    #[test]
    fn predict_problems_are_reported_where_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("agent.key"),
            "0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("pb")).unwrap();
        let head = "\
version: 1
listen: 127.0.0.1:9470
state_dir: state
agent_auth:
  keys:
    - id: fleet
      secret: { file: agent.key }
playbooks_dir: pb
";
        let text = format!(
            "{head}predict:
  forecast:
    windows:
      - 30s
      - 2h
    min_r2: 1.5
  apps:
    FINCORP-APP-CORE:
      metrics:
        rss_mb: {{ threshold: 6144, horizon: 0s }}
"
        );
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, &text).unwrap();
        let err = load(&file, &Overrides::default()).unwrap_err();
        let all = err.to_string();
        let f = file.display();
        for expected in [
            format!(
                "{f}:13:9: error: must be at least 3s and at most history.raw_retention (at predict.forecast.windows[1])"
            ),
            format!("{f}:14:13: error: must be between 0 and 1 (at predict.forecast.min_r2)"),
            format!(
                "{f}:18:45: error: must be at least 1s (at predict.apps.FINCORP-APP-CORE.metrics.rss_mb.horizon)"
            ),
        ] {
            assert!(all.contains(&expected), "{expected}\nin:\n{all}");
        }
        assert_eq!(err.0.len(), 3, "{all}");

        let file = dir.path().join("c2.yaml");
        std::fs::write(&file, format!("{head}predict:\n  forcast: {{}}\n")).unwrap();
        let all = load(&file, &Overrides::default()).unwrap_err().to_string();
        assert!(
            all.contains("unknown field `forcast`"),
            "unknown keys are errors: {all}"
        );

        // Absent: on, with the defaults; `enabled: false` switches it off.
        let file = dir.path().join("c3.yaml");
        std::fs::write(&file, head).unwrap();
        let cfg = load(&file, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(cfg.predict, fincorp_predict::Config::default());
        std::fs::write(&file, format!("{head}predict:\n  enabled: false\n")).unwrap();
        let cfg = load(&file, &Overrides::default()).unwrap_or_else(|d| panic!("{d}"));
        assert!(!cfg.predict.enabled);
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
