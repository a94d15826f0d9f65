//! Folder layouts and their tracking tables: flat `*.sql` with `_migrations`, drizzle-kit's journal with `drizzle.__drizzle_migrations`, sqlx's `<version>_<description>.sql` with `_sqlx_migrations`.
//
// Everything that differs between layouts lives here: how files are found and ordered, what
// identifies a file in the table (its key), the checksum format, how a row reads, and every
// SQL text that writes a row. apply.rs assembles these texts without knowing the layout.
// What drizzle and sqlx do, and where that was read, is in docs/layouts.md.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384};

use super::ledger::{Ledger, Row, RowStatus};
use super::source::{self, Migration, Source};
use crate::db::quote_literal;
use crate::error::Error;

/// How a migrations directory is laid out, and which tool's tracking table goes with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Every `*.sql` file in byte order of name; `_migrations` (the runbook's runner).
    #[default]
    Flat,
    /// drizzle-kit's `meta/_journal.json` and `<tag>.sql`; `drizzle.__drizzle_migrations`.
    Drizzle,
    /// sqlx's `<version>_<description>.sql` / `.up.sql`; `_sqlx_migrations`.
    Sqlx,
}

/// A file's identity in the tracking table. Numbers compare as numbers, names byte-wise.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// drizzle's `created_at` (the journal's `when`) or sqlx's `version`.
    Num(i64),
    /// The flat layout's `filename`.
    Name(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Num(n) => write!(f, "{n}"),
            Key::Name(s) => f.write_str(s),
        }
    }
}

impl Key {
    fn sql(&self) -> String {
        match self {
            Key::Num(n) => n.to_string(),
            Key::Name(s) => quote_literal(s),
        }
    }
}

/// The start of the file's transaction (batch) or of the file (no-transaction), set by apply.rs.
const T0: &str = "current_setting('flightplan.t0')::timestamptz";

fn elapsed_ms() -> String {
    format!("round(extract(epoch FROM clock_timestamp() - {T0}) * 1000)::bigint")
}

/// Columns flightplan adds to the runbook's older `_migrations`; old rows keep NULLs.
const FLAT_ADDED_COLUMNS: &[(&str, &str)] = &[
    ("checksum", "text"),
    ("execution_ms", "bigint"),
    ("applied_by", "text"),
    ("status", "text NOT NULL DEFAULT 'applied'"),
    ("error", "text"),
];

impl Layout {
    /// The name as written in `[migrate] layout`.
    pub fn parse(name: &str) -> Option<Layout> {
        match name {
            "flat" => Some(Layout::Flat),
            "drizzle" => Some(Layout::Drizzle),
            "sqlx" => Some(Layout::Sqlx),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::Drizzle => "drizzle",
            Layout::Sqlx => "sqlx",
        }
    }

