//! Phase 1 of the pipeline, `check-env`: the app's environment contract (`[env]`) checked
//! against the process environment and an env file, and optionally the Fly app's secrets.

pub mod contract;
pub mod dotenv;
pub mod placeholder;
pub mod report;
pub mod rules;

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::error::Error;
use crate::fly;
use crate::output::Outcome;
use crate::redact::Redactor;

pub use self::contract::Contract;
use self::dotenv::EnvFile;
use self::placeholder::Detector;
use self::rules::Check;

/// The Fly app whose secrets `--fly` audits, and the client that asks.
pub struct FlyAudit {
    pub app: String,
    pub client: fly::Client,
}

/// What the check found: every rule's result, where the values came from, and the Fly
/// audit's answer.
pub struct Checked {
    pub checks: Vec<Check>,
    pub context: Vec<String>,
    pub contract_path: String,
    pub env_file: Option<String>,
    /// The Fly audit: the app, how many secrets it has, and the request id.
    pub fly: Option<FlyResult>,
    /// The audit could not ask Fly (the checks above still ran).
    pub error: Option<Error>,
    pub redactor: Redactor,
}

pub struct FlyResult {
    pub app: String,
    pub secrets: Option<usize>,
    pub request_id: Option<String>,
}

impl Checked {
    /// Every error-level rule passed and the audit (when asked for) ran.
    pub fn ok(&self) -> bool {
        !self.checks.iter().any(Check::is_failure) && self.error.is_none()
    }

    /// "environment check failed: SESSION_SECRET (too short), …".
    pub fn failure_message(&self) -> String {
        let bad: Vec<String> = self
            .checks
            .iter()
            .filter(|c| c.is_failure())
            .map(|c| format!("{} ({})", c.name, c.message))
            .collect();
        self.redactor
            .scrub(&format!("environment check failed: {}", bad.join(", ")))
    }

    /// The command's result: the table for people, the JSON fields, scrubbed.
    pub fn to_outcome(&self) -> Outcome {
        let mut json_fields = report::json(&self.checks);
        json_fields.insert("contract".into(), json!(self.contract_path));
        json_fields.insert("env_file".into(), json!(self.env_file));
        json_fields.insert(
            "fly".into(),
            match &self.fly {
                None => Value::Null,
                Some(f) => match &self.error {
                    Some(e) => json!({ "app": f.app, "error": e.message }),
                    None => {
                        json!({ "app": f.app, "secrets": f.secrets, "request_id": f.request_id })
                    }
                },
            },
        );
        let mut doc = Value::Object(json_fields);
        self.redactor.scrub_json(&mut doc);
        let Value::Object(json_fields) = doc else {
            unreachable!("scrub_json keeps the shape")
        };
        let text = self
            .redactor
            .scrub(&report::text(&self.checks, &self.context));
        let mut outcome = Outcome::new(self.ok(), json_fields, text);
        if let Some(e) = &self.error {
            let mut e = e.clone();
            self.redactor.scrub_error(&mut e);
            outcome.error = Some(e);
        }
        outcome
    }
}

/// Checks the contract against `env` (the process environment) and the env file, and
/// audits the Fly app's secrets when asked. Values are never printed: each secret is
/// masked (announced inside Actions) before anything else is.
pub async fn check(
    contract: &Contract,
    contract_path: &str,
    fly_audit: Option<&FlyAudit>,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&EnvFile>,
    mut redactor: Redactor,
    gha: bool,
) -> Checked {
    let detector = Detector::new(&contract.placeholders);
    let values = rules::resolve(contract, env, file);
    for var in &contract.vars {
        if let Some(v) = values.get(&var.name).and_then(rules::Lookup::value) {
            if rules::is_sensitive(var) {
                redactor.add(v);
            } else {
                redactor.add_url_password(v);
            }
        }
    }
    // Before anything else of the run reaches the log.
    redactor.announce(gha);

    let mut checks = rules::evaluate(contract, &values, &detector);
    let mut context = vec![format!(
        "contract: {} ({} variables, {} groups)",
        contract_path,
        contract.vars.len(),
        contract.groups.len()
    )];
    context.push(match file {
        Some(f) => format!(
            "values: process environment, then {} ({} variables)",
            f.path,
            f.vars.len()
        ),
        None => "values: process environment".into(),
    });
    let mut fly = None;
    let mut error = None;
    if let Some(fs) = fly_audit {
        match fs.client.list_secrets(&fs.app).await {
            Ok(answer) => {
                let names: HashSet<String> = answer.body.iter().map(|s| s.name.clone()).collect();
                context.push(format!(
                    "Fly app `{}`: {} secrets set{}",
                    fs.app,
                    names.len(),
                    answer
                        .request_id
                        .as_deref()
                        .map(|id| format!(" (request {id})"))
                        .unwrap_or_default()
                ));
                checks.extend(rules::audit_fly(contract, &values, &names, &fs.app));
                fly = Some(FlyResult {
                    app: fs.app.clone(),
                    secrets: Some(names.len()),
                    request_id: answer.request_id,
                });
            }
            Err(e) => {
                context.push(format!(
                    "Fly app `{}`: the secrets audit did not run (see the error)",
                    fs.app
                ));
                fly = Some(FlyResult {
                    app: fs.app.clone(),
                    secrets: None,
                    request_id: e.request_id.clone(),
                });
                error = Some(e);
            }
        }
    }
    if gha {
        annotate(&checks, contract_path, &redactor);
    }
    Checked {
        checks,
        context,
        contract_path: contract_path.to_string(),
        env_file: file.map(|f| f.path.clone()),
        fly,
        error,
        redactor,
    }
}

/// Inside GitHub Actions, one annotation per failed or warned check, at its contract line.
fn annotate(checks: &[Check], config_path: &str, redactor: &Redactor) {
    for c in checks {
        let message = redactor.scrub(&format!("{}: {}", c.name, c.message));
        match c.status {
            rules::Status::Ok => {}
            rules::Status::Warning => {
                tracing::warn!(file = config_path, line = u64::from(c.line), "{message}");
            }
            _ => tracing::error!(file = config_path, line = u64::from(c.line), "{message}"),
        }
    }
}
