//! Applying migrations: the advisory lock, batched per-file transactions, non-transactional
//! files statement by statement, lock-timeout retries, and exact error attribution.
//!
//! Round trips are the cost of a remote database, so consecutive transactional files go to
//! the server as one simple-Query message: `BEGIN; <file>; INSERT ledger row; COMMIT;` per
//! file. PostgreSQL stops at the first error, so each file still commits or rolls back on its
//! own, and the ledger tells which ones committed.

use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde_json::{Value, json};
use sqlx::postgres::{PgConnection, PgDatabaseError, PgErrorPosition};
use sqlx::{AssertSqlSafe, Connection, Either, Row as _};

use super::layout::Key;
use super::ledger::{Ledger, sql_error};
use super::source::{Migration, Source, line_col};
use super::split;
use super::{Settings, Status, pending_lint};
use crate::error::Error;
use crate::output::Outcome;

/// An info line, unless the run is quiet (a scratch database nobody watches).
macro_rules! progress {
    ($s:expr, $($arg:tt)*) => {
        if $s.progress {
            tracing::info!($($arg)*);
        }
    };
}

/// Largest batch sent as one message; a bigger file still goes alone.
const BATCH_BYTES: usize = 4 << 20;

/// The lock key: per database (advisory locks are), and per tracking table name. It must
/// not depend on whether the table exists yet, or two first runs would take different locks.
fn lock_key(table: &str) -> i64 {
    let table = table.rsplit('.').next().unwrap_or(table);
    // FNV-1a, so the key is stable across versions and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in format!("flightplan:{table}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

pub(super) async fn run(
    s: &Settings,
    source: &Source,
    retry_failed: bool,
) -> Result<Outcome, Error> {
    run_observing(s, source, retry_failed, None).await
}

/// `observe`: a query run inside each transactional file's transaction just before its
/// commit (see [`super::apply_observing`]); `None` for `migrate apply` itself, which then
/// sends exactly what it always did.
pub(super) async fn run_observing(
    s: &Settings,
    source: &Source,
    retry_failed: bool,
    observe: Option<&str>,
) -> Result<Outcome, Error> {
    let started = Instant::now();
    let mut conn = s.url.connect(s.connect_timeout).await?;
    // Fast path: one read, no lock. Rows are only ever added, so "everything is applied"
    // seen without the lock stays true.
    let ledger = Ledger::read(&mut conn, s.layout, &s.table).await?;
    ledger.check_shape()?;
    let st = Status::of(source, &ledger);
    let early = st.integrity_error(source, &ledger).or_else(|| {
        if retry_failed {
            None
        } else {
            st.failed_error(source)
        }
    });
    if let Some(e) = early {
        close(conn).await;
        return Ok(failed(e, &st, Vec::new()));
    }
    if let Some(e) = pending_lint(source, &st) {
        close(conn).await;
        return Err(e);
    }
    if st.pending_names.is_empty()
        && st.adoptable.is_empty()
        && st.failed.is_empty()
        && ledger.ensure_sql().is_none()
    {
        close(conn).await;
        let text = format!(
            "Nothing to apply: all {} migrations are applied.\n",
            st.applied.len()
        );
        return Ok(Outcome::new(
            true,
            apply_json(&[], &[], st.applied.len()),
            text,
        ));
    }

    let key = lock_key(&s.table);
    acquire_lock(&mut conn, key, s.lock_wait).await?;
    let result = locked(s, source, retry_failed, observe, &mut conn, key, ledger).await;
    match result {
        Ok(out) => {
            close(conn).await;
            progress!(s, "done in {:.2}s", started.elapsed().as_secs_f64());
            Ok(out)
        }
        Err(e) => {
            release(&mut conn).await;
            close(conn).await;
            Err(e)
        }
    }
}

/// Everything done while holding the lock. On `Ok`, the lock has been released.
async fn locked(
    s: &Settings,
    source: &Source,
    retry_failed: bool,
    observe: Option<&str>,
    conn: &mut PgConnection,
    key: i64,
    before: Ledger,
) -> Result<Outcome, Error> {
    let ensure = before.ensure_sql();
    if ensure.is_some() {
        progress!(
            s,
            "{} tracking table {}",
            if before.exists {
                "extending"
            } else {
                "creating"
            },
            s.table
        );
    }
    // Another runner may have applied files while we waited: read again under the lock.
    let ledger = Ledger::run_and_read(conn, s.layout, &s.table, ensure.as_deref()).await?;
    ledger.check_shape()?;
    let st = Status::of(source, &ledger);
    if let Some(e) = st.integrity_error(source, &ledger) {
        release(conn).await;
        return Ok(failed(e, &st, Vec::new()));
    }
    if !retry_failed && let Some(e) = st.failed_error(source) {
        release(conn).await;
        return Ok(failed(e, &st, Vec::new()));
    }
    let t = &ledger.qualified;

    if !st.adoptable.is_empty() {
        let files: Vec<&Migration> = st.adoptable.iter().filter_map(|n| source.get(n)).collect();
        let sql = s.layout.adopt_sql(t, &files);
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(|e| sql_error("recording checksums of adopted rows", &e))?;
        progress!(
            s,
            "adopted {} row(s) of the older runner (checksums recorded)",
            st.adoptable.len()
        );
    }

    // Files to run: pending ones, plus failed ones when asked to retry them.
    let retry: Vec<String> = if retry_failed {
        st.failed
            .iter()
            .filter_map(|f| f["filename"].as_str().map(str::to_string))
            .collect()
    } else {
        Vec::new()
    };
    let todo: Vec<&Migration> = source
        .migrations
        .iter()
        .filter(|m| st.pending_names.contains(&m.filename) || retry.contains(&m.filename))
        .collect();
    for m in &todo {
        if let Some(p) = st
            .pending
            .iter()
            .find(|p| p["filename"] == m.filename.as_str())
            && p["out_of_order"] == true
        {
            tracing::warn!(
                "{}: {}; applying it out of order",
                m.filename,
                s.layout.out_of_order_note()
            );
        }
    }
    if !todo.is_empty() {
        progress!(s, "applying {} migration(s)", todo.len());
    }

    let mut applied: Vec<Value> = Vec::new();
    let ctx = Ctx {
        s,
        t,
        retry: &retry,
        observe,
    };
    let mut i = 0;
    while i < todo.len() {
        if todo[i].no_transaction {
            match run_no_tx(&ctx, conn, todo[i]).await {
                Ok(v) => applied.push(v),
                Err(e) => return Ok(failed_after(e, conn, applied, st.applied.len()).await),
            }
            i += 1;
            continue;
        }
        if todo[i].sql.len() > BATCH_BYTES {
            let last = i + 1 == todo.len();
            if let Err(e) = run_large(&ctx, conn, todo[i], last.then_some(key), &mut applied).await
            {
                return Ok(failed_after(e, conn, applied, st.applied.len()).await);
            }
            i += 1;
            if last {
                return Ok(success(&applied, &st));
            }
            continue;
        }
        let mut end = i;
        let mut bytes = 0;
        while end < todo.len()
            && !todo[end].no_transaction
            && (end == i || bytes + todo[end].sql.len() <= BATCH_BYTES)
        {
            bytes += todo[end].sql.len();
            end += 1;
        }
        let last = end == todo.len();
        if let Err(e) =
            run_batch(&ctx, conn, &todo[i..end], last.then_some(key), &mut applied).await
        {
            return Ok(failed_after(e, conn, applied, st.applied.len()).await);
        }
        i = end;
        if last {
            return Ok(success(&applied, &st));
        }
    }
    release(conn).await;
    Ok(success(&applied, &st))
}

fn success(applied: &[Value], st: &Status) -> Outcome {
    let mut text = String::new();
    for a in applied {
        text.push_str(&format!(
            "  applied  {}  {} ms\n",
            a["filename"].as_str().unwrap_or(""),
            a["duration_ms"]
        ));
    }
    let skipped = st.applied.len();
    text.push_str(&if applied.is_empty() {
        format!("Nothing to apply: all {skipped} migrations are applied.\n")
    } else {
        format!(
            "Applied {} migration(s); {skipped} already applied.\n",
            applied.len()
        )
    });
    Outcome::new(true, apply_json(applied, &st.adoptable, skipped), text)
}

fn apply_json(
    applied: &[Value],
    adopted: &[String],
    skipped: usize,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("applied".into(), json!(applied));
    m.insert("adopted".into(), json!(adopted));
    m.insert("skipped".into(), json!(skipped));
    m
}

fn failed(e: Error, st: &Status, applied: Vec<Value>) -> Outcome {
    let mut out = Outcome::new(
        false,
        apply_json(&applied, &[], st.applied.len()),
        String::new(),
    );
    out.json.insert("modified".into(), json!(st.modified));
    out.json.insert("missing".into(), json!(st.missing));
    out.json.insert("failed".into(), json!(st.failed));
    out.error = Some(e);
    out
}

/// A migration failed: report it with what was applied before it; the lock is released.
async fn failed_after(
    e: Error,
    conn: &mut PgConnection,
    applied: Vec<Value>,
    skipped: usize,
) -> Outcome {
    release(conn).await;
    let mut text = String::new();
    for a in &applied {
        text.push_str(&format!(
            "  applied  {}  {} ms\n",
            a["filename"].as_str().unwrap_or(""),
            a["duration_ms"]
        ));
    }
    let mut out = Outcome::new(false, apply_json(&applied, &[], skipped), text);
    out.error = Some(e);
    out
}

struct Ctx<'a> {
    s: &'a Settings,
    t: &'a str,
    retry: &'a [String],
    /// Run before each transactional file's ledger row and COMMIT; its `'fp:observe', text`
    /// row is attached to that file's entry as `observed`.
    observe: Option<&'a str>,
}

