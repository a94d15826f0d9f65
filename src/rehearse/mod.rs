//! `flightplan rehearse`: the pending migrations (from production's ledger, read-only) tried
//! with the same engine on a short-lived copy of production, with timings, locks, warnings
//! and the first failure reported to the summary and the pull request; the copy is removed
//! in every outcome, SIGTERM and SIGINT included.

pub mod analyze;
pub mod compat;
pub mod copy;
pub mod observe;
pub mod plan;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row as _};

use self::analyze::{FileAnalysis, Finding};
use self::copy::Live;
use self::plan::{RehearsePlan, Route};
use crate::backup::Label;
use crate::cli::RehearseArgs;
use crate::clock::{DurationValue, Utc};
use crate::db::{DatabaseUrl, quote_literal};
use crate::error::Error;
use crate::migrate::{self, Migration, Source};
use crate::output::Outcome;
use crate::pipeline::{self, Recorder};
use crate::plan::Problems;
use crate::redact::Redactor;
use crate::report::log::{
    CompatRecord, DeploymentLog, DriftRecord, FileError, LintRecord, LockRecord, Rehearsal,
    RehearsalWarning, RehearsedFile, Status, StepStatus, TableRows, Verdict,
};
use crate::report::{actions, rehearsal as render};
use crate::settings::Sources;

/// `[rehearse]` in flightplan.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RehearseFile {
    /// Neon: the branch's `expires_at`, from its creation.
    pub expires_in: Option<DurationValue>,
    /// Run the drift check on the copy after the pending files.
    pub drift: bool,
    /// Rows from which a non-concurrent `CREATE INDEX` is a warning.
    pub large_table_rows: u64,
    /// The JSON log; relative to this file. Default: `flightplan-rehearsal.json` in the
    /// workspace (apart from `run`'s log, so one job can do both).
    pub log: Option<PathBuf>,
    /// `[rehearse] lint`: squawk's rule selection, resolved (and checked) in
    /// src/settings/lint.rs for both `rehearse` and `migrate lint`.
    pub lint: Option<toml::Value>,
}

impl Default for RehearseFile {
    fn default() -> Self {
        RehearseFile {
            expires_in: None,
            drift: true,
            large_table_rows: 100_000,
            log: None,
            lint: None,
        }
    }
}

struct Ctx<'a> {
    plan: &'a RehearsePlan,
    state: Rc<RefCell<Recorder>>,
    live: RefCell<Live>,
    /// File name → path of every pending file, for annotations on the right file.
    paths: RefCell<HashMap<String, String>>,
}

/// `flightplan rehearse [--keep]`.
pub async fn run(src: &Sources<'_>, args: &RehearseArgs) -> Result<Outcome, Error> {
    let plan = plan::plan(src, args).map_err(Problems::into_error)?;
    // Every secret is masked before anything else is printed.
    plan.redactor.announce(plan.gha);

    let mut log = DeploymentLog::new("rehearse", &plan.report.environment, Utc::now().rfc3339());
    log.app = plan.app.clone();
    log.context = plan.context.clone();
    log.rehearsal = Some(Rehearsal {
        large_table_rows: plan.file.large_table_rows,
        ..Default::default()
    });
    let state = Rc::new(RefCell::new(Recorder {
        log,
        t0: Instant::now(),
        redactor: plan.redactor.clone(),
        current: None,
    }));
    let ctx = Ctx {
        plan: &plan,
        state: state.clone(),
        live: RefCell::new(Live::default()),
        paths: RefCell::new(HashMap::new()),
    };

    let work = rehearse(&ctx);
    let interrupted = tokio::select! {
        _ = work => false,
        _ = pipeline::cancelled() => true,
    };
    if interrupted {
        tracing::warn!("interrupted: removing the copy and writing the report before exiting");
        let mut st = state.borrow_mut();
        if st.current.is_some() {
            let e = Error::failure("interrupted (SIGTERM/SIGINT) while this step ran");
            let step = st.current.as_ref().map(|c| c.0.clone()).unwrap_or_default();
            st.issue(&step, &e);
            st.end(StepStatus::Interrupted, "interrupted", Value::Null);
        }
        let r = rehearsal(&mut st);
        r.verdict = Verdict::Interrupted;
        r.reason = "the job was cancelled (SIGTERM/SIGINT) mid-rehearsal; the copy was removed and production was never written".into();
        for f in r.files.iter_mut().filter(|f| f.status == "pending") {
            f.status = "not_run".into();
        }
    }
    clean_up(&ctx).await;
    finish(&ctx).await
}

fn rehearsal(st: &mut Recorder) -> &mut Rehearsal {
    st.log.rehearsal.get_or_insert_with(Rehearsal::default)
}

fn set_verdict(ctx: &Ctx<'_>, verdict: Verdict, reason: impl Into<String>) {
    let mut st = ctx.state.borrow_mut();
    let reason = st.redactor.scrub(&reason.into());
    let r = rehearsal(&mut st);
    r.verdict = verdict;
    r.reason = reason;
}

