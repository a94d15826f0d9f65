//! Renderers of a rehearsal (`flightplan rehearse`): the sticky PR comment (with its own
//! marker, so it never replaces the deployment comment), the job summary and the terminal
//! text. Pure functions of the log, snapshot-tested.

use std::fmt::Write as _;

use super::log::{DeploymentLog, LockMode, Rehearsal, RehearsedFile, Verdict};
use super::markdown::{COMMENT_LIMIT, SUMMARY_LIMIT, cell, commit_link, duration, phases};

/// Hidden marker of the rehearsal comment; distinct from the deployment log's
/// (`markdown::COMMENT_MARKER`), so neither comment ever overwrites the other.
pub const REHEARSAL_MARKER: &str = "<!-- flightplan:rehearsal -->";

/// How many files a comment lists before it says "and N more".
const COMMENT_FILES: usize = 50;

/// `1204` → `1,204`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn location(f: &RehearsedFile) -> String {
    match f.error.as_ref().map(|e| (e.line, e.column)) {
        Some((Some(l), Some(c))) => format!("{}:{l}:{c}", f.filename),
        Some((Some(l), None)) => format!("{}:{l}", f.filename),
        _ => f.filename.clone(),
    }
}

/// The sentence a reviewer reads first, with the backward-compatibility class after it.
pub fn verdict_sentence(r: &Rehearsal) -> String {
    let mut s = outcome_sentence(r);
    match r.breaking() {
        0 => {}
        1 => s.push_str(
            " **1 change can break the version still serving** while the migration runs ahead of the deploy: see Backward compatibility.",
        ),
        n => s.push_str(&format!(
            " **{n} changes can break the version still serving** while the migration runs ahead of the deploy: see Backward compatibility."
        )),
    }
    match r.lint_findings() {
        0 => {}
        1 => s.push_str(" squawk reports 1 finding: see Lint."),
        n => s.push_str(&format!(" squawk reports {n} findings: see Lint.")),
    }
    s
}

fn outcome_sentence(r: &Rehearsal) -> String {
    let n = r.files.len();
    let copy = r
        .copy
        .as_ref()
        .map(|c| match c.provider.as_str() {
            "neon" => "a Neon branch of production".to_string(),
            _ => "a scratch database restored from a fresh pg_dump of production".to_string(),
        })
        .unwrap_or_else(|| "a copy of production".into());
    match r.verdict {
        Verdict::Pass => {
            let w = r.warnings();
            let warn = match w {
                0 => String::new(),
                1 => " Read the warning below before merging.".into(),
                _ => format!(" Read the {w} warnings below before merging."),
            };
            format!("All {n} pending migration(s) applied on {copy}, with production's data.{warn}")
        }
        Verdict::Fail => match r.failed() {
            Some(f) => format!(
                "`{}` fails on {copy}: it would fail the same way in production. Fix it before merging{}.",
                location(f),
                if r.files.iter().any(|f| f.status == "not_run") {
                    "; the files after it were not tried"
                } else {
                    ""
                }
            ),
            None => format!("The rehearsal failed: {}.", r.reason),
        },
        Verdict::Blocked => format!(
            "`flightplan migrate apply` would refuse to start: {}",
            r.reason
        ),
        Verdict::NothingPending => {
            "No pending migrations: production's ledger has every file applied.".into()
        }
        Verdict::PlanOnly => format!(
            "Not rehearsed: {}. The plan below was read from production's ledger.",
            r.reason
        ),
        Verdict::LedgerUnreadable => format!(
            "Not rehearsed, and production's ledger could not be read: {}. Which files are pending is not known.",
            r.reason
        ),
        Verdict::Error => format!("The rehearsal could not run: {}", r.reason),
        Verdict::Interrupted => format!("Interrupted: {}", r.reason),
    }
}

