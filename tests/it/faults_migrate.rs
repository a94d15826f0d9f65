//! `flightplan migrate apply` under faults: SIGKILL and SIGTERM at a sweep of points, the
//! PostgreSQL connection cut by a proxy at a sweep of byte positions and while COMMITs are
//! in flight, a compute that refuses connections while it wakes, and eight runners at once.
//! Every case asserts the database afterwards (ledger rows, the objects each file creates,
//! the advisory lock in pg_locks), what was reported, and that the next run completes.
//!
//! Figures are printed with `--nocapture` (`FAULTS:` lines) for docs/GUARANTEES.md.

use crate::support::db;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::db::{Run, TestDb};
use crate::support::faults::{Cut, Dir, Proxy, Rule};

/// A password that must never be printed (trust auth accepts any).
const DB_PASSWORD: &str = "canaryFaultsPwZZZZ";

/// The corpus: eight files, each creating its table, sleeping a little (so kills land inside
/// files too), adding a column and a row; `004` builds an index outside a transaction. A file
/// is fully applied when its table has column `c` and exactly one row in `runs`.
const FILES: [&str; 8] = [
    "001_one.sql",
    "002_two.sql",
    "003_three.sql",
    "004_index.sql",
    "005_five.sql",
    "006_six.sql",
    "007_seven.sql",
    "008_eight.sql",
];
const NO_TX: &str = "004_index.sql";

fn write_corpus(db: &TestDb, sleep: &str) {
    db.write("000_runs.sql", "CREATE TABLE runs (file text NOT NULL);\n");
    for (i, f) in FILES.iter().enumerate() {
        let n = i + 1;
        if *f == NO_TX {
            db.write(
                f,
                &format!(
                    "-- no-transaction\nCREATE INDEX CONCURRENTLY t1_v ON t1 (v);\nSELECT pg_sleep({sleep});\nINSERT INTO runs VALUES ('{f}');\n"
                ),
            );
        } else {
            db.write(
                f,
                &format!(
                    "CREATE TABLE t{n} (id int PRIMARY KEY, v text);\nSELECT pg_sleep({sleep});\n\
                     ALTER TABLE t{n} ADD COLUMN c int;\nINSERT INTO t{n} VALUES (1, 'x', 1);\nINSERT INTO runs VALUES ('{f}');\n"
                ),
            );
        }
    }
}

/// The ledger as (filename, status); empty when the table does not exist.
fn ledger(db: &TestDb) -> Vec<(String, String)> {
    if !db.table_exists("_migrations") {
        return Vec::new();
    }
    db.ledger()
}

/// Every ledger row's file is fully applied, every other file left nothing behind, except
/// the no-transaction file, which may be `running`/`failed` (interrupted) with its index
/// present, invalid or absent. Returns the number of applied rows.
#[track_caller]
fn assert_consistent(db: &TestDb, context: &str) -> usize {
    let rows = ledger(db);
    let status = |f: &str| rows.iter().find(|(n, _)| n == f).map(|(_, s)| s.clone());
    let runs: Vec<String> = if db.table_exists("runs") {
        db.query("SELECT file FROM runs ORDER BY file")
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect()
    } else {
        Vec::new()
    };
    let mut names: Vec<&String> = rows.iter().map(|(n, _)| n).collect();
    names.dedup();
    assert_eq!(
        names.len(),
        rows.len(),
        "{context}: a duplicated ledger row: {rows:?}"
    );
    for (i, f) in FILES.iter().enumerate() {
        let n = i + 1;
        let ran = runs.iter().filter(|r| r == f).count();
        if *f == NO_TX {
            let index = db.scalar(
                "SELECT CASE WHEN i.indisvalid THEN 'valid' ELSE 'invalid' END FROM pg_index i \
                 WHERE i.indexrelid = to_regclass('t1_v')",
            );
            match status(f).as_deref() {
                Some("applied") => {
                    assert_eq!(index.as_deref(), Some("valid"), "{context}: {f} applied");
                    assert_eq!(ran, 1, "{context}: {f} applied, its row once");
                }
                Some("running" | "failed") => {}
                None => {
                    assert_eq!(
                        index, None,
                        "{context}: {f} not started, yet its index exists"
                    );
                    assert_eq!(ran, 0, "{context}");
                }
                Some(other) => panic!("{context}: {f} has status {other}"),
            }
            continue;
        }
        let table = db.table_exists(&format!("t{n}"));
        match status(f).as_deref() {
            Some("applied") => {
                assert!(table, "{context}: {f} is in the ledger but t{n} is missing");
                assert_eq!(
                    db.scalar(&format!("SELECT count(c)::text FROM t{n}"))
                        .as_deref(),
                    Some("1"),
                    "{context}: {f} partially applied"
                );
                assert_eq!(ran, 1, "{context}: {f} ran {ran} times");
            }
            None => {
                assert!(
                    !table,
                    "{context}: t{n} exists but {f} is not in the ledger"
                );
                assert_eq!(ran, 0, "{context}: {f} left a row behind");
            }
            Some(other) => panic!("{context}: transactional {f} has status {other}"),
        }
    }
    rows.iter().filter(|(_, s)| s == "applied").count()
}

