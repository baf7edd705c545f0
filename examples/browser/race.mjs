// The optimizer race: VSGD, Constant VSGD, Adam and SGD-momentum from one start point on a
// 2-D surface, each stepped by the vsgd package (one f64 tensor of shape [2] per optimizer),
// drawn over the surface's contours, with VSGD's learned effective momentum beside it.
import uPlot from "uplot";
import { Optimizer } from "vsgd";

/** A runner "arrives" when it is this close to a minimum (Euclidean distance in θ). */
export const ARRIVAL_TOLERANCE = 0.01;

export const RUNNERS = [
  { key: "vsgd", label: "VSGD", color: "#e4572e" },
  { key: "constant_vsgd", label: "Constant VSGD", color: "#f0a202" },
  { key: "adam", label: "Adam", color: "#6a4c93" },
  { key: "sgdm", label: "SGD + momentum", color: "#2a9d8f" },
];

export const SURFACES = {
  rosenbrock: {
    label: "Rosenbrock",
    f: (x, y) => (1 - x) ** 2 + 100 * (y - x * x) ** 2,
    grad: (x, y) => [-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)],
    x: [-2, 2],
    y: [-1, 3],
    start: [-1.5, 2],
    minima: [[1, 1]],
    noise: 0,
    steps: 3000,
    lr: { vsgd: 0.02, constant_vsgd: 0.01, adam: 0.02, sgdm: 0.0005 },
    schedule: null,
    note: "The banana valley: easy to find, slow to follow. Gradients are large across the valley and tiny along it.",
  },
  himmelblau: {
    label: "Himmelblau",
    f: (x, y) => (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2,
    grad: (x, y) => [
      4 * x * (x * x + y - 11) + 2 * (x + y * y - 7),
      2 * (x * x + y - 11) + 4 * y * (x + y * y - 7),
    ],
    x: [-5, 5],
    y: [-5, 5],
    start: [-0.3, -4.6],
    minima: [[3, 2], [-2.805118, 3.131312], [-3.77931, -3.283186], [3.584428, -1.848126]],
    noise: 0,
    steps: 2000,
    lr: { vsgd: 0.03, constant_vsgd: 0.03, adam: 0.05, sgdm: 0.002 },
    schedule: { kind: "step_decay", every: 300, factor: 0.5 },
    note: "Four minima of equal depth: which one an optimizer reaches depends on its path. Learning rates halve every 300 steps. With exact gradients VSGD can lock its momentum near 1 here: the large swings of the gradient along the path look like observation noise to it, so it trusts its running mean and coasts (watch momentum x); a decaying learning rate is what it relies on.",
  },
  quadratic: {
    label: "Noisy quadratic",
    f: (x, y) => 0.5 * (x * x + 10 * y * y),
    grad: (x, y) => [x, 10 * y],
    x: [-5, 5],
    y: [-5, 5],
    start: [-4.2, 3.6],
    minima: [[0, 0]],
    noise: 2,
    steps: 1500,
    lr: { vsgd: 0.05, constant_vsgd: 0.05, adam: 0.05, sgdm: 0.01 },
    schedule: { kind: "step_decay", every: 500, factor: 0.5 },
    note: "f = (x² + 10y²)/2 with Gaussian noise of standard deviation σ added to every gradient component. Watch VSGD's momentum rise with σ: it averages over more steps when the gradient is noisier. Learning rates halve every 500 steps.",
  },
};