/// The steps; each records itself into the log. Returns when the verdict is known.
async fn rehearse(ctx: &Ctx<'_>) {
    let route = &ctx.plan.route;
    if let Route::ChangedFilesOnly(why) = route {
        ctx.state.borrow_mut().skip(
            "plan",
            "no DATABASE_URL: production's ledger cannot be read",
        );
        let changed = changed_files(ctx, &ctx.plan.dir).await;
        let mut st = ctx.state.borrow_mut();
        let r = rehearsal(&mut st);
        r.changed_files = changed;
        r.verdict = Verdict::LedgerUnreadable;
        r.reason = why.clone();
        return;
    }
    let Some(ms) = &ctx.plan.migrate else { return };
    let ms = ms.clone();

    // 1. The plan, against production's ledger (read-only).
    ctx.state.borrow_mut().begin("plan");
    let (ok, json, err) = split(migrate::plan(&ms).await);
    let pending: Vec<String> = json["pending"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["filename"].as_str().map(str::to_string))
        .collect();
    let source = ms.layout.discover(&ms.dir);
    let (source, err) = match (source, err) {
        (Ok(s), e) => (s, e),
        (Err(e), None) => {
            let mut st = ctx.state.borrow_mut();
            st.fail(&e, Value::Null);
            drop(st);
            set_verdict(ctx, Verdict::Error, e.message);
            return;
        }
        (Err(_), Some(e)) => {
            ctx.state.borrow_mut().fail(&e, Value::Null);
            set_verdict(ctx, Verdict::Error, e.message);
            return;
        }
    };
    let analyses = analyse(&source, &pending);
    ctx.paths.borrow_mut().extend(
        analyses
            .iter()
            .map(|(m, _)| (m.filename.clone(), m.path.display().to_string())),
    );
    // squawk's rules on the files alone; the copy's rows confirm the size-dependent ones.
    let unconfirmed = lint(ctx, &analyses, None);
    {
        let mut st = ctx.state.borrow_mut();
        st.log.migrations_pending = pending.clone();
        // What the files say on their own; the copy adds rows, times and confirmations.
        let mut files = describe(&analyses, None, u64::MAX);
        attach_lint(&mut files, &unconfirmed);
        let r = rehearsal(&mut st);
        r.files = files;
        r.squawk = Some(migrate::lint::SQUAWK_VERSION.to_string());
        for u in &unconfirmed.unparsed {
            r.notes.push(format!(
                "squawk could not parse `{}:{}:{}` ({}): its rules may miss statements there",
                u.file, u.line, u.column, u.message
            ));
        }
    }
    if !ok {
        let e = err.unwrap_or_else(|| Error::failure("migrate plan failed"));
        let blocked = !json.is_null();
        ctx.state.borrow_mut().fail(&e, json);
        let reason = match e.location() {
            Some(at) => format!("{} (`{at}`)", e.message),
            None => e.message.clone(),
        };
        // A refusal found in the ledger or the files is what `apply` would do; anything
        // else (unreachable, rejected credentials) is the rehearsal failing to run.
        set_verdict(
            ctx,
            if blocked {
                Verdict::Blocked
            } else {
                Verdict::Error
            },
            reason,
        );
        return;
    }
    ctx.state
        .borrow_mut()
        .end(StepStatus::Ok, format!("{} pending", pending.len()), json);
    if pending.is_empty() {
        set_verdict(ctx, Verdict::NothingPending, "no pending migrations");
        return;
    }

    // 2. The copy.
    if let Route::PlanOnly(why) = route {
        ctx.state.borrow_mut().skip("copy", why);
        if let Some(r) = &ctx.state.borrow().log.rehearsal {
            annotate(ctx, r);
        }
        set_verdict(ctx, Verdict::PlanOnly, why.clone());
        return;
    }
    let label = &ctx.plan.label;
    let raw = ms.url.expose().to_string();
    ctx.state.borrow_mut().begin("copy");
    let made = match route {
        Route::Neon(ns) => neon_copy(ctx, &ms, &raw, ns, label).await,
        Route::Scratch { timeout } => {
            copy::scratch_database(
                &ms.url,
                &raw,
                *timeout,
                ms.connect_timeout,
                label,
                &ctx.live,
            )
            .await
        }
        Route::PlanOnly(_) | Route::ChangedFilesOnly(_) => return,
    };
    let copy_url = match made {
        Ok((url, record)) => {
            let mut st = ctx.state.borrow_mut();
            let summary = format!(
                "{} {}",
                if record.provider == "neon" {
                    "Neon branch"
                } else {
                    "scratch database"
                },
                record.name
            );
            rehearsal(&mut st).copy = Some(record);
            st.end(StepStatus::Ok, summary, Value::Null);
            url
        }
        Err(e) => {
            let mut st = ctx.state.borrow_mut();
            st.fail(&e, Value::Null);
            drop(st);
            set_verdict(
                ctx,
                Verdict::Error,
                format!("no copy of production could be made: {}", e.message),
            );
            return;
        }
    };
    let copy_settings = migrate::Settings {
        url: copy_url,
        progress: false,
        applied_by: format!("{} [rehearsal]", ms.applied_by),
        // A Neon compute just created may take a moment to accept connections.
        connect_timeout: ms.connect_timeout.max(Duration::from_secs(60)),
        ..ms.clone()
    };

    // 3. The pending files on the copy, with the same engine as `migrate apply`.
    ctx.state.borrow_mut().begin("rehearse");
    // The tables squawk's size-dependent findings name, measured with the ones locked.
    let sized: Vec<String> = unconfirmed
        .findings
        .iter()
        .filter(|f| f.rows.is_some())
        .filter_map(|f| f.table.clone())
        .collect();
    let probed = probe(&copy_settings, &analyses, &sized).await;
    let facts = match probed {
        Ok(f) => f,
        Err(e) => {
            note(
                ctx,
                format!(
                    "table sizes could not be read on the copy ({}); warnings that depend on them are left out",
                    e.message
                ),
            );
            Facts::default()
        }
    };
    let copy_pending = copy_pending(&copy_settings).await;
    // The relations before the change set, to name what each file's transaction locks.
    let catalog = match observe::catalog(&copy_settings).await {
        Ok(c) => Some(c),
        Err(e) => {
            note(
                ctx,
                format!(
                    "the copy's relations could not be read ({}); locks are derived from the SQL, not observed",
                    e.message
                ),
            );
            None
        }
    };
    tracing::info!(
        "applying {} pending file(s) on the copy (production is not written)",
        pending.len()
    );
    let t0 = Instant::now();
    let applied = match &catalog {
        Some(_) => migrate::apply_observing(&copy_settings, observe::OBSERVE_SQL).await,
        None => migrate::apply(&copy_settings, false).await,
    };
    let elapsed = t0.elapsed().as_millis() as i64;
    let failed = record_apply(ctx, &analyses, &facts, catalog.as_ref(), applied, elapsed);
    if let Some(cp) = copy_pending
        && cp != pending
    {
        note(
            ctx,
            format!(
                "production's ledger changed between the plan and the copy (a deploy in between?): the copy had {} pending, the plan {}",
                cp.join(", "),
                pending.join(", ")
            ),
        );
    }
    if failed {
        return;
    }

    // 4. The drift check on the copy, now that it has every file.
    if !ctx.plan.file.drift {
        ctx.state
            .borrow_mut()
            .skip("drift", "[rehearse] drift = false");
        return;
    }
    if matches!(route, Route::Scratch { .. }) {
        // A dump and restore re-deparses some expressions (a CHECK's `IN (…)` comes back
        // as `= ANY (ARRAY[…])` written differently), so the comparison would report
        // differences that are not drift. A Neon branch is a physical copy: no such issue.
        let why = "a dump and restore rewrites the text of some expressions, so comparing a pg_dump copy would \
                   report differences that are not drift; `flightplan migrate drift` checks production itself";
        let mut st = ctx.state.borrow_mut();
        st.skip("drift", &format!("not checked on a pg_dump copy: {why}"));
        rehearsal(&mut st).drift_error = Some(why.into());
        return;
    }
    ctx.state.borrow_mut().begin("drift");
    let result = migrate::drift(&copy_settings).await;
    let gate = ctx.plan.drift_gate;
    let mut st = ctx.state.borrow_mut();
    match result {
        Ok(out) => {
            let found: Vec<DriftRecord> =
                serde_json::from_value(out.json.get("drift").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default();
            let n = found.len();
            rehearsal(&mut st).drift = Some(found);
            if n == 0 {
                st.end(StepStatus::Ok, "no drift", Value::Null);
            } else if gate {
                let e = Error::failure(format!(
                    "the copy has drifted from the migration files in {n} place(s): `run` would stop at its drift gate ([migrate] drift_gate = true)"
                ));
                st.fail(&e, Value::Null);
                let r = rehearsal(&mut st);
                r.verdict = Verdict::Fail;
                r.reason = e.message;
            } else {
                st.end(StepStatus::Ok, format!("{n} difference(s)"), Value::Null);
            }
        }
        Err(e) => {
            st.end(
                StepStatus::Skipped,
                format!("not checked: {}", e.message),
                Value::Null,
            );
            rehearsal(&mut st).drift_error = Some(e.message);
        }
    }
}

async fn neon_copy(
    ctx: &Ctx<'_>,
    ms: &migrate::Settings,
    raw: &str,
    ns: &crate::backup::neon::Settings,
    label: &Label,
) -> Result<(DatabaseUrl, crate::report::log::CopyRecord), Error> {
    // The branch has production's databases and roles: the same names as DATABASE_URL's.
    let u = url::Url::parse(raw.trim())
        .map_err(|e| Error::usage(format!("DATABASE_URL is not a valid URL: {e}")))?;
    let role = percent_decode(u.username());
    if role.is_empty() {
        return Err(Error::usage(
            "DATABASE_URL names no user: the branch's connection string needs the role name",
        )
        .hint("use the direct URL Neon shows, e.g. postgres://ROLE:PASSWORD@ep-….neon.tech/DB"));
    }
    let database = ms.url.database().to_string();
    let expires_at = Utc::at(SystemTime::now() + ctx.plan.expires_in).rfc3339();
    let pr = ctx
        .state
        .borrow()
        .log
        .context
        .pull_requests
        .first()
        .copied();
    let (uri, record) =
        copy::neon_branch(ns, label, pr, &expires_at, &database, &role, &ctx.live).await?;
    // The role's password is in the URI: masked before anything else can print it.
    {
        let mut fresh = Redactor::new();
        fresh.add(uri.expose());
        fresh.announce(ctx.plan.gha);
        ctx.state.borrow_mut().redactor.add(uri.expose());
    }
    let url = DatabaseUrl::parse(&without_channel_binding(uri.expose())).map_err(|mut e| {
        e.message = format!(
            "the branch's connection string from Neon is not usable: {}",
            e.message
        );
        e
    })?;
    Ok((url, record))
}

/// Neon's URIs ask for `channel_binding=require`; sqlx does not implement channel binding
/// and would only warn about the parameter, so it is dropped (TLS stays required).
fn without_channel_binding(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != "channel_binding")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if kept.is_empty() {
                u.set_query(None);
            } else {
                u.query_pairs_mut().clear().extend_pairs(kept);
            }
            u.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The result of one phase command: ok, its JSON, and its error if any.
fn split(result: Result<Outcome, Error>) -> (bool, Value, Option<Error>) {
    match result {
        Ok(o) => (o.ok && o.error.is_none(), Value::Object(o.json), o.error),
        Err(e) => (false, Value::Null, Some(e)),
    }
}

fn note(ctx: &Ctx<'_>, text: String) {
    let mut st = ctx.state.borrow_mut();
    let text = st.redactor.scrub(&text);
    rehearsal(&mut st).notes.push(text);
}

/// The pending files' static analyses, in apply order.
fn analyse<'s>(source: &'s Source, pending: &[String]) -> Vec<(&'s Migration, FileAnalysis)> {
    source
        .migrations
        .iter()
        .filter(|m| pending.contains(&m.filename))
        .map(|m| (m, analyze::analyze(m)))
        .collect()
}

