//! Hostile and broken input, table-driven: each case is set up on a fresh scratch database,
//! run as a process, and must exit 2 (or 1) with a message naming what to fix, change
//! nothing (no tracking table), and print no secret. A second table holds inputs that look
//! hostile but are valid (BOMs, CRLF, odd file names, a 50 MB file, encoded passwords):
//! they must apply exactly.

use std::path::Path;

use crate::support::db::{Run, TestDb};

const DB_PASSWORD: &str = "canaryInputPwYYYY";

fn url_with_password(db: &TestDb) -> String {
    let mut u = url::Url::parse(&db.url).unwrap();
    u.set_password(Some(DB_PASSWORD)).unwrap();
    u.to_string()
}

/// A case's command line and the environment variables it sets.
type Setup = (Vec<String>, Vec<(&'static str, String)>);

/// One bad input: how to set it up (returns the arguments), the exit codes accepted, and
/// what the message must contain (lower-case match) so a person knows what to fix.
struct Bad {
    name: &'static str,
    setup: fn(&TestDb) -> Setup,
    codes: &'static [i32],
    says: &'static [&'static str],
}

fn config(db: &TestDb, text: &str) -> Vec<String> {
    let p = db.dir.path().join("flightplan.toml");
    std::fs::write(&p, text).unwrap();
    vec![
        "--config".into(),
        p.display().to_string(),
        "migrate".into(),
        "apply".into(),
    ]
}

fn apply(db: &TestDb) -> Vec<String> {
    vec![
        "migrate".into(),
        "apply".into(),
        "--dir".into(),
        db.migrations().display().to_string(),
    ]
}

fn good_file(db: &TestDb) {
    db.write("001_ok.sql", "CREATE TABLE ok (id int);\n");
}

fn bad_cases() -> Vec<Bad> {
    vec![
        Bad {
            name: "invalid TOML",
            setup: |db| {
                good_file(db);
                (config(db, "app = \n[migrate\n"), vec![])
            },
            codes: &[2],
            says: &["invalid config file", "flightplan.toml"],
        },
        Bad {
            name: "wrong type",
            setup: |db| {
                good_file(db);
                (config(db, "[migrate]\nlock_retries = \"three\"\n"), vec![])
            },
            codes: &[2],
            says: &["invalid type", "lock_retries"],
        },
        Bad {
            name: "unknown key, with a suggestion",
            setup: |db| {
                good_file(db);
                (config(db, "[migrate]\ndirr = \"migrations\"\n"), vec![])
            },
            codes: &[2],
            says: &["dirr", "did you mean `dir`"],
        },
        Bad {
            name: "unknown section, with a suggestion",
            setup: |db| {
                good_file(db);
                (config(db, "[deploi]\nprovider = \"fly\"\n"), vec![])
            },
            codes: &[2],
            says: &["deploi", "did you mean `deploy`"],
        },
        Bad {
            name: "config file unreadable (a directory)",
            setup: |db| {
                good_file(db);
                let p = db.dir.path().join("cfg.toml");
                std::fs::create_dir_all(&p).unwrap();
                (
                    vec![
                        "--config".into(),
                        p.display().to_string(),
                        "migrate".into(),
                        "apply".into(),
                    ],
                    vec![],
                )
            },
            codes: &[2],
            says: &["cannot read config file"],
        },
        Bad {
            name: "migration file unreadable (dangling link)",
            setup: |db| {
                good_file(db);
                std::os::unix::fs::symlink(
                    "/nonexistent/flightplan",
                    db.migrations().join("002_gone.sql"),
                )
                .unwrap();
                (apply(db), vec![])
            },
            codes: &[2],
            says: &["002_gone.sql"],
        },
        Bad {
            name: "migrations directory missing",
            setup: |db| {
                (
                    vec![
                        "migrate".into(),
                        "apply".into(),
                        "--dir".into(),
                        db.dir.path().join("nope").display().to_string(),
                    ],
                    vec![],
                )
            },
            codes: &[2],
            says: &["nope"],
        },
        Bad {
            name: "binary SQL",
            setup: |db| {
                good_file(db);
                std::fs::write(
                    db.migrations().join("002_bin.sql"),
                    [0x7f, b'E', b'L', b'F', 0, 0xff, 0xfe, 1, 2, 3],
                )
                .unwrap();
                (apply(db), vec![])
            },
            codes: &[2],
            says: &["002_bin.sql", "utf-8"],
        },
        Bad {
            name: "Latin-1 SQL",
            setup: |db| {
                good_file(db);
                std::fs::write(
                    db.migrations().join("002_latin1.sql"),
                    b"INSERT INTO ok VALUES (1); -- caf\xe9\n",
                )
                .unwrap();
                (apply(db), vec![])
            },
            codes: &[2],
            says: &["002_latin1.sql", "utf-8"],
        },
        Bad {
            name: "NUL byte in SQL",
            setup: |db| {
                good_file(db);
                db.write("002_nul.sql", "SELECT 1;\0\n");
                (apply(db), vec![])
            },
            codes: &[2],
            says: &["002_nul.sql"],
        },
        Bad {
            name: "password with an unencoded #",
            setup: |db| {
                good_file(db);
                (
                    apply(db),
                    vec![(
                        "DATABASE_URL",
                        format!(
                            "postgres://postgres:{DB_PASSWORD}#x@127.0.0.1:5432/{}",
                            db.name
                        ),
                    )],
                )
            },
            codes: &[2],
            says: &["database_url", "percent-encode"],
        },
        Bad {
            name: "plain text to a remote database",
            setup: |db| {
                good_file(db);
                (
                    apply(db),
                    vec![(
                        "DATABASE_URL",
                        format!("postgres://u:{DB_PASSWORD}@db.example.com/app?sslmode=disable"),
                    )],
                )
            },
            codes: &[2],
            says: &["plain text", "sslmode=require"],
        },
        Bad {
            name: "plain http to a remote Fly API",
            setup: |_| {
                (
                    vec![
                        "deploy".into(),
                        "--image".into(),
                        "registry.fly.io/a:1".into(),
                    ],
                    vec![
                        ("FLY_API_URL", "http://api.machines.example.com".into()),
                        ("FLY_API_TOKEN", format!("FlyV1 fm2_{DB_PASSWORD}")),
                        ("FLY_APP", "a".into()),
                    ],
                )
            },
            codes: &[2],
            says: &["http"],
        },
        Bad {
            name: "plain http to a remote Neon API",
            setup: |_| {
                (
                    vec![
                        "backup".into(),
                        "create".into(),
                        "--provider".into(),
                        "neon".into(),
                    ],
                    vec![
                        ("NEON_API_URL", "http://console.example.com/api/v2".into()),
                        ("NEON_API_KEY", DB_PASSWORD.into()),
                        ("NEON_PROJECT_ID", "p".into()),
                    ],
                )
            },
            codes: &[2],
            says: &["http"],
        },
        Bad {
            name: "plain http to a remote app for smoke tests",
            setup: |_| {
                (
                    vec![
                        "smoke".into(),
                        "--url".into(),
                        "http://app.example.com".into(),
                    ],
                    vec![("SMOKE_USER_PASSWORD", DB_PASSWORD.into())],
                )
            },
            codes: &[2],
            says: &["plain http"],
        },
        Bad {
            name: "env file unreadable",
            setup: |db| {
                let cfg = db.dir.path().join("flightplan.toml");
                std::fs::write(&cfg, "[env.APP_KEY]\nrequired = true\n").unwrap();
                (
                    vec![
                        "--config".into(),
                        cfg.display().to_string(),
                        "check-env".into(),
                        "--env-file".into(),
                        db.dir.path().join("missing.env").display().to_string(),
                    ],
                    vec![],
                )
            },
            codes: &[2],
            says: &["missing.env"],
        },
    ]
}

#[track_caller]
fn assert_no_secret(r: &Run, context: &str) {
    for probe in [
        DB_PASSWORD,
        &DB_PASSWORD[..8],
        &DB_PASSWORD[DB_PASSWORD.len() - 8..],
    ] {
        for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            let hit = text
                .lines()
                .filter(|l| !l.starts_with("::add-mask::"))
                .any(|l| l.contains(probe));
            assert!(!hit, "{context}: secret fragment in {name}:\n{text}");
        }
    }
}

