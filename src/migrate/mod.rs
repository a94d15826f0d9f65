//! Phase 4 of the runbook: SQL migrations in order, one transaction per file, under a lock, checksummed, recorded in the layout's tracking table.

mod apply;
pub mod drift;
pub mod layout;
pub mod ledger;
pub mod lint;
pub mod source;
pub mod split;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

pub use self::layout::{Key, Layout};
pub use self::ledger::{Ledger, RowStatus};
pub use self::source::{Migration, Source, line_col};
use crate::db::DatabaseUrl;
use crate::error::Error;
use crate::output::Outcome;

/// Everything a migrate command needs, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: DatabaseUrl,
    pub dir: PathBuf,
    /// How `dir` is laid out and which tool's tracking table `table` is.
    pub layout: Layout,
    pub table: String,
    pub lock_wait: Duration,
    pub lock_timeout: Duration,
    pub statement_timeout: Option<Duration>,
    pub lock_retries: u32,
    pub connect_timeout: Duration,
    pub applied_by: String,
    /// Progress lines on stderr; off when applying into a scratch database.
    pub progress: bool,
}

/// How the files on disk compare with the ledger.
#[derive(Debug, Default, Serialize)]
pub struct Status {
    pub applied: Vec<Value>,
    pub pending: Vec<Value>,
    pub modified: Vec<Value>,
    pub missing: Vec<Value>,
    pub failed: Vec<Value>,
    /// Old-runner rows with no checksum yet; `apply` records one.
    pub adoptable: Vec<String>,
    #[serde(skip)]
    pub pending_names: Vec<String>,
}

impl Status {
    pub fn of(source: &Source, ledger: &Ledger) -> Status {
        let mut st = Status::default();
        let last_applied = ledger.rows.iter().map(|r| &r.key).max();
        // Indexed once: a 10,000-row ledger against 10,000 files must not be quadratic.
        let rows: std::collections::HashMap<&layout::Key, &ledger::Row> =
            ledger.rows.iter().rev().map(|r| (&r.key, r)).collect();
        let files: std::collections::HashSet<&layout::Key> =
            source.migrations.iter().map(|m| &m.key).collect();
        for m in &source.migrations {
            match rows.get(&m.key).copied() {
                None => {
                    st.pending.push(json!({
                        "filename": m.filename,
                        "checksum": m.checksum,
                        "transaction": !m.no_transaction,
                        "out_of_order": last_applied.is_some_and(|l| m.key < *l),
                    }));
                    st.pending_names.push(m.filename.clone());
                }
                Some(r) if r.status != RowStatus::Applied => st.failed.push(json!({
                    "filename": m.filename,
                    "status": if r.status == RowStatus::Failed { "failed" } else { "interrupted" },
                    "error": r.error,
                    "executed_at": r.executed_at,
                })),
                Some(r) => match &r.checksum {
                    Some(c) if *c != m.checksum => st.modified.push(json!({
                        "filename": m.filename,
                        "recorded_checksum": c,
                        "file_checksum": m.checksum,
                        "line_endings_only": m.eol_checksums.contains(c),
                        "executed_at": r.executed_at,
                    })),
                    c => {
                        if c.is_none() {
                            st.adoptable.push(m.filename.clone());
                        }
                        st.applied.push(json!({
                            "filename": m.filename,
                            "checksum": m.checksum,
                            "executed_at": r.executed_at,
                            "execution_ms": r.execution_ms,
                            "applied_by": r.applied_by,
                            "adopted": c.is_none(),
                        }));
                    }
                },
            }
        }
        for r in &ledger.rows {
            if !files.contains(&r.key) {
                if r.status == RowStatus::Applied {
                    st.missing
                        .push(json!({ "filename": r.name, "executed_at": r.executed_at }));
                } else {
                    st.failed
                        .push(json!({ "filename": r.name, "status": "failed", "error": r.error }));
                }
            }
        }
        st
    }

