//! What a migration file will lock and which known-dangerous operations it contains, derived
//! from its statements alone (no database): the table-level lock each statement kind takes
//! (PostgreSQL's "Explicit Locking" table and the ALTER TABLE reference), and candidates for
//! the rehearsal's warnings, which `mod.rs` confirms against the copy's data.

use std::fmt;

use crate::migrate::{Migration, line_col, split};
pub use crate::report::log::LockMode;

/// A relation as written, normalised the way PostgreSQL resolves it: unquoted parts folded
/// to lower case, quoted ones kept, a leading `public.` dropped (the default search path).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relation(pub Vec<String>);

impl Relation {
    /// The last part: what "the same table" means across statements of one change set.
    pub fn key(&self) -> &str {
        self.0.last().map_or("", String::as_str)
    }

    /// A `regclass` literal's text: every part quoted, so case and dots survive.
    pub fn regclass(&self) -> String {
        self.0
            .iter()
            .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// One lock a statement takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub mode: LockMode,
    pub relation: Relation,
    /// The relation is an index (its table is locked too, but its name is not written).
    pub index: bool,
    pub line: u32,
}

/// A known-dangerous operation, before the copy's data says whether it matters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `ADD COLUMN` whose default is computed per row: the table is rewritten.
    VolatileDefault {
        table: Relation,
        column: String,
        what: String,
    },
    /// `CREATE INDEX` without `CONCURRENTLY`: writes wait for the whole build.
    IndexNotConcurrent { table: Relation },
    /// An enum value added and used in the same transaction (SQLSTATE 55P04).
    EnumValueInTransaction {
        type_name: String,
        value: String,
        added_line: u32,
    },
    /// `SET NOT NULL`: a full scan under ACCESS EXCLUSIVE unless a valid CHECK proves it.
    SetNotNull { table: Relation, column: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub finding: Finding,
    pub line: u32,
}

/// Everything derived from one file.
#[derive(Debug, Clone, Default)]
pub struct FileAnalysis {
    pub locks: Vec<Lock>,
    /// Tables, views and indexes the file creates (by key): nobody else uses them yet.
    pub created: Vec<String>,
    pub candidates: Vec<Candidate>,
    /// Lines of statements whose locks cannot be derived (DO blocks, CALL).
    pub opaque: Vec<u32>,
}

/// Analyses every statement of a file.
pub fn analyze(m: &Migration) -> FileAnalysis {
    let mut out = FileAnalysis::default();
    // (type, value, line) of enum values added earlier in this file.
    let mut added: Vec<(Relation, String, u32)> = Vec::new();
    for st in &m.statements {
        let text = &m.sql[st.span.clone()];
        let start = st.span.start + split::code_start(text);
        let line = line_col(&m.sql, start).0;
        let toks = lex(text);
        if toks.is_empty() {
            continue;
        }
        // A new enum value used by a later statement of the same transaction.
        if !m.no_transaction {
            for (ty, value, at) in &added {
                if uses_enum_value(&toks, ty, value) {
                    out.candidates.push(Candidate {
                        finding: Finding::EnumValueInTransaction {
                            type_name: ty.to_string(),
                            value: value.clone(),
                            added_line: *at,
                        },
                        line,
                    });
                }
            }
        }
        let mut c = Cur { t: &toks, i: 0 };
        statement(&mut c, line, &mut out, &mut added);
    }
    out
}

/// Whether a statement uses the value `value` of the enum `ty` (added earlier in the same
/// transaction). Not a use: the same literal in another `ALTER TYPE` (adding the same
/// value to a second enum was the check's false positive: 6 of 6 hits in real corpora), or
/// cast to a different type (`'archived'::other_enum`).
fn uses_enum_value(toks: &[Token], ty: &Relation, value: &str) -> bool {
    let mut c = Cur { t: toks, i: 0 };
    if c.seq(&["ALTER", "TYPE"]) {
        return false;
    }
    let wanted = Tok::Str(value.to_string());
    toks.iter().enumerate().any(|(i, t)| {
        if t.tok != wanted {
            return false;
        }
        let mut after = Cur { t: toks, i: i + 1 };
        if after.punct(b':') && after.punct(b':') {
            return after.name().is_none_or(|cast| cast.key() == ty.key());
        }
        true
    })
}

fn statement(
    c: &mut Cur,
    line: u32,
    out: &mut FileAnalysis,
    added: &mut Vec<(Relation, String, u32)>,
) {
    let lock = |out: &mut FileAnalysis, mode, relation: Relation, index| {
        out.locks.push(Lock {
            mode,
            relation,
            index,
            line,
        })
    };
    if c.kw("ALTER") {
        if c.kw("TABLE") {
            c.seq(&["IF", "EXISTS"]);
            c.kw("ONLY");
            let Some(table) = c.name() else { return };
            c.punct(b'*');
            alter_table(c, &table, line, out);
        } else if c.kw("INDEX") {
            c.seq(&["IF", "EXISTS"]);
            let Some(index) = c.name() else { return };
            let mode = if c.rest_has("TABLESPACE") {
                LockMode::AccessExclusive
            } else {
                LockMode::ShareUpdateExclusive
            };
            lock(out, mode, index, true);
        } else if c.kw("TYPE") {
            let Some(ty) = c.name() else { return };
            if c.seq(&["ADD", "VALUE"]) {
                c.seq(&["IF", "NOT", "EXISTS"]);
                if let Some(Tok::Str(v)) = c.next() {
                    added.push((ty, v.clone(), line));
                }
            }
        } else if c.seq(&["MATERIALIZED", "VIEW"]) || c.kw("VIEW") {
            c.seq(&["IF", "EXISTS"]);
            if let Some(v) = c.name() {
                lock(out, LockMode::AccessExclusive, v, false);
            }
        }
    } else if c.kw("CREATE") {
        let or_replace = c.seq(&["OR", "REPLACE"]);
        let unique = c.kw("UNIQUE");
        if c.kw("INDEX") {
            let concurrently = c.kw("CONCURRENTLY");
            c.seq(&["IF", "NOT", "EXISTS"]);
            if !c.peek_kw("ON") {
                if let Some(index) = c.name() {
                    out.created.push(index.key().to_string());
                }
            }
            if !c.kw("ON") {
                return;
            }
            c.kw("ONLY");
            let Some(table) = c.name() else { return };
            let mode = if concurrently {
                LockMode::ShareUpdateExclusive
            } else {
                LockMode::Share
            };
            if !concurrently {
                out.candidates.push(Candidate {
                    finding: Finding::IndexNotConcurrent {
                        table: table.clone(),
                    },
                    line,
                });
            }
            lock(out, mode, table, false);
            return;
        }
        let _ = unique;
        // CREATE [GLOBAL|LOCAL] [TEMP|TEMPORARY|UNLOGGED] TABLE …
        c.any(&["GLOBAL", "LOCAL"]);
        c.any(&["TEMP", "TEMPORARY", "UNLOGGED"]);
        if c.kw("TABLE") {
            c.seq(&["IF", "NOT", "EXISTS"]);
            let Some(table) = c.name() else { return };
            out.created.push(table.key().to_string());
            if c.seq(&["PARTITION", "OF"]) {
                if let Some(parent) = c.name() {
                    lock(out, LockMode::AccessExclusive, parent, false);
                }
            }
            // Foreign keys lock each referenced table against writes while they are checked.
            for r in c.references() {
                if r.key() != table.key() {
                    lock(out, LockMode::ShareRowExclusive, r, false);
                }
            }
        } else if c.seq(&["CONSTRAINT", "TRIGGER"]) || c.kw("TRIGGER") {
            if let Some(table) = c.find_on() {
                lock(out, LockMode::ShareRowExclusive, table, false);
            }
        } else if c.seq(&["MATERIALIZED", "VIEW"]) || c.kw("VIEW") || c.kw("RECURSIVE") {
            c.kw("VIEW");
            c.seq(&["IF", "NOT", "EXISTS"]);
            if let Some(v) = c.name() {
                if or_replace {
                    lock(out, LockMode::AccessExclusive, v.clone(), false);
                }
                out.created.push(v.key().to_string());
            }
        } else if c.kw("POLICY") || c.kw("RULE") {
            if let Some(table) = c.find_on() {
                lock(out, LockMode::AccessExclusive, table, false);
            }
        }
    } else if c.kw("DROP") {
        if c.kw("TABLE") {
            c.seq(&["IF", "EXISTS"]);
            for t in c.name_list() {
                lock(out, LockMode::AccessExclusive, t, false);
            }
        } else if c.kw("INDEX") {
            let concurrently = c.kw("CONCURRENTLY");
            c.seq(&["IF", "EXISTS"]);
            let mode = if concurrently {
                LockMode::ShareUpdateExclusive
            } else {
                LockMode::AccessExclusive
            };
            for i in c.name_list() {
                lock(out, mode, i, true);
            }
        } else if c.kw("TRIGGER") || c.kw("POLICY") || c.kw("RULE") {
            if let Some(table) = c.find_on() {
                lock(out, LockMode::AccessExclusive, table, false);
            }
        } else if c.seq(&["MATERIALIZED", "VIEW"]) || c.kw("VIEW") {
            c.seq(&["IF", "EXISTS"]);
            for v in c.name_list() {
                lock(out, LockMode::AccessExclusive, v, false);
            }
        }
    } else if c.kw("TRUNCATE") {
        c.kw("TABLE");
        c.kw("ONLY");
        for t in c.name_list() {
            lock(out, LockMode::AccessExclusive, t, false);
        }
    } else if c.kw("UPDATE") {
        c.kw("ONLY");
        if let Some(t) = c.name() {
            lock(out, LockMode::RowExclusive, t, false);
        }
    } else if c.kw("DELETE") {
        c.kw("FROM");
        c.kw("ONLY");
        if let Some(t) = c.name() {
            lock(out, LockMode::RowExclusive, t, false);
        }
    } else if c.kw("INSERT") || c.kw("MERGE") {
        c.kw("INTO");
        if let Some(t) = c.name() {
            lock(out, LockMode::RowExclusive, t, false);
        }
    } else if c.kw("LOCK") {
        c.kw("TABLE");
        c.kw("ONLY");
        let tables = c.name_list();
        let mut mode = LockMode::AccessExclusive;
        if c.kw("IN") {
            let mut words = Vec::new();
            while let Some(Tok::Word(w)) = c.peek() {
                if w == "MODE" {
                    break;
                }
                words.push(w.clone());
                c.i += 1;
            }
            mode = LockMode::parse(&words).unwrap_or(LockMode::AccessExclusive);
        }
        for t in tables {
            lock(out, mode, t, false);
        }
    } else if c.kw("VACUUM") {
        let full = c.kw("FULL") || c.rest_has("FULL");
        let mode = if full {
            LockMode::AccessExclusive
        } else {
            LockMode::ShareUpdateExclusive
        };
        while c.punct(b'(') {
            c.skip_group();
        }
        while c.any(&["FULL", "FREEZE", "VERBOSE", "ANALYZE"]) {}
        for t in c.name_list() {
            lock(out, mode, t, false);
        }
    } else if c.kw("CLUSTER") {
        c.kw("VERBOSE");
        if let Some(t) = c.name() {
            lock(out, LockMode::AccessExclusive, t, false);
        }
    } else if c.kw("REINDEX") {
        if c.punct(b'(') {
            c.skip_group();
        }
        let index = c.kw("INDEX");
        if !index {
            let _ = c.kw("TABLE") || c.kw("SCHEMA") || c.kw("DATABASE") || c.kw("SYSTEM");
        }
        let concurrently = c.kw("CONCURRENTLY");
        if let Some(r) = c.name() {
            let mode = match (concurrently, index) {
                (true, _) => LockMode::ShareUpdateExclusive,
                (false, true) => LockMode::AccessExclusive,
                (false, false) => LockMode::Share,
            };
            lock(out, mode, r, index);
        }
    } else if c.seq(&["REFRESH", "MATERIALIZED", "VIEW"]) {
        let mode = if c.kw("CONCURRENTLY") {
            LockMode::Exclusive
        } else {
            LockMode::AccessExclusive
        };
        if let Some(v) = c.name() {
            lock(out, mode, v, false);
        }
    } else if c.kw("DO") || c.kw("CALL") {
        out.opaque.push(line);
    }
}

/// `ALTER TABLE t action [, action …]`: each action's lock, the strongest one wins.
fn alter_table(c: &mut Cur, table: &Relation, line: u32, out: &mut FileAnalysis) {
    for action in c.actions() {
        let mut a = Cur { t: action, i: 0 };
        let mut mode = LockMode::AccessExclusive;
        if a.kw("ADD") {
            let constraint = a.kw("CONSTRAINT") && a.name().is_some();
            if a.kw("FOREIGN") {
                mode = LockMode::ShareRowExclusive;
            } else if constraint || a.peek_any(&["CHECK", "UNIQUE", "PRIMARY", "EXCLUDE"]) {
                // Other constraints: ACCESS EXCLUSIVE (the default below).
            } else {
                a.kw("COLUMN");
                a.seq(&["IF", "NOT", "EXISTS"]);
                if let Some(Tok::Word(_) | Tok::Quoted(_)) = a.peek() {
                    let column = a.ident().unwrap_or_default();
                    if let Some(what) = a.rewriting_column() {
                        out.candidates.push(Candidate {
                            finding: Finding::VolatileDefault {
                                table: table.clone(),
                                column,
                                what,
                            },
                            line,
                        });
                    }
                }
            }
        } else if a.kw("ALTER") {
            a.kw("COLUMN");
            let column = a.ident().unwrap_or_default();
            if a.seq(&["SET", "NOT", "NULL"]) {
                out.candidates.push(Candidate {
                    finding: Finding::SetNotNull {
                        table: table.clone(),
                        column,
                    },
                    line,
                });
            } else if a.rest_has("STATISTICS")
                || a.peek_pair("SET", b'(')
                || a.peek_pair("RESET", b'(')
            {
                mode = LockMode::ShareUpdateExclusive;
            }
        } else if a.kw("VALIDATE")
            || a.kw("ATTACH")
            || a.kw("CLUSTER")
            || (a.kw("SET") && (a.kw("WITHOUT") || a.punct(b'(')))
            || a.kw("RESET")
        {
            mode = LockMode::ShareUpdateExclusive;
        } else if a.kw("DETACH") {
            if a.rest_has("CONCURRENTLY") || a.rest_has("FINALIZE") {
                mode = LockMode::ShareUpdateExclusive;
            }
        } else if a.any(&["ENABLE", "DISABLE"]) {
            a.any(&["ALWAYS", "REPLICA"]);
            if a.peek_kw("TRIGGER") {
                mode = LockMode::ShareRowExclusive;
            }
        }
        out.locks.push(Lock {
            mode,
            relation: table.clone(),
            index: false,
            line,
        });
        let mut r = Cur { t: action, i: 0 };
        for referenced in r.references() {
            if referenced.key() != table.key() {
                out.locks.push(Lock {
                    mode: LockMode::ShareRowExclusive,
                    relation: referenced,
                    index: false,
                    line,
                });
            }
        }
    }
}

/// Functions whose value differs per row: a default calling one is computed for every
/// existing row, which rewrites the table (PostgreSQL 11+ stores a non-volatile default
/// once, in the catalog, instead).
const VOLATILE: &[&str] = &[
    "random",
    "gen_random_uuid",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "uuidv4",
    "uuidv7",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "txid_current",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// An unquoted word, upper-cased (keywords and identifiers alike).
    Word(String),
    /// A quoted identifier, as written.
    Quoted(String),
    /// A string literal's value (standard, `E''` or dollar-quoted).
    Str(String),
    Punct(u8),
    Other,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// The word as written (identifiers fold to lower case, not upper).
    pub(super) raw: String,
}

impl PartialEq<Tok> for Token {
    fn eq(&self, other: &Tok) -> bool {
        self.tok == *other
    }
}

/// Tokens of one statement; comments and whitespace dropped. Never fails: the file already
/// went through the splitter, and an odd construct only makes the analysis less precise.
pub(super) fn lex(s: &str) -> Vec<Token> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'-' && b.get(i + 1) == Some(&b'-') {
            i = s[i..].find('\n').map_or(b.len(), |n| i + n);
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0usize;
            while i + 1 < b.len() {
                if b[i] == b'/' && b[i + 1] == b'*' {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b[i + 1] == b'/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            if depth > 0 {
                i = b.len();
            }
        } else if c == b'\'' {
            let escapes = out
                .last()
                .is_some_and(|t: &Token| t.tok == Tok::Word("E".into()) && t.raw.len() == 1);
            if escapes {
                out.pop();
            }
            let (value, end) = quoted(s, i, b'\'', escapes);
            out.push(Token {
                tok: Tok::Str(value.clone()),
                raw: value,
            });
            i = end;
        } else if c == b'"' {
            let (value, end) = quoted(s, i, b'"', false);
            out.push(Token {
                tok: Tok::Quoted(value.clone()),
                raw: value,
            });
            i = end;
        } else if c == b'$' && dollar_tag(&s[i..]).is_some() {
            let tag = dollar_tag(&s[i..]).unwrap_or("$$");
            let body = i + tag.len();
            let end = s[body..].find(tag).map_or(b.len(), |n| body + n);
            out.push(Token {
                tok: Tok::Str(s[body..end].to_string()),
                raw: String::new(),
            });
            i = (end + tag.len()).min(b.len());
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let start = i;
            while i < b.len()
                && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$' || b[i] >= 0x80)
            {
                i += 1;
            }
            let raw = &s[start..i];
            out.push(Token {
                tok: Tok::Word(raw.to_ascii_uppercase()),
                raw: raw.to_lowercase(),
            });
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Other,
                raw: String::new(),
            });
        } else {
            out.push(Token {
                tok: Tok::Punct(c),
                raw: String::new(),
            });
            // Multi-byte characters outside identifiers are skipped whole.
            i += s[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// The value of a quoted construct starting at `open`, and where it ends.
fn quoted(s: &str, open: usize, q: u8, backslash: bool) -> (String, usize) {
    let b = s.as_bytes();
    let mut i = open + 1;
    let mut value = Vec::new();
    while i < b.len() {
        if backslash && b[i] == b'\\' && i + 1 < b.len() {
            value.push(b[i + 1]);
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                value.push(q);
                i += 2;
                continue;
            }
            return (String::from_utf8_lossy(&value).into_owned(), i + 1);
        }
        value.push(b[i]);
        i += 1;
    }
    (String::from_utf8_lossy(&value).into_owned(), b.len())
}

fn dollar_tag(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 1;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
        if i == 1 && b[i].is_ascii_digit() {
            return None;
        }
        i += 1;
    }
    (b.get(i) == Some(&b'$')).then(|| &s[..=i])
}

