//! Secret masking: every secret value is registered once, announced to GitHub Actions with
//! `::add-mask::`, and scrubbed from any text, JSON document or error before it is printed.

use std::fmt;
use std::io::Write;

use serde_json::Value;

use crate::error::Error;
use crate::output::escape_data;

/// What replaces a secret in output.
pub const MASK: &str = "***";

/// Environment variables of flightplan's own contract (DESIGN.md) that hold credentials.
/// `DATABASE_URL` is here because its password is one.
pub const SERVICE_SECRETS: &[&str] = &[
    "DATABASE_URL",
    "FLY_API_TOKEN",
    "NEON_API_KEY",
    "GITHUB_TOKEN",
    "SMOKE_USER_PASSWORD",
    "FLY_METRICS_TOKEN",
];

/// Values shorter than this are not scrubbed from text: masking `on` or `42` everywhere
/// would garble every message, and such a value fails any length rule long before it
/// could matter. They are still announced to GitHub Actions, which masks them anyway.
const MIN_SCRUB_LEN: usize = 4;

/// A secret value. Its `Debug` and `Display` print the mask, so logging or formatting a
/// struct that holds one cannot leak it; `expose` is the one way to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Knows every secret value of a run and removes them from whatever is about to be printed.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    values: Vec<Secret>,
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// A redactor that knows the service credentials of DESIGN.md present in `env`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Redactor {
        let mut r = Redactor::new();
        for name in SERVICE_SECRETS {
            if let Some(v) = env(name) {
                r.add(&v);
            }
        }
        r
    }

    /// Registers a value, plus the parts of it that are secrets on their own: the password
    /// of a URL, and each comma-separated part and the scheme-less form of a Fly token.
    pub fn add(&mut self, value: &str) {
        let mut parts = vec![value.to_string(), value.trim().to_string()];
        parts.extend(url_password(value));
        let stripped = strip_scheme(value);
        if stripped != value.trim() {
            parts.push(stripped.to_string());
        }
        if stripped.contains(',') {
            parts.extend(stripped.split(',').map(|s| s.trim().to_string()));
        }
        self.insert(parts);
    }

    /// Registers only the password of a URL value (a non-secret `postgres://…` may hold one).
    pub fn add_url_password(&mut self, value: &str) {
        self.insert(url_password(value));
    }

    fn insert(&mut self, parts: Vec<String>) {
        for p in parts {
            if !p.is_empty() && !self.values.iter().any(|s| s.expose() == p) {
                self.values.push(Secret(p));
            }
        }
        self.values.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The text with every registered secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.values {
            if s.0.chars().count() >= MIN_SCRUB_LEN && out.contains(s.0.as_str()) {
                out = out.replace(s.0.as_str(), MASK);
            }
        }
        out
    }

    /// Scrubs every string (and object key) of a JSON document in place.
    pub fn scrub_json(&self, value: &mut Value) {
        match value {
            Value::String(s) => *s = self.scrub(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (k, mut v) in entries {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub(&k), v);
                }
            }
            _ => {}
        }
    }

    /// Scrubs every text field of an error.
    pub fn scrub_error(&self, e: &mut Error) {
        e.message = self.scrub(&e.message);
        for v in [&mut e.hint, &mut e.file, &mut e.code, &mut e.request_id]
            .into_iter()
            .flatten()
        {
            *v = self.scrub(v);
        }
    }

    /// The `::add-mask::` workflow commands for every value, one per line. A multi-line
    /// value is also masked line by line, since the runner matches masks within a line.
    pub fn mask_commands(&self) -> String {
        let mut out = String::new();
        let mut seen = Vec::new();
        for s in &self.values {
            let mut pieces = vec![s.0.as_str()];
            if s.0.contains('\n') {
                pieces.extend(s.0.lines().map(str::trim).filter(|l| !l.is_empty()));
            }
            for p in pieces {
                if !seen.contains(&p) {
                    seen.push(p);
                    out.push_str("::add-mask::");
                    out.push_str(&escape_data(p));
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Inside GitHub Actions, announces every secret to the runner on stderr; call this
    /// before anything else of the run is printed.
    pub fn announce(&self, gha: bool) {
        if gha && !self.values.is_empty() {
            let _ = std::io::stderr()
                .lock()
                .write_all(self.mask_commands().as_bytes());
        }
    }
}

/// A URL's password, as written and percent-decoded (output may show either form).
fn url_password(value: &str) -> Vec<String> {
    let Ok(url) = url::Url::parse(value.trim()) else {
        return Vec::new();
    };
    let Some(p) = url.password() else {
        return Vec::new();
    };
    let mut out = vec![p.to_string()];
    out.extend(percent_decode(p));
    out
}

/// `%XX` decoding of a URL component (the `url` crate leaves userinfo encoded).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The token without any leading `Bearer ` / `FlyV1 ` schemes (case-insensitive, repeated),
/// as fly-go's `StripAuthorizationScheme` does.
pub fn strip_scheme(token: &str) -> &str {
    let mut t = token.trim();
    while let Some((scheme, rest)) = t.split_once(' ') {
        let scheme = scheme.trim();
        if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("flyv1") {
            t = rest.trim();
        } else {
            break;
        }
    }
    // A scheme with nothing after it is no token at all.
    if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("flyv1") {
        return "";
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_values_and_their_parts() {
        let mut r = Redactor::new();
        r.add("postgres://app:s3cr%40t-pass@db.internal:5432/app");
        r.add("FlyV1 fm2_aaaa1111,fm2_bbbb2222");
        let text = "url=postgres://app:s3cr%40t-pass@db.internal:5432/app pw=s3cr@t-pass \
                    tok=fm2_bbbb2222 hdr=FlyV1 fm2_aaaa1111,fm2_bbbb2222";
        let out = r.scrub(text);
        assert!(!out.contains("s3cr"), "{out}");
        assert!(!out.contains("fm2_"), "{out}");
        assert!(out.contains("pw=***"), "{out}");
    }

    #[test]
    fn short_values_are_announced_but_not_scrubbed() {
        let mut r = Redactor::new();
        r.add("on");
        assert_eq!(r.scrub("turned on"), "turned on");
        assert_eq!(r.mask_commands(), "::add-mask::on\n");
    }

    #[test]
    fn json_and_errors_are_scrubbed() {
        let mut r = Redactor::new();
        r.add("hunter2-hunter2");
        let mut v = serde_json::json!({"a": ["x hunter2-hunter2 y"], "hunter2-hunter2": 1});
        r.scrub_json(&mut v);
        assert_eq!(v, serde_json::json!({"a": ["x *** y"], "***": 1}));
        let mut e = Error::failure("bad hunter2-hunter2").hint("not hunter2-hunter2");
        r.scrub_error(&mut e);
        assert_eq!(e.message, "bad ***");
        assert_eq!(e.hint.as_deref(), Some("not ***"));
    }

    #[test]
    fn masks_escape_and_split_multiline_values() {
        let mut r = Redactor::new();
        r.add("-----BEGIN KEY-----\nabc%def\n-----END KEY-----");
        let m = r.mask_commands();
        assert!(
            m.starts_with("::add-mask::-----BEGIN KEY-----%0Aabc%25def%0A"),
            "{m}"
        );
        assert!(m.contains("::add-mask::abc%25def\n"), "{m}");
    }

    #[test]
    fn secret_never_formats_its_value() {
        let s = Secret::new("value-123456");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "value-123456");
    }
}
