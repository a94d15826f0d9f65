//! Phase 6 of the runbook: HTTP smoke checks after a deploy (health, login, configured
//! checks) with warm-up retries and latency budgets, and the optional watch window.

mod check;
pub mod file;
mod watch;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use url::Url;

pub use self::check::CheckReport;
pub use self::file::{Accept, SmokeFile, WatchFile};
pub use self::watch::{WatchReport, WatchSettings};
use crate::config::Loaded;
use crate::error::Error;
use crate::output::Outcome;
use crate::redact::{Redactor, Secret};

/// The warm-up deadline per check when `[smoke] timeout` is not set (the runbook's new
/// machines take a minute or two to pass their own health checks).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The limit for one request when `[smoke] request_timeout` is not set.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The runbook's budgets: "Response times (should be < 500ms)", "Error rate (should be < 1%)".
pub const DEFAULT_P95_MS: u64 = 500;
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;

/// Everything `smoke` needs, resolved from flags, environment and file, with every `${VAR}`
/// already substituted: nothing is contacted before all of it is known to be usable.
pub struct Settings {
    pub base: Url,
    pub login: Option<Check>,
    pub checks: Vec<Check>,
    pub request_timeout: Duration,
    /// First warm-up retry delay; later ones double, up to 5 s.
    pub backoff: Duration,
    pub watch: Option<WatchSettings>,
    pub redactor: Redactor,
    /// Inside GitHub Actions: secrets are announced with `::add-mask::` first.
    pub gha: bool,
}

/// One request and what its answer must look like.
pub struct Check {
    pub name: String,
    pub kind: Kind,
    pub method: reqwest::Method,
    /// The path as configured (with `${VAR}` unexpanded), for reports.
    pub path: String,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ReqBody,
    /// `None`: any 2xx.
    pub expect_status: Option<Vec<u16>>,
    pub expect_json: Vec<(String, Value)>,
    pub expect_body_contains: Vec<String>,
    pub max_latency: Option<Duration>,
    /// The warm-up deadline of this check.
    pub timeout: Duration,
}

/// A plain check, or the login flow and what counts as a successful login.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Check,
    Login { accept: Accept, mfa_field: String },
}

/// A request body, ready to send. It may hold the smoke password, so it never formats.
pub enum ReqBody {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
}

impl std::fmt::Debug for ReqBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReqBody::None => "ReqBody::None",
            ReqBody::Json(_) => "ReqBody::Json(…)",
            ReqBody::Form(_) => "ReqBody::Form(…)",
        })
    }
}

impl Settings {
    /// Builds the checks from the file: `base` comes from `--url`/`APP_URL`/`app_url`,
    /// `watch` from `--watch`/`[watch] duration`. Missing variables are exit 2.
    pub fn resolve(
        base: Url,
        watch: Option<Duration>,
        loaded: &Loaded,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, Error> {
        let f = &loaded.file.smoke;
        let mut redactor = Redactor::from_env(env);
        if let Some(p) = base.password() {
            redactor.add(p);
        }
        for name in contract_secrets(loaded).iter().chain(&f.secrets) {
            if let Some(v) = env(name).filter(|v| !v.is_empty()) {
                redactor.add(&v);
            }
        }
        let timeout = f.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let mut vars = Vars {
            env,
            loaded,
            used: Vec::new(),
        };

        let login = match &f.login {
            None => None,
            Some(l) => {
                let what = |key: &str| format!("[smoke.login] {key}");
                let cred = |name: &str| {
                    env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                        Error::usage(format!(
                            "[smoke.login] is configured but {name} is not set"
                        ))
                        .file(loaded.describe("[smoke.login]"))
                        .hint(
                            "set SMOKE_USER_EMAIL and SMOKE_USER_PASSWORD to a dedicated smoke-test \
                             user (as repository secrets in CI), or remove [smoke.login]",
                        )
                    })
                };
                let email = Secret::new(cred("SMOKE_USER_EMAIL")?);
                let password = Secret::new(cred("SMOKE_USER_PASSWORD")?);
                // The email identifies a real account; it is masked like the password.
                redactor.add(email.expose());
                redactor.add(password.expose());
                let body = if l.form {
                    ReqBody::Form(vec![
                        (l.email_field.clone(), email.expose().to_string()),
                        (l.password_field.clone(), password.expose().to_string()),
                    ])
                } else {
                    let mut m = serde_json::Map::new();
                    m.insert(l.email_field.clone(), json!(email.expose()));
                    m.insert(l.password_field.clone(), json!(password.expose()));
                    ReqBody::Json(Value::Object(m))
                };
                Some(Check {
                    name: l.name.clone(),
                    kind: Kind::Login {
                        accept: l.accept,
                        mfa_field: l.mfa_field.clone(),
                    },
                    method: method(&l.method),
                    url: join(&base, &vars.expand(&l.path, &what("path"))?, &l.path)
                        .map_err(|e| e.file(loaded.describe(&what("path"))))?,
                    path: l.path.clone(),
                    headers: vars.headers(&l.headers, &what("headers"))?,
                    body,
                    expect_status: l.expect_status.clone(),
                    expect_json: Vec::new(),
                    expect_body_contains: Vec::new(),
                    max_latency: l.max_latency_ms.map(Duration::from_millis),
                    timeout: l.timeout.unwrap_or(timeout),
                })
            }
        };