/// A cursor over a statement's tokens.
pub(super) struct Cur<'t> {
    pub(super) t: &'t [Token],
    pub(super) i: usize,
}

impl<'t> Cur<'t> {
    pub(super) fn peek(&self) -> Option<&'t Tok> {
        self.t.get(self.i).map(|t| &t.tok)
    }

    pub(super) fn next(&mut self) -> Option<&'t Tok> {
        let t = self.peek();
        self.i += usize::from(t.is_some());
        t
    }

    pub(super) fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w == kw)
    }

    pub(super) fn peek_any(&self, kws: &[&str]) -> bool {
        kws.iter().any(|k| self.peek_kw(k))
    }

    pub(super) fn peek_pair(&self, kw: &str, p: u8) -> bool {
        self.peek_kw(kw)
            && matches!(self.t.get(self.i + 1).map(|t| &t.tok), Some(Tok::Punct(x)) if *x == p)
    }

    /// Consumes the keywords if they are all next, in order; else nothing.
    pub(super) fn seq(&mut self, kws: &[&str]) -> bool {
        let all = kws.iter().enumerate().all(|(k, kw)| {
            matches!(self.t.get(self.i + k).map(|t| &t.tok), Some(Tok::Word(w)) if w == kw)
        });
        if all {
            self.i += kws.len();
        }
        all
    }

    /// Consumes one of the keywords if it is next.
    pub(super) fn any(&mut self, kws: &[&str]) -> bool {
        kws.iter().any(|k| self.kw(k))
    }

    /// Consumes the keyword if it is next.
    pub(super) fn kw(&mut self, kw: &str) -> bool {
        let yes = self.peek_kw(kw);
        self.i += usize::from(yes);
        yes
    }

    pub(super) fn punct(&mut self, p: u8) -> bool {
        let yes = matches!(self.peek(), Some(Tok::Punct(x)) if *x == p);
        self.i += usize::from(yes);
        yes
    }

    /// Whether a keyword appears anywhere from here on.
    pub(super) fn rest_has(&self, kw: &str) -> bool {
        self.t[self.i.min(self.t.len())..]
            .iter()
            .any(|t| matches!(&t.tok, Tok::Word(w) if w == kw))
    }

    pub(super) fn ident(&mut self) -> Option<String> {
        let t = self.t.get(self.i)?;
        let part = match &t.tok {
            Tok::Word(_) => t.raw.clone(),
            Tok::Quoted(q) => q.clone(),
            _ => return None,
        };
        self.i += 1;
        Some(part)
    }

    /// `a`, `a.b`, `"A"."b"`.
    pub(super) fn name(&mut self) -> Option<Relation> {
        let mut parts = vec![self.ident()?];
        while self.peek() == Some(&Tok::Punct(b'.')) {
            self.i += 1;
            parts.push(self.ident()?);
        }
        if parts.len() > 1 && parts[0] == "public" {
            parts.remove(0);
        }
        Some(Relation(parts))
    }

    pub(super) fn name_list(&mut self) -> Vec<Relation> {
        let mut out = Vec::new();
        while let Some(n) = self.name() {
            out.push(n);
            self.punct(b'*');
            if !self.punct(b',') {
                break;
            }
            self.kw("ONLY");
        }
        out
    }

    /// Skips to the matching `)` of a `(` just consumed.
    pub(super) fn skip_group(&mut self) {
        let mut depth = 1;
        while let Some(t) = self.next() {
            match t {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// The relation after the first top-level `ON` (triggers, policies, rules).
    pub(super) fn find_on(&mut self) -> Option<Relation> {
        while let Some(t) = self.next() {
            match t {
                Tok::Punct(b'(') => self.skip_group(),
                Tok::Word(w) if w == "ON" => {
                    self.kw("ONLY");
                    return self.name();
                }
                _ => {}
            }
        }
        None
    }

    /// Every `REFERENCES table` from here on, at any depth.
    pub(super) fn references(&mut self) -> Vec<Relation> {
        let mut out = Vec::new();
        while let Some(t) = self.next() {
            if matches!(t, Tok::Word(w) if w == "REFERENCES")
                && let Some(r) = self.name()
            {
                out.push(r);
            }
        }
        out
    }

    /// The rest split at top-level commas.
    pub(super) fn actions(&mut self) -> Vec<&'t [Token]> {
        let mut out = Vec::new();
        let mut start = self.i;
        let mut depth = 0i32;
        while let Some(t) = self.next() {
            match t {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Punct(b',') if depth == 0 => {
                    out.push(&self.t[start..self.i - 1]);
                    start = self.i;
                }
                _ => {}
            }
        }
        if start < self.t.len() {
            out.push(&self.t[start..]);
        }
        out
    }

    /// After `ADD COLUMN name`: why adding it rewrites the table, if it does (a serial
    /// type, an identity, a stored generated column, or a volatile default).
    pub(super) fn rewriting_column(&mut self) -> Option<String> {
        if let Some(Tok::Word(ty)) = self.peek()
            && matches!(
                ty.as_str(),
                "SERIAL" | "BIGSERIAL" | "SMALLSERIAL" | "SERIAL2" | "SERIAL4" | "SERIAL8"
            )
        {
            return Some(format!(
                "a {} column (its default is nextval())",
                ty.to_lowercase()
            ));
        }
        let mut in_default = false;
        let mut depth = 0i32;
        while let Some(t) = self.next() {
            match t {
                Tok::Punct(b'(') => depth += 1,
                Tok::Punct(b')') => depth -= 1,
                Tok::Word(w) if depth == 0 && w == "DEFAULT" => in_default = true,
                Tok::Word(w) if depth == 0 && w == "GENERATED" => {
                    if self.rest_has("IDENTITY") {
                        return Some("an identity column".into());
                    }
                    if self.rest_has("STORED") {
                        return Some("a stored generated column".into());
                    }
                }
                Tok::Word(w)
                    if depth == 0
                        && matches!(
                            w.as_str(),
                            "NOT"
                                | "NULL"
                                | "CONSTRAINT"
                                | "CHECK"
                                | "UNIQUE"
                                | "PRIMARY"
                                | "REFERENCES"
                                | "COLLATE"
                        ) =>
                {
                    in_default = false
                }
                Tok::Word(w) if in_default => {
                    let f = w.to_ascii_lowercase();
                    if VOLATILE.contains(&f.as_str()) && self.peek() == Some(&Tok::Punct(b'(')) {
                        return Some(format!("a volatile default ({f}())"));
                    }
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn file(sql: &str) -> FileAnalysis {
        analyze(&Migration::from_text(
            "t.sql".into(),
            PathBuf::from("t.sql"),
            sql,
        ))
    }

    fn locks(sql: &str) -> Vec<(LockMode, String, u32)> {
        file(sql)
            .locks
            .into_iter()
            .map(|l| (l.mode, l.relation.to_string(), l.line))
            .collect()
    }

    #[test]
    fn statement_kinds_map_to_postgresql_lock_modes() {
        use LockMode::*;
        let sql = "ALTER TABLE users ADD COLUMN nick text;\n\
                   CREATE INDEX i ON public.users (email);\n\
                   CREATE INDEX CONCURRENTLY j ON \"Orders\" (id);\n\
                   ALTER TABLE orders VALIDATE CONSTRAINT c;\n\
                   ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES users (id) NOT VALID;\n\
                   CREATE TRIGGER t BEFORE UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION f();\n\
                   UPDATE orders SET x = 1;\n\
                   LOCK TABLE a, b IN SHARE ROW EXCLUSIVE MODE;\n\
                   DROP INDEX CONCURRENTLY IF EXISTS k;\n\
                   TRUNCATE audit_logs;";
        assert_eq!(
            locks(sql),
            vec![
                (AccessExclusive, "users".into(), 1),
                (Share, "users".into(), 2),
                (ShareUpdateExclusive, "Orders".into(), 3),
                (ShareUpdateExclusive, "orders".into(), 4),
                (ShareRowExclusive, "orders".into(), 5),
                (ShareRowExclusive, "users".into(), 5),
                (ShareRowExclusive, "orders".into(), 6),
                (RowExclusive, "orders".into(), 7),
                (ShareRowExclusive, "a".into(), 8),
                (ShareRowExclusive, "b".into(), 8),
                (ShareUpdateExclusive, "k".into(), 9),
                (AccessExclusive, "audit_logs".into(), 10),
            ]
        );
    }

    #[test]
    fn the_example_migrations_lock_what_they_should() {
        let a = file(include_str!(
            "../../examples/secure2send/migrations/020_add_agent_notes.sql"
        ));
        assert!(a.created.contains(&"agent_notes".to_string()));
        // The new table's own indexes and trigger lock nothing anyone uses: only the
        // referenced tables matter, for the foreign keys' checks.
        let on_existing: Vec<(LockMode, String)> = a
            .locks
            .iter()
            .filter(|l| !a.created.contains(&l.relation.key().to_string()))
            .map(|l| (l.mode, l.relation.to_string()))
            .collect();
        assert_eq!(
            on_existing,
            vec![
                (LockMode::ShareRowExclusive, "users".into()),
                (LockMode::ShareRowExclusive, "users".into()),
                (LockMode::ShareRowExclusive, "merchant_applications".into()),
            ]
        );
        let b = file(include_str!(
            "../../examples/secure2send/migrations/020_add_current_step.sql"
        ));
        assert_eq!(
            b.locks.iter().map(|l| l.mode).max(),
            Some(LockMode::AccessExclusive)
        );
        assert!(b.candidates.is_empty(), "{:?}", b.candidates);
    }

    #[test]
    fn dangerous_operations_are_found_with_their_lines() {
        let sql = "-- danger\n\
                   ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();\n\
                   ALTER TABLE users ADD COLUMN seen timestamp DEFAULT now();\n\
                   ALTER TABLE users ADD COLUMN n bigserial;\n\
                   ALTER TABLE users ALTER COLUMN phone SET NOT NULL;\n\
                   CREATE UNIQUE INDEX users_phone ON users (phone);\n\
                   ALTER TYPE status ADD VALUE 'archived';\n\
                   UPDATE users SET status = 'archived' WHERE false;\n";
        let found: Vec<(String, u32)> = file(sql)
            .candidates
            .into_iter()
            .map(|c| (format!("{:?}", c.finding), c.line))
            .collect();
        let kinds: Vec<(&str, u32)> = found
            .iter()
            .map(|(f, l)| (f.split([' ', '{']).next().unwrap(), *l))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("VolatileDefault", 2),
                ("VolatileDefault", 4),
                ("SetNotNull", 5),
                ("IndexNotConcurrent", 6),
                ("EnumValueInTransaction", 8),
            ],
            "{found:?}"
        );
        assert!(found[0].0.contains("gen_random_uuid()"), "{found:?}");
        // In a no-transaction file each statement commits: the new value is usable.
        let no_tx = file(&format!("-- no-transaction\n{sql}"));
        assert!(
            !no_tx
                .candidates
                .iter()
                .any(|c| matches!(c.finding, Finding::EnumValueInTransaction { .. }))
        );
    }

    #[test]
    fn an_enum_value_is_used_only_by_its_own_type() {
        let enum_hits = |sql: &str| -> Vec<(String, u32)> {
            file(sql)
                .candidates
                .into_iter()
                .filter_map(|c| match c.finding {
                    Finding::EnumValueInTransaction { type_name, .. } => Some((type_name, c.line)),
                    _ => None,
                })
                .collect()
        };
        // The same value added to a second enum: no use of the first one's (the false
        // positive of issue 17), nor a cast to another type.
        assert_eq!(
            enum_hits(
                "ALTER TYPE post_status ADD VALUE 'archived';\n\
                 ALTER TYPE \"comment_status\" ADD VALUE IF NOT EXISTS 'archived';\n\
                 SELECT 'archived'::other_status;\n\
                 ALTER TYPE comment_status ADD VALUE 'hidden' AFTER 'archived';\n"
            ),
            vec![]
        );
        // A real use, cast to its own type or compared bare (which of the two is not
        // known from the text: both are named), is still found.
        assert_eq!(
            enum_hits(
                "ALTER TYPE public.post_status ADD VALUE 'archived';\n\
                 ALTER TYPE comment_status ADD VALUE 'archived';\n\
                 UPDATE posts SET status = 'archived'::Post_Status;\n\
                 UPDATE posts SET status = 'archived' WHERE false;\n"
            ),
            vec![
                ("post_status".into(), 3),
                ("post_status".into(), 4),
                ("comment_status".into(), 4),
            ]
        );
    }

    #[test]
    fn quoting_comments_and_strings_do_not_confuse_it() {
        let sql = "/* ALTER TABLE nope */ ALTER TABLE \"Weird\"\"Name\" -- DROP TABLE x\n RENAME TO y;\n\
                   SELECT 'DROP TABLE z';\nDO $$ BEGIN ALTER TABLE q ADD COLUMN r int; END $$;";
        let a = file(sql);
        assert_eq!(
            a.locks
                .iter()
                .map(|l| l.relation.to_string())
                .collect::<Vec<_>>(),
            vec!["Weird\"Name".to_string()]
        );
        assert_eq!(a.locks[0].relation.regclass(), "\"Weird\"\"Name\"");
        assert_eq!(a.opaque, vec![4]);
    }
}
