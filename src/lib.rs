//! flightplan: a production deployment runbook as one binary. This library is the
//! binary's engine; its API is internal and not covered by semver.

pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod deploy;
pub mod error;
pub mod fly;
pub mod http;
pub mod migrate;
pub mod output;
pub mod pipeline;
pub mod preflight;
pub mod redact;
pub mod rehearse;
pub mod report;
pub mod signal;
pub mod smoke;

use std::time::Duration;

use cli::{Cli, Command, MigrateArgs, MigrateCommand, SmokeArgs};
use config::Loaded;
use error::Error;
use output::Outcome;

/// Runs one parsed command line. `env` is the environment lookup (injected for tests).
pub async fn run(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Outcome, Error> {
    let loaded = Loaded::load(cli.config.as_deref(), env)?;
    match &cli.command {
        Command::Backup(cmd) => {
            backup::run(cmd, &backup::settings(cmd.args(), &loaded, env)?).await
        }
        Command::CheckEnv(args) => preflight::check_env(args, &loaded, env).await,
        Command::Deploy(args) => deploy::deploy(args, &loaded, env).await,
        Command::Rollback(args) => pipeline::rollback(args, &loaded, env).await,
        Command::Smoke(a) => smoke::run(&smoke_settings(a, &loaded, env)?).await,
        Command::Report { log } => report::render(log),
        Command::Rehearse(a) => rehearse::run(a, &loaded, env).await,
        Command::Run(a) => {
            let image = a
                .image
                .clone()
                .or_else(|| env("INPUT_IMAGE").filter(|v| !v.trim().is_empty()));
            let dry_run = a.dry_run || env("INPUT_DRY-RUN").is_some_and(|v| v.trim() == "true");
            let env_file = a.env_file.clone().or_else(|| {
                env("INPUT_ENV-FILE")
                    .filter(|v| !v.trim().is_empty())
                    .map(Into::into)
            });
            let file = env_file
                .as_deref()
                .map(preflight::dotenv::EnvFile::read)
                .transpose()?;
            // The file fills in what the process environment leaves unset or empty.
            let layered = |k: &str| {
                env(k).filter(|v| !v.is_empty()).or_else(|| {
                    file.as_ref()
                        .and_then(|f| f.get(k))
                        .map(|(v, _)| v.to_string())
                })
            };
            let args = pipeline::RunArgs {
                image,
                dry_run,
                env_file,
            };
            pipeline::run(args, &loaded, &layered).await
        }
        Command::Migrate(cmd) => match cmd {
            MigrateCommand::Status(a) => migrate::status(&migrate_settings(a, &loaded, env)?).await,
            MigrateCommand::Plan(a) => migrate::plan(&migrate_settings(a, &loaded, env)?).await,
            MigrateCommand::Verify(a) => migrate::verify(&migrate_settings(a, &loaded, env)?).await,
            MigrateCommand::Apply { args, retry_failed } => {
                migrate::apply(&migrate_settings(args, &loaded, env)?, *retry_failed).await
            }
            MigrateCommand::Drift(a) => migrate::drift(&migrate_settings(a, &loaded, env)?).await,
            MigrateCommand::Adopt { args, yes } => {
                migrate::adopt(&migrate_settings(args, &loaded, env)?, *yes).await
            }
            MigrateCommand::MarkApplied { args, files } => {
                migrate::mark_applied(&migrate_settings(args, &loaded, env)?, files).await
            }
        },
    }
}

/// Resolves the migrate settings: flag, then environment, then `[migrate]`, then default.
pub(crate) fn migrate_settings(
    a: &MigrateArgs,
    loaded: &Loaded,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<migrate::Settings, Error> {
    let f = &loaded.file.migrate;
    let raw_url = a.database_url.clone().filter(|u| !u.is_empty()).ok_or_else(|| {
        Error::usage("no database: set DATABASE_URL or pass --database-url")
            .hint("use the direct (not pooled) PostgreSQL URL, e.g. postgres://USER:PASSWORD@HOST:5432/DB")
    })?;
    let url = db::DatabaseUrl::parse(&raw_url)?;
    let dir = match (&a.dir, &f.dir) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => loaded.resolve_path(d),
        (None, None) => loaded.resolve_path(std::path::Path::new("migrations")),
    };
    let layout = match (a.layout, &f.layout) {
        (Some(l), _) => l,
        (None, Some(name)) => migrate::Layout::parse(name).ok_or_else(|| {
            Error::usage(format!("[migrate] layout = \"{name}\" is not a known layout"))
                .file(loaded.describe("[migrate] layout"))
                .hint("use \"flat\" (every *.sql file in byte order of name, _migrations), \"drizzle\" (drizzle-kit's meta/_journal.json, drizzle.__drizzle_migrations) or \"sqlx\" (<version>_<description>.sql, _sqlx_migrations); see docs/layouts.md")
        })?,
        (None, None) => migrate::Layout::Flat,
    };
    let table = a
        .table
        .clone()
        .or_else(|| f.table.clone())
        .unwrap_or_else(|| layout.default_table().into());
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if table.split('.').count() > 2 || !table.split('.').all(valid_part) {
        return Err(Error::usage(format!("`{table}` is not a usable table name"))
            .hint("use letters, digits and underscores, optionally schema-qualified: _migrations or ops._migrations"));
    }
    let duration = |flag: &Option<String>,
                    file: &Option<config::DurationValue>,
                    key: &str,
                    default: Duration|
     -> Result<Duration, Error> {
        match (flag, file) {
            (Some(v), _) => config::parse_duration(v)
                .map_err(|e| Error::usage(format!("--{}: {e}", key.replace('_', "-")))),
            (None, Some(v)) => v.to_duration().map_err(|e| {
                Error::usage(format!("[migrate] {key}: {e}"))
                    .file(loaded.describe(&format!("[migrate] {key}")))
            }),
            (None, None) => Ok(default),
        }
    };
    let statement_timeout = duration(
        &a.statement_timeout,
        &f.statement_timeout,
        "statement_timeout",
        Duration::ZERO,
    )?;
    let actor = env("GITHUB_ACTOR")
        .or_else(|| env("USER"))
        .unwrap_or_else(|| "unknown".into());
    Ok(migrate::Settings {
        url,
        dir,
        layout,
        table,
        lock_wait: duration(
            &a.lock_wait,
            &f.lock_wait,
            "lock_wait",
            Duration::from_secs(600),
        )?,
        lock_timeout: duration(
            &a.lock_timeout,
            &f.lock_timeout,
            "lock_timeout",
            Duration::from_secs(5),
        )?,
        statement_timeout: (!statement_timeout.is_zero()).then_some(statement_timeout),
        lock_retries: f.lock_retries.unwrap_or(3),
        connect_timeout: match &a.connect_timeout {
            Some(v) => config::parse_duration(v)
                .map_err(|e| Error::usage(format!("--connect-timeout: {e}")))?,
            None => Duration::from_secs(30),
        },
        applied_by: format!("flightplan {} ({actor})", env!("CARGO_PKG_VERSION")),
        progress: true,
    })
}

/// Resolves the smoke settings: the app URL from `--url`, `INPUT_URL`, `APP_URL`, then
/// `app_url`; the watch window from `--watch`, `INPUT_WATCH`, then `[watch] duration`.
pub(crate) fn smoke_settings(
    a: &SmokeArgs,
    loaded: &Loaded,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<smoke::Settings, Error> {
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let base = match (
        &a.url,
        set("INPUT_URL"),
        set("APP_URL"),
        &loaded.file.app_url,
    ) {
        (Some(u), ..) => smoke::parse_base(u, "--url")?,
        (None, Some(u), ..) => smoke::parse_base(&u, "INPUT_URL")?,
        (None, None, Some(u), _) => smoke::parse_base(&u, "APP_URL")?,
        (None, None, None, Some(u)) => {
            smoke::parse_base(u, "app_url").map_err(|e| e.file(loaded.describe("app_url")))?
        }
        (None, None, None, None) => {
            return Err(Error::usage("no app URL to smoke-test").hint(
                "pass --url https://APP.fly.dev, set APP_URL, or set app_url in flightplan.toml",
            ));
        }
    };
    let watch = match (&a.watch, set("INPUT_WATCH")) {
        (Some(w), _) => {
            Some(config::parse_duration(w).map_err(|e| Error::usage(format!("--watch: {e}")))?)
        }
        (None, Some(w)) => Some(
            config::parse_duration(&w).map_err(|e| Error::usage(format!("INPUT_WATCH: {e}")))?,
        ),
        (None, None) => loaded.file.watch.duration,
    };
    smoke::Settings::resolve(base, watch, loaded, env)
}
