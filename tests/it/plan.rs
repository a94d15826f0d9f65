//! `run` builds its whole plan before the first change: every missing credential, app or
//! URL is refused at once (exit 2) with nothing backed up, migrated, leased, commented or
//! deployed; skips are decisions of the config; `--dry-run` is the plan.

use crate::support::db::Run;
use crate::support::world::*;

/// Asserts that production and every vendor are exactly as before the run.
fn nothing_changed(w: &World) {
    assert_eq!(w.db.ledger().len(), 21, "no ledger row written");
    assert!(
        !w.neon
            .names()
            .iter()
            .any(|n| n.starts_with("flightplan/backup/")),
        "no backup branch created: {:?}",
        w.neon.names()
    );
    assert!(
        w.neon.requests().iter().all(|r| r.method == "GET"),
        "Neon only read, if contacted at all"
    );
    assert!(
        w.fly.requests().iter().all(|r| r.method == "GET"),
        "no lease, no update: {:?}",
        w.fly
            .requests()
            .iter()
            .map(|r| r.short())
            .collect::<Vec<_>>()
    );
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert!(
        w.github.requests().is_empty(),
        "no comment, no Deployment: {:?}",
        w.github.requests().len()
    );
}

fn refused(w: &World, run: &Run, says: &[&str]) {
    assert_eq!(run.code, 2, "exit 2 for an incomplete plan\n{}", run.stderr);
    for s in says {
        assert!(
            run.stderr.contains(s),
            "the error names `{s}`:\n{}",
            run.stderr
        );
    }
    nothing_changed(w);
    let log = w.log();
    assert_eq!(log["status"], "FAILED");
    assert_eq!(log["steps"][0]["name"], "plan");
    let summary = w.read("summary.md");
    assert!(summary.contains("plan is incomplete"), "{summary}");
    assert_no_secrets(&w.everything(&[run]));
}

#[test]
fn a_missing_fly_token_is_refused_before_the_backup_and_the_migrations() {
    let w = World::new("");
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env_remove("FLY_API_TOKEN");
    let run = Run::from(cmd.output().unwrap());
    refused(&w, &run, &["FLY_API_TOKEN", "nothing was changed"]);
}

#[test]
fn missing_neon_credentials_are_refused_before_anything_changes() {
    let w = World::new("");
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env_remove("NEON_API_KEY");
    let run = Run::from(cmd.output().unwrap());
    refused(&w, &run, &["NEON_API_KEY"]);

    let w = World::new("");
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env_remove("NEON_PROJECT_ID");
    let run = Run::from(cmd.output().unwrap());
    refused(&w, &run, &["NEON_PROJECT_ID"]);
}

#[test]
fn a_missing_fly_app_and_a_bad_fly_api_url_are_refused_before_anything_changes() {
    let w = World::new("");
    w.edit_config(|c| c.replacen(&format!("app = \"{APP}\"\n"), "", 1));
    let run = w.run(&["run", "--image", V2]);
    refused(&w, &run, &["no Fly app", "FLY_APP"]);

    let w = World::new("");
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env("FLY_API_URL", "not a url at all");
    let run = Run::from(cmd.output().unwrap());
    refused(&w, &run, &["FLY_API_URL"]);
}

#[test]
fn every_problem_is_named_in_one_message() {
    let w = World::new("");
    w.edit_config(|c| c.replacen(&format!("app_url = \"{}\"\n", w.app_base), "", 1));
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env_remove("FLY_API_TOKEN").env_remove("NEON_API_KEY");
    let run = Run::from(cmd.output().unwrap());
    refused(
        &w,
        &run,
        &["3 problems", "FLY_API_TOKEN", "NEON_API_KEY", "no app URL"],
    );
    // Each problem is also an issue of the log, under its phase.
    let log = w.log();
    let phases: Vec<&str> = log["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["step"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["backup", "deploy", "smoke"]);
}

#[test]
fn no_app_url_is_a_planning_error_and_skipping_smoke_is_a_decision_the_log_names() {
    let w = World::new("");
    w.edit_config(|c| c.replacen(&format!("app_url = \"{}\"\n", w.app_base), "", 1));
    let run = w.run(&["run", "--image", V2]);
    refused(&w, &run, &["no app URL", "[smoke] enabled = false"]);

    // Said explicitly, the run deploys untested, and every report says so.
    let w = World::new("");
    w.edit_config(|c| {
        c.replacen(&format!("app_url = \"{}\"\n", w.app_base), "", 1)
            .replacen("[smoke]\n", "[smoke]\nenabled = false\n", 1)
    });
    let run = w.run(&["run", "--image", V2]);
    run.expect(0);
    assert_eq!(w.machine_images(), vec![V2; 3]);
    let log = w.log();
    assert_eq!(log["status"], "SUCCESS");
    let smoke = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "smoke")
        .expect("a smoke step");
    assert_eq!(smoke["status"], "skipped");
    assert!(
        smoke["summary"]
            .as_str()
            .unwrap()
            .contains("enabled = false"),
        "{smoke}"
    );
    assert!(w.read("summary.md").contains("enabled = false"));
}

