//! The action's inputs: the `INPUT_*` variables the Actions runner sets (hyphens kept, as in
//! `INPUT_DRY-RUN`), read once, checked, and laid under the command line's flags.
//!
//! Precedence, for every command: a flag, then the input, then the environment, then the
//! file, then the default. An input the command cannot use, or a value it cannot mean, is an
//! exit-2 error naming the input, before anything is contacted.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::Deserialize;

use crate::cli::{BackupCommand, Cli, Command, MigrateCommand};
use crate::error::Error;
use crate::redact::Secret;

/// What the `command` input accepts: the commands a workflow step runs.
pub const COMMANDS: &[&str] = &[
    "run",
    "rollback",
    "rehearse",
    "check-env",
    "migrate",
    "backup",
    "deploy",
    "smoke",
    "report",
];

/// The inputs as the runner writes them; envy strips `INPUT_` and lowercases the rest.
#[derive(Debug, Default, Deserialize)]
struct Raw {
    command: Option<String>,
    args: Option<String>,
    image: Option<String>,
    #[serde(rename = "dry-run")]
    dry_run: Option<String>,
    config: Option<String>,
    #[serde(rename = "env-file")]
    env_file: Option<String>,
    #[serde(rename = "restore-backup")]
    restore_backup: Option<String>,
    confirm: Option<String>,
    #[serde(rename = "github-token")]
    github_token: Option<String>,
    fly: Option<String>,
}

/// The action's inputs, checked. An empty input counts as not given: the runner fills in
/// action.yml's defaults, and most of them are empty.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `command`: the subcommand, when running as the action's entrypoint.
    pub command: Option<String>,
    /// `args`: words after the command, split as a shell would.
    pub args: Vec<String>,
    /// `image`: `--image` of run, deploy and rollback.
    pub image: Option<String>,
    /// `dry-run`: `--dry-run` of run.
    pub dry_run: bool,
    /// `config`: `--config`.
    pub config: Option<PathBuf>,
    /// `env-file`: `--env-file` of run and check-env.
    pub env_file: Option<PathBuf>,
    /// `restore-backup`: `--restore-backup` of rollback.
    pub restore_backup: Option<String>,
    /// `confirm: yes`: `--yes` of rollback, backup restore and migrate adopt.
    pub confirm: bool,
    /// `github-token`: wins over `GITHUB_TOKEN`; never a flag, it is a secret.
    pub github_token: Option<Secret>,
    /// `fly`: `--fly` of check-env.
    pub fly: bool,
}

