// The JavaScript API against the core's contract: options and defaults, the three ways to
// step (copies, one tensor, zero-copy buffers) giving the same bits, the view re-take rule,
// groups, schedules, the non-finite policy, read-outs, checkpoints and the garbage collector.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import init, { Optimizer, defaults, kernelPath, libraryVersion } from "vsgd";
import { rng } from "./helpers.mjs";

await init(); // a no-op in Node.js, kept so that shared code runs everywhere

const ALGORITHMS = ["vsgd", "constant_vsgd", "adam", "adamw", "sgdm"];
const bits = (a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a, b, msg) => assert.ok(bits(a).equals(bits(b)), msg);

test("simd128 build, library version", () => {
  assert.equal(kernelPath(), "simd128");
  assert.match(libraryVersion(), /^vsgd \d+\.\d+\.\d+$/);
});

test("defaults are the core's (README table)", () => {
  assert.deepEqual(defaults("vsgd"), {
    lr: 0.1, ghattg: 30, ps: 1e-8, tau1: 0.81, tau2: 0.9, eps: 1e-8, weight_decay: 0, l2: 0, maximize: false,
  });
  assert.deepEqual(defaults("constant_vsgd"), {
    lr: 0.1, ghattg: 30, ps: 1e-8, tau: 0.9, eps: 1e-8, weight_decay: 0, l2: 0, maximize: false,
  });
  assert.deepEqual(defaults("adam"), { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0, l2: 0, maximize: false });
  assert.equal(defaults("adamw").weight_decay, 0.01);
  assert.deepEqual(defaults("sgdm"), { lr: 0.01, momentum: 0.9, dampening: 0, nesterov: false, weight_decay: 0, l2: 0, maximize: false });
  const o = new Optimizer();
  assert.equal(o.algorithm, "vsgd");
  assert.equal(o.policy, "skip");
  assert.deepEqual(o.config(), defaults("vsgd"));
  o.free();
});

test("options set the algorithm, hyperparameters and policy", () => {
  const o = new Optimizer({ algorithm: "sgdm", lr: 0.5, nesterov: true, maximize: true, policy: "error" });
  assert.equal(o.algorithm, "sgdm");
  assert.deepEqual(o.config(0), { ...defaults("sgdm"), lr: 0.5, nesterov: true, maximize: true });
  assert.equal(o.policy, "error");
  assert.deepEqual(o.stateNames, ["momentum"]);
  o.setConfig(0, { lr: 0.25 });
  assert.equal(o.config(0).lr, 0.25);
  o.setLr(0, 0); // 0 freezes the group: allowed at run time
  assert.equal(o.config(0).lr, 0);
  o.free();
});

function randomArrays(Arr, shapes, seed) {
  const r = rng(seed);
  return shapes.map((s) => Arr.from({ length: s.reduce((a, b) => a * b, 1) }, () => r() * 3));
}

for (const algorithm of ALGORITHMS) {
  for (const dtype of ["f32", "f64"]) {
    test(`${algorithm} ${dtype}: step, stepTensor and stepBuffers give the same bits`, () => {
      const Arr = dtype === "f32" ? Float32Array : Float64Array;
      const shapes = [[3, 5], [1], [], [37], [0]];
      const make = () => {
        const o = new Optimizer({ algorithm, lr: 0.01 });
        const g1 = o.addGroup({ lr: 0.003 });
        shapes.forEach((s, k) => o.addTensor(s, { dtype, name: `t${k}`, group: k % 2 ? g1 : 0 }));
        o.setSchedule(g1, { kind: "cosine", total: 20, min_factor: 0.1, warmup: 3 });
        return o;
      };
      const [a, b, c] = [make(), make(), make()];
      const pa = randomArrays(Arr, shapes, 7);
      const pb = pa.map((p) => p.slice());
      shapes.forEach((_, k) => c.paramBuffer(k).set(pa[k]));
      for (let s = 0; s < 25; s++) {
        const grads = randomArrays(Arr, shapes, 100 + s);
        assert.deepEqual(a.step(pa, grads), { applied: shapes.length, skipped: 0 });
        shapes.forEach((_, k) => assert.equal(b.stepTensor(k, pb[k], grads[k]), "applied"));
        shapes.forEach((_, k) => c.gradBuffer(k).set(grads[k]));
        assert.deepEqual(c.stepBuffers(), { applied: shapes.length, skipped: 0 });
      }
      const ca = a.save();
      assert.ok(Buffer.from(ca).equals(Buffer.from(b.save())), "state differs (stepTensor)");
      assert.ok(Buffer.from(ca).equals(Buffer.from(c.save())), "state differs (stepBuffers)");
      shapes.forEach((_, k) => {
        sameBits(pa[k], pb[k], `param ${k} (stepTensor)`);
        sameBits(pa[k], c.paramBuffer(k), `param ${k} (stepBuffers)`);
        assert.ok(pa[k].every(Number.isFinite));
      });
      assert.equal(a.stepCount(0), 25);
      for (const o of [a, b, c]) o.free();
    });
  }
}

