//! The `[env]` contract of flightplan.toml: one table per variable, named groups under
//! `[env.group.NAME]`, extra placeholder patterns; parsed with positions, then validated.

use std::fmt;
use std::path::Path;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::Error;

/// The keys of `[env]` that are not variables.
const GROUP_KEY: &str = "group";
const PLACEHOLDERS_KEY: &str = "placeholders";

/// The validated contract, in file order.
#[derive(Debug, Clone, Default)]
pub struct Contract {
    pub vars: Vec<Var>,
    pub groups: Vec<Group>,
    /// `[env] placeholders`, added to the built-in list.
    pub placeholders: Vec<String>,
}

/// The rules for one variable (`[env.NAME]`).
#[derive(Debug, Clone)]
pub struct Var {
    pub name: String,
    pub line: u32,
    pub required: bool,
    pub secret: bool,
    pub min_length: Option<usize>,
    pub equals: Option<String>,
    pub one_of: Vec<String>,
    pub format: Option<Format>,
    pub severity: Severity,
    pub placeholder_check: bool,
    /// Whether `--fly` expects it among the Fly app's secrets (default: `secret`).
    pub fly_secret: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Url,
    HttpsUrl,
    Email,
    PostgresUrl,
    Integer,
    Boolean,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Url => "url",
            Format::HttpsUrl => "https_url",
            Format::Email => "email",
            Format::PostgresUrl => "postgres_url",
            Format::Integer => "integer",
            Format::Boolean => "boolean",
        }
    }
}

/// `error` failures make the command exit 1; `warning` ones are reported only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    #[default]
    Error,
}

/// A rule over several variables (`[env.group.NAME]`).
#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub line: u32,
    pub kind: GroupKind,
    pub severity: Severity,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub enum GroupKind {
    /// Set all of them or none.
    AllOrNone(Vec<String>),
    /// When the trigger holds, every name is required.
    Require { when: Trigger, names: Vec<String> },
}

#[derive(Debug, Clone)]
pub enum Trigger {
    /// `if_set = "VAR"`: VAR has a non-empty value.
    Set(String),
    /// `if_equals = { VAR = "value" }`: VAR is exactly `value`.
    Equals(String, String),
    /// `if_enabled = "VAR"`: VAR is true, 1, yes or on (any case).
    Enabled(String),
}

impl Trigger {
    pub fn var(&self) -> &str {
        match self {
            Trigger::Set(v) | Trigger::Equals(v, _) | Trigger::Enabled(v) => v,
        }
    }

    /// The condition as people read it: `EMAIL_PROVIDER = mailgun`.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Set(v) => format!("{v} is set"),
            Trigger::Equals(v, x) => format!("{v} = {x}"),
            Trigger::Enabled(v) => format!("{v} is enabled"),
        }
    }
}

impl GroupKind {
    pub fn names(&self) -> &[String] {
        match self {
            GroupKind::AllOrNone(n) | GroupKind::Require { names: n, .. } => n,
        }
    }
}

impl Contract {
    pub fn var(&self, name: &str) -> Option<&Var> {
        self.vars.iter().find(|v| v.name == name)
    }

    /// Reads the `[env]` section of a config file. `Ok(None)` when there is none.
    pub fn parse(text: &str, path: &Path) -> Result<Option<Contract>, Error> {
        let doc: Doc = toml::from_str(text).map_err(|e| {
            let mut message = plain_type_error(e.message().trim_end());
            if let Some(at) = e.span().map(|s| s.start)
                && let Some((var, key)) = key_at(text, at)
            {
                message = format!("`{key}` of [env.{var}]: {message}");
            }
            let mut err = Error::usage(format!(
                "invalid [env] contract in {}: {message}",
                path.display()
            ))
            .file(path.display().to_string())
            .hint("see docs/check-env.md for the keys of [env.NAME] and [env.group.NAME]");
            if let Some(span) = e.span() {
                let (line, col) = crate::migrate::line_col(text, span.start);
                err = err.line(line).column(col);
            }
            err
        })?;
        let Some(env) = doc.env else {
            return Ok(None);
        };
        Validator { text, path }.contract(env)
    }
}

