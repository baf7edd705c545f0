//! Mixed precision: parameters and gradients stored as `bf16` or `f16` (the common GPU
//! recipe) with `f32` optimizer state, and optionally the state itself stored as `bf16` with
//! stochastic rounding.
//!
//! The update is always the `f32` rule of the kernels (`simd`), unchanged: elements are widened to
//! `f32` (exactly), stepped by the same kernel as an `f32` tensor (any path, same bits), and the
//! new parameter is rounded to its storage type **once**, round-to-nearest-even:
//!
//! ```text
//! θ ← RNE_P( rule_f32( widen(θ), widen(ĝ), state ) )
//! ```
//!
//! With `bf16` state ([`Bf16Sr`]), each state array is widened the same way and written back
//! with stochastic rounding, `s ← SR(rule_f32(…))`, where
//!
//! ```text
//! SR(x) = ⌊x⌋_bf16 + ulp(x)   with probability (x − ⌊x⌋_bf16) / ulp(x),  else ⌊x⌋_bf16
//! ```
//!
//! (⌊·⌋ toward zero), so `E[SR(x)] = x`: small updates to a slowly moving average are not
//! lost, as they are with round-to-nearest. The random bits come from a counter-based
//! generator keyed by `(seed, t, state array, element index)`, with the index counted from the
//! start of the whole tensor ([`Bf16Sr::offset`] for a shard), so a resumed run, any thread
//! split and any sharding give the same bits.
//!
//! On x86-64 with AVX2 or AVX-512F the whole vectors go through one fused loop (widen, rule,
//! narrow in registers, 8 or 16 lanes; `mixed_x86.rs`); the rest, and every other target, through stack buffers of
//! [`CHUNK`] elements. Both give the same bits; nothing is allocated.

use half::{bf16, f16};

use super::{apply, Scalars, StepOutcome, Verdict};
use crate::config::Config;
use crate::error::Error;
use crate::kernels::NonFinitePolicy;

/// Elements converted and stepped at a time (on the stack).
pub const CHUNK: usize = 256;

/// The most state arrays a mixed-precision step handles (every algorithm has at most 3).
pub const MAX_STATES: usize = 8;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// How a parameter or gradient is stored: `f32`, [`bf16`] or [`f16`](struct@f16) (sealed). Computation is
/// always in `f32`.
pub trait Storage:
    Copy + Send + Sync + sealed::Sealed + crate::element::buffers::AsBuffer + 'static
{
    /// Lower-case name (`"f32"`, `"bf16"`, `"f16"`).
    const NAME: &'static str;
    /// The runtime tag of this type.
    const DTYPE: crate::element::DType;
    /// Widens to `f32` (exact for all three types).
    fn widen(self) -> f32;
    /// Rounds an `f32` to this type, round-to-nearest-even (overflow gives ±∞, NaN stays NaN).
    fn narrow(x: f32) -> Self;
    /// `true` unless NaN or ±∞.
    fn is_finite(self) -> bool;
    /// [`Storage::widen`] of each element of `src` into `dst` (as long as `src`).
    #[inline(always)]
    fn widen_slice(src: &[Self], dst: &mut [f32]) {
        for (d, v) in dst.iter_mut().zip(src) {
            *d = v.widen();
        }
    }
    /// [`Storage::narrow`] of each element of `src` into `dst` (as long as `src`).
    #[inline(always)]
    fn narrow_slice(src: &[f32], dst: &mut [Self]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = Self::narrow(v);
        }
    }
}

impl Storage for f32 {
    const NAME: &'static str = "f32";
    const DTYPE: crate::element::DType = crate::element::DType::F32;
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    #[inline(always)]
    fn narrow(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl Storage for bf16 {
    const NAME: &'static str = "bf16";
    const DTYPE: crate::element::DType = crate::element::DType::Bf16;
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[inline(always)]
    fn narrow(x: f32) -> Self {
        bf16::from_bits(bf16_rne(x))
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        self.to_bits() & 0x7f80 != 0x7f80
    }
    fn widen_slice(src: &[bf16], dst: &mut [f32]) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2::widen_bf16(src, dst) };
        }
        widen_loop(src, dst)
    }
    fn narrow_slice(src: &[f32], dst: &mut [bf16]) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2::narrow_bf16(src, dst) };
        }
        narrow_loop(src, dst)
    }
}

/// The loop of [`Storage::widen_slice`]: one source, compiled by [`avx2`] with wider vectors.
#[inline(always)]
fn widen_loop<P: Storage>(src: &[P], dst: &mut [f32]) {
    for (d, v) in dst.iter_mut().zip(src) {
        *d = v.widen();
    }
}

