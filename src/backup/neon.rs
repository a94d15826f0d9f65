//! The Neon API v2 client for backups: branches of the production branch and their
//! operations, restore and delete, with timeouts, the retries Neon documents as safe
//! (423, 429, 503) and errors that carry Neon's `code`, `message` and `request_id`.

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{BRANCH_PREFIX, Backup, Label, PRESERVE_PREFIX, Preserved, Provider, Restored};
use crate::error::Error;

/// The public API (DESIGN.md: `NEON_API_URL` overrides it).
pub const DEFAULT_API_URL: &str = "https://console.neon.tech/api/v2";

/// Neon's own SDK never waits longer than this between retries it chose itself; a
/// `Retry-After` from Neon is honoured up to [`MAX_RETRY_AFTER`].
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Attempts of one request on 423/429/503 (and, for reads, failed connections), within
/// the command's deadline whichever comes first.
const MAX_ATTEMPTS: u32 = 12;
/// How often a POST whose answer never came is looked up before it is sent once more.
const LOOKUPS_AFTER_TIMEOUT: u32 = 3;

/// `NEON_API_KEY`. Its `Debug` prints a mask, so no struct holding it can leak it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: &str) -> ApiKey {
        ApiKey(key.trim().to_string())
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Everything the Neon provider needs, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_url: Url,
    pub api_key: ApiKey,
    pub project_id: String,
    /// The production branch, by name or id; `None` is the project's default branch.
    pub branch: Option<String>,
    /// The whole command's deadline, retries and operation polling included.
    pub timeout: Duration,
    /// One HTTP request's deadline.
    pub request_timeout: Duration,
}

/// `NEON_API_URL`: https, or plain http to a loopback host only (so the key never crosses
/// a network in clear text).
pub fn parse_api_url(raw: &str) -> Result<Url, Error> {
    let url = Url::parse(raw).map_err(|e| {
        Error::usage(format!("NEON_API_URL `{raw}` is not a URL: {e}"))
            .hint(format!("unset it to use {DEFAULT_API_URL}"))
    })?;
    let local = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        _ => {
            return Err(
                Error::usage(format!("NEON_API_URL `{raw}` must be an https:// URL"))
                    .hint("plain http:// is only accepted for a loopback host (a local fake)"),
            );
        }
    }
    if url.cannot_be_a_base() {
        return Err(Error::usage(format!(
            "NEON_API_URL `{raw}` cannot take a path"
        )));
    }
    Ok(url)
}

/// A branch as the API returns it (only the fields flightplan reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Branch {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub parent_lsn: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub current_state: Option<String>,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub protected: bool,
    /// When Neon deletes the branch by itself (RFC 3339), if it was given an expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// An asynchronous control-plane job started by a mutating request.
#[derive(Debug, Clone, Deserialize)]
pub struct Operation {
    pub id: String,
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub failures_count: u32,
    #[serde(default)]
    pub error: Option<String>,
}

/// The answer to a mutating request: the branch it concerns and the operations it started.
#[derive(Debug, Deserialize)]
struct Mutation {
    branch: Branch,
    #[serde(default)]
    operations: Vec<Operation>,
}

/// Why a request did not succeed.
#[derive(Debug)]
enum Failure {
    /// Neon answered (with this status), or the request never left: the outcome is known.
    Known(Option<StatusCode>, Error),
    /// A POST or DELETE was sent and its answer never came: Neon may have applied it.
    Unsure(Error),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        match f {
            Failure::Known(_, e) | Failure::Unsure(e) => e,
        }
    }
}

/// The Neon provider: one HTTP client, one project, one deadline for the command.
pub struct Neon {
    http: reqwest::Client,
    s: Settings,
    auth: HeaderValue,
    deadline: Instant,
    /// First retry ceiling; it doubles per attempt up to [`MAX_BACKOFF`].
    backoff: Duration,
}

