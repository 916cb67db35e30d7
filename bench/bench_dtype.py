"""What bf16 changes against fp32, measured with the eval stage itself on the quickstart's held-out problems.

One ``eval.stage.run`` with the variants side by side: the base model (and, with ``--adapter``, the student)
generating and scoring in float32 and in bfloat16, greedy, the quickstart's eval settings (384 new tokens,
batch 16, both cores). Reported per model: the share of greedy answers identical to fp32's, pass@1 and
heldout_nll of each dtype, and each variant's generation time (from its generate summary).

The held-out records come from a quickstart run (``<run>/train/heldout.jsonl``); the student's card in the
adapter makes every variant prompt as the student was trained, as the quickstart's eval does.

    .venv/bin/python bench/bench_dtype.py --heldout RUN/train/heldout.jsonl [--adapter RUN/train/adapter]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DTYPES = ("float32", "bfloat16")


def variants(adapter: str | None) -> list[dict]:
    """fp32 first (the baseline every difference is taken against), then bf16; the student's pair after."""
    from longcot.models import DEFAULT_MODEL

    models = [("base", None)] + ([("student", adapter)] if adapter else [])
    return [{"name": f"{name}-{dtype}", "model": DEFAULT_MODEL, "adapter": path, "generate": {"hf": {"dtype": dtype}}}
            for name, path in models for dtype in DTYPES]


def identical_share(out_dir: Path, name: str) -> tuple[int, int]:
    """How many of ``name``'s bf16 answers are the fp32 answer, word for word, and out of how many."""
    def answers(variant: str) -> dict[str, str]:
        return {r["id"]: r["response"] for r in map(json.loads, (out_dir / variant / "samples.jsonl").open())}

    ref, other = answers(f"{name}-float32"), answers(f"{name}-bfloat16")
    return sum(ref[i] == other.get(i) for i in ref), len(ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heldout", required=True, help="a quickstart run's train/heldout.jsonl")
    parser.add_argument("--adapter", help="that run's train/adapter (adds the student in both dtypes)")
    parser.add_argument("--max-tokens", type=int, default=384)
    args = parser.parse_args()

    from longcot.eval.config import EvalConfig
    from longcot.eval.stage import run
    from longcot.rundir import RunDir
    from longcot.settings import RayConfig
    from longcot.stages import StageContext

    config = EvalConfig.model_validate({
        "benchmarks": [], "heldout": {"records": args.heldout}, "models": variants(args.adapter), "k": [1],
        "generate": {"backend": "hf", "batch_size": 16, "resources": {"num_cpus": 2},
                     "sampling": {"n": 1, "temperature": 0.0, "max_tokens": args.max_tokens}},
    })
    work = Path(tempfile.mkdtemp(prefix="bench-dtype-"))
    ctx = StageContext(run_dir=RunDir(work), progress=False, ray=RayConfig(num_cpus=2, object_store_memory_mb=512))
    load = os.getloadavg()
    t0 = time.perf_counter()
    run(config, None, ctx)
    seconds = time.perf_counter() - t0
    out_dir = work / "eval"
    scores = {s["variant"]: s for s in json.loads((out_dir / "results.json").read_text())["scores"]}
    print(f"eval stage on {args.heldout}: {seconds:.1f}s, load average before {load[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f}; outputs in {out_dir}")
    print("| model | dtype | generate s | output tok/s | identical to fp32 | pass@1 | heldout_nll |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in ["base"] + (["student"] if args.adapter else []):
        same, total = identical_share(out_dir, name)
        for dtype in DTYPES:
            variant = f"{name}-{dtype}"
            s = scores[variant]
            gen = json.loads((out_dir / variant / "generate_summary.json").read_text())
            agree = "reference" if dtype == "float32" else f"{same}/{total}"
            print(f"| {name} | {dtype} | {gen['seconds']:.1f} | {gen['output_tokens_per_s']:.1f} | {agree} | "
                  f"{s['pass_at_1']:.3f} | {s['heldout_nll']:.4f} |")


if __name__ == "__main__":
    main()
