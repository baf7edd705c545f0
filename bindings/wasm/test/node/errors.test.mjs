// Bad input from JavaScript: every call throws a JavaScript Error carrying the core's message,
// never a WebAssembly trap (RuntimeError "unreachable"), and a rejected call changes nothing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Optimizer, defaults } from "vsgd";
import { rng } from "./helpers.mjs";

/** Asserts `f` throws a plain Error (not a wasm trap) whose message matches `re`. */
function rejects(f, re) {
  let error;
  try {
    f();
  } catch (e) {
    error = e;
  }
  assert.ok(error !== undefined, `no error (expected ${re})`);
  assert.ok(!(error instanceof WebAssembly.RuntimeError), `wasm trap: ${error.message}`);
  assert.ok(error instanceof Error, `not an Error: ${error}`);
  assert.match(error.message, re);
}

function trained() {
  const o = new Optimizer({ algorithm: "vsgd", lr: 0.1 });
  o.addTensor([2, 2], { name: "w" });
  o.addTensor([3], { name: "b" });
  const p = [new Float32Array([1, 2, 3, 4]), new Float32Array([5, 6, 7])];
  o.step(p, [new Float32Array([0.1, 0.2, 0.3, 0.4]), new Float32Array([0.1, 0.1, 0.1])]);
  return { o, p };
}

const f32 = (n) => new Float32Array(n);
const f64 = (n) => new Float64Array(n);

