//! What in a migration file can break the version still serving traffic: migrations run
//! before the new image rolls out, so for minutes the old code runs against the new schema.
//! Derived from the statements alone (drops, renames, type changes, a NOT NULL column
//! without a default, new constraints), each with the two-step (expand, then contract) way.

use std::collections::HashSet;

use super::analyze::{Cur, Relation, Tok, Token, lex};
use crate::migrate::{Migration, line_col, split};

/// A kind of change the running version may not survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DropColumn,
    RenameColumn,
    DropTable,
    RenameTable,
    DropView,
    RenameView,
    DropFunction,
    RenameFunction,
    ColumnType,
    NotNullWithoutDefault,
    NewConstraint,
}

impl Kind {
    /// The log's spelling.
    pub fn id(self) -> &'static str {
        match self {
            Kind::DropColumn => "drop_column",
            Kind::RenameColumn => "rename_column",
            Kind::DropTable => "drop_table",
            Kind::RenameTable => "rename_table",
            Kind::DropView => "drop_view",
            Kind::RenameView => "rename_view",
            Kind::DropFunction => "drop_function",
            Kind::RenameFunction => "rename_function",
            Kind::ColumnType => "column_type",
            Kind::NotNullWithoutDefault => "not_null_without_default",
            Kind::NewConstraint => "new_constraint",
        }
    }

    /// The two-step way: expand (compatible with both versions), deploy, then contract.
    pub fn advice(self) -> &'static str {
        match self {
            Kind::DropColumn => {
                "contract only, one release later: first deploy code that no longer reads or writes the column \
                 (remove it from the ORM's schema too), then drop it in a later migration"
            }
            Kind::DropTable | Kind::DropView | Kind::DropFunction => {
                "contract only, one release later: first deploy code that no longer uses it, then drop it in a \
                 later migration"
            }
            Kind::RenameColumn => {
                "expand: add the new column, keep both in step (a trigger, or code writing both) and backfill; \
                 deploy code that uses the new name; contract: drop the old column in a later migration"
            }
            Kind::RenameTable => {
                "expand: rename it and, in the same migration, `CREATE VIEW old_name AS SELECT * FROM new_name` \
                 (a simple view is updatable), then deploy code that uses the new name; contract: drop the view \
                 in a later migration"
            }
            Kind::RenameView | Kind::RenameFunction => {
                "expand: create it under the new name next to the old one; deploy code that uses the new name; \
                 contract: drop the old one in a later migration"
            }
            Kind::ColumnType => {
                "expand: add a column of the new type, keep both in step (a trigger) and backfill; deploy code \
                 that uses it; contract: drop the old column in a later migration"
            }
            Kind::NotNullWithoutDefault => {
                "expand: add the column nullable (or with a DEFAULT), deploy code that writes it, backfill; \
                 contract: SET NOT NULL in a later migration (after a validated CHECK (col IS NOT NULL), so it \
                 does not scan under ACCESS EXCLUSIVE)"
            }
            Kind::NewConstraint => {
                "expand: first deploy code that never writes a row the constraint rejects; contract: then add \
                 it in a later migration (NOT VALID, and VALIDATE CONSTRAINT in the one after)"
            }
        }
    }
}

/// One change that can break the running version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub kind: Kind,
    /// `users.phone`, `users`, `fp_score`.
    pub object: String,
    pub line: u32,
    /// What happens to the old code, in one sentence.
    pub message: String,
}

/// A change found in one statement, before the change set's context is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    pub object: String,
    /// The relation's (or function's) key: what "created in the change set" is matched on.
    pub key: String,
    pub message: String,
}

