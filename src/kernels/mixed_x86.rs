//! The mixed-precision step fused into one vector loop (x86-64, `std`): each vector of 8
//! (AVX2) or 16 (AVX-512F) elements is widened from its stored type in registers, stepped by
//! the algorithm's [`Rule`] (the same rule, the same `f32` operations as every other path),
//! and narrowed back in registers: round-to-nearest-even for the parameter, stochastic rounding
//! for `bf16` state. No stack buffers, one pass over memory. The loop is written once over an
//! [`Isa`] (the lane forms of the conversions); the AVX-512 loop runs when the active kernel
//! path is AVX-512, the AVX2 loop when it is AVX2.
//!
//! Each conversion is the lane-wise form of the scalar function it replaces in
//! [`super::mixed`] (`bf16_rne`, `bf16_stochastic`, the counter-based bits of
//! `rounding_bits`; F16C's `vcvtph2ps`/`vcvtps2ph` for `f16`, which the chunked path uses
//! too, and their AVX-512F forms), so the bits equal the chunked path's for every element;
//! tests/mixed.rs checks that against the scalar references. The elements after the last whole
//! vector, and a range whose indices cross a multiple of 2³² (a different generator key), go
//! through the chunked path.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::mixed::{pair_key, rounding_key, Bf16Sr, F32State, StateStorage, Storage};
use super::simd::{prefetch, Rule, Vector};
use super::x86::Avx2F32;
use super::{RuleVisitor, Scalars};
use core::any::TypeId;

/// One instruction set's lanes for the fused loop: the `f32` vector the rule runs on, the
/// same lanes as 32-bit integers, and the lane forms of the conversions.
///
/// # Safety
/// As [`Vector`]: the methods run the instruction set's instructions.
trait Isa: Copy {
    /// `f32` lanes.
    type F: Vector<E = f32>;
    /// The same lanes as 32-bit integers.
    type I: Copy;
    /// The bits of `v`'s lanes.
    unsafe fn bits(v: Self::F) -> Self::I;
    /// `LANES` `bf16` at `p`, widened (exact).
    unsafe fn load_bf16(p: *const bf16) -> Self::F;
    /// `LANES` `f16` at `p`, widened (exact).
    unsafe fn load_f16(p: *const f16) -> Self::F;
    /// `v` rounded to nearest even into `LANES` `f16` at `p`.
    unsafe fn store_f16(v: Self::F, p: *mut f16);
    /// `bf16_rne` of `f32` bits: the 16-bit results in the low half of each lane.
    unsafe fn rne(b: Self::I) -> Self::I;
    /// `bf16_stochastic` of `f32` bits with 16 random bits `r` in the low half of each lane.
    unsafe fn stochastic(b: Self::I, r: Self::I) -> Self::I;
    /// Writes the low 16 bits of each lane (each ≤ 0xffff) as `LANES` `bf16` at `p`.
    unsafe fn store_bf16(x: Self::I, p: *mut bf16);
    /// Writes `v` rounded to nearest even (`bf16_rne`) as `LANES` `bf16` at `p`.
    #[inline(always)]
    unsafe fn store_bf16_rne(v: Self::F, p: *mut bf16) {
        Self::store_bf16(Self::rne(Self::bits(v)), p)
    }
    /// `hash32((first + lane) ^ key)` in each lane (`first + lane` wrapping).
    unsafe fn hash_index(first: u32, key: u32) -> Self::I;
    /// The low (`high == false`) or high 16 bits of each lane, in its low half.
    unsafe fn half(x: Self::I, high: bool) -> Self::I;
    /// Integer lanes from `LANES` words at `p` (the tests).
    #[cfg(test)]
    unsafe fn load_words(p: *const u32) -> Self::I;
    /// Integer lanes to `LANES` words at `p` (the tests).
    #[cfg(test)]
    unsafe fn store_words(x: Self::I, p: *mut u32);
}

