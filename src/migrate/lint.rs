//! squawk's rule set on pending migration files, with flightplan's context applied: which findings are reported and which are suppressed, with the reason.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;
use squawk_linter::{Linter, Rule};
use squawk_syntax::SourceFile;
use squawk_syntax::ast::{self, AstNode};

use super::line_col;

/// The squawk release the rules come from (pinned in Cargo.toml).
pub const SQUAWK_VERSION: &str = "2.68.0";

/// Rules that are only style: they judge a schema's design, not what applying the file does
/// to a running app, so they are off unless `[rehearse] lint.include` names them.
pub const STYLE: &[(&str, &str)] = &[
    (
        "prefer-bigint-over-int",
        "a column type chosen for growth; applying it is as safe as bigint",
    ),
    (
        "prefer-bigint-over-smallint",
        "a column type chosen for growth; applying it is as safe as bigint",
    ),
    (
        "prefer-identity",
        "serial or identity is a design choice; both apply the same way",
    ),
    (
        "prefer-text-field",
        "varchar(n) or text is a design choice; only a later change of n costs a rewrite, and that change is linted itself",
    ),
    (
        "prefer-timestamp-tz",
        "the column's type is a design choice; it takes the same locks either way",
    ),
    (
        "ban-char-field",
        "the column's type is a design choice; it takes the same locks either way",
    ),
    (
        "require-enum-value-ordering",
        "where a new enum value sorts is a design choice; adding it takes the same lock either way",
    ),
    (
        "require-table-schema",
        "schema-qualified names are a convention (opt-in in squawk too)",
    ),
];

/// Rules flightplan's engine makes moot: every file runs with `lock_timeout` and
/// `statement_timeout` from `[migrate]` (`SET LOCAL`, or `SET` for a `-- no-transaction` file).
const SET_BY_FLIGHTPLAN: &[(&str, &str)] = &[
    (
        "require-lock-timeout",
        "flightplan runs every file with SET LOCAL lock_timeout ([migrate] lock_timeout, default 5s; a -- no-transaction file with SET lock_timeout on its session)",
    ),
    (
        "require-statement-timeout",
        "flightplan runs every file with SET LOCAL statement_timeout ([migrate] statement_timeout; 0 leaves the server's; a -- no-transaction file with SET on its session)",
    ),
];

/// How a rule's harm depends on the table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    /// A scan, rewrite or index build: short below `large_table_rows`.
    Scan,
    /// Fails, or breaks, only when the table has rows at all.
    NonEmpty,
}

/// Rules whose cost grows with the rows of the table they act on.
const SIZE: &[(&str, Size)] = &[
    ("require-concurrent-index-creation", Size::Scan),
    ("adding-foreign-key-constraint", Size::Scan),
    ("constraint-missing-not-valid", Size::Scan),
    ("adding-serial-primary-key-field", Size::Scan),
    ("disallowed-unique-constraint", Size::Scan),
    ("changing-column-type", Size::Scan),
    ("adding-field-with-default", Size::Scan),
    ("adding-not-nullable-field", Size::Scan),
    ("prefer-repack", Size::Scan),
    ("adding-required-field", Size::NonEmpty),
];

/// `[rehearse] lint`: which rules run, on top of squawk's defaults minus [`STYLE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl Rules {
    /// Checks every id against squawk's rule set; `Err` names the first unknown one.
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Result<Rules, String> {
        for id in include.iter().chain(&exclude) {
            if id.parse::<Rule>().is_err() {
                return Err(id.clone());
            }
        }
        Ok(Rules { include, exclude })
    }

    fn linter(&self) -> Linter {
        let parse =
            |ids: &[String]| -> Vec<Rule> { ids.iter().filter_map(|r| r.parse().ok()).collect() };
        let include = parse(&self.include);
        let mut exclude = parse(&self.exclude);
        for (id, _) in STYLE {
            let rule: Rule = id.parse().expect("a squawk rule id");
            if !include.contains(&rule) {
                exclude.push(rule);
            }
        }
        Linter::with_rules(&include, &exclude)
    }

    /// The rule ids that would run, sorted.
    pub fn enabled(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.linter().rules.iter().map(Rule::to_string).collect();
        ids.sort();
        ids
    }
}

/// Every rule id squawk knows, sorted (for the error naming an unknown one).
pub fn known_rules() -> Vec<String> {
    let mut ids: Vec<String> = enum_iterator::all::<Rule>()
        .map(|r| r.to_string())
        .collect();
    ids.sort();
    ids
}

