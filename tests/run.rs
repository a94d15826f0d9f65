//! `flightplan run` end to end, as a process with the variables GitHub sets, against the real
//! PostgreSQL, stateful fakes of the Neon, Fly and GitHub APIs on 127.0.0.1, and the worked
//! example's app: success, a re-run updating the same comment, a failing migration, a failing
//! smoke test rolled back, a dry run, and no secret anywhere.

mod common;
#[path = "support_fly/mod.rs"]
mod support_fly;
#[path = "support_github/mod.rs"]
mod support_github;
#[path = "support_neon/mod.rs"]
mod support_neon;

/// The example app, compiled in (examples have no `CARGO_BIN_EXE_*`).
#[path = "../examples/secure2send_app.rs"]
#[allow(dead_code)]
mod secure2send_app;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{Run, TestDb};
use serde_json::Value;
use support_fly::FakeMachines;
use support_github::FakeGitHub;
use support_neon::FakeNeon;

const APP: &str = "secure2send";
const REPO: &str = "acme/secure2send";
const SHA: &str = "9f3c2a1b0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
const V1: &str = "registry.fly.io/secure2send:deployment-01";
const V2: &str = "registry.fly.io/secure2send:deployment-02";
const MERGED_PR: u64 = 7;

// Canary secrets: none of these may appear in any output, file or request body.
const FLY_TOKEN: &str = "FlyV1 fm2_canaryFLYmacaroonAAAAAAAAAAAAAAAAAAAA";
const GITHUB_TOKEN: &str = "ghs_canaryGITHUBtokenBBBBBBBBBBBBBBBBBBBBB";
const SESSION_SECRET: &str = "canary-session-secret-CCCCCCCCCCCCCCCCCCCCCCCC";
const DB_PASSWORD: &str = "canaryDbPasswordDDDD";
const SMOKE_PASSWORD: &str = "canary-smoke-password-EEEE";
const SMOKE_EMAIL: &str = "smoke@secure2send.io";

/// Everything one pipeline test needs, started fresh.
struct World {
    db: TestDb,
    neon: FakeNeon,
    fly: FakeMachines,
    github: FakeGitHub,
    app_base: String,
    _app: AppServer,
    work: tempfile::TempDir,
}

