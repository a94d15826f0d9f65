//! The Fly Machines REST API client: the FlyV1/Bearer auth rule, and Fly's part of the one
//! HTTP layer (`crate::http`): its request id (`fly-request-id`), its error body and what
//! its errors mean (a 404 names the machine or the app it concerns).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::error::Error;
use crate::http::{Advice, Answered, Api, Policy, Vendor};
pub use crate::http::{Call, Repeat, Reply};

/// The public Machines API (DESIGN.md: `FLY_API_URL` overrides it).
pub const DEFAULT_API_URL: &str = "https://api.machines.dev";

/// What the HTTP layer knows of Fly.
pub static FLY: Vendor = Vendor {
    name: "the Fly Machines API",
    url_var: "FLY_API_URL",
    default_url: DEFAULT_API_URL,
    // Inside Fly's WireGuard network the API is `http://_api.internal:4280`.
    private_suffix: Some(".internal"),
    request_id_headers: &["fly-request-id"],
    client_request_id: None,
    // fly-go's `handleAPIError` reads `error`, then `message`.
    message_fields: &["error", "message"],
    code_field: Some("status"),
    not_executed,
    advise,
};

/// A 429 comes from the rate limiter, before the request runs (Fly documents per-action
/// limits, https://fly.io/docs/machines/api/working-with-machines-api/).
fn not_executed(status: StatusCode, _: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
}

/// `/v1/apps/{app}/machines/{id}/…`: the app and, on a machine endpoint, the machine.
fn subject(segments: &[String]) -> (&str, Option<&str>) {
    let app = segments.get(2).map_or("?", String::as_str);
    let machine = match segments.get(3).map(String::as_str) {
        Some("machines") => segments.get(4).map(String::as_str),
        _ => None,
    };
    (app, machine)
}

fn advise(a: &Answered<'_>) -> Advice {
    let (app, machine) = subject(a.segments);
    let (what, detail, code) = (a.what, a.detail, a.status.as_u16());
    match a.status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Advice {
            message: Some(format!(
                "the Fly Machines API rejected FLY_API_TOKEN for app `{app}` (HTTP {code}: {detail})"
            )),
            hint: Some(format!(
                "use a token with access to the app: `fly tokens create deploy -a {app}`, copied whole, \
                 including its `FlyV1 ` prefix"
            )),
        },
        // Issue 16: a machine endpoint's 404 is about the machine, not the app.
        StatusCode::NOT_FOUND => match machine {
            Some(id) => Advice {
                message: Some(format!(
                    "machine {id} of app `{app}` was not found (HTTP 404 for {what}: {detail})"
                )),
                hint: Some(format!(
                    "it may have been destroyed meanwhile; `fly machines list -a {app}` shows what exists"
                )),
            },
            None => Advice {
                message: Some(format!(
                    "Fly app `{app}` was not found (HTTP 404 for {what}: {detail})"
                )),
                hint: Some(
                    "check `app` in flightplan.toml or FLY_APP, and that the token's organization owns the app"
                        .into(),
                ),
            },
        },
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => Advice {
            message: None,
            hint: Some(
                "Fly may be busy or degraded (https://status.flyio.net); try again shortly".into(),
            ),
        },
        _ => Advice {
            message: None,
            hint: Some("check the app name and FLY_API_URL".into()),
        },
    }
}

/// Retries: waits from 0.25 s doubling to 4 s (full jitter), three retries: long enough for
/// Fly's per-action rate limit (1 req/s, bursts of 3) to let the next one through.
const POLICY: Policy = Policy {
    min_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(4),
    max_times: 3,
    max_retry_after: Duration::from_secs(30),
};

/// A Machines API client for one token.
#[derive(Clone)]
pub struct Client {
    api: Api,
}

/// One secret of an app as the API lists it: names and digests, never values.
#[derive(Debug, Clone, Deserialize)]
pub struct SecretInfo {
    /// `label` is the name in the API's older shape.
    #[serde(alias = "label")]
    pub name: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// A successful answer and the request id Fly gave it.
#[derive(Debug)]
pub struct Answer<T> {
    pub body: T,
    pub request_id: Option<String>,
}

impl Client {
    /// `base_url` is `FLY_API_URL` or [`DEFAULT_API_URL`]; `token` is `FLY_API_TOKEN` as the
    /// user copied it (with or without its scheme). Plain HTTP is refused except to a
    /// loopback or `.internal` host, so a token never crosses the internet unencrypted.
    pub fn new(base_url: &str, token: &str, timeout: Duration) -> Result<Client, Error> {
        let base = crate::http::base_url(&FLY, Some(base_url))?;
        let authorization = authorization(token).ok_or_else(|| {
            Error::usage("FLY_API_TOKEN is empty")
                .hint("create a token with `fly tokens create deploy -a APP` and set FLY_API_TOKEN")
        })?;
        let api = Api::new(
            &FLY,
            base,
            &authorization,
            strip_scheme(token),
            "FLY_API_TOKEN",
            timeout,
            POLICY,
        )?;
        Ok(Client { api })
    }

