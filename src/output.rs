//! What reaches the terminal: results on stdout (text, or exactly one JSON document), logs
//! on stderr, and GitHub Actions workflow commands when running inside a workflow.

use std::fmt::Write as _;
use std::io::Write;

use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::error::Error;

/// `--format`: text for people, or exactly one JSON document on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// A command's result: `ok` decides exit 0 or 1; `json` holds the fields of the JSON
/// document (without `ok`/`error`); `text` is what people read on stdout.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub json: serde_json::Map<String, Value>,
    pub text: String,
    /// Why it failed, when it did; printed like an error, with the partial results.
    pub error: Option<Error>,
}

impl Outcome {
    pub fn new(ok: bool, json: serde_json::Map<String, Value>, text: String) -> Outcome {
        Outcome {
            ok,
            json,
            text,
            error: None,
        }
    }
}

/// Prints the result and returns the process exit code.
pub fn emit(format: Format, result: Result<Outcome, Error>, gha: bool) -> u8 {
    let (outcome, code) = match result {
        Ok(o) => {
            let code = match &o.error {
                Some(e) => e.exit_code(),
                None if o.ok => 0,
                None => 1,
            };
            (o, code)
        }
        Err(e) => {
            let code = e.exit_code();
            let mut o = Outcome::new(false, serde_json::Map::new(), String::new());
            o.error = Some(e);
            (o, code)
        }
    };
    if let Some(e) = &outcome.error {
        print_error(e, gha);
    }
    let mut stdout = std::io::stdout().lock();
    let written = match format {
        Format::Json => {
            let mut doc = serde_json::Map::new();
            doc.insert("ok".into(), json!(code == 0));
            doc.extend(outcome.json);
            if let Some(e) = &outcome.error {
                doc.insert(
                    "error".into(),
                    serde_json::to_value(e).unwrap_or(Value::Null),
                );
            }
            writeln!(stdout, "{}", Value::Object(doc))
        }
        Format::Text => stdout.write_all(outcome.text.as_bytes()),
    };
    // A closed pipe (`| head`) is not a failure of the command.
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return 1;
    }
    code
}

fn print_error(e: &Error, gha: bool) {
    let mut s = String::new();
    if gha {
        let _ = writeln!(
            s,
            "{}",
            workflow_command("error", e.file.as_deref(), e.line, e.column, &e.message)
        );
    }
    let _ = writeln!(s, "error: {}", e.message);
    if let Some(loc) = e.location() {
        let _ = writeln!(s, "  --> {loc}");
    }
    if let Some(code) = &e.code {
        let _ = writeln!(s, "  code: {code}");
    }
    if let Some(id) = &e.request_id {
        let _ = writeln!(s, "  request id: {id}");
    }
    if let Some(h) = &e.hint {
        let _ = writeln!(s, "  hint: {h}");
    }
    let _ = std::io::stderr().lock().write_all(s.as_bytes());
}

/// A workflow command (`::error file=…,line=…::message`) with the runner's escaping:
/// data escapes `%`, CR and LF; property values also `:` and `,` (`%` always first).
pub fn workflow_command(
    cmd: &str,
    file: Option<&str>,
    line: Option<u32>,
    col: Option<u32>,
    message: &str,
) -> String {
    let mut props = Vec::new();
    if let Some(f) = file {
        props.push(format!("file={}", escape_property(f)));
    }
    if let Some(l) = line {
        props.push(format!("line={l}"));
    }
    if let Some(c) = col {
        props.push(format!("col={c}"));
    }
    let props = if props.is_empty() {
        String::new()
    } else {
        format!(" {}", props.join(","))
    };
    format!("::{cmd}{props}::{}", escape_data(message))
}

pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Logs to stderr, one line per event; warnings and errors become workflow commands
/// inside GitHub Actions, with `file`/`line` fields turned into annotation properties.
pub struct StderrLayer {
    pub gha: bool,
}

#[derive(Default)]
struct Fields {
    message: String,
    file: Option<String>,
    line: Option<u32>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "file" => self.file = Some(format!("{value:?}").trim_matches('"').to_string()),
            _ => {}
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "file" => self.file = Some(value.to_string()),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "line" {
            self.line = u32::try_from(value).ok();
        }
    }
}

impl<S: Subscriber> Layer<S> for StderrLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = *event.metadata().level();
        let line = match (level, self.gha) {
            (Level::ERROR, true) => {
                workflow_command("error", f.file.as_deref(), f.line, None, &f.message)
            }
            (Level::WARN, true) => {
                workflow_command("warning", f.file.as_deref(), f.line, None, &f.message)
            }
            (Level::ERROR, false) => format!("error: {}", f.message),
            (Level::WARN, false) => format!("warning: {}", f.message),
            (Level::INFO, _) => f.message,
            _ => format!("{}: {}", level.as_str().to_lowercase(), f.message),
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_commands_escape_percent_first() {
        assert_eq!(
            workflow_command(
                "error",
                Some("db/m,1:x.sql"),
                Some(3),
                Some(7),
                "50% done\nnext"
            ),
            "::error file=db/m%2C1%3Ax.sql,line=3,col=7::50%25 done%0Anext"
        );
        assert_eq!(
            workflow_command("warning", None, None, None, "a\r\nb"),
            "::warning::a%0D%0Ab"
        );
    }
}
