//! `run` and `rollback`: the runbook's phases in order, each recorded into the deployment
//! log, and the log written everywhere people look, also when a step fails or the run is
//! cancelled (SIGTERM/SIGINT, as a CI cancellation sends).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::{BackupArgs, CheckEnvArgs, MigrateArgs, SmokeArgs};
use crate::clock::Utc;
use crate::config::Loaded;
use crate::error::Error;
use crate::output::Outcome;
use crate::redact::Redactor;
use crate::report::github::{DeployState, GitHub};
use crate::report::log::{
    AppliedMigration, BackupRecord, Issue, SmokeRecord, Status, Step, StepStatus, WatchRecord,
};
use crate::report::{DeploymentLog, actions, markdown};

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `[report]`: where the deployment log goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportFile {
    /// Relative to the config file when set there; else `flightplan-log.json` in the workspace.
    pub log: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    pub pr_comment: bool,
    pub github_deployment: bool,
    pub environment: String,
}

impl Default for ReportFile {
    fn default() -> Self {
        ReportFile {
            log: None,
            summary: None,
            pr_comment: true,
            github_deployment: true,
            environment: "production".into(),
        }
    }
}

/// `[rollback]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackFile {
    /// Restoring discards writes made since the backup: opt-in.
    pub restore_database: bool,
}

pub(crate) fn section<T: for<'de> Deserialize<'de> + Default>(
    loaded: &Loaded,
    table: &Option<toml::Table>,
    name: &str,
) -> Result<T, Error> {
    match table {
        None => Ok(T::default()),
        Some(t) => t.clone().try_into().map_err(|e: toml::de::Error| {
            Error::usage(format!(
                "[{name}]: {}",
                crate::config::with_suggestion(e.message().trim_end())
            ))
            .file(loaded.describe(&format!("[{name}]")))
        }),
    }
}

/// The run's shared state: the log being filled in, and when the run started.
pub(crate) struct Recorder {
    pub(crate) log: DeploymentLog,
    pub(crate) t0: Instant,
    pub(crate) redactor: Redactor,
    pub(crate) current: Option<(String, u64)>,
}

impl Recorder {
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

