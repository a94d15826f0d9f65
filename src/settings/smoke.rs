//! `[smoke]`, `[watch]`, `--url`, `--watch` and the app URL → `smoke::Settings`, with every
//! `${VAR}` substituted and every credential registered as a secret.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use url::Url;

use super::{Sources, flag_duration};
use crate::cli::SmokeArgs;
use crate::db::DatabaseUrl;
use crate::error::Error;
use crate::http::{Api, Policy};
use crate::redact::{Redactor, Secret};
use crate::smoke::metrics::{self, Budgets, MetricsSettings};
use crate::smoke::{
    self, Check, DEFAULT_MAX_ERROR_RATE, DEFAULT_P95_MS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TIMEOUT,
    Kind, ReqBody, WatchSettings, file,
};

impl Sources<'_> {
    /// The smoke settings: the app URL from `--url`, `APP_URL`, then `app_url`; the watch
    /// window from `--watch`, then `[watch] duration`. Missing variables are exit 2.
    pub fn smoke(&self, a: &SmokeArgs) -> Result<smoke::Settings, Error> {
        let base = self.app_url(a.url.as_deref())?.ok_or_else(|| {
            Error::usage("no app URL to smoke-test").hint(
                "pass --url https://APP.fly.dev, set APP_URL, or set app_url in flightplan.toml (`run` only: [smoke] enabled = false deploys untested, said so in the log)",
            )
        })?;
        let watch = match flag_duration(a.watch.as_deref(), "--watch")? {
            Some(w) => Some(w),
            None => self.loaded.file.watch.duration,
        };
        self.smoke_settings(base, watch)
    }

    /// `[smoke] enabled = false`: the config says to deploy without smoke tests.
    pub fn smoke_disabled(&self) -> bool {
        self.loaded.file.smoke.enabled == Some(false)
    }

    /// Builds the checks from the file for `base`, and the watch window of `watch`.
    fn smoke_settings(&self, base: Url, watch: Option<Duration>) -> Result<smoke::Settings, Error> {
        let loaded = self.loaded;
        let f = &loaded.file.smoke;
        let mut redactor = Redactor::from_env(&|k| self.var(k));
        if let Some(p) = base.password() {
            redactor.add(p);
        }
        for name in self.contract_secrets().iter().chain(&f.secrets) {
            if let Some(v) = self.var(name) {
                redactor.add(&v);
            }
        }
        let timeout = f.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let mut vars = Vars {
            src: self,
            used: Vec::new(),
        };

        let login = match &f.login {
            None => None,
            Some(l) => Some(vars.login(
                &base,
                l,
                ("SMOKE_USER_EMAIL", "SMOKE_USER_PASSWORD"),
                "[smoke.login]",
                timeout,
                &mut redactor,
            )?),
        };
        let mut identities = Vec::new();
        for (i, id) in f.identities.iter().enumerate() {
            let at = format!("[[smoke.identity]] #{} `{}`", i + 1, id.name);
            let login = vars.login(
                &base,
                &id.login,
                (&id.email_var, &id.password_var),
                &at,
                timeout,
                &mut redactor,
            )?;
            let mut checks = Vec::new();
            for (j, c) in id.checks.iter().enumerate() {
                let what = |key: &str| format!("{at} check #{} {key}", j + 1);
                checks.push(vars.check(&base, c, timeout, &what)?);
            }
            identities.push(smoke::Identity {
                name: id.name.clone(),
                login,
                checks,
            });
        }

        let mut checks = Vec::new();
        for (i, c) in f.checks.iter().enumerate() {
            let what = |key: &str| format!("[[smoke.check]] #{} {key}", i + 1);
            checks.push(vars.check(&base, c, timeout, &what)?);
        }
        if checks.is_empty() {
            checks.push(smoke::default_health(&base, timeout)?);
        }
        // A value that went into a request (a token in a header, say) is treated as a secret.
        for v in &vars.used {
            redactor.add(v);
        }

        let w = &loaded.file.watch;
        let watch = watch.filter(|d| !d.is_zero());
        let metrics = match watch {
            Some(_) if w.metrics != Some(false) => Some(self.watch_metrics(&mut redactor)?),
            _ => None,
        };
        let watch = watch.map(|duration| WatchSettings {
            metrics,
            duration,
            p95_budget: Duration::from_millis(w.p95_ms.unwrap_or(DEFAULT_P95_MS)),
            max_error_rate: w.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE),
            poll: w.poll.unwrap_or(Duration::from_secs(1)),
            // About ten lines per window, at least a second and at most a minute apart;
            // a configured interval is taken as is, short of a flood.
            interval: w
                .interval
                .unwrap_or_else(|| {
                    (duration / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
                })
                .max(Duration::from_millis(100)),
        });

        Ok(smoke::Settings {
            base,
            login,
            checks,
            identities,
            request_timeout: f.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            backoff: Duration::from_millis(250),
            watch,
            redactor,
            gha: self.gha(),
        })
    }
}

