//! `[deploy]`, the Fly variables and `--image` → the configured deployer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Sources;
use crate::deploy::{self, Configured, MaxUnavailable, Provider, Strategy, command, rolling};
use crate::error::Error;

/// How long one Machines API request may take (a `/wait` gets its own, longer limit).
pub(crate) const FLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Per machine (started and healthy) or per command, as flyctl's `--wait-timeout`.
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Leases live this long unless refreshed (every third of it). Short enough that a deploy
/// killed by CI frees its machines soon; long enough to survive a slow refresh.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// The process group `fly deploy` gives web machines.
const DEFAULT_PROCESS_GROUP: &str = "app";

/// The command provider's record of what it deployed, relative to the config file.
const DEFAULT_STATE_FILE: &str = ".flightplan/deploy-state.json";

impl Sources<'_> {
    /// The image to deploy or roll to: `--image` (the action's `image` input arrives as
    /// it), checked to be an image reference.
    pub fn image(&self, flag: Option<&str>) -> Result<Option<String>, Error> {
        flag.map(|i| deploy::validate_image(i, "--image"))
            .transpose()
    }

    /// Whether `[deploy] provider = "none"` says this config deploys nothing.
    pub fn deploy_disabled(&self) -> bool {
        self.loaded.file.deploy.provider == Some(Provider::None)
    }

    /// The provider `[deploy]` and the environment describe, ready to run. Everything that
    /// can be wrong before anything is contacted is found here: exit 2.
    pub fn deployer(&self) -> Result<Configured, Error> {
        let loaded = self.loaded;
        let f = &loaded.file.deploy;
        let redactor = self.redactor();
        let wait_timeout = f.wait_timeout.unwrap_or(DEFAULT_WAIT_TIMEOUT);
        match f.provider.unwrap_or(Provider::Fly) {
            Provider::None => Err(Error::usage(
                "[deploy] provider = \"none\": this config deploys nothing",
            )
            .file(loaded.describe("[deploy] provider"))
            .hint("set [deploy] provider = \"fly\" (or \"command\") to deploy and roll back")),
            Provider::Fly => {
                let app = self.fly_app().ok_or_else(|| {
                    Error::usage("no Fly app: set FLY_APP or `app` in the config file").hint(
                        "or set [deploy] provider = \"command\" to deploy with your own commands",
                    )
                })?;
                let group = f
                    .process_group
                    .clone()
                    .unwrap_or_else(|| DEFAULT_PROCESS_GROUP.into());
                if group.trim().is_empty() {
                    return Err(Error::usage("[deploy] process_group is empty")
                        .file(loaded.describe("[deploy] process_group"))
                        .hint("name a process group of fly.toml's [processes], e.g. \"app\""));
                }
                let lease_ttl = f.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL);
                if lease_ttl < Duration::from_secs(3) {
                    return Err(Error::usage("[deploy] lease_ttl must be at least 3s")
                        .file(loaded.describe("[deploy] lease_ttl"))
                        .hint(
                            "leases are refreshed every third of their TTL; the default is 30s",
                        ));
                }
                let client = self.fly_client("deploying to Fly", Some(&app), FLY_TIMEOUT)?;
                Ok(Configured::Fly(rolling::FlyDeployer {
                    api: deploy::fly::Machines::new(client, app),
                    group: group.trim().to_string(),
                    strategy: f.strategy.unwrap_or(Strategy::Rolling),
                    max_unavailable: f.max_unavailable.unwrap_or(MaxUnavailable::Count(1)),
                    wait_timeout,
                    lease_ttl,
                    redactor,
                }))
            }
            Provider::Command => {
                let non_blank = |v: &Option<String>| v.clone().filter(|c| !c.trim().is_empty());
                let cmd = non_blank(&f.command).ok_or_else(|| {
                    Error::usage("[deploy] provider = \"command\" needs `command`")
                        .file(loaded.describe("[deploy] command"))
                        .hint("e.g. command = \"./deploy.sh {image}\" ({image} is replaced by the image or version)")
                })?;
                let state_file = loaded.resolve_path(
                    f.state_file
                        .as_deref()
                        .unwrap_or(Path::new(DEFAULT_STATE_FILE)),
                );
                let workdir = loaded
                    .path
                    .as_ref()
                    .and_then(|p| p.parent())
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), PathBuf::from);
                Ok(Configured::Command(command::CommandDeployer {
                    app: self.fly_app().unwrap_or_else(|| "app".into()),
                    command: cmd,
                    rollback_command: non_blank(&f.rollback_command),
                    state_file,
                    workdir,
                    timeout: wait_timeout,
                    redactor,
                }))
            }
        }
    }

    /// The backup settings for `rollback --restore-backup ID`: `[backup]` and the
    /// environment decide, as for `flightplan backup restore`. Checked before anything is
    /// contacted: without `confirmed`, or with backups off, exit 2.
    pub fn restore_backup(
        &self,
        id: &str,
        confirmed: bool,
    ) -> Result<crate::backup::Settings, Error> {
        if !confirmed {
            return Err(Error::usage(format!(
                "--restore-backup {id} discards every database write made since that backup: confirm with --yes (the action's input: `confirm: yes`)"
            ))
            .hint("without --restore-backup, only the machines go back and the database stays as it is"));
        }
        let settings = self.backup(&crate::cli::BackupArgs::default())?;
        if settings.provider_name() == "none" {
            return Err(Error::usage(format!(
                "--restore-backup {id}: backups are off ([backup] provider = \"none\"), so there is nothing to restore"
            ))
            .file(self.loaded.describe("[backup] provider"))
            .hint("set [backup] provider to neon or pg_dump, or roll back without --restore-backup"));
        }
        Ok(settings)
    }
}
