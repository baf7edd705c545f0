//! The mixed-precision step fused into one AVX2 loop (x86-64, `std`): each vector of 8
//! elements is widened from its stored type in registers, stepped by the algorithm's
//! [`Rule`] (the same rule, the same `f32` operations as every other path), and narrowed back
//! in registers: round-to-nearest-even for the parameter, stochastic rounding for `bf16`
//! state. No stack buffers, one pass over memory.
//!
//! Each conversion is the lane-wise form of the scalar function it replaces in
//! [`super::mixed`] (`bf16_rne`, `bf16_stochastic`, the counter-based bits of
//! `rounding_bits`; F16C's `vcvtph2ps`/`vcvtps2ph` for `f16`, which the chunked path uses
//! too), so the bits equal the chunked path's for every element; tests/mixed.rs checks that
//! against the scalar references. The elements after the last whole vector, and a range whose
//! indices cross a multiple of 2³² (a different generator key), go through the chunked path.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::mixed::{pair_key, rounding_key, Bf16Sr, F32State, StateStorage, Storage};
use super::simd::{prefetch, Rule};
use super::x86::Avx2F32;
use super::{RuleVisitor, Scalars};
use core::any::TypeId;

/// How a stored array is read as 8 `f32` lanes and written back.
trait Lanes: Copy {
    /// `f32` lanes of the 8 elements at `p`.
    unsafe fn load(p: *const Self) -> __m256;
}

/// Parameters: written back rounded to nearest even.
trait Param: Lanes {
    unsafe fn store(v: __m256, p: *mut Self);
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        _mm256_loadu_ps(p)
    }
}

impl Param for f32 {
    #[inline(always)]
    unsafe fn store(v: __m256, p: *mut f32) {
        _mm256_storeu_ps(p, v)
    }
}

impl Lanes for bf16 {
    #[inline(always)]
    unsafe fn load(p: *const bf16) -> __m256 {
        // bf16 is the high half of an f32: zero-extend, shift into place (exact).
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
}

impl Param for bf16 {
    #[inline(always)]
    unsafe fn store(v: __m256, p: *mut bf16) {
        store_bf16(rne(_mm256_castps_si256(v)), p)
    }
}

impl Lanes for f16 {
    #[inline(always)]
    unsafe fn load(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
}

impl Param for f16 {
    #[inline(always)]
    unsafe fn store(v: __m256, p: *mut f16) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
        _mm_storeu_si128(p as *mut __m128i, h)
    }
}

/// `bf16_rne` in 8 lanes of f32 bits: the 16-bit results in the low half of each lane.
#[inline(always)]
unsafe fn rne(b: __m256i) -> __m256i {
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
    let bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb);
    let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(b, bias));
    let abs = _mm256_and_si256(b, _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
    let quiet = _mm256_or_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(0x0040));
    _mm256_blendv_epi8(rounded, quiet, nan)
}

/// `bf16_stochastic` in 8 lanes: `r` holds 16 random bits in the low half of each lane.
///
/// The same results as the scalar function with fewer operations. A finite `b` or ±∞ plus
/// `r` never wraps, so one unsigned minimum does the scalar function's overflow test: the cap
/// `b | 0x7f7f_ffff` is the largest finite magnitude with `b`'s sign for a finite `b` (a sum
/// that reaches the ∞ exponent becomes the truncated `0x7f7f`, which is what truncating such
/// a `b` gives), and for ±∞ the cap is above any sum (±∞ stays ±∞). A NaN takes the quiet bit
/// and is truncated, as in `bf16_rne`.
#[inline(always)]
unsafe fn stochastic(b: __m256i, r: __m256i) -> __m256i {
    let capped = _mm256_min_epu32(
        _mm256_add_epi32(b, r),
        _mm256_or_si256(b, _mm256_set1_epi32(0x7f7f_ffff)),
    );
    let abs = _mm256_and_si256(b, _mm256_set1_epi32(0x7fff_ffff));
    let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80_0000));
    let quiet = _mm256_or_si256(b, _mm256_set1_epi32(0x0040_0000));
    _mm256_srli_epi32::<16>(_mm256_blendv_epi8(capped, quiet, nan))
}

