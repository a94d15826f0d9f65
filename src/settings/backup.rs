//! `[backup]`, the backup flags and the Neon variables → `backup::Settings`.

use std::path::Path;
use std::time::Duration;

use super::Sources;
use crate::backup::{self, Label, Target, neon, pg_dump};
use crate::cli::BackupArgs;
use crate::config::BackupProvider;
use crate::error::Error;

impl Sources<'_> {
    /// The backup settings: flag, then environment, then `[backup]`, then default. The
    /// provider's default is `neon` when `NEON_PROJECT_ID` is set, else `pg_dump`.
    pub fn backup(&self, a: &BackupArgs) -> Result<backup::Settings, Error> {
        let loaded = self.loaded;
        let f = &loaded.file.backup;
        let provider =
            a.provider
                .or(f.provider)
                .unwrap_or(if self.var("NEON_PROJECT_ID").is_some() {
                    BackupProvider::Neon
                } else {
                    BackupProvider::PgDump
                });
        let timeout = self
            .file_duration(&f.timeout, "[backup] timeout")?
            .unwrap_or(Duration::from_secs(600));
        let request_timeout = self
            .file_duration(&f.request_timeout, "[backup] request_timeout")?
            .unwrap_or(Duration::from_secs(30));
        if timeout.is_zero() || request_timeout.is_zero() {
            return Err(
                Error::usage("[backup] timeout and request_timeout must be more than 0")
                    .file(loaded.describe("[backup]")),
            );
        }
        let target = match provider {
            BackupProvider::None => Target::None,
            BackupProvider::Neon => Target::Neon(self.neon(
                a.branch.clone().or_else(|| f.branch.clone()),
                timeout,
                request_timeout,
                "backup provider `neon`",
            )?),
            BackupProvider::PgDump => {
                let url =
                    self.database_url(a.database_url.as_deref(), "backup provider `pg_dump`")?;
                let dir = match (&a.dir, &f.dir) {
                    (Some(d), _) => d.clone(),
                    (None, Some(d)) => loaded.resolve_path(d),
                    (None, None) => loaded.resolve_path(Path::new("backups")),
                };
                let raw = url.expose().to_string();
                Target::PgDump(Box::new(pg_dump::Settings::new(&raw, url, dir, timeout)?))
            }
        };
        Ok(backup::Settings {
            target,
            keep: f.keep.unwrap_or(backup::DEFAULT_KEEP),
            label: Label::now(self.var("GITHUB_SHA").as_deref()),
        })
    }

    /// The Neon API: `NEON_API_KEY`, `NEON_PROJECT_ID` and `NEON_API_URL`; anything missing
    /// or malformed is exit 2, before Neon is contacted. `what` says who needs it.
    pub fn neon(
        &self,
        branch: Option<String>,
        timeout: Duration,
        request_timeout: Duration,
        what: &str,
    ) -> Result<neon::Settings, Error> {
        let key = self.var("NEON_API_KEY").map(|k| k.trim().to_string()).ok_or_else(|| {
            Error::usage(format!("NEON_API_KEY is not set ({what})")).hint(
                "create an API key in the Neon console (Account or Organization settings → API keys) \
                 and store it as a repository secret NEON_API_KEY",
            )
        })?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::usage(
                "NEON_API_KEY contains characters that cannot be sent in an HTTP header",
            )
            .hint("copy the key again, whole and on one line"));
        }
        let project_id = self
            .var("NEON_PROJECT_ID")
            .map(|p| p.trim().to_string())
            .ok_or_else(|| {
                Error::usage(format!("NEON_PROJECT_ID is not set ({what})")).hint(
                    "the project id is in the Neon console under Project settings, e.g. `spring-example-302709`",
                )
            })?;
        if !project_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::usage(format!(
                "NEON_PROJECT_ID `{project_id}` is not a Neon project id"
            ))
            .hint("use the id (e.g. `spring-example-302709`), not the project's name or URL"));
        }
        let raw = self
            .var("NEON_API_URL")
            .map(|u| u.trim().to_string())
            .unwrap_or_else(|| neon::DEFAULT_API_URL.to_string());
        Ok(neon::Settings {
            api_url: neon::parse_api_url(&raw)?,
            api_key: crate::redact::Secret::new(key),
            project_id,
            branch: branch.filter(|b| !b.trim().is_empty()),
            timeout,
            request_timeout,
        })
    }
}
