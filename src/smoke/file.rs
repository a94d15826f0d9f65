//! The `[smoke]`, `[[smoke.check]]`, `[smoke.login]` and `[watch]` sections of
//! flightplan.toml, validated while the file is parsed so every mistake has a line number.

use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};

use crate::clock::parse_duration;

/// `[smoke]`: the warm-up deadline, the checks, the login flow.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeFile {
    /// `false`: `run` deploys without smoke tests (said so in the log). Default: on, and a
    /// run without an app URL is refused.
    pub enabled: Option<bool>,
    /// Warm-up deadline per check: retries stop when it has passed.
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Limit for one request (connect, answer and body).
    #[serde(default, deserialize_with = "opt_duration")]
    pub request_timeout: Option<Duration>,
    /// Names of environment variables whose values are masked in every output, on top of
    /// flightplan's own credentials and every `${VAR}` the checks use.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// `[[smoke.check]]`, in file order; they replace the default health check.
    #[serde(default, rename = "check")]
    pub checks: Vec<CheckFile>,
    pub login: Option<LoginFile>,
    /// `[[smoke.identity]]`: more users, each logged in with a session of its own.
    #[serde(default, rename = "identity")]
    pub identities: Vec<IdentityFile>,
}

/// One `[[smoke.identity]]`: a user (an admin, an agent, a merchant), where its credentials
/// are, how it logs in, and the checks it must pass with its own session.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawIdentity")]
pub struct IdentityFile {
    pub name: String,
    /// The variables holding its email and password (default `SMOKE_<NAME>_EMAIL` and
    /// `SMOKE_<NAME>_PASSWORD`): both are secrets.
    pub email_var: String,
    pub password_var: String,
    pub login: LoginFile,
    pub checks: Vec<CheckFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: String,
    email_var: Option<String>,
    password_var: Option<String>,
    login: Option<LoginFile>,
    #[serde(default, rename = "check")]
    checks: Vec<CheckFile>,
}

impl TryFrom<RawIdentity> for IdentityFile {
    type Error = String;

    fn try_from(r: RawIdentity) -> Result<IdentityFile, String> {
        let name = r.name.trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "[[smoke.identity]] name `{}` must be letters, digits, `-` or `_` (it names the credential variables)",
                r.name
            ));
        }
        let var = |v: Option<String>, key: &str, suffix: &str| -> Result<String, String> {
            match v {
                Some(v) if is_var_name(&v) => Ok(v),
                Some(v) => Err(format!(
                    "[[smoke.identity]] `{name}` {key} `{v}` is not a variable name"
                )),
                None => Ok(format!(
                    "SMOKE_{}_{suffix}",
                    name.to_ascii_uppercase().replace('-', "_")
                )),
            }
        };
        let login = match r.login {
            Some(l) => l,
            None => LoginFile::try_from(RawLogin::default())?,
        };
        Ok(IdentityFile {
            email_var: var(r.email_var, "email_var", "EMAIL")?,
            password_var: var(r.password_var, "password_var", "PASSWORD")?,
            login: LoginFile {
                name: if login.name == "login" {
                    format!("{name} login")
                } else {
                    login.name
                },
                ..login
            },
            checks: r.checks,
            name,
        })
    }
}

