//! `moat resource …`: register and manage MCP servers.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use moat_core::ids::ResourceId;
use moat_core::model::{Resource, ScopeDef};
use serde_json::{Value, json};

use super::Ctx;
use super::output::{out, print_json, print_table};
use crate::keys::MAX_ACCESS_TOKEN_TTL;
use crate::state::now;

/// Limits on per-resource settings.
const MAX_NAME_LEN: usize = 200;
const MAX_SCOPES: usize = 50;
const MAX_DESCRIPTION_LEN: usize = 300;
const MIN_ACCESS_TTL: i64 = 60;
const MIN_REFRESH_TTL: i64 = 300;
const MAX_REFRESH_TTL: i64 = 365 * 24 * 3600;
const DEFAULT_ACCESS_TTL: i64 = 3600;
const DEFAULT_REFRESH_TTL: i64 = 30 * 24 * 3600;
const DEFAULT_REFRESH_IDLE_TTL: i64 = 14 * 24 * 3600;

#[derive(Subcommand, Debug)]
pub enum ResourceCmd {
    /// Register an MCP server.
    Create(CreateArgs),
    /// List registered MCP servers.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one MCP server, with the protected resource metadata it should serve.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change settings of an MCP server (only the options given change).
    Update(UpdateArgs),
    /// Delete an MCP server with all its clients, consents and tokens.
    Delete { id: String },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Display name (shown on the consent page).
    #[arg(long)]
    name: String,
    /// The exact MCP endpoint URL, e.g. https://mcp.example.com/mcp (tokens carry it in `aud`).
    #[arg(long, value_name = "URL")]
    server_url: String,
    /// A scope the server defines, optionally with a description: `todo:read` or
    /// `todo:read=Read your todos`. Repeat for each scope.
    #[arg(long = "scope", value_name = "NAME[=DESCRIPTION]", required = true)]
    scopes: Vec<String>,
    /// Scope granted when a request names none (repeatable; default: all scopes).
    #[arg(long = "default-scope", value_name = "NAME")]
    default_scopes: Vec<String>,
    /// Disable dynamic client registration (RFC 7591) for this server.
    #[arg(long)]
    no_dcr: bool,
    /// Refuse Client ID Metadata Document clients (https URLs as client ids; on by default).
    #[arg(long)]
    no_cimd: bool,
    /// Accept metadata-document clients only from this host (repeatable; `*.example.com`
    /// matches its subdomains). Default: any host.
    #[arg(long = "cimd-allow-host", value_name = "HOST")]
    cimd_allow_hosts: Vec<String>,
    /// Access-token lifetime in seconds (60..=86400; default 3600).
    #[arg(long, value_name = "SECONDS")]
    access_token_ttl: Option<i64>,
    /// Absolute refresh-token lifetime in seconds (default 30 days).
    #[arg(long, value_name = "SECONDS")]
    refresh_token_ttl: Option<i64>,
    /// A refresh token unused this many seconds expires (default 14 days, at most the
    /// refresh-token lifetime).
    #[arg(long, value_name = "SECONDS")]
    refresh_idle_ttl: Option<i64>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    id: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_name = "URL")]
    server_url: Option<String>,
    /// Replaces the scope list (repeatable, `NAME[=DESCRIPTION]`).
    #[arg(long = "scope", value_name = "NAME[=DESCRIPTION]")]
    scopes: Vec<String>,
    /// Replaces the default scopes (repeatable).
    #[arg(long = "default-scope", value_name = "NAME")]
    default_scopes: Vec<String>,
    /// Make every scope a default scope again.
    #[arg(long, conflicts_with = "default_scopes")]
    all_default_scopes: bool,
    #[arg(long, conflicts_with = "no_dcr")]
    dcr: bool,
    #[arg(long)]
    no_dcr: bool,
    /// Accept Client ID Metadata Document clients.
    #[arg(long, conflicts_with = "no_cimd")]
    cimd: bool,
    /// Refuse Client ID Metadata Document clients.
    #[arg(long)]
    no_cimd: bool,
    /// Replaces the metadata-document host allow-list (repeatable).
    #[arg(long = "cimd-allow-host", value_name = "HOST")]
    cimd_allow_hosts: Vec<String>,
    /// Accept metadata-document clients from any host again.
    #[arg(long, conflicts_with = "cimd_allow_hosts")]
    clear_cimd_allow_hosts: bool,
    #[arg(long, value_name = "SECONDS")]
    access_token_ttl: Option<i64>,
    #[arg(long, value_name = "SECONDS")]
    refresh_token_ttl: Option<i64>,
    #[arg(long, value_name = "SECONDS")]
    refresh_idle_ttl: Option<i64>,
    #[arg(long)]
    json: bool,
}