        let mut checks = Vec::new();
        for (i, c) in f.checks.iter().enumerate() {
            let name = c
                .name
                .clone()
                .unwrap_or_else(|| format!("{} {}", c.method, c.path));
            let what = |key: &str| format!("[[smoke.check]] #{} {key}", i + 1);
            let body = match &c.body {
                file::Body::None => ReqBody::None,
                file::Body::Json(v) => ReqBody::Json(vars.expand_json(v, &what("json"))?),
                file::Body::Form(m) => ReqBody::Form(
                    m.iter()
                        .map(|(k, v)| Ok((k.clone(), vars.expand(v, &what("form"))?)))
                        .collect::<Result<_, Error>>()?,
                ),
            };
            checks.push(Check {
                kind: Kind::Check,
                method: method(&c.method),
                url: join(&base, &vars.expand(&c.path, &what("path"))?, &c.path)
                    .map_err(|e| e.file(loaded.describe(&what("path"))))?,
                path: c.path.clone(),
                headers: vars.headers(&c.headers, &what("headers"))?,
                body,
                expect_status: c.expect_status.clone(),
                expect_json: c
                    .expect_json
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                expect_body_contains: c.expect_body_contains.clone(),
                max_latency: c.max_latency_ms.map(Duration::from_millis),
                timeout: c.timeout.unwrap_or(timeout),
                name,
            });
        }
        if checks.is_empty() {
            checks.push(default_health(&base, timeout)?);
        }
        // A value that went into a request (a token in a header, say) is treated as a secret.
        for v in &vars.used {
            redactor.add(v);
        }

        let w = &loaded.file.watch;
        let watch = watch
            .filter(|d| !d.is_zero())
            .map(|duration| WatchSettings {
                duration,
                p95_budget: Duration::from_millis(w.p95_ms.unwrap_or(DEFAULT_P95_MS)),
                max_error_rate: w.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE),
                poll: w.poll.unwrap_or(Duration::from_secs(1)),
                // About ten lines per window, at least a second and at most a minute apart;
                // a configured interval is taken as is, short of a flood.
                interval: w
                    .interval
                    .unwrap_or_else(|| {
                        (duration / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
                    })
                    .max(Duration::from_millis(100)),
            });

        Ok(Settings {
            base,
            login,
            checks,
            request_timeout: f.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            backoff: Duration::from_millis(250),
            watch,
            redactor,
            gha: env("GITHUB_ACTIONS").is_some_and(|v| v == "true"),
        })
    }
}

/// The runbook's check when none is configured: `GET /api/health` → 200 `{"status":"ok"}`.
fn default_health(base: &Url, timeout: Duration) -> Result<Check, Error> {
    Ok(Check {
        name: "health".into(),
        kind: Kind::Check,
        method: reqwest::Method::GET,
        path: "/api/health".into(),
        url: join(base, "/api/health", "/api/health")?,
        headers: HeaderMap::new(),
        body: ReqBody::None,
        expect_status: Some(vec![200]),
        expect_json: vec![("status".into(), json!("ok"))],
        expect_body_contains: Vec::new(),
        max_latency: None,
        timeout,
    })
}

