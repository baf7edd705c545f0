//! Splits one large step across the threads of XLA's own intra-op pool
//! (`XLA_FFI_ThreadPool_Schedule`), the pool that runs XLA's parallel loops.
//!
//! Why XLA's pool and not threads of our own: on the CPU, XLA's pool threads spin for a
//! while after each parallel loop (the gradient verdict just before the step is one), so a
//! thread of ours competes with them for the cores; measured on 2 busy cores, a step split
//! over a private pool of two took 1.8× as long as on one thread. Tasks scheduled on XLA's
//! pool run on those very threads.
//!
//! The work is cut into parts that the calling thread and the scheduled tasks claim one by
//! one from a shared counter. The calling thread works too and waits only for parts already
//! claimed, so the step finishes even if no task ever runs (a busy or one-thread pool); a
//! task that starts after every part is claimed returns at once. Kernels are elementwise and
//! every part runs the same kernel, so the bits do not depend on how the work is cut.
//! `VSGD_JAX_THREADS` caps the threads used (read once; 1 turns splitting off); the default
//! is the available parallelism.

use core::ffi::c_void;
use core::ops::Range;
use core::ptr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};

use vsgd::kernels::threads::part_range;

use crate::xla;

/// Below this much memory traffic per thread, waking a thread costs more than it saves.
const MIN_BYTES_PER_THREAD: usize = 1 << 20;

fn max_threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        std::env::var("VSGD_JAX_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .min(256)
    })
}

/// XLA's thread pool as the call frame offers it.
#[derive(Clone, Copy)]
pub struct Pool {
    schedule: xla::ThreadPoolSchedule,
    destroy: xla::ErrorDestroy,
    ctx: *mut c_void,
}

impl Pool {
    /// The pool of `frame`'s execution context, if its API table has the functions.
    ///
    /// # Safety
    /// `frame` is an execution call frame from XLA (its size already checked).
    pub unsafe fn of(frame: &xla::CallFrame) -> Option<Pool> {
        if frame.api.is_null() || frame.ctx.is_null() {
            return None;
        }
        let api = unsafe { &*frame.api };
        if api.struct_size < xla::API_POOL_SIZE {
            return None;
        }
        Some(Pool {
            schedule: api.thread_pool_schedule?,
            destroy: api.error_destroy?,
            ctx: frame.ctx,
        })
    }

    /// Schedules `task(data)`; false (and the error freed) when XLA refuses.
    unsafe fn spawn(&self, task: xla::Task, data: *mut c_void) -> bool {
        let mut args = xla::ThreadPoolScheduleArgs {
            struct_size: xla::THREAD_POOL_SCHEDULE_ARGS_SIZE,
            extension_start: ptr::null_mut(),
            ctx: self.ctx,
            task: Some(task),
            data,
        };
        let err = unsafe { (self.schedule)(&mut args) };
        if err.is_null() {
            return true;
        }
        let mut d = xla::ErrorDestroyArgs {
            struct_size: xla::ERROR_DESTROY_ARGS_SIZE,
            extension_start: ptr::null_mut(),
            error: err,
        };
        unsafe { (self.destroy)(&mut d) };
        false
    }
}

/// The job shared by the caller and the scheduled tasks.
struct Job {
    /// The work, its lifetime erased: only called for a part claimed below `parts`, and the
    /// caller does not return before every claimed part is done.
    f: *const (dyn Fn(Range<usize>) + Sync + 'static),
    len: usize,
    parts: usize,
    next: AtomicUsize,
    done: Mutex<usize>,
    all_done: Condvar,
    panicked: AtomicBool,
}

// SAFETY: `f` points to a `Sync` closure; see the field's comment for its lifetime.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs parts until none is left.
    fn work(&self) {
        loop {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            if k >= self.parts {
                return;
            }
            // SAFETY: part `k` is claimed, so the caller is still waiting for it.
            let f = unsafe { &*self.f };
            if catch_unwind(AssertUnwindSafe(|| f(part_range(self.len, self.parts, k)))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
            *done += 1;
            if *done == self.parts {
                self.all_done.notify_all();
            }
        }
    }
}

unsafe extern "C" fn task(data: *mut c_void) {
    // SAFETY: `data` is an `Arc<Job>` given away by `for_ranges`; this task owns it now.
    let job = unsafe { Arc::from_raw(data.cast::<Job>().cast_const()) };
    job.work();
}

/// Calls `f` on consecutive ranges covering `0..len` exactly once, on XLA's pool as well as
/// the calling thread when the step moves `bytes` bytes of memory in all. Returns false if a
/// part panicked.
pub fn for_ranges(
    len: usize,
    bytes: usize,
    pool: Option<Pool>,
    f: &(dyn Fn(Range<usize>) + Sync),
) -> bool {
    let threads = max_threads().min(bytes / MIN_BYTES_PER_THREAD);
    let Some(pool) = pool.filter(|_| threads >= 2) else {
        return catch_unwind(AssertUnwindSafe(|| f(0..len))).is_ok();
    };
    // A few parts per thread, so that a thread the system delays leaves its share to others.
    let parts = threads * 4;
    // SAFETY: only the lifetime is erased; see `Job::f`.
    let f: *const (dyn Fn(Range<usize>) + Sync + 'static) = unsafe {
        core::mem::transmute::<
            *const (dyn Fn(Range<usize>) + Sync + '_),
            *const (dyn Fn(Range<usize>) + Sync + 'static),
        >(f)
    };
    let job = Arc::new(Job {
        f,
        len,
        parts,
        next: AtomicUsize::new(0),
        done: Mutex::new(0),
        all_done: Condvar::new(),
        panicked: AtomicBool::new(false),
    });
    for _ in 1..threads {
        let data = Arc::into_raw(Arc::clone(&job)).cast_mut().cast::<c_void>();
        // SAFETY: `task` takes ownership of `data`, or we take it back when refused.
        if !unsafe { pool.spawn(task, data) } {
            drop(unsafe { Arc::from_raw(data.cast::<Job>().cast_const()) });
            break;
        }
    }
    job.work();
    let mut done = job.done.lock().unwrap_or_else(PoisonError::into_inner);
    while *done < parts {
        done = job
            .all_done
            .wait(done)
            .unwrap_or_else(PoisonError::into_inner);
    }
    !job.panicked.load(Ordering::Relaxed)
}
