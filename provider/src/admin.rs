//! The admin HTTP port: `/metrics` (Prometheus text), `/healthz` (liveness), `/readyz` (readiness:
//! 503 once draining), `/debug/tls` (the certificates in use).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// What the admin endpoints read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// Set once the drain starts.
    pub draining: Arc<AtomicBool>,
    /// TLS, when on (`/debug/tls`).
    pub tls: Option<discovery::tls::ServerTls>,
}

/// The router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/debug/tls", get(tls))
        .with_state(state)
}

/// Serves `/metrics` in the Prometheus text format of `registry`.
pub async fn metrics_text(registry: &Registry) -> impl IntoResponse + use<> {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("{e}\n")),
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    metrics_text(&s.registry).await
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// What TLS material is in use and how reloads went (`{"tls": null}` when TLS is off).
async fn tls(State(s): State<AdminState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "tls": s.tls.as_ref().map(discovery::tls::ServerTls::status) }))
}

/// Binds the admin port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
