//! `run`'s and `rollback`'s plans: every phase with its resolved settings, credentials and
//! targets, built before anything changes. An incomplete plan names every problem at once
//! (exit 2); `--dry-run` prints the plan; the deployment log starts from it.

use crate::backup::{self, Target};
use crate::cli::{RollbackArgs, RunArgs};
use crate::deploy::{Configured, Strategy};
use crate::error::Error;
use crate::migrate;
use crate::redact::Redactor;
use crate::report::log::{PlanRecord, PlannedPhase};
use crate::settings::{CheckEnvSettings, ReportSettings, Sources};
use crate::smoke;

/// A phase that runs with its settings, or is left out because the config says so.
pub enum Phase<T> {
    Run(T),
    Skip(String),
}

impl<T> Phase<T> {
    pub fn as_run(&self) -> Option<&T> {
        match self {
            Phase::Run(t) => Some(t),
            Phase::Skip(_) => None,
        }
    }
}

/// How far a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every phase.
    Deploy,
    /// `--dry-run`: the read-only parts, then the plan.
    DryRun,
    /// Started by a pull request: the plan, as a PR comment; production is never changed.
    PullRequest,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Deploy => "deploy",
            Mode::DryRun => "dry run",
            Mode::PullRequest => "pull request",
        }
    }

    /// Nothing in production changes.
    pub fn plans_only(self) -> bool {
        self != Mode::Deploy
    }
}

/// Everything `run` will do, resolved.
pub struct RunPlan {
    pub mode: Mode,
    pub image: Option<String>,
    pub app: Option<String>,
    pub app_url: Option<String>,
    pub preflight: Phase<CheckEnvSettings>,
    pub drift_gate: bool,
    /// `None` only for a pull request without secrets: the ledger cannot be read.
    pub migrate: Option<migrate::Settings>,
    pub backup: Phase<backup::Settings>,
    pub deploy: Phase<Configured>,
    pub smoke: Phase<smoke::Settings>,
    /// `[rollback] restore_database`: a failed smoke test restores the database too.
    pub restore_database: bool,
    pub report: ReportSettings,
    /// Every secret the run knows of.
    pub redactor: Redactor,
    /// What could not be planned (a fork's pull request has no secrets).
    pub unplanned: Vec<String>,
}

/// Everything `rollback` will do, resolved.
pub struct RollbackPlan {
    pub image: Option<String>,
    pub app: Option<String>,
    pub app_url: Option<String>,
    pub deployer: Configured,
    /// The backup to restore after the images went back, and its settings.
    pub restore: Option<(String, backup::Settings)>,
    pub report: ReportSettings,
    pub redactor: Redactor,
}

