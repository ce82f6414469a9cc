//! Latency probes: HTTP (status and body expectations, timeout) and TCP
//! connect. Each probed app has its own task, so a slow or hung endpoint
//! never delays sampling; the sampler reads the latest result.

use std::time::{Duration, Instant};

use fincorp_api::wire::ProbeSample;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{AppConfig, HttpProbe, Probe, TcpProbe};
use crate::error_chain;

/// Most of a response body read to check `expect_body`.
pub const MAX_PROBE_BODY: usize = 64 * 1024;

fn timed_out(timeout: Duration) -> String {
    format!("timed out after {}", fincorp_api::config::Duration(timeout))
}

fn failed(status: Option<u16>, error: String) -> ProbeSample {
    ProbeSample {
        ok: false,
        latency_ms: None,
        status,
        error: Some(error),
    }
}

/// Runs one HTTP probe: GET the URL; ok iff the status is the expected one
/// and, with `expect_body`, the body (its first 64 KiB) contains that text.
/// `latency_ms` (until the body is read) is only set when the probe succeeded.
pub async fn probe_http(client: &reqwest::Client, probe: &HttpProbe) -> ProbeSample {
    let started = Instant::now();
    let attempt = async {
        let mut response = client.get(&probe.url).send().await?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        if probe.expect_body.is_some() && status == probe.expect_status {
            while let Some(chunk) = response.chunk().await? {
                body.extend_from_slice(&chunk);
                if body.len() >= MAX_PROBE_BODY {
                    body.truncate(MAX_PROBE_BODY);
                    break;
                }
            }
        }
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(probe.timeout, attempt).await {
        Ok(Ok((status, body))) => {
            let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
            if status != probe.expect_status {
                return failed(
                    Some(status),
                    format!("status {status}, expected {}", probe.expect_status),
                );
            }
            if let Some(want) = &probe.expect_body {
                if !String::from_utf8_lossy(&body).contains(want.as_str()) {
                    return failed(Some(status), format!("body does not contain {want:?}"));
                }
            }
            ProbeSample {
                ok: true,
                latency_ms: Some(latency_ms),
                status: Some(status),
                error: None,
            }
        }
        Ok(Err(e)) if e.is_timeout() => failed(None, timed_out(probe.timeout)),
        Ok(Err(e)) => failed(None, error_chain(&e)),
        Err(_) => failed(None, timed_out(probe.timeout)),
    }
}

/// Runs one TCP probe: connect, then close; ok iff the connection was
/// established within the timeout.
pub async fn probe_tcp(probe: &TcpProbe) -> ProbeSample {
    let started = Instant::now();
    match tokio::time::timeout(
        probe.timeout,
        tokio::net::TcpStream::connect(&probe.address),
    )
    .await
    {
        Ok(Ok(stream)) => {
            let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
            drop(stream);
            ProbeSample {
                ok: true,
                latency_ms: Some(latency_ms),
                status: None,
                error: None,
            }
        }
        Ok(Err(e)) => failed(None, format!("connect to {}: {e}", probe.address)),
        Err(_) => failed(None, timed_out(probe.timeout)),
    }
}

/// Runs one probe of either kind.
pub async fn probe_once(client: &reqwest::Client, probe: &Probe) -> ProbeSample {
    match probe {
        Probe::Http(p) => probe_http(client, p).await,
        Probe::Tcp(p) => probe_tcp(p).await,
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
            .map(Probe::timeout)
            .max();
        let mut receivers = Vec::with_capacity(apps.len());
        let mut tasks = Vec::new();
        let Some(longest) = longest else {
            receivers.resize_with(apps.len(), || None);
            return Ok(Self { receivers, tasks });
        };
        let client = fincorp_api::http::client_builder(longest)
            .pool_max_idle_per_host(1)
            .build()?;
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
                            None => tracing::info!(app = %name, target = probe.target(), "probe is up"),
                            Some(error) => tracing::warn!(app = %name, target = probe.target(), %error, "probe is failing"),
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

    fn probe(url: String, timeout_ms: u64) -> Probe {
        Probe::Http(HttpProbe {
            url,
            timeout: Duration::from_millis(timeout_ms),
            expect_status: 200,
            expect_body: None,
        })
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

    #[tokio::test]
    async fn the_body_expectation_is_checked() {
        let base = serve(
            Router::new()
                .route("/health", get(|| async { "status: UP" }))
                .route("/degraded", get(|| async { "status: DEGRADED" })),
        )
        .await;
        let client = fincorp_api::http::client(Duration::from_secs(10));
        let with_body = |path: &str| HttpProbe {
            url: format!("{base}{path}"),
            timeout: Duration::from_secs(5),
            expect_status: 200,
            expect_body: Some("UP".into()),
        };
        let up = probe_http(&client, &with_body("/health")).await;
        assert!(up.ok && up.latency_ms.is_some(), "{up:?}");
        let degraded = probe_http(&client, &with_body("/degraded")).await;
        assert_eq!(
            (degraded.ok, degraded.status, degraded.latency_ms),
            (false, Some(200), None)
        );
        assert_eq!(
            degraded.error.as_deref(),
            Some("body does not contain \"UP\"")
        );
    }

    #[tokio::test]
    async fn a_tcp_probe_measures_connect_latency_and_fails_when_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = probe_tcp(&TcpProbe {
            address: addr.to_string(),
            timeout: Duration::from_secs(2),
        })
        .await;
        assert!(open.ok, "{open:?}");
        let ms = open.latency_ms.unwrap();
        assert!((0.0..2_000.0).contains(&ms), "{ms}");
        drop(listener);
        let closed = probe_tcp(&TcpProbe {
            address: addr.to_string(),
            timeout: Duration::from_secs(2),
        })
        .await;
        assert!(!closed.ok && closed.latency_ms.is_none(), "{closed:?}");
        assert!(
            closed
                .error
                .unwrap()
                .starts_with(&format!("connect to {addr}: "))
        );
    }
}
