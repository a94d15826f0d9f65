//! The deployment log: the runbook's "Deployment Log Template" as one serde data model,
//! filled in by every step and rendered by pure functions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The log's final status, as the runbook's template spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Still running (a log written on interruption keeps it).
    Running,
    Success,
    /// Deployed, but something worth a look failed (e.g. the PR comment).
    Partial,
    Failed,
    RolledBack,
    /// `--dry-run`: read-only parts done, nothing changed.
    DryRun,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Success => "SUCCESS",
            Status::Partial => "PARTIAL",
            Status::Failed => "FAILED",
            Status::RolledBack => "ROLLED BACK",
            Status::DryRun => "DRY RUN",
        }
    }

    pub fn emoji(self) -> &'static str {
        match self {
            Status::Running => "⏳",
            Status::Success => "✅",
            Status::Partial => "⚠️",
            Status::Failed => "❌",
            Status::RolledBack => "↩️",
            Status::DryRun => "🧪",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
    /// Interrupted while running.
    Interrupted,
    /// A dry run's (or a pull request's) step: what would happen; nothing ran.
    Planned,
}

impl StepStatus {
    pub fn mark(self) -> &'static str {
        match self {
            StepStatus::Ok => "✅",
            StepStatus::Failed => "❌",
            StepStatus::Skipped => "⏭️",
            StepStatus::Interrupted => "⛔",
            StepStatus::Planned => "📝",
        }
    }
}

/// One phase of the runbook, with what it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// preflight, backup, migrate, deploy, smoke, watch, rollback
    pub name: String,
    pub status: StepStatus,
    /// Milliseconds since the run started.
    pub started_ms: u64,
    pub duration_ms: u64,
    /// One line for tables.
    pub summary: String,
    /// The step command's own JSON output (redacted).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

/// A problem met on the way: the template's "Issues Encountered".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    pub step: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedMigration {
    pub filename: String,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub provider: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeRecord {
    pub name: String,
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchRecord {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub error_rate: f64,
    /// p95 per interval, for the latency chart.
    #[serde(default)]
    pub intervals_p95_ms: Vec<f64>,
    /// The production metrics' verdict (`pass`, `fail`, `too_little_traffic`, `unavailable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_verdict: Option<String>,
    /// Each production figure against its budget, with its series over the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub figures: Vec<FigureRecord>,
    /// Why the window was not judged (too little traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
}

/// One production figure of the watch window against its budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureRecord {
    pub name: String,
    /// `%` (values are fractions) or `ms`.
    pub unit: String,
    pub value: Option<f64>,
    pub budget: f64,
    /// `None`: not judged.
    pub ok: Option<bool>,
    pub series: Vec<Option<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One schema difference found by the drift gate (`migrate drift`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRecord {
    pub kind: String,
    pub object: String,
    /// What the migration files build; `None` when they do not have it.
    pub expected: Option<String>,
    /// What the database has; `None` when it is missing there.
    pub actual: Option<String>,
}

/// Where and why the run happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub repository: Option<String>,
    pub commit: Option<String>,
    /// The GitHub event name (push, workflow_dispatch, …), or "local".
    pub trigger: Option<String>,
    pub actor: Option<String>,
    pub run_url: Option<String>,
    pub pull_requests: Vec<u64>,
}

/// The whole deployment log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentLog {
    /// Format version of this document.
    pub version: u32,
    pub command: String,
    pub app: Option<String>,
    pub environment: String,
    pub app_url: Option<String>,
    pub status: Status,
    pub dry_run: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub context: Context,
    pub image: Option<String>,
    /// Machine id → image before the deploy.
    #[serde(default)]
    pub previous_images: std::collections::BTreeMap<String, String>,
    pub backup: Option<BackupRecord>,
    #[serde(default)]
    pub migrations_applied: Vec<AppliedMigration>,
    #[serde(default)]
    pub migrations_pending: Vec<String>,
    #[serde(default)]
    pub smoke: Vec<SmokeRecord>,
    /// Differences found by the drift gate, when it ran and found some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftRecord>,
    pub watch: Option<WatchRecord>,
    #[serde(default)]
    pub steps: Vec<Step>,
    #[serde(default)]
    pub issues: Vec<Issue>,
    /// The template's "Resolution": what flightplan did about the issues.
    pub resolution: Option<String>,
    /// Where the rendered outputs went (summary file, PR comment, deployment).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The plan the run was built from: what each phase would do, before it did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanRecord>,
    /// `rehearse`: the pending migrations tried on a copy of production. Absent from
    /// every other command's log, and from logs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rehearsal: Option<Rehearsal>,
}

