//! `run` and `rollback`: their plans executed phase by phase, each phase's typed result
//! recorded into the deployment log, and the log written everywhere people look, also
//! when a step fails or the run is cancelled (SIGTERM/SIGINT, as a CI cancellation sends).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::clock::Utc;
use crate::deploy::{Deployer, RestoreDb};
use crate::error::Error;
use crate::output::Outcome;
use crate::plan::{Mode, Phase, Problems, RollbackPlan, RunPlan, RunPlanParts};
use crate::redact::Redactor;
use crate::report::github::{DeployState, GitHub};
use crate::report::log::{
    AppliedMigration, BackupRecord, DriftRecord, Issue, PlannedFile, PlannedMachine, SmokeRecord,
    Status, Step, StepStatus, WatchRecord,
};
use crate::report::{DeploymentLog, actions, markdown};
use crate::settings::{ReportSettings, Sources};

/// The run's shared state: the log being filled in, and when the run started.
pub(crate) struct Recorder {
    pub(crate) log: DeploymentLog,
    pub(crate) t0: Instant,
    pub(crate) redactor: Redactor,
    pub(crate) current: Option<(String, u64)>,
}

impl Recorder {
    fn new(log: DeploymentLog, redactor: Redactor) -> Rc<RefCell<Recorder>> {
        Rc::new(RefCell::new(Recorder {
            log,
            t0: Instant::now(),
            redactor,
            current: None,
        }))
    }

    pub(crate) fn elapsed(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    pub(crate) fn begin(&mut self, name: &str) {
        tracing::info!("── {name}");
        self.current = Some((name.to_string(), self.elapsed()));
    }

    pub(crate) fn end(
        &mut self,
        status: StepStatus,
        summary: impl Into<String>,
        mut details: Value,
    ) {
        let (name, started) = self.current.take().unwrap_or_default();
        self.redactor.scrub_json(&mut details);
        let summary = self.redactor.scrub(&summary.into());
        let now = self.elapsed();
        self.log.steps.push(Step {
            name,
            status,
            started_ms: started,
            duration_ms: now - started,
            summary,
            details,
        });
    }

    /// A step that did not run, with why: left out by the config, or a plan's "would".
    pub(crate) fn note(&mut self, name: &str, status: StepStatus, why: &str) {
        let at = self.elapsed();
        let summary = self.redactor.scrub(why);
        self.log.steps.push(Step {
            name: name.into(),
            status,
            started_ms: at,
            duration_ms: 0,
            summary,
            details: Value::Null,
        });
    }

    pub(crate) fn skip(&mut self, name: &str, why: &str) {
        self.note(name, StepStatus::Skipped, why);
    }

    pub(crate) fn issue(&mut self, step: &str, e: &Error) {
        let mut e = e.clone();
        self.redactor.scrub_error(&mut e);
        self.log.issues.push(Issue {
            step: step.into(),
            message: e.message.clone(),
            hint: e.hint.clone(),
            location: e.location(),
            request_id: e.request_id.clone(),
        });
    }

    /// Ends the current step as failed with the error.
    pub(crate) fn fail(&mut self, e: &Error, details: Value) {
        let step = self
            .current
            .as_ref()
            .map(|c| c.0.clone())
            .unwrap_or_default();
        self.issue(&step, e);
        self.end(StepStatus::Failed, e.message.clone(), details);
    }
}

type State = Rc<RefCell<Recorder>>;

/// `flightplan run`: `planned` is the resolved plan, or what stopped it.
pub async fn run(
    src: &Sources<'_>,
    planned: Result<RunPlan, (Problems, Box<RunPlanParts>)>,
) -> Result<Outcome, Error> {
    let plan = match planned {
        Ok(p) => p,
        // A pull request from a fork gets no secrets from GitHub: plan what the config and
        // the files say, and name the rest, instead of failing on what it was never given.
        Err((problems, parts)) if src.pull_request_event() && src.var("DATABASE_URL").is_none() => {
            crate::plan::without_secrets(src, &problems, &parts)
        }
        Err((problems, parts)) => return Err(refused(src, problems, &parts)),
    };
    let gha = src.gha();
    // Every secret is masked before anything else is printed.
    plan.redactor.announce(gha);

    let mut log = DeploymentLog::new("run", &plan.report.environment, Utc::now().rfc3339());
    log.dry_run = plan.mode.plans_only();
    log.app = plan.app.clone();
    log.app_url = plan.app_url.clone();
    log.image = plan.image.clone();
    fill_context(&mut log, &src.lookup());
    log.plan = Some(plan.record());
    let state = Recorder::new(log, plan.redactor.clone());

    // A dry run writes no comment and no Deployment; a pull request only its plan comment.
    let github = match plan.mode {
        Mode::DryRun => None,
        Mode::PullRequest if !plan.report.pr_comment => None,
        _ => client(&plan.report),
    };
    let deployment: Rc<RefCell<Option<u64>>> = Rc::new(RefCell::new(None));

    let interrupted = tokio::select! {
        status = phases(src, &plan, &state, github.as_ref(), &deployment) => {
            state.borrow_mut().log.status = status;
            false
        }
        _ = cancelled() => true,
    };
    if interrupted {
        on_interrupt(&state, plan.deploy.as_run(), plan.image.as_deref()).await;
    }
    let mut log = {
        let mut st = state.borrow_mut();
        st.log.finished_at = Some(Utc::now().rfc3339());
        st.log.duration_ms = st.elapsed();
        st.log.clone()
    };
    let deployment = *deployment.borrow();
    publish(
        &mut log,
        &plan.report,
        github.as_ref(),
        deployment,
        &plan.redactor,
    )
    .await;
    Ok(outcome(&log))
}

/// An incomplete plan: the summary and the log say what is missing (no PR comment, no
/// Deployment: nothing started), and the error names every problem (exit 2).
fn refused(src: &Sources<'_>, problems: Problems, parts: &RunPlanParts) -> Error {
    let redactor = src.redactor();
    redactor.announce(src.gha());
    let report = parts
        .report
        .clone()
        .unwrap_or_else(|| src.report_unchecked("flightplan-log.json"));
    let mut log = DeploymentLog::new("run", &report.environment, Utc::now().rfc3339());
    log.dry_run = parts.mode.plans_only();
    log.app = parts.app.clone();
    log.app_url = parts.app_url.clone();
    log.image = parts.image.clone();
    fill_context(&mut log, &src.lookup());
    let state = Recorder::new(log, redactor.clone());
    {
        let mut st = state.borrow_mut();
        st.begin("plan");
        for (phase, e) in problems.iter() {
            st.issue(phase, e);
        }
        let n = problems.iter().count();
        st.end(
            StepStatus::Failed,
            format!("the plan is incomplete: {n} problem(s)"),
            Value::Null,
        );
        st.log.status = Status::Failed;
        st.log.resolution = Some(
            "stopped before any change: fix every problem listed and run again (nothing was backed up, migrated or deployed)".into(),
        );
        st.log.finished_at = Some(Utc::now().rfc3339());
    }
    let mut log = state.borrow().log.clone();
    write_summary_and_log(&mut log, &report, markdown::summary, &redactor);
    let mut e = problems.into_error();
    redactor.scrub_error(&mut e);
    e
}

/// The GitHub client for the report targets, when they have one.
fn client(report: &ReportSettings) -> Option<GitHub> {
    let g = report.github.as_ref().ok()?;
    if !report.pr_comment && !report.github_deployment {
        return None;
    }
    match GitHub::new(&g.api_url, g.token.expose(), &g.repository) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("GitHub reporting is off: {}", e.message);
            None
        }
    }
}