    /// `GET /v1/apps/{app}/secrets`: the names (and digests) of the app's secrets.
    pub async fn list_secrets(&self, app: &str) -> Result<Answer<Vec<SecretInfo>>, Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Listing {
            Wrapped { secrets: Vec<SecretInfo> },
            Bare(Vec<SecretInfo>),
        }
        // Three attempts: the audit is a read-only check a user can simply run again.
        let reads = Policy {
            max_times: 2,
            ..self.api.policy
        };
        let reply = self
            .api
            .send_under(&Call::get(&["v1", "apps", app, "secrets"]), None, reads)
            .await?;
        let listing: Listing = serde_json::from_value(reply.body).map_err(|e| {
            let mut err = Error::failure(format!(
                "the Fly Machines API answered GET /v1/apps/{app}/secrets with JSON of an unexpected shape: {e}"
            ))
            .hint("check that FLY_API_URL points at the Machines API");
            err.request_id = reply.request_id.clone();
            err
        })?;
        Ok(Answer {
            body: match listing {
                Listing::Wrapped { secrets } | Listing::Bare(secrets) => secrets,
            },
            request_id: reply.request_id,
        })
    }

    /// Sends a call. 2xx answers and the call's `pass` statuses come back as a [`Reply`];
    /// any other answer is an error with Fly's message, code and `fly-request-id`.
    pub async fn call(&self, call: &Call) -> Result<Reply, Error> {
        Ok(self.api.send(call, None).await?)
    }

    /// As [`Client::call`], keeping what the HTTP layer knows of a failure (whether Fly may
    /// have executed it), for callers that decide themselves what to do next.
    pub async fn try_call(&self, call: &Call) -> Result<Reply, crate::http::Failure> {
        self.api.send(call, None).await
    }

    /// Fly's error text of an answer the caller handles itself.
    pub fn message(reply: &Reply) -> String {
        reply.message(&FLY)
    }
}

pub use crate::redact::strip_scheme;

/// The `Authorization` header for a token, following fly-go's rule: macaroons (parts whose
/// prefix before `_` is `fm1r`, `fm1a` or `fm2`) are sent as `FlyV1 m1,m2`; a token without
/// any is sent as `Bearer …`. `None` for an empty token.
pub fn authorization(token: &str) -> Option<String> {
    let parts: Vec<&str> = strip_scheme(token)
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return None;
    }
    let is_macaroon = |p: &&str| matches!(p.split('_').next(), Some("fm1r" | "fm1a" | "fm2"));
    let macaroons: Vec<&str> = parts.iter().copied().filter(is_macaroon).collect();
    Some(if macaroons.is_empty() {
        format!("Bearer {}", parts.join(","))
    } else {
        format!("FlyV1 {}", macaroons.join(","))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header_follows_fly_go() {
        assert_eq!(authorization("fm2_abc").unwrap(), "FlyV1 fm2_abc");
        assert_eq!(
            authorization("FlyV1 fm2_abc,fm2_def").unwrap(),
            "FlyV1 fm2_abc,fm2_def"
        );
        assert_eq!(authorization("  flyv1   fm1r_x ").unwrap(), "FlyV1 fm1r_x");
        assert_eq!(
            authorization("Bearer FlyV1 fm1a_y").unwrap(),
            "FlyV1 fm1a_y"
        );
        assert_eq!(
            authorization("oauth-user-token").unwrap(),
            "Bearer oauth-user-token"
        );
        assert_eq!(authorization("Bearer abc123").unwrap(), "Bearer abc123");
        // A user token next to macaroons is dropped, as fly-go's FlapsHeader does.
        assert_eq!(authorization("user1,fm2_m").unwrap(), "FlyV1 fm2_m");
        // `fm2x_` is not a macaroon prefix.
        assert_eq!(authorization("fm2x_abc").unwrap(), "Bearer fm2x_abc");
        assert_eq!(authorization("FlyV1 "), None);
        assert_eq!(authorization(""), None);
    }

    #[test]
    fn plain_http_only_to_local_hosts() {
        let t = Duration::from_secs(1);
        assert!(Client::new("http://127.0.0.1:9", "fm2_x", t).is_ok());
        assert!(Client::new("http://_api.internal:4280", "fm2_x", t).is_ok());
        assert!(Client::new("https://api.machines.dev", "fm2_x", t).is_ok());
        let e = Client::new("http://api.machines.dev", "fm2_x", t)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        let e = Client::new("https://api.machines.dev", " ", t)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept connections and hold them open without answering.
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let mut c = Client::new(
            &format!("http://{addr}"),
            "fm2_x",
            Duration::from_millis(200),
        )
        .unwrap();
        c.api.policy.min_delay = Duration::from_millis(10);
        let started = std::time::Instant::now();
        let e = c.list_secrets("app").await.unwrap_err();
        assert!(e.message.contains("timed out"), "{}", e.message);
        assert_eq!(e.exit_code(), 1);
        assert!(started.elapsed() < Duration::from_secs(5));
        hold.abort();
    }
}
