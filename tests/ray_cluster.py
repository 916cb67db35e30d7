"""Real multi-node Ray clusters on this machine, for the cluster tests and benches.

Every node is a `ray start --block` process in its own process group, on free ports and under the
cluster's own temp dir, and the cluster is stopped by signalling those processes only: never a global
`ray stop`, because other Ray instances (the test session's own) may share the machine.

``LocalCluster`` is a head plus nodes added by hand (`ray start --address`). ``autoscaling`` makes the
head run Ray's own autoscaler (monitor.py, ``StandardAutoscaler``) with its fake multi-node provider,
which launches and removes worker "nodes" as local processes on demand. This replaces
``ray.cluster_utils.AutoscalingCluster`` for two reasons: its ``start()`` runs `ray stop --force`
(every Ray process on the machine dies), and it reads ``fake_multi_node/example.yaml``, which the Ray
wheel does not ship. The head runs on a free port; ``provider.gcs_address`` tells the provider where
(without it launched nodes dial the default port 6379 and never join).
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
from typing import Any, Callable

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def processes_mentioning(text: str) -> list[str]:
    """``"pid: command line"`` of every process whose command line contains ``text``."""
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


def fake_autoscaler_config(
    gcs_port: int, node_types: dict[str, dict[str, float]], *, max_workers: dict[str, int],
    idle_timeout_minutes: float, object_store_mb: int = 150,
) -> dict[str, Any]:
    """A cluster-launcher config for Ray's ``fake_multinode`` provider: a head with no resources (it
    hosts drivers only) and the given worker node types, each up to ``max_workers[name]`` nodes."""
    types: dict[str, Any] = {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}}
    for name, resources in node_types.items():
        types[name] = {
            # the provider starts each node with these resources; object_store_memory is its store size
            "resources": {**resources, "object_store_memory": object_store_mb * 1024 * 1024},
            "node_config": {}, "min_workers": 0, "max_workers": max_workers[name],
        }
    empty_lists = ("cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands",
                   "setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                   "worker_start_ray_commands")
    return {
        "cluster_name": "longcot-fake", "max_workers": sum(max_workers.values()),
        "upscaling_speed": 10.0, "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "auth": {"ssh_user": "ray"}, "available_node_types": types, "head_node_type": "ray.head.default",
        "file_mounts": {}, "file_mounts_sync_continuously": False, **{k: [] for k in empty_lists},
    }


class NodeExited(AssertionError):
    """A node's `ray start --block` process ended while the cluster was coming up."""


