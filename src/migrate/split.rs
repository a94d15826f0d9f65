//! A PostgreSQL-aware lexer that splits a migration file into statements.
//!
//! It understands single-quoted strings (including `E''` escapes), quoted identifiers,
//! dollar quotes, line comments, nested block comments and drizzle-kit's
//! `--> statement-breakpoint` markers, so a `;` inside a function body never splits it.

use std::ops::Range;

/// One statement: its byte range in the file (without the terminating `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub span: Range<usize>,
}

/// Why a file could not be split: what was left open, and where it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitError {
    pub what: &'static str,
    pub offset: usize,
}

pub(super) const BREAKPOINT: &str = "--> statement-breakpoint";

/// Splits `sql` into statements. Empty and comment-only statements are dropped.
pub fn split(sql: &str) -> Result<Vec<Statement>, SplitError> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let push = |start: usize, end: usize, out: &mut Vec<Statement>| {
        if has_code(&sql[start..end]) {
            out.push(Statement { span: start..end });
        }
    };
    while i < b.len() {
        match b[i] {
            b';' => {
                push(start, i, &mut out);
                i += 1;
                start = i;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = memchr(b'\n', &b[i..]).map_or(b.len(), |n| i + n);
                if sql[i..end].trim_end() == BREAKPOINT {
                    push(start, i, &mut out);
                    start = end;
                }
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let open = i;
                let mut depth = 0usize;
                loop {
                    if i + 1 >= b.len() {
                        return Err(SplitError {
                            what: "block comment",
                            offset: open,
                        });
                    }
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
            }
            b'\'' => {
                let escapes =
                    i > 0 && matches!(b[i - 1], b'e' | b'E') && (i < 2 || !is_ident_byte(b[i - 2]));
                i = skip_quoted(b, i, b'\'', escapes).ok_or(SplitError {
                    what: "string literal",
                    offset: i,
                })?;
            }
            b'"' => {
                i = skip_quoted(b, i, b'"', false).ok_or(SplitError {
                    what: "quoted identifier",
                    offset: i,
                })?;
            }
            b'$' if i == 0 || !is_ident_byte(b[i - 1]) => match dollar_tag(&sql[i..]) {
                Some(tag) => {
                    let body = i + tag.len();
                    match sql[body..].find(tag) {
                        Some(n) => i = body + n + tag.len(),
                        None => {
                            return Err(SplitError {
                                what: "dollar-quoted string",
                                offset: i,
                            });
                        }
                    }
                }
                None => i += 1,
            },
            _ => i += 1,
        }
    }
    push(start, b.len(), &mut out);
    Ok(out)
}

/// The first `n` keywords of a statement, upper-cased, skipping comments.
pub fn leading_words(stmt: &str, n: usize) -> Vec<String> {
    let mut words = Vec::new();
    let mut rest = stmt;
    while words.len() < n {
        rest = skip_space_and_comments(rest);
        let len = rest
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
            .count();
        if len == 0 {
            break;
        }
        words.push(rest[..len].to_ascii_uppercase());
        rest = &rest[len..];
    }
    words
}

/// Byte offset of the first token that is not whitespace or a comment.
pub fn code_start(stmt: &str) -> usize {
    stmt.len() - skip_space_and_comments(stmt).len()
}

/// True when the text holds anything but whitespace and comments.
pub fn has_code(s: &str) -> bool {
    !skip_space_and_comments(s).is_empty()
}

fn skip_space_and_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix("--") {
            s = r.find('\n').map_or("", |n| &r[n..]);
        } else if s.starts_with("/*") {
            let b = s.as_bytes();
            let (mut i, mut depth) = (0, 0usize);
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
            s = if depth == 0 { &s[i..] } else { "" };
        } else {
            return s;
        }
    }
}

fn skip_quoted(b: &[u8], open: usize, q: u8, backslash_escapes: bool) -> Option<usize> {
    let mut i = open + 1;
    while i < b.len() {
        if backslash_escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// `$tag$` or `$$` at the start of `s`; a `$1` parameter is not a tag.
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

fn is_ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&c| c == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql)
            .unwrap()
            .into_iter()
            .map(|s| sql[s.span].trim())
            .collect()
    }

    #[test]
    fn splits_on_semicolons_outside_quotes_and_comments() {
        let sql = "create table a (x text default ';');\n-- a; comment\ncreate index b on a(x); /* c; /* nested; */ */ select 'it''s;'";
        assert_eq!(
            texts(sql),
            vec![
                "create table a (x text default ';')",
                "-- a; comment\ncreate index b on a(x)",
                "/* c; /* nested; */ */ select 'it''s;'"
            ]
        );
    }

    #[test]
    fn dollar_quotes_and_escape_strings_hide_semicolons() {
        let sql = "create function f() returns trigger as $body$ begin; return new; end $body$ language plpgsql;\nselect E'a\\';b';select $1;";
        assert_eq!(
            texts(sql),
            vec![
                "create function f() returns trigger as $body$ begin; return new; end $body$ language plpgsql",
                "select E'a\\';b'",
                "select $1"
            ]
        );
    }

    #[test]
    fn drizzle_breakpoints_separate_statements_even_without_semicolons() {
        let sql = "CREATE TABLE \"a\" (x int)\n--> statement-breakpoint\nCREATE TABLE \"b\" (y int);\n--> statement-breakpoint\n";
        assert_eq!(
            texts(sql),
            vec!["CREATE TABLE \"a\" (x int)", "CREATE TABLE \"b\" (y int)"]
        );
    }

    #[test]
    fn reports_unterminated_constructs_with_their_offset() {
        assert_eq!(
            split("select 'abc").unwrap_err(),
            SplitError {
                what: "string literal",
                offset: 7
            }
        );
        assert_eq!(split("select 1; /* x").unwrap_err().what, "block comment");
        assert_eq!(
            split("do $$ begin").unwrap_err().what,
            "dollar-quoted string"
        );
    }

    #[test]
    fn comment_only_text_is_not_a_statement() {
        assert!(texts("-- only a comment\n/* and this */\n;;").is_empty());
        assert_eq!(
            leading_words("-- x\n /* y */ create unique index concurrently i", 4),
            vec!["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY"]
        );
    }
}
