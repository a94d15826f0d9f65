//! Renderers of the deployment log: the job summary, the sticky PR comment and the
//! runbook's plain-text template. Pure functions of the log, snapshot-tested.

use std::fmt::Write as _;

use super::log::{DeploymentLog, Status, StepStatus};

/// Hidden marker that identifies flightplan's sticky comment (and only it).
pub const COMMENT_MARKER: &str = "<!-- flightplan:deployment-log -->";
/// GitHub rejects step summaries over 1 MiB.
pub const SUMMARY_LIMIT: usize = 1024 * 1024;
/// GitHub's comment body limit is 65,536 characters; stay clear of it.
pub const COMMENT_LIMIT: usize = 65_000;

pub(super) fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

pub(super) fn short_sha(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

/// Table cells cannot hold a pipe or a newline.
pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn header(log: &DeploymentLog, out: &mut String) {
    let app = log.app.as_deref().unwrap_or("app");
    let _ = writeln!(
        out,
        "## {} Deployment {} — {app} ({})\n",
        log.status.emoji(),
        log.status.label(),
        log.environment
    );
    let mut rows: Vec<(String, String)> = Vec::new();
    if let Some(commit) = commit_link(log) {
        rows.push(("Commit".into(), commit));
    }
    if let Some(img) = &log.image {
        let was = log
            .previous_image()
            .map(|p| format!(" (was `{p}`)"))
            .unwrap_or_default();
        rows.push(("Image".into(), format!("`{img}`{was}")));
    }
    if let Some(t) = &log.context.trigger {
        let by = log
            .context
            .actor
            .as_ref()
            .map(|a| format!(" by @{a}"))
            .unwrap_or_default();
        rows.push(("Trigger".into(), format!("{t}{by}")));
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
    if let Some(b) = &log.backup {
        let name = b
            .name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        rows.push(("Backup".into(), format!("{} `{}`{name}", b.provider, b.id)));
    }
    if let Some(u) = &log.app_url {
        rows.push(("App".into(), u.clone()));
    }
    if let Some(r) = &log.context.run_url {
        rows.push(("Run".into(), format!("[logs]({r})")));
    }
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", cell(&v));
    }
    out.push('\n');
}

/// The commit as a link to it on the server the run is on, or as plain text.
pub(super) fn commit_link(log: &DeploymentLog) -> Option<String> {
    let c = log.context.commit.as_ref()?;
    Some(match (&log.context.repository, &log.context.run_url) {
        (Some(repo), Some(run)) => {
            let server = run.split("/").take(3).collect::<Vec<_>>().join("/");
            format!("[`{}`]({server}/{repo}/commit/{c})", short_sha(c))
        }
        _ => format!("`{}`", short_sha(c)),
    })
}

pub(super) fn phases(log: &DeploymentLog, out: &mut String) {
    out.push_str("### Phases\n\n| Phase | Status | Time | Summary |\n|---|---|---|---|\n");
    for s in &log.steps {
        let _ = writeln!(
            out,
            "| {} | {} {:?} | {} | {} |",
            s.name,
            s.status.mark(),
            s.status,
            duration(s.duration_ms),
            cell(&s.summary)
        );
    }
    out.push('\n');
}

/// The plan, phase by phase, then the files and machines it touches: a dry run's result.
pub fn plan(p: &crate::report::log::PlanRecord) -> String {
    let mut out = format!("### Plan ({})\n\n", p.mode);
    for (i, ph) in p.phases.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}. **{}**: {}{}",
            i + 1,
            ph.name,
            if ph.runs { "" } else { "_left out_: " },
            ph.what
        );
        for d in &ph.details {
            let _ = writeln!(out, "   - {d}");
        }
    }
    out.push('\n');
    match &p.pending {
        Some(files) if files.is_empty() => out.push_str("No pending migration files.\n\n"),
        Some(files) => {
            out.push_str("| # | Pending file | Mode | Checksum |\n|---|---|---|---|\n");
            for (i, f) in files.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} | `{}` |",
                    i + 1,
                    f.filename,
                    if f.transaction {
                        "transaction"
                    } else {
                        "no-transaction"
                    },
                    f.checksum.get(..12).unwrap_or(&f.checksum)
                );
            }
            out.push('\n');
        }
        None => {}
    }
    if !p.machines.is_empty() {
        out.push_str("| Machine | Region | Image now | Batch |\n|---|---|---|---|\n");
        for m in &p.machines {
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}` | {} |",
                m.id,
                m.region.as_deref().unwrap_or(""),
                m.image.as_deref().unwrap_or("?"),
                m.batch
                    .map_or_else(|| "already on it".to_string(), |b| b.to_string())
            );
        }
        out.push('\n');
    }
    if !p.unplanned.is_empty() {
        out.push_str("**Not planned:**\n");
        for u in &p.unplanned {
            let _ = writeln!(out, "- {u}");
        }
        out.push('\n');
    }
    out
}

/// A Mermaid gantt chart of the phases: where the time went, at a glance.
pub fn timeline(log: &DeploymentLog) -> String {
    let mut out = String::from(
        "```mermaid\ngantt\n    title Deployment timeline\n    dateFormat x\n    axisFormat %M:%S\n    section Phases\n",
    );
    for (i, s) in log.steps.iter().enumerate() {
        let tag = match s.status {
            StepStatus::Ok => "done",
            StepStatus::Failed | StepStatus::Interrupted => "crit",
            StepStatus::Skipped | StepStatus::Planned => continue,
        };
        // Zero-length tasks vanish: give every phase at least a visible sliver.
        let end = s.started_ms + s.duration_ms.max(1);
        let _ = writeln!(out, "    {} :{tag}, p{i}, {}, {end}", s.name, s.started_ms);
    }
    out.push_str("```\n");
    out
}

