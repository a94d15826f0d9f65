//! `flightplan migrate drift` and `migrate adopt` against the real PostgreSQL.

use crate::support::db;

use crate::support::db::{TestDb, copy_example};

#[test]
fn a_clean_apply_has_no_drift_and_out_of_band_changes_are_each_found() {
    let db = TestDb::new();
    copy_example(&db);
    db.migrate("apply", &[]).expect(0);
    let clean = db.migrate("drift", &["--format", "json"]);
    clean.expect(0);
    assert_eq!(
        clean.json()["drift"].as_array().unwrap().len(),
        0,
        "{}",
        clean.stdout
    );
    assert_eq!(clean.json()["compared_files"], 23);

    // What `db:push` and hand-run fixes do behind the ledger's back.
    db.query(
        "ALTER TABLE users ADD COLUMN nickname text;
         DROP INDEX idx_email_mfa_codes_user_id_created_at;
         ALTER TABLE users ALTER COLUMN role SET DEFAULT 'member';
         ALTER TYPE audit_action ADD VALUE 'pushed_value';",
    );
    let run = db.migrate("drift", &["--format", "json"]);
    run.expect(1);
    let drift = run.json()["drift"].as_array().unwrap().clone();
    let find = |kind: &str, object: &str| {
        drift
            .iter()
            .find(|d| d["kind"] == kind && d["object"] == object)
            .unwrap_or_else(|| panic!("no {kind} {object} in {drift:#?}"))
            .clone()
    };
    let added = find("column", "public.users.nickname");
    assert!(added["expected"].is_null());
    assert_eq!(added["actual"], "text");
    let dropped = find("index", "public.idx_email_mfa_codes_user_id_created_at");
    assert!(dropped["actual"].is_null());
    assert!(
        dropped["expected"]
            .as_str()
            .unwrap()
            .contains("CREATE INDEX")
    );
    let default = find("column", "public.users.role");
    assert!(default["expected"].as_str().unwrap().contains("'client'"));
    assert!(default["actual"].as_str().unwrap().contains("'member'"));
    let enum_ = find("enum", "public.audit_action");
    assert!(enum_["actual"].as_str().unwrap().ends_with("pushed_value"));
    assert_eq!(drift.len(), 4, "{drift:#?}");

    let text = db.migrate("drift", &[]);
    text.expect(1);
    assert!(
        text.stdout.contains("+ public.users.nickname"),
        "{}",
        text.stdout
    );
    assert!(
        text.stderr
            .contains("drifted from its migration files in 4 place(s)"),
        "{}",
        text.stderr
    );
    // The scratch database carries the process id of the run that made it: none is left.
    let child = db
        .cmd(&[
            "migrate",
            "drift",
            "--dir",
            db.migrations().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(1));
    assert_eq!(scratch_databases_of(pid), 0);
}

/// Scratch databases left behind by the flightplan process `pid`.
fn scratch_databases_of(pid: u32) -> usize {
    db::query_url(
        &db::admin_url(),
        &format!("SELECT count(*)::text FROM pg_database WHERE datname LIKE 'flightplan\\_scratch\\_{pid}\\_%'"),
    )[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn pending_files_are_not_drift() {
    let db = TestDb::new();
    db.write("001_a.sql", "CREATE TABLE a (id int);\n");
    db.migrate("apply", &[]).expect(0);
    db.write("002_b.sql", "CREATE TABLE b (id int);\n");
    db.migrate("drift", &[]).expect(0);
}

#[test]
fn adopt_finds_files_applied_by_hand_and_records_them_in_one_step() {
    let db = TestDb::new();
    db.write(
        "001_users.sql",
        "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);\n",
    );
    db.migrate("apply", &[]).expect(0);
    db.write("002_nickname.sql", "ALTER TABLE users ADD COLUMN nickname text;\nCREATE INDEX users_nickname ON users (nickname);\n");
    db.write(
        "003_half.sql",
        "ALTER TABLE users ADD COLUMN age int;\nALTER TABLE users ADD COLUMN city text;\n",
    );
    db.write("004_new.sql", "CREATE TABLE orders (id int);\n");
    // Someone ran 002 by hand (db:push style) and half of 003.
    db.query("ALTER TABLE users ADD COLUMN nickname text; CREATE INDEX users_nickname ON users (nickname); ALTER TABLE users ADD COLUMN age int;");

    let look = db.migrate("adopt", &["--format", "json"]);
    look.expect(0);
    let files = look.json()["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 3);
    assert_eq!(
        (
            files[0]["filename"].as_str().unwrap(),
            files[0]["adoptable"].as_bool().unwrap()
        ),
        ("002_nickname.sql", true)
    );
    assert_eq!(files[1]["present"], 1);
    assert_eq!(files[1]["adoptable"], false);
    assert_eq!(files[2]["present"], 0);
    assert_eq!(db.ledger().len(), 1, "without --yes nothing is recorded");

    let done = db.migrate("adopt", &["--yes", "--format", "json"]);
    done.expect(0);
    assert_eq!(
        done.json()["marked"],
        serde_json::json!(["002_nickname.sql"])
    );
    assert_eq!(db.ledger().len(), 2);
    let by = db.scalar("SELECT applied_by FROM _migrations WHERE filename = '002_nickname.sql'");
    assert!(by.unwrap().contains("mark-applied"));
    assert!(
        !db.table_exists("orders"),
        "adopt runs nothing on the database"
    );
}