/// Turns the raw, positioned form into a [`Contract`], with `file:line` on every error.
struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn error(&self, offset: usize, message: String, hint: &str) -> Error {
        let (line, col) = crate::migrate::line_col(self.text, offset);
        Error::usage(format!(
            "invalid [env] contract in {}: {message}",
            self.path.display()
        ))
        .file(self.path.display().to_string())
        .line(line)
        .column(col)
        .hint(hint.to_string())
    }

    fn line(&self, offset: usize) -> u32 {
        crate::migrate::line_col(self.text, offset).0
    }

    fn contract(&self, env: EnvRaw) -> Result<Option<Contract>, Error> {
        if let Some(key) = env.misplaced {
            return Err(self.error(
                key.span().start,
                format!("`{}` is not a key of [env]", key.get_ref()),
                "groups go under [env.group.NAME], e.g. [env.group.cloudflare_r2]",
            ));
        }
        let mut contract = Contract::default();
        for (key, raw) in env.vars {
            contract.vars.push(self.var(&key, raw)?);
        }
        for (key, raw) in env.groups {
            let group = self.group(&key, raw, &contract)?;
            contract.groups.push(group);
        }
        for p in env.placeholders {
            let pattern = p.get_ref().trim();
            if pattern.is_empty() || pattern.chars().all(|c| c == '*') {
                return Err(self.error(
                    p.span().start,
                    format!(
                        "[env] placeholders: `{}` would match every value",
                        p.get_ref()
                    ),
                    "write a pattern with text, e.g. \"acme-dev-*\" (`*` matches any characters)",
                ));
            }
            contract.placeholders.push(pattern.to_string());
        }
        Ok(Some(contract))
    }

    fn var(&self, key: &Spanned<String>, raw: Spanned<VarRaw>) -> Result<Var, Error> {
        let name = key.get_ref().clone();
        let at = key.span().start;
        if !is_var_name(&name) {
            return Err(self.error(
                at,
                format!("`{name}` is not a variable name"),
                "variable names are letters, digits and `_`, not starting with a digit",
            ));
        }
        let line = self.line(raw.span().start);
        let r = raw.into_inner();
        if r.equals.is_some() && r.one_of.is_some() {
            return Err(self.error(
                at,
                format!("[env.{name}] has both `equals` and `one_of`"),
                "keep one: equals = \"production\", or one_of = [\"a\", \"b\"]",
            ));
        }
        if r.one_of.as_ref().is_some_and(Vec::is_empty) {
            return Err(self.error(
                at,
                format!("[env.{name}] one_of is empty"),
                "list the accepted values, e.g. one_of = [\"mailgun\", \"smtp\"]",
            ));
        }
        let one_of = r
            .one_of
            .map(|v| v.into_iter().map(Scalar::into_string).collect())
            .unwrap_or_default();
        let secret = r.secret.unwrap_or(false);
        Ok(Var {
            line,
            required: r.required.unwrap_or(false),
            secret,
            min_length: r.min_length,
            equals: r.equals.map(Scalar::into_string),
            one_of,
            format: r.format,
            severity: r.severity.unwrap_or_default(),
            placeholder_check: r.placeholder_check.unwrap_or(true),
            fly_secret: r.fly_secret.unwrap_or(secret),
            description: r.description,
            name,
        })
    }

    fn group(
        &self,
        key: &Spanned<String>,
        raw: Spanned<GroupRaw>,
        contract: &Contract,
    ) -> Result<Group, Error> {
        let name = key.get_ref().clone();
        let at = key.span().start;
        let line = self.line(raw.span().start);
        let r = raw.into_inner();
        let what = format!("[env.group.{name}]");
        let check_names = |list: &[Spanned<String>]| -> Result<Vec<String>, Error> {
            let mut names: Vec<String> = Vec::new();
            for n in list {
                let s = n.get_ref();
                if contract.var(s).is_none() {
                    return Err(self.error(
                        n.span().start,
                        format!("{what} names `{s}`, which has no [env.{s}] table"),
                        "declare every variable of a group as [env.NAME] (an empty table means optional), \
                         or fix the spelling",
                    ));
                }
                if names.contains(s) {
                    return Err(self.error(
                        n.span().start,
                        format!("{what} names `{s}` twice"),
                        "list each variable once",
                    ));
                }
                names.push(s.clone());
            }
            Ok(names)
        };
        let triggers = [
            r.if_set.as_ref().map(|s| s.span().start),
            r.if_equals.as_ref().map(|s| s.span().start),
            r.if_enabled.as_ref().map(|s| s.span().start),
        ];
        let trigger_count = triggers.iter().flatten().count();
        let kind = match (&r.all_or_none, &r.require) {
            (Some(list), None) => {
                if let Some(at) = triggers.iter().flatten().next() {
                    return Err(self.error(
                        *at,
                        format!("{what}: all_or_none takes no if_set / if_equals / if_enabled"),
                        "an all-or-none group has no condition; use `require` for a conditional one",
                    ));
                }
                let names = check_names(list)?;
                if names.len() < 2 {
                    return Err(self.error(
                        at,
                        format!("{what}: all_or_none needs at least two variables"),
                        "for one variable use its own [env.NAME] rules",
                    ));
                }
                GroupKind::AllOrNone(names)
            }
            (None, Some(list)) => {
                if trigger_count != 1 {
                    return Err(self.error(
                        at,
                        format!(
                            "{what}: `require` needs exactly one condition, found {trigger_count}"
                        ),
                        "add one of: if_set = \"VAR\", if_equals = { VAR = \"value\" }, \
                         if_enabled = \"VAR\" (or use required = true on the variables)",
                    ));
                }
                let names = check_names(list)?;
                if names.is_empty() {
                    return Err(self.error(
                        at,
                        format!("{what}: `require` is empty"),
                        "list the variables the condition makes required",
                    ));
                }
                let (when, when_at) = if let Some(v) = r.if_set {
                    (Trigger::Set(v.get_ref().clone()), v.span().start)
                } else if let Some(v) = r.if_enabled {
                    (Trigger::Enabled(v.get_ref().clone()), v.span().start)
                } else if let Some(m) = r.if_equals {
                    let start = m.span().start;
                    let map = m.into_inner();
                    if map.len() != 1 {
                        return Err(self.error(
                            start,
                            format!("{what}: if_equals needs exactly one VAR = \"value\" pair"),
                            "e.g. if_equals = { EMAIL_PROVIDER = \"mailgun\" }; use two groups for two conditions",
                        ));
                    }
                    let (k, v) = map.into_iter().next().unwrap_or_default();
                    (Trigger::Equals(k, v.into_string()), start)
                } else {
                    unreachable!("trigger_count == 1")
                };
                if contract.var(when.var()).is_none() {
                    return Err(self.error(
                        when_at,
                        format!(
                            "{what}: the condition names `{}`, which has no [env.{}] table",
                            when.var(),
                            when.var()
                        ),
                        "declare the variable the condition reads as [env.NAME], or fix the spelling",
                    ));
                }
                if names.iter().any(|n| n == when.var()) {
                    return Err(self.error(
                        when_at,
                        format!("{what}: `{}` cannot require itself", when.var()),
                        "remove it from `require`",
                    ));
                }
                GroupKind::Require { when, names }
            }
            (Some(_), Some(_)) => {
                return Err(self.error(
                    at,
                    format!("{what} has both all_or_none and require"),
                    "make two groups",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    at,
                    format!("{what} has neither all_or_none nor require"),
                    "all_or_none = [\"A\", \"B\"], or require = [\"A\"] with if_set / if_equals / if_enabled",
                ));
            }
        };
        Ok(Group {
            name,
            line,
            kind,
            severity: r.severity.unwrap_or_default(),
            description: r.description,
        })
    }
}