/// The loop of [`Storage::narrow_slice`] (see [`widen_loop`]).
#[inline(always)]
fn narrow_loop<P: Storage>(src: &[f32], dst: &mut [P]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = P::narrow(v);
    }
}

/// The integer loops of bfloat16 conversion and stochastic rounding compiled with AVX2 enabled,
/// so that they run 8 elements per instruction: the same source as the portable loops, integer
/// operations only, so the same bits.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod avx2 {
    use super::*;

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
        widen_loop(src, dst)
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn narrow_bf16(src: &[f32], dst: &mut [bf16]) {
        narrow_loop(src, dst)
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn round_pair(
        key2: u32,
        first: u32,
        src: &[f32],
        dst: &mut [bf16],
        second: Option<(&[f32], &mut [bf16])>,
    ) {
        super::round_pair_loop(key2, first, src, dst, second)
    }
}

impl Storage for f16 {
    const NAME: &'static str = "f16";
    const DTYPE: crate::element::DType = crate::element::DType::F16;
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn narrow(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        self.to_bits() & 0x7c00 != 0x7c00
    }
    fn widen_slice(src: &[f16], dst: &mut [f32]) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has F16C and AVX (checked just above).
            return unsafe { f16c::widen(src, dst) };
        }
        for (d, v) in dst.iter_mut().zip(src) {
            *d = v.to_f32();
        }
    }
    fn narrow_slice(src: &[f32], dst: &mut [f16]) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("f16c") && std::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has F16C and AVX (checked just above).
            return unsafe { f16c::narrow(src, dst) };
        }
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = f16::from_f32(v);
        }
    }
}

/// IEEE binary16 conversions with x86's F16C instructions, 8 at a time: `vcvtph2ps` (exact)
/// and `vcvtps2ph` with round-to-nearest-even, the same results as `half`'s software
/// conversion for every non-NaN value (NaN stays NaN). The tail goes through `half`.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod f16c {
    use core::arch::x86_64::*;
    use half::f16;

    /// # Safety
    /// The CPU must have F16C and AVX.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let body = n - n % 8;
        let mut i = 0;
        while i < body {
            // SAFETY: i + 8 ≤ n elements in both slices; unaligned loads and stores.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for (d, v) in dst[body..n].iter_mut().zip(&src[body..n]) {
            *d = v.to_f32();
        }
    }

    /// # Safety
    /// The CPU must have F16C and AVX.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn narrow(src: &[f32], dst: &mut [f16]) {
        let n = src.len().min(dst.len());
        let body = n - n % 8;
        let mut i = 0;
        while i < body {
            // SAFETY: as in `widen`.
            unsafe {
                let x = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
                _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
            }
            i += 8;
        }
        for (d, &v) in dst[body..n].iter_mut().zip(&src[body..n]) {
            *d = f16::from_f32(v);
        }
    }
}

/// `x` rounded to bfloat16, round-to-nearest-even, as bits: add `0x7fff` plus the lowest kept
/// bit and drop the low 16 bits (a carry moves into the exponent, and past the largest finite
/// value into ∞, as IEEE rounding does). NaN stays a quiet NaN with its sign.
#[inline(always)]
pub fn bf16_rne(x: f32) -> u16 {
    let b = x.to_bits();
    let nan = b & 0x7fff_ffff > 0x7f80_0000;
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    // A select, not a branch, so that loops over slices vectorize.
    if nan {
        ((b >> 16) | 0x0040) as u16
    } else {
        rounded
    }
}

/// `x` rounded to bfloat16 stochastically, as bits, given 16 random bits `r`: the magnitude
/// rounds up with probability (low 16 bits of `x`) / 2¹⁶, so the expected value is `x`
/// exactly. A finite `x` never becomes ∞ (at the top of the range it is truncated instead);
/// ±∞ and NaN are rounded as [`bf16_rne`] does.
#[inline(always)]
pub fn bf16_stochastic(x: f32, r: u16) -> u16 {
    let b = x.to_bits();
    let special = b & 0x7f80_0000 == 0x7f80_0000;
    let up = (b.wrapping_add(u32::from(r)) >> 16) as u16;
    let overflow = up & 0x7f80 == 0x7f80;
    // Selects, not branches, so that loops over slices vectorize.
    let finite = if overflow { (b >> 16) as u16 } else { up };
    if special {
        bf16_rne(x)
    } else {
        finite
    }
}

