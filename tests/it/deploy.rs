//! `flightplan deploy` and `rollback` as a process: the `fly` provider against a stateful
//! fake of the Machines API on 127.0.0.1 (tests/support_fly), the `command` provider with
//! real shell commands, and `--restore-backup` with pg_dump on the real PostgreSQL.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::db::{Run, TestDb};
use crate::support::fly::{FakeMachines, OUR_OWNER, Recorded, app_config};
use serde_json::{Value, json};

const APP: &str = "secure2send";
const V1: &str = "registry.fly.io/secure2send:deployment-01V1";
const V2: &str = "registry.fly.io/secure2send:deployment-02V2";
const V3: &str = "registry.fly.io/secure2send:deployment-03V3";
/// A deploy token as `fly tokens create deploy` prints it: two macaroons.
const MAC_A: &str = "fm2_lJPECAAAAAAAAMqnxBA1TmV3IHRva2VuIG9uZQ";
const MAC_B: &str = "fm2_lJPETzYxMDE4OTc3MTQ1NDYwNzk0MDE2Ng";

fn token() -> String {
    format!("FlyV1 {MAC_A},{MAC_B}")
}

/// A workspace with a flightplan.toml for the app and the given `[deploy]` lines.
fn workspace(deploy: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), deploy);
    dir
}

fn write_config(dir: &Path, deploy: &str) {
    std::fs::write(
        dir.join("flightplan.toml"),
        format!("app = \"{APP}\"\n\n[deploy]\n{deploy}\n"),
    )
    .unwrap();
}

/// The binary in `dir`, pointed at the fake with `token`.
fn cmd(dir: &Path, fly: &FakeMachines, token: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
    c.args(args)
        .current_dir(dir)
        .env("FLY_API_URL", &fly.url)
        .env("FLY_API_TOKEN", token)
        .env_remove("FLY_APP")
        .env_remove("FLIGHTPLAN_CONFIG")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("FLIGHTPLAN_LOG")
        .env_remove("INPUT_IMAGE")
        .env_remove("INPUT_RESTORE-BACKUP")
        .env_remove("INPUT_CONFIRM")
        .stdin(Stdio::null());
    c
}

fn run(dir: &Path, fly: &FakeMachines, token: &str, args: &[&str]) -> Run {
    Run::from(cmd(dir, fly, token, args).output().unwrap())
}

/// Three started machines of `app` in two regions, plus machines a deploy must not touch.
fn three_machines(fly: &FakeMachines) {
    fly.machine("m1", "ord", "app", V1)
        .machine("m2", "ord", "app", V1)
        .machine("m3", "ams", "app", V1)
        .machine("w1", "ord", "worker", V1)
        .machine_in_state("rel", "ord", "fly_app_release_command", V1, "stopped")
        .machine("con", "ord", "fly_app_console", V1)
        .machine_in_state("gone", "ord", "app", V1, "destroyed");
}

#[track_caller]
fn assert_no_token(r: &Run, token: &str) {
    for part in flightplan::fly::strip_scheme(token).split(',') {
        assert!(
            !r.stdout.contains(part) && !r.stderr.contains(part),
            "the token leaked:\nstdout:\n{}\nstderr:\n{}",
            r.stdout,
            r.stderr
        );
    }
}

/// Index of the first request matching `short` (e.g. "POST m2") with a 2xx answer.
fn first_ok(reqs: &[Recorded], short: &str) -> usize {
    reqs.iter()
        .position(|r| r.short() == short && (200..300).contains(&r.status))
        .unwrap_or_else(|| panic!("no successful `{short}` in {:#?}", shorts(reqs)))
}

fn last(reqs: &[Recorded], short: &str) -> usize {
    reqs.iter()
        .rposition(|r| r.short() == short)
        .unwrap_or_else(|| panic!("no `{short}` in {:#?}", shorts(reqs)))
}

fn shorts(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .map(|r| format!("{} -> {}", r.short(), r.status))
        .collect()
}

