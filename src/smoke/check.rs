//! One check against the app: the request, the judgement of its answer, and the warm-up
//! retries with backoff until the check's deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::cookie::{CookieStore, Jar};
use serde::Serialize;
use serde_json::Value;

use super::{Accept, Check, Kind, ReqBody};
use crate::redact::Redactor;

/// Later warm-up retries wait at most this long: a machine that starts in 61 s should not
/// be found at 80 s.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// While warming up, one "still waiting" line per this period, not one per attempt.
const NOTE_EVERY: Duration = Duration::from_secs(10);
/// Bodies are read up to this size: enough for any JSON a check inspects.
const BODY_LIMIT: usize = 1 << 20;
/// Characters of a failed answer's body shown in the report.
const EXCERPT_CHARS: usize = 200;

/// The HTTP client, its cookie jar (the login's session) and what every request shares.
pub(super) struct Runner<'a> {
    pub client: reqwest::Client,
    pub jar: Arc<Jar>,
    pub request_timeout: Duration,
    pub backoff: Duration,
    pub redactor: &'a Redactor,
}

/// The result of one request.
#[derive(Debug)]
pub(super) struct Sample {
    pub status: Option<u16>,
    /// Until the whole body was read; `None` when nothing answered.
    pub latency: Option<Duration>,
    pub failure: Option<Failure>,
    /// For a login that passed: `session` or `mfa`.
    pub login: Option<&'static str>,
}

#[derive(Debug)]
pub(super) struct Failure {
    pub reason: String,
    pub excerpt: Option<String>,
    /// Whether warming up may still fix it: no answer, 5xx/408/429, or too slow. An answer
    /// the app gave deliberately (404, a wrong field, rejected credentials) is final.
    pub retry: bool,
}

/// One check's line of the report (and of the JSON document's `checks`).
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub name: String,
    /// The `[[smoke.identity]]` whose session ran it; absent for the main checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// `check` or `login`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub method: String,
    pub path: String,
    pub ok: bool,
    /// The HTTP status of the last attempt; `null` when nothing answered.
    pub status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub attempts: u32,
    /// A login that passed: `session` or `mfa`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_excerpt: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

impl CheckReport {
    fn new(c: &Check) -> CheckReport {
        CheckReport {
            name: c.name.clone(),
            identity: None,
            kind: match c.kind {
                Kind::Check => "check",
                Kind::Login { .. } => "login",
            },
            method: c.method.to_string(),
            path: c.path.clone(),
            ok: false,
            status: None,
            latency_ms: None,
            attempts: 0,
            login: None,
            reason: None,
            body_excerpt: None,
            skipped: false,
        }
    }

    pub(super) fn skipped(c: &Check, reason: String) -> CheckReport {
        CheckReport {
            reason: Some(reason),
            skipped: true,
            ..CheckReport::new(c)
        }
    }
}

