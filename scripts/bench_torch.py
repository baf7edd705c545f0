#!/usr/bin/env python3
"""One optimizer step on ONE CPU core: PyTorch's fused CPU optimizers against vsgd's C ABI.

A benchmark, not a test. For Adam, AdamW and SGD with momentum, on one f32 tensor of
`--elements` elements (default 16M), it times one `opt.step()` of
`torch.optim.{Adam,AdamW,SGD}(..., fused=True)` and one `vsgd_step_f32` (the stateless
per-tensor step of include/vsgd.h, over caller-owned state arrays) called in-process through
`ctypes` on target/release/libvsgd.so, with the same hyperparameters, samples of the two sides
interleaved in one process (the side that goes first rotates), after warm-up steps. It prints
a Markdown table of best and median milliseconds per step and the ratio vsgd/torch.

Before timing, each algorithm is checked once: one step from the same parameter, gradient
and zero state on both sides must give parameters that agree within 1e-3 * lr (1e-6 at
lr = 1e-3, about two float32 ulps of the largest parameters; an ulp of |θ| < 8 is at most
4.8e-7); the largest difference is printed.

vsgd's rows come in two flavours (`--finite`):
  CHECK  `VSGD_FINITE_CHECK`: the call scans the gradient for NaN/inf first (a separate read
         of `grad`) and skips the step if it finds one: the library's safe default;
  YES    `VSGD_FINITE_YES`: the caller vouches the gradient is finite, no scan: the same work
         as torch's fused step, which does not look for NaN/inf unless given a GradScaler's
         `found_inf`.

Placement: torch allocates its own state (each large tensor from malloc, all at the same
offset within their 4 KiB pages). The vsgd side's arrays (parameter, gradient, state) are cut
from one buffer 1 KiB apart within their pages, as docs/abi.md advises callers of the
stateless steps (`--placement same` puts them all at malloc's 16 bytes into a page instead).

Run it through scripts/bench-torch.sh, which makes the venv, builds the library and pins the
process to one core (taskset -c 0, OMP_NUM_THREADS=1, MKL_NUM_THREADS=1).
"""

import argparse
import ctypes
import gc
import os
import platform
import statistics
import sys
import time

# Before torch is imported: one thread for OpenMP and MKL (the shell script sets these too).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# include/vsgd.h
VSGD_ABI_VERSION = 2
VSGD_RESULT_OK = 0
VSGD_ALGORITHM_ADAM = 2
VSGD_ALGORITHM_ADAMW = 3
VSGD_ALGORITHM_SGDM = 4
VSGD_POLICY_SKIP = 0
VSGD_FINITE_CHECK = 0
VSGD_FINITE_YES = 1
VSGD_STEP_APPLIED = 0

PAGE = 4096
GAP = 1024

LR = 1e-3
BETAS = (0.9, 0.999)
EPS = 1e-8
WEIGHT_DECAY_ADAMW = 0.01
MOMENTUM = 0.9


class VsgdError(RuntimeError):
    pass


