"""A small structure-vs-content sweep shaped for a cluster Ray's autoscaler grows and shrinks, and what to
measure of it: the node timeline, GPU-shaped units in use, and when each variant ran.

Shared by tests/test_cluster_autoscaling.py and bench/bench_autoscaling.py. The cluster's head has no
CPU, so every stage needs a worker node. Two node types:

- ``cpu``: {CPU: 1}, for the CPU stages (perturb, DLCoT);
- ``gpu``: {CPU: 1, fake_gpu: 1}, GPU-shaped: a custom resource stands in for a GPU, and the variants'
  training workers and evaluation actors ask for it (``resources: {fake_gpu: 1}``), as they would ask for
  ``GPU`` on a real cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO / "jobs" / "data" / "traces" / "math500_sky-t1-27b.jsonl"

NODE_TYPES = {"cpu": {"CPU": 1}, "gpu": {"CPU": 1, "fake_gpu": 1}}
ON_GPU = {"num_cpus": 1, "resources": {"fake_gpu": 1}}
STAGES = ("perturb", "dlcot", "train", "eval")  # the stages a variant can run


def write_traces(path: Path, count: int) -> Path:
    """``count`` short finished Sky-T1 traces the teacher got right, as raw trace lines (the sweep verifies
    them itself)."""
    lines = []
    for line in TRACES.read_text(encoding="utf-8").splitlines():
        trace = json.loads(line)
        if trace["original_correct"] and "<|end_of_solution|>" in trace["response"] and len(trace["response"]) < 4000:
            lines.append(line)
        if len(lines) == count:
            break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sweep_job(source: Path, runs_dir: Path, cache_dir: Path, max_concurrent: int) -> dict:
    """Four trained variants (unperturbed, DLCoT, shuffled and deleted steps), each measured on 2 held-out
    problems (held-out NLL: a number every bit of training moves); training and evaluation ask for the
    GPU-shaped resource."""
    return {
        "name": "autoscaled-sweep",
        "runs_dir": str(runs_dir),
        "sweep": {
            "input": str(source),
            "limit": 4,
            "heldout": {"problems": 2},
            "base": False,
            "grid": [{"kind": "shuffle_steps", "ratios": [1.0]}, {"kind": "delete_steps", "ratios": [1.0]}],
            "dlcot": {"segmenter": "rules"},
            "train": {
                "num_workers": 1,
                "resources": ON_GPU,
                "max_steps": 2,
                "learning_rate": 1e-3,
                "lora": {"rank": 4, "alpha": 8},
                "data": {"cutoff_len": 256, "truncation": "truncate", "warn_truncated_share": 1.0},
                "logging_steps": 1,
            },
            "eval": {
                "benchmarks": [],
                "k": [1],
                "charts": False,
                "generate": {"sampling": {"max_tokens": 8}, "batch_size": 2, "resources": ON_GPU},
            },
            "max_concurrent": max_concurrent,
            "cache_dir": str(cache_dir),
            "reference": None,
        },
    }


def run_sweep(cluster, job: dict, work: Path, label: str, timeout: float = 3600) -> tuple[float, dict, str]:
    """`longcot sweep` as a driver on the head (as `ray job submit` runs one); returns (seconds, the
    sweep's results.json, the driver's output)."""
    job_file = work / f"{label}.yaml"
    job_file.write_text(yaml.safe_dump(job))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "longcot", "sweep", str(job_file), "--no-progress"],
                          cwd=REPO, env=cluster.driver_env(), capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"the {label} sweep failed (exit {proc.returncode}):\n{output[-4000:]}")
    (run_dir,) = [p for p in Path(job["runs_dir"]).iterdir() if (p / "sweep" / "results.json").exists()]
    return seconds, json.loads((run_dir / "sweep" / "results.json").read_text()), output


class NodeTimeline:
    """Samples the cluster once a second in a thread: its live worker nodes (``counts``: seconds since
    ``t0``, live cpu nodes, live gpu nodes, at each change) and how many GPU-shaped units are in use
    (``busy``: seconds since ``t0``, fake_gpu in use, at each change; as the autoscaler's monitor reports it)."""

    def __init__(self, cluster, t0: float) -> None:
        self.cluster, self.t0 = cluster, t0
        self.counts: list[tuple[float, int, int]] = []
        self.busy: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def live(self) -> tuple[int, int]:
        workers = [n for n in self.cluster.alive_nodes() if not n.get("is_head_node")]
        gpu = sum(1 for n in workers if n["resources_total"].get("fake_gpu"))
        return len(workers) - gpu, gpu

    def gpus_in_use(self) -> float:
        usage = self.cluster.cluster_status()["loadMetricsReport"]["usage"]
        used, _total = usage.get("fakeGpu") or usage.get("fake_gpu") or (0.0, 0.0)
        return used

    def sample(self) -> tuple[int, int]:
        now, elapsed = self.live(), round(time.monotonic() - self.t0, 1)
        if not self.counts or self.counts[-1][1:] != now:
            self.counts.append((elapsed, *now))
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
                used = self.gpus_in_use()
                if not self.busy or self.busy[-1][1] != used:
                    self.busy.append((round(time.monotonic() - self.t0, 1), used))
            except Exception:  # the dashboard is briefly busy, or the monitor has not reported yet
                pass
            self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def peak(self) -> tuple[int, int]:
        return max(c[1] for c in self.counts), max(c[2] for c in self.counts)

    def peak_busy(self, since: float = 0.0) -> float:
        """The most GPU-shaped units in use at once (after ``since`` seconds)."""
        return max((used for t, used in self.busy if t >= since), default=0.0)

    def wait_for_no_workers(self, timeout: float) -> float | None:
        """Seconds until no worker node is left (None if some still are after ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.sample() == (0, 0):
                return time.monotonic() - started
            time.sleep(1)
        return None


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def stage_spans(results: dict) -> list[tuple[str, float, float]]:
    """(variant/stage, start, end) of every stage of every variant, from the variants' run manifests (Unix
    times)."""
    spans = []
    for variant in results["variants"]:
        manifest = json.loads((Path(variant["directory"]) / "manifest.json").read_text())
        for name, entry in manifest["stages"].items():
            if name in STAGES and entry.get("started_at"):
                spans.append((f"{variant['name']}/{name}", _unix(entry["started_at"]), _unix(entry["finished_at"])))
    return spans


def variant_spans(results: dict) -> list[tuple[str, float, float]]:
    """(variant, start of its first stage, end of its last) for every variant that ran."""
    by_variant: dict[str, list[float]] = {}
    for name, start, end in stage_spans(results):
        by_variant.setdefault(name.split("/")[0], []).extend([start, end])
    return [(name, min(times), max(times)) for name, times in by_variant.items()]


def max_overlap(spans: list[tuple[str, float, float]]) -> int:
    """The most spans running at one moment (one ending as another starts does not count)."""
    events = sorted([(start, 1) for _, start, _ in spans] + [(end, -1) for _, _, end in spans])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def nll_table(results: dict) -> dict[str, float | None]:
    """Held-out NLL per variant: the table's column that training moves."""
    return {row["variant"]: row.get("heldout_nll") for row in results["rows"]}
