//! Flags, the environment (with `--env-file` under it) and flightplan.toml resolved into each
//! phase's settings: the one place every value is read. Precedence everywhere: flag (the
//! action's inputs arrive as flags), then environment, then the file, then the default.

mod backup;
mod deploy;
mod lint;
mod migrate;
mod preflight;
mod report;
mod smoke;

use std::path::Path;

use url::Url;

pub use self::preflight::CheckEnvSettings;
pub use self::report::{GitHubTarget, ReportSettings, for_later_steps};
use crate::config::Loaded;
use crate::db::DatabaseUrl;
use crate::error::Error;
use crate::preflight::dotenv::EnvFile;
use crate::redact::{Redactor, Secret};

/// The environment lookup (the process environment in `main`, a map in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where settings come from: the loaded config file, the environment, and the dotenv file
/// of `--env-file` (it fills in what the process environment leaves unset or empty).
pub struct Sources<'a> {
    pub loaded: &'a Loaded,
    env: Env<'a>,
    env_file: Option<EnvFile>,
    /// The action's `github-token` input: a secret, so it never travels as a flag.
    github_token: Option<Secret>,
}

impl<'a> Sources<'a> {
    pub fn new(loaded: &'a Loaded, env: Env<'a>) -> Sources<'a> {
        Sources {
            loaded,
            env,
            env_file: None,
            github_token: None,
        }
    }

    /// Layers the dotenv file under the process environment for every later lookup.
    pub fn with_env_file(mut self, path: Option<&Path>) -> Result<Sources<'a>, Error> {
        self.env_file = path.map(EnvFile::read).transpose()?;
        Ok(self)
    }

    /// The action's `github-token` input, which wins over `GITHUB_TOKEN`.
    pub fn with_github_token(mut self, token: Option<Secret>) -> Sources<'a> {
        self.github_token = token.filter(|t| !t.expose().trim().is_empty());
        self
    }

    /// A variable, trimmed of nothing: the process environment, then the env file. Empty
    /// (or blank) counts as unset, as a CI secret that was never defined arrives empty.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
            .filter(|v| !v.trim().is_empty())
            .or_else(|| {
                self.env_file
                    .as_ref()
                    .and_then(|f| f.get(name))
                    .map(|(v, _)| v.to_string())
                    .filter(|v| !v.trim().is_empty())
            })
    }

    /// A variable of the process environment only, as it is (empty included).
    pub fn process_var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    pub fn env_file(&self) -> Option<&EnvFile> {
        self.env_file.as_ref()
    }

    /// Inside GitHub Actions: workflow commands (masks, annotations) are printed.
    pub fn gha(&self) -> bool {
        (self.env)("GITHUB_ACTIONS").as_deref() == Some("true")
    }

    /// The event that started the run (`push`, `pull_request`, …), when in Actions.
    pub fn event_name(&self) -> Option<String> {
        self.var("GITHUB_EVENT_NAME")
    }

    /// Started by a pull request: such a run never changes production.
    pub fn pull_request_event(&self) -> bool {
        matches!(
            self.event_name().as_deref(),
            Some("pull_request" | "pull_request_target")
        )
    }

    /// `DATABASE_URL` (or `--database-url`): the direct PostgreSQL URL, validated.
    pub fn database_url(&self, flag: Option<&str>, purpose: &str) -> Result<DatabaseUrl, Error> {
        let raw = flag
            .map(str::to_string)
            .filter(|u| !u.trim().is_empty())
            .or_else(|| self.var("DATABASE_URL"))
            .ok_or_else(|| {
                Error::usage(format!("no database: set DATABASE_URL or pass --database-url ({purpose})"))
                    .hint("use the direct (not pooled) PostgreSQL URL, e.g. postgres://USER:PASSWORD@HOST:5432/DB")
            })?;
        DatabaseUrl::parse(raw.trim())
    }

    /// The Fly app: `FLY_APP`, else `app` in the config file.
    pub fn fly_app(&self) -> Option<String> {
        self.var("FLY_APP")
            .or_else(|| self.loaded.file.app.clone())
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
    }

    /// The Fly Machines API client: `FLY_API_TOKEN` and `FLY_API_URL`; `what` names the
    /// command that needs it in the error.
    pub fn fly_client(
        &self,
        what: &str,
        app: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<crate::fly::Client, Error> {
        let token = self.var("FLY_API_TOKEN").ok_or_else(|| {
            Error::usage(format!("{what} needs FLY_API_TOKEN, and it is not set")).hint(format!(
                "create a token with `fly tokens create deploy -a {}` and pass it as FLY_API_TOKEN",
                app.unwrap_or("APP")
            ))
        })?;
        let base = self
            .var("FLY_API_URL")
            .unwrap_or_else(|| crate::fly::DEFAULT_API_URL.into());
        crate::fly::Client::new(&base, &token, timeout)
    }

    /// The app's base URL for smoke tests and the Deployment: `--url`, then `APP_URL`,
    /// then `app_url`. `None` when none is set.
    pub fn app_url(&self, flag: Option<&str>) -> Result<Option<Url>, Error> {
        if let Some(u) = flag {
            return crate::smoke::parse_base(u, "--url").map(Some);
        }
        if let Some(u) = self.var("APP_URL") {
            return crate::smoke::parse_base(&u, "APP_URL").map(Some);
        }
        match &self.loaded.file.app_url {
            Some(u) if !u.trim().is_empty() => crate::smoke::parse_base(u, "app_url")
                .map(Some)
                .map_err(|e| e.file(self.loaded.describe("app_url"))),
            _ => Ok(None),
        }
    }

    /// Every secret the run knows of: the service credentials, the env contract's secret
    /// variables and the smoke test's declared secrets. Built once, announced once.
    pub fn redactor(&self) -> Redactor {
        let mut r = Redactor::from_env(&|k| self.var(k));
        if let Some(t) = &self.github_token {
            r.add(t.expose());
        }
        for name in self.contract_secrets() {
            if let Some(v) = self.var(&name) {
                r.add(&v);
            }
        }
        for name in &self.loaded.file.smoke.secrets {
            if let Some(v) = self.var(name) {
                r.add(&v);
            }
        }
        // A non-secret variable may still be a URL with a password in it.
        if let Some(env) = &self.loaded.file.env {
            for name in env.keys() {
                if let Some(v) = self.var(name) {
                    r.add_url_password(&v);
                }
            }
        }
        r
    }

    /// The env contract's variables that hold secrets (`secret = true`, or a name that
    /// says so).
    pub fn contract_secrets(&self) -> Vec<String> {
        let Some(env) = &self.loaded.file.env else {
            return Vec::new();
        };
        env.iter()
            .filter(|(k, v)| {
                v.get("secret").and_then(toml::Value::as_bool) == Some(true)
                    || ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY"]
                        .iter()
                        .any(|w| k.to_ascii_uppercase().contains(w))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A lookup closure over [`Sources::var`], for code that takes one.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        move |k| self.var(k)
    }

    /// `[section]` of the file as `T`, with the file and key named in an error.
    pub fn section<T: for<'de> serde::Deserialize<'de> + Default>(
        &self,
        table: &Option<toml::Table>,
        name: &str,
    ) -> Result<T, Error> {
        match table {
            None => Ok(T::default()),
            Some(t) => t.clone().try_into().map_err(|e: toml::de::Error| {
                Error::usage(format!(
                    "[{name}]: {}",
                    crate::config::with_suggestion(e.message().trim_end())
                ))
                .file(self.loaded.describe(&format!("[{name}]")))
            }),
        }
    }

    /// The actor named in ledger rows and logs.
    pub fn actor(&self) -> String {
        self.var("GITHUB_ACTOR")
            .or_else(|| self.var("USER"))
            .unwrap_or_else(|| "unknown".into())
    }

    /// A duration of the file, with its key named in the error.
    fn file_duration(
        &self,
        value: &Option<crate::clock::DurationValue>,
        key: &str,
    ) -> Result<Option<std::time::Duration>, Error> {
        value
            .as_ref()
            .map(|v| {
                v.to_duration().map_err(|e| {
                    Error::usage(format!("{key}: {e}")).file(self.loaded.describe(key))
                })
            })
            .transpose()
    }
}

/// A duration flag, with the flag named in the error.
fn flag_duration(value: Option<&str>, flag: &str) -> Result<Option<std::time::Duration>, Error> {
    value
        .map(|v| crate::clock::parse_duration(v).map_err(|e| Error::usage(format!("{flag}: {e}"))))
        .transpose()
}
