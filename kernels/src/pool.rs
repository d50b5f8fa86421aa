//! Who runs a parallel region: rayon, or a small persistent pool whose workers
//! spin for a while after each job.
//!
//! A batch-1 decode step takes ~0.2 ms and its one large layer (the LM head)
//! ~0.1 ms of that. Rayon's idle workers go to sleep on a futex within
//! microseconds, so every step paid a wakeup (and perf showed ~10% of the time
//! in the scheduler). The spin pool keeps its workers polling an epoch counter
//! for [`DEFAULT_SPIN`] after each job, so back-to-back sub-millisecond regions
//! start without a syscall, and parks them when the process goes quiet (or
//! when a worker finds it was descheduled: the machine has no core to spare).
//!
//! Either way the caller hands over a task count and `f(task)`; how the work is
//! cut into tasks is the caller's business and must depend only on shapes.
//! Which thread runs which task can vary from run to run; what a task computes
//! cannot, which is why results are bit-identical for any thread count.
//!
//! The application configures it (this crate reads no environment; t5edge
//! reads `T5EDGE_POOL`, `T5EDGE_THREADS` and `T5EDGE_SPIN_US` /
//! `T5EDGE_SPIN_HOT_US` in `t5edge::runtime`): [`set_backend`] picks the
//! backend ([`DEFAULT_BACKEND`] otherwise), [`configure_spin`] sizes the spin
//! pool and sets how long its workers poll ([`DEFAULT_SPIN`], [`DEFAULT_HOT`];
//! the number of cores otherwise) before it starts, and
//! [`set_global_threads`] fixes its size over both.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a spin-pool worker polls for the next job before parking. Longer
/// than the gap between two LM-head GEMVs of a tiny-model decode step
/// (~0.1-0.2 ms), short enough that an idle process stops burning a core
/// almost at once.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// For how much of [`DEFAULT_SPIN`] a worker polls with `spin_loop` alone; after
/// that it calls `sched_yield` between polls. On a machine with more runnable
/// threads than cores a pure spinner took CPU time from our own caller
/// (measured: W1 int8 13.5 ms with 200 us of pure spinning against 10.3 ms
/// with 20 us and 10.6 ms for rayon, load average ~5 on 2 cores); yielding
/// keeps the worker ready without starving anyone.
pub const DEFAULT_HOT: Duration = Duration::from_micros(20);

/// A gap this long between two polls of a spinning worker means it was
/// descheduled; it then parks rather than keep competing for a busy core.
const PREEMPTED: Duration = Duration::from_micros(30);

/// Which threads run parallel regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// rayon's global pool (or the one installed with `ThreadPool::install`).
    Rayon,
    /// The persistent spin-then-park pool of this module.
    Spin,
}

impl Backend {
    /// The name `T5EDGE_POOL` uses.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Rayon => "rayon",
            Backend::Spin => "spin",
        }
    }

    /// The backend `s` names.
    pub fn parse(s: &str) -> Option<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rayon" => Some(Backend::Rayon),
            "spin" => Some(Backend::Spin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend used unless the application sets another: the spin pool won
/// 19 of 20 alternating W1 int8 runs against rayon (median 6.3 vs 7.0 ms) and
/// did not lose W2 or W3 overall, though it can on an oversubscribed machine
/// (kernels/BENCH.md, "rayon vs persistent pool").
pub const DEFAULT_BACKEND: Backend = Backend::Spin;

/// The backend set with [`set_backend`]: 0 unset, else `1 + Backend as u8`.
static BACKEND: AtomicU8 = AtomicU8::new(0);

/// Sets the process-wide backend (e.g. from `T5EDGE_POOL`) for parallel
/// regions started from now on.
pub fn set_backend(b: Backend) {
    BACKEND.store(1 + b as u8, Ordering::Relaxed);
}

/// The process-wide backend: the one [`set_backend`] chose, else
/// [`DEFAULT_BACKEND`].
pub fn backend() -> Backend {
    match BACKEND.load(Ordering::Relaxed) {
        1 => Backend::Rayon,
        2 => Backend::Spin,
        _ => DEFAULT_BACKEND,
    }
}

/// How the global spin pool is set up when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinConfig {
    /// Threads, counting the caller (`None`: the number of cores). An
    /// explicit [`set_global_threads`] wins.
    pub threads: Option<usize>,
    /// How long a worker polls with `spin_loop` alone ([`DEFAULT_HOT`]).
    pub hot: Duration,
    /// How long a worker polls before parking ([`DEFAULT_SPIN`]).
    pub spin: Duration,
}

