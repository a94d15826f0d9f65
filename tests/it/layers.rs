//! The layers of src/, checked from the source: command line → commands → phases →
//! clients, no import cycle between top-level modules, and no phase that knows the command
//! line, the config file or the settings resolution.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names (`crate::x` or `use crate::{x, …}`).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "main" || module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may reach anywhere.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let deps = g.entry(module.clone()).or_default();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                let names: Vec<&str> = if let Some(inner) = rest.strip_prefix('{') {
                    let end = inner.find('}').unwrap_or(inner.len());
                    inner[..end]
                        .split(',')
                        .map(|p| p.trim().split("::").next().unwrap_or("").trim())
                        .collect()
                } else {
                    vec![
                        rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or(""),
                    ]
                };
                for n in names {
                    if !n.is_empty() && n != module && n.chars().next().unwrap().is_lowercase() {
                        deps.insert(n.to_string());
                    }
                }
            }
        }
    }
    g
}

const COMMAND_LINE: &[&str] = &["cli", "inputs"];
const RESOLUTION: &[&str] = &["config", "settings", "plan"];
const COMMANDS: &[&str] = &["commands", "pipeline", "rehearse"];
const PHASES: &[&str] = &[
    "preflight",
    "backup",
    "migrate",
    "deploy",
    "smoke",
    "report",
];
const CLIENTS: &[&str] = &["fly", "http"];

#[test]
fn no_phase_or_client_reaches_up_and_no_module_imports_itself_back() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        let forbidden: &[&[&str]] = if PHASES.contains(&m.as_str()) {
            &[COMMAND_LINE, RESOLUTION, COMMANDS]
        } else if CLIENTS.contains(&m.as_str()) {
            &[COMMAND_LINE, RESOLUTION, COMMANDS, PHASES]
        } else if RESOLUTION.contains(&m.as_str()) {
            &[COMMANDS]
        } else {
            &[]
        };
        for d in deps {
            if forbidden.iter().any(|layer| layer.contains(&d.as_str())) {
                wrong.push(format!("{m} imports {d}"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));

    // No cycle among top-level modules (depth-first search with colours).
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|p| *p == m).unwrap();
                let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(m, 1);
        path.push(m);
        for d in g.get(m).into_iter().flatten() {
            if g.contains_key(d.as_str())
                && let Some(c) = visit(d, g, state, path)
            {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m, 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut state, &mut Vec::new()) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}
