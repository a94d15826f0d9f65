//! The `flightplan` binary: read the action's inputs, parse arguments, set up logging, run,
//! map the result to an exit code. It is the container action's entrypoint too: no shell
//! stands between the runner and it (a POSIX sh drops the runner's hyphenated `INPUT_*`).

use std::process::ExitCode;

use clap::Parser;
use flightplan::cli::{Cli, Format};
use flightplan::inputs::Inputs;
use flightplan::output::emit;
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let gha = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
    let inputs = match Inputs::from_env(std::env::vars_os()) {
        Ok(i) => i,
        Err(e) => {
            // Report in the format asked for, when the command line says.
            let format =
                Cli::try_parse_from(std::env::args_os()).map_or(Format::Text, |c| c.format);
            return ExitCode::from(emit(format, Err(e), gha));
        }
    };
    let mut cli = match Cli::try_parse_from(inputs.command_line(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => {
            if inputs.makes_command_line() && e.use_stderr() {
                eprintln!(
                    "error: the action's `command` and `args` inputs do not make a flightplan command line"
                );
            }
            e.exit()
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLIGHTPLAN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,flightplan=info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(flightplan::output::StderrLayer { gha })
        .init();
    if let Err(e) = inputs.apply(&mut cli) {
        return ExitCode::from(emit(cli.format, Err(e), gha));
    }

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
    let result = runtime.block_on(flightplan::run(&cli, &inputs, &env));
    ExitCode::from(emit(cli.format, result, gha))
}
