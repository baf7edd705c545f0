//! The committed include/vsgd.h must be exactly what the pinned cbindgen generates from this
//! crate (plus the version macros). Regenerate with `VSGD_BLESS_HEADER=1 cargo test -p
//! vsgd-ffi --test header` and commit the result. (The pinned checkpoint bytes have their own
//! variable, `VSGD_BLESS_CHECKPOINT`: regenerating the header never accepts a format change.)
//!
//! Also: the documented ranges of hyperparameters and schedule fields are the core's (one
//! source for bounds: `Algorithm::hyper_allowed`, `Schedule::bounds`).

use std::path::Path;

/// The version macros: cbindgen cannot evaluate `env!`, so they are appended here from the
/// crate version (which also makes a version bump without a regenerated header fail).
fn version_macros() -> String {
    format!(
        "\n/** Version of the library this header belongs to (the crate version). */\n\
         #define VSGD_VERSION_MAJOR {}\n\
         #define VSGD_VERSION_MINOR {}\n\
         #define VSGD_VERSION_PATCH {}\n\
         #define VSGD_VERSION_STRING \"{}\"\n\
         /** The version as one number, MAJOR * 10000 + MINOR * 100 + PATCH (as zstd's\n \
         * ZSTD_VERSION_NUMBER), for preprocessor comparisons. */\n\
         #define VSGD_VERSION_NUMBER {}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
        version_number(),
    )
}

fn version_number() -> u32 {
    let n = |s: &str| s.parse::<u32>().unwrap();
    n(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + n(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + n(env!("CARGO_PKG_VERSION_PATCH"))
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
    assert!(
        std::env::var_os("VSGD_BLESS").is_none(),
        "VSGD_BLESS is retired: VSGD_BLESS_HEADER regenerates the header, \
         VSGD_BLESS_CHECKPOINT the pinned checkpoint"
    );
    if std::env::var_os("VSGD_BLESS_HEADER").is_some() {
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
             VSGD_BLESS_HEADER=1 cargo test -p vsgd-ffi --test header",
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

/// The documentation block (`/** ... */`) just above the declaration of function `name`,
/// one string per line with the ` * ` prefix removed.
fn doc_of(text: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let decl = lines
        .iter()
        .position(|l| {
            !l.starts_with(' ')
                && (l.contains(&format!(" {name}(")) || l.contains(&format!("*{name}(")))
        })
        .unwrap_or_else(|| panic!("no declaration of {name}"));
    let start = lines[..decl]
        .iter()
        .rposition(|l| l.trim_start() == "/**")
        .unwrap();
    lines[start + 1..decl]
        .iter()
        .map(|l| l.trim_start().trim_start_matches('*').trim().to_string())
        .collect()
}

#[test]
fn documented_hyperparameter_ranges_are_the_cores() {
    use vsgd::Algorithm;
    let text = String::from_utf8(generate()).unwrap();
    let doc = doc_of(&text, "vsgd_config_set");
    let mut checked = 0;
    for a in Algorithm::ALL {
        for name in a.hyper_names() {
            let allowed = a.hyper_allowed(name).unwrap();
            let line = doc
                .iter()
                .find(|l| l.starts_with(&format!("- `{name}`: ")))
                .unwrap_or_else(|| panic!("vsgd_config_set does not document `{name}`"));
            assert_eq!(
                line.strip_prefix(&format!("- `{name}`: ")).unwrap(),
                allowed,
                "{a}.{name}: the C docs and the core disagree"
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
}

#[test]
fn documented_schedule_bounds_are_the_cores() {
    use vsgd::Schedule;
    let text = String::from_utf8(generate()).unwrap();
    let doc = doc_of(&text, "vsgd_schedule_new");
    let kinds = [
        Schedule::StepDecay {
            every: 1,
            factor: 1.0,
        },
        Schedule::Cosine {
            total: 1,
            min_factor: 0.0,
        },
        Schedule::OneCycle {
            total: 3,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        },
    ];
    let mut checked = 0;
    for k in kinds {
        for (field, allowed) in k.bounds() {
            let prefix = format!("- `{field}` ({}): ", k.kind_name());
            let line = doc
                .iter()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("vsgd_schedule_new does not document {prefix}"));
            let range = line[prefix.len()..].split(';').next().unwrap();
            assert_eq!(
                range, *allowed,
                "{prefix}: the C docs and the core disagree"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}
