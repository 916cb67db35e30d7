"""A sweep on Ray's own autoscaler: nodes added on demand, variants in parallel, idle nodes removed.

The head runs Ray's autoscaler (monitor.py) with its fake multi-node provider: worker nodes are local
processes the autoscaler launches and removes (see tests/ray_cluster.py). The head has no CPU, so every
stage needs a node. Two node types, at most 2 nodes each:

- ``cpu``: {CPU: 1}, for the CPU stages (perturb, DLCoT);
- ``gpu``: {CPU: 1, fake_gpu: 1}, GPU-shaped: a custom resource stands in for a GPU, and the variants'
  training workers and evaluation actors ask for it (``resources: {fake_gpu: 1}``), as they would ask
  for ``GPU`` on a real cluster.

(tests/autoscaled_sweep.py has the sweep and the measures.) The same sweep (4 trained variants, 2 held-out
problems) runs twice on that cluster: all variants at once
(``max_concurrent: 4``), then one at a time, each into its own cache directory. Printed: the node timeline
(every node up and down, from the cluster's own records), the wall time of each run and their ratio, and
whether the two tables agree (held-out NLL per variant).

    .venv/bin/python bench/bench_autoscaling.py [--idle-minutes 0.25] [--skip-serial]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

MAX_NODES = {"cpu": 2, "gpu": 2}


def main() -> None:
    from autoscaled_sweep import (NODE_TYPES, NodeTimeline, max_overlap, nll_table, run_sweep,
                                  sweep_job, variant_spans, write_traces)
    from ray_cluster import LocalCluster, fake_autoscaler_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-minutes", type=float, default=0.25, help="the autoscaler's idle_timeout_minutes")
    parser.add_argument("--skip-serial", action="store_true", help="run the parallel sweep only")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-autoscale-"))
    source = write_traces(work / "traces.jsonl", 12)
    print(f"load average before: {os.getloadavg()}", flush=True)
    cluster = LocalCluster(prefix="lc-as-")
    t0 = time.monotonic()
    try:
        cluster.start(head_cpus=0, autoscaling=lambda port: fake_autoscaler_config(
            port, NODE_TYPES, max_workers=MAX_NODES, idle_timeout_minutes=args.idle_minutes))
        print(f"head up in {time.monotonic() - t0:.1f}s (no CPU: every stage needs a worker node)", flush=True)
        timeline = NodeTimeline(cluster, t0)
        runs = {}
        for label, concurrent in (("parallel", 4), ("serial", 1))[: 1 if args.skip_serial else 2]:
            begun = time.monotonic() - t0
            seconds, results, _ = run_sweep(
                cluster, sweep_job(source, work / f"runs-{label}", work / f"cache-{label}", concurrent), work, label)
            down = timeline.wait_for_no_workers(timeout=300)
            gpu_at_once = timeline.peak_busy(since=begun)
            variants_at_once = max_overlap(variant_spans(results))
            runs[label] = {"results": results, "seconds": seconds}
            print(f"{label}: started at {begun:.0f}s, sweep {seconds:.0f}s; at most {gpu_at_once:.0f} GPU-shaped units in use "
                  f"(training or evaluating) and {variants_at_once} variants at once; every worker node gone "
                  f"{'never' if down is None else f'{down:.0f}s'} after it ended", flush=True)
        timeline.stop()
        print("\nnode timeline (seconds since the head started: live cpu nodes, live gpu nodes)")
        for t, cpu, gpu in timeline.counts:
            print(f"  {t:7.1f}  cpu {cpu}  gpu {gpu}")
        print("fake_gpu in use (seconds: units): " + ", ".join(f"{t:.0f}: {u:.0f}" for t, u in timeline.busy))
        peak = timeline.peak()
        print(f"peak: cpu {peak[0]} of at most {MAX_NODES['cpu']}, gpu {peak[1]} of at most {MAX_NODES['gpu']}")
        events = [line.split(":event_summary:", 1)[1] for line in cluster.monitor_events()]
        added = sum(int(e.split()[1]) for e in events if e.startswith("Adding"))
        removed = sum(int(e.split()[1]) for e in events if e.startswith("Removing"))
        print(f"autoscaler: {added} node launches asked, {removed} idle nodes removed")
        if "serial" in runs:
            par, ser = runs["parallel"], runs["serial"]
            print(f"\nwall time: parallel {par['seconds']:.0f}s, serial {ser['seconds']:.0f}s, "
                  f"serial / parallel {ser['seconds'] / par['seconds']:.2f}x")
            a, b = nll_table(par["results"]), nll_table(ser["results"])
            print(f"held-out NLL per variant, parallel: {json.dumps(a, sort_keys=True)}")
            print(f"held-out NLL per variant, serial:   {json.dumps(b, sort_keys=True)}")
            same = set(a) == set(b) and all(a[k] is not None and b[k] is not None and abs(a[k] - b[k]) < 1e-9 for k in a)
            print(f"tables agree: {same}")
        print(f"load average after: {os.getloadavg()}")
    finally:
        left = cluster.stop()
        if left:
            print(f"processes left: {left}")


if __name__ == "__main__":
    main()
