//! `flightplan backup` through the built binary: against a stateful fake of the Neon API
//! v2 on 127.0.0.1, and with pg_dump on the real PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::db::{Run, TestDb};
use crate::support::neon::{FakeNeon, Fault, KEY, MAIN_ID, PROJECT};
use serde_json::{Value, json};

const SHA: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5";

/// A scratch directory with a flightplan.toml whose `[backup]` section is `backup`.
fn workdir(backup: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flightplan.toml"),
        format!("[backup]\n{backup}"),
    )
    .unwrap();
    dir
}

/// The binary with the fake's URL, key and project, and nothing of the caller's environment
/// that would change the outcome.
fn neon_cmd(fake: &FakeNeon, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
    c.args(args)
        .arg("--config")
        .arg(dir.join("flightplan.toml"))
        .env("NEON_API_URL", &fake.url)
        .env("NEON_API_KEY", KEY)
        .env("NEON_PROJECT_ID", PROJECT)
        .env("GITHUB_SHA", SHA)
        .env_remove("DATABASE_URL")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("FLIGHTPLAN_CONFIG")
        .env_remove("FLIGHTPLAN_LOG")
        .current_dir(dir)
        .stdin(Stdio::null());
    c
}

/// Runs the command and checks the API key appears nowhere in what it printed.
fn run(mut c: Command) -> Run {
    let r = Run::from(c.output().unwrap());
    assert_no_key(&r);
    r
}

#[track_caller]
fn assert_no_key(r: &Run) {
    assert!(!r.stdout.contains(KEY), "API key on stdout:\n{}", r.stdout);
    for line in r.stderr.lines() {
        // `::add-mask::` is how a secret is hidden in Actions: the runner consumes the line.
        assert!(
            !line.contains(KEY) || line == format!("::add-mask::{KEY}"),
            "API key on stderr:\n{}",
            r.stderr
        );
    }
}

fn neon(fake: &FakeNeon, dir: &Path, args: &[&str]) -> Run {
    run(neon_cmd(fake, dir, args))
}

fn flightplan_branches(fake: &FakeNeon) -> Vec<String> {
    fake.names()
        .into_iter()
        .filter(|n| n.starts_with("flightplan/backup/"))
        .collect()
}

#[test]
fn neon_create_branches_the_default_branch_without_compute_and_waits_for_its_operations() {
    let fake = FakeNeon::start();
    fake.with(|st| st.op_duration = Duration::from_millis(900));
    let dir = workdir("provider = \"neon\"\n");

    let r = neon(&fake, dir.path(), &["backup", "create", "--format", "json"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["provider"], "neon");
    let id = j["id"].as_str().unwrap();
    let name = j["name"].as_str().unwrap();
    assert!(id.starts_with("br-"), "{id}");
    let stamp = name
        .strip_prefix("flightplan/backup/")
        .and_then(|s| s.strip_suffix("-1a2b3c4"))
        .unwrap_or_else(|| panic!("unexpected name {name}"));
    assert!(
        stamp.len() == 16
            && stamp.as_bytes()[8] == b'T'
            && stamp.ends_with('Z')
            && stamp[..8].chars().all(|c| c.is_ascii_digit()),
        "{stamp}"
    );
    assert_eq!(j["parent"], MAIN_ID);
    assert!(j["parent_lsn"].as_str().unwrap().starts_with("0/"));
    assert!(j["created_at"].is_string());

    // What was sent: one POST with the parent and the name, and no compute endpoint.
    let posts = fake.sent("POST", &format!("/projects/{PROJECT}/branches"));
    assert_eq!(posts.len(), 1);
    assert_eq!(
        posts[0].body,
        Some(json!({ "branch": { "parent_id": MAIN_ID, "name": name } }))
    );
    // The operation was polled until it finished, and the branch is ready with main's data.
    let polls = fake
        .sent("GET", "")
        .into_iter()
        .filter(|r| r.path.contains("/operations/"))
        .count();
    assert!(polls >= 1, "operations were not polled");
    assert!(fake.with(|st| st.operations.iter().all(|o| o.status() == "finished")));
    assert_eq!(fake.branch(id).unwrap().data, "v1");
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {KEY}")))
    );
    // Every request carries a request id of ours.
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.request_id.as_ref().is_some_and(|i| i.len() == 36))
    );

    // Text mode says what to do next.
    let r = neon(&fake, dir.path(), &["backup", "create"]);
    r.expect(0);
    assert!(
        r.stdout
            .contains("Backup created: Neon branch flightplan/backup/"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("flightplan backup restore br-"),
        "{}",
        r.stdout
    );
    // Two backups in one second still get distinct names.
    assert_eq!(flightplan_branches(&fake).len(), 2);
}

