//! `flightplan run` end to end, as a process with the variables GitHub sets, against the real
//! PostgreSQL, stateful fakes of the Neon, Fly and GitHub APIs on 127.0.0.1, and the worked
//! example's app: success, a re-run updating the same comment, a failing migration, a failing
//! smoke test rolled back, a dry run, and no secret anywhere.

use crate::support::db::Run;
use crate::support::world::*;

#[test]
fn a_successful_run_reports_everywhere_and_a_second_run_updates_the_same_comment() {
    let w = World::new("");
    let first = w.run(&["run", "--image", V2]);
    first.expect(0);

    // Database: the two pending migrations applied, after a backup branch was taken.
    assert_eq!(w.db.ledger().len(), 23);
    assert!(w.db.table_exists("agent_notes"));
    let backups: Vec<String> = w
        .neon
        .names()
        .into_iter()
        .filter(|n| n.starts_with("flightplan/backup/"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    // Machines: all on the new image, the old one remembered.
    assert_eq!(w.machine_images(), vec![V2; 3]);
    assert_eq!(
        w.fly
            .get("m1")
            .metadata("flightplan_previous_image")
            .as_deref(),
        Some(V1)
    );

    // The log, the summary and the outputs.
    let log = w.log();
    assert_eq!(log["status"], "SUCCESS");
    let steps: Vec<(&str, &str)> = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("preflight", "ok"),
            ("plan", "ok"),
            ("backup", "ok"),
            ("migrate", "ok"),
            ("deploy", "ok"),
            ("smoke", "ok")
        ]
    );
    assert_eq!(log["migrations_applied"].as_array().unwrap().len(), 2);
    let summary = w.read("summary.md");
    assert!(
        summary.starts_with("## ✅ Deployment SUCCESS — secure2send (production)"),
        "{summary}"
    );
    assert!(summary.contains("```mermaid\ngantt"));
    assert!(summary.contains("020_add_current_step.sql"));
    let out = w.outputs();
    assert_eq!(out["status"], "SUCCESS");
    assert_eq!(out["image"], V2);
    assert_eq!(out["previous-image"], V1);
    assert_eq!(
        out["migrations-applied"],
        "020_add_agent_notes.sql\n020_add_current_step.sql"
    );
    assert!(out["backup-id"].starts_with("br-"), "{}", out["backup-id"]);
    // A path the runner's later steps can open: relative to the workspace.
    assert_eq!(out["log-path"], "flightplan-log.json");
    assert!(w.path(&out["log-path"]).exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(w.path(&out["log-path"]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the log names the backup and the app: owner only"
        );
    }

    // GitHub: one sticky comment beside the human one, one deployment with its statuses.
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1);
    assert!(
        comments[0]
            .body
            .contains("<!-- flightplan:deployment-log -->")
    );
    assert!(comments[0].body.contains("SUCCESS"));
    assert_eq!(
        w.github
            .comments(MERGED_PR)
            .iter()
            .filter(|c| c.user_type == "User")
            .count(),
        1
    );
    let deployments = w.github.deployments();
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    assert_eq!(d.body["ref"], SHA);
    assert_eq!(d.body["required_contexts"], serde_json::json!([]));
    assert_eq!(d.body["auto_merge"], false);
    assert_eq!(d.body["environment"], "production");
    let states: Vec<&str> = d
        .statuses
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["in_progress", "success"]);
    assert_eq!(d.statuses[1]["environment_url"], w.app_base.as_str());
    assert_eq!(
        d.statuses[1]["log_url"],
        format!("https://github.com/{REPO}/actions/runs/4242")
    );

    // Every secret is masked first, and none is anywhere.
    assert!(
        first
            .stderr
            .lines()
            .next()
            .unwrap_or("")
            .starts_with("::add-mask::"),
        "{}",
        first.stderr
    );

    // A second run (nothing pending, same image) updates the same comment.
    let second = w.run(&["run", "--image", V2]);
    second.expect(0);
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1, "the comment is updated, not duplicated");
    assert!(w.github.requests().iter().any(|r| {
        r.method == "PATCH"
            && r.path
                .ends_with(&format!("/issues/comments/{}", comments[0].id))
    }));
    assert_eq!(w.github.deployments().len(), 2);
    assert_no_secrets(&w.everything(&[&first, &second]));
}

