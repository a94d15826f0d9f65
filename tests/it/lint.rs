//! `flightplan migrate lint`: squawk's rules on the pending files through the built binary,
//! with and without a database, and `[rehearse] lint` honoured.

use std::process::{Command, Stdio};

use crate::support::db::{Run, TestDb};

/// The binary with no database in its environment, run in `dir`.
fn offline(dir: &std::path::Path, args: &[&str], gha: bool) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
    c.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("FLIGHTPLAN_CONFIG")
        .env_remove("FLIGHTPLAN_LOG")
        .current_dir(dir)
        .stdin(Stdio::null());
    if gha {
        c.env("GITHUB_ACTIONS", "true");
    } else {
        c.env_remove("GITHUB_ACTIONS");
    }
    Run::from(c.output().unwrap())
}

fn write(dir: &std::path::Path, name: &str, sql: &str) {
    std::fs::create_dir_all(dir.join("migrations")).unwrap();
    std::fs::write(dir.join("migrations").join(name), sql).unwrap();
}

#[test]
fn without_a_database_every_file_is_linted_and_fk_drop_index_and_primary_key_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "001_fk.sql",
        "-- the owner of a post\nALTER TABLE posts\n  ADD CONSTRAINT posts_user_fk FOREIGN KEY (user_id) REFERENCES users (id);\n",
    );
    write(d, "002_drop_index.sql", "DROP INDEX posts_title_idx;\n");
    write(d, "003_pk.sql", "ALTER TABLE tags ADD PRIMARY KEY (id);\n");

    let run = offline(d, &["migrate", "lint"], false);
    run.expect(1);
    assert!(
        run.stderr.contains("no DATABASE_URL: linting every file"),
        "{}",
        run.stderr
    );
    for line in [
        "migrations/001_fk.sql:3: adding-foreign-key-constraint: ",
        "migrations/002_drop_index.sql:1: require-concurrent-index-deletion: ",
        "migrations/003_pk.sql:1: adding-serial-primary-key-field: ",
    ] {
        assert!(
            run.stdout.lines().any(|l| l.starts_with(line)),
            "missing {line}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("  help: Add `NOT VALID`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("  rows: unconfirmed: no copy"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("3 file(s) linted (all files: no DATABASE_URL)"),
        "{}",
        run.stdout
    );

    let json = offline(d, &["--format", "json", "migrate", "lint"], false);
    json.expect(1);
    let doc = json.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["squawk"], "2.68.0");
    assert_eq!(
        doc["files"],
        serde_json::json!(["001_fk.sql", "002_drop_index.sql", "003_pk.sql"])
    );
    let reported: Vec<(String, u64)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["disposition"] == "reported")
        .map(|f| {
            (
                f["rule"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        // squawk also flags the constraints as not NOT VALID (a full scan of the table).
        [
            ("constraint-missing-not-valid".to_string(), 3),
            ("adding-foreign-key-constraint".to_string(), 3),
            ("require-concurrent-index-deletion".to_string(), 1),
            ("constraint-missing-not-valid".to_string(), 1),
            ("adding-serial-primary-key-field".to_string(), 1),
        ]
    );
    // The timeout rules fire and are suppressed with flightplan's reason.
    assert!(doc["findings"].as_array().unwrap().iter().any(|f| {
        f["rule"] == "require-lock-timeout"
            && f["disposition"] == "suppressed"
            && f["reason"]
                .as_str()
                .unwrap()
                .contains("SET LOCAL lock_timeout")
    }));

    // Inside Actions each reported finding is also an annotation on its line.
    let gha = offline(d, &["migrate", "lint"], true);
    gha.expect(1);
    assert!(
        gha.stderr
            .contains("::warning file=migrations/001_fk.sql,line=3,col="),
        "{}",
        gha.stderr
    );
}

#[test]
fn with_a_database_only_pending_files_are_linted_and_a_table_made_by_the_change_set_is_excused() {
    let db = TestDb::new();
    db.write(
        "001_base.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\nCREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint);\nCREATE INDEX posts_user ON posts (user_id);\n",
    );
    db.migrate("apply", &[]).expect(0);
    db.write(
        "002_orders.sql",
        "CREATE TABLE orders (id bigint, user_id bigint);\n",
    );
    db.write(
        "003_keys.sql",
        "ALTER TABLE orders ADD PRIMARY KEY (id);\nALTER TABLE posts ADD CONSTRAINT posts_user_fk FOREIGN KEY (user_id) REFERENCES users (id);\n",
    );
    let before = db.query("SELECT filename::text FROM _migrations ORDER BY id");

    let run = db.migrate("lint", &["--format", "json"]);
    run.expect(1);
    let doc = run.json();
    assert_eq!(
        doc["files"],
        serde_json::json!(["002_orders.sql", "003_keys.sql"])
    );
    assert_eq!(doc["scope"], "pending: not in _migrations");
    let findings = doc["findings"].as_array().unwrap();
    let pk = findings
        .iter()
        .find(|f| f["rule"] == "adding-serial-primary-key-field")
        .expect("squawk flags the primary key");
    assert_eq!(pk["file"], "003_keys.sql");
    assert_eq!(pk["disposition"], "suppressed");
    assert_eq!(
        pk["reason"],
        "orders created in this change set: no running code uses it yet"
    );
    let fk = findings
        .iter()
        .find(|f| f["rule"] == "adding-foreign-key-constraint")
        .unwrap();
    assert_eq!(
        (fk["disposition"].as_str(), fk["line"].as_u64()),
        (Some("reported"), Some(2))
    );
    // Nothing in 001 (applied) was linted, though its index is not concurrent.
    assert!(findings.iter().all(|f| f["file"] != "001_base.sql"));

    let text = db.migrate("lint", &[]);
    text.expect(1);
    assert!(
        text.stdout.contains("suppressed by flightplan's context:"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("  suppressed: orders created in this change set"),
        "{}",
        text.stdout
    );
    // Linting reads the ledger and writes nothing.
    assert_eq!(
        db.query("SELECT filename::text FROM _migrations ORDER BY id"),
        before
    );
    assert!(!db.table_exists("orders"));
}

#[test]
fn rehearse_lint_include_and_exclude_are_honoured_and_an_unknown_rule_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write(
        d,
        "001.sql",
        "DROP INDEX posts_title_idx;\nALTER TABLE posts ADD COLUMN title varchar(200);\n",
    );
    let plain = offline(d, &["--format", "json", "migrate", "lint"], false).json();
    let rules = |doc: &serde_json::Value| -> Vec<String> {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["disposition"] == "reported")
            .map(|f| f["rule"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(rules(&plain), ["require-concurrent-index-deletion"]);

    std::fs::write(
        d.join("flightplan.toml"),
        "[rehearse]\nlint = { include = [\"prefer-text-field\"], exclude = [\"require-concurrent-index-deletion\"] }\n",
    )
    .unwrap();
    let configured = offline(d, &["--format", "json", "migrate", "lint"], false);
    configured.expect(1);
    assert_eq!(rules(&configured.json()), ["prefer-text-field"]);

    std::fs::write(
        d.join("flightplan.toml"),
        "[rehearse]\nlint = { exclude = [\"require-concurrent-index-deletion\"] }\n",
    )
    .unwrap();
    let clean = offline(d, &["migrate", "lint"], false);
    clean.expect(0);
    assert!(clean.stdout.contains("no findings"), "{}", clean.stdout);

    std::fs::write(
        d.join("flightplan.toml"),
        "[rehearse]\nlint = { exclude = [\"ban-drop-colum\"] }\n",
    )
    .unwrap();
    let bad = offline(d, &["migrate", "lint"], false);
    bad.expect(2);
    assert!(
        bad.stderr
            .contains("[rehearse] lint.exclude: `ban-drop-colum` is not a squawk 2.68.0 rule id"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("known rule ids: ") && bad.stderr.contains("ban-drop-column"),
        "{}",
        bad.stderr
    );
}
