//! Build script: detects what the compiler can build, nothing else.
//!
//! AVX-512 intrinsics and `#[target_feature(enable = "avx512f")]` are stable only from Rust
//! 1.89, and the crate keeps building with older compilers (see `rust-version`), so the AVX-512
//! kernels are compiled only when the compiler is new enough (`cfg(vsgd_avx512)`).

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-check-cfg=cfg(vsgd_avx512)");
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            // "rustc 1.89.0 (...)" -> 89
            let version = v.split_whitespace().nth(1)?.to_owned();
            let mut parts = version.split('.');
            let major: u32 = parts.next()?.parse().ok()?;
            let minor: u32 = parts.next()?.parse().ok()?;
            Some(if major > 1 { u32::MAX } else { minor })
        })
        .unwrap_or(0);
    if minor >= 89 {
        println!("cargo:rustc-cfg=vsgd_avx512");
    }
}
