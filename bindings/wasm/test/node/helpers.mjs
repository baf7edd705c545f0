// Shared by the node:test files: paths, the native `vsgd` CLI, child processes.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const WASM_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const REPO = resolve(WASM_DIR, "../..");
export const CASES_DIR = join(REPO, "tests/data/conformance");
export const REPLAY = join(WASM_DIR, "replay.mjs");

/** Every conformance case file. */
export const cases = () =>
  readdirSync(CASES_DIR)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => join(CASES_DIR, f));

/**
 * The native CLI ($VSGD_BIN, or target/release/vsgd of the repository), or a reason why not:
 * tests that compare with it skip with that reason, except under CI=true, where they fail.
 */
export function nativeCli() {
  const bin = process.env.VSGD_BIN ?? join(REPO, "target/release/vsgd");
  if (existsSync(bin)) return { bin };
  const reason = `native CLI ${bin} missing (cargo build --release --bin vsgd)`;
  if (process.env.CI === "true") throw new Error(reason);
  return { skip: reason };
}

/** Runs a command; returns {status, stdout (Buffer), stderr (string)}. */
export function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { maxBuffer: 1 << 30, ...opts });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

export const sh = (cmd, args, opts = {}) =>
  execFileSync(cmd, args, { maxBuffer: 1 << 30, ...opts });

/** A small deterministic generator (xorshift32) of floats in [-1, 1). */
export function rng(seed = 1) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 31 - 1;
  };
}
