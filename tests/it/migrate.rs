//! `flightplan migrate` against the real PostgreSQL, through the built binary.

use crate::support::db;

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::db::{Run, TestDb, copy_example};

#[test]
fn fresh_apply_of_the_example_then_a_second_run_applies_nothing() {
    let db = TestDb::new();
    let names = copy_example(&db);
    assert_eq!(names.len(), 23);

    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(0);
    let json = run.json();
    assert_eq!(json["ok"], true);
    let applied: Vec<&str> = json["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["filename"].as_str().unwrap())
        .collect();
    assert_eq!(applied, names, "applied in byte order of file name");
    assert!(
        json["applied"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["duration_ms"].is_i64())
    );

    let ledger = db.ledger();
    assert_eq!(
        ledger.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        names
    );
    assert!(ledger.iter().all(|(_, s)| s == "applied"));
    assert_eq!(db.scalar("SELECT count(*)::text FROM _migrations WHERE checksum ~ '^[0-9a-f]{64}$' AND execution_ms >= 0"), Some("23".into()));
    for table in [
        "users",
        "sessions",
        "merchant_applications",
        "documents",
        "agent_notes",
        "agent_clients",
        "login_attempts",
    ] {
        assert!(db.table_exists(table), "{table} missing");
    }
    assert_eq!(db.scalar("SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'merchant_applications' AND column_name = 'current_step'"), Some("1".into()));
    // The -- no-transaction file built its indexes concurrently, and they are valid.
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM pg_index WHERE NOT indisvalid"),
        Some("0".into())
    );
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM pg_indexes WHERE tablename = 'email_mfa_codes'"),
        Some("3".into())
    );

    let before = db.query("SELECT id::text, executed_at::text FROM _migrations ORDER BY id");
    let again = db.migrate("apply", &["--format", "json"]);
    again.expect(0);
    assert_eq!(again.json()["applied"].as_array().unwrap().len(), 0);
    assert_eq!(again.json()["skipped"], 23);
    assert_eq!(
        db.query("SELECT id::text, executed_at::text FROM _migrations ORDER BY id"),
        before
    );

    let status = db.migrate("status", &["--format", "json"]).expect(0).json();
    assert_eq!(status["applied"].as_array().unwrap().len(), 23);
    for k in ["pending", "modified", "missing", "failed"] {
        assert_eq!(status[k].as_array().unwrap().len(), 0, "{k}");
    }
}

#[test]
fn adopts_the_old_runners_table_without_losing_a_row() {
    let db = TestDb::new();
    let names = copy_example(&db);
    // The runbook's older runner: filename + executed_at, nothing else.
    db.query("CREATE TABLE _migrations (id SERIAL PRIMARY KEY, filename VARCHAR(255) NOT NULL UNIQUE, executed_at TIMESTAMP DEFAULT NOW())");
    // It had applied the first ten files.
    for name in &names[..10] {
        if name.contains("indexes") {
            for stmt in std::fs::read_to_string(db.migrations().join(name))
                .unwrap()
                .split(';')
                .filter(|s| s.contains("CREATE"))
            {
                db.query(stmt);
            }
        } else {
            db.query(&std::fs::read_to_string(db.migrations().join(name)).unwrap());
        }
        db.query(&format!("INSERT INTO _migrations (filename, executed_at) VALUES ('{name}', '2026-01-16 10:00:00')"));
    }
    let old = db.query("SELECT id::text, filename, executed_at::text FROM _migrations ORDER BY id");

    let plan = db.migrate("plan", &["--format", "json"]).expect(0).json();
    assert_eq!(plan["pending"].as_array().unwrap().len(), 13);
    assert_eq!(plan["adoptable"].as_array().unwrap().len(), 10);

    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(0);
    let json = run.json();
    assert_eq!(json["adopted"].as_array().unwrap().len(), 10);
    assert_eq!(json["applied"].as_array().unwrap().len(), 13);
    assert_eq!(
        json["applied"][0]["filename"],
        "009_add_email_mfa_indexes.sql"
    );
    assert_eq!(json["applied"][0]["transaction"], false);

    // Old rows kept (ids, times), new columns added, checksums filled in.
    assert_eq!(db.query("SELECT id::text, filename, executed_at::text FROM _migrations WHERE id <= 10 ORDER BY id"), old);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM _migrations WHERE checksum IS NULL"),
        Some("0".into())
    );
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM _migrations"),
        Some("23".into())
    );
    let cols = db.scalar("SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = '_migrations'").unwrap();
    assert_eq!(
        cols,
        "id,filename,executed_at,checksum,execution_ms,applied_by,status,error"
    );
}

