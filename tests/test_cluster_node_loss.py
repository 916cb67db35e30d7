"""A node lost mid-stage, as a spot instance is: its raylet killed by PID while `generate` and `train` run.

The cluster (see ray_cluster.py) is a head with no CPU, so every worker runs on one of two 1-CPU nodes,
one worker on each. Part-way through a stage the second node's raylet gets SIGKILL (its workers die with
it), and a replacement node joins, as a cloud autoscaler would start one. The stage must finish:
`generate` with every id exactly once and nothing rejected, `train` from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from longcot import records
from longcot.generate.samples import expand_samples
from longcot.recordfiles import load_records, write_records
from ray_cluster import LocalCluster

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [f"What is {a} + {b}?" for a, b in [(2, 3), (7, 4), (3, 3), (8, 2), (1, 1), (9, 5), (6, 6), (4, 7),
                                                 (5, 2), (3, 8), (9, 9), (2, 6)]]


@pytest.fixture(scope="module")
def three_nodes():
    cluster = LocalCluster(prefix="lc-nl-")
    try:
        cluster.start(head_cpus=0)
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"processes of the test cluster still running: {left}"


def lose_last_node(cluster: LocalCluster) -> str:
    """SIGKILL the raylet of the newest node, wait until the cluster marks that node dead, then start a
    replacement node; returns the dead node's id."""
    victim = cluster.procs[-1]
    alive_before = {n["node_id"] for n in cluster.alive_nodes()}
    os.kill(cluster.raylet_pid(victim), signal.SIGKILL)
    cluster.wait(lambda: len(cluster.alive_nodes()) == len(alive_before) - 1, "the lost node marked dead", 120)
    (dead,) = alive_before - {n["node_id"] for n in cluster.alive_nodes()}
    victim.wait(timeout=60)  # its `ray start --block` notices the raylet is gone and exits
    cluster.add_node(num_cpus=1)
    return dead


def run_until(cmd: list[str], cluster: LocalCluster, ready, what: str, timeout: float = 900):
    """Start ``cmd`` as a driver of the cluster; once ``ready()`` is true, lose a node; returns the
    finished process (stdout and stderr in ``.output``) and the lost node's id."""
    log = cluster.root / f"driver-{int(time.time())}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=cluster.driver_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                assert proc.poll() is None, f"{what} ended before a node could be lost:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"{what} never got far enough:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
            dead = lose_last_node(cluster)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
    proc.output = log.read_text()
    return proc, dead


def test_generate_loses_a_node_part_way_and_writes_every_id_once(three_nodes, tmp_path):
    src = tmp_path / "problems.jsonl"
    write_records(src, [records.new_problem(q, source="file:q.jsonl") for q in QUESTIONS])
    out = tmp_path / "samples.jsonl"
    cmd = [sys.executable, "-m", "longcot", "generate", "-i", str(src), "-o", str(out), "--n", "1",
           "--max-tokens", "24", "--batch-size", "1", "--set", "system_prompt=''", "--set", "concurrency=2",
           "--set", "resources.num_cpus=1", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    committed = lambda: out.exists() and out.read_text().count("\n") >= 2  # noqa: E731
    proc, dead = run_until(cmd, three_nodes, committed, "generate")
    assert proc.returncode == 0, proc.output[-3000:]

    rows = load_records(out)
    ids = Counter(r["id"] for r in rows)
    wanted = {s["id"] for q in QUESTIONS for s in expand_samples(records.new_problem(q, source="file:q.jsonl"), 1)}
    assert set(ids) == wanted, "a sample was lost"
    assert set(ids.values()) == {1}, "a sample was written twice"
    assert all(r["response"] and r["output_tokens"] > 0 for r in rows)
    (run_dir,) = (tmp_path / "runs").iterdir()
    stage = json.loads((run_dir / "manifest.json").read_text())["stages"]["generate"]
    assert (stage["records_in"], stage["records_out"], stage["records_rejected"]) == (len(QUESTIONS),) * 2 + (0,)
    assert dead in {n["node_id"] for n in three_nodes.nodes() if n["state"] == "DEAD"}


def test_train_loses_a_node_part_way_and_resumes_from_its_last_checkpoint(three_nodes, tmp_path):
    rows = []
    for q in QUESTIONS:
        a, b = (int(x) for x in q.removeprefix("What is ").removesuffix("?").split(" + "))
        row = records.new_problem(q, source="test:facts")
        row["response"] = f"{a}+{b}={a + b}. The answer is \\boxed{{{a + b}}}."
        rows.append(row)
    data = tmp_path / "facts.jsonl"
    write_records(data, rows)
    storage = tmp_path / "checkpoints"
    settings = {"checkpoints.storage_path": str(storage), "checkpoints.run_name": "spot", "checkpoints.save_steps": 2,
                "checkpoints.max_failures": 2, "per_device_batch_size": 1, "logging_steps": 1,
                "lora.rank": 4, "lora.alpha": 8, "data.system_prompt": "Be brief.", "data.instruction": "",
                "data.cutoff_len": 64, "resources.num_cpus": 1}
    cmd = [sys.executable, "-m", "longcot", "train", "-i", str(data), "-o", str(tmp_path / "out"),
           "--num-workers", "2", "--max-steps", "8", "--learning-rate", "1e-3", "--runs-dir", str(tmp_path / "runs"),
           *[arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]]
    snapshot = storage / "spot" / "checkpoint_manager_snapshot.json"

    def checkpointed() -> bool:  # Ray Train has registered a checkpoint the workers can resume from
        if not snapshot.exists():
            return False
        with_steps = [r.get("metrics", {}).get("step", 0) for r in json.loads(snapshot.read_text()).get(
            "checkpoint_results", [])]
        return bool(with_steps) and max(with_steps) >= 2

    proc, dead = run_until(cmd, three_nodes, checkpointed, "train")
    assert proc.returncode == 0, proc.output[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "manifest.json").read_text())["stages"]["train"]["summary"]
    assert summary["global_step"] == 8
    assert 2 <= summary["resumed_from_step"] < 8, "the restarted workers did not resume from a checkpoint"
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()
    assert dead in {n["node_id"] for n in three_nodes.nodes() if n["state"] == "DEAD"}
