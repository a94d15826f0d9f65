//! `flightplan smoke` against HTTP servers on 127.0.0.1 that behave as each test needs, and
//! against the worked example's app on a database built by the example migrations.

use crate::support::{db, secure2send_app};

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::support::db::{Run, TestDb};

/// An axum app served on its own thread and runtime, stopped when dropped.
struct Server {
    base: String,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(router: Router) -> Server {
    serve_on(TcpListener::bind("127.0.0.1:0").unwrap(), router)
}

fn serve_on(listener: TcpListener, router: Router) -> Server {
    serve_built(listener, async move { router })
}

/// Serves the router `make` builds on the server's own runtime (a database pool must live
/// on the runtime that uses it); returns once it is built.
fn serve_built(
    listener: TcpListener,
    make: impl Future<Output = Router> + Send + 'static,
) -> Server {
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (ready, built) = std::sync::mpsc::channel();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let router = make.await;
            let _ = ready.send(());
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    while !flag.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await;
        });
    });
    built
        .recv_timeout(Duration::from_secs(60))
        .expect("the test server did not start");
    Server { base, stop }
}

/// The runbook's health endpoint answering `status` with `code`.
fn health(code: u16, status: &'static str) -> Router {
    Router::new().route(
        "/api/health",
        get(move || async move {
            (
                StatusCode::from_u16(code).unwrap(),
                axum::Json(json!({"status": status})),
            )
        }),
    )
}

/// `flightplan --config <dir>/flightplan.toml --format <format> smoke <args>` with a clean
/// environment plus `envs`.
fn smoke(dir: &Path, config: &str, format: &str, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let path = dir.join("flightplan.toml");
    std::fs::write(&path, config).unwrap();
    smoke_with(&path, dir, format, args, envs)
}

/// `smoke` with an existing config file.
fn smoke_with(
    config: &Path,
    dir: &Path,
    format: &str,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
    c.arg("--config")
        .arg(config)
        .args(["--format", format, "smoke"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null());
    for var in [
        "APP_URL",
        "INPUT_URL",
        "INPUT_WATCH",
        "SMOKE_USER_EMAIL",
        "SMOKE_USER_PASSWORD",
        "FLIGHTPLAN_CONFIG",
        "FLIGHTPLAN_LOG",
        "GITHUB_ACTIONS",
        "DATABASE_URL",
    ] {
        c.env_remove(var);
    }
    c.envs(envs.iter().copied());
    Run::from(c.output().unwrap())
}

fn smoke_json(dir: &Path, config: &str, args: &[&str], envs: &[(&str, &str)]) -> (Run, Value) {
    let run = smoke(dir, config, "json", args, envs);
    let doc = run.json();
    (run, doc)
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn default_health_check_passes() {
    let s = serve(health(200, "ok"));
    let d = tmp();
    let (run, doc) = smoke_json(d.path(), "", &["--url", &s.base], &[]);
    run.expect(0);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["url"], format!("{}/", s.base));
    let c = &doc["checks"][0];
    assert_eq!(c["name"], "health");
    assert_eq!(c["ok"], true);
    assert_eq!(c["status"], 200);
    assert_eq!(c["attempts"], 1);
    assert!(c["latency_ms"].is_u64(), "{c}");
    assert_eq!(doc["checks"].as_array().unwrap().len(), 1);
    assert!(doc.get("watch").is_none());

    // The same in text, with the URL from APP_URL.
    let run = smoke(d.path(), "", "text", &[], &[("APP_URL", &s.base)]);
    run.expect(0);
    assert!(
        run.stdout.contains("ok    health  GET /api/health  200"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("smoke passed"), "{}", run.stdout);
}

#[test]
fn wrong_status_fails_without_waiting_out_the_deadline() {
    let s = serve(Router::new().route(
        "/api/health",
        get(|| async { (StatusCode::NOT_FOUND, "no such route") }),
    ));
    let d = tmp();
    let started = Instant::now();
    let (run, doc) = smoke_json(
        d.path(),
        "[smoke]\ntimeout = \"30s\"\n",
        &["--url", &s.base],
        &[],
    );
    run.expect(1);
    // A 404 is a deliberate answer, not a machine warming up: no retries.
    assert!(started.elapsed() < Duration::from_secs(10));
    let c = &doc["checks"][0];
    assert_eq!(c["ok"], false);
    assert_eq!(c["status"], 404);
    assert_eq!(c["attempts"], 1);
    assert_eq!(c["reason"], "HTTP 404, expected 200");
    assert_eq!(c["body_excerpt"], "no such route");
    assert_eq!(doc["ok"], false);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("health: HTTP 404"),
        "{doc}"
    );
}

#[test]
fn wrong_json_field_fails_with_the_field_and_an_excerpt() {
    let s = serve(health(200, "degraded"));
    let d = tmp();
    let (run, doc) = smoke_json(d.path(), "", &["--url", &s.base], &[]);
    run.expect(1);
    let c = &doc["checks"][0];
    assert_eq!(c["status"], 200);
    assert_eq!(
        c["reason"],
        "JSON field `status` is \"degraded\", expected \"ok\""
    );
    assert_eq!(c["body_excerpt"], "{\"status\":\"degraded\"}");

    // Configured checks replace the default; paths reach into nested JSON.
    let s = serve(Router::new().route(
        "/api/version",
        get(|| async { axum::Json(json!({"build": {"sha": "abc123"}, "db": "ok"})) }),
    ));
    let config = r#"
[[smoke.check]]
name = "version"
path = "/api/version"
expect_status = [200, 203]
expect_json = { "build.sha" = "def456", db = "ok" }
"#;
    let (run, doc) = smoke_json(d.path(), config, &["--url", &s.base], &[]);
    run.expect(1);
    assert_eq!(doc["checks"].as_array().unwrap().len(), 1);
    assert_eq!(
        doc["checks"][0]["reason"],
        "JSON field `build.sha` is \"abc123\", expected \"def456\""
    );
}

#[test]
fn slow_response_over_budget_fails_after_retrying() {
    let s = serve(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        }),
    ));
    let d = tmp();
    let config = r#"
