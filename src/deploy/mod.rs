//! Phase 5 of the pipeline, `deploy` and `rollback`: the [`Deployer`] trait and its two
//! providers (`fly`, `command`), the `[deploy]` section, and the report both produce.

pub mod command;
pub mod fly;
pub mod leases;
pub mod rolling;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};

use crate::clock::DurationValue;
use crate::error::Error;
use crate::output::Outcome;
use crate::redact::Redactor;

/// `[deploy]` of flightplan.toml. Values are checked while the file is parsed, so every
/// mistake is reported with its line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployFile {
    pub provider: Option<Provider>,
    pub process_group: Option<String>,
    pub strategy: Option<Strategy>,
    #[serde(default, deserialize_with = "opt_max_unavailable")]
    pub max_unavailable: Option<MaxUnavailable>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub wait_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub lease_ttl: Option<Duration>,
    pub command: Option<String>,
    pub rollback_command: Option<String>,
    pub state_file: Option<PathBuf>,
}

/// Who puts the image in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The Fly Machines API.
    Fly,
    /// Configured shell commands (other hosts, the local quick start).
    Command,
    /// This config deploys nothing (`run` applies migrations and smoke-tests what runs).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Batches of `max_unavailable` machines.
    Rolling,
    /// The first machine alone (started and healthy), then batches of `max_unavailable`.
    Canary,
}

/// How many machines may be updating at once: a count, or a fraction of the group
/// (rounded up, at least one), as fly.toml's `max_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnavailable {
    Count(usize),
    Fraction(f64),
}

impl MaxUnavailable {
    pub fn of(self, machines: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n.max(1),
            MaxUnavailable::Fraction(f) => ((machines as f64 * f).ceil() as usize).max(1),
        }
    }
}

fn opt_max_unavailable<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<MaxUnavailable>, D::Error> {
    let v = f64::deserialize(d)?;
    if !v.is_finite() || v <= 0.0 {
        return Err(serde::de::Error::custom(format!(
            "max_unavailable must be more than 0, not {v}"
        )));
    }
    if v < 1.0 {
        return Ok(Some(MaxUnavailable::Fraction(v)));
    }
    if v.fract() != 0.0 {
        return Err(serde::de::Error::custom(format!(
            "max_unavailable is a whole number of machines or a fraction below 1, not {v}"
        )));
    }
    Ok(Some(MaxUnavailable::Count(v as usize)))
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = DurationValue::deserialize(d)?;
    match v.to_duration() {
        Ok(t) if t.is_zero() => Err(serde::de::Error::custom("the duration must be more than 0")),
        Ok(t) => Ok(Some(t)),
        Err(e) => Err(serde::de::Error::custom(e)),
    }
}

/// A database restore that a rollback runs while the app is stopped; its result is the
/// report's `database` field.
pub type RestoreDb<'a> = Pin<Box<dyn Future<Output = Result<crate::backup::Restored, Error>> + 'a>>;

/// Deploys an image and rolls back. Neither method returns early with an error: the report
/// always says what was attempted, what changed and what was put back, failure included.
pub trait Deployer {
    /// Puts `image` in place; on failure puts back everything it changed.
    fn deploy(&self, image: &str) -> impl Future<Output = Report>;

    /// Without `image`, back to what the previous deploy replaced (recorded by flightplan);
    /// with `image`, forward to that image. On failure puts back everything it changed.
    /// With `restore`, the database is restored in between, while the app is stopped where
    /// the provider can stop it (DESIGN.md: stop, restore, start on the previous image).
    fn rollback(
        &self,
        image: Option<&str>,
        restore: Option<RestoreDb<'_>>,
    ) -> impl Future<Output = Report>;

    /// What `deploy` of `image` would change, read-only (`run --dry-run`): the current image
    /// of each machine, `pending` where it would change. No lease, no update.
    fn preview(&self, image: Option<&str>) -> impl Future<Output = Report>;

    /// The database restored while the app is stopped where the provider can stop it, then
    /// the app started again on the image it runs now. A rollback calls this after the
    /// images went back, so the image rollback never depends on the restore.
    fn restore_database(&self, restore: RestoreDb<'_>) -> impl Future<Output = Report>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deploy,
    Rollback,
}

/// What happened to one machine (or, for the command provider, the one target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineStatus {
    /// Now on the target image, started and healthy (or left stopped, as it was).
    Updated,
    /// Already on the target image: not touched.
    Unchanged,
    /// Not reached because an earlier machine failed: not touched.
    NotUpdated,
    /// Updated, then put back on its previous config after a failure.
    Reverted,
    /// Updated, and putting it back failed: it needs attention.
    RevertFailed,
    /// Failed, and nothing could be put back (command provider without a previous image).
    Failed,
    /// A dry run's verdict: `deploy` would update it.
    Pending,
}

impl MachineStatus {
    fn as_str(self) -> &'static str {
        match self {
            MachineStatus::Updated => "updated",
            MachineStatus::Unchanged => "unchanged",
            MachineStatus::NotUpdated => "not updated",
            MachineStatus::Reverted => "reverted",
            MachineStatus::RevertFailed => "REVERT FAILED",
            MachineStatus::Failed => "failed",
            MachineStatus::Pending => "would update",
        }
    }
}