    /// The table the original tool uses when nothing else is configured.
    pub fn default_table(self) -> &'static str {
        match self {
            Layout::Flat => "_migrations",
            Layout::Drizzle => "drizzle.__drizzle_migrations",
            Layout::Sqlx => "_sqlx_migrations",
        }
    }

    /// The digest's name, for people.
    pub fn checksum_label(self) -> &'static str {
        match self {
            Layout::Flat | Layout::Drizzle => "sha256",
            Layout::Sqlx => "sha384",
        }
    }

    /// What an out-of-order pending file means in this layout, for plan and apply.
    pub fn out_of_order_note(self) -> &'static str {
        match self {
            Layout::Flat => "sorts before an applied file",
            Layout::Drizzle => {
                "its journal `when` is older than the newest applied migration's; drizzle-kit would skip it silently"
            }
            Layout::Sqlx => "its version is lower than the newest applied one",
        }
    }

    /// Reads the directory the layout's way. Every problem is a usage error (exit 2), found
    /// before any database is contacted.
    pub fn discover(self, dir: &Path) -> Result<Source, Error> {
        match self {
            Layout::Flat => Source::discover(dir),
            Layout::Drizzle => discover_drizzle(dir),
            Layout::Sqlx => discover_sqlx(dir),
        }
    }

    fn key_column(self) -> &'static str {
        match self {
            Layout::Flat => "filename",
            Layout::Drizzle => "created_at",
            Layout::Sqlx => "version",
        }
    }

    fn checksum_column(self) -> &'static str {
        match self {
            Layout::Flat | Layout::Sqlx => "checksum",
            Layout::Drizzle => "hash",
        }
    }

    /// The condition of a row whose file ran to completion.
    fn applied_condition(self) -> &'static str {
        match self {
            Layout::Flat => "status = 'applied'",
            Layout::Drizzle => "true",
            Layout::Sqlx => "success",
        }
    }

    fn checksum_sql(self, m: &Migration) -> String {
        match self {
            Layout::Flat | Layout::Drizzle => quote_literal(&m.checksum),
            Layout::Sqlx => format!("decode({}, 'hex')", quote_literal(&m.checksum)),
        }
    }

    /// Columns the layout needs in an existing table (the flat one adds the rest itself).
    fn required_columns(self) -> &'static [&'static str] {
        match self {
            Layout::Flat => &["filename"],
            Layout::Drizzle => &["hash", "created_at"],
            Layout::Sqlx => &[
                "version",
                "description",
                "installed_on",
                "success",
                "checksum",
                "execution_time",
            ],
        }
    }

    /// An existing table this layout cannot use (e.g. another tool's) is a usage error.
    pub fn shape_error(self, ledger: &Ledger) -> Option<Error> {
        if !ledger.exists {
            return None;
        }
        let missing: Vec<&str> = self
            .required_columns()
            .iter()
            .copied()
            .filter(|c| !ledger.columns.iter().any(|have| have == c))
            .collect();
        if missing.is_empty() {
            return None;
        }
        let hint = match self {
            Layout::Flat => {
                "point --table (or [migrate] table) at the runbook's tracking table, or at a new name; \
                 if this is drizzle-kit's or sqlx's table, set [migrate] layout (or --layout) to drizzle or sqlx"
            }
            _ => {
                "check [migrate] layout and table (or --layout, --table): this layout reads its tool's own \
                 table, see docs/layouts.md"
            }
        };
        let what = if missing.len() == 1 {
            format!("`{}` column", missing[0])
        } else {
            format!("columns {}", missing.join(", "))
        };
        Some(
            Error::usage(format!(
                "table {} exists but has no {what}, which the {} layout needs (columns: {})",
                ledger.name,
                self.name(),
                ledger.columns.join(", ")
            ))
            .hint(hint),
        )
    }

    /// DDL that makes the table exist as the layout writes it; `None` when nothing is
    /// missing (so a no-op run takes no lock on the table at all).
    pub fn ensure_sql(self, ledger: &Ledger) -> Option<String> {
        let t = &ledger.qualified;
        // The tools' own DDL, so either can take over a table the other created.
        let schema = ledger
            .name
            .split_once('.')
            .map(|(schema, _)| {
                format!(
                    "CREATE SCHEMA IF NOT EXISTS {};\n",
                    quote_ident_part(schema)
                )
            })
            .unwrap_or_default();
        match self {
            Layout::Flat if !ledger.exists => Some(format!(
                "CREATE TABLE IF NOT EXISTS {t} (\
                   id serial PRIMARY KEY, \
                   filename text NOT NULL UNIQUE, \
                   executed_at timestamptz NOT NULL DEFAULT now(), \
                   checksum text, execution_ms bigint, applied_by text, \
                   status text NOT NULL DEFAULT 'applied', error text)"
            )),
            Layout::Flat => {
                if self.shape_error(ledger).is_some() {
                    return None;
                }
                let missing: Vec<String> = FLAT_ADDED_COLUMNS
                    .iter()
                    .filter(|(c, _)| !ledger.columns.iter().any(|have| have == c))
                    .map(|(c, ty)| format!("ADD COLUMN IF NOT EXISTS {c} {ty}"))
                    .collect();
                (!missing.is_empty()).then(|| format!("ALTER TABLE {t} {}", missing.join(", ")))
            }
            // drizzle-orm pg-core/dialect.js `migrate()`.
            Layout::Drizzle => (!ledger.exists).then(|| {
                format!(
                    "{schema}CREATE TABLE IF NOT EXISTS {t} (\n\tid SERIAL PRIMARY KEY,\n\thash text NOT NULL,\n\tcreated_at bigint\n)"
                )
            }),
            // sqlx-postgres migrate.rs `ensure_migrations_table` (and `create_schema_if_not_exists`).
            Layout::Sqlx => (!ledger.exists).then(|| {
                format!(
                    "{schema}CREATE TABLE IF NOT EXISTS {t} (\n    version BIGINT PRIMARY KEY,\n    description TEXT NOT NULL,\n    \
                     installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),\n    success BOOLEAN NOT NULL,\n    checksum BYTEA NOT NULL,\n    \
                     execution_time BIGINT NOT NULL\n)"
                )
            }),
        }
    }

    /// One row of the table (as `to_jsonb`) in the layout's terms.
    pub fn row_from_json(self, json: &str, table: &str) -> Result<Row, Error> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| Error::failure(format!("unreadable row in {table}: {e}")))?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(Value::as_i64);
        match self {
            Layout::Flat => {
                let filename = s("filename").ok_or_else(|| {
                    Error::failure(format!("a row of {table} has no filename: {json}"))
                })?;
                let status = match s("status").as_deref() {
                    Some("failed") => RowStatus::Failed,
                    Some("running") => RowStatus::Running,
                    _ => RowStatus::Applied,
                };
                Ok(Row {
                    key: Key::Name(filename.clone()),
                    name: filename,
                    checksum: s("checksum"),
                    status,
                    executed_at: s("executed_at"),
                    execution_ms: n("execution_ms"),
                    applied_by: s("applied_by"),
                    error: s("error"),
                })
            }
            Layout::Drizzle => {
                let created_at = n("created_at").ok_or_else(|| {
                    Error::failure(format!(
                        "row id {} of {table} has no created_at: {json}",
                        v.get("id").unwrap_or(&Value::Null)
                    ))
                    .hint(
                        "drizzle-kit itself would re-run every migration (NULL sorts first in its ORDER BY created_at DESC): \
                         set created_at to the journal `when` of the migration the row records, or delete the row",
                    )
                })?;
                Ok(Row {
                    key: Key::Num(created_at),
                    name: format!("when={created_at}"),
                    checksum: s("hash"),
                    status: RowStatus::Applied,
                    executed_at: None,
                    execution_ms: None,
                    applied_by: None,
                    error: None,
                })
            }
            Layout::Sqlx => {
                let version = n("version").ok_or_else(|| {
                    Error::failure(format!("a row of {table} has no version: {json}"))
                })?;
                let success = v.get("success").and_then(Value::as_bool).unwrap_or(false);
                let execution_time = n("execution_time").unwrap_or(-1);
                // sqlx writes `success = false` for none of its own rows on PostgreSQL; flightplan
                // writes it while a no-transaction file runs (execution_time -1) and keeps it,
                // with the time spent, when the file failed. Either way sqlx reports Dirty.
                let status = match (success, execution_time) {
                    (true, _) => RowStatus::Applied,
                    (false, -1) => RowStatus::Running,
                    (false, _) => RowStatus::Failed,
                };
                Ok(Row {
                    key: Key::Num(version),
                    name: format!(
                        "version {version} ({})",
                        s("description").unwrap_or_default()
                    ),
                    checksum: s("checksum").map(|c| c.trim_start_matches("\\x").to_string()),
                    status,
                    executed_at: s("installed_on"),
                    execution_ms: (execution_time >= 0).then_some(execution_time / 1_000_000),
                    applied_by: None,
                    error: None,
                })
            }
        }
    }

    /// The row of a file that ran in a batch, inside its transaction (where `flightplan.t0` is
    /// its start). It returns `'fp:applied', key, milliseconds`, as text.
    pub fn insert_committed_sql(self, t: &str, m: &Migration, applied_by: &str) -> String {
        let ms = elapsed_ms();
        match self {
            Layout::Flat => format!(
                "INSERT INTO {t} (filename, checksum, executed_at, execution_ms, applied_by, status) VALUES ({}, {}, clock_timestamp(), \
                 {ms}, {}, 'applied') RETURNING 'fp:applied', filename::text, execution_ms::text;\n",
                quote_literal(&m.filename),
                quote_literal(&m.checksum),
                quote_literal(applied_by)
            ),
            // drizzle-orm's own insert: ("hash", "created_at"), created_at = journal `when`.
            Layout::Drizzle => format!(
                "INSERT INTO {t} (\"hash\", \"created_at\") VALUES ({}, {}) RETURNING 'fp:applied', created_at::text, ({ms})::text;\n",
                quote_literal(&m.checksum),
                m.key.sql()
            ),
            // sqlx inserts execution_time = -1 in the transaction and sets it (nanoseconds) after
            // the commit; here it is measured up to this insert, so the row is final at commit.
            // installed_on is sqlx's now(): when the file's transaction started.
            Layout::Sqlx => format!(
                "INSERT INTO {t} (version, description, installed_on, success, checksum, execution_time) VALUES ({}, {}, {T0}, TRUE, {}, \
                 round(extract(epoch FROM clock_timestamp() - {T0}) * 1000000000)::bigint) \
                 RETURNING 'fp:applied', version::text, (execution_time / 1000000)::text;\n",
                m.key.sql(),
                quote_literal(&m.description),
                self.checksum_sql(m)
            ),
        }
    }

    /// Before a no-transaction file runs: a row that says it is running, so a crash shows.
    /// drizzle's table has no place for it: the row is written when the file succeeds.
    pub fn start_sql(self, t: &str, m: &Migration, applied_by: &str) -> String {
        match self {
            Layout::Flat => format!(
                "INSERT INTO {t} (filename, checksum, executed_at, applied_by, status) VALUES ({}, {}, clock_timestamp(), {}, 'running');\n",
                quote_literal(&m.filename),
                quote_literal(&m.checksum),
                quote_literal(applied_by)
            ),
            Layout::Drizzle => String::new(),
            Layout::Sqlx => format!(
                "INSERT INTO {t} (version, description, installed_on, success, checksum, execution_time) \
                 VALUES ({}, {}, clock_timestamp(), FALSE, {}, -1);\n",
                m.key.sql(),
                quote_literal(&m.description),
                self.checksum_sql(m)
            ),
        }
    }

    /// A no-transaction file failed: record it so that later runs stop until it is resolved.
    pub fn failed_sql(self, t: &str, m: &Migration, error: &str) -> String {
        match self {
            Layout::Flat => format!(
                "UPDATE {t} SET status = 'failed', error = {} WHERE filename = {};\n",
                quote_literal(error),
                quote_literal(&m.filename)
            ),
            Layout::Drizzle => String::new(),
            // success stays false (sqlx's Dirty); a time spent tells it from an interrupted run.
            Layout::Sqlx => format!(
                "UPDATE {t} SET execution_time = round(extract(epoch FROM clock_timestamp() - installed_on) * 1000000000)::bigint \
                 WHERE version = {};\n",
                m.key.sql()
            ),
        }
    }

    /// A no-transaction file succeeded; returns its milliseconds as text.
    pub fn done_sql(self, t: &str, m: &Migration) -> String {
        match self {
            Layout::Flat => format!(
                "UPDATE {t} SET status = 'applied', error = NULL, \
                   execution_ms = round(extract(epoch FROM clock_timestamp() - executed_at) * 1000)::bigint \
                 WHERE filename = {} RETURNING execution_ms::text;\n",
                quote_literal(&m.filename)
            ),
            Layout::Drizzle => format!(
                "INSERT INTO {t} (\"hash\", \"created_at\") VALUES ({}, {}) RETURNING ({})::text;\n",
                quote_literal(&m.checksum),
                m.key.sql(),
                elapsed_ms()
            ),
            Layout::Sqlx => format!(
                "UPDATE {t} SET success = TRUE, \
                   execution_time = round(extract(epoch FROM clock_timestamp() - installed_on) * 1000000000)::bigint \
                 WHERE version = {} RETURNING (execution_time / 1000000)::text;\n",
                m.key.sql()
            ),
        }
    }

    /// Before retrying a failed file: remove its failed row.
    pub fn clear_failed_sql(self, t: &str, m: &Migration) -> String {
        match self {
            Layout::Drizzle => String::new(),
            _ => format!(
                "DELETE FROM {t} WHERE {} = {} AND NOT ({});\n",
                self.key_column(),
                m.key.sql(),
                self.applied_condition()
            ),
        }
    }

    /// `mark-applied`: the row the original tool writes for a file it did not run.
    pub fn mark_sql(self, t: &str, m: &Migration, applied_by: &str) -> String {
        let clear = self.clear_failed_sql(t, m);
        match self {
            Layout::Flat => format!(
                "{clear}INSERT INTO {t} (filename, checksum, executed_at, applied_by, status) VALUES ({}, {}, now(), {}, 'applied');\n",
                quote_literal(&m.filename),
                quote_literal(&m.checksum),
                quote_literal(applied_by)
            ),
            Layout::Drizzle => format!(
                "INSERT INTO {t} (\"hash\", \"created_at\") VALUES ({}, {});\n",
                quote_literal(&m.checksum),
                m.key.sql()
            ),
            // sqlx-postgres migrate.rs `skip` (`sqlx migrate override skip`): execution_time -1.
            Layout::Sqlx => format!(
                "{clear}INSERT INTO {t} (version, description, success, checksum, execution_time) VALUES ({}, {}, TRUE, {}, -1);\n",
                m.key.sql(),
                quote_literal(&m.description),
                self.checksum_sql(m)
            ),
        }
    }

    /// Which of `keys` have a row of a completed file (read after a failed batch).
    pub fn committed_sql(self, t: &str, keys: &[&Key]) -> String {
        let list = keys.iter().map(|k| k.sql()).collect::<Vec<_>>().join(", ");
        let key = self.key_column();
        format!(
            "SELECT {key}::text FROM {t} WHERE {} AND {key} IN ({list})",
            self.applied_condition()
        )
    }

    /// Records the checksums of rows an older runner left without one.
    pub fn adopt_sql(self, t: &str, files: &[&Migration]) -> String {
        let (key, sum) = (self.key_column(), self.checksum_column());
        let cases: String = files
            .iter()
            .map(|m| format!(" WHEN {} THEN {}", m.key.sql(), self.checksum_sql(m)))
            .collect();
        let list = files
            .iter()
            .map(|m| m.key.sql())
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "UPDATE {t} SET {sum} = CASE {key}{cases} END WHERE {sum} IS NULL AND {key} IN ({list})"
        )
    }

    /// The statement that accepts an applied file's current text, for the "modified" hint.
    pub fn accept_sql(self, t: &str, m: &Migration) -> String {
        format!(
            "UPDATE {t} SET {} = {} WHERE {} = {}",
            self.checksum_column(),
            self.checksum_sql(m),
            self.key_column(),
            m.key.sql()
        )
    }
}

