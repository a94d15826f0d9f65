//! `[rehearse] lint` and the migrate flags → the settings of `migrate lint` (and the rule
//! selection `rehearse` lints with).

use serde::Deserialize;

use super::Sources;
use crate::cli::MigrateArgs;
use crate::error::Error;
use crate::migrate::{self, lint::Rules};

/// `[rehearse] lint` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LintFile {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Sources<'_> {
    /// `[rehearse] lint = { include = […], exclude = […] }`: squawk rule ids; an unknown id
    /// is an error naming the key and every known id.
    pub fn lint_rules(&self) -> Result<Rules, Error> {
        let key = "[rehearse] lint";
        let Some(value) = self
            .loaded
            .file
            .rehearse
            .as_ref()
            .and_then(|t| t.get("lint"))
        else {
            return Ok(Rules::default());
        };
        let file: LintFile = value.clone().try_into().map_err(|e: toml::de::Error| {
            Error::usage(format!(
                "{key}: {}",
                crate::config::with_suggestion(e.message().trim_end())
            ))
            .file(self.loaded.describe(key))
            .hint("write it as `lint = { include = [\"rule-id\"], exclude = [\"rule-id\"] }` under [rehearse]")
        })?;
        for (list, ids) in [("include", &file.include), ("exclude", &file.exclude)] {
            if let Err(id) = Rules::new(ids.clone(), Vec::new()) {
                return Err(Error::usage(format!(
                    "{key}.{list}: `{id}` is not a squawk {} rule id",
                    migrate::lint::SQUAWK_VERSION
                ))
                .file(self.loaded.describe(&format!("{key}.{list}")))
                .hint(format!(
                    "known rule ids: {}",
                    migrate::lint::known_rules().join(", ")
                )));
            }
        }
        Ok(Rules::new(file.include, file.exclude).unwrap_or_default())
    }

    /// `migrate lint`: the directory and layout always; the ledger only when a database is
    /// given (`--database-url` or `DATABASE_URL`), else every file is linted.
    pub fn migrate_lint(&self, a: &MigrateArgs) -> Result<migrate::LintSettings, Error> {
        let has_database = a
            .database_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
            || self.var("DATABASE_URL").is_some();
        Ok(migrate::LintSettings {
            dir: self.migrations_dir(a),
            layout: self.layout(a)?,
            database: has_database.then(|| self.migrate(a)).transpose()?,
            rules: self.lint_rules()?,
            annotate: self.gha(),
        })
    }
}
