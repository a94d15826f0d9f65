//! The one HTTP layer between flightplan and its vendors (Neon, Fly, GitHub): base URLs
//! (https except loopback), clients (timeouts, user agent), the one retry policy (backon:
//! exponential backoff, full jitter, `Retry-After`, only what is safe to repeat) and the one
//! error mapping, which keeps the vendor's message and request id and says what to do next.

use std::future::Future;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

use crate::error::Error;
use crate::redact::Secret;

/// Sent with every request, so a vendor's logs tell flightplan's calls apart.
pub const USER_AGENT: &str = concat!("flightplan/", env!("CARGO_PKG_VERSION"));

/// What the layer needs to know about one vendor's API.
#[derive(Debug)]
pub struct Vendor {
    /// `the Fly Machines API`, as messages name it.
    pub name: &'static str,
    /// The variable that overrides the base URL.
    pub url_var: &'static str,
    pub default_url: &'static str,
    /// Hosts besides loopback that may be reached over plain http (Fly's `_api.internal`).
    pub private_suffix: Option<&'static str>,
    /// Response headers carrying the vendor's request id, first match wins.
    pub request_id_headers: &'static [&'static str],
    /// A request header the vendor echoes back as its request id (Neon's `X-Request-ID`):
    /// flightplan sends a fresh one per attempt, so even a lost answer has an id to quote.
    pub client_request_id: Option<&'static str>,
    /// Body fields with the vendor's error text, first match wins.
    pub message_fields: &'static [&'static str],
    /// The body field with the vendor's error code (`code` for Neon, `status` for Fly).
    pub code_field: Option<&'static str>,
    /// Statuses the vendor documents as "not executed, safe to send again" for any
    /// method (429 everywhere; Neon adds 423 and 503).
    pub not_executed: fn(StatusCode, &HeaderMap) -> bool,
    /// Message and hint for an error answer: the vendor's own words on what to do next.
    pub advise: fn(&Answered<'_>) -> Advice,
}

/// An error answer, as [`Vendor::advise`] sees it.
#[derive(Debug)]
pub struct Answered<'a> {
    pub status: StatusCode,
    /// `GET /v1/apps/a/machines/m1`.
    pub what: &'a str,
    /// The path's segments after the base URL's own path.
    pub segments: &'a [String],
    /// The vendor's error text (or the body, or the status's reason).
    pub detail: &'a str,
}

/// What [`Vendor::advise`] says: a message replacing the generic one, and the hint.
#[derive(Debug, Default)]
pub struct Advice {
    pub message: Option<String>,
    pub hint: Option<String>,
}

/// `FLY_API_URL` (or its default) parsed: https, or plain http only to loopback (and the
/// vendor's private network), so a credential never crosses a network in clear text.
pub fn base_url(vendor: &Vendor, raw: Option<&str>) -> Result<Url, Error> {
    let raw = raw
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(vendor.default_url);
    let var = vendor.url_var;
    let url = Url::parse(raw).map_err(|e| {
        Error::usage(format!("{var} `{raw}` is not a URL: {e}"))
            .hint(format!("unset it to use {}", vendor.default_url))
    })?;
    let local = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            d == "localhost" || vendor.private_suffix.is_some_and(|s| d.ends_with(s))
        }
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        _ => {
            let also = vendor
                .private_suffix
                .map(|s| format!(" and {s} hosts"))
                .unwrap_or_default();
            return Err(Error::usage(format!(
                "{var} `{raw}` is not https:// (plain http:// would send the credential in clear text)"
            ))
            .hint(format!(
                "plain http:// is only accepted for loopback{also} (a local fake); unset it to use {}",
                vendor.default_url
            )));
        }
    }
    if url.cannot_be_a_base() {
        return Err(Error::usage(format!("{var} `{raw}` cannot take a path")));
    }
    Ok(url)
}

/// A client with a per-request deadline and a shorter one for opening the connection.
pub fn client(timeout: Duration) -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| Error::failure(format!("cannot set up the HTTP client: {e}")))
}

/// When a request may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Never: even a certainly unexecuted request is not repeated (the caller decides).
    Never,
    /// Only when it certainly was not executed: the connection never opened, or the vendor
    /// answered a status it documents as not executed (429; see [`Vendor::not_executed`]).
    /// A POST that creates something.
    IfNotExecuted,
    /// Whenever the failure is transient (also a timeout, a reset, 408, 5xx): reads, and
    /// writes whose repeat leaves the same result.
    Idempotent,
}

