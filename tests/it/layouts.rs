//! `migrate` with `layout = "drizzle"` and `layout = "sqlx"` against the real PostgreSQL: the
//! original tools' folders read their way, and their tracking tables written as they write them.

use crate::support::db::{Run, TestDb};
use sha2::{Digest, Sha256, Sha384};

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn sha384_hex(text: &str) -> String {
    Sha384::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `meta/_journal.json` as drizzle-kit 0.31 does, for (when, tag) entries in order.
fn journal(db: &TestDb, entries: &[(i64, &str)]) {
    let entries: Vec<serde_json::Value> = entries
        .iter()
        .enumerate()
        .map(|(idx, (when, tag))| {
            serde_json::json!({"idx": idx, "version": "7", "when": when, "tag": tag, "breakpoints": true})
        })
        .collect();
    let doc = serde_json::json!({"version": "7", "dialect": "postgresql", "entries": entries});
    std::fs::create_dir_all(db.migrations().join("meta")).unwrap();
    std::fs::write(
        db.migrations().join("meta/_journal.json"),
        serde_json::to_string_pretty(&doc).unwrap(),
    )
    .unwrap();
}

/// Columns (name, type, not null, default) and constraints of a table, to compare tables
/// created by different programs.
fn table_shape(db: &TestDb, table: &str) -> Vec<Vec<Option<String>>> {
    db.query(&format!(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull::text, pg_get_expr(d.adbin, d.adrelid) \
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped \
         UNION ALL SELECT conname::text, pg_get_constraintdef(oid), NULL, NULL FROM pg_constraint WHERE conrelid = '{table}'::regclass \
         ORDER BY 1"
    ))
}

/// drizzle-orm 0.45 `pg-core/dialect.js` `migrate()`: its DDL, verbatim.
const DRIZZLE_DDL: &str = "CREATE SCHEMA IF NOT EXISTS \"drizzle\";
CREATE TABLE IF NOT EXISTS \"drizzle\".\"__drizzle_migrations\" (
    id SERIAL PRIMARY KEY,
    hash text NOT NULL,
    created_at bigint
);";

/// sqlx-postgres 0.9 `migrate.rs` `ensure_migrations_table`: its DDL, verbatim.
const SQLX_DDL: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);";

/// What drizzle-orm's migrator does for one journal entry, as its source does it
/// (`migrator.js` `readMigrationFiles` + `dialect.js` `migrate()`): the file split on
/// `--> statement-breakpoint`, each piece executed, then `insert into … ("hash",
/// "created_at") values(sha256 hex of the file text, journal when)`.
fn drizzle_kit_applies(db: &TestDb, tag: &str, when: i64) {
    let text = std::fs::read_to_string(db.migrations().join(format!("{tag}.sql"))).unwrap();
    for piece in text.split("--> statement-breakpoint") {
        if !piece.trim().is_empty() {
            db.query(piece);
        }
    }
    db.query(&format!(
        "insert into \"drizzle\".\"__drizzle_migrations\" (\"hash\", \"created_at\") values('{}', {when})",
        sha256_hex(&text)
    ));
}

/// What sqlx's `Migrator::run` writes for one migration, as sqlx-postgres 0.9 `migrate.rs`
/// does it: the file executed whole, `INSERT … (version, description, success, checksum,
/// execution_time) VALUES (v, d, TRUE, sha384, -1)`, then `UPDATE … SET execution_time =
/// <nanoseconds>` after the commit.
fn sqlx_applies(db: &TestDb, file: &str, version: i64, description: &str) {
    let text = std::fs::read_to_string(db.migrations().join(file)).unwrap();
    db.query(&text);
    db.query(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ({version}, '{description}', TRUE, decode('{}', 'hex'), -1)",
        sha384_hex(&text)
    ));
    db.query(&format!(
        "UPDATE _sqlx_migrations SET execution_time = 1234567 WHERE version = {version}"
    ));
}