fn break_of(kind: Kind, rel: &Relation, column: Option<&str>, detail: Option<String>) -> Found {
    let object = match column {
        Some(c) => format!("{rel}.{c}"),
        None => rel.to_string(),
    };
    let d = detail.unwrap_or_default();
    let message = match kind {
        Kind::DropColumn => format!(
            "drops column {object}: the running version's queries that name it fail (column does not exist)"
        ),
        Kind::RenameColumn => format!(
            "renames column {object}{d}: the running version still uses the old name, and its queries fail"
        ),
        Kind::DropTable => {
            format!("drops table {object}: the running version's queries on it fail")
        }
        Kind::RenameTable => format!(
            "renames table {object}{d}: the running version still uses the old name, and its queries fail"
        ),
        Kind::DropView => format!("drops view {object}: the running version's queries on it fail"),
        Kind::RenameView => {
            format!("renames view {object}{d}: the running version still uses the old name")
        }
        Kind::DropFunction => {
            format!("drops function {object}: the running version's calls to it fail")
        }
        Kind::RenameFunction => format!(
            "renames function {object}{d}: the running version still calls it by the old name"
        ),
        Kind::ColumnType => format!(
            "changes the type of {object}{d}: the running version still reads and writes the old type"
        ),
        Kind::NotNullWithoutDefault => format!(
            "adds {object} NOT NULL without a DEFAULT: the running version's INSERTs do not set it, and fail"
        ),
        Kind::NewConstraint => {
            format!("{d} on {object}: writes the running version makes may violate it, and fail")
        }
    };
    Found {
        kind,
        object,
        key: rel.key().to_string(),
        message,
    }
}

/// Every change of one file that can break the running version, with its line. `created`
/// holds what the change set created before this file (tables, views, indexes, functions,
/// by key); the file's own creations are added, and changes to them are not flagged: no
/// running code uses them.
pub fn classify(m: &Migration, created: &mut HashSet<String>) -> Vec<Break> {
    let mut out = Vec::new();
    for st in &m.statements {
        let text = &m.sql[st.span.clone()];
        let start = st.span.start + split::code_start(text);
        let line = line_col(&m.sql, start).0;
        let toks = lex(text);
        if let Some(new) = creates(&toks) {
            created.insert(new);
        }
        for f in statement(&toks) {
            if created.contains(&f.key) {
                continue;
            }
            out.push(Break {
                kind: f.kind,
                object: f.object,
                line,
                message: f.message,
            });
        }
    }
    out
}

/// What the statement creates (a table, view or function), by key.
fn creates(toks: &[Token]) -> Option<String> {
    let mut c = Cur { t: toks, i: 0 };
    if !c.kw("CREATE") {
        return None;
    }
    // `CREATE OR REPLACE` of something that existed is not new: keep flagging its drop.
    if c.seq(&["OR", "REPLACE"]) {
        return None;
    }
    c.any(&["GLOBAL", "LOCAL"]);
    c.any(&["TEMP", "TEMPORARY", "UNLOGGED"]);
    c.seq(&["MATERIALIZED"]);
    if c.any(&["TABLE", "VIEW", "FUNCTION", "PROCEDURE"]) {
        c.seq(&["IF", "NOT", "EXISTS"]);
        return c.name().map(|n| n.key().to_string());
    }
    None
}