fn migrations(log: &DeploymentLog, out: &mut String, limit: usize) {
    if log.migrations_applied.is_empty() && log.migrations_pending.is_empty() {
        return;
    }
    if !log.migrations_applied.is_empty() {
        let _ = writeln!(
            out,
            "### Migrations applied ({})\n\n| File | Time |\n|---|---|",
            log.migrations_applied.len()
        );
        for m in log.migrations_applied.iter().take(limit) {
            let _ = writeln!(
                out,
                "| `{}` | {} |",
                cell(&m.filename),
                duration(m.duration_ms.max(0) as u64)
            );
        }
        if log.migrations_applied.len() > limit {
            let _ = writeln!(
                out,
                "| … and {} more | |",
                log.migrations_applied.len() - limit
            );
        }
        out.push('\n');
    }
    if !log.migrations_pending.is_empty() {
        let _ = writeln!(
            out,
            "### Migrations pending ({})\n",
            log.migrations_pending.len()
        );
        for f in log.migrations_pending.iter().take(limit) {
            let _ = writeln!(out, "- `{f}`");
        }
        out.push('\n');
    }
}

fn drift(log: &DeploymentLog, out: &mut String, limit: usize) {
    if log.drift.is_empty() {
        return;
    }
    let clip = |s: &Option<String>| match s {
        None => "—".to_string(),
        Some(s) if s.chars().count() > 80 => {
            format!("`{}…`", s.chars().take(80).collect::<String>())
        }
        Some(s) => format!("`{s}`"),
    };
    let _ = writeln!(
        out,
        "### Schema drift ({})\n\nThe database differs from what its applied migration files build.\n\n| Kind | Object | Files | Database |\n|---|---|---|---|",
        log.drift.len()
    );
    for d in log.drift.iter().take(limit) {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} |",
            d.kind,
            cell(&d.object),
            cell(&clip(&d.expected)),
            cell(&clip(&d.actual))
        );
    }
    out.push('\n');
}

fn smoke(log: &DeploymentLog, out: &mut String) {
    if log.smoke.is_empty() {
        return;
    }
    out.push_str("### Smoke checks\n\n| Check | Result | HTTP | Latency | Attempts | Reason |\n|---|---|---|---|---|---|\n");
    for c in &log.smoke {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            cell(&c.name),
            if c.ok { "✅" } else { "❌" },
            c.status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "—".into()),
            c.latency_ms
                .map(|l| format!("{l} ms"))
                .unwrap_or_else(|| "—".into()),
            c.attempts,
            cell(c.reason.as_deref().unwrap_or(""))
        );
    }
    out.push('\n');
}

