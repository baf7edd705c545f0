//! Stepping many tensors at once, split across threads (feature `alloc`; threads with `std`).
//!
//! The tensors of one step are laid end to end as one range of `total` elements, cut into
//! equal chunks ([`super::threads::part_range`]; about 8 per thread, so that a thread delayed
//! by other processes leaves its share to the others), and the threads take chunks in turn,
//! each stepping the pieces of the tensors its chunk covers. So a large tensor is split across
//! threads and many small ones are batched, with no per-tensor dispatch. Kernels are elementwise and every path gives the
//! portable path's bits, so the result does not depend on where the cuts fall, i.e. on the
//! thread count.
//!
//! Nothing here allocates while stepping: the work list lives in the optimizer and keeps its
//! capacity between steps, and the workers are started before (see [`Engine::set_threads`]).

use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::simd::Rule;
use super::{all_finite, apply, RuleVisitor, Scalars};
use crate::element::Element;

/// Below this many bytes of memory traffic per thread, another thread costs more (waking it,
/// tens of microseconds) than it saves. Under Miri, which interprets every element, 256 times
/// less, so that a test small enough for it is split over threads all the same.
#[cfg(not(miri))]
const MIN_BYTES_PER_PART: usize = 1 << 20;
#[cfg(miri)]
const MIN_BYTES_PER_PART: usize = 1 << 12;

/// Threads take the work in this many chunks each (on average), so that a thread the system
/// delays (other processes) leaves its share to the others instead of holding up the step.
#[cfg(feature = "std")]
const CHUNKS_PER_THREAD: usize = 8;

/// Smallest chunk, in bytes of memory traffic (under Miri 256 times less, as above).
#[cfg(all(feature = "std", not(miri)))]
const MIN_BYTES_PER_CHUNK: usize = 1 << 18;
#[cfg(all(feature = "std", miri))]
const MIN_BYTES_PER_CHUNK: usize = 1 << 10;

/// Bytes of state below which its arrays are simply laid end to end.
const MIN_STAGGER_BYTES: usize = 1 << 16;
/// How far apart, within a 4 KiB page, a tensor's state arrays start (and the first from where
/// its buffer starts).
const STAGGER_BYTES: usize = 1024;
const PAGE_BYTES: usize = 4096;

/// Where a tensor's state arrays lie in its one buffer: array `j` is
/// `[lead + j·stride, lead + j·stride + len)`.
///
/// Large arrays that start at the same offset within a 4 KiB page slow a step that streams them
/// together by up to a third (measured with `vsgd bench --placement`, docs/performance.md:
/// loads and stores whose addresses agree in their low 12 bits are taken for dependent, "4K
/// aliasing"). Users' parameters and gradients usually share one offset (every large `malloc`
/// returns page + 16 bytes), and so would the state arrays laid end to end. So above
/// `MIN_STAGGER_BYTES` each array starts 1 KiB further within its page than the one before,
/// the first 1 KiB after the buffer's own start: with the buffer at the users' offset, the
/// parameter and gradient and up to three state arrays fall on four different quarters of
/// the page. The gaps (under 4 KiB each) are never read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StateLayout {
    pub(crate) lead: usize,
    pub(crate) stride: usize,
}

impl StateLayout {
    /// The layout of `len`-element arrays of `size`-byte elements.
    pub(crate) fn new(len: usize, size: usize) -> StateLayout {
        let bytes = len.saturating_mul(size);
        if bytes < MIN_STAGGER_BYTES || STAGGER_BYTES % size != 0 {
            return StateLayout {
                lead: 0,
                stride: len,
            };
        }
        // stride·size ≡ STAGGER_BYTES (mod PAGE_BYTES); `bytes` is a multiple of `size`.
        let pad = (STAGGER_BYTES + PAGE_BYTES - bytes % PAGE_BYTES) % PAGE_BYTES;
        StateLayout {
            lead: STAGGER_BYTES / size,
            // Saturating: a length near `usize::MAX` then fails in `total` (an error), not here.
            stride: len.saturating_add(pad / size),
        }
    }

    /// Elements of a buffer holding `k` arrays of `len`, or `None` on overflow.
    pub(crate) fn total(&self, k: usize, len: usize) -> Option<usize> {
        match k {
            0 => Some(0),
            _ => self
                .stride
                .checked_mul(k - 1)?
                .checked_add(self.lead)?
                .checked_add(len),
        }
    }