/// The one retry policy: exponential backoff from `min_delay` to `max_delay` with full
/// jitter (each wait drawn from zero to the current delay), at most `max_times` retries,
/// `Retry-After` honoured up to `max_retry_after` (beyond it flightplan gives up rather than
/// wait), and never a wait that would end past the caller's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_times: usize,
    pub max_retry_after: Duration,
}

impl Policy {
    pub const fn new(min_delay: Duration, max_delay: Duration, max_times: usize) -> Policy {
        Policy {
            min_delay,
            max_delay,
            max_times,
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// Runs `attempt` until it succeeds or fails for good. A failure is retried when it
    /// says it may be ([`Failure::retry`]); the last failure says how often it was sent.
    pub async fn run<T, F, Fut>(&self, deadline: Option<Instant>, attempt: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_times)
            .with_factor(2.0);
        let max_retry_after = self.max_retry_after;
        let mut sent = 0u32;
        let mut attempt = attempt;
        let counted = || {
            sent += 1;
            attempt()
        };
        let result = counted
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|f: &Failure| f.retry.is_some())
            .adjust(|f: &Failure, next: Option<Duration>| {
                let next = next?;
                let wait = match f.retry {
                    Some(Some(after)) if after > max_retry_after => return None,
                    Some(Some(after)) => after,
                    // Full jitter: spreads runners that failed together.
                    _ => next.mul_f64(rand::random_range(0.0..=1.0)),
                };
                match deadline {
                    Some(d) if Instant::now() + wait >= d => None,
                    _ => Some(wait),
                }
            })
            .notify(|f: &Failure, wait: Duration| {
                tracing::info!("{}; retrying in {:.1}s", f.notice, wait.as_secs_f64());
            })
            .await;
        result.map_err(|mut f| {
            f.attempts = sent;
            if sent > 1 {
                let hint = f.error.hint.take().unwrap_or_default();
                f.error.hint = Some(format!("{hint} (sent {sent} times, with backoff)"));
            }
            f
        })
    }
}

/// A request that did not succeed.
#[derive(Debug)]
pub struct Failure {
    pub error: Error,
    /// The vendor's answer, if one came.
    pub status: Option<StatusCode>,
    /// The vendor may have executed it (the answer was lost, or a 5xx to a write): look
    /// at what exists before sending it again.
    pub unsure: bool,
    /// `Some` when it may be sent again, with the vendor's `Retry-After` if it gave one.
    pub retry: Option<Option<Duration>>,
    /// The vendor's `Retry-After`, whether or not this layer retries the request.
    pub retry_after: Option<Duration>,
    /// How often it was sent (filled in by [`Policy::run`]).
    pub attempts: u32,
    /// One line for the log when it is retried.
    pub notice: String,
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        f.error
    }
}

/// A successful answer (2xx, or a status the call handles itself).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// The JSON body; `Null` when empty, a string when the body was not JSON.
    pub body: Value,
    pub request_id: Option<String>,
}

impl Reply {
    /// The vendor's error text of an answer the caller handles itself.
    pub fn message(&self, vendor: &Vendor) -> String {
        detail(vendor, self.status, &self.body)
    }
}

/// One request to a vendor's API.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    /// Values never logged (a lease nonce lets its holder change the machine).
    pub headers: Vec<(&'static str, Secret)>,
    pub body: Option<Value>,
    pub timeout: Option<Duration>,
    pub repeat: Repeat,
    /// Statuses the caller handles itself: returned as a [`Reply`], never retried.
    pub pass: Vec<StatusCode>,
}

impl Call {
    pub fn new(method: Method, segments: &[&str], repeat: Repeat) -> Call {
        Call {
            method,
            segments: segments.iter().map(|s| (*s).to_string()).collect(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            timeout: None,
            repeat,
            pass: Vec::new(),
        }
    }

    /// A GET: idempotent.
    pub fn get(segments: &[&str]) -> Call {
        Call::new(Method::GET, segments, Repeat::Idempotent)
    }

    /// A POST, repeated only when it certainly was not executed.
    pub fn post(segments: &[&str]) -> Call {
        Call::new(Method::POST, segments, Repeat::IfNotExecuted)
    }

    /// A DELETE, repeated only when it certainly was not executed.
    pub fn delete(segments: &[&str]) -> Call {
        Call::new(Method::DELETE, segments, Repeat::IfNotExecuted)
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Call {
        self.query.push((key.to_string(), value.into()));
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Call {
        self.headers.push((name, Secret::new(value)));
        self
    }

    pub fn json(mut self, body: Value) -> Call {
        self.body = Some(body);
        self
    }

    /// Overrides the client's timeout for this call (e.g. a `/wait` that may block 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Call {
        self.timeout = Some(timeout);
        self
    }

    pub fn repeat(mut self, repeat: Repeat) -> Call {
        self.repeat = repeat;
        self
    }

    pub fn pass(mut self, status: StatusCode) -> Call {
        self.pass.push(status);
        self
    }

    /// `METHOD /path` for messages.
    pub fn describe(&self) -> String {
        format!("{} /{}", self.method, self.segments.join("/"))
    }
}

/// The error mapping of one vendor and credential: answers to [`Reply`] or [`Failure`].
#[derive(Clone)]
pub struct Mapper {
    pub vendor: &'static Vendor,
    /// Removed from any text the vendor sends back (a server could echo it).
    credential: Secret,
}

/// One vendor's API: a client, its base URL, its credential, and its retry budget.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    vendor: &'static Vendor,
    /// The `Authorization` header's value.
    authorization: Secret,
    map: Mapper,
    pub policy: Policy,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Api({} at {})", self.vendor.name, self.base)
    }
}