/// serde's "invalid type: string \"thirty-two\", expected usize", said for a person: the
/// type the key takes, in words, and not the value found (it could be meant as a secret).
fn plain_type_error(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.rsplit_once(", expected ") else {
        return message.to_string();
    };
    let found = found.split([' ', '(']).next().unwrap_or(found);
    let expected = match expected {
        "usize" | "u32" | "u64" => "a whole number of 0 or more, e.g. 32",
        "a boolean" => "true or false",
        "a sequence" => "a list, e.g. [\"a\", \"b\"]",
        other => other,
    };
    format!("expected {expected}, found a {found}")
}

/// The variable and the key whose value starts at `offset`: `[env.NAME]` headers and
/// `NAME = { key = … }` inline tables both.
fn key_at(text: &str, offset: usize) -> Option<(String, String)> {
    let before = text.get(..offset)?;
    let eq = before.trim_end().strip_suffix('=')?;
    let key: String = eq
        .trim_end()
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if key.is_empty() {
        return None;
    }
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = &text[line_start..offset];
    // Inline: `NAME = { … key = ` on this line.
    if let Some((name, _)) = line.split_once('{') {
        let name = name.trim().trim_end_matches('=').trim().trim_matches('"');
        return Some((name.to_string(), key));
    }
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))?;
    let var = header
        .trim_start_matches('[')
        .trim_end_matches(']')
        .strip_prefix("env.")?
        .trim_matches('"');
    Some((var.to_string(), key))
}