impl DeploymentLog {
    pub fn new(command: &str, environment: &str, started_at: String) -> DeploymentLog {
        DeploymentLog {
            version: 1,
            command: command.into(),
            app: None,
            environment: environment.into(),
            app_url: None,
            status: Status::Running,
            dry_run: false,
            started_at,
            finished_at: None,
            duration_ms: 0,
            context: Context::default(),
            image: None,
            previous_images: Default::default(),
            backup: None,
            migrations_applied: Vec::new(),
            migrations_pending: Vec::new(),
            smoke: Vec::new(),
            drift: Vec::new(),
            watch: None,
            steps: Vec::new(),
            issues: Vec::new(),
            resolution: None,
            outputs: Vec::new(),
            plan: None,
            rehearsal: None,
        }
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The one previous image when every machine ran the same one.
    pub fn previous_image(&self) -> Option<String> {
        let mut images: Vec<&String> = self.previous_images.values().collect();
        images.dedup();
        match images.as_slice() {
            [one] => Some((*one).clone()),
            _ => None,
        }
    }
}

/// The plan of a run, as the log keeps it: every phase in order with what it will do (or
/// why it is left out), the files, machines and checks it will touch, and where the report
/// goes. A dry run's whole result; a real run's record of what it set out to do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// `deploy`, `dry run` or `pull request` (plans only: a pull request never deploys).
    pub mode: String,
    pub phases: Vec<PlannedPhase>,
    /// The pending files, in the order they would apply; `None` when the ledger was not read.
    #[serde(default)]
    pub pending: Option<Vec<PlannedFile>>,
    #[serde(default)]
    pub machines: Vec<PlannedMachine>,
    /// What could not be planned, and why (a fork's pull request has no secrets).
    #[serde(default)]
    pub unplanned: Vec<String>,
}

/// One phase of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedPhase {
    pub name: String,
    /// `false`: left out, and `what` says why.
    pub runs: bool,
    /// What it will do, in one line.
    pub what: String,
    /// Its targets and settings, one per line.
    #[serde(default)]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedFile {
    pub filename: String,
    pub transaction: bool,
    pub checksum: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedMachine {
    pub id: String,
    #[serde(default)]
    pub region: Option<String>,
    /// The image it runs now.
    pub image: Option<String>,
    /// The batch it would be updated in (1 first); `None` when it is already on the image.
    pub batch: Option<u32>,
}

