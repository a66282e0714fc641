//! todo-mcp: a sample MCP server (rmcp, streamable HTTP) protected by moat-guard.
//!
//! Request path (outermost first): CORS (browser clients; exposes `WWW-Authenticate`) →
//! `Origin` check (DNS-rebinding defence, MCP transport spec: an invalid `Origin` gets 403) →
//! moat-guard (bearer token, per-tool scopes, 401/403 challenges, each `Mcp-Session-Id` bound to
//! the user who created it) → rmcp's `StreamableHttpService` (which checks `Host` and `Origin`
//! again). Protected resource metadata (RFC 9728) is served at
//! `/.well-known/oauth-protected-resource{/mcp}`.

pub mod server;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use moat_guard::{Guard, GuardConfig, Validator, ValidatorConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::server::TodoServer;
use crate::store::Store;

/// Command-line and environment configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "todo-mcp", version, about = "A sample MCP server protected by Moat")]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "TODO_MCP_LISTEN", default_value = "127.0.0.1:3000")]
    pub listen: SocketAddr,
    /// The exact MCP endpoint URL registered in Moat (`moat resource create --server-url`):
    /// published as the metadata `resource` and required in the token `aud`. Default:
    /// `http://<listen address>/mcp` (with the real port when listening on port 0).
    #[arg(long, env = "TODO_MCP_SERVER_URL")]
    pub server_url: Option<String>,
    /// Moat's issuer for this resource: `{MOAT_PUBLIC_URL}/resources/res_…`.
    #[arg(long, env = "TODO_MCP_ISSUER")]
    pub issuer: String,
    /// Moat's key set URL (`{MOAT_PUBLIC_URL}/keys`). Default: read `jwks_uri` from the issuer's
    /// RFC 8414 metadata.
    #[arg(long, env = "TODO_MCP_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// SQLite database URL.
    #[arg(long, env = "TODO_MCP_DATABASE", default_value = "sqlite://todo-mcp.db")]
    pub database: String,
    /// Browser origins allowed to call the MCP endpoint (repeatable). Default: the server
    /// URL's origin.
    #[arg(long = "allowed-origin", env = "TODO_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// `Host` header values accepted (repeatable). Default: the server URL's host and
    /// host:port.
    #[arg(long = "allowed-host", env = "TODO_MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Allow a plain-http issuer or key URL on a non-loopback host (e.g. a container network).
    #[arg(long, env = "TODO_MCP_ALLOW_INSECURE_HTTP")]
    pub allow_insecure_http: bool,
}

/// A bound, ready-to-run server.
pub struct Application {
    listener: tokio::net::TcpListener,
    router: axum::Router,
    addr: SocketAddr,
    server_url: String,
    validator: Validator,
    cancel: CancellationToken,
}

/// The `res_…` id at the end of a Moat issuer (`{base}/resources/res_…`), accepted as an
/// audience next to the server URL (DESIGN.md §4: `aud` carries both).
fn resource_id_of(issuer: &str) -> Option<String> {
    let last = issuer.trim_end_matches('/').rsplit('/').next()?;
    (last.starts_with("res_") && last.len() > 4).then(|| last.to_owned())
}

/// 403 for a browser `Origin` that is not allowed (MCP transport spec, "Security Warning":
/// servers must validate `Origin`; the body may be a JSON-RPC error without an id).
async fn check_origin(State(allowed): State<Arc<Vec<String>>>, request: Request, next: Next) -> Response {
    let origin = request.headers().get(header::ORIGIN).map(|v| v.to_str().unwrap_or("invalid"));
    if moat_guard::origin::origin_allowed(origin, &allowed) {
        return next.run(request).await;
    }
    tracing::warn!(origin = origin.unwrap_or_default(), "refused request from a foreign origin");
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"Forbidden: Origin not allowed"}}"#,
    )
        .into_response()
}

impl Application {
    /// Opens the database, binds the listener and wires the routes. Does not contact Moat:
    /// keys are fetched on the first request (a warm-up is attempted in the background by
    /// [`Application::run_until_stopped`]).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener =
            tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let server_url = config.server_url.clone().unwrap_or_else(|| format!("http://{addr}/mcp"));
        let parsed = url_path(&server_url)?;

        let store = Store::open(&config.database).await.with_context(|| format!("opening {}", config.database))?;

