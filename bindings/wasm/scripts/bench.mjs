#!/usr/bin/env node
// `npm --prefix bindings/wasm run bench [-- --elements N] [--samples S] [--json]`
//
// One optimizer step over N elements (default 1M = 2^20, f32, policy "propagate": no finite
// scan, as `vsgd bench` measures by default) for VSGD and Adam, timed three ways:
//   - wasm SIMD128: the package (pkg/node), zero-copy buffers and stepBuffers();
//   - wasm scalar:  the same crate built without simd128 (pkg-scalar/, `build.sh --scalar`);
//   - native:       `cargo run --release --bin vsgd -- bench --threads 1` (one thread), before
//                   and after the wasm runs (the better of the two), with the CPU's best kernel
//                   path and, on x86-64, also forced to SSE2 (4 lanes, as simd128) and AVX2;
// the two wasm builds interleaved in this process, best of S samples each. Also the copying
// step(), and the package's size (gzip -9). Prints a table (or JSON) with the ratios; the
// goals of the issue are SIMD128 >= 3x scalar wasm and within 2x of native single-thread.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const WASM_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const REPO = resolve(WASM_DIR, "../..");
const require = createRequire(import.meta.url);

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const N = opt("--elements", 1 << 20);
const SAMPLES = opt("--samples", 15);
const JSON_OUT = args.includes("--json");
const log = (...a) => (JSON_OUT ? process.stderr : process.stdout).write(`${a.join(" ")}\n`);

if (!existsSync(join(WASM_DIR, "pkg/node/vsgd.js")) || !existsSync(join(WASM_DIR, "pkg-scalar/vsgd.js"))) {
  log("building the package and the scalar build (build.sh --scalar) ...");
  execFileSync("bash", [join(WASM_DIR, "scripts/build.sh"), "--scalar"], { stdio: ["ignore", "ignore", "inherit"] });
}
const simd = require(join(WASM_DIR, "pkg/node/vsgd.js"));
const scalar = require(join(WASM_DIR, "pkg-scalar/vsgd.js"));
if (simd.kernelPath() !== "simd128" || scalar.kernelPath() !== "portable") {
  throw new Error(`kernel paths: ${simd.kernelPath()} / ${scalar.kernelPath()}`);
}

function fill(a, seed, scale) {
  let x = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    a[i] = (x / 2 ** 32 - 0.5) * scale;
  }
}

/** A timed step of one build: zero-copy buffers, or the copying step(). */
function setup(mod, algorithm, copying) {
  const o = new mod.Optimizer({ algorithm, policy: "propagate" });
  o.addTensor([N]);
  let run;
  if (copying) {
    const p = new Float32Array(N);
    const g = new Float32Array(N);
    fill(p, 1, 2);
    fill(g, 2, 0.02);
    run = () => o.step([p], [g]);
  } else {
    fill(o.paramBuffer(0), 1, 2);
    fill(o.gradBuffer(0), 2, 0.02);
    run = () => o.stepBuffers();
  }
  run(); // past the first step (priors instead of state)
  const t = performance.now();
  run();
  const once = Math.max(performance.now() - t, 1e-3);
  const reps = Math.max(1, Math.min(1000, Math.ceil(20 / once))); // samples of ~20 ms
  let best = Infinity;
  return {
    sample() {
      const t0 = performance.now();
      for (let r = 0; r < reps; r++) run();
      best = Math.min(best, (performance.now() - t0) / reps);
    },
    nsPerElement: () => (best * 1e6) / N,
    free: () => o.free(),
  };
}

const KERNELS = process.arch === "x64" ? ["best", "sse2", "avx2"] : ["best"];

/** ns per element of the native step, one thread, per kernel path (VSGD_KERNEL). */
function native(algorithm) {
  const out = {};
  for (const k of KERNELS) {
    const env = { ...process.env };
    if (k === "best") delete env.VSGD_KERNEL;
    else env.VSGD_KERNEL = k;
    const text = execFileSync("cargo", ["run", "--release", "-q", "--bin", "vsgd", "--", "bench", "--json",
      "--algorithm", algorithm, "--elements", String(N), "--threads", "1", "--samples", "25"], { cwd: REPO, env });
    const r = JSON.parse(text.toString()).results[0];
    if (k === "best" || r.kernel === k) out[k === "best" ? `best (${r.kernel})` : r.kernel] = r.ns_per_element;
  }
  return out;
}

const results = [];
for (const algorithm of ["vsgd", "adam"]) {
  const before = native(algorithm);
  const timers = {
    simd128: setup(simd, algorithm, false),
    scalar: setup(scalar, algorithm, false),
    simd128_copying: setup(simd, algorithm, true),
  };
  for (let s = 0; s < SAMPLES; s++) for (const t of Object.values(timers)) t.sample();
  const after = native(algorithm);
  const ns = Object.fromEntries(Object.entries(timers).map(([k, t]) => [k, t.nsPerElement()]));
  for (const t of Object.values(timers)) t.free();
  const nativeNs = Object.fromEntries(Object.keys(before).map((k) => [k, Math.min(before[k], after[k] ?? Infinity)]));
  results.push({
    algorithm,
    elements: N,
    ns_per_element: { wasm_simd128: ns.simd128, wasm_scalar: ns.scalar, wasm_simd128_copying: ns.simd128_copying },
    native_1_thread_ns_per_element: nativeNs,
    simd128_speedup_vs_scalar: ns.scalar / ns.simd128,
    simd128_time_vs_native: Object.fromEntries(Object.entries(nativeNs).map(([k, v]) => [k, ns.simd128 / v])),
  });
}

const gz = (f) => gzipSync(readFileSync(join(WASM_DIR, "pkg", f)), { level: 9 }).length;
const size = {
  wasm_bytes: readFileSync(join(WASM_DIR, "pkg/web/vsgd_bg.wasm")).length,
  wasm_gzip_bytes: gz("web/vsgd_bg.wasm"),
  web_js_gzip_bytes: gz("web/vsgd.js"),
};
size.web_total_gzip_bytes = size.wasm_gzip_bytes + size.web_js_gzip_bytes;
const pack = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", join(WASM_DIR, "pkg")], { cwd: WASM_DIR }).toString())[0];
size.npm_tarball_bytes = pack.size;
size.npm_unpacked_bytes = pack.unpackedSize;

if (JSON_OUT) {
  console.log(JSON.stringify({ node: process.version, results, size }, null, 2));
} else {
  log(`one step of ${N} f32 elements, ns per element (best of ${SAMPLES}; policy propagate; native: 1 thread)`);
  for (const r of results) {
    const n = r.ns_per_element;
    log(`${r.algorithm}: wasm simd128 ${n.wasm_simd128.toFixed(3)}, wasm scalar ${n.wasm_scalar.toFixed(3)} ` +
      `(simd128 ${r.simd128_speedup_vs_scalar.toFixed(2)}x faster), copying step() ${n.wasm_simd128_copying.toFixed(3)}`);
    for (const [k, v] of Object.entries(r.native_1_thread_ns_per_element)) {
      log(`    native ${k}: ${v.toFixed(3)} -> wasm simd128 takes ${r.simd128_time_vs_native[k].toFixed(2)}x its time`);
    }
  }
  log(`package: wasm ${size.wasm_bytes} bytes, gzip ${size.wasm_gzip_bytes}; browser download (wasm + JS, gzip) ${size.web_total_gzip_bytes} bytes; npm tarball ${size.npm_tarball_bytes} bytes`);
}
