"""Shared set-up: eight forced host devices (for the sharding tests; set before JAX starts),
the repository's conformance cases, and the native tools the tests compare against."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(os.environ.get("VSGD_REPO", pathlib.Path(__file__).resolve().parents[3]))
CONFORMANCE = REPO / "tests" / "data" / "conformance"


def _tool(env: str, default: pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(os.environ.get(env, default))
    if not path.is_file():
        msg = (f"{path} not found (build it with cargo, or set {env}); "
               "scripts/test.d/40-jax.sh does both")
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def vsgd_bin() -> pathlib.Path:
    """The native CLI (`vsgd replay`, `vsgd inspect`)."""
    return _tool("VSGD_BIN", REPO / "target" / "release" / "vsgd")


@pytest.fixture(scope="session")
def resume_bin() -> pathlib.Path:
    """bindings/jax/examples/resume.rs: resumes a checkpoint with the core's Optimizer."""
    return _tool("VSGD_JAX_RESUME", REPO / "target" / "release" / "examples" / "resume")


def cases():
    found = sorted(CONFORMANCE.glob("*.json"))
    if not found:
        raise RuntimeError(f"no conformance cases in {CONFORMANCE}")
    return found
