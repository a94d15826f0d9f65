//! `flightplan check-env`, run as a real process: every rule and group kind, placeholders,
//! the env file, the worked example, the Fly secrets audit against a fake Machines API,
//! and a canary run proving no secret (nor its first or last 8 characters) is ever printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::fly::FakeFly;
use serde_json::Value;

const EXAMPLE_CONFIG: &str = "examples/secure2send/flightplan.toml";
const EXAMPLE_SAMPLE: &str = "examples/secure2send/production.env.sample";

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    fn expect(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The check of `name` in the given scope (`env` or `fly`).
    #[track_caller]
    fn check(&self, scope: &str, name: &str) -> Value {
        self.json()["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name && c["scope"] == scope)
            .unwrap_or_else(|| panic!("no {scope} check for {name}:\n{}", self.stdout))
            .clone()
    }

    #[track_caller]
    fn status(&self, name: &str) -> String {
        self.check("env", name)["status"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Runs the binary with exactly `env` (plus PATH) as its environment.
fn flightplan(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_flightplan"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the flightplan binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A scratch directory holding a contract (`flightplan.toml`) and env files.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(contract: &str) -> Scratch {
        let s = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        s.write("flightplan.toml", contract);
        s
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn config(&self) -> String {
        self.dir
            .path()
            .join("flightplan.toml")
            .display()
            .to_string()
    }

    /// `check-env --format json` with this contract, `extra` args and `env`.
    fn run(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let config = self.config();
        let mut args = vec!["--config", config.as_str(), "--format", "json", "check-env"];
        args.extend_from_slice(extra);
        flightplan(&args, env)
    }
}

/// The sample env file as (name, value) pairs, in order.
fn sample_vars() -> Vec<(String, String)> {
    std::fs::read_to_string(repo(EXAMPLE_SAMPLE))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn env_text(vars: &[(String, String)]) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn example_with(dir: &tempfile::TempDir, vars: &[(String, String)]) -> Run {
    let path = dir.path().join("prod.env");
    std::fs::write(&path, env_text(vars)).unwrap();
    flightplan(
        &[
            "--config",
            EXAMPLE_CONFIG,
            "--format",
            "json",
            "check-env",
            "--env-file",
            path.to_str().unwrap(),
        ],
        &[],
    )
}

#[test]
fn example_contract_passes_with_the_complete_sample() {
    let run = flightplan(
        &[
            "--config",
            EXAMPLE_CONFIG,
            "--format",
            "json",
            "check-env",
            "--env-file",
            EXAMPLE_SAMPLE,
        ],
        &[],
    );
    run.expect(0);
    let doc = run.json();
    assert_eq!(doc["ok"], true);
    let checks = doc["checks"].as_array().unwrap();
    // The runbook's whole list: 4 critical, 6 email, 8 integrations, 11 optional.
    assert_eq!(checks.len(), 29, "{doc}");
    for c in checks {
        assert_eq!(c["status"], "ok", "{c}");
        assert!(
            c["source"]
                .as_str()
                .unwrap()
                .contains("production.env.sample:")
        );
    }
    assert_eq!(sample_vars().len(), 29);

    // And the text form is the table of the issue.
    let text = flightplan(
        &[
            "--config",
            EXAMPLE_CONFIG,
            "check-env",
            "--env-file",
            EXAMPLE_SAMPLE,
        ],
        &[],
    );
    text.expect(0);
    let header = text
        .stdout
        .lines()
        .find(|l| l.starts_with("VARIABLE"))
        .unwrap();
    for col in ["RULE", "STATUS", "REASON"] {
        assert!(header.contains(col), "{header}");
    }
    let row = text
        .stdout
        .lines()
        .find(|l| l.starts_with("SESSION_SECRET "))
        .unwrap();
    assert!(
        row.contains("min 32 chars") && row.contains('✓') && row.contains("48 chars"),
        "{row}"
    );
    assert!(
        text.stdout
            .contains("29 checks, 29 ok, 0 warning(s), 0 failed")
    );
}

#[test]
fn each_missing_variable_of_the_runbook_fails_naming_it() {
    // Optional in the runbook, and in no group a complete sample makes active.
    let optional = [
        "DOCUSEAL_REPLY_TO",
        "ENABLE_OCR_AUTOFILL",
        "FIELD_ENCRYPTION_KEY",
    ];
    let dir = tempfile::tempdir().unwrap();
    let all = sample_vars();
    for (name, _) in &all {
        let rest: Vec<_> = all.iter().filter(|(k, _)| k != name).cloned().collect();
        let run = example_with(&dir, &rest);
        if optional.contains(&name.as_str()) {
            run.expect(0);
            assert_eq!(run.status(name), "ok");
            continue;
        }
        run.expect(1);
        assert_eq!(
            run.status(name),
            "missing",
            "{name}: {}",
            run.check("env", name)
        );
        let doc = run.json();
        assert_eq!(doc["ok"], false);
        assert_eq!(
            doc["summary"]["failed_names"],
            serde_json::json!([name]),
            "removing {name} should fail on {name} alone"
        );
    }
}

#[test]
fn each_placeholder_value_of_the_runbook_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let all = sample_vars();
    for (name, _) in &all {
        for placeholder in ["changeme", "<set me>"] {
            let vars: Vec<_> = all
                .iter()
                .map(|(k, v)| {
                    let v = if k == name {
                        placeholder.to_string()
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect();
            let run = example_with(&dir, &vars);
            run.expect(1);
            assert_eq!(run.status(name), "placeholder", "{name}={placeholder}");
        }
    }
}

#[test]
fn the_runbooks_own_sample_values_are_placeholders() {
    // Phase 3 of the runbook, verbatim.
    let samples = [
        ("SESSION_SECRET", "your-secure-32-char-secret"),
        ("MAILGUN_API_KEY", "your-mailgun-key"),
        ("MAILGUN_DOMAIN", "mail.yourdomain.com"),
        ("MAILGUN_FROM_EMAIL", "noreply@mail.yourdomain.com"),
        ("ADMIN_EMAIL", "admin@yourdomain.com"),
        ("IRIS_CRM_API_KEY", "your-iris-key"),
        ("IRIS_CRM_SUBDOMAIN", "your-subdomain"),
        ("DOCUSEAL_API_KEY", "your-docuseal-key"),
        (
            "ZAPIER_KINDTAP_WEBHOOK_URL",
            "https://hooks.zapier.com/hooks/catch/...",
        ),
        ("ZAPIER_WEBHOOK_SECRET", "your-secure-webhook-secret"),
        ("OPENAI_API_KEY_OCR_ONLY", "your-openai-key"),
        ("FIELD_ENCRYPTION_KEY", "your-64-char-encryption-key"),
        ("CLOUDFLARE_R2_PUBLIC_URL", "https://files.example.com"),
        ("CLOUDFLARE_ACCESS_AUD", "xxxxxxxxxxxxxxxx"),
        (
            "CLOUDFLARE_R2_ACCESS_KEY_ID",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, value) in samples {
        let vars: Vec<_> = sample_vars()
            .into_iter()
            .map(|(k, v)| {
                if k == name {
                    (k, value.to_string())
                } else {
                    (k, v)
                }
            })
            .collect();
        let run = example_with(&dir, &vars);
        run.expect(1);
        assert_eq!(run.status(name), "placeholder", "{name}={value}");
        // A secret's reason never quotes the pattern (it would spell out the value).
        let check = run.check("env", name);
        if check["secret"] == true {
            assert!(!run.stdout.contains(value), "{name}: {}", run.stdout);
        }
    }
}

const RULES: &str = r#"
[env]
placeholders = ["acme-dev-*"]
[env.REQ]
required = true
[env.OPT]
[env.LONG]
min_length = 8
secret = true
[env.EXACT]
equals = "production"
[env.NUM_EXACT]
equals = 3000
[env.PICK]
one_of = ["mailgun", "smtp"]
[env.U]
format = "url"
[env.HU]
format = "https_url"
[env.MAIL]
format = "email"
[env.PG]
format = "postgres_url"
[env.INT]
format = "integer"
[env.BOOL]
format = "boolean"
[env.SOFT]
required = true
severity = "warning"
[env.MINE]
"#;

#[test]
fn every_rule_kind_passes_and_fails() {
    let s = Scratch::new(RULES);
    let good = [
        ("REQ", "x1"),
        ("LONG", "k8Jd2mQz"),
        ("EXACT", "production"),
        ("NUM_EXACT", "3000"),
        ("PICK", "smtp"),
        ("U", "http://intranet.corp.io/x"),
        ("HU", "https://secure2send.fly.dev"),
        ("MAIL", "Secure2Send <noreply@mg.secure2send.io>"),
        ("PG", "postgres://u:pw12345x@db.neon.tech/app"),
        ("INT", "-42"),
        ("BOOL", "off"),
        ("SOFT", "here"),
    ];
    let run = s.run(&[], &good);
    run.expect(0);
    assert_eq!(run.status("OPT"), "ok");
    assert!(
        run.check("env", "OPT")["message"]
            .as_str()
            .unwrap()
            .contains("optional")
    );

    let bad = [
        ("LONG", "k8Jd2mQ"),
        ("EXACT", "development"),
        ("NUM_EXACT", "3001"),
        ("PICK", "sendgrid"),
        ("U", "ftp://files.corp.io"),
        ("HU", "http://secure2send.fly.dev"),
        ("MAIL", "noreply"),
        ("PG", "mysql://u:p@db/app"),
        ("INT", "3k"),
        ("BOOL", "maybe"),
        ("MINE", "acme-dev-7"),
    ];
    let run = s.run(&[], &bad);
    run.expect(1);
    assert_eq!(run.status("REQ"), "missing");
    assert_eq!(run.status("SOFT"), "warning");
    assert_eq!(run.check("env", "SOFT")["severity"], "warning");
    assert_eq!(run.status("MINE"), "placeholder");
    for (name, _) in &bad[..10] {
        assert_eq!(run.status(name), "invalid", "{}", run.check("env", name));
    }
    let msg = |n: &str| run.check("env", n)["message"].as_str().unwrap().to_string();
    assert!(
        msg("LONG").contains("7 characters long, needs at least 8"),
        "{}",
        msg("LONG")
    );
    assert!(msg("EXACT").contains("`development` must be `production`"));
    assert!(msg("HU").contains("https"));
    // LONG is a secret: its message names the length, never the value.
    assert!(!run.stdout.contains("k8Jd2mQ"));

    // A warning alone does not fail the run.
    let mut only_soft_missing: Vec<(&str, &str)> = good.to_vec();
    only_soft_missing.retain(|(k, _)| *k != "SOFT");
    let run = s.run(&[], &only_soft_missing);
    run.expect(0);
    assert_eq!(run.status("SOFT"), "warning");
    assert_eq!(run.json()["summary"]["warnings"], 1);
}

const GROUPS: &str = r#"
[env.PROVIDER]
[env.MG_KEY]
secret = true
[env.MG_DOMAIN]
[env.R1]
[env.R2]
[env.R3]
[env.OCR]
format = "boolean"
[env.OCR_KEY]
[env.HOOK]
[env.HOOK_SECRET]
[env.group.mail]
require = ["MG_KEY", "MG_DOMAIN"]
if_equals = { PROVIDER = "mailgun" }
[env.group.r2]
all_or_none = ["R1", "R2", "R3"]
[env.group.ocr]
require = ["OCR_KEY"]
if_enabled = "OCR"
[env.group.hook]
require = ["HOOK_SECRET"]
if_set = "HOOK"
severity = "warning"
"#;

#[test]
fn every_group_kind() {
    let s = Scratch::new(GROUPS);
    // Nothing set: every group is inactive, everything is optional.
    s.run(&[], &[]).expect(0);

    // required-when-equal: only for the named value.
    let run = s.run(&[], &[("PROVIDER", "mailgun"), ("MG_DOMAIN", "mg.s2s.io")]);
    run.expect(1);
    assert_eq!(run.status("MG_KEY"), "missing");
    let msg = run.check("env", "MG_KEY")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("PROVIDER = mailgun") && msg.contains("`mail`"),
        "{msg}"
    );
    s.run(&[], &[("PROVIDER", "smtp")]).expect(0);

    // all-or-none: some set is a failure naming the unset ones; all set passes.
    let run = s.run(&[], &[("R1", "a1"), ("R3", "c3")]);
    run.expect(1);
    assert_eq!(run.status("R2"), "missing");
    assert_eq!(run.status("R1"), "ok");
    assert!(
        run.check("env", "R2")["message"]
            .as_str()
            .unwrap()
            .contains("2 of 3")
    );
    s.run(&[], &[("R1", "a1"), ("R2", "b2"), ("R3", "c3")])
        .expect(0);

    // required-when-enabled: any truthy spelling enables, false does not.
    for on in ["true", "TRUE", "1", "yes", "on"] {
        let run = s.run(&[], &[("OCR", on)]);
        run.expect(1);
        assert_eq!(run.status("OCR_KEY"), "missing", "OCR={on}");
    }
    s.run(&[], &[("OCR", "false")]).expect(0);
    s.run(&[], &[("OCR", "true"), ("OCR_KEY", "k-29s8d7f6")])
        .expect(0);

    // required-when-set, with a warning severity: reported, exit 0.
    let run = s.run(&[], &[("HOOK", "https://hooks.s2s.io/a")]);
    run.expect(0);
    assert_eq!(run.status("HOOK_SECRET"), "warning");
}

#[test]
fn env_file_syntax_and_precedence() {
    let s = Scratch::new(
        "[env.A]\nrequired = true\n[env.B]\nrequired = true\n[env.C]\nrequired = true\n[env.D]\nrequired = true\nmin_length = 12\n",
    );
    let file = s.write(
        "app.env",
        "# comment\nexport A=from-file\nB=\"from file # not a comment\"\nC='literal $HOME'\nD=first-value-1\nD=second-value-2 # last wins\n",
    );
    // A non-empty process variable wins over the file; an empty one does not hide it.
    let run = s.run(&["--env-file", &file], &[("A", "from-process"), ("B", "")]);
    run.expect(0);
    assert_eq!(run.check("env", "A")["source"], "process environment");
    assert_eq!(run.check("env", "A")["length"], "from-process".len());
    assert!(
        run.check("env", "B")["source"]
            .as_str()
            .unwrap()
            .ends_with("app.env:3")
    );
    assert_eq!(
        run.check("env", "B")["length"],
        "from file # not a comment".len()
    );
    assert_eq!(run.check("env", "C")["length"], "literal $HOME".len());
    assert!(
        run.check("env", "D")["source"]
            .as_str()
            .unwrap()
            .ends_with("app.env:6")
    );
    assert_eq!(run.json()["env_file"], file.as_str());

    // Empty everywhere is missing, and says it was empty.
    let run = s.run(&["--env-file", &file], &[("A", "x"), ("C", "")]);
    run.expect(0);
    let empty = s.write("empty.env", "A=\n");
    let run = s.run(
        &["--env-file", &empty],
        &[("B", "b"), ("C", "c"), ("D", "dddd-1234-ok")],
    );
    run.expect(1);
    assert_eq!(run.status("A"), "missing");
    assert!(
        run.check("env", "A")["message"]
            .as_str()
            .unwrap()
            .contains("empty")
    );

    // A broken file is exit 2 with its line, and the line's text is not echoed.
    let broken = s.write("broken.env", "A=1\nB s3cr3t-do-not-print\n");
    let run = s.run(&["--env-file", &broken], &[]);
    run.expect(2);
    let err = &run.json()["error"];
    assert_eq!(err["line"], 2);
    assert!(!run.stdout.contains("s3cr3t") && !run.stderr.contains("s3cr3t"));
    // A missing file is exit 2 too.
    s.run(&["--env-file", "/nonexistent/x.env"], &[]).expect(2);
}

#[test]
fn an_invalid_contract_is_exit_2_with_its_line_and_key() {
    let cases: &[(&str, u32, &str)] = &[
        ("[env.A]\nrequired = true\nmin_len = 32\n", 3, "min_len"),
        ("[env.A]\nformat = \"uri\"\n", 2, "uri"),
        (
            "[env.A]\n[env.group.g]\nall_or_none = [\"A\", \"TYPO\"]\n",
            3,
            "TYPO",
        ),
        (
            "[env.A]\n[env.B]\n[env.group.g]\nrequire = [\"A\"]\n",
            3,
            "exactly one condition",
        ),
        ("[env.A]\n[env.group.g]\nwhen = \"A\"\n", 3, "when"),
        ("[env]\nA = \"x\"\n", 2, "table of rules"),
    ];
    for (contract, line, key) in cases {
        let s = Scratch::new(contract);
        let run = s.run(&[], &[]);
        run.expect(2);
        let err = &run.json()["error"];
        assert_eq!(err["line"], *line, "{contract}\n{err}");
        assert!(err["message"].as_str().unwrap().contains(key), "{err}");
        assert!(err["file"].as_str().unwrap().ends_with("flightplan.toml"));
        // And people get file:line on stderr.
        let text = flightplan(&["--config", &s.config(), "check-env"], &[]);
        text.expect(2);
        assert!(
            text.stderr.contains(&format!("flightplan.toml:{line}")),
            "{}",
            text.stderr
        );
    }
    // No [env] section at all: nothing to check is a usage error too.
    Scratch::new("app = \"x\"\n").run(&[], &[]).expect(2);
}

#[test]
fn action_inputs_are_read_from_input_variables() {
    let fly = FakeFly::start_empty();
    fly.token("fm2_inputtoken").app("s2s", &["A"]);
    let s = Scratch::new("app = \"s2s\"\n[env.A]\nrequired = true\nsecret = true\n");
    let file = s.write("a.env", "A=value-from-file-1234\n");
    let run = s.run(
        &[],
        &[
            ("INPUT_ENV-FILE", file.as_str()),
            ("INPUT_FLY", "true"),
            ("FLY_API_TOKEN", "fm2_inputtoken"),
            ("FLY_API_URL", fly.url.as_str()),
        ],
    );
    run.expect(0);
    assert!(
        run.check("env", "A")["source"]
            .as_str()
            .unwrap()
            .ends_with("a.env:1")
    );
    assert_eq!(run.check("fly", "A")["status"], "ok");
    assert_eq!(fly.requests().len(), 1);

    let run = s.run(&[], &[("A", "abcdefgh1234"), ("INPUT_FLY", "maybe")]);
    run.expect(2);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("INPUT_FLY")
    );
}

/// As the action's entrypoint (no arguments): `command`, `config` and `env-file` come from
/// the runner's INPUT_* variables, hyphenated names included, and nothing else.
#[test]
fn the_entrypoint_reads_config_and_env_file_inputs() {
    let s = Scratch::new("[env.A]\nrequired = true\nsecret = true\n");
    let file = s.write("a.env", "A=value-from-file-1234\n");
    let config = s.config();
    let run = flightplan(
        &[],
        &[
            ("INPUT_COMMAND", "check-env"),
            ("INPUT_ARGS", "--format json"),
            ("INPUT_CONFIG", config.as_str()),
            ("INPUT_ENV-FILE", file.as_str()),
            ("INPUT_DRY-RUN", "false"),
        ],
    );
    run.expect(0);
    assert!(
        run.check("env", "A")["source"]
            .as_str()
            .unwrap()
            .ends_with("a.env:1")
    );
    // Without the env-file input the contract fails: the input is what fed it.
    let run = flightplan(
        &[],
        &[
            ("INPUT_COMMAND", "check-env"),
            ("INPUT_ARGS", "--format json"),
            ("INPUT_CONFIG", config.as_str()),
        ],
    );
    run.expect(1);
}

/// The example's contract and sample, with the sample's values in the process env.
fn sample_env() -> Vec<(String, String)> {
    sample_vars()
}

fn fly_run(fly: &FakeFly, token: &str, extra_env: &[(&str, &str)]) -> Run {
    let vars = sample_env();
    let mut env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("FLY_API_URL", fly.url.as_str()));
    env.push(("FLY_API_TOKEN", token));
    env.extend_from_slice(extra_env);
    flightplan(
        &[
            "--config",
            EXAMPLE_CONFIG,
            "--format",
            "json",
            "check-env",
            "--fly",
        ],
        &env,
    )
}

#[test]
fn fly_audit_reports_required_secrets_missing_from_the_app() {
    let fly = FakeFly::start_empty();
    fly.token("fm2_deploytoken").app(
        "secure2send",
        &[
            "DATABASE_URL",
            "SESSION_SECRET",
            "MAILGUN_API_KEY",
            "APP_URL",
            "IRIS_CRM_API_KEY",
            "DOCUSEAL_API_KEY",
            "ZAPIER_KINDTAP_WEBHOOK_URL",
            "ZAPIER_DOCUMENT_WEBHOOK_URL",
            "ZAPIER_WEBHOOK_SECRET",
            "CLOUDFLARE_R2_ACCESS_KEY_ID",
            "OPENAI_API_KEY_OCR_ONLY",
        ],
    );
    let run = fly_run(&fly, "FlyV1 fm2_deploytoken", &[]);
    run.expect(1);
    // Required, secret, and not in the app.
    for name in [
        "ZAPIER_APPLICATION_WEBHOOK_URL",
        "CLOUDFLARE_R2_SECRET_ACCESS_KEY",
    ] {
        let c = run.check("fly", name);
        assert_eq!(c["status"], "missing", "{c}");
        assert!(
            c["message"].as_str().unwrap().contains("fly secrets set"),
            "{c}"
        );
    }
    // Set in the app, and optional ones not set are fine.
    assert_eq!(run.check("fly", "SESSION_SECRET")["status"], "ok");
    assert_eq!(run.check("fly", "APP_URL")["status"], "ok");
    // FIELD_ENCRYPTION_KEY is optional and outside any group: absence is fine.
    assert_eq!(run.check("fly", "FIELD_ENCRYPTION_KEY")["status"], "ok");
    // Not secrets: fly.toml's business, not audited.
    let doc = run.json();
    assert!(
        !doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["scope"] == "fly" && c["name"] == "NODE_ENV")
    );
    assert_eq!(doc["fly"]["app"], "secure2send");
    assert_eq!(doc["fly"]["request_id"], "01FAKEREQ000001-ord");
    assert_eq!(
        doc["summary"]["failed_names"],
        serde_json::json!([
            "ZAPIER_APPLICATION_WEBHOOK_URL (Fly)",
            "CLOUDFLARE_R2_SECRET_ACCESS_KEY (Fly)"
        ])
    );
    let reqs = fly.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v1/apps/secure2send/secrets");
    assert_eq!(
        reqs[0].authorization.as_deref(),
        Some("FlyV1 fm2_deploytoken")
    );

    // FLY_APP overrides the config's `app`.
    let fly2 = FakeFly::start_empty();
    fly2.token("fm2_t").app("s2s-staging", &[]);
    let run = fly_run(&fly2, "fm2_t", &[("FLY_APP", "s2s-staging")]);
    run.expect(1);
    assert_eq!(fly2.requests()[0].path, "/v1/apps/s2s-staging/secrets");
}

#[test]
fn fly_auth_header_forms() {
    let fly = FakeFly::start_empty();
    fly.token("fm2_aaa")
        .token("fm2_bbb")
        .token("fm1r_ccc")
        .token("fm1a_ddd")
        .token("user-oauth-token-123")
        .app("secure2send", &[]);
    let cases = [
        ("FlyV1 fm2_aaa,fm2_bbb", "FlyV1 fm2_aaa,fm2_bbb"),
        ("fm2_aaa", "FlyV1 fm2_aaa"),
        ("  flyv1 fm1r_ccc ", "FlyV1 fm1r_ccc"),
        ("fm1a_ddd", "FlyV1 fm1a_ddd"),
        ("Bearer fm2_aaa", "FlyV1 fm2_aaa"),
        ("user-oauth-token-123", "Bearer user-oauth-token-123"),
        ("Bearer user-oauth-token-123", "Bearer user-oauth-token-123"),
    ];
    for (i, (token, header)) in cases.iter().enumerate() {
        let run = fly_run(&fly, token, &[]);
        // The app has no secrets at all, so the audit fails, but the request went through.
        run.expect(1);
        assert!(run.json()["error"].is_null(), "{token}: {}", run.stdout);
        assert_eq!(
            fly.requests()[i].authorization.as_deref(),
            Some(*header),
            "{token}"
        );
    }
}

#[test]
fn fly_rejects_a_bad_token_with_its_error_and_request_id() {
    let fly = FakeFly::start_empty();
    fly.token("fm2_good").app("secure2send", &["DATABASE_URL"]);
    let run = fly_run(&fly, "fm2_revoked", &[]);
    run.expect(1);
    let doc = run.json();
    let err = &doc["error"];
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("HTTP 401") && msg.contains("unauthorized"),
        "{err}"
    );
    assert!(msg.contains("secure2send"), "{err}");
    assert_eq!(err["request_id"], "01FAKEREQ000001-ord");
    assert_eq!(err["code"], "unknown");
    assert!(
        err["hint"]
            .as_str()
            .unwrap()
            .contains("fly tokens create deploy")
    );
    // The local checks are still reported.
    assert_eq!(doc["checks"].as_array().unwrap().len(), 29);
    assert_eq!(fly.requests().len(), 1, "a 401 is not retried");

    let text = flightplan(
        &["--config", EXAMPLE_CONFIG, "check-env", "--fly"],
        &[
            ("FLY_API_URL", fly.url.as_str()),
            ("FLY_API_TOKEN", "fm2_revoked"),
        ],
    );
    text.expect(1);
    assert!(
        text.stderr.contains("request id: 01FAKE"),
        "{}",
        text.stderr
    );
}

#[test]
fn fly_unknown_app_is_reported_with_flys_message() {
    let fly = FakeFly::start_empty();
    fly.token("fm2_good").app("other-app", &[]);
    let run = fly_run(&fly, "fm2_good", &[]);
    run.expect(1);
    let err = &run.json()["error"];
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("`secure2send` was not found") && msg.contains("app not found"),
        "{err}"
    );
    assert_eq!(err["request_id"], "01FAKEREQ000001-ord");
    assert!(err["hint"].as_str().unwrap().contains("FLY_APP"));
}

#[test]
fn fly_transient_errors_are_retried_then_reported() {
    let fly = FakeFly::start_empty();
    fly.token("fm2_good")
        .app("secure2send", &["DATABASE_URL"])
        .fail_next(503);
    let run = fly_run(&fly, "fm2_good", &[]);
    run.expect(1);
    assert!(run.json()["error"].is_null(), "{}", run.stdout);
    assert_eq!(fly.requests().len(), 2);

    let fly = FakeFly::start_empty();
    fly.token("fm2_good").app("secure2send", &[]);
    for _ in 0..3 {
        fly.fail_next(503);
    }
    let run = fly_run(&fly, "fm2_good", &[]);
    run.expect(1);
    let err = &run.json()["error"];
    assert!(
        err["message"].as_str().unwrap().contains("HTTP 503"),
        "{err}"
    );
    assert_eq!(err["code"], "insufficient_capacity");
    assert_eq!(fly.requests().len(), 3);
}

#[test]
fn fly_settings_are_checked_before_anything_is_contacted() {
    let fly = FakeFly::start_empty();
    let s = Scratch::new("[env.A]\n");
    // No app anywhere.
    let run = s.run(
        &["--fly"],
        &[("FLY_API_TOKEN", "fm2_x"), ("FLY_API_URL", &fly.url)],
    );
    run.expect(2);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FLY_APP")
    );
    // No token.
    let run = s.run(&["--fly"], &[("FLY_APP", "a"), ("FLY_API_URL", &fly.url)]);
    run.expect(2);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("FLY_API_TOKEN")
    );
    // Plain http to a non-local host.
    let run = s.run(
        &["--fly"],
        &[
            ("FLY_APP", "a"),
            ("FLY_API_TOKEN", "fm2_x"),
            ("FLY_API_URL", "http://api.machines.dev"),
        ],
    );
    run.expect(2);
    assert!(fly.requests().is_empty());
    // Nothing listening: exit 1, found by trying.
    let run = s.run(
        &["--fly"],
        &[
            ("FLY_APP", "a"),
            ("FLY_API_TOKEN", "fm2_x"),
            ("FLY_API_URL", "http://127.0.0.1:9"),
        ],
    );
    run.expect(1);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach")
    );
}