#[test]
fn a_failing_migration_stops_before_deploying_and_reports_the_backup() {
    let w = World::new("");
    w.db.write(
        "021_broken.sql",
        "ALTER TABLE users ADD COLUMN broken intt;\n",
    );
    let run = w.run(&["run", "--image", V2]);
    run.expect(1);

    // The good pending files applied, the broken one did not, and nothing was deployed.
    let ledger: Vec<String> = w.db.ledger().into_iter().map(|(f, _)| f).collect();
    assert!(ledger.contains(&"020_add_current_step.sql".to_string()));
    assert!(!ledger.contains(&"021_broken.sql".to_string()));
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert!(
        !w.fly.requests().iter().any(|r| r.method == "POST"),
        "no lease, no update"
    );

    let log = w.log();
    assert_eq!(log["status"], "FAILED");
    assert_eq!(
        log["steps"].as_array().unwrap().last().unwrap()["name"],
        "migrate"
    );
    let issue = &log["issues"][0];
    assert!(
        issue["message"]
            .as_str()
            .unwrap()
            .contains("021_broken.sql"),
        "{issue}"
    );
    assert!(
        issue["location"]
            .as_str()
            .unwrap()
            .ends_with("021_broken.sql:1:37"),
        "{issue}"
    );
    let out = w.outputs();
    assert_eq!(out["status"], "FAILED");
    assert!(out["backup-id"].starts_with("br-"));
    assert!(
        log["resolution"]
            .as_str()
            .unwrap()
            .contains(&out["backup-id"])
    );
    assert!(
        run.stderr.contains("::error"),
        "an annotation for the failure: {}",
        run.stderr
    );
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.contains("FAILED"));
    let d = &w.github.deployments()[0];
    assert_eq!(d.statuses.last().unwrap()["state"], "failure");
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_failing_smoke_test_rolls_the_machines_back() {
    // A check the new release fails: the page it needs does not exist.
    let w = World::new(
        "[[smoke.check]]\nname = \"dashboard\"\npath = \"/api/admin/dashboard\"\nexpect_status = 200\n",
    );
    let run = w.run(&["run", "--image", V2]);
    run.expect(1);
    assert_eq!(
        w.machine_images(),
        vec![V1; 3],
        "every machine back on the old image"
    );
    let log = w.log();
    assert_eq!(log["status"], "ROLLED_BACK");
    let names: Vec<&str> = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "preflight",
            "plan",
            "backup",
            "migrate",
            "deploy",
            "smoke",
            "rollback"
        ]
    );
    assert!(log["resolution"].as_str().unwrap().contains("not restored"));
    assert_eq!(w.outputs()["status"], "ROLLED BACK");
    assert!(w.read("summary.md").contains("ROLLED BACK"));
    assert_eq!(
        w.db.ledger().len(),
        23,
        "migrations stay applied; the database is not restored by default"
    );
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_dry_run_changes_nothing() {
    let w = World::new("");
    let before = w.db.ledger();
    let run = w.run(&["run", "--image", V2, "--dry-run"]);
    run.expect(0);
    assert_eq!(w.db.ledger(), before);
    assert!(
        !w.neon
            .names()
            .iter()
            .any(|n| n.starts_with("flightplan/backup/"))
    );
    assert!(!w.fly.requests().iter().any(|r| r.method != "GET"));
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert!(
        w.github.requests().is_empty(),
        "no comment, no deployment on a dry run"
    );
    let log = w.log();
    assert_eq!(log["status"], "DRY_RUN");
    assert_eq!(
        log["migrations_pending"],
        serde_json::json!(["020_add_agent_notes.sql", "020_add_current_step.sql"])
    );
    assert!(w.read("summary.md").contains("DRY RUN"));
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_run_stopped_by_preflight_comments_but_creates_no_deployment() {
    let w = World::new("");
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env("SESSION_SECRET", "too-short");
    let run = Run::from(cmd.output().unwrap());
    run.expect(1);
    assert_eq!(w.db.ledger().len(), 21, "nothing migrated");
    assert!(
        w.neon
            .names()
            .iter()
            .all(|n| !n.starts_with("flightplan/backup/")),
        "no backup taken"
    );
    assert!(
        w.github.deployments().is_empty(),
        "the Deployment starts with the first change"
    );
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1);
    assert!(comments[0].body.contains("FAILED"));
    assert!(comments[0].body.contains("SESSION_SECRET"));
    assert!(!w.everything(&[&run]).contains("too-short"));
}