#[test]
fn modified_and_missing_files_stop_apply_and_verify_naming_each_file() {
    let db = TestDb::new();
    db.write("001_a.sql", "CREATE TABLE a (id int);\n");
    db.write("002_b.sql", "CREATE TABLE b (id int);\n");
    db.migrate("apply", &[]).expect(0);
    db.migrate("verify", &[]).expect(0);

    // Line endings alone are not a change.
    db.write("001_a.sql", "CREATE TABLE a (id int);\r\n");
    db.migrate("verify", &[]).expect(0);

    db.write("001_a.sql", "CREATE TABLE a (id bigint);\n");
    std::fs::remove_file(db.migrations().join("002_b.sql")).unwrap();
    db.write("003_c.sql", "CREATE TABLE c (id int);\n");
    let verify = db.migrate("verify", &[]);
    verify.expect(1);
    assert!(
        verify.stderr.contains("001_a.sql was modified"),
        "{}",
        verify.stderr
    );
    assert!(
        verify
            .stderr
            .contains("002_b.sql was applied but is missing"),
        "{}",
        verify.stderr
    );

    let apply = db.migrate("apply", &["--format", "json"]);
    apply.expect(1);
    let json = apply.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["modified"][0]["filename"], "001_a.sql");
    assert_eq!(json["missing"][0]["filename"], "002_b.sql");
    assert!(
        !db.table_exists("c"),
        "nothing may be applied while an applied file is modified"
    );
    assert_eq!(db.ledger().len(), 2);

    let status = db.migrate("status", &["--format", "json"]).expect(0).json();
    assert_eq!(status["modified"][0]["filename"], "001_a.sql");
    assert_eq!(status["missing"][0]["filename"], "002_b.sql");
    assert_eq!(status["pending"][0]["filename"], "003_c.sql");
}

#[test]
fn a_failing_migration_in_the_middle_keeps_earlier_files_and_names_file_line_and_column() {
    let db = TestDb::new();
    db.write("001_ok.sql", "CREATE TABLE first_ok (id int);\n");
    db.write("002_bad.sql", "CREATE TABLE half_done (id int);\n-- the typo is on line 3\nALTER TABLE half_done ADD COLUMN x intt;\n");
    db.write("003_later.sql", "CREATE TABLE later (id int);\n");
    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(1);
    let json = run.json();
    assert_eq!(json["applied"][0]["filename"], "001_ok.sql");
    assert_eq!(json["applied"].as_array().unwrap().len(), 1);
    let err = &json["error"];
    assert!(err["file"].as_str().unwrap().ends_with("002_bad.sql"));
    assert_eq!(err["line"], 3);
    assert_eq!(err["column"], 36);
    assert_eq!(err["code"], "42704");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("type \"intt\" does not exist"),
        "{err}"
    );

    assert!(db.table_exists("first_ok"));
    assert!(
        !db.table_exists("half_done"),
        "the failing file's transaction must leave nothing"
    );
    assert!(
        !db.table_exists("later"),
        "files after the failure must not run"
    );
    assert_eq!(
        db.ledger(),
        vec![("001_ok.sql".to_string(), "applied".to_string())]
    );

    // Text mode names the place as file:line:col, and the lock is free: a fixed file applies.
    let text = db.migrate("apply", &[]);
    text.expect(1);
    assert!(text.stderr.contains("002_bad.sql:3:36"), "{}", text.stderr);
    db.write(
        "002_bad.sql",
        "CREATE TABLE half_done (id int);\nALTER TABLE half_done ADD COLUMN x int;\n",
    );
    db.migrate("apply", &[]).expect(0);
    assert!(db.table_exists("later"));
    assert_eq!(db.ledger().len(), 3);
}

