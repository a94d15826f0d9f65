//! secure2send's API surface for the worked example: `/api/health`, `/api/login`,
//! `/api/user` and one page per role (`/api/admin/dashboard`, `/api/agent/clients`,
//! `/api/merchant/application`) over the database built by `examples/secure2send/migrations`,
//! so there is an app to deploy locally and to smoke-test as each role of the runbook.
//!
//! Run: `DATABASE_URL=postgres://… PORT=3000 cargo run --release --example secure2send_app`.
//! With `SMOKE_USER_EMAIL` and `SMOKE_USER_PASSWORD` set it seeds that user if absent
//! (`SMOKE_USER_MFA=true` seeds it with email MFA on); likewise `SMOKE_ADMIN_*`,
//! `SMOKE_AGENT_*` and `SMOKE_MERCHANT_*` seed an admin, an agent and a merchant (role
//! `client`) for the smoke test's identities. `HOST` defaults to 0.0.0.0.
//!
//! The tests include this file as a module (see tests/smoke.rs), so everything but `main`
//! is a function they can call.

use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The session cookie's name and lifetime.
const COOKIE: &str = "sid";
const SESSION_HOURS: i64 = 24;

/// What the app reads from its environment.
#[derive(Clone)]
pub struct AppConfig {
    pub database_url: String,
    pub host: String,
    pub port: u16,
    pub smoke_user: Option<SmokeUser>,
    /// The admin, agent and merchant the smoke test's identities log in as.
    pub role_users: Vec<SmokeUser>,
}

/// A user `flightplan smoke` logs in as.
#[derive(Clone)]
pub struct SmokeUser {
    pub email: String,
    pub password: String,
    pub mfa: bool,
    /// `client` (a merchant), `admin` or `agent`.
    pub role: &'static str,
}

impl AppConfig {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<AppConfig, String> {
        let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let database_url = set("DATABASE_URL").ok_or("DATABASE_URL is not set")?;
        let port = match set("PORT") {
            None => 3000,
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| format!("PORT `{p}` is not a port number"))?,
        };
        let smoke_user = match (set("SMOKE_USER_EMAIL"), set("SMOKE_USER_PASSWORD")) {
            (Some(email), Some(password)) => Some(SmokeUser {
                email,
                password,
                mfa: set("SMOKE_USER_MFA").is_some_and(|v| v == "true" || v == "1"),
                role: "client",
            }),
            (None, None) => None,
            _ => {
                return Err("set both SMOKE_USER_EMAIL and SMOKE_USER_PASSWORD, or neither".into());
            }
        };
        let mut role_users = Vec::new();
        for (prefix, role) in [
            ("ADMIN", "admin"),
            ("AGENT", "agent"),
            ("MERCHANT", "client"),
        ] {
            match (
                set(&format!("SMOKE_{prefix}_EMAIL")),
                set(&format!("SMOKE_{prefix}_PASSWORD")),
            ) {
                (Some(email), Some(password)) => role_users.push(SmokeUser {
                    email,
                    password,
                    mfa: false,
                    role,
                }),
                (None, None) => {}
                _ => {
                    return Err(format!(
                        "set both SMOKE_{prefix}_EMAIL and SMOKE_{prefix}_PASSWORD, or neither"
                    ));
                }
            }
        }
        Ok(AppConfig {
            database_url,
            host: set("HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port,
            smoke_user,
            role_users,
        })
    }
}

/// Connects, seeds the smoke user, and returns the app's routes.
pub async fn app(config: &AppConfig) -> Result<Router, String> {
    let pool = PgPoolOptions::new()
        .max_connections(5)
        // A health check must answer (503) rather than queue when the database is gone.
        .acquire_timeout(Duration::from_secs(3))
        .connect(&config.database_url)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    for user in config.smoke_user.iter().chain(&config.role_users) {
        seed(&pool, user).await?;
    }
    Ok(Router::new()
        .route("/api/health", get(health))
        .route("/api/login", post(login))
        .route("/api/user", get(user))
        .route("/api/admin/dashboard", get(admin_dashboard))
        .route("/api/agent/clients", get(agent_clients))
        .route("/api/merchant/application", get(merchant_application))
        .with_state(pool))
}

/// Inserts the smoke user unless a user with that email exists (its password and MFA
/// setting are then left as they are: production data is never overwritten).
pub async fn seed(pool: &PgPool, user: &SmokeUser) -> Result<(), String> {
    let inserted = sqlx::query(
        "INSERT INTO users (email, password_hash, first_name, role, email_verified, \
                            mfa_email_enabled, mfa_preferred_method, mfa_required)
         VALUES ($1, $2, 'Smoke', $4, true, $3, CASE WHEN $3 THEN 'email' END, $3)
         ON CONFLICT (email) DO NOTHING",
    )
    .bind(&user.email)
    .bind(hash_password(&user.password))
    .bind(user.mfa)
    .bind(user.role)
    .execute(pool)
    .await
    .map_err(|e| format!("cannot seed the smoke user (are the migrations applied?): {e}"))?
    .rows_affected();
    eprintln!(
        "{}",
        if inserted == 1 {
            format!("seeded the smoke user ({})", user.role)
        } else {
            format!("the smoke user ({}) exists; kept as it is", user.role)
        }
    );
    Ok(())
}