impl Api {
    /// `authorization` is the whole header value (`Bearer …`, `FlyV1 …`); `credential` the
    /// secret inside it. A value that cannot be a header is exit 2 with `cred_var` named.
    pub fn new(
        vendor: &'static Vendor,
        base: Url,
        authorization: &str,
        credential: &str,
        cred_var: &str,
        timeout: Duration,
        policy: Policy,
    ) -> Result<Api, Error> {
        if HeaderValue::from_str(authorization).is_err() {
            return Err(Error::usage(format!(
                "{cred_var} contains characters that cannot be sent in an HTTP header"
            ))
            .hint("copy it again, whole and on one line"));
        }
        Ok(Api {
            http: client(timeout)?,
            base,
            vendor,
            authorization: Secret::new(authorization),
            map: Mapper::new(vendor, credential),
            policy,
        })
    }

    pub fn vendor(&self) -> &'static Vendor {
        self.vendor
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The text without the credential.
    pub fn scrub(&self, text: &str) -> String {
        self.map.scrub(text)
    }

    fn url(&self, call: &Call) -> Result<Url, Failure> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| {
                known(Error::usage(format!(
                    "{} `{}` cannot take a path",
                    self.vendor.url_var, self.base
                )))
            })?
            .pop_if_empty()
            .extend(&call.segments);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        Ok(url)
    }

    /// Sends a call under the client's policy, within `deadline` if one is given.
    pub async fn send(&self, call: &Call, deadline: Option<Instant>) -> Result<Reply, Failure> {
        self.send_under(call, deadline, self.policy).await
    }

    /// Sends a call under another budget of the same policy.
    pub async fn send_under(
        &self,
        call: &Call,
        deadline: Option<Instant>,
        policy: Policy,
    ) -> Result<Reply, Failure> {
        let url = self.url(call)?;
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(self.authorization.expose()).map_err(|_| {
            known(Error::usage(
                "the credential cannot be sent in an HTTP header",
            ))
        })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &call.headers {
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                known(Error::failure(format!(
                    "{}: the value for header {name} cannot be sent in an HTTP header",
                    call.describe()
                )))
            })?;
            v.set_sensitive(true);
            headers.insert(*name, v);
        }
        let policy = if call.repeat == Repeat::Never {
            Policy {
                max_times: 0,
                ..policy
            }
        } else {
            policy
        };
        policy
            .run(deadline, || self.once(call, &url, &headers))
            .await
    }

    async fn once(&self, call: &Call, url: &Url, headers: &HeaderMap) -> Result<Reply, Failure> {
        let what = format!("{} {}", call.method, url.path());
        let mut req = self
            .http
            .request(call.method.clone(), url.clone())
            .headers(headers.clone());
        let sent_id = self.vendor.client_request_id.map(|h| (h, request_id()));
        if let Some((h, id)) = &sent_id {
            req = req.header(*h, id.as_str());
        }
        if let Some(body) = &call.body {
            req = req.json(body);
        }
        if let Some(t) = call.timeout {
            req = req.timeout(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let not_sent = e.is_connect() && !e.is_timeout();
                let why = if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    error_chain(&e)
                };
                return Err(self.map.transport(
                    self.base.as_str(),
                    &what,
                    &why,
                    not_sent,
                    call.repeat,
                    sent_id.map(|s| s.1),
                ));
            }
        };
        let status = resp.status();
        let resp_headers = resp.headers().clone();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                let mut err = Error::failure(format!(
                    "{}'s answer to {what} (HTTP {}) could not be read: {}",
                    self.vendor.name,
                    status.as_u16(),
                    self.scrub(&error_chain(&e))
                ));
                err.request_id = self.map.request_id(
                    &resp_headers,
                    &Value::Null,
                    sent_id.as_ref().map(|s| s.1.as_str()),
                );
                let unsure = status.is_success() && call.repeat != Repeat::Idempotent;
                return Err(Failure {
                    notice: err.message.clone(),
                    error: err,
                    status: Some(status),
                    unsure,
                    retry: (call.repeat == Repeat::Idempotent).then_some(None),
                    retry_after: None,
                    attempts: 1,
                });
            }
        };
        self.map.answer(
            call,
            &what,
            status,
            &resp_headers,
            &bytes,
            sent_id.map(|s| s.1),
        )
    }
}

