// Two small edits to wasm-bindgen's generated JavaScript (its version is pinned, and each
// edit must apply exactly once or the build fails):
// - free() twice is a no-op (wasm-bindgen passes the null pointer on and throws);
// - calling a method of a freed Optimizer throws "this Optimizer was freed ..." instead of
//   wasm-bindgen's "null pointer passed to rust".
import { readFileSync, writeFileSync } from "node:fs";

const edits = [
  [
    "const ptr = this.__destroy_into_raw();\n        wasm.__wbg_optimizer_free(ptr, 0);",
    "const ptr = this.__destroy_into_raw();\n        if (ptr !== 0) wasm.__wbg_optimizer_free(ptr, 0);",
  ],
  [
    "throw new Error(getStringFromWasm0(arg0, arg1));",
    'const message = getStringFromWasm0(arg0, arg1);\n            throw new Error(message === "null pointer passed to rust" ? "this Optimizer was freed (free() was called on it)" : message);',
  ],
];

for (const file of process.argv.slice(2)) {
  let text = readFileSync(file, "utf8");
  for (const [from, to] of edits) {
    const n = text.split(from).length - 1;
    if (n !== 1) {
      console.error(`patch-glue: expected 1 occurrence in ${file}, found ${n}:\n${from}`);
      process.exit(1);
    }
    text = text.replace(from, to);
  }
  writeFileSync(file, text);
}