/// One machine in the report.
#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    pub id: String,
    pub region: Option<String>,
    /// The image it runs now, after the deploy (and any revert).
    pub image: Option<String>,
    pub status: MachineStatus,
    /// Fly's machine state (`started`, `stopped`, …) when last seen.
    pub state: Option<String>,
    /// The image it ran before this run.
    pub previous_image: Option<String>,
    /// Why this machine failed, when it is the one that did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A dry run's: the batch `deploy` would update it in (1 first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

/// The result of a deploy or rollback, for every provider.
#[derive(Debug)]
pub struct Report {
    pub action: Action,
    pub provider: Provider,
    pub app: String,
    /// The image the run put in place; `None` when machines went back to different images.
    pub image: Option<String>,
    /// Machine id → the image it ran before this run (DESIGN.md's JSON contract).
    pub previous_images: BTreeMap<String, String>,
    pub machines: Vec<MachineReport>,
    /// Whether anything was put back after a failure.
    pub reverted: bool,
    /// Where the previous images are recorded, for the text output.
    pub recorded_in: Option<String>,
    /// The command provider's captured output.
    pub output: Option<String>,
    /// What `--restore-backup` restored, when it did.
    pub database: Option<crate::backup::Restored>,
    /// A read-only preview: nothing was changed.
    pub dry_run: bool,
    pub error: Option<Error>,
}

impl Report {
    pub fn new(action: Action, provider: Provider, app: &str) -> Report {
        Report {
            action,
            provider,
            app: app.to_string(),
            image: None,
            previous_images: BTreeMap::new(),
            machines: Vec::new(),
            reverted: false,
            recorded_in: None,
            output: None,
            database: None,
            dry_run: false,
            error: None,
        }
    }

    /// A report of a run that stopped before changing anything.
    pub fn failed(mut self, error: Error) -> Report {
        self.error = Some(error);
        self
    }

    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The JSON fields: `app`, `image`, `previous_images`, `machines`, `reverted` (the
    /// contract), plus `action`, `provider`, `reverted_machines` and `output`.
    pub fn json(&self) -> serde_json::Map<String, Value> {
        let reverted_machines: Vec<&str> = self
            .machines
            .iter()
            .filter(|m| {
                matches!(
                    m.status,
                    MachineStatus::Reverted | MachineStatus::RevertFailed
                )
            })
            .map(|m| m.id.as_str())
            .collect();
        let mut map = serde_json::Map::new();
        map.insert("action".into(), json!(self.action));
        map.insert("provider".into(), json!(self.provider));
        map.insert("app".into(), json!(self.app));
        map.insert("image".into(), json!(self.image));
        map.insert("previous_images".into(), json!(self.previous_images));
        map.insert("machines".into(), json!(self.machines));
        map.insert("reverted".into(), json!(self.reverted));
        map.insert("reverted_machines".into(), json!(reverted_machines));
        if let Some(o) = &self.output {
            map.insert("output".into(), json!(o));
        }
        if let Some(d) = &self.database {
            map.insert("database".into(), json!(d));
        }
        if self.dry_run {
            map.insert("dry_run".into(), json!(true));
        }
        map
    }

    /// What people read on stdout.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let target = self
            .image
            .as_deref()
            .unwrap_or("each machine's previous image");
        let what = match self.action {
            Action::Deploy => format!("deploy of {target} to {}", self.app),
            Action::Rollback => format!("rollback of {} to {target}", self.app),
        };
        let provider = match self.provider {
            Provider::Fly => "Fly Machines",
            Provider::Command => "command",
            Provider::None => "none",
        };
        let verdict = match (&self.error, self.reverted) {
            (None, _) if self.dry_run => "dry run, nothing changed",
            (None, _) => "done",
            (Some(_), true) => "FAILED, changes reverted",
            (Some(_), false) => "FAILED",
        };
        let _ = writeln!(s, "{what} ({provider}): {verdict}");
        if !self.machines.is_empty() {
            let w_id = self
                .machines
                .iter()
                .map(|m| m.id.len())
                .max()
                .unwrap_or(2)
                .max(2);
            let w_region = self
                .machines
                .iter()
                .map(|m| m.region.as_deref().map_or(1, str::len))
                .max()
                .unwrap_or(6)
                .max(6);
            let _ = writeln!(
                s,
                "  {:<w_id$}  {:<w_region$}  {:<13}  image",
                "id", "region", "status"
            );
            for m in &self.machines {
                let region = m.region.as_deref().unwrap_or("-");
                let image = m.image.as_deref().unwrap_or("?");
                let was = match &m.previous_image {
                    Some(p) if Some(p.as_str()) != m.image.as_deref() => format!(" (was {p})"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    s,
                    "  {:<w_id$}  {region:<w_region$}  {:<13}  {image}{was}",
                    m.id,
                    m.status.as_str()
                );
                if let Some(e) = &m.error {
                    let _ = writeln!(s, "  {:<w_id$}  {}", "", e);
                }
            }
        }
        if let Some(d) = &self.database {
            let _ = writeln!(
                s,
                "database restored from backup {} ({})",
                d.backup.id, d.target
            );
        }
        if let Some(out) = &self.output
            && !out.trim().is_empty()
        {
            let _ = writeln!(s, "output:");
            for line in out.lines() {
                let _ = writeln!(s, "  | {line}");
            }
        }
        if self.ok()
            && let Some(at) = &self.recorded_in
        {
            let _ = writeln!(
                s,
                "previous images recorded in {at}; `flightplan rollback` puts them back"
            );
        }
        s
    }

    /// The command's outcome, with every secret scrubbed from text, JSON and error.
    pub fn into_outcome(self, redactor: &Redactor) -> Outcome {
        let mut doc = Value::Object(self.json());
        redactor.scrub_json(&mut doc);
        let Value::Object(json) = doc else {
            unreachable!("scrub_json keeps the shape")
        };
        let text = redactor.scrub(&self.text());
        let mut outcome = Outcome::new(self.ok(), json, text);
        if let Some(mut e) = self.error {
            redactor.scrub_error(&mut e);
            outcome.error = Some(e);
        }
        outcome
    }
}

/// An image reference, or a version for the command provider: registry, path, tag and
/// digest characters only. That keeps `{image}` safe to put into a shell command and
/// catches a mangled CI variable before anything is contacted.
pub fn validate_image(image: &str, source: &str) -> Result<String, Error> {
    let image = image.trim();
    if image.is_empty() {
        return Err(Error::usage(format!("{source} is empty"))
            .hint("pass the image to deploy, e.g. --image registry.fly.io/APP:deployment-1234"));
    }
    if image.len() > 512
        || !image
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@+".contains(c))
    {
        return Err(Error::usage(format!(
            "{source} `{image}` is not an image reference"
        ))
        .hint("use REGISTRY/REPOSITORY:TAG or REPOSITORY@sha256:DIGEST (letters, digits and . _ - / : @ + only)"));
    }
    Ok(image.to_string())
}

/// The configured provider, ready to run (`run` deploys with it and rolls back with it).
pub enum Configured {
    Fly(rolling::FlyDeployer),
    Command(command::CommandDeployer),
}

impl Deployer for Configured {
    async fn preview(&self, image: Option<&str>) -> Report {
        match self {
            Configured::Fly(d) => d.preview(image).await,
            Configured::Command(d) => d.preview(image).await,
        }
    }