/// Writes the low 16 bits of each lane (each ≤ 0xffff) to 8 `bf16` at `p`.
#[inline(always)]
unsafe fn store_bf16(x: __m256i, p: *mut bf16) {
    // packus works within 128-bit halves: [x0..x3 x0..x3 | x4..x7 x4..x7]; take qwords 0, 2.
    let packed = _mm256_permute4x64_epi64::<0b10_00>(_mm256_packus_epi32(x, x));
    _mm_storeu_si128(p as *mut __m128i, _mm256_castsi256_si128(packed))
}

/// `hash32` of the mixed module in 8 lanes (two 32-bit multiplies).
#[inline(always)]
unsafe fn hash32(mut x: __m256i) -> __m256i {
    x = _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb_352d));
    x = _mm256_xor_si256(x, _mm256_srli_epi32::<15>(x));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x846c_a68bu32 as i32));
    _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x))
}

/// How the state arrays are stored, in lanes.
trait State: Copy {
    type Elem: Lanes;
    /// Writes the `K` new state vectors of the elements `i ..` (`i` counted from the slices'
    /// start).
    unsafe fn store<const K: usize>(&self, v: &[__m256; K], dst: &[*mut Self::Elem; K], i: usize);
}

impl State for F32State {
    type Elem = f32;
    #[inline(always)]
    unsafe fn store<const K: usize>(&self, v: &[__m256; K], dst: &[*mut f32; K], i: usize) {
        for (v, d) in v.iter().zip(dst) {
            _mm256_storeu_ps(d.add(i), *v)
        }
    }
}

/// [`Bf16Sr`] for one call: the key of each pair of arrays, and the low 32 bits of the
/// whole-tensor index of the slices' first element (no multiple of 2³² is crossed).
#[derive(Clone, Copy)]
struct SrLanes {
    keys: [u32; 4],
    first: u32,
}

impl State for SrLanes {
    type Elem = bf16;
    #[inline(always)]
    unsafe fn store<const K: usize>(&self, v: &[__m256; K], dst: &[*mut bf16; K], i: usize) {
        let step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let idx = _mm256_add_epi32(
            _mm256_set1_epi32(self.first.wrapping_add(i as u32) as i32),
            step,
        );
        let low = _mm256_set1_epi32(0xffff);
        let mut j = 0;
        while j < K {
            let h = hash32(_mm256_xor_si256(
                idx,
                _mm256_set1_epi32(self.keys[j / 2] as i32),
            ));
            let x = stochastic(_mm256_castps_si256(v[j]), _mm256_and_si256(h, low));
            store_bf16(x, dst[j].add(i));
            if j + 1 < K {
                let y = stochastic(_mm256_castps_si256(v[j + 1]), _mm256_srli_epi32::<16>(h));
                store_bf16(y, dst[j + 1].add(i));
            }
            j += 2;
        }
    }
}

/// The fused loop over the first `n − n % 8` elements.
///
/// # Safety
/// AVX2 and F16C present; every pointer valid for `n` elements, written ones not aliased.
#[inline(always)]
unsafe fn run<R: Rule<K, E = f32>, const K: usize, P: Param, S: State>(
    r: &R,
    param: *mut P,
    grad: *const P,
    state: &[*mut S::Elem; K],
    storage: &S,
    n: usize,
) {
    let c = r.lanes::<Avx2F32>();
    let body = n - n % 8;
    let mut i = 0;
    while i < body {
        prefetch(param.wrapping_add(i));
        prefetch(grad.wrapping_add(i));
        for a in state {
            prefetch(a.wrapping_add(i));
        }
        let p = Avx2F32(P::load(param.add(i)));
        let g = Avx2F32(P::load(grad.add(i)));
        let mut st: [Avx2F32; K] =
            core::array::from_fn(|j| Avx2F32(<S::Elem as Lanes>::load(state[j].add(i))));
        let p = r.update(&c, p, g, &mut st);
        storage.store(&st.map(|v| v.0), state, i);
        P::store(p.0, param.add(i));
        i += 8;
    }
}