    /// The elements of array `j`.
    pub(crate) fn range(&self, j: usize, len: usize) -> core::ops::Range<usize> {
        let start = self.lead + j * self.stride;
        start..start + len
    }
}

/// One tensor of a step: raw views of its buffers, valid for the duration of one step.
pub(crate) struct Item<T> {
    /// Index of the tensor in the optimizer.
    pub(crate) tensor: usize,
    param: *mut T,
    grad: *const T,
    /// `state_count` arrays of `len` elements, placed as `layout` says.
    state: *mut T,
    layout: StateLayout,
    len: usize,
    /// Where the tensor starts when the step's tensors are laid end to end.
    offset: usize,
    pub(crate) scalars: Scalars<T>,
    /// Set by the finite scan.
    nonfinite: AtomicBool,
    /// Index of the item's first block in [`Engine::sum_squares`].
    block0: usize,
}

impl<T: Element> Item<T> {
    /// Views of one tensor's buffers. `grad.len()` and `param.len()` must be `len`, `state`
    /// must hold `scalars.state_count()` arrays of `len` elements placed as `layout` says; the
    /// caller must not touch these buffers otherwise until the step is over.
    pub(crate) fn new(
        tensor: usize,
        param: &mut [T],
        grad: &[T],
        state: &mut [T],
        layout: StateLayout,
        scalars: Scalars<T>,
    ) -> Self {
        let len = param.len();
        let need = layout.total(scalars.state_count(), len);
        assert!(grad.len() == len && need.is_some_and(|n| state.len() >= n));
        Item {
            tensor,
            param: param.as_mut_ptr(),
            grad: grad.as_ptr(),
            state: state.as_mut_ptr(),
            layout,
            len,
            offset: 0,
            scalars,
            nonfinite: AtomicBool::new(false),
            block0: 0,
        }
    }

    /// Whether the finite scan found NaN or ±∞ in the gradient.
    pub(crate) fn nonfinite(&self) -> bool {
        self.nonfinite.load(Ordering::Relaxed)
    }
}

/// What a part does to its pieces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Look for non-finite gradient elements.
    Scan,
    /// Apply the update.
    Apply,
}

/// Steps (or scans) the elements `range` of the items laid end to end (`offset` set).
fn run_part<T: Element>(items: &[Item<T>], range: core::ops::Range<usize>, op: Op) {
    // The first item ending after `range.start`.
    let first = items.partition_point(|it| it.offset + it.len <= range.start);
    for it in &items[first..] {
        let (start, end) = (it.offset, it.offset + it.len);
        if it.len == 0 {
            continue;
        }
        if start >= range.end {
            break;
        }
        let lo = range.start.max(start) - start;
        let n = range.end.min(end) - start - lo;
        // SAFETY: `Item::new` took these pointers from live buffers of `len` elements (state:
        // `k` arrays of `len` as its layout places them) that nothing else touches during the step; `lo + n ≤ len`;
        // parts cover disjoint element ranges, so no two threads build overlapping slices.
        unsafe {
            let grad = core::slice::from_raw_parts(it.grad.add(lo), n);
            if op == Op::Scan {
                if !all_finite(grad) {
                    it.nonfinite.store(true, Ordering::Relaxed);
                }
                continue;
            }
            let param = core::slice::from_raw_parts_mut(it.param.add(lo), n);
            it.scalars.visit(Piece {
                item: it,
                param,
                grad,
                lo,
            });
        }
    }
}

/// The elements `[lo, lo + n)` of one item, stepped once its algorithm's state count `K` is
/// known: its `K` state arrays are `layout.stride` elements apart.
struct Piece<'a, T> {
    item: &'a Item<T>,
    param: &'a mut [T],
    grad: &'a [T],
    lo: usize,
}

impl<T: Element> RuleVisitor<T> for Piece<'_, T> {
    type Out = ();
    fn visit<R: Rule<K, E = T>, const K: usize>(self, _: &R) {
        let (it, n) = (self.item, self.param.len());
        // SAFETY: as in `run_part`: array `j` of the item's state is `layout.range(j, len)` of
        // a live buffer nothing else touches during the step (checked by `Item::new`), the
        // arrays do not overlap (stride ≥ len), `lo + n ≤ len`, and parts cover disjoint
        // element ranges.
        let mut arrays: [&mut [T]; K] = core::array::from_fn(|j| unsafe {
            let start = it.layout.range(j, it.len).start;
            core::slice::from_raw_parts_mut(it.state.add(start + self.lo), n)
        });
        apply(&it.scalars, self.param, self.grad, &mut arrays);
    }
}

