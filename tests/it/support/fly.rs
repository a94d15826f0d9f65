//! A stateful fake of the Fly Machines API on 127.0.0.1 for the deploy tests: machines with
//! states, instance ids and versions; leases with nonces, expiry and 409s; `/wait` that
//! answers 408 before a machine is started; health checks that are empty right after a
//! start and then pass or turn critical; injected 429s; the FlyV1/Bearer token rule with
//! Fly's 401 body; `fly-request-id` on every answer; every request recorded; the apps'
//! secret names for `check-env --fly` (`GET /v1/apps/{app}/secrets`); and every exchange
//! checked against fly.json (support/spec.rs).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::spec::{Checker, Conformance, Spec};

/// One request as the fake saw it, and how it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub authorization: Option<String>,
    pub nonce: Option<String>,
    pub body: Option<Value>,
    pub status: u16,
    pub at: Instant,
}

impl Recorded {
    /// `POST /v1/apps/a/machines/m1` → "POST m1"; `/lease` → "POST m1/lease"; a list → "GET".
    pub fn short(&self) -> String {
        let rest = self
            .path
            .split("/machines")
            .nth(1)
            .unwrap_or("")
            .trim_start_matches('/');
        if rest.is_empty() {
            self.method.clone()
        } else {
            format!("{} {rest}", self.method)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub nonce: String,
    pub owner: String,
    /// What the holder said it is doing (the request body's `description`).
    pub description: String,
    pub expires: Instant,
    pub expires_unix: u64,
}

/// A machine and what the fake will make of it.
#[derive(Debug, Clone)]
pub struct Machine {
    pub id: String,
    pub region: String,
    pub state: String,
    pub instance_id: String,
    pub version: u32,
    pub config: Value,
    pub lease: Option<Lease>,
    /// `/wait` calls still answered 408 before a starting machine is started.
    pub waits_left: u32,
    /// GETs since the last start (checks stay empty for the first few).
    pub polls: u32,
    pub updates: u32,
}

impl Machine {
    pub fn image(&self) -> String {
        self.config["image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn metadata(&self, key: &str) -> Option<String> {
        self.config["metadata"][key].as_str().map(str::to_string)
    }
}

struct Inner {
    app: String,
    /// Accepted token parts (macaroons under FlyV1, others under Bearer).
    tokens: Vec<String>,
    machines: Vec<Machine>,
    requests: Vec<Recorded>,
    served: u64,
    lease_seq: u64,
    /// GETs after a start that still show no checks.
    empty_polls: u32,
    /// 408s from `/wait` after each start.
    waits_408: u32,
    /// (machine, image) whose checks turn critical instead of passing.
    critical: Vec<(String, String)>,
    /// (method, path suffix, status, times left): injected answers.
    inject: Vec<(String, String, u16, u32)>,
    /// (n, status): the n-th request (from 1) is answered `status` unseen; see `fail_nth`.
    schedule: Vec<(u64, u16)>,
    /// (method, path suffix, status, times left): applied, then answered `status` as if
    /// the answer had been lost on the way (the request did happen).
    lost: Vec<(String, String, u16, u32)>,
    /// app name → secret names (`GET /v1/apps/{app}/secrets`).
    secrets: HashMap<String, Vec<String>>,
    /// Statuses to answer (before anything else) to the next requests, e.g. 503.
    fail_next: VecDeque<u16>,
    /// Deliberately unfaithful: echo the Authorization header in 401 bodies, to prove
    /// that flightplan scrubs what a misbehaving server sends back.
    echo_auth: bool,
    checker: Checker,
}

/// The fake server. Dropping it leaves the thread serving until the test process ends;
/// dropping the test's last handle fails the test on any violation of fly.json.
#[derive(Clone)]
pub struct FakeMachines {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
    pub conformance: Conformance,
}

/// The same fake, as the check-env tests name it (apps and their secrets).
pub type FakeFly = FakeMachines;

/// The owner of the leases flightplan takes (the token's identity).
pub const OUR_OWNER: &str = "ci-deployer@tokens.fly.io";

/// A full machine config as `fly deploy` leaves it: the deploy must send every field back.
pub fn app_config(group: &str, image: &str) -> Value {
    json!({
        "image": image,
        "init": {},
        "env": {"NODE_ENV": "production", "PORT": "3000", "PRIMARY_REGION": "ord"},
        "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 1024},
        "metadata": {
            "fly_flyctl_version": "0.3.45",
            "fly_platform_version": "v2",
            "fly_process_group": group,
            "fly_release_id": "Zx9PQ7a1",
            "fly_release_version": "41"
        },
        "services": [{
            "protocol": "tcp",
            "internal_port": 3000,
            "autostop": "stop",
            "autostart": true,
            "min_machines_running": 1,
            "ports": [
                {"port": 80, "handlers": ["http"], "force_https": true},
                {"port": 443, "handlers": ["http", "tls"]}
            ],
            "checks": [{
                "type": "http", "interval": "15s", "timeout": "2s", "grace_period": "5s",
                "method": "GET", "path": "/api/health"
            }]
        }],
        "checks": {
            "db": {"type": "http", "port": 3000, "path": "/api/health/db", "interval": "30s", "timeout": "5s"}
        },
        "restart": {"policy": "on-failure", "max_retries": 10},
        "stop_config": {"timeout": "10s", "signal": "SIGINT"}
    })
}

impl FakeMachines {
    /// Starts the server for `app`, accepting the given token parts.
    pub fn start(app: &str, tokens: &[&str]) -> FakeMachines {
        let (conformance, checker) = Conformance::new(Spec::fly());
        let inner = Arc::new(Mutex::new(Inner {
            secrets: HashMap::new(),
            lost: Vec::new(),
            fail_next: VecDeque::new(),
            echo_auth: false,
            checker,
            app: app.to_string(),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            machines: Vec::new(),
            requests: Vec::new(),
            served: 0,
            lease_seq: 0,
            empty_polls: 2,
            waits_408: 1,
            critical: Vec::new(),
            inject: Vec::new(),
            schedule: Vec::new(),
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
                let router = Router::new().fallback(handle).with_state(state);
                axum::serve(listener, router).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        FakeMachines {
            inner,
            url: format!("http://{addr}"),
            conformance,
        }
    }

    /// A fake with no machines and no tokens yet, for the secrets audit (`check-env --fly`):
    /// add them with [`FakeMachines::token`] and [`FakeMachines::app`].
    pub fn start_empty() -> FakeMachines {
        FakeMachines::start("", &[])
    }

    /// An app and its secrets' names.
    pub fn app(&self, name: &str, secrets: &[&str]) -> &FakeMachines {
        self.with(|s| {
            s.secrets
                .insert(name.into(), secrets.iter().map(|x| x.to_string()).collect())
        });
        self
    }

    /// Another accepted token part (a macaroon under FlyV1, anything else under Bearer).
    pub fn token(&self, token: &str) -> &FakeMachines {
        self.with(|s| s.tokens.push(token.into()));
        self
    }

    /// The next request is answered `status` before anything else.
    pub fn fail_next(&self, status: u16) -> &FakeMachines {
        self.with(|s| s.fail_next.push_back(status));
        self
    }

    /// 401 bodies echo the Authorization header (a misbehaving server).
    pub fn echo_auth(&self) -> &FakeMachines {
        self.with(|s| s.echo_auth = true);
        self
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// A started machine of `group` on `image`.
    pub fn machine(&self, id: &str, region: &str, group: &str, image: &str) -> &FakeMachines {
        self.machine_in_state(id, region, group, image, "started")
    }

    pub fn machine_in_state(
        &self,
        id: &str,
        region: &str,
        group: &str,
        image: &str,
        state: &str,
    ) -> &FakeMachines {
        self.with(|s| {
            s.machines.push(Machine {
                id: id.into(),
                region: region.into(),
                state: state.into(),
                instance_id: format!("01INST{}V1", id.to_uppercase()),
                version: 1,
                config: app_config(group, image),
                lease: None,
                waits_left: 0,
                // Machines that were running before the test show their checks at once.
                polls: 1000,
                updates: 0,
            })
        });
        self
    }

    /// Sets a metadata key of a machine's config.
    pub fn set_metadata(&self, id: &str, key: &str, value: &str) -> &FakeMachines {
        self.with(|s| {
            let m = s.machines.iter_mut().find(|m| m.id == id).unwrap();
            m.config["metadata"][key] = json!(value);
        });
        self
    }

    /// Someone else holds the machine's lease for the next 10 minutes.
    pub fn leased_by(&self, id: &str, owner: &str) -> &FakeMachines {
        self.with(|s| {
            let m = s.machines.iter_mut().find(|m| m.id == id).unwrap();
            m.lease = Some(Lease {
                nonce: "theirs0nonce".into(),
                owner: owner.into(),
                description: "fly deploy".into(),
                expires: Instant::now() + Duration::from_secs(600),
                expires_unix: unix_now() + 600,
            });
        });
        self
    }

    /// The machine's checks turn critical whenever it runs `image`.
    pub fn critical_on(&self, id: &str, image: &str) -> &FakeMachines {
        self.with(|s| s.critical.push((id.into(), image.into())));
        self
    }

    /// GETs after a start that show no checks yet, and 408s from `/wait` after a start.
    pub fn slowness(&self, empty_polls: u32, waits_408: u32) -> &FakeMachines {
        self.with(|s| {
            s.empty_polls = empty_polls;
            s.waits_408 = waits_408;
        });
        self
    }

    /// The next `times` requests with this method whose path ends with `suffix` are
    /// answered `status` (e.g. 429) before being looked at.
    pub fn inject(&self, method: &str, suffix: &str, status: u16, times: u32) -> &FakeMachines {
        self.with(|s| s.inject.push((method.into(), suffix.into(), status, times)));
        self
    }

    /// The next `times` requests with this method whose path ends with `suffix` are acted
    /// on, then answered `status` (e.g. 503): the case of an answer lost after the work.
    pub fn lose_answer(
        &self,
        method: &str,
        suffix: &str,
        status: u16,
        times: u32,
    ) -> &FakeMachines {
        self.with(|s| s.lost.push((method.into(), suffix.into(), status, times)));
        self
    }

    /// The n-th request (from 1, counting every request the fake has seen) is answered
    /// `status` without being acted on.
    pub fn fail_nth(&self, n: u64, status: u16) -> &FakeMachines {
        self.with(|s| s.schedule.push((n, status)));
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    pub fn get(&self, id: &str) -> Machine {
        self.with(|s| s.machines.iter().find(|m| m.id == id).unwrap().clone())
    }

    pub fn machines(&self) -> Vec<Machine> {
        self.with(|s| s.machines.clone())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rfc3339(t: u64) -> String {
    // Good enough for messages: seconds since the epoch in a readable wrapper.
    format!("@{t}")
}

fn is_macaroon(t: &str) -> bool {
    matches!(t.split('_').next(), Some("fm1r" | "fm1a" | "fm2"))
}

/// Fly's rule: `FlyV1` carries macaroons only, `Bearer` one other token.
fn token_parts(header: &str) -> Option<Vec<String>> {
    let (scheme, rest) = header.split_once(' ')?;
    let parts: Vec<String> = rest
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    match scheme {
        "FlyV1" if !parts.is_empty() && parts.iter().all(|p| is_macaroon(p)) => Some(parts),
        "Bearer" if parts.len() == 1 && !is_macaroon(&parts[0]) => Some(parts),
        _ => None,
    }
}

fn reply(status: StatusCode, request_id: &str, body: Value) -> Response {
    (
        status,
        [("fly-request-id", request_id.to_string())],
        axum::Json(body),
    )
        .into_response()
}

fn fly_error(status: StatusCode, request_id: &str, message: &str) -> Response {
    reply(
        status,
        request_id,
        json!({"error": message, "status": "unknown"}),
    )
}

/// The machine JSON the API returns, checks included.
fn render(m: &Machine, critical: &[(String, String)], empty_polls: u32) -> Value {
    let mut checks = vec![json!({
        "name": "bg_deployments_compat_http",
        "status": "critical",
        "output": "compat check for old flyctl",
        "updated_at": "2026-01-16T10:00:00Z"
    })];
    if m.state == "started" && m.polls > empty_polls {
        let bad = critical
            .iter()
            .any(|(id, image)| *id == m.id && *image == m.image());
        let status = if bad { "critical" } else { "passing" };
        let output = if bad {
            "GET /api/health: 500 Internal Server Error"
        } else {
            "200 OK"
        };
        checks
            .push(json!({"name": "servicecheck-00-http-3000", "status": status, "output": output}));
        checks.push(json!({"name": "db", "status": status, "output": output}));
    }
    let mut v = json!({
        "id": m.id,
        "name": format!("{}-name", m.id),
        "state": m.state,
        "region": m.region,
        "instance_id": m.instance_id,
        "version": m.instance_id,
        "private_ip": "fdaa:0:1::2",
        "config": m.config,
        "image_ref": {"registry": "registry.fly.io", "repository": "app", "tag": m.image()},
        "created_at": "2026-01-16T10:00:00Z",
        "updated_at": "2026-01-16T10:00:00Z",
        "host_status": "ok",
        "checks": checks,
        "events": []
    });
    if let Some(l) = &m.lease
        && l.expires > Instant::now()
    {
        v["nonce"] = json!(l.nonce);
    }
    v
}

async fn handle(
    State(state): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (resp, checker) = exchange(&state, &method, &uri, &headers, &body);
    checker
        .respond(
            method.as_str(),
            uri.path(),
            uri.query().unwrap_or(""),
            &headers,
            &body,
            resp,
        )
        .await
}

fn exchange(
    state: &Mutex<Inner>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> (Response, Checker) {
    let mut s = state.lock().unwrap();
    s.served += 1;
    let request_id = format!("01FAKEREQ{:06}-ord", s.served);
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let json_body: Option<Value> = serde_json::from_slice(body).ok();
    let path = uri.path().to_string();
    s.requests.push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        authorization: header("authorization"),
        nonce: header("fly-machine-lease-nonce"),
        body: json_body.clone(),
        status: 0,
        at: Instant::now(),
    });
    let resp = answer(
        &mut s,
        method,
        &path,
        &query,
        headers,
        json_body,
        &request_id,
    );
    let mut resp = resp;
    if let Some(slot) = s.lost.iter_mut().find(|(m, suffix, _, left)| {
        *left > 0 && m == method.as_str() && path.ends_with(suffix.as_str())
    }) {
        slot.3 -= 1;
        let code = StatusCode::from_u16(slot.2).unwrap();
        resp = fly_error(code, &request_id, "upstream connect error");
    }
    let status = resp.status().as_u16();
    if let Some(last) = s.requests.last_mut() {
        last.status = status;
    }
    (resp, s.checker.clone())
}

fn answer(
    s: &mut Inner,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Option<Value>,
    rid: &str,
) -> Response {
    // Scheduled answers first: the n-th request of the fake's life.
    if let Some(&(_, status)) = s.schedule.iter().find(|(k, _)| *k == s.served) {
        let code = StatusCode::from_u16(status).unwrap();
        let mut r = fly_error(code, rid, &format!("injected {status}"));
        if status == 429 {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        return r;
    }
    if let Some(status) = s.fail_next.pop_front() {
        let code = StatusCode::from_u16(status).unwrap();
        let mut r = reply(
            code,
            rid,
            json!({"error": "service temporarily unavailable", "status": if status == 503 { "insufficient_capacity" } else { "unknown" }}),
        );
        if status == 429 {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        return r;
    }
    // Injected answers first: the rate limiter answers before anything else.
    if let Some(slot) = s.inject.iter_mut().find(|(m, suffix, _, left)| {
        *left > 0 && m == method.as_str() && path.ends_with(suffix.as_str())
    }) {
        slot.3 -= 1;
        let status = StatusCode::from_u16(slot.2).unwrap();
        return fly_error(status, rid, "rate limit exceeded");
    }

    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let unauthorized = |why: &str| {
        let msg = if s.echo_auth {
            format!("{why} (got {auth})")
        } else {
            why.to_string()
        };
        fly_error(StatusCode::UNAUTHORIZED, rid, &msg)
    };
    match token_parts(auth) {
        Some(parts) if parts.iter().all(|p| s.tokens.contains(p)) => {}
        Some(_) => return unauthorized("token validation error: unauthorized"),
        None if auth.is_empty() => return unauthorized("unauthorized"),
        None => return unauthorized("verify: invalid token: no tokens found in header"),
    }

    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let nonce = headers
        .get("fly-machine-lease-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (empty_polls, critical) = (s.empty_polls, s.critical.clone());
    let waits_408 = s.waits_408;
    match segs.as_slice() {
        ["v1", "apps", app, "secrets"] if method == Method::GET => {
            let Some(names) = s.secrets.get(*app) else {
                return fly_error(StatusCode::NOT_FOUND, rid, "app not found");
            };
            let secrets: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    json!({
                        "name": n,
                        "digest": format!("{:016x}", 0x9e37_79b9_u64.wrapping_mul(i as u64 + 1)),
                        "created_at": "2026-01-16T10:00:00Z",
                        "updated_at": "2026-01-16T10:00:00Z",
                    })
                })
                .collect();
            reply(StatusCode::OK, rid, json!({ "secrets": secrets }))
        }
        ["v1", "apps", app, "machines"] if method == Method::GET => {
            if *app != s.app {
                return fly_error(StatusCode::NOT_FOUND, rid, "app not found");
            }
            let filters: Vec<(&str, &String)> = query
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("metadata.").map(|k| (k, v)))
                .collect();
            let list: Vec<Value> = s
                .machines
                .iter()
                .filter(|m| {
                    m.state != "destroyed"
                        || query.get("include_deleted").is_some_and(|v| v == "true")
                })
                .filter(|m| {
                    filters
                        .iter()
                        .all(|(k, v)| m.metadata(k).as_deref() == Some(v.as_str()))
                })
                .map(|m| render(m, &critical, empty_polls))
                .collect();
            reply(StatusCode::OK, rid, Value::Array(list))
        }
        ["v1", "apps", app, "machines", id, rest @ ..] => {
            if *app != s.app {
                return fly_error(StatusCode::NOT_FOUND, rid, "app not found");
            }
            let lease_seq = {
                s.lease_seq += 1;
                s.lease_seq
            };
            let Some(m) = s.machines.iter_mut().find(|m| m.id == *id) else {
                return fly_error(StatusCode::NOT_FOUND, rid, "machine not found");
            };
            machine_route(
                m,
                method,
                rest,
                query,
                nonce,
                body,
                rid,
                lease_seq,
                empty_polls,
                waits_408,
                &critical,
            )
        }
        _ => fly_error(StatusCode::NOT_FOUND, rid, "not found"),
    }
}

/// 409 unless `nonce` is the machine's current lease (or nobody holds one and none is sent).
fn check_lease(m: &Machine, nonce: &Option<String>, rid: &str) -> Option<Response> {
    let live = m.lease.as_ref().filter(|l| l.expires > Instant::now());
    match (live, nonce) {
        (None, None) => None,
        (Some(l), Some(n)) if *n == l.nonce => None,
        (Some(l), _) => Some(fly_error(
            StatusCode::CONFLICT,
            rid,
            &format!(
                "machine ID {} lease currently held by {}, expires at {}",
                m.id,
                l.owner,
                rfc3339(l.expires_unix)
            ),
        )),
        (None, Some(_)) => Some(fly_error(
            StatusCode::CONFLICT,
            rid,
            "lease not found or expired",
        )),
    }
}

fn lease_json(l: &Lease) -> Value {
    json!({"status": "success", "data": {
        "nonce": l.nonce, "expires_at": l.expires_unix, "owner": l.owner,
        "description": l.description, "version": "01LEASEVERSION"
    }})
}

#[allow(clippy::too_many_arguments)]
fn machine_route(
    m: &mut Machine,
    method: &Method,
    rest: &[&str],
    query: &HashMap<String, String>,
    nonce: Option<String>,
    body: Option<Value>,
    rid: &str,
    lease_seq: u64,
    empty_polls: u32,
    waits_408: u32,
    critical: &[(String, String)],
) -> Response {
    match (method.as_str(), rest) {
        ("GET", []) => {
            if m.state == "started" {
                m.polls += 1;
            }
            reply(StatusCode::OK, rid, render(m, critical, empty_polls))
        }
        ("POST", []) => {
            if let Some(r) = check_lease(m, &nonce, rid) {
                return r;
            }
            let Some(config) = body
                .as_ref()
                .and_then(|b| b.get("config"))
                .filter(|c| c.is_object())
            else {
                return fly_error(StatusCode::BAD_REQUEST, rid, "config is required");
            };
            m.config = config.clone();
            m.version += 1;
            m.updates += 1;
            m.instance_id = format!("01INST{}V{}", m.id.to_uppercase(), m.version);
            m.polls = 0;
            if body
                .as_ref()
                .and_then(|b| b.get("skip_launch"))
                .and_then(Value::as_bool)
                == Some(true)
            {
                m.state = "stopped".into();
            } else {
                m.state = "starting".into();
                m.waits_left = waits_408;
            }
            reply(StatusCode::OK, rid, render(m, critical, empty_polls))
        }
        ("GET", ["wait"]) => {
            if let Some(i) = query.get("instance_id")
                && *i != m.instance_id
            {
                return fly_error(
                    StatusCode::BAD_REQUEST,
                    rid,
                    &format!(
                        "instance {i} is not the current version of machine {}",
                        m.id
                    ),
                );
            }
            let want = query.get("state").map_or("started", String::as_str);
            if want == "started" && m.state == "starting" {
                if m.waits_left > 0 {
                    m.waits_left -= 1;
                    return fly_error(
                        StatusCode::REQUEST_TIMEOUT,
                        rid,
                        "deadline_exceeded: machine failed to reach desired state, started, currently starting",
                    );
                }
                m.state = "started".into();
                m.polls = 0;
            }
            if want == "stopped" && m.state == "stopping" {
                m.state = "stopped".into();
            }
            if m.state == want {
                reply(StatusCode::OK, rid, json!({"ok": true}))
            } else {
                fly_error(
                    StatusCode::REQUEST_TIMEOUT,
                    rid,
                    &format!(
                        "deadline_exceeded: machine failed to reach desired state, {want}, currently {}",
                        m.state
                    ),
                )
            }
        }
        ("POST", ["stop"]) => {
            if let Some(r) = check_lease(m, &nonce, rid) {
                return r;
            }
            m.state = "stopping".into();
            reply(StatusCode::OK, rid, json!({"ok": true}))
        }
        ("POST", ["start"]) => {
            if let Some(r) = check_lease(m, &nonce, rid) {
                return r;
            }
            m.state = "starting".into();
            m.waits_left = waits_408;
            m.polls = 0;
            reply(StatusCode::OK, rid, json!({"previous_state": "stopped"}))
        }
        ("GET", ["lease"]) => match &m.lease {
            Some(l) if l.expires > Instant::now() => reply(StatusCode::OK, rid, lease_json(l)),
            _ => fly_error(StatusCode::NOT_FOUND, rid, "lease not found"),
        },
        ("POST", ["lease"]) => {
            let ttl: u64 = query.get("ttl").and_then(|t| t.parse().ok()).unwrap_or(500);
            let live = m
                .lease
                .as_ref()
                .filter(|l| l.expires > Instant::now())
                .cloned();
            match (live, nonce) {
                (Some(l), Some(n)) if n == l.nonce => {
                    let l = Lease {
                        expires: Instant::now() + Duration::from_secs(ttl),
                        expires_unix: unix_now() + ttl,
                        ..l
                    };
                    m.lease = Some(l.clone());
                    reply(StatusCode::OK, rid, lease_json(&l))
                }
                (Some(l), _) => fly_error(
                    StatusCode::CONFLICT,
                    rid,
                    &format!(
                        "machine ID {} lease currently held by {}, expires at {}",
                        m.id,
                        l.owner,
                        rfc3339(l.expires_unix)
                    ),
                ),
                (None, Some(_)) => {
                    fly_error(StatusCode::CONFLICT, rid, "lease not found or expired")
                }
                (None, None) => {
                    let l = Lease {
                        nonce: format!("{:012x}", 0xabc0_0000_u64 + lease_seq),
                        owner: OUR_OWNER.into(),
                        description: body
                            .as_ref()
                            .and_then(|b| b["description"].as_str())
                            .unwrap_or("")
                            .to_string(),
                        expires: Instant::now() + Duration::from_secs(ttl),
                        expires_unix: unix_now() + ttl,
                    };
                    m.lease = Some(l.clone());
                    reply(StatusCode::CREATED, rid, lease_json(&l))
                }
            }
        }
        ("DELETE", ["lease"]) => {
            let live = m
                .lease
                .as_ref()
                .filter(|l| l.expires > Instant::now())
                .cloned();
            match (live, nonce) {
                (Some(l), Some(n)) if n == l.nonce => {
                    m.lease = None;
                    reply(
                        StatusCode::OK,
                        rid,
                        json!({"status": "success", "data": {"ok": true}}),
                    )
                }
                (Some(_), _) => fly_error(StatusCode::CONFLICT, rid, "lease nonce mismatch"),
                (None, _) => fly_error(StatusCode::NOT_FOUND, rid, "lease not found"),
            }
        }
        _ => fly_error(StatusCode::NOT_FOUND, rid, "no such endpoint"),
    }
}
