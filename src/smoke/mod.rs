//! Phase 6 of the runbook: HTTP smoke checks after a deploy (health, login, configured
//! checks) with warm-up retries and latency budgets, and the optional watch window.

mod check;
pub mod file;
pub mod metrics;
mod watch;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use url::Url;

pub use self::check::CheckReport;
pub use self::file::{Accept, SmokeFile, WatchFile};
pub use self::watch::{WatchReport, WatchSettings};
use crate::error::Error;
use crate::output::Outcome;
use crate::redact::Redactor;

/// The warm-up deadline per check when `[smoke] timeout` is not set (the runbook's new
/// machines take a minute or two to pass their own health checks).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The limit for one request when `[smoke] request_timeout` is not set.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The runbook's budgets: "Response times (should be < 500ms)", "Error rate (should be < 1%)".
pub const DEFAULT_P95_MS: u64 = 500;
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// "Memory usage (should be < 80% of 1GB)", "CPU usage (should be < 70%)".
pub const DEFAULT_MAX_MEMORY: f64 = 0.8;
pub const DEFAULT_MAX_CPU: f64 = 0.7;
/// "Database connection pool (should not be exhausted)": PostgreSQL keeps
/// `superuser_reserved_connections` (3 of the default 100) back, so the app runs out
/// before `max_connections`; 90% leaves that margin.
pub const DEFAULT_MAX_DB_CONNECTIONS: f64 = 0.9;
/// One 5xx in 100 requests is the runbook's 1%: fewer cannot be judged against it.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

/// Everything `smoke` needs, resolved from flags, environment and file, with every `${VAR}`
/// already substituted: nothing is contacted before all of it is known to be usable.
pub struct Settings {
    pub base: Url,
    pub login: Option<Check>,
    pub checks: Vec<Check>,
    /// `[[smoke.identity]]`, each run after the checks with a session of its own.
    pub identities: Vec<Identity>,
    pub request_timeout: Duration,
    /// First warm-up retry delay; later ones double, up to 5 s.
    pub backoff: Duration,
    pub watch: Option<WatchSettings>,
    pub redactor: Redactor,
    /// Inside GitHub Actions: secrets are announced with `::add-mask::` first.
    pub gha: bool,
}

/// A user the smoke test logs in as, with the checks only that user must pass.
pub struct Identity {
    pub name: String,
    pub login: Check,
    pub checks: Vec<Check>,
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

/// The runbook's check when none is configured: `GET /api/health` → 200 `{"status":"ok"}`.
pub fn default_health(base: &Url, timeout: Duration) -> Result<Check, Error> {
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
pub fn join(base: &Url, path: &str, shown: &str) -> Result<Url, Error> {
    let joined = format!("{}{path}", base.as_str().trim_end_matches('/'));
    Url::parse(&joined)
        .map_err(|e| Error::usage(format!("path `{shown}` does not make a URL: {e}")))
}

pub fn method(m: &str) -> reqwest::Method {
    // file.rs accepted only known method names.
    reqwest::Method::from_bytes(m.as_bytes()).unwrap_or(reqwest::Method::GET)
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
    let runner = runner(s)?;
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
        log_report(s, None, &r);
        if !r.ok && r.status.is_none() {
            unreachable = Some(r.name.clone());
        }
        reports.push(r);
    }
    // Each identity logs in with a client and cookie jar of its own, so no session (or
    // role) leaks from one user to the next.
    for id in &s.identities {
        let mut mine = Vec::new();
        if let Some(first) = &unreachable {
            for c in std::iter::once(&id.login).chain(&id.checks) {
                mine.push(CheckReport::skipped(
                    c,
                    format!("not run: `{first}` got no answer from the app"),
                ));
            }
        } else {
            let own = self::runner(s)?;
            let login = own.warm(&id.login).await;
            log_report(s, Some(&id.name), &login);
            let logged_in = login.ok;
            if login.status.is_none() {
                unreachable = Some(login.name.clone());
            }
            mine.push(login);
            for c in &id.checks {
                if !logged_in {
                    mine.push(CheckReport::skipped(
                        c,
                        format!("not run: identity `{}` did not log in", id.name),
                    ));
                    continue;
                }
                let r = own.warm(c).await;
                log_report(s, Some(&id.name), &r);
                mine.push(r);
            }
        }
        for r in &mut mine {
            r.identity = Some(id.name.clone());
        }
        reports.extend(mine);
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

/// The HTTP client of one session: its own cookie jar, so each identity is logged in alone.
fn runner(s: &Settings) -> Result<check::Runner<'_>, Error> {
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
    Ok(check::Runner {
        client,
        jar,
        request_timeout: s.request_timeout,
        backoff: s.backoff,
        redactor: &s.redactor,
    })
}

/// One log line per check, naming the identity it ran as.
fn log_report(s: &Settings, identity: Option<&str>, r: &CheckReport) {
    let who = identity.map(|i| format!("[{i}] ")).unwrap_or_default();
    if r.ok {
        tracing::info!(
            "ok: {who}{} ({} {}, {} ms, {} attempt(s))",
            r.name,
            r.method,
            r.path,
            r.latency_ms.unwrap_or(0),
            r.attempts
        );
    } else {
        tracing::info!(
            "FAILED: {who}{}: {}",
            r.name,
            s.redactor.scrub(r.reason.as_deref().unwrap_or(""))
        );
    }
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
        } else if first.kind == "login" && first.identity.is_some() {
            format!(
                "check the credentials of identity `{}` (its email_var / password_var), that the user exists with that role and is not locked, and its login accept (session or mfa)",
                first.identity.as_deref().unwrap_or_default()
            )
        } else if first.kind == "login" {
            "check SMOKE_USER_EMAIL / SMOKE_USER_PASSWORD, that the smoke user exists and is not \
             locked, and [smoke.login] accept (session or mfa)"
                .to_string()
        } else {
            "see the check's body excerpt above and the app's logs (`fly logs`)".to_string()
        };
        let who = first
            .identity
            .as_ref()
            .map(|i| format!("identity `{i}`: "))
            .unwrap_or_default();
        return Error::failure(format!(
            "smoke test failed: {who}{}: {reason}{more}",
            first.name
        ))
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
    let shown = |r: &CheckReport| match &r.identity {
        Some(i) => format!("[{i}] {}", r.name),
        None => r.name.clone(),
    };
    let name_w = reports.iter().map(|r| shown(r).len()).max().unwrap_or(0);
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
            shown(r),
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
        if let Some(m) = &w.metrics {
            for line in m.lines() {
                let _ = writeln!(s, "{line}");
            }
        }
        if let Some(why) = &w.inconclusive {
            let _ = writeln!(s, "watch NOT JUDGED: {why}");
        }
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
