//! The watch window's production figures: Fly's Prometheus-compatible metrics API (the app's
//! edge responses, response-time histogram, machines' memory and CPU) and PostgreSQL's
//! `pg_stat_activity`, judged against the `[watch]` budgets on data after the rollout only.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Serialize;
use serde_json::Value;

use crate::db::DatabaseUrl;
use crate::error::Error;
use crate::http::{Advice, Answered, Api, Call, Vendor};

/// Fly's documented base; the org slug follows (`…/prometheus/<org>/api/v1/query`).
pub const DEFAULT_METRICS_URL: &str = "https://api.fly.io/prometheus";

pub static FLY_METRICS: Vendor = Vendor {
    name: "Fly's metrics API",
    url_var: "FLY_METRICS_URL",
    default_url: DEFAULT_METRICS_URL,
    private_suffix: None,
    request_id_headers: &["fly-request-id"],
    client_request_id: None,
    // The Prometheus envelope: `{"status":"error","errorType":"bad_data","error":"…"}`.
    message_fields: &["error"],
    code_field: Some("errorType"),
    not_executed,
    advise,
};

fn not_executed(status: StatusCode, _: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
}

fn advise(a: &Answered<'_>) -> Advice {
    let org = a.segments.first().map_or("ORG", String::as_str);
    let (code, detail) = (a.status.as_u16(), a.detail);
    match a.status {
        // A bogus or expired token, or a wrong org slug (research note 1.3, 4.2).
        StatusCode::UNAUTHORIZED => Advice {
            message: Some(format!(
                "Fly's metrics API refused FLY_METRICS_TOKEN for org `{org}` (HTTP {code}: {detail})"
            )),
            hint: Some(format!(
                "check the org slug ([watch] org / FLY_ORG) and make a read-only org token: \
                 `fly tokens create readonly -o {org}`, stored whole (with its `FlyV1 ` prefix) as FLY_METRICS_TOKEN"
            )),
        },
        // A valid token without read access to the org: an app-scoped deploy token.
        StatusCode::FORBIDDEN => Advice {
            message: Some(format!(
                "FLY_METRICS_TOKEN may not read org `{org}`'s metrics (HTTP {code}: {detail}); \
                 an app-scoped deploy token is refused here"
            )),
            hint: Some(format!(
                "use a separate read-only org token: `fly tokens create readonly -o {org}`"
            )),
        },
        _ => Advice::default(),
    }
}

/// The `Authorization` value for a token as `fly tokens create` or `flyctl auth token`
/// print it: macaroons (`FlyV1 fm2_…`, or a bare `fm2_…`) go as FlyV1, other tokens as Bearer.
pub fn authorization(token: &str) -> String {
    let t = token.trim();
    if t.starts_with("FlyV1 ") || t.starts_with("Bearer ") {
        t.to_string()
    } else if t.starts_with("fm1") || t.starts_with("fm2") {
        format!("FlyV1 {t}")
    } else {
        format!("Bearer {t}")
    }
}

/// The budgets the figures are judged against (`[watch]`, the runbook's numbers by default).
#[derive(Debug, Clone, Serialize)]
pub struct Budgets {
    pub p95_ms: u64,
    pub max_error_rate: f64,
    pub max_memory: f64,
    pub max_cpu: f64,
    /// Connections in use over `max_connections`.
    pub max_db_connections: f64,
    /// Fewer requests than this in the window: error rate and p95 are not judged.
    pub min_requests: u64,
}

/// Where the figures come from.
#[derive(Debug)]
pub struct MetricsSettings {
    /// `FLY_METRICS_URL` (or Fly's) with the org slug appended.
    pub api: Api,
    pub org: String,
    pub app: String,
    /// Counts `pg_stat_activity` against `max_connections`; `None`: not measured.
    pub database: Option<DatabaseUrl>,
    pub budgets: Budgets,
}

/// What the window's figures say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Fewer requests than `min_requests`: neither a pass nor a breach.
    TooLittleTraffic,
    /// The metrics API could not be read: the window is not judged, and fails.
    Unavailable,
}

