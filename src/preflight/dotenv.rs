//! A dotenv file (`--env-file`): `KEY=value` lines, `export`, comments, single and double
//! quotes; no interpolation. Errors name the line, never its text, which may be a secret.

use std::path::Path;

use indexmap::IndexMap;

use crate::error::Error;

/// The variables of one file, each with the line it was set on (the last one wins).
#[derive(Debug, Default, Clone)]
pub struct EnvFile {
    pub path: String,
    pub vars: IndexMap<String, (String, u32)>,
}

impl EnvFile {
    pub fn read(path: &Path) -> Result<EnvFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!("cannot read env file {}: {e}", path.display()))
                .file(path.display().to_string())
                .hint("pass an existing dotenv file with --env-file (KEY=value lines)")
        })?;
        parse(&text, &path.display().to_string())
    }

    pub fn get(&self, name: &str) -> Option<(&str, u32)> {
        self.vars.get(name).map(|(v, l)| (v.as_str(), *l))
    }
}

/// Parses dotenv text. The syntax is the common subset of dotenv implementations:
/// - blank lines and lines starting with `#` are skipped; `export ` before a key is allowed;
/// - `KEY=value`: unquoted values are trimmed and end at ` #` (a comment);
/// - `'value'` is literal; `"value"` understands `\n`, `\r`, `\t`, `\"`, `\\` and `\$`;
///   both quotes may span lines;
/// - `$VAR` and `${VAR}` are kept as written (no interpolation).
pub fn parse(text: &str, path: &str) -> Result<EnvFile, Error> {
    let err = |line: u32, what: &str| {
        Error::usage(format!("invalid env file {path}, line {line}: {what}"))
            .file(path.to_string())
            .line(line)
            .hint("write one KEY=value per line; quote values with spaces, `#` or newlines")
    };
    let mut vars = IndexMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i as u32 + 1;
        let line = lines[i].trim_start_matches('\u{feff}').trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export")
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map_or(line, str::trim_start);
        let Some((key, rest)) = line.split_once('=') else {
            return Err(err(line_no, "expected KEY=value, found no `=`"));
        };
        let key = key.trim();
        if !super::contract::is_var_name(key) {
            return Err(err(
                line_no,
                "the name before `=` is not a variable name (letters, digits, `_`)",
            ));
        }
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // Collect until the closing quote, across lines if need be.
                let mut body = rest[1..].to_string();
                let mut value = None;
                loop {
                    if let Some((v, after)) = split_at_closing(&body, q) {
                        let after = after.trim();
                        if !after.is_empty() && !after.starts_with('#') {
                            return Err(err(
                                line_no,
                                "text after the closing quote (only a `#` comment may follow)",
                            ));
                        }
                        value = Some(v);
                        break;
                    }
                    if i >= lines.len() {
                        break;
                    }
                    body.push('\n');
                    body.push_str(lines[i]);
                    i += 1;
                }
                let Some(raw) = value else {
                    return Err(err(line_no, "the value's quote is never closed"));
                };
                if q == '"' { unescape(&raw) } else { raw }
            }
            _ => {
                let end = rest
                    .char_indices()
                    .find(|&(j, c)| c == '#' && j > 0 && rest[..j].ends_with([' ', '\t']))
                    .map_or(rest.len(), |(j, _)| j);
                rest[..end].trim().to_string()
            }
        };
        vars.shift_remove(key);
        vars.insert(key.to_string(), (value, line_no));
    }
    Ok(EnvFile {
        path: path.to_string(),
        vars,
    })
}

/// Splits at the first unescaped `q` (a backslash escapes only inside double quotes).
fn split_at_closing(s: &str, q: char) -> Option<(String, &str)> {
    let mut escaped = false;
    for (j, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && q == '"' {
            escaped = true;
        } else if c == q {
            return Some((s[..j].to_string(), &s[j + 1..]));
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other @ ('"' | '\\' | '$')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_syntax() {
        let f = parse(
            "# comment\n\nA=plain value  # trailing\nexport B = 'single # kept'\n\
             C=\"line1\\nline2 \\\"q\\\" \\$HOME\"\nD=\"multi\nline\"\nE=\nF=x#y\nA=again\n\
             G='${NOT_EXPANDED}'\n",
            "t.env",
        )
        .unwrap();
        assert_eq!(f.get("A"), Some(("again", 10)));
        assert_eq!(f.get("B"), Some(("single # kept", 4)));
        assert_eq!(f.get("C").unwrap().0, "line1\nline2 \"q\" $HOME");
        assert_eq!(f.get("D"), Some(("multi\nline", 6)));
        assert_eq!(f.get("E"), Some(("", 8)));
        assert_eq!(f.get("F").unwrap().0, "x#y");
        assert_eq!(f.get("G").unwrap().0, "${NOT_EXPANDED}");
        let order: Vec<_> = f.vars.keys().map(String::as_str).collect();
        assert_eq!(order, ["B", "C", "D", "E", "F", "A", "G"]);
    }

    #[test]
    fn errors_name_the_line_but_never_echo_it() {
        let e = parse("A=1\nSESSION_SECRET s3cr3t-value\n", "t.env").unwrap_err();
        assert_eq!((e.line, e.exit_code()), (Some(2), 2));
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        let e = parse("A=1\nB=\"s3cr3t-value\n", "t.env").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        let e = parse("1A=x\n", "t.env").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = parse("A='x' trailing-s3cr3t\n", "t.env").unwrap_err();
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
    }
}
