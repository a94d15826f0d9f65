//! The watch window: the checks polled for a while after they passed, judged by p95 latency
//! and error rate against the runbook's budgets, with one progress line per interval; and,
//! alongside, the app's production figures from Fly's metrics API (see `metrics`).

use std::time::{Duration, Instant};

use serde::Serialize;

use super::check::{Runner, ms};
use super::metrics::{self, MetricsReport, MetricsSettings, Verdict};
use super::{Check, human};

/// How long to watch and what counts as healthy.
#[derive(Debug)]
pub struct WatchSettings {
    /// The production figures; `None` only with `[watch] metrics = false`.
    pub metrics: Option<MetricsSettings>,
    pub duration: Duration,
    pub p95_budget: Duration,
    /// A fraction: 0.01 is 1%.
    pub max_error_rate: f64,
    /// Pause between rounds of requests.
    pub poll: Duration,
    /// Time between progress lines on stderr.
    pub interval: Duration,
}

/// The verdict of the window (the JSON document's `watch`).
#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    pub ok: bool,
    pub duration_ms: u64,
    pub samples: u64,
    pub errors: u64,
    /// Over the requests that got an answer; `null` when none did.
    pub p50_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    /// A fraction of `samples`.
    pub error_rate: f64,
    pub p95_budget_ms: u64,
    pub max_error_rate: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub checks: Vec<WatchCheck>,
    /// One entry per progress interval, for the report's latency chart.
    pub intervals: Vec<WatchInterval>,
    /// The production figures of the window, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsReport>,
    /// Not judged (too little traffic): neither a pass nor a breach.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inconclusive: Option<String>,
}

/// The window's requests of one progress interval.
#[derive(Debug, Clone, Serialize)]
pub struct WatchInterval {
    pub samples: u64,
    pub errors: u64,
    pub p95_ms: Option<u64>,
}

impl From<&Tally> for WatchInterval {
    fn from(t: &Tally) -> WatchInterval {
        WatchInterval {
            samples: t.samples,
            errors: t.errors,
            p95_ms: t.p(0.95).map(ms),
        }
    }
}

/// One check's share of the window.
#[derive(Debug, Clone, Serialize)]
pub struct WatchCheck {
    pub name: String,
    pub samples: u64,
    pub errors: u64,
    pub p95_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Latencies and errors collected so far.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    samples: u64,
    errors: u64,
}

impl Tally {
    fn p(&self, q: f64) -> Option<Duration> {
        percentile(&self.latencies, q)
    }

    fn error_rate(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.errors as f64 / self.samples as f64
        }
    }
}