/// The entry of an applied file in `applied`; `observed` only when something was observed.
fn applied_entry(name: &str, ms: i64, observed: Option<&str>) -> Value {
    let mut v = json!({ "filename": name, "duration_ms": ms, "transaction": true });
    if let Some(o) = observed {
        v["observed"] = serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.into()));
    }
    v
}

impl Ctx<'_> {
    fn settings_sql(&self, scope: &str) -> String {
        let mut sql = format!(
            "SET {scope}lock_timeout = '{}ms';\n",
            self.s.lock_timeout.as_millis()
        );
        if let Some(st) = self.s.statement_timeout {
            sql.push_str(&format!(
                "SET {scope}statement_timeout = '{}ms';\n",
                st.as_millis()
            ));
        }
        sql
    }

    fn clear_retry_sql(&self, m: &Migration) -> String {
        if self.retry.contains(&m.filename) {
            self.s.layout.clear_failed_sql(self.t, m)
        } else {
            String::new()
        }
    }
}

/// Where each file's text sits in a batch, in characters (PostgreSQL's error positions).
struct Segment {
    index: usize,
    chars: std::ops::Range<usize>,
}

/// Sends consecutive transactional files as one message, retrying from a file that hit
/// `lock_timeout`. `unlock` appends the lock release to the final message.
async fn run_batch(
    ctx: &Ctx<'_>,
    conn: &mut PgConnection,
    files: &[&Migration],
    unlock: Option<i64>,
    done: &mut Vec<Value>,
) -> Result<(), Error> {
    let mut from = 0;
    // Files from `end` on are not sent: one of them has a syntax error, `deferred`.
    let mut end = files.len();
    let mut deferred: Option<Error> = None;
    let mut attempts = 0u32;
    while from < end {
        let unlock_now = if end == files.len() { unlock } else { None };
        let (sql, segments) = build_batch(ctx, &files[from..end], unlock_now);
        let mut committed_rows = Vec::new();
        // What the observer saw in a file's transaction, and which file it belongs to:
        // its row comes just before that file's `fp:applied` row.
        let mut observed: Vec<(String, String)> = Vec::new();
        let mut seen: Option<String> = None;
        let mut stream = sqlx::raw_sql(AssertSqlSafe(sql)).fetch_many(&mut *conn);
        let mut failure = None;
        loop {
            match stream.try_next().await {
                Ok(Some(Either::Right(row))) => {
                    if row.try_get::<String, _>(0).is_ok_and(|t| t == "fp:observe") {
                        seen = row.try_get::<String, _>(1).ok();
                    } else if row.try_get::<String, _>(0).is_ok_and(|t| t == "fp:applied") {
                        let key: String = row.try_get(1).unwrap_or_default();
                        let ms: String = row.try_get(2).unwrap_or_default();
                        // The row names the file by its key; report it by its file name.
                        let name = files[from..end]
                            .iter()
                            .find(|m| m.key.to_string() == key)
                            .map_or(key, |m| m.filename.clone());
                        if let Some(o) = seen.take() {
                            observed.push((name.clone(), o));
                        }
                        committed_rows.push((name, ms.parse::<i64>().unwrap_or(0)));
                    }
                }
                Ok(Some(Either::Left(_))) => {}
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(stream);
        let observed_of = |name: &str| {
            observed
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, o)| o.as_str())
        };
        let Some(err) = failure else {
            for (name, ms) in &committed_rows {
                progress!(ctx.s, "applied {name} ({ms} ms)");
                done.push(applied_entry(name, *ms, observed_of(name)));
            }
            return deferred.map_or(Ok(()), Err);
        };
        // The connection itself failed (reset, closed, timed out): which of the COMMITs
        // the server carried out is unknown. Ask the ledger on a new connection instead of
        // guessing (issue 8: found by tests/faults_migrate.rs, which cut the connection
        // mid-batch and mid-commit; before, the run ended with "reading the tracking table
        // after a failure" and did not say which files had committed).
        if err.as_database_error().is_none() {
            let last = unlock.is_some() && end == files.len();
            return lost_connection(
                ctx,
                conn,
                &files[from..end],
                &committed_rows,
                last,
                done,
                &err,
            )
            .await;
        }
        // The failed transaction is still open (aborted): end it before asking anything,
        // then flush the asynchronous COMMITs before them with one synchronous one, so what
        // is reported as applied is on disk.
        let _ = sqlx::raw_sql("ROLLBACK; BEGIN; SELECT txid_current(); COMMIT;")
            .execute(&mut *conn)
            .await;
        // The ledger, not the stream, says which files committed (a COMMIT itself can fail).
        let committed = committed_of(ctx, conn, &files[from..end]).await?;
        for (name, ms) in committed_rows.iter().filter(|(n, _)| committed.contains(n)) {
            progress!(ctx.s, "applied {name} ({ms} ms)");
            done.push(applied_entry(name, *ms, observed_of(name)));
        }
        let failed_at = from
            + files[from..end]
                .iter()
                .position(|m| !committed.contains(&m.filename))
                .unwrap_or(0);
        let db = err
            .as_database_error()
            .and_then(|d| d.try_downcast_ref::<PgDatabaseError>());
        let at = db.and_then(|d| match d.position() {
            Some(PgErrorPosition::Original(pos)) => locate_in_batch(&segments, files, from, pos),
            _ => None,
        });
        // PostgreSQL parses a whole message before running any of it: an error located in a
        // later file is a syntax error there, and the files before it never ran. Send them
        // again without it, then report it.
        if let Some((k, ..)) = at
            && k > failed_at
        {
            deferred = Some(migration_error(files[k], &err, |pos| {
                locate_in_batch(&segments, files, from, pos)
            }));
            from = failed_at;
            end = k;
            continue;
        }
        let m = files[failed_at];
        if db.is_some_and(|d| d.code() == "55P03") && attempts < ctx.s.lock_retries {
            attempts += 1;
            let wait = backoff(attempts);
            tracing::warn!(
                "{}: lock_timeout ({} ms) reached waiting for a table lock; retry {attempts}/{} in {:.1}s",
                m.filename,
                ctx.s.lock_timeout.as_millis(),
                ctx.s.lock_retries,
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            from = failed_at;
            continue;
        }
        let mut error =
            migration_error(m, &err, |pos| locate_in_batch(&segments, files, from, pos));
        if error.line.is_none()
            && db.is_some_and(|d| d.position().is_none())
            && m.statements.len() > 1
        {
            if let Some((idx, line, col)) = locate_statement(ctx, conn, m).await {
                error.message = format!(
                    "{} (statement {} of {})",
                    error.message,
                    idx + 1,
                    m.statements.len()
                );
                error = error.line(line).column(col);
            }
        }
        // A one-statement file failing without a position (a NOT NULL over existing NULLs,
        // a duplicate key): that statement is the one, at its first token after comments.
        if error.line.is_none() && m.statements.len() == 1 {
            let st = &m.statements[0];
            let text = &m.sql[st.span.clone()];
            let (line, col) = line_col(&m.sql, st.span.start + split::code_start(text));
            error = error.line(line).column(col);
        }
        if attempts > 0 && error.code.as_deref() == Some("55P03") {
            error
                .message
                .push_str(&format!(" (after {attempts} retries)"));
        }
        return Err(error);
    }
    Ok(())
}

/// The connection broke while a batch ran. Reconnects, waits for the migration lock (the
/// old session holds it until the server has ended it, so every COMMIT it was going to make
/// is made by then), and reports from the ledger which files committed. Everything
/// committed and nothing was left to run: success. Otherwise a failure naming the first
/// file that did not commit (nothing of it remains: its transaction never committed).
async fn lost_connection(
    ctx: &Ctx<'_>,
    conn: &mut PgConnection,
    files: &[&Migration],
    seen: &[(String, i64)],
    last: bool,
    done: &mut Vec<Value>,
    err: &sqlx::Error,
) -> Result<(), Error> {
    let names = |fs: &[&Migration]| {
        fs.iter()
            .map(|m| m.filename.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    tracing::warn!(
        "the connection to the database was lost while applying {} ({err}); reconnecting to read the tracking table",
        names(files)
    );
    let unknown = |why: String| {
        Error::failure(format!(
            "the connection to the database was lost while applying {} ({err}), and {why}: which of these files committed is unknown",
            names(files)
        ))
        .file(files[0].path.display().to_string())
        .hint("each file commits together with its ledger row, so none is half-applied: run `flightplan migrate status` when the database answers, then `flightplan migrate apply` again")
    };
    let mut fresh = match ctx.s.url.connect(ctx.s.connect_timeout).await {
        Ok(c) => c,
        Err(e) => return Err(unknown(format!("reconnecting failed: {}", e.message))),
    };
    let key = lock_key(&ctx.s.table);
    if let Err(e) = acquire_lock(&mut fresh, key, ctx.s.lock_wait).await {
        close(fresh).await;
        return Err(unknown(format!(
            "the old session still holds the migration lock: {}",
            e.message
        )));
    }
    let committed = committed_of(ctx, &mut fresh, files).await;
    // `conn` is dead; the caller releases and closes whatever it holds, now the new one.
    let old = std::mem::replace(conn, fresh);
    drop(old);
    let committed = match committed {
        Ok(c) => c,
        Err(e) => {
            return Err(unknown(format!(
                "reading the tracking table failed: {}",
                e.message
            )));
        }
    };
    for m in files.iter().filter(|m| committed.contains(&m.filename)) {
        let ms = seen
            .iter()
            .find(|(n, _)| n == &m.filename)
            .map_or(0, |(_, ms)| *ms);
        progress!(
            ctx.s,
            "applied {} ({ms} ms; confirmed by the tracking table after reconnecting)",
            m.filename
        );
        done.push(json!({ "filename": m.filename, "duration_ms": ms, "transaction": true }));
    }
    match files.iter().find(|m| !committed.contains(&m.filename)) {
        None if last => {
            tracing::warn!(
                "the tracking table shows every file of the lost batch committed ({})",
                names(files)
            );
            release(conn).await;
            Ok(())
        }
        None => Err(Error::failure(format!(
            "the connection to the database was lost ({err}) after {} committed (confirmed by the tracking table); the remaining files were not run",
            names(files)
        ))
        .hint("run `flightplan migrate apply` again: it applies the remaining files")),
        Some(m) => Err(Error::failure(format!(
            "the connection to the database was lost while {} ran ({err}); after reconnecting, the tracking table shows {} of {} file(s) of the batch committed, and not {}: its transaction was rolled back and nothing of it remains",
            m.filename,
            committed.len(),
            files.len(),
            m.filename
        ))
        .file(m.path.display().to_string())
        .hint("re-run `flightplan migrate apply`: it applies the files that did not commit")),
    }
}

fn build_batch(ctx: &Ctx<'_>, files: &[&Migration], unlock: Option<i64>) -> (String, Vec<Segment>) {
    let mut sql = String::with_capacity(files.iter().map(|m| m.sql.len() + 400).sum());
    let mut chars = 0usize;
    let mut segments = Vec::with_capacity(files.len());
    let push = |sql: &mut String, s: &str, chars: &mut usize| {
        sql.push_str(s);
        *chars += s.chars().count();
    };
    for (index, m) in files.iter().enumerate() {
        // now() is the same for every transaction of one message: time each file from its own start.
        push(
            &mut sql,
            &format!(
                "BEGIN;\nSELECT set_config('flightplan.t0', clock_timestamp()::text, true);\n{}{}{}",
                ctx.settings_sql("LOCAL "),
                // One WAL flush per batch, not per file: every COMMIT but the last is
                // asynchronous, and the last one's flush makes all of them durable. A server
                // crash in between loses whole files with their ledger rows, never half of one.
                if index + 1 < files.len() {
                    "SET LOCAL synchronous_commit = off;\n"
                } else {
                    ""
                },
                ctx.clear_retry_sql(m)
            ),
            &mut chars,
        );
        let start = chars;
        push(&mut sql, &m.sql, &mut chars);
        segments.push(Segment {
            index,
            chars: start..chars,
        });
        // The newline ends a trailing line comment; the ';' ends a last statement without one.
        push(
            &mut sql,
            &format!(
                "\n;\n{}{}COMMIT;\n",
                ctx.observe.unwrap_or(""),
                ctx.s
                    .layout
                    .insert_committed_sql(ctx.t, m, &ctx.s.applied_by)
            ),
            &mut chars,
        );
    }
    if let Some(key) = unlock {
        sql.push_str(&format!("SELECT pg_advisory_unlock({key});\n"));
    }
    (sql, segments)
}

/// Byte ranges of `m.sql` covering it whole, each cut after a statement's `;` and at most
/// [`BATCH_BYTES`] long (a longer statement makes a piece of its own).
fn pieces(m: &Migration) -> Vec<std::ops::Range<usize>> {
    let b = m.sql.as_bytes();
    let mut out = Vec::new();
    let mut cur = 0..0;
    for st in &m.statements {
        let end = if b.get(st.span.end) == Some(&b';') {
            st.span.end + 1
        } else {
            st.span.end
        };
        if end - cur.start > BATCH_BYTES && cur.end > cur.start {
            out.push(cur.clone());
            cur = cur.end..end;
        } else {
            cur.end = end;
        }
    }
    cur.end = m.sql.len();
    out.push(cur);
    out
}

/// A transactional file larger than one batch: one transaction, sent in pieces of at most
/// [`BATCH_BYTES`], so neither flightplan nor the driver's write buffer holds a second whole
/// copy of it (a 50 MB data load peaked at 3× its size as one message). The file still
/// commits or rolls back whole, with its ledger row, in the same transaction.
async fn run_large(
    ctx: &Ctx<'_>,
    conn: &mut PgConnection,
    m: &Migration,
    unlock: Option<i64>,
    done: &mut Vec<Value>,
) -> Result<(), Error> {
    let pieces = pieces(m);
    let mut attempts = 0u32;
    loop {
        progress!(
            ctx.s,
            "{}: {} MB, sent in {} pieces in one transaction",
            m.filename,
            m.sql.len() / 1_000_000,
            pieces.len()
        );
        let begin = format!(
            "BEGIN;\nSELECT set_config('flightplan.t0', clock_timestamp()::text, true);\n{}{}",
            ctx.settings_sql("LOCAL "),
            ctx.clear_retry_sql(m)
        );
        let mut failure: Option<(sqlx::Error, usize)> = None;
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(begin))
            .execute(&mut *conn)
            .await
        {
            failure = Some((e, 0));
        }
        let mut ms = 0i64;
        let mut observed: Option<String> = None;
        if failure.is_none() {
            for (k, range) in pieces.iter().enumerate() {
                let mut text = m.sql[range.clone()].to_string();
                if k + 1 == pieces.len() {
                    // As in a batch: end a trailing line comment and a last statement.
                    text.push_str("\n;\n");
                }
                if let Err(e) = sqlx::raw_sql(AssertSqlSafe(text)).execute(&mut *conn).await {
                    failure = Some((e, range.start));
                    break;
                }
            }
        }
        if failure.is_none() {
            let mut end = format!(
                "{}{}COMMIT;\n",
                ctx.observe.unwrap_or(""),
                ctx.s
                    .layout
                    .insert_committed_sql(ctx.t, m, &ctx.s.applied_by)
            );
            if let Some(key) = unlock {
                end.push_str(&format!("SELECT pg_advisory_unlock({key});\n"));
            }
            let mut stream = sqlx::raw_sql(AssertSqlSafe(end)).fetch_many(&mut *conn);
            loop {
                match stream.try_next().await {
                    Ok(Some(Either::Right(row))) => {
                        if row.try_get::<String, _>(0).is_ok_and(|t| t == "fp:observe") {
                            observed = row.try_get::<String, _>(1).ok();
                        } else if row.try_get::<String, _>(0).is_ok_and(|t| t == "fp:applied") {
                            let v: String = row.try_get(2).unwrap_or_default();
                            ms = v.parse().unwrap_or(0);
                        }
                    }
                    Ok(Some(Either::Left(_))) => {}
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some((e, m.sql.len()));
                        break;
                    }
                }
            }
        }
        let Some((err, offset)) = failure else {
            progress!(ctx.s, "applied {} ({ms} ms)", m.filename);
            done.push(applied_entry(&m.filename, ms, observed.as_deref()));
            return Ok(());
        };
        if err.as_database_error().is_none() {
            return lost_connection(ctx, conn, &[m], &[], unlock.is_some(), done, &err).await;
        }
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        if !committed_of(ctx, conn, &[m]).await?.is_empty() {
            // The COMMIT went through and only what followed it failed.
            done.push(applied_entry(&m.filename, ms, observed.as_deref()));
            return Ok(());
        }
        let db = err
            .as_database_error()
            .and_then(|d| d.try_downcast_ref::<PgDatabaseError>());
        if db.is_some_and(|d| d.code() == "55P03") && attempts < ctx.s.lock_retries {
            attempts += 1;
            let wait = backoff(attempts);
            tracing::warn!(
                "{}: lock_timeout ({} ms) reached waiting for a table lock; retry {attempts}/{} in {:.1}s",
                m.filename,
                ctx.s.lock_timeout.as_millis(),
                ctx.s.lock_retries,
                wait.as_secs_f64()
            );
            tokio::time::sleep(wait).await;
            continue;
        }
        // A position counts characters of the piece that failed.
        let locate = |pos: usize| {
            let at = pos.checked_sub(1)?;
            let rest = m.sql.get(offset..)?;
            let byte = offset + rest.char_indices().nth(at).map_or(rest.len(), |(b, _)| b);
            let (line, col) = line_col(&m.sql, byte);
            Some((0, line, col))
        };
        let mut error = migration_error(m, &err, locate);
        if error.line.is_none() && db.is_some_and(|d| d.position().is_none()) {
            if let Some((idx, line, col)) = locate_statement(ctx, conn, m).await {
                error.message = format!(
                    "{} (statement {} of {})",
                    error.message,
                    idx + 1,
                    m.statements.len()
                );
                error = error.line(line).column(col);
            }
        }
        if attempts > 0 && error.code.as_deref() == Some("55P03") {
            error
                .message
                .push_str(&format!(" (after {attempts} retries)"));
        }
        return Err(error);
    }
}

/// Maps a 1-based character position in the batch to (file index, line, column).
fn locate_in_batch(
    segments: &[Segment],
    files: &[&Migration],
    from: usize,
    pos: usize,
) -> Option<(usize, u32, u32)> {
    let at = pos.checked_sub(1)?;
    let seg = segments.iter().find(|s| s.chars.contains(&at))?;
    let m = files[from + seg.index];
    let byte = m
        .sql
        .char_indices()
        .nth(at - seg.chars.start)
        .map_or(m.sql.len(), |(b, _)| b);
    let (line, col) = line_col(&m.sql, byte);
    Some((from + seg.index, line, col))
}

/// Re-runs a failed file statement by statement in a transaction that is rolled back, to
/// name the statement behind an error that carries no position (a constraint violation,
/// a missing row). Only on the failure path; bounded by the same timeouts.
async fn locate_statement(
    ctx: &Ctx<'_>,
    conn: &mut PgConnection,
    m: &Migration,
) -> Option<(usize, u32, u32)> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "BEGIN;\n{}",
        ctx.settings_sql("LOCAL ")
    )))
    .execute(&mut *conn)
    .await
    .ok()?;
    let mut found = None;
    for (i, st) in m.statements.iter().enumerate() {
        let text = m.sql[st.span.clone()].to_string();
        if sqlx::raw_sql(AssertSqlSafe(text))
            .execute(&mut *conn)
            .await
            .is_err()
        {
            // The statement's first token, not the comment lines above it.
            let offset = st.span.start + split::code_start(&m.sql[st.span.clone()]);
            let (line, col) = line_col(&m.sql, offset);
            found = Some((i, line, col));
            break;
        }
    }
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    found
}

