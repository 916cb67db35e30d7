"""The quickstart's eval stage alone, timed, on a quickstart run's held-out problems and student.

Runs ``jobs/quickstart.yaml``'s ``eval:`` block as it is (base and student, greedy, 384 new tokens, held-out
NLL), with ``@heldout`` and ``@student`` taken from an earlier run's ``train/`` directory. Prints the stage's
wall time, each model's generation time and the held-out measures. It imports whatever ``longcot`` is on the
path, so pointing ``PYTHONPATH`` at an older checkout times that checkout's eval on the same inputs.

``--with-generate`` first runs the job's ``problems`` and ``generate`` blocks (the recorded teacher) with ``longcot
run`` in a child process of its own, as the quickstart starts them, and prints the generate stage's time and the
two stages' sum: the quickstart's "generate and eval" (issue 23).

    .venv/bin/python bench/bench_quickstart_eval.py [--run-train-dir RUN/train] [--job jobs/quickstart.yaml] \
        [--with-generate]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-train-dir", help="a quickstart run's train/ (heldout.jsonl, adapter/); default: the "
                        "newest under runs/, after running the quickstart when there is none")
    parser.add_argument("--job", default=str(REPO / "jobs" / "quickstart.yaml"))
    parser.add_argument("--with-generate", action="store_true",
                        help="also time the job's generate stage (problems and generate blocks, in a child process)")
    args = parser.parse_args()
    generate_seconds = time_generate_stage(Path(args.job)) if args.with_generate else None

    import longcot
    import yaml

    from longcot.eval.config import EvalConfig
    from longcot.eval.stage import run
    from longcot.rundir import RunDir
    from longcot.settings import RayConfig
    from longcot.stages import StageContext

    job = yaml.safe_load(Path(args.job).read_text())
    train = Path(args.run_train_dir) if args.run_train_dir else quickstart_train_dir()
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
    if generate_seconds is not None:
        print(f"generate stage {generate_seconds:.1f}s + eval stage {seconds:.1f}s = {generate_seconds + seconds:.1f}s")


def quickstart_train_dir() -> Path:
    """The newest quickstart run's ``train/`` under the checkout's ``runs/``; the quickstart is run first when there
    is none (about 6 minutes on two cores), so ``make bench`` works in a fresh clone."""
    def newest() -> Path | None:
        found = [p for p in (REPO / "runs").glob("quickstart-*/train") if (p / "adapter").is_dir()]
        return max(found, key=lambda p: p.stat().st_mtime) if found else None

    if newest() is None:
        print("no quickstart run under runs/: running jobs/quickstart.yaml first")
        subprocess.run([sys.executable, "-m", "longcot", "run", str(REPO / "jobs" / "quickstart.yaml")], cwd=REPO,
                       check=True)
    return newest()


def time_generate_stage(job_path: Path) -> float:
    """The seconds of the job's generate stage, run with its problems stage by ``longcot run`` in a child process
    (this interpreter, this ``PYTHONPATH``) from the job's checkout, as the quickstart is run, so the job's relative
    paths mean what they mean there; its run goes to a temporary directory."""
    import yaml

    job = yaml.safe_load(job_path.read_text())
    work = Path(tempfile.mkdtemp(prefix="bench-qs-generate-"))
    (work / "job.yaml").write_text(yaml.safe_dump({key: job[key] for key in ("name", "ray", "problems", "generate")}))
    done = subprocess.run([sys.executable, "-m", "longcot", "run", str(work / "job.yaml"), "--runs-dir",
                           str(work / "runs")], cwd=job_path.resolve().parents[1], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the generate stage failed (exit {done.returncode}):\n" + done.stderr[-2000:])
    manifest = next((work / "runs").glob("*/manifest.json"))
    stage = json.loads(manifest.read_text())["stages"]["generate"]
    print(f"generate stage {stage['seconds']:.1f}s, phases {(stage.get('summary') or {}).get('phases')}; "
          f"{stage['records_out']} records; outputs in {manifest.parent}")
    return float(stage["seconds"])


if __name__ == "__main__":
    main()
