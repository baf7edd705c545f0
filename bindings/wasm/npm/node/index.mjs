// The package's ES module entry for Node.js: the CommonJS build (wasm-bindgen's nodejs target,
// which loads the module synchronously) re-exported, plus the `init()` of the web build as a
// no-op, so that `import init, { Optimizer } from "vsgd"; await init();` runs everywhere.
import { createRequire } from "node:module";

const wasm = createRequire(import.meta.url)("./vsgd.js");

export const { Optimizer, defaults, kernelPath, libraryVersion } = wasm;

/** Nothing to do in Node.js (the module is loaded); kept for code shared with browsers. */
export default async function init() {
  return wasm;
}

/** Nothing to do in Node.js; kept for code shared with browsers. */
export function initSync() {
  return wasm;
}
