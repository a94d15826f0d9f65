//! The Fly edges of issue 16, each against the stateful fake: lease acquisition sends the
//! body the description requires and the `?ttl=` fly-go sends, and survives a busy API
//! (429 always retried; a 503 or 409 only after the holder check finds the lease is ours);
//! a 404 on a machine endpoint names the machine; SIGTERM releases every lease before the
//! process exits, for `deploy` and inside `run`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::db::Run;
use crate::support::fly::FakeMachines;

const APP: &str = "secure2send";
const V1: &str = "registry.fly.io/secure2send:deployment-01V1";
const V2: &str = "registry.fly.io/secure2send:deployment-02V2";
const MAC: &str = "fm2_lJPECAAAAAAAAMqnxBA1TmV3IHRva2VuIG9uZQ";

fn world() -> (tempfile::TempDir, FakeMachines) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("flightplan.toml"),
        format!("app = \"{APP}\"\n\n[deploy]\nwait_timeout = \"20s\"\n"),
    )
    .unwrap();
    let fly = FakeMachines::start(APP, &[MAC]);
    fly.machine("m1", "ord", "app", V1)
        .machine("m2", "ord", "app", V1)
        .machine("m3", "ams", "app", V1);
    fly.slowness(0, 0);
    (dir, fly)
}

fn cmd(dir: &Path, fly: &FakeMachines, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flightplan"));
    c.args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FLY_API_URL", &fly.url)
        .env("FLY_API_TOKEN", format!("FlyV1 {MAC}"))
        .stdin(Stdio::null());
    c
}

fn count(fly: &FakeMachines, short: &str) -> usize {
    fly.requests().iter().filter(|r| r.short() == short).count()
}

#[track_caller]
fn assert_no_lease_held(fly: &FakeMachines) {
    for m in fly.machines() {
        assert!(
            m.lease.is_none(),
            "machine {} still leased: {:?}",
            m.id,
            m.lease
        );
    }
}

#[test]
fn lease_acquisition_sends_body_and_ttl_and_survives_429_and_a_503_that_was_granted() {
    let (dir, fly) = world();
    fly.inject("POST", "m1/lease", 429, 2)
        .lose_answer("POST", "m2/lease", 503, 1);
    let run = Run::from(
        cmd(dir.path(), &fly, &["deploy", "--image", V2])
            .output()
            .unwrap(),
    );
    run.expect(0);
    for m in fly.machines() {
        assert_eq!(m.image(), V2, "{}", run.stderr);
    }
    assert_no_lease_held(&fly);
    // The body the description requires, and the query fly-go sends, on every acquisition.
    let acquisitions: Vec<_> = fly
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/lease") && r.nonce.is_none())
        .collect();
    for r in &acquisitions {
        let body = r.body.as_ref().expect("a lease body");
        assert_eq!(body["ttl"], 30, "{body}");
        assert!(
            body["description"]
                .as_str()
                .unwrap()
                .starts_with("flightplan deploy "),
            "{body}"
        );
        assert_eq!(r.query.get("ttl").map(String::as_str), Some("30"));
    }
    // m1: two 429s then the lease; m2: the 503 whose lease was granted, recognised by its
    // description after one look, and never asked for twice.
    assert_eq!(
        acquisitions
            .iter()
            .filter(|r| r.path.ends_with("m1/lease"))
            .count(),
        3
    );
    assert_eq!(
        acquisitions
            .iter()
            .filter(|r| r.path.ends_with("m2/lease"))
            .count(),
        1
    );
    assert!(count(&fly, "GET m2/lease") >= 1);
}

#[test]
fn a_409_naming_flightplans_own_lease_is_taken_as_ours() {
    let (dir, fly) = world();
    // The first answer is lost and the holder check cannot see the lease (the GETs fail):
    // the acquisition is sent again, Fly answers 409, and the holder is this run.
    fly.lose_answer("POST", "m2/lease", 503, 1)
        .inject("GET", "m2/lease", 503, 4);
    let run = Run::from(
        cmd(dir.path(), &fly, &["deploy", "--image", V2])
            .output()
            .unwrap(),
    );
    run.expect(0);
    let reqs = fly.requests();
    assert!(
        reqs.iter()
            .any(|r| r.short() == "POST m2/lease" && r.status == 409),
        "a 409 was answered"
    );
    assert_eq!(fly.get("m2").image(), V2);
    assert_no_lease_held(&fly);
}

#[test]
fn a_404_on_a_machine_endpoint_names_the_machine() {
    let (dir, fly) = world();
    fly.inject("POST", "m2/lease", 404, 1);
    let run = Run::from(
        cmd(
            dir.path(),
            &fly,
            &["deploy", "--image", V2, "--format", "json"],
        )
        .output()
        .unwrap(),
    );
    run.expect(1);
    let msg = run.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("machine m2 of app `secure2send` was not found"),
        "{msg}"
    );
    assert!(!msg.contains("Fly app"), "{msg}");
    // Nothing changed, and the lease already taken was given back.
    for m in fly.machines() {
        assert_eq!(m.image(), V1);
    }
    assert_no_lease_held(&fly);
}

#[test]
fn sigterm_during_deploy_releases_every_lease_before_exiting() {
    let (dir, fly) = world();
    // Health checks never show up: the deploy waits on the first machine until signalled.
    fly.slowness(100_000, 0);
    let mut child = cmd(dir.path(), &fly, &["deploy", "--image", V2])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fly
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.body.as_ref().is_some_and(|b| b.get("config").is_some()))
    {
        assert!(
            Instant::now() < deadline,
            "the deploy never updated a machine"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fly.machines().iter().filter(|m| m.lease.is_some()).count(),
        3
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(20), "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("3 machine lease(s) released"), "{stderr}");
    // Released, not merely left to expire: each lease is gone and was DELETEd with its nonce.
    assert_no_lease_held(&fly);
    for id in ["m1", "m2", "m3"] {
        assert!(
            fly.requests()
                .iter()
                .any(|r| r.short() == format!("DELETE {id}/lease") && r.status == 200),
            "{id}"
        );
    }
}