/// Checks the app URL: http(s), and plain http only where no credential crosses a network
/// (loopback, or Fly's private `.internal` network), since the login sends a password.
pub fn parse_base(raw: &str, source: &str) -> Result<Url, Error> {
    let url = Url::parse(raw.trim()).map_err(|e| {
        Error::usage(format!("{source} `{raw}` is not a URL: {e}"))
            .hint("use the app's base URL, e.g. https://secure2send.fly.dev")
    })?;
    let local = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".internal"),
        None => false,
    };
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if local => Ok(url),
        "http" => Err(Error::usage(format!(
            "{source} `{raw}` is plain http:// to a remote host"
        ))
        .hint("use https://; plain http:// is only accepted for loopback and .internal hosts")),
        _ => Err(
            Error::usage(format!("{source} `{raw}` is not an http(s) URL"))
                .hint("use the app's base URL, e.g. https://secure2send.fly.dev"),
        ),
    }
}

/// `base` + `path`, keeping any path prefix of the base (`https://host/app` + `/api/x`).
/// `shown` is the path as configured: the expanded one may hold a secret.
fn join(base: &Url, path: &str, shown: &str) -> Result<Url, Error> {
    let joined = format!("{}{path}", base.as_str().trim_end_matches('/'));
    Url::parse(&joined)
        .map_err(|e| Error::usage(format!("path `{shown}` does not make a URL: {e}")))
}

fn method(m: &str) -> reqwest::Method {
    // file.rs accepted only known method names.
    reqwest::Method::from_bytes(m.as_bytes()).unwrap_or(reqwest::Method::GET)
}

/// `[env.NAME] secret = true` entries of the environment contract.
fn contract_secrets(loaded: &Loaded) -> Vec<String> {
    let Some(env) = &loaded.file.env else {
        return Vec::new();
    };
    env.iter()
        .filter(|(_, v)| v.get("secret").and_then(toml::Value::as_bool) == Some(true))
        .map(|(k, _)| k.clone())
        .collect()
}

/// `${VAR}` substitution from the environment, remembering every value used.
struct Vars<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    loaded: &'a Loaded,
    used: Vec<String>,
}

impl Vars<'_> {
    fn expand(&mut self, s: &str, what: &str) -> Result<String, Error> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                return Err(
                    Error::usage(format!("{what}: `${{` without a closing `}}`"))
                        .file(self.loaded.describe(what)),
                );
            };
            let name = &after[..end];
            if !is_var_name(name) {
                return Err(
                    Error::usage(format!("{what}: `${{{name}}}` is not a variable name"))
                        .file(self.loaded.describe(what))
                        .hint("use ${NAME} with letters, digits and underscores"),
                );
            }
            let value = (self.env)(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                Error::usage(format!("{what} uses ${{{name}}}, which is not set"))
                    .file(self.loaded.describe(what))
                    .hint(format!("set {name} in the environment of flightplan smoke"))
            })?;
            out.push_str(&value);
            self.used.push(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand_json(&mut self, v: &Value, what: &str) -> Result<Value, Error> {
        Ok(match v {
            Value::String(s) => Value::String(self.expand(s, what)?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.expand_json(x, what))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), self.expand_json(x, what)?)))
                    .collect::<Result<_, Error>>()?,
            ),
            other => other.clone(),
        })
    }

    fn headers(
        &mut self,
        h: &indexmap::IndexMap<String, String>,
        what: &str,
    ) -> Result<HeaderMap, Error> {
        let mut map = HeaderMap::new();
        for (k, v) in h {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                Error::usage(format!("{what}: `{k}` is not a header name"))
                    .file(self.loaded.describe(what))
            })?;
            let sensitive = v.contains("${");
            let mut value = HeaderValue::from_str(&self.expand(v, what)?).map_err(|_| {
                Error::usage(format!(
                    "{what}: the value of `{k}` is not a valid header value"
                ))
                .file(self.loaded.describe(what))
            })?;
            value.set_sensitive(sensitive);
            map.append(name, value);
        }
        Ok(map)
    }
}

fn is_var_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Runs the login and the checks (warm-up retries included), then the watch window when
/// asked for and the checks passed. Every text that leaves here is scrubbed of secrets.
pub async fn run(s: &Settings) -> Result<Outcome, Error> {
    Ok(check(s).await?.to_outcome(s))
}

