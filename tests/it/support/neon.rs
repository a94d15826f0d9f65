//! A stateful fake of the Neon API v2 on 127.0.0.1 for the backup tests: a project's
//! branches and operations (which progress with time), Neon's status codes and error body
//! (`request_id`, `code`, `message`), `Authorization: Bearer` and request-body checks,
//! 423 while an operation runs, injected 423/429/503/500 and slow answers, and a record
//! of every request so tests assert what was sent. For the rehearse tests also compute
//! endpoints whose data is a real database copied from production's, connection URIs to
//! them, and `expires_at` (see the section at the end).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::spec::{Checker, Conformance, Spec};

/// The API key the fake accepts; a canary: tests assert it is never printed.
pub const KEY: &str = "napi_canary_9f8e7d6c5b4a3928170615243342516f";
pub const PROJECT: &str = "spring-example-302709";
pub const MAIN_ID: &str = "br-main-100000";

#[derive(Debug, Clone)]
pub struct Branch {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub parent_lsn: Option<String>,
    pub created_at: String,
    pub default: bool,
    pub protected: bool,
    /// What the branch's data is, so tests can see a restore: copied from the parent on
    /// create, from the source on restore.
    pub data: String,
    /// The state shown while one of its operations runs (`init`, `resetting`).
    pub busy_state: &'static str,
}

#[derive(Debug, Clone)]
pub struct Op {
    pub id: String,
    pub branch_id: String,
    pub action: &'static str,
    pub started: Instant,
    pub duration: Duration,
    /// What the operation ends as (`finished` unless a test says otherwise).
    pub outcome: String,
}

impl Op {
    pub fn status(&self) -> String {
        let e = self.started.elapsed();
        if e < self.duration / 3 {
            "scheduling".into()
        } else if e < self.duration {
            "running".into()
        } else {
            self.outcome.clone()
        }
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub request_id: Option<String>,
    pub body: Option<Value>,
    pub at: Instant,
}

/// An answer injected instead of the real one, for the next `times` matching requests.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    /// Matches when the path (after /api/v2) ends with this.
    pub path_suffix: String,
    pub status: u16,
    pub retry_after: Option<String>,
    pub code: String,
    pub message: String,
    pub times: u32,
}

impl Fault {
    pub fn new(method: &'static str, path_suffix: &str, status: u16, times: u32) -> Fault {
        let (code, message) = match status {
            423 => (
                "",
                "project already has running conflicting operations, scheduling of new ones is prohibited",
            ),
            429 => ("", "too many requests"),
            503 => ("", "service temporarily unavailable"),
            _ => ("INTERNAL_ERROR", "internal server error"),
        };
        Fault {
            method,
            path_suffix: path_suffix.into(),
            status,
            retry_after: None,
            code: code.into(),
            message: message.into(),
            times,
        }
    }

    pub fn retry_after(mut self, v: &str) -> Fault {
        self.retry_after = Some(v.into());
        self
    }
}

