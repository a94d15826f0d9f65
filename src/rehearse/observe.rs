//! The locks a transactional file really holds on the copy: `pg_locks` read inside its own
//! transaction just before its commit (every lock is held until then), mapped to the names
//! the relations had before the change set, and the strongest mode per relation.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::{AssertSqlSafe, Row as _};

use crate::error::Error;
use crate::migrate;
use crate::report::log::{LockMode, LockRecord};

/// Run by the engine inside each transactional file's transaction, after the file and
/// before its ledger row and COMMIT ([`migrate::apply_observing`]). Only this backend's
/// relation locks on user relations: oids below 16384 are the system catalogs, locked by
/// any DDL (and by this very query) and meaningless to a reviewer. The relation's current
/// name comes from the transaction's own view of `pg_class`: a relation dropped by the
/// file has none there, a renamed one has its new name.
///
/// Why before each file's COMMIT and not once per batch: the engine gives every file its
/// own `BEGIN … COMMIT` even when several files travel in one message, so locks never
/// accumulate across files and what is read here is exactly this file's.
pub const OBSERVE_SQL: &str = "SELECT 'fp:observe', coalesce(json_agg(json_build_object(\
'oid', l.relation::bigint, 'mode', l.mode, 'schema', n.nspname::text, 'name', c.relname::text, \
'kind', c.relkind::text)), '[]')::text \
FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation LEFT JOIN pg_namespace n ON n.oid = c.relnamespace \
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.relation >= 16384::oid \
AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());\n";

