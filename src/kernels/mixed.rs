//! Mixed precision: parameters and gradients stored as `bf16` or `f16` (the common GPU
//! recipe) with `f32` optimizer state, and optionally the state itself stored as `bf16` with
//! stochastic rounding.
//!
//! The update is always the `f32` rule of [`super::simd`], unchanged: elements are widened to
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
//! Work goes through stack buffers of [`CHUNK`] elements: nothing is allocated.

use half::{bf16, f16};

use super::{apply, check_lr, Scalars, StepOutcome, Verdict};
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

/// How a parameter or gradient is stored: `f32`, [`bf16`] or [`f16`] (sealed). Computation is
/// always in `f32`.
pub trait Storage: Copy + Send + Sync + sealed::Sealed + 'static {
    /// Lower-case name (`"f32"`, `"bf16"`, `"f16"`).
    const NAME: &'static str;
    /// Widens to `f32` (exact for all three types).
    fn widen(self) -> f32;
    /// Rounds an `f32` to this type, round-to-nearest-even (overflow gives ±∞, NaN stays NaN).
    fn narrow(x: f32) -> Self;
    /// `true` unless NaN or ±∞.
    fn is_finite(self) -> bool;
}

impl Storage for f32 {
    const NAME: &'static str = "f32";
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
}

impl Storage for f16 {
    const NAME: &'static str = "f16";
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
}

/// `x` rounded to bfloat16, round-to-nearest-even, as bits: add `0x7fff` plus the lowest kept
/// bit and drop the low 16 bits (a carry moves into the exponent, and past the largest finite
/// value into ∞, as IEEE rounding does). NaN stays a quiet NaN with its sign.
#[inline(always)]
pub fn bf16_rne(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x0040) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to bfloat16 stochastically, as bits, given 16 random bits `r`: the magnitude
/// rounds up with probability (low 16 bits of `x`) / 2¹⁶, so the expected value is `x`
/// exactly. A finite `x` never becomes ∞ (at the top of the range it is truncated instead);
/// ±∞ and NaN are rounded as [`bf16_rne`] does.
#[inline(always)]
pub fn bf16_stochastic(x: f32, r: u16) -> u16 {
    let b = x.to_bits();
    if b & 0x7f80_0000 == 0x7f80_0000 {
        return bf16_rne(x);
    }
    let up = ((b + u32::from(r)) >> 16) as u16;
    if up & 0x7f80 == 0x7f80 {
        (b >> 16) as u16
    } else {
        up
    }
}

/// SplitMix64's output function (Steele, Lea & Flood 2014): a bijective mix of 64 bits.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The key of the stochastic rounding of one tensor's step `t`.
#[inline(always)]
fn rounding_key(seed: u64, t: u64) -> u64 {
    mix64(seed ^ mix64(t.wrapping_add(GOLDEN)))
}

/// 64 random bits for element `index` and state arrays `4·quad … 4·quad + 3` under `key`.
#[inline(always)]
fn rounding_word(key: u64, quad: usize, index: u64) -> u64 {
    mix64(
        key.wrapping_add((quad as u64).wrapping_mul(0xd1b5_4a32_d192_ed03))
            .wrapping_add(index.wrapping_mul(GOLDEN)),
    )
}

/// The counter-based generator of stochastic rounding: the 16 random bits for element `index`
/// (counted from the start of the whole tensor) of state array `array` at step `t` of the
/// tensor seeded `seed`. A pure function of its arguments (SplitMix64 over a counter), so the
/// bits do not depend on how the tensor is split into threads, shards or calls.
pub fn rounding_bits(seed: u64, t: u64, array: usize, index: u64) -> u16 {
    let word = rounding_word(rounding_key(seed, t), array / 4, index);
    (word >> (16 * (array % 4))) as u16
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
    fn store(&self, t: u64, index: u64, src: &[[f32; CHUNK]], dst: &mut [&mut [bf16]]) {
        let key = rounding_key(self.seed, t);
        let first = self.offset.wrapping_add(index);
        let m = dst.first().map_or(0, |d| d.len());
        for i in 0..m {
            let at = first.wrapping_add(i as u64);
            let mut word = 0;
            for (j, (d, s)) in dst.iter_mut().zip(src).enumerate() {
                if j % 4 == 0 {
                    word = rounding_word(key, j / 4, at);
                }
                let r = (word >> (16 * (j % 4))) as u16;
                d[i] = bf16::from_bits(bf16_stochastic(s[i], r));
            }
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
    let mut p = [0.0f32; CHUNK];
    let mut g = [0.0f32; CHUNK];
    let mut st = [[0.0f32; CHUNK]; MAX_STATES];
    let mut start = 0;
    while start < n {
        let end = n.min(start + CHUNK);
        let m = end - start;
        for (d, v) in p.iter_mut().zip(&param[start..end]) {
            *d = v.widen();
        }
        for (d, v) in g.iter_mut().zip(&grad[start..end]) {
            *d = v.widen();
        }
        let mut copied = false;
        {
            let mut arrays: [&mut [f32]; MAX_STATES] = Default::default();
            for ((slot, a), buf) in arrays.iter_mut().zip(state.iter_mut()).zip(st.iter_mut()) {
                let a = &mut a[start..end];
                if S::as_f32(a).is_some() {
                    *slot = S::as_f32(a).unwrap_or_default();
                } else {
                    for (d, v) in buf.iter_mut().zip(a.iter()) {
                        *d = S::widen(*v);
                    }
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
        for (d, &v) in param[start..end].iter_mut().zip(p.iter()) {
            *d = P::narrow(v);
        }
        start = end;
    }
}

/// One step of one mixed-precision tensor (or of any contiguous shard of it): parameter and
/// gradient stored as `P` ([`bf16`], [`f16`] or `f32`), state as `S` ([`F32State`] or
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
    config.validate_runtime()?;
    check_lr(config, lr)?;
    if t == 0 {
        return Err(Error::InvalidStep { step: t });
    }
    super::check_lengths_of(config.algorithm(), param.len(), grad.len(), state)?;
    if state.len() > MAX_STATES {
        return Err(Error::StateCount {
            expected: MAX_STATES,
            got: state.len(),
        });
    }
    let finite = || match verdict {
        Verdict::Check => all_finite(grad),
        Verdict::Finite => true,
        Verdict::NotFinite => false,
    };
    if policy != NonFinitePolicy::Propagate && !finite() {
        return match policy {
            NonFinitePolicy::Error => Err(Error::NonFiniteGradient { tensor: 0 }),
            _ => Ok(StepOutcome::Skipped),
        };
    }
    let s = Scalars::<f32>::new(config, t, lr);
    apply_mixed(&s, t, param, grad, state, storage);
    Ok(StepOutcome::Applied)
}