[smoke]
timeout = "1500ms"
[[smoke.check]]
name = "slow"
path = "/slow"
expect_body_contains = "done"
max_latency_ms = 100
"#;
    let (run, doc) = smoke_json(d.path(), config, &["--url", &s.base], &[]);
    run.expect(1);
    let c = &doc["checks"][0];
    assert_eq!(c["status"], 200);
    assert!(c["latency_ms"].as_u64().unwrap() >= 300, "{c}");
    // A cold machine is slow at first, so it was given the warm-up deadline.
    assert!(c["attempts"].as_u64().unwrap() >= 2, "{c}");
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains("over the 100 ms budget"), "{reason}");
    assert!(
        reason.contains("gave up at the 1.5s warm-up deadline"),
        "{reason}"
    );
}

#[test]
fn late_starting_server_passes_after_warm_up_retries() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let started = Arc::new(std::sync::Mutex::new(None::<Server>));
    let slot = started.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        *slot.lock().unwrap() = Some(serve_on(l, health(200, "ok")));
    });
    let d = tmp();
    let run = smoke(
        d.path(),
        "[smoke]\ntimeout = \"20s\"\n",
        "json",
        &["--url", &base],
        &[],
    );
    run.expect(0);
    let c = &run.json()["checks"][0];
    assert_eq!(c["ok"], true);
    assert!(c["attempts"].as_u64().unwrap() > 1, "{c}");
    assert!(
        run.stderr.contains("waiting for health: cannot connect"),
        "{}",
        run.stderr
    );
    drop(started.lock().unwrap().take());
}

#[test]
fn server_that_never_answers_fails_at_the_deadline() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let d = tmp();
    let config = r#"
