//! The consumer's admin HTTP port: `/metrics`, `/healthz`, `/debug/endpoints` (discovery's set and
//! the client's pool: zones, weights, ejections, calls in flight), `/stats` (call counters), all
//! read-only; and `POST /call?name=…` (one call on the configured stack, its reply as JSON), which
//! acts, so it answers 403 unless `CONSUMER_ADMIN_CALLS=true`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use discovery::{EndpointKey, ServiceWatch};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use crate::Stack;

/// What the admin endpoints read.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The client stack (and its discovery).
    pub stack: Stack,
    /// Metrics.
    pub registry: Arc<Registry>,
    /// `POST /call` allowed (`CONSUMER_ADMIN_CALLS`).
    pub calls: bool,
}

/// The router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move { provider::admin::metrics_text(&s.registry).await }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|State(s): State<AdminState>| async move { ready(&s.stack) }))
        .route("/debug/endpoints", get(|State(s): State<AdminState>| async move { Json(debug_json(&s.stack)) }))
        .route(
            "/debug/tls",
            get(|State(s): State<AdminState>| async move {
                Json(json!({ "tls": s.stack.balanced().and_then(discovery::client::Balanced::tls_status) }))
            }),
        )
        .route("/stats", get(|State(s): State<AdminState>| async move { Json(s.stack.stats()) }))
        .route("/call", post(call))
        .with_state(state)
}

async fn call(State(s): State<AdminState>, Query(q): Query<HashMap<String, String>>) -> Response {
    if !s.calls {
        let body = json!({"error": "the admin port makes no calls unless CONSUMER_ADMIN_CALLS=true (it only reads by default)"});
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    let name = q.get("name").cloned().unwrap_or_else(|| "admin".into());
    match s.stack.say_hello(&name).await {
        Ok(r) => Json(json!({
            "stack": format!("{:?}", s.stack.kind()).to_lowercase(),
            "message": r.reply.message,
            "served_by": r.reply.served_by.map(|i| json!({"name": i.name, "ip": i.ip, "version": i.version, "group": i.group})),
            "endpoint": r.endpoint.map(|e| e.to_string()),
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
            let body = json!({"error": e.message(), "grpc_code": crate::stats::code_label(e.code())});
            (code, Json(body)).into_response()
        }
    }
}

/// 200 once discovery has answered and a provider can be called; 503 with the reason before.
fn ready(stack: &Stack) -> (StatusCode, String) {
    let set = stack.service().current();
    let routable = match stack.balanced() {
        Some(b) => b.is_routable(),
        None => set.routable_len() > 0,
    };
    match (set.is_pending(), routable) {
        (true, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("discovery has not answered yet ({})\n", stack.service().target()),
        ),
        (false, false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no provider to call for {} ({} known, source {})\n",
                stack.service().service(),
                set.len(),
                set.source()
            ),
        ),
        (false, true) => (StatusCode::OK, "ready\n".to_owned()),
    }
}

/// Discovery's set and, for the tonic stack, the client's pool.
pub fn debug_json(stack: &Stack) -> Value {
    let in_flight = stack.balanced().map(|b| b.in_flight());
    let mut v = endpoints_json(stack.service(), in_flight.as_ref());
    v["stack"] = json!(format!("{:?}", stack.kind()).to_lowercase());
    if let Some(b) = stack.balanced() {
        v["client"] = serde_json::to_value(b.debug()).unwrap_or(Value::Null);
    }
    v
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
    let age_ms = set.published_at().elapsed().map(|d| d.as_millis() as u64).unwrap_or(0);
    json!({
        "service": d.service().to_string(),
        "target": d.target().to_string(),
        "mapping": d.rule(),
        "problem": d.problem(),
        "version": set.version(),
        "source": set.source(),
        "pending": set.is_pending(),
        "stale": set.is_stale(),
        "stale_for_ms": set.stale_for(Instant::now()).as_millis() as u64,
        "published_ms_ago": age_ms,
        "traffic_distribution": set.traffic(),
        "propagation": d.propagation().map(|(changes, last)| json!({"changes": changes, "last_seconds": last})),
        "endpoints": endpoints,
    })
}