/// `sha256$SALT$HASH`, salted and hex-encoded. The real app uses bcrypt; a salted SHA-256
/// keeps the example free of extra dependencies while still never storing the password.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let salt = hex(&salt);
    format!(
        "sha256${salt}${}",
        hex(&Sha256::digest(format!("{salt}{password}")))
    )
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("sha256"), Some(salt), Some(want), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let got = hex(&Sha256::digest(format!("{salt}{password}")));
    // Compared in constant time, so timing does not reveal how much of a guess was right.
    got.len() == want.len()
        && got
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `{"status":"ok"}` when the database answers a query on the app's own schema, else 503.
async fn health(State(pool): State<PgPool>) -> Response {
    let query = sqlx::query("SELECT 1 FROM users LIMIT 1").fetch_optional(&pool);
    match tokio::time::timeout(Duration::from_secs(3), query).await {
        Ok(Ok(_)) => json_response(StatusCode::OK, json!({"status": "ok"})),
        Ok(Err(e)) => {
            eprintln!("health: database error: {e}");
            unavailable()
        }
        Err(_) => {
            eprintln!("health: the database did not answer within 3s");
            unavailable()
        }
    }
}

fn unavailable() -> Response {
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"status": "error", "error": "database unavailable"}),
    )
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// Checks the password; answers an MFA challenge for users with MFA on, else a session.
async fn login(
    State(pool): State<PgPool>,
    body: Result<axum::Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(axum::Json(c)) = body else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "send JSON {\"email\", \"password\"}"}),
        );
    };
    match try_login(&pool, &c).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("login: database error: {e}");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "try again later"}),
            )
        }
    }
}

async fn try_login(pool: &PgPool, c: &Credentials) -> Result<Response, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, password_hash, is_active,
                coalesce(locked_until > now(), false) AS locked,
                (mfa_enabled OR mfa_email_enabled) AS mfa
         FROM users WHERE lower(email) = lower($1)",
    )
    .bind(&c.email)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        attempt(pool, &c.email, None, false, Some("unknown_user")).await?;
        return Ok(rejected());
    };
    let id: String = row.try_get("id")?;
    if !verify_password(&c.password, &row.try_get::<String, _>("password_hash")?) {
        attempt(pool, &c.email, Some(&id), false, Some("bad_password")).await?;
        return Ok(rejected());
    }
    if !row.try_get::<bool, _>("is_active")? || row.try_get::<bool, _>("locked")? {
        attempt(pool, &c.email, Some(&id), false, Some("locked")).await?;
        return Ok(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": "account locked or inactive"}),
        ));
    }
    if row.try_get::<bool, _>("mfa")? {
        // The real app now emails a code; the session starts once it is entered.
        return Ok(json_response(
            StatusCode::OK,
            json!({"mfa_required": true, "method": "email"}),
        ));
    }
    let sid = hex(&rand::random::<[u8; 32]>());
    sqlx::query(
        "INSERT INTO sessions (sid, sess, expire)
         VALUES ($1, json_build_object('user_id', $2::text), now() + make_interval(hours => $3))",
    )
    .bind(&sid)
    .bind(&id)
    .bind(SESSION_HOURS as i32)
    .execute(pool)
    .await?;
    sqlx::query("UPDATE users SET last_login_at = now() WHERE id = $1")
        .bind(&id)
        .execute(pool)
        .await?;
    attempt(pool, &c.email, Some(&id), true, None).await?;
    let mut r = json_response(StatusCode::OK, json!({"ok": true, "mfa_required": false}));
    // No `Secure` flag: the local quick start serves plain http on localhost, where a
    // secure cookie would never be sent back. Behind Fly's proxy the app is on https.
    let cookie = format!(
        "{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
        SESSION_HOURS * 3600
    );
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// Records the attempt as the app's rate limiting reads them (migration 015).
async fn attempt(
    pool: &PgPool,
    email: &str,
    user_id: Option<&str>,
    success: bool,
    reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_attempts (email, user_id, success, failure_reason)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(email)
    .bind(user_id)
    .bind(success)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

fn rejected() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid email or password"}),
    )
}

/// The signed-in user, from the session cookie; 401 without a live session.
async fn user(State(pool): State<PgPool>, headers: HeaderMap) -> Response {
    let Some(sid) = session_id(&headers) else {
        return not_signed_in();
    };
    let row = sqlx::query(
        "SELECT u.id, u.email, u.role, u.mfa_enabled
         FROM sessions s JOIN users u ON u.id = s.sess->>'user_id'
         WHERE s.sid = $1 AND s.expire > now() AND u.is_active",
    )
    .bind(sid)
    .fetch_optional(&pool)
    .await;
    match row {
        Ok(Some(r)) => json_response(
            StatusCode::OK,
            json!({
                "id": r.try_get::<String, _>("id").unwrap_or_default(),
                "email": r.try_get::<String, _>("email").unwrap_or_default(),
                "role": r.try_get::<String, _>("role").unwrap_or_default(),
                "mfa_enabled": r.try_get::<bool, _>("mfa_enabled").unwrap_or_default(),
            }),
        ),
        Ok(None) => not_signed_in(),
        Err(e) => {
            eprintln!("user: database error: {e}");
            json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "try again later"}),
            )
        }
    }
}

