//! moat-server integration tests: each test spawns a real Moat on 127.0.0.1:0 with its own
//! SQLite database and talks to it over HTTP, walking flows through the real HTML forms.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod authorize;
mod bad_input;
mod cimd;
mod cimd_hardening;
mod cimd_limits;
mod cli;
mod discovery;
mod flows;
mod key_rotation_races;
mod login_throttle;
mod multi_instance;
mod pages;
mod refresh;
mod registration;
mod tls;
mod token;
