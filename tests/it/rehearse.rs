//! `flightplan rehearse` end to end, as a process with the variables a `pull_request`
//! workflow has: production is a database on the real PostgreSQL with the worked example's
//! first 21 migrations applied; the Neon fake's branches get a compute whose data is a
//! real copy of it (CREATE DATABASE … TEMPLATE production), reached through the
//! connection URI the fake hands out. Proves a passing rehearsal with timings, locks and
//! warnings; a data-dependent failure named by file and line with production untouched;
//! the branch deleted in every outcome (an API error, SIGTERM mid-migration), kept with
//! --keep until it expires; the PR comment updated in place; the pg_dump path; a fork's
//! pull request without secrets; and no secret anywhere.

use crate::support::{db, github, neon};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::db::{Run, TestDb};
use crate::support::github::FakeGitHub;
use crate::support::neon::{BRANCH_PASSWORD, FakeNeon, MAIN_ID};
use serde_json::Value;

const REPO: &str = "acme/secure2send";
const SHA: &str = "4c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d";
const PR: u64 = 12;
const REHEARSAL_MARKER: &str = "<!-- flightplan:rehearsal -->";
const DEPLOY_MARKER: &str = "<!-- flightplan:deployment-log -->";

// Canary secrets: none may appear in any output, file or request body.
const GITHUB_TOKEN: &str = "ghs_canaryREHEARSEtokenGGGGGGGGGGGGGGGGGGG";
const DB_PASSWORD: &str = "canaryRehearseDbPasswordHHHH";

/// Production before a pull request is merged, and the fakes around it.
struct World {
    db: TestDb,
    neon: FakeNeon,
    github: FakeGitHub,
}

impl World {
    /// The example's first 21 migrations applied to production, the last two pending, and
    /// `config` (after the common part) as flightplan.toml in the checkout.
    fn new(config: &str) -> World {
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
            format!(
                "app = \"secure2send\"\n\n[migrate]\ndir = \"migrations\"\n\n{config}\n\n[rehearse]\nlarge_table_rows = 3\n"
            ),
        )
        .unwrap();
        std::fs::write(
            db.dir.path().join("event.json"),
            format!(
                r#"{{"action": "synchronize", "number": {PR}, "pull_request": {{"number": {PR}, "head": {{"sha": "{SHA}"}}}}}}"#
            ),
        )
        .unwrap();
        World { db, neon, github }
    }

    fn neon() -> World {
        World::new("[backup]\nprovider = \"neon\"\ntimeout = \"30s\"")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.db.dir.path().join(name)
    }

    /// DATABASE_URL with a password: trust auth accepts any, and it is a canary.
    fn db_url(&self) -> String {
        let mut u = url::Url::parse(&self.db.url).unwrap();
        u.set_password(Some(DB_PASSWORD)).unwrap();
        u.to_string()
    }

    /// The binary as a `pull_request` workflow step runs it.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
        c.arg("rehearse")
            .args(args)
            .current_dir(self.db.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", self.db_url())
            .env("NEON_API_URL", &self.neon.url)
            .env("NEON_API_KEY", neon::KEY)
            .env("NEON_PROJECT_ID", neon::PROJECT)
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_SHA", SHA)
            .env("GITHUB_RUN_ID", "4343")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_API_URL", &self.github.url)
            .env("GITHUB_EVENT_NAME", "pull_request")
            .env("GITHUB_ACTOR", "jdugard")
            .env("GITHUB_EVENT_PATH", self.path("event.json"))
            .env("GITHUB_STEP_SUMMARY", self.path("summary.md"))
            .env("GITHUB_OUTPUT", self.path("output.txt"))
            .env("GITHUB_WORKSPACE", self.db.dir.path())
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
        serde_json::from_str(&self.read("flightplan-rehearsal.json"))
            .expect("the JSON log is written")
    }

    fn comments(&self, marker: &str) -> Vec<github::Comment> {
        self.github
            .comments(PR)
            .into_iter()
            .filter(|c| c.user_type == "Bot" && c.body.contains(marker))
            .collect()
    }

    /// Branches the rehearsal created (whatever became of them since).
    fn rehearsal_branches(&self) -> Vec<String> {
        self.neon
            .names()
            .into_iter()
            .filter(|n| n.starts_with("flightplan/rehearse/"))
            .collect()
    }

    /// Databases standing in for branch computes that still exist on the server.
    fn compute_databases(&self) -> Vec<String> {
        db::query_url(
            &db::admin_url(),
            &format!(
                "SELECT datname::text FROM pg_database WHERE datname LIKE '{}\\_br\\_%'",
                self.db.name
            ),
        )
        .into_iter()
        .filter_map(|r| r[0].clone())
        .collect()
    }

    /// Production's schema, enough to see any change: columns, nullability, indexes.
    fn schema(&self) -> Vec<Vec<Option<String>>> {
        self.db.query(
            "SELECT table_name::text, column_name::text, is_nullable::text FROM information_schema.columns \
             WHERE table_schema = 'public' UNION ALL SELECT tablename::text, indexname::text, 'index' FROM pg_indexes \
             WHERE schemaname = 'public' ORDER BY 1, 2",
        )
    }

    /// Every place a secret could leak to, as one text.
    fn everything(&self, runs: &[&Run]) -> String {
        let mut all = String::new();
        for r in runs {
            all.push_str(&r.stdout);
            // `::add-mask::VALUE` hands a secret to the runner to hide: the one line where
            // it must appear.
            for line in r.stderr.lines().filter(|l| !l.starts_with("::add-mask::")) {
                all.push_str(line);
                all.push('\n');
            }
        }
        for f in ["summary.md", "output.txt", "flightplan-rehearsal.json"] {
            all.push_str(&self.read(f));
        }
        for r in self.github.requests() {
            all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
        }
        for r in self.neon.requests() {
            all.push_str(&r.body.map(|b| b.to_string()).unwrap_or_default());
            all.push_str(&r.query);
        }
        all
    }

    /// A few users, some without a phone number.
    fn users(&self, n: usize) {
        for i in 0..n {
            let phone = if i % 2 == 0 {
                "NULL".to_string()
            } else {
                format!("'+1555000{i:04}'")
            };
            self.db.query(&format!(
                "INSERT INTO users (email, password_hash, phone) VALUES ('u{i}@example.org', 'x', {phone})"
            ));
        }
    }
}

