"""Math verification throughput on the 500 real math traces: the checker pool against one process.

Workload: math-verify (parse both sides, compare) on the (final answer, reference) pair of every trace
that has a final answer, timed in the same run
  - in one process (the calling one, no pool, no IPC),
  - in a CheckPool of 1 worker (the pool's own overhead),
  - in a CheckPool of N workers (default: CPU count),
in alternating rounds (a load change on a shared machine hits every variant). Pools are started and warm
before timing (start-up is reported apart). Then the agreement of the verdicts
with the traces' `original_correct`, next to the naive check (math-verify on the last 3000 characters).

    .venv/bin/python bench/bench_verify.py [--workers N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
TRACES = REPO / "jobs" / "data" / "traces" / "math500_sky-t1-27b.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each times every variant on all pairs")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    import psutil

    from longcot.records import for_sample, new_problem
    from longcot.verify import VerifyConfig, verify_records
    from longcot.verify.math import check_pair, final_answer
    from longcot.traces import parse_trace
    from longcot.verify.pool import CheckPool

    traces = [json.loads(line) for line in TRACES.read_text().splitlines() if line.strip()]
    pairs = []
    for trace in traces:
        answer = final_answer(parse_trace(trace["response"])).text
        if answer is not None:
            pairs.append((answer, trace["reference_answer"]))
    work = pairs * args.repeat  # what each variant checks in all
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared machine)")
    print(f"workload: math-verify on {len(pairs)} answer pairs x {args.repeat} = {len(work)} checks")

    check_pair(("1/2", "0.5"))  # warm the grammars in this process too
    pools = {}
    for workers in sorted({1, args.workers}):
        t0 = time.perf_counter()
        pools[workers] = CheckPool(workers=workers, timeout_s=30)
        pools[workers].run("math", [("1", "1")] * (2 * workers))  # wait until every worker is ready
        print(f"pool of {workers}: start-up {time.perf_counter() - t0:.2f}s")
        pools[workers].run("math", pairs)  # one untimed pass: sympy's caches warm, as in this process below
    # Rounds alternate the variants (the order rotates) so a load change on the shared machine hits all.
    seconds: dict[str, list[float]] = {"single": [], **{f"pool{w}": [] for w in pools}}
    cpu: dict[str, float] = dict.fromkeys(seconds, 0.0)  # CPU seconds the checking processes got
    reference = [check_pair(pair) for pair in pairs]  # also this process's untimed warm-up pass
    variants = list(seconds)
    for round_ in range(args.repeat):
        for name in variants[round_ % len(variants):] + variants[: round_ % len(variants)]:
            workers = [] if name == "single" else [psutil.Process(w.process.pid) for w in pools[int(name[4:])]._workers]
            c0 = time.process_time() if name == "single" else sum(sum(p.cpu_times()[:2]) for p in workers)
            t0 = time.perf_counter()
            if name == "single":
                values = [check_pair(pair) for pair in pairs]
            else:
                values = [o.value for o in pools[int(name[4:])].run("math", pairs)]
            seconds[name].append(time.perf_counter() - t0)
            c1 = time.process_time() if name == "single" else sum(sum(p.cpu_times()[:2]) for p in workers)
            cpu[name] += c1 - c0
            assert values == reference, f"{name} disagrees with the single process"
    for pool in pools.values():
        pool.close()
    single_s = sum(seconds["single"])
    print(f"{'variant':<22}{'seconds':>9}{'checks/s':>10}{'vs single':>11}{'cores used':>12}   per round")
    for name, values in seconds.items():
        total = sum(values)
        label = "single process" if name == "single" else f"pool, {name[4:]} worker(s)"
        print(f"{label:<22}{total:9.2f}{len(work) / total:10.1f}{single_s / total:11.2f}{cpu[name] / total:12.2f}   "
              + " ".join(f"{v:.1f}" for v in values))
    print("cores used: CPU seconds the checking processes received per wall second (2.0 = both cores)")
    best = sum(seconds[f"pool{args.workers}"])
    print(f"RATIO pool({args.workers}) / single process: {single_s / best:.2f}x "
          f"(load average now {os.getloadavg()[0]:.1f})")

    rows = []
    for trace in traces:
        row = for_sample(new_problem(trace["problem"], source="traces:math500",
                                     reference_answer=trace["reference_answer"]), 0)
        rows.append({**row, "response": trace["response"]})
    with CheckPool(workers=args.workers) as pool:
        t0 = time.perf_counter()
        checked = verify_records(rows, VerifyConfig(), pool=pool)
        verify_s = time.perf_counter() - t0
    ours = sum(r["correct"] == t["original_correct"] for r, t in zip(checked, traces))
    naive = sum(_naive(t) == t["original_correct"] for t in traces)
    verdicts = {}
    for row in checked:
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
    print(f"verify_records on all 500 traces (parse, extract, check): {verify_s:.2f}s; verdicts {verdicts}")
    print(f"agreement with original_correct: ours {ours}/500 = {ours / 5:.1f}%, "
          f"naive math-verify on the last 3000 chars {naive}/500 = {naive / 5:.1f}%")


def _naive(trace: dict) -> bool:
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${trace['reference_answer']}$"), parse(trace["response"][-3000:])))
    except Exception:
        return False


if __name__ == "__main__":
    main()
