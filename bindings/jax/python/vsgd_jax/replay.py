"""``python -m vsgd_jax.replay CASE.json --dtype f32|f64``: runs a conformance case
(``vsgd-conformance/1``, see ``tests/data/conformance``) through the jitted fused step of this
package and prints the same JSON, byte for byte, as ``vsgd replay CASE.json --dtype ...``:
``{"checkpoints":[...],"param":[[tensor...] per checkpoint],"state":{name:[tensor...]}}``,
keys sorted, numbers in the shortest form that reads back (as serde_json 1.0.154 prints an
f64, through the ``zmij`` crate), non-finite values as ``null``.
"""

from __future__ import annotations

import json
import math
import sys


def format_number(x: float) -> str:
    """``x`` as serde_json prints an f64: the shortest digits that read back, in fixed
    notation when the decimal exponent is in -5..=15 (``1.0``, ``0.00001234``,
    ``12340000000.0``), else ``1e-7``, ``1.5e+20``; ``null`` when not finite."""
    if not math.isfinite(x):
        return "null"
    if x == 0.0:
        return "-0.0" if math.copysign(1.0, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    # Python's repr is the shortest round-trip string too; take its digits and exponent.
    mantissa, _, exp10 = f"{abs(x)!r}".partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + (int(exp10) if exp10 else 0)  # decimal point after `point` digits
    point -= len(whole + frac) - len((whole + frac).lstrip("0"))
    digits = digits.rstrip("0") or "0"
    length = len(digits)
    exp = point - 1  # value = d.ddd × 10^exp
    if -5 <= exp <= 15:
        if length <= point:
            return f"{sign}{digits}{'0' * (point - length)}.0"
        if point > 0:
            return f"{sign}{digits[:point]}.{digits[point:]}"
        return f"{sign}0.{'0' * -point}{digits}"
    e = f"e+{exp}" if exp >= 0 else f"e{exp}"
    if length == 1:
        return f"{sign}{digits}{e}"
    return f"{sign}{digits[0]}.{digits[1:]}{e}"


_U64_MAX = (1 << 64) - 1
_I32_MAX = (1 << 31) - 1
_POW10 = [float(f"1e{i}") for i in range(309)]


def parse_number(token: str) -> float:
    """A JSON number as serde_json 1.0.154 (without ``float_roundtrip``) reads it into an f64,
    which ``vsgd replay`` does: up to 19 significant digits gathered into a u64 (further
    digits dropped), converted to f64, then multiplied or divided by one correctly rounded
    power of ten. This is not always the correctly rounded value (it can be one unit in the
    last place off), so a byte-identical replay must read numbers the same way."""
    neg = token.startswith("-")
    body = token[1:] if neg else token
    mantissa, e_char, exp_text = body.replace("E", "e").partition("e")
    whole, _, frac = mantissa.partition(".")
    sig, exponent, full = 0, 0, False
    for c in whole:
        if full:
            exponent += 1
        elif sig * 10 + int(c) > _U64_MAX:
            full = True
            exponent += 1
        else:
            sig = sig * 10 + int(c)
    for c in frac:
        if sig * 10 + int(c) > _U64_MAX:
            break
        sig = sig * 10 + int(c)
        exponent -= 1
    if e_char:
        exp_neg = exp_text.startswith("-")
        digits = exp_text.lstrip("+-")
        e = 0
        for c in digits:
            if e * 10 + int(c) > _I32_MAX:
                if sig != 0 and not exp_neg:
                    raise ValueError(f"number out of range: {token}")
                return -0.0 if neg else 0.0
            e = e * 10 + int(c)
        exponent = exponent - e if exp_neg else exponent + e
        exponent = max(-(1 << 31), min(_I32_MAX, exponent))
    f = float(sig)
    while True:
        if abs(exponent) <= 308:
            if exponent >= 0:
                f *= _POW10[exponent]
                if math.isinf(f):
                    raise ValueError(f"number out of range: {token}")
            else:
                f /= _POW10[-exponent]
            break
        if f == 0.0:
            break
        if exponent >= 0:
            raise ValueError(f"number out of range: {token}")
        f /= 1e308
        exponent += 308
    return -f if neg else f


def _parse_int(token: str):
    """JSON integers stay integers (shapes, steps) when serde_json keeps them as u64/i64."""
    value = int(token)
    if token == "-0":
        return -0.0
    if -value > _U64_MAX or value > _U64_MAX:
        return parse_number(token)
    return value


def _dump(v) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v[k])}" for k in sorted(v)) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_dump(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return format_number(float(v))


class CaseError(ValueError):
    """The case file is not a valid ``vsgd-conformance/1`` case."""