fn parse_scopes(raw: &[String]) -> anyhow::Result<Vec<ScopeDef>> {
    if raw.len() > MAX_SCOPES {
        bail!("at most {MAX_SCOPES} scopes");
    }
    let mut out: Vec<ScopeDef> = Vec::new();
    for s in raw {
        let (name, description) = match s.split_once('=') {
            Some((n, d)) => (n.trim(), d.trim()),
            None => (s.trim(), ""),
        };
        if !moat_core::scope::is_valid_scope_token(name) {
            bail!(
                "{name:?} is not a valid scope (RFC 6749 section 3.3: printable ASCII without spaces, quotes or backslashes)"
            );
        }
        if moat_core::scope::PROTOCOL_SCOPES.contains(&name) {
            bail!("{name:?} is a protocol scope clients add on their own; define the MCP server's own scopes instead");
        }
        if description.chars().count() > MAX_DESCRIPTION_LEN || description.chars().any(char::is_control) {
            bail!("the description of {name} must be at most {MAX_DESCRIPTION_LEN} printable characters");
        }
        if out.iter().any(|d| d.name == name) {
            bail!("scope {name} is given twice");
        }
        out.push(ScopeDef { name: name.to_owned(), description: description.to_owned() });
    }
    Ok(out)
}

fn validate(r: &Resource) -> anyhow::Result<()> {
    let name_len = r.name.chars().count();
    if name_len == 0 || name_len > MAX_NAME_LEN || r.name.chars().any(char::is_control) {
        bail!("--name must be 1 to {MAX_NAME_LEN} printable characters");
    }
    moat_core::url::validate_server_url(&r.server_url).map_err(|e| anyhow::anyhow!("--server-url: {e}"))?;
    if r.scopes.is_empty() {
        bail!("a resource needs at least one --scope");
    }
    for d in &r.default_scopes {
        if r.scope(d).is_none() {
            bail!("default scope {d} is not one of the resource's scopes");
        }
    }
    for h in &r.cimd_allowed_hosts {
        if !moat_core::cimd::valid_host_pattern(h) {
            bail!("--cimd-allow-host {h:?} is not a host name or *.domain pattern");
        }
    }
    if !(MIN_ACCESS_TTL..=MAX_ACCESS_TOKEN_TTL).contains(&r.access_token_ttl) {
        bail!("--access-token-ttl must be between {MIN_ACCESS_TTL} and {MAX_ACCESS_TOKEN_TTL} seconds");
    }
    if !(MIN_REFRESH_TTL..=MAX_REFRESH_TTL).contains(&r.refresh_token_ttl) {
        bail!("--refresh-token-ttl must be between {MIN_REFRESH_TTL} and {MAX_REFRESH_TTL} seconds");
    }
    if r.refresh_idle_ttl < MIN_REFRESH_TTL || r.refresh_idle_ttl > r.refresh_token_ttl {
        bail!("--refresh-idle-ttl must be between {MIN_REFRESH_TTL} seconds and the refresh-token lifetime");
    }
    Ok(())
}

/// The JSON description of a resource (`--json`).
pub fn resource_json(ctx: &Ctx, r: &Resource) -> Value {
    let issuer = ctx.issuer(&r.id);
    json!({
        "id": r.id,
        "name": r.name,
        "issuer": issuer,
        "server_url": r.server_url,
        "scopes": r.scopes,
        "default_scopes": r.effective_default_scopes(),
        "dcr_enabled": r.dcr_enabled,
        "cimd_enabled": r.cimd_enabled,
        "cimd_allowed_hosts": r.cimd_allowed_hosts,
        "access_token_ttl": r.access_token_ttl,
        "refresh_token_ttl": r.refresh_token_ttl,
        "refresh_idle_ttl": r.refresh_idle_ttl,
        "authorization_server_metadata_url": moat_core::url::well_known_url(&issuer, "oauth-authorization-server").unwrap_or_default(),
        "protected_resource_metadata": crate::discovery::prm_json(&issuer, r),
        "protected_resource_metadata_url": format!("{issuer}/protected-resource-metadata"),
        "created_at": r.created_at,
        "updated_at": r.updated_at,
    })
}

fn print_resource(ctx: &Ctx, r: &Resource, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&resource_json(ctx, r));
    }
    let scopes: Vec<String> = r
        .scopes
        .iter()
        .map(|s| if s.description.is_empty() { s.name.clone() } else { format!("{} ({})", s.name, s.description) })
        .collect();
    out!("id:             {}", r.id);
    out!("name:           {}", r.name);
    out!("issuer:         {}", ctx.issuer(&r.id));
    out!("server url:     {}", r.server_url);
    out!("scopes:         {}", scopes.join(", "));
    out!("default scopes: {}", r.effective_default_scopes().join(" "));
    out!("dynamic registration: {}", if r.dcr_enabled { "enabled" } else { "disabled" });
    out!(
        "client metadata documents: {}{}",
        if r.cimd_enabled { "accepted" } else { "refused" },
        if r.cimd_allowed_hosts.is_empty() {
            String::new()
        } else {
            format!(" from {}", r.cimd_allowed_hosts.join(", "))
        }
    );
    out!(
        "access token ttl: {}s, refresh token ttl: {}s (idle {}s)",
        r.access_token_ttl,
        r.refresh_token_ttl,
        r.refresh_idle_ttl
    );
    out!("\nProtected resource metadata for your MCP server to serve at");
    out!("{}:", moat_core::url::well_known_url(&r.server_url, "oauth-protected-resource").unwrap_or_default());
    out!("{}", serde_json::to_string_pretty(&crate::discovery::prm_json(&ctx.issuer(&r.id), r))?);
    Ok(())
}

