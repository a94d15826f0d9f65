//! The migration files on disk: discovery, byte order, checksums, directives and lint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::layout::Key;
use super::split::{self, Statement};
use crate::error::Error;

/// One migration file, read and checked.
#[derive(Debug, Clone)]
pub struct Migration {
    pub filename: String,
    pub path: PathBuf,
    /// What identifies the file in the tracking table: its name (flat), its journal `when`
    /// (drizzle) or its version (sqlx).
    pub key: Key,
    /// What the tracking table records besides the key: sqlx's description; the file
    /// name otherwise.
    pub description: String,
    /// The SQL as sent to the server: the file's text without a leading BOM.
    pub sql: String,
    /// Hex digest in the layout's format: flat, SHA-256 of the file with CRLF normalised to
    /// LF; drizzle, SHA-256 of the bytes; sqlx, SHA-384 of the bytes.
    pub checksum: String,
    /// Digests of the same text with other line endings, for layouts whose digest sees
    /// them: a recorded one of these means only the line endings changed.
    pub eol_checksums: Vec<String>,
    /// The file opts out of the per-file transaction (`-- no-transaction`).
    pub no_transaction: bool,
    pub statements: Vec<Statement>,
    /// A problem that makes the file unsafe to apply; reported only if it is pending.
    pub lint: Option<Error>,
}

/// Every `*.sql` file of a directory in byte order, and what was ignored.
#[derive(Debug, Clone)]
pub struct Source {
    pub dir: PathBuf,
    pub migrations: Vec<Migration>,
    pub ignored: Vec<String>,
    /// Problems worth a warning that do not stop anything (e.g. an orphan drizzle file).
    pub warnings: Vec<String>,
}

/// Statements PostgreSQL refuses inside a transaction block.
const NON_TRANSACTIONAL: &[&[&str]] = &[
    &["CREATE", "INDEX", "CONCURRENTLY"],
    &["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY"],
    &["DROP", "INDEX", "CONCURRENTLY"],
    &["REINDEX", "*", "CONCURRENTLY"],
    &["VACUUM"],
    &["CREATE", "DATABASE"],
    &["DROP", "DATABASE"],
    &["ALTER", "SYSTEM"],
    &["CREATE", "TABLESPACE"],
    &["DROP", "TABLESPACE"],
];

const TX_CONTROL: &[&str] = &["BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"];

impl Source {
    /// Reads `dir`. Everything wrong with the directory or a file name is a usage error
    /// (exit 2), found before any database is contacted.
    pub fn discover(dir: &Path) -> Result<Source, Error> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            Error::usage(format!(
                "cannot read migrations directory {}: {e}",
                dir.display()
            ))
            .hint("pass --dir, or set [migrate] dir in flightplan.toml (relative to that file)")
        })?;
        let mut names = Vec::new();
        let mut ignored = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::usage(format!("cannot list {}: {e}", dir.display())))?;
            let name = entry.file_name().into_string().map_err(|raw| {
                Error::usage(format!(
                    "file name {raw:?} in {} is not valid UTF-8",
                    dir.display()
                ))
                .hint("rename the file: migration names are recorded as text in the ledger")
            })?;
            let is_file = entry
                .file_type()
                .map(|t| t.is_file() || t.is_symlink())
                .unwrap_or(false);
            if is_file && name.ends_with(".sql") {
                names.push(name);
            } else {
                ignored.push(name);
            }
        }
        if names.is_empty() {
            return Err(Error::usage(format!("no *.sql migration files in {}", dir.display()))
                .hint("check --dir (or [migrate] dir); flightplan refuses to run against an empty directory"));
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        ignored.sort();

        let mut folded: HashMap<String, &str> = HashMap::new();
        for name in &names {
            if let Some(other) = folded.insert(name.to_lowercase(), name) {
                return Err(Error::usage(format!(
                    "migration files {other} and {name} differ only in letter case"
                ))
                .file(dir.join(name).display().to_string())
                .hint("rename one of them: on a case-insensitive checkout they would be the same file"));
            }
        }

        let migrations = names
            .into_iter()
            .map(|name| Migration::read(dir, name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Source {
            dir: dir.to_path_buf(),
            migrations,
            ignored,
            warnings: Vec::new(),
        })
    }

    pub fn get(&self, filename: &str) -> Option<&Migration> {
        self.migrations.iter().find(|m| m.filename == filename)
    }

    pub fn by_key(&self, key: &Key) -> Option<&Migration> {
        self.migrations.iter().find(|m| &m.key == key)
    }
}

