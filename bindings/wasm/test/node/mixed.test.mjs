// Mixed precision: bf16 and f16 parameters and gradients (Uint16Array of their bits), with f32
// state or bf16 state rounded stochastically. Against a JavaScript reference of Adam's rule,
// against the native library (examples/mixed_native.rs: the same scenario, each tensor stepped
// on its own; parameters and checkpoint bytes identical), through the three ways to step,
// checkpoints resuming to the bits of an uninterrupted run, and bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Optimizer } from "vsgd";
import { nativeCli, REPO, rng, run, WASM_DIR } from "./helpers.mjs";

const ALGORITHMS = ["vsgd", "constant_vsgd", "adam", "adamw", "sgdm"];
const bytes = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a, b, msg) => assert.ok(bytes(a).equals(bytes(b)), msg);

// ------------------------------------------------------------------------ bits and values
const F = new Float32Array(1);
const U = new Uint32Array(F.buffer);
const f32Bits = (x) => ((F[0] = x), U[0]);
const fromF32Bits = (b) => ((U[0] = b >>> 0), F[0]);
/** A bf16 (its 16 bits) widened to f32: exact. */
const bf16ToF32 = (h) => fromF32Bits(h << 16);
/** An f32 rounded to bf16, to nearest even (finite inputs). */
const f32ToBf16 = (x) => {
  const b = f32Bits(x);
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
};

/** `n` random 16-bit floats of magnitude about 2^-4 .. 2^4, as bits (bf16 or f16 layout). */
function random16(dtype, n, r) {
  const [bias, mant] = dtype === "bf16" ? [127, 7] : [15, 10];
  return Uint16Array.from({ length: n }, () => {
    const sign = r() < 0 ? 1 : 0;
    const exp = bias - 4 + Math.floor(((r() + 1) / 2) * 8);
    const m = Math.floor(((r() + 1) / 2) * (1 << mant));
    return (sign << 15) | (exp << mant) | m;
  });
}

/** Random parameters or gradients of a tensor's dtype. */
function randomArray(dtype, n, r) {
  return dtype === "f32" ? Float32Array.from({ length: n }, () => r() * 3) : random16(dtype, n, r);
}

// ------------------------------------------------------------------------ JS reference
test("bf16 parameters, f32 state: Adam steps are the f32 rule over the widened values, rounded to bf16 (a JS reference, bit for bit)", () => {
  const lr = 0.01;
  const n = 257;
  const r = rng(3);
  const o = new Optimizer({ algorithm: "adam", lr });
  const t = o.addTensor([n], { dtype: "bf16" });
  assert.deepEqual(o.tensorInfo(t), { name: null, shape: [n], len: n, dtype: "bf16", stateDtype: "f32", seed: null, group: 0, step: 0 });
  const param = random16("bf16", n, r);
  // The reference: the core's Adam in f32 (torch semantics), every operation rounded to f32.
  const f = Math.fround;
  const [b1, b2, eps] = [f(0.9), f(0.999), f(1e-8)];
  const [omb1, omb2] = [f(1 - 0.9), f(1 - 0.999)];
  const ref = Uint16Array.from(param);
  const m = new Float32Array(n);
  const v = new Float32Array(n);
  for (let step = 1; step <= 3; step++) {
    const grad = random16("bf16", n, r);
    const stepSize = f(lr / (1 - Math.pow(0.9, step)));
    const bc2Sqrt = f(Math.sqrt(1 - Math.pow(0.999, step)));
    for (let i = 0; i < n; i++) {
      const g = bf16ToF32(grad[i]);
      const p = bf16ToF32(ref[i]);
      m[i] = f(f(b1 * m[i]) + f(omb1 * g));
      v[i] = f(f(b2 * v[i]) + f(omb2 * f(g * g)));
      const den = f(f(f(Math.sqrt(v[i])) / bc2Sqrt) + eps);
      ref[i] = f32ToBf16(f(p - f(stepSize * f(m[i] / den))));
    }
    assert.deepEqual(o.step([param], [grad]), { applied: 1, skipped: 0 });
    sameBits(param, ref, `step ${step}: parameters differ from the reference`);
    sameBits(o.state(t, "m"), m, `step ${step}: m differs`);
    sameBits(o.state(t, "v"), v, `step ${step}: v differs`);
  }
  assert.ok(o.state(t, "m") instanceof Float32Array);
  o.free();
});

