//! The three latencies of the OpenMessaging Benchmark method, in µs hdrhistograms:
//! - publish latency: the client accepted the message → it was acknowledged;
//! - publish delay: the intended send time (open loop) → the client accepted it. A stalled
//!   producer shows up here instead of vanishing (coordinated omission made visible);
//! - end-to-end: the intended send time → a consumer received it (same process clock).

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde_json::json;

/// Highest latency recorded (1 hour, in µs); higher values are clamped.
const MAX_US: u64 = 3_600_000_000;

fn new_hist() -> Histogram<u64> {
    // Constant, valid bounds: 1 µs to 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    PublishLatency,
    PublishDelay,
    EndToEnd,
}

pub const METRICS: [(Metric, &str); 3] = [
    (Metric::PublishLatency, "publish_latency"),
    (Metric::PublishDelay, "publish_delay"),
    (Metric::EndToEnd, "end_to_end"),
];

/// Whole-run and current-interval histograms for each metric, plus counters.
pub struct Recorder {
    total: Mutex<[Histogram<u64>; 3]>,
    interval: Mutex<[Histogram<u64>; 3]>,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub published: u64,
    pub published_bytes: u64,
    pub consumed: u64,
    pub errors: u64,
    /// Messages still unacknowledged when the run gave up waiting ([`DRAIN_LIMIT`] after its
    /// end): a system that fell that far behind.
    ///
    /// [`DRAIN_LIMIT`]: super::runner::DRAIN_LIMIT
    pub unacknowledged: u64,
    /// Messages the producers had not even handed to the client by then.
    pub unsent: u64,
}

fn index(m: Metric) -> usize {
    match m {
        Metric::PublishLatency => 0,
        Metric::PublishDelay => 1,
        Metric::EndToEnd => 2,
    }
}

/// The guard of `m`, poisoned or not (a panicked holder left plain data behind).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            total: Mutex::new([new_hist(), new_hist(), new_hist()]),
            interval: Mutex::new([new_hist(), new_hist(), new_hist()]),
            counts: Mutex::new(Counts::default()),
        }
    }
}

impl Recorder {
    pub fn record(&self, metric: Metric, us: u64) {
        let us = us.clamp(1, MAX_US);
        let i = index(metric);
        let _ = lock(&self.total)[i].record(us);
        let _ = lock(&self.interval)[i].record(us);
    }

    pub fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut lock(&self.counts));
    }

    pub fn counts(&self) -> Counts {
        *lock(&self.counts)
    }

    pub fn total(&self, metric: Metric) -> Histogram<u64> {
        lock(&self.total)[index(metric)].clone()
    }

    /// The interval histograms since the last call (then reset).
    pub fn take_interval(&self) -> [Histogram<u64>; 3] {
        let mut g = lock(&self.interval);
        let out = g.clone();
        for h in g.iter_mut() {
            h.reset();
        }
        out
    }
}

/// p50 … max of a histogram, in µs, as JSON.
pub fn summary(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50), "p90_us": h.value_at_quantile(0.90), "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999), "p9999_us": h.value_at_quantile(0.9999), "max_us": h.max(),
    })
}

/// The `.hgrm` percentile distribution (HdrHistogram's text format, values in ms).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:14.2}", 1.0 / (1.0 - q))
        } else {
            "           inf".into()
        };
        out.push_str(&format!(
            "{:12.3} {:14.12} {:10} {}\n",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inv
        ));
    }
    out.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    ));
    out
}

/// A latency-by-percentile plot (SVG, log-scaled percentile axis, one line per metric).
pub fn svg_plot(title: &str, hists: &[(&str, Histogram<u64>)]) -> String {
    let (w, h, pad) = (800.0, 480.0, 60.0);
    let max_ms = hists
        .iter()
        .map(|(_, h)| h.max() as f64 / 1000.0)
        .fold(0.1f64, f64::max);
    let x = |q: f64| pad + (-(1.0 - q.min(0.99999)).log10() / 5.0) * (w - 2.0 * pad);
    let y = |ms: f64| h - pad - (ms / max_ms) * (h - 2.0 * pad);
    let colors = ["#1f77b4", "#ff7f0e", "#2ca02c"];
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{pad}" y="24" font-size="16">{title}</text>"#
    );
    for (i, label) in ["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let q = 1.0 - 10f64.powi(-(i as i32)) * if i == 0 { 0.5 } else { 1.0 };
        let xi = x(q);
        s.push_str(&format!(r##"<line x1="{xi}" y1="{pad}" x2="{xi}" y2="{}" stroke="#ddd"/><text x="{xi}" y="{}" text-anchor="middle">{label}</text>"##, h - pad, h - pad + 18.0));
    }
    for k in 0..=4 {
        let ms = max_ms * k as f64 / 4.0;
        s.push_str(&format!(
            r#"<text x="{}" y="{}" text-anchor="end">{ms:.2} ms</text>"#,
            pad - 6.0,
            y(ms) + 4.0
        ));
    }
    for (i, (name, hist)) in hists.iter().enumerate() {
        let pts: Vec<String> = hist
            .iter_quantiles(5)
            .map(|v| {
                format!(
                    "{:.1},{:.1}",
                    x(v.quantile_iterated_to()),
                    y(v.value_iterated_to() as f64 / 1000.0)
                )
            })
            .collect();
        let c = colors[i % colors.len()];
        s.push_str(&format!(r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/><text x="{}" y="{}" fill="{c}">{name}</text>"#, pts.join(" "), w - pad - 150.0, pad + 16.0 * (i as f64 + 1.0)));
    }
    s.push_str("</svg>\n");
    s
}