#[test]
fn bad_input_is_refused_with_an_actionable_message_and_changes_nothing() {
    let cases = bad_cases();
    for c in &cases {
        let db = TestDb::new();
        let (args, env) = (c.setup)(&db);
        let mut cmd = db.cmd(&args.iter().map(String::as_str).collect::<Vec<_>>());
        cmd.env("DATABASE_URL", url_with_password(&db));
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.output().unwrap());
        assert!(
            c.codes.contains(&run.code),
            "{}: exit {} (expected {:?})\nstdout:\n{}\nstderr:\n{}",
            c.name,
            run.code,
            c.codes,
            run.stdout,
            run.stderr
        );
        let all = format!("{}\n{}", run.stdout, run.stderr).to_lowercase();
        for s in c.says {
            assert!(
                all.contains(&s.to_lowercase()),
                "{}: the message should say `{s}`:\n{}",
                c.name,
                run.stderr
            );
        }
        assert!(
            !db.table_exists("_migrations"),
            "{}: the tracking table was created",
            c.name
        );
        assert!(!db.table_exists("ok"), "{}: a migration ran", c.name);
        assert_no_secret(&run, c.name);
    }
    eprintln!("FAULTS: bad inputs refused={}", cases.len());
}

#[test]
fn odd_but_valid_input_applies_exactly() {
    let db = TestDb::new();
    // A BOM and CRLF line endings (a file saved on Windows).
    db.write(
        "001_windows.sql",
        "\u{feff}CREATE TABLE win (id int);\r\nINSERT INTO win VALUES (1);\r\n",
    );
    // Names with spaces, quotes and shell metacharacters are data, never shell.
    let odd = "002 it's \"quoted\" $(touch pwned) `touch pwned2`; rm -rf x & |.sql";
    db.write(odd, "CREATE TABLE odd (id int);\n");
    // 50 MB in one dollar-quoted literal: the splitter, the batcher and the server cope.
    let mut big = String::with_capacity(50 << 20);
    big.push_str("CREATE TABLE big (t text);\nINSERT INTO big VALUES ($fp$");
    let line = "0123456789abcdef; -- not a comment ' \" $$ inside a literal\n";
    while big.len() < 50 << 20 {
        big.push_str(line);
    }
    big.push_str("$fp$);\n");
    db.write("003_big.sql", &big);
    drop(big);

    // A percent-encoded password full of URL delimiters.
    let mut u = url::Url::parse(&db.url).unwrap();
    u.set_password(Some("p%40ss%3Aw%2Fo%23rd%3F%25%20canaryInputPw"))
        .unwrap();
    let mut cmd = db.cmd(&[
        "migrate",
        "apply",
        "--dir",
        db.migrations().to_str().unwrap(),
    ]);
    cmd.env("DATABASE_URL", u.to_string());
    let run = Run::from(cmd.output().unwrap());
    run.expect(0);
    let names: Vec<String> = db.ledger().into_iter().map(|(f, _)| f).collect();
    assert_eq!(names, vec!["001_windows.sql", odd, "003_big.sql"]);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM win").as_deref(),
        Some("1")
    );
    assert!(db.table_exists("odd"));
    assert_eq!(
        db.scalar("SELECT (length(t) > 50000000)::text FROM big")
            .as_deref(),
        Some("true")
    );
    for p in [db.dir.path(), db.migrations().as_path(), Path::new(".")] {
        assert!(!p.join("pwned").exists() && !p.join("pwned2").exists());
    }
    for probe in ["p%40ss", "p@ss", "canaryInputPw"] {
        assert!(
            !run.stderr.contains(probe) && !run.stdout.contains(probe),
            "{}",
            run.stderr
        );
    }
    // The CRLF file's checksum is the LF file's: converting line endings is not a change.
    std::fs::write(
        db.migrations().join("001_windows.sql"),
        "\u{feff}CREATE TABLE win (id int);\nINSERT INTO win VALUES (1);\n",
    )
    .unwrap();
    db.migrate("verify", &[]).expect(0);
}

#[test]
fn a_plain_http_github_api_is_not_sent_the_token() {
    let db = TestDb::new();
    good_file(&db);
    let cfg = db.dir.path().join("flightplan.toml");
    std::fs::write(
        &cfg,
        format!(
            "[migrate]\ndir = \"{}\"\n[backup]\nprovider = \"none\"\n[deploy]\nprovider = \"none\"\n[smoke]\nenabled = false\n",
            db.migrations().display()
        ),
    )
    .unwrap();
    let mut cmd = db.cmd(&["--config", cfg.to_str().unwrap(), "run"]);
    cmd.env("DATABASE_URL", url_with_password(&db))
        .env("GITHUB_TOKEN", format!("ghs_{DB_PASSWORD}"))
        .env("GITHUB_REPOSITORY", "acme/app")
        .env("GITHUB_SHA", "9f3c2a1b0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b")
        .env("GITHUB_API_URL", "http://github.example.com/api/v3");
    let run = Run::from(cmd.output().unwrap());
    run.expect(0);
    assert!(
        run.stderr.contains("GitHub reporting is off") && run.stderr.contains("not https://"),
        "{}",
        run.stderr
    );
    assert_no_secret(&run, "plain http GitHub");
}
