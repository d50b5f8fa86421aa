//! The server's counters, rendered in Prometheus' text exposition format
//! (version 0.0.4): a handful of atomics and fixed-bucket histograms, which
//! is all `/metrics` needs, so no metrics crate.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The endpoints counted by name.
pub const ENDPOINTS: [&str; 5] = ["generate", "embeddings", "encode", "score", "other"];

/// How a request ended, as the `outcome` label spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    BadRequest,
    TooLarge,
    QueueFull,
    Timeout,
    Cancelled,
    Error,
    Unavailable,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::BadRequest,
        Outcome::TooLarge,
        Outcome::QueueFull,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::Error,
        Outcome::Unavailable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::QueueFull => "queue_full",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// A histogram with fixed upper bounds (plus +Inf).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum in microunits (µs for seconds, 1e-6 for counts), kept as an integer.
    sum_micro: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_micro.fetch_add((v * 1e6) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cum += c.load(Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => b.to_string(),
                None => "+Inf".into(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cum}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_micro.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cum}");
    }
}

const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const STALL_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
];

/// Everything `/metrics` reports.
pub struct Metrics {
    started: Instant,
    /// `[endpoint][outcome]` request counts.
    requests: Vec<Vec<AtomicU64>>,
    /// Per endpoint: seconds from the request's arrival to its last byte
    /// produced (successful requests).
    latency: Vec<Histogram>,
    pub queue_depth: AtomicU64,
    pub running: AtomicU64,
    /// Rows per decode step.
    pub batch_size: Histogram,
    /// Seconds of encoder passes run between two decode steps while rows
    /// waited (how long newcomers stalled the running batch).
    pub prefill_stall: Histogram,
    pub generated_tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub decode_steps: AtomicU64,
    /// Tokens per second over the last completed second window, as f64 bits.
    tokens_per_second: AtomicU64,
    window: std::sync::Mutex<(Instant, u64)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            requests: ENDPOINTS
                .iter()
                .map(|_| Outcome::ALL.iter().map(|_| AtomicU64::new(0)).collect())
                .collect(),
            latency: ENDPOINTS
                .iter()
                .map(|_| Histogram::new(LATENCY_BOUNDS))
                .collect(),
            queue_depth: AtomicU64::new(0),
            running: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH_BOUNDS),
            prefill_stall: Histogram::new(STALL_BOUNDS),
            generated_tokens: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            decode_steps: AtomicU64::new(0),
            tokens_per_second: AtomicU64::new(0),
            window: std::sync::Mutex::new((Instant::now(), 0)),
        }
    }
}

fn endpoint_index(endpoint: &str) -> usize {
    ENDPOINTS
        .iter()
        .position(|&e| e == endpoint)
        .unwrap_or(ENDPOINTS.len() - 1)
}

impl Metrics {
    /// Counts one finished request; `elapsed` goes to the latency histogram
    /// when it succeeded.
    pub fn request(&self, endpoint: &str, outcome: Outcome, elapsed: Duration) {
        let e = endpoint_index(endpoint);
        let o = Outcome::ALL.iter().position(|&x| x == outcome).unwrap_or(0);
        self.requests[e][o].fetch_add(1, Relaxed);
        if outcome == Outcome::Ok {
            self.latency[e].observe(elapsed.as_secs_f64());
        }
    }

    /// Adds generated tokens and rolls the tokens/s window each second.
    pub fn tokens(&self, n: u64) {
        let total = self.generated_tokens.fetch_add(n, Relaxed) + n;
        if let Ok(mut w) = self.window.try_lock() {
            let dt = w.0.elapsed().as_secs_f64();
            if dt >= 1.0 {
                let rate = (total - w.1) as f64 / dt;
                self.tokens_per_second.store(rate.to_bits(), Relaxed);
                *w = (Instant::now(), total);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        o.push_str("# HELP t5edge_requests_total Requests by endpoint and outcome.\n# TYPE t5edge_requests_total counter\n");
        for (e, name) in ENDPOINTS.iter().enumerate() {
            for (i, oc) in Outcome::ALL.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "t5edge_requests_total{{endpoint=\"{name}\",outcome=\"{}\"}} {}",
                    oc.name(),
                    self.requests[e][i].load(Relaxed)
                );
            }
        }
        o.push_str("# HELP t5edge_request_duration_seconds Latency of successful requests, arrival to last byte produced.\n# TYPE t5edge_request_duration_seconds histogram\n");
        for (e, name) in ENDPOINTS.iter().enumerate() {
            self.latency[e].render(
                &mut o,
                "t5edge_request_duration_seconds",
                &format!("endpoint=\"{name}\""),
            );
        }
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        gauge(
            &mut o,
            "t5edge_queue_depth",
            "Generation requests waiting for a batch slot.",
            self.queue_depth.load(Relaxed) as f64,
        );
        gauge(
            &mut o,
            "t5edge_running_sequences",
            "Rows in the running decode batch.",
            self.running.load(Relaxed) as f64,
        );
        gauge(
            &mut o,
            "t5edge_tokens_per_second",
            "Generated tokens per second over the last window of at least a second.",
            f64::from_bits(self.tokens_per_second.load(Relaxed)),
        );
        counter(
            &mut o,
            "t5edge_generated_tokens_total",
            "Tokens generated.",
            self.generated_tokens.load(Relaxed),
        );
        counter(
            &mut o,
            "t5edge_prompt_tokens_total",
            "Prompt tokens encoded for generation.",
            self.prompt_tokens.load(Relaxed),
        );
        counter(
            &mut o,
            "t5edge_decode_steps_total",
            "Decode steps run.",
            self.decode_steps.load(Relaxed),
        );
        o.push_str(
            "# HELP t5edge_batch_size Rows per decode step.\n# TYPE t5edge_batch_size histogram\n",
        );
        self.batch_size.render(&mut o, "t5edge_batch_size", "");
        o.push_str("# HELP t5edge_prefill_stall_seconds Encoder passes of newcomers run between two decode steps of a non-empty batch.\n# TYPE t5edge_prefill_stall_seconds histogram\n");
        self.prefill_stall
            .render(&mut o, "t5edge_prefill_stall_seconds", "");
        gauge(
            &mut o,
            "t5edge_uptime_seconds",
            "Seconds since the server started.",
            self.started.elapsed().as_secs_f64(),
        );
        o
    }
}
