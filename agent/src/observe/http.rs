//! `/healthz`, `/readyz`, `/status` (JSON) and `/metrics`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use super::status::SharedStatus;

/// Produces the Prometheus text exposition on each scrape.
pub type MetricsRender = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct AppState {
    status: SharedStatus,
    metrics: MetricsRender,
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
    if status.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why = status.not_ready_reason.unwrap_or_else(|| "starting".into());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    }
}

async fn status_json(State(app): State<AppState>) -> impl IntoResponse {
    match app.status.read() {
        Ok(s) => Json(s.clone()).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        (app.metrics)(),
    )
}

/// The router serving every endpoint (health and metrics may share a port).
pub fn router(status: SharedStatus, metrics_render: MetricsRender) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .route("/metrics", get(metrics))
        .with_state(AppState {
            status,
            metrics: metrics_render,
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