/// One figure over the window against its budget.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    /// `%` or `ms`: how value, budget and series read.
    pub unit: &'static str,
    /// The whole window's value (the worst machine's for memory and CPU); `None`: no data.
    pub value: Option<f64>,
    pub budget: f64,
    /// `None`: not judged (too little traffic, no data).
    pub ok: Option<bool>,
    /// One value per interval, for the chart.
    pub series: Vec<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    /// `error rate 3.00% (budget < 1.00%) FAIL`.
    pub fn line(&self) -> String {
        let verdict = match self.ok {
            Some(true) => "ok",
            Some(false) => "OVER BUDGET",
            None => "not judged",
        };
        format!(
            "{} {} (budget < {}) {verdict}{}",
            self.name,
            self.value.map_or("-".into(), |v| fmt(v, self.unit)),
            fmt(self.budget, self.unit),
            self.note
                .as_ref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        )
    }
}

/// `3.00%`, `412 ms`.
pub fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "%" => format!("{:.2}%", v * 100.0),
        _ => format!("{v:.0} {unit}"),
    }
}

/// The metrics side of the watch (the JSON document's `watch.metrics`).
#[derive(Debug, Clone, Serialize)]
pub struct MetricsReport {
    pub verdict: Verdict,
    pub app: String,
    /// Unix seconds: data before this (the rollout's end) is not counted.
    pub since: f64,
    pub interval_ms: u64,
    pub requests: Option<f64>,
    pub min_requests: u64,
    pub figures: Vec<Figure>,
    /// The PromQL evaluated for the whole window, for anyone checking the numbers.
    pub queries: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One interval's (or the window's) raw figures.
#[derive(Debug, Default, Clone)]
struct Sample {
    requests: Option<f64>,
    errors: Option<f64>,
    p95_s: Option<f64>,
    /// Worst machine: (instance, fraction).
    memory: Option<(String, f64)>,
    cpu: Option<(String, f64)>,
    db: Option<(i64, i64)>,
}

/// The queries of one window of `ms` milliseconds, in the order `evaluate` reads them.
pub fn queries(app: &str, ms: u64) -> [String; 5] {
    let app = app.replace('\\', "\\\\").replace('"', "\\\"");
    let w = format!("{ms}ms");
    [
        format!("sum(increase(fly_edge_http_responses_count{{app=\"{app}\"}}[{w}]))"),
        format!(
            "sum(increase(fly_edge_http_responses_count{{app=\"{app}\",status=~\"5..\"}}[{w}]))"
        ),
        format!(
            "histogram_quantile(0.95, sum by (le) (increase(fly_edge_http_response_time_seconds_bucket{{app=\"{app}\"}}[{w}])))"
        ),
        format!(
            "1 - min by (instance) (min_over_time(fly_instance_memory_mem_available{{app=\"{app}\"}}[{w}])) \
             / max by (instance) (max_over_time(fly_instance_memory_mem_total{{app=\"{app}\"}}[{w}]))"
        ),
        format!(
            "sum by (instance) (increase(fly_instance_cpu{{app=\"{app}\",mode!~\"idle|steal\"}}[{w}])) \
             / sum by (instance) (increase(fly_instance_cpu{{app=\"{app}\"}}[{w}]))"
        ),
    ]
}

/// The SQL for the connections in use against the server's limit.
pub const DB_CONNECTIONS_SQL: &str = "SELECT count(*)::bigint, current_setting('max_connections')::bigint \
     FROM pg_stat_activity WHERE backend_type = 'client backend'";

impl MetricsSettings {
    /// One instant query at `at` (unix seconds): each series' labels and value.
    async fn query(&self, q: &str, at: f64) -> Result<Vec<(Value, f64)>, Error> {
        let call = Call::get(&["api", "v1", "query"])
            .query("query", q)
            .query("time", format!("{at:.3}"));
        let reply = self.api.send(&call, None).await?;
        let body = &reply.body;
        if body["status"] != "success" {
            return Err(Error::failure(format!(
                "Fly's metrics API answered {} to `{q}`",
                body["error"].as_str().unwrap_or("an unexpected document")
            )));
        }
        let Some(result) = body["data"]["result"].as_array() else {
            return Err(Error::failure(format!(
                "Fly's metrics API answered no result list to `{q}`"
            )));
        };
        Ok(result
            .iter()
            .filter_map(|r| {
                // Sample values are strings ("NaN" for 0/0: no traffic).
                let v: f64 = r["value"][1].as_str()?.parse().ok()?;
                v.is_finite().then(|| (r["metric"].clone(), v))
            })
            .collect())
    }

