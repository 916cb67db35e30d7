"""Run an untrusted program: a separate process in fresh namespaces, with limits, killed whole on timeout.

Containment, strongest available (``containment()`` says which is in use):

- ``namespaces`` (running as root, as in containers and CI): ``unshare`` gives each run new PID, mount and
  network namespaces; ``jail.py`` (PID 1 there) makes every mount read-only, mounts a fresh size-limited
  tmpfs on /tmp as the only writable place, and starts the program as a uid of its own (random, unused:
  RLIMIT_NPROC then counts exactly this run's processes, which it does not for root), with rlimits on CPU
  time, address space, file size, processes and open files, no new privileges and a cleared environment.
  There is no network device but loopback, the host's processes are invisible, and the parent is not
  signalable. Killing the run's process group kills PID 1, and the kernel then kills everything left.
- ``user-namespaces`` (not root, unprivileged user namespaces allowed): the same, inside a user namespace
  mapped to the caller (no uid change: the files the caller can write are protected by the read-only mounts).
- ``rlimits`` (neither works): rlimits, a temporary directory and a cleared environment only; sockets are
  refused by an audit hook. A warning says so; do not run untrusted code at scale like this.

stdout and stderr are read with a cap, stdin is fed without blocking, and the wall-clock limit covers all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from longcot.verify.config import SandboxConfig

log = logging.getLogger(__name__)
JAIL = Path(__file__).with_name("jail.py")
JAIL_FAILED = 125
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
PROGRAM_ENV = {  # the whole environment of a program (plus HOME and TMPDIR): nothing of the parent's reaches it
    "PATH": SAFE_PATH,
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
}
_NAMESPACES = ["--fork", "--pid", "--mount-proc", "--net", "--kill-child"]
UNSHARE = {  # the command that starts a run in each containment mode
    "namespaces": ["unshare", *_NAMESPACES],
    "user-namespaces": ["unshare", "--user", "--map-root-user", *_NAMESPACES],
    "rlimits": [],
}
# the rlimits fallback: the program runs under this bootstrap, which refuses sockets before it starts
_NO_SOCKETS = (
    "import sys, runpy\n"
    "def _guard(event, args):\n"
    "    if event.startswith('socket.') :\n"
    "        raise PermissionError('network access is disabled in the sandbox')\n"
    "sys.addaudithook(_guard)\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``ok`` (exit 0), ``failed`` (non-zero exit or a signal), ``timeout`` (wall clock or
    CPU time), ``output_limit`` (printed more than allowed), ``error`` (the sandbox itself could not run it)."""

    status: str
    stdout: str
    stderr: str
    detail: str | None = None
    uid: int | None = None  # the run's own uid (namespaces mode): no process of it is left after the run


@lru_cache(maxsize=1)
def containment() -> str:
    """``namespaces``, ``user-namespaces`` or ``rlimits``: the strongest containment this machine allows."""
    if shutil.which("unshare"):
        probe = [sys.executable, "-I", "-S", "-c", "pass"]
        if os.geteuid() == 0 and _works(UNSHARE["namespaces"] + probe):
            return "namespaces"
        if _works(UNSHARE["user-namespaces"] + probe):
            return "user-namespaces"
    log.warning("sandbox: cannot create namespaces here; code runs with rlimits only (weaker containment)")
    return "rlimits"


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _world_runnable(path: str) -> bool:
    """Whether a user with no privileges can execute ``path`` (every directory on the way searchable)."""
    real = Path(os.path.realpath(path))
    try:
        return all(step.stat().st_mode & stat.S_IXOTH for step in (real, *real.parents))
    except OSError:
        return False


@lru_cache(maxsize=8)
def program_python(configured: str | None = None) -> str:
    """The interpreter programs run with: ``configured``, else this one if the sandbox user can run it,
    else python3 on PATH (a pyenv build under /root, say, is closed to other users)."""
    if configured:
        return os.path.realpath(shutil.which(configured) or configured)
    if containment() != "namespaces" or _world_runnable(sys.executable):
        return sys.executable
    for name in ("python3", "python"):
        found = shutil.which(name, path=SAFE_PATH)
        if found and _world_runnable(found):
            return os.path.realpath(found)
    return sys.executable


