//! The rollout a `rolling_patch` step describes, parsed and checked from
//! its rendered parameters: the batches, the failure threshold, the
//! minimum of healthy instances, the hooks and the health gate.

use std::time::Duration;

use serde_json::{Map, Value};

use super::super::{ActionError, as_duration_ms, as_f64, as_text, required_text};
use super::hook::{self, Hook};

/// App metrics a health check may read, and host metrics (`host_cpu` is
/// the host's CPU).
const APP_METRICS: &[&str] = &["probe_up", "latency_ms", "cpu", "rss_mb", "processes"];
const HOST_METRICS: &[&str] = &["host_cpu", "mem_used_pct"];
const OPS: &[&str] = &[">", ">=", "<", "<=", "=="];
const HEALTH_KEYS: &[&str] = &["checks", "samples", "timeout", "poll"];

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rollout {
    pub app: String,
    pub hosts: Vec<String>,
    /// Hosts per batch.
    pub batch_size: usize,
    /// The rollout halts once more than this percentage of all hosts failed.
    pub max_fail_percentage: f64,
    /// Healthy instances that must remain outside a batch before it is
    /// drained.
    pub min_healthy: usize,
    pub drain: Option<Hook>,
    pub patch: Hook,
    pub restart: Option<Hook>,
    pub rollback: Option<Hook>,
    pub undrain: Option<Hook>,
    pub health: Health,
    /// The longest a maintenance silence may last (it is expired as soon
    /// as its batch is done).
    pub silence_for: Duration,
    /// Wait between batches.
    pub pause: Duration,
}

/// When a host counts as healthy: every check holds on `samples`
/// consecutive fresh samples, within `timeout`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Health {
    pub checks: Vec<Check>,
    pub samples: u32,
    pub timeout: Duration,
    pub poll: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Check {
    pub metric: String,
    pub op: String,
    pub value: f64,
}

impl Check {
    pub(crate) fn holds(&self, v: f64) -> bool {
        match self.op.as_str() {
            ">" => v > self.value,
            ">=" => v >= self.value,
            "<" => v < self.value,
            "<=" => v <= self.value,
            _ => (v - self.value).abs() < f64::EPSILON,
        }
    }

    /// The `(app, metric)` to read for it.
    pub(crate) fn source<'a>(&'a self, app: &'a str) -> (Option<&'a str>, &'a str) {
        match self.metric.as_str() {
            "host_cpu" => (None, "cpu"),
            "mem_used_pct" => (None, "mem_used_pct"),
            m => (Some(app), m),
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} {} {}", self.metric, self.op, self.value)
    }
}

impl Health {
    pub(crate) fn describe(&self) -> String {
        self.checks
            .iter()
            .map(Check::describe)
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

fn invalid(msg: impl Into<String>) -> ActionError {
    ActionError::InvalidParams(msg.into())
}

fn duration(
    params: &Map<String, Value>,
    key: &str,
    default: Duration,
) -> Result<Duration, ActionError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(default),
        v => match as_duration_ms(v) {
            Some(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
            _ => Err(invalid(format!(
                "`{key}` must be a duration above 0 such as \"5m\""
            ))),
        },
    }
}

/// Hosts per batch from `serial`: a count (`2`) or a percentage of the
/// hosts (`"25%"`, rounded down, at least 1).
fn batch_size(serial: Option<&Value>, hosts: usize) -> Result<usize, ActionError> {
    let Some(serial) = serial else {
        return Ok(1);
    };
    let text = as_text(serial).unwrap_or_default();
    let text = text.trim();
    let size = if let Some(pct) = text.strip_suffix('%') {
        let pct: f64 = pct
            .trim()
            .parse()
            .ok()
            .filter(|p: &f64| *p > 0.0 && *p <= 100.0)
            .ok_or_else(|| {
                invalid(format!(
                    "`serial` {text:?}: a percentage must be above 0% and at most 100%"
                ))
            })?;
        ((hosts as f64 * pct / 100.0).floor() as usize).max(1)
    } else {
        match text.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(invalid(format!(
                    "`serial` must be a count of hosts (2) or a percentage (\"25%\"), not {serial}"
                )));
            }
        }
    };
    Ok(size.min(hosts))
}

