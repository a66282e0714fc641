//! How a SQLite row yields one column; the column lists and decoders shared with the other
//! backends are in [`crate::rows`].

use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Row, Sqlite, Type};

use crate::codec::int_to_bool;
use crate::rows::Columns;
use crate::{Result, StoreError};

/// Reads one column, turning a type mismatch into a `Backend` error that names the column.
fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(column).map_err(|e| StoreError::Backend(format!("corrupt row: column {column}: {e}")))
}

impl Columns for SqliteRow {
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

    /// Flags are INTEGER 0/1 (any non-zero value reads as true, as before).
    fn flag(&self, column: &str) -> Result<bool> {
        get::<i64>(self, column).map(int_to_bool)
    }
}
