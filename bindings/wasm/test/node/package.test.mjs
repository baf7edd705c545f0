// The package as users get it: `npm pack` of pkg/, installed into a separate directory, used
// through ES module import and CommonJS require, the `vsgd/tfjs` subpath, and its TypeScript
// declarations checked by tsc (node16 resolution for ESM and CommonJS, bundler resolution).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { run, sh, WASM_DIR } from "./helpers.mjs";

let dir;
let app;
let tarball;

before(() => {
  dir = mkdtempSync(join(tmpdir(), "vsgd-pack-"));
  const out = sh("npm", ["pack", join(WASM_DIR, "pkg"), "--pack-destination", dir, "--json"], { cwd: dir });
  const [info] = JSON.parse(out.toString());
  tarball = { path: join(dir, info.filename), files: info.files.map((f) => f.path), size: info.size };
  app = join(dir, "app");
  mkdirSync(app);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  // Offline: the package has no dependencies (its tfjs peer is optional).
  sh("npm", ["install", "--offline", "--no-audit", "--no-fund", tarball.path], { cwd: app });
});

after(() => rmSync(dir, { recursive: true, force: true }));

test("the tarball holds the package and nothing else", () => {
  const files = tarball.files.sort();
  for (const f of ["package.json", "README.md", "web/vsgd.js", "web/vsgd_bg.wasm", "web/vsgd.d.ts", "node/vsgd.js",
    "node/vsgd_bg.wasm", "node/index.mjs", "node/index.d.mts", "tfjs/index.mjs", "tfjs/index.d.ts"]) {
    assert.ok(files.includes(f), `${f} missing from the tarball`);
  }
  assert.ok(!files.some((f) => f.endsWith(".rs") || f.startsWith("target")), `${files}`);
  assert.ok(readdirSync(join(app, "node_modules", "vsgd")).includes("package.json"));
});

const program = (lang) => `
  const p = new Float32Array([1, -2, 3]);
  const o = new Optimizer({ algorithm: "vsgd", lr: 0.05 });
  o.addTensor([3], { name: "w" });
  for (let i = 0; i < 200; i++) o.step([p], [p.slice()]);
  const back = Optimizer.load(o.save());
  console.log(JSON.stringify({ lang: "${lang}", kernel: kernelPath(), p: Array.from(p), name: back.tensorInfo(0).name,
    m: o.effectiveMomentum(0).length }));
`;

test("ES module import from the installed package", () => {
  writeFileSync(join(app, "esm.mjs"), `import init, { Optimizer, kernelPath } from "vsgd"; await init();${program("esm")}`);
  const r = run(process.execPath, ["esm.mjs"], { cwd: app });
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.toString());
  assert.equal(out.kernel, "simd128");
  assert.equal(out.name, "w");
  assert.ok(out.p.every((x, i) => Math.abs(x) < 0.5 * Math.abs([1, -2, 3][i])), `${out.p}`);
});

test("CommonJS require from the installed package gives the same bits", () => {
  writeFileSync(join(app, "cjs.cjs"), `const { Optimizer, kernelPath } = require("vsgd");${program("cjs")}`);
  writeFileSync(join(app, "esm2.mjs"), `import { Optimizer, kernelPath } from "vsgd";${program("cjs")}`);
  const a = run(process.execPath, ["cjs.cjs"], { cwd: app });
  const b = run(process.execPath, ["esm2.mjs"], { cwd: app });
  assert.equal(a.status, 0, a.stderr);
  assert.equal(a.stdout.toString(), b.stdout.toString());
});

test("the ES module entry exports everything the CommonJS build does", async () => {
  const cjs = run(process.execPath, ["-e", "console.log(JSON.stringify(Object.keys(require('vsgd')).sort()))"], { cwd: app });
  const esm = run(process.execPath, ["--input-type=module", "-e",
    "import * as m from 'vsgd'; console.log(JSON.stringify(Object.keys(m).filter((k) => !['default', 'initSync'].includes(k)).sort()))"], { cwd: app });
  assert.equal(esm.stdout.toString(), cjs.stdout.toString());
  assert.ok(JSON.parse(cjs.stdout.toString()).includes("Optimizer"));
});

test("vsgd/tfjs resolves from the installed package (with tfjs beside it)", () => {
  mkdirSync(join(app, "node_modules", "@tensorflow"), { recursive: true });
  for (const p of ["tfjs", "tfjs-core", "tfjs-backend-cpu", "tfjs-layers", "tfjs-converter", "tfjs-data", "tfjs-backend-webgl"]) {
    symlinkSync(join(WASM_DIR, "node_modules", "@tensorflow", p), join(app, "node_modules", "@tensorflow", p));
  }
  writeFileSync(join(app, "tf.mjs"), `
    import * as tf from "@tensorflow/tfjs";
    import { VsgdOptimizer } from "vsgd/tfjs";
    const v = tf.variable(tf.tensor1d([2, -3]));
    const opt = new VsgdOptimizer({ algorithm: "adam", lr: 0.1 });
    for (let i = 0; i < 200; i++) opt.minimize(() => v.square().sum());
    console.log(JSON.stringify(Array.from(v.dataSync())));`);
  const r = run(process.execPath, ["tf.mjs"], { cwd: app });
  assert.equal(r.status, 0, r.stderr);
  const v = JSON.parse(r.stdout.toString());
  assert.ok(v.every((x) => Math.abs(x) < 0.05), `${v}`);
});

