//! Moat, the OAuth 2.1 authorization server for MCP servers: configuration, keys, the HTTP
//! application (discovery, OAuth endpoints, pages), and the `moat` command line.

pub mod audit;
pub mod cimd;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod discovery;
pub mod fetch;
pub mod http;
pub mod jwk;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod pages;
pub mod passwords;
pub mod startup;
pub mod state;
pub mod throttle;

pub use config::Config;
pub use startup::Application;