[smoke]
timeout = "2s"
[[smoke.check]]
name = "health"
path = "/api/health"
[[smoke.check]]
name = "user"
path = "/api/user"
"#;
    let started = Instant::now();
    let (run, doc) = smoke_json(d.path(), config, &["--url", &base], &[]);
    run.expect(1);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let c = &doc["checks"][0];
    assert_eq!(c["ok"], false);
    assert_eq!(c["status"], Value::Null);
    assert_eq!(c["latency_ms"], Value::Null);
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.starts_with("no answer within"), "{reason}");
    assert!(reason.contains("warm-up deadline"), "{reason}");
    // The next check would only wait out the same deadline.
    let u = &doc["checks"][1];
    assert_eq!(u["skipped"], true);
    assert_eq!(u["attempts"], 0);
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("is the app running"),
        "{doc}"
    );
}

/// An app with a login: the right credentials get a session cookie, or an MFA challenge
/// when `mfa`; `/api/user` answers only with the session.
fn login_app(mfa: bool) -> Router {
    let login = move |body: axum::Json<Value>| async move {
        let ok = body["email"] == "smoke@example.com" && body["password"] == "s3cret-smoke-pw";
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "bad credentials"})),
            )
                .into_response();
        }
        if mfa {
            return axum::Json(json!({"mfa_required": true})).into_response();
        }
        (
            [(header::SET_COOKIE, "sid=abc123session; Path=/; HttpOnly")],
            axum::Json(json!({"ok": true})),
        )
            .into_response()
    };
    let user = |headers: HeaderMap| async move {
        let cookie = headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if cookie.contains("sid=abc123session") {
            axum::Json(json!({"email": "smoke@example.com"})).into_response()
        } else {
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"error": "not signed in"})),
            )
                .into_response()
        }
    };
    health(200, "ok")
        .route("/api/login", post(login))
        .route("/api/user", get(user))
}

const LOGIN_CONFIG: &str = r#"
[smoke.login]
path = "/api/login"
accept = "ACCEPT"
[[smoke.check]]
name = "health"
path = "/api/health"
expect_json = { status = "ok" }
[[smoke.check]]
name = "user"
path = "/api/user"
expect_status = EXPECT_USER
"#;

fn login_config(accept: &str, user_status: u16) -> String {
    LOGIN_CONFIG
        .replace("ACCEPT", accept)
        .replace("EXPECT_USER", &user_status.to_string())
}

const CREDENTIALS: &[(&str, &str)] = &[
    ("SMOKE_USER_EMAIL", "smoke@example.com"),
    ("SMOKE_USER_PASSWORD", "s3cret-smoke-pw"),
];

#[test]
fn login_with_a_session_carries_the_cookie_to_later_checks() {
    let s = serve(login_app(false));
    let d = tmp();
    let (run, doc) = smoke_json(
        d.path(),
        &login_config("session", 200),
        &["--url", &s.base],
        CREDENTIALS,
    );
    run.expect(0);
    let names: Vec<&str> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["login", "health", "user"]);
    assert_eq!(doc["checks"][0]["type"], "login");
    assert_eq!(doc["checks"][0]["login"], "session");
    // /api/user answered 200 only because the session cookie came along.
    assert_eq!(doc["checks"][2]["status"], 200);

    // Without the right password: rejected, and the user check fails for want of a session.
    let wrong = [
        ("SMOKE_USER_EMAIL", "smoke@example.com"),
        ("SMOKE_USER_PASSWORD", "not-the-password"),
    ];
    let (run, doc) = smoke_json(
        d.path(),
        &login_config("session", 200),
        &["--url", &s.base],
        &wrong,
    );
    run.expect(1);
    assert_eq!(
        doc["checks"][0]["reason"],
        "credentials rejected: HTTP 401, expected 2xx"
    );
    assert_eq!(doc["checks"][0]["attempts"], 1);
    assert_eq!(doc["checks"][2]["status"], 401);
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("SMOKE_USER_EMAIL")
    );
}

