//! The Neon API v2 client for backups: branches of the production branch and their
//! operations, restore and delete, on the one HTTP layer (`crate::http`) with the retries
//! Neon documents as safe (423, 429, 503) and errors that carry Neon's `code`, `message`
//! and `request_id`.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use super::{BRANCH_PREFIX, Backup, Label, PRESERVE_PREFIX, Preserved, Provider, Restored};
use crate::error::Error;
use crate::http::{Advice, Answered, Api, Call, Policy, Repeat, Vendor};
use crate::redact::Secret;

/// The public API (DESIGN.md: `NEON_API_URL` overrides it).
pub const DEFAULT_API_URL: &str = "https://console.neon.tech/api/v2";

/// What the HTTP layer knows of Neon.
pub static NEON: Vendor = Vendor {
    name: "the Neon API",
    url_var: "NEON_API_URL",
    default_url: DEFAULT_API_URL,
    private_suffix: None,
    // The body's `request_id` comes first; Neon also returns it in a response header.
    request_id_headers: &["x-neon-ret-request-id", "x-request-id"],
    // "You can set this value manually by including an `X-Request-ID` header"
    // (neon.json, GeneralError.request_id): even a lost answer has an id to quote.
    client_request_id: Some("x-request-id"),
    message_fields: &["message"],
    code_field: Some("code"),
    not_executed,
    advise,
};

/// neon.json, `GeneralError`: "Any request that returns a `503 Service Unavailable` response
/// is always safe to retry. Any request that returns a `423 Locked` response is safe to
/// retry." A 429 is the rate limiter's, before the request runs.
fn not_executed(status: StatusCode, _: &HeaderMap) -> bool {
    matches!(
        status,
        StatusCode::LOCKED | StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    )
}

fn advise(a: &Answered<'_>) -> Advice {
    let project = a.segments.get(1).map_or("?", String::as_str);
    let hint = match a.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => format!(
            "check NEON_API_KEY: it must be a valid key with access to project {project} \
             (an organization or project-scoped key for CI)"
        ),
        StatusCode::NOT_FOUND => {
            format!("check NEON_PROJECT_ID ({project}) and the branch or backup id")
        }
        StatusCode::LOCKED => {
            "another operation is still running on the project; wait for it and try again".into()
        }
        StatusCode::TOO_MANY_REQUESTS => {
            "Neon's rate limit (about 700 requests a minute per account) was hit; try again shortly"
                .into()
        }
        s if s.is_server_error() => {
            "Neon may be degraded (https://neonstatus.com); try again shortly".into()
        }
        _ => "check the request's values (branch names, ids) and the Neon plan's limits".into(),
    };
    Advice {
        message: None,
        hint: Some(hint),
    }
}

/// Neon's own SDK never waits longer than 10 s between retries it chose itself; a
/// `Retry-After` from Neon is honoured up to a minute. Up to 11 retries, within the
/// command's deadline, whichever ends first.
const POLICY: Policy = Policy {
    min_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(10),
    max_times: 11,
    max_retry_after: Duration::from_secs(60),
};
/// How often a POST whose answer never came is looked up before it is sent once more.
const LOOKUPS_AFTER_TIMEOUT: u32 = 3;

/// Everything the Neon provider needs, resolved from flags, environment and file.
#[derive(Debug, Clone)]
pub struct Settings {
    pub api_url: Url,
    pub api_key: Secret,
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
    crate::http::base_url(&NEON, Some(raw))
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

/// The Neon provider: one API client, one project, one deadline for the command.
pub struct Neon {
    api: Api,
    s: Settings,
    deadline: Instant,
}

impl Neon {
    pub fn new(s: Settings) -> Result<Neon, Error> {
        let key = s.api_key.expose();
        let api = Api::new(
            &NEON,
            s.api_url.clone(),
            &format!("Bearer {key}"),
            key,
            "NEON_API_KEY",
            s.request_timeout,
            POLICY,
        )?;
        Ok(Neon {
            api,
            deadline: Instant::now() + s.timeout,
            s,
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
        self.api.scrub(text)
    }

    /// One API call with the retries Neon documents as safe: 423, 429 and 503 for every
    /// method, a connection that never opened for every method, and any transient failure
    /// for reads. A POST or DELETE whose answer is lost is [`Failure::Unsure`]: the caller
    /// looks at what exists before sending anything again.
    async fn call(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let repeat = if method == Method::GET {
            Repeat::Idempotent
        } else {
            Repeat::IfNotExecuted
        };
        let mut call = Call::new(method, path, repeat);
        for (k, v) in query {
            call = call.query(k, *v);
        }
        if let Some(b) = body {
            call = call.json(b.clone());
        }
        match self.api.send(&call, Some(self.deadline)).await {
            Ok(reply) => Ok(reply.body),
            Err(f) if f.unsure => Err(Failure::Unsure(f.error)),
            Err(f) => {
                let mut e = f.error;
                if f.attempts > 1
                    && let Some(h) = e.hint.as_mut()
                {
                    h.push_str(" within [backup] timeout");
                }
                Err(Failure::Known(f.status, e))
            }
        }
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

fn shape_error(what: &str, e: &serde_json::Error) -> Error {
    Error::failure(format!(
        "the Neon API answered {what} with JSON of an unexpected shape: {e}"
    ))
    .hint("check that NEON_API_URL points at the Neon API v2")
}

#[cfg(test)]
mod tests {
    use super::*;

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
            api_key: crate::redact::Secret::new(key),
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
}
