//! Stand-ins for the bank's applications' health endpoints, so that a demo
//! host without FINCORP-APP-TRANSPROC, -HFT, -CRM, -CORE and -INSURANCE
//! installed still answers the agent's probes as a healthy host would.
//!
//! What it simulates: an HTTP health endpoint per address (`GET /health`,
//! 200 with body `UP`, or 503 with body `DOWN` once taken down), and a TCP
//! port per address that accepts connections and closes them (what a TCP
//! connect probe sees of a listening service). To rehearse an outage,
//! `POST /sim/down` on an HTTP stand-in makes its health endpoint fail and
//! `POST /sim/up` restores it. What it does not simulate: anything the apps
//! actually do, their processes, or their CPU (the chaos burner does that).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::net::TcpListener;

/// One HTTP stand-in: healthy until told otherwise.
#[derive(Clone, Default)]
pub struct Health {
    down: Arc<AtomicBool>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `GET /health` currently answers 200.
    pub fn is_up(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }
}

/// The routes of an HTTP stand-in.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/health", get(health_check))
        .route("/sim/down", post(take_down))
        .route("/sim/up", post(bring_up))
        .with_state(health)
}

async fn health_check(State(h): State<Health>) -> (StatusCode, &'static str) {
    if h.is_up() {
        (StatusCode::OK, "UP")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "DOWN")
    }
}

async fn take_down(State(h): State<Health>) -> StatusCode {
    h.down.store(true, Ordering::Relaxed);
    tracing::warn!("health endpoint taken down: GET /health now answers 503");
    StatusCode::NO_CONTENT
}

async fn bring_up(State(h): State<Health>) -> StatusCode {
    h.down.store(false, Ordering::Relaxed);
    tracing::info!("health endpoint back up");
    StatusCode::NO_CONTENT
}

/// Serves one HTTP stand-in until `shutdown` completes.
pub async fn serve_http(
    listener: TcpListener,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Accepts connections and closes them at once, until `shutdown` completes.
pub async fn serve_tcp(
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => drop(stream),
                // Running out of descriptors or a reset before accept: the
                // listener itself is fine, keep serving.
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn http_stand_in() -> (String, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_http(listener, Health::new(), async {
            let _ = stopped.await;
        }));
        (url, stop)
    }

    #[tokio::test]
    async fn health_answers_up_until_taken_down_and_again_once_brought_up() {
        let (url, _stop) = http_stand_in().await;
        let client = fincorp_api::http::client(std::time::Duration::from_secs(5));
        let check = || async {
            let r = client.get(format!("{url}/health")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        assert_eq!(check().await, (200, "UP".to_owned()));
        let r = client.post(format!("{url}/sim/down")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 204);
        assert_eq!(check().await, (503, "DOWN".to_owned()));
        client.post(format!("{url}/sim/up")).send().await.unwrap();
        assert_eq!(check().await, (200, "UP".to_owned()));
        let r = client.get(format!("{url}/other")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404);
    }

    #[tokio::test]
    async fn a_tcp_stand_in_accepts_connections_until_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_tcp(listener, async {
            let _ = stopped.await;
        }));
        for _ in 0..3 {
            tokio::net::TcpStream::connect(addr).await.unwrap();
        }
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the port is closed once the stand-in stopped"
        );
    }
}