impl Mapper {
    pub fn new(vendor: &'static Vendor, credential: &str) -> Mapper {
        Mapper {
            vendor,
            credential: Secret::new(credential.trim()),
        }
    }

    /// The text without the credential.
    pub fn scrub(&self, text: &str) -> String {
        let c = self.credential.expose();
        if c.len() >= 4 {
            text.replace(c, crate::redact::MASK)
        } else {
            text.to_string()
        }
    }

    /// Classifies an answer: a [`Reply`] for 2xx and passed statuses, else a [`Failure`]
    /// with the vendor's message, code and request id, retryable when that is safe.
    pub fn answer(
        &self,
        call: &Call,
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        bytes: &[u8],
        sent_id: Option<String>,
    ) -> Result<Reply, Failure> {
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(bytes).unwrap_or_else(|_| {
                Value::String(self.scrub(String::from_utf8_lossy(bytes).trim()))
            })
        };
        let request_id = self.request_id(headers, &body, sent_id.as_deref());
        if status.is_success() || call.pass.contains(&status) {
            return Ok(Reply {
                status,
                body,
                request_id,
            });
        }
        let detail = self.scrub(&detail(self.vendor, status, &body));
        let advice = (self.vendor.advise)(&Answered {
            status,
            what,
            segments: &call.segments,
            detail: &detail,
        });
        let code = status.as_u16();
        let mut error = Error::failure(advice.message.unwrap_or_else(|| {
            format!(
                "{} answered {what} with HTTP {code}: {detail}",
                self.vendor.name
            )
        }));
        error.hint = advice
            .hint
            .or_else(|| Some(generic_hint(self.vendor, status)));
        error.code = self
            .vendor
            .code_field
            .and_then(|k| body.get(k))
            .and_then(Value::as_str)
            .map(|s| self.scrub(s))
            .filter(|s| !s.is_empty());
        error.request_id = request_id;
        let not_executed = (self.vendor.not_executed)(status, headers);
        let transient =
            not_executed || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error();
        let retry = match call.repeat {
            Repeat::Never => false,
            Repeat::IfNotExecuted => not_executed,
            Repeat::Idempotent => transient,
        };
        let after = retry_after(headers);
        Err(Failure {
            error,
            status: Some(status),
            // An error answer is taken as the vendor's word that the request failed (a 5xx
            // to a POST is reported, not looked up); only a lost answer is unsure.
            unsure: false,
            notice: format!(
                "{} answered {what} with HTTP {code}{}",
                self.vendor.name,
                reason(status)
            ),
            retry: retry.then_some(after),
            retry_after: after,
            attempts: 1,
        })
    }

    /// A request that got no answer: a connection that never opened carried nothing (safe
    /// to send again); anything later may have reached the vendor.
    pub fn transport(
        &self,
        base: &str,
        what: &str,
        why: &str,
        not_sent: bool,
        repeat: Repeat,
        sent_id: Option<String>,
    ) -> Failure {
        let why = self.scrub(why);
        let mut error = Error::failure(format!(
            "cannot reach {} at {base} ({what}): {why}",
            self.vendor.name
        ))
        .hint(format!("check {} and the network", self.vendor.url_var));
        error.request_id = sent_id;
        let notice = error.message.clone();
        let retry = match repeat {
            Repeat::Never => false,
            Repeat::IfNotExecuted => not_sent,
            Repeat::Idempotent => true,
        };
        Failure {
            notice,
            error,
            status: None,
            unsure: !not_sent,
            retry: retry.then_some(None),
            retry_after: None,
            attempts: 1,
        }
    }

    fn request_id(&self, headers: &HeaderMap, body: &Value, sent: Option<&str>) -> Option<String> {
        body.get("request_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .or_else(|| {
                self.vendor
                    .request_id_headers
                    .iter()
                    .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
                    .map(str::to_string)
            })
            .or_else(|| sent.map(str::to_string))
    }
}