    /// One read-only query: the token works for the org, before anything changes.
    pub async fn probe(&self) -> Result<(), Error> {
        self.query("vector(1)", now()).await.map(|_| ())
    }

    async fn sample(&self, at: f64, ms: u64) -> Result<Sample, Error> {
        let [req, err, p95, mem, cpu] = queries(&self.app, ms);
        let one = |v: Vec<(Value, f64)>| v.first().map(|(_, x)| *x);
        let worst = |v: Vec<(Value, f64)>| {
            v.into_iter()
                .map(|(m, x)| (m["instance"].as_str().unwrap_or("?").to_string(), x))
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        Ok(Sample {
            requests: one(self.query(&req, at).await?),
            errors: one(self.query(&err, at).await?),
            p95_s: one(self.query(&p95, at).await?),
            memory: worst(self.query(&mem, at).await?),
            cpu: worst(self.query(&cpu, at).await?),
            db: None,
        })
    }

    /// Connections in use and `max_connections`, now (PostgreSQL keeps no history).
    async fn db_connections(&self) -> Option<(i64, i64)> {
        let url = self.database.as_ref()?;
        let mut conn = match url.connect(Duration::from_secs(5)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("watch: database connections not measured: {}", e.message);
                return None;
            }
        };
        // This connection is one of those counted: it is not the app's.
        let row: Result<(i64, i64), _> = sqlx::query_as(DB_CONNECTIONS_SQL)
            .fetch_one(&mut conn)
            .await;
        match row {
            Ok((n, max)) => Some((n - 1, max)),
            Err(e) => {
                tracing::warn!("watch: pg_stat_activity not readable: {e}");
                None
            }
        }
    }
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Queries the figures every `interval` from `since` (when the rollout finished, unix
/// seconds) to the window's end, then the whole window, and judges them.
pub async fn watch(
    m: &MetricsSettings,
    since: f64,
    duration: Duration,
    interval: Duration,
) -> MetricsReport {
    let b = &m.budgets;
    let started = Instant::now();
    let interval = interval.max(Duration::from_millis(500));
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut intervals: Vec<Sample> = Vec::new();
    let mut failure: Option<Error> = None;
    let mut db_peak: Option<(i64, i64)> = None;
    let mut elapsed = Duration::ZERO;
    while elapsed < duration && failure.is_none() {
        let step = interval.min(duration - elapsed);
        elapsed += step;
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + elapsed)).await;
        let at = since + elapsed.as_secs_f64();
        match m.sample(at, ms(step)).await {
            Ok(mut s) => {
                s.db = m.db_connections().await;
                if let Some((n, max)) = s.db
                    && db_peak.is_none_or(|(p, _)| n > p)
                {
                    db_peak = Some((n, max));
                }
                tracing::info!("watch metrics {}: {}", super::human(elapsed), progress(&s));
                intervals.push(s);
            }
            Err(e) => failure = Some(e),
        }
    }
    let whole = match &failure {
        None => match m.sample(since + elapsed.as_secs_f64(), ms(elapsed)).await {
            Ok(s) => Some(s),
            Err(e) => {
                failure = Some(e);
                None
            }
        },
        Some(_) => None,
    };
    let queries = queries(&m.app, ms(elapsed)).to_vec();
    let mut report = MetricsReport {
        verdict: Verdict::Pass,
        app: m.app.clone(),
        since,
        interval_ms: ms(interval),
        requests: None,
        min_requests: b.min_requests,
        figures: Vec::new(),
        queries: queries
            .into_iter()
            .chain(m.database.is_some().then(|| DB_CONNECTIONS_SQL.to_string()))
            .collect(),
        reason: None,
    };
    let Some(whole) = whole else {
        let e = failure.expect("a failure when there is no window");
        report.verdict = Verdict::Unavailable;
        report.reason = Some(format!(
            "the metrics could not be read, so the window cannot be judged: {}{}",
            e.message,
            e.hint.map(|h| format!(" ({h})")).unwrap_or_default()
        ));
        return report;
    };
    judge(&mut report, b, &intervals, &whole, db_peak);
    report
}

