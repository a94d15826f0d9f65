//! The GitHub REST calls the report needs: pull requests of a commit, one sticky comment,
//! and a Deployment with its statuses; through octocrab (base URI, token, transport) with
//! its own retry layer off, on the one retry policy and error mapping of `crate::http`.
//!
//! octocrab's default retry layer (`RetryConfig::Simple(3)`) re-sends any request, POSTs
//! included, on a 5xx, 429 or transport error, which duplicates comments and deployments:
//! it is off (`RetryConfig::None`). Reads and idempotent writes (a comment's PATCH, a
//! status) are retried by the policy; a POST that creates something only when GitHub
//! certainly did not execute it (a rate limit), and a comment's failed POST is checked by
//! listing the comments before it is sent again.

use std::time::Duration;

use http_body_util::BodyExt;
use octocrab::Octocrab;
use octocrab::service::middleware::retry::RetryConfig;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::error::Error;
use crate::http::{Advice, Answered, Call, Failure, Mapper, Policy, Repeat, Reply, Vendor};
use crate::redact::Secret;

pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// What the HTTP layer knows of GitHub.
pub static GITHUB: Vendor = Vendor {
    name: "GitHub",
    url_var: "GITHUB_API_URL",
    default_url: DEFAULT_API_URL,
    private_suffix: None,
    request_id_headers: &["x-github-request-id"],
    client_request_id: None,
    message_fields: &["message"],
    code_field: None,
    not_executed,
    advise,
};

/// A rate limit: 429, or 403 with `x-ratelimit-remaining: 0` or a `retry-after` (GitHub's
/// primary and secondary limits, "Rate limits for the REST API"); refused before it ran.
fn not_executed(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (headers
                .get("x-ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                == Some("0")
                || headers.contains_key(reqwest::header::RETRY_AFTER)))
}

fn advise(a: &Answered<'_>) -> Advice {
    Advice {
        message: None,
        hint: match a.status {
            StatusCode::UNAUTHORIZED => {
                Some("GITHUB_TOKEN was rejected: pass the job's token (`github-token` input)".into())
            }
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => Some(
                "the token may lack a permission: comments need `pull-requests: write`, deployments `deployments: write`"
                    .into(),
            ),
            _ => None,
        },
    }
}

/// Waits from 0.5 s doubling (full jitter), two retries; GitHub's `retry-after` up to a
/// minute.
const POLICY: Policy = Policy {
    min_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(8),
    max_times: 2,
    max_retry_after: Duration::from_secs(60),
};

/// A repository on a GitHub API server, with a token.
pub struct GitHub {
    crab: Octocrab,
    base: String,
    map: Mapper,
    repo: String,
    policy: Policy,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GitHub({} {})", self.base, self.repo)
    }
}

/// A deployment status state GitHub accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployState {
    InProgress,
    Success,
    Failure,
    Error,
    Inactive,
}

impl DeployState {
    fn as_str(self) -> &'static str {
        match self {
            DeployState::InProgress => "in_progress",
            DeployState::Success => "success",
            DeployState::Failure => "failure",
            DeployState::Error => "error",
            DeployState::Inactive => "inactive",
        }
    }
}