/// What a rehearsal concluded, in the order a reviewer cares about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every pending file applied on the copy.
    Pass,
    /// A pending file failed on the copy: it would fail in production too.
    Fail,
    /// `migrate apply` would refuse to start (a modified or failed file, a lint error).
    Blocked,
    /// Nothing is pending: nothing to rehearse.
    #[default]
    NothingPending,
    /// No copy could be made (no Neon key on a fork's pull request): the plan only.
    PlanOnly,
    /// Not even the ledger could be read (no DATABASE_URL): the changed files only.
    LedgerUnreadable,
    /// The rehearsal itself could not run (the copy could not be made or reached).
    Error,
    /// SIGTERM or SIGINT arrived mid-rehearsal.
    Interrupted,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASSED",
            Verdict::Fail => "FAILED",
            Verdict::Blocked => "BLOCKED",
            Verdict::NothingPending => "NOTHING PENDING",
            Verdict::PlanOnly => "PLAN ONLY",
            Verdict::LedgerUnreadable => "NOT REHEARSED",
            Verdict::Error => "ERROR",
            Verdict::Interrupted => "INTERRUPTED",
        }
    }

    pub fn emoji(self) -> &'static str {
        match self {
            Verdict::Pass | Verdict::NothingPending => "✅",
            Verdict::Fail | Verdict::Blocked | Verdict::Error => "❌",
            Verdict::PlanOnly | Verdict::LedgerUnreadable => "⚠️",
            Verdict::Interrupted => "⛔",
        }
    }

    /// Exit 0: nothing found that would fail in production.
    pub fn ok(self) -> bool {
        matches!(
            self,
            Verdict::Pass | Verdict::NothingPending | Verdict::PlanOnly | Verdict::LedgerUnreadable
        )
    }
}

/// The copy a rehearsal ran on, and what became of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CopyRecord {
    /// `neon` (a branch with a compute endpoint) or `pg_dump` (a scratch database).
    pub provider: String,
    /// Neon: the branch name; pg_dump: the scratch database's name.
    pub name: String,
    /// Neon: the branch id (`br-…`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// What it copies: the production branch, or the production database's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Neon: when Neon deletes it by itself, whatever happens to this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `deleted`, `kept` (--keep), `not_deleted` (cleanup failed: see `cleanup_error`).
    #[serde(default)]
    pub disposition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
}

/// PostgreSQL's table-level lock modes, weakest first (the derived `Ord` is their strength).
/// Serialised as its name (`ACCESS EXCLUSIVE`), as logs have always spelled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    AccessShare,
    RowShare,
    RowExclusive,
    ShareUpdateExclusive,
    Share,
    ShareRowExclusive,
    Exclusive,
    AccessExclusive,
}

impl LockMode {
    pub fn name(self) -> &'static str {
        match self {
            LockMode::AccessShare => "ACCESS SHARE",
            LockMode::RowShare => "ROW SHARE",
            LockMode::RowExclusive => "ROW EXCLUSIVE",
            LockMode::ShareUpdateExclusive => "SHARE UPDATE EXCLUSIVE",
            LockMode::Share => "SHARE",
            LockMode::ShareRowExclusive => "SHARE ROW EXCLUSIVE",
            LockMode::Exclusive => "EXCLUSIVE",
            LockMode::AccessExclusive => "ACCESS EXCLUSIVE",
        }
    }

    /// What the mode means for the running app, in a few words.
    pub fn blocks(self) -> &'static str {
        match self {
            LockMode::AccessShare | LockMode::RowShare | LockMode::RowExclusive => {
                "blocks only schema changes"
            }
            LockMode::ShareUpdateExclusive => "reads and writes continue",
            LockMode::Share | LockMode::ShareRowExclusive => "blocks writes, reads continue",
            LockMode::Exclusive => "blocks writes and row locks, plain reads continue",
            LockMode::AccessExclusive => "blocks reads and writes",
        }
    }

    /// The mode as `pg_locks.mode` spells it (`AccessExclusiveLock`).
    pub fn from_pg(mode: &str) -> Option<LockMode> {
        Some(match mode {
            "AccessShareLock" => LockMode::AccessShare,
            "RowShareLock" => LockMode::RowShare,
            "RowExclusiveLock" => LockMode::RowExclusive,
            "ShareUpdateExclusiveLock" => LockMode::ShareUpdateExclusive,
            "ShareLock" => LockMode::Share,
            "ShareRowExclusiveLock" => LockMode::ShareRowExclusive,
            "ExclusiveLock" => LockMode::Exclusive,
            "AccessExclusiveLock" => LockMode::AccessExclusive,
            _ => return None,
        })
    }

    /// The mode named as `name()` spells it.
    pub fn from_name(name: &str) -> Option<LockMode> {
        let words: Vec<String> = name
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        LockMode::parse(&words)
    }

    /// The mode from its words (`SHARE ROW EXCLUSIVE` as `["SHARE", "ROW", "EXCLUSIVE"]`).
    pub fn parse(words: &[String]) -> Option<LockMode> {
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        Some(match w.as_slice() {
            ["ACCESS", "SHARE"] => LockMode::AccessShare,
            ["ROW", "SHARE"] => LockMode::RowShare,
            ["ROW", "EXCLUSIVE"] => LockMode::RowExclusive,
            ["SHARE", "UPDATE", "EXCLUSIVE"] => LockMode::ShareUpdateExclusive,
            ["SHARE"] => LockMode::Share,
            ["SHARE", "ROW", "EXCLUSIVE"] => LockMode::ShareRowExclusive,
            ["EXCLUSIVE"] => LockMode::Exclusive,
            ["ACCESS", "EXCLUSIVE"] => LockMode::AccessExclusive,
            _ => return None,
        })
    }
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for LockMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for LockMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        LockMode::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("`{name}` is not a lock mode")))
    }
}

