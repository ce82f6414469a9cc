//! `wait_for`: waits until an agent metric of a host (and app) meets a
//! condition, polling the latest samples the agents send, and fails when it
//! does not within `within`. Read-only.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{
    Action, ActionError, ActionOutput, BoxFuture, Env, ParamKind, ParamSpec, Planned, StepContext,
    as_duration_ms, as_f64, as_text, required_text,
};

const PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "host",
        required: true,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "app",
        required: false,
        kind: ParamKind::String,
    },
    ParamSpec {
        name: "metric",
        required: true,
        kind: ParamKind::OneOf(&[
            "cpu",
            "rss_mb",
            "processes",
            "latency_ms",
            "probe_up",
            "mem_used_pct",
        ]),
    },
    ParamSpec {
        name: "op",
        required: true,
        kind: ParamKind::OneOf(&[">", ">=", "<", "<=", "=="]),
    },
    ParamSpec {
        name: "value",
        required: true,
        kind: ParamKind::Number,
    },
    ParamSpec {
        name: "within",
        required: true,
        kind: ParamKind::Duration,
    },
    ParamSpec {
        name: "poll",
        required: false,
        kind: ParamKind::Duration,
    },
];

pub struct WaitFor;

struct Condition {
    host: String,
    app: Option<String>,
    metric: String,
    op: String,
    value: f64,
    within: Duration,
    poll: Duration,
}

impl Condition {
    fn parse(params: &Map<String, Value>) -> Result<Self, ActionError> {
        let within = as_duration_ms(params.get("within")).unwrap_or(0);
        if within <= 0 {
            return Err(ActionError::InvalidParams(
                "`within` must be above 0".into(),
            ));
        }
        Ok(Condition {
            host: required_text(params, "host")?,
            app: params
                .get("app")
                .and_then(as_text)
                .filter(|s| !s.is_empty()),
            metric: required_text(params, "metric")?,
            op: required_text(params, "op")?,
            value: params
                .get("value")
                .and_then(as_f64)
                .ok_or_else(|| ActionError::InvalidParams("`value` must be a number".into()))?,
            within: Duration::from_millis(within as u64),
            poll: Duration::from_millis(
                as_duration_ms(params.get("poll")).unwrap_or(500).max(50) as u64
            ),
        })
    }

    fn holds(&self, v: f64) -> bool {
        match self.op.as_str() {
            ">" => v > self.value,
            ">=" => v >= self.value,
            "<" => v < self.value,
            "<=" => v <= self.value,
            _ => (v - self.value).abs() < f64::EPSILON,
        }
    }

    fn describe(&self) -> String {
        let of = match &self.app {
            Some(app) => format!("{app} on {}", self.host),
            None => self.host.clone(),
        };
        format!(
            "{} of {of} {} {} within {}s",
            self.metric,
            self.op,
            self.value,
            self.within.as_secs_f64()
        )
    }
}

impl Action for WaitFor {
    fn name(&self) -> &'static str {
        "wait_for"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn mutating(&self) -> bool {
        false
    }

    fn idempotent(&self) -> bool {
        true
    }

    fn plan(
        &self,
        _env: &dyn Env,
        params: &Map<String, Value>,
        _ctx: &StepContext,
    ) -> Result<Vec<Planned>, ActionError> {
        Ok(vec![Planned::Wait {
            description: format!("wait until {}", Condition::parse(params)?.describe()),
        }])
    }

    fn execute<'a>(
        &'a self,
        env: &'a dyn Env,
        params: &'a Map<String, Value>,
        _ctx: &'a StepContext,
    ) -> BoxFuture<'a, Result<ActionOutput, ActionError>> {
        Box::pin(async move {
            let c = Condition::parse(params)?;
            let started = Instant::now();
            let mut last = None;
            loop {
                if let Some(v) = env.metric(&c.host, c.app.as_deref(), &c.metric) {
                    last = Some(v);
                    if c.holds(v) {
                        return Ok(ActionOutput {
                            result: json!({"met": true, "value": v, "waited_ms": started.elapsed().as_millis() as u64}),
                            ticket: None,
                        });
                    }
                }
                if started.elapsed() >= c.within {
                    let seen = last
                        .map(|v| format!("last value {v}"))
                        .unwrap_or_else(|| "no sample seen".into());
                    return Err(ActionError::Failed(format!(
                        "{} did not hold ({seen})",
                        c.describe()
                    )));
                }
                tokio::time::sleep(
                    c.poll
                        .min(c.within.saturating_sub(started.elapsed()))
                        .max(Duration::from_millis(10)),
                )
                .await;
            }
        })
    }
}
