//! SQLite backend (WAL, busy timeout, one writer connection).

use crate::{ConnectOptions, Result};

/// The SQLite implementation of [`crate::Store`].
pub struct SqliteStore {}

impl SqliteStore {
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let _ = (url, options);
        todo!("helper")
    }
}