#[test]
fn login_with_an_mfa_challenge_passes_only_when_accepted() {
    let s = serve(login_app(true));
    let d = tmp();
    // The challenge is the end of what a machine can do: /api/user stays 401.
    let (run, doc) = smoke_json(
        d.path(),
        &login_config("mfa", 401),
        &["--url", &s.base],
        CREDENTIALS,
    );
    run.expect(0);
    assert_eq!(doc["checks"][0]["login"], "mfa");
    assert_eq!(doc["checks"][2]["status"], 401);

    let (run, doc) = smoke_json(
        d.path(),
        &login_config("session", 401),
        &["--url", &s.base],
        CREDENTIALS,
    );
    run.expect(1);
    let reason = doc["checks"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("MFA challenge"), "{reason}");
    assert!(reason.contains("accept = \"session\""), "{reason}");

    // And accept = "mfa" against an app that hands out a session without MFA fails.
    let s = serve(login_app(false));
    let (run, doc) = smoke_json(
        d.path(),
        &login_config("mfa", 200),
        &["--url", &s.base],
        CREDENTIALS,
    );
    run.expect(1);
    let reason = doc["checks"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("without an MFA challenge"), "{reason}");
}

#[test]
fn login_without_credentials_is_exit_2_before_any_request() {
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let s = serve(Router::new().fallback(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async { "hi" }
    }));
    let d = tmp();
    let run = smoke(
        d.path(),
        &login_config("session", 200),
        "json",
        &["--url", &s.base],
        &[("SMOKE_USER_EMAIL", "smoke@example.com")],
    );
    run.expect(2);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SMOKE_USER_PASSWORD is not set")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[test]
fn usage_mistakes_are_exit_2() {
    let d = tmp();
    // No URL anywhere.
    let run = smoke(d.path(), "", "text", &[], &[]);
    run.expect(2);
    assert!(run.stderr.contains("no app URL"), "{}", run.stderr);
    // Plain http to a remote host would send the smoke password in clear text.
    let run = smoke(
        d.path(),
        "",
        "text",
        &["--url", "http://secure2send.fly.dev"],
        &[],
    );
    run.expect(2);
    assert!(run.stderr.contains("plain http://"), "{}", run.stderr);
    // An unknown key, reported with its line.
    let run = smoke(
        d.path(),
        "app = \"x\"\n[[smoke.check]]\npath = \"/\"\nexpect = 200\n",
        "text",
        &["--url", "http://127.0.0.1:9"],
        &[],
    );
    run.expect(2);
    assert!(run.stderr.contains("flightplan.toml:4"), "{}", run.stderr);
    assert!(run.stderr.contains("expect"), "{}", run.stderr);
    // A ${VAR} that is not set.
    let run = smoke(
        d.path(),
        "[[smoke.check]]\npath = \"/\"\nheaders = { Authorization = \"Bearer ${API_TOKEN}\" }\n",
        "text",
        &["--url", "http://127.0.0.1:9"],
        &[],
    );
    run.expect(2);
    assert!(
        run.stderr.contains("${API_TOKEN}, which is not set"),
        "{}",
        run.stderr
    );
    // A bad --watch.
    let run = smoke(
        d.path(),
        "",
        "text",
        &["--url", "http://127.0.0.1:9", "--watch", "5 parsecs"],
        &[],
    );
    run.expect(2);
}

#[test]
fn watch_within_budgets_passes_with_one_progress_line_per_interval() {
    let s = serve(health(200, "ok"));
    let d = tmp();
    let config =
        "[watch]\nmetrics = false\nduration = \"2s\"\npoll = \"50ms\"\ninterval = \"500ms\"\n";
    let (run, doc) = smoke_json(d.path(), config, &["--url", &s.base], &[]);
    run.expect(0);
    let w = &doc["watch"];
    assert_eq!(w["ok"], true);
    assert!(w["samples"].as_u64().unwrap() >= 10, "{w}");
    assert_eq!(w["errors"], 0);
    assert_eq!(w["error_rate"], 0.0);
    assert!(w["p50_ms"].is_u64() && w["p95_ms"].is_u64(), "{w}");
    assert_eq!(w["p95_budget_ms"], 500);
    assert_eq!(w["max_error_rate"], 0.01);
    let progress = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("watch ") && l.contains('/'))
        .count();
    assert!(
        (2..=5).contains(&progress),
        "{progress} progress lines:\n{}",
        run.stderr
    );
}

