// Every conformance case through the npm package, f32 and f64: `node replay.mjs` prints the
// same bytes as the native `vsgd replay` (and check.py's tolerances hold by implication: the
// native output passes them, scripts/check-conformance.sh). Also number parsing and printing
// on random inputs, the checkpoint options, and the error exit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { cases, nativeCli, rng, run, REPLAY } from "./helpers.mjs";

const cli = nativeCli();

function same(args, label) {
  const native = run(cli.bin, ["replay", ...args]);
  const wasm = run(process.execPath, [REPLAY, ...args]);
  assert.equal(native.status, 0, `${label}: native failed: ${native.stderr}`);
  assert.equal(wasm.status, 0, `${label}: replay.mjs failed: ${wasm.stderr}`);
  assert.ok(wasm.stdout.length > 20, `${label}: no output`);
  assert.ok(native.stdout.equals(wasm.stdout), `${label}: output differs from vsgd replay`);
}

for (const file of cases()) {
  for (const dtype of ["f32", "f64"]) {
    test(`${basename(file)} ${dtype}: replay.mjs == vsgd replay (bytes)`, { skip: cli.skip }, () =>
      same([file, "--dtype", dtype], `${basename(file)} ${dtype}`),
    );
  }
}

test("the default dtype is f64, as the CLI's", { skip: cli.skip }, () => {
  const file = cases()[0];
  same([file], "no --dtype");
  const a = run(process.execPath, [REPLAY, file]).stdout;
  const b = run(process.execPath, [REPLAY, file, "--dtype", "f64"]).stdout;
  assert.ok(a.equals(b));
});

// serde_json (without float_roundtrip) does not always round to nearest when parsing, and
// prints floats its own way: random number texts of every shape its parser distinguishes
// (long integers past u64, 20+ digit fractions, exponents, subnormals), kept unchanged by one
// SGD step with a zero gradient, must come out byte for byte as the CLI prints them.
function numberCase(seed, n) {
  const r = rng(seed);
  const u = () => (r() + 1) / 2;
  const digits = (k) => {
    let s = String(1 + Math.floor(u() * 9));
    for (let i = 1; i < k; i++) s += Math.floor(u() * 10);
    return s;
  };
  const texts = [];
  while (texts.length < n) {
    const sign = u() < 0.5 ? "-" : "";
    const kind = u();
    let s;
    if (kind < 0.15) s = sign + digits(1 + Math.floor(u() * 25));
    else if (kind < 0.3) s = String(Math.fround(r() * 10 ** (Math.floor(u() * 70) - 35)));
    else if (kind < 0.4) s = sign + String(u() * 10 ** (Math.floor(u() * 600) - 300));
    else {
      const ip = u() < 0.5 ? "0" : digits(1 + Math.floor(u() * 20));
      const lead = u() < 0.2 ? "0".repeat(Math.floor(u() * 30)) : "";
      s = `${sign}${ip}.${lead}${digits(1 + Math.floor(u() * 25))}`;
      if (u() < 0.6) s += `${u() < 0.5 ? "e" : "E"}${["", "+", "-"][Math.floor(u() * 3)]}${Math.floor(u() * 330)}`;
    }
    const x = Number(s);
    if (Number.isFinite(x) && Math.abs(x) < 1e300) texts.push(s);
  }
  const zeros = `[${texts.map(() => "0").join(",")}]`;
  return `{"format":"vsgd-conformance/1","algorithm":"sgdm","hyper":{"lr":0.5,"nesterov":false},"tensors":[{"shape":[${n}],"param0":[${texts.join(",")}],"grads":[${zeros}]}],"steps":1,"expected":{"checkpoints":[1]}}`;
}

test("random number texts are read and printed as the CLI does", { skip: cli.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vsgd-numbers-"));
  try {
    for (const seed of [1, 2, 3]) {
      const file = join(dir, `numbers-${seed}.json`);
      writeFileSync(file, numberCase(seed, 4000));
      same([file, "--dtype", "f64"], `numbers seed ${seed} f64`);
      same([file, "--dtype", "f32"], `numbers seed ${seed} f32`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("--checkpoint-at and --save: same output and the same checkpoint bytes", { skip: cli.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vsgd-ckpt-"));
  try {
    for (const name of ["vsgd-lr-schedule.json", "adamw-schedule.json", "sgdm-nesterov.json"]) {
      const file = cases().find((f) => basename(f) === name);
      for (const dtype of ["f32", "f64"]) {
        const n = join(dir, "native.vsgdckpt");
        const w = join(dir, "wasm.vsgdckpt");
        const native = run(cli.bin, ["replay", file, "--dtype", dtype, "--checkpoint-at", "7", "--save", n]);
        const wasm = run(process.execPath, [REPLAY, file, "--dtype", dtype, "--checkpoint-at", "7", "--save", w]);
        assert.equal(wasm.status, 0, wasm.stderr);
        assert.ok(native.stdout.equals(wasm.stdout), `${name} ${dtype}: output differs`);
        const plain = run(process.execPath, [REPLAY, file, "--dtype", dtype]);
        assert.ok(plain.stdout.equals(wasm.stdout), `${name} ${dtype}: save/load mid-run changed the output`);
        assert.ok(readFileSync(n).equals(readFileSync(w)), `${name} ${dtype}: checkpoint bytes differ`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("bad cases and options: exit status 2 and one 'vsgd:' line, as the CLI", { skip: cli.skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), "vsgd-bad-"));
  try {
    const good = JSON.parse(readFileSync(cases()[0], "utf8"));
    const variants = {
      "not-json": "{",
      "wrong-format": JSON.stringify({ ...good, format: "x" }),
      "bad-algorithm": JSON.stringify({ ...good, algorithm: "nope" }),
      "bad-hyper": JSON.stringify({ ...good, hyper: { lr: -1 } }),
      "unknown-hyper": JSON.stringify({ ...good, hyper: { foo: 1 } }),
      "too-many-steps": JSON.stringify({ ...good, steps: 100000 }),
      "fractional-shape": readFileSync(cases()[0], "utf8").replace(/"shape":\s*\[(\d+)/, '"shape":[$1.0'),
      "huge-number": readFileSync(cases()[0], "utf8").replace(/"param0":\s*\[/, '"param0":[1e400,'),
    };
    const argsList = Object.entries(variants).map(([k, text]) => {
      const f = join(dir, `${k}.json`);
      writeFileSync(f, text);
      return [f];
    });
    argsList.push([cases()[0], "--dtype", "f16"], [cases()[0], "--bogus"], [], [join(dir, "missing.json")]);
    argsList.push([cases()[0], "--checkpoint-at", "100000"]);
    for (const args of argsList) {
      const native = run(cli.bin, ["replay", ...args]);
      const wasm = run(process.execPath, [REPLAY, ...args]);
      assert.equal(native.status, 2, `native accepted ${args}`);
      assert.equal(wasm.status, 2, `replay.mjs: ${args}: status ${wasm.status}: ${wasm.stderr}`);
      assert.equal(wasm.stdout.length, 0);
      assert.match(wasm.stderr, /^vsgd: .+\n$/, `one line: ${wasm.stderr}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
