//! The consumer's admin HTTP port: `/metrics`, `/healthz`, `/debug/endpoints` (the current endpoint
//! set as JSON), `/stats` (call counters), `/call?name=…` (one call, its reply as JSON).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use discovery::{EndpointKey, ServiceWatch};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::client::GreeterClient;

/// What the admin endpoints read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The client (and its discovery).
    pub client: GreeterClient,
    /// Metrics.
    pub registry: Arc<Registry>,
}

/// The router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move { provider::admin::metrics_text(&s.registry).await }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/debug/endpoints",
            get(|State(s): State<AdminState>| async move {
                Json(endpoints_json(s.client.discovery(), Some(&s.client.in_flight())))
            }),
        )
        .route("/stats", get(|State(s): State<AdminState>| async move { Json(s.client.stats().snapshot()) }))
        .route("/call", get(call))
        .with_state(state)
}

async fn call(State(s): State<AdminState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let name = q.get("name").cloned().unwrap_or_else(|| "admin".into());
    match s.client.say_hello(&name).await {
        Ok(r) => Json(json!({
            "message": r.reply.message,
            "served_by": r.reply.served_by.map(|i| json!({"name": i.name, "ip": i.ip, "version": i.version, "group": i.group})),
            "endpoint": r.endpoint.0,
            "attempts": r.attempts,
            "latency_ms": r.latency.as_secs_f64() * 1000.0,
        }))
        .into_response(),
        Err(e) => {
            let code = match e.code() {
                tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            (code, Json(json!({"error": e.to_string(), "grpc_code": format!("{:?}", e.code())}))).into_response()
        }
    }
}

/// The current endpoint set as JSON: addresses, conditions, source, age, version.
pub fn endpoints_json(d: &ServiceWatch, in_flight: Option<&HashMap<EndpointKey, usize>>) -> Value {
    let set = d.current();
    let endpoints: Vec<Value> = set
        .iter()
        .map(|e| {
            let key = e.key();
            json!({
                "address": e.addr.ip().to_string(),
                "port": e.addr.port(),
                "name": e.name,
                "node": e.node,
                "zone": e.zone,
                "zone_hints": e.zone_hints,
                "weight": e.weight,
                "ready": e.conditions.ready,
                "serving": e.conditions.serving,
                "terminating": e.conditions.terminating,
                "routable": set.is_routable(e),
                "in_flight": in_flight.and_then(|m| m.get(&key)).copied(),
            })
        })
        .collect();
    let age_ms = set.published_at.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0);
    json!({
        "service": d.service().to_string(),
        "target": d.target().to_string(),
        "mapping": d.rule(),
        "version": set.version,
        "source": set.source,
        "pending": set.pending,
        "stale": set.is_stale(),
        "stale_for_ms": set.stale_for(Instant::now()).as_millis() as u64,
        "published_ms_ago": age_ms,
        "endpoints": endpoints,
    })
}
