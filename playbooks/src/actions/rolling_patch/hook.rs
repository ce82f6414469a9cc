//! A hook of the rollout (drain, patch, restart, rollback, undrain): a
//! script from the agent's allowlist, run on the host being patched (or on
//! `host`), or a webhook (a load balancer's API, say). `{host}`, `{app}`
//! and `{batch}` in its arguments, URL, headers and body are replaced per
//! host. Each call carries the key `<step key>:<host>:<phase>`: the agent
//! command id, or the webhook's `Idempotency-Key` header.

use std::time::Duration;

use fincorp_api::wire::CommandAction;
use fincorp_integrations::plan::PlannedRequest;
use serde_json::{Map, Value, json};

use super::super::exec::script_result;
use super::super::reallocate::planned_command;
use super::super::{ActionError, Env, Planned, as_duration_ms};

/// Keys a script hook takes.
const SCRIPT_KEYS: &[&str] = &["script", "args", "host", "timeout"];
/// Keys a webhook hook takes.
const WEBHOOK_KEYS: &[&str] = &["url", "method", "body", "headers", "timeout"];

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Hook {
    Script {
        script: String,
        args: Vec<String>,
        /// Where it runs; `{host}` (the host being patched) by default.
        host: String,
        timeout: Duration,
    },
    Webhook {
        url: String,
        method: String,
        body: Value,
        headers: Vec<(String, String)>,
        timeout: Duration,
    },
}

/// Where a hook is applied: the values of its placeholders.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub host: &'a str,
    pub app: &'a str,
    pub batch: usize,
}

impl Target<'_> {
    fn fill(&self, text: &str) -> String {
        text.replace("{host}", self.host)
            .replace("{app}", self.app)
            .replace("{batch}", &self.batch.to_string())
    }

    fn fill_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.fill(s)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.fill_value(v)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), self.fill_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

