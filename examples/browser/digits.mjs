// Digits trained live: one 64-64-10 MLP per optimizer on the UCI digits (data/digits.csv.gz),
// TensorFlow.js (CPU backend) for the gradients and vsgd/tfjs for the steps. The
// runs share their initial weights and minibatch order, so they differ only by optimizer; a
// run is deterministic, so a checkpoint (weights + each optimizer's vsgd checkpoint) resumes it
// exactly.
import * as tf from "@tensorflow/tfjs";
import { Optimizer } from "vsgd";
import { VsgdOptimizer } from "vsgd/tfjs";

export const RUNS = [
  { key: "vsgd", label: "VSGD", color: "#e4572e", lr: 0.01 },
  { key: "constant_vsgd", label: "Constant VSGD", color: "#f0a202", lr: 0.005 },
  { key: "adam", label: "Adam", color: "#6a4c93", lr: 0.01 },
  { key: "sgdm", label: "SGD + momentum", color: "#2a9d8f", lr: 0.1 },
];
const HIDDEN = 64;
const BATCH = 32;
const SEED = 1234;
const DECAY_EPOCHS = 20; // learning rates halve every 20 epochs (the paper's schedule)
const MAGIC = "VSGDDEMO";

/** xorshift32 in [0, 1). */
function uniform(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

/** data/digits.csv.gz: 64 pixels (0..16) and a label per line; the split of data/README.md. */
export async function loadDigits(url = "/data/digits.csv.gz") {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  const text = await new Response(res.body.pipeThrough(new DecompressionStream("gzip"))).text();
  const rows = text.trim().split("\n").map((l) => l.split(",").map(Number));
  const seen = new Array(10).fill(0);
  const parts = { train: [], test: [], validation: [] };
  for (const r of rows) {
    const label = r[64];
    const j = seen[label]++;
    const part = j % 5 === 3 ? "validation" : j % 5 === 4 ? "test" : "train";
    parts[part].push(r);
  }
  const pack = (rs) => ({
    x: Float32Array.from(rs.flatMap((r) => r.slice(0, 64).map((v) => v / 16))),
    y: Int32Array.from(rs.map((r) => r[64])),
    n: rs.length,
  });
  return { train: pack(parts.train), test: pack(parts.test) };
}

/** PyTorch's default initialization for a linear layer: U(−1/√fan_in, 1/√fan_in). */
function initialWeights() {
  const r = uniform(SEED);
  const u = (n, fanIn) => Float32Array.from({ length: n }, () => (2 * r() - 1) / Math.sqrt(fanIn));
  return { w1: u(64 * HIDDEN, 64), b1: u(HIDDEN, 64), w2: u(HIDDEN * 10, HIDDEN), b2: u(10, HIDDEN) };
}
const SHAPES = { w1: [64, HIDDEN], b1: [HIDDEN], w2: [HIDDEN, 10], b2: [10] };

class Run {
  constructor(def, weights, stepsPerEpoch) {
    Object.assign(this, def);
    this.vars = Object.fromEntries(
      Object.entries(SHAPES).map(([k, shape]) => [k, tf.variable(tf.tensor(weights[k], shape), true, `${def.key}/${k}`)]),
    );
    this.optimizer = new VsgdOptimizer({
      algorithm: def.key,
      lr: def.lr,
      schedule: { kind: "step_decay", every: DECAY_EPOCHS * stepsPerEpoch, factor: 0.5 },
    });
    this.loss = [];
    this.acc = [];
  }

  logits(x) {
    const { w1, b1, w2, b2 } = this.vars;
    // Functions, not chained methods: the tfjs-core bundle does not register every chained op.
    return tf.add(tf.matMul(tf.relu(tf.add(tf.matMul(x, w1), b1)), w2), b2);
  }

  dispose() {
    for (const v of Object.values(this.vars)) v.dispose();
    this.optimizer.dispose();
  }
}

export class Digits {
  /** Call once before creating a Digits: the CPU backend (deterministic, no GPU needed). */
  static async backend() {
    await tf.setBackend("cpu");
    await tf.ready();
  }

  constructor(data) {
    this.data = data;
    this.stepsPerEpoch = Math.ceil(data.train.n / BATCH);
    this.xTest = tf.tensor2d(data.test.x, [data.test.n, 64]);
    this.training = false;
    this.stopRequested = false;
    this.listeners = [];
    this.reset();
  }

  onUpdate(f) {
    this.listeners.push(f);
  }

  emit() {
    for (const f of this.listeners) f(this);
  }

  reset() {
    for (const r of this.runs ?? []) r.dispose();
    const w = initialWeights();
    this.runs = RUNS.map((def) => new Run(def, w, this.stepsPerEpoch));
    this.epoch = 0;
    this.emit();
  }

  /** The minibatches of an epoch: a permutation seeded by the epoch number. */
  order(epoch) {
    const r = uniform(SEED + 7919 * (epoch + 1));
    const idx = Array.from({ length: this.data.train.n }, (_, i) => i);
    for (let i = idx.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [idx[i], idx[j]] = [idx[j], idx[i]];
    }
    return idx;
  }

  async trainEpoch() {
    const { x, y } = this.data.train;
    const idx = this.order(this.epoch);
    const sums = new Float64Array(this.runs.length);
    for (let b = 0; b < this.stepsPerEpoch; b++) {
      const rows = idx.slice(b * BATCH, (b + 1) * BATCH);
      const xb = tf.tensor2d(Float32Array.from(rows.flatMap((i) => Array.from(x.subarray(64 * i, 64 * i + 64)))), [rows.length, 64]);
      const yb = tf.oneHot(tf.tensor1d(rows.map((i) => y[i]), "int32"), 10);
      this.runs.forEach((run, k) => {
        const cost = run.optimizer.minimize(
          () => tf.losses.softmaxCrossEntropy(yb, run.logits(xb)),
          true,
          Object.values(run.vars),
        );
        sums[k] += cost.dataSync()[0] * rows.length;
        cost.dispose();
      });
      tf.dispose([xb, yb]);
      if (b % 6 === 5) await new Promise((r) => setTimeout(r, 0)); // let the page breathe
    }
    this.epoch++;
    this.runs.forEach((run, k) => {
      run.loss.push(sums[k] / this.data.train.n);
      run.acc.push(this.accuracy(run));
    });
    this.emit();
  }

  accuracy(run) {
    const labels = this.data.test.y;
    const pred = tf.tidy(() => tf.argMax(run.logits(this.xTest), 1).dataSync());
    let ok = 0;
    for (let i = 0; i < labels.length; i++) ok += pred[i] === labels[i] ? 1 : 0;
    return ok / labels.length;
  }

  predictions(run, count) {
    return tf.tidy(() => Array.from(tf.argMax(run.logits(tf.slice(this.xTest, [0, 0], [count, 64])), 1).dataSync()));
  }

  /** Trains until `epochs` epochs are done (or stop() is called: it ends after the epoch). */
  async train(epochs) {
    if (this.training) return;
    this.training = true;
    this.stopRequested = false;
    this.emit();
    try {
      while (this.epoch < epochs && !this.stopRequested) await this.trainEpoch();
    } finally {
      this.training = false;
      this.emit();
    }
  }

  stop() {
    this.stopRequested = true;
    this.emit();
  }

  /** Everything needed to resume: epoch, history, weights and each optimizer's vsgd checkpoint. */
  checkpoint() {
    const blobs = [];
    let offset = 0;
    const add = (bytes) => {
      blobs.push(bytes);
      const at = { offset, length: bytes.byteLength };
      offset += bytes.byteLength;
      return at;
    };
    const header = {
      format: 1,
      epoch: this.epoch,
      hidden: HIDDEN,
      runs: this.runs.map((run) => ({
        key: run.key,
        loss: run.loss,
        acc: run.acc,
        weights: Object.fromEntries(
          Object.entries(run.vars).map(([k, v]) => [k, add(new Uint8Array(Float32Array.from(v.dataSync()).buffer))]),
        ),
        optimizer: add(run.optimizer.saveState()),
      })),
    };
    const head = new TextEncoder().encode(JSON.stringify(header));
    const out = new Uint8Array(MAGIC.length + 4 + head.length + offset);
    out.set(new TextEncoder().encode(MAGIC), 0);
    new DataView(out.buffer).setUint32(MAGIC.length, head.length, true);
    out.set(head, MAGIC.length + 4);
    let at = MAGIC.length + 4 + head.length;
    for (const b of blobs) {
      out.set(b, at);
      at += b.byteLength;
    }
    return out;
  }

  /** Restores a checkpoint() (an error leaves the current runs as they were). */
  restore(bytes) {
    const fail = (why) => {
      throw new Error(`not a checkpoint of this demo: ${why}`);
    };
    if (bytes.length < MAGIC.length + 4 || new TextDecoder().decode(bytes.subarray(0, MAGIC.length)) !== MAGIC) fail("bad magic");
    const n = new DataView(bytes.buffer, bytes.byteOffset).getUint32(MAGIC.length, true);
    const base = MAGIC.length + 4 + n;
    if (base > bytes.length) fail("truncated");
    let header;
    try {
      header = JSON.parse(new TextDecoder().decode(bytes.subarray(MAGIC.length + 4, base)));
    } catch {
      fail("bad header");
    }
    if (header.format !== 1 || header.hidden !== HIDDEN || header.runs?.length !== RUNS.length) fail("other version");
    const blob = ({ offset, length }) => {
      if (!(offset >= 0 && length >= 0 && base + offset + length <= bytes.length)) fail("truncated");
      return bytes.slice(base + offset, base + offset + length);
    };
    // Check everything before replacing the current runs.
    const fresh = header.runs.map((saved, k) => {
      if (saved.key !== RUNS[k].key) fail(`run ${k} is ${saved.key}`);
      const weights = {};
      for (const [name, shape] of Object.entries(SHAPES)) {
        const b = blob(saved.weights[name]);
        if (b.byteLength !== 4 * shape.reduce((a, c) => a * c, 1)) fail(`${saved.key}/${name} has the wrong size`);
        weights[name] = new Float32Array(b.buffer);
      }
      const state = blob(saved.optimizer);
      Optimizer.load(state).free(); // throws the decoder's message if damaged
      return { key: saved.key, weights, state, loss: saved.loss, acc: saved.acc };
    });
    for (const r of this.runs) r.dispose();
    this.runs = fresh.map((f) => {
      const run = new Run(RUNS.find((d) => d.key === f.key), f.weights, this.stepsPerEpoch);
      run.optimizer.loadState(f.state);
      run.loss = f.loss;
      run.acc = f.acc;
      return run;
    });
    this.epoch = header.epoch;
    this.emit();
  }
}