    /// Applied files that changed or vanished: `apply` and `verify` refuse to go on.
    pub fn integrity_error(&self, source: &Source, ledger: &Ledger) -> Option<Error> {
        if self.modified.is_empty() && self.missing.is_empty() {
            return None;
        }
        let mut lines = Vec::new();
        for m in &self.modified {
            let eol = if m["line_endings_only"] == true {
                format!(
                    " (only its line endings differ: the {} layout hashes every byte, as the tool does; \
                     check it out with the line endings it was applied with, e.g. `*.sql text eol=lf` in .gitattributes)",
                    ledger.layout.name()
                )
            } else {
                String::new()
            };
            lines.push(format!(
                "{} was modified after it was applied{eol}",
                m["filename"].as_str().unwrap_or("")
            ));
        }
        for m in &self.missing {
            lines.push(format!(
                "{} was applied but is missing from {}",
                m["filename"].as_str().unwrap_or(""),
                source.dir.display()
            ));
        }
        let mut err = Error::failure(lines.join("; ")).hint(
            "applied migrations must not change: restore the original file (git log -p FILE) and put the change in a new migration",
        );
        if let Some(m) = self
            .modified
            .first()
            .and_then(|m| m["filename"].as_str())
            .and_then(|f| source.get(f))
        {
            err = err.file(m.path.display().to_string());
            // The way out when the database already has the edited version.
            err.hint = Some(format!(
                "{}; if the database already has the edited version, accept it with `{}`",
                err.hint.unwrap_or_default(),
                ledger.layout.accept_sql(&ledger.qualified, m)
            ));
        }
        Some(err)
    }

    /// A failed or interrupted `-- no-transaction` file blocks every later run.
    pub fn failed_error(&self, source: &Source) -> Option<Error> {
        let f = self.failed.first()?;
        let name = f["filename"].as_str().unwrap_or("");
        let path = source
            .get(name)
            .map_or_else(|| source.dir.join(name), |m| m.path.clone());
        let what = if f["status"] == "interrupted" {
            "was interrupted while running"
        } else {
            "failed"
        };
        Some(
            Error::failure(format!(
                "{name} {what} outside a transaction and may be partly applied; nothing runs until it is resolved"
            ))
            .file(path.display().to_string())
            .hint(format!(
                "inspect what it left (invalid indexes: SELECT indexrelid::regclass FROM pg_index WHERE NOT indisvalid), \
                 then either finish it by hand and run `flightplan migrate mark-applied {name}`, \
                 or undo it and run `flightplan migrate apply --retry-failed`"
            )),
        )
    }
}

/// A pending file, as `run`'s plan shows it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct PendingFile {
    pub filename: String,
    /// Runs in its own transaction (`false`: `-- no-transaction`).
    pub transaction: bool,
    pub checksum: String,
}

/// What `apply` would do, read from the live ledger without changing it.
#[derive(Debug)]
pub struct Pending {
    pub files: Vec<PendingFile>,
    /// Files applied before: nothing to do for them.
    pub applied: usize,
    /// Why `apply` would refuse (a modified or failed file, an unsafe pending one).
    pub blocker: Option<Error>,
}

/// The pending files, in order, from the live ledger (read-only).
pub async fn pending(s: &Settings) -> Result<Pending, Error> {
    let source = load(s)?;
    let ledger = read_only(s).await?;
    let st = Status::of(&source, &ledger);
    let blocker = st
        .integrity_error(&source, &ledger)
        .or_else(|| st.failed_error(&source))
        .or_else(|| pending_lint(&source, &st));
    let files = st
        .pending_names
        .iter()
        .filter_map(|n| source.get(n))
        .map(|m| PendingFile {
            filename: m.filename.clone(),
            transaction: !m.no_transaction,
            checksum: m.checksum.clone(),
        })
        .collect();
    Ok(Pending {
        files,
        applied: st.applied.len(),
        blocker,
    })
}

/// One file `apply` ran.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct AppliedFile {
    pub filename: String,
    pub duration_ms: i64,
}

/// What `apply` did: the files it applied (also when a later one failed) and the error.
#[derive(Debug, Default)]
pub struct Applied {
    pub files: Vec<AppliedFile>,
    /// Files that were already applied.
    pub skipped: u64,
    pub error: Option<Error>,
    /// The command's own JSON fields, for the log.
    pub json: serde_json::Map<String, Value>,
}

