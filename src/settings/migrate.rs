//! `[migrate]` and the migrate flags → `migrate::Settings`.

use std::path::Path;
use std::time::Duration;

use super::{Sources, flag_duration};
use crate::cli::MigrateArgs;
use crate::error::Error;
use crate::migrate::{self, Layout};

impl Sources<'_> {
    /// The migrations directory: `--dir`, then `[migrate] dir`, then `migrations`.
    pub fn migrations_dir(&self, a: &MigrateArgs) -> std::path::PathBuf {
        match (&a.dir, &self.loaded.file.migrate.dir) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => self.loaded.resolve_path(d),
            (None, None) => self.loaded.resolve_path(Path::new("migrations")),
        }
    }

    /// The layout: `--layout`, then `[migrate] layout`, then flat.
    pub fn layout(&self, a: &MigrateArgs) -> Result<Layout, Error> {
        Ok(match (a.layout, &self.loaded.file.migrate.layout) {
            (Some(l), _) => l,
            (None, Some(name)) => Layout::parse(name).ok_or_else(|| {
                Error::usage(format!("[migrate] layout = \"{name}\" is not a known layout"))
                    .file(self.loaded.describe("[migrate] layout"))
                    .hint("use \"flat\" (every *.sql file in byte order of name, _migrations), \"drizzle\" (drizzle-kit's meta/_journal.json, drizzle.__drizzle_migrations) or \"sqlx\" (<version>_<description>.sql, _sqlx_migrations); see docs/layouts.md")
            })?,
            (None, None) => Layout::Flat,
        })
    }

    /// The migrate settings: flag, then environment, then `[migrate]`, then default.
    pub fn migrate(&self, a: &MigrateArgs) -> Result<migrate::Settings, Error> {
        let loaded = self.loaded;
        let f = &loaded.file.migrate;
        let url = self.database_url(a.database_url.as_deref(), "migrations")?;
        let dir = self.migrations_dir(a);
        let layout = self.layout(a)?;
        let table = a
            .table
            .clone()
            .or_else(|| f.table.clone())
            .unwrap_or_else(|| layout.default_table().into());
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if table.split('.').count() > 2 || !table.split('.').all(valid_part) {
            return Err(Error::usage(format!("`{table}` is not a usable table name"))
                .hint("use letters, digits and underscores, optionally schema-qualified: _migrations or ops._migrations"));
        }
        let duration = |flag: &Option<String>,
                        file: &Option<crate::clock::DurationValue>,
                        key: &str,
                        default: Duration|
         -> Result<Duration, Error> {
            if let Some(d) =
                flag_duration(flag.as_deref(), &format!("--{}", key.replace('_', "-")))?
            {
                return Ok(d);
            }
            Ok(self
                .file_duration(file, &format!("[migrate] {key}"))?
                .unwrap_or(default))
        };
        let statement_timeout = duration(
            &a.statement_timeout,
            &f.statement_timeout,
            "statement_timeout",
            Duration::ZERO,
        )?;
        Ok(migrate::Settings {
            url,
            dir,
            layout,
            table,
            lock_wait: duration(
                &a.lock_wait,
                &f.lock_wait,
                "lock_wait",
                Duration::from_secs(600),
            )?,
            lock_timeout: duration(
                &a.lock_timeout,
                &f.lock_timeout,
                "lock_timeout",
                Duration::from_secs(5),
            )?,
            statement_timeout: (!statement_timeout.is_zero()).then_some(statement_timeout),
            lock_retries: f.lock_retries.unwrap_or(3),
            connect_timeout: flag_duration(a.connect_timeout.as_deref(), "--connect-timeout")?
                .unwrap_or(Duration::from_secs(30)),
            applied_by: format!(
                "flightplan {} ({})",
                env!("CARGO_PKG_VERSION"),
                self.actor()
            ),
            progress: true,
        })
    }
}