/// Values that must never appear in output, nor their first or last 8 characters. URL
/// secrets are searched whole (their first 8 characters are a scheme like `https://`);
/// their secret parts are canaries of their own.
fn assert_clean(what: &str, text: &str, canaries: &[&str]) {
    for c in canaries {
        let chars: Vec<char> = c.chars().collect();
        let mut needles = vec![c.to_string()];
        if !c.contains("://") {
            needles.push(chars[..8].iter().collect());
            needles.push(chars[chars.len() - 8..].iter().collect());
        }
        for needle in needles {
            assert!(
                !text.contains(&needle),
                "{what} leaks `{needle}` of a secret:\n{text}"
            );
        }
    }
}

#[test]
fn canary_no_secret_or_part_of_one_is_ever_printed() {
    let db_password = "Qv7cNRtP3xZk9wLm";
    let database_url =
        format!("postgresql://owner:{db_password}@ep-canary-1.eu-central-1.aws.neon.tech/s2s");
    let session = "Sx4TkqW9bJ2mR7yVn3pL"; // 20 chars: fails min_length 32
    let zapier = "Zq8HfM2vT6nW4kXc9rBp1sLd7gYj3eNa"; // ok
    let field = "F3a9c81e7b6d4052f1e8a7c6b5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4"; // ok
    let iris = "your-Ir7sKe9yWq2x"; // a placeholder, and a secret
    let hook = "https://hooks.zapier.com/hooks/catch/73519024/cNy4p8w/"; // secret URL
    let hook_path = "73519024/cNy4p8w";
    let openai = "Ok3nQw8zR5tY2uI7oP4aS";
    let fly_token = "fm2_Tk8wQz3xLm5nBv7cRd2fGh9j";

    let mut vars = sample_vars();
    for (k, v) in vars.iter_mut() {
        match k.as_str() {
            "DATABASE_URL" => *v = database_url.clone(),
            "SESSION_SECRET" => *v = session.into(),
            "ZAPIER_WEBHOOK_SECRET" => *v = zapier.into(),
            "FIELD_ENCRYPTION_KEY" => *v = field.into(),
            "IRIS_CRM_API_KEY" => *v = iris.into(),
            "ZAPIER_KINDTAP_WEBHOOK_URL" => *v = hook.into(),
            "OPENAI_API_KEY_OCR_ONLY" => *v = openai.into(),
            _ => {}
        }
    }
    let canaries = [
        database_url.as_str(),
        db_password,
        session,
        zapier,
        field,
        iris,
        hook,
        hook_path,
        openai,
        fly_token,
    ];
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("prod.env");
    std::fs::write(&env_file, env_text(&vars)).unwrap();

    // A Fly API that misbehaves: it echoes the Authorization header in its 401 body.
    let fly = FakeFly::start_empty();
    fly.token("fm2_other").app("secure2send", &[]).echo_auth();

    let run_with = |format: &str, gha: bool| {
        let mut env = vec![
            ("FLY_API_URL", fly.url.as_str()),
            ("FLY_API_TOKEN", fly_token),
            // Also in the process environment, not only in the file.
            ("SESSION_SECRET", session),
        ];
        if gha {
            env.push(("GITHUB_ACTIONS", "true"));
        }
        flightplan(
            &[
                "--config",
                EXAMPLE_CONFIG,
                "--format",
                format,
                "check-env",
                "--fly",
                "--env-file",
                env_file.to_str().unwrap(),
            ],
            &env,
        )
    };

    for format in ["text", "json"] {
        let run = run_with(format, false);
        run.expect(1);
        assert_clean(&format!("{format} stdout"), &run.stdout, &canaries);
        assert_clean(&format!("{format} stderr"), &run.stderr, &canaries);
        assert!(!run.stderr.contains("::add-mask::"));
    }
    // The failures were found, without quoting anything.
    let run = run_with("json", false);
    assert_eq!(run.status("SESSION_SECRET"), "invalid");
    assert_eq!(run.status("IRIS_CRM_API_KEY"), "placeholder");
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 401")
    );
    assert!(
        run.stdout.contains("***"),
        "the echoed token was masked: {}",
        run.stdout
    );

    // In GitHub Actions every secret is announced first, then never printed again.
    for format in ["text", "json"] {
        let run = run_with(format, true);
        run.expect(1);
        let lines: Vec<&str> = run.stderr.lines().collect();
        let masks = lines
            .iter()
            .take_while(|l| l.starts_with("::add-mask::"))
            .count();
        assert!(masks >= canaries.len(), "{}", run.stderr);
        for c in canaries.iter().filter(|c| **c != hook_path) {
            assert!(
                lines[..masks].contains(&format!("::add-mask::{c}").as_str()),
                "{c} is not masked:\n{}",
                run.stderr
            );
        }
        let after: Vec<&str> = lines[masks..].to_vec();
        assert!(after.iter().all(|l| !l.starts_with("::add-mask::")));
        assert_clean("stderr after the masks", &after.join("\n"), &canaries);
        assert_clean("stdout", &run.stdout, &canaries);
        // Failures become annotations at the contract's line.
        assert!(
            run.stderr
                .contains("::error file=examples/secure2send/flightplan.toml,line="),
            "{}",
            run.stderr
        );
    }
}
