"""A pool of checker processes with a hard per-item timeout.

math-verify (sympy underneath) can take unbounded time on a pathological answer such as
``10^{10^{10^{10}}}``, and its own timeouts use signals, which only work on a main thread. So every
check runs in a separate worker process; one whose item overruns its limit is killed and replaced, and
the item's outcome is ``timeout``. The limit is CPU time, enforced by the kernel: the worker arms
``ITIMER_PROF`` around each check and its SIGPROF ends the worker; the parent keeps a wall-clock backstop.
Workers are plain subprocesses (``python -m longcot.verify.checker``) talking over a socket pair,
independent of how the parent was started (pytest, a Ray worker, the CLI). Not pebble: its pool's named
semaphores need multiprocessing's resource tracker, which Ray kills with an actor's other children before
the actor exits, so releasing them then prints KeyError tracebacks.

Checks are named in ``CHECKS`` (name -> "module:function"); a check takes one picklable payload and
returns a picklable value.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing import Pipe
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Iterable

CHECKS: dict[str, str] = {  # the checker process resolves these names
    "math": "longcot.verify.math:check_pair",
    "gym": "longcot.verify.gym:check_gym",
}
PRELOAD: dict[str, tuple[str, ...]] = {"gym": ("reasoning_gym",)}  # heavy imports a check makes on first use
WARMUP = ("math", ("1/2", "0.5"))  # first math-verify call compiles its grammars (~0.5 s): pay it at start
LOAD_GRACE_S = 120.0  # how long a worker may take to import a check's module before its item starts


def wall_backstop(limit: float) -> float:
    """Wall-clock bound of an item whose CPU-time limit is ``limit`` (a loaded machine stretches CPU time)."""
    return max(4 * limit, limit + 30.0)


@dataclass(frozen=True)
class Outcome:
    """What one item's check came to: ``ok`` (with ``value``), ``timeout`` or ``error`` (with ``error``)."""

    status: str
    value: Any = None
    error: str | None = None
    cpu_seconds: float | None = None  # CPU time the check used (CPU timeouts: the limit it reached)


class _Worker:
    def __init__(self):
        self.conn, child = Pipe()  # a socket pair: one channel each way
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        args = [sys.executable, "-m", "longcot.verify.checker", str(child.fileno())]
        self.process = subprocess.Popen(
            args, pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env
        )
        child.close()
        self.ready = False
        self.queue: deque[int] = deque()  # item indices sent, not yet answered, in order
        self.started = 0.0  # when its current item started (the worker's clock: CLOCK_MONOTONIC, shared)
        self.deadline: float | None = None  # wall-clock backstop

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.conn.close()


