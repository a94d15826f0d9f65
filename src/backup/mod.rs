//! Phase 2 of the runbook: a verified backup before migrating, and the way back. A Neon
//! database gets a branch of its production branch (`neon.rs`), any other PostgreSQL a
//! `pg_dump` archive (`pg_dump.rs`).

pub mod neon;
pub mod pg_dump;

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::Error;
use crate::output::Outcome;

/// Every Neon branch flightplan creates as a backup is named with this prefix; `list` and
/// `prune` see nothing else.
pub const BRANCH_PREFIX: &str = "flightplan/backup/";
/// A Neon restore keeps the production branch's previous state under a name with this
/// prefix. Such branches are not backups: `prune` never deletes them.
pub const PRESERVE_PREFIX: &str = "flightplan/pre-restore/";

/// How many backups `prune` keeps when neither `--keep` nor `[backup] keep` says: Neon's
/// Free and Launch plans include 10 branches per project, and production and preview
/// branches need some of them.
pub const DEFAULT_KEEP: u32 = 5;

/// One backup, whichever provider took it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Backup {
    pub provider: &'static str,
    /// Neon: the branch id (`br-…`); pg_dump: the archive's file name.
    pub id: String,
    pub name: String,
    /// Neon: the parent branch's id; pg_dump: the database's name.
    pub parent: Option<String>,
    /// Neon: the parent's LSN the branch starts from, the exact point captured.
    pub parent_lsn: Option<String>,
    pub created_at: Option<String>,
    /// pg_dump: the archive's size in bytes.
    pub size: Option<u64>,
    /// pg_dump: the archive's path.
    pub path: Option<String>,
    /// Why `prune` may not delete it (a Neon branch with children), if so.
    #[serde(skip)]
    pub blocked: Option<String>,
}

/// What a restore did. In JSON (a rollback's `database` field): `backup_id`,
/// `backup_name`, `provider`, `target`, `preserved`.
#[derive(Debug, Clone)]
pub struct Restored {
    pub backup: Backup,
    /// What was overwritten: `branch main (br-…)` or `database postgres://…`.
    pub target: String,
    /// Neon: the branch that keeps the state from before the restore.
    pub preserved: Option<Preserved>,
}

impl Serialize for Restored {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("backup_id", &self.backup.id)?;
        m.serialize_entry("backup_name", &self.backup.name)?;
        m.serialize_entry("provider", self.backup.provider)?;
        m.serialize_entry("target", &self.target)?;
        m.serialize_entry("preserved", &self.preserved)?;
        m.end()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Preserved {
    pub id: Option<String>,
    pub name: String,
}

/// When and from which commit a backup is taken: names carry both.
#[derive(Debug, Clone)]
pub struct Label {
    /// Seconds since the epoch (UTC).
    pub secs: u64,
    /// The commit's first 7 characters (`GITHUB_SHA`), when known.
    pub sha: Option<String>,
}

impl Label {
    /// Now, from the commit `sha` (`GITHUB_SHA`) when known.
    pub fn now(sha: Option<&str>) -> Label {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let sha = sha
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| s.len() >= 7 && s.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|s| s[..7].to_string());
        Label { secs, sha }
    }

    /// `20260116T103000Z-1a2b3c4`, or the stamp alone outside CI. The stamp is UTC in ISO
    /// 8601 basic format: it sorts by time and has no `:`.
    pub fn suffix(&self) -> String {
        match &self.sha {
            Some(sha) => format!("{}-{sha}", utc_stamp(self.secs)),
            None => utc_stamp(self.secs),
        }
    }

    /// The first of `name(suffix)` for this second and the following ones that `taken`
    /// does not reject: two backups in one second get consecutive stamps, so names stay
    /// unique and still sort by time.
    pub fn unique(&self, name: impl Fn(&str) -> String, taken: impl Fn(&str) -> bool) -> String {
        let mut l = self.clone();
        loop {
            let n = name(&l.suffix());
            if !taken(&n) {
                return n;
            }
            l.secs += 1;
        }
    }
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch.
fn utc_stamp(secs: u64) -> String {
    crate::clock::Utc::from_unix(secs as i64).compact()
}

/// `20260116T103000Z` → `2026-01-16T10:30:00Z`.
pub fn stamp_to_rfc3339(stamp: &str) -> Option<String> {
    let b = stamp.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    if b.len() != 16 || !digits(0..8) || b[8] != b'T' || !digits(9..15) || b[15] != b'Z' {
        return None;
    }
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    ))
}