test("the parameters move: VSGD minimizes a quadratic", () => {
  const o = new Optimizer({ algorithm: "vsgd", lr: 0.05 });
  o.addTensor([3]);
  const p = new Float32Array([1, -1, 0.5]);
  for (let i = 0; i < 300; i++) o.step([p], [p.slice()]);
  assert.ok(p.every((x) => Math.abs(x) < 0.1), `${p}`);
  o.free();
});

test("zero-copy views: valid across stepBuffers, emptied when memory grows, re-taken", () => {
  const o = new Optimizer({ algorithm: "adam", lr: 0.01 });
  o.addTensor([1000]);
  let p = o.paramBuffer(0);
  let g = o.gradBuffer(0);
  p.fill(1);
  const memory = p.buffer;
  for (let i = 0; i < 200; i++) {
    g.fill(0.5);
    o.stepBuffers();
  }
  assert.equal(p.buffer, memory, "stepBuffers grew memory");
  assert.equal(p.length, 1000);
  assert.ok(p[0] < 1, "the view sees the update");
  const before = Float32Array.from(p);
  // 4M more elements of Adam state (32 MB): memory must grow.
  o.addTensor([4 << 20]);
  assert.equal(p.length, 0, "a view taken before memory grew must be empty");
  assert.equal(g.length, 0);
  p = o.paramBuffer(0);
  g = o.gradBuffer(0);
  sameBits(p, before, "the buffer's contents survive; the new view sees them");
  assert.throws(() => o.stepBuffers(), /tensor 1 has no buffers: call paramBuffer\(1\)/);
  o.paramBuffer(1);
  o.gradBuffer(1);
  p = o.paramBuffer(0);
  assert.deepEqual(o.stepBuffers(), { applied: 2, skipped: 0 });
  assert.notEqual(p.length, 0);
  o.free();
});

test("f32 and f64 tensors step together in step(): the bits of stepTensor one by one", () => {
  const make = () => {
    const o = new Optimizer();
    o.addTensor([2]);
    o.addTensor([2], { dtype: "f64" });
    return o;
  };
  const [o, l] = [make(), make()];
  const [p32, p64] = [new Float32Array([1, 2]), new Float64Array([1, 2])];
  const [q32, q64] = [p32.slice(), p64.slice()];
  for (let s = 0; s < 3; s++) {
    const [g32, g64] = [new Float32Array([0.1, -0.2 * s]), new Float64Array([0.3 * s, 0.1])];
    assert.deepEqual(o.step([p32, p64], [g32, g64]), { applied: 2, skipped: 0 });
    assert.equal(l.stepTensor(0, q32, g32), "applied");
    assert.equal(l.stepTensor(1, q64, g64), "applied");
  }
  sameBits(p32, q32, "f32 tensor");
  sameBits(p64, q64, "f64 tensor");
  assert.ok(Buffer.from(o.save()).equals(Buffer.from(l.save())), "state differs");
  assert.throws(() => o.step([p32, p32], [p32, p32]), /params\[1\] is a Float32Array but tensor 1 holds f64 parameters: expected a Float64Array/);
  assert.throws(() => o.stepTensor(1, p32, p32), /param is a Float32Array but tensor 1 holds f64 parameters: expected a Float64Array/);
  assert.ok(o.state(1, "mug") instanceof Float64Array);
  assert.ok(o.state(0, "mug") instanceof Float32Array);
  o.free();
  l.free();
});

test("tensor registry: find, tensorInfo, numTensors, numGroups", () => {
  const o = new Optimizer({ algorithm: "adamw" });
  const g = o.addGroup({ lr: 0.5, weight_decay: 0 });
  assert.equal(o.addTensor([2, 3], { name: "w" }), 0);
  assert.equal(o.addTensor([], { name: "scale", dtype: "f64", group: g }), 1);
  assert.equal(o.numTensors, 2);
  assert.equal(o.numGroups, 2);
  assert.equal(o.find("scale"), 1);
  assert.equal(o.find("nope"), undefined);
  assert.deepEqual(o.tensorInfo(0), { name: "w", shape: [2, 3], len: 6, dtype: "f32", stateDtype: "f32", seed: null, group: 0, step: 0 });
  assert.deepEqual(o.tensorInfo(1), { name: "scale", shape: [], len: 1, dtype: "f64", stateDtype: "f64", seed: null, group: 1, step: 0 });
  assert.deepEqual(o.config(g), { ...defaults("adamw"), lr: 0.5, weight_decay: 0 });
  o.free();
});