/// Items shared with the worker threads.
struct SharedItems<'a, T>(&'a [Item<T>]);

// SAFETY: workers only read the items, write `nonfinite` atomically, and write through the
// raw pointers to disjoint element ranges (see `run_part`).
unsafe impl<T: Send> Sync for SharedItems<'_, T> {}

/// The reusable work list of one element type.
struct Items<T>(Vec<Item<T>>);

// SAFETY: the raw pointers are only dereferenced inside a step, by the thread that filled the
// list and by pool workers it waits for; between steps the list is empty.
unsafe impl<T: Send> Send for Items<T> {}
// SAFETY: as above; a shared `&Items` gives no access to the pointers.
unsafe impl<T: Sync> Sync for Items<T> {}

/// The optimizer's execution resources: thread count, worker pool and work lists.
/// Not part of the optimizer's value: clones get their own (lazily started) pool, and two
/// engines always compare equal.
pub(crate) struct Engine {
    /// Requested thread count; 0 means the available parallelism.
    threads: usize,
    #[cfg(feature = "std")]
    pool: Option<super::threads::WorkerPool>,
    f32: Items<f32>,
    f64: Items<f64>,
    /// Per-block sums of squares of [`Engine::sum_squares`] (`f64` bits).
    partials: Vec<AtomicU64>,
}

/// Elements per block of [`Engine::sum_squares`]: each block is summed by one thread, and the
/// blocks' sums are added in order, so the total does not depend on the thread count.
const NORM_BLOCK: usize = 1 << 16;

impl Engine {
    pub(crate) fn new() -> Self {
        Engine {
            threads: 0,
            #[cfg(feature = "std")]
            pool: None,
            f32: Items(Vec::new()),
            f64: Items(Vec::new()),
            partials: Vec::new(),
        }
    }

    /// Σ ĝ² over every item's gradient, in `f64`: the items cut into fixed blocks of
    /// [`NORM_BLOCK`] elements, each summed with [`super::sum_squares`], the blocks added in
    /// order. The same bits for every thread count and kernel path. The block list has room
    /// for every registered tensor ([`Engine::reserve_norm_blocks`]); it grows only for items
    /// that were not registered that way.
    pub(crate) fn sum_squares<T: Element>(&mut self, items: &mut [Item<T>]) -> f64 {
        let mut nblocks = 0usize;
        let mut total = 0usize;
        for it in items.iter_mut() {
            it.block0 = nblocks;
            nblocks += it.len.div_ceil(NORM_BLOCK);
            total += it.len;
        }
        // Out of `self` while the pool runs (it needs `&mut self`); put back at the end.
        let mut partials = core::mem::take(&mut self.partials);
        if partials.len() < nblocks {
            partials.resize_with(nblocks, || AtomicU64::new(0));
        }
        let shared = SharedItems(items);
        let (shared, sums) = (&shared, &partials[..nblocks]);
        let block = move |b: usize| {
            let items = shared.0;
            // The item holding block `b`: the last whose first block is ≤ b (an empty item
            // shares its first block with the next one, which comes after it).
            let it = &items[items.partition_point(|it| it.block0 <= b) - 1];
            let start = (b - it.block0) * NORM_BLOCK;
            let n = NORM_BLOCK.min(it.len - start);
            // SAFETY: `Item::new` took `grad` from a live buffer of `len` elements that nothing
            // writes during the step; `start + n ≤ len`.
            let g = unsafe { core::slice::from_raw_parts(it.grad.add(start), n) };
            sums[b].store(super::sum_squares(g).to_bits(), Ordering::Relaxed);
        };
        let bytes = total.saturating_mul(core::mem::size_of::<T>());
        let threads = self
            .threads()
            .min((bytes / MIN_BYTES_PER_PART).max(1))
            .min(nblocks.max(1));
        #[cfg(feature = "std")]
        let parallel = threads > 1;
        #[cfg(not(feature = "std"))]
        let parallel = {
            let _ = threads; // no worker threads without std
            false
        };
        if parallel {
            #[cfg(feature = "std")]
            {
                let pool = self.pool();
                let threads = threads.min(pool.threads());
                pool.run(threads, &|k| {
                    let mut b = k;
                    while b < nblocks {
                        block(b);
                        b += threads;
                    }
                });
            }
        } else {
            (0..nblocks).for_each(block);
        }
        let sum = sums
            .iter()
            .map(|p| f64::from_bits(p.load(Ordering::Relaxed)))
            .fold(0.0, |a, x| a + x);
        self.partials = partials;
        sum
    }

