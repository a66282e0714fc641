//! The moat-store integration tests: the backend-agnostic conformance suite, instantiated once
//! per backend, plus backend-specific tests (DESIGN.md §11).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conformance;
mod fixtures;
mod postgres;
mod sqlite;