/// What the smoke phase found: each check's report and the watch window's.
#[derive(Debug)]
pub struct Smoked {
    pub checks: Vec<CheckReport>,
    pub watch: Option<WatchReport>,
    pub ok: bool,
    /// Why it failed, scrubbed.
    pub error: Option<Error>,
}

impl Smoked {
    /// The command's result: the JSON fields and the report for people, scrubbed.
    pub fn to_outcome(&self, s: &Settings) -> Outcome {
        let mut doc = serde_json::Map::new();
        doc.insert("url".into(), json!(s.base.as_str()));
        doc.insert("checks".into(), json!(self.checks));
        if let Some(w) = &self.watch {
            doc.insert("watch".into(), json!(w));
        }
        let mut doc = Value::Object(doc);
        s.redactor.scrub_json(&mut doc);
        let Value::Object(doc) = doc else {
            unreachable!("a scrubbed object stays an object")
        };
        let text = s
            .redactor
            .scrub(&render(&s.base, &self.checks, self.watch.as_ref(), self.ok));
        let mut outcome = Outcome::new(self.ok, doc, text);
        outcome.error = self.error.clone();
        outcome
    }
}

/// Runs the login and the checks (warm-up retries included), then the watch window when
/// asked for and the checks passed.
pub async fn check(s: &Settings) -> Result<Smoked, Error> {
    s.redactor.announce(s.gha);
    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .connect_timeout(s.request_timeout.min(Duration::from_secs(10)))
        .user_agent(concat!(
            "flightplan/",
            env!("CARGO_PKG_VERSION"),
            " (smoke)"
        ))
        .build()
        .map_err(|e| Error::failure(format!("cannot set up the HTTP client: {e}")))?;
    let runner = check::Runner {
        client,
        jar,
        request_timeout: s.request_timeout,
        backoff: s.backoff,
        redactor: &s.redactor,
    };

    let all: Vec<&Check> = s.login.iter().chain(&s.checks).collect();
    let deadline = match all.first() {
        Some(first) if all.iter().all(|c| c.timeout == first.timeout) => {
            format!("warm-up deadline {} each", human(first.timeout))
        }
        _ => "warm-up deadlines per check".to_string(),
    };
    tracing::info!("smoke {}: {} check(s), {deadline}", s.base, all.len());
    let mut reports: Vec<CheckReport> = Vec::new();
    // After a check got no answer at all, the others would only wait out the same deadline.
    let mut unreachable: Option<String> = None;
    for c in &all {
        if let Some(first) = &unreachable {
            reports.push(CheckReport::skipped(
                c,
                format!("not run: `{first}` got no answer from the app"),
            ));
            continue;
        }
        let r = runner.warm(c).await;
        if r.ok {
            tracing::info!(
                "ok: {} ({} {}, {} ms, {} attempt(s))",
                r.name,
                r.method,
                r.path,
                r.latency_ms.unwrap_or(0),
                r.attempts
            );
        } else {
            tracing::info!(
                "FAILED: {}: {}",
                r.name,
                s.redactor.scrub(r.reason.as_deref().unwrap_or(""))
            );
            if r.status.is_none() {
                unreachable = Some(r.name.clone());
            }
        }
        reports.push(r);
    }
    let checks_ok = reports.iter().all(|r| r.ok);

    let watch = match &s.watch {
        Some(w) if checks_ok => Some(runner.watch(&s.checks, w).await),
        Some(_) => {
            tracing::info!("watch skipped: the checks failed");
            None
        }
        None => None,
    };
    let ok = checks_ok && watch.as_ref().is_none_or(|w| w.ok);
    let error = (!ok).then(|| {
        let mut e = failure(&s.base, &reports, watch.as_ref());
        s.redactor.scrub_error(&mut e);
        e
    });
    Ok(Smoked {
        checks: reports,
        watch,
        ok,
        error,
    })
}