impl Runner<'_> {
    /// Polls `checks` round after round for the window; the login is not repeated (it would
    /// trip rate limits and lockouts), but its session cookie is still sent.
    pub(super) async fn watch(&self, checks: &[Check], w: &WatchSettings) -> WatchReport {
        // Data from before this moment (the rollout, the smoke checks) is not counted.
        let since = metrics::now();
        let figures = async {
            match &w.metrics {
                Some(m) => Some(metrics::watch(m, since, w.duration, w.interval).await),
                None => None,
            }
        };
        let (mut report, figures) = tokio::join!(self.probe(checks, w), figures);
        if let Some(m) = figures {
            for line in m.lines() {
                tracing::info!("{line}");
            }
            match m.verdict {
                Verdict::Pass => {}
                Verdict::TooLittleTraffic => report.inconclusive = m.reason.clone(),
                Verdict::Fail | Verdict::Unavailable => {
                    report.ok = false;
                    let why = m.reason.clone().unwrap_or_else(|| "failed".into());
                    report.reason = Some(match report.reason.take() {
                        Some(r) => format!("{r}; production metrics: {why}"),
                        None => format!("production metrics: {why}"),
                    });
                }
            }
            report.metrics = Some(m);
        }
        report
    }

    /// The probes: the checks, round after round, for the window.
    async fn probe(&self, checks: &[Check], w: &WatchSettings) -> WatchReport {
        let started = Instant::now();
        let end = started + w.duration;
        tracing::info!(
            "watching {} for {} (p95 budget {} ms, error budget {:.1}%)",
            checks
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            human(w.duration),
            ms(w.p95_budget),
            w.max_error_rate * 100.0
        );
        let mut all = Tally::default();
        let mut per: Vec<(Tally, Option<String>)> =
            checks.iter().map(|_| (Tally::default(), None)).collect();
        let mut next_note = started + w.interval;
        let mut interval = Tally::default();
        let mut intervals = Vec::new();
        // At least one round, however short the window.
        loop {
            let round = Instant::now();
            for (c, (tally, last_error)) in checks.iter().zip(per.iter_mut()) {
                let sample = self.attempt(c, self.request_timeout).await;
                for t in [&mut all, &mut *tally, &mut interval] {
                    t.samples += 1;
                    if let Some(l) = sample.latency {
                        t.latencies.push(l);
                    }
                    if sample.failure.is_some() {
                        t.errors += 1;
                    }
                }
                if let Some(f) = sample.failure {
                    *last_error = Some(self.redactor.scrub(&f.reason));
                }
                if Instant::now() >= next_note {
                    tracing::info!(
                        "watch {}/{}: {}",
                        human(started.elapsed()),
                        human(w.duration),
                        progress(&all)
                    );
                    while next_note <= Instant::now() {
                        next_note += w.interval;
                    }
                    intervals.push(WatchInterval::from(&interval));
                    interval = Tally::default();
                }
            }
            let now = Instant::now();
            if now >= end {
                break;
            }
            tokio::time::sleep((round + w.poll).min(end).saturating_duration_since(now)).await;
            if Instant::now() >= end {
                break;
            }
        }

        if interval.samples > 0 {
            intervals.push(WatchInterval::from(&interval));
        }
        let p95 = all.p(0.95);
        let rate = all.error_rate();
        let mut reasons = Vec::new();
        if let Some(p) = p95
            && p > w.p95_budget
        {
            reasons.push(format!(
                "p95 latency {} ms is over the {} ms budget",
                ms(p),
                ms(w.p95_budget)
            ));
        }
        if rate > w.max_error_rate {
            reasons.push(format!(
                "error rate {:.1}% ({} of {}) is over the {:.1}% budget",
                rate * 100.0,
                all.errors,
                all.samples,
                w.max_error_rate * 100.0
            ));
        }
        let report = WatchReport {
            ok: reasons.is_empty(),
            duration_ms: ms(started.elapsed()),
            samples: all.samples,
            errors: all.errors,
            p50_ms: all.p(0.5).map(ms),
            p95_ms: p95.map(ms),
            error_rate: rate,
            p95_budget_ms: ms(w.p95_budget),
            max_error_rate: w.max_error_rate,
            reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
            checks: checks
                .iter()
                .zip(per)
                .map(|(c, (t, last_error))| WatchCheck {
                    name: c.name.clone(),
                    samples: t.samples,
                    errors: t.errors,
                    p95_ms: t.p(0.95).map(ms),
                    last_error,
                })
                .collect(),
            intervals,
            metrics: None,
            inconclusive: None,
        };
        tracing::info!("{}", report.summary());
        report
    }
}

impl WatchReport {
    /// One line: what was measured against what budget.
    pub fn summary(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
        format!(
            "watch {}: {} {} requests, p50 {}, p95 {} (budget {} ms), error rate {:.1}% (budget {:.1}%)",
            human(Duration::from_millis(self.duration_ms)),
            if self.ok { "ok," } else { "FAILED," },
            self.samples,
            opt(self.p50_ms),
            opt(self.p95_ms),
            self.p95_budget_ms,
            self.error_rate * 100.0,
            self.max_error_rate * 100.0
        )
    }
}

fn progress(t: &Tally) -> String {
    let opt = |v: Option<Duration>| v.map_or("-".to_string(), |v| format!("{} ms", ms(v)));
    format!(
        "{} requests, p50 {}, p95 {}, {} error{} ({:.1}%)",
        t.samples,
        opt(t.p(0.5)),
        opt(t.p(0.95)),
        t.errors,
        if t.errors == 1 { "" } else { "s" },
        t.error_rate() * 100.0
    )
}

/// Nearest-rank percentile: the smallest value with at least `q` of the values at or below it.
fn percentile(values: &[Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.95), Some(Duration::from_millis(95)));
        let one = [Duration::from_millis(7)];
        assert_eq!(percentile(&one, 0.95), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 0.5), None);
        // 19 fast and one slow request: p95 is still fast, as nearest rank says.
        let mut v = vec![Duration::from_millis(10); 19];
        v.push(Duration::from_millis(900));
        assert_eq!(percentile(&v, 0.95), Some(Duration::from_millis(10)));
    }
}