fn watch(log: &DeploymentLog, out: &mut String) {
    let Some(w) = &log.watch else { return };
    let _ = writeln!(
        out,
        "### Watch window\n\np50 **{:.0} ms**, p95 **{:.0} ms**, error rate **{:.2}%**\n",
        w.p50_ms,
        w.p95_ms,
        w.error_rate * 100.0
    );
    if !w.intervals_p95_ms.is_empty() {
        let max = w
            .intervals_p95_ms
            .iter()
            .cloned()
            .fold(0.0, f64::max)
            .max(1.0);
        let xs: Vec<String> = (1..=w.intervals_p95_ms.len())
            .map(|i| i.to_string())
            .collect();
        let ys: Vec<String> = w
            .intervals_p95_ms
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect();
        let _ = writeln!(
            out,
            "```mermaid\nxychart-beta\n    title \"p95 latency per interval (ms)\"\n    x-axis [{}]\n    y-axis \"ms\" 0 --> {:.0}\n    line [{}]\n```\n",
            xs.join(", "),
            (max * 1.2).ceil(),
            ys.join(", ")
        );
    }
    if let Some(v) = &w.metrics_verdict {
        let _ = writeln!(out, "#### Production metrics: {v}\n");
        if let Some(why) = &w.inconclusive {
            let _ = writeln!(out, "**Not judged:** {}\n", cell(why));
        }
        if !w.figures.is_empty() {
            out.push_str("| figure | value | budget | verdict | |\n|---|---:|---:|---|---|\n");
        }
        let show = |v: f64, unit: &str| match unit {
            "%" => format!("{:.2}%", v * 100.0),
            _ => format!("{v:.0} {unit}"),
        };
        for f in &w.figures {
            let _ = writeln!(
                out,
                "| {} | {} | < {} | {} | {} |",
                f.name,
                f.value.map_or("—".into(), |v| show(v, &f.unit)),
                show(f.budget, &f.unit),
                match f.ok {
                    Some(true) => "✅ ok",
                    Some(false) => "❌ over budget",
                    None => "— not judged",
                },
                cell(f.note.as_deref().unwrap_or(""))
            );
        }
        out.push('\n');
        for f in w
            .figures
            .iter()
            .filter(|f| f.series.iter().any(Option::is_some))
        {
            let scale = if f.unit == "%" { 100.0 } else { 1.0 };
            let unit = if f.unit == "%" { "%" } else { f.unit.as_str() };
            let ys: Vec<String> = f
                .series
                .iter()
                .map(|v| format!("{:.2}", v.unwrap_or(0.0) * scale))
                .collect();
            let top = f.series.iter().flatten().fold(f.budget, |a, b| a.max(*b)) * scale * 1.2;
            let xs: Vec<String> = (1..=f.series.len()).map(|i| i.to_string()).collect();
            let _ = writeln!(
                out,
                "```mermaid\nxychart-beta\n    title \"{} per interval ({unit}), budget {:.2}\"\n    x-axis [{}]\n    y-axis \"{unit}\" 0 --> {:.2}\n    bar [{}]\n    line [{}]\n```\n",
                f.name,
                f.budget * scale,
                xs.join(", "),
                top.max(1.0),
                ys.join(", "),
                vec![format!("{:.2}", f.budget * scale); f.series.len()].join(", ")
            );
        }
    }
}

fn issues(log: &DeploymentLog, out: &mut String) {
    if log.issues.is_empty() {
        return;
    }
    out.push_str("### Issues encountered\n\n");
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
        if let Some(r) = &i.request_id {
            let _ = writeln!(out, "  - request id: `{r}`");
        }
    }
    if let Some(r) = &log.resolution {
        let _ = writeln!(out, "\n**Resolution:** {r}");
    }
    out.push('\n');
}

