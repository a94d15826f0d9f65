//! `[smoke]`, `[watch]`, `--url`, `--watch` and the app URL → `smoke::Settings`.

use super::{Sources, flag_duration};
use crate::cli::SmokeArgs;
use crate::error::Error;
use crate::smoke;

impl Sources<'_> {
    /// The smoke settings: the app URL from `--url`, `APP_URL`, then `app_url`; the watch
    /// window from `--watch`, then `[watch] duration`. Missing variables are exit 2.
    pub fn smoke(&self, a: &SmokeArgs) -> Result<smoke::Settings, Error> {
        let base = self.app_url(a.url.as_deref())?.ok_or_else(|| {
            Error::usage("no app URL to smoke-test").hint(
                "pass --url https://APP.fly.dev, set APP_URL, or set app_url in flightplan.toml (`run` only: [smoke] enabled = false deploys untested, said so in the log)",
            )
        })?;
        let watch = match flag_duration(a.watch.as_deref(), "--watch")? {
            Some(w) => Some(w),
            None => self.loaded.file.watch.duration,
        };
        smoke::Settings::resolve(base, watch, self.loaded, &self.lookup())
    }

    /// `[smoke] enabled = false`: the config says to deploy without smoke tests.
    pub fn smoke_disabled(&self) -> bool {
        self.loaded.file.smoke.enabled == Some(false)
    }
}