impl Neon {
    pub fn new(s: Settings) -> Result<Neon, Error> {
        let http = reqwest::Client::builder()
            .timeout(s.request_timeout)
            .connect_timeout(s.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("flightplan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::failure(format!("cannot set up the HTTP client: {e}")))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", s.api_key.0)).map_err(|_| {
            Error::usage("NEON_API_KEY contains characters that cannot be sent in an HTTP header")
        })?;
        auth.set_sensitive(true);
        Ok(Neon {
            http,
            deadline: Instant::now() + s.timeout,
            s,
            auth,
            backoff: Duration::from_millis(250),
        })
    }

    fn project(&self) -> &str {
        &self.s.project_id
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Removes the API key from text that came from outside (a server could echo it).
    fn scrub(&self, text: &str) -> String {
        if self.s.api_key.0.len() >= 4 {
            text.replace(self.s.api_key.0.as_str(), "***")
        } else {
            text.to_string()
        }
    }

    /// One API call with the retries Neon documents as safe: 423, 429 and 503 for every
    /// method, a connection that never opened for every method, and a timeout only for
    /// reads. A POST or DELETE whose answer is lost is [`Failure::Unsure`]: the caller
    /// looks at what exists before sending anything again.
    async fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let mut url = self.s.api_url.clone();
        url.path_segments_mut()
            .map_err(|()| Failure::Known(None, Error::usage("NEON_API_URL cannot take a path")))?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let what = format!("{method} {}", url.path());
        let idempotent = method == Method::GET;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let request_id = request_id();
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(AUTHORIZATION, self.auth.clone())
                .header("accept", "application/json")
                .header("x-request-id", request_id.as_str());
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    let why = if e.is_timeout() {
                        format!("no answer within {:?}", self.s.request_timeout)
                    } else {
                        self.scrub(&error_chain(&e))
                    };
                    let err = Error::failure(format!(
                        "the Neon API did not answer {what} ({why})"
                    ))
                    .hint(format!(
                        "check NEON_API_URL ({}) and the network; https://neonstatus.com shows Neon's status",
                        self.s.api_url
                    ));
                    // A connection that never opened carried nothing: safe to send again.
                    let retry = idempotent || (e.is_connect() && !e.is_timeout());
                    if !retry {
                        return Err(Failure::Unsure(err));
                    }
                    match self.pause(attempt, None) {
                        Some(wait) => {
                            tracing::debug!("{what}: {why}; retrying in {wait:?}");
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                        None => return Err(Failure::Known(None, tried(err, attempt))),
                    }
                }
            };
            let status = resp.status();
            let header_id = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let bytes = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    let err = Error::failure(format!(
                        "the Neon API's answer to {what} (HTTP {}) could not be read: {}",
                        status.as_u16(),
                        self.scrub(&error_chain(&e))
                    ));
                    if status.is_success() && !idempotent {
                        return Err(Failure::Unsure(err));
                    }
                    if let Some(wait) = self.pause(attempt, None).filter(|_| idempotent) {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(Failure::Known(Some(status), err));
                }
            };
            if status.is_success() {
                if bytes.is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&bytes).map_err(|e| {
                    let mut err = Error::failure(format!(
                        "the Neon API answered {what} with HTTP {} but not JSON: {e}",
                        status.as_u16()
                    ))
                    .hint("check that NEON_API_URL points at the Neon API v2");
                    err.request_id = header_id.clone().or(Some(request_id.clone()));
                    if idempotent {
                        Failure::Known(Some(status), err)
                    } else {
                        Failure::Unsure(err)
                    }
                });
            }
            let err = self.api_error(status, &bytes, &what, header_id, &request_id);
            let retryable = matches!(
                status,
                StatusCode::LOCKED
                    | StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::SERVICE_UNAVAILABLE
            );
            if retryable && let Some(wait) = self.pause(attempt, retry_after) {
                tracing::info!(
                    "Neon answered {what} with HTTP {}{}; retrying in {:.1}s",
                    status.as_u16(),
                    match status {
                        StatusCode::LOCKED => " (another operation is in progress)",
                        StatusCode::TOO_MANY_REQUESTS => " (rate limited)",
                        _ => "",
                    },
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let err = if retryable { tried(err, attempt) } else { err };
            return Err(Failure::Known(Some(status), err));
        }
    }

    /// How long to wait before attempt `attempt + 1`, or `None` to give up: `Retry-After`
    /// when Neon sent one (never shortened), else exponential backoff with full jitter.
    fn pause(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= MAX_ATTEMPTS {
            return None;
        }
        let wait = match retry_after {
            Some(w) if w > MAX_RETRY_AFTER => return None,
            Some(w) => w,
            None => {
                let ceiling = self
                    .backoff
                    .saturating_mul(1 << (attempt - 1).min(16))
                    .min(MAX_BACKOFF);
                ceiling.mul_f64(rand::random_range(0.0..=1.0))
            }
        };
        (wait < self.remaining()).then_some(wait)
    }

    /// Neon's error body is `{ "request_id"?, "code", "message" }`.
    fn api_error(
        &self,
        status: StatusCode,
        body: &[u8],
        what: &str,
        header_id: Option<String>,
        sent_id: &str,
    ) -> Error {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let field = |k: &str| {
            json.as_ref()
                .and_then(|j| j.get(k))
                .and_then(Value::as_str)
                .map(|s| self.scrub(s))
                .filter(|s| !s.is_empty())
        };
        let message = field("message").unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let text = self.scrub(text.trim());
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
        let project = self.project();
        let mut err = Error::failure(format!(
            "the Neon API answered {what} with HTTP {code}: {message}"
        ))
        .hint(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
                "check NEON_API_KEY: it must be a valid key with access to project {project} \
                 (an organization or project-scoped key for CI)"
            ),
            StatusCode::NOT_FOUND => format!(
                "check NEON_PROJECT_ID ({project}) and the branch or backup id"
            ),
            StatusCode::LOCKED => {
                "another operation is still running on the project; wait for it and try again".into()
            }
            StatusCode::TOO_MANY_REQUESTS => {
                "Neon's rate limit (about 700 requests a minute per account) was hit; try again shortly".into()
            }
            s if s.is_server_error() => {
                "Neon may be degraded (https://neonstatus.com); try again shortly".into()
            }
            _ => "check the request's values (branch names, ids) and the Neon plan's limits".into(),
        });
        err.code = field("code");
        err.request_id = field("request_id")
            .or(header_id)
            .or_else(|| Some(sent_id.to_string()));
        err
    }

    async fn get(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Value, Error> {
        Ok(self.call(Method::GET, path, query, None).await?)
    }

    /// Every branch of the project (or those matching `search`), following the cursor.
    pub async fn branches(&self, search: Option<&str>) -> Result<Vec<Branch>, Error> {
        let project = self.project().to_string();
        let mut out: Vec<Branch> = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..1000 {
            let mut query = Vec::new();
            if let Some(s) = search {
                query.push(("search", s));
            }
            if let Some(c) = &cursor {
                query.push(("cursor", c.as_str()));
            }
            let page = self
                .get(&["projects", &project, "branches"], &query)
                .await?;
            let branches: Vec<Branch> =
                serde_json::from_value(page.get("branches").cloned().unwrap_or(Value::Null))
                    .map_err(|e| shape_error("GET branches", &e))?;
            let done = branches.is_empty();
            for b in branches {
                if !out.iter().any(|o| o.id == b.id) {
                    out.push(b);
                }
            }
            let next = page
                .pointer("/pagination/next")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            match next {
                Some(n) if !done && cursor.as_deref() != Some(n.as_str()) => cursor = Some(n),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    async fn branch(&self, id: &str) -> Result<Branch, Error> {
        let project = self.project().to_string();
        let v = self
            .get(&["projects", &project, "branches", id], &[])
            .await?;
        serde_json::from_value(v.get("branch").cloned().unwrap_or(Value::Null))
            .map_err(|e| shape_error("GET branch", &e))
    }

    /// The branch named exactly `name`, if there is one.
    async fn find_by_name(&self, name: &str) -> Result<Option<Branch>, Error> {
        Ok(self
            .branches(Some(name))
            .await?
            .into_iter()
            .find(|b| b.name == name))
    }

    /// The production branch: `branch` from the settings (name or id), else the default.
    pub(crate) fn production<'a>(&self, all: &'a [Branch]) -> Result<&'a Branch, Error> {
        let project = self.project();
        let names = || {
            all.iter()
                .filter(|b| !b.name.starts_with(BRANCH_PREFIX))
                .map(|b| b.name.as_str())
                .take(10)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &self.s.branch {
            Some(want) => all
                .iter()
                .find(|b| b.id == *want || b.name == *want)
                .ok_or_else(|| {
                    Error::failure(format!(
                        "Neon project {project} has no branch named `{want}`"
                    ))
                    .hint(format!(
                        "set [backup] branch (or --branch) to one of: {}; or remove it to use the default branch",
                        names()
                    ))
                }),
            None => all.iter().find(|b| b.default).ok_or_else(|| {
                Error::failure(format!(
                    "Neon project {project} reports no default branch"
                ))
                .hint(format!(
                    "set [backup] branch to the production branch, one of: {}",
                    names()
                ))
            }),
        }
    }

    /// Polls every operation until it is `finished` or `skipped`. `failed` is not final:
    /// Neon's operations page says such an operation "may be retried", so it is waited on
    /// until the deadline; `cancelled` and `error` end the wait.
    async fn wait_operations(&self, ops: &[Operation], what: &str) -> Result<(), Error> {
        let project = self.project().to_string();
        for op in ops {
            let mut op = op.clone();
            let mut interval = Duration::from_millis(200);
            let mut warned = false;
            loop {
                match op.status.as_str() {
                    "finished" | "skipped" => break,
                    "cancelled" | "cancelling" | "error" => {
                        return Err(Error::failure(format!(
                            "{what}: Neon operation {} ({}) ended `{}`{}",
                            op.action,
                            op.id,
                            op.status,
                            op.error
                                .as_deref()
                                .map(|e| format!(": {}", self.scrub(e)))
                                .unwrap_or_default()
                        ))
                        .hint("see the project's Operations in the Neon console, then try again"));
                    }
                    "failed" if !warned => {
                        warned = true;
                        tracing::warn!(
                            "Neon operation {} ({}) failed {} time(s){}; Neon retries failed operations, waiting",
                            op.action,
                            op.id,
                            op.failures_count,
                            op.error
                                .as_deref()
                                .map(|e| format!(": {}", self.scrub(e)))
                                .unwrap_or_default()
                        );
                    }
                    _ => {}
                }
                if interval >= self.remaining() {
                    return Err(Error::failure(format!(
                        "{what}: Neon operation {} ({}) is still `{}` after {:?}",
                        op.action, op.id, op.status, self.s.timeout
                    ))
                    .hint(
                        "raise [backup] timeout, or look at the project's Operations in the Neon console",
                    ));
                }
                tokio::time::sleep(interval).await;
                interval = (interval * 3 / 2).min(Duration::from_secs(3));
                let v = self
                    .get(&["projects", &project, "operations", &op.id], &[])
                    .await?;
                op = serde_json::from_value(v.get("operation").cloned().unwrap_or(Value::Null))
                    .map_err(|e| shape_error("GET operation", &e))?;
            }
        }
        Ok(())
    }

    /// Polls a branch until its `current_state` is `ready`.
    async fn wait_ready(&self, id: &str, what: &str) -> Result<Branch, Error> {
        let mut interval = Duration::from_millis(200);
        loop {
            let b = self.branch(id).await?;
            if b.current_state.as_deref().is_none_or(|s| s == "ready") {
                return Ok(b);
            }
            if interval >= self.remaining() {
                return Err(Error::failure(format!(
                    "{what}: branch {} ({}) is still `{}` after {:?}",
                    b.name,
                    b.id,
                    b.current_state.unwrap_or_default(),
                    self.s.timeout
                ))
                .hint("raise [backup] timeout, or look at the branch in the Neon console"));
            }
            tokio::time::sleep(interval).await;
            interval = (interval * 3 / 2).min(Duration::from_secs(3));
        }
    }

    fn to_backup(b: &Branch) -> Backup {
        Backup {
            provider: "neon",
            id: b.id.clone(),
            name: b.name.clone(),
            parent: b.parent_id.clone(),
            parent_lsn: b.parent_lsn.clone(),
            created_at: b.created_at.clone(),
            size: None,
            path: None,
            blocked: None,
        }
    }

    /// `prefix` + the label, unique among the project's branch names.
    fn free_name(all: &[Branch], prefix: &str, label: &Label) -> String {
        label.unique(
            |s| format!("{prefix}{s}"),
            |n| all.iter().any(|b| b.name == n),
        )
    }
}

impl Provider for Neon {
    async fn create(&self, label: &Label) -> Result<Backup, Error> {
        let project = self.project().to_string();
        let all = self.branches(None).await?;
        let parent = self.production(&all)?.clone();
        let mut name = Neon::free_name(&all, BRANCH_PREFIX, label);
        // No `endpoints`: a branch without compute is what Neon recommends for backups,
        // costs no compute and cannot take writes by accident.
        let mut body = json!({ "branch": { "parent_id": parent.id, "name": name } });
        let mut conflicts = 0;
        tracing::info!(
            "creating Neon branch {name} of {} ({})",
            parent.name,
            parent.id
        );
        let mut posts = 0;
        let (branch, ops) = loop {
            posts += 1;
            match self
                .call(
                    Method::POST,
                    &["projects", &project, "branches"],
                    &[],
                    Some(&body),
                )
                .await
            {
                Ok(v) => {
                    let m: Mutation =
                        serde_json::from_value(v).map_err(|e| shape_error("POST branches", &e))?;
                    break (m.branch, m.operations);
                }
                // Another run of the same commit took this name in the same second (two
                // merges at once): a 409 created nothing, so the next free name is safe.
                Err(Failure::Known(Some(StatusCode::CONFLICT), e)) if conflicts < 5 => {
                    conflicts += 1;
                    posts -= 1;
                    tracing::warn!("{}; choosing the next free name", e.message);
                    let all = self.branches(None).await?;
                    let mut next = label.clone();
                    next.secs += conflicts;
                    name = Neon::free_name(&all, BRANCH_PREFIX, &next);
                    body = json!({ "branch": { "parent_id": parent.id, "name": name } });
                }
                Err(Failure::Known(_, e)) => return Err(e),
                Err(Failure::Unsure(e)) => {
                    // The request may have been applied: look before sending it again.
                    tracing::warn!(
                        "{}; looking the branch up by name before anything else",
                        e.message
                    );
                    let mut found = None;
                    for i in 0..LOOKUPS_AFTER_TIMEOUT {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        found = self.find_by_name(&name).await?;
                        if found.is_some() {
                            break;
                        }
                    }
                    if let Some(b) = found {
                        tracing::info!("the branch was created: {} ({})", b.name, b.id);
                        break (b, Vec::new());
                    }
                    if posts >= 2 {
                        return Err(e.hint(format!(
                            "no branch named {name} exists after two attempts; check the network and Neon's status, then run again"
                        )));
                    }
                    tracing::info!("no branch named {name} exists; sending the request once more");
                }
            }
        };
        self.wait_operations(&ops, "backup").await?;
        let ready = self.wait_ready(&branch.id, "backup").await?;
        if ready.name != name || ready.parent_id.as_deref() != Some(parent.id.as_str()) {
            return Err(Error::failure(format!(
                "Neon created branch {} ({}) with parent {:?}, not {name} of {}",
                ready.name, ready.id, ready.parent_id, parent.id
            ))
            .hint("look at the branch in the Neon console before migrating"));
        }
        let mut backup = Neon::to_backup(&ready);
        if backup.parent_lsn.is_none() {
            backup.parent_lsn = branch.parent_lsn;
        }
        Ok(backup)
    }

    async fn list(&self) -> Result<Vec<Backup>, Error> {
        // One full listing: it also shows which backups have children (named otherwise),
        // which Neon refuses to delete.
        let all = self.branches(None).await?;
        let mut out: Vec<Backup> = all
            .iter()
            .filter(|b| b.name.starts_with(BRANCH_PREFIX) && !b.default && !b.protected)
            .map(|b| {
                let mut backup = Neon::to_backup(b);
                if all
                    .iter()
                    .any(|c| c.parent_id.as_deref() == Some(b.id.as_str()))
                {
                    backup.blocked = Some("it has child branches".into());
                }
                backup
            })
            .collect();
        super::newest_first(&mut out);
        Ok(out)
    }

    async fn find(&self, id: &str) -> Result<Backup, Error> {
        let all = self.list().await?;
        all.into_iter()
            .find(|b| b.id == id || b.name == id)
            .ok_or_else(|| {
                Error::failure(format!(
                    "no flightplan backup `{id}` in Neon project {}",
                    self.project()
                ))
                .hint("`flightplan backup list` shows the backups by id and name")
            })
    }

    async fn restore(&self, backup: &Backup, label: &Label) -> Result<Restored, Error> {
        let project = self.project().to_string();
        let all = self.branches(None).await?;
        let target = self.production(&all)?.clone();
        if target.id == backup.id {
            return Err(Error::failure(format!(
                "backup {} is the production branch itself",
                backup.id
            )));
        }
        let preserve = Neon::free_name(&all, PRESERVE_PREFIX, label);
        // `preserve_under_name` is required when the branch has children, which the
        // production branch has as soon as one backup exists; it also keeps the state
        // being discarded, so a restore can itself be undone.
        let body = json!({ "source_branch_id": backup.id, "preserve_under_name": preserve });
        tracing::info!(
            "restoring Neon branch {} ({}) from {} ({}); its current state is kept as {preserve}",
            target.name,
            target.id,
            backup.name,
            backup.id
        );
        let m = match self
            .call(
                Method::POST,
                &["projects", &project, "branches", &target.id, "restore"],
                &[],
                Some(&body),
            )
            .await
        {
            Ok(v) => serde_json::from_value::<Mutation>(v)
                .map_err(|e| shape_error("POST restore", &e))?,
            Err(Failure::Known(_, e)) => return Err(e),
            Err(Failure::Unsure(e)) => {
                return Err(e.hint(format!(
                    "the restore may have started: look for a branch named {preserve} and at the project's \
                     Operations in the Neon console before running it again"
                )));
            }
        };
        self.wait_operations(&m.operations, "restore").await?;
        let restored = self.wait_ready(&target.id, "restore").await?;
        let preserved = self.find_by_name(&preserve).await?;
        Ok(Restored {
            backup: backup.clone(),
            target: format!("branch {} ({})", restored.name, restored.id),
            preserved: Some(Preserved {
                id: preserved.map(|b| b.id),
                name: preserve,
            }),
        })
    }

    async fn delete(&self, backup: &Backup) -> Result<(), Error> {
        let project = self.project().to_string();
        if !backup.name.starts_with(BRANCH_PREFIX) {
            // A last guard: nothing but flightplan's own branches is ever deleted.
            return Err(Error::failure(format!(
                "refusing to delete branch {} ({}): not a flightplan backup",
                backup.name, backup.id
            )));
        }
        let path = ["projects", project.as_str(), "branches", backup.id.as_str()];
        match self.call(Method::DELETE, &path, &[], None).await {
            Ok(v) => {
                let ops: Vec<Operation> = v
                    .get("operations")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| shape_error("DELETE branch", &e))?
                    .unwrap_or_default();
                self.wait_operations(&ops, "prune").await
            }
            Err(Failure::Known(Some(StatusCode::NOT_FOUND), _)) => {
                tracing::info!("branch {} was already gone", backup.id);
                Ok(())
            }
            Err(Failure::Known(_, e)) => Err(e),
            Err(Failure::Unsure(e)) => match self.call(Method::GET, &path, &[], None).await {
                Err(Failure::Known(Some(StatusCode::NOT_FOUND), _)) => Ok(()),
                _ => Err(e.hint(format!(
                    "the delete may still happen: check branch {} in the Neon console, then run prune again",
                    backup.id
                ))),
            },
        }
    }
}

/// A compute endpoint of a branch (only the fields flightplan reads).
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub id: String,
    /// `read_write` or `read_only`.
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub current_state: Option<String>,
}

