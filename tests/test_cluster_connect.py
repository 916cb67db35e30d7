"""Reaching Ray: a laptop-safe local instance by default, an existing cluster when RAY_ADDRESS is set."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_instance_is_bounded_and_sets_auth_explicitly():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    proc = _run("""
        import os, ray
        from longcot.cluster import connect
        from longcot.settings import RayConfig
        connect(RayConfig(num_cpus=1, object_store_memory_mb=200))
        res = ray.cluster_resources()
        print(os.environ["RAY_AUTH_MODE"], int(res["CPU"]), int(res["object_store_memory"] / 2**20))
        ray.shutdown()
    """, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    auth, cpus, store_mb = proc.stdout.split()[-3:]
    assert auth == "disabled" and cpus == "1" and 150 <= int(store_mb) <= 200


def test_local_instance_runs_work_in_the_workers_it_prestarted_and_they_print_unbuffered():
    """Ray prestarts one worker per CPU; a job started with a runtime_env cannot use them and spawns its own,
    which cost each stage run about a second of CPU per worker on a laptop."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONUNBUFFERED")}
    proc = _run("""
        import os, time, psutil, ray
        from longcot.cluster import connect
        from longcot.settings import RayConfig
        connect(RayConfig(num_cpus=2, object_store_memory_mb=200))
        def idle():  # this instance's workers that wait for work (the raylet is a child of this driver)
            found = set()
            for p in psutil.Process().children(recursive=True):
                try:
                    if " ".join(p.cmdline()).startswith("ray::IDLE"):
                        found.add(p.pid)
                except psutil.Error:  # gone meanwhile
                    pass
            return found
        deadline = time.monotonic() + 120
        while len(idle()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        prestarted = idle()
        @ray.remote(num_cpus=1)
        def where():
            time.sleep(1)  # both tasks hold a worker at once
            return os.getpid(), os.environ.get("PYTHONUNBUFFERED")
        ran = ray.get([where.remote(), where.remote()])
        print(len(prestarted), sorted(pid in prestarted for pid, _ in ran), {flag for _, flag in ran})
        ray.shutdown()
    """, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "2 [True, True] {'1'}"


def _wait_for_port(port: int, head: subprocess.Popen, seconds: float = 180) -> None:
    """Block until the head's GCS accepts connections (connecting earlier can hang in ray.init)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(2)  # the GCS listens before the head's raylet has registered
                return
        time.sleep(0.5)
    raise AssertionError(f"the head did not open port {port} within {seconds:.0f} s")


@pytest.mark.slow
def test_ray_address_connects_to_the_running_cluster():
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="lc-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    head = subprocess.Popen(
        [str(VENV_BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
         "--resources={\"marker_resource\": 3}", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
         "--object-store-memory=100000000", f"--temp-dir={temp_dir}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        _wait_for_port(port, head)
        code = """
            import ray
            from longcot.cluster import connect
            connect()
            print(int(ray.cluster_resources().get("marker_resource", 0)))
            ray.shutdown()
        """
        proc = _run(code, env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split()[-1] == "3"  # the custom resource of *that* cluster, not a new local one
    finally:
        if head.poll() is None:
            os.killpg(head.pid, 15)
            head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