impl Sources<'_> {
    /// Fly's metrics API for the watch: the app, the org, the read-only token (a secret),
    /// the database whose connections are counted, and the budgets.
    fn watch_metrics(&self, redactor: &mut Redactor) -> Result<MetricsSettings, Error> {
        let w = &self.loaded.file.watch;
        let off = "or set [watch] metrics = false to judge the watch by its probes only";
        let app = self.fly_app().ok_or_else(|| {
            Error::usage("the watch reads the app's production metrics, but no Fly app is named")
                .hint(format!("set FLY_APP or `app` in flightplan.toml, {off}"))
        })?;
        let org = self
            .var("FLY_ORG")
            .or_else(|| w.org.clone())
            .map(|o| o.trim().to_string())
            .filter(|o| !o.is_empty())
            .ok_or_else(|| {
                Error::usage("the watch reads Fly's metrics API, whose path names the org, and no org is set")
                    .file(self.loaded.describe("[watch] org"))
                    .hint(format!(
                        "set [watch] org (or FLY_ORG) to the org slug (`fly orgs list`; `personal` for a personal org), {off}"
                    ))
            })?;
        let token = self.var("FLY_METRICS_TOKEN").ok_or_else(|| {
            Error::usage("the watch reads Fly's metrics API, and FLY_METRICS_TOKEN is not set")
                .hint(format!(
                    "make a read-only org token with `fly tokens create readonly -o {org}` (a deploy token is refused)                      and store it as the FLY_METRICS_TOKEN secret, {off}"
                ))
        })?;
        redactor.add(&token);
        let mut base = crate::http::base_url(
            &metrics::FLY_METRICS,
            self.var("FLY_METRICS_URL").as_deref(),
        )?;
        if let Ok(mut p) = base.path_segments_mut() {
            p.pop_if_empty().push(&org);
        }
        let auth = metrics::authorization(&token);
        let api = Api::new(
            &metrics::FLY_METRICS,
            base,
            &auth,
            crate::redact::strip_scheme(&token),
            "FLY_METRICS_TOKEN",
            Duration::from_secs(10),
            Policy::new(Duration::from_millis(200), Duration::from_secs(2), 2),
        )?;
        let database = match self.var("DATABASE_URL") {
            Some(u) => Some(DatabaseUrl::parse(u.trim())?),
            None => None,
        };
        Ok(MetricsSettings {
            api,
            org,
            app,
            database,
            budgets: Budgets {
                p95_ms: w.p95_ms.unwrap_or(DEFAULT_P95_MS),
                max_error_rate: w.max_error_rate.unwrap_or(DEFAULT_MAX_ERROR_RATE),
                max_memory: w.max_memory.unwrap_or(smoke::DEFAULT_MAX_MEMORY),
                max_cpu: w.max_cpu.unwrap_or(smoke::DEFAULT_MAX_CPU),
                max_db_connections: w
                    .max_db_connections
                    .unwrap_or(smoke::DEFAULT_MAX_DB_CONNECTIONS),
                min_requests: w.min_requests.unwrap_or(smoke::DEFAULT_MIN_REQUESTS),
            },
        })
    }
}

/// `${VAR}` substitution from the sources, remembering every value used.
struct Vars<'a, 'b> {
    src: &'a Sources<'b>,
    used: Vec<String>,
}

