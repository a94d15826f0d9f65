//! The copy of production a rehearsal runs on, and its removal in every outcome: a Neon
//! branch with a compute endpoint and an `expires_at` safety net, or, for any other
//! PostgreSQL, a scratch database on the same server restored from a fresh `pg_dump`.
//!
//! What exists is written into [`Live`] *before* the request that creates it is sent, so a
//! cancelled run (its future dropped mid-request) still knows what to delete.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sqlx::AssertSqlSafe;

use crate::backup::neon::{self, Neon};
use crate::backup::pg_dump::{self, PgDump};
use crate::backup::{Label, Provider};
use crate::db::{DatabaseUrl, quote_ident};
use crate::error::Error;
use crate::migrate::ledger::sql_error;
use crate::redact::Secret;
use crate::report::log::CopyRecord;

/// Every branch a rehearsal creates is named with this prefix; cleanup deletes nothing else.
pub const BRANCH_PREFIX: &str = "flightplan/rehearse/";
/// Scratch databases of the pg_dump path start with this.
pub const DATABASE_PREFIX: &str = "flightplan_rehearse_";

/// How long cleanup may take: a cancelled GitHub job is killed about 10 s after SIGINT, so
/// the signal path must be quick; the branch's `expires_at` is the net below it.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);

/// What exists right now and must go at the end.
#[derive(Debug, Default)]
pub struct Live {
    /// Neon: the settings, the branch's name (known before the POST) and id (after).
    pub neon: Option<(neon::Settings, String, Option<String>)>,
    /// pg_dump: the server (production's URL) and the scratch database's name.
    pub scratch: Option<(DatabaseUrl, String)>,
    /// pg_dump: the private directory holding production's archive.
    pub archive_dir: Option<PathBuf>,
}

/// A Neon branch of the production branch with a `read_write` endpoint, waited for, and
/// its direct connection URI (a secret: the role's password is in it).
pub async fn neon_branch(
    ns: &neon::Settings,
    label: &Label,
    pr: Option<u64>,
    expires_at: &str,
    database: &str,
    role: &str,
    live: &RefCell<Live>,
) -> Result<(Secret, CopyRecord), Error> {
    let client = Neon::new(ns.clone())?;
    let all = client.branches(None).await?;
    let parent = client.production(&all)?.clone();
    let prefix = match pr {
        Some(n) => format!("{BRANCH_PREFIX}pr-{n}-"),
        None => BRANCH_PREFIX.to_string(),
    };
    let name = label.unique(
        |s| format!("{prefix}{s}"),
        |n| all.iter().any(|b| b.name == n),
    );
    let mut annotations = serde_json::Map::new();
    annotations.insert("created-by".into(), Value::from("flightplan rehearse"));
    if let Some(n) = pr {
        annotations.insert("github-pr-number".into(), Value::from(n.to_string()));
    }
    if let Some(sha) = &label.sha {
        annotations.insert("github-commit-sha".into(), Value::from(sha.clone()));
    }
    tracing::info!(
        "creating Neon branch {name} of {} ({}) with a compute endpoint; it expires at {expires_at}",
        parent.name,
        parent.id
    );
    live.borrow_mut().neon = Some((ns.clone(), name.clone(), None));
    let (branch, endpoints, ops) = client
        .create_with_endpoint(&parent, &name, expires_at, Value::Object(annotations))
        .await?;
    if let Some(n) = live.borrow_mut().neon.as_mut() {
        n.2 = Some(branch.id.clone());
    }
    let mut record = CopyRecord {
        provider: "neon".into(),
        name: name.clone(),
        id: Some(branch.id.clone()),
        parent: Some(parent.name.clone()),
        expires_at: Some(
            branch
                .expires_at
                .clone()
                .unwrap_or_else(|| expires_at.to_string()),
        ),
        ..Default::default()
    };
    let ready = client.settle(&branch.id, &ops, "rehearsal copy").await?;
    if ready.parent_id.as_deref() != Some(parent.id.as_str()) {
        return Err(Error::failure(format!(
            "Neon created branch {} ({}) with parent {:?}, not {}: refusing to rehearse on it",
            ready.name, ready.id, ready.parent_id, parent.id
        ))
        .hint("look at the branch in the Neon console; it is deleted now"));
    }
    if let Some(e) = &ready.expires_at {
        record.expires_at = Some(e.clone());
    }
    let endpoint = match endpoints.into_iter().find(|e| e.kind == "read_write") {
        Some(e) => e,
        None => client
            .endpoints(&branch.id)
            .await?
            .into_iter()
            .find(|e| e.kind == "read_write")
            .ok_or_else(|| {
                Error::failure(format!(
                    "Neon created branch {name} ({}) without a read_write compute endpoint",
                    branch.id
                ))
                .hint("the project may be at its compute limit; check the Neon console")
            })?,
    };
    let uri = client
        .connection_uri(&branch.id, &endpoint.id, database, role)
        .await?;
    Ok((uri, record))
}