/// The statement's changes that can break the running version.
pub(super) fn statement(toks: &[Token]) -> Vec<Found> {
    let mut c = Cur { t: toks, i: 0 };
    let mut out = Vec::new();
    if c.kw("ALTER") {
        if c.kw("TABLE") {
            c.seq(&["IF", "EXISTS"]);
            c.kw("ONLY");
            let Some(table) = c.name() else {
                return out;
            };
            c.punct(b'*');
            for action in c.actions() {
                if let Some(b) = alter_table_action(action, &table) {
                    out.push(b);
                }
            }
        } else if c.seq(&["MATERIALIZED", "VIEW"]) || c.kw("VIEW") {
            c.seq(&["IF", "EXISTS"]);
            let Some(view) = c.name() else { return out };
            if c.kw("RENAME") {
                if c.kw("TO") {
                    let to = c.ident().map(|n| format!(" to {n}"));
                    out.push(break_of(Kind::RenameView, &view, None, to));
                } else {
                    c.kw("COLUMN");
                    let col = c.ident().unwrap_or_default();
                    c.kw("TO");
                    let to = c.ident().map(|n| format!(" to {n}"));
                    out.push(break_of(Kind::RenameColumn, &view, Some(&col), to));
                }
            } else if c.seq(&["SET", "SCHEMA"]) {
                let to = c.ident().map(|n| format!(" into schema {n}"));
                out.push(break_of(Kind::RenameView, &view, None, to));
            }
        } else if c.any(&["FUNCTION", "PROCEDURE"]) {
            let Some(f) = c.name() else { return out };
            if c.punct(b'(') {
                c.skip_group();
            }
            if c.seq(&["RENAME", "TO"]) {
                let to = c.ident().map(|n| format!(" to {n}"));
                out.push(break_of(Kind::RenameFunction, &f, None, to));
            } else if c.seq(&["SET", "SCHEMA"]) {
                let to = c.ident().map(|n| format!(" into schema {n}"));
                out.push(break_of(Kind::RenameFunction, &f, None, to));
            }
        }
    } else if c.kw("DROP") {
        let kind = if c.kw("TABLE") {
            Kind::DropTable
        } else if c.seq(&["MATERIALIZED", "VIEW"]) || c.kw("VIEW") {
            Kind::DropView
        } else if c.any(&["FUNCTION", "PROCEDURE"]) {
            Kind::DropFunction
        } else {
            return out;
        };
        c.seq(&["IF", "EXISTS"]);
        if kind == Kind::DropFunction {
            // `DROP FUNCTION f(int), g(text)`: names, each with its argument list.
            while let Some(f) = c.name() {
                out.push(break_of(kind, &f, None, None));
                if c.punct(b'(') {
                    c.skip_group();
                }
                if !c.punct(b',') {
                    break;
                }
            }
        } else {
            for t in c.name_list() {
                out.push(break_of(kind, &t, None, None));
            }
        }
    } else if c.kw("CREATE") && c.kw("UNIQUE") && c.kw("INDEX") {
        c.kw("CONCURRENTLY");
        c.seq(&["IF", "NOT", "EXISTS"]);
        if !c.peek_kw("ON") {
            c.name();
        }
        if c.kw("ON") {
            c.kw("ONLY");
            if let Some(t) = c.name() {
                out.push(break_of(
                    Kind::NewConstraint,
                    &t,
                    None,
                    Some("adds a unique index".into()),
                ));
            }
        }
    }
    out
}

/// One action of `ALTER TABLE table …`.
fn alter_table_action(action: &[Token], table: &Relation) -> Option<Found> {
    let mut a = Cur { t: action, i: 0 };
    if a.kw("DROP") {
        if a.peek_any(&["CONSTRAINT", "DEFAULT", "NOT", "IDENTITY", "EXPRESSION"]) {
            return None;
        }
        a.kw("COLUMN");
        a.seq(&["IF", "EXISTS"]);
        let name = a.ident()?;
        return Some(break_of(Kind::DropColumn, table, Some(&name), None));
    }
    if a.kw("RENAME") {
        if a.kw("TO") {
            let to = a.ident().map(|n| format!(" to {n}"));
            return Some(break_of(Kind::RenameTable, table, None, to));
        }
        if a.kw("CONSTRAINT") {
            return None;
        }
        a.kw("COLUMN");
        let name = a.ident()?;
        a.kw("TO");
        let to = a.ident().map(|n| format!(" to {n}"));
        return Some(break_of(Kind::RenameColumn, table, Some(&name), to));
    }
    if a.seq(&["SET", "SCHEMA"]) {
        let to = a.ident().map(|n| format!(" into schema {n}"));
        return Some(break_of(Kind::RenameTable, table, None, to));
    }
    if a.kw("ALTER") {
        a.kw("COLUMN");
        let name = a.ident()?;
        if a.seq(&["SET", "DATA", "TYPE"]) || a.kw("TYPE") {
            let ty = type_text(&action[a.i..]);
            return Some(break_of(
                Kind::ColumnType,
                table,
                Some(&name),
                (!ty.is_empty()).then(|| format!(" to {ty}")),
            ));
        }
        if a.seq(&["SET", "NOT", "NULL"]) {
            return Some(break_of(
                Kind::NewConstraint,
                table,
                None,
                Some(format!("makes {name} NOT NULL")),
            ));
        }
        return None;
    }
    if a.kw("ADD") {
        let named = if a.kw("CONSTRAINT") { a.ident() } else { None };
        let constraint = if a.kw("CHECK") {
            Some("a CHECK constraint")
        } else if a.kw("UNIQUE") {
            Some("a UNIQUE constraint")
        } else if a.seq(&["PRIMARY", "KEY"]) {
            Some("a primary key")
        } else if a.seq(&["FOREIGN", "KEY"]) {
            Some("a foreign key")
        } else if a.kw("EXCLUDE") {
            Some("an exclusion constraint")
        } else {
            None
        };
        if let Some(what) = constraint {
            let what = match named {
                Some(n) => format!("adds {what} ({n})"),
                None => format!("adds {what}"),
            };
            return Some(break_of(Kind::NewConstraint, table, None, Some(what)));
        }
        if named.is_some() {
            return None;
        }
        a.kw("COLUMN");
        a.seq(&["IF", "NOT", "EXISTS"]);
        let name = a.ident()?;
        return (not_null(&action[a.i..]) && !defaulted(&action[a.i..]))
            .then(|| break_of(Kind::NotNullWithoutDefault, table, Some(&name), None));
    }
    None
}