/// The phases; returns the final status. Each records its step into the log.
async fn phases(
    src: &Sources<'_>,
    plan: &RunPlan,
    state: &State,
    github: Option<&GitHub>,
    deployment: &Rc<RefCell<Option<u64>>>,
) -> Status {
    let plans_only = plan.mode.plans_only();

    // 1. preflight: nothing changes before it passes.
    match &plan.preflight {
        Phase::Run(c) => {
            state.borrow_mut().begin("preflight");
            let checked = crate::preflight::check(
                &c.contract,
                &c.contract_path,
                None,
                &|k| src.process_var(k),
                src.env_file(),
                plan.redactor.clone(),
                false,
            )
            .await;
            let json = Value::Object(checked.to_outcome().json);
            let mut st = state.borrow_mut();
            if !checked.ok() {
                let e = checked
                    .error
                    .clone()
                    .unwrap_or_else(|| Error::failure(checked.failure_message()));
                st.fail(&e, json);
                st.log.resolution =
                    Some("stopped before any change: fix the environment and run again".into());
                return Status::Failed;
            }
            st.end(
                StepStatus::Ok,
                format!("{} checks passed", checked.checks.len()),
                json,
            );
        }
        Phase::Skip(why) => state.borrow_mut().skip("preflight", why),
    }

    // 2. The reads the plan needs, still before any change: the pending files from the
    // live ledger, the machines and their batches, and the drift gate.
    let Some(migrate) = &plan.migrate else {
        let mut st = state.borrow_mut();
        for name in ["backup", "migrate", "deploy", "smoke"] {
            st.skip(name, "not planned: a pull request without secrets (GitHub gives forks none); it runs on the merge to main");
        }
        st.log.resolution = Some(
            "a pull request from a fork (or without secrets): GitHub gives such runs no secrets, so the environment check and the plan against the live database were left out; they run on the merge to main".into(),
        );
        return Status::DryRun;
    };
    state.borrow_mut().begin("plan");
    let pending = match crate::migrate::pending(migrate).await {
        Ok(p) => p,
        Err(e) => return stop_before_changes(state, &e),
    };
    {
        let mut st = state.borrow_mut();
        st.log.migrations_pending = pending.files.iter().map(|f| f.filename.clone()).collect();
        if let Some(p) = st.log.plan.as_mut() {
            p.pending = Some(
                pending
                    .files
                    .iter()
                    .map(|f| PlannedFile {
                        filename: f.filename.clone(),
                        transaction: f.transaction,
                        checksum: f.checksum.clone(),
                    })
                    .collect(),
            );
        }
    }
    if let Some(e) = &pending.blocker {
        return stop_before_changes(state, e);
    }
    // The watch's metrics token is tried now: a refused token stops the run before any
    // change, rather than after a deploy it could then not judge.
    if !plans_only
        && let Phase::Run(s) = &plan.smoke
        && let Some(m) = s.watch.as_ref().and_then(|w| w.metrics.as_ref())
        && let Err(e) = m.probe().await
    {
        return stop_before_changes(state, &e);
    }
    let mut batches = 0;
    if let Phase::Run(deployer) = &plan.deploy {
        let preview = deployer.preview(plan.image.as_deref()).await;
        if let Some(e) = &preview.error {
            return stop_before_changes(state, e);
        }
        batches = preview
            .machines
            .iter()
            .filter_map(|m| m.batch)
            .max()
            .unwrap_or(0);
        let mut st = state.borrow_mut();
        if let Some(p) = st.log.plan.as_mut() {
            p.machines = preview
                .machines
                .iter()
                .map(|m| PlannedMachine {
                    id: m.id.clone(),
                    region: m.region.clone(),
                    image: m.image.clone(),
                    batch: m.batch,
                })
                .collect();
        }
    }
    {
        let mut st = state.borrow_mut();
        let machines = st.log.plan.as_ref().map_or(0, |p| p.machines.len());
        let summary = match &plan.deploy {
            Phase::Run(_) => format!(
                "{} pending file(s); {machines} machine(s), {batches} batch(es) to update",
                pending.files.len()
            ),
            Phase::Skip(_) => format!("{} pending file(s)", pending.files.len()),
        };
        let details = serde_json::to_value(&st.log.plan).unwrap_or(Value::Null);
        st.end(StepStatus::Ok, summary, details);
    }

    // Drift gate: production must still match its files before anything changes.
    if plan.drift_gate {
        state.borrow_mut().begin("drift");
        let result = crate::migrate::drift::compare(migrate).await;
        let mut st = state.borrow_mut();
        match result {
            Ok((drift, compared)) => {
                let json = Value::Object(crate::migrate::drift::outcome(&drift, compared).json);
                st.log.drift = drift
                    .iter()
                    .map(|d| DriftRecord {
                        kind: d.kind.clone(),
                        object: d.object.clone(),
                        expected: d.expected.clone(),
                        actual: d.actual.clone(),
                    })
                    .collect();
                if !drift.is_empty() {
                    let e = Error::failure(format!(
                        "the database has drifted from its migration files in {} place(s)",
                        drift.len()
                    ));
                    st.fail(&e, json);
                    st.log.resolution = Some(
                        "stopped before any change: the schema differs from the migration files"
                            .into(),
                    );
                    return Status::Failed;
                }
                st.end(StepStatus::Ok, "no drift", json);
            }
            Err(e) => {
                st.fail(&e, Value::Null);
                st.log.resolution = Some("stopped before any change".into());
                return Status::Failed;
            }
        }
    }

    if plans_only {
        let mut st = state.borrow_mut();
        let would = |skip: Option<String>, yes: String| match skip {
            Some(why) => format!("left out: {why}"),
            None => yes,
        };
        st.note(
            "backup",
            StepStatus::Planned,
            &would(
                skip_reason_of(&plan.backup),
                "would take a verified backup first".into(),
            ),
        );
        st.note(
            "migrate",
            StepStatus::Planned,
            &format!("would apply {} pending file(s)", pending.files.len()),
        );
        st.note(
            "deploy",
            StepStatus::Planned,
            &would(
                skip_reason_of(&plan.deploy),
                format!(
                    "would roll {} onto the machines in {batches} batch(es)",
                    plan.image.as_deref().unwrap_or("the image")
                ),
            ),
        );
        st.note(
            "smoke",
            StepStatus::Planned,
            &would(
                skip_reason_of(&plan.smoke),
                "would smoke-test the app and roll back on failure".into(),
            ),
        );
        st.log.resolution = Some(match plan.mode {
            Mode::PullRequest => {
                "a pull request never deploys: this is the plan; it runs on the merge to main"
                    .into()
            }
            _ => "dry run: nothing was changed".into(),
        });
        return Status::DryRun;
    }

    // The first change is about to happen: the GitHub Deployment starts now.
    if let Some(gh) = github
        && plan.report.github_deployment
    {
        start_deployment(gh, state, deployment).await;
    }

    // 3. backup: nothing migrates without a verified backup.
    match &plan.backup {
        Phase::Run(settings) => {
            state.borrow_mut().begin("backup");
            let taken = crate::backup::take(settings).await;
            let mut st = state.borrow_mut();
            match taken {
                Ok(Some(b)) => {
                    st.log.backup = Some(BackupRecord {
                        provider: b.provider.to_string(),
                        id: b.id.clone(),
                        name: Some(b.name.clone()),
                    });
                    let json = serde_json::to_value(&b).unwrap_or(Value::Null);
                    st.end(
                        StepStatus::Ok,
                        format!("{} backup {}", b.provider, b.id),
                        json,
                    );
                }
                Ok(None) => st.end(StepStatus::Ok, "no backup taken", Value::Null),
                Err(e) => {
                    st.fail(&e, Value::Null);
                    st.log.resolution = Some("stopped before migrating: no verified backup".into());
                    return Status::Failed;
                }
            }
        }
        Phase::Skip(why) => state.borrow_mut().skip("backup", why),
    }

    // 4. migrate: nothing deploys after a failed migration.
    state.borrow_mut().begin("migrate");
    let applied = crate::migrate::apply_pending(migrate).await;
    {
        let mut st = state.borrow_mut();
        st.log.migrations_applied = applied
            .files
            .iter()
            .map(|a| AppliedMigration {
                filename: a.filename.clone(),
                duration_ms: a.duration_ms,
            })
            .collect();
        let json = Value::Object(applied.json.clone());
        if let Some(e) = &applied.error {
            st.fail(e, json);
            let backup = st
                .log
                .backup
                .as_ref()
                .map(|b| {
                    format!(
                        " Backup {} is available: `flightplan backup restore {} --yes`.",
                        b.id, b.id
                    )
                })
                .unwrap_or_default();
            st.log.resolution = Some(format!(
                "not deployed: files applied before the failure stay applied, the failing file was rolled back.{backup}"
            ));
            return Status::Failed;
        }
        st.end(
            StepStatus::Ok,
            format!(
                "{} applied, {} already applied",
                applied.files.len(),
                applied.skipped
            ),
            json,
        );
    }

    // 5. deploy
    let deployer = match &plan.deploy {
        Phase::Run(d) => Some(d),
        Phase::Skip(why) => {
            state.borrow_mut().skip("deploy", why);
            None
        }
    };
    if let (Some(deployer), Some(image)) = (deployer, plan.image.as_deref()) {
        state.borrow_mut().begin("deploy");
        let report = deployer.deploy(image).await;
        let mut st = state.borrow_mut();
        st.log.previous_images = report.previous_images.clone();
        let json = Value::Object(report.json());
        if let Some(e) = &report.error {
            st.fail(e, json);
            st.log.resolution = Some(if report.reverted {
                "every machine already updated was put back on its previous config; migrations stay applied".into()
            } else {
                "deploy failed before any machine changed; migrations stay applied".into()
            });
            return if report.reverted {
                Status::RolledBack
            } else {
                Status::Failed
            };
        }
        st.end(
            StepStatus::Ok,
            format!("{} machine(s) on {image}", report.machines.len()),
            json,
        );
    }

    // 6. smoke; a failure rolls the machines back (and then, when asked, the database).
    let Phase::Run(smoke) = &plan.smoke else {
        if let Phase::Skip(why) = &plan.smoke {
            state.borrow_mut().skip("smoke", why);
        }
        return Status::Success;
    };
    if smoke_phase(smoke, state).await {
        let mut st = state.borrow_mut();
        if let Some(why) = st.log.watch.as_ref().and_then(|w| w.inconclusive.clone()) {
            // Not a breach, so nothing rolls back; not a pass either, so it is not a success.
            st.log.resolution = Some(format!(
                "deployed and smoke-tested, but the watch window's production metrics were not judged: {why}"
            ));
            return Status::Partial;
        }
        return Status::Success;
    }
    let Some(deployer) = deployer else {
        state.borrow_mut().log.resolution = Some(
            "smoke tests failed; nothing was deployed, so there is nothing to roll back".into(),
        );
        return Status::Failed;
    };
    roll_back(plan, deployer, state).await
}

