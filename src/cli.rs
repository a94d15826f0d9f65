//! The command line: every command, flag and environment variable, and their help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A production deployment runbook as one binary.
///
/// Exit codes: 0 done; 1 it ran and something failed (a check, a migration); 2 bad usage,
/// configuration or input, found before anything was changed.
#[derive(Debug, Parser)]
#[command(name = "flightplan", version, max_term_width = 100)]
pub struct Cli {
    /// Config file [default: $FLIGHTPLAN_CONFIG, else ./flightplan.toml if present]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Output format: text for people, json for one JSON document on stdout (logs stay on stderr)
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    #[command(subcommand)]
    pub command: Command,
}

pub use crate::output::Format;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the app's environment contract ([env] in the config) before anything changes
    /// (the runbook's phases 1, 3 and 5); exit 1 when a rule fails
    CheckEnv(CheckEnvArgs),
    /// Back up the database before migrating (a Neon branch or a pg_dump archive), list,
    /// restore and prune backups (the runbook's phase 2)
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Render a saved deployment log (the JSON written by `run`) as Markdown on stdout
    Report {
        /// The JSON log file
        #[arg(long, value_name = "FILE")]
        log: PathBuf,
    },
    /// The whole runbook: check-env, backup, migrate, deploy, smoke (rolling back on
    /// failure), then the deployment log to the summary, the PR, Deployments and outputs
    Run(RunArgs),
    /// Apply and inspect SQL migrations (the runbook's phase 4)
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Smoke-test the deployed app: health, login and configured checks with warm-up
    /// retries and latency budgets, then an optional watch window (the runbook's phase 6)
    Smoke(SmokeArgs),
    /// Roll a new image onto the app's machines: leases, batches, health checks, and every
    /// changed machine put back if anything fails (the runbook's phase 5)
    Deploy(DeployArgs),
    /// Put the machines back on the image the last deploy replaced, or roll forward to
    /// --image; optionally restore the database from a backup first
    Rollback(RollbackArgs),
    /// Try the pending migrations on a short-lived copy of production (a Neon branch, or a
    /// scratch database restored from pg_dump) and report timings, locks and warnings to
    /// the summary and the pull request; production is only read; exit 1 when a file fails
    Rehearse(RehearseArgs),
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// List applied, pending, modified, missing and failed migrations (read-only)
    Status(MigrateArgs),
    /// Show what `apply` would run, in order, with transaction mode and checksum (read-only)
    Plan(MigrateArgs),
    /// Apply pending migrations, each in its own transaction, under a lock
    Apply {
        #[command(flatten)]
        args: MigrateArgs,
        /// Re-run `-- no-transaction` files recorded as failed (fix what they left first)
        #[arg(long)]
        retry_failed: bool,
    },
    /// Lint the pending files with squawk's rules and flightplan's context (every file when
    /// no database is given); no copy, no secrets needed; exit 1 when a finding is reported
    Lint(MigrateArgs),
    /// Check that every applied migration is unchanged on disk; exit 1 if not
    Verify(MigrateArgs),
    /// Compare the database's schema with what its applied files build in a scratch
    /// database; exit 1 on any difference (finds what `db:push` or a hand-run ALTER did)
    Drift(MigrateArgs),
    /// Show which pending files' changes are already in the database; with --yes, record
    /// the fully present ones as applied (the runbook's manual INSERT, made safe)
    Adopt {
        #[command(flatten)]
        args: MigrateArgs,
        /// Record the fully present files as applied
        #[arg(long)]
        yes: bool,
    },
    /// Record files as applied without running them (only if you are certain they were)
    MarkApplied {
        #[command(flatten)]
        args: MigrateArgs,
        /// Migration file names (or paths) in the migrations directory
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
}

#[derive(Debug, Clone, Default, Args)]
pub struct MigrateArgs {
    /// PostgreSQL URL of the database; use the direct URL, not a pooled one
    /// [default: $DATABASE_URL]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Migrations directory [default: [migrate] dir, else "migrations"]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Tracking table, optionally schema-qualified [default: [migrate] table, else the
    /// layout's: _migrations, drizzle.__drizzle_migrations or _sqlx_migrations]
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,

    /// How the directory is laid out, and which tool's tracking table goes with it: flat
    /// (*.sql in byte order), drizzle (drizzle-kit's journal), sqlx (<version>_<name>.sql)
    /// [default: [migrate] layout, else flat]
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub layout: Option<crate::migrate::Layout>,

    /// How long to wait for another runner's migration lock [default: 10m]
    #[arg(long, value_name = "DURATION")]
    pub lock_wait: Option<String>,