impl Vars<'_, '_> {
    /// A login flow with the credentials of `vars` (email, password), both made secrets.
    fn login(
        &mut self,
        base: &Url,
        l: &file::LoginFile,
        vars: (&str, &str),
        at: &str,
        timeout: Duration,
        redactor: &mut Redactor,
    ) -> Result<Check, Error> {
        let loaded = self.src.loaded;
        let what = |key: &str| format!("{at} {key}");
        let cred = |name: &str| {
            self.src.var(name).ok_or_else(|| {
                Error::usage(format!("{at} is configured but {name} is not set"))
                    .file(loaded.describe(at))
                    .hint(format!(
                        "set {} and {} to a dedicated smoke-test user (as repository secrets in CI), or remove {at}",
                        vars.0, vars.1
                    ))
            })
        };
        let email = Secret::new(cred(vars.0)?);
        let password = Secret::new(cred(vars.1)?);
        // The email identifies a real account; it is masked like the password.
        redactor.add(email.expose());
        redactor.add(password.expose());
        let body = if l.form {
            ReqBody::Form(vec![
                (l.email_field.clone(), email.expose().to_string()),
                (l.password_field.clone(), password.expose().to_string()),
            ])
        } else {
            let mut m = serde_json::Map::new();
            m.insert(l.email_field.clone(), json!(email.expose()));
            m.insert(l.password_field.clone(), json!(password.expose()));
            ReqBody::Json(Value::Object(m))
        };
        Ok(Check {
            name: l.name.clone(),
            kind: Kind::Login {
                accept: l.accept,
                mfa_field: l.mfa_field.clone(),
            },
            method: smoke::method(&l.method),
            url: smoke::join(base, &self.expand(&l.path, &what("path"))?, &l.path)
                .map_err(|e| e.file(loaded.describe(&what("path"))))?,
            path: l.path.clone(),
            headers: self.headers(&l.headers, &what("headers"))?,
            body,
            expect_status: l.expect_status.clone(),
            expect_json: Vec::new(),
            expect_body_contains: Vec::new(),
            max_latency: l.max_latency_ms.map(Duration::from_millis),
            timeout: l.timeout.unwrap_or(timeout),
        })
    }

