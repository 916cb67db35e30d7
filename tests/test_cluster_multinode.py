"""A real two-node Ray cluster on this machine, driven the way a cloud cluster is: `ray job submit`.

The head (`ray start --head`) and a second node (`ray start --address=...`) carrying a custom resource
run as this test's own processes, on free ports and in their own temp dir, and are stopped by signalling
those processes only (never a global `ray stop`: other Ray instances may share the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
PINNED_STAGE = "dlcot"  # a record stage whose `resources` come from the job YAML


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


class NodeExited(AssertionError):
    """A node's `ray start --block` process ended while the cluster was coming up."""


class TwoNodeCluster:
    """Head + one worker node started with `ray start --block`, each in its own process group."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lc-mn-", dir="/tmp"))  # short: Ray's socket paths are bounded
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LONGCOT_AUTOSCALER_CONFIG")}
        self.env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PATH=f"{BIN}:{os.environ['PATH']}")
        # On SIGTERM a node drains (waits for its work to end) before stopping: bounded, it is idle by then.
        self.env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "10"
        self.env["RAY_raylet_start_wait_time_s"] = "300"  # a busy CI machine registers a raylet slowly
        self.procs: list[subprocess.Popen] = []

    @property
    def job_server(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def _start(self, args: list[str], log: str) -> None:
        out = open(self.root / log, "w")
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
               "--object-store-memory", str(150 * 1024 * 1024), "--disable-usage-stats", *args]
        proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)

    def start(self, attempts: int = 3) -> None:
        """Start both nodes. On a heavily loaded machine a raylet can crash while its agents start (Ray
        gives them a fixed time to report their ports); then the attempt's processes are killed and the
        nodes are started again on fresh ports."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_nodes(attempt)
                return
            except NodeExited:
                if attempt == attempts:
                    raise
                self._kill_processes()

    def _start_nodes(self, attempt: int) -> None:
        (self.gcs, self.dashboard, *p) = _free_ports(11)
        self.logs = (f"head{attempt}.log", f"worker{attempt}.log")
        self._start(
            ["--head", "--port", str(self.gcs), "--temp-dir", str(self.root / f"ray{attempt}"),
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard),
             "--ray-client-server-port", str(p[0]), "--dashboard-agent-listen-port", str(p[1]),
             "--dashboard-agent-grpc-port", str(p[2]), "--runtime-env-agent-port", str(p[3]),
             "--metrics-export-port", str(p[4])],
            self.logs[0],
        )
        # `ray start` reports success once its node (GCS, raylet) has registered; a second node needs that.
        self._wait(lambda: self._started(self.logs[0]), "the head")
        self._wait(lambda: _get_json(f"{self.job_server}/api/version"), "the head's job server")
        self._start(
            # its own temp dir, as a separate machine has: nodes sharing one would unpack a job's
            # --working-dir into the same directory, each replacing the other's under the running driver
            ["--address", f"127.0.0.1:{self.gcs}", "--resources", json.dumps({"pinned": 1}),
             "--temp-dir", str(self.root / f"rayw{attempt}"),
             "--dashboard-agent-listen-port", str(p[5]), "--dashboard-agent-grpc-port", str(p[6]),
             "--runtime-env-agent-port", str(p[7]), "--metrics-export-port", str(p[8])],
            self.logs[1],
        )
        self._wait(lambda: self._started(self.logs[1]), "the second node")
        self._wait(lambda: len(self.alive_nodes()) == 2, "two live nodes")

    def _kill_processes(self) -> None:
        """Kill what this cluster started: its `ray start` process groups, then any process left with
        the cluster's temp dir in its command line (only this test's cluster uses that dir)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        self.procs = []
        for entry in _processes_mentioning(str(self.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)

    def _started(self, log: str) -> bool:
        return "Ray runtime started." in (self.root / log).read_text()

    def _logs(self) -> str:
        return "\n".join((self.root / f).read_text()[-2000:] for f in self.logs if (self.root / f).exists())

    def alive_nodes(self) -> list[dict]:
        reply = _get_json(f"{self.job_server}/api/v0/nodes?limit=10")
        return [n for n in reply["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def _wait(self, probe, what: str, timeout: float = 420) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise NodeExited(f"{what}: a `ray start` process exited\n{self._logs()}")
            try:
                if probe():
                    return
            except Exception:
                pass
            time.sleep(1)
        raise AssertionError(f"{what} did not come up in {timeout:.0f}s\n{self._logs()}")

    def submit(self, job_file: Path, *extra: str, working_dir: Path | None = None) -> tuple[str, dict, str]:
        """`ray job submit` the job (with ``working_dir`` uploaded, as the README does); returns (status,
        job details, logs) once it has ended."""
        from ray.job_submission import JobSubmissionClient

        submission_id = f"lc-{Path(job_file).stem}-{int(time.time())}"
        upload = ["--working-dir", str(working_dir)] if working_dir else []
        cmd = [str(BIN / "ray"), "job", "submit", "--address", self.job_server, "--submission-id", submission_id,
               "--no-wait", *upload, "--", "longcot", "run", str(job_file), "--no-progress", *extra]
        submitted = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300)
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        client = JobSubmissionClient(self.job_server)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            info = client.get_job_info(submission_id)
            if info.status.is_terminal():
                times = {"start_time": info.start_time, "end_time": info.end_time}
                return str(info.status), times, client.get_job_logs(submission_id)
            time.sleep(1)
        raise AssertionError(f"job {submission_id} did not end")

    def stop(self) -> list[str]:
        """Stop the worker node, then the head (SIGTERM: Ray drains and stops its own processes)."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        left = []
        for _ in range(20):
            left = _processes_mentioning(str(self.root))
            if not left:
                break
            time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)
        return left


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and entry.name != str(os.getpid()):
                found.append(f"{entry.name}: {cmdline[:160]}")
    return found