fn judge(
    report: &mut MetricsReport,
    b: &Budgets,
    intervals: &[Sample],
    whole: &Sample,
    db_peak: Option<(i64, i64)>,
) {
    let requests = whole.requests.unwrap_or(0.0);
    report.requests = Some(requests);
    let enough = requests >= b.min_requests as f64;
    let rate = |s: &Sample| match (s.requests, s.errors) {
        (Some(r), e) if r > 0.0 => Some(e.unwrap_or(0.0) / r),
        _ => None,
    };
    let little = (!enough).then(|| {
        format!(
            "too little traffic to judge: {requests:.0} requests, at least {} needed ([watch] min_requests)",
            b.min_requests
        )
    });
    let over = |v: Option<f64>, budget: f64| v.map(|v| v <= budget);
    let error_rate = rate(whole);
    let p95 = whole.p95_s.map(|s| s * 1000.0);
    let mem_peak = intervals
        .iter()
        .chain(std::iter::once(whole))
        .filter_map(|s| s.memory.clone())
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let cpu = whole.cpu.clone();
    let db = db_peak.map(|(n, max)| n as f64 / max.max(1) as f64);
    report.figures = vec![
        Figure {
            name: "error rate (5xx)".into(),
            unit: "%",
            value: error_rate,
            budget: b.max_error_rate,
            ok: if enough {
                over(error_rate, b.max_error_rate).or(Some(true))
            } else {
                None
            },
            series: intervals.iter().map(rate).collect(),
            note: little.clone().or_else(|| {
                Some(format!(
                    "{:.0} of {requests:.0} responses",
                    whole.errors.unwrap_or(0.0)
                ))
            }),
        },
        Figure {
            name: "p95 latency".into(),
            unit: "ms",
            value: p95,
            budget: b.p95_ms as f64,
            ok: if enough {
                over(p95, b.p95_ms as f64)
            } else {
                None
            },
            series: intervals
                .iter()
                .map(|s| s.p95_s.map(|v| v * 1000.0))
                .collect(),
            note: little.clone(),
        },
        Figure {
            name: "memory used".into(),
            unit: "%",
            value: mem_peak.as_ref().map(|m| m.1),
            budget: b.max_memory,
            ok: over(mem_peak.as_ref().map(|m| m.1), b.max_memory),
            series: intervals
                .iter()
                .map(|s| s.memory.as_ref().map(|m| m.1))
                .collect(),
            note: mem_peak
                .as_ref()
                .map(|m| format!("worst machine {}", m.0))
                .or_else(|| Some("no data".into())),
        },
        Figure {
            name: "CPU".into(),
            unit: "%",
            value: cpu.as_ref().map(|c| c.1),
            budget: b.max_cpu,
            ok: over(cpu.as_ref().map(|c| c.1), b.max_cpu),
            series: intervals
                .iter()
                .map(|s| s.cpu.as_ref().map(|c| c.1))
                .collect(),
            note: cpu
                .as_ref()
                .map(|c| format!("worst machine {}", c.0))
                .or_else(|| Some("no data".into())),
        },
        Figure {
            name: "database connections".into(),
            unit: "%",
            value: db,
            budget: b.max_db_connections,
            // "Not exhausted": below the share of max_connections the budget allows.
            ok: db.map(|v| v < b.max_db_connections),
            series: intervals
                .iter()
                .map(|s| s.db.map(|(n, max)| n as f64 / max.max(1) as f64))
                .collect(),
            note: Some(match db_peak {
                Some((n, max)) => format!("peak {n} of max_connections {max}"),
                None => "not measured (no DATABASE_URL)".into(),
            }),
        },
    ];
    let breaches: Vec<String> = report
        .figures
        .iter()
        .filter(|f| f.ok == Some(false))
        .map(Figure::line)
        .collect();
    (report.verdict, report.reason) = if !breaches.is_empty() {
        (Verdict::Fail, Some(breaches.join("; ")))
    } else if let Some(l) = little {
        (Verdict::TooLittleTraffic, Some(l))
    } else {
        (Verdict::Pass, None)
    };
}