/// `migrate apply` for `run`: the typed result.
pub async fn apply_pending(s: &Settings) -> Applied {
    match apply(s, false).await {
        Ok(out) => {
            #[derive(serde::Deserialize, Default)]
            struct Fields {
                #[serde(default)]
                applied: Vec<AppliedFile>,
                #[serde(default)]
                skipped: u64,
            }
            let f: Fields =
                serde_json::from_value(Value::Object(out.json.clone())).unwrap_or_default();
            let error = match (out.ok, out.error) {
                (_, Some(e)) => Some(e),
                (false, None) => Some(Error::failure("migrate apply failed")),
                (true, None) => None,
            };
            Applied {
                files: f.applied,
                skipped: f.skipped,
                error,
                json: out.json,
            }
        }
        Err(e) => Applied {
            error: Some(e),
            ..Applied::default()
        },
    }
}

/// `migrate status`: read-only; exit 0 whatever it finds.
pub async fn status(s: &Settings) -> Result<Outcome, Error> {
    let source = load(s)?;
    let ledger = read_only(s).await?;
    let st = Status::of(&source, &ledger);
    let text = render_status(&source, &ledger, &st);
    Ok(Outcome::new(true, status_json(s, &source, &st), text))
}

/// `migrate plan`: what `apply` would run; exit 1 when `apply` would refuse.
pub async fn plan(s: &Settings) -> Result<Outcome, Error> {
    let source = load(s)?;
    let ledger = read_only(s).await?;
    let st = Status::of(&source, &ledger);
    let mut text = String::new();
    let blocker = st
        .integrity_error(&source, &ledger)
        .or_else(|| st.failed_error(&source))
        .or_else(|| pending_lint(&source, &st));
    if st.pending_names.is_empty() {
        text.push_str(&format!(
            "Nothing to apply: {} migrations applied.\n",
            st.applied.len()
        ));
    } else {
        text.push_str(&format!(
            "{} migration(s) to apply, in this order:\n",
            st.pending_names.len()
        ));
        for (i, p) in st.pending.iter().enumerate() {
            text.push_str(&format!(
                "  {:>3}. {:<48} {}  {}:{}{}\n",
                i + 1,
                p["filename"].as_str().unwrap_or(""),
                if p["transaction"] == true {
                    "transaction   "
                } else {
                    "no-transaction"
                },
                s.layout.checksum_label(),
                &p["checksum"].as_str().unwrap_or("")[..12],
                if p["out_of_order"] == true {
                    format!("  (out of order: {})", s.layout.out_of_order_note())
                } else {
                    String::new()
                }
            ));
        }
    }
    if !st.adoptable.is_empty() {
        text.push_str(&format!(
            "{} row(s) of the older runner will be adopted (checksum recorded).\n",
            st.adoptable.len()
        ));
    }
    let mut out = Outcome::new(blocker.is_none(), status_json(s, &source, &st), text);
    out.error = blocker;
    Ok(out)
}

/// `migrate verify`: exit 1 when an applied file changed, vanished, or failed.
pub async fn verify(s: &Settings) -> Result<Outcome, Error> {
    let source = load(s)?;
    let ledger = read_only(s).await?;
    let st = Status::of(&source, &ledger);
    let error = st
        .integrity_error(&source, &ledger)
        .or_else(|| st.failed_error(&source));
    let text = if error.is_none() {
        format!(
            "All {} applied migrations match their files ({} pending).\n",
            st.applied.len(),
            st.pending.len()
        )
    } else {
        render_status(&source, &ledger, &st)
    };
    let mut out = Outcome::new(error.is_none(), status_json(s, &source, &st), text);
    out.error = error;
    Ok(out)
}

/// `migrate apply`.
pub async fn apply(s: &Settings, retry_failed: bool) -> Result<Outcome, Error> {
    apply_with(s, retry_failed, None).await
}

/// `migrate apply` with `observe`, a query run inside every transactional file's own
/// transaction just before its ledger row and COMMIT (so it sees everything the file holds,
/// e.g. its locks in `pg_locks`). It must return one row `'fp:observe', <JSON text>`; that
/// JSON is the file's `observed` in `applied`. Used by `rehearse` on a copy; production's
/// `apply` sends no such query.
pub async fn apply_observing(s: &Settings, observe: &str) -> Result<Outcome, Error> {
    apply_with(s, false, Some(observe)).await
}

