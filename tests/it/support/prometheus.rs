//! A real Prometheus (Debian's `prometheus`) on 127.0.0.1 under Fly's path prefix
//! (`/prometheus/<org>`), scraping a stand-in exporter of Fly's metric names that the test
//! drives, behind a fake of the metrics API's auth answers (401 bogus token, 403 app-scoped).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

pub const ORG: &str = "test-org";
/// A read-only org token as `fly tokens create readonly` prints it.
pub const GOOD_TOKEN: &str = "FlyV1 fm2_metricsREADONLYcanaryBBBBBBBBBBBBBBBB";
/// An app-scoped deploy token: authenticates, but may not read the org (403).
pub const DEPLOY_TOKEN: &str = "FlyV1 fm2_deployAPPSCOPEDcanaryCCCCCCCCCCCC";

/// What the app's traffic and machines look like right now; the driver turns it into
/// counters ten times a second.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    /// Requests per 100 ms.
    pub per_tick: u64,
    /// Of them, 5xx (per mille).
    pub errors_per_mille: u64,
    /// Each response's time in seconds.
    pub latency_s: f64,
    pub memory_used: f64,
    pub cpu_busy: f64,
}

impl Traffic {
    pub const HEALTHY: Traffic = Traffic {
        per_tick: 20,
        errors_per_mille: 0,
        latency_s: 0.05,
        memory_used: 0.4,
        cpu_busy: 0.2,
    };
}

#[derive(Default)]
struct Counters {
    ok: f64,
    errors: f64,
    carry_errors: u64,
    /// Cumulative bucket counts for le = 0.1, 0.25, 0.5, 1, +Inf.
    buckets: [f64; 5],
    sum: f64,
    cpu_busy: f64,
    cpu_idle: f64,
    memory_used: f64,
}

const LE: [&str; 5] = ["0.1", "0.25", "0.5", "1", "+Inf"];
const LE_V: [f64; 5] = [0.1, 0.25, 0.5, 1.0, f64::INFINITY];
const TOTAL_MEM: f64 = 1024.0 * 1024.0 * 1024.0;

pub struct Prometheus {
    child: Child,
    /// The fake metrics API's base, as FLY_METRICS_URL: `http://127.0.0.1:P/prometheus`.
    pub url: String,
    traffic: Arc<Mutex<Traffic>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn serve(listener: TcpListener, router: Router, stop: Arc<std::sync::atomic::AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(l, router)
                .with_graceful_shutdown(async move {
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                })
                .await;
        });
    });
}

impl Prometheus {
    /// Starts the exporter for `app` (one machine, `m1`), the driver, Prometheus scraping
    /// every 250 ms, and the auth fake. Panics (loudly) when `prometheus` is not installed.
    pub fn start(app: &str) -> Prometheus {
        let bin = which("prometheus").unwrap_or_else(|| {
            panic!(
                "these tests need a real Prometheus: `apt-get install -y prometheus` \
                 (.ci/run installs it)"
            )
        });
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let traffic = Arc::new(Mutex::new(Traffic::HEALTHY));
        let counters = Arc::new(Mutex::new(Counters::default()));

        // The driver: Fly's counters grow as the current traffic says.
        {
            let (traffic, counters, stop) = (traffic.clone(), counters.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let t = *traffic.lock().unwrap();
                    let mut c = counters.lock().unwrap();
                    let scaled = t.per_tick * t.errors_per_mille + c.carry_errors;
                    let errors = scaled / 1000;
                    c.carry_errors = scaled % 1000;
                    c.errors += errors as f64;
                    c.ok += (t.per_tick - errors.min(t.per_tick)) as f64;
                    for (i, le) in LE_V.iter().enumerate() {
                        if t.latency_s <= *le {
                            c.buckets[i] += t.per_tick as f64;
                        }
                    }
                    c.sum += t.latency_s * t.per_tick as f64;
                    // 0.1 s of one vCPU is 10 centiseconds.
                    c.cpu_busy += 10.0 * t.cpu_busy;
                    c.cpu_idle += 10.0 * (1.0 - t.cpu_busy);
                    c.memory_used = t.memory_used;
                    drop(c);
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }

        let exporter = TcpListener::bind("127.0.0.1:0").unwrap();
        let exporter_addr = exporter.local_addr().unwrap();
        let app_name = app.to_string();
        serve(
            exporter,
            Router::new().route(
                "/metrics",
                get(move || {
                    let c = counters.clone();
                    let app = app_name.clone();
                    async move { exposition(&app, &c.lock().unwrap()) }
                }),
            ),
            stop.clone(),
        );

        let dir = tempfile::tempdir().unwrap();
        let prom_port = free_port();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 250ms\n  evaluation_interval: 250ms\n\
                 scrape_configs:\n  - job_name: fly\n    honor_labels: true\n    scrape_interval: 250ms\n    scrape_timeout: 200ms\n\
                 \x20   static_configs:\n      - targets: ['{exporter_addr}']\n"
            ),
        )
        .unwrap();
        let prefix = format!("/prometheus/{ORG}");
        let child = Command::new(bin)
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg(format!("--web.route-prefix={prefix}"))
            .arg(format!(
                "--web.external-url=http://127.0.0.1:{prom_port}{prefix}"
            ))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus did not start");
        let prom = format!("http://127.0.0.1:{prom_port}");