/// The visitor that runs [`run`] with the algorithm's rule.
struct Fused<'a, 'b, P, S: State> {
    param: &'a mut [P],
    grad: &'a [P],
    state: &'a mut [&'b mut [S::Elem]],
    storage: S,
}

impl<P: Param, S: State> RuleVisitor<f32> for Fused<'_, '_, P, S> {
    type Out = ();
    #[inline(always)]
    fn visit<R: Rule<K, E = f32>, const K: usize>(self, r: &R) {
        let n = self.param.len();
        assert!(self.state.len() == K && self.grad.len() >= n);
        assert!(self.state.iter().all(|a| a.len() >= n));
        let ptrs: [*mut S::Elem; K] = core::array::from_fn(|j| self.state[j].as_mut_ptr());
        // SAFETY: lengths checked above; the state arrays and `param` are distinct `&mut`
        // slices; the caller of `entry` checked the CPU.
        unsafe {
            run::<R, K, P, S>(
                r,
                self.param.as_mut_ptr(),
                self.grad.as_ptr(),
                &ptrs,
                &self.storage,
                n,
            )
        }
    }
}

/// # Safety
/// The CPU has AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn entry<P: Param, S: State>(
    s: &Scalars<f32>,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [S::Elem]],
    storage: S,
) {
    s.visit(Fused {
        param,
        grad,
        state,
        storage,
    })
}

/// Reinterprets a slice of `A` as `B` when both are the same type (checked by the caller
/// through their type ids).
///
/// # Safety
/// `A` and `B` are the same type.
unsafe fn cast<A, B>(x: &mut [A]) -> &mut [B] {
    core::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut B, x.len())
}

/// Runs the fused loop over the whole vectors of `param` when this CPU and build can (AVX2 and
/// F16C present, the active kernel path AVX2 or AVX-512), and returns how many elements it
/// did (a multiple of 8, from the start); the caller does the rest with the chunked path.
pub(super) fn apply<P: Storage, S: StateStorage>(
    s: &Scalars<f32>,
    t: u64,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [S::Elem]],
    storage: &S,
) -> usize {
    use super::KernelPath;
    if !matches!(KernelPath::active(), KernelPath::Avx2 | KernelPath::Avx512)
        || !std::is_x86_feature_detected!("avx2")
        || !std::is_x86_feature_detected!("f16c")
    {
        return 0;
    }
    let n = param.len();
    let body = n - n % 8;
    if body == 0 {
        return 0;
    }
    let grad = &grad[..body];
    let param = &mut param[..body];
    let mut arrays: [&mut [S::Elem]; super::mixed::MAX_STATES] = Default::default();
    let k = state.len();
    for (a, s) in arrays.iter_mut().zip(state.iter_mut()) {
        *a = &mut s[..body];
    }
    let state = &mut arrays[..k];
    let s_ty = TypeId::of::<S>();
    // SAFETY (every cast): the type ids say which type `S` is (and so `S::Elem`); the CPU was
    // checked above.
    let done = unsafe {
        if s_ty == TypeId::of::<F32State>() {
            by_param(s, param, grad, cast(state), F32State)
        } else if s_ty == TypeId::of::<Bf16Sr>() {
            let sr: Bf16Sr = *(storage as *const S as *const Bf16Sr);
            let (lo, hi) = (sr.offset, sr.offset.wrapping_add(body as u64 - 1));
            if lo >> 32 != hi >> 32 || lo > hi {
                return 0; // a different key past the boundary: the chunked path splits
            }
            let key = rounding_key(sr.seed, t);
            let lanes = SrLanes {
                keys: core::array::from_fn(|pair| pair_key(key, pair, (lo >> 32) as u32)),
                first: lo as u32,
            };
            by_param(s, param, grad, cast(state), lanes)
        } else {
            false
        }
    };
    if done {
        body
    } else {
        0
    }
}

