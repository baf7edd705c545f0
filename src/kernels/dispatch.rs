//! Which kernel path runs: the fastest this CPU has (detected once at run time on x86, fixed
//! at compile time elsewhere), unless `VSGD_KERNEL` names another (std builds only).

use core::any::TypeId;
use core::sync::atomic::{AtomicU8, Ordering};

use super::{portable, Scalars};
use crate::element::Element;

/// An implementation of the kernels. All of them give the same bits (NaN payloads aside, which
/// Rust leaves unspecified even for scalar code); they differ only in speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum KernelPath {
    /// One element at a time ([`super::portable`]): the reference, on every target.
    Portable = 1,
    /// x86 SSE2: 4 × f32 or 2 × f64 per instruction (always present on x86-64).
    Sse2 = 2,
    /// x86 AVX2: 8 × f32 or 4 × f64 (detected at run time).
    Avx2 = 3,
    /// x86 AVX-512F: 16 × f32 or 8 × f64 (detected at run time; built with Rust ≥ 1.89).
    Avx512 = 4,
    /// AArch64 NEON: 4 × f32 or 2 × f64 (every AArch64 target).
    Neon = 5,
    /// WebAssembly simd128: 4 × f32 or 2 × f64 (built with `-C target-feature=+simd128`).
    Simd128 = 6,
}

impl KernelPath {
    /// Every path, slowest first.
    pub const ALL: [KernelPath; 6] = [
        KernelPath::Portable,
        KernelPath::Sse2,
        KernelPath::Avx2,
        KernelPath::Avx512,
        KernelPath::Neon,
        KernelPath::Simd128,
    ];

    /// Lower-case name (`"portable"`, `"sse2"`, `"avx2"`, `"avx512"`, `"neon"`, `"simd128"`),
    /// as `VSGD_KERNEL` and `vsgd bench` take it.
    pub const fn name(self) -> &'static str {
        match self {
            KernelPath::Portable => "portable",
            KernelPath::Sse2 => "sse2",
            KernelPath::Avx2 => "avx2",
            KernelPath::Avx512 => "avx512",
            KernelPath::Neon => "neon",
            KernelPath::Simd128 => "simd128",
        }
    }

    /// Parses a name written by [`KernelPath::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        KernelPath::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether this build contains the path (target architecture, compiler version and
    /// compile-time target features permitting).
    pub const fn is_compiled(self) -> bool {
        match self {
            KernelPath::Portable => true,
            KernelPath::Sse2 | KernelPath::Avx2 => {
                cfg!(any(target_arch = "x86", target_arch = "x86_64"))
            }
            KernelPath::Avx512 => {
                cfg!(all(
                    any(target_arch = "x86", target_arch = "x86_64"),
                    vsgd_avx512
                ))
            }
            KernelPath::Neon => cfg!(all(target_arch = "aarch64", target_feature = "neon")),
            KernelPath::Simd128 => cfg!(all(target_arch = "wasm32", target_feature = "simd128")),
        }
    }

    /// Whether the path is compiled in and this CPU can run it.
    pub fn is_available(self) -> bool {
        self.is_compiled() && cpu_has(self)
    }

    /// The fastest available path.
    pub fn best() -> Self {
        let mut best = KernelPath::Portable;
        for p in KernelPath::ALL {
            if p.is_available() {
                best = p;
            }
        }
        best
    }

    /// The path [`super::apply`] and [`super::all_finite`] use: [`KernelPath::best`], or, in
    /// std builds, the path named by the environment variable `VSGD_KERNEL` if it is available
    /// (read once per process; for tests and benchmarks). An unknown or unavailable name is
    /// ignored; [`KernelPath::requested`] tells what was asked for.
    pub fn active() -> Self {
        static ACTIVE: AtomicU8 = AtomicU8::new(0);
        let cached = ACTIVE.load(Ordering::Relaxed);
        if let Some(p) = KernelPath::ALL.into_iter().find(|p| *p as u8 == cached) {
            return p;
        }
        let chosen = match KernelPath::requested() {
            Some(Ok(p)) if p.is_available() => p,
            _ => KernelPath::best(),
        };
        ACTIVE.store(chosen as u8, Ordering::Relaxed);
        chosen
    }

    /// What `VSGD_KERNEL` asks for: `None` when unset (or without std), `Some(Err(value))`
    /// when it names no path.
    #[cfg(feature = "std")]
    pub fn requested() -> Option<Result<Self, std::string::String>> {
        let v = std::env::var("VSGD_KERNEL").ok()?;
        let v = v.trim();
        if v.is_empty() {
            return None;
        }
        Some(KernelPath::from_name(v).ok_or_else(|| v.into()))
    }

    /// What `VSGD_KERNEL` asks for (always `None` without std).
    #[cfg(not(feature = "std"))]
    pub fn requested() -> Option<Result<Self, &'static str>> {
        None
    }
}