    /// The worker pool, started (or restarted in a forked process) when needed.
    #[cfg(feature = "std")]
    fn pool(&mut self) -> &mut super::threads::WorkerPool {
        if self.pool.as_ref().is_some_and(|p| p.forked()) {
            // A forked child: the pool's workers live in the parent. Drop it (it leaks rather
            // than joins) and start this process's own.
            self.pool = None;
        }
        let n = self.threads();
        self.pool
            .get_or_insert_with(|| super::threads::WorkerPool::new(n))
    }

    /// Room in the gradient norm's block list for one more tensor of `len` elements, so that
    /// a step over every registered tensor sums its norm without allocating. Fallible: the
    /// bytes that could not be had.
    pub(crate) fn reserve_norm_blocks(&mut self, len: usize) -> Result<(), usize> {
        let more = len.div_ceil(NORM_BLOCK);
        self.partials
            .try_reserve_exact(more)
            .map_err(|_| more.saturating_mul(core::mem::size_of::<AtomicU64>()))?;
        self.partials
            .resize_with(self.partials.len() + more, || AtomicU64::new(0));
        Ok(())
    }

    /// Room for `tensors` tensors in the work lists, so a step need not allocate.
    pub(crate) fn reserve_for(&mut self, tensors: usize) {
        // The lists are empty between steps, so `reserve` reserves for `tensors` in all.
        self.f32.0.reserve(tensors);
        self.f64.0.reserve(tensors);
    }

    /// Threads a step may use.
    pub(crate) fn threads(&self) -> usize {
        match self.threads {
            0 => default_threads(),
            n => n,
        }
    }

    /// Sets the thread count (0: the available parallelism) and starts the workers now, so
    /// that no later step allocates.
    #[cfg(feature = "std")]
    pub(crate) fn set_threads(&mut self, threads: usize) {
        self.threads = threads.min(super::threads::MAX_THREADS);
        let want = self.threads();
        if self.pool.as_ref().is_some_and(|p| p.forked()) {
            self.pool = None;
        }
        if self.pool.as_ref().map(|p| p.threads()) != Some(want) {
            self.pool = None; // joins the old workers first
            if want > 1 {
                self.pool = Some(super::threads::WorkerPool::new(want));
            }
        }
    }

    /// The work list for `T`, emptied, with room for `n` items.
    pub(crate) fn take_items<T: Element>(&mut self, n: usize) -> Vec<Item<T>> {
        let list = (&mut self.f32 as &mut dyn Any)
            .downcast_mut::<Items<T>>()
            .or_else(|| (&mut self.f64 as &mut dyn Any).downcast_mut::<Items<T>>())
            .expect("Element is f32 or f64");
        let mut v = core::mem::take(&mut list.0);
        v.clear();
        v.reserve(n);
        v
    }

    /// Gives a work list back (emptied: no pointer outlives the step).
    pub(crate) fn put_items<T: Element>(&mut self, mut v: Vec<Item<T>>) {
        v.clear();
        if let Some(list) = (&mut self.f32 as &mut dyn Any)
            .downcast_mut::<Items<T>>()
            .or_else(|| (&mut self.f64 as &mut dyn Any).downcast_mut::<Items<T>>())
        {
            list.0 = v;
        }
    }

    /// Marks the items whose gradient holds NaN or ±∞.
    pub(crate) fn scan<T: Element>(&mut self, items: &mut [Item<T>]) {
        let bytes = core::mem::size_of::<T>();
        self.run(items, bytes, Op::Scan);
    }

    /// Applies every item's update.
    pub(crate) fn apply<T: Element>(&mut self, items: &mut [Item<T>]) {
        // Reads param, grad and k state arrays; writes param and the k arrays.
        let k = items.first().map_or(1, |it| it.scalars.state_count());
        let bytes = (3 + 2 * k) * core::mem::size_of::<T>();
        self.run(items, bytes, Op::Apply);
    }