pub struct State {
    pub branches: Vec<Branch>,
    pub operations: Vec<Op>,
    pub requests: Vec<Recorded>,
    pub faults: Vec<Fault>,
    /// (n, status): the n-th request (from 1) is answered `status` unseen; see `fail_nth`.
    pub schedule: Vec<(usize, u16)>,
    /// How long each new operation takes (scheduling for a third, then running).
    pub op_duration: Duration,
    /// What new operations end as.
    pub op_outcome: String,
    /// Branches per page of `GET …/branches`, small so pagination is exercised.
    pub page_size: usize,
    /// Branches per project, default included (Neon's Free plan: 10).
    pub branches_limit: usize,
    /// Hold the answer of the next N `POST …/branches` this long after applying them.
    pub slow_create: Option<(Duration, u32)>,
    /// Compute endpoints (rehearse): a branch created with `endpoints` gets one each.
    pub endpoints: Vec<Endpoint>,
    /// Branch id → `expires_at` (seconds since the epoch): Neon deletes it then.
    pub expiry: std::collections::HashMap<String, i64>,
    /// The real PostgreSQL standing in for computes, when a test wires one (`with_compute`).
    pub compute: Option<Compute>,
    /// Branch id → the database that is its compute's data.
    pub compute_dbs: std::collections::HashMap<String, String>,
    /// Databases to create or drop once the state's lock is released.
    pub jobs: Vec<Job>,
    checker: Checker,
    minutes: u64,
    next_id: u64,
    lsn: u64,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{}", 200_000 + self.next_id)
    }

    /// A creation time: 2026-01-16T10:00:00Z plus one minute per branch, so order is clear.
    fn now(&mut self) -> String {
        self.minutes += 1;
        stamp(self.minutes)
    }

    fn lsn(&mut self) -> String {
        self.lsn += 0x1A2B;
        format!("0/{:X}", self.lsn)
    }

    fn busy(&self) -> bool {
        self.operations.iter().any(|o| {
            let s = o.status();
            s == "scheduling" || s == "running"
        })
    }

    fn op(&mut self, branch_id: &str, action: &'static str) -> Op {
        let op = Op {
            // A UUID, as Operation.id's `format: uuid` says.
            id: format!(
                "{:08x}-0000-4000-8000-{:012x}",
                self.next_id + 1,
                self.operations.len() + 1
            ),
            branch_id: branch_id.into(),
            action,
            started: Instant::now(),
            duration: self.op_duration,
            outcome: self.op_outcome.clone(),
        };
        self.next_id += 1;
        self.operations.push(op.clone());
        op
    }

    fn state_of(&self, b: &Branch) -> &'static str {
        let running = self.operations.iter().any(|o| {
            o.branch_id == b.id && {
                let s = o.status();
                s == "scheduling" || s == "running"
            }
        });
        if running { b.busy_state } else { "ready" }
    }

    fn branch_json(&self, b: &Branch) -> Value {
        let state = self.state_of(b);
        let mut v = json!({
            "id": b.id,
            "project_id": PROJECT,
            "name": b.name,
            "current_state": state,
            "state_changed_at": b.created_at,
            "creation_source": "console",
            "primary": b.default,
            "default": b.default,
            "protected": b.protected,
            "cpu_used_sec": 0,
            "compute_time_seconds": 0,
            "active_time_seconds": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "logical_size": 29_360_128,
            "init_source": "parent-data",
            "created_at": b.created_at,
            "updated_at": b.created_at,
        });
        if state != "ready" {
            v["pending_state"] = json!("ready");
        }
        if let Some(p) = &b.parent_id {
            v["parent_id"] = json!(p);
            v["parent_timestamp"] = json!(b.created_at);
        }
        if let Some(l) = &b.parent_lsn {
            v["parent_lsn"] = json!(l);
        }
        if let Some(at) = self.expiry.get(&b.id) {
            v["expires_at"] = json!(rfc3339(*at));
            v["ttl_interval_seconds"] = json!((*at - now_secs()).max(0));
        }
        v
    }

    fn op_json(&self, o: &Op) -> Value {
        json!({
            "id": o.id,
            "project_id": PROJECT,
            "branch_id": o.branch_id,
            "action": o.action,
            "status": o.status(),
            "failures_count": 0,
            "created_at": "2026-01-16T10:00:00Z",
            "updated_at": "2026-01-16T10:00:00Z",
            "total_duration_ms": o.started.elapsed().as_millis() as u64,
        })
    }

    pub fn branch(&self, id_or_name: &str) -> Option<&Branch> {
        self.branches
            .iter()
            .find(|b| b.id == id_or_name || b.name == id_or_name)
    }
}

/// `2026-01-16T10:00:00Z` plus `minutes`.
pub fn stamp(minutes: u64) -> String {
    let total = 10 * 60 + minutes;
    let days = total / (24 * 60);
    let rem = total % (24 * 60);
    format!(
        "2026-01-{:02}T{:02}:{:02}:00Z",
        16 + days,
        rem / 60,
        rem % 60
    )
}

