//! The `flightplan` binary: parse arguments, set up logging, run, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let cli = flightplan::cli::Cli::parse();
    let gha = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLIGHTPLAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,flightplan=info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(flightplan::output::StderrLayer { gha })
        .init();

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let result = runtime.block_on(flightplan::run(&cli, &env));
    ExitCode::from(flightplan::output::emit(cli.format, result, gha))
}