/// A file's text exactly as stored; anything but UTF-8 is a usage error with its line.
pub fn read_text(path: &Path, filename: &str) -> Result<String, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let raw = e.as_bytes();
        let line = raw[..at].iter().filter(|&&c| c == b'\n').count() + 1;
        Error::usage(format!("{filename} is not valid UTF-8 (byte {at})"))
            .file(path.display().to_string())
            .line(line as u32)
            .hint("save the file as UTF-8; PostgreSQL would reject or misread it")
    })?;
    // PostgreSQL's protocol ends strings at NUL: a file with one broke the whole batch's
    // message ("invalid message format", blamed on another file) after the tracking table
    // was created (issue 8: found by tests/faults_input.rs). Refuse it before any contact.
    if let Some(at) = text.find('\0') {
        let (line, col) = line_col(&text, at);
        return Err(Error::usage(format!(
            "{filename} contains a NUL byte (line {line}, column {col})"
        ))
        .file(path.display().to_string())
        .line(line)
        .column(col)
        .hint(
            "PostgreSQL cannot take NUL in SQL text: remove it (the file may be binary or UTF-16)",
        ));
    }
    Ok(text)
}

impl Migration {
    fn read(dir: &Path, filename: String) -> Result<Migration, Error> {
        let path = dir.join(&filename);
        let text = read_text(&path, &filename)?;
        Ok(Migration::from_string(filename, path, text))
    }

    /// Builds a migration from its text; public for tests and for the benchmark.
    pub fn from_text(filename: String, path: PathBuf, text: &str) -> Migration {
        Migration::from_string(filename, path, text.to_string())
    }

    /// As [`Migration::from_text`], keeping `text` as the SQL: a file is held once in
    /// memory, whatever its size (a 50 MB data load would otherwise be held twice).
    pub fn from_string(filename: String, path: PathBuf, text: String) -> Migration {
        let checksum = checksum(&text);
        let mut sql = text;
        if sql.starts_with('\u{feff}') {
            sql.drain(..'\u{feff}'.len_utf8());
        }
        let no_transaction = has_no_transaction_directive(&sql);
        let mut lint = None;
        let statements = match split::split(&sql) {
            Ok(s) => s,
            Err(e) => {
                let (line, col) = line_col(&sql, e.offset);
                lint = Some(
                    Error::usage(format!("{filename}: unterminated {} starting here", e.what))
                        .file(path.display().to_string())
                        .line(line)
                        .column(col),
                );
                Vec::new()
            }
        };
        end_breakpoint_statements(&mut sql, &statements);
        let mut m = Migration {
            key: Key::Name(filename.clone()),
            description: filename.clone(),
            filename,
            path,
            sql: String::new(),
            checksum,
            eol_checksums: Vec::new(),
            no_transaction,
            statements,
            lint,
        };
        if m.lint.is_none() {
            m.lint = m.check(&mut sql);
        }
        m.sql = sql;
        m
    }

    /// Finds what would break the per-file transaction. A file wrapped in its own
    /// `BEGIN; … COMMIT;` (common with older runners) is accepted: the wrapper is blanked
    /// out, keeping every byte offset, so error positions still point into the file.
    fn check(&mut self, sql: &mut String) -> Option<Error> {
        let words: Vec<Vec<String>> = self
            .statements
            .iter()
            .map(|s| split::leading_words(&sql[s.span.clone()], 4))
            .collect();
        let at = |i: usize| {
            line_col(
                sql,
                self.statements[i].span.start
                    + split::code_start(&sql[self.statements[i].span.clone()]),
            )
        };
        if self.no_transaction {
            return None;
        }
        for (i, w) in words.iter().enumerate() {
            if NON_TRANSACTIONAL.iter().any(|p| matches_prefix(w, p)) {
                let (line, col) = at(i);
                return Some(
                    Error::usage(format!(
                        "{}: `{}` cannot run inside a transaction, and flightplan runs this file in one",
                        self.filename,
                        w.join(" ")
                    ))
                    .file(self.path.display().to_string())
                    .line(line)
                    .column(col)
                    .hint("put it in a file of its own whose first line is `-- no-transaction`"),
                );
            }
        }
        let is_tx = |w: &Vec<String>| w.first().is_some_and(|k| TX_CONTROL.contains(&k.as_str()));
        let tx: Vec<usize> = words
            .iter()
            .enumerate()
            .filter(|(_, w)| is_tx(w))
            .map(|(i, _)| i)
            .collect();
        if tx.is_empty() {
            return None;
        }
        let n = words.len();
        let opens =
            |w: &Vec<String>| matches!(w.first().map(String::as_str), Some("BEGIN" | "START"));
        let closes =
            |w: &Vec<String>| matches!(w.first().map(String::as_str), Some("COMMIT" | "END"));
        if tx == [0, n - 1] && n >= 2 && opens(&words[0]) && closes(&words[n - 1]) {
            for i in [0, n - 1] {
                let span = self.statements[i].span.clone();
                // The terminating ';' stays: it now ends an empty statement.
                let blank: String = sql[span.clone()]
                    .chars()
                    .map(|c| if c == '\n' { '\n' } else { ' ' })
                    .collect();
                sql.replace_range(span, &blank);
            }
            self.statements = self.statements[1..n - 1].to_vec();
            return None;
        }
        let (line, col) = at(tx[0]);
        Some(
            Error::usage(format!(
                "{}: `{}` controls the transaction, and flightplan runs each file in its own",
                self.filename,
                words[tx[0]].first().cloned().unwrap_or_default()
            ))
            .file(self.path.display().to_string())
            .line(line)
            .column(col)
            .hint("remove BEGIN/COMMIT from the file, or make it `-- no-transaction` if it must manage its own"),
        )
    }
}