/// A running fake; stops when dropped.
pub struct FakeNeon {
    /// The base URL to put in NEON_API_URL (…/api/v2).
    pub url: String,
    pub state: Arc<Mutex<State>>,
    /// Every exchange checked against neon.json; the test fails on a violation.
    pub conformance: Conformance,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeNeon {
    /// A project with its default branch `main` (id [`MAIN_ID`]) and one preview branch.
    pub fn start() -> FakeNeon {
        let (conformance, checker) = Conformance::new(Spec::neon());
        let mut st = State {
            checker,
            branches: Vec::new(),
            operations: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            schedule: Vec::new(),
            op_duration: Duration::from_millis(300),
            op_outcome: "finished".into(),
            page_size: 3,
            branches_limit: 10,
            slow_create: None,
            endpoints: Vec::new(),
            expiry: Default::default(),
            compute: None,
            compute_dbs: Default::default(),
            jobs: Vec::new(),
            minutes: 0,
            next_id: 0,
            lsn: 0x1964D68,
        };
        let created = st.now();
        st.branches.push(Branch {
            id: MAIN_ID.into(),
            name: "main".into(),
            parent_id: None,
            parent_lsn: None,
            created_at: created,
            default: true,
            protected: false,
            data: "v1".into(),
            busy_state: "init",
        });
        let state = Arc::new(Mutex::new(st));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new().fallback(handle).with_state(shared);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let fake = FakeNeon {
            conformance,
            url: format!("http://{addr}/api/v2"),
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        };
        fake.seed("preview/pr-12", Some(MAIN_ID), "pr-12-data");
        fake
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Adds a ready branch (no operation) and returns its id.
    pub fn seed(&self, name: &str, parent: Option<&str>, data: &str) -> String {
        self.with(|st| {
            let id = st.id("br-seed");
            let created_at = st.now();
            let parent_lsn = parent.map(|_| st.lsn());
            st.branches.push(Branch {
                id: id.clone(),
                name: name.into(),
                parent_id: parent.map(str::to_string),
                parent_lsn,
                created_at,
                default: false,
                protected: false,
                data: data.into(),
                busy_state: "init",
            });
            id
        })
    }

    /// The n-th request (from 1, counting every request the fake has seen) is answered
    /// `status` without being acted on.
    pub fn fail_nth(&self, n: usize, status: u16) {
        self.with(|st| st.schedule.push((n, status)));
    }

    pub fn inject(&self, f: Fault) {
        self.with(|st| st.faults.push(f));
    }

    /// Starts an operation on the default branch (e.g. a compute start) lasting `d`:
    /// mutating requests get Neon's 423 until it finishes.
    pub fn busy_for(&self, d: Duration) {
        self.with(|st| {
            st.op(MAIN_ID, "start_compute");
            let last = st.operations.len() - 1;
            st.operations[last].duration = d;
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|st| st.requests.clone())
    }

    /// Requests with this method whose path ends with `suffix`.
    pub fn sent(&self, method: &str, suffix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .collect()
    }

    pub fn branch(&self, id_or_name: &str) -> Option<Branch> {
        self.with(|st| st.branch(id_or_name).cloned())
    }

    pub fn names(&self) -> Vec<String> {
        self.with(|st| st.branches.iter().map(|b| b.name.clone()).collect())
    }
}

impl Drop for FakeNeon {
    fn drop(&mut self) {
        self.drop_computes();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Shared = Arc<Mutex<State>>;

/// Neon's error body, with the caller's request id when it sent one.
fn error(status: u16, code: &str, message: &str, request_id: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({ "request_id": request_id, "code": code, "message": message })),
    )
        .into_response();
    r.headers_mut()
        .insert("x-request-id", HeaderValue::from_str(request_id).unwrap());
    r
}

fn ok(status: u16, body: Value) -> Response {
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

/// Every exchange, checked against neon.json (paths there start after `/api/v2`).
async fn handle(AxState(shared): AxState<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let headers = parts.headers.clone();
    let checker = shared.lock().unwrap().checker.clone();
    let req = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
    let resp = serve(shared, req).await;
    let spec_path = path.strip_prefix("/api/v2").unwrap_or(&path);
    checker
        .respond(&method, spec_path, &query, &headers, &bytes, resp)
        .await
}

async fn serve(shared: Shared, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers = req.headers().clone();
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header("authorization");
    let content_type = header("content-type");
    let request_id = header("x-request-id").unwrap_or_else(|| "fake-request-0001".into());
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Option<Value> = if bytes.is_empty() {
        None
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(_) => {
                return error(400, "", "request body is not valid JSON", &request_id);
            }
        }
    };
    let delay;
    let response = {
        let mut st = shared.lock().unwrap();
        st.requests.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            authorization: authorization.clone(),
            request_id: Some(request_id.clone()),
            body: body.clone(),
            at: Instant::now(),
        });
        let n = st.requests.len();
        if let Some(&(_, status)) = st.schedule.iter().find(|(k, _)| *k == n) {
            let f = Fault::new("ANY", "", status, 1);
            let mut r = error(status, &f.code, &f.message, &request_id);
            if status == 429 {
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
            }
            return r;
        }
        let Some(rest) = path.strip_prefix("/api/v2/") else {
            return error(404, "", "not found", &request_id);
        };
        if authorization.as_deref() != Some(&format!("Bearer {KEY}")) {
            return error(
                401,
                "",
                "authentication required: invalid API key",
                &request_id,
            );
        }
        if body.is_some()
            && !content_type
                .unwrap_or_default()
                .starts_with("application/json")
        {
            return error(
                415,
                "",
                "content type must be application/json",
                &request_id,
            );
        }
        if let Some(f) = st
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.ends_with(&f.path_suffix))
        {
            f.times -= 1;
            let f = f.clone();
            let mut r = error(f.status, &f.code, &f.message, &request_id);
            if let Some(ra) = &f.retry_after {
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_str(ra).unwrap());
            }
            return r;
        }
        let segs: Vec<String> = rest.split('/').map(str::to_string).collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if segs.first() != Some(&"projects") || segs.len() < 2 {
            return error(404, "", "not found", &request_id);
        }
        if segs[1] != PROJECT {
            return error(
                404,
                "",
                &format!("project {} not found", segs[1]),
                &request_id,
            );
        }
        let mutating = method == "POST" || method == "DELETE" || method == "PATCH";
        if mutating && st.busy() {
            return error(
                423,
                "",
                "project already has running conflicting operations, scheduling of new ones is prohibited",
                &request_id,
            );
        }
        delay = match (method.as_str(), &segs[2..]) {
            ("POST", ["branches"]) => match st.slow_create {
                Some((d, n)) if n > 0 => {
                    st.slow_create = Some((d, n - 1));
                    Some(d)
                }
                _ => None,
            },
            _ => None,
        };
        route(
            &mut st,
            &method,
            &segs[2..],
            &query,
            body.as_ref(),
            &request_id,
        )
    };
    let jobs = std::mem::take(&mut shared.lock().unwrap().jobs);
    run_jobs(&shared, jobs).await;
    if let Some(d) = delay {
        // Applied already; the caller gives up before this answer arrives.
        tokio::time::sleep(d).await;
    }
    response
}

