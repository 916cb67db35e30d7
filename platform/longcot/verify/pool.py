"""A pool of checker processes with a hard per-item timeout.

math-verify (sympy underneath) can take unbounded time on a pathological answer such as
``10^{10^{10^{10}}}``, and its own timeouts use signals, which only work on a main thread. So every
check runs in a worker of a pebble ``ProcessPool``. An item's limit is CPU time, enforced by the kernel:
the worker arms ``ITIMER_PROF`` around the check, and its SIGPROF ends a worker that overruns. Pebble's
per-task timeout is the wall-clock backstop, and pebble replaces a worker that was stopped or died; the
item's outcome is then ``timeout`` (or ``error`` for a death). Workers come from multiprocessing's fork
server, a fresh single-threaded process, never from a fork of the parent (a threaded Ray worker, say, whose
fork can deadlock); like every multiprocessing child, they need the parent's ``__main__`` guarded.

Checks are named in ``CHECKS`` (name -> "module:function"); a check takes one picklable payload and
returns a picklable value.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pebble import ProcessExpired, ProcessPool

CHECKS: dict[str, str] = {  # the workers resolve these names
    "math": "longcot.verify.math:check_pair",
    "gym": "longcot.verify.gym:check_gym",
}
PRELOAD: dict[str, tuple[str, ...]] = {"gym": ("reasoning_gym",)}  # heavy imports a check makes on first use
WARMUP = ("math", ("1/2", "0.5"))  # first math-verify call compiles its grammars (~0.5 s): pay it at start


def wall_backstop(limit: float) -> float:
    """Wall-clock bound of an item whose CPU-time limit is ``limit`` (a loaded machine stretches CPU time)."""
    return max(4 * limit, limit + 30.0)


@dataclass(frozen=True)
class Outcome:
    """What one item's check came to: ``ok`` (with ``value``), ``timeout`` or ``error`` (with ``error``)."""

    status: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0  # wall clock (0 where the worker was stopped mid-check)
    cpu_seconds: float | None = None  # CPU time the check used (CPU timeouts: the limit it reached)


_loaded: dict[str, Callable[[Any], Any] | str] = {}  # in a worker: check -> function, or why it did not load


