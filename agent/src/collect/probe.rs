//! HTTP latency probes. Each probed app has its own task, so a slow or hung
//! endpoint never delays sampling; the sampler reads the latest result.

use std::time::{Duration, Instant};

use fincorp_api::wire::ProbeSample;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{AppConfig, HttpProbe};
use crate::error_chain;

/// Runs one probe: GET the URL, ok iff the status is the expected one.
/// `latency_ms` is only set when the probe succeeded.
pub async fn probe_once(client: &reqwest::Client, probe: &HttpProbe) -> ProbeSample {
    let started = Instant::now();
    match client.get(&probe.url).timeout(probe.timeout).send().await {
        Ok(response) => {
            let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
            let status = response.status().as_u16();
            let ok = status == probe.expect_status;
            ProbeSample {
                ok,
                latency_ms: ok.then_some(latency_ms),
                status: Some(status),
                error: (!ok).then(|| format!("status {status}, expected {}", probe.expect_status)),
            }
        }
        Err(e) => {
            let error = if e.is_timeout() {
                format!(
                    "timed out after {}",
                    fincorp_api::config::Duration(probe.timeout)
                )
            } else {
                error_chain(&e)
            };
            ProbeSample {
                ok: false,
                latency_ms: None,
                status: None,
                error: Some(error),
            }
        }
    }
}

/// The latest probe result of each app, by app index (`None`: no probe, or
/// no result yet).
#[derive(Debug)]
pub struct ProbeResults {
    receivers: Vec<Option<watch::Receiver<Option<ProbeSample>>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ProbeResults {
    /// Starts one probe task per app that has a probe, each running every
    /// `interval`. Must be called inside a Tokio runtime.
    pub fn spawn(apps: &[AppConfig], interval: Duration) -> Result<Self, reqwest::Error> {
        let longest = apps
            .iter()
            .filter_map(|a| a.probe.as_ref())
            .map(|p| p.timeout)
            .max();
        let mut receivers = Vec::with_capacity(apps.len());
        let mut tasks = Vec::new();
        let Some(longest) = longest else {
            receivers.resize_with(apps.len(), || None);
            return Ok(Self { receivers, tasks });
        };
        let client = fincorp_api::http::client_builder(longest).build()?;
        for app in apps {
            let Some(probe) = app.probe.clone() else {
                receivers.push(None);
                continue;
            };
            let (tx, rx) = watch::channel(None);
            receivers.push(Some(rx));
            let client = client.clone();
            let name = app.name.clone();
            tasks.push(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(1)));
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut was_ok = None;
                loop {
                    ticker.tick().await;
                    let result = probe_once(&client, &probe).await;
                    if was_ok != Some(result.ok) {
                        match &result.error {
                            None => tracing::info!(app = %name, url = %probe.url, "probe is up"),
                            Some(error) => tracing::warn!(app = %name, url = %probe.url, %error, "probe is failing"),
                        }
                        was_ok = Some(result.ok);
                    }
                    if tx.send(Some(result)).is_err() {
                        return;
                    }
                }
            }));
        }
        Ok(Self { receivers, tasks })
    }

    /// The latest result for app number `app`.
    pub fn latest(&self, app: usize) -> Option<ProbeSample> {
        self.receivers.get(app)?.as_ref()?.borrow().clone()
    }
}

impl Drop for ProbeResults {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::get;

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.ok() });
        format!("http://{addr}")
    }

    fn probe(url: String, timeout_ms: u64) -> HttpProbe {
        HttpProbe {
            url,
            timeout: Duration::from_millis(timeout_ms),
            expect_status: 200,
        }
    }

    #[tokio::test]
    async fn a_probe_measures_latency_and_checks_the_status() {
        let base = serve(
            Router::new()
                .route("/ok", get(|| async { "fine" }))
                .route("/broken", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                ),
        )
        .await;
        let client = fincorp_api::http::client(Duration::from_secs(10));

        let ok = probe_once(&client, &probe(format!("{base}/ok"), 5_000)).await;
        assert!(ok.ok, "{ok:?}");
        assert_eq!(ok.status, Some(200));
        let latency = ok.latency_ms.expect("latency is set when ok");
        assert!(latency > 0.0 && latency < 5_000.0, "{latency}");

        let broken = probe_once(&client, &probe(format!("{base}/broken"), 5_000)).await;
        assert_eq!(
            (broken.ok, broken.status, broken.latency_ms),
            (false, Some(503), None)
        );
        assert_eq!(broken.error.as_deref(), Some("status 503, expected 200"));

        let slow = probe_once(&client, &probe(format!("{base}/slow"), 100)).await;
        assert_eq!((slow.ok, slow.latency_ms), (false, None));
        assert_eq!(slow.error.as_deref(), Some("timed out after 100ms"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failed_probe() {
        // Bind then drop a listener to get a port nothing listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let client = fincorp_api::http::client(Duration::from_secs(5));
        let result = probe_once(&client, &probe(format!("http://{addr}/health"), 2_000)).await;
        assert!(!result.ok);
        assert!(result.error.is_some_and(|e| !e.is_empty()));
    }
}