fn header(log: &DeploymentLog, r: &Rehearsal, out: &mut String) {
    let app = log.app.as_deref().unwrap_or("app");
    let _ = writeln!(
        out,
        "## {} Migration rehearsal {} — {app}\n\n{}\n",
        r.verdict.emoji(),
        r.verdict.label(),
        verdict_sentence(r)
    );
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(c) = commit_link(log) {
        rows.push(("Commit".into(), c));
    }
    if let Some(c) = &r.copy {
        let what = match c.provider.as_str() {
            "neon" => format!(
                "Neon branch `{}`{}{}",
                c.name,
                c.id.as_ref()
                    .map(|i| format!(" (`{i}`)"))
                    .unwrap_or_default(),
                c.parent
                    .as_ref()
                    .map(|p| format!(" of `{p}`"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "scratch database `{}`{}",
                c.name,
                c.parent
                    .as_ref()
                    .map(|p| format!(" restored from `{p}`"))
                    .unwrap_or_default()
            ),
        };
        let fate = match c.disposition.as_str() {
            "deleted" => "deleted".to_string(),
            "kept" => match &c.expires_at {
                Some(at) => format!("**kept** (--keep); Neon deletes it at {at}"),
                None => "**kept** (--keep); drop it when done".into(),
            },
            "not_deleted" => format!(
                "**not deleted**: {}{}",
                c.cleanup_error.as_deref().unwrap_or("cleanup failed"),
                c.expires_at
                    .as_ref()
                    .map(|at| format!("; Neon deletes it at {at}"))
                    .unwrap_or_default()
            ),
            other => other.to_string(),
        };
        rows.push(("Copy".into(), format!("{what}, {fate}")));
    }
    rows.push((
        "Time".into(),
        format!(
            "{} → {} ({})",
            log.started_at,
            log.finished_at.as_deref().unwrap_or("…"),
            duration(log.duration_ms)
        ),
    ));
    if let Some(run) = &log.context.run_url {
        rows.push(("Run".into(), format!("[logs]({run})")));
    }
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", cell(&v));
    }
    out.push('\n');
}

fn files(r: &Rehearsal, out: &mut String, limit: usize) {
    if r.files.is_empty() {
        return;
    }
    let rehearsed = r.files.iter().any(|f| f.status != "pending");
    let _ = writeln!(out, "### Pending migrations ({})\n", r.files.len());
    if rehearsed {
        out.push_str("| # | File | Result | Time on the copy | Strongest lock | Rows |\n|---|---|---|---|---|---|\n");
    } else {
        out.push_str("| # | File | Transaction | Strongest lock |\n|---|---|---|---|\n");
    }
    for (i, f) in r.files.iter().enumerate().take(limit) {
        let mut lock = f
            .strongest_lock
            .clone()
            .unwrap_or_else(|| "none on existing tables".into());
        if rehearsed && f.lock_source != "observed" {
            lock.push_str(" (derived)");
        }
        if !rehearsed {
            let _ = writeln!(
                out,
                "| {} | `{}` | {} | {} |",
                i + 1,
                cell(&f.filename),
                if f.transaction {
                    "yes"
                } else {
                    "no (`-- no-transaction`)"
                },
                cell(&lock)
            );
            continue;
        }
        let result = match f.status.as_str() {
            "applied" => "✅ applied".to_string(),
            "failed" => match f.error.as_ref().and_then(|e| e.line) {
                Some(l) => format!("❌ failed at line {l}"),
                None => "❌ failed".into(),
            },
            "not_run" => "⏭️ not run".into(),
            other => other.to_string(),
        };
        let time = f
            .duration_ms
            .map(|ms| duration(ms.max(0) as u64))
            .unwrap_or_default();
        let rows = f
            .tables
            .iter()
            .map(|t| t.rows)
            .max()
            .map(thousands)
            .unwrap_or_default();
        let ran = f.status != "not_run";
        let _ = writeln!(
            out,
            "| {} | `{}` | {result} | {time} | {} | {rows} |",
            i + 1,
            cell(&f.filename),
            if ran { cell(&lock) } else { String::new() },
        );
    }
    if r.files.len() > limit {
        let _ = writeln!(out, "| | … and {} more | | | | |", r.files.len() - limit);
    }
    out.push('\n');
    // What the modes shown mean for the app while the file runs.
    let mut modes: Vec<LockMode> = r
        .files
        .iter()
        .filter_map(|f| f.strongest_lock.as_deref())
        .filter_map(|l| LockMode::from_name(l.split(" on ").next().unwrap_or("")))
        .collect();
    modes.sort();
    modes.dedup();
    if !modes.is_empty() {
        let legend: Vec<String> = modes
            .iter()
            .rev()
            .map(|m| format!("{m}: {}", m.blocks()))
            .collect();
        let _ = writeln!(out, "<sub>{}.</sub>\n", legend.join("; "));
    }
    if rehearsed
        && r.files
            .iter()
            .any(|f| f.status != "not_run" && f.lock_source != "observed")
    {
        out.push_str(
            "<sub>(derived): derived from the SQL, not observed: a `-- no-transaction` file runs each statement on its own, \
             holding its lock only for that statement, and a failed file's transaction never reached its commit.</sub>\n\n",
        );
    }
}

/// Every lock per relation, per file: observed ones as `pg_locks` showed them, relations
/// created in the change set marked as such.
fn locks(r: &Rehearsal, out: &mut String, folded: bool) {
    let any = r
        .files
        .iter()
        .any(|f| f.status != "not_run" && !f.locks.is_empty());
    if !any {
        return;
    }
    if folded {
        out.push_str("<details><summary>Locks per table</summary>\n\n");
    } else {
        out.push_str("### Locks per table\n\n");
    }
    for f in r.files.iter().filter(|f| f.status != "not_run") {
        if f.locks.is_empty() {
            continue;
        }
        let how = if f.lock_source == "observed" {
            "observed in pg_locks before its commit"
        } else {
            "derived from the SQL, not observed"
        };
        let mut existing: Vec<String> = Vec::new();
        let mut created: Vec<String> = Vec::new();
        for l in &f.locks {
            let mut name = l.relation.clone();
            if let Some(to) = &l.renamed_to {
                name.push_str(&format!(" (renamed to {to})"));
            }
            let item = format!("{} on {name}", l.mode);
            let list = if l.created {
                &mut created
            } else {
                &mut existing
            };
            if !list.contains(&item) {
                list.push(item);
            }
        }
        let _ = writeln!(out, "- `{}` ({how}):", cell(&f.filename));
        if !existing.is_empty() {
            let _ = writeln!(out, "  - {}", existing.join("; "));
        }
        if !created.is_empty() {
            let _ = writeln!(
                out,
                "  - created in this change set (harmless, nobody uses them yet): {}",
                created.join("; ")
            );
        }
    }
    out.push('\n');
    if folded {
        out.push_str("</details>\n\n");
    }
}

/// What can break the version still serving, and the two-step way for each.
fn compatibility(r: &Rehearsal, out: &mut String) {
    let n = r.breaking();
    if n == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "### Backward compatibility ({n})\n\n\
         Migrations run before the new image rolls out: for minutes, the version serving now runs against the new \
         schema. These changes can break it. Make each in two steps: **expand** (a change both versions work with), \
         deploy, then **contract** in a later migration.\n"
    );
    for f in &r.files {
        for c in &f.compat {
            let _ = writeln!(
                out,
                "- `{}:{}`: {}.\n  - Two steps: {}.",
                f.filename, c.line, c.message, c.advice
            );
        }
    }
    out.push('\n');
}

