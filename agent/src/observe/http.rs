//! `/healthz`, `/readyz`, `/status` (JSON), `/metrics` and `/flows` (JSON).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use serde::Deserialize;

use super::flows::Flows;
use super::status::SharedStatus;
use crate::datapath::view::MapPressure;

/// Produces the Prometheus text exposition on each scrape.
pub type MetricsRender = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// Reads entries and capacity per map when `/status` is served.
pub type PressureRead = Arc<dyn Fn() -> Vec<MapPressure> + Send + Sync>;

/// Longest long poll of `/flows`.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// What the router serves besides status and metrics.
#[derive(Clone, Default)]
pub struct Extras {
    /// The flow log for `/flows` (404 without it).
    pub flows: Option<Arc<Flows>>,
    /// Map pressure for `/status`.
    pub pressure: Option<PressureRead>,
}

#[derive(Clone)]
struct AppState {
    status: SharedStatus,
    metrics: MetricsRender,
    extras: Extras,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let status = match app.status.read() {
        Ok(s) => s.clone(),
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "status lock poisoned\n".to_string(),
            );
        }
    };
    match status.unready_reason(std::time::SystemTime::now()) {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn status_json(State(app): State<AppState>) -> impl IntoResponse {
    let mut status = match app.status.read() {
        Ok(s) => s.clone(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    status.source_lag_seconds = status.lag_seconds(SystemTime::now());
    if let Some(read) = app.extras.pressure.clone() {
        status.maps = tokio::task::spawn_blocking(move || read())
            .await
            .unwrap_or_default();
    }
    Json(status).into_response()
}

/// Query of `/flows`.
#[derive(Debug, Default, Deserialize)]
pub struct FlowQuery {
    /// Only flows numbered above this (the `next` of a previous answer).
    #[serde(default)]
    pub since: u64,
    /// Only flows from or to this namespace.
    pub namespace: Option<String>,
    /// Only flows from or to this pod (with `namespace`: that pod of it).
    pub pod: Option<String>,
    /// Seconds to wait for a matching flow when there is none yet (long poll).
    #[serde(default)]
    pub wait: f64,
}

async fn flows(State(app): State<AppState>, Query(q): Query<FlowQuery>) -> impl IntoResponse {
    let Some(flows) = app.extras.flows else {
        return (StatusCode::NOT_FOUND, "no flow log\n").into_response();
    };
    let wait = Duration::try_from_secs_f64(q.wait.max(0.0))
        .unwrap_or(MAX_WAIT)
        .min(MAX_WAIT);
    let page = flows
        .log
        .wait_since(q.since, q.namespace.as_deref(), q.pod.as_deref(), wait)
        .await;
    Json(page).into_response()
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    // Reading the kernel walks maps: keep it off the async workers.
    let render = app.metrics.clone();
    let body = tokio::task::spawn_blocking(move || render())
        .await
        .unwrap_or_default();
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

/// The router serving every endpoint (health and metrics may share a port),
/// with the flow log and map pressure when `extras` has them.
pub fn router(status: SharedStatus, metrics_render: MetricsRender, extras: Extras) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .route("/flows", get(flows))
        .with_state(AppState {
            status,
            metrics: metrics_render,
            extras,
        })
}

/// Serves `router` on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
