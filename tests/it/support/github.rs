//! A stateful fake of the GitHub REST API on 127.0.0.1 for the pipeline tests: pull requests
//! of a commit, issue comments (list, create, update), deployments that refuse what GitHub
//! refuses (default `required_contexts` while checks are pending: 409; `auto_merge`: 202),
//! deployment statuses with GitHub's state list, Bearer auth with GitHub's 401 body,
//! `x-github-request-id` on every answer, and every request recorded.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Option<Value>,
    pub status: u16,
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub issue: u64,
    pub body: String,
    pub login: String,
    pub user_type: String,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: u64,
    pub body: Value,
    pub statuses: Vec<Value>,
}

#[derive(Default)]
pub struct Inner {
    pub repo: String,
    pub token: String,
    /// commit sha → PR numbers
    pub pulls: HashMap<String, Vec<u64>>,
    pub comments: Vec<Comment>,
    pub deployments: Vec<Deployment>,
    /// PR number → its changed files as (path, status), for `GET …/pulls/{n}/files`.
    pub pr_files: HashMap<u64, Vec<(String, String)>>,
    pub requests: Vec<Recorded>,
    /// (n, status): the n-th request (from 1) of the fake's life is answered `status`
    /// before it is looked at (a rate limit, an outage); see `fail_nth`.
    pub schedule: Vec<(usize, u16)>,
    next_id: u64,
}

#[derive(Clone)]
pub struct FakeGitHub {
    pub inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl FakeGitHub {
    pub fn start(repo: &str, token: &str) -> FakeGitHub {
        let inner = Arc::new(Mutex::new(Inner {
            repo: repo.into(),
            token: token.into(),
            next_id: 1000,
            ..Default::default()
        }));
        let state = inner.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                axum::serve(listener, Router::new().fallback(handle).with_state(state))
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        FakeGitHub {
            inner,
            url: format!("http://{addr}"),
        }
    }

    /// The n-th request (from 1, counting every request the fake has seen) is answered
    /// `status` without being acted on.
    pub fn fail_nth(&self, n: usize, status: u16) {
        self.inner.lock().unwrap().schedule.push((n, status));
    }

    pub fn pull_for(&self, sha: &str, pr: u64) {
        self.inner
            .lock()
            .unwrap()
            .pulls
            .entry(sha.into())
            .or_default()
            .push(pr);
    }

    /// The files a pull request changes (path, status: added, modified, removed, …).
    pub fn pr_files(&self, pr: u64, files: &[(&str, &str)]) {
        self.inner.lock().unwrap().pr_files.insert(
            pr,
            files
                .iter()
                .map(|(p, s)| (p.to_string(), s.to_string()))
                .collect(),
        );
    }

    /// A comment written by flightplan's bot before (e.g. the deployment log's).
    pub fn bot_comment(&self, pr: u64, body: &str) -> u64 {
        let mut st = self.inner.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        st.comments.push(Comment {
            id,
            issue: pr,
            body: body.into(),
            login: "github-actions[bot]".into(),
            user_type: "Bot".into(),
        });
        id
    }

    /// A comment written by a person (flightplan must leave it alone).
    pub fn human_comment(&self, pr: u64, body: &str) {
        let mut st = self.inner.lock().unwrap();
        st.next_id += 1;
        let id = st.next_id;
        st.comments.push(Comment {
            id,
            issue: pr,
            body: body.into(),
            login: "jdugard".into(),
            user_type: "User".into(),
        });
    }

    pub fn comments(&self, pr: u64) -> Vec<Comment> {
        self.inner
            .lock()
            .unwrap()
            .comments
            .iter()
            .filter(|c| c.issue == pr)
            .cloned()
            .collect()
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.inner.lock().unwrap().deployments.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }
}

fn answer(status: u16, body: Value) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    r.headers_mut().insert(
        "x-github-request-id",
        HeaderValue::from_static("F1A5:2B3C:4D5E6F:7A8B9C:0D1E2F3A"),
    );
    r
}

async fn handle(State(shared): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 22)
        .await
        .unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    let mut st = shared.lock().unwrap();
    let n = st.requests.len() + 1;
    if let Some(&(_, status)) = st.schedule.iter().find(|(k, _)| *k == n) {
        st.requests.push(Recorded {
            method,
            path,
            body,
            status,
        });
        let mut r = answer(
            status,
            json!({"message": format!("injected {status}"), "documentation_url": "https://docs.github.com/rest"}),
        );
        if status == 429 {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static("1"));
        }
        return r;
    }
    let (status, out) = route(
        &mut st,
        &method,
        &path,
        &query,
        auth.as_deref(),
        body.as_ref(),
    );
    st.requests.push(Recorded {
        method,
        path,
        body,
        status,
    });
    answer(status, out)
}

