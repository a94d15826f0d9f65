//! Phase 1 of the pipeline, `check-env`: the app's environment contract (`[env]`) checked
//! against the process environment and an env file, and optionally the Fly app's secrets.

pub mod contract;
pub mod dotenv;
pub mod placeholder;
pub mod report;
pub mod rules;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::CheckEnvArgs;
use crate::config::Loaded;
use crate::error::Error;
use crate::fly;
use crate::output::Outcome;
use crate::redact::Redactor;

pub use self::contract::Contract;
use self::dotenv::EnvFile;
use self::placeholder::Detector;
use self::rules::Check;

/// How long one Machines API request may take.
const FLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The action's inputs for this command (`INPUT_<NAME>`, hyphens kept by the runner).
/// Flags win over them.
#[derive(Debug, Default, Deserialize)]
struct ActionInputs {
    #[serde(rename = "env-file", alias = "env_file")]
    env_file: Option<String>,
    fly: Option<String>,
}

/// The GitHub Actions context variables this command reads.
#[derive(Debug, Default, Deserialize)]
struct GithubContext {
    github_actions: Option<String>,
}

/// Where the Fly audit asks, resolved before anything is contacted.
struct FlySettings {
    app: String,
    client: fly::Client,
}

/// Reads a fixed set of variables with envy, through the injected lookup.
fn from_env<T: for<'de> Deserialize<'de>>(
    env: &dyn Fn(&str) -> Option<String>,
    prefix: &str,
    keys: &[&str],
) -> Result<T, Error> {
    let pairs = keys
        .iter()
        .filter_map(|k| env(&format!("{prefix}{k}")).map(|v| (format!("{prefix}{k}"), v)));
    envy::prefixed(prefix)
        .from_iter(pairs)
        .map_err(|e| Error::usage(format!("cannot read {prefix}* variables: {e}")))
}

/// `flightplan check-env [--env-file FILE] [--fly]`.
pub async fn check_env(
    args: &CheckEnvArgs,
    loaded: &Loaded,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Outcome, Error> {
    let ctx: GithubContext = from_env(env, "", &["GITHUB_ACTIONS"])?;
    let gha = ctx.github_actions.as_deref() == Some("true");
    let inputs: ActionInputs = from_env(env, "INPUT_", &["ENV-FILE", "ENV_FILE", "FLY"])?;
    let env_file_path = args.env_file.clone().or_else(|| {
        inputs
            .env_file
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });
    let use_fly = args.fly
        || match inputs.fly.as_deref().map(str::trim) {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::usage(format!(
                    "INPUT_FLY is `{other}`; it must be true or false"
                ))
                .hint("set the action's `fly` input to true or false"));
            }
        };

    // Everything that can be wrong before looking at a value: exit 2.
    let (contract, config_path) = load_contract(loaded)?;
    let detector = Detector::new(&contract.placeholders);
    let file = env_file_path.as_deref().map(EnvFile::read).transpose()?;
    let fly_settings = if use_fly {
        Some(fly_settings(loaded, env)?)
    } else {
        None
    };

    let values = rules::resolve(&contract, env, file.as_ref());
    let mut redactor = Redactor::from_env(env);
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

    let mut checks = rules::evaluate(&contract, &values, &detector);
    let mut context = vec![format!(
        "contract: {} ({} variables, {} groups)",
        config_path,
        contract.vars.len(),
        contract.groups.len()
    )];
    context.push(match &file {
        Some(f) => format!(
            "values: process environment, then {} ({} variables)",
            f.path,
            f.vars.len()
        ),
        None => "values: process environment".into(),
    });
    let mut fly_json = Value::Null;
    let mut error = None;
    if let Some(fs) = &fly_settings {
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
                checks.extend(rules::audit_fly(&contract, &values, &names, &fs.app));
                fly_json = json!({
                    "app": fs.app,
                    "secrets": names.len(),
                    "request_id": answer.request_id,
                });
            }
            Err(e) => {
                context.push(format!(
                    "Fly app `{}`: the secrets audit did not run (see the error)",
                    fs.app
                ));
                fly_json = json!({ "app": fs.app, "error": e.message });
                error = Some(e);
            }
        }
    }

    if gha {
        annotate(&checks, &config_path, &redactor);
    }
    let ok = !checks.iter().any(Check::is_failure) && error.is_none();
    let mut json_fields = report::json(&checks);
    json_fields.insert("contract".into(), json!(config_path));
    json_fields.insert("env_file".into(), json!(file.as_ref().map(|f| &f.path)));
    json_fields.insert("fly".into(), fly_json);
    let mut doc = Value::Object(json_fields);
    redactor.scrub_json(&mut doc);
    let Value::Object(json_fields) = doc else {
        unreachable!("scrub_json keeps the shape")
    };
    let text = redactor.scrub(&report::text(&checks, &context));
    let mut outcome = Outcome::new(ok, json_fields, text);
    if let Some(mut e) = error {
        redactor.scrub_error(&mut e);
        outcome.error = Some(e);
    }
    Ok(outcome)
}

/// The `[env]` section, re-read with positions so mistakes are reported with their line.
fn load_contract(loaded: &Loaded) -> Result<(Contract, String), Error> {
    let Some(path) = &loaded.path else {
        return Err(Error::usage(
            "check-env needs a config file with an [env] section, and none was found",
        )
        .hint("pass --config FILE, set FLIGHTPLAN_CONFIG, or create ./flightplan.toml; see docs/check-env.md"));
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::usage(format!("cannot read config file {shown}: {e}")).file(shown.clone())
    })?;
    match Contract::parse(&text, path)? {
        Some(c) if !c.vars.is_empty() => Ok((c, shown)),
        _ => Err(Error::usage(format!("{shown} has no [env] variables: nothing to check"))
            .file(shown)
            .hint("add one table per variable, e.g. [env.SESSION_SECRET] required = true, secret = true, min_length = 32; see docs/check-env.md")),
    }
}

/// The app, token and API URL for `--fly`; a missing one is a usage error (exit 2).
fn fly_settings(
    loaded: &Loaded,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FlySettings, Error> {
    let non_empty = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let app = non_empty("FLY_APP")
        .or_else(|| loaded.file.app.clone().filter(|a| !a.trim().is_empty()))
        .ok_or_else(|| {
            Error::usage("--fly needs the Fly app's name: set FLY_APP or `app` in the config file")
        })?;
    let token = non_empty("FLY_API_TOKEN").ok_or_else(|| {
        Error::usage("--fly needs FLY_API_TOKEN").hint(format!(
            "create a token with `fly tokens create deploy -a {app}` and pass it as FLY_API_TOKEN"
        ))
    })?;
    let base = non_empty("FLY_API_URL").unwrap_or_else(|| fly::DEFAULT_API_URL.into());
    Ok(FlySettings {
        client: fly::Client::new(&base, &token, FLY_TIMEOUT)?,
        app: app.trim().to_string(),
    })
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
