//! flightplan: a production deployment runbook as one binary. This library is the
//! binary's engine; its API is internal and not covered by semver.

pub mod backup;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod db;
pub mod deploy;
pub mod error;
pub mod fly;
pub mod http;
pub mod migrate;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod preflight;
pub mod redact;
pub mod rehearse;
pub mod report;
pub mod settings;
pub mod signal;
pub mod smoke;

use cli::{Cli, Command};
use config::Loaded;
use error::Error;
use output::Outcome;
use settings::Sources;

/// Runs one parsed command line. `env` is the environment lookup (injected for tests).
pub async fn run(cli: &Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Outcome, Error> {
    let loaded = Loaded::load(cli.config.as_deref(), env)?;
    let src = Sources::new(&loaded, env);
    match &cli.command {
        Command::Backup(cmd) => commands::backup(&src, cmd).await,
        Command::CheckEnv(a) => {
            // The action's inputs (until the typed inputs of the Action land).
            let mut a = a.clone();
            if a.env_file.is_none() {
                a.env_file = env("INPUT_ENV-FILE")
                    .filter(|v| !v.trim().is_empty())
                    .map(Into::into);
            }
            match env("INPUT_FLY").as_deref().map(str::trim) {
                None | Some("" | "false") => {}
                Some("true") => a.fly = true,
                Some(other) => {
                    return Err(Error::usage(format!(
                        "INPUT_FLY is `{other}`; it must be true or false"
                    ))
                    .hint("set the action's `fly` input to true or false"));
                }
            }
            let src = src.with_env_file(a.env_file.as_deref())?;
            commands::check_env(&src, &a).await
        }
        Command::Deploy(a) => commands::deploy(&src, a).await,
        Command::Rollback(a) => pipeline::rollback(&src, plan::rollback(&src, a)).await,
        Command::Smoke(a) => commands::smoke(&src, a).await,
        Command::Report { log } => report::render(log),
        Command::Rehearse(a) => rehearse::run(&src, a).await,
        Command::Run(a) => {
            let src = src.with_env_file(a.env_file.as_deref())?;
            pipeline::run(&src, plan::run(&src, a)).await
        }
        Command::Migrate(cmd) => commands::migrate(&src, cmd).await,
    }
}
