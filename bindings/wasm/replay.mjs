#!/usr/bin/env node
// node bindings/wasm/replay.mjs CASE.json [--dtype f32|f64] [--checkpoint-at S] [--save FILE]
//
// Runs a conformance case (format vsgd-conformance/1) through the npm package (the Node.js
// build in pkg/, made by `npm --prefix bindings/wasm run build`) and prints the same bytes as
// `vsgd replay CASE.json ...`: {"checkpoints": [...], "param": [[tensor...] per checkpoint],
// "state": {name: [tensor...]}}. The case is read and the result written as the CLI's
// serde_json does (lib/serde-json.mjs). Errors: one line `vsgd: ...` on stderr, exit status 2.
//   --checkpoint-at S  after step S: save(), free(), Optimizer.load(), go on (same output)
//   --save FILE        write the final optimizer state (checkpoint format) to FILE
// VSGD_WASM_PKG=DIR replays through another build of the package (build.sh --out DIR).
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parse, stringify, JsonNumber } from "./lib/serde-json.mjs";

// The package to replay through: pkg/ (npm run build), or another build's directory.
const pkgUrl = process.env.VSGD_WASM_PKG
  ? pathToFileURL(resolve(process.env.VSGD_WASM_PKG, "node/index.mjs"))
  : new URL("./pkg/node/index.mjs", import.meta.url);

class CaseError extends Error {}
const bad = (msg) => {
  throw new CaseError(msg);
};

/** serde_json's as_f64 for a parsed number, or an error. */
function numbers(v, what) {
  if (!Array.isArray(v)) bad(`${what}: expected an array of numbers`);
  return v.map((x) => {
    if (!(x instanceof JsonNumber)) bad(`${what}: not a number: ${stringify(x)}`);
    return x.value;
  });
}

const asU64 = (v) => (v instanceof JsonNumber ? v.asU64() : null);