/// The runbook's "Deployment Log Template", filled in.
pub fn template(log: &DeploymentLog) -> String {
    let tick = |ok: bool| if ok { "[x]" } else { "[ ]" };
    let ok = |name: &str| log.step(name).is_some_and(|s| s.status == StepStatus::Ok);
    let mut t = String::from("=== DEPLOYMENT LOG ===\n");
    let _ = writeln!(
        t,
        "Date: {}",
        log.started_at.get(..10).unwrap_or(&log.started_at)
    );
    let _ = writeln!(t, "Time Started: {}", log.started_at);
    let _ = writeln!(
        t,
        "Deployed By: {}",
        log.context.actor.as_deref().unwrap_or("flightplan")
    );
    let _ = writeln!(
        t,
        "\nPre-Deployment:\n{} Environment variables verified\n{} Database backup created",
        tick(ok("preflight")),
        tick(ok("backup"))
    );
    let _ = writeln!(
        t,
        "\nMigration:\n{} Migrations executed\n{} No errors\n{} Verified in _migrations table\nMigrations Applied: {}",
        tick(ok("migrate")),
        tick(ok("migrate")),
        tick(ok("migrate")),
        if log.migrations_applied.is_empty() {
            "none".to_string()
        } else {
            log.migrations_applied
                .iter()
                .map(|m| m.filename.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        t,
        "\nDeployment:\n{} Deploy executed\n{} Health checks passing",
        tick(ok("deploy")),
        tick(ok("deploy"))
    );
    let login = log.smoke.iter().any(|c| c.name == "login" && c.ok);
    let _ = writeln!(
        t,
        "\nPost-Deployment:\n{} App accessible\n{} Login works",
        tick(ok("smoke")),
        tick(login)
    );
    t.push_str("\nIssues Encountered:\n");
    if log.issues.is_empty() {
        t.push_str("none\n");
    }
    for i in &log.issues {
        let _ = writeln!(t, "- {}: {}", i.step, i.message);
    }
    let _ = writeln!(
        t,
        "\nResolution:\n{}",
        log.resolution.as_deref().unwrap_or("none needed")
    );
    let _ = writeln!(
        t,
        "\nTime Completed: {}",
        log.finished_at.as_deref().unwrap_or("(not completed)")
    );
    let _ = writeln!(t, "Status: {}", log.status.label());
    t
}

/// The job summary (GITHUB_STEP_SUMMARY): status first, a table per phase, pictures, and
/// the runbook template; trimmed with a note to stay under GitHub's 1 MiB.
pub fn summary(log: &DeploymentLog) -> String {
    // A rehearsal's log (also when read back by `report --log`) has its own summary.
    if log.command == "rehearse" && log.rehearsal.is_some() {
        return super::rehearsal::summary(log);
    }
    for limit in [usize::MAX, 200, 20] {
        let s = summary_with(log, limit);
        if s.len() <= SUMMARY_LIMIT {
            return s;
        }
    }
    let mut s = summary_with(log, 0);
    s.truncate(SUMMARY_LIMIT - 200);
    s.push_str("\n\n_(trimmed: the full log is in the JSON artifact)_\n");
    s
}

fn summary_with(log: &DeploymentLog, limit: usize) -> String {
    let mut out = String::new();
    header(log, &mut out);
    phases(log, &mut out);
    if let Some(p) = &log.plan
        && log.status == crate::report::log::Status::DryRun
    {
        out.push_str(&plan(p));
    }
    if log
        .steps
        .iter()
        .any(|s| !matches!(s.status, StepStatus::Skipped | StepStatus::Planned))
    {
        out.push_str(&timeline(log));
        out.push('\n');
    }
    issues(log, &mut out);
    drift(log, &mut out, limit);
    migrations(log, &mut out, limit);
    smoke(log, &mut out);
    watch(log, &mut out);
    if limit != usize::MAX {
        out.push_str("_(long lists trimmed to fit GitHub's 1 MiB summary limit; the JSON log has everything)_\n\n");
    }
    let _ = write!(
        out,
        "<details><summary>Deployment log (runbook template)</summary>\n\n```\n{}```\n\n</details>\n",
        template(log)
    );
    out
}

/// The sticky PR comment: short, with the marker that lets the next run update it.
pub fn comment(log: &DeploymentLog) -> String {
    let mut out = String::new();
    header(log, &mut out);
    phases(log, &mut out);
    issues(log, &mut out);
    drift(log, &mut out, 30);
    migrations(log, &mut out, 30);
    smoke(log, &mut out);
    watch(log, &mut out);
    if log.status == Status::DryRun {
        if let Some(p) = &log.plan {
            out.push_str(&plan(p));
        }
        out.push_str(if log.context.trigger.as_deref().is_some_and(|t| t.starts_with("pull_request")) {
            "_A pull request never deploys: this is the plan, and nothing was changed. It runs on the merge to main._\n\n"
        } else {
            "_Dry run: nothing was changed._\n\n"
        });
    }
    if out.len() > COMMENT_LIMIT - COMMENT_MARKER.len() - 100 {
        let mut cut = COMMENT_LIMIT - COMMENT_MARKER.len() - 100;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("\n\n_(trimmed; see the job summary)_\n");
    }
    out.push_str(COMMENT_MARKER);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::super::log::*;
    use super::*;

    pub(crate) fn sample(status: Status) -> DeploymentLog {
        let mut log = DeploymentLog::new("run", "production", "2026-11-27T05:30:04Z".into());
        log.app = Some("secure2send".into());
        log.app_url = Some("https://secure2send.fly.dev".into());
        log.status = status;
        log.finished_at = Some("2026-11-27T05:31:27Z".into());
        log.duration_ms = 83_000;
        log.context = Context {
            repository: Some("acme/secure2send".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            trigger: Some("push".into()),
            actor: Some("jdugard".into()),
            run_url: Some("https://github.com/acme/secure2send/actions/runs/42".into()),
            pull_requests: vec![7],
        };
        log.image = Some("registry.fly.io/secure2send:deployment-02".into());
        log.previous_images.insert(
            "e784".into(),
            "registry.fly.io/secure2send:deployment-01".into(),
        );
        log.backup = Some(BackupRecord {
            provider: "neon".into(),
            id: "br-cool-42".into(),
            name: Some("flightplan/backup/20261127T053004Z-0123456".into()),
        });
        log.migrations_applied = vec![
            AppliedMigration {
                filename: "020_add_agent_notes.sql".into(),
                duration_ms: 12,
            },
            AppliedMigration {
                filename: "020_add_current_step.sql".into(),
                duration_ms: 3,
            },
        ];
        let step = |name: &str, status, started_ms, duration_ms, summary: &str| Step {
            name: name.into(),
            status,
            started_ms,
            duration_ms,
            summary: summary.into(),
            details: serde_json::Value::Null,
        };
        log.steps = vec![
            step("preflight", StepStatus::Ok, 0, 310, "29 checks passed"),
            step(
                "backup",
                StepStatus::Ok,
                310,
                2_100,
                "neon branch br-cool-42",
            ),
            step(
                "migrate",
                StepStatus::Ok,
                2_410,
                640,
                "2 applied, 21 already applied",
            ),
            step(
                "deploy",
                StepStatus::Ok,
                3_050,
                61_000,
                "3 machines on deployment-02",
            ),
        ];
        log.smoke = vec![
            SmokeRecord {
                name: "health".into(),
                ok: true,
                status: Some(200),
                latency_ms: Some(41),
                attempts: 2,
                reason: None,
            },
            SmokeRecord {
                name: "login".into(),
                ok: status != Status::RolledBack,
                status: Some(if status == Status::RolledBack {
                    500
                } else {
                    200
                }),
                latency_ms: Some(120),
                attempts: 1,
                reason: (status == Status::RolledBack)
                    .then(|| "expected status 200, got 500".into()),
            },
        ];
        if status == Status::RolledBack {
            log.steps.push(step(
                "smoke",
                StepStatus::Failed,
                64_050,
                9_000,
                "login failed",
            ));
            log.steps.push(step(
                "rollback",
                StepStatus::Ok,
                73_050,
                9_900,
                "3 machines back on deployment-01",
            ));
            log.issues.push(Issue {
                step: "smoke".into(),
                message: "login: expected status 200, got 500".into(),
                hint: None,
                location: None,
                request_id: None,
            });
            log.resolution = Some("machines rolled back to their previous images; the database was not restored (rollback.restore_database = false)".into());
        } else {
            log.steps.push(step(
                "smoke",
                StepStatus::Ok,
                64_050,
                900,
                "2 checks passed",
            ));
            log.watch = Some(WatchRecord {
                p50_ms: 88.0,
                p95_ms: 210.0,
                error_rate: 0.0,
                metrics_verdict: None,
                figures: Vec::new(),
                inconclusive: None,
                intervals_p95_ms: vec![180.0, 210.0, 190.0],
            });
        }
        log
    }

    #[test]
    fn summary_of_a_success() {
        insta::assert_snapshot!(summary(&sample(Status::Success)));
    }

    #[test]
    fn comment_of_a_rollback() {
        let c = comment(&sample(Status::RolledBack));
        assert!(c.trim_end().ends_with(COMMENT_MARKER));
        insta::assert_snapshot!(c);
    }

    #[test]
    fn template_of_a_rollback() {
        insta::assert_snapshot!(template(&sample(Status::RolledBack)));
    }

    #[test]
    fn oversized_logs_are_trimmed_under_the_limits() {
        let mut log = sample(Status::Success);
        log.migrations_applied = (0..40_000)
            .map(|i| AppliedMigration {
                filename: format!("{i:06}_a_rather_long_migration_name_for_size.sql"),
                duration_ms: 1,
            })
            .collect();
        let s = summary(&log);
        assert!(s.len() <= SUMMARY_LIMIT, "{}", s.len());
        assert!(s.contains("trimmed"));
        let c = comment(&log);
        assert!(c.len() <= COMMENT_LIMIT);
        assert!(c.trim_end().ends_with(COMMENT_MARKER));
    }
}