/// SplitMix64's output function (Steele, Lea & Flood 2014): a bijective mix of 64 bits.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A bijective 32-bit integer hash of low bias ("lowbias32", C. Wellons 2018): two multiplies
/// in 32 bits, so a loop over elements vectorizes.
#[inline(always)]
fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The key of the stochastic rounding of one tensor's step `t`.
#[inline(always)]
pub(super) fn rounding_key(seed: u64, t: u64) -> u64 {
    mix64(seed ^ mix64(t.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// The 32-bit key of state arrays `2·pair` and `2·pair + 1` for the elements whose index has
/// the high 32 bits `hi`.
#[inline(always)]
pub(super) fn pair_key(key: u64, pair: usize, hi: u32) -> u32 {
    mix64(
        key ^ (pair as u64).wrapping_mul(0xd1b5_4a32_d192_ed03)
            ^ u64::from(hi).wrapping_mul(0x8cb9_2ba7_2f3d_8dd7),
    ) as u32
}

/// The counter-based generator of stochastic rounding: the 16 random bits for element `index`
/// (counted from the start of the whole tensor) of state array `array` at step `t` of the
/// tensor seeded `seed`: the low (even `array`) or high (odd) half of
/// `hash32(index_lo ^ pair_key(seed, t, array / 2, index_hi))`. A pure function of its
/// arguments, so the bits do not depend on how the tensor is split into threads, shards or
/// calls.
pub fn rounding_bits(seed: u64, t: u64, array: usize, index: u64) -> u16 {
    let k = pair_key(rounding_key(seed, t), array / 2, (index >> 32) as u32);
    (hash32(index as u32 ^ k) >> (16 * (array % 2))) as u16
}

/// Stochastically rounds `src` into `dst` (and `src2` into `dst2`, if given) for the elements
/// `first ..` of the tensor, all of whose indices share the high 32 bits, with the bits of
/// one state-array pair (`key2` its key).
#[inline(always)]
fn round_pair_loop(
    key2: u32,
    first: u32,
    src: &[f32],
    dst: &mut [bf16],
    second: Option<(&[f32], &mut [bf16])>,
) {
    let n = dst.len();
    let src = &src[..n];
    match second {
        Some((src2, dst2)) => {
            let (src2, dst2) = (&src2[..n], &mut dst2[..n]);
            for i in 0..n {
                let h = hash32(first.wrapping_add(i as u32) ^ key2);
                dst[i] = bf16::from_bits(bf16_stochastic(src[i], h as u16));
                dst2[i] = bf16::from_bits(bf16_stochastic(src2[i], (h >> 16) as u16));
            }
        }
        None => {
            for i in 0..n {
                let h = hash32(first.wrapping_add(i as u32) ^ key2);
                dst[i] = bf16::from_bits(bf16_stochastic(src[i], h as u16));
            }
        }
    }
}

/// [`round_pair_loop`] with the widest integer vectors this CPU has.
fn round_pair(
    key2: u32,
    first: u32,
    src: &[f32],
    dst: &mut [bf16],
    second: Option<(&[f32], &mut [bf16])>,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { avx2::round_pair(key2, first, src, dst, second) };
    }
    round_pair_loop(key2, first, src, dst, second)
}

/// How optimizer state is stored in a mixed-precision step: [`F32State`] (the state is the
/// `f32` kernel's own, stepped in place) or [`Bf16Sr`] (widened, stepped, stochastically
/// rounded back).
pub trait StateStorage: Copy + Send + Sync + 'static {
    /// The element type of the state arrays.
    type Elem: Copy + Default + Send + Sync + 'static;
    /// Lower-case name (`"f32"`, `"bf16"`).
    const NAME: &'static str;
    /// The arrays as `f32` when they are `f32` (stepped in place, no copy); `None` otherwise.
    fn as_f32(x: &mut [Self::Elem]) -> Option<&mut [f32]>;
    /// Widens one element to `f32` (exact).
    fn widen(x: Self::Elem) -> f32;
    /// [`StateStorage::widen`] of each element of `src` into `dst` (as long as `src`).
    #[inline(always)]
    fn widen_slice(src: &[Self::Elem], dst: &mut [f32]) {
        for (d, v) in dst.iter_mut().zip(src) {
            *d = Self::widen(*v);
        }
    }
    /// The same storage for the part of the slices that starts `offset` elements further (a
    /// thread's or a shard's part): the random bits of stochastic rounding follow the index.
    fn at(&self, offset: u64) -> Self;
    /// Checks that a step over `len` elements from here can index them all: for stochastic
    /// rounding, [`Error::IndexOverflow`] when `offset + len` passes 2⁶⁴ (the index keying
    /// the random bits would wrap). Always fine for storage without an index.
    fn check_len(&self, len: usize) -> Result<(), Error> {
        let _ = len;
        Ok(())
    }
    /// Writes the new values `src[j][i]` into `dst[j][i]` for every state array `j`, rounded;
    /// element `i` is element `index + i` of the tensor slice given to the step, at step `t`.
    fn store(&self, t: u64, index: u64, src: &[[f32; CHUNK]], dst: &mut [&mut [Self::Elem]]);
}

/// `f32` state: the common mixed-precision recipe (12 bytes of VSGD state per parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct F32State;

impl StateStorage for F32State {
    type Elem = f32;
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn as_f32(x: &mut [f32]) -> Option<&mut [f32]> {
        Some(x)
    }
    #[inline(always)]
    fn widen(x: f32) -> f32 {
        x
    }
    fn at(&self, _: u64) -> Self {
        F32State
    }
    fn store(&self, _: u64, _: u64, src: &[[f32; CHUNK]], dst: &mut [&mut [f32]]) {
        for (d, s) in dst.iter_mut().zip(src) {
            let n = d.len();
            d.copy_from_slice(&s[..n]);
        }
    }
}

/// `bf16` state with stochastic rounding (6 bytes of VSGD state per parameter, 4 of Adam's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bf16Sr {
    /// The tensor's seed (give each tensor its own, and keep it across a resume).
    pub seed: u64,
    /// Index, within the whole tensor, of the first element of the slices given: 0 for a whole
    /// tensor, the shard's start for a shard. The random bits follow the whole-tensor index.
    pub offset: u64,
}