/// A scratch database on production's server, restored from a fresh `pg_dump` of
/// production (the backup module's dump, verification and single-transaction restore).
pub async fn scratch_database(
    production: &DatabaseUrl,
    raw_url: &str,
    timeout: Duration,
    connect_timeout: Duration,
    label: &Label,
    live: &RefCell<Live>,
) -> Result<(DatabaseUrl, CopyRecord), Error> {
    let tag = format!(
        "{}_{}",
        std::process::id(),
        rand::random_range(0..1_000_000u32)
    );
    let name = format!(
        "{DATABASE_PREFIX}{}_{tag}",
        label.suffix().to_ascii_lowercase().replace('-', "_")
    );
    // The archive holds production's data: a directory only this user can read, removed
    // in every outcome.
    let dir = std::env::temp_dir().join(format!("flightplan-rehearse-{tag}"));
    live.borrow_mut().archive_dir = Some(dir.clone());
    private_dir(&dir)?;
    let dump = pg_dump::Settings::new(raw_url, production.clone(), dir.clone(), timeout)?;
    let archive = PgDump::new(dump).create(label).await?;

    let mut admin = production.connect(connect_timeout).await?;
    live.borrow_mut().scratch = Some((production.clone(), name.clone()));
    let created = sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_ident(&name)
    )))
    .execute(&mut admin)
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sqlx::Connection::close(admin)).await;
    created.map_err(|e| {
        sql_error("creating the scratch database to rehearse on", &e).hint(
            "the DATABASE_URL user needs CREATEDB on the server (ALTER ROLE … CREATEDB), or use a Neon branch",
        )
    })?;
    let mut scratch_raw = url::Url::parse(raw_url)
        .map_err(|e| Error::usage(format!("DATABASE_URL is not a valid URL: {e}")))?;
    scratch_raw.set_path(&format!("/{name}"));
    let scratch_url = production.with_database(&name);
    let restore = pg_dump::Settings::new(scratch_raw.as_str(), scratch_url.clone(), dir, timeout)?;
    tracing::info!(
        "restoring production's archive into scratch database {name} (production is not touched)"
    );
    PgDump::new(restore).restore(&archive, label).await?;
    Ok((
        scratch_url,
        CopyRecord {
            provider: "pg_dump".into(),
            name,
            parent: Some(production.database().to_string()),
            ..Default::default()
        },
    ))
}

fn private_dir(dir: &std::path::Path) -> Result<(), Error> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| {
        Error::failure(format!(
            "cannot create a private directory for production's archive at {}: {e}",
            dir.display()
        ))
        .hint("set TMPDIR to a writable directory")
    })
}

/// Removes what exists (unless `keep`), within [`CLEANUP_TIMEOUT`]. Returns the
/// disposition (`deleted`, `kept`, `not_deleted`) and why it could not be removed.
pub async fn cleanup(live: &Live, keep: bool) -> (String, Option<String>) {
    // The archive is production's data on this runner's disk: it goes even with --keep.
    if let Some(dir) = &live.archive_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    if keep {
        return ("kept".into(), None);
    }
    let work = async {
        if let Some((ns, name, id)) = &live.neon {
            let client = Neon::new(neon::Settings {
                timeout: CLEANUP_TIMEOUT,
                ..ns.clone()
            })?;
            let id = match id {
                Some(id) => Some(id.clone()),
                // Cancelled while the POST was in flight: it may have landed.
                None => client.branch_named(name).await?.map(|b| b.id),
            };
            if let Some(id) = id {
                client.delete_own(&id, name, BRANCH_PREFIX).await?;
                tracing::info!("deleted Neon branch {name} ({id})");
            }
        }
        if let Some((server, name)) = &live.scratch {
            let mut admin = server.connect(Duration::from_secs(10)).await?;
            let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            )))
            .execute(&mut admin)
            .await;
            let _ =
                tokio::time::timeout(Duration::from_secs(2), sqlx::Connection::close(admin)).await;
            dropped.map_err(|e| sql_error(&format!("dropping scratch database {name}"), &e))?;
            tracing::info!("dropped scratch database {name}");
        }
        Ok::<(), Error>(())
    };
    let failed = match tokio::time::timeout(CLEANUP_TIMEOUT, work).await {
        Ok(Ok(())) => return ("deleted".into(), None),
        Ok(Err(e)) => e.message,
        Err(_) => format!("no answer within {}s", CLEANUP_TIMEOUT.as_secs()),
    };
    let what = match (&live.neon, &live.scratch) {
        (Some((_, name, id)), _) => format!(
            "delete Neon branch {name}{} in the Neon console (it also expires by itself)",
            id.as_ref().map(|i| format!(" ({i})")).unwrap_or_default()
        ),
        (None, Some((_, name))) => {
            format!("drop it by hand: DROP DATABASE \"{name}\" WITH (FORCE)")
        }
        (None, None) => "nothing was created".into(),
    };
    tracing::warn!("cleanup failed: {failed}; {what}");
    ("not_deleted".into(), Some(format!("{failed}; {what}")))
}
