# Sourced by scripts that run Miri. `ensure_miri` installs the nightly toolchain (minimal
# profile) with the miri and rust-src components when missing, and prepares Miri's sysroot.
# It returns 0 when Miri can run. When it cannot, it prints why and returns 1 — except under
# CI (CI=true), where a missing tool is a failure, never a skip: it exits 1.
ensure_miri() {
    local why=""
    if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        rustup toolchain install nightly --profile minimal >&2 || why="the nightly toolchain could not be installed"
    fi
    if [ -z "$why" ] && ! rustup component list --installed --toolchain nightly 2>/dev/null | grep -q '^miri'; then
        rustup component add miri rust-src --toolchain nightly >&2 || why="the miri component could not be installed"
    fi
    if [ -z "$why" ] && ! cargo +nightly miri setup >/dev/null 2>&1; then
        why="cargo miri setup failed"
    fi
    if [ -n "$why" ]; then
        if [ "${CI:-}" = true ]; then
            echo "FAIL: miri is required under CI: $why" >&2
            exit 1
        fi
        echo "--- miri: SKIPPED ($why)"
        return 1
    fi
    return 0
}