fn route(
    st: &mut Inner,
    method: &str,
    path: &str,
    query: &str,
    auth: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    if auth != Some(&format!("Bearer {}", st.token)) {
        return (
            401,
            json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
        );
    }
    let prefix = format!("/repos/{}/", st.repo);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return (404, json!({"message": "Not Found", "status": "404"}));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let page: usize = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    match (method, parts.as_slice()) {
        ("GET", ["commits", sha, "pulls"]) => {
            let prs = st.pulls.get(*sha).cloned().unwrap_or_default();
            (200, json!(prs.iter().map(|n| json!({"number": n, "state": "closed", "merged_at": "2026-11-27T05:00:00Z"})).collect::<Vec<_>>()))
        }
        ("GET", ["pulls", n, "files"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let all: Vec<Value> = st
                .pr_files
                .get(&n)
                .into_iter()
                .flatten()
                .map(|(p, s)| json!({"filename": p, "status": s, "additions": 1, "deletions": 0}))
                .collect();
            let page: Vec<Value> = all.into_iter().skip((page - 1) * 100).take(100).collect();
            (200, json!(page))
        }
        ("GET", ["issues", n, "comments"]) => {
            let n: u64 = n.parse().unwrap_or(0);
            let all: Vec<Value> = st
                .comments
                .iter()
                .filter(|c| c.issue == n)
                .map(|c| json!({"id": c.id, "body": c.body, "user": {"login": c.login, "type": c.user_type}}))
                .collect();
            let page: Vec<Value> = all.into_iter().skip((page - 1) * 100).take(100).collect();
            (200, json!(page))
        }
        ("POST", ["issues", n, "comments"]) => {
            let Some(text) = body.and_then(|b| b["body"].as_str()) else {
                return (
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "field": "body", "code": "missing_field"}]}),
                );
            };
            st.next_id += 1;
            let id = st.next_id;
            st.comments.push(Comment {
                id,
                issue: n.parse().unwrap_or(0),
                body: text.into(),
                login: "github-actions[bot]".into(),
                user_type: "Bot".into(),
            });
            (201, json!({"id": id, "body": text}))
        }
        ("PATCH", ["issues", "comments", id]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let Some(text) = body.and_then(|b| b["body"].as_str()) else {
                return (422, json!({"message": "Validation Failed"}));
            };
            match st.comments.iter_mut().find(|c| c.id == id) {
                Some(c) if c.user_type == "Bot" => {
                    c.body = text.into();
                    (200, json!({"id": id, "body": text}))
                }
                Some(_) => (
                    403,
                    json!({"message": "Must have admin rights to Repository."}),
                ),
                None => (404, json!({"message": "Not Found"})),
            }
        }
        ("POST", ["deployments"]) => {
            let Some(b) = body else {
                return (400, json!({"message": "Problems parsing JSON"}));
            };
            if b["ref"].as_str().is_none_or(str::is_empty) {
                return (
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "Deployment", "field": "ref", "code": "missing_field"}]}),
                );
            }
            // The job's own check is pending: the default required_contexts fails.
            if b.get("required_contexts")
                .and_then(Value::as_array)
                .is_none_or(|a| !a.is_empty())
            {
                return (
                    409,
                    json!({"message": format!("Conflict: Commit status checks failed for {}.", b["ref"].as_str().unwrap_or("")), "status": "409"}),
                );
            }
            if b.get("auto_merge").and_then(Value::as_bool) != Some(false) {
                return (
                    202,
                    json!({"message": "Auto-merged main into topic-branch on deployment."}),
                );
            }
            st.next_id += 1;
            let id = st.next_id;
            st.deployments.push(Deployment {
                id,
                body: b.clone(),
                statuses: Vec::new(),
            });
            (
                201,
                json!({"id": id, "ref": b["ref"], "environment": b["environment"]}),
            )
        }
        ("POST", ["deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or(0);
            let state = body.and_then(|b| b["state"].as_str()).unwrap_or("");
            if ![
                "error",
                "failure",
                "inactive",
                "in_progress",
                "queued",
                "pending",
                "success",
            ]
            .contains(&state)
            {
                return (
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "DeploymentStatus", "field": "state", "code": "invalid"}]}),
                );
            }
            match st.deployments.iter_mut().find(|d| d.id == id) {
                Some(d) => {
                    d.statuses.push(body.cloned().unwrap_or_default());
                    (201, json!({"id": 1, "state": state}))
                }
                None => (404, json!({"message": "Not Found"})),
            }
        }
        _ => (404, json!({"message": "Not Found", "status": "404"})),
    }
}