    pub(crate) fn skip(&mut self, name: &str, why: &str) {
        let at = self.elapsed();
        self.log.steps.push(Step {
            name: name.into(),
            status: StepStatus::Skipped,
            started_ms: at,
            duration_ms: 0,
            summary: why.into(),
            details: Value::Null,
        });
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

    /// Ends the current step as failed with the error (or the outcome's error).
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

/// The result of one phase command: ok, its JSON, and its error if any.
pub(crate) fn split(result: Result<Outcome, Error>) -> (bool, Value, Option<Error>) {
    match result {
        Ok(o) => (o.ok && o.error.is_none(), Value::Object(o.json), o.error),
        Err(e) => (false, Value::Null, Some(e)),
    }
}

/// Inputs of `run`, resolved.
pub struct RunArgs {
    pub image: Option<String>,
    pub dry_run: bool,
    /// The app's variables (already layered under the process environment by the caller);
    /// passed on so the env check names the file as each value's source.
    pub env_file: Option<PathBuf>,
}

/// `flightplan run`.
pub async fn run(args: RunArgs, loaded: &Loaded, env: Env<'_>) -> Result<Outcome, Error> {
    let report: ReportFile = section(loaded, &loaded.file.report, "report")?;
    let rollback: RollbackFile = section(loaded, &loaded.file.rollback, "rollback")?;
    let gha = env("GITHUB_ACTIONS").as_deref() == Some("true");
    let mut redactor = Redactor::from_env(env);
    for name in contract_secrets(loaded) {
        if let Some(v) = env(&name) {
            redactor.add(&v);
        }
    }
    // Every secret is masked before anything else is printed.
    redactor.announce(gha);

    let mut log = DeploymentLog::new("run", &report.environment, Utc::now().rfc3339());
    log.dry_run = args.dry_run;
    log.app = env("FLY_APP").or_else(|| loaded.file.app.clone());
    log.app_url = env("APP_URL").or_else(|| loaded.file.app_url.clone());
    log.image = args.image.clone();
    fill_context(&mut log, env);
    let state = Rc::new(RefCell::new(Recorder {
        log,
        t0: Instant::now(),
        redactor,
        current: None,
    }));

    let github = github_client(env, &report, args.dry_run);
    let deployment: Rc<RefCell<Option<u64>>> = Rc::new(RefCell::new(None));

    let phases = phases(
        &args,
        loaded,
        env,
        &state,
        github.as_ref(),
        &deployment,
        &rollback,
    );
    let interrupted = tokio::select! {
        status = phases => { state.borrow_mut().log.status = status; false }
        _ = cancelled() => true,
    };
    if interrupted {
        tracing::warn!("interrupted: writing the deployment log before exiting");
        // The phases' future is gone; the leases it held are not (issue 16).
        crate::deploy::leases::release_all(crate::deploy::leases::RELEASE_WITHIN).await;
        // Cancelled while machines were changing: say where each one is now, so a group left
        // on mixed images is never reported without it (issue 8; before, the deploy step of
        // an interrupted run had no details and the log could not tell mixed from not).
        let step = state.borrow().current.as_ref().map(|c| c.0.clone());
        let machines = match step.as_deref() {
            Some("deploy" | "rollback") => machines_now(args.image.as_deref(), loaded, env).await,
            _ => None,
        };
        let mut st = state.borrow_mut();
        let mut where_now = String::new();
        if st.current.is_some() {
            let e = Error::failure("interrupted (SIGTERM/SIGINT) while this step ran");
            let step = st.current.as_ref().map(|c| c.0.clone()).unwrap_or_default();
            st.issue(&step, &e);
            let (summary, details) = match machines {
                Some(json) => {
                    where_now = images_note(&json);
                    (format!("interrupted: {where_now}"), json)
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
    let mut log = {
        let mut st = state.borrow_mut();
        st.log.finished_at = Some(Utc::now().rfc3339());
        st.log.duration_ms = st.elapsed();
        st.log.clone()
    };
    let redactor = state.borrow().redactor.clone();
    let deployment = *deployment.borrow();
    publish(
        &mut log,
        loaded,
        &report,
        github.as_ref(),
        deployment,
        env,
        &redactor,
    )
    .await;
    Ok(outcome(&log))
}

/// `flightplan rollback`: the deploy module's rollback, recorded and reported like `run`
/// (JSON log, summary, a GitHub Deployment of the image rolled to, outputs). No PR comment:
/// a manual rollback belongs to no pull request.
pub async fn rollback(
    args: &crate::cli::RollbackArgs,
    loaded: &Loaded,
    env: Env<'_>,
) -> Result<Outcome, Error> {
    let mut report: ReportFile = section(loaded, &loaded.file.report, "report")?;
    report.pr_comment = false;
    let gha = env("GITHUB_ACTIONS").as_deref() == Some("true");
    let redactor = Redactor::from_env(env);
    redactor.announce(gha);
    let mut log = DeploymentLog::new("rollback", &report.environment, Utc::now().rfc3339());
    log.app = env("FLY_APP").or_else(|| loaded.file.app.clone());
    log.app_url = env("APP_URL").or_else(|| loaded.file.app_url.clone());
    log.image = args.image.clone();
    fill_context(&mut log, env);
    let state = Rc::new(RefCell::new(Recorder {
        log,
        t0: Instant::now(),
        redactor,
        current: None,
    }));
    let github = github_client(env, &report, false);
    let deployment: Rc<RefCell<Option<u64>>> = Rc::new(RefCell::new(None));

    state.borrow_mut().begin("rollback");
    let result =
        crate::deploy::leases::interruptible(crate::deploy::rollback(args, loaded, env)).await;
    // Refused before anything was contacted (exit 2): nothing happened, nothing to report.
    if let Err(e) = &result
        && e.kind == crate::error::Kind::Usage
    {
        return result;
    }
    if let Some(gh) = &github {
        start_deployment(gh, &state, &deployment, env).await;
    }
    let deploy_text = result.as_ref().map(|o| o.text.clone()).unwrap_or_default();
    let (ok, json, err) = split(result);
    let deploy_json = json.clone();
    {
        let mut st = state.borrow_mut();
        if let Some(map) = json["previous_images"].as_object() {
            st.log.previous_images = map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
        }
        if let Some(img) = json["image"].as_str() {
            st.log.image = Some(img.to_string());
        }
        if ok {
            let n = json["machines"].as_array().map_or(0, Vec::len);
            st.end(StepStatus::Ok, format!("{n} machine(s) rolled back"), json);
            st.log.status = Status::RolledBack;
            st.log.resolution =
                Some("manual rollback: every machine is on the image it was rolled to".into());
        } else {
            let e = err.unwrap_or_else(|| Error::failure("rollback failed"));
            st.fail(&e, json);
            st.log.status = Status::Failed;
            st.log.resolution = Some("the rollback failed: check the machines (`flightplan deploy` / `rollback --image`)".into());
        }
        st.log.finished_at = Some(Utc::now().rfc3339());
        st.log.duration_ms = st.elapsed();
    }
    let mut log = state.borrow().log.clone();
    let redactor = state.borrow().redactor.clone();
    let deployment = *deployment.borrow();
    publish(
        &mut log,
        loaded,
        &report,
        github.as_ref(),
        deployment,
        env,
        &redactor,
    )
    .await;
    // The command's own result stays what `deploy` documents (app, image, previous_images,
    // machines, reverted), with the log's status and where it went added.
    let mut out = outcome(&log);
    if let Value::Object(mut fields) = deploy_json {
        fields.extend(out.json);
        out.json = fields;
    }
    out.text = format!(
        "{deploy_text}{}",
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

/// The phases; returns the final status. Each records its step into the log.
async fn phases(
    args: &RunArgs,
    loaded: &Loaded,
    env: Env<'_>,
    state: &Rc<RefCell<Recorder>>,
    github: Option<&GitHub>,
    deployment: &Rc<RefCell<Option<u64>>>,
    rollback: &RollbackFile,
) -> Status {
    // A pull request from a fork gets no secrets from GitHub: without DATABASE_URL there is
    // no live ledger to plan against. Say so and end as a dry run, instead of failing the
    // env check on variables the run was never going to be given (issue 8).
    if args.dry_run
        && env("GITHUB_EVENT_NAME").is_some_and(|e| e.starts_with("pull_request"))
        && env("DATABASE_URL").is_none_or(|v| v.trim().is_empty())
    {
        let note = "pull request from a fork (or without secrets): GitHub gives such runs no secrets, \
                    so the environment check and the migration plan against the live database were skipped; \
                    they run on the merge to main";
        let mut st = state.borrow_mut();
        for name in ["preflight", "backup", "migrate", "deploy", "smoke"] {
            st.skip(name, note);
        }
        st.log.resolution = Some(note.into());
        return Status::DryRun;
    }

    // 1. preflight: nothing changes before it passes.
    if loaded.file.env.is_some() {
        state.borrow_mut().begin("preflight");
        let (ok, json, err) = split(
            crate::preflight::check_env(
                &CheckEnvArgs {
                    env_file: args.env_file.clone(),
                    fly: false,
                },
                loaded,
                env,
            )
            .await,
        );
        let mut st = state.borrow_mut();
        if !ok {
            let e = err.unwrap_or_else(|| Error::failure(failed_checks(&json)));
            st.fail(&e, json);
            st.log.resolution =
                Some("stopped before any change: fix the environment and run again".into());
            return Status::Failed;
        }
        let n = json["checks"].as_array().map_or(0, Vec::len);
        st.end(StepStatus::Ok, format!("{n} checks passed"), json);
    } else {
        state
            .borrow_mut()
            .skip("preflight", "no [env] contract in the config");
    }

    let migrate_args = MigrateArgs {
        database_url: env("DATABASE_URL"),
        ..Default::default()
    };
    let migrate_settings = match crate::migrate_settings(&migrate_args, loaded, env) {
        Ok(s) => s,
        Err(e) => {
            let mut st = state.borrow_mut();
            st.begin("migrate");
            st.fail(&e, Value::Null);
            return Status::Failed;
        }
    };

    // Drift gate: production must still match its files before anything changes.
    if loaded.file.migrate.drift_gate == Some(true) {
        state.borrow_mut().begin("drift");
        let (ok, json, err) = split(crate::migrate::drift(&migrate_settings).await);
        let mut st = state.borrow_mut();
        st.log.drift = serde_json::from_value(json["drift"].clone()).unwrap_or_default();
        if !ok {
            let e = err.unwrap_or_else(|| Error::failure("the database has drifted"));
            st.fail(&e, json);
            st.log.resolution = Some(
                "stopped before any change: the schema differs from the migration files".into(),
            );
            return Status::Failed;
        }
        st.end(StepStatus::Ok, "no drift", json);
    }

    if args.dry_run {
        state
            .borrow_mut()
            .skip("backup", "dry run: no backup taken");
        state.borrow_mut().begin("migrate");
        let (ok, json, err) = split(crate::migrate::plan(&migrate_settings).await);
        let mut st = state.borrow_mut();
        st.log.migrations_pending = names(&json["pending"]);
        if !ok {
            let e = err.unwrap_or_else(|| Error::failure("migrate plan failed"));
            st.fail(&e, json);
            return Status::Failed;
        }
        let n = st.log.migrations_pending.len();
        st.end(
            StepStatus::Ok,
            format!("{n} pending (dry run: not applied)"),
            json,
        );
        st.skip("deploy", "dry run");
        st.skip("smoke", "dry run");
        return Status::DryRun;
    }

    // The first change is about to happen: the GitHub Deployment starts now.
    if let Some(gh) = github {
        start_deployment(gh, state, deployment, env).await;
    }

    // 2. backup: nothing migrates without a verified backup.
    let backup_args = BackupArgs {
        database_url: env("DATABASE_URL"),
        ..Default::default()
    };
    state.borrow_mut().begin("backup");
    let backup_settings = crate::backup::settings(&backup_args, loaded, env);
    let taken = match backup_settings {
        Ok(ref s) => crate::backup::take(s).await,
        Err(e) => Err(e),
    };
    {
        let mut st = state.borrow_mut();
        match taken {
            Ok(Some(b)) => {
                let json = serde_json::to_value(&b).unwrap_or(Value::Null);
                let id = json["id"].as_str().unwrap_or_default().to_string();
                let provider = json["provider"].as_str().unwrap_or_default().to_string();
                st.log.backup = Some(BackupRecord {
                    provider: provider.clone(),
                    id: id.clone(),
                    name: json["name"].as_str().map(str::to_string),
                });
                st.end(StepStatus::Ok, format!("{provider} backup {id}"), json);
            }
            Ok(None) => st.end(
                StepStatus::Ok,
                "no backup: [backup] provider = \"none\"",
                Value::Null,
            ),
            Err(e) => {
                st.fail(&e, Value::Null);
                st.log.resolution = Some("stopped before migrating: no verified backup".into());
                return Status::Failed;
            }
        }
    }

    // 3. migrate: nothing deploys after a failed migration.
    state.borrow_mut().begin("migrate");
    let (ok, json, err) = split(crate::migrate::apply(&migrate_settings, false).await);
    {
        let mut st = state.borrow_mut();
        st.log.migrations_applied = json["applied"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| AppliedMigration {
                filename: a["filename"].as_str().unwrap_or_default().into(),
                duration_ms: a["duration_ms"].as_i64().unwrap_or(0),
            })
            .collect();
        if !ok {
            let e = err.unwrap_or_else(|| Error::failure("migrate apply failed"));
            st.fail(&e, json);
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
        let applied = st.log.migrations_applied.len();
        let skipped = json["skipped"].as_u64().unwrap_or(0);
        st.end(
            StepStatus::Ok,
            format!("{applied} applied, {skipped} already applied"),
            json,
        );
    }

    // 4. deploy
    let Some(image) = args.image.clone() else {
        state
            .borrow_mut()
            .skip("deploy", "no --image given: migrations only");
        return smoke_phase(loaded, env, state)
            .await
            .unwrap_or(Status::Success);
    };
    state.borrow_mut().begin("deploy");
    let (ok, json, err) = split(crate::deploy::deploy_image(&image, loaded, env).await);
    {
        let mut st = state.borrow_mut();
        if let Some(map) = json["previous_images"].as_object() {
            st.log.previous_images = map
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
        }
        if !ok {
            let e = err.unwrap_or_else(|| Error::failure("deploy failed"));
            let reverted = json["reverted"] == true;
            st.fail(&e, json);
            st.log.resolution = Some(if reverted {
                "every machine already updated was put back on its previous config; migrations stay applied".into()
            } else {
                "deploy failed before any machine changed; migrations stay applied".into()
            });
            return if reverted {
                Status::RolledBack
            } else {
                Status::Failed
            };
        }
        let n = json["machines"].as_array().map_or(0, Vec::len);
        st.end(StepStatus::Ok, format!("{n} machine(s) on {image}"), json);
    }

    // 5. smoke; a failure rolls the machines back.
    match smoke_phase(loaded, env, state).await {
        None | Some(Status::Success) => Status::Success,
        Some(_) => {
            state.borrow_mut().begin("rollback");
            let restore = rollback
                .restore_database
                .then(|| state.borrow().log.backup.as_ref().map(|b| b.id.clone()))
                .flatten();
            let (ok, json, err) =
                split(crate::deploy::rollback_previous(loaded, env, restore.as_deref()).await);
            let mut st = state.borrow_mut();
            if ok {
                let db = if restore.is_some() {
                    "; the database was restored from the backup"
                } else {
                    "; the database was not restored ([rollback] restore_database = false)"
                };
                st.log.resolution = Some(format!(
                    "smoke tests failed: machines rolled back to their previous images{db}"
                ));
                st.end(
                    StepStatus::Ok,
                    "machines back on their previous images",
                    json,
                );
                Status::RolledBack
            } else {
                let e = err.unwrap_or_else(|| Error::failure("rollback failed"));
                st.fail(&e, json);
                st.log.resolution = Some("smoke tests failed and the rollback failed too: check the machines now (`flightplan rollback`)".into());
                Status::Failed
            }
        }
    }
}

/// Smoke tests (and the watch window when configured); `None` when not configured at all.
async fn smoke_phase(
    loaded: &Loaded,
    env: Env<'_>,
    state: &Rc<RefCell<Recorder>>,
) -> Option<Status> {
    let configured = !loaded.file.smoke.checks.is_empty()
        || loaded.file.smoke.login.is_some()
        || env("APP_URL").is_some()
        || loaded.file.app_url.is_some();
    if !configured {
        state
            .borrow_mut()
            .skip("smoke", "no app URL or checks configured");
        return None;
    }
    state.borrow_mut().begin("smoke");
    let settings = crate::smoke_settings(&SmokeArgs::default(), loaded, env);
    let (ok, json, err) = match settings {
        Ok(s) => split(crate::smoke::run(&s).await),
        Err(e) => (false, Value::Null, Some(e)),
    };
    let mut st = state.borrow_mut();
    st.log.smoke = json["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| SmokeRecord {
            name: c["name"].as_str().unwrap_or_default().into(),
            ok: c["ok"] == true,
            status: c["status"].as_u64().map(|s| s as u16),
            latency_ms: c["latency_ms"].as_u64(),
            attempts: c["attempts"].as_u64().unwrap_or(0) as u32,
            reason: c["reason"].as_str().map(str::to_string),
        })
        .collect();
    if let Some(w) = json.get("watch").filter(|w| w.is_object()) {
        st.log.watch = Some(WatchRecord {
            p50_ms: w["p50_ms"].as_f64().unwrap_or(0.0),
            p95_ms: w["p95_ms"].as_f64().unwrap_or(0.0),
            error_rate: w["error_rate"].as_f64().unwrap_or(0.0),
            intervals_p95_ms: w["intervals"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["p95_ms"].as_f64())
                .collect(),
        });
    }
    if ok {
        let n = st.log.smoke.len();
        st.end(StepStatus::Ok, format!("{n} check(s) passed"), json);
        Some(Status::Success)
    } else {
        let e = err.unwrap_or_else(|| Error::failure("smoke tests failed"));
        st.fail(&e, json);
        Some(Status::Failed)
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["filename"].as_str().map(str::to_string))
        .collect()
}

fn failed_checks(json: &Value) -> String {
    let bad: Vec<String> = json["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] != "ok" && c["status"] != "warning")
        .filter_map(|c| {
            Some(format!(
                "{} ({})",
                c["name"].as_str()?,
                c["message"].as_str().unwrap_or("failed")
            ))
        })
        .collect();
    format!("environment check failed: {}", bad.join(", "))
}

pub(crate) fn contract_secrets(loaded: &Loaded) -> Vec<String> {
    let Some(env) = &loaded.file.env else {
        return Vec::new();
    };
    env.iter()
        .filter(|(k, v)| {
            v.get("secret").and_then(toml::Value::as_bool) == Some(true)
                || ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY"]
                    .iter()
                    .any(|w| k.to_ascii_uppercase().contains(w))
        })
        .map(|(k, _)| k.clone())
        .collect()
}

pub(crate) fn fill_context(log: &mut DeploymentLog, env: Env<'_>) {
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
    // A pull_request event names its PR in the payload.
    if let Some(path) = env("GITHUB_EVENT_PATH")
        && let Ok(text) = std::fs::read_to_string(path)
        && let Ok(event) = serde_json::from_str::<Value>(&text)
        && let Some(n) = event["pull_request"]["number"].as_u64()
    {
        c.pull_requests.push(n);
    }
}

pub(crate) fn github_client(env: Env<'_>, report: &ReportFile, dry_run: bool) -> Option<GitHub> {
    if dry_run || (!report.pr_comment && !report.github_deployment) {
        return None;
    }
    let token = env("GITHUB_TOKEN").filter(|t| !t.is_empty())?;
    let repo = env("GITHUB_REPOSITORY")?;
    env("GITHUB_SHA")?;
    let base =
        env("GITHUB_API_URL").unwrap_or_else(|| crate::report::github::DEFAULT_API_URL.into());
    match GitHub::new(&base, &token, &repo) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!("GitHub reporting is off: {}", e.message);
            None
        }
    }
}

async fn start_deployment(
    gh: &GitHub,
    state: &Rc<RefCell<Recorder>>,
    deployment: &Rc<RefCell<Option<u64>>>,
    env: Env<'_>,
) {
    let (sha, environment, image, run_url, app_url) = {
        let st = state.borrow();
        (
            st.log.context.commit.clone().unwrap_or_default(),
            st.log.environment.clone(),
            st.log.image.clone(),
            st.log.context.run_url.clone(),
            st.log.app_url.clone(),
        )
    };
    if env("INPUT_GITHUB-DEPLOYMENT").as_deref() == Some("false") {
        return;
    }
    let description = format!(
        "flightplan run{}",
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
    loaded: &Loaded,
    report: &ReportFile,
    github: Option<&GitHub>,
    deployment: Option<u64>,
    env: Env<'_>,
    redactor: &Redactor,
) {
    let workspace = env("GITHUB_WORKSPACE").map(PathBuf::from);
    let at = |p: &Path| match (&workspace, p.is_relative()) {
        (Some(w), true) => w.join(p),
        _ => p.to_path_buf(),
    };
    let log_path = match &report.log {
        Some(p) => loaded.resolve_path(p),
        None => at(Path::new("flightplan-log.json")),
    };

    if let Some(gh) = github {
        if report.pr_comment {
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

    write_summary_and_log(
        log,
        loaded,
        report,
        env,
        &log_path,
        markdown::summary,
        redactor,
    );
    if let Some(out) = env("GITHUB_OUTPUT") {
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
            ("log-path", log_path.display().to_string()),
        ];
        let outputs: Vec<(&str, String)> = outputs
            .into_iter()
            .map(|(k, v)| (k, redactor.scrub(&v)))
            .collect();
        if let Err(e) = actions::write_outputs(Path::new(&out), &outputs) {
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

/// Appends the rendered summary to the job summary (GITHUB_STEP_SUMMARY, else `[report]
/// summary`, else next to the log) and writes the JSON log, both redacted. Shared by `run`,
/// `rollback` and `rehearse`.
pub(crate) fn write_summary_and_log(
    log: &mut DeploymentLog,
    loaded: &Loaded,
    report: &ReportFile,
    env: Env<'_>,
    log_path: &Path,
    render: fn(&DeploymentLog) -> String,
    redactor: &Redactor,
) {
    let summary_path = env("GITHUB_STEP_SUMMARY")
        .map(PathBuf::from)
        .or_else(|| report.summary.as_ref().map(|p| loaded.resolve_path(p)))
        .unwrap_or_else(|| log_path.with_extension("md"));
    log.outputs
        .push(format!("summary {}", summary_path.display()));
    log.outputs.push(format!("log {}", log_path.display()));
    let summary = redactor.scrub(&render(log));
    if let Some(dir) = summary_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = actions::append_summary(&summary_path, &summary) {
        tracing::warn!("{}", e.message);
    }
    let mut json = serde_json::to_value(&*log).unwrap_or(Value::Null);
    redactor.scrub_json(&mut json);
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    match write_private(log_path, &text) {
        Ok(()) => tracing::info!(
            "{} log: {} (summary: {})",
            log.command,
            log_path.display(),
            summary_path.display()
        ),
        Err(e) => tracing::error!("cannot write the log {}: {e}", log_path.display()),
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
    f.write_all(b"\n")
}

fn outcome(log: &DeploymentLog) -> Outcome {
    let mut text = markdown::template(log);
    for o in &log.outputs {
        text.push_str(&format!("→ {o}\n"));
    }
    let ok = matches!(log.status, Status::Success | Status::DryRun);
    let mut json = serde_json::Map::new();
    json.insert("status".into(), json!(log.status.label()));
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
async fn machines_now(image: Option<&str>, loaded: &Loaded, env: Env<'_>) -> Option<Value> {
    let read = crate::deploy::preview_image(image, loaded, env);
    match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
        Ok(Ok(o)) if o.error.is_none() => Some(Value::Object(o.json)),
        _ => None,
    }
}

/// "MIXED IMAGES: m1 on A; m2, m3 on B", or "every machine on A".
fn images_note(json: &Value) -> String {
    let mut by_image: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for m in json["machines"].as_array().into_iter().flatten() {
        by_image
            .entry(m["image"].as_str().unwrap_or("unknown image").to_string())
            .or_default()
            .push(m["id"].as_str().unwrap_or("?").to_string());
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