test("TypeScript: the declarations type-check a user program (ESM, CommonJS, bundler)", () => {
  const tsc = join(WASM_DIR, "node_modules", "typescript", "bin", "tsc");
  writeFileSync(join(app, "main.mts"), `
    import init, { Optimizer, defaults, type OptimizerOptions, type TensorInfo, type Schedule, type StepReport, type FloatArray, type StateDType } from "vsgd";
    await init();
    const options: OptimizerOptions = { algorithm: "adamw", lr: 1e-3, weight_decay: 0.01, policy: "skip" };
    const o: Optimizer = new Optimizer(options);
    const id: number = o.addTensor([2, 3], { name: "w", dtype: "f64", group: 0 });
    const r: StepReport = o.step([new Float64Array(6)], [new Float64Array(6)]);
    const info: TensorInfo = o.tensorInfo(id);
    const s: Schedule = { kind: "one_cycle", total: 100 };
    o.setSchedule(0, s);
    const lr: number = o.lrAt(0, 1) * defaults("adamw").lr;
    const m: FloatArray = o.paramBuffer(id);
    const h: number = o.addTensor([4], { dtype: "bf16", stateDtype: "bf16", seed: 7n });
    const hs: "applied" | "skipped" = o.stepTensor(h, new Uint16Array(4), new Uint16Array(4));
    const sd: StateDType = o.tensorInfo(h).stateDtype;
    const seed: number | bigint | null = o.tensorInfo(h).seed;
    const em: Float32Array | Float64Array = o.effectiveMomentum(0);
    // @ts-expect-error: not a dtype
    o.addTensor([2], { dtype: "int8" });
    const outcome: "applied" | "skipped" = o.stepTensor(id, new Float64Array(6), new Float64Array(6));
    const bytes: Uint8Array = o.save();
    Optimizer.load(bytes).free();
    export const used = [r.applied, info.shape, lr, m.length, outcome, o.stateNames.join(), hs, sd, seed, em];
    // @ts-expect-error: not an algorithm
    new Optimizer({ algorithm: "lion" });
    // @ts-expect-error: a shape is an array
    o.addTensor(3);
    // @ts-expect-error: not a schedule kind
    o.setSchedule(0, { kind: "linear" });
  `);
  writeFileSync(join(app, "main.cts"), `
    import vsgd = require("vsgd");
    const o: vsgd.Optimizer = new vsgd.Optimizer({ algorithm: "sgdm", nesterov: true });
    // @ts-expect-error: nesterov is a boolean
    new vsgd.Optimizer({ nesterov: "yes" });
    o.free();
  `);
  // wasm-bindgen declares [Symbol.dispose] (lib esnext.disposable); init() of the web build
  // takes DOM types (lib dom).
  const tsconfig = (moduleResolution, module, files, lib) => JSON.stringify({
    compilerOptions: { strict: true, noEmit: true, target: "es2022", lib, module, moduleResolution, types: [], skipLibCheck: false },
    files,
  });
  const nodeLib = ["es2022", "esnext.disposable"];
  writeFileSync(join(app, "tsconfig.node.json"), tsconfig("node16", "node16", ["main.mts", "main.cts"], nodeLib));
  writeFileSync(join(app, "bundler.mts"), `import init, { Optimizer } from "vsgd"; await init(); new Optimizer().free();`);
  writeFileSync(join(app, "tsconfig.bundler.json"), tsconfig("bundler", "esnext", ["bundler.mts"], [...nodeLib, "dom"]));
  for (const cfg of ["tsconfig.node.json", "tsconfig.bundler.json"]) {
    const r = run(process.execPath, [tsc, "-p", cfg], { cwd: app });
    assert.equal(r.status, 0, `${cfg}:\n${r.stdout}${r.stderr}`);
  }
  // And the check can fail: a type error is reported.
  writeFileSync(join(app, "bad.mts"), `import { Optimizer } from "vsgd"; const n: string = new Optimizer().numTensors;`);
  writeFileSync(join(app, "tsconfig.bad.json"), tsconfig("node16", "node16", ["bad.mts"], nodeLib));
  assert.notEqual(run(process.execPath, [tsc, "-p", "tsconfig.bad.json"], { cwd: app }).status, 0);
});
