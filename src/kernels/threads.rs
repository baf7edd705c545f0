//! A small persistent pool of worker threads (feature `std`).
//!
//! The optimizer's step must not allocate, and `std::thread::spawn`/`scope` do, so the workers
//! are started once and wait on a condition variable between jobs. A job is a borrowed
//! closure called once per part; the calling thread runs part 0 itself and returns only when
//! every part is done, which is what makes lending the workers a borrowed closure sound.
//! A panic in a part is caught on its worker (which stays alive) and re-raised on the caller
//! after all parts have finished. Dropping the pool stops and joins the workers.
//!
//! Fork: a child process has only the thread that called `fork`, so a pool started before the
//! fork has no workers there (a job given to them would wait forever). The pool records the
//! process that started it; `WorkerPool::forked` tells the owner to start a new pool, and a
//! pool dropped in another process leaks its (absent) workers instead of joining them.

use std::any::Any;
use std::boxed::Box;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::vec::Vec;

/// Most threads a pool starts (a guard against absurd requests).
pub const MAX_THREADS: usize = 1024;

/// The job with its lifetime erased; only dereferenced while [`WorkerPool::run`] waits.
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync + 'static));

// SAFETY: the pointee is `Sync` (callable from any thread through a shared reference), and it
// is only dereferenced while the `run` call that lent it is still waiting.
unsafe impl Send for JobPtr {}

struct State {
    /// Bumped once per job; a worker runs each epoch exactly once.
    epoch: u64,
    job: Option<JobPtr>,
    parts: usize,
    /// Threads sharing the parts (workers + caller).
    threads: usize,
    /// Workers that have not finished the current epoch.
    running: usize,
    panic: Option<Box<dyn Any + Send + 'static>>,
    shutdown: bool,
    /// Workers that have started and are waiting for work.
    ready: usize,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so poisoning cannot carry a broken state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A fixed set of worker threads that run the parts of a job in parallel with the caller.
pub(crate) struct WorkerPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// The process that started the workers (`std::process::id`).
    owner: u32,
}

impl WorkerPool {
    /// A pool of `threads` threads in all: the caller of [`WorkerPool::run`] and
    /// `threads − 1` workers started now (`threads` is clamped to `1..=MAX_THREADS`). If the
    /// system refuses to start a thread the pool keeps those it got ([`WorkerPool::threads`]).
    pub fn new(threads: usize) -> Self {
        let threads = threads.clamp(1, MAX_THREADS);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                epoch: 0,
                job: None,
                parts: 0,
                threads: 1,
                running: 0,
                panic: None,
                shutdown: false,
                ready: 0,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let mut workers = Vec::with_capacity(threads - 1);
        for index in 1..threads {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(std::format!("vsgd-worker-{index}"))
                .spawn(move || worker(&s, index));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(_) => break,
            }
        }
        // Wait until every worker runs: a starting thread allocates (its name, thread-locals),
        // and that must happen here, not during the first step.
        {
            let mut st = shared.lock();
            while st.ready < workers.len() {
                st = shared.done.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        }
        WorkerPool {
            shared,
            workers,
            owner: std::process::id(),
        }
    }

    /// `true` in a process forked from the one that started the pool: its workers do not
    /// exist here, so the pool must not be used (start a new one) nor joined.
    pub fn forked(&self) -> bool {
        std::process::id() != self.owner
    }

