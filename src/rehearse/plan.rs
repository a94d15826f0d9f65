//! `rehearse`'s plan: the copy to make, the migrate settings, the report targets and every
//! credential, resolved through `settings::Sources` before anything is contacted; what is
//! missing or malformed is named all at once (exit 2).

use std::path::PathBuf;
use std::time::Duration;

use crate::backup::{Label, Target, neon};
use crate::cli::{BackupArgs, RehearseArgs};
use crate::config::BackupProvider;
use crate::error::{Error, Kind};
use crate::migrate;
use crate::plan::Problems;
use crate::redact::Redactor;
use crate::report::github::GitHub;
use crate::report::log::{Context, DeploymentLog};
use crate::settings::{ReportSettings, Sources};

use super::RehearseFile;

/// Neon's limit for `expires_at`: at most 30 days ahead (docs: "Branch expiration").
const MAX_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where the copy comes from, decided before anything is contacted.
pub enum Route {
    Neon(neon::Settings),
    /// A scratch database restored from pg_dump, within `timeout` (`[backup] timeout`).
    Scratch {
        timeout: Duration,
    },
    /// No way to make a copy here (a fork's pull request without NEON_API_KEY).
    PlanOnly(String),
    /// Not even the ledger is readable (a fork's pull request without DATABASE_URL).
    ChangedFilesOnly(String),
}

/// Everything a rehearsal will do, resolved.
pub struct RehearsePlan {
    pub route: Route,
    /// `None` only for [`Route::ChangedFilesOnly`].
    pub migrate: Option<migrate::Settings>,
    /// The migrations directory (also known without a database).
    pub dir: PathBuf,
    pub file: RehearseFile,
    pub keep: bool,
    /// Neon: the branch's life if flightplan cannot delete it.
    pub expires_in: Duration,
    pub app: Option<String>,
    /// The rehearsal's own log and summary (apart from `run`'s), the outputs, GitHub.
    pub report: ReportSettings,
    pub redactor: Redactor,
    pub context: Context,
    /// Started by a pull request (or its event names one).
    pub pull_request: bool,
    pub gha: bool,
    pub label: Label,
    /// `[migrate] drift_gate`: drift on the copy fails the rehearsal.
    pub drift_gate: bool,
    /// `[rehearse] lint`: the squawk rules every pending file is linted with.
    pub lint_rules: migrate::lint::Rules,
}

/// Resolves the plan; the problems, when there are any, are the command's exit 2.
pub fn plan(src: &Sources<'_>, args: &RehearseArgs) -> Result<RehearsePlan, Problems> {
    let mut p = Problems::default();
    let loaded = src.loaded;
    let file: RehearseFile = p
        .take("rehearse", src.section(&loaded.file.rehearse, "rehearse"))
        .unwrap_or_default();
    let expires_in = p
        .take("rehearse", expires_in(src, args, &file))
        .unwrap_or(Duration::from_secs(3600));
    let lint_rules = p.take("rehearse", src.lint_rules()).unwrap_or_default();

    let mut context = DeploymentLog::new("rehearse", "", String::new());
    crate::pipeline::fill_context(&mut context, &src.lookup());
    let context = context.context;
    let pull_request = !context.pull_requests.is_empty() || src.pull_request_event();

    let dir = src.migrations_dir(&args.migrate);
    let has_db = args
        .migrate
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .is_some()
        || src.var("DATABASE_URL").is_some();
    let (route, migrate) = if !has_db && pull_request {
        (
            Some(Route::ChangedFilesOnly(
                "DATABASE_URL is not available to this workflow (a pull request from a fork gets no secrets)".into(),
            )),
            None,
        )
    } else {
        let ms = p.take("migrate", src.migrate(&args.migrate));
        let route = route(src, args, pull_request, ms.is_some(), &mut p);
        (route, ms)
    };

    let mut report = src.report_unchecked("flightplan-rehearsal.json");
    // Apart from `run`'s log, so one job can do both.
    report.log = match &file.log {
        Some(path) => loaded.resolve_path(path),
        None => match &report.workspace {
            Some(w) => w.join("flightplan-rehearsal.json"),
            None => PathBuf::from("flightplan-rehearsal.json"),
        },
    };
    if src.var("GITHUB_STEP_SUMMARY").is_none() && src.report_file().summary.is_none() {
        report.summary = report.log.with_extension("md");
    }

    let Some(route) = route else { return Err(p) };
    if !p.is_empty() {
        return Err(p);
    }
    Ok(RehearsePlan {
        route,
        migrate,
        dir,
        file,
        keep: args.keep,
        expires_in,
        app: src.fly_app(),
        report,
        redactor: src.redactor(),
        context,
        pull_request,
        gha: src.gha(),
        label: Label::now(src.var("GITHUB_SHA").as_deref()),
        drift_gate: loaded.file.migrate.drift_gate == Some(true),
        lint_rules,
    })
}