#[test]
fn an_error_without_a_position_is_traced_to_its_statement() {
    let db = TestDb::new();
    db.write(
        "001_t.sql",
        "CREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t VALUES (1);\n",
    );
    db.write(
        "002_dup.sql",
        "INSERT INTO t VALUES (2);\n\nINSERT INTO t VALUES (1);\nINSERT INTO t VALUES (3);\n",
    );
    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(1);
    let err = &run.json()["error"];
    assert_eq!(err["code"], "23505");
    assert_eq!(err["line"], 3, "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("statement 2 of 3"),
        "{err}"
    );
    assert_eq!(
        db.scalar("SELECT string_agg(id::text, ',' ORDER BY id) FROM t"),
        Some("1".into())
    );
}

#[test]
fn batches_handle_files_without_trailing_semicolons_or_newlines_and_wrapped_transactions() {
    let db = TestDb::new();
    db.write(
        "001.sql",
        "CREATE TABLE a (id int) -- no semicolon, comment last",
    );
    db.write("002.sql", "BEGIN;\nCREATE TABLE b (id int);\nCOMMIT;\n");
    db.write("003.sql", "\u{feff}CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nCREATE TABLE \"c;\" (x text DEFAULT 'it''s; fine');");
    db.write("004_empty.sql", "-- intentionally empty\n");
    db.migrate("apply", &[]).expect(0);
    for t in ["a", "b", "\"c;\""] {
        assert!(db.table_exists(t), "{t}");
    }
    assert_eq!(db.ledger().len(), 4);
}

#[test]
fn concurrent_index_builds_run_outside_a_transaction() {
    let db = TestDb::new();
    db.write("001_t.sql", "CREATE TABLE t (a int, b int);\nINSERT INTO t SELECT g, g FROM generate_series(1, 1000) g;\n");
    db.write(
        "002_idx.sql",
        "-- no-transaction\n-- two concurrent builds: PostgreSQL refuses them in one transaction or one message\nCREATE INDEX CONCURRENTLY t_a ON t (a);\nCREATE INDEX CONCURRENTLY t_b ON t (b);\n",
    );
    db.write("003_after.sql", "CREATE TABLE after_idx (id int);\n");
    let json = db.migrate("apply", &["--format", "json"]).expect(0).json();
    assert_eq!(json["applied"][1]["transaction"], false);
    assert_eq!(
        db.scalar(
            "SELECT count(*)::text FROM pg_index WHERE indrelid = 't'::regclass AND indisvalid"
        ),
        Some("2".into())
    );
    assert_eq!(db.ledger().len(), 3);
    assert!(db.ledger().iter().all(|(_, s)| s == "applied"));
}

#[test]
fn a_failed_concurrent_build_is_recorded_reports_its_invalid_index_and_blocks_until_resolved() {
    let db = TestDb::new();
    db.write(
        "001_t.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (1);\n",
    );
    db.write(
        "002_uq.sql",
        "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY t_a_uq ON t (a);\n",
    );
    db.write("003_after.sql", "CREATE TABLE after_uq (id int);\n");
    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(1);
    let err = &run.json()["error"];
    assert!(
        err["message"].as_str().unwrap().contains("t_a_uq"),
        "invalid index named: {err}"
    );
    assert!(
        err["hint"].as_str().unwrap().contains("--retry-failed"),
        "{err}"
    );
    assert_eq!(err["line"], 2);
    assert_eq!(
        db.ledger()[1],
        ("002_uq.sql".to_string(), "failed".to_string())
    );
    assert!(!db.table_exists("after_uq"));

    // The next run stops before doing anything.
    let blocked = db.migrate("apply", &[]);
    blocked.expect(1);
    assert!(
        blocked
            .stderr
            .contains("002_uq.sql failed outside a transaction"),
        "{}",
        blocked.stderr
    );
    assert!(!db.table_exists("after_uq"));
    let status = db.migrate("status", &["--format", "json"]).expect(0).json();
    assert_eq!(status["failed"][0]["filename"], "002_uq.sql");

    // Resolve: fix the data, drop the invalid index, retry.
    db.query("DELETE FROM t WHERE ctid IN (SELECT max(ctid) FROM t); DROP INDEX t_a_uq;");
    db.migrate("apply", &["--retry-failed"]).expect(0);
    assert!(db.table_exists("after_uq"));
    assert!(db.ledger().iter().all(|(_, s)| s == "applied"));
    assert_eq!(
        db.scalar("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_a_uq'::regclass"),
        Some("true".into())
    );
}