test("a group's hyperparameters apply to its tensors", () => {
  const a = new Optimizer({ algorithm: "adam", lr: 0.1 });
  const g = a.addGroup({ lr: 0.02, beta1: 0.5 });
  a.addTensor([4]);
  a.addTensor([4], { group: g });
  const b = new Optimizer({ algorithm: "adam", lr: 0.02, beta1: 0.5 });
  b.addTensor([4]);
  const [p0, p1, q] = [new Float32Array([1, 2, 3, 4]), new Float32Array([1, 2, 3, 4]), new Float32Array([1, 2, 3, 4])];
  for (let s = 0; s < 10; s++) {
    const grad = new Float32Array([0.3, -0.1, 0.2, s / 10]);
    a.step([p0, p1], [grad, grad]);
    b.step([q], [grad]);
  }
  sameBits(p1, q, "group 1 ran with its own lr and beta1");
  assert.ok(!bits(p0).equals(bits(p1)));
  a.free();
  b.free();
});

test("schedules: round trip, lrAt, and the steps follow them", () => {
  const o = new Optimizer({ algorithm: "sgdm", lr: 0.2, momentum: 0 });
  const cases = [
    { kind: "constant", warmup: 0 },
    { kind: "step_decay", every: 3, factor: 0.5, warmup: 0 },
    { kind: "cosine", total: 10, min_factor: 0.25, warmup: 2 },
    { kind: "one_cycle", total: 30, pct_start: 0.3, div_factor: 25, final_div_factor: 10000, warmup: 0 },
  ];
  for (const s of cases) {
    o.setSchedule(0, s);
    assert.deepEqual(o.schedule(0), s);
  }
  assert.deepEqual(o.schedule(), cases[3]);
  o.setSchedule(0, { kind: "step_decay", every: 3, factor: 0.5 });
  for (let t = 1; t <= 10; t++) {
    assert.equal(o.lrAt(0, t), 0.2 * 0.5 ** Math.floor((t - 1) / 3));
  }
  o.setSchedule(0, { kind: "cosine", total: 4, warmup: 4 });
  assert.deepEqual(o.schedule(0), { kind: "cosine", total: 4, min_factor: 0, warmup: 4 });
  assert.equal(o.lrAt(0, 1), 0.2 * 0.25 * (1 + Math.cos(0)) / 2);
  // SGD without momentum: θ ← θ − lr_t·g, so the steps read back the schedule.
  o.setSchedule(0, { kind: "step_decay", every: 2, factor: 0.5 });
  o.addTensor([1], { dtype: "f64" });
  const p = new Float64Array([0]);
  let expected = 0;
  for (let t = 1; t <= 6; t++) {
    o.step([p], [new Float64Array([1])]);
    expected -= 0.2 * 0.5 ** Math.floor((t - 1) / 2);
    assert.equal(p[0], expected, `step ${t}`);
  }
  o.free();
});

test("non-finite gradients: skip leaves the tensor bit-identical, error throws, propagate applies", () => {
  const o = new Optimizer({ algorithm: "vsgd", lr: 0.1 });
  o.addTensor([3]);
  o.addTensor([2]);
  const p0 = new Float32Array([1, 2, 3]);
  const p1 = new Float32Array([4, 5]);
  o.step([p0, p1], [new Float32Array([0.1, 0.2, 0.3]), new Float32Array([0.1, 0.1])]);
  const [s0, s1, ckpt] = [p0.slice(), p1.slice(), o.save()];
  assert.deepEqual(o.step([p0, p1], [new Float32Array([NaN, 0, 0]), new Float32Array([0.1, 0.1])]), { applied: 1, skipped: 1 });
  assert.deepEqual(o.lastSkipped(), [0]);
  sameBits(p0, s0, "skipped tensor untouched");
  assert.ok(!bits(p1).equals(bits(s1)));
  assert.equal(o.stepCount(0), 1);
  assert.equal(o.stepCount(1), 2);

  const e = Optimizer.load(ckpt);
  e.setPolicy("error");
  const q0 = s0.slice();
  const q1 = s1.slice();
  const before = Buffer.from(e.save());
  assert.throws(() => e.step([q0, q1], [new Float32Array([1, 1, 1]), new Float32Array([Infinity, 0])]), /gradient of tensor 1 holds NaN or infinity; nothing was updated/);
  assert.ok(Buffer.from(e.save()).equals(before), "state changed by a rejected step");
  sameBits(q0, s0, "param 0 changed by a rejected step");
  sameBits(q1, s1);

  e.setPolicy("propagate");
  e.step([q0, q1], [new Float32Array([NaN, 0, 0]), new Float32Array([0, 0])]);
  assert.ok(Number.isNaN(q0[0]));
  assert.equal(e.policy, "propagate");
  o.free();
  e.free();
});

