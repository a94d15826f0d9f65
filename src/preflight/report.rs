//! The check-env report: a table for people (variable, rule, status, reason) and the
//! JSON fields (`checks`, `summary`); pure functions of the checks.

use serde_json::{Map, Value, json};

use super::rules::{Check, Scope, Status};

pub struct Summary {
    pub ok: usize,
    pub warnings: usize,
    pub failed: Vec<String>,
}

pub fn summarize(checks: &[Check]) -> Summary {
    let mut s = Summary {
        ok: 0,
        warnings: 0,
        failed: Vec::new(),
    };
    for c in checks {
        match c.status {
            Status::Ok => s.ok += 1,
            Status::Warning => s.warnings += 1,
            _ => {
                let name = match c.scope {
                    Scope::Env => c.name.clone(),
                    Scope::Fly => format!("{} (Fly)", c.name),
                };
                s.failed.push(name);
            }
        }
    }
    s
}

fn status_cell(s: Status) -> &'static str {
    match s {
        Status::Ok => "✓",
        Status::Missing => "✗ missing",
        Status::Invalid => "✗ invalid",
        Status::Placeholder => "✗ placeholder",
        Status::Warning => "warning",
    }
}

/// The table, one row per check, then a one-line summary. `context` lines come first.
pub fn text(checks: &[Check], context: &[String]) -> String {
    let mut out = String::new();
    for line in context {
        out.push_str(line);
        out.push('\n');
    }
    let rows: Vec<[String; 4]> = checks
        .iter()
        .map(|c| {
            // The header names the env file; its directory would only widen every row.
            let src = c
                .source
                .as_deref()
                .map(|s| s.rsplit('/').next().unwrap_or(s));
            let reason = match src {
                Some(src) if c.status == Status::Ok => format!("{} ({src})", c.message),
                Some(src) => format!("{} [{src}]", c.message),
                None => c.message.clone(),
            };
            [
                c.name.clone(),
                c.rule.clone(),
                status_cell(c.status).to_string(),
                reason,
            ]
        })
        .collect();
    let header = [
        "VARIABLE".to_string(),
        "RULE".into(),
        "STATUS".into(),
        "REASON".into(),
    ];
    let mut widths = [0usize; 3];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |row: &[String; 4]| {
        let mut l = String::new();
        for (cell, w) in row.iter().zip(widths) {
            l.push_str(cell);
            l.push_str(&" ".repeat(w - cell.chars().count() + 2));
        }
        l.push_str(&row[3]);
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(row);
    }
    let s = summarize(checks);
    out.push('\n');
    out.push_str(&format!(
        "check-env: {} checks, {} ok, {} warning(s), {} failed",
        checks.len(),
        s.ok,
        s.warnings,
        s.failed.len()
    ));
    if !s.failed.is_empty() {
        out.push_str(&format!(": {}", s.failed.join(", ")));
    }
    out.push('\n');
    out
}

/// The JSON fields besides `ok`: every check and the counts.
pub fn json(checks: &[Check]) -> Map<String, Value> {
    let s = summarize(checks);
    let mut m = Map::new();
    m.insert(
        "checks".into(),
        serde_json::to_value(checks).unwrap_or(Value::Array(Vec::new())),
    );
    m.insert(
        "summary".into(),
        json!({
            "total": checks.len(),
            "ok": s.ok,
            "warnings": s.warnings,
            "failed": s.failed.len(),
            "failed_names": s.failed,
        }),
    );
    m
}
