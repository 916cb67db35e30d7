"""The quickstart's eval stage alone, timed, on a quickstart run's held-out problems and student.

Runs ``jobs/quickstart.yaml``'s ``eval:`` block as it is (base and student, greedy, 384 new tokens, held-out
NLL), with ``@heldout`` and ``@student`` taken from an earlier run's ``train/`` directory. Prints the stage's
wall time, each model's generation time and the held-out measures. It imports whatever ``longcot`` is on the
path, so pointing ``PYTHONPATH`` at an older checkout times that checkout's eval on the same inputs.

    .venv/bin/python bench/bench_quickstart_eval.py --run-train-dir RUN/train [--job jobs/quickstart.yaml]
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

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-train-dir", required=True, help="a quickstart run's train/ (heldout.jsonl, adapter/)")
    parser.add_argument("--job", default=str(REPO / "jobs" / "quickstart.yaml"))
    args = parser.parse_args()

    import longcot
    import yaml

    from longcot.eval.config import EvalConfig
    from longcot.eval.stage import run
    from longcot.rundir import RunDir
    from longcot.settings import RayConfig
    from longcot.stages import StageContext

    job = yaml.safe_load(Path(args.job).read_text())
    train = Path(args.run_train_dir)
    settings = job["eval"]
    settings["heldout"]["records"] = str(train / "heldout.jsonl")
    for entry in settings["models"]:
        if entry["model"] == "@student":  # the base plus the run's adapter, as the job resolves it
            entry.update(model="embedded:smollm2-135m-instruct", adapter=str(train / "adapter"))
    config = EvalConfig.model_validate(settings)
    work = Path(tempfile.mkdtemp(prefix="bench-qs-eval-"))
    ctx = StageContext(run_dir=RunDir(work), progress=False, ray=RayConfig(**job["ray"]))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    run(config, None, ctx)
    seconds = time.perf_counter() - t0
    print(f"longcot from {Path(longcot.__file__).parent}: eval stage {seconds:.1f}s "
          f"(load average {load:.1f} before, {os.getloadavg()[0]:.1f} after); outputs in {work / 'eval'}")
    scores = {s["variant"]: s for s in json.loads((work / "eval" / "results.json").read_text())["scores"]}
    for name, s in scores.items():
        gen = json.loads((work / "eval" / name / "generate_summary.json").read_text())
        print(f"  {name}: generate {gen['seconds']:.1f}s ({gen['output_tokens']} tokens, "
              f"{gen['output_tokens_per_s']:.1f} tok/s), phases {gen.get('phases', 'not reported')}; "
              f"heldout_nll {s['heldout_nll']:.4f}, structure_rate {s['structure_rate']:.2f}, pass@1 {s['pass_at_1']:.3f}")


if __name__ == "__main__":
    main()
