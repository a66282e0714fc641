//! moat-guard integration tests: real HTTP on loopback against `TestAuthority` (a stand-in for
//! Moat's `/keys` and RFC 8414 metadata endpoints in Moat's wire format); tokens minted here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod cache;
mod keys;
mod layer;
mod sessions;
mod support;
mod validation;
