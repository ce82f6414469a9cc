//! `notify`: a webhook. POSTs (or PUTs) a JSON body, rendered from
//! templates, to a URL, with optional headers (`secrets.NAME` may be used in
//! them; plans show them redacted). Not idempotent: a retry after a lost
//! answer sends the message again, so runs interrupted mid-notify are not
//! resumed into it. Informational, so not counted as mutating.

use fincorp_integrations::plan::PlannedRequest;
use serde_json::{Map, Value, json};

use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    required_text,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "url",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "method",
        required: false,
        kind: ParamKind::OneOf(&["POST", "PUT"]),
    },
    ParamSpec {
        name: "body",
        required: false,
        kind: ParamKind::Any,
    },
    ParamSpec {
        name: "headers",
        required: false,
        kind: ParamKind::StringMap,
    },
];

pub struct Notify;

/// url, method, body, headers.
type Parts = (String, String, Value, Vec<(String, String)>);

fn parts(params: &Map<String, Value>) -> Result<Parts, ActionError> {
    let url = required_text(params, "url")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(ActionError::InvalidParams(format!(
            "`url` must be http(s), not {url:?}"
        )));
    }
    let method = params
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("POST")
        .to_owned();
    let body = params.get("body").cloned().unwrap_or(Value::Null);
    let headers = params
        .get("headers")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Ok((url, method, body, headers))
}

impl Action for Notify {
    fn name(&self) -> &'static str {
        "notify"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn mutating(&self) -> bool {
        false
    }

    fn idempotent(&self) -> bool {
        false
    }

    fn reversible(&self) -> bool {
        false
    }

    fn plan(
        &self,
        _env: &dyn Env,
        params: &Map<String, Value>,
        _ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        let (url, method, body, mut headers) = parts(params)?;
        headers.insert(0, ("Content-Type".into(), "application/json".into()));
        Ok(vec![Planned::Http {
            request: PlannedRequest {
                method,
                url,
                headers,
                body: Some(body),
            },
        }])
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let (url, method, body, headers) = parts(params)?;
            let mut req = match method.as_str() {
                "PUT" => env.http().put(&url),
                _ => env.http().post(&url),
            };
            req = req
                .timeout(ctx.timeout)
                .header("Idempotency-Key", &ctx.idempotency_key)
                .json(&body);
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let status = super::send_checked(req, &format!("{method} {url}")).await?;
            Ok(ActionOutput {
                result: json!({"status": status.as_u16(), "url": url}),
                ticket: None,
            })
        })
    }
}