#[test]
fn watch_fails_on_a_p95_breach() {
    let s = serve(Router::new().route(
        "/api/health",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(120)).await;
            axum::Json(json!({"status": "ok"}))
        }),
    ));
    let d = tmp();
    let config = "[watch]\nmetrics = false\np95_ms = 50\npoll = \"10ms\"\n";
    let (run, doc) = smoke_json(d.path(), config, &["--url", &s.base, "--watch", "1s"], &[]);
    run.expect(1);
    assert_eq!(doc["checks"][0]["ok"], true);
    let w = &doc["watch"];
    assert_eq!(w["ok"], false);
    assert!(w["p95_ms"].as_u64().unwrap() >= 120, "{w}");
    assert_eq!(w["errors"], 0);
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("p95 latency") && msg.contains("over the 50 ms budget"),
        "{msg}"
    );
}

#[test]
fn watch_fails_on_an_error_rate_breach() {
    // Every third request after the first fails.
    let n = Arc::new(AtomicU32::new(0));
    let s = serve(Router::new().route(
        "/api/health",
        get(move || {
            let i = n.fetch_add(1, Ordering::SeqCst);
            async move {
                if i > 0 && i % 3 == 0 {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(json!({"status": "error"})),
                    )
                } else {
                    (StatusCode::OK, axum::Json(json!({"status": "ok"})))
                }
            }
        }),
    ));
    let d = tmp();
    let (run, doc) = smoke_json(
        d.path(),
        "[watch]\nmetrics = false\nduration = \"1s\"\npoll = \"20ms\"\n",
        &["--url", &s.base],
        &[],
    );
    run.expect(1);
    let w = &doc["watch"];
    assert_eq!(w["ok"], false);
    let rate = w["error_rate"].as_f64().unwrap();
    assert!(rate > 0.2 && rate < 0.5, "{w}");
    assert_eq!(w["checks"][0]["last_error"], "HTTP 500, expected 200");
    let msg = doc["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("error rate") && msg.contains("over the 1.0% budget"),
        "{msg}"
    );
}

#[test]
fn the_smoke_password_never_appears_in_any_output() {
    const PW: &str = "canary-Pw-7f3a9c21e";
    const TOKEN: &str = "tok-canary-55aa77";
    // An app that echoes everything it gets, in bodies of failures.
    let echo = |headers: HeaderMap, body: String| async move {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (
            StatusCode::UNAUTHORIZED,
            format!("rejected {body} with {auth}"),
        )
    };
    let s = serve(
        Router::new()
            .route("/api/login", post(echo))
            .route("/api/echo", get(echo)),
    );
    let config = r#"
[smoke.login]
path = "/api/login"
[[smoke.check]]
name = "echo"
path = "/api/echo"
headers = { Authorization = "Bearer ${API_TOKEN}" }
"#;
    let env = [
        ("SMOKE_USER_EMAIL", "smoke@example.com"),
        ("SMOKE_USER_PASSWORD", PW),
        ("API_TOKEN", TOKEN),
        ("FLIGHTPLAN_LOG", "trace"),
    ];
    let d = tmp();
    for format in ["text", "json"] {
        let run = smoke(d.path(), config, format, &["--url", &s.base], &env);
        run.expect(1);
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(!text.contains(PW), "password in {format} {stream}:\n{text}");
            assert!(!text.contains(TOKEN), "token in {format} {stream}:\n{text}");
            assert!(
                !text.contains("smoke@example.com"),
                "email in {format} {stream}:\n{text}"
            );
        }
        // The excerpt is there, masked: the failure is still explained.
        let excerpt = r#"rejected {"email":"***","password":"***"}"#;
        if format == "json" {
            let doc = run.json();
            assert_eq!(doc["checks"][0]["body_excerpt"], format!("{excerpt} with"));
            assert_eq!(doc["checks"][1]["body_excerpt"], "rejected with Bearer ***");
        } else {
            assert!(run.stdout.contains(excerpt), "{}", run.stdout);
        }
    }
}

