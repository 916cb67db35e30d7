"""The checker process of ``pool.CheckPool``: runs named checks sent over a pipe, one at a time."""

from __future__ import annotations

import importlib
import logging
import signal
import sys
import time
from multiprocessing.connection import Connection

from longcot.verify.pool import CHECKS, PRELOAD, WARMUP


def _resolve(name: str):
    for module in PRELOAD.get(name, ()):
        importlib.import_module(module)
    module, func = CHECKS[name].split(":")
    return getattr(importlib.import_module(module), func)


def _serve(fd: int) -> None:
    """Worker loop: receive ``(check, CPU-time limit, [(index, payload), ...])``; for each item say ``("start",
    index, monotonic time)`` once the check is loaded, then ``(index, "ok"|"error", value, CPU seconds)``.
    An item that overruns its limit ends this process (SIGPROF)."""
    logging.disable(logging.WARNING)  # math-verify warns on every call made without its signal timeouts
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes the pool
    signal.signal(signal.SIGPROF, signal.SIG_DFL)  # the CPU limit: SIGPROF's default action ends the process
    conn = Connection(fd)
    name, payload = WARMUP
    _resolve(name)(payload)
    conn.send("ready")
    while True:
        try:
            check, limit, batch = conn.recv()
        except (EOFError, OSError):
            return
        try:
            func = _resolve(check)  # a first use imports the check's module: not part of any item's time
        except Exception as exc:
            for index, _ in batch:
                conn.send((index, "error", f"cannot load check {check!r}: {type(exc).__name__}: {exc}"[:500], None))
            continue
        for index, payload in batch:
            conn.send(("start", index, time.monotonic()))
            cpu = time.process_time()
            signal.setitimer(signal.ITIMER_PROF, limit)  # armed only around the check, never while sending
            try:
                status, value = "ok", func(payload)
            except Exception as exc:  # a failing check is an outcome, not a dead worker
                status, value = "error", f"{type(exc).__name__}: {exc}"[:500]
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            conn.send((index, status, value, time.process_time() - cpu))


if __name__ == "__main__":
    try:
        _serve(int(sys.argv[1]))
    except (BrokenPipeError, ConnectionResetError):  # the pool was closed before this worker answered: no one to tell
        pass