struct AppServer(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for AppServer {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl World {
    /// Production before the merge: the example's first 21 migrations applied, the app
    /// running on V1 on three machines, a merged PR for the commit.
    fn new(extra_config: &str) -> World {
        let db = TestDb::new();
        let names = common::copy_example(&db);
        for late in &names[21..] {
            std::fs::rename(db.migrations().join(late), db.dir.path().join(late)).unwrap();
        }
        db.migrate("apply", &[]).expect(0);
        for late in &names[21..] {
            std::fs::rename(db.dir.path().join(late), db.migrations().join(late)).unwrap();
        }
        let (app_base, app) = serve_example(&db);
        let neon = FakeNeon::start();
        let fly = FakeMachines::start(APP, &["fm2_canaryFLYmacaroonAAAAAAAAAAAAAAAAAAAA"]);
        fly.machine("m1", "ord", "app", V1)
            .machine("m2", "ord", "app", V1)
            .machine("m3", "ams", "app", V1);
        fly.slowness(0, 0);
        let github = FakeGitHub::start(REPO, GITHUB_TOKEN);
        github.pull_for(SHA, MERGED_PR);
        github.human_comment(MERGED_PR, "LGTM, ship it");
        let work = tempfile::tempdir().unwrap();
        let config = format!(
            r#"app = "{APP}"
app_url = "{app_base}"

[env.DATABASE_URL]
required = true
secret = true
format = "postgres_url"
[env.SESSION_SECRET]
required = true
secret = true
min_length = 32
[env.NODE_ENV]
equals = "production"

[migrate]
dir = "{dir}"

[backup]
provider = "neon"
timeout = "20s"

[deploy]
provider = "fly"
wait_timeout = "20s"

[smoke]
timeout = "5s"
[smoke.login]
path = "/api/login"
accept = "session"
[[smoke.check]]
name = "health"
path = "/api/health"
expect_json = {{ status = "ok" }}
[[smoke.check]]
name = "user"
path = "/api/user"
expect_status = 200
{extra_config}
"#,
            dir = db.migrations().display()
        );
        std::fs::write(work.path().join("flightplan.toml"), config).unwrap();
        std::fs::write(
            work.path().join("event.json"),
            format!(r#"{{"after": "{SHA}", "ref": "refs/heads/main", "repository": {{"full_name": "{REPO}"}}}}"#),
        )
        .unwrap();
        World {
            db,
            neon,
            fly,
            github,
            app_base,
            _app: app,
            work,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// The database URL with a password (trust auth accepts any; it is a canary here).
    fn db_url(&self) -> String {
        let mut u = url::Url::parse(&self.db.url).unwrap();
        u.set_password(Some(DB_PASSWORD)).unwrap();
        u.to_string()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
        c.args(args)
            .current_dir(self.work.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.db_url())
            .env("SESSION_SECRET", SESSION_SECRET)
            .env("NODE_ENV", "production")
            .env("NEON_API_URL", &self.neon.url)
            .env("NEON_API_KEY", support_neon::KEY)
            .env("NEON_PROJECT_ID", support_neon::PROJECT)
            .env("FLY_API_URL", &self.fly.url)
            .env("FLY_API_TOKEN", FLY_TOKEN)
            .env("SMOKE_USER_EMAIL", SMOKE_EMAIL)
            .env("SMOKE_USER_PASSWORD", SMOKE_PASSWORD)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_SHA", SHA)
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_API_URL", &self.github.url)
            .env("GITHUB_EVENT_NAME", "push")
            .env("GITHUB_ACTOR", "jdugard")
            .env("GITHUB_EVENT_PATH", self.path("event.json"))
            .env("GITHUB_STEP_SUMMARY", self.path("summary.md"))
            .env("GITHUB_OUTPUT", self.path("output.txt"))
            .env("GITHUB_WORKSPACE", self.work.path())
            .env("GITHUB_TOKEN", GITHUB_TOKEN)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn log(&self) -> Value {
        serde_json::from_str(&self.read("flightplan-log.json")).expect("the JSON log is written")
    }

    /// The step outputs of the last run, as name → value.
    fn outputs(&self) -> std::collections::HashMap<String, String> {
        let text = self.read("output.txt");
        let mut out = std::collections::HashMap::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let (name, delim) = line.split_once("<<").expect("multi-line output syntax");
            let mut value = Vec::new();
            for l in lines.by_ref() {
                if l == delim {
                    break;
                }
                value.push(l);
            }
            out.insert(name.to_string(), value.join("\n"));
        }
        out
    }

    /// Every place a secret could leak to, as one text.
    fn everything(&self, runs: &[&Run]) -> String {
        let mut all = String::new();
        for r in runs {
            all.push_str(&r.stdout);
            // `::add-mask::VALUE` is how a secret is handed to the runner to hide: the one
            // line where the value must appear. Everything else is searched.
            for line in r.stderr.lines().filter(|l| !l.starts_with("::add-mask::")) {
                all.push_str(line);
                all.push('\n');
            }
        }
        for f in ["summary.md", "output.txt", "flightplan-log.json"] {
            all.push_str(&self.read(f));
        }
        for r in self.github.requests() {
            all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
        }
        for r in self.fly.requests() {
            all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
        }
        all
    }

    fn machine_images(&self) -> Vec<String> {
        ["m1", "m2", "m3"]
            .iter()
            .map(|id| self.fly.get(id).image())
            .collect()
    }
}

#[track_caller]
fn assert_no_secrets(all: &str) {
    let stripped = FLY_TOKEN.trim_start_matches("FlyV1 ");
    for secret in [
        stripped,
        GITHUB_TOKEN,
        SESSION_SECRET,
        DB_PASSWORD,
        SMOKE_PASSWORD,
        support_neon::KEY,
    ] {
        for probe in [secret, &secret[..8], &secret[secret.len() - 8..]] {
            assert!(!all.contains(probe), "secret fragment `{probe}` leaked");
        }
    }
}

/// The example app on the test database, served in-process.
fn serve_example(db: &TestDb) -> (String, AppServer) {
    let url = db.url.clone();
    let env = move |k: &str| match k {
        "DATABASE_URL" => Some(url.clone()),
        "PORT" => Some("0".into()),
        "SMOKE_USER_EMAIL" => Some(SMOKE_EMAIL.into()),
        "SMOKE_USER_PASSWORD" => Some(SMOKE_PASSWORD.into()),
        _ => None,
    };
    let config = secure2send_app::AppConfig::from_env(&env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let (ready, built) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let router = secure2send_app::app(&config)
                .await
                .expect("the example app starts");
            let _ = ready.send(());
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                })
                .await;
        });
    });
    built.recv().unwrap();
    (base, AppServer(stop))
}

