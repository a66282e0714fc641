//! Building and running the application: open the store, load keys, bind (port 0 allowed),
//! assemble the router, run background tasks, shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use moat_store::DynStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::audit::AuditSink;
use crate::config::Config;
use crate::crypto::{DerivedKeys, MasterKey};
use crate::keys::KeyRing;
use crate::metrics::Metrics;
use crate::state::{AppState, Inner, ResourceCache, now};
use crate::throttle::WindowLimiter;

/// A built, bound, not yet running Moat.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    audit_writer: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Application {
    /// Opens the store (applying migrations unless disabled), loads or creates the master key
    /// and signing keys, binds the listener and builds the router.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let base_url = match &config.public_url {
            Some(u) => moat_core::url::parse_public_url(u).map_err(|e| anyhow::anyhow!("public_url: {e}"))?,
            None => default_public_url(addr),
        };
        // The master key first: a PostgreSQL deployment without an explicit one is refused
        // before the database is touched (DESIGN.md §7). The zero-setup key file of a single
        // SQLite instance is generated only for a database without signing keys: a new key
        // could not open existing ones (a restored database whose key file was lost).
        let explicit = config.is_postgres() || config.master_key.is_some() || config.master_key_file.is_some();
        let master = match MasterKey::load(&config, false) {
            Ok(k) => Some(k),
            Err(e) if explicit => return Err(e),
            Err(_) => None,
        };
        let store = moat_store::connect(&config.database_url, &config.connect_options())
            .await
            .with_context(|| "opening the database")?;
        if config.migrate_on_start {
            store.migrate().await.context("applying database migrations")?;
        }
        let master = match master {
            Some(k) => k,
            None if store.list_signing_keys().await?.is_empty() => MasterKey::load(&config, true)?,
            None => anyhow::bail!(
                "the database holds signing keys but its master key file is missing: restore it \
                 (or set MOAT_MASTER_KEY / master_key_file); a newly generated key could not open them"
            ),
        };
        let derived = DerivedKeys::new(&master)?;
        let keys = Arc::new(KeyRing::new(Arc::clone(&store), Arc::clone(&derived.key_sealer)));
        keys.ensure_and_load(config.signing_alg, now()).await.context("loading signing keys")?;
        let dummy_password_hash = crate::passwords::hash_password(moat_core::ids::random_secret()).await?;
        let (audit, audit_writer) = AuditSink::start(Arc::clone(&store));
        let metrics = Arc::new(Metrics::new());
        let fetcher = crate::fetch::SafeFetcher::new(config.fetch_settings()?)?;
        let state = AppState::new(Inner {
            cimd: crate::cimd::CimdResolver::new(fetcher, Arc::clone(&metrics)),
            login_by_account: WindowLimiter::new(
                config.login_max_failures_per_account,
                config.login_failure_window_seconds,
            ),
            login_by_ip: WindowLimiter::new(config.login_max_failures_per_ip, config.login_failure_window_seconds),
            registrations_by_ip: WindowLimiter::new(config.dcr_rate_limit_per_minute, 60),
            cimd_fetches_by_ip: WindowLimiter::new(config.cimd_fetch_rate_limit_per_minute, 60),
            resources: ResourceCache::new(Duration::from_secs(config.resource_cache_seconds)),
            metrics,
            base_url,
            store: Arc::clone(&store),
            keys: Arc::clone(&keys),
            derived,
            audit,
            dummy_password_hash,
            config,
        });
        let background = vec![spawn_key_reload(&state), spawn_housekeeping(&state)];
        let router = router(state.clone());
        tracing::info!(address = %addr, public_url = %state.base_url, backend = store.backend(), "moat is ready");
        Ok(Self { listener, router, state, audit_writer, background })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }

    pub fn store(&self) -> DynStore {
        Arc::clone(&self.state.store)
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests, stops background
    /// tasks and flushes the audit log.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Self { listener, router, state, audit_writer, background } = self;
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).with_graceful_shutdown(shutdown).await?;
        for task in background {
            task.abort();
        }
        drop(state);
        // The router (and its state clones) are gone, so the audit channel closes and the
        // writer drains what is queued.
        let _ = tokio::time::timeout(Duration::from_secs(10), audit_writer).await;
        tracing::info!("moat stopped");
        Ok(())
    }
}

/// `http://{listen}` with an unspecified listen address replaced by loopback.
fn default_public_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
            SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        addr.ip()
    };
    // SocketAddr formats IPv6 as `[::1]:port`, which is what a URL needs.
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// CORS for the public endpoints browser-based clients call (DESIGN.md §3): any origin, no
/// credentials.
fn public_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            HeaderName::from_static("mcp-protocol-version"),
        ])
        .max_age(Duration::from_secs(3600))
}

pub fn router(state: AppState) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let public = Router::new().merge(crate::discovery::router()).merge(crate::oauth::api_router()).layer(public_cors());
    Router::new()
        .merge(public)
        .merge(crate::oauth::authorize_router())
        .merge(crate::pages::router())
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::handler).with_state(Arc::clone(&metrics)))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::track))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // The query string is left out of logs: it can carry codes and state.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
        }))
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "unavailable"}))).into_response()
        }
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "not_found"}))).into_response()
}

fn spawn_key_reload(state: &AppState) -> JoinHandle<()> {
    let keys = Arc::clone(&state.keys);
    let every = Duration::from_secs(state.config.key_reload_seconds.max(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = keys.reload().await {
                tracing::warn!(error = %e, "reloading signing keys failed; keeping the loaded ones");
            }
        }
    })
}

fn spawn_housekeeping(state: &AppState) -> JoinHandle<()> {
    let store = Arc::clone(&state.store);
    let every = Duration::from_secs(state.config.housekeeping_interval_seconds.max(1));
    let idle = state.config.session_idle_seconds;
    let unused = state.config.dcr_unused_client_ttl_seconds;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = now();
            match store.purge_expired(now, now - idle, now - unused).await {
                Ok(stats) => tracing::debug!(?stats, "purged expired rows"),
                Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received");
}