        let mut vc = ValidatorConfig::new(config.issuer.clone(), server_url.clone())
            .with_scope_hierarchy(server::scope_hierarchy())
            .with_insecure_http(config.allow_insecure_http);
        if let Some(res) = resource_id_of(&config.issuer) {
            vc = vc.with_audience(res);
        }
        vc.jwks_url = config.jwks_url.clone();
        let validator = Validator::new(vc).context("token validator configuration")?;
        let guard = Guard::new(
            validator.clone(),
            GuardConfig::new(server_url.clone())
                .with_policy(server::scope_policy())
                // Only the default scope, as registered (`moat resource create --default-scope
                // todo:read`): the metadata and the 401 challenge name the minimal set for basic
                // use (MCP authorization, scope selection), so clients first ask for todo:read and
                // get todo:write by step-up from the 403 that add_todo answers.
                .with_scopes_supported([server::READ])
                .with_resource_name("Todo MCP"),
        )
        .context("guard configuration")?;

        let allowed_origins = if config.allowed_origins.is_empty() {
            moat_guard::origin::default_allowed_origins(&server_url)
        } else {
            config.allowed_origins.clone()
        };
        let mut allowed_hosts = if config.allowed_hosts.is_empty() {
            moat_guard::origin::default_allowed_hosts(&server_url)
        } else {
            config.allowed_hosts.clone()
        };
        allowed_hosts.dedup();

        let cancel = CancellationToken::new();
        let rmcp_config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(allowed_hosts)
            .with_allowed_origins(allowed_origins.clone())
            .with_cancellation_token(cancel.child_token());
        let mcp: StreamableHttpService<TodoServer, LocalSessionManager> =
            StreamableHttpService::new(move || Ok(TodoServer::new(store.clone())), Default::default(), rmcp_config);

        let cors_origins: Vec<HeaderValue> =
            allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::list(cors_origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                HeaderName::from_static("mcp-protocol-version"),
                HeaderName::from_static("mcp-session-id"),
                HeaderName::from_static("mcp-method"),
                HeaderName::from_static("mcp-name"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([header::WWW_AUTHENTICATE, HeaderName::from_static("mcp-session-id")]);

        let protected = tower::ServiceBuilder::new()
            .layer(cors)
            .layer(axum::middleware::from_fn_with_state(Arc::new(allowed_origins), check_origin))
            .layer(guard.layer())
            .service(mcp);
        let router = axum::Router::new()
            .route_service(&parsed, protected)
            .merge(guard.metadata_router())
            .route("/healthz", get(|| async { "ok" }));
        Ok(Self { listener, router, addr, server_url, validator, cancel })
    }

    /// The bound address (the real port when listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The MCP endpoint URL (metadata `resource`, token audience).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Serves until `shutdown` completes, then closes MCP streams and drains connections.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let validator = self.validator.clone();
        tokio::spawn(async move {
            // Warm-up only: failure is fine (Moat may be down; keys are fetched on demand).
            if let Err(e) = validator.refresh_keys().await {
                tracing::warn!(error = %e, "could not fetch Moat's signing keys yet; will retry on demand");
            }
        });
        tracing::info!(addr = %self.addr, server_url = %self.server_url, "todo-mcp listening");
        let cancel = self.cancel.clone();
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // SSE streams stay open until rmcp is told to stop.
                cancel.cancel();
            })
            .await?;
        Ok(())
    }
}

/// The local route of the MCP endpoint: the server URL's path (must not be `/`).
fn url_path(server_url: &str) -> anyhow::Result<String> {
    let url = url_parse(server_url)?;
    let path = url.trim_end_matches('/');
    anyhow::ensure!(!path.is_empty(), "--server-url needs a path such as /mcp: {server_url}");
    Ok(path.to_owned())
}

fn url_parse(server_url: &str) -> anyhow::Result<String> {
    let rest = server_url
        .split_once("://")
        .map(|(_, rest)| rest)
        .with_context(|| format!("--server-url is not an absolute URL: {server_url}"))?;
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values() {
        assert_eq!(resource_id_of("https://moat.example/resources/res_abc").as_deref(), Some("res_abc"));
        assert_eq!(resource_id_of("https://moat.example/resources/res_abc/").as_deref(), Some("res_abc"));
        assert_eq!(resource_id_of("https://moat.example"), None);
        assert_eq!(url_path("http://127.0.0.1:3000/mcp").ok().as_deref(), Some("/mcp"));
        assert_eq!(url_path("https://h.example/a/mcp/?x=1").ok().as_deref(), Some("/a/mcp"));
        assert!(url_path("https://h.example/").is_err());
        assert!(url_path("h.example/mcp").is_err());
    }
}