fn route(
    st: &mut State,
    method: &str,
    segs: &[&str],
    query: &str,
    body: Option<&Value>,
    rid: &str,
) -> Response {
    // Neon's background process: expired branches are deleted.
    expire(st);
    match (method, segs) {
        ("GET", ["branches"]) => list(st, query, rid),
        ("POST", ["branches"]) => create(st, body, rid),
        ("GET", ["branches", id]) => match st.branch(id).filter(|b| b.id == *id) {
            Some(b) => ok(
                200,
                json!({
                    "branch": st.branch_json(b),
                    "annotation": {
                        "object": { "type": "console/branch", "id": b.id },
                        "value": {}
                    }
                }),
            ),
            None => error(404, "", &format!("branch {id} not found"), rid),
        },
        ("DELETE", ["branches", id]) => delete(st, id, rid),
        ("POST", ["branches", id, "restore"]) => restore(st, id, body, rid),
        ("GET", ["branches", id, "endpoints"]) => list_endpoints(st, id, rid),
        ("GET", ["connection_uri"]) => connection_uri(st, query, rid),
        ("GET", ["operations", id]) => match st.operations.iter().find(|o| o.id == *id) {
            Some(o) => ok(200, json!({ "operation": st.op_json(o) })),
            None => error(404, "", &format!("operation {id} not found"), rid),
        },
        _ => error(404, "", "not found", rid),
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn list(st: &State, query: &str, rid: &str) -> Response {
    let search = query_param(query, "search");
    let offset = match query_param(query, "cursor") {
        None => 0,
        Some(c) => match c.strip_prefix("cur-").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => n,
            None => return error(400, "", "invalid cursor", rid),
        },
    };
    let mut all: Vec<&Branch> = st
        .branches
        .iter()
        .filter(|b| {
            search
                .as_deref()
                .is_none_or(|s| b.name.contains(s) || b.id.contains(s))
        })
        .collect();
    // sort_by updated_at, sort_order desc: Neon's defaults.
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(st.page_size)
        .map(|b| st.branch_json(b))
        .collect();
    let mut pagination = json!({ "sort_by": "updated_at", "sort_order": "desc" });
    if offset + st.page_size < all.len() {
        pagination["next"] = json!(format!("cur-{}", offset + st.page_size));
    }
    ok(
        200,
        json!({ "branches": page, "annotations": {}, "pagination": pagination }),
    )
}

/// Checks an object's keys and their JSON types as the OpenAPI schema declares them.
fn check_fields(v: &Value, what: &str, fields: &[(&str, &str)]) -> Result<(), String> {
    let Some(obj) = v.as_object() else {
        return Err(format!("{what} must be an object"));
    };
    for (k, val) in obj {
        let Some((_, ty)) = fields.iter().find(|(name, _)| name == k) else {
            return Err(format!("{what}: unknown field `{k}`"));
        };
        let okay = match *ty {
            "string" => val.is_string(),
            "boolean" => val.is_boolean(),
            "array" => val.is_array(),
            "object" => val.is_object(),
            _ => true,
        };
        if !okay {
            return Err(format!("{what}.{k} must be a {ty}"));
        }
    }
    Ok(())
}

fn create(st: &mut State, body: Option<&Value>, rid: &str) -> Response {
    let empty = json!({});
    let body = body.unwrap_or(&empty);
    if let Err(m) = check_fields(
        body,
        "body",
        &[
            ("branch", "object"),
            ("endpoints", "array"),
            ("annotation_value", "object"),
        ],
    ) {
        return error(400, "", &m, rid);
    }
    let b = body.get("branch").cloned().unwrap_or(json!({}));
    if let Err(m) = check_fields(
        &b,
        "branch",
        &[
            ("parent_id", "string"),
            ("name", "string"),
            ("parent_lsn", "string"),
            ("parent_timestamp", "string"),
            ("protected", "boolean"),
            ("archived", "boolean"),
            ("init_source", "string"),
            ("expires_at", "string"),
        ],
    ) {
        return error(400, "", &m, rid);
    }
    if b.get("parent_lsn").is_some() && b.get("parent_timestamp").is_some() {
        return error(
            400,
            "",
            "parent_lsn and parent_timestamp are mutually exclusive",
            rid,
        );
    }
    if let Some(eps) = body.get("endpoints").and_then(Value::as_array) {
        for e in eps {
            let t = e.get("type").and_then(Value::as_str);
            if !matches!(t, Some("read_write" | "read_only")) {
                return error(
                    400,
                    "",
                    "endpoints[].type must be read_write or read_only",
                    rid,
                );
            }
        }
    }
    let parent = match b.get("parent_id").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => match st.branches.iter().find(|x| x.id == p) {
            Some(x) => x.clone(),
            None => return error(404, "", &format!("parent branch {p} not found"), rid),
        },
        _ => st.branches.iter().find(|x| x.default).cloned().unwrap(),
    };
    let expires_at = match b.get("expires_at").and_then(Value::as_str) {
        None => None,
        Some(t) => match check_expiry(st, t, &parent.id, &b) {
            Ok(at) => Some(at),
            Err(m) => return error(400, "", &m, rid),
        },
    };
    let id = st.id("br-fake");
    let name = match b.get("name").and_then(Value::as_str) {
        Some("") => return error(400, "", "branch name must not be empty", rid),
        Some(n) if n.chars().count() > 256 => {
            return error(400, "", "branch name is longer than 256 characters", rid);
        }
        Some(n) => n.to_string(),
        None => id.clone(),
    };
    if st.branches.iter().any(|x| x.name == name) {
        return error(
            409,
            "",
            &format!("branch with name {name} already exists"),
            rid,
        );
    }
    if st.branches.len() >= st.branches_limit {
        return error(
            422,
            "BRANCHES_LIMIT_EXCEEDED",
            &format!(
                "the project has reached its limit of {} branches",
                st.branches_limit
            ),
            rid,
        );
    }
    let created_at = st.now();
    let parent_lsn = st.lsn();
    let branch = Branch {
        id: id.clone(),
        name,
        parent_id: Some(parent.id.clone()),
        parent_lsn: Some(parent_lsn),
        created_at,
        default: false,
        protected: b.get("protected").and_then(Value::as_bool).unwrap_or(false),
        data: parent.data.clone(),
        busy_state: "init",
    };
    st.branches.push(branch.clone());
    if let Some(at) = expires_at {
        st.expiry.insert(id.clone(), at);
    }
    let mut ops = vec![st.op(&id, "create_branch")];
    let endpoints = add_endpoints(st, &id, body.get("endpoints"), &parent.id);
    if !endpoints.is_empty() {
        ops.push(st.op(&id, "start_compute"));
    }
    let ops: Vec<Value> = ops.iter().map(|o| st.op_json(o)).collect();
    ok(
        201,
        json!({
            "branch": st.branch_json(&branch),
            "endpoints": endpoints,
            "operations": ops,
            "roles": [],
            "databases": [],
            "connection_uris": [],
        }),
    )
}