fn derived() -> String {
    "derived".into()
}

/// One pending file as it went on the copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RehearsedFile {
    pub filename: String,
    /// `applied`, `failed`, `not_run` (after a failure), or `pending` (not rehearsed).
    pub status: String,
    #[serde(default)]
    pub transaction: bool,
    /// Time on the copy (production-sized data), as the server measured it; for the failed
    /// file, the time until it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Where `locks` comes from: `observed` (pg_locks inside the file's transaction on the
    /// copy, just before its commit: the strongest mode per relation, relations created in
    /// the change set included and marked) or `derived` (from the SQL's statement kinds,
    /// for `-- no-transaction` files, a failed file and unrehearsed plans). Logs written
    /// before observation existed have `derived` locks.
    #[serde(default = "derived")]
    pub lock_source: String,
    /// Observed: every relation the file's transaction held a lock on. Derived: every
    /// table-level lock each statement takes on a relation that existed before the change set.
    #[serde(default)]
    pub locks: Vec<LockRecord>,
    /// The strongest of them: `ACCESS EXCLUSIVE on users`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strongest_lock: Option<String>,
    /// Rows of the tables it touches, on the copy before the change set.
    #[serde(default)]
    pub tables: Vec<TableRows>,
    #[serde(default)]
    pub warnings: Vec<RehearsalWarning>,
    /// Changes that can break the version still serving while the migration runs ahead of
    /// the deploy (a class of its own in the verdict).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compat: Vec<CompatRecord>,
    /// squawk's findings on the file, reported and suppressed (with the reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint: Vec<LintRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FileError>,
}

/// One of squawk's findings on a pending file, judged with flightplan's context.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LintRecord {
    pub line: u32,
    pub column: u32,
    /// squawk's rule id: `adding-foreign-key-constraint`.
    pub rule: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// The table the statement acts on, when it acts on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// For a rule whose cost grows with the table: its rows on the copy, or why unconfirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
    /// Why flightplan's context makes it harmless; `None`: reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<String>,
}

/// A change the running version may not survive, and the two-step way to make it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompatRecord {
    /// `drop_column`, `rename_column`, `drop_table`, `rename_table`, `drop_view`,
    /// `rename_view`, `drop_function`, `rename_function`, `column_type`,
    /// `not_null_without_default`, `new_constraint`.
    pub kind: String,
    pub line: u32,
    /// `users.phone`, `users`, …
    pub object: String,
    pub message: String,
    /// Expand, deploy, then contract.
    pub advice: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// `ACCESS EXCLUSIVE`, `SHARE`, …
    pub mode: String,
    pub relation: String,
    /// The statement's line, for a lock derived from the SQL; observed locks are the
    /// file's as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The relation was created in this change set: nobody uses it yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub created: bool,
    /// Its name after the file, when the change set renamed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub table: String,
    /// The planner's estimate (`reltuples`) on the copy; a table never analysed is
    /// analysed on the copy first.
    pub rows: i64,
}