/// AVX2 (with F16C): 8 lanes.
#[derive(Clone, Copy)]
struct Avx2;

impl Isa for Avx2 {
    type F = Avx2F32;
    type I = __m256i;
    #[inline(always)]
    unsafe fn bits(v: Avx2F32) -> __m256i {
        _mm256_castps_si256(v.0)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> Avx2F32 {
        // bf16 is the high half of an f32: zero-extend, shift into place (exact).
        let h = _mm_loadu_si128(p as *const __m128i);
        Avx2F32(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(
            _mm256_cvtepu16_epi32(h),
        )))
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> Avx2F32 {
        Avx2F32(_mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)))
    }
    #[inline(always)]
    unsafe fn store_f16(v: Avx2F32, p: *mut f16) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v.0);
        _mm_storeu_si128(p as *mut __m128i, h)
    }
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
    /// The same results as the scalar function with fewer operations. A finite `b` or ±∞
    /// plus `r` never wraps, so one unsigned minimum does the scalar function's overflow
    /// test: the cap `b | 0x7f7f_ffff` is the largest finite magnitude with `b`'s sign for a
    /// finite `b` (a sum that reaches the ∞ exponent becomes the truncated `0x7f7f`, which is
    /// what truncating such a `b` gives), and for ±∞ the cap is above any sum (±∞ stays ±∞).
    /// A NaN takes the quiet bit and is truncated, as in `bf16_rne`.
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
    #[inline(always)]
    unsafe fn store_bf16(x: __m256i, p: *mut bf16) {
        // packus works within 128-bit halves: [x0..x3 x0..x3 | x4..x7 x4..x7]; qwords 0, 2.
        let packed = _mm256_permute4x64_epi64::<0b10_00>(_mm256_packus_epi32(x, x));
        _mm_storeu_si128(p as *mut __m128i, _mm256_castsi256_si128(packed))
    }
    #[inline(always)]
    unsafe fn hash_index(first: u32, key: u32) -> __m256i {
        let idx = _mm256_add_epi32(
            _mm256_set1_epi32(first as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        // `hash32` of the mixed module (two 32-bit multiplies).
        let mut x = _mm256_xor_si256(idx, _mm256_set1_epi32(key as i32));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb_352d));
        x = _mm256_xor_si256(x, _mm256_srli_epi32::<15>(x));
        x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x846c_a68bu32 as i32));
        _mm256_xor_si256(x, _mm256_srli_epi32::<16>(x))
    }
    #[inline(always)]
    unsafe fn half(x: __m256i, high: bool) -> __m256i {
        if high {
            _mm256_srli_epi32::<16>(x)
        } else {
            _mm256_and_si256(x, _mm256_set1_epi32(0xffff))
        }
    }
    #[cfg(test)]
    unsafe fn load_words(p: *const u32) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }
    #[cfg(test)]
    unsafe fn store_words(x: __m256i, p: *mut u32) {
        _mm256_storeu_si256(p as *mut __m256i, x)
    }
}

/// AVX-512F: 16 lanes, the same operations as [`Avx2`] (masks instead of blends; `vpmovdw`
/// narrows). With AVX-512 BF16 the parameter is rounded by `vcvtneps2bf16`, which is
/// `bf16_rne` for every input but subnormals (it flushes them to zero, where `bf16_rne` keeps
/// them) and does not read MXCSR: a vector holding a subnormal (two integer mask tests) takes
/// the integer rounding instead, so the bits stay every other path's whatever MXCSR's DAZ and
/// FTZ say (the unit tests run under each).
#[cfg(vsgd_avx512)]
#[clippy::msrv = "1.89"]
mod avx512 {
    use super::*;
    use crate::kernels::x86::Avx512F32;

    /// AVX-512F: 16 lanes; `BF16`: AVX-512 BF16 present too.
    #[derive(Clone, Copy)]
    pub(super) struct Avx512<const BF16: bool>;

