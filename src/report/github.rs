//! The GitHub REST calls the report needs: pull requests of a commit, one sticky comment,
//! and a Deployment with its statuses. Plain reqwest with an injectable base URL.
//!
//! Not octocrab: its default retry layer re-sends any request, POSTs included, on a 5xx,
//! 429 or transport error, which duplicates comments and deployments. Here only reads and
//! idempotent PATCHes are retried; a failed POST is checked by listing before trying again.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::error::Error;
use crate::redact::Secret;

pub const DEFAULT_API_URL: &str = "https://api.github.com";
const ATTEMPTS: u32 = 3;

/// A repository on a GitHub API server, with a token.
pub struct GitHub {
    http: reqwest::Client,
    base: String,
    token: Secret,
    repo: String,
    backoff: Duration,
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
    pub fn new(base_url: &str, token: &str, repo: &str) -> Result<GitHub, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("flightplan/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::failure(format!("cannot build the HTTP client: {e}")))?;
        if !repo.contains('/') {
            return Err(Error::usage(format!(
                "GITHUB_REPOSITORY `{repo}` is not owner/name"
            )));
        }
        // The token must not cross a network in plain text: http:// only for loopback
        // (the test fakes). Issue 8: the other API clients already refused it.
        let parsed = url::Url::parse(base_url)
            .map_err(|e| Error::usage(format!("GITHUB_API_URL `{base_url}` is not a URL: {e}")))?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
            return Err(Error::usage(format!(
                "GITHUB_API_URL `{base_url}` is not https:// (plain http:// would send the token in clear text)"
            ))
            .hint("use https:// (GitHub Enterprise: https://HOST/api/v3)"));
        }
        Ok(GitHub {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            token: Secret::new(token),
            repo: repo.to_string(),
            backoff: Duration::from_millis(500),
        })
    }

    /// Shorter waits between retries (tests).
    pub fn with_backoff(mut self, d: Duration) -> GitHub {
        self.backoff = d;
        self
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: bool,
    ) -> Result<(StatusCode, Value), Error> {
        let url = format!("{}{path}", self.base);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .bearer_auth(self.token.expose());
            if let Some(b) = body {
                req = req.json(b);
            }
            let result = req.send().await;
            let (status, headers, text) = match result {
                Ok(r) => {
                    let status = r.status();
                    let headers = r.headers().clone();
                    (status, headers, r.text().await.unwrap_or_default())
                }
                Err(e) if retry && attempt < ATTEMPTS => {
                    tracing::warn!("GitHub {method} {path}: {e}; retrying");
                    tokio::time::sleep(self.backoff * attempt).await;
                    continue;
                }
                Err(e) => return Err(Error::failure(format!("GitHub {method} {path}: {e}"))),
            };
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let limited = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::FORBIDDEN
                    && headers
                        .get("x-ratelimit-remaining")
                        .and_then(|v| v.to_str().ok())
                        == Some("0"));
            if retry && attempt < ATTEMPTS && (limited || status.is_server_error()) {
                let wait = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(self.backoff * 2u32.pow(attempt));
                tracing::warn!(
                    "GitHub {method} {path}: {status}; retrying in {:.1}s",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
                continue;
            }
            if status.is_success() {
                return Ok((status, json));
            }
            let message = json["message"]
                .as_str()
                .unwrap_or(text.as_str())
                .to_string();
            let mut err = Error::failure(format!(
                "GitHub {method} {path} answered {status}: {message}"
            ));
            if let Some(id) = headers
                .get("x-github-request-id")
                .and_then(|v| v.to_str().ok())
            {
                err.request_id = Some(id.to_string());
            }
            if status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND {
                err = err.hint("the token may lack a permission: comments need `pull-requests: write`, deployments `deployments: write`");
            }
            return Err(err);
        }
    }

    /// Pull requests associated with a commit (the merged PR, for a push to main).
    pub async fn pulls_for_commit(&self, sha: &str) -> Result<Vec<u64>, Error> {
        let (_, v) = self
            .send(
                Method::GET,
                &format!("/repos/{}/commits/{sha}/pulls?per_page=100", self.repo),
                None,
                true,
            )
            .await?;
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
            let (_, v) = self
                .send(
                    Method::GET,
                    &format!(
                        "/repos/{}/pulls/{pr}/files?per_page=100&page={page}",
                        self.repo
                    ),
                    None,
                    true,
                )
                .await?;
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
            let (_, v) = self
                .send(
                    Method::GET,
                    &format!(
                        "/repos/{}/issues/{pr}/comments?per_page=100&page={page}",
                        self.repo
                    ),
                    None,
                    true,
                )
                .await?;
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
    pub async fn upsert_comment(
        &self,
        pr: u64,
        body: &str,
        marker: &str,
    ) -> Result<(u64, bool), Error> {
        if let Some(id) = self.find_comment(pr, marker).await? {
            self.send(
                Method::PATCH,
                &format!("/repos/{}/issues/comments/{id}", self.repo),
                Some(&json!({ "body": body })),
                true,
            )
            .await?;
            return Ok((id, false));
        }
        let path = format!("/repos/{}/issues/{pr}/comments", self.repo);
        match self
            .send(Method::POST, &path, Some(&json!({ "body": body })), false)
            .await
        {
            Ok((_, v)) => Ok((v["id"].as_u64().unwrap_or(0), true)),
            Err(first) => {
                // The POST may have landed even though we saw an error: look before retrying.
                tokio::time::sleep(self.backoff).await;
                if let Some(id) = self.find_comment(pr, marker).await? {
                    return Ok((id, true));
                }
                tracing::warn!(
                    "creating the PR comment failed ({}); trying once more",
                    first.message
                );
                let (_, v) = self
                    .send(Method::POST, &path, Some(&json!({ "body": body })), false)
                    .await?;
                Ok((v["id"].as_u64().unwrap_or(0), true))
            }
        }
    }

    /// Creates a Deployment. `required_contexts: []` and `auto_merge: false`, or GitHub
    /// refuses (409) while this very job's check is pending, or merges the default branch.
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
        let (status, v) = self
            .send(
                Method::POST,
                &format!("/repos/{}/deployments", self.repo),
                Some(&body),
                false,
            )
            .await?;
        if status == StatusCode::ACCEPTED {
            return Err(Error::failure(format!(
                "GitHub did not create a deployment: {}",
                v["message"].as_str().unwrap_or("202 Accepted")
            )));
        }
        v["id"]
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
        self.send(
            Method::POST,
            &format!("/repos/{}/deployments/{id}/statuses", self.repo),
            Some(&body),
            true,
        )
        .await?;
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
