// vsgd/tfjs with TensorFlow.js (pure-JS CPU backend): model.compile + fit and
// optimizer.minimize train, the steps are exactly the package's own, and the state resumes.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { Optimizer } from "vsgd";
import { VsgdOptimizer, vsgd } from "vsgd/tfjs";

await tf.setBackend("cpu");

test("model.compile + fit: a linear regression learns", async () => {
  const xs = tf.randomNormal([128, 4], 0, 1, "float32", 1);
  const ys = xs.matMul(tf.tensor2d([[1], [2], [-1], [0.5]])).add(0.3);
  const model = tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [4], kernelInitializer: "zeros" })] });
  const optimizer = new VsgdOptimizer({ algorithm: "vsgd", lr: 0.1, schedule: { kind: "step_decay", every: 40, factor: 0.5 } });
  model.compile({ optimizer, loss: "meanSquaredError" });
  const h = await model.fit(xs, ys, { epochs: 60, batchSize: 32, verbose: 0, shuffle: false });
  const loss = h.history.loss;
  assert.ok(loss.at(-1) < 0.02 * loss[0], `loss ${loss[0]} -> ${loss.at(-1)}`);
  assert.equal(optimizer.iterations, 60 * 4);
  const [kernelName] = [...optimizer.tensorIds.keys()];
  const m = optimizer.effectiveMomentum(kernelName);
  assert.ok(m instanceof Float32Array && m.length === 4 && m.every((x) => x > 0 && x < 1));
  assert.equal(optimizer.engine.stepCount(optimizer.tensorIds.get(kernelName)), 240);
  optimizer.dispose();
  tf.dispose([xs, ys]);
  model.dispose();
});

test("optimizer.minimize drives a variable to the minimum (every algorithm)", () => {
  for (const algorithm of ["vsgd", "constant_vsgd", "adam", "adamw", "sgdm"]) {
    const v = tf.variable(tf.tensor1d([2, -3, 0.5]));
    const opt = vsgd({ algorithm, lr: 0.05, ...(algorithm === "adamw" ? { weight_decay: 0 } : {}) });
    let first;
    let last;
    for (let i = 0; i < 300; i++) {
      const cost = opt.minimize(() => v.sub(tf.tensor1d([1, 1, 1])).square().sum(), true);
      last = cost.dataSync()[0];
      if (first === undefined) first = last;
      cost.dispose();
    }
    assert.ok(last < 0.02 * first, `${algorithm}: ${first} -> ${last}`);
    opt.dispose();
    v.dispose();
  }
});

test("the adapter's steps are the package's steps, bit for bit", () => {
  const w = tf.variable(tf.tensor2d([[0.5, -0.25], [1, 2]]), true, "w_equiv");
  const x = tf.tensor2d([[1, 2], [3, 4], [-1, 0.5]]);
  const adapter = new VsgdOptimizer({ algorithm: "vsgd", lr: 0.01 });
  const direct = new Optimizer({ algorithm: "vsgd", lr: 0.01 });
  direct.addTensor([2, 2], { name: "w_equiv" });
  const p = Float32Array.from(w.dataSync());
  for (let i = 0; i < 20; i++) {
    const f = () => x.matMul(w).tanh().sum();
    const { grads } = tf.variableGrads(f, [w]);
    const g = Float32Array.from(grads.w_equiv.dataSync());
    adapter.applyGradients(grads);
    direct.step([p], [g]);
    tf.dispose(grads);
  }
  assert.deepEqual(Array.from(w.dataSync()), Array.from(p));
  assert.ok(Buffer.from(adapter.saveState()).equals(Buffer.from(direct.save())), "same checkpoint bytes");
  adapter.dispose();
  direct.free();
  w.dispose();
  x.dispose();
});

test("saveState/loadState resumes exactly", () => {
  const run = (steps, resumeAt) => {
    const v = tf.variable(tf.tensor1d([3, -1]), true, `v_resume_${steps}_${resumeAt}`);
    let opt = new VsgdOptimizer({ algorithm: "adam", lr: 0.05 });
    for (let i = 0; i < steps; i++) {
      if (i === resumeAt) {
        const bytes = opt.saveState();
        opt.dispose();
        opt = new VsgdOptimizer({ algorithm: "adam", lr: 0.05 });
        opt.loadState(bytes);
      }
      opt.minimize(() => v.square().sum().add(v.sum()));
    }
    const out = Array.from(v.dataSync());
    opt.dispose();
    v.dispose();
    return out;
  };
  const straight = run(30, -1);
  assert.deepEqual(run(30, 13).map(String), straight.map(String));
  assert.notDeepEqual(run(30, -1), [3, -1]);
});

test("tfjs serialization: the class is registered, its config round-trips", () => {
  const opt = new VsgdOptimizer({ algorithm: "sgdm", lr: 0.1, nesterov: true });
  assert.deepEqual(opt.getConfig(), { algorithm: "sgdm", lr: 0.1, nesterov: true });
  assert.equal(opt.getClassName(), "VsgdOptimizer");
  const again = VsgdOptimizer.fromConfig(VsgdOptimizer, opt.getConfig());
  assert.deepEqual(again.engine.config(), opt.engine.config());
  assert.throws(() => new VsgdOptimizer({ algorithm: "lion" }), /unknown algorithm 'lion'/);
  opt.dispose();
  again.dispose();
});