pub fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The whole file, of which only `[env]` is read here (config.rs checks the rest).
#[derive(Deserialize)]
struct Doc {
    env: Option<EnvRaw>,
}

#[derive(Default)]
struct EnvRaw {
    vars: Vec<(Spanned<String>, Spanned<VarRaw>)>,
    groups: Vec<(Spanned<String>, Spanned<GroupRaw>)>,
    placeholders: Vec<Spanned<String>>,
    misplaced: Option<Spanned<String>>,
}

// Written by hand rather than with `#[serde(flatten)]`: flatten buffers values, which
// loses the positions that errors need, and would reorder the variables.
impl<'de> Deserialize<'de> for EnvRaw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvRaw, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EnvRaw;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table of variables, e.g. [env.SESSION_SECRET]")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EnvRaw, A::Error> {
                let mut env = EnvRaw::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.get_ref().as_str() {
                        GROUP_KEY => {
                            let groups: IndexMap<Spanned<String>, Spanned<GroupRaw>> =
                                map.next_value()?;
                            env.groups.extend(groups);
                        }
                        PLACEHOLDERS_KEY => env.placeholders = map.next_value()?,
                        // A likely slip for `group`: reported with its line by the validator.
                        "groups" => {
                            map.next_value::<de::IgnoredAny>()?;
                            env.misplaced.get_or_insert(key);
                        }
                        _ => {
                            let var: Spanned<VarRaw> = map.next_value()?;
                            env.vars.push((key, var));
                        }
                    }
                }
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of rules, e.g. { required = true, min_length = 32 }"
)]
struct VarRaw {
    required: Option<bool>,
    secret: Option<bool>,
    min_length: Option<usize>,
    equals: Option<Scalar>,
    one_of: Option<Vec<Scalar>>,
    format: Option<Format>,
    severity: Option<Severity>,
    placeholder_check: Option<bool>,
    fly_secret: Option<bool>,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a group table, e.g. { all_or_none = [\"A\", \"B\"] }"
)]
struct GroupRaw {
    all_or_none: Option<Vec<Spanned<String>>>,
    require: Option<Vec<Spanned<String>>>,
    if_set: Option<Spanned<String>>,
    if_equals: Option<Spanned<IndexMap<String, Scalar>>>,
    if_enabled: Option<Spanned<String>>,
    severity: Option<Severity>,
    description: Option<String>,
}

/// A value to compare with: `"production"`, `3000` or `true` all mean their text.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a string, an integer or a boolean, e.g. \"production\" or 3000"
)]
enum Scalar {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl Default for Scalar {
    fn default() -> Scalar {
        Scalar::Text(String::new())
    }
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Contract, Error> {
        Contract::parse(text, Path::new("f.toml")).map(Option::unwrap)
    }