fn quote_ident_part(part: &str) -> String {
    format!("\"{}\"", part.replace('"', "\"\""))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The text with CRLF made LF, and with every lone LF made CRLF: what a checkout with the
/// other line-ending convention would hold.
fn eol_variants(text: &str) -> Vec<String> {
    let lf = text.replace("\r\n", "\n");
    let crlf = lf.replace('\n', "\r\n");
    [lf, crlf].into_iter().filter(|v| v != text).collect()
}

/// drizzle-kit's `meta/_journal.json`; only what the migrator reads.
#[derive(Debug, Deserialize)]
struct Journal {
    dialect: Option<String>,
    entries: Vec<JournalEntry>,
}

#[derive(Debug, Deserialize)]
struct JournalEntry {
    idx: Option<i64>,
    when: i64,
    tag: String,
}

/// drizzle: the journal's entries in its order (drizzle-orm `readMigrationFiles`), each
/// `<tag>.sql`, hashed as drizzle hashes it; files the journal does not name are orphans.
fn discover_drizzle(dir: &Path) -> Result<Source, Error> {
    let journal_path = dir.join("meta").join("_journal.json");
    let text = match std::fs::read_to_string(&journal_path) {
        Ok(t) => t,
        Err(e) => {
            let v1 = std::fs::read_dir(dir).ok().is_some_and(|mut it| {
                it.any(|e| e.is_ok_and(|e| e.path().join("migration.sql").is_file()))
            });
            let hint = if v1 {
                "this looks like drizzle-kit 1.0's folder-per-migration format, which flightplan does not read yet; \
                 use drizzle-kit 0.x output (meta/_journal.json and <tag>.sql files)"
            } else {
                "pass drizzle-kit's `out` folder as --dir (or [migrate] dir): the one holding meta/_journal.json"
            };
            return Err(Error::usage(format!(
                "cannot read drizzle-kit's journal {}: {e}",
                journal_path.display()
            ))
            .file(journal_path.display().to_string())
            .hint(hint));
        }
    };
    let journal: Journal = serde_json::from_str(&text).map_err(|e| {
        Error::usage(format!("{} is not a drizzle-kit journal: {e}", journal_path.display()))
            .file(journal_path.display().to_string())
            .line(e.line() as u32)
            .column(e.column() as u32)
            .hint("expected {\"entries\": [{\"idx\", \"when\", \"tag\", ...}, ...]} as `drizzle-kit generate` writes it")
    })?;
    let at_journal = |msg: String| Error::usage(msg).file(journal_path.display().to_string());
    if let Some(d) = journal.dialect.as_deref()
        && !matches!(d, "postgresql" | "pg")
    {
        return Err(at_journal(format!(
            "the journal's dialect is \"{d}\"; flightplan applies PostgreSQL migrations only"
        ))
        .hint("point --dir at the PostgreSQL migrations' folder"));
    }
    if journal.entries.is_empty() {
        return Err(at_journal("the journal lists no migrations".into())
            .hint("run `drizzle-kit generate` first; flightplan refuses to run an empty folder"));
    }

    let mut warnings = Vec::new();
    let mut by_when: HashMap<i64, &str> = HashMap::new();
    let mut by_tag: HashMap<&str, usize> = HashMap::new();
    let mut migrations = Vec::new();
    let mut previous: Option<&JournalEntry> = None;
    for (i, e) in journal.entries.iter().enumerate() {
        let idx = e.idx.unwrap_or(i as i64);
        if e.tag.is_empty() || e.tag.contains(['/', '\\']) || e.tag.starts_with('.') {
            return Err(at_journal(format!(
                "journal entry {idx} has the tag {:?}, which is not a file name in {}",
                e.tag,
                dir.display()
            ))
            .hint("tags are file names without .sql, e.g. 0003_brave_hulk"));
        }
        if by_tag.insert(&e.tag, i).is_some() {
            return Err(at_journal(format!("the journal lists {} twice", e.tag))
                .hint("remove the duplicate entry from meta/_journal.json"));
        }
        // The key of the row: two entries with one `when` could not be told apart.
        if let Some(other) = by_when.insert(e.when, &e.tag) {
            return Err(at_journal(format!(
                "journal entries {other} and {} have the same `when` ({}); the tracking table identifies a migration by it",
                e.tag, e.when
            ))
            .hint("give the later entry a larger `when` (milliseconds since 1970) before it is applied anywhere"));
        }
        if let Some(p) = previous
            && e.when <= p.when
        {
            warnings.push(format!(
                "journal entry {} has `when` {} but the entry before it ({}) has {}: once {} is applied, drizzle-kit skips {} \
                 silently; flightplan applies it (out of order) and records it",
                e.tag, e.when, p.tag, p.when, p.tag, e.tag
            ));
        }
        previous = Some(e);

        let filename = format!("{}.sql", e.tag);
        let path = dir.join(&filename);
        if !path.is_file() {
            return Err(Error::usage(format!(
                "journal entry {idx} ({}) has no file {}",
                e.tag,
                path.display()
            ))
            .file(journal_path.display().to_string())
            .hint("restore the file (git log -- PATH), or, if it was never applied anywhere, remove the entry from meta/_journal.json"));
        }
        let text = source::read_text(&path, &filename)?;
        let mut m = Migration::from_text(filename, path, &text);
        // drizzle-orm: sha256(readFileSync(path).toString()), the bytes as they are.
        m.checksum = hex(&Sha256::digest(text.as_bytes()));
        m.eol_checksums = eol_variants(&text)
            .iter()
            .map(|v| hex(&Sha256::digest(v.as_bytes())))
            .collect();
        m.key = Key::Num(e.when);
        m.description = e.tag.clone();
        migrations.push(m);
    }

    let mut ignored = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::usage(format!("cannot list {}: {e}", dir.display())))?;
    let mut orphans = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_sql = name.ends_with(".sql") && entry.path().is_file();
        if is_sql && !by_tag.contains_key(&name[..name.len() - 4]) {
            orphans.push(name);
        } else if !is_sql && name != "meta" {
            ignored.push(name);
        }
    }
    orphans.sort();
    ignored.sort();
    for o in orphans {
        warnings.push(format!(
            "{o} is not in meta/_journal.json: drizzle-kit and flightplan ignore it \
             (generated on another branch and not merged into the journal? add it with `drizzle-kit generate`, or delete it)"
        ));
    }
    Ok(Source {
        dir: dir.to_path_buf(),
        migrations,
        ignored,
        warnings,
    })
}