impl GitHub {
    /// `base_url` is `GITHUB_API_URL` (GitHub Enterprise: `https://HOST/api/v3`); plain
    /// http:// is refused except to loopback, so the token never crosses a network in
    /// clear text.
    pub fn new(base_url: &str, token: &str, repo: &str) -> Result<GitHub, Error> {
        if !repo.contains('/') {
            return Err(Error::usage(format!(
                "GITHUB_REPOSITORY `{repo}` is not owner/name"
            )));
        }
        let base = crate::http::base_url(&GITHUB, Some(base_url))?;
        let token = Secret::new(token.trim());
        let crab = Octocrab::builder()
            .base_uri(base.as_str().trim_end_matches('/'))
            .map_err(|e| Error::usage(format!("GITHUB_API_URL `{base_url}`: {e}")))?
            .personal_token(token.expose().to_string())
            .add_retry_config(RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            .set_write_timeout(Some(Duration::from_secs(30)))
            .add_header(
                reqwest::header::ACCEPT,
                "application/vnd.github+json".to_string(),
            )
            .add_header(
                reqwest::header::HeaderName::from_static("x-github-api-version"),
                "2022-11-28".to_string(),
            )
            .build()
            .map_err(|e| Error::failure(format!("cannot set up the GitHub client: {e}")))?;
        Ok(GitHub {
            crab,
            base: base.as_str().trim_end_matches('/').to_string(),
            map: Mapper::new(&GITHUB, token.expose()),
            repo: repo.to_string(),
            policy: POLICY,
        })
    }

    /// Shorter waits between retries (tests).
    pub fn with_backoff(mut self, d: Duration) -> GitHub {
        self.policy.min_delay = d;
        self
    }

    /// One request under the policy.
    async fn send(&self, call: &Call) -> Result<Reply, Failure> {
        let mut policy = self.policy;
        if call.repeat == Repeat::Never {
            policy.max_times = 0;
        }
        policy.run(None, || self.once(call)).await
    }

    async fn once(&self, call: &Call) -> Result<Reply, Failure> {
        let mut uri = format!("/{}", call.segments.join("/"));
        if !call.query.is_empty() {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&call.query)
                .finish();
            uri = format!("{uri}?{q}");
        }
        let what = format!("{} {}", call.method, uri.split('?').next().unwrap_or(""));
        let sent = match call.method {
            Method::GET => self.crab._get(uri.as_str()).await,
            Method::POST => self.crab._post(uri.as_str(), call.body.as_ref()).await,
            Method::PATCH => self.crab._patch(uri.as_str(), call.body.as_ref()).await,
            _ => unreachable!("flightplan sends GitHub only GET, POST and PATCH"),
        };
        let resp = sent.map_err(|e| {
            // octocrab does not say whether the connection opened: any transport error
            // counts as possibly executed, so only idempotent requests are repeated.
            self.map.transport(
                &self.base,
                &what,
                &crate::http::error_chain(&e),
                false,
                call.repeat,
                None,
            )
        })?;
        let (parts, body) = resp.into_parts();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Err(self.map.transport(
                    &self.base,
                    &what,
                    &format!("the answer (HTTP {}) could not be read: {e}", parts.status),
                    false,
                    call.repeat,
                    None,
                ));
            }
        };
        self.map
            .answer(call, &what, parts.status, &parts.headers, &bytes, None)
    }

    fn get(&self, path: &str) -> Call {
        Call::get(&path.split('/').collect::<Vec<_>>())
    }

    fn repo_path(&self, rest: &str) -> String {
        format!("repos/{}/{rest}", self.repo)
    }

    /// Pull requests associated with a commit (the merged PR, for a push to main).
    pub async fn pulls_for_commit(&self, sha: &str) -> Result<Vec<u64>, Error> {
        let call = self
            .get(&self.repo_path(&format!("commits/{sha}/pulls")))
            .query("per_page", "100");
        let v = self.send(&call).await?.body;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["number"].as_u64())
            .collect())
    }

    /// The files a pull request changes, as (path, status: added, modified, removed,
    /// renamed, …). GitHub lists at most 3000; reading them needs only `contents: read`,
    /// which a fork's pull request token has.
    pub async fn pull_files(&self, pr: u64) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        for page in 1..=30 {
            let call = self
                .get(&self.repo_path(&format!("pulls/{pr}/files")))
                .query("per_page", "100")
                .query("page", page.to_string());
            let v = self.send(&call).await?.body;
            let list = v.as_array().cloned().unwrap_or_default();
            out.extend(list.iter().filter_map(|f| {
                Some((
                    f["filename"].as_str()?.to_string(),
                    f["status"].as_str().unwrap_or("changed").to_string(),
                ))
            }));
            if list.len() < 100 {
                break;
            }
        }
        Ok(out)
    }

    /// Finds flightplan's comment (by its hidden marker) among the PR's comments.
    async fn find_comment(&self, pr: u64, marker: &str) -> Result<Option<u64>, Error> {
        for page in 1..=50 {
            let call = self
                .get(&self.repo_path(&format!("issues/{pr}/comments")))
                .query("per_page", "100")
                .query("page", page.to_string());
            let v = self.send(&call).await?.body;
            let list = v.as_array().cloned().unwrap_or_default();
            // A person quoting the marker is not flightplan: only bots' comments are ours.
            if let Some(c) = list.iter().find(|c| {
                c["body"].as_str().is_some_and(|b| b.contains(marker))
                    && c["user"]["type"].as_str() != Some("User")
            }) {
                return Ok(c["id"].as_u64());
            }
            if list.len() < 100 {
                break;
            }
        }
        Ok(None)
    }

    /// Creates or updates the one sticky comment; returns its id and whether it was created.
    /// The update is a PATCH (GitHub's documented method; octocrab's `update_comment`
    /// sends POST). A POST that failed is never sent again before the comments are listed:
    /// it may have landed.
    pub async fn upsert_comment(
        &self,
        pr: u64,
        body: &str,
        marker: &str,
    ) -> Result<(u64, bool), Error> {
        let body = json!({ "body": body });
        if let Some(id) = self.find_comment(pr, marker).await? {
            let call = Call::new(
                Method::PATCH,
                &[
                    "repos",
                    &self.owner(),
                    &self.name(),
                    "issues",
                    "comments",
                    &id.to_string(),
                ],
                Repeat::Idempotent,
            )
            .json(body);
            self.send(&call).await?;
            return Ok((id, false));
        }
        let post = Call::new(
            Method::POST,
            &[
                "repos",
                &self.owner(),
                &self.name(),
                "issues",
                &pr.to_string(),
                "comments",
            ],
            Repeat::IfNotExecuted,
        )
        .json(body);
        match self.send(&post).await {
            Ok(r) => Ok((r.body["id"].as_u64().unwrap_or(0), true)),
            Err(first) => {
                // The POST may have landed even though we saw an error: look before retrying.
                tokio::time::sleep(self.policy.min_delay).await;
                if let Some(id) = self.find_comment(pr, marker).await? {
                    return Ok((id, true));
                }
                tracing::warn!(
                    "creating the PR comment failed ({}); trying once more",
                    first.error.message
                );
                let r = self.send(&post.repeat(Repeat::Never)).await?;
                Ok((r.body["id"].as_u64().unwrap_or(0), true))
            }
        }
    }

    fn owner(&self) -> String {
        self.repo.split('/').next().unwrap_or_default().to_string()
    }

    fn name(&self) -> String {
        self.repo.split('/').nth(1).unwrap_or_default().to_string()
    }

    /// Creates a Deployment. `required_contexts: []` and `auto_merge: false`, or GitHub
    /// refuses (409) while this very job's check is pending, or merges the default branch.
    /// Repeated only after a rate limit: a lost answer might have created it.
    pub async fn create_deployment(
        &self,
        sha: &str,
        environment: &str,
        description: &str,
        payload: Value,
    ) -> Result<u64, Error> {
        let body = json!({
            "ref": sha,
            "task": "deploy",
            "auto_merge": false,
            "required_contexts": [],
            "environment": environment,
            "description": description,
            "payload": payload,
            "production_environment": environment == "production",
        });
        let call = Call::new(
            Method::POST,
            &["repos", &self.owner(), &self.name(), "deployments"],
            Repeat::IfNotExecuted,
        )
        .json(body);
        let r = self.send(&call).await?;
        if r.status == StatusCode::ACCEPTED {
            return Err(Error::failure(format!(
                "GitHub did not create a deployment: {}",
                r.body["message"].as_str().unwrap_or("202 Accepted")
            )));
        }
        r.body["id"]
            .as_u64()
            .ok_or_else(|| Error::failure("GitHub's deployment answer has no id"))
    }

    pub async fn deployment_status(
        &self,
        id: u64,
        state: DeployState,
        description: &str,
        log_url: Option<&str>,
        environment_url: Option<&str>,
    ) -> Result<(), Error> {
        let mut body =
            json!({ "state": state.as_str(), "description": truncate(description, 140) });
        if let Some(u) = log_url {
            body["log_url"] = json!(u);
        }
        if let Some(u) = environment_url {
            body["environment_url"] = json!(u);
        }
        // A status POST is safe to repeat: the last one wins.
        let call = Call::new(
            Method::POST,
            &[
                "repos",
                &self.owner(),
                &self.name(),
                "deployments",
                &id.to_string(),
                "statuses",
            ],
            Repeat::Idempotent,
        )
        .json(body);
        self.send(&call).await?;
        Ok(())
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