/// A `${NAME}`-able environment variable name.
pub fn is_var_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One `[[smoke.check]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawCheck")]
pub struct CheckFile {
    pub name: Option<String>,
    pub method: String,
    pub path: String,
    pub headers: IndexMap<String, String>,
    pub body: Body,
    pub expect_status: Option<Vec<u16>>,
    /// Path (`a.b.0.c`, or a JSON pointer `/a/b/0/c`) → expected value.
    pub expect_json: IndexMap<String, serde_json::Value>,
    pub expect_body_contains: Vec<String>,
    pub max_latency_ms: Option<u64>,
    pub timeout: Option<Duration>,
}

/// A request body as configured; strings may hold `${VAR}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Body {
    #[default]
    None,
    Json(serde_json::Value),
    Form(IndexMap<String, String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Option<String>,
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    headers: IndexMap<String, String>,
    json: Option<toml::Value>,
    form: Option<IndexMap<String, String>>,
    expect_status: Option<OneOrMany<u16>>,
    #[serde(default)]
    expect_json: IndexMap<String, toml::Value>,
    expect_body_contains: Option<OneOrMany<String>>,
    max_latency_ms: Option<u64>,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
}

impl TryFrom<RawCheck> for CheckFile {
    type Error = String;

    fn try_from(r: RawCheck) -> Result<CheckFile, String> {
        let what = match &r.name {
            Some(n) => format!("check `{n}`"),
            None => format!("check `{}`", r.path),
        };
        let method = method(r.method.as_deref().unwrap_or("GET"), &what)?;
        check_path(&r.path, &what)?;
        check_headers(&r.headers, &what)?;
        let body = match (r.json, r.form) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{what} has both `json` and `form`: a request has one body"
                ));
            }
            (Some(j), None) => Body::Json(to_json(j)),
            (None, Some(f)) => Body::Form(f),
            (None, None) => Body::None,
        };
        Ok(CheckFile {
            name: r.name,
            method,
            path: r.path,
            headers: r.headers,
            body,
            expect_status: r
                .expect_status
                .map(|s| statuses(s.into_vec(), &what))
                .transpose()?,
            expect_json: r
                .expect_json
                .into_iter()
                .map(|(k, v)| (k, to_json(v)))
                .collect(),
            expect_body_contains: r
                .expect_body_contains
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            max_latency_ms: r.max_latency_ms,
            timeout: r.timeout,
        })
    }
}

/// `[smoke.login]`: credentials from `SMOKE_USER_EMAIL` / `SMOKE_USER_PASSWORD`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawLogin")]
pub struct LoginFile {
    pub name: String,
    pub method: String,
    pub path: String,
    pub headers: IndexMap<String, String>,
    pub accept: Accept,
    pub mfa_field: String,
    pub email_field: String,
    pub password_field: String,
    pub form: bool,
    pub expect_status: Option<Vec<u16>>,
    pub max_latency_ms: Option<u64>,
    pub timeout: Option<Duration>,
}

/// What a successful login looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    /// A session cookie is set.
    Session,
    /// The answer is an MFA challenge (its `mfa_field` is true).
    Mfa,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    name: Option<String>,
    method: Option<String>,
    path: Option<String>,
    #[serde(default)]
    headers: IndexMap<String, String>,
    accept: Option<Accept>,
    mfa_field: Option<String>,
    email_field: Option<String>,
    password_field: Option<String>,
    /// `json` (default) or `form`.
    encoding: Option<String>,
    expect_status: Option<OneOrMany<u16>>,
    max_latency_ms: Option<u64>,
    #[serde(default, deserialize_with = "opt_duration")]
    timeout: Option<Duration>,
}

impl TryFrom<RawLogin> for LoginFile {
    type Error = String;

    fn try_from(r: RawLogin) -> Result<LoginFile, String> {
        let what = "[smoke.login]";
        let path = r.path.unwrap_or_else(|| "/api/login".into());
        check_path(&path, what)?;
        check_headers(&r.headers, what)?;
        let form = match r.encoding.as_deref() {
            None | Some("json") => false,
            Some("form") => true,
            Some(other) => {
                return Err(format!(
                    "{what} encoding = \"{other}\" is not known: use \"json\" or \"form\""
                ));
            }
        };
        let field = |v: Option<String>, default: &str, key: &str| match v {
            Some(s) if s.trim().is_empty() => Err(format!("{what} {key} is empty")),
            Some(s) => Ok(s),
            None => Ok(default.to_string()),
        };
        Ok(LoginFile {
            name: r.name.unwrap_or_else(|| "login".into()),
            method: method(r.method.as_deref().unwrap_or("POST"), what)?,
            path,
            headers: r.headers,
            accept: r.accept.unwrap_or(Accept::Session),
            mfa_field: field(r.mfa_field, "mfa_required", "mfa_field")?,
            email_field: field(r.email_field, "email", "email_field")?,
            password_field: field(r.password_field, "password", "password_field")?,
            form,
            expect_status: r
                .expect_status
                .map(|s| statuses(s.into_vec(), what))
                .transpose()?,
            max_latency_ms: r.max_latency_ms,
            timeout: r.timeout,
        })
    }
}