fn applied_names(run: &Run) -> Vec<String> {
    run.json()["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["filename"].as_str().unwrap().to_string())
        .collect()
}

const USERS: &str = "CREATE TABLE \"users\" (\n\t\"id\" serial PRIMARY KEY NOT NULL,\n\t\"email\" text NOT NULL\n);\n--> statement-breakpoint\nCREATE UNIQUE INDEX \"users_email_idx\" ON \"users\" USING btree (\"email\");";
const POSTS: &str = "CREATE TABLE \"posts\" (\n\t\"id\" serial PRIMARY KEY NOT NULL,\n\t\"user_id\" integer NOT NULL\n);\n--> statement-breakpoint\nALTER TABLE \"posts\" ADD CONSTRAINT \"posts_user_id_users_id_fk\" FOREIGN KEY (\"user_id\") REFERENCES \"public\".\"users\"(\"id\");";
// A hand-written custom migration: a statement ended only by a breakpoint (drizzle-kit's
// migrator sends each piece alone, so it needs no `;`), and a `;` inside a string.
const TAGS: &str = "-- Custom SQL migration file, put your code below! --\nCREATE TABLE \"tags\" (\"id\" serial PRIMARY KEY, \"name\" text)\n--> statement-breakpoint\nINSERT INTO \"tags\" (\"name\") VALUES ('a;b');\n";

#[test]
fn a_drizzle_kit_folder_is_applied_in_journal_order_with_drizzles_own_rows_and_reapplied_as_a_no_op()
 {
    let db = TestDb::new();
    // Tags without drizzle-kit's numeric prefix (`prefix: "none"`): byte order of the names
    // (add_posts, custom_tags, init) is not the journal's order, which is the one that works.
    journal(
        &db,
        &[
            (1717000000000, "init"),
            (1717000100000, "add_posts"),
            (1717000200000, "custom_tags"),
        ],
    );
    db.write("init.sql", USERS);
    db.write("add_posts.sql", POSTS);
    db.write("custom_tags.sql", TAGS);
    db.write(
        "0003_from_another_branch.sql",
        "CREATE TABLE orphan (id int);\n",
    );
    std::fs::write(db.migrations().join("meta/0000_snapshot.json"), "{}").unwrap();

    let plan = db.migrate("plan", &["--layout", "drizzle", "--format", "json"]);
    plan.expect(0);
    assert_eq!(plan.json()["layout"], "drizzle");
    assert!(
        plan.json()["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("0003_from_another_branch.sql is not in meta/_journal.json"),
        "{}",
        plan.stdout
    );

    let run = db.migrate("apply", &["--layout", "drizzle", "--format", "json"]);
    run.expect(0);
    assert_eq!(
        applied_names(&run),
        vec!["init.sql", "add_posts.sql", "custom_tags.sql"]
    );
    assert!(
        run.stderr
            .contains("0003_from_another_branch.sql is not in meta/_journal.json"),
        "the orphan is warned about: {}",
        run.stderr
    );
    assert!(!db.table_exists("orphan"), "an orphan file never runs");
    assert_eq!(
        db.scalar("SELECT string_agg(name, ',') FROM tags"),
        Some("a;b".into())
    );
    assert!(
        !db.table_exists("_migrations"),
        "the drizzle layout writes drizzle's table only"
    );

    // Byte-for-byte drizzle's rows: id from the serial, sha256 of the file text, `when`.
    let expected: Vec<Vec<Option<String>>> = [
        (USERS, 1717000000000i64),
        (POSTS, 1717000100000),
        (TAGS, 1717000200000),
    ]
    .iter()
    .enumerate()
    .map(|(i, (text, when))| {
        vec![
            Some((i + 1).to_string()),
            Some(sha256_hex(text)),
            Some(when.to_string()),
        ]
    })
    .collect();
    let rows_sql =
        "SELECT id::text, hash, created_at::text FROM drizzle.__drizzle_migrations ORDER BY id";
    assert_eq!(db.query(rows_sql), expected);
    // Known value: the hash of USERS as drizzle-kit 0.31 wrote it in a manual run.
    assert_eq!(
        expected[0][1].as_deref(),
        Some("67d6b3c9b9f87c8fd5ae8c80a047ecdd17d4e32c18513bd40a5a33cee72838bd")
    );

    // The table is the one drizzle creates.
    let reference = TestDb::new();
    reference.query(DRIZZLE_DDL);
    assert_eq!(
        table_shape(&db, "drizzle.__drizzle_migrations"),
        table_shape(&reference, "drizzle.__drizzle_migrations")
    );

    let again = db.migrate("apply", &["--layout", "drizzle", "--format", "json"]);
    again.expect(0);
    assert!(applied_names(&again).is_empty());
    assert_eq!(again.json()["skipped"], 3);
    assert_eq!(db.query(rows_sql), expected);

    let status = db
        .migrate("status", &["--layout", "drizzle", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(status["applied"].as_array().unwrap().len(), 3);
    assert_eq!(status["table"], "drizzle.__drizzle_migrations");
    db.migrate("verify", &["--layout", "drizzle"]).expect(0);
    // The tracking table and its schema are not the app's: no drift.
    db.migrate("drift", &["--layout", "drizzle"]).expect(0);
}

#[test]
fn a_database_half_migrated_by_drizzle_kit_is_finished_and_a_skipped_entry_is_applied_with_a_warning()
 {
    let db = TestDb::new();
    journal(
        &db,
        &[(1717000000000, "0000_init"), (1717000100000, "0001_posts")],
    );
    db.write("0000_init.sql", USERS);
    db.write("0001_posts.sql", POSTS);
    // drizzle-kit migrated the first entry.
    db.query(DRIZZLE_DDL);
    drizzle_kit_applies(&db, "0000_init", 1717000000000);
    // A branch generated 0002 before main's 0003 but merged after 0003 was deployed by
    // drizzle-kit: 0002's `when` is older than the newest row, so drizzle-kit would skip it.
    journal(
        &db,
        &[
            (1717000000000, "0000_init"),
            (1717000100000, "0001_posts"),
            (1717000200000, "0002_branch_tags"),
            (1717000300000, "0003_main_bio"),
        ],
    );
    db.write("0002_branch_tags.sql", TAGS);
    db.write(
        "0003_main_bio.sql",
        "ALTER TABLE \"users\" ADD COLUMN \"bio\" text;",
    );
    db.query("ALTER TABLE \"users\" ADD COLUMN \"bio\" text");
    db.query(&format!(
        "insert into \"drizzle\".\"__drizzle_migrations\" (\"hash\", \"created_at\") values('{}', 1717000300000)",
        sha256_hex("ALTER TABLE \"users\" ADD COLUMN \"bio\" text;")
    ));

    let plan = db.migrate("plan", &["--layout", "drizzle"]);
    plan.expect(0);
    assert!(
        plan.stdout.contains("drizzle-kit would skip it silently"),
        "{}",
        plan.stdout
    );
    let run = db.migrate("apply", &["--layout", "drizzle", "--format", "json"]);
    run.expect(0);
    assert_eq!(
        applied_names(&run),
        vec!["0001_posts.sql", "0002_branch_tags.sql"]
    );
    assert!(
        run.stderr
            .contains("0001_posts.sql: its journal `when` is older"),
        "{}",
        run.stderr
    );
    assert!(db.table_exists("posts") && db.table_exists("tags"));
    assert_eq!(
        db.query("SELECT id::text, created_at::text FROM drizzle.__drizzle_migrations ORDER BY id"),
        [
            (1, 1717000000000i64),
            (2, 1717000300000),
            (3, 1717000100000),
            (4, 1717000200000)
        ]
        .iter()
        .map(|(id, w)| vec![Some(id.to_string()), Some(w.to_string())])
        .collect::<Vec<_>>()
    );
    // drizzle-kit's own rule still sees nothing to do (max(created_at) did not move), and
    // flightplan agrees: the two tools can take turns.
    assert_eq!(
        db.scalar("SELECT max(created_at)::text FROM drizzle.__drizzle_migrations"),
        Some("1717000300000".into())
    );
    db.migrate("apply", &["--layout", "drizzle"]).expect(0);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM drizzle.__drizzle_migrations"),
        Some("4".into())
    );
}

#[test]
fn a_sqlx_folder_is_applied_in_version_order_with_sqlxs_own_rows_and_reapplied_as_a_no_op() {
    let db = TestDb::new();
    let create = "CREATE TABLE accounts (id bigserial PRIMARY KEY, email text NOT NULL, name text);\nINSERT INTO accounts (email) SELECT 'u' || g FROM generate_series(1, 100) g;\n";
    let up = "ALTER TABLE accounts ADD COLUMN created_at timestamptz DEFAULT now();\n";
    let index = "-- no-transaction\nCREATE INDEX CONCURRENTLY accounts_email ON accounts (email);\nCREATE INDEX CONCURRENTLY accounts_name ON accounts (name);\n";
    let last = "CREATE TABLE audit (id int);\n";
    db.write("20240101000000_create_accounts.sql", create);
    db.write("20240102000000_add_created_at.up.sql", up);
    db.write(
        "20240102000000_add_created_at.down.sql",
        "DROP TABLE accounts;\n",
    );
    db.write("20240103000000_index_email_and_name.sql", index);
    db.write("20240104000000_audit__log.sql", last);
    db.write("README.md", "# migrations\n");

    let run = db.migrate("apply", &["--layout", "sqlx", "--format", "json"]);
    run.expect(0);
    assert_eq!(
        applied_names(&run),
        vec![
            "20240101000000_create_accounts.sql",
            "20240102000000_add_created_at.up.sql",
            "20240103000000_index_email_and_name.sql",
            "20240104000000_audit__log.sql"
        ]
    );
    assert_eq!(run.json()["applied"][2]["transaction"], false);
    assert!(db.table_exists("accounts"), "the .down.sql file never runs");
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM pg_index WHERE indrelid = 'accounts'::regclass AND indisvalid AND NOT indisprimary"),
        Some("2".into())
    );
    assert!(!db.table_exists("_migrations"));

    // sqlx's deterministic columns: version, description (from the name: `_` → ` `, suffix
    // removed), success, SHA-384 of the file; installed_on and execution_time are times.
    let expected: Vec<Vec<Option<String>>> = [
        (20240101000000i64, "create accounts", create),
        (20240102000000, "add created at", up),
        (20240103000000, "index email and name", index),
        (20240104000000, "audit  log", last),
    ]
    .iter()
    .map(|(v, d, text)| {
        vec![
            Some(v.to_string()),
            Some(d.to_string()),
            Some("true".into()),
            Some(sha384_hex(text)),
        ]
    })
    .collect();
    let rows_sql = "SELECT version::text, description, success::text, encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version";
    assert_eq!(db.query(rows_sql), expected);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM _sqlx_migrations WHERE execution_time > 0 AND installed_on <= now()"),
        Some("4".into()),
        "execution_time in nanoseconds, as sqlx stores it"
    );
    let reference = TestDb::new();
    reference.query(SQLX_DDL);
    assert_eq!(
        table_shape(&db, "_sqlx_migrations"),
        table_shape(&reference, "_sqlx_migrations")
    );

    let before = db.query("SELECT version::text, installed_on::text, execution_time::text FROM _sqlx_migrations ORDER BY version");
    let again = db.migrate("apply", &["--layout", "sqlx", "--format", "json"]);
    again.expect(0);
    assert!(applied_names(&again).is_empty());
    assert_eq!(
        db.query("SELECT version::text, installed_on::text, execution_time::text FROM _sqlx_migrations ORDER BY version"),
        before
    );
    db.migrate("verify", &["--layout", "sqlx"]).expect(0);
    db.migrate("drift", &["--layout", "sqlx"]).expect(0);
}

#[test]
fn a_database_half_migrated_by_sqlx_is_finished_and_a_failed_no_transaction_file_is_dirty_until_resolved()
 {
    let db = TestDb::new();
    db.write(
        "1_create.sql",
        "CREATE TABLE t (a int);\nINSERT INTO t VALUES (1), (1);\n",
    );
    db.write("2_more.sql", "CREATE TABLE more (id int);\n");
    db.write(
        "3_unique.sql",
        "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY t_a_uq ON t (a);\n",
    );
    db.write("4_after.sql", "CREATE TABLE after_uq (id int);\n");
    // sqlx ran the first file.
    db.query(SQLX_DDL);
    sqlx_applies(&db, "1_create.sql", 1, "create");
    let sqlx_row = db.query("SELECT * FROM _sqlx_migrations");

    let run = db.migrate("apply", &["--layout", "sqlx", "--format", "json"]);
    run.expect(1);
    assert_eq!(applied_names(&run), vec!["2_more.sql"]);
    assert_eq!(
        db.query("SELECT * FROM _sqlx_migrations WHERE version = 1"),
        sqlx_row
    );
    // The failed concurrent build: success = false, which sqlx itself reports as Dirty.
    assert_eq!(
        db.query("SELECT success::text, (execution_time >= 0)::text FROM _sqlx_migrations WHERE version = 3"),
        vec![vec![Some("false".into()), Some("true".into())]]
    );
    assert!(!db.table_exists("after_uq"));
    let blocked = db.migrate("apply", &["--layout", "sqlx"]);
    blocked.expect(1);
    assert!(
        blocked
            .stderr
            .contains("3_unique.sql failed outside a transaction"),
        "{}",
        blocked.stderr
    );
    let status = db
        .migrate("status", &["--layout", "sqlx", "--format", "json"])
        .expect(0)
        .json();
    assert_eq!(status["failed"][0]["filename"], "3_unique.sql");
    assert_eq!(status["failed"][0]["status"], "failed");

    db.query("DELETE FROM t WHERE ctid IN (SELECT max(ctid) FROM t); DROP INDEX t_a_uq;");
    db.migrate("apply", &["--layout", "sqlx", "--retry-failed"])
        .expect(0);
    assert!(db.table_exists("after_uq"));
    assert_eq!(
        db.scalar("SELECT string_agg(version || ':' || success, ',' ORDER BY version) FROM _sqlx_migrations"),
        Some("1:true,2:true,3:true,4:true".into())
    );
}

#[test]
fn a_modified_file_is_detected_in_each_layout_and_blocks_apply() {
    // drizzle
    let db = TestDb::new();
    journal(&db, &[(1717000000000, "0000_init")]);
    db.write("0000_init.sql", USERS);
    db.migrate("apply", &["--layout", "drizzle"]).expect(0);
    journal(
        &db,
        &[(1717000000000, "0000_init"), (1717000100000, "0001_posts")],
    );
    db.write("0001_posts.sql", POSTS);
    let edited = USERS.replace("\"email\" text NOT NULL", "\"email\" varchar(320) NOT NULL");
    db.write("0000_init.sql", &edited);
    let verify = db.migrate("verify", &["--layout", "drizzle", "--format", "json"]);
    verify.expect(1);
    let err = &verify.json()["error"];
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("0000_init.sql was modified after it was applied"),
        "{err}"
    );
    assert!(err["file"].as_str().unwrap().ends_with("0000_init.sql"));
    assert!(
        err["hint"].as_str().unwrap().contains(&format!(
            "UPDATE \"drizzle\".\"__drizzle_migrations\" SET hash = '{}' WHERE created_at = 1717000000000",
            sha256_hex(&edited)
        )),
        "{err}"
    );
    db.migrate("apply", &["--layout", "drizzle"]).expect(1);
    assert!(
        !db.table_exists("posts"),
        "nothing runs while an applied file is modified"
    );

    // sqlx: an edit, then only a change of line endings (sqlx's checksum sees it too).
    let db = TestDb::new();
    db.write("1_a.sql", "CREATE TABLE a (id int);\n");
    db.migrate("apply", &["--layout", "sqlx"]).expect(0);
    db.write("2_b.sql", "CREATE TABLE b (id int);\n");
    db.write("1_a.sql", "CREATE TABLE a (id bigint);\n");
    let apply = db.migrate("apply", &["--layout", "sqlx", "--format", "json"]);
    apply.expect(1);
    assert_eq!(apply.json()["modified"][0]["filename"], "1_a.sql");
    assert_eq!(apply.json()["modified"][0]["line_endings_only"], false);
    assert!(!db.table_exists("b"));
    db.write("1_a.sql", "CREATE TABLE a (id int);\r\n");
    let verify = db.migrate("verify", &["--layout", "sqlx"]);
    verify.expect(1);
    assert!(
        verify.stderr.contains("only its line endings differ"),
        "{}",
        verify.stderr
    );
    db.write("1_a.sql", "CREATE TABLE a (id int);\n");
    db.migrate("apply", &["--layout", "sqlx"]).expect(0);
    assert!(db.table_exists("b"));

    // flat, for completeness: the same report.
    let db = TestDb::new();
    db.write("001_a.sql", "CREATE TABLE a (id int);\n");
    db.migrate("apply", &[]).expect(0);
    db.write("001_a.sql", "CREATE TABLE a (id bigint);\n");
    let verify = db.migrate("verify", &[]);
    verify.expect(1);
    assert!(
        verify.stderr.contains("001_a.sql was modified"),
        "{}",
        verify.stderr
    );
}

