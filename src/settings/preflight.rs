//! `[env]`, `--env-file` and `--fly` → what `check-env` (and `run`'s preflight) checks.

use std::path::Path;

use super::Sources;
use super::deploy::FLY_TIMEOUT;
use crate::error::Error;
use crate::preflight::{Contract, FlyAudit};

/// The check-env settings: the contract, where values come from, and the Fly audit.
pub struct CheckEnvSettings {
    pub contract: Contract,
    /// The config file the contract is in, as shown in messages and annotations.
    pub contract_path: String,
    pub fly: Option<FlyAudit>,
}

impl Sources<'_> {
    /// The contract of `[env]` (re-read with positions, so mistakes have their line) and
    /// the Fly audit when `fly` is asked for. Exit 2 for anything wrong before a value is
    /// looked at.
    pub fn check_env(&self, fly: bool) -> Result<CheckEnvSettings, Error> {
        let (contract, contract_path) = self.contract()?.ok_or_else(|| match &self.loaded.path {
            None => Error::usage(
                "check-env needs a config file with an [env] section, and none was found",
            )
            .hint("pass --config FILE, set FLIGHTPLAN_CONFIG, or create ./flightplan.toml; see docs/check-env.md"),
            Some(p) => Error::usage(format!("{} has no [env] variables: nothing to check", p.display()))
                .file(p.display().to_string())
                .hint("add one table per variable, e.g. [env.SESSION_SECRET] required = true, secret = true, min_length = 32; see docs/check-env.md"),
        })?;
        let fly = if fly {
            let app = self.fly_app().ok_or_else(|| {
                Error::usage(
                    "--fly needs the Fly app's name: set FLY_APP or `app` in the config file",
                )
            })?;
            let client = self.fly_client("--fly", Some(&app), FLY_TIMEOUT)?;
            Some(FlyAudit { app, client })
        } else {
            None
        };
        Ok(CheckEnvSettings {
            contract,
            contract_path,
            fly,
        })
    }

    /// The `[env]` contract with its file, `None` when the config has no variables there.
    pub fn contract(&self) -> Result<Option<(Contract, String)>, Error> {
        let Some(path) = &self.loaded.path else {
            return Ok(None);
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!("cannot read config file {shown}: {e}")).file(shown.clone())
        })?;
        Ok(Contract::parse(&text, Path::new(path))?
            .filter(|c| !c.vars.is_empty())
            .map(|c| (c, shown)))
    }
}