/// The example app's admin, agent and merchant, as its identities' variables name them.
const ROLE_USERS: [(&str, &str); 6] = [
    ("SMOKE_ADMIN_EMAIL", "admin@secure2send.test"),
    ("SMOKE_ADMIN_PASSWORD", "example-admin-pw-3"),
    ("SMOKE_AGENT_EMAIL", "agent@secure2send.test"),
    ("SMOKE_AGENT_PASSWORD", "example-agent-pw-4"),
    ("SMOKE_MERCHANT_EMAIL", "merchant@secure2send.test"),
    ("SMOKE_MERCHANT_PASSWORD", "example-merchant-pw-5"),
];

/// The example app on a database migrated by `flightplan migrate apply` from the example's
/// migrations, served on its own thread as its `main` would serve it.
fn example_app(db: &TestDb, email: &str, password: &str, mfa: bool) -> Server {
    example_app_with(db, email, password, mfa, &[])
}

/// The example app with more of its variables set (the role users' credentials).
fn example_app_with(
    db: &TestDb,
    email: &str,
    password: &str,
    mfa: bool,
    more: &[(&str, &str)],
) -> Server {
    let env = |k: &str| match k {
        "DATABASE_URL" => Some(db.url.clone()),
        "PORT" => Some("0".into()),
        "SMOKE_USER_EMAIL" => Some(email.to_string()),
        "SMOKE_USER_PASSWORD" => Some(password.to_string()),
        "SMOKE_USER_MFA" => Some(mfa.to_string()),
        _ => more
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string()),
    };
    let config = secure2send_app::AppConfig::from_env(&env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    serve_built(listener, async move {
        secure2send_app::app(&config)
            .await
            .unwrap_or_else(|e| panic!("the example app did not start: {e}"))
    })
}

