//! The CPU engine's thread pool: one pool for every kernel that splits its work (GEMMs, direct
//! and depthwise convs, the pre-packed tiles).
//!
//! Sized from `--threads`/MATMUL_NUM_THREADS (else the available cores, at most 4), built once
//! and reused by every session. It is built for splits of a few tens of microseconds, which is
//! what a small model's kernels are:
//! - the calling thread runs tasks too, claiming them from the same counter as the helpers, so
//!   a helper that is slow to wake costs balance, never a wait for its share;
//! - helpers spin for [`SPIN`] after their last task before they sleep, so the next kernel of
//!   the same run finds them awake; when a run ends ([`rest`]) they sleep at once;
//! - a job is a reference to the caller's closure (no allocation per run).
//!
//! rayon, which this replaced, cost 20-60 us per split on the 2-vCPU VM of docs/performance.md
//! (two 12 us halves: 45-82 us through `install` + `join`, 12-15 us here, 24 us serially): its
//! workers sleep within microseconds of going idle, and the caller blocks while one wakes.
//!
//! A session caps its runs' threads with [`with_threads`] (`SessionOptions::threads`).

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Multiply-adds a task should at least hold: a split costs ~1-2 us of cache-line hand-off
/// when the helpers are spinning, and a task this size is a few microseconds of one core.
const MIN_TASK_WORK: usize = 1 << 16;

/// Multiply-adds below which a split does not wake sleeping helpers: a woken helper spins
/// through the serial kernels that follow, and on the benchmark VM a spinning vCPU slowed the
/// other by up to 1.8x (see [`SPIN`]); the teacher at batch 1 ran 1.5-1.9x slower on 2 threads
/// than on 1 when its ~0.3M-MAC convs woke the helper every run, and at batch 8 (2.4M- and
/// 1.2M-MAC convs, at 2^19) up to 2x slower on 2 threads than on 1 (docs/performance.md,
/// session 12). At 2^22 (about 0.25 ms of one core) only convs that long wake a helper.
const WAKE_WORK: usize = 1 << 22;

/// How long an idle helper spins before it sleeps: about the serial stretch between two split
/// kernels of one run. Spinning is not free: on the 2-vCPU benchmark VM a thread spinning on
/// one vCPU slowed single-threaded inference on the other by up to 1.8x (the vCPUs share a
/// core at times), and 200 us measured no faster than 50.
const SPIN: Duration = Duration::from_micros(50);