// ------------------------------------------------------------------------ native library
/** The native side: examples/mixed_native.rs, built for the host (once per run). */
function nativeMixed() {
  const which = run("sh", ["-c", "command -v cargo"]);
  if (which.status !== 0) {
    const reason = "cargo missing: cannot build examples/mixed_native.rs";
    if (process.env.CI === "true") throw new Error(reason);
    return { skip: reason };
  }
  const r = run("cargo", ["build", "--release", "--locked", "-q", "--example", "mixed_native", "--target-dir", "target/host"], { cwd: WASM_DIR });
  if (r.status !== 0) throw new Error(`building examples/mixed_native.rs failed:\n${r.stderr}`);
  return { bin: join(WASM_DIR, "target/host/release/examples/mixed_native") };
}

/** Every kind of tensor: [dtype, stateDtype (undefined: default), seed (undefined: default), len]. */
const SCENARIO = [
  ["bf16", undefined, undefined, 37],
  ["bf16", "bf16", 12345, 1029],
  ["f16", undefined, undefined, 64],
  ["f16", "bf16", undefined, 5],
  ["f32", "bf16", 7, 33],
  ["f32", undefined, undefined, 8],
  ["bf16", "f32", undefined, 0],
];

function scenarioInput(algorithm, lr, steps, seed, scenario = SCENARIO) {
  const r = rng(seed);
  const params = scenario.map(([d, , , n]) => randomArray(d, n, r));
  const grads = Array.from({ length: steps }, () => scenario.map(([d, , , n]) => randomArray(d, n, r)));
  const bitsOf = (a) => Array.from(a instanceof Float32Array ? new Uint32Array(a.buffer, a.byteOffset, a.length) : a).join(" ");
  const lines = [`${algorithm} ${lr} ${steps} ${scenario.length}`];
  scenario.forEach(([d, s, sd, n], k) => lines.push(`${d} ${s ?? "-"} ${sd ?? "-"} ${n} ${bitsOf(params[k])}`));
  for (const g of grads) lines.push(g.map(bitsOf).join("\n"));
  return { params, grads, text: lines.join("\n") + "\n" };
}

function scenarioOptimizer(algorithm, lr, scenario = SCENARIO) {
  const o = new Optimizer({ algorithm, lr });
  for (const [dtype, stateDtype, seed, n] of scenario) o.addTensor([n], { dtype, stateDtype, seed });
  return o;
}