#[test]
fn example_app_passes_health_login_and_user() {
    let db = TestDb::new();
    db::copy_example(&db);
    db.migrate("apply", &[]).expect(0);

    let app = example_app_with(
        &db,
        "smoke@secure2send.test",
        "example-smoke-pw-1",
        false,
        &ROLE_USERS,
    );
    let config = r#"
[smoke]
timeout = "20s"
[smoke.login]
path = "/api/login"
accept = "session"
[[smoke.check]]
name = "health"
path = "/api/health"
expect_status = 200
expect_json = { status = "ok" }
max_latency_ms = 2000
[[smoke.check]]
name = "user"
path = "/api/user"
expect_json = { role = "client", mfa_enabled = false }
[watch]
metrics = false
"#;
    let env = [
        ("SMOKE_USER_EMAIL", "smoke@secure2send.test"),
        ("SMOKE_USER_PASSWORD", "example-smoke-pw-1"),
    ];
    let (run, doc) = smoke_json(
        db.dir.path(),
        config,
        &["--url", &app.base, "--watch", "1s"],
        &env,
    );
    run.expect(0);
    let statuses: Vec<&Value> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["status"])
        .collect();
    assert_eq!(statuses, [&json!(200), &json!(200), &json!(200)], "{doc}");
    assert_eq!(doc["checks"][0]["login"], "session");
    assert_eq!(doc["watch"]["ok"], true, "{doc}");
    // The app verified a hash, not a stored password, and recorded the attempt.
    let hash = db
        .scalar("SELECT password_hash FROM users WHERE email = 'smoke@secure2send.test'")
        .unwrap();
    assert!(hash.starts_with("sha256$") && !hash.contains("example-smoke-pw-1"));
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM login_attempts WHERE success")
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM sessions").as_deref(),
        Some("1")
    );

    // The worked example's own flightplan.toml describes the same checks.
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/secure2send/flightplan.toml");
    let with_roles: Vec<(&str, &str)> = env.iter().chain(&ROLE_USERS).copied().collect();
    let run = smoke_with(
        &example,
        db.dir.path(),
        "json",
        &["--url", &app.base],
        &with_roles,
    );
    run.expect(0);
    let doc = run.json();
    let names: Vec<(Value, Value)> = doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["identity"].clone(), c["name"].clone()))
        .collect();
    let n = |i: Option<&str>, name: &str| (i.map_or(Value::Null, |i| json!(i)), json!(name));
    assert_eq!(
        names,
        [
            n(None, "login"),
            n(None, "health"),
            n(None, "user"),
            n(Some("admin"), "admin login"),
            n(Some("admin"), "admin dashboard"),
            n(Some("agent"), "agent login"),
            n(Some("agent"), "agent clients"),
            n(Some("merchant"), "merchant login"),
            n(Some("merchant"), "merchant application"),
        ],
        "{doc}"
    );
    // Each role's session is its own user's: one session per role user in the database.
    for (var, role) in [
        ("SMOKE_ADMIN_EMAIL", "admin"),
        ("SMOKE_AGENT_EMAIL", "agent"),
        ("SMOKE_MERCHANT_EMAIL", "client"),
    ] {
        let email = ROLE_USERS.iter().find(|(k, _)| *k == var).unwrap().1;
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*)::text FROM sessions s JOIN users u ON u.id = s.sess->>'user_id' \
                 WHERE u.email = '{email}' AND u.role = '{role}'"
            ))
            .as_deref(),
            Some("1"),
            "{role}"
        );
    }
    // Without an identity's credentials the run is refused before any request (exit 2).
    let run = smoke_with(&example, db.dir.path(), "json", &["--url", &app.base], &env);
    run.expect(2);
    assert!(run.stderr.contains("SMOKE_ADMIN_EMAIL"), "{}", run.stderr);

    // A user with MFA on gets a challenge, and no session.
    let mfa = example_app(&db, "mfa@secure2send.test", "example-smoke-pw-2", true);
    let env = [
        ("SMOKE_USER_EMAIL", "mfa@secure2send.test"),
        ("SMOKE_USER_PASSWORD", "example-smoke-pw-2"),
    ];
    let config = config
        .replace("accept = \"session\"", "accept = \"mfa\"")
        .replace(
            "expect_json = { role = \"client\", mfa_enabled = false }",
            "expect_status = 401",
        );
    let (run, doc) = smoke_json(db.dir.path(), &config, &["--url", &mfa.base], &env);
    run.expect(0);
    assert_eq!(doc["checks"][0]["login"], "mfa");
    assert_eq!(doc["checks"][2]["status"], 401);

    // The health check answers 503 once the database is gone.
    query_terminate(&db);
    db::query_url(
        &db::admin_url(),
        &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", db.name),
    );
    query_terminate(&db);
    let (run, doc) = smoke_json(
        db.dir.path(),
        "[smoke]\ntimeout = \"1s\"\n",
        &["--url", &app.base],
        &[],
    );
    run.expect(1);
    assert_eq!(doc["checks"][0]["status"], 503, "{doc}");
    db::query_url(
        &db::admin_url(),
        &format!("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", db.name),
    );
}

fn query_terminate(db: &TestDb) {
    db::query_url(
        &db::admin_url(),
        &format!(
            "SELECT pg_terminate_backend(pid)::text FROM pg_stat_activity WHERE datname = '{}'",
            db.name
        ),
    );
}