/// Short-lived branches with a compute endpoint, for `rehearse`: a copy of production that
/// can be connected to, with an `expires_at` safety net, its direct connection string from
/// the API, and a delete that touches nothing but the branch it was given.
impl Neon {
    /// Creates a branch of `parent` named `name` with one `read_write` endpoint that Neon
    /// deletes by itself at `expires_at` (RFC 3339; at most 30 days ahead). Returns the
    /// branch, its endpoints and the operations to wait for. A POST whose answer is lost is
    /// looked up by name before it is sent again, as for backups.
    pub async fn create_with_endpoint(
        &self,
        parent: &Branch,
        name: &str,
        expires_at: &str,
        annotations: Value,
    ) -> Result<(Branch, Vec<Endpoint>, Vec<Operation>), Error> {
        let project = self.project().to_string();
        let body = json!({
            "branch": { "parent_id": parent.id, "name": name, "expires_at": expires_at },
            "endpoints": [{ "type": "read_write" }],
            "annotation_value": annotations,
        });
        let mut posts = 0;
        loop {
            posts += 1;
            match self
                .call(
                    Method::POST,
                    &["projects", &project, "branches"],
                    &[],
                    Some(&body),
                )
                .await
            {
                Ok(v) => {
                    let m: Mutation = serde_json::from_value(v.clone())
                        .map_err(|e| shape_error("POST branches", &e))?;
                    let endpoints: Vec<Endpoint> = v
                        .get("endpoints")
                        .cloned()
                        .map(serde_json::from_value)
                        .transpose()
                        .map_err(|e| shape_error("POST branches", &e))?
                        .unwrap_or_default();
                    return Ok((m.branch, endpoints, m.operations));
                }
                Err(Failure::Known(_, e)) => return Err(e),
                Err(Failure::Unsure(e)) => {
                    tracing::warn!(
                        "{}; looking the branch up by name before anything else",
                        e.message
                    );
                    for i in 0..LOOKUPS_AFTER_TIMEOUT {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        if let Some(b) = self.find_by_name(name).await? {
                            tracing::info!("the branch was created: {} ({})", b.name, b.id);
                            return Ok((b, Vec::new(), Vec::new()));
                        }
                    }
                    if posts >= 2 {
                        return Err(e.hint(format!(
                            "no branch named {name} exists after two attempts; check the network and Neon's status, then run again"
                        )));
                    }
                    tracing::info!("no branch named {name} exists; sending the request once more");
                }
            }
        }
    }