const native = nativeMixed();
for (const algorithm of ALGORITHMS) {
  test(`${algorithm}: bf16/f16/f32 tensors with f32 and bf16 state in one step() give the native library's bits and checkpoint bytes`, { skip: native.skip }, () => {
    const dir = mkdtempSync(join(tmpdir(), "vsgd-mixed-"));
    try {
      const lr = 0.01;
      const steps = 6;
      const { params, grads, text } = scenarioInput(algorithm, lr, steps, 17);
      const ckpt = join(dir, "native.vsgdckpt");
      const nat = run(native.bin, [ckpt], { input: text });
      assert.equal(nat.status, 0, nat.stderr);
      const o = scenarioOptimizer(algorithm, lr);
      for (const g of grads) assert.deepEqual(o.step(params, g), { applied: SCENARIO.length, skipped: 0 });
      const lines = nat.stdout.toString().split("\n");
      params.forEach((p, k) => {
        const bits = Array.from(p instanceof Float32Array ? new Uint32Array(p.buffer) : p).join(" ");
        assert.equal(bits, lines[k], `tensor ${k} (${SCENARIO[k][0]}): parameters differ from native`);
      });
      assert.ok(Buffer.from(o.save()).equals(readFileSync(ckpt)), "checkpoint bytes differ from native");
      o.free();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

// The native library splits a tensor this large across its threads (examples/mixed_native.rs
// runs 4); the package steps it in one piece. The stochastic rounding's bits follow the
// element index, so both give the same bits.
const LARGE = [
  ["bf16", "bf16", 31, 150001],
  ["f32", "bf16", 32, 150003],
  ["bf16", undefined, undefined, 150005],
];
test("vsgd: tensors the native library splits across threads (150,000 elements, bf16 state) give its bits and checkpoint bytes", { skip: native.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vsgd-mixed-large-"));
  try {
    const { params, grads, text } = scenarioInput("vsgd", 0.01, 2, 23, LARGE);
    const ckpt = join(dir, "native.vsgdckpt");
    const nat = run(native.bin, [ckpt], { input: text });
    assert.equal(nat.status, 0, nat.stderr);
    const o = scenarioOptimizer("vsgd", 0.01, LARGE);
    for (const g of grads) assert.deepEqual(o.step(params, g), { applied: LARGE.length, skipped: 0 });
    const lines = nat.stdout.toString().split("\n");
    params.forEach((p, k) => {
      const bits = Array.from(p instanceof Float32Array ? new Uint32Array(p.buffer) : p).join(" ");
      assert.ok(bits === lines[k], `tensor ${k} (${LARGE[k][0]}): parameters differ from native`);
    });
    assert.ok(Buffer.from(o.save()).equals(readFileSync(ckpt)), "checkpoint bytes differ from native");
    o.free();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a checkpoint with mixed tensors, saved by the package, passes native inspect", { skip: nativeCli().skip }, () => {
  const cli = nativeCli();
  const dir = mkdtempSync(join(tmpdir(), "vsgd-mixed-inspect-"));
  try {
    const o = new Optimizer({ algorithm: "vsgd" });
    o.addTensor([3], { name: "w", dtype: "bf16" });
    o.addTensor([2], { name: "b", dtype: "bf16", stateDtype: "bf16", seed: 41 });
    o.addTensor([2], { name: "h", dtype: "f16" });
    const p = [new Uint16Array(3).fill(0x3f80), new Uint16Array(2).fill(0x3f80), new Uint16Array(2).fill(0x3c00)];
    o.step(p, [new Uint16Array(3).fill(0x3f00), new Uint16Array(2).fill(0xbe80), new Uint16Array(2).fill(0x3800)]);
    const file = join(dir, "mixed.vsgdckpt");
    writeFileSync(file, o.save());
    const r = run(cli.bin, ["inspect", file]);
    assert.equal(r.status, 0, r.stderr);
    const out = r.stdout.toString();
    assert.match(out, /tensor 0 "w": shape \[3\], param bf16, state f32, group 0, step 1/);
    assert.match(out, /tensor 1 "b": shape \[2\], param bf16, state bf16 \(rounding seed 41\), group 0, step 1/);
    assert.match(out, /tensor 2 "h": shape \[2\], param f16, state f32, group 0, step 1/);
    o.free();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("global schedule clock (a native checkpoint): a step over several kinds advances it once", { skip: native.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vsgd-mixed-clock-"));
  try {
    const file = join(dir, "clock.vsgdckpt");
    const r = run(native.bin, ["--global-clock", file]);
    assert.equal(r.status, 0, r.stderr);
    const template = readFileSync(file);
    const kinds = [{}, { dtype: "bf16" }, { dtype: "f16", stateDtype: "bf16" }];
    const rr = rng(5);
    const params = kinds.map((k) => randomArray(k.dtype ?? "f32", 9, rr));
    const grads = Array.from({ length: 4 }, () => kinds.map((k) => randomArray(k.dtype ?? "f32", 9, rr)));
    // All kinds in one optimizer, one step() each time ...
    const all = Optimizer.load(template);
    kinds.forEach((k) => all.addTensor([9], k));
    const pa = params.map((p) => p.slice());
    for (const g of grads) assert.deepEqual(all.step(pa, g), { applied: 3, skipped: 0 });
    // ... against one optimizer per kind (the clock advancing once per step).
    kinds.forEach((k, i) => {
      const one = Optimizer.load(template);
      one.addTensor([9], { ...k, seed: k.stateDtype ? i : undefined });
      const p = params[i].slice();
      for (const g of grads) one.step([p], [g[i]]);
      sameBits(p, pa[i], `tensor ${i}: the global clock advanced differently`);
      one.free();
    });
    all.free();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("gradient clipping by global norm (a native checkpoint): one step over several kinds takes one norm over all of them, as native", { skip: native.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vsgd-mixed-clip-"));
  try {
    const [before, after] = [join(dir, "before.vsgdckpt"), join(dir, "after.vsgdckpt")];
    const r = run(native.bin, ["--clip-step", before, after]);
    assert.equal(r.status, 0, r.stderr);
    const [bits0, bits1] = r.stdout.toString().split("\n");
    const grads = () => [new Float32Array([1, 2]), new Float64Array([3])];
    const o = Optimizer.load(readFileSync(before));
    assert.deepEqual([o.tensorInfo(0).dtype, o.tensorInfo(1).dtype], ["f32", "f64"]);
    const p = [new Float32Array([1, 2]), new Float64Array([3])];
    assert.deepEqual(o.step(p, grads()), { applied: 2, skipped: 0 });
    assert.equal(Array.from(new Uint32Array(p[0].buffer)).join(" "), bits0, "f32 tensor differs from native");
    assert.equal(new BigUint64Array(p[1].buffer)[0].toString(), bits1, "f64 tensor differs from native");
    assert.ok(Buffer.from(o.save()).equals(readFileSync(after)), "checkpoint bytes differ from native");
    // Each tensor alone is clipped by its own norm (2.24 and 3 against 3.74 for both): other bits.
    const q = Optimizer.load(readFileSync(before));
    const pq = [new Float32Array([1, 2]), new Float64Array([3])];
    grads().forEach((g, k) => assert.equal(q.stepTensor(k, pq[k], g), "applied"));
    assert.ok(!bytes(pq[0]).equals(bytes(p[0])) && !bytes(pq[1]).equals(bytes(p[1])), "one norm or two gave the same bits: the test cannot tell them apart");
    o.free();
    q.free();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ------------------------------------------------------------------------ the three ways
for (const algorithm of ["vsgd", "adam", "sgdm"]) {
  test(`${algorithm}: mixed tensors: step, stepTensor and stepBuffers give the same bits`, () => {
    const lr = 0.05;
    const { params, grads } = scenarioInput(algorithm, lr, 4, 23);
    const [a, b, c] = [0, 1, 2].map(() => scenarioOptimizer(algorithm, lr));
    const pa = params.map((p) => p.slice());
    const pb = params.map((p) => p.slice());
    params.forEach((p, k) => c.paramBuffer(k).set(p));
    for (const g of grads) {
      a.step(pa, g);
      g.forEach((gk, k) => assert.equal(b.stepTensor(k, pb[k], gk), "applied"));
      g.forEach((gk, k) => c.gradBuffer(k).set(gk));
      const views = params.map((_, k) => c.paramBuffer(k));
      assert.deepEqual(c.stepBuffers(), { applied: SCENARIO.length, skipped: 0 });
      views.forEach((v, k) => assert.equal(v.length, SCENARIO[k][3], `view ${k} emptied by stepBuffers`));
    }
    pa.forEach((p, k) => {
      sameBits(p, pb[k], `tensor ${k}: step vs stepTensor`);
      sameBits(p, c.paramBuffer(k), `tensor ${k}: step vs stepBuffers`);
      assert.equal(c.paramBuffer(k).constructor, p.constructor);
    });
    const save = a.save();
    assert.ok(Buffer.from(save).equals(Buffer.from(b.save())), "state differs (stepTensor)");
    assert.ok(Buffer.from(save).equals(Buffer.from(c.save())), "state differs (stepBuffers)");
    for (const o of [a, b, c]) o.free();
  });
}

// ------------------------------------------------------------------------ bf16 state
test("bf16 state with stochastic rounding: Uint16 state arrays, reported dtypes and seed, deterministic per seed", () => {
  const n = 4096;
  const make = (stateDtype, seed) => {
    const o = new Optimizer({ algorithm: "vsgd", lr: 0.05 });
    o.addTensor([n], { name: "w", dtype: "bf16", stateDtype, seed });
    return o;
  };
  const r = rng(9);
  const init = random16("bf16", n, r);
  const grads = Array.from({ length: 5 }, () => random16("bf16", n, r));
  const runs = [make("bf16", 99), make("bf16", 99), make("bf16", 100), make(undefined, undefined)];
  const params = runs.map(() => init.slice());
  for (const g of grads) runs.forEach((o, k) => assert.deepEqual(o.step([params[k]], [g]), { applied: 1, skipped: 0 }));
  const [a, b, c, wide] = runs;
  assert.deepEqual(a.tensorInfo(0), { name: "w", shape: [n], len: n, dtype: "bf16", stateDtype: "bf16", seed: 99, group: 0, step: 5 });
  assert.equal(wide.tensorInfo(0).stateDtype, "f32");
  for (const name of a.stateNames) {
    const s = a.state(0, name);
    assert.ok(s instanceof Uint16Array, `${name}: ${s.constructor.name}`);
    assert.equal(s.length, n);
    sameBits(s, b.state(0, name), `${name}: same seed, different state`);
    assert.ok(wide.state(0, name) instanceof Float32Array);
  }
  sameBits(params[0], params[1], "same seed, different parameters");
  assert.ok(!bytes(a.state(0, "mug")).equals(bytes(c.state(0, "mug"))), "another seed rounds the same way");
  // The state is 2 bytes per element and array in memory and in the checkpoint.
  const k = a.stateNames.length;
  assert.ok(wide.save().length - a.save().length >= 2 * n * k - 64, "bf16 state does not save 2 bytes per element");
  // The state stays near the f32-state run (stochastic rounding is unbiased).
  const mugA = Array.from(a.state(0, "mug"), bf16ToF32);
  const mugW = wide.state(0, "mug");
  const err = mugA.reduce((s, x, i) => s + Math.abs(x - mugW[i]), 0) / mugA.reduce((s, x) => s + Math.abs(x), 0);
  assert.ok(err < 0.02, `bf16 state drifts from f32 state: relative error ${err}`);
  // VSGD's effective momentum from bf16 state, computed in f32.
  const em = a.effectiveMomentum(0);
  assert.ok(em instanceof Float32Array && em.length === n && em.every((x) => x >= 0 && x <= 1));
  // A seed above 2^53 as a BigInt, reported back as one.
  const big = new Optimizer();
  big.addTensor([2], { dtype: "f16", stateDtype: "bf16", seed: 2n ** 64n - 1n });
  assert.equal(big.tensorInfo(0).seed, 2n ** 64n - 1n);
  big.addTensor([2], { dtype: "f32", stateDtype: "bf16" });
  assert.equal(big.tensorInfo(1).seed, 1, "the default seed is the tensor's index");
  // A seed nothing would use (state other than bf16) is an Error, and adds no tensor.
  for (const opts of [{ dtype: "bf16", seed: 5 }, { dtype: "f16", stateDtype: "f32", seed: 5 }, { seed: 0 }]) {
    assert.throws(() => big.addTensor([2], opts), /seed: only bf16 state \(stateDtype: "bf16"\) is rounded stochastically/, JSON.stringify(opts));
  }
  assert.equal(big.numTensors, 2);
  big.free();
  for (const o of runs) o.free();
});

// ------------------------------------------------------------------------ checkpoints
test("checkpoints: save after 3 mixed steps, load, continue: the bits of an uninterrupted run", () => {
  const lr = 0.02;
  for (const algorithm of ALGORITHMS) {
    const { params, grads } = scenarioInput(algorithm, lr, 7, 31);
    const whole = scenarioOptimizer(algorithm, lr);
    const pw = params.map((p) => p.slice());
    for (const g of grads) whole.step(pw, g);

    const first = scenarioOptimizer(algorithm, lr);
    const pr = params.map((p) => p.slice());
    grads.slice(0, 3).forEach((g) => first.step(pr, g));
    const saved = first.save();
    first.free();
    const resumed = Optimizer.load(saved);
    SCENARIO.forEach(([dtype, stateDtype, seed], k) => {
      const info = resumed.tensorInfo(k);
      assert.equal(info.dtype, dtype);
      assert.equal(info.stateDtype, stateDtype ?? "f32");
      assert.equal(info.seed, info.stateDtype === "bf16" ? seed ?? k : null);
      assert.equal(info.step, 3);
    });
    grads.slice(3).forEach((g) => resumed.step(pr, g));
    pr.forEach((p, k) => sameBits(p, pw[k], `${algorithm}: tensor ${k} differs after resuming`));
    assert.ok(Buffer.from(resumed.save()).equals(Buffer.from(whole.save())), `${algorithm}: final state differs after resuming`);
    resumed.free();
    whole.free();
  }
});

// ------------------------------------------------------------------------ policies, errors
test("mixed kinds in one step: skipped tensors of every kind are reported; the error policy changes nothing", () => {
  const make = (policy) => {
    const o = new Optimizer({ algorithm: "adam", policy });
    o.addTensor([2]);
    o.addTensor([2], { dtype: "bf16" });
    o.addTensor([2], { dtype: "f16", stateDtype: "bf16" });
    return o;
  };
  const params = () => [new Float32Array([1, 2]), new Uint16Array([0x3f80, 0x4000]), new Uint16Array([0x3c00, 0x4000])];
  const nanF16 = new Uint16Array([0x3c00, 0x7e00]);
  const nanF32 = new Float32Array([0.5, NaN]);
  const good = [new Float32Array([0.5, 0.5]), new Uint16Array([0x3f00, 0x3f00]), new Uint16Array([0x3800, 0x3800])];

  const o = make("skip");
  const p = params();
  assert.deepEqual(o.step(p, [nanF32, good[1], nanF16]), { applied: 1, skipped: 2 });
  assert.deepEqual(o.lastSkipped(), [0, 2]);
  assert.deepEqual([0, 1, 2].map((k) => o.stepCount(k)), [0, 1, 0]);
  assert.deepEqual(p[0], params()[0]);
  assert.deepEqual(p[2], params()[2]);
  assert.equal(o.stepTensor(1, p[1], good[1]), "applied");
  assert.deepEqual(o.lastSkipped(), []);
  o.free();

  const e = make("error");
  const q = params();
  const before = Buffer.from(e.save());
  assert.throws(() => e.step(q, [good[0], good[1], nanF16]), /gradient of tensor 2 holds NaN or infinity/);
  assert.ok(Buffer.from(e.save()).equals(before), "the error policy changed the state");
  assert.deepEqual(q, params(), "the error policy changed a parameter");
  // A bad length after a non-finite gradient: reported as the core does (the gradient first).
  assert.throws(() => e.step(q, [nanF32, good[1], new Uint16Array(3)]), /gradient of tensor 0 holds NaN or infinity/);
  assert.throws(() => e.step(q, [good[0], good[1], new Uint16Array(3)]), /length mismatch: grad has 3 elements, expected 2/);
  assert.ok(Buffer.from(e.save()).equals(before));
  assert.deepEqual(e.step(q, good), { applied: 3, skipped: 0 });
  e.free();
});

test("a wrong typed array for a 16-bit tensor is an Error naming the tensor and the type, and changes nothing", () => {
  const o = new Optimizer({ algorithm: "vsgd" });
  o.addTensor([2]);
  o.addTensor([3], { dtype: "bf16" });
  o.addTensor([1], { dtype: "f16", stateDtype: "bf16" });
  const p = [new Float32Array([1, 2]), new Uint16Array([0x3f80, 0x4000, 0x4040]), new Uint16Array([0x3c00])];
  const g = [new Float32Array([0.1, 0.1]), new Uint16Array(3).fill(0x3dcd), new Uint16Array([0x2e66])];
  o.step(p, g);
  const before = Buffer.from(o.save());
  const kept = p.map((x) => x.slice());
  const cases = [
    [() => o.step([p[0], new Float32Array(3), p[2]], g), /params\[1\] is a Float32Array but tensor 1 holds bf16 parameters: expected a Uint16Array \(of bfloat16 bits\)/],
    [() => o.step(p, [g[0], g[1], new Float64Array(1)]), /grads\[2\] is a Float64Array but tensor 2 holds f16 parameters: expected a Uint16Array \(of float16 bits\)/],
    [() => o.step([new Uint16Array(2), p[1], p[2]], g), /params\[0\] is a Uint16Array but tensor 0 holds f32 parameters: expected a Float32Array/],
    [() => o.stepTensor(1, new Float32Array(3), new Float32Array(3)), /param is a Float32Array but tensor 1 holds bf16 parameters: expected a Uint16Array/],
    [() => o.stepTensor(1, p[1], new Float32Array(3)), /param is a Uint16Array but grad is a Float32Array/],
    [() => o.stepTensor(1, p[1], new Uint16Array(2)), /length mismatch: grad has 2 elements, expected 3/],
    [() => o.step(p, [g[0], new Uint16Array(4), g[2]]), /length mismatch: grad has 4 elements, expected 3/],
    [() => o.step([p[0], p[1]], [g[0], g[1]]), /length mismatch: params has 2 elements, expected 3/],
    [() => o.step([...p, p[2]], [...g, g[2]]), /length mismatch: params has 4 elements, expected 3/],
    [() => o.step(p, [g[0], [1, 2, 3], g[2]]), /grads\[1\]: expected a Float32Array, a Float64Array or a Uint16Array/],
    [() => o.state(1, "m"), /unknown state array for vsgd/],
  ];
  for (const [call, re] of cases) {
    assert.throws(call, (e) => e instanceof Error && !(e instanceof WebAssembly.RuntimeError) && re.test(e.message), String(re));
    assert.ok(Buffer.from(o.save()).equals(before), `${re}: the state changed`);
    p.forEach((x, k) => assert.deepEqual(x, kept[k], `${re}: a parameter changed`));
  }
  assert.deepEqual(o.step(p, g), { applied: 3, skipped: 0 });
  assert.ok(o.paramBuffer(1) instanceof Uint16Array && o.paramBuffer(1).length === 3);
  assert.ok(o.state(2, "mug") instanceof Uint16Array);
  assert.ok(o.state(1, "mug") instanceof Float32Array);
  o.free();
});
