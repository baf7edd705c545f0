// The demo page: the race starts at once; TensorFlow.js and the digits load right after, in
// the background. `window.demo` exposes both parts (the browser tests drive them through it
// and through the page's controls).
import init, { kernelPath } from "vsgd";
import uPlot from "uplot";
import { ARRIVAL_TOLERANCE, Race, RUNNERS, SURFACES, momentumPlot } from "./race.mjs";

const $ = (id) => document.getElementById(id);
const fmt = (x, digits = 3) => {
  if (!Number.isFinite(x)) return "–";
  if (x !== 0 && (Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4)) return x.toExponential(2);
  return x.toFixed(digits);
};

await init();
$("kernel").textContent = `WebAssembly ${kernelPath()}`;
const t0 = performance.now();

// ------------------------------------------------------------------------------- the race
const legendRows = new Map();
for (const r of RUNNERS) {
  const tr = document.createElement("tr");
  tr.innerHTML = `<td><span class="swatch" style="background:${r.color}"></span></td><td>${r.label}</td>
    <td class="num lr"></td><td class="num f"></td><td class="num d"></td>`;
  $("race-legend").querySelector("tbody").append(tr);
  legendRows.set(r.key, tr);
}
const mplot = momentumPlot($("momentum-plot"), Math.max(300, $("momentum-plot").clientWidth || 520));
let lastPlot = -1;

function showRace(race) {
  const st = race.state();
  for (const r of st.runners) {
    const tr = legendRows.get(r.key);
    const runner = race.runners.find((x) => x.key === r.key);
    tr.querySelector(".lr").textContent = runner.lr;
    tr.querySelector(".f").textContent = r.diverged ? "–" : fmt(r.f);
    const d = tr.querySelector(".d");
    if (r.diverged) {
      d.innerHTML = `<span class="diverged">diverged</span>`;
    } else if (r.distance < ARRIVAL_TOLERANCE) {
      d.innerHTML = `<span class="arrived">✓ ${fmt(r.distance)}</span>`;
    } else {
      d.textContent = fmt(r.distance);
    }
    d.title = r.arrivedAt ? `first within ${ARRIVAL_TOLERANCE} at step ${r.arrivedAt}` : "";
  }
  const m = race.momentum;
  const n = m[0].length;
  $("mom-x").textContent = n ? m[1][n - 1].toFixed(3) : "–";
  $("mom-y").textContent = n ? m[2][n - 1].toFixed(3) : "–";
  if (n !== lastPlot && (n - lastPlot >= 24 || race.done || n < lastPlot)) {
    mplot.setData(m);
    lastPlot = n;
  }
  $("race-status").textContent = `step ${st.step} / ${st.steps}${race.done ? " · done" : ""}`;
  $("race-play").textContent = race.done ? "Run again" : race.playing ? "Pause" : "Play";
}

const race = new Race($("surface"), { onUpdate: showRace });
function describeSurface() {
  const s = race.surface;
  $("race-note").textContent = `${s.note} A runner counts as arrived within ${ARRIVAL_TOLERANCE} of a minimum (×); the race lasts ${s.steps} steps.`;
  $("noise").value = race.noise;
  $("noise-value").textContent = race.noise;
}
$("surface-select").addEventListener("change", (e) => {
  race.setSurface(e.target.value);
  race.playing = true;
  describeSurface();
});
$("noise").addEventListener("input", (e) => {
  race.noise = Number(e.target.value);
  $("noise-value").textContent = race.noise;
});
$("speed").addEventListener("input", (e) => {
  race.speed = Number(e.target.value);
  $("speed-value").textContent = race.speed;
});
$("race-play").addEventListener("click", () => {
  if (race.done) {
    race.reset(race.start);
    race.playing = true;
  } else {
    race.playing = !race.playing;
  }
  showRace(race);
});
$("race-reset").addEventListener("click", () => {
  race.reset(race.surface.start);
  race.playing = true;
});
race.reset();
describeSurface();
race.loop();
const raceReadyMs = performance.now() - t0;

// ----------------------------------------------------------------------------- the digits
function lineChart(el, title, yOpts, series) {
  return new uPlot(
    {
      width: Math.max(320, el.clientWidth || 540),
      height: 230,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: false }, y: yOpts },
      axes: [
        { label: "epoch", stroke: "#6b7385", grid: { stroke: "#eef0f4" }, size: 38 },
        { stroke: "#6b7385", grid: { stroke: "#eef0f4" }, size: 52 },
      ],
      series: [{ label: "epoch" }, ...series],
    },
    [[], ...series.map(() => [])],
    el,
  );
}