pub async fn load(ctx: &Ctx, id: &str) -> anyhow::Result<Resource> {
    let rid = ResourceId::parse(id).with_context(|| format!("{id:?} is not a resource id (res_…)"))?;
    ctx.store.get_resource(&rid).await?.with_context(|| format!("no resource {id}"))
}

pub async fn run(cmd: ResourceCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        ResourceCmd::Create(a) => {
            let now = now();
            let r = Resource {
                id: ResourceId::generate(),
                name: a.name.trim().to_owned(),
                server_url: a.server_url,
                scopes: parse_scopes(&a.scopes)?,
                default_scopes: a.default_scopes,
                dcr_enabled: !a.no_dcr,
                cimd_enabled: !a.no_cimd,
                cimd_allowed_hosts: a.cimd_allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                access_token_ttl: a.access_token_ttl.unwrap_or(DEFAULT_ACCESS_TTL),
                refresh_token_ttl: a.refresh_token_ttl.unwrap_or(DEFAULT_REFRESH_TTL),
                refresh_idle_ttl: a
                    .refresh_idle_ttl
                    .unwrap_or(DEFAULT_REFRESH_IDLE_TTL.min(a.refresh_token_ttl.unwrap_or(DEFAULT_REFRESH_TTL))),
                created_at: now,
                updated_at: now,
            };
            validate(&r)?;
            ctx.store.create_resource(&r).await.map_err(conflict_hint)?;
            print_resource(ctx, &r, a.json)
        }
        ResourceCmd::List { json } => {
            let all = ctx.store.list_resources().await?;
            if json {
                return print_json(&Value::Array(all.iter().map(|r| resource_json(ctx, r)).collect()));
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|r| vec![r.id.to_string(), r.name.clone(), r.server_url.clone(), ctx.issuer(&r.id)])
                .collect();
            print_table(&["ID", "NAME", "SERVER URL", "ISSUER"], &rows);
            Ok(())
        }
        ResourceCmd::Show { id, json } => print_resource(ctx, &load(ctx, &id).await?, json),
        ResourceCmd::Update(a) => {
            let mut r = load(ctx, &a.id).await?;
            if let Some(n) = a.name {
                r.name = n.trim().to_owned();
            }
            if let Some(u) = a.server_url {
                r.server_url = u;
            }
            if !a.scopes.is_empty() {
                r.scopes = parse_scopes(&a.scopes)?;
                r.default_scopes.retain(|d| r.scopes.iter().any(|s| &s.name == d));
            }
            if !a.default_scopes.is_empty() {
                r.default_scopes = a.default_scopes;
            }
            if a.all_default_scopes {
                r.default_scopes.clear();
            }
            if a.dcr {
                r.dcr_enabled = true;
            }
            if a.no_dcr {
                r.dcr_enabled = false;
            }
            if a.cimd {
                r.cimd_enabled = true;
            }
            if a.no_cimd {
                r.cimd_enabled = false;
            }
            if !a.cimd_allow_hosts.is_empty() {
                r.cimd_allowed_hosts = a.cimd_allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            }
            if a.clear_cimd_allow_hosts {
                r.cimd_allowed_hosts.clear();
            }
            if let Some(t) = a.access_token_ttl {
                r.access_token_ttl = t;
            }
            if let Some(t) = a.refresh_token_ttl {
                r.refresh_token_ttl = t;
                r.refresh_idle_ttl = r.refresh_idle_ttl.min(t);
            }
            if let Some(t) = a.refresh_idle_ttl {
                r.refresh_idle_ttl = t;
            }
            r.updated_at = now();
            validate(&r)?;
            if !ctx.store.update_resource(&r).await.map_err(conflict_hint)? {
                bail!("no resource {}", a.id);
            }
            print_resource(ctx, &r, a.json)
        }
        ResourceCmd::Delete { id } => {
            let r = load(ctx, &id).await?;
            ctx.store.delete_resource(&r.id).await?;
            out!("deleted {} ({}) with its clients, consents and tokens", r.id, r.name);
            Ok(())
        }
    }
}

fn conflict_hint(e: moat_store::StoreError) -> anyhow::Error {
    match e {
        moat_store::StoreError::Conflict(_) => {
            anyhow::anyhow!("another registered MCP server already uses this server URL")
        }
        other => other.into(),
    }
}
