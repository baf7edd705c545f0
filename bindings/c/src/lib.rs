//! # vsgd-ffi: the C ABI of vsgd
//!
//! A thin layer over the core crate: no algorithm code lives here. It builds `libvsgd.so` and
//! `libvsgd.a`; `include/vsgd.h` is generated from this crate by a pinned cbindgen
//! (`tests/header.rs` fails when the committed header is stale). Everything below is written
//! for the C reader: the doc comments become the header's comments.
//!
//! Rules every export follows (rustls-ffi's discipline):
//! - every name carries the prefix `vsgd_` / `VSGD_`;
//! - every fallible export returns a `vsgd_result`; a panic is caught and becomes
//!   `VSGD_RESULT_PANIC`, it never unwinds into C;
//! - NULL pointers, misaligned or overlapping buffers, unknown enum values and non-UTF-8
//!   strings are reported, never dereferenced or trusted;
//! - enum-like inputs are plain `uint32_t` typedefs, so no value a C caller can pass is
//!   undefined behaviour on the Rust side.
#![allow(non_camel_case_types)]
#![warn(missing_docs)]

// Every export turns a panic into VSGD_RESULT_PANIC with `catch_unwind`, which does nothing
// under `panic = "abort"`: refuse to build a library whose promise would silently not hold.
#[cfg(panic = "abort")]
compile_error!("vsgd-ffi must be built with panic = \"unwind\" (its exports catch panics)");

mod buffers;
mod checkpoint;
mod config;
mod cuda;
mod error;
mod optimizer;
mod stateless;
mod step;
mod step_any;
mod tensors;

pub use checkpoint::*;
pub use config::*;
pub use cuda::*;
pub use error::*;
pub use optimizer::*;
pub use stateless::*;
pub use step::*;
pub use step_any::*;
pub use tensors::*;

use core::ffi::c_char;

/// Version of the C ABI (function signatures, struct layouts, result numbers). It changes only
/// when a change could break a program compiled against an older header; the shared library's
/// SONAME is `libvsgd.so.<VSGD_ABI_VERSION>`. Compare with `vsgd_abi_version()` at run time.
///
/// ABI 2 is the first stable ABI (the C ABI "1.0"): configurations and schedules are opaque
/// and set by name, output structs carry `struct_size`, so it grows by additions only (new
/// functions, result codes, enum values, hyperparameter names, appended struct fields; see
/// docs/abi.md). ABI 1 was the preview shape it replaces.
pub const VSGD_ABI_VERSION: u32 = 2;

/// The library's version ("MAJOR.MINOR.PATCH", the crate version), as a static NUL-terminated
/// string. Equals `VSGD_VERSION_STRING` of the header the library was built with. Never free it.
#[no_mangle]
pub extern "C" fn vsgd_version() -> *const c_char {
    static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The C ABI version the library implements (`VSGD_ABI_VERSION` of its header). A program
/// should refuse to run when this differs from the `VSGD_ABI_VERSION` it was compiled with.
#[no_mangle]
pub extern "C" fn vsgd_abi_version() -> u32 {
    VSGD_ABI_VERSION
}

// Checkpoints (`src/checkpoint.rs`): `vsgd_optimizer_save/_load/_restore` over caller
// buffers and `_save_file/_load_file/_restore_file` over paths, forwarding to
// `vsgd::checkpoint`; their failures have `vsgd_result` numbers from 200 on (see `error.rs`).

#[cfg(test)]
mod tests {
    use super::*;
    use core::ffi::CStr;

    #[test]
    fn version_matches_the_crate_and_build_script() {
        // SAFETY: vsgd_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(vsgd_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(vsgd_abi_version(), VSGD_ABI_VERSION);
        // build.rs sets the SONAME from its own copy of the number.
        assert_eq!(env!("VSGD_ABI_VERSION"), VSGD_ABI_VERSION.to_string());
    }
}