async fn apply_with(
    s: &Settings,
    retry_failed: bool,
    observe: Option<&str>,
) -> Result<Outcome, Error> {
    let source = load(s)?;
    for name in &source.ignored {
        let why = match s.layout {
            Layout::Flat => "not a *.sql file",
            Layout::Drizzle => "not a migration of the journal",
            Layout::Sqlx if name.ends_with(".down.sql") => {
                "a down migration; apply runs up migrations"
            }
            Layout::Sqlx => "not named <version>_<description>.sql",
        };
        tracing::info!("ignoring {name} ({why})");
    }
    apply::run_observing(s, &source, retry_failed, observe).await
}

/// `migrate drift`.
pub async fn drift(s: &Settings) -> Result<Outcome, Error> {
    let (drift, compared) = drift::compare(s).await?;
    Ok(drift::outcome(&drift, compared))
}

/// `migrate adopt [--yes]`.
pub async fn adopt(s: &Settings, yes: bool) -> Result<Outcome, Error> {
    drift::adopt(s, yes).await
}

/// `migrate mark-applied FILE...`.
pub async fn mark_applied(s: &Settings, files: &[String]) -> Result<Outcome, Error> {
    let source = load(s)?;
    let mut names = Vec::new();
    for f in files {
        let mut name = std::path::Path::new(f)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(f)
            .to_string();
        // A drizzle tag names its file without the extension.
        if source.get(&name).is_none() && source.get(&format!("{name}.sql")).is_some() {
            name.push_str(".sql");
        }
        if source.get(&name).is_none() {
            return Err(Error::usage(format!(
                "{f} is not a migration file in {}",
                source.dir.display()
            ))
            .hint("mark-applied only records files that exist on disk; check the name with `flightplan migrate status`"));
        }
        names.push(name);
    }
    apply::mark(s, &source, &names).await
}

/// What `migrate lint` needs: no database required.
#[derive(Debug, Clone)]
pub struct LintSettings {
    pub dir: PathBuf,
    pub layout: Layout,
    /// The database whose ledger says what is pending; `None`: every file is linted.
    pub database: Option<Settings>,
    pub rules: lint::Rules,
    /// Inside GitHub Actions: each reported finding is also a warning annotation.
    pub annotate: bool,
}

/// `migrate lint`: squawk's rules on the pending files (every file without a database);
/// exit 1 when a finding is reported.
pub async fn lint_pending(s: &LintSettings) -> Result<Outcome, Error> {
    let source = s.layout.discover(&s.dir)?;
    for w in &source.warnings {
        tracing::warn!("{w}");
    }
    let (names, scope) = match &s.database {
        Some(db) => {
            let ledger = read_only(db).await?;
            let st = Status::of(&source, &ledger);
            let scope = format!("pending: not in {}", db.table);
            (st.pending_names, scope)
        }
        None => {
            tracing::info!(
                "no DATABASE_URL: linting every file in {} (set it to lint only the pending ones)",
                s.dir.display()
            );
            let names = source
                .migrations
                .iter()
                .map(|m| m.filename.clone())
                .collect();
            (names, "all files: no DATABASE_URL".to_string())
        }
    };
    let paths: Vec<(String, &Migration)> = names
        .iter()
        .filter_map(|n| source.get(n))
        .map(|m| (m.path.display().to_string(), m))
        .collect();
    let files: Vec<lint::LintFile<'_>> = paths
        .iter()
        .map(|(path, m)| lint::LintFile {
            filename: &m.filename,
            path,
            sql: &m.sql,
            transaction: !m.no_transaction,
        })
        .collect();
    let ctx = lint::Context {
        rules: s.rules.clone(),
        rows: None,
        large_table_rows: 0,
    };
    let report = lint::lint(&files, &ctx);
    for u in &report.unparsed {
        tracing::warn!(
            file = u.path.as_str(),
            line = u.line,
            "{}:{}:{}: squawk could not parse this ({}); its rules may miss statements here",
            u.path,
            u.line,
            u.column,
            u.message
        );
    }
    if s.annotate {
        let mut err = std::io::stderr().lock();
        for f in report.reported() {
            let _ = std::io::Write::write_all(
                &mut err,
                format!(
                    "{}\n",
                    crate::output::workflow_command(
                        "warning",
                        Some(&f.path),
                        Some(f.line),
                        Some(f.column),
                        &format!("{}: {}", f.rule, f.message)
                    )
                )
                .as_bytes(),
            );
        }
    }
    let text = lint::render(&report, files.len(), &scope);
    let mut json = serde_json::Map::new();
    json.insert("scope".into(), json!(scope));
    json.insert("squawk".into(), json!(lint::SQUAWK_VERSION));
    json.insert("dir".into(), json!(s.dir.display().to_string()));
    json.insert(
        "files".into(),
        json!(files.iter().map(|f| f.filename).collect::<Vec<_>>()),
    );
    json.insert("rules".into(), json!(s.rules.enabled()));
    json.insert("findings".into(), json!(report.findings));
    json.insert("unparsed".into(), json!(report.unparsed));
    Ok(Outcome::new(report.reported().next().is_none(), json, text))
}