/// Newest first: by creation time, then by name (names carry the time too).
pub fn newest_first(backups: &mut [Backup]) {
    backups.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.name.cmp(&a.name))
    });
}

/// A place backups are kept. Two real implementations: Neon branches and pg_dump archives.
pub trait Provider {
    /// Takes a backup and verifies it (Neon: operations finished and the branch ready;
    /// pg_dump: non-empty and readable to the end).
    fn create(&self, label: &Label) -> impl Future<Output = Result<Backup, Error>> + Send;
    /// flightplan's backups, and only them, newest first.
    fn list(&self) -> impl Future<Output = Result<Vec<Backup>, Error>> + Send;
    /// One of flightplan's backups by id or name (pg_dump: also a path).
    fn find(&self, id: &str) -> impl Future<Output = Result<Backup, Error>> + Send;
    /// Brings the database back to the backup's state, discarding what was written since.
    fn restore(
        &self,
        backup: &Backup,
        label: &Label,
    ) -> impl Future<Output = Result<Restored, Error>> + Send;
    fn delete(&self, backup: &Backup) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The provider chosen for this run, with its settings.
#[derive(Debug, Clone)]
pub enum Target {
    Neon(neon::Settings),
    /// Boxed: a parsed database URL is large next to the other variants.
    PgDump(Box<pg_dump::Settings>),
    /// `[backup] provider = "none"`: backups are explicitly off.
    None,
}

/// Everything a backup command needs, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub target: Target,
    pub keep: u32,
    pub label: Label,
}

impl Settings {
    pub fn provider_name(&self) -> &'static str {
        match self.target {
            Target::Neon(_) => "neon",
            Target::PgDump(_) => "pg_dump",
            Target::None => "none",
        }
    }
}

/// What a `backup` command asks for.
#[derive(Debug, Clone)]
pub enum Action {
    Create,
    List,
    /// Needs `yes`: every write made since the backup is discarded.
    Restore {
        id: String,
        yes: bool,
    },
    /// `None` keeps `[backup] keep`.
    Prune {
        keep: Option<u32>,
    },
}

/// `flightplan backup …`: one command.
pub async fn run(cmd: &Action, s: &Settings) -> Result<Outcome, Error> {
    // Usage errors come before anything is contacted.
    if let Action::Restore { yes: false, id } = cmd {
        return Err(Error::usage(format!(
            "`backup restore {id}` replaces the database's current state with the backup's: every write \
             made since the backup is discarded"
        ))
        .hint(format!(
            "stop the app first (the runbook's `fly scale count 0`), then confirm with `flightplan backup restore {id} --yes`"
        )));
    }
    match &s.target {
        Target::None => none(cmd),
        Target::Neon(n) => dispatch(&neon::Neon::new(n.clone())?, cmd, s).await,
        Target::PgDump(p) => dispatch(&pg_dump::PgDump::new((**p).clone()), cmd, s).await,
    }
}

/// Takes a verified backup; `None` when `[backup] provider = "none"`. For `run`, which
/// migrates only after this returned `Ok`.
pub async fn take(s: &Settings) -> Result<Option<Backup>, Error> {
    match &s.target {
        Target::None => Ok(None),
        Target::Neon(n) => neon::Neon::new(n.clone())?.create(&s.label).await.map(Some),
        Target::PgDump(p) => pg_dump::PgDump::new((**p).clone())
            .create(&s.label)
            .await
            .map(Some),
    }
}

