//! rmcp integration (`feature = "rmcp"`): read the verified caller inside an rmcp tool handler.
//!
//! rmcp's streamable HTTP server (`StreamableHttpService`) puts the HTTP request's
//! `http::request::Parts` into the request context extensions of every JSON-RPC request it
//! dispatches; the moat-guard layer has put [`Claims`] into those `Parts`' extensions. So:
//!
//! ```text
//! #[tool(description = "List my todos")]
//! async fn list_todos(&self, Caller(claims): Caller) -> Result<CallToolResult, ErrorData> {
//!     let user = claims.sub();
//!     // …
//! }
//! ```

use rmcp::handler::server::common::{AsRequestContext, FromContextPart};
use rmcp::model::Extensions;
use rmcp::service::{RequestContext, RoleServer};

use crate::claims::Claims;

/// The verified claims of the caller, as an rmcp tool-handler parameter.
///
/// Extraction fails with a JSON-RPC internal error when no claims are present: that means the
/// moat-guard layer is not in front of the MCP service (a wiring mistake), never a client error.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

/// The caller's claims from rmcp request-context extensions.
pub fn claims_from_rmcp_extensions(extensions: &Extensions) -> Option<Claims> {
    extensions.get::<http::request::Parts>().and_then(|parts| parts.extensions.get::<Claims>()).cloned()
}

/// The caller's claims from an rmcp request context.
pub fn claims_from_context(context: &RequestContext<RoleServer>) -> Option<Claims> {
    claims_from_rmcp_extensions(&context.extensions)
}

impl<C: AsRequestContext> FromContextPart<C> for Caller {
    fn from_context_part(context: &mut C) -> Result<Self, rmcp::ErrorData> {
        claims_from_context(context.as_request_context()).map(Caller).ok_or_else(|| {
            tracing::error!(
                "moat-guard: no verified claims in the request; is the moat-guard layer in front of the MCP service?"
            );
            rmcp::ErrorData::internal_error("caller not authenticated", None)
        })
    }
}