#[test]
fn six_concurrent_runners_apply_each_file_exactly_once() {
    let db = TestDb::new();
    db.write("000_counter.sql", "CREATE TABLE runs (filename text);\n");
    for i in 1..=12 {
        // Each file counts its own executions; a slow one widens the race window.
        db.write(
            &format!("{i:03}_m.sql"),
            &format!("INSERT INTO runs VALUES ('{i:03}');\nCREATE TABLE t{i} (id int);\nSELECT pg_sleep(0.05);\n"),
        );
    }
    db.write(
        "013_idx.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY runs_f ON runs (filename);\n",
    );
    let dir = db.migrations();
    let children: Vec<_> = (0..6)
        .map(|_| {
            db.cmd(&[
                "migrate",
                "apply",
                "--dir",
                dir.to_str().unwrap(),
                "--format",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().unwrap()))
        .collect();
    let mut total_applied = 0;
    for r in &runs {
        r.expect(0);
        total_applied += r.json()["applied"].as_array().unwrap().len();
    }
    assert_eq!(
        total_applied, 14,
        "every file applied by exactly one runner"
    );
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM runs"),
        Some("12".into())
    );
    assert_eq!(
        db.scalar("SELECT count(DISTINCT filename)::text FROM runs"),
        Some("12".into())
    );
    assert_eq!(db.ledger().len(), 14);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM pg_index WHERE NOT indisvalid"),
        Some("0".into())
    );
}

