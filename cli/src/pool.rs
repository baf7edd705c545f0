//! The benchmark's own threads for the ceiling and the multi-pass baseline: `T − 1` workers
//! started once and woken for every pass, as the optimizer's pool is (a pass costs a wake-up,
//! not a thread start), so the ratios compare like with like at every size.
//!
//! A job is `&dyn Fn(usize) + Sync` called once per thread index; the caller is thread 0 and
//! returns only when every worker has finished its call, which is what makes lending the
//! borrowed job to the workers sound.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The job with its lifetime erased; only called while [`Pool::run`] waits for it.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync + 'static));
// SAFETY: the pointee is `Sync`, and `Pool::run` keeps it alive until every call returned.
unsafe impl Send for Job {}

struct State {
    /// Incremented for every job; a worker runs each generation once.
    generation: u64,
    job: Option<Job>,
    /// Workers the current job uses (indices `1..=workers_used`).
    workers_used: usize,
    /// Of those, the ones still running it.
    running: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `threads` threads in all: the caller and `threads − 1` workers.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `threads − 1` workers (at least none).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                generation: 0,
                job: None,
                workers_used: 0,
                running: 0,
                shutdown: false,
            }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .map(|index| {
                let s = Arc::clone(&shared);
                std::thread::spawn(move || worker(&s, index))
            })
            .collect();
        Pool { shared, workers }
    }

    /// Threads that run a job: the workers and the caller.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for `i` in `0..used` (thread `i`; the caller is 0) and returns when all
    /// calls have returned; threads from `used` on stay asleep. A panicking call aborts the
    /// benchmark (the process), as nothing here can be left half done.
    pub fn run(&mut self, used: usize, f: &(dyn Fn(usize) + Sync)) {
        let used = used.clamp(1, self.threads());
        if used > 1 {
            // SAFETY: only the lifetime is erased; the wait below outlives every use.
            let job: Job = Job(unsafe {
                core::mem::transmute::<
                    *const (dyn Fn(usize) + Sync + '_),
                    *const (dyn Fn(usize) + Sync + 'static),
                >(f)
            });
            let mut st = self.shared.lock();
            st.generation += 1;
            st.job = Some(job);
            st.workers_used = used - 1;
            st.running = used - 1;
            drop(st);
            self.shared.work.notify_all();
        }
        let guard = AbortOnUnwind;
        f(0);
        core::mem::forget(guard);
        if used > 1 {
            let mut st = self.shared.lock();
            while st.running > 0 {
                st = self
                    .shared
                    .done
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            st.job = None;
        }
    }
}

/// Aborts the process if dropped during a panic: workers may still hold the job.
struct AbortOnUnwind;

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        std::process::abort();
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let job = {
            let mut st = s.lock();
            loop {
                if st.shutdown {
                    return;
                }
                if st.generation != seen {
                    seen = st.generation;
                    // A job for fewer threads than this index leaves this worker asleep.
                    if index <= st.workers_used {
                        if let Some(job) = st.job {
                            break job;
                        }
                    }
                }
                st = s.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let guard = AbortOnUnwind;
        // SAFETY: `Pool::run` waits for this call before the job's borrow ends.
        unsafe { (*job.0)(index) };
        core::mem::forget(guard);
        let mut st = s.lock();
        st.running -= 1;
        if st.running == 0 {
            s.done.notify_one();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_used_thread_runs_once_per_job() {
        let mut pool = Pool::new(4);
        assert_eq!(pool.threads(), 4);
        for round in 0..2000 {
            // Alternating widths: a worker left asleep by one job must still run the next.
            let used = [4, 1, 3, 2, 5, 0][round % 6];
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            pool.run(used, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            let want = used.clamp(1, 4);
            for (i, h) in hits.iter().enumerate() {
                assert_eq!(
                    h.load(Ordering::Relaxed),
                    usize::from(i < want),
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn one_thread_runs_on_the_caller() {
        let mut pool = Pool::new(0);
        assert_eq!(pool.threads(), 1);
        let caller = std::thread::current().id();
        pool.run(3, &|i| {
            assert_eq!(i, 0);
            assert_eq!(std::thread::current().id(), caller);
        });
    }
}