/// `NOT NULL` (or `PRIMARY KEY`, which implies it) among a column's top-level options.
fn not_null(rest: &[Token]) -> bool {
    let words = top_level_words(rest);
    words
        .windows(2)
        .any(|w| (w[0] == "NOT" && w[1] == "NULL") || (w[0] == "PRIMARY" && w[1] == "KEY"))
}

/// A column that fills itself: a DEFAULT, an identity, a generated column, a serial type.
fn defaulted(rest: &[Token]) -> bool {
    let words = top_level_words(rest);
    words.first().is_some_and(|w| {
        matches!(
            w.as_str(),
            "SERIAL" | "BIGSERIAL" | "SMALLSERIAL" | "SERIAL2" | "SERIAL4" | "SERIAL8"
        )
    }) || words.iter().any(|w| w == "DEFAULT" || w == "GENERATED")
}

fn top_level_words(rest: &[Token]) -> Vec<String> {
    let mut depth = 0i32;
    let mut out = Vec::new();
    for t in rest {
        match &t.tok {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => depth -= 1,
            Tok::Word(w) if depth == 0 => out.push(w.clone()),
            _ => {}
        }
    }
    out
}

/// The new type as written (`bigint`, `varchar(20)`), up to `USING`/`COLLATE`.
fn type_text(rest: &[Token]) -> String {
    let mut out = String::new();
    for t in rest {
        match &t.tok {
            Tok::Word(w) if w == "USING" || w == "COLLATE" => break,
            Tok::Word(_) => {
                if !out.is_empty() && !out.ends_with('(') {
                    out.push(' ');
                }
                out.push_str(&t.raw);
            }
            Tok::Quoted(q) => {
                if !out.is_empty() && !out.ends_with('(') {
                    out.push(' ');
                }
                out.push_str(q);
            }
            Tok::Punct(p) => out.push(*p as char),
            Tok::Str(_) | Tok::Other => out.push('…'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn kinds(sql: &str) -> Vec<(&'static str, String)> {
        statement(&lex(sql))
            .into_iter()
            .map(|f| (f.kind.id(), f.object))
            .collect()
    }

    #[test]
    fn drops_and_renames_of_what_the_old_code_uses_are_flagged() {
        assert_eq!(
            kinds("ALTER TABLE users DROP COLUMN phone, DROP CONSTRAINT c, DROP nick"),
            vec![
                ("drop_column", "users.phone".into()),
                ("drop_column", "users.nick".into())
            ]
        );
        assert_eq!(
            kinds("ALTER TABLE IF EXISTS \"Users\" RENAME COLUMN phone TO mobile"),
            vec![("rename_column", "Users.phone".into())]
        );
        assert_eq!(
            kinds("ALTER TABLE public.users RENAME TO accounts"),
            vec![("rename_table", "users".into())]
        );
        assert_eq!(
            kinds("DROP TABLE IF EXISTS a, b CASCADE"),
            vec![("drop_table", "a".into()), ("drop_table", "b".into())]
        );
        assert_eq!(
            kinds("DROP MATERIALIZED VIEW stats"),
            vec![("drop_view", "stats".into())]
        );
        assert_eq!(
            kinds("ALTER VIEW active_users RENAME TO live_users"),
            vec![("rename_view", "active_users".into())]
        );
        assert_eq!(
            kinds("DROP FUNCTION IF EXISTS score(int, text), other() CASCADE"),
            vec![
                ("drop_function", "score".into()),
                ("drop_function", "other".into())
            ]
        );
        assert_eq!(
            kinds("ALTER FUNCTION score(int) RENAME TO rank"),
            vec![("rename_function", "score".into())]
        );
        // Harmless for the running version.
        for sql in [
            "ALTER TABLE users RENAME CONSTRAINT a TO b",
            "ALTER TABLE users ALTER COLUMN phone DROP NOT NULL",
            "ALTER TABLE users DROP CONSTRAINT users_phone_key",
            "DROP INDEX users_phone_idx",
            "ALTER TABLE users ADD COLUMN nick text",
            "CREATE INDEX i ON users (phone)",
            "DROP TRIGGER t ON users",
        ] {
            assert_eq!(kinds(sql), vec![], "{sql}");
        }
    }

    #[test]
    fn type_changes_not_null_columns_and_new_constraints_are_flagged() {
        let all = |sql: &str| statement(&lex(sql));
        let t = all("ALTER TABLE users ALTER COLUMN age SET DATA TYPE bigint USING age::bigint");
        assert_eq!(t[0].kind, Kind::ColumnType);
        assert!(
            t[0].message.contains("users.age to bigint"),
            "{}",
            t[0].message
        );
        assert_eq!(
            kinds("ALTER TABLE users ALTER age TYPE varchar(20)")[0].0,
            "column_type"
        );
        assert_eq!(
            kinds("ALTER TABLE users ADD COLUMN tenant int NOT NULL"),
            vec![("not_null_without_default", "users.tenant".into())]
        );
        for fills_itself in [
            "ALTER TABLE users ADD COLUMN tenant int NOT NULL DEFAULT 1",
            "ALTER TABLE users ADD COLUMN n bigserial NOT NULL",
            "ALTER TABLE users ADD COLUMN n int GENERATED ALWAYS AS IDENTITY NOT NULL",
            "ALTER TABLE users ADD COLUMN c int CHECK (c IS NOT NULL)",
        ] {
            assert_eq!(kinds(fills_itself), vec![], "{fills_itself}");
        }
        let c = all(
            "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (u) REFERENCES users (id) NOT VALID",
        );
        assert_eq!(c[0].kind, Kind::NewConstraint);
        assert_eq!(c[0].object, "orders");
        assert!(
            c[0].message
                .starts_with("adds a foreign key (orders_user_fk) on orders"),
            "{}",
            c[0].message
        );
        assert_eq!(
            kinds("ALTER TABLE users ALTER COLUMN phone SET NOT NULL, ADD CHECK (age > 0)"),
            vec![
                ("new_constraint", "users".into()),
                ("new_constraint", "users".into())
            ]
        );
        assert_eq!(
            kinds("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS u ON users (email)"),
            vec![("new_constraint", "users".into())]
        );
    }

    #[test]
    fn changes_to_what_the_change_set_created_are_not_flagged() {
        let m = Migration::from_text(
            "t.sql".into(),
            PathBuf::from("t.sql"),
            "CREATE TABLE drafts (id int, body text);\n\
             ALTER TABLE drafts DROP COLUMN body;\n\
             CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';\n\
             DROP FUNCTION f();\n\
             ALTER TABLE users DROP COLUMN phone;\n",
        );
        let mut created = HashSet::from(["earlier".to_string()]);
        let found = classify(&m, &mut created);
        assert_eq!(
            found
                .iter()
                .map(|b| (b.kind, b.object.as_str(), b.line))
                .collect::<Vec<_>>(),
            vec![(Kind::DropColumn, "users.phone", 5)]
        );
        assert!(created.contains("drafts") && created.contains("f"));
        let later = Migration::from_text(
            "u.sql".into(),
            PathBuf::from("u.sql"),
            "DROP TABLE earlier;\nDROP TABLE drafts;\n",
        );
        assert!(classify(&later, &mut created).is_empty());
    }

    #[test]
    fn every_kind_has_advice_that_names_both_steps() {
        for k in [
            Kind::DropColumn,
            Kind::RenameColumn,
            Kind::DropTable,
            Kind::RenameTable,
            Kind::DropView,
            Kind::RenameView,
            Kind::DropFunction,
            Kind::RenameFunction,
            Kind::ColumnType,
            Kind::NotNullWithoutDefault,
            Kind::NewConstraint,
        ] {
            let a = k.advice();
            assert!(a.contains("deploy"), "{a}");
            assert!(
                a.contains("later migration") || a.contains("one release later"),
                "{a}"
            );
        }
    }
}