    /// One `[[smoke.check]]` (or an identity's check), substituted and joined to `base`.
    fn check(
        &mut self,
        base: &Url,
        c: &file::CheckFile,
        timeout: Duration,
        what: &dyn Fn(&str) -> String,
    ) -> Result<Check, Error> {
        let loaded = self.src.loaded;
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("{} {}", c.method, c.path));
        let body = match &c.body {
            file::Body::None => ReqBody::None,
            file::Body::Json(v) => ReqBody::Json(self.expand_json(v, &what("json"))?),
            file::Body::Form(m) => ReqBody::Form(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), self.expand(v, &what("form"))?)))
                    .collect::<Result<_, Error>>()?,
            ),
        };
        Ok(Check {
            kind: Kind::Check,
            method: smoke::method(&c.method),
            url: smoke::join(base, &self.expand(&c.path, &what("path"))?, &c.path)
                .map_err(|e| e.file(loaded.describe(&what("path"))))?,
            path: c.path.clone(),
            headers: self.headers(&c.headers, &what("headers"))?,
            body,
            expect_status: c.expect_status.clone(),
            expect_json: c
                .expect_json
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            expect_body_contains: c.expect_body_contains.clone(),
            max_latency: c.max_latency_ms.map(Duration::from_millis),
            timeout: c.timeout.unwrap_or(timeout),
            name,
        })
    }

    fn expand(&mut self, s: &str, what: &str) -> Result<String, Error> {
        let describe = |w: &str| self.src.loaded.describe(w);
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                return Err(
                    Error::usage(format!("{what}: `${{` without a closing `}}`"))
                        .file(describe(what)),
                );
            };
            let name = &after[..end];
            if !file::is_var_name(name) {
                return Err(
                    Error::usage(format!("{what}: `${{{name}}}` is not a variable name"))
                        .file(describe(what))
                        .hint("use ${NAME} with letters, digits and underscores"),
                );
            }
            let value = self.src.var(name).ok_or_else(|| {
                Error::usage(format!("{what} uses ${{{name}}}, which is not set"))
                    .file(describe(what))
                    .hint(format!("set {name} in the environment of flightplan smoke"))
            })?;
            out.push_str(&value);
            self.used.push(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn expand_json(&mut self, v: &Value, what: &str) -> Result<Value, Error> {
        Ok(match v {
            Value::String(s) => Value::String(self.expand(s, what)?),
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.expand_json(x, what))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), self.expand_json(x, what)?)))
                    .collect::<Result<_, Error>>()?,
            ),
            other => other.clone(),
        })
    }

    fn headers(
        &mut self,
        h: &indexmap::IndexMap<String, String>,
        what: &str,
    ) -> Result<HeaderMap, Error> {
        let mut map = HeaderMap::new();
        for (k, v) in h {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                Error::usage(format!("{what}: `{k}` is not a header name"))
                    .file(self.src.loaded.describe(what))
            })?;
            let sensitive = v.contains("${");
            let mut value = HeaderValue::from_str(&self.expand(v, what)?).map_err(|_| {
                Error::usage(format!(
                    "{what}: the value of `{k}` is not a valid header value"
                ))
                .file(self.src.loaded.describe(what))
            })?;
            value.set_sensitive(sensitive);
            map.append(name, value);
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loaded;
    use serde_json::json;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn loaded(text: &str) -> Result<Loaded, Error> {
        Ok(Loaded {
            path: Some("flightplan.toml".into()),
            file: crate::config::parse(text, std::path::Path::new("flightplan.toml"))?,
        })
    }

    fn base() -> Url {
        smoke::parse_base("http://127.0.0.1:3000", "--url").unwrap()
    }

    #[test]
    fn default_is_the_runbook_health_check() {
        let l = loaded("").unwrap();
        let s = Sources::new(&l, &env_of(&[]))
            .smoke_settings(base(), None)
            .unwrap();
        assert!(s.login.is_none());
        assert_eq!(s.checks.len(), 1);
        assert_eq!(s.checks[0].url.as_str(), "http://127.0.0.1:3000/api/health");
        assert_eq!(
            s.checks[0].expect_json,
            vec![("status".into(), json!("ok"))]
        );
        assert_eq!(s.checks[0].timeout, DEFAULT_TIMEOUT);
        assert!(s.watch.is_none());
    }

    #[test]
    fn checks_are_substituted_and_their_values_masked() {
        let l = loaded(
            r#"
[smoke]
timeout = "30s"
[[smoke.check]]
name = "orders"
method = "post"
path = "/api/orgs/${ORG}/orders"
headers = { Authorization = "Bearer ${API_TOKEN}" }
json = { note = "from ${ORG}", n = 1 }
expect_status = 201
expect_json = { "data.id" = 7 }
expect_body_contains = "created"
"#,
        )
        .unwrap();
        let env = env_of(&[("ORG", "acme-corp"), ("API_TOKEN", "tok-123456789")]);
        let s = Sources::new(&l, &env).smoke_settings(base(), None).unwrap();
        let c = &s.checks[0];
        assert_eq!(c.method, reqwest::Method::POST);
        assert_eq!(c.url.path(), "/api/orgs/acme-corp/orders");
        assert_eq!(c.path, "/api/orgs/${ORG}/orders");
        assert_eq!(c.expect_status, Some(vec![201]));
        assert_eq!(c.timeout, Duration::from_secs(30));
        assert!(c.headers["authorization"].is_sensitive());
        let ReqBody::Json(b) = &c.body else { panic!() };
        assert_eq!(b, &json!({"note": "from acme-corp", "n": 1}));
        assert_eq!(s.redactor.scrub("Bearer tok-123456789"), "Bearer ***");
    }

    #[test]
    fn configured_secrets_are_masked() {
        let l = loaded(
            "[env.SESSION_SECRET]\nsecret = true\n[env.NODE_ENV]\nequals = \"production\"\n\
             [smoke]\nsecrets = [\"EXTRA\"]\n",
        )
        .unwrap();
        let env = env_of(&[
            ("SESSION_SECRET", "session-secret-value"),
            ("NODE_ENV", "production"),
            ("EXTRA", "extra-secret-value"),
            ("SMOKE_USER_PASSWORD", "smoke-password"),
        ]);
        let s = Sources::new(&l, &env).smoke_settings(base(), None).unwrap();
        assert_eq!(
            s.redactor
                .scrub("session-secret-value extra-secret-value smoke-password production"),
            "*** *** *** production"
        );
    }

    #[test]
    fn missing_variables_and_credentials_are_usage_errors() {
        let l = loaded("[[smoke.check]]\npath = \"/x\"\nheaders = { X = \"${NOPE}\" }\n").unwrap();
        let e = Sources::new(&l, &env_of(&[]))
            .smoke_settings(base(), None)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("${NOPE}"), "{}", e.message);

        let l = loaded("[smoke.login]\npath = \"/api/login\"\n").unwrap();
        let e = Sources::new(&l, &env_of(&[("SMOKE_USER_EMAIL", "a@b.c")]))
            .smoke_settings(base(), None)
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("SMOKE_USER_PASSWORD"), "{}", e.message);
    }

    #[test]
    fn file_mistakes_have_a_line() {
        for (text, needle, line) in [
            ("[smoke]\ntimeout = \"2 fortnights\"\n", "unknown unit", 2),
            (
                "[[smoke.check]]\npath = \"/x\"\nexpect_stat = 200\n",
                "expect_stat",
                3,
            ),
            ("[smoke.login]\naccept = \"maybe\"\n", "maybe", 2),
            ("[watch]\nmax_error_rate = 5\n", "fraction", 2),
            ("[[smoke.check]]\npath = \"x\"\n", "must start with", 1),
            (
                "\n[[smoke.check]]\npath = \"/x\"\nmethod = \"FETCH\"\n",
                "FETCH",
                2,
            ),
        ] {
            let e = loaded(text)
                .err()
                .unwrap_or_else(|| panic!("accepted: {text}"));
            assert_eq!(e.exit_code(), 2);
            assert!(e.message.contains(needle), "{text}: {}", e.message);
            assert_eq!(e.line, Some(line), "{text}: {}", e.message);
        }
    }
}
