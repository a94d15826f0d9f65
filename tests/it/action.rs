//! The action as users run it: the image `scripts/action-image` builds, started with the
//! Actions runner's own `docker run` (its flags and mounts, every `INPUT_*` of action.yml
//! with the defaults filled in, the host paths translated to the container's; see
//! ../shared/research/actions-runner.md), against the real PostgreSQL and the fakes on
//! 127.0.0.1 (`--network host` stands in for the job's network).
//!
//! Needs a Docker engine: `scripts/action-image` installs and starts one when missing, and a
//! test fails (never skips) when it cannot.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::db::{self, Run, TestDb};
use crate::support::github::{self, FakeGitHub};
use crate::support::neon::{self, FakeNeon};
use crate::support::world::*;
use serde_json::Value;

/// The image, built once per test process with the project's own script.
fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        eprintln!("action tests: building the action's image with scripts/action-image (first build: minutes)");
        // The script's progress goes to our stderr (seen with --nocapture): a long build is
        // never silent. Its stdout's last line is the tag.
        let out = Command::new(format!("{root}/scripts/action-image"))
            .arg("flightplan:test")
            .current_dir(root)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/action-image runs");
        assert!(
            out.status.success(),
            "scripts/action-image failed ({}): the action tests need a Docker engine and the image; see its messages above",
            out.status
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        let tag = stdout.lines().last().unwrap_or_default().trim().to_string();
        assert_eq!(tag, "flightplan:test", "the script prints the tag as its last line");
        tag
    })
}

/// action.yml's inputs and their defaults, in file order.
fn action_inputs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml")).unwrap();
    let mut inputs: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            inside = line == "inputs:";
            continue;
        }
        if !inside {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body = line.trim();
        if indent == 2 {
            let name = body.strip_suffix(':').expect("an input's name line");
            inputs.push((name.to_string(), String::new()));
        } else if let Some(d) = body.strip_prefix("default:") {
            let d = d.trim();
            let d = d
                .strip_prefix('"')
                .and_then(|d| d.strip_suffix('"'))
                .unwrap_or(d);
            inputs.last_mut().expect("a default under an input").1 = d.to_string();
        }
    }
    let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    for known in [
        "command",
        "args",
        "image",
        "dry-run",
        "config",
        "env-file",
        "restore-backup",
        "confirm",
        "github-token",
    ] {
        assert!(
            names.contains(&known),
            "action.yml declares `{known}`: {names:?}"
        );
    }
    inputs
}

/// One job's runner: RUNNER_TEMP with the folders it mounts, the workspace, the event.
struct Runner {
    temp: tempfile::TempDir,
    workspace: PathBuf,
    event_name: &'static str,
}

/// What one step left: the process, its outputs, its summary, where those files are.
struct Step {
    run: Run,
    outputs: HashMap<String, String>,
    summary: String,
    workspace: PathBuf,
    output_file: String,
}

impl Step {
    fn output(&self, name: &str) -> &str {
        self.outputs
            .get(name)
            .unwrap_or_else(|| panic!("output `{name}` set: {:?}", self.outputs))
    }

    /// Everything a secret could leak to from this step (the mask commands excepted).
    fn texts(&self) -> String {
        let mut all = String::new();
        for stream in [&self.run.stdout, &self.run.stderr] {
            for line in stream.lines().filter(|l| !l.starts_with("::add-mask::")) {
                all.push_str(line);
                all.push('\n');
            }
        }
        all.push_str(&self.summary);
        all.push_str(&self.output_file);
        if let Some(p) = self.outputs.get("log-path") {
            all.push_str(&std::fs::read_to_string(self.workspace.join(p)).unwrap_or_default());
        }
        all
    }
}

static STEPS: AtomicUsize = AtomicUsize::new(0);

impl Runner {
    fn new(workspace: &Path, event_name: &'static str, event: &str) -> Runner {
        let temp = tempfile::tempdir().unwrap();
        for d in ["_github_home", "_github_workflow", "_runner_file_commands"] {
            std::fs::create_dir_all(temp.path().join(d)).unwrap();
        }
        std::fs::write(temp.path().join("_github_workflow/event.json"), event).unwrap();
        Runner {
            temp,
            workspace: workspace.to_path_buf(),
            event_name,
        }
    }