/// The phase's skip reason, for the dry run's "left out" lines.
fn skip_reason_of<T>(p: &Phase<T>) -> Option<String> {
    match p {
        Phase::Skip(why) => Some(why.clone()),
        Phase::Run(_) => None,
    }
}

/// A read of the plan failed: end the plan step, nothing changed.
fn stop_before_changes(state: &State, e: &Error) -> Status {
    let mut st = state.borrow_mut();
    st.fail(e, Value::Null);
    st.log.resolution =
        Some("stopped before any change: nothing was backed up, migrated or deployed".into());
    Status::Failed
}

/// The smoke tests and the watch window; `true` when they passed.
async fn smoke_phase(settings: &crate::smoke::Settings, state: &State) -> bool {
    state.borrow_mut().begin("smoke");
    let result = crate::smoke::check(settings).await;
    let mut st = state.borrow_mut();
    let smoked = match result {
        Ok(s) => s,
        Err(e) => {
            st.fail(&e, Value::Null);
            return false;
        }
    };
    let redactor = st.redactor.clone();
    st.log.smoke = smoked
        .checks
        .iter()
        .map(|c| SmokeRecord {
            name: match &c.identity {
                Some(i) => format!("[{i}] {}", c.name),
                None => c.name.clone(),
            },
            ok: c.ok,
            status: c.status,
            latency_ms: c.latency_ms,
            attempts: c.attempts,
            reason: c.reason.as_deref().map(|r| redactor.scrub(r)),
        })
        .collect();
    if let Some(w) = &smoked.watch {
        st.log.watch = Some(WatchRecord {
            p50_ms: w.p50_ms.unwrap_or(0) as f64,
            p95_ms: w.p95_ms.unwrap_or(0) as f64,
            error_rate: w.error_rate,
            intervals_p95_ms: w
                .intervals
                .iter()
                .filter_map(|i| i.p95_ms.map(|v| v as f64))
                .collect(),
            metrics_verdict: w.metrics.as_ref().map(|m| {
                serde_json::to_value(m.verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            }),
            figures: w
                .metrics
                .iter()
                .flat_map(|m| &m.figures)
                .map(|f| crate::report::log::FigureRecord {
                    name: f.name.clone(),
                    unit: f.unit.to_string(),
                    value: f.value,
                    budget: f.budget,
                    ok: f.ok,
                    series: f.series.clone(),
                    note: f.note.clone(),
                })
                .collect(),
            inconclusive: w.inconclusive.clone(),
        });
    }
    let json = Value::Object(smoked.to_outcome(settings).json);
    match &smoked.error {
        None if smoked.ok => {
            let n = st.log.smoke.len();
            st.end(StepStatus::Ok, format!("{n} check(s) passed"), json);
            true
        }
        e => {
            let e = e
                .clone()
                .unwrap_or_else(|| Error::failure("smoke tests failed"));
            st.fail(&e, json);
            false
        }
    }
}

/// After a failed smoke test: every machine back to its previous image first, then, only
/// when `[rollback] restore_database` asks for it, the database restore as a step of its
/// own. The image rollback never waits on, or depends on, the restore.
async fn roll_back(plan: &RunPlan, deployer: &crate::deploy::Configured, state: &State) -> Status {
    state.borrow_mut().begin("rollback");
    let report = deployer.rollback(None, None).await;
    let images_back = report.error.is_none();
    {
        let mut st = state.borrow_mut();
        let json = Value::Object(report.json());
        if let Some(e) = &report.error {
            st.fail(e, json);
        } else {
            st.end(
                StepStatus::Ok,
                "machines back on their previous images",
                json,
            );
        }
    }
    let backup = state.borrow().log.backup.clone();
    let restore = match (&plan.backup, plan.restore_database, backup) {
        (Phase::Run(settings), true, Some(b)) => Some((settings, b)),
        _ => None,
    };
    let mut restored = None;
    if let Some((settings, b)) = restore {
        state.borrow_mut().begin("restore");
        let id = b.id.clone();
        let job: RestoreDb<'_> =
            Box::pin(async move { crate::backup::restore(settings, &id).await });
        let report = deployer.restore_database(job).await;
        let mut st = state.borrow_mut();
        let json = Value::Object(report.json());
        match &report.error {
            None => {
                st.end(
                    StepStatus::Ok,
                    format!("database restored from backup {}", b.id),
                    json,
                );
                restored = Some(true);
            }
            Some(e) => {
                st.fail(e, json);
                restored = Some(false);
            }
        }
    }
    let mut st = state.borrow_mut();
    let db = match restored {
        None if plan.restore_database => {
            "; the database was not restored: no backup was taken".to_string()
        }
        None => "; the database was not restored ([rollback] restore_database = false)".into(),
        Some(true) => "; the database was then restored from the backup".into(),
        Some(false) => format!(
            "; restoring the database FAILED (see the restore step): it is still on the new schema{}",
            st.log
                .backup
                .as_ref()
                .map(|b| format!(
                    ", and backup {} is available (`flightplan backup restore {} --yes`)",
                    b.id, b.id
                ))
                .unwrap_or_default()
        ),
    };
    if images_back {
        st.log.resolution = Some(format!(
            "smoke tests failed: machines rolled back to their previous images{db}"
        ));
        Status::RolledBack
    } else {
        st.log.resolution = Some(format!(
            "smoke tests failed and the image rollback failed too: check the machines now (`flightplan rollback`){db}"
        ));
        Status::Failed
    }
}

/// Cancelled while a step ran: the step is marked, and where machines are now is said,
/// so a group left on mixed images is never reported without it.
async fn on_interrupt(
    state: &State,
    deployer: Option<&crate::deploy::Configured>,
    image: Option<&str>,
) {
    tracing::warn!("interrupted: writing the deployment log before exiting");
    // The phases' future is gone; the leases it held are not (issue 16).
    crate::deploy::leases::release_all(crate::deploy::leases::RELEASE_WITHIN).await;
    let step = state.borrow().current.as_ref().map(|c| c.0.clone());
    let machines = match (step.as_deref(), deployer) {
        (Some("deploy" | "rollback" | "restore"), Some(d)) => machines_now(d, image).await,
        _ => None,
    };
    let mut st = state.borrow_mut();
    let mut where_now = String::new();
    if st.current.is_some() {
        let e = Error::failure("interrupted (SIGTERM/SIGINT) while this step ran");
        let step = st.current.as_ref().map(|c| c.0.clone()).unwrap_or_default();
        st.issue(&step, &e);
        let (summary, details) = match machines {
            Some(report) => {
                where_now = images_note(&report);
                (
                    format!("interrupted: {where_now}"),
                    Value::Object(report.json()),
                )
            }
            None => ("interrupted".to_string(), Value::Null),
        };
        st.end(StepStatus::Interrupted, summary, details);
    }
    st.log.status = Status::Failed;
    st.log.resolution = Some(if where_now.is_empty() {
        "the run was cancelled; a migration in flight was rolled back by the database, and machines already \
         updated keep their new image (see the deploy step); run `flightplan run` again or `flightplan rollback`"
            .into()
    } else {
        format!(
            "the run was cancelled while machines were changing: {where_now}; run `flightplan run` again \
             (it finishes the rollout) or `flightplan rollback` (each machine back to its recorded previous image)"
        )
    });
}

/// `flightplan rollback`: the images back (or forward to `--image`), then the database
/// restore when asked for, recorded and reported like `run` (JSON log, summary, a GitHub
/// Deployment of the image rolled to, outputs). No PR comment: a manual rollback belongs
/// to no pull request.
pub async fn rollback(
    src: &Sources<'_>,
    planned: Result<RollbackPlan, Problems>,
) -> Result<Outcome, Error> {
    let plan = planned.map_err(|p| {
        let mut e = p.into_error();
        src.redactor().scrub_error(&mut e);
        e
    })?;
    plan.redactor.announce(src.gha());
    // A mistyped backup id must not cost a rollback: it is looked up before anything moves.
    if let Some((id, settings)) = &plan.restore {
        crate::backup::find(settings, id).await.map_err(|mut e| {
            e.message = format!("{}; nothing was changed", e.message);
            plan.redactor.scrub_error(&mut e);
            e
        })?;
    }
    let mut log = DeploymentLog::new("rollback", &plan.report.environment, Utc::now().rfc3339());
    log.app = plan.app.clone();
    log.app_url = plan.app_url.clone();
    log.image = plan.image.clone();
    fill_context(&mut log, &src.lookup());
    let state = Recorder::new(log, plan.redactor.clone());
    let github = client(&plan.report);
    let deployment: Rc<RefCell<Option<u64>>> = Rc::new(RefCell::new(None));
    if let Some(gh) = &github
        && plan.report.github_deployment
    {
        start_deployment(gh, &state, &deployment).await;
    }

    let work = async {
        state.borrow_mut().begin("rollback");
        let report = plan.deployer.rollback(plan.image.as_deref(), None).await;
        let mut restored = None;
        if report.error.is_none()
            && let Some((id, settings)) = &plan.restore
        {
            state.borrow_mut().current = None;
            record_rollback(&state, &report);
            state.borrow_mut().begin("restore");
            let job: RestoreDb<'_> =
                Box::pin(async move { crate::backup::restore(settings, id).await });
            restored = Some(plan.deployer.restore_database(job).await);
        }
        (report, restored)
    };
    let outcome_parts = tokio::select! {
        r = work => Some(r),
        _ = cancelled() => None,
    };
    let Some((report, restored)) = outcome_parts else {
        on_interrupt(&state, Some(&plan.deployer), plan.image.as_deref()).await;
        let mut log = state.borrow().log.clone();
        log.finished_at = Some(Utc::now().rfc3339());
        let id = *deployment.borrow();
        publish(&mut log, &plan.report, github.as_ref(), id, &plan.redactor).await;
        return Ok(outcome(&log));
    };
    if restored.is_none() {
        record_rollback(&state, &report);
    }
    let deploy_text = report.text();
    let mut fields = report.json();
    {
        let mut st = state.borrow_mut();
        let ok = report.error.is_none();
        match &restored {
            Some(r) => {
                if let Some(d) = &r.database {
                    fields.insert("database".into(), json!(d));
                }
                let json = Value::Object(r.json());
                match &r.error {
                    None => {
                        let id = r
                            .database
                            .as_ref()
                            .map(|d| d.backup.id.clone())
                            .unwrap_or_default();
                        st.end(
                            StepStatus::Ok,
                            format!("database restored from backup {id}"),
                            json,
                        );
                        st.log.status = Status::RolledBack;
                        st.log.resolution = Some("manual rollback: every machine is on the image it was rolled to, then the database was restored from the backup".into());
                    }
                    Some(e) => {
                        st.fail(e, json);
                        st.log.status = Status::Failed;
                        st.log.resolution = Some("the machines were rolled back, but restoring the database failed: it is as it was before the rollback (see the restore step)".into());
                    }
                }
            }
            None if ok => {
                st.log.status = Status::RolledBack;
                st.log.resolution =
                    Some("manual rollback: every machine is on the image it was rolled to".into());
            }
            None => {
                st.log.status = Status::Failed;
                st.log.resolution = Some(format!(
                    "the rollback failed: check the machines (`flightplan deploy` / `rollback --image`){}",
                    if plan.restore.is_some() {
                        "; the database was not touched"
                    } else {
                        ""
                    }
                ));
            }
        }
        st.log.finished_at = Some(Utc::now().rfc3339());
        st.log.duration_ms = st.elapsed();
    }
    let mut log = state.borrow().log.clone();
    let deployment = *deployment.borrow();
    publish(
        &mut log,
        &plan.report,
        github.as_ref(),
        deployment,
        &plan.redactor,
    )
    .await;
    // The command's own result stays what `deploy` documents (app, image, previous_images,
    // machines, reverted, database), with the log's status and where it went added.
    let mut out = outcome(&log);
    fields.extend(out.json);
    out.json = fields;
    let mut restored_text = String::new();
    if let Some(r) = &restored
        && let Some(d) = &r.database
    {
        restored_text = format!(
            "database restored from backup {} ({})\n",
            d.backup.id, d.target
        );
    }
    out.text = format!(
        "{}{restored_text}{}",
        plan.redactor.scrub(&deploy_text),
        log.outputs
            .iter()
            .map(|o| format!("→ {o}\n"))
            .collect::<String>()
    );
    if log.status == Status::RolledBack {
        out.ok = true;
        out.error = None;
    }
    Ok(out)
}

/// The rollback step, from the deployer's report.
fn record_rollback(state: &State, report: &crate::deploy::Report) {
    let mut st = state.borrow_mut();
    if st.current.is_none() {
        st.begin("rollback");
    }
    st.log.previous_images = report.previous_images.clone();
    if let Some(img) = &report.image {
        st.log.image = Some(img.clone());
    }
    let json = Value::Object(report.json());
    match &report.error {
        None => {
            let n = report.machines.len();
            st.end(StepStatus::Ok, format!("{n} machine(s) rolled back"), json);
        }
        Some(e) => st.fail(e, json),
    }
}

async fn start_deployment(gh: &GitHub, state: &State, deployment: &Rc<RefCell<Option<u64>>>) {
    let (sha, environment, image, run_url, app_url, command) = {
        let st = state.borrow();
        (
            st.log.context.commit.clone().unwrap_or_default(),
            st.log.environment.clone(),
            st.log.image.clone(),
            st.log.context.run_url.clone(),
            st.log.app_url.clone(),
            st.log.command.clone(),
        )
    };
    let description = format!(
        "flightplan {command}{}",
        image.as_ref().map(|i| format!(": {i}")).unwrap_or_default()
    );
    match gh
        .create_deployment(&sha, &environment, &description, json!({ "image": image }))
        .await
    {
        Ok(id) => {
            *deployment.borrow_mut() = Some(id);
            if let Err(e) = gh
                .deployment_status(
                    id,
                    DeployState::InProgress,
                    "deploying",
                    run_url.as_deref(),
                    app_url.as_deref(),
                )
                .await
            {
                tracing::warn!("GitHub deployment status: {}", e.message);
            }
        }
        Err(e) => {
            tracing::warn!("GitHub deployment not created: {}", e.message);
            state.borrow_mut().issue("report", &e);
        }
    }
}

/// Writes the log everywhere: JSON file, summary, PR comment, Deployment status, outputs.
/// A failure here never hides the run's own result: it becomes an issue in the log.
async fn publish(
    log: &mut DeploymentLog,
    report: &ReportSettings,
    github: Option<&GitHub>,
    deployment: Option<u64>,
    redactor: &Redactor,
) {
    if let Some(gh) = github {
        if report.pr_comment && log.command == "run" {
            comment_on_prs(
                gh,
                log,
                markdown::comment,
                markdown::COMMENT_MARKER,
                redactor,
            )
            .await;
        }
        if let Some(id) = deployment {
            let state = match (log.status, log.command.as_str()) {
                (Status::Success | Status::Partial, _) => DeployState::Success,
                // A manual rollback that worked is a successful deployment of the old image.
                (Status::RolledBack, "rollback") => DeployState::Success,
                _ => DeployState::Failure,
            };
            let desc = format!("{} {}", log.status.emoji(), log.status.label());
            match gh
                .deployment_status(
                    id,
                    state,
                    &desc,
                    log.context.run_url.as_deref(),
                    log.app_url.as_deref(),
                )
                .await
            {
                Ok(()) => log
                    .outputs
                    .push(format!("GitHub deployment {id} ({})", log.status.label())),
                Err(e) => tracing::warn!("GitHub deployment status: {}", e.message),
            }
        }
    }

    write_summary_and_log(log, report, markdown::summary, redactor);
    if let Some(out) = &report.outputs {
        let outputs = [
            ("status", log.status.label().to_string()),
            (
                "backup-id",
                log.backup
                    .as_ref()
                    .map(|b| b.id.clone())
                    .unwrap_or_default(),
            ),
            (
                "migrations-applied",
                log.migrations_applied
                    .iter()
                    .map(|m| m.filename.clone())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            ("image", log.image.clone().unwrap_or_default()),
            ("previous-image", log.previous_image().unwrap_or_default()),
            ("log-path", report.for_later_steps(&report.log)),
        ];
        let outputs: Vec<(&str, String)> = outputs
            .into_iter()
            .map(|(k, v)| (k, redactor.scrub(&v)))
            .collect();
        if let Err(e) = actions::write_outputs(out, &outputs) {
            tracing::warn!("{}", e.message);
        }
    }
}

/// Posts (or updates in place) the sticky comment that carries `marker` on the log's pull
/// requests: those of the event, else those GitHub associates with the commit. Shared by
/// `run` (the deployment comment) and `rehearse` (the rehearsal comment, another marker).
/// A failure becomes an issue in the log, never the command's result.
pub(crate) async fn comment_on_prs(
    gh: &GitHub,
    log: &mut DeploymentLog,
    render: fn(&DeploymentLog) -> String,
    marker: &str,
    redactor: &Redactor,
) {
    let mut prs = log.context.pull_requests.clone();
    if prs.is_empty()
        && let Some(sha) = &log.context.commit
    {
        match gh.pulls_for_commit(sha).await {
            Ok(found) => prs = found,
            Err(e) => tracing::warn!("finding the pull request: {}", e.message),
        }
    }
    log.context.pull_requests = prs.clone();
    let body = redactor.scrub(&render(log));
    for pr in prs {
        match gh.upsert_comment(pr, &body, marker).await {
            Ok((id, created)) => log.outputs.push(format!(
                "PR #{pr} comment {id} ({})",
                if created { "created" } else { "updated" }
            )),
            Err(e) => {
                tracing::warn!("PR comment on #{pr}: {}", e.message);
                log.issues.push(Issue {
                    step: "report".into(),
                    message: e.message,
                    hint: e.hint,
                    location: None,
                    request_id: e.request_id,
                });
            }
        }
    }
}

/// Appends the rendered summary to the job summary and writes the JSON log, both
/// redacted. Shared by `run`, `rollback` and `rehearse`.
pub(crate) fn write_summary_and_log(
    log: &mut DeploymentLog,
    report: &ReportSettings,
    render: fn(&DeploymentLog) -> String,
    redactor: &Redactor,
) {
    // Paths as the job's later steps see them: the runner reads them on the host, where the
    // container's /github/workspace does not exist.
    log.outputs.push(format!(
        "summary {}",
        report.for_later_steps(&report.summary)
    ));
    log.outputs
        .push(format!("log {}", report.for_later_steps(&report.log)));
    let summary = redactor.scrub(&render(log));
    if let Some(dir) = report
        .summary
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = actions::append_summary(&report.summary, &summary) {
        tracing::warn!("{}", e.message);
    }
    let mut json = serde_json::to_value(&*log).unwrap_or(Value::Null);
    redactor.scrub_json(&mut json);
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    match write_private(&report.log, &text) {
        Ok(()) => tracing::info!(
            "{} log: {} (summary: {})",
            log.command,
            report.for_later_steps(&report.log),
            report.for_later_steps(&report.summary)
        ),
        Err(e) => tracing::error!("cannot write the log {}: {e}", report.log.display()),
    }
}

/// The log may name internal hosts and ids: readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    give_to_directory_owner(path)
}

/// Run as root (a container action must be), the log would be root's and unreadable by the
/// runner's user, whose later steps (upload-artifact) read it: give it to whoever owns the
/// directory it is in, the workspace's owner. Still readable by its owner only.
fn give_to_directory_owner(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::metadata(path)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let owner = std::fs::metadata(dir)?;
        if file.uid() == 0 && owner.uid() != 0 {
            std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))?;
        }
    }
    Ok(())
}

