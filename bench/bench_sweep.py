"""The structure-vs-content sweep on a laptop: every variant trained and measured in one run, side by side.

Runs ``jobs/structure-vs-content-laptop.yaml`` as a user would (``longcot run``, a fresh runs directory, so no
variant is taken from an earlier run's cache) and prints its table (heldout_nll and structure_rate with 95%
CIs per variant, beside Li et al. 2025's Table 2), the wall time (target: within 60 minutes on 2 CPU
cores) and the machine's load before and after.

    .venv/bin/python bench/bench_sweep.py [--runs-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOB = REPO / "jobs" / "structure-vs-content-laptop.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=None, help="Where the run goes (default: a fresh temporary directory).")
    args = parser.parse_args()
    runs = Path(args.runs_dir or tempfile.mkdtemp(prefix="bench-sweep-"))
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
    env.pop("RAY_ADDRESS", None)
    print(f"load average before: {os.getloadavg()}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "longcot", "run", str(JOB), "--runs-dir", str(runs), "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    print(f"load average after: {os.getloadavg()}")
    if proc.returncode != 0:
        print(proc.stderr[-4000:])
        raise SystemExit(f"the sweep failed (exit {proc.returncode})")
    (run_dir,) = [p for p in runs.iterdir() if (p / "manifest.json").exists()]
    print((run_dir / "sweep" / "table.md").read_text())
    print(f"wall time: {seconds / 60:.1f} minutes (target: <= 60); run directory {run_dir}")


if __name__ == "__main__":
    main()