/// sqlx: `<version>_<description>.sql` and `.up.sql` in version order, as sqlx-core's
/// `resolve_blocking` reads them; `.down.sql` files are not run.
fn discover_sqlx(dir: &Path) -> Result<Source, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::usage(format!(
            "cannot read migrations directory {}: {e}",
            dir.display()
        ))
        .hint("pass --dir, or set [migrate] dir in flightplan.toml (relative to that file)")
    })?;
    let mut ignored = Vec::new();
    let mut warnings = Vec::new();
    let mut found: BTreeMap<i64, Vec<Migration>> = BTreeMap::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| Error::usage(format!("cannot list {}: {e}", dir.display())))?;
        let name = entry.file_name().into_string().map_err(|raw| {
            Error::usage(format!(
                "file name {raw:?} in {} is not valid UTF-8",
                dir.display()
            ))
            .hint("rename the file: sqlx reads the version and description from the name")
        })?;
        // Like sqlx: a file (symlinks followed), `<version>_<rest>` with rest ending in .sql.
        let parts: Option<(&str, &str)> = name.split_once('_');
        let Some((version, rest)) = parts.filter(|(_, rest)| rest.ends_with(".sql")) else {
            ignored.push(name);
            continue;
        };
        if !entry.path().is_file() {
            ignored.push(name);
            continue;
        }
        if rest.ends_with(".down.sql") {
            ignored.push(name);
            continue;
        }
        let version: i64 = version.parse().map_err(|_| {
            Error::usage(format!(
                "{name}: `{version}` is not an integer version (sqlx refuses the file too)"
            ))
            .file(dir.join(&name).display().to_string())
            .hint("sqlx names files <VERSION>_<DESCRIPTION>.sql, e.g. 20240101120000_create_users.sql; move other .sql files elsewhere")
        })?;
        let suffix = if rest.ends_with(".up.sql") {
            ".up.sql"
        } else {
            ".sql"
        };
        let description = rest.trim_end_matches(suffix).replace('_', " ");
        let path = dir.join(&name);
        let text = source::read_text(&path, &name)?;
        let mut m = Migration::from_text(name.clone(), path, &text);
        // sqlx-core migration.rs `checksum`: Sha384 of the file as read, BOM included.
        m.checksum = hex(&Sha384::digest(text.as_bytes()));
        m.eol_checksums = eol_variants(&text)
            .iter()
            .map(|v| hex(&Sha384::digest(v.as_bytes())))
            .collect();
        m.key = Key::Num(version);
        m.description = description;
        if m.no_transaction && !text.starts_with("-- no-transaction") {
            warnings.push(format!(
                "{name}: `-- no-transaction` is not the file's first bytes; flightplan honours it, \
                 sqlx runs the file in a transaction (move the directive to the very start)"
            ));
        }
        found.entry(version).or_default().push(m);
    }
    let mut migrations = Vec::new();
    for (version, mut ms) in found {
        if ms.len() > 1 {
            ms.sort_by(|a, b| a.filename.cmp(&b.filename));
            return Err(Error::usage(format!(
                "{} and {} have the same version {version}",
                ms[0].filename, ms[1].filename
            ))
            .file(ms[1].path.display().to_string())
            .hint("give one a new version (sqlx migrate add uses a timestamp); _sqlx_migrations keys rows by version"));
        }
        migrations.extend(ms);
    }
    if migrations.is_empty() {
        return Err(Error::usage(format!(
            "no <version>_<description>.sql migration files in {}",
            dir.display()
        ))
        .hint("check --dir (or [migrate] dir) and --layout; flightplan refuses to run against an empty directory"));
    }
    ignored.sort();
    Ok(Source {
        dir: dir.to_path_buf(),
        migrations,
        ignored,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn sqlx_names_versions_descriptions_and_checksums_as_sqlx_does() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "0002_add_users_email.up.sql",
            "ALTER TABLE users ADD email text;\n",
        );
        write(
            d.path(),
            "0002_add_users_email.down.sql",
            "ALTER TABLE users DROP email;\n",
        );
        write(
            d.path(),
            "1_create_users.sql",
            "CREATE TABLE users (id int);\n",
        );
        write(d.path(), "README.md", "x");
        write(d.path(), "notes.sql", "select 1;");
        let s = Layout::Sqlx.discover(d.path()).unwrap();
        let got: Vec<_> = s
            .migrations
            .iter()
            .map(|m| (m.key.clone(), m.description.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Key::Num(1), "create users"),
                (Key::Num(2), "add users email")
            ]
        );
        assert_eq!(
            s.migrations[0].checksum,
            hex(&Sha384::digest(b"CREATE TABLE users (id int);\n"))
        );
        assert_eq!(s.migrations[0].checksum.len(), 96);
        assert_eq!(
            s.ignored,
            vec!["0002_add_users_email.down.sql", "README.md", "notes.sql"]
        );

        write(d.path(), "01_again.sql", "select 1;");
        let e = Layout::Sqlx.discover(d.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("same version 1"), "{}", e.message);
        std::fs::remove_file(d.path().join("01_again.sql")).unwrap();
        write(d.path(), "init_schema.sql", "select 1;");
        let e = Layout::Sqlx.discover(d.path()).unwrap_err();
        assert!(
            e.message.contains("not an integer version"),
            "{}",
            e.message
        );
    }

    #[test]
    fn sqlx_warns_when_its_own_directive_detection_would_differ() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "1_a.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\n",
        );
        write(
            d.path(),
            "2_b.sql",
            "-- index\n-- no-transaction\nCREATE INDEX CONCURRENTLY j ON t (a);\n",
        );
        let s = Layout::Sqlx.discover(d.path()).unwrap();
        assert!(s.migrations.iter().all(|m| m.no_transaction));
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].starts_with("2_b.sql"), "{:?}", s.warnings);
    }

    #[test]
    fn drizzle_follows_the_journal_and_warns_about_orphans_and_time_going_backwards() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "meta/_journal.json",
            r#"{"version":"7","dialect":"postgresql","entries":[
              {"idx":0,"version":"7","when":1700000000000,"tag":"0000_first","breakpoints":true},
              {"idx":1,"version":"7","when":1690000000000,"tag":"0001_second","breakpoints":true}]}"#,
        );
        write(d.path(), "0000_first.sql", "CREATE TABLE a (x int);\r\n");
        write(d.path(), "0001_second.sql", "CREATE TABLE b (x int);\n");
        write(d.path(), "0002_orphan.sql", "CREATE TABLE c (x int);\n");
        write(d.path(), "meta/0000_snapshot.json", "{}");
        let s = Layout::Drizzle.discover(d.path()).unwrap();
        let names: Vec<_> = s.migrations.iter().map(|m| m.filename.as_str()).collect();
        assert_eq!(names, vec!["0000_first.sql", "0001_second.sql"]);
        assert_eq!(s.migrations[0].key, Key::Num(1700000000000));
        // The hash sees the CR: drizzle hashes the bytes as they are.
        assert_eq!(
            s.migrations[0].checksum,
            hex(&Sha256::digest(b"CREATE TABLE a (x int);\r\n"))
        );
        assert_eq!(
            s.migrations[0].eol_checksums,
            vec![hex(&Sha256::digest(b"CREATE TABLE a (x int);\n"))]
        );
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("0001_second has `when` 1690000000000"));
        assert!(s.warnings[1].starts_with("0002_orphan.sql is not in meta/_journal.json"));

        std::fs::remove_file(d.path().join("0001_second.sql")).unwrap();
        let e = Layout::Drizzle.discover(d.path()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.message
                .contains("journal entry 1 (0001_second) has no file"),
            "{}",
            e.message
        );
    }

    #[test]
    fn drizzle_refuses_a_shared_when_and_a_missing_journal() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "0000_a.sql", "select 1;");
        let e = Layout::Drizzle.discover(d.path()).unwrap_err();
        assert!(
            e.message.contains("cannot read drizzle-kit's journal"),
            "{}",
            e.message
        );
        write(
            d.path(),
            "meta/_journal.json",
            r#"{"entries":[{"when":5,"tag":"0000_a"},{"when":5,"tag":"0001_b"}]}"#,
        );
        write(d.path(), "0001_b.sql", "select 1;");
        let e = Layout::Drizzle.discover(d.path()).unwrap_err();
        assert!(
            e.message.contains("have the same `when` (5)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn keys_order_numbers_as_numbers() {
        assert!(Key::Num(9) < Key::Num(10));
        assert!(Key::Name("10.sql".into()) < Key::Name("9.sql".into()));
        assert_eq!(Key::Name("a'b".into()).sql(), "'a''b'");
    }
}