#[test]
fn a_runner_killed_mid_migration_leaves_no_partial_file_and_the_next_run_finishes() {
    let db = TestDb::new();
    db.write("001_first.sql", "CREATE TABLE first (id int);\n");
    db.write(
        "002_slow.sql",
        "CREATE TABLE slow_partial (id int);\nSELECT pg_sleep(30);\n",
    );
    db.write("003_last.sql", "CREATE TABLE last (id int);\n");
    let dir = db.migrations();
    let mut child = db
        .cmd(&["migrate", "apply", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        &db,
        "SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
        "1",
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // Killed inside one message: the whole batch is one transaction per file, so the
    // first file (committed in the same message before the slow one) is the only trace.
    let partial = db.table_exists("slow_partial");
    assert!(!partial, "no partial file may remain");
    assert!(!db.table_exists("last"));
    let ledger = db.ledger();
    assert!(
        ledger.iter().all(|(f, _)| f == "001_first.sql"),
        "{ledger:?}"
    );
    assert_eq!(db.table_exists("first"), !ledger.is_empty());

    // The server notices the dead client (client_connection_check_interval) and frees the
    // lock; the next run (with the sleep shortened: the file never applied) completes.
    db.write(
        "002_slow.sql",
        "CREATE TABLE slow_partial (id int);\nSELECT pg_sleep(0.1);\n",
    );
    let started = Instant::now();
    db.migrate("apply", &["--lock-wait", "60s"]).expect(0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the lock was held by the dead runner's backend"
    );
    assert_eq!(db.ledger().len(), 3);
    assert!(db.table_exists("slow_partial") && db.table_exists("last"));
}

#[test]
fn a_lock_timeout_is_retried_from_the_failed_file() {
    let db = TestDb::new();
    db.write("001_t.sql", "CREATE TABLE busy (id int);\n");
    db.migrate("apply", &[]).expect(0);
    db.write("002_alter.sql", "ALTER TABLE busy ADD COLUMN note text;\n");
    // Another session holds ACCESS EXCLUSIVE on the table for ~1.5 s.
    let url = db.url.clone();
    let holder = std::thread::spawn(move || {
        db::query_url(
            &url,
            "BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(1.5); COMMIT;",
        );
    });
    wait_for(
        &db,
        "SELECT count(*)::text FROM pg_locks WHERE relation = 'busy'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        "1",
    );
    let run = db.migrate("apply", &["--lock-timeout", "300ms", "--format", "json"]);
    holder.join().unwrap();
    run.expect(0);
    assert!(
        run.stderr.contains("lock_timeout (300 ms) reached"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("retry 1/3"), "{}", run.stderr);
    assert_eq!(db.scalar("SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'busy' AND column_name = 'note'"), Some("1".into()));
    assert_eq!(db.ledger().len(), 2);
}

#[test]
fn a_lock_timeout_that_outlasts_the_retries_fails_with_55p03() {
    let db = TestDb::new();
    db.write("001_t.sql", "CREATE TABLE busy (id int);\n");
    db.migrate("apply", &[]).expect(0);
    db.write("002_alter.sql", "ALTER TABLE busy ADD COLUMN note text;\n");
    let url = db.url.clone();
    let holder = std::thread::spawn(move || {
        db::query_url(
            &url,
            "BEGIN; LOCK TABLE busy IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
        );
    });
    wait_for(
        &db,
        "SELECT count(*)::text FROM pg_locks WHERE relation = 'busy'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        "1",
    );
    let run = db.migrate("apply", &["--lock-timeout", "100ms", "--format", "json"]);
    run.expect(1);
    let err = &run.json()["error"];
    assert_eq!(err["code"], "55P03");
    assert!(
        err["message"].as_str().unwrap().contains("after 3 retries"),
        "{err}"
    );
    assert_eq!(db.ledger().len(), 1);
    holder.join().unwrap();
}

#[test]
fn a_runner_that_cannot_get_the_migration_lock_gives_up_naming_the_holder() {
    let db = TestDb::new();
    db.write("001_slow.sql", "SELECT pg_sleep(6);\n");
    let dir = db.migrations();
    let mut first = db
        .cmd(&["migrate", "apply", "--dir", dir.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        &db,
        "SELECT count(*)::text FROM pg_stat_activity WHERE query LIKE '%pg_sleep(6)%' AND pid <> pg_backend_pid()",
        "1",
    );
    let second = db.migrate("apply", &["--lock-wait", "1s"]);
    second.expect(1);
    assert!(
        second.stderr.contains("was not obtained within 1s"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("flightplan"),
        "the holder's application name is shown: {}",
        second.stderr
    );
    assert!(first.wait().unwrap().success());
    assert_eq!(db.ledger().len(), 1);
}

#[test]
fn bad_inputs_exit_2_or_1_with_a_clear_message_and_change_nothing() {
    let db = TestDb::new();
    // Missing directory.
    let r = db
        .cmd(&["migrate", "apply", "--dir", "nope"])
        .output()
        .unwrap();
    let r = Run::from(r);
    r.expect(2);
    assert!(
        r.stderr.contains("cannot read migrations directory nope"),
        "{}",
        r.stderr
    );

    // Empty directory.
    db.migrations();
    let r = db.migrate("apply", &[]);
    r.expect(2);
    assert!(
        r.stderr.contains("no *.sql migration files"),
        "{}",
        r.stderr
    );

    // Non-UTF-8 file.
    db.write("001_ok.sql", "CREATE TABLE ok (id int);\n");
    std::fs::write(
        db.migrations().join("002_latin1.sql"),
        b"-- caf\xe9\nCREATE TABLE x (id int);\n",
    )
    .unwrap();
    let r = db.migrate("apply", &[]);
    r.expect(2);
    assert!(
        r.stderr.contains("002_latin1.sql is not valid UTF-8"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(db.migrations().join("002_latin1.sql")).unwrap();

    // Names that differ only in case.
    db.write("002_Users.sql", "SELECT 1;\n");
    db.write("002_users.sql", "SELECT 1;\n");
    let r = db.migrate("apply", &[]);
    r.expect(2);
    assert!(
        r.stderr.contains("differ only in letter case"),
        "{}",
        r.stderr
    );
    std::fs::remove_file(db.migrations().join("002_Users.sql")).unwrap();

    // CREATE INDEX CONCURRENTLY in a transactional file: refused with its place.
    db.write(
        "003_idx.sql",
        "CREATE TABLE y (id int);\nCREATE INDEX CONCURRENTLY y_id ON y (id);\n",
    );
    let r = db.migrate("apply", &["--format", "json"]);
    r.expect(2);
    assert_eq!(r.json()["error"]["line"], 2);
    assert!(
        r.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("-- no-transaction")
    );
    std::fs::remove_file(db.migrations().join("003_idx.sql")).unwrap();

    assert!(
        !db.table_exists("_migrations"),
        "nothing may be created by a run refused for its input"
    );
    assert!(!db.table_exists("ok"));

    // Bad URLs.
    for (url, code, needle) in [
        ("not a url", 2, "not a valid URL"),
        ("mysql://root@127.0.0.1/test", 2, "PostgreSQL only"),
        (
            "postgres://u:p@ep-x-123-pooler.us-east-2.aws.neon.tech/db",
            2,
            "pooled Neon endpoint",
        ),
        (
            "postgres://u:p@db.example.org/db?sslmode=disable",
            2,
            "plain text",
        ),
        (
            "postgres://postgres@127.0.0.1:1/test?sslmode=disable",
            1,
            "could not connect",
        ),
    ] {
        let dir = db.migrations();
        let r = Run::from(
            db.cmd(&[
                "migrate",
                "apply",
                "--dir",
                dir.to_str().unwrap(),
                "--connect-timeout",
                "1s",
            ])
            .env("DATABASE_URL", url)
            .output()
            .unwrap(),
        );
        r.expect(code);
        assert!(r.stderr.contains(needle), "{url}: {}", r.stderr);
        assert!(!r.stderr.contains(":p@"), "password shown: {}", r.stderr);
    }
    let r = Run::from(
        db.cmd(&["migrate", "status", "--dir", "x"])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap(),
    );
    r.expect(2);
    assert!(r.stderr.contains("set DATABASE_URL"), "{}", r.stderr);
    assert!(!db.table_exists("_migrations"));
}

#[test]
fn mark_applied_records_without_running_and_refuses_unknown_files() {
    let db = TestDb::new();
    db.write("001_a.sql", "CREATE TABLE a (id int);\n");
    db.write("002_b.sql", "CREATE TABLE b (id int);\n");
    let r = db.migrate("mark-applied", &["003_nope.sql"]);
    r.expect(2);
    assert!(
        r.stderr.contains("003_nope.sql is not a migration file"),
        "{}",
        r.stderr
    );
    assert!(!db.table_exists("_migrations"));

    db.migrate("mark-applied", &["001_a.sql"]).expect(0);
    assert!(!db.table_exists("a"), "mark-applied must not run the file");
    assert_eq!(
        db.ledger(),
        vec![("001_a.sql".to_string(), "applied".to_string())]
    );
    let json = db.migrate("apply", &["--format", "json"]).expect(0).json();
    assert_eq!(json["applied"].as_array().unwrap().len(), 1);
    assert!(db.table_exists("b") && !db.table_exists("a"));
}

#[test]
fn the_already_exists_error_suggests_mark_applied() {
    let db = TestDb::new();
    db.query("CREATE TABLE users (id int)"); // as if `db:push` had created it
    db.write("001_users.sql", "CREATE TABLE users (id int);\n");
    let r = db.migrate("apply", &[]);
    r.expect(1);
    assert!(r.stderr.contains("42P07"), "{}", r.stderr);
    assert!(
        r.stderr.contains("mark-applied 001_users.sql"),
        "{}",
        r.stderr
    );
}

#[test]
fn inside_github_actions_a_failure_is_an_error_annotation_with_file_and_line() {
    let db = TestDb::new();
    db.write("001_bad.sql", "SELECT 1;\nSELEC 2;\n");
    let r = Run::from(
        db.cmd(&[
            "migrate",
            "apply",
            "--dir",
            db.migrations().to_str().unwrap(),
        ])
        .env("GITHUB_ACTIONS", "true")
        .output()
        .unwrap(),
    );
    r.expect(1);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains("001_bad.sql,line=2,col=1::"), "{line}");
}

#[test]
fn plan_shows_order_and_mode_without_writing() {
    let db = TestDb::new();
    copy_example(&db);
    let r = db.migrate("plan", &[]);
    r.expect(0);
    assert!(
        r.stdout.contains("23 migration(s) to apply"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("009_add_email_mfa_indexes.sql") && r.stdout.contains("no-transaction")
    );
    let first = r.stdout.find("0000_pink_wolf_cub.sql").unwrap();
    let last = r.stdout.find("020_add_current_step.sql").unwrap();
    assert!(first < last);
    assert!(!db.table_exists("_migrations"), "plan must not write");
}

/// Polls a query until it returns `want` (at most 20 s).
fn wait_for(db: &TestDb, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if db.scalar(sql).as_deref() == Some(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for `{sql}` to return {want}");
}

#[test]
fn a_database_that_refuses_connections_at_first_is_retried_until_it_accepts() {
    let db = TestDb::new();
    db.write("001_a.sql", "CREATE TABLE a (id int);\n");
    // A port nothing listens on yet: connections are refused, as while a server restarts.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut url = url::Url::parse(&db.url).unwrap();
    let real = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    url.set_port(Some(port)).unwrap();
    let dir = db.migrations();
    let child = db
        .cmd(&[
            "migrate",
            "apply",
            "--dir",
            dir.to_str().unwrap(),
            "--connect-timeout",
            "20s",
        ])
        .env("DATABASE_URL", url.as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // The server "comes up": a forwarder to the real PostgreSQL starts listening.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = std::net::TcpStream::connect(&real).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut c, mut s) = (client, server);
            std::thread::spawn(move || std::io::copy(&mut c, &mut s2));
            std::thread::spawn(move || std::io::copy(&mut s, &mut c2));
        }
    });
    let run = Run::from(child.wait_with_output().unwrap());
    run.expect(0);
    assert!(
        run.stderr.contains("not accepting connections yet"),
        "{}",
        run.stderr
    );
    assert_eq!(db.ledger().len(), 1);
    assert!(db.table_exists("a"));
}

/// A data load of about 9 MB: a CREATE TABLE and 900 INSERTs of 10 KB each, a valid file.
fn big_load(rows_table: &str, statements: usize) -> String {
    let mut sql =
        format!("CREATE TABLE {rows_table} (id int PRIMARY KEY, payload text NOT NULL);\n");
    let payload = "é".repeat(5_000); // two bytes a character: positions are in characters
    for i in 1..=statements {
        sql.push_str(&format!(
            "INSERT INTO {rows_table} VALUES ({i}, '{payload}');\n"
        ));
    }
    sql
}

#[test]
fn a_file_larger_than_a_batch_commits_whole_in_one_transaction_or_leaves_nothing() {
    let db = TestDb::new();
    db.write("001_small.sql", "CREATE TABLE before_big (id int);\n");
    let good = big_load("big_rows", 900);
    assert!(good.len() > 8 << 20, "bigger than two 4 MiB pieces");
    db.write("002_big.sql", &good);
    db.write("003_after.sql", "CREATE TABLE after_big (id int);\n");
    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(0);
    let json = run.json();
    let names: Vec<&str> = json["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["001_small.sql", "002_big.sql", "003_after.sql"]);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM big_rows"),
        Some("900".into())
    );
    assert!(
        run.stderr.contains("sent in 3 pieces in one transaction"),
        "{}",
        run.stderr
    );
    assert_eq!(db.ledger().len(), 3);

    // The same size with an error in its last piece: nothing of the file remains (the
    // pieces before it ran in the same transaction), and the error is at its own line.
    let db = TestDb::new();
    let mut bad = big_load("bad_rows", 900);
    bad.push_str("INSERT INTO bad_rows VALUES (1, 'duplicate');\nSELECT 1;\n");
    db.write("001_big.sql", &bad);
    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(1);
    let json = run.json();
    assert_eq!(json["applied"].as_array().unwrap().len(), 0, "{json}");
    let err = &json["error"];
    assert_eq!(err["code"], "23505", "{err}");
    assert!(err["file"].as_str().unwrap().ends_with("001_big.sql"));
    assert_eq!(err["line"], 902, "{err}");
    assert!(!db.table_exists("bad_rows"), "the whole file rolled back");
    assert!(db.ledger().is_empty());

    // A syntax error in a later piece is located in the file, in characters.
    let db = TestDb::new();
    let mut typo = big_load("typo_rows", 900);
    typo.push_str("SELECT 'é'; ALTER TABLE typo_rows ADD COLUMN x intt;\n");
    db.write("001_big.sql", &typo);
    let run = db.migrate("apply", &["--format", "json"]);
    run.expect(1);
    let err = &run.json()["error"];
    assert_eq!(err["code"], "42704", "{err}");
    assert_eq!(err["line"], 902, "{err}");
    assert_eq!(err["column"], 48, "{err}");
    assert!(!db.table_exists("typo_rows"));
    assert!(db.ledger().is_empty());
}