fn failure(r: &Rehearsal, out: &mut String) {
    let Some(f) = r.failed() else { return };
    let Some(e) = &f.error else { return };
    let _ = writeln!(out, "### Failure\n\n**`{}`**: {}", location(f), e.message);
    if let Some(h) = &e.hint {
        let _ = writeln!(out, "\n> hint: {h}");
    }
    out.push('\n');
}

fn warnings(r: &Rehearsal, out: &mut String) {
    let n = r.warnings();
    if n == 0 {
        return;
    }
    let _ = writeln!(out, "### Warnings ({n})\n");
    for f in &r.files {
        for w in &f.warnings {
            let _ = writeln!(out, "- `{}:{}`: {}", f.filename, w.line, w.message);
        }
    }
    out.push('\n');
}

/// Rules whose findings flightplan's engine makes moot in every file: one line, not a list.
const SET_BY_FLIGHTPLAN: &[&str] = &["require-lock-timeout", "require-statement-timeout"];

/// squawk's findings: the reported ones with their help, the suppressed ones folded with
/// the reason flightplan's context gives.
fn lint(r: &Rehearsal, out: &mut String, limit: usize) {
    let Some(version) = &r.squawk else { return };
    let n = r.lint_findings();
    let _ = writeln!(
        out,
        "### Lint: squawk {version} ({n})
"
    );
    let mut shown = 0;
    for f in &r.files {
        for l in f.lint.iter().filter(|l| l.suppressed.is_none()) {
            shown += 1;
            if shown > limit {
                continue;
            }
            let _ = writeln!(
                out,
                "- `{}:{}` **{}**: {}",
                f.filename, l.line, l.rule, l.message
            );
            if let Some(rows) = &l.rows {
                let _ = writeln!(out, "  - rows: {rows}");
            }
            if let Some(h) = &l.help {
                let _ = writeln!(out, "  - help: {h}");
            }
        }
    }
    if shown > limit {
        let _ = writeln!(out, "- … and {} more", shown - limit);
    }
    if n == 0 {
        out.push_str(
            "No findings on the pending files.
",
        );
    }
    let mut timeouts = 0;
    let mut suppressed: Vec<String> = Vec::new();
    for f in &r.files {
        for l in &f.lint {
            let Some(why) = &l.suppressed else { continue };
            if SET_BY_FLIGHTPLAN.contains(&l.rule.as_str()) {
                timeouts += 1;
            } else {
                suppressed.push(format!("- `{}:{}` {}: {why}", f.filename, l.line, l.rule));
            }
        }
    }
    if !suppressed.is_empty() || timeouts > 0 {
        let _ = writeln!(
            out,
            "\n<details><summary>Suppressed by flightplan's context ({})</summary>\n",
            suppressed.len() + timeouts
        );
        for line in suppressed.iter().take(limit) {
            let _ = writeln!(out, "{line}");
        }
        if suppressed.len() > limit {
            let _ = writeln!(out, "- … and {} more", suppressed.len() - limit);
        }
        if timeouts > 0 {
            let _ = writeln!(
                out,
                "- {timeouts} × require-lock-timeout/require-statement-timeout: flightplan runs every file with \
                 `SET LOCAL lock_timeout` and `statement_timeout` (`[migrate] lock_timeout`, `statement_timeout`)"
            );
        }
        out.push_str("\n</details>\n");
    }
    out.push('\n');
}