        // The fake in front: Fly's auth answers, then the real engine's.
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/prometheus", front.local_addr().unwrap());
        let client = reqwest::Client::new();
        serve(
            front,
            Router::new()
                .route("/prometheus/{org}/api/v1/{*rest}", get(forward))
                .with_state((prom.clone(), client)),
            stop.clone(),
        );

        let p = Prometheus {
            child,
            url,
            traffic,
            stop,
            _dir: dir,
        };
        // Ready only once the exporter was scraped: Prometheus hands targets to its scrape
        // loops a few seconds after start (the discovery manager's update interval).
        let ready = format!("{prom}{prefix}/api/v1/query?query=fly_instance_memory_mem_total");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let scraped = std::process::Command::new("curl")
                .args(["-sf", &ready])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("\"result\":[{"));
            if scraped {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus did not get ready at {ready}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// Changes the traffic, and waits until the exporter has served it at least once (the
    /// driver ticks every 100 ms, Prometheus scrapes every 250 ms).
    pub fn set(&self, t: Traffic) {
        *self.traffic.lock().unwrap() = t;
        std::thread::sleep(Duration::from_millis(400));
    }
}

async fn forward(
    State((prom, client)): State<(String, reqwest::Client)>,
    Path((org, rest)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> impl IntoResponse {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth == DEPLOY_TOKEN {
        return (StatusCode::FORBIDDEN, "Forbidden".to_string());
    }
    if auth != GOOD_TOKEN || org != ORG {
        // As india-ultimate/hub#562 quotes Fly's answer to a bogus token.
        return (
            StatusCode::UNAUTHORIZED,
            "something went wrong resolving organization".to_string(),
        );
    }
    let url = format!(
        "{prom}/prometheus/{org}/api/v1/{rest}?{}",
        q.unwrap_or_default()
    );
    match client.get(url).send().await {
        Ok(r) => (
            StatusCode::from_u16(r.status().as_u16()).unwrap(),
            r.text().await.unwrap_or_default(),
        ),
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

fn exposition(app: &str, c: &Counters) -> String {
    let mut s = String::new();
    let l = format!("app=\"{app}\",region=\"ord\",host=\"ab12\"");
    s.push_str("# TYPE fly_edge_http_responses_count counter\n");
    s.push_str(&format!(
        "fly_edge_http_responses_count{{{l},status=\"200\"}} {}\n",
        c.ok
    ));
    s.push_str(&format!(
        "fly_edge_http_responses_count{{{l},status=\"500\"}} {}\n",
        c.errors
    ));
    s.push_str("# TYPE fly_edge_http_response_time_seconds histogram\n");
    for (le, v) in LE.iter().zip(c.buckets) {
        s.push_str(&format!(
            "fly_edge_http_response_time_seconds_bucket{{{l},status=\"200\",le=\"{le}\"}} {v}\n"
        ));
    }
    s.push_str(&format!(
        "fly_edge_http_response_time_seconds_sum{{{l},status=\"200\"}} {}\n",
        c.sum
    ));
    s.push_str(&format!(
        "fly_edge_http_response_time_seconds_count{{{l},status=\"200\"}} {}\n",
        c.buckets[4]
    ));
    let i = format!("{l},instance=\"m1\"");
    s.push_str(&format!(
        "fly_instance_memory_mem_total{{{i}}} {TOTAL_MEM}\n"
    ));
    s.push_str(&format!(
        "fly_instance_memory_mem_available{{{i}}} {}\n",
        TOTAL_MEM * (1.0 - c.memory_used)
    ));
    s.push_str("# TYPE fly_instance_cpu counter\n");
    s.push_str(&format!(
        "fly_instance_cpu{{{i},cpu_id=\"0\",mode=\"user\"}} {}\n",
        c.cpu_busy
    ));
    s.push_str(&format!(
        "fly_instance_cpu{{{i},cpu_id=\"0\",mode=\"idle\"}} {}\n",
        c.cpu_idle
    ));
    s
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
