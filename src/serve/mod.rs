//! `t5edge serve`: an HTTP server over one loaded model.
//!
//! - [`requests`]: the request bodies, JSON to library types (fuzzed).
//! - [`scheduler`]: continuous batching on one thread that owns the running
//!   [`crate::generate::DecodeBatch`].
//! - [`http`]: the axum routes and handlers.
//! - [`metrics`]: the counters behind `GET /metrics`.
//!
//! The server is stateless between requests, so more capacity is more
//! replicas behind a load balancer (docs/SERVE.md).

pub mod http;
pub mod metrics;
pub mod requests;
pub mod scheduler;

use crate::generate::GenerateOptions;
use crate::{Error, Result, T5Model, Tokenizer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How the server runs: `t5edge serve`'s flags.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Rows decoded together at most.
    pub max_batch: usize,
    /// Generation requests waiting at most; beyond, 429.
    pub max_queue: usize,
    /// A request still unanswered after this gets 504 (its batch slot is freed).
    pub request_timeout: Duration,
    /// Bodies above this many bytes get 413.
    pub max_body_bytes: usize,
    /// Encoder-endpoint requests computing at once (on tokio's blocking
    /// pool); the others wait for a slot within their timeout.
    pub compute_slots: usize,
    /// Under every request: the limits and `exact`.
    pub options: GenerateOptions,
    /// The name `/health` and `/v1/embeddings` report.
    pub model_name: String,
    /// Honour the `x-t5edge-fault` test header.
    pub inject_faults: bool,
}

/// `--compute-slots`' default: twice the cores. Without a bound, a burst of
/// 64 `/v1/embeddings` requests ran on 33-39 blocking threads at once on 2
/// cores (RSS 68 -> 105-113 MB: each thread's encoder working memory)
/// for no more throughput than a few threads give.
pub fn default_compute_slots() -> usize {
    2 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Serves on `addr` until SIGTERM or Ctrl-C, then drains: stops accepting,
/// answers what is queued and running, and returns. `on_bound` gets the bound
/// address first (port 0 picks a free one).
pub fn run(
    model: T5Model,
    tok: Option<Tokenizer>,
    cfg: ServeConfig,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        // The async side only moves bytes; compute runs on the scheduler
        // thread and the blocking pool.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Other(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Other(format!("{addr}: {e}")))?;
        let model = Arc::new(model);
        let metrics = Arc::new(metrics::Metrics::default());
        let (sched, thread) = scheduler::Scheduler::start(
            model.clone(),
            cfg.max_batch,
            cfg.max_queue,
            metrics.clone(),
        )
        .map_err(|e| Error::Other(format!("cannot start the scheduler: {e}")))?;
        let state = Arc::new(http::AppState {
            model,
            tok: tok.map(Arc::new),
            scheduler: sched.clone(),
            metrics,
            base: cfg.options.clone(),
            request_timeout: cfg.request_timeout,
            model_name: cfg.model_name.clone(),
            inject_faults: cfg.inject_faults,
            compute: Arc::new(tokio::sync::Semaphore::new(cfg.compute_slots.max(1))),
        });
        let app = http::router(state, cfg.max_body_bytes);
        on_bound(bound);
        let s2 = sched.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown_signal().await;
                // Refuse new generation work; the listener closes now and
                // open requests are answered.
                s2.drain();
                eprintln!("t5edge serve: draining");
            })
            .await;
        sched.drain();
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        served.map_err(|e| Error::Other(format!("server: {e}")))
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