/// Restores a backup by id or name. For `rollback --restore-backup ID --yes`.
pub async fn restore(s: &Settings, id: &str) -> Result<Restored, Error> {
    async fn go<P: Provider>(p: &P, id: &str, label: &Label) -> Result<Restored, Error> {
        let backup = p.find(id).await?;
        p.restore(&backup, label).await
    }
    match &s.target {
        Target::None => Err(no_provider()),
        Target::Neon(n) => go(&neon::Neon::new(n.clone())?, id, &s.label).await,
        Target::PgDump(p) => go(&pg_dump::PgDump::new((**p).clone()), id, &s.label).await,
    }
}

/// Looks a backup up by id or name (read-only): before a rollback stops anything, a
/// mistyped id must cost nothing.
pub async fn find(s: &Settings, id: &str) -> Result<Backup, Error> {
    match &s.target {
        Target::None => Err(no_provider()),
        Target::Neon(n) => neon::Neon::new(n.clone())?.find(id).await,
        Target::PgDump(p) => pg_dump::PgDump::new((**p).clone()).find(id).await,
    }
}

fn no_provider() -> Error {
    Error::usage("backups are off ([backup] provider = \"none\"): there is nothing to restore")
        .hint("set [backup] provider to neon or pg_dump")
}

fn none(cmd: &Action) -> Result<Outcome, Error> {
    match cmd {
        Action::Create => {
            let mut json = serde_json::Map::new();
            json.insert("provider".into(), json!("none"));
            json.insert("id".into(), Value::Null);
            json.insert("name".into(), Value::Null);
            json.insert("skipped".into(), json!(true));
            Ok(Outcome::new(
                true,
                json,
                "No backup taken: [backup] provider = \"none\".\n".into(),
            ))
        }
        Action::List => Ok(Outcome::new(
            true,
            map(json!({ "provider": "none", "backups": [] })),
            "No backups: [backup] provider = \"none\".\n".into(),
        )),
        Action::Prune { .. } => Ok(Outcome::new(
            true,
            map(json!({ "provider": "none", "deleted": [], "kept": [] })),
            "Nothing to prune: [backup] provider = \"none\".\n".into(),
        )),
        Action::Restore { .. } => Err(no_provider()),
    }
}

async fn dispatch<P: Provider>(p: &P, cmd: &Action, s: &Settings) -> Result<Outcome, Error> {
    let provider = s.provider_name();
    match cmd {
        Action::Create => {
            let b = p.create(&s.label).await?;
            let text = match provider {
                "neon" => format!(
                    "Backup created: Neon branch {} ({}) of {} at LSN {}.\n\
                     Restore it with: flightplan backup restore {} --yes\n",
                    b.name,
                    b.id,
                    b.parent.as_deref().unwrap_or("?"),
                    b.parent_lsn.as_deref().unwrap_or("?"),
                    b.id
                ),
                _ => format!(
                    "Backup created: {} ({}, read back in full).\n\
                     Restore it with: flightplan backup restore {} --yes\n",
                    b.path.as_deref().unwrap_or(&b.name),
                    human_size(b.size.unwrap_or(0)),
                    b.id
                ),
            };
            Ok(Outcome::new(true, map(json!(b)), text))
        }
        Action::List => {
            let all = p.list().await?;
            let mut text = String::new();
            if all.is_empty() {
                text.push_str("No flightplan backups.\n");
            }
            let width = all.iter().map(|b| b.id.len()).max().unwrap_or(0);
            for b in &all {
                let detail = match provider {
                    "neon" => format!(
                        "{}  parent {} at {}",
                        b.name,
                        b.parent.as_deref().unwrap_or("?"),
                        b.parent_lsn.as_deref().unwrap_or("?")
                    ),
                    _ => format!(
                        "{}  {}",
                        human_size(b.size.unwrap_or(0)),
                        b.path.as_deref().unwrap_or("")
                    ),
                };
                text.push_str(&format!(
                    "  {:<width$}  {:<20}  {detail}\n",
                    b.id,
                    b.created_at.as_deref().unwrap_or("")
                ));
            }
            Ok(Outcome::new(
                true,
                map(json!({ "provider": provider, "backups": all })),
                text,
            ))
        }
        Action::Restore { id, .. } => {
            let backup = p.find(id).await?;
            let r = p.restore(&backup, &s.label).await?;
            let mut text = format!(
                "Restored {} from backup {}.\n",
                r.target,
                describe(&r.backup)
            );
            if let Some(pr) = &r.preserved {
                text.push_str(&format!(
                    "Its state from before the restore is kept as branch {}{}.\n",
                    pr.name,
                    pr.id
                        .as_deref()
                        .map(|i| format!(" ({i})"))
                        .unwrap_or_default()
                ));
            }
            Ok(Outcome::new(
                true,
                map(json!({
                    "provider": provider,
                    "restored": r.target,
                    "backup": r.backup,
                    "preserved": r.preserved,
                })),
                text,
            ))
        }
        Action::Prune { keep } => {
            let keep = keep.unwrap_or(s.keep);
            let all = p.list().await?;
            let (kept, old) = all.split_at(all.len().min(keep as usize));
            let mut deleted = Vec::new();
            let mut skipped = Vec::new();
            for b in old {
                if let Some(why) = &b.blocked {
                    tracing::warn!("keeping backup {}: {why}", describe(b));
                    skipped.push(json!({ "id": b.id, "name": b.name, "reason": why }));
                    continue;
                }
                tracing::info!("deleting backup {}", describe(b));
                p.delete(b).await?;
                deleted.push(b.clone());
            }
            let mut text = format!(
                "Kept the newest {} backup(s); deleted {}.\n",
                kept.len(),
                deleted.len()
            );
            for b in &deleted {
                text.push_str(&format!("  deleted {}\n", describe(b)));
            }
            for v in &skipped {
                text.push_str(&format!(
                    "  kept {} ({}): {}\n",
                    v["name"].as_str().unwrap_or(""),
                    v["id"].as_str().unwrap_or(""),
                    v["reason"].as_str().unwrap_or("")
                ));
            }
            Ok(Outcome::new(
                true,
                map(json!({
                    "provider": provider,
                    "keep": keep,
                    "deleted": deleted,
                    "kept": kept,
                    "skipped": skipped,
                })),
                text,
            ))
        }
    }
}