impl Default for SpinConfig {
    fn default() -> Self {
        SpinConfig {
            threads: None,
            hot: DEFAULT_HOT,
            spin: DEFAULT_SPIN,
        }
    }
}

static SPIN_CONFIG: Mutex<SpinConfig> = Mutex::new(SpinConfig {
    threads: None,
    hot: DEFAULT_HOT,
    spin: DEFAULT_SPIN,
});
static GLOBAL_THREADS: OnceLock<usize> = OnceLock::new();
static GLOBAL: OnceLock<Pool> = OnceLock::new();

/// Sets up the global spin pool (e.g. from `T5EDGE_THREADS` and
/// `T5EDGE_SPIN_US`). Returns false, changing nothing, if the pool has
/// already started.
pub fn configure_spin(config: SpinConfig) -> bool {
    let mut c = SPIN_CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    if GLOBAL.get().is_some() {
        return false;
    }
    *c = config;
    true
}

/// Sizes the global spin pool (counting the calling thread). Like rayon's
/// `build_global`, only the first setting counts: returns false if the size
/// was already fixed (by an earlier call or by the pool's first use).
pub fn set_global_threads(threads: usize) -> bool {
    GLOBAL_THREADS.set(threads.max(1)).is_ok()
}

/// The process-wide spin pool, started on first use.
pub fn global() -> &'static Pool {
    GLOBAL.get_or_init(|| {
        // Held while starting, so a concurrent `configure_spin` either lands
        // before or reports that it came too late.
        let c = SPIN_CONFIG.lock().unwrap_or_else(|e| e.into_inner());
        let cores = || {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        };
        let threads = *GLOBAL_THREADS.get_or_init(|| c.threads.unwrap_or_else(cores).max(1));
        Pool::build(threads, c.hot, c.spin)
    })
}

#[derive(Clone, Copy)]
enum Route {
    Rayon,
    Spin(*const Pool),
}

thread_local! {
    /// Set by [`Pool::install`] / [`with_backend`] for the calling thread.
    static ROUTE: Cell<Option<Route>> = const { Cell::new(None) };
    /// Set by [`with_home_shares`]: the spin pool's jobs started here give
    /// each thread a fixed share of the tasks first.
    static HOMED: Cell<bool> = const { Cell::new(false) };
    /// True on spin-pool workers and on a caller while it runs its share of a
    /// job: a parallel region started from inside a task runs inline, so a
    /// pool never waits on itself.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous route when a scope ends, also on unwinding.
struct RouteGuard(Option<Route>);

impl Drop for RouteGuard {
    fn drop(&mut self) {
        ROUTE.with(|r| r.set(self.0));
    }
}

fn with_route<R>(route: Route, f: impl FnOnce() -> R) -> R {
    let _restore = RouteGuard(ROUTE.with(|r| r.replace(Some(route))));
    f()
}

/// Runs `f` with this thread's parallel regions on `b` (the global spin pool
/// for [`Backend::Spin`]; rayon's current pool for [`Backend::Rayon`]),
/// whatever the process-wide backend is. For comparing backends in one process.
pub fn with_backend<R>(b: Backend, f: impl FnOnce() -> R) -> R {
    match b {
        Backend::Rayon => with_route(Route::Rayon, f),
        Backend::Spin => with_route(Route::Spin(global()), f),
    }
}

fn route() -> Route {
    ROUTE.with(|r| r.get()).unwrap_or_else(|| match backend() {
        Backend::Rayon => Route::Rayon,
        Backend::Spin => Route::Spin(global()),
    })
}

/// Threads a parallel region started here would use.
pub fn current_threads() -> usize {
    match route() {
        Route::Rayon => rayon::current_num_threads(),
        // SAFETY: a Spin route holds either the 'static global pool or a pool
        // borrowed by `Pool::install` for as long as the route is set (the
        // guard resets it before that borrow ends).
        Route::Spin(p) => unsafe { &*p }.threads(),
    }
}

/// The name of the backend a parallel region started here would use.
pub fn current_backend() -> Backend {
    match route() {
        Route::Rayon => Backend::Rayon,
        Route::Spin(_) => Backend::Spin,
    }
}

/// Whether [`with_home_shares`] takes effect (the default), process-wide.
static HOME_SHARES: AtomicBool = AtomicBool::new(true);

/// Turns home shares on or off for jobs started from now on (e.g. from
/// `T5EDGE_HOME_SHARES`, to compare the two on a CPU); the results are the
/// same either way.
pub fn set_home_shares(on: bool) {
    HOME_SHARES.store(on, Ordering::Relaxed);
}

/// Runs `f` with the spin pool's jobs started on this thread cut into home
/// shares: thread `i` of the pool (the caller is 0) first runs the `i`-th
/// contiguous range of a job's tasks, from its front, and only then takes
/// what is left of the others' ranges, from their backs. A region whose tasks
/// read the same weights on every call (a decode step's layers and head) then
/// finds each thread's rows where that thread left them, in its own L2; on
/// the Intel Xeon a core reads its L2 at 5-10x the rate of the L3
/// (kernels/BENCH.md, "Home shares for decode steps"). What a task computes is
/// unchanged, so results are too. The encoder is left out: there home
/// ranges measured slower (all-int8 W3 +4.7%), why not pinned down.
pub fn with_home_shares<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            HOMED.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(HOMED.with(|h| h.replace(true)));
    f()
}

