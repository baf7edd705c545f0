// Checkpoints across the wasm/native border: a state saved by native vsgd loads in the npm
// package and the run continues to the same bits as an uninterrupted native run; a state
// saved by the package is read by native `vsgd inspect` exactly as native's own.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { Optimizer } from "vsgd";
import { parseCase } from "../../replay.mjs";
import { stringify } from "../../lib/serde-json.mjs";
import { cases, nativeCli, run, REPLAY } from "./helpers.mjs";

const cli = nativeCli();
const NAMES = ["vsgd-lr-schedule.json", "vsgd-long-run.json", "constant-vsgd-variant.json", "adamw-schedule.json", "sgdm-nesterov.json"];

/** The case cut after step `s`, recording the parameters at `s`. */
function truncated(text, s) {
  const c = JSON.parse(text);
  c.steps = s;
  c.expected = { checkpoints: [s] };
  return JSON.stringify(c);
}

for (const name of NAMES) {
  test(`${name}: native checkpoint -> wasm resumes to the native bits; wasm checkpoint -> native inspect`, { skip: cli.skip }, () => {
    const dir = mkdtempSync(join(tmpdir(), "vsgd-cross-"));
    try {
      const file = cases().find((f) => basename(f) === name);
      const text = readFileSync(file, "utf8");
      const full = parseCase(text);
      const s = Math.floor(full.steps / 2);
      const cut = join(dir, "cut.json");
      writeFileSync(cut, truncated(text, s));
      for (const dtype of ["f32", "f64"]) {
        const Arr = dtype === "f32" ? Float32Array : Float64Array;
        const nPath = join(dir, `native-${dtype}.vsgdckpt`);
        const wPath = join(dir, `wasm-${dtype}.vsgdckpt`);
        const native = run(cli.bin, ["replay", cut, "--dtype", dtype, "--save", nPath]);
        assert.equal(native.status, 0, native.stderr);
        const wasm = run(process.execPath, [REPLAY, cut, "--dtype", dtype, "--save", wPath]);
        assert.equal(wasm.status, 0, wasm.stderr);
        const nBytes = readFileSync(nPath);
        assert.ok(nBytes.equals(readFileSync(wPath)), `${dtype}: checkpoint bytes differ`);

        // native -> wasm: load the native bytes, continue from the native parameters.
        const opt = Optimizer.load(nBytes);
        const params = JSON.parse(native.stdout.toString()).param[0].map((p) => Arr.from(p));
        const recorded = [];
        for (let k = s; k < full.steps; k++) {
          if (full.lrPerStep) opt.setLr(0, full.lrPerStep[k]);
          opt.step(params, full.grads.map((g) => Arr.from(g[k])));
          if (full.checkpoints.some((c) => Number(c) === k + 1)) recorded.push(params.map((p) => Array.from(p)));
        }
        const state = new Map(opt.stateNames.map((n) => [n, full.shapes.map((_, k) => Array.from(opt.state(k, n)))]));
        const uninterrupted = JSON.parse(run(cli.bin, ["replay", file, "--dtype", dtype]).stdout.toString());
        const later = full.checkpoints.map(Number).filter((c) => c > s).length;
        assert.equal(recorded.length, later);
        assert.equal(stringify(recorded), stringify(uninterrupted.param.slice(uninterrupted.param.length - later)), `${dtype}: parameters after resuming differ`);
        assert.equal(stringify(state), stringify(uninterrupted.state), `${dtype}: state after resuming differs`);
        // ... and the state saved at the end is native's final state, byte for byte.
        const fPath = join(dir, `final-${dtype}.vsgdckpt`);
        run(cli.bin, ["replay", file, "--dtype", dtype, "--save", fPath]);
        assert.ok(Buffer.from(opt.save()).equals(readFileSync(fPath)), `${dtype}: final checkpoint differs`);
        opt.free();

        // wasm -> native: inspect reads the package's bytes as its own.
        const iw = run(cli.bin, ["inspect", wPath]);
        const inat = run(cli.bin, ["inspect", nPath]);
        assert.equal(iw.status, 0, iw.stderr);
        assert.match(iw.stdout.toString(), new RegExp(`step ${s}\\b`));
        assert.equal(iw.stdout.toString().replace(wPath, ""), inat.stdout.toString().replace(nPath, ""));
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("a checkpoint made with the JS API (groups, schedules, names, both dtypes) passes native inspect", { skip: cli.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vsgd-inspect-"));
  try {
    const o = new Optimizer({ algorithm: "vsgd", lr: 0.05, policy: "error" });
    const g = o.addGroup({ lr: 0.01, tau1: 0.5 });
    o.setSchedule(g, { kind: "step_decay", every: 10, factor: 0.5, warmup: 2 });
    o.addTensor([3, 2], { name: "weight" });
    o.addTensor([2], { name: "bias", dtype: "f64", group: g });
    const w = new Float32Array(6).fill(1);
    const b = new Float64Array(2).fill(-1);
    for (let s = 0; s < 4; s++) {
      o.stepTensor(0, w, w.map((x) => x / 3));
      o.stepTensor(1, b, b.map((x) => x * 2));
    }
    const path = join(dir, "api.vsgdckpt");
    writeFileSync(path, o.save());
    o.free();
    const r = run(cli.bin, ["inspect", path]);
    assert.equal(r.status, 0, r.stderr);
    const out = r.stdout.toString();
    assert.match(out, /algorithm: vsgd/);
    assert.match(out, /non-finite policy: error/);
    assert.match(out, /group 1: lr=0.01 .*tau1=0.5/);
    assert.match(out, /schedule: step_decay every=10 factor=0.5, warmup=2/);
    assert.match(out, /tensor 0 "weight": shape \[3, 2\], f32, group 0, step 4/);
    assert.match(out, /tensor 1 "bias": shape \[2\], f64, group 1, step 4/);
    assert.match(out, /effective momentum/);
    // A damaged copy is rejected by native too.
    const bytes = readFileSync(path);
    bytes[bytes.length - 20] ^= 4;
    writeFileSync(path, bytes);
    assert.notEqual(run(cli.bin, ["inspect", path]).status, 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