/// A failure whose outcome is known and which is not retried (a bad URL, a bad header).
pub fn known(error: Error) -> Failure {
    Failure {
        notice: error.message.clone(),
        error,
        status: None,
        unsure: false,
        retry: None,
        retry_after: None,
        attempts: 0,
    }
}

/// The vendor's error text: its message field, else the body, else the status's reason.
fn detail(vendor: &Vendor, status: StatusCode, body: &Value) -> String {
    vendor
        .message_fields
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| match body {
            Value::Null => status
                .canonical_reason()
                .unwrap_or("no message")
                .to_string(),
            Value::String(s) => s.chars().take(200).collect(),
            other => other.to_string().chars().take(200).collect(),
        })
}

/// Why a status is retried, for the log line that says so.
fn reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => " (rate limited)",
        423 => " (another operation is in progress)",
        503 => " (unavailable)",
        _ => "",
    }
}

fn generic_hint(vendor: &Vendor, status: StatusCode) -> String {
    match status {
        StatusCode::TOO_MANY_REQUESTS => {
            format!(
                "{} rate-limited the request; try again shortly",
                vendor.name
            )
        }
        s if s.is_server_error() => {
            format!("{} may be busy or degraded; try again shortly", vendor.name)
        }
        _ => format!("check the request's values and {}", vendor.url_var),
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(v)
}

pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A fresh request id shaped as a UUID v4.
pub fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        8 + (b[8] & 0x3),
        &hex[17..20],
        &hex[20..32]
    )
}

/// An error with its causes, which reqwest keeps apart (`connection refused` is a cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: StatusCode, _: &HeaderMap) -> bool {
        false
    }

    fn no_advice(_: &Answered<'_>) -> Advice {
        Advice::default()
    }

    static TEST: Vendor = Vendor {
        name: "the test API",
        url_var: "TEST_API_URL",
        default_url: "https://api.example.com",
        private_suffix: Some(".internal"),
        request_id_headers: &["x-test-request-id"],
        client_request_id: None,
        message_fields: &["error", "message"],
        code_field: Some("code"),
        not_executed: never,
        advise: no_advice,
    };

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = request_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.as_bytes()[14], b'4');
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{id}"
        );
    }

    #[test]
    fn base_urls_must_be_https_unless_local() {
        assert!(base_url(&TEST, None).is_ok());
        assert!(base_url(&TEST, Some("http://127.0.0.1:9/x")).is_ok());
        assert!(base_url(&TEST, Some("http://[::1]:9")).is_ok());
        assert!(base_url(&TEST, Some("http://_api.internal:4280")).is_ok());
        let e = base_url(&TEST, Some("http://api.example.com")).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("TEST_API_URL"), "{}", e.message);
        assert_eq!(
            base_url(&TEST, Some("not a url")).unwrap_err().exit_code(),
            2
        );
    }

    fn failure(retry: Option<Option<Duration>>) -> Failure {
        Failure {
            notice: "boom".into(),
            error: Error::failure("boom"),
            status: None,
            unsure: false,
            retry,
            retry_after: None,
            attempts: 1,
        }
    }

    #[tokio::test]
    async fn the_policy_retries_only_what_may_be_retried_and_counts() {
        let p = Policy::new(Duration::from_millis(1), Duration::from_millis(4), 3);
        let mut n = 0;
        let r: Result<(), Failure> = p
            .run(None, || {
                n += 1;
                async { Err(failure(Some(None))) }
            })
            .await;
        let f = r.unwrap_err();
        assert_eq!((n, f.attempts), (4, 4));
        assert!(f.error.hint.unwrap().contains("sent 4 times"));

        let mut n = 0;
        let r: Result<(), Failure> = p
            .run(None, || {
                n += 1;
                async { Err(failure(None)) }
            })
            .await;
        assert_eq!((n, r.unwrap_err().attempts), (1, 1));

        // A Retry-After beyond the cap, or past the deadline, ends the tries.
        let mut n = 0;
        let r: Result<(), Failure> = p
            .run(None, || {
                n += 1;
                async { Err(failure(Some(Some(Duration::from_secs(3600))))) }
            })
            .await;
        assert_eq!((n, r.is_err()), (1, true));
        let mut n = 0;
        let soon = Instant::now() + Duration::from_millis(500);
        let r: Result<(), Failure> = p
            .run(Some(soon), || {
                n += 1;
                async { Err(failure(Some(Some(Duration::from_secs(2))))) }
            })
            .await;
        assert_eq!((n, r.is_err()), (1, true));
    }
}
