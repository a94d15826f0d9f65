//! Placeholder detection: values copied from a sample (`your-…`, `changeme`, `<…>`, the
//! runbook's own examples), hosts reserved for examples, and low-entropy repeats.

/// Built-in patterns, matched against the whole value, ignoring case; `*` matches any run
/// of characters. docs/check-env.md lists them; `[env] placeholders` adds more.
pub const BUILTIN: &[&str] = &[
    // "your-mailgun-key", "your_api_key", "mail.yourdomain.com", "YOUR_TOKEN_HERE"
    "your-*",
    "your_*",
    "*yourdomain*",
    "*your-domain*",
    "*_here",
    "*-here",
    // change me / replace me / fill me in
    "*changeme*",
    "*change-me*",
    "*change_me*",
    "*replaceme*",
    "*replace-me*",
    "*replace_me*",
    "*fillme*",
    "*fill-me-in*",
    // masked or elided sample values
    "xxx*",
    "*xxxxxx*",
    "<*>",
    "{{*}}",
    "${*}",
    "*...",
    "*…*",
    // words that are never a real value
    "todo",
    "todo:*",
    "todo *",
    "tbd",
    "fixme",
    "*placeholder*",
    "dummy",
    "sample",
    "example",
    "test",
    "secret",
    "password",
    "none",
    "null",
    "nil",
    "undefined",
    "default",
    // the runbook's own samples (production-deployment-plan.md, phase 3)
    "your-secure-32-char-secret",
    "your-secure-webhook-secret",
    "your-64-char-encryption-key",
    "https://hooks.zapier.com/hooks/catch/...",
];

/// Domains reserved for documentation (RFC 2606, RFC 6761): a URL, e-mail address or host
/// name in one of them was never filled in.
const RESERVED_DOMAINS: &[&str] = &["example.com", "example.net", "example.org"];
const RESERVED_TLDS: &[&str] = &["example", "test", "invalid"];

/// The placeholder rules of one contract.
#[derive(Debug, Clone)]
pub struct Detector {
    extra: Vec<String>,
}

impl Detector {
    pub fn new(extra: &[String]) -> Detector {
        Detector {
            extra: extra.to_vec(),
        }
    }

    /// Why `value` looks like a placeholder, or `None`. For a secret the reason never
    /// quotes a pattern, which could spell out the value or its first characters.
    pub fn detect(&self, value: &str, secret: bool) -> Option<String> {
        let v = value.trim();
        let patterns = BUILTIN.iter().map(|p| (*p, None)).chain(
            self.extra
                .iter()
                .enumerate()
                .map(|(i, p)| (p.as_str(), Some(i))),
        );
        for (pattern, extra) in patterns {
            if glob_match(pattern, v) {
                return Some(match (secret, extra) {
                    (false, _) => format!("looks like a placeholder (matches `{pattern}`)"),
                    (true, None) => {
                        "looks like a placeholder (matches a built-in placeholder pattern)".into()
                    }
                    (true, Some(i)) => format!(
                        "looks like a placeholder (matches pattern #{} of [env] placeholders)",
                        i + 1
                    ),
                });
            }
        }
        if let Some(host) = host_of(v)
            && is_reserved(&host)
        {
            return Some(format!(
                "looks like a placeholder (the domain {} is reserved for examples)",
                reserved_suffix(&host)
            ));
        }
        if let Some(unit) = repeated_unit(v) {
            return Some(format!(
                "looks like a placeholder ({} characters repeating a {unit}-character pattern)",
                v.chars().count()
            ));
        }
        let len = v.chars().count();
        if secret && len >= 16 {
            let mut distinct: Vec<char> = v.chars().collect();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() < 5 {
                return Some(format!(
                    "looks like a placeholder (only {} distinct characters in {len})",
                    distinct.len()
                ));
            }
        }
        None
    }
}

/// Whole-value match, ignoring case, with `*` for any run of characters.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    // The classic two-pointer wildcard match, backtracking to the last `*`.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The host a value names: a URL's host, an e-mail address's domain, or the value itself
/// when it is a bare host name.
fn host_of(v: &str) -> Option<String> {
    if v.contains("://") {
        return url::Url::parse(v)
            .ok()?
            .host_str()
            .map(|h| h.trim_end_matches('.').to_lowercase());
    }
    let candidate = match v.rsplit_once('@') {
        Some((_, domain)) => domain.trim_end_matches('>'),
        None => v,
    };
    let is_host = candidate.contains('.')
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    is_host.then(|| candidate.trim_end_matches('.').to_lowercase())
}