impl StateStorage for Bf16Sr {
    type Elem = bf16;
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn as_f32(_: &mut [bf16]) -> Option<&mut [f32]> {
        None
    }
    #[inline(always)]
    fn widen(x: bf16) -> f32 {
        Storage::widen(x)
    }
    fn widen_slice(src: &[bf16], dst: &mut [f32]) {
        <bf16 as Storage>::widen_slice(src, dst)
    }
    fn at(&self, offset: u64) -> Self {
        Bf16Sr {
            seed: self.seed,
            offset: self.offset.wrapping_add(offset),
        }
    }
    fn check_len(&self, len: usize) -> Result<(), Error> {
        // The last index, offset + len − 1, must fit in a u64.
        match (len as u64).checked_sub(1) {
            Some(last) if self.offset.checked_add(last).is_none() => Err(Error::IndexOverflow {
                offset: self.offset,
                len,
            }),
            _ => Ok(()),
        }
    }
    fn store(&self, t: u64, index: u64, src: &[[f32; CHUNK]], dst: &mut [&mut [bf16]]) {
        let key = rounding_key(self.seed, t);
        let m = dst.first().map_or(0, |d| d.len());
        let first = self.offset.wrapping_add(index);
        // Split where the high 32 bits of the index change (at most once in a chunk).
        let mut lo = 0;
        while lo < m {
            let at = first.wrapping_add(lo as u64);
            let to_boundary = (1u64 << 32) - (at & 0xffff_ffff);
            let hi = m.min(lo.saturating_add(usize::try_from(to_boundary).unwrap_or(usize::MAX)));
            let mut pairs = dst.chunks_mut(2).zip(src.chunks(2)).enumerate();
            for (pair, (d, s)) in &mut pairs {
                let key2 = pair_key(key, pair, (at >> 32) as u32);
                match d {
                    [d0, d1] => round_pair(
                        key2,
                        at as u32,
                        &s[0][lo..hi],
                        &mut d0[lo..hi],
                        Some((&s[1][lo..hi], &mut d1[lo..hi])),
                    ),
                    [d0] => round_pair(key2, at as u32, &s[0][lo..hi], &mut d0[lo..hi], None),
                    _ => {}
                }
            }
            lo = hi;
        }
    }
}

/// `true` when every element is finite (no NaN, no ±∞).
pub fn all_finite<P: Storage>(x: &[P]) -> bool {
    // Integer tests on the bits; the compiler vectorizes this loop.
    x.chunks(CHUNK)
        .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()))
}