class Sandbox:
    """Runs programs under ``config``'s limits; one fresh sandbox per ``run_python``. Thread-safe."""

    def __init__(self, config: SandboxConfig | None = None):
        self.config = config or SandboxConfig()
        self.mode = containment()
        self.python = program_python(self.config.python)

    def run_python(self, source: str, stdin: str = "") -> RunResult:
        """Run ``source`` as ``main.py`` with ``stdin`` in a fresh sandbox whose working directory holds it."""
        cfg = self.config
        started = time.monotonic()
        files, argv = {"main.py": source}, [self.python, "-I", "main.py"]
        with tempfile.TemporaryDirectory(prefix="longcot-sandbox-", ignore_cleanup_errors=True) as host_dir:
            spec_path = Path(host_dir) / "spec.json"
            sealed = self.mode != "rlimits"
            workdir = "/tmp" if sealed else str(Path(host_dir) / "work")
            if not sealed:
                Path(workdir).mkdir()
                files["_sandbox_boot.py"] = _NO_SOCKETS
                argv.insert(2, "_sandbox_boot.py")  # the bootstrap runs main.py after its audit hook
            spec = {
                "seal": sealed,
                "drop_to_uid": self.mode == "namespaces",
                "uid": random.SystemRandom().randrange(1_000_000, 2_000_000_000),
                "workdir": workdir,
                "work_bytes": cfg.workdir_mb << 20,
                "files": files,
                "argv": argv,
                "env": {**PROGRAM_ENV, "HOME": workdir, "TMPDIR": workdir},
                "limits": {
                    "cpu_s": cfg.cpu_s or max(1, math.ceil(cfg.timeout_s)),
                    "memory_bytes": cfg.memory_mb << 20,
                    "file_bytes": cfg.max_file_mb << 20,
                    "processes": cfg.max_processes,
                    "open_files": 256,
                },
            }
            spec_path.write_text(json.dumps(spec), encoding="utf-8")
            # jail.py is stdlib only: any python 3.9+ runs it
            command = [*UNSHARE[self.mode], self.python, "-I", "-S", str(JAIL), str(spec_path)]
            try:
                proc = subprocess.Popen(
                    command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"}, cwd=host_dir, process_group=0, close_fds=True,
                )
            except OSError as exc:
                return RunResult("error", "", "", f"cannot start: {exc}")
            cap = cfg.max_output_kb << 10
            try:
                out, err, why = _communicate(proc, stdin.encode("utf-8"), started + cfg.timeout_s, cap)
            finally:
                _kill_group(proc)
            stdout = out.decode("utf-8", errors="replace")
            stderr = err.decode("utf-8", errors="replace")
            status, detail = _outcome(proc.returncode, stderr, why, cfg)
            uid = spec["uid"] if spec["drop_to_uid"] else None
            return RunResult(status, stdout, stderr, detail, uid)


def _communicate(proc: subprocess.Popen, data: bytes, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Feed stdin and read stdout/stderr until the process closes them, the deadline, or the cap."""
    threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True).start()
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    why = None
    with selectors.DefaultSelector() as selector:
        for fd in kept:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and not why:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = "timeout"
                break
            for key, _ in selector.select(min(remaining, 1.0)):
                block = os.read(key.fd, 1 << 16)
                if not block:
                    selector.unregister(key.fd)
                    continue
                room = cap - len(kept[key.fd])
                kept[key.fd] += block[:room]
                if len(block) > room:
                    why = "output_limit"
                    break
    if why:
        _kill_group(proc)
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        why = why or "timeout"
        _kill_group(proc)
        proc.wait()
    out, err = kept.values()
    return bytes(out), bytes(err), why


def _feed(stdin, data: bytes) -> None:
    """Write ``data`` to a run's stdin, then close it. On its own thread: a program that does not read its input
    blocks only this thread, which its end (a closed pipe) releases."""
    with contextlib.suppress(OSError):
        stdin.write(data)
    with contextlib.suppress(OSError):
        stdin.close()


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run's process group and wait until its init (``jail.py``) is gone: the kernel has then
    killed and reaped every process of the run's PID namespace."""
    inits = _children(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.stdout.close()  # a no-op when closed already
    proc.stderr.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while inits and time.monotonic() < deadline:
        inits = [pid for pid in inits if _alive(pid)]
        if inits:
            time.sleep(0.01)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _alive(pid: int) -> bool:
    """Running (a zombie has freed everything, and its namespace is gone)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _outcome(code: int, stderr: str, why: str | None, cfg: SandboxConfig) -> tuple[str, str | None]:
    """How a run ended (``RunResult.status``) and why (``RunResult.detail``)."""
    if why == "timeout":
        return "timeout", f"wall-clock limit of {cfg.timeout_s:g}s"
    if why == "output_limit":
        return "output_limit", f"printed more than {cfg.max_output_kb} KiB"
    if code == JAIL_FAILED and "longcot-jail:" in stderr:
        return "error", stderr.strip().splitlines()[-1]
    if code == 0:
        return "ok", None
    signum = code - 128 if code > 128 else -code if code < 0 else None  # jail.py exits 128+N for signal N
    if signum == signal.SIGXCPU:
        return "timeout", "CPU-time limit"
    if signum:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        return "failed", f"killed by {name}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return "failed", lines[-1][:300] if lines else f"exit status {code}"