impl Hook {
    /// Parses `name` (`patch`, `drain`, ...) from its parameter value.
    /// `script_only`: the hook must run on the host (patch, restart,
    /// rollback), not call a webhook.
    pub(crate) fn parse(
        name: &str,
        value: &Value,
        script_only: bool,
        default_timeout: Duration,
    ) -> Result<Hook, ActionError> {
        let bad = |msg: String| ActionError::InvalidParams(format!("`{name}`: {msg}"));
        let Value::Object(m) = value else {
            return Err(bad(format!(
                "must be a mapping with `script` (and `args`, `host`, `timeout`){}",
                if script_only {
                    String::new()
                } else {
                    " or `url` (and `method`, `body`, `headers`, `timeout`)".into()
                }
            )));
        };
        let timeout = match m.get("timeout") {
            None => default_timeout,
            Some(v) => match as_duration_ms(Some(v)) {
                Some(ms) if ms > 0 => Duration::from_millis(ms as u64),
                _ => {
                    return Err(bad(format!(
                        "`timeout` must be a duration such as \"2m\", not {v}"
                    )));
                }
            },
        };
        let text = |k: &str| -> Result<Option<String>, ActionError> {
            match m.get(k) {
                None => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(v) => Err(bad(format!("`{k}` must be a non-empty string, not {v}"))),
            }
        };
        let unknown = |allowed: &[&str]| -> Result<(), ActionError> {
            match m.keys().find(|k| !allowed.contains(&k.as_str())) {
                Some(k) => Err(bad(format!(
                    "unknown key `{k}` (expected one of: {})",
                    allowed.join(", ")
                ))),
                None => Ok(()),
            }
        };
        match (text("script")?, text("url")?) {
            (Some(script), None) => {
                unknown(SCRIPT_KEYS)?;
                if script.contains('/') || script.starts_with('.') {
                    return Err(bad(format!(
                        "`script` is a file name in the agent's allowlist, not a path: {script:?}"
                    )));
                }
                let args = match m.get("args") {
                    None => vec![],
                    Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect(),
                    Some(v) => {
                        return Err(bad(format!("`args` must be a list of strings, not {v}")));
                    }
                };
                Ok(Hook::Script {
                    script,
                    args,
                    host: text("host")?.unwrap_or_else(|| "{host}".into()),
                    timeout,
                })
            }
            (None, Some(url)) if !script_only => {
                unknown(WEBHOOK_KEYS)?;
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(bad(format!("`url` must be http(s), not {url:?}")));
                }
                let method = text("method")?.unwrap_or_else(|| "POST".into());
                if !["POST", "PUT"].contains(&method.as_str()) {
                    return Err(bad(format!("`method` must be POST or PUT, not {method:?}")));
                }
                let headers = match m.get("headers") {
                    None => vec![],
                    Some(Value::Object(h)) if h.values().all(Value::is_string) => h
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                    Some(v) => {
                        return Err(bad(format!(
                            "`headers` must be a mapping of strings, not {v}"
                        )));
                    }
                };
                Ok(Hook::Webhook {
                    url,
                    method,
                    body: m.get("body").cloned().unwrap_or(json!({})),
                    headers,
                    timeout,
                })
            }
            (None, Some(_)) => Err(bad(
                "must run on the host: a `script` from the agent's allowlist, not a webhook".into(),
            )),
            (Some(_), Some(_)) => Err(bad("either `script` or `url`, not both".into())),
            (None, None) => Err(bad(if script_only {
                "needs `script`".into()
            } else {
                "needs `script` or `url`".into()
            })),
        }
    }

    /// What the hook sends for `target`, keyed by `key`.
    pub(crate) fn plan(&self, target: Target<'_>, key: &str) -> Planned {
        match self {
            Hook::Script {
                script,
                args,
                host,
                timeout,
            } => planned_command(
                target.fill(host),
                key,
                CommandAction::RunScript {
                    script: script.clone(),
                    args: args.iter().map(|a| target.fill(a)).collect(),
                    timeout_ms: Some(timeout.as_millis() as u64),
                },
                *timeout + AGENT_MARGIN,
            ),
            Hook::Webhook {
                url,
                method,
                body,
                headers,
                ..
            } => {
                let mut h = vec![
                    ("Content-Type".to_owned(), "application/json".to_owned()),
                    ("Idempotency-Key".to_owned(), key.to_owned()),
                ];
                h.extend(headers.iter().map(|(k, v)| (k.clone(), target.fill(v))));
                Planned::Http {
                    request: PlannedRequest {
                        method: method.clone(),
                        url: target.fill(url),
                        headers: h,
                        body: Some(target.fill_value(body)),
                    },
                }
            }
        }
    }

    /// Runs the hook for `target`: the script's exit, output and timing, or
    /// the webhook's status. A non-zero exit or a non-2xx status fails.
    pub(crate) async fn run(
        &self,
        env: &dyn Env,
        target: Target<'_>,
        key: &str,
    ) -> Result<Value, ActionError> {
        match self {
            Hook::Script {
                script,
                args,
                host,
                timeout,
            } => {
                let on = target.fill(host);
                let action = CommandAction::RunScript {
                    script: script.clone(),
                    args: args.iter().map(|a| target.fill(a)).collect(),
                    timeout_ms: Some(timeout.as_millis() as u64),
                };
                let result = env
                    .agent_command(&on, key, action, *timeout + AGENT_MARGIN)
                    .await
                    .map_err(|e| ActionError::Failed(format!("{script} on {on}: {e}")))?;
                script_result(&on, result)
            }
            Hook::Webhook {
                url,
                method,
                body,
                headers,
                timeout,
            } => {
                let url = target.fill(url);
                let mut req = match method.as_str() {
                    "PUT" => env.http().put(&url),
                    _ => env.http().post(&url),
                };
                req = req
                    .timeout(*timeout)
                    .header("Idempotency-Key", key)
                    .json(&target.fill_value(body));
                for (k, v) in headers {
                    req = req.header(k, target.fill(v));
                }
                let status = crate::actions::send_checked(req, &format!("{method} {url}")).await?;
                Ok(json!({"url": url, "status": status.as_u16()}))
            }
        }
    }
}

/// How much longer than its own timeout the correlator waits for a script's
/// answer: the agent polls for commands and reports back.
const AGENT_MARGIN: Duration = Duration::from_secs(10);

/// The hooks of a rollout, parsed from its parameters.
pub(crate) fn optional(
    params: &Map<String, Value>,
    name: &str,
    script_only: bool,
    default_timeout: Duration,
) -> Result<Option<Hook>, ActionError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Hook::parse(name, v, script_only, default_timeout).map(Some),
    }
}
