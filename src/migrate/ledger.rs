//! The tracking table: reading it in one round trip, creating or extending it, and its rows in every layout's terms.

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Either, Row as _};

use super::layout::{Key, Layout};
use crate::db::{quote_ident, quote_literal};
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    Applied,
    /// A `-- no-transaction` file that failed part-way.
    Failed,
    /// A `-- no-transaction` file whose runner died while it ran.
    Running,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub key: Key,
    /// How to name the row when no file has its key: the file name (flat), `when=…`
    /// (drizzle), `version … (description)` (sqlx).
    pub name: String,
    /// Hex digest; `None` in a row of the runbook's older runner.
    pub checksum: Option<String>,
    pub status: RowStatus,
    pub executed_at: Option<String>,
    pub execution_ms: Option<i64>,
    pub applied_by: Option<String>,
    pub error: Option<String>,
}

/// The table as read: whether it exists, which columns it has, and its rows.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub layout: Layout,
    /// The name as configured (possibly schema-qualified).
    pub name: String,
    pub exists: bool,
    pub columns: Vec<String>,
    /// `"schema"."table"`, resolved once it exists, so a migration that changes
    /// `search_path` cannot redirect ledger writes.
    pub qualified: String,
    pub rows: Vec<Row>,
    /// Key → first row with it, built on first lookup (the rows do not change after reading).
    index: std::sync::OnceLock<std::collections::HashMap<Key, usize>>,
}

impl Ledger {
    /// The read query: columns and rows in one message. A missing table makes the second
    /// statement fail with 42P01, which `read` turns into `exists: false`.
    fn read_sql(name: &str) -> String {
        let reg = quote_literal(&quote_ident(name));
        format!(
            "SELECT 'fp:cols', coalesce(string_agg(a.attname::text, ',' ORDER BY a.attnum), ''), \
               (SELECT n.nspname::text || '.' || c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE c.oid = to_regclass({reg})) \
             FROM pg_attribute a WHERE a.attrelid = to_regclass({reg}) AND a.attnum > 0 AND NOT a.attisdropped;\n\
             SELECT 'fp:row', to_jsonb(m)::text FROM {} m",
            quote_ident(name)
        )
    }

    /// Reads the table in one round trip, creating nothing.
    pub async fn read(
        conn: &mut PgConnection,
        layout: Layout,
        name: &str,
    ) -> Result<Ledger, Error> {
        Ledger::run_and_read(conn, layout, name, None).await
    }

    /// Runs `prefix` (DDL, under the lock) and reads the table, in one message.
    pub async fn run_and_read(
        conn: &mut PgConnection,
        layout: Layout,
        name: &str,
        prefix: Option<&str>,
    ) -> Result<Ledger, Error> {
        let mut sql = prefix.map(|p| format!("{p};\n")).unwrap_or_default();
        sql.push_str(&Ledger::read_sql(name));
        let mut ledger = Ledger {
            layout,
            name: name.to_string(),
            exists: false,
            columns: Vec::new(),
            qualified: quote_ident(name),
            rows: Vec::new(),
            index: Default::default(),
        };
        let mut stream = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_many(&mut *conn);
        loop {
            let item = match stream.try_next().await {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e)
                    if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P01") =>
                {
                    break;
                }
                Err(e) => return Err(sql_error(&format!("reading the tracking table {name}"), &e)),
            };
            let Either::Right(row) = item else { continue };
            let tag: String = row.try_get(0).map_err(|e| decode_error(name, &e))?;
            if tag == "fp:cols" {
                let cols: String = row.try_get(1).map_err(|e| decode_error(name, &e))?;
                let qualified: Option<String> =
                    row.try_get(2).map_err(|e| decode_error(name, &e))?;
                if let Some(q) = qualified {
                    ledger.exists = true;
                    ledger.columns = cols.split(',').map(str::to_string).collect();
                    ledger.qualified = quote_ident(&q);
                }
            } else if layout.shape_error(&ledger).is_none() {
                // Rows of a table of the wrong shape are not read: `check_shape` says why.
                let json: String = row.try_get(1).map_err(|e| decode_error(name, &e))?;
                ledger.rows.push(layout.row_from_json(&json, name)?);
            }
        }
        Ok(ledger)
    }

    /// DDL that makes the table exist as the layout writes it; `None` when nothing is
    /// missing (so a no-op run takes no lock on the table at all).
    pub fn ensure_sql(&self) -> Option<String> {
        self.layout.ensure_sql(self)
    }

    /// An existing table the layout cannot use (e.g. another tool's) is a usage error.
    pub fn check_shape(&self) -> Result<(), Error> {
        self.layout.shape_error(self).map_or(Ok(()), Err)
    }

    pub fn row(&self, key: &Key) -> Option<&Row> {
        let index = self.index.get_or_init(|| {
            let mut m = std::collections::HashMap::with_capacity(self.rows.len());
            for (i, r) in self.rows.iter().enumerate() {
                m.entry(r.key.clone()).or_insert(i);
            }
            m
        });
        index.get(key).map(|&i| &self.rows[i])
    }
}

fn decode_error(table: &str, e: &sqlx::Error) -> Error {
    Error::failure(format!("unexpected reply while reading {table}: {e}"))
}

/// A database error with its SQLSTATE, for anything that is not a migration's own SQL.
pub fn sql_error(doing: &str, e: &sqlx::Error) -> Error {
    let mut err = Error::failure(format!("{doing}: {e}"));
    if let Some(code) = e.as_database_error().and_then(|d| d.code()) {
        err = err.code(code.to_string());
    }
    err
}