#[test]
fn neon_create_from_a_configured_branch_by_name() {
    let fake = FakeNeon::start();
    let preview = fake.branch("preview/pr-12").unwrap().id;
    let dir = workdir("provider = \"neon\"\nbranch = \"preview/pr-12\"\n");
    let j = neon(&fake, dir.path(), &["backup", "create", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(j["parent"], preview.as_str());

    let j = neon(
        &fake,
        dir.path(),
        &["backup", "create", "--branch", "nope", "--format", "json"],
    )
    .expect(1)
    .json();
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no branch named `nope`")
    );
    assert!(j["error"]["hint"].as_str().unwrap().contains("main"));
}

#[test]
fn neon_retries_423_429_and_503_and_honours_retry_after() {
    let fake = FakeNeon::start();
    let branches = format!("/projects/{PROJECT}/branches");
    fake.inject(Fault::new("GET", &branches, 503, 1));
    fake.inject(Fault::new("POST", &branches, 429, 1).retry_after("1"));
    // A compute start in progress: Neon answers mutations with 423 until it finishes.
    fake.busy_for(Duration::from_secs(4));
    let dir = workdir("provider = \"neon\"\n");

    let started = Instant::now();
    let r = neon(&fake, dir.path(), &["backup", "create", "--format", "json"]);
    r.expect(0);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        r.stderr
            .contains("HTTP 429 (rate limited); retrying in 1.0s"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("HTTP 423 (another operation is in progress)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("HTTP 503"), "{}", r.stderr);

    let gets = fake.sent("GET", &branches);
    assert!(gets.len() >= 2, "the 503 was retried");
    let posts = fake.sent("POST", &branches);
    assert!(
        posts.len() >= 3,
        "429, then 423 at least once, then 201: {}",
        posts.len()
    );
    // Retry-After: 1 was honoured: the second POST came at least a second after the first.
    assert!(posts[1].at.duration_since(posts[0].at) >= Duration::from_secs(1));
    // Retrying a 423/429 is safe: exactly one branch came of it.
    assert_eq!(
        flightplan_branches(&fake),
        vec![r.json()["name"].as_str().unwrap().to_string()]
    );
}

#[test]
fn neon_post_timeout_is_looked_up_by_name_not_sent_again() {
    let fake = FakeNeon::start();
    // The first create is applied, but its answer comes after the client gave up.
    fake.with(|st| st.slow_create = Some((Duration::from_secs(3), 1)));
    let dir = workdir("provider = \"neon\"\nrequest_timeout = \"1s\"\n");

    let r = neon(&fake, dir.path(), &["backup", "create", "--format", "json"]);
    r.expect(0);
    let j = r.json();
    let name = j["name"].as_str().unwrap();
    assert!(
        r.stderr.contains("looking the branch up by name"),
        "{}",
        r.stderr
    );

    let posts = fake.sent("POST", &format!("/projects/{PROJECT}/branches"));
    assert_eq!(
        posts.len(),
        1,
        "a POST whose answer was lost must not be sent again blindly"
    );
    let lookups: Vec<_> = fake
        .sent("GET", &format!("/projects/{PROJECT}/branches"))
        .into_iter()
        .filter(|r| r.query.contains("search="))
        .collect();
    assert!(!lookups.is_empty(), "no lookup by name");
    assert_eq!(flightplan_branches(&fake), vec![name.to_string()]);
    assert_eq!(j["id"], fake.branch(name).unwrap().id.as_str());
}

/// Five of flightplan's backups (the first the oldest) among branches that are not.
fn seed_backups(fake: &FakeNeon) -> Vec<String> {
    fake.seed("flightplan-notes", Some(MAIN_ID), "x");
    let ids: Vec<String> = (1..=5)
        .map(|i| {
            fake.seed(
                &format!("flightplan/backup/2026011{i}T100000Z-aaaaaa{i}"),
                Some(MAIN_ID),
                "v1",
            )
        })
        .collect();
    fake.seed("flightplan/backup", Some(MAIN_ID), "x");
    fake.seed(
        "flightplan/pre-restore/20260101T000000Z",
        Some(MAIN_ID),
        "x",
    );
    ids
}

#[test]
fn neon_list_shows_only_flightplans_backups_newest_first() {
    let fake = FakeNeon::start();
    let ids = seed_backups(&fake);
    let dir = workdir("provider = \"neon\"\n");

    let j = neon(&fake, dir.path(), &["backup", "list", "--format", "json"])
        .expect(0)
        .json();
    let listed: Vec<&str> = j["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    for b in j["backups"].as_array().unwrap() {
        assert_eq!(b["provider"], "neon");
        assert!(
            b["name"]
                .as_str()
                .unwrap()
                .starts_with("flightplan/backup/")
        );
        assert_eq!(b["parent"], MAIN_ID);
    }
    // Ten branches at three per page: the cursor was followed.
    assert!(
        fake.sent("GET", "/branches")
            .iter()
            .any(|r| r.query.contains("cursor=")),
        "pagination was not followed"
    );

    let r = neon(&fake, dir.path(), &["backup", "list"]);
    let text = &r.expect(0).stdout;
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        !text.contains("pre-restore") && !text.contains("notes"),
        "{text}"
    );
}

#[test]
fn neon_prune_deletes_only_flightplans_oldest_backups() {
    let fake = FakeNeon::start();
    let ids = seed_backups(&fake);
    // Someone branched off the second oldest backup: Neon refuses to delete it.
    fake.seed("dev/alice", Some(&ids[1]), "v1");
    let before = fake.names();
    let dir = workdir("provider = \"neon\"\nkeep = 4\n");

    let r = neon(
        &fake,
        dir.path(),
        &["backup", "prune", "--keep", "2", "--format", "json"],
    );
    r.expect(0);
    let j = r.json();
    assert_eq!(j["keep"], 2);
    let deleted: Vec<&str> = j["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec![ids[2].as_str(), ids[0].as_str()]);
    assert_eq!(j["skipped"][0]["id"], ids[1].as_str());
    assert!(r.stderr.contains("child branches"), "{}", r.stderr);

    let deletes = fake.sent("DELETE", "");
    assert_eq!(deletes.len(), 2);
    let after = fake.names();
    for n in &before {
        let gone = !after.contains(n);
        let was_deleted = n.ends_with("Z-aaaaaa1") || n.ends_with("Z-aaaaaa3");
        assert_eq!(gone, was_deleted, "{n}");
    }

    // Without --keep, [backup] keep applies; nothing more to delete at keep = 4.
    let j = neon(&fake, dir.path(), &["backup", "prune", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(j["keep"], 4);
    assert_eq!(j["deleted"].as_array().unwrap().len(), 0);
}

#[test]
fn neon_restore_needs_yes_then_restores_with_preserve_under_name() {
    let fake = FakeNeon::start();
    let dir = workdir("provider = \"neon\"\n");
    let backup = neon(&fake, dir.path(), &["backup", "create", "--format", "json"])
        .expect(0)
        .json();
    let id = backup["id"].as_str().unwrap();
    // Production moves on after the backup (a migration, new rows).
    fake.with(|st| st.branches.iter_mut().find(|b| b.default).unwrap().data = "v2-migrated".into());

    let sent = fake.requests().len();
    let r = neon(
        &fake,
        dir.path(),
        &["backup", "restore", id, "--format", "json"],
    );
    r.expect(2);
    let e = &r.json()["error"];
    assert!(e["message"].as_str().unwrap().contains("discarded"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("--yes"), "{e}");
    assert_eq!(
        fake.requests().len(),
        sent,
        "nothing is contacted without --yes"
    );

    let r = neon(
        &fake,
        dir.path(),
        &["backup", "restore", id, "--yes", "--format", "json"],
    );
    r.expect(0);
    let j = r.json();
    let restores = fake.sent("POST", &format!("/branches/{MAIN_ID}/restore"));
    assert_eq!(restores.len(), 1);
    let body = restores[0].body.clone().unwrap();
    assert_eq!(body["source_branch_id"], id);
    let preserved = body["preserve_under_name"].as_str().unwrap();
    assert!(
        preserved.starts_with("flightplan/pre-restore/"),
        "{preserved}"
    );
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");

    // Production has the backup's data again; what it had is kept under the name.
    assert_eq!(fake.branch("main").unwrap().data, "v1");
    assert_eq!(fake.branch(preserved).unwrap().data, "v2-migrated");
    assert_eq!(j["preserved"]["name"], preserved);
    assert_eq!(
        j["preserved"]["id"],
        fake.branch(preserved).unwrap().id.as_str()
    );
    assert_eq!(j["backup"]["id"], id);
    assert!(j["restored"].as_str().unwrap().contains(MAIN_ID));

    // The preserved state is not a backup: list and prune leave it alone.
    let j = neon(&fake, dir.path(), &["backup", "list", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(j["backups"].as_array().unwrap().len(), 1);
    neon(&fake, dir.path(), &["backup", "prune", "--keep", "0"]).expect(0);
    assert!(fake.branch(preserved).is_some());
    assert!(fake.branch(id).is_none());
}

#[test]
fn neon_errors_show_code_message_and_request_id() {
    let fake = FakeNeon::start();
    let branches = format!("/projects/{PROJECT}/branches");
    fake.inject(Fault::new("POST", &branches, 500, 5));
    let dir = workdir("provider = \"neon\"\n");

    let r = neon(&fake, dir.path(), &["backup", "create", "--format", "json"]);
    r.expect(1);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "INTERNAL_ERROR");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 500: internal server error"),
        "{e}"
    );
    let posts = fake.sent("POST", &branches);
    assert_eq!(posts.len(), 1, "a 500 on a POST is not retried");
    assert_eq!(e["request_id"].as_str(), posts[0].request_id.as_deref());
    // Text mode prints them too, on stderr.
    let r = neon(&fake, dir.path(), &["backup", "create"]);
    r.expect(1);
    assert!(r.stderr.contains("code: INTERNAL_ERROR"), "{}", r.stderr);
    assert!(r.stderr.contains("request id: "), "{}", r.stderr);

    // A rejected key: 401 with what to check, and neither key printed.
    let wrong = "napi_wrong_key_0123456789abcdef0123456789";
    let mut c = neon_cmd(&fake, dir.path(), &["backup", "list", "--format", "json"]);
    c.env("NEON_API_KEY", wrong);
    let r = run(c);
    r.expect(1);
    assert!(!r.stdout.contains(wrong) && !r.stderr.contains(wrong));
    let e = &r.json()["error"];
    assert!(e["message"].as_str().unwrap().contains("HTTP 401"), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("NEON_API_KEY"), "{e}");
}

#[test]
fn neon_key_is_masked_first_in_github_actions() {
    let fake = FakeNeon::start();
    let dir = workdir("provider = \"neon\"\n");
    let mut c = neon_cmd(&fake, dir.path(), &["backup", "create"]);
    c.env("GITHUB_ACTIONS", "true");
    let r = run(c);
    r.expect(0);
    assert_eq!(
        r.stderr.lines().next(),
        Some(format!("::add-mask::{KEY}").as_str())
    );
}

#[test]
fn neon_configuration_errors_are_exit_2_before_anything_is_contacted() {
    let fake = FakeNeon::start();

    let dir = workdir("provider = \"neon\"\nretention = 3\n");
    let j = neon(&fake, dir.path(), &["backup", "create", "--format", "json"])
        .expect(2)
        .json();
    assert_eq!(j["error"]["line"], 3);
    assert!(
        j["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("flightplan.toml")
    );
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retention")
    );

    let dir = workdir("provider = \"s3\"\n");
    let j = neon(&fake, dir.path(), &["backup", "list", "--format", "json"])
        .expect(2)
        .json();
    assert_eq!(j["error"]["line"], 2);

    let dir = workdir("provider = \"neon\"\ntimeout = \"soon\"\n");
    neon(&fake, dir.path(), &["backup", "create"]).expect(2);

    let dir = workdir("provider = \"neon\"\n");
    let mut c = neon_cmd(&fake, dir.path(), &["backup", "create", "--format", "json"]);
    c.env_remove("NEON_PROJECT_ID");
    let j = run(c).expect(2).json();
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NEON_PROJECT_ID")
    );

    let mut c = neon_cmd(&fake, dir.path(), &["backup", "create"]);
    c.env("NEON_API_URL", "http://console.neon.tech/api/v2");
    run(c).expect(2);

    assert_eq!(fake.requests().len(), 0);
}

#[test]
fn neon_503_until_the_deadline_fails_and_stops_the_chain_before_migrating() {
    let fake = FakeNeon::start();
    fake.inject(Fault::new(
        "GET",
        &format!("/projects/{PROJECT}/branches"),
        503,
        u32::MAX,
    ));
    let db = TestDb::new();
    db.write(
        "001_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\n",
    );
    std::fs::write(
        db.dir.path().join("flightplan.toml"),
        "[backup]\nprovider = \"neon\"\ntimeout = \"3s\"\n",
    )
    .unwrap();

    // What `run` does, as a shell pipeline would: migrate only after a backup succeeded.
    let started = Instant::now();
    let r = sh(
        &db,
        r#""$FP" --config flightplan.toml backup create && "$FP" migrate apply --dir migrations"#,
        &[
            ("NEON_API_URL", fake.url.as_str()),
            ("NEON_API_KEY", KEY),
            ("NEON_PROJECT_ID", PROJECT),
        ],
    );
    assert_no_key(&r);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(r.stderr.contains("HTTP 503"), "{}", r.stderr);
    assert!(r.stderr.contains("within [backup] timeout"), "{}", r.stderr);
    assert!(!db.table_exists("users"), "migrated without a backup");
    assert!(!db.table_exists("_migrations"));
    assert!(fake.sent("POST", "").is_empty());
}

// ---------------------------------------------------------------------------------------
// pg_dump on the real PostgreSQL

/// A flightplan.toml for pg_dump backups into `<test dir>/backups`.
fn pg_config(db: &TestDb, extra: &str) -> PathBuf {
    let p = db.dir.path().join("flightplan.toml");
    std::fs::write(
        &p,
        format!("[migrate]\ndir = \"migrations\"\n[backup]\nprovider = \"pg_dump\"\n{extra}"),
    )
    .unwrap();
    p
}

fn pg(db: &TestDb, args: &[&str]) -> Run {
    let mut c = db.cmd(args);
    c.env("GITHUB_SHA", SHA).env_remove("NEON_PROJECT_ID");
    Run::from(c.output().unwrap())
}

/// `sh -c SCRIPT` in the test's directory with `$FP` the binary.
fn sh(db: &TestDb, script: &str, env: &[(&str, &str)]) -> Run {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env_remove("FLIGHTPLAN_CONFIG")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("NEON_PROJECT_ID")
        .env("FP", env!("CARGO_BIN_EXE_flightplan"))
        .env("DATABASE_URL", &db.url)
        .env("GITHUB_SHA", SHA)
        .envs(env.iter().copied())
        .current_dir(db.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run::from(out)
}

const SCHEMA_SQL: &str = "
SELECT table_schema || '.' || table_name || '.' || column_name || ':' || data_type
  FROM information_schema.columns
 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 1";

#[test]
fn pg_dump_round_trip_restores_rows_and_schema_and_drops_what_the_migration_created() {
    let db = TestDb::new();
    pg_config(&db, "");
    db.write(
        "001_init.sql",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;
         CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, nickname text);
         CREATE SCHEMA reporting;
         CREATE VIEW reporting.user_count AS SELECT count(*) AS n FROM public.users;
         CREATE FUNCTION email_hash(e text) RETURNS text LANGUAGE sql AS $$ SELECT encode(digest(e, 'sha256'), 'hex') $$;\n",
    );
    sh(&db, r#""$FP" migrate apply"#, &[]).expect(0);
    db.query("INSERT INTO users (email, nickname) VALUES ('a@example.org', 'Al'), ('b@example.org', NULL)");
    let rows_sql =
        "SELECT id || ' ' || email || ' ' || coalesce(nickname, '-') FROM users ORDER BY id";
    let rows = db.query(rows_sql);
    let schema = db.query(SCHEMA_SQL);
    let ledger = db.ledger();

    // A destructive migration, applied right after a backup, as `run` will do it.
    db.write(
        "002_destructive.sql",
        "ALTER TABLE users DROP COLUMN nickname;
         DELETE FROM users WHERE email = 'b@example.org';
         INSERT INTO users (email) VALUES ('c@example.org');
         CREATE TABLE audit_log (id bigserial PRIMARY KEY, what text);
         CREATE SCHEMA extra;
         CREATE TABLE extra.t (x int);
         DROP VIEW reporting.user_count;\n",
    );
    let r = sh(
        &db,
        r#""$FP" backup create --format json && "$FP" migrate apply --format json"#,
        &[],
    );
    r.expect(0);
    let mut docs = serde_json::Deserializer::from_str(&r.stdout).into_iter::<Value>();
    let backup = docs.next().unwrap().unwrap();
    let applied = docs.next().unwrap().unwrap();
    assert_eq!(backup["provider"], "pg_dump");
    assert_eq!(applied["applied"][0]["filename"], "002_destructive.sql");
    let id = backup["id"].as_str().unwrap();
    assert!(
        id.starts_with("flightplan-backup-") && id.ends_with("-1a2b3c4.dump"),
        "{id}"
    );
    let path = PathBuf::from(backup["path"].as_str().unwrap());
    assert_eq!(path, db.dir.path().join("backups").join(id));
    assert!(backup["size"].as_u64().unwrap() > 0);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        backup["size"].as_u64().unwrap()
    );
    assert!(db.table_exists("audit_log"));
    assert_ne!(db.query(SCHEMA_SQL), schema);

    // Without --yes nothing happens.
    pg(&db, &["backup", "restore", id]).expect(2);
    assert!(db.table_exists("audit_log"));

    let r = pg(&db, &["backup", "restore", id, "--yes", "--format", "json"]);
    r.expect(0);
    assert_eq!(r.json()["backup"]["id"], id);
    assert_eq!(db.query(rows_sql), rows, "rows are back");
    assert_eq!(db.query(SCHEMA_SQL), schema, "columns are back");
    assert!(
        !db.table_exists("audit_log"),
        "a table the migration created survived"
    );
    assert!(!db.table_exists("extra.t"));
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM pg_namespace WHERE nspname = 'extra'"),
        Some("0".into())
    );
    assert_eq!(
        db.ledger(),
        ledger,
        "the ledger is back to before the migration"
    );
    assert_eq!(
        db.scalar("SELECT n::text FROM reporting.user_count"),
        Some("2".into())
    );
    assert_eq!(
        db.scalar("SELECT length(email_hash('x'))::text"),
        Some("64".into()),
        "the extension and the function are back"
    );
    // Sequences too: the next id follows the restored rows.
    assert_eq!(
        db.scalar("INSERT INTO users (email) VALUES ('d@example.org') RETURNING id::text"),
        Some("3".into())
    );
    // The public schema keeps its owner and privileges.
    assert_eq!(
        db.scalar("SELECT nspowner::regrole::text || ' ' || array_to_string(nspacl, ',') FROM pg_namespace WHERE nspname = 'public'"),
        Some("pg_database_owner pg_database_owner=UC/pg_database_owner,=U/pg_database_owner".into())
    );
    // And migrating again works from there.
    sh(&db, r#""$FP" migrate apply"#, &[]).expect(0);
    assert!(db.table_exists("audit_log"));
}

#[test]
fn pg_dump_archives_are_0600_in_a_0700_directory_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new();
    pg_config(&db, "dir = \"state/backups\"\n");
    db.write("001_init.sql", "CREATE TABLE t (x int);\n");
    // A permissive umask, as on many runners: nothing written may be readable by others.
    let r = sh(
        &db,
        r#"umask 000 && "$FP" backup create --format json"#,
        &[],
    );
    r.expect(0);
    let backup = r.json();
    let path = PathBuf::from(backup["path"].as_str().unwrap());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "{}", path.display());
    let dir = db.dir.path().join("state/backups");
    assert_eq!(path.parent().unwrap(), dir);
    assert_eq!(mode(&dir), 0o700, "the directory flightplan created");
    // Nothing but the finished archive is left in it.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [backup["id"].as_str().unwrap()]);

    // An existing, shared directory is kept as it is, named in a warning; the archive is
    // still private.
    let shared = db.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = sh(
        &db,
        r#"umask 000 && "$FP" backup create --dir shared --format json"#,
        &[],
    );
    r.expect(0);
    let path = PathBuf::from(r.json()["path"].as_str().unwrap());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&shared), 0o755);
    assert!(r.stderr.contains("readable by other users"), "{}", r.stderr);
}

#[test]
fn pg_dump_restore_failure_leaves_the_database_unchanged() {
    let db = TestDb::new();
    pg_config(&db, "");
    db.query("CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)");
    let id = pg(&db, &["backup", "create", "--format", "json"])
        .expect(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    db.query("CREATE TABLE later (id int)");
    // A role that exists now but not in the archive's world does not matter; a damaged
    // archive does: it is read in full before anything is dropped.
    let path = db.dir.path().join("backups").join(&id);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let r = pg(
        &db,
        &["backup", "restore", &id, "--yes", "--format", "json"],
    );
    r.expect(1);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reading"),
        "{}",
        r.stdout
    );
    assert!(db.table_exists("later") && db.table_exists("kept"));

    let r = pg(&db, &["backup", "restore", "no-such.dump", "--yes"]);
    r.expect(2);
}

#[test]
fn pg_dump_restore_that_fails_midway_is_rolled_back_whole() {
    let db = TestDb::new();
    pg_config(&db, "");
    // The archive gives a table to a role that is gone by restore time: the script fails
    // after the prelude dropped every schema, so only a rollback can save the database.
    let role = format!("fp_gone_{}", db.name);
    db.query(&format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role};
         CREATE TABLE owned (id int); ALTER TABLE owned OWNER TO {role};"
    ));
    let id = pg(&db, &["backup", "create", "--format", "json"])
        .expect(0)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    db.query(&format!(
        "DROP TABLE owned; DROP ROLE {role};
         CREATE TABLE later (id int); INSERT INTO later VALUES (7);"
    ));
    let r = pg(
        &db,
        &["backup", "restore", &id, "--yes", "--format", "json"],
    );
    r.expect(1);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("rolled back") && msg.contains(&role), "{msg}");
    assert_eq!(db.scalar("SELECT id::text FROM later"), Some("7".into()));
    assert!(!db.table_exists("owned"));
}

