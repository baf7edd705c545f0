// The browser demo in Debian's Chromium (headless, driven by playwright-core), served by
// `npm run demo` on 127.0.0.1: it loads with no console errors and no request leaving this
// machine, VSGD reaches the Rosenbrock minimum within the race's stated tolerance, the digits
// runs reach >= 90% test accuracy, and a downloaded checkpoint, uploaded after a reset,
// resumes the run to exactly the numbers of an uninterrupted one. Screenshots go to
// bindings/wasm/test-output/ (and to docs/img/ with VSGD_UPDATE_SCREENSHOTS=1).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { REPO, WASM_DIR } from "../node/helpers.mjs";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
// As root, without a sandbox; no background traffic (this machine's network is closed).
const ARGS = ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const OUT = join(WASM_DIR, "test-output");
const skip = existsSync(CHROMIUM) ? false : `no Chromium at ${CHROMIUM} (apt-get install chromium)`;
if (skip && process.env.CI === "true") throw new Error(skip);

let server;
let url;
let serverLines;
let browser;
let page;
let dir;
const problems = []; // console errors, page errors, requests to elsewhere

async function startServer() {
  server = spawn(process.execPath, [join(WASM_DIR, "scripts/serve.mjs"), "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  url = await new Promise((resolve, reject) => {
    server.on("exit", (c) => reject(new Error(`demo server exited with ${c}`)));
    server.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/^(http:\/\/127\.0\.0\.1:\d+\/)$/m);
      if (m) resolve(m[1]);
    });
  });
  serverLines = () => out.trimEnd().split("\n");
}

before(async () => {
  if (skip) return;
  mkdirSync(OUT, { recursive: true });
  dir = mkdtempSync(join(tmpdir(), "vsgd-browser-"));
  await startServer();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  const context = await browser.newContext({ viewport: { width: 1240, height: 1000 }, acceptDownloads: true });
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (u.startsWith(url) || u.startsWith("data:") || u.startsWith("blob:")) return route.continue();
    problems.push(`request to elsewhere: ${u}`);
    return route.abort();
  });
  page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
});

