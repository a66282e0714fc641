//! `moat user …`: local accounts (argon2id passwords read from stdin, never from arguments,
//! so they stay out of shell history and process listings).

use std::io::Read as _;

use anyhow::{Context, bail};
use clap::Subcommand;
use moat_core::ids::UserId;
use moat_core::model::User;
use serde_json::{Value, json};

use super::Ctx;
use super::output::{out, print_json, print_table};
use crate::passwords::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN, hash_password};
use crate::state::now;

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a local account.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// List accounts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: ends its sessions and revokes its refresh tokens.
    Disable { user: String },
    /// Enable a disabled account.
    Enable { user: String },
    /// Delete an account with its sessions, consents and tokens.
    Delete { user: String },
}

fn user_json(u: &User) -> Value {
    json!({ "id": u.id, "email": u.email, "name": u.name, "disabled": u.disabled, "created_at": u.created_at })
}

/// Checks an email address loosely (one `@`, non-empty parts, no spaces or controls) and
/// lowercases it; Moat does not send mail, it only uses the address as a login name.
pub fn normalize_email(raw: &str) -> anyhow::Result<String> {
    let e = raw.trim().to_lowercase();
    let ok = e.len() <= 320
        && e.split('@').count() == 2
        && e.split('@').all(|p| !p.is_empty())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        bail!("{raw:?} is not a valid email address");
    }
    Ok(e)
}

async fn find(ctx: &Ctx, user: &str) -> anyhow::Result<User> {
    let found = match UserId::parse(user) {
        Some(id) => ctx.store.get_user(&id).await?,
        None => ctx.store.get_user_by_email(&normalize_email(user)?).await?,
    };
    found.with_context(|| format!("no user {user}"))
}

pub async fn run(cmd: UserCmd, ctx: &Ctx) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Create { email, name, password_stdin: _, json } => {
            let email = normalize_email(&email)?;
            if let Some(n) = &name
                && (n.chars().count() > 200 || n.chars().any(char::is_control))
            {
                bail!("--name must be at most 200 printable characters");
            }
            let mut password = String::new();
            std::io::stdin()
                .take(MAX_PASSWORD_LEN as u64 + 2)
                .read_to_string(&mut password)
                .context("reading the password from stdin")?;
            let password = password.strip_suffix('\n').map(|p| p.strip_suffix('\r').unwrap_or(p)).unwrap_or(&password);
            if password.len() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
                bail!("the password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} bytes");
            }
            let now = now();
            let user = User {
                id: UserId::generate(),
                email,
                name,
                password_hash: Some(hash_password(password.to_owned()).await?),
                disabled: false,
                created_at: now,
                updated_at: now,
            };
            match ctx.store.create_user(&user).await {
                Ok(()) => {}
                Err(moat_store::StoreError::Conflict(_)) => {
                    bail!("a user with email {} already exists", user.email)
                }
                Err(e) => return Err(e.into()),
            }
            if json {
                return print_json(&user_json(&user));
            }
            out!("created {} ({})", user.id, user.email);
            Ok(())
        }
        UserCmd::List { json } => {
            let all = ctx.store.list_users().await?;
            if json {
                return print_json(&Value::Array(all.iter().map(user_json).collect()));
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|u| {
                    vec![
                        u.id.to_string(),
                        u.email.clone(),
                        u.name.clone().unwrap_or_default(),
                        if u.disabled { "disabled".into() } else { "active".into() },
                    ]
                })
                .collect();
            print_table(&["ID", "EMAIL", "NAME", "STATUS"], &rows);
            Ok(())
        }
        UserCmd::Disable { user } => {
            let u = find(ctx, &user).await?;
            ctx.store.set_user_disabled(&u.id, true, now()).await?;
            out!("disabled {} ({}): sessions ended, refresh tokens revoked", u.id, u.email);
            Ok(())
        }
        UserCmd::Enable { user } => {
            let u = find(ctx, &user).await?;
            ctx.store.set_user_disabled(&u.id, false, now()).await?;
            out!("enabled {} ({})", u.id, u.email);
            Ok(())
        }
        UserCmd::Delete { user } => {
            let u = find(ctx, &user).await?;
            ctx.store.delete_user(&u.id).await?;
            out!("deleted {} ({})", u.id, u.email);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email(" Alice@Example.COM ").unwrap(), "alice@example.com");
        assert!(normalize_email("no-at").is_err());
        assert!(normalize_email("a@b@c").is_err());
        assert!(normalize_email("a b@c").is_err());
        assert!(normalize_email("@c").is_err());
    }
}
