//! Continuous batching: one thread owns the running [`DecodeBatch`] and, between
//! two decode steps, lets finished and cancelled rows leave and queued
//! requests join after their encoder pass.
//!
//! Interleaving: newcomers are prefilled (encoder pass + cross-attention
//! keys/values, [`Prefilled::new`]) on the scheduler thread, one after another,
//! between two steps, while there are free slots; when rows are already
//! running, admission stops once this round's prefills have taken
//! [`PREFILL_BUDGET`], so the running rows wait at most about one prompt's
//! encoder pass beyond it before their next token (measured as
//! `t5edge_prefill_stall_seconds`). Beam search and multi-sequence sampling
//! are not row-wise strategies: such a request runs whole, alone, in the
//! admission phase (the running rows wait for it; documented in
//! docs/SERVE.md).
//!
//! Faults: each request's prefill and whole-run generation run under
//! `catch_unwind`, so a panic fails that request alone. A panic inside a
//! shared decode step fails the rows of that step (their state is no longer
//! trustworthy) and the scheduler goes on with a fresh batch. A request whose
//! client has gone (its event receiver dropped) leaves at the next step; one
//! past its deadline leaves with a timeout.

use super::metrics::{Metrics, Outcome};
use crate::generate::{
    generate, DecodeBatch, DecodeRng, Finished, GenerateOptions, Generation, Prefilled,
};
use crate::model::T5Model;
use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How long newcomers' encoder passes may hold up a running batch per round
/// (the round's last prefill may end past it).
pub const PREFILL_BUDGET: Duration = Duration::from_millis(2);

/// Why a request failed, which picks its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailKind {
    /// The request is wrong (400).
    Request,
    /// It ran past its deadline (504).
    Timeout,
    /// A fault of ours, e.g. a panic (500).
    Internal,
}

/// What the scheduler tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// A new token (greedy and sampling rows, as it is chosen).
    Token(u32),
    /// The answer.
    Done(Generation),
    /// The request failed.
    Failed(FailKind, String),
}

/// A generation request for the scheduler: ids already checked.
pub struct Job {
    pub ids: Vec<u32>,
    pub opts: GenerateOptions,
    pub events: UnboundedSender<Event>,
    pub deadline: Instant,
    /// The client wants every token as it comes (SSE). Otherwise only the
    /// final answer is sent: a token event would wake the HTTP runtime at
    /// every decode step for nothing, taking CPU from the step itself
    /// (measured: ~5 ms on W1's 32 tokens on 2 cores, docs/SERVE.md).
    pub stream: bool,
    /// Test hook (`--inject-faults`): panic in this request's prefill.
    pub panic_in_prefill: bool,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// The queue holds `--max-queue` jobs (429).
    QueueFull,
    /// The server is draining (503).
    ShuttingDown,
}

/// The queue between the HTTP handlers and the scheduler thread.
pub struct Scheduler {
    queue: Mutex<VecDeque<Job>>,
    wake: Condvar,
    draining: AtomicBool,
    max_queue: usize,
    metrics: Arc<Metrics>,
}

impl Scheduler {
    /// Starts the scheduler thread over `model`; it runs until
    /// [`Scheduler::drain`] and then exits once the queue and the batch are
    /// empty (join the handle).
    pub fn start(
        model: Arc<T5Model>,
        max_batch: usize,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Arc<Scheduler>, std::thread::JoinHandle<()>)> {
        let s = Arc::new(Scheduler {
            queue: Mutex::new(VecDeque::with_capacity(max_queue)),
            wake: Condvar::new(),
            draining: AtomicBool::new(false),
            max_queue,
            metrics,
        });
        let s2 = s.clone();
        let h = std::thread::Builder::new()
            .name("t5edge-scheduler".into())
            .spawn(move || s2.run(&model, max_batch.max(1)))?;
        Ok((s, h))
    }

