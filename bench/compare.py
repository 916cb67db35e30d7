"""The benches of two commits side by side: did a change make any of them slower?

Each side is a whole tree (``git archive`` of the commit, or this working tree for ``HEAD``), so each runs its
own bench scripts, tests helpers and ``longcot`` package (``PYTHONPATH`` points at the tree's ``platform/``,
ahead of the installed one; Ray's workers inherit it). Runs alternate old, new, old, new, ... so a change in
the machine's load falls on both sides; the best wall time of each side is kept. Printed per bench: both
times, new / old, and a flag when new is more than ``--slower`` (5%) slower. Every run's output is kept in
``--logs``: the bench's own side-by-side figures are in there too.

    .venv/bin/python bench/compare.py --old c6bb126 [--rounds 2] [--only dlcot,verify]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Each bench with arguments that keep it short but run all of its parts.
BENCHES = {
    "dlcot": ["bench_dlcot.py", "--repeat", "3"],
    "verify": ["bench_verify.py", "--repeat", "1"],
    "perturb": ["bench_perturb.py"],
    "eval": ["bench_eval.py"],
    "cluster": ["bench_cluster.py", "--wait", "5"],
    "serve": ["bench_serve.py", "--rounds", "3", "--requests-per-client", "2"],
    "train": ["bench_train.py", "--traces", "8", "--steps", "6"],
    "generate": ["bench_generate.py", "--prompts", "8", "--max-tokens", "32"],
}


def tree_of(rev: str, into: Path) -> Path:
    """The commit's files in a fresh directory (the working tree itself for HEAD's checkout)."""
    if rev == "WORKTREE":
        return REPO
    archive = into / f"{rev}.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), rev], check=True)
    root = into / rev
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    return root


def run_bench(tree: Path, argv: list[str], log: Path) -> tuple[float, int]:
    env = dict(os.environ, PYTHONPATH=str(tree / "platform"), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, str(tree / "bench" / argv[0]), *argv[1:]], cwd=tree, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the commit to compare against")
    parser.add_argument("--new", default="WORKTREE", help="a commit, or WORKTREE (this checkout, as it is)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", help="comma-separated bench names (default: " + ",".join(BENCHES) + ")")
    parser.add_argument("--slower", type=float, default=0.05)
    parser.add_argument("--logs", type=Path, default=Path(tempfile.gettempdir()) / "longcot-bench-compare")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHES)
    args.logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"old": tree_of(args.old, Path(scratch)), "new": tree_of(args.new, Path(scratch))}
        print(f"old = {args.old}, new = {args.new}; {args.rounds} rounds, alternating; load {os.getloadavg()[0]:.1f}")
        print(f"{'bench':10s} {'old s':>8s} {'new s':>8s} {'new/old':>8s}")
        for name in names:
            best = {"old": float("inf"), "new": float("inf")}
            failed = []
            for r in range(args.rounds):
                for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
                    took, rc = run_bench(trees[side], BENCHES[name], args.logs / f"{name}.{side}.{r}.log")
                    if rc:
                        failed.append(f"{side} round {r} exit {rc}")
                    best[side] = min(best[side], took)
            ratio = best["new"] / best["old"]
            flag = " SLOWER" if ratio > 1 + args.slower else ""
            flag += f" FAILED: {'; '.join(failed)}" if failed else ""
            print(f"{name:10s} {best['old']:8.1f} {best['new']:8.1f} {ratio:8.3f}{flag}  "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"logs: {args.logs}")


if __name__ == "__main__":
    main()
