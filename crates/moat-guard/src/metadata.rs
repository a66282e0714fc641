//! OAuth 2.0 Protected Resource Metadata (RFC 9728 §2) as an MCP server publishes it.

use serde::{Deserialize, Serialize};

/// The protected resource metadata document (RFC 9728 §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProtectedResourceMetadata {
    /// The exact MCP endpoint URL (RFC 9728 §3.3: must equal the URL the client derived the
    /// metadata URL from).
    pub resource: String,
    /// Issuers that can issue tokens for this resource (Moat's issuer for it).
    pub authorization_servers: Vec<String>,
    /// Scopes for basic use. Never `offline_access` (MCP authorization spec: it is the
    /// authorization server's business, not the resource's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_supported: Vec<String>,
    /// Only `header` (RFC 6750 §2.1): tokens in the query or a form body are not accepted.
    pub bearer_methods_supported: Vec<String>,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Human-readable documentation URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_documentation: Option<String>,
}

impl ProtectedResourceMetadata {
    /// Metadata for `resource` protected by `authorization_servers` with the given scopes
    /// (`offline_access` is dropped).
    pub fn new(resource: impl Into<String>, authorization_servers: Vec<String>, scopes_supported: Vec<String>) -> Self {
        Self {
            resource: resource.into(),
            authorization_servers,
            scopes_supported: scopes_supported.into_iter().filter(|s| s != "offline_access").collect(),
            bearer_methods_supported: vec!["header".to_owned()],
            resource_name: None,
            resource_documentation: None,
        }
    }
}