/// One pending file as the engine will run it.
#[derive(Debug, Clone)]
pub struct LintFile<'a> {
    pub filename: &'a str,
    /// Shown in `file:line` and annotations.
    pub path: &'a str,
    /// The text as sent to the server (a `BEGIN; … COMMIT;` wrapper blanked out).
    pub sql: &'a str,
    /// Runs in its own transaction (`false`: `-- no-transaction`).
    pub transaction: bool,
}

/// What flightplan knows beyond the files.
#[derive(Debug, Clone, Default)]
pub struct Context<'a> {
    pub rules: Rules,
    /// Rows per table on the copy (names as PostgreSQL folds them, unqualified); `None`
    /// without a copy.
    pub rows: Option<&'a HashMap<String, u64>>,
    /// From how many rows a scan or index build counts as long (`[rehearse] large_table_rows`).
    pub large_table_rows: u64,
}

/// What happens to a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "disposition", rename_all = "lowercase")]
pub enum Disposition {
    Reported,
    /// Shown with its reason, not counted.
    Suppressed {
        reason: String,
    },
}

/// One of squawk's violations, judged in context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub rule: String,
    pub message: String,
    pub help: Option<String>,
    /// The table the statement acts on, when it acts on one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// For rules whose cost depends on the table's rows: what the copy says, or
    /// `unconfirmed: no copy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<String>,
    #[serde(flatten)]
    pub disposition: Disposition,
}

impl Finding {
    pub fn reported(&self) -> bool {
        self.disposition == Disposition::Reported
    }

    /// `path:line: rule: message`, then the note and squawk's help indented.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}:{}: {}: {}\n",
            self.path, self.line, self.rule, self.message
        );
        if let Disposition::Suppressed { reason } = &self.disposition {
            let _ = writeln!(s, "  suppressed: {reason}");
        }
        if let Some(r) = &self.rows {
            let _ = writeln!(s, "  rows: {r}");
        }
        if let Some(h) = &self.help {
            let _ = writeln!(s, "  help: {h}");
        }
        s
    }
}

/// Where squawk's parser gave up: its rules may miss statements there. PostgreSQL may
/// still accept the text, so this is a note, not a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unparsed {
    pub file: String,
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// The findings of a change set, in file order, and where squawk could not parse.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub unparsed: Vec<Unparsed>,
}

impl Report {
    pub fn reported(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.reported())
    }

    pub fn suppressed(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| !f.reported())
    }
}

/// The text of `migrate lint`: reported findings first, then the suppressed ones with their
/// reasons (the timeout rules, suppressed in every file, as one line), then a summary.
pub fn render(report: &Report, files: usize, scope: &str) -> String {
    let mut t = String::new();
    for f in report.reported() {
        t.push_str(&f.render());
    }
    let (timeouts, others): (Vec<&Finding>, Vec<&Finding>) = report
        .suppressed()
        .partition(|f| SET_BY_FLIGHTPLAN.iter().any(|(id, _)| *id == f.rule));
    if !others.is_empty() {
        let _ = writeln!(t, "suppressed by flightplan's context:");
        for f in &others {
            t.push_str(&f.render());
        }
    }
    if !timeouts.is_empty() {
        let _ = writeln!(
            t,
            "{} require-lock-timeout/require-statement-timeout finding(s) suppressed: flightplan runs every file with SET LOCAL lock_timeout and statement_timeout ([migrate] lock_timeout, statement_timeout)",
            timeouts.len()
        );
    }
    let reported = report.reported().count();
    let _ = writeln!(
        t,
        "{files} file(s) linted ({scope}) with squawk {SQUAWK_VERSION}: {}, {} suppressed",
        match reported {
            0 => "no findings".to_string(),
            n => format!("{n} finding(s)"),
        },
        others.len() + timeouts.len()
    );
    t
}

/// The objects a statement acts on or creates, as PostgreSQL folds their names.
#[derive(Debug, Default)]
struct Objects {
    /// Tables it acts on (ALTER TABLE, CREATE INDEX ON, DROP TABLE).
    tables: Vec<String>,
    /// Indexes it acts on (DROP INDEX).
    indexes: Vec<String>,
    created_tables: Vec<String>,
    /// Index name and its table.
    created_indexes: Vec<(String, String)>,
}