/// Reads the directory the layout's way and reports what deserves a warning.
pub(crate) fn load(s: &Settings) -> Result<Source, Error> {
    let source = s.layout.discover(&s.dir)?;
    for w in &source.warnings {
        tracing::warn!("{w}");
    }
    Ok(source)
}

async fn read_only(s: &Settings) -> Result<Ledger, Error> {
    let mut conn = s.url.connect(s.connect_timeout).await?;
    let ledger = Ledger::read(&mut conn, s.layout, &s.table).await?;
    ledger.check_shape()?;
    apply::close(conn).await;
    Ok(ledger)
}

/// The first pending file that cannot be applied safely as written.
fn pending_lint(source: &Source, st: &Status) -> Option<Error> {
    st.pending_names
        .iter()
        .find_map(|n| source.get(n).and_then(|m| m.lint.clone()))
}

fn status_json(s: &Settings, source: &Source, st: &Status) -> serde_json::Map<String, Value> {
    let mut map = match serde_json::to_value(st) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    map.insert("dir".into(), json!(s.dir.display().to_string()));
    map.insert("layout".into(), json!(s.layout.name()));
    map.insert("warnings".into(), json!(source.warnings));
    map.insert("table".into(), json!(s.table));
    map.insert("database".into(), json!(s.url.to_string()));
    map
}

fn render_status(source: &Source, ledger: &Ledger, st: &Status) -> String {
    let mut t = String::new();
    let width = source
        .migrations
        .iter()
        .map(|m| m.filename.len())
        .max()
        .unwrap_or(20)
        .max(20);
    for m in &source.migrations {
        let name = m.filename.as_str();
        let has = |list: &Vec<Value>| list.iter().any(|v| v["filename"] == name);
        let (label, extra) = if has(&st.modified) {
            (
                "modified",
                "changed on disk after it was applied".to_string(),
            )
        } else if has(&st.failed) {
            let row = ledger.row(&m.key);
            let extra = match (row.and_then(|r| r.error.clone()), row.map(|r| r.status)) {
                (Some(e), _) => e,
                (None, Some(RowStatus::Failed)) => "failed outside a transaction".into(),
                _ => "interrupted".into(),
            };
            ("failed", extra)
        } else if let Some(r) = ledger.row(&m.key) {
            let when = r.executed_at.clone().unwrap_or_default();
            let ms = r
                .execution_ms
                .map(|ms| format!("  {ms} ms"))
                .unwrap_or_default();
            let adopted = if r.checksum.is_none() {
                "  (older runner; checksum recorded on next apply)"
            } else {
                ""
            };
            ("applied", format!("{when}{ms}{adopted}"))
        } else {
            (
                "pending",
                if m.no_transaction {
                    "no-transaction".into()
                } else {
                    String::new()
                },
            )
        };
        t.push_str(&format!("  {label:<9} {name:<width$}  {extra}\n"));
    }
    for v in &st.missing {
        t.push_str(&format!(
            "  {:<9} {:<width$}  applied, but the file is gone\n",
            "missing",
            v["filename"].as_str().unwrap_or("")
        ));
    }
    t.push_str(&format!(
        "{} files: {} applied, {} pending, {} modified, {} missing, {} failed\n",
        source.migrations.len(),
        st.applied.len(),
        st.pending.len(),
        st.modified.len(),
        st.missing.len(),
        st.failed.len()
    ));
    t
}
