//! The `moat` command line: `serve`, `migrate`, and management commands that work directly on
//! the configured database (DESIGN.md §8), so an operator can bootstrap before the server runs
//! and a running server sees the effect at once.

mod clients;
mod keys;
mod output;
mod resources;
mod users;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use moat_store::DynStore;

use crate::config::{Config, LogFormat, Overrides};
use crate::startup::{Application, shutdown_signal};
use output::out;

#[derive(Parser, Debug)]
#[command(name = "moat", version, about = "Moat: the OAuth 2.1 authorization server for MCP servers")]
pub struct Cli {
    /// Configuration file (default: ./moat.toml when it exists; env MOAT_CONFIG).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://moat.db (default) or postgres://… (env MOAT_DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    /// Public URL clients reach Moat at, e.g. https://auth.example.com (env MOAT_PUBLIC_URL).
    #[arg(long, global = true, value_name = "URL")]
    public_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the authorization server.
    Serve {
        /// Address to listen on (default 127.0.0.1:8080; env MOAT_LISTEN).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Register and manage MCP servers (resources).
    #[command(subcommand)]
    Resource(resources::ResourceCmd),
    /// Register and manage OAuth clients.
    #[command(subcommand)]
    Client(clients::ClientCmd),
    /// Manage local user accounts.
    #[command(subcommand)]
    User(users::UserCmd),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let listen = match &cli.command {
        Command::Serve { listen } => *listen,
        _ => None,
    };
    let overrides = Overrides { listen, public_url: cli.public_url.clone(), database_url: cli.database.clone() };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    init_logging(&config, matches!(cli.command, Command::Serve { .. }));
    match cli.command {
        Command::Serve { .. } => {
            let app = Application::build(config).await?;
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate => {
            let store = open_store(&config, false).await?;
            store.migrate().await.context("applying migrations")?;
            out!("migrations applied ({})", store.backend());
            Ok(())
        }
        Command::Resource(cmd) => resources::run(cmd, &Ctx::new(config).await?).await,
        Command::Client(cmd) => clients::run(cmd, &Ctx::new(config).await?).await,
        Command::User(cmd) => users::run(cmd, &Ctx::new(config).await?).await,
        Command::Keys(cmd) => keys::run(cmd, &Ctx::new(config).await?).await,
    }
}

fn init_logging(config: &Config, serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = std::env::var("MOAT_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| format!("{default},sqlx=warn"));
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn open_store(config: &Config, migrate: bool) -> anyhow::Result<DynStore> {
    let store =
        moat_store::connect(&config.database_url, &config.connect_options()).await.context("opening the database")?;
    if migrate && config.migrate_on_start {
        store.migrate().await.context("applying database migrations")?;
    }
    Ok(store)
}

/// What management commands share.
pub struct Ctx {
    pub config: Config,
    pub store: DynStore,
    /// Public base URL used to print issuers and metadata URLs.
    pub base_url: String,
}

impl Ctx {
    async fn new(config: Config) -> anyhow::Result<Self> {
        let store = open_store(&config, true).await?;
        let base_url = match &config.public_url {
            Some(u) => moat_core::url::parse_public_url(u).map_err(|e| anyhow::anyhow!("public_url: {e}"))?,
            None => format!("http://{}", config.listen),
        };
        Ok(Self { config, store: Arc::clone(&store), base_url })
    }

    pub fn issuer(&self, id: &moat_core::ids::ResourceId) -> String {
        format!("{}/resources/{id}", self.base_url)
    }
}