/** Case::parse of the CLI. */
export function parseCase(text) {
  let v;
  try {
    v = parse(text);
  } catch (e) {
    bad(`not valid JSON: ${e.message}`);
  }
  const get = (o, k) => (o instanceof Map ? o.get(k) : undefined);
  const format = typeof get(v, "format") === "string" ? get(v, "format") : "";
  if (format !== "vsgd-conformance/1") {
    bad(`format is '${format}', expected 'vsgd-conformance/1'`);
  }
  const algorithm = get(v, "algorithm");
  if (typeof algorithm !== "string") bad("missing 'algorithm'");
  const hyperObj = get(v, "hyper");
  if (!(hyperObj instanceof Map)) bad("missing 'hyper' object");
  // serde_json's Map is sorted by key: the same order of set() calls (and so of errors).
  const hyper = [...hyperObj.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const options = { algorithm };
  for (const [key, value] of hyper) {
    if (typeof value === "boolean") options[key] = value ? 1 : 0;
    else if (value instanceof JsonNumber) options[key] = value.value;
    else bad(`hyper.${key}: expected a number or a boolean`);
  }

  const tensors = get(v, "tensors");
  if (!Array.isArray(tensors)) bad("missing 'tensors' array");
  const shapes = [];
  const param0 = [];
  const grads = [];
  tensors.forEach((t, k) => {
    const shapeV = get(t, "shape");
    if (!Array.isArray(shapeV)) bad(`tensors[${k}]: missing 'shape'`);
    const shape = shapeV.map(asU64);
    if (shape.some((d) => d === null)) {
      bad(`tensors[${k}].shape: expected non-negative integers`);
    }
    const len = shape.reduce((a, d) => a * d, 1n);
    if (len > 1n << 28n) bad(`tensors[${k}].shape: too large`);
    const n = Number(len);
    const p = numbers(get(t, "param0") ?? null, `tensors[${k}].param0`);
    if (p.length !== n) bad(`tensors[${k}].param0 has ${p.length} values, shape needs ${n}`);
    const gv = get(t, "grads");
    if (!Array.isArray(gv)) bad(`tensors[${k}]: missing 'grads'`);
    const g = gv.map((x, s) => {
      const gs = numbers(x, `tensors[${k}].grads[${s}]`);
      if (gs.length !== n) {
        bad(`tensors[${k}].grads[${s}] has ${gs.length} values, shape needs ${n}`);
      }
      return gs;
    });
    shapes.push(shape.map(Number));
    param0.push(p);
    grads.push(g);
  });
  const available = grads.length ? Math.min(...grads.map((g) => g.length)) : 0;
  let steps = available;
  if (v.has("steps")) {
    const s = asU64(v.get("steps"));
    if (s === null) bad("'steps': expected an integer");
    if (s > BigInt(available)) {
      bad(`'steps' is ${s} but only ${available} gradients per tensor`);
    }
    steps = Number(s);
  }
  let lrPerStep = null;
  const l = get(v, "lr_per_step");
  if (l !== undefined && l !== null) {
    lrPerStep = numbers(l, "lr_per_step");
    if (lrPerStep.length < steps) {
      bad(`lr_per_step has ${lrPerStep.length} values for ${steps} steps`);
    }
  }
  const cps = get(get(v, "expected"), "checkpoints");
  if (!Array.isArray(cps)) bad("missing 'expected.checkpoints'");
  const checkpoints = cps.map(asU64);
  if (checkpoints.some((c) => c === null)) bad("expected.checkpoints: expected integers");
  const outside = checkpoints.find((c) => c === 0n || c > BigInt(steps));
  if (outside !== undefined) bad(`checkpoint ${outside} is outside steps 1..=${steps}`);
  return { options, shapes, param0, grads, lrPerStep, steps, checkpoints };
}

/** Replays a parsed case; returns the output text (without the final newline). */
export function replay(vsgd, c, { dtype = "f64", checkpointAt = null, save = null } = {}) {
  const Arr = dtype === "f32" ? Float32Array : Float64Array;
  let opt;
  try {
    opt = new vsgd.Optimizer(c.options);
  } catch (e) {
    bad(e.message);
  }
  try {
    for (const shape of c.shapes) opt.addTensor(shape, { dtype });
    const params = c.param0.map((p) => Arr.from(p));
    const recorded = [];
    const wanted = new Set(c.checkpoints.map(Number));
    const run = (from, to) => {
      for (let s = from; s < to; s++) {
        if (c.lrPerStep) opt.setLr(0, c.lrPerStep[s]);
        const grads = c.grads.map((g) => Arr.from(g[s]));
        try {
          opt.step(params, grads);
        } catch (e) {
          bad(`step ${s + 1}: ${e.message}`);
        }
        if (wanted.has(s + 1)) recorded.push(params.map((p) => Array.from(p)));
      }
    };
    let from = 0;
    if (checkpointAt !== null) {
      run(0, checkpointAt);
      const bytes = opt.save();
      opt.free();
      opt = vsgd.Optimizer.load(bytes);
      from = checkpointAt;
    }
    run(from, c.steps);
    if (save !== null) {
      const tmp = `${save}.tmp-${process.pid}`;
      writeFileSync(tmp, opt.save());
      renameSync(tmp, save);
    }
    const state = new Map();
    for (const name of opt.stateNames) {
      state.set(
        name,
        c.shapes.map((_, k) => Array.from(opt.state(k, name))),
      );
    }
    return stringify(
      new Map([
        ["checkpoints", c.checkpoints],
        ["param", recorded],
        ["state", state],
      ]),
    );
  } finally {
    opt.free();
  }
}

async function main(args) {
  let path = null;
  let dtype = "f64";
  let checkpointAt = null;
  let save = null;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--dtype") {
      const d = args[++i];
      if (d === undefined) bad("--dtype needs f32 or f64");
      if (d !== "f32" && d !== "f64") bad(`unknown dtype '${d}'`);
      dtype = d;
    } else if (a === "--checkpoint-at") {
      const s = args[++i];
      if (s === undefined) bad("--checkpoint-at needs a step number");
      if (!/^\+?[0-9]+$/.test(s)) bad(`--checkpoint-at: '${s}' is not a step number`);
      checkpointAt = Number(s);
    } else if (a === "--save") {
      save = args[++i];
      if (save === undefined) bad("--save needs a file name");
    } else if (a.startsWith("--")) {
      bad(`unknown option '${a}'`);
    } else if (path === null) {
      path = a;
    } else {
      bad(`unexpected argument '${a}'`);
    }
  }
  if (path === null) bad("replay needs a CASE.json");
  let text;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    bad(`${path}: ${e.message}`);
  }
  let c;
  try {
    c = parseCase(text);
  } catch (e) {
    if (e instanceof CaseError) bad(`${path}: ${e.message}`);
    throw e;
  }
  if (checkpointAt !== null && checkpointAt > c.steps) {
    bad(`--checkpoint-at ${checkpointAt}: the case has only ${c.steps} steps`);
  }
  let vsgd;
  try {
    vsgd = await import(pkgUrl);
  } catch (e) {
    bad(`cannot load the package (${e.message}); build it: npm --prefix bindings/wasm run build`);
  }
  let out;
  try {
    out = replay(vsgd, c, { dtype, checkpointAt, save });
  } catch (e) {
    if (e instanceof CaseError) bad(`${path}: ${e.message}`);
    throw e;
  }
  process.stdout.write(`${out}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`vsgd: ${e instanceof CaseError ? e.message : e.stack}\n`);
    process.exitCode = 2;
  });
}
