//! A multi-tensor launch, planned on the host: the tensor table (chunk offsets, scalars indices,
//! verdict flag indices), the distinct per-step scalars, and whether it all fits in the kernel
//! arguments. Pure Rust, no driver: the host emulation tests run these very plans.

use alloc::vec::Vec;

use super::layout::{Args, LaunchHeader, TensorDesc, ARGS_SCALARS, ARGS_TENSORS};
use crate::kernels::NonFinitePolicy;

/// Elements per chunk (PyTorch's multi_tensor_apply uses the same 65,536).
pub(crate) const CHUNK: u64 = 1 << 16;
/// Threads per block (`VSGD_BLOCK`).
pub(crate) const BLOCK: u32 = 512;
/// Most blocks of one launch; blocks loop over the chunks beyond (grid-stride).
pub(crate) const MAX_GRID: u64 = 1 << 20;

/// One tensor to step, as the caller gives it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Work {
    /// Device addresses of the parameters, gradient and state arrays (unused ones 0).
    pub param: u64,
    pub grad: u64,
    pub state: [u64; 3],
    /// Elements.
    pub len: u64,
    /// Index of the tensor's verdict flag.
    pub flag: u32,
}

/// A planned launch over tensors of one algorithm and element type (scalars type `S`).
#[derive(Clone, Debug)]
pub(crate) struct Plan<S> {
    pub header: LaunchHeader,
    pub scalars: Vec<S>,
    pub tensors: Vec<TensorDesc>,
}

impl<S: Copy + Default + PartialEq> Plan<S> {
    /// An empty plan. `chunk` (> 0, < 2^31) is [`CHUNK`] except in tests; `any_flag` is the
    /// index of the flag set when any tensor is flagged.
    pub fn new(chunk: u64, policy: NonFinitePolicy, any_flag: u32) -> Self {
        debug_assert!(chunk > 0 && chunk < 1 << 31);
        Plan {
            header: LaunchHeader {
                chunk,
                policy: policy as u32,
                any_flag,
                ..LaunchHeader::default()
            },
            scalars: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Adds a tensor with its step's scalars. Empty tensors are left out (nothing to do; their
    /// flag stays 0). Scalars equal to one already in the plan are shared.
    pub fn push(&mut self, w: Work, s: S) {
        if w.len == 0 {
            return;
        }
        let k = match self.scalars.iter().rposition(|x| *x == s) {
            Some(k) => k,
            None => {
                self.scalars.push(s);
                self.scalars.len() - 1
            }
        };
        let h = &mut self.header;
        self.tensors.push(TensorDesc {
            param: w.param,
            grad: w.grad,
            state: w.state,
            len: w.len,
            first_chunk: h.total_chunks,
            scalars: k as u32,
            flag: w.flag,
        });
        h.total_chunks += w.len.div_ceil(h.chunk);
        h.n_tensors += 1;
    }

    /// Whether there is anything to launch.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Whether the tables fit in the kernel arguments.
    pub fn fits_inline(&self) -> bool {
        self.scalars.len() <= ARGS_SCALARS && self.tensors.len() <= ARGS_TENSORS
    }

    /// Blocks of the launch.
    pub fn grid(&self) -> u32 {
        self.header.total_chunks.clamp(1, MAX_GRID) as u32
    }

    /// Bytes of the device tables ([`Plan::write_tables`]): the tensor table, then the scalars
    /// (at an 8-byte aligned offset).
    pub fn table_bytes(&self) -> usize {
        self.scalars_offset() + self.scalars.len() * core::mem::size_of::<S>()
    }

    fn scalars_offset(&self) -> usize {
        (self.tensors.len() * core::mem::size_of::<TensorDesc>()).next_multiple_of(8)
    }

    /// The kernel argument for phase `phase`, with `flags` the device address of the verdict
    /// flags and, when the plan does not fit inline, `table` the device address where the
    /// bytes of [`Plan::write_tables`] were copied.
    pub fn args(&self, phase: u32, flags: u64, table: Option<u64>) -> Args<S> {
        let mut a = Args {
            h: self.header,
            s: [S::default(); ARGS_SCALARS],
            t: [TensorDesc::default(); ARGS_TENSORS],
        };
        a.h.phase = phase;
        a.h.flags = flags;
        match table {
            Some(addr) => {
                a.h.tensors = addr;
                a.h.scalars = addr + self.scalars_offset() as u64;
            }
            None => {
                assert!(self.fits_inline(), "a plan that does not fit needs a table");
                a.s[..self.scalars.len()].copy_from_slice(&self.scalars);
                a.t[..self.tensors.len()].copy_from_slice(&self.tensors);
            }
        }
        a
    }

    /// Appends the device tables' bytes to `out` (see [`Plan::table_bytes`]).
    pub fn write_tables(&self, out: &mut Vec<u8>) {
        let start = out.len();
        for t in &self.tensors {
            out.extend_from_slice(as_bytes(t));
        }
        out.resize(start + self.scalars_offset(), 0);
        for s in &self.scalars {
            out.extend_from_slice(as_bytes(s));
        }
    }
}

/// The bytes of a layout value ([`TensorDesc`] or a scalars struct of `super::layout`).
pub(crate) fn as_bytes<V: Copy>(v: &V) -> &[u8] {
    // SAFETY: only called with the `#[repr(C)]` types of `super::layout`, made of integers and
    // floats with no padding (sizes asserted there), so every byte is initialized.
    unsafe { core::slice::from_raw_parts((v as *const V).cast::<u8>(), core::mem::size_of::<V>()) }
}
