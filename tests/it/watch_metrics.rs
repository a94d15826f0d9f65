//! The watch window judged on production metrics: flightplan's PromQL evaluated by a real
//! Prometheus (support/prometheus.rs) behind a fake of Fly's metrics API auth.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::support::db::Run;
use crate::support::prometheus::{self, DEPLOY_TOKEN, GOOD_TOKEN, ORG, Prometheus, Traffic};
use crate::support::world::{self, APP, V1, V2, World};

const WATCH: &str =
    "[watch]\nduration = \"3s\"\ninterval = \"1s\"\npoll = \"200ms\"\nmin_requests = 100\n";

/// `flightplan --format json smoke --url <app>` with the metrics API's variables.
fn smoke(
    dir: &std::path::Path,
    app_url: &str,
    p: &Prometheus,
    token: &str,
    extra: &str,
) -> (Run, Value) {
    std::fs::write(dir.join("flightplan.toml"), format!("{WATCH}{extra}")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flightplan"))
        .args([
            "--config",
            "flightplan.toml",
            "--format",
            "json",
            "smoke",
            "--url",
            app_url,
        ])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("FLY_APP", APP)
        .env("FLY_ORG", ORG)
        .env("FLY_METRICS_URL", &p.url)
        .env("FLY_METRICS_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run::from(out);
    let doc = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run, doc)
}

fn health_app() -> (String, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    prometheus::serve(
        l,
        Router::new().route(
            "/api/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        ),
        stop.clone(),
    );
    (base, stop)
}

fn figure<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["watch"]["metrics"]["figures"]
        .as_array()
        .unwrap_or_else(|| panic!("no figures: {doc}"))
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no figure {name}: {doc}"))
}

#[test]
fn the_watch_judges_production_metrics_from_a_real_prometheus() {
    let p = Prometheus::start(APP);
    let (app, _stop) = health_app();
    let d = tempfile::tempdir().unwrap();

    // Before the rollout: half the responses failed, slowly, at 95% memory. None of it counts.
    p.set(Traffic {
        errors_per_mille: 500,
        latency_s: 0.8,
        memory_used: 0.95,
        cpu_busy: 0.95,
        ..Traffic::HEALTHY
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    p.set(Traffic::HEALTHY);
    let (run, doc) = smoke(d.path(), &app, &p, GOOD_TOKEN, "");
    run.expect(0);
    let m = &doc["watch"]["metrics"];
    assert_eq!(m["verdict"], "pass", "{doc}");
    assert!(m["requests"].as_f64().unwrap() >= 100.0, "{doc}");
    assert_eq!(figure(&doc, "error rate (5xx)")["value"], 0.0, "{doc}");
    assert!(
        figure(&doc, "p95 latency")["value"].as_f64().unwrap() < 500.0,
        "{doc}"
    );
    let mem = figure(&doc, "memory used")["value"].as_f64().unwrap();
    assert!((0.35..0.45).contains(&mem), "{doc}");
    let cpu = figure(&doc, "CPU")["value"].as_f64().unwrap();
    assert!((0.1..0.3).contains(&cpu), "{doc}");
    // One value per interval for each chart, and the text report draws them.
    assert_eq!(figure(&doc, "CPU")["series"].as_array().unwrap().len(), 3);
    assert!(run.stderr.contains("memory used"), "{}", run.stderr);

    // 3% of the responses are 5xx.
    p.set(Traffic {
        errors_per_mille: 30,
        ..Traffic::HEALTHY
    });
    let (run, doc) = smoke(d.path(), &app, &p, GOOD_TOKEN, "");
    run.expect(1);
    assert_eq!(doc["watch"]["metrics"]["verdict"], "fail", "{doc}");
    let rate = figure(&doc, "error rate (5xx)")["value"].as_f64().unwrap();
    assert!((0.02..0.04).contains(&rate), "{doc}");
    assert_eq!(figure(&doc, "error rate (5xx)")["ok"], false);
    assert!(run.stderr.contains("error rate (5xx)"), "{}", run.stderr);

    // Slow responses: p95 over the 500 ms budget.
    p.set(Traffic {
        latency_s: 0.8,
        ..Traffic::HEALTHY
    });
    let (run, doc) = smoke(d.path(), &app, &p, GOOD_TOKEN, "");
    run.expect(1);
    assert_eq!(figure(&doc, "p95 latency")["ok"], false, "{doc}");
    assert!(figure(&doc, "p95 latency")["value"].as_f64().unwrap() > 500.0);
    assert_eq!(figure(&doc, "error rate (5xx)")["ok"], true);

    // Memory at 90% of the machine.
    p.set(Traffic {
        memory_used: 0.9,
        ..Traffic::HEALTHY
    });
    let (run, doc) = smoke(d.path(), &app, &p, GOOD_TOKEN, "");
    run.expect(1);
    assert_eq!(figure(&doc, "memory used")["ok"], false, "{doc}");
    assert!(
        figure(&doc, "memory used")["note"]
            .as_str()
            .unwrap()
            .contains("m1")
    );
    assert!(
        run.stderr
            .contains("memory used 90.00% (budget < 80.00%) OVER BUDGET"),
        "{}",
        run.stderr
    );

    // Too little traffic: reported as not judged, neither a pass nor a breach.
    p.set(Traffic {
        per_tick: 1,
        errors_per_mille: 1000,
        ..Traffic::HEALTHY
    });
    let (run, doc) = smoke(d.path(), &app, &p, GOOD_TOKEN, "");
    run.expect(0);
    assert_eq!(
        doc["watch"]["metrics"]["verdict"], "too_little_traffic",
        "{doc}"
    );
    assert!(
        doc["watch"]["inconclusive"]
            .as_str()
            .unwrap()
            .contains("too little traffic")
    );
    assert_eq!(figure(&doc, "error rate (5xx)")["ok"], Value::Null);

    // The metrics API refuses the token: a clear error naming the token and the fix.
    p.set(Traffic::HEALTHY);
    for (token, code) in [("FlyV1 fm2_bogus", "401"), (DEPLOY_TOKEN, "403")] {
        let (run, doc) = smoke(d.path(), &app, &p, token, "");
        run.expect(1);
        assert_eq!(doc["watch"]["metrics"]["verdict"], "unavailable", "{doc}");
        assert!(run.stderr.contains("FLY_METRICS_TOKEN"), "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!("HTTP {code}")),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("fly tokens create readonly"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("fm2_"), "token leaked: {}", run.stderr);
    }

    // Without the token the watch is refused before any request (exit 2), unless disabled.
    std::fs::write(d.path().join("flightplan.toml"), WATCH).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flightplan"))
        .args(["--config", "flightplan.toml", "smoke", "--url", &app])
        .current_dir(d.path())
        .env_clear()
        .env("FLY_APP", APP)
        .env("FLY_ORG", ORG)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run::from(out);
    run.expect(2);
    assert!(
        run.stderr.contains("FLY_METRICS_TOKEN is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_metrics_breach_rolls_back_and_a_refused_token_stops_before_any_change() {
    let p = Prometheus::start(APP);
    let w = World::new(&format!("{WATCH}org = \"{ORG}\"\n"));
    let run_with = |token: &str| {
        let mut c = w.cmd(&["run", "--image", V2]);
        c.env("FLY_METRICS_URL", &p.url)
            .env("FLY_METRICS_TOKEN", token);
        Run::from(c.output().unwrap())
    };

    // A refused token is found while planning: nothing is backed up, migrated or deployed.
    let before = w.db.ledger();
    let run = run_with("FlyV1 fm2_bogus");
    run.expect(1);
    assert!(
        run.stderr.contains("refused FLY_METRICS_TOKEN"),
        "{}",
        run.stderr
    );
    assert_eq!(w.db.ledger(), before, "nothing migrated");
    assert_eq!(w.machine_images(), vec![V1; 3], "nothing deployed");
    assert!(
        w.log()["resolution"]
            .as_str()
            .unwrap()
            .contains("before any change")
    );

    // 3% 5xx after the rollout: the watch fails, and the machines go back like after a
    // failed smoke test.
    p.set(Traffic {
        errors_per_mille: 30,
        ..Traffic::HEALTHY
    });
    let run = run_with(GOOD_TOKEN);
    run.expect(1);
    let log = w.log();
    assert_eq!(log["status"], "ROLLED_BACK", "{log}");
    assert_eq!(w.machine_images(), vec![V1; 3]);
    assert_eq!(log["watch"]["metrics_verdict"], "fail");
    let summary = w.read("summary.md");
    assert!(summary.contains("error rate (5xx)"), "{summary}");
    assert!(summary.contains("xychart-beta"), "{summary}");
    assert!(summary.contains("❌ over budget"), "{summary}");
    let comments = world::flightplan_comments(&w);
    assert!(
        comments.iter().any(|c| c.body.contains("error rate (5xx)")),
        "the PR comment shows the figures"
    );
    world::assert_no_secrets(&w.everything(&[&run]));
    assert!(
        !w.everything(&[&run]).contains("fm2_metrics"),
        "metrics token leaked"
    );
}
