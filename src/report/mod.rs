//! Phase 7, the report: the deployment log and every place it is written (JSON file, job
//! summary, sticky PR comment, GitHub Deployment, step outputs), and `report --log FILE`.

pub mod actions;
pub mod github;
pub mod log;
pub mod markdown;
pub mod rehearsal;

use std::path::Path;

use crate::error::Error;
use crate::output::Outcome;
pub use log::DeploymentLog;

/// Reads a saved log (from `run`, `rollback`, or an artifact).
pub fn load(path: &Path) -> Result<DeploymentLog, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::usage(format!(
            "cannot read deployment log {}: {e}",
            path.display()
        ))
        .hint("pass the JSON log written by `flightplan run` (default flightplan-log.json)")
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::usage(format!(
            "{} is not a flightplan deployment log: {e}",
            path.display()
        ))
        .file(path.display().to_string())
        .line(e.line() as u32)
        .column(e.column() as u32)
    })
}

/// `report --log FILE`: the saved log as the job summary's Markdown, on stdout.
pub fn render(path: &Path) -> Result<Outcome, Error> {
    let log = load(path)?;
    let md = markdown::summary(&log);
    let mut json = serde_json::Map::new();
    json.insert("markdown".into(), serde_json::Value::String(md.clone()));
    json.insert(
        "status".into(),
        serde_json::to_value(log.status).unwrap_or_default(),
    );
    Ok(Outcome::new(true, json, md))
}
