#!/usr/bin/env bash
# All the tests: the command README.md shows and CI (.ci/run) calls. Installs what it needs on a
# fresh machine (Rust components, Debian's wasm toolchain, ...), then runs:
#   format and lint checks, `cargo test` for the workspace, the conformance cases through the
#   `vsgd` binary and check.py, the no_std wasm32 build, and every scripts/test.d/*.sh
#   (one file per binding or concern, each self-contained).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

# Each step prints the minutes since the start, so a slow CI run shows where its time went.
START=$SECONDS
step() { printf '\n==> [%dm%02ds] %s\n' $(((SECONDS - START) / 60)) $(((SECONDS - START) % 60)) "$*"; }

step "toolchain components"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
# Miri (nightly + miri + rust-src) before anything needs it: the C ABI and SIMD scripts run
# it; under CI=true a missing tool fails the run instead of being skipped.
source scripts/lib/miri.sh
ensure_miri || true
if ! command -v python3 >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc -D warnings (the library's documentation, every public item)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p vsgd -q

step "cargo test"
cargo test --workspace

step "cargo package: every crate packages and builds from its package"
# cargo unpacks the workspace's own packages from a temporary local registry into
# ~/.cargo/registry/src/-<hash>/ and reuses an earlier unpacking of the same name and version
# (stale sources on a machine that packaged before); remove those first.
# The same goes for target/package (a reused target directory keeps old .crate files).
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/-*/vsgd*-[0-9]* \
    "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/-*/vsgd*-[0-9]* \
    "${CARGO_TARGET_DIR:-target}/package"
cargo package --workspace --allow-dirty --quiet
# The CLI is its own package (cli/): the library's default features pull neither it nor JSON.
if cargo tree -p vsgd -e normal --prefix none | grep -E '^(serde_json|vsgd-cli) '; then
    echo "the vsgd library's default features pull the CLI's dependencies" >&2
    exit 1
fi

step "conformance through the CLI (vsgd replay + check.py)"
bash scripts/check-conformance.sh

step "benchmark scripts parse (they are run by hand, not here)"
for f in scripts/*.sh; do bash -n "$f"; done
python3 -c 'import ast, sys; [ast.parse(open(f).read(), f) for f in sys.argv[1:]]' scripts/*.py

step "no_std build for wasm32 (core + alloc only)"
bash scripts/check-nostd-wasm.sh

shopt -s nullglob
for t in scripts/test.d/*.sh; do
    step "$t"
    bash "$t"
done

step "all tests passed"