fn outcome(log: &DeploymentLog) -> Outcome {
    let mut text = markdown::template(log);
    if log.status == Status::DryRun
        && let Some(p) = &log.plan
    {
        text = format!("{}\n{text}", markdown::plan(p));
    }
    for o in &log.outputs {
        text.push_str(&format!("→ {o}\n"));
    }
    let ok = matches!(log.status, Status::Success | Status::DryRun);
    let mut json = serde_json::Map::new();
    json.insert("status".into(), json!(log.status.label()));
    if let Some(p) = &log.plan {
        json.insert(
            "plan".into(),
            serde_json::to_value(p).unwrap_or(Value::Null),
        );
    }
    json.insert(
        "log".into(),
        serde_json::to_value(log).unwrap_or(Value::Null),
    );
    let mut out = Outcome::new(ok, json, text);
    if !ok && let Some(i) = log.issues.first() {
        let mut e = Error::failure(format!(
            "deployment {}: {}: {}",
            log.status.label(),
            i.step,
            i.message
        ));
        e.hint = i.hint.clone();
        out.error = Some(e);
    }
    out
}

/// The machines and their images right now (read-only), for an interrupted deploy; `None`
/// when they cannot be read within a few seconds (CI gives a cancelled job ~10 s).
async fn machines_now(
    deployer: &crate::deploy::Configured,
    image: Option<&str>,
) -> Option<crate::deploy::Report> {
    let read = deployer.preview(image);
    match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
        Ok(r) if r.error.is_none() => Some(r),
        _ => None,
    }
}