impl Inputs {
    /// Reads the inputs from the process environment (names that are not UTF-8 are no input).
    pub fn from_env(vars: impl Iterator<Item = (OsString, OsString)>) -> Result<Inputs, Error> {
        Inputs::from_vars(
            vars.filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Reads the inputs from `(name, value)` pairs; names without `INPUT_` are ignored.
    pub fn from_vars(vars: impl Iterator<Item = (String, String)>) -> Result<Inputs, Error> {
        let raw: Raw = envy::prefixed("INPUT_")
            .from_iter(vars.filter(|(k, _)| k.starts_with("INPUT_")))
            .map_err(|e| Error::usage(format!("the action's inputs: {e}")))?;
        let given = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let command = given(raw.command);
        if let Some(c) = &command
            && !COMMANDS.contains(&c.as_str())
        {
            return Err(Error::usage(format!(
                "input `command` (INPUT_COMMAND) is `{c}`, which is not a flightplan command"
            ))
            .hint(format!("use one of: {}", COMMANDS.join(", "))));
        }
        let args = match given(raw.args) {
            None => Vec::new(),
            Some(a) => shlex::split(&a).ok_or_else(|| {
                Error::usage("input `args` (INPUT_ARGS) has an unterminated quote or escape")
                    .hint("quote each argument that holds spaces once, e.g. args: --image 'REF'")
            })?,
        };
        let confirm = match given(raw.confirm) {
            None => false,
            Some(c) if c.eq_ignore_ascii_case("yes") => true,
            Some(c) => {
                return Err(Error::usage(format!(
                    "input `confirm` (INPUT_CONFIRM) is `{c}`; only `yes` confirms"
                ))
                .hint("type yes to confirm, or leave the input empty"));
            }
        };
        Ok(Inputs {
            command,
            args,
            image: given(raw.image),
            dry_run: boolean("dry-run", given(raw.dry_run))?,
            config: given(raw.config).map(PathBuf::from),
            env_file: given(raw.env_file).map(PathBuf::from),
            restore_backup: given(raw.restore_backup),
            confirm,
            // A token is taken as it is: only its being blank means "not given".
            github_token: raw
                .github_token
                .filter(|t| !t.trim().is_empty())
                .map(Secret::new),
            fly: boolean("fly", given(raw.fly))?,
        })
    }

    /// The command line to parse. As the action's entrypoint (`command` given) it is
    /// `flightplan COMMAND ARGS…`. The runner may also pass the `args` input as the
    /// container's arguments: those words are the same and are not added twice. Any other
    /// command line given explicitly wins over the inputs.
    pub fn command_line(&self, argv: Vec<OsString>) -> Vec<OsString> {
        let Some(command) = &self.command else {
            return argv;
        };
        let mut it = argv.into_iter();
        let program = it.next().unwrap_or_else(|| "flightplan".into());
        let rest: Vec<OsString> = it.collect();
        let same_as_args = rest.len() == self.args.len()
            && rest.iter().zip(&self.args).all(|(a, b)| a == b.as_str());
        if !rest.is_empty() && !same_as_args {
            return std::iter::once(program).chain(rest).collect();
        }
        let mut line = vec![program, command.into()];
        line.extend(self.args.iter().map(OsString::from));
        line
    }

    /// Whether the command line came from the `command` and `args` inputs.
    pub fn makes_command_line(&self) -> bool {
        self.command.is_some()
    }

    /// Lays the inputs under the parsed command line: each fills in the flag it stands for
    /// when the flag was not given. An input the command does not use is an error.
    pub fn apply(&self, cli: &mut Cli) -> Result<(), Error> {
        if cli.config.is_none() {
            cli.config.clone_from(&self.config);
        }
        let name = command_name(&cli.command);
        let fill = |flag: &mut Option<String>, input: &Option<String>| {
            if flag.is_none() {
                flag.clone_from(input);
            }
        };
        let (mut image, mut dry_run, mut env_file, mut restore, mut confirm, mut fly) =
            (false, false, false, false, false, false);
        match &mut cli.command {
            Command::Run(a) => {
                fill(&mut a.image, &self.image);
                a.dry_run |= self.dry_run;
                if a.env_file.is_none() {
                    a.env_file.clone_from(&self.env_file);
                }
                (image, dry_run, env_file) = (true, true, true);
            }
            Command::Deploy(a) => {
                fill(&mut a.image, &self.image);
                image = true;
            }
            Command::Rollback(a) => {
                fill(&mut a.image, &self.image);
                fill(&mut a.restore_backup, &self.restore_backup);
                a.yes |= self.confirm;
                (image, restore, confirm) = (true, true, true);
            }
            Command::CheckEnv(a) => {
                if a.env_file.is_none() {
                    a.env_file.clone_from(&self.env_file);
                }
                a.fly |= self.fly;
                (env_file, fly) = (true, true);
            }
            Command::Backup(BackupCommand::Restore { yes, .. })
            | Command::Migrate(MigrateCommand::Adopt { yes, .. }) => {
                *yes |= self.confirm;
                confirm = true;
            }
            _ => {}
        }
        // A read-only command is a dry run already; one that changes things and has no dry
        // run must not run as if it were one.
        let dry_already = read_only(&cli.command);
        let unused = [
            (
                self.image.is_some() && !image,
                "image",
                "run, deploy and rollback",
            ),
            (
                self.dry_run && !dry_run && !dry_already,
                "dry-run",
                "run (and read-only commands, which change nothing anyway)",
            ),
            (
                self.env_file.is_some() && !env_file,
                "env-file",
                "run and check-env",
            ),
            (
                self.restore_backup.is_some() && !restore,
                "restore-backup",
                "rollback",
            ),
            (
                self.confirm && !confirm,
                "confirm",
                "rollback, backup restore and migrate adopt",
            ),
            (self.fly && !fly, "fly", "check-env"),
        ];
        if let Some((_, input, applies)) = unused.into_iter().find(|(bad, _, _)| *bad) {
            return Err(Error::usage(format!(
                "input `{input}` is set, but `{name}` does not use it (it applies to {applies})"
            ))
            .hint(format!(
                "remove `{input}` from the step's `with:`, or pick the command it belongs to"
            )));
        }
        Ok(())
    }
}

/// `true`/`false` (any case); empty is false.
fn boolean(input: &str, value: Option<String>) -> Result<bool, Error> {
    match value {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::usage(format!(
            "input `{input}` (INPUT_{}) is `{v}`; it must be true or false",
            input.to_ascii_uppercase()
        ))
        .hint(format!(
            "set `{input}: true` or `{input}: false` in the step's `with:`"
        ))),
    }
}

/// The command as a workflow names it, for messages.
fn command_name(c: &Command) -> &'static str {
    match c {
        Command::CheckEnv(_) => "check-env",
        Command::Backup(BackupCommand::Create(_)) => "backup create",
        Command::Backup(BackupCommand::List(_)) => "backup list",
        Command::Backup(BackupCommand::Restore { .. }) => "backup restore",
        Command::Backup(BackupCommand::Prune { .. }) => "backup prune",
        Command::Report { .. } => "report",
        Command::Run(_) => "run",
        Command::Migrate(MigrateCommand::Status(_)) => "migrate status",
        Command::Migrate(MigrateCommand::Plan(_)) => "migrate plan",
        Command::Migrate(MigrateCommand::Apply { .. }) => "migrate apply",
        Command::Migrate(MigrateCommand::Verify(_)) => "migrate verify",
        Command::Migrate(MigrateCommand::Lint(_)) => "migrate lint",
        Command::Migrate(MigrateCommand::Drift(_)) => "migrate drift",
        Command::Migrate(MigrateCommand::Adopt { .. }) => "migrate adopt",
        Command::Migrate(MigrateCommand::MarkApplied { .. }) => "migrate mark-applied",
        Command::Smoke(_) => "smoke",
        Command::Deploy(_) => "deploy",
        Command::Rollback(_) => "rollback",
        Command::Rehearse(_) => "rehearse",
    }
}