/// A known-dangerous operation the copy's data confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RehearsalWarning {
    /// `volatile_default`, `index_not_concurrent`, `enum_value_in_transaction`,
    /// `set_not_null_without_check`.
    pub kind: String,
    pub line: u32,
    pub message: String,
}

/// Why a file failed on the copy, where, and what to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// SQLSTATE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// `flightplan rehearse`: the pending migrations tried on a copy of production.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rehearsal {
    pub verdict: Verdict,
    /// One line saying why, for the verdict's sentence.
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<CopyRecord>,
    /// The pending files, in the order they apply.
    #[serde(default)]
    pub files: Vec<RehearsedFile>,
    /// When the ledger could not be read: the migration files the pull request changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_files: Vec<String>,
    /// The drift check on the copy after the files: `None` when it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Vec<DriftRecord>>,
    /// Why the drift check could not run, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_error: Option<String>,
    /// Rows from which a non-concurrent index build counts as dangerous.
    #[serde(default)]
    pub large_table_rows: u64,
    /// Anything else a reviewer should know (the copy's ledger differed, a lock not derived).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The squawk release whose rules linted the files (`None`: not linted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub squawk: Option<String>,
}

impl Rehearsal {
    pub fn warnings(&self) -> usize {
        self.files.iter().map(|f| f.warnings.len()).sum()
    }

    /// Changes that can break the version still serving.
    pub fn breaking(&self) -> usize {
        self.files.iter().map(|f| f.compat.len()).sum()
    }

    /// squawk's findings that flightplan's context does not make harmless.
    pub fn lint_findings(&self) -> usize {
        self.files
            .iter()
            .flat_map(|f| &f.lint)
            .filter(|l| l.suppressed.is_none())
            .count()
    }

    /// The file that failed, if one did.
    pub fn failed(&self) -> Option<&RehearsedFile> {
        self.files.iter().find(|f| f.status == "failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_written_before_rehearsals_existed_still_load() {
        // A log of `run` as written before the rehearsal section (and the drift list) existed.
        let old = r#"{"version":1,"command":"run","app":"secure2send","environment":"production",
            "app_url":null,"status":"SUCCESS","dry_run":false,"started_at":"2026-11-27T05:30:04Z",
            "finished_at":"2026-11-27T05:31:27Z","duration_ms":83000,
            "context":{"repository":null,"commit":null,"trigger":"push","actor":null,"run_url":null,"pull_requests":[]},
            "image":null,"backup":null,"watch":null,"resolution":null}"#;
        let log: DeploymentLog = serde_json::from_str(old).unwrap();
        assert_eq!(log.rehearsal, None);
        assert_eq!(log.status, Status::Success);
        // And a log without a rehearsal does not grow the key.
        assert!(!serde_json::to_string(&log).unwrap().contains("rehearsal"));
    }

    #[test]
    fn a_rehearsal_round_trips() {
        let mut log = DeploymentLog::new("rehearse", "production", "2026-11-27T05:30:04Z".into());
        log.rehearsal = Some(Rehearsal {
            verdict: Verdict::Fail,
            files: vec![RehearsedFile {
                filename: "021_x.sql".into(),
                status: "failed".into(),
                error: Some(FileError {
                    message: "boom".into(),
                    line: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        let text = serde_json::to_string(&log).unwrap();
        let back: DeploymentLog = serde_json::from_str(&text).unwrap();
        assert_eq!(back, log);
        assert_eq!(
            back.rehearsal.unwrap().failed().unwrap().filename,
            "021_x.sql"
        );
    }
}