class Vsgd:
    """The few C ABI functions the benchmark needs, with every result checked."""

    def __init__(self, path):
        self.lib = lib = ctypes.CDLL(path)
        c_cfg = ctypes.c_void_p
        u32, u64, size = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_size_t
        sigs = {
            "vsgd_version": ([], ctypes.c_char_p),
            "vsgd_abi_version": ([], u32),
            "vsgd_result_name": ([u32], ctypes.c_char_p),
            "vsgd_last_error": ([ctypes.c_char_p, size, ctypes.POINTER(size)], u32),
            "vsgd_config_new": ([u32, ctypes.POINTER(c_cfg)], u32),
            "vsgd_config_free": ([c_cfg], None),
            "vsgd_config_set": ([c_cfg, ctypes.c_char_p, ctypes.c_double], u32),
            "vsgd_config_get": ([c_cfg, ctypes.c_char_p, ctypes.POINTER(ctypes.c_double)], u32),
            "vsgd_config_validate": ([c_cfg], u32),
            "vsgd_state_count": ([u32, ctypes.POINTER(size)], u32),
            "vsgd_state_name": ([u32, size, ctypes.POINTER(ctypes.c_char_p)], u32),
            # vsgd_result vsgd_step_f32(const vsgd_config *config, uint64_t t, double lr,
            #     float *param, const float *grad, size_t len, float *const *state,
            #     size_t state_count, vsgd_policy policy, vsgd_finite finite,
            #     vsgd_step_outcome *outcome);
            "vsgd_step_f32": (
                [c_cfg, u64, ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p, size,
                 ctypes.c_void_p, size, u32, u32, ctypes.POINTER(u32)],
                u32,
            ),
        }
        for name, (argtypes, restype) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes = argtypes
            fn.restype = restype
        abi = lib.vsgd_abi_version()
        if abi != VSGD_ABI_VERSION:
            raise VsgdError(f"{path}: ABI {abi}, this script speaks ABI {VSGD_ABI_VERSION}")
        self.version = lib.vsgd_version().decode()

    def check(self, rc, what):
        if rc != VSGD_RESULT_OK:
            n = ctypes.c_size_t(0)
            buf = ctypes.create_string_buffer(1024)
            self.lib.vsgd_last_error(buf, len(buf), ctypes.byref(n))
            name = self.lib.vsgd_result_name(rc).decode()
            raise VsgdError(f"{what}: {name} ({rc}): {buf.value.decode(errors='replace')}")

    def config(self, algorithm, hyper):
        cfg = ctypes.c_void_p()
        self.check(self.lib.vsgd_config_new(algorithm, ctypes.byref(cfg)), "vsgd_config_new")
        for k, v in hyper.items():
            self.check(self.lib.vsgd_config_set(cfg, k.encode(), float(v)), f"vsgd_config_set {k}")
        self.check(self.lib.vsgd_config_validate(cfg), "vsgd_config_validate")
        return cfg

    def state_names(self, algorithm):
        n = ctypes.c_size_t()
        self.check(self.lib.vsgd_state_count(algorithm, ctypes.byref(n)), "vsgd_state_count")
        names = []
        for i in range(n.value):
            s = ctypes.c_char_p()
            self.check(self.lib.vsgd_state_name(algorithm, i, ctypes.byref(s)), "vsgd_state_name")
            names.append(s.value.decode())
        return names