/** A seeded standard normal generator (xorshift32 + Box–Muller). */
function gaussian(seed) {
  let s = seed >>> 0 || 1;
  const u = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 2 ** 32;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

// A light, quiet colour map for the surface (low: near white, high: blue-grey), so that the
// trajectories stand out.
const STOPS = [
  [0, [252, 252, 253]],
  [0.35, [226, 232, 241]],
  [0.7, [176, 189, 209]],
  [1, [112, 128, 156]],
];
function colour(t) {
  for (let i = 1; i < STOPS.length; i++) {
    const [t1, c1] = STOPS[i];
    const [t0, c0] = STOPS[i - 1];
    if (t <= t1) {
      const a = (t - t0) / (t1 - t0);
      return c0.map((v, k) => v + a * (c1[k] - v));
    }
  }
  return STOPS.at(-1)[1];
}

export class Race {
  constructor(canvas, { onUpdate } = {}) {
    this.canvas = canvas;
    // Logical size (CSS pixels); the bitmap has devicePixelRatio times as many pixels.
    this.width = canvas.width;
    this.height = canvas.height;
    this.dpr = Math.min(3, window.devicePixelRatio || 1);
    canvas.style.width = `${this.width}px`;
    canvas.style.height = `${this.height}px`;
    canvas.width = Math.round(this.width * this.dpr);
    canvas.height = Math.round(this.height * this.dpr);
    this.ctx = canvas.getContext("2d");
    this.ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    this.onUpdate = onUpdate ?? (() => {});
    this.surfaceKey = "rosenbrock";
    this.noise = SURFACES.rosenbrock.noise;
    this.speed = 8;
    this.playing = true;
    this.runners = [];
    this.momentum = [[], [], []]; // step, x, y
    this.background = null;
    canvas.addEventListener("click", (e) => {
      const r = canvas.getBoundingClientRect();
      const [x, y] = this.toWorld(((e.clientX - r.left) * this.width) / r.width, ((e.clientY - r.top) * this.height) / r.height);
      this.reset([x, y]);
      this.playing = true;
    });
  }

  get surface() {
    return SURFACES[this.surfaceKey];
  }

  setSurface(key) {
    this.surfaceKey = key;
    this.noise = this.surface.noise;
    this.background = null;
    this.reset();
  }

  toScreen(x, y) {
    const s = this.surface;
    return [
      ((x - s.x[0]) / (s.x[1] - s.x[0])) * this.width,
      ((s.y[1] - y) / (s.y[1] - s.y[0])) * this.height,
    ];
  }

  toWorld(px, py) {
    const s = this.surface;
    return [s.x[0] + (px / this.width) * (s.x[1] - s.x[0]), s.y[1] - (py / this.height) * (s.y[1] - s.y[0])];
  }

  /** Fresh optimizers at `start` (default: the surface's). */
  reset(start = this.surface.start) {
    for (const r of this.runners) r.opt.free();
    const s = this.surface;
    this.start = start;
    this.step = 0;
    this.runners = RUNNERS.map((def) => {
      const opt = new Optimizer({ algorithm: def.key, lr: s.lr[def.key] });
      if (s.schedule) opt.setSchedule(0, s.schedule);
      opt.addTensor([2], { name: "theta", dtype: "f64" });
      return {
        ...def,
        opt,
        lr: s.lr[def.key],
        p: Float64Array.from(start),
        trail: [start[0], start[1]],
        noise: gaussian(20240601), // the same noise for everyone
        arrivedAt: null,
        diverged: false,
      };
    });
    this.momentum = [[], [], []];
    this.onUpdate(this);
  }

  distance(r) {
    return Math.min(...this.surface.minima.map(([a, b]) => Math.hypot(r.p[0] - a, r.p[1] - b)));
  }

  get done() {
    return this.step >= this.surface.steps;
  }

  /** `n` steps of every optimizer (fewer at the end of the race). */
  advance(n) {
    const s = this.surface;
    const grad = new Float64Array(2);
    for (let k = 0; k < n && !this.done; k++) {
      this.step++;
      for (const r of this.runners) {
        const n1 = r.noise();
        const n2 = r.noise();
        if (r.diverged) continue;
        const [gx, gy] = s.grad(r.p[0], r.p[1]);
        grad[0] = gx + this.noise * n1;
        grad[1] = gy + this.noise * n2;
        r.opt.step([r.p], [grad]);
        if (!Number.isFinite(s.f(r.p[0], r.p[1])) || Math.abs(r.p[0]) > 1e3 || Math.abs(r.p[1]) > 1e3) {
          r.diverged = true;
        }
        r.trail.push(r.p[0], r.p[1]);
        if (r.arrivedAt === null && this.distance(r) < ARRIVAL_TOLERANCE) r.arrivedAt = this.step;
      }
      const m = this.runners[0].opt.effectiveMomentum(0);
      this.momentum[0].push(this.step);
      this.momentum[1].push(m[0]);
      this.momentum[2].push(m[1]);
    }
  }

  /** Steps to the end of the race at once (tests). */
  runToEnd() {
    this.advance(this.surface.steps);
    this.draw();
    this.onUpdate(this);
  }

  /** What each runner has reached. */
  state() {
    const s = this.surface;
    return {
      surface: this.surfaceKey,
      step: this.step,
      steps: s.steps,
      noise: this.noise,
      runners: this.runners.map((r) => ({
        key: r.key,
        x: r.p[0],
        y: r.p[1],
        f: s.f(r.p[0], r.p[1]),
        distance: this.distance(r),
        arrivedAt: r.arrivedAt,
        diverged: r.diverged,
      })),
    };
  }

  renderBackground() {
    // At the bitmap's resolution: (i, j) are device pixels.
    const { width: w, height: h } = this.canvas;
    const k0 = this.width / w;
    const s = this.surface;
    const v = new Float32Array(w * h);
    let lo = Infinity;
    let hi = -Infinity;
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const [x, y] = this.toWorld((i + 0.5) * k0, (j + 0.5) * k0);
        const z = Math.log10(1 + s.f(x, y));
        v[j * w + i] = z;
        lo = Math.min(lo, z);
        hi = Math.max(hi, z);
      }
    }
    const img = this.ctx.createImageData(w, h);
    const levels = 16;
    const level = (k) => Math.floor(((v[k] - lo) / (hi - lo)) * levels);
    for (let j = 0; j < h; j++) {
      for (let i = 0; i < w; i++) {
        const k = j * w + i;
        const t = (v[k] - lo) / (hi - lo);
        let c = colour(t);
        const edge = (i + 1 < w && level(k + 1) !== level(k)) || (j + 1 < h && level(k + w) !== level(k));
        if (edge) c = c.map((x) => x * 0.84);
        img.data.set([c[0], c[1], c[2], 255], 4 * k);
      }
    }
    const off = document.createElement("canvas");
    off.width = w;
    off.height = h;
    off.getContext("2d").putImageData(img, 0, 0);
    this.background = off;
  }

  draw() {
    if (!this.background) this.renderBackground();
    const ctx = this.ctx;
    ctx.drawImage(this.background, 0, 0, this.width, this.height);
    // minima
    for (const [a, b] of this.surface.minima) {
      const [px, py] = this.toScreen(a, b);
      ctx.save();
      ctx.strokeStyle = "#1d2433";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(px - 6, py - 6);
      ctx.lineTo(px + 6, py + 6);
      ctx.moveTo(px + 6, py - 6);
      ctx.lineTo(px - 6, py + 6);
      ctx.stroke();
      ctx.restore();
    }
    // trails, VSGD's last (on top)
    for (const r of [...this.runners].reverse()) {
      ctx.save();
      ctx.strokeStyle = r.color;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.globalAlpha = 0.85;
      ctx.beginPath();
      for (let i = 0; i < r.trail.length; i += 2) {
        const [px, py] = this.toScreen(r.trail[i], r.trail[i + 1]);
        if (i === 0) ctx.moveTo(px, py);
        else ctx.lineTo(px, py);
      }
      ctx.stroke();
      ctx.restore();
    }
    // start and heads
    const [sx, sy] = this.toScreen(this.start[0], this.start[1]);
    ctx.fillStyle = "#1d2433";
    ctx.beginPath();
    ctx.arc(sx, sy, 4, 0, 2 * Math.PI);
    ctx.fill();
    // Heads as rings of decreasing size: runners at the same point stay visible.
    this.runners.forEach((r, k) => {
      const [px, py] = this.toScreen(r.p[0], r.p[1]);
      ctx.beginPath();
      ctx.arc(px, py, 10 - 2.2 * k, 0, 2 * Math.PI);
      ctx.fillStyle = r.color;
      ctx.fill();
      ctx.lineWidth = 1;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    });
  }

  /** Animation: `speed` steps per frame while playing. */
  loop() {
    const frame = () => {
      if (this.playing && !this.done) {
        this.advance(this.speed);
        this.onUpdate(this);
      }
      this.draw();
      requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  }
}

/** The uPlot chart of VSGD's momentum per coordinate over the steps. */
export function momentumPlot(el, width) {
  return new uPlot(
    {
      width,
      height: 170,
      legend: { show: true, live: false },
      cursor: { show: false },
      scales: { x: { time: false }, y: { range: (u, lo) => [Math.max(0, Math.min(0.8, Math.floor(lo * 10) / 10 - 0.1)), 1] } },
      axes: [
        { stroke: "#6b7385", grid: { stroke: "#eef0f4" }, size: 28 },
        { stroke: "#6b7385", grid: { stroke: "#eef0f4" }, size: 50, values: (u, v) => v.map((x) => x.toFixed(2)) },
      ],
      series: [
        { label: "step" },
        { label: "momentum x", stroke: "#e4572e", width: 2 },
        { label: "momentum y", stroke: "#a23b1f", width: 2, dash: [5, 3] },
      ],
    },
    [[], [], []],
    el,
  );
}
