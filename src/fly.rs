//! The Fly Machines REST API client: base URL, the FlyV1/Bearer auth rule, timeouts,
//! retries of safe reads, and errors that carry Fly's message and `fly-request-id`.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::error::Error;
use crate::redact::Secret;

/// The public Machines API (DESIGN.md: `FLY_API_URL` overrides it).
pub const DEFAULT_API_URL: &str = "https://api.machines.dev";

/// Attempts for a read before giving up; only GETs are retried, and only on answers Fly's
/// own CLI treats as transient (408, 429, 5xx) or on a failed connection.
const READ_ATTEMPTS: u32 = 3;

/// A Machines API client for one token.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    authorization: Secret,
    /// First retry delay; later ones grow fourfold.
    backoff: Duration,
}

/// One secret of an app as the API lists it: names and digests, never values.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretInfo {
    /// `label` is the name in the API's older shape.
    #[serde(alias = "label")]
    pub name: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A successful answer and the request id Fly gave it.
#[derive(Debug)]
pub struct Answer<T> {
    pub body: T,
    pub request_id: Option<String>,
}

impl Client {
    /// `base_url` is `FLY_API_URL` or [`DEFAULT_API_URL`]; `token` is `FLY_API_TOKEN` as the
    /// user copied it (with or without its scheme). Plain HTTP is refused except to a
    /// loopback or `.internal` host, so a token never crosses the internet unencrypted.
    pub fn new(base_url: &str, token: &str, timeout: Duration) -> Result<Client, Error> {
        let base = Url::parse(base_url.trim()).map_err(|e| {
            Error::usage(format!("FLY_API_URL `{base_url}` is not a URL: {e}"))
                .hint(format!("unset it to use {DEFAULT_API_URL}"))
        })?;
        let local = match base.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".internal"),
            None => false,
        };
        match base.scheme() {
            "https" => {}
            "http" if local => {}
            _ => {
                return Err(Error::usage(format!(
                    "FLY_API_URL `{base_url}` must be an https:// URL"
                ))
                .hint("plain http:// is only accepted for loopback and .internal hosts"));
            }
        }
        let authorization = authorization(token).ok_or_else(|| {
            Error::usage("FLY_API_TOKEN is empty")
                .hint("create a token with `fly tokens create deploy -a APP` and set FLY_API_TOKEN")
        })?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("flightplan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::failure(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            authorization: Secret::new(authorization),
            backoff: Duration::from_millis(250),
        })
    }

    /// `GET /v1/apps/{app}/secrets`: the names (and digests) of the app's secrets.
    pub async fn list_secrets(&self, app: &str) -> Result<Answer<Vec<SecretInfo>>, Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Listing {
            Wrapped { secrets: Vec<SecretInfo> },
            Bare(Vec<SecretInfo>),
        }
        let answer = self.get(&["v1", "apps", app, "secrets"], app).await?;
        let listing: Listing = serde_json::from_value(answer.body).map_err(|e| {
            let mut err = Error::failure(format!(
                "the Fly Machines API answered GET /v1/apps/{app}/secrets with JSON of an unexpected shape: {e}"
            ))
            .hint("check that FLY_API_URL points at the Machines API");
            err.request_id = answer.request_id.clone();
            err
        })?;
        Ok(Answer {
            body: match listing {
                Listing::Wrapped { secrets } | Listing::Bare(secrets) => secrets,
            },
            request_id: answer.request_id,
        })
    }

    /// A GET with retries of transient failures; `app` names the app in error messages.
    async fn get(&self, segments: &[&str], app: &str) -> Result<Answer<Value>, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::usage(format!("FLY_API_URL `{}` cannot take a path", self.base)))?
            .pop_if_empty()
            .extend(segments);
        let what = format!("GET {}", url.path());
        let mut header = HeaderValue::from_str(self.authorization.expose()).map_err(|_| {
            Error::usage("FLY_API_TOKEN contains characters that cannot be sent in an HTTP header")
                .hint("copy the token again, whole and on one line")
        })?;
        header.set_sensitive(true);

        let mut attempt = 1;
        loop {
            let sent = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, header.clone())
                .header("accept", "application/json")
                .send()
                .await;
            let delay = self.backoff * 4u32.pow(attempt - 1);
            let resp = match sent {
                Ok(r) => r,
                Err(e) if attempt < READ_ATTEMPTS && (e.is_connect() || e.is_timeout()) => {
                    tracing::debug!("{what}: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    let why = if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        error_chain(&e)
                    };
                    return Err(Error::failure(format!(
                        "cannot reach the Fly Machines API at {} ({what}): {why}",
                        self.base
                    ))
                    .hint(format!(
                        "check FLY_API_URL and the network; the request was tried {attempt} time(s)"
                    )));
                }
            };
            let status = resp.status();
            let request_id = resp
                .headers()
                .get("fly-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let transient = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            if transient && attempt < READ_ATTEMPTS {
                // Honour Retry-After when Fly sends one, within reason.
                let wait = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(delay, |s| Duration::from_secs(s.min(10)));
                tracing::debug!("{what}: HTTP {status}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            let bytes = resp.bytes().await.map_err(|e| {
                let mut err = Error::failure(format!(
                    "the Fly Machines API's answer to {what} could not be read: {}",
                    error_chain(&e)
                ));
                err.request_id = request_id.clone();
                err
            })?;
            if status.is_success() {
                let body = serde_json::from_slice(&bytes).map_err(|e| {
                    let mut err = Error::failure(format!(
                        "the Fly Machines API answered {what} with HTTP {} but not JSON: {e}",
                        status.as_u16()
                    ))
                    .hint("check that FLY_API_URL points at the Machines API");
                    err.request_id = request_id.clone();
                    err
                })?;
                return Ok(Answer { body, request_id });
            }
            return Err(api_error(status, &bytes, &what, app, request_id));
        }
    }
}