fn drift(r: &Rehearsal, out: &mut String) {
    match (&r.drift, &r.drift_error) {
        (Some(d), _) if d.is_empty() => out.push_str(
            "### Drift\n\nNone: after the pending files, the copy's schema is exactly what the migration files build.\n\n",
        ),
        (Some(d), _) => {
            let _ = writeln!(
                out,
                "### Drift ({})\n\nThe copy (production plus the pending files) differs from what the migration files build: \
                 something changed production's schema outside migrations.\n\n| Kind | Object | Files | Database |\n|---|---|---|---|",
                d.len()
            );
            let clip = |s: &Option<String>| match s {
                None => "—".to_string(),
                Some(s) if s.chars().count() > 80 => {
                    format!("`{}…`", s.chars().take(80).collect::<String>())
                }
                Some(s) => format!("`{s}`"),
            };
            for x in d.iter().take(30) {
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} | {} |",
                    x.kind,
                    cell(&x.object),
                    cell(&clip(&x.expected)),
                    cell(&clip(&x.actual))
                );
            }
            out.push('\n');
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "### Drift\n\nNot checked: {e}\n");
        }
        (None, None) => {}
    }
}

fn changed(r: &Rehearsal, out: &mut String) {
    if r.verdict != Verdict::LedgerUnreadable {
        return;
    }
    if r.changed_files.is_empty() {
        out.push_str(
            "No migration file is changed by this pull request, as far as could be listed.\n\n",
        );
        return;
    }
    let _ = writeln!(
        out,
        "### Migration files this pull request changes ({})\n",
        r.changed_files.len()
    );
    for f in &r.changed_files {
        // Stored as `path (status)`.
        match f.rsplit_once(" (") {
            Some((path, status)) => {
                let _ = writeln!(out, "- `{path}` ({status}");
            }
            None => {
                let _ = writeln!(out, "- `{f}`");
            }
        }
    }
    out.push('\n');
}

fn notes(r: &Rehearsal, out: &mut String) {
    if r.notes.is_empty() {
        return;
    }
    out.push_str("### Notes\n\n");
    for n in &r.notes {
        let _ = writeln!(out, "- {n}");
    }
    out.push('\n');
}