    /// The lanes of `b` (`f32` bits) that are NaN, by an integer compare: a floating-point
    /// compare would raise MXCSR's flags, which the scalar functions never do.
    #[inline(always)]
    unsafe fn nan_mask(b: __m512i) -> __mmask16 {
        let abs = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
        _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000))
    }

    impl<const BF16: bool> Isa for Avx512<BF16> {
        type F = Avx512F32;
        type I = __m512i;
        #[inline(always)]
        unsafe fn bits(v: Avx512F32) -> __m512i {
            _mm512_castps_si512(v.0)
        }
        #[inline(always)]
        unsafe fn load_bf16(p: *const bf16) -> Avx512F32 {
            let h = _mm256_loadu_si256(p as *const __m256i);
            Avx512F32(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(
                _mm512_cvtepu16_epi32(h),
            )))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const f16) -> Avx512F32 {
            Avx512F32(_mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)))
        }
        #[inline(always)]
        unsafe fn store_f16(v: Avx512F32, p: *mut f16) {
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v.0);
            _mm256_storeu_si256(p as *mut __m256i, h)
        }
        #[inline(always)]
        unsafe fn rne(b: __m512i) -> __m512i {
            // A NaN (one unordered compare, into a mask) takes the quiet bit and is truncated.
            let t = _mm512_srli_epi32::<16>(b);
            let lsb = _mm512_and_si512(t, _mm512_set1_epi32(1));
            let biased = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb);
            let nan = nan_mask(b);
            _mm512_mask_or_epi32(
                _mm512_srli_epi32::<16>(biased),
                nan,
                t,
                _mm512_set1_epi32(0x0040),
            )
        }
        /// As [`Avx2::stochastic`], the NaN lanes by a masked `or`.
        #[inline(always)]
        unsafe fn stochastic(b: __m512i, r: __m512i) -> __m512i {
            let capped = _mm512_min_epu32(
                _mm512_add_epi32(b, r),
                _mm512_or_si512(b, _mm512_set1_epi32(0x7f7f_ffff)),
            );
            let nan = nan_mask(b);
            let x = _mm512_mask_or_epi32(capped, nan, b, _mm512_set1_epi32(0x0040_0000));
            _mm512_srli_epi32::<16>(x)
        }
        #[inline(always)]
        unsafe fn store_bf16(x: __m512i, p: *mut bf16) {
            _mm256_storeu_si256(p as *mut __m256i, _mm512_cvtepi32_epi16(x))
        }
        #[inline(always)]
        unsafe fn store_bf16_rne(v: Avx512F32, p: *mut bf16) {
            let b = Self::bits(v);
            if BF16 {
                // Subnormal lanes (exponent 0, mantissa not 0), found with integer tests: the
                // floating-point class test (`vfpclassps`) takes subnormals for zeros when
                // MXCSR's DAZ is set, and the instruction would then flush them.
                let exp0 = _mm512_testn_epi32_mask(b, _mm512_set1_epi32(0x7f80_0000));
                let mant = _mm512_set1_epi32(0x007f_ffff);
                if _mm512_mask_test_epi32_mask(exp0, b, mant) == 0 {
                    let h: __m256i = core::mem::transmute(_mm512_cvtneps_pbh(v.0));
                    return _mm256_storeu_si256(p as *mut __m256i, h);
                }
            }
            Self::store_bf16(Self::rne(b), p)
        }
        #[inline(always)]
        unsafe fn hash_index(first: u32, key: u32) -> __m512i {
            let idx = _mm512_add_epi32(
                _mm512_set1_epi32(first as i32),
                _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            );
            let mut x = _mm512_xor_si512(idx, _mm512_set1_epi32(key as i32));
            x = _mm512_xor_si512(x, _mm512_srli_epi32::<16>(x));
            x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb_352d));
            x = _mm512_xor_si512(x, _mm512_srli_epi32::<15>(x));
            x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x846c_a68bu32 as i32));
            _mm512_xor_si512(x, _mm512_srli_epi32::<16>(x))
        }
        #[inline(always)]
        unsafe fn half(x: __m512i, high: bool) -> __m512i {
            if high {
                _mm512_srli_epi32::<16>(x)
            } else {
                _mm512_and_si512(x, _mm512_set1_epi32(0xffff))
            }
        }
        #[cfg(test)]
        unsafe fn load_words(p: *const u32) -> __m512i {
            _mm512_loadu_si512(p as *const _)
        }
        #[cfg(test)]
        unsafe fn store_words(x: __m512i, p: *mut u32) {
            _mm512_storeu_si512(p as *mut _, x)
        }
    }

    /// The fused loop compiled with AVX-512F.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f,avx2,f16c")]
    pub(super) unsafe fn entry<P: Param, S: State>(
        s: &Scalars<f32>,
        param: &mut [P],
        grad: &[P],
        state: &mut [&mut [S::Elem]],
        storage: S,
    ) {
        super::visit::<Avx512<false>, P, S>(s, param, grad, state, storage)
    }

    /// The fused loop compiled with AVX-512F and BF16.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512 BF16.
    #[target_feature(enable = "avx512f,avx512bf16,avx2,f16c")]
    pub(super) unsafe fn entry_bf16<P: Param, S: State>(
        s: &Scalars<f32>,
        param: &mut [P],
        grad: &[P],
        state: &mut [&mut [S::Elem]],
        storage: S,
    ) {
        super::visit::<Avx512<true>, P, S>(s, param, grad, state, storage)
    }
}

