//! Gives the shared library its SONAME, `libvsgd.so.<ABI version>`, so programs linked against
//! one ABI never load a library of another. The number must equal `VSGD_ABI_VERSION` in
//! src/lib.rs (a unit test compares them through the `VSGD_ABI_VERSION` variable set here).

const ABI_VERSION: u32 = 2;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=VSGD_ABI_VERSION={ABI_VERSION}");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" || os == "android" || os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvsgd.so.{ABI_VERSION}");
    }
}