/// Runs `f(t)` for every `t` in `0..tasks` exactly once, on several threads when
/// `parallel`, and returns when all have finished: the kernels' regions, and
/// the engine's own work between them (a batch's texts tokenized), on the
/// pool the process configured (`T5EDGE_POOL`, the thread count). Inside a
/// task it runs serially.
pub fn for_each<F>(tasks: usize, parallel: bool, f: F)
where
    F: Fn(usize) + Sync,
{
    if !parallel || tasks <= 1 || IN_TASK.with(|t| t.get()) {
        (0..tasks).for_each(f);
        return;
    }
    match route() {
        Route::Rayon => {
            use rayon::prelude::*;
            (0..tasks).into_par_iter().for_each(&f)
        }
        // SAFETY: as in `current_threads`.
        Route::Spin(p) => unsafe { &*p }.run(tasks, f),
    }
}

/// `f(i)` for every `i` in `0..items`, in order: [`for_each`] of tasks of
/// `grain` items each (several threads when `parallel`). What a batch's
/// items computed apart (texts tokenized, inputs embedded alone) are
/// collected with, instead of each caller keeping slots of its own.
pub fn map<T, F>(items: usize, grain: usize, parallel: bool, f: F) -> Vec<T>
where
    T: Send + Sync,
    F: Fn(usize) -> T + Sync,
{
    let grain = grain.max(1);
    let slots: Vec<OnceLock<T>> = (0..items).map(|_| OnceLock::new()).collect();
    for_each(items.div_ceil(grain), parallel, |t| {
        let start = t * grain;
        for (i, slot) in slots.iter().enumerate().skip(start).take(grain) {
            let _ = slot.set(f(i));
        }
    });
    slots
        .into_iter()
        .map(|s| s.into_inner().expect("for_each runs every task once"))
        .collect()
}