/// Logins that set `sid=<user>` and one page per role that records the cookies it got.
fn identities_app(seen: Arc<std::sync::Mutex<Vec<(String, String)>>>) -> Router {
    let login_seen = seen.clone();
    Router::new()
        .route(
            "/api/login",
            post(
                move |headers: HeaderMap, axum::Json(b): axum::Json<Value>| {
                    let seen = login_seen.clone();
                    async move {
                        let cookie = headers
                            .get(header::COOKIE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let email = b["email"].as_str().unwrap_or("").to_string();
                        let user = email.split('@').next().unwrap_or("").to_string();
                        seen.lock().unwrap().push((format!("login {user}"), cookie));
                        if b["password"] != json!(format!("pw-{user}-canary-91x")) {
                            return (StatusCode::UNAUTHORIZED, "wrong password").into_response();
                        }
                        (
                            [(header::SET_COOKIE, format!("sid={user}; Path=/; HttpOnly"))],
                            axum::Json(json!({"ok": true})),
                        )
                            .into_response()
                    }
                },
            ),
        )
        .route(
            "/api/{role}/page",
            get(
                move |axum::extract::Path(role): axum::extract::Path<String>,
                      headers: HeaderMap| {
                    let seen = seen.clone();
                    async move {
                        let cookie = headers
                            .get(header::COOKIE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        seen.lock()
                            .unwrap()
                            .push((format!("page {role}"), cookie.clone()));
                        if cookie == format!("sid={role}") {
                            axum::Json(json!({"role": role})).into_response()
                        } else {
                            (StatusCode::FORBIDDEN, "not this role").into_response()
                        }
                    }
                },
            ),
        )
        .route(
            "/api/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
}

fn as_refs(e: &[(String, String)]) -> Vec<(&str, &str)> {
    e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn three_identities_log_in_each_with_its_own_session_and_a_failure_names_the_identity() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = serve(identities_app(seen.clone()));
    let mut config = String::from("[smoke]\ntimeout = \"2s\"\n");
    for role in ["admin", "agent", "merchant"] {
        config.push_str(&format!(
            "[[smoke.identity]]\nname = \"{role}\"\n[[smoke.identity.check]]\nname = \"{role} page\"\n\
             path = \"/api/{role}/page\"\nexpect_json = {{ role = \"{role}\" }}\n"
        ));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for role in ["admin", "agent", "merchant"] {
        let up = role.to_uppercase();
        env.push((
            format!("SMOKE_{up}_EMAIL"),
            format!("{role}@canary-mail.test"),
        ));
        env.push((
            format!("SMOKE_{up}_PASSWORD"),
            format!("pw-{role}-canary-91x"),
        ));
    }
    let envs = |e: &[(String, String)]| -> Vec<(String, String)> { e.to_vec() };
    let d = tmp();
    let ok_env = envs(&env);
    let (run, doc) = smoke_json(d.path(), &config, &["--url", &s.base], &as_refs(&ok_env));
    run.expect(0);
    let checks = doc["checks"].as_array().unwrap();
    // The default health check, then login + page for each identity.
    assert_eq!(checks.len(), 7, "{doc}");
    for (i, role) in ["admin", "agent", "merchant"].iter().enumerate() {
        assert_eq!(checks[1 + 2 * i]["identity"], *role);
        assert_eq!(checks[1 + 2 * i]["login"], "session");
        assert_eq!(checks[2 + 2 * i]["identity"], *role);
        assert_eq!(checks[2 + 2 * i]["ok"], true);
    }
    // Every login came from a fresh jar (no cookie at all), and each page saw only its own
    // identity's session.
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        [
            ("login admin".to_string(), String::new()),
            ("page admin".to_string(), "sid=admin".to_string()),
            ("login agent".to_string(), String::new()),
            ("page agent".to_string(), "sid=agent".to_string()),
            ("login merchant".to_string(), String::new()),
            ("page merchant".to_string(), "sid=merchant".to_string()),
        ]
    );

    // The agent's password is wrong: the failure names the identity, its page is not run,
    // and no credential appears anywhere.
    seen.lock().unwrap().clear();
    let mut bad = envs(&env);
    bad[3].1 = "pw-agent-wrong-canary-77q".into();
    for format in ["text", "json"] {
        let run = smoke(
            d.path(),
            &config,
            format,
            &["--url", &s.base],
            &as_refs(&bad),
        );
        run.expect(1);
        assert!(
            run.stderr
                .contains("identity `agent`: agent login: credentials rejected"),
            "{}",
            run.stderr
        );
        for (_, v) in &bad {
            assert!(
                !run.stdout.contains(v.as_str()),
                "{v} in {format} stdout:\n{}",
                run.stdout
            );
            assert!(
                !run.stderr.contains(v.as_str()),
                "{v} in {format} stderr:\n{}",
                run.stderr
            );
        }
        if format == "json" {
            let doc = run.json();
            let page = &doc["checks"][4];
            assert_eq!(page["identity"], "agent");
            assert_eq!(page["skipped"], true, "{doc}");
            // The merchant still logs in on its own session after the agent failed.
            assert_eq!(doc["checks"][6]["ok"], true, "{doc}");
        } else {
            assert!(run.stdout.contains("[agent] agent login"), "{}", run.stdout);
        }
    }
}