fn health(value: Option<&Value>) -> Result<Health, ActionError> {
    let mut health = Health {
        checks: vec![Check {
            metric: "probe_up".into(),
            op: "==".into(),
            value: 1.0,
        }],
        samples: 2,
        timeout: Duration::from_secs(300),
        poll: Duration::from_secs(1),
    };
    let m = match value {
        None | Some(Value::Null) => return Ok(health),
        Some(Value::Object(m)) => m,
        Some(v) => {
            return Err(invalid(format!(
                "`health` must be a mapping (checks, samples, timeout, poll), not {v}"
            )));
        }
    };
    if let Some(k) = m.keys().find(|k| !HEALTH_KEYS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "`health`: unknown key `{k}` (expected one of: {})",
            HEALTH_KEYS.join(", ")
        )));
    }
    if let Some(checks) = m.get("checks") {
        let Value::Array(list) = checks else {
            return Err(invalid(
                "`health.checks` must be a list of {metric, op, value}",
            ));
        };
        if list.is_empty() {
            return Err(invalid("`health.checks` must not be empty"));
        }
        health.checks = list
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.as_object().ok_or_else(|| {
                    invalid(format!(
                        "`health.checks[{i}]` must be a mapping {{metric, op, value}}"
                    ))
                })?;
                let metric = c.get("metric").and_then(as_text).unwrap_or_default();
                if !APP_METRICS.contains(&metric.as_str())
                    && !HOST_METRICS.contains(&metric.as_str())
                {
                    return Err(invalid(format!(
                        "`health.checks[{i}].metric` must be one of {:?}, not {metric:?}",
                        [APP_METRICS, HOST_METRICS].concat()
                    )));
                }
                let op = c.get("op").and_then(as_text).unwrap_or_default();
                if !OPS.contains(&op.as_str()) {
                    return Err(invalid(format!(
                        "`health.checks[{i}].op` must be one of {OPS:?}, not {op:?}"
                    )));
                }
                let value = c.get("value").and_then(as_f64).ok_or_else(|| {
                    invalid(format!("`health.checks[{i}].value` must be a number"))
                })?;
                if let Some(k) = c
                    .keys()
                    .find(|k| !["metric", "op", "value"].contains(&k.as_str()))
                {
                    return Err(invalid(format!("`health.checks[{i}]`: unknown key `{k}`")));
                }
                Ok(Check { metric, op, value })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = m.get("samples") {
        health.samples = as_f64(v)
            .filter(|n| *n >= 1.0 && *n <= 100.0 && n.fract() == 0.0)
            .ok_or_else(|| invalid("`health.samples` must be a whole number from 1 to 100"))?
            as u32;
    }
    health.timeout = duration(m, "timeout", health.timeout)
        .map_err(|_| invalid("`health.timeout` must be a duration above 0 such as \"5m\""))?;
    health.poll = duration(m, "poll", health.poll)
        .map_err(|_| invalid("`health.poll` must be a duration above 0 such as \"1s\""))?
        .max(Duration::from_millis(50));
    Ok(health)
}

impl Rollout {
    pub(crate) fn parse(params: &Map<String, Value>) -> Result<Self, ActionError> {
        let app = required_text(params, "app")?;
        let hosts: Vec<String> = params
            .get("hosts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(|s| s.trim().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if hosts.is_empty() || hosts.iter().any(String::is_empty) {
            return Err(invalid(
                "`hosts` must list the app's hosts (none may be empty)",
            ));
        }
        let mut sorted = hosts.clone();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid(format!("`hosts` lists {} twice", w[0])));
        }
        let batch_size = batch_size(params.get("serial"), hosts.len())?;
        let max_fail_percentage = match params.get("max_fail_percentage") {
            None => 0.0,
            Some(v) => as_f64(v)
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| invalid("`max_fail_percentage` must be a number from 0 to 100"))?,
        };
        let min_healthy = match params.get("min_healthy") {
            None => 1.min(hosts.len() - batch_size),
            Some(v) => as_f64(v)
                .filter(|n| *n >= 0.0 && n.fract() == 0.0)
                .ok_or_else(|| invalid("`min_healthy` must be a whole number of hosts"))?
                as usize,
        };
        if min_healthy > hosts.len() - batch_size {
            return Err(invalid(format!(
                "`min_healthy` {min_healthy} cannot be kept: {} hosts in batches of {batch_size} leave at most {} outside a batch",
                hosts.len(),
                hosts.len() - batch_size
            )));
        }
        let minutes = |m: u64| Duration::from_secs(60 * m);
        let patch = match params.get("patch") {
            Some(v) => Hook::parse("patch", v, true, minutes(10))?,
            None => return Err(invalid("missing `patch`")),
        };
        Ok(Rollout {
            app,
            hosts,
            batch_size,
            max_fail_percentage,
            min_healthy,
            drain: hook::optional(params, "drain", false, minutes(2))?,
            patch,
            restart: hook::optional(params, "restart", true, minutes(5))?,
            rollback: hook::optional(params, "rollback", true, minutes(10))?,
            undrain: hook::optional(params, "undrain", false, minutes(2))?,
            health: health(params.get("health"))?,
            silence_for: duration(params, "silence_for", minutes(60))?,
            pause: match params.get("pause") {
                None | Some(Value::Null) => Duration::ZERO,
                v => match as_duration_ms(v) {
                    Some(ms) if ms >= 0 => Duration::from_millis(ms as u64),
                    _ => return Err(invalid("`pause` must be a duration such as \"30s\"")),
                },
            },
        })
    }

    pub(crate) fn batches(&self) -> Vec<Vec<String>> {
        self.hosts
            .chunks(self.batch_size)
            .map(<[String]>::to_vec)
            .collect()
    }

    /// Whether `failed` of all hosts is over the threshold.
    pub(crate) fn exceeded(&self, failed: usize) -> bool {
        failed as f64 * 100.0 > self.max_fail_percentage * self.hosts.len() as f64
    }
}