impl core::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the CPU has the instructions of a compiled path.
#[allow(unreachable_code)]
fn cpu_has(p: KernelPath) -> bool {
    match p {
        KernelPath::Portable => true,
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        KernelPath::Sse2 => {
            #[cfg(target_feature = "sse2")]
            return true;
            #[cfg(feature = "std")]
            return std::is_x86_feature_detected!("sse2");
            false
        }
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        KernelPath::Avx2 => {
            #[cfg(target_feature = "avx2")]
            return true;
            #[cfg(feature = "std")]
            return std::is_x86_feature_detected!("avx2");
            false
        }
        #[cfg(all(any(target_arch = "x86", target_arch = "x86_64"), vsgd_avx512))]
        KernelPath::Avx512 => {
            #[cfg(target_feature = "avx512f")]
            return true;
            #[cfg(feature = "std")]
            return std::is_x86_feature_detected!("avx512f");
            false
        }
        // Compile-time features: `is_compiled` already said yes or no.
        KernelPath::Neon | KernelPath::Simd128 => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// From the generic element type to the per-architecture vector types.

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub(crate) use super::x86::X86Element as SimdElement;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub(crate) use super::neon::NeonElement as SimdElement;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use super::wasm::WasmElement as SimdElement;

/// Targets without a vector path: only the portable kernels.
#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon"),
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
pub(crate) trait SimdElement: Element {}
#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon"),
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
impl<T: Element> SimdElement for T {}

/// Re-types a reference between two type parameters that are the same type.
///
/// # Safety
/// `A` and `B` must be the same type (callers compare their `TypeId`s).
#[inline(always)]
unsafe fn same<A, B>(x: &A) -> &B {
    &*(x as *const A as *const B)
}

/// [`same`] for shared slices.
///
/// # Safety
/// As for [`same`].
#[inline(always)]
unsafe fn same_slice<A, B>(x: &[A]) -> &[B] {
    core::slice::from_raw_parts(x.as_ptr() as *const B, x.len())
}

/// [`same`] for mutable slices.
///
/// # Safety
/// As for [`same`].
#[inline(always)]
unsafe fn same_slice_mut<A, B>(x: &mut [A]) -> &mut [B] {
    core::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut B, x.len())
}

/// [`super::apply`] on a given path; `false` (and nothing changed) if the path is not
/// available here.
///
/// # Panics
/// As [`super::apply`]: if `state` does not hold the algorithm's arrays or a buffer is
/// shorter than `param`.
pub fn apply_on<T: Element>(
    path: KernelPath,
    s: &Scalars<T>,
    param: &mut [T],
    grad: &[T],
    state: &mut [&mut [T]],
) -> bool {
    if !path.is_available() {
        return false;
    }
    if path != KernelPath::Portable {
        let t = TypeId::of::<T>();
        if t == TypeId::of::<f32>() {
            // SAFETY: `T` is `f32`; `&mut [T]` and `&mut [f32]` are then the same type too.
            return unsafe {
                apply_simd::<f32>(
                    path,
                    same(s),
                    same_slice_mut(param),
                    same_slice(grad),
                    same_slice_mut(state),
                )
            };
        }
        if t == TypeId::of::<f64>() {
            // SAFETY: `T` is `f64`, as above.
            return unsafe {
                apply_simd::<f64>(
                    path,
                    same(s),
                    same_slice_mut(param),
                    same_slice(grad),
                    same_slice_mut(state),
                )
            };
        }
    }
    portable::apply(s, param, grad, state);
    true
}

#[inline(always)]
#[allow(unused_variables)]
fn apply_simd<E: SimdElement>(
    path: KernelPath,
    s: &Scalars<E>,
    param: &mut [E],
    grad: &[E],
    state: &mut [&mut [E]],
) -> bool {
    // SAFETY (every arm): `apply_on` checked `path.is_available()`, i.e. this CPU has the
    // instruction set; lengths are the caller's contract, as for `portable::apply`.
    match path {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        KernelPath::Sse2 => unsafe { super::x86::apply_sse2(s, param, grad, state) },
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        KernelPath::Avx2 => unsafe { super::x86::apply_avx2(s, param, grad, state) },
        #[cfg(all(any(target_arch = "x86", target_arch = "x86_64"), vsgd_avx512))]
        KernelPath::Avx512 => unsafe { super::x86::apply_avx512(s, param, grad, state) },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        KernelPath::Neon => unsafe { super::neon::apply_neon(s, param, grad, state) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        KernelPath::Simd128 => unsafe { super::wasm::apply_simd128(s, param, grad, state) },
        _ => portable::apply(s, param, grad, state),
    }
    true
}

/// [`super::all_finite`] on a given path; `None` if the path is not available here.
pub fn all_finite_on<T: Element>(path: KernelPath, x: &[T]) -> Option<bool> {
    if !path.is_available() {
        return None;
    }
    if path != KernelPath::Portable {
        let t = TypeId::of::<T>();
        if t == TypeId::of::<f32>() {
            // SAFETY: `T` is `f32`.
            return Some(all_finite_simd::<f32>(path, unsafe { same_slice(x) }));
        }
        if t == TypeId::of::<f64>() {
            // SAFETY: `T` is `f64`.
            return Some(all_finite_simd::<f64>(path, unsafe { same_slice(x) }));
        }
    }
    Some(portable::all_finite(x))
}

#[inline(always)]
fn all_finite_simd<E: SimdElement>(path: KernelPath, x: &[E]) -> bool {
    // SAFETY (every arm): `all_finite_on` checked `path.is_available()`.
    match path {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        KernelPath::Sse2 => unsafe { super::x86::all_finite_sse2(x) },
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        KernelPath::Avx2 => unsafe { super::x86::all_finite_avx2(x) },
        #[cfg(all(any(target_arch = "x86", target_arch = "x86_64"), vsgd_avx512))]
        KernelPath::Avx512 => unsafe { super::x86::all_finite_avx512(x) },
        #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
        KernelPath::Neon => unsafe { super::neon::all_finite_neon(x) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        KernelPath::Simd128 => unsafe { super::wasm::all_finite_simd128(x) },
        _ => portable::all_finite(x),
    }
}
