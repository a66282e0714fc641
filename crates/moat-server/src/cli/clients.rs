//! `moat client …`: pre-registered clients (confidential by default, secret shown once and
//! stored hashed) and management of every client.

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use moat_core::ids::{ClientId, random_secret};
use moat_core::model::{AuthMethod, Client, ClientKind, GrantType};
use serde_json::{Value, json};

use super::Ctx;
use super::output::{out, print_json, print_table};
use crate::crypto::sha256_hex;
use crate::keys::MAX_ACCESS_TOKEN_TTL;
use crate::state::now;

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Register a client.
    Create(CreateArgs),
    /// List clients.
    List {
        /// Only clients of this resource.
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one client.
    Show {
        id: String,
        /// The resource, when the id (a metadata-document URL) is a client of several.
        #[arg(long)]
        resource: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Disable a client and revoke all its refresh tokens.
    Disable {
        id: String,
        #[arg(long)]
        resource: Option<String>,
    },
    /// Enable a disabled client.
    Enable {
        id: String,
        #[arg(long)]
        resource: Option<String>,
    },
    /// Delete a client with its consents and tokens.
    Delete {
        id: String,
        #[arg(long)]
        resource: Option<String>,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum GrantArg {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The resource (res_…) the client is for.
    #[arg(long)]
    resource: String,
    /// Display name (shown on the consent page).
    #[arg(long)]
    name: String,
    /// Redirect URI (repeatable): https, loopback http (any port allowed at runtime) or a
    /// native app's private-use scheme.
    #[arg(long = "redirect-uri", value_name = "URI")]
    redirect_uris: Vec<String>,
    /// A public client (no secret, `token_endpoint_auth_method: none`).
    #[arg(long)]
    public: bool,
    /// Grant type (repeatable). Default: authorization_code and refresh_token.
    #[arg(long = "grant", value_enum)]
    grants: Vec<GrantArg>,
    /// A confidential client authenticating with `private_key_jwt` (RFC 7523) using the public
    /// keys in this JWKS file (no private key material allowed).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["public", "jwks_uri"])]
    jwks_file: Option<std::path::PathBuf>,
    /// A confidential client authenticating with `private_key_jwt` using the keys published at
    /// this https URL (fetched through the SSRF-safe fetcher).
    #[arg(long, value_name = "URL", conflicts_with = "public")]
    jwks_uri: Option<String>,
    /// Overrides the resource's access-token lifetime for this client (seconds).
    #[arg(long, value_name = "SECONDS")]
    access_token_ttl: Option<i64>,
    #[arg(long)]
    json: bool,
}

fn client_json(c: &Client) -> Value {
    json!({
        "client_id": c.id,
        "resource": c.resource_id,
        "name": c.name,
        "kind": c.kind.as_str(),
        "redirect_uris": c.redirect_uris,
        "grant_types": c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "token_endpoint_auth_method": c.auth_method.as_str(),
        "access_token_ttl": c.access_token_ttl,
        "disabled": c.disabled,
        "created_at": c.created_at,
        "last_used_at": c.last_used_at,
    })
}

/// The client `id` names (at `resource`, when given). A metadata-document URL used with several
/// resources is a separate client at each, so `--resource` is then required.
async fn load(ctx: &Ctx, id: &str, resource: Option<&str>) -> anyhow::Result<Client> {
    let cid = ClientId::parse(id).with_context(|| format!("{id:?} is not a client id"))?;
    if let Some(r) = resource {
        let r = super::resources::load(ctx, r).await?;
        return ctx.store.get_client(&r.id, &cid).await?.with_context(|| format!("no client {id} at {}", r.id));
    }
    let mut found: Vec<Client> = ctx.store.list_clients(None).await?.into_iter().filter(|c| c.id == cid).collect();
    match found.len() {
        0 => bail!("no client {id}"),
        1 => Ok(found.remove(0)),
        _ => bail!("{id} is a client of several resources; add --resource RES"),
    }
}

pub async fn run(cmd: ClientCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        ClientCmd::Create(a) => create(ctx, a).await,
        ClientCmd::List { resource, json } => {
            let filter = match &resource {
                Some(r) => Some(super::resources::load(ctx, r).await?.id),
                None => None,
            };
            let all = ctx.store.list_clients(filter.as_ref()).await?;
            if json {
                return print_json(&Value::Array(all.iter().map(client_json).collect()));
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|c| {
                    vec![
                        c.id.to_string(),
                        c.name.clone(),
                        c.resource_id.to_string(),
                        c.kind.as_str().to_owned(),
                        c.auth_method.as_str().to_owned(),
                        if c.disabled { "disabled".into() } else { "active".into() },
                    ]
                })
                .collect();
            print_table(&["CLIENT ID", "NAME", "RESOURCE", "KIND", "AUTH", "STATUS"], &rows);
            Ok(())
        }
        ClientCmd::Show { id, resource, json } => {
            let c = load(ctx, &id, resource.as_deref()).await?;
            if json {
                return print_json(&client_json(&c));
            }
            out!("{}", serde_json::to_string_pretty(&client_json(&c))?);
            Ok(())
        }
        ClientCmd::Disable { id, resource } => {
            let c = load(ctx, &id, resource.as_deref()).await?;
            ctx.store.set_client_disabled(&c.resource_id, &c.id, true, now()).await?;
            out!("disabled {} and revoked its refresh tokens", c.id);
            Ok(())
        }
        ClientCmd::Enable { id, resource } => {
            let c = load(ctx, &id, resource.as_deref()).await?;
            ctx.store.set_client_disabled(&c.resource_id, &c.id, false, now()).await?;
            out!("enabled {}", c.id);
            Ok(())
        }
        ClientCmd::Delete { id, resource } => {
            let c = load(ctx, &id, resource.as_deref()).await?;
            ctx.store.delete_client(&c.resource_id, &c.id).await?;
            out!("deleted {} with its consents and tokens", c.id);
            Ok(())
        }
    }
}

async fn create(ctx: &Ctx, a: CreateArgs) -> anyhow::Result<()> {
    let resource = super::resources::load(ctx, &a.resource).await?;
    let name = a.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        bail!("--name must be 1 to 200 printable characters");
    }
    let mut grants: Vec<GrantType> = if a.grants.is_empty() {
        vec![GrantType::AuthorizationCode, GrantType::RefreshToken]
    } else {
        a.grants
            .iter()
            .map(|g| match g {
                GrantArg::AuthorizationCode => GrantType::AuthorizationCode,
                GrantArg::RefreshToken => GrantType::RefreshToken,
                GrantArg::ClientCredentials => GrantType::ClientCredentials,
            })
            .collect()
    };
    grants.dedup();
    if a.public && grants.contains(&GrantType::ClientCredentials) {
        bail!("a public client cannot use client_credentials (OAuth 2.1 section 4.2)");
    }
    if grants.contains(&GrantType::AuthorizationCode) && a.redirect_uris.is_empty() {
        bail!("the authorization_code grant needs at least one --redirect-uri");
    }
    if a.redirect_uris.len() > moat_core::client_metadata::MAX_REDIRECT_URIS {
        bail!("at most {} redirect URIs", moat_core::client_metadata::MAX_REDIRECT_URIS);
    }
    for uri in &a.redirect_uris {
        moat_core::redirect::validate_redirect_uri(uri).map_err(|e| anyhow::anyhow!("--redirect-uri {uri}: {e}"))?;
    }
    if let Some(t) = a.access_token_ttl
        && !(60..=MAX_ACCESS_TOKEN_TTL).contains(&t)
    {
        bail!("--access-token-ttl must be between 60 and {MAX_ACCESS_TOKEN_TTL} seconds");
    }
    let (auth_method, metadata) = match (&a.jwks_file, &a.jwks_uri) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let jwks: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            moat_core::cimd::check_public_jwks(&jwks).map_err(|e| anyhow::anyhow!("--jwks-file: {e}"))?;
            (AuthMethod::PrivateKeyJwt, json!({ "jwks": jwks }))
        }
        (None, Some(uri)) => {
            let ok = url::Url::parse(uri).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some());
            if !ok {
                bail!("--jwks-uri must be an https URL");
            }
            (AuthMethod::PrivateKeyJwt, json!({ "jwks_uri": uri }))
        }
        (None, None) if a.public => (AuthMethod::None, json!({})),
        (None, None) => (AuthMethod::ClientSecretBasic, json!({})),
    };
    let secret = auth_method.uses_secret().then(random_secret);
    let now = now();
    let client = Client {
        id: ClientId::generate(),
        resource_id: resource.id.clone(),
        kind: ClientKind::PreRegistered,
        name,
        redirect_uris: a.redirect_uris,
        grant_types: grants,
        auth_method,
        secret_hash: secret.as_ref().map(|s| sha256_hex(s.as_bytes())),
        secret_expires_at: secret.as_ref().map(|_| 0),
        metadata,
        fingerprint: None,
        access_token_ttl: a.access_token_ttl,
        disabled: false,
        created_at: now,
        updated_at: now,
        last_used_at: None,
    };
    ctx.store.create_client(&client).await?;
    if a.json {
        let mut v = client_json(&client);
        if let (Some(s), Some(o)) = (&secret, v.as_object_mut()) {
            o.insert("client_secret".into(), json!(s));
        }
        return print_json(&v);
    }
    out!("client_id:     {}", client.id);
    if let Some(s) = &secret {
        out!("client_secret: {s}");
        out!("(the secret is shown only now; Moat stores only its hash)");
    }
    out!("token endpoint: {}/oauth/token", ctx.issuer(&resource.id));
    Ok(())
}