/// Problems found while planning, each with the phase it belongs to.
#[derive(Default)]
pub struct Problems(Vec<(&'static str, Error)>);

impl Problems {
    /// The value, or `None` with the error kept as the phase's problem.
    pub fn take<T>(&mut self, phase: &'static str, r: Result<T, Error>) -> Option<T> {
        match r {
            Ok(t) => Some(t),
            Err(e) => {
                self.0.push((phase, e));
                None
            }
        }
    }

    pub fn push(&mut self, phase: &'static str, e: Error) {
        self.0.push((phase, e));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, Error)> {
        self.0.iter()
    }

    /// One error naming every problem (exit 2): nothing was changed.
    pub fn into_error(self) -> Error {
        if self.0.len() == 1 {
            let (phase, mut e) = self.0.into_iter().next().expect("one problem");
            e.message = format!(
                "the plan is incomplete: {phase}: {}; nothing was changed",
                e.message
            );
            return e;
        }
        let mut message = format!(
            "the plan is incomplete ({} problems); nothing was changed:",
            self.0.len()
        );
        let mut hints = Vec::new();
        for (phase, e) in &self.0 {
            message.push_str(&format!("\n  - {phase}: {}", e.message));
            if let Some(h) = &e.hint {
                hints.push(format!("{phase}: {h}"));
            }
        }
        let mut err = Error::usage(message);
        if !hints.is_empty() {
            err = err.hint(hints.join("; "));
        }
        err
    }
}

/// Resolves `run`'s plan. Reads the config and the environment only: the ledger and the
/// machines are read by the run, still before any change.
pub fn run(src: &Sources<'_>, args: &RunArgs) -> Result<RunPlan, (Problems, Box<RunPlanParts>)> {
    let mode = if args.dry_run {
        Mode::DryRun
    } else if src.pull_request_event() {
        Mode::PullRequest
    } else {
        Mode::Deploy
    };
    let mut p = Problems::default();
    let loaded = src.loaded;

    let preflight = match src.contract() {
        Ok(Some(_)) => p.take("preflight", src.check_env(false)).map(Phase::Run),
        Ok(None) => Some(Phase::Skip("no [env] contract in the config".into())),
        Err(e) => {
            p.0.push(("preflight", e));
            None
        }
    };
    let migrate = p.take("migrate", src.migrate(&Default::default()));
    let backup = p
        .take("backup", src.backup(&Default::default()))
        .map(|s| match s.target {
            Target::None => {
                Phase::Skip("[backup] provider = \"none\": migrating without a backup".into())
            }
            _ => Phase::Run(s),
        });
    let image = p.take("deploy", src.image(args.image.as_deref())).flatten();
    let deploy = if src.deploy_disabled() {
        Some(Phase::Skip(
            "[deploy] provider = \"none\": nothing is deployed".into(),
        ))
    } else {
        let deployer = p.take("deploy", src.deployer());
        if image.is_none() {
            p.0.push((
                "deploy",
                Error::usage("no image to deploy").hint(
                    "pass --image REF (the action's `image` input), or set [deploy] provider = \"none\" to apply migrations only",
                ),
            ));
        }
        deployer.map(Phase::Run)
    };
    let smoke = if src.smoke_disabled() {
        Some(Phase::Skip(
            "[smoke] enabled = false: the deploy is not smoke-tested".into(),
        ))
    } else {
        p.take("smoke", src.smoke(&Default::default()))
            .map(Phase::Run)
    };
    let report = p.take("report", src.report("flightplan-log.json"));

    let parts = RunPlanParts {
        mode,
        image: image.clone(),
        app: src.fly_app(),
        app_url: src
            .app_url(None)
            .ok()
            .flatten()
            .map(|u| u.as_str().trim_end_matches('/').to_string()),
        report: report.clone(),
    };
    let (
        Some(preflight),
        Some(migrate),
        Some(backup),
        Some(deploy),
        Some(smoke),
        Some(report),
        true,
    ) = (
        preflight,
        migrate,
        backup,
        deploy,
        smoke,
        report,
        p.is_empty(),
    )
    else {
        return Err((p, Box::new(parts)));
    };
    Ok(RunPlan {
        mode,
        image,
        app: parts.app,
        app_url: parts.app_url,
        preflight,
        drift_gate: loaded.file.migrate.drift_gate == Some(true),
        migrate: Some(migrate),
        backup,
        deploy,
        smoke,
        restore_database: src.rollback_file().restore_database,
        report,
        redactor: src.redactor(),
        unplanned: Vec::new(),
    })
}

/// What is known of a plan that could not be completed: enough to write its report.
pub struct RunPlanParts {
    pub mode: Mode,
    pub image: Option<String>,
    pub app: Option<String>,
    pub app_url: Option<String>,
    pub report: Option<ReportSettings>,
}

/// A pull request's plan without secrets (a fork's): what can be planned from the config
/// and the files, with the rest named as not planned. Production is never read.
pub fn without_secrets(src: &Sources<'_>, problems: &Problems, parts: &RunPlanParts) -> RunPlan {
    let unplanned = problems
        .iter()
        .map(|(phase, e)| format!("{phase}: {}", e.message))
        .collect();
    // Without a token there is no comment; the summary and the log still go out.
    let report = parts
        .report
        .clone()
        .unwrap_or_else(|| src.report_unchecked("flightplan-log.json"));
    RunPlan {
        mode: Mode::PullRequest,
        image: parts.image.clone(),
        app: parts.app.clone(),
        app_url: parts.app_url.clone(),
        preflight: Phase::Skip("not planned: a pull request without secrets".into()),
        drift_gate: false,
        migrate: None,
        backup: Phase::Skip("not planned: a pull request without secrets".into()),
        deploy: Phase::Skip("a pull request never deploys".into()),
        smoke: Phase::Skip("a pull request never deploys".into()),
        restore_database: false,
        report,
        redactor: src.redactor(),
        unplanned,
    }
}

/// Resolves `rollback`'s plan: the deployer, the backup to restore (checked to exist
/// before anything stops) and the report.
pub fn rollback(src: &Sources<'_>, args: &RollbackArgs) -> Result<RollbackPlan, Problems> {
    let mut p = Problems::default();
    let image = p
        .take("rollback", src.image(args.image.as_deref()))
        .flatten();
    let deployer = p.take("rollback", src.deployer());
    let restore = match args
        .restore_backup
        .as_deref()
        .map(str::trim)
        .filter(|id| !id.is_empty())
    {
        Some(id) => p
            .take("restore", src.restore_backup(id, args.yes))
            .map(|s| Some((id.to_string(), s))),
        None => Some(None),
    };
    let report = p
        .take("report", src.report("flightplan-log.json"))
        .map(|mut r| {
            // A manual rollback belongs to no pull request.
            r.pr_comment = false;
            r
        });
    match (deployer, restore, report, p.is_empty()) {
        (Some(deployer), Some(restore), Some(report), true) => Ok(RollbackPlan {
            image,
            app: src.fly_app(),
            app_url: src
                .app_url(None)
                .ok()
                .flatten()
                .map(|u| u.as_str().trim_end_matches('/').to_string()),
            deployer,
            restore,
            report,
            redactor: src.redactor(),
        }),
        _ => Err(p),
    }
}

impl RunPlan {
    /// The plan as the log keeps it (the ledger's and machines' facts are added by the run).
    pub fn record(&self) -> PlanRecord {
        let mut phases = Vec::new();
        let skip = |name: &str, why: &str| PlannedPhase {
            name: name.into(),
            runs: false,
            what: why.into(),
            details: Vec::new(),
        };
        phases.push(match &self.preflight {
            Phase::Run(c) => PlannedPhase {
                name: "preflight".into(),
                runs: true,
                what: format!(
                    "check the environment contract ({} variables, {} groups)",
                    c.contract.vars.len(),
                    c.contract.groups.len()
                ),
                details: vec![format!("contract: {}", c.contract_path)],
            },
            Phase::Skip(why) => skip("preflight", why),
        });
        if self.drift_gate {
            phases.push(PlannedPhase {
                name: "drift".into(),
                runs: true,
                what: "stop if production's schema differs from what its applied files build"
                    .into(),
                details: Vec::new(),
            });
        }
        phases.push(match &self.backup {
            Phase::Run(b) => PlannedPhase {
                name: "backup".into(),
                runs: true,
                what: describe_backup(b),
                details: vec![format!("keep the newest {}", b.keep)],
            },
            Phase::Skip(why) => skip("backup", why),
        });
        phases.push(match &self.migrate {
            Some(m) => PlannedPhase {
                name: "migrate".into(),
                runs: true,
                what: format!(
                    "apply the pending files of {} ({} layout) to {}",
                    m.dir.display(),
                    m.layout.name(),
                    m.url
                ),
                details: vec![
                    format!("tracking table {}", m.table),
                    format!(
                        "lock_timeout {}s per file, waiting up to {}s for the migration lock",
                        m.lock_timeout.as_secs_f64(),
                        m.lock_wait.as_secs()
                    ),
                ],
            },
            None => skip("migrate", "not planned: no DATABASE_URL"),
        });
        phases.push(match &self.deploy {
            Phase::Run(d) => PlannedPhase {
                name: "deploy".into(),
                runs: true,
                what: format!(
                    "roll {} onto {}",
                    self.image.as_deref().unwrap_or("the image"),
                    describe_deployer(d)
                ),
                details: Vec::new(),
            },
            Phase::Skip(why) => skip("deploy", why),
        });
        phases.push(match &self.smoke {
            Phase::Run(s) => {
                let mut details: Vec<String> = s
                    .login
                    .iter()
                    .chain(&s.checks)
                    .map(|c| format!("{} {} {}", c.name, c.method, c.path))
                    .collect();
                for id in &s.identities {
                    details.push(format!(
                        "as `{}` (own session): {}",
                        id.name,
                        std::iter::once(&id.login)
                            .chain(&id.checks)
                            .map(|c| format!("{} {} {}", c.name, c.method, c.path))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if let Some(w) = &s.watch {
                    details.push(format!(
                        "watch {}s: p95 ≤ {} ms, error rate ≤ {}%",
                        w.duration.as_secs(),
                        w.p95_budget.as_millis(),
                        w.max_error_rate * 100.0
                    ));
                }
                PlannedPhase {
                    name: "smoke".into(),
                    runs: true,
                    what: format!(
                        "test {} ({} check(s)); a failure rolls the machines back{}",
                        s.base,
                        s.login.iter().count()
                            + s.checks.len()
                            + s.identities
                                .iter()
                                .map(|i| 1 + i.checks.len())
                                .sum::<usize>(),
                        if self.restore_database {
                            ", then restores the database"
                        } else {
                            ""
                        }
                    ),
                    details,
                }
            }
            Phase::Skip(why) => skip("smoke", why),
        });
        phases.push(PlannedPhase {
            name: "report".into(),
            runs: true,
            what: "write the deployment log everywhere people look".into(),
            details: report_targets(&self.report, self.mode),
        });
        PlanRecord {
            mode: self.mode.label().into(),
            phases,
            pending: None,
            machines: Vec::new(),
            unplanned: self.unplanned.clone(),
        }
    }
}

/// "a Neon branch of `main` (project p-1)", "a pg_dump archive of … in backups/".
fn describe_backup(b: &backup::Settings) -> String {
    match &b.target {
        Target::Neon(n) => format!(
            "a Neon branch of {} (project {})",
            n.branch
                .as_deref()
                .map_or_else(|| "the default branch".to_string(), |b| format!("`{b}`")),
            n.project_id
        ),
        Target::PgDump(p) => format!(
            "a pg_dump archive of {} in {}, verified by a full read",
            p.url,
            p.dir.display()
        ),
        Target::None => "none".into(),
    }
}

fn describe_deployer(d: &Configured) -> String {
    match d {
        Configured::Fly(f) => format!(
            "the `{}` machines of Fly app `{}` ({}, at most {} at a time; each waited for up to {}s)",
            f.group,
            f.api.app(),
            match f.strategy {
                Strategy::Rolling => "rolling",
                Strategy::Canary => "canary first",
            },
            match f.max_unavailable {
                crate::deploy::MaxUnavailable::Count(n) => n.to_string(),
                crate::deploy::MaxUnavailable::Fraction(x) => format!("{}%", x * 100.0),
            },
            f.wait_timeout.as_secs()
        ),
        Configured::Command(c) => format!("the configured command `{}`", c.command),
    }
}

fn report_targets(r: &ReportSettings, mode: Mode) -> Vec<String> {
    let mut out = vec![
        format!("log {}", r.log.display()),
        format!("summary {}", r.summary.display()),
    ];
    match (&r.github, mode) {
        (Ok(g), Mode::Deploy) => {
            if r.pr_comment {
                out.push(format!(
                    "sticky comment on the merged pull request of {}",
                    g.sha
                ));
            }
            if r.github_deployment {
                out.push(format!(
                    "GitHub Deployment to `{}` in {}",
                    r.environment, g.repository
                ));
            }
        }
        (Ok(g), Mode::PullRequest) if r.pr_comment => out.push(format!(
            "the plan as a sticky comment on the pull request ({})",
            g.repository
        )),
        (Ok(_), _) => out.push("no PR comment or Deployment (dry run)".into()),
        (Err(why), _) => out.push(format!("no GitHub report: {why}")),
    }
    if r.outputs.is_some() {
        out.push("step outputs".into());
    }
    out
}
