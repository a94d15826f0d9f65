//! The single-phase commands: each resolves its settings, runs its phase and shapes the
//! result for stdout (`run`, `rollback` and `rehearse` have modules of their own).

use crate::backup::Action;
use crate::cli::{BackupCommand, CheckEnvArgs, DeployArgs, MigrateCommand, SmokeArgs};
use crate::deploy::Deployer;
use crate::error::Error;
use crate::output::Outcome;
use crate::settings::Sources;

/// `flightplan backup …`.
pub async fn backup(src: &Sources<'_>, cmd: &BackupCommand) -> Result<Outcome, Error> {
    let settings = src.backup(cmd.args())?;
    if src.gha() {
        src.redactor().announce(true);
    }
    let action = match cmd {
        BackupCommand::Create(_) => Action::Create,
        BackupCommand::List(_) => Action::List,
        BackupCommand::Restore { id, yes, .. } => Action::Restore {
            id: id.clone(),
            yes: *yes,
        },
        BackupCommand::Prune { keep, .. } => Action::Prune { keep: *keep },
    };
    crate::backup::run(&action, &settings).await
}

/// `flightplan check-env [--env-file FILE] [--fly]`.
pub async fn check_env(src: &Sources<'_>, args: &CheckEnvArgs) -> Result<Outcome, Error> {
    let settings = src.check_env(args.fly)?;
    let checked = crate::preflight::check(
        &settings.contract,
        &settings.contract_path,
        settings.fly.as_ref(),
        &|k| src.process_var(k),
        src.env_file(),
        src.redactor(),
        src.gha(),
    )
    .await;
    Ok(checked.to_outcome())
}

/// `flightplan deploy --image REF`.
pub async fn deploy(src: &Sources<'_>, args: &DeployArgs) -> Result<Outcome, Error> {
    let image = src.image(args.image.as_deref())?.ok_or_else(|| {
        Error::usage("deploy needs the image: pass --image REF")
            .hint("e.g. --image registry.fly.io/APP:deployment-1234 (the tag your build pushed)")
    })?;
    let deployer = src.deployer()?;
    let redactor = src.redactor();
    // Before anything else of the run reaches the log.
    redactor.announce(src.gha());
    // A cancelled deploy releases the machines' leases before it exits.
    crate::deploy::leases::interruptible(async {
        Ok(deployer.deploy(&image).await.into_outcome(&redactor))
    })
    .await
}

/// `flightplan smoke [--url BASE] [--watch DURATION]`.
pub async fn smoke(src: &Sources<'_>, args: &SmokeArgs) -> Result<Outcome, Error> {
    crate::smoke::run(&src.smoke(args)?).await
}

/// `flightplan migrate …`.
pub async fn migrate(src: &Sources<'_>, cmd: &MigrateCommand) -> Result<Outcome, Error> {
    use crate::migrate;
    match cmd {
        MigrateCommand::Status(a) => migrate::status(&src.migrate(a)?).await,
        MigrateCommand::Plan(a) => migrate::plan(&src.migrate(a)?).await,
        MigrateCommand::Verify(a) => migrate::verify(&src.migrate(a)?).await,
        MigrateCommand::Lint(a) => migrate::lint_pending(&src.migrate_lint(a)?).await,
        MigrateCommand::Apply { args, retry_failed } => {
            migrate::apply(&src.migrate(args)?, *retry_failed).await
        }
        MigrateCommand::Drift(a) => migrate::drift(&src.migrate(a)?).await,
        MigrateCommand::Adopt { args, yes } => migrate::adopt(&src.migrate(args)?, *yes).await,
        MigrateCommand::MarkApplied { args, files } => {
            migrate::mark_applied(&src.migrate(args)?, files).await
        }
    }
}