test("state and effective momentum read-out", () => {
  for (const dtype of ["f32", "f64"]) {
    const Arr = dtype === "f32" ? Float32Array : Float64Array;
    const round = dtype === "f32" ? Math.fround : (x) => x;
    const o = new Optimizer({ lr: 0.01 });
    o.addTensor([50], { dtype });
    const p = Arr.from({ length: 50 }, (_, i) => i / 10);
    const r = rng(3);
    for (let s = 0; s < 20; s++) o.step([p], [Arr.from({ length: 50 }, () => r())]);
    const [bg, bhg] = [o.state(0, "bg"), o.state(0, "bhg")];
    const m = o.effectiveMomentum(0);
    assert.ok(m instanceof Arr);
    for (let i = 0; i < 50; i++) assert.equal(m[i], round(bhg[i] / round(bg[i] + bhg[i])));
    assert.ok(m.every((x) => x > 0 && x < 1));
    o.free();
  }
  const adam = new Optimizer({ algorithm: "adam" });
  adam.addTensor([1]);
  assert.throws(() => adam.effectiveMomentum(0), /algorithm mismatch: expected vsgd, got adam/);
  assert.throws(() => adam.state(0, "mug"), /unknown state array for adam \(known: m, v\)/);
  adam.free();
});

test("save/load: the same bytes again, and the same continuation", () => {
  const o = new Optimizer({ algorithm: "constant_vsgd", lr: 0.05, policy: "propagate" });
  o.addGroup({ lr: 0.01 });
  o.setSchedule(1, { kind: "one_cycle", total: 50 });
  o.addTensor([4, 4], { name: "w" });
  o.addTensor([4], { name: "b", group: 1, dtype: "f64" });
  const w = new Float32Array(16).fill(0.5);
  const b = new Float64Array(4).fill(-0.5);
  for (let s = 0; s < 5; s++) {
    o.stepTensor(0, w, w.map((x) => x * 0.3 + s));
    o.stepTensor(1, b, b.map((x) => x - s));
  }
  const bytes = o.save();
  assert.ok(bytes instanceof Uint8Array);
  const l = Optimizer.load(bytes);
  const l2 = Optimizer.load(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)); // ArrayBuffer
  assert.ok(Buffer.from(l.save()).equals(Buffer.from(bytes)));
  assert.ok(Buffer.from(l2.save()).equals(Buffer.from(bytes)));
  assert.equal(l.policy, "propagate");
  assert.deepEqual(l.schedule(1), o.schedule(1));
  assert.deepEqual(l.tensorInfo(1), o.tensorInfo(1));
  const [w2, b2] = [w.slice(), b.slice()];
  for (let s = 0; s < 5; s++) {
    const gw = w.map((x) => x * 0.1);
    const gb = b.map((x) => x + s);
    o.stepTensor(0, w, gw);
    o.stepTensor(1, b, gb);
    l.stepTensor(0, w2, gw);
    l.stepTensor(1, b2, gb);
  }
  sameBits(w, w2);
  sameBits(b, b2);
  assert.ok(Buffer.from(l.save()).equals(Buffer.from(o.save())));
  // A Node.js Buffer is a Uint8Array.
  Optimizer.load(Buffer.from(bytes)).free();
  for (const x of [o, l, l2]) x.free();
});

test("free(): twice is harmless, use afterwards throws a clear Error", () => {
  const o = new Optimizer();
  o.addTensor([2]);
  o.free();
  o.free();
  assert.throws(() => o.step([new Float32Array(2)], [new Float32Array(2)]), {
    name: "Error",
    message: /this Optimizer was freed/,
  });
  assert.throws(() => o.save(), /this Optimizer was freed/);
});

test("FinalizationRegistry: optimizers never freed are reclaimed after garbage collection", () => {
  // 60 optimizers of 48 MB of state each (2.9 GB in all) that are never freed: without the
  // registry wasm memory (at most 4 GB) would run out; with it, it stays small.
  const script = `
    const { Optimizer } = require("vsgd");
    (async () => {
      let size = 0;
      for (let i = 0; i < 60; i++) {
        const o = new Optimizer();
        o.addTensor([4 << 20]);
        size = o.paramBuffer(0).buffer.byteLength;
        if (i % 4 === 3) { globalThis.gc(); await new Promise((r) => setTimeout(r, 5)); }
      }
      console.log(size);
    })();`;
  const r = spawnSync(process.execPath, ["--expose-gc", "-e", script], { cwd: new URL("../..", import.meta.url) });
  assert.equal(r.status, 0, r.stderr.toString());
  const bytes = Number(r.stdout.toString());
  assert.ok(bytes < 1024 * 1024 * 1024, `wasm memory grew to ${bytes} bytes`);
});
