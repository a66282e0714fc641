//! SQLite storage of todos. Every query is scoped to the owner `(iss, sub)` taken from the
//! verified access token, so a user can neither see nor touch another user's todos (nor learn
//! that they exist: "not yours" and "does not exist" look the same).

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

/// Longest title accepted, in characters.
pub const MAX_TITLE_CHARS: usize = 500;

/// The owner of a todo: issuer and subject of the caller's token (a `sub` is unique per issuer).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// `iss` of the token.
    pub iss: &'a str,
    /// `sub` of the token.
    pub sub: &'a str,
}

/// One todo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Todo {
    /// Id, unique across all users.
    pub id: i64,
    /// What to do.
    pub title: String,
    /// Completed?
    pub done: bool,
    /// Creation time, seconds since the epoch.
    pub created_at: i64,
}

/// The todo database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS todos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_iss TEXT NOT NULL,
    owner_sub TEXT NOT NULL,
    title TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS todos_owner ON todos (owner_iss, owner_sub, id);";

fn row_to_todo(row: &sqlx::sqlite::SqliteRow) -> Result<Todo, sqlx::Error> {
    Ok(Todo {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        done: row.try_get::<i64, _>("done")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`, `sqlite::memory:`).
    pub async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5));
        // An in-memory database exists per connection: keep exactly one.
        let max = if url.contains(":memory:") { 1 } else { 4 };
        let pool = SqlitePoolOptions::new().max_connections(max).connect_with(options).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Self { pool })
    }

    /// The owner's todos, oldest first; completed ones only when `include_done`.
    pub async fn list(&self, owner: Owner<'_>, include_done: bool) -> Result<Vec<Todo>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, title, done, created_at FROM todos
             WHERE owner_iss = ? AND owner_sub = ? AND (? OR done = 0) ORDER BY id",
        )
        .bind(owner.iss)
        .bind(owner.sub)
        .bind(include_done)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_todo).collect()
    }

    /// Adds a todo for the owner.
    pub async fn add(&self, owner: Owner<'_>, title: &str) -> Result<Todo, sqlx::Error> {
        let row = sqlx::query(
            "INSERT INTO todos (owner_iss, owner_sub, title, done, created_at) VALUES (?, ?, ?, 0, ?)
             RETURNING id, title, done, created_at",
        )
        .bind(owner.iss)
        .bind(owner.sub)
        .bind(title)
        .bind(now())
        .fetch_one(&self.pool)
        .await?;
        row_to_todo(&row)
    }

    /// Marks the owner's todo `id` done; `None` when the owner has no such todo.
    pub async fn complete(&self, owner: Owner<'_>, id: i64) -> Result<Option<Todo>, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE todos SET done = 1 WHERE id = ? AND owner_iss = ? AND owner_sub = ?
             RETURNING id, title, done, created_at",
        )
        .bind(id)
        .bind(owner.iss)
        .bind(owner.sub)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(row_to_todo).transpose()
    }

    /// Deletes the owner's todo `id`; `false` when the owner has no such todo.
    pub async fn delete(&self, owner: Owner<'_>, id: i64) -> Result<bool, sqlx::Error> {
        let done = sqlx::query("DELETE FROM todos WHERE id = ? AND owner_iss = ? AND owner_sub = ?")
            .bind(id)
            .bind(owner.iss)
            .bind(owner.sub)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