fn delete(st: &mut State, id: &str, rid: &str) -> Response {
    let Some(b) = st.branches.iter().find(|b| b.id == id).cloned() else {
        return error(404, "", &format!("branch {id} not found"), rid);
    };
    if b.default {
        return error(400, "", "cannot delete the project's default branch", rid);
    }
    if b.parent_id.is_none() {
        return error(400, "", "cannot delete the project's root branch", rid);
    }
    if b.protected {
        return error(400, "", "cannot delete a protected branch", rid);
    }
    if st
        .branches
        .iter()
        .any(|c| c.parent_id.as_deref() == Some(id))
    {
        return error(
            400,
            "",
            "cannot delete a branch that has child branches",
            rid,
        );
    }
    let mut json_branch = st.branch_json(&b);
    json_branch["pending_state"] = json!("storage_deleted");
    st.branches.retain(|x| x.id != id);
    forget(st, id);
    let op = st.op(id, "delete_timeline");
    let op = st.op_json(&op);
    ok(200, json!({ "branch": json_branch, "operations": [op] }))
}

fn restore(st: &mut State, id: &str, body: Option<&Value>, rid: &str) -> Response {
    let Some(body) = body else {
        return error(400, "", "request body is required", rid);
    };
    if let Err(m) = check_fields(
        body,
        "body",
        &[
            ("source_branch_id", "string"),
            ("source_lsn", "string"),
            ("source_timestamp", "string"),
            ("preserve_under_name", "string"),
        ],
    ) {
        return error(400, "", &m, rid);
    }
    let Some(target) = st.branches.iter().find(|b| b.id == id).cloned() else {
        return error(404, "", &format!("branch {id} not found"), rid);
    };
    let Some(source_id) = body.get("source_branch_id").and_then(Value::as_str) else {
        return error(400, "", "source_branch_id is required", rid);
    };
    let Some(source) = st.branches.iter().find(|b| b.id == source_id).cloned() else {
        return error(
            404,
            "",
            &format!("source branch {source_id} not found"),
            rid,
        );
    };
    if body.get("source_lsn").is_some() && body.get("source_timestamp").is_some() {
        return error(
            400,
            "",
            "source_lsn and source_timestamp are mutually exclusive",
            rid,
        );
    }
    let has_children = st
        .branches
        .iter()
        .any(|c| c.parent_id.as_deref() == Some(id));
    let preserve = body.get("preserve_under_name").and_then(Value::as_str);
    if preserve.is_none() && (has_children || source_id == id) {
        return error(
            400,
            "",
            "preserve_under_name is required when the branch has children or is restored from itself",
            rid,
        );
    }
    let mut ops = vec![st.op(id, "suspend_compute")];
    if let Some(name) = preserve {
        if st.branches.iter().any(|b| b.name == name) {
            return error(
                409,
                "",
                &format!("branch with name {name} already exists"),
                rid,
            );
        }
        let pid = st.id("br-preserved");
        let created_at = st.now();
        st.branches.push(Branch {
            id: pid.clone(),
            name: name.into(),
            parent_id: target.parent_id.clone(),
            parent_lsn: target.parent_lsn.clone(),
            created_at,
            default: false,
            protected: false,
            data: target.data.clone(),
            busy_state: "init",
        });
        // "all existing child branches are moved to the newly created branch"
        for c in st.branches.iter_mut() {
            if c.parent_id.as_deref() == Some(id) {
                c.parent_id = Some(pid.clone());
            }
        }
        ops.push(st.op(&pid, "create_branch"));
    }
    let t = st.branches.iter_mut().find(|b| b.id == id).unwrap();
    t.data = source.data.clone();
    t.busy_state = "resetting";
    let t = t.clone();
    ops.push(st.op(id, "create_timeline"));
    let ops: Vec<Value> = ops.iter().map(|o| st.op_json(o)).collect();
    ok(
        200,
        json!({ "branch": st.branch_json(&t), "operations": ops }),
    )
}