    /// Runs the action as a step with `with:` inputs and the step's `env:`, exactly as the
    /// runner starts a container action (DockerCommandManager.DockerRun): every variable is
    /// passed by name, its value taken from the docker client's environment.
    fn step(&self, with: &[(&str, &str)], env: &[(&str, String)]) -> Step {
        let n = STEPS.fetch_add(1, Ordering::SeqCst);
        let guid = format!("{:08x}-action-test-{n}", std::process::id());
        let commands = self.temp.path().join("_runner_file_commands");
        let output_name = format!("set_output_{guid}");
        let summary_name = format!("step_summary_{guid}");
        std::fs::write(commands.join(&output_name), "").unwrap();
        std::fs::write(commands.join(&summary_name), "").unwrap();

        let mut vars: Vec<(String, String)> = Vec::new();
        for (name, default) in action_inputs() {
            let value = with
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| match default.as_str() {
                    // What the runner evaluates the expression to: the job's token.
                    "${{ github.token }}" => GITHUB_TOKEN.to_string(),
                    _ => default.clone(),
                });
            vars.push((
                format!("INPUT_{}", name.replace(' ', "_").to_uppercase()),
                value,
            ));
        }
        for (k, v) in env {
            vars.push((k.to_string(), v.clone()));
        }
        let runner_vars = [
            ("HOME", "/github/home".to_string()),
            ("GITHUB_JOB", "deploy".into()),
            ("GITHUB_REF", "refs/heads/main".into()),
            ("GITHUB_SHA", SHA.into()),
            ("GITHUB_REPOSITORY", REPO.into()),
            ("GITHUB_REPOSITORY_OWNER", "acme".into()),
            ("GITHUB_RUN_ID", "4242".into()),
            ("GITHUB_RUN_NUMBER", "17".into()),
            ("GITHUB_RUN_ATTEMPT", "1".into()),
            ("GITHUB_ACTOR", "jdugard".into()),
            ("GITHUB_WORKFLOW", "deploy".into()),
            ("GITHUB_EVENT_NAME", self.event_name.into()),
            ("GITHUB_SERVER_URL", "https://github.com".into()),
            ("GITHUB_ACTION", "__OWNER_flightplan".into()),
            ("GITHUB_EVENT_PATH", "/github/workflow/event.json".into()),
            ("GITHUB_WORKSPACE", "/github/workspace".into()),
            (
                "GITHUB_OUTPUT",
                format!("/github/file_commands/{output_name}"),
            ),
            (
                "GITHUB_STEP_SUMMARY",
                format!("/github/file_commands/{summary_name}"),
            ),
            ("RUNNER_OS", "Linux".into()),
            ("RUNNER_TEMP", "/github/runner_temp".into()),
        ];
        for (k, v) in runner_vars {
            if !vars.iter().any(|(name, _)| name == k) {
                vars.push((k.to_string(), v));
            }
        }

        let name = format!("flightplan-test-{guid}");
        let temp = self.temp.path().display().to_string();
        let mut c = Command::new("docker");
        c.args(["run", "--name", &name, "--label", "flightplan-test"])
            .args(["--workdir", "/github/workspace", "--rm"]);
        for (k, _) in &vars {
            c.args(["-e", k]);
        }
        c.args([
            "-e",
            "GITHUB_ACTIONS=true",
            "-e",
            "CI=true",
            "--network",
            "host",
        ])
        .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
        .args(["-v", &format!("{temp}:/github/runner_temp")])
        .args(["-v", &format!("{temp}/_github_home:/github/home")])
        .args(["-v", &format!("{temp}/_github_workflow:/github/workflow")])
        .args([
            "-v",
            &format!("{temp}/_runner_file_commands:/github/file_commands"),
        ])
        .args([
            "-v",
            &format!("{}:/github/workspace", self.workspace.display()),
        ])
        .arg(image())
        // The variables reach the container only through `-e NAME`: nothing else of
        // this process's environment does.
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let run = wait_for(c, &name);
        let output_file = std::fs::read_to_string(commands.join(&output_name)).unwrap();
        Step {
            outputs: parse_outputs(&output_file),
            summary: std::fs::read_to_string(commands.join(&summary_name)).unwrap(),
            output_file,
            workspace: self.workspace.clone(),
            run,
        }
    }
}

