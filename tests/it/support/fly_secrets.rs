//! A fake Fly Machines API on 127.0.0.1 for the secrets audit: it keeps apps and their
//! secret names, accepts tokens the way api.machines.dev does (macaroons only under
//! `FlyV1`, other tokens under `Bearer`), answers errors with Fly's JSON body
//! (`{"error": ..., "status": ...}`), sets `fly-request-id`, and records every request.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Inner {
    /// app name → secret names.
    apps: HashMap<String, Vec<String>>,
    /// Tokens the fake accepts: macaroons (`fm2_…`) and user tokens, without scheme.
    tokens: Vec<String>,
    requests: Vec<Recorded>,
    /// Statuses to answer (before anything else) to the next requests, e.g. 503.
    fail_next: VecDeque<u16>,
    /// Deliberately unfaithful: echo the Authorization header in 401 bodies, to prove
    /// that flightplan scrubs what a misbehaving server sends back.
    echo_auth: bool,
    served: u64,
}

#[derive(Clone, Default)]
pub struct FakeFly {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl FakeFly {
    /// Starts the server on a free loopback port, in a thread of its own.
    pub fn start() -> FakeFly {
        let inner = Arc::new(Mutex::new(Inner::default()));
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
                let app = Router::new()
                    .route("/v1/apps/{app}/secrets", get(list_secrets))
                    .fallback(not_found)
                    .with_state(state);
                axum::serve(listener, app).await.unwrap();
            });
        });
        let addr = rx.recv().unwrap();
        FakeFly {
            inner,
            url: format!("http://{addr}"),
        }
    }

    pub fn app(&self, name: &str, secrets: &[&str]) -> &FakeFly {
        self.inner.lock().unwrap().apps.insert(
            name.to_string(),
            secrets.iter().map(|s| s.to_string()).collect(),
        );
        self
    }

    pub fn token(&self, token: &str) -> &FakeFly {
        self.inner.lock().unwrap().tokens.push(token.to_string());
        self
    }

    pub fn fail_next(&self, status: u16) -> &FakeFly {
        self.inner.lock().unwrap().fail_next.push_back(status);
        self
    }

    pub fn echo_auth(&self) -> &FakeFly {
        self.inner.lock().unwrap().echo_auth = true;
        self
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().unwrap().requests.clone()
    }
}

fn error(status: StatusCode, message: &str, request_id: &str) -> Response {
    let code = if status == StatusCode::SERVICE_UNAVAILABLE {
        "insufficient_capacity"
    } else {
        "unknown"
    };
    (
        status,
        [("fly-request-id", request_id.to_string())],
        Json(json!({ "error": message, "status": code })),
    )
        .into_response()
}

fn is_macaroon(t: &str) -> bool {
    matches!(t.split('_').next(), Some("fm1r" | "fm1a" | "fm2"))
}

/// The token parts the header carries, if its scheme fits them: `FlyV1` takes macaroons
/// only, `Bearer` takes a non-macaroon token (a macaroon under Bearer finds no token).
fn tokens_of(header: &str) -> Result<Vec<String>, &'static str> {
    let (scheme, rest) = header.split_once(' ').ok_or("unauthorized")?;
    let parts: Vec<String> = rest
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    match scheme {
        "FlyV1" if !parts.is_empty() && parts.iter().all(|p| is_macaroon(p)) => Ok(parts),
        "Bearer" if parts.len() == 1 && !is_macaroon(&parts[0]) => Ok(parts),
        _ => Err("verify: invalid token: no tokens found in header"),
    }
}

async fn list_secrets(
    State(state): State<Arc<Mutex<Inner>>>,
    Path(app): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    s.served += 1;
    let request_id = format!("01FAKE{:06}", s.served);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.requests.push(Recorded {
        method: "GET".into(),
        path: uri.path().to_string(),
        authorization: authorization.clone(),
    });
    if let Some(code) = s.fail_next.pop_front() {
        let status = StatusCode::from_u16(code).unwrap();
        return error(status, "service temporarily unavailable", &request_id);
    }
    let unauthorized = |why: &str, s: &Inner| {
        let msg = if s.echo_auth {
            format!("{why} (got {})", authorization.clone().unwrap_or_default())
        } else {
            why.to_string()
        };
        error(StatusCode::UNAUTHORIZED, &msg, &request_id)
    };
    let Some(header) = authorization.as_deref() else {
        return unauthorized("unauthorized", &s);
    };
    let parts = match tokens_of(header) {
        Ok(p) => p,
        Err(why) => return unauthorized(why, &s),
    };
    if !parts.iter().all(|p| s.tokens.contains(p)) {
        return unauthorized("unauthorized", &s);
    }
    let Some(names) = s.apps.get(&app) else {
        return error(StatusCode::NOT_FOUND, "app not found", &request_id);
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
    (
        StatusCode::OK,
        [("fly-request-id", request_id)],
        Json(json!({ "secrets": secrets })),
    )
        .into_response()
}

async fn not_found(State(state): State<Arc<Mutex<Inner>>>, uri: Uri) -> Response {
    let mut s = state.lock().unwrap();
    s.served += 1;
    let request_id = format!("01FAKE{:06}", s.served);
    s.requests.push(Recorded {
        method: String::new(),
        path: uri.path().to_string(),
        authorization: None,
    });
    error(StatusCode::NOT_FOUND, "not found", &request_id)
}