/// How a stored array is read as `f32` lanes.
trait Lanes: Copy {
    /// `f32` lanes of the `A::F::LANES` elements at `p`.
    unsafe fn load<A: Isa>(p: *const Self) -> A::F;
}

/// Parameters: written back rounded to nearest even.
trait Param: Lanes {
    /// Writes `v` rounded to this type to `p`.
    unsafe fn store<A: Isa>(v: A::F, p: *mut Self);
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load<A: Isa>(p: *const f32) -> A::F {
        A::F::load(p)
    }
}

impl Param for f32 {
    #[inline(always)]
    unsafe fn store<A: Isa>(v: A::F, p: *mut f32) {
        v.store(p)
    }
}

impl Lanes for bf16 {
    #[inline(always)]
    unsafe fn load<A: Isa>(p: *const bf16) -> A::F {
        A::load_bf16(p)
    }
}

impl Param for bf16 {
    #[inline(always)]
    unsafe fn store<A: Isa>(v: A::F, p: *mut bf16) {
        A::store_bf16_rne(v, p)
    }
}

impl Lanes for f16 {
    #[inline(always)]
    unsafe fn load<A: Isa>(p: *const f16) -> A::F {
        A::load_f16(p)
    }
}

impl Param for f16 {
    #[inline(always)]
    unsafe fn store<A: Isa>(v: A::F, p: *mut f16) {
        A::store_f16(v, p)
    }
}

/// How the state arrays are stored, in lanes.
trait State: Copy {
    type Elem: Lanes;
    /// Writes the `K` new state vectors of the elements `i ..` (`i` counted from the slices'
    /// start).
    unsafe fn store<A: Isa, const K: usize>(
        &self,
        v: &[A::F; K],
        dst: &[*mut Self::Elem; K],
        i: usize,
    );
}