/// Fly's error body is `{"error": "...", "status": "..."}` (some answers use `message`).
fn api_error(
    status: StatusCode,
    body: &[u8],
    what: &str,
    app: &str,
    request_id: Option<String>,
) -> Error {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        json.as_ref()
            .and_then(|j| j.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let detail = field("error")
        .or_else(|| field("message"))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string()
            } else {
                text.chars().take(200).collect()
            }
        });
    let code = status.as_u16();
    let mut err = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::failure(format!(
            "the Fly Machines API rejected FLY_API_TOKEN for app `{app}` (HTTP {code}: {detail})"
        ))
        .hint(format!(
            "use a token with access to the app: `fly tokens create deploy -a {app}`, copied whole, \
             including its `FlyV1 ` prefix"
        )),
        StatusCode::NOT_FOUND => Error::failure(format!(
            "Fly app `{app}` was not found (HTTP 404 for {what}: {detail})"
        ))
        .hint("check `app` in flightplan.toml or FLY_APP, and that the token's organization owns the app"),
        _ => Error::failure(format!(
            "the Fly Machines API answered {what} with HTTP {code}: {detail}"
        ))
        .hint(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            "Fly may be busy or degraded (https://status.flyio.net); try again shortly"
        } else {
            "check the app name and FLY_API_URL"
        }),
    };
    err.code = field("status").filter(|s| !s.is_empty());
    err.request_id = request_id;
    err
}

/// An error with its causes, which reqwest keeps apart (`connection refused` is a cause).
fn error_chain(e: &dyn std::error::Error) -> String {
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

pub use crate::redact::strip_scheme;

/// The `Authorization` header for a token, following fly-go's rule: macaroons (parts whose
/// prefix before `_` is `fm1r`, `fm1a` or `fm2`) are sent as `FlyV1 m1,m2`; a token without
/// any is sent as `Bearer …`. `None` for an empty token.
pub fn authorization(token: &str) -> Option<String> {
    let parts: Vec<&str> = strip_scheme(token)
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return None;
    }
    let is_macaroon = |p: &&str| matches!(p.split('_').next(), Some("fm1r" | "fm1a" | "fm2"));
    let macaroons: Vec<&str> = parts.iter().copied().filter(is_macaroon).collect();
    Some(if macaroons.is_empty() {
        format!("Bearer {}", parts.join(","))
    } else {
        format!("FlyV1 {}", macaroons.join(","))
    })
}

// ---------------------------------------------------------------------------------------
// Generic calls, added for `deploy` and `rollback`: any method, extra headers (the lease
// nonce), a JSON body, a per-call timeout (`/wait` blocks up to 60 s), a retry policy chosen
// per call, and statuses the caller handles itself (408 of `/wait`, 409 of a lease).

/// Attempts of a retried call: waits of 0.25 s, 1 s and 4 s in between, long enough for
/// Fly's per-action rate limit (1 req/s, bursts of 3) to let the next one through.
const CALL_ATTEMPTS: u32 = 4;

