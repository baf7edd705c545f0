#!/usr/bin/env python3
"""Lints PTX for bit-reproducible floating point, and gates ptxas's register report.

  ptx_lint.py FILE.ptx...             the lint
  ptx_lint.py --ptxas PTXAS FILE.ptx  also compile it for sm_90 with ptxas -v and fail on any
                                      spill, stack frame (local memory) or ptxas warning

The lint fails on:
- fused multiply-add: `fma.*`, float `mad.*` (the CPU path never fuses);
- approximate or flush-to-zero math: `.approx`, `.ftz`, `div.full`;
- float add/sub/mul/div/sqrt/rcp without `.rn`: ptxas may contract an unrounded mul + add into
  an FMA, so every float operation must carry its rounding mode;
- local memory: `.local` declarations, `ld.local`/`st.local`.
"""
import re
import subprocess
import sys

FLOAT_OP = re.compile(r"^\s*(?:@!?%p\d+\s+)?(add|sub|mul|div|sqrt|rcp)((?:\.[a-z0-9]+)*)\.(f32|f64)\b")
BAD = [
    (re.compile(r"^\s*(?:@!?%p\d+\s+)?fma\."), "fused multiply-add"),
    (re.compile(r"^\s*(?:@!?%p\d+\s+)?mad(?:\.[a-z0-9]+)*\.f(?:32|64)\b"), "float mad"),
    (re.compile(r"\.approx\b"), "approximate math"),
    (re.compile(r"\.ftz\b"), "flush to zero"),
    (re.compile(r"\bdiv\.full\b"), "approximate division"),
    (re.compile(r"\.local\b"), "local memory"),
]


def lint(path):
    errors, ops = [], {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            code = line.split("//")[0]
            for rx, what in BAD:
                if rx.search(code):
                    errors.append(f"{path}:{n}: {what}: {line.strip()}")
            m = FLOAT_OP.match(code)
            if m:
                op, mods, ty = m.groups()
                key = f"{op}{mods}.{ty}"
                ops[key] = ops.get(key, 0) + 1
                if ".rn" not in mods.split(".") and f".rn" not in mods:
                    errors.append(f"{path}:{n}: {op}.{ty} without .rn: {line.strip()}")
    return errors, ops


def ptxas_gate(ptxas, path):
    out = subprocess.run(
        [ptxas, "-arch=sm_90", "-O3", "-v", "--warn-on-spills", "--warning-as-error", path, "-o", "/dev/null"],
        capture_output=True,
        text=True,
    )
    text = out.stdout + out.stderr
    errors = [] if out.returncode == 0 else [f"ptxas failed ({out.returncode}):\n{text}"]
    rows, fn = [], None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line) or re.search(r"Function properties for (\w+)", line)
        if m:
            fn = m.group(1)
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and fn:
            stack, stores, loads = map(int, m.groups())
            if stack or stores or loads:
                errors.append(f"{fn}: {stack} bytes stack frame, {stores}/{loads} bytes spilled")
        m = re.search(r"Used (\d+) registers", line)
        if m and fn:
            rows.append((fn, int(m.group(1))))
    return errors, rows


def main():
    args = sys.argv[1:]
    ptxas = None
    if args[:1] == ["--ptxas"]:
        ptxas, args = args[1], args[2:]
    failed = False
    for path in args:
        errors, ops = lint(path)
        summary = ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
        print(f"{path}: {sum(ops.values())} float operations ({summary})")
        if ptxas:
            e2, rows = ptxas_gate(ptxas, path)
            errors += e2
            for fn, regs in rows:
                print(f"  sm_90 {fn}: {regs} registers, no spills, no stack")
        for e in errors:
            print(e, file=sys.stderr)
        failed |= bool(errors)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
