//! How a PostgreSQL row yields one column; the column lists and decoders shared with the other
//! backends are in [`crate::rows`].

use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

use crate::rows::Columns;
use crate::{Result, StoreError};

/// Reads one column, turning a type mismatch into a `Backend` error that names the column.
fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(column).map_err(|e| StoreError::Backend(format!("corrupt row: column {column}: {e}")))
}

impl Columns for PgRow {
    fn text(&self, column: &str) -> Result<String> {
        get(self, column)
    }

    fn opt_text(&self, column: &str) -> Result<Option<String>> {
        get(self, column)
    }

    fn int(&self, column: &str) -> Result<i64> {
        get(self, column)
    }

    fn opt_int(&self, column: &str) -> Result<Option<i64>> {
        get(self, column)
    }

    fn bytes(&self, column: &str) -> Result<Vec<u8>> {
        get(self, column)
    }

    /// Flags are SMALLINT 0/1 (the migration CHECKs the range).
    fn flag(&self, column: &str) -> Result<bool> {
        get::<i16>(self, column).map(|v| v != 0)
    }
}
