//! Prometheus metrics (`/metrics`): request counts and latencies per route, token issuance and
//! errors, logins and registrations. One registry per application instance, so tests that run
//! several servers in one process do not share counters.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub kind: String,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The application's metrics.
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram, fn() -> Histogram>,
    tokens_issued: Family<Outcome, Counter>,
    token_errors: Family<Outcome, Counter>,
    logins: Family<Outcome, Counter>,
    registrations: Family<Outcome, Counter>,
    cimd: Family<Outcome, Counter>,
    issuance_latency: Family<Outcome, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("moat");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteOnly, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let tokens_issued = Family::<Outcome, Counter>::default();
        let token_errors = Family::<Outcome, Counter>::default();
        let logins = Family::<Outcome, Counter>::default();
        let registrations = Family::<Outcome, Counter>::default();
        let cimd = Family::<Outcome, Counter>::default();
        let issuance_latency = Family::<Outcome, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        registry.register("tokens_issued", "Access tokens issued, by grant type", tokens_issued.clone());
        registry.register("token_errors", "Token endpoint errors, by OAuth error code", token_errors.clone());
        registry.register(
            "token_issuance_duration_seconds",
            "Token endpoint latency of successful requests, by grant type",
            issuance_latency.clone(),
        );
        registry.register("logins", "Login attempts, by outcome", logins.clone());
        registry.register("registrations", "Dynamic client registrations, by outcome", registrations.clone());
        registry.register(
            "cimd_events",
            "Client ID Metadata Document fetches, cache hits and rejections, by outcome",
            cimd.clone(),
        );
        Self { registry, requests, latency, tokens_issued, token_errors, logins, registrations, cimd, issuance_latency }
    }

    pub fn token_issued(&self, grant: &str, started: Instant) {
        let o = Outcome { kind: grant.to_owned() };
        self.tokens_issued.get_or_create(&o).inc();
        self.issuance_latency.get_or_create(&o).observe(started.elapsed().as_secs_f64());
    }

    pub fn token_error(&self, code: &str) {
        self.token_errors.get_or_create(&Outcome { kind: code.to_owned() }).inc();
    }

    pub fn login(&self, outcome: &str) {
        self.logins.get_or_create(&Outcome { kind: outcome.to_owned() }).inc();
    }

    pub fn registration(&self, outcome: &str) {
        self.registrations.get_or_create(&Outcome { kind: outcome.to_owned() }).inc();
    }

    pub fn cimd(&self, outcome: &str) {
        self.cimd.get_or_create(&Outcome { kind: outcome.to_owned() }).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }
}

/// The `method` label of a request. Clients choose the method freely (`curl -X ANYTHING`), and
/// every distinct label value is a series kept for the life of the process, so anything but
/// the standard methods Moat's routes could serve is folded into `other` to bound memory and
/// scrape size.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware recording every request's route, status and latency.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method()).to_owned();
    let resp = next.run(req).await;
    metrics.requests.get_or_create(&RouteLabels { route: route.clone(), method, status: resp.status().as_u16() }).inc();
    metrics.latency.get_or_create(&RouteOnly { route }).observe(started.elapsed().as_secs_f64());
    resp
}

/// `GET /metrics`.
pub async fn handler(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::any;
    use tower::ServiceExt as _;

    use super::*;

    #[test]
    fn method_labels_are_bounded() {
        for m in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            assert_eq!(method_label(&Method::from_bytes(m.as_bytes()).unwrap()), m);
        }
        for m in ["RANDOM1", "CONNECT", "TRACE", "get", "PROPFIND"] {
            assert_eq!(method_label(&Method::from_bytes(m.as_bytes()).unwrap()), "other", "{m}");
        }
    }

    #[tokio::test]
    async fn arbitrary_methods_do_not_create_series() {
        let metrics = Arc::new(Metrics::new());
        let app = Router::new()
            .route("/login", any(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(Arc::clone(&metrics), track));
        for m in ["RANDOM1", "RANDOM2", "POST"] {
            let req = axum::http::Request::builder()
                .method(Method::from_bytes(m.as_bytes()).unwrap())
                .uri("/login")
                .body(Body::empty())
                .unwrap();
            app.clone().oneshot(req).await.unwrap();
        }
        let out = metrics.render();
        assert!(!out.contains("RANDOM"), "{out}");
        assert!(out.contains(r#"method="other""#), "{out}");
        assert!(out.contains(r#"method="POST""#), "{out}");
    }
}