/// One parallel region, on the stack of the thread that started it.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    /// Tasks claimed per atomic increment (~1/64 of a thread's share: ~1 us of
    /// the LM head). Larger grains touch the counter less but a worker that is
    /// preempted while holding one makes the caller wait for it to be
    /// rescheduled, which on a loaded machine cost more than the atomics.
    grain: usize,
    next: Padded<AtomicUsize>,
    /// Per-thread home shares (see [`with_home_shares`]), each a packed
    /// `back << 32 | front` of the task range not yet claimed; `None` for a
    /// job that hands out tasks from one counter.
    homes: Option<&'a [Padded<AtomicU64>]>,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Runs tasks until none is left unclaimed; `me` is the thread's index in
    /// the pool (the caller 0), which picks its home share.
    fn work(&self, me: usize) {
        if let Some(homes) = self.homes {
            let n = homes.len();
            while let Some((a, b)) = claim(&homes[me % n].0, self.grain, true) {
                (a..b).for_each(self.f);
            }
            for other in (1..n).map(|d| (me + d) % n) {
                while let Some((a, b)) = claim(&homes[other].0, self.grain, false) {
                    (a..b).for_each(self.f);
                }
            }
            return;
        }
        loop {
            let start = self.next.0.fetch_add(self.grain, Ordering::Relaxed);
            if start >= self.tasks {
                return;
            }
            for t in start..(start + self.grain).min(self.tasks) {
                (self.f)(t);
            }
        }
    }
}

/// The range `(start, end)` of up to `grain` tasks taken from the front (the
/// share's owner) or the back (a thread that finished its own) of a packed
/// `back << 32 | front` share; `None` once the share is empty.
fn claim(share: &AtomicU64, grain: usize, front: bool) -> Option<(usize, usize)> {
    let grain = grain as u64;
    let mut w = share.load(Ordering::Relaxed);
    loop {
        let (f, b) = (w & 0xffff_ffff, w >> 32);
        if f >= b {
            return None;
        }
        let (next, range) = if front {
            let nf = (f + grain).min(b);
            (b << 32 | nf, (f, nf))
        } else {
            let nb = b.saturating_sub(grain).max(f);
            (nb << 32 | f, (nb, b))
        };
        match share.compare_exchange_weak(w, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Some((range.0 as usize, range.1 as usize)),
            Err(now) => w = now,
        }
    }
}

/// Keeps the hot atomics on separate cache lines (adjacent-line prefetch
/// makes 128 the safe distance).
#[repr(align(128))]
struct Padded<T>(T);

struct Shared {
    /// Bumped once per published job (and at shutdown); what idle workers poll.
    epoch: Padded<AtomicU64>,
    /// The current job, null when none. Points at a `Job` on the caller's
    /// stack whose lifetime was erased; see `Pool::run` for why that is sound.
    job: Padded<AtomicPtr<Job<'static>>>,
    /// Workers between "about to read `job`" and "done with that job".
    refs: Padded<AtomicUsize>,
    /// Workers parked (or about to park) on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    /// Poll with `spin_loop` this long, then with `sched_yield` ...
    hot: Duration,
    /// ... until this long after the last job, then park.
    spin: Duration,
    /// Workers that have started running (see `Pool::build`).
    started: AtomicUsize,
    /// One home share per thread of the pool, refilled by the caller of each
    /// homed job (one job runs at a time: `Pool::busy`).
    homes: Box<[Padded<AtomicU64>]>,
}

/// A persistent pool: `threads - 1` workers plus the thread that calls
/// [`Pool::run`]. Workers spin for the pool's spin time after each job, then
/// park until the next one.
pub struct Pool {
    shared: Arc<Shared>,
    threads: usize,
    /// Held by the one caller whose job is running; other callers (another
    /// user thread, or a region started inside a task) run inline instead of
    /// waiting, so nothing can deadlock on the pool.
    busy: AtomicBool,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `threads` threads (the caller included) with the default spin.
    pub fn new(threads: usize) -> Pool {
        Pool::with_spin(threads, DEFAULT_SPIN)
    }

    /// A pool whose workers poll for `spin` after each job before parking.
    pub fn with_spin(threads: usize, spin: Duration) -> Pool {
        Pool::build(threads, DEFAULT_HOT, spin)
    }