class Arena:
    """Arrays of float32 cut from one torch byte buffer, each starting at a chosen offset
    within its 4 KiB page: GAP bytes further than the one before (staggered), or all at 16
    bytes (what a large malloc returns)."""

    def __init__(self, count, elements, placement):
        nbytes = elements * 4
        stride = -(-nbytes // PAGE) * PAGE + PAGE
        self.buf = torch.empty(count * stride + 2 * PAGE, dtype=torch.uint8)
        base = (-self.buf.data_ptr()) % PAGE  # first page boundary inside the buffer
        self.arrays = []
        for k in range(count):
            within = (k * GAP) % PAGE if placement == "staggered" else 16
            off = base + k * stride + within
            a = self.buf[off:off + nbytes].view(torch.float32)
            assert a.data_ptr() % PAGE == within and a.numel() == elements
            self.arrays.append(a)


ALGORITHMS = {
    "adam": dict(
        vsgd=VSGD_ALGORITHM_ADAM,
        hyper=dict(lr=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS, weight_decay=0.0, l2=0.0),
        torch_state=["exp_avg", "exp_avg_sq"],
    ),
    "adamw": dict(
        vsgd=VSGD_ALGORITHM_ADAMW,
        hyper=dict(lr=LR, beta1=BETAS[0], beta2=BETAS[1], eps=EPS,
                   weight_decay=WEIGHT_DECAY_ADAMW, l2=0.0),
        torch_state=["exp_avg", "exp_avg_sq"],
    ),
    "sgdm": dict(
        vsgd=VSGD_ALGORITHM_SGDM,
        hyper=dict(lr=LR, momentum=MOMENTUM, dampening=0.0, nesterov=0, weight_decay=0.0, l2=0.0),
        torch_state=["momentum_buffer"],
    ),
}


def torch_optimizer(name, param, mode):
    kw = {mode: True}
    if name == "adam":
        return torch.optim.Adam([param], lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0, **kw)
    if name == "adamw":
        return torch.optim.AdamW([param], lr=LR, betas=BETAS, eps=EPS,
                                 weight_decay=WEIGHT_DECAY_ADAMW, **kw)
    return torch.optim.SGD([param], lr=LR, momentum=MOMENTUM, dampening=0.0, nesterov=False,
                           weight_decay=0.0, **kw)


def torch_mode(name):
    """'fused' when this torch can step the algorithm fused on the CPU, else 'foreach'."""
    p = torch.nn.Parameter(torch.zeros(8))
    p.grad = torch.ones(8)
    try:
        torch_optimizer(name, p, "fused").step()
        return "fused"
    except (RuntimeError, ValueError, TypeError) as e:
        print(f"note: torch {name} fused=True on CPU refused ({e}); using foreach=True",
              file=sys.stderr)
        return "foreach"


def parse_elements(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    n = int(s[:-1] if mult != 1 else s) * mult
    if n <= 0:
        raise argparse.ArgumentTypeError("--elements must be positive")
    return n


def wheel_description():
    w = os.environ.get("VSGD_TORCH_WHEEL")
    if w:
        return w
    v = torch.__version__
    if "+cpu" in v:
        return "CPU wheel (+cpu), inferred from the version"
    if torch.version.cuda:
        return f"CUDA {torch.version.cuda} build, running on the CPU; inferred"
    return "unknown (not installed by scripts/bench-torch.sh)"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def page_offsets(tensors):
    return ", ".join(f"{k} {t.data_ptr() % PAGE}" for k, t in tensors)


def bench(name, args, vs, out):
    spec = ALGORITHMS[name]
    n = args.elements
    mode = torch_mode(name)
    names = vs.state_names(spec["vsgd"])
    assert len(names) == len(spec["torch_state"]), (names, spec["torch_state"])
    cfg = vs.config(spec["vsgd"], spec["hyper"])
    try:
        gen = torch.Generator().manual_seed(0)
        p0 = torch.randn(n, generator=gen)
        g0 = torch.randn(n, generator=gen)

        # torch side: its own parameter, gradient and (after the first step) state.
        tp = torch.nn.Parameter(p0.clone())
        tp.grad = g0.clone()
        opt = torch_optimizer(name, tp, mode)

        # vsgd side: parameter, gradient and state arrays from one arena, 1 KiB apart.
        arena = Arena(2 + len(names), n, args.placement)
        vp, vg, *vstate = arena.arrays
        vp.copy_(p0)
        vg.copy_(g0)
        for s in vstate:
            s.zero_()
        ptrs = (ctypes.c_void_p * len(vstate))(*[s.data_ptr() for s in vstate])
        outcome = ctypes.c_uint32(0xFFFFFFFF)
        step_f32 = vs.lib.vsgd_step_f32
        t = 0

        def vsgd_step(finite):
            nonlocal t
            t += 1
            outcome.value = 0xFFFFFFFF
            rc = step_f32(cfg, t, LR, vp.data_ptr(), vg.data_ptr(), n, ptrs, len(vstate),
                          VSGD_POLICY_SKIP, finite, ctypes.byref(outcome))
            vs.check(rc, f"vsgd_step_f32 ({name}, t={t})")
            if outcome.value != VSGD_STEP_APPLIED:
                raise VsgdError(f"vsgd_step_f32 ({name}, t={t}): outcome {outcome.value}, "
                                "expected VSGD_STEP_APPLIED")

        # Correctness, once: the first step from the same start on both sides.
        opt.step()
        vsgd_step(VSGD_FINITE_CHECK)
        tol = 1e-3 * LR
        diff = (tp.detach() - vp).abs().max().item()
        same = torch.equal(tp.detach(), vp)
        sdiffs = []
        for vname, tname, vs_arr in zip(names, spec["torch_state"], vstate):
            ts = opt.state[tp][tname]
            sdiffs.append(f"{vname}/{tname} {(ts - vs_arr).abs().max().item():.3g}")
        out.append(f"- {name}: after step 1, max |θ_torch − θ_vsgd| = {diff:.3g} "
                   f"(tolerance {tol:.0e}{', bit-identical' if same else ''}); "
                   f"state max diff: {', '.join(sdiffs)}")
        print(out[-1], file=sys.stderr)
        if not diff <= tol:
            raise SystemExit(f"{name}: torch and vsgd disagree after one step: "
                             f"max abs diff {diff:.3g} > {tol:.0e}")
        placement = page_offsets([("param", tp), ("grad", tp.grad)] +
                                 [(k, opt.state[tp][k]) for k in spec["torch_state"]])
        vplacement = page_offsets([("param", vp), ("grad", vg)] + list(zip(names, vstate)))
        out.append(f"  - page offsets (bytes into a 4 KiB page): torch {placement}; "
                   f"vsgd {vplacement}")

        variants = {"check": VSGD_FINITE_CHECK, "yes": VSGD_FINITE_YES}
        chosen = list(variants) if args.finite == "both" else [args.finite]
        sides = [("torch", opt.step)] + [
            (v, (lambda f: lambda: vsgd_step(f))(variants[v])) for v in chosen]
        for _ in range(args.warmup):
            for _, fn in sides:
                fn()
        times = {k: [] for k, _ in sides}
        gc.collect()
        gc.disable()
        try:
            for i in range(args.samples):
                order = sides[i % len(sides):] + sides[:i % len(sides)]
                for k, fn in order:
                    t0 = time.perf_counter_ns()
                    fn()
                    times[k].append((time.perf_counter_ns() - t0) / 1e6)
        finally:
            gc.enable()
        if not torch.isfinite(tp.detach()).all() or not torch.isfinite(vp).all():
            raise SystemExit(f"{name}: a parameter went non-finite during the benchmark")
        return mode, times
    finally:
        vs.lib.vsgd_config_free(cfg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", type=parse_elements, default=16 << 20,
                    help="elements of the one f32 tensor (suffix K/M/G allowed; default 16M)")
    ap.add_argument("--samples", type=int, default=15, help="timed steps per side (default 15)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per side (default 3)")
    ap.add_argument("--algorithms", default="adam,adamw,sgdm",
                    help="comma-separated subset of adam,adamw,sgdm")
    ap.add_argument("--finite", choices=["check", "yes", "both"], default="both",
                    help="vsgd's finite verdict: CHECK scans grad, YES does not (default both)")
    ap.add_argument("--placement", choices=["staggered", "same"], default="staggered",
                    help="vsgd arrays 1 KiB apart within their pages, or all at offset 16")
    ap.add_argument("--lib", default=None,
                    help="path of libvsgd.so (default $CARGO_TARGET_DIR or target/release)")
    args = ap.parse_args()
    if args.samples < 1 or args.warmup < 0:
        ap.error("--samples must be >= 1 and --warmup >= 0")
    algs = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    for a in algs:
        if a not in ALGORITHMS:
            ap.error(f"unknown algorithm {a!r}")

    torch.set_num_threads(1)
    lib = args.lib
    if lib is None:
        target = os.environ.get("CARGO_TARGET_DIR") or "target"
        lib = os.path.join(REPO if not os.path.isabs(target) else "", target, "release",
                           "libvsgd.so")
    if not os.path.exists(lib):
        raise SystemExit(f"{lib} not found: build it with `cargo build --release -p vsgd-ffi`")
    vs = Vsgd(lib)

    load_before = os.getloadavg()
    notes, rows = [], []
    for a in algs:
        mode, times = bench(a, args, vs, notes)
        rows.append((a, mode, times))
        gc.collect()
    load_after = os.getloadavg()

    def bm(xs):
        return min(xs), statistics.median(xs)

    label = {"check": "FINITE_CHECK (scans grad)", "yes": "FINITE_YES (no scan)"}
    print(f"\nOne step of one {args.elements:,}-element f32 tensor, one core; "
          f"{args.samples} samples per side, interleaved, after {args.warmup} warm-up steps.\n")
    print("| algorithm | torch fused ms (best / median) | vsgd C ABI ms (best / median) "
          "| vsgd/torch (best / median) |")
    print("|---|---:|---:|---:|")
    for a, mode, times in rows:
        tb, tm = bm(times["torch"])
        for v in [k for k in times if k != "torch"]:
            vb, vm = bm(times[v])
            tlabel = "" if mode == "fused" else f" [torch {mode}, fused unsupported]"
            print(f"| {a}, vsgd {label[v]}{tlabel} | {tb:.2f} / {tm:.2f} | {vb:.2f} / {vm:.2f} "
                  f"| {vb / tb:.2f} / {vm / tm:.2f} |")
    print()
    print(f"- torch {torch.__version__} ({wheel_description()}); "
          f"torch optimizers: {', '.join(f'{a} {m}' for a, m, _ in rows)}")
    print(f"- vsgd {vs.version} (C ABI {VSGD_ABI_VERSION}), {lib}, `vsgd_step_f32` via ctypes, "
          f"policy SKIP")
    print(f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs on the machine); "
          f"Python {platform.python_version()}")
    print(f"- threads: torch.get_num_threads() = {torch.get_num_threads()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS')}, "
          f"CPU affinity {sorted(os.sched_getaffinity(0))}; vsgd_step_f32 runs on the calling thread")
    if args.placement == "staggered":
        print("- placement: vsgd's parameter, gradient and state arrays are cut from one buffer "
              "1 KiB apart within their 4 KiB pages (docs/abi.md advice); torch allocates its own")
    else:
        print("- placement: vsgd's arrays all at 16 bytes into their pages (`--placement same`, "
              "like malloc); torch allocates its own")
    print(f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print("- correctness (one step from the same start):")
    for line in notes:
        print(f"  {line}")


if __name__ == "__main__":
    main()
