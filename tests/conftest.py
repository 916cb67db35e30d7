"""Shared fixtures: repository paths, one local Ray instance per test session, the embedded model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRACES_DIR = REPO / "jobs" / "data" / "traces"
MATH_TRACES = TRACES_DIR / "math500_sky-t1-27b.jsonl"
AIME_TRACES = TRACES_DIR / "aime24_sky-t1-14b.jsonl"
ARTIFACTS = REPO / "test-artifacts"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance (2 CPUs, small object store, no dashboard) shared by the session's tests."""
    import ray

    from longcot.cluster import connect
    from longcot.settings import RayConfig

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("tests start their own local Ray; unset RAY_ADDRESS")
    connect(RayConfig(num_cpus=2, object_store_memory_mb=512))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def embedded_model() -> str:
    """Local directory of the embedded SmolLM2-135M-Instruct (materialised from its GGUF once)."""
    from longcot.models import DEFAULT_MODEL, resolve

    return resolve(DEFAULT_MODEL)


@pytest.fixture()
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def run_longcot(job: Path, runs_dir: Path, timeout: int = 1500) -> Path:
    """`longcot run JOB` in a subprocess, as a user runs it (no RAY_ADDRESS); returns its run directory."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "longcot", "run", str(job), "--runs-dir", str(runs_dir), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"longcot run {job} failed:\n{proc.stderr[-4000:]}"
    (run_dir,) = [p for p in Path(runs_dir).iterdir() if (p / "manifest.json").exists()]
    return run_dir


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory) -> Path:
    """The README's quickstart job, run once per test session; its run directory."""
    return run_longcot(REPO / "jobs" / "quickstart.yaml", tmp_path_factory.mktemp("quickstart"))