#[test]
fn pg_dump_failed_backup_exits_1_and_stops_the_chain_before_migrating() {
    let db = TestDb::new();
    // The backup directory cannot be created (a file is in the way); the database is fine.
    std::fs::write(db.dir.path().join("blocked"), "not a directory").unwrap();
    pg_config(&db, "dir = \"blocked/backups\"\n");
    db.write(
        "001_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY);\n",
    );
    let r = sh(&db, r#""$FP" backup create && "$FP" migrate apply"#, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot create the backup directory"),
        "{}",
        r.stderr
    );
    assert!(!db.table_exists("users"), "migrated without a backup");

    // An unreachable server: exit 1, with the password kept out of the message.
    let r = Run::from(
        db.cmd(&[
            "backup",
            "create",
            "--provider",
            "pg_dump",
            "--format",
            "json",
        ])
        .env(
            "DATABASE_URL",
            "postgres://app:pw-canary-123@127.0.0.1:1/app?sslmode=disable",
        )
        .output()
        .unwrap(),
    );
    r.expect(1);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not connect")
    );
    assert!(!r.stdout.contains("pw-canary") && !r.stderr.contains("pw-canary"));
}

#[test]
fn pg_dump_list_and_prune_touch_only_flightplans_archives() {
    let db = TestDb::new();
    pg_config(&db, "keep = 2\n");
    db.query("CREATE TABLE t (id int)");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let j = pg(&db, &["backup", "create", "--format", "json"])
            .expect(0)
            .json();
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    let dir = db.dir.path().join("backups");
    std::fs::write(dir.join("notes.dump"), "mine").unwrap();
    std::fs::write(dir.join("flightplan-backup-x.dump.partial"), "half").unwrap();

    let j = pg(&db, &["backup", "list", "--format", "json"])
        .expect(0)
        .json();
    let listed: Vec<&str> = j["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);

    let j = pg(&db, &["backup", "prune", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(j["keep"], 2);
    assert_eq!(j["deleted"][0]["id"], ids[0].as_str());
    assert!(!dir.join(&ids[0]).exists());
    assert!(dir.join(&ids[1]).exists() && dir.join(&ids[2]).exists());
    assert!(dir.join("notes.dump").exists());
    assert!(dir.join("flightplan-backup-x.dump.partial").exists());
}

#[test]
fn provider_none_takes_no_backup_and_cannot_restore() {
    let dir = workdir("provider = \"none\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_flightplan"))
        .args(["backup", "create", "--format", "json", "--config"])
        .arg(dir.path().join("flightplan.toml"))
        .env_remove("FLIGHTPLAN_CONFIG")
        .output()
        .unwrap();
    let r = Run::from(out);
    r.expect(0);
    assert_eq!(r.json()["provider"], "none");
    assert_eq!(r.json()["skipped"], true);

    let out = Command::new(env!("CARGO_BIN_EXE_flightplan"))
        .args(["backup", "restore", "x", "--yes", "--config"])
        .arg(dir.path().join("flightplan.toml"))
        .env_remove("FLIGHTPLAN_CONFIG")
        .output()
        .unwrap();
    Run::from(out).expect(2);
}