/// Advisory locks held in this database; waits (bounded) until there are none, then
/// asserts it: a killed runner's lock must be freed by the server within seconds.
#[track_caller]
fn assert_lock_freed(db: &TestDb, context: &str) {
    let sql = "SELECT count(*)::text FROM pg_locks WHERE locktype = 'advisory' AND granted \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    for _ in 0..100 {
        if db.scalar(sql).as_deref() == Some("0") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{context}: the migration lock is still held 10s after the runner died");
}

fn apply_cmd(db: &TestDb, url: &str, extra: &[&str]) -> Command {
    let dir = db.migrations();
    let mut args = vec![
        "--format",
        "json",
        "migrate",
        "apply",
        "--dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut c = db.cmd(&args);
    c.env("DATABASE_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn with_password(url: &str) -> String {
    let mut u = url::Url::parse(url).unwrap();
    u.set_password(Some(DB_PASSWORD)).unwrap();
    u.to_string()
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status();
}

/// Waits for the child (bounded: a runner that does not end is killed and the test fails).
fn reap(mut child: Child, context: &str) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            return Run::from(child.wait_with_output().unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{context}: the runner did not end within 60s\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[track_caller]
fn assert_no_password(r: &Run) {
    for probe in [DB_PASSWORD, &DB_PASSWORD[..8]] {
        assert!(
            !r.stdout.contains(probe),
            "password in stdout:\n{}",
            r.stdout
        );
        assert!(
            !r.stderr.contains(probe),
            "password in stderr:\n{}",
            r.stderr
        );
    }
}

/// After a fault: the next run finishes the job, resolving an interrupted no-transaction
/// file the documented way (undo it, `--retry-failed`). Asserts all eight applied once.
#[track_caller]
fn finish(db: &TestDb, context: &str) {
    let url = with_password(&db.url);
    let mut next = Run::from(apply_cmd(db, &url, &[]).output().unwrap());
    if next.code == 1 {
        let st = ledger(db);
        assert!(
            st.iter().any(|(n, s)| n == NO_TX && s != "applied"),
            "{context}: the next run failed without an interrupted file: {}",
            next.stderr
        );
        assert!(
            next.stdout.contains(NO_TX) && next.stdout.contains("retry-failed"),
            "{context}: the refusal names the file and the way out: {}",
            next.stdout
        );
        db.query("DROP INDEX IF EXISTS t1_v; DELETE FROM runs WHERE file = '004_index.sql'");
        next = Run::from(apply_cmd(db, &url, &["--retry-failed"]).output().unwrap());
    }
    next.expect(0);
    assert_no_password(&next);
    assert_eq!(assert_consistent(db, context), FILES.len() + 1, "{context}");
    assert_lock_freed(db, context);
}

/// Kills `migrate apply` with `sig` after k×step ms for k in 0..points, each on a fresh
/// database; returns how many files were applied at each kill (the positions reached).
fn kill_sweep(sig: &str, offset_ms: u64, points: u64) -> Vec<usize> {
    // 0.12 s per file, a kill every 60 ms: the server checks a dead client every second, so
    // kills land before the lock, inside batches (carried on or cut), in the no-transaction
    // file and after the end.
    let step = 60;
    let mut reached = Vec::new();
    let mid_run = |r: &[usize]| r.iter().any(|&n| n > 0 && n < FILES.len() + 1);
    // On a slow machine the first points may all land before the lock: go on (bounded)
    // until one has landed mid-run, so the sweep always proves something.
    for k in 0..points * 3 {
        if k >= points && mid_run(&reached) {
            break;
        }
        let db = TestDb::new();
        write_corpus(&db, "0.12");
        let at = Duration::from_millis(offset_ms + k * step);
        let context = format!("SIG{sig} after {} ms", at.as_millis());
        let child = apply_cmd(&db, &with_password(&db.url), &[])
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        signal(&child, sig);
        let run = reap(child, &context);
        assert_no_password(&run);
        assert_lock_freed(&db, &context);
        let applied = assert_consistent(&db, &context);
        if run.code == 0 {
            // It finished before the signal: everything is there.
            assert_eq!(applied, FILES.len() + 1, "{context}");
        }
        reached.push(applied);
        finish(&db, &context);
    }
    reached
}

#[test]
fn sigkill_at_every_point_leaves_a_consistent_ledger_and_a_free_lock() {
    let reached = kill_sweep("KILL", 0, 16);
    eprintln!("FAULTS: SIGKILL points=16 applied-at-kill={reached:?}");
    // The sweep must really have landed mid-run, not only before or after it.
    assert!(
        reached.iter().any(|&n| n > 0 && n < FILES.len() + 1),
        "no kill landed between files: {reached:?}"
    );
}

#[test]
fn sigterm_at_every_point_leaves_a_consistent_ledger_and_a_free_lock() {
    let reached = kill_sweep("TERM", 20, 16);
    eprintln!("FAULTS: SIGTERM points=16 applied-at-kill={reached:?}");
    assert!(
        reached.iter().any(|&n| n > 0 && n < FILES.len() + 1),
        "no kill landed between files: {reached:?}"
    );
}

/// The key `migrate apply` locks for `_migrations` (FNV-1a of "flightplan:_migrations").
fn lock_key() -> i64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in "flightplan:_migrations".bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h as i64
}

#[test]
fn a_runner_killed_while_waiting_for_the_lock_changes_nothing() {
    let db = TestDb::new();
    write_corpus(&db, "0");
    // Another session holds the lock; the runner polls for it, and is killed while it does.
    let holder = std::thread::spawn({
        let url = db.url.clone();
        move || {
            db::query_url(
                &url,
                &format!(
                    "SELECT pg_advisory_lock({}); SELECT pg_sleep(1.5)",
                    lock_key()
                ),
            )
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let child = apply_cmd(&db, &with_password(&db.url), &[])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    signal(&child, "KILL");
    let _ = reap(child, "killed while waiting");
    holder.join().unwrap();
    assert!(ledger(&db).is_empty());
    assert!(!db.table_exists("t1"));
    assert_lock_freed(&db, "killed while waiting");
    finish(&db, "after a kill while waiting");
}

#[test]
fn eight_concurrent_runners_apply_each_migration_exactly_once() {
    let db = TestDb::new();
    write_corpus(&db, "0.02");
    let url = with_password(&db.url);
    let children: Vec<Child> = (0..8)
        .map(|_| apply_cmd(&db, &url, &[]).spawn().unwrap())
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .enumerate()
        .map(|(i, c)| reap(c, &format!("runner {i}")))
        .collect();
    let mut applied_total = 0;
    for r in &runs {
        r.expect(0);
        assert_no_password(r);
        applied_total += r.json()["applied"].as_array().unwrap().len();
    }
    // Each file applied by exactly one runner, and exactly once in the database.
    assert_eq!(
        applied_total,
        FILES.len() + 1,
        "files claimed by the runners"
    );
    assert_eq!(assert_consistent(&db, "8 runners"), FILES.len() + 1);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM runs").as_deref(),
        Some("8"),
        "each file's own row exactly once"
    );
    assert_lock_freed(&db, "8 runners");
    eprintln!(
        "FAULTS: concurrent runners=8 applied-once={}",
        FILES.len() + 1
    );
}

#[test]
fn a_runner_that_cannot_get_the_lock_in_time_says_who_holds_it() {
    let db = TestDb::new();
    write_corpus(&db, "0");
    let holder = std::thread::spawn({
        let url = db.url.clone();
        move || {
            db::query_url(
                &url,
                &format!(
                    "SELECT pg_advisory_lock({}); SELECT pg_sleep(3)",
                    lock_key()
                ),
            )
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let run = Run::from(
        apply_cmd(&db, &with_password(&db.url), &["--lock-wait", "1s"])
            .output()
            .unwrap(),
    );
    holder.join().unwrap();
    run.expect(1);
    let e = &run.json()["error"];
    assert!(
        e["message"].as_str().unwrap().contains("held by pid"),
        "{e}"
    );
    assert!(e["hint"].as_str().unwrap().contains("pg_terminate_backend"));
    assert!(ledger(&db).is_empty(), "nothing applied without the lock");
}

/// Runs `migrate apply` through `proxy` and checks what it reported against the ledger:
/// exit 0 only with everything applied; `applied` in the JSON = the ledger's new rows.
fn apply_through(db: &TestDb, url: &str, context: &str) -> Run {
    let run = reap(
        apply_cmd(db, &with_password(url), &["--connect-timeout", "5s"])
            .spawn()
            .unwrap(),
        context,
    );
    assert_no_password(&run);
    assert_lock_freed(db, context);
    let applied = assert_consistent(db, context);
    let json = run.json();
    let reported: Vec<String> = json["applied"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| a["filename"].as_str().unwrap().to_string())
        .collect();
    let in_ledger: Vec<String> = ledger(db)
        .into_iter()
        .filter(|(_, s)| s == "applied")
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        reported, in_ledger,
        "{context}: what was reported applied is exactly what the ledger holds\n{}",
        run.stderr
    );
    match run.code {
        0 => assert_eq!(
            applied,
            FILES.len() + 1,
            "{context}: exit 0 with files missing"
        ),
        1 => assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{context}: a failure says why: {json}"
        ),
        c => panic!("{context}: exit {c}\n{}", run.stderr),
    }
    run
}

#[test]
fn the_connection_cut_at_a_sweep_of_byte_positions_never_leaves_a_partial_file() {
    let mut outcomes = Vec::new();
    // Server→client and client→server, from the startup exchange to the end of the batch.
    let points: Vec<(Dir, u64)> = [60u64, 400, 900, 1500, 2200, 3000, 4500]
        .iter()
        .map(|&n| (Dir::Down, n))
        .chain(
            [200u64, 700, 1300, 2500, 4000]
                .iter()
                .map(|&n| (Dir::Up, n)),
        )
        .collect();
    for (dir, n) in &points {
        let db = TestDb::new();
        write_corpus(&db, "0");
        let (proxy, url) = Proxy::postgres(&db.url);
        proxy.rule(Rule::bytes(*dir, *n, Cut::Reset).on_conn(1));
        let context = format!("reset after {n} bytes {dir:?}");
        let run = apply_through(&db, &url, &context);
        outcomes.push((format!("{dir:?}{n}"), run.code, ledger(&db).len()));
        drop(proxy);
        finish(&db, &context);
    }
    eprintln!(
        "FAULTS: connection cuts={} (dir+bytes, exit, ledger rows): {outcomes:?}",
        points.len()
    );
    assert!(
        outcomes.iter().any(|(_, code, _)| *code == 1),
        "some cut must have hit the run: {outcomes:?}"
    );
}

#[test]
fn a_commit_whose_answer_is_lost_is_checked_against_the_ledger() {
    // Transactional files only, one batch: the whole message reaches the server, its
    // answer never comes back (held, then reset). Every COMMIT happened; the runner must
    // find that out from the ledger on a new connection, not guess.
    let db = TestDb::new();
    db.write("000_runs.sql", "CREATE TABLE runs (file text NOT NULL);\n");
    for n in 1..=3 {
        db.write(
            &format!("00{n}_t.sql"),
            &format!("CREATE TABLE t{n} (id int);\nINSERT INTO runs VALUES ('00{n}_t.sql');\n"),
        );
    }
    let (proxy, url) = Proxy::postgres(&db.url);
    proxy.rule(
        Rule::pattern(
            Dir::Up,
            b"INSERT INTO \"public\".\"_migrations\"",
            Cut::Reset,
        )
        .on_conn(1)
        .hold(Duration::from_millis(1500)),
    );
    let run = reap(
        apply_cmd(&db, &with_password(&url), &[]).spawn().unwrap(),
        "lost commit",
    );
    assert_eq!(proxy.fired().len(), 1, "the fault fired: {}", run.stderr);
    assert_lock_freed(&db, "lost commit");
    let rows = ledger(&db);
    let json = run.json();
    let reported: Vec<String> = json["applied"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| a["filename"].as_str().unwrap().to_string())
        .collect();
    let in_ledger: Vec<String> = rows.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(reported, in_ledger, "reported = ledger\n{}", run.stderr);
    assert!(
        run.stderr
            .contains("reconnecting to read the tracking table"),
        "{}",
        run.stderr
    );
    if rows.len() == 4 {
        run.expect(0);
        assert!(run.stderr.contains("confirmed by the tracking table"));
    } else {
        run.expect(1);
    }
    for n in 1..=3 {
        let f = format!("00{n}_t.sql");
        assert_eq!(
            db.table_exists(&format!("t{n}")),
            in_ledger.contains(&f),
            "{f}: table iff ledger row"
        );
    }
    drop(proxy);
    db.migrate("apply", &[]).expect(0);
    assert_eq!(ledger(&db).len(), 4);
}

#[test]
fn a_cut_mid_batch_reports_exactly_the_files_that_committed() {
    // The batch reaches the server; after 250 ms (inside the first files of 0.4 s) the
    // connection is reset. The backend notices within a second and rolls the file in flight
    // back; the runner reconnects, waits for the lock and reads what committed.
    let db = TestDb::new();
    db.write("000_runs.sql", "CREATE TABLE runs (file text NOT NULL);\n");
    for n in 1..=5 {
        db.write(
            &format!("00{n}_t.sql"),
            &format!(
                "CREATE TABLE t{n} (id int);\nSELECT pg_sleep(0.4);\nINSERT INTO runs VALUES ('00{n}_t.sql');\n"
            ),
        );
    }
    let (proxy, url) = Proxy::postgres(&db.url);
    proxy.rule(
        Rule::pattern(
            Dir::Up,
            b"INSERT INTO \"public\".\"_migrations\"",
            Cut::Reset,
        )
        .on_conn(1)
        .hold(Duration::from_millis(250)),
    );
    let run = reap(
        apply_cmd(&db, &with_password(&url), &[]).spawn().unwrap(),
        "cut mid-batch",
    );
    assert_lock_freed(&db, "cut mid-batch");
    let rows = ledger(&db);
    let in_ledger: Vec<String> = rows.iter().map(|(f, _)| f.clone()).collect();
    let json = run.json();
    let reported: Vec<String> = json["applied"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| a["filename"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reported, in_ledger, "reported = ledger\n{}", run.stderr);
    for n in 1..=5 {
        let f = format!("00{n}_t.sql");
        assert_eq!(
            db.table_exists(&format!("t{n}")),
            in_ledger.contains(&f),
            "{f}: table iff ledger row"
        );
    }
    if rows.len() < 6 {
        run.expect(1);
        let msg = json["error"]["message"].as_str().unwrap();
        assert!(msg.contains("after reconnecting"), "{msg}");
        assert!(msg.contains("nothing of it remains"), "{msg}");
    }
    drop(proxy);
    db.migrate("apply", &[]).expect(0);
    assert_eq!(ledger(&db).len(), 6);
    assert_eq!(
        db.scalar("SELECT count(*)::text FROM runs").as_deref(),
        Some("5")
    );
}

#[test]
fn a_compute_waking_up_is_retried_within_the_budget_and_given_up_after_it() {
    let db = TestDb::new();
    write_corpus(&db, "0");
    let (proxy, url) = Proxy::postgres(&db.url);
    // Refused (no listener) for 2 s, then accepted.
    proxy.down();
    let mut child = apply_cmd(&db, &with_password(&url), &["--connect-timeout", "60s"])
        .spawn()
        .unwrap();
    // Up again once the runner has been refused and said it retries (bounded).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("not accepting connections yet") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let refused = rx.recv_timeout(Duration::from_secs(30)).is_ok();
    proxy.up();
    let mut run = reap(child, "cold start");
    run.stderr = reader.join().unwrap();
    assert!(refused, "the runner says it waits: {}", run.stderr);
    run.expect(0);
    assert_no_password(&run);
    assert_eq!(assert_consistent(&db, "cold start"), FILES.len() + 1);

    // Down for longer than the budget: a clear failure, nothing changed.
    let db2 = TestDb::new();
    write_corpus(&db2, "0");
    let (proxy2, url2) = Proxy::postgres(&db2.url);
    proxy2.down();
    let run = Run::from(
        apply_cmd(&db2, &with_password(&url2), &["--connect-timeout", "2s"])
            .output()
            .unwrap(),
    );
    run.expect(1);
    let msg = run.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("retried for"), "{msg}");
    assert!(!msg.contains(DB_PASSWORD));
    assert!(ledger(&db2).is_empty());
    drop(proxy2);
    drop(proxy);
}

#[test]
fn latency_on_every_packet_only_slows_the_run_down() {
    let db = TestDb::new();
    write_corpus(&db, "0");
    let (proxy, url) = Proxy::postgres(&db.url);
    proxy.latency(Duration::from_millis(15));
    let run = apply_through(&db, &url, "15 ms per packet");
    run.expect(0);
    assert!(proxy.connections() >= 1);
}