/// Commands that change nothing in production (rehearse changes only its own copy).
fn read_only(c: &Command) -> bool {
    match c {
        Command::CheckEnv(_)
        | Command::Report { .. }
        | Command::Smoke(_)
        | Command::Rehearse(_)
        | Command::Backup(BackupCommand::List(_)) => true,
        Command::Migrate(m) => matches!(
            m,
            MigrateCommand::Status(_)
                | MigrateCommand::Plan(_)
                | MigrateCommand::Verify(_)
                | MigrateCommand::Lint(_)
                | MigrateCommand::Drift(_)
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn inputs(vars: &[(&str, &str)]) -> Result<Inputs, Error> {
        Inputs::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    /// action.yml's defaults, as the runner fills them in.
    fn defaults() -> Vec<(&'static str, &'static str)> {
        vec![
            ("INPUT_COMMAND", "run"),
            ("INPUT_ARGS", ""),
            ("INPUT_IMAGE", ""),
            ("INPUT_DRY-RUN", "false"),
            ("INPUT_CONFIG", ""),
            ("INPUT_ENV-FILE", ""),
            ("INPUT_RESTORE-BACKUP", ""),
            ("INPUT_CONFIRM", ""),
            ("INPUT_GITHUB-TOKEN", "ghs_defaulttoken"),
            ("INPUT_FLY", "false"),
        ]
    }

    fn with(over: &[(&'static str, &'static str)]) -> Inputs {
        let mut v = defaults();
        for (k, val) in over {
            v.retain(|(n, _)| n != k);
            v.push((k, val));
        }
        inputs(&v).unwrap()
    }

    fn cli(i: &Inputs, argv: &[&str]) -> Result<Cli, Error> {
        let line = i.command_line(argv.iter().map(OsString::from).collect());
        let mut cli = Cli::try_parse_from(line).map_err(|e| Error::usage(e.to_string()))?;
        i.apply(&mut cli)?;
        Ok(cli)
    }

    #[test]
    fn hyphenated_names_arrive() {
        let i = with(&[
            ("INPUT_DRY-RUN", "true"),
            ("INPUT_ENV-FILE", "app.env"),
            ("INPUT_RESTORE-BACKUP", "br-1"),
        ]);
        assert!(i.dry_run);
        assert_eq!(i.env_file, Some(PathBuf::from("app.env")));
        assert_eq!(i.restore_backup.as_deref(), Some("br-1"));
        assert_eq!(i.github_token.unwrap().expose(), "ghs_defaulttoken");
    }

    #[test]
    fn defaults_alone_mean_a_plain_run() {
        let c = cli(&inputs(&defaults()).unwrap(), &["flightplan"]).unwrap();
        let Command::Run(a) = c.command else { panic!() };
        assert!(!a.dry_run && a.image.is_none() && a.env_file.is_none());
        assert!(c.config.is_none());
    }

    #[test]
    fn values_it_cannot_use_name_the_input() {
        for (k, v, named) in [
            ("INPUT_DRY-RUN", "maybe", "dry-run"),
            ("INPUT_COMMAND", "deploy-everything", "command"),
            ("INPUT_CONFIRM", "sure", "confirm"),
            ("INPUT_ARGS", "--image 'oops", "args"),
            ("INPUT_FLY", "1", "fly"),
        ] {
            let mut v2 = defaults();
            v2.retain(|(n, _)| *n != k);
            v2.push((k, v));
            let e = inputs(&v2).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.message.contains(&format!("`{named}`")), "{}", e.message);
        }
    }

    #[test]
    fn inputs_fill_the_flags_and_flags_win() {
        let i = with(&[
            ("INPUT_IMAGE", "app:v2"),
            ("INPUT_DRY-RUN", "true"),
            ("INPUT_CONFIG", "deploy/fp.toml"),
        ]);
        let c = cli(&i, &["flightplan"]).unwrap();
        assert_eq!(c.config, Some(PathBuf::from("deploy/fp.toml")));
        let Command::Run(a) = c.command else { panic!() };
        assert_eq!(a.image.as_deref(), Some("app:v2"));
        assert!(a.dry_run);
        // The `args` input's flags are flags: they win over the inputs.
        let i = with(&[
            ("INPUT_IMAGE", "app:v2"),
            ("INPUT_ARGS", "--image app:v3 --config x.toml"),
        ]);
        let c = cli(&i, &["flightplan"]).unwrap();
        assert_eq!(c.config, Some(PathBuf::from("x.toml")));
        let Command::Run(a) = c.command else { panic!() };
        assert_eq!(a.image.as_deref(), Some("app:v3"));
    }

    #[test]
    fn args_passed_by_the_runner_are_not_doubled() {
        let i = with(&[("INPUT_COMMAND", "migrate"), ("INPUT_ARGS", "status")]);
        let line = i.command_line(vec!["flightplan".into(), "status".into()]);
        assert_eq!(line, ["flightplan", "migrate", "status"]);
        assert!(matches!(
            cli(&i, &["flightplan", "status"]).unwrap().command,
            Command::Migrate(MigrateCommand::Status(_))
        ));
        // Another command line, given explicitly, wins.
        let line = i.command_line(vec!["flightplan".into(), "check-env".into()]);
        assert_eq!(line, ["flightplan", "check-env"]);
    }

    #[test]
    fn rollback_takes_restore_backup_and_confirm() {
        let i = with(&[
            ("INPUT_COMMAND", "rollback"),
            ("INPUT_RESTORE-BACKUP", "br-backup-1"),
            ("INPUT_CONFIRM", "yes"),
        ]);
        let Command::Rollback(a) = cli(&i, &["flightplan"]).unwrap().command else {
            panic!()
        };
        assert_eq!(a.restore_backup.as_deref(), Some("br-backup-1"));
        assert!(a.yes);
    }

    #[test]
    fn an_input_the_command_does_not_use_is_refused() {
        for (over, named) in [
            (
                vec![("INPUT_COMMAND", "rollback"), ("INPUT_DRY-RUN", "true")],
                "dry-run",
            ),
            (
                vec![("INPUT_COMMAND", "deploy"), ("INPUT_DRY-RUN", "true")],
                "dry-run",
            ),
            (
                vec![
                    ("INPUT_COMMAND", "migrate"),
                    ("INPUT_ARGS", "apply"),
                    ("INPUT_DRY-RUN", "true"),
                ],
                "dry-run",
            ),
            (vec![("INPUT_RESTORE-BACKUP", "br-1")], "restore-backup"),
            (
                vec![("INPUT_COMMAND", "rehearse"), ("INPUT_IMAGE", "app:v2")],
                "image",
            ),
            (
                vec![("INPUT_COMMAND", "deploy"), ("INPUT_ENV-FILE", "a.env")],
                "env-file",
            ),
        ] {
            let e = cli(&with(&over), &["flightplan"]).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.message.contains(&format!("`{named}`")), "{}", e.message);
        }
        // Read-only commands are dry runs already.
        let i = with(&[
            ("INPUT_COMMAND", "migrate"),
            ("INPUT_ARGS", "status"),
            ("INPUT_DRY-RUN", "true"),
        ]);
        cli(&i, &["flightplan"]).unwrap();
    }

    #[test]
    fn without_inputs_the_command_line_is_untouched() {
        let i = inputs(&[("PATH", "/bin")]).unwrap();
        assert!(!i.makes_command_line());
        let argv: Vec<OsString> = vec!["flightplan".into(), "check-env".into()];
        assert_eq!(i.command_line(argv.clone()), argv);
    }
}