class LocalCluster:
    """A head node (optionally running the autoscaler) plus nodes added with ``add_node``."""

    def __init__(self, prefix: str = "lc-cl-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: Ray's socket paths are bounded
        self.env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "LONGCOT_AUTOSCALER_CONFIG")}
        self.env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PATH=f"{BIN}:{os.environ['PATH']}")
        # On SIGTERM a node drains (waits for its work to end) before stopping: bounded, it is idle by then.
        self.env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "10"
        self.env["RAY_raylet_start_wait_time_s"] = "300"  # a busy CI machine registers a raylet slowly
        self.procs: list[subprocess.Popen] = []
        self.logs: list[str] = []
        self.autoscaler_config: Path | None = None
        self.attempt = 0

    # ------------------------------------------------------------ start

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs}"

    @property
    def job_server(self) -> str:
        return f"http://127.0.0.1:{self.dashboard}"

    def _start(self, args: list[str], log: str, num_cpus: float, env: dict[str, str] | None = None) -> None:
        out = open(self.root / log, "w")
        cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
               "--object-store-memory", str(150 * 1024 * 1024), "--disable-usage-stats", *args]
        proc = subprocess.Popen(cmd, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)

    def start(self, *, head_cpus: float = 1, autoscaling: Callable[[int], dict] | None = None,
              attempts: int = 3) -> None:
        """Start the head. ``autoscaling(gcs_port)`` returns an autoscaler config, which the head runs.

        On a heavily loaded machine a raylet can crash while its agents start (Ray gives them a fixed
        time to report their ports); then the attempt's processes are killed and it starts again on fresh
        ports."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_head(attempt, head_cpus, autoscaling)
                return
            except NodeExited:
                if attempt == attempts:
                    raise
                self.kill()

    def _start_head(self, attempt: int, head_cpus: float, autoscaling: Callable[[int], dict] | None) -> None:
        self.attempt = attempt
        (self.gcs, self.dashboard, *p) = free_ports(7)
        extra, env = [], {}
        if autoscaling is not None:
            self.autoscaler_config = self.root / "autoscaler.yaml"
            self.autoscaler_config.write_text(json.dumps(autoscaling(self.gcs)))
            extra = [f"--autoscaling-config={self.autoscaler_config}"]
            # the fake provider refuses to run without RAY_FAKE_CLUSTER; the monitor looks once a second;
            # the variants' preflight reads the node types from the same file (see longcot.cluster)
            env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                   "LONGCOT_AUTOSCALER_CONFIG": str(self.autoscaler_config)}
        self._start(
            ["--head", "--port", str(self.gcs), "--temp-dir", str(self.root / f"ray{attempt}"),
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard),
             "--ray-client-server-port", str(p[0]), "--dashboard-agent-listen-port", str(p[1]),
             "--dashboard-agent-grpc-port", str(p[2]), "--runtime-env-agent-port", str(p[3]),
             "--metrics-export-port", str(p[4]), *extra],
            f"head{attempt}.log", head_cpus, env,
        )
        # `ray start` reports success once its node (GCS, raylet) has registered; a second node needs that.
        self.wait(lambda: self._started(f"head{attempt}.log"), "the head")
        self.wait(lambda: get_json(f"{self.job_server}/api/version"), "the head's job server")

    def add_node(self, resources: dict[str, float] | None = None, num_cpus: float = 1,
                 attempts: int = 3) -> subprocess.Popen:
        """Start one more node (its own temp dir, as a separate machine has: nodes sharing one would unpack
        a job's --working-dir into the same directory, each replacing the other's under a running driver).

        On a heavily loaded machine the node's `ray start` can give up before its raylet registers ("timed
        out during startup"); then it is started again on fresh ports, as the head is."""
        before = len(self.alive_nodes())
        for attempt in range(1, attempts + 1):
            n, p = len(self.procs), free_ports(4)
            self._start(
                ["--address", self.address, "--resources", json.dumps(resources or {}),
                 "--temp-dir", str(self.root / f"ray{self.attempt}-node{n}"),
                 "--dashboard-agent-listen-port", str(p[0]), "--dashboard-agent-grpc-port", str(p[1]),
                 "--runtime-env-agent-port", str(p[2]), "--metrics-export-port", str(p[3])],
                f"node{n}-{self.attempt}.log", num_cpus,
            )
            try:
                self.wait(lambda: self._started(self.logs[-1]), f"node {n}", watch=self.procs[-1])
                break
            except NodeExited:
                if attempt == attempts:
                    raise
                with contextlib.suppress(ProcessLookupError):  # what the failed start left (its raylet)
                    os.killpg(self.procs[-1].pid, signal.SIGKILL)
        self.wait(lambda: len(self.alive_nodes()) == before + 1, f"{before + 1} live nodes")
        return self.procs[-1]

    def _started(self, log: str) -> bool:
        return "Ray runtime started." in (self.root / log).read_text()

    def _logs(self) -> str:
        return "\n".join((self.root / f).read_text()[-2000:] for f in self.logs if (self.root / f).exists())

    def wait(self, probe, what: str, timeout: float = 420, *, poll: float = 1,
             watch: subprocess.Popen | None = None) -> None:
        """Poll ``probe`` until it holds; raises ``NodeExited`` if the head's (or ``watch``'s) process ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs and self.procs[0].poll() is not None:
                raise NodeExited(f"{what}: the head's `ray start` process exited\n{self._logs()}")
            if watch is not None and watch.poll() is not None and not probe():
                raise NodeExited(f"{what}: its `ray start` process exited\n{self._logs()}")
            try:
                if probe():
                    return
            except Exception:
                pass
            time.sleep(poll)
        raise AssertionError(f"{what} did not come up in {timeout:.0f}s\n{self._logs()}")

    # ------------------------------------------------------------ observe

    def nodes(self) -> list[dict]:
        """Every node the cluster has known, with ``state`` (ALIVE or DEAD), ``resources_total`` and
        ``start_time_ms`` / ``end_time_ms``."""
        reply = get_json(f"{self.job_server}/api/v0/nodes?limit=100&detail=true")
        return reply["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        return [n for n in self.nodes() if n["state"] == "ALIVE"]

    @staticmethod
    def raylet_pid(node: subprocess.Popen) -> int:
        """PID of the raylet that the node's `ray start --block` process started."""
        import psutil

        for child in psutil.Process(node.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.name() == "raylet":
                    return child.pid
        raise AssertionError(f"no raylet under `ray start` process {node.pid}")

    def cluster_status(self) -> dict:
        """The autoscaler's last report (``loadMetricsReport.usage``: resource -> [in use, total], with
        names in camelCase as the dashboard sends them; ``autoscalerReport``: active and pending nodes)."""
        return get_json(f"{self.job_server}/api/cluster_status")["data"]["clusterStatus"]

    def monitor_events(self) -> list[str]:
        """The autoscaler's event lines (``Adding 2 node(s) of type gpu``, ``Removing 1 nodes of type ...``)."""
        logs = self.root / f"ray{self.attempt}" / "session_latest" / "logs" / "monitor.log"
        if not logs.exists():
            return []
        return [line for line in logs.read_text(errors="replace").splitlines() if ":event_summary:" in line]

    # ------------------------------------------------------------ jobs

    def submit(self, job_file: Path, *extra: str, working_dir: Path | None = None,
               timeout: float = 600) -> tuple[str, dict, str]:
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = client.get_job_info(submission_id)
            if info.status.is_terminal():
                times = {"start_time": info.start_time, "end_time": info.end_time}
                return str(info.status), times, client.get_job_logs(submission_id)
            time.sleep(1)
        raise AssertionError(f"job {submission_id} did not end")

    def driver_env(self) -> dict[str, str]:
        """The environment of a driver run on the head (as `ray job submit` runs one): connected to this
        cluster, and told where the autoscaler's node types are."""
        env = {**self.env, "RAY_ADDRESS": self.address}
        if self.autoscaler_config is not None:
            env["LONGCOT_AUTOSCALER_CONFIG"] = str(self.autoscaler_config)
        return env

    # ------------------------------------------------------------ stop

    def kill(self) -> None:
        """Kill what this cluster started: its `ray start` process groups, then any process left with
        the cluster's temp dir in its command line (only this cluster uses that dir; the autoscaler's
        nodes run under the head's)."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        self.procs, self.logs = [], []
        for entry in processes_mentioning(str(self.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)

    def stop(self) -> list[str]:
        """Stop the added nodes, then the head (SIGTERM: Ray drains and stops its own processes); kill
        whatever is left (the autoscaler's nodes). Returns the processes still running after that."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        left = []
        for second in range(20):
            left = processes_mentioning(str(self.root))
            if not left:
                break
            if second >= 10:  # the autoscaler's nodes outlive the head's SIGTERM: kill what is left
                for entry in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(entry.split(":", 1)[0]), signal.SIGKILL)
            time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)
        return left
