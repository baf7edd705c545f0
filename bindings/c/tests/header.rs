//! The committed include/vsgd.h must be exactly what the pinned cbindgen generates from this
//! crate (plus the version macros). Regenerate with `VSGD_BLESS=1 cargo test -p vsgd-ffi
//! --test header` and commit the result.

use std::path::Path;

/// The version macros: cbindgen cannot evaluate `env!`, so they are appended here from the
/// crate version (which also makes a version bump without a regenerated header fail).
fn version_macros() -> String {
    format!(
        "\n/** Version of the library this header belongs to (the crate version). */\n\
         #define VSGD_VERSION_MAJOR {}\n\
         #define VSGD_VERSION_MINOR {}\n\
         #define VSGD_VERSION_PATCH {}\n\
         #define VSGD_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    )
}

fn generate() -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(version_macros());
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen failed");
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn committed_header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../include/vsgd.h");
    let fresh = generate();
    if std::env::var_os("VSGD_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed != fresh {
        let (c, f) = (
            String::from_utf8_lossy(&committed),
            String::from_utf8_lossy(&fresh),
        );
        let line = c.lines().zip(f.lines()).position(|(a, b)| a != b);
        panic!(
            "include/vsgd.h is stale (first difference at line {}); regenerate with \
             VSGD_BLESS=1 cargo test -p vsgd-ffi --test header",
            line.map_or(c.lines().count().min(f.lines().count()) + 1, |l| l + 1)
        );
    }
}

#[test]
fn header_declares_only_prefixed_names() {
    let text = String::from_utf8(generate()).unwrap();
    let mut checked = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("#include"))
    {
        // The name a top-level line declares, if it declares one.
        let name = if let Some(rest) = line.strip_prefix("#define ") {
            rest.split_whitespace().next()
        } else if let Some(rest) = line.strip_prefix("typedef ") {
            let rest = rest.trim_end_matches(['{', ';', ' ']);
            let rest = rest
                .trim_start_matches("struct ")
                .trim_start_matches("union ");
            rest.split_whitespace().next_back()
        } else if line.ends_with('(') || line.contains('(') && line.ends_with(';') {
            // A function declaration: `ret name(` or `ret *name(`.
            line.split('(')
                .next()
                .and_then(|l| l.split([' ', '*']).next_back())
        } else {
            None
        };
        let Some(name) = name else { continue };
        if name == "VSGD_H" {
            continue;
        }
        assert!(
            name.starts_with("vsgd_") || name.starts_with("VSGD_"),
            "unprefixed name `{name}` in the header: {line}"
        );
        checked += 1;
    }
    // A parser that matched nothing would pass vacuously.
    assert!(checked > 60, "only {checked} declarations found");
}