/// Waits for the container, killing it after a generous guard so a hang fails the test
/// instead of the CI job.
fn wait_for(mut c: Command, name: &str) -> Run {
    let mut child = c.spawn().expect("docker runs");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = Command::new("docker").args(["kill", name]).status();
            panic!("the container {name} ran for 300 s; killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// The pipeline world with its migrations inside the workspace: the container sees only
/// the workspace, so the config names them relative to it, as a user's repository does.
fn pipeline_world(extra: &str) -> World {
    let w = World::new(extra);
    let dst = w.path("migrations");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(w.db.migrations()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    let abs = format!("dir = \"{}\"", w.db.migrations().display());
    w.edit_config(|c| c.replace(&abs, "dir = \"migrations\""));
    w
}

/// The step's `env:` of examples/workflows/deploy.yml, pointed at the fakes. No
/// GITHUB_TOKEN: the `github-token` input is the only token the step has.
fn deploy_env(w: &World) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", w.db_url()),
        ("NEON_API_KEY", neon::KEY.into()),
        ("NEON_PROJECT_ID", neon::PROJECT.into()),
        ("NEON_API_URL", w.neon.url.clone()),
        ("FLY_API_TOKEN", FLY_TOKEN.into()),
        ("FLY_API_URL", w.fly.url.clone()),
        ("GITHUB_API_URL", w.github.url.clone()),
        ("SMOKE_USER_EMAIL", SMOKE_EMAIL.into()),
        ("SMOKE_USER_PASSWORD", SMOKE_PASSWORD.into()),
        ("SESSION_SECRET", SESSION_SECRET.into()),
        ("NODE_ENV", "production".into()),
    ]
}

fn push_event() -> String {
    format!(
        r#"{{"after": "{SHA}", "ref": "refs/heads/main", "repository": {{"full_name": "{REPO}"}}}}"#
    )
}

/// Every request body the fakes received, for the secret check.
fn requests_text(w: &World) -> String {
    let mut all = String::new();
    for r in w.github.requests() {
        all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
    }
    for r in w.fly.requests() {
        all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
    }
    for r in w.neon.requests() {
        all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
        all.push_str(&r.query);
    }
    all
}

#[test]
fn a_push_run_deploys_and_reports_with_the_github_token_input_as_the_only_token() {
    let w = pipeline_world("");
    let runner = Runner::new(w.work.path(), "push", &push_event());
    let step = runner.step(
        &[("image", V2), ("config", "flightplan.toml")],
        &deploy_env(&w),
    );
    step.run.expect(0);

    // Production changed as a deploy changes it.
    assert_eq!(w.db.ledger().len(), 23);
    assert_eq!(w.machine_images(), vec![V2; 3]);
    let backups: Vec<String> = w
        .neon
        .names()
        .into_iter()
        .filter(|n| n.starts_with("flightplan/backup/"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");

    // GitHub: one deployment comment on the merged PR and one Deployment, both made with
    // the input's token (the fake refuses any other).
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1, "{comments:#?}");
    assert!(comments[0].body.contains("SUCCESS"), "{}", comments[0].body);
    assert_eq!(w.github.deployments().len(), 1);
    assert!(w.github.requests().iter().all(|r| r.status < 400));

    // Outputs and summary in the mounted file-commands folder; log-path opens on the host.
    assert_eq!(step.output("status"), "SUCCESS");
    assert_eq!(step.output("image"), V2);
    assert_eq!(step.output("previous-image"), V1);
    assert_eq!(step.output("migrations-applied").lines().count(), 2);
    let log_path = step.output("log-path");
    assert!(Path::new(log_path).is_relative(), "{log_path}");
    let log: Value =
        serde_json::from_str(&std::fs::read_to_string(w.path(log_path)).unwrap()).unwrap();
    assert_eq!(log["status"], "SUCCESS");
    assert_eq!(log["backup"]["id"].as_str(), Some(step.output("backup-id")));
    assert!(
        step.summary
            .starts_with("## ✅ Deployment SUCCESS — secure2send (production)"),
        "{}",
        step.summary
    );
    assert_no_secrets(&(step.texts() + &requests_text(&w)));
}

#[test]
fn dry_run_true_changes_nothing_anywhere() {
    let w = pipeline_world("");
    let runner = Runner::new(w.work.path(), "push", &push_event());
    let before = w.db.ledger();
    let step = runner.step(&[("image", V2), ("dry-run", "true")], &deploy_env(&w));
    step.run.expect(0);
    assert_eq!(w.db.ledger(), before, "nothing migrated");
    assert!(
        w.neon
            .names()
            .iter()
            .all(|n| !n.starts_with("flightplan/backup/")),
        "no backup branch"
    );
    assert!(w.neon.requests().iter().all(|r| r.method == "GET"));
    assert!(w.fly.requests().iter().all(|r| r.method == "GET"));
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert!(
        w.github.requests().is_empty(),
        "no comment, no deployment: {:?}",
        w.github.requests()
    );
    assert_eq!(step.output("status"), "DRY RUN");
    assert!(step.summary.contains("DRY RUN"), "{}", step.summary);
    assert_no_secrets(&(step.texts() + &requests_text(&w)));

    // A value the input cannot mean stops before anything is contacted.
    let bad = runner.step(&[("image", V2), ("dry-run", "maybe")], &deploy_env(&w));
    bad.run.expect(2);
    assert!(bad.run.stderr.contains("dry-run"), "{}", bad.run.stderr);
    assert!(w.github.requests().is_empty());
    assert!(w.fly.requests().iter().all(|r| r.method == "GET"));
    assert_eq!(w.db.ledger(), before);
}

#[test]
fn env_file_feeds_the_contract() {
    let w = pipeline_world("");
    let runner = Runner::new(w.work.path(), "push", &push_event());
    // The app's variables only in the file, not in the step's environment.
    let env: Vec<(&str, String)> = deploy_env(&w)
        .into_iter()
        .filter(|(k, _)| !["SESSION_SECRET", "NODE_ENV", "DATABASE_URL"].contains(k))
        .collect();
    std::fs::write(
        w.path("production.env"),
        format!(
            "DATABASE_URL={}\nSESSION_SECRET={SESSION_SECRET}\nNODE_ENV=production\n",
            w.db_url()
        ),
    )
    .unwrap();
    let ok = runner.step(
        &[("command", "check-env"), ("env-file", "production.env")],
        &env,
    );
    ok.run.expect(0);

    std::fs::write(
        w.path("staging.env"),
        format!(
            "DATABASE_URL={}\nSESSION_SECRET=short\nNODE_ENV=staging\n",
            w.db_url()
        ),
    )
    .unwrap();
    let bad = runner.step(
        &[("command", "check-env"), ("env-file", "staging.env")],
        &env,
    );
    bad.run.expect(1);
    let said = format!("{}{}", bad.run.stdout, bad.run.stderr);
    assert!(said.contains("SESSION_SECRET"), "{said}");
    assert!(said.contains("NODE_ENV"), "{said}");
    assert!(said.contains("staging.env"), "names the file: {said}");

    // Without the input the same environment fails on what the file supplied.
    let none = runner.step(&[("command", "check-env")], &env);
    none.run.expect(1);
    assert!(
        format!("{}{}", none.run.stdout, none.run.stderr).contains("SESSION_SECRET"),
        "{}",
        none.run.stderr
    );
    assert!(w.github.requests().is_empty() && w.fly.requests().is_empty());
    assert_no_secrets(&(ok.texts() + &bad.texts() + &none.texts()));
}

#[test]
fn rollback_with_restore_backup_and_confirm_restores_that_backup_and_the_previous_image() {
    let w = pipeline_world("");
    let push = Runner::new(w.work.path(), "push", &push_event());
    let deploy = push.step(&[("image", V2)], &deploy_env(&w));
    deploy.run.expect(0);
    let backup = deploy.output("backup-id").to_string();
    assert_eq!(w.machine_images(), vec![V2; 3]);
    // Writes made after the backup, which the restore must discard.
    let main_id = w.neon.with(|st| {
        let main = st.branches.iter_mut().find(|b| b.default).unwrap();
        main.data = "written after the backup".into();
        main.id.clone()
    });
    let backup_data = w
        .neon
        .branch(&backup)
        .expect("the backup branch exists")
        .data;

    let dispatch = Runner::new(
        w.work.path(),
        "workflow_dispatch",
        &format!(
            r#"{{"inputs": {{"restore-backup": "{backup}", "confirm": "yes"}}, "ref": "refs/heads/main", "repository": {{"full_name": "{REPO}"}}}}"#
        ),
    );
    let env: Vec<(&str, String)> = deploy_env(&w)
        .into_iter()
        .filter(|(k, _)| {
            [
                "FLY_API_TOKEN",
                "FLY_API_URL",
                "NEON_API_KEY",
                "NEON_API_URL",
                "NEON_PROJECT_ID",
                "DATABASE_URL",
                "GITHUB_API_URL",
            ]
            .contains(k)
        })
        .collect();

    // Without `confirm: yes` nothing is touched.
    let fly_before = w.fly.requests().len();
    let refused = dispatch.step(
        &[("command", "rollback"), ("restore-backup", &backup)],
        &env,
    );
    refused.run.expect(2);
    assert!(
        refused.run.stderr.contains("confirm"),
        "{}",
        refused.run.stderr
    );
    assert_eq!(w.fly.requests().len(), fly_before);
    assert!(w.neon.sent("POST", "/restore").is_empty());

    let step = dispatch.step(
        &[
            ("command", "rollback"),
            ("restore-backup", &backup),
            ("confirm", "yes"),
        ],
        &env,
    );
    step.run.expect(0);
    assert_eq!(w.machine_images(), vec![V1; 3], "the previous image");
    let restores = w.neon.sent("POST", "/restore");
    assert_eq!(restores.len(), 1);
    assert!(restores[0].path.contains(&main_id), "{}", restores[0].path);
    assert_eq!(
        restores[0].body.as_ref().unwrap()["source_branch_id"],
        backup.as_str()
    );
    assert_eq!(
        w.neon.branch(&main_id).unwrap().data,
        backup_data,
        "production's data is the backup's again"
    );
    assert_no_secrets(&(deploy.texts() + &refused.texts() + &step.texts() + &requests_text(&w)));
}

#[test]
fn command_migrate_with_args_status_lists_the_pending_files() {
    let w = pipeline_world("");
    let runner = Runner::new(w.work.path(), "push", &push_event());
    let before = w.db.ledger();
    let step = runner.step(
        &[("command", "migrate"), ("args", "status")],
        &[("DATABASE_URL", w.db_url())],
    );
    step.run.expect(0);
    assert!(
        step.run.stdout.contains("020_add_agent_notes.sql"),
        "{}",
        step.run.stdout
    );
    assert!(
        step.run.stdout.contains("020_add_current_step.sql"),
        "{}",
        step.run.stdout
    );
    assert_eq!(w.db.ledger(), before);

    // And `args: apply` applies them, through the same entrypoint.
    let apply = runner.step(
        &[("command", "migrate"), ("args", "apply")],
        &[("DATABASE_URL", w.db_url())],
    );
    apply.run.expect(0);
    assert_eq!(w.db.ledger().len(), 23);
    assert!(w.db.table_exists("agent_notes"));
    assert_no_secrets(&(step.texts() + &apply.texts()));
}

#[test]
fn rehearse_on_a_pull_request_comments_and_leaves_production_alone() {
    const PR: u64 = 12;
    let db = TestDb::new();
    let names = db::copy_example(&db);
    for late in &names[21..] {
        std::fs::rename(db.migrations().join(late), db.dir.path().join(late)).unwrap();
    }
    db.migrate("apply", &[]).expect(0);
    for late in &names[21..] {
        std::fs::rename(db.dir.path().join(late), db.migrations().join(late)).unwrap();
    }
    let neon = FakeNeon::start();
    let user = url::Url::parse(&db.url).unwrap().username().to_string();
    neon.with_compute(&db::admin_url(), &db.name, &user);
    let github = FakeGitHub::start(REPO, GITHUB_TOKEN);
    std::fs::write(
        db.dir.path().join("flightplan.toml"),
        "app = \"secure2send\"\n[migrate]\ndir = \"migrations\"\n[backup]\nprovider = \"neon\"\ntimeout = \"30s\"\n",
    )
    .unwrap();
    let ledger = db.ledger();
    let runner = Runner::new(
        db.dir.path(),
        "pull_request",
        &format!(
            r#"{{"action": "synchronize", "number": {PR}, "pull_request": {{"number": {PR}, "head": {{"sha": "{SHA}"}}}}}}"#
        ),
    );
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some(DB_PASSWORD)).unwrap();
    let step = runner.step(
        &[("command", "rehearse")],
        &[
            ("DATABASE_URL", url.to_string()),
            ("NEON_API_KEY", neon::KEY.into()),
            ("NEON_PROJECT_ID", neon::PROJECT.into()),
            ("NEON_API_URL", neon.url.clone()),
            ("GITHUB_API_URL", github.url.clone()),
        ],
    );
    step.run.expect(0);
    assert_eq!(step.output("verdict"), "pass");
    let comments: Vec<github::Comment> = github
        .comments(PR)
        .into_iter()
        .filter(|c| c.body.contains("<!-- flightplan:rehearsal -->"))
        .collect();
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0].body.contains("020_add_agent_notes.sql"),
        "{}",
        comments[0].body
    );
    assert_eq!(db.ledger(), ledger, "production untouched");
    assert!(!db.table_exists("agent_notes"));
    // One copy made on Neon and deleted again.
    let created = neon.sent("POST", "/branches");
    assert_eq!(created.len(), 1, "one copy made");
    let deleted = neon.sent("DELETE", "");
    assert_eq!(deleted.len(), 1, "and deleted");
    assert!(
        neon.names()
            .iter()
            .all(|n| !n.starts_with("flightplan/rehearse/")),
        "{:?}",
        neon.names()
    );
    let log_path = step.output("log-path");
    assert!(Path::new(log_path).is_relative(), "{log_path}");
    assert!(db.dir.path().join(log_path).is_file());
    let mut all = step.texts();
    for r in github.requests() {
        all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
    }
    for secret in [GITHUB_TOKEN, DB_PASSWORD, neon::KEY] {
        assert!(!all.contains(secret), "a secret leaked");
    }
}

#[test]
fn the_release_points_action_yml_at_the_published_image_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let original =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/action.yml")).unwrap();
    let copy = dir.path().join("action.yml");
    std::fs::write(&copy, &original).unwrap();
    let pin = |image: &str| {
        Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/pin-action-image"
        ))
        .arg(image)
        .arg(&copy)
        .output()
        .unwrap()
    };
    let out = pin("ghcr.io/acme/flightplan:v1.2.3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pinned = std::fs::read_to_string(&copy).unwrap();
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(pinned.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [(
            "  image: Dockerfile",
            "  image: docker://ghcr.io/acme/flightplan:v1.2.3"
        )]
    );
    assert_eq!(original.lines().count(), pinned.lines().count());
    // On main, action.yml builds the Dockerfile; a second pin finds nothing to pin.
    assert!(!pin("ghcr.io/acme/flightplan:v1.2.4").status.success());
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), pinned);
}