fn footer(r: Option<&Rehearsal>, out: &mut String) {
    let what = match r.map(|r| r.verdict) {
        Some(Verdict::LedgerUnreadable) => {
            "Listed by flightplan from the pull request's files; nothing was read or run"
        }
        Some(Verdict::PlanOnly | Verdict::NothingPending | Verdict::Blocked) => {
            "Planned by flightplan from production's ledger (read-only); nothing was run"
        }
        _ => {
            "Rehearsed by flightplan on a short-lived copy of production; production was only read"
        }
    };
    let locks = if r.is_some_and(|r| r.files.iter().any(|f| f.lock_source == "observed")) {
        "Locks are observed: read from pg_locks inside each file's transaction on the copy, just before its commit \
         (all are held until then), the strongest per relation; (derived) ones come from each statement's kind"
    } else {
        "Locks are derived from each statement's kind (PostgreSQL's documented lock per command), on tables that \
         exist before these files"
    };
    let _ = writeln!(out, "<sub>{what}. {locks}.</sub>");
}

fn body(log: &DeploymentLog, r: &Rehearsal, out: &mut String, limit: usize) {
    header(log, r, out);
    failure(r, out);
    files(r, out, limit);
    compatibility(r, out);
    // The comment folds the per-table detail; the summary shows it open.
    locks(r, out, limit != usize::MAX);
    warnings(r, out);
    lint(r, out, limit);
    changed(r, out);
    drift(r, out);
    notes(r, out);
}

/// The sticky PR comment: updated in place on every push, found by [`REHEARSAL_MARKER`].
pub fn comment(log: &DeploymentLog) -> String {
    let mut out = String::new();
    if let Some(r) = &log.rehearsal {
        body(log, r, &mut out, COMMENT_FILES);
    }
    footer(log.rehearsal.as_ref(), &mut out);
    let room = COMMENT_LIMIT - REHEARSAL_MARKER.len() - 100;
    if out.len() > room {
        let mut cut = room;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n\n_(trimmed; see the job summary)_\n");
    }
    out.push_str(REHEARSAL_MARKER);
    out.push('\n');
    out
}

/// The job summary: the comment's content, every file, and the phases with their times.
pub fn summary(log: &DeploymentLog) -> String {
    let mut out = String::new();
    if let Some(r) = &log.rehearsal {
        body(log, r, &mut out, usize::MAX);
    }
    phases(log, &mut out);
    if !log.issues.is_empty() {
        out.push_str("### Issues\n\n");
        for i in &log.issues {
            let at = i
                .location
                .as_ref()
                .map(|l| format!(" (`{l}`)"))
                .unwrap_or_default();
            let _ = writeln!(out, "- **{}**: {}{at}", i.step, i.message);
            if let Some(h) = &i.hint {
                let _ = writeln!(out, "  - hint: {h}");
            }
        }
        out.push('\n');
    }
    footer(log.rehearsal.as_ref(), &mut out);
    if out.len() > SUMMARY_LIMIT {
        let mut cut = SUMMARY_LIMIT - 200;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n\n_(trimmed: the full log is in the JSON file)_\n");
    }
    out
}

