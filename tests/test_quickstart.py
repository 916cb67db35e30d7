"""`longcot run jobs/quickstart.yaml`, as a user runs it: a run directory with its manifest and report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_writes_a_run_directory_with_its_manifest(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-m", "longcot", "run", "jobs/quickstart.yaml", "--runs-dir", str(tmp_path), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["versions"]["ray"].startswith("2.60") and manifest["versions"]["torch"].startswith("2.13")
    assert manifest["versions"]["transformers"] and "vllm" in manifest["versions"]
    assert len(manifest["config_hash"]) == 12 and manifest["config"]["name"] == "quickstart"
    assert any(p.endswith("gsm8k.jsonl") for p in manifest["inputs"])
    assert any(p.endswith("aime24_sky-t1-14b.jsonl") for p in manifest["inputs"])
    for stage, entry in manifest["stages"].items():
        if stage != "generate":  # generate fans out: n samples per problem
            assert entry["records_in"] == entry["records_out"] + entry["records_rejected"], stage
    problems = manifest["stages"]["problems"]
    assert problems["records_in"] == 16 + 30 and problems["records_out"] == 46
    assert (run_dir / "report.html").exists() and (run_dir / "inspector.html").exists()