#[test]
fn a_missing_image_is_a_planning_error_unless_the_config_deploys_nothing() {
    let w = World::new("");
    let run = w.run(&["run"]);
    refused(&w, &run, &["no image to deploy", "provider = \"none\""]);

    let w = World::new("");
    w.edit_config(|c| c.replacen("provider = \"fly\"", "provider = \"none\"", 1));
    let run = w.run(&["run"]);
    run.expect(0);
    assert_eq!(w.db.ledger().len(), 23, "migrations applied");
    assert_eq!(w.machine_images(), vec![V1; 3], "nothing deployed");
    let log = w.log();
    let deploy = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "deploy")
        .unwrap();
    assert_eq!(deploy["status"], "skipped");
    assert!(
        deploy["summary"]
            .as_str()
            .unwrap()
            .contains("provider = \"none\"")
    );
}

#[test]
fn the_dry_run_is_the_plan_and_ticks_nothing_that_did_not_happen() {
    let w = World::new("");
    let run = w.run(&["--format", "json", "run", "--image", V2, "--dry-run"]);
    run.expect(0);
    nothing_changed(&w);
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let plan = &doc["plan"];
    assert_eq!(plan["mode"], "dry run");
    let phases: Vec<&str> = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "preflight",
            "backup",
            "migrate",
            "deploy",
            "smoke",
            "report"
        ]
    );
    assert!(
        plan["phases"][1]["what"]
            .as_str()
            .unwrap()
            .contains("Neon branch")
    );
    assert!(plan["phases"][3]["what"].as_str().unwrap().contains(APP));
    assert!(
        plan["phases"][4]["what"]
            .as_str()
            .unwrap()
            .contains(&w.app_base)
    );
    let pending: Vec<(&str, bool)> = plan["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["filename"].as_str().unwrap(),
                f["transaction"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pending,
        [
            ("020_add_agent_notes.sql", true),
            ("020_add_current_step.sql", true)
        ]
    );
    // Three machines on V1, one at a time: three batches.
    let batches: Vec<(&str, u64)> = plan["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["batch"].as_u64().unwrap()))
        .collect();
    assert_eq!(batches, [("m1", 1), ("m2", 2), ("m3", 3)]);
    let report = plan["phases"][5]["details"].to_string();
    assert!(report.contains("summary"), "{report}");

    // The runbook template of a dry run ticks nothing: nothing was backed up or migrated.
    let log = w.log();
    assert_eq!(log["status"], "DRY_RUN");
    for step in log["steps"].as_array().unwrap() {
        assert_ne!(
            (step["name"].as_str(), step["status"].as_str()),
            (Some("migrate"), Some("ok")),
            "a dry run's migrate step is planned, not ok"
        );
    }
    let summary = w.read("summary.md");
    assert!(summary.contains("[ ] Migrations executed"), "{summary}");
    assert!(summary.contains("[ ] Database backup created"), "{summary}");
    assert!(summary.contains("[ ] Deploy executed"), "{summary}");
    assert!(!summary.contains("[x] No errors"), "{summary}");
    assert!(summary.contains("### Plan (dry run)"), "{summary}");
    assert!(summary.contains("020_add_agent_notes.sql"), "{summary}");

    // The same plan as text, on stdout.
    let text = w.run(&["run", "--image", V2, "--dry-run"]);
    text.expect(0);
    assert!(
        text.stdout.contains("### Plan (dry run)"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("| `m3` | ams |"), "{}", text.stdout);
    assert_no_secrets(&w.everything(&[&run, &text]));
}