thread_local! {
    /// Threads this thread's kernels may use (0: all of the pool); see [`with_threads`].
    static LIMIT: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` with the CPU kernels it calls on this thread using at most `n` threads, the caller
/// included: a session's intra-op thread count. The pool is shared and sized once
/// ([`count`]); asking for more than it has gets the pool.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT.set(self.0);
        }
    }
    let _restore = Restore(LIMIT.replace(n.max(1)));
    f()
}

/// Threads the calling thread's kernels may use now.
pub fn limit() -> usize {
    match LIMIT.get() {
        0 => count(),
        n => n.min(count()),
    }
}

/// Threads in the engine's pool, the caller included: MATMUL_NUM_THREADS if set, else the
/// available cores, at most 4.
pub fn count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let env = std::env::var("MATMUL_NUM_THREADS").ok().and_then(|s| s.trim().parse::<usize>().ok());
        env.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, 4)
    })
}

/// Tasks worth cutting `items` independent items of `cost` multiply-adds each into (1: run
/// serially): one per thread. Finer tasks would balance cores of unequal speed, but measured
/// slower (the teacher at batch 8 on 2 threads: 97 us at one task per thread, 119 us at four:
/// batched convs lose their wide GEMM, and every task packs its operand again).
pub fn tasks(items: usize, cost: usize) -> usize {
    let threads = limit();
    let Some(pool) = pool().filter(|_| threads > 1) else {
        return 1;
    };
    let work = items.saturating_mul(cost);
    if work < WAKE_WORK && pool.sleepers.load(Ordering::Relaxed) > 0 {
        return 1;
    }
    (work / MIN_TASK_WORK).min(items).min(threads).max(1)
}

/// Per-thread scratch slots a call with `tasks` tasks needs.
pub fn slots(tasks: usize) -> usize {
    if tasks > 1 {
        count()
    } else {
        1
    }
}

/// Task `t`'s share of `len` items out of `tasks`, in multiples of `align` (the last takes the
/// rest; late tasks may be empty).
pub fn span(t: usize, tasks: usize, len: usize, align: usize) -> std::ops::Range<usize> {
    let per = len.div_ceil(tasks.max(1)).div_ceil(align.max(1)) * align.max(1);
    (t * per).min(len)..((t + 1) * per).min(len)
}

/// Calls `f(i, chunk_i, scratch_s)` for every `chunk`-long piece of `out` (the last may be
/// shorter), in `tasks` contiguous runs that may run in parallel; the thread running a run
/// lends it its slot `s` of `scratch`, `scratch[s * scratch_len..]`, which it keeps across the
/// runs it takes (`scratch` must hold `slots(tasks) * scratch_len`).
pub fn for_each_chunk<F>(out: &mut [f32], chunk: usize, scratch: &mut [f32], scratch_len: usize, tasks: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    for_each_run(out, chunk, scratch, scratch_len, tasks, |first, run, s| {
        for (j, piece) in run.chunks_mut(chunk).enumerate() {
            f(first + j, piece, s);
        }
    });
}

/// [`for_each_chunk`] a run at a time: `f(first, run, scratch_s)` gets the chunks
/// `first..first + run.len().div_ceil(chunk)` together. Runs hold `per_run(out.len() / chunk,
/// tasks)` chunks, the last one fewer.
pub fn for_each_run<F>(out: &mut [f32], chunk: usize, scratch: &mut [f32], scratch_len: usize, tasks: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync,
{
    if chunk == 0 || out.is_empty() {
        return;
    }
    let items = out.len().div_ceil(chunk);
    let per = per_run(items, tasks);
    let runs = items.div_ceil(per);
    assert!(
        scratch.len() >= slots(runs) * scratch_len,
        "for_each_run: scratch shorter than {} x {scratch_len}",
        slots(runs)
    );
    let (len, outp, scrp) = (out.len(), SharedPtr::new(out), SharedPtr::new(scratch));
    run(runs, &|r, slot| {
        let (lo, hi) = (r * per * chunk, ((r + 1) * per * chunk).min(len));
        // SAFETY: every run index is handed out once and runs cover disjoint ranges of `out`;
        // a slot belongs to one thread, which runs one task at a time; both buffers are
        // borrowed mutably for the whole call.
        let (o, s) = unsafe { (outp.slice(lo, hi - lo), scrp.slice(slot * scratch_len, scratch_len)) };
        f(r * per, o, s);
    });
}

/// Items per run when `items` are cut into `tasks` contiguous runs.
pub fn per_run(items: usize, tasks: usize) -> usize {
    items.div_ceil(tasks.clamp(1, items.max(1)))
}

/// Calls `f(t, s)` for every task `t < tasks`, in parallel where the pool allows; `s` is the
/// slot (`< slots(tasks)`) of the thread running it.
pub fn for_each_task(tasks: usize, f: impl Fn(usize, usize) + Sync) {
    run(tasks.max(1), &f);
}

/// A `*mut T` (f32 unless said) that tasks share, each deriving its own disjoint ranges from it.
pub struct SharedPtr<T = f32>(*mut T);
// SAFETY: only a pointer; the callers keep the ranges tasks write disjoint.
unsafe impl<T> Send for SharedPtr<T> {}
unsafe impl<T> Sync for SharedPtr<T> {}

impl<T> Clone for SharedPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    pub fn new(buf: &mut [T]) -> SharedPtr<T> {
        SharedPtr(buf.as_mut_ptr())
    }

    /// The pointer (a method, so closures capture the whole wrapper, not the field).
    pub fn get(self) -> *mut T {
        self.0
    }

    /// `len` elements from `offset`.
    ///
    /// # Safety
    /// The range lies inside the buffer, which outlives `'a`, and nothing else reads or writes
    /// it meanwhile.
    pub unsafe fn slice<'a>(self, offset: usize, len: usize) -> &'a mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(offset), len)
    }
}