    /// Queues a job, or says why not.
    pub fn submit(&self, job: Job) -> Result<(), Rejected> {
        if self.draining.load(Relaxed) {
            return Err(Rejected::ShuttingDown);
        }
        let mut q = self.lock();
        if q.len() >= self.max_queue {
            return Err(Rejected::QueueFull);
        }
        q.push_back(job);
        self.metrics.queue_depth.store(q.len() as u64, Relaxed);
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    /// Refuses new jobs; the thread finishes what is queued and running, then exits.
    pub fn drain(&self) {
        self.draining.store(true, Relaxed);
        self.wake.notify_all();
    }

    /// Whether [`Scheduler::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        // A panic never happens while the lock is held (only queue pushes and
        // pops), but a poisoned queue is still a usable queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next job: waits while nothing runs; `None` when rows are running
    /// and the queue is empty, or when draining is done.
    fn next_job(&self, idle: bool) -> Option<Job> {
        let mut q = self.lock();
        loop {
            if let Some(j) = q.pop_front() {
                self.metrics.queue_depth.store(q.len() as u64, Relaxed);
                return Some(j);
            }
            if !idle || self.draining.load(Relaxed) {
                return None;
            }
            q = self
                .wake
                .wait_timeout(q, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn run(&self, model: &T5Model, max_batch: usize) {
        let m = &self.metrics;
        let mut batch = DecodeBatch::new(model);
        batch.reserve(max_batch);
        let mut live: HashMap<u64, Live> = HashMap::with_capacity(max_batch);
        let mut finished: Vec<Finished> = Vec::with_capacity(max_batch);
        let mut next_key = 0u64;
        loop {
            // Admission: prefill newcomers into free slots.
            let running = !batch.is_empty();
            let round = Instant::now();
            let mut prefilled = false;
            while batch.len() < max_batch && !(running && round.elapsed() >= PREFILL_BUDGET) {
                let Some(job) = self.next_job(batch.is_empty()) else {
                    break;
                };
                if job.events.is_closed() {
                    m.request("generate", Outcome::Cancelled, Duration::ZERO);
                    continue;
                }
                if Instant::now() >= job.deadline {
                    fail(
                        &job.events,
                        FailKind::Timeout,
                        "the request timed out in the queue",
                    );
                    continue;
                }
                prefilled = true;
                m.prompt_tokens.fetch_add(job.ids.len() as u64, Relaxed);
                if job.opts.num_beams > 1 || job.opts.num_return_sequences > 1 {
                    // Not row-wise: run it whole here.
                    let r =
                        catch_unwind(AssertUnwindSafe(|| generate(model, &[&job.ids], &job.opts)));
                    match r {
                        Ok(Ok(mut g)) => {
                            m.tokens(g[0].sequences.iter().map(|s| s.len() as u64).sum());
                            let _ = job.events.send(Event::Done(g.remove(0)));
                        }
                        Ok(Err(e)) => fail(&job.events, FailKind::Request, &e.to_string()),
                        Err(_) => fail(&job.events, FailKind::Internal, "generation panicked"),
                    }
                    continue;
                }
                let pre = catch_unwind(AssertUnwindSafe(|| {
                    if job.panic_in_prefill {
                        panic!("injected fault: panic in prefill");
                    }
                    Prefilled::new(model, &job.ids, &job.opts)
                }));
                let pre = match pre {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => {
                        fail(&job.events, FailKind::Request, &e.to_string());
                        continue;
                    }
                    Err(_) => {
                        fail(&job.events, FailKind::Internal, "prefill panicked");
                        continue;
                    }
                };
                let key = next_key;
                next_key += 1;
                // A request alone samples from stream 0 of its seed, as `generate` does.
                let rng = job.opts.do_sample.then(|| DecodeRng::new(job.opts.seed, 0));
                match batch.join(key, pre, &job.opts, rng) {
                    Ok(Some(f)) => {
                        let _ = job.events.send(Event::Done(generation(f.ids)));
                    }
                    Ok(None) => {
                        live.insert(
                            key,
                            Live {
                                events: job.events,
                                deadline: job.deadline,
                                stream: job.stream,
                                gone: false,
                            },
                        );
                    }
                    Err(e) => fail(&job.events, FailKind::Request, &e.to_string()),
                }
            }
            if running && prefilled {
                m.prefill_stall.observe(round.elapsed().as_secs_f64());
            }
            if batch.is_empty() {
                if self.draining.load(Relaxed) && self.lock().is_empty() {
                    return;
                }
                continue;
            }
            // Rows past their deadline or whose client is gone leave now.
            let now = Instant::now();
            let leaving: Vec<u64> = batch
                .keys()
                .filter(|k| {
                    live.get(k)
                        .is_none_or(|l| now >= l.deadline || l.events.is_closed())
                })
                .collect();
            for k in leaving {
                batch.remove(k);
                if let Some(l) = live.remove(&k) {
                    if l.events.is_closed() {
                        m.request("generate", Outcome::Cancelled, Duration::ZERO);
                    } else {
                        fail(&l.events, FailKind::Timeout, "the request timed out");
                    }
                }
            }
            if batch.is_empty() {
                continue;
            }
            let rows = batch.len();
            m.running.store(rows as u64, Relaxed);
            m.batch_size.observe(rows as f64);
            let step = catch_unwind(AssertUnwindSafe(|| {
                batch.step(
                    &mut |key, id| match live.get_mut(&key) {
                        // A gone client shows as a closed channel either way:
                        // a failed send, or (not streaming) `is_closed`.
                        Some(l)
                            if (l.stream && l.events.send(Event::Token(id)).is_ok())
                                || (!l.stream && !l.events.is_closed()) =>
                        {
                            ControlFlow::Continue(())
                        }
                        Some(l) => {
                            // The client is gone: end the row after this token.
                            l.gone = true;
                            ControlFlow::Break(())
                        }
                        None => ControlFlow::Break(()),
                    },
                    &mut finished,
                )
            }));
            m.decode_steps.fetch_add(1, Relaxed);
            m.tokens(rows as u64);
            match step {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    fail_all(&mut batch, &mut live, model, max_batch, &e.to_string());
                    finished.clear();
                }
                Err(_) => {
                    fail_all(
                        &mut batch,
                        &mut live,
                        model,
                        max_batch,
                        "decode step panicked",
                    );
                    finished.clear();
                }
            }
            for f in finished.drain(..) {
                if let Some(l) = live.remove(&f.key) {
                    if l.gone {
                        m.request("generate", Outcome::Cancelled, Duration::ZERO);
                    } else {
                        let _ = l.events.send(Event::Done(generation(f.ids)));
                    }
                }
            }
            m.running.store(batch.len() as u64, Relaxed);
        }
    }
}

/// A running row's handler side.
struct Live {
    events: UnboundedSender<Event>,
    deadline: Instant,
    /// Send each token (see [`Job::stream`]).
    stream: bool,
    /// Its client went away during a step.
    gone: bool,
}

fn generation(ids: Vec<u32>) -> Generation {
    Generation {
        sequences: vec![ids],
        scores: None,
    }
}

fn fail(events: &UnboundedSender<Event>, kind: FailKind, msg: &str) {
    let _ = events.send(Event::Failed(kind, msg.to_string()));
}

/// Fails every running row and starts over with an empty batch.
fn fail_all<'m>(
    batch: &mut DecodeBatch<'m>,
    live: &mut HashMap<u64, Live>,
    model: &'m T5Model,
    max_batch: usize,
    msg: &str,
) {
    for (_, l) in live.drain() {
        fail(&l.events, FailKind::Internal, msg);
    }
    *batch = DecodeBatch::new(model);
    batch.reserve(max_batch);
}