/// drizzle-kit's migrator splits on `--> statement-breakpoint` and sends each piece alone, so
/// a statement may end at a marker without a `;`. A transactional file goes to the server
/// whole, so such a marker becomes `;` padded with spaces: same length, same offsets.
fn end_breakpoint_statements(sql: &mut String, statements: &[Statement]) {
    for st in statements {
        if sql[st.span.end..].starts_with(split::BREAKPOINT) {
            let pad = format!(";{}", " ".repeat(split::BREAKPOINT.len() - 1));
            sql.replace_range(st.span.end..st.span.end + split::BREAKPOINT.len(), &pad);
        }
    }
}

fn matches_prefix(words: &[String], pattern: &[&str]) -> bool {
    pattern.len() <= words.len() && pattern.iter().zip(words).all(|(p, w)| *p == "*" || p == w)
}

/// SHA-256 of the text with CRLF normalised to LF, so a Windows checkout is not a "modified" file.
pub fn checksum(text: &str) -> String {
    let mut h = Sha256::new();
    let mut rest = text.as_bytes();
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        h.update(&rest[..i]);
        h.update(b"\n");
        rest = &rest[i + 2..];
    }
    h.update(rest);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `-- no-transaction` on its own line among the file's leading comment lines (sqlx's
/// directive, but tolerant of a license header or blank lines before it).
fn has_no_transaction_directive(sql: &str) -> bool {
    for line in sql.lines() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if !t.starts_with("--") {
            return false;
        }
        if t.trim_end_matches(';')
            .eq_ignore_ascii_case("-- no-transaction")
        {
            return true;
        }
    }
    false
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line as u32, col as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(text: &str) -> Migration {
        Migration::from_text("x.sql".into(), PathBuf::from("x.sql"), text)
    }

    #[test]
    fn checksum_ignores_line_endings_only() {
        assert_eq!(checksum("a;\r\nb;\r\n"), checksum("a;\nb;\n"));
        assert_ne!(checksum("a;\nb;\n"), checksum("a;\nb; \n"));
        assert_eq!(
            checksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn directive_tolerates_bom_and_header_comments() {
        assert!(
            m("\u{feff}-- no-transaction\ncreate index concurrently i on t(a);").no_transaction
        );
        assert!(
            m("-- Copyright ACME\n\n-- no-transaction\ncreate index concurrently i on t(a);")
                .no_transaction
        );
        assert!(!m("select 1;\n-- no-transaction\n").no_transaction);
        assert!(m("\u{feff}select 1;").sql.starts_with("select"));
    }

    #[test]
    fn concurrent_index_in_a_transactional_file_is_refused_with_its_position() {
        let e = m("create table t (a int);\n  create index concurrently i on t(a);")
            .lint
            .unwrap();
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        assert!(
            e.message.contains("CREATE INDEX CONCURRENTLY"),
            "{}",
            e.message
        );
    }

    #[test]
    fn a_begin_commit_wrapper_is_blanked_keeping_offsets() {
        let text = "BEGIN;\ncreate table t (a int);\nCOMMIT;\n";
        let mig = m(text);
        assert!(mig.lint.is_none());
        assert_eq!(mig.sql.len(), text.len());
        assert_eq!(mig.sql.find("create"), text.find("create"));
        assert!(!mig.sql.contains("BEGIN") && !mig.sql.contains("COMMIT"));
        assert_eq!(mig.statements.len(), 1);
        assert!(
            m("create table t (a int);\ncommit;\ncreate table u (a int);")
                .lint
                .is_some()
        );
    }

    #[test]
    fn a_statement_ended_by_a_breakpoint_alone_gets_its_semicolon() {
        let text = "CREATE TABLE a (x int)\n--> statement-breakpoint\nCREATE TABLE b (y int);\n--> statement-breakpoint\n";
        let mig = m(text);
        assert_eq!(mig.sql.len(), text.len());
        assert!(
            mig.sql.starts_with("CREATE TABLE a (x int)\n;   "),
            "{}",
            mig.sql
        );
        // A marker after a `;` is left as it is (a comment to the server).
        assert!(mig.sql.ends_with("(y int);\n--> statement-breakpoint\n"));
        assert_eq!(mig.statements.len(), 2);
        assert_eq!(mig.checksum, checksum(text));
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncé x", 7), (2, 4));
    }
}
