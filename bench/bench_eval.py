"""Eval on the 530 shared traces: the whole stage against its bare steps, side by side in one run.

(a) bare: the steps that make the numbers, called directly on the rows in memory: load the saved
    responses, ``verify_records`` (the verify stage), count tokens, score.
(b) stage: ``eval.stage.run`` on the same files: the same steps plus what makes the result usable and
    reproducible (records written, manifest with file hashes, report.md, results.json, the PNG chart).
Rounds are interleaved and the best of each kept (the machine is shared; load comes and goes).
Target: the stage costs at most 15% over the bare steps. Also prints the time of each bare step.

    .venv/bin/python bench/bench_eval.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from longcot.eval.config import EvalConfig
from longcot.eval.metrics import fill_token_counts, score_variants
from longcot.eval.responses import load_responses
from longcot.eval.stage import run
from longcot.models import DEFAULT_MODEL
from longcot.rundir import RunDir
from longcot.stages import StageContext
from longcot.tokens import TokenCounter
from longcot.verify import verify_records

TRACES = Path(__file__).resolve().parents[1] / "jobs" / "data" / "traces"
FILES = [TRACES / "math500_sky-t1-27b.jsonl", TRACES / "aime24_sky-t1-14b.jsonl"]
ROUNDS = 2


def bare(counter: TokenCounter) -> tuple[dict[str, float], list]:
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = [r for f in FILES for r in load_responses(str(f)).rows]
    steps["load"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    verified = verify_records(rows)
    steps["verify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    counted = fill_token_counts(verified, counter)
    steps["count tokens"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = score_variants({"sky-t1": counted})
    steps["score"] = time.perf_counter() - t0
    return steps, scores


def stage(workdir: Path) -> float:
    config = EvalConfig(responses=[{"name": "sky-t1", "path": str(f)} for f in FILES],
                        token_counter=DEFAULT_MODEL)
    ctx = StageContext(run_dir=RunDir(workdir), progress=False)
    t0 = time.perf_counter()
    run(config, None, ctx)
    return time.perf_counter() - t0


def main() -> None:
    counter = TokenCounter(DEFAULT_MODEL)
    verify_records(load_responses(str(FILES[1])).rows[:2])  # start the checker pool once, for both sides
    best_bare = best_stage = float("inf")
    best_steps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ROUNDS):
            steps, scores = bare(counter)
            if sum(steps.values()) < best_bare:
                best_bare, best_steps = sum(steps.values()), steps
            best_stage = min(best_stage, stage(Path(tmp) / f"round{i}"))
    n = sum(1 for f in FILES for line in f.open() if line.strip())
    print(f"{n} saved responses, best of {ROUNDS} interleaved rounds")
    print("    bare steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in best_steps.items()) + f" = {best_bare:.2f} s")
    print(f"    eval stage: {best_stage:.2f} s (records, manifest, report, results, chart included)")
    print(f"    stage / bare: {best_stage / best_bare:.3f} (target <= 1.15); {n / best_stage:.1f} responses/s")
    for s in scores:
        print(f"    {s.benchmark}: pass@1 {100 * s.pass_at_1:.1f}%, mean output tokens {s.mean_output_tokens:,.0f}, "
              f"mean thought tokens {s.mean_thought_tokens:,.0f}")


if __name__ == "__main__":
    main()