    /// `SET LOCAL lock_timeout` for every migration [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub lock_timeout: Option<String>,

    /// `SET LOCAL statement_timeout` for every migration; 0 leaves the server's [default: 0]
    #[arg(long, value_name = "DURATION")]
    pub statement_timeout: Option<String>,

    /// How long to keep trying to connect while the server refuses connections or is
    /// starting (a restarting database, a compute waking up) [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct CheckEnvArgs {
    /// Dotenv file with the app's variables (KEY=value); a non-empty variable of the process
    /// environment wins over the file [default: INPUT_ENV-FILE inside an action]
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,

    /// Also ask the Fly Machines API (FLY_API_TOKEN, FLY_APP or `app`, FLY_API_URL) which
    /// secrets the contract expects are not set in the app [default: INPUT_FLY]
    #[arg(long)]
    pub fly: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct SmokeArgs {
    /// Base URL of the app [default: INPUT_URL inside an action, else $APP_URL, else app_url
    /// in the config]
    #[arg(long, value_name = "BASE")]
    pub url: Option<String>,

    /// After the checks pass, poll them this long and judge p95 latency and error rate
    /// [default: INPUT_WATCH inside an action, else [watch] duration, else no watch]
    #[arg(long, value_name = "DURATION")]
    pub watch: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take a verified backup now; prints its id
    Create(BackupArgs),
    /// List flightplan's backups (and only them), newest first
    List(BackupArgs),
    /// Restore the database from a backup; discards every write made since (needs --yes)
    Restore {
        #[command(flatten)]
        args: BackupArgs,
        /// The backup's id or name, as `backup list` shows it (pg_dump: also a path)
        #[arg(value_name = "ID")]
        id: String,
        /// Confirm that the database's current state is replaced by the backup's
        #[arg(long)]
        yes: bool,
    },
    /// Delete flightplan's oldest backups beyond the newest N; never touches anything else
    Prune {
        #[command(flatten)]
        args: BackupArgs,
        /// How many of the newest backups to keep [default: [backup] keep, else 5]
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
    },
}

impl BackupCommand {
    pub fn args(&self) -> &BackupArgs {
        match self {
            BackupCommand::Create(a) | BackupCommand::List(a) => a,
            BackupCommand::Restore { args, .. } | BackupCommand::Prune { args, .. } => args,
        }
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct BackupArgs {
    /// Where backups go [default: [backup] provider, else neon when NEON_PROJECT_ID is set,
    /// else pg_dump]
    #[arg(long, value_enum, value_name = "PROVIDER")]
    pub provider: Option<crate::config::BackupProvider>,

    /// Neon: the production branch, by name or id [default: [backup] branch, else the
    /// project's default branch]
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,

    /// pg_dump: PostgreSQL URL of the database; use the direct URL, not a pooled one
    /// [default: $DATABASE_URL]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// pg_dump: the archive directory [default: [backup] dir, else "backups"]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// The image to deploy, e.g. registry.fly.io/APP:deployment-1234 (for [deploy] provider
    /// = "command": whatever `{image}` should become) [default: INPUT_IMAGE]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// Roll forward to this image instead of back to the one the last deploy replaced
    /// [default: INPUT_IMAGE]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,

    /// Also restore the database from this backup (an id from `backup list`): the machines
    /// are stopped, the backup restored, then the machines started on the previous image
    #[arg(long, value_name = "ID")]
    pub restore_backup: Option<String>,

    /// Confirm --restore-backup: every database write made since the backup is discarded
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Image to deploy [default: INPUT_IMAGE inside an action; none: migrate only]
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,

    /// Do every read-only part (env check, migration plan against the live ledger) and
    /// change nothing; writes the summary and the JSON log, never a PR comment or Deployment
    #[arg(long)]
    pub dry_run: bool,

    /// Dotenv file with the app's variables: checked by the env contract and seen by every
    /// phase (a non-empty process variable wins) [default: INPUT_ENV-FILE inside an action]
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RehearseArgs {
    /// Leave the copy (Neon branch or scratch database) for debugging and print its name; a
    /// Neon branch still expires at its expires_at
    #[arg(long)]
    pub keep: bool,

    /// Neon: how long the branch lives if flightplan cannot delete it (a killed job); at
    /// most 30 days [default: [rehearse] expires_in, else 1h]
    #[arg(long, value_name = "DURATION")]
    pub expires_in: Option<String>,

    /// Neon: the production branch to copy, by name or id [default: [backup] branch, else the
    /// project's default branch]
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,

    #[command(flatten)]
    pub migrate: MigrateArgs,
}
