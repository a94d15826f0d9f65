//! flightplan.toml, environment variables and flags, resolved into one validated config.
//!
//! Precedence, for every key: flag, then environment variable, then the file, then the
//! default. Paths in the file are relative to the file's own directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::clock::{DurationValue, parse_duration};
use crate::error::Error;

/// The parsed file. Sections owned by commands not built yet are accepted as they are so
/// one file can describe the whole deployment; each command validates its own section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub app: Option<String>,
    pub app_url: Option<String>,
    #[serde(default)]
    pub migrate: MigrateFile,
    pub env: Option<toml::Table>,
    #[serde(default)]
    pub backup: BackupFile,
    #[serde(default)]
    pub deploy: crate::deploy::DeployFile,
    #[serde(default)]
    pub smoke: crate::smoke::SmokeFile,
    #[serde(default)]
    pub watch: crate::smoke::WatchFile,
    #[serde(default)]
    pub rollback: RollbackFile,
    #[serde(default)]
    pub report: ReportFile,
    /// `[rehearse]`: validated by `rehearse` (see docs/rehearse.md).
    pub rehearse: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateFile {
    pub dir: Option<PathBuf>,
    pub table: Option<String>,
    pub layout: Option<String>,
    pub lock_timeout: Option<DurationValue>,
    pub lock_wait: Option<DurationValue>,
    pub statement_timeout: Option<DurationValue>,
    pub lock_retries: Option<u32>,
    pub drift_gate: Option<bool>,
}

/// `[backup]`: where backups go (see docs/backup.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    pub provider: Option<BackupProvider>,
    /// Neon: the production branch, by name or id (default: the project's default branch).
    pub branch: Option<String>,
    /// How many of flightplan's backups `prune` keeps.
    pub keep: Option<u32>,
    /// pg_dump: the archive directory, relative to this file.
    pub dir: Option<PathBuf>,
    /// A backup's or restore's deadline, all waiting included.
    pub timeout: Option<DurationValue>,
    /// Neon: one API request's deadline.
    pub request_timeout: Option<DurationValue>,
}

/// `[backup] provider` and `--provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackupProvider {
    /// A branch of the Neon project's production branch.
    Neon,
    /// A `pg_dump -Fc` archive of DATABASE_URL.
    #[value(name = "pg_dump")]
    PgDump,
    /// No backup: `run` migrates without one (say so explicitly).
    None,
}

/// `[report]`: where the deployment log goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportFile {
    /// Relative to the config file when set there; else `flightplan-log.json` in the workspace.
    pub log: Option<PathBuf>,
    pub summary: Option<PathBuf>,
    pub pr_comment: bool,
    pub github_deployment: bool,
    pub environment: String,
}

impl Default for ReportFile {
    fn default() -> Self {
        ReportFile {
            log: None,
            summary: None,
            pr_comment: true,
            github_deployment: true,
            environment: "production".into(),
        }
    }
}

/// `[rollback]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RollbackFile {
    /// Restoring discards writes made since the backup: opt-in.
    pub restore_database: bool,
}

/// The config file as loaded, with where it came from.
#[derive(Debug, Default)]
pub struct Loaded {
    pub path: Option<PathBuf>,
    pub file: File,
}

impl Loaded {
    /// `--config`, else `FLIGHTPLAN_CONFIG`, else `./flightplan.toml` if present, else defaults.
    pub fn load(
        flag: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, Error> {
        let (path, must_exist) = match (flag, env("FLIGHTPLAN_CONFIG")) {
            (Some(p), _) => (p.to_path_buf(), true),
            (None, Some(p)) if !p.is_empty() => (PathBuf::from(p), true),
            _ => (PathBuf::from("flightplan.toml"), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                return Ok(Loaded::default());
            }
            Err(e) => {
                return Err(Error::usage(format!(
                    "cannot read config file {}: {e}",
                    path.display()
                ))
                .file(path.display().to_string())
                .hint("pass an existing file with --config, or unset FLIGHTPLAN_CONFIG"));
            }
        };
        let file = parse(&text, &path)?;
        Ok(Loaded {
            path: Some(path),
            file,
        })
    }

    /// A path from the file, made relative to the file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        match self.path.as_ref().and_then(|c| c.parent()) {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    /// Where a key is, for error messages: `flightplan.toml` or `flightplan.toml: [migrate] key`.
    pub fn describe(&self, key: &str) -> String {
        match &self.path {
            Some(p) => format!("{} ({key})", p.display()),
            None => key.to_string(),
        }
    }
}

/// Parses the file's text, turning serde's message into file:line:col.
pub fn parse(text: &str, path: &Path) -> Result<File, Error> {
    toml::from_str(text).map_err(|e| {
        let mut err = Error::usage(format!(
            "invalid config file {}: {}",
            path.display(),
            with_suggestion(e.message().trim_end())
        ))
        .file(path.display().to_string())
        .hint("see README.md, \"Configuration\", for every key and its meaning");
        if let Some(span) = e.span() {
            let (line, col) = crate::migrate::line_col(text, span.start);
            // Name the key of that line (never its value, which could be a secret), so the
            // message alone says what to fix: "invalid type … expected u32" is not enough.
            let key = text
                .lines()
                .nth(line.saturating_sub(1) as usize)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !k.starts_with('#'));
            if let Some(k) = key {
                err.message.push_str(&format!(" (line {line}, key `{k}`)"));
            } else {
                err.message.push_str(&format!(" (line {line})"));
            }
            err = err.line(line).column(col);
        }
        err
    })
}

/// serde's "unknown field `dirr`, expected one of `dir`, `table`" with "; did you mean
/// `dir`?" appended when one expected name is close (a typo), so the fix is in the message.
pub fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (edit_distance(&unknown.to_ascii_lowercase(), k), k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("{message}; did you mean `{k}`?"),
        None => message.to_string(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_reported_with_their_line() {
        let e = parse(
            "app = \"x\"\n[migrate]\ndirr = \"m\"\n",
            Path::new("f.toml"),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("dirr"), "{}", e.message);
        assert!(e.message.contains("did you mean `dir`?"), "{}", e.message);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn suggestions_only_for_close_names() {
        let m = "unknown field `deploi`, expected one of `app`, `deploy`, `smoke`";
        assert!(with_suggestion(m).ends_with("did you mean `deploy`?"));
        let m = "unknown field `zzzzzzzz`, expected one of `app`, `deploy`";
        assert_eq!(with_suggestion(m), m);
        assert_eq!(with_suggestion("invalid type"), "invalid type");
    }
}