/// The file names of `files` that have an applied row.
async fn committed_of(
    ctx: &Ctx<'_>,
    conn: &mut PgConnection,
    files: &[&Migration],
) -> Result<Vec<String>, Error> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&Key> = files.iter().map(|m| &m.key).collect();
    let sql = ctx.s.layout.committed_sql(ctx.t, &keys);
    let rows = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| sql_error("reading the tracking table after a failure", &e))?;
    let keys: Vec<String> = rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>(0).ok())
        .collect();
    Ok(files
        .iter()
        .filter(|m| keys.contains(&m.key.to_string()))
        .map(|m| m.filename.clone())
        .collect())
}

/// A `-- no-transaction` file: a `running` row first where the layout's table has room for
/// one (so a crash is visible), then each statement as its own message (PostgreSQL would
/// wrap several in one implicit transaction, which `CREATE INDEX CONCURRENTLY` refuses),
/// then `applied` or `failed`.
async fn run_no_tx(ctx: &Ctx<'_>, conn: &mut PgConnection, m: &Migration) -> Result<Value, Error> {
    let t = ctx.t;
    let layout = ctx.s.layout;
    let begin = format!(
        "SELECT set_config('flightplan.t0', clock_timestamp()::text, false);\n{}{}{}",
        ctx.clear_retry_sql(m),
        layout.start_sql(t, m, &ctx.s.applied_by),
        ctx.settings_sql("")
    );
    sqlx::raw_sql(AssertSqlSafe(begin))
        .execute(&mut *conn)
        .await
        .map_err(|e| sql_error(&format!("recording the start of {}", m.filename), &e))?;
    progress!(
        ctx.s,
        "{}: running {} statement(s) outside a transaction",
        m.filename,
        m.statements.len()
    );
    for st in &m.statements {
        let text = &m.sql[st.span.clone()];
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(text.to_string()))
            .execute(&mut *conn)
            .await
        {
            let mut error = migration_error(m, &e, |pos| {
                let byte = text
                    .char_indices()
                    .nth(pos.checked_sub(1)?)
                    .map_or(text.len(), |(b, _)| b);
                let (line, col) = line_col(&m.sql, st.span.start + byte);
                Some((0, line, col))
            });
            if error.line.is_none() {
                let (line, col) = line_col(&m.sql, st.span.start + split::code_start(text));
                error = error.line(line).column(col);
            }
            let record = format!(
                "{}RESET lock_timeout;\nRESET statement_timeout;",
                layout.failed_sql(t, m, &error.message)
            );
            let _ = sqlx::raw_sql(AssertSqlSafe(record))
                .execute(&mut *conn)
                .await;
            let invalid = invalid_indexes(conn).await;
            if !invalid.is_empty() {
                error.message.push_str(&format!(
                    "; it left invalid index(es): {}",
                    invalid.join(", ")
                ));
                error.hint = Some(format!(
                    "drop them (DROP INDEX CONCURRENTLY {}), fix the cause, then run `flightplan migrate apply --retry-failed`",
                    invalid[0]
                ));
            } else {
                error.hint = Some(format!(
                    "{}; then run `flightplan migrate apply --retry-failed` (or `migrate mark-applied {}` if you finished it by hand)",
                    error.hint.clone().unwrap_or_else(|| "fix the cause".into()),
                    m.filename
                ));
            }
            return Err(error);
        }
    }
    let done = format!(
        "{}RESET lock_timeout;\nRESET statement_timeout;",
        layout.done_sql(t, m)
    );
    let rows = sqlx::raw_sql(AssertSqlSafe(done))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| sql_error(&format!("recording {} as applied", m.filename), &e))?;
    let ms: i64 = rows
        .first()
        .and_then(|r| r.try_get::<String, _>(0).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    progress!(ctx.s, "applied {} ({ms} ms, no transaction)", m.filename);
    Ok(json!({ "filename": m.filename, "duration_ms": ms, "transaction": false }))
}