    fn build(threads: usize, hot: Duration, spin: Duration) -> Pool {
        let shared = Arc::new(Shared {
            epoch: Padded(AtomicU64::new(0)),
            job: Padded(AtomicPtr::new(std::ptr::null_mut())),
            refs: Padded(AtomicUsize::new(0)),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            hot,
            spin,
            started: AtomicUsize::new(0),
            homes: (0..threads.max(1))
                .map(|_| Padded(AtomicU64::new(0)))
                .collect(),
        });
        let mut workers = Vec::new();
        for i in 1..threads.max(1) {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("t5edge-pool-{i}"))
                .spawn(move || worker(&s, i));
            // A pool with fewer workers computes the same results, so failing
            // to spawn one is not worth failing the caller.
            match spawned {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        // A spawned thread runs std's start-up (which allocates) whenever the
        // scheduler first gives it a core; on a loaded machine that was in the
        // middle of a later decode step, which then allocated
        // (tests/no_alloc.rs). A pool is ready only once every worker runs.
        while shared.started.load(Ordering::Acquire) < workers.len() {
            std::thread::yield_now();
        }
        Pool {
            shared,
            threads: workers.len() + 1,
            busy: AtomicBool::new(false),
            workers,
        }
    }

    /// Threads that run a job, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` with this thread's parallel regions on this pool.
    pub fn install<R>(&self, f: impl FnOnce() -> R) -> R {
        with_route(Route::Spin(self), f)
    }

    /// Runs `f(t)` for every `t` in `0..tasks` exactly once and returns when all
    /// have finished. The calling thread works too. Runs inline when the pool
    /// is already running another caller's job or when called from inside a
    /// task. A panicking task panics the caller (after every task has ended).
    pub fn run<F>(&self, tasks: usize, f: F)
    where
        F: Fn(usize) + Sync,
    {
        if tasks == 0 {
            return;
        }
        if self.threads == 1
            || tasks == 1
            || IN_TASK.with(|t| t.get())
            || self.busy.swap(true, Ordering::Acquire)
        {
            (0..tasks).for_each(f);
            return;
        }
        let s = &*self.shared;
        // Shares only for threads that exist (a worker that failed to spawn
        // would leave its share to be stolen), and only where task indices fit
        // the packed words.
        let homed = HOMED.with(|h| h.get())
            && HOME_SHARES.load(Ordering::Relaxed)
            && tasks <= u32::MAX as usize;
        let homes = homed.then(|| {
            let homes = &s.homes[..self.threads];
            let n = homes.len();
            for (i, h) in homes.iter().enumerate() {
                let (a, b) = (tasks * i / n, tasks * (i + 1) / n);
                // Published to the workers by the SeqCst store of `job` below.
                h.0.store((b as u64) << 32 | a as u64, Ordering::Relaxed);
            }
            homes
        });
        let job = Job {
            f: &f,
            tasks,
            grain: (tasks / (self.threads * 64)).max(1),
            next: Padded(AtomicUsize::new(0)),
            homes,
            panicked: AtomicBool::new(false),
        };
        {
            // From here until `_finish` is dropped, workers may hold a pointer
            // to `job`; its drop (also on unwinding) retracts the job and waits
            // for them before `job` and `f` go out of scope.
            let _finish = Finish { pool: self };
            s.job
                .0
                .store((&job as *const Job<'_>).cast_mut().cast(), Ordering::SeqCst);
            s.epoch.0.fetch_add(1, Ordering::SeqCst);
            if s.sleeping.load(Ordering::SeqCst) > 0 {
                let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
                s.wake.notify_all();
            }
            let _in_task = InTask::enter();
            job.work(0);
        }
        if job.panicked.load(Ordering::Relaxed) {
            panic!("a task of a t5edge-kernels pool job panicked");
        }
    }
}

/// The end of a job: retract it and wait until no worker can touch it.
struct Finish<'a> {
    pool: &'a Pool,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let s = &*self.pool.shared;
        s.job.0.store(std::ptr::null_mut(), Ordering::SeqCst);
        // A worker that incremented `refs` before this load may hold the job;
        // one that increments it later reads `job` after our null store (both
        // sides SeqCst), so it cannot see this job.
        let mut spins = 0u32;
        while s.refs.0.load(Ordering::SeqCst) != 0 {
            spins = spins.saturating_add(1);
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // A worker holding the job was preempted (a shared machine):
                // let it run rather than burn our slice.
                std::thread::yield_now();
            }
        }
        self.pool.busy.store(false, Ordering::Release);
    }
}

