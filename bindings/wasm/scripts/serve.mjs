#!/usr/bin/env node
// `npm --prefix bindings/wasm run demo [-- --port N]`: serves the browser demo
// (examples/browser/) on 127.0.0.1 only, with everything it loads from this machine: the
// package (pkg/web, pkg/tfjs), uPlot and TensorFlow.js (its one-file ES module build) from
// node_modules, and data/digits.csv.gz.
// No CDN: the page works offline. The last line written before serving is the page's URL.
// --port 0 (or PORT=0) picks a free port. Sends cross-origin-isolation headers (COOP/COEP),
// so that a threaded build could use SharedArrayBuffer; every resource is same-origin.
import { createReadStream, existsSync, statSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const WASM_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const REPO = resolve(WASM_DIR, "../..");
const NM = join(WASM_DIR, "node_modules");

// URL prefix -> directory (only these are served).
const ROOTS = [
  ["/pkg/", join(WASM_DIR, "pkg")],
  ["/vendor/uplot/", join(NM, "uplot/dist")],
  ["/vendor/tfjs/", join(NM, "@tensorflow/tfjs/dist")],
  ["/data/", join(REPO, "data")],
  ["/", join(REPO, "examples/browser")],
];

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".wasm": "application/wasm",
  ".gz": "application/gzip",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".map": "application/json",
};

function fileFor(urlPath) {
  let path;
  try {
    path = decodeURIComponent(urlPath.split("?")[0]);
  } catch {
    return null;
  }
  if (path.endsWith("/")) path += "index.html";
  for (const [prefix, dir] of ROOTS) {
    if (!path.startsWith(prefix)) continue;
    const file = normalize(join(dir, path.slice(prefix.length)));
    if (file !== dir && !file.startsWith(dir + sep)) return null; // no ../ escapes
    if (existsSync(file) && statSync(file).isFile()) return file;
    return null;
  }
  return null;
}

function parsePort(argv) {
  const i = argv.indexOf("--port");
  const value = i >= 0 ? argv[i + 1] : (process.env.PORT ?? "8642");
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`demo: bad port '${value}'`);
    process.exit(2);
  }
  return port;
}

if (!existsSync(join(WASM_DIR, "pkg/web/vsgd_bg.wasm"))) {
  console.error("demo: the package is not built: run `npm --prefix bindings/wasm run build` first");
  process.exit(1);
}
for (const dep of ["uplot/dist/uPlot.esm.js", "@tensorflow/tfjs/dist/tf.fesm.min.js"]) {
  if (!existsSync(join(NM, dep))) {
    console.error(`demo: ${dep} missing: run \`npm --prefix bindings/wasm ci\` first`);
    process.exit(1);
  }
}

const server = createServer((req, res) => {
  const headers = {
    "Cache-Control": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "X-Content-Type-Options": "nosniff",
  };
  const file = req.method === "GET" || req.method === "HEAD" ? fileFor(req.url ?? "/") : null;
  if (file === null) {
    res.writeHead(404, { ...headers, "Content-Type": "text/plain" });
    res.end("not found\n");
    return;
  }
  res.writeHead(200, { ...headers, "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" });
  if (req.method === "HEAD") res.end();
  else createReadStream(file).pipe(res);
});

server.listen(parsePort(process.argv), "127.0.0.1", () => {
  const { port } = server.address();
  console.log("vsgd browser demo: examples/browser/ (Ctrl-C stops it)");
  console.log(`http://127.0.0.1:${port}/`);
});