/// A user relation of the copy before any pending file ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rel {
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`: `r` table, `p` partitioned, `i` index, `v` view, `m` materialized
    /// view, `S` sequence, `t` TOAST, …
    pub kind: String,
    /// The planner's row estimate (`reltuples`; negative when never analysed).
    pub rows: i64,
}

/// The copy's user relations by oid, before the change set.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub rels: HashMap<i64, Rel>,
}

/// Reads the copy's catalog (user relations only).
pub async fn catalog(s: &migrate::Settings) -> Result<Catalog, Error> {
    let mut conn = s.url.connect(s.connect_timeout).await?;
    let sql = "SELECT c.oid::bigint::text, n.nspname::text, c.relname::text, c.relkind::text, c.reltuples::bigint::text \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid >= 16384";
    let rows = sqlx::raw_sql(AssertSqlSafe(sql))
        .fetch_all(&mut conn)
        .await
        .map_err(|e| migrate::ledger::sql_error("reading the copy's relations", &e));
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::Connection::close(conn),
    )
    .await;
    let mut out = Catalog::default();
    for r in rows? {
        let col = |i| r.try_get::<String, _>(i).unwrap_or_default();
        let Ok(oid) = col(0).parse::<i64>() else {
            continue;
        };
        out.rels.insert(
            oid,
            Rel {
                schema: col(1),
                name: col(2),
                kind: col(3),
                rows: col(4).parse().unwrap_or(-1),
            },
        );
    }
    Ok(out)
}

/// One relation's strongest observed lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// As a reviewer knows it: the name before the change set (`index users_phone_idx`,
    /// `view active_users`, a table bare), schema-qualified outside `public`.
    pub relation: String,
    /// The bare name of a table (for its rows), `None` for other kinds.
    pub table: Option<String>,
    pub mode: LockMode,
    /// Created by this file or an earlier pending one: no running code uses it yet.
    pub created: bool,
    /// Its name after the file, when the change set renamed it.
    pub renamed_to: Option<String>,
    pub rows: Option<i64>,
}

fn label(schema: &str, name: &str, kind: &str) -> String {
    let q = if schema == "public" || schema.is_empty() {
        name.to_string()
    } else {
        format!("{schema}.{name}")
    };
    match kind {
        "i" | "I" => format!("index {q}"),
        "v" => format!("view {q}"),
        "m" => format!("materialized view {q}"),
        "S" => format!("sequence {q}"),
        _ => q,
    }
}

fn is_toast(schema: &str, kind: &str) -> bool {
    kind == "t" || schema == "pg_toast"
}

/// The observer's JSON for one file, against the catalog before the change set: the
/// strongest mode per relation, strongest first (then by name); TOAST tables (locked with
/// their table) and relations both created and dropped within the change set left out.
pub fn strongest_per_relation(observed: &Value, before: &Catalog) -> Vec<Observed> {
    let mut by_oid: HashMap<i64, Observed> = HashMap::new();
    for l in observed.as_array().into_iter().flatten() {
        let (Some(oid), Some(mode)) = (
            l["oid"].as_i64(),
            l["mode"].as_str().and_then(LockMode::from_pg),
        ) else {
            continue;
        };
        let now = l["name"].as_str().map(|name| {
            (
                l["schema"].as_str().unwrap_or_default(),
                name,
                l["kind"].as_str().unwrap_or_default(),
            )
        });
        let entry = match (before.rels.get(&oid), now) {
            (Some(r), _) if is_toast(&r.schema, &r.kind) => continue,
            (_, Some((schema, _, kind))) if is_toast(schema, kind) => continue,
            (Some(r), now) => Observed {
                relation: label(&r.schema, &r.name, &r.kind),
                table: matches!(r.kind.as_str(), "r" | "p" | "m" | "f").then(|| r.name.clone()),
                mode,
                created: false,
                renamed_to: now
                    .filter(|(schema, name, _)| *name != r.name || *schema != r.schema)
                    .map(|(schema, name, _)| label(schema, name, "r")),
                rows: (r.rows >= 0).then_some(r.rows),
            },
            (None, Some((schema, name, kind))) => Observed {
                relation: label(schema, name, kind),
                table: None,
                mode,
                created: true,
                renamed_to: None,
                rows: None,
            },
            (None, None) => continue,
        };
        by_oid
            .entry(oid)
            .and_modify(|o| o.mode = o.mode.max(entry.mode))
            .or_insert(entry);
    }
    let mut out: Vec<Observed> = by_oid.into_values().collect();
    out.sort_by(|a, b| {
        b.mode
            .cmp(&a.mode)
            .then(a.created.cmp(&b.created))
            .then(a.relation.cmp(&b.relation))
    });
    out
}

/// `ACCESS EXCLUSIVE on users, index users_phone_idx`: the strongest mode on relations that
/// existed before the change set, and every relation it is on. `None` when the file locks
/// nothing that existed.
pub fn strongest(locks: &[Observed]) -> Option<String> {
    let existing: Vec<&Observed> = locks.iter().filter(|l| !l.created).collect();
    let mode = existing.iter().map(|l| l.mode).max()?;
    let names: Vec<String> = existing
        .iter()
        .filter(|l| l.mode == mode)
        .map(|l| l.relation.clone())
        .collect();
    Some(format!("{mode} on {}", names.join(", ")))
}

/// The log's records: one per relation, with what a reviewer needs to read it.
pub fn records(locks: &[Observed]) -> Vec<LockRecord> {
    locks
        .iter()
        .map(|l| LockRecord {
            mode: l.mode.name().into(),
            relation: l.relation.clone(),
            line: None,
            created: l.created,
            renamed_to: l.renamed_to.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        let rel = |schema: &str, name: &str, kind: &str, rows| Rel {
            schema: schema.into(),
            name: name.into(),
            kind: kind.into(),
            rows,
        };
        Catalog {
            rels: HashMap::from([
                (20_000, rel("public", "users", "r", 120_000)),
                (20_001, rel("public", "users_phone_idx", "i", 0)),
                (20_002, rel("pg_toast", "pg_toast_20000", "t", 0)),
                (20_003, rel("public", "invitation_codes", "r", -1)),
                (20_004, rel("public", "active_users", "v", -1)),
                (20_005, rel("billing", "invoices", "r", 10)),
            ]),
        }
    }

    #[test]
    fn observed_locks_are_named_as_before_the_change_set_with_the_strongest_mode_each() {
        let seen = json!([
            // users: several modes held at once; the strongest counts.
            { "oid": 20_000, "mode": "ShareLock", "schema": "public", "name": "users", "kind": "r" },
            { "oid": 20_000, "mode": "AccessExclusiveLock", "schema": "public", "name": "users", "kind": "r" },
            { "oid": 20_000, "mode": "RowExclusiveLock", "schema": "public", "name": "users", "kind": "r" },
            // dropped by the file: no name in the transaction's pg_class any more.
            { "oid": 20_001, "mode": "AccessExclusiveLock" },
            // its replacement of the same name, created by the file.
            { "oid": 30_000, "mode": "AccessExclusiveLock", "schema": "public", "name": "users_phone_idx", "kind": "i" },
            // TOAST goes with its table.
            { "oid": 20_002, "mode": "AccessExclusiveLock" },
            { "oid": 30_001, "mode": "ShareLock", "schema": "pg_toast", "name": "pg_toast_30002", "kind": "t" },
            // renamed by the change set.
            { "oid": 20_003, "mode": "AccessExclusiveLock", "schema": "public", "name": "invites", "kind": "r" },
            { "oid": 20_004, "mode": "AccessExclusiveLock", "schema": "public", "name": "active_users", "kind": "v" },
            { "oid": 20_005, "mode": "ShareRowExclusiveLock", "schema": "billing", "name": "invoices", "kind": "r" },
            // created and dropped within the change set: nothing to say.
            { "oid": 30_002, "mode": "AccessExclusiveLock" },
            { "oid": 20_000, "mode": "NotALock" },
        ]);
        let got = strongest_per_relation(&seen, &catalog());
        let short: Vec<(String, LockMode, bool, Option<String>)> = got
            .iter()
            .map(|o| (o.relation.clone(), o.mode, o.created, o.renamed_to.clone()))
            .collect();
        use LockMode::*;
        assert_eq!(
            short,
            vec![
                ("index users_phone_idx".into(), AccessExclusive, false, None),
                (
                    "invitation_codes".into(),
                    AccessExclusive,
                    false,
                    Some("invites".into())
                ),
                ("users".into(), AccessExclusive, false, None),
                ("view active_users".into(), AccessExclusive, false, None),
                ("index users_phone_idx".into(), AccessExclusive, true, None),
                ("billing.invoices".into(), ShareRowExclusive, false, None),
            ]
        );
        assert_eq!(got[2].rows, Some(120_000));
        assert_eq!(got[1].rows, None, "never analysed: unknown, not -1");
        assert_eq!(got[2].table.as_deref(), Some("users"));
        assert_eq!(got[0].table, None);
        assert_eq!(
            strongest(&got).unwrap(),
            "ACCESS EXCLUSIVE on index users_phone_idx, invitation_codes, users, view active_users"
        );
        let r = records(&got);
        assert!(r[4].created && r[4].line.is_none());
    }

    #[test]
    fn a_file_that_locks_only_what_it_creates_has_no_strongest_lock() {
        let seen = json!([
            { "oid": 40_000, "mode": "AccessExclusiveLock", "schema": "public", "name": "agent_notes", "kind": "r" },
        ]);
        let got = strongest_per_relation(&seen, &catalog());
        assert_eq!(got.len(), 1);
        assert!(got[0].created);
        assert_eq!(strongest(&got), None);
        assert!(strongest_per_relation(&json!([]), &catalog()).is_empty());
    }
}