/// What the copy says about the tables before any pending file runs.
#[derive(Debug, Default)]
struct Facts {
    /// Relation key → rows, for relations that exist.
    rows: HashMap<String, i64>,
    /// (table key, column) with a validated CHECK (column IS NOT NULL).
    checked: HashSet<(String, String)>,
}

/// Reads row counts (the planner's estimate; a table never analysed is analysed on the
/// copy first) and NOT NULL checks on the copy. Production is not contacted.
async fn probe(
    s: &migrate::Settings,
    analyses: &[(&Migration, FileAnalysis)],
    tables: &[String],
) -> Result<Facts, Error> {
    let mut wanted: Vec<analyze::Relation> = Vec::new();
    let mut not_null: Vec<(&analyze::Relation, &str)> = Vec::new();
    let named = tables.iter().map(|t| analyze::Relation(vec![t.clone()]));
    for rel in analyses
        .iter()
        .flat_map(|(_, a)| a.locks.iter().filter(|l| !l.index))
        .map(|l| l.relation.clone())
        .chain(named)
    {
        if !wanted.iter().any(|w| w.key() == rel.key()) {
            wanted.push(rel);
        }
    }
    for (_, a) in analyses {
        for c in &a.candidates {
            if let Finding::SetNotNull { table, column } = &c.finding {
                not_null.push((table, column));
            }
        }
    }
    let mut facts = Facts::default();
    let mut conn = s.url.connect(s.connect_timeout).await?;
    let text = |rows: &[sqlx::postgres::PgRow], i: usize| -> Option<String> {
        rows.first()
            .and_then(|r| r.try_get::<Option<String>, _>(i).ok().flatten())
    };
    for rel in &wanted {
        let sql = format!(
            "SELECT c.oid::regclass::text, c.reltuples::bigint::text, c.relkind::text FROM pg_class c WHERE c.oid = to_regclass({})",
            quote_literal(&rel.regclass())
        );
        let rows = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .map_err(|e| migrate::ledger::sql_error("reading table sizes on the copy", &e))?;
        let (Some(name), Some(est), Some(kind)) = (text(&rows, 0), text(&rows, 1), text(&rows, 2))
        else {
            continue;
        };
        let mut n: i64 = est.parse().unwrap_or(-1);
        // Never analysed (-1 since PostgreSQL 14, 0 before): ANALYZE it on the copy, which
        // samples a bounded number of rows (300 × default_statistics_target) however large
        // the table is, and touches only the copy's statistics.
        if n <= 0 && matches!(kind.as_str(), "r" | "p" | "m") {
            let sql = format!(
                "ANALYZE {name}; SELECT reltuples::bigint::text FROM pg_class WHERE oid = {}::regclass",
                quote_literal(&name)
            );
            let rows = sqlx::raw_sql(AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .map_err(|e| migrate::ledger::sql_error("analysing a table on the copy", &e))?;
            n = text(&rows, 0).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
        facts.rows.insert(rel.key().to_string(), n.max(0));
    }
    for (table, column) in not_null {
        let sql = format!(
            "SELECT count(*)::text FROM pg_constraint WHERE conrelid = to_regclass({}) AND contype = 'c' AND convalidated \
             AND position(lower({}) in lower(pg_get_constraintdef(oid))) > 0",
            quote_literal(&table.regclass()),
            quote_literal(&format!("{column} IS NOT NULL"))
        );
        let rows = sqlx::raw_sql(AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .map_err(|e| migrate::ledger::sql_error("reading CHECK constraints on the copy", &e))?;
        if text(&rows, 0).is_some_and(|c| c != "0") {
            facts
                .checked
                .insert((table.key().to_string(), column.to_string()));
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sqlx::Connection::close(conn)).await;
    Ok(facts)
}

/// The copy's own pending list (it should be the plan's), or `None` when it cannot be read.
async fn copy_pending(s: &migrate::Settings) -> Option<Vec<String>> {
    let out = migrate::plan(s).await.ok()?;
    Some(
        out.json
            .get("pending")?
            .as_array()?
            .iter()
            .filter_map(|p| p["filename"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Each pending file with its locks on tables that exist before the change set, the
/// strongest of them, and the rows of those tables and the confirmed warnings when the
/// copy's facts are known.
fn describe(
    analyses: &[(&Migration, FileAnalysis)],
    facts: Option<&Facts>,
    threshold: u64,
) -> Vec<RehearsedFile> {
    // Objects created by an earlier file of the change set, or by this one: no running
    // code uses them yet, so their locks block nobody.
    let mut created: HashSet<String> = HashSet::new();
    // The same, with functions, in statement order: what the running version cannot use yet.
    let mut compat_created: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for (m, a) in analyses {
        let compat: Vec<CompatRecord> = compat::classify(m, &mut compat_created)
            .into_iter()
            .map(|b| CompatRecord {
                kind: b.kind.id().into(),
                line: b.line,
                object: b.object,
                message: b.message,
                advice: b.kind.advice().into(),
            })
            .collect();
        compat_created.extend(a.created.iter().cloned());
        created.extend(a.created.iter().cloned());
        let mut locks: Vec<&analyze::Lock> = a
            .locks
            .iter()
            .filter(|l| !created.contains(l.relation.key()))
            .collect();
        locks.sort_by_key(|l| std::cmp::Reverse(l.mode));
        let strongest = locks.first().map(|l| l.mode);
        let strongest_lock = strongest.map(|mode| {
            let mut names: Vec<String> = Vec::new();
            for l in locks.iter().filter(|l| l.mode == mode) {
                let n = if l.index {
                    format!("index {}", l.relation)
                } else {
                    l.relation.to_string()
                };
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            format!("{mode} on {}", names.join(", "))
        });
        let mut tables: Vec<TableRows> = Vec::new();
        if let Some(f) = facts {
            for l in locks.iter().filter(|l| !l.index) {
                if let Some(rows) = f.rows.get(l.relation.key())
                    && !tables.iter().any(|t| t.table == l.relation.to_string())
                {
                    tables.push(TableRows {
                        table: l.relation.to_string(),
                        rows: *rows,
                    });
                }
            }
        }
        let mut records: Vec<LockRecord> = a
            .locks
            .iter()
            .filter(|l| !created.contains(l.relation.key()))
            .map(|l| LockRecord {
                mode: l.mode.name().into(),
                relation: if l.index {
                    format!("index {}", l.relation)
                } else {
                    l.relation.to_string()
                },
                line: Some(l.line),
                created: false,
                renamed_to: None,
            })
            .collect();
        records.dedup();
        let mut warnings = Vec::new();
        for c in &a.candidates {
            if let Some(w) = warning(&c.finding, c.line, &created, facts, threshold) {
                warnings.push(w);
            }
        }
        for line in &a.opaque {
            warnings.push(RehearsalWarning {
                kind: "locks_not_derived".into(),
                line: *line,
                message: "a DO block or CALL: the locks it takes cannot be derived from its text; read it".into(),
            });
        }
        out.push(RehearsedFile {
            filename: m.filename.clone(),
            status: "pending".into(),
            transaction: !m.no_transaction,
            lock_source: "derived".into(),
            locks: records,
            strongest_lock,
            tables,
            warnings,
            compat,
            ..Default::default()
        });
    }
    out
}

fn rows_phrase(facts: Option<&Facts>, key: &str) -> String {
    match facts.and_then(|f| f.rows.get(key)) {
        Some(n) => format!(" ({} rows)", render::thousands(*n)),
        None => String::new(),
    }
}

/// A candidate that matters here, as a warning; `None` when the copy's data says it does
/// not (a table created in the change set, a small table, a CHECK that already proves it).
fn warning(
    f: &Finding,
    line: u32,
    created: &HashSet<String>,
    facts: Option<&Facts>,
    threshold: u64,
) -> Option<RehearsalWarning> {
    let (kind, message) = match f {
        Finding::VolatileDefault {
            table,
            column,
            what,
        } => {
            if created.contains(table.key()) {
                return None;
            }
            (
                "volatile_default",
                format!(
                    "adds column {column} to {table}{} with {what}: PostgreSQL rewrites the whole table and its indexes while \
                     holding ACCESS EXCLUSIVE (no reads, no writes); add the column without it, backfill in batches, then SET DEFAULT",
                    rows_phrase(facts, table.key())
                ),
            )
        }
        Finding::IndexNotConcurrent { table } => {
            if created.contains(table.key()) {
                return None;
            }
            let rows = facts.and_then(|f| f.rows.get(table.key()).copied())?;
            if (rows as u64) < threshold {
                return None;
            }
            (
                "index_not_concurrent",
                format!(
                    "CREATE INDEX on {table} ({} rows) without CONCURRENTLY holds a SHARE lock: writes to {table} wait for the \
                     whole build; use CREATE INDEX CONCURRENTLY in a `-- no-transaction` file",
                    render::thousands(rows)
                ),
            )
        }
        Finding::EnumValueInTransaction {
            type_name,
            value,
            added_line,
        } => (
            "enum_value_in_transaction",
            format!(
                "'{value}' is added to {type_name} at line {added_line} and used again in the same transaction: PostgreSQL \
                 refuses a new enum value before it commits (SQLSTATE 55P04, unsafe use of new value); use it in a later \
                 migration, or make this file `-- no-transaction`"
            ),
        ),
        Finding::SetNotNull { table, column } => {
            if created.contains(table.key())
                || facts.is_some_and(|f| {
                    f.checked
                        .contains(&(table.key().to_string(), column.clone()))
                })
            {
                return None;
            }
            (
                "set_not_null_without_check",
                format!(
                    "SET NOT NULL on {table}.{column} scans every row{} under ACCESS EXCLUSIVE; first ADD CONSTRAINT … \
                     CHECK ({column} IS NOT NULL) NOT VALID, VALIDATE it in a later migration, then SET NOT NULL (the scan is skipped)",
                    rows_phrase(facts, table.key())
                ),
            )
        }
    };
    Some(RehearsalWarning {
        kind: kind.into(),
        line,
        message,
    })
}

/// Warnings as annotations on the files (workflow commands inside GitHub Actions).
fn annotate(ctx: &Ctx<'_>, r: &Rehearsal) {
    let paths = ctx.paths.borrow();
    for f in &r.files {
        let path = paths
            .get(&f.filename)
            .cloned()
            .unwrap_or_else(|| f.filename.clone());
        for w in &f.warnings {
            tracing::warn!(
                file = path.as_str(),
                line = u64::from(w.line),
                "{}",
                w.message
            );
        }
        for l in f.lint.iter().filter(|l| l.suppressed.is_none()) {
            tracing::warn!(
                file = path.as_str(),
                line = u64::from(l.line),
                "squawk {}: {}",
                l.rule,
                l.message
            );
        }
    }
}

/// squawk's rules on the pending files with `[rehearse] lint`'s selection; with the copy's
/// facts, size-dependent findings are confirmed or suppressed by the tables' rows.
fn lint(
    ctx: &Ctx<'_>,
    analyses: &[(&Migration, FileAnalysis)],
    facts: Option<&Facts>,
) -> migrate::lint::Report {
    let paths: Vec<String> = analyses
        .iter()
        .map(|(m, _)| m.path.display().to_string())
        .collect();
    let files: Vec<migrate::lint::LintFile<'_>> = analyses
        .iter()
        .zip(&paths)
        .map(|((m, _), path)| migrate::lint::LintFile {
            filename: &m.filename,
            path,
            sql: &m.sql,
            transaction: !m.no_transaction,
        })
        .collect();
    let rows: Option<HashMap<String, u64>> = facts.map(|f| {
        f.rows
            .iter()
            .map(|(k, n)| (k.clone(), (*n).max(0) as u64))
            .collect()
    });
    migrate::lint::lint(
        &files,
        &migrate::lint::Context {
            rules: ctx.plan.lint_rules.clone(),
            rows: rows.as_ref(),
            large_table_rows: ctx.plan.file.large_table_rows,
        },
    )
}

fn attach_lint(files: &mut [RehearsedFile], report: &migrate::lint::Report) {
    for f in files {
        f.lint = report
            .findings
            .iter()
            .filter(|x| x.file == f.filename)
            .map(|x| LintRecord {
                line: x.line,
                column: x.column,
                rule: x.rule.clone(),
                message: x.message.clone(),
                help: x.help.clone(),
                table: x.table.clone(),
                rows: x.rows.clone(),
                suppressed: match &x.disposition {
                    migrate::lint::Disposition::Reported => None,
                    migrate::lint::Disposition::Suppressed { reason } => Some(reason.clone()),
                },
            })
            .collect();
    }
}

/// Replaces a file's derived locks with what its transaction held on the copy.
fn use_observed(f: &mut RehearsedFile, seen: &Value, catalog: &observe::Catalog, facts: &Facts) {
    let locks = observe::strongest_per_relation(seen, catalog);
    f.lock_source = "observed".into();
    f.strongest_lock = observe::strongest(&locks);
    f.locks = observe::records(&locks);
    f.tables = locks
        .iter()
        .filter(|l| !l.created)
        .filter_map(|l| {
            let table = l.table.as_ref()?;
            let rows = facts.rows.get(table.as_str()).copied().or(l.rows)?;
            Some(TableRows {
                table: l.relation.clone(),
                rows,
            })
        })
        .collect();
}

/// Records what `migrate apply` did on the copy; returns true when the rehearsal failed.
fn record_apply(
    ctx: &Ctx<'_>,
    analyses: &[(&Migration, FileAnalysis)],
    facts: &Facts,
    catalog: Option<&observe::Catalog>,
    applied: Result<Outcome, Error>,
    elapsed_ms: i64,
) -> bool {
    let mut files = describe(analyses, Some(facts), ctx.plan.file.large_table_rows);
    attach_lint(&mut files, &lint(ctx, analyses, Some(facts)));
    let (ok, mut json, err) = split(applied);
    let mut sum = 0i64;
    for a in json["applied"].as_array_mut().into_iter().flatten() {
        let name = a["filename"].as_str().unwrap_or_default().to_string();
        let ms = a["duration_ms"].as_i64().unwrap_or(0);
        sum += ms;
        // The observation is the rehearsal's, not the step's details.
        let observed = a.as_object_mut().and_then(|o| o.remove("observed"));
        if let Some(f) = files.iter_mut().find(|f| f.filename == name) {
            f.status = "applied".into();
            f.duration_ms = Some(ms);
            if let (Some(seen), Some(cat)) = (observed, catalog) {
                use_observed(f, &seen, cat, facts);
            }
        }
    }
    // Which pending file the error is about: its path names it.
    let failed_name = err.as_ref().and_then(|e| {
        let file = e.file.as_deref()?;
        let base = std::path::Path::new(file).file_name()?.to_str()?;
        files
            .iter()
            .any(|f| f.filename == base)
            .then(|| base.to_string())
    });
    let mut after_failure = false;
    for f in files.iter_mut() {
        if Some(&f.filename) == failed_name.as_ref() {
            let e = err.as_ref().expect("failed_name comes from the error");
            f.status = "failed".into();
            f.duration_ms = Some((elapsed_ms - sum).max(0));
            f.error = Some(FileError {
                message: e.message.clone(),
                line: e.line,
                column: e.column,
                code: e.code.clone(),
                hint: e.hint.clone(),
            });
            after_failure = true;
        } else if f.status == "pending" && (after_failure || !ok) {
            f.status = "not_run".into();
        }
    }
    let mut st = ctx.state.borrow_mut();
    // The copy's password may appear in an error from the server: scrub the lot.
    let mut value = serde_json::to_value(&files).unwrap_or(Value::Null);
    st.redactor.scrub_json(&mut value);
    let files: Vec<RehearsedFile> = serde_json::from_value(value).unwrap_or(files);
    let applied_n = files.iter().filter(|f| f.status == "applied").count();
    let r = rehearsal(&mut st);
    r.files = files;
    annotate(ctx, r);
    if ok {
        r.verdict = Verdict::Pass;
        r.reason = format!("{applied_n} file(s) applied");
        st.end(
            StepStatus::Ok,
            format!("{applied_n} applied on the copy"),
            json,
        );
        for f in &rehearsal(&mut st).files {
            tracing::info!(
                "rehearsed {} on the copy: {} ms, {}",
                f.filename,
                f.duration_ms.unwrap_or(0),
                f.strongest_lock
                    .as_deref()
                    .unwrap_or("no lock on existing tables")
            );
        }
        return false;
    }
    let e = err.unwrap_or_else(|| Error::failure("migrate apply failed on the copy"));
    st.fail(&e, json);
    let r = rehearsal(&mut st);
    if let Some(name) = failed_name {
        r.verdict = Verdict::Fail;
        r.reason = format!("{name} failed");
    } else {
        r.verdict = Verdict::Error;
        r.reason = e.message;
    }
    true
}

/// The migration files a pull request changes (GitHub's list), for a run that cannot read
/// the ledger; empty with a note when they cannot be listed.
async fn changed_files(ctx: &Ctx<'_>, dir: &std::path::Path) -> Vec<String> {
    let prs = ctx.state.borrow().log.context.pull_requests.clone();
    let Some(gh) = ctx.plan.github() else {
        note(ctx, "the changed files could not be listed: GITHUB_TOKEN, GITHUB_REPOSITORY or GITHUB_SHA is not set".into());
        return Vec::new();
    };
    // The directory as a path inside the repository (the workspace is its checkout).
    let base = ctx
        .plan
        .report
        .workspace
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    let abs = std::path::absolute(dir).unwrap_or(dir.to_path_buf());
    let base = std::path::absolute(&base).unwrap_or(base);
    let prefix = match abs.strip_prefix(&base) {
        Ok(rel) => format!("{}/", rel.display()),
        // Outside the checkout: match on the directory's own name.
        Err(_) => format!(
            "{}/",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    };
    let mut out = Vec::new();
    for pr in prs {
        match gh.pull_files(pr).await {
            Ok(files) => out.extend(
                files
                    .into_iter()
                    .filter(|(path, _)| {
                        path.ends_with(".sql")
                            && (path.starts_with(&prefix) || path.contains(&format!("/{prefix}")))
                    })
                    .map(|(path, status)| format!("{path} ({status})")),
            ),
            Err(e) => note(
                ctx,
                format!(
                    "the files of pull request #{pr} could not be listed: {}",
                    e.message
                ),
            ),
        }
    }
    out
}

/// Removes the copy (or keeps it with --keep) and records what became of it.
async fn clean_up(ctx: &Ctx<'_>) {
    let live = ctx.live.take();
    if live.neon.is_none() && live.scratch.is_none() {
        if let Some(dir) = &live.archive_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        return;
    }
    ctx.state.borrow_mut().begin("cleanup");
    let (disposition, error) = copy::cleanup(&live, ctx.plan.keep).await;
    let mut st = ctx.state.borrow_mut();
    let name = live
        .neon
        .as_ref()
        .map(|n| n.1.clone())
        .or_else(|| live.scratch.as_ref().map(|s| s.1.clone()))
        .unwrap_or_default();
    let r = rehearsal(&mut st);
    let record = r
        .copy
        .get_or_insert_with(|| crate::report::log::CopyRecord {
            provider: if live.neon.is_some() {
                "neon"
            } else {
                "pg_dump"
            }
            .into(),
            name: name.clone(),
            id: live.neon.as_ref().and_then(|n| n.2.clone()),
            ..Default::default()
        });
    record.disposition = disposition.clone();
    record.cleanup_error = error.clone();
    let summary = match (disposition.as_str(), &error) {
        ("kept", _) => {
            let how = match &record.expires_at {
                Some(at) => format!("it expires at {at}"),
                None => format!("drop it when done: DROP DATABASE \"{name}\" WITH (FORCE)"),
            };
            tracing::info!("kept the copy {name} (--keep); {how}");
            format!("kept {name} (--keep)")
        }
        (_, Some(e)) => {
            let e = Error::failure(format!("the copy {name} was not removed: {e}"));
            st.issue("cleanup", &e);
            e.message
        }
        _ => format!("{name} removed"),
    };
    let status = if error.is_some() {
        StepStatus::Failed
    } else {
        StepStatus::Ok
    };
    st.end(status, summary, Value::Null);
}

/// Writes the log everywhere (JSON, summary, the sticky comment, outputs) and builds the
/// command's result.
async fn finish(ctx: &Ctx<'_>) -> Result<Outcome, Error> {
    let mut log = {
        let mut st = ctx.state.borrow_mut();
        let verdict = rehearsal(&mut st).verdict;
        st.log.status = if verdict.ok() {
            Status::Success
        } else {
            Status::Failed
        };
        st.log.finished_at = Some(Utc::now().rfc3339());
        st.log.duration_ms = st.elapsed();
        st.log.clone()
    };
    let redactor = ctx.state.borrow().redactor.clone();
    let report = &ctx.plan.report;
    if report.pr_comment
        && let Some(gh) = ctx.plan.github()
    {
        pipeline::comment_on_prs(
            &gh,
            &mut log,
            render::comment,
            render::REHEARSAL_MARKER,
            &redactor,
        )
        .await;
    }
    // The summary's own render is chosen by the log's command (markdown::summary).
    pipeline::write_summary_and_log(
        &mut log,
        report,
        crate::report::markdown::summary,
        &redactor,
    );
    let log_path = &report.log;
    let r = log.rehearsal.clone().unwrap_or_default();
    if let Some(out) = &report.outputs {
        let kept = r
            .copy
            .as_ref()
            .filter(|c| c.disposition == "kept")
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let outputs = [
            ("status", r.verdict.label().to_string()),
            (
                "verdict",
                json!(r.verdict).as_str().unwrap_or_default().to_string(),
            ),
            (
                "pending",
                r.files
                    .iter()
                    .map(|f| f.filename.clone())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            (
                "failed-file",
                r.failed().map(|f| f.filename.clone()).unwrap_or_default(),
            ),
            ("copy", kept),
            ("log-path", report.for_later_steps(log_path)),
        ];
        let outputs: Vec<(&str, String)> = outputs
            .into_iter()
            .map(|(k, v)| (k, redactor.scrub(&v)))
            .collect();
        if let Err(e) = actions::write_outputs(out, &outputs) {
            tracing::warn!("{}", e.message);
        }
    }

    let mut text = render::text(&log);
    for o in &log.outputs {
        text.push_str(&format!("→ {o}\n"));
    }
    let mut doc = serde_json::Map::new();
    doc.insert("verdict".into(), json!(r.verdict));
    doc.insert(
        "rehearsal".into(),
        serde_json::to_value(&r).unwrap_or(Value::Null),
    );
    doc.insert("log".into(), json!(log_path.display().to_string()));
    let mut doc = Value::Object(doc);
    redactor.scrub_json(&mut doc);
    let Value::Object(doc) = doc else {
        unreachable!()
    };
    let mut out = Outcome::new(r.verdict.ok(), doc, redactor.scrub(&text));
    if !r.verdict.ok() {
        let mut e = match r.failed() {
            Some(f) => {
                let fe = f.error.clone().unwrap_or_default();
                let path = ctx
                    .paths
                    .borrow()
                    .get(&f.filename)
                    .cloned()
                    .unwrap_or_else(|| f.filename.clone());
                let mut e = Error::failure(format!("rehearsal FAILED: {}", fe.message)).file(path);
                e.line = fe.line;
                e.column = fe.column;
                e.code = fe.code;
                e.hint = fe.hint;
                e
            }
            None => Error::failure(format!("rehearsal {}: {}", r.verdict.label(), r.reason)),
        };
        redactor.scrub_error(&mut e);
        out.error = Some(e);
    }
    Ok(out)
}
