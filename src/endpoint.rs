//! The operations endpoint: `/metrics` (Prometheus text format, from the
//! registry the caller passes in), `/healthz` (the process is alive and
//! serving) and `/readyz` (200 when [`Health`] says ready, else 503 with the
//! reason). Plain HTTP/1.1 on the configured address; nothing else is
//! served, and no response ever carries event data.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};

use crate::health::Health;

/// The address could not be bound. The I/O error is in the message, not a
/// `source()`, so `{:#}` prints it once.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr} ({setting}): {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    /// Where the address came from, e.g. `metrics.listen` or `--metrics-listen`.
    pub setting: &'static str,
    pub error: std::io::Error,
}

/// Bind now (so a taken port fails at start, with the setting named), serve
/// later with [`serve`].
pub fn bind(addr: SocketAddr, setting: &'static str) -> Result<std::net::TcpListener, BindError> {
    let bind_error = |error| BindError {
        addr,
        setting,
        error,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

#[derive(Clone)]
struct Ops {
    registry: Registry,
    health: Arc<Health>,
}

/// The endpoint's routes.
pub fn router(registry: Registry, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Ops { registry, health })
}

/// Serve until the task is dropped or aborted. Must run inside a tokio
/// runtime; `listener` comes from [`bind`].
pub async fn serve(
    listener: std::net::TcpListener,
    registry: Registry,
    health: Arc<Health>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router(registry, health)).await
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut body = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&ops.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("cannot encode metrics: {e}\n").into_bytes(),
        ),
    }
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    match ops.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
