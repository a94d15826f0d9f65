//! Phase 4 of the runbook: SQL migrations, applied in byte order of file name, one
//! transaction per file, under a lock, checksummed, recorded in the `_migrations` table.

mod apply;
pub mod drift;
pub mod ledger;
pub mod source;
pub mod split;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

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
        let last_applied = ledger.rows.iter().map(|r| r.filename.as_str()).max();
        for m in &source.migrations {
            match ledger.row(&m.filename) {
                None => {
                    st.pending.push(json!({
                        "filename": m.filename,
                        "checksum": m.checksum,
                        "transaction": !m.no_transaction,
                        "out_of_order": last_applied.is_some_and(|l| m.filename.as_str() < l),
                    }));
                    st.pending_names.push(m.filename.clone());
                }
                Some(r) if r.status != RowStatus::Applied => st.failed.push(json!({
                    "filename": r.filename,
                    "status": if r.status == RowStatus::Failed { "failed" } else { "interrupted" },
                    "error": r.error,
                    "executed_at": r.executed_at,
                })),
                Some(r) => match &r.checksum {
                    Some(c) if *c != m.checksum => st.modified.push(json!({
                        "filename": r.filename,
                        "recorded_checksum": c,
                        "file_checksum": m.checksum,
                        "executed_at": r.executed_at,
                    })),
                    c => {
                        if c.is_none() {
                            st.adoptable.push(r.filename.clone());
                        }
                        st.applied.push(json!({
                            "filename": r.filename,
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
            if source.get(&r.filename).is_none() {
                if r.status == RowStatus::Applied {
                    st.missing
                        .push(json!({ "filename": r.filename, "executed_at": r.executed_at }));
                } else {
                    st.failed.push(
                        json!({ "filename": r.filename, "status": "failed", "error": r.error }),
                    );
                }
            }
        }
        st
    }

    /// Applied files that changed or vanished: `apply` and `verify` refuse to go on.
    pub fn integrity_error(&self, source: &Source) -> Option<Error> {
        if self.modified.is_empty() && self.missing.is_empty() {
            return None;
        }
        let mut lines = Vec::new();
        for m in &self.modified {
            lines.push(format!(
                "{} was modified after it was applied",
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
        if let Some(f) = self.modified.first().and_then(|m| m["filename"].as_str()) {
            err = err.file(source.dir.join(f).display().to_string());
        }
        Some(err)
    }

    /// A failed or interrupted `-- no-transaction` file blocks every later run.
    pub fn failed_error(&self, source: &Source) -> Option<Error> {
        let f = self.failed.first()?;
        let name = f["filename"].as_str().unwrap_or("");
        let what = if f["status"] == "interrupted" {
            "was interrupted while running"
        } else {
            "failed"
        };
        Some(
            Error::failure(format!(
                "{name} {what} outside a transaction and may be partly applied; nothing runs until it is resolved"
            ))
            .file(source.dir.join(name).display().to_string())
            .hint(format!(
                "inspect what it left (invalid indexes: SELECT indexrelid::regclass FROM pg_index WHERE NOT indisvalid), \
                 then either finish it by hand and run `flightplan migrate mark-applied {name}`, \
                 or undo it and run `flightplan migrate apply --retry-failed`"
            )),
        )
    }
}

/// `migrate status`: read-only; exit 0 whatever it finds.
pub async fn status(s: &Settings) -> Result<Outcome, Error> {
    let source = Source::discover(&s.dir)?;
    let ledger = read_only(s).await?;
    let st = Status::of(&source, &ledger);
    let text = render_status(&source, &ledger, &st);
    Ok(Outcome::new(true, status_json(s, &st), text))
}

/// `migrate plan`: what `apply` would run; exit 1 when `apply` would refuse.
pub async fn plan(s: &Settings) -> Result<Outcome, Error> {
    let source = Source::discover(&s.dir)?;
    let ledger = read_only(s).await?;
    let st = Status::of(&source, &ledger);
    let mut text = String::new();
    let blocker = st
        .integrity_error(&source)
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
                "  {:>3}. {:<48} {}  sha256:{}{}\n",
                i + 1,
                p["filename"].as_str().unwrap_or(""),
                if p["transaction"] == true {
                    "transaction   "
                } else {
                    "no-transaction"
                },
                &p["checksum"].as_str().unwrap_or("")[..12],
                if p["out_of_order"] == true {
                    "  (out of order: sorts before an applied file)"
                } else {
                    ""
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
    let mut out = Outcome::new(blocker.is_none(), status_json(s, &st), text);
    out.error = blocker;
    Ok(out)
}

/// `migrate verify`: exit 1 when an applied file changed, vanished, or failed.
pub async fn verify(s: &Settings) -> Result<Outcome, Error> {
    let source = Source::discover(&s.dir)?;
    let ledger = read_only(s).await?;
    let st = Status::of(&source, &ledger);
    let error = st
        .integrity_error(&source)
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
    let mut out = Outcome::new(error.is_none(), status_json(s, &st), text);
    out.error = error;
    Ok(out)
}

/// `migrate apply`.
pub async fn apply(s: &Settings, retry_failed: bool) -> Result<Outcome, Error> {
    let source = Source::discover(&s.dir)?;
    for name in &source.ignored {
        tracing::info!("ignoring {name} (not a *.sql file)");
    }
    apply::run(s, &source, retry_failed).await
}

/// `migrate drift`.
pub async fn drift(s: &Settings) -> Result<Outcome, Error> {
    drift::drift(s).await
}

/// `migrate adopt [--yes]`.
pub async fn adopt(s: &Settings, yes: bool) -> Result<Outcome, Error> {
    drift::adopt(s, yes).await
}

/// `migrate mark-applied FILE...`.
pub async fn mark_applied(s: &Settings, files: &[String]) -> Result<Outcome, Error> {
    let source = Source::discover(&s.dir)?;
    let mut names = Vec::new();
    for f in files {
        let name = std::path::Path::new(f)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(f)
            .to_string();
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

async fn read_only(s: &Settings) -> Result<Ledger, Error> {
    let mut conn = s.url.connect(s.connect_timeout).await?;
    let ledger = Ledger::read(&mut conn, &s.table).await?;
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

fn status_json(s: &Settings, st: &Status) -> serde_json::Map<String, Value> {
    let mut map = match serde_json::to_value(st) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    map.insert("dir".into(), json!(s.dir.display().to_string()));
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
            (
                "failed",
                ledger
                    .row(name)
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| "interrupted".into()),
            )
        } else if let Some(r) = ledger.row(name) {
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