def _parse(text: str):
    try:
        case = json.loads(text, parse_float=parse_number, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise CaseError(f"not valid JSON: {e}") from None
    if not isinstance(case, dict) or case.get("format") != "vsgd-conformance/1":
        raise CaseError("format is not 'vsgd-conformance/1'")
    algorithm = case.get("algorithm")
    hyper = case.get("hyper")
    if not isinstance(algorithm, str) or not isinstance(hyper, dict):
        raise CaseError("missing 'algorithm' or 'hyper'")
    tensors = case.get("tensors")
    if not isinstance(tensors, list):
        raise CaseError("missing 'tensors' array")
    shapes, param0, grads = [], [], []
    for k, t in enumerate(tensors):
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise CaseError(f"tensors[{k}].shape: expected non-negative integers")
        n = math.prod(shape)
        p = t.get("param0")
        g = t.get("grads")
        if not isinstance(p, list) or len(p) != n:
            raise CaseError(f"tensors[{k}].param0 must hold {n} values")
        if not isinstance(g, list) or any(not isinstance(x, list) or len(x) != n for x in g):
            raise CaseError(f"tensors[{k}].grads must be lists of {n} values")
        shapes.append(shape)
        param0.append(p)
        grads.append(g)
    available = min((len(g) for g in grads), default=0)
    steps = case.get("steps", available)
    if type(steps) is not int or steps > available or steps < 0:
        raise CaseError(f"'steps' must be an integer up to {available}")
    lrs = case.get("lr_per_step")
    if lrs is not None and (not isinstance(lrs, list) or len(lrs) < steps):
        raise CaseError(f"lr_per_step must hold {steps} values")
    checkpoints = (case.get("expected") or {}).get("checkpoints")
    if not isinstance(checkpoints, list) or any(
            type(c) is not int or c < 1 or c > steps for c in checkpoints):
        raise CaseError(f"expected.checkpoints must be step numbers in 1..={steps}")
    return algorithm, hyper, shapes, param0, grads, steps, lrs, checkpoints


def replay(text: str, dtype: str) -> str:
    """The JSON line ``vsgd replay`` prints for the case in ``text``."""
    import jax

    with jax.enable_x64(True):
        return _replay(text, dtype)


def _replay(text: str, dtype: str) -> str:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ._transform import make

    algorithm, hyper, shapes, param0, grads, steps, lrs, checkpoints = _parse(text)
    np_dtype = {"f32": np.float32, "f64": np.float64}[dtype]
    values = {}
    for key, v in hyper.items():
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)):
            raise CaseError(f"hyper.{key}: expected a number or a boolean")
        values[key] = float(v)
    base_lr = values.pop("lr", None)
    if base_lr is None:
        from . import _native
        base_lr = _native.default(algorithm, "lr")
    if lrs is not None:
        # Checked as the native replay does: the case's own lr first, then each step's.
        make(algorithm, base_lr, **values)
        table = jnp.asarray(np.array(lrs[:steps] or [0.0], np.float64))
        learning_rate = lambda count: table[count]  # noqa: E731
    else:
        learning_rate = base_lr
    tx = make(algorithm, learning_rate, **values)

    params = [jnp.asarray(np.array(p, np.float64).astype(np_dtype).reshape(s))
              for p, s in zip(param0, shapes)]
    state = tx.init(params)
    # (params, state) in and out in the same order: the donated buffers are updated in place.
    step = jax.jit(lambda p, s, g: tx.step(g, s, p), donate_argnums=(0, 1))
    recorded = []
    for s in range(steps):
        g = [jnp.asarray(np.array(gs[s], np.float64).astype(np_dtype).reshape(sh))
             for gs, sh in zip(grads, shapes)]
        params, state = step(params, state, g)
        if s + 1 in checkpoints:
            recorded.append([np.asarray(p).ravel().tolist() for p in params])
    names = type(state)._fields[1:]
    out = {
        "checkpoints": checkpoints,
        "param": recorded,
        "state": {n: [np.asarray(x).ravel().tolist() for x in getattr(state, n)]
                  for n in names},
    }
    return _dump(out)


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m vsgd_jax.replay CASE.json [--dtype f32|f64]"
    path, dtype = None, "f64"
    it = iter(args)
    for a in it:
        if a == "--dtype":
            dtype = next(it, None)
            if dtype not in ("f32", "f64"):
                print(f"vsgd_jax.replay: unknown dtype '{dtype}'\n{usage}", file=sys.stderr)
                return 2
        elif a.startswith("--"):
            print(f"vsgd_jax.replay: unknown option '{a}'\n{usage}", file=sys.stderr)
            return 2
        elif path is None:
            path = a
        else:
            print(f"vsgd_jax.replay: unexpected argument '{a}'\n{usage}", file=sys.stderr)
            return 2
    if path is None:
        print(usage, file=sys.stderr)
        return 2
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        print(replay(text, dtype))
    except (OSError, ValueError, TypeError) as e:
        print(f"vsgd_jax.replay: {path}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
