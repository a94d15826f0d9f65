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
}

impl StepStatus {
    pub fn mark(self) -> &'static str {
        match self {
            StepStatus::Ok => "✅",
            StepStatus::Failed => "❌",
            StepStatus::Skipped => "⏭️",
            StepStatus::Interrupted => "⛔",
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
            watch: None,
            steps: Vec::new(),
            issues: Vec::new(),
            resolution: None,
            outputs: Vec::new(),
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
