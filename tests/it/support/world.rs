//! The world of the pipeline tests, shared by tests/run.rs and tests/faults_run.rs:
//! production before a merge (a scratch database with the worked example's first 21
//! migrations applied, the example app serving it, three Fly machines on V1, a merged PR)
//! with stateful fakes of the Neon, Fly and GitHub APIs on 127.0.0.1, the flightplan.toml
//! that ties them together, and the canary secrets that must never leak.
//!
//! Used by tests/it/run.rs and tests/it/faults_run.rs.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::support::db::{self, Run, TestDb};
use crate::support::fly::FakeMachines;
use crate::support::github::{self, FakeGitHub};
use crate::support::neon::{self, FakeNeon};
use crate::support::secure2send_app;
use serde_json::Value;

pub const APP: &str = "secure2send";
pub const REPO: &str = "acme/secure2send";
pub const SHA: &str = "9f3c2a1b0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
pub const V1: &str = "registry.fly.io/secure2send:deployment-01";
pub const V2: &str = "registry.fly.io/secure2send:deployment-02";
pub const MERGED_PR: u64 = 7;

// Canary secrets: none of these may appear in any output, file or request body.
pub const FLY_TOKEN: &str = "FlyV1 fm2_canaryFLYmacaroonAAAAAAAAAAAAAAAAAAAA";
pub const GITHUB_TOKEN: &str = "ghs_canaryGITHUBtokenBBBBBBBBBBBBBBBBBBBBB";
pub const SESSION_SECRET: &str = "canary-session-secret-CCCCCCCCCCCCCCCCCCCCCCCC";
pub const DB_PASSWORD: &str = "canaryDbPasswordDDDD";
pub const SMOKE_PASSWORD: &str = "canary-smoke-password-EEEE";
pub const SMOKE_EMAIL: &str = "smoke@secure2send.io";

/// Everything one pipeline test needs, started fresh.
pub struct World {
    pub db: TestDb,
    pub neon: FakeNeon,
    pub fly: FakeMachines,
    pub github: FakeGitHub,
    pub app_base: String,
    pub _app: AppServer,
    pub work: tempfile::TempDir,
}

pub struct AppServer(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for AppServer {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl World {
    /// Production before the merge: the example's first 21 migrations applied, the app
    /// running on V1 on three machines, a merged PR for the commit.
    pub fn new(extra_config: &str) -> World {
        World::build("", extra_config)
    }

    /// As `new`, with lines added to `[deploy]` (e.g. `lease_ttl = "2s"`).
    pub fn build(deploy_extra: &str, extra_config: &str) -> World {
        let db = TestDb::new();
        let names = db::copy_example(&db);
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
{deploy_extra}

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

    /// Rewrites the world's flightplan.toml.
    pub fn edit_config(&self, f: impl FnOnce(String) -> String) {
        let path = self.path("flightplan.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let changed = f(text.clone());
        assert_ne!(changed, text, "the edit changed the config");
        std::fs::write(path, changed).unwrap();
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// The database URL with a password (trust auth accepts any; it is a canary here).
    pub fn db_url(&self) -> String {
        let mut u = url::Url::parse(&self.db.url).unwrap();
        u.set_password(Some(DB_PASSWORD)).unwrap();
        u.to_string()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
        c.args(args)
            .current_dir(self.work.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.db_url())
            .env("SESSION_SECRET", SESSION_SECRET)
            .env("NODE_ENV", "production")
            .env("NEON_API_URL", &self.neon.url)
            .env("NEON_API_KEY", neon::KEY)
            .env("NEON_PROJECT_ID", neon::PROJECT)
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

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    pub fn log(&self) -> Value {
        serde_json::from_str(&self.read("flightplan-log.json")).expect("the JSON log is written")
    }

    /// The step outputs of the last run, as name → value.
    pub fn outputs(&self) -> std::collections::HashMap<String, String> {
        parse_outputs(&self.read("output.txt"))
    }

    /// Every place a secret could leak to, as one text.
    pub fn everything(&self, runs: &[&Run]) -> String {
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

    pub fn machine_images(&self) -> Vec<String> {
        ["m1", "m2", "m3"]
            .iter()
            .map(|id| self.fly.get(id).image())
            .collect()
    }
}

/// `name<<DELIM … DELIM` blocks, as the runner reads GITHUB_OUTPUT.
pub fn parse_outputs(text: &str) -> std::collections::HashMap<String, String> {
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

#[track_caller]
pub fn assert_no_secrets(all: &str) {
    let stripped = FLY_TOKEN.trim_start_matches("FlyV1 ");
    for secret in [
        stripped,
        GITHUB_TOKEN,
        SESSION_SECRET,
        DB_PASSWORD,
        SMOKE_PASSWORD,
        neon::KEY,
    ] {
        for probe in [secret, &secret[..8], &secret[secret.len() - 8..]] {
            assert!(!all.contains(probe), "secret fragment `{probe}` leaked");
        }
    }
}

/// The example app on the test database, served in-process.
pub fn serve_example(db: &TestDb) -> (String, AppServer) {
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

pub fn flightplan_comments(w: &World) -> Vec<github::Comment> {
    w.github
        .comments(MERGED_PR)
        .into_iter()
        .filter(|c| c.user_type == "Bot")
        .collect()
}