// ---- Compute endpoints, connection URIs, expiry (for `rehearse`) ----------------------
//
// A branch created with `endpoints: [{type: read_write}]` gets an endpoint whose "compute"
// is a database on the real PostgreSQL of the tests: `CREATE DATABASE … TEMPLATE <the
// production test database>` at creation (a copy of production at that instant, as a
// Neon branch is), dropped (WITH FORCE, breaking connections, as Neon's delete does) when
// the branch is deleted or expires. `GET …/connection_uri` answers a URI to it with the
// role's password, [`BRANCH_PASSWORD`], a canary.

/// The password in every branch connection URI the fake hands out; must never be printed.
pub const BRANCH_PASSWORD: &str = "npg_canaryBranchPasswordFFFFFFFF";

/// The real PostgreSQL that stands in for computes.
#[derive(Debug, Clone)]
pub struct Compute {
    /// An admin URL of the server (`…/postgres?sslmode=disable`).
    pub admin_url: String,
    /// The production database (the default branch's data): branches are copies of it.
    pub database: String,
    /// The role Neon would have: `role_name` must name it.
    pub role: String,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub branch_id: String,
    pub kind: String,
    pub host: String,
}

#[derive(Debug, Clone)]
pub enum Job {
    Create { db: String, template: String },
    Drop { db: String },
}

impl FakeNeon {
    /// Wires the real PostgreSQL in as the computes of new branches with endpoints.
    pub fn with_compute(&self, admin_url: &str, database: &str, role: &str) {
        self.with(|st| {
            st.compute = Some(Compute {
                admin_url: admin_url.into(),
                database: database.into(),
                role: role.into(),
            })
        });
    }