/// The error that explains a failed smoke test: the first failed check, or the watch breach.
fn failure(base: &Url, reports: &[CheckReport], watch: Option<&WatchReport>) -> Error {
    let failed: Vec<&CheckReport> = reports.iter().filter(|r| !r.ok && !r.skipped).collect();
    if let Some(first) = failed.first() {
        let reason = first.reason.as_deref().unwrap_or("failed");
        let more = match failed.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let hint = if first.status.is_none() {
            format!(
                "is the app running and reachable at {base}? Check `fly status` and `fly logs`; \
                 if it needs longer to start, raise [smoke] timeout"
            )
        } else if first.kind == "login" {
            "check SMOKE_USER_EMAIL / SMOKE_USER_PASSWORD, that the smoke user exists and is not \
             locked, and [smoke.login] accept (session or mfa)"
                .to_string()
        } else {
            "see the check's body excerpt above and the app's logs (`fly logs`)".to_string()
        };
        return Error::failure(format!("smoke test failed: {}: {reason}{more}", first.name))
            .hint(hint);
    }
    let reason = watch
        .and_then(|w| w.reason.clone())
        .unwrap_or_else(|| "failed".into());
    Error::failure(format!("watch window failed: {reason}"))
        .hint("see the per-check numbers of the watch and the app's logs and metrics (`fly logs`, `fly metrics`)")
}