impl State for F32State {
    type Elem = f32;
    #[inline(always)]
    unsafe fn store<A: Isa, const K: usize>(&self, v: &[A::F; K], dst: &[*mut f32; K], i: usize) {
        for (v, d) in v.iter().zip(dst) {
            v.store(d.add(i))
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
    unsafe fn store<A: Isa, const K: usize>(&self, v: &[A::F; K], dst: &[*mut bf16; K], i: usize) {
        let first = self.first.wrapping_add(i as u32);
        let mut j = 0;
        while j < K {
            let h = A::hash_index(first, self.keys[j / 2]);
            let x = A::stochastic(A::bits(v[j]), A::half(h, false));
            A::store_bf16(x, dst[j].add(i));
            if j + 1 < K {
                let y = A::stochastic(A::bits(v[j + 1]), A::half(h, true));
                A::store_bf16(y, dst[j + 1].add(i));
            }
            j += 2;
        }
    }
}

/// The fused loop over the first `n − n % LANES` elements.
///
/// # Safety
/// The instruction set of `A` present; every pointer valid for `n` elements, written ones not
/// aliased.
#[inline(always)]
unsafe fn run<A: Isa, R: Rule<K, E = f32>, const K: usize, P: Param, S: State>(
    r: &R,
    param: *mut P,
    grad: *const P,
    state: &[*mut S::Elem; K],
    storage: &S,
    n: usize,
) {
    let lanes = A::F::LANES;
    let c = r.lanes::<A::F>();
    let body = n - n % lanes;
    let mut i = 0;
    while i < body {
        prefetch(param.wrapping_add(i));
        prefetch(grad.wrapping_add(i));
        for a in state {
            prefetch(a.wrapping_add(i));
        }
        let p = P::load::<A>(param.add(i));
        let g = P::load::<A>(grad.add(i));
        let mut st: [A::F; K] =
            core::array::from_fn(|j| <S::Elem as Lanes>::load::<A>(state[j].add(i)));
        let p = r.update(&c, p, g, &mut st);
        storage.store::<A, K>(&st, state, i);
        P::store::<A>(p, param.add(i));
        i += lanes;
    }
}

/// The visitor that runs [`run`] with the algorithm's rule.
struct Fused<'a, 'b, A, P, S: State> {
    param: &'a mut [P],
    grad: &'a [P],
    state: &'a mut [&'b mut [S::Elem]],
    storage: S,
    isa: core::marker::PhantomData<A>,
}

impl<A: Isa, P: Param, S: State> RuleVisitor<f32> for Fused<'_, '_, A, P, S> {
    type Out = ();
    #[inline(always)]
    fn visit<R: Rule<K, E = f32>, const K: usize>(self, r: &R) {
        let n = self.param.len();
        assert!(self.state.len() == K && self.grad.len() >= n);
        assert!(self.state.iter().all(|a| a.len() >= n));
        let ptrs: [*mut S::Elem; K] = core::array::from_fn(|j| self.state[j].as_mut_ptr());
        // SAFETY: lengths checked above; the state arrays and `param` are distinct `&mut`
        // slices; the caller of the entry point checked the CPU.
        unsafe {
            run::<A, R, K, P, S>(
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

/// Runs the fused loop of `A` with `s`'s rule (inlined into each entry point).
#[inline(always)]
fn visit<A: Isa, P: Param, S: State>(
    s: &Scalars<f32>,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [S::Elem]],
    storage: S,
) {
    s.visit(Fused::<A, P, S> {
        param,
        grad,
        state,
        storage,
        isa: core::marker::PhantomData,
    })
}

/// The fused loop compiled with AVX2 and F16C.
///
/// # Safety
/// The CPU has AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
unsafe fn entry_avx2<P: Param, S: State>(
    s: &Scalars<f32>,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [S::Elem]],
    storage: S,
) {
    visit::<Avx2, P, S>(s, param, grad, state, storage)
}

/// The entry points of this build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    Avx2,
    #[cfg(vsgd_avx512)]
    Avx512,
    #[cfg(vsgd_avx512)]
    Avx512Bf16,
}

impl Width {
    /// The widest this CPU and the active kernel path allow, if any.
    fn select() -> Option<Width> {
        use super::KernelPath;
        let path = KernelPath::active();
        #[cfg(vsgd_avx512)]
        if path == KernelPath::Avx512 && std::is_x86_feature_detected!("avx512f") {
            let bf16 = std::is_x86_feature_detected!("avx512bf16");
            return Some(if bf16 {
                Width::Avx512Bf16
            } else {
                Width::Avx512
            });
        }
        (matches!(path, KernelPath::Avx2 | KernelPath::Avx512)
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("f16c"))
        .then_some(Width::Avx2)
    }