#[test]
fn bad_layout_inputs_exit_2_before_the_database_is_touched() {
    let db = TestDb::new();
    // drizzle: no journal; then a journal entry without its file.
    db.write("0000_init.sql", USERS);
    let r = db.migrate("apply", &["--layout", "drizzle"]);
    r.expect(2);
    assert!(r.stderr.contains("meta/_journal.json"), "{}", r.stderr);
    journal(
        &db,
        &[(1717000000000, "0000_init"), (1717000100000, "0001_gone")],
    );
    let r = db.migrate("apply", &["--layout", "drizzle", "--format", "json"]);
    r.expect(2);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("journal entry 1 (0001_gone) has no file"),
        "{}",
        r.stdout
    );
    assert!(!db.table_exists("drizzle.__drizzle_migrations"));

    // sqlx: two files with one version.
    let db = TestDb::new();
    db.write("1_a.sql", "CREATE TABLE a (id int);\n");
    db.write("01_b.up.sql", "CREATE TABLE b (id int);\n");
    let r = db.migrate("apply", &["--layout", "sqlx"]);
    r.expect(2);
    assert!(
        r.stderr
            .contains("01_b.up.sql and 1_a.sql have the same version 1"),
        "{}",
        r.stderr
    );
    assert!(!db.table_exists("_sqlx_migrations") && !db.table_exists("a"));

    // The config file's layout is used; an unknown one is refused with where it is.
    std::fs::write(
        db.dir.path().join("flightplan.toml"),
        "[migrate]\nlayout = \"liquibase\"\n",
    )
    .unwrap();
    let r = db.migrate("status", &[]);
    r.expect(2);
    assert!(r.stderr.contains("not a known layout"), "{}", r.stderr);
    std::fs::remove_file(db.migrations().join("01_b.up.sql")).unwrap();
    std::fs::write(
        db.dir.path().join("flightplan.toml"),
        "[migrate]\nlayout = \"sqlx\"\n",
    )
    .unwrap();
    db.migrate("apply", &[]).expect(0);
    assert!(db.table_exists("_sqlx_migrations") && db.table_exists("a"));

    // A table of another layout is named as such, not misread.
    let r = db.migrate(
        "status",
        &["--layout", "flat", "--table", "_sqlx_migrations"],
    );
    r.expect(2);
    assert!(
        r.stderr.contains("has no `filename` column") && r.stderr.contains("layout"),
        "{}",
        r.stderr
    );
}