/// Sends spinning helpers to sleep now instead of after [`SPIN`]: called when a run ends. The
/// spin bridges the serial stretches between the split kernels of one run; after the run it
/// only burns a core (battery, on a phone) and, on the 2-vCPU benchmark VM, slowed whatever ran
/// next on the other vCPU. The next run's first large split wakes them.
pub fn rest() {
    if let Some(pool) = pool() {
        pool.rests.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `task(t, slot)` for every `t < tasks`, on the caller (slot 0) and the pool's helpers.
/// Serial when there is no pool, one task, or another dispatch already holds the pool (a
/// second session on another thread, or a task that splits again).
fn run(tasks: usize, task: &(dyn Fn(usize, usize) + Sync)) {
    match pool() {
        Some(pool) if tasks > 1 && limit() > 1 => pool.run(tasks, task),
        _ => (0..tasks).for_each(|t| task(t, 0)),
    }
}

fn pool() -> Option<&'static Pool> {
    static POOL: OnceLock<Option<&'static Pool>> = OnceLock::new();
    *POOL.get_or_init(|| {
        if count() < 2 {
            return None;
        }
        let pool: &'static Pool = Box::leak(Box::<Pool>::default());
        for i in 1..count() {
            let spawned =
                std::thread::Builder::new().name(format!("alembic-cpu-{i}")).spawn(move || pool.helper_loop(i));
            if spawned.is_err() {
                // No helper at all is a serial engine; fewer than asked still share the work.
                if i == 1 {
                    return None;
                }
                break;
            }
        }
        Some(pool)
    })
}

/// The published job: its epoch, task count and next unclaimed task, packed in one word so a
/// claim checks all three at once (a helper that wakes late cannot claim a finished job's
/// task).
fn pack(epoch: u32, tasks: usize, next: usize) -> u64 {
    (u64::from(epoch) << 32) | ((tasks as u64) << 16) | next as u64
}

fn unpack(s: u64) -> (u32, usize, usize) {
    ((s >> 32) as u32, ((s >> 16) & 0xffff) as usize, (s & 0xffff) as usize)
}

/// The caller's closure, its lifetime erased: the dispatcher waits for every claimed task
/// before it returns, so no helper dereferences it after the closure's frame is gone.
type TaskRef = *const (dyn Fn(usize, usize) + Sync + 'static);

#[derive(Default)]
struct Pool {
    state: AtomicU64,
    /// Written by the dispatcher before it publishes `state`; read after a successful claim.
    task: UnsafeCell<Option<TaskRef>>,
    /// Tasks of the current job that helpers finished.
    done: AtomicUsize,
    /// Threads the current job may use (its caller's [`limit`]): helpers of slot >= this sit
    /// it out.
    threads: AtomicUsize,
    panicked: AtomicBool,
    /// One dispatch at a time.
    busy: AtomicBool,
    sleepers: AtomicUsize,
    /// Bumped by [`rest`]: a spinning helper that sees it change goes to sleep.
    rests: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `task` is written only by the dispatcher holding `busy`, before the Release store of
// `state` that helpers Acquire before reading it, and not again until they are done with it.
unsafe impl Sync for Pool {}

impl Pool {
    fn run(&self, tasks: usize, task: &(dyn Fn(usize, usize) + Sync)) {
        if tasks > 0xffff || self.busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return (0..tasks).for_each(|t| task(t, 0));
        }
        self.done.store(0, Ordering::Relaxed);
        self.panicked.store(false, Ordering::Relaxed);
        self.threads.store(limit(), Ordering::Relaxed);
        // SAFETY: see `TaskRef`; only the lifetime changes.
        let erased: TaskRef = unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), TaskRef>(task) };
        // SAFETY: helpers read `task` only after claiming a task of the job published below.
        unsafe { *self.task.get() = Some(erased) };
        let epoch = unpack(self.state.load(Ordering::Relaxed)).0.wrapping_add(1);
        self.state.store(pack(epoch, tasks, 0), Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _lock = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
        // Even if one of our tasks panics, wait for the helpers' (they read `task`).
        let mut finish = Finish { pool: self, epoch, tasks, mine: 0 };
        while let Some(t) = self.claim(epoch) {
            // Counted before it runs: a task of ours that panics is not one to wait for.
            finish.mine += 1;
            task(t, 0);
        }
        drop(finish);
        if self.panicked.load(Ordering::Relaxed) {
            panic!("a CPU kernel task panicked on a pool thread");
        }
    }

    /// Claims the next task of job `epoch`, if any is left.
    fn claim(&self, epoch: u32) -> Option<usize> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let (e, tasks, next) = unpack(s);
            if e != epoch || next >= tasks {
                return None;
            }
            match self.state.compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(next),
                Err(now) => s = now,
            }
        }
    }

    fn helper_loop(&self, slot: usize) {
        let mut seen = unpack(self.state.load(Ordering::Acquire)).0;
        loop {
            seen = self.wait_for_job(seen);
            if slot >= self.threads.load(Ordering::Relaxed) {
                continue;
            }
            while let Some(t) = self.claim(seen) {
                // SAFETY: the claim succeeded, so the job is live and `task` is its closure.
                let task = unsafe { (*self.task.get()).expect("a published job has a task") };
                // SAFETY: see `TaskRef`.
                if catch_unwind(AssertUnwindSafe(|| unsafe { (*task)(t, slot) })).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
                self.done.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Returns the epoch of the next job after `seen`: spinning for [`SPIN`], then asleep.
    fn wait_for_job(&self, seen: u32) -> u32 {
        let (start, rests) = (Instant::now(), self.rests.load(Ordering::Relaxed));
        for i in 1u32.. {
            let epoch = unpack(self.state.load(Ordering::Acquire)).0;
            if epoch != seen {
                return epoch;
            }
            if i % 64 == 0 && (start.elapsed() > SPIN || self.rests.load(Ordering::Relaxed) != rests) {
                break;
            }
            std::hint::spin_loop();
        }
        let mut lock = self.sleep_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let epoch = unpack(self.state.load(Ordering::SeqCst)).0;
            if epoch != seen {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                return epoch;
            }
            lock = self.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Ends a dispatch: closes the job to new claims, waits for the tasks helpers claimed, frees the
/// pool.
struct Finish<'a> {
    pool: &'a Pool,
    epoch: u32,
    tasks: usize,
    mine: usize,
}

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        let pool = self.pool;
        // Unclaimed tasks (only after a panic of ours) are closed, not run.
        let closed = pool
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                let (e, tasks, next) = unpack(s);
                (e == self.epoch && next < tasks).then(|| pack(e, tasks, tasks))
            })
            .map_or(0, |s| self.tasks - unpack(s).2);
        let theirs = self.tasks - self.mine - closed;
        let mut spins = 0u32;
        while pool.done.load(Ordering::Acquire) < theirs {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                // A helper descheduled mid-task: let it have the core.
                std::thread::yield_now();
            }
        }
        pool.busy.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_chunk_once_with_a_slot_of_scratch() {
        for tasks in 1..=9 {
            for items in [1, 2, 3, 7, 16, 33] {
                // The last chunk is 3 long, not 5.
                let mut out = vec![0.0f32; items * 5 - 2];
                let mut scratch = vec![0.0f32; slots(tasks) * 2];
                for_each_chunk(&mut out, 5, &mut scratch, 2, tasks, |i, o, s| {
                    assert_eq!(s.len(), 2);
                    s[0] += 1.0;
                    o.fill(i as f32 + 1.0);
                });
                for (i, c) in out.chunks(5).enumerate() {
                    assert!(c.iter().all(|&v| v == i as f32 + 1.0), "tasks {tasks} items {items}: chunk {i}");
                }
                // Every item ran against exactly one slot's scratch.
                assert_eq!(scratch.iter().step_by(2).sum::<f32>(), items as f32);
            }
        }
    }

    #[test]
    fn every_task_once_and_spans_cover() {
        for tasks in [1, 2, 5, 16, 300] {
            let runs: Vec<AtomicU32> = (0..tasks).map(|_| AtomicU32::new(0)).collect();
            for_each_task(tasks, |t, s| {
                assert!(s < slots(tasks));
                runs[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1), "{tasks} tasks");
            let mut covered = 0;
            for t in 0..tasks {
                let r = span(t, tasks, 1000, 16);
                assert!(
                    r.is_empty() || (r.start == covered && r.start.is_multiple_of(16)),
                    "span {t} of {tasks}: {r:?}"
                );
                covered = covered.max(r.end);
            }
            assert_eq!(covered, 1000);
        }
    }

    #[test]
    fn one_thread_asked_is_serial() {
        with_threads(1, || {
            assert_eq!(tasks(1 << 10, 1 << 20), 1);
            let caller = std::thread::current().id();
            for_each_task(4, |_, slot| {
                assert_eq!(slot, 0);
                assert_eq!(std::thread::current().id(), caller);
            });
        });
        if pool().is_some() {
            assert_eq!(tasks(1 << 10, 1 << 20), count());
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_goes_on() {
        for bad in [0, 3] {
            let caught = catch_unwind(|| for_each_task(4, |t, _| assert!(t != bad, "task {t} fails")));
            assert!(caught.is_err(), "the panic of task {bad} was lost");
        }
        let sum = AtomicUsize::new(0);
        for_each_task(8, |t, _| {
            sum.fetch_add(t, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 28);
    }

    #[test]
    fn concurrent_callers_and_nested_splits_each_get_every_task() {
        std::thread::scope(|scope| {
            for caller in 0..4usize {
                scope.spawn(move || {
                    for round in 0..200 {
                        let sum = AtomicUsize::new(0);
                        for_each_task(6, |t, _| {
                            // A task that splits again runs its inner tasks serially.
                            for_each_task(3, |u, _| {
                                sum.fetch_add(t * 3 + u + caller, Ordering::Relaxed);
                            });
                        });
                        assert_eq!(sum.load(Ordering::Relaxed), 153 + 18 * caller, "round {round}");
                    }
                });
            }
        });
    }
}