fn flightplan_comments(w: &World) -> Vec<support_github::Comment> {
    w.github
        .comments(MERGED_PR)
        .into_iter()
        .filter(|c| c.user_type == "Bot")
        .collect()
}

#[test]
fn a_successful_run_reports_everywhere_and_a_second_run_updates_the_same_comment() {
    let w = World::new("");
    let first = w.run(&["run", "--image", V2]);
    first.expect(0);

    // Database: the two pending migrations applied, after a backup branch was taken.
    assert_eq!(w.db.ledger().len(), 23);
    assert!(w.db.table_exists("agent_notes"));
    let backups: Vec<String> = w
        .neon
        .names()
        .into_iter()
        .filter(|n| n.starts_with("flightplan/backup/"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    // Machines: all on the new image, the old one remembered.
    assert_eq!(w.machine_images(), vec![V2; 3]);
    assert_eq!(
        w.fly
            .get("m1")
            .metadata("flightplan_previous_image")
            .as_deref(),
        Some(V1)
    );

    // The log, the summary and the outputs.
    let log = w.log();
    assert_eq!(log["status"], "SUCCESS");
    let steps: Vec<(&str, &str)> = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("preflight", "ok"),
            ("backup", "ok"),
            ("migrate", "ok"),
            ("deploy", "ok"),
            ("smoke", "ok")
        ]
    );
    assert_eq!(log["migrations_applied"].as_array().unwrap().len(), 2);
    let summary = w.read("summary.md");
    assert!(
        summary.starts_with("## ✅ Deployment SUCCESS — secure2send (production)"),
        "{summary}"
    );
    assert!(summary.contains("```mermaid\ngantt"));
    assert!(summary.contains("020_add_current_step.sql"));
    let out = w.outputs();
    assert_eq!(out["status"], "SUCCESS");
    assert_eq!(out["image"], V2);
    assert_eq!(out["previous-image"], V1);
    assert_eq!(
        out["migrations-applied"],
        "020_add_agent_notes.sql\n020_add_current_step.sql"
    );
    assert!(out["backup-id"].starts_with("br-"), "{}", out["backup-id"]);
    assert_eq!(
        out["log-path"],
        w.path("flightplan-log.json").display().to_string()
    );

    // GitHub: one sticky comment beside the human one, one deployment with its statuses.
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .body
            .contains("<!-- flightplan:deployment-log -->")
    );
    assert!(comments[0].body.contains("SUCCESS"));
    assert_eq!(
        w.github
            .comments(MERGED_PR)
            .iter()
            .filter(|c| c.user_type == "User")
            .count(),
        1
    );
    let deployments = w.github.deployments();
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!(d.body["ref"], SHA);
    assert_eq!(d.body["required_contexts"], serde_json::json!([]));
    assert_eq!(d.body["auto_merge"], false);
    assert_eq!(d.body["environment"], "production");
    let states: Vec<&str> = d
        .statuses
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["in_progress", "success"]);
    assert_eq!(d.statuses[1]["environment_url"], w.app_base.as_str());
    assert_eq!(
        d.statuses[1]["log_url"],
        format!("https://github.com/{REPO}/actions/runs/4242")
    );

    // Every secret is masked first, and none is anywhere.
    assert!(
        first
            .stderr
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("::add-mask::"),
        "{}",
        first.stderr
    );

    // A second run (nothing pending, same image) updates the same comment.
    let second = w.run(&["run", "--image", V2]);
    second.expect(0);
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1, "the comment is updated, not duplicated");
    assert!(w.github.requests().iter().any(|r| {
        r.method == "PATCH"
            && r.path
                .ends_with(&format!("/issues/comments/{}", comments[0].id))
    }));
    assert_eq!(w.github.deployments().len(), 2);
    assert_no_secrets(&w.everything(&[&first, &second]));
}