fn is_reserved(host: &str) -> bool {
    RESERVED_DOMAINS
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")))
        || RESERVED_TLDS
            .iter()
            .any(|t| host.ends_with(&format!(".{t}")))
}

fn reserved_suffix(host: &str) -> String {
    RESERVED_DOMAINS
        .iter()
        .find(|d| host == **d || host.ends_with(&format!(".{d}")))
        .map(|d| d.to_string())
        .or_else(|| host.rsplit('.').next().map(|t| format!(".{t}")))
        .unwrap_or_default()
}

/// The length of the unit when the value is 6+ characters of one 1–4 character unit
/// repeated (`aaaaaa`, `abcabc`, `12341234`, `********`).
fn repeated_unit(v: &str) -> Option<usize> {
    let chars: Vec<char> = v.chars().collect();
    if chars.len() < 6 {
        return None;
    }
    (1..=4).find(|&u| chars.len() % u == 0 && chars.chunks(u).all(|c| c == &chars[..u]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Detector {
        Detector::new(&["acme-dev-*".to_string()])
    }

    #[test]
    fn globs() {
        assert!(glob_match("your-*", "YOUR-mailgun-key"));
        assert!(glob_match("*changeme*", "pls-CHANGEME-now"));
        assert!(glob_match("<*>", "<token>"));
        assert!(glob_match(
            "*...",
            "https://hooks.zapier.com/hooks/catch/..."
        ));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(!glob_match("todo", "mastodon"));
        assert!(!glob_match("your-*", "my-your-key"));
    }

    #[test]
    fn runbook_samples_are_placeholders() {
        for v in [
            "your-secure-32-char-secret",
            "your-mailgun-key",
            "mail.yourdomain.com",
            "noreply@mail.yourdomain.com",
            "admin@yourdomain.com",
            "your-iris-key",
            "your-subdomain",
            "your-docuseal-key",
            "https://hooks.zapier.com/hooks/catch/...",
            "your-secure-webhook-secret",
            "your-openai-key",
            "your-64-char-encryption-key",
        ] {
            assert!(d().detect(v, true).is_some(), "{v}");
        }
    }

    #[test]
    fn other_placeholders() {
        for v in [
            "changeme",
            "CHANGE_ME_PLEASE",
            "xxxxxxxxxxxx",
            "<your token>",
            "TODO",
            "${SESSION_SECRET}",
            "https://app.example.com/x",
            "ops@example.org",
            "mg.example.net",
            "https://staging.test",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abcabcabcabc",
            "acme-dev-123",
            "API_KEY_HERE",
        ] {
            assert!(d().detect(v, false).is_some(), "{v}");
        }
        // Too few distinct characters, for secrets only.
        assert!(d().detect("0000000000000000000000000001", true).is_some());
        assert!(d().detect("0000000000000000000000000001", false).is_none());
    }

    #[test]
    fn real_looking_values_pass() {
        for v in [
            "production",
            "3000",
            "true",
            "https://secure2send.fly.dev",
            "postgres://app:Zq8rT1vLx@ep-cool-darkness-123456.us-east-2.aws.neon.tech/secure2send",
            "noreply@mg.secure2send.io",
            "mastodon",
            "9f2c41d87be04a5f8c3d6e1a2b7f90c4",
            "https://hooks.zapier.com/hooks/catch/18273645/3kd9s2x/",
        ] {
            assert_eq!(d().detect(v, true), None, "{v}");
        }
    }

    #[test]
    fn secret_reasons_quote_no_pattern() {
        let why = d().detect("your-secure-32-char-secret", true).unwrap();
        assert!(!why.contains("your"), "{why}");
        let why = d().detect("acme-dev-123", true).unwrap();
        assert!(why.contains("#1"), "{why}");
        let why = d().detect("your-x", false).unwrap();
        assert!(why.contains("`your-*`"), "{why}");
    }
}