    /// Threads that run parts: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(k)` once for every `k` in `0..parts`, spread over the pool's threads (thread
    /// `j` runs parts `j`, `j + threads`, …; the caller is thread 0), and returns when all
    /// are done. A panic in any part is re-raised here once every part has finished.
    /// Allocates nothing (on platforms whose mutexes do not allocate, e.g. Linux).
    pub fn run(&mut self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let threads = self.threads();
        if threads == 1 || parts <= 1 {
            (0..parts).for_each(f);
            return;
        }
        // SAFETY: only the lifetime is erased. Workers dereference the pointer only between
        // the epoch bump below and their `running -= 1`, and this function does not return
        // (nor unwind: `WaitForWorkers` runs on unwind too) before `running` is back to 0.
        let job: *const (dyn Fn(usize) + Sync + '_) = f;
        let job = JobPtr(unsafe {
            core::mem::transmute::<
                *const (dyn Fn(usize) + Sync + '_),
                *const (dyn Fn(usize) + Sync + 'static),
            >(job)
        });
        {
            let mut st = self.shared.lock();
            st.job = Some(job);
            // A worker's panic left from a run whose caller panicked too is that run's.
            st.panic = None;
            st.parts = parts;
            st.threads = threads;
            st.running = self.workers.len();
            st.epoch = st.epoch.wrapping_add(1);
        }
        self.shared.work.notify_all();

        struct WaitForWorkers<'a>(&'a Shared);
        impl Drop for WaitForWorkers<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                while st.running > 0 {
                    st = self.0.done.wait(st).unwrap_or_else(PoisonError::into_inner);
                }
                st.job = None;
            }
        }
        let wait = WaitForWorkers(&self.shared);
        let mut k = 0;
        while k < parts {
            f(k);
            k += threads;
        }
        drop(wait);
        let panic = self.shared.lock().panic.take();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0u64;
    {
        let mut st = shared.lock();
        st.ready += 1;
        shared.done.notify_all();
    }
    loop {
        let (job, parts, threads) = {
            let mut st = shared.lock();
            while st.epoch == seen && !st.shutdown {
                st = shared.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.shutdown {
                return;
            }
            seen = st.epoch;
            (st.job, st.parts, st.threads)
        };
        let result = match job {
            // SAFETY: see `run`: the job outlives this use, which ends before `running -= 1`.
            Some(job) => catch_unwind(AssertUnwindSafe(|| {
                let f = unsafe { &*job.0 };
                let mut k = index;
                while k < parts {
                    f(k);
                    k += threads;
                }
            })),
            None => Ok(()),
        };
        let mut st = shared.lock();
        if let Err(payload) = result {
            st.panic.get_or_insert(payload);
        }
        st.running -= 1;
        if st.running == 0 {
            shared.done.notify_all();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if self.forked() {
            // The workers are threads of the parent process: none to stop or join here, and
            // the state's lock may have been held by one of them at the fork. Leak it all.
            core::mem::forget(core::mem::take(&mut self.workers));
            return;
        }
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for handle in self.workers.drain(..) {
            // A worker never panics outside `catch_unwind`; nothing to report if one did.
            let _ = handle.join();
        }
    }
}

impl core::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads())
            .finish()
    }
}

/// The part `k` of `parts` of `0..total`: contiguous, in order, covering `0..total` exactly,
/// with inner boundaries on multiples of 64 elements (whole cache lines, whole vectors).
pub fn part_range(total: usize, parts: usize, k: usize) -> core::ops::Range<usize> {
    let bound = |k: usize| -> usize {
        if k == 0 {
            0
        } else if k >= parts {
            total
        } else {
            let b = (total as u128 * k as u128 / parts as u128) as usize;
            b - b % 64
        }
    };
    bound(k)..bound(k + 1)
}

#[cfg(test)]
mod tests {
    use super::WorkerPool;

    #[test]
    fn pool_runs_every_part_once_and_survives_a_panic() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let mut pool = WorkerPool::new(3);
        assert_eq!(pool.threads(), 3);
        for parts in [0usize, 1, 2, 3, 4, 10] {
            let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
            pool.run(parts, &|k| {
                hits[k].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "parts={parts}"
            );
        }
        // A panicking part (here on a worker: part 1) reaches the caller after all parts ran.
        let done = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(3, &|k| {
                done.fetch_add(1, Ordering::Relaxed);
                if k == 1 {
                    panic!("part 1 fails");
                }
            })
        }));
        assert!(r.is_err());
        assert_eq!(done.load(Ordering::Relaxed), 3);
        // And the pool still works afterwards.
        let sum = AtomicUsize::new(0);
        pool.run(6, &|k| {
            sum.fetch_add(k, Ordering::Relaxed);
        });
        assert_eq!(sum.load(Ordering::Relaxed), 15);
    }
}
