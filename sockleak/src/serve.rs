//! `sockleak serve`'s HTTP side (axum): /metrics, /report, /healthz. Handlers hold only a
//! channel to the trace session, which owns all state and answers from its own loop.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use log::{info, warn};
use tokio::sync::{mpsc, oneshot};

use crate::{config::ServeOptions, error::UserError};

/// Binds the listener and serves in a task of its own; requests reach the session through `tx`.
pub async fn spawn(opts: ServeOptions, tx: mpsc::Sender<Request>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| UserError::Listen {
            addr: opts.listen,
            reason: e.to_string(),
        })?;
    let bound = listener.local_addr().unwrap_or(opts.listen);
    if !opts.listen.ip().is_loopback() {
        warn!(
            "serving on non-loopback {}: anyone who can reach it sees process names and endpoints",
            opts.listen
        );
    }
    let app = router(tx);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!("HTTP server stopped: {e}");
        }
    });
    info!("serving /metrics, /report and /healthz on http://{bound}");
    Ok(())
}

/// What a handler asks the session for.
pub enum Request {
    Metrics(oneshot::Sender<String>),
    Report(oneshot::Sender<String>),
}

pub fn router(tx: mpsc::Sender<Request>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/report", get(report))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(tx)
}

async fn ask(
    tx: &mpsc::Sender<Request>,
    make: fn(oneshot::Sender<String>) -> Request,
) -> Option<String> {
    let (otx, orx) = oneshot::channel();
    tx.send(make(otx)).await.ok()?;
    orx.await.ok()
}

async fn metrics(State(tx): State<mpsc::Sender<Request>>) -> Response {
    match ask(&tx, Request::Metrics).await {
        Some(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "sockleak is shutting down\n",
        )
            .into_response(),
    }
}

async fn report(State(tx): State<mpsc::Sender<Request>>) -> Response {
    match ask(&tx, Request::Report).await {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "sockleak is shutting down\n",
        )
            .into_response(),
    }
}
