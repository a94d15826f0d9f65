//! `[report]`, `[rollback]` and the GitHub context → where a run's log goes.

use std::path::{Path, PathBuf};

use super::Sources;
use crate::config::{ReportFile, RollbackFile};
use crate::error::Error;
use crate::redact::Secret;

/// Where the deployment log goes, resolved before the run starts.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// The JSON log.
    pub log: PathBuf,
    /// The Markdown job summary (GITHUB_STEP_SUMMARY, `[report] summary`, or beside the log).
    pub summary: PathBuf,
    /// Step outputs (GITHUB_OUTPUT), when running in Actions.
    pub outputs: Option<PathBuf>,
    /// The GitHub environment of the Deployment.
    pub environment: String,
    pub pr_comment: bool,
    pub github_deployment: bool,
    /// Where PR comments and Deployments go; `None` when GitHub reporting is off, with why.
    pub github: Result<GitHubTarget, String>,
    /// The workspace (GITHUB_WORKSPACE), for paths handed to later steps.
    pub workspace: Option<PathBuf>,
}

/// The repository, commit and credentials for GitHub reporting.
#[derive(Debug, Clone)]
pub struct GitHubTarget {
    pub api_url: String,
    pub token: Secret,
    pub repository: String,
    pub sha: String,
}

impl Sources<'_> {
    /// `[report]` as written (for `rehearse`, which has a log of its own).
    pub fn report_file(&self) -> &ReportFile {
        &self.loaded.file.report
    }

    /// `[rollback]`.
    pub fn rollback_file(&self) -> &RollbackFile {
        &self.loaded.file.rollback
    }

    /// The report targets. `default_log` is the log's file name in the workspace when
    /// `[report] log` is not set. Inside Actions, a GitHub report that is on but has no token
    /// is a problem (exit 2): say so before anything changes, not after.
    pub fn report(&self, default_log: &str) -> Result<ReportSettings, Error> {
        let r = self.report_unchecked(default_log);
        if (r.pr_comment || r.github_deployment)
            && self.gha()
            && let Err(why) = &r.github
        {
            return Err(Error::usage(format!("GitHub reporting is on but {why}"))
                .file(self.loaded.describe("[report]"))
                .hint("pass the action's github-token input (its default is the job's token) or GITHUB_TOKEN, with permissions pull-requests: write and deployments: write; or turn the reports off with [report] pr_comment = false and github_deployment = false"));
        }
        Ok(r)
    }

    /// The report targets as far as they are known, a missing token included.
    pub fn report_unchecked(&self, default_log: &str) -> ReportSettings {
        let file = self.report_file();
        let workspace = self.var("GITHUB_WORKSPACE").map(PathBuf::from);
        let log = match &file.log {
            Some(p) => self.loaded.resolve_path(p),
            None => match &workspace {
                Some(w) => w.join(default_log),
                None => PathBuf::from(default_log),
            },
        };
        let summary = self
            .var("GITHUB_STEP_SUMMARY")
            .map(PathBuf::from)
            .or_else(|| file.summary.as_ref().map(|p| self.loaded.resolve_path(p)))
            .unwrap_or_else(|| log.with_extension("md"));
        ReportSettings {
            log,
            summary,
            outputs: self.var("GITHUB_OUTPUT").map(PathBuf::from),
            environment: file.environment.clone(),
            pr_comment: file.pr_comment,
            github_deployment: file.github_deployment,
            github: self.github_target(),
            workspace,
        }
    }

    /// The GitHub API target: the action's `github-token` input, else `GITHUB_TOKEN`; the
    /// repository and commit of the run; `GITHUB_API_URL` for GitHub Enterprise.
    pub fn github_target(&self) -> Result<GitHubTarget, String> {
        let token = self
            .github_token
            .clone()
            .or_else(|| self.var("GITHUB_TOKEN").map(Secret::new))
            .ok_or("no token: neither the github-token input nor GITHUB_TOKEN is set")?;
        let repository = self
            .var("GITHUB_REPOSITORY")
            .ok_or("GITHUB_REPOSITORY is not set")?;
        let sha = self.var("GITHUB_SHA").ok_or("GITHUB_SHA is not set")?;
        Ok(GitHubTarget {
            api_url: self
                .var("GITHUB_API_URL")
                .unwrap_or_else(|| crate::report::github::DEFAULT_API_URL.into()),
            token,
            repository,
            sha,
        })
    }
}

impl ReportSettings {
    /// A path as a later step of the job sees it: relative to the workspace when inside it.
    pub fn for_later_steps(&self, p: &Path) -> String {
        for_later_steps(self.workspace.as_deref(), p)
    }
}

/// A path as a later step of the job sees it: relative to the workspace when inside it
/// (the runner reads outputs on the host, where the container's paths do not exist).
pub fn for_later_steps(workspace: Option<&Path>, p: &Path) -> String {
    match workspace {
        Some(w) => p
            .strip_prefix(w)
            .map_or_else(|_| p.display().to_string(), |r| r.display().to_string()),
        None => p.display().to_string(),
    }
}