/// The machine's config as it was before the deploy, with only the image and the
/// previous-image metadata changed.
fn expected_config(image: &str, previous: Option<&str>) -> Value {
    let mut c = app_config("app", image);
    if let Some(p) = previous {
        c["metadata"]["flightplan_previous_image"] = json!(p);
    }
    c
}

#[test]
fn a_rolling_deploy_of_three_machines_updates_one_at_a_time_records_the_previous_image_and_releases_the_leases()
 {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    three_machines(&fly);
    // Slow enough that the 3 s leases must be refreshed; answers that are not immediate.
    fly.slowness(4, 2)
        .inject("GET", "/machines", 429, 1)
        .inject("POST", "/machines/m2", 429, 1);
    let ws = workspace("lease_ttl = \"3s\"\nwait_timeout = \"30s\"\n");

    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["--format", "json", "deploy", "--image", V2],
    );
    r.expect(0);
    assert_no_token(&r, &token());
    let j = r.json();
    assert_eq!(j["ok"], true);
    assert_eq!(j["app"], APP);
    assert_eq!(j["image"], V2);
    assert_eq!(j["reverted"], false);
    assert_eq!(j["previous_images"], json!({"m1": V1, "m2": V1, "m3": V1}));
    let machines = j["machines"].as_array().unwrap();
    assert_eq!(machines.len(), 3, "{j}");
    for (m, (id, region)) in machines
        .iter()
        .zip([("m1", "ord"), ("m2", "ord"), ("m3", "ams")])
    {
        assert_eq!(m["id"], id);
        assert_eq!(m["region"], region);
        assert_eq!(m["image"], V2);
        assert_eq!(m["status"], "updated");
        assert_eq!(m["state"], "started");
    }

    // Every machine of the group runs the new image with the rest of its config untouched,
    // and remembers the old image; nothing else was changed; every lease is released.
    for id in ["m1", "m2", "m3"] {
        let m = fly.get(id);
        assert_eq!(m.config, expected_config(V2, Some(V1)), "{id}");
        assert_eq!(m.updates, 1, "{id}");
        assert_ne!(m.instance_id, format!("01INST{}V1", id.to_uppercase()));
        assert!(m.lease.is_none(), "{id} still leased");
    }
    for id in ["w1", "rel", "con", "gone"] {
        assert_eq!(fly.get(id).updates, 0, "{id} was updated");
    }
    let reqs = fly.requests();
    for id in ["w1", "rel", "con", "gone"] {
        assert!(
            !reqs
                .iter()
                .any(|r| r.path.contains(&format!("/machines/{id}"))),
            "{id} was contacted"
        );
    }
    // The listing asked for the process group, and was retried after its 429.
    let list = reqs.iter().find(|r| r.short() == "GET").unwrap();
    assert_eq!(
        list.query
            .get("metadata.fly_process_group")
            .map(String::as_str),
        Some("app")
    );
    assert_eq!(list.status, 429);
    assert!(
        reqs.iter()
            .any(|r| r.short() == "POST m2" && r.status == 429)
    );

    // Authorization: the FlyV1 scheme with both macaroons, on every request.
    let want = format!("FlyV1 {MAC_A},{MAC_B}");
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() == Some(want.as_str()))
    );

    // Updates carry the lease nonce and the full config; /wait asks for the new instance and
    // was answered 408 before the machine had started.
    for id in ["m1", "m2", "m3"] {
        let update = &reqs[first_ok(&reqs, &format!("POST {id}"))];
        let nonce = update
            .nonce
            .as_deref()
            .expect("update without a lease nonce");
        let lease = reqs
            .iter()
            .find(|r| r.short() == format!("POST {id}/lease") && r.nonce.is_none())
            .unwrap();
        assert_eq!(lease.status, 201);
        assert_eq!(lease.query.get("ttl").map(String::as_str), Some("3"));
        assert!(!nonce.is_empty());
        assert_eq!(
            update.body.as_ref().unwrap()["config"],
            expected_config(V2, Some(V1))
        );
        let waits: Vec<&Recorded> = reqs
            .iter()
            .filter(|r| r.short() == format!("GET {id}/wait"))
            .collect();
        assert!(
            waits.iter().any(|w| w.status == 408),
            "{id}: no 408 from /wait"
        );
        assert!(
            waits
                .iter()
                .all(|w| w.query.get("instance_id")
                    == Some(&format!("01INST{}V2", id.to_uppercase())))
        );
        assert!(
            waits
                .iter()
                .all(|w| w.query.get("state").map(String::as_str) == Some("started"))
        );
        let release = &reqs[last(&reqs, &format!("DELETE {id}/lease"))];
        assert_eq!(release.status, 200);
        assert!(release.nonce.is_some());
    }
    // One at a time: a machine is updated only after the previous one was polled until
    // its checks passed (empty for the first polls after its start).
    for (prev, next) in [("m1", "m2"), ("m2", "m3")] {
        let prev_update = first_ok(&reqs, &format!("POST {prev}"));
        let next_update = first_ok(&reqs, &format!("POST {next}"));
        let polls = reqs[prev_update..next_update]
            .iter()
            .filter(|r| r.short() == format!("GET {prev}"))
            .count();
        assert!(
            polls >= 5,
            "{next} updated after only {polls} polls of {prev}"
        );
        assert!(next_update > last(&reqs, &format!("GET {prev}/wait")));
    }
    // The 3 s leases outlived a longer deploy because they were refreshed with their nonce.
    assert!(
        reqs.iter().any(|r| r.short().ends_with("/lease")
            && r.method == "POST"
            && r.nonce.is_some()
            && r.status == 200),
        "no lease refresh in {:#?}",
        shorts(&reqs)
    );

    // Text output for people: every machine with its region, status and old image.
    let fly2 = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    fly2.machine("m1", "ord", "app", V1).slowness(0, 0);
    let r = run(ws.path(), &fly2, &token(), &["deploy", "--image", V2]);
    r.expect(0);
    assert!(
        r.stdout
            .contains(&format!("deploy of {V2} to {APP} (Fly Machines): done")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains(&format!("m1  ord     updated        {V2} (was {V1})")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("flightplan_previous_image"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_failing_health_check_on_machine_2_reverts_machine_1_and_2_and_exits_1() {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    three_machines(&fly);
    fly.slowness(1, 1).critical_on("m2", V2);
    let ws = workspace("wait_timeout = \"2s\"\n");

    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["--format", "json", "deploy", "--image", V2],
    );
    r.expect(1);
    assert_no_token(&r, &token());
    let j = r.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["reverted"], true);
    assert_eq!(j["reverted_machines"], json!(["m1", "m2"]));
    assert_eq!(j["previous_images"], json!({"m1": V1, "m2": V1, "m3": V1}));
    let status: Vec<(&str, &str, &str)> = j["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
                m["image"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        status,
        [
            ("m1", "reverted", V1),
            ("m2", "reverted", V1),
            ("m3", "not_updated", V1)
        ]
    );
    let err = &j["error"];
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains("m2") && msg.contains("health checks"), "{msg}");
    assert!(
        msg.contains("critical") && msg.contains("500 Internal Server Error"),
        "{msg}"
    );
    assert!(!msg.contains("bg_deployments_compat"), "{msg}");
    let hint = err["hint"].as_str().unwrap();
    assert!(
        hint.contains("2 machines were put back") && hint.contains("m1, m2"),
        "{hint}"
    );
    assert!(
        j["machines"][1]["error"]
            .as_str()
            .unwrap()
            .contains("critical")
    );

    // Both updated machines run their exact recorded config again; m3 was never touched.
    for id in ["m1", "m2"] {
        let m = fly.get(id);
        assert_eq!(m.config, app_config("app", V1), "{id}");
        assert_eq!(m.updates, 2, "{id}: deploy and revert");
        assert_eq!(m.state, "started");
        assert!(m.lease.is_none(), "{id} still leased");
    }
    let m3 = fly.get("m3");
    assert_eq!((m3.updates, m3.lease.is_none()), (0, true));
    let reqs = fly.requests();
    assert!(
        reqs.iter()
            .any(|r| r.short() == "DELETE m3/lease" && r.status == 200)
    );

    // The text form says what failed and what was put back.
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    fly.machine("m1", "ord", "app", V1)
        .slowness(0, 0)
        .critical_on("m1", V2);
    let r = run(ws.path(), &fly, &token(), &["deploy", "--image", V2]);
    r.expect(1);
    assert!(
        r.stdout.contains("FAILED, changes reverted"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("error: machine m1 (ord) did not pass its health checks"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("1 machine was put back on its previous config (m1)"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_machine_leased_by_someone_else_stops_the_deploy_before_anything_changes_naming_the_holder() {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    three_machines(&fly);
    fly.leased_by("m2", "alice@example.com");
    let ws = workspace("");

    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["--format", "json", "deploy", "--image", V2],
    );
    r.expect(1);
    let j = r.json();
    assert_eq!(j["reverted"], false);
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("machine m2 (ord)") && msg.contains("alice@example.com"),
        "{msg}"
    );
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert!(
        j["error"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("01FAKEREQ")
    );
    assert!(j["error"]["hint"].as_str().unwrap().contains("concurrency"));
    assert!(
        j["machines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "not_updated" && m["image"] == V1)
    );

    let reqs = fly.requests();
    assert!(
        !reqs
            .iter()
            .any(|r| r.method == "POST" && !r.path.ends_with("/lease")),
        "something was changed: {:#?}",
        shorts(&reqs)
    );
    // The lease already taken on m1 was given back; m3 was never leased; alice keeps hers.
    assert!(
        reqs.iter()
            .any(|r| r.short() == "DELETE m1/lease" && r.status == 200)
    );
    assert!(!reqs.iter().any(|r| r.short() == "POST m3/lease"));
    assert!(fly.get("m1").lease.is_none());
    assert_eq!(fly.get("m2").lease.unwrap().owner, "alice@example.com");
    for id in ["m1", "m2", "m3"] {
        assert_eq!(fly.get(id).config, app_config("app", V1));
    }
}

#[test]
fn rollback_from_a_fresh_workspace_finds_the_previous_image_in_machine_metadata() {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    three_machines(&fly);
    fly.slowness(1, 1);
    let deploy_ws = workspace("max_unavailable = 2\n");
    run(deploy_ws.path(), &fly, &token(), &["deploy", "--image", V2]).expect(0);
    drop(deploy_ws);

    // A new CI job: no files from the deploy, only the config.
    let ws = workspace("max_unavailable = 2\n");
    let r = run(ws.path(), &fly, &token(), &["--format", "json", "rollback"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["action"], "rollback");
    assert_eq!(j["image"], V1);
    assert_eq!(j["previous_images"], json!({"m1": V2, "m2": V2, "m3": V2}));
    assert_eq!(j["reverted"], false);
    for id in ["m1", "m2", "m3"] {
        let m = fly.get(id);
        assert_eq!(m.image(), V1, "{id}");
        // The image rolled back from is now the previous one: a second rollback undoes it.
        assert_eq!(m.metadata("flightplan_previous_image").as_deref(), Some(V2));
        assert!(m.lease.is_none());
        assert_eq!(m.state, "started");
    }
    assert!(
        j["machines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "updated" && m["image"] == V1)
    );

    // `--image` rolls forward to any image.
    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["--format", "json", "rollback", "--image", V3],
    );
    r.expect(0);
    assert_eq!(r.json()["image"], V3);
    assert!(
        ["m1", "m2", "m3"]
            .iter()
            .all(|id| fly.get(id).image() == V3)
    );
    assert_eq!(fly.get("w1").image(), V1);
}

#[test]
fn rollback_without_a_recorded_image_names_the_machines_and_changes_nothing() {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    fly.machine("m1", "ord", "app", V2)
        .machine("m2", "ams", "app", V2)
        .set_metadata("m1", "flightplan_previous_image", V1);
    let ws = workspace("");
    let r = run(ws.path(), &fly, &token(), &["--format", "json", "rollback"]);
    r.expect(1);
    let j = r.json();
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("machine(s) m2 (") && msg.contains("nothing was changed"),
        "{msg}"
    );
    assert!(j["error"]["hint"].as_str().unwrap().contains("--image"));
    assert_eq!(fly.get("m1").updates + fly.get("m2").updates, 0);
    assert!(fly.machines().iter().all(|m| m.lease.is_none()));
}

#[test]
fn canary_goes_first_alone_then_batches_of_max_unavailable_and_stopped_machines_stay_stopped() {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    fly.machine("m1", "ord", "app", V1)
        .machine("m2", "ord", "app", V1)
        .machine("m3", "ams", "app", V1)
        .machine("m4", "ams", "app", V1)
        .machine_in_state("m5", "syd", "app", V1, "stopped")
        .slowness(3, 0);
    let ws = workspace("strategy = \"canary\"\nmax_unavailable = 2\n");
    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["--format", "json", "deploy", "--image", V2],
    );
    r.expect(0);
    let reqs = fly.requests();
    let at = |s: &str| first_ok(&reqs, s);
    // Checks show after 3 empty polls, so a machine is healthy after 4 polls of it.
    let polls = |id: &str, from: usize, to: usize| {
        reqs[from..to]
            .iter()
            .filter(|r| r.short() == format!("GET {id}"))
            .count()
    };
    // The canary is healthy before anything else changes.
    assert!(polls("m1", at("POST m1"), at("POST m2")) >= 4);
    // m2 and m3 go together: m3 is updated before m2 is healthy.
    assert!(polls("m2", at("POST m2"), at("POST m3")) < 4);
    // m4 waits for both.
    assert!(polls("m2", at("POST m2"), at("POST m4")) >= 4);
    assert!(polls("m3", at("POST m3"), at("POST m4")) >= 4);
    // The stopped machine is updated without being started, and only waited for `stopped`.
    let m5 = &reqs[at("POST m5")];
    assert_eq!(m5.body.as_ref().unwrap()["skip_launch"], true);
    let waits: Vec<&Recorded> = reqs.iter().filter(|r| r.short() == "GET m5/wait").collect();
    assert!(!waits.is_empty() && waits.iter().all(|w| w.query["state"] == "stopped"));
    assert!(
        !reqs[at("POST m5")..].iter().any(|r| r.short() == "GET m5"),
        "m5's checks were awaited"
    );
    assert_eq!(fly.get("m5").state, "stopped");
    assert!(fly.machines().iter().all(|m| m.image() == V2));
    let j = r.json();
    assert_eq!(j["machines"][4]["state"], "stopped");
    assert_eq!(j["machines"][4]["status"], "updated");
}

#[test]
fn tokens_get_the_authorization_scheme_fly_expects_and_a_rejected_token_shows_flys_error() {
    let plain = "plain-user-token-0123456789";
    for (given, accepted, header) in [
        (
            token(),
            vec![MAC_A, MAC_B],
            format!("FlyV1 {MAC_A},{MAC_B}"),
        ),
        (
            format!("{MAC_A},{MAC_B}"),
            vec![MAC_A, MAC_B],
            format!("FlyV1 {MAC_A},{MAC_B}"),
        ),
        (plain.to_string(), vec![plain], format!("Bearer {plain}")),
    ] {
        let fly = FakeMachines::start(APP, &accepted);
        fly.machine("m1", "ord", "app", V1).slowness(0, 0);
        let ws = workspace("");
        let r = run(
            ws.path(),
            &fly,
            &given,
            &["--format", "json", "deploy", "--image", V2],
        );
        r.expect(0);
        assert_no_token(&r, &given);
        let reqs = fly.requests();
        assert!(
            reqs.iter()
                .all(|r| r.authorization.as_deref() == Some(header.as_str())),
            "{given}: {:?}",
            reqs.iter()
                .map(|r| r.authorization.clone())
                .collect::<Vec<_>>()
        );
        assert_eq!(fly.get("m1").image(), V2);
    }

    // A wrong token: exit 1 with Fly's error text and request id, and the token nowhere.
    let fly = FakeMachines::start(APP, &[MAC_A]);
    fly.machine("m1", "ord", "app", V1);
    let ws = workspace("");
    let wrong = "FlyV1 fm2_wrongwrongwrongwrong";
    let r = run(ws.path(), &fly, wrong, &["deploy", "--image", V2]);
    r.expect(1);
    assert_no_token(&r, wrong);
    assert!(r.stderr.contains("rejected FLY_API_TOKEN"), "{}", r.stderr);
    assert!(r.stderr.contains("token validation error"), "{}", r.stderr);
    assert!(r.stderr.contains("request id: 01FAKEREQ"), "{}", r.stderr);
    let r = run(
        ws.path(),
        &fly,
        wrong,
        &["--format", "json", "deploy", "--image", V2],
    );
    r.expect(1);
    assert_no_token(&r, wrong);
    let j = r.json();
    assert!(
        j["error"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("01FAKEREQ")
    );
    assert_eq!(j["app"], APP);
    assert_eq!(fly.get("m1").updates, 0);
}

#[test]
fn mistakes_found_before_anything_is_contacted_exit_2() {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    fly.machine("m1", "ord", "app", V1);

    let ws = workspace("provider = \"fly\"\nmax_unavailabel = 2\n");
    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["--format", "json", "deploy", "--image", V2],
    );
    r.expect(2);
    let e = &r.json()["error"];
    assert!(
        e["message"].as_str().unwrap().contains("max_unavailabel"),
        "{e}"
    );
    assert_eq!(e["line"], 5);
    assert!(e["file"].as_str().unwrap().ends_with("flightplan.toml"));

    let ws = workspace("strategy = \"bluegreen\"\n");
    run(ws.path(), &fly, &token(), &["deploy", "--image", V2]).expect(2);

    let ws = workspace("");
    let r = run(ws.path(), &fly, &token(), &["deploy"]);
    r.expect(2);
    assert!(r.stderr.contains("--image"), "{}", r.stderr);
    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["deploy", "--image", "app:v2; curl evil"],
    );
    r.expect(2);
    let r = run(ws.path(), &fly, "", &["deploy", "--image", V2]);
    r.expect(2);
    assert!(r.stderr.contains("FLY_API_TOKEN"), "{}", r.stderr);
    let r = run(
        ws.path(),
        &fly,
        &token(),
        &["rollback", "--restore-backup", "b1"],
    );
    r.expect(2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);

    let ws = workspace("provider = \"command\"\n");
    let r = run(ws.path(), &fly, &token(), &["deploy", "--image", V2]);
    r.expect(2);
    assert!(r.stderr.contains("needs `command`"), "{}", r.stderr);

    assert!(fly.requests().is_empty(), "{:#?}", shorts(&fly.requests()));
}

#[test]
fn the_command_provider_deploys_rolls_back_and_puts_back_the_previous_image_on_failure_with_output_redacted()
 {
    let fly = FakeMachines::start(APP, &[MAC_A]);
    let secret = "FlyV1 fm2_commandProviderSecret123456";
    let ws = workspace(
        r#"provider = "command"
command = '''
echo "deploying {image} (was: $FLIGHTPLAN_PREVIOUS_IMAGE) with $FLY_API_TOKEN"
case "{image}" in *bad*) echo "boom: {image} does not start" >&2; exit 3;; esac
echo {image} > current.txt
'''
rollback_command = 'echo "rolling back to {image} from {previous_image}"; echo {image} > current.txt'
"#,
    );
    let current = || {
        std::fs::read_to_string(ws.path().join("current.txt"))
            .unwrap()
            .trim()
            .to_string()
    };

    let r = run(
        ws.path(),
        &fly,
        secret,
        &["--format", "json", "deploy", "--image", "v1.0.0"],
    );
    r.expect(0);
    assert_no_token(&r, secret);
    let j = r.json();
    assert_eq!(j["provider"], "command");
    assert_eq!(j["image"], "v1.0.0");
    assert_eq!(j["previous_images"], json!({}));
    let out = j["output"].as_str().unwrap();
    assert!(out.contains("deploying v1.0.0 (was: ) with ***"), "{out}");
    assert_eq!(current(), "v1.0.0");

    let r = run(
        ws.path(),
        &fly,
        secret,
        &["--format", "json", "deploy", "--image", "v2.0.0"],
    );
    r.expect(0);
    let j = r.json();
    assert_eq!(j["previous_images"], json!({"command": "v1.0.0"}));
    assert_eq!(
        j["machines"],
        json!([{"id": "command", "region": null, "image": "v2.0.0", "status": "updated", "state": null, "previous_image": "v1.0.0"}])
    );
    assert_eq!(current(), "v2.0.0");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(ws.path().join(".flightplan/deploy-state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (state["image"].as_str(), state["previous_image"].as_str()),
        (Some("v2.0.0"), Some("v1.0.0"))
    );

    // A failing deploy puts the running version back with `command`.
    let r = run(ws.path(), &fly, secret, &["deploy", "--image", "v3-bad"]);
    r.expect(1);
    assert_no_token(&r, secret);
    assert!(
        r.stdout.contains("FAILED, changes reverted"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("boom: v3-bad does not start"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("deploying v2.0.0 (was: v3-bad) with ***"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("[deploy] command exited with status 3"),
        "{}",
        r.stderr
    );
    assert_eq!(current(), "v2.0.0");

    // Rollback goes to the image the last successful deploy replaced.
    let r = run(ws.path(), &fly, secret, &["--format", "json", "rollback"]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["image"], "v1.0.0");
    assert!(
        j["output"]
            .as_str()
            .unwrap()
            .contains("rolling back to v1.0.0 from v2.0.0")
    );
    assert_eq!(current(), "v1.0.0");
    assert!(fly.requests().is_empty());
}

#[test]
fn rollback_with_restore_backup_puts_the_images_back_first_then_stops_restores_and_starts_them() {
    let db = TestDb::new();
    db.query("CREATE TABLE notes (n int); INSERT INTO notes VALUES (1);");
    let dir = db.dir.path();
    std::fs::write(
        dir.join("flightplan.toml"),
        format!("app = \"{APP}\"\n[backup]\nprovider = \"pg_dump\"\ndir = \"backups\"\n[deploy]\nwait_timeout = \"30s\"\n"),
    )
    .unwrap();
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    fly.machine("m1", "ord", "app", V1)
        .machine("m2", "ams", "app", V1)
        .machine_in_state("m3", "ams", "app", V1, "stopped")
        .slowness(1, 1);
    let with_db = |args: &[&str]| {
        let mut c = cmd(dir, &fly, &token(), args);
        c.env("DATABASE_URL", &db.url);
        Run::from(c.output().unwrap())
    };
    let backup = with_db(&["--format", "json", "backup", "create"])
        .expect(0)
        .json();
    let id = backup["id"].as_str().unwrap().to_string();
    with_db(&["deploy", "--image", V2]).expect(0);
    db.query("INSERT INTO notes VALUES (2);");
    let before = fly.requests().len();

    // Without --yes, or with an unknown backup: nothing is touched.
    with_db(&["rollback", "--restore-backup", &id]).expect(2);
    let r = with_db(&[
        "rollback",
        "--restore-backup",
        "no-such-backup.dump",
        "--yes",
    ]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no-such-backup.dump"), "{}", r.stderr);
    assert_eq!(
        fly.requests().len(),
        before,
        "{:#?}",
        shorts(&fly.requests()[before..])
    );

    let r = with_db(&[
        "--format",
        "json",
        "rollback",
        "--restore-backup",
        &id,
        "--yes",
    ]);
    r.expect(0);
    let j = r.json();
    assert_eq!(j["database"]["backup_id"], id.as_str());
    assert_eq!(j["image"], V1);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM notes").as_deref(),
        Some("1")
    );
    for (id, state) in [("m1", "started"), ("m2", "started"), ("m3", "stopped")] {
        let m = fly.get(id);
        assert_eq!(
            (m.image(), m.state.as_str()),
            (V1.to_string(), state),
            "{id}"
        );
        assert!(m.lease.is_none());
    }
    // The image rollback never depends on the restore (issue 16): every machine is back on
    // its previous image first; then the running ones are stopped, the database restored,
    // and they are started again. The stopped one is not stopped again.
    let reqs = &fly.requests()[before..];
    let stops: Vec<usize> = reqs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.short().ends_with("/stop"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(stops.len(), 2, "{:#?}", shorts(reqs));
    let last_update = ["m1", "m2", "m3"]
        .iter()
        .map(|m| first_ok(reqs, &format!("POST {m}")))
        .max()
        .unwrap();
    assert!(
        stops.iter().all(|&s| s > last_update),
        "{:#?}",
        shorts(reqs)
    );
    let starts: Vec<usize> = reqs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.short().ends_with("/start") && r.status == 200)
        .map(|(i, _)| i)
        .collect();
    assert!(
        starts.len() >= 2 && starts.iter().all(|&s| s > *stops.iter().max().unwrap()),
        "{:#?}",
        shorts(reqs)
    );
    assert!(!reqs.iter().any(|r| r.short() == "POST m3/stop"));
    let _ = OUR_OWNER;
}

#[test]
fn a_dry_run_preview_shows_each_machine_and_what_a_deploy_would_change_without_touching_anything() {
    let fly = FakeMachines::start(APP, &[MAC_A, MAC_B]);
    fly.machine("m1", "ord", "app", V1)
        .machine("m2", "ams", "app", V2)
        .machine("w1", "ord", "worker", V1);
    let ws = workspace("");
    let config = ws.path().join("flightplan.toml");
    let (url, tok) = (fly.url.clone(), token());
    let env = move |k: &str| match k {
        "FLY_API_URL" => Some(url.clone()),
        "FLY_API_TOKEN" => Some(tok.clone()),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let loaded = flightplan::config::Loaded::load(Some(&config), &env).unwrap();
    let src = flightplan::settings::Sources::new(&loaded, &env);
    let deployer = src.deployer().unwrap();
    let report = rt.block_on(flightplan::deploy::Deployer::preview(&deployer, Some(V2)));
    let outcome = report.into_outcome(&src.redactor());
    assert!(outcome.ok, "{:?}", outcome.error);
    let j = Value::Object(outcome.json);
    assert_eq!(j["dry_run"], true);
    assert_eq!(j["previous_images"], json!({"m1": V1, "m2": V2}));
    let status: Vec<(&str, &str)> = j["machines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(status, [("m1", "pending"), ("m2", "unchanged")]);
    assert!(
        outcome.text.contains("dry run, nothing changed"),
        "{}",
        outcome.text
    );
    assert!(outcome.text.contains("would update"), "{}", outcome.text);
    // Only the listing: no lease, no update.
    let reqs = fly.requests();
    assert_eq!(shorts(&reqs), ["GET -> 200"]);
}
