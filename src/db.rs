//! Database URLs and connections: validation before contact, redaction, and one dedicated
//! (never pooled) connection per run, so session state such as the migration lock is ours.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions, Connection};
use url::Url;

use crate::error::Error;

/// A validated PostgreSQL URL. Its `Display` never shows the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    url: Url,
    options: PgConnectOptions,
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl std::fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        shown.set_query(None);
        f.write_str(shown.as_str())
    }
}

impl DatabaseUrl {
    /// Checks a URL before anything is contacted: scheme, pooled Neon hosts, and
    /// plain-text access to a non-local host (all exit 2).
    pub fn parse(raw: &str) -> Result<DatabaseUrl, Error> {
        let url = Url::parse(raw).map_err(|e| {
            Error::usage(format!("DATABASE_URL is not a valid URL: {e}")).hint(
                "expected postgres://USER:PASSWORD@HOST:PORT/DATABASE; percent-encode special characters \
                 in the user and password (@ → %40, : → %3A, / → %2F, # → %23, ? → %3F, % → %25)",
            )
        })?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(Error::usage(format!(
                "DATABASE_URL has scheme `{}`; flightplan speaks PostgreSQL only",
                url.scheme()
            ))
            .hint("expected postgres://USER:PASSWORD@HOST:PORT/DATABASE"));
        }
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        if host
            .split('.')
            .next()
            .is_some_and(|label| label.ends_with("-pooler"))
        {
            return Err(Error::usage(format!(
                "DATABASE_URL points at a pooled Neon endpoint ({host})"
            ))
            .hint(format!(
                "use the direct URL for migrations (the host without `-pooler`: {}); the migration lock is \
                 a session lock and does not survive transaction pooling",
                host.replacen("-pooler", "", 1)
            )));
        }
        let local = host.is_empty()
            || host == "localhost"
            || host.starts_with("127.")
            || host == "[::1]"
            || host.starts_with('/');
        let sslmode = url
            .query_pairs()
            .find(|(k, _)| k == "sslmode")
            .map(|(_, v)| v.to_ascii_lowercase());
        let mut options = PgConnectOptions::from_str(raw)
            .map_err(|e| Error::usage(format!("DATABASE_URL is not usable: {e}")))?;
        match sslmode.as_deref() {
            Some("disable" | "allow") if !local => {
                return Err(Error::usage(format!(
                    "DATABASE_URL asks for sslmode={} to {host}, which would send credentials and data in plain text",
                    sslmode.unwrap_or_default()
                ))
                .hint("use sslmode=require (or verify-full); plain text is only accepted for localhost"));
            }
            // `prefer` silently falls back to plain text; for a remote host that is not a choice.
            None | Some("prefer") if !local => options = options.ssl_mode(PgSslMode::Require),
            _ => {}
        }
        let options = options
            .application_name("flightplan")
            .statement_cache_capacity(0)
            .log_statements(log::LevelFilter::Off)
            .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(3600));
        Ok(DatabaseUrl { url, options })
    }

    /// The same server and credentials, another database (scratch databases).
    pub fn with_database(&self, name: &str) -> DatabaseUrl {
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        DatabaseUrl {
            url,
            options: self.options.clone().database(name),
        }
    }

    /// The whole URL, password included: only for a child process's own settings (pg_dump
    /// takes it apart again), never for text.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    /// The database name, for messages.
    pub fn database(&self) -> &str {
        self.url.path().trim_start_matches('/')
    }

    /// Opens one connection within `budget`. A server that refuses connections or is still
    /// starting (a restarting database, a compute waking up) is retried with backoff until
    /// the budget runs out; any other failure (bad password, unknown database) is final.
    pub async fn connect(&self, budget: Duration) -> Result<PgConnection, Error> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(200);
        let mut last_note: Option<std::time::Instant> = None;
        loop {
            let left = budget.saturating_sub(started.elapsed());
            let attempt = PgConnection::connect_with(&self.options);
            let e = match tokio::time::timeout(left.max(Duration::from_millis(100)), attempt).await
            {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(Error::failure(format!(
                        "could not connect to {self} within {}s",
                        budget.as_secs()
                    ))
                    .hint("check the host and port, and that the database accepts connections from here"));
                }
            };
            let transient = match &e {
                sqlx::Error::Io(io) => matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                ),
                // 57P03: the database system is starting up; 53300: too many connections.
                _ => matches!(
                    e.as_database_error().and_then(|d| d.code()).as_deref(),
                    Some("57P03" | "53300")
                ),
            };
            if !transient || started.elapsed() + delay >= budget {
                let mut err = connect_error(self, &e);
                if transient {
                    err.message
                        .push_str(&format!(" (retried for {}s)", started.elapsed().as_secs()));
                }
                return Err(err);
            }
            if last_note.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                tracing::info!(
                    "{self} is not accepting connections yet ({e}); retrying for up to {}s",
                    budget.as_secs()
                );
                last_note = Some(std::time::Instant::now());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

fn connect_error(url: &DatabaseUrl, e: &sqlx::Error) -> Error {
    let mut err = Error::failure(format!("could not connect to {url}: {e}"));
    if let Some(db) = e.as_database_error() {
        if let Some(code) = db.code() {
            err = err.code(code.to_string());
        }
        err = err.hint(match db.code().as_deref() {
            Some("28P01" | "28000") => "check the user and password in DATABASE_URL",
            Some("3D000") => {
                "the database does not exist: create it, or fix the name in DATABASE_URL"
            }
            _ => "check DATABASE_URL",
        });
    } else {
        err = err.hint(
            "is the server running and reachable? (locally: scripts/with-postgres starts one)",
        );
    }
    err
}

/// Quotes an identifier, optionally schema-qualified (`schema.table`).
pub fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// Quotes a string literal (standard_conforming_strings is on on every supported server).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_hides_the_password() {
        let u =
            DatabaseUrl::parse("postgres://app:s3cr3t-canary@127.0.0.1:5432/db?sslmode=disable")
                .unwrap();
        assert_eq!(u.to_string(), "postgres://app:***@127.0.0.1:5432/db");
        assert!(!format!("{u:?}").contains("s3cr3t"));
    }

    #[test]
    fn pooled_neon_hosts_are_refused_with_the_direct_host() {
        let e = DatabaseUrl::parse(
            "postgres://u:p@ep-cool-name-123456-pooler.us-east-2.aws.neon.tech/db",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.hint
                .unwrap()
                .contains("ep-cool-name-123456.us-east-2.aws.neon.tech")
        );
    }

    #[test]
    fn plain_text_to_a_remote_host_is_refused() {
        assert!(DatabaseUrl::parse("postgres://u:p@db.example.org/db?sslmode=disable").is_err());
        assert!(DatabaseUrl::parse("postgres://u:p@127.0.0.1/db?sslmode=disable").is_ok());
        assert!(DatabaseUrl::parse("mysql://u:p@127.0.0.1/db").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(
            quote_ident("public._migrations"),
            "\"public\".\"_migrations\""
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