    /// Waits for the operations of a mutation (`create_branch`, `start_compute`, …), then
    /// for the branch to be `ready`.
    pub async fn settle(
        &self,
        branch_id: &str,
        ops: &[Operation],
        what: &str,
    ) -> Result<Branch, Error> {
        self.wait_operations(ops, what).await?;
        self.wait_ready(branch_id, what).await
    }

    /// `GET /projects/{id}/branches/{branch_id}/endpoints`.
    pub async fn endpoints(&self, branch_id: &str) -> Result<Vec<Endpoint>, Error> {
        let project = self.project().to_string();
        let v = self
            .get(
                &["projects", &project, "branches", branch_id, "endpoints"],
                &[],
            )
            .await?;
        serde_json::from_value(v.get("endpoints").cloned().unwrap_or(Value::Null))
            .map_err(|e| shape_error("GET endpoints", &e))
    }

    /// The branch's direct (never pooled) connection URI for `database` as `role`, with the
    /// role's password: a secret the caller must register for masking before anything else.
    pub async fn connection_uri(
        &self,
        branch_id: &str,
        endpoint_id: &str,
        database: &str,
        role: &str,
    ) -> Result<crate::redact::Secret, Error> {
        let project = self.project().to_string();
        let v = self
            .get(
                &["projects", &project, "connection_uri"],
                &[
                    ("branch_id", branch_id),
                    ("endpoint_id", endpoint_id),
                    ("database_name", database),
                    ("role_name", role),
                    ("pooled", "false"),
                ],
            )
            .await
            .map_err(|mut e| {
                // The usual cause of a 404 here: DATABASE_URL names another database or role.
                e.hint = Some(format!(
                    "{}; the branch has the production branch's databases and roles: database `{database}` and role \
                     `{role}` (taken from DATABASE_URL) must exist there",
                    e.hint.take().unwrap_or_default()
                ));
                e
            })?;
        v.get("uri")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(crate::redact::Secret::new)
            .ok_or_else(|| {
                Error::failure("the Neon API answered GET connection_uri without a `uri`")
                    .hint("check that NEON_API_URL points at the Neon API v2")
            })
    }