/// `name (id)`, or the name alone when it is the id (pg_dump archives).
fn describe(b: &Backup) -> String {
    if b.name == b.id {
        b.name.clone()
    } else {
        format!("{} ({})", b.name, b.id)
    }
}

fn map(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_and_sortable() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2026-01-16T10:30:05Z
        assert_eq!(utc_stamp(1_768_559_405), "20260116T103005Z");
        // A leap day.
        assert_eq!(utc_stamp(1_709_208_000), "20240229T120000Z");
        assert_eq!(
            stamp_to_rfc3339("20260116T103005Z").as_deref(),
            Some("2026-01-16T10:30:05Z")
        );
        assert_eq!(stamp_to_rfc3339("2026-01-16"), None);
    }

    #[test]
    fn labels_take_the_short_sha_of_github_sha() {
        let l = Label::now(Some("1A2B3C4D5E6F"));
        assert_eq!(l.sha.as_deref(), Some("1a2b3c4"));
        assert!(l.suffix().ends_with("Z-1a2b3c4"), "{}", l.suffix());
        let l = Label {
            secs: 1_768_559_405,
            sha: Some("1a2b3c4".into()),
        };
        let taken = ["b/20260116T103005Z-1a2b3c4", "b/20260116T103006Z-1a2b3c4"];
        assert_eq!(
            l.unique(|s| format!("b/{s}"), |n| taken.contains(&n)),
            "b/20260116T103007Z-1a2b3c4"
        );
        let l = Label::now(Some("not a sha!"));
        assert_eq!(l.sha, None);
    }

    #[test]
    fn newest_first_orders_by_creation_then_name() {
        let b = |name: &str, at: &str| Backup {
            provider: "neon",
            id: name.into(),
            name: name.into(),
            parent: None,
            parent_lsn: None,
            created_at: Some(at.into()),
            size: None,
            path: None,
            blocked: None,
        };
        let mut v = vec![
            b("a", "2026-01-01T00:00:00Z"),
            b("c", "2026-01-03T00:00:00Z"),
            b("b", "2026-01-03T00:00:00Z"),
        ];
        newest_first(&mut v);
        let names: Vec<&str> = v.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
    }
}