/// `[watch]`: the window after the checks pass.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchFile {
    /// How long to watch; `--watch` overrides it. Absent or zero: no watch.
    #[serde(default, deserialize_with = "opt_duration")]
    pub duration: Option<Duration>,
    /// Latency budget for the 95th percentile.
    pub p95_ms: Option<u64>,
    /// Error budget as a fraction (0.01 = 1%).
    #[serde(default, deserialize_with = "opt_fraction")]
    pub max_error_rate: Option<f64>,
    /// Pause between rounds of requests.
    #[serde(default, deserialize_with = "opt_duration")]
    pub poll: Option<Duration>,
    /// Time between progress lines (and between metrics queries).
    #[serde(default, deserialize_with = "opt_duration")]
    pub interval: Option<Duration>,
    /// `false`: the window judges the probes only (no metrics token needed).
    pub metrics: Option<bool>,
    /// The Fly org slug of the metrics API path (`FLY_ORG` wins).
    pub org: Option<String>,
    /// Memory used, as a fraction of the machine's (0.8 = the runbook's 80%).
    #[serde(default, deserialize_with = "opt_fraction")]
    pub max_memory: Option<f64>,
    /// CPU utilisation, as a fraction of all the machine's vCPUs.
    #[serde(default, deserialize_with = "opt_fraction")]
    pub max_cpu: Option<f64>,
    /// Database connections in use, as a fraction of `max_connections`.
    #[serde(default, deserialize_with = "opt_fraction")]
    pub max_db_connections: Option<f64>,
    /// Fewer requests in the window: error rate and p95 are reported as not judged.
    pub min_requests: Option<u64>,
}

/// A value or a list of them: `expect_status = 200` or `expect_status = [200, 204]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v],
            OneOrMany::Many(v) => v,
        }
    }
}

fn method(m: &str, what: &str) -> Result<String, String> {
    let up = m.trim().to_ascii_uppercase();
    const KNOWN: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    if KNOWN.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(format!(
            "{what}: method `{m}` is not one of {}",
            KNOWN.join(", ")
        ))
    }
}

fn check_path(p: &str, what: &str) -> Result<(), String> {
    if p.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "{what}: path `{p}` must start with `/` (it is joined to the app URL)"
        ))
    }
}

fn check_headers(h: &IndexMap<String, String>, what: &str) -> Result<(), String> {
    for name in h.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{what}: `{name}` is not a valid header name"));
        }
    }
    Ok(())
}

fn statuses(list: Vec<u16>, what: &str) -> Result<Vec<u16>, String> {
    if list.is_empty() {
        return Err(format!(
            "{what}: expect_status is an empty list (leave it out to accept any 2xx)"
        ));
    }
    match list.iter().find(|s| !(100..=599).contains(*s)) {
        Some(s) => Err(format!("{what}: expect_status {s} is not an HTTP status")),
        None => Ok(list),
    }
}

/// TOML to JSON; TOML dates (which JSON lacks) become their text.
pub fn to_json(v: toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s),
        toml::Value::Integer(i) => J::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.into_iter().map(to_json).collect()),
        toml::Value::Table(t) => J::Object(t.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(n) => Ok(Some(Duration::from_secs(n))),
        Raw::Text(s) => parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn opt_fraction<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&v) {
        Ok(Some(v))
    } else {
        Err(serde::de::Error::custom(format!(
            "{v} is not a fraction between 0 and 1 (0.01 means 1%)"
        )))
    }
}