fn segment(path: Option<ast::PathRef>) -> Option<String> {
    // squawk's text() is the name as PostgreSQL resolves it (unquoted folded, quoted kept),
    // as the copy's row counts are keyed.
    path.and_then(|p| p.segment()).map(|s| s.text())
}

fn table_ref(r: Option<ast::TableRelationName>) -> Option<String> {
    segment(
        r.and_then(|r| r.table_name_ref())
            .and_then(|t| t.path_ref()),
    )
}

fn objects(stmt: &ast::Stmt) -> Objects {
    let mut o = Objects::default();
    match stmt {
        ast::Stmt::CreateTable(c) => {
            if let Some(n) = c
                .table_name()
                .and_then(|t| t.path())
                .and_then(|p| p.segment())
            {
                o.created_tables.push(n.text());
            }
        }
        ast::Stmt::CreateTableAs(c) => {
            if let Some(n) = c
                .table_name()
                .and_then(|t| t.path())
                .and_then(|p| p.segment())
            {
                o.created_tables.push(n.text());
            }
        }
        ast::Stmt::AlterTable(a) => {
            if let Some(t) = table_ref(a.table_relation_name()) {
                for action in a.actions() {
                    if let ast::AlterTableAction::TableRenameTo(r) = action
                        && let Some(n) = r
                            .table_name()
                            .and_then(|t| t.path())
                            .and_then(|p| p.segment())
                    {
                        // Renamed, it is still the table the change set made (see `lint`).
                        o.created_tables.push(n.text());
                    }
                }
                o.tables.push(t);
            }
        }
        ast::Stmt::CreateIndex(c) => {
            if let Some(t) = table_ref(c.table_relation_name()) {
                if let Some(n) = c.index().and_then(|i| i.path()).and_then(|p| p.segment()) {
                    o.created_indexes.push((n.text(), t.clone()));
                }
                o.tables.push(t);
            }
        }
        ast::Stmt::DropIndex(d) => {
            o.indexes = d
                .index_refs()
                .filter_map(|i| segment(i.path_ref()))
                .collect();
        }
        ast::Stmt::DropTable(d) => {
            o.tables = d
                .table_name_refs()
                .filter_map(|t| segment(t.path_ref()))
                .collect();
        }
        _ => {}
    }
    o
}