async function setUpDigits() {
  const { Digits, RUNS, loadDigits } = await import("./digits.mjs");
  const [data] = await Promise.all([loadDigits(), Digits.backend()]);
  const digits = new Digits(data);
  const series = RUNS.map((r) => ({ label: r.label, stroke: r.color, width: 2, points: { show: false } }));
  const lossPlot = lineChart($("loss-plot"), "loss", { distr: 3 }, series);
  const accPlot = lineChart($("acc-plot"), "accuracy", { range: (u, lo) => [Math.min(0.8, Math.floor(lo * 20) / 20), 1] }, series);
  const rows = new Map();
  for (const r of RUNS) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td><span class="swatch" style="background:${r.color}"></span></td><td>${r.label}</td>
      <td class="num">${r.lr}</td><td class="num ep"></td><td class="num loss"></td><td class="num acc"></td><td class="num best"></td>`;
    $("digits-table").querySelector("tbody").append(tr);
    rows.set(r.key, tr);
  }
  // A few test images, and the VSGD network's answers.
  const SAMPLES = 16;
  const sampleCells = [];
  for (let i = 0; i < SAMPLES; i++) {
    const cell = document.createElement("div");
    cell.className = "sample";
    const c = document.createElement("canvas");
    c.width = 8;
    c.height = 8;
    const img = c.getContext("2d").createImageData(8, 8);
    for (let k = 0; k < 64; k++) {
      const v = 255 - Math.round(255 * digits.data.test.x[64 * i + k]);
      img.data.set([v, v, v, 255], 4 * k);
    }
    c.getContext("2d").putImageData(img, 0, 0);
    const label = document.createElement("span");
    cell.append(c, label);
    $("samples").append(cell);
    sampleCells.push(label);
  }

  const show = () => {
    const epochs = Array.from({ length: digits.epoch }, (_, i) => i + 1);
    lossPlot.setData([epochs, ...digits.runs.map((r) => r.loss)]);
    accPlot.setData([epochs, ...digits.runs.map((r) => r.acc)]);
    for (const run of digits.runs) {
      const tr = rows.get(run.key);
      tr.querySelector(".ep").textContent = digits.epoch;
      tr.querySelector(".loss").textContent = run.loss.length ? fmt(run.loss.at(-1), 4) : "–";
      tr.querySelector(".acc").textContent = run.acc.length ? `${(100 * run.acc.at(-1)).toFixed(1)}%` : "–";
      tr.querySelector(".best").textContent = run.acc.length ? `${(100 * Math.max(...run.acc)).toFixed(1)}%` : "–";
    }
    const pred = digits.predictions(digits.runs[0], SAMPLES);
    sampleCells.forEach((el, i) => {
      const truth = digits.data.test.y[i];
      el.innerHTML = digits.epoch === 0 ? `${truth}` : `<span class="${pred[i] === truth ? "ok" : "bad"}">${pred[i]}</span> (${truth})`;
    });
    const target = Number($("epochs").value);
    $("train").disabled = digits.training || digits.epoch >= target;
    $("train").textContent = digits.epoch > 0 && digits.epoch < target ? "Resume" : "Train";
    $("stop").disabled = !digits.training || digits.stopRequested;
    $("reset").disabled = digits.training;
    $("download").disabled = digits.training;
    $("upload").disabled = digits.training;
    $("upload-label").classList.toggle("disabled", digits.training);
    $("digits-status").textContent = digits.training
      ? `Training: epoch ${digits.epoch + 1} of ${target}${digits.stopRequested ? " (stopping after this epoch)" : ""}…`
      : digits.epoch === 0
        ? `Ready: ${digits.data.train.n} training and ${digits.data.test.n} test images. Press Train.`
        : `Stopped after epoch ${digits.epoch}.`;
  };
  digits.onUpdate(show);
  $("epochs").addEventListener("input", show);
  $("train").addEventListener("click", () => digits.train(Number($("epochs").value)));
  $("stop").addEventListener("click", () => digits.stop());
  $("reset").addEventListener("click", () => digits.reset());
  $("download").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([digits.checkpoint()], { type: "application/octet-stream" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `digits-epoch${digits.epoch}.vsgddemo`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  $("upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    e.target.value = "";
    if (!file) return;
    try {
      digits.restore(new Uint8Array(await file.arrayBuffer()));
      $("digits-status").textContent = `Loaded ${file.name}: epoch ${digits.epoch}. Press Resume to go on.`;
    } catch (err) {
      $("digits-status").textContent = `Could not load ${file.name}: ${err.message}`;
    }
  });
  show();
  return digits;
}

// performance.now() counts from the start of the navigation: the race is up at `raceReadyAt`.
window.demo = { race, raceReadyMs, raceReadyAt: performance.now(), digits: null };
window.demo.digitsReady = setUpDigits().then((d) => {
  window.demo.digits = d;
  window.demo.digitsReadyMs = performance.now() - t0;
  window.demo.digitsReadyAt = performance.now();
  return d;
});
window.demo.surfaces = Object.keys(SURFACES);
