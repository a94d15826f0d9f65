//! The `command` provider: deploys by running configured shell commands with `{image}`
//! substituted, captures their output, and keeps the current and previous image in a state
//! file so `rollback` knows where to go back to.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Action, Deployer, MachineReport, MachineStatus, Provider, Report, RestoreDb};
use crate::error::Error;
use crate::redact::Redactor;

/// The id the one target of this provider has in the report's `machines` and
/// `previous_images`.
pub const TARGET_ID: &str = "command";

/// Output kept per command: the end matters most (the error is usually last).
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// The `command` provider, configured.
pub struct CommandDeployer {
    pub app: String,
    /// Run with `sh -c`; `{image}` and `{previous_image}` are substituted.
    pub command: String,
    /// Runs for `rollback`; `command` is used when it is not set.
    pub rollback_command: Option<String>,
    pub state_file: PathBuf,
    /// The config file's directory: commands run there, as paths in the file resolve there.
    pub workdir: PathBuf,
    pub timeout: Duration,
    pub redactor: Redactor,
}

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    image: Option<String>,
    previous_image: Option<String>,
    /// Unix seconds of the last change.
    #[serde(default)]
    updated_at: u64,
    #[serde(default)]
    action: Option<String>,
}

/// A finished command.
struct Ran {
    ok: bool,
    output: String,
    why: String,
}

impl Deployer for CommandDeployer {
    async fn preview(&self, image: Option<&str>) -> Report {
        let mut report = self.report(Action::Deploy);
        report.dry_run = true;
        report.image = image.map(str::to_string);
        let state = match self.read_state() {
            Ok(s) => s,
            Err(e) => return report.failed(e),
        };
        if let Some(current) = &state.image {
            report
                .previous_images
                .insert(TARGET_ID.into(), current.clone());
        }
        report.machines = vec![MachineReport {
            id: TARGET_ID.into(),
            region: None,
            image: state.image.clone(),
            status: match image {
                Some(i) if state.image.as_deref() != Some(i) => MachineStatus::Pending,
                _ => MachineStatus::Unchanged,
            },
            state: None,
            previous_image: state.image,
            error: None,
            batch: None,
        }];
        report
    }

    async fn deploy(&self, image: &str) -> Report {
        let mut report = self.report(Action::Deploy);
        report.image = Some(image.to_string());
        let state = match self.read_state() {
            Ok(s) => s,
            Err(e) => return report.failed(e),
        };
        self.attempt(report, &self.command, "command", image, state, true)
            .await
    }

    async fn rollback(&self, image: Option<&str>, restore: Option<RestoreDb<'_>>) -> Report {
        let mut report = self.report(Action::Rollback);
        let state = match self.read_state() {
            Ok(s) => s,
            Err(e) => return report.failed(e),
        };
        let Some(target) = image
            .map(str::to_string)
            .or_else(|| state.previous_image.clone())
        else {
            return report.failed(
                Error::failure(format!(
                    "no previous image is recorded in {}: nothing to roll back to; nothing was changed",
                    self.state_file.display()
                ))
                .file(self.state_file.display().to_string())
                .hint("name the image to go to: `flightplan rollback --image REF`"),
            );
        };
        report.image = Some(target.clone());
        let (cmd, key) = match &self.rollback_command {
            Some(c) => (c.as_str(), "rollback_command"),
            None => (self.command.as_str(), "command"),
        };
        // This provider cannot stop the app: the database is restored first, then the
        // previous version deployed (docs/deploy.md says so).
        let restored = restore.is_some();
        if let Some(restore) = restore {
            match restore.await {
                Ok(d) => report.database = Some(d),
                Err(e) => return report.failed(e),
            }
        }
        // After a restore, putting the newer version back would run it on the older schema.
        self.attempt(report, cmd, key, &target, state, !restored)
            .await
    }

    async fn restore_database(&self, restore: RestoreDb<'_>) -> Report {
        // This provider cannot stop the app: the restore runs while it serves, and the
        // version deployed stays as it is.
        let mut report = self.report(Action::Rollback);
        match restore.await {
            Ok(d) => report.database = Some(d),
            Err(e) => return report.failed(e),
        }
        report
    }
}

impl CommandDeployer {
    fn report(&self, action: Action) -> Report {
        let mut r = Report::new(action, Provider::Command, &self.app);
        r.recorded_in = Some(self.state_file.display().to_string());
        r
    }