#[track_caller]
fn assert_no_secrets(all: &str) {
    for secret in [GITHUB_TOKEN, DB_PASSWORD, BRANCH_PASSWORD, neon::KEY] {
        for probe in [secret, &secret[..10], &secret[secret.len() - 10..]] {
            assert!(!all.contains(probe), "secret fragment `{probe}` leaked");
        }
    }
}

fn file<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["rehearsal"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["filename"] == name)
        .unwrap_or_else(|| panic!("{name} is not among the files: {json}"))
}

#[test]
fn a_passing_rehearsal_reports_timings_locks_and_warnings_and_deletes_the_branch() {
    let w = World::neon();
    w.users(5);
    w.db.write(
        "021_index_users_phone.sql",
        "-- 021_index_users_phone.sql\nCREATE INDEX users_phone_idx ON users (phone);\n",
    );
    let before = w.schema();
    let run = w.run(&["--format", "json"]);
    run.expect(0);
    let json = run.json();
    assert_eq!(json["verdict"], "pass", "{json}");

    // Each pending file: applied on the copy, timed, with its strongest lock.
    let names: Vec<&str> = json["rehearsal"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "020_add_agent_notes.sql",
            "020_add_current_step.sql",
            "021_index_users_phone.sql"
        ]
    );
    for f in json["rehearsal"]["files"].as_array().unwrap() {
        assert_eq!(f["status"], "applied", "{f}");
        assert!(f["duration_ms"].as_i64().is_some(), "{f}");
    }
    assert_eq!(
        file(&json, "020_add_agent_notes.sql")["strongest_lock"],
        "SHARE ROW EXCLUSIVE on merchant_applications, users"
    );
    assert_eq!(
        file(&json, "020_add_current_step.sql")["strongest_lock"],
        "ACCESS EXCLUSIVE on merchant_applications"
    );
    let index = file(&json, "021_index_users_phone.sql");
    assert_eq!(index["strongest_lock"], "SHARE on users");
    assert_eq!(index["tables"][0]["rows"], 5, "{index}");
    assert_eq!(
        index["warnings"][0]["kind"], "index_not_concurrent",
        "{index}"
    );
    assert_eq!(index["warnings"][0]["line"], 2);
    assert_eq!(json["rehearsal"]["drift"], serde_json::json!([]));

    // The copy: a branch of production with a read_write endpoint and an expiry, reached
    // by its direct URI, and deleted.
    let posts = w.neon.sent("POST", "/branches");
    assert_eq!(posts.len(), 1);
    let body = posts[0].body.as_ref().unwrap();
    assert_eq!(body["branch"]["parent_id"], MAIN_ID);
    assert_eq!(
        body["endpoints"],
        serde_json::json!([{ "type": "read_write" }])
    );
    let name = body["branch"]["name"].as_str().unwrap();
    assert!(
        name.starts_with(&format!("flightplan/rehearse/pr-{PR}-")),
        "{name}"
    );
    let expires = neon::parse_rfc3339(body["branch"]["expires_at"].as_str().unwrap())
        .expect("expires_at is RFC 3339 with a zone");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - 3600).abs() < 300, "expires in about 1h");
    let uri = w.neon.sent("GET", "/connection_uri");
    assert_eq!(uri.len(), 1);
    for part in [
        "pooled=false",
        &format!("database_name={}", w.db.name),
        "role_name=",
        "branch_id=br-fake-",
        "endpoint_id=ep-fake-",
    ] {
        assert!(uri[0].query.contains(part), "{part} in {}", uri[0].query);
    }
    let copy = &json["rehearsal"]["copy"];
    assert_eq!(copy["provider"], "neon");
    assert_eq!(copy["disposition"], "deleted");
    assert_eq!(copy["name"], name);
    let id = copy["id"].as_str().unwrap();
    assert_eq!(w.neon.sent("DELETE", &format!("/branches/{id}")).len(), 1);
    assert!(w.rehearsal_branches().is_empty());
    assert!(
        w.compute_databases().is_empty(),
        "the compute's data went with the branch"
    );

    // Production was only read.
    assert_eq!(w.db.ledger().len(), 21);
    assert_eq!(w.schema(), before);

    // The report: JSON log, summary, outputs, the sticky comment.
    let log = w.log();
    assert_eq!(log["command"], "rehearse");
    assert_eq!(log["rehearsal"]["verdict"], "pass");
    assert!(w.read("summary.md").contains("Migration rehearsal PASSED"));
    assert!(w.read("output.txt").contains("PASSED"));
    let comments = w.comments(REHEARSAL_MARKER);
    assert_eq!(comments.len(), 1);
    let c = &comments[0].body;
    for want in [
        "Migration rehearsal PASSED",
        "ACCESS EXCLUSIVE on merchant_applications",
        "SHARE on users",
        "021_index_users_phone.sql:2",
        "without CONCURRENTLY",
    ] {
        assert!(c.contains(want), "`{want}` in the comment:\n{c}");
    }

    // The branch's password was masked before anything else, and no secret is anywhere.
    assert!(
        run.stderr
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("::add-mask::")
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("::add-mask::") && l.contains(BRANCH_PASSWORD)),
        "the branch's password is announced to the runner"
    );
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_data_dependent_failure_names_file_and_line_and_production_is_untouched() {
    let w = World::neon();
    w.users(4);
    w.db.write(
        "021_require_phone.sql",
        "-- 021_require_phone.sql\n-- Every user needs a phone number for SMS codes.\nALTER TABLE users ALTER COLUMN phone SET NOT NULL;\n",
    );
    w.db.write(
        "022_nickname.sql",
        "ALTER TABLE users ADD COLUMN nickname text;\n",
    );
    let before = w.schema();
    let run = w.run(&["--format", "json"]);
    run.expect(1);
    let json = run.json();
    assert_eq!(json["verdict"], "fail", "{json}");
    let failed = file(&json, "021_require_phone.sql");
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"]["line"], 3, "{failed}");
    assert_eq!(failed["error"]["column"], 1);
    assert_eq!(failed["error"]["code"], "23502");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("contains null values"),
        "{failed}"
    );
    assert!(failed["error"]["hint"].as_str().is_some());
    assert_eq!(failed["strongest_lock"], "ACCESS EXCLUSIVE on users");
    assert_eq!(
        failed["warnings"][0]["kind"], "set_not_null_without_check",
        "{failed}"
    );
    assert_eq!(file(&json, "020_add_current_step.sql")["status"], "applied");
    assert_eq!(file(&json, "022_nickname.sql")["status"], "not_run");
    // The error names the file and line, also as an annotation.
    assert_eq!(json["error"]["line"], 3);
    assert!(
        json["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("021_require_phone.sql")
    );
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("::error file=") && l.contains("021_require_phone.sql,line=3")),
        "{}",
        run.stderr
    );

    // Production: not one change, ledger and schema.
    assert_eq!(w.db.ledger().len(), 21);
    assert_eq!(w.schema(), before);
    assert_eq!(
        w.db.scalar("SELECT count(*)::text FROM users WHERE phone IS NULL")
            .as_deref(),
        Some("2")
    );
    // The copy is gone.
    assert!(w.rehearsal_branches().is_empty());
    assert!(w.compute_databases().is_empty());
    assert_eq!(json["rehearsal"]["copy"]["disposition"], "deleted");

    let c = &w.comments(REHEARSAL_MARKER)[0].body;
    assert!(c.contains("Migration rehearsal FAILED"), "{c}");
    assert!(c.contains("`021_require_phone.sql:3:1`"), "{c}");
    assert!(c.contains("⏭️ not run"), "{c}");
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn sigterm_mid_migration_still_deletes_the_branch() {
    let w = World::neon();
    w.db.write(
        "021_slow_backfill.sql",
        "-- 021_slow_backfill.sql\nSELECT pg_sleep(60);\nALTER TABLE users ADD COLUMN backfilled boolean;\n",
    );
    let before = w.schema();
    let mut child = w
        .cmd(&["--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the slow file sleeps on the branch's compute (pg_stat_activity's query text
    // is cut at 1 kB, and the batch is longer: the wait event says it).
    let started = Instant::now();
    let like = format!("{}\\_br\\_%", w.db.name);
    loop {
        let n = db::query_url(
            &db::admin_url(),
            &format!(
                "SELECT count(*)::text FROM pg_stat_activity WHERE datname LIKE '{like}' AND wait_event = 'PgSleep'"
            ),
        );
        if n[0][0].as_deref() != Some("0") {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the slow migration never started on the copy; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("flightplan exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect(1);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "it stopped at once, not after the sleep"
    );

    let log = w.log();
    assert_eq!(log["rehearsal"]["verdict"], "interrupted");
    let steps: Vec<(&str, &str)> = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert!(steps.contains(&("rehearse", "interrupted")), "{steps:?}");
    assert!(steps.contains(&("cleanup", "ok")), "{steps:?}");
    let id = log["rehearsal"]["copy"]["id"].as_str().unwrap().to_string();
    assert_eq!(w.neon.sent("DELETE", &format!("/branches/{id}")).len(), 1);
    assert!(w.rehearsal_branches().is_empty());
    assert!(w.compute_databases().is_empty());
    assert_eq!(w.db.ledger().len(), 21);
    assert_eq!(w.schema(), before);
    assert!(w.comments(REHEARSAL_MARKER)[0].body.contains("INTERRUPTED"));
}

#[test]
fn an_api_error_after_the_branch_exists_still_deletes_it() {
    let w = World::neon();
    w.neon
        .inject(neon::Fault::new("GET", "/connection_uri", 500, 50));
    let run = w.run(&["--format", "json"]);
    run.expect(1);
    let json = run.json();
    assert_eq!(json["verdict"], "error", "{json}");
    assert!(
        json["rehearsal"]["reason"]
            .as_str()
            .unwrap()
            .contains("no copy of production could be made"),
        "{json}"
    );
    assert_eq!(w.neon.sent("POST", "/branches").len(), 1);
    assert_eq!(json["rehearsal"]["copy"]["disposition"], "deleted");
    assert!(w.rehearsal_branches().is_empty());
    assert!(w.compute_databases().is_empty());
    assert_eq!(w.db.ledger().len(), 21);
}

#[test]
fn the_pr_comment_is_updated_in_place_on_each_push() {
    let w = World::neon();
    let deploy_comment = w
        .github
        .bot_comment(PR, &format!("## Deployment SUCCESS\n{DEPLOY_MARKER}\n"));
    w.github.human_comment(PR, "LGTM once the rehearsal passes");

    let first = w.run(&[]);
    first.expect(0);
    let comments = w.comments(REHEARSAL_MARKER);
    assert_eq!(comments.len(), 1);
    let id = comments[0].id;
    assert!(comments[0].body.contains("PASSED"));

    // The next push adds a file that fails on production's data.
    w.users(2);
    w.db.write(
        "021_require_phone.sql",
        "ALTER TABLE users ALTER COLUMN phone SET NOT NULL;\n",
    );
    let second = w.run(&[]);
    second.expect(1);
    let comments = w.comments(REHEARSAL_MARKER);
    assert_eq!(comments.len(), 1, "updated, not duplicated");
    assert_eq!(comments[0].id, id);
    assert!(comments[0].body.contains("FAILED"));
    assert!(
        w.github.requests().iter().any(|r| {
            r.method == "PATCH" && r.path.ends_with(&format!("/issues/comments/{id}"))
        })
    );
    // The deployment comment and the person's comment are left alone.
    let deploy = w.comments(DEPLOY_MARKER);
    assert_eq!(deploy.len(), 1);
    assert_eq!(deploy[0].id, deploy_comment);
    assert!(!deploy[0].body.contains(REHEARSAL_MARKER));
    assert_eq!(
        w.github
            .comments(PR)
            .iter()
            .filter(|c| c.user_type == "User")
            .count(),
        1
    );
    assert!(
        first.stdout.starts_with("Rehearsal PASSED"),
        "{}",
        first.stdout
    );
    assert!(
        second.stdout.contains("021_require_phone.sql:1:1"),
        "{}",
        second.stdout
    );
    assert_no_secrets(&w.everything(&[&first, &second]));
}

#[test]
fn keep_leaves_the_branch_until_it_expires() {
    let w = World::neon();
    let run = w.run(&["--keep", "--expires-in", "2h"]);
    run.expect(0);
    let names = w.rehearsal_branches();
    assert_eq!(names.len(), 1);
    assert!(
        run.stdout
            .contains(&format!("Neon branch {} kept", names[0])),
        "{}",
        run.stdout
    );
    let branch = w.neon.branch(&names[0]).unwrap();
    assert!(w.neon.sent("DELETE", "").is_empty());
    assert_eq!(
        w.compute_databases().len(),
        1,
        "its compute still has the data"
    );
    let expires = neon::parse_rfc3339(
        w.neon.sent("POST", "/branches")[0].body.as_ref().unwrap()["branch"]["expires_at"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - 7200).abs() < 300);
    assert_eq!(w.log()["rehearsal"]["copy"]["disposition"], "kept");
    // The safety net: at expires_at Neon deletes it, compute and all.
    w.neon.expire_now(&branch.id);
    assert!(w.rehearsal_branches().is_empty());
    assert!(w.compute_databases().is_empty());
}

#[test]
fn the_pg_dump_path_rehearses_on_a_scratch_database_dropped_afterwards() {
    let w = World::new("[backup]\nprovider = \"pg_dump\"\ntimeout = \"60s\"");
    w.users(4);
    w.db.write(
        "021_require_phone.sql",
        "-- requires a phone\nALTER TABLE users ALTER COLUMN phone SET NOT NULL;\n",
    );
    let before = w.schema();
    let scratch_dbs = || {
        db::query_url(
            &db::admin_url(),
            "SELECT count(*)::text FROM pg_database WHERE datname LIKE 'flightplan\\_rehearse\\_%'",
        )[0][0]
            .clone()
            .unwrap()
    };
    let baseline = scratch_dbs();
    let mut cmd = w.cmd(&["--format", "json"]);
    cmd.env_remove("NEON_API_KEY").env_remove("NEON_PROJECT_ID");
    let failing = Run::from(cmd.output().unwrap());
    failing.expect(1);
    let json = failing.json();
    assert_eq!(json["verdict"], "fail", "{json}");
    assert_eq!(file(&json, "021_require_phone.sql")["error"]["line"], 2);
    let copy = &json["rehearsal"]["copy"];
    assert_eq!(copy["provider"], "pg_dump");
    assert_eq!(copy["disposition"], "deleted");
    assert!(
        copy["name"]
            .as_str()
            .unwrap()
            .starts_with("flightplan_rehearse_")
    );
    assert_eq!(scratch_dbs(), baseline, "the scratch database was dropped");
    assert!(w.neon.requests().is_empty(), "no Neon in this path");

    std::fs::remove_file(w.db.migrations().join("021_require_phone.sql")).unwrap();
    let mut cmd = w.cmd(&["--format", "json"]);
    cmd.env_remove("NEON_API_KEY").env_remove("NEON_PROJECT_ID");
    let passing = Run::from(cmd.output().unwrap());
    passing.expect(0);
    let json = passing.json();
    assert_eq!(json["verdict"], "pass", "{json}");
    assert_eq!(json["rehearsal"]["files"].as_array().unwrap().len(), 2);
    assert_eq!(scratch_dbs(), baseline);
    assert_eq!(w.db.ledger().len(), 21);
    assert_eq!(w.schema(), before);
    assert_no_secrets(&w.everything(&[&failing, &passing]));
}

#[test]
fn a_fork_without_secrets_gets_a_plan_only_comment_instead_of_a_failure() {
    let w = World::neon();
    // No NEON_API_KEY: the ledger is read, nothing is copied.
    let mut cmd = w.cmd(&["--format", "json"]);
    cmd.env_remove("NEON_API_KEY");
    let plan_only = Run::from(cmd.output().unwrap());
    plan_only.expect(0);
    let json = plan_only.json();
    assert_eq!(json["verdict"], "plan_only", "{json}");
    assert_eq!(json["rehearsal"]["files"].as_array().unwrap().len(), 2);
    assert_eq!(
        file(&json, "020_add_current_step.sql")["strongest_lock"],
        "ACCESS EXCLUSIVE on merchant_applications"
    );
    assert!(w.neon.requests().is_empty());
    // squawk still lints the pending files; without a copy, sizes are unconfirmed.
    let check = finding(
        &json,
        "020_add_current_step.sql",
        "constraint-missing-not-valid",
    );
    assert_eq!(check["rows"], "unconfirmed: no copy", "{check}");
    assert!(check.get("suppressed").is_none(), "{check}");
    let c = &w.comments(REHEARSAL_MARKER)[0].body;
    assert!(c.contains("PLAN ONLY"), "{c}");
    assert!(c.contains("**constraint-missing-not-valid**"), "{c}");
    assert!(c.contains("NEON_API_KEY is not available"), "{c}");
    assert!(c.contains("020_add_agent_notes.sql"), "{c}");

    // No DATABASE_URL either: the files the pull request changes, from GitHub.
    w.github.pr_files(
        PR,
        &[
            ("migrations/021_require_phone.sql", "added"),
            ("src/app.ts", "modified"),
        ],
    );
    let mut cmd = w.cmd(&["--format", "json"]);
    cmd.env_remove("NEON_API_KEY").env_remove("DATABASE_URL");
    let unreadable = Run::from(cmd.output().unwrap());
    unreadable.expect(0);
    let json = unreadable.json();
    assert_eq!(json["verdict"], "ledger_unreadable", "{json}");
    assert_eq!(
        json["rehearsal"]["changed_files"],
        serde_json::json!(["migrations/021_require_phone.sql (added)"])
    );
    let comments = w.comments(REHEARSAL_MARKER);
    assert_eq!(comments.len(), 1, "the same comment, updated");
    assert!(
        comments[0].body.contains("NOT REHEARSED"),
        "{}",
        comments[0].body
    );
    assert!(
        comments[0]
            .body
            .contains("`migrations/021_require_phone.sql` (added)")
    );

    // Outside a pull request, a missing DATABASE_URL is a usage error, as everywhere.
    let mut cmd = w.cmd(&[]);
    cmd.env_remove("DATABASE_URL")
        .env_remove("GITHUB_EVENT_NAME")
        .env_remove("GITHUB_EVENT_PATH");
    Run::from(cmd.output().unwrap()).expect(2);
    assert_no_secrets(&w.everything(&[&plan_only, &unreadable]));
}

/// The strongest lock per existing relation each file's transaction holds, straight from
/// `pg_locks` on an independent copy of production (the files run in order, each in its own
/// transaction), named as before the change set and labelled as the report labels kinds.
fn pg_locks_truth(template: &str, files: &[(&str, &str)]) -> Vec<Vec<(String, String)>> {
    let name = format!("{template}_truth");
    db::query_url(
        &db::admin_url(),
        &format!("CREATE DATABASE {name} TEMPLATE {template}"),
    );
    let mut u = url::Url::parse(&db::admin_url()).unwrap();
    u.set_path(&name);
    let url = u.to_string();
    let before: std::collections::HashMap<String, String> = db::query_url(
        &url,
        "SELECT oid::text, CASE relkind WHEN 'i' THEN 'index ' WHEN 'v' THEN 'view ' WHEN 'S' THEN 'sequence ' \
         WHEN 'm' THEN 'materialized view ' ELSE '' END || relname::text FROM pg_class \
         WHERE oid >= 16384 AND relkind <> 't' AND relnamespace <> 'pg_toast'::regnamespace",
    )
    .into_iter()
    .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
    .collect();
    let order = [
        "AccessShareLock",
        "RowShareLock",
        "RowExclusiveLock",
        "ShareUpdateExclusiveLock",
        "ShareLock",
        "ShareRowExclusiveLock",
        "ExclusiveLock",
        "AccessExclusiveLock",
    ];
    let mut out = Vec::new();
    for (_, sql) in files {
        let rows = db::query_url(
            &url,
            &format!(
                "BEGIN;\n{sql}\n;\nSELECT relation::text, mode FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation';\nCOMMIT;"
            ),
        );
        let mut best: std::collections::BTreeMap<String, usize> = Default::default();
        for r in rows {
            let (Some(oid), Some(mode)) = (&r[0], &r[1]) else {
                continue;
            };
            let Some(rel) = before.get(oid) else { continue };
            let m = order.iter().position(|o| o == mode).unwrap();
            let e = best.entry(rel.clone()).or_insert(m);
            *e = (*e).max(m);
        }
        out.push(
            best.into_iter()
                .map(|(rel, m)| {
                    let mode = order[m].trim_end_matches("Lock");
                    // AccessExclusive → ACCESS EXCLUSIVE
                    let mut words = String::new();
                    for (i, ch) in mode.char_indices() {
                        if i > 0 && ch.is_uppercase() {
                            words.push(' ');
                        }
                        words.push(ch.to_ascii_uppercase());
                    }
                    (rel, words)
                })
                .collect(),
        );
    }
    db::query_url(
        &db::admin_url(),
        &format!("DROP DATABASE {name} WITH (FORCE)"),
    );
    out
}

#[test]
fn observed_locks_equal_pg_locks_for_the_cases_derivation_got_wrong() {
    let w = World::neon();
    // Production: every example file applied, plus the objects the cases change.
    w.db.write(
        "021_setup.sql",
        "CREATE INDEX users_phone_idx ON users (phone);\n\
         CREATE VIEW active_users AS SELECT id, email FROM users;\n\
         CREATE FUNCTION fp_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n\
         CREATE TRIGGER fp_touch BEFORE UPDATE ON merchant_applications FOR EACH ROW EXECUTE FUNCTION fp_touch();\n\
         CREATE TYPE fp_a AS ENUM ('x');\nCREATE TYPE fp_b AS ENUM ('y');\n",
    );
    w.db.migrate("apply", &[]).expect(0);
    let cases: Vec<(&str, &str)> = vec![
        (
            "022_reindex_phone.sql",
            "DROP INDEX users_phone_idx;\nCREATE INDEX users_phone_idx ON users (phone, email);",
        ),
        (
            "023_replace_view.sql",
            "CREATE OR REPLACE VIEW active_users AS SELECT id, email, phone FROM users;",
        ),
        (
            "024_drop_fk.sql",
            "ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_user_id_users_id_fk;",
        ),
        ("025_drop_table.sql", "DROP TABLE login_attempts;"),
        ("026_drop_function.sql", "DROP FUNCTION fp_touch() CASCADE;"),
        (
            "027_rename_and_autoname.sql",
            "ALTER TABLE invitation_codes RENAME TO invites;\nALTER TABLE invites ADD COLUMN note text;\nCREATE INDEX ON documents (status);",
        ),
        (
            "028_enums.sql",
            "ALTER TYPE fp_a ADD VALUE 'shared';\nALTER TYPE fp_b ADD VALUE 'shared';",
        ),
    ];
    for (name, sql) in &cases {
        w.db.write(name, sql);
    }
    let run = w.run(&["--format", "json"]);
    run.expect(0);
    let json = run.json();
    assert_eq!(json["verdict"], "pass", "{json}");
    let truth = pg_locks_truth(&w.db.name, &cases);

    for ((name, _), want) in cases.iter().zip(&truth) {
        let f = file(&json, name);
        assert_eq!(f["lock_source"], "observed", "{f}");
        let got: Vec<(String, String)> = {
            let mut v: Vec<(String, String)> = f["locks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["created"] != true)
                .map(|l| {
                    (
                        l["relation"].as_str().unwrap().to_string(),
                        l["mode"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(&got, want, "{name}: the report against pg_locks");
    }
    let strongest = |name: &str| {
        file(&json, name)["strongest_lock"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let locks_of = |name: &str| -> Vec<(String, String)> {
        truth[cases.iter().position(|(n, _)| *n == name).unwrap()].clone()
    };
    let has = |name: &str, rel: &str, mode: &str| {
        locks_of(name).contains(&(rel.to_string(), mode.to_string()))
    };
    // The wrong cases of issue 17, as PostgreSQL really locks them.
    assert!(strongest("022_reindex_phone.sql").starts_with("ACCESS EXCLUSIVE on "));
    assert!(has("022_reindex_phone.sql", "users", "ACCESS EXCLUSIVE"));
    assert!(has(
        "023_replace_view.sql",
        "view active_users",
        "ACCESS EXCLUSIVE"
    ));
    assert!(
        has("024_drop_fk.sql", "users", "ACCESS EXCLUSIVE"),
        "{:?}",
        locks_of("024_drop_fk.sql")
    );
    assert!(
        has("025_drop_table.sql", "users", "ACCESS EXCLUSIVE"),
        "{:?}",
        locks_of("025_drop_table.sql")
    );
    assert!(
        has(
            "026_drop_function.sql",
            "merchant_applications",
            "ACCESS EXCLUSIVE"
        ),
        "{:?}",
        locks_of("026_drop_function.sql")
    );
    // Renamed and auto-named objects under their real names.
    let renamed = file(&json, "027_rename_and_autoname.sql");
    let locks = renamed["locks"].as_array().unwrap();
    assert!(
        locks.iter().any(|l| l["relation"] == "invitation_codes"
            && l["renamed_to"] == "invites"
            && l["mode"] == "ACCESS EXCLUSIVE"),
        "{renamed}"
    );
    assert!(
        locks
            .iter()
            .any(|l| l["relation"] == "index documents_status_idx" && l["created"] == true),
        "{renamed}"
    );
    assert!(
        !locks.iter().any(|l| l["relation"] == "invites"),
        "{renamed}"
    );
    // The same value added to two enums is not a use of either.
    assert_eq!(
        file(&json, "028_enums.sql")["warnings"],
        serde_json::json!([])
    );
    // Drops and renames are flagged as breaking the running version.
    let kinds: Vec<&str> = json["rehearsal"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["compat"].as_array().cloned().unwrap_or_default())
        .map(|c| match c["kind"].as_str().unwrap() {
            "drop_table" => "drop_table",
            "drop_function" => "drop_function",
            "rename_table" => "rename_table",
            _ => "other",
        })
        .collect();
    for k in ["drop_table", "drop_function", "rename_table"] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    let c = &w.comments(REHEARSAL_MARKER)[0].body;
    assert!(c.contains("Backward compatibility"), "{c}");
    assert!(c.contains("can break the version still serving"), "{c}");
    assert!(c.contains("invitation_codes (renamed to invites)"), "{c}");
    assert!(c.contains("created in this change set"), "{c}");
}

fn lint_of(json: &Value, name: &str) -> Vec<Value> {
    file(json, name)["lint"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn finding(json: &Value, name: &str, rule: &str) -> Value {
    lint_of(json, name)
        .into_iter()
        .find(|l| l["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} finding on {name}: {}", file(json, name)))
}

#[test]
fn squawk_findings_are_in_the_report_judged_by_the_copys_rows_and_the_change_set() {
    let w = World::neon();
    // users: 5 rows on the copy, over `large_table_rows = 3`; merchant_applications: none.
    w.users(5);
    w.db.write(
        "021_index_users_phone.sql",
        "-- 021_index_users_phone.sql\nCREATE INDEX users_phone_idx ON users (phone);\nCREATE INDEX agent_notes_note_idx ON agent_notes (note);\n",
    );
    let run = w.run(&["--format", "json"]);
    run.expect(0);
    let json = run.json();
    assert_eq!(json["rehearsal"]["squawk"], "2.68.0", "{json}");

    // Size-dependent, on a table the copy says is large: reported, with the copy's count.
    let index = finding(
        &json,
        "021_index_users_phone.sql",
        "require-concurrent-index-creation",
    );
    assert_eq!(index["line"], 2, "{index}");
    assert_eq!(index["table"], "users");
    assert_eq!(index["rows"], "5 on the copy (users)");
    assert!(index.get("suppressed").is_none(), "{index}");
    assert_eq!(
        index["help"],
        "Use `concurrently` to avoid blocking writes."
    );
    // The same kind of rule on an empty table: suppressed, and the reason says why.
    let check = finding(
        &json,
        "020_add_current_step.sql",
        "constraint-missing-not-valid",
    );
    assert_eq!(check["rows"], "0 on the copy (merchant_applications)");
    assert_eq!(
        check["suppressed"],
        "merchant_applications has 0 rows on the copy, under [rehearse] large_table_rows = 3"
    );
    // An index on a table an earlier pending file creates: nobody uses it yet (within one
    // file squawk itself skips such tables).
    let new = lint_of(&json, "021_index_users_phone.sql")
        .into_iter()
        .find(|l| l["rule"] == "require-concurrent-index-creation" && l["line"] == 3)
        .expect("the index on agent_notes is linted");
    assert_eq!(
        new["suppressed"],
        "agent_notes created in this change set: no running code uses it yet"
    );
    // flightplan sets both timeouts on every file.
    let timeout = finding(&json, "021_index_users_phone.sql", "require-lock-timeout");
    assert!(
        timeout["suppressed"]
            .as_str()
            .unwrap()
            .contains("SET LOCAL"),
        "{timeout}"
    );

    // The comment and the summary show the reported finding with its help and rows, the
    // suppressed ones folded with their reasons; annotations point at the file and line.
    let c = &w.comments(REHEARSAL_MARKER)[0].body;
    for want in [
        "### Lint: squawk 2.68.0",
        "- `021_index_users_phone.sql:2` **require-concurrent-index-creation**",
        "  - rows: 5 on the copy (users)",
        "Suppressed by flightplan's context",
        "`020_add_current_step.sql:",
        "merchant_applications has 0 rows on the copy",
    ] {
        assert!(c.contains(want), "`{want}` in the comment:\n{c}");
    }
    assert!(
        w.read("summary.md")
            .contains("**require-concurrent-index-creation**")
    );
    assert!(
        run.stderr.lines().any(|l| l.starts_with("::warning file=")
            && l.contains("021_index_users_phone.sql,line=2")
            && l.contains("squawk require-concurrent-index-creation")),
        "{}",
        run.stderr
    );
    assert_eq!(w.log()["rehearsal"]["squawk"], "2.68.0");
}

#[test]
fn rehearse_lint_selection_is_honoured_and_an_unknown_rule_stops_before_any_copy() {
    let w = World::neon();
    w.users(5);
    w.db.write(
        "021_index_users_phone.sql",
        "-- 021_index_users_phone.sql\nCREATE INDEX users_phone_idx ON users (phone);\n",
    );
    let config = w.read("flightplan.toml");
    let with = |lint: &str| {
        std::fs::write(
            w.path("flightplan.toml"),
            config.replace(
                "[rehearse]\nlarge_table_rows = 3\n",
                &format!("[rehearse]\nlarge_table_rows = 3\nlint = {lint}\n"),
            ),
        )
        .unwrap();
    };
    with(r#"{ exclude = ["require-concurrent-index-creation"] }"#);
    let run = w.run(&["--format", "json"]);
    run.expect(0);
    let json = run.json();
    assert!(
        json["rehearsal"]["files"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|f| f["lint"].as_array().cloned().unwrap_or_default())
            .all(|l| l["rule"] != "require-concurrent-index-creation"),
        "{json}"
    );
    assert!(!lint_of(&json, "020_add_current_step.sql").is_empty());
    let branches = w.neon.sent("POST", "/branches").len();
    assert_eq!(branches, 1);

    with(r#"{ include = ["require-concurent-index-creation"] }"#);
    let bad = w.run(&[]);
    bad.expect(2);
    assert!(
        bad.stderr.contains(
            "[rehearse] lint.include: `require-concurent-index-creation` is not a squawk 2.68.0 rule id"
        ),
        "{}",
        bad.stderr
    );
    assert!(bad.stderr.contains("flightplan.toml"), "{}", bad.stderr);
    assert_eq!(
        w.neon.sent("POST", "/branches").len(),
        branches,
        "no copy is made for a config that cannot be used"
    );
}