@pytest.fixture(scope="module")
def two_nodes():
    cluster = TwoNodeCluster()
    started = time.monotonic()
    try:
        cluster.start()
        print(f"two-node cluster up in {time.monotonic() - started:.1f}s")
        yield cluster
    finally:
        stopping = time.monotonic()
        left = cluster.stop()
        print(f"two-node cluster stopped in {time.monotonic() - stopping:.1f}s")
        assert not left, f"processes of the test cluster still running: {left}"


# The quickstart as submitted to this small cluster (1 CPU per node): the same YAML, shrunk with --set so
# the end-to-end run stays a few minutes, and its DLCoT stage pinned to the second node's custom resource.
QUICKSTART_ON_TWO_NODES = [
    "problems.sources.0.limit=6",
    "generate.resources.num_cpus=1",
    "dlcot.resources.resources={pinned: 1}",
    "train.max_steps=2", "train.heldout.problems=1", "train.data.cutoff_len=96", "train.data.truncation=truncate",
    "eval.generate.sampling.max_tokens=16", "eval.generate.resources.num_cpus=1",
    "serve.smoke.max_tokens=16",
]


def test_submitted_quickstart_runs_its_pinned_stage_on_the_second_node(two_nodes, tmp_path):
    overrides = [arg for pair in QUICKSTART_ON_TWO_NODES for arg in ("--set", pair)]
    status, times, logs = two_nodes.submit(
        Path("jobs/quickstart.yaml"), "--runs-dir", str(tmp_path / "runs"), *overrides, working_dir=REPO
    )
    print(f"quickstart job ran for {(times['end_time'] - times['start_time']) / 1000:.1f}s")
    assert status == "SUCCEEDED", logs[-3000:]

    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "manifest.json").exists()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert set(manifest["stages"]) == {"problems", "generate", "verify", "dlcot", "train", "eval", "serve"}
    nodes = {n["id"]: n["resources"] for n in manifest["cluster"]["nodes"]}
    assert len(nodes) == 2
    (pinned,) = [node for node, res in nodes.items() if res.get("pinned")]
    (head,) = [node for node in nodes if node != pinned]
    stage = manifest["stages"][PINNED_STAGE]
    assert stage["records_in"] == manifest["stages"]["verify"]["records_out"] > 0
    assert stage["records_in"] == stage["records_out"] + stage["records_rejected"]
    assert stage["nodes"] == [pinned], "the stage's workers ran on the node with the custom resource"
    assert manifest["cluster"]["driver_node"] == head, "while the job's driver ran on the head"
    assert manifest["stages"]["train"]["summary"]["global_step"] == 2
    assert manifest["stages"]["serve"]["summary"]["content"].strip()


def test_submitted_job_whose_gpu_stage_cannot_be_placed_fails_fast_with_a_clear_message(two_nodes, tmp_path):
    job = tmp_path / "gpu.yaml"
    job.write_text(f"name: gpu\nruns_dir: {tmp_path / 'runs'}\ntrain:\n  use_gpu: true\n  num_workers: 2\n")
    status, times, logs = two_nodes.submit(job)
    assert status == "FAILED"
    assert "error: stage train asks for {CPU: 1, GPU: 1} per worker, x2 at once: no node can host one worker" in logs
    assert "missing: GPU" in logs
    assert not (tmp_path / "runs").exists(), "it failed before any stage ran"
    seconds = (times["end_time"] - times["start_time"]) / 1000
    print(f"GPU job failed {seconds:.1f}s after it started (interpreter start and imports included)")
    assert seconds < 60