impl Runner<'_> {
    /// Runs a check until it passes, fails for good, or its deadline passes.
    pub(super) async fn warm(&self, c: &Check) -> CheckReport {
        let started = Instant::now();
        let deadline = started + c.timeout;
        let mut delay = self.backoff;
        let mut attempts = 0u32;
        let mut noted = started;
        // The last failure that got an answer: when the final attempt only ran out of the
        // deadline's remaining time, that answer explains more than "no answer".
        let mut answered: Option<Sample> = None;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = self
                .request_timeout
                .min(left)
                .max(Duration::from_millis(100));
            let mut sample = self.attempt(c, limit).await;
            let cut_short = sample.status.is_none() && limit < self.request_timeout;
            let left = deadline.saturating_duration_since(Instant::now());
            let last = left < Duration::from_millis(50);
            if last
                && cut_short
                && let Some(earlier) = answered.take()
            {
                sample = earlier;
            }
            let mut report = CheckReport::new(c);
            report.attempts = attempts;
            report.status = sample.status;
            report.latency_ms = sample.latency.map(ms);
            report.login = sample.login;
            let Some(f) = sample.failure else {
                report.ok = true;
                return report;
            };
            // Too little time left for the next attempt to mean anything.
            if !f.retry || last {
                report.reason = Some(if f.retry {
                    format!(
                        "{} (gave up at the {} warm-up deadline after {attempts} attempt{})",
                        f.reason,
                        super::human(c.timeout),
                        if attempts == 1 { "" } else { "s" },
                    )
                } else {
                    f.reason
                });
                report.body_excerpt = f.excerpt;
                return report;
            }
            if attempts == 1 || noted.elapsed() >= NOTE_EVERY {
                noted = Instant::now();
                tracing::info!(
                    "waiting for {}: {} (attempt {attempts}, {} left)",
                    c.name,
                    self.redactor.scrub(&f.reason),
                    super::human(left)
                );
            }
            if sample.status.is_some() {
                answered = Some(Sample {
                    failure: Some(f),
                    ..sample
                });
            }
            tokio::time::sleep(delay.min(left)).await;
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// Sends the check's request once and judges the answer.
    pub(super) async fn attempt(&self, c: &Check, limit: Duration) -> Sample {
        let mut req = self
            .client
            .request(c.method.clone(), c.url.clone())
            .timeout(limit)
            .headers(c.headers.clone());
        req = match &c.body {
            ReqBody::None => req,
            ReqBody::Json(v) => req.json(v),
            ReqBody::Form(f) => req.form(f),
        };
        let cookies_before = self.jar.cookies(&c.url);
        let started = Instant::now();
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Sample {
                    status: None,
                    latency: None,
                    failure: Some(Failure {
                        reason: describe(&e, limit),
                        excerpt: None,
                        retry: true,
                    }),
                    login: None,
                };
            }
        };
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk[..chunk.len().min(BODY_LIMIT - body.len())]);
                    if body.len() >= BODY_LIMIT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Sample {
                        status: Some(status),
                        latency: None,
                        failure: Some(Failure {
                            reason: format!("HTTP {status}, then {}", describe(&e, limit)),
                            excerpt: None,
                            retry: true,
                        }),
                        login: None,
                    };
                }
            }
        }
        let latency = started.elapsed();
        let session_set = match self.jar.cookies(&c.url) {
            Some(after) => cookies_before.as_ref() != Some(&after),
            None => false,
        };
        let (failure, login) = judge(c, status, &body, latency, session_set);
        Sample {
            status: Some(status),
            latency: Some(latency),
            failure: failure.map(|(reason, retry)| Failure {
                reason,
                excerpt: Some(self.excerpt(&body)),
                retry,
            }),
            login,
        }
    }

    /// The start of a body, on one line, with secrets masked.
    fn excerpt(&self, body: &[u8]) -> String {
        let text = String::from_utf8_lossy(body);
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut cut: String = one_line.chars().take(EXCERPT_CHARS).collect();
        if cut.len() < one_line.len() {
            cut.push('…');
        }
        self.redactor.scrub(&cut)
    }
}