    /// The branch named exactly `name`, if there is one (a POST may have landed unanswered).
    pub async fn branch_named(&self, name: &str) -> Result<Option<Branch>, Error> {
        self.find_by_name(name).await
    }

    /// Deletes branch `id`, only if its name starts with `prefix` (a last guard: nothing but
    /// flightplan's own short-lived branches). Does not wait for Neon's `delete_timeline`:
    /// the branch is gone for clients at once, and a cancelled job has seconds to exit.
    /// An already deleted branch (404) is success.
    pub async fn delete_own(&self, id: &str, name: &str, prefix: &str) -> Result<(), Error> {
        if !name.starts_with(prefix) {
            return Err(Error::failure(format!(
                "refusing to delete branch {name} ({id}): not one of flightplan's `{prefix}` branches"
            )));
        }
        let project = self.project().to_string();
        let path = ["projects", project.as_str(), "branches", id];
        match self.call(Method::DELETE, &path, &[], None).await {
            Ok(_) | Err(Failure::Known(Some(StatusCode::NOT_FOUND), _)) => Ok(()),
            Err(Failure::Known(_, e)) => Err(e),
            Err(Failure::Unsure(e)) => match self.call(Method::GET, &path, &[], None).await {
                Err(Failure::Known(Some(StatusCode::NOT_FOUND), _)) => Ok(()),
                _ => Err(e),
            },
        }
    }
}