/// When a call may be sent again after a failure on the way or a transient answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: a repeat could do the work twice (e.g. acquiring a lease we may already hold).
    Never,
    /// Only when the first attempt surely did nothing: no connection was made, or HTTP 429
    /// (the rate limiter refused it before it ran).
    IfNotApplied,
    /// On 408, 429, 5xx, and connection errors or timeouts: reads, and writes whose repeat
    /// is harmless (a full-config update guarded by our lease, releasing a lease).
    Transient,
}

/// One Machines API request, built with [`Call::get`], [`Call::post`] or [`Call::delete`].
#[derive(Debug, Clone)]
pub struct Call {
    method: reqwest::Method,
    segments: Vec<String>,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, Secret)>,
    body: Option<Value>,
    timeout: Option<Duration>,
    retry: Retry,
    pass: Vec<StatusCode>,
}

impl Call {
    fn new(method: reqwest::Method, segments: &[&str], retry: Retry) -> Call {
        Call {
            method,
            segments: segments.iter().map(|s| (*s).to_string()).collect(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            timeout: None,
            retry,
            pass: Vec::new(),
        }
    }

    /// A GET, retried on transient failures.
    pub fn get(segments: &[&str]) -> Call {
        Call::new(reqwest::Method::GET, segments, Retry::Transient)
    }

    /// A POST, retried only if it surely did nothing (see [`Call::retry`]).
    pub fn post(segments: &[&str]) -> Call {
        Call::new(reqwest::Method::POST, segments, Retry::IfNotApplied)
    }

    /// A DELETE, retried only if it surely did nothing (see [`Call::retry`]).
    pub fn delete(segments: &[&str]) -> Call {
        Call::new(reqwest::Method::DELETE, segments, Retry::IfNotApplied)
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Call {
        self.query.push((key.to_string(), value.into()));
        self
    }

    /// A header whose value is never logged (the lease nonce lets its holder change the
    /// machine).
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

    pub fn retry(mut self, retry: Retry) -> Call {
        self.retry = retry;
        self
    }

    /// A status the caller handles itself: returned in the [`Reply`], never retried.
    pub fn pass(mut self, status: StatusCode) -> Call {
        self.pass.push(status);
        self
    }

    /// `METHOD /path` for messages (no query: it may carry nothing secret, but it is noise).
    pub fn describe(&self) -> String {
        format!("{} /{}", self.method, self.segments.join("/"))
    }
}

/// An answer to a [`Call`]: a 2xx, or a status the call said it handles itself.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    /// The JSON body; `Null` when empty, a string when the body was not JSON.
    pub body: Value,
    pub request_id: Option<String>,
}

impl Reply {
    /// Fly's error text of a non-2xx answer (`error`, else `message`, else the body).
    pub fn message(&self) -> String {
        let field = |k: &str| self.body.get(k).and_then(Value::as_str).map(str::to_string);
        field("error")
            .or_else(|| field("message"))
            .unwrap_or_else(|| match &self.body {
                Value::Null => self
                    .status
                    .canonical_reason()
                    .unwrap_or("no message")
                    .to_string(),
                Value::String(s) => s.chars().take(200).collect(),
                other => other.to_string().chars().take(200).collect(),
            })
    }
}

impl Client {
    /// Sends a call. 2xx answers and the call's `pass` statuses come back as a [`Reply`];
    /// any other answer is an error with Fly's message, code and `fly-request-id`.
    pub async fn call(&self, call: &Call, app: &str) -> Result<Reply, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::usage(format!("FLY_API_URL `{}` cannot take a path", self.base)))?
            .pop_if_empty()
            .extend(&call.segments);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        let what = format!("{} {}", call.method, url.path());
        let mut auth = HeaderValue::from_str(self.authorization.expose()).map_err(|_| {
            Error::usage("FLY_API_TOKEN contains characters that cannot be sent in an HTTP header")
                .hint("copy the token again, whole and on one line")
        })?;
        auth.set_sensitive(true);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &call.headers {
            let mut v = HeaderValue::from_str(value.expose()).map_err(|_| {
                Error::failure(format!(
                    "{what}: the value for header {name} cannot be sent in an HTTP header"
                ))
            })?;
            v.set_sensitive(true);
            headers.insert(*name, v);
        }

