//! `sockleak serve`'s exporter: HTTP (axum), the metrics rendering of a report, the
//! exporter-toolkit web configuration, TLS and basic auth. Renders `model`; the trace session
//! answers its requests.

pub mod basic_auth;
mod http;
pub mod metrics;
pub mod metrics_text;
pub mod tls;
pub mod webconfig;

pub use http::{Request, router, spawn};

/// How `sockleak serve` serves.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: std::net::SocketAddr,
    pub top: usize,
    /// `--metrics-labels`: the labels that identify a process in /metrics.
    pub metrics_labels: Vec<metrics::Label>,
    /// `--web-config`: TLS and authentication.
    pub web: Option<webconfig::WebConfig>,
    /// `/report` is served (`--no-report-endpoint` turns it off).
    pub report_endpoint: bool,
}