/// "MIXED IMAGES: m1 on A; m2, m3 on B", or "every machine on A".
fn images_note(report: &crate::deploy::Report) -> String {
    let mut by_image: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for m in &report.machines {
        by_image
            .entry(m.image.clone().unwrap_or_else(|| "unknown image".into()))
            .or_default()
            .push(m.id.clone());
    }
    let parts: Vec<String> = by_image
        .iter()
        .map(|(image, ids)| format!("{} on {image}", ids.join(", ")))
        .collect();
    match parts.len() {
        0 => "the machines could not be listed".into(),
        1 => format!("every machine ({}) on the same image", parts[0]),
        _ => format!("MIXED IMAGES: {}", parts.join("; ")),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn cancelled() {
    crate::signal::cancelled().await;
}

/// Where and why the run happened: the GitHub context, and the pull request of a
/// `pull_request` event's payload.
pub(crate) fn fill_context(log: &mut DeploymentLog, env: &dyn Fn(&str) -> Option<String>) {
    let c = &mut log.context;
    c.repository = env("GITHUB_REPOSITORY");
    c.commit = env("GITHUB_SHA");
    c.trigger = Some(env("GITHUB_EVENT_NAME").unwrap_or_else(|| {
        if env("GITHUB_ACTIONS").is_some() {
            "unknown".into()
        } else {
            "local".into()
        }
    }));
    c.actor = env("GITHUB_ACTOR").or_else(|| env("USER"));
    if let (Some(server), Some(repo), Some(run)) = (
        env("GITHUB_SERVER_URL"),
        env("GITHUB_REPOSITORY"),
        env("GITHUB_RUN_ID"),
    ) {
        c.run_url = Some(format!("{server}/{repo}/actions/runs/{run}"));
    }
    if let Some(path) = env("GITHUB_EVENT_PATH")
        && let Ok(text) = std::fs::read_to_string(path)
        && let Ok(event) = serde_json::from_str::<Value>(&text)
        && let Some(n) = event["pull_request"]["number"].as_u64()
    {
        c.pull_requests.push(n);
    }
}
