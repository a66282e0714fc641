//! Access-token claims (RFC 9068 §2.2) exactly as DESIGN.md §4 lays them out.

use serde::{Deserialize, Serialize};

/// The JWT `typ` header value of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Claims of a Moat access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// The resource's issuer, `{base}/resources/{res_id}`.
    pub iss: String,
    /// The user id (`usr_…`), or the client id for client credentials.
    pub sub: String,
    /// The resource's registered server URL and its `res_…` id.
    pub aud: Vec<String>,
    pub client_id: String,
    /// Space-separated granted scopes.
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// Login session id, for tokens issued through a browser login.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sid: Option<String>,
    /// Time of the user's authentication (RFC 9068 §2.2.1).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub auth_time: Option<i64>,
}