#[test]
fn a_failing_migration_stops_before_deploying_and_reports_the_backup() {
    let w = World::new("");
    w.db.write(
        "021_broken.sql",
        "ALTER TABLE users ADD COLUMN broken intt;\n",
    );
    let run = w.run(&["run", "--image", V2]);
    run.expect(1);

    // The good pending files applied, the broken one did not, and nothing was deployed.
    let ledger: Vec<String> = w.db.ledger().into_iter().map(|(f, _)| f).collect();
    assert!(ledger.contains(&"020_add_current_step.sql".to_string()));
    assert!(!ledger.contains(&"021_broken.sql".to_string()));
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert!(
        !w.fly.requests().iter().any(|r| r.method == "POST"),
        "no lease, no update"
    );

    let log = w.log();
    assert_eq!(log["status"], "FAILED");
    assert_eq!(
        log["steps"].as_array().unwrap().last().unwrap()["name"],
        "migrate"
    );
    let issue = &log["issues"][0];
    assert!(
        issue["message"]
            .as_str()
            .unwrap()
            .contains("021_broken.sql"),
        "{issue}"
    );
    assert!(
        issue["location"]
            .as_str()
            .unwrap()
            .ends_with("021_broken.sql:1:37"),
        "{issue}"
    );
    let out = w.outputs();
    assert_eq!(out["status"], "FAILED");
    assert!(out["backup-id"].starts_with("br-"));
    assert!(
        log["resolution"]
            .as_str()
            .unwrap()
            .contains(&out["backup-id"])
    );
    assert!(
        run.stderr.contains("::error"),
        "an annotation for the failure: {}",
        run.stderr
    );
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.contains("FAILED"));
    let d = &w.github.deployments()[0];
    assert_eq!(d.statuses.last().unwrap()["state"], "failure");
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_failing_smoke_test_rolls_the_machines_back() {
    // A check the new release fails: the page it needs does not exist.
    let w = World::new(
        "[[smoke.check]]\nname = \"dashboard\"\npath = \"/api/admin/dashboard\"\nexpect_status = 200\n",
    );
    let run = w.run(&["run", "--image", V2]);
    run.expect(1);
    assert_eq!(
        w.machine_images(),
        vec![V1; 3],
        "every machine back on the old image"
    );
    let log = w.log();
    assert_eq!(log["status"], "ROLLED_BACK");
    let names: Vec<&str> = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "preflight",
            "backup",
            "migrate",
            "deploy",
            "smoke",
            "rollback"
        ]
    );
    assert!(log["resolution"].as_str().unwrap().contains("not restored"));
    assert_eq!(w.outputs()["status"], "ROLLED BACK");
    assert!(w.read("summary.md").contains("ROLLED BACK"));
    assert_eq!(
        w.db.ledger().len(),
        23,
        "migrations stay applied; the database is not restored by default"
    );
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_dry_run_changes_nothing() {
    let w = World::new("");
    let before = w.db.ledger();
    let run = w.run(&["run", "--image", V2, "--dry-run"]);
    run.expect(0);
    assert_eq!(w.db.ledger(), before);
    assert!(
        !w.neon
            .names()
            .iter()
            .any(|n| n.starts_with("flightplan/backup/"))
    );
    assert!(!w.fly.requests().iter().any(|r| r.method != "GET"));
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert!(
        w.github.requests().is_empty(),
        "no comment, no deployment on a dry run"
    );
    let log = w.log();
    assert_eq!(log["status"], "DRY_RUN");
    assert_eq!(
        log["migrations_pending"],
        serde_json::json!(["020_add_agent_notes.sql", "020_add_current_step.sql"])
    );
    assert!(w.read("summary.md").contains("DRY RUN"));
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_run_stopped_by_preflight_comments_but_creates_no_deployment() {
    let w = World::new("");
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env("SESSION_SECRET", "too-short");
    let run = Run::from(cmd.output().unwrap());
    run.expect(1);
    assert_eq!(w.db.ledger().len(), 21, "nothing migrated");
    assert!(
        w.neon
            .names()
            .iter()
            .all(|n| !n.starts_with("flightplan/backup/")),
        "no backup taken"
    );
    assert!(
        w.github.deployments().is_empty(),
        "the Deployment starts with the first change"
    );
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.contains("FAILED"));
    assert!(comments[0].body.contains("SESSION_SECRET"));
    assert!(!w.everything(&[&run]).contains("too-short"));
}