        let attempts = if call.retry == Retry::Never {
            1
        } else {
            CALL_ATTEMPTS
        };
        let mut attempt = 1;
        loop {
            let mut req = self
                .http
                .request(call.method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(body) = &call.body {
                req = req.json(body);
            }
            if let Some(t) = call.timeout {
                req = req.timeout(t);
            }
            let delay = self.backoff * 4u32.pow(attempt - 1);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    // A refused connection never reached Fly; a timeout or a reset may have.
                    let retryable = match call.retry {
                        Retry::Never => false,
                        Retry::IfNotApplied => e.is_connect(),
                        Retry::Transient => e.is_connect() || e.is_timeout() || e.is_request(),
                    };
                    if retryable && attempt < attempts {
                        tracing::debug!("{what}: {e}; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        attempt += 1;
                        continue;
                    }
                    let why = if e.is_timeout() {
                        "timed out".to_string()
                    } else {
                        error_chain(&e)
                    };
                    return Err(Error::failure(format!(
                        "cannot reach the Fly Machines API at {} ({what}): {why}",
                        self.base
                    ))
                    .hint(format!(
                        "check FLY_API_URL and the network; the request was tried {attempt} time(s)"
                    )));
                }
            };
            let status = resp.status();
            let request_id = resp
                .headers()
                .get("fly-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let passed = call.pass.contains(&status);
            let retryable = !passed
                && match call.retry {
                    Retry::Never => false,
                    Retry::IfNotApplied => status == StatusCode::TOO_MANY_REQUESTS,
                    Retry::Transient => {
                        status == StatusCode::REQUEST_TIMEOUT
                            || status == StatusCode::TOO_MANY_REQUESTS
                            || status.is_server_error()
                    }
                };
            if retryable && attempt < attempts {
                // Honour Retry-After when Fly sends one, within reason.
                let wait = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(delay, |s| Duration::from_secs(s.min(10)));
                tracing::debug!("{what}: HTTP {status}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            let bytes = resp.bytes().await.map_err(|e| {
                let mut err = Error::failure(format!(
                    "the Fly Machines API's answer to {what} could not be read: {}",
                    error_chain(&e)
                ));
                err.request_id = request_id.clone();
                err
            })?;
            if !(status.is_success() || passed) {
                return Err(api_error(status, &bytes, &what, app, request_id));
            }
            let body = if bytes.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&bytes).trim().to_string())
                })
            };
            return Ok(Reply {
                status,
                body,
                request_id,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header_follows_fly_go() {
        assert_eq!(authorization("fm2_abc").unwrap(), "FlyV1 fm2_abc");
        assert_eq!(
            authorization("FlyV1 fm2_abc,fm2_def").unwrap(),
            "FlyV1 fm2_abc,fm2_def"
        );
        assert_eq!(authorization("  flyv1   fm1r_x ").unwrap(), "FlyV1 fm1r_x");
        assert_eq!(
            authorization("Bearer FlyV1 fm1a_y").unwrap(),
            "FlyV1 fm1a_y"
        );
        assert_eq!(
            authorization("oauth-user-token").unwrap(),
            "Bearer oauth-user-token"
        );
        assert_eq!(authorization("Bearer abc123").unwrap(), "Bearer abc123");
        // A user token next to macaroons is dropped, as fly-go's FlapsHeader does.
        assert_eq!(authorization("user1,fm2_m").unwrap(), "FlyV1 fm2_m");
        // `fm2x_` is not a macaroon prefix.
        assert_eq!(authorization("fm2x_abc").unwrap(), "Bearer fm2x_abc");
        assert_eq!(authorization("FlyV1 "), None);
        assert_eq!(authorization(""), None);
    }

    #[test]
    fn plain_http_only_to_local_hosts() {
        let t = Duration::from_secs(1);
        assert!(Client::new("http://127.0.0.1:9", "fm2_x", t).is_ok());
        assert!(Client::new("http://_api.internal:4280", "fm2_x", t).is_ok());
        assert!(Client::new("https://api.machines.dev", "fm2_x", t).is_ok());
        let e = Client::new("http://api.machines.dev", "fm2_x", t)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        let e = Client::new("https://api.machines.dev", " ", t)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept connections and hold them open without answering.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut c = Client::new(
            &format!("http://{addr}"),
            "fm2_x",
            Duration::from_millis(200),
        )
        .unwrap();
        c.backoff = Duration::from_millis(10);
        let started = std::time::Instant::now();
        let e = c.list_secrets("app").await.unwrap_err();
        assert!(e.message.contains("timed out"), "{}", e.message);
        assert_eq!(e.exit_code(), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
        hold.abort();
    }
}