def _load_checks(checks: dict[str, str], warmup: bool) -> None:
    """Worker initializer: import ``checks`` (name -> "module:function") before the worker takes an item,
    so no item's clock counts it."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # no BLAS thread pools per checker (before the checks import)
    logging.disable(logging.WARNING)  # math-verify warns on every call made without its signal timeouts
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the CPU limit: SIGPROF's default action ends the worker
    for name, target in checks.items():
        try:
            for module in PRELOAD.get(name, ()):
                importlib.import_module(module)
            module, func = target.split(":")
            _loaded[name] = getattr(importlib.import_module(module), func)
        except Exception as exc:  # a check that cannot load is an error outcome for its items, not a dead pool
            _loaded[name] = f"cannot load check {name!r}: {type(exc).__name__}: {exc}"[:500]
    name, payload = WARMUP
    if warmup and callable(_loaded.get(name)):
        _loaded[name](payload)


def _run_check(name: str, payload: Any, limit: float) -> tuple[str, Any, float, float]:
    """Worker task: ``(status, value or error, wall seconds, CPU seconds)`` of one check; past ``limit``
    seconds of CPU time the kernel ends this process."""
    func = _loaded[name]
    if isinstance(func, str):
        return "error", func, 0.0, 0.0
    wall, cpu = time.monotonic(), time.process_time()
    # Pebble's timeouts are wall clock only, so the CPU limit is ours; armed only around the check, so a
    # worker never dies holding pebble's channel lock.
    signal.setitimer(signal.ITIMER_PROF, limit)
    try:
        status, value = "ok", func(payload)
    except Exception as exc:  # a failing check is an outcome, not a dead worker
        status, value = "error", f"{type(exc).__name__}: {exc}"[:500]
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    return status, value, time.monotonic() - wall, time.process_time() - cpu


class CheckPool:
    """``workers`` checker processes; ``run`` maps a named check over payloads, each bounded by ``timeout_s``.

    An item is stopped once its check has used ``timeout_s`` of CPU time, or ``wall_backstop(timeout_s)``
    of wall clock. CPU time keeps the limit meaningful on a loaded machine, where an ordinary check can
    wait seconds for a core. The clock of an item starts when its worker has the check loaded: worker
    start-up and a first import never count (a check the pool has not loaded yet restarts its workers
    with it). Outcomes come back in input order.
    """

    def __init__(self, workers: int | None = None, timeout_s: float = 5.0, warmup: bool = True):
        self.size = max(1, workers or os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self.warmup = warmup
        self.restarts = 0  # workers stopped for overrunning, or found dead
        self._lock = threading.Lock()
        self._checks: tuple[str, ...] = (WARMUP[0],) if warmup else ()
        self._pool: ProcessPool | None = self._start()

    def _start(self) -> ProcessPool:
        checks = {name: CHECKS[name] for name in self._checks}
        pool = ProcessPool(self.size, initializer=_load_checks, initargs=(checks, self.warmup),
                           context=multiprocessing.get_context("forkserver"))
        # Asking starts the workers now (pebble would on the first task): start-up overlaps the caller's work.
        if self._checks and not pool.active:
            raise RuntimeError("the checker pool did not start")
        return pool

    def _pool_for(self, check: str) -> ProcessPool:
        if self._pool is None:
            raise RuntimeError("the checker pool is closed")
        # Pebble's clock would count a first import: workers load every check in use before taking items.
        if check not in self._checks or not self._pool.active:  # not active: broken (all its workers died)
            self._checks = tuple(sorted({*self._checks, check}))
            self._stop(self._pool)
            self._pool = self._start()
        return self._pool

    def run(self, check: str, payloads: Iterable[Any], timeout_s: float | None = None) -> list[Outcome]:
        if check not in CHECKS:
            raise KeyError(f"unknown check {check!r}; known: {sorted(CHECKS)}")
        limit = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:  # one run at a time: a run that loads a new check restarts the workers
            pool = self._pool_for(check)
            futures = [pool.schedule(_run_check, (check, payload, limit), timeout=wall_backstop(limit))
                       for payload in payloads]
            return [self._outcome(future, limit) for future in futures]

    def _outcome(self, future, limit: float) -> Outcome:
        try:
            status, value, seconds, cpu = future.result()
        except FutureTimeout:
            self.restarts += 1
            backstop = wall_backstop(limit)
            return Outcome("timeout", error=f"check exceeded {backstop:g}s of wall-clock time", seconds=backstop)
        except ProcessExpired as exc:
            self.restarts += 1
            if exc.exitcode == -signal.SIGPROF:
                return Outcome("timeout", error=f"check used more than {limit:g}s of CPU time", cpu_seconds=limit)
            return Outcome("error", error=f"checker process died (exit {exc.exitcode})")
        except BrokenProcessPool as exc:  # pebble gives up when workers die with no item running: at start-up
            raise RuntimeError(f"checker processes die at start-up ({exc}); their traceback is on stderr") from None
        if status == "ok":
            return Outcome("ok", value=value, seconds=seconds, cpu_seconds=cpu)
        return Outcome("error", error=value, seconds=seconds, cpu_seconds=cpu)

    @staticmethod
    def _stop(pool: ProcessPool) -> None:
        pool.stop()
        pool.join()

    def close(self) -> None:
        if self._pool is not None:
            self._stop(self._pool)
            self._pool = None

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
        if pool is None or pool._pool is None:
            pool = _shared[size] = CheckPool(size, timeout_s)
        pool.timeout_s = timeout_s
        return pool


@atexit.register
def _close_shared() -> None:
    for pool in _shared.values():
        pool.close()
