//! `/metrics` content, the 0.0.4 conversion, `promtool check metrics`, and
//! the HTTP endpoint on a real loopback socket.

use std::io::Write;
use std::process::{Command, Stdio};

use fincorp_api::wire::{AppSample, CpuThrottling, LoadAverage, ProbeSample};

use super::*;
use crate::config::FullPolicy;
use crate::ship::{MemoryQueue, Outbox, QueuedBatch};
use fincorp_api::exposition::{OPENMETRICS, TEXT_004};

fn telemetry() -> Arc<Telemetry> {
    let t = Arc::new(Telemetry::default());
    t.samples.store(42, Ordering::Relaxed);
    t.interval_ms.store(2_000, Ordering::Relaxed);
    t.base_interval_ms.store(1_000, Ordering::Relaxed);
    t.budget_exceeded.store(true, Ordering::Relaxed);
    t.slowdowns.store(1, Ordering::Relaxed);
    t.events_firing.store(3, Ordering::Relaxed);
    let outbox = Outbox::new(MemoryQueue::new(), 1 << 20, FullPolicy::DropOldest);
    outbox.push(&QueuedBatch {
        seq: 1,
        events: 0,
        body: b"{}".to_vec(),
    });
    outbox.counters.send_failures.store(5, Ordering::Relaxed);
    *t.outbox.lock().unwrap() = Some(outbox);
    *t.commands.lock().unwrap() = Some(Arc::default());
    t.set_snapshot(Snapshot {
        sample: HostSample {
            at_ms: 1,
            cpu_pct: 25.0,
            mem_used_bytes: 100,
            mem_total_bytes: 400,
            apps: vec![AppSample {
                app: "FINCORP-APP-HFT".into(),
                processes: 3,
                cpu_pct: 150.0,
                rss_bytes: 1 << 20,
                probe: Some(ProbeSample {
                    ok: true,
                    latency_ms: Some(12.5),
                    status: Some(200),
                    error: None,
                }),
                host_cpu_pct: Some(75.0),
                throttling: Some(CpuThrottling {
                    nr_periods: 10,
                    nr_throttled: 4,
                    throttled_us: 2_500_000,
                }),
            }],
            cpu_per_core_pct: vec![20.0, 30.0],
            mem_available_bytes: Some(300),
            swap_used_bytes: Some(0),
            swap_total_bytes: Some(0),
            load: Some(LoadAverage {
                one: 0.5,
                five: 0.25,
                fifteen: 0.1,
            }),
        },
        firing: vec![FiringAlert {
            app: Some("FINCORP-APP-HFT".into()),
            rule: "cpu_high".into(),
            severity: Severity::Critical,
        }],
        known_processes: 480,
        taken: Instant::now(),
    });
    t
}

#[test]
fn the_exposition_covers_self_host_and_app_metrics() {
    let text = to_text_004(&encode_openmetrics(&registry(telemetry())));
    for line in [
        "# TYPE fincorp_agent_samples_total counter",
        "fincorp_agent_samples_total 42.0",
        "fincorp_agent_batches_spooled_total 1.0",
        "fincorp_agent_send_failures_total 5.0",
        "fincorp_agent_spool_batches 1.0",
        "fincorp_agent_spool_bytes 2.0",
        "fincorp_agent_sample_interval_seconds 2.0",
        "fincorp_agent_configured_sample_interval_seconds 1.0",
        "fincorp_agent_overhead_budget_exceeded 1.0",
        "fincorp_agent_alert_events_total{status=\"firing\"} 3",
        "fincorp_host_cpu_usage_ratio 0.25",
        "fincorp_host_cpu_core_usage_ratio{core=\"1\"} 0.3",
        "fincorp_host_load1 0.5",
        "fincorp_app_processes{app=\"FINCORP-APP-HFT\"} 3.0",
        "fincorp_app_cpu_usage_ratio{app=\"FINCORP-APP-HFT\"} 1.5",
        "fincorp_app_host_cpu_usage_ratio{app=\"FINCORP-APP-HFT\"} 0.75",
        "fincorp_app_cpu_throttled_periods_total{app=\"FINCORP-APP-HFT\"} 4.0",
        "fincorp_app_cpu_throttled_seconds_total{app=\"FINCORP-APP-HFT\"} 2.5",
        "fincorp_app_probe_latency_seconds{app=\"FINCORP-APP-HFT\"} 0.0125",
        "fincorp_alerts_firing{app=\"FINCORP-APP-HFT\",rule=\"cpu_high\",severity=\"critical\"} 1",
        "# TYPE process_cpu_seconds_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("process_resident_memory_bytes "))
    );
    assert!(!text.contains("# EOF"), "0.0.4 has no EOF marker");
}

#[test]
fn counter_families_are_renamed_for_the_004_format() {
    let om = "# HELP a_total x.\n# HELP foo Foo things.\n# TYPE foo counter\n# UNIT foo seconds\nfoo_total 1\n# HELP bar Bar.\n# TYPE bar gauge\nbar 2\n# EOF\n";
    assert_eq!(
        to_text_004(om),
        "# HELP a_total x.\n# HELP foo_total Foo things.\n# TYPE foo_total counter\nfoo_total 1\n# HELP bar Bar.\n# TYPE bar gauge\nbar 2\n"
    );
}

/// `promtool check metrics` (from Debian's `prometheus` package) lints the
/// exposition. It must be installed: CI installs it.
#[test]
fn promtool_check_metrics_passes() {
    let text = to_text_004(&encode_openmetrics(&registry(telemetry())));
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run promtool ({e}); it ships in Debian's `prometheus` package: apt-get install -y prometheus. \
             This test fails rather than pass without checking"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let client = fincorp_api::http::client(Duration::from_secs(5));
    let mut req = client.get(format!("http://{addr}{path}"));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ctype, resp.text().await.unwrap())
}

#[tokio::test]
async fn the_endpoint_serves_metrics_health_and_negotiates_openmetrics() {
    let t = telemetry();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, t.clone()));
    let (status, ctype, body) = get(addr, "/metrics", None).await;
    assert_eq!((status, ctype.as_str()), (200, TEXT_004));
    assert!(body.contains("fincorp_agent_samples_total 42.0"), "{body}");
    let (_, ctype, body) = get(
        addr,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .await;
    assert_eq!(ctype, OPENMETRICS);
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(get(addr, "/healthz", None).await.0, 200);
    assert_eq!(get(addr, "/nope", None).await.0, 404);
    // A stalled sampler makes the agent unhealthy.
    t.blocked_now.store(true, Ordering::Relaxed);
    let (status, _, body) = get(addr, "/healthz", None).await;
    assert_eq!(
        (status, body.trim()),
        (
            503,
            "sampling is blocked: the spool is full (spool.when_full: block)"
        )
    );
    task.abort();
}
