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
pub mod inputs;
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
use inputs::Inputs;
use output::Outcome;
use settings::Sources;

/// Runs one parsed command line, the action's inputs already laid under its flags
/// ([`Inputs::apply`]). `env` is the environment lookup (injected for tests).
pub async fn run(
    cli: &Cli,
    inputs: &Inputs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Outcome, Error> {
    // The github-token input wins over GITHUB_TOKEN, also for the commands that read the
    // environment themselves (rehearse).
    let token = inputs.github_token.clone();
    let env = &|k: &str| match (&token, k) {
        (Some(t), "GITHUB_TOKEN") => Some(t.expose().to_string()),
        _ => env(k),
    };
    let loaded = Loaded::load(cli.config.as_deref(), env)?;
    let src = Sources::new(&loaded, env).with_github_token(inputs.github_token.clone());
    match &cli.command {
        Command::Backup(cmd) => commands::backup(&src, cmd).await,
        Command::CheckEnv(a) => {
            let src = src.with_env_file(a.env_file.as_deref())?;
            commands::check_env(&src, a).await
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
