"""`python -m vsgd_jax.replay` prints byte for byte what `vsgd replay` prints, for every
conformance case in both element types."""

import subprocess
import sys

import pytest

from conftest import CONFORMANCE, cases
from vsgd_jax import replay

CASES = cases()


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_replay_is_byte_identical_to_the_native_cli(case, dtype, vsgd_bin):
    native = subprocess.run([str(vsgd_bin), "replay", str(case), "--dtype", dtype],
                            capture_output=True, check=True).stdout
    ours = (replay.replay(case.read_text(), dtype) + "\n").encode()
    assert ours == native


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_the_module_entry_point(dtype, vsgd_bin):
    case = CONFORMANCE / "vsgd-lr-schedule.json"
    out = subprocess.run([sys.executable, "-m", "vsgd_jax.replay", str(case), "--dtype", dtype],
                         capture_output=True, check=True).stdout
    native = subprocess.run([str(vsgd_bin), "replay", str(case), "--dtype", dtype],
                            capture_output=True, check=True).stdout
    assert out == native


def test_bad_case_is_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "vsgd-conformance/1", "algorithm": "vsgd", "hyper": {"ghattg": -1},'
                   ' "tensors": [{"shape": [1], "param0": [0], "grads": [[1]]}],'
                   ' "expected": {"checkpoints": [1]}}')
    r = subprocess.run([sys.executable, "-m", "vsgd_jax.replay", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "ghattg" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("x, text", [
    (1.0, "1.0"), (-0.0, "-0.0"), (0.0, "0.0"), (0.001234, "0.001234"),
    (1.234e-5, "0.00001234"), (1.234e-6, "1.234e-6"), (1e-7, "1e-7"),
    (123456789012345.6, "123456789012345.6"), (1e15, "1000000000000000.0"),
    (1e16, "1e+16"), (1.5e20, "1.5e+20"), (float("nan"), "null"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
])
def test_number_format(x, text):
    assert replay.format_number(x) == text


def test_number_parse_follows_serde_json():
    # serde_json (no float_roundtrip) divides the u64 significand by a power of ten: for this
    # token that lands one ulp away from the correctly rounded double Python's float() gives.
    token = "0.74391500080636083"
    assert replay.parse_number(token) == 74391500080636083 / 1e17
    assert replay.parse_number(token) != float(token)
    assert replay.parse_number("-2.5e-3") == -(25.0 / 1e4)
    assert replay.parse_number("12") == 12.0
    with pytest.raises(ValueError):
        replay.parse_number("1e400")
