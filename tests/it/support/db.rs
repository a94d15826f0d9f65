//! Shared test support: a scratch database per test on the real PostgreSQL, and the built
//! binary run as a real process.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

/// The server tests create their databases on. Override with FLIGHTPLAN_TEST_ADMIN_URL.
pub fn admin_url() -> String {
    std::env::var("FLIGHTPLAN_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs SQL on `url` and returns every row as text columns (NULL as None).
pub fn query_url(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    runtime().block_on(async {
        let mut conn = PgConnection::connect(url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {url}: {e}\n\
                 The tests need a real PostgreSQL: start one with `scripts/with-postgres true`, \
                 or point FLIGHTPLAN_TEST_ADMIN_URL at a server where this user may create databases."
            )
        });
        let rows = sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("test SQL failed: {e}\n{sql}"));
        let _ = conn.close().await;
        rows.iter()
            .map(|r| (0..r.len()).map(|i| r.try_get::<Option<String>, _>(i).ok().flatten()).collect())
            .collect()
    })
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A database that exists for one test and is dropped (forcibly) afterwards.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub fn new() -> TestDb {
        let name = format!(
            "fp_test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            rand::random_range(0..1_000_000u32)
        );
        query_url(&admin_url(), &format!("CREATE DATABASE {name}"));
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&name);
        TestDb {
            name,
            url: url.to_string(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Rows of a query on this database, as text.
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        query_url(&self.url, sql)
    }

    /// The single value of a query.
    pub fn scalar(&self, sql: &str) -> Option<String> {
        self.query(sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .flatten()
    }

    pub fn table_exists(&self, table: &str) -> bool {
        self.scalar(&format!(
            "SELECT (to_regclass('{table}') IS NOT NULL)::text"
        ))
        .as_deref()
            == Some("true")
    }

    /// The ledger as (filename, status) in id order.
    pub fn ledger(&self) -> Vec<(String, String)> {
        self.query(
            "SELECT filename::text, coalesce(status, 'applied') FROM _migrations ORDER BY id",
        )
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect()
    }

    /// The migrations directory of this test (created on first write).
    pub fn migrations(&self) -> PathBuf {
        let d = self.dir.path().join("migrations");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    pub fn write(&self, name: &str, sql: &str) -> PathBuf {
        let p = self.migrations().join(name);
        std::fs::write(&p, sql).unwrap();
        p
    }

    /// The binary, with DATABASE_URL pointing here and the migrations dir as --dir.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
        c.args(args)
            .env("DATABASE_URL", &self.url)
            .env_remove("FLIGHTPLAN_CONFIG")
            .env_remove("GITHUB_ACTIONS")
            .env_remove("FLIGHTPLAN_LOG")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// `flightplan migrate <sub> --dir <migrations> [extra]`.
    pub fn migrate(&self, sub: &str, extra: &[&str]) -> Run {
        let dir = self.migrations();
        let mut args = vec!["migrate", sub, "--dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        Run::from(self.cmd(&args).output().unwrap())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var("FLIGHTPLAN_TEST_KEEP").is_err() {
            let _ = std::panic::catch_unwind(|| {
                query_url(
                    &admin_url(),
                    &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
                )
            });
        }
    }
}

/// A finished process: exit code and both streams as text.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The worked example's migrations.
pub fn example_migrations() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/secure2send/migrations")
}

/// Copies the example's migrations into the test's directory.
pub fn copy_example(db: &TestDb) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(example_migrations()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), db.migrations().join(e.file_name())).unwrap();
        names.push(e.file_name().into_string().unwrap());
    }
    names.sort();
    names
}