// [what, call on a trained optimizer {o, p}, expected message]
const TABLE = [
  ["grad too short", ({ o, p }) => o.step(p, [f32(4), f32(2)]), /length mismatch: grad has 2 elements, expected 3/],
  ["param too long", ({ o }) => o.step([f32(5), f32(3)], [f32(4), f32(3)]), /length mismatch: param has 5 elements, expected 4/],
  ["too few arrays", ({ o, p }) => o.step([p[0]], [f32(4)]), /length mismatch: params has 1 elements, expected 2/],
  ["wrong dtype", ({ o }) => o.step([f64(4), f64(3)], [f64(4), f64(3)]), /params\[0\] is a Float64Array but tensor 0 holds f32 parameters: expected a Float32Array/],
  ["mixed dtypes", ({ o, p }) => o.step(p, [f32(4), f64(3)]), /grads\[1\] is a Float64Array but tensor 1 holds f32 parameters: expected a Float32Array/],
  ["plain arrays", ({ o }) => o.step([[1, 2, 3, 4], [1, 2, 3]], [f32(4), f32(3)]), /params\[0\]: expected a Float32Array, a Float64Array or a Uint16Array/],
  ["Int32Array", ({ o }) => o.stepTensor(0, new Int32Array(4), f32(4)), /param: expected a Float32Array, a Float64Array or a Uint16Array/],
  ["params not an array", ({ o }) => o.step(null, []), /params: expected an array of typed arrays, one per tensor/],
  ["param/grad types differ", ({ o }) => o.stepTensor(0, f32(4), f64(4)), /param is a Float32Array but grad is a Float64Array/],
  ["unknown tensor", ({ o }) => o.stepTensor(7, f32(4), f32(4)), /no tensor with index 7/],
  ["negative tensor", ({ o }) => o.stepCount(-1), /tensor: expected an integer in \[0, 2\^32 - 1\], got -1/],
  ["NaN tensor", ({ o }) => o.tensorInfo(NaN), /tensor: expected an integer/],
  ["fractional tensor", ({ o }) => o.state(0.5, "mug"), /tensor: expected an integer/],
  ["string tensor", ({ o }) => o.paramBuffer("0"), /tensor: expected a number/],
  ["NaN gradient under error", ({ o, p }) => (o.setPolicy("error"), o.step(p, [f32(4).fill(NaN), f32(3)])), /gradient of tensor 0 holds NaN or infinity/],
  ["bad policy", ({ o }) => o.setPolicy("ignore"), /unknown policy 'ignore' \(known: skip, error, propagate\)/],
  ["lr negative", ({ o }) => o.setLr(0, -1), /invalid learning rate -1/],
  ["lr NaN", ({ o }) => o.setLr(0, NaN), /invalid learning rate NaN/],
  ["lr not a number", ({ o }) => o.setLr(0, "0.1"), /lr: expected a number/],
  ["unknown group", ({ o }) => o.setLr(3, 0.1), /no parameter group with index 3/],
  ["setConfig out of range", ({ o }) => o.setConfig(0, { tau1: 2 }), /invalid vsgd config: tau1 = 2 \(allowed: \(0, 1\]\)/],
  ["setConfig unknown name", ({ o }) => o.setConfig(0, { beta1: 0.9 }), /beta1: unknown hyperparameter for vsgd/],
  ["addGroup other algorithm", ({ o }) => o.addGroup({ algorithm: "adam" }), /algorithm mismatch: expected vsgd, got adam/],
  ["addGroup bad value", ({ o }) => o.addGroup({ ghattg: 0 }), /invalid vsgd config: ghattg = 0/],
  ["unknown state array", ({ o }) => o.state(0, "m"), /unknown state array for vsgd \(known: mug, bg, bhg\)/],
  ["shape not an array", ({ o }) => o.addTensor(3), /shape: expected an array of non-negative integers/],
  ["negative dimension", ({ o }) => o.addTensor([2, -1]), /shape\[1\]: expected an integer in \[0, 2\^32 - 1\], got -1/],
  ["fractional dimension", ({ o }) => o.addTensor([1.5]), /shape\[0\]: expected an integer/],
  ["string dimension", ({ o }) => o.addTensor(["3"]), /shape\[0\]: expected a number/],
  ["shape overflows", ({ o }) => o.addTensor([2 ** 32 - 1, 2 ** 32 - 1]), /shape's element count overflows/],
  ["state too large", ({ o }) => o.addTensor([2 ** 30]), /could not allocate \d+ bytes of optimizer state/],
  ["state larger than memory", ({ o }) => o.addTensor([2 ** 28, 3]), /could not allocate \d+ bytes of optimizer state/],
  ["bad dtype", ({ o }) => o.addTensor([2], { dtype: "float32" }), /dtype: expected "f32", "f64", "bf16" or "f16"/],
  ["bad name", ({ o }) => o.addTensor([2], { name: 42 }), /name: expected a string/],
  ["bad state dtype", ({ o }) => o.addTensor([2], { dtype: "bf16", stateDtype: "fp8" }), /stateDtype: expected "f32", "f64" or "bf16"/],
  ["f16 state", ({ o }) => o.addTensor([2], { dtype: "f16", stateDtype: "f16" }), /a f16 parameter cannot have f16 state/],
  ["f64 with bf16 state", ({ o }) => o.addTensor([2], { dtype: "f64", stateDtype: "bf16" }), /a f64 parameter cannot have bf16 state/],
  ["negative seed", ({ o }) => o.addTensor([2], { dtype: "bf16", stateDtype: "bf16", seed: -1 }), /seed: expected an integer in \[0, 2\^53\]/],
  ["seed too large", ({ o }) => o.addTensor([2], { dtype: "bf16", stateDtype: "bf16", seed: 2n ** 64n }), /seed: expected an integer in \[0, 2\^64 - 1\]/],
  ["string seed", ({ o }) => o.addTensor([2], { seed: "1" }), /seed: expected a number or a BigInt/],
  ["Uint16Array for an f32 tensor", ({ o, p }) => o.step([p[0], new Uint16Array(3)], [f32(4), f32(3)]), /params\[1\] is a Uint16Array but tensor 1 holds f32 parameters: expected a Float32Array/],
  ["Uint16Array for an f32 tensor (stepTensor)", ({ o }) => o.stepTensor(0, new Uint16Array(4), new Uint16Array(4)), /param is a Uint16Array but tensor 0 holds f32 parameters: expected a Float32Array/],
  ["unknown group for a tensor", ({ o }) => o.addTensor([2], { group: 9 }), /no parameter group with index 9/],
  ["options not an object", ({ o }) => o.addTensor([2], "w"), /options: expected an object/],
  ["schedule without kind", ({ o }) => o.setSchedule(0, {}), /schedule: expected \{kind/],
  ["schedule unknown kind", ({ o }) => o.setSchedule(0, { kind: "linear" }), /unknown schedule kind 'linear'/],
  ["schedule missing field", ({ o }) => o.setSchedule(0, { kind: "step_decay", every: 2 }), /schedule step_decay: missing 'factor'/],
  ["schedule misspelt field", ({ o }) => o.setSchedule(0, { kind: "cosine", total: 5, minFactor: 0.1 }), /schedule cosine: unknown field 'minFactor'/],
  ["schedule out of range", ({ o }) => o.setSchedule(0, { kind: "step_decay", every: 0, factor: 0.5 }), /invalid schedule: every \(allowed: >= 1\)/],
  ["schedule negative count", ({ o }) => o.setSchedule(0, { kind: "cosine", total: -3 }), /total: expected a non-negative integer, got -3/],
  ["one_cycle too short", ({ o }) => o.setSchedule(0, { kind: "one_cycle", total: 2 }), /invalid schedule: total \(allowed: >= 3\)/],
  ["lrAt at 0", ({ o }) => o.lrAt(0, 0), /invalid step number 0/],
  ["buffers of a missing tensor", ({ o }) => o.gradBuffer(2), /no tensor with index 2/],
  ["stepBuffers without buffers", ({ o }) => o.stepBuffers(), /tensor 0 has no buffers/],
];

for (const [what, call, re] of TABLE) {
  test(`bad input throws and changes nothing: ${what}`, () => {
    const t = trained();
    const before = Buffer.from(t.o.save());
    const params = t.p.map((x) => x.slice());
    rejects(() => call(t), re);
    t.o.setPolicy("skip");
    assert.ok(Buffer.from(t.o.save()).equals(before), "the optimizer's state changed");
    t.p.forEach((x, k) => assert.deepEqual(x, params[k], "a parameter changed"));
    // Still usable.
    assert.deepEqual(t.o.step(t.p, [f32(4).fill(0.1), f32(3).fill(0.1)]), { applied: 2, skipped: 0 });
    t.o.free();
  });
}

test("bad constructor options", () => {
  rejects(() => new Optimizer({ algorithm: "lion" }), /unknown algorithm 'lion' \(known: vsgd, constant_vsgd, adam, adamw, sgdm\)/);
  rejects(() => new Optimizer({ algorithm: 3 }), /algorithm: expected a string/);
  rejects(() => new Optimizer({ lr: -1 }), /invalid vsgd config: lr = -1 \(allowed: \(0, 1e30\]\)/);
  rejects(() => new Optimizer({ lr: 0 }), /invalid vsgd config: lr = 0/);
  rejects(() => new Optimizer({ lr: NaN }), /invalid vsgd config: lr = NaN/);
  rejects(() => new Optimizer({ lr: "0.1" }), /lr: expected a number/);
  rejects(() => new Optimizer({ lr: true }), /lr: expected a number/);
  rejects(() => new Optimizer({ maximize: "yes" }), /maximize: expected a boolean/);
  rejects(() => new Optimizer({ maximize: 2 }), /maximize: invalid vsgd config: maximize = 2 \(allowed: 0 \(false\) or 1 \(true\)\)/);
  rejects(() => new Optimizer({ beta1: 0.9 }), /beta1: unknown hyperparameter for vsgd \(known: lr, ghattg/);
  rejects(() => new Optimizer({ algorithm: "sgdm", nesterov: true, momentum: 0 }), /invalid sgdm config: momentum = 0 \(allowed: > 0 with nesterov\)/);
  rejects(() => new Optimizer({ algorithm: "adamw", lr: 10, weight_decay: 1 }), /lr \* weight_decay <= 1/);
  rejects(() => new Optimizer({ policy: "never" }), /unknown policy 'never'/);
  rejects(() => new Optimizer("vsgd"), /options: expected an object/);
  rejects(() => new Optimizer([]), /options: expected an object/);
  rejects(() => defaults("lion"), /unknown algorithm 'lion'/);
  // null and undefined mean "all defaults"
  new Optimizer(null).free();
  new Optimizer(undefined).free();
});

test("a view into wasm memory that goes stale while in use is an error, not a trap", () => {
  const o = new Optimizer({ algorithm: "sgdm" });
  o.addTensor([4]);
  const view = o.paramBuffer(0);
  view.set([1, 2, 3, 4]);
  // Passing the optimizer's own buffers to the copying step works while memory does not grow.
  o.step([view], [o.gradBuffer(0)]);
  // A large tensor grows memory; the stale view is then an empty array of the wrong length.
  o.addTensor([1 << 22]);
  rejects(() => o.stepTensor(0, view, f32(4)), /length mismatch: param has 0 elements, expected 4/);
  o.free();
});

test("garbage checkpoints: every truncation and every single-bit flip is an Error", () => {
  const { o } = trained();
  const good = o.save();
  o.free();
  const check = (bytes) => {
    try {
      Optimizer.load(bytes).free();
      return true;
    } catch (e) {
      assert.ok(!(e instanceof WebAssembly.RuntimeError), `wasm trap: ${e.message}`);
      assert.ok(e instanceof Error);
      assert.ok(e.message.length > 0);
      return false;
    }
  };
  for (let n = 0; n < good.length; n++) assert.equal(check(good.slice(0, n)), false, `truncated to ${n} loaded`);
  for (let i = 0; i < good.length * 8; i++) {
    const b = good.slice();
    b[i >> 3] ^= 1 << (i & 7);
    assert.equal(check(b), false, `bit ${i} flipped loaded`);
  }
  const r = rng(11);
  for (let k = 0; k < 300; k++) {
    const b = Uint8Array.from({ length: Math.floor((r() + 1) * 200) }, () => Math.floor((r() + 1) * 128));
    if (k % 3 === 0) b.set(good.slice(0, Math.min(40, b.length))); // a valid start
    assert.equal(check(b), false);
  }
  rejects(() => Optimizer.load("vsgd-checkpoint"), /checkpoint: expected a Uint8Array or an ArrayBuffer/);
  rejects(() => Optimizer.load(new Uint8Array(0)), /./);
  rejects(() => Optimizer.load(new Uint8Array([1, 2, 3])), /not a vsgd checkpoint/);
  assert.equal(check(good), true, "the good checkpoint still loads");
});

test("random arguments to every method: only Errors, never a trap", () => {
  const r = rng(5);
  const pick = (a) => a[Math.floor(((r() + 1) / 2) * a.length)];
  const values = () => [
    undefined, null, 0, 1, -1, 2.5, NaN, Infinity, -0, 2 ** 32, 2 ** 53, 1e300, "", "w", "0", true, false,
    [], [1], [2, 2], [-1], [1e10, 1e10], {}, { kind: "cosine" }, { lr: 2 }, { dtype: "f64" },
    { dtype: "bf16" }, { dtype: "f16", stateDtype: "bf16", seed: 3n }, { dtype: "f32", stateDtype: "bf16" },
    f32(0), f32(4), f32(3).fill(NaN), f64(4), new Uint16Array(2), new Uint16Array(2).fill(0x7fc0),
    [new Uint16Array(2)], [f32(2), new Uint16Array(2)], new Int8Array(4), new Uint8Array(9), new ArrayBuffer(8),
    Symbol("s"), () => 1, 10n, new Map(), new Date(0),
  ];
  const methods = [
    "addGroup", "config", "setConfig", "setLr", "setSchedule", "schedule", "lrAt", "setPolicy", "addTensor",
    "find", "tensorInfo", "stepCount", "step", "stepTensor", "paramBuffer", "gradBuffer", "stepBuffers",
    "state", "effectiveMomentum", "lastSkipped", "save",
  ];
  let threw = 0;
  for (let k = 0; k < 3000; k++) {
    const t = k % 50 === 0 ? trained() : null;
    const o = t ? t.o : new Optimizer({ algorithm: pick(["vsgd", "adam", "sgdm"]) });
    if (!t) o.addTensor([2]);
    const m = pick(methods);
    const args = [pick(values()), pick(values()), pick(values())];
    try {
      o[m](...args);
    } catch (e) {
      threw++;
      assert.ok(!(e instanceof WebAssembly.RuntimeError), `${m}(${args.map(String)}): wasm trap ${e.message}`);
      assert.ok(e instanceof Error || e instanceof TypeError, `${m}: ${e}`);
    }
    o.free();
  }
  assert.ok(threw > 1000, `only ${threw} calls threw`);
  // The module is still healthy.
  const { o, p } = trained();
  o.step(p, [f32(4), f32(3)]);
  o.free();
});
