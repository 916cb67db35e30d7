"""A sweep on Ray's own autoscaler: worker nodes are added on demand, variants run in parallel up to the
node limit, and idle nodes are removed.

The head runs Ray's autoscaler with its fake multi-node provider (see ray_cluster.py) and has no CPU;
the node types and the sweep are in autoscaled_sweep.py. bench/bench_autoscaling.py runs the same sweep
one variant at a time too and compares the tables and wall times.
"""

from __future__ import annotations

import time

import pytest

from autoscaled_sweep import NODE_TYPES, NodeTimeline, max_overlap, run_sweep, sweep_job, variant_spans, write_traces
from ray_cluster import LocalCluster, fake_autoscaler_config

pytestmark = pytest.mark.slow

MAX_NODES = {"cpu": 2, "gpu": 2}
IDLE_MINUTES = 0.25


@pytest.fixture()
def autoscaling_cluster():
    cluster = LocalCluster(prefix="lc-as-")
    try:
        cluster.start(head_cpus=0, autoscaling=lambda port: fake_autoscaler_config(
            port, NODE_TYPES, max_workers=MAX_NODES, idle_timeout_minutes=IDLE_MINUTES))
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"processes of the test cluster still running: {left}"


def test_sweep_scales_the_cluster_up_runs_variants_in_parallel_and_scales_down(autoscaling_cluster, tmp_path):
    cluster = autoscaling_cluster
    timeline = NodeTimeline(cluster, time.monotonic())
    try:
        assert timeline.sample() == (0, 0), "the cluster starts with the head alone"
        source = write_traces(tmp_path / "traces.jsonl", 12)
        job = sweep_job(source, tmp_path / "runs", tmp_path / "cache", max_concurrent=4)
        seconds, results, output = run_sweep(cluster, job, tmp_path, "parallel", timeout=1800)
        gone_after = timeline.wait_for_no_workers(timeout=240)
    finally:
        timeline.stop()
    print(f"sweep {seconds:.0f}s; node timeline {timeline.counts}; fake_gpu in use {timeline.busy}; "
          f"workers gone {gone_after}s after it ended")

    status = {row["variant"]: row["status"] for row in results["rows"]}
    assert status == dict.fromkeys(["unperturbed", "dlcot", "shuffle_steps-100", "delete_steps-100"], "finished")
    assert all(row["heldout_nll"] is not None for row in results["rows"])

    # scale-up: nodes of both types were added on demand, up to the limit and never past it
    assert timeline.peak() == (MAX_NODES["cpu"], MAX_NODES["gpu"]), timeline.counts
    events = [line.split(":event_summary:", 1)[1] for line in cluster.monitor_events()]
    # the autoscaler's log names what it added; one line can be lost (Ray's monitor logs its event summary, then
    # clears it, and a launcher thread's event added between the two is dropped): the timeline above has each type
    assert any(e.startswith("Adding") and "node(s) of type" in e for e in events), events
    # parallel: every GPU-shaped node busy at once (training or evaluating), and the variants overlapped
    assert timeline.peak_busy() == MAX_NODES["gpu"], timeline.busy
    assert max_overlap(variant_spans(results)) >= 3
    # scale-down: every idle worker node was removed by the autoscaler
    assert gone_after is not None, f"worker nodes still up 240s after the sweep: {timeline.counts}"
    assert any(e.startswith("Removing") and "(idle)" in e for e in events), events