    /// Calls `f` on parts of `0..len` that together cover it once, across the worker threads
    /// when the traffic (`bytes_per_element` each) is large enough, else on the whole range
    /// on this thread. The parts are disjoint; which thread runs which is not fixed.
    pub(crate) fn split(
        &mut self,
        len: usize,
        bytes_per_element: usize,
        f: &(dyn Fn(core::ops::Range<usize>) + Sync),
    ) {
        let bytes = len.saturating_mul(bytes_per_element);
        let threads = self.threads().min((bytes / MIN_BYTES_PER_PART).max(1));
        #[cfg(feature = "std")]
        if threads > 1 {
            // First parallel step with the default thread count: starts the workers (the only
            // allocation a step can make; `set_threads` avoids it).
            let pool = self.pool();
            let threads = threads.min(pool.threads());
            let chunks = (threads * CHUNKS_PER_THREAD)
                .min(bytes / MIN_BYTES_PER_CHUNK)
                .max(threads);
            let next = core::sync::atomic::AtomicUsize::new(0);
            let next = &next;
            pool.run(threads, &move |_| loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks {
                    break;
                }
                f(super::threads::part_range(len, chunks, c));
            });
            return;
        }
        #[cfg(not(feature = "std"))]
        let _ = threads;
        f(0..len);
    }

    fn run<T: Element>(&mut self, items: &mut [Item<T>], bytes_per_element: usize, op: Op) {
        let mut total = 0usize;
        for it in items.iter_mut() {
            it.offset = total;
            total += it.len;
        }
        // The tensors laid end to end, cut into parts the threads share (large tensors split,
        // small ones batched).
        let shared = SharedItems(items);
        let shared = &shared;
        self.split(total, bytes_per_element, &move |r| {
            run_part(shared.0, r, op)
        });
    }
}

/// The available parallelism, asked once per process (std), or 1.
fn default_threads() -> usize {
    #[cfg(feature = "std")]
    {
        static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
    #[cfg(not(feature = "std"))]
    {
        1
    }
}

impl Clone for Engine {
    fn clone(&self) -> Self {
        let mut e = Engine::new();
        e.threads = self.threads;
        e.reserve_for(self.f32.0.capacity().max(self.f64.0.capacity()));
        e.partials
            .resize_with(self.partials.len(), || AtomicU64::new(0));
        e
    }
}

impl core::fmt::Debug for Engine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Engine")
            .field("threads", &self.threads())
            .finish()
    }
}

#[cfg(test)]
mod layout_tests {
    use super::StateLayout;

    #[test]
    fn small_state_is_contiguous_large_state_staggered() {
        for (len, size) in [(0usize, 4usize), (1, 4), (16383, 4), (8191, 8), (32767, 2)] {
            let l = StateLayout::new(len, size);
            assert_eq!((l.lead, l.stride), (0, len), "{len} x {size}");
            assert_eq!(l.total(3, len), Some(3 * len));
        }
        for (len, size) in [
            (16384usize, 4usize),
            (1 << 24, 4),
            (1_000_003, 4),
            (77_777, 8),
        ]
        .into_iter()
        .chain([(1 << 20, 2), (65_537, 2)])
        {
            let l = StateLayout::new(len, size);
            assert_eq!(l.lead * size, 1024);
            assert!(l.stride >= len && (l.stride - len) * size < 4096);
            assert_eq!(l.stride * size % 4096, 1024, "{len} x {size}");
            for k in 1..=3 {
                let total = l.total(k, len).unwrap();
                // Arrays in order, not overlapping, the last one ending at the buffer's end.
                for j in 0..k {
                    let r = l.range(j, len);
                    assert_eq!(r.len(), len);
                    assert_eq!(r.start * size % 4096, 1024 * (j + 1) % 4096);
                    if j > 0 {
                        assert!(r.start >= l.range(j - 1, len).end);
                    }
                }
                assert_eq!(l.range(k - 1, len).end, total);
            }
            assert_eq!(l.total(0, len), Some(0));
        }
        assert_eq!(
            StateLayout::new(usize::MAX / 2, 4).total(3, usize::MAX / 2),
            None
        );
    }
}