/// Lints every file, in order, carrying what earlier files create into the later ones.
pub fn lint(files: &[LintFile<'_>], ctx: &Context<'_>) -> Report {
    let mut report = Report::default();
    // Tables and indexes no running code can use yet: made by this change set.
    let mut new_tables: HashSet<String> = HashSet::new();
    let mut new_indexes: HashMap<String, String> = HashMap::new();
    for f in files {
        let parse = SourceFile::parse(f.sql);
        for e in parse.errors() {
            let (line, column) = line_col(f.sql, usize::from(e.range().start()));
            report.unparsed.push(Unparsed {
                file: f.filename.to_string(),
                path: f.path.to_string(),
                line,
                column,
                message: e.message().to_string(),
            });
        }
        let mut linter = ctx.rules.linter();
        linter.settings.assume_in_transaction = f.transaction;
        let mut violations = linter.lint(&parse, f.sql);
        violations.sort_by_key(|v| v.text_range.start());
        let stmts: Vec<ast::Stmt> = parse.tree().stmts().collect();
        let mut i = 0;
        for v in violations {
            let at = v.text_range.start();
            while i < stmts.len() && stmts[i].syntax().text_range().end() <= at {
                remember(&objects(&stmts[i]), &mut new_tables, &mut new_indexes);
                i += 1;
            }
            let objs = stmts
                .get(i)
                .filter(|s| s.syntax().text_range().contains_inclusive(at))
                .map(objects)
                .unwrap_or_default();
            let rule = v.code.to_string();
            let table = objs.tables.first().cloned().or_else(|| {
                objs.indexes
                    .iter()
                    .find_map(|n| new_indexes.get(n).cloned())
            });
            let (rows, size_harmless) = size_note(&rule, table.as_deref(), ctx);
            let disposition =
                if let Some((_, why)) = SET_BY_FLIGHTPLAN.iter().find(|(id, _)| *id == rule) {
                    Disposition::Suppressed {
                        reason: (*why).to_string(),
                    }
                } else if let Some(why) = created_here(&objs, &new_tables, &new_indexes) {
                    Disposition::Suppressed { reason: why }
                } else if let Some(why) = size_harmless {
                    Disposition::Suppressed { reason: why }
                } else {
                    Disposition::Reported
                };
            let (line, column) = line_col(f.sql, usize::from(at));
            report.findings.push(Finding {
                file: f.filename.to_string(),
                path: f.path.to_string(),
                line,
                column,
                rule,
                message: v.message,
                help: v.help,
                table,
                rows,
                disposition,
            });
        }
        for s in &stmts[i..] {
            remember(&objects(s), &mut new_tables, &mut new_indexes);
        }
    }
    report
}

fn remember(o: &Objects, tables: &mut HashSet<String>, indexes: &mut HashMap<String, String>) {
    // A rename keeps "new" only when the renamed table was new itself.
    let renamed_new = o.tables.first().is_some_and(|t| tables.contains(t));
    for t in &o.created_tables {
        if o.tables.is_empty() || renamed_new {
            tables.insert(t.clone());
        }
    }
    for (i, t) in &o.created_indexes {
        indexes.insert(i.clone(), t.clone());
    }
}

/// "created in this change set" when every object the statement acts on is new.
fn created_here(
    o: &Objects,
    tables: &HashSet<String>,
    indexes: &HashMap<String, String>,
) -> Option<String> {
    if o.tables.is_empty() && o.indexes.is_empty() {
        return None;
    }
    let all_tables = o.tables.iter().all(|t| tables.contains(t));
    // An index counts as new only when this change set created it by name.
    let all_indexes = o.indexes.iter().all(|i| indexes.contains_key(i));
    if !(all_tables && all_indexes) {
        return None;
    }
    let names: Vec<&str> = o
        .tables
        .iter()
        .chain(&o.indexes)
        .map(String::as_str)
        .collect();
    Some(format!(
        "{} created in this change set: no running code uses it yet",
        names.join(", ")
    ))
}

/// The rows note for a size-dependent rule, and the reason to suppress it when the copy
/// shows the table is small (or empty, for rules that only hurt a non-empty table).
fn size_note(
    rule: &str,
    table: Option<&str>,
    ctx: &Context<'_>,
) -> (Option<String>, Option<String>) {
    let Some((_, size)) = SIZE.iter().find(|(id, _)| *id == rule) else {
        return (None, None);
    };
    let Some(rows) = ctx.rows else {
        return (Some("unconfirmed: no copy".into()), None);
    };
    let Some(table) = table else {
        return (Some("unconfirmed: the table is not known".into()), None);
    };
    let Some(&n) = rows.get(table) else {
        return (
            Some(format!("unconfirmed: {table} was not measured on the copy")),
            None,
        );
    };
    let note = format!("{n} on the copy ({table})");
    let harmless = match size {
        Size::Scan if n < ctx.large_table_rows => Some(format!(
            "{table} has {n} rows on the copy, under [rehearse] large_table_rows = {}",
            ctx.large_table_rows
        )),
        Size::NonEmpty if n == 0 => Some(format!("{table} is empty on the copy")),
        _ => None,
    };
    (Some(note), harmless)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file<'a>(name: &'a str, sql: &'a str) -> LintFile<'a> {
        LintFile {
            filename: name,
            path: name,
            sql,
            transaction: true,
        }
    }

    fn ctx() -> Context<'static> {
        Context {
            large_table_rows: 100_000,
            ..Context::default()
        }
    }

    fn rules_of(r: &Report) -> Vec<(&str, u32, bool)> {
        r.findings
            .iter()
            .map(|f| (f.rule.as_str(), f.line, f.reported()))
            .collect()
    }

    #[test]
    fn a_foreign_key_without_not_valid_on_an_existing_table_is_reported_with_its_line_and_help() {
        let sql = "-- add the owner\nALTER TABLE posts\n  ADD CONSTRAINT posts_user_fk FOREIGN KEY (user_id) REFERENCES users (id);\n";
        let r = lint(&[file("001.sql", sql)], &ctx());
        let fk: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.rule == "adding-foreign-key-constraint")
            .collect();
        assert_eq!(fk.len(), 1, "{r:?}");
        assert_eq!(fk[0].line, 3);
        assert_eq!(fk[0].table.as_deref(), Some("posts"));
        assert!(fk[0].reported());
        assert!(fk[0].help.as_deref().unwrap().contains("NOT VALID"));
        assert_eq!(fk[0].rows.as_deref(), Some("unconfirmed: no copy"));
        assert!(r.unparsed.is_empty());
    }

    #[test]
    fn a_table_created_by_an_earlier_pending_file_suppresses_rules_about_it_with_the_reason() {
        let a = "CREATE TABLE orders (id bigint, user_id bigint);\n";
        let b = "ALTER TABLE orders ADD PRIMARY KEY (id);\nCREATE INDEX orders_user ON orders (user_id);\nALTER TABLE users ADD PRIMARY KEY (id);\n";
        let r = lint(&[file("001.sql", a), file("002.sql", b)], &ctx());
        let got = rules_of(&r);
        assert!(
            got.contains(&("adding-serial-primary-key-field", 1, false)),
            "{got:?}"
        );
        assert!(
            got.contains(&("require-concurrent-index-creation", 2, false)),
            "{got:?}"
        );
        assert!(
            got.contains(&("adding-serial-primary-key-field", 3, true)),
            "{got:?}"
        );
        let f = r
            .findings
            .iter()
            .find(|f| f.line == 1 && f.file == "002.sql" && !f.rule.starts_with("require-"))
            .unwrap();
        assert_eq!(
            f.disposition,
            Disposition::Suppressed {
                reason: "orders created in this change set: no running code uses it yet".into()
            }
        );
    }

    #[test]
    fn a_table_created_later_in_the_change_set_does_not_excuse_an_earlier_statement() {
        // In two files: within one, squawk itself looks at the whole file.
        let a = "CREATE INDEX t_a ON t (a);\nDROP TABLE t;\n";
        let b = "CREATE TABLE t (a int);\n";
        let r = lint(&[file("001.sql", a), file("002.sql", b)], &ctx());
        assert!(rules_of(&r).contains(&("require-concurrent-index-creation", 1, true)));
        assert!(rules_of(&r).contains(&("ban-drop-table", 2, true)));
    }

    #[test]
    fn drop_index_without_concurrently_is_reported_unless_the_index_is_new() {
        let a = "DROP INDEX users_email;\n";
        let b = "CREATE INDEX CONCURRENTLY tmp_idx ON users (email);\n";
        let c = "DROP INDEX tmp_idx;\n";
        let mut nt = file("002.sql", b);
        nt.transaction = false;
        let r = lint(&[file("001.sql", a), nt, file("003.sql", c)], &ctx());
        let drops: Vec<(&str, bool)> = r
            .findings
            .iter()
            .filter(|f| f.rule == "require-concurrent-index-deletion")
            .map(|f| (f.file.as_str(), f.reported()))
            .collect();
        assert_eq!(drops, [("001.sql", true), ("003.sql", false)]);
    }

    #[test]
    fn timeout_rules_are_suppressed_because_flightplan_sets_both() {
        let r = lint(
            &[file("001.sql", "ALTER TABLE users ADD COLUMN x int;\n")],
            &ctx(),
        );
        let timeouts: Vec<&Finding> = r
            .findings
            .iter()
            .filter(|f| f.rule.starts_with("require-") && f.rule.ends_with("-timeout"))
            .collect();
        assert!(
            !timeouts.is_empty(),
            "squawk reports missing timeouts: {r:?}"
        );
        for f in timeouts {
            match &f.disposition {
                Disposition::Suppressed { reason } => assert!(reason.contains("SET LOCAL")),
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(r.reported().count(), 0, "{r:?}");
    }

    #[test]
    fn style_rules_are_off_unless_included_and_exclude_wins() {
        let sql = "CREATE TABLE t (id serial, name varchar(20), at timestamp);\n";
        let none = lint(&[file("001.sql", sql)], &ctx());
        assert!(none.findings.is_empty(), "{none:?}");
        let mut c = ctx();
        c.rules = Rules::new(
            vec!["prefer-text-field".into(), "prefer-identity".into()],
            vec!["prefer-identity".into()],
        )
        .unwrap();
        let some = lint(&[file("001.sql", sql)], &c);
        let ids: Vec<&str> = some.findings.iter().map(|f| f.rule.as_str()).collect();
        assert_eq!(ids, ["prefer-text-field"]);
        assert!(c.rules.enabled().contains(&"prefer-text-field".to_string()));
        assert!(!c.rules.enabled().contains(&"prefer-identity".to_string()));
    }

    #[test]
    fn an_excluded_default_rule_does_not_run_and_unknown_ids_are_named() {
        let mut c = ctx();
        c.rules = Rules::new(vec![], vec!["ban-drop-column".into()]).unwrap();
        let r = lint(
            &[file("001.sql", "ALTER TABLE users DROP COLUMN bio;\n")],
            &c,
        );
        assert!(
            r.findings.iter().all(|f| f.rule != "ban-drop-column"),
            "{r:?}"
        );
        assert_eq!(
            Rules::new(vec!["ban-drop-colum".into()], vec![]),
            Err("ban-drop-colum".to_string())
        );
        let known = known_rules();
        assert!(known.contains(&"ban-drop-column".to_string()));
        for (id, _) in STYLE.iter().chain(SET_BY_FLIGHTPLAN) {
            assert!(known.contains(&id.to_string()), "{id} is not a squawk rule");
        }
        for (id, _) in SIZE {
            assert!(known.contains(&id.to_string()), "{id} is not a squawk rule");
        }
    }

    #[test]
    fn size_dependent_rules_are_confirmed_or_suppressed_by_the_copys_rows() {
        let sql = "CREATE INDEX users_email ON users (email);\nCREATE INDEX posts_at ON posts (at);\nCREATE INDEX tags_n ON tags (n);\n";
        let rows: HashMap<String, u64> =
            [("users".to_string(), 2_000_000), ("posts".to_string(), 10)].into();
        let mut c = ctx();
        c.rows = Some(&rows);
        let r = lint(&[file("001.sql", sql)], &c);
        let idx: Vec<(&str, Option<&str>, bool)> = r
            .findings
            .iter()
            .filter(|f| f.rule == "require-concurrent-index-creation")
            .map(|f| (f.table.as_deref().unwrap(), f.rows.as_deref(), f.reported()))
            .collect();
        assert_eq!(
            idx,
            [
                ("users", Some("2000000 on the copy (users)"), true),
                ("posts", Some("10 on the copy (posts)"), false),
                (
                    "tags",
                    Some("unconfirmed: tags was not measured on the copy"),
                    true
                ),
            ]
        );
        let posts = r
            .findings
            .iter()
            .find(|f| {
                f.table.as_deref() == Some("posts") && f.rule == "require-concurrent-index-creation"
            })
            .unwrap();
        assert_eq!(
            posts.disposition,
            Disposition::Suppressed {
                reason: "posts has 10 rows on the copy, under [rehearse] large_table_rows = 100000"
                    .into()
            }
        );
    }

    #[test]
    fn table_names_are_folded_as_postgresql_does_before_the_copys_rows_are_looked_up() {
        let sql = "CREATE INDEX a ON Users (email);\nCREATE INDEX b ON \"Posts\" (at);\n";
        let rows: HashMap<String, u64> =
            [("users".to_string(), 10), ("Posts".to_string(), 5_000_000)].into();
        let mut c = ctx();
        c.rows = Some(&rows);
        let r = lint(&[file("001.sql", sql)], &c);
        let idx: Vec<(&str, bool)> = r
            .findings
            .iter()
            .filter(|f| f.rule == "require-concurrent-index-creation")
            .map(|f| (f.table.as_deref().unwrap(), f.reported()))
            .collect();
        assert_eq!(idx, [("users", false), ("Posts", true)]);
    }

    #[test]
    fn a_begin_commit_wrapper_blanked_by_the_engine_raises_no_nesting_finding() {
        // The engine blanks the wrapper, keeping offsets; lint what it sends.
        let sql = "      \nALTER TABLE users DROP COLUMN bio;\n       \n";
        let r = lint(&[file("001.sql", sql)], &ctx());
        assert!(
            r.findings.iter().all(|f| f.rule != "transaction-nesting"),
            "{r:?}"
        );
        assert_eq!(
            r.reported()
                .map(|f| (f.rule.as_str(), f.line))
                .collect::<Vec<_>>(),
            [("ban-drop-column", 2)]
        );
    }

    #[test]
    fn render_is_file_line_rule_message_then_the_reason_and_help() {
        let f = Finding {
            file: "002.sql".into(),
            path: "migrations/002.sql".into(),
            line: 4,
            column: 3,
            rule: "adding-serial-primary-key-field".into(),
            message: "Adding a primary key".into(),
            help: Some("Use an index".into()),
            table: Some("orders".into()),
            rows: None,
            disposition: Disposition::Suppressed {
                reason: "orders created in this change set".into(),
            },
        };
        assert_eq!(
            f.render(),
            "migrations/002.sql:4: adding-serial-primary-key-field: Adding a primary key\n  suppressed: orders created in this change set\n  help: Use an index\n"
        );
    }
}