after(async () => {
  await browser?.close();
  server?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function screenshot(locator, name) {
  const file = join(OUT, name);
  await locator.screenshot({ path: file });
  if (process.env.VSGD_UPDATE_SCREENSHOTS === "1") copyFileSync(file, join(REPO, "docs/img", name));
}

test("the server prints its URL last and serves only its own files", { skip }, async () => {
  assert.equal(serverLines().at(-1), url, "the URL is the last line written before serving");
  for (const [path, status] of [["", 200], ["pkg/web/vsgd_bg.wasm", 200], ["data/digits.csv.gz", 200],
    ["..%2F..%2FCargo.toml", 404], ["pkg/../../../Cargo.toml", 404], ["nope.html", 404]]) {
    const res = await fetch(url + path);
    assert.equal(res.status, status, path);
  }
  const wasm = await fetch(`${url}pkg/web/vsgd_bg.wasm`);
  assert.equal(wasm.headers.get("content-type"), "application/wasm");
  assert.equal(wasm.headers.get("cross-origin-embedder-policy"), "require-corp");
});

test("the page loads (race first, digits in the background)", { skip }, async () => {
  const t0 = Date.now();
  await page.goto(url);
  await page.waitForFunction(() => window.demo?.race?.runners?.length === 4);
  const raceMs = Date.now() - t0;
  await page.evaluate(() => window.demo.digitsReady);
  const digitsMs = Date.now() - t0;
  // performance.now() in the page counts from the navigation's start.
  const inPage = await page.evaluate(() => ({ race: window.demo.raceReadyAt, digits: window.demo.digitsReadyAt }));
  console.log(`# load (first visit, fresh browser): race interactive ${inPage.race.toFixed(0)} ms after the navigation ` +
    `started, digits (TensorFlow.js + data) ${inPage.digits.toFixed(0)} ms; seen from the test: ${raceMs} / ${digitsMs} ms`);
  writeFileSync(join(OUT, "load-times.json"), JSON.stringify({ raceMs, digitsMs, inPage }, null, 2));
  assert.equal(await page.textContent("#kernel"), "WebAssembly simd128");
});

test("the race animates, and VSGD reaches the Rosenbrock minimum within the stated tolerance", { skip }, async () => {
  // The animation runs by itself.
  await page.waitForFunction(() => window.demo.race.step > 100);
  // Then to the end at once.
  const st = await page.evaluate(() => {
    window.demo.race.setSurface("rosenbrock");
    window.demo.race.runToEnd();
    return window.demo.race.state();
  });
  const tol = await page.evaluate(() => import("/race.mjs").then((m) => m.ARRIVAL_TOLERANCE));
  assert.equal(tol, 0.01);
  assert.match(await page.textContent("#race-note"), /within 0\.01 of a minimum/);
  const vsgd = st.runners.find((r) => r.key === "vsgd");
  assert.equal(st.step, st.steps);
  assert.ok(vsgd.distance < tol, `VSGD ended ${vsgd.distance} from (1, 1)`);
  assert.ok(vsgd.arrivedAt > 0);
  assert.ok(Math.abs(vsgd.x - 1) < tol && Math.abs(vsgd.y - 1) < tol);
  for (const r of st.runners) assert.ok(!r.diverged && Number.isFinite(r.f), `${r.key} diverged`);
  // The legend says so.
  assert.match(await page.textContent("#race-legend tbody tr:first-child"), /VSGD[\s\S]*✓/);
  await page.waitForTimeout(100);
  await screenshot(page.locator("#race"), "wasm-demo-race.png");
});

test("race controls: surfaces, noise slider, a click picks the start", { skip }, async () => {
  for (const s of ["himmelblau", "quadratic"]) {
    await page.selectOption("#surface-select", s);
    const st = await page.evaluate(() => (window.demo.race.runToEnd(), window.demo.race.state()));
    assert.equal(st.surface, s);
    for (const r of st.runners) assert.ok(Number.isFinite(r.x) && Number.isFinite(r.y), `${s}: ${r.key}`);
  }
  // Himmelblau's minima: Adam reaches one within the tolerance.
  await page.selectOption("#surface-select", "himmelblau");
  const h = await page.evaluate(() => (window.demo.race.runToEnd(), window.demo.race.state()));
  assert.ok(h.runners.find((r) => r.key === "adam").distance < 0.01);
  // The noise slider sets σ of the gradient noise.
  await page.selectOption("#surface-select", "quadratic");
  await page.$eval("#noise", (el) => {
    el.value = "6";
    el.dispatchEvent(new Event("input", { bubbles: true }));
  });
  assert.equal(await page.evaluate(() => window.demo.race.noise), 6);
  assert.equal(await page.textContent("#noise-value"), "6");
  await page.evaluate(() => window.demo.race.runToEnd());
  await page.waitForTimeout(100);
  await screenshot(page.locator("#race"), "wasm-demo-noisy.png");
  // A click on the map restarts from there.
  const box = await page.locator("#surface").boundingBox();
  await page.mouse.click(box.x + box.width * 0.75, box.y + box.height * 0.25);
  const st = await page.evaluate(() => window.demo.race.state());
  assert.ok(st.step < 200, `restarted (step ${st.step})`);
  const start = await page.evaluate(() => window.demo.race.start);
  assert.ok(Math.abs(start[0] - 2.5) < 0.05 && Math.abs(start[1] - 2.5) < 0.05, `start ${start}`);
  await page.selectOption("#surface-select", "rosenbrock");
});

const history = () => page.evaluate(() => window.demo.digits.runs.map((r) => ({ key: r.key, loss: r.loss, acc: r.acc })));

async function trainTo(epochs) {
  await page.fill("#epochs", String(epochs));
  await page.click("#train");
  await page.waitForFunction((n) => window.demo.digits.epoch >= n && !window.demo.digits.training, epochs, { timeout: 600_000 });
}

test("digits: every optimizer reaches >= 90% test accuracy; a checkpoint resumes the run exactly", { skip, timeout: 900_000 }, async () => {
  // Uninterrupted: 6 epochs.
  await trainTo(6);
  const straight = await history();
  for (const r of straight) {
    assert.equal(r.acc.length, 6);
    assert.ok(r.acc.at(-1) >= 0.9, `${r.key}: test accuracy ${r.acc.at(-1)}`);
    assert.ok(r.loss.at(-1) < r.loss[0] / 4, `${r.key}: loss ${r.loss}`);
  }
  await page.waitForTimeout(100);
  await screenshot(page.locator("#digits"), "wasm-demo-digits.png");
  await screenshot(page.locator("body"), "wasm-demo.png");

  // Interrupted: reset, 4 epochs, download, reset, upload, 2 more.
  await page.click("#reset");
  assert.equal(await page.evaluate(() => window.demo.digits.epoch), 0);
  await trainTo(4);
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  const file = join(dir, download.suggestedFilename());
  await download.saveAs(file);
  assert.match(download.suggestedFilename(), /^digits-epoch4\.vsgddemo$/);
  await page.click("#reset");
  assert.equal(await page.evaluate(() => window.demo.digits.epoch), 0);

  // A damaged file is refused and changes nothing.
  const bad = join(dir, "bad.vsgddemo");
  writeFileSync(bad, "VSGDDEMO garbage");
  await page.setInputFiles("#upload", bad);
  await page.waitForFunction(() => document.getElementById("digits-status").textContent.startsWith("Could not load"));
  assert.equal(await page.evaluate(() => window.demo.digits.epoch), 0);

  await page.setInputFiles("#upload", file);
  await page.waitForFunction(() => window.demo.digits.epoch === 4);
  assert.match(await page.textContent("#digits-status"), /Loaded digits-epoch4\.vsgddemo: epoch 4/);
  const restored = await history();
  assert.deepEqual(restored, straight.map((r) => ({ ...r, loss: r.loss.slice(0, 4), acc: r.acc.slice(0, 4) })));
  await page.fill("#epochs", "6");
  assert.equal(await page.textContent("#train"), "Resume");
  await trainTo(6);
  assert.deepEqual(await history(), straight, "resumed run differs from the uninterrupted one");
});

test("no console errors, no page errors, nothing fetched from elsewhere", { skip }, () => {
  assert.deepEqual(problems, []);
});