/// Whether an answer passes: `(reason, retry)` when it does not, and the login result.
fn judge(
    c: &Check,
    status: u16,
    body: &[u8],
    latency: Duration,
    session_set: bool,
) -> (Option<(String, bool)>, Option<&'static str>) {
    let transient = status >= 500 || status == 408 || status == 429;
    let status_ok = match &c.expect_status {
        Some(list) => list.contains(&status),
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let expected = match &c.expect_status {
            Some(list) if list.len() == 1 => list[0].to_string(),
            Some(list) => format!(
                "one of {}",
                list.iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "2xx".to_string(),
        };
        let reason = match (&c.kind, status) {
            (Kind::Login { .. }, 401 | 403) => {
                format!("credentials rejected: HTTP {status}, expected {expected}")
            }
            _ => format!("HTTP {status}, expected {expected}"),
        };
        return (Some((reason, transient)), None);
    }

    let json = || serde_json::from_slice::<Value>(body);
    let mut login = None;
    match &c.kind {
        Kind::Check => {
            if !c.expect_json.is_empty() {
                let doc = match json() {
                    Ok(v) => v,
                    Err(e) => return (Some((format!("the body is not JSON ({e})"), false)), None),
                };
                for (path, want) in &c.expect_json {
                    match lookup(&doc, path) {
                        None => {
                            return (
                                Some((format!("JSON field `{path}` is missing"), false)),
                                None,
                            );
                        }
                        Some(got) if !same(got, want) => {
                            return (
                                Some((
                                    format!("JSON field `{path}` is {got}, expected {want}"),
                                    false,
                                )),
                                None,
                            );
                        }
                        Some(_) => {}
                    }
                }
            }
            let text = String::from_utf8_lossy(body);
            if let Some(missing) = c
                .expect_body_contains
                .iter()
                .find(|s| !text.contains(s.as_str()))
            {
                return (
                    Some((format!("the body does not contain `{missing}`"), false)),
                    None,
                );
            }
        }
        Kind::Login { accept, mfa_field } => {
            let challenged = json()
                .ok()
                .is_some_and(|v| lookup(&v, mfa_field) == Some(&Value::Bool(true)));
            let verdict = match (accept, challenged, session_set) {
                (Accept::Session, true, _) => Err(format!(
                    "the answer is an MFA challenge (`{mfa_field}` is true) but [smoke.login] \
                     accept = \"session\": use accept = \"mfa\", or a smoke user without MFA"
                )),
                (Accept::Session, false, true) => Ok("session"),
                (Accept::Session, false, false) => {
                    Err(format!("HTTP {status} but no session cookie was set"))
                }
                (Accept::Mfa, true, _) => Ok("mfa"),
                (Accept::Mfa, false, true) => Err(format!(
                    "logged in without an MFA challenge (`{mfa_field}` is not true) but \
                     [smoke.login] accept = \"mfa\""
                )),
                (Accept::Mfa, false, false) => Err(format!(
                    "no MFA challenge: JSON field `{mfa_field}` is not true"
                )),
            };
            match verdict {
                Ok(kind) => login = Some(kind),
                Err(reason) => return (Some((reason, false)), None),
            }
        }
    }

    if let Some(max) = c.max_latency
        && latency > max
    {
        // A cold machine is slow at first: warming up may bring it under budget.
        return (
            Some((
                format!("took {} ms, over the {} ms budget", ms(latency), ms(max)),
                true,
            )),
            login,
        );
    }
    (None, login)
}

/// A field by dotted path (`data.items.0.id`) or JSON pointer (`/data/items/0/id`).
pub(super) fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    if path.starts_with('/') {
        return v.pointer(path);
    }
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// JSON equality where `1` and `1.0` are the same number (TOML and JSON spell them apart).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// What went wrong with a request that got no (complete) answer, without the URL, which
/// may carry a substituted secret.
fn describe(e: &reqwest::Error, limit: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", super::human(limit));
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "the request failed"
    };
    // The innermost cause is the useful one ("Connection refused (os error 111)").
    let mut cause: Option<String> = None;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = Some(s.to_string());
        src = s.source();
    }
    match cause {
        Some(c) => format!("{what}: {c}"),
        None => what.to_string(),
    }
}

pub(super) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_pointers() {
        let v = json!({"data": {"items": [{"id": 7}], "a.b": true}});
        assert_eq!(lookup(&v, "data.items.0.id"), Some(&json!(7)));
        assert_eq!(lookup(&v, "/data/items/0/id"), Some(&json!(7)));
        assert_eq!(lookup(&v, "/data/a.b"), Some(&json!(true)));
        assert_eq!(lookup(&v, "data.items.1.id"), None);
        assert_eq!(lookup(&v, "data.nope"), None);
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(same(&json!(1), &json!(1.0)));
        assert!(same(&json!({"a": [1, "x"]}), &json!({"a": [1.0, "x"]})));
        assert!(!same(&json!("1"), &json!(1)));
    }
}