    /// Lanes per vector.
    fn lanes(self) -> usize {
        match self {
            Width::Avx2 => 8,
            #[cfg(vsgd_avx512)]
            Width::Avx512 | Width::Avx512Bf16 => 16,
        }
    }

    /// Runs the fused loop.
    ///
    /// # Safety
    /// `self` came from [`Width::select`].
    unsafe fn entry<P: Param, S: State>(
        self,
        s: &Scalars<f32>,
        param: &mut [P],
        grad: &[P],
        state: &mut [&mut [S::Elem]],
        storage: S,
    ) {
        match self {
            Width::Avx2 => entry_avx2::<P, S>(s, param, grad, state, storage),
            #[cfg(vsgd_avx512)]
            Width::Avx512 => avx512::entry::<P, S>(s, param, grad, state, storage),
            #[cfg(vsgd_avx512)]
            Width::Avx512Bf16 => avx512::entry_bf16::<P, S>(s, param, grad, state, storage),
        }
    }
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
/// F16C present, the active kernel path AVX2 or AVX-512; 16 lanes when that path is AVX-512),
/// and returns how many elements it did (a multiple of the lanes, from the start); the caller
/// does the rest with the chunked path.
pub(super) fn apply<P: Storage, S: StateStorage>(
    s: &Scalars<f32>,
    t: u64,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [S::Elem]],
    storage: &S,
) -> usize {
    let Some(width) = Width::select() else {
        return 0;
    };
    let n = param.len();
    let body = n - n % width.lanes();
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
    // checked by `Width::select`.
    let done = unsafe {
        if s_ty == TypeId::of::<F32State>() {
            by_param(width, s, param, grad, cast(state), F32State)
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
            by_param(width, s, param, grad, cast(state), lanes)
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

/// [`Width::entry`] with `P` as the storage type it is (`f32`, `bf16` or `f16`); `false` for
/// any other.
///
/// # Safety
/// `width` came from [`Width::select`].
unsafe fn by_param<P: 'static, T: State>(
    width: Width,
    s: &Scalars<f32>,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [T::Elem]],
    storage: T,
) -> bool {
    let p = TypeId::of::<P>();
    // SAFETY (every cast): `P` is the type whose id matched.
    if p == TypeId::of::<f32>() {
        width.entry::<f32, T>(s, cast(param), cast_ref(grad), state, storage)
    } else if p == TypeId::of::<bf16>() {
        width.entry::<bf16, T>(s, cast(param), cast_ref(grad), state, storage)
    } else if p == TypeId::of::<f16>() {
        width.entry::<f16, T>(s, cast(param), cast_ref(grad), state, storage)
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

    /// The lane conversions of `A` against the scalar functions, on every exponent and sign
    /// with many mantissas (all specials included), `LANES` at a time with varied random bits.
    ///
    /// # Safety
    /// The CPU has `A`'s instruction set.
    unsafe fn lanes_round_as_the_scalar_functions<A: Isa>() {
        let lanes = A::F::LANES;
        let mut state = 0x1234_5678u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut checked = 0u64;
        let (mut bits, mut rs, mut ne, mut sr) = ([0u32; 16], [0u32; 16], [0u32; 16], [0u32; 16]);
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
                for j in 0..lanes {
                    // Lane 0: `b`; the others: `b`'s class with other low bits, and in some
                    // vectors a signed zero or a subnormal among them (mixed vectors).
                    let sign = next() & 0x8000_0000;
                    bits[j] = match (j, m % 4) {
                        (0, _) => b,
                        (1, 1) => sign,
                        (2, 2) => sign | (next() & 0x7f_ffff).max(1),
                        _ => (b & !0xffff) | (next() & 0xffff),
                    };
                    rs[j] = match j {
                        0 => 0,
                        1 => 0xffff,
                        _ => next() & 0xffff,
                    };
                }
                let v = A::load_words(bits.as_ptr());
                let r = A::load_words(rs.as_ptr());
                A::store_words(A::rne(v), ne.as_mut_ptr());
                A::store_words(A::stochastic(v, r), sr.as_mut_ptr());
                let mut stored = [bf16::ZERO; 16];
                A::store_bf16_rne(A::F::load(bits.as_ptr() as *const f32), stored.as_mut_ptr());
                for j in 0..lanes {
                    let x = f32::from_bits(bits[j]);
                    assert_eq!(ne[j], u32::from(bf16_rne(x)), "rne {:#x}", bits[j]);
                    let stored = stored[j].to_bits();
                    assert_eq!(stored, bf16_rne(x), "stored rne {:#x}", bits[j]);
                    let want = u32::from(bf16_stochastic(x, rs[j] as u16));
                    assert_eq!(sr[j], want, "sr {:#x} r {:#x}", bits[j], rs[j]);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 512 * 256 * lanes as u64);
    }

    /// MXCSR's denormals-are-zero and flush-to-zero bits.
    const DAZ: u32 = 0x0040;
    const FTZ: u32 = 0x8000;

    /// Runs `f` with `bits` set in this thread's MXCSR, then restores it.
    fn with_mxcsr(bits: u32, f: impl FnOnce()) {
        let mut old = 0u32;
        // SAFETY: reads and writes this thread's MXCSR only (SSE is part of x86-64); the
        // old value is restored before returning (the test panics only after that).
        let result = unsafe {
            core::arch::asm!("stmxcsr [{}]", in(reg) &mut old as *mut u32);
            let new = old | bits;
            core::arch::asm!("ldmxcsr [{}]", in(reg) &new as *const u32);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            core::arch::asm!("ldmxcsr [{}]", in(reg) &old as *const u32);
            result
        };
        if let Err(e) = result {
            std::panic::resume_unwind(e)
        }
    }

    /// The lane conversions of `A` under each MXCSR setting a host program may choose.
    ///
    /// # Safety
    /// The CPU has `A`'s instruction set.
    unsafe fn lanes_round_as_the_scalar_functions_whatever_mxcsr<A: Isa>() {
        for bits in [0, DAZ, FTZ, DAZ | FTZ] {
            // SAFETY: as this function's.
            with_mxcsr(bits, || unsafe {
                lanes_round_as_the_scalar_functions::<A>()
            });
        }
    }

    #[test]
    fn avx2_lanes_round_as_the_scalar_functions() {
        if !std::is_x86_feature_detected!("avx2") {
            std::println!("skipped: no AVX2 on this CPU");
            return;
        }
        // SAFETY: AVX2 checked above.
        unsafe { lanes_round_as_the_scalar_functions_whatever_mxcsr::<Avx2>() }
    }

    #[cfg(vsgd_avx512)]
    #[test]
    fn avx512_lanes_round_as_the_scalar_functions() {
        if !std::is_x86_feature_detected!("avx512f") {
            std::println!("skipped: no AVX-512F on this CPU");
            return;
        }
        // SAFETY: AVX-512F checked above.
        unsafe { lanes_round_as_the_scalar_functions_whatever_mxcsr::<avx512::Avx512<false>>() }
    }

    #[cfg(vsgd_avx512)]
    #[test]
    fn avx512_bf16_lanes_round_as_the_scalar_functions() {
        if !(std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bf16"))
        {
            std::println!("skipped: no AVX-512F and AVX-512 BF16 on this CPU");
            return;
        }
        // SAFETY: AVX-512F and BF16 checked above.
        unsafe { lanes_round_as_the_scalar_functions_whatever_mxcsr::<avx512::Avx512<true>>() }
    }
}
