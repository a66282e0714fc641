//! todo-mcp over real HTTP on loopback: the server is spawned on port 0 against a loopback
//! stand-in for Moat's key endpoints (moat-guard's `TestAuthority`), and driven with raw
//! streamable-HTTP JSON-RPC requests carrying minted tokens; and (`rmcp_oauth`) against a real
//! Moat in-process with rmcp's own OAuth client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod flows;
mod rmcp_oauth;
mod security;
mod support;