#[test]
fn adopt_records_a_db_push_database_in_drizzles_table() {
    let db = TestDb::new();
    journal(
        &db,
        &[(1717000000000, "0000_init"), (1717000100000, "0001_posts")],
    );
    db.write("0000_init.sql", USERS);
    db.write("0001_posts.sql", POSTS);
    // `drizzle-kit push` built the schema and wrote no tracking table.
    for piece in USERS.split("--> statement-breakpoint") {
        db.query(piece);
    }
    let look = db.migrate("adopt", &["--layout", "drizzle", "--format", "json"]);
    look.expect(0);
    let files = look.json()["files"].as_array().unwrap().clone();
    assert_eq!(files[0]["filename"], "0000_init.sql");
    assert_eq!(files[0]["adoptable"], true, "{}", look.stdout);
    assert_eq!(files[1]["adoptable"], false);

    db.migrate("adopt", &["--layout", "drizzle", "--yes"])
        .expect(0);
    assert_eq!(
        db.query("SELECT id::text, hash, created_at::text FROM drizzle.__drizzle_migrations"),
        vec![vec![
            Some("1".into()),
            Some(sha256_hex(USERS)),
            Some("1717000000000".into())
        ]]
    );
    db.migrate("apply", &["--layout", "drizzle"]).expect(0);
    assert!(db.table_exists("posts"));
    db.migrate("drift", &["--layout", "drizzle"]).expect(0);
}

