//! `sockleak serve`'s HTTP side (axum): /metrics, /report, /healthz. Handlers hold only a
//! channel to the trace session, which owns all state and answers from its own loop.

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use std::{collections::BTreeMap, sync::Arc};

use log::{info, warn};
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::UserError, serve::ServeOptions, serve::basic_auth::Auth, serve::metrics_text,
    serve::tls::TlsListener,
};

/// What anyone who reaches an unprotected `serve` port can read, with and without /report.
const EXPOSURE: &str = "every traced process's call stacks, peers, fd limits and environment-derived findings (proxy settings, credentials masked)";
const EXPOSURE_METRICS: &str = "every traced process's pid, command name, cgroup, container, socket counts and diagnosed patterns";

/// Binds the listener and serves in a task of its own; requests reach the session through `tx`.
pub async fn spawn(opts: ServeOptions, tx: mpsc::Sender<Request>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| UserError::Listen {
            addr: opts.listen,
            reason: e.to_string(),
        })?;
    let bound = listener.local_addr().unwrap_or(opts.listen);
    let web = opts.web.clone();
    let exposure = if opts.report_endpoint {
        EXPOSURE
    } else {
        EXPOSURE_METRICS
    };
    if !opts.listen.ip().is_loopback() {
        match &web {
            None => warn!(
                "serving on non-loopback {} without --web-config: anyone who can reach it reads {exposure}; give --web-config with tls_server_config and basic_auth_users (README: securing serve)",
                opts.listen
            ),
            Some(w) if w.tls.is_none() => warn!(
                "serving on non-loopback {} without TLS: {exposure} and any basic-auth passwords cross the network in clear; add tls_server_config to the web config",
                opts.listen
            ),
            Some(w) if w.users.is_none() && !w.client_certs => warn!(
                "serving on non-loopback {} without authentication: anyone who can reach it reads {exposure}; add basic_auth_users or client certificates to the web config",
                opts.listen
            ),
            Some(_) => {}
        }
    }
    let users = web.as_ref().and_then(|w| w.users.clone());
    let app = router(tx, users, opts.report_endpoint);
    let scheme = match web.as_ref().and_then(|w| w.tls.clone()) {
        Some(tls) => {
            let l = TlsListener::new(listener, tls).map_err(|e| UserError::Listen {
                addr: opts.listen,
                reason: e.to_string(),
            })?;
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    warn!("HTTPS server stopped: {e}");
                }
            });
            "https"
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    warn!("HTTP server stopped: {e}");
                }
            });
            "http"
        }
    };
    info!(
        "serving /metrics, {}/healthz on {scheme}://{bound}{}",
        if opts.report_endpoint {
            "/report and "
        } else {
            ""
        },
        if web.as_ref().is_some_and(|w| w.users.is_some()) {
            " (basic auth)"
        } else {
            ""
        }
    );
    Ok(())
}

/// What a handler asks the session for.
pub enum Request {
    Metrics(oneshot::Sender<String>),
    Report(oneshot::Sender<String>),
}

/// /metrics and /report (unless turned off) behind basic auth when users are configured;
/// /healthz (which says only "ok") open, for liveness probes.
pub fn router(
    tx: mpsc::Sender<Request>,
    users: Option<Arc<BTreeMap<String, String>>>,
    report_endpoint: bool,
) -> Router {
    let mut data = Router::new().route("/metrics", get(metrics));
    if report_endpoint {
        data = data.route("/report", get(report));
    }
    let mut data = data.with_state(tx);
    if let Some(u) = users {
        data = data.layer(axum::middleware::from_fn_with_state(
            Auth::new(u),
            crate::serve::basic_auth::require,
        ));
    }
    data.route("/healthz", get(|| async { "ok\n" }))
}

async fn ask(
    tx: &mpsc::Sender<Request>,
    make: fn(oneshot::Sender<String>) -> Request,
) -> Option<String> {
    let (otx, orx) = oneshot::channel();
    tx.send(make(otx)).await.ok()?;
    orx.await.ok()
}

/// OpenMetrics for clients that ask for it (Prometheus), the text format for the rest.
async fn metrics(State(tx): State<mpsc::Sender<Request>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = metrics_text::wants_openmetrics(accept);
    match ask(&tx, Request::Metrics).await {
        Some(body) if openmetrics => (
            [(header::CONTENT_TYPE, metrics_text::OPENMETRICS_CONTENT_TYPE)],
            body,
        )
            .into_response(),
        Some(body) => (
            [(header::CONTENT_TYPE, metrics_text::CONTENT_TYPE)],
            metrics_text::from_openmetrics(&body),
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