fn progress(s: &Sample) -> String {
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| fmt(v, "%"));
    format!(
        "{:.0} requests, {:.0} 5xx, p95 {}, memory {}, CPU {}{}",
        s.requests.unwrap_or(0.0),
        s.errors.unwrap_or(0.0),
        s.p95_s.map_or("-".into(), |v| fmt(v * 1000.0, "ms")),
        pct(s.memory.as_ref().map(|m| m.1)),
        pct(s.cpu.as_ref().map(|c| c.1)),
        s.db.map(|(n, max)| format!(", db connections {n}/{max}"))
            .unwrap_or_default()
    )
}

/// `▁▃▇█`: a figure's series as one line of text (a gap is `·`).
pub fn sparkline(series: &[Option<f64>], budget: f64) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let top = series
        .iter()
        .flatten()
        .cloned()
        .fold(budget, f64::max)
        .max(f64::MIN_POSITIVE);
    series
        .iter()
        .map(|v| match v {
            None => '·',
            Some(v) => BARS[((v / top) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

impl MetricsReport {
    /// The lines the log and the text report show: verdict, then each figure with its chart.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "watch metrics ({}): {}{}",
            self.app,
            match self.verdict {
                Verdict::Pass => "ok",
                Verdict::Fail => "FAILED",
                Verdict::TooLittleTraffic => "NOT JUDGED (too little traffic)",
                Verdict::Unavailable => "FAILED (metrics unavailable)",
            },
            self.requests
                .map(|r| format!(", {r:.0} requests since the rollout"))
                .unwrap_or_default()
        )];
        for f in &self.figures {
            out.push(format!(
                "  {}  {}",
                sparkline(&f.series, f.budget),
                f.line()
            ));
        }
        if let Some(r) = &self.reason
            && self.verdict == Verdict::Unavailable
        {
            out.push(format!("  {r}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_get_the_scheme_fly_documents() {
        assert_eq!(authorization("FlyV1 fm2_abc"), "FlyV1 fm2_abc");
        assert_eq!(authorization("fm2_abc"), "FlyV1 fm2_abc");
        assert_eq!(authorization(" personal-token "), "Bearer personal-token");
        assert_eq!(authorization("Bearer x"), "Bearer x");
    }

    #[test]
    fn sparklines_scale_to_the_budget_or_the_peak() {
        assert_eq!(sparkline(&[Some(0.0), Some(0.5), Some(1.0)], 1.0), "▁▅█");
        assert_eq!(sparkline(&[None, Some(2.0)], 1.0), "·█");
    }

    #[test]
    fn too_little_traffic_is_not_a_pass() {
        let b = Budgets {
            p95_ms: 500,
            max_error_rate: 0.01,
            max_memory: 0.8,
            max_cpu: 0.7,
            max_db_connections: 0.9,
            min_requests: 100,
        };
        let mut r = MetricsReport {
            verdict: Verdict::Pass,
            app: "a".into(),
            since: 0.0,
            interval_ms: 1000,
            requests: None,
            min_requests: 100,
            figures: Vec::new(),
            queries: Vec::new(),
            reason: None,
        };
        let quiet = Sample {
            requests: Some(3.0),
            errors: Some(3.0),
            ..Sample::default()
        };
        judge(&mut r, &b, std::slice::from_ref(&quiet), &quiet, None);
        assert_eq!(r.verdict, Verdict::TooLittleTraffic);
        assert_eq!(
            r.figures[0].ok, None,
            "100% errors of 3 requests: not judged"
        );
        let hot = Sample {
            memory: Some(("m1".into(), 0.9)),
            ..quiet
        };
        judge(&mut r, &b, std::slice::from_ref(&hot), &hot, None);
        assert_eq!(r.verdict, Verdict::Fail, "a breach still fails");
    }
}