/// The human report on stdout.
fn render(base: &Url, reports: &[CheckReport], watch: Option<&WatchReport>, ok: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "smoke {base}");
    let name_w = reports.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let req_w = reports
        .iter()
        .map(|r| r.method.len() + 1 + r.path.len())
        .max()
        .unwrap_or(0);
    for r in reports {
        let req = format!("{} {}", r.method, r.path);
        let status = r.status.map_or("-".into(), |s| s.to_string());
        let latency = r.latency_ms.map_or("-".into(), |l| format!("{l} ms"));
        let mark = if r.ok {
            "ok"
        } else if r.skipped {
            "skip"
        } else {
            "FAIL"
        };
        let login = r.login.map(|l| format!("  ({l})")).unwrap_or_default();
        let _ = writeln!(
            s,
            "  {mark:<4}  {:<name_w$}  {req:<req_w$}  {status:>3}  {latency:>7}  {} attempt{}{login}",
            r.name,
            r.attempts,
            if r.attempts == 1 { "" } else { "s" },
        );
        if let Some(reason) = &r.reason {
            let _ = writeln!(s, "        {reason}");
        }
        if let Some(body) = &r.body_excerpt {
            let _ = writeln!(s, "        body: {body}");
        }
    }
    if let Some(w) = watch {
        let _ = writeln!(s, "{}", w.summary());
        for c in w.checks.iter().filter(|c| c.errors > 0) {
            let _ = writeln!(
                s,
                "  {}: {} of {} failed{}",
                c.name,
                c.errors,
                c.samples,
                c.last_error
                    .as_deref()
                    .map(|e| format!(", last: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(s, "{}", if ok { "smoke passed" } else { "smoke FAILED" });
    s
}

/// `250ms`, `12s`, `1m30s`, `2h5m`: durations as the config writes them.
fn human(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms < 1000 {
        return format!("{total_ms}ms");
    }
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) if d.subsec_millis() >= 100 && s < 10 => format!("{:.1}s", d.as_secs_f64()),
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn loaded(text: &str) -> Result<Loaded, Error> {
        Ok(Loaded {
            path: Some("flightplan.toml".into()),
            file: crate::config::parse(text, std::path::Path::new("flightplan.toml"))?,
        })
    }

    fn base() -> Url {
        parse_base("http://127.0.0.1:3000", "--url").unwrap()
    }

    #[test]
    fn default_is_the_runbook_health_check() {
        let s = Settings::resolve(base(), None, &loaded("").unwrap(), &env_of(&[])).unwrap();
        assert!(s.login.is_none());
        assert_eq!(s.checks.len(), 1);
        assert_eq!(s.checks[0].url.as_str(), "http://127.0.0.1:3000/api/health");
        assert_eq!(
            s.checks[0].expect_json,
            vec![("status".into(), json!("ok"))]
        );
        assert_eq!(s.checks[0].timeout, DEFAULT_TIMEOUT);
        assert!(s.watch.is_none());
    }

    #[test]
    fn checks_are_substituted_and_their_values_masked() {
        let l = loaded(
            r#"
[smoke]
timeout = "30s"
[[smoke.check]]
name = "orders"
method = "post"
path = "/api/orgs/${ORG}/orders"
headers = { Authorization = "Bearer ${API_TOKEN}" }
json = { note = "from ${ORG}", n = 1 }
expect_status = 201
expect_json = { "data.id" = 7 }
expect_body_contains = "created"
"#,
        )
        .unwrap();
        let env = env_of(&[("ORG", "acme-corp"), ("API_TOKEN", "tok-123456789")]);
        let s = Settings::resolve(base(), None, &l, &env).unwrap();
        let c = &s.checks[0];
        assert_eq!(c.method, reqwest::Method::POST);
        assert_eq!(c.url.path(), "/api/orgs/acme-corp/orders");
        assert_eq!(c.path, "/api/orgs/${ORG}/orders");
        assert_eq!(c.expect_status, Some(vec![201]));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert!(c.headers["authorization"].is_sensitive());
        let ReqBody::Json(b) = &c.body else { panic!() };
        assert_eq!(b, &json!({"note": "from acme-corp", "n": 1}));
        assert_eq!(s.redactor.scrub("Bearer tok-123456789"), "Bearer ***");
    }

    #[test]
    fn configured_secrets_are_masked() {
        let l = loaded(
            "[env.SESSION_SECRET]\nsecret = true\n[env.NODE_ENV]\nequals = \"production\"\n\
             [smoke]\nsecrets = [\"EXTRA\"]\n",
        )
        .unwrap();
        let env = env_of(&[
            ("SESSION_SECRET", "session-secret-value"),
            ("NODE_ENV", "production"),
            ("EXTRA", "extra-secret-value"),
            ("SMOKE_USER_PASSWORD", "smoke-password"),
        ]);
        let s = Settings::resolve(base(), None, &l, &env).unwrap();
        assert_eq!(
            s.redactor
                .scrub("session-secret-value extra-secret-value smoke-password production"),
            "*** *** *** production"
        );
    }

    #[test]
    fn missing_variables_and_credentials_are_usage_errors() {
        let l = loaded("[[smoke.check]]\npath = \"/x\"\nheaders = { X = \"${NOPE}\" }\n").unwrap();
        let e = Settings::resolve(base(), None, &l, &env_of(&[]))
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("${NOPE}"), "{}", e.message);

        let l = loaded("[smoke.login]\npath = \"/api/login\"\n").unwrap();
        let e = Settings::resolve(base(), None, &l, &env_of(&[("SMOKE_USER_EMAIL", "a@b.c")]))
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("SMOKE_USER_PASSWORD"), "{}", e.message);
    }

    #[test]
    fn file_mistakes_have_a_line() {
        for (text, needle, line) in [
            ("[smoke]\ntimeout = \"2 fortnights\"\n", "unknown unit", 2),
            (
                "[[smoke.check]]\npath = \"/x\"\nexpect_stat = 200\n",
                "expect_stat",
                3,
            ),
            ("[smoke.login]\naccept = \"maybe\"\n", "maybe", 2),
            ("[watch]\nmax_error_rate = 5\n", "fraction", 2),
            ("[[smoke.check]]\npath = \"x\"\n", "must start with", 1),
            (
                "\n[[smoke.check]]\npath = \"/x\"\nmethod = \"FETCH\"\n",
                "FETCH",
                2,
            ),
        ] {
            let e = loaded(text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert_eq!(e.exit_code(), 2);
            assert!(e.message.contains(needle), "{text}: {}", e.message);
            assert_eq!(e.line, Some(line), "{text}: {}", e.message);
        }
    }

    #[test]
    fn plain_http_only_to_local_hosts() {
        assert!(parse_base("http://localhost:3000", "--url").is_ok());
        assert!(parse_base("http://app.internal:8080/", "--url").is_ok());
        assert!(parse_base("https://secure2send.fly.dev", "--url").is_ok());
        let e = parse_base("http://secure2send.fly.dev", "APP_URL").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(parse_base("ftp://x", "--url").is_err());
        assert!(parse_base("not a url", "--url").is_err());
    }

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(7500)), "2h5m");
    }

    #[test]
    fn base_paths_are_kept() {
        let b = parse_base("https://example.com/app/", "--url").unwrap();
        assert_eq!(
            join(&b, "/api/health", "/api/health").unwrap().as_str(),
            "https://example.com/app/api/health"
        );
    }
}
