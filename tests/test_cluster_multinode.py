"""A real two-node Ray cluster on this machine, driven the way a cloud cluster is: `ray job submit`.

The head (`ray start --head`) and a second node (`ray start --address=...`) carrying a custom resource
run as this test's own processes (see ray_cluster.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import REPO
from ray_cluster import LocalCluster

pytestmark = pytest.mark.slow

PINNED_STAGE = "dlcot"  # a record stage whose `resources` come from the job YAML


@pytest.fixture(scope="module")
def two_nodes():
    cluster = LocalCluster(prefix="lc-mn-")
    started = time.monotonic()
    try:
        cluster.start(head_cpus=1)
        cluster.add_node({"pinned": 1}, num_cpus=1)
        print(f"two-node cluster up in {time.monotonic() - started:.1f}s")
        yield cluster
    finally:
        stopping = time.monotonic()
        left = cluster.stop()
        print(f"two-node cluster stopped in {time.monotonic() - stopping:.1f}s")
        assert not left, f"processes of the test cluster still running: {left}"


# The quickstart as submitted to this small cluster (1 CPU per node): the same YAML, shrunk with --set so
# the end-to-end run stays a few minutes, and its DLCoT stage pinned to the second node's custom resource.
QUICKSTART_ON_TWO_NODES = [
    "problems.sources.0.limit=6",
    "generate.resources.num_cpus=1",
    "dlcot.resources.resources={pinned: 1}",
    "train.max_steps=2", "train.heldout.problems=1", "train.data.cutoff_len=96", "train.data.truncation=truncate",
    "eval.generate.sampling.max_tokens=16", "eval.generate.resources.num_cpus=1",
    "serve.smoke.max_tokens=16",
]


def test_submitted_quickstart_runs_its_pinned_stage_on_the_second_node(two_nodes, tmp_path):
    overrides = [arg for pair in QUICKSTART_ON_TWO_NODES for arg in ("--set", pair)]
    status, times, logs = two_nodes.submit(
        Path("jobs/quickstart.yaml"), "--runs-dir", str(tmp_path / "runs"), *overrides, working_dir=REPO
    )
    print(f"quickstart job ran for {(times['end_time'] - times['start_time']) / 1000:.1f}s")
    assert status == "SUCCEEDED", logs[-3000:]

    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "manifest.json").exists()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert set(manifest["stages"]) == {"problems", "generate", "verify", "dlcot", "train", "eval", "serve"}
    nodes = {n["id"]: n["resources"] for n in manifest["cluster"]["nodes"]}
    assert len(nodes) == 2
    (pinned,) = [node for node, res in nodes.items() if res.get("pinned")]
    (head,) = [node for node in nodes if node != pinned]
    stage = manifest["stages"][PINNED_STAGE]
    assert stage["records_in"] == manifest["stages"]["verify"]["records_out"] > 0
    assert stage["records_in"] == stage["records_out"] + stage["records_rejected"]
    assert stage["nodes"] == [pinned], "the stage's workers ran on the node with the custom resource"
    assert manifest["cluster"]["driver_node"] == head, "while the job's driver ran on the head"
    assert manifest["stages"]["train"]["summary"]["global_step"] == 2
    assert manifest["stages"]["serve"]["summary"]["content"].strip()


def test_submitted_job_whose_gpu_stage_cannot_be_placed_fails_fast_with_a_clear_message(two_nodes, tmp_path):
    job = tmp_path / "gpu.yaml"
    job.write_text(f"name: gpu\nruns_dir: {tmp_path / 'runs'}\ntrain:\n  use_gpu: true\n  num_workers: 2\n")
    status, times, logs = two_nodes.submit(job)
    assert status == "FAILED"
    assert "error: stage train asks for {CPU: 1, GPU: 1} per worker, x2 at once: no node can host one worker" in logs
    assert "missing: GPU" in logs
    assert not (tmp_path / "runs").exists(), "it failed before any stage ran"
    seconds = (times["end_time"] - times["start_time"]) / 1000
    print(f"GPU job failed {seconds:.1f}s after it started (interpreter start and imports included)")
    assert seconds < 60