/// Says how often a request was sent before flightplan gave up on it.
fn tried(mut e: Error, attempts: u32) -> Error {
    if attempts > 1 {
        let hint = e.hint.take().unwrap_or_default();
        e.hint = Some(format!(
            "{hint} (sent {attempts} times, with backoff, within [backup] timeout)"
        ));
    }
    e
}

fn shape_error(what: &str, e: &serde_json::Error) -> Error {
    Error::failure(format!(
        "the Neon API answered {what} with JSON of an unexpected shape: {e}"
    ))
    .hint("check that NEON_API_URL points at the Neon API v2")
}

/// `Retry-After` as delta-seconds or an HTTP-date.
fn parse_retry_after(v: &str) -> Option<Duration> {
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

/// A fresh id for `X-Request-ID` (Neon uses a caller's id, so both sides can find the
/// request), shaped as a UUID v4.
fn request_id() -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn api_url_must_be_https_unless_loopback() {
        assert!(parse_api_url("https://console.neon.tech/api/v2").is_ok());
        assert!(parse_api_url("http://127.0.0.1:9/api/v2").is_ok());
        assert_eq!(
            parse_api_url("http://console.neon.tech/api/v2")
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    fn settings(key: &str, timeout: Duration) -> Settings {
        Settings {
            api_url: parse_api_url(DEFAULT_API_URL).unwrap(),
            api_key: ApiKey::new(key),
            project_id: "spring-example-302709".into(),
            branch: None,
            timeout,
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_key_never_formats() {
        let s = settings("napi_secret_value_123", Duration::from_secs(1));
        assert!(!format!("{s:?}").contains("napi_secret"));
        let n = Neon::new(s).unwrap();
        assert_eq!(n.scrub("x napi_secret_value_123 y"), "x *** y");
    }

    #[test]
    fn backoff_grows_and_stays_within_the_cap_and_deadline() {
        let s = settings(&"k".repeat(10), Duration::from_secs(600));
        let n = Neon::new(s).unwrap();
        for attempt in 1..MAX_ATTEMPTS {
            let w = n.pause(attempt, None).unwrap();
            assert!(w <= MAX_BACKOFF);
            assert!(w <= Duration::from_millis(250) * 2u32.pow(attempt - 1));
        }
        assert_eq!(n.pause(MAX_ATTEMPTS, None), None);
        assert_eq!(
            n.pause(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(n.pause(1, Some(Duration::from_secs(3600))), None);
    }
}