    /// Runs `cmd` for `image`; on success records it, on failure puts the previous image
    /// back with `command` (the deploy command deploys any image, the previous one too).
    async fn attempt(
        &self,
        mut report: Report,
        cmd: &str,
        key: &str,
        image: &str,
        state: State,
        may_revert: bool,
    ) -> Report {
        let previous = state.image.clone();
        if let Some(p) = &previous {
            report.previous_images.insert(TARGET_ID.into(), p.clone());
        }
        let ran = self.run(cmd, key, image, previous.as_deref()).await;
        let mut output = ran.output;
        let mut status = MachineStatus::Updated;
        let mut now_on = Some(image.to_string());
        let mut error = None;
        if ran.ok {
            let written = self.write_state(&State {
                image: Some(image.to_string()),
                previous_image: previous.clone(),
                updated_at: unix_now(),
                action: Some(format!("{:?}", report.action).to_lowercase()),
            });
            if let Err(e) = written {
                // The image is in place; only the record of it is missing.
                error = Some(e);
            }
        } else {
            let mut e = Error::failure(format!("[deploy] {key} {}", ran.why)).hint(
                "its output is shown with the result; fix the command or the image and run again",
            );
            match &previous {
                Some(p) if p != image && may_revert => {
                    tracing::warn!("{key} failed; putting back {p}");
                    let back = self.run(&self.command, "command", p, Some(image)).await;
                    output.push_str(&format!("\n--- putting back {p} with `command` ---\n"));
                    output.push_str(&back.output);
                    if back.ok {
                        status = MachineStatus::Reverted;
                        report.reverted = true;
                        now_on = Some(p.clone());
                        e.hint = Some(format!(
                            "{p} was put back with `command`; fix the cause and run again"
                        ));
                    } else {
                        status = MachineStatus::RevertFailed;
                        now_on = None;
                        e.hint = Some(format!(
                            "putting back {p} failed too ({}): the target needs attention",
                            back.why
                        ));
                    }
                }
                _ => {
                    status = MachineStatus::Failed;
                    now_on = None;
                }
            }
            error = Some(e);
        }
        report.machines = vec![MachineReport {
            id: TARGET_ID.into(),
            region: None,
            image: now_on,
            status,
            state: None,
            previous_image: previous,
            error: error.as_ref().map(|e| e.message.clone()),
            batch: None,
        }];
        report.output = Some(self.redactor.scrub(&output));
        report.error = error;
        report
    }

    /// Runs one command with `sh -c` in `workdir`, its output (stdout and stderr, in order)
    /// going to a file rather than a pipe: a command that starts a server in the background
    /// leaves the server holding the pipe, and reading it would never end.
    async fn run(&self, template: &str, key: &str, image: &str, previous: Option<&str>) -> Ran {
        let script = template
            .replace("{image}", image)
            .replace("{previous_image}", previous.unwrap_or(""));
        tracing::info!(
            "running [deploy] {key} for {image} (timeout {}s)",
            self.timeout.as_secs()
        );
        let failed = |why: String| Ran {
            ok: false,
            output: String::new(),
            why,
        };
        let (mut log, log_path) = match capture_file() {
            Ok(f) => f,
            Err(e) => return failed(format!("could not start: no file for its output: {e}")),
        };
        let (out, err) = match (log.try_clone(), log.try_clone()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return failed(format!("could not start: {e}")),
        };
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&script)
            .current_dir(&self.workdir)
            .env("FLIGHTPLAN_IMAGE", image)
            .env("FLIGHTPLAN_PREVIOUS_IMAGE", previous.unwrap_or(""))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        // Its own process group, so a timeout stops what it started too.
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&log_path);
                return failed(format!(
                    "could not start in {}: {e}",
                    self.workdir.display()
                ));
            }
        };
        let waited = tokio::time::timeout(self.timeout, child.wait()).await;
        let (ok, why) = match waited {
            Ok(Ok(s)) if s.success() => (true, String::new()),
            Ok(Ok(s)) => (
                false,
                match s.code() {
                    Some(c) => format!("exited with status {c}"),
                    None => format!("was stopped by a signal ({s})"),
                },
            ),
            Ok(Err(e)) => (false, format!("could not be waited for: {e}")),
            Err(_) => {
                kill_group(child.id());
                let _ = child.kill().await;
                (
                    false,
                    format!(
                        "did not finish within {}s and was stopped (raise [deploy] wait_timeout if it needs longer)",
                        self.timeout.as_secs()
                    ),
                )
            }
        };
        let output = read_tail(&mut log).unwrap_or_default();
        let _ = std::fs::remove_file(&log_path);
        Ran { ok, output, why }
    }

    fn read_state(&self) -> Result<State, Error> {
        let path = &self.state_file;
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                Error::failure(format!(
                    "the deploy state file {} is not valid: {e}; nothing was changed",
                    path.display()
                ))
                .file(path.display().to_string())
                .hint("fix or delete it (deleting it forgets the previous image), or set [deploy] state_file")
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::failure(format!(
                "cannot read the deploy state file {}: {e}; nothing was changed",
                path.display()
            ))
            .file(path.display().to_string())),
        }
    }

    /// Writes the state atomically (a temporary file renamed over it).
    fn write_state(&self, state: &State) -> Result<(), Error> {
        let path = &self.state_file;
        let fail = |e: std::io::Error| {
            Error::failure(format!(
                "the image is deployed, but the deploy state file {} could not be written: {e}",
                path.display()
            ))
            .file(path.display().to_string())
            .hint("`flightplan rollback` needs it to know the previous image: check the directory's permissions, or set [deploy] state_file")
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(state).unwrap_or_default() + "\n";
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// A new file for one command's output, in the temporary directory.
fn capture_file() -> std::io::Result<(std::fs::File, PathBuf)> {
    let dir = std::env::temp_dir();
    for _ in 0..8 {
        let path = dir.join(format!(
            "flightplan-command-{}-{}.log",
            std::process::id(),
            rand::random::<u64>()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((f, path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no unused file name"))
}

/// The last [`OUTPUT_LIMIT`] bytes of the output, with a note when the start was cut.
fn read_tail(file: &mut std::fs::File) -> std::io::Result<String> {
    let len = file.seek(SeekFrom::End(0))?;
    let start = len.saturating_sub(OUTPUT_LIMIT);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(OUTPUT_LIMIT).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok(if start > 0 {
        format!("[… first {start} bytes of output left out …]\n{text}")
    } else {
        text
    })
}

/// Stops the whole process group of a timed-out command (what it started in the
/// background too). `kill` is a separate program: this crate forbids unsafe code.
fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    #[cfg(not(unix))]
    let _ = pid;
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