#[test]
fn the_drift_gate_stops_a_run_on_a_drifted_database_before_any_change() {
    let w = World::new("");
    let config = w
        .read("flightplan.toml")
        .replace("[migrate]\n", "[migrate]\ndrift_gate = true\n");
    std::fs::write(w.path("flightplan.toml"), config).unwrap();
    // What `db:push` does: a column no migration file has.
    w.db.query("ALTER TABLE users ADD COLUMN pushed_by_hand text");
    let run = w.run(&["run", "--image", V2]);
    run.expect(1);
    assert_eq!(w.db.ledger().len(), 21, "nothing migrated");
    assert!(
        !w.neon
            .names()
            .iter()
            .any(|n| n.starts_with("flightplan/backup/")),
        "no backup taken"
    );
    assert_eq!(w.machine_images(), vec![V1; 3]);
    let log = w.log();
    assert_eq!(log["status"], "FAILED");
    assert_eq!(log["drift"][0]["object"], "public.users.pushed_by_hand");
    assert!(log["drift"][0]["expected"].is_null());
    let summary = w.read("summary.md");
    assert!(summary.contains("### Schema drift (1)"), "{summary}");
    assert!(summary.contains("public.users.pushed_by_hand"));
    assert!(flightplan_comments(&w)[0].body.contains("Schema drift"));
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn a_run_started_by_a_pull_request_plans_and_comments_instead_of_deploying() {
    let w = World::new("");
    std::fs::write(
        w.path("event.json"),
        format!(r#"{{"pull_request": {{"number": {MERGED_PR}}}}}"#),
    )
    .unwrap();
    let mut cmd = w.cmd(&["run", "--image", V2]);
    cmd.env("GITHUB_EVENT_NAME", "pull_request");
    let run = Run::from(cmd.output().unwrap());
    run.expect(0);
    // Production untouched: no backup, no migration, no lease, no update, no Deployment.
    assert_eq!(w.db.ledger().len(), 21);
    assert!(
        !w.neon
            .names()
            .iter()
            .any(|n| n.starts_with("flightplan/backup/"))
    );
    assert!(w.fly.requests().iter().all(|r| r.method == "GET"));
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert!(w.github.deployments().is_empty());
    // What it did instead: the plan, said plainly, on the pull request.
    let log = w.log();
    assert_eq!(log["status"], "DRY_RUN");
    assert_eq!(log["plan"]["mode"], "pull request");
    let comments = flightplan_comments(&w);
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    assert!(body.contains("### Plan (pull request)"), "{body}");
    assert!(body.contains("A pull request never deploys"), "{body}");
    assert!(body.contains("020_add_current_step.sql"), "{body}");
    assert!(
        run.stdout.contains("never deploys")
            || log["resolution"]
                .as_str()
                .unwrap()
                .contains("never deploys")
    );
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn the_image_rollback_does_not_depend_on_the_database_restore() {
    let w = World::new(
        "[rollback]\nrestore_database = true\n[[smoke.check]]\nname = \"dashboard\"\npath = \"/api/admin/dashboard\"\nexpect_status = 200\n",
    );
    // Stopping the machines for the restore fails, every time.
    w.fly.inject("POST", "/stop", 500, 100);
    let run = w.run(&["run", "--image", V2]);
    run.expect(1);
    assert_eq!(
        w.machine_images(),
        vec![V1; 3],
        "the machines went back although the restore could not run"
    );
    let log = w.log();
    assert_eq!(log["status"], "ROLLED_BACK");
    let steps: Vec<(&str, &str)> = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        &steps[steps.len() - 3..],
        [
            ("smoke", "failed"),
            ("rollback", "ok"),
            ("restore", "failed")
        ]
    );
    let resolution = log["resolution"].as_str().unwrap();
    assert!(
        resolution.contains("rolled back to their previous images"),
        "{resolution}"
    );
    assert!(
        resolution.contains("restoring the database FAILED"),
        "{resolution}"
    );
    assert!(
        w.neon.sent("POST", "/restore").is_empty(),
        "nothing restored while the app could not be stopped"
    );
    assert_no_secrets(&w.everything(&[&run]));
}

#[test]
fn with_restore_database_the_images_go_back_first_then_the_database_is_restored() {
    let w = World::new(
        "[rollback]\nrestore_database = true\n[[smoke.check]]\nname = \"dashboard\"\npath = \"/api/admin/dashboard\"\nexpect_status = 200\n",
    );
    let run = w.run(&["run", "--image", V2]);
    run.expect(1);
    assert_eq!(w.machine_images(), vec![V1; 3]);
    let log = w.log();
    assert_eq!(log["status"], "ROLLED_BACK");
    let names: Vec<&str> = log["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(&names[names.len() - 2..], ["rollback", "restore"]);
    let backup = log["backup"]["id"].as_str().unwrap();
    let restores = w.neon.sent("POST", "/restore");
    assert_eq!(restores.len(), 1, "one restore, from the run's backup");
    assert!(
        format!("{:?}", restores[0].body).contains(backup),
        "{:?}",
        restores[0].body
    );
    // Every update of the image rollback came before the first stop of the restore.
    let reqs = w.fly.requests();
    let last_update = reqs
        .iter()
        .rposition(|r| r.short().starts_with("POST m") && !r.short().contains('/'))
        .unwrap();
    let first_stop = reqs
        .iter()
        .position(|r| r.short().ends_with("/stop"))
        .unwrap();
    assert!(last_update < first_stop);
    assert!(
        log["resolution"]
            .as_str()
            .unwrap()
            .contains("then restored")
    );
}