    /// The database standing in for a branch's compute, while the branch exists.
    pub fn compute_db(&self, branch_id: &str) -> Option<String> {
        self.with(|st| st.compute_dbs.get(branch_id).cloned())
    }

    /// The endpoints of the branches that exist.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.with(|st| st.endpoints.clone())
    }

    /// Moves a branch's `expires_at` into the past and runs Neon's background deletion.
    pub fn expire_now(&self, branch_id: &str) {
        let (jobs, compute) = self.with(|st| {
            if let Some(at) = st.expiry.get_mut(branch_id) {
                *at = now_secs() - 1;
            }
            expire(st);
            (std::mem::take(&mut st.jobs), st.compute.clone())
        });
        if let Some(c) = compute
            && !jobs.is_empty()
            && let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        {
            rt.block_on(execute(&c.admin_url, &jobs));
        }
    }

    fn drop_computes(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let (Some(c), dbs) = (st.compute.clone(), std::mem::take(&mut st.compute_dbs)) else {
            return;
        };
        drop(st);
        if dbs.is_empty() {
            return;
        }
        let jobs: Vec<Job> = dbs.into_values().map(|db| Job::Drop { db }).collect();
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(execute(&c.admin_url, &jobs));
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 with a required zone (`Z` or `±HH:MM`), as Neon demands of `expires_at`;
/// seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *c == b'+' { off } else { -off }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Neon's rules for `expires_at` (docs: "Branch expiration"): RFC 3339 with a zone, in the
/// future, at most 30 days ahead; not on a protected branch; not under an expiring parent.
fn check_expiry(st: &State, text: &str, parent: &str, branch: &Value) -> Result<i64, String> {
    let at = parse_rfc3339(text).ok_or_else(|| {
        format!("expires_at `{text}` must be an RFC 3339 timestamp with a time zone")
    })?;
    let now = now_secs();
    if at <= now {
        return Err("expires_at must be in the future".into());
    }
    if at > now + 30 * 86_400 {
        return Err("expires_at must be at most 30 days in the future".into());
    }
    if branch.get("protected").and_then(Value::as_bool) == Some(true) {
        return Err("a protected branch cannot have an expiration".into());
    }
    if st.expiry.contains_key(parent) {
        return Err("cannot create a branch from a branch that expires".into());
    }
    Ok(at)
}

fn add_endpoints(
    st: &mut State,
    branch_id: &str,
    requested: Option<&Value>,
    parent: &str,
) -> Vec<Value> {
    let mut out = Vec::new();
    for e in requested.and_then(Value::as_array).into_iter().flatten() {
        let n = st.id("ep-fake");
        let ep = Endpoint {
            host: format!("{n}.us-east-2.aws.neon.tech"),
            id: n,
            branch_id: branch_id.into(),
            kind: e["type"].as_str().unwrap_or("read_write").into(),
        };
        st.endpoints.push(ep.clone());
        // Created with its start_compute operation still to run: `init`.
        let mut body = endpoint_json(st, &ep);
        body["current_state"] = json!("init");
        out.push(body);
    }
    // A compute holding a copy of the parent's data, when a real server is wired in and
    // the parent is production (the database the test created).
    if !out.is_empty()
        && let Some(c) = st.compute.clone()
        && st.branches.iter().any(|b| b.id == parent && b.default)
    {
        let db = format!("{}_{}", c.database, branch_id.replace('-', "_"));
        st.compute_dbs.insert(branch_id.into(), db.clone());
        st.jobs.push(Job::Create {
            db,
            template: c.database.clone(),
        });
    }
    out
}

fn endpoint_json(st: &State, e: &Endpoint) -> Value {
    let starting = st.operations.iter().any(|o| {
        o.branch_id == e.branch_id && o.action == "start_compute" && {
            let s = o.status();
            s == "scheduling" || s == "running"
        }
    });
    json!({
        "id": e.id,
        "host": e.host,
        "branch_id": e.branch_id,
        "project_id": PROJECT,
        "type": e.kind,
        "current_state": if starting { "init" } else { "active" },
        "region_id": "aws-us-east-2",
        // The rest of what neon.json's Endpoint requires (issue 16: `settings` was missing).
        "autoscaling_limit_min_cu": 0.25,
        "autoscaling_limit_max_cu": 0.25,
        "pooler_enabled": false,
        "pooler_mode": "transaction",
        "disabled": false,
        "passwordless_access": true,
        "creation_source": "console",
        "created_at": "2026-01-16T10:00:00Z",
        "updated_at": "2026-01-16T10:00:00Z",
        "settings": {},
        "proxy_host": "us-east-2.aws.neon.tech",
        "suspend_timeout_seconds": 0,
        "provisioner": "k8s-neonvm",
    })
}

fn list_endpoints(st: &State, branch_id: &str, rid: &str) -> Response {
    if !st.branches.iter().any(|b| b.id == branch_id) {
        return error(404, "", &format!("branch {branch_id} not found"), rid);
    }
    let eps: Vec<Value> = st
        .endpoints
        .iter()
        .filter(|e| e.branch_id == branch_id)
        .map(|e| endpoint_json(st, e))
        .collect();
    ok(200, json!({ "endpoints": eps }))
}

/// `GET /projects/{id}/connection_uri?branch_id&endpoint_id&database_name&role_name&pooled`.
fn connection_uri(st: &State, query: &str, rid: &str) -> Response {
    let q = |k: &str| query_param(query, k);
    let (Some(database), Some(role)) = (q("database_name"), q("role_name")) else {
        return error(400, "", "database_name and role_name are required", rid);
    };
    let branch_id = q("branch_id").unwrap_or_else(|| MAIN_ID.to_string());
    if !st.branches.iter().any(|b| b.id == branch_id) {
        return error(404, "", &format!("branch {branch_id} not found"), rid);
    }
    let endpoint = st.endpoints.iter().find(|e| {
        e.branch_id == branch_id
            && q("endpoint_id").is_none_or(|id| id == e.id)
            && e.kind == "read_write"
    });
    let Some(endpoint) = endpoint else {
        return error(
            404,
            "",
            &format!("branch {branch_id} has no read_write endpoint"),
            rid,
        );
    };
    let Some(c) = &st.compute else {
        return error(
            500,
            "",
            "the fake has no compute wired in (with_compute)",
            rid,
        );
    };
    if database != c.database {
        return error(404, "", &format!("database {database} not found"), rid);
    }
    if role != c.role {
        return error(404, "", &format!("role {role} not found"), rid);
    }
    if q("pooled").as_deref() == Some("true") {
        // What Neon answers: the pooler's host, which nobody may migrate through.
        let host = endpoint
            .host
            .replacen(&endpoint.id, &format!("{}-pooler", endpoint.id), 1);
        return ok(
            200,
            json!({ "uri": format!("postgresql://{role}:{BRANCH_PASSWORD}@{host}/{database}?sslmode=require&channel_binding=require") }),
        );
    }
    let Some(db) = st.compute_dbs.get(&branch_id) else {
        return error(
            404,
            "",
            "the branch's compute has no data (not a branch of production)",
            rid,
        );
    };
    let mut u = url::Url::parse(&c.admin_url).unwrap();
    u.set_username(&role).unwrap();
    u.set_password(Some(BRANCH_PASSWORD)).unwrap();
    u.set_path(&format!("/{db}"));
    u.query_pairs_mut()
        .append_pair("channel_binding", "require");
    ok(200, json!({ "uri": u.to_string() }))
}

/// The branch's compute and endpoints go with it.
fn forget(st: &mut State, branch_id: &str) {
    st.endpoints.retain(|e| e.branch_id != branch_id);
    st.expiry.remove(branch_id);
    if let Some(db) = st.compute_dbs.remove(branch_id) {
        st.jobs.push(Job::Drop { db });
    }
}

/// Deletes every branch whose `expires_at` has passed (Neon's background process).
fn expire(st: &mut State) {
    let now = now_secs();
    let gone: Vec<String> = st
        .expiry
        .iter()
        .filter(|(_, at)| **at <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in gone {
        st.branches.retain(|b| b.id != id);
        forget(st, &id);
    }
}

async fn run_jobs(shared: &Shared, jobs: Vec<Job>) {
    if jobs.is_empty() {
        return;
    }
    let Some(c) = shared.lock().unwrap().compute.clone() else {
        return;
    };
    execute(&c.admin_url, &jobs).await;
}

async fn execute(admin_url: &str, jobs: &[Job]) {
    use sqlx::Connection;
    let mut conn = match sqlx::PgConnection::connect(admin_url).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fake Neon: cannot reach the compute server: {e}");
            return;
        }
    };
    for job in jobs {
        let sql = match job {
            Job::Create { db, template } => {
                format!("CREATE DATABASE \"{db}\" TEMPLATE \"{template}\"")
            }
            Job::Drop { db } => format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
        };
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
        {
            eprintln!("fake Neon: `{sql}` failed: {e}");
        }
    }
    let _ = conn.close().await;
}