/// The signed-in user's id and role, or the answer to give instead (401, 503).
async fn signed_in(pool: &PgPool, headers: &HeaderMap) -> Result<(String, String), Response> {
    let Some(sid) = session_id(headers) else {
        return Err(not_signed_in());
    };
    let row = sqlx::query(
        "SELECT u.id, u.role FROM sessions s JOIN users u ON u.id = s.sess->>'user_id'
         WHERE s.sid = $1 AND s.expire > now() AND u.is_active",
    )
    .bind(sid)
    .fetch_optional(pool)
    .await;
    match row {
        Ok(Some(r)) => Ok((
            r.try_get("id").unwrap_or_default(),
            r.try_get("role").unwrap_or_default(),
        )),
        Ok(None) => Err(not_signed_in()),
        Err(e) => Err(db_error("session", e)),
    }
}

/// The signed-in user's id when their role is `role`; 403 for any other role.
async fn with_role(pool: &PgPool, headers: &HeaderMap, role: &str) -> Result<String, Response> {
    let (id, has) = signed_in(pool, headers).await?;
    if has == role {
        Ok(id)
    } else {
        Err(json_response(
            StatusCode::FORBIDDEN,
            json!({"error": format!("this page is for the {role} role"), "role": has}),
        ))
    }
}

fn db_error(what: &str, e: sqlx::Error) -> Response {
    eprintln!("{what}: database error: {e}");
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "try again later"}),
    )
}

/// Runbook test 2, "Can access admin dashboard": the counts an admin sees first.
async fn admin_dashboard(State(pool): State<PgPool>, headers: HeaderMap) -> Response {
    if let Err(r) = with_role(&pool, &headers, "admin").await {
        return r;
    }
    let counts = sqlx::query(
        "SELECT (SELECT count(*) FROM merchant_applications) AS applications,
                (SELECT count(*) FROM invitation_codes) AS invitation_codes,
                (SELECT count(*) FROM audit_logs) AS audit_logs",
    )
    .fetch_one(&pool)
    .await;
    match counts {
        Ok(r) => json_response(
            StatusCode::OK,
            json!({
                "role": "admin",
                "applications": r.try_get::<i64, _>("applications").unwrap_or_default(),
                "invitation_codes": r.try_get::<i64, _>("invitation_codes").unwrap_or_default(),
                "audit_logs": r.try_get::<i64, _>("audit_logs").unwrap_or_default(),
            }),
        ),
        Err(e) => db_error("admin dashboard", e),
    }
}

/// Runbook test 3, "Agent can view assigned merchants".
async fn agent_clients(State(pool): State<PgPool>, headers: HeaderMap) -> Response {
    let id = match with_role(&pool, &headers, "agent").await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let clients = sqlx::query(
        "SELECT client_id FROM agent_clients WHERE agent_id = $1 AND is_active ORDER BY client_id",
    )
    .bind(&id)
    .fetch_all(&pool)
    .await;
    match clients {
        Ok(rows) => json_response(
            StatusCode::OK,
            json!({
                "role": "agent",
                "clients": rows
                    .iter()
                    .map(|r| r.try_get::<String, _>("client_id").unwrap_or_default())
                    .collect::<Vec<_>>(),
            }),
        ),
        Err(e) => db_error("agent clients", e),
    }
}

/// Runbook test 4, "Can start application": the merchant's own applications.
async fn merchant_application(State(pool): State<PgPool>, headers: HeaderMap) -> Response {
    let id = match with_role(&pool, &headers, "client").await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let apps = sqlx::query("SELECT count(*) AS n FROM merchant_applications WHERE user_id = $1")
        .bind(&id)
        .fetch_one(&pool)
        .await;
    match apps {
        Ok(r) => json_response(
            StatusCode::OK,
            json!({"role": "client", "applications": r.try_get::<i64, _>("n").unwrap_or_default()}),
        ),
        Err(e) => db_error("merchant application", e),
    }
}

fn not_signed_in() -> Response {
    json_response(StatusCode::UNAUTHORIZED, json!({"error": "not signed in"}))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Serves until ctrl-c or SIGTERM (what `fly deploy` sends), finishing requests in flight.
async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match AppConfig::from_env(&|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let router = match app(&config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {}:{}: {e}",
                config.host, config.port
            );
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "secure2send example listening on {}:{}",
        config.host, config.port
    );
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown())
        .await
    {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("sha256$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct hors", &h));
        assert!(!verify_password("correct horse", "bcrypt$x$y"));
        assert_ne!(hash_password("correct horse"), h, "salted");
    }
}