fn expires_in(
    src: &Sources<'_>,
    args: &RehearseArgs,
    file: &RehearseFile,
) -> Result<Duration, Error> {
    let d = match (&args.expires_in, &file.expires_in) {
        (Some(v), _) => crate::config::parse_duration(v)
            .map_err(|e| Error::usage(format!("--expires-in: {e}")))?,
        (None, Some(v)) => v.to_duration().map_err(|e| {
            Error::usage(format!("[rehearse] expires_in: {e}"))
                .file(src.loaded.describe("[rehearse] expires_in"))
        })?,
        (None, None) => Duration::from_secs(3600),
    };
    if d < Duration::from_secs(600) || d > MAX_EXPIRY {
        return Err(Error::usage(format!(
            "the copy's expiry ({}s) must be between 10m and 30 days",
            d.as_secs()
        ))
        .hint("Neon accepts an expires_at up to 30 days ahead; the rehearsal needs it to outlive the job"));
    }
    Ok(d)
}

/// Which copy this run can make with the variables at hand. On a pull request, a missing
/// Neon key (a fork's) means a plan-only report instead of a failure; anywhere else it is
/// the usual usage error.
fn route(
    src: &Sources<'_>,
    args: &RehearseArgs,
    pull_request: bool,
    migrate_ok: bool,
    p: &mut Problems,
) -> Option<Route> {
    let provider =
        src.loaded
            .file
            .backup
            .provider
            .unwrap_or(if src.var("NEON_PROJECT_ID").is_some() {
                BackupProvider::Neon
            } else {
                BackupProvider::PgDump
            });
    // The copy of a non-Neon database is always a scratch database from pg_dump.
    let provider = match provider {
        BackupProvider::Neon => BackupProvider::Neon,
        _ => BackupProvider::PgDump,
    };
    if provider == BackupProvider::PgDump && !migrate_ok {
        // The database URL's problem is already the migrate settings' one.
        return Some(Route::Scratch {
            timeout: Duration::from_secs(600),
        });
    }
    let backup = BackupArgs {
        provider: Some(provider),
        branch: args.branch.clone(),
        database_url: args.migrate.database_url.clone(),
        dir: None,
    };
    match src.backup(&backup) {
        Ok(s) => match s.target {
            Target::Neon(ns) => Some(Route::Neon(ns)),
            Target::PgDump(pg) => Some(Route::Scratch {
                timeout: pg.timeout,
            }),
            Target::None => Some(Route::Scratch {
                timeout: Duration::from_secs(600),
            }),
        },
        Err(e)
            if pull_request
                && provider == BackupProvider::Neon
                && e.kind == Kind::Usage
                && src.var("NEON_API_KEY").is_none() =>
        {
            Some(Route::PlanOnly(
                "NEON_API_KEY is not available to this workflow (a pull request from a fork gets no secrets), so no copy of production could be made"
                    .into(),
            ))
        }
        Err(e) => {
            p.push("copy", e);
            None
        }
    }
}

impl RehearsePlan {
    /// The GitHub client for the comment and the pull request's files, when reporting is on
    /// and the token, repository and commit are known.
    pub fn github(&self) -> Option<GitHub> {
        if !self.report.pr_comment && !self.report.github_deployment {
            return None;
        }
        let g = self.report.github.as_ref().ok()?;
        match GitHub::new(&g.api_url, g.token.expose(), &g.repository) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("GitHub reporting is off: {}", e.message);
                None
            }
        }
    }
}