#[test]
fn a_failure_inside_a_batch_is_attributed_to_its_file_in_the_keyed_layouts() {
    // drizzle: the ledger read after the failure is keyed by `when`.
    let db = TestDb::new();
    journal(
        &db,
        &[
            (1717000000000, "0000_init"),
            (1717000100000, "0001_bad"),
            (1717000200000, "0002_later"),
        ],
    );
    db.write("0000_init.sql", USERS);
    db.write(
        "0001_bad.sql",
        "CREATE TABLE half (id int);\n--> statement-breakpoint\nALTER TABLE half ADD COLUMN x intt;",
    );
    db.write("0002_later.sql", "CREATE TABLE later (id int);");
    let run = db.migrate("apply", &["--layout", "drizzle", "--format", "json"]);
    run.expect(1);
    assert_eq!(applied_names(&run), vec!["0000_init.sql"]);
    let err = &run.json()["error"];
    assert!(
        err["file"].as_str().unwrap().ends_with("0001_bad.sql"),
        "{err}"
    );
    assert_eq!(
        (err["line"].as_i64(), err["code"].as_str()),
        (Some(3), Some("42704"))
    );
    assert!(!db.table_exists("half") && !db.table_exists("later"));
    assert_eq!(
        db.scalar("SELECT string_agg(created_at::text, ',') FROM drizzle.__drizzle_migrations"),
        Some("1717000000000".into())
    );

    // sqlx: keyed by version.
    let db = TestDb::new();
    db.write("1_ok.sql", "CREATE TABLE ok (id int);\n");
    db.write("2_bad.sql", "SELECT 1;\nSELEC 2;\n");
    db.write("3_later.sql", "CREATE TABLE later (id int);\n");
    let run = db.migrate("apply", &["--layout", "sqlx", "--format", "json"]);
    run.expect(1);
    assert_eq!(applied_names(&run), vec!["1_ok.sql"]);
    assert!(
        run.json()["error"]["file"]
            .as_str()
            .unwrap()
            .ends_with("2_bad.sql")
    );
    assert_eq!(run.json()["error"]["line"], 2);
    assert_eq!(
        db.scalar("SELECT string_agg(version::text, ',') FROM _sqlx_migrations"),
        Some("1".into())
    );
}