/// Marks the current thread as running a task until dropped.
struct InTask(bool);

impl InTask {
    fn enter() -> InTask {
        InTask(IN_TASK.with(|t| t.replace(true)))
    }
}

impl Drop for InTask {
    fn drop(&mut self) {
        IN_TASK.with(|t| t.set(self.0));
    }
}

fn worker(s: &Shared, me: usize) {
    let _in_task = InTask::enter();
    s.started.fetch_add(1, Ordering::Release);
    // The epoch the pool was created with, not a fresh load: a worker that
    // starts late must still see a shutdown (or job) published before it ran.
    let mut seen = 0;
    loop {
        seen = wait_for_epoch(s, seen);
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        s.refs.0.fetch_add(1, Ordering::SeqCst);
        let p = s.job.0.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: `p` was published by a caller in `Pool::run` and read after
            // our `refs` increment, so that caller's `Finish` (which nulls `job`
            // and then waits for `refs == 0`, both SeqCst) cannot complete until
            // our decrement below: the `Job` and the closure it borrows stay
            // alive for every use in between. `Job` is only read through
            // shared references (its mutable state is atomic), and `f` is
            // `Sync`, so calling it from this thread is allowed.
            let job = unsafe { &*p };
            if catch_unwind(AssertUnwindSafe(|| job.work(me))).is_err() {
                job.panicked.store(true, Ordering::Relaxed);
            }
        }
        // Release: the caller's SeqCst load that sees the count drop to zero
        // also sees every write our tasks made.
        s.refs.0.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until the epoch differs from `seen`: polls for the spin time (busy,
/// then yielding), then parks. Returns the new epoch.
fn wait_for_epoch(s: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut last = Duration::ZERO;
    let mut polls = 0u32;
    let mut yielding = false;
    loop {
        let e = s.epoch.0.load(Ordering::Acquire);
        if e != seen {
            return e;
        }
        polls = polls.wrapping_add(1);
        if yielding {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        // Reading the clock costs ~20 ns; once per 64 busy polls is plenty.
        if yielding || polls.is_multiple_of(64) {
            let t = start.elapsed();
            // A long gap between two polls means another thread had this core:
            // the machine is oversubscribed, where polling only takes CPU from
            // others and, worse, makes the scheduler treat us as a hog that is
            // preempted in the middle of the next job's tasks (the caller then
            // waits a whole time slice for it). Sleep instead.
            if t >= s.spin || t - last >= PREEMPTED {
                break;
            }
            last = t;
            yielding = t >= s.hot;
        }
    }
    let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    // The caller bumps `epoch` and then reads `sleeping` (SeqCst both): either it
    // sees our increment and notifies under the lock we hold until `wait`
    // releases it, or our epoch load below comes after its bump.
    s.sleeping.fetch_add(1, Ordering::SeqCst);
    let e = loop {
        let e = s.epoch.0.load(Ordering::SeqCst);
        if e != seen || s.shutdown.load(Ordering::SeqCst) {
            break e;
        }
        g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
    };
    s.sleeping.fetch_sub(1, Ordering::SeqCst);
    e
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        s.epoch.0.fetch_add(1, Ordering::SeqCst);
        {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counts(pool: &Pool, tasks: usize) -> Vec<u32> {
        let hits: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
        pool.run(tasks, |t| {
            hits[t].fetch_add(1, Ordering::Relaxed);
        });
        hits.into_iter().map(|h| h.into_inner()).collect()
    }

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            let mut s = 0x9e37_79b9_u32;
            for _ in 0..200 {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                let tasks = (s % 2000) as usize;
                assert!(counts(&pool, tasks).iter().all(|&c| c == 1), "{tasks}");
            }
            assert!(counts(&pool, 0).is_empty());
        }
    }

    /// `map` returns every item's value in order, on any pool and grain.
    #[test]
    fn map_keeps_every_item_in_order() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for (items, grain) in [(0, 1), (1, 4), (37, 1), (37, 4), (1000, 7), (5, 0)] {
                let got = pool.install(|| map(items, grain, true, |i| i * i + 1));
                let want: Vec<usize> = (0..items).map(|i| i * i + 1).collect();
                assert_eq!(got, want, "{threads} threads, {items} items, grain {grain}");
            }
        }
    }

    /// Home shares hand out every task exactly once whatever the thread
    /// count, the task count (fewer tasks than threads included) and however
    /// many callers share the pool.
    #[test]
    fn home_shares_run_every_task_once() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads);
            with_home_shares(|| {
                for tasks in (0..70).chain([1000, 4099]) {
                    assert!(counts(&pool, tasks).iter().all(|&c| c == 1), "{tasks}");
                }
            });
        }
        let pool = Pool::new(3);
        std::thread::scope(|sc| {
            for i in 0..4 {
                let pool = &pool;
                sc.spawn(move || {
                    let run = || {
                        for tasks in 0..300 {
                            assert!(counts(pool, tasks).iter().all(|&c| c == 1));
                        }
                    };
                    // Homed and plain callers mixed on one pool.
                    if i % 2 == 0 {
                        with_home_shares(run)
                    } else {
                        run()
                    }
                });
            }
        });
    }

    /// The owner takes its share from the front, a thief from the back, each
    /// at most a grain, and neither past the other.
    #[test]
    fn claims_meet_in_the_middle() {
        let share = AtomicU64::new(13 << 32 | 3);
        assert_eq!(claim(&share, 4, true), Some((3, 7)));
        assert_eq!(claim(&share, 4, false), Some((9, 13)));
        assert_eq!(claim(&share, 4, false), Some((7, 9)));
        assert_eq!(claim(&share, 4, true), None);
        assert_eq!(claim(&share, 4, false), None);
        assert_eq!(claim(&AtomicU64::new(5 << 32 | 5), 1, true), None);
    }

    /// The flag is scoped: restored after the closure, also on unwinding.
    #[test]
    fn home_shares_are_scoped() {
        assert!(!HOMED.with(|h| h.get()));
        let r = catch_unwind(|| with_home_shares(|| panic!("inside")));
        assert!(r.is_err());
        assert!(!HOMED.with(|h| h.get()));
        with_home_shares(|| {
            with_home_shares(|| ());
            assert!(HOMED.with(|h| h.get()));
        });
        assert!(!HOMED.with(|h| h.get()));
    }

    /// A homed job whose task panics panics the caller once the job's other
    /// threads are done with it; the pool goes on.
    #[test]
    fn a_panicking_homed_task_panics_the_caller() {
        let pool = Pool::new(3);
        let r = catch_unwind(AssertUnwindSafe(|| {
            with_home_shares(|| {
                pool.run(100, |t| {
                    if t == 70 {
                        panic!("task 70");
                    }
                })
            })
        }));
        assert!(r.is_err());
        assert!(with_home_shares(|| counts(&pool, 100))
            .iter()
            .all(|&c| c == 1));
    }

    /// Workers that went to sleep (spin time 0) still pick up the next job.
    #[test]
    fn parked_workers_wake_up() {
        let pool = Pool::with_spin(3, Duration::ZERO);
        for _ in 0..50 {
            std::thread::sleep(Duration::from_micros(200));
            assert!(counts(&pool, 64).iter().all(|&c| c == 1));
        }
    }

    #[test]
    fn nested_regions_run_inline() {
        let pool = Pool::new(2);
        let total = AtomicUsize::new(0);
        pool.install(|| {
            pool.run(8, |_| {
                for_each(8, true, |_| {
                    total.fetch_add(1, Ordering::Relaxed);
                })
            })
        });
        assert_eq!(total.into_inner(), 64);
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = Pool::new(2);
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for tasks in 0..300 {
                        assert!(counts(&pool, tasks).iter().all(|&c| c == 1));
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_task_panics_the_caller_after_the_job() {
        let pool = Pool::new(3);
        let done = AtomicUsize::new(0);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(100, |t| {
                if t == 37 {
                    panic!("task 37");
                }
                done.fetch_add(1, Ordering::Relaxed);
            })
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        assert!(counts(&pool, 100).iter().all(|&c| c == 1));
    }
}
