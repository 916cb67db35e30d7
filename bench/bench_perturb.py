"""Perturbation throughput on the 530 real traces, side by side in one run.

(a) each kind as a plain loop of ``perturb_record`` against the floor every step perturbation pays:
    splitting the response into thought and steps (``parse_trace``); ratio = kind time / floor time.
(b) the whole ``perturb`` stage (Ray Data on a local 2-CPU Ray, reading and writing JSONL) against a
    plain single-process script doing the same work (read the JSONL, loop, write the JSONL), on 2120
    records (4 samples of each trace);
    ratio = stage time / script time (the cost of the Ray wiring).

    .venv/bin/python bench/bench_perturb.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    from test_perturb import trace_records  # the same record conversion the tests use

    from conftest import AIME_TRACES, MATH_TRACES
    from longcot.perturb.config import PerturbConfig
    from longcot.perturb.perturbation import Donors, perturb_record
    from longcot.errors import RejectRow
    from longcot.traces import parse_trace

    rows = trace_records(MATH_TRACES) + trace_records(AIME_TRACES)
    chars = sum(len(r["response"]) for r in rows)
    print(f"{len(rows)} traces, {chars / 1e6:.1f} M characters; machine: 2-core CPU, shared with other jobs")

    t0 = time.perf_counter()
    for r in rows:
        parse_trace(r["response"])  # thought/solution split and the step spans
    floor = time.perf_counter() - t0
    print(f"{'floor: parse_trace (split steps)':34s} {floor:7.2f} s  {len(rows) / floor:8.0f} rec/s  ratio 1.00")

    for kind in ("shuffle_steps", "delete_steps", "insert_steps", "corrupt_digits", "remove_keywords", "wrong_answer"):
        config = PerturbConfig(kind=kind, ratio=0.5, seed=0, replace_answers=True)
        t0 = time.perf_counter()
        donors = Donors.from_records(rows, config)
        for r in rows:
            try:
                perturb_record(r, config, donors)
            except RejectRow:
                pass
        took = time.perf_counter() - t0
        print(f"{kind + ' (loop)':34s} {took:7.2f} s  {len(rows) / took:8.0f} rec/s  ratio {took / floor:.2f}")

    from longcot.cluster import connect
    from longcot.perturb.stage import run as run_stage
    from longcot.recordfiles import load_records, write_records
    from longcot.rundir import RunDir
    from longcot.settings import RayConfig
    from longcot.stages import StageContext

    ray_config = RayConfig(num_cpus=2, object_store_memory_mb=512)
    connect(ray_config)
    # (b) on 4 samples of each trace (2120 records, distinct ids): Ray Data has a fixed start-up cost per job
    from longcot import records

    many = [records.for_sample(r, i) for i in range(4) for r in rows]
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "traces.jsonl"
        write_records(source, many)
        ctx = StageContext(run_dir=RunDir(Path(tmp) / "run"), progress=False, ray=ray_config,
                           output_override=str(Path(tmp) / "out.jsonl"))
        config = PerturbConfig(kind="shuffle_steps", ratio=0.5, seed=0)
        t0 = time.perf_counter()
        kept = []
        for r in load_records(source):
            try:
                kept.append(perturb_record(r, config))
            except RejectRow:
                pass
        write_records(Path(tmp) / "script.jsonl", kept)
        script = time.perf_counter() - t0
        print(f"{'shuffle_steps x4 (script: read, loop, write)':44s} {script:7.2f} s  {len(many) / script:6.0f} rec/s")
        run_stage(config, source, ctx)  # warm-up: workers start, modules import
        t0 = time.perf_counter()
        result = run_stage(config, source, ctx)
        stage = time.perf_counter() - t0
    print(f"{'shuffle_steps x4 (stage, Ray Data, 2 CPUs)':44s} {stage:7.2f} s  {len(many) / stage:6.0f} rec/s  "
          f"stage / script {stage / script:.2f}  ({result.records_out} out, {result.records_rejected} rejected)")
    import ray

    ray.shutdown()


if __name__ == "__main__":
    main()