class CheckPool:
    """``workers`` checker processes; ``run`` maps a named check over payloads, each bounded by ``timeout_s``.

    Each idle worker gets a small batch of items and works through it without waiting for the parent;
    it stamps the start of every item and ends itself once the item has used ``timeout_s`` of CPU time;
    the parent kills a worker whose current item has run ``wall_backstop(timeout_s)`` of wall clock.
    Either way, the worker is replaced and its unstarted items go to another worker. CPU time keeps the
    limit meaningful on a loaded machine, where an ordinary check can wait seconds for a core. The clock of
    an item starts when its worker has the check loaded: worker start-up and a first import never count.
    Outcomes come back in input order.
    """

    def __init__(self, workers: int | None = None, timeout_s: float = 5.0):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self.restarts = 0  # workers killed for overrunning, or found dead
        self._failed_starts = 0
        self._lock = threading.Lock()
        self._workers = [_Worker() for _ in range(self.size)]

    def run(self, check: str, payloads: Iterable[Any], timeout_s: float | None = None) -> list[Outcome]:
        if check not in CHECKS:
            raise KeyError(f"unknown check {check!r}; known: {sorted(CHECKS)}")
        limit = self.timeout_s if timeout_s is None else timeout_s
        items = list(payloads)
        results: list[Outcome | None] = [None] * len(items)
        with self._lock:
            pending = deque(range(len(items)))
            while pending or any(w.queue for w in self._workers):
                self._dispatch(check, items, pending, limit)
                deadlines = [w.deadline for w in self._workers if w.queue and w.deadline is not None]
                wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else 1.0
                conns = {w.conn: slot for slot, w in enumerate(self._workers)}
                for conn in wait(list(conns), timeout=wait_s):
                    self._receive(conns[conn], results, pending, limit)
                self._stop_overruns(results, pending)
        return [r if r is not None else Outcome("error", error="not checked") for r in results]

    def _stop_overruns(self, results: list, pending: deque) -> None:
        now = time.monotonic()
        for slot, worker in enumerate(self._workers):
            if worker.queue and worker.deadline is not None and now >= worker.deadline:
                why = f"check exceeded {worker.deadline - worker.started:g}s of wall-clock time"
                results[worker.queue.popleft()] = Outcome("timeout", error=why)
                pending.extendleft(reversed(worker.queue))
                self._replace(slot)

    def _dispatch(self, check: str, items: list, pending: deque, limit: float) -> None:
        for slot, worker in enumerate(self._workers):
            if not (worker.ready and not worker.queue and pending):
                continue
            size = max(1, min(32, len(pending) // (4 * self.size)))  # small batches near the end balance load
            batch = [pending.popleft() for _ in range(min(size, len(pending)))]
            try:
                worker.conn.send((check, limit, [(index, items[index]) for index in batch]))
            except OSError:  # a broken pipe: the worker is gone
                pending.extendleft(reversed(batch))
                self._replace(slot)
                continue
            worker.queue.extend(batch)
            worker.started = time.monotonic()
            worker.deadline = worker.started + wall_backstop(limit) + LOAD_GRACE_S  # until its first item starts

    def _receive(self, slot: int, results: list, pending: deque, limit: float) -> None:
        worker = self._workers[slot]
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.kill()  # as a rule it has ended already: its end closed the channel
            code = worker.process.returncode
            if not worker.ready:
                self._failed_starts += 1
                if self._failed_starts >= 3:
                    raise RuntimeError(f"checker processes die at start-up (exit {code}); "
                                       "run `python -m longcot.verify.checker` to see why") from None
            if worker.queue:
                if code == -signal.SIGPROF:
                    outcome = Outcome("timeout", error=f"check used more than {limit:g}s of CPU time",
                                      cpu_seconds=limit)
                else:
                    outcome = Outcome("error", error=f"checker process died (exit {code})")
                results[worker.queue.popleft()] = outcome
                pending.extendleft(reversed(worker.queue))
            self._replace(slot)
            return
        if message == "ready":
            worker.ready = True
            self._failed_starts = 0
        elif message[0] == "start":
            _, _, worker.started = message
            worker.deadline = worker.started + wall_backstop(limit)
        else:
            index, status, value, cpu = message
            if worker.queue and worker.queue[0] == index:
                worker.queue.popleft()
            worker.deadline = time.monotonic() + wall_backstop(limit) + LOAD_GRACE_S if worker.queue else None
            results[index] = (Outcome("ok", value=value, cpu_seconds=cpu) if status == "ok"
                              else Outcome("error", error=value, cpu_seconds=cpu))

    def _replace(self, slot: int) -> None:
        self._workers[slot].kill()
        self._workers[slot] = _Worker()
        self.restarts += 1

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers = []

    def __enter__(self) -> "CheckPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_shared: dict[int, CheckPool] = {}
_shared_lock = threading.Lock()


def shared_pool(workers: int | None = None, timeout_s: float = 5.0) -> CheckPool:
    """One long-lived pool per process and size (start-up is paid once); closed at exit."""
    size = max(1, workers or os.cpu_count() or 1)
    with _shared_lock:
        pool = _shared.get(size)
        if pool is None or not pool._workers:
            pool = _shared[size] = CheckPool(size, timeout_s)
        pool.timeout_s = timeout_s
        return pool


@atexit.register
def _close_shared() -> None:
    for pool in _shared.values():
        pool.close()