    #[test]
    fn reads_vars_groups_and_placeholders_in_order() {
        let c = parse(
            r#"app = "x"
[env]
placeholders = ["acme-*"]
[env.B]
required = true
secret = true
min_length = 32
[env.A]
equals = 3000
[env.P]
one_of = ["mailgun", "smtp"]
[env.M]
[env.group.mail]
require = ["M"]
if_equals = { P = "mailgun" }
[env.group.pair]
all_or_none = ["A", "B"]
severity = "warning"
"#,
        )
        .unwrap();
        let names: Vec<_> = c.vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["B", "A", "P", "M"]);
        assert_eq!(c.vars[0].line, 4);
        assert!(c.vars[0].fly_secret && c.vars[0].required);
        assert_eq!(c.vars[1].equals.as_deref(), Some("3000"));
        assert_eq!(c.placeholders, ["acme-*"]);
        assert!(
            matches!(&c.groups[0].kind, GroupKind::Require { when: Trigger::Equals(v, x), names }
            if v == "P" && x == "mailgun" && names == &["M"])
        );
        assert_eq!(c.groups[1].severity, Severity::Warning);
    }

    #[test]
    fn no_env_section_is_none() {
        assert!(
            Contract::parse("app = \"x\"\n", Path::new("f.toml"))
                .unwrap()
                .is_none()
        );
    }

    #[track_caller]
    fn fails(text: &str, line: u32, needle: &str) {
        let e = parse(text).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.line, Some(line), "{}", e.message);
        assert!(e.message.contains(needle), "{} lacks {needle}", e.message);
    }

    #[test]
    fn mistakes_are_reported_with_their_line_and_key() {
        fails("[env.A]\nrequired = true\nmin_len = 3\n", 3, "min_len");
        fails("[env.A]\nformat = \"uri\"\n", 2, "uri");
        fails("[env.A]\nseverity = \"fatal\"\n", 2, "fatal");
        fails("[env.A]\nmin_length = -1\n", 2, "-1");
        fails(
            "[env.SESSION_SECRET]\nrequired = true\nmin_length = \"thirty-two\"\n",
            3,
            "`min_length` of [env.SESSION_SECRET]: expected a whole number of 0 or more, e.g. 32, found a string",
        );
        fails(
            "[env]\nAPI_KEY = { required = \"yes\" }\n",
            2,
            "`required` of [env.API_KEY]: expected true or false, found a string",
        );
        let e = parse("[env.S]\nmin_length = \"hunter2-secret\"\n").unwrap_err();
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        fails("[env]\nA = \"x\"\n", 2, "table of rules");
        fails("[env.\"1X\"]\n", 1, "`1X` is not a variable name");
        fails(
            "[env.A]\nequals = \"a\"\none_of = [\"b\"]\n",
            1,
            "both `equals` and `one_of`",
        );
        fails(
            "[env.A]\n[env.group.g]\nall_or_none = [\"A\", \"B\"]\n",
            3,
            "`B`",
        );
        fails(
            "[env.A]\n[env.B]\n[env.group.g]\nrequire = [\"A\"]\n",
            3,
            "exactly one condition",
        );
        fails(
            "[env.A]\n[env.B]\n[env.group.g]\nrequire = [\"A\"]\nif_set = \"C\"\n",
            5,
            "`C`",
        );
        fails(
            "[env.A]\n[env.B]\n[env.group.g]\nrequire = [\"A\"]\nif_equals = { B = \"x\", A = \"y\" }\n",
            5,
            "exactly one",
        );
        fails(
            "[env.A]\n[env.group.g]\nall_or_none = [\"A\"]\n",
            2,
            "at least two",
        );
        fails("[env.A]\n[env.group.g]\nwhen = \"A\"\n", 3, "when");
        fails("[env.A]\n[env.groups.g]\n", 2, "groups");
        fails("[env]\nplaceholders = [\"*\"]\n", 2, "every value");
    }
}
