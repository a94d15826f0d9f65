//! The tracking table: reading it in one round trip, creating or extending it, and the
//! rows written by flightplan and by the runbook's older runner alike.

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Either, Row as _};

use crate::db::{quote_ident, quote_literal};
use crate::error::Error;

/// Columns flightplan adds to an adopted table; old rows keep NULLs (and `applied`).
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("checksum", "text"),
    ("execution_ms", "bigint"),
    ("applied_by", "text"),
    ("status", "text NOT NULL DEFAULT 'applied'"),
    ("error", "text"),
];

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
    pub filename: String,
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
    /// The name as configured (possibly schema-qualified).
    pub name: String,
    pub exists: bool,
    pub columns: Vec<String>,
    /// `"schema"."table"`, resolved once it exists, so a migration that changes
    /// `search_path` cannot redirect ledger writes.
    pub qualified: String,
    pub rows: Vec<Row>,
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
    pub async fn read(conn: &mut PgConnection, name: &str) -> Result<Ledger, Error> {
        Ledger::run_and_read(conn, name, None).await
    }

    /// Runs `prefix` (DDL, under the lock) and reads the table, in one message.
    pub async fn run_and_read(
        conn: &mut PgConnection,
        name: &str,
        prefix: Option<&str>,
    ) -> Result<Ledger, Error> {
        let mut sql = prefix.map(|p| format!("{p};\n")).unwrap_or_default();
        sql.push_str(&Ledger::read_sql(name));
        let mut ledger = Ledger {
            name: name.to_string(),
            exists: false,
            columns: Vec::new(),
            qualified: quote_ident(name),
            rows: Vec::new(),
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
            } else {
                let json: String = row.try_get(1).map_err(|e| decode_error(name, &e))?;
                ledger.rows.push(Row::from_json(&json, name)?);
            }
        }
        Ok(ledger)
    }

    /// DDL that makes the table exist with every column flightplan writes; `None` when
    /// nothing is missing (so a no-op run takes no lock on the table at all).
    pub fn ensure_sql(&self) -> Option<String> {
        let t = &self.qualified;
        if !self.exists {
            return Some(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   id serial PRIMARY KEY, \
                   filename text NOT NULL UNIQUE, \
                   executed_at timestamptz NOT NULL DEFAULT now(), \
                   checksum text, execution_ms bigint, applied_by text, \
                   status text NOT NULL DEFAULT 'applied', error text)"
            ));
        }
        if !self.columns.iter().any(|c| c == "filename") {
            return None; // reported by `check_shape`
        }
        let missing: Vec<String> = ADDED_COLUMNS
            .iter()
            .filter(|(c, _)| !self.columns.iter().any(|have| have == c))
            .map(|(c, ty)| format!("ADD COLUMN IF NOT EXISTS {c} {ty}"))
            .collect();
        (!missing.is_empty()).then(|| format!("ALTER TABLE {t} {}", missing.join(", ")))
    }

    /// An existing table flightplan cannot use (e.g. another tool's) is a usage error.
    pub fn check_shape(&self) -> Result<(), Error> {
        if self.exists && !self.columns.iter().any(|c| c == "filename") {
            return Err(Error::usage(format!(
                "table {} exists but has no `filename` column (columns: {})",
                self.name,
                self.columns.join(", ")
            ))
            .hint("point --table (or [migrate] table) at the runbook's tracking table, or at a new name"));
        }
        Ok(())
    }

    pub fn row(&self, filename: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.filename == filename)
    }
}

impl Row {
    fn from_json(json: &str, table: &str) -> Result<Row, Error> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::failure(format!("unreadable row in {table}: {e}")))?;
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let filename = s("filename")
            .ok_or_else(|| Error::failure(format!("a row of {table} has no filename: {json}")))?;
        let status = match s("status").as_deref() {
            Some("failed") => RowStatus::Failed,
            Some("running") => RowStatus::Running,
            _ => RowStatus::Applied,
        };
        Ok(Row {
            filename,
            checksum: s("checksum"),
            status,
            executed_at: s("executed_at"),
            execution_ms: v.get("execution_ms").and_then(|x| x.as_i64()),
            applied_by: s("applied_by"),
            error: s("error"),
        })
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