/// [`entry`] with `P` as the storage type it is (`f32`, `bf16` or `f16`); `false` for any other.
///
/// # Safety
/// The CPU has AVX2 and F16C.
unsafe fn by_param<P: 'static, T: State>(
    s: &Scalars<f32>,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [T::Elem]],
    storage: T,
) -> bool {
    let p = TypeId::of::<P>();
    // SAFETY (every cast): `P` is the type whose id matched.
    if p == TypeId::of::<f32>() {
        entry::<f32, T>(s, cast(param), cast_ref(grad), state, storage)
    } else if p == TypeId::of::<bf16>() {
        entry::<bf16, T>(s, cast(param), cast_ref(grad), state, storage)
    } else if p == TypeId::of::<f16>() {
        entry::<f16, T>(s, cast(param), cast_ref(grad), state, storage)
    } else {
        return false;
    }
    true
}

/// [`cast`] for a shared slice.
///
/// # Safety
/// As [`cast`].
unsafe fn cast_ref<A, B>(x: &[A]) -> &[B] {
    core::slice::from_raw_parts(x.as_ptr() as *const B, x.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mixed::{bf16_rne, bf16_stochastic};

    /// The lane conversions against the scalar functions, on every exponent and sign with
    /// many mantissas (all specials included), 8 lanes at a time with varied random bits.
    #[test]
    fn lanes_round_as_the_scalar_functions() {
        if !std::is_x86_feature_detected!("avx2") {
            std::println!("skipped: no AVX2 on this CPU");
            return;
        }
        let mut state = 0x1234_5678u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut checked = 0u64;
        for top in 0u32..512 {
            // sign + exponent = top; mantissas: edges and random ones.
            for m in 0u32..256 {
                let mant = match m {
                    0 => 0,
                    1 => 1,
                    2 => 0x7f_ffff,
                    3 => 0x40_0000,
                    4 => 0x00_8000,
                    5 => 0x00_7fff,
                    6 => 0x01_8000,
                    _ => next() & 0x7f_ffff,
                };
                let b = (top << 23) | mant;
                let bits: [u32; 8] = core::array::from_fn(|j| {
                    if j == 0 {
                        b
                    } else {
                        (b & !0xffff) | (next() & 0xffff)
                    }
                });
                let rs: [u32; 8] = core::array::from_fn(|j| match j {
                    0 => 0,
                    1 => 0xffff,
                    _ => next() & 0xffff,
                });
                let (mut ne, mut sr) = ([0u32; 8], [0u32; 8]);
                // SAFETY: AVX2 checked above; arrays of 8 lanes.
                unsafe {
                    let v = _mm256_loadu_si256(bits.as_ptr() as *const __m256i);
                    let r = _mm256_loadu_si256(rs.as_ptr() as *const __m256i);
                    _mm256_storeu_si256(ne.as_mut_ptr() as *mut __m256i, rne(v));
                    _mm256_storeu_si256(sr.as_mut_ptr() as *mut __m256i, stochastic(v, r));
                }
                for j in 0..8 {
                    let x = f32::from_bits(bits[j]);
                    assert_eq!(ne[j], u32::from(bf16_rne(x)), "rne {:#x}", bits[j]);
                    let want = u32::from(bf16_stochastic(x, rs[j] as u16));
                    assert_eq!(sr[j], want, "sr {:#x} r {:#x}", bits[j], rs[j]);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 512 * 256 * 8);
    }
}