/// Applies the per-step constants `s` (computed for `f32`) to a mixed-precision tensor: the
/// kernel behind [`step`]. `t` is the step number the constants were made for (it keys the
/// stochastic rounding of `bf16` state). Lengths must agree and `state` hold
/// [`Scalars::state_count`] arrays (at most [`MAX_STATES`]).
///
/// # Panics
/// If the lengths or the number of state arrays are wrong (a caller's bug; [`step`] checks
/// them and returns an error instead).
pub fn apply_mixed<P: Storage, S: StateStorage>(
    s: &Scalars<f32>,
    t: u64,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [S::Elem]],
    storage: &S,
) {
    let n = param.len();
    let k = state.len();
    assert!(k == s.state_count() && k <= MAX_STATES, "wrong state count");
    assert!(
        grad.len() == n && state.iter().all(|a| a.len() == n),
        "wrong lengths"
    );
    // Whole vectors in one fused loop where the CPU has one (x86-64 AVX2, AVX-512F); the
    // rest here.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    let mut start = super::mixed_x86::apply(s, t, param, grad, state, storage);
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    let mut start = 0;
    if start == n {
        return; // no stack buffers to clear when the fused loop did everything
    }
    let mut p = [0.0f32; CHUNK];
    let mut g = [0.0f32; CHUNK];
    let mut st = [[0.0f32; CHUNK]; MAX_STATES];
    while start < n {
        let end = n.min(start + CHUNK);
        let m = end - start;
        P::widen_slice(&param[start..end], &mut p[..m]);
        P::widen_slice(&grad[start..end], &mut g[..m]);
        let mut copied = false;
        {
            let mut arrays: [&mut [f32]; MAX_STATES] = Default::default();
            for ((slot, a), buf) in arrays.iter_mut().zip(state.iter_mut()).zip(st.iter_mut()) {
                let a = &mut a[start..end];
                if S::as_f32(a).is_some() {
                    *slot = S::as_f32(a).unwrap_or_default();
                } else {
                    S::widen_slice(a, &mut buf[..m]);
                    *slot = &mut buf[..m];
                    copied = true;
                }
            }
            apply(s, &mut p[..m], &g[..m], &mut arrays[..k]);
        }
        if copied {
            let mut dst: [&mut [S::Elem]; MAX_STATES] = Default::default();
            for (d, a) in dst.iter_mut().zip(state.iter_mut()) {
                *d = &mut a[start..end];
            }
            storage.store(t, start as u64, &st[..k], &mut dst[..k]);
        }
        P::narrow_slice(&p[..m], &mut param[start..end]);
        start = end;
    }
}

/// One step of one mixed-precision tensor (or of any contiguous shard of it): parameter and
/// gradient stored as `P` ([`bf16`], [`f16`](struct@f16) or `f32`), state as `S` ([`F32State`] or
/// [`Bf16Sr`]). The update is computed in `f32` by the same rule as an `f32` tensor and the
/// parameter rounded once, to nearest even (see the module's documentation).
///
/// Arguments and errors are those of [`super::step_with_verdict`]; nothing is modified when
/// an error is returned. A gradient is finite when every element of its stored type is.
///
/// ```
/// use half::bf16;
/// use vsgd::kernels::{mixed, NonFinitePolicy, Verdict};
/// use vsgd::{Algorithm, Config};
/// let config = Config::default_for(Algorithm::Adam);
/// let mut p = [bf16::from_f32(1.0), bf16::from_f32(-2.0)];
/// let g = [bf16::from_f32(0.5), bf16::from_f32(0.25)];
/// let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
/// mixed::step(&config, 1, 0.125, &mut p, &g, &mut [&mut m, &mut v], &mixed::F32State,
///             NonFinitePolicy::Skip, Verdict::Check).unwrap();
/// assert_eq!(p[0].to_f32(), 0.875); // Adam's first step moves by lr·sign(ĝ)
/// ```
#[allow(clippy::too_many_arguments)]
pub fn step<P: Storage, S: StateStorage>(
    config: &Config,
    t: u64,
    lr: f64,
    param: &mut [P],
    grad: &[P],
    state: &mut [&mut [S::Elem]],
    storage: &S,
    policy: NonFinitePolicy,
    verdict: Verdict,
) -> Result<StepOutcome, Error> {
    if state.len() > MAX_STATES {
        return Err(Error::StateCount {
            expected: MAX_STATES,
            got: state.len(),
        });
    }
    storage.check_len(param.len())?;
    let lengths = (param.len(), grad.len());
    if let Some(skipped) = super::pre_step(config, t, lr, lengths, state, policy, verdict, || {
        all_finite(grad)
    })? {
        return Ok(skipped);
    }
    let s = Scalars::<f32>::new(config, t, lr);
    apply_mixed(&s, t, param, grad, state, storage);
    Ok(StepOutcome::Applied)
}