async fn invalid_indexes(conn: &mut PgConnection) -> Vec<String> {
    let sql = "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1";
    match sqlx::raw_sql(sql).fetch_all(&mut *conn).await {
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Builds the user-facing error for a migration's own SQL: file, line:column, SQLSTATE,
/// the server's message, detail and context, and a hint for the usual causes.
fn migration_error(
    m: &Migration,
    e: &sqlx::Error,
    locate: impl Fn(usize) -> Option<(usize, u32, u32)>,
) -> Error {
    let Some(db) = e
        .as_database_error()
        .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
    else {
        return Error::failure(format!("{}: {e}", m.filename))
            .file(m.path.display().to_string())
            .hint("the connection to the database failed; the file's transaction was rolled back, so re-run `flightplan migrate apply`");
    };
    let mut msg = format!(
        "{} failed: {} (SQLSTATE {})",
        m.filename,
        db.message(),
        db.code()
    );
    if let Some(d) = db.detail() {
        msg.push_str(&format!("; {d}"));
    }
    let mut err = Error::failure(String::new())
        .file(m.path.display().to_string())
        .code(db.code());
    match db.position() {
        Some(PgErrorPosition::Original(pos)) => {
            if let Some((_, line, col)) = locate(pos) {
                err = err.line(line).column(col);
            }
        }
        Some(PgErrorPosition::Internal { query, .. }) => {
            msg.push_str(&format!("; in internal query `{}`", query.trim()));
        }
        None => {}
    }
    if let Some(w) = db.r#where() {
        msg.push_str(&format!("; context: {}", w.replace('\n', " / ")));
    }
    err.message = msg;
    let hint = match db.code() {
        "42701" | "42P07" | "42710" | "42P06" | "42723" => format!(
            "the object already exists: was this change applied before by hand or by `db:push`? If every change in the file \
             is already in place, record it with `flightplan migrate mark-applied {}`",
            m.filename
        ),
        "42P01" | "42703" | "42704" | "42883" => {
            "an object it needs does not exist: an earlier migration may be missing, or the schema drifted; see `flightplan migrate status`".into()
        }
        "55P03" => "another session held a conflicting lock for longer than lock_timeout; find it in pg_stat_activity, or raise --lock-timeout".into(),
        "57014" => "the statement ran longer than statement_timeout; raise --statement-timeout, or split the migration".into(),
        "42501" => "the database user lacks a privilege this migration needs".into(),
        "42601" => "syntax error: check the SQL at the position shown".into(),
        "23505" | "23502" | "23503" | "23514" => "existing rows violate the change: fix the data in an earlier migration, then re-run".into(),
        "25001" | "25P01" => "the file manages transactions itself: remove BEGIN/COMMIT, or make it `-- no-transaction`".into(),
        _ => "the file's transaction was rolled back and nothing of it remains; fix it and re-run `flightplan migrate apply`".into(),
    };
    err.hint(hint)
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.saturating_pow(attempt.saturating_sub(1)).min(16);
    let jitter = rand::random_range(0..=base.as_millis() as u64 / 4);
    base + Duration::from_millis(jitter)
}

/// Polls `pg_try_advisory_lock` (never the blocking form: a blocked waiter holds a snapshot
/// that the holder's `CREATE INDEX CONCURRENTLY` would wait for, a deadlock) until `wait`.
async fn acquire_lock(conn: &mut PgConnection, key: i64, wait: Duration) -> Result<(), Error> {
    // A runner killed mid-statement should not leave its backend (and the lock) behind
    // until the statement ends: the server checks the client every second (PostgreSQL 14+).
    let check = if conn.server_version_num().unwrap_or(0) >= 140_000 {
        "SET client_connection_check_interval = '1s';\n"
    } else {
        ""
    };
    let try_sql = format!("{check}SELECT pg_try_advisory_lock({key})::text");
    let started = Instant::now();
    let mut delay = Duration::from_millis(50);
    let mut last_report: Option<Instant> = None;
    loop {
        let got: String = sqlx::raw_sql(AssertSqlSafe(try_sql.clone()))
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| sql_error("trying the migration lock", &e))?
            .first()
            .and_then(|r| r.try_get(0).ok())
            .unwrap_or_default();
        if got == "true" {
            if last_report.is_some() {
                tracing::info!(
                    "got the migration lock after {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            return Ok(());
        }
        let holder = lock_holder(conn, key).await;
        if started.elapsed() >= wait {
            return Err(Error::failure(format!(
                "the migration lock was not obtained within {}s; it is held by {holder}",
                wait.as_secs()
            ))
            .hint("another deploy is migrating this database: wait for it, or raise --lock-wait; if that session is stuck, end it with pg_terminate_backend(pid)"));
        }
        if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(15)) {
            tracing::info!(
                "waiting for the migration lock, held by {holder} ({:.0}s of {}s)",
                started.elapsed().as_secs_f64(),
                wait.as_secs()
            );
            last_report = Some(Instant::now());
        }
        let jitter = Duration::from_millis(rand::random_range(0..=delay.as_millis() as u64 / 2));
        tokio::time::sleep((delay + jitter).min(wait.saturating_sub(started.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn lock_holder(conn: &mut PgConnection, key: i64) -> String {
    let (hi, lo) = ((key as u64 >> 32) as u32, key as u64 as u32);
    let sql = format!(
        "SELECT format('pid %s (%s, user %s, %s, since %s)', a.pid, coalesce(nullif(a.application_name, ''), 'unknown client'), \
            a.usename, coalesce(a.client_addr::text, 'local socket'), date_trunc('second', a.backend_start)::text) \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = {hi} AND l.objid = {lo} AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    );
    match sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows
            .first()
            .and_then(|r| r.try_get::<String, _>(0).ok())
            .unwrap_or_else(|| "a session that just released it".into()),
        Err(_) => "another session (pg_stat_activity is not readable)".into(),
    }
}

/// Ends any open transaction and releases our session locks; errors are moot here.
async fn release(conn: &mut PgConnection) {
    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    let _ = sqlx::raw_sql("SELECT pg_advisory_unlock_all()")
        .execute(&mut *conn)
        .await;
}

/// Closes politely; the server releases anything left when the session ends.
pub(super) async fn close(conn: PgConnection) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
}

/// `mark-applied`: records files as applied without running them, under the lock.
pub(super) async fn mark(
    s: &Settings,
    source: &Source,
    names: &[String],
) -> Result<Outcome, Error> {
    let mut conn = s.url.connect(s.connect_timeout).await?;
    let before = Ledger::read(&mut conn, s.layout, &s.table).await?;
    before.check_shape()?;
    let key = lock_key(&s.table);
    acquire_lock(&mut conn, key, s.lock_wait).await?;
    let result = async {
        let ledger = Ledger::run_and_read(
            &mut conn,
            s.layout,
            &s.table,
            before.ensure_sql().as_deref(),
        )
        .await?;
        let t = &ledger.qualified;
        let mut marked = Vec::new();
        let mut already = Vec::new();
        let mut sql = String::from("BEGIN;\n");
        let applied_by = format!("{} (mark-applied)", s.applied_by);
        for n in names {
            let m = source.get(n).expect("checked by the caller");
            match ledger.row(&m.key) {
                Some(r) if r.status == super::RowStatus::Applied => already.push(n.clone()),
                _ => {
                    sql.push_str(&s.layout.mark_sql(t, m, &applied_by));
                    marked.push(n.clone());
                }
            }
        }
        sql.push_str("COMMIT;\n");
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| sql_error("recording the files", &e))?;
        Ok::<_, Error>((marked, already))
    }
    .await;
    release(&mut conn).await;
    close(conn).await;
    let (marked, already) = result?;
    let mut text = String::new();
    for n in &marked {
        text.push_str(&format!("  marked   {n}  (recorded as applied, not run)\n"));
    }
    for n in &already {
        text.push_str(&format!("  already  {n}  (was applied)\n"));
    }
    let mut json = serde_json::Map::new();
    json.insert("marked".into(), json!(marked));
    json.insert("already_applied".into(), json!(already));
    Ok(Outcome::new(true, json, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn pieces_cover_the_file_cut_after_statements_and_stay_under_the_limit() {
        let stmt = format!("insert into t values ('{}');\n", "x".repeat(1 << 20));
        let text = format!("-- head\n{}{}-- tail", stmt.repeat(9), "select 1");
        let m = Migration::from_text("big.sql".into(), PathBuf::from("big.sql"), &text);
        let p = pieces(&m);
        assert_eq!(p.first().unwrap().start, 0);
        assert_eq!(p.last().unwrap().end, text.len());
        for w in p.windows(2) {
            assert_eq!(w[0].end, w[1].start, "contiguous");
            assert_eq!(&text[w[0].end - 1..w[0].end], ";", "cut after a `;`");
        }
        assert!(p.iter().all(|r| r.len() <= BATCH_BYTES), "{p:?}");
        assert_eq!(p.len(), 3, "{p:?}");
        // A single statement over the limit is a piece of its own.
        let huge = format!("select '{}';\nselect 2;", "y".repeat(BATCH_BYTES + 10));
        let m = Migration::from_text("huge.sql".into(), PathBuf::from("huge.sql"), &huge);
        let p = pieces(&m);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].len() > BATCH_BYTES);
    }

    #[test]
    fn batch_positions_map_back_to_file_lines() {
        let a = Migration::from_text(
            "a.sql".into(),
            PathBuf::from("a.sql"),
            "create table é (x int);\n",
        );
        let b = Migration::from_text(
            "b.sql".into(),
            PathBuf::from("b.sql"),
            "select 1;\nselect nope from;\n",
        );
        let s = crate::migrate::Settings {
            url: crate::db::DatabaseUrl::parse("postgres://u@127.0.0.1/d").unwrap(),
            dir: PathBuf::from("."),
            layout: crate::migrate::Layout::Flat,
            table: "_migrations".into(),
            lock_wait: Duration::from_secs(1),
            lock_timeout: Duration::from_secs(5),
            statement_timeout: None,
            lock_retries: 0,
            connect_timeout: Duration::from_secs(1),
            applied_by: "t".into(),
            progress: false,
        };
        let ctx = Ctx {
            s: &s,
            t: "\"_migrations\"",
            retry: &[],
            observe: None,
        };
        let files = [&a, &b];
        let (sql, segs) = build_batch(&ctx, &files, Some(7));
        assert!(sql.ends_with("SELECT pg_advisory_unlock(7);\n"));
        let byte = sql.find("nope").unwrap();
        let pos = sql[..byte].chars().count() + 1;
        assert_eq!(locate_in_batch(&segs, &files, 0, pos), Some((1, 2, 8)));
    }
}
