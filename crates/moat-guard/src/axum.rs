//! The tower/axum integration: [`GuardLayer`] in front of the MCP endpoint and
//! [`Guard::metadata_router`] serving the protected resource metadata (RFC 9728).
//!
//! ```text
//! let app = axum::Router::new()
//!     .nest_service("/mcp", tower::ServiceBuilder::new().layer(guard.layer()).service(mcp))
//!     .merge(guard.metadata_router());
//! ```
//!
//! For each request the layer: lets CORS preflights (`OPTIONS`, which never carry credentials
//! per the Fetch standard) through; refuses a token in the query string; validates the bearer
//! token; when the scope policy has per-tool or per-method entries, buffers the `POST` body (with
//! a limit), reads the JSON-RPC `method` and `params.name` (a body that is not a JSON-RPC message
//! or batch gets `400`: fail closed), and rebuilds the request with the same bytes; checks the
//! scopes; puts [`Claims`] into the request extensions; strips the
//! `Authorization` header; refuses with `404` a request naming an MCP session (`Mcp-Session-Id`)
//! bound to another `(iss, sub)`; calls the MCP service; and binds a session id the response
//! hands out to the caller (forgetting it when the owner's `DELETE` succeeds). See
//! `crate::session` for why.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, HttpBody};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;

use crate::claims::Claims;
use crate::guard::{Guard, Rejection};

/// Tower layer that protects a service with a [`Guard`].
#[derive(Clone, Debug)]
pub struct GuardLayer {
    guard: Guard,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GuardService { guard: self.guard.clone(), inner }
    }
}

/// The service produced by [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct GuardService<S> {
    guard: Guard,
    inner: S,
}

fn into_axum(response: http::Response<String>) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Body::from(body))
}

impl Guard {
    /// The tower layer for the MCP endpoint.
    pub fn layer(&self) -> GuardLayer {
        GuardLayer { guard: self.clone() }
    }

    /// The HTTP response for a rejection, as an axum response.
    pub fn rejection_into_response(&self, rejection: &Rejection) -> Response {
        into_axum(self.rejection_response(rejection))
    }

    /// Routes serving the protected resource metadata at the path-inserted well-known URL of
    /// the endpoint and at the root well-known URL, with `Access-Control-Allow-Origin: *` and
    /// answered preflights (browser-based MCP clients fetch it cross-origin, some with an
    /// `MCP-Protocol-Version` header, which needs a preflight).
    pub fn metadata_router<St>(&self) -> axum::Router<St>
    where
        St: Clone + Send + Sync + 'static,
    {
        let mut router = axum::Router::new();
        for path in self.metadata_paths() {
            let json = self.metadata_json().to_owned();
            router = router.route(
                path,
                get(move || {
                    let json = json.clone();
                    async move { metadata_response(json) }
                })
                .options(|| async { preflight_response() }),
            );
        }
        router
    }
}

fn metadata_response(json: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        ],
        json,
    )
        .into_response()
}

fn preflight_response() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
            (header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS")),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Content-Type, Authorization, MCP-Protocol-Version"),
            ),
            (header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400")),
        ],
    )
        .into_response()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> tower::Service<Request<Body>> for GuardService<S>
where
    S: tower::Service<Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: HttpBody<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // Standard tower pattern: use the service that was driven to readiness, leave a fresh
        // clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = self.guard.clone();
        Box::pin(async move {
            if request.method() == Method::OPTIONS {
                return inner.call(request).await.map(|r| r.map(Body::new));
            }
            let request = match guard.admit(request).await {
                Ok(request) => request,
                Err(rejection) => return Ok(guard.rejection_into_response(&rejection)),
            };
            // After the scope checks, so a caller without the scopes gets the same 403 whether
            // or not the session it names belongs to someone else.
            let check = match request.extensions().get::<Claims>() {
                Some(claims) => match guard.check_session(claims, request.method(), request.headers()) {
                    Ok(check) => Some(check),
                    Err(rejection) => return Ok(guard.rejection_into_response(&rejection)),
                },
                // `admit` always inserts the claims; nothing to bind without them.
                None => None,
            };
            let response = inner.call(request).await?;
            if let Some(check) = &check {
                guard.record_session_response(check, response.status(), response.headers());
            }
            Ok(response.map(Body::new))
        })
    }
}

impl Guard {
    /// Runs every check on `request`; on success returns it rebuilt (same body bytes) with
    /// [`Claims`] in its extensions and without the `Authorization` header.
    pub async fn admit(&self, request: Request<Body>) -> Result<Request<Body>, Rejection> {
        let claims = self.authenticate(request.uri(), request.headers()).await?;
        let (mut parts, body) = request.into_parts();
        let body = if self.needs_body() && parts.method == Method::POST {
            let bytes = read_limited(body, self.config().max_body_bytes).await?;
            // Fails closed: a body that is not a JSON-RPC message or batch gets 400 here and
            // never reaches the MCP service (it cannot be told which tool it would call).
            self.check_body_scopes(&claims, &bytes)?;
            Body::from(bytes)
        } else {
            self.check_scopes(&claims, None)?;
            body
        };
        if self.config().strip_authorization {
            parts.headers.remove(header::AUTHORIZATION);
        }
        parts.extensions.insert::<Claims>(claims);
        Ok(Request::from_parts(parts, body))
    }
}

async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, Rejection> {
    http_body_util::Limited::new(body, limit).collect().await.map(|c| c.to_bytes()).map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            Rejection::PayloadTooLarge
        } else {
            Rejection::BadRequest("request body could not be read")
        }
    })
}

/// An axum extractor for handlers behind the layer: `async fn h(Caller(claims): Caller)`.
/// Answers `500` when the layer is missing (a wiring mistake, never the client's fault).
#[derive(Debug, Clone)]
pub struct AuthenticatedCaller(pub Claims);

impl<St: Send + Sync> axum::extract::FromRequestParts<St> for AuthenticatedCaller {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut http::request::Parts, _state: &St) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .map(AuthenticatedCaller)
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "moat-guard layer missing in front of this handler"))
    }
}
