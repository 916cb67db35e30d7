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