    async fn deploy(&self, image: &str) -> Report {
        match self {
            Configured::Fly(d) => d.deploy(image).await,
            Configured::Command(d) => d.deploy(image).await,
        }
    }

    async fn rollback(&self, image: Option<&str>, restore: Option<RestoreDb<'_>>) -> Report {
        match self {
            Configured::Fly(d) => d.rollback(image, restore).await,
            Configured::Command(d) => d.rollback(image, restore).await,
        }
    }

    async fn restore_database(&self, restore: RestoreDb<'_>) -> Report {
        match self {
            Configured::Fly(d) => d.restore_database(restore).await,
            Configured::Command(d) => d.restore_database(restore).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_references_only() {
        assert!(validate_image("registry.fly.io/app:deployment-01H", "x").is_ok());
        assert!(validate_image("ghcr.io/o/r@sha256:abc123", "x").is_ok());
        assert!(validate_image("v1.4.2", "x").is_ok());
        for bad in ["", "  ", "app:v1; rm -rf /", "a b", "$(id)", "x`y`"] {
            let e = validate_image(bad, "--image").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn max_unavailable_counts_and_fractions() {
        assert_eq!(MaxUnavailable::Count(1).of(3), 1);
        assert_eq!(MaxUnavailable::Count(5).of(3), 5);
        assert_eq!(MaxUnavailable::Fraction(0.33).of(3), 1);
        assert_eq!(MaxUnavailable::Fraction(0.5).of(3), 2);
        assert_eq!(MaxUnavailable::Fraction(0.1).of(1), 1);
    }

    #[test]
    fn deploy_section_is_checked_with_lines() {
        let parse = |s: &str| crate::config::parse(s, std::path::Path::new("f.toml"));
        let f = parse("[deploy]\nprovider = \"command\"\ncommand = \"true\"\nmax_unavailable = 0.5\nwait_timeout = \"90s\"\n").unwrap();
        assert_eq!(f.deploy.provider, Some(Provider::Command));
        assert_eq!(
            f.deploy.max_unavailable,
            Some(MaxUnavailable::Fraction(0.5))
        );
        assert_eq!(f.deploy.wait_timeout, Some(Duration::from_secs(90)));
        for (text, line) in [
            (
                "[deploy]\nprovider = \"fly\"\nstrategy = \"bluegreen\"\n",
                3,
            ),
            ("[deploy]\n\nmax_unavailabe = 1\n", 3),
            ("[deploy]\nmax_unavailable = 1.5\n", 2),
            ("[deploy]\nmax_unavailable = 0\n", 2),
            ("[deploy]\nwait_timeout = \"5 parsecs\"\n", 2),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert_eq!(e.line, Some(line), "{text}: {}", e.message);
        }
    }
}
