//! Rule evaluation: each variable's value against its rules and its groups, and the Fly
//! app's secret names against what the contract requires. Messages never quote a secret.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde::Serialize;

use super::contract::{Contract, Format, GroupKind, Severity, Trigger, Var};
use super::dotenv::EnvFile;
use super::placeholder::Detector;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Missing,
    Invalid,
    Placeholder,
    Warning,
}

/// Where a check looked: the app's environment (process + env file) or the Fly app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Env,
    Fly,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
    pub rule: String,
    pub severity: Severity,
    pub scope: Scope,
    /// Where the value came from: `process environment` or `FILE:LINE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The value's length in characters (lengths are safe to print; values are not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub length: Option<usize>,
    pub secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The contract line of the variable, for annotations.
    #[serde(skip)]
    pub line: u32,
}

impl Check {
    /// Failed and counts for the exit code.
    pub fn is_failure(&self) -> bool {
        !matches!(self.status, Status::Ok | Status::Warning)
    }
}

/// A variable's value as found, with where it was found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Set {
        value: String,
        source: String,
    },
    /// Present but empty: as good as missing, but worth saying so.
    Empty {
        source: String,
    },
    Unset,
}

impl Lookup {
    pub fn value(&self) -> Option<&str> {
        match self {
            Lookup::Set { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// Every contract variable's value. A non-empty process variable wins over the env file;
/// an empty one does not hide the file's value (`${{ secrets.X }}` of a secret that does
/// not exist is an empty string in GitHub Actions).
pub fn resolve(
    contract: &Contract,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&EnvFile>,
) -> IndexMap<String, Lookup> {
    let mut out = IndexMap::new();
    for var in &contract.vars {
        let process = env(&var.name);
        let from_file = file.and_then(|f| f.get(&var.name).map(|(v, l)| (v, l, &f.path)));
        let lookup = match (process, from_file) {
            (Some(v), _) if !v.is_empty() => Lookup::Set {
                value: v,
                source: "process environment".into(),
            },
            (_, Some((v, line, path))) if !v.is_empty() => Lookup::Set {
                value: v.to_string(),
                source: format!("{path}:{line}"),
            },
            (_, Some((_, line, path))) => Lookup::Empty {
                source: format!("{path}:{line}"),
            },
            (Some(_), None) => Lookup::Empty {
                source: "process environment".into(),
            },
            (None, None) => Lookup::Unset,
        };
        out.insert(var.name.clone(), lookup);
    }
    out
}

/// Whether a variable's value must never be printed: marked `secret`, or named like one.
pub fn is_sensitive(var: &Var) -> bool {
    let n = var.name.to_ascii_uppercase();
    var.secret
        || ["SECRET", "TOKEN", "PASSWORD", "PASSWD", "KEY"]
            .iter()
            .any(|w| n.contains(w))
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

impl Trigger {
    fn holds(&self, value_of: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            Trigger::Set(v) => value_of(v).is_some(),
            Trigger::Equals(v, x) => value_of(v).as_deref() == Some(x.as_str()),
            Trigger::Enabled(v) => value_of(v).is_some_and(|s| truthy(&s)),
        }
    }
}

/// Why `var` is required here, with each reason's severity; empty when it is optional.
/// `is_set` says which variables count as present (for all-or-none groups); conditions read
/// values through `value_of`.
fn requirements(
    contract: &Contract,
    var: &Var,
    is_set: &dyn Fn(&str) -> bool,
    value_of: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, Severity)> {
    let mut reasons = Vec::new();
    if var.required {
        reasons.push(("required".to_string(), var.severity));
    }
    for g in &contract.groups {
        if !g.kind.names().contains(&var.name) {
            continue;
        }
        match &g.kind {
            GroupKind::Require { when, .. } if when.holds(value_of) => reasons.push((
                format!("required because {} (group `{}`)", when.describe(), g.name),
                g.severity,
            )),
            GroupKind::AllOrNone(names) => {
                let set: Vec<&str> = names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| is_set(n))
                    .collect();
                if !set.is_empty() && set.len() < names.len() {
                    reasons.push((
                        format!(
                            "group `{}` is all-or-none and {} of {} are set ({}): set this one too, \
                             or unset the others",
                            g.name,
                            set.len(),
                            names.len(),
                            set.join(", ")
                        ),
                        g.severity,
                    ));
                }
            }
            GroupKind::Require { .. } => {}
        }
    }
    reasons
}

/// The variable's rules as one line for the report's RULE column.
pub fn describe(contract: &Contract, var: &Var) -> String {
    let mut parts = Vec::new();
    if var.required {
        parts.push("required".to_string());
    }
    for g in &contract.groups {
        if !g.kind.names().contains(&var.name) {
            continue;
        }
        parts.push(match &g.kind {
            GroupKind::Require { when, .. } => format!("required if {}", when.describe()),
            GroupKind::AllOrNone(_) => format!("all-or-none `{}`", g.name),
        });
    }
    if var.secret {
        parts.push("secret".into());
    }
    if let Some(x) = &var.equals {
        parts.push(format!("= {x}"));
    }
    if !var.one_of.is_empty() {
        parts.push(format!("one of {}", var.one_of.join("|")));
    }
    if let Some(f) = var.format {
        parts.push(f.name().into());
    }
    if let Some(n) = var.min_length {
        parts.push(format!("min {n} chars"));
    }
    if parts.iter().all(|p| p == "secret") {
        parts.insert(0, "optional".into());
    }
    if var.severity == Severity::Warning {
        parts.push("warning only".into());
    }
    parts.join(", ")
}

/// Checks every variable of the contract against the values found.
pub fn evaluate(
    contract: &Contract,
    values: &IndexMap<String, Lookup>,
    detector: &Detector,
) -> Vec<Check> {
    let value_of = |n: &str| values.get(n).and_then(Lookup::value).map(str::to_string);
    let is_set = |n: &str| values.get(n).and_then(Lookup::value).is_some();
    let mut checks = Vec::new();
    for var in &contract.vars {
        let lookup = values.get(&var.name).cloned().unwrap_or(Lookup::Unset);
        let mut check = Check {
            name: var.name.clone(),
            status: Status::Ok,
            message: String::new(),
            rule: describe(contract, var),
            severity: var.severity,
            scope: Scope::Env,
            source: None,
            length: None,
            secret: var.secret,
            description: var.description.clone(),
            line: var.line,
        };
        match lookup {
            Lookup::Set { value, source } => {
                let findings = check_value(var, &value, detector);
                check.length = Some(value.chars().count());
                if findings.is_empty() {
                    check.message = format!("set, {} chars", value.chars().count());
                } else {
                    check.status = match var.severity {
                        Severity::Warning => Status::Warning,
                        Severity::Error => findings[0].0,
                    };
                    check.message = findings
                        .into_iter()
                        .map(|(_, m)| m)
                        .collect::<Vec<_>>()
                        .join("; ");
                }
                check.source = Some(source);
            }
            Lookup::Empty { .. } | Lookup::Unset => {
                let reasons = requirements(contract, var, &is_set, &value_of);
                let what = match &lookup {
                    Lookup::Empty { source } => {
                        check.source = Some(source.clone());
                        "set but empty"
                    }
                    _ => "not set",
                };
                if reasons.is_empty() {
                    check.message = format!("{what} (optional)");
                } else {
                    let severity = reasons.iter().map(|r| r.1).max().unwrap_or_default();
                    check.severity = severity;
                    check.status = match severity {
                        Severity::Error => Status::Missing,
                        Severity::Warning => Status::Warning,
                    };
                    let why: Vec<String> = reasons.into_iter().map(|r| r.0).collect();
                    check.message = format!("{what}; {}", why.join("; "));
                }
            }
        }
        checks.push(check);
    }
    checks
}

/// Everything wrong with a set value, most telling first.
fn check_value(var: &Var, value: &str, detector: &Detector) -> Vec<(Status, String)> {
    let sensitive = is_sensitive(var);
    let shown = if sensitive {
        "the value".to_string()
    } else {
        show(value)
    };
    let mut findings = Vec::new();
    let accepted = var.equals.as_deref() == Some(value) || var.one_of.iter().any(|x| x == value);
    if var.placeholder_check
        && !accepted
        && let Some(why) = detector.detect(value, sensitive)
    {
        findings.push((Status::Placeholder, why));
    }
    if let Some(x) = &var.equals
        && x != value
    {
        findings.push((
            Status::Invalid,
            if sensitive {
                "the value is not the required one".to_string()
            } else {
                format!("{shown} must be `{x}`")
            },
        ));
    }
    if !var.one_of.is_empty() && !accepted {
        findings.push((
            Status::Invalid,
            format!("{shown} must be one of: {}", var.one_of.join(", ")),
        ));
    }
    if let Some(f) = var.format
        && let Err(why) = check_format(f, value)
    {
        findings.push((Status::Invalid, format!("{shown} {why}")));
    }
    if let Some(min) = var.min_length {
        let len = value.chars().count();
        if len < min {
            findings.push((
                Status::Invalid,
                format!("is {len} characters long, needs at least {min}"),
            ));
        }
    }
    findings
}

/// A non-secret value for a message: quoted, on one line, not too long.
fn show(v: &str) -> String {
    let one_line: String = v
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > 60 {
        format!("`{}…`", one_line.chars().take(60).collect::<String>())
    } else {
        format!("`{one_line}`")
    }
}

/// `Err(why)`, phrased to follow "the value" or the quoted value.
pub fn check_format(format: Format, v: &str) -> Result<(), String> {
    match format {
        Format::Url | Format::HttpsUrl => {
            let url = url::Url::parse(v.trim()).map_err(|_| "is not a URL".to_string())?;
            if !url.has_host() || url.host_str().is_some_and(str::is_empty) {
                return Err("is not a URL with a host".into());
            }
            match (format, url.scheme()) {
                (Format::HttpsUrl, "https") | (Format::Url, "http" | "https") => Ok(()),
                (Format::HttpsUrl, "http") => {
                    Err("uses http://; it must be an https:// URL".into())
                }
                (Format::HttpsUrl, _) => Err("is not an https:// URL".into()),
                _ => Err("is not an http:// or https:// URL".into()),
            }
        }
        Format::PostgresUrl => {
            let url = url::Url::parse(v.trim())
                .map_err(|_| "is not a PostgreSQL URL (postgres://USER:PASSWORD@HOST/DB)")?;
            if !matches!(url.scheme(), "postgres" | "postgresql") {
                return Err("is not a postgres:// or postgresql:// URL".into());
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err("is a PostgreSQL URL without a host".into());
            }
            if url.path().trim_start_matches('/').is_empty() {
                return Err("is a PostgreSQL URL that names no database".into());
            }
            Ok(())
        }
        Format::Email => {
            if is_email(v.trim()) {
                Ok(())
            } else {
                Err("is not an e-mail address".into())
            }
        }
        Format::Integer => v
            .trim()
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| "is not an integer".into()),
        Format::Boolean => {
            if matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "true" | "false" | "1" | "0" | "yes" | "no" | "on" | "off"
            ) {
                Ok(())
            } else {
                Err("is not a boolean (true/false, 1/0, yes/no, on/off)".into())
            }
        }
    }
}

/// `user@host.tld`, or `Name <user@host.tld>` as mail headers write it.
fn is_email(v: &str) -> bool {
    let addr = match (v.rfind('<'), v.strip_suffix('>')) {
        (Some(i), Some(inner)) => &inner[i + 1..],
        _ => v,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.contains(char::is_whitespace)
        && !local.contains(['<', '>', '@'])
        && domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// The Fly app's side: each variable the contract expects among the app's secrets.
pub fn audit_fly(
    contract: &Contract,
    values: &IndexMap<String, Lookup>,
    in_fly: &HashSet<String>,
    app: &str,
) -> Vec<Check> {
    let value_of = |n: &str| values.get(n).and_then(Lookup::value).map(str::to_string);
    let mut checks = Vec::new();
    for var in contract.vars.iter().filter(|v| v.fly_secret) {
        // Only variables absent from the app get here; an all-or-none group is in use when
        // another member is in the app or in the checked environment.
        let is_set = |n: &str| {
            n != var.name && (in_fly.contains(n) || values.get(n).and_then(Lookup::value).is_some())
        };
        let mut check = Check {
            name: var.name.clone(),
            status: Status::Ok,
            message: String::new(),
            rule: format!("Fly secret of `{app}`"),
            severity: var.severity,
            scope: Scope::Fly,
            source: None,
            length: None,
            secret: var.secret,
            description: None,
            line: var.line,
        };
        if in_fly.contains(&var.name) {
            check.message = format!("set in Fly app `{app}`");
        } else {
            let reasons = requirements(contract, var, &is_set, &value_of);
            if reasons.is_empty() {
                check.message = format!("not set in Fly app `{app}` (optional)");
            } else {
                let severity = reasons.iter().map(|r| r.1).max().unwrap_or_default();
                check.severity = severity;
                check.status = match severity {
                    Severity::Error => Status::Missing,
                    Severity::Warning => Status::Warning,
                };
                let why: Vec<String> = reasons.into_iter().map(|r| r.0).collect();
                check.message = format!(
                    "not set in Fly app `{app}`; {}; set it with `fly secrets set {}=… -a {app}`",
                    why.join("; "),
                    var.name
                );
            }
        }
        checks.push(check);
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        use Format::*;
        assert!(check_format(Url, "http://x.io/a").is_ok());
        assert!(check_format(Url, "ftp://x.io").is_err());
        assert!(check_format(Url, "not a url").is_err());
        assert!(check_format(HttpsUrl, "https://secure2send.fly.dev").is_ok());
        assert!(
            check_format(HttpsUrl, "http://secure2send.fly.dev")
                .unwrap_err()
                .contains("https")
        );
        assert!(check_format(PostgresUrl, "postgresql://u:p@h:5432/db?sslmode=require").is_ok());
        assert!(check_format(PostgresUrl, "postgres://u:p@h:5432/").is_err());
        assert!(check_format(PostgresUrl, "mysql://u:p@h/db").is_err());
        assert!(check_format(Email, "noreply@mg.secure2send.io").is_ok());
        assert!(check_format(Email, "Secure2Send <noreply@mg.secure2send.io>").is_ok());
        assert!(check_format(Email, "noreply").is_err());
        assert!(check_format(Email, "a b@c.io").is_err());
        assert!(check_format(Email, "a@localhost").is_err());
        assert!(check_format(Integer, "3000").is_ok());
        assert!(check_format(Integer, "3k").is_err());
        assert!(check_format(Boolean, "TRUE").is_ok());
        assert!(check_format(Boolean, "enabled").is_err());
    }

    #[test]
    fn secret_like_names_are_sensitive() {
        let c = super::super::contract::Contract::parse(
            "[env.OPENAI_API_KEY]\n[env.PORT]\n[env.WEBHOOK_URL]\nsecret = true\n",
            std::path::Path::new("f.toml"),
        )
        .unwrap()
        .unwrap();
        let s: Vec<bool> = c.vars.iter().map(is_sensitive).collect();
        assert_eq!(s, [true, false, true]);
    }
}