/// What the terminal shows (stdout, `--format text`).
pub fn text(log: &DeploymentLog) -> String {
    let Some(r) = &log.rehearsal else {
        return String::new();
    };
    let mut t = format!(
        "Rehearsal {}: {}\n",
        r.verdict.label(),
        verdict_sentence(r).replace('`', "").replace("**", "")
    );
    let width = r.files.iter().map(|f| f.filename.len()).max().unwrap_or(0);
    for f in &r.files {
        let time = f
            .duration_ms
            .map(|ms| duration(ms.max(0) as u64))
            .unwrap_or_default();
        let lock = if f.status == "not_run" {
            String::new()
        } else {
            f.strongest_lock.clone().unwrap_or_default()
        };
        let _ = writeln!(
            t,
            "  {:<8} {:<width$}  {time:>8}  {lock}",
            f.status.replace('_', " "),
            f.filename
        );
        if let Some(e) = &f.error {
            let _ = writeln!(t, "           {}: {}", location(f), e.message);
        }
        for w in &f.warnings {
            let _ = writeln!(t, "  warning  {}:{}: {}", f.filename, w.line, w.message);
        }
        for c in &f.compat {
            let _ = writeln!(
                t,
                "  breaks the running version  {}:{}: {}; two steps: {}",
                f.filename, c.line, c.message, c.advice
            );
        }
        for l in f.lint.iter().filter(|l| l.suppressed.is_none()) {
            let _ = writeln!(
                t,
                "  squawk   {}:{}: {}: {}",
                f.filename, l.line, l.rule, l.message
            );
        }
    }
    for f in &r.changed_files {
        let _ = writeln!(t, "  changed  {f}");
    }
    if let Some(c) = &r.copy {
        let _ = writeln!(
            t,
            "Copy: {} {} {}{}",
            if c.provider == "neon" {
                "Neon branch"
            } else {
                "scratch database"
            },
            c.name,
            c.disposition.replace('_', " "),
            c.cleanup_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    for n in &r.notes {
        let _ = writeln!(t, "note: {n}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::super::log::*;
    use super::*;

    fn base(verdict: Verdict) -> DeploymentLog {
        let mut log = DeploymentLog::new("rehearse", "production", "2026-11-27T05:30:04Z".into());
        log.app = Some("secure2send".into());
        log.status = if verdict.ok() {
            Status::Success
        } else {
            Status::Failed
        };
        log.finished_at = Some("2026-11-27T05:30:19Z".into());
        log.duration_ms = 15_200;
        log.context = Context {
            repository: Some("acme/secure2send".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            trigger: Some("pull_request".into()),
            actor: Some("jdugard".into()),
            run_url: Some("https://github.com/acme/secure2send/actions/runs/42".into()),
            pull_requests: vec![12],
        };
        log
    }

    fn applied(name: &str, ms: i64, lock: &str, rows: i64) -> RehearsedFile {
        let (mode, on) = lock.split_once(" on ").unwrap();
        RehearsedFile {
            filename: name.into(),
            status: "applied".into(),
            transaction: true,
            duration_ms: Some(ms),
            lock_source: "observed".into(),
            locks: on
                .split(", ")
                .map(|rel| LockRecord {
                    mode: mode.into(),
                    relation: rel.into(),
                    line: None,
                    created: false,
                    renamed_to: None,
                })
                .collect(),
            strongest_lock: Some(lock.into()),
            tables: vec![TableRows {
                table: lock.rsplit(' ').next().unwrap().into(),
                rows,
            }],
            ..Default::default()
        }
    }

    fn copy(disposition: &str) -> CopyRecord {
        CopyRecord {
            provider: "neon".into(),
            name: "flightplan/rehearse/pr-12-20261127T053004Z".into(),
            id: Some("br-rehearse-42".into()),
            parent: Some("main".into()),
            expires_at: Some("2026-11-27T06:30:04Z".into()),
            disposition: disposition.into(),
            cleanup_error: None,
        }
    }

    fn failing() -> DeploymentLog {
        let mut log = base(Verdict::Fail);
        let mut failed = applied(
            "021_require_phone.sql",
            840,
            "ACCESS EXCLUSIVE on users",
            120_000,
        );
        failed.status = "failed".into();
        // A failed file's transaction never reached its commit: derived.
        failed.lock_source = "derived".into();
        failed.locks[0].line = Some(3);
        failed.warnings.push(RehearsalWarning {
            kind: "set_not_null_without_check".into(),
            line: 3,
            message: "SET NOT NULL on users.phone scans all 120,000 rows under ACCESS EXCLUSIVE"
                .into(),
        });
        failed.lint.push(LintRecord {
            line: 3,
            column: 1,
            rule: "adding-required-field".into(),
            message: "Adding a new column that is `NOT NULL` and has no default value to an existing table effectively makes it required.".into(),
            help: Some("Make the field nullable or add a non-VOLATILE DEFAULT".into()),
            table: Some("users".into()),
            rows: Some("120000 on the copy (users)".into()),
            suppressed: None,
        });
        failed.lint.push(LintRecord {
            line: 3,
            column: 1,
            rule: "require-lock-timeout".into(),
            message: "Missing `set lock_timeout` before potentially slow operations".into(),
            suppressed: Some("flightplan runs every file with SET LOCAL lock_timeout".into()),
            ..Default::default()
        });
        failed.error = Some(FileError {
            message: "021_require_phone.sql failed: column \"phone\" of relation \"users\" contains null values (SQLSTATE 23502)".into(),
            line: Some(3),
            column: Some(1),
            code: Some("23502".into()),
            hint: Some("existing rows violate the change: fix the data in an earlier migration, then re-run".into()),
        });
        let mut notes = applied(
            "020_add_agent_notes.sql",
            12,
            "SHARE ROW EXCLUSIVE on users, merchant_applications",
            120_000,
        );
        notes.locks.insert(
            0,
            LockRecord {
                mode: "ACCESS EXCLUSIVE".into(),
                relation: "agent_notes".into(),
                line: None,
                created: true,
                renamed_to: None,
            },
        );
        log.rehearsal = Some(Rehearsal {
            verdict: Verdict::Fail,
            reason: "021_require_phone.sql failed".into(),
            copy: Some(copy("deleted")),
            files: vec![
                notes,
                failed,
                RehearsedFile {
                    filename: "022_later.sql".into(),
                    status: "not_run".into(),
                    transaction: true,
                    strongest_lock: Some("ROW EXCLUSIVE on users".into()),
                    ..Default::default()
                },
            ],
            large_table_rows: 100_000,
            squawk: Some("2.68.0".into()),
            ..Default::default()
        });
        log
    }

    #[test]
    fn comment_of_a_failing_rehearsal() {
        let c = comment(&failing());
        assert!(c.trim_end().ends_with(REHEARSAL_MARKER));
        assert!(!c.contains(super::super::markdown::COMMENT_MARKER));
        insta::assert_snapshot!(c);
    }

    #[test]
    fn summary_of_a_passing_rehearsal() {
        let mut log = base(Verdict::Pass);
        let mut index = applied(
            "021_index_users_phone.sql",
            1_450,
            "SHARE on users",
            120_000,
        );
        index.lint.push(LintRecord {
            line: 2,
            column: 1,
            rule: "require-concurrent-index-creation".into(),
            message: "During normal index creation, table updates are blocked, but reads are still allowed.".into(),
            help: Some("Use `concurrently` to avoid blocking writes.".into()),
            table: Some("users".into()),
            rows: Some("120000 on the copy (users)".into()),
            suppressed: None,
        });
        index.warnings.push(RehearsalWarning {
            kind: "index_not_concurrent".into(),
            line: 2,
            message: "CREATE INDEX on users (120,000 rows) without CONCURRENTLY blocks writes to users while it builds".into(),
        });
        let mut rename = applied(
            "022_rename_invites.sql",
            8,
            "ACCESS EXCLUSIVE on invitation_codes",
            310,
        );
        rename.locks[0].renamed_to = Some("invites".into());
        rename.compat.push(CompatRecord {
            kind: "rename_table".into(),
            line: 1,
            object: "invitation_codes".into(),
            message: "renames table invitation_codes to invites: the running version still uses the old name, and its queries fail".into(),
            advice: "expand: rename it and, in the same migration, `CREATE VIEW old_name AS SELECT * FROM new_name` (a simple view is updatable), then deploy code that uses the new name; contract: drop the view in a later migration".into(),
        });
        let mut drop = applied(
            "023_drop_phone.sql",
            5,
            "ACCESS EXCLUSIVE on users",
            120_000,
        );
        drop.lint.push(LintRecord {
            line: 2,
            column: 1,
            rule: "ban-drop-column".into(),
            message: "Dropping a column may break existing clients.".into(),
            table: Some("users".into()),
            ..Default::default()
        });
        drop.compat.push(CompatRecord {
            kind: "drop_column".into(),
            line: 2,
            object: "users.phone".into(),
            message: "drops column users.phone: the running version's queries that name it fail (column does not exist)".into(),
            advice: "contract only, one release later: first deploy code that no longer reads or writes the column (remove it from the ORM's schema too), then drop it in a later migration".into(),
        });
        let concurrent = RehearsedFile {
            filename: "024_index_concurrently.sql".into(),
            status: "applied".into(),
            transaction: false,
            duration_ms: Some(2_300),
            lock_source: "derived".into(),
            locks: vec![LockRecord {
                mode: "SHARE UPDATE EXCLUSIVE".into(),
                relation: "users".into(),
                line: Some(2),
                created: false,
                renamed_to: None,
            }],
            strongest_lock: Some("SHARE UPDATE EXCLUSIVE on users".into()),
            ..Default::default()
        };
        log.rehearsal = Some(Rehearsal {
            verdict: Verdict::Pass,
            copy: Some(copy("deleted")),
            files: vec![
                {
                    let mut f = applied(
                        "020_add_current_step.sql",
                        35,
                        "ACCESS EXCLUSIVE on merchant_applications",
                        4_210,
                    );
                    f.lint.push(LintRecord {
                        line: 1,
                        column: 1,
                        rule: "adding-field-with-default".into(),
                        message: "Adding a generated column requires a table rewrite with an `ACCESS EXCLUSIVE` lock.".into(),
                        table: Some("merchant_applications".into()),
                        rows: Some("4210 on the copy (merchant_applications)".into()),
                        suppressed: Some("merchant_applications has 4210 rows on the copy, under [rehearse] large_table_rows = 100000".into()),
                        ..Default::default()
                    });
                    f
                },
                index,
                rename,
                drop,
                concurrent,
            ],
            drift: Some(Vec::new()),
            large_table_rows: 100_000,
            squawk: Some("2.68.0".into()),
            ..Default::default()
        });
        let step = |name: &str, started_ms, duration_ms, summary: &str| Step {
            name: name.into(),
            status: StepStatus::Ok,
            started_ms,
            duration_ms,
            summary: summary.into(),
            details: serde_json::Value::Null,
        };
        log.steps = vec![
            step("plan", 0, 120, "2 pending"),
            step(
                "copy",
                120,
                9_800,
                "Neon branch flightplan/rehearse/pr-12-20261127T053004Z",
            ),
            step("rehearse", 9_920, 1_510, "2 applied"),
            step("drift", 11_430, 3_100, "no drift"),
            step("cleanup", 14_530, 670, "branch deleted"),
        ];
        insta::assert_snapshot!(summary(&log));
        // `report --log` on a rehearsal's log renders the same summary.
        assert_eq!(super::super::markdown::summary(&log), summary(&log));
    }

    #[test]
    fn comment_of_a_fork_without_secrets() {
        let mut log = base(Verdict::PlanOnly);
        log.rehearsal = Some(Rehearsal {
            verdict: Verdict::PlanOnly,
            reason: "NEON_API_KEY is not available to this workflow (pull requests from forks get no secrets)".into(),
            files: vec![RehearsedFile {
                filename: "021_require_phone.sql".into(),
                status: "pending".into(),
                transaction: true,
                strongest_lock: Some("ACCESS EXCLUSIVE on users".into()),
                lint: vec![LintRecord {
                    line: 3,
                    column: 1,
                    rule: "adding-required-field".into(),
                    message: "Adding a new column that is `NOT NULL` and has no default value to an existing table effectively makes it required.".into(),
                    table: Some("users".into()),
                    rows: Some("unconfirmed: no copy".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            squawk: Some("2.68.0".into()),
            ..Default::default()
        });
        let plan_only = comment(&log);
        log.rehearsal = Some(Rehearsal {
            verdict: Verdict::LedgerUnreadable,
            reason: "DATABASE_URL is not available to this workflow (pull requests from forks get no secrets)".into(),
            changed_files: vec!["migrations/021_require_phone.sql (added)".into()],
            ..Default::default()
        });
        let unreadable = comment(&log);
        insta::assert_snapshot!(format!("{plan_only}\n---\n\n{unreadable}"));
    }

    #[test]
    fn terminal_text_names_the_failure_and_the_copy() {
        let t = text(&failing());
        assert!(
            t.starts_with("Rehearsal FAILED: 021_require_phone.sql:3:1 fails"),
            "{t}"
        );
        assert!(t.contains("  not run  022_later.sql"), "{t}");
        assert!(
            t.contains("  squawk   021_require_phone.sql:3: adding-required-field: "),
            "{t}"
        );
        assert!(!t.contains("require-lock-timeout"), "{t}");
        assert!(
            t.contains("Copy: Neon branch flightplan/rehearse/pr-12-20261127T053004Z deleted"),
            "{t}"
        );
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
