//! Moat's pure protocol and domain logic: no I/O, no async, no HTTP framework, no database.
//!
//! Everything that decides whether a request is valid under OAuth 2.1 and the MCP authorization
//! specification lives here so it can be unit- and property-tested in isolation.

pub mod cimd;
pub mod client_metadata;
pub mod error;
pub mod ids;
pub mod model;
pub mod pkce;
pub mod redirect;
pub mod refresh;
pub mod scope;
pub mod token;
pub mod url;

pub use error::{OAuthError, OAuthErrorCode};
pub use ids::{ClientId, ResourceId, UserId};
